// Fixed-capacity containers for the connection's hot path: a ring of
// values, a byte ring addressed by absolute 64-bit offset, and a bitmap ring
// of 64-byte units. Each allocates once in Init() (the control path) and
// never again.
//
//   Ring<uint64_t> queue;
//   queue.Init(1024);                    // capacity rounded up to 2^k
//   if (!queue.full()) queue.push_back(7);
//   uint64_t v = queue.front(); queue.pop_front();
//
//   ByteRing bytes;
//   bytes.Init(1 << 20);
//   bytes.Write(offset, data);           // wraps at the end transparently
//   auto [a, b] = bytes.Read(offset, n); // two spans when it wraps
//
// Not thread-safe. Accessing an element outside [0, size()) is a bug
// (checked with assert in debug builds).
#ifndef RINGLAB_UDP_INTERNAL_RINGS_H_
#define RINGLAB_UDP_INTERNAL_RINGS_H_

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

namespace ringlab::rudp::internal {

inline size_t RoundUpPow2(size_t n) { return n <= 1 ? 1 : std::bit_ceil(n); }

template <typename T>
class Ring {
 public:
  void Init(size_t capacity) {
    items_.assign(RoundUpPow2(capacity), T{});
    mask_ = items_.size() - 1;
    head_ = 0;
    size_ = 0;
  }
  size_t capacity() const { return items_.size(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  bool full() const { return size_ == items_.size(); }
  T& operator[](size_t i) {
    assert(i < size_);
    return items_[(head_ + i) & mask_];
  }
  const T& operator[](size_t i) const {
    assert(i < size_);
    return items_[(head_ + i) & mask_];
  }
  T& front() { return (*this)[0]; }
  T& back() { return (*this)[size_ - 1]; }
  // Returns false (and stores nothing) when full.
  bool push_back(const T& v) {
    if (full()) return false;
    items_[(head_ + size_) & mask_] = v;
    ++size_;
    return true;
  }
  void pop_front() {
    assert(size_ > 0);
    head_ = (head_ + 1) & mask_;
    --size_;
  }
  void clear() {
    head_ = 0;
    size_ = 0;
  }
  // Memory held, for the bounded-memory accounting.
  size_t memory_bytes() const { return items_.capacity() * sizeof(T); }

 private:
  std::vector<T> items_;
  size_t mask_ = 0;
  size_t head_ = 0;
  size_t size_ = 0;
};

// Bytes addressed by an absolute offset modulo a power-of-two capacity. The
// caller guarantees that the live offsets span at most capacity() bytes.
class ByteRing {
 public:
  void Init(size_t capacity) {
    bytes_.assign(RoundUpPow2(capacity), std::byte{0});
    mask_ = bytes_.size() - 1;
  }
  size_t capacity() const { return bytes_.size(); }
  void Write(uint64_t offset, std::span<const std::byte> data) {
    size_t pos = size_t(offset & mask_);
    size_t first = std::min(data.size(), bytes_.size() - pos);
    if (first > 0) std::memcpy(bytes_.data() + pos, data.data(), first);
    if (data.size() > first) {
      std::memcpy(bytes_.data(), data.data() + first, data.size() - first);
    }
  }
  std::pair<std::span<const std::byte>, std::span<const std::byte>> Read(
      uint64_t offset, size_t length) const {
    const size_t pos = size_t(offset & mask_);
    const size_t first = std::min(length, bytes_.size() - pos);
    return {std::span<const std::byte>(bytes_.data() + pos, first),
            std::span<const std::byte>(bytes_.data(), length - first)};
  }
  size_t memory_bytes() const { return bytes_.capacity(); }

 private:
  std::vector<std::byte> bytes_;
  size_t mask_ = 0;
};

// One bit per absolute unit number, modulo a power-of-two unit count.
class UnitBitmap {
 public:
  void Init(size_t units) {
    const size_t n = std::max<size_t>(RoundUpPow2(units), 64);
    words_.assign(n / 64, 0);
    mask_ = n - 1;
  }
  size_t units() const { return mask_ + 1; }
  bool Test(uint64_t unit) const {
    const size_t i = size_t(unit & mask_);
    return (words_[i >> 6] >> (i & 63)) & 1;
  }
  // Number of set bits in units [begin, end) (end - begin <= units()).
  size_t Count(uint64_t begin, uint64_t end) const {
    size_t n = 0;
    ForEachWord(begin, end, [&](size_t word, uint64_t mask) {
      n += std::popcount(words_[word] & mask);
    });
    return n;
  }
  void Set(uint64_t begin, uint64_t end) {
    ForEachWord(begin, end,
                [&](size_t word, uint64_t mask) { words_[word] |= mask; });
  }
  void Clear(uint64_t begin, uint64_t end) {
    ForEachWord(begin, end,
                [&](size_t word, uint64_t mask) { words_[word] &= ~mask; });
  }
  // The first unit >= begin and < limit whose bit is clear, or limit.
  uint64_t FindClear(uint64_t begin, uint64_t limit) const {
    uint64_t u = begin;
    while (u < limit) {
      const size_t i = size_t(u & mask_);
      const uint64_t bits = ~words_[i >> 6] >> (i & 63);
      if (bits != 0) {
        // The shift brings in zeros at the top, so `found` stays within
        // this word.
        const uint64_t found = u + uint64_t(std::countr_zero(bits));
        return std::min(found, limit);
      }
      u += 64 - (i & 63);
    }
    return limit;
  }
  size_t memory_bytes() const { return words_.capacity() * 8; }

 private:
  template <typename F>
  void ForEachWord(uint64_t begin, uint64_t end, F&& f) const {
    uint64_t u = begin;
    while (u < end) {
      const size_t i = size_t(u & mask_);
      const size_t bit = i & 63;
      const uint64_t span = std::min<uint64_t>(64 - bit, end - u);
      const uint64_t mask =
          span == 64 ? ~uint64_t{0} : ((uint64_t{1} << span) - 1) << bit;
      f(i >> 6, mask);
      u += span;
    }
  }

  std::vector<uint64_t> words_;
  size_t mask_ = 0;
};

}  // namespace ringlab::rudp::internal

#endif  // RINGLAB_UDP_INTERNAL_RINGS_H_
