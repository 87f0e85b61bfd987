// Message and MessageRef: an application message held once by the broker and
// shared by every queue, in-flight window and send that carries it.
//
// A Message keeps the topic and, in one contiguous buffer, the publisher's
// forwardable v5 properties (Payload Format Indicator, Content Type,
// Response Topic, Correlation Data and User Properties, in wire form and in
// their original order, MQTT-3.3.2-4/-15/-16/-17/-18) followed by the
// payload. A PUBLISH to a v5 subscriber is then a per-subscriber header
// (packet id, topic or alias, expiry, subscription ids) plus that shared
// tail; a 3.1.1 subscriber gets the payload part only. So fan-out never
// copies the payload per subscriber.
//
//   MessagePool pool;
//   MessageRef m = pool.Create("a/b", /*qos=*/1, /*retain=*/false,
//                              forwarded_props, payload, Timestamp::Never(),
//                              kNoPublisher);
//   std::span<const std::byte> tail = m->Tail(Version::k5);
//   MessageRef other = m;   // another holder; the message lives on
//
// Memory: messages are recycled through the pool with their buffers, so a
// steady publish/deliver loop allocates nothing. A MessageRef may outlive
// the pool (a driver still sending when the broker is destroyed); the last
// ref then frees the message.
// Threading: refcounts are not atomic; one Loop's thread only.
#ifndef RINGLAB_MQTT_MESSAGE_H_
#define RINGLAB_MQTT_MESSAGE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mqtt/types.h"
#include "transport/time.h"

namespace ringlab::mqtt {

class MessagePool;
class MessageRef;

inline constexpr uint32_t kNoPublisher = 0xFFFFFFFFu;

class Message {
 public:
  std::string_view topic() const { return topic_; }
  uint8_t qos() const { return qos_; }
  bool retain() const { return retain_; }
  // The forwarded v5 properties, in wire form (no Property Length).
  std::span<const std::byte> properties() const {
    return {data_.data(), properties_bytes_};
  }
  std::span<const std::byte> payload() const {
    return {data_.data() + properties_bytes_, data_.size() - properties_bytes_};
  }
  // What follows a per-subscriber PUBLISH header for `version`.
  std::span<const std::byte> Tail(Version version) const {
    return version == Version::k5 ? std::span<const std::byte>(data_)
                                  : payload();
  }
  // Timestamp::Never() when the message has no Message Expiry Interval.
  Timestamp expires_at() const { return expires_at_; }
  // The publishing session (for No Local), or kNoPublisher.
  uint32_t publisher() const { return publisher_; }
  // Session queues this message has been put in so far (routing and
  // retained sends). A driver shares the payload of a message that goes to
  // more than one subscriber instead of copying it for each.
  uint32_t fanout() const { return fanout_; }

  // A slot a driver may use to cache something derived from this message
  // (e.g. a transport shared buffer holding Tail()); reset on recycling.
  mutable uint64_t driver_handle = 0;

 private:
  friend class MessagePool;
  friend class MessageRef;
  friend class Broker;
  Message() = default;

  std::string topic_;
  std::vector<std::byte> data_;
  uint32_t properties_bytes_ = 0;
  uint8_t qos_ = 0;
  bool retain_ = false;
  Timestamp expires_at_ = Timestamp::Never();
  uint32_t publisher_ = kNoPublisher;
  mutable uint32_t fanout_ = 0;  // counted by the Broker
  // QoS 2 from a stored session: the store's written_sequence() that
  // covers the publisher's packet id (0: not stored). Set by the Broker
  // once the message is routed; its deliveries' first sends wait for it.
  mutable uint64_t inbound_sequence_ = 0;
  uint32_t refs_ = 0;
  MessagePool* pool_ = nullptr;
  size_t all_index_ = 0;  // position in the pool's all_ list
};

// A counted reference to a Message; copying adds a holder.
class MessageRef {
 public:
  MessageRef() = default;
  MessageRef(const MessageRef& other) : m_(other.m_) {
    if (m_ != nullptr) ++m_->refs_;
  }
  MessageRef(MessageRef&& other) noexcept
      : m_(std::exchange(other.m_, nullptr)) {}
  MessageRef& operator=(const MessageRef& other) {
    if (this != &other) {
      Reset();
      m_ = other.m_;
      if (m_ != nullptr) ++m_->refs_;
    }
    return *this;
  }
  MessageRef& operator=(MessageRef&& other) noexcept {
    if (this != &other) {
      Reset();
      m_ = std::exchange(other.m_, nullptr);
    }
    return *this;
  }
  ~MessageRef() { Reset(); }

  const Message* get() const { return m_; }
  const Message* operator->() const { return m_; }
  const Message& operator*() const { return *m_; }
  explicit operator bool() const { return m_ != nullptr; }
  void Reset();

 private:
  friend class MessagePool;
  explicit MessageRef(Message* m) : m_(m) { ++m_->refs_; }
  Message* m_ = nullptr;
};

class MessagePool {
 public:
  // Free messages kept for reuse, and the largest buffer worth keeping.
  static constexpr size_t kMaxFree = 4096;
  static constexpr size_t kMaxRecycledBytes = 64 * 1024;

  MessagePool() = default;
  MessagePool(const MessagePool&) = delete;
  MessagePool& operator=(const MessagePool&) = delete;
  ~MessagePool();

  MessageRef Create(std::string_view topic, uint8_t qos, bool retain,
                    std::span<const std::byte> properties,
                    std::span<const std::byte> payload, Timestamp expires_at,
                    uint32_t publisher);

  size_t live() const { return live_; }
  size_t free_count() const { return free_.size(); }

 private:
  friend class MessageRef;
  void Release(Message* m);

  std::vector<Message*> free_;
  size_t live_ = 0;
  // Every message created and not yet deleted, to orphan live ones when the
  // pool goes away.
  std::vector<Message*> all_;
};

inline void MessageRef::Reset() {
  if (m_ == nullptr) return;
  if (--m_->refs_ == 0) {
    if (m_->pool_ != nullptr) {
      m_->pool_->Release(m_);
    } else {
      delete m_;
    }
  }
  m_ = nullptr;
}

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_MESSAGE_H_
