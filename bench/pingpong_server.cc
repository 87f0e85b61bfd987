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
#include <signal.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>

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

  loop.AddTimer(MonotonicNow() + std::chrono::milliseconds(50),
                std::chrono::milliseconds(50), [&loop](Timestamp) {
                  if (g_stop_requested) loop.Stop();
                });

  const transport::LoopCounters counters_start = loop.counters();
  const CpuTime cpu_start = CpuTime::Now();
  const Timestamp time_start = MonotonicNow();
  std::printf("READY %s\n", shown.c_str());
  std::fflush(stdout);

  absl::Status run = g_stop_requested ? absl::OkStatus() : loop.Run();
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
