// ringlab_loop_scenarios: small measurements of the Loop that tests must not
// time (issue 6). Each prints one JSON object per run on stdout.
//
//   ringlab_loop_scenarios --scenario=timer-wakeups --backend=epoll
//       [--timers=10000] [--period_ms=1000] [--slack_ms=0] [--seconds=3]
//     N periodic timers with random phases on an otherwise idle Loop:
//     loop iterations (wakeups) per second, timer firings per second and
//     CPU use. Compare --slack_ms=0 with --slack_ms=100.
//
//   ringlab_loop_scenarios --scenario=stalled-reader --backend=uring-fixed
//       [--clients=20] [--seconds=3] [--payload=1024]
//     An echo server Loop on this thread; on another thread a client Loop
//     with 20 ping-pong connections, first alone, then beside one peer that
//     floods the server and never reads. Prints the round trips per second
//     of both runs and their ratio (issue 6: within 10%).
//
// Exit codes: 0 ok, 1 run failed, 2 usage error, 3 preset unavailable.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "transport/loop.h"
#include "transport/sim_network.h"

namespace ringlab::transport {
namespace {

using namespace std::chrono_literals;

struct Config {
  std::string scenario;
  std::string backend = "epoll";
  int timers = 10000;
  int period_ms = 1000;
  int slack_ms = 0;
  int seconds = 3;
  int clients = 20;
  int payload = 1024;
};

bool ParseArgs(int argc, char** argv, Config* c, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      *error = "flags are --name=value: " + arg;
      return false;
    }
    const std::string name = arg.substr(2, eq - 2);
    const std::string value = arg.substr(eq + 1);
    int* target = nullptr;
    if (name == "scenario") {
      c->scenario = value;
    } else if (name == "backend") {
      c->backend = value;
    } else if (name == "timers") {
      target = &c->timers;
    } else if (name == "period_ms") {
      target = &c->period_ms;
    } else if (name == "slack_ms") {
      target = &c->slack_ms;
    } else if (name == "seconds") {
      target = &c->seconds;
    } else if (name == "clients") {
      target = &c->clients;
    } else if (name == "payload") {
      target = &c->payload;
    } else {
      *error = "unknown flag --" + name;
      return false;
    }
    if (target != nullptr &&
        (!absl::SimpleAtoi(value, target) || *target < 0)) {
      *error = "--" + name + " needs a non-negative integer";
      return false;
    }
  }
  if (c->scenario != "timer-wakeups" && c->scenario != "stalled-reader") {
    *error = "--scenario=timer-wakeups|stalled-reader";
    return false;
  }
  return true;
}

int64_t CpuMicros() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1'000'000 +
         usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
}

absl::StatusOr<std::unique_ptr<Loop>> MakeLoop(const std::string& backend) {
  LoopOptions options;
  options.backend = backend;
  return Loop::Create(options);
}

int TimerWakeups(const Config& c) {
  absl::StatusOr<std::unique_ptr<Loop>> created = MakeLoop(c.backend);
  if (!created.ok()) {
    std::fprintf(stderr, "%s\n", created.status().ToString().c_str());
    return 3;
  }
  Loop& loop = **created;
  SimRandom random(1);
  const Duration period = std::chrono::milliseconds(c.period_ms);
  const Timestamp start = MonotonicNow();
  for (int i = 0; i < c.timers; ++i) {
    const Timestamp first =
        start + period +
        Duration(static_cast<int64_t>(random.Uniform(period.count() - 1)));
    loop.AddTimer(
        first, period, [](void*, uint64_t, Timestamp) {}, nullptr,
        std::chrono::milliseconds(c.slack_ms));
  }
  // Let every timer get past its first firing, then measure.
  while (MonotonicNow() < start + period * 2) loop.RunOnce(1s);
  const LoopCounters before = loop.counters();
  const int64_t cpu_before = CpuMicros();
  const Timestamp t0 = MonotonicNow();
  const Timestamp end = t0 + std::chrono::seconds(c.seconds);
  while (MonotonicNow() < end) loop.RunOnce(1s);
  const double seconds = (MonotonicNow() - t0).count() / 1e9;
  const LoopCounters used = loop.counters().Delta(before);
  const double cpu = (CpuMicros() - cpu_before) / 1e6;
  std::printf(
      "{\"scenario\":\"timer-wakeups\",\"backend\":\"%s\",\"timers\":%d,"
      "\"period_ms\":%d,\"slack_ms\":%d,\"seconds\":%.3f,"
      "\"wakeups_per_s\":%.1f,\"timers_fired_per_s\":%.1f,"
      "\"cpu_fraction\":%.4f}\n",
      loop.backend().name.c_str(), c.timers, c.period_ms, c.slack_ms, seconds,
      used.loop_iterations / seconds, used.timers_fired / seconds,
      cpu / seconds);
  return 0;
}

// --- stalled-reader ---------------------------------------------------------

class EchoServer : public SocketHandler {
 public:
  explicit EchoServer(Loop* loop) : loop_(loop) {}
  SocketHandler* OnAccept(SocketId, SocketId, const Endpoint&) override {
    return this;
  }
  // An echo that cannot queue more for a peer stops reading that peer
  // until its queue drains, so TCP pushes back on a peer that floods and
  // never reads instead of the server reading (and dropping) its data.
  void OnData(SocketId s, BufferLease data) override {
    if (loop_->Send(s, std::move(data)) != 0) {
      ++refused;  // this chunk is lost; reading stops until writable
      loop_->PauseReceive(s);
    }
  }
  void OnWritable(SocketId s) override { loop_->ResumeReceive(s); }
  void OnReadClosed(SocketId s, int) override { loop_->Close(s); }
  uint64_t refused = 0;

 private:
  Loop* loop_;
};

class PingClients : public SocketHandler {
 public:
  PingClients(Loop* loop, int payload) : loop_(loop), payload_(payload) {}
  void Ping(SocketId s) {
    BufferLease lease = loop_->AcquireBuffer();
    if (!lease) return;
    std::memset(lease.data(), 'p', payload_);
    lease.set_size(payload_);
    if (loop_->Send(s, std::move(lease)) == 0) pending_[s.value] = payload_;
  }
  void OnConnect(SocketId s, int result) override {
    if (result == 0) Ping(s);
  }
  void OnData(SocketId s, BufferLease data) override {
    size_t& left = pending_[s.value];
    left -= std::min(left, data.size());
    if (left == 0) {
      if (counting) ++round_trips;
      Ping(s);
    }
  }
  bool counting = false;
  uint64_t round_trips = 0;

 private:
  Loop* loop_;
  size_t payload_;
  absl::flat_hash_map<uint32_t, size_t> pending_;
};

// One measured run: round trips per second of `clients` connections, with
// or without a flooding peer that never reads.
absl::StatusOr<double> StalledRun(const Config& c, bool stalled,
                                  uint64_t* refused) {
  absl::StatusOr<std::unique_ptr<Loop>> server_loop = MakeLoop(c.backend);
  if (!server_loop.ok()) return server_loop.status();
  Loop& server = **server_loop;
  EchoServer echo(&server);
  TcpOptions tcp;
  tcp.send_queue_limit_bytes = 64 * 1024;
  absl::StatusOr<SocketId> listener =
      server.ListenTcp(Endpoint::Loopback(0), &echo, tcp);
  if (!listener.ok()) return listener.status();
  const Endpoint ep = *server.LocalEndpoint(*listener);
  std::atomic<bool> done{false};
  std::atomic<double> rate{0};
  std::string client_error;
  std::thread clients([&] {
    absl::StatusOr<std::unique_ptr<Loop>> created = MakeLoop(c.backend);
    if (!created.ok()) {
      client_error = created.status().ToString();
      done = true;
      return;
    }
    Loop& loop = **created;
    PingClients ping(&loop, c.payload);
    for (int i = 0; i < c.clients; ++i) {
      if (!loop.ConnectTcp(ep, &ping).ok()) {
        client_error = "connect failed";
        done = true;
        return;
      }
    }
    int flood_fd = -1;
    if (stalled) {
      flood_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const int small = 4096;
      ::setsockopt(flood_fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
      ::connect(flood_fd, ep.sockaddr(), ep.socklen());
      ::fcntl(flood_fd, F_SETFL, ::fcntl(flood_fd, F_GETFL) | O_NONBLOCK);
    }
    std::vector<char> flood(64 * 1024, 's');
    auto run_for = [&](Duration d) {
      const Timestamp end = MonotonicNow() + d;
      while (MonotonicNow() < end) {
        if (flood_fd >= 0) {
          while (::write(flood_fd, flood.data(), flood.size()) > 0) {
          }
        }
        loop.RunOnce(1ms);
      }
    };
    run_for(500ms);  // warm-up: connections up, the flood under way
    ping.counting = true;
    const Timestamp t0 = MonotonicNow();
    run_for(std::chrono::seconds(c.seconds));
    rate = ping.round_trips / ((MonotonicNow() - t0).count() / 1e9);
    if (flood_fd >= 0) ::close(flood_fd);
    done = true;
  });
  while (!done) server.RunOnce(1ms);
  clients.join();
  if (!client_error.empty()) return absl::InternalError(client_error);
  *refused = echo.refused;
  return rate.load();
}

int StalledReader(const Config& c) {
  uint64_t refused_alone = 0;
  uint64_t refused_stalled = 0;
  absl::StatusOr<double> alone = StalledRun(c, false, &refused_alone);
  if (!alone.ok()) {
    std::fprintf(stderr, "%s\n", alone.status().ToString().c_str());
    return alone.status().code() == absl::StatusCode::kFailedPrecondition ? 3
                                                                          : 1;
  }
  absl::StatusOr<double> beside = StalledRun(c, true, &refused_stalled);
  if (!beside.ok()) {
    std::fprintf(stderr, "%s\n", beside.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "{\"scenario\":\"stalled-reader\",\"backend\":\"%s\",\"clients\":%d,"
      "\"payload\":%d,\"seconds\":%d,\"round_trips_per_s_alone\":%.0f,"
      "\"round_trips_per_s_beside_stalled\":%.0f,\"ratio\":%.3f,"
      "\"stalled_echoes_refused\":%llu}\n",
      c.backend.c_str(), c.clients, c.payload, c.seconds, *alone, *beside,
      *alone > 0 ? *beside / *alone : 0.0,
      static_cast<unsigned long long>(refused_stalled));
  return 0;
}

}  // namespace
}  // namespace ringlab::transport

int main(int argc, char** argv) {
  ringlab::transport::Config config;
  std::string error;
  if (!ringlab::transport::ParseArgs(argc, argv, &config, &error)) {
    std::fprintf(stderr, "usage error: %s\n", error.c_str());
    return 2;
  }
  if (config.scenario == "timer-wakeups") {
    return ringlab::transport::TimerWakeups(config);
  }
  return ringlab::transport::StalledReader(config);
}
