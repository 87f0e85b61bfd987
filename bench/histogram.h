// LatencyHistogram: a log-linear ("HDR-style") histogram of nanosecond values.
//
// Benchmarks record millions of round-trip times and then ask for p50, p99,
// p99.9 and max. Keeping every sample would allocate on the hot path; a
// log-linear histogram keeps a fixed array of counters instead. Each power of
// two is split into 2^precision_bits equal sub-buckets, so any reported
// percentile is within a relative error of 2^-(precision_bits + 1) of the
// exact value (0.39% with the default 7 bits). Values below
// 2^(precision_bits + 1) are stored exactly. The full uint64 range is covered,
// so nothing is ever clamped.
//
//   LatencyHistogram rtt;                       // ~58 KiB, allocated here only
//   rtt.Record((MonotonicNow() - sent).count());
//   uint64_t p99_ns = rtt.Percentile(99.0);
//   absl::Status s = total.Merge(rtt);          // same precision required
//
// Percentile(q) uses the nearest-rank definition: the value of the
// ceil(q/100 * count)-th smallest sample (the smallest for q == 0). It reports
// the midpoint of that sample's bucket, clamped to [min(), max()], so p0 and
// p100 are exact.
//
// Thread-safety: none; use one histogram per thread and Merge() afterwards.
// Errors: Merge() returns InvalidArgument when the precisions differ. Record()
// cannot fail and never allocates.
#ifndef RINGLAB_BENCH_HISTOGRAM_H_
#define RINGLAB_BENCH_HISTOGRAM_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace ringlab::bench {

class LatencyHistogram {
 public:
  static constexpr int kDefaultPrecisionBits = 7;
  static constexpr int kMinPrecisionBits = 1;
  static constexpr int kMaxPrecisionBits = 14;

  // `precision_bits` is clamped to [kMinPrecisionBits, kMaxPrecisionBits].
  // Memory: 8 * 2^precision_bits * (65 - precision_bits) bytes.
  explicit LatencyHistogram(int precision_bits = kDefaultPrecisionBits);

  // Adds one sample (or `count` samples) of `value_ns`. O(1), allocation-free.
  void Record(uint64_t value_ns) { RecordN(value_ns, 1); }
  void RecordN(uint64_t value_ns, uint64_t count);

  // Adds every sample of `other`. InvalidArgument if precisions differ.
  absl::Status Merge(const LatencyHistogram& other);

  // Forgets all samples; keeps the memory.
  void Reset();

  // `q` in [0, 100] (clamped). 0 when empty.
  uint64_t Percentile(double q) const;

  uint64_t count() const { return count_; }
  // 0 when empty.
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  // Exact arithmetic mean of the recorded values; 0 when empty.
  double mean() const;

  int precision_bits() const { return precision_bits_; }
  // The largest relative error a percentile can have (2^-(precision_bits+1)).
  double max_relative_error() const;

  // Bucket geometry, exposed for tests and for exporting distributions.
  size_t bucket_count() const { return counts_.size(); }
  size_t BucketIndex(uint64_t value_ns) const;
  uint64_t BucketLowest(size_t index) const;
  uint64_t BucketHighest(size_t index) const;  // inclusive
  uint64_t BucketCountAt(size_t index) const { return counts_[index]; }

 private:
  int precision_bits_;
  uint64_t sub_bucket_count_;  // 2^precision_bits_
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
  // Exact sum: 2^64 samples of 2^64-1 fit in 128 bits.
  unsigned __int128 sum_ = 0;
};

}  // namespace ringlab::bench

#endif  // RINGLAB_BENCH_HISTOGRAM_H_
