// The broker's output pieces, shared by the one-Loop broker (broker_main.cc)
// and the N-Loop one (broker_multi.cc), so that both print every counter
// under the same names (schema ringlab.mqtt.broker/1) and start /metrics the
// same way.
//
//   BrokerCounters total;
//   for (...) AddBrokerCounters(driver.broker().counters(), &total);
//   json.Key("broker");
//   AppendBrokerCounters(json, total);
//   return EmitServerStats(json.str(), json_path, exit_code);
//
// Plain functions on caller-owned values; no state, no threads.
#ifndef RINGLAB_MQTT_PROGRAMS_BROKER_STATS_H_
#define RINGLAB_MQTT_PROGRAMS_BROKER_STATS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "bench/json_writer.h"
#include "mqtt/broker.h"
#include "mqtt/broker_driver.h"
#include "mqtt/metrics.h"
#include "mqtt/tls_stream.h"

namespace ringlab::mqtt::programs {

// `into` += `from`, field by field (the N-Loop broker's totals).
void AddBrokerCounters(const BrokerCounters& from, BrokerCounters* into);
void AddDriverCounters(const BrokerDriverCounters& from,
                       BrokerDriverCounters* into);
void AddTlsCounters(const TlsCounters& from, TlsCounters* into);

// PUBLISH packets delivered to subscribers / received from publishers, over
// every QoS.
uint64_t PublishesSent(const BrokerCounters& c);
uint64_t PublishesReceived(const BrokerCounters& c);

// One JSON object with every field of the counters.
void AppendBrokerCounters(bench::JsonWriter& json, const BrokerCounters& c);
void AppendDriverCounters(bench::JsonWriter& json,
                          const BrokerDriverCounters& c);
void AppendTlsCounters(bench::JsonWriter& json, const TlsCounters& t);

// Prints "SERVER_STATS <json>" on stdout and, when `json_path` is not empty,
// writes the JSON there too. Returns `exit_code`, or kExitRunFailed when the
// file could not be written (the reason goes to stderr).
int EmitServerStats(const std::string& json, const std::string& json_path,
                    int exit_code);

// Starts the Prometheus server on `loop` at `listen` and prints
// "METRICS host:port" (the line the runner and the tests read). On failure
// prints "ringlab_mqtt_broker: --metrics_port: <status>" to stderr and
// returns nullptr (the caller exits with kExitRunFailed).
std::unique_ptr<MetricsServer> StartMetricsServerOrReport(
    transport::Loop* loop, const Endpoint& listen,
    std::function<std::string()> render);

}  // namespace ringlab::mqtt::programs

#endif  // RINGLAB_MQTT_PROGRAMS_BROKER_STATS_H_
