// RangeSet: a bounded set of 64-bit numbers kept as disjoint inclusive
// ranges, highest first. The receiver's record of packet numbers it has
// seen (the source of ACK and NACK frames), and one of the gap finders the
// gap-finding benchmark compares.
//
//   RangeSet<32> seen;
//   seen.Insert(7);                       // kNew
//   seen.Insert(7);                       // kDuplicate
//   seen.Insert(9);                       // a gap at 8
//   for (const wire::PacketRange& r : seen.ranges()) { ... }  // [9,9] [7,7]
//
// Inserting is O(1) for the common case (the number extends the highest
// range) and O(k) for a number k ranges down. When a new range would exceed
// kCapacity, the lowest range is forgotten (the set only ever loses its
// oldest history, which the peer no longer needs acknowledged); numbers at
// or below a forgotten range then report kTooOld.
//
// No allocation; trivially copyable. Not thread-safe.
#ifndef RINGLAB_UDP_INTERNAL_RANGE_SET_H_
#define RINGLAB_UDP_INTERNAL_RANGE_SET_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "udp/wire.h"

namespace ringlab::rudp::internal {

template <size_t kCapacity>
class RangeSet {
 public:
  static_assert(kCapacity >= 2);
  enum class InsertResult { kNew, kDuplicate, kTooOld };

  InsertResult Insert(uint64_t v) {
    // Walk down to the first range whose low end is <= v.
    if (v < floor_) return InsertResult::kTooOld;
    size_t i = 0;
    while (i < count_ && ranges_[i].low > v) ++i;
    if (i < count_ && ranges_[i].high >= v) return InsertResult::kDuplicate;
    const bool joins_above = i > 0 && ranges_[i - 1].low == v + 1;
    const bool joins_below = i < count_ && ranges_[i].high + 1 == v;
    if (joins_above && joins_below) {
      ranges_[i - 1].low = ranges_[i].low;
      Erase(i);
    } else if (joins_above) {
      ranges_[i - 1].low = v;
    } else if (joins_below) {
      ranges_[i].high = v;
    } else {
      if (count_ == kCapacity) {
        if (i == count_) return InsertResult::kTooOld;
        // Forget the lowest range; what lies below it is unknown from now.
        floor_ = ranges_[count_ - 1].high + 1;
        --count_;
      }
      std::memmove(&ranges_[i + 1], &ranges_[i],
                   (count_ - i) * sizeof(wire::PacketRange));
      ranges_[i] = {v, v};
      ++count_;
    }
    return InsertResult::kNew;
  }

  bool Contains(uint64_t v) const {
    for (size_t i = 0; i < count_; ++i) {
      if (ranges_[i].low <= v) return ranges_[i].high >= v;
    }
    return false;
  }

  // Forgets every number below `v` (RFC 9000 §13.2.4: once the peer has
  // seen an ACK, the ranges it covered need not be sent again).
  void RemoveBelow(uint64_t v) {
    if (v <= floor_) return;
    floor_ = v;
    while (count_ > 0 && ranges_[count_ - 1].high < v) --count_;
    if (count_ > 0 && ranges_[count_ - 1].low < v) ranges_[count_ - 1].low = v;
  }
  // Numbers below this are no longer tracked (Insert says kTooOld).
  uint64_t floor() const { return floor_; }

  bool empty() const { return count_ == 0; }
  size_t size() const { return count_; }
  uint64_t largest() const { return ranges_[0].high; }  // requires !empty()
  uint64_t smallest() const { return ranges_[count_ - 1].low; }
  std::span<const wire::PacketRange> ranges() const {
    return {ranges_.data(), count_};
  }
  void Clear() {
    count_ = 0;
    floor_ = 0;
  }

 private:
  void Erase(size_t i) {
    std::memmove(&ranges_[i], &ranges_[i + 1],
                 (count_ - i - 1) * sizeof(wire::PacketRange));
    --count_;
  }

  std::array<wire::PacketRange, kCapacity> ranges_{};
  size_t count_ = 0;
  uint64_t floor_ = 0;
};

}  // namespace ringlab::rudp::internal

#endif  // RINGLAB_UDP_INTERNAL_RANGE_SET_H_
