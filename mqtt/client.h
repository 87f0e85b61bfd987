// Client: a sans-io MQTT 3.1.1 / 5.0 client core. The caller owns the
// transport: it reports the connection coming up and going down, feeds the
// bytes that arrive, copies out the bytes to send, and calls OnTimeout() at
// NextDeadline(). Events are polled.
//
//   ClientOptions options;
//   options.version = Version::k5;
//   options.client_id = "sensor-1";
//   Client client(options);
//   client.OnTransportConnected(now);            // queues CONNECT
//   ... write client.PollTransmit(buf, now) bytes to the socket ...
//   client.OnBytes(received, now);
//   while (std::optional<ClientEvent> e = client.PollEvent()) {
//     if (e->kind == ClientEvent::Kind::kConnected) {
//       client.Subscribe("a/+", {.max_qos = 1}, now);
//       client.Publish("a/b", AsBytes("hi"), {.qos = 1}, now);
//     } else if (e->kind == ClientEvent::Kind::kMessage) {
//       use(e->message.topic, e->message.payload);  // views, see below
//     }
//   }
//
// Behaviour: QoS 0, 1 and 2 both ways (incoming QoS 1/2 are acknowledged
// automatically, QoS 2 by method A: delivered once, the packet id held until
// PUBREL); the server's Receive Maximum bounds our in-flight window and
// further publishes wait in order; keep alive sends PINGREQ after
// keep_alive_s of silence and treats a missing PINGRESP within another
// keep_alive_s as a lost connection; on a reconnect with Session Present 1
// every unacknowledged PUBLISH is resent with DUP and every pending PUBREL
// again (MQTT-4.4.0-1); with Session Present 0 that state is dropped
// (MQTT-3.2.2-5) and counted. Incoming topic aliases are resolved.
//
// Ownership: views in a polled kMessage event (topic, payload, properties)
// point into the client's own buffer and stay valid until the next call of
// OnBytes() or OnTimeout(). Publish() copies what it is given.
// Errors: control calls return absl::Status (FailedPrecondition when not
// connected, ResourceExhausted when the output or the waiting queue is full,
// InvalidArgument for a bad topic or an over-size packet). A bad packet from
// the server ends the connection with a kClosed event carrying the reason
// (and a DISCONNECT in v5). Threading: none. Allocation: none per message in
// steady state (buffers are recycled).
#ifndef RINGLAB_MQTT_CLIENT_H_
#define RINGLAB_MQTT_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "mqtt/internal/ring.h"
#include "mqtt/packets.h"
#include "mqtt/stream_decoder.h"
#include "transport/time.h"

namespace ringlab::mqtt {

struct ClientWill {
  std::string topic;
  std::string payload;
  uint8_t qos = 0;
  bool retain = false;
  uint32_t delay_s = 0;  // v5 Will Delay Interval
};

struct ClientOptions {
  Version version = Version::k5;
  std::string client_id;  // empty: the server assigns one (v5)
  bool clean_start = true;
  uint16_t keep_alive_s = 60;
  uint32_t session_expiry_s = 0;      // v5; 3.1.1 uses !clean_start
  uint16_t receive_maximum = 65535;   // v5, advertised
  uint16_t topic_alias_maximum = 16;  // v5, aliases the server may use
  uint32_t max_packet_bytes = kMaxPacketBytes;  // both ways
  std::optional<ClientWill> will;
  std::optional<std::string> username;
  std::optional<std::string> password;
  // Our own cap on unacknowledged QoS 1/2 publishes (the server's Receive
  // Maximum may lower it).
  uint16_t max_inflight = 65535;
  // Publishes waiting for a free in-flight slot, and encoded bytes waiting
  // for PollTransmit, beyond which Publish() says ResourceExhausted.
  uint32_t max_waiting = 60'000;
  size_t max_output_bytes = 64 << 20;
  // CONNACK must arrive within this time of OnTransportConnected().
  Duration connect_timeout = std::chrono::seconds(30);
};

struct PublishOptions {
  uint8_t qos = 0;
  bool retain = false;
  // v5 properties, forwarded by the broker.
  std::optional<uint32_t> message_expiry_s = std::nullopt;
  std::optional<std::string_view> response_topic = std::nullopt;
  std::optional<std::span<const std::byte>> correlation_data = std::nullopt;
  std::optional<std::string_view> content_type = std::nullopt;
  std::optional<uint8_t> payload_format = std::nullopt;
  std::span<const StringPair> user_properties = {};
};

struct ClientEvent {
  enum class Kind : uint8_t {
    kConnected,      // CONNACK accepted: session_present, connack
    kConnectFailed,  // CONNACK refused: reason (v5 code or 3.1.1 mapped)
    kMessage,        // an application message: message
    kPublished,      // a QoS 1/2 publish completed: packet_id, reason
    kSubscribed,     // SUBACK: packet_id, reason_codes
    kUnsubscribed,   // UNSUBACK: packet_id, reason_codes
    kPong,           // PINGRESP
    kClosed,         // the MQTT connection ended: reason; close the socket
  };
  Kind kind = Kind::kConnected;
  bool session_present = false;
  ReasonCode reason = ReasonCode::kSuccess;
  uint16_t packet_id = 0;
  std::span<const uint8_t> reason_codes;  // valid like `message`
  Publish message;                        // kMessage; topic resolved
  // kConnected: what the server told us (v5).
  std::optional<std::string_view> assigned_client_id;
  uint16_t server_keep_alive_s = 0;
};

struct ClientCounters {
  uint64_t published[3] = {0, 0, 0};
  uint64_t received[3] = {0, 0, 0};
  uint64_t completed = 0;  // QoS 1/2 publishes acknowledged
  uint64_t resent = 0;     // DUP resends after a reconnect
  uint64_t dropped_new_session = 0;
  uint64_t duplicates_ignored = 0;  // QoS 2 resends of a held id
  uint64_t pings = 0;
  uint64_t protocol_errors = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
};

class Client {
 public:
  enum class State : uint8_t { kOffline, kConnecting, kConnected, kClosing };

  explicit Client(ClientOptions options);
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // ---- Transport
  // ------------------------------------------------------------- The byte
  // stream is up: CONNECT is queued.
  void OnTransportConnected(Timestamp now);
  void OnBytes(std::span<const std::byte> bytes, Timestamp now);
  // The byte stream is gone. Session state (unacknowledged publishes) is
  // kept for a later reconnect when the session is persistent.
  void OnTransportClosed(Timestamp now);
  // Copies queued output into `out`; returns the bytes written (0: none).
  size_t PollTransmit(std::span<std::byte> out, Timestamp now);
  size_t pending_output_bytes() const { return output_.size() - output_pos_; }

  // ---- Operations
  // ------------------------------------------------------------- Returns the
  // packet id (0 for QoS 0). QoS 1/2 publishes may be made while offline with a
  // persistent session; they go out after the next CONNACK.
  absl::StatusOr<uint16_t> Publish(std::string_view topic,
                                   std::span<const std::byte> payload,
                                   const PublishOptions& options,
                                   Timestamp now);
  absl::StatusOr<uint16_t> Subscribe(std::string_view filter,
                                     SubscriptionOptions options, Timestamp now,
                                     uint32_t subscription_id = 0);
  absl::StatusOr<uint16_t> Unsubscribe(std::string_view filter, Timestamp now);
  // Queues DISCONNECT (v5 `reason`) and moves to kClosing; a kClosed event
  // follows once it is queued.
  void Disconnect(Timestamp now,
                  ReasonCode reason = ReasonCode::kNormalDisconnection);

  std::optional<ClientEvent> PollEvent();

  Timestamp NextDeadline() const;
  void OnTimeout(Timestamp now);

  State state() const { return state_; }
  const ClientOptions& options() const { return options_; }
  const ClientCounters& counters() const { return counters_; }
  // Unacknowledged QoS 1/2 publishes (sent or waiting for a slot).
  size_t inflight() const { return inflight_.size(); }
  size_t waiting() const { return waiting_.size(); }
  const std::string& client_id() const { return client_id_; }

 private:
  struct Outgoing {
    std::vector<std::byte> packet;  // the encoded PUBLISH (or PUBREL)
    uint16_t packet_id = 0;
    uint8_t qos = 0;
    bool released = false;  // PUBREC received: PUBREL sent, waiting PUBCOMP
  };
  struct QueuedEvent {
    ClientEvent::Kind kind;
    ReasonCode reason = ReasonCode::kSuccess;
    uint16_t packet_id = 0;
    bool session_present = false;
    // Offsets into arena_: a copied frame body (kMessage), the resolved
    // topic, or reason codes.
    size_t offset = 0;
    size_t length = 0;
    size_t topic_offset = 0;
    size_t topic_length = 0;
    uint8_t flags = 0;
    uint16_t server_keep_alive_s = 0;
    bool has_assigned_id = false;
  };

  void HandleFrame(const Frame& frame, Timestamp now);
  void HandlePublish(const Frame& frame, const mqtt::Publish& p, Timestamp now);
  void HandleAck(const PubResponse& r, Timestamp now);
  void Fail(ReasonCode code, const char* detail, Timestamp now);
  void Close(ReasonCode reason);
  void Queue(const Packet& packet);
  void QueueBytes(std::span<const std::byte> bytes);
  void FillWindow();
  uint16_t NextPacketId();
  std::vector<std::byte> TakeBuffer();
  void GiveBuffer(std::vector<std::byte> buffer);
  size_t ArenaAppend(std::span<const std::byte> bytes);
  void PushEvent(const QueuedEvent& e) { events_.push_back(e); }

  ClientOptions options_;
  State state_ = State::kOffline;
  Version version_;
  StreamDecoder decoder_;
  std::string client_id_;
  // Limits from the CONNACK.
  uint16_t send_window_ = 0;
  uint32_t server_max_packet_ = kMaxPacketBytes;
  uint16_t keep_alive_s_ = 0;
  Timestamp last_sent_;
  Timestamp ping_sent_ = Timestamp::Never();
  Timestamp connect_started_ = Timestamp::Never();
  bool had_session_ = false;

  std::vector<std::byte> output_;
  size_t output_pos_ = 0;
  internal::Ring<Outgoing> inflight_;  // sent, in send order
  internal::Ring<Outgoing> waiting_;   // not yet sent (window full)
  std::vector<std::vector<std::byte>> free_buffers_;
  absl::flat_hash_set<uint16_t> ids_in_use_;  // our outstanding packet ids
  std::vector<uint16_t> held_qos2_;     // incoming QoS 2 ids awaiting PUBREL
  std::vector<uint16_t> pending_acks_;  // SUBSCRIBE/UNSUBSCRIBE ids
  std::vector<std::string> aliases_in_;
  uint16_t next_packet_id_ = 1;

  internal::Ring<QueuedEvent> events_;
  std::vector<std::byte> arena_;
  ClientCounters counters_;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_CLIENT_H_
