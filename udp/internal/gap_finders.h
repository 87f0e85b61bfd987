// Three ways to find the missing ids in a set of received message ids,
// compared by udp/gap_benchmark.cc (see udp/EXPERIMENTS.md):
//
//  - SortedIdGaps: RealMQ's plan. The received ids in a sorted array; the
//    number of ids missing between positions i < j is
//    (ids[j] - ids[i]) - (j - i). A range with none missing is pruned; one
//    with some is split where interpolation puts the middle id, so work is
//    spent only where gaps are.
//  - BitmapGaps: a ring bitmap over the id window, one bit per id; gaps are
//    the clear bits, found a 64-bit word at a time (full words skipped).
//  - RangeGaps: what rudp itself keeps (internal/range_set.h): disjoint
//    received ranges; the gaps are the spaces between them. The protocol
//    caps it at 64 ranges (the newest); this one is unbounded so it can be
//    compared at every size.
//
// Each offers Add(id) (ids arrive mostly ascending) and
// ForEachGap(fn(first, last)) over [0, largest], in ascending order.
//
//   BitmapGaps g(1 << 20);
//   for (uint64_t id : received) g.Add(id);
//   g.ForEachGap([](uint64_t first, uint64_t last) { ... });
//
// Benchmark and test code: allocates on construction and while growing.
#ifndef RINGLAB_UDP_INTERNAL_GAP_FINDERS_H_
#define RINGLAB_UDP_INTERNAL_GAP_FINDERS_H_

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "udp/wire.h"

namespace ringlab::rudp::internal {

class SortedIdGaps {
 public:
  void Reserve(size_t n) { ids_.reserve(n); }
  void Add(uint64_t id) {
    // Appending is the common case; a late id is inserted in place.
    if (ids_.empty() || id > ids_.back()) {
      ids_.push_back(id);
      return;
    }
    auto it = std::lower_bound(ids_.begin(), ids_.end(), id);
    if (it == ids_.end() || *it != id) ids_.insert(it, id);
  }
  template <typename F>
  void ForEachGap(F&& fn) const {
    if (ids_.empty()) return;
    if (ids_.front() > 0) fn(0, ids_.front() - 1);
    Split(0, ids_.size() - 1, fn);
  }
  // Missing ids between positions i and j: the pruning test.
  uint64_t MissingBetween(size_t i, size_t j) const {
    return (ids_[j] - ids_[i]) - (j - i);
  }
  size_t size() const { return ids_.size(); }

 private:
  template <typename F>
  void Split(size_t i, size_t j, F& fn) const {
    // Iterative with an explicit stack so deep splits cannot overflow; the
    // left half is visited first to keep the output ascending.
    struct Range {
      size_t i, j;
    };
    Range stack[128];
    size_t top = 0;
    stack[top++] = {i, j};
    while (top > 0) {
      const Range r = stack[--top];
      if (MissingBetween(r.i, r.j) == 0) continue;  // pruned
      if (r.j == r.i + 1) {
        fn(ids_[r.i] + 1, ids_[r.j] - 1);
        continue;
      }
      // Interpolate the position of the middle id, as if the ids were
      // spread evenly; clamp inside (i, j).
      const uint64_t lo = ids_[r.i], hi = ids_[r.j];
      const uint64_t target = lo + (hi - lo) / 2;
      size_t p = r.i + size_t((unsigned __int128)(target - lo) * (r.j - r.i) /
                              (hi - lo));
      p = std::clamp(p, r.i + 1, r.j - 1);
      if (top + 2 > std::size(stack)) {
        // Degenerate input: fall back to a linear walk of this range.
        for (size_t k = r.i; k < r.j; ++k) {
          if (ids_[k + 1] != ids_[k] + 1) fn(ids_[k] + 1, ids_[k + 1] - 1);
        }
        continue;
      }
      stack[top++] = {p, r.j};
      stack[top++] = {r.i, p};
    }
  }

  std::vector<uint64_t> ids_;
};

class BitmapGaps {
 public:
  explicit BitmapGaps(uint64_t capacity_ids)
      : words_((std::bit_ceil(std::max<uint64_t>(capacity_ids, 64)) + 63) / 64,
               0),
        mask_(words_.size() * 64 - 1) {}
  void Add(uint64_t id) {
    const uint64_t i = id & mask_;
    words_[i >> 6] |= uint64_t{1} << (i & 63);
    if (!any_ || id > largest_) largest_ = id;
    any_ = true;
  }
  // Gaps in [0, largest]; ids must fit in one window (largest < capacity).
  template <typename F>
  void ForEachGap(F&& fn) const {
    if (!any_) return;
    const uint64_t end = largest_ + 1;
    uint64_t u = 0;
    bool in_gap = false;
    uint64_t gap_start = 0;
    while (u < end) {
      const uint64_t index = u & mask_;
      const unsigned shift = unsigned(index & 63);
      const uint64_t avail = 64 - shift;
      // The rest of this word, from u on; the shift fills the top with 0.
      const uint64_t w = words_[index >> 6] >> shift;
      if (in_gap) {
        // Next received id: the first set bit.
        const uint64_t k = w == 0 ? 64 : uint64_t(std::countr_zero(w));
        if (k >= avail) {
          u += avail;
          continue;
        }
        u += k;
        fn(gap_start, std::min(u, end) - 1);
        in_gap = false;
      } else {
        // Next missing id: the first clear bit (all-ones words skip at once).
        const uint64_t k = uint64_t(std::countr_zero(~w));
        if (k >= avail) {
          u += avail;
          continue;
        }
        u += k;
        if (u >= end) break;
        gap_start = u;
        in_gap = true;
      }
    }
    if (in_gap) fn(gap_start, end - 1);
  }

 private:
  std::vector<uint64_t> words_;
  uint64_t mask_;
  uint64_t largest_ = 0;
  bool any_ = false;
};

class RangeGaps {
 public:
  void Add(uint64_t id) {
    // The same algorithm as RangeSet::Insert (highest range first, walk
    // down from the top), on a growable vector.
    size_t i = 0;
    while (i < ranges_.size() && ranges_[i].low > id) ++i;
    if (i < ranges_.size() && ranges_[i].high >= id) return;
    const bool joins_above = i > 0 && ranges_[i - 1].low == id + 1;
    const bool joins_below = i < ranges_.size() && ranges_[i].high + 1 == id;
    if (joins_above && joins_below) {
      ranges_[i - 1].low = ranges_[i].low;
      ranges_.erase(ranges_.begin() + ptrdiff_t(i));
    } else if (joins_above) {
      ranges_[i - 1].low = id;
    } else if (joins_below) {
      ranges_[i].high = id;
    } else {
      ranges_.insert(ranges_.begin() + ptrdiff_t(i), {id, id});
    }
  }
  template <typename F>
  void ForEachGap(F&& fn) const {
    if (ranges_.empty()) return;
    if (ranges_.back().low > 0) fn(0, ranges_.back().low - 1);
    for (size_t k = ranges_.size() - 1; k > 0; --k) {
      fn(ranges_[k].high + 1, ranges_[k - 1].low - 1);
    }
  }
  size_t ranges() const { return ranges_.size(); }

 private:
  std::vector<wire::PacketRange> ranges_;  // highest first, as on the wire
};

}  // namespace ringlab::rudp::internal

#endif  // RINGLAB_UDP_INTERNAL_GAP_FINDERS_H_
