#include "transport/internal/reply_gap.h"

#include "gtest/gtest.h"

namespace ringlab::transport::internal {
namespace {

constexpr int64_t kUs = 1000;

TEST(ReplyGapTest, NoEstimateUntilEnoughSamples) {
  ReplyGapTracker gaps;
  int64_t t = 0;
  for (int i = 0; i < ReplyGapTracker::kMinSamples - 1; ++i) {
    gaps.Sent(t);
    t += 30 * kUs;
    gaps.Received(t);
  }
  EXPECT_EQ(gaps.p90_ns(), -1);
  gaps.Sent(t);
  gaps.Received(t + 30 * kUs);
  EXPECT_EQ(gaps.p90_ns(), 30 * kUs);
}

TEST(ReplyGapTest, GapRunsFromTheFirstUnansweredSend) {
  ReplyGapTracker gaps;
  for (int i = 0; i < 8; ++i) {
    const int64_t t = i * 1000 * kUs;
    gaps.Sent(t);
    gaps.Sent(t + 10 * kUs);  // a second send does not move the start
    EXPECT_TRUE(gaps.gap_open());
    EXPECT_EQ(gaps.open_since_ns(), t);
    gaps.Received(t + 50 * kUs);
    EXPECT_FALSE(gaps.gap_open());
    gaps.Received(t + 60 * kUs);  // nothing open: no sample
  }
  EXPECT_EQ(gaps.samples(), 8u);
  EXPECT_EQ(gaps.p90_ns(), 50 * kUs);
}

TEST(ReplyGapTest, P90IgnoresTheFastestAndSlowestTenth) {
  ReplyGapTracker gaps;
  int64_t t = 0;
  // 32 samples: 28 of 20 us, 4 of 400 us (12.5% > 10%) -> p90 is 400 us.
  for (int i = 0; i < ReplyGapTracker::kSamples; ++i) {
    const int64_t gap = i % 8 == 0 ? 400 * kUs : 20 * kUs;
    gaps.Sent(t);
    gaps.Received(t + gap);
    t += 1000 * kUs;
  }
  EXPECT_EQ(gaps.p90_ns(), 400 * kUs);
  // 3 slow ones in the last 32 (9.4%) -> the p90 is a fast one.
  for (int i = 0; i < 8; ++i) {
    gaps.Sent(t);
    gaps.Received(t + 20 * kUs);
    t += 1000 * kUs;
  }
  EXPECT_EQ(gaps.p90_ns(), 20 * kUs);
}

TEST(ReplyGapTest, ExpiredWindowsTurnAOneWaySenderOff) {
  ReplyGapTracker gaps;
  int64_t t = 0;
  for (int i = 0; i < ReplyGapTracker::kSamples; ++i) {
    gaps.Sent(t);
    gaps.Received(t + 25 * kUs);
    t += 100 * kUs;
  }
  ASSERT_EQ(gaps.p90_ns(), 25 * kUs);
  // Now nothing answers: each batched wait expires. Within a few sends the
  // p90 says "beyond any window".
  int expired = 0;
  while (gaps.p90_ns() < ReplyGapTracker::kBeyondNs && expired < 16) {
    gaps.Sent(t);
    gaps.Expired();
    ++expired;
    t += 100 * kUs;
  }
  EXPECT_EQ(gaps.p90_ns(), ReplyGapTracker::kBeyondNs);
  EXPECT_LE(expired, 8);
  EXPECT_GE(expired, 4);
  // Expired() without an open gap records nothing.
  const uint64_t before = gaps.samples();
  gaps.Expired();
  EXPECT_EQ(gaps.samples(), before);
  // Replies again: batching comes back once they are 90% of the window.
  for (int i = 0; i < ReplyGapTracker::kSamples; ++i) {
    gaps.Sent(t);
    gaps.Received(t + 25 * kUs);
    t += 100 * kUs;
  }
  EXPECT_EQ(gaps.p90_ns(), 25 * kUs);
}

}  // namespace
}  // namespace ringlab::transport::internal
