// ringlab_mqtt_broker: the MQTT 3.1.1 / 5.0 broker (mqtt/broker.h) on one
// transport Loop, on any backend preset.
//
//   ringlab_mqtt_broker --backend=uring-fixed --listen=127.0.0.1:1883
//   ringlab_mqtt_broker --listen=127.0.0.1:0     # prints READY 127.0.0.1:PORT
//
// Output: one "READY host:port" line once it listens; on SIGINT or SIGTERM
// it closes every connection (v5 clients get DISCONNECT 0x8B), stops, and
// prints one "SERVER_STATS {json}" line (schema ringlab.mqtt.broker/1:
// rusage CPU, Loop counters, broker and driver counters, `messages` =
// PUBLISH packets delivered, RSS, and the 50 ms `timeline` of the runner's
// program contract). --json writes the same object to a file.
// Exit codes: 0 ok, 1 run failed, 2 usage, 3 backend unsupported here.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "bench/json_writer.h"
#include "bench/process_stats.h"
#include "mqtt/broker_driver.h"
#include "mqtt/programs/program_support.h"
#include "transport/loop.h"

namespace ringlab::mqtt::programs {
namespace {

struct Config {
  std::string backend = "auto";
  std::string listen = "127.0.0.1:1883";
  uint32_t max_connections = 100000;
  uint32_t max_packet_bytes = 1 << 20;
  uint32_t max_queued_messages = 1000;
  uint32_t max_queued_qos0 = 1000;
  uint64_t max_queued_bytes = 16 << 20;
  uint64_t max_send_queue_bytes = 256 * 1024;
  uint32_t receive_maximum = 100;
  uint32_t max_inflight = 100;
  uint32_t topic_alias_maximum = 64;
  uint32_t max_retained = 100000;
  uint32_t server_keep_alive_s = 0;
  uint32_t connect_timeout_ms = 10000;
  std::string queue_full_policy = "drop";
  uint32_t buffer_size = 2048;
  uint32_t buffer_count = 2048;
  uint32_t provided_buffers = 512;
  uint32_t queue_depth = 512;
  int cpu = -1;
  int sqpoll_cpu = -1;
  std::string json_path;
};

int Run(int argc, char** argv) {
  Config cfg;
  Flags flags("ringlab_mqtt_broker",
              "An MQTT 3.1.1 and 5.0 broker on one ringlab transport Loop "
              "(one thread).\nPrints READY host:port when listening and a "
              "SERVER_STATS JSON line on SIGINT/SIGTERM.");
  flags.Add("backend",
            "transport preset: epoll, epoll-busy, uring, uring-fixed, "
            "uring-sqpoll, uring-busy or auto",
            &cfg.backend);
  flags.Add("listen", "HOST:PORT to listen on; port 0 picks a free port",
            &cfg.listen);
  flags.Add("max_connections", "connections open at once; more are refused",
            &cfg.max_connections);
  flags.Add("max_packet_bytes",
            "largest packet accepted (advertised Maximum Packet Size); larger "
            "ones close the connection with 0x95",
            &cfg.max_packet_bytes);
  flags.Add("max_queued_messages",
            "QoS 1/2 messages queued per session (online or offline) before "
            "--queue_full_policy applies",
            &cfg.max_queued_messages);
  flags.Add("max_queued_qos0",
            "QoS 0 messages queued per connected session; more are dropped "
            "and counted (a slow subscriber)",
            &cfg.max_queued_qos0);
  flags.Add("max_queued_bytes", "QoS 1/2 bytes queued per session",
            &cfg.max_queued_bytes);
  flags.Add("max_send_queue_bytes",
            "bytes queued on one socket before the broker stops writing to "
            "it until sends complete",
            &cfg.max_send_queue_bytes);
  flags.Add("receive_maximum",
            "QoS 1/2 publishes a client may have unacknowledged (v5 Receive "
            "Maximum; excess gets DISCONNECT 0x93)",
            &cfg.receive_maximum);
  flags.Add("max_inflight",
            "outgoing QoS 1/2 window per client (capped by its Receive "
            "Maximum)",
            &cfg.max_inflight);
  flags.Add("topic_alias_maximum",
            "topic aliases accepted from and used towards v5 clients",
            &cfg.topic_alias_maximum);
  flags.Add("max_retained", "retained messages kept", &cfg.max_retained);
  flags.Add("server_keep_alive_s",
            "0: use the client's keep alive; else override it (v5 Server "
            "Keep Alive) when the client asks for 0 or more",
            &cfg.server_keep_alive_s);
  flags.Add("connect_timeout_ms",
            "a CONNECT must arrive within this time of the TCP connection",
            &cfg.connect_timeout_ms);
  flags.Add("queue_full_policy",
            "drop: a full QoS 1/2 queue drops the new message for that "
            "subscriber; disconnect: also disconnects it (0x97)",
            &cfg.queue_full_policy);
  flags.Add("buffer_size", "transport buffer size in bytes", &cfg.buffer_size);
  flags.Add("buffer_count", "transport buffers in the pool", &cfg.buffer_count);
  flags.Add("provided_buffers",
            "buffers lent to the kernel (uring-fixed family), a power of two",
            &cfg.provided_buffers);
  flags.Add("queue_depth", "io_uring SQ entries / epoll events per wait",
            &cfg.queue_depth);
  flags.Add("cpu", "pin the broker thread to this CPU (-1: no pinning)",
            &cfg.cpu);
  flags.Add("sqpoll_cpu", "CPU of the SQPOLL thread (uring-sqpoll)",
            &cfg.sqpoll_cpu);
  flags.Add("json", "also write the SERVER_STATS object to this file",
            &cfg.json_path);
  if (absl::Status s = flags.Parse(argc, argv); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  if (flags.help()) {
    std::fputs(flags.Usage().c_str(), stdout);
    return kExitOk;
  }
  absl::StatusOr<Endpoint> listen = Endpoint::Parse(cfg.listen);
  if (!listen.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: --listen: %s\n",
                 std::string(listen.status().message()).c_str());
    return kExitUsage;
  }
  if (cfg.queue_full_policy != "drop" &&
      cfg.queue_full_policy != "disconnect") {
    std::fprintf(stderr,
                 "ringlab_mqtt_broker: --queue_full_policy must be drop or "
                 "disconnect\n");
    return kExitUsage;
  }
  InstallStopHandlers();
  if (cfg.cpu >= 0) {
    if (absl::Status s = bench::PinThisThreadToCpu(cfg.cpu); !s.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_broker: %s\n",
                   std::string(s.message()).c_str());
      return kExitUsage;
    }
  }

  // Every connection is a file descriptor (and, on the uring-fixed family,
  // a slot in the registered file table): raise the soft limit as far as
  // the hard limit allows, and size the Loop to what is possible.
  const uint64_t fd_limit = RaiseFileLimit(uint64_t(cfg.max_connections) + 256);
  if (fd_limit < uint64_t(cfg.max_connections) + 256) {
    std::fprintf(
        stderr,
        "ringlab_mqtt_broker: RLIMIT_NOFILE is %llu; "
        "--max_connections lowered to %llu\n",
        static_cast<unsigned long long>(fd_limit),
        static_cast<unsigned long long>(fd_limit > 256 ? fd_limit - 256 : 0));
    cfg.max_connections = uint32_t(fd_limit > 256 ? fd_limit - 256 : 0);
  }
  transport::LoopOptions lo;
  lo.backend = cfg.backend;
  lo.buffer_size = cfg.buffer_size;
  lo.buffer_count = cfg.buffer_count;
  lo.provided_buffers = cfg.provided_buffers;
  lo.queue_depth = cfg.queue_depth;
  lo.max_sockets = cfg.max_connections + 64;
  lo.sqpoll_cpu = cfg.sqpoll_cpu;
  absl::StatusOr<std::unique_ptr<transport::Loop>> created =
      transport::Loop::Create(lo);
  if (!created.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: backend %s: %s\n",
                 cfg.backend.c_str(), created.status().ToString().c_str());
    return IsUnsupportedBackend(created.status()) ? kExitUnsupportedBackend
                                                  : kExitRunFailed;
  }
  transport::Loop& loop = **created;

  BrokerDriverOptions options;
  options.listen = *listen;
  options.max_send_queue_bytes = cfg.max_send_queue_bytes;
  BrokerOptions& b = options.broker;
  b.max_connections = cfg.max_connections;
  b.max_packet_bytes = cfg.max_packet_bytes;
  b.max_queued_messages = cfg.max_queued_messages;
  b.max_queued_qos0 = cfg.max_queued_qos0;
  b.max_queued_bytes = cfg.max_queued_bytes;
  b.receive_maximum =
      uint16_t(std::clamp<uint32_t>(cfg.receive_maximum, 1, 65535));
  b.max_inflight_messages =
      uint16_t(std::clamp<uint32_t>(cfg.max_inflight, 1, 65535));
  b.topic_alias_maximum =
      uint16_t(std::min<uint32_t>(cfg.topic_alias_maximum, 65535));
  b.max_outgoing_topic_aliases = b.topic_alias_maximum;
  b.max_retained_messages = cfg.max_retained;
  b.server_keep_alive_s =
      uint16_t(std::min<uint32_t>(cfg.server_keep_alive_s, 65535));
  b.connect_timeout = std::chrono::milliseconds(cfg.connect_timeout_ms);
  b.queue_full_policy = cfg.queue_full_policy == "disconnect"
                            ? QueueFullPolicy::kDisconnect
                            : QueueFullPolicy::kDropNewest;
  absl::StatusOr<std::unique_ptr<BrokerDriver>> driver =
      BrokerDriver::Start(&loop, options);
  if (!driver.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: cannot listen on %s: %s\n",
                 cfg.listen.c_str(), driver.status().ToString().c_str());
    return kExitRunFailed;
  }
  BrokerDriver& broker = **driver;

  const uint64_t rss_start = ResidentBytes();
  const transport::LoopCounters counters_start = loop.counters();
  const bench::CpuTime cpu_start = bench::CpuTime::Now();
  const Timestamp time_start = MonotonicNow();
  // The runner cuts this timeline at the client's measured phase
  // (experiments/README.md, "Server metrics over the client's measured
  // phase"): cumulative CPU, deliveries and kernel entries since READY.
  Timeline timeline;
  auto sample = [&](bool force) {
    const BrokerCounters& c = broker.broker().counters();
    Timeline::Sample s;
    s.t_ns = MonotonicNow().nanos();
    s.cpu_us = (bench::CpuTime::Now() - cpu_start).total_us();
    s.messages =
        c.publishes_sent[0] + c.publishes_sent[1] + c.publishes_sent[2];
    s.kernel_entries = loop.counters().Delta(counters_start).kernel_entries();
    s.rss_kib = ResidentBytes() / 1024;
    s.connections = broker.broker().connection_count();
    timeline.Add(s, force);
  };
  sample(true);  // before any client: the RSS baseline
  constexpr int kTickMs = 50;

  // Signals only set a flag; this timer notices it on the Loop's thread,
  // shuts the broker down, and lets the goodbyes drain before stopping.
  bool stopping = false;
  Timestamp stop_at = Timestamp::Never();
  loop.AddTimer(MonotonicNow() + std::chrono::milliseconds(kTickMs),
                std::chrono::milliseconds(kTickMs), [&](Timestamp now) {
                  if (!stopping) sample(false);
                  if (!stopping && stop_requested()) {
                    stopping = true;
                    sample(true);  // the last point before shutting down
                    broker.Shutdown();
                    stop_at = now + std::chrono::milliseconds(200);
                  }
                  if (stopping && now >= stop_at) loop.Stop();
                });
  std::printf("READY %s\n", broker.local_endpoint().ToString().c_str());
  std::fflush(stdout);

  const absl::Status run = stop_requested() ? absl::OkStatus() : loop.Run();
  const Timestamp time_end = MonotonicNow();
  const bench::CpuTime cpu = bench::CpuTime::Now() - cpu_start;
  const transport::LoopCounters lc = loop.counters().Delta(counters_start);
  if (!run.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: loop failed: %s\n",
                 run.ToString().c_str());
  }

  const BrokerCounters& bc = broker.broker().counters();
  const uint64_t delivered =
      bc.publishes_sent[0] + bc.publishes_sent[1] + bc.publishes_sent[2];
  const uint64_t received = bc.publishes_received[0] +
                            bc.publishes_received[1] + bc.publishes_received[2];
  bench::JsonWriter json;
  json.BeginObject();
  json.Key("schema").String("ringlab.mqtt.broker/1");
  json.Key("program").String("ringlab_mqtt_broker");
  json.Key("role").String("server");
  json.Key("protocol").String("mqtt");
  AppendBackend(json, loop.backend());
  json.Key("listen").String(broker.local_endpoint().ToString());
  json.Key("duration_s").Number((time_end - time_start).count() / 1e9);
  json.Key("cpu_us").Int(cpu.total_us());
  json.Key("cpu_user_us").Int(cpu.user_us);
  json.Key("cpu_system_us").Int(cpu.system_us);
  json.Key("messages").Uint(delivered);
  json.Key("messages_received").Uint(received);
  json.Key("kernel_entries").Uint(lc.kernel_entries());
  json.Key("connections_accepted").Uint(broker.counters().accepted);
  json.Key("rss_bytes_start").Uint(rss_start);
  json.Key("rss_kib_ready").Uint(rss_start / 1024);
  json.Key("rss_bytes_end").Uint(ResidentBytes());
  json.Key("timeline");
  timeline.AppendJson(json, kTickMs);
  json.Key("counters");
  AppendCounters(json, lc);
  json.Key("broker").BeginObject();
  json.Key("connections_opened").Uint(bc.connections_opened);
  json.Key("connections_refused_limit").Uint(bc.connections_refused_limit);
  json.Key("connects_accepted").Uint(bc.connects_accepted);
  json.Key("connects_rejected").Uint(bc.connects_rejected);
  json.Key("connect_timeouts").Uint(bc.connect_timeouts);
  json.Key("keepalive_timeouts").Uint(bc.keepalive_timeouts);
  json.Key("first_packet_not_connect").Uint(bc.first_packet_not_connect);
  json.Key("malformed_packets").Uint(bc.malformed_packets);
  json.Key("protocol_errors").Uint(bc.protocol_errors);
  json.Key("packets_too_large").Uint(bc.packets_too_large);
  json.Key("session_takeovers").Uint(bc.session_takeovers);
  json.Key("publishes_received").BeginArray();
  for (uint64_t v : bc.publishes_received) json.Uint(v);
  json.EndArray();
  json.Key("publishes_sent").BeginArray();
  for (uint64_t v : bc.publishes_sent) json.Uint(v);
  json.EndArray();
  json.Key("publishes_resent").Uint(bc.publishes_resent);
  json.Key("dropped_qos0_queue_full").Uint(bc.dropped_qos0_queue_full);
  json.Key("dropped_queue_full").Uint(bc.dropped_queue_full);
  json.Key("dropped_offline_qos0").Uint(bc.dropped_offline_qos0);
  json.Key("dropped_expired").Uint(bc.dropped_expired);
  json.Key("dropped_too_large").Uint(bc.dropped_too_large);
  json.Key("wills_published").Uint(bc.wills_published);
  json.Key("bytes_received").Uint(bc.bytes_received);
  json.Key("bytes_polled").Uint(bc.bytes_polled);
  json.EndObject();
  const BrokerDriverCounters& dc = broker.counters();
  json.Key("driver").BeginObject();
  json.Key("accepted").Uint(dc.accepted);
  json.Key("refused").Uint(dc.refused);
  json.Key("send_errors").Uint(dc.send_errors);
  json.Key("blocked").Uint(dc.blocked);
  json.Key("pool_low").Uint(dc.pool_low);
  json.Key("pool_exhausted_closes").Uint(dc.pool_exhausted_closes);
  json.Key("leases_sent").Uint(dc.leases_sent);
  json.Key("linger_closes").Uint(dc.linger_closes);
  json.EndObject();
  json.Key("cpu").Int(cfg.cpu);
  json.EndObject();
  std::printf("SERVER_STATS %s\n", json.str().c_str());
  std::fflush(stdout);
  int exit_code = run.ok() ? kExitOk : kExitRunFailed;
  if (!cfg.json_path.empty()) {
    if (absl::Status s = WriteTextFile(cfg.json_path, json.str()); !s.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_broker: %s\n",
                   std::string(s.message()).c_str());
      exit_code = kExitRunFailed;
    }
  }
  // The driver goes before the Loop: it closes its sockets on the Loop.
  driver->reset();
  return exit_code;
}

}  // namespace
}  // namespace ringlab::mqtt::programs

int main(int argc, char** argv) {
  return ringlab::mqtt::programs::Run(argc, argv);
}
