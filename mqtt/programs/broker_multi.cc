#include "mqtt/programs/broker_multi.h"

#include <cstdio>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bench/json_writer.h"
#include "bench/process_stats.h"
#include "mqtt/metrics.h"
#include "mqtt/multi_broker.h"
#include "mqtt/programs/broker_stats.h"
#include "mqtt/programs/program_support.h"
#include "mqtt/tls_listener.h"

namespace ringlab::mqtt::programs {
namespace {

constexpr int kTickMs = 50;
// How stale a /metrics scrape may be: the Loops' figures are gathered on
// their own threads, so a scrape served on Loop 0 reads a snapshot.
constexpr int kMetricsRefreshMs = 250;

const char* NotifyName(transport::ChannelNotify n) {
  switch (n) {
    case transport::ChannelNotify::kMsgRing:
      return "msg_ring";
    case transport::ChannelNotify::kEventfd:
      return "eventfd";
    case transport::ChannelNotify::kAuto:
      break;
  }
  return "auto";
}

void Add(BrokerMetrics& sum, const BrokerMetrics& m) {
  sum.uptime_s = m.uptime_s;
  sum.clients_connected += m.clients_connected;
  sum.sessions += m.sessions;
  sum.subscriptions += m.subscriptions;
  // Every Loop holds every retained message: the set, not the sum.
  sum.retained = std::max(sum.retained, m.retained);
  sum.packets_received += m.packets_received;
  sum.publishes_received += m.publishes_received;
  sum.publishes_sent += m.publishes_sent;
  sum.bytes_received += m.bytes_received;
  sum.bytes_sent += m.bytes_sent;
  sum.connections_opened += m.connections_opened;
  sum.connects_rejected += m.connects_rejected;
  sum.publishes_denied += m.publishes_denied;
  sum.subscribes_denied += m.subscribes_denied;
  sum.deliveries_denied += m.deliveries_denied;
  sum.rate_limited += m.rate_limited;
  sum.dropped += m.dropped;
  if (m.has_loop) {
    sum.has_loop = true;
    sum.loop += m.loop;
  }
}

// Every Loop reports its figures on its own thread (with its transport
// counters when `with_loop`), and the caller gets their sum; nullopt if a
// Loop did not answer within 2 s (it stopped).
std::optional<BrokerMetrics> GatherMetrics(MultiBroker& mb,
                                           Timestamp started_at,
                                           bool with_loop) {
  struct Parts {
    absl::Mutex mu;
    std::vector<BrokerMetrics> parts ABSL_GUARDED_BY(mu);
    size_t done ABSL_GUARDED_BY(mu) = 0;
  };
  const size_t n = mb.size();
  auto state = std::make_shared<Parts>();
  {
    absl::MutexLock lock(&state->mu);
    state->parts.resize(n);
  }
  mb.PostToAll([&mb, state, started_at, with_loop](size_t i) {
    BrokerMetrics m = CollectMetrics(
        mb.driver(i).broker(), with_loop ? &mb.loop(i).counters() : nullptr,
        mb.loop(i).now() - started_at);
    absl::MutexLock lock(&state->mu);
    state->parts[i] = m;
    ++state->done;
  });
  std::vector<BrokerMetrics> parts;
  {
    absl::MutexLock lock(&state->mu);
    auto all = [&state, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) {
      return state->done == n;
    };
    state->mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(2));
    if (state->done != n) return std::nullopt;
    parts = state->parts;
  }
  BrokerMetrics sum;
  for (const BrokerMetrics& m : parts) Add(sum, m);
  return sum;
}

// $SYS over N Loops: the control thread sums the Loops' figures, and every
// Loop publishes the sums to its own subscribers (a message injected on one
// Loop is not forwarded).
void PublishSys(MultiBroker& mb, Timestamp started_at) {
  std::optional<BrokerMetrics> sum = GatherMetrics(mb, started_at, false);
  if (!sum.has_value()) return;
  auto topics =
      std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  ForEachSysTopic(*sum, [&](std::string_view topic, std::string_view payload) {
    topics->emplace_back(std::string(topic), std::string(payload));
  });
  mb.PostToAll([&mb, topics](size_t i) {
    for (const auto& [topic, payload] : *topics) {
      InjectedMessage m;
      m.topic = topic;
      m.payload = AsBytes(payload);
      m.retain = true;
      mb.driver(i).Publish(m);
    }
  });
}

// The text Loop 0's MetricsServer answers with: written by the control
// thread, read by Loop 0.
struct MetricsText {
  absl::Mutex mu;
  std::string text ABSL_GUARDED_BY(mu);
  void Set(std::string t) {
    absl::MutexLock lock(&mu);
    text = std::move(t);
  }
  std::string Get() {
    absl::MutexLock lock(&mu);
    return text;
  }
};

}  // namespace

int RunMultiLoop(std::unique_ptr<transport::Loop> first,
                 const transport::LoopOptions& loop_options,
                 const BrokerDriverOptions& driver_options,
                 const MultiLoopConfig& config) {
  MultiBrokerOptions o;
  o.threads = config.threads;
  o.loop = loop_options;
  o.driver = driver_options;
  o.make_authenticator = config.make_authenticator;
  o.first_cpu = config.first_cpu;
  o.store = config.store;
  if (config.notify == "eventfd") {
    o.channel.notify = transport::ChannelNotify::kEventfd;
  } else if (config.notify == "msg_ring") {
    o.channel.notify = transport::ChannelNotify::kMsgRing;
  } else if (config.notify != "auto") {
    std::fprintf(stderr,
                 "ringlab_mqtt_broker: --cross_loop_notify must be auto, "
                 "eventfd or msg_ring\n");
    return kExitUsage;
  }
  // One TLS listener per Loop, each the handler of the TLS connections its
  // Loop accepts. They borrow their Loop's driver, so they go before the
  // MultiBroker (TlsListeners::~TlsListeners runs first: declared after it).
  auto tls = std::make_shared<std::vector<std::unique_ptr<TlsListener>>>();
  if (config.tls.has_value()) {
    o.before_shutdown = [tls](size_t i) {
      if (i < tls->size()) (*tls)[i]->Shutdown();
    };
  }
  absl::StatusOr<std::unique_ptr<MultiBroker>> created =
      MultiBroker::Create(std::move(o), std::move(first));
  if (!created.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_broker: --threads=%u: %s\n",
                 config.threads, created.status().ToString().c_str());
    return IsUnsupportedBackend(created.status()) ? kExitUnsupportedBackend
                                                  : kExitRunFailed;
  }
  MultiBroker& mb = **created;
  if (config.store.has_value()) {
    std::fprintf(stderr, "STORE loaded %s from %s (fsync=%s, %zu Loops)\n",
                 mb.store_loaded().ToString().c_str(),
                 mb.store(0)->path().c_str(), config.fsync_name.c_str(),
                 mb.size());
  }
  struct TlsListeners {
    std::vector<std::unique_ptr<TlsListener>>* listeners;
    ~TlsListeners() { listeners->clear(); }
  } tls_owner{tls.get()};
  if (config.tls.has_value()) {
    // The Loops are not running yet: each listener is set up from here.
    for (size_t i = 0; i < mb.size(); ++i) {
      TlsListenerOptions to = *config.tls;
      to.tcp = driver_options.tcp;
      to.tcp->reuse_port = true;
      if (i > 0) to.listen = (*tls)[0]->local_endpoint();  // Loop 0's port
      absl::StatusOr<std::unique_ptr<TlsListener>> l =
          TlsListener::Start(&mb.loop(i), &mb.driver(i), std::move(to));
      if (!l.ok()) {
        std::fprintf(stderr, "ringlab_mqtt_broker: cannot listen on %s: %s\n",
                     config.tls->listen.ToString().c_str(),
                     l.status().ToString().c_str());
        return kExitRunFailed;
      }
      tls->push_back(*std::move(l));
    }
  }
  if (mb.notify_mode() != transport::ChannelNotify::kMsgRing &&
      config.notify != "eventfd") {
    std::fprintf(stderr, "ringlab_mqtt_broker: cross-Loop wakeup: %s\n",
                 mb.notify_note().c_str());
  }

  const uint64_t rss_start = ResidentBytes();
  const bench::CpuTime cpu_start = bench::CpuTime::Now();
  const Timestamp time_start = MonotonicNow();
  Timeline timeline;
  auto sample = [&](bool force) {
    Timeline::Sample s;
    s.t_ns = MonotonicNow().nanos();
    s.cpu_us = (bench::CpuTime::Now() - cpu_start).total_us();
    for (size_t i = 0; i < mb.size(); ++i) {
      const MultiBroker::LoopGauges& g = mb.gauges(i);
      s.messages += g.delivered.load(std::memory_order_relaxed);
      s.kernel_entries += g.kernel_entries.load(std::memory_order_relaxed);
      s.connections += g.connections.load(std::memory_order_relaxed);
    }
    s.rss_kib = ResidentBytes() / 1024;
    timeline.Add(s, force);
  };
  sample(true);
  std::vector<transport::LoopCounters> counters_start;
  for (size_t i = 0; i < mb.size(); ++i) {
    counters_start.push_back(mb.loop(i).counters());
  }

  MetricsText metrics_text;
  std::unique_ptr<MetricsServer> metrics;  // destroyed before mb
  if (config.metrics_listen.has_value()) {
    // The Loops are not running yet, so this thread may read them directly.
    BrokerMetrics first;
    for (size_t i = 0; i < mb.size(); ++i) {
      Add(first, CollectMetrics(mb.driver(i).broker(), &mb.loop(i).counters(),
                                Duration(0)));
    }
    metrics_text.Set(RenderPrometheus(first));
    metrics = StartMetricsServerOrReport(
        &mb.loop(0), *config.metrics_listen,
        [&metrics_text] { return metrics_text.Get(); });
    if (metrics == nullptr) return kExitRunFailed;
  }

  mb.Start();
  if (!tls->empty()) {
    std::printf("TLS_READY %s\n",
                tls->front()->local_endpoint().ToString().c_str());
  }
  std::printf("READY %s\n", mb.local_endpoint().ToString().c_str());
  std::fflush(stdout);
  // This thread samples, publishes $SYS and waits for a signal; the Loops
  // run on their own threads.
  Timestamp next_sys =
      config.sys_interval_s > 0
          ? MonotonicNow() + std::chrono::seconds(config.sys_interval_s)
          : Timestamp::Never();
  Timestamp next_metrics = MonotonicNow();
  while (!stop_requested()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kTickMs));
    sample(false);
    if (MonotonicNow() >= next_sys) {
      PublishSys(mb, time_start);
      next_sys = MonotonicNow() + std::chrono::seconds(config.sys_interval_s);
    }
    if (metrics != nullptr && MonotonicNow() >= next_metrics) {
      std::optional<BrokerMetrics> sum = GatherMetrics(mb, time_start, true);
      if (sum.has_value()) metrics_text.Set(RenderPrometheus(*sum));
      next_metrics =
          MonotonicNow() + std::chrono::milliseconds(kMetricsRefreshMs);
    }
  }
  sample(true);
  mb.RequestStop();
  mb.Join();
  const Timestamp time_end = MonotonicNow();
  const bench::CpuTime cpu = bench::CpuTime::Now() - cpu_start;

  // The Loops are stopped: their state is safe to read from here.
  BrokerCounters bc;
  BrokerDriverCounters dc;
  transport::LoopCounters lc0 = mb.loop(0).counters().Delta(counters_start[0]);
  uint64_t kernel_entries = 0;
  for (size_t i = 0; i < mb.size(); ++i) {
    AddBrokerCounters(mb.driver(i).broker().counters(), &bc);
    AddDriverCounters(mb.driver(i).counters(), &dc);
    kernel_entries +=
        mb.loop(i).counters().Delta(counters_start[i]).kernel_entries();
  }
  const uint64_t delivered = PublishesSent(bc);
  const uint64_t received = PublishesReceived(bc);
  const MultiBrokerCounters xc = mb.counters();

  bench::JsonWriter json;
  json.BeginObject();
  json.Key("schema").String("ringlab.mqtt.broker/1");
  json.Key("program").String("ringlab_mqtt_broker");
  json.Key("role").String("server");
  json.Key("protocol").String("mqtt");
  AppendBackend(json, mb.loop(0).backend());
  json.Key("threads").Uint(mb.size());
  json.Key("listen").String(mb.local_endpoint().ToString());
  json.Key("duration_s").Number((time_end - time_start).count() / 1e9);
  json.Key("cpu_us").Int(cpu.total_us());
  json.Key("cpu_user_us").Int(cpu.user_us);
  json.Key("cpu_system_us").Int(cpu.system_us);
  json.Key("messages").Uint(delivered);
  json.Key("messages_received").Uint(received);
  json.Key("kernel_entries").Uint(kernel_entries);
  json.Key("connections_accepted").Uint(dc.accepted);
  json.Key("rss_bytes_start").Uint(rss_start);
  json.Key("rss_kib_ready").Uint(rss_start / 1024);
  json.Key("rss_bytes_end").Uint(ResidentBytes());
  json.Key("timeline");
  timeline.AppendJson(json, kTickMs);
  json.Key("counters");  // Loop 0's; per_loop has the others' entries
  AppendCounters(json, lc0);
  json.Key("cross_loop").BeginObject();
  json.Key("notify").String(NotifyName(mb.notify_mode()));
  json.Key("notify_note").String(mb.notify_note());
  json.Key("forwarded").Uint(xc.forwarded);
  json.Key("forward_received").Uint(xc.forward_received);
  json.Key("forward_refused").Uint(xc.forward_refused);
  json.Key("forward_skipped").Uint(xc.forward_skipped);
  json.Key("forward_expired").Uint(xc.forward_expired);
  json.Key("queue_full").Uint(xc.queue_full);
  json.Key("notifications").Uint(xc.notifications);
  json.Key("msg_ring_notifications").Uint(xc.msg_ring_notifications);
  json.Key("eventfd_notifications").Uint(xc.eventfd_notifications);
  json.Key("msg_ring_failures").Uint(xc.msg_ring_failures);
  json.Key("notifications_per_message")
      .Number(xc.forwarded > 0 ? double(xc.notifications) / xc.forwarded : 0);
  json.Key("remote_takeovers").Uint(xc.remote_takeovers);
  json.Key("handovers_requested").Uint(xc.handovers_requested);
  json.Key("sessions_moved").Uint(xc.sessions_moved);
  json.Key("handovers_empty").Uint(xc.handovers_empty);
  json.Key("sessions_ended").Uint(xc.sessions_ended);
  json.Key("sessions_relayed").Uint(xc.sessions_relayed);
  json.Key("sessions_kept").Uint(xc.sessions_kept);
  json.Key("handover_timeouts").Uint(xc.handover_timeouts);
  json.Key("handovers_lost").Uint(xc.handovers_lost);
  json.Key("stale_sessions_discarded").Uint(xc.stale_sessions_discarded);
  json.Key("parks_replaced").Uint(xc.parks_replaced);
  json.Key("parks_aborted").Uint(xc.parks_aborted);
  json.Key("transit_caught_up").Uint(xc.transit_caught_up);
  json.Key("transit_missed").Uint(xc.transit_missed);
  json.Key("shared_elsewhere").Uint(xc.shared_elsewhere);
  json.EndObject();
  json.Key("per_loop").BeginArray();
  for (size_t i = 0; i < mb.size(); ++i) {
    const BrokerCounters& c = mb.driver(i).broker().counters();
    json.BeginObject();
    json.Key("accepted").Uint(mb.driver(i).counters().accepted);
    json.Key("messages_received")
        .Uint(c.publishes_received[0] + c.publishes_received[1] +
              c.publishes_received[2]);
    json.Key("messages")
        .Uint(c.publishes_sent[0] + c.publishes_sent[1] + c.publishes_sent[2]);
    json.Key("kernel_entries")
        .Uint(mb.loop(i).counters().Delta(counters_start[i]).kernel_entries());
    json.EndObject();
  }
  json.EndArray();
  json.Key("broker");  // summed over the Loops
  AppendBrokerCounters(json, bc);
  json.Key("driver");
  AppendDriverCounters(json, dc);
  if (!tls->empty()) {
    TlsCounters tc;
    for (const auto& l : *tls) AddTlsCounters(l->counters(), &tc);
    json.Key("tls");  // summed over the Loops' listeners
    AppendTlsCounters(json, tc);
  }
  int exit_code = kExitOk;
  if (config.store.has_value()) {
    SqliteStoreCounters sc;
    for (size_t i = 0; i < mb.size(); ++i) {
      SqliteStore& st = *mb.store(i);
      st.Flush();
      const SqliteStoreCounters& c = st.counters();
      sc.writes += c.writes;
      sc.commits += c.commits;
      sc.write_errors += c.write_errors;
      sc.queued_coalesced += c.queued_coalesced;
      sc.updates_coalesced += c.updates_coalesced;
      sc.barriers += c.barriers;
      sc.barrier_wait_ns += c.barrier_wait_ns;
      if (!st.status().ok()) {
        std::fprintf(stderr, "ringlab_mqtt_broker: Loop %zu: %s\n", i,
                     st.status().ToString().c_str());
        exit_code = kExitRunFailed;
      }
    }
    json.Key("store").BeginObject();  // summed over the Loops' stores
    json.Key("writes").Uint(sc.writes);
    json.Key("commits").Uint(sc.commits);
    json.Key("write_errors").Uint(sc.write_errors);
    json.Key("queued_coalesced").Uint(sc.queued_coalesced);
    json.Key("updates_coalesced").Uint(sc.updates_coalesced);
    json.Key("barriers").Uint(sc.barriers);
    json.Key("barrier_wait_us").Uint(sc.barrier_wait_ns / 1000);
    json.EndObject();
  }
  json.Key("cpu").Int(config.first_cpu);
  json.EndObject();
  return EmitServerStats(json.str(), config.json_path, exit_code);
}

}  // namespace ringlab::mqtt::programs
