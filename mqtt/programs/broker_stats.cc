#include "mqtt/programs/broker_stats.h"

#include <cstdio>
#include <utility>

#include "mqtt/programs/program_support.h"

namespace ringlab::mqtt::programs {

// Every field is listed once below. A field added to a struct and not here
// would be summed and printed by neither broker: the sizes stop the build.
static_assert(sizeof(BrokerCounters) == 49 * sizeof(uint64_t),
              "list the new BrokerCounters field in broker_stats.cc");
static_assert(sizeof(BrokerDriverCounters) == 14 * sizeof(uint64_t),
              "list the new BrokerDriverCounters field in broker_stats.cc");
static_assert(sizeof(TlsCounters) == 20 * sizeof(uint64_t),
              "list the new TlsCounters field in RINGLAB_TLS_COUNTERS");

// One list drives AddTlsCounters and AppendTlsCounters.
// clang-format off
#define RINGLAB_TLS_COUNTERS(X) \
  X(handshakes_started)         \
  X(handshakes_completed)       \
  X(failed_not_tls)             \
  X(failed_peer_alert)          \
  X(failed_verify)              \
  X(failed_no_peer_cert)        \
  X(failed_protocol)            \
  X(peer_close_notify)          \
  X(ktls_tx)                    \
  X(ktls_rx)                    \
  X(ktls_unavailable)           \
  X(ktls_failed)                \
  X(ktls_rx_multishot)          \
  X(ktls_rx_not_at_boundary)    \
  X(ktls_control_records)       \
  X(plaintext_bytes_in)         \
  X(plaintext_bytes_out)        \
  X(ciphertext_bytes_in)        \
  X(ciphertext_bytes_out)       \
  X(pool_empty)
// clang-format on

void AddTlsCounters(const TlsCounters& from, TlsCounters* into) {
#define RINGLAB_ADD(f) into->f += from.f;
  RINGLAB_TLS_COUNTERS(RINGLAB_ADD)
#undef RINGLAB_ADD
}

void AppendTlsCounters(bench::JsonWriter& json, const TlsCounters& t) {
  json.BeginObject();
#define RINGLAB_APPEND(f) json.Key(#f).Uint(t.f);
  RINGLAB_TLS_COUNTERS(RINGLAB_APPEND)
#undef RINGLAB_APPEND
  json.EndObject();
}

void AddBrokerCounters(const BrokerCounters& from, BrokerCounters* into) {
  into->connections_opened += from.connections_opened;
  into->connections_refused_limit += from.connections_refused_limit;
  into->connections_refused_rate += from.connections_refused_rate;
  into->rate_limited_messages += from.rate_limited_messages;
  into->rate_limited_bytes += from.rate_limited_bytes;
  into->connections_closed += from.connections_closed;
  into->connects_accepted += from.connects_accepted;
  into->connects_rejected += from.connects_rejected;
  into->connect_timeouts += from.connect_timeouts;
  into->keepalive_timeouts += from.keepalive_timeouts;
  into->first_packet_not_connect += from.first_packet_not_connect;
  into->malformed_packets += from.malformed_packets;
  into->protocol_errors += from.protocol_errors;
  into->packets_too_large += from.packets_too_large;
  into->receive_maximum_exceeded += from.receive_maximum_exceeded;
  into->session_takeovers += from.session_takeovers;
  into->sessions_created += from.sessions_created;
  into->sessions_resumed += from.sessions_resumed;
  into->sessions_expired += from.sessions_expired;
  into->packets_received += from.packets_received;
  into->bytes_received += from.bytes_received;
  into->bytes_polled += from.bytes_polled;
  for (int q = 0; q < 3; ++q)
    into->publishes_received[q] += from.publishes_received[q];
  for (int q = 0; q < 3; ++q) into->publishes_sent[q] += from.publishes_sent[q];
  into->publishes_resent += from.publishes_resent;
  into->publishes_no_subscribers += from.publishes_no_subscribers;
  into->publishes_denied += from.publishes_denied;
  into->subscribes_denied += from.subscribes_denied;
  into->deliveries_denied += from.deliveries_denied;
  into->dropped_qos0_queue_full += from.dropped_qos0_queue_full;
  into->dropped_queue_full += from.dropped_queue_full;
  into->dropped_total_queue_full += from.dropped_total_queue_full;
  into->dropped_offline_qos0 += from.dropped_offline_qos0;
  into->dropped_expired += from.dropped_expired;
  into->dropped_too_large += from.dropped_too_large;
  into->acks_unknown += from.acks_unknown;
  into->acks_held += from.acks_held;
  into->publishes_held += from.publishes_held;
  into->retained_dropped_limit += from.retained_dropped_limit;
  into->connects_parked += from.connects_parked;
  into->sessions_exported += from.sessions_exported;
  into->sessions_imported += from.sessions_imported;
  into->wills_published += from.wills_published;
  into->subscribes += from.subscribes;
  into->unsubscribes += from.unsubscribes;
}

void AddDriverCounters(const BrokerDriverCounters& from,
                       BrokerDriverCounters* into) {
  into->accepted += from.accepted;
  into->refused += from.refused;
  into->closed += from.closed;
  into->send_errors += from.send_errors;
  into->blocked += from.blocked;
  into->pool_low += from.pool_low;
  into->pool_exhausted_closes += from.pool_exhausted_closes;
  into->leases_sent += from.leases_sent;
  into->linger_closes += from.linger_closes;
  into->send_refused_closes += from.send_refused_closes;
  into->writable += from.writable;
  into->shared_sends += from.shared_sends;
  into->payload_bytes_copied += from.payload_bytes_copied;
  into->sends_deferred += from.sends_deferred;
}

uint64_t PublishesSent(const BrokerCounters& c) {
  return c.publishes_sent[0] + c.publishes_sent[1] + c.publishes_sent[2];
}
uint64_t PublishesReceived(const BrokerCounters& c) {
  return c.publishes_received[0] + c.publishes_received[1] +
         c.publishes_received[2];
}

void AppendBrokerCounters(bench::JsonWriter& json, const BrokerCounters& c) {
  json.BeginObject();
  json.Key("connections_opened").Uint(c.connections_opened);
  json.Key("connections_refused_limit").Uint(c.connections_refused_limit);
  json.Key("connections_refused_rate").Uint(c.connections_refused_rate);
  json.Key("rate_limited_messages").Uint(c.rate_limited_messages);
  json.Key("rate_limited_bytes").Uint(c.rate_limited_bytes);
  json.Key("connections_closed").Uint(c.connections_closed);
  json.Key("connects_accepted").Uint(c.connects_accepted);
  json.Key("connects_rejected").Uint(c.connects_rejected);
  json.Key("connect_timeouts").Uint(c.connect_timeouts);
  json.Key("keepalive_timeouts").Uint(c.keepalive_timeouts);
  json.Key("first_packet_not_connect").Uint(c.first_packet_not_connect);
  json.Key("malformed_packets").Uint(c.malformed_packets);
  json.Key("protocol_errors").Uint(c.protocol_errors);
  json.Key("packets_too_large").Uint(c.packets_too_large);
  json.Key("receive_maximum_exceeded").Uint(c.receive_maximum_exceeded);
  json.Key("session_takeovers").Uint(c.session_takeovers);
  json.Key("sessions_created").Uint(c.sessions_created);
  json.Key("sessions_resumed").Uint(c.sessions_resumed);
  json.Key("sessions_expired").Uint(c.sessions_expired);
  json.Key("packets_received").Uint(c.packets_received);
  json.Key("bytes_received").Uint(c.bytes_received);
  json.Key("bytes_polled").Uint(c.bytes_polled);
  json.Key("publishes_received").BeginArray();
  for (uint64_t v : c.publishes_received) json.Uint(v);
  json.EndArray();
  json.Key("publishes_sent").BeginArray();
  for (uint64_t v : c.publishes_sent) json.Uint(v);
  json.EndArray();
  json.Key("publishes_resent").Uint(c.publishes_resent);
  json.Key("publishes_no_subscribers").Uint(c.publishes_no_subscribers);
  json.Key("publishes_denied").Uint(c.publishes_denied);
  json.Key("subscribes_denied").Uint(c.subscribes_denied);
  json.Key("deliveries_denied").Uint(c.deliveries_denied);
  json.Key("dropped_qos0_queue_full").Uint(c.dropped_qos0_queue_full);
  json.Key("dropped_queue_full").Uint(c.dropped_queue_full);
  json.Key("dropped_total_queue_full").Uint(c.dropped_total_queue_full);
  json.Key("dropped_offline_qos0").Uint(c.dropped_offline_qos0);
  json.Key("dropped_expired").Uint(c.dropped_expired);
  json.Key("dropped_too_large").Uint(c.dropped_too_large);
  json.Key("acks_unknown").Uint(c.acks_unknown);
  json.Key("acks_held").Uint(c.acks_held);
  json.Key("publishes_held").Uint(c.publishes_held);
  json.Key("retained_dropped_limit").Uint(c.retained_dropped_limit);
  json.Key("connects_parked").Uint(c.connects_parked);
  json.Key("sessions_exported").Uint(c.sessions_exported);
  json.Key("sessions_imported").Uint(c.sessions_imported);
  json.Key("wills_published").Uint(c.wills_published);
  json.Key("subscribes").Uint(c.subscribes);
  json.Key("unsubscribes").Uint(c.unsubscribes);
  json.EndObject();
}

void AppendDriverCounters(bench::JsonWriter& json,
                          const BrokerDriverCounters& c) {
  json.BeginObject();
  json.Key("accepted").Uint(c.accepted);
  json.Key("refused").Uint(c.refused);
  json.Key("closed").Uint(c.closed);
  json.Key("send_errors").Uint(c.send_errors);
  json.Key("blocked").Uint(c.blocked);
  json.Key("pool_low").Uint(c.pool_low);
  json.Key("pool_exhausted_closes").Uint(c.pool_exhausted_closes);
  json.Key("leases_sent").Uint(c.leases_sent);
  json.Key("linger_closes").Uint(c.linger_closes);
  json.Key("send_refused_closes").Uint(c.send_refused_closes);
  json.Key("writable").Uint(c.writable);
  json.Key("shared_sends").Uint(c.shared_sends);
  json.Key("payload_bytes_copied").Uint(c.payload_bytes_copied);
  json.Key("sends_deferred").Uint(c.sends_deferred);
  json.EndObject();
}

int EmitServerStats(const std::string& json, const std::string& json_path,
                    int exit_code) {
  std::printf("SERVER_STATS %s\n", json.c_str());
  std::fflush(stdout);
  if (!json_path.empty()) {
    if (absl::Status s = WriteTextFile(json_path, json); !s.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_broker: %s\n",
                   std::string(s.message()).c_str());
      return kExitRunFailed;
    }
  }
  return exit_code;
}

std::unique_ptr<MetricsServer> StartMetricsServerOrReport(
    transport::Loop* loop, const Endpoint& listen,
    std::function<std::string()> render) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> m =
      MetricsServer::Start(loop, listen, std::move(render));
  if (!m.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: --metrics_port: %s\n",
                 m.status().ToString().c_str());
    return nullptr;
  }
  std::printf("METRICS %s\n", (*m)->local_endpoint().ToString().c_str());
  return *std::move(m);
}

}  // namespace ringlab::mqtt::programs
