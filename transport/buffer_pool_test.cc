#include "transport/buffer_pool.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace ringlab::transport {
namespace {

std::unique_ptr<BufferPool> MakePool(size_t size, uint32_t count) {
  absl::StatusOr<std::unique_ptr<BufferPool>> pool =
      BufferPool::Create(size, count);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return pool.ok() ? std::move(*pool) : nullptr;
}

class RecordingRecycler : public BufferRecycler {
 public:
  void Recycle(uint32_t buffer_index) override {
    recycled.push_back(buffer_index);
  }
  std::vector<uint32_t> recycled;
};

TEST(BufferPoolTest, CreateRejectsEmptyPools) {
  EXPECT_EQ(BufferPool::Create(0, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BufferPool::Create(64, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BufferPool::Create(64, BufferPool::kNoBuffer).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// buffer_size * buffer_count must not wrap: 2^63 + 64 bytes times 2 is
// 128 (mod 2^64), which mmap happily provides, leaving buffer 1 outside the
// region.
TEST(BufferPoolTest, CreateRejectsSizeOverflow) {
  const size_t huge = (size_t{1} << 63) + 64;
  absl::StatusOr<std::unique_ptr<BufferPool>> pool =
      BufferPool::Create(huge, 2);
  ASSERT_FALSE(pool.ok()) << "region_bytes=" << (*pool)->region_bytes()
                          << " for 2 buffers of " << (*pool)->buffer_size();
  EXPECT_NE(pool.status().code(), absl::StatusCode::kOk);
}

TEST(BufferPoolTest, BufferSizeRoundsUpTo64) {
  std::unique_ptr<BufferPool> pool = MakePool(100, 4);
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(pool->buffer_size(), 128u);
  EXPECT_EQ(pool->buffer_count(), 4u);
  // Each buffer also carries BufferPool::kHeadroom bytes for kernel headers.
  EXPECT_EQ(pool->slot_bytes(), 128u + BufferPool::kHeadroom);
  EXPECT_EQ(pool->region_bytes(), 4 * (128u + BufferPool::kHeadroom));
  EXPECT_EQ(pool->free_count(), 4u);
  EXPECT_EQ(pool->exhausted_count(), 0u);
  EXPECT_EQ(MakePool(64, 1)->buffer_size(), 64u);
  EXPECT_EQ(MakePool(1, 1)->buffer_size(), 64u);
  EXPECT_EQ(MakePool(65, 1)->buffer_size(), 128u);
}

TEST(BufferPoolTest, AcquireUntilExhaustedCountsExhaustion) {
  std::unique_ptr<BufferPool> pool = MakePool(256, 4);
  ASSERT_NE(pool, nullptr);
  std::vector<BufferLease> leases;
  std::set<uint32_t> indices;
  for (int i = 0; i < 4; ++i) {
    BufferLease lease = pool->Acquire();
    ASSERT_TRUE(lease.valid());
    EXPECT_TRUE(static_cast<bool>(lease));
    EXPECT_EQ(lease.size(), 0u);
    EXPECT_EQ(lease.capacity(), 256u);
    EXPECT_LT(lease.index(), 4u);
    indices.insert(lease.index());
    leases.push_back(std::move(lease));
  }
  EXPECT_EQ(indices.size(), 4u);
  EXPECT_EQ(pool->free_count(), 0u);
  BufferLease none = pool->Acquire();
  EXPECT_FALSE(none.valid());
  EXPECT_FALSE(static_cast<bool>(none));
  EXPECT_EQ(none.data(), nullptr);
  EXPECT_EQ(none.capacity(), 0u);
  EXPECT_EQ(pool->exhausted_count(), 1u);
  EXPECT_FALSE(pool->Acquire().valid());
  EXPECT_EQ(pool->exhausted_count(), 2u);
  leases.pop_back();
  EXPECT_EQ(pool->free_count(), 1u);
  EXPECT_TRUE(pool->Acquire().valid());
  EXPECT_EQ(pool->exhausted_count(), 2u);
}

TEST(BufferPoolTest, LeaseReturnsBufferOnDestructionAndRelease) {
  std::unique_ptr<BufferPool> pool = MakePool(64, 2);
  ASSERT_NE(pool, nullptr);
  {
    BufferLease a = pool->Acquire();
    BufferLease b = pool->Acquire();
    EXPECT_EQ(pool->free_count(), 0u);
  }
  EXPECT_EQ(pool->free_count(), 2u);
  BufferLease c = pool->Acquire();
  c.set_size(10);
  c.Release();
  EXPECT_FALSE(c.valid());
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(pool->free_count(), 2u);
  c.Release();  // twice is harmless
  EXPECT_EQ(pool->free_count(), 2u);
}

TEST(BufferPoolTest, MoveTransfersOwnership) {
  std::unique_ptr<BufferPool> pool = MakePool(64, 3);
  ASSERT_NE(pool, nullptr);
  BufferLease a = pool->Acquire();
  a.set_size(7);
  const uint32_t index = a.index();
  std::byte* data = a.data();

  BufferLease b(std::move(a));
  EXPECT_FALSE(
      a.valid());  // NOLINT(bugprone-use-after-move): checked on purpose
  EXPECT_EQ(a.size(), 0u);
  EXPECT_TRUE(b.valid());
  EXPECT_EQ(b.index(), index);
  EXPECT_EQ(b.data(), data);
  EXPECT_EQ(b.size(), 7u);
  EXPECT_EQ(pool->free_count(), 2u);

  // Move-assigning onto a lease that holds a buffer returns that buffer.
  BufferLease c = pool->Acquire();
  EXPECT_EQ(pool->free_count(), 1u);
  c = std::move(b);
  EXPECT_EQ(pool->free_count(), 2u);
  EXPECT_EQ(c.index(), index);
  EXPECT_EQ(c.size(), 7u);
  EXPECT_FALSE(b.valid());  // NOLINT(bugprone-use-after-move)

  // Self-move keeps the lease.
  BufferLease& alias = c;
  c = std::move(alias);
  EXPECT_TRUE(c.valid());
  EXPECT_EQ(pool->free_count(), 2u);

  // Moving an empty lease onto a full one just releases the full one.
  c = BufferLease();
  EXPECT_FALSE(c.valid());
  EXPECT_EQ(pool->free_count(), 3u);
}

TEST(BufferPoolTest, SetSizeClampsToCapacity) {
  std::unique_ptr<BufferPool> pool = MakePool(100, 1);
  ASSERT_NE(pool, nullptr);
  BufferLease lease = pool->Acquire();
  lease.set_size(50);
  EXPECT_EQ(lease.size(), 50u);
  EXPECT_EQ(lease.bytes().size(), 50u);
  EXPECT_EQ(lease.bytes().data(), lease.data());
  lease.set_size(1'000'000);
  EXPECT_EQ(lease.size(), 128u);
  EXPECT_EQ(lease.writable().size(), 128u);
  EXPECT_EQ(lease.writable().data(), lease.data());
  lease.set_size(0);
  EXPECT_TRUE(lease.bytes().empty());
  BufferLease empty;
  empty.set_size(10);
  EXPECT_EQ(empty.size(), 0u);
}

TEST(BufferPoolTest, AddressesLieInsideRegionAndDoNotOverlap) {
  constexpr uint32_t kCount = 16;
  std::unique_ptr<BufferPool> pool = MakePool(200, kCount);
  ASSERT_NE(pool, nullptr);
  std::byte* const begin = pool->region();
  std::byte* const end = begin + pool->region_bytes();
  ASSERT_NE(begin, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(begin) % 4096, 0u);  // page aligned
  std::vector<BufferLease> leases;
  for (uint32_t i = 0; i < kCount; ++i) leases.push_back(pool->Acquire());
  std::vector<std::byte*> starts;
  for (const BufferLease& lease : leases) {
    ASSERT_TRUE(lease.valid());
    std::byte* p = lease.data();
    EXPECT_EQ(p, pool->PayloadAddress(lease.index()));
    EXPECT_EQ(lease.capacity(), pool->buffer_size());
    EXPECT_GE(p, begin);
    EXPECT_LE(p + lease.capacity(), end);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    starts.push_back(p);
  }
  std::sort(starts.begin(), starts.end());
  for (size_t i = 1; i < starts.size(); ++i) {
    EXPECT_GE(starts[i] - starts[i - 1],
              static_cast<std::ptrdiff_t>(pool->buffer_size()));
  }
  // Filling every buffer to capacity leaves every other buffer intact.
  for (const BufferLease& lease : leases) {
    std::fill_n(lease.data(), lease.capacity(),
                static_cast<std::byte>(lease.index()));
  }
  for (const BufferLease& lease : leases) {
    const auto expected = static_cast<std::byte>(lease.index());
    EXPECT_TRUE(std::all_of(lease.data(), lease.data() + lease.capacity(),
                            [&](std::byte b) { return b == expected; }))
        << "buffer " << lease.index();
  }
}

TEST(BufferPoolTest, TakeForRingRoutesReleasesToRecycler) {
  std::unique_ptr<BufferPool> pool = MakePool(64, 8);
  ASSERT_NE(pool, nullptr);
  RecordingRecycler recycler;
  std::vector<uint32_t> ring;
  EXPECT_EQ(pool->TakeForRing(&recycler, 3, &ring), 3u);
  ASSERT_EQ(ring.size(), 3u);
  EXPECT_EQ(pool->free_count(), 5u);
  EXPECT_EQ(std::set<uint32_t>(ring.begin(), ring.end()).size(), 3u);

  // The kernel filled a ring buffer; the lease goes back to the ring.
  {
    BufferLease filled = pool->Adopt(ring[1], 40);
    EXPECT_TRUE(filled.valid());
    EXPECT_EQ(filled.size(), 40u);
    EXPECT_EQ(filled.index(), ring[1]);
  }
  EXPECT_EQ(recycler.recycled, std::vector<uint32_t>{ring[1]});
  EXPECT_EQ(pool->free_count(), 5u);

  // Ordinary buffers still go to the free list, and are never ring buffers.
  {
    BufferLease plain = pool->Acquire();
    ASSERT_TRUE(plain.valid());
    EXPECT_EQ(std::count(ring.begin(), ring.end(), plain.index()), 0);
    EXPECT_EQ(pool->free_count(), 4u);
  }
  EXPECT_EQ(pool->free_count(), 5u);
  EXPECT_EQ(recycler.recycled.size(), 1u);

  // Asking for more than is free takes what there is.
  std::vector<uint32_t> more;
  EXPECT_EQ(pool->TakeForRing(&recycler, 100, &more), 5u);
  EXPECT_EQ(pool->free_count(), 0u);
  EXPECT_FALSE(pool->Acquire().valid());
  EXPECT_EQ(pool->exhausted_count(), 1u);
}

TEST(BufferPoolTest, DetachAndReleaseIndex) {
  std::unique_ptr<BufferPool> pool = MakePool(64, 2);
  ASSERT_NE(pool, nullptr);
  BufferLease lease = pool->Acquire();
  lease.set_size(33);
  const uint32_t index = BufferPool::Detach(lease);
  EXPECT_FALSE(lease.valid());
  EXPECT_EQ(pool->slot(index).size, 33u);  // the Loop keeps the length
  EXPECT_EQ(pool->free_count(), 1u);       // still out
  pool->ReleaseIndex(index);
  EXPECT_EQ(pool->free_count(), 2u);
  EXPECT_EQ(pool->slot(index).size, 0u);
}

// One payload, many holders: copies share the buffer, and it returns to the
// pool only when the last copy is gone.
TEST(BufferPoolTest, SharedBufferCountsReferences) {
  std::unique_ptr<BufferPool> pool = MakePool(64, 2);
  ASSERT_NE(pool, nullptr);
  BufferLease lease = pool->Acquire();
  std::memcpy(lease.data(), "shared", 6);
  lease.set_size(6);
  SharedBuffer a = pool->Share(std::move(lease));
  ASSERT_TRUE(a.valid());
  EXPECT_EQ(a.size(), 6u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a.bytes().data()), 6),
            "shared");
  EXPECT_EQ(a.use_count(), 1u);
  EXPECT_EQ(pool->free_count(), 1u);
  {
    SharedBuffer b = a;
    SharedBuffer c;
    c = b;
    EXPECT_EQ(a.use_count(), 3u);
    pool->AddRef(a.index());  // a queued send
    EXPECT_EQ(a.use_count(), 4u);
    pool->Unref(a.index());
  }
  EXPECT_EQ(a.use_count(), 1u);
  SharedBuffer moved = std::move(a);
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): on purpose
  EXPECT_EQ(pool->free_count(), 1u);
  moved.Reset();
  EXPECT_EQ(pool->free_count(), 2u) << "the last reference returns it";
  EXPECT_FALSE(pool->Share(BufferLease()).valid());
}

}  // namespace
}  // namespace ringlab::transport
