#include "transport/loop_channel.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "transport/internal/loop_core.h"

namespace ringlab::transport::internal {

// Retry interval for entries waiting in the overflow list: the consumer
// does not tell the producer when it made room (that would cost the
// consumer a wakeup per batch), so the producer's Loop looks again soon.
constexpr Duration kOverflowRetry = std::chrono::microseconds(200);

class ChannelLink::ProducerPoller final : public LoopPoller {
 public:
  explicit ProducerPoller(ChannelLink* link) : link_(link) {}
  Duration BeforeWait(Duration wait) override {
    if (!link_->ProducerHasOverflow()) return wait;
    link_->ProducerFlush();
    if (!link_->ProducerHasOverflow()) return wait;
    return std::min(wait, kOverflowRetry);
  }
  int AfterWait() override {
    if (link_->ProducerHasOverflow()) link_->ProducerFlush();
    return 0;
  }

 private:
  ChannelLink* link_;
};

class ChannelLink::ConsumerPoller final : public LoopPoller {
 public:
  explicit ConsumerPoller(ChannelLink* link) : link_(link) {}
  Duration BeforeWait(Duration wait) override {
    if (link_->ConsumerPending()) return Duration(0);
    if (wait <= Duration(0)) return wait;  // polling: nobody needs to wake us
    // Announce, then look again (the producer publishes, then looks at the
    // flag): one of the two sees the other.
    link_->sleeping_.store(true, std::memory_order_seq_cst);
    if (link_->ConsumerPending()) {
      link_->sleeping_.store(false, std::memory_order_relaxed);
      return Duration(0);
    }
    Bump(link_->sleeps_);
    return wait;
  }
  int AfterWait() override {
    // Awake: the producer need not notify until we announce again.
    link_->sleeping_.store(false, std::memory_order_relaxed);
    return link_->ConsumerDrain();
  }

 private:
  ChannelLink* link_;
};

class ChannelLink::Sender final : public MsgRingSender {
 public:
  explicit Sender(ChannelLink* link) : link_(link) {}
  void OnMsgRingFailed(int) override {
    // The consumer may be asleep with entries waiting: wake it the other
    // way.
    Bump(link_->msg_ring_failures_);
    Bump(link_->notified_eventfd_);
    link_->consumer_core_->Wakeup();
  }

 private:
  ChannelLink* link_;
};

ChannelLink::ChannelLink(Loop* producer, Loop* consumer,
                         const LoopChannelOptions& o)
    : options_(o),
      producer_(producer),
      consumer_(consumer),
      producer_core_(producer != nullptr ? producer->core_.get() : nullptr),
      consumer_core_(consumer != nullptr ? consumer->core_.get() : nullptr) {}

ChannelLink::~ChannelLink() {
  if (sender_ != nullptr) producer_core_->RemoveMsgRingSender(sender_.get());
  if (producer_poller_ != nullptr) {
    producer_core_->RemovePoller(producer_poller_.get());
  }
  if (consumer_poller_ != nullptr) {
    consumer_core_->RemovePoller(consumer_poller_.get());
  }
}

absl::Status ChannelLink::Attach() {
  if (producer_core_ == nullptr || consumer_core_ == nullptr) {
    return absl::InvalidArgumentError("LoopChannel: null Loop");
  }
  if (producer_ == consumer_) {
    return absl::InvalidArgumentError(
        "LoopChannel: producer and consumer are the same Loop");
  }
  const int target = consumer_core_->MsgRingFd();
  const bool msg_ring_possible =
      target >= 0 && producer_core_->MsgRingFd() >= 0;
  switch (options_.notify) {
    case ChannelNotify::kEventfd:
      mode_ = ChannelNotify::kEventfd;
      note_ = "eventfd requested";
      break;
    case ChannelNotify::kAuto:
    case ChannelNotify::kMsgRing:
      if (msg_ring_possible) {
        mode_ = ChannelNotify::kMsgRing;
        target_ring_fd_ = target;
      } else {
        mode_ = ChannelNotify::kEventfd;
        note_ = absl::StrCat("IORING_OP_MSG_RING unavailable (producer ",
                             producer_core_->info.name, ", consumer ",
                             consumer_core_->info.name,
                             "): the consumer's eventfd wakes it instead");
      }
      break;
  }
  producer_poller_ = std::make_unique<ProducerPoller>(this);
  consumer_poller_ = std::make_unique<ConsumerPoller>(this);
  sender_ = std::make_unique<Sender>(this);
  producer_core_->AddMsgRingSender(sender_.get());
  producer_core_->AddPoller(producer_poller_.get());
  consumer_core_->AddPoller(consumer_poller_.get());
  return absl::OkStatus();
}

void ChannelLink::Notify() {
  if (mode_ == ChannelNotify::kMsgRing &&
      producer_core_->SendMsgRing(target_ring_fd_, sender_.get())) {
    Bump(notified_msg_ring_);
    return;
  }
  Bump(notified_eventfd_);
  consumer_core_->Wakeup();
}

LoopChannelCounters ChannelLink::counters() const {
  LoopChannelCounters c;
  auto get = [](const std::atomic<uint64_t>& a) {
    return a.load(std::memory_order_relaxed);
  };
  c.messages_sent = get(sent_);
  c.messages_received = get(received_);
  c.msg_ring_notifications = get(notified_msg_ring_);
  c.eventfd_notifications = get(notified_eventfd_);
  c.notifications = c.msg_ring_notifications + c.eventfd_notifications;
  c.msg_ring_failures = get(msg_ring_failures_);
  c.queue_full = get(queue_full_);
  c.overflow_refused = get(overflow_refused_);
  c.consumer_sleeps = get(sleeps_);
  return c;
}

}  // namespace ringlab::transport::internal
