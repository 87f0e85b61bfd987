#include "rtps/internal/bench_program.h"

#include <atomic>
#include <csignal>
#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/process_stats.h"

namespace ringlab::rtps::bench_program {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

bool IsUnsupportedBackend(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnimplemented:
      return true;
    case absl::StatusCode::kResourceExhausted:
      // Memlock limits are "unsupported here"; a port range with no free
      // participant id is a failed run.
      return !absl::StrContains(s.message(), "participant id");
    default:
      return false;
  }
}

}  // namespace

bool StopRequested() { return g_stop.load(std::memory_order_relaxed); }

bool ParseRole(int argc, char** argv, absl::string_view server_role,
               absl::string_view client_role, absl::string_view bad_role,
               std::string* role, std::string* err) {
  if (argc < 2) {
    *err = "missing role";
    return false;
  }
  *role = argv[1];
  if (*role == "server") *role = std::string(server_role);
  if (*role == "client") *role = std::string(client_role);
  if (*role != server_role && *role != client_role) {
    *err = std::string(bad_role);
    return false;
  }
  return true;
}

bool Flag::Value(absl::string_view prefix, absl::string_view* value) const {
  if (!absl::StartsWith(arg_, prefix)) return false;
  *value = arg_.substr(prefix.size());
  return true;
}

FlagResult ParseCommonFlag(const Flag& f, CommonOptions* o) {
  absl::string_view v;
  bool ok = true;
  if (f.Value("--reliability=", &v)) {
    ok = v == "reliable" || v == "best-effort";
    o->reliable = v == "reliable";
  } else if (f.Value("--backend=", &v)) {
    o->backend = std::string(v);
  } else if (f.Value("--domain=", &v)) {
    ok = absl::SimpleAtoi(v, &o->domain);
  } else if (f.Value("--interface=", &v)) {
    o->interface_address = std::string(v);
  } else if (f.Value("--cpu=", &v)) {
    ok = absl::SimpleAtoi(v, &o->cpu);
  } else if (f.Value("--json=", &v)) {
    o->json_path = std::string(v);
  } else {
    return FlagResult::kNotCommon;
  }
  return ok ? FlagResult::kOk : FlagResult::kBadValue;
}

int Main(int argc, char** argv, const char* program, const char* usage,
         absl::FunctionRef<bool(int, char**, std::string*)> parse,
         absl::FunctionRef<int()> run, const CommonOptions& common) {
  std::string err;
  if (!parse(argc, argv, &err)) {
    std::fprintf(stderr, "%s: %s\n%s", program, err.c_str(), usage);
    return kExitUsage;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  if (common.cpu >= 0) {
    absl::Status s = ringlab::bench::PinThisThreadToCpu(common.cpu);
    if (!s.ok()) {
      std::fprintf(stderr, "%s: %s\n", program,
                   std::string(s.message()).c_str());
      return kExitUsage;
    }
  }
  return run();
}

int CreateParticipant(const char* program,
                      const DomainParticipantOptions& options,
                      std::unique_ptr<DomainParticipant>* out) {
  absl::StatusOr<std::unique_ptr<DomainParticipant>> dp =
      DomainParticipant::Create(options);
  if (!dp.ok()) {
    std::fprintf(stderr, "%s: %s\n", program,
                 std::string(dp.status().message()).c_str());
    return IsUnsupportedBackend(dp.status()) ? kExitUnsupported
                                             : kExitRunFailed;
  }
  *out = std::move(*dp);
  return kExitOk;
}

DomainParticipantOptions ParticipantOptions(const CommonOptions& o,
                                            const char* entity_name) {
  DomainParticipantOptions dpo;
  dpo.domain_id = o.domain;
  dpo.backend = o.backend;
  dpo.interface_address = o.interface_address;
  dpo.core.entity_name = entity_name;
  return dpo;
}

bool WriteResult(const std::string& path, const std::string& json) {
  if (path.empty()) {
    std::printf("RESULT %s\n", json.c_str());
    return true;
  }
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return false;
  }
  std::fprintf(f, "%s\n", json.c_str());
  std::fclose(f);
  return true;
}

}  // namespace ringlab::rtps::bench_program
