// rudp's public value types: options, events, statistics and drop reasons.
//
// rudp is a reliable-UDP protocol: connections with a stateless-cookie
// handshake, QUIC-style packet numbers and ACK ranges, RFC 9002 loss
// recovery and NewReno, channels (reliable-ordered, reliable-unordered,
// unreliable-sequenced), messages of up to 1 MiB, flow control and a
// phi-accrual failure detector. The sans-io core is `rudp::Host`
// (udp/host.h); `rudp::LoopEndpoint` (udp/loop_endpoint.h) runs one on a
// transport Loop.
//
//   HostOptions options;
//   options.connection.channels = {ChannelType::kReliableOrdered};
//   options.connection.max_ack_delay = std::chrono::milliseconds(2);
//
// Every type here is a plain value; copying one never touches a connection.
#ifndef RINGLAB_UDP_TYPES_H_
#define RINGLAB_UDP_TYPES_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <span>
#include <string_view>
#include <vector>

#include "transport/endpoint.h"
#include "transport/time.h"
#include "udp/phi_accrual.h"
#include "udp/wire.h"

namespace ringlab::rudp {

enum class ChannelType : uint8_t {
  // Every message arrives once, in the order it was sent on the channel.
  kReliableOrdered = 0,
  // Every message arrives once, as soon as it is complete.
  kReliableUnordered = 1,
  // Messages may be lost, are never retransmitted, and a message older than
  // one already delivered on the channel is dropped. One datagram at most.
  kUnreliableSequenced = 2,
};
std::string_view ChannelTypeName(ChannelType type);

// The failure detector defaults. min_std_dev 0 means "three heartbeat
// intervals", which the connection fills in; with the default 100 ms
// heartbeat and threshold 8 a silent peer is declared dead about 1.8 s after
// its last packet and probed from about 0.9 s (probe_phi 3). The sweep in
// udp/EXPERIMENTS.md shows why: a floor of h/4 mistakes bursts of lost
// heartbeats for death hundreds of times an hour at 10% burst loss, a floor
// of 3h had no false suspicion in 12 hours at threshold >= 6.
inline PhiAccrualOptions DefaultFailureDetector() {
  PhiAccrualOptions o;
  o.threshold = 8.0;
  o.window_size = 100;
  o.min_std_dev = Duration::zero();  // 3 * heartbeat_interval
  o.acceptable_pause = Duration::zero();
  o.first_heartbeat_estimate = std::chrono::milliseconds(100);
  return o;
}

// Channel 0 reliable-ordered, 1 reliable-unordered, 2 unreliable-sequenced.
inline std::vector<ChannelType> DefaultChannels() {
  static constexpr ChannelType kChannels[] = {
      ChannelType::kReliableOrdered, ChannelType::kReliableUnordered,
      ChannelType::kUnreliableSequenced};
  return std::vector<ChannelType>(std::begin(kChannels), std::end(kChannels));
}

struct ConnectionOptions {
  // At most wire::kMaxChannels; both ends must configure the same list
  // (the handshake rejects a mismatch).
  std::vector<ChannelType> channels = DefaultChannels();
  // UDP payload size of every packet we send (at least 1200, RFC 9000
  // §14; at most 65000).
  uint32_t max_datagram_bytes = 1400;
  // Largest reliable message; larger ones are refused by Send().
  uint32_t max_message_bytes = 1 << 20;
  // Receive window (flow control, RFC 9000 §4.1): reliable data the peer may
  // send beyond what the application has taken. Rounded up to a power of
  // two; must exceed max_message_bytes.
  uint64_t receive_window_bytes = 2 << 20;
  // Reliable data kept until acknowledged; Send() returns kWouldBlock when
  // it is full. Rounded up to a power of two; >= max_message_bytes.
  uint64_t send_buffer_bytes = 2 << 20;
  // Reliable fragments kept until acknowledged (one per small message).
  uint32_t max_send_fragments = 4096;
  // Packets tracked in flight (sent, not yet acknowledged or lost).
  uint32_t max_packets_in_flight = 4096;
  // Unreliable messages queued for sending and queued for the application.
  uint32_t unreliable_queue_messages = 64;
  // Pad every packet that carries a full-size fragment to
  // max_datagram_bytes (PADDING frames), so a bulk train is one size and a
  // driver with UDP GSO sends up to 16 of them per system call (the last of
  // a message is shorter and ends the train). LoopEndpoint sets it with
  // segmentation_offload. Costs at most ~70 bytes per full packet.
  bool pad_full_packets = false;

  // RFC 9000 §13.2: acknowledge every `ack_eliciting_threshold`-th
  // ack-eliciting packet, after at most max_ack_delay, and at once when
  // packets arrive out of order.
  Duration max_ack_delay = std::chrono::milliseconds(5);
  uint32_t ack_eliciting_threshold = 2;
  // Send a NACK frame listing the missing packet numbers the moment a gap
  // appears; the sender then treats them as lost at once instead of waiting
  // for the RFC 9002 packet or time threshold. Off by default: measured on
  // SimNetwork (udp/EXPERIMENTS.md) it gains nothing over the immediate ACK
  // that a gap already triggers, and under reordering it triples the
  // retransmissions (most of them spurious).
  bool nack_on_gap = false;

  // RFC 9002 §6.2.2: the RTT assumed before the first sample (333 ms there;
  // lower suits a LAN) and the timer granularity kGranularity.
  Duration initial_rtt = std::chrono::milliseconds(333);
  Duration timer_granularity = std::chrono::milliseconds(1);
  // RFC 9002 §7 NewReno. Off: no window and no pacing (KCP's `nc`), only
  // flow control and max_packets_in_flight limit the sender.
  bool congestion_control = true;
  // RFC 9002 §7.7 pacing; only with congestion_control.
  bool pacing = true;

  // RFC 9000 §10.1: silent close after this long without a packet from the
  // peer (each side uses the smaller of the two values). 0: none.
  Duration idle_timeout = std::chrono::seconds(30);
  // Keepalive: a PING when nothing ack-eliciting was sent for this long.
  // 0: none (then the failure detector has only data to go by).
  Duration heartbeat_interval = std::chrono::milliseconds(100);
  // Phi-accrual failure detection over the arrival times of the peer's
  // packets. At `probe_phi` the connection sends a PING probe; at
  // failure_detector.threshold it declares the peer dead. Zero values of
  // failure_detector.min_std_dev and min_sample_interval are derived from
  // heartbeat_interval (3x and 1/2x), first_heartbeat_estimate is set to it.
  bool failure_detection = true;
  PhiAccrualOptions failure_detector = DefaultFailureDetector();
  double probe_phi = 3.0;

  // Client: give up connecting after this long.
  Duration handshake_timeout = std::chrono::seconds(10);
  // Graceful close: how long Close() waits for outstanding data to be
  // acknowledged before closing anyway.
  Duration close_linger = std::chrono::seconds(5);
  // First packet number. A test hook: starting near 2^16 or 2^32 makes the
  // truncated encodings wrap early.
  uint64_t initial_packet_number = 0;
};

struct HostOptions {
  ConnectionOptions connection;
  // Connections (incoming + outgoing) held at once; further handshakes are
  // answered with REJECT(server busy).
  uint32_t max_connections = 256;
  bool accept_incoming = true;
  // Seeds the cookie key and connection ids. Give a random value (the driver
  // uses getrandom); tests give a fixed one to reproduce.
  uint64_t seed = 1;
  // A RETRY cookie is accepted for this long after it was issued.
  Duration cookie_lifetime = std::chrono::seconds(10);
  // Stateless replies (RETRY, REJECT) waiting to be sent; more are dropped.
  uint32_t max_stateless_replies = 64;
};

// Identifies a connection of one Host. A closed connection's handle stays
// invalid forever (a generation counter).
struct ConnectionHandle {
  uint32_t index = 0;
  uint32_t generation = 0;  // 0 is never valid
  bool valid() const { return generation != 0; }
  friend bool operator==(ConnectionHandle a, ConnectionHandle b) {
    return a.index == b.index && a.generation == b.generation;
  }
};

enum class EventType : uint8_t {
  kConnected,      // handshake done (`incoming` says who started it)
  kConnectFailed,  // client: rejected or timed out (see `reason`)
  kMessage,        // a message on `channel`, bytes in `message`
  kWritable,       // Send() returned kWouldBlock before; there is room now
  kPeerSuspected,  // phi reached probe_phi; a probe went out
  kPeerDead,       // phi reached the threshold; the connection closes
  kClosed,         // the last event of a connection (see `reason`)
};
std::string_view EventTypeName(EventType type);

enum class CloseReason : uint8_t {
  kNone,
  kLocal,             // Close() finished
  kPeer,              // the peer sent CLOSE
  kIdleTimeout,       // RFC 9000 §10.1
  kPeerDead,          // the failure detector
  kHandshakeTimeout,  // no ACCEPT within handshake_timeout
  kRejected,          // REJECT from the server
  kChannelMismatch,   // the peers configured different channels
};
std::string_view CloseReasonName(CloseReason reason);

// A received message: its bytes, in up to two pieces (the receive buffer is
// a ring). Valid until the next PollEvent() call on the same Host.
struct MessageView {
  std::span<const std::byte> first;
  std::span<const std::byte> second;
  size_t size() const { return first.size() + second.size(); }
  // Copies min(size(), out.size()) bytes; returns how many.
  size_t CopyTo(std::span<std::byte> out) const {
    const size_t a = std::min(first.size(), out.size());
    if (a > 0) std::memcpy(out.data(), first.data(), a);
    const size_t b = std::min(second.size(), out.size() - a);
    if (b > 0) std::memcpy(out.data() + a, second.data(), b);
    return a + b;
  }
};

struct Event {
  EventType type = EventType::kMessage;
  ConnectionHandle connection;
  uint8_t channel = 0;
  bool incoming = false;  // kConnected: the peer connected to us
  CloseReason reason = CloseReason::kNone;
  MessageView message;
};

enum class SendResult : uint8_t {
  kOk,
  kWouldBlock,    // send buffer or fragment table full: wait for kWritable
  kTooLarge,      // over max_message_bytes (ours or the peer's), or an
                  // unreliable message over one datagram
  kBadChannel,    // no such channel
  kNotConnected,  // handshake not done, closing or closed
};
std::string_view SendResultName(SendResult result);

// Why an input was dropped. Connection and Host count each separately.
enum class DropReason : uint8_t {
  kParse,              // malformed (see parse_errors for which way)
  kUnknownConnection,  // short header with a connection id we do not have
  kWrongAddress,       // a known connection id from another address
  kShortInitial,       // INITIAL below 1200 bytes (anti-amplification)
  kBadVersion,
  kBadToken,             // cookie MAC mismatch
  kExpiredToken,         // cookie older than cookie_lifetime
  kServerBusy,           // max_connections reached
  kNotAccepting,         // accept_incoming is false
  kStatelessQueueFull,   // too many RETRY/REJECT waiting
  kUnexpectedHandshake,  // a handshake packet that fits no state
  kForgedAck,            // ACK/NACK of a packet number never sent
  kChannelType,          // a frame for a channel of another type
  kMessageTooLarge,      // message_length over max_message_bytes
  kFlowControl,          // data beyond the window we advertised
  kMessageWindow,        // message id far beyond what the window allows
  kInconsistentMessage,  // fragments disagree on a message's start or size
  kMisalignedFragment,   // fragment boundaries not on 64-byte units
  kUnreliableStale,      // unreliable-sequenced message older than the last
  kUnreliableFull,       // no room in the unreliable receive queue
  kClosed,               // a packet for a closed or draining connection
  kCount,
};
std::string_view DropReasonName(DropReason reason);

struct ConnectionStats {
  uint64_t packets_sent = 0;
  uint64_t packets_received = 0;
  uint64_t bytes_sent = 0;      // UDP payload
  uint64_t bytes_received = 0;  // UDP payload
  uint64_t ack_only_packets_sent = 0;
  uint64_t acks_sent = 0;
  uint64_t acks_received = 0;
  uint64_t nacks_sent = 0;
  uint64_t nacks_received = 0;
  uint64_t pings_sent = 0;
  uint64_t duplicate_packets = 0;

  uint64_t messages_sent = 0;  // accepted by Send()
  uint64_t message_bytes_sent = 0;
  uint64_t messages_delivered = 0;  // handed to the application
  uint64_t message_bytes_delivered = 0;
  uint64_t fragments_sent = 0;           // first transmissions
  uint64_t fragments_retransmitted = 0;  // later transmissions
  uint64_t fragment_bytes_sent = 0;
  uint64_t fragment_bytes_retransmitted = 0;
  uint64_t duplicate_fragments = 0;  // received again (a retransmission
                                     // that was not needed, or a duplicate)

  uint64_t packets_lost = 0;  // declared lost (RFC 9002 §6.1 or NACK)
  uint64_t packets_lost_by_nack = 0;
  // Packets declared lost that were acknowledged later: the retransmission
  // of their fragments was spurious.
  uint64_t spurious_losses = 0;
  uint64_t probe_timeouts = 0;  // RFC 9002 §6.2 PTO expiries
  uint64_t congestion_events = 0;
  uint64_t persistent_congestion = 0;
  uint64_t flow_control_blocked = 0;  // times new data waited for MAX_DATA
  uint64_t send_would_block = 0;
  // Output calls that had data to send but held it back: the congestion
  // window was full, or the pacer (RFC 9002 §7.7) had no tokens yet.
  uint64_t congestion_window_blocked = 0;
  uint64_t pacing_blocked = 0;
  uint64_t rtt_samples = 0;

  uint64_t keepalive_pings = 0;
  uint64_t suspicion_probes = 0;

  // Snapshot values.
  Duration smoothed_rtt{0};
  Duration rttvar{0};
  Duration min_rtt{0};
  Duration latest_rtt{0};
  uint64_t congestion_window = 0;
  uint64_t slow_start_threshold = 0;  // UINT64_MAX / 4 until the first loss
  uint64_t bytes_in_flight = 0;
  double phi = 0;  // the failure detector's, at the last timer check

  std::array<uint64_t, size_t(DropReason::kCount)> drops{};
  std::array<uint64_t, size_t(wire::ParseError::kCount)> parse_errors{};
  uint64_t total_drops() const {
    uint64_t n = 0;
    for (uint64_t d : drops) n += d;
    return n;
  }
};

struct HostStats {
  uint64_t datagrams_received = 0;
  uint64_t datagrams_sent = 0;
  uint64_t retries_sent = 0;
  uint64_t rejects_sent = 0;
  uint64_t connections_accepted = 0;
  uint64_t connections_initiated = 0;
  uint64_t connections_closed = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent_stateless = 0;  // RETRY and REJECT bytes
  // Handshake bytes received from not-yet-validated sources: the
  // anti-amplification budget (bytes_sent_stateless never exceeds it).
  uint64_t bytes_received_unvalidated = 0;
  std::array<uint64_t, size_t(DropReason::kCount)> drops{};
  std::array<uint64_t, size_t(wire::ParseError::kCount)> parse_errors{};
};

}  // namespace ringlab::rudp

#endif  // RINGLAB_UDP_TYPES_H_
