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
//   ...  // on the Loop: at (*store)->NextFlushDeadline(), Flush()
//
// What persists (today): retained messages, and persistent sessions (a
// Session Expiry Interval above 0, or 3.1.1 Clean Session 0) with their
// subscriptions. Queued offline messages and QoS 1/2 in-flight state are not
// stored yet: after a restart a resumed session has its subscriptions but
// an empty queue.
//
// Time: the core's Timestamps are monotonic and mean nothing after a
// restart, so a method that carries an expiry also gets `now`; the store
// keeps the remaining time against its own wall clock.
//
// Errors: the write methods return nothing; an implementation counts and
// remembers its first failure (status()), so the hot path has no error
// branch in the core. Threading: the thread of the Broker that calls it.
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
};

// What a store loads at startup, handed to Broker::Restore*.
struct StoredSubscription {
  std::string filter;
  SubscriptionOptions options;
  uint32_t subscription_id = 0;
};

struct StoredSession {
  std::string client_id;
  uint32_t expiry_interval_s = 0;
  std::vector<StoredSubscription> subscriptions;
};

struct StoredRetained {
  std::string topic;
  uint8_t qos = 0;
  std::vector<std::byte> properties;  // forwarded v5 properties, wire form
  std::vector<std::byte> payload;
  // Left of the Message Expiry Interval at load time; 0: never expires.
  uint64_t expires_in_ms = 0;
};

// What Load() found, for the startup report.
struct StoreLoadReport {
  uint64_t sessions = 0;
  uint64_t subscriptions = 0;
  uint64_t retained = 0;
  uint64_t retained_expired = 0;   // their expiry passed while down
  uint64_t retained_rejected = 0;  // the broker refused them (limits)
  std::string ToString() const;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_STORE_H_
