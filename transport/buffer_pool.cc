#include "transport/buffer_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringlab::transport {

BufferLease& BufferLease::operator=(BufferLease&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = other.pool_;
    index_ = other.index_;
    size_ = other.size_;
    offset_ = other.offset_;
    other.pool_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

std::byte* BufferLease::data() const {
  return pool_ == nullptr ? nullptr : pool_->BufferAddress(index_) + offset_;
}

size_t BufferLease::capacity() const {
  return pool_ == nullptr ? 0 : pool_->slot_bytes() - offset_;
}

void BufferLease::set_size(size_t size) {
  const size_t cap = capacity();
  size_ = static_cast<uint32_t>(size < cap ? size : cap);
}

void BufferLease::Release() {
  if (pool_ == nullptr) return;
  BufferPool* pool = pool_;
  pool_ = nullptr;
  size_ = 0;
  pool->ReleaseIndex(index_);
}

uint32_t BufferLease::Detach() {
  pool_->slot(index_).size = size_;
  pool_->slot(index_).data_offset = offset_;
  pool_ = nullptr;
  size_ = 0;
  return index_;
}

absl::StatusOr<std::unique_ptr<BufferPool>> BufferPool::Create(
    size_t buffer_size, uint32_t buffer_count) {
  if (buffer_size == 0 || buffer_count == 0) {
    return absl::InvalidArgumentError("buffer pool needs size and count > 0");
  }
  // Bounds keep size * count far from overflow and buffer indices inside the
  // 24 bits that io_uring user_data and the 16-bit buffer ids leave us.
  constexpr size_t kMaxBufferSize = size_t{1} << 30;
  constexpr uint32_t kMaxBufferCount = uint32_t{1} << 24;
  if (buffer_size > kMaxBufferSize || buffer_count > kMaxBufferCount) {
    return absl::InvalidArgumentError(absl::StrCat(
        "buffer pool too large: ", buffer_count, " buffers of ", buffer_size,
        " bytes (limits: 2^24 buffers of at most 1 GiB)"));
  }
  std::unique_ptr<BufferPool> pool(new BufferPool());
  pool->buffer_size_ = (buffer_size + 63) & ~size_t{63};
  pool->slot_bytes_ = pool->buffer_size_ + kHeadroom;
  pool->count_ = buffer_count;
  pool->region_bytes_ = RegionBytesFor(buffer_size, buffer_count);
  // Page-aligned anonymous memory: registration pins whole pages, and
  // MAP_POPULATE keeps first-touch page faults out of the measured hot path.
  void* mem = mmap(nullptr, pool->region_bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mem == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("buffer pool mmap of ", pool->region_bytes_,
                     " bytes failed: ", std::strerror(errno)));
  }
  pool->region_ = static_cast<std::byte*>(mem);
  pool->free_.resize(buffer_count);
  pool->slots_.resize(buffer_count);
  // Hand out low indices first so small workloads touch few cache lines.
  for (uint32_t i = 0; i < buffer_count; ++i) {
    pool->free_[i] = buffer_count - 1 - i;
  }
  pool->free_top_ = buffer_count;
  return pool;
}

BufferPool::~BufferPool() {
  if (region_ != nullptr) munmap(region_, region_bytes_);
}

BufferLease BufferPool::Acquire() {
  if (free_top_ == 0) {
    ++exhausted_;
    return BufferLease();
  }
  const uint32_t index = free_[--free_top_];
  return BufferLease(this, index, 0, static_cast<uint32_t>(kHeadroom));
}

void BufferPool::ReleaseIndex(uint32_t index) {
  Slot& s = slots_[index];
  s.size = 0;
  s.data_offset = 0;
  s.refs = 0;
  s.send_refs = 0;
  if (s.ring_owned != 0 && recycler_ != nullptr) {
    recycler_->Recycle(index);
    return;
  }
  free_[free_top_++] = index;
}

SharedBuffer BufferPool::Share(BufferLease lease) {
  if (!lease.valid()) return SharedBuffer();
  const uint32_t offset = lease.offset_;
  const uint32_t size = static_cast<uint32_t>(lease.size());
  const uint32_t index = lease.Detach();
  slots_[index].refs = 1;
  return SharedBuffer(this, index, offset, size);
}

SharedBuffer::SharedBuffer(const SharedBuffer& other)
    : pool_(other.pool_),
      index_(other.index_),
      offset_(other.offset_),
      size_(other.size_) {
  if (pool_ != nullptr) pool_->AddRef(index_);
}

SharedBuffer& SharedBuffer::operator=(const SharedBuffer& other) {
  if (this != &other) {
    SharedBuffer copy(other);
    *this = std::move(copy);
  }
  return *this;
}

SharedBuffer::SharedBuffer(SharedBuffer&& other) noexcept
    : pool_(other.pool_),
      index_(other.index_),
      offset_(other.offset_),
      size_(other.size_) {
  other.pool_ = nullptr;
  other.size_ = 0;
}

SharedBuffer& SharedBuffer::operator=(SharedBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    pool_ = other.pool_;
    index_ = other.index_;
    offset_ = other.offset_;
    size_ = other.size_;
    other.pool_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

std::span<const std::byte> SharedBuffer::bytes() const {
  if (pool_ == nullptr) return {};
  return {pool_->BufferAddress(index_) + offset_, size_};
}

uint32_t SharedBuffer::use_count() const {
  return pool_ == nullptr ? 0 : pool_->slot(index_).refs;
}

void SharedBuffer::Reset() {
  if (pool_ == nullptr) return;
  BufferPool* pool = pool_;
  pool_ = nullptr;
  size_ = 0;
  pool->Unref(index_);
}

uint32_t BufferPool::TakeForRing(BufferRecycler* recycler, uint32_t count,
                                 std::vector<uint32_t>* out) {
  recycler_ = recycler;
  uint32_t taken = 0;
  while (taken < count && free_top_ > 0) {
    const uint32_t index = free_[--free_top_];
    slots_[index].ring_owned = 1;
    out->push_back(index);
    ++taken;
  }
  return taken;
}

}  // namespace ringlab::transport
