#include "transport/stream_assembler.h"

#include <algorithm>
#include <cstring>

namespace ringlab::transport {

StreamAssembler::StreamAssembler(size_t max_leases)
    : leases_(std::max<size_t>(max_leases, 1)) {}

bool StreamAssembler::Append(BufferLease lease) {
  if (!lease.valid() || lease.size() == 0) return true;
  if (count_ == leases_.size()) return false;  // `lease` is released here
  bytes_ += lease.size();
  leases_[(head_ + count_) % leases_.size()] = std::move(lease);
  ++count_;
  return true;
}

size_t StreamAssembler::Peek(size_t offset, std::span<std::byte> out) const {
  size_t copied = 0;
  size_t skip = offset + front_offset_;
  for (size_t i = 0; i < count_ && copied < out.size(); ++i) {
    const std::span<const std::byte> b = at(i).bytes();
    if (skip >= b.size()) {
      skip -= b.size();
      continue;
    }
    const size_t n = std::min(b.size() - skip, out.size() - copied);
    std::memcpy(out.data() + copied, b.data() + skip, n);
    copied += n;
    skip = 0;
  }
  return copied;
}

std::span<const std::byte> StreamAssembler::Contiguous(size_t n) const {
  if (count_ == 0 || n > bytes_) return {};
  const std::span<const std::byte> b = at(0).bytes();
  if (b.size() - front_offset_ < n) return {};
  return b.subspan(front_offset_, n);
}

void StreamAssembler::Consume(size_t n) {
  n = std::min(n, bytes_);
  bytes_ -= n;
  while (n > 0 && count_ > 0) {
    BufferLease& first = at(0);
    const size_t left = first.size() - front_offset_;
    if (n < left) {
      front_offset_ += n;
      return;
    }
    n -= left;
    first.Release();
    head_ = (head_ + 1) % leases_.size();
    --count_;
    front_offset_ = 0;
  }
}

size_t StreamAssembler::Read(std::span<std::byte> out) {
  const size_t n = Peek(0, out);
  Consume(n);
  return n;
}

void StreamAssembler::Clear() { Consume(bytes_); }

}  // namespace ringlab::transport
