#include "transport/stream_assembler.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "transport/buffer_pool.h"

namespace ringlab::transport {
namespace {

std::unique_ptr<BufferPool> MakePool() {
  absl::StatusOr<std::unique_ptr<BufferPool>> pool = BufferPool::Create(64, 32);
  return pool.ok() ? *std::move(pool) : nullptr;
}

BufferLease Lease(BufferPool& pool, const std::string& text) {
  BufferLease lease = pool.Acquire();
  std::memcpy(lease.data(), text.data(), text.size());
  lease.set_size(text.size());
  return lease;
}

std::string AsString(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A message split over several leases is read once, in order; the leases
// go back to the pool as they are consumed.
TEST(StreamAssemblerTest, ReadsAcrossLeases) {
  std::unique_ptr<BufferPool> pool = MakePool();
  ASSERT_NE(pool, nullptr);
  StreamAssembler in(8);
  ASSERT_TRUE(in.Append(Lease(*pool, "HDR:he")));
  ASSERT_TRUE(in.Append(Lease(*pool, "llo, wo")));
  ASSERT_TRUE(in.Append(Lease(*pool, "rld|next")));
  EXPECT_EQ(in.size(), 21u);
  EXPECT_EQ(in.leases(), 3u);
  EXPECT_EQ(pool->free_count(), 29u);
  std::byte header[4];
  ASSERT_EQ(in.Peek(0, header), 4u);
  EXPECT_EQ(AsString(header), "HDR:");
  std::byte spanning[6];
  ASSERT_EQ(in.Peek(4, spanning), 6u) << "a peek across two leases";
  EXPECT_EQ(AsString(spanning), "hello,");
  EXPECT_TRUE(in.Contiguous(7).empty()) << "7 bytes span two leases";
  EXPECT_EQ(AsString(in.Contiguous(6)), "HDR:he") << "these lie in one";
  in.Consume(4);
  std::byte message[12];
  ASSERT_EQ(in.Read(message), 12u);
  EXPECT_EQ(AsString(message), "hello, world");
  EXPECT_EQ(pool->free_count(), 31u) << "two emptied leases went back";
  EXPECT_EQ(AsString(in.Contiguous(5)), "|next");
  in.Clear();
  EXPECT_EQ(in.size(), 0u);
  EXPECT_EQ(pool->free_count(), 32u);
}

TEST(StreamAssemblerTest, BoundedAndSafeAtTheEdges) {
  std::unique_ptr<BufferPool> pool = MakePool();
  ASSERT_NE(pool, nullptr);
  StreamAssembler in(2);
  EXPECT_TRUE(in.Append(BufferLease())) << "an empty lease is ignored";
  ASSERT_TRUE(in.Append(Lease(*pool, "ab")));
  ASSERT_TRUE(in.Append(Lease(*pool, "cd")));
  EXPECT_FALSE(in.Append(Lease(*pool, "ef"))) << "over max_leases";
  EXPECT_EQ(pool->free_count(), 30u) << "the refused lease was released";
  std::byte big[10];
  EXPECT_EQ(in.Peek(1, big), 3u);
  EXPECT_EQ(in.Peek(9, big), 0u);
  EXPECT_TRUE(in.Contiguous(5).empty());
  in.Consume(100);  // more than held
  EXPECT_EQ(in.size(), 0u);
  EXPECT_EQ(in.Read(big), 0u);
  // The ring of slots wraps around.
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(in.Append(Lease(*pool, "xy")));
    in.Consume(2);
  }
  EXPECT_EQ(pool->free_count(), 32u);
}

}  // namespace
}  // namespace ringlab::transport
