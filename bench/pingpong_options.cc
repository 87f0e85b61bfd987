#include "bench/pingpong_options.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "transport/preset.h"

namespace ringlab::bench {
namespace {

constexpr absl::string_view kServerFlags[] = {"proto",
                                              "backend",
                                              "bind",
                                              "cpu",
                                              "payload",
                                              "json",
                                              "sqpoll_cpu",
                                              "connections",
                                              "wait_batching",
                                              "features",
                                              "min_wait_window_us",
                                              "hybrid_spin_max_us"};
constexpr absl::string_view kClientFlags[] = {"proto",
                                              "backend",
                                              "server",
                                              "payload",
                                              "samples",
                                              "warmup",
                                              "mode",
                                              "rate",
                                              "inflight",
                                              "connections",
                                              "cpu",
                                              "json",
                                              "timeout_s",
                                              "sqpoll_cpu",
                                              "max_duration_s",
                                              "wait_batching",
                                              "features",
                                              "min_wait_window_us",
                                              "idle_s",
                                              "hybrid_spin_max_us"};

absl::Status Usage(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

template <typename T>
absl::Status ParseInt(absl::string_view name, absl::string_view text, T min,
                      T max, T* out) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < static_cast<int64_t>(min) ||
      value > static_cast<int64_t>(max)) {
    return Usage(absl::StrCat("--", name, "=", text,
                              ": expected an integer in [", min, ", ", max,
                              "]"));
  }
  *out = static_cast<T>(value);
  return absl::OkStatus();
}

absl::Status ParseDouble(absl::string_view name, absl::string_view text,
                         double min, double* out) {
  double value = 0;
  if (!absl::SimpleAtod(text, &value) || !std::isfinite(value) || value < min) {
    return Usage(
        absl::StrCat("--", name, "=", text, ": expected a number >= ", min));
  }
  *out = value;
  return absl::OkStatus();
}

}  // namespace

std::string_view ProtocolName(Protocol protocol) {
  return protocol == Protocol::kUdp ? "udp" : "tcp";
}

std::string_view ModeName(Mode mode) {
  switch (mode) {
    case Mode::kPingPong:
      return "pingpong";
    case Mode::kRate:
      return "rate";
    case Mode::kBurst:
      return "burst";
    case Mode::kIdle:
      return "idle";
  }
  return "?";
}

std::string PingPongUsage() {
  return absl::StrCat(
      "usage:\n"
      "  ringlab_pingpong server --proto=udp|tcp --backend=PRESET "
      "--bind=HOST:PORT\n"
      "                          [--cpu=N] [--payload=64] [--json=PATH] "
      "[--sqpoll_cpu=N]\n"
      "                          [--connections=N (expected clients; sizes "
      "the socket table)]\n"
      "                          [--wait_batching=0|1] [--features=LIST]\n"
      "  ringlab_pingpong client --proto=udp|tcp --backend=PRESET "
      "--server=HOST:PORT\n"
      "                          [--payload=64] [--samples=100000] "
      "[--warmup=5000]\n"
      "                          [--mode=pingpong|rate|burst|idle] [--rate=N] "
      "[--inflight=32]\n"
      "                          [--idle_s=5 (mode idle: seconds without "
      "traffic after the warm-up; reports CPU %)]\n"
      "                          [--connections=1] [--cpu=N] [--json=PATH] "
      "[--timeout_s=30]\n"
      "                          [--max_duration_s=S (end the measured phase "
      "after S s even if fewer samples)]\n"
      "                          [--sqpoll_cpu=N] [--wait_batching=0|1]\n"
      "                          [--features=LIST (comma-separated; '-NAME' "
      "turns a preset's feature off)] [--min_wait_window_us=N]\n"
      "                          [--hybrid_spin_max_us=N (hybrid presets: the "
      "longest spin after a send; default 100)]\n"
      "presets: ",
      transport::ValidPresetNames(),
      "\n"
      "exit codes: 0 ok, 1 run failed, 2 usage error, 3 unsupported "
      "backend\n");
}

absl::StatusOr<PingPongConfig> ParsePingPongArgs(int argc, char** argv) {
  if (argc < 2) return Usage("missing role: expected 'server' or 'client'");
  PingPongConfig config;
  const absl::string_view role = argv[1];
  if (role == "server") {
    config.role = Role::kServer;
  } else if (role == "client") {
    config.role = Role::kClient;
  } else {
    return Usage(absl::StrCat("unknown role '", role,
                              "': expected 'server' or 'client'"));
  }
  const std::span<const absl::string_view> valid =
      config.role == Role::kServer
          ? std::span<const absl::string_view>(kServerFlags)
          : std::span<const absl::string_view>(kClientFlags);

  bool rate_given = false;
  bool inflight_given = false;
  std::string bind_text = "127.0.0.1:9000";
  std::string server_text = "127.0.0.1:9000";
  for (int i = 2; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.substr(0, 2) != "--" || eq == absl::string_view::npos) {
      return Usage(
          absl::StrCat("bad argument '", arg, "': flags are --name=value"));
    }
    const absl::string_view name = arg.substr(2, eq - 2);
    const absl::string_view value = arg.substr(eq + 1);
    if (std::find(valid.begin(), valid.end(), name) == valid.end()) {
      std::vector<std::string> shown;
      for (absl::string_view v : valid) shown.push_back(absl::StrCat("--", v));
      return Usage(absl::StrCat("unknown flag --", name, " for ", role,
                                "; valid flags: ", absl::StrJoin(shown, " ")));
    }
    absl::Status s;
    if (name == "proto") {
      if (value == "udp") {
        config.protocol = Protocol::kUdp;
      } else if (value == "tcp") {
        config.protocol = Protocol::kTcp;
      } else {
        s = Usage(absl::StrCat("--proto=", value, ": expected udp or tcp"));
      }
    } else if (name == "backend") {
      if (value != "auto" &&
          !transport::ParsePreset(std::string_view(value.data(), value.size()))
               .has_value()) {
        s = Usage(absl::StrCat("--backend=", value, ": unknown preset; valid: ",
                               transport::ValidPresetNames()));
      }
      config.backend = std::string(value);
    } else if (name == "bind") {
      bind_text = std::string(value);
    } else if (name == "server") {
      server_text = std::string(value);
    } else if (name == "cpu") {
      s = ParseInt<int>(name, value, -1, 4095, &config.cpu);
    } else if (name == "sqpoll_cpu") {
      s = ParseInt<int>(name, value, -1, 4095, &config.sqpoll_cpu);
    } else if (name == "wait_batching") {
      int on = 0;
      s = ParseInt<int>(name, value, 0, 1, &on);
      config.wait_batching = on != 0;
    } else if (name == "min_wait_window_us") {
      s = ParseInt<uint32_t>(name, value, 1, 1000000,
                             &config.min_wait_window_us);
    } else if (name == "hybrid_spin_max_us") {
      s = ParseInt<uint32_t>(name, value, 1, 1000000,
                             &config.hybrid_spin_max_us);
    } else if (name == "features") {
      s = transport::ParseFeatureList(
          std::string_view(value.data(), value.size()), &config.features);
      if (!s.ok())
        s = Usage(absl::StrCat("--features=", value, ": ", s.message()));
    } else if (name == "payload") {
      s = ParseInt<uint32_t>(name, value, 0, kMaxTcpPayloadBytes,
                             &config.payload_bytes);
    } else if (name == "json") {
      config.json_path = std::string(value);
    } else if (name == "samples") {
      s = ParseInt<uint64_t>(name, value, 1, uint64_t{1} << 40,
                             &config.samples);
    } else if (name == "warmup") {
      s = ParseInt<uint64_t>(name, value, 0, uint64_t{1} << 40, &config.warmup);
    } else if (name == "mode") {
      if (value == "pingpong") {
        config.mode = Mode::kPingPong;
      } else if (value == "rate") {
        config.mode = Mode::kRate;
      } else if (value == "burst") {
        config.mode = Mode::kBurst;
      } else if (value == "idle") {
        config.mode = Mode::kIdle;
      } else {
        s = Usage(absl::StrCat("--mode=", value,
                               ": expected pingpong, rate, burst or idle"));
      }
    } else if (name == "rate") {
      rate_given = true;
      s = ParseDouble(name, value, 0, &config.rate_per_s);
    } else if (name == "inflight") {
      inflight_given = true;
      s = ParseInt<uint32_t>(name, value, 1, kRateModeMaxInflight,
                             &config.inflight);
    } else if (name == "connections") {
      s = ParseInt<uint32_t>(name, value, 1, kMaxConnections,
                             &config.connections);
    } else if (name == "timeout_s") {
      s = ParseDouble(name, value, 0.001, &config.timeout_s);
    } else if (name == "max_duration_s") {
      s = ParseDouble(name, value, 0.001, &config.max_duration_s);
    } else if (name == "idle_s") {
      s = ParseDouble(name, value, 0.001, &config.idle_s);
    }
    if (!s.ok()) return s;
  }

  if (config.payload_bytes < kMinPayloadBytes) {
    return Usage(absl::StrCat(
        "--payload=", config.payload_bytes, " is too small: every message ",
        "carries an 8-byte sequence number and an 8-byte check word; use >= ",
        kMinPayloadBytes));
  }
  if (config.protocol == Protocol::kUdp &&
      config.payload_bytes > kMaxUdpPayloadBytes) {
    return Usage(absl::StrCat("--payload=", config.payload_bytes,
                              " exceeds the largest UDP datagram (",
                              kMaxUdpPayloadBytes, ")"));
  }
  if (config.role == Role::kServer) {
    absl::StatusOr<Endpoint> bind = Endpoint::Parse(bind_text);
    if (!bind.ok()) {
      return Usage(absl::StrCat("--bind: ", bind.status().message()));
    }
    config.bind = *bind;
    return config;
  }

  absl::StatusOr<Endpoint> server = Endpoint::Parse(server_text);
  if (!server.ok()) {
    return Usage(absl::StrCat("--server: ", server.status().message()));
  }
  if (server->port() == 0) return Usage("--server: port 0 is not a server");
  config.server = *server;
  if (config.mode == Mode::kRate && !(config.rate_per_s > 0)) {
    return Usage("--mode=rate needs --rate=N (messages per second, > 0)");
  }
  if (config.mode != Mode::kRate && rate_given && config.rate_per_s > 0) {
    std::fprintf(stderr, "note: --rate is ignored unless --mode=rate\n");
    config.rate_per_s = 0;
  }
  if (config.mode != Mode::kBurst && inflight_given) {
    std::fprintf(stderr, "note: --inflight is ignored unless --mode=burst\n");
  }
  return config;
}

transport::LoopOptions PingPongLoopOptions(const PingPongConfig& config) {
  transport::LoopOptions options;
  options.backend = config.backend;
  // UDP: one datagram must fit one buffer or it would be truncated. TCP:
  // larger messages are sent as several 64 KiB chunks.
  const uint32_t wanted = std::max<uint32_t>(
      2048, config.protocol == Protocol::kUdp
                ? config.payload_bytes
                : std::min<uint32_t>(config.payload_bytes, 64u << 10));
  options.buffer_size = wanted;
  constexpr uint64_t kRegionBytes = 4u << 20;
  const uint64_t rounded = (uint64_t{wanted} + 63) / 64 * 64;
  uint32_t count = static_cast<uint32_t>(
      std::clamp<uint64_t>(kRegionBytes / rounded, 64, 2048));
  count = std::bit_floor(count);
  // TCP with many messages in flight: every message sent in one iteration
  // holds a pool buffer until the iteration's flush (epoll) or its send
  // completion (io_uring), and on epoll a quarter of the pool is kept for
  // receives. With the default 2,048 the epoll client kept ~2,000 of
  // 1,000 x 8 in flight (pool_exhausted 457k times in 3 s) while io_uring
  // kept 8,000, so the two measured different loads. Both backends get the
  // same larger pool; runs with fewer messages in flight are unchanged.
  if (config.protocol == Protocol::kTcp) {
    const uint64_t in_flight =
        uint64_t{config.connections} *
        (config.mode == Mode::kBurst ? config.inflight : 1);
    if (2 * in_flight > count) {
      count = static_cast<uint32_t>(
          std::bit_ceil(std::min<uint64_t>(2 * in_flight, 65536)));
    }
  }
  options.buffer_count = count;
  options.provided_buffers = std::min<uint32_t>(512, count / 2);
  options.sqpoll_cpu = config.sqpoll_cpu;
  options.wait_batching = config.wait_batching;
  options.features = config.features;
  if (config.min_wait_window_us > 0) {
    options.min_wait_window =
        std::chrono::microseconds(config.min_wait_window_us);
  }
  if (config.hybrid_spin_max_us > 0) {
    options.hybrid_spin_max =
        std::chrono::microseconds(config.hybrid_spin_max_us);
  }
  // Room for every connection plus listeners; the default below that keeps
  // small runs exactly as they were.
  options.max_sockets = std::max<uint32_t>(
      options.max_sockets, config.connections + kSocketHeadroom);
  return options;
}

bool IsUnsupportedBackend(const absl::Status& status) {
  switch (status.code()) {
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

void AppendCounters(JsonWriter& json, const transport::LoopCounters& c) {
  json.BeginObject();
  c.ForEach([&json](const char* name, uint64_t value) {
    json.Key(name).Uint(value);
  });
  json.Key("kernel_entries").Uint(c.kernel_entries()).EndObject();
}

void AppendBackend(JsonWriter& json, const transport::BackendInfo& info) {
  json.Key("backend").String(info.name);
  json.Key("backend_requested").String(info.requested);
  json.Key("backend_flags").String(info.flags.ToString());
  json.Key("backend_note").String(info.chosen_because);
  json.Key("backend_adjustments").String(info.adjustments);
  // What the kernel offers, including features no preset uses yet, so a
  // record says which of them a run could have had.
  json.Key("kernel_capabilities")
      .String(transport::ProbeCapabilities().ToString());
}

absl::Status WriteTextFile(const std::string& path, std::string_view contents) {
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  const bool ok = std::fwrite(contents.data(), 1, contents.size(), file) ==
                      contents.size() &&
                  std::fputc('\n', file) != EOF;
  const bool closed = std::fclose(file) == 0;
  if (!ok || !closed) {
    return absl::UnavailableError(absl::StrCat("writing ", path, " failed"));
  }
  return absl::OkStatus();
}

}  // namespace ringlab::bench
