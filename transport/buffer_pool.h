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
  // Returns a detached buffer to its owner (free list or ring).
  void ReleaseIndex(uint32_t index);
  // Per-buffer scratch for in-flight sends: size, offset and queue link.
  struct Slot {
    uint32_t size = 0;         // valid bytes
    uint32_t data_offset = 0;  // where the valid bytes start
    uint32_t offset = 0;       // bytes already sent (stream partial sends)
    uint32_t next = 0;         // intrusive queue link (kNoBuffer terminates)
    uint32_t ring_owned = 0;
    uint32_t in_send = 0;    // held by a send queue (counted in a budget)
    uint64_t tag = 0;        // caller's send tag, echoed in OnSendComplete
    int64_t lent_at_ns = 0;  // ring buffers: when handed to the handler
    Endpoint destination;    // datagram destination (unconnected sends)
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
