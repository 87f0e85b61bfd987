#include "mqtt/message.h"

#include <cstring>

namespace ringlab::mqtt {

MessagePool::~MessagePool() {
  // Free messages go now; live ones (still held by a driver, say) lose their
  // pool and are deleted by their last reference.
  for (Message* m : all_) {
    if (m->refs_ == 0) {
      delete m;
    } else {
      m->pool_ = nullptr;
    }
  }
}

MessageRef MessagePool::Create(std::string_view topic, uint8_t qos, bool retain,
                               std::span<const std::byte> properties,
                               std::span<const std::byte> payload,
                               Timestamp expires_at, uint32_t publisher) {
  Message* m;
  if (!free_.empty()) {
    m = free_.back();
    free_.pop_back();
  } else {
    m = new Message();
    m->pool_ = this;
    m->all_index_ = all_.size();
    all_.push_back(m);
  }
  ++live_;
  // assign() and resize() reuse the recycled capacity: no allocation once
  // the pool has warmed up to the sizes in use.
  m->topic_.assign(topic.data(), topic.size());
  m->data_.resize(properties.size() + payload.size());
  if (!properties.empty()) {
    std::memcpy(m->data_.data(), properties.data(), properties.size());
  }
  if (!payload.empty()) {
    std::memcpy(m->data_.data() + properties.size(), payload.data(),
                payload.size());
  }
  m->properties_bytes_ = uint32_t(properties.size());
  m->qos_ = qos;
  m->retain_ = retain;
  m->expires_at_ = expires_at;
  m->publisher_ = publisher;
  m->driver_handle = 0;
  m->fanout_ = 0;
  m->inbound_sequence_ = 0;
  return MessageRef(m);
}

void MessagePool::Release(Message* m) {
  --live_;
  if (free_.size() >= kMaxFree || m->data_.capacity() > kMaxRecycledBytes ||
      m->topic_.capacity() > kMaxRecycledBytes) {
    // Not worth keeping: a burst is over, or the buffer is large.
    Message* last = all_.back();
    all_[m->all_index_] = last;
    last->all_index_ = m->all_index_;
    all_.pop_back();
    delete m;
    return;
  }
  free_.push_back(m);
}

}  // namespace ringlab::mqtt
