#include "udp/internal/gap_finders.h"

#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "transport/sim_network.h"

namespace ringlab::rudp::internal {
namespace {

using Gaps = std::vector<std::pair<uint64_t, uint64_t>>;

template <typename T>
Gaps Collect(const T& finder) {
  Gaps out;
  finder.ForEachGap([&](uint64_t a, uint64_t b) { out.push_back({a, b}); });
  return out;
}

// Received ids 0..n-1 minus Bernoulli or burst losses, plus the model's
// gaps.
std::pair<std::vector<uint64_t>, Gaps> Make(uint64_t seed, uint64_t n,
                                            double loss, bool bursty) {
  transport::SimRandom r(seed);
  std::vector<uint64_t> ids;
  Gaps gaps;
  bool bad = false;
  for (uint64_t id = 0; id < n; ++id) {
    bool lost;
    if (bursty) {
      // Mean burst 4: leave the bad state with 1/4, enter it to match loss.
      const double enter = loss / (1 - loss) * 0.25;
      bad = bad ? !r.Bernoulli(0.25) : r.Bernoulli(enter);
      lost = bad;
    } else {
      lost = r.Bernoulli(loss);
    }
    if (id == n - 1) lost = false;  // the largest id is the reference
    if (lost) {
      if (!gaps.empty() && gaps.back().second + 1 == id) {
        gaps.back().second = id;
      } else {
        gaps.push_back({id, id});
      }
    } else {
      ids.push_back(id);
    }
  }
  return {ids, gaps};
}

TEST(GapFindersTest, AllThreeFindExactlyTheMissingIds) {
  for (uint64_t n : {1000u, 10000u, 100000u}) {
    for (double loss : {0.0, 0.01, 0.05, 0.2}) {
      for (bool bursty : {false, true}) {
        const auto [ids, model] =
            Make(n + uint64_t(loss * 100), n, loss, bursty);
        SortedIdGaps sorted;
        BitmapGaps bitmap(n);
        RangeGaps ranges;
        for (uint64_t id : ids) {
          sorted.Add(id);
          bitmap.Add(id);
          ranges.Add(id);
        }
        SCOPED_TRACE(testing::Message() << n << " " << loss << " " << bursty);
        EXPECT_EQ(Collect(sorted), model);
        EXPECT_EQ(Collect(bitmap), model);
        EXPECT_EQ(Collect(ranges), model);
      }
    }
  }
}

TEST(GapFindersTest, LateArrivalsFillGaps) {
  SortedIdGaps sorted;
  BitmapGaps bitmap(256);
  RangeGaps ranges;
  for (uint64_t id : {0, 1, 5, 9, 3, 4, 2, 12}) {
    sorted.Add(id);
    bitmap.Add(id);
    ranges.Add(id);
  }
  const Gaps expected = {{6, 8}, {10, 11}};
  EXPECT_EQ(Collect(sorted), expected);
  EXPECT_EQ(Collect(bitmap), expected);
  EXPECT_EQ(Collect(ranges), expected);
  EXPECT_EQ(sorted.MissingBetween(0, sorted.size() - 1), 5u);
}

TEST(GapFindersTest, GapBeforeTheFirstId) {
  SortedIdGaps sorted;
  BitmapGaps bitmap(128);
  RangeGaps ranges;
  for (uint64_t id : {70, 71, 100}) {
    sorted.Add(id);
    bitmap.Add(id);
    ranges.Add(id);
  }
  const Gaps expected = {{0, 69}, {72, 99}};
  EXPECT_EQ(Collect(sorted), expected);
  EXPECT_EQ(Collect(bitmap), expected);
  EXPECT_EQ(Collect(ranges), expected);
}

}  // namespace
}  // namespace ringlab::rudp::internal
