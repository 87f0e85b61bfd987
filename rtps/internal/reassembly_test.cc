// FragmentReassembler: out-of-order, overlapping, inconsistent and
// out-of-range fragments, the per-writer slot policy, the shared byte
// budget, time-outs and NACK_FRAG windows.
#include "rtps/internal/reassembly.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace ringlab::rtps::internal {
namespace {

std::vector<std::byte> Bytes(size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = std::byte(static_cast<uint8_t>(seed + i));
  return v;
}

// Fragments [first, first + count) of `sample` with fragment size `fs`.
FragmentInput Frag(SequenceNumber sn, const std::vector<std::byte>& sample,
                   uint16_t fs, uint32_t first, uint16_t count) {
  size_t off = size_t{first - 1} * fs;
  size_t len = std::min<size_t>(size_t{count} * fs, sample.size() - off);
  return {sn,    static_cast<uint32_t>(sample.size()), fs, first,
          count, std::span(sample).subspan(off, len)};
}

const Timestamp kT0 = Timestamp::Zero();

TEST(ReassemblyTest, OutOfOrderAndOverlappingFragmentsMakeOneSample) {
  ReassemblyBudget budget;
  FragmentReassembler r(&budget, {});
  auto sample = Bytes(1000, 3);  // 10 fragments of 100, the last 100
  PartialSample* s = nullptr;
  EXPECT_EQ(r.Add(Frag(5, sample, 100, 4, 3), kT0, &s),
            ReassemblyOutcome::kAccepted);
  EXPECT_EQ(r.Add(Frag(5, sample, 100, 1, 2), kT0, &s),
            ReassemblyOutcome::kAccepted);
  // Overlaps 4..6 already there and adds 3 and 7: the first copy stays.
  auto garbage = Bytes(1000, 99);
  EXPECT_EQ(r.Add(Frag(5, garbage, 100, 3, 5), kT0, &s),
            ReassemblyOutcome::kAccepted);
  EXPECT_EQ(r.Add(Frag(5, sample, 100, 4, 1), kT0, &s),
            ReassemblyOutcome::kDuplicate);
  EXPECT_EQ(r.Add(Frag(5, sample, 100, 8, 3), kT0, &s),
            ReassemblyOutcome::kCompleted);
  ASSERT_NE(s, nullptr);
  auto want = sample;
  for (size_t i = 200; i < 300; ++i) want[i] = garbage[i];  // fragment 3
  for (size_t i = 600; i < 700; ++i) want[i] = garbage[i];  // fragment 7
  EXPECT_TRUE(std::equal(s->bytes().begin(), s->bytes().end(), want.begin(),
                         want.end()));
  r.Release(s);
  EXPECT_EQ(r.active(), 0u);
}

// ReleaseInto hands the complete sample over without copying it, takes the
// caller's buffer for the slot, and keeps the budget equal to what the
// slots hold.
TEST(ReassemblyTest, ReleaseIntoSwapsBuffersAndKeepsTheBudget) {
  ReassemblyBudget budget;
  FragmentReassembler r(&budget, {});
  auto sample = Bytes(1000, 5);
  PartialSample* s = nullptr;
  ASSERT_EQ(r.Add(Frag(1, sample, 100, 1, 10), kT0, &s),
            ReassemblyOutcome::kCompleted);
  EXPECT_EQ(r.bytes_copied(), 1000u);
  const std::byte* slot_bytes = s->data.data();
  const size_t bitmap_bytes = s->have.capacity() * sizeof(uint64_t);
  std::vector<std::byte> out;
  out.reserve(300);  // the caller's old buffer: the slot gets it
  r.ReleaseInto(s, &out);
  EXPECT_EQ(r.active(), 0u);
  EXPECT_EQ(out.data(), slot_bytes);  // moved, not copied
  EXPECT_TRUE(std::equal(out.begin(), out.end(), sample.begin(), sample.end()));
  EXPECT_EQ(budget.used_bytes, 300 + bitmap_bytes);
  // The next sample grows the slot again, inside the budget.
  auto next = Bytes(1000, 9);
  ASSERT_EQ(r.Add(Frag(2, next, 100, 1, 10), kT0, &s),
            ReassemblyOutcome::kCompleted);
  EXPECT_EQ(budget.used_bytes,
            s->data.capacity() + s->have.capacity() * sizeof(uint64_t));
  EXPECT_EQ(r.bytes_copied(), 2000u);
}

TEST(ReassemblyTest, InconsistentAndOutOfRangeFragmentsAreRefused) {
  ReassemblyBudget budget;
  FragmentReassembler r(&budget, {.max_sample_bytes = 1 << 20});
  auto sample = Bytes(1000, 1);
  PartialSample* s = nullptr;
  ASSERT_EQ(r.Add(Frag(1, sample, 100, 1, 1), kT0, &s),
            ReassemblyOutcome::kAccepted);
  FragmentInput other_size = Frag(1, sample, 100, 2, 1);
  other_size.sample_size = 1001;
  EXPECT_EQ(r.Add(other_size, kT0, &s), ReassemblyOutcome::kInconsistent);
  FragmentInput other_frag = Frag(1, sample, 100, 2, 1);
  other_frag.fragment_size = 50;
  EXPECT_EQ(r.Add(other_frag, kT0, &s), ReassemblyOutcome::kInconsistent);
  FragmentInput past_end = Frag(1, sample, 100, 10, 1);
  past_end.fragment_start = 11;
  EXPECT_EQ(r.Add(past_end, kT0, &s), ReassemblyOutcome::kBadRange);
  FragmentInput zero = Frag(1, sample, 100, 1, 1);
  zero.fragment_start = 0;
  EXPECT_EQ(r.Add(zero, kT0, &s), ReassemblyOutcome::kBadRange);
  FragmentInput short_bytes = Frag(1, sample, 100, 2, 1);
  short_bytes.bytes = short_bytes.bytes.first(99);
  EXPECT_EQ(r.Add(short_bytes, kT0, &s), ReassemblyOutcome::kBadRange);
  FragmentInput huge = Frag(2, sample, 100, 1, 1);
  huge.sample_size = (1 << 20) + 1;
  EXPECT_EQ(r.Add(huge, kT0, &s), ReassemblyOutcome::kTooLarge);
  // Claims 3 fragments but carries 2: only the two wholly present count.
  FragmentInput claims = Frag(1, sample, 100, 2, 2);
  claims.fragment_count = 3;
  EXPECT_EQ(r.Add(claims, kT0, &s), ReassemblyOutcome::kAccepted);
  EXPECT_EQ(s->received_fragments, 3u);
  EXPECT_FALSE(s->Has(4));
}

TEST(ReassemblyTest, SlotPolicyKeepsLowestForReliableNewestForBestEffort) {
  ReassemblyBudget budget;
  auto sample = Bytes(300, 0);
  PartialSample* s = nullptr;
  FragmentReassembler reliable(&budget,
                               {.max_samples = 2, .keep_lowest = true});
  EXPECT_EQ(reliable.Add(Frag(5, sample, 100, 1, 1), kT0, &s),
            ReassemblyOutcome::kAccepted);
  EXPECT_EQ(reliable.Add(Frag(6, sample, 100, 1, 1), kT0, &s),
            ReassemblyOutcome::kAccepted);
  EXPECT_EQ(reliable.Add(Frag(7, sample, 100, 1, 1), kT0, &s),
            ReassemblyOutcome::kRefused);
  EXPECT_EQ(reliable.Add(Frag(4, sample, 100, 1, 1), kT0, &s),
            ReassemblyOutcome::kAccepted);  // evicts 6
  EXPECT_EQ(reliable.Find(6), nullptr);
  EXPECT_EQ(reliable.evictions(), 1u);
  FragmentReassembler best(&budget, {.max_samples = 2, .keep_lowest = false});
  best.Add(Frag(5, sample, 100, 1, 1), kT0, &s);
  best.Add(Frag(6, sample, 100, 1, 1), kT0, &s);
  EXPECT_EQ(best.Add(Frag(4, sample, 100, 1, 1), kT0, &s),
            ReassemblyOutcome::kRefused);
  EXPECT_EQ(best.Add(Frag(7, sample, 100, 1, 1), kT0, &s),
            ReassemblyOutcome::kAccepted);  // evicts 5
  EXPECT_EQ(best.Find(5), nullptr);
  EXPECT_EQ(best.DropBelow(7), 1u);
  EXPECT_EQ(best.active(), 1u);
}

TEST(ReassemblyTest, SharedBudgetBoundsAllWriters) {
  ReassemblyBudget budget{.limit_bytes = 5000};
  auto a = std::make_unique<FragmentReassembler>(&budget,
                                                 FragmentReassembler::Limits{});
  FragmentReassembler b(&budget, {});
  auto big = Bytes(3000, 0);
  PartialSample* s = nullptr;
  EXPECT_EQ(a->Add(Frag(1, big, 1000, 1, 1), kT0, &s),
            ReassemblyOutcome::kAccepted);
  EXPECT_EQ(b.Add(Frag(1, big, 1000, 1, 1), kT0, &s),
            ReassemblyOutcome::kNoMemory);
  EXPECT_LE(budget.used_bytes, budget.limit_bytes);
  a->Release(a->Find(1));
  // a keeps its capacity for reuse, so b still cannot have it...
  EXPECT_EQ(b.Add(Frag(1, big, 1000, 1, 1), kT0, &s),
            ReassemblyOutcome::kNoMemory);
  // ...until a goes away.
  a.reset();
  EXPECT_EQ(b.Add(Frag(1, big, 1000, 1, 1), kT0, &s),
            ReassemblyOutcome::kAccepted);
  EXPECT_LE(budget.used_bytes, budget.limit_bytes);
}

// Regression (found by reassembly_fuzzer): the fragment bitmap counts in the
// budget, but only the data was checked, so a sample whose data just fitted
// pushed used_bytes over the limit with its bitmap.
TEST(ReassemblyTest, BudgetCountsTheFragmentBitmap) {
  ReassemblyBudget budget{.limit_bytes = 1000};
  FragmentReassembler r(&budget, {});
  auto sample = Bytes(1000, 3);  // 1,000 one-byte fragments: 128 B of bitmap
  PartialSample* s = nullptr;
  EXPECT_EQ(r.Add(Frag(1, sample, 1, 1, 1), kT0, &s),
            ReassemblyOutcome::kNoMemory);
  EXPECT_LE(budget.used_bytes, budget.limit_bytes);
}

TEST(ReassemblyTest, DestructionReturnsTheBudget) {
  ReassemblyBudget budget{.limit_bytes = 1 << 20};
  {
    FragmentReassembler a(&budget, {});
    auto big = Bytes(30000, 0);
    PartialSample* s = nullptr;
    a.Add(Frag(1, big, 1000, 1, 1), kT0, &s);
    EXPECT_GE(budget.used_bytes, 30000u);
  }
  EXPECT_EQ(budget.used_bytes, 0u);
}

TEST(ReassemblyTest, PartialSamplesTimeOutAfterLastProgress) {
  ReassemblyBudget budget;
  FragmentReassembler r(&budget, {.timeout_ns = 1'000'000});
  auto sample = Bytes(300, 0);
  PartialSample* s = nullptr;
  r.Add(Frag(1, sample, 100, 1, 1), kT0, &s);
  r.Add(Frag(1, sample, 100, 2, 1), kT0 + std::chrono::microseconds(500), &s);
  EXPECT_EQ(r.NextExpiry(), kT0 + std::chrono::microseconds(1500));
  EXPECT_EQ(r.Expire(kT0 + std::chrono::microseconds(1499)), 0u);
  EXPECT_EQ(r.Expire(kT0 + std::chrono::microseconds(1500)), 1u);
  EXPECT_TRUE(r.NextExpiry().is_never());
}

TEST(ReassemblyTest, MissingWindowsFollowTheGaps) {
  ReassemblyBudget budget;
  FragmentReassembler r(&budget, {});
  auto sample = Bytes(600 * 10, 0);  // 600 fragments of 10
  PartialSample* s = nullptr;
  for (uint32_t fn = 1; fn <= 600; ++fn) {
    if (fn == 3 || fn == 300 || fn == 301 || fn == 600) continue;
    r.Add(Frag(1, sample, 10, fn, 1), kT0, &s);
  }
  FragmentNumberSet m;
  ASSERT_TRUE(r.Missing(*s, 1, 600, &m));
  EXPECT_EQ(m.base, 3u);
  EXPECT_TRUE(m.Contains(3));
  EXPECT_FALSE(m.Contains(4));
  EXPECT_FALSE(m.Contains(300));  // beyond 3 + 255
  ASSERT_TRUE(r.Missing(*s, m.base + 256, 600, &m));
  EXPECT_EQ(m.base, 300u);
  EXPECT_TRUE(m.Contains(301));
  EXPECT_FALSE(m.Contains(600));  // 256 bits from 300 end at 555
  EXPECT_EQ(m.num_bits, 2u);
  ASSERT_TRUE(r.Missing(*s, m.base + 256, 600, &m));
  EXPECT_EQ(m.base, 600u);
  EXPECT_FALSE(r.Missing(*s, 601, 600, &m));
}

}  // namespace
}  // namespace ringlab::rtps::internal
