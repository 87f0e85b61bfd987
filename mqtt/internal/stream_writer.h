// StreamWriter: the one write path of the MQTT drivers. It packs packets
// into leased transport buffers (several small packets per lease, a large
// one across leases) and queues each full lease on the stream.
//
//   StreamWriter w(loop);
//   w.Begin(socket);
//   std::span<std::byte> space = w.Space();      // write a header in place
//   w.Commit(header_bytes);
//   w.Append(tail);                              // copied after it
//   int rc = w.End();                            // queues the last lease
//
// Today a shared message tail is copied into each subscriber's lease; when
// the transport's shared send buffer lands, Append() of a MessageRef's tail
// becomes a reference instead of a copy, here and nowhere else.
//
// Errors: Append/Space fail (false / empty span) when the Loop's pool is
// exhausted; the caller then stops writing to this stream. A Send() error
// is returned by End() (and by Append when a full lease is queued).
#ifndef RINGLAB_MQTT_INTERNAL_STREAM_WRITER_H_
#define RINGLAB_MQTT_INTERNAL_STREAM_WRITER_H_

#include <cstring>
#include <span>

#include "transport/loop.h"

namespace ringlab::mqtt::internal {

class StreamWriter {
 public:
  explicit StreamWriter(transport::Loop* loop) : loop_(loop) {}

  void Begin(transport::SocketId socket) {
    socket_ = socket;
    error_ = 0;
    leases_ = 0;
  }

  // Writable room in the current lease, at least `min_bytes` of it (the
  // lease is queued and a new one taken when less is left); empty when the
  // pool has no buffer.
  std::span<std::byte> Space(size_t min_bytes = 1) {
    if (lease_ && lease_.capacity() - used_ < min_bytes) Queue();
    if (!lease_) {
      lease_ = loop_->AcquireBuffer();
      used_ = 0;
      if (!lease_) return {};
    }
    return lease_.writable().subspan(used_);
  }
  void Commit(size_t n) { used_ += n; }

  // Copies `bytes`; false if the pool ran out part way (bytes before that
  // point are queued: the stream is then unusable and must be closed).
  bool Append(std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
      std::span<std::byte> room = Space();
      if (room.empty()) return false;
      const size_t n = std::min(room.size(), bytes.size());
      std::memcpy(room.data(), bytes.data(), n);
      used_ += n;
      bytes = bytes.subspan(n);
    }
    return true;
  }

  // Queues the partly filled lease. Returns 0 or the first Send() error.
  int End() {
    if (lease_ && used_ > 0) Queue();
    lease_.Release();
    return error_;
  }
  // Leases queued since Begin().
  size_t leases() const { return leases_; }

 private:
  void Queue() {
    lease_.set_size(used_);
    const int rc = loop_->Send(socket_, std::move(lease_));
    if (rc < 0 && error_ == 0) error_ = rc;
    ++leases_;
    used_ = 0;
  }

  transport::Loop* loop_;
  transport::SocketId socket_;
  transport::BufferLease lease_;
  size_t used_ = 0;
  size_t leases_ = 0;
  int error_ = 0;
};

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_STREAM_WRITER_H_
