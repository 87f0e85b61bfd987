// LoopChannel: a single-producer, single-consumer queue of fixed-size
// entries from one Loop (thread) to another, with a wakeup that costs no
// lock and, while the consumer is busy, no syscall at all.
//
//   struct Note { const void* message; uint32_t kind; };   // trivially
//   copyable class Sink : public LoopChannelHandler<Note> {
//     void OnChannelMessage(const Note& n) override { ... }  // consumer thread
//   };
//   Sink sink;
//   absl::StatusOr<std::unique_ptr<LoopChannel<Note>>> ch =
//       LoopChannel<Note>::Create(loop_a, loop_b, &sink);
//   // ... then run loop_a and loop_b on their threads. On loop_a's thread:
//   if (!(*ch)->Send(Note{m, 1})) { /* queue and overflow full: counted */ }
//
// Shape: a ring of `capacity` entries (a power of two) with the producer's
// tail and the consumer's head on separate cache lines. The consumer drains
// at most `drain_batch` entries per Loop iteration, after the Loop's own
// completions, and calls OnChannelBatchEnd() once per batch (a broker
// writes what the batch produced there). consumed() tells the producer how
// far the consumer got: an entry's bytes may point at producer-owned data,
// which the producer keeps alive until consumed() passes the entry's
// sequence number (accepted() before the Send).
//
// Notification: the consumer announces "I may sleep" (a flag) only when its
// Loop is about to block, then looks at the queue once more; the producer
// publishes an entry and then looks at the flag, and only if it is set
// (and it wins the flag's exchange) sends one wakeup. Both sides use
// sequentially consistent operations on the tail and the flag, so either the
// consumer sees the entry or the producer sees the flag: no wakeup is lost,
// and a stream of messages to a busy consumer costs none (counters()
// reports notifications per message). The wakeup:
//  - io_uring presets: IORING_OP_MSG_RING from the producer's ring to the
//    consumer's ring (the SQE goes out with the producer's next enter; the
//    consumer's backend recognises the CQE and drops it, its job being to
//    end the wait). A kernel without MSG_RING, a consumer on epoll, or
//    ChannelNotify::kEventfd use the eventfd path instead (notify_note()
//    says why); a MSG_RING that fails at run time falls back to the eventfd
//    for that wakeup (counted).
//  - epoll presets: the consumer Loop's wakeup eventfd (Loop::Wakeup()).
//  - busy presets never sleep, so they never need one.
//
// Full queue: Send never blocks and never drops silently. When the ring is
// full the entry goes to a bounded overflow list on the producer side
// (counted in queue_full), which the producer's Loop moves into the ring, in
// order, as the consumer makes room (it re-checks at least every 200 us
// while entries wait there). When the overflow list is full too, Send
// returns false and counts overflow_refused: the caller decides (a broker
// counts a dropped delivery).
//
// Threading: Send/accepted/FlushOverflow on the producer Loop's thread,
// OnChannelMessage on the consumer Loop's thread; consumed() and counters()
// from any thread. Create the channel before either Loop runs and destroy it
// after both stopped (it hooks into both Loops' iterations); both Loops and
// the handler must outlive it. A MSG_RING still in flight when the channel
// is destroyed may fail later; the producer Loop drops that completion.
// Allocation: none per message (loop_channel_test counts operator new).
// Errors: Create returns InvalidArgument for a capacity that is not a power
// of two, for the same Loop on both ends, or for a null handler.
#ifndef RINGLAB_TRANSPORT_LOOP_CHANNEL_H_
#define RINGLAB_TRANSPORT_LOOP_CHANNEL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include "absl/status/statusor.h"
#include "transport/loop.h"

namespace ringlab::transport {

enum class ChannelNotify : uint8_t {
  kAuto,     // MSG_RING when both Loops are io_uring and the kernel has it
  kEventfd,  // always the consumer's eventfd (to compare with MSG_RING)
  kMsgRing,  // MSG_RING; falls back to the eventfd with a note if missing
};

struct LoopChannelOptions {
  uint32_t capacity = 4096;           // ring entries; a power of two
  uint32_t overflow_capacity = 4096;  // producer-side entries when full
  uint32_t drain_batch = 1024;        // entries handled per iteration
  ChannelNotify notify = ChannelNotify::kAuto;
};

struct LoopChannelCounters {
  uint64_t messages_sent = 0;      // accepted by Send (ring or overflow)
  uint64_t messages_received = 0;  // handled by the consumer
  uint64_t notifications = 0;      // wakeups sent, both kinds
  uint64_t msg_ring_notifications = 0;
  uint64_t eventfd_notifications = 0;
  // A MSG_RING whose CQE said < 0: the eventfd was written too (and
  // counted in eventfd_notifications).
  uint64_t msg_ring_failures = 0;
  uint64_t queue_full = 0;        // sends that went to the overflow list
  uint64_t overflow_refused = 0;  // sends refused: ring and overflow full
  uint64_t consumer_sleeps = 0;   // times the consumer may have slept
};

template <typename T>
class LoopChannelHandler {
 public:
  virtual ~LoopChannelHandler() = default;
  virtual void OnChannelMessage(const T& message) = 0;
  // After each non-empty batch of OnChannelMessage calls.
  virtual void OnChannelBatchEnd() {}
};

namespace internal {

class LoopCore;

// The type-independent half: hooks, the sleeping flag, notification and
// counters. LoopChannel<T> adds the ring.
class ChannelLink {
 public:
  virtual ~ChannelLink();
  ChannelLink(const ChannelLink&) = delete;
  ChannelLink& operator=(const ChannelLink&) = delete;

  LoopChannelCounters counters() const;
  // The wakeup in use (kMsgRing or kEventfd) and why, when not MSG_RING.
  ChannelNotify notify_mode() const { return mode_; }
  const std::string& notify_note() const { return note_; }

 protected:
  ChannelLink(Loop* producer, Loop* consumer, const LoopChannelOptions& o);
  // Validates and registers the pollers; Create() calls it.
  absl::Status Attach();

  // Producer: after publishing entries.
  void MaybeNotify() {
    if (sleeping_.load(std::memory_order_seq_cst) &&
        sleeping_.exchange(false, std::memory_order_seq_cst)) {
      Notify();
    }
  }
  static void Bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  // Supplied by LoopChannel<T>.
  virtual bool ConsumerPending() const = 0;
  virtual int ConsumerDrain() = 0;
  virtual bool ProducerHasOverflow() const = 0;
  virtual void ProducerFlush() = 0;

  const LoopChannelOptions options_;
  // Single-writer counters, readable from any thread.
  std::atomic<uint64_t> sent_{0}, received_{0}, notified_msg_ring_{0},
      notified_eventfd_{0}, msg_ring_failures_{0}, queue_full_{0},
      overflow_refused_{0}, sleeps_{0};

 private:
  class ProducerPoller;
  class ConsumerPoller;
  class Sender;
  void Notify();

  Loop* producer_;
  Loop* consumer_;
  LoopCore* producer_core_;
  LoopCore* consumer_core_;
  ChannelNotify mode_ = ChannelNotify::kEventfd;
  std::string note_;
  int target_ring_fd_ = -1;
  std::unique_ptr<ProducerPoller> producer_poller_;
  std::unique_ptr<ConsumerPoller> consumer_poller_;
  std::unique_ptr<Sender> sender_;
  alignas(64) std::atomic<bool> sleeping_{false};
};

}  // namespace internal

template <typename T>
class LoopChannel final : public internal::ChannelLink {
  static_assert(std::is_trivially_copyable_v<T>,
                "LoopChannel entries are copied as bytes");

 public:
  static absl::StatusOr<std::unique_ptr<LoopChannel>> Create(
      Loop* producer, Loop* consumer, LoopChannelHandler<T>* handler,
      const LoopChannelOptions& options = {}) {
    if (handler == nullptr) {
      return absl::InvalidArgumentError("LoopChannel: null handler");
    }
    if (options.capacity < 2 ||
        (options.capacity & (options.capacity - 1)) != 0) {
      return absl::InvalidArgumentError(
          "LoopChannelOptions::capacity must be a power of two >= 2");
    }
    std::unique_ptr<LoopChannel> ch(
        new LoopChannel(producer, consumer, handler, options));
    if (absl::Status s = ch->Attach(); !s.ok()) return s;
    return ch;
  }

  // Producer thread. True: accepted (in the ring, or in the overflow list
  // behind earlier ones); false: both full (counted), nothing queued.
  bool Send(const T& value) {
    if (overflow_size_ > 0) {
      ProducerFlush();
      if (overflow_size_ > 0) return ToOverflow(value);
    }
    const uint64_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - cached_head_ >= options_.capacity) {
      cached_head_ = head_.load(std::memory_order_acquire);
      if (tail - cached_head_ >= options_.capacity) return ToOverflow(value);
    }
    slots_[tail & mask_] = value;
    tail_.store(tail + 1, std::memory_order_seq_cst);
    ++accepted_;
    Bump(sent_);
    MaybeNotify();
    return true;
  }
  // Producer thread: entries accepted so far (the next Send's sequence).
  uint64_t accepted() const { return accepted_; }
  // Any thread: entries the consumer has finished with.
  uint64_t consumed() const { return head_.load(std::memory_order_acquire); }
  // Producer thread: entries waiting in the overflow list.
  size_t overflow_size() const { return overflow_size_; }

 private:
  LoopChannel(Loop* producer, Loop* consumer, LoopChannelHandler<T>* handler,
              const LoopChannelOptions& options)
      : ChannelLink(producer, consumer, options),
        handler_(handler),
        mask_(options.capacity - 1),
        slots_(new T[options.capacity]),
        overflow_(
            new T[options.overflow_capacity > 0 ? options.overflow_capacity
                                                : 1]) {}

  bool ToOverflow(const T& value) {
    if (overflow_size_ >= options_.overflow_capacity) {
      Bump(overflow_refused_);
      return false;
    }
    const size_t at =
        (overflow_head_ + overflow_size_) % options_.overflow_capacity;
    overflow_[at] = value;
    ++overflow_size_;
    ++accepted_;
    Bump(sent_);
    Bump(queue_full_);
    return true;
  }

  bool ConsumerPending() const override {
    return tail_.load(std::memory_order_seq_cst) !=
           head_.load(std::memory_order_relaxed);
  }
  int ConsumerDrain() override {
    const uint64_t head = head_.load(std::memory_order_relaxed);
    const uint64_t tail = tail_.load(std::memory_order_acquire);
    uint64_t n = tail - head;
    if (n == 0) return 0;
    if (n > options_.drain_batch) n = options_.drain_batch;
    for (uint64_t i = 0; i < n; ++i) {
      handler_->OnChannelMessage(slots_[(head + i) & mask_]);
    }
    // After handling: the producer may now reuse the slots and release
    // what the entries pointed at.
    head_.store(head + n, std::memory_order_release);
    Bump(received_, n);
    handler_->OnChannelBatchEnd();
    return static_cast<int>(n);
  }
  bool ProducerHasOverflow() const override { return overflow_size_ > 0; }
  void ProducerFlush() override {
    if (overflow_size_ == 0) return;
    uint64_t tail = tail_.load(std::memory_order_relaxed);
    cached_head_ = head_.load(std::memory_order_acquire);
    const uint64_t start = tail;
    while (overflow_size_ > 0 && tail - cached_head_ < options_.capacity) {
      slots_[tail & mask_] = overflow_[overflow_head_];
      overflow_head_ = (overflow_head_ + 1) % options_.overflow_capacity;
      --overflow_size_;
      ++tail;
    }
    if (tail == start) return;
    tail_.store(tail, std::memory_order_seq_cst);
    MaybeNotify();
  }

  LoopChannelHandler<T>* const handler_;
  const uint64_t mask_;
  std::unique_ptr<T[]> slots_;
  std::unique_ptr<T[]> overflow_;
  // Producer-only state.
  alignas(64) std::atomic<uint64_t> tail_{0};
  uint64_t cached_head_ = 0;
  uint64_t accepted_ = 0;
  size_t overflow_head_ = 0;
  size_t overflow_size_ = 0;
  // Consumer-only state.
  alignas(64) std::atomic<uint64_t> head_{0};
};

}  // namespace ringlab::transport

#endif  // RINGLAB_TRANSPORT_LOOP_CHANNEL_H_
