// Broker: a sans-io MQTT 3.1.1 and 5.0 broker core. It never touches a
// socket, a clock or a thread: a driver feeds it bytes and time and polls it
// for bytes to send and for connections to close.
//
//   Broker broker(BrokerOptions{});
//   // A TCP connection was accepted:
//   absl::StatusOr<ConnectionId> c = broker.OnConnectionOpened(now);
//   // Bytes arrived (any split; the span lives for the call only):
//   broker.OnBytes(*c, bytes, now);
//   // Send whatever is ready, per connection:
//   while (std::optional<ConnectionId> ready = broker.NextReady()) {
//     while (std::optional<Transmit> t = broker.PollTransmit(*ready, buf, now))
//     {
//       send(buf[0, t->header_bytes)), then send(t->tail)  // tail: shared
//     }
//   }
//   while (std::optional<BrokerEvent> e = broker.PollEvent()) {
//     // kClose: send what was polled, close the socket, then
//     broker.OnConnectionClosed(e->connection, now);
//   }
//   // Timers: wake at NextDeadline() and call OnTimeout(now).
//
// What it implements (MQTT 5.0 and 3.1.1 OASIS standards):
// - CONNECT handling: first packet must be CONNECT (MQTT-3.1.0-1), a second
//   one is a Protocol Error (MQTT-3.1.0-2), a connect timeout against
//   slowloris clients, clean start and resumed sessions (MQTT-3.1.2-4/-5),
//   session takeover (MQTT-3.1.4-3), assigned client identifiers
//   (MQTT-3.1.3-6/-7), server keep alive, session expiry.
// - Routing through a topic trie (topic_tree.h) with the '$' rule
//   (MQTT-4.7.2-1); overlapping subscriptions deliver once at the maximum
//   granted QoS (3.1.1 MQTT-3.3.5-1, 5.0 MQTT-3.3.4-2) with every matching
//   subscription identifier (MQTT-3.3.4-3/-4); shared subscriptions
//   (§4.8.2), No Local (MQTT-3.8.3-3), Retain As Published (MQTT-3.3.1-12/
//   -13), Retain Handling (MQTT-3.3.1-9/-10/-11).
// - QoS 0, 1 and 2 in both directions with packet-id management, in-flight
//   windows (Receive Maximum both ways, MQTT-3.3.4-7/-9, 0x93 on excess),
//   and redelivery with DUP on resumed sessions (MQTT-4.4.0-1).
// - Retained messages (an empty payload clears, MQTT-3.3.1-6), wills with v5
//   will delay (MQTT-3.1.3-9), keep alive at 1.5x (MQTT-3.1.2-22), message
//   expiry (MQTT-3.3.2-5/-6), topic aliases both ways, Maximum Packet Size
//   both ways (MQTT-3.1.2-24/-25), user properties and request/response
//   properties passed through unchanged (MQTT-3.3.2-15..-18, -20).
//
// Bounded resources and the slow-subscriber policy: each session's queue of
// messages not yet handed to the driver is bounded. QoS 0 messages beyond
// `max_queued_qos0` are dropped and counted. QoS 1/2 messages beyond
// `max_queued_messages` or `max_queued_bytes` (online or offline) follow
// `queue_full_policy`: kDropNewest drops and counts the new message for that
// subscriber only; kDisconnect also disconnects the subscriber with Quota
// exceeded (0x97). Queues are per subscriber, so one slow reader never holds
// back another. A driver that stops polling a connection whose socket send
// queue is full is what makes that subscriber "slow".
//
// Output: PollTransmit writes a packet header (or control packet bytes) into
// the caller's buffer and may return a shared tail (a message's properties
// and payload) plus a MessageRef that keeps it alive; the driver sends the
// header then the tail. One payload serves every subscriber.
//
// Time: `now` is an argument everywhere. NextDeadline() is the earliest
// keep-alive, connect timeout, will delay or session expiry;
// Timestamp::Never() when there is none.
//
// Durable state (store.h): with set_store(), the core reports changes to
// retained messages, persistent sessions and their subscriptions to a
// BrokerStore (calls, no I/O of its own); RestoreSession/RestoreRetained
// put them back at startup, before any connection. QoS 1/2 deliveries to
// persistent sessions are reported from queueing to acknowledgement. Group
// commit: a PUBACK/PUBREC/PUBCOMP whose packet changed the store is held
// until the store says the change is durable (OnStoreDurable).
//
// Authentication and authorization go through `BrokerAuthenticator`
// (default: allow all). Several Loops (multi_broker.h) each run a Broker:
// a BrokerForwarder hears each client publish, PublishMessage() takes one
// from another Loop, DisconnectClient() ends a client that connected again
// elsewhere.
//
// Errors: nothing a client sends can crash the core. Malformed input and
// protocol violations close the connection, with a DISCONNECT carrying the
// reason code and a reason string in v5 (and a CONNACK before the session
// exists), and are counted. Threading: none; one thread.
// Allocation: none per message in steady state (see broker_alloc_test.cc).
#ifndef RINGLAB_MQTT_BROKER_H_
#define RINGLAB_MQTT_BROKER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "mqtt/internal/absl_view.h"
#include "mqtt/internal/ring.h"
#include "mqtt/message.h"
#include "mqtt/packets.h"
#include "mqtt/rate_limit.h"
#include "mqtt/store.h"
#include "mqtt/topic_tree.h"
#include "transport/time.h"

namespace ringlab::mqtt {

// A connection inside one Broker. Indices are dense (< max_connections), so
// a driver can keep per-connection state in a vector; the generation makes a
// stale id harmless.
struct ConnectionId {
  uint32_t index = 0;
  uint32_t generation = 0;  // 0: invalid
  bool valid() const { return generation != 0; }
  friend bool operator==(ConnectionId a, ConnectionId b) {
    return a.index == b.index && a.generation == b.generation;
  }
  friend bool operator!=(ConnectionId a, ConnectionId b) { return !(a == b); }
};

enum class QueueFullPolicy : uint8_t {
  kDropNewest,  // drop the message for this subscriber and count it
  kDisconnect,  // also disconnect the subscriber (0x97 Quota exceeded)
};

struct BrokerOptions {
  uint32_t max_connections = 100'000;
  // Largest packet accepted (fixed header included); advertised as Maximum
  // Packet Size in v5. Larger ones close the connection (0x95).
  uint32_t max_packet_bytes = 1 << 20;
  // A CONNECT must arrive within this time of the connection opening.
  Duration connect_timeout = std::chrono::seconds(10);
  // In-flight QoS 1/2 PUBLISH packets a client may send before acks
  // (advertised Receive Maximum, v5).
  uint16_t receive_maximum = 100;
  // Outgoing in-flight QoS 1/2 window per client: the client's Receive
  // Maximum capped by this (3.1.1 clients get this window).
  uint16_t max_inflight_messages = 100;
  // Topic aliases a v5 client may use towards us (advertised).
  uint16_t topic_alias_maximum = 64;
  // Topic aliases we use towards a v5 client, capped by what it allows.
  uint16_t max_outgoing_topic_aliases = 64;
  // 0: use the client's keep alive. Otherwise override it (Server Keep
  // Alive, v5) when the client asks for 0 or for more.
  uint16_t server_keep_alive_s = 0;
  // Session Expiry Interval cap for v5 clients, and the expiry of 3.1.1
  // sessions with Clean Session 0 (0xFFFFFFFF: never).
  uint32_t max_session_expiry_s = 0xFFFFFFFF;
  uint32_t v311_session_expiry_s = 0xFFFFFFFF;
  uint8_t maximum_qos = 2;
  bool retain_available = true;
  bool wildcard_subscription_available = true;
  bool subscription_identifiers_available = true;
  bool shared_subscription_available = true;
  // Per-session queues of messages not yet handed to the driver.
  uint32_t max_queued_qos0 = 1000;
  uint32_t max_queued_messages = 1000;  // QoS 1/2, online or offline
  uint64_t max_queued_bytes = 16 << 20;
  QueueFullPolicy queue_full_policy = QueueFullPolicy::kDropNewest;
  // Across all sessions: QoS 1/2 bytes queued (the same policy applies).
  uint64_t max_total_queued_bytes = uint64_t(1) << 32;
  uint32_t max_retained_messages = 100'000;
  // Bytes a parked CONNECT (BrokerForwarder::ParkConnect) may have behind
  // it before the connection is closed (0x97).
  uint32_t max_parked_bytes = 256 << 10;
  // Prefix of assigned client identifiers.
  std::string assigned_client_id_prefix = "ringlab-";
  // Token-bucket limits on new connections and on each connection's
  // inbound PUBLISH packets and bytes (rate_limit.h); all off by default.
  RateLimits rate;
};

// Who a session belongs to, as the authenticator sees it.
struct ClientIdentity {
  std::string_view client_id;
  std::optional<std::string_view> username;  // nullopt: anonymous
};

// Authentication and authorization; without one everything is allowed.
// mqtt/auth.h implements it with mosquitto's password and ACL files. The
// broker calls it on its own thread, synchronously; it must not block and
// MayReceive (called once per delivery) must not allocate.
class BrokerAuthenticator {
 public:
  virtual ~BrokerAuthenticator() = default;
  // kSuccess, or a CONNACK reason code (0x86, 0x87, ...).
  virtual ReasonCode Authenticate(const Connect& connect) = 0;
  // A PUBLISH (or a will) from this client to `topic`.
  virtual bool MayPublish(const ClientIdentity& client,
                          std::string_view topic) = 0;
  // A SUBSCRIBE entry, as sent (a "$share/..." filter included).
  virtual bool MaySubscribe(const ClientIdentity& client,
                            std::string_view filter) = 0;
  // Each message delivered to this client through a matching subscription
  // (and each retained message sent on subscribe).
  virtual bool MayReceive(const ClientIdentity& client,
                          std::string_view topic) {
    (void)client;
    (void)topic;
    return true;
  }
};

// One chunk to send on a connection: `header_bytes` written at the start of
// the caller's buffer, then `tail` (a PUBLISH's shared properties and
// payload, possibly empty). `message` keeps the tail alive: hold it until
// the tail is sent (or copied).
struct Transmit {
  size_t header_bytes = 0;
  std::span<const std::byte> tail;
  MessageRef message;
};

struct BrokerEvent {
  enum class Kind : uint8_t {
    // Close the connection once everything polled so far is sent, then call
    // OnConnectionClosed(). `reason` says why (Success for a client's own
    // DISCONNECT).
    kClose,
  };
  Kind kind = Kind::kClose;
  ConnectionId connection;
  ReasonCode reason = ReasonCode::kSuccess;
};

struct BrokerCounters {
  uint64_t connections_opened = 0;
  uint64_t connections_refused_limit = 0;  // max_connections reached
  uint64_t connections_refused_rate = 0;   // rate.connections_per_s
  uint64_t rate_limited_messages = 0;      // closed: rate.messages_per_s
  uint64_t rate_limited_bytes = 0;         // closed: rate.bytes_per_s
  uint64_t connections_closed = 0;
  uint64_t connects_accepted = 0;
  uint64_t connects_rejected = 0;  // CONNACK with an error
  uint64_t connect_timeouts = 0;
  uint64_t keepalive_timeouts = 0;
  uint64_t first_packet_not_connect = 0;
  uint64_t malformed_packets = 0;
  uint64_t protocol_errors = 0;
  uint64_t packets_too_large = 0;
  uint64_t receive_maximum_exceeded = 0;
  uint64_t session_takeovers = 0;
  uint64_t sessions_created = 0;
  uint64_t sessions_resumed = 0;
  uint64_t sessions_expired = 0;
  uint64_t packets_received = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_polled = 0;  // header + tail bytes handed to the driver
  uint64_t publishes_received[3] = {0, 0, 0};  // by QoS
  uint64_t publishes_sent[3] = {0, 0, 0};      // deliveries, by QoS
  uint64_t publishes_resent = 0;               // DUP redeliveries
  uint64_t publishes_no_subscribers = 0;
  uint64_t publishes_denied = 0;   // BrokerAuthenticator said no
  uint64_t subscribes_denied = 0;  // BrokerAuthenticator said no
  uint64_t deliveries_denied = 0;  // MayReceive said no
  uint64_t dropped_qos0_queue_full = 0;
  uint64_t dropped_queue_full = 0;  // QoS 1/2 over the session limits
  uint64_t dropped_total_queue_full = 0;
  uint64_t dropped_offline_qos0 = 0;  // QoS 0 for a disconnected session
  uint64_t dropped_expired = 0;       // Message Expiry passed in a queue
  uint64_t dropped_too_large = 0;     // over the client's Maximum Packet Size
  uint64_t acks_unknown = 0;          // PUBACK/PUBREC/PUBCOMP for no packet
  uint64_t acks_held = 0;             // acks that waited for a store commit
  // QoS 2 deliveries whose first send waited for a store commit.
  uint64_t publishes_held = 0;
  uint64_t retained_dropped_limit = 0;
  // Sessions across Loops (multi_broker.h): CONNECTs held for a handover,
  // sessions handed to and taken from another core.
  uint64_t connects_parked = 0;
  uint64_t sessions_exported = 0;
  uint64_t sessions_imported = 0;
  uint64_t wills_published = 0;
  uint64_t subscribes = 0;
  uint64_t unsubscribes = 0;
};

namespace internal {
struct Connection;
struct Session;
class RetainedStore;
}  // namespace internal

// A message published from outside any connection (tests, $SYS, another
// Loop).
struct InjectedMessage {
  std::string_view topic;
  std::span<const std::byte> payload;
  uint8_t qos = 0;
  bool retain = false;
  // Forwarded v5 properties in wire form (no Property Length), or empty.
  std::span<const std::byte> properties;
  std::optional<uint32_t> message_expiry_interval_s;
  // With a store: its QoS 2 deliveries are not sent before the store's
  // durable_sequence() reaches this (the multi-Loop broker holds another
  // Loop's QoS 2 message until its publisher's packet id is stored there).
  uint64_t hold_until_sequence = 0;
};

// Sees every message a client of this core published (a PUBLISH or a will)
// once it was routed to this core's own subscribers: the multi-Loop broker
// (multi_broker.h) passes it on to the other Loops. Called on the core's
// thread; `message` may be kept (a counted reference, no copy). Messages
// routed with PublishMessage() are not reported.
//
// OnSharedGroupMembers() and DeliverToGroup() let a shared subscription
// group have members on several cores and still get each message once
// (MQTT 5.0 §4.8.2): the core reports each change of a group's member
// count here, and asks before it gives a routed message to one of the
// group's members here.
//
// ParkConnect() is asked for every authenticated CONNECT with a client id
// (not an assigned one) before its session is looked up. True holds the
// connection (no CONNACK; later bytes are buffered, up to
// BrokerOptions::max_parked_bytes) until ResumeConnect() or
// AbortParkedConnect(): the multi-Loop broker fetches the client's session
// from the Loop that had it meanwhile.
class BrokerForwarder {
 public:
  virtual ~BrokerForwarder() = default;
  virtual void OnClientPublish(const MessageRef& message) = 0;
  // The group `group` of `filter` now has `members` members on this core
  // (1 after its first, 0 after its last, so 0 is the group's end here).
  // `slot` is what the previous call for the group returned (0 the first
  // time); the core keeps the value returned and passes it to
  // DeliverToGroup.
  virtual uint32_t OnSharedGroupMembers(std::string_view group,
                                        std::string_view filter, uint32_t slot,
                                        size_t members) {
    (void)group, (void)filter, (void)slot, (void)members;
    return 0;
  }
  // Asked while `message` is routed, for each matching group with members
  // on this core: false leaves the message to a member elsewhere. The
  // message is a client publish or will of this core (reported to
  // OnClientPublish right after the routing), or one routed with
  // PublishMessage. Must not allocate: it runs per message.
  virtual bool DeliverToGroup(uint32_t slot, const Message& message) {
    (void)slot, (void)message;
    return true;
  }
  virtual bool ParkConnect(std::string_view client_id, bool clean_start,
                           ConnectionId connection, Timestamp now) {
    (void)client_id, (void)clean_start, (void)connection, (void)now;
    return false;
  }
};

class Broker {
 public:
  explicit Broker(BrokerOptions options = {},
                  BrokerAuthenticator* authenticator = nullptr);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  const BrokerOptions& options() const { return options_; }

  // ---- Connections
  // -----------------------------------------------------------
  // ResourceExhausted when max_connections are open, or when `listener`'s
  // new connections are over rate.connections_per_s (each counted).
  // `listener` (below kMaxListeners; 0: plain, 1: TLS in BrokerDriver)
  // names the listener that accepted it: each has its own rate bucket.
  static constexpr uint32_t kMaxListeners = 4;
  absl::StatusOr<ConnectionId> OnConnectionOpened(Timestamp now,
                                                  uint32_t listener = 0);
  // The next bytes of the connection's stream. Stale ids are ignored.
  void OnBytes(ConnectionId id, std::span<const std::byte> bytes,
               Timestamp now);
  // The transport connection is gone (peer EOF or reset, or the driver
  // closed it after a kClose event). Without a prior DISCONNECT this is a
  // network failure: the will is published (after its delay). The id is
  // dead afterwards.
  void OnConnectionClosed(ConnectionId id, Timestamp now);

  // ---- Output
  // ---------------------------------------------------------------- A
  // connection that has something to send (each is reported once until
  // PollTransmit returns nullopt for it).
  std::optional<ConnectionId> NextReady();
  // Fills `out` with the next header or control bytes; `out` must hold at
  // least kMinTransmitBytes (longer headers are split across calls).
  // nullopt when there is nothing to send now (or `out` is too short).
  static constexpr size_t kMinTransmitBytes = 64;
  std::optional<Transmit> PollTransmit(ConnectionId id,
                                       std::span<std::byte> out, Timestamp now);
  bool HasOutput(ConnectionId id) const;
  // An upper bound of the bytes the next PollTransmit calls for this
  // connection hand out before another item starts (header + tail), so a
  // driver can check for room first: a packet must never be cut short.
  size_t NextTransmitBound(ConnectionId id) const;

  std::optional<BrokerEvent> PollEvent();

  // ---- Time
  // ------------------------------------------------------------------
  Timestamp NextDeadline() const;
  void OnTimeout(Timestamp now);

  // ---- Control
  // ---------------------------------------------------------------

  // Routes a message as if a client without a session had published it,
  // and returns this core's copy (which the caller may keep).
  MessageRef PublishMessage(const InjectedMessage& message, Timestamp now);
  // Routes `message`, one this core reported to its forwarder or returned
  // from PublishMessage, again but to the session of `client_id` only (its
  // own subscriptions, not shared ones, with No Local and the read ACL as
  // on any routing). The multi-Loop broker uses it for what this Loop
  // routed while that session was on its way here from another Loop. Returns
  // the deliveries queued (0 or 1); 0 for an unknown id or an expired message.
  uint32_t RouteToSession(std::string_view client_id, const MessageRef& message,
                          Timestamp now);
  // Tells every connection the server is going away (v5 DISCONNECT 0x8B)
  // and asks the driver to close them all.
  void Shutdown(Timestamp now);
  // The client id connected through another core (another Loop): closes its
  // connection here, if any (v5 DISCONNECT `reason`; the will as on a
  // takeover, MQTT-3.1.4-3), and ends its session here (a Clean Start
  // elsewhere; ExportSession moves it instead). False if the id is unknown
  // here.
  bool DisconnectClient(std::string_view client_id, ReasonCode reason,
                        Timestamp now);
  // Client publishes are also reported to `forwarder` (borrowed; nullptr
  // stops). With one set, a v5 PUBACK never says No matching subscribers
  // (0x10): other Loops may have some.
  void set_forwarder(BrokerForwarder* forwarder) { forwarder_ = forwarder; }
  // A CONNECT that ParkConnect() held goes on from where it stopped (the
  // authenticator is not asked again), then the bytes buffered behind it.
  // False if the connection is gone or not parked.
  bool ResumeConnect(ConnectionId connection, Timestamp now);
  // A held CONNECT is refused: the connection closes without a CONNACK
  // (another CONNECT for the client id came after it, MQTT-3.1.4-3).
  bool AbortParkedConnect(ConnectionId connection, ReasonCode reason,
                          Timestamp now);
  // Moves a session to another core: closes its connection here, if any,
  // as DisconnectClient() does, and removes the session, returned with its
  // subscriptions, queued and in-flight QoS 1/2 messages and inbound QoS 2
  // ids. Its delayed will is dropped, not published: the reconnect it moves
  // for cancels it (MQTT-3.1.3-9). nullopt if the id is unknown here or the
  // session ended with its connection (expiry 0). With a store, the
  // session's rows stay where they are: the result says so (`stored`, and
  // each queued message's key), for a core that shares the database to
  // take them over in ImportSession (the caller deletes the queued rows by
  // key if nobody will). Only messages that expired are unstored here.
  std::optional<StoredSession> ExportSession(std::string_view client_id,
                                             ReasonCode reason, Timestamp now);
  // Adds what ExportSession() returned on another core, disconnected, as
  // RestoreSession() does; marked as stored (its rows taken over, not
  // written again) if it was stored there and this core has a store.
  // Errors as RestoreSession().
  absl::Status ImportSession(const StoredSession& session, Timestamp now);

  // ---- Durable state (store.h)
  // ------------------------------------------------

  // From now on, changes to retained messages and persistent sessions are
  // reported to `store` (borrowed; nullptr stops). Restore first, then set the
  // store.
  void set_store(BrokerStore* store) { store_ = store; }
  // The store committed: PUBACK/PUBREC/PUBCOMP packets held for changes
  // that store->durable_sequence() now covers are staged (in the order
  // their packets arrived; see "Group commit" in mqtt/README.md). Call it
  // after every commit, then poll the ready connections.
  void OnStoreDurable(Timestamp now);
  // A persistent session as a store kept it: disconnected, with its
  // subscriptions, queued QoS 1/2 messages, in-flight ones (resent with
  // DUP and their packet ids, or as PUBREL, when it resumes) and inbound
  // QoS 2 ids awaiting PUBREL, expiring `expiry_interval_s` after `now` (the
  // countdown restarts at load: the core has no clock across restarts). Errors:
  // AlreadyExists for a client id already known, InvalidArgument for an
  // invalid filter or an expiry of 0.
  absl::Status RestoreSession(const StoredSession& session, Timestamp now);
  // False (and counted as retained_dropped_limit) past max_retained; an
  // empty payload is not a retained message and is refused too.
  bool RestoreRetained(const StoredRetained& retained, Timestamp now);

  // ---- Observation
  // -----------------------------------------------------------
  const BrokerCounters& counters() const { return counters_; }
  size_t connection_count() const { return open_connections_; }
  size_t session_count() const { return session_by_id_.size(); }
  size_t subscription_count() const { return tree_.subscription_count(); }
  size_t retained_count() const;
  const MessagePool& message_pool() const { return pool_; }
  // Messages queued (not yet sent) and in flight for a client id; nullopt
  // when there is no such session.
  struct SessionInfo {
    bool connected = false;
    size_t queued = 0;
    size_t inflight = 0;
    size_t subscriptions = 0;
    uint64_t queued_bytes = 0;
  };
  std::optional<SessionInfo> GetSessionInfo(std::string_view client_id) const;

 private:
  using Connection = internal::Connection;
  using Session = internal::Session;
  struct Target;
  struct RouteVisitor;
  struct TimerEntry {
    Timestamp at;
    uint32_t index;
    bool is_session;
    friend bool operator>(const TimerEntry& a, const TimerEntry& b) {
      return a.at > b.at;
    }
  };

  Connection* Lookup(ConnectionId id) const;
  bool CanHoldBehind(const Connection& c, const Session& s) const;
  void HandleFrame(Connection& c, const Frame& frame, Timestamp now);
  // `resumed`: a parked CONNECT going on (ResumeConnect).
  void HandleConnect(Connection& c, const Frame& frame, Timestamp now,
                     bool resumed = false);
  void ConsumeBytes(Connection& c, std::span<const std::byte> bytes,
                    Timestamp now);
  // Closes `old` because another connection took its session over.
  void TakeOver(Connection& old, ReasonCode reason, Timestamp now);
  absl::Status AddSession(const StoredSession& session, Timestamp now,
                          bool from_store);
  void HandlePublish(Connection& c, const Publish& p, Timestamp now);
  void HandlePubResponse(Connection& c, const PubResponse& r, Timestamp now);
  void HandleSubscribe(Connection& c, const Subscribe& s, Timestamp now);
  void HandleUnsubscribe(Connection& c, const Unsubscribe& u);
  void HandleDisconnect(Connection& c, const Disconnect& d, Timestamp now);

  // Protocol violation: v5 DISCONNECT with `code`, then close.
  void Fail(Connection& c, ReasonCode code, const char* detail, Timestamp now,
            bool count_as_error = true);
  // The per-connection message and byte buckets; false: closed (counted).
  bool AdmitPublish(Connection& c, uint32_t size_bytes, Timestamp now);
  // Ends the MQTT connection: detaches the session (publishing or
  // scheduling the will when `publish_will`) and asks the driver to close.
  void CloseConnection(Connection& c, ReasonCode reason, bool publish_will,
                       Timestamp now);
  void DetachSession(Connection& c, bool publish_will, Timestamp now);
  // `drop_stored`: delete its rows from the store (false: ExportSession,
  // whose importer takes them over).
  void EndSession(Session& s, Timestamp now, bool drop_stored = true);
  void PublishWill(Session& s, Timestamp now);

  Session* CreateSession(std::string_view client_id);
  // To every matching session, or to `only_session` (an index) alone.
  // tree_.Add / tree_.Remove, and for a shared group the member count to
  // the forwarder.
  bool AddToTree(std::string_view filter, std::string_view group,
                 const SubscriptionTree::Entry& entry);
  void RemoveFromTree(std::string_view filter, std::string_view group,
                      uint32_t subscriber);
  uint32_t RouteMessage(const MessageRef& message, Timestamp now,
                        uint32_t only_session = 0xFFFFFFFFu);
  void Enqueue(Session& s, const MessageRef& message, uint8_t qos, bool retain,
               std::span<const uint32_t> subscription_ids, Timestamp now);
  void SendRetained(Session& s, std::string_view filter, uint8_t granted_qos,
                    uint32_t subscription_id, Timestamp now);
  bool StoreRetained(const MessageRef& message, Timestamp now);
  // Brings the store in line with the session's expiry: a session becomes
  // persistent (stored with its subscriptions), changes expiry, or stops
  // being persistent (deleted).
  void SyncStoredSession(Session& s);
  // A stored delivery left for good (acknowledged, expired, dropped).
  void Unstore(uint64_t key);
  uint64_t StoreDurable() const;  // 0 without a store
  // Registers `c` in publish_holds_ (once) until `sequence` is durable.
  void HoldPublish(internal::Connection& c, uint64_t sequence);

  void StageControl(Connection& c, const Packet& packet);
  // A PUBACK/PUBREC/PUBCOMP: staged now, or held until the store's commit
  // covers the changes made since `written_before` (StoreWritten() when
  // the packet came in).
  void StageAck(Connection& c, const PubResponse& ack, uint64_t written_before);
  // The same for a SUBACK: a subscription of a stored session is durable
  // before its SUBACK goes, or a PUBACKed message could find no subscriber
  // after a crash.
  void StageSuback(Connection& c, const Suback& ack, uint64_t written_before);
  void StageUnsuback(Connection& c, const Unsuback& ack,
                     uint64_t written_before);
  // Queues a SUBACK/UNSUBACK in held_acks_ (its codes in held_codes_) if
  // its packet changed the store and that is not durable yet, or an ack of
  // `c` is held already; false: stage it now.
  bool HoldCodedAck(Connection& c, PacketType type, uint16_t packet_id,
                    std::span<const uint8_t> codes, uint64_t written_before);
  uint64_t StoreWritten() const;
  void MarkReady(Connection& c);
  void Schedule(uint32_t index, bool is_session, Timestamp at);
  void CheckConnectionTimers(Connection& c, Timestamp now);
  void CheckSessionTimers(Session& s, Timestamp now);
  std::optional<Transmit> NextPublish(Connection& c, Session& s,
                                      std::span<std::byte> out, Timestamp now);
  uint16_t NextPacketId(Session& s);
  // Closes the connections whose queues overflowed under kDisconnect; run
  // at the end of every entry point, outside any routing pass.
  void RunDeferred(Timestamp now);

  BrokerOptions options_;
  BrokerAuthenticator* authenticator_;
  BrokerStore* store_ = nullptr;
  BrokerForwarder* forwarder_ = nullptr;
  MessagePool pool_;
  SubscriptionTree tree_;
  std::unique_ptr<internal::RetainedStore> retained_;

  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<uint32_t> free_connections_;
  size_t open_connections_ = 0;
  std::vector<std::unique_ptr<Session>> sessions_;
  std::vector<uint32_t> free_sessions_;
  // Session indices, found by client id: the id is stored once, in the
  // session (hashing and comparing look it up there).
  struct SessionKeyHash {
    using is_transparent = void;
    const std::vector<std::unique_ptr<Session>>* sessions;
    size_t operator()(uint32_t index) const;
    size_t operator()(std::string_view id) const;
  };
  struct SessionKeyEq {
    using is_transparent = void;
    const std::vector<std::unique_ptr<Session>>* sessions;
    bool operator()(uint32_t a, uint32_t b) const;
    bool operator()(uint32_t a, std::string_view b) const;
    bool operator()(std::string_view a, uint32_t b) const;
  };
  absl::flat_hash_set<uint32_t, SessionKeyHash, SessionKeyEq> session_by_id_;

  internal::Ring<uint32_t> ready_;
  internal::Ring<BrokerEvent> events_;
  std::vector<TimerEntry> timers_;  // min-heap by `at`
  // Acks waiting for a commit (StageAck), oldest first.
  struct HeldAck {
    ConnectionId connection;
    uint64_t sequence = 0;  // the store's written_sequence() to wait for
    PacketType type = PacketType::kPuback;
    ReasonCode reason = ReasonCode::kSuccess;
    uint16_t packet_id = 0;
    // kSuback/kUnsuback: its reason codes, held_codes_[codes_offset, +
    // codes_count).
    uint32_t codes_offset = 0;
    uint32_t codes_count = 0;
  };
  internal::Ring<HeldAck> held_acks_;
  std::vector<uint8_t> held_codes_;  // reason codes of held (UN)SUBACKs
  size_t held_subacks_ = 0;  // held SUBACKs + UNSUBACKs; codes cleared at 0
  // Connections whose next QoS 2 PUBLISH waits for durable_sequence() to
  // reach `sequence` (NextPublish); OnStoreDurable marks them ready.
  struct PublishHold {
    ConnectionId connection;
    uint64_t sequence = 0;
  };
  std::vector<PublishHold> publish_holds_;

  // Routing scratch, reused by every publish.
  std::vector<Target> targets_;
  uint64_t route_epoch_ = 0;
  uint64_t total_queued_bytes_ = 0;
  uint64_t assigned_ids_ = 0;
  std::vector<std::byte> scratch_;  // forwarded-property encoding
  std::vector<ConnectionId> deferred_closes_;
  // Per listener (OnConnectionOpened's `listener`).
  std::array<TokenBucket, kMaxListeners> connection_rates_;
  BrokerCounters counters_;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_BROKER_H_
