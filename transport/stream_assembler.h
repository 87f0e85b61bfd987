// StreamAssembler: reads a TCP stream across the Loop's receive leases
// without copying them, for messages larger than one pool buffer.
//
// A stream arrives as leases of at most one pool buffer each, so a 64 KiB
// MQTT PUBLISH on a 2 KiB pool comes in about 32 pieces. Copying each piece
// into a growing buffer as it arrives costs an allocation and a copy per
// piece; the assembler instead keeps the leases (moved in, not copied) and
// lets a parser peek at headers that span pieces, take a contiguous view
// when the bytes happen to sit in one lease, and copy a message out once,
// in one Read(), only when it needs the bytes contiguous.
//
//   StreamAssembler in(/*max_leases=*/64);
//   void OnData(SocketId s, BufferLease data) override {
//     if (!in.Append(std::move(data))) { /* over the bound: pause or drop */ }
//     std::byte header[5];
//     while (in.Peek(0, header) == sizeof(header)) {
//       const size_t total = MessageSize(header);  // from the fixed header
//       if (in.size() < total) break;              // wait for the rest
//       std::span<const std::byte> whole = in.Contiguous(total);
//       if (whole.empty()) {                       // spans leases:
//         in.Read(std::span(message_buffer).first(total));  // one copy
//       } else {
//         Handle(whole);                           // no copy at all
//         in.Consume(total);
//       }
//     }
//   }
//
// Memory: the lease slots are allocated once, in the constructor; nothing
// after allocates. Ownership: the assembler owns the leases it holds; on
// the provided-ring presets those are ring buffers, so bound max_leases (the
// Loop counts buffers held longer than LoopOptions::receive_hold_limit).
// Thread-safety: none; the Loop's thread.
#ifndef RINGLAB_TRANSPORT_STREAM_ASSEMBLER_H_
#define RINGLAB_TRANSPORT_STREAM_ASSEMBLER_H_

#include <cstddef>
#include <span>
#include <vector>

#include "transport/buffer_pool.h"

namespace ringlab::transport {

class StreamAssembler {
 public:
  explicit StreamAssembler(size_t max_leases);
  StreamAssembler(const StreamAssembler&) = delete;
  StreamAssembler& operator=(const StreamAssembler&) = delete;

  // Takes `lease` (an empty one is ignored). False, and the lease is
  // released, when max_leases are already held.
  bool Append(BufferLease lease);
  // Bytes held, not yet consumed.
  size_t size() const { return bytes_; }
  size_t leases() const { return count_; }
  // Copies out.size() bytes (or what there is) starting `offset` bytes into
  // what is held, without consuming them. Returns the bytes copied.
  size_t Peek(size_t offset, std::span<std::byte> out) const;
  // The next `n` bytes as one span if they lie in one lease; else empty.
  std::span<const std::byte> Contiguous(size_t n) const;
  // Drops the next `n` bytes (releasing the leases they emptied).
  void Consume(size_t n);
  // Copies the next out.size() bytes (or what there is) into `out` and
  // consumes them; returns how many.
  size_t Read(std::span<std::byte> out);
  // Releases everything.
  void Clear();

 private:
  BufferLease& at(size_t i) { return leases_[(head_ + i) % leases_.size()]; }
  const BufferLease& at(size_t i) const {
    return leases_[(head_ + i) % leases_.size()];
  }

  std::vector<BufferLease> leases_;  // ring of max_leases slots
  size_t head_ = 0;                  // first held lease
  size_t count_ = 0;                 // leases held
  size_t front_offset_ = 0;          // bytes of the first lease consumed
  size_t bytes_ = 0;
};

}  // namespace ringlab::transport

#endif  // RINGLAB_TRANSPORT_STREAM_ASSEMBLER_H_
