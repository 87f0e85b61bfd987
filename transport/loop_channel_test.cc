// LoopChannel on every preset: order across threads, waking a consumer
// blocked in its wait (MSG_RING on io_uring, the eventfd elsewhere and when
// forced), a full ring with its overflow list, teardown with entries still
// queued, and zero allocations per message.
#include "transport/loop_channel.h"

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "testing/counting_allocator.h"
#include "transport/loop_test_support.h"

namespace ringlab::transport {
namespace {

using namespace std::chrono_literals;
using testing_support::IsUnavailableCode;
using testing_support::kWait;
using testing_support::PresetTestName;

struct Entry {
  uint64_t sequence = 0;
  uint32_t from = 0;
};

class Collector : public LoopChannelHandler<Entry> {
 public:
  void OnChannelMessage(const Entry& e) override {
    if (e.sequence != next_) ++out_of_order_;
    next_ = e.sequence + 1;
    received_.store(received_.load(std::memory_order_relaxed) + 1,
                    std::memory_order_release);
  }
  void OnChannelBatchEnd() override { ++batches_; }
  uint64_t received() const {
    return received_.load(std::memory_order_acquire);
  }
  uint64_t out_of_order() const { return out_of_order_; }
  uint64_t batches() const { return batches_; }

 private:
  uint64_t next_ = 0;
  uint64_t out_of_order_ = 0;
  uint64_t batches_ = 0;
  std::atomic<uint64_t> received_{0};
};

class LoopChannelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    MakeLoop(&a_);
    if (IsSkipped() || HasFatalFailure()) return;
    MakeLoop(&b_);
  }

  void MakeLoop(std::unique_ptr<Loop>* out) {
    LoopOptions options;
    options.backend = GetParam();
    options.buffer_count = 256;
    options.provided_buffers = 64;
    absl::StatusOr<std::unique_ptr<Loop>> loop = Loop::Create(options);
    if (!loop.ok()) {
      if (IsUnavailableCode(loop.status().code()) &&
          std::getenv("RINGLAB_REQUIRE_ALL_PRESETS") == nullptr) {
        GTEST_SKIP() << "preset " << GetParam()
                     << " unavailable: " << loop.status().message();
      }
      FAIL() << "Loop::Create: " << loop.status();
    }
    *out = *std::move(loop);
  }

  bool IsUring() const { return GetParam().rfind("uring", 0) == 0; }
  bool IsBusy() const { return GetParam().find("busy") != std::string::npos; }

  std::unique_ptr<Loop> a_;
  std::unique_ptr<Loop> b_;
};

TEST_P(LoopChannelTest, CreateRejectsBadArguments) {
  Collector sink;
  LoopChannelOptions o;
  o.capacity = 100;
  EXPECT_EQ(
      LoopChannel<Entry>::Create(a_.get(), b_.get(), &sink, o).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      LoopChannel<Entry>::Create(a_.get(), a_.get(), &sink).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      LoopChannel<Entry>::Create(a_.get(), b_.get(), nullptr).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_P(LoopChannelTest, AutoUsesMsgRingOnUring) {
  Collector sink;
  auto ch = LoopChannel<Entry>::Create(a_.get(), b_.get(), &sink);
  ASSERT_TRUE(ch.ok()) << ch.status();
  if (!IsUring()) {
    EXPECT_EQ((*ch)->notify_mode(), ChannelNotify::kEventfd);
    return;
  }
  if ((*ch)->notify_mode() != ChannelNotify::kMsgRing) {
    GTEST_SKIP() << (*ch)->notify_note();
  }
  LoopChannelOptions forced;
  forced.notify = ChannelNotify::kEventfd;
  Collector other;
  auto ev = LoopChannel<Entry>::Create(b_.get(), a_.get(), &other, forced);
  ASSERT_TRUE(ev.ok()) << ev.status();
  EXPECT_EQ((*ev)->notify_mode(), ChannelNotify::kEventfd);
}

// Two threads, each running its Loop; the producer sends from inside its
// Loop (as a broker does) faster than the consumer drains, through the
// overflow list, and every entry arrives once, in order.
TEST_P(LoopChannelTest, OrderAcrossThreads) {
  constexpr uint64_t kMessages = 200'000;
  Collector sink;
  LoopChannelOptions o;
  o.capacity = 256;
  o.overflow_capacity = 1024;
  auto created = LoopChannel<Entry>::Create(a_.get(), b_.get(), &sink, o);
  ASSERT_TRUE(created.ok()) << created.status();
  LoopChannel<Entry>& ch = **created;

  std::atomic<bool> producer_done{false};
  std::thread consumer([&] {
    while (sink.received() < kMessages && !producer_done.load()) {
      b_->RunOnce(100ms);
    }
    // Whatever is still queued after the producer stopped.
    const Timestamp deadline = MonotonicNow() + kWait;
    while (sink.received() < kMessages && MonotonicNow() < deadline) {
      b_->RunOnce(10ms);
    }
  });
  uint64_t next = 0;
  uint64_t refused = 0;
  const Timestamp deadline = MonotonicNow() + kWait * 3;
  while (next < kMessages && MonotonicNow() < deadline) {
    // A burst per iteration; a refusal (ring and overflow full) is retried
    // next iteration, so nothing is lost.
    for (int i = 0; i < 512 && next < kMessages; ++i) {
      if (!ch.Send(Entry{next, 1})) {
        ++refused;
        break;
      }
      ++next;
    }
    a_->RunOnce(0ms);
  }
  while (ch.overflow_size() > 0 && MonotonicNow() < deadline) {
    a_->RunOnce(1ms);
  }
  producer_done.store(true);
  consumer.join();
  EXPECT_EQ(next, kMessages);
  EXPECT_EQ(sink.received(), kMessages);
  EXPECT_EQ(sink.out_of_order(), 0u);
  const LoopChannelCounters c = ch.counters();
  EXPECT_EQ(c.messages_sent, kMessages);
  EXPECT_EQ(c.messages_received, kMessages);
  EXPECT_EQ(c.overflow_refused, refused);
  EXPECT_EQ(ch.consumed(), kMessages);
  // A consumer kept busy is not notified for every message.
  EXPECT_LT(c.notifications, kMessages / 2) << "notifications per message";
}

// The consumer blocks in one long wait; only the notification can end it
// before the test gives up on it.
void WakeFromBlockingWait(Loop* producer, Loop* consumer, ChannelNotify notify,
                          bool busy, LoopChannelCounters* out) {
  Collector sink;
  LoopChannelOptions o;
  o.notify = notify;
  auto created = LoopChannel<Entry>::Create(producer, consumer, &sink, o);
  ASSERT_TRUE(created.ok()) << created.status();
  LoopChannel<Entry>& ch = **created;
  std::atomic<bool> stop{false};
  std::thread consumer_thread([&] {
    while (sink.received() == 0 && !stop.load()) consumer->RunOnce(60s);
  });
  if (!busy) {
    // Wait until the consumer announced it may sleep.
    const Timestamp deadline = MonotonicNow() + kWait;
    while (ch.counters().consumer_sleeps == 0 && MonotonicNow() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_GT(ch.counters().consumer_sleeps, 0u);
    std::this_thread::sleep_for(20ms);  // let it enter the wait
  }
  ASSERT_TRUE(ch.Send(Entry{0, 7}));
  const Timestamp deadline = MonotonicNow() + kWait;
  while (sink.received() == 0 && MonotonicNow() < deadline) {
    producer->RunOnce(1ms);  // submits the MSG_RING SQE
  }
  const bool woke = sink.received() == 1;
  stop.store(true);
  if (!woke) consumer->Wakeup();  // free the thread, then fail
  consumer_thread.join();
  EXPECT_TRUE(woke) << "the consumer slept through the notification";
  *out = ch.counters();
}

TEST_P(LoopChannelTest, WakesBlockedConsumer) {
  LoopChannelCounters c;
  WakeFromBlockingWait(a_.get(), b_.get(), ChannelNotify::kAuto, IsBusy(), &c);
  if (HasFatalFailure()) return;
  if (IsBusy()) {
    EXPECT_EQ(c.notifications, 0u) << "a busy consumer never sleeps";
  } else {
    EXPECT_GE(c.notifications, 1u);
    if (IsUring()) {
      EXPECT_GE(c.msg_ring_notifications, 1u)
          << "io_uring presets wake by MSG_RING when the kernel has it";
      EXPECT_EQ(c.msg_ring_failures, 0u);
    } else {
      EXPECT_GE(c.eventfd_notifications, 1u);
    }
  }
}

TEST_P(LoopChannelTest, WakesBlockedConsumerByEventfd) {
  if (IsBusy()) GTEST_SKIP() << "a busy consumer never sleeps";
  LoopChannelCounters c;
  WakeFromBlockingWait(a_.get(), b_.get(), ChannelNotify::kEventfd, false, &c);
  if (HasFatalFailure()) return;
  EXPECT_GE(c.eventfd_notifications, 1u);
  EXPECT_EQ(c.msg_ring_notifications, 0u);
}

// A channel destroyed while its MSG_RING is still unsubmitted on the
// producer's ring, with the consumer's ring closed too: the MSG_RING fails
// (EBADF) once the producer runs again, and its completion carries the
// freed channel's sender. The producer Loop must drop it, not call it (a
// heap-use-after-free under ASan before the Loop looked senders up).
TEST_P(LoopChannelTest, MsgRingFailingAfterTheChannelIsGoneIsDropped) {
  if (!IsUring() || IsBusy()) {
    GTEST_SKIP() << "needs an io_uring consumer that sleeps";
  }
  Collector sink;
  auto created = LoopChannel<Entry>::Create(a_.get(), b_.get(), &sink);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<LoopChannel<Entry>> ch = *std::move(created);
  if (ch->notify_mode() != ChannelNotify::kMsgRing) {
    GTEST_SKIP() << ch->notify_note();
  }
  // The consumer announces that it may sleep, then its wait times out.
  std::thread consumer_thread([&] { b_->RunOnce(200ms); });
  const Timestamp deadline = MonotonicNow() + kWait;
  while (ch->counters().consumer_sleeps == 0 && MonotonicNow() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_GT(ch->counters().consumer_sleeps, 0u);
  ASSERT_TRUE(ch->Send(Entry{0, 7}));  // queues a MSG_RING SQE on a_
  consumer_thread.join();
  EXPECT_EQ(ch->counters().msg_ring_notifications, 1u);
  ch.reset();
  b_.reset();  // the MSG_RING's target ring fd is closed
  // The entry itself was drained when the consumer's wait ended.
  EXPECT_EQ(sink.received(), 1u);
  for (int i = 0; i < 20; ++i) ASSERT_GE(a_->RunOnce(1ms), 0);
}

// Capacity 4, overflow 4: eight sends are accepted, the ninth refused and
// counted; once the consumer drains, the overflow moves into the ring in
// order.
TEST_P(LoopChannelTest, FullQueueOverflowsThenRefuses) {
  Collector sink;
  LoopChannelOptions o;
  o.capacity = 4;
  o.overflow_capacity = 4;
  auto created = LoopChannel<Entry>::Create(a_.get(), b_.get(), &sink, o);
  ASSERT_TRUE(created.ok()) << created.status();
  LoopChannel<Entry>& ch = **created;
  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(ch.Send(Entry{i, 1})) << i;
  EXPECT_FALSE(ch.Send(Entry{8, 1}));
  EXPECT_EQ(ch.overflow_size(), 4u);
  LoopChannelCounters c = ch.counters();
  EXPECT_EQ(c.messages_sent, 8u);
  EXPECT_EQ(c.queue_full, 4u);
  EXPECT_EQ(c.overflow_refused, 1u);
  // Both Loops on this thread: the consumer drains, the producer's
  // iteration moves the overflow, the consumer drains again.
  const Timestamp deadline = MonotonicNow() + kWait;
  while (sink.received() < 8 && MonotonicNow() < deadline) {
    b_->RunOnce(0ms);
    a_->RunOnce(0ms);
  }
  EXPECT_EQ(sink.received(), 8u);
  EXPECT_EQ(sink.out_of_order(), 0u);
  EXPECT_EQ(ch.overflow_size(), 0u);
  EXPECT_TRUE(ch.Send(Entry{8, 1}));  // room again
}

// A channel destroyed with entries queued unhooks from both Loops, which
// keep working.
TEST_P(LoopChannelTest, ShutdownWithEntriesQueued) {
  Collector sink;
  {
    auto created = LoopChannel<Entry>::Create(a_.get(), b_.get(), &sink);
    ASSERT_TRUE(created.ok()) << created.status();
    for (uint64_t i = 0; i < 100; ++i) ASSERT_TRUE((*created)->Send({i, 1}));
  }
  EXPECT_GE(a_->RunOnce(0ms), 0);
  EXPECT_GE(b_->RunOnce(0ms), 0);
  EXPECT_EQ(sink.received(), 0u);
  // A new channel between the same Loops starts clean.
  Collector again;
  auto created = LoopChannel<Entry>::Create(a_.get(), b_.get(), &again);
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_TRUE((*created)->Send({0, 1}));
  const Timestamp deadline = MonotonicNow() + kWait;
  while (again.received() == 0 && MonotonicNow() < deadline) {
    a_->RunOnce(0ms);
    b_->RunOnce(0ms);
  }
  EXPECT_EQ(again.received(), 1u);
}

TEST_P(LoopChannelTest, NoAllocationPerMessage) {
  Collector sink;
  LoopChannelOptions o;
  o.capacity = 64;
  o.overflow_capacity = 64;
  auto created = LoopChannel<Entry>::Create(a_.get(), b_.get(), &sink, o);
  ASSERT_TRUE(created.ok()) << created.status();
  LoopChannel<Entry>& ch = **created;
  uint64_t seq = 0;
  auto round = [&] {
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(ch.Send(Entry{seq++, 1}));
    for (int i = 0; i < 4; ++i) {
      a_->RunOnce(0ms);
      b_->RunOnce(0ms);
    }
  };
  for (int i = 0; i < 10; ++i) round();  // warm up
  counting_allocator::Start();
  for (int i = 0; i < 100; ++i) round();
  EXPECT_EQ(counting_allocator::Stop(), 0u)
      << "allocations across 10,000 messages";
  EXPECT_EQ(sink.out_of_order(), 0u);
  EXPECT_GT(sink.received(), 10'000u);
}

INSTANTIATE_TEST_SUITE_P(Presets, LoopChannelTest, RINGLAB_ALL_PRESETS,
                         PresetTestName);

}  // namespace
}  // namespace ringlab::transport
