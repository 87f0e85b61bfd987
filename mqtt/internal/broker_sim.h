// Test harness: a Broker core on a SimNetwork node, driven like the real
// driver drives it, and raw MQTT clients on other nodes that send encoded
// packets and collect the frames they receive. Virtual time only.
//
//   BrokerSim sim;
//   RawClient& c = sim.AddClient();
//   c.Send(connect, Version::k5);
//   sim.RunFor(std::chrono::milliseconds(10));
//   Connack ack = c.Expect<Connack>();
//
// A client can stop reading (`reading = false`); the harness then stops
// polling the broker for that connection once `socket_buffer_bytes` are
// unread, the way a driver stops on a full socket send queue.
#ifndef RINGLAB_MQTT_INTERNAL_BROKER_SIM_H_
#define RINGLAB_MQTT_INTERNAL_BROKER_SIM_H_

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"
#include "mqtt/broker.h"
#include "mqtt/client.h"
#include "mqtt/packets.h"
#include "mqtt/stream_decoder.h"
#include "transport/sim_network.h"

namespace ringlab::mqtt::internal {

// One received packet, owning its bytes; Decode() views them.
struct OwnedFrame {
  std::vector<std::byte> bytes;
  Frame frame() const {
    Frame f;
    size_t needed;
    ParseFrame(bytes, kMaxPacketBytes, &f, &needed);
    return f;
  }
  PacketType type() const { return PacketType(uint8_t(bytes[0]) >> 4); }
};

class BrokerSim;

class RawClient {
 public:
  RawClient(BrokerSim* sim, Endpoint node) : sim_(sim), node_(node) {}

  void Open();
  void Send(const Packet& packet, Version version);
  void SendBytes(std::span<const std::byte> bytes);
  void Close();  // FIN
  void Abort();  // RST: a network failure as the broker sees it

  // Frames received and not yet taken.
  size_t pending() const { return frames_.size(); }
  bool closed() const { return closed_; }
  // Takes the oldest frame; fails the test when there is none.
  OwnedFrame Take();
  // Takes the oldest frame and decodes it as P with `version`.
  template <typename P>
  P Expect(Version version, OwnedFrame* keep) {
    *keep = Take();
    Packet packet;
    const DecodeStatus s = DecodePacket(keep->frame(), version, &packet);
    EXPECT_TRUE(s.ok()) << s.detail;
    if (!std::holds_alternative<P>(packet)) {
      ADD_FAILURE() << "got " << PacketTypeName(keep->type());
      return P{};
    }
    return std::get<P>(packet);
  }

  bool reading = true;
  transport::SimStreamId stream = 0;
  Endpoint node() const { return node_; }
  void Poll();

 private:
  BrokerSim* sim_;
  Endpoint node_;
  StreamDecoder decoder_;
  std::deque<OwnedFrame> frames_;
  bool closed_ = false;
};

// A Client core on a SimNetwork node, pumped by the BrokerSim. Received
// events are copied so tests can look at them later.
class CoreClient {
 public:
  struct Event {
    ClientEvent::Kind kind;
    ReasonCode reason = ReasonCode::kSuccess;
    uint16_t packet_id = 0;
    bool session_present = false;
    std::string topic;
    std::string payload;
    uint8_t qos = 0;
    bool dup = false;
    bool retain = false;
    std::vector<uint8_t> codes;
  };

  CoreClient(BrokerSim* sim, Endpoint node, ClientOptions options)
      : client(std::move(options)), sim_(sim), node_(node) {}

  void Open();
  void Abort();  // a network failure, seen from both sides
  void Poll();
  Timestamp NextDeadline() const { return client.NextDeadline(); }

  // Events of `kind` seen so far.
  std::vector<Event> Of(ClientEvent::Kind kind) const {
    std::vector<Event> out;
    for (const Event& e : events) {
      if (e.kind == kind) out.push_back(e);
    }
    return out;
  }

  Client client;
  std::vector<Event> events;
  transport::SimStreamId stream = 0;
  bool connected_transport = false;
  Endpoint node() const { return node_; }

 private:
  BrokerSim* sim_;
  Endpoint node_;
};

class BrokerSim {
 public:
  explicit BrokerSim(BrokerOptions options = {},
                     Duration link_delay = std::chrono::microseconds(50))
      : net_(Options(link_delay)), broker_(std::move(options)) {
    EXPECT_TRUE(net_.AddNode(server_).ok());
    EXPECT_TRUE(net_.Listen(server_).ok());
  }

  transport::SimNetwork& net() { return net_; }
  Broker& broker() { return broker_; }
  Endpoint server() const { return server_; }
  Timestamp now() const { return net_.now(); }
  size_t socket_buffer_bytes = 64 * 1024;

  CoreClient& AddCoreClient(ClientOptions options) {
    const Endpoint node =
        Endpoint::Loopback(uint16_t(40000 + core_clients_.size()));
    EXPECT_TRUE(net_.AddNode(node).ok());
    core_clients_.push_back(
        std::make_unique<CoreClient>(this, node, std::move(options)));
    return *core_clients_.back();
  }

  RawClient& AddClient() {
    const Endpoint node = Endpoint::Loopback(uint16_t(20000 + clients_.size()));
    EXPECT_TRUE(net_.AddNode(node).ok());
    clients_.push_back(std::make_unique<RawClient>(this, node));
    return *clients_.back();
  }

  // Runs the network, the broker's timers and every client until `d` of
  // virtual time has passed.
  void RunFor(Duration d) { RunUntil(net_.now() + d); }
  void RunUntil(Timestamp t) {
    while (true) {
      Process();
      Timestamp next = std::min(net_.NextDeadline(), broker_.NextDeadline());
      for (auto& c : core_clients_) next = std::min(next, c->NextDeadline());
      if (next > t) break;
      (void)net_.AdvanceTo(std::max(next, net_.now()));
      Timers();
    }
    (void)net_.AdvanceTo(t);
    Timers();
    Process();
  }

  void Timers() {
    if (broker_.NextDeadline() <= net_.now()) broker_.OnTimeout(net_.now());
    for (auto& c : core_clients_) {
      if (c->NextDeadline() <= net_.now()) c->client.OnTimeout(net_.now());
    }
  }

  // The server side of one step: like broker_driver.cc on a Loop.
  void Process() {
    for (int round = 0; round < 1000; ++round) {
      bool progress = false;
      while (std::optional<transport::SimStreamEvent> e =
                 net_.PollStreamEvent(server_)) {
        progress = true;
        switch (e->kind) {
          case transport::SimStreamEvent::Kind::kIncoming: {
            absl::StatusOr<ConnectionId> id =
                broker_.OnConnectionOpened(net_.now());
            if (!id.ok()) {
              (void)net_.StreamAbort(e->stream);
              break;
            }
            by_stream_[e->stream] = *id;
            stream_by_index_[id->index] = e->stream;
            for (auto& c : clients_) {
              if (c->node() == e->peer) client_by_stream_[e->stream] = c.get();
            }
            break;
          }
          case transport::SimStreamEvent::Kind::kReadable:
            ReadServer(e->stream);
            break;
          case transport::SimStreamEvent::Kind::kFin:
          case transport::SimStreamEvent::Kind::kReset:
            ReadServer(e->stream);
            Drop(e->stream);
            break;
          default:
            break;
        }
      }
      progress |= Drain();
      while (std::optional<BrokerEvent> e = broker_.PollEvent()) {
        progress = true;
        // Flush what the broker still has for it (a DISCONNECT), then FIN.
        DrainOne(e->connection, /*ignore_flow=*/true);
        auto it = stream_by_index_.find(e->connection.index);
        if (it != stream_by_index_.end()) {
          (void)net_.StreamClose(it->second);
          by_stream_.erase(it->second);
          stream_by_index_.erase(it);
        }
        closed_reasons.push_back(e->reason);
        broker_.OnConnectionClosed(e->connection, net_.now());
      }
      for (auto& c : clients_) c->Poll();
      for (auto& c : core_clients_) {
        const size_t before = c->events.size();
        c->Poll();
        progress |= c->events.size() != before;
      }
      if (!progress) break;
    }
  }

  std::vector<ReasonCode> closed_reasons;

 private:
  friend class RawClient;
  friend class CoreClient;
  static transport::SimNetwork::Options Options(Duration delay) {
    transport::SimNetwork::Options o;
    o.default_impairment.delay = delay;
    return o;
  }
  void ReadServer(transport::SimStreamId stream) {
    auto it = by_stream_.find(stream);
    if (it == by_stream_.end()) return;
    const ConnectionId id = it->second;
    std::byte buf[4096];
    while (true) {
      absl::StatusOr<transport::SimStreamReadResult> r =
          net_.StreamRead(stream, buf);
      if (!r.ok() || r->bytes == 0) return;
      broker_.OnBytes(id, std::span<const std::byte>(buf, r->bytes),
                      net_.now());
      if (by_stream_.find(stream) == by_stream_.end()) return;
    }
  }
  void Drop(transport::SimStreamId stream) {
    auto it = by_stream_.find(stream);
    if (it == by_stream_.end()) return;
    const ConnectionId id = it->second;
    by_stream_.erase(it);
    stream_by_index_.erase(id.index);
    (void)net_.StreamClose(stream);
    broker_.OnConnectionClosed(id, net_.now());
  }
  // The client end of a server stream, to model a full socket buffer.
  RawClient* ClientOf(transport::SimStreamId server_stream);
  bool Blocked(ConnectionId id);
  bool DrainOne(ConnectionId id, bool ignore_flow) {
    auto it = stream_by_index_.find(id.index);
    if (it == stream_by_index_.end()) return false;
    bool any = false;
    std::byte out[256];
    while (ignore_flow || !Blocked(id)) {
      std::optional<Transmit> t = broker_.PollTransmit(id, out, net_.now());
      if (!t) break;
      any = true;
      EXPECT_TRUE(net_.StreamWrite(it->second, std::span<const std::byte>(
                                                   out, t->header_bytes))
                      .ok());
      if (!t->tail.empty()) {
        EXPECT_TRUE(net_.StreamWrite(it->second, t->tail).ok());
      }
    }
    if (!ignore_flow && Blocked(id)) blocked_.push_back(id);
    return any;
  }
  bool Drain() {
    bool any = false;
    // Connections that were blocked get another chance first.
    std::vector<ConnectionId> retry;
    retry.swap(blocked_);
    for (ConnectionId id : retry) any |= DrainOne(id, false);
    while (std::optional<ConnectionId> id = broker_.NextReady()) {
      any |= DrainOne(*id, false);
    }
    return any;
  }

  transport::SimNetwork net_;
  Broker broker_;
  Endpoint server_ = Endpoint::Loopback(1883);
  std::vector<std::unique_ptr<RawClient>> clients_;
  std::vector<std::unique_ptr<CoreClient>> core_clients_;
  absl::flat_hash_map<transport::SimStreamId, ConnectionId> by_stream_;
  absl::flat_hash_map<uint32_t, transport::SimStreamId> stream_by_index_;
  absl::flat_hash_map<transport::SimStreamId, RawClient*> client_by_stream_;
  std::vector<ConnectionId> blocked_;
};

inline void RawClient::Open() {
  absl::StatusOr<transport::SimStreamId> s =
      sim_->net_.Connect(node_, sim_->server_);
  ASSERT_TRUE(s.ok());
  stream = *s;
}

inline void RawClient::Send(const Packet& packet, Version version) {
  std::vector<std::byte> out(EncodedSize(packet, version));
  ASSERT_FALSE(out.empty());
  ASSERT_TRUE(Encode(packet, version, out).ok());
  SendBytes(out);
}

inline void RawClient::SendBytes(std::span<const std::byte> bytes) {
  ASSERT_TRUE(sim_->net_.StreamWrite(stream, bytes).ok());
}

inline void RawClient::Close() { (void)sim_->net_.StreamClose(stream); }
inline void RawClient::Abort() {
  (void)sim_->net_.StreamAbort(stream);
  closed_ = true;
}

inline OwnedFrame RawClient::Take() {
  if (frames_.empty()) {
    ADD_FAILURE() << "no frame received";
    return OwnedFrame{{std::byte(0xC0), std::byte(0)}};
  }
  OwnedFrame f = std::move(frames_.front());
  frames_.pop_front();
  return f;
}

inline void RawClient::Poll() {
  while (std::optional<transport::SimStreamEvent> e =
             sim_->net_.PollStreamEvent(node_)) {
    if (e->kind == transport::SimStreamEvent::Kind::kReset ||
        e->kind == transport::SimStreamEvent::Kind::kRefused) {
      closed_ = true;
    }
  }
  if (!reading || stream == 0) return;
  std::byte buf[4096];
  while (true) {
    absl::StatusOr<transport::SimStreamReadResult> r =
        sim_->net_.StreamRead(stream, buf);
    if (!r.ok()) {
      closed_ = true;
      return;
    }
    std::span<const std::byte> in(buf, r->bytes);
    Frame frame;
    while (decoder_.Next(&in, &frame) == StreamDecoder::Result::kFrame) {
      OwnedFrame owned;
      const size_t header = frame.size_bytes - frame.body.size();
      owned.bytes.resize(frame.size_bytes);
      // Rebuild the fixed header from the frame: type/flags + length.
      WireWriter w(owned.bytes);
      w.Byte(uint8_t(uint8_t(frame.type) << 4 | frame.flags));
      w.Varint(uint32_t(frame.body.size()));
      std::copy(frame.body.begin(), frame.body.end(),
                owned.bytes.begin() + header);
      frames_.push_back(std::move(owned));
    }
    if (r->eof) closed_ = true;
    if (r->bytes == 0) return;
  }
}

inline RawClient* BrokerSim::ClientOf(transport::SimStreamId server_stream) {
  auto it = client_by_stream_.find(server_stream);
  return it == client_by_stream_.end() ? nullptr : it->second;
}

inline bool BrokerSim::Blocked(ConnectionId id) {
  auto it = stream_by_index_.find(id.index);
  if (it == stream_by_index_.end()) return false;
  RawClient* c = ClientOf(it->second);
  if (c == nullptr || c->reading) return false;
  return net_.StreamReadable(c->stream) >= socket_buffer_bytes;
}

inline void CoreClient::Open() {
  absl::StatusOr<transport::SimStreamId> s =
      sim_->net_.Connect(node_, sim_->server_);
  ASSERT_TRUE(s.ok());
  stream = *s;
  connected_transport = false;
}

inline void CoreClient::Abort() {
  (void)sim_->net_.StreamAbort(stream);
  connected_transport = false;
  client.OnTransportClosed(sim_->net_.now());
  stream = 0;
}

inline void CoreClient::Poll() {
  const Timestamp now = sim_->net_.now();
  while (std::optional<transport::SimStreamEvent> e =
             sim_->net_.PollStreamEvent(node_)) {
    if (e->stream != stream) continue;  // an old connection
    switch (e->kind) {
      case transport::SimStreamEvent::Kind::kConnected:
        connected_transport = true;
        client.OnTransportConnected(now);
        break;
      case transport::SimStreamEvent::Kind::kReset:
      case transport::SimStreamEvent::Kind::kRefused:
        connected_transport = false;
        client.OnTransportClosed(now);
        stream = 0;
        break;
      default:
        break;
    }
  }
  if (stream != 0 && connected_transport) {
    std::byte buf[4096];
    while (true) {
      absl::StatusOr<transport::SimStreamReadResult> r =
          sim_->net_.StreamRead(stream, buf);
      if (!r.ok()) break;
      if (r->bytes > 0) {
        client.OnBytes(std::span<const std::byte>(buf, r->bytes), now);
      }
      if (r->eof) {
        connected_transport = false;
        (void)sim_->net_.StreamClose(stream);
        client.OnTransportClosed(now);
        stream = 0;
        break;
      }
      if (r->bytes == 0) break;
    }
  }
  while (std::optional<ClientEvent> e = client.PollEvent()) {
    Event copy;
    copy.kind = e->kind;
    copy.reason = e->reason;
    copy.packet_id = e->packet_id;
    copy.session_present = e->session_present;
    copy.codes.assign(e->reason_codes.begin(), e->reason_codes.end());
    if (e->kind == ClientEvent::Kind::kMessage) {
      copy.topic = std::string(e->message.topic);
      copy.payload = std::string(AsString(e->message.payload));
      copy.qos = e->message.qos;
      copy.dup = e->message.dup;
      copy.retain = e->message.retain;
    }
    events.push_back(std::move(copy));
    if (e->kind == ClientEvent::Kind::kClosed && stream != 0) {
      // Flush the DISCONNECT, then FIN, like a driver.
      std::byte out[4096];
      while (size_t n = client.PollTransmit(out, now)) {
        (void)sim_->net_.StreamWrite(stream,
                                     std::span<const std::byte>(out, n));
      }
      (void)sim_->net_.StreamClose(stream);
      connected_transport = false;
      client.OnTransportClosed(now);
      stream = 0;
    }
  }
  if (stream != 0 && connected_transport) {
    std::byte out[4096];
    while (size_t n = client.PollTransmit(out, now)) {
      (void)sim_->net_.StreamWrite(stream, std::span<const std::byte>(out, n));
    }
  }
}

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_BROKER_SIM_H_
