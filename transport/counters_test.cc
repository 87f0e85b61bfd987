// LoopCounters arithmetic: Delta() and operator+= cover every counter (both
// are generated from one field list in counters.cc).
#include "transport/counters.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace ringlab::transport {
namespace {

// Sets every counter to base + its position, through ForEach's order.
LoopCounters Numbered(uint64_t base) {
  LoopCounters c;
  // ForEach reads; to write each field, address it by its offset: the
  // struct holds only uint64_t counters (static_assert below).
  auto* words = reinterpret_cast<uint64_t*>(&c);
  size_t i = 0;
  c.ForEach([&](const char*, uint64_t) {
    words[i] = base + i;
    ++i;
  });
  return c;
}

static_assert(sizeof(LoopCounters) % sizeof(uint64_t) == 0);

TEST(LoopCountersTest, SumAndDeltaCoverEveryCounter) {
  const LoopCounters a = Numbered(1);
  const LoopCounters b = Numbered(1000);
  LoopCounters sum = a;
  sum += b;
  size_t i = 0, fields = 0;
  sum.ForEach([&](const char* name, uint64_t value) {
    EXPECT_EQ(value, (1 + i) + (1000 + i)) << name;
    ++i;
    ++fields;
  });
  EXPECT_EQ(fields * sizeof(uint64_t), sizeof(LoopCounters));
  i = 0;
  sum.Delta(a).ForEach([&](const char* name, uint64_t value) {
    EXPECT_EQ(value, 1000 + i) << name;
    ++i;
  });
  EXPECT_EQ(sum.kernel_entries(), a.kernel_entries() + b.kernel_entries());
}

}  // namespace
}  // namespace ringlab::transport
