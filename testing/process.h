// Starting real peer processes from tests: temp dirs, free ports, spawning,
// readiness, and a stop that always happens.
//
// Interop tests run real peers (mosquitto, Cyclone DDS, ddsperf, our own
// programs). Each test gets a fresh temp dir for config files and captured
// output, picks a free loopback port, starts the peer in its own process
// group, waits until it is ready, and relies on the destructor to stop it:
//
//   absl::StatusOr<std::string> sh = testkit::FindBinary("sh");
//   RINGLAB_SKIP_IF_MISSING(sh.status());          // testing/skip.h
//   testkit::ProcessOptions options;
//   options.argv = {"sh", "-c", "echo READY; exec sleep 30"};
//   absl::StatusOr<std::unique_ptr<testkit::Process>> p =
//       testkit::Process::Start(std::move(options));
//   ASSERT_TRUE(p.ok()) << p.status();
//   ASSERT_TRUE((*p)->WaitForLine("^READY$", absl::Seconds(5)).ok());
//   // ... the test; on any ASSERT failure ~Process still stops the peer.
//
// Stopping: SIGTERM to the whole process group, then SIGKILL after
// `stop_grace` to whatever of the group is left (members that outlive the
// leader get the rest of the grace too), then the group is reaped. As a backstop for a test binary
// that dies without running destructors (a sanitizer abort, a ctest timeout),
// every child runs under coreutils `timeout` with `max_lifetime`, so no peer
// outlives a test run for long.
//
// Errors: Start() returns NotFound carrying the "missing peer" payload when
// the binary is not installed (IsMissingPeer() is true; tests skip on it),
// and other codes for real failures. Waits return DeadlineExceeded on
// timeout and FailedPrecondition when the process exited first; messages
// carry the tail of the process's output.
//
// Threading: a Process is used from one thread. Ownership: a Process owns
// its child group and, unless `output_dir` was given, its own TempDir.
#ifndef RINGLAB_TESTING_PROCESS_H_
#define RINGLAB_TESTING_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ringlab::testkit {

// A fresh directory under $TMPDIR (else /tmp), removed with its contents on
// destruction unless RINGLAB_KEEP_TEMP is set in the environment (then its
// path is printed to stderr so a failed test can be inspected).
class TempDir {
 public:
  static absl::StatusOr<TempDir> Create(absl::string_view prefix = "ringlab");
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::string& path() const { return path_; }
  // Writes `contents` to path()/name (replacing it); returns the full path.
  absl::StatusOr<std::string> WriteFile(absl::string_view name,
                                        absl::string_view contents) const;

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

enum class PortKind { kTcp, kUdp, kTcpAndUdp };

// A port on 127.0.0.1 that was free when asked (bound to port 0, read back,
// closed). Another process may take it before the caller binds it; peers
// that fail to bind are retried by the helpers in testing/peers.h.
absl::StatusOr<uint16_t> PickFreePort(PortKind kind);

// Resolves `name` (no slash) on $PATH, then in /usr/sbin and /sbin (mosquitto
// lives there); a name with a slash must be an executable file. NotFound with
// the missing-peer payload, naming `install_hint` when given.
absl::StatusOr<std::string> FindBinary(absl::string_view name,
                                       absl::string_view install_hint = "");

// True for the NotFound statuses that mean "this peer is not installed".
bool IsMissingPeer(const absl::Status& status);
// The status FindBinary returns; for helpers that detect missing peers
// themselves.
absl::Status MissingPeerError(std::string message);

struct ProcessOptions {
  // argv[0] is resolved with FindBinary().
  std::vector<std::string> argv{};
  // Added to (or replacing entries of) the test's own environment.
  std::vector<std::pair<std::string, std::string>> env{};
  // Where stdout/stderr files go; empty: a TempDir owned by the Process.
  std::string output_dir{};
  // Used in file names and messages; empty: basename of argv[0].
  std::string name{};
  // Empty: the test's working directory.
  std::string working_dir{};
  // Runs the child under `stdbuf -oL`, for programs whose stdout is fully
  // buffered when it is a file (mosquitto_sub) and whose lines a test waits
  // for.
  bool line_buffered = false;
  // Hard bound on the child's life (see the header comment); zero disables.
  absl::Duration max_lifetime = absl::Seconds(120);
  // How long Stop() waits after SIGTERM before SIGKILL.
  absl::Duration stop_grace = absl::Seconds(3);
  // The signal Stop() sends first.
  int stop_signal = 15;  // SIGTERM
};

// The exit of a process: `code` for a normal exit, else `signal`.
struct ExitStatus {
  int code = -1;
  int signal = 0;
  bool exited_normally() const { return signal == 0; }
  bool success() const { return signal == 0 && code == 0; }
  std::string ToString() const;
};

class Process {
 public:
  static absl::StatusOr<std::unique_ptr<Process>> Start(ProcessOptions options);
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();  // Stop()

  // The direct child's pid, which is also the process group id.
  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const std::string& stdout_path() const { return stdout_path_; }
  const std::string& stderr_path() const { return stderr_path_; }
  const std::string& output_dir() const { return output_dir_; }

  // Everything the process has written so far.
  std::string Stdout() const;
  std::string Stderr() const;
  // The last `lines` lines of stdout and of stderr, labelled, for messages.
  std::string OutputTail(int lines = 15) const;

  // Waits until a line of stdout or stderr matches the ECMAScript `regex`
  // (std::regex_search) and returns that line. With `nth` > 1, waits for the
  // nth matching line.
  absl::StatusOr<std::string> WaitForLine(absl::string_view regex,
                                          absl::Duration timeout, int nth = 1);
  // The lines of stdout and stderr (stdout first) matching `regex` now.
  std::vector<std::string> MatchingLines(absl::string_view regex) const;

  // Waits until a process of this group holds a TCP socket listening on
  // `port` (IPv4 or IPv6), read from /proc, so nothing connects to it.
  absl::Status WaitForTcpListening(uint16_t port, absl::Duration timeout);
  // Waits until a process of this group holds a UDP socket bound to `port`;
  // `port` 0 means any UDP socket. Returns the bound ports seen.
  absl::StatusOr<std::vector<uint16_t>> WaitForUdpBound(uint16_t port,
                                                        absl::Duration timeout);

  // Waits for the process to exit by itself (nothing is sent to it). The
  // status of an exited process is kept, so Wait() may be called again.
  absl::StatusOr<ExitStatus> Wait(absl::Duration timeout);
  // True until the child has been reaped.
  bool Running();
  // Asks the group to stop (stop_signal, then SIGKILL after stop_grace) and
  // reaps the child. Idempotent; returns how it ended.
  ExitStatus Stop();

 private:
  Process() = default;
  bool Reap(bool block);  // true once reaped
  std::vector<pid_t> GroupPids() const;
  absl::Status ExitedError(absl::string_view waiting_for);

  ProcessOptions options_;
  std::string name_;
  std::optional<TempDir> own_dir_;
  std::string output_dir_;
  std::string stdout_path_;
  std::string stderr_path_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  ExitStatus exit_;
};

// Runs a command to completion (bounded by `timeout`, then stopped) and
// returns its exit status and output.
struct ProcessResult {
  ExitStatus exit;
  bool timed_out = false;
  std::string stdout_text{};
  std::string stderr_text{};
};
absl::StatusOr<ProcessResult> RunProcess(ProcessOptions options,
                                         absl::Duration timeout);

}  // namespace ringlab::testkit

#endif  // RINGLAB_TESTING_PROCESS_H_
