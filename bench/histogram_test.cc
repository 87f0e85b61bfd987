#include "bench/histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace ringlab::bench {
namespace {

// Quantiles in thousandths of a percent, so the reference rank below is
// computed with integers only (no floating-point rounding shared with the
// code under test).
constexpr uint64_t kQuantilesMilli[] = {0,     1000,  10000,  25000,
                                        50000, 75000, 90000,  99000,
                                        99900, 99990, 100000, 33333};

uint64_t ExactPercentile(const std::vector<uint64_t>& sorted,
                         uint64_t q_milli) {
  const uint64_t n = sorted.size();
  // Nearest rank: ceil(q/100 * n), at least 1.
  uint64_t rank = (q_milli * n + 100000 - 1) / 100000;
  rank = std::clamp<uint64_t>(rank, 1, n);
  return sorted[rank - 1];
}

void ExpectPercentilesWithinBound(const LatencyHistogram& h,
                                  std::vector<uint64_t> values) {
  std::sort(values.begin(), values.end());
  const double bound = h.max_relative_error();
  for (uint64_t q_milli : kQuantilesMilli) {
    const double q = static_cast<double>(q_milli) / 1000.0;
    const uint64_t exact = ExactPercentile(values, q_milli);
    const uint64_t got = h.Percentile(q);
    const double diff =
        std::abs(static_cast<double>(got) - static_cast<double>(exact));
    EXPECT_LE(diff, bound * static_cast<double>(exact))
        << "q=" << q << " exact=" << exact << " got=" << got;
  }
}

LatencyHistogram RecordAll(const std::vector<uint64_t>& values,
                           int precision_bits) {
  LatencyHistogram h(precision_bits);
  for (uint64_t v : values) h.Record(v);
  return h;
}

TEST(LatencyHistogramTest, EmptyReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
  EXPECT_EQ(h.Percentile(50), 0u);
}

TEST(LatencyHistogramTest, BucketGeometryCoversRangeWithoutGaps) {
  for (int bits : {1, 3, 7, 10}) {
    LatencyHistogram h(bits);
    EXPECT_EQ(h.BucketLowest(0), 0u);
    for (size_t i = 1; i < h.bucket_count(); ++i) {
      ASSERT_EQ(h.BucketLowest(i), h.BucketHighest(i - 1) + 1)
          << "bits=" << bits << " i=" << i;
    }
    EXPECT_EQ(h.BucketHighest(h.bucket_count() - 1),
              std::numeric_limits<uint64_t>::max());
    // Every bucket wider than one value is narrow relative to its lower
    // edge (width-1 buckets are exact).
    for (size_t i = 1; i < h.bucket_count(); ++i) {
      const double width =
          static_cast<double>(h.BucketHighest(i) - h.BucketLowest(i)) + 1.0;
      if (width == 1.0) continue;
      ASSERT_LE(width / static_cast<double>(h.BucketLowest(i)),
                std::ldexp(1.0, -bits))
          << "bits=" << bits << " i=" << i;
    }
  }
}

TEST(LatencyHistogramTest, IndexRoundTripsThroughBucketBounds) {
  LatencyHistogram h;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    const size_t idx = h.BucketIndex(v);
    ASSERT_LT(idx, h.bucket_count());
    ASSERT_LE(h.BucketLowest(idx), v);
    ASSERT_GE(h.BucketHighest(idx), v);
  }
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram h(7);
  // Everything below 2^(7+1) has a bucket of its own.
  for (uint64_t v = 0; v < 256; ++v) {
    EXPECT_EQ(h.BucketLowest(h.BucketIndex(v)), v);
    EXPECT_EQ(h.BucketHighest(h.BucketIndex(v)), v);
  }
  for (uint64_t v = 0; v < 256; ++v) h.Record(v);
  EXPECT_EQ(h.Percentile(50), 127u);  // rank 128 of 0..255
  EXPECT_EQ(h.Percentile(100), 255u);
  EXPECT_EQ(h.Percentile(0), 0u);
}

TEST(LatencyHistogramTest, EdgeValues) {
  constexpr uint64_t kHuge = std::numeric_limits<uint64_t>::max();
  LatencyHistogram h;
  h.Record(0);
  h.Record(1);
  h.Record(kHuge);
  EXPECT_EQ(h.count(), 3u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), kHuge);
  EXPECT_EQ(h.Percentile(0), 0u);
  EXPECT_EQ(h.Percentile(33), 0u);    // rank 1
  EXPECT_EQ(h.Percentile(34), 1u);    // rank 2
  EXPECT_EQ(h.Percentile(66.6), 1u);  // rank 2
  EXPECT_EQ(h.Percentile(100), kHuge);
  // Mean is exact even though the sum exceeds 64 bits.
  EXPECT_DOUBLE_EQ(h.mean(), (static_cast<double>(kHuge) + 1.0) / 3.0);

  LatencyHistogram big;
  big.RecordN(kHuge, 1000);
  EXPECT_DOUBLE_EQ(big.mean(), static_cast<double>(kHuge));
  EXPECT_EQ(big.Percentile(50), kHuge);  // clamped to max: exact
}

TEST(LatencyHistogramTest, SingleValueIsExactAtEveryQuantile) {
  LatencyHistogram h;
  h.RecordN(123456789, 5);
  for (double q : {0.0, 1.0, 50.0, 99.9, 100.0}) {
    EXPECT_EQ(h.Percentile(q), 123456789u) << q;
  }
  EXPECT_DOUBLE_EQ(h.mean(), 123456789.0);
}

TEST(LatencyHistogramTest, QuantileOutsideRangeIsClamped) {
  LatencyHistogram h;
  for (uint64_t v = 1000; v < 2000; ++v) h.Record(v);
  EXPECT_EQ(h.Percentile(-5), 1000u);
  EXPECT_EQ(h.Percentile(250), 1999u);
  EXPECT_EQ(h.Percentile(std::nan("")), 1000u);
}

TEST(LatencyHistogramTest, UniformDistributionWithinBound) {
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<uint64_t> dist(1000, 5'000'000);
  std::vector<uint64_t> values(200000);
  for (auto& v : values) v = dist(rng);
  for (int bits : {4, 7, 10}) {
    SCOPED_TRACE(bits);
    ExpectPercentilesWithinBound(RecordAll(values, bits), values);
  }
}

TEST(LatencyHistogramTest, LogNormalDistributionWithinBound) {
  // Latency-like: a body around 20 us with a long tail.
  std::mt19937_64 rng(2);
  std::lognormal_distribution<double> dist(std::log(20000.0), 0.8);
  std::vector<uint64_t> values(200000);
  for (auto& v : values) v = static_cast<uint64_t>(dist(rng));
  for (int bits : {3, 7}) {
    SCOPED_TRACE(bits);
    ExpectPercentilesWithinBound(RecordAll(values, bits), values);
  }
}

TEST(LatencyHistogramTest, BimodalWithOutliersWithinBound) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> fast(8000, 500);
  std::normal_distribution<double> slow(250000, 20000);
  std::vector<uint64_t> values;
  for (int i = 0; i < 100000; ++i) {
    const double x = (i % 10 == 0) ? slow(rng) : fast(rng);
    values.push_back(static_cast<uint64_t>(std::max(0.0, x)));
  }
  // A few huge outliers (seconds) must show up at the very top only.
  for (int i = 0; i < 20; ++i) values.push_back(3'000'000'000ull + i);
  LatencyHistogram h = RecordAll(values, 7);
  ExpectPercentilesWithinBound(h, values);
  EXPECT_EQ(h.max(), 3'000'000'019ull);
  EXPECT_LT(h.Percentile(99.9), 1'000'000u);
}

TEST(LatencyHistogramTest, ExponentialSpanningManyDecadesWithinBound) {
  std::mt19937_64 rng(4);
  std::vector<uint64_t> values(100000);
  // log-uniform from 1 ns to ~10^12 ns.
  std::uniform_real_distribution<double> exponent(0.0, 40.0);
  for (auto& v : values) v = static_cast<uint64_t>(std::exp2(exponent(rng)));
  ExpectPercentilesWithinBound(RecordAll(values, 7), values);
}

TEST(LatencyHistogramTest, MeanMinMaxCountAreExact) {
  std::mt19937_64 rng(5);
  LatencyHistogram h;
  uint64_t sum = 0, lo = UINT64_MAX, hi = 0;
  for (int i = 0; i < 5000; ++i) {
    const uint64_t v = rng() % 10'000'000;
    h.Record(v);
    sum += v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_EQ(h.count(), 5000u);
  EXPECT_EQ(h.min(), lo);
  EXPECT_EQ(h.max(), hi);
  EXPECT_NEAR(h.mean(), static_cast<double>(sum) / 5000.0, 1e-6);
}

TEST(LatencyHistogramTest, PercentilesAreMonotone) {
  std::mt19937_64 rng(6);
  std::lognormal_distribution<double> dist(10.0, 2.0);
  LatencyHistogram h;
  for (int i = 0; i < 50000; ++i) h.Record(static_cast<uint64_t>(dist(rng)));
  uint64_t previous = 0;
  for (int step = 0; step <= 10000; ++step) {
    const uint64_t p = h.Percentile(step / 100.0);
    ASSERT_GE(p, previous) << "q=" << step / 100.0;
    previous = p;
  }
  EXPECT_EQ(previous, h.max());
}

TEST(LatencyHistogramTest, MergeEqualsRecordingBoth) {
  std::mt19937_64 rng(8);
  LatencyHistogram a, b, both;
  for (int i = 0; i < 30000; ++i) {
    const uint64_t v = rng() % 1'000'000;
    ((i % 3 == 0) ? a : b).Record(v);
    both.Record(v);
  }
  b.Record(0);
  both.Record(0);
  ASSERT_TRUE(a.Merge(b).ok());
  EXPECT_EQ(a.count(), both.count());
  EXPECT_EQ(a.min(), both.min());
  EXPECT_EQ(a.max(), both.max());
  EXPECT_DOUBLE_EQ(a.mean(), both.mean());
  for (size_t i = 0; i < a.bucket_count(); ++i) {
    ASSERT_EQ(a.BucketCountAt(i), both.BucketCountAt(i)) << i;
  }
  for (double q : {0.0, 10.0, 50.0, 99.0, 99.99, 100.0}) {
    EXPECT_EQ(a.Percentile(q), both.Percentile(q)) << q;
  }
}

TEST(LatencyHistogramTest, MergeOfEmptyChangesNothing) {
  LatencyHistogram a, empty;
  a.Record(500);
  ASSERT_TRUE(a.Merge(empty).ok());
  EXPECT_EQ(a.count(), 1u);
  EXPECT_EQ(a.min(), 500u);
  ASSERT_TRUE(empty.Merge(a).ok());
  EXPECT_EQ(empty.min(), 500u);
  EXPECT_EQ(empty.max(), 500u);
}

TEST(LatencyHistogramTest, MergeRejectsDifferentPrecision) {
  LatencyHistogram a(7), b(5);
  b.Record(10);
  absl::Status s = a.Merge(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.count(), 0u);
}

TEST(LatencyHistogramTest, ResetForgetsEverything) {
  LatencyHistogram h;
  h.RecordN(42, 10);
  h.Record(1'000'000);
  h.Reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.Percentile(99), 0u);
  h.Record(7);
  EXPECT_EQ(h.min(), 7u);
  EXPECT_EQ(h.max(), 7u);
  EXPECT_EQ(h.Percentile(50), 7u);
}

TEST(LatencyHistogramTest, RecordNEqualsRepeatedRecord) {
  LatencyHistogram a, b;
  a.RecordN(77777, 4);
  a.RecordN(5, 0);  // no-op
  for (int i = 0; i < 4; ++i) b.Record(77777);
  EXPECT_EQ(a.count(), b.count());
  EXPECT_EQ(a.min(), b.min());
  EXPECT_EQ(a.Percentile(50), b.Percentile(50));
}

TEST(LatencyHistogramTest, PrecisionIsClamped) {
  EXPECT_EQ(LatencyHistogram(0).precision_bits(),
            LatencyHistogram::kMinPrecisionBits);
  EXPECT_EQ(LatencyHistogram(99).precision_bits(),
            LatencyHistogram::kMaxPrecisionBits);
}

}  // namespace
}  // namespace ringlab::bench
