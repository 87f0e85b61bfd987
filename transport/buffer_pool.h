// BufferPool and BufferLease: the Loop's fixed set of equal-sized I/O buffers.
//
// One pool per Loop. Its memory is a single mmap'd region, allocated once at
// setup, so the io_uring backends can register it with the kernel (registered
// buffers) and hand part of it to a provided buffer ring. Nothing allocates
// afterwards: acquiring and releasing a buffer are O(1) free-list operations.
//
// A `BufferLease` is the move-only right to one buffer. Dropping it returns the
// buffer to where it came from: the free list, or, for buffers the kernel fills
// through a provided buffer ring, back to that ring.
//
// A `SharedBuffer` is a reference-counted, read-only handle to one buffer, for
// sending one payload to many sockets or endpoints without a copy each
// (Loop::Share() makes one from a lease; each queued send holds a reference;
// the buffer returns when the last handle and the last send are done).
//
//   BufferLease lease = loop.AcquireBuffer();
//   if (!lease) { /* pool exhausted: counted in counters().pool_exhausted */ }
//   size_t n = EncodeInto(lease.writable());    // write in place, no copy
//   lease.set_size(n);
//   loop.Send(socket, std::move(lease));         // ownership moves to the Loop
//
// Thread-safety: a pool belongs to one Loop and is used on its thread only.
// Errors: Create() returns ResourceExhausted when mmap fails. Acquire() on an
// empty pool returns an empty lease; it never blocks and never allocates.
#ifndef RINGLAB_TRANSPORT_BUFFER_POOL_H_
#define RINGLAB_TRANSPORT_BUFFER_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "transport/endpoint.h"

namespace ringlab::transport {

class BufferPool;
class SharedBuffer;

// Receives buffers whose lease ended while they belonged to a kernel-fed ring.
class BufferRecycler {
 public:
  virtual ~BufferRecycler() = default;
  virtual void Recycle(uint32_t buffer_index) = 0;
};

// Move-only ownership of one pool buffer plus the number of valid bytes in it.
class BufferLease {
 public:
  BufferLease() = default;
  BufferLease(BufferLease&& other) noexcept { *this = std::move(other); }
  BufferLease& operator=(BufferLease&& other) noexcept;
  BufferLease(const BufferLease&) = delete;
  BufferLease& operator=(const BufferLease&) = delete;
  ~BufferLease() { Release(); }

  bool valid() const { return pool_ != nullptr; }
  explicit operator bool() const { return valid(); }

  // The valid bytes: [data(), data() + size()). data() may sit at an offset
  // inside the pool buffer (a kernel header precedes received datagrams).
  std::byte* data() const;
  size_t size() const { return size_; }
  void set_size(size_t size);  // clamps to capacity()
  size_t capacity() const;
  std::span<std::byte> writable() const { return {data(), capacity()}; }
  std::span<const std::byte> bytes() const { return {data(), size_}; }
  uint32_t index() const { return index_; }

  // Returns the buffer early; afterwards valid() is false.
  void Release();

 private:
  friend class BufferPool;
  friend class SharedBuffer;
  BufferLease(BufferPool* pool, uint32_t index, size_t size, uint32_t offset)
      : pool_(pool),
        index_(index),
        size_(static_cast<uint32_t>(size)),
        offset_(offset) {}
  // Gives up ownership without returning the buffer (the Loop takes it).
  uint32_t Detach();

  BufferPool* pool_ = nullptr;
  uint32_t index_ = 0;
  uint32_t size_ = 0;
  uint32_t offset_ = 0;
};

// Copyable, read-only, reference-counted view of one pool buffer's valid
// bytes. Copies share the buffer; the last one to go (handles and queued
// sends together) returns it. Loop thread only, like the pool.
class SharedBuffer {
 public:
  SharedBuffer() = default;
  SharedBuffer(const SharedBuffer& other);
  SharedBuffer& operator=(const SharedBuffer& other);
  SharedBuffer(SharedBuffer&& other) noexcept;
  SharedBuffer& operator=(SharedBuffer&& other) noexcept;
  ~SharedBuffer() { Reset(); }

  bool valid() const { return pool_ != nullptr; }
  explicit operator bool() const { return valid(); }
  std::span<const std::byte> bytes() const;
  size_t size() const { return size_; }
  uint32_t index() const { return index_; }
  uint32_t offset() const { return offset_; }
  // References held now: handles plus queued sends.
  uint32_t use_count() const;
  // Drops this handle's reference; afterwards valid() is false.
  void Reset();

 private:
  friend class BufferPool;
  SharedBuffer(BufferPool* pool, uint32_t index, uint32_t offset, uint32_t size)
      : pool_(pool), index_(index), offset_(offset), size_(size) {}

  BufferPool* pool_ = nullptr;
  uint32_t index_ = 0;
  uint32_t offset_ = 0;
  uint32_t size_ = 0;
};

class BufferPool {
 public:
  // Every buffer starts with kHeadroom bytes the kernel may use for its own
  // header (multishot recvmsg writes one before each datagram), so a
  // datagram of buffer_size() bytes fits on every backend.
  static constexpr size_t kHeadroom = 64;
  // Bytes of memory a pool of `count` buffers of `buffer_size` occupies.
  static size_t RegionBytesFor(size_t buffer_size, uint32_t count) {
    return (((buffer_size + 63) & ~size_t{63}) + kHeadroom) * count;
  }

  // `buffer_size` (the payload capacity) is rounded up to a multiple of 64.
  static absl::StatusOr<std::unique_ptr<BufferPool>> Create(
      size_t buffer_size, uint32_t buffer_count);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // An empty lease when no buffer is free (and `exhausted_count()` grows).
  BufferLease Acquire();
  uint32_t free_count() const { return free_top_; }
  uint32_t buffer_count() const { return count_; }
  size_t buffer_size() const { return buffer_size_; }
  uint64_t exhausted_count() const { return exhausted_; }

  // The whole region, for io_uring_register_buffers.
  std::byte* region() const { return region_; }
  size_t region_bytes() const { return region_bytes_; }
  // Start of buffer `index`, headroom included; slot_bytes() long.
  std::byte* BufferAddress(uint32_t index) const {
    return region_ + static_cast<size_t>(index) * slot_bytes_;
  }
  // Where a payload of up to buffer_size() bytes starts.
  std::byte* PayloadAddress(uint32_t index) const {
    return BufferAddress(index) + kHeadroom;
  }
  size_t slot_bytes() const { return slot_bytes_; }

  // --- Used by Loop backends -------------------------------------------------
  // Moves up to `count` free buffers into the care of `recycler` (a provided
  // buffer ring). Their indices are written to `out`. Released leases of those
  // buffers then go to the recycler instead of the free list.
  uint32_t TakeForRing(BufferRecycler* recycler, uint32_t count,
                       std::vector<uint32_t>* out);
  // Wraps a buffer the kernel filled (ring-owned or taken by TakeRaw()).
  BufferLease Adopt(uint32_t index, size_t size, uint32_t offset = 0) {
    return BufferLease(this, index, size, offset);
  }
  // Takes ownership of a lease's buffer without releasing it.
  static uint32_t Detach(BufferLease& lease) { return lease.Detach(); }
  // Turns a lease into a shared buffer holding one reference.
  SharedBuffer Share(BufferLease lease);
  // Reference counting of detached buffers (shared payloads and queued
  // sends): the last Unref returns the buffer to its owner.
  void AddRef(uint32_t index) { ++slots_[index].refs; }
  void Unref(uint32_t index) {
    if (--slots_[index].refs == 0) ReleaseIndex(index);
  }
  // Returns a detached buffer to its owner (free list or ring).
  void ReleaseIndex(uint32_t index);
  // Per-buffer state the Loop keeps while a buffer is out.
  struct Slot {
    uint32_t size = 0;         // valid bytes
    uint32_t data_offset = 0;  // where the valid bytes start
    uint32_t ring_owned = 0;
    uint32_t refs = 0;       // shared/queued references (see AddRef)
    uint32_t send_refs = 0;  // queued sends using it (for the send budget)
    int64_t lent_at_ns = 0;  // ring buffers: when handed to the handler
  };
  static constexpr uint32_t kNoBuffer = 0xffffffffu;
  Slot& slot(uint32_t index) { return slots_[index]; }

 private:
  BufferPool() = default;
  friend class BufferLease;

  std::byte* region_ = nullptr;
  size_t region_bytes_ = 0;
  size_t buffer_size_ = 0;
  size_t slot_bytes_ = 0;  // buffer_size_ + kHeadroom
  uint32_t count_ = 0;
  std::vector<uint32_t> free_;  // stack of free indices, capacity == count_
  uint32_t free_top_ = 0;
  std::vector<Slot> slots_;
  BufferRecycler* recycler_ = nullptr;
  uint64_t exhausted_ = 0;
};

}  // namespace ringlab::transport

#endif  // RINGLAB_TRANSPORT_BUFFER_POOL_H_
