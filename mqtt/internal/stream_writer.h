// StreamWriter: the one write path of the MQTT drivers. Control packets and
// headers are packed into leased transport buffers (several small packets
// per lease, a large one across leases); a PUBLISH whose payload goes to
// several subscribers is sent as a per-subscriber header (fixed header,
// topic or alias, packet id, properties: these differ per subscriber) in
// front of pool buffers shared by every subscriber's send, so the payload
// is copied once per message, not once per subscriber.
//
//   SharedPayloadCache shared(64);
//   StreamWriter w(loop);
//   w.Begin(socket, &backlog);
//   std::span<std::byte> space = w.Space(64);   // write a header in place
//   w.Commit(header_bytes);
//   w.Append(tail);                              // copied after it, or:
//   w.AppendShared(header_bytes, properties, shared.Get(*loop, msg, payload));
//   int rc = w.End();                            // queues the last lease
//
// Payloads longer than one pool buffer are shared as several buffers (one
// send each, the header in front of the first); nothing falls back to a
// copy except when the pool has no buffer for the share, and then the copy
// fails the same way.
//
// Backpressure: with a SendBacklog, a send the Loop refuses with -EAGAIN
// (send budget or send descriptors spent) is kept, in order with everything
// after it, instead of being lost; blocked() tells the caller to stop
// writing that stream, and Retry() sends the backlog once the Loop calls
// OnWritable(). Without a backlog a refusal is an error, as any other.
//
// A StreamSink given to Begin() takes each full lease instead of the Loop
// (TLS encrypts it and queues the ciphertext itself, mqtt/tls_stream.h).
//
// Errors: Append/Space fail (false / empty span) when the Loop's pool is
// exhausted; the caller then stops writing to this stream. A Send() error
// other than a kept refusal is returned by End(): the stream has a hole and
// must be closed. Ownership: borrows the Loop. Threading: the Loop's thread.
#ifndef RINGLAB_MQTT_INTERNAL_STREAM_WRITER_H_
#define RINGLAB_MQTT_INTERNAL_STREAM_WRITER_H_

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <vector>

#include "mqtt/message.h"
#include "transport/loop.h"

namespace ringlab::mqtt::internal {

// Sends the Loop refused with -EAGAIN, oldest first, waiting for
// OnWritable(). Empty (and allocation-free) unless the Loop ran short.
struct SendBacklog {
  struct Item {
    transport::SharedBuffer payload;
    uint32_t header_offset = 0;  // into `headers`
    uint32_t header_bytes = 0;
  };
  std::vector<Item> items;
  std::vector<std::byte> headers;
  bool empty() const { return items.empty(); }
  void Clear() {
    items.clear();
    headers.clear();
  }
};

// Payloads made shareable, per message: the first subscriber's send copies
// the payload into pool buffers, every later one reuses them. Entries are
// recycled round robin (an evicted message that is sent again is shared
// again); a message is recognised by Message::driver_handle, which the pool
// resets when the message is recycled, so a stale entry never matches.
// Each entry pins its pool buffers until evicted or Clear().
class SharedPayloadCache {
 public:
  explicit SharedPayloadCache(size_t capacity = 64) : entries_(capacity) {}

  // The pool buffers holding `payload` (part of `message`), in order; empty
  // when the pool has no buffer (nothing is kept then).
  std::span<const transport::SharedBuffer> Get(
      transport::Loop& loop, const Message& message,
      std::span<const std::byte> payload) {
    const uint64_t h = message.driver_handle;
    if (h != 0) {
      const size_t index = size_t(h & 0xFFFF) - 1;
      if (index < entries_.size() && entries_[index].key == &message &&
          entries_[index].generation == (h >> 16)) {
        ++hits_;
        return entries_[index].chunks;
      }
    }
    const size_t index = next_;
    next_ = (next_ + 1) % entries_.size();
    Entry& e = entries_[index];
    e.chunks.clear();  // drops the evicted message's references
    e.key = nullptr;
    const size_t chunk = loop.buffers().buffer_size();
    while (!payload.empty()) {
      transport::BufferLease lease = loop.AcquireBuffer();
      if (!lease) {
        e.chunks.clear();
        return {};
      }
      const size_t n = std::min(payload.size(), chunk);
      std::memcpy(lease.data(), payload.data(), n);
      lease.set_size(n);
      e.chunks.push_back(loop.Share(std::move(lease)));
      if (!e.chunks.back()) {
        e.chunks.clear();
        return {};
      }
      payload = payload.subspan(n);
      ++buffers_shared_;
    }
    e.key = &message;
    e.generation = ++generation_ & ((uint64_t(1) << 48) - 1);
    message.driver_handle = (e.generation << 16) | uint64_t(index + 1);
    ++messages_shared_;
    return e.chunks;
  }

  // Lets every pinned buffer go (when the pool runs low).
  void Clear() {
    for (Entry& e : entries_) {
      e.chunks.clear();
      e.key = nullptr;
    }
  }

  uint64_t messages_shared() const { return messages_shared_; }
  uint64_t buffers_shared() const { return buffers_shared_; }
  uint64_t hits() const { return hits_; }

 private:
  struct Entry {
    const Message* key = nullptr;
    uint64_t generation = 0;
    std::vector<transport::SharedBuffer> chunks;  // capacity is kept
  };
  std::vector<Entry> entries_;
  size_t next_ = 0;
  uint64_t generation_ = 0;
  uint64_t messages_shared_ = 0;
  uint64_t buffers_shared_ = 0;
  uint64_t hits_ = 0;
};

// Where a StreamWriter's leases go instead of Loop::Send (a byte filter such
// as TLS). Returns 0 or a negative errno like Loop::Send; the lease is
// consumed either way.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual int SendLease(transport::SocketId socket,
                        transport::BufferLease lease) = 0;
};

class StreamWriter {
 public:
  // End() result: refused sends wait in the backlog.
  static constexpr int kBlocked = 1;

  explicit StreamWriter(transport::Loop* loop) : loop_(loop) {}

  // `backlog`: where refused sends wait (see above). `sink`: a byte
  // filter (TLS) that takes every lease instead of the Loop; with a sink,
  // sends are not kept in the backlog and AppendShared must not be used
  // (the sink must see every byte: copy with Append instead).
  void Begin(transport::SocketId socket, SendBacklog* backlog = nullptr,
             StreamSink* sink = nullptr) {
    socket_ = socket;
    sink_ = sink;
    backlog_ = sink == nullptr ? backlog : nullptr;
    blocked_ = backlog_ != nullptr && !backlog_->empty();
    error_ = 0;
    leases_ = 0;
    shared_sends_ = 0;
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

  // The last `header_bytes` committed (0 if the header went out earlier)
  // and `prefix` (copied) become the header of one send whose payload is
  // chunks[0], without a copy; the other chunks follow as sends of their
  // own. A header and prefix too long for one send header are copied into
  // the lease instead. False if the pool ran out (as Append).
  bool AppendShared(size_t header_bytes, std::span<const std::byte> prefix,
                    std::span<const transport::SharedBuffer> chunks) {
    header_bytes = std::min(header_bytes, used_);
    std::byte header[transport::Loop::kMaxSendHeaderBytes];
    size_t n = 0;
    if (header_bytes + prefix.size() <= sizeof(header)) {
      if (header_bytes > 0) {
        std::memcpy(header, lease_.data() + used_ - header_bytes, header_bytes);
        used_ -= header_bytes;
      }
      if (!prefix.empty()) {
        std::memcpy(header + header_bytes, prefix.data(), prefix.size());
      }
      n = header_bytes + prefix.size();
    } else if (!Append(prefix)) {
      return false;
    }
    // What was written before this packet goes first.
    if (lease_ && used_ > 0) Queue();
    for (size_t i = 0; i < chunks.size(); ++i) {
      Submit(chunks[i], std::span<const std::byte>(header, i == 0 ? n : 0));
      ++shared_sends_;
    }
    return true;
  }

  // Queues the partly filled lease. Returns 0, kBlocked (refused sends
  // wait in the backlog: stop writing this stream until OnWritable), or
  // the first Send() error.
  int End() {
    if (lease_ && used_ > 0) Queue();
    lease_.Release();
    used_ = 0;
    if (error_ != 0) return error_;
    return blocked_ ? kBlocked : 0;
  }
  // A sink (TLS) takes the leases: shared sends would bypass it.
  bool has_sink() const { return sink_ != nullptr; }
  // A send was refused and kept: write nothing more to this stream now.
  bool blocked() const { return blocked_; }
  // Leases and shared-payload sends queued since Begin().
  size_t leases() const { return leases_; }
  // Bytes written into the current lease and not yet queued on the stream.
  size_t pending_bytes() const { return used_; }
  size_t shared_sends() const { return shared_sends_; }

  // Sends what waits in `backlog`, in order. 0 when it is empty
  // afterwards, kBlocked if the Loop refused again, or a Send() error.
  static int Retry(transport::Loop* loop, transport::SocketId socket,
                   SendBacklog* backlog) {
    size_t done = 0;
    int rc = 0;
    for (; done < backlog->items.size(); ++done) {
      const SendBacklog::Item& item = backlog->items[done];
      rc = loop->Send(socket, item.payload,
                      std::span<const std::byte>(backlog->headers)
                          .subspan(item.header_offset, item.header_bytes));
      if (rc != 0) break;
    }
    if (rc == 0) {
      backlog->Clear();
      return 0;
    }
    backlog->items.erase(backlog->items.begin(),
                         backlog->items.begin() + ptrdiff_t(done));
    return rc == -EAGAIN ? kBlocked : rc;
  }

 private:
  void Queue() {
    lease_.set_size(used_);
    if (sink_ != nullptr) {
      used_ = 0;
      ++leases_;
      const int rc = sink_->SendLease(socket_, std::move(lease_));
      if (rc < 0 && error_ == 0) error_ = rc;
      return;
    }
    used_ = 0;
    ++leases_;
    if (backlog_ == nullptr) {
      const int rc = loop_->Send(socket_, std::move(lease_));
      if (rc < 0 && error_ == 0) error_ = rc;
      return;
    }
    // Shared, so a refused send still has its buffer and can wait.
    Submit(loop_->Share(std::move(lease_)), {});
  }

  void Submit(const transport::SharedBuffer& payload,
              std::span<const std::byte> header) {
    if (!blocked_) {
      const int rc = loop_->Send(socket_, payload, header);
      if (rc == 0) return;
      if (rc != -EAGAIN || backlog_ == nullptr) {
        if (error_ == 0) error_ = rc;
        return;
      }
      blocked_ = true;
    }
    SendBacklog::Item& item = backlog_->items.emplace_back();
    item.payload = payload;
    item.header_offset = uint32_t(backlog_->headers.size());
    item.header_bytes = uint32_t(header.size());
    backlog_->headers.insert(backlog_->headers.end(), header.begin(),
                             header.end());
  }

  transport::Loop* loop_;
  transport::SocketId socket_;
  SendBacklog* backlog_ = nullptr;
  StreamSink* sink_ = nullptr;
  transport::BufferLease lease_;
  size_t used_ = 0;
  size_t leases_ = 0;
  size_t shared_sends_ = 0;
  bool blocked_ = false;
  int error_ = 0;
};

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_STREAM_WRITER_H_
