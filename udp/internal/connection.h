// Connection: the sans-io state machine of one rudp connection. The Host
// (udp/host.h) creates them, routes datagrams to them by connection id and
// multiplexes their output; applications use the Host, not this class.
//
//   Connection c(options, Connection::Role::kClient, local_cid, peer, now);
//   c.OnLongPacket(header, now);              // RETRY / ACCEPT / REJECT
//   c.OnShortPacket(header, frames, size, now);
//   size_t n = c.PollTransmit(out, now);      // 0: nothing to send now
//   Timestamp t = c.NextDeadline();           // then OnTimeout(t)
//   Event e; while (c.PollEvent(&e)) { ... }
//
// What it implements, and where each rule comes from, is in the comments of
// connection.cc: RFC 9000 (§10 close and idle timeout, §13.2 ACK
// generation, §17.1 packet numbers, §4 flow control), RFC 9002 (§5 RTT, §6
// loss detection and PTO, §7 NewReno and pacing) and Hayashibara et al. for
// liveness.
//
// Memory: every buffer is sized from ConnectionOptions and allocated by the
// constructor (memory_bytes() tells how much); nothing allocates afterwards.
// Threading: none; the owning Host's thread.
#ifndef RINGLAB_UDP_INTERNAL_CONNECTION_H_
#define RINGLAB_UDP_INTERNAL_CONNECTION_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "transport/endpoint.h"
#include "transport/time.h"
#include "udp/internal/congestion.h"
#include "udp/internal/range_set.h"
#include "udp/internal/rings.h"
#include "udp/internal/rtt.h"
#include "udp/phi_accrual.h"
#include "udp/types.h"
#include "udp/wire.h"

namespace ringlab::rudp::internal {

class Connection {
 public:
  enum class Role : uint8_t { kClient, kServer };
  enum class State : uint8_t {
    kHandshake,    // client: INITIAL sent, waiting for RETRY/ACCEPT
    kEstablished,  // data flows
    kClosing,      // Close() called: flushing, then CLOSE
    kDraining,     // CLOSE sent or received: wait 3 PTO (RFC 9000 §10.2)
    kClosed,       // final; the Host frees it once the event was polled
  };

  // Reliable data offsets: every message occupies a span of at least
  // kMinSpanBytes, rounded up to kUnitBytes, so the receiver's per-channel
  // message table needs at most window / kMinSpanBytes entries.
  static constexpr uint64_t kUnitBytes = 64;
  static constexpr uint64_t kMinSpanBytes = 256;
  static constexpr size_t kMaxFragmentsPerPacket = 64;
  static constexpr uint64_t kPacketThreshold = 3;           // RFC 9002 §6.1.1
  static constexpr int kPersistentCongestionThreshold = 3;  // §7.6.1

  // Client: starts the handshake; the first INITIAL goes out on the next
  // PollTransmit().
  Connection(const ConnectionOptions& options, Role role, uint64_t local_cid,
             const Endpoint& peer, Timestamp now);
  // Server: called by the Host once an INITIAL with a valid cookie arrived.
  // `rtt_sample` is the cookie's round trip (RETRY sent -> INITIAL back).
  void AcceptFrom(uint64_t client_cid, const wire::TransportParams& params,
                  std::optional<Duration> rtt_sample, Timestamp now);

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // --- Input ----------------------------------------------------------------
  // A RETRY, ACCEPT or REJECT for this client connection, or a repeated
  // INITIAL for this server connection.
  void OnLongPacket(const wire::LongHeader& header, size_t datagram_bytes,
                    Timestamp now);
  // A short-header packet; `frames` is everything after the header.
  void OnShortPacket(const wire::ShortHeader& header,
                     std::span<const std::byte> frames, size_t datagram_bytes,
                     Timestamp now);

  // --- Output ---------------------------------------------------------------
  // Writes at most one datagram into `out` (at least max_datagram_bytes, or
  // wire::kMinInitialBytes while handshaking); returns its size, 0 when
  // nothing is due now.
  size_t PollTransmit(std::span<std::byte> out, Timestamp now);
  Timestamp NextDeadline() const;
  void OnTimeout(Timestamp now);

  // --- Application
  // ------------------------------------------------------------
  SendResult Send(uint8_t channel, std::span<const std::byte> data,
                  Timestamp now);
  // Graceful close: pending reliable data is delivered first (up to
  // close_linger), then CLOSE. Idempotent.
  void Close(Timestamp now);
  // The next event; false when none. A kMessage view stays valid until the
  // next PollEvent() or ReleaseEvent() call.
  bool PollEvent(Event* event);
  // Gives back the message returned by the last PollEvent (its window space
  // is reused). PollEvent does this itself.
  void ReleaseEvent();
  bool HasEvents() const;

  // --- Observation
  // ------------------------------------------------------------
  State state() const { return state_; }
  Role role() const { return role_; }
  uint64_t local_cid() const { return local_cid_; }
  uint64_t remote_cid() const { return remote_cid_; }
  const Endpoint& peer() const { return peer_; }
  ConnectionStats stats() const;
  // Drops counted before the connection saw the packet (the Host's).
  void CountDrop(DropReason reason) { ++stats_.drops[size_t(reason)]; }
  size_t memory_bytes() const;
  bool closed_event_delivered() const { return closed_event_delivered_; }
  CloseReason close_reason() const { return close_reason_; }
  // Handshake parameters this side announces.
  wire::TransportParams LocalParams() const;
  // Fragment payload size (a multiple of kUnitBytes).
  uint64_t fragment_bytes() const { return fragment_bytes_; }

  static uint64_t SpanOf(uint64_t message_length) {
    const uint64_t rounded =
        (message_length + kUnitBytes - 1) / kUnitBytes * kUnitBytes;
    return rounded < kMinSpanBytes ? kMinSpanBytes : rounded;
  }

 private:
  // --- Sender state
  // -----------------------------------------------------------
  enum : uint8_t { kChunkUnsent = 0, kChunkSent = 1, kChunkAcked = 2 };
  struct Chunk {
    uint64_t data_offset = 0;
    uint64_t message_id = 0;
    uint64_t last_packet = 0;  // newest packet that carried it
    uint32_t message_length = 0;
    uint32_t fragment_offset = 0;
    uint32_t length = 0;
    uint8_t channel = 0;
    uint8_t state = kChunkUnsent;
    bool queued = false;  // in retransmit_
  };
  enum : uint8_t { kPacketInFlight = 0, kPacketAcked = 1, kPacketLost = 2 };
  struct SentPacket {
    uint64_t pn = 0;
    Timestamp time_sent;
    Timestamp lost_time;
    uint64_t ack_floor = 0;  // smallest pn our included ACK reported
    uint64_t first_ref = 0;  // absolute index of its first chunk ref
    uint32_t size = 0;
    uint16_t chunk_count = 0;  // refs in chunk_refs_, in packet order
    uint8_t state = kPacketInFlight;
    bool in_flight = false;  // counts for congestion control
    bool has_ack = false;
    bool has_max_data = false;
    bool app_limited = false;
  };
  struct UnreliableSlot {
    uint64_t sequence = 0;
    uint32_t length = 0;
    uint8_t channel = 0;
  };

  // --- Receiver state
  // ---------------------------------------------------------
  enum : uint8_t {
    kMsgEmpty = 0,
    kMsgPartial = 1,
    kMsgComplete = 2,
    kMsgDelivered = 3
  };
  struct RecvMessage {
    uint64_t start = 0;
    uint32_t length = 0;
    uint32_t received = 0;
    uint8_t state = kMsgEmpty;
  };
  struct RecvChannel {
    ChannelType type = ChannelType::kReliableOrdered;
    uint64_t base = 0;               // lowest undelivered message id
    std::vector<RecvMessage> table;  // indexed by id & mask
    Ring<uint64_t> ready;            // unordered: complete ids
    bool has_unreliable = false;
    uint64_t last_unreliable = 0;
  };

  // Input helpers.
  bool ValidateFrames(std::span<const std::byte> frames, bool* ack_eliciting);
  void HandleFrames(std::span<const std::byte> frames, Timestamp now);
  void OnAckFrame(const wire::Frame& f, Timestamp now);
  void OnNackFrame(const wire::Frame& f, Timestamp now);
  void OnMessageFrame(const wire::Frame& f);
  void OnUnreliableFrame(const wire::Frame& f);
  void OnPeerClose(Timestamp now);
  void RecordReceived(uint64_t pn, bool ack_eliciting, Timestamp now);
  void Establish(const wire::TransportParams& peer, Timestamp now);
  void Confirm(Timestamp now);
  void OnPacketFromPeer(Timestamp now);

  // Recovery (RFC 9002 §6, Appendix A).
  size_t FindSent(uint64_t pn) const;  // index in sent_, or sent_.size()
  void OnPacketAcked(SentPacket& p, Timestamp now);
  void DeclareLost(SentPacket& p, Timestamp now);
  void DetectLostPackets(Timestamp now);
  void OnLossDetectionTimeout(Timestamp now);
  Timestamp LossDetectionDeadline() const;
  Duration ProbeTimeout() const;
  void RetireSentPackets(Timestamp now);
  void RetireChunks();
  void QueueRetransmit(uint64_t chunk_seq);
  Chunk* ChunkAt(uint64_t seq);

  // Output helpers.
  size_t WriteInitial(std::span<std::byte> out, Timestamp now);
  size_t WriteAccept(std::span<std::byte> out);
  size_t WriteShortPacket(std::span<std::byte> out, Timestamp now);
  bool HasNewData() const;
  bool NewDataAllowedByFlowControl() const;
  bool AckDue(Timestamp now) const;
  bool ControlPending() const;
  void MaybeQueueMaxData();
  size_t WriteClosePacket(std::span<std::byte> out, Timestamp now);
  size_t MaxUnreliableBytes() const;
  void EnterDraining(Timestamp now);
  void EnterClosed(CloseReason reason);
  Timestamp IdleDeadline() const;

  // Receive-side delivery.
  void ConsumeSpan(uint64_t start, uint64_t span);
  void AdvanceConsumed();
  RecvMessage& Entry(RecvChannel& ch, uint64_t id) {
    return ch.table[id & (ch.table.size() - 1)];
  }

  ConnectionOptions options_;
  Role role_;
  State state_;
  uint64_t local_cid_;
  uint64_t remote_cid_ = 0;
  Endpoint peer_;
  uint64_t fragment_bytes_;
  uint8_t channel_count_;
  std::array<ChannelType, wire::kMaxChannels> channel_types_{};

  // Peer parameters.
  uint64_t peer_max_data_ = 0;
  Duration peer_max_ack_delay_{0};
  uint32_t peer_max_message_bytes_ = 0;
  Duration idle_timeout_{0};

  // Handshake (client).
  Timestamp handshake_started_;
  Timestamp next_initial_time_;
  Timestamp last_initial_time_;
  uint32_t initials_sent_ = 0;
  uint32_t initials_since_token_ = 0;
  std::array<std::byte, wire::kMaxTokenBytes> token_{};
  size_t token_size_ = 0;
  bool accept_pending_ = false;  // server: send ACCEPT
  // Handshake confirmed: the client at ACCEPT, the server at the client's
  // first short packet. Until then a server sends nothing but ACCEPT and
  // the failure detector does not run.
  bool confirmed_ = false;

  // Packet numbers and ACK state (RFC 9000 §13.2).
  uint64_t next_pn_;
  std::optional<uint64_t> largest_acked_;  // by the peer, of ours
  std::optional<uint64_t> largest_sent_;
  RangeSet<64> received_;
  std::optional<uint64_t> largest_received_;
  Timestamp largest_received_time_;
  uint32_t ack_eliciting_since_ack_ = 0;
  bool ack_pending_ = false;  // something new to acknowledge
  bool ack_now_ = false;
  Timestamp ack_deadline_ = Timestamp::Never();
  std::array<wire::PacketRange, 8> nacks_{};
  size_t nack_count_ = 0;

  // Recovery (RFC 9002).
  RttEstimator rtt_;
  NewReno cc_;
  Pacer pacer_;
  Ring<SentPacket> sent_;
  Ring<uint64_t> chunk_refs_;  // chunk sequence numbers, packet after packet
  uint64_t refs_base_ = 0;     // absolute index of chunk_refs_[0]
  Timestamp loss_time_ = Timestamp::Never();
  Timestamp first_rtt_sample_time_ = Timestamp::Zero();
  Timestamp last_ack_eliciting_sent_ = Timestamp::Never();
  // The newest ack-eliciting packet carried a PING (acknowledged at once).
  bool last_ack_eliciting_immediate_ = false;
  uint32_t ack_eliciting_in_flight_ = 0;
  uint32_t pto_count_ = 0;
  uint32_t probes_pending_ = 0;

  // Sender data.
  ByteRing send_bytes_;
  Ring<Chunk> chunks_;
  uint64_t first_chunk_seq_ = 0;  // sequence number of chunks_[0]
  uint64_t next_unsent_chunk_ = 0;
  Ring<uint64_t> retransmit_;
  uint64_t next_offset_ = 0;  // where the next message's span starts
  std::array<uint64_t, wire::kMaxChannels> next_message_id_{};
  Ring<UnreliableSlot> unreliable_out_;
  std::vector<std::byte> unreliable_out_bytes_;  // slot i at i * datagram
  size_t unreliable_out_head_slot_ = 0;
  bool send_blocked_ = false;
  bool data_blocked_pending_ = false;
  uint64_t data_blocked_sent_at_ = UINT64_MAX;

  // Receiver data (RFC 9000 §4 flow control over the offset space).
  ByteRing recv_bytes_;
  UnitBitmap received_units_;
  UnitBitmap consumed_units_;
  uint64_t consumed_offset_ = 0;  // below: delivered and freed
  uint64_t advertised_max_data_ = 0;
  bool max_data_pending_ = false;
  std::array<RecvChannel, wire::kMaxChannels> recv_channels_;
  Ring<UnreliableSlot> unreliable_in_;
  std::vector<std::byte> unreliable_in_bytes_;
  size_t unreliable_in_head_slot_ = 0;
  // The message handed out by the last PollEvent, released on the next.
  enum class Held : uint8_t { kNone, kReliable, kUnreliable };
  Held held_ = Held::kNone;
  uint8_t held_channel_ = 0;
  uint64_t held_id_ = 0;
  size_t poll_channel_ = 0;  // round-robin start for PollEvent

  // Liveness and close.
  PhiAccrualDetector detector_;
  double last_phi_ = 0;  // at the last timer check, for stats()
  bool suspected_ = false;
  Timestamp last_probe_time_ = Timestamp::Zero();
  bool ping_pending_ = false;
  bool immediate_ping_ack_ = false;  // a PING arrived: ACK at once
  Timestamp last_receive_time_;
  Timestamp idle_reference_;  // RFC 9000 §10.1 restart point
  bool ack_eliciting_sent_since_receive_ = false;
  Timestamp close_started_ = Timestamp::Never();
  bool close_pending_ = false;  // write CLOSE in the next packet
  uint64_t close_code_ = 0;
  bool close_reply_pending_ = false;
  Timestamp last_close_sent_ = Timestamp::Never();
  Timestamp draining_until_ = Timestamp::Never();
  CloseReason close_reason_ = CloseReason::kNone;

  // Events.
  bool connected_event_pending_ = false;
  bool connect_failed_event_pending_ = false;
  bool writable_event_pending_ = false;
  bool suspected_event_pending_ = false;
  bool dead_event_pending_ = false;
  bool closed_event_pending_ = false;
  bool closed_event_delivered_ = false;

  ConnectionStats stats_;
};

}  // namespace ringlab::rudp::internal

#endif  // RINGLAB_UDP_INTERNAL_CONNECTION_H_
