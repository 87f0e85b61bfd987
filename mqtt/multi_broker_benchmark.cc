// Google Benchmark: what moving a session between Loops costs a reconnect
// (multi_broker.h, "Sessions follow their client"). A MultiBroker with two
// (or three) Loops runs in this process, a thread each; the clients run on one
// epoll Loop on the benchmark thread. A persistent client with one QoS 1
// subscription leaves, `queued` QoS 1 messages are published for it while
// it is away, and it comes back; the kernel's SO_REUSEPORT hash puts each
// reconnect on any Loop, so about half of them (two thirds with three
// Loops) cross Loops and wait for their session, and the others find it
// where it is. With three Loops a crossing also waits for the third Loop's
// markers (multi_broker.cc, "Cuts"). Each reconnect is sorted by the
// broker's handover counter, so both kinds come from one interleaved run
// and their ratio is what the handover adds.
//
//   build/release/mqtt/ringlab_mqtt_handover_benchmark
//   build/release/mqtt/ringlab_mqtt_handover_benchmark --benchmark_filter=busy
//
// (--benchmark_counters_tabular=true prints the counters as a table.)
//
// Arguments: queued/loops. Counters per preset and arguments: connack_*_p50_us
// (CONNECT sent to CONNACK received), drained_*_p50_us (CONNECT sent to the
// last queued message received), *_over_local (crossed p50 / local p50) and
// crossed_share. The iteration time (manual) is CONNECT to drained.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "mqtt/client_driver.h"
#include "mqtt/multi_broker.h"
#include "transport/preset.h"

namespace ringlab::mqtt {
namespace {

using namespace std::chrono_literals;

constexpr Duration kWait = 10s;

struct Peer : ClientDriver::Listener {
  void OnClientEvent(ClientDriver&, const ClientEvent& e) override {
    switch (e.kind) {
      case ClientEvent::Kind::kConnected:
        connected = true;
        session_present = e.session_present;
        connack_at = MonotonicNow();
        break;
      case ClientEvent::Kind::kSubscribed:
        ++subscribed;
        break;
      case ClientEvent::Kind::kPublished:
        ++acked;
        break;
      case ClientEvent::Kind::kMessage:
        ++messages;
        last_message_at = MonotonicNow();
        break;
      case ClientEvent::Kind::kClosed:
        closed = true;
        break;
      default:
        break;
    }
  }
  bool connected = false;
  bool session_present = false;
  bool closed = false;
  int subscribed = 0;
  uint64_t acked = 0;
  uint64_t messages = 0;
  Timestamp connack_at;
  Timestamp last_message_at;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void BM_Reconnect(benchmark::State& state, std::string preset) {
  const int queued = int(state.range(0));
  MultiBrokerOptions o;
  o.threads = uint32_t(state.range(1));
  o.loop.backend = preset;
  o.driver.listen = Endpoint::Loopback(0);
  absl::StatusOr<std::unique_ptr<MultiBroker>> b = MultiBroker::Create(o);
  if (!b.ok()) {
    state.SkipWithError(
        absl::StrCat("preset ", preset, " unavailable: ", b.status().message())
            .c_str());
    for (auto _ : state) {
    }
    return;
  }
  std::unique_ptr<MultiBroker> broker = *std::move(b);
  broker->Start();
  transport::LoopOptions lo;
  lo.backend = "epoll";
  absl::StatusOr<std::unique_ptr<transport::Loop>> l =
      transport::Loop::Create(lo);
  if (!l.ok()) {
    state.SkipWithError(std::string(l.status().message()).c_str());
    return;
  }
  std::unique_ptr<transport::Loop> loop = *std::move(l);
  auto run_until = [&](auto done) {
    const Timestamp deadline = MonotonicNow() + kWait;
    while (!done()) {
      if (MonotonicNow() >= deadline) return false;
      loop->RunOnce(1ms);
    }
    return true;
  };
  auto make = [&](ClientOptions client, Peer* peer) {
    ClientDriverOptions d;
    d.server = broker->local_endpoint();
    d.client = std::move(client);
    return ClientDriver::Create(loop.get(), d, peer);
  };

  Peer pub_peer;
  ClientOptions po;
  po.client_id = "handover-pub";
  auto pub = make(po, &pub_peer);
  Peer sub_peer;
  ClientOptions so;
  so.client_id = "handover-sub";
  so.clean_start = false;
  so.session_expiry_s = 300;
  auto sub = make(so, &sub_peer);
  bool ok = pub.ok() && sub.ok() && (*pub)->Connect().ok() &&
            (*sub)->Connect().ok() &&
            run_until([&] { return pub_peer.connected && sub_peer.connected; });
  ok = ok && (*sub)->Subscribe("handover/t", {.max_qos = 1}).ok() &&
       run_until([&] { return sub_peer.subscribed == 1; });
  if (!ok) {
    state.SkipWithError("set-up failed");
    return;
  }

  std::vector<double> connack_local, connack_crossed, drained_local,
      drained_crossed;
  const std::vector<std::byte> payload(64, std::byte{'x'});
  uint64_t failures = 0;
  for (auto _ : state) {
    (*sub)->Disconnect();
    if (!run_until([&] { return sub_peer.closed; })) ++failures;
    const uint64_t acked = pub_peer.acked;
    for (int i = 0; i < queued; ++i) {
      (void)(*pub)->Publish("handover/t", payload, {.qos = 1});
    }
    if (!run_until([&] { return pub_peer.acked == acked + queued; })) {
      ++failures;
    }
    const uint64_t requested = broker->counters().handovers_requested;
    const uint64_t messages = sub_peer.messages;
    // A new connection each time, as a restarted client makes (a driver
    // lingers after its DISCONNECT).
    sub_peer.connected = sub_peer.closed = sub_peer.session_present = false;
    sub = make(so, &sub_peer);
    if (!sub.ok()) {
      state.SkipWithError(std::string(sub.status().message()).c_str());
      break;
    }
    const Timestamp start = MonotonicNow();
    if (!(*sub)->Connect().ok() || !run_until([&] {
          return sub_peer.connected &&
                 sub_peer.messages == messages + uint64_t(queued);
        }) ||
        !sub_peer.session_present) {
      ++failures;
      state.SetIterationTime(0);
      continue;
    }
    const double connack_us = (sub_peer.connack_at - start).count() / 1e3;
    const double drained_us =
        ((queued > 0 ? sub_peer.last_message_at : sub_peer.connack_at) - start)
            .count() /
        1e3;
    state.SetIterationTime(drained_us / 1e6);
    const bool crossed = broker->counters().handovers_requested > requested;
    (crossed ? connack_crossed : connack_local).push_back(connack_us);
    (crossed ? drained_crossed : drained_local).push_back(drained_us);
  }
  const MultiBrokerCounters c = broker->counters();
  const double cl = Median(connack_local), cc = Median(connack_crossed);
  const double dl = Median(drained_local), dc = Median(drained_crossed);
  state.counters["connack_local_p50_us"] = cl;
  state.counters["connack_crossed_p50_us"] = cc;
  state.counters["connack_over_local"] = cl > 0 ? cc / cl : 0;
  state.counters["drained_local_p50_us"] = dl;
  state.counters["drained_crossed_p50_us"] = dc;
  state.counters["drained_over_local"] = dl > 0 ? dc / dl : 0;
  state.counters["crossed_share"] =
      double(connack_crossed.size()) /
      double(
          std::max<size_t>(1, connack_crossed.size() + connack_local.size()));
  state.counters["sessions_moved"] = double(c.sessions_moved);
  state.counters["failures"] = double(failures);
  if (failures > 0) {
    state.SkipWithError(
        absl::StrCat(failures, " reconnects failed or lost messages").c_str());
  }
  sub->reset();
  pub->reset();
  broker->RequestStop();
  broker->Join();
}

}  // namespace
}  // namespace ringlab::mqtt

int main(int argc, char** argv) {
  for (const ringlab::transport::Preset p : ringlab::transport::AllPresets()) {
    const std::string name(ringlab::transport::PresetName(p));
    benchmark::RegisterBenchmark(
        absl::StrCat("BM_Reconnect/", name).c_str(),
        [name](benchmark::State& s) { ringlab::mqtt::BM_Reconnect(s, name); })
        ->ArgNames({"queued", "loops"})
        ->Args({0, 2})
        ->Args({100, 2})
        ->Args({0, 3})
        ->Iterations(400)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
