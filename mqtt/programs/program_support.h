// Shared by ringlab_mqtt_broker and ringlab_mqtt_bench: `--name=value` flag
// parsing with generated --help, the JSON pieces every ringlab result
// carries (backend, Loop counters, rusage), and SIGINT/SIGTERM handling that
// only sets a flag.
//
//   Flags flags("ringlab_mqtt_broker", "An MQTT 3.1.1/5.0 broker.");
//   std::string backend = "auto";
//   flags.Add("backend", "preset name or auto", &backend);
//   if (absl::Status s = flags.Parse(argc, argv); !s.ok()) ...
//   if (flags.help()) { std::fputs(flags.Usage().c_str(), stdout); return 0; }
#ifndef RINGLAB_MQTT_PROGRAMS_PROGRAM_SUPPORT_H_
#define RINGLAB_MQTT_PROGRAMS_PROGRAM_SUPPORT_H_

#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bench/json_writer.h"
#include "transport/counters.h"
#include "transport/preset.h"

namespace ringlab::mqtt::programs {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRunFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnsupportedBackend = 3;

class Flags {
 public:
  Flags(std::string program, std::string summary)
      : program_(std::move(program)), summary_(std::move(summary)) {}

  void Add(const std::string& name, const std::string& help, std::string* v);
  void Add(const std::string& name, const std::string& help, uint64_t* v);
  void Add(const std::string& name, const std::string& help, uint32_t* v);
  void Add(const std::string& name, const std::string& help, int* v);
  void Add(const std::string& name, const std::string& help, double* v);
  void Add(const std::string& name, const std::string& help, bool* v);

  // InvalidArgument naming the flag for unknown flags or bad values.
  absl::Status Parse(int argc, char** argv);
  bool help() const { return help_; }
  std::string Usage() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string default_text;
    std::function<bool(const std::string&)> set;
  };
  std::string program_;
  std::string summary_;
  std::vector<Flag> flags_;
  bool help_ = false;
};

// The server timeline of the runner's program contract (experiments/
// README.md): cumulative CPU, messages, kernel entries, and current RSS and
// connections, sampled on a timer, at most kMaxSamples (when full every
// other sample is dropped and sampling halves).
class Timeline {
 public:
  static constexpr size_t kMaxSamples = 2048;
  struct Sample {
    int64_t t_ns = 0;  // CLOCK_MONOTONIC
    int64_t cpu_us = 0;
    uint64_t messages = 0;
    uint64_t kernel_entries = 0;
    uint64_t rss_kib = 0;
    uint64_t connections = 0;
  };
  // Called every tick; `force` keeps the sample whatever the stride.
  void Add(const Sample& s, bool force);
  // {interval_ms, t_ns[], cpu_us[], messages[], kernel_entries[], rss_kib[],
  // connections[]}.
  void AppendJson(bench::JsonWriter& json, int tick_ms) const;

 private:
  std::vector<Sample> samples_;
  uint64_t tick_ = 0;
  uint64_t stride_ = 1;
};

// "backend", "backend_requested", "backend_flags", "backend_note".
void AppendBackend(bench::JsonWriter& json, const transport::BackendInfo& b);
// Every Loop counter plus kernel_entries.
void AppendCounters(bench::JsonWriter& json, const transport::LoopCounters& c);
absl::Status WriteTextFile(const std::string& path, const std::string& text);
// The resident set size of this process in bytes (from /proc/self/statm).
uint64_t ResidentBytes();

// Raises RLIMIT_NOFILE's soft limit towards `wanted` (up to the hard
// limit); returns the soft limit now in effect.
uint64_t RaiseFileLimit(uint64_t wanted);

// SIGINT and SIGTERM set stop_requested(); SIGPIPE is ignored.
void InstallStopHandlers();
bool stop_requested();

// True for the errors Loop::Create returns when the preset cannot run here.
bool IsUnsupportedBackend(const absl::Status& status);

}  // namespace ringlab::mqtt::programs

#endif  // RINGLAB_MQTT_PROGRAMS_PROGRAM_SUPPORT_H_
