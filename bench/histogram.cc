#include "bench/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace ringlab::bench {

// Layout: index = group * 2^P + sub. Group 0 holds the values [0, 2^P)
// exactly. For a value whose highest set bit is m >= P, group = m - P + 1 and
// `sub` is the P bits below the leading one, so group g spans
// [2^(P+g-1), 2^(P+g)) in 2^P buckets of width 2^(g-1). Group 1 therefore has
// width 1 as well, which makes every value below 2^(P+1) exact.

LatencyHistogram::LatencyHistogram(int precision_bits)
    : precision_bits_(
          std::clamp(precision_bits, kMinPrecisionBits, kMaxPrecisionBits)),
      sub_bucket_count_(uint64_t{1} << precision_bits_),
      counts_(static_cast<size_t>(65 - precision_bits_) * sub_bucket_count_,
              0) {}

size_t LatencyHistogram::BucketIndex(uint64_t value_ns) const {
  if (value_ns < sub_bucket_count_) return static_cast<size_t>(value_ns);
  const int msb = 63 - std::countl_zero(value_ns);
  const int shift = msb - precision_bits_;
  const uint64_t group = static_cast<uint64_t>(shift) + 1;
  const uint64_t sub = (value_ns >> shift) & (sub_bucket_count_ - 1);
  return static_cast<size_t>(group * sub_bucket_count_ + sub);
}

uint64_t LatencyHistogram::BucketLowest(size_t index) const {
  const uint64_t group = index >> precision_bits_;
  const uint64_t sub = index & (sub_bucket_count_ - 1);
  if (group == 0) return sub;
  return (sub_bucket_count_ + sub) << (group - 1);
}

uint64_t LatencyHistogram::BucketHighest(size_t index) const {
  const uint64_t group = index >> precision_bits_;
  const uint64_t width = group == 0 ? 1 : uint64_t{1} << (group - 1);
  // Cannot overflow: the last bucket ends exactly at 2^64 - 1.
  return BucketLowest(index) + (width - 1);
}

void LatencyHistogram::RecordN(uint64_t value_ns, uint64_t count) {
  if (count == 0) return;
  counts_[BucketIndex(value_ns)] += count;
  count_ += count;
  min_ = std::min(min_, value_ns);
  max_ = std::max(max_, value_ns);
  sum_ += static_cast<unsigned __int128>(value_ns) * count;
}

absl::Status LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.precision_bits_ != precision_bits_) {
    return absl::InvalidArgumentError(
        absl::StrCat("LatencyHistogram::Merge: precision ",
                     other.precision_bits_, " bits into a histogram of ",
                     precision_bits_, " bits; use equal precisions"));
  }
  if (other.count_ == 0) return absl::OkStatus();
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  sum_ += other.sum_;
  return absl::OkStatus();
}

void LatencyHistogram::Reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  min_ = UINT64_MAX;
  max_ = 0;
  sum_ = 0;
}

uint64_t LatencyHistogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  if (!(q > 0.0)) return min_;  // also catches NaN
  if (q >= 100.0) return max_;
  // Nearest rank. The tiny downward nudge keeps decimal quantiles such as
  // 99.9 (not exactly representable) from landing one rank too high when
  // q * count / 100 is mathematically an integer.
  const double exact_rank = q / 100.0 * static_cast<double>(count_);
  uint64_t rank = static_cast<uint64_t>(std::ceil(exact_rank * (1.0 - 1e-12)));
  rank = std::clamp<uint64_t>(rank, 1, count_);

  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const uint64_t lo = BucketLowest(i);
      const uint64_t hi = BucketHighest(i);
      // The midpoint halves the worst-case error compared with either edge.
      const uint64_t mid = lo + (hi - lo + 1) / 2;
      return std::clamp(mid, min_, max_);
    }
  }
  return max_;  // unreachable: counts_ sums to count_
}

double LatencyHistogram::mean() const {
  if (count_ == 0) return 0.0;
  return static_cast<double>(static_cast<long double>(sum_) /
                             static_cast<long double>(count_));
}

double LatencyHistogram::max_relative_error() const {
  return std::ldexp(1.0, -(precision_bits_ + 1));
}

}  // namespace ringlab::bench
