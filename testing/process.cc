#include "testing/process.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace ringlab::testkit {
namespace {

constexpr absl::string_view kMissingPeerUrl = "ringlab.testkit/missing-peer";
// Waits poll at this interval: short next to any peer's start-up time, long
// enough that a waiting test costs no measurable CPU.
constexpr absl::Duration kPollInterval = absl::Milliseconds(10);

std::string ErrnoText(int err) { return std::strerror(err); }

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Complete lines only, unless `include_partial`: a line still being written
// ("READY 127.0.0.1:12") must not match a pattern meant for the whole line.
std::vector<std::string> Lines(const std::string& text, bool include_partial) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      if (include_partial) lines.push_back(text.substr(start));
      break;
    }
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

std::string Tail(const std::string& text, int lines) {
  std::vector<std::string> all = Lines(text, /*include_partial=*/true);
  const size_t from = all.size() > static_cast<size_t>(lines)
                          ? all.size() - static_cast<size_t>(lines)
                          : 0;
  return absl::StrJoin(all.begin() + from, all.end(), "\n");
}

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         ::access(path.c_str(), X_OK) == 0;
}

// The socket inodes held by `pid`'s open files.
void CollectSocketInodes(pid_t pid, std::set<uint64_t>& inodes) {
  const std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* entry = ::readdir(d)) {
    if (entry->d_name[0] == '.') continue;
    char target[128];
    const std::string link = absl::StrCat(dir, "/", entry->d_name);
    const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    absl::string_view t(target, static_cast<size_t>(n));
    if (!absl::ConsumePrefix(&t, "socket:[") || !absl::ConsumeSuffix(&t, "]")) {
      continue;
    }
    uint64_t inode = 0;
    if (absl::SimpleAtoi(t, &inode)) inodes.insert(inode);
  }
  ::closedir(d);
}

struct ProcSocket {
  uint16_t local_port = 0;
  int state = 0;  // the kernel's TCP state number; 7 (CLOSE) for UDP
  uint64_t inode = 0;
};

// Parses /proc/<pid>/net/{tcp,tcp6,udp,udp6}. The per-pid view is the
// namespace the process lives in, which may not be the test's.
std::vector<ProcSocket> ReadProcSockets(pid_t pid, absl::string_view table) {
  std::vector<ProcSocket> out;
  const std::string text =
      ReadWholeFile(absl::StrCat("/proc/", pid, "/net/", table));
  bool header = true;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (header) {
      header = false;
      continue;
    }
    std::vector<absl::string_view> f =
        absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (f.size() < 10) continue;
    ProcSocket s;
    const size_t colon = f[1].rfind(':');
    uint32_t port = 0;
    uint32_t state = 0;
    if (colon == absl::string_view::npos ||
        !absl::SimpleHexAtoi(f[1].substr(colon + 1), &port) ||
        !absl::SimpleHexAtoi(f[3], &state) ||
        !absl::SimpleAtoi(f[9], &s.inode)) {
      continue;
    }
    s.local_port = static_cast<uint16_t>(port);
    s.state = static_cast<int>(state);
    out.push_back(s);
  }
  return out;
}

absl::StatusOr<uint16_t> BindPortZero(int type, uint16_t port) {
  const int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket: " + ErrnoText(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError("bind: " + ErrnoText(err));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace

// ------------------------------------------------------------------ TempDir

absl::StatusOr<TempDir> TempDir::Create(absl::string_view prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string templ = absl::StrCat(base != nullptr && *base ? base : "/tmp",
                                   "/", prefix, "-XXXXXX");
  if (::mkdtemp(templ.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("mkdtemp ", templ, ": ", ErrnoText(errno)));
  }
  return TempDir(std::move(templ));
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    TempDir doomed(std::move(*this));
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  if (std::getenv("RINGLAB_KEEP_TEMP") != nullptr) {
    std::fprintf(stderr, "testkit: keeping %s (RINGLAB_KEEP_TEMP)\n",
                 path_.c_str());
    return;
  }
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

absl::StatusOr<std::string> TempDir::WriteFile(
    absl::string_view name, absl::string_view contents) const {
  const std::string full = absl::StrCat(path_, "/", name);
  std::ofstream out(full, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", full));
  return full;
}

// ---------------------------------------------------------- ports, binaries

absl::StatusOr<uint16_t> PickFreePort(PortKind kind) {
  // For both kinds, take a TCP port and check UDP can have it too; a few
  // attempts cover the rare port the other protocol holds.
  for (int attempt = 0; attempt < 20; ++attempt) {
    const int first = kind == PortKind::kUdp ? SOCK_DGRAM : SOCK_STREAM;
    absl::StatusOr<uint16_t> port = BindPortZero(first, 0);
    if (!port.ok()) return port.status();
    if (kind != PortKind::kTcpAndUdp) return port;
    if (BindPortZero(SOCK_DGRAM, *port).ok()) return port;
  }
  return absl::UnavailableError("no port free for both TCP and UDP");
}

absl::Status MissingPeerError(std::string message) {
  absl::Status status = absl::NotFoundError(std::move(message));
  status.SetPayload(kMissingPeerUrl, absl::Cord("1"));
  return status;
}

bool IsMissingPeer(const absl::Status& status) {
  return absl::IsNotFound(status) &&
         status.GetPayload(kMissingPeerUrl).has_value();
}

absl::StatusOr<std::string> FindBinary(absl::string_view name,
                                       absl::string_view install_hint) {
  const std::string hint =
      install_hint.empty() ? "" : absl::StrCat(" (", install_hint, ")");
  if (name.find('/') != absl::string_view::npos) {
    std::string path(name);
    if (IsExecutableFile(path)) return path;
    return MissingPeerError(
        absl::StrCat(path, " is not an executable file", hint));
  }
  const char* env_path = std::getenv("PATH");
  std::vector<std::string> dirs = absl::StrSplit(
      env_path != nullptr ? env_path : "", ':', absl::SkipEmpty());
  dirs.push_back("/usr/sbin");
  dirs.push_back("/sbin");
  for (const std::string& dir : dirs) {
    std::string path = absl::StrCat(dir, "/", name);
    if (IsExecutableFile(path)) return path;
  }
  return MissingPeerError(
      absl::StrCat(name, " not found on PATH or in /usr/sbin", hint));
}

// ------------------------------------------------------------------ Process

std::string ExitStatus::ToString() const {
  if (signal != 0) return absl::StrCat("killed by signal ", signal);
  return absl::StrCat("exit code ", code);
}

absl::StatusOr<std::unique_ptr<Process>> Process::Start(
    ProcessOptions options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("empty argv");
  absl::StatusOr<std::string> binary = FindBinary(options.argv[0]);
  if (!binary.ok()) return binary.status();

  std::unique_ptr<Process> p(new Process());
  p->name_ = options.name.empty()
                 ? std::filesystem::path(*binary).filename().string()
                 : options.name;
  if (options.output_dir.empty()) {
    absl::StatusOr<TempDir> dir = TempDir::Create("ringlab-" + p->name_);
    if (!dir.ok()) return dir.status();
    p->own_dir_.emplace(std::move(*dir));
    p->output_dir_ = p->own_dir_->path();
  } else {
    p->output_dir_ = options.output_dir;
  }
  // Several processes may share an output dir: the pid is not known yet, so
  // a counter keeps the file names apart.
  static std::atomic<int> serial{0};
  const std::string stem =
      absl::StrCat(p->output_dir_, "/", p->name_, ".", ++serial);
  p->stdout_path_ = stem + ".stdout";
  p->stderr_path_ = stem + ".stderr";

  std::vector<std::string> argv;
  if (options.max_lifetime > absl::ZeroDuration()) {
    absl::StatusOr<std::string> timeout = FindBinary("timeout");
    if (timeout.ok()) {
      argv = {*timeout, "--kill-after=2",
              absl::StrCat(absl::ToInt64Seconds(absl::Ceil(options.max_lifetime,
                                                           absl::Seconds(1))),
                           "s")};
    }
  }
  if (options.line_buffered) {
    absl::StatusOr<std::string> stdbuf = FindBinary("stdbuf");
    if (stdbuf.ok()) {
      argv.push_back(*stdbuf);
      argv.push_back("-oL");
    }
  }
  argv.push_back(*binary);
  argv.insert(argv.end(), options.argv.begin() + 1, options.argv.end());

  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view entry(*e);
    const absl::string_view key = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& [k, v] : options.env) replaced |= (k == key);
    if (!replaced) env.emplace_back(entry);
  }
  for (const auto& [k, v] : options.env) env.push_back(absl::StrCat(k, "=", v));

  std::vector<char*> argv_c;
  for (std::string& a : argv) argv_c.push_back(a.data());
  argv_c.push_back(nullptr);
  std::vector<char*> env_c;
  for (std::string& e : env) env_c.push_back(e.data());
  env_c.push_back(nullptr);

  const int out_fd = ::open(p->stdout_path_.c_str(),
                            O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int err_fd = ::open(p->stderr_path_.c_str(),
                            O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out_fd < 0 || err_fd < 0) {
    const int err = errno;
    if (out_fd >= 0) ::close(out_fd);
    if (err_fd >= 0) ::close(err_fd);
    return absl::InternalError(absl::StrCat("cannot create output files in ",
                                            p->output_dir_, ": ",
                                            ErrnoText(err)));
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  // A test's sockets are often not close-on-exec; a peer that inherited one
  // would keep it open (and "own" its port) after the test closed it.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  if (!options.working_dir.empty()) {
    posix_spawn_file_actions_addchdir_np(&actions, options.working_dir.c_str());
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group, so Stop() reaches the peer's children too; a
  // clean signal mask and default dispositions, whatever the test runner
  // ignores or blocks (SIGPIPE, SIGINT).
  sigset_t empty;
  sigset_t all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                      POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv_c[0], &actions, &attr, argv_c.data(),
                               env_c.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(out_fd);
  ::close(err_fd);
  if (rc != 0) {
    if (rc == ENOENT) {
      return MissingPeerError(absl::StrCat(argv_c[0], ": ", ErrnoText(rc)));
    }
    return absl::InternalError(
        absl::StrCat("posix_spawn ", argv_c[0], ": ", ErrnoText(rc)));
  }
  p->pid_ = pid;
  p->options_ = std::move(options);
  return p;
}

Process::~Process() { Stop(); }

std::string Process::Stdout() const { return ReadWholeFile(stdout_path_); }
std::string Process::Stderr() const { return ReadWholeFile(stderr_path_); }

std::string Process::OutputTail(int lines) const {
  return absl::StrCat("--- ", name_, " stdout (", stdout_path_, ") ---\n",
                      Tail(Stdout(), lines), "\n--- ", name_, " stderr ---\n",
                      Tail(Stderr(), lines));
}

bool Process::Reap(bool block) {
  if (reaped_) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r != pid_) return false;
  reaped_ = true;
  if (WIFEXITED(status)) {
    exit_.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    exit_.signal = WTERMSIG(status);
  }
  return true;
}

bool Process::Running() { return !Reap(false); }

absl::Status Process::ExitedError(absl::string_view waiting_for) {
  return absl::FailedPreconditionError(
      absl::StrCat(name_, " (pid ", pid_, ") ended (", exit_.ToString(),
                   ") before ", waiting_for, "\n", OutputTail()));
}

std::vector<std::string> Process::MatchingLines(absl::string_view regex) const {
  const std::regex re{std::string(regex)};
  std::vector<std::string> out;
  // A reaped process writes no more, so its last unterminated line counts.
  for (const std::string* path : {&stdout_path_, &stderr_path_}) {
    for (std::string& line : Lines(ReadWholeFile(*path), reaped_)) {
      if (std::regex_search(line, re)) out.push_back(std::move(line));
    }
  }
  return out;
}

absl::StatusOr<std::string> Process::WaitForLine(absl::string_view regex,
                                                 absl::Duration timeout,
                                                 int nth) {
  const absl::Time deadline = absl::Now() + timeout;
  const size_t want = nth < 1 ? 1 : static_cast<size_t>(nth);
  while (true) {
    const bool exited = Reap(false);
    std::vector<std::string> hits = MatchingLines(regex);
    if (hits.size() >= want) return hits[want - 1];
    const std::string what = absl::StrCat("line ", want, " matching /", regex,
                                          "/ (", hits.size(), " so far)");
    if (exited) return ExitedError(what);
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(name_, ": no ", what, " within ",
                       absl::FormatDuration(timeout), "\n", OutputTail()));
    }
    absl::SleepFor(kPollInterval);
  }
}

std::vector<pid_t> Process::GroupPids() const {
  std::vector<pid_t> pids;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return pids;
  while (dirent* entry = ::readdir(d)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    const std::string stat =
        ReadWholeFile(absl::StrCat("/proc/", pid, "/stat"));
    // Fields after the command name, which may hold spaces and ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::vector<absl::string_view> f = absl::StrSplit(
        absl::string_view(stat).substr(close + 1), ' ', absl::SkipEmpty());
    pid_t pgrp = 0;
    // f[0] state, f[1] ppid, f[2] pgrp. A zombie has ended; its new parent
    // reaps it.
    if (f.size() > 2 && f[0] != "Z" && absl::SimpleAtoi(f[2], &pgrp) &&
        pgrp == pid_) {
      pids.push_back(pid);
    }
  }
  ::closedir(d);
  return pids;
}

absl::Status Process::WaitForTcpListening(uint16_t port,
                                          absl::Duration timeout) {
  constexpr int kTcpListen = 10;  // TCP_LISTEN in the kernel's numbering
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const bool exited = Reap(false);
    if (exited) {
      return ExitedError(absl::StrCat("listening on TCP port ", port));
    }
    for (pid_t pid : GroupPids()) {
      std::set<uint64_t> inodes;
      CollectSocketInodes(pid, inodes);
      for (absl::string_view table : {"tcp", "tcp6"}) {
        for (const ProcSocket& s : ReadProcSockets(pid, table)) {
          if (s.state == kTcpListen && s.local_port == port &&
              inodes.count(s.inode) > 0) {
            return absl::OkStatus();
          }
        }
      }
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(name_, ": not listening on TCP port ", port, " within ",
                       absl::FormatDuration(timeout), "\n", OutputTail()));
    }
    absl::SleepFor(kPollInterval);
  }
}

absl::StatusOr<std::vector<uint16_t>> Process::WaitForUdpBound(
    uint16_t port, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const bool exited = Reap(false);
    if (exited) {
      return ExitedError(port == 0 ? std::string("binding a UDP socket")
                                   : absl::StrCat("binding UDP port ", port));
    }
    std::set<uint16_t> bound;
    for (pid_t pid : GroupPids()) {
      std::set<uint64_t> inodes;
      CollectSocketInodes(pid, inodes);
      for (absl::string_view table : {"udp", "udp6"}) {
        for (const ProcSocket& s : ReadProcSockets(pid, table)) {
          if (inodes.count(s.inode) > 0 && s.local_port != 0) {
            bound.insert(s.local_port);
          }
        }
      }
    }
    if (port == 0 ? !bound.empty() : bound.count(port) > 0) {
      return std::vector<uint16_t>(bound.begin(), bound.end());
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          name_, ": no UDP socket bound",
          port == 0 ? std::string() : absl::StrCat(" to port ", port),
          " within ", absl::FormatDuration(timeout), "\n", OutputTail()));
    }
    absl::SleepFor(kPollInterval);
  }
}

absl::StatusOr<ExitStatus> Process::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!Reap(false)) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(name_, " (pid ", pid_, ") still running after ",
                       absl::FormatDuration(timeout), "\n", OutputTail()));
    }
    absl::SleepFor(kPollInterval);
  }
  return exit_;
}

ExitStatus Process::Stop() {
  if (pid_ <= 0) return exit_;
  if (!Reap(false)) {
    ::kill(-pid_, options_.stop_signal);
    const absl::Time give_up = absl::Now() + options_.stop_grace;
    while (!Reap(false) && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    if (!reaped_) {
      ::kill(-pid_, SIGKILL);
      Reap(true);
    }
    // The leader can go first while the rest of the group still handles the
    // signal: coreutils `timeout` exits 128 + signal at once when the signal
    // lands before its fork() has returned in the parent, leaving the real
    // peer running. The members get what is left of the grace.
    while (!GroupPids().empty() && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(5));
    }
  }
  // Members of the group that outlived the leader (a daemon's worker, a
  // peer whose `timeout` wrapper was killed first) are not our children to
  // reap, but they must not survive the test.
  if (!GroupPids().empty()) ::kill(-pid_, SIGKILL);
  return exit_;
}

absl::StatusOr<ProcessResult> RunProcess(ProcessOptions options,
                                         absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<Process>> p =
      Process::Start(std::move(options));
  if (!p.ok()) return p.status();
  ProcessResult result;
  absl::StatusOr<ExitStatus> exited = (*p)->Wait(timeout);
  if (exited.ok()) {
    result.exit = *exited;
  } else {
    result.timed_out = true;
    result.exit = (*p)->Stop();
  }
  result.stdout_text = (*p)->Stdout();
  result.stderr_text = (*p)->Stderr();
  return result;
}

}  // namespace ringlab::testkit
