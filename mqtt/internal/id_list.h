// IdList: subscription identifiers of one delivery. Almost always zero or
// one, so two live inline; more spill to the heap (rare: overlapping
// subscriptions each with its own identifier). Copyable and movable.
#ifndef RINGLAB_MQTT_INTERNAL_ID_LIST_H_
#define RINGLAB_MQTT_INTERNAL_ID_LIST_H_

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

namespace ringlab::mqtt::internal {

class IdList {
 public:
  IdList() = default;
  IdList(const IdList& o) { *this = o; }
  IdList& operator=(const IdList& o) {
    if (this != &o) assign(o.span());
    return *this;
  }
  IdList(IdList&& o) noexcept { *this = std::move(o); }
  IdList& operator=(IdList&& o) noexcept {
    if (this == &o) return *this;
    size_ = o.size_;
    inline_[0] = o.inline_[0];
    inline_[1] = o.inline_[1];
    heap_ = std::move(o.heap_);
    capacity_ = o.capacity_;
    o.size_ = 0;
    o.capacity_ = 2;
    return *this;
  }

  void push_back(uint32_t id) {
    if (size_ == capacity_) Grow();
    mutable_data()[size_++] = id;
  }
  void assign(std::span<const uint32_t> ids) {
    size_ = 0;
    for (uint32_t id : ids) push_back(id);
  }
  void clear() { size_ = 0; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const uint32_t* data() const { return heap_ ? heap_.get() : inline_; }
  std::span<const uint32_t> span() const { return {data(), size_}; }

 private:
  uint32_t* mutable_data() { return heap_ ? heap_.get() : inline_; }
  void Grow() {
    const uint32_t next = capacity_ * 2;
    std::unique_ptr<uint32_t[]> bigger(new uint32_t[next]);
    std::memcpy(bigger.get(), data(), size_ * sizeof(uint32_t));
    heap_ = std::move(bigger);
    capacity_ = next;
  }

  uint32_t inline_[2] = {0, 0};
  std::unique_ptr<uint32_t[]> heap_;
  uint32_t size_ = 0;
  uint32_t capacity_ = 2;
};

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_ID_LIST_H_
