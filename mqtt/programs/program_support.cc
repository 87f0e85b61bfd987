#include "mqtt/programs/program_support.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ringlab::mqtt::programs {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnStop(int) { g_stop = 1; }

}  // namespace

void Flags::Add(const std::string& name, const std::string& help,
                std::string* v) {
  flags_.push_back({name, help, *v, [v](const std::string& s) {
                      *v = s;
                      return true;
                    }});
}
void Flags::Add(const std::string& name, const std::string& help, uint64_t* v) {
  flags_.push_back({name, help, std::to_string(*v), [v](const std::string& s) {
                      return absl::SimpleAtoi(s, v);
                    }});
}
void Flags::Add(const std::string& name, const std::string& help, uint32_t* v) {
  flags_.push_back({name, help, std::to_string(*v), [v](const std::string& s) {
                      return absl::SimpleAtoi(s, v);
                    }});
}
void Flags::Add(const std::string& name, const std::string& help, int* v) {
  flags_.push_back({name, help, std::to_string(*v), [v](const std::string& s) {
                      return absl::SimpleAtoi(s, v);
                    }});
}
void Flags::Add(const std::string& name, const std::string& help, double* v) {
  flags_.push_back({name, help, absl::StrCat(*v), [v](const std::string& s) {
                      return absl::SimpleAtod(s, v);
                    }});
}
void Flags::Add(const std::string& name, const std::string& help, bool* v) {
  flags_.push_back(
      {name, help, *v ? "true" : "false", [v](const std::string& s) {
         if (s == "true" || s == "1" || s.empty()) {
           *v = true;
         } else if (s == "false" || s == "0") {
           *v = false;
         } else {
           return false;
         }
         return true;
       }});
}

absl::Status Flags::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(program_, ": unexpected argument '", arg,
                       "' (flags are --name=value; see --help)"));
    }
    const size_t eq = arg.find('=');
    const std::string name =
        arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const std::string value =
        eq == std::string::npos ? std::string() : arg.substr(eq + 1);
    bool found = false;
    for (Flag& f : flags_) {
      if (f.name != name) continue;
      found = true;
      if (!f.set(value)) {
        return absl::InvalidArgumentError(
            absl::StrCat(program_, ": bad value '", value, "' for --", name));
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat(program_, ": unknown flag --", name, " (see --help)"));
    }
  }
  return absl::OkStatus();
}

std::string Flags::Usage() const {
  std::string out = absl::StrCat("Usage: ", program_, " [--flag=value ...]\n\n",
                                 summary_, "\n\nFlags:\n");
  for (const Flag& f : flags_) {
    absl::StrAppend(&out, "  --", f.name, " (default: ",
                    f.default_text.empty() ? "\"\"" : f.default_text,
                    ")\n      ", f.help, "\n");
  }
  absl::StrAppend(&out, "  --help\n      Print this text and exit.\n");
  return out;
}

void Timeline::Add(const Sample& s, bool force) {
  ++tick_;
  if (!force && tick_ % stride_ != 0) return;
  samples_.push_back(s);
  if (samples_.size() >= kMaxSamples) {
    size_t kept = 0;
    for (size_t i = 0; i < samples_.size(); i += 2)
      samples_[kept++] = samples_[i];
    samples_.resize(kept);
    stride_ *= 2;
  }
}

void Timeline::AppendJson(bench::JsonWriter& json, int tick_ms) const {
  json.BeginObject();
  json.Key("interval_ms").Int(int64_t(tick_ms) * int64_t(stride_));
  auto column = [&](const char* name, auto get) {
    json.Key(name).BeginArray();
    for (const Sample& s : samples_) json.Int(int64_t(get(s)));
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

void AppendBackend(bench::JsonWriter& json, const transport::BackendInfo& b) {
  json.Key("backend").String(b.name);
  json.Key("backend_requested").String(b.requested);
  json.Key("backend_flags").String(b.flags.ToString());
  json.Key("backend_note").String(b.chosen_because);
}

void AppendCounters(bench::JsonWriter& json, const transport::LoopCounters& c) {
  json.BeginObject();
  c.ForEach([&json](const char* name, uint64_t value) {
    json.Key(name).Uint(value);
  });
  json.Key("kernel_entries").Uint(c.kernel_entries()).EndObject();
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() &&
                  std::fputc('\n', f) != EOF;
  if (std::fclose(f) != 0 || !ok) {
    return absl::UnavailableError(absl::StrCat("writing ", path, " failed"));
  }
  return absl::OkStatus();
}

uint64_t ResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return uint64_t(resident) * uint64_t(::sysconf(_SC_PAGESIZE));
}

uint64_t RaiseFileLimit(uint64_t wanted) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  if (lim.rlim_cur < wanted) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, wanted);
    (void)::setrlimit(RLIMIT_NOFILE, &lim);
    (void)::getrlimit(RLIMIT_NOFILE, &lim);
  }
  return uint64_t(lim.rlim_cur);
}

void InstallStopHandlers() {
  struct sigaction action {};
  action.sa_handler = OnStop;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

bool stop_requested() { return g_stop != 0; }

bool IsUnsupportedBackend(const absl::Status& status) {
  return absl::IsFailedPrecondition(status) ||
         absl::IsPermissionDenied(status) || absl::IsUnimplemented(status) ||
         absl::IsResourceExhausted(status) || absl::IsUnavailable(status);
}

}  // namespace ringlab::mqtt::programs
