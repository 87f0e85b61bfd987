// MultiBroker: one MQTT broker across N Loops on N threads (issue 12, "One
// broker across cores").
//
//   MultiBrokerOptions options;
//   options.threads = 2;
//   options.loop.backend = "uring-fixed";
//   options.driver.listen = *Endpoint::Parse("127.0.0.1:1883");
//   absl::StatusOr<std::unique_ptr<MultiBroker>> broker =
//       MultiBroker::Create(options);
//   if (!broker.ok()) return broker.status();
//   (*broker)->Start();                 // N threads, each running its Loop
//   ...
//   (*broker)->RequestStop();           // thread-safe, signal-safe
//   (*broker)->Join();
//
// Shape: each Loop runs its own BrokerDriver (a Broker core) with its own
// listener on the same port (SO_REUSEPORT: the kernel spreads new
// connections over the Loops), and owns the connections it accepted.
//
// Routing: a client's publish on Loop A is routed to A's subscribers by A's
// core, and passed to every other Loop that has ever had a subscription
// (or to every Loop, when the message is retained) through a
// transport::LoopChannel from A to that Loop (N*(N-1) channels); the
// receiving Loop routes it to its own subscribers as a message from
// outside any connection. No lock on this path: the channel is a lock-free
// ring with an MSG_RING (io_uring) or eventfd (epoll) wakeup.
//  - Payload: the channel entry is a pointer to A's message, which A keeps
//    (a counted reference) until the receiving Loop has consumed the entry;
//    the receiver copies it once into its own message pool, and its
//    subscribers share that copy (one copy per Loop crossed, none per
//    subscriber).
//  - Order: each channel is FIFO and each core routes in arrival order, so
//    every subscriber sees one publisher's messages in the order sent, at
//    QoS 0 and 1/2 alike.
//  - Full channel: the channel's overflow list takes the excess; beyond it
//    the delivery to that Loop is dropped and counted
//    (counters().forward_refused); the publisher's PUBACK is not held back.
//  - A Loop that has never had a subscription is skipped for messages that
//    are not retained (the flag is set when a SUBSCRIBE is authorized, before
//    its SUBACK, and never cleared).
//
// State with N > 1:
//  - Retained messages: every retained publish (and every clear) goes to
//    every Loop, so each Loop holds the full set and serves new
//    subscriptions from it. Two publishers racing on one retained topic from
//    two Loops may leave the Loops with different winners.
//  - Client ids: a shared table (one mutex, taken at CONNECT time and at
//    each step of a handover) numbers the CONNECTs for each client id and
//    records where its session is: on the Loop of its newest CONNECT, or
//    in transit to it. The table keeps one entry per client id ever seen
//    (no pruning).
//  - Sessions follow their client. A CONNECT on Loop B for an id whose
//    session is on Loop A is held (Broker::ParkConnect) and B asks A for
//    the session, through the channel B->A (behind the messages B
//    forwarded before). A closes its connection with Session taken over
//    (0x8E, MQTT-3.1.4-2/-3), removes the session (Broker::ExportSession:
//    subscriptions, queued and in-flight QoS 1/2 messages, inbound QoS 2
//    ids; one copy of each queued message) and posts it to the Loop of the
//    id's newest CONNECT; that Loop adds it (ImportSession) and the
//    CONNECT goes on, so the client sees Session Present 1 wherever its
//    reconnect lands. A Clean Start CONNECT waits the same way, but the
//    session does not move: it ends on the Loop that has it, as on a
//    takeover on one Loop, publishing its will (delayed or not, MQTT 5.0
//    §3.1.3.2.2), and the CONNECT goes on with a new one (MQTT-3.1.2-4).
//    There is one session per id at any time: while one is in transit, newer
//    CONNECTs for the id wait for it without asking again; a held CONNECT that
//    a newer one on another Loop superseded is closed (0x8E) without a CONNACK,
//    and a session that arrives at such a Loop is passed on to the newest. A
//    held CONNECT goes on without the session after handover_timeout (a Loop
//    that is stopping); the session that arrives later is dropped and
//    counted (counters().handovers_lost), and a Loop that had not exported
//    it yet drops its copy. A delayed will of a moved session is dropped:
//    the reconnect it moved for cancels it (MQTT-3.1.3-9). The session
//    travels through the channel too, so messages the exporting Loop routes
//    after the export follow it. A message published on the receiving
//    Loop while the session is in transit is routed there before the
//    session arrives and reaches the exporting Loop after the export: the
//    receiving Loop keeps what it routes while a CONNECT waits (up to
//    4096 messages or 64 MiB, the rest counted as transit_missed) and
//    routes it to the session when it arrives
//    (Broker::RouteToSession). With three or more Loops the session carries
//    its exporter's cut (the newest publish number it routed from each
//    Loop), the receiving Loop logs every message it routes while a CONNECT
//    waits and gives the session those beyond the cut, and both ends wait
//    for a marker from each third Loop, so each message reaches it once
//    (multi_broker.cc, "Cuts"); a Loop that passes a session on adds it
//    and exports it again.
//  - Shared subscriptions (MQTT 5.0 §4.8.2): a table shared by the Loops
//    (one mutex, taken when a group gains its first member on a Loop)
//    holds, for each group and filter, its member count on every Loop,
//    which each Loop updates as members come and go. Each Loop routing a
//    message to a group it has members of reads the counts (atomics, no
//    lock) and takes its turn only if the message falls to one of its
//    members: the message's publish number and Loop pick member k of the
//    group's members counted over the Loops in order, so every Loop makes
//    the same choice and the group gets each message once, shared over
//    its members wherever they are. Within a Loop the core picks among its
//    own members as on one Loop (connected ones first). A message routed
//    while a member joins or leaves on another Loop may reach the group
//    twice or not at all (the Loops read the counts at different times);
//    $SYS messages, published on every Loop, reach a group once per Loop.
//  - Assigned client ids carry the Loop's number in their prefix, so they
//    are unique across Loops.
//  - Rate limits: per-connection limits work as before; the connection
//    rate (connections_per_s) is divided among the Loops.
//  - Durable state (options.store): one database, a store per Loop; Loop 0
//    restores the sessions. A QoS 2 exchange that crosses Loops stores
//    its inbound packet id only after every Loop's copies, tagged with the
//    exchange, are durable; a restart drops tagged copies without their id,
//    so a resend after a crash is delivered once (mqtt/README.md,
//    "Exactly once across Loops"). $SYS, /metrics and SERVER_STATS sum
//    over the Loops.
//
// Threading: Create/Start/Join on one control thread; RequestStop and
// counters() from any thread (counters() is exact once Join returned).
// Errors: Create returns the Loop creation and listen errors.
#ifndef RINGLAB_MQTT_MULTI_BROKER_H_
#define RINGLAB_MQTT_MULTI_BROKER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "mqtt/broker_driver.h"
#include "mqtt/store_sqlite.h"
#include "transport/loop.h"
#include "transport/loop_channel.h"

namespace ringlab::mqtt {

struct MultiBrokerOptions {
  uint32_t threads = 2;
  transport::LoopOptions loop;  // for every Loop
  // For every Loop: listen (port 0 picks one, shared by all), limits, the
  // authenticator (shared; it must be safe to call from every Loop's
  // thread). tcp.reuse_port is forced on.
  BrokerDriverOptions driver;
  // When set, each Loop gets its own authenticator from this (instead of
  // sharing driver.authenticator), for authenticators that keep counters or
  // other state for one thread (mqtt/auth.h). nullptr from it fails Create.
  std::function<std::unique_ptr<BrokerAuthenticator>()> make_authenticator;
  transport::LoopChannelOptions channel;
  // Pin Loop i's thread to CPU first_cpu + i (-1: no pinning).
  int first_cpu = -1;
  // How long a CONNECT waits for its session from another Loop.
  Duration handover_timeout = std::chrono::seconds(1);
  // After RequestStop: how long the goodbyes may drain before the Loops stop.
  Duration stop_linger = std::chrono::milliseconds(200);
  // Durable state (--data-dir): one SQLite database that every Loop's
  // store writes (key_stride and key_offset are set per Loop). Loop 0
  // restores the sessions at Create, every Loop the retained messages.
  std::optional<SqliteStoreOptions> store;
  // Called on Loop i's thread when it begins to stop, before its driver's
  // Shutdown() (a program stops its other listeners there, e.g. TLS).
  std::function<void(size_t loop)> before_shutdown;
};

struct MultiBrokerCounters {
  uint64_t forwarded = 0;         // entries sent to other Loops
  uint64_t forward_received = 0;  // entries routed by the receiving Loops
  uint64_t forward_refused = 0;   // channel and overflow full: dropped
  uint64_t forward_skipped = 0;   // target Loop had no subscription
  uint64_t forward_expired = 0;   // Message Expiry passed on the way
  uint64_t queue_full = 0;        // entries that waited in an overflow list
  uint64_t notifications = 0;     // wakeups sent, both kinds
  uint64_t msg_ring_notifications = 0;
  uint64_t eventfd_notifications = 0;
  uint64_t msg_ring_failures = 0;
  uint64_t remote_takeovers = 0;     // connections closed for another Loop
  uint64_t handovers_requested = 0;  // export requests sent
  uint64_t sessions_moved = 0;       // sessions that arrived and were added
  uint64_t handovers_empty = 0;      // the other Loop had no session
  uint64_t sessions_ended = 0;     // not moved: the newest CONNECT starts clean
  uint64_t sessions_relayed = 0;   // arrived superseded, passed on
  uint64_t sessions_kept = 0;      // the newest CONNECT came back first
  uint64_t handover_timeouts = 0;  // went on without waiting longer
  uint64_t handovers_lost = 0;     // arrived after its CONNECT went on
  uint64_t stale_sessions_discarded = 0;  // copies left by a timed-out one
  uint64_t parks_replaced = 0;            // a newer CONNECT on the same Loop
  uint64_t parks_aborted = 0;             // a newer CONNECT on another Loop
  // Publishes made on the receiving Loop while a session was in transit,
  // routed to it when it arrived, and those its log had no room for.
  uint64_t transit_caught_up = 0;
  uint64_t transit_missed = 0;
  // Messages a Loop did not give to its members of a shared group, since
  // the group's turn was another Loop's ("Shared subscriptions", below).
  uint64_t shared_elsewhere = 0;
};

class MultiBroker {
 public:
  // `first`, when given, becomes Loop 0 (the program has created it
  // already); the others are made from options.loop.
  static absl::StatusOr<std::unique_ptr<MultiBroker>> Create(
      MultiBrokerOptions options, std::unique_ptr<transport::Loop> first = {});
  ~MultiBroker();
  MultiBroker(const MultiBroker&) = delete;
  MultiBroker& operator=(const MultiBroker&) = delete;

  // Starts one thread per Loop.
  void Start();
  // Thread-safe and async-signal-safe: shuts every driver down on its Loop,
  // then stops the Loops after stop_linger.
  void RequestStop();
  void Join();

  Endpoint local_endpoint() const { return local_; }
  size_t size() const { return shards_.size(); }
  transport::Loop& loop(size_t i);
  // Loop i's driver: touch it only on Loop i's thread (or before Start /
  // after Join).
  BrokerDriver& driver(size_t i);
  // How each channel wakes its consumer (the same for all), and why.
  transport::ChannelNotify notify_mode() const;
  std::string notify_note() const;
  MultiBrokerCounters counters() const;
  // With options.store: what Create restored (on Loop 0), and Loop i's
  // store (touch it on Loop i's thread, or after Join).
  const StoreLoadReport& store_loaded() const { return store_loaded_; }
  SqliteStore* store(size_t i);
  // Per Loop, updated every 50 ms by that Loop (any thread may read).
  struct LoopGauges {
    std::atomic<uint64_t> delivered{0};
    std::atomic<uint64_t> received{0};
    std::atomic<uint64_t> kernel_entries{0};
    std::atomic<uint64_t> connections{0};
  };
  const LoopGauges& gauges(size_t i) const;
  // Runs fn(i) on every Loop i, on its thread (Loop::Post). Thread-safe.
  void PostToAll(std::function<void(size_t index)> fn);

 private:
  // A session on its way between Loops (nullopt: there was none, or it
  // ended), with the cut its exporting Loop made: seen[x] is the newest
  // publish number of Loop x that Loop had routed, so the session has every
  // message of x numbered up to seen[x] that it matched, and the Loop it
  // lands on gives it the later ones (multi_broker.cc, "Cuts").
  struct Moving {
    std::optional<StoredSession> session;
    uint32_t exporter = 0;
    std::vector<uint64_t> seen;
  };
  // What goes through a channel, in order behind the messages the
  // producer sent before it.
  struct Entry {
    enum Kind : uint8_t {
      kMessage,    // `message`, the producer's publish number `seq`
      kRequest,    // export the session of `client_id` (handover `transfer`)
      kSession,    // `session` for `client_id` lands here (`transfer`)
      kSync,       // answer with a kMarker for token `transfer`
      kMarker,     // the producer's publishes up to `seq` are all in front
      kDurable,    // with a store: what the producer queued from the
                   // consumer's publishes up to `transfer` is durable
      kCommitted,  // with a store: the packet ids of the producer's QoS 2
                   // publishes up to `transfer` that the consumer holds
                   // (kMessage with `client_id`) are durable; send them
    };
    Kind kind = kMessage;
    uint32_t source = 0;  // the producer's Loop
    // kMessage: its publish number; kRequest, kMarker: the producer's
    // newest publish number when it sent this.
    uint64_t seq = 0;
    const Message* message = nullptr;
    // kRequest, kSession: the id. kMessage: its publisher's client id if
    // the message is a QoS 2 exchange whose packet id the producer writes
    // once the copies are stored (packet id in `transfer`), else null.
    const std::string* client_id = nullptr;
    const std::shared_ptr<Moving>* session = nullptr;
    uint64_t transfer = 0;
  };
  struct Outbound {
    std::unique_ptr<transport::LoopChannel<Entry>> channel;
    std::vector<MessageRef> held;  // by sequence modulo size
    std::vector<std::string> ids;  // requests' client ids, likewise
    std::vector<std::shared_ptr<Moving>> sessions;
    uint64_t released = 0;
    size_t target = 0;
  };
  class Shard;
  friend class Shard;

  explicit MultiBroker(MultiBrokerOptions options);
  // Create, with options.store: opens a store per Loop, restores, and
  // wires each to its Loop's core and timer.
  absl::Status OpenStores();
  // The id table (one mutex, taken at CONNECT time and once per step of a
  // handover): for each client id, its newest CONNECT and where its
  // session is.
  static constexpr uint32_t kNoLoop = UINT32_MAX;
  static constexpr uint32_t kInTransit = UINT32_MAX;
  struct IdRecord {
    uint32_t latest_loop;  // the Loop of the id's newest CONNECT
    uint64_t latest_seq;   // its number (CONNECTs are totally ordered)
    // The Loop that holds the session (always latest_loop), or kInTransit
    // while a handover moves it to the newest CONNECT.
    uint32_t home;
    uint32_t exporter = kNoLoop;  // in transit: the Loop yet to export it
    uint64_t transfer = 0;        // numbers handovers; a stale one is dropped
    bool latest_clean = false;    // the newest CONNECT has Clean Start
  };
  // What a CONNECT on a Loop does.
  struct ConnectRoute {
    uint64_t seq = 0;
    bool hold = false;              // held until the session lands on this Loop
    uint32_t ask = kNoLoop;         // ask this Loop to export the session
    uint64_t transfer = 0;          // ... for this handover
    uint32_t abort_loop = kNoLoop;  // the CONNECT held there is superseded
    uint64_t abort_seq = 0;
  };
  ConnectRoute RouteConnect(std::string_view client_id, bool clean_start,
                            size_t loop);
  // What the Loop asked to export does.
  struct ExportRoute {
    enum Kind { kExport, kKeep, kDiscard, kIgnore } kind;
    uint32_t target;  // kExport: the Loop of the newest CONNECT
    // kExport: the newest CONNECT has Clean Start, so the session ends on
    // the exporting Loop instead of moving.
    bool end_session = false;
  };
  ExportRoute RouteExport(const std::string& client_id, size_t loop,
                          uint64_t transfer);
  // What the Loop a session arrives at does with it.
  struct LandRoute {
    enum Kind { kHere, kRelay, kStale } kind;
    uint32_t target;  // kRelay: pass it on to this Loop
    // kRelay: this Loop exports it next, as handover `transfer`.
    uint64_t transfer = 0;
  };
  LandRoute RouteLanding(const std::string& client_id, size_t loop,
                         uint64_t transfer);
  // handover_timeout for the CONNECT `seq` held on `loop`: true if it goes
  // on there without the session, false if a newer one superseded it.
  bool TimeOutHold(const std::string& client_id, size_t loop, uint64_t seq);
  // Asks Loop `target` (on its thread) to export the session of
  // `client_id` for handover `transfer`.
  void Request(size_t target, size_t from, std::string client_id,
               uint64_t transfer);
  // Tells Loop `target` that its held CONNECT `seq` (or older) for the id
  // is superseded.
  void PostAbort(size_t target, std::string client_id, uint64_t seq);

  // A shared group's member count on each Loop ("Shared subscriptions"):
  // Loop i writes on_loop[i], every Loop reads them all.
  struct GroupMembers {
    explicit GroupMembers(size_t loops)
        : on_loop(std::make_unique<std::atomic<uint32_t>[]>(loops)) {}
    std::unique_ptr<std::atomic<uint32_t>[]> on_loop;
  };
  // The entry of group `group` of `filter`, made on first use; entries
  // live as long as the broker.
  GroupMembers* FindGroupMembers(std::string_view group,
                                 std::string_view filter);

  MultiBrokerOptions options_;
  StoreLoadReport store_loaded_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<std::thread> threads_;
  Endpoint local_;
  std::atomic<bool> stop_requested_{false};
  absl::Mutex ids_mu_;
  absl::flat_hash_map<std::string, IdRecord> ids_ ABSL_GUARDED_BY(ids_mu_);
  uint64_t next_claim_ ABSL_GUARDED_BY(ids_mu_) = 0;
  absl::Mutex groups_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<GroupMembers>> groups_
      ABSL_GUARDED_BY(groups_mu_);
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_MULTI_BROKER_H_
