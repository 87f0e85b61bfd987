// The echo side of ringlab_pingpong.
//
// UDP: every datagram goes straight back to its source in the same buffer
// (the receive lease moves into SendTo, so no copy). TCP: every chunk of a
// connection's stream is queued back on that connection in its lease, which
// echoes the byte stream exactly without knowing message boundaries.
//
// Shutdown: SIGINT/SIGTERM only set a flag; a 50 ms periodic timer notices it
// on the Loop's thread and calls Stop(), so nothing but an async-signal-safe
// store happens in the handler.
//
// Measured phase: the server cannot know when the client's measured phase
// starts, so the same 50 ms timer samples cumulative CPU time (rusage),
// messages, kernel entries, RSS and open connections into a timeline, which
// SERVER_STATS carries. The client reports its measured phase on the same
// clock (CLOCK_MONOTONIC), and the runner interpolates the server's timeline
// over exactly that window (experiments/ringlab_exp/runner.py,
// server_measured). The timeline is bounded (kMaxTimelineSamples): when full
// it keeps every other sample and samples half as often.
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/json_writer.h"
#include "bench/pingpong_options.h"
#include "bench/process_stats.h"
#include "transport/loop.h"
#include "transport/time.h"

namespace ringlab::bench {
namespace {

using transport::BufferLease;
using transport::Loop;
using transport::SocketHandler;
using transport::SocketId;

volatile std::sig_atomic_t g_stop_requested = 0;

void OnStopSignal(int) { g_stop_requested = 1; }

struct ServerStats {
  uint64_t datagrams_echoed = 0;
  uint64_t bytes_echoed = 0;
  uint64_t connections_accepted = 0;
  uint64_t connections_open = 0;
  uint64_t send_rejected = 0;  // SendTo/Send returned an error at once
  uint64_t send_errors = 0;    // OnSendComplete with a negative result
  uint64_t receive_errors = 0;
};

class UdpEcho : public SocketHandler {
 public:
  explicit UdpEcho(ServerStats* stats) : stats_(stats) {}
  void set_loop(Loop* loop) { loop_ = loop; }

  void OnDatagram(SocketId socket, const Endpoint& from,
                  BufferLease data) override {
    const size_t size = data.size();
    if (loop_->SendTo(socket, std::move(data), from) < 0) {
      ++stats_->send_rejected;
      return;
    }
    ++stats_->datagrams_echoed;
    stats_->bytes_echoed += size;
  }
  void OnSendComplete(SocketId, int result, uint64_t) override {
    if (result < 0) ++stats_->send_errors;
  }
  void OnError(SocketId, int) override { ++stats_->receive_errors; }

 private:
  Loop* loop_ = nullptr;
  ServerStats* stats_;
};

// One handler serves the listener and every accepted connection; callbacks
// carry the socket id, and an echo needs no per-connection state.
class TcpEcho : public SocketHandler {
 public:
  explicit TcpEcho(ServerStats* stats) : stats_(stats) {}
  void set_loop(Loop* loop) { loop_ = loop; }

  SocketHandler* OnAccept(SocketId, SocketId, const Endpoint&) override {
    ++stats_->connections_accepted;
    ++stats_->connections_open;
    return this;
  }
  void OnData(SocketId socket, BufferLease data) override {
    const size_t size = data.size();
    if (loop_->Send(socket, std::move(data)) < 0) {
      // The stream would have a hole; the only honest echo is to drop it.
      ++stats_->send_rejected;
      loop_->Close(socket);
      return;
    }
    stats_->bytes_echoed += size;
  }
  void OnReadClosed(SocketId socket, int result) override {
    if (result < 0) ++stats_->receive_errors;
    loop_->Close(socket);
  }
  void OnSendComplete(SocketId socket, int result, uint64_t) override {
    if (result < 0 && result != -ECANCELED) {
      ++stats_->send_errors;
      loop_->Close(socket);
    }
  }
  void OnError(SocketId, int) override { ++stats_->receive_errors; }
  void OnClosed(SocketId socket) override {
    if (socket != listener_ && stats_->connections_open > 0) {
      --stats_->connections_open;
    }
  }
  void set_listener(SocketId listener) { listener_ = listener; }

 private:
  Loop* loop_ = nullptr;
  ServerStats* stats_;
  SocketId listener_;
};

// Cumulative server measures at fixed times, columnar so the JSON stays
// small. Storage is reserved up front: sampling never allocates.
class Timeline {
 public:
  static constexpr size_t kMaxTimelineSamples = 2048;

  struct Sample {
    int64_t t_ns;
    int64_t cpu_us;
    uint64_t messages;
    uint64_t kernel_entries;
    uint64_t rss_kib;
    uint64_t connections;
  };

  Timeline() { samples_.reserve(kMaxTimelineSamples); }

  // Records every stride-th call; `force` records regardless (the first and
  // the last sample).
  void Add(const Sample& sample, bool force) {
    if (!force && ++calls_ % stride_ != 0) return;
    if (samples_.size() == kMaxTimelineSamples) {
      size_t kept = 0;
      for (size_t i = 0; i < samples_.size(); i += 2)
        samples_[kept++] = samples_[i];
      samples_.resize(kept);
      stride_ *= 2;
    }
    samples_.push_back(sample);
  }

  void AppendJson(JsonWriter& json, int interval_ms) const {
    json.BeginObject();
    json.Key("interval_ms").Int(interval_ms * static_cast<int64_t>(stride_));
    auto column = [&](const char* name, auto field) {
      json.Key(name).BeginArray();
      for (const Sample& s : samples_) json.Int(static_cast<int64_t>(field(s)));
      json.EndArray();
    };
    column("t_ns", [](const Sample& s) { return s.t_ns; });
    column("cpu_us", [](const Sample& s) { return s.cpu_us; });
    column("messages", [](const Sample& s) { return s.messages; });
    column("kernel_entries", [](const Sample& s) { return s.kernel_entries; });
    column("rss_kib", [](const Sample& s) { return s.rss_kib; });
    column("connections", [](const Sample& s) { return s.connections; });
    json.EndObject();
  }

 private:
  std::vector<Sample> samples_;
  uint64_t calls_ = 0;
  uint64_t stride_ = 1;
};

void InstallStopHandlers() {
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  // SIGPIPE stays at its default on purpose: the Loop never raises it
  // (issue 6, fault 2), and ignoring it here would hide a regression.
}

}  // namespace

int RunPingPongServer(const PingPongConfig& config) {
  InstallStopHandlers();
  if (config.cpu >= 0) {
    absl::Status pinned = PinThisThreadToCpu(config.cpu);
    if (!pinned.ok()) {
      std::fprintf(stderr, "ringlab_pingpong server: %s\n",
                   std::string(pinned.message()).c_str());
      return kExitUsage;
    }
  }
  // Every expected client needs a descriptor; the soft limit is often 1024.
  absl::StatusOr<uint64_t> nofile =
      RaiseOpenFileLimit(uint64_t{config.connections} + kSocketHeadroom);
  if (!nofile.ok()) {
    std::fprintf(stderr, "ringlab_pingpong server: %s\n",
                 std::string(nofile.status().message()).c_str());
    return kExitUnsupportedBackend;
  }
  // Handlers must outlive their sockets, so they are declared before (and
  // destroyed after) the Loop that owns those sockets.
  ServerStats stats;
  UdpEcho udp_echo(&stats);
  TcpEcho tcp_echo(&stats);
  absl::StatusOr<std::unique_ptr<Loop>> created =
      Loop::Create(PingPongLoopOptions(config));
  if (!created.ok()) {
    std::fprintf(stderr, "ringlab_pingpong server: backend %s: %s\n",
                 config.backend.c_str(), created.status().ToString().c_str());
    return IsUnsupportedBackend(created.status()) ? kExitUnsupportedBackend
                                                  : kExitRunFailed;
  }
  Loop& loop = **created;
  udp_echo.set_loop(&loop);
  tcp_echo.set_loop(&loop);
  absl::StatusOr<SocketId> socket;
  if (config.protocol == Protocol::kUdp) {
    transport::UdpOptions udp;
    udp.bind = config.bind;
    udp.reuse_address = true;
    // Bursts of clients must not overflow the default receive queue.
    udp.receive_buffer_bytes = 4 << 20;
    socket = loop.OpenUdp(udp, &udp_echo);
  } else {
    socket = loop.ListenTcp(config.bind, &tcp_echo);
    if (socket.ok()) tcp_echo.set_listener(*socket);
  }
  if (!socket.ok()) {
    std::fprintf(stderr, "ringlab_pingpong server: cannot listen on %s: %s\n",
                 config.bind.ToString().c_str(),
                 socket.status().ToString().c_str());
    return kExitRunFailed;
  }
  absl::StatusOr<Endpoint> local = loop.LocalEndpoint(*socket);
  const std::string shown =
      local.ok() ? local->ToString() : config.bind.ToString();

  const transport::LoopCounters counters_start = loop.counters();
  const CpuTime cpu_start = CpuTime::Now();
  const Timestamp time_start = MonotonicNow();
  const bool udp = config.protocol == Protocol::kUdp;
  const uint64_t payload = std::max<uint32_t>(1, config.payload_bytes);
  Timeline timeline;
  // TCP echoes a byte stream: with a fixed payload, bytes / payload counts
  // messages exactly once the stream is at a message boundary.
  auto sample = [&](bool force) {
    timeline.Add(
        {MonotonicNow().nanos(), (CpuTime::Now() - cpu_start).total_us(),
         udp ? stats.datagrams_echoed : stats.bytes_echoed / payload,
         loop.counters().Delta(counters_start).kernel_entries(),
         ResidentSetKib(), stats.connections_open},
        force);
  };
  sample(true);  // before any client: the RSS baseline
  const uint64_t rss_ready_kib = ResidentSetKib();
  constexpr int kTimerMs = 50;
  loop.AddTimer(MonotonicNow() + std::chrono::milliseconds(kTimerMs),
                std::chrono::milliseconds(kTimerMs),
                [&loop, &sample](Timestamp) {
                  sample(false);
                  if (g_stop_requested) loop.Stop();
                });

  std::printf("READY %s\n", shown.c_str());
  std::fflush(stdout);

  absl::Status run = g_stop_requested ? absl::OkStatus() : loop.Run();
  sample(true);
  const Timestamp time_end = MonotonicNow();
  const CpuTime cpu_used = CpuTime::Now() - cpu_start;
  const transport::LoopCounters counters =
      loop.counters().Delta(counters_start);
  if (!run.ok()) {
    std::fprintf(stderr, "ringlab_pingpong server: loop failed: %s\n",
                 run.ToString().c_str());
  }

  const double duration_s = (time_end - time_start).count() / 1e9;
  JsonWriter json;
  json.BeginObject();
  json.Key("schema").String("ringlab.pingpong.server/1");
  json.Key("program").String("ringlab_pingpong");
  json.Key("role").String("server");
  json.Key("protocol").String(ProtocolName(config.protocol));
  AppendBackend(json, loop.backend());
  json.Key("bind").String(shown);
  json.Key("payload_bytes").Uint(config.payload_bytes);
  json.Key("duration_s").Number(duration_s);
  json.Key("cpu_us").Int(cpu_used.total_us());
  json.Key("cpu_user_us").Int(cpu_used.user_us);
  json.Key("cpu_system_us").Int(cpu_used.system_us);
  json.Key("messages")
      .Uint(udp ? stats.datagrams_echoed : stats.bytes_echoed / payload);
  json.Key("datagrams_echoed").Uint(stats.datagrams_echoed);
  json.Key("bytes_echoed").Uint(stats.bytes_echoed);
  json.Key("connections_accepted").Uint(stats.connections_accepted);
  json.Key("send_rejected").Uint(stats.send_rejected);
  json.Key("send_errors").Uint(stats.send_errors);
  json.Key("receive_errors").Uint(stats.receive_errors);
  json.Key("kernel_entries").Uint(counters.kernel_entries());
  json.Key("counters");
  AppendCounters(json, counters);
  json.Key("cpu").Int(config.cpu);
  json.Key("sqpoll_cpu").Int(config.sqpoll_cpu);
  json.Key("rss_kib_ready").Uint(rss_ready_kib);
  json.Key("nofile_limit").Uint(*nofile);
  json.Key("timeline");
  timeline.AppendJson(json, kTimerMs);
  json.EndObject();

  std::printf("SERVER_STATS %s\n", json.str().c_str());
  std::fflush(stdout);
  int exit_code = run.ok() ? kExitOk : kExitRunFailed;
  if (!config.json_path.empty()) {
    absl::Status written = WriteTextFile(config.json_path, json.str());
    if (!written.ok()) {
      std::fprintf(stderr, "ringlab_pingpong server: %s\n",
                   std::string(written.message()).c_str());
      exit_code = kExitRunFailed;
    }
  }
  return exit_code;
}

}  // namespace ringlab::bench
