// Broker metrics: one snapshot of the figures operators watch, published
// as mosquitto-style $SYS topics and served as Prometheus text on /metrics
// by a tiny HTTP responder on the broker's Loop.
//
//   BrokerMetrics m = CollectMetrics(driver.broker(), &loop.counters(),
//                                    loop.now() - started);
//   driver.Publish(...)  // via PublishSys(m, [&](topic, payload) {...})
//   std::string text = RenderPrometheus(m);
//
//   auto server = MetricsServer::Start(&loop, Endpoint::Loopback(9100),
//                                      [&] { return RenderPrometheus(...); });
//   // curl http://127.0.0.1:9100/metrics
//
// $SYS topics (retained, QoS 0, like mosquitto's; payloads are decimal
// text): $SYS/broker/clients/connected, .../messages/received (packets of
// any type), .../publish/messages/received and .../publish/messages/sent
// (PUBLISH packets), .../bytes/received, .../bytes/sent, .../subscriptions/
// count, .../retained messages/count, .../uptime ("N seconds"),
// .../version. Prometheus metric names are prefixed ringlab_mqtt_ and add
// the transport's counters (kernel entries by kind, submissions,
// completions, buffer-ring misses, pool exhaustion) under ringlab_loop_.
//
// HTTP (MetricsServer): GET /metrics answers 200 text/plain version 0.0.4;
// any other path 404, any other method 405, a request head over 8 KiB or
// not HTTP/1.x 400. One request per connection: the answer ends with
// "Connection: close", and the socket is closed once the response is
// sent, so an idle scraper holds nothing. Ownership: the server borrows the
// Loop (which must outlive it). Threading: the Loop's thread. The hot path is
// untouched: figures are read from counters when asked.
#ifndef RINGLAB_MQTT_METRICS_H_
#define RINGLAB_MQTT_METRICS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "mqtt/broker.h"
#include "mqtt/internal/http_request.h"
#include "transport/counters.h"
#include "transport/loop.h"

namespace ringlab::mqtt {

struct BrokerMetrics {
  double uptime_s = 0;
  uint64_t clients_connected = 0;
  uint64_t sessions = 0;
  uint64_t subscriptions = 0;
  uint64_t retained = 0;
  uint64_t packets_received = 0;
  uint64_t publishes_received = 0;
  uint64_t publishes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;  // handed to the transport
  uint64_t connections_opened = 0;
  uint64_t connects_rejected = 0;
  uint64_t publishes_denied = 0;
  uint64_t subscribes_denied = 0;
  uint64_t deliveries_denied = 0;
  uint64_t rate_limited = 0;  // connections refused + clients disconnected
  uint64_t dropped = 0;       // queue full, expired, too large, offline QoS 0
  bool has_loop = false;
  transport::LoopCounters loop;
};

// `loop` may be null (no transport figures).
BrokerMetrics CollectMetrics(const Broker& broker,
                             const transport::LoopCounters* loop,
                             Duration uptime);

// Calls publish(topic, payload) for every $SYS figure.
void ForEachSysTopic(
    const BrokerMetrics& m,
    const std::function<void(std::string_view, std::string_view)>& publish);

std::string RenderPrometheus(const BrokerMetrics& m);

struct MetricsServerCounters {
  uint64_t requests = 0;  // complete request heads
  uint64_t scrapes = 0;   // 200 responses
  uint64_t errors = 0;    // 4xx responses
  uint64_t send_errors = 0;
};

class MetricsServer : public transport::SocketHandler {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      transport::Loop* loop, const Endpoint& listen,
      std::function<std::string()> render);
  ~MetricsServer() override;

  Endpoint local_endpoint() const { return local_; }
  const MetricsServerCounters& counters() const { return counters_; }

  transport::SocketHandler* OnAccept(transport::SocketId listener,
                                     transport::SocketId connection,
                                     const Endpoint& peer) override;
  void OnData(transport::SocketId socket, transport::BufferLease data) override;
  void OnReadClosed(transport::SocketId socket, int result) override;
  void OnSendComplete(transport::SocketId socket, int result,
                      uint64_t tag) override;
  void OnError(transport::SocketId socket, int error) override;
  void OnClosed(transport::SocketId socket) override;

 private:
  MetricsServer(transport::Loop* loop, std::function<std::string()> render)
      : loop_(loop), render_(std::move(render)) {}
  struct Client;
  void Respond(Client& client, transport::SocketId socket,
               std::string_view response);

  transport::Loop* loop_;
  std::function<std::string()> render_;
  transport::SocketId listener_;
  Endpoint local_;
  struct Client {
    HttpRequestReader reader;
    bool answered = false;
    uint32_t sends_pending = 0;
  };
  absl::flat_hash_map<transport::SocketId, Client> clients_;
  MetricsServerCounters counters_;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_METRICS_H_
