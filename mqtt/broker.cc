#include "mqtt/broker.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "mqtt/internal/absl_view.h"
#include "mqtt/internal/id_list.h"
#include "mqtt/internal/retained_store.h"
#include "mqtt/stream_decoder.h"
#include "mqtt/topic.h"

namespace ringlab::mqtt {
namespace internal {

constexpr uint32_t kNone = 0xFFFFFFFFu;
constexpr uint32_t kNeverExpires = 0xFFFFFFFFu;

// A message waiting in a session queue for one subscriber.
struct Delivery {
  MessageRef message;
  uint64_t sequence = 0;  // order across the QoS 0 and QoS 1/2 queues
  uint8_t qos = 0;
  bool retain = false;
  internal::IdList subscription_ids;
  uint64_t store_key = 0;  // BrokerStore::PutQueued's key, 0: not stored
};

// A QoS 1/2 PUBLISH sent to the client and not yet fully acknowledged.
struct Inflight {
  enum class State : uint8_t { kAwaitPuback, kAwaitPubrec, kAwaitPubcomp };
  MessageRef message;  // released once PUBREC arrives (only PUBREL is left)
  uint16_t packet_id = 0;
  uint8_t qos = 0;
  bool retain = false;
  State state = State::kAwaitPuback;
  internal::IdList subscription_ids;
  uint64_t store_key = 0;
  // Not sent yet: a QoS 2 PUBLISH waits until the store's
  // durable_sequence() reaches this (see Broker::NextPublish).
  uint64_t hold_until = 0;
};

struct SubscriptionRecord {
  SubscriptionOptions options;
  uint32_t subscription_id = 0;
};

// Session state (MQTT 5.0 §4.1): survives the connection when its expiry
// interval says so. The store hears of it where its expiry is set
// (HandleConnect, HandleDisconnect: SyncStoredSession), where it ends
// (EndSession), where its subscriptions change, where QoS 1/2 deliveries
// are queued (Enqueue) and where they leave for good (acknowledged in
// HandlePubResponse, expired or too large in NextPublish).
struct Session {
  uint32_t index = 0;
  std::string client_id;
  // The CONNECT's user name, for the authenticator (ACLs by user).
  std::optional<std::string> username;
  uint32_t connection = kNone;
  uint32_t expiry_interval_s = 0;
  // In the store, with this expiry (valid while `stored`).
  bool stored = false;
  uint32_t stored_expiry_s = 0;
  Timestamp expires_at = Timestamp::Never();
  // A will waiting for its delay after the connection closed.
  MessageRef will;
  Timestamp will_at = Timestamp::Never();
  absl::flat_hash_map<std::string, SubscriptionRecord> subscriptions;
  Ring<Delivery> qos0;
  Ring<Delivery> qos12;
  uint64_t queued_bytes = 0;  // of qos12
  Ring<Inflight> inflight;
  size_t resend_cursor = SIZE_MAX;  // next in-flight entry to resend
  // The last `unsent` in-flight entries have their packet ids but were
  // never sent: QoS 2 deliveries waiting for a commit. The resend cursor
  // stays below them.
  size_t unsent = 0;
  std::vector<uint16_t> awaiting_pubrel;  // inbound QoS 2 (method A)
  uint16_t next_packet_id = 1;
  uint64_t next_sequence = 0;
  uint64_t match_epoch = 0;
  uint32_t match_slot = 0;
  Timestamp timer_at = Timestamp::Never();
};

ClientIdentity Identity(const Session& s) {
  ClientIdentity id;
  id.client_id = s.client_id;
  if (s.username) id.username = *s.username;
  return id;
}

struct Connection {
  enum class State : uint8_t { kFree, kAwaitConnect, kActive, kClosing };
  uint32_t index = 0;
  uint32_t generation = 0;
  State state = State::kFree;
  StreamDecoder decoder;
  TokenBucket message_rate;  // inbound PUBLISH packets (options.rate)
  TokenBucket byte_rate;     // inbound PUBLISH bytes
  Version version = Version::k311;
  Session* session = nullptr;
  Timestamp opened_at;
  Timestamp last_packet_at;
  Timestamp timer_at = Timestamp::Never();
  uint16_t keep_alive_s = 0;
  // What the client allows us (CONNECT properties).
  uint16_t receive_maximum_out = 0;
  uint32_t max_packet_out = kMaxPacketBytes;
  uint16_t topic_alias_max_out = 0;
  uint32_t connect_expiry_s = 0;  // for the DISCONNECT rule MQTT-3.14.2-2
  // The will from CONNECT, until the connection ends.
  MessageRef will;
  uint32_t will_delay_s = 0;
  // Topic aliases, theirs (index alias - 1) and ours: allocated on first
  // use, so the many connections that never use them stay small.
  struct Aliases {
    std::vector<std::string> in;
    absl::flat_hash_map<std::string, uint16_t> out;
    uint16_t next_out = 1;
  };
  std::unique_ptr<Aliases> aliases;
  Aliases& GetAliases() {
    if (!aliases) aliases = std::make_unique<Aliases>();
    return *aliases;
  }
  // Control packets and oversized headers waiting for PollTransmit.
  std::vector<std::byte> staged;
  size_t staged_pos = 0;
  // A tail to send after the staged header.
  MessageRef pending_message;
  std::span<const std::byte> pending_tail;
  bool in_ready = false;
  // Acks of this connection waiting in Broker::held_acks_ for a commit.
  uint32_t held_acks = 0;
  // Its session's next PUBLISH waits in Broker::publish_holds_.
  bool publish_hold_registered = false;
  // A CONNECT held by BrokerForwarder::ParkConnect: its frame (flags and
  // body), and the stream bytes that came after it.
  bool parked = false;
  uint8_t parked_flags = 0;
  uint32_t parked_size = 0;
  std::vector<std::byte> parked_connect;
  std::vector<std::byte> parked_input;

  void Reset() {
    state = State::kFree;
    decoder.Reset();
    session = nullptr;
    timer_at = Timestamp::Never();
    keep_alive_s = 0;
    receive_maximum_out = 0;
    max_packet_out = kMaxPacketBytes;
    topic_alias_max_out = 0;
    connect_expiry_s = 0;
    will.Reset();
    will_delay_s = 0;
    aliases.reset();
    staged.clear();
    if (staged.capacity() > 1024) staged.shrink_to_fit();
    staged_pos = 0;
    pending_message.Reset();
    pending_tail = {};
    in_ready = false;
    held_acks = 0;  // entries left in held_acks_ see a stale generation
    publish_hold_registered = false;
    parked = false;
    parked_connect = {};
    parked_input = {};
  }
};

}  // namespace internal

using internal::Connection;
using internal::Delivery;
using internal::Inflight;
using internal::kNeverExpires;
using internal::kNone;
using internal::Session;

struct Broker::Target {
  uint32_t session = 0;
  uint8_t qos = 0;
  bool retain = false;
  internal::IdList subscription_ids;
};

namespace {

Duration Seconds(uint64_t s) { return std::chrono::seconds(int64_t(s)); }

bool IsV5(Version v) { return v == Version::k5; }

// Seconds left until `at`, rounded up, for an outgoing Message Expiry
// Interval (MQTT-3.3.2-6).
uint32_t RemainingSeconds(Timestamp at, Timestamp now) {
  const int64_t ns = (at - now).count();
  if (ns <= 0) return 0;
  return uint32_t((ns + 999'999'999) / 1'000'000'000);
}

}  // namespace

// ---- Construction
// ------------------------------------------------------------

size_t Broker::SessionKeyHash::operator()(uint32_t index) const {
  return std::hash<std::string_view>{}((*sessions)[index]->client_id);
}
size_t Broker::SessionKeyHash::operator()(std::string_view id) const {
  return std::hash<std::string_view>{}(id);
}
bool Broker::SessionKeyEq::operator()(uint32_t a, uint32_t b) const {
  return a == b;
}
bool Broker::SessionKeyEq::operator()(uint32_t a, std::string_view b) const {
  return (*sessions)[a]->client_id == b;
}
bool Broker::SessionKeyEq::operator()(std::string_view a, uint32_t b) const {
  return a == (*sessions)[b]->client_id;
}

Broker::Broker(BrokerOptions options, BrokerAuthenticator* authenticator)
    : options_(std::move(options)),
      authenticator_(authenticator),
      retained_(std::make_unique<internal::RetainedStore>()),
      session_by_id_(0, SessionKeyHash{&sessions_}, SessionKeyEq{&sessions_}) {
  options_.maximum_qos = std::min<uint8_t>(options_.maximum_qos, 2);
  options_.max_packet_bytes =
      std::clamp<uint32_t>(options_.max_packet_bytes, 64, kMaxPacketBytes);
  if (options_.receive_maximum == 0) options_.receive_maximum = 1;
  if (options_.max_inflight_messages == 0) options_.max_inflight_messages = 1;
  // Bursts default to one second of the rate (at least one request; for
  // bytes at least one largest packet, which must always be able to pass).
  RateLimits& r = options_.rate;
  if (r.connection_burst <= 0)
    r.connection_burst = std::max(1.0, r.connections_per_s);
  if (r.message_burst <= 0) r.message_burst = std::max(1.0, r.messages_per_s);
  if (r.byte_burst <= 0) {
    r.byte_burst = std::max(r.bytes_per_s, double(options_.max_packet_bytes));
  }
  if (r.connections_per_s > 0) {
    for (TokenBucket& b : connection_rates_) {
      b = TokenBucket(r.connections_per_s, r.connection_burst);
    }
  }
}

Broker::~Broker() = default;

size_t Broker::retained_count() const { return retained_->size(); }

// ---- Connections
// -------------------------------------------------------------

absl::StatusOr<ConnectionId> Broker::OnConnectionOpened(Timestamp now,
                                                        uint32_t listener) {
  if (listener >= kMaxListeners) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mqtt broker: listener ", listener, " above ", kMaxListeners - 1));
  }
  if (open_connections_ >= options_.max_connections) {
    ++counters_.connections_refused_limit;
    return absl::ResourceExhaustedError(
        absl::StrCat("mqtt broker: max_connections (", options_.max_connections,
                     ") reached"));
  }
  // Issue 12 "Limits": connections per second per listener.
  if (!connection_rates_[listener].TryTake(1, now)) {
    ++counters_.connections_refused_rate;
    return absl::ResourceExhaustedError(
        "mqtt broker: new connections above rate.connections_per_s");
  }
  uint32_t index;
  if (!free_connections_.empty()) {
    index = free_connections_.back();
    free_connections_.pop_back();
  } else {
    index = uint32_t(connections_.size());
    connections_.push_back(std::make_unique<Connection>());
    connections_.back()->index = index;
  }
  Connection& c = *connections_[index];
  if (++c.generation == 0) c.generation = 1;
  c.state = Connection::State::kAwaitConnect;
  c.decoder.set_max_packet_bytes(options_.max_packet_bytes);
  c.opened_at = now;
  c.message_rate = options_.rate.messages_per_s > 0
                       ? TokenBucket(options_.rate.messages_per_s,
                                     options_.rate.message_burst)
                       : TokenBucket();
  c.byte_rate =
      options_.rate.bytes_per_s > 0
          ? TokenBucket(options_.rate.bytes_per_s, options_.rate.byte_burst)
          : TokenBucket();
  c.last_packet_at = now;
  ++open_connections_;
  ++counters_.connections_opened;
  // Slowloris: a CONNECT must complete within connect_timeout.
  Schedule(index, false, now + options_.connect_timeout);
  return ConnectionId{index, c.generation};
}

Connection* Broker::Lookup(ConnectionId id) const {
  if (id.index >= connections_.size()) return nullptr;
  Connection* c = connections_[id.index].get();
  if (c->generation != id.generation || c->state == Connection::State::kFree) {
    return nullptr;
  }
  return c;
}

void Broker::OnBytes(ConnectionId id, std::span<const std::byte> bytes,
                     Timestamp now) {
  Connection* c = Lookup(id);
  if (c == nullptr) return;
  counters_.bytes_received += bytes.size();
  ConsumeBytes(*c, bytes, now);
  RunDeferred(now);
}

void Broker::ConsumeBytes(Connection& c, std::span<const std::byte> bytes,
                          Timestamp now) {
  Frame frame;
  bool more = true;
  while (more && !c.parked &&
         (c.state == Connection::State::kAwaitConnect ||
          c.state == Connection::State::kActive)) {
    switch (c.decoder.Next(&bytes, &frame)) {
      case StreamDecoder::Result::kFrame:
        HandleFrame(c, frame, now);
        break;
      case StreamDecoder::Result::kNeedMore:
        more = false;
        break;
      case StreamDecoder::Result::kMalformed:
        Fail(c, ReasonCode::kMalformedPacket,
             "MQTT-1.5.5-1: bad Remaining Length", now);
        more = false;
        break;
      case StreamDecoder::Result::kTooLarge:
        ++counters_.packets_too_large;
        // §3.1.2.11.4 / §3.2.2.3.6: over our Maximum Packet Size.
        Fail(c, ReasonCode::kPacketTooLarge,
             "packet exceeds the Maximum Packet Size", now);
        more = false;
        break;
    }
  }
  if (c.parked && !bytes.empty()) {
    // The decoder stopped at the end of the CONNECT, so these are whole
    // stream bytes that ResumeConnect feeds in later, in order.
    if (c.parked_input.size() + bytes.size() > options_.max_parked_bytes) {
      c.parked = false;
      Fail(c, ReasonCode::kQuotaExceeded,
           "too many bytes behind a CONNECT held for its session", now);
      return;
    }
    c.parked_input.insert(c.parked_input.end(), bytes.begin(), bytes.end());
  }
}

void Broker::RunDeferred(Timestamp now) {
  while (!deferred_closes_.empty()) {
    const ConnectionId id = deferred_closes_.back();
    deferred_closes_.pop_back();
    Connection* c = Lookup(id);
    if (c != nullptr && c->state == Connection::State::kActive) {
      Fail(*c, ReasonCode::kQuotaExceeded,
           "the session's message queue is full", now);
    }
  }
}

void Broker::OnConnectionClosed(ConnectionId id, Timestamp now) {
  Connection* c = Lookup(id);
  if (c == nullptr) return;
  if (c->state == Connection::State::kActive) {
    // The network failed or the peer went away without DISCONNECT: the
    // will is published (MQTT-3.1.2-8).
    DetachSession(*c, /*publish_will=*/true, now);
  }
  c->Reset();
  free_connections_.push_back(c->index);
  --open_connections_;
  ++counters_.connections_closed;
  RunDeferred(now);
}

// ---- Output
// ------------------------------------------------------------------

namespace {

// One packet's changes to the store, as one group (BrokerStore::BeginGroup).
class StoreGroup {
 public:
  explicit StoreGroup(BrokerStore* store) : store_(store) {
    if (store_ != nullptr) store_->BeginGroup();
  }
  ~StoreGroup() {
    if (store_ != nullptr) store_->EndGroup();
  }
  StoreGroup(const StoreGroup&) = delete;
  StoreGroup& operator=(const StoreGroup&) = delete;

 private:
  BrokerStore* store_;
};

}  // namespace

void Broker::MarkReady(Connection& c) {
  if (c.in_ready || c.state == Connection::State::kFree) return;
  c.in_ready = true;
  ready_.push_back(c.index);
}

std::optional<ConnectionId> Broker::NextReady() {
  while (!ready_.empty()) {
    const uint32_t index = ready_.front();
    ready_.pop_front();
    Connection& c = *connections_[index];
    if (c.state == Connection::State::kFree || !c.in_ready) continue;
    return ConnectionId{index, c.generation};
  }
  return std::nullopt;
}

// Held QoS 2 first sends are waiting for a commit, and the next queued
// delivery is QoS 2 too: NextPublish gives it its packet id and record now
// and holds it behind them, so one commit releases a whole window. Taking
// one per commit capped a subscriber at one QoS 2 message per commit
// window (83 msg/s at --fsync=batch, 10 ms).
bool Broker::CanHoldBehind(const Connection& c, const Session& s) const {
  const size_t first_unsent = s.inflight.size() - s.unsent;
  return s.unsent > 0 && s.resend_cursor >= first_unsent &&
         s.inflight[first_unsent].hold_until > StoreDurable() &&
         !s.qos12.empty() && s.qos12.front().qos == 2 &&
         s.inflight.size() < c.receive_maximum_out &&
         (s.qos0.empty() || s.qos12.front().sequence < s.qos0.front().sequence);
}

bool Broker::HasOutput(ConnectionId id) const {
  Connection* c = Lookup(id);
  if (c == nullptr) return false;
  if (c->staged_pos < c->staged.size() || c->pending_message) return true;
  if (c->state != Connection::State::kActive || c->session == nullptr) {
    return false;
  }
  const Session& s = *c->session;
  const size_t first_unsent = s.inflight.size() - s.unsent;
  if (s.resend_cursor < first_unsent) return true;
  if (s.unsent > 0) {
    // Nothing goes before a held first send (NextPublish), but QoS 2 ones
    // may be held behind it.
    return s.inflight[first_unsent].hold_until <= StoreDurable() ||
           CanHoldBehind(*c, s);
  }
  return !s.qos0.empty() ||
         (!s.qos12.empty() && s.inflight.size() < c->receive_maximum_out);
}

size_t Broker::NextTransmitBound(ConnectionId id) const {
  Connection* c = Lookup(id);
  if (c == nullptr) return 0;
  if (c->staged_pos < c->staged.size() || c->pending_message) {
    return c->staged.size() - c->staged_pos + c->pending_tail.size();
  }
  if (c->state != Connection::State::kActive || c->session == nullptr) {
    return 0;
  }
  const Session& s = *c->session;
  // Fixed header, packet id and the per-subscriber properties (expiry,
  // alias, identifiers) fit in this much beyond topic and tail.
  auto bound = [](const Message& m, size_t ids) {
    return m.topic().size() + m.Tail(Version::k5).size() + 64 + 5 * ids;
  };
  size_t n = 0;
  const size_t first_unsent = s.inflight.size() - s.unsent;
  if (s.resend_cursor < first_unsent || s.unsent > 0) {
    const Inflight& f =
        s.inflight[s.resend_cursor < first_unsent ? s.resend_cursor
                                                  : first_unsent];
    return f.message ? bound(*f.message, f.subscription_ids.size()) : 16;
  }
  if (!s.qos0.empty()) {
    n = std::max(n, bound(*s.qos0.front().message,
                          s.qos0.front().subscription_ids.size()));
  }
  if (!s.qos12.empty()) {
    n = std::max(n, bound(*s.qos12.front().message,
                          s.qos12.front().subscription_ids.size()));
  }
  return n;
}

void Broker::StageControl(Connection& c, const Packet& packet) {
  const size_t size = EncodedSize(packet, c.version);
  if (size == 0) return;
  const size_t at = c.staged.size();
  c.staged.resize(at + size);
  Encode(packet, c.version, std::span<std::byte>(c.staged).subspan(at));
  MarkReady(c);
}

std::optional<Transmit> Broker::PollTransmit(ConnectionId id,
                                             std::span<std::byte> out,
                                             Timestamp now) {
  Connection* c = Lookup(id);
  if (c == nullptr || out.size() < kMinTransmitBytes) return std::nullopt;
  if (c->staged_pos < c->staged.size()) {
    const size_t n = std::min(out.size(), c->staged.size() - c->staged_pos);
    std::memcpy(out.data(), c->staged.data() + c->staged_pos, n);
    c->staged_pos += n;
    if (c->staged_pos == c->staged.size()) {
      c->staged.clear();
      c->staged_pos = 0;
      if (c->staged.capacity() > 4096) c->staged.shrink_to_fit();
    }
    counters_.bytes_polled += n;
    Transmit t;
    t.header_bytes = n;
    return t;
  }
  if (c->pending_message) {
    Transmit t;
    t.tail = c->pending_tail;
    t.message = std::move(c->pending_message);
    c->pending_tail = {};
    counters_.bytes_polled += t.tail.size();
    return t;
  }
  if (c->state == Connection::State::kActive && c->session != nullptr) {
    std::optional<Transmit> t = NextPublish(*c, *c->session, out, now);
    if (t) {
      counters_.bytes_polled += t->header_bytes + t->tail.size();
      return t;
    }
  }
  c->in_ready = false;
  return std::nullopt;
}

uint16_t Broker::NextPacketId(Session& s) {
  // MQTT-2.2.1-3: non-zero and not in use. In-flight ids are few compared
  // with 65535, so a collision check is a short scan.
  while (true) {
    const uint16_t id = s.next_packet_id;
    s.next_packet_id = uint16_t(id == 0xFFFF ? 1 : id + 1);
    bool used = false;
    for (size_t i = 0; i < s.inflight.size(); ++i) {
      if (s.inflight[i].packet_id == id) {
        used = true;
        break;
      }
    }
    if (!used) return id;
  }
}

std::optional<Transmit> Broker::NextPublish(Connection& c, Session& s,
                                            std::span<std::byte> out,
                                            Timestamp now) {
  const bool v5 = IsV5(c.version);
  // Each pass takes one resend or one queued delivery; a delivery that is
  // dropped (expired, too large) moves on to the next one.
  while (true) {
    Publish header;
    MessageRef message;
    internal::IdList ids;
    uint32_t alias_to_assign = 0;
    uint64_t store_key = 0;
    uint64_t inbound_sequence = 0;
    // A queued delivery gets its packet id and in-flight entry below; a
    // resend or a held first send has them already.
    bool fresh = false;
    const size_t first_unsent = s.inflight.size() - s.unsent;
    const bool hold_behind = CanHoldBehind(c, s);

    if (s.resend_cursor < first_unsent) {
      // MQTT-4.4.0-1: on a resumed session, resend every unacknowledged
      // PUBLISH (DUP set, MQTT-3.3.1-1) and PUBREL, in their original order.
      Inflight& f = s.inflight[s.resend_cursor++];
      if (s.resend_cursor >= first_unsent) s.resend_cursor = SIZE_MAX;
      if (f.state == Inflight::State::kAwaitPubcomp) {
        PubResponse rel;
        rel.type = PacketType::kPubrel;
        rel.packet_id = f.packet_id;
        const EncodeResult r = Encode(rel, c.version, out);
        if (!r.ok()) return std::nullopt;  // out is at least 64 bytes
        Transmit t;
        t.header_bytes = r.size;
        return t;
      }
      header.topic = f.message->topic();
      header.qos = f.qos;
      header.dup = true;
      header.retain = f.retain;
      header.packet_id = f.packet_id;
      message = f.message;
      ids = f.subscription_ids;
      store_key = f.store_key;
      ++counters_.publishes_resent;
    } else if (s.unsent > 0 && !hold_behind) {
      // A QoS 2 delivery whose records are not durable yet (see below).
      // Nothing after it goes first, so the connection keeps its order
      // (MQTT-4.6.0-6).
      Inflight& f = s.inflight[first_unsent];
      if (f.hold_until > StoreDurable()) {
        HoldPublish(c, f.hold_until);
        return std::nullopt;
      }
      --s.unsent;
      header.topic = f.message->topic();
      header.qos = f.qos;
      header.retain = f.retain;
      header.packet_id = f.packet_id;
      message = f.message;
      ids = f.subscription_ids;
      store_key = f.store_key;
    } else {
      fresh = true;
      const bool can12 =
          !s.qos12.empty() && s.inflight.size() < c.receive_maximum_out;
      const bool can0 = !s.qos0.empty();
      if (!can0 && !can12) return std::nullopt;
      // The older of the two queue heads goes first; QoS 0 is never held
      // back by a full in-flight window (§4.9).
      const bool take0 = can0 && (!can12 || s.qos0.front().sequence <
                                                s.qos12.front().sequence);
      internal::Ring<Delivery>& queue = take0 ? s.qos0 : s.qos12;
      Delivery d = std::move(queue.front());
      queue.pop_front();
      store_key = d.store_key;
      // Read now, not at routing: it is set after the routing pass.
      inbound_sequence = d.message->inbound_sequence_;
      if (!take0) {
        const uint64_t bytes =
            d.message->topic().size() + d.message->Tail(Version::k5).size();
        s.queued_bytes -= bytes;
        total_queued_bytes_ -= bytes;
      }
      // MQTT-3.3.2-5: an expired message is not delivered.
      if (d.message->expires_at() <= now) {
        ++counters_.dropped_expired;
        Unstore(store_key);
        continue;
      }
      header.topic = d.message->topic();
      header.qos = d.qos;
      header.retain = d.retain;
      // A delivery that may be held is sent later with its full topic, so
      // it takes no alias (the alias state would run ahead of the wire).
      const bool may_hold =
          d.qos == 2 && store_ != nullptr &&
          (hold_behind || store_key != 0 || inbound_sequence > StoreDurable());
      if (v5 && c.topic_alias_max_out > 0 && !may_hold) {
        Connection::Aliases& aliases = c.GetAliases();
        auto it = aliases.out.find(internal::AbslView(header.topic));
        if (it != aliases.out.end()) {
          header.properties.topic_alias = it->second;
          header.topic = {};  // §3.3.2.3.4: the alias stands for the topic
        } else if (aliases.next_out <= c.topic_alias_max_out) {
          alias_to_assign = aliases.next_out;
          header.properties.topic_alias = uint16_t(alias_to_assign);
        }
      }
      message = std::move(d.message);
      ids = std::move(d.subscription_ids);
      if (header.qos > 0) header.packet_id = NextPacketId(s);
    }

    if (v5) {
      if (!message->expires_at().is_never()) {
        header.properties.message_expiry_interval =
            RemainingSeconds(message->expires_at(), now);
      }
      header.properties.subscription_ids =
          SubscriptionIds(std::span<const uint32_t>(ids.data(), ids.size()));
    }
    const std::span<const std::byte> tail = message->Tail(c.version);
    const size_t tail_props = v5 ? message->properties().size() : 0;
    const size_t payload = tail.size() - tail_props;
    const size_t header_bytes =
        PublishHeaderSize(header, c.version, tail_props, payload);
    // MQTT-3.1.2-25: a packet over the client's Maximum Packet Size is
    // discarded as if it had been delivered.
    if (header_bytes == 0 || header_bytes + tail.size() > c.max_packet_out) {
      ++counters_.dropped_too_large;
      Unstore(store_key);
      if (!fresh) {
        // A resend that no longer fits: its in-flight entry goes too.
        for (size_t i = 0; i < s.inflight.size(); ++i) {
          if (s.inflight[i].packet_id != header.packet_id) continue;
          s.inflight.erase(i);
          if (s.resend_cursor != SIZE_MAX && i < s.resend_cursor) {
            --s.resend_cursor;
          }
          if (s.resend_cursor >= s.inflight.size() - s.unsent) {
            s.resend_cursor = SIZE_MAX;
          }
          break;
        }
      }
      continue;
    }
    if (alias_to_assign != 0) {
      c.aliases->out.emplace(std::string(message->topic()),
                             uint16_t(alias_to_assign));
      ++c.aliases->next_out;
    }
    if (fresh) {
      if (header.qos > 0) {
        Inflight f;
        f.message = message;
        f.packet_id = header.packet_id;
        f.qos = header.qos;
        f.retain = header.retain;
        f.state = header.qos == 1 ? Inflight::State::kAwaitPuback
                                  : Inflight::State::kAwaitPubrec;
        f.subscription_ids = ids;
        f.store_key = store_key;
        s.inflight.push_back(std::move(f));
        // Its packet id, so a restart resends it with DUP (MQTT-4.4.0-1).
        if (store_key != 0 && store_ != nullptr) {
          store_->MarkQueuedSent(store_key, header.packet_id);
        }
        // Exactly once across a crash (§4.3.3) with a store that commits
        // in batches: a QoS 2 PUBLISH leaves only once the store holds its
        // packet id for this session (MarkQueuedSent; a restart then
        // resends it with DUP and the same id, which the receiver
        // recognises) and the publisher's packet id (PutInboundQos2; a
        // restart then does not route the publisher's resend again). Sent
        // before that commit, a crash would have it delivered a second
        // time under a new packet id.
        if (header.qos == 2 && store_ != nullptr) {
          uint64_t needed =
              std::max(inbound_sequence,
                       store_key != 0 ? store_->written_sequence() : 0);
          if (hold_behind) {
            // Never before the ones it is held behind (MQTT-4.6.0-6).
            needed = std::max({needed, s.inflight[first_unsent].hold_until,
                               s.inflight[s.inflight.size() - 2].hold_until});
          }
          if (needed > store_->durable_sequence()) {
            s.inflight.back().hold_until = needed;
            ++s.unsent;
            ++counters_.publishes_held;
            HoldPublish(c, needed);
            continue;  // the next one may be held behind it (hold_behind)
          }
        }
      }
    }
    if (!header.dup) ++counters_.publishes_sent[header.qos];

    Transmit t;
    if (header_bytes <= out.size()) {
      EncodePublishHeader(header, c.version, tail_props, payload, out);
      t.header_bytes = header_bytes;
      t.tail = tail;
      t.message = std::move(message);
      return t;
    }
    // A header longer than the caller's buffer (a long topic): stage it
    // and hand out the tail after it.
    c.staged.resize(header_bytes);
    c.staged_pos = 0;
    EncodePublishHeader(header, c.version, tail_props, payload, c.staged);
    c.pending_tail = tail;
    c.pending_message = std::move(message);
    const size_t n = out.size();
    std::memcpy(out.data(), c.staged.data(), n);
    c.staged_pos = n;
    t.header_bytes = n;
    return t;
  }
}

std::optional<BrokerEvent> Broker::PollEvent() {
  if (events_.empty()) return std::nullopt;
  BrokerEvent e = events_.front();
  events_.pop_front();
  return e;
}

// ---- Frames
// ------------------------------------------------------------------

void Broker::HandleFrame(Connection& c, const Frame& frame, Timestamp now) {
  ++counters_.packets_received;
  // MQTT-3.1.2-22: any control packet from the client resets keep alive.
  c.last_packet_at = now;
  if (c.state == Connection::State::kAwaitConnect) {
    if (frame.type != PacketType::kConnect) {
      // MQTT-3.1.0-1: the first packet must be CONNECT; close without
      // a CONNACK.
      ++counters_.first_packet_not_connect;
      CloseConnection(c, ReasonCode::kProtocolError, false, now);
      return;
    }
    HandleConnect(c, frame, now);
    return;
  }
  const Version v = c.version;
  DecodeStatus status;
  switch (frame.type) {
    case PacketType::kConnect:
      // MQTT-3.1.0-2: a second CONNECT is a Protocol Error.
      Fail(c, ReasonCode::kProtocolError, "MQTT-3.1.0-2: second CONNECT", now);
      return;
    case PacketType::kPublish: {
      if (!AdmitPublish(c, frame.size_bytes, now)) return;
      Publish p;
      status = DecodePublish(frame, v, &p);
      if (status.ok()) {
        HandlePublish(c, p, now);
        return;
      }
      break;
    }
    case PacketType::kPuback:
    case PacketType::kPubrec:
    case PacketType::kPubrel:
    case PacketType::kPubcomp: {
      PubResponse r;
      status = DecodePubResponse(frame, v, &r);
      if (status.ok()) {
        HandlePubResponse(c, r, now);
        return;
      }
      break;
    }
    case PacketType::kSubscribe: {
      Subscribe s;
      status = DecodeSubscribe(frame, v, &s);
      if (status.ok()) {
        HandleSubscribe(c, s, now);
        return;
      }
      break;
    }
    case PacketType::kUnsubscribe: {
      Unsubscribe u;
      status = DecodeUnsubscribe(frame, v, &u);
      if (status.ok()) {
        HandleUnsubscribe(c, u);
        return;
      }
      break;
    }
    case PacketType::kPingreq: {
      Packet p;
      status = DecodePacket(frame, v, &p);
      if (status.ok()) {
        StageControl(c, Pingresp{});  // MQTT-3.12.4-1
        return;
      }
      break;
    }
    case PacketType::kDisconnect: {
      Disconnect d;
      status = DecodeDisconnect(frame, v, &d);
      if (status.ok()) {
        HandleDisconnect(c, d, now);
        return;
      }
      break;
    }
    case PacketType::kAuth:
      status = IsV5(v) ? DecodeStatus::ProtocolError(
                             "§4.12: AUTH without an authentication method")
                       : DecodeStatus::Malformed("3.1.1: packet type 15");
      break;
    case PacketType::kReserved:
      status = DecodeStatus::Malformed("§2.1.2: reserved packet type 0");
      break;
    default:
      // CONNACK, SUBACK, UNSUBACK, PINGRESP: server-to-client packets.
      status = DecodeStatus::ProtocolError(
          "§2.1.2: a server-to-client packet sent by the client");
      break;
  }
  Fail(c, status.code, status.detail, now);
}

bool Broker::AdmitPublish(Connection& c, uint32_t size_bytes, Timestamp now) {
  // Issue 12's policy: a client over its rate is disconnected, with the
  // MQTT 5 reason codes for it (§3.14.2.1: 0x96 Message rate too high,
  // 0x97 Quota exceeded); the message that tipped it over is not routed.
  // Only that connection is affected: buckets are per connection.
  if (!c.message_rate.TryTake(1, now)) {
    ++counters_.rate_limited_messages;
    Fail(c, ReasonCode::kMessageRateTooHigh,
         "PUBLISH rate above the broker's limit", now, false);
    return false;
  }
  if (!c.byte_rate.TryTake(double(size_bytes), now)) {
    ++counters_.rate_limited_bytes;
    Fail(c, ReasonCode::kQuotaExceeded, "PUBLISH bytes above the broker's rate",
         now, false);
    return false;
  }
  return true;
}

void Broker::Fail(Connection& c, ReasonCode code, const char* detail,
                  Timestamp now, bool count_as_error) {
  if (!count_as_error) {
    // The caller counted it under its own reason.
  } else if (code == ReasonCode::kMalformedPacket) {
    ++counters_.malformed_packets;
  } else {
    ++counters_.protocol_errors;
  }
  if (c.state == Connection::State::kActive && IsV5(c.version)) {
    // MQTT-4.13.1-1 / §4.13.2: a DISCONNECT with the reason code, and a
    // reason string when it fits the client's Maximum Packet Size.
    Disconnect d;
    d.reason = code;
    d.properties.reason_string = std::string_view(detail);
    if (EncodedSize(Packet(d), c.version) > c.max_packet_out) {
      d.properties.reason_string.reset();
    }
    StageControl(c, d);
  } else if (c.state == Connection::State::kAwaitConnect) {
    // A bad packet before the session exists: v5 clients get a CONNACK
    // with the reason code (MQTT-3.1.4-1, §4.13).
    if (c.version == Version::k5) {
      Connack ack;
      ack.code = uint8_t(code);
      ack.properties.reason_string = std::string_view(detail);
      StageControl(c, ack);
    }
  }
  CloseConnection(c, code, /*publish_will=*/true, now);
}

void Broker::CloseConnection(Connection& c, ReasonCode reason,
                             bool publish_will, Timestamp now) {
  if (c.state != Connection::State::kAwaitConnect &&
      c.state != Connection::State::kActive) {
    return;
  }
  DetachSession(c, publish_will, now);
  c.state = Connection::State::kClosing;
  // Output already staged (a CONNACK or DISCONNECT) still goes out.
  if (c.staged_pos < c.staged.size()) MarkReady(c);
  BrokerEvent e;
  e.kind = BrokerEvent::Kind::kClose;
  e.connection = ConnectionId{c.index, c.generation};
  e.reason = reason;
  events_.push_back(e);
}

// ---- CONNECT
// -----------------------------------------------------------------

Session* Broker::CreateSession(std::string_view client_id) {
  uint32_t index;
  if (!free_sessions_.empty()) {
    index = free_sessions_.back();
    free_sessions_.pop_back();
  } else {
    index = uint32_t(sessions_.size());
    sessions_.push_back(nullptr);
  }
  sessions_[index] = std::make_unique<Session>();
  Session& s = *sessions_[index];
  s.index = index;
  s.client_id = std::string(client_id);
  session_by_id_.insert(index);
  ++counters_.sessions_created;
  return &s;
}

void Broker::HandleConnect(Connection& c, const Frame& frame, Timestamp now,
                           bool resumed) {
  Connect p;
  p.version = Version(0);  // tells whether the decoder got as far as the level
  const DecodeStatus status = DecodeConnect(frame, &p);
  auto reject = [&](ReasonCode code, const char* detail) {
    ++counters_.connects_rejected;
    Connack ack;
    if (IsV5(c.version)) {
      ack.code = uint8_t(code);
      if (detail != nullptr) ack.properties.reason_string = detail;
    } else {
      ack.code = ConnackReturnCodeV311(code);
    }
    StageControl(c, ack);
    CloseConnection(c, code, false, now);
  };
  if (!status.ok()) {
    if (status.code == ReasonCode::kUnsupportedProtocolVersion) {
      // 3.1.1 MQTT-3.1.2-2 / 5.0 §3.1.2.2: refuse in the 3.1.1 format, which
      // every client version can read, then close.
      c.version = Version::k311;
      reject(status.code, nullptr);
      return;
    }
    if (status.code == ReasonCode::kMalformedPacket) {
      ++counters_.malformed_packets;
    } else {
      ++counters_.protocol_errors;
    }
    // MQTT-3.1.4-1: a malformed CONNECT closes the connection; a v5 client
    // is told why in a CONNACK (§4.13).
    if (p.version == Version::k5) {
      c.version = Version::k5;
      reject(status.code, status.detail);
    } else {
      ++counters_.connects_rejected;
      CloseConnection(c, status.code, false, now);
    }
    return;
  }
  c.version = p.version;
  const bool v5 = IsV5(p.version);
  if (p.will) {
    // MQTT-3.1.3-10 / §3.1.3.3: the will topic is a topic name.
    if (!IsValidTopicName(p.will->topic)) {
      reject(ReasonCode::kTopicNameInvalid, "will topic is not a topic name");
      return;
    }
    if (p.will->qos > options_.maximum_qos) {
      reject(ReasonCode::kQosNotSupported, "will QoS above Maximum QoS");
      return;
    }
    if (p.will->retain && !options_.retain_available) {
      reject(ReasonCode::kRetainNotSupported, "retain is not available");
      return;
    }
  }
  if (v5 && p.properties.authentication_method) {
    // §4.12: no enhanced authentication method is supported.
    reject(ReasonCode::kBadAuthenticationMethod,
           "no authentication method is supported");
    return;
  }
  if (authenticator_ != nullptr && !resumed) {
    const ReasonCode code = authenticator_->Authenticate(p);
    if (code != ReasonCode::kSuccess) {
      reject(code, nullptr);
      return;
    }
  }
  std::string assigned;
  std::string_view client_id = p.client_id;
  if (client_id.empty()) {
    // 3.1.1 MQTT-3.1.3-8: an empty id needs Clean Session 1.
    if (!v5 && !p.clean_start) {
      reject(ReasonCode::kClientIdentifierNotValid, nullptr);
      return;
    }
    // MQTT-3.1.3-6: assign a unique one (returned in CONNACK, MQTT-3.1.3-7).
    do {
      assigned =
          absl::StrCat(options_.assigned_client_id_prefix, ++assigned_ids_);
    } while (session_by_id_.contains(std::string_view(assigned)));
    client_id = assigned;
  } else if (forwarder_ != nullptr && !resumed &&
             forwarder_->ParkConnect(client_id, p.clean_start,
                                     ConnectionId{c.index, c.generation},
                                     now)) {
    // The session may be on another core: wait for it before it is looked
    // up here (multi_broker.h). The frame may live in the decoder's buffer.
    c.parked = true;
    c.parked_flags = frame.flags;
    c.parked_size = frame.size_bytes;
    c.parked_connect.assign(frame.body.begin(), frame.body.end());
    ++counters_.connects_parked;
    return;
  }

  // Session expiry (§3.1.2.11.2; 3.1.1 Clean Session semantics).
  uint32_t expiry_s;
  if (v5) {
    expiry_s = std::min(p.properties.session_expiry_interval.value_or(0),
                        options_.max_session_expiry_s);
  } else {
    expiry_s = p.clean_start ? 0 : options_.v311_session_expiry_s;
  }

  Session* s = nullptr;
  bool session_present = false;
  auto found = session_by_id_.find(client_id);
  if (found != session_by_id_.end()) {
    s = sessions_[*found].get();
    if (s->connection != kNone) {
      // MQTT-3.1.4-3: take over from the connection already using it.
      TakeOver(*connections_[s->connection], ReasonCode::kSessionTakenOver,
               now);
      // The old connection's session may have ended with it (expiry 0).
      found = session_by_id_.find(client_id);
      s = found == session_by_id_.end() ? nullptr : sessions_[*found].get();
    }
  }
  if (s != nullptr && p.clean_start) {
    // MQTT-3.1.2-4: Clean Start discards the existing session (its pending
    // will is published as the session ends).
    EndSession(*s, now);
    s = nullptr;
  }
  if (s != nullptr) {
    // MQTT-3.1.2-5 / MQTT-3.2.2-3: resume it.
    session_present = true;
    ++counters_.sessions_resumed;
    // MQTT-3.1.3-9: a reconnect before the will delay cancels the will.
    s->will.Reset();
    s->will_at = Timestamp::Never();
    s->expires_at = Timestamp::Never();
    s->resend_cursor = s->inflight.size() == s->unsent ? SIZE_MAX : 0;
  } else {
    s = CreateSession(client_id);
  }
  s->connection = c.index;
  s->expiry_interval_s = expiry_s;
  if (p.username) {
    s->username.emplace(*p.username);
  } else {
    s->username.reset();
  }
  SyncStoredSession(*s);
  c.session = s;
  c.state = Connection::State::kActive;
  c.connect_expiry_s = expiry_s;

  // What the client allows us.
  c.receive_maximum_out =
      std::min<uint16_t>(p.properties.receive_maximum.value_or(0xFFFF),
                         options_.max_inflight_messages);
  c.max_packet_out = p.properties.maximum_packet_size.value_or(kMaxPacketBytes);
  c.topic_alias_max_out =
      std::min<uint16_t>(p.properties.topic_alias_maximum.value_or(0),
                         options_.max_outgoing_topic_aliases);
  c.keep_alive_s = p.keep_alive_s;
  const bool override_keep_alive =
      options_.server_keep_alive_s != 0 &&
      (p.keep_alive_s == 0 || p.keep_alive_s > options_.server_keep_alive_s);
  if (override_keep_alive) c.keep_alive_s = options_.server_keep_alive_s;

  if (p.will) {
    // The will becomes a message now; it is routed if the connection ends
    // badly (MQTT-3.1.2-8).
    Properties fwd;
    const Properties& wp = p.will->properties;
    fwd.payload_format_indicator = wp.payload_format_indicator;
    fwd.content_type = wp.content_type;
    fwd.response_topic = wp.response_topic;
    fwd.correlation_data = wp.correlation_data;
    fwd.user_properties = wp.user_properties;
    scratch_.resize(PropertiesSize(fwd));
    WireWriter w(scratch_);
    EncodePropertyList(fwd, w);
    const Timestamp expires = wp.message_expiry_interval
                                  ? now + Seconds(*wp.message_expiry_interval)
                                  : Timestamp::Never();
    c.will = pool_.Create(p.will->topic, p.will->qos, p.will->retain, scratch_,
                          p.will->payload, expires, s->index);
    c.will_delay_s = wp.will_delay_interval.value_or(0);
  }

  Connack ack;
  ack.session_present = session_present;
  ack.code = 0;
  if (v5) {
    Properties& ap = ack.properties;
    if (expiry_s != p.properties.session_expiry_interval.value_or(0)) {
      ap.session_expiry_interval = expiry_s;  // §3.2.2.3.2
    }
    if (options_.receive_maximum != 0xFFFF) {
      ap.receive_maximum = options_.receive_maximum;
    }
    if (options_.maximum_qos < 2) ap.maximum_qos = options_.maximum_qos;
    if (!options_.retain_available) ap.retain_available = 0;
    if (options_.max_packet_bytes < kMaxPacketBytes) {
      ap.maximum_packet_size = options_.max_packet_bytes;
    }
    if (!assigned.empty()) ap.assigned_client_identifier = client_id;
    if (options_.topic_alias_maximum > 0) {
      ap.topic_alias_maximum = options_.topic_alias_maximum;
    }
    if (!options_.wildcard_subscription_available) {
      ap.wildcard_subscription_available = 0;
    }
    if (!options_.subscription_identifiers_available) {
      ap.subscription_identifier_available = 0;
    }
    if (!options_.shared_subscription_available) {
      ap.shared_subscription_available = 0;
    }
    if (override_keep_alive) ap.server_keep_alive = c.keep_alive_s;
  }
  StageControl(c, ack);  // MQTT-3.2.0-1: CONNACK is the first packet out
  ++counters_.connects_accepted;
  if (c.keep_alive_s > 0) {
    Schedule(c.index, false,
             now + Duration(int64_t(c.keep_alive_s) * 1'500'000'000));
  }
  if (HasOutput(ConnectionId{c.index, c.generation})) MarkReady(c);
}

// ---- PUBLISH from a client
// ---------------------------------------------------

void Broker::HandlePublish(Connection& c, const Publish& in, Timestamp now) {
  Session& s = *c.session;
  const bool v5 = IsV5(c.version);
  Publish p = in;
  if (v5) {
    // MQTT-3.3.4-6: a client's PUBLISH carries no Subscription Identifier.
    if (!p.properties.subscription_ids.empty()) {
      Fail(c, ReasonCode::kProtocolError,
           "MQTT-3.3.4-6: subscription identifier from a client", now);
      return;
    }
    if (p.properties.topic_alias) {
      const uint16_t alias = *p.properties.topic_alias;
      // §3.3.2.3.4: 0 or above our Topic Alias Maximum is invalid
      // (MQTT-3.3.2-8, MQTT-3.3.2-9).
      if (alias == 0 || alias > options_.topic_alias_maximum) {
        Fail(c, ReasonCode::kTopicAliasInvalid,
             "MQTT-3.3.2-9: topic alias out of range", now);
        return;
      }
      std::vector<std::string>& in = c.GetAliases().in;
      if (in.size() < alias) in.resize(alias);
      std::string& mapped = in[alias - 1];
      if (!p.topic.empty()) {
        mapped.assign(p.topic.data(), p.topic.size());
      } else if (mapped.empty()) {
        Fail(c, ReasonCode::kProtocolError, "§3.3.2.3.4: unknown topic alias",
             now);
        return;
      } else {
        p.topic = mapped;
      }
    } else if (p.topic.empty()) {
      Fail(c, ReasonCode::kProtocolError,
           "§3.3.2.3.4: empty topic without a topic alias", now);
      return;
    }
    if (p.properties.response_topic &&
        !IsValidTopicName(*p.properties.response_topic)) {
      // MQTT-3.3.2-14: the response topic is a topic name.
      Fail(c, ReasonCode::kProtocolError,
           "MQTT-3.3.2-14: wildcard in response topic", now);
      return;
    }
  }
  if (p.qos > options_.maximum_qos) {
    // MQTT-3.2.2-11: above the Maximum QoS we announced.
    Fail(c, ReasonCode::kQosNotSupported, "QoS above Maximum QoS", now);
    return;
  }
  if (p.retain && !options_.retain_available) {
    Fail(c, ReasonCode::kRetainNotSupported, "retain is not available", now);
    return;
  }
  ++counters_.publishes_received[p.qos];
  const uint64_t written_before = StoreWritten();

  if (p.qos == 2) {
    // QoS 2, method A (§4.3.3): the message goes on now and the packet id
    // is kept until PUBREL; a resent PUBLISH with that id is not routed
    // again.
    if (std::find(s.awaiting_pubrel.begin(), s.awaiting_pubrel.end(),
                  p.packet_id) != s.awaiting_pubrel.end()) {
      PubResponse rec;
      rec.type = PacketType::kPubrec;
      rec.packet_id = p.packet_id;
      // The first PUBREC may have been held and lost with an earlier
      // connection: wait for whatever is not durable yet.
      StageAck(c, rec, /*written_before=*/0);
      return;
    }
    // §4.9: more unacknowledged QoS 2 than our Receive Maximum is 0x93.
    if (s.awaiting_pubrel.size() >= options_.receive_maximum) {
      ++counters_.receive_maximum_exceeded;
      if (v5) {
        Fail(c, ReasonCode::kReceiveMaximumExceeded,
             "§4.9: more than Receive Maximum QoS 2 publications", now);
      } else {
        Fail(c, ReasonCode::kProtocolError, "too many QoS 2 in flight", now);
      }
      return;
    }
  }

  ReasonCode reason = ReasonCode::kSuccess;
  if (authenticator_ != nullptr &&
      !authenticator_->MayPublish(Identity(s), p.topic)) {
    ++counters_.publishes_denied;
    reason = ReasonCode::kNotAuthorized;
  } else {
    // Its retained message, queued records and packet id commit together,
    // before the ack below is staged.
    StoreGroup group(store_);
    // The properties a subscriber receives unchanged (MQTT-3.3.2-4, -15,
    // -16, -17, -18, -20), encoded once for every subscriber.
    Properties fwd;
    if (v5) {
      fwd.payload_format_indicator = p.properties.payload_format_indicator;
      fwd.content_type = p.properties.content_type;
      fwd.response_topic = p.properties.response_topic;
      fwd.correlation_data = p.properties.correlation_data;
      fwd.user_properties = p.properties.user_properties;
    }
    const size_t props = PropertiesSize(fwd);
    if (scratch_.size() < props) scratch_.resize(props);
    WireWriter w(std::span<std::byte>(scratch_).first(props));
    EncodePropertyList(fwd, w);
    const Timestamp expires =
        p.properties.message_expiry_interval
            ? now + Seconds(*p.properties.message_expiry_interval)
            : Timestamp::Never();
    MessageRef m =
        pool_.Create(p.topic, p.qos, p.retain,
                     std::span<const std::byte>(scratch_).first(props),
                     p.payload, expires, s.index);
    if (p.retain) StoreRetained(m, now);
    // The queued records below copy this exchange (store.h): a store that
    // commits apart from other Loops' keeps them only if its id is stored.
    const bool tagged = p.qos == 2 && s.stored && store_ != nullptr;
    if (tagged) store_->SetQueuedOrigin(s.client_id, p.packet_id);
    if (RouteMessage(m, now) == 0) {
      ++counters_.publishes_no_subscribers;
      if (v5 && forwarder_ == nullptr) {
        reason = ReasonCode::kNoMatchingSubscribers;
      }
    }
    // Before the packet id is written: the multi-Loop forwarder writes it
    // itself once the other Loops stored their copies (multi_broker.cc,
    // "Exactly once across Loops"), and its step is in written_sequence().
    if (forwarder_ != nullptr) forwarder_->OnClientPublish(m);
    if (p.qos == 2) {
      // Accepted (the refusals above do not depend on the routing). The
      // packet id is written after the queued records, not before: with
      // fsync=always each change commits alone, and a crash between an id
      // written first and the queued records would PUBREC the resend
      // without routing it, losing the message. The deliveries were only
      // queued; their first sends (NextPublish, after this returns) wait
      // for this sequence.
      s.awaiting_pubrel.push_back(p.packet_id);
      if (s.stored && store_ != nullptr) {
        store_->PutInboundQos2(s.client_id, p.packet_id);
        m->inbound_sequence_ = store_->written_sequence();
      }
    }
    if (tagged) store_->SetQueuedOrigin({}, 0);
  }
  if (p.qos == 1) {
    PubResponse ack;
    ack.type = PacketType::kPuback;
    ack.packet_id = p.packet_id;
    ack.reason = reason;
    StageAck(c, ack, written_before);
  } else if (p.qos == 2) {
    PubResponse rec;
    rec.type = PacketType::kPubrec;
    rec.packet_id = p.packet_id;
    rec.reason = reason;
    // A refused QoS 2 ends the exchange here (§4.3.3); an accepted one's
    // packet id was kept before routing.
    StageAck(c, rec, written_before);
  }
}

bool Broker::StoreRetained(const MessageRef& m, Timestamp now) {
  if (m->payload().empty()) {
    // MQTT-3.3.1-6 / -7: an empty retained message clears, and is not kept.
    retained_->Clear(m->topic());
    if (store_ != nullptr) store_->DeleteRetained(m->topic());
    return true;
  }
  if (!retained_->Set(m->topic(), m, options_.max_retained_messages)) {
    ++counters_.retained_dropped_limit;
    return false;
  }
  // Before the PUBACK is staged: with fsync=always it is on disk first.
  if (store_ != nullptr) store_->PutRetained(*m, now);
  return true;  // MQTT-3.3.1-5: replaces any earlier one
}

// ---- Routing
// -----------------------------------------------------------------

struct Broker::RouteVisitor {
  Broker* broker;
  const Message* message;
  uint32_t only_session = kNone;

  void OnEntry(const SubscriptionTree::Entry& e) {
    if (only_session != kNone && e.subscriber != only_session) return;
    Session& s = *broker->sessions_[e.subscriber];
    // MQTT-3.8.3-3: No Local skips the publisher's own session.
    if (e.options.no_local && message->publisher() == s.index) return;
    const uint8_t qos = std::min(message->qos(), e.options.max_qos);
    // MQTT-3.3.1-12 / -13: Retain As Published.
    const bool retain = e.options.retain_as_published && message->retain();
    std::vector<Target>& targets = broker->targets_;
    if (s.match_epoch != broker->route_epoch_) {
      s.match_epoch = broker->route_epoch_;
      s.match_slot = uint32_t(targets.size());
      targets.emplace_back();
      targets.back().session = s.index;
      targets.back().qos = qos;
      targets.back().retain = retain;
    } else {
      // Overlapping subscriptions: one copy at the highest QoS (3.1.1
      // MQTT-3.3.5-1, 5.0 MQTT-3.3.4-2) with every identifier
      // (MQTT-3.3.4-4).
      Target& t = targets[s.match_slot];
      t.qos = std::max(t.qos, qos);
      t.retain = t.retain || retain;
    }
    if (e.subscription_id != 0) {
      targets[s.match_slot].subscription_ids.push_back(e.subscription_id);
    }
  }

  void OnGroup(SubscriptionTree::SharedGroup& g) {
    // §4.8.2: one member of the group gets the message. Round robin over
    // the connected members; if none is connected, the next one queues it.
    // A message routed again for one session skips the groups: the group
    // had its turn when the message was first routed.
    const size_t n = g.members.size();
    if (n == 0 || only_session != kNone) return;
    // Members on other cores too: one core takes each message.
    if (broker->forwarder_ != nullptr &&
        !broker->forwarder_->DeliverToGroup(g.slot, *message)) {
      return;
    }
    size_t chosen = g.next % n;
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (g.next + k) % n;
      if (broker->sessions_[g.members[i].subscriber]->connection != kNone) {
        chosen = i;
        break;
      }
    }
    g.next = uint32_t((chosen + 1) % n);
    const SubscriptionTree::Entry& e = g.members[chosen];
    Target& t = broker->targets_.emplace_back();
    t.session = e.subscriber;
    t.qos = std::min(message->qos(), e.options.max_qos);
    t.retain = e.options.retain_as_published && message->retain();
    if (e.subscription_id != 0) t.subscription_ids.push_back(e.subscription_id);
  }
};

bool Broker::AddToTree(std::string_view filter, std::string_view group,
                       const SubscriptionTree::Entry& entry) {
  const bool replaced = tree_.Add(filter, group, entry);
  if (!group.empty() && !replaced && forwarder_ != nullptr) {
    SubscriptionTree::SharedGroup* g = tree_.FindGroup(filter, group);
    g->slot = forwarder_->OnSharedGroupMembers(group, filter, g->slot,
                                               g->members.size());
  }
  return replaced;
}

void Broker::RemoveFromTree(std::string_view filter, std::string_view group,
                            uint32_t subscriber) {
  if (group.empty() || forwarder_ == nullptr) {
    tree_.Remove(filter, group, subscriber);
    return;
  }
  const SubscriptionTree::SharedGroup* before = tree_.FindGroup(filter, group);
  const uint32_t slot = before != nullptr ? before->slot : 0;
  if (!tree_.Remove(filter, group, subscriber)) return;
  // The last member's removal erased the group.
  SubscriptionTree::SharedGroup* g = tree_.FindGroup(filter, group);
  const uint32_t kept = forwarder_->OnSharedGroupMembers(
      group, filter, slot, g != nullptr ? g->members.size() : 0);
  if (g != nullptr) g->slot = kept;
}

uint32_t Broker::RouteMessage(const MessageRef& message, Timestamp now,
                              uint32_t only_session) {
  ++route_epoch_;
  targets_.clear();
  RouteVisitor visitor{this, message.get(), only_session};
  tree_.Match(message->topic(), visitor);
  for (const Target& t : targets_) {
    Session& s = *sessions_[t.session];
    // Read access is checked per delivery, by topic: a subscription the
    // ACL allowed may still match topics this client may not read.
    if (authenticator_ != nullptr &&
        !authenticator_->MayReceive(Identity(s), message->topic())) {
      ++counters_.deliveries_denied;
      continue;
    }
    Enqueue(s, message, t.qos, t.retain,
            std::span<const uint32_t>(t.subscription_ids.data(),
                                      t.subscription_ids.size()),
            now);
  }
  return uint32_t(targets_.size());
}

void Broker::Enqueue(Session& s, const MessageRef& message, uint8_t qos,
                     bool retain, std::span<const uint32_t> subscription_ids,
                     Timestamp now) {
  const bool online = s.connection != kNone;
  if (qos == 0) {
    // QoS 0 is not kept for a disconnected session (MQTT 5.0 §3.1.2.4 lets
    // a server choose), and a slow subscriber loses it rather than
    // stalling anything.
    if (!online) {
      ++counters_.dropped_offline_qos0;
      return;
    }
    if (s.qos0.size() >= options_.max_queued_qos0) {
      ++counters_.dropped_qos0_queue_full;
      return;
    }
  } else {
    const uint64_t bytes =
        message->topic().size() + message->Tail(Version::k5).size();
    if (s.qos12.size() >= options_.max_queued_messages ||
        s.queued_bytes + bytes > options_.max_queued_bytes) {
      ++counters_.dropped_queue_full;
      if (options_.queue_full_policy == QueueFullPolicy::kDisconnect &&
          online) {
        // Closing here could end sessions in the middle of a routing pass;
        // it happens once the pass is over (RunDeferred).
        const Connection& c = *connections_[s.connection];
        deferred_closes_.push_back(ConnectionId{c.index, c.generation});
      }
      return;
    }
    if (total_queued_bytes_ + bytes > options_.max_total_queued_bytes) {
      ++counters_.dropped_total_queue_full;
      return;
    }
    s.queued_bytes += bytes;
    total_queued_bytes_ += bytes;
  }
  ++message->fanout_;
  Delivery d;
  d.message = message;
  d.sequence = s.next_sequence++;
  d.qos = qos;
  d.retain = retain;
  d.subscription_ids.assign(subscription_ids);
  if (qos > 0 && s.stored && store_ != nullptr) {
    // Before the publisher's PUBACK is staged (routing runs first).
    d.store_key = store_->PutQueued(s.client_id, *message, qos, retain,
                                    subscription_ids, now);
  }
  (qos == 0 ? s.qos0 : s.qos12).push_back(std::move(d));
  if (online) MarkReady(*connections_[s.connection]);
}

MessageRef Broker::PublishMessage(const InjectedMessage& in, Timestamp now) {
  const Timestamp expires = in.message_expiry_interval_s
                                ? now + Seconds(*in.message_expiry_interval_s)
                                : Timestamp::Never();
  MessageRef m = pool_.Create(in.topic, std::min<uint8_t>(in.qos, 2), in.retain,
                              in.properties, in.payload, expires, kNoPublisher);
  // Read by NextPublish when a delivery is first sent.
  m->inbound_sequence_ = in.hold_until_sequence;
  if (in.retain) StoreRetained(m, now);
  RouteMessage(m, now);
  RunDeferred(now);
  return m;
}

uint32_t Broker::RouteToSession(std::string_view client_id,
                                const MessageRef& message, Timestamp now) {
  auto it = session_by_id_.find(client_id);
  if (it == session_by_id_.end()) return 0;
  // MQTT-3.3.2-5: a message past its expiry interval is not delivered.
  if (!message->expires_at().is_never() && message->expires_at() <= now) {
    return 0;
  }
  const uint32_t routed = RouteMessage(message, now, *it);
  RunDeferred(now);
  return routed;
}

// ---- Acknowledgements
// --------------------------------------------------------

void Broker::HandlePubResponse(Connection& c, const PubResponse& r,
                               Timestamp now) {
  Session& s = *c.session;
  if (r.type == PacketType::kPubrel) {
    // §4.3.3: the client releases its QoS 2 message; complete it.
    auto it = std::find(s.awaiting_pubrel.begin(), s.awaiting_pubrel.end(),
                        r.packet_id);
    const uint64_t written_before = StoreWritten();
    PubResponse comp;
    comp.type = PacketType::kPubcomp;
    comp.packet_id = r.packet_id;
    if (it != s.awaiting_pubrel.end()) {
      *it = s.awaiting_pubrel.back();
      s.awaiting_pubrel.pop_back();
      if (s.stored && store_ != nullptr) {
        store_->DeleteInboundQos2(s.client_id, r.packet_id);
      }
    } else {
      comp.reason = ReasonCode::kPacketIdentifierNotFound;
    }
    StageAck(c, comp, written_before);
    return;
  }
  // Only packets that were sent can be acknowledged: the held ones
  // (`unsent`) are unknown to the client.
  const size_t sent = s.inflight.size() - s.unsent;
  size_t i = 0;
  for (; i < sent; ++i) {
    if (s.inflight[i].packet_id == r.packet_id) break;
  }
  if (i == sent) {
    ++counters_.acks_unknown;
    if (r.type == PacketType::kPubrec) {
      // §3.6.2.1: no such packet id: PUBREL 0x92 ends the exchange.
      PubResponse rel;
      rel.type = PacketType::kPubrel;
      rel.packet_id = r.packet_id;
      rel.reason = ReasonCode::kPacketIdentifierNotFound;
      StageControl(c, rel);
    }
    return;
  }
  Inflight& f = s.inflight[i];
  bool done = false;
  switch (r.type) {
    case PacketType::kPuback:
      done = f.state == Inflight::State::kAwaitPuback;
      break;
    case PacketType::kPubrec:
      if (f.state == Inflight::State::kAwaitPubrec ||
          f.state == Inflight::State::kAwaitPubcomp) {
        if (IsError(r.reason)) {
          done = true;  // §4.3.3: a PUBREC failure ends the exchange
        } else {
          f.state = Inflight::State::kAwaitPubcomp;
          f.message.Reset();  // PUBREL needs only the id
          // The client has the message: the store keeps only that PUBREL
          // is next, so a restart resumes with PUBREL (MQTT-4.4.0-1). The
          // PUBREL itself waits for that record's commit: once it is out the
          // PUBLISH must never be sent again (MQTT-4.3.3), and a restart from
          // an older record would send it.
          const uint64_t written_before = StoreWritten();
          if (f.store_key != 0 && store_ != nullptr) {
            store_->MarkQueuedReleased(f.store_key);
          }
          PubResponse rel;
          rel.type = PacketType::kPubrel;
          rel.packet_id = r.packet_id;
          StageAck(c, rel, written_before);
        }
      }
      break;
    case PacketType::kPubcomp:
      done = f.state == Inflight::State::kAwaitPubcomp;
      break;
    default:
      break;
  }
  if (!done) {
    ++counters_.acks_unknown;
    return;
  }
  Unstore(f.store_key);
  if (i == 0) {
    s.inflight.pop_front();
  } else {
    s.inflight.erase(i);
  }
  if (s.resend_cursor != SIZE_MAX) {
    if (i < s.resend_cursor) --s.resend_cursor;
    if (s.resend_cursor >= s.inflight.size() - s.unsent) {
      s.resend_cursor = SIZE_MAX;
    }
  }
  // The window opened: queued QoS 1/2 messages may go.
  if (!s.qos12.empty()) MarkReady(c);
}

// ---- SUBSCRIBE / UNSUBSCRIBE
// -------------------------------------------------

void Broker::HandleSubscribe(Connection& c, const Subscribe& sub,
                             Timestamp now) {
  Session& s = *c.session;
  const bool v5 = IsV5(c.version);
  const uint32_t sub_id = sub.properties.subscription_ids.first();
  const uint64_t written_before = StoreWritten();
  absl::InlinedVector<uint8_t, 8> codes;
  sub.entries.ForEach([&](const SubscribeEntry& entry) {
    ++counters_.subscribes;
    const uint8_t failure = v5 ? 0 : 0x80;  // v5 sets a specific code below
    auto fail = [&](ReasonCode code) {
      codes.push_back(v5 ? uint8_t(code) : failure);
    };
    std::string_view filter = entry.filter;
    std::string_view group;
    if (IsSharedFilter(filter)) {
      SharedFilter shared;
      if (!ParseSharedFilter(filter, &shared)) {
        fail(ReasonCode::kTopicFilterInvalid);  // MQTT-4.8.2-1 / -2
        return;
      }
      if (!options_.shared_subscription_available) {
        fail(ReasonCode::kSharedSubscriptionsNotSupported);
        return;
      }
      group = shared.group;
      filter = shared.filter;
    } else if (!IsValidTopicFilter(filter)) {
      fail(ReasonCode::kTopicFilterInvalid);  // §4.7
      return;
    }
    if (!options_.wildcard_subscription_available &&
        filter.find_first_of("+#") != std::string_view::npos) {
      fail(ReasonCode::kWildcardSubscriptionsNotSupported);
      return;
    }
    if (sub_id != 0 && !options_.subscription_identifiers_available) {
      fail(ReasonCode::kSubscriptionIdentifiersNotSupported);
      return;
    }
    if (authenticator_ != nullptr &&
        !authenticator_->MaySubscribe(Identity(s), entry.filter)) {
      ++counters_.subscribes_denied;
      fail(ReasonCode::kNotAuthorized);
      return;
    }
    SubscriptionTree::Entry e;
    e.subscriber = s.index;
    e.options = entry.options;
    e.options.max_qos = std::min(entry.options.max_qos, options_.maximum_qos);
    e.subscription_id = sub_id;
    const bool existed = AddToTree(filter, group, e);
    internal::SubscriptionRecord& record =
        s.subscriptions[std::string(entry.filter)];
    record.options = e.options;
    record.subscription_id = sub_id;
    if (s.stored && store_ != nullptr) {
      store_->PutSubscription(s.client_id, entry.filter, e.options, sub_id);
    }
    codes.push_back(e.options.max_qos);  // granted QoS
    // Retained messages (§3.3.1.3): Retain Handling 0 always, 1 only for a
    // new subscription, 2 never (MQTT-3.3.1-9/-10/-11); never for shared
    // subscriptions (§4.8.2).
    const uint8_t rh = entry.options.retain_handling;
    if (group.empty() && (rh == 0 || (rh == 1 && !existed))) {
      SendRetained(s, filter, e.options.max_qos, sub_id, now);
    }
  });
  Suback ack;
  ack.packet_id = sub.packet_id;
  ack.reason_codes = std::span<const uint8_t>(codes.data(), codes.size());
  // MQTT-3.8.4-1: one SUBACK; it is staged ahead of the retained messages
  // queued above, since staged bytes go out first. With a batch store it
  // may wait for the commit instead, and the retained messages go first,
  // which §3.8.4 allows (the Server MAY send matching PUBLISH packets before
  // the SUBACK).
  StageSuback(c, ack, written_before);
}

void Broker::SendRetained(Session& s, std::string_view filter,
                          uint8_t granted_qos, uint32_t subscription_id,
                          Timestamp now) {
  const uint32_t ids[1] = {subscription_id};
  retained_->Match(filter, [&](const MessageRef& m) {
    if (m->expires_at() <= now) {
      ++counters_.dropped_expired;
      return;
    }
    if (authenticator_ != nullptr &&
        !authenticator_->MayReceive(Identity(s), m->topic())) {
      ++counters_.deliveries_denied;
      return;
    }
    // A retained message sent for a new subscription has RETAIN 1.
    Enqueue(s, m, std::min(m->qos(), granted_qos), /*retain=*/true,
            subscription_id != 0 ? std::span<const uint32_t>(ids)
                                 : std::span<const uint32_t>(),
            now);
  });
}

void Broker::HandleUnsubscribe(Connection& c, const Unsubscribe& u) {
  Session& s = *c.session;
  const uint64_t written_before = StoreWritten();
  absl::InlinedVector<uint8_t, 8> codes;
  u.filters.ForEach([&](std::string_view text) {
    ++counters_.unsubscribes;
    std::string_view filter = text;
    std::string_view group;
    SharedFilter shared;
    if (IsSharedFilter(text) && ParseSharedFilter(text, &shared)) {
      group = shared.group;
      filter = shared.filter;
    }
    auto it = s.subscriptions.find(internal::AbslView(text));
    if (it == s.subscriptions.end()) {
      codes.push_back(uint8_t(ReasonCode::kNoSubscriptionExisted));
      return;
    }
    s.subscriptions.erase(it);
    RemoveFromTree(filter, group, s.index);
    if (s.stored && store_ != nullptr) {
      store_->DeleteSubscription(s.client_id, text);
    }
    codes.push_back(uint8_t(ReasonCode::kSuccess));
  });
  Unsuback ack;
  ack.packet_id = u.packet_id;
  if (IsV5(c.version)) {
    ack.reason_codes = std::span<const uint8_t>(codes.data(), codes.size());
  }
  // MQTT-3.10.4-4. Held like a SUBACK while the removal of a stored
  // session's subscription is not durable: a crash in the window would
  // bring the filter back after the client was told it was gone.
  StageUnsuback(c, ack, written_before);
}

// ---- DISCONNECT and session lifetime
// -----------------------------------------

void Broker::HandleDisconnect(Connection& c, const Disconnect& d,
                              Timestamp now) {
  bool publish_will = false;
  if (IsV5(c.version)) {
    if (d.properties.session_expiry_interval) {
      // MQTT-3.14.2-2: a session that had expiry 0 cannot gain one now.
      if (c.connect_expiry_s == 0 &&
          *d.properties.session_expiry_interval != 0) {
        Fail(c, ReasonCode::kProtocolError,
             "MQTT-3.14.2-2: session expiry set after CONNECT had 0", now);
        return;
      }
      c.session->expiry_interval_s = std::min(
          *d.properties.session_expiry_interval, options_.max_session_expiry_s);
      SyncStoredSession(*c.session);
    }
    // §3.14.2.1: 0x04 asks for the will; 0x00 discards it (MQTT-3.14.4-3).
    publish_will = d.reason == ReasonCode::kDisconnectWithWillMessage;
  }
  CloseConnection(c, ReasonCode::kSuccess, publish_will, now);
}

void Broker::DetachSession(Connection& c, bool publish_will, Timestamp now) {
  Session* sp = c.session;
  c.session = nullptr;
  c.pending_message.Reset();
  c.pending_tail = {};
  if (sp == nullptr) {
    c.will.Reset();
    return;
  }
  Session& s = *sp;
  s.connection = kNone;
  s.resend_cursor = SIZE_MAX;
  counters_.dropped_offline_qos0 += s.qos0.size();
  s.qos0.clear();
  s.qos0.ShrinkIfEmpty(16);
  if (publish_will && c.will) {
    // MQTT-3.1.2-8 / §3.1.3.2.2: at once, or after the Will Delay Interval
    // unless the session ends first or a new connection resumes it.
    if (c.will_delay_s == 0 || s.expiry_interval_s == 0) {
      s.will = std::move(c.will);
      PublishWill(s, now);
    } else {
      s.will = std::move(c.will);
      s.will_at = now + Seconds(c.will_delay_s);
      Schedule(s.index, true, s.will_at);
    }
  }
  c.will.Reset();
  if (s.expiry_interval_s == 0) {
    EndSession(s, now);  // §3.1.2.11.2: the session ends with the connection
    return;
  }
  if (s.expiry_interval_s != kNeverExpires) {
    s.expires_at = now + Seconds(s.expiry_interval_s);
    Schedule(s.index, true, s.expires_at);
  }
}

void Broker::PublishWill(Session& s, Timestamp now) {
  MessageRef will = std::move(s.will);
  s.will_at = Timestamp::Never();
  if (!will) return;
  // A will is a publish by its client: the same write access applies.
  if (authenticator_ != nullptr &&
      !authenticator_->MayPublish(Identity(s), will->topic())) {
    ++counters_.publishes_denied;
    return;
  }
  ++counters_.wills_published;
  if (will->retain()) StoreRetained(will, now);
  RouteMessage(will, now);
  if (forwarder_ != nullptr) forwarder_->OnClientPublish(will);
}

void Broker::TakeOver(Connection& old, ReasonCode reason, Timestamp now) {
  ++counters_.session_takeovers;
  // §4.13: a v5 client is told why; a 3.1.1 connection just closes.
  if (IsV5(old.version)) {
    Disconnect d;
    d.reason = reason;
    StageControl(old, d);
  }
  CloseConnection(old, reason, /*publish_will=*/true, now);
}

bool Broker::DisconnectClient(std::string_view client_id, ReasonCode reason,
                              Timestamp now) {
  auto found = session_by_id_.find(client_id);
  if (found == session_by_id_.end()) return false;
  Session* s = sessions_[*found].get();
  if (s->connection != kNone) {
    // MQTT-3.1.4-3, as in HandleConnect, for a connection on another core.
    TakeOver(*connections_[s->connection], reason, now);
  }
  // The session continues (or starts again) where the client is now.
  found = session_by_id_.find(client_id);
  if (found != session_by_id_.end()) EndSession(*sessions_[*found], now);
  RunDeferred(now);
  return true;
}

bool Broker::ResumeConnect(ConnectionId id, Timestamp now) {
  Connection* c = Lookup(id);
  if (c == nullptr || !c->parked ||
      c->state != Connection::State::kAwaitConnect) {
    return false;
  }
  c->parked = false;
  const std::vector<std::byte> body = std::move(c->parked_connect);
  std::vector<std::byte> input = std::move(c->parked_input);
  c->parked_connect = {};
  c->parked_input = {};
  Frame frame;
  frame.type = PacketType::kConnect;
  frame.flags = c->parked_flags;
  frame.body = body;
  frame.size_bytes = c->parked_size;
  // The same bytes decode to the same CONNECT; it was authenticated before
  // it was parked.
  HandleConnect(*c, frame, now, /*resumed=*/true);
  if (!input.empty()) ConsumeBytes(*c, input, now);
  RunDeferred(now);
  return true;
}

bool Broker::AbortParkedConnect(ConnectionId id, ReasonCode reason,
                                Timestamp now) {
  Connection* c = Lookup(id);
  if (c == nullptr || !c->parked ||
      c->state != Connection::State::kAwaitConnect) {
    return false;
  }
  c->parked = false;
  c->parked_connect = {};
  c->parked_input = {};
  ++counters_.session_takeovers;
  // No CONNACK went out, so there is no session to say anything on.
  CloseConnection(*c, reason, false, now);
  return true;
}

std::optional<StoredSession> Broker::ExportSession(std::string_view client_id,
                                                   ReasonCode reason,
                                                   Timestamp now) {
  auto found = session_by_id_.find(client_id);
  if (found == session_by_id_.end()) return std::nullopt;
  Session* sp = sessions_[*found].get();
  if (sp->connection != kNone) {
    // MQTT-3.1.4-3, as DisconnectClient does.
    TakeOver(*connections_[sp->connection], reason, now);
    found = session_by_id_.find(client_id);
    if (found == session_by_id_.end()) {
      RunDeferred(now);
      return std::nullopt;  // expiry 0: it ended with the connection
    }
    sp = sessions_[*found].get();
  }
  Session& s = *sp;
  StoredSession out;
  out.client_id = s.client_id;
  out.expiry_interval_s = s.expiry_interval_s;
  for (const auto& [text, record] : s.subscriptions) {
    StoredSubscription& sub = out.subscriptions.emplace_back();
    sub.filter = text;
    sub.options = record.options;
    sub.subscription_id = record.subscription_id;
  }
  auto copy_message = [&](const Message& m, StoredRetained* r) {
    r->topic = std::string(m.topic());
    r->qos = m.qos();
    r->properties.assign(m.properties().begin(), m.properties().end());
    r->payload.assign(m.payload().begin(), m.payload().end());
    if (!m.expires_at().is_never()) {
      const int64_t left_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(m.expires_at() -
                                                                now)
              .count();
      if (left_ms <= 0) return false;
      r->expires_in_ms = uint64_t(left_ms);
    }
    return true;
  };
  auto delivery = [](uint8_t qos, bool retain,
                     std::span<const uint32_t> subscription_ids) {
    StoredQueued q;
    q.qos = qos;
    q.retain = retain;
    q.subscription_ids.assign(subscription_ids.begin(), subscription_ids.end());
    return q;
  };
  const size_t sent = s.inflight.size() - s.unsent;
  for (size_t i = 0; i < s.inflight.size(); ++i) {
    const Inflight& f = s.inflight[i];
    StoredQueued q = delivery(f.qos, f.retain, f.subscription_ids.span());
    if (f.state == Inflight::State::kAwaitPubcomp) {
      q.packet_id = f.packet_id;  // only PUBREL is left (MQTT-4.3.3-*)
      q.released = true;
    } else {
      // One that never went out (held for a commit) is just queued there.
      if (i < sent) q.packet_id = f.packet_id;
      if (!f.message || !copy_message(*f.message, &q.message)) {
        ++counters_.dropped_expired;
        Unstore(f.store_key);
        continue;
      }
    }
    q.key = f.store_key;
    out.queued.push_back(std::move(q));
  }
  for (size_t i = 0; i < s.qos12.size(); ++i) {
    const Delivery& d = s.qos12[i];
    StoredQueued q = delivery(d.qos, d.retain, d.subscription_ids.span());
    if (!copy_message(*d.message, &q.message)) {
      ++counters_.dropped_expired;
      Unstore(d.store_key);
      continue;
    }
    q.key = d.store_key;
    out.queued.push_back(std::move(q));
  }
  out.awaiting_pubrel = s.awaiting_pubrel;
  out.stored = s.stored && store_ != nullptr;
  counters_.dropped_offline_qos0 += s.qos0.size();
  // MQTT-3.1.3-9: the reconnect this session moves for cancels its will.
  s.will.Reset();
  s.will_at = Timestamp::Never();
  EndSession(s, now, /*drop_stored=*/false);
  ++counters_.sessions_exported;
  RunDeferred(now);
  return out;
}

absl::Status Broker::ImportSession(const StoredSession& session,
                                   Timestamp now) {
  // A stored session's rows are in the database this core's store writes
  // too (the multi-Loop broker): taken over, not written twice.
  absl::Status status = AddSession(
      session, now, /*from_store=*/session.stored && store_ != nullptr);
  if (status.ok()) ++counters_.sessions_imported;
  return status;
}

void Broker::EndSession(Session& s, Timestamp now, bool drop_stored) {
  if (s.will) PublishWill(s, now);  // the session ends first (§3.1.3.2.2)
  if (drop_stored && s.stored && store_ != nullptr) {
    store_->DeleteSession(s.client_id);
  }
  for (const auto& [text, record] : s.subscriptions) {
    SharedFilter shared;
    if (IsSharedFilter(text) && ParseSharedFilter(text, &shared)) {
      RemoveFromTree(shared.filter, shared.group, s.index);
    } else {
      RemoveFromTree(text, "", s.index);
    }
  }
  total_queued_bytes_ -= s.queued_bytes;
  session_by_id_.erase(session_by_id_.find(std::string_view(s.client_id)));
  const uint32_t index = s.index;
  sessions_[index].reset();  // frees queues, in-flight messages, maps
  free_sessions_.push_back(index);
}

// ---- Durable state
// ------------------------------------------------------------

uint64_t Broker::StoreWritten() const {
  return store_ != nullptr ? store_->written_sequence() : 0;
}

void Broker::StageAck(Connection& c, const PubResponse& ack,
                      uint64_t written_before) {
  if (store_ != nullptr) {
    // Group commit: an ack whose packet changed the store waits for the
    // commit that makes the change durable (the issue's guarantee: a
    // PUBACK or PUBCOMP that went out is never lost). An ack behind a held
    // one waits too, so acks leave in the order their packets came
    // (MQTT-4.6.0-2..-4).
    const uint64_t written = store_->written_sequence();
    if (c.held_acks > 0 ||
        (written != written_before && store_->durable_sequence() < written)) {
      // `written` never decreases, so held_acks_ stays sorted by it.
      held_acks_.push_back(HeldAck{ConnectionId{c.index, c.generation}, written,
                                   ack.type, ack.reason, ack.packet_id});
      ++c.held_acks;
      ++counters_.acks_held;
      return;
    }
  }
  StageControl(c, ack);
}

bool Broker::HoldCodedAck(Connection& c, PacketType type, uint16_t packet_id,
                          std::span<const uint8_t> codes,
                          uint64_t written_before) {
  if (store_ == nullptr) return false;
  const uint64_t written = store_->written_sequence();
  if (c.held_acks == 0 &&
      (written == written_before || store_->durable_sequence() >= written)) {
    return false;
  }
  HeldAck h{ConnectionId{c.index, c.generation}, written, type,
            ReasonCode::kSuccess, packet_id};
  h.codes_offset = static_cast<uint32_t>(held_codes_.size());
  h.codes_count = static_cast<uint32_t>(codes.size());
  held_codes_.insert(held_codes_.end(), codes.begin(), codes.end());
  held_acks_.push_back(h);
  ++held_subacks_;
  ++c.held_acks;
  ++counters_.acks_held;
  return true;
}

void Broker::StageSuback(Connection& c, const Suback& ack,
                         uint64_t written_before) {
  if (HoldCodedAck(c, PacketType::kSuback, ack.packet_id, ack.reason_codes,
                   written_before)) {
    return;
  }
  StageControl(c, ack);
}

void Broker::StageUnsuback(Connection& c, const Unsuback& ack,
                           uint64_t written_before) {
  if (HoldCodedAck(c, PacketType::kUnsuback, ack.packet_id, ack.reason_codes,
                   written_before)) {
    return;
  }
  StageControl(c, ack);
}

void Broker::OnStoreDurable(Timestamp) {
  if (store_ == nullptr) return;
  const uint64_t durable = store_->durable_sequence();
  while (!held_acks_.empty() && held_acks_.front().sequence <= durable) {
    const HeldAck h = held_acks_.front();
    held_acks_.pop_front();
    if (h.type == PacketType::kSuback || h.type == PacketType::kUnsuback) {
      --held_subacks_;
    }
    Connection* c = Lookup(h.connection);
    if (c == nullptr) continue;  // closed: the client sends it again
    --c->held_acks;
    if (c->state != Connection::State::kActive) continue;
    if (h.type == PacketType::kSuback) {
      Suback ack;
      ack.packet_id = h.packet_id;
      ack.reason_codes = std::span<const uint8_t>(
          held_codes_.data() + h.codes_offset, h.codes_count);
      StageControl(*c, ack);
      continue;
    }
    if (h.type == PacketType::kUnsuback) {
      Unsuback ack;
      ack.packet_id = h.packet_id;
      ack.reason_codes = std::span<const uint8_t>(
          held_codes_.data() + h.codes_offset, h.codes_count);
      StageControl(*c, ack);
      continue;
    }
    PubResponse ack;
    ack.type = h.type;
    ack.packet_id = h.packet_id;
    ack.reason = h.reason;
    StageControl(*c, ack);
  }
  for (size_t i = 0; i < publish_holds_.size();) {
    const PublishHold h = publish_holds_[i];
    if (h.sequence > durable) {
      ++i;
      continue;
    }
    publish_holds_[i] = publish_holds_.back();
    publish_holds_.pop_back();
    Connection* c = Lookup(h.connection);
    if (c == nullptr) continue;  // closed: the next connection registers
    c->publish_hold_registered = false;
    MarkReady(*c);
  }
  // The codes of released SUBACKs are dropped once none is held (held
  // SUBACKs are rare: a subscription change of a stored session).
  if (held_subacks_ == 0) held_codes_.clear();
  held_acks_.ShrinkIfEmpty(1024);
}

uint64_t Broker::StoreDurable() const {
  return store_ != nullptr ? store_->durable_sequence() : 0;
}

void Broker::HoldPublish(Connection& c, uint64_t sequence) {
  if (c.publish_hold_registered) return;
  c.publish_hold_registered = true;
  publish_holds_.push_back(
      PublishHold{ConnectionId{c.index, c.generation}, sequence});
}

void Broker::Unstore(uint64_t key) {
  if (key != 0 && store_ != nullptr) store_->DeleteQueued(key);
}

void Broker::SyncStoredSession(Session& s) {
  if (store_ == nullptr) return;
  if (s.expiry_interval_s == 0) {
    // §3.1.2.11.2: it ends with the connection, so there is nothing to keep.
    if (s.stored) store_->DeleteSession(s.client_id);
    s.stored = false;
    return;
  }
  if (s.stored && s.stored_expiry_s == s.expiry_interval_s) return;
  store_->PutSession(s.client_id, s.expiry_interval_s);
  if (!s.stored) {
    for (const auto& [text, record] : s.subscriptions) {
      store_->PutSubscription(s.client_id, text, record.options,
                              record.subscription_id);
    }
    for (uint16_t id : s.awaiting_pubrel)
      store_->PutInboundQos2(s.client_id, id);
  }
  s.stored = true;
  s.stored_expiry_s = s.expiry_interval_s;
}

absl::Status Broker::RestoreSession(const StoredSession& stored,
                                    Timestamp now) {
  return AddSession(stored, now, /*from_store=*/true);
}

absl::Status Broker::AddSession(const StoredSession& stored, Timestamp now,
                                bool from_store) {
  if (stored.expiry_interval_s == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("stored session '", stored.client_id, "' has expiry 0"));
  }
  if (session_by_id_.contains(std::string_view(stored.client_id))) {
    return absl::AlreadyExistsError(
        absl::StrCat("session '", stored.client_id, "' restored twice"));
  }
  for (const StoredSubscription& sub : stored.subscriptions) {
    SharedFilter shared;
    const bool ok = IsSharedFilter(sub.filter)
                        ? ParseSharedFilter(sub.filter, &shared)
                        : IsValidTopicFilter(sub.filter);
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("stored session '", stored.client_id,
                       "': invalid filter '", sub.filter, "'"));
    }
  }
  Session& s = *CreateSession(stored.client_id);
  s.expiry_interval_s =
      std::min(stored.expiry_interval_s, options_.max_session_expiry_s);
  if (from_store) {
    s.stored = true;
    s.stored_expiry_s = stored.expiry_interval_s;
  }
  for (const StoredSubscription& sub : stored.subscriptions) {
    SubscriptionTree::Entry e;
    e.subscriber = s.index;
    e.options = sub.options;
    e.options.max_qos = std::min(sub.options.max_qos, options_.maximum_qos);
    e.subscription_id = sub.subscription_id;
    SharedFilter shared;
    if (IsSharedFilter(sub.filter) && ParseSharedFilter(sub.filter, &shared)) {
      AddToTree(shared.filter, shared.group, e);
    } else {
      AddToTree(sub.filter, "", e);
    }
    internal::SubscriptionRecord& record = s.subscriptions[sub.filter];
    record.options = e.options;
    record.subscription_id = sub.subscription_id;
  }
  for (const StoredQueued& q : stored.queued) {
    const StoredRetained& r = q.message;
    const Timestamp expires =
        r.expires_in_ms == 0
            ? Timestamp::Never()
            : now + std::chrono::milliseconds(int64_t(r.expires_in_ms));
    if (q.packet_id != 0) {
      // Sent before the restart and not acknowledged: in flight again, so
      // the resumed session resends it with DUP and the same packet id,
      // or its PUBREL (MQTT-4.4.0-1). The store keeps them in send order.
      Inflight f;
      f.packet_id = q.packet_id;
      f.qos = std::clamp<uint8_t>(q.qos, 1, 2);
      f.retain = q.retain;
      if (q.released && f.qos == 2) {
        f.state = Inflight::State::kAwaitPubcomp;  // only PUBREL is left
      } else {
        f.state = f.qos == 1 ? Inflight::State::kAwaitPuback
                             : Inflight::State::kAwaitPubrec;
        f.message =
            pool_.Create(r.topic, std::min<uint8_t>(r.qos, 2), false,
                         r.properties, r.payload, expires, kNoPublisher);
        ++f.message->fanout_;
      }
      f.subscription_ids.assign(q.subscription_ids);
      f.store_key = q.key;
      s.inflight.push_back(std::move(f));
      continue;
    }
    Delivery d;
    d.message = pool_.Create(r.topic, std::min<uint8_t>(r.qos, 2), false,
                             r.properties, r.payload, expires, kNoPublisher);
    const uint64_t bytes =
        d.message->topic().size() + d.message->Tail(Version::k5).size();
    // Accounted as Enqueue does; limits are not applied to what was
    // already accepted before the restart.
    s.queued_bytes += bytes;
    total_queued_bytes_ += bytes;
    ++d.message->fanout_;
    d.sequence = s.next_sequence++;
    d.qos = std::clamp<uint8_t>(q.qos, 1, 2);
    d.retain = q.retain;
    d.subscription_ids.assign(q.subscription_ids);
    d.store_key = q.key;
    s.qos12.push_back(std::move(d));
  }
  for (uint16_t id : stored.awaiting_pubrel) {
    if (std::find(s.awaiting_pubrel.begin(), s.awaiting_pubrel.end(), id) ==
        s.awaiting_pubrel.end()) {
      s.awaiting_pubrel.push_back(id);
    }
  }
  // Disconnected: it expires unless a client resumes it (DetachSession's
  // rule, from load time).
  if (s.expiry_interval_s != kNeverExpires) {
    s.expires_at = now + Seconds(s.expiry_interval_s);
    Schedule(s.index, true, s.expires_at);
  }
  return absl::OkStatus();
}

bool Broker::RestoreRetained(const StoredRetained& r, Timestamp now) {
  if (r.payload.empty() || !IsValidTopicName(r.topic)) {
    ++counters_.retained_dropped_limit;
    return false;
  }
  const Timestamp expires =
      r.expires_in_ms == 0
          ? Timestamp::Never()
          : now + std::chrono::milliseconds(int64_t(r.expires_in_ms));
  MessageRef m = pool_.Create(r.topic, std::min<uint8_t>(r.qos, 2),
                              /*retain=*/true, r.properties, r.payload, expires,
                              kNoPublisher);
  if (!retained_->Set(m->topic(), m, options_.max_retained_messages)) {
    ++counters_.retained_dropped_limit;
    return false;
  }
  return true;
}

// ---- Timers
// ------------------------------------------------------------------

void Broker::Schedule(uint32_t index, bool is_session, Timestamp at) {
  if (at.is_never()) return;
  Timestamp& current =
      is_session ? sessions_[index]->timer_at : connections_[index]->timer_at;
  // One live heap entry per object: only an earlier deadline adds one; a
  // later one is found when the earlier entry fires.
  if (at >= current) return;
  current = at;
  timers_.push_back(TimerEntry{at, index, is_session});
  std::push_heap(timers_.begin(), timers_.end(), std::greater<>());
}

Timestamp Broker::NextDeadline() const {
  return timers_.empty() ? Timestamp::Never() : timers_.front().at;
}

void Broker::OnTimeout(Timestamp now) {
  while (!timers_.empty() && timers_.front().at <= now) {
    std::pop_heap(timers_.begin(), timers_.end(), std::greater<>());
    const TimerEntry e = timers_.back();
    timers_.pop_back();
    if (e.is_session) {
      if (e.index >= sessions_.size() || !sessions_[e.index]) continue;
      Session& s = *sessions_[e.index];
      if (s.timer_at != e.at) continue;  // superseded
      s.timer_at = Timestamp::Never();
      CheckSessionTimers(s, now);
    } else {
      Connection& c = *connections_[e.index];
      if (c.timer_at != e.at) continue;
      c.timer_at = Timestamp::Never();
      CheckConnectionTimers(c, now);
    }
  }
  RunDeferred(now);
}

void Broker::CheckConnectionTimers(Connection& c, Timestamp now) {
  if (c.state == Connection::State::kAwaitConnect) {
    const Timestamp deadline = c.opened_at + options_.connect_timeout;
    if (now >= deadline) {
      ++counters_.connect_timeouts;
      CloseConnection(c, ReasonCode::kMaximumConnectTime, false, now);
    } else {
      Schedule(c.index, false, deadline);
    }
    return;
  }
  if (c.state != Connection::State::kActive || c.keep_alive_s == 0) return;
  // MQTT-3.1.2-22 (3.1.1 MQTT-3.1.2-24): one and a half keep alive periods.
  const Timestamp deadline =
      c.last_packet_at + Duration(int64_t(c.keep_alive_s) * 1'500'000'000);
  if (now >= deadline) {
    ++counters_.keepalive_timeouts;
    if (IsV5(c.version)) {
      Disconnect d;
      d.reason = ReasonCode::kKeepAliveTimeout;
      StageControl(c, d);
    }
    CloseConnection(c, ReasonCode::kKeepAliveTimeout, true, now);
  } else {
    Schedule(c.index, false, deadline);
  }
}

void Broker::CheckSessionTimers(Session& s, Timestamp now) {
  if (s.will && now >= s.will_at) PublishWill(s, now);
  if (s.connection == kNone && now >= s.expires_at) {
    ++counters_.sessions_expired;
    EndSession(s, now);
    return;
  }
  Schedule(s.index, true, std::min(s.will_at, s.expires_at));
}

// ---- Control
// -----------------------------------------------------------------

void Broker::Shutdown(Timestamp now) {
  for (auto& cp : connections_) {
    Connection& c = *cp;
    if (c.state == Connection::State::kActive && IsV5(c.version)) {
      Disconnect d;
      d.reason = ReasonCode::kServerShuttingDown;
      StageControl(c, d);
    }
    CloseConnection(c, ReasonCode::kServerShuttingDown, false, now);
  }
  deferred_closes_.clear();
}

std::optional<Broker::SessionInfo> Broker::GetSessionInfo(
    std::string_view client_id) const {
  auto it = session_by_id_.find(client_id);
  if (it == session_by_id_.end()) return std::nullopt;
  const Session& s = *sessions_[*it];
  SessionInfo info;
  info.connected = s.connection != kNone;
  info.queued = s.qos0.size() + s.qos12.size();
  info.inflight = s.inflight.size();
  info.subscriptions = s.subscriptions.size();
  info.queued_bytes = s.queued_bytes;
  return info;
}

}  // namespace ringlab::mqtt
