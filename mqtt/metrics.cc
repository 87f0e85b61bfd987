#include "mqtt/metrics.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "mqtt/internal/absl_view.h"

namespace ringlab::mqtt {

BrokerMetrics CollectMetrics(const Broker& broker,
                             const transport::LoopCounters* loop,
                             Duration uptime) {
  const BrokerCounters& c = broker.counters();
  BrokerMetrics m;
  m.uptime_s = double(uptime.count()) * 1e-9;
  m.clients_connected = broker.connection_count();
  m.sessions = broker.session_count();
  m.subscriptions = broker.subscription_count();
  m.retained = broker.retained_count();
  m.packets_received = c.packets_received;
  for (int q = 0; q < 3; ++q) {
    m.publishes_received += c.publishes_received[q];
    m.publishes_sent += c.publishes_sent[q];
  }
  m.bytes_received = c.bytes_received;
  m.bytes_sent = c.bytes_polled;
  m.connections_opened = c.connections_opened;
  m.connects_rejected = c.connects_rejected;
  m.publishes_denied = c.publishes_denied;
  m.subscribes_denied = c.subscribes_denied;
  m.deliveries_denied = c.deliveries_denied;
  m.rate_limited = c.connections_refused_rate + c.rate_limited_messages +
                   c.rate_limited_bytes;
  m.dropped = c.dropped_qos0_queue_full + c.dropped_queue_full +
              c.dropped_total_queue_full + c.dropped_offline_qos0 +
              c.dropped_expired + c.dropped_too_large;
  if (loop != nullptr) {
    m.has_loop = true;
    m.loop = *loop;
  }
  return m;
}

void ForEachSysTopic(
    const BrokerMetrics& m,
    const std::function<void(std::string_view, std::string_view)>& publish) {
  auto num = [&](std::string_view topic, uint64_t v) {
    publish(topic, absl::StrCat(v));
  };
  num("$SYS/broker/clients/connected", m.clients_connected);
  num("$SYS/broker/messages/received", m.packets_received);
  num("$SYS/broker/publish/messages/received", m.publishes_received);
  num("$SYS/broker/publish/messages/sent", m.publishes_sent);
  num("$SYS/broker/bytes/received", m.bytes_received);
  num("$SYS/broker/bytes/sent", m.bytes_sent);
  num("$SYS/broker/subscriptions/count", m.subscriptions);
  num("$SYS/broker/retained messages/count", m.retained);
  publish("$SYS/broker/uptime", absl::StrCat(uint64_t(m.uptime_s), " seconds"));
  publish("$SYS/broker/version", "ringlab_mqtt_broker");
}

std::string RenderPrometheus(const BrokerMetrics& m) {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help,
                    auto value) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                    type, "\n", name, " ", value, "\n");
  };
  metric("ringlab_mqtt_uptime_seconds", "gauge", "Seconds since start.",
         m.uptime_s);
  metric("ringlab_mqtt_clients_connected", "gauge", "Open connections.",
         m.clients_connected);
  metric("ringlab_mqtt_sessions", "gauge", "Sessions (online and offline).",
         m.sessions);
  metric("ringlab_mqtt_subscriptions", "gauge", "Subscriptions.",
         m.subscriptions);
  metric("ringlab_mqtt_retained_messages", "gauge", "Retained messages.",
         m.retained);
  metric("ringlab_mqtt_packets_received_total", "counter",
         "Control packets received.", m.packets_received);
  metric("ringlab_mqtt_publish_received_total", "counter",
         "PUBLISH packets received from clients.", m.publishes_received);
  metric("ringlab_mqtt_publish_sent_total", "counter",
         "PUBLISH packets delivered to clients.", m.publishes_sent);
  metric("ringlab_mqtt_bytes_received_total", "counter", "MQTT bytes received.",
         m.bytes_received);
  metric("ringlab_mqtt_bytes_sent_total", "counter",
         "MQTT bytes handed to the transport.", m.bytes_sent);
  metric("ringlab_mqtt_connections_opened_total", "counter",
         "TCP connections accepted by the core.", m.connections_opened);
  metric("ringlab_mqtt_connects_rejected_total", "counter",
         "CONNECTs refused with an error CONNACK.", m.connects_rejected);
  metric("ringlab_mqtt_publish_denied_total", "counter",
         "PUBLISH packets and wills refused by the ACL.", m.publishes_denied);
  metric("ringlab_mqtt_subscribe_denied_total", "counter",
         "Subscriptions refused by the ACL.", m.subscribes_denied);
  metric("ringlab_mqtt_delivery_denied_total", "counter",
         "Deliveries withheld by the ACL's read rules.", m.deliveries_denied);
  metric("ringlab_mqtt_rate_limited_total", "counter",
         "Connections refused and clients disconnected by rate limits.",
         m.rate_limited);
  metric("ringlab_mqtt_dropped_total", "counter",
         "Deliveries dropped (queue full, expired, too large, offline QoS 0).",
         m.dropped);
  if (m.has_loop) {
    const transport::LoopCounters& l = m.loop;
    metric("ringlab_loop_kernel_entries_total", "counter",
           "Kernel entries: io_uring_enter + epoll_wait + socket syscalls.",
           l.kernel_entries());
    absl::StrAppend(
        &out,
        "# HELP ringlab_loop_kernel_entries_by_kind_total Kernel entries by "
        "kind.\n# TYPE ringlab_loop_kernel_entries_by_kind_total counter\n",
        "ringlab_loop_kernel_entries_by_kind_total{kind=\"io_uring_enter\"} ",
        l.io_uring_enter, "\n",
        "ringlab_loop_kernel_entries_by_kind_total{kind=\"epoll_wait\"} ",
        l.epoll_wait, "\n",
        "ringlab_loop_kernel_entries_by_kind_total{kind=\"socket_syscalls\"} ",
        l.socket_syscalls, "\n");
    metric("ringlab_loop_submissions_total", "counter",
           "SQEs queued (io_uring) / operations started (epoll).",
           l.submissions);
    metric("ringlab_loop_completions_total", "counter",
           "CQEs reaped / emulated completions.", l.completions);
    metric("ringlab_loop_buffer_ring_misses_total", "counter",
           "Receives that found the provided buffer ring empty.",
           l.buffer_ring_misses);
    metric("ringlab_loop_pool_exhausted_total", "counter",
           "Receives dropped for want of a pool buffer.", l.pool_exhausted);
    metric("ringlab_loop_bytes_received_total", "counter",
           "Bytes received by the Loop.", l.bytes_received);
    metric("ringlab_loop_bytes_sent_total", "counter",
           "Bytes sent by the Loop.", l.bytes_sent);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    transport::Loop* loop, const Endpoint& listen,
    std::function<std::string()> render) {
  std::unique_ptr<MetricsServer> s(new MetricsServer(loop, std::move(render)));
  absl::StatusOr<transport::SocketId> listener =
      loop->ListenTcp(listen, s.get());
  if (!listener.ok()) return listener.status();
  s->listener_ = *listener;
  absl::StatusOr<Endpoint> local = loop->LocalEndpoint(*listener);
  if (!local.ok()) return local.status();
  s->local_ = *local;
  return s;
}

MetricsServer::~MetricsServer() {
  // As in BrokerDriver: copy first, since Close() may call OnClosed(),
  // which erases from the map.
  std::vector<transport::SocketId> sockets;
  for (const auto& [socket, client] : clients_) sockets.push_back(socket);
  sockets.push_back(listener_);
  clients_.clear();
  for (transport::SocketId s : sockets) loop_->Abandon(s);
}

transport::SocketHandler* MetricsServer::OnAccept(transport::SocketId,
                                                  transport::SocketId c,
                                                  const Endpoint&) {
  clients_.try_emplace(c);
  return this;
}

void MetricsServer::OnData(transport::SocketId socket,
                           transport::BufferLease data) {
  auto it = clients_.find(socket);
  if (it == clients_.end() || it->second.answered) return;
  const HttpRequestReader::Result r = it->second.reader.Feed(data.bytes());
  data.Release();
  if (r == HttpRequestReader::Result::kNeedMore) return;
  it->second.answered = true;
  ++counters_.requests;
  if (r == HttpRequestReader::Result::kMetrics) {
    ++counters_.scrapes;
  } else {
    ++counters_.errors;
  }
  Respond(it->second, socket,
          HttpResponseFor(r, r == HttpRequestReader::Result::kMetrics
                                 ? render_()
                                 : std::string()));
}

void MetricsServer::Respond(Client& client, transport::SocketId socket,
                            std::string_view response) {
  // The response may be larger than one pool buffer: send it in pieces
  // (stream sends complete in order), then FIN.
  while (!response.empty()) {
    transport::BufferLease lease = loop_->AcquireBuffer();
    if (!lease.valid()) {
      ++counters_.send_errors;
      loop_->Close(socket);
      return;
    }
    const size_t n = std::min(response.size(), lease.capacity());
    std::memcpy(lease.writable().data(), response.data(), n);
    lease.set_size(n);
    if (loop_->Send(socket, std::move(lease)) != 0) {
      ++counters_.send_errors;
      loop_->Close(socket);
      return;
    }
    ++client.sends_pending;
    response.remove_prefix(n);
  }
  if (client.sends_pending == 0) loop_->Close(socket);
}

void MetricsServer::OnReadClosed(transport::SocketId socket, int) {
  loop_->Close(socket);
}

void MetricsServer::OnSendComplete(transport::SocketId socket, int result,
                                   uint64_t) {
  if (result < 0) {
    ++counters_.send_errors;
    loop_->Close(socket);
    return;
  }
  // The whole response is with the kernel: close (FIN after the data).
  auto it = clients_.find(socket);
  if (it != clients_.end() && --it->second.sends_pending == 0 &&
      it->second.answered) {
    loop_->Close(socket);
  }
}

void MetricsServer::OnError(transport::SocketId socket, int) {
  loop_->Close(socket);
}

void MetricsServer::OnClosed(transport::SocketId socket) {
  clients_.erase(socket);
}

}  // namespace ringlab::mqtt
