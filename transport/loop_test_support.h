// Shared fixture and helpers for the Loop test binaries (conformance, faults,
// scale). Test-only: nothing outside transport/*_test.cc includes it.
//
// Every helper drives a Loop on the calling thread with a bound on the time it
// waits (RunUntil), so a lost completion fails with a message naming what was
// awaited instead of hanging the run.
#ifndef RINGLAB_TRANSPORT_LOOP_TEST_SUPPORT_H_
#define RINGLAB_TRANSPORT_LOOP_TEST_SUPPORT_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "transport/loop.h"

namespace ringlab {

// Readable gtest failure messages for the value types.
inline void PrintTo(const Endpoint& endpoint, std::ostream* os) {
  *os << endpoint.ToString();
}
inline void PrintTo(const Timestamp& t, std::ostream* os) {
  *os << t.nanos() << "ns";
}

namespace transport::testing_support {

using namespace std::chrono_literals;

inline constexpr Duration kWait = 10s;  // generous: ASan on 2 shared cores
inline constexpr uint32_t kMulticastGroup = 0xEFFF0001;  // 239.255.0.1

// --- Small helpers ---------------------------------------------------------

inline std::string ToString(std::span<const std::byte> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

inline std::string ErrnoName(int negative_errno) {
  if (negative_errno >= 0) return absl::StrCat(negative_errno);
  return absl::StrCat("-", std::strerror(-negative_errno), " (", negative_errno,
                      ")");
}

// Drives `loop` until `done()` holds. Fails (instead of hanging) after
// `timeout`, naming `what` and dumping the counters.
template <typename Pred>
inline ::testing::AssertionResult RunUntil(Loop& loop, Pred done,
                                           Duration timeout,
                                           std::string_view what) {
  const Timestamp deadline = MonotonicNow() + timeout;
  while (!done()) {
    if (MonotonicNow() >= deadline) {
      return ::testing::AssertionFailure()
             << "timed out after "
             << std::chrono::duration_cast<std::chrono::milliseconds>(timeout)
                    .count()
             << " ms waiting for " << what
             << "; counters: " << loop.counters().ToString();
    }
    const int rc = loop.RunOnce(1ms);
    if (rc < 0) {
      return ::testing::AssertionFailure()
             << "RunOnce failed with " << ErrnoName(rc) << " waiting for "
             << what;
    }
  }
  return ::testing::AssertionSuccess();
}

// Keeps the loop turning for `duration` (to give stray completions a chance
// to show up).
inline ::testing::AssertionResult RunFor(Loop& loop, Duration duration) {
  const Timestamp until = MonotonicNow() + duration;
  while (MonotonicNow() < until) {
    const int rc = loop.RunOnce(1ms);
    if (rc < 0) {
      return ::testing::AssertionFailure()
             << "RunOnce failed with " << ErrnoName(rc);
    }
  }
  return ::testing::AssertionSuccess();
}

BufferLease MakePayload(Loop& loop, std::string_view text) {
  BufferLease lease = loop.AcquireBuffer();
  if (!lease) return lease;
  const size_t n = std::min(text.size(), lease.capacity());
  std::memcpy(lease.data(), text.data(), n);
  lease.set_size(n);
  return lease;
}

inline size_t OpenFdCount() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

// A plain kernel socket, closed on scope exit.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ~ScopedFd() { Reset(); }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = other.fd_;
      other.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

inline uint16_t BoundPort(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return 0;
  }
  return ntohs(addr.sin_port);
}

// A socket bound to 127.0.0.1:port (0: any free port) without SO_REUSEADDR.
inline int BoundRawSocket(int type, uint16_t port) {
  const int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A plain kernel TCP listener on 127.0.0.1 (any free port) whose accepted
// sockets get a 4 KiB receive buffer: a peer accepted from it that never
// reads makes our sends back up at once. -1 on failure.
inline int NonReadingPeerListener() {
  const int fd = BoundRawSocket(SOCK_STREAM, 0);
  if (fd < 0) return -1;
  const int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  if (::listen(fd, 4) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline void RaiseFileLimit(rlim_t wanted) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur >= wanted) return;
  if (limit.rlim_max < wanted) limit.rlim_max = wanted;  // root may raise it
  limit.rlim_cur = wanted;
  ::setrlimit(RLIMIT_NOFILE, &limit);
}

// Raises the soft RLIMIT_NOFILE to `wanted` if the hard limit allows it
// (never raises the hard limit). Returns an empty string on success, or why
// the test cannot run, for GTEST_SKIP().
inline std::string EnsureFileLimit(rlim_t wanted) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return "getrlimit failed";
  if (limit.rlim_cur >= wanted) return "";
  if (limit.rlim_max < wanted) {
    return absl::StrCat("needs RLIMIT_NOFILE >= ", wanted,
                        " but the hard limit is ", limit.rlim_max);
  }
  limit.rlim_cur = wanted;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::StrCat("setrlimit(RLIMIT_NOFILE, ", wanted,
                        "): ", std::strerror(errno));
  }
  return "";
}

// --- Child processes
// ----------------------------------------------------------

// What a forked child did: its exit code (or the signal that killed it) and
// everything it wrote to stdout/stderr.
struct ChildResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal that killed it, 0 if it exited
  bool timed_out = false;
  std::string output;
  std::string Describe() const {
    std::string how = signal != 0 ? absl::StrCat("killed by signal ", signal,
                                                 " (", strsignal(signal), ")")
                                  : absl::StrCat("exit code ", exit_code);
    if (timed_out) how += " after the timeout";
    return absl::StrCat(how, "; output:\n", output);
  }
};

// Runs `body` in a forked child whose stdout and stderr go to a pipe the
// parent collects. The child's exit code is body's return value. Tests use it
// for what must not touch the test process: a lowered fd limit, dropped
// capabilities, or a fault that kills the process (SIGPIPE). The child is
// killed after `timeout`. gtest assertions must not be used inside `body`
// (they would be recorded in the child only): print and return non-zero.
inline ChildResult RunInChild(const std::function<int()>& body,
                              Duration timeout = std::chrono::seconds(60)) {
  ChildResult result;
  if (std::getenv("RINGLAB_TEST_NO_FORK") != nullptr) {
    // Debugging aid: run the body in this process (output is not captured).
    result.exit_code = body();
    return result;
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    result.output = absl::StrCat("pipe2: ", std::strerror(errno));
    return result;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    result.output = absl::StrCat("fork: ", std::strerror(errno));
    ::close(fds[0]);
    ::close(fds[1]);
    return result;
  }
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    ::close(fds[1]);
    const int code = body();
    std::fflush(stdout);
    std::fflush(stderr);
    ::_exit(code);
  }
  ::close(fds[1]);
  const Timestamp deadline = MonotonicNow() + timeout;
  char buffer[4096];
  while (true) {
    const Duration left = deadline - MonotonicNow();
    if (left <= Duration(0)) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    const int ready =
        ::poll(&pfd, 1,
               static_cast<int>(
                   std::chrono::duration_cast<std::chrono::milliseconds>(left)
                       .count()) +
                   1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    const ssize_t n = ::read(fds[0], buffer, sizeof(buffer));
    if (n <= 0) break;
    result.output.append(buffer, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

// Inside a child: prints `what` and returns 1 from the enclosing function
// when `cond` is false.
#define CHILD_CHECK(cond, what)                                          \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHILD_CHECK(" #cond \
                << ") failed: " << what << std::endl;                    \
      return 1;                                                          \
    }                                                                    \
  } while (0)

// Drops capability `cap` from this process's effective, permitted,
// inheritable and bounding sets. For a child process only: it cannot be
// undone. Returns an error text or "".
inline std::string DropCapability(int cap) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) {
    return absl::StrCat("capget: ", std::strerror(errno));
  }
  const uint32_t bit = 1u << (cap % 32);
  data[cap / 32].effective &= ~bit;
  data[cap / 32].permitted &= ~bit;
  data[cap / 32].inheritable &= ~bit;
  if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
    return absl::StrCat("prctl(PR_CAPBSET_DROP): ", std::strerror(errno));
  }
  if (::syscall(SYS_capset, &header, data) != 0) {
    return absl::StrCat("capset: ", std::strerror(errno));
  }
  return "";
}

// RLIMIT_MEMLOCK then applies to this process as to an ordinary user.
inline std::string DropCapIpcLock() { return DropCapability(CAP_IPC_LOCK); }

// A plain kernel TCP client, connected (blocking) to `to`. The listener's
// backlog completes the handshake, so no Loop needs to run. -1 on failure.
inline int ConnectRawTcp(const Endpoint& to) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, to.sockaddr(), to.socklen()) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Makes the next close() of `fd` send a RST instead of a FIN.
inline bool SetAbortiveClose(int fd) {
  linger abort_on_close{1, 0};
  return ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close,
                      sizeof(abort_on_close)) == 0;
}

// Deterministic pseudo-random stream content: byte `offset` of the stream is
// a pure function of (seed, offset), so any received chunk can be checked at
// any position without keeping what was sent.
inline uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline std::byte PatternByte(uint64_t seed, uint64_t offset) {
  return static_cast<std::byte>(Mix(seed ^ (offset / 8)) >> (8 * (offset % 8)));
}

inline void FillPattern(uint64_t seed, uint64_t offset,
                        std::span<std::byte> out) {
  size_t i = 0;
  while (i < out.size() && (offset + i) % 8 != 0) {
    out[i] = PatternByte(seed, offset + i);
    ++i;
  }
  if constexpr (std::endian::native == std::endian::little) {
    // Whole words at once: the byte order of a little-endian store is exactly
    // PatternByte's (offset % 8) shift.
    for (; i + 8 <= out.size(); i += 8) {
      const uint64_t word = Mix(seed ^ ((offset + i) / 8));
      std::memcpy(out.data() + i, &word, 8);
    }
  }
  for (; i < out.size(); ++i) out[i] = PatternByte(seed, offset + i);
}

// --- A recording handler ----------------------------------------------------

// Records every callback per socket, checks "nothing after OnClosed" and
// "exactly one OnClosed", and forwards to optional reactions. Tests read its
// fields after driving the loop; it is only touched on the loop's thread.
class Recorder : public SocketHandler {
 public:
  struct Datagram {
    SocketId socket;
    Endpoint from;
    std::string bytes;
  };
  struct Completion {
    SocketId socket;
    int result;
    uint64_t tag;
  };

  // Reactions. The lease is moved into the reaction when one is set.
  std::function<void(SocketId, const Endpoint&, BufferLease)> on_datagram;
  std::function<void(SocketId, BufferLease)> on_data;
  std::function<void(SocketId, int)> on_read_closed;
  std::function<void(SocketId, int)> on_connect;
  std::function<void(SocketId, int, uint64_t)> on_send_complete;
  std::function<SocketHandler*(SocketId, SocketId, const Endpoint&)> on_accept;
  std::function<void(SocketId)> on_closed;
  std::function<void(SocketId)> on_writable;
  bool keep_bytes = true;  // copy received bytes into `datagrams` / `stream`

  std::vector<Datagram> datagrams;
  std::string stream;  // TCP bytes received, all sockets concatenated
  uint64_t stream_bytes = 0;
  std::vector<std::pair<SocketId, int>> read_closed;
  std::vector<std::pair<SocketId, int>> connects;
  std::vector<Completion> completions;
  std::vector<SocketId> accepted;
  std::vector<std::pair<SocketId, int>> errors;
  std::vector<SocketId> closed;
  std::vector<SocketId> writable;
  std::vector<std::string> violations;  // contract breaches seen

  void OnDatagram(SocketId socket, const Endpoint& from,
                  BufferLease data) override {
    Check(socket, "OnDatagram");
    datagrams.push_back(
        {socket, from, keep_bytes ? ToString(data.bytes()) : std::string()});
    if (on_datagram) on_datagram(socket, from, std::move(data));
  }
  void OnData(SocketId socket, BufferLease data) override {
    Check(socket, "OnData");
    stream_bytes += data.size();
    if (keep_bytes) stream += ToString(data.bytes());
    if (on_data) on_data(socket, std::move(data));
  }
  void OnReadClosed(SocketId socket, int result) override {
    Check(socket, "OnReadClosed");
    read_closed.emplace_back(socket, result);
    if (on_read_closed) on_read_closed(socket, result);
  }
  void OnConnect(SocketId socket, int result) override {
    Check(socket, "OnConnect");
    connects.emplace_back(socket, result);
    if (on_connect) on_connect(socket, result);
  }
  void OnSendComplete(SocketId socket, int result, uint64_t tag) override {
    Check(socket, "OnSendComplete");
    completions.push_back({socket, result, tag});
    if (on_send_complete) on_send_complete(socket, result, tag);
  }
  SocketHandler* OnAccept(SocketId listener, SocketId connection,
                          const Endpoint& peer) override {
    Check(listener, "OnAccept");
    accepted.push_back(connection);
    if (on_accept) return on_accept(listener, connection, peer);
    return nullptr;
  }
  void OnError(SocketId socket, int error) override {
    Check(socket, "OnError");
    errors.emplace_back(socket, error);
  }
  void OnWritable(SocketId socket) override {
    Check(socket, "OnWritable");
    writable.push_back(socket);
    if (on_writable) on_writable(socket);
  }
  void OnClosed(SocketId socket) override {
    Check(socket, "OnClosed");
    closed_ids_.insert(socket.value);
    closed.push_back(socket);
    if (on_closed) on_closed(socket);
  }

  bool IsClosed(SocketId socket) const {
    return closed_ids_.contains(socket.value);
  }
  size_t closed_count() const { return closed.size(); }
  std::string ViolationText() const {
    std::string out;
    for (const std::string& v : violations) absl::StrAppend(&out, v, "; ");
    return out;
  }

 private:
  void Check(SocketId socket, const char* what) {
    if (!socket.valid()) {
      violations.push_back(absl::StrCat(what, " with invalid SocketId 0"));
    }
    if (closed_ids_.contains(socket.value)) {
      violations.push_back(
          absl::StrCat(what, " on socket ", socket.value, " after OnClosed"));
    }
  }
  absl::flat_hash_set<uint32_t> closed_ids_;
};

// --- Fixture ----------------------------------------------------------------

inline LoopOptions DefaultOptions() {
  LoopOptions options;
  options.buffer_size = 2048;
  options.buffer_count = 1024;  // 2 MiB registered: well inside 8 MiB memlock
  options.provided_buffers = 256;
  return options;
}

inline bool IsUnavailableCode(absl::StatusCode code) {
  return code == absl::StatusCode::kFailedPrecondition ||
         code == absl::StatusCode::kPermissionDenied ||
         code == absl::StatusCode::kResourceExhausted ||
         code == absl::StatusCode::kUnimplemented;
}

class LoopTestBase : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { CreateLoop(DefaultOptions()); }

  // Replaces loop_ with a Loop built from `options` for this preset. Skips
  // the test if the kernel cannot provide the preset.
  void CreateLoop(LoopOptions options) {
    loop_.reset();
    options.backend = GetParam();
    absl::StatusOr<std::unique_ptr<Loop>> loop = Loop::Create(options);
    if (!loop.ok()) {
      if (IsUnavailableCode(loop.status().code()) &&
          std::getenv("RINGLAB_REQUIRE_ALL_PRESETS") == nullptr) {
        GTEST_SKIP() << "preset " << GetParam()
                     << " unavailable: " << loop.status().message();
      }
      FAIL() << "Loop::Create(" << GetParam() << ") failed: " << loop.status();
    }
    loop_ = std::move(*loop);
    baseline_free_ = loop_->buffers().free_count();
  }

  template <typename T = Recorder, typename... Args>
  T* Make(Args&&... args) {
    auto owned = std::make_unique<T>(std::forward<Args>(args)...);
    T* raw = owned.get();
    handlers_.push_back(std::move(owned));
    return raw;
  }

  bool IsUring() const { return GetParam().rfind("uring", 0) == 0; }
  bool HasBufferRing() const {
    return GetParam() == "uring-fixed" || GetParam() == "uring-sqpoll" ||
           GetParam() == "uring-busy" || GetParam() == "uring-hybrid";
  }

  // Closes `socket` and waits for its OnClosed.
  ::testing::AssertionResult CloseAndWait(SocketId socket, Recorder* h) {
    loop_->Close(socket);
    return RunUntil(
        *loop_, [&] { return h->IsClosed(socket); }, kWait,
        absl::StrCat("OnClosed of socket ", socket.value));
  }

  // Two UDP sockets on 127.0.0.1 with free ports, and the server's address.
  struct UdpPair {
    SocketId server;
    SocketId client;
    Endpoint server_endpoint;
  };
  ::testing::AssertionResult OpenUdpPair(Recorder* server, Recorder* client,
                                         UdpPair* out) {
    UdpOptions udp;
    udp.bind = Endpoint::Loopback(0);
    absl::StatusOr<SocketId> server_id = loop_->OpenUdp(udp, server);
    if (!server_id.ok()) {
      return ::testing::AssertionFailure() << "server: " << server_id.status();
    }
    absl::StatusOr<SocketId> client_id = loop_->OpenUdp(udp, client);
    if (!client_id.ok()) {
      return ::testing::AssertionFailure() << "client: " << client_id.status();
    }
    absl::StatusOr<Endpoint> server_ep = loop_->LocalEndpoint(*server_id);
    if (!server_ep.ok()) {
      return ::testing::AssertionFailure() << server_ep.status();
    }
    *out = {*server_id, *client_id, *server_ep};
    return ::testing::AssertionSuccess();
  }

  // Buffers must all be back: nothing leaked by any path the test took.
  void ExpectNoLeakedBuffers() {
    EXPECT_EQ(loop_->buffers().free_count(), baseline_free_)
        << "pool free_count not restored (leaked buffers); counters: "
        << loop_->counters().ToString();
  }

  // Handlers are declared before loop_ so the Loop dies first: a Loop that
  // calls back during destruction still finds its handlers alive.
  std::vector<std::unique_ptr<SocketHandler>> handlers_;
  std::unique_ptr<Loop> loop_;
  uint32_t baseline_free_ = 0;
};

#define CREATE_LOOP_OR_RETURN(options)            \
  do {                                            \
    CreateLoop(options);                          \
    if (IsSkipped() || HasFatalFailure()) return; \
  } while (0)

// "uring-fixed" -> "uring_fixed", for test names.
inline std::string PresetTestName(
    const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

// Every preset, for INSTANTIATE_TEST_SUITE_P.
#define RINGLAB_ALL_PRESETS                                         \
  ::testing::Values("epoll", "epoll-busy", "epoll-hybrid", "uring", \
                    "uring-fixed", "uring-sqpoll", "uring-busy",    \
                    "uring-hybrid")

}  // namespace transport::testing_support
}  // namespace ringlab

#endif  // RINGLAB_TRANSPORT_LOOP_TEST_SUPPORT_H_
