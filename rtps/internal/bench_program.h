// What the two DDS benchmark programs (dds_pingpong.cc, dds_throughput.cc)
// share: exit codes, the stop flag their signal handlers set, the flags both
// take, the main() skeleton (parse, signals, pinning, set-up, run), creating
// the DomainParticipant with the "preset unsupported here" rule, and writing
// the result JSON. Not installed; programs only.
//
//   struct Options : bench_program::CommonOptions { ... program flags ... };
//   bool Parse(int argc, char** argv, Options* o, std::string* err) {
//     if (!bench_program::ParseRole(argc, argv, "pub", "sub",
//                                  "role must be pub or sub", &o->role, err))
//       return false;
//     for (int i = 2; i < argc; ++i) {
//       bench_program::Flag f(argv[i]);
//       switch (bench_program::ParseCommonFlag(f, o)) { ... }
//       ...
//   }
//   return bench_program::Main(argc, argv, "ringlab_dds_throughput", kUsage,
//                              Parse, Run);
//
// Threading: one thread (the signal handler only stores the flag). Errors:
// exit codes (kExit*), messages on stderr prefixed with the program name.
#ifndef RINGLAB_RTPS_INTERNAL_BENCH_PROGRAM_H_
#define RINGLAB_RTPS_INTERNAL_BENCH_PROGRAM_H_

#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "rtps/domain_participant.h"

namespace ringlab::rtps::bench_program {

constexpr int kExitOk = 0;
constexpr int kExitUsage = 1;
constexpr int kExitRunFailed = 2;
constexpr int kExitUnsupported = 3;

// Set by SIGINT/SIGTERM (installed by Main).
bool StopRequested();

// Flags both programs take (defaults are the same in both).
struct CommonOptions {
  std::string role;  // canonical name (the alias is mapped)
  std::string backend = "auto";
  uint32_t domain = 0;
  std::string interface_address = "127.0.0.1";
  bool reliable = true;
  int cpu = -1;
  std::string json_path;
};

// argv[1]: `server_role` (alias "server") or `client_role` (alias
// "client"). False with *err = `bad_role` otherwise.
bool ParseRole(int argc, char** argv, absl::string_view server_role,
               absl::string_view client_role, absl::string_view bad_role,
               std::string* role, std::string* err);

// One "--name=value" argument.
class Flag {
 public:
  explicit Flag(absl::string_view arg) : arg_(arg) {}
  absl::string_view arg() const { return arg_; }
  // True (and *value = what follows) if the argument starts with `prefix`
  // (e.g. "--payload=").
  bool Value(absl::string_view prefix, absl::string_view* value) const;

 private:
  absl::string_view arg_;
};

enum class FlagResult { kNotCommon, kOk, kBadValue };
// --reliability= --backend= --domain= --interface= --cpu= --json=.
FlagResult ParseCommonFlag(const Flag& flag, CommonOptions* o);

// Parse, then install the signal handlers, pin to --cpu, and call `run`
// (which does the set-up and the run and returns the exit code). Usage
// errors print "<program>: <err>\n<usage>" and return kExitUsage.
int Main(int argc, char** argv, const char* program, const char* usage,
         absl::FunctionRef<bool(int, char**, std::string*)> parse,
         absl::FunctionRef<int()> run, const CommonOptions& common);

// Creates the participant; on failure prints "<program>: <status>" and
// returns kExitUnsupported when the preset cannot run here (memlock,
// missing kernel features), kExitRunFailed otherwise.
int CreateParticipant(const char* program,
                      const DomainParticipantOptions& options,
                      std::unique_ptr<DomainParticipant>* out);

// The options every program starts from: domain, backend and interface
// from the flags, the entity name.
DomainParticipantOptions ParticipantOptions(const CommonOptions& o,
                                            const char* entity_name);

// Writes `json` and a newline to `path`, or prints "RESULT <json>" on
// stdout when `path` is empty. False (and a message on stderr) when the
// file cannot be written.
bool WriteResult(const std::string& path, const std::string& json);

}  // namespace ringlab::rtps::bench_program

#endif  // RINGLAB_RTPS_INTERNAL_BENCH_PROGRAM_H_
