// Ring<T>: a FIFO on a power-of-two array that grows and never allocates in
// steady state (std::deque allocates and frees blocks as it moves). Used for
// per-session delivery queues, ready lists and event queues.
//
//   Ring<int> q;
//   q.push_back(1);
//   int x = q.front();
//   q.pop_front();
//   q.ShrinkIfEmpty(64);  // give memory back once idle
//
// Not thread-safe. Elements are moved when the ring grows.
#ifndef RINGLAB_MQTT_INTERNAL_RING_H_
#define RINGLAB_MQTT_INTERNAL_RING_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace ringlab::mqtt::internal {

template <typename T>
class Ring {
 public:
  Ring() = default;
  Ring(Ring&& other) noexcept { *this = std::move(other); }
  Ring& operator=(Ring&& other) noexcept {
    slots_ = std::move(other.slots_);
    capacity_ = std::exchange(other.capacity_, 0);
    head_ = std::exchange(other.head_, 0);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t capacity() const { return capacity_; }

  T& front() { return slots_[head_]; }
  const T& front() const { return slots_[head_]; }
  T& back() { return slots_[(head_ + size_ - 1) & (capacity_ - 1)]; }
  // i-th element from the front.
  T& operator[](size_t i) { return slots_[(head_ + i) & (capacity_ - 1)]; }
  const T& operator[](size_t i) const {
    return slots_[(head_ + i) & (capacity_ - 1)];
  }

  void push_back(T value) {
    if (size_ == capacity_) Grow();
    slots_[(head_ + size_) & (capacity_ - 1)] = std::move(value);
    ++size_;
  }
  void pop_front() {
    slots_[head_] = T();  // drop what the element holds (refs, buffers)
    head_ = (head_ + 1) & (capacity_ - 1);
    --size_;
  }
  // Removes the i-th element, keeping the order of the others.
  void erase(size_t i) {
    for (size_t j = i; j + 1 < size_; ++j)
      (*this)[j] = std::move((*this)[j + 1]);
    (*this)[size_ - 1] = T();
    --size_;
  }
  void clear() {
    while (!empty()) pop_front();
    head_ = 0;
  }
  // Frees the array when empty and larger than `keep` elements.
  void ShrinkIfEmpty(size_t keep) {
    if (size_ == 0 && capacity_ > keep) {
      slots_.reset();
      capacity_ = 0;
      head_ = 0;
    }
  }

 private:
  void Grow() {
    const uint32_t next = capacity_ == 0 ? 4 : capacity_ * 2;
    std::unique_ptr<T[]> bigger(new T[next]);
    for (size_t i = 0; i < size_; ++i) bigger[i] = std::move((*this)[i]);
    slots_ = std::move(bigger);
    capacity_ = next;
    head_ = 0;
  }

  // 32-bit indices keep an idle ring at 16 bytes: a broker holds three per
  // session.
  std::unique_ptr<T[]> slots_;
  uint32_t capacity_ = 0;
  uint32_t head_ = 0;
  uint32_t size_ = 0;
};

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_RING_H_
