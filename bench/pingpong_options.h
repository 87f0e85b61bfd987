// Command line, shared settings and output helpers of ringlab_pingpong.
//
// ringlab_pingpong measures round trips over UDP or TCP on any backend preset.
// The contract (flags, stdout lines, JSON schema, exit codes) is shared with
// the experiment runner (the ringlab pingpong spec). This header
// holds what both roles share: the parsed configuration, the Loop sizing, and
// small output helpers.
//
//   absl::StatusOr<PingPongConfig> config = ParsePingPongArgs(argc, argv);
//   if (!config.ok()) { print config.status().message(); return kExitUsage; }
//   return config->role == Role::kServer ? RunPingPongServer(*config)
//                                        : RunPingPongClient(*config);
//
// Errors: ParsePingPongArgs returns InvalidArgument with a message meant for
// the user (unknown flags list the valid ones).
#ifndef RINGLAB_BENCH_PINGPONG_OPTIONS_H_
#define RINGLAB_BENCH_PINGPONG_OPTIONS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/json_writer.h"
#include "transport/counters.h"
#include "transport/endpoint.h"
#include "transport/loop.h"

namespace ringlab::bench {

// Exit codes of the contract.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRunFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnsupportedBackend = 3;

// Every message starts with an 8-byte sequence number and an 8-byte check
// word, so shorter payloads cannot be validated.
inline constexpr uint32_t kMinPayloadBytes = 16;
inline constexpr uint32_t kMaxUdpPayloadBytes = 65507;
inline constexpr uint32_t kMaxTcpPayloadBytes = 64u << 20;
// Open-loop mode never has more than this many messages outstanding.
inline constexpr uint32_t kRateModeMaxInflight = 4096;
// Most connections one client opens (and a server is sized for).
inline constexpr uint32_t kMaxConnections = 10000;
// Sockets and descriptors beyond the connections: listener, ring, epoll fd,
// stdio, the timer, files.
inline constexpr uint32_t kSocketHeadroom = 64;

enum class Role { kServer, kClient };
enum class Protocol { kUdp, kTcp };
enum class Mode { kPingPong, kRate, kBurst };

std::string_view ProtocolName(Protocol protocol);
std::string_view ModeName(Mode mode);

struct PingPongConfig {
  Role role = Role::kClient;
  Protocol protocol = Protocol::kUdp;
  std::string backend = "auto";
  Endpoint bind;    // server
  Endpoint server;  // client
  int cpu = -1;
  int sqpoll_cpu = -1;
  // LoopOptions::wait_batching: one enter per UDP round trip on uring-fixed
  // and uring-sqpoll, at the price of late completions for unanswered sends.
  bool wait_batching = false;
  uint32_t payload_bytes = 64;
  std::string json_path;
  // Client only.
  uint64_t samples = 100000;
  uint64_t warmup = 5000;
  Mode mode = Mode::kPingPong;
  double rate_per_s = 0;
  uint32_t inflight = 32;
  // Client: connections to open. Server: how many clients to expect, which
  // sizes its socket table and file descriptor limit.
  uint32_t connections = 1;
  double timeout_s = 30;
  // When > 0, the measured phase also ends after this long: `samples` is
  // then a cap, and the result counts what was recorded (runs over many
  // connection counts last about the same time).
  double max_duration_s = 0;
};

// Parses `argv[1]` (server|client) and `--name=value` flags.
absl::StatusOr<PingPongConfig> ParsePingPongArgs(int argc, char** argv);
std::string PingPongUsage();

// Loop sizing for `config`: buffers large enough for one message (UDP) or a
// 64 KiB chunk (TCP), with the registered region kept near 4 MiB so the
// uring-fixed presets stay under the default 8 MiB memlock limit.
transport::LoopOptions PingPongLoopOptions(const PingPongConfig& config);

// True for Loop::Create errors that mean "this preset cannot run here"
// (exit code 3) rather than a broken run.
bool IsUnsupportedBackend(const absl::Status& status);

// Appends every LoopCounters field as a JSON object (after a Key()).
void AppendCounters(JsonWriter& json, const transport::LoopCounters& counters);
// Appends backend, backend_requested, backend_flags, backend_note.
void AppendBackend(JsonWriter& json, const transport::BackendInfo& info);

// Writes `contents` plus a newline to `path`, replacing it.
absl::Status WriteTextFile(const std::string& path, std::string_view contents);

int RunPingPongServer(const PingPongConfig& config);
int RunPingPongClient(const PingPongConfig& config);

}  // namespace ringlab::bench

#endif  // RINGLAB_BENCH_PINGPONG_OPTIONS_H_
