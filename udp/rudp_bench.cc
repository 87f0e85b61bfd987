// ringlab_rudp_bench: rudp's benchmark program, the counterpart of
// bench/enet_bench.cc (same modes, same loss model, same result fields), on
// any transport preset.
//
//   ringlab_rudp_bench server --bind=127.0.0.1:0 [--backend=PRESET] [--cpu=N]
//       [--loss=PCT --seed=N] [--cc=on|off] [--nack=on|off]
//   ringlab_rudp_bench client --server=HOST:PORT [--backend=PRESET]
//       --mode=pingpong [--payload=64] [--samples=100000] [--warmup=5000]
//       [--loss=PCT --seed=N] [--cc=on|off] [--nack=on|off] [--cpu=N]
//       [--json=PATH] [--timeout_s=60]
//   ringlab_rudp_bench client --server=HOST:PORT --mode=bulk
//       [--bytes=100MiB] [--chunk=64KiB] [--direction=upload|download]
//       [--trace=PATH] ...
//   both: [--gso=on|off] (UDP GSO; default on for epoll presets, off for
//     io_uring ones, see LoopEndpointOptions) [--wait_batching=on|off]
//     (LoopOptions::wait_batching, io_uring: one enter per round trip)
//
// The server prints `READY host:port` once bound and serves clients until
// SIGINT/SIGTERM. A client opens one rudp connection, sends a HELLO with the
// mode on the reliable-ordered channel, then:
//   pingpong: `payload`-byte reliable messages, one at a time; the server
//     echoes each; every round trip after the warm-up goes in the
//     histogram (full RTT).
//   bulk: `bytes` in `chunk`-byte reliable messages, client -> server
//     (upload) or server -> client (download); the receiver checks every
//     byte; the server answers with DONE carrying its own figures.
// Completion time: upload, from the first chunk queued to DONE back at the
// client; download, from the HELLO sent to the last byte received.
//
// Loss (--loss=PCT, seeded): each side drops that share of the datagrams it
// receives, data and acknowledgements alike, from the moment the connection
// is up, exactly as ringlab_enet_bench impairs ENet (LoopEndpoint's
// receive_loss). --cc=off turns NewReno and pacing off (KCP's `nc`), for
// a comparison with ENet, which has no congestion window.
//
// --trace=PATH (bulk): after every loop iteration of the measured phase,
// the connection's congestion and ACK state as CSV (client: its connection;
// server: the first bulk connection, written when the server stops). The
// first columns are those of ringlab_rudp_goodput_model --trace;
// monotonic_us lines a client's trace up with the server's.
//
// Result: the ringlab JSON (parser `ringlab_json`) to --json or as a
// `RESULT {...}` line; bulk figures under "bulk" (goodput, completion,
// retransmission ratio, spurious retransmissions, CPU and kernel entries
// per MB for each side). Exit codes: 0 ok, 1 run failed, 2 bad usage,
// 3 backend unsupported here.
#include <array>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/histogram.h"
#include "bench/json_writer.h"
#include "bench/process_stats.h"
#include "transport/loop.h"
#include "udp/internal/bench_profile.h"
#include "udp/loop_endpoint.h"

namespace ringlab::rudp::bench {
namespace {

using ringlab::bench::CpuTime;
using ringlab::bench::JsonWriter;
using ringlab::bench::LatencyHistogram;
using transport::Loop;
using transport::LoopCounters;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnsupported = 3;
constexpr uint32_t kMagic = 0x524c5544;  // "RLUD"
constexpr uint8_t kChannel = 0;          // reliable-ordered

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

enum class Mode : uint32_t { kPingPong = 1, kBulk = 2 };
enum class Direction : uint32_t { kUpload = 1, kDownload = 2 };

// Control messages: fixed layouts between two copies of this program on one
// machine (host byte order).
struct Hello {
  uint32_t magic = kMagic;
  uint32_t kind = 1;
  Mode mode = Mode::kPingPong;
  Direction direction = Direction::kUpload;
  uint64_t bytes = 0;
  uint64_t chunk = 0;
};
// What a side measured over a bulk transfer.
struct SideFigures {
  uint64_t bytes_received = 0;
  int64_t receive_span_ns = 0;
  int64_t cpu_us = 0;
  uint64_t kernel_entries = 0;
  uint64_t datagrams_sent = 0;
  uint64_t datagrams_received = 0;
  uint64_t receive_dropped = 0;
  uint64_t fragments_sent = 0;
  uint64_t fragments_retransmitted = 0;
  uint64_t duplicate_fragments = 0;
  uint64_t spurious_losses = 0;
  uint64_t packets_lost = 0;
  uint64_t probe_timeouts = 0;
  uint64_t nacks_received = 0;
  // Why the path lost or held back datagrams (see udp/EXPERIMENTS.md §4).
  uint64_t kernel_receive_drops = 0;  // SO_RXQ_OVFL
  uint64_t send_errors = 0;           // SendTo refused
  uint64_t pool_exhausted = 0;
  uint64_t congestion_events = 0;
  uint64_t congestion_window_blocked = 0;
  uint64_t pacing_blocked = 0;
  uint64_t timer_wakeups = 0;
  uint64_t timer_late_ns_total = 0;
  uint64_t timer_late_ns_max = 0;
  int64_t smoothed_rtt_ns = 0;
  int64_t min_rtt_ns = 0;
};
struct Done {
  uint32_t magic = kMagic;
  uint32_t kind = 2;
  SideFigures server;
};

struct Options {
  std::string role;
  Endpoint bind = Endpoint::Loopback(0);
  Endpoint server;
  std::string backend = "auto";
  Mode mode = Mode::kPingPong;
  Direction direction = Direction::kUpload;
  uint32_t payload = 64;
  uint64_t samples = 100000;
  uint64_t warmup = 5000;
  uint64_t bytes = 100ull << 20;
  uint64_t chunk = 64 << 10;
  double loss_pct = 0;
  uint64_t seed = 1;
  bool cc = true;
  std::optional<bool> pacing;  // default: as --cc
  bool nack = false;
  int cpu = -1;
  bool wait_batching = false;
  std::optional<bool> gso;  // default: LoopEndpoint's (on for epoll presets)
  std::string json_path;
  std::string trace_path;
  int timeout_s = 60;
};

std::span<const std::byte> AsBytes(const void* p, size_t n) {
  return {static_cast<const std::byte*>(p), n};
}

bool ParseSize(absl::string_view text, uint64_t* out) {
  uint64_t scale = 1;
  for (auto [suffix, s] : {std::pair{"KiB", 1ull << 10},
                           {"MiB", 1ull << 20},
                           {"GiB", 1ull << 30},
                           {"K", 1000ull},
                           {"M", 1000000ull}}) {
    if (absl::EndsWith(text, suffix)) {
      text.remove_suffix(std::strlen(suffix));
      scale = s;
      break;
    }
  }
  uint64_t v;
  if (!absl::SimpleAtoi(text, &v)) return false;
  *out = v * scale;
  return true;
}

int Usage(const std::string& why) {
  std::fprintf(
      stderr,
      "ringlab_rudp_bench: %s\n"
      "usage: ringlab_rudp_bench server --bind=HOST:PORT [--backend=P] "
      "[--cpu=N] [--loss=PCT] [--seed=N] [--cc=on|off] [--nack=on|off] "
      "[--trace=PATH] [--gso=on|off] [--wait_batching=on|off]\n"
      "       ringlab_rudp_bench client --server=HOST:PORT [--backend=P] "
      "--mode=pingpong|bulk [--payload=64] [--samples=N] [--warmup=N] "
      "[--bytes=100MiB] [--chunk=64KiB] [--direction=upload|download] "
      "[--loss=PCT] [--seed=N] [--cc=on|off] [--nack=on|off] [--cpu=N] "
      "[--json=PATH] [--trace=PATH] [--timeout_s=60]\n",
      why.c_str());
  return kExitUsage;
}

std::optional<std::string> ParseArgs(int argc, char** argv, Options* o) {
  if (argc < 2) return "missing role";
  o->role = argv[1];
  if (o->role != "server" && o->role != "client")
    return "role is server or client";
  for (int i = 2; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (!absl::StartsWith(arg, "--")) return absl::StrCat("unexpected ", arg);
    arg.remove_prefix(2);
    const size_t eq = arg.find('=');
    if (eq == std::string_view::npos)
      return absl::StrCat("--", arg, " needs =VALUE");
    const absl::string_view name = arg.substr(0, eq),
                            value = arg.substr(eq + 1);
    auto on_off = [&](bool* out) -> std::optional<std::string> {
      if (value == "on")
        *out = true;
      else if (value == "off")
        *out = false;
      else
        return absl::StrCat("--", name, " is on or off");
      return std::nullopt;
    };
    if (name == "bind" || name == "server") {
      auto ep = Endpoint::Parse(std::string(value));
      if (!ep.ok()) return std::string(ep.status().message());
      (name == "bind" ? o->bind : o->server) = *ep;
    } else if (name == "backend") {
      o->backend = std::string(value);
    } else if (name == "mode") {
      if (value == "pingpong")
        o->mode = Mode::kPingPong;
      else if (value == "bulk")
        o->mode = Mode::kBulk;
      else
        return "--mode is pingpong or bulk";
    } else if (name == "direction") {
      if (value == "upload")
        o->direction = Direction::kUpload;
      else if (value == "download")
        o->direction = Direction::kDownload;
      else
        return "--direction is upload or download";
    } else if (name == "payload") {
      if (!absl::SimpleAtoi(value, &o->payload) || o->payload < 16) {
        return "--payload must be a number >= 16";
      }
    } else if (name == "samples") {
      if (!absl::SimpleAtoi(value, &o->samples) || o->samples == 0)
        return "bad --samples";
    } else if (name == "warmup") {
      if (!absl::SimpleAtoi(value, &o->warmup)) return "bad --warmup";
    } else if (name == "bytes") {
      if (!ParseSize(value, &o->bytes) || o->bytes == 0) return "bad --bytes";
    } else if (name == "chunk") {
      if (!ParseSize(value, &o->chunk) || o->chunk == 0 ||
          o->chunk > (1 << 20)) {
        return "--chunk must be 1 B .. 1 MiB";
      }
    } else if (name == "loss") {
      if (!absl::SimpleAtod(value, &o->loss_pct) || o->loss_pct < 0 ||
          o->loss_pct > 100) {
        return "--loss is a percentage";
      }
    } else if (name == "seed") {
      if (!absl::SimpleAtoi(value, &o->seed)) return "bad --seed";
    } else if (name == "cc") {
      if (auto e = on_off(&o->cc)) return e;
    } else if (name == "nack") {
      if (auto e = on_off(&o->nack)) return e;
    } else if (name == "pacing") {
      bool v;
      if (auto e = on_off(&v)) return e;
      o->pacing = v;
    } else if (name == "cpu") {
      if (!absl::SimpleAtoi(value, &o->cpu)) return "bad --cpu";
    } else if (name == "gso") {
      bool v;
      if (auto e = on_off(&v)) return e;
      o->gso = v;
    } else if (name == "wait_batching") {
      if (auto e = on_off(&o->wait_batching)) return e;
    } else if (name == "json") {
      o->json_path = std::string(value);
    } else if (name == "trace") {
      o->trace_path = std::string(value);
    } else if (name == "timeout_s") {
      if (!absl::SimpleAtoi(value, &o->timeout_s) || o->timeout_s <= 0) {
        return "bad --timeout_s";
      }
    } else {
      return absl::StrCat("unknown flag --", name);
    }
  }
  if (o->role == "client" && !o->server.valid()) return "client needs --server";
  return std::nullopt;
}

bool IsUnsupported(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kUnavailable:
      return true;
    default:
      return false;
  }
}

LoopEndpointOptions EndpointOptions(const Options& o) {
  LoopEndpointOptions e;
  e.bind = o.role == "server" ? o.bind : Endpoint::Loopback(0);
  if (o.role == "client" && !o.server.is_ipv4()) {
    e.bind = *Endpoint::Parse("[::1]:0");
  }
  e.host.connection =
      internal::LanBenchProfile(o.cc, o.pacing.value_or(o.cc), o.nack);
  e.host.max_connections = 64;
  e.segmentation_offload = o.gso;
  return e;
}

// Bulk data, as ringlab_enet_bench makes it (so neither side pays for more
// than the other): each chunk is memset to its offset's low byte and starts
// with its 8-byte offset, which the receiver checks (order, completeness).
void FillChunk(std::vector<std::byte>& buf, uint64_t offset, size_t n) {
  buf.resize(n);
  std::memset(buf.data(), int(offset & 0xff), n);
  std::memcpy(buf.data(), &offset, std::min<size_t>(8, n));
}

bool CheckChunk(const MessageView& m, uint64_t offset) {
  std::array<std::byte, 8> head{};
  const size_t n = m.CopyTo(head);
  uint64_t got = 0;
  std::memcpy(&got, head.data(), n);
  const uint64_t expected =
      n < 8 ? offset & ((uint64_t{1} << (8 * n)) - 1) : offset;
  return got == expected;
}

void AppendBackend(JsonWriter& json, const transport::BackendInfo& info) {
  json.Key("backend").String(info.name);
  json.Key("backend_requested").String(info.requested);
  json.Key("backend_flags").String(info.flags.ToString());
  json.Key("backend_note").String(info.chosen_because);
}

void AppendCounters(JsonWriter& json, const LoopCounters& c) {
  json.BeginObject();
  c.ForEach([&json](const char* name, uint64_t v) { json.Key(name).Uint(v); });
  json.Key("kernel_entries").Uint(c.kernel_entries()).EndObject();
}

void AppendSide(JsonWriter& json, const SideFigures& s, double mb) {
  json.BeginObject();
  json.Key("bytes_received").Uint(s.bytes_received);
  json.Key("receive_span_s").Number(double(s.receive_span_ns) / 1e9);
  json.Key("cpu_us").Int(s.cpu_us);
  json.Key("cpu_us_per_mb").Number(mb > 0 ? double(s.cpu_us) / mb : 0);
  json.Key("kernel_entries").Uint(s.kernel_entries);
  json.Key("kernel_entries_per_mb")
      .Number(mb > 0 ? double(s.kernel_entries) / mb : 0);
  json.Key("datagrams_sent").Uint(s.datagrams_sent);
  json.Key("datagrams_received").Uint(s.datagrams_received);
  json.Key("dropped_by_impairment").Uint(s.receive_dropped);
  json.Key("fragments_sent").Uint(s.fragments_sent);
  json.Key("fragments_retransmitted").Uint(s.fragments_retransmitted);
  json.Key("duplicate_fragments").Uint(s.duplicate_fragments);
  json.Key("spurious_losses").Uint(s.spurious_losses);
  json.Key("packets_lost").Uint(s.packets_lost);
  json.Key("probe_timeouts").Uint(s.probe_timeouts);
  json.Key("nacks_received").Uint(s.nacks_received);
  json.Key("kernel_receive_drops").Uint(s.kernel_receive_drops);
  json.Key("send_errors").Uint(s.send_errors);
  json.Key("pool_exhausted").Uint(s.pool_exhausted);
  json.Key("congestion_events").Uint(s.congestion_events);
  json.Key("congestion_window_blocked").Uint(s.congestion_window_blocked);
  json.Key("pacing_blocked").Uint(s.pacing_blocked);
  json.Key("timer_wakeups").Uint(s.timer_wakeups);
  json.Key("timer_late_us_mean")
      .Number(s.timer_wakeups > 0 ? double(s.timer_late_ns_total) / 1e3 /
                                        double(s.timer_wakeups)
                                  : 0);
  json.Key("timer_late_us_max").Number(double(s.timer_late_ns_max) / 1e3);
  json.Key("smoothed_rtt_us").Number(double(s.smoothed_rtt_ns) / 1e3);
  json.Key("min_rtt_us").Number(double(s.min_rtt_ns) / 1e3);
  json.EndObject();
}

SideFigures Figures(LoopEndpoint& ep, ConnectionHandle c, const CpuTime& cpu0,
                    const LoopCounters& counters0,
                    const LoopEndpointStats& stats0) {
  SideFigures f;
  f.cpu_us = (CpuTime::Now() - cpu0).total_us();
  f.kernel_entries = ep.loop()->counters().Delta(counters0).kernel_entries();
  f.datagrams_sent = ep.stats().datagrams_sent - stats0.datagrams_sent;
  f.datagrams_received =
      ep.stats().datagrams_received - stats0.datagrams_received;
  f.receive_dropped = ep.stats().receive_dropped - stats0.receive_dropped;
  const LoopEndpointStats& es = ep.stats();
  f.kernel_receive_drops =
      es.kernel_receive_drops - stats0.kernel_receive_drops;
  f.send_errors = es.send_errors - stats0.send_errors;
  f.pool_exhausted = es.pool_exhausted - stats0.pool_exhausted;
  f.timer_wakeups = es.timer_wakeups - stats0.timer_wakeups;
  f.timer_late_ns_total = es.timer_late_ns_total - stats0.timer_late_ns_total;
  f.timer_late_ns_max = es.timer_late_ns_max;
  if (auto s = ep.host().Stats(c); s.ok()) {
    f.congestion_events = s->congestion_events;
    f.congestion_window_blocked = s->congestion_window_blocked;
    f.pacing_blocked = s->pacing_blocked;
    f.smoothed_rtt_ns = s->smoothed_rtt.count();
    f.min_rtt_ns = s->min_rtt.count();
    f.fragments_sent = s->fragments_sent;
    f.fragments_retransmitted = s->fragments_retransmitted;
    f.duplicate_fragments = s->duplicate_fragments;
    f.spurious_losses = s->spurious_losses;
    f.packets_lost = s->packets_lost;
    f.probe_timeouts = s->probe_timeouts;
    f.nacks_received = s->nacks_received;
  }
  return f;
}

// Congestion state after every loop iteration (--trace): a preallocated
// table, written out after the run so tracing costs no I/O while measuring.
class Tracer {
 public:
  void Enable() { rows_.reserve(1 << 21); }
  bool enabled() const { return rows_.capacity() > 0; }
  void Record(Timestamp now, Timestamp start, const ConnectionStats& s,
              const LoopEndpointStats& es) {
    if (rows_.size() == rows_.capacity()) return;
    rows_.push_back({now.nanos(), (now - start).count(), s.congestion_window,
                     s.bytes_in_flight, s.smoothed_rtt.count(),
                     s.latest_rtt.count(), s.min_rtt.count(), s.packets_lost,
                     s.probe_timeouts, s.congestion_events, s.packets_sent,
                     s.acks_received, s.acks_sent, es.datagrams_received,
                     es.timer_wakeups});
  }
  bool Write(const std::string& path) const {
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return false;
    std::fprintf(f,
                 "t_us,cwnd,bytes_in_flight,srtt_us,latest_rtt_us,min_rtt_us,"
                 "packets_lost,probe_timeouts,congestion_events,packets_sent,"
                 "acks_received,acks_sent,datagrams_received,timer_wakeups,"
                 "monotonic_us\n");
    for (const Row& r : rows_) {
      std::fprintf(
          f,
          "%.1f,%llu,%llu,%.1f,%.1f,%.1f,%llu,%llu,%llu,%llu,%llu,"
          "%llu,%llu,%llu,%.1f\n",
          double(r.t_ns) / 1e3, (unsigned long long)r.cwnd,
          (unsigned long long)r.bytes_in_flight, double(r.srtt_ns) / 1e3,
          double(r.latest_rtt_ns) / 1e3, double(r.min_rtt_ns) / 1e3,
          (unsigned long long)r.packets_lost,
          (unsigned long long)r.probe_timeouts,
          (unsigned long long)r.congestion_events,
          (unsigned long long)r.packets_sent,
          (unsigned long long)r.acks_received, (unsigned long long)r.acks_sent,
          (unsigned long long)r.datagrams_received,
          (unsigned long long)r.timer_wakeups, double(r.monotonic_ns) / 1e3);
    }
    return std::fclose(f) == 0;
  }

 private:
  struct Row {
    int64_t monotonic_ns, t_ns;
    uint64_t cwnd, bytes_in_flight;
    int64_t srtt_ns, latest_rtt_ns, min_rtt_ns;
    uint64_t packets_lost, probe_timeouts, congestion_events, packets_sent,
        acks_received, acks_sent, datagrams_received, timer_wakeups;
  };
  std::vector<Row> rows_;
};

// --- Server
// -------------------------------------------------------------------

struct ServerConnection {
  ConnectionHandle handle;
  bool hello = false;
  Hello request;
  uint64_t received = 0;  // bulk upload bytes
  uint64_t sent = 0;      // bulk download bytes queued
  bool done_sent = false;
  bool bad = false;
  Timestamp first_byte = Timestamp::Never();
  Timestamp last_byte;
  Timestamp start;  // HELLO received
  CpuTime cpu0;
  LoopCounters counters0;
  LoopEndpointStats stats0;
};

int RunServer(const Options& o, Loop& loop) {
  auto ep = LoopEndpoint::Create(&loop, EndpointOptions(o));
  if (!ep.ok()) {
    std::fprintf(stderr, "ringlab_rudp_bench server: %s\n",
                 std::string(ep.status().message()).c_str());
    return kExitFailed;
  }
  LoopEndpoint& e = **ep;
  std::map<uint32_t, ServerConnection> conns;
  std::vector<std::byte> buf;
  uint64_t echoed = 0;
  auto send_done = [&](ConnectionHandle h, ServerConnection& sc) {
    Done done;
    done.server = Figures(e, h, sc.cpu0, sc.counters0, sc.stats0);
    done.server.bytes_received = sc.received;
    done.server.receive_span_ns =
        sc.first_byte.is_never() ? 0 : (sc.last_byte - sc.first_byte).count();
    if (e.Send(h, kChannel, AsBytes(&done, sizeof(done))) == SendResult::kOk) {
      sc.done_sent = true;
    }
  };
  auto pump = [&](ConnectionHandle h, ServerConnection& sc) {
    if (!sc.hello || sc.request.mode != Mode::kBulk ||
        sc.request.direction != Direction::kDownload) {
      return;
    }
    // DONE follows the client's stats request (once the data is in).
    while (sc.sent < sc.request.bytes) {
      const size_t n =
          size_t(std::min(sc.request.chunk, sc.request.bytes - sc.sent));
      FillChunk(buf, sc.sent, n);
      if (e.Send(h, kChannel, buf) != SendResult::kOk) return;
      sc.sent += n;
    }
  };
  e.SetEventHandler([&](const Event& ev) {
    ServerConnection& sc = conns[ev.connection.index];
    switch (ev.type) {
      case EventType::kConnected:
        sc = ServerConnection{};
        sc.handle = ev.connection;
        if (o.loss_pct > 0) e.SetReceiveLoss(o.loss_pct / 100, o.seed);
        break;
      case EventType::kMessage: {
        if (!sc.hello) {
          if (ev.message.size() != sizeof(Hello)) {
            sc.bad = true;
            break;
          }
          ev.message.CopyTo(
              {reinterpret_cast<std::byte*>(&sc.request), sizeof(Hello)});
          if (sc.request.magic != kMagic) {
            sc.bad = true;
            break;
          }
          sc.hello = true;
          sc.start = loop.now();
          sc.cpu0 = CpuTime::Now();
          sc.counters0 = loop.counters();
          sc.stats0 = e.stats();
          pump(ev.connection, sc);  // a download starts now; kWritable refills
          break;
        }
        if (sc.request.mode == Mode::kPingPong) {
          buf.resize(ev.message.size());
          ev.message.CopyTo(buf);
          e.Send(ev.connection, kChannel, buf);  // echo
          ++echoed;
          break;
        }
        if (sc.request.direction == Direction::kDownload) {
          Hello request;
          if (ev.message.size() == sizeof(Hello)) {
            ev.message.CopyTo(
                {reinterpret_cast<std::byte*>(&request), sizeof(request)});
          }
          if (request.magic == kMagic && request.kind == 3)
            send_done(ev.connection, sc);
          break;
        }
        if (sc.request.direction == Direction::kUpload) {
          const Timestamp now = loop.now();
          if (sc.first_byte.is_never()) sc.first_byte = now;
          sc.last_byte = now;
          if (!CheckChunk(ev.message, sc.received)) sc.bad = true;
          sc.received += ev.message.size();
          if (sc.received >= sc.request.bytes && !sc.done_sent) {
            send_done(ev.connection, sc);
          }
        }
        break;
      }
      case EventType::kWritable:
        pump(ev.connection, sc);
        if (sc.hello && sc.request.mode == Mode::kBulk &&
            sc.request.direction == Direction::kUpload &&
            sc.received >= sc.request.bytes && !sc.done_sent) {
          send_done(ev.connection, sc);  // it found no room before
        }
        break;
      case EventType::kClosed:
        conns.erase(ev.connection.index);
        break;
      default:
        break;
    }
  });
  // --trace: the first bulk connection, from its HELLO until DONE.
  Tracer tracer;
  if (!o.trace_path.empty()) tracer.Enable();
  std::optional<uint32_t> traced;
  std::printf("READY %s\n", e.local_endpoint().ToString().c_str());
  std::fflush(stdout);
  while (!g_stop) {
    if (loop.RunOnce(std::chrono::milliseconds(100)) < 0) break;
    if (!tracer.enabled()) continue;
    for (auto& [index, sc] : conns) {
      if (!sc.hello || sc.request.mode != Mode::kBulk || sc.done_sent) continue;
      if (!traced.has_value()) traced = index;
      if (*traced != index) continue;
      if (auto s = e.host().Stats(sc.handle); s.ok()) {
        tracer.Record(loop.now(), sc.start, *s, e.stats());
      }
    }
  }
  if (tracer.enabled() && !tracer.Write(o.trace_path)) {
    std::fprintf(stderr, "ringlab_rudp_bench server: cannot write %s\n",
                 o.trace_path.c_str());
  }
  std::printf(
      "SERVER_STATS {\"program\":\"ringlab_rudp_bench\",\"echoed\":%llu,"
      "\"dropped_by_impairment\":%llu}\n",
      (unsigned long long)echoed,
      (unsigned long long)e.stats().receive_dropped);
  return kExitOk;
}

// --- Client
// -------------------------------------------------------------------

struct Client {
  Client(const Options& options, Loop& l, LoopEndpoint& endpoint)
      : o(options), loop(l), e(endpoint) {
    if (!o.trace_path.empty()) tracer.Enable();
  }
  const Options& o;
  Loop& loop;
  LoopEndpoint& e;
  ConnectionHandle conn;
  bool connected = false;
  bool failed = false;
  std::string error;
  // pingpong
  LatencyHistogram rtt;
  uint64_t answered = 0, recorded = 0, next_seq = 0;
  bool waiting = false;
  std::vector<std::byte> message;
  // bulk
  uint64_t sent = 0, received = 0;
  bool done = false;
  std::optional<Done> server_done;
  Timestamp first_byte = Timestamp::Never(), last_byte;
  std::vector<std::byte> chunk;
  // measured phase
  Timestamp start = Timestamp::Never(), end;
  CpuTime cpu0, cpu1;
  LoopCounters counters0, counters1;
  LoopEndpointStats stats0;
  SideFigures figures;
  Tracer tracer;

  void Trace() {
    if (start.is_never() || done) return;
    if (auto s = e.host().Stats(conn); s.ok()) {
      tracer.Record(loop.now(), start, *s, e.stats());
    }
  }

  void StartMeasuring() {
    start = MonotonicNow();
    cpu0 = CpuTime::Now();
    counters0 = loop.counters();
    stats0 = e.stats();
  }
  void FinishMeasuring() {
    end = MonotonicNow();
    cpu1 = CpuTime::Now();
    counters1 = loop.counters();
    figures = Figures(e, conn, cpu0, counters0, stats0);
    figures.bytes_received = received;
    figures.receive_span_ns =
        first_byte.is_never() ? 0 : (last_byte - first_byte).count();
    done = true;
  }
  void SendPing() {
    message.assign(o.payload, std::byte{0});
    const int64_t now = MonotonicNow().nanos();
    std::memcpy(message.data(), &next_seq, 8);
    std::memcpy(message.data() + 8, &now, 8);
    if (e.Send(conn, kChannel, message) == SendResult::kOk) {
      ++next_seq;
      waiting = true;
    }
  }
  void Pump() {
    if (!connected || done || o.mode != Mode::kBulk ||
        o.direction != Direction::kUpload) {
      return;
    }
    while (sent < o.bytes) {
      const size_t n = size_t(std::min(o.chunk, o.bytes - sent));
      FillChunk(chunk, sent, n);
      if (e.Send(conn, kChannel, chunk) != SendResult::kOk) return;
      sent += n;
    }
  }
  void OnEvent(const Event& ev) {
    switch (ev.type) {
      case EventType::kConnected: {
        connected = true;
        if (o.loss_pct > 0) e.SetReceiveLoss(o.loss_pct / 100, o.seed);
        Hello h;
        h.mode = o.mode;
        h.direction = o.direction;
        h.bytes = o.bytes;
        h.chunk = o.chunk;
        e.Send(conn, kChannel, AsBytes(&h, sizeof(h)));
        if (o.mode == Mode::kPingPong) {
          if (o.warmup == 0) StartMeasuring();
          SendPing();
        } else {
          StartMeasuring();
          Pump();
        }
        break;
      }
      case EventType::kMessage:
        if (o.mode == Mode::kPingPong) {
          OnPong(ev.message);
        } else {
          OnBulk(ev.message);
        }
        break;
      case EventType::kWritable:
        Pump();
        break;
      case EventType::kConnectFailed:
      case EventType::kClosed:
        if (!done) {
          failed = true;
          error = absl::StrCat("connection ended: ",
                               std::string(CloseReasonName(ev.reason)));
        }
        break;
      default:
        break;
    }
  }
  void OnPong(const MessageView& m) {
    const int64_t now = MonotonicNow().nanos();
    if (m.size() != o.payload) {
      failed = true;
      error = "echo of the wrong size";
      return;
    }
    int64_t sent_ns;
    std::array<std::byte, 16> head;
    m.CopyTo(head);
    std::memcpy(&sent_ns, head.data() + 8, 8);
    ++answered;
    if (answered == o.warmup) StartMeasuring();
    if (answered > o.warmup) {
      rtt.Record(uint64_t(now - sent_ns));
      ++recorded;
      if (recorded == o.samples) {
        FinishMeasuring();
        return;
      }
    }
    SendPing();
  }
  void OnBulk(const MessageView& m) {
    if (o.direction == Direction::kUpload || received >= o.bytes) {
      // The DONE of the server.
      if (m.size() == sizeof(Done)) {
        Done d;
        m.CopyTo({reinterpret_cast<std::byte*>(&d), sizeof(d)});
        if (d.magic == kMagic && d.kind == 2) {
          server_done = d;
          if (o.direction == Direction::kUpload) FinishMeasuring();
          return;
        }
      }
      if (o.direction == Direction::kUpload) {
        failed = true;
        error = "unexpected message during an upload";
        return;
      }
    }
    const Timestamp now = loop.now();
    if (first_byte.is_never()) first_byte = now;
    last_byte = now;
    if (!CheckChunk(m, received)) {
      failed = true;
      error = absl::StrCat("corrupt data at byte ", received);
      return;
    }
    received += m.size();
    if (received >= o.bytes) {
      FinishMeasuring();
      // Ask for the server's figures now that its sending is over.
      Hello request;
      request.kind = 3;
      e.Send(conn, kChannel, AsBytes(&request, sizeof(request)));
    }
  }
};

std::string ResultJson(const Client& c, const Options& o) {
  const double duration_s = double((c.end - c.start).count()) / 1e9;
  const bool bulk = o.mode == Mode::kBulk;
  const double mb = double(o.bytes) / 1e6;
  const LoopCounters counters = c.counters1.Delta(c.counters0);
  const CpuTime cpu = c.cpu1 - c.cpu0;
  const uint64_t chunks = (o.bytes + o.chunk - 1) / o.chunk;
  const double messages = bulk ? double(chunks) : double(o.samples);
  const ConnectionStats stats = c.e.host().Stats(c.conn).ok()
                                    ? *c.e.host().Stats(c.conn)
                                    : ConnectionStats{};
  JsonWriter json;
  json.BeginObject();
  json.Key("schema").String("ringlab.rudp/1");
  json.Key("program").String("ringlab_rudp_bench");
  json.Key("protocol").String("rudp");
  AppendBackend(json, c.loop.backend());
  json.Key("mode").String(bulk ? "bulk" : "pingpong");
  json.Key("payload_bytes").Uint(bulk ? o.chunk : o.payload);
  json.Key("connections").Uint(1);
  json.Key("loss_pct").Number(o.loss_pct);
  json.Key("seed").Uint(o.seed);
  json.Key("congestion_control").Bool(o.cc);
  json.Key("nack_on_gap").Bool(o.nack);
  json.Key("segmentation_offload").Bool(c.e.segmentation_offload());
  json.Key("wait_batching").Bool(o.wait_batching);
  json.Key("samples").Uint(bulk ? chunks : c.recorded);
  json.Key("warmup").Uint(bulk ? 0 : o.warmup);
  json.Key("lost").Uint(0);  // reliable: nothing is given up
  json.Key("rtt_us").BeginObject();
  if (bulk) {
    for (const char* k : {"min", "mean", "p50", "p90", "p99", "p999", "max"}) {
      json.Key(k).Null();
    }
  } else {
    auto us = [](uint64_t ns) { return double(ns) / 1000.0; };
    json.Key("min").Number(us(c.rtt.min()));
    json.Key("mean").Number(c.rtt.mean() / 1000.0);
    json.Key("p50").Number(us(c.rtt.Percentile(50)));
    json.Key("p90").Number(us(c.rtt.Percentile(90)));
    json.Key("p99").Number(us(c.rtt.Percentile(99)));
    json.Key("p999").Number(us(c.rtt.Percentile(99.9)));
    json.Key("max").Number(us(c.rtt.max()));
  }
  json.EndObject();
  json.Key("duration_s").Number(duration_s);
  // The measured phase on CLOCK_MONOTONIC, so the runner can line it up with
  // the server's timeline.
  json.Key("measured_start_ns").Int(c.start.nanos());
  json.Key("measured_end_ns").Int(c.end.nanos());
  json.Key("messages_per_s").Number(duration_s > 0 ? messages / duration_s : 0);
  json.Key("cpu_us_per_msg").Number(double(cpu.total_us()) / messages);
  json.Key("kernel_entries_per_msg")
      .Number(double(counters.kernel_entries()) / messages);
  json.Key("counters");
  AppendCounters(json, counters);
  if (bulk) {
    const SideFigures* sender =
        o.direction == Direction::kUpload
            ? &c.figures
            : (c.server_done ? &c.server_done->server : nullptr);
    const SideFigures* receiver =
        o.direction == Direction::kUpload
            ? (c.server_done ? &c.server_done->server : nullptr)
            : &c.figures;
    json.Key("bulk").BeginObject();
    json.Key("direction")
        .String(o.direction == Direction::kUpload ? "upload" : "download");
    json.Key("bytes").Uint(o.bytes);
    json.Key("chunk_bytes").Uint(o.chunk);
    json.Key("completion_s").Number(duration_s);
    json.Key("goodput_bytes_per_s")
        .Number(duration_s > 0 ? double(o.bytes) / duration_s : 0);
    json.Key("goodput_mbit_s").Number(duration_s > 0 ? mb * 8 / duration_s : 0);
    json.Key("receive_span_s")
        .Number(receiver ? double(receiver->receive_span_ns) / 1e9 : 0);
    json.Key("client_cpu_us_per_mb").Number(double(cpu.total_us()) / mb);
    json.Key("client_kernel_entries_per_mb")
        .Number(double(counters.kernel_entries()) / mb);
    if (c.server_done) {
      json.Key("server_cpu_us_per_mb")
          .Number(double(c.server_done->server.cpu_us) / mb);
      json.Key("server_kernel_entries_per_mb")
          .Number(double(c.server_done->server.kernel_entries) / mb);
      json.Key("kernel_entries_per_mb")
          .Number(double(counters.kernel_entries() +
                         c.server_done->server.kernel_entries) /
                  mb);
    }
    if (sender != nullptr && sender->fragments_sent > 0) {
      // Later transmissions over first transmissions, in fragments (the
      // same measure as ENet's resends over the commands one copy needs).
      json.Key("retransmission_ratio")
          .Number(double(sender->fragments_retransmitted) /
                  double(sender->fragments_sent));
    } else {
      json.Key("retransmission_ratio").Null();
    }
    // Retransmissions that were not needed: fragments the receiver got
    // twice (there is no duplication on this path).
    if (receiver != nullptr) {
      json.Key("spurious_retransmissions").Uint(receiver->duplicate_fragments);
    } else {
      json.Key("spurious_retransmissions").Null();
    }
    json.Key("spurious_loss_declarations")
        .Uint(sender ? sender->spurious_losses : 0);
    json.EndObject();
  }
  json.Key("client");
  AppendSide(json, c.figures, bulk ? mb : 0);
  json.Key("server");
  if (c.server_done) {
    AppendSide(json, c.server_done->server, mb);
  } else {
    json.Null();
  }
  json.Key("smoothed_rtt_us").Number(double(stats.smoothed_rtt.count()) / 1000);
  json.Key("congestion_window").Uint(stats.congestion_window);
  json.Key("cpu").Int(o.cpu);
  json.Key("cpu_user_us").Int(cpu.user_us);
  json.Key("cpu_system_us").Int(cpu.system_us);
  json.Key("server_address").String(o.server.ToString());
  json.Key("histogram_max_relative_error").Number(c.rtt.max_relative_error());
  json.EndObject();
  return json.str();
}

int RunClient(const Options& o, Loop& loop) {
  auto ep = LoopEndpoint::Create(&loop, EndpointOptions(o));
  if (!ep.ok()) {
    std::fprintf(stderr, "ringlab_rudp_bench client: %s\n",
                 std::string(ep.status().message()).c_str());
    return kExitFailed;
  }
  Client c(o, loop, **ep);
  (*ep)->SetEventHandler([&c](const Event& ev) { c.OnEvent(ev); });
  auto conn = (*ep)->Connect(o.server);
  if (!conn.ok()) {
    std::fprintf(stderr, "ringlab_rudp_bench client: %s\n",
                 std::string(conn.status().message()).c_str());
    return kExitFailed;
  }
  c.conn = *conn;
  const Timestamp deadline = MonotonicNow() + std::chrono::seconds(o.timeout_s);
  while (!c.failed && !(c.done && (o.mode == Mode::kPingPong ||
                                   c.server_done.has_value()))) {
    if (g_stop || MonotonicNow() > deadline) {
      c.failed = true;
      c.error = g_stop ? "interrupted"
                       : absl::StrCat("timed out after ", o.timeout_s, " s");
      break;
    }
    // Nothing here polls: the sender refills on kWritable, the endpoint
    // resumes output on send completions and OnWritable, so the wait only
    // bounds how late a timeout or a signal is noticed.
    if (loop.RunOnce(std::chrono::milliseconds(50)) < 0) {
      c.failed = true;
      c.error = "the loop failed";
    }
    if (!o.trace_path.empty()) c.Trace();
  }
  if (c.failed) {
    std::fprintf(stderr, "ringlab_rudp_bench client: run failed: %s\n",
                 c.error.c_str());
    return kExitFailed;
  }
  if (!o.trace_path.empty() && !c.tracer.Write(o.trace_path)) {
    std::fprintf(stderr, "ringlab_rudp_bench client: cannot write %s\n",
                 o.trace_path.c_str());
    return kExitFailed;
  }
  const std::string json = ResultJson(c, o);
  if (o.mode == Mode::kBulk) {
    const double s = double((c.end - c.start).count()) / 1e9;
    std::printf(
        "ringlab_rudp_bench client: bulk %s %llu B on %s, %.3f s, %.1f Mbit/s, "
        "loss %.1f%%, cc %s\n",
        o.direction == Direction::kUpload ? "upload" : "download",
        (unsigned long long)o.bytes, loop.backend().name.c_str(), s,
        s > 0 ? double(o.bytes) * 8 / 1e6 / s : 0, o.loss_pct,
        o.cc ? "on" : "off");
  } else {
    std::printf(
        "ringlab_rudp_bench client: pingpong %u B on %s, %llu samples, rtt us "
        "p50 %.2f p99 %.2f max %.2f, loss %.1f%%\n",
        o.payload, loop.backend().name.c_str(), (unsigned long long)c.recorded,
        double(c.rtt.Percentile(50)) / 1000,
        double(c.rtt.Percentile(99)) / 1000, double(c.rtt.max()) / 1000,
        o.loss_pct);
  }
  if (o.json_path.empty()) {
    std::printf("RESULT %s\n", json.c_str());
  } else {
    FILE* f = std::fopen(o.json_path.c_str(), "w");
    if (f == nullptr || std::fputs(json.c_str(), f) < 0 ||
        std::fclose(f) != 0) {
      std::fprintf(stderr, "ringlab_rudp_bench client: cannot write %s\n",
                   o.json_path.c_str());
      return kExitFailed;
    }
  }
  std::fflush(stdout);
  return kExitOk;
}

}  // namespace
}  // namespace ringlab::rudp::bench

int main(int argc, char** argv) {
  using namespace ringlab::rudp::bench;
  Options o;
  if (auto error = ParseArgs(argc, argv, &o)) return Usage(*error);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  if (o.cpu >= 0) {
    if (absl::Status s = ringlab::bench::PinThisThreadToCpu(o.cpu); !s.ok()) {
      std::fprintf(stderr, "ringlab_rudp_bench: %s\n",
                   std::string(s.message()).c_str());
      return kExitUsage;
    }
  }
  ringlab::transport::LoopOptions lo;
  lo.backend = o.backend;
  lo.wait_batching = o.wait_batching;
  auto loop = ringlab::transport::Loop::Create(lo);
  if (!loop.ok()) {
    std::fprintf(stderr, "ringlab_rudp_bench: %s\n",
                 std::string(loop.status().message()).c_str());
    return IsUnsupported(loop.status()) ? kExitUnsupported : kExitFailed;
  }
  return o.role == "server" ? RunServer(o, **loop) : RunClient(o, **loop);
}
