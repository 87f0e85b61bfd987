// ringlab_mqtt_broker --threads=N (N > 1): the broker on N Loops on N
// threads (mqtt/multi_broker.h). broker_main.cc builds the options as for
// one Loop and hands them, with the Loop it created, to RunMultiLoop; the
// output contract is the same (READY host:port, SERVER_STATS {json} with
// the figures summed over the Loops, plus "threads", "cross_loop" and
// "per_loop"). $SYS and /metrics carry the sums too.
#ifndef RINGLAB_MQTT_PROGRAMS_BROKER_MULTI_H_
#define RINGLAB_MQTT_PROGRAMS_BROKER_MULTI_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "mqtt/broker_driver.h"
#include "mqtt/store_sqlite.h"
#include "mqtt/tls_listener.h"
#include "transport/loop.h"

namespace ringlab::mqtt::programs {

struct MultiLoopConfig {
  uint32_t threads = 2;
  std::string notify = "auto";  // auto | eventfd | msg_ring
  std::string json_path;
  uint32_t sys_interval_s = 0;
  // Prometheus /metrics, served on Loop 0 from a snapshot of every Loop
  // that the control thread refreshes every 250 ms (prints METRICS
  // host:port before READY).
  std::optional<Endpoint> metrics_listen;
  // A TLS listener on every Loop (tls_listener.h), all on one port
  // (SO_REUSEPORT; port 0 picks one for all); prints TLS_READY host:port
  // before READY.
  std::optional<TlsListenerOptions> tls;
  int first_cpu = -1;
  // --data-dir: one database, a store per Loop (multi_broker.h); prints
  // "STORE loaded ..." as the one-Loop broker does.
  std::optional<SqliteStoreOptions> store;
  std::string fsync_name;  // for that line
  // Builds one authenticator per Loop (nullptr: the driver options' one,
  // or none).
  std::function<std::unique_ptr<BrokerAuthenticator>()> make_authenticator;
};

// Returns the program's exit code. `first` becomes Loop 0.
int RunMultiLoop(std::unique_ptr<transport::Loop> first,
                 const transport::LoopOptions& loop_options,
                 const BrokerDriverOptions& driver_options,
                 const MultiLoopConfig& config);

}  // namespace ringlab::mqtt::programs

#endif  // RINGLAB_MQTT_PROGRAMS_BROKER_MULTI_H_
