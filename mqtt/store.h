// BrokerStore: what the sans-io Broker core tells a durable store, and what
// a store hands back at startup. The core calls these methods (it never does
// I/O itself); an implementation (store_sqlite.h) turns them into writes on
// the driver's thread and decides when they reach the disk (its fsync
// policy). A networked store (MySQL, Redis) would implement the same class.
//
//   absl::StatusOr<std::unique_ptr<SqliteStore>> store =
//       SqliteStore::Open({.data_dir = "/var/lib/ringlab"});
//   absl::StatusOr<StoreLoadReport> r = (*store)->Load(&broker, now);
//   broker.set_store(store->get());   // from now on the core reports changes
//   ...  // on the Loop: at (*store)->NextFlushDeadline(), Flush(), then
//   ...  // broker.OnStoreDurable(now): the acks held for that commit go out
//
// What persists: retained messages, persistent sessions (a Session Expiry
// Interval above 0, or 3.1.1 Clean Session 0) with their subscriptions, and
// the QoS 1/2 messages queued or in flight to them, from the moment they
// are queued until the subscriber acknowledges them (PUBACK, or PUBCOMP
// for QoS 2), with the packet id they were sent with and whether PUBREL
// was sent. After a restart the ones that had been sent are resent with
// DUP and their original packet ids, or as PUBREL (MQTT-4.4.0-1), and the
// others are queued. The inbound QoS 2 packet ids awaiting PUBREL are
// stored too, so a PUBLISH the client resends after a restart is not
// delivered twice. Not stored: wills, and messages queued before a
// session became persistent.
//
// Time: the core's Timestamps are monotonic and mean nothing after a
// restart, so a method that carries an expiry also gets `now`; the store
// keeps the remaining time against its own wall clock.
//
// Errors: the write methods return nothing; an implementation counts and
// remembers its first failure (status()), so the hot path has no error
// branch in the core. Threading: the thread of the Broker that calls it.
// Allocation: a store may allocate per write (SQLite does); the core's
// zero-allocation steady state (broker_alloc_test.cc) is without a store.
#ifndef RINGLAB_MQTT_STORE_H_
#define RINGLAB_MQTT_STORE_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mqtt/message.h"
#include "mqtt/packets.h"
#include "transport/time.h"

namespace ringlab::mqtt {

class BrokerStore {
 public:
  virtual ~BrokerStore() = default;

  // The retained message for its topic (replacing any earlier one).
  virtual void PutRetained(const Message& message, Timestamp now) = 0;
  virtual void DeleteRetained(std::string_view topic) = 0;

  // A persistent session was created or resumed, or its expiry interval
  // changed (a v5 DISCONNECT may change it). `expiry_interval_s` as in the
  // core (0xFFFFFFFF: never expires).
  virtual void PutSession(std::string_view client_id,
                          uint32_t expiry_interval_s) = 0;
  // The session ended (expired, clean start, or its expiry became 0); its
  // subscriptions go with it.
  virtual void DeleteSession(std::string_view client_id) = 0;
  // `filter` is the text the client sent ("$share/g/f" included).
  virtual void PutSubscription(std::string_view client_id,
                               std::string_view filter,
                               const SubscriptionOptions& options,
                               uint32_t subscription_id) = 0;
  virtual void DeleteSubscription(std::string_view client_id,
                                  std::string_view filter) = 0;
  // A QoS 1/2 message queued for a persistent session. Returns the key
  // that names it in DeleteQueued (0 if it could not be stored).
  virtual uint64_t PutQueued(std::string_view client_id, const Message& message,
                             uint8_t qos, bool retain,
                             std::span<const uint32_t> subscription_ids,
                             Timestamp now) = 0;
  // Acknowledged, expired or dropped. DeleteSession removes a session's
  // queued messages too.
  virtual void DeleteQueued(uint64_t key) = 0;
  // The queued message went out with `packet_id` (it is in flight now).
  virtual void MarkQueuedSent(uint64_t key, uint16_t packet_id) = 0;
  // Its PUBREC arrived and PUBREL went out: only PUBCOMP is left.
  virtual void MarkQueuedReleased(uint64_t key) = 0;
  // An inbound QoS 2 PUBLISH of a persistent session was accepted (PUBREC)
  // and waits for PUBREL; deleted at PUBREL. DeleteSession removes them.
  virtual void PutInboundQos2(std::string_view client_id,
                              uint16_t packet_id) = 0;
  virtual void DeleteInboundQos2(std::string_view client_id,
                                 uint16_t packet_id) = 0;
  // Exactly once across stores that commit apart (the multi-Loop broker,
  // where a QoS 2 message's copies for other Loops' sessions are written by
  // their Loops' stores): the queued records written from now until the
  // next call (client_id empty, packet_id 0 ends it) copy the inbound QoS 2
  // exchange (publisher's client id, packet id). A record so tagged counts
  // only once that exchange's packet id is stored: a restore drops tagged
  // records whose id is missing (the exchange never committed, so the
  // publisher resends it and it is routed afresh), and DeleteInboundQos2
  // and DeleteSession clear the tags of the exchange (or of every exchange
  // of that publisher) in the same change as the id. The default ignores
  // it.
  virtual void SetQueuedOrigin(std::string_view client_id, uint16_t packet_id) {
    (void)client_id;
    (void)packet_id;
  }

  // Group commit. Every change above advances written_sequence() by one;
  // durable_sequence() is the last change the store's policy has made
  // durable (committed, and fsynced if the policy says so), never above
  // written_sequence(). The core holds a PUBACK, PUBREC or PUBCOMP whose
  // packet caused changes until durable_sequence() covers them, and the
  // driver calls Broker::OnStoreDurable() after each commit to release
  // them. A store that is durable when a call returns keeps the two equal
  // (the defaults: nothing is ever held).
  virtual uint64_t written_sequence() const { return 0; }
  virtual uint64_t durable_sequence() const { return 0; }

  // The changes one packet makes between BeginGroup() and EndGroup() (a
  // PUBLISH: its retained message, the queued records of its subscribers,
  // its QoS 2 packet id) become durable together: a store that commits
  // every change on its own commits them as one transaction instead, so a
  // crash never keeps some of them (a queued record without the packet id
  // delivers the publisher's resend twice; the other way round loses it).
  // Not nested. The defaults do nothing (a store that commits whole windows
  // keeps them together already).
  virtual void BeginGroup() {}
  virtual void EndGroup() {}
};

// What a store loads at startup, handed to Broker::Restore*.
struct StoredSubscription {
  std::string filter;
  SubscriptionOptions options;
  uint32_t subscription_id = 0;
};

struct StoredRetained {
  std::string topic;
  uint8_t qos = 0;
  std::vector<std::byte> properties;  // forwarded v5 properties, wire form
  std::vector<std::byte> payload;
  // Left of the Message Expiry Interval at load time; 0: never expires.
  uint64_t expires_in_ms = 0;
};

struct StoredQueued {
  uint64_t key = 0;
  StoredRetained message;  // topic, qos of the publish, properties, payload
  uint8_t qos = 0;         // the delivery's QoS
  bool retain = false;
  std::vector<uint32_t> subscription_ids;
  // Non-zero: it was sent with this packet id and is in flight.
  uint16_t packet_id = 0;
  bool released = false;  // QoS 2: PUBREC came, PUBREL went out
};

struct StoredSession {
  std::string client_id;
  uint32_t expiry_interval_s = 0;
  std::vector<StoredSubscription> subscriptions;
  std::vector<StoredQueued> queued;  // oldest first
  // Inbound QoS 2 packet ids awaiting PUBREL.
  std::vector<uint16_t> awaiting_pubrel;
  // Broker::ExportSession: the exporting core's store has rows for this
  // session (the keys above name them), which a core importing it through
  // the same database takes over as they are.
  bool stored = false;
};

// What Load() found, for the startup report.
struct StoreLoadReport {
  uint64_t sessions = 0;
  uint64_t subscriptions = 0;
  uint64_t retained = 0;
  uint64_t queued = 0;             // QoS 1/2 messages for stored sessions
  uint64_t inflight = 0;           // of them, sent before (resent as DUP)
  uint64_t awaiting_pubrel = 0;    // inbound QoS 2 ids
  uint64_t queued_expired = 0;     // their expiry passed while down
  uint64_t retained_expired = 0;   // their expiry passed while down
  uint64_t retained_rejected = 0;  // the broker refused them (limits)
  // Queued copies of QoS 2 exchanges whose inbound packet id was never
  // stored (SetQueuedOrigin), dropped before the restore.
  uint64_t rolled_back = 0;
  std::vector<std::string> session_ids;  // the sessions restored
  std::string ToString() const;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_STORE_H_
