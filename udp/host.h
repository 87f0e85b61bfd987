// Host: the sans-io core of rudp. One Host serves many connections over one
// UDP socket (or one SimNetwork node): it routes datagrams by connection id,
// answers handshakes statelessly, and multiplexes every connection's output
// and timers. It never reads a clock and never touches a socket.
//
//   absl::StatusOr<std::unique_ptr<Host>> host = Host::Create(options);
//   ConnectionHandle c = *(*host)->Connect(server, now);
//   ...
//   (*host)->OnDatagram(bytes, from, now);           // every datagram in
//   while (auto t = (*host)->PollTransmit(buffer, now)) {
//     send(buffer.first(t->size), t->destination);   // every datagram out
//   }
//   if (now >= (*host)->NextDeadline()) (*host)->OnTimeout(now);
//   Event e;
//   while ((*host)->PollEvent(&e)) {
//     if (e.type == EventType::kMessage) use(e.message);  // valid until the
//   }                                                      // next PollEvent
//   (*host)->Send(c, /*channel=*/0, bytes, now);
//
// Handshake (RFC 9000 §8.1 address validation, without the cryptography): a
// client's INITIAL is padded to 1200 bytes; the server answers a first
// INITIAL with a RETRY carrying a cookie (a SipHash MAC over the client's
// address, its connection id and the issue time) and keeps no state. Only an
// INITIAL that echoes a valid, fresh cookie creates a connection, which then
// answers with ACCEPT. A spoofed source therefore never gets more bytes
// than it sent, and a flood of handshakes costs no memory.
//
// Output: PollTransmit() writes one datagram into the caller's buffer
// (at least MinTransmitBytes() long) and says where it goes; call it until it
// returns nullopt after every OnDatagram/OnTimeout/Send/Close.
//
// Errors: setup and control calls return absl::Status (InvalidArgument for
// bad options, ResourceExhausted at max_connections, NotFound for a dead
// handle). Bad input is counted (stats().drops, per reason) and dropped.
//
// Memory: each connection's buffers are allocated when it is created and
// freed after its kClosed event was polled; total memory is bounded by
// max_connections * per-connection memory (memory_bytes()). Steady-state
// traffic allocates nothing.
//
// Threading: none; use a Host from one thread.
#ifndef RINGLAB_UDP_HOST_H_
#define RINGLAB_UDP_HOST_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "transport/endpoint.h"
#include "transport/time.h"
#include "udp/internal/rings.h"
#include "udp/internal/siphash.h"
#include "udp/types.h"

namespace ringlab::rudp {

namespace internal {
class Connection;
}  // namespace internal

class Host {
 public:
  // InvalidArgument names the option that is out of range.
  static absl::StatusOr<std::unique_ptr<Host>> Create(
      const HostOptions& options);
  static absl::Status ValidateOptions(const HostOptions& options);
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  // Starts a handshake with `peer`. kConnected or kConnectFailed follows.
  absl::StatusOr<ConnectionHandle> Connect(const Endpoint& peer, Timestamp now);

  void OnDatagram(std::span<const std::byte> bytes, const Endpoint& from,
                  Timestamp now);

  struct Transmit {
    size_t size = 0;
    Endpoint destination;
  };
  std::optional<Transmit> PollTransmit(std::span<std::byte> out, Timestamp now);
  // The smallest buffer PollTransmit() needs.
  size_t MinTransmitBytes() const;

  // Earliest time OnTimeout() has work; Never() when idle.
  Timestamp NextDeadline() const;
  void OnTimeout(Timestamp now);

  // The next event of any connection; false when there is none. The
  // previous kMessage view becomes invalid.
  bool PollEvent(Event* event);

  SendResult Send(ConnectionHandle connection, uint8_t channel,
                  std::span<const std::byte> data, Timestamp now);
  // Graceful close (see ConnectionOptions::close_linger).
  absl::Status Close(ConnectionHandle connection, Timestamp now);

  // NotFound for a handle that is no longer valid.
  absl::StatusOr<ConnectionStats> Stats(ConnectionHandle connection) const;
  absl::StatusOr<Endpoint> Peer(ConnectionHandle connection) const;
  bool IsOpen(ConnectionHandle connection) const;
  const HostStats& stats() const { return stats_; }
  size_t connection_count() const { return connection_count_; }
  // Memory held by the host and its connections.
  size_t memory_bytes() const;
  const HostOptions& options() const { return options_; }

 private:
  struct Slot {
    std::unique_ptr<internal::Connection> connection;
    uint32_t generation = 1;
    bool in_transmit_queue = false;
    bool in_event_queue = false;
    bool deadline_stale = false;  // in stale_deadlines_
    Timestamp scheduled = Timestamp::Never();
  };
  struct DeadlineEntry {
    Timestamp at;
    uint32_t index;
    uint32_t generation;
  };
  struct StatelessReply {
    Endpoint to;
    wire::PacketType type = wire::PacketType::kRetry;
    uint64_t client_cid = 0;
    wire::RejectReason reason = wire::RejectReason::kServerBusy;
    std::array<std::byte, 16> token{};
  };
  static constexpr size_t kTokenBytes = 16;

  explicit Host(const HostOptions& options);
  internal::Connection* Find(ConnectionHandle handle) const;
  ConnectionHandle HandleOf(uint32_t index) const {
    return {index, slots_[index].generation};
  }
  void Touch(uint32_t index, bool ready_to_send);
  // Recomputes the deadlines of the connections touched since the last call
  // (a connection is touched several times per datagram; its deadline is
  // needed once, when someone asks for the next deadline).
  void RefreshDeadlines() const;
  void Free(uint32_t index);
  uint64_t NewConnectionId();
  uint64_t ServerConnectionId(const Endpoint& client,
                              uint64_t client_cid) const;
  void MakeToken(const Endpoint& client, uint64_t client_cid, Timestamp issued,
                 std::array<std::byte, kTokenBytes>* token) const;
  void HandleInitial(const wire::LongHeader& h, size_t size,
                     const Endpoint& from, Timestamp now);
  void QueueStateless(const StatelessReply& reply);
  void Drop(DropReason reason) { ++stats_.drops[size_t(reason)]; }
  void CompactHeap() const;

  HostOptions options_;
  internal::SipKey cookie_key_;
  internal::SipKey cid_key_;
  uint64_t cid_counter_ = 0;
  mutable std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  size_t connection_count_ = 0;
  absl::flat_hash_map<uint64_t, uint32_t> by_cid_;
  internal::Ring<uint32_t> transmit_queue_;
  internal::Ring<uint32_t> event_queue_;
  internal::Ring<StatelessReply> stateless_;
  // Min-heap of connection deadlines; entries whose slot was rescheduled
  // since are stale and skipped.
  mutable std::vector<DeadlineEntry> heap_;
  mutable std::vector<uint32_t> stale_deadlines_;  // capacity max_connections
  std::vector<uint32_t> due_;                      // scratch for OnTimeout
  std::optional<uint32_t> last_event_index_;
  std::optional<uint32_t> pending_free_;
  HostStats stats_;
};

}  // namespace ringlab::rudp

#endif  // RINGLAB_UDP_HOST_H_
