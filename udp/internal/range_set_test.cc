#include "udp/internal/range_set.h"

#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "transport/sim_network.h"

namespace ringlab::rudp::internal {
namespace {

using Result = RangeSet<8>::InsertResult;

std::vector<std::pair<uint64_t, uint64_t>> Ranges(const RangeSet<8>& s) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& r : s.ranges()) out.push_back({r.low, r.high});
  return out;
}

TEST(RangeSetTest, MergesNeighboursAndDetectsDuplicates) {
  RangeSet<8> s;
  EXPECT_EQ(s.Insert(5), Result::kNew);
  EXPECT_EQ(s.Insert(7), Result::kNew);
  EXPECT_EQ(s.Insert(7), Result::kDuplicate);
  using P = std::pair<uint64_t, uint64_t>;
  EXPECT_EQ(Ranges(s), (std::vector<P>{{7, 7}, {5, 5}}));
  EXPECT_EQ(s.Insert(6), Result::kNew);  // joins both
  EXPECT_EQ(Ranges(s), (std::vector<P>{{5, 7}}));
  EXPECT_EQ(s.Insert(8), Result::kNew);
  EXPECT_EQ(s.Insert(4), Result::kNew);
  EXPECT_EQ(Ranges(s), (std::vector<P>{{4, 8}}));
  EXPECT_TRUE(s.Contains(4));
  EXPECT_TRUE(s.Contains(8));
  EXPECT_FALSE(s.Contains(9));
  EXPECT_FALSE(s.Contains(3));
  EXPECT_EQ(s.largest(), 8u);
  EXPECT_EQ(s.smallest(), 4u);
}

TEST(RangeSetTest, ForgetsTheOldestRangeWhenFull) {
  RangeSet<8> s;
  for (uint64_t i = 0; i < 8; ++i) EXPECT_EQ(s.Insert(i * 10), Result::kNew);
  EXPECT_EQ(s.size(), 8u);
  EXPECT_EQ(s.Insert(100), Result::kNew);  // forgets [0, 0]
  EXPECT_EQ(s.size(), 8u);
  EXPECT_EQ(s.smallest(), 10u);
  EXPECT_EQ(s.floor(), 1u);
  EXPECT_EQ(s.Insert(0), Result::kTooOld);  // may have been seen
  EXPECT_EQ(s.Insert(5), Result::kTooOld);  // no room for another range
  EXPECT_EQ(s.Insert(9), Result::kNew);     // extends the lowest range
  EXPECT_EQ(s.smallest(), 9u);
}

TEST(RangeSetTest, RemoveBelowRaisesTheFloor) {
  RangeSet<8> s;
  for (uint64_t v : {1, 2, 3, 10, 11, 20}) s.Insert(v);
  s.RemoveBelow(11);
  using P = std::pair<uint64_t, uint64_t>;
  EXPECT_EQ(Ranges(s), (std::vector<P>{{20, 20}, {11, 11}}));
  EXPECT_EQ(s.Insert(10), Result::kTooOld);
  EXPECT_EQ(s.Insert(12), Result::kNew);
  s.RemoveBelow(5);  // lower than the floor: no effect
  EXPECT_EQ(s.floor(), 11u);
}

// Against a std::set model: random inserts, the ranges always describe
// exactly the numbers inserted (above the floor), highest first, disjoint
// and never adjacent.
TEST(RangeSetTest, MatchesAModel) {
  transport::SimRandom random(3);
  RangeSet<64> s;
  std::set<uint64_t> model;
  for (int i = 0; i < 20000; ++i) {
    const uint64_t v = i + random.Uniform(40);  // mostly ascending, reordered
    const auto r = s.Insert(v);
    if (v < s.floor()) {
      EXPECT_NE(r, RangeSet<64>::InsertResult::kNew);
      continue;
    }
    if (r == RangeSet<64>::InsertResult::kTooOld) {
      // Full, and v would be a new lowest range: never seen before.
      EXPECT_EQ(model.count(v), 0u);
      continue;
    }
    EXPECT_EQ(r == RangeSet<64>::InsertResult::kDuplicate, model.count(v) == 1)
        << v;
    model.insert(v);
  }
  uint64_t previous_low = UINT64_MAX;
  for (const auto& r : s.ranges()) {
    ASSERT_LE(r.low, r.high);
    if (previous_low != UINT64_MAX) {
      ASSERT_LT(r.high + 1, previous_low);
    }
    for (uint64_t v = r.low; v <= r.high; ++v) ASSERT_EQ(model.count(v), 1u);
    previous_low = r.low;
  }
  for (uint64_t v : model) {
    if (v >= s.floor()) {
      ASSERT_TRUE(s.Contains(v)) << v;
    }
  }
}

}  // namespace
}  // namespace ringlab::rudp::internal
