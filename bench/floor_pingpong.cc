// ringlab_floor_pingpong: the least code that can do a UDP or TCP ping-pong
// on each kernel interface, to measure the floor a framework is judged
// against.
//
// No Loop, no buffer pool, no callbacks: one socket, one static buffer, the
// syscalls and nothing else. Run beside ringlab_pingpong and sockperf in the
// same suite, it answers "how much of the gap to sockperf is the kernel
// interface, and how much is ringlab?".
//
//   ringlab_floor_pingpong server --proto=udp --variant=uring
//       --bind=127.0.0.1:0 --cpu=0
//   ringlab_floor_pingpong client --proto=udp --variant=uring
//       --server=127.0.0.1:PORT --payload=64 --samples=40000 --warmup=4000
//       --cpu=1 --json=out.json
//
// Variants (UDP and TCP):
//   epoll       blocking epoll_wait, then recv(from), then send(to)
//               (3 syscalls per side and round trip)
//   uring       single-shot recv + send on DEFER_TASKRUN, one
//               io_uring_enter per round trip that submits both and waits
//   uring-spin  as uring, but never sleeps: spins on the CQ and on the SQ
//               ring's TASKRUN bit, entering only to submit or run task work
//
// TCP: one connection, TCP_NODELAY on both ends. The server echoes whatever
// bytes arrive; the client sends `payload` bytes and reads until as many
// came back (a short read costs one more wait, counted like any other). The
// server accepts one client at a time and takes the next when it leaves.
//
// The server prints `READY host:port` and echoes until SIGINT/SIGTERM. The
// client writes the same JSON fields as ringlab_pingpong (schema
// ringlab.pingpong/1 subset), so the experiment runner parses both alike.
// Exit codes: 0 ok, 1 run failed, 2 usage error, 3 unsupported here.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "bench/histogram.h"
#include "bench/json_writer.h"
#include "bench/process_stats.h"
#include "liburing.h"
#include "transport/endpoint.h"
#include "transport/time.h"

namespace ringlab::bench {
namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnsupported = 3;

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

struct Options {
  std::string role, variant = "uring", bind = "127.0.0.1:0", server, json;
  uint32_t payload = 64, samples = 40000, warmup = 4000;
  int cpu = -1;
  bool tcp = false;
};

int Usage(const char* why) {
  std::fprintf(stderr,
               "ringlab_floor_pingpong: %s\nusage: ringlab_floor_pingpong "
               "server|client [--proto=udp|tcp] "
               "--variant=epoll|uring|uring-spin "
               "[--bind=H:P | --server=H:P] [--payload=N] [--samples=N] "
               "[--warmup=N] [--cpu=N] [--json=PATH]\n",
               why);
  return kExitUsage;
}

// The floor's whole state: one socket and, for the io_uring variants, one
// ring. Counts kernel entries exactly like the Loop does.
class Floor {
 public:
  Floor(const Options& options, int fd) : options_(options), fd_(fd) {}
  ~Floor() {
    if (ring_ready_) io_uring_queue_exit(&ring_);
    if (epoll_fd_ >= 0) close(epoll_fd_);
  }

  // Negative errno when the kernel refuses the setup.
  int Init() {
    if (options_.variant == "epoll") {
      epoll_fd_ = epoll_create1(0);
      epoll_event ev{};
      ev.events = EPOLLIN;
      return epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd_, &ev) == 0 ? 0 : -errno;
    }
    io_uring_params params{};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                   IORING_SETUP_TASKRUN_FLAG;
    const int ret = io_uring_queue_init_params(8, &ring_, &params);
    ring_ready_ = ret == 0;
    return ret;
  }

  // Receives one datagram (or what the stream holds) into buffer_ (UDP:
  // source in from_); bytes, 0 at the end of a stream, or -errno.
  int Receive() {
    if (options_.variant == "epoll") {
      epoll_event ev;
      ++kernel_entries_;
      // A signal (the stop request) ends the wait with EINTR.
      if (epoll_wait(epoll_fd_, &ev, 1, 1000) <= 0) return -ETIMEDOUT;
      ++kernel_entries_;
      ssize_t n;
      if (options_.tcp || connected_) {
        n = recv(fd_, buffer_, sizeof(buffer_), MSG_DONTWAIT);
      } else {
        from_len_ = sizeof(from_);
        n = recvfrom(fd_, buffer_, sizeof(buffer_), MSG_DONTWAIT,
                     reinterpret_cast<sockaddr*>(&from_), &from_len_);
      }
      if (n < 0 && errno == EAGAIN) return -ETIMEDOUT;
      return n < 0 ? -errno : static_cast<int>(n);
    }
    return -EINVAL;  // io_uring variants receive in Exchange()
  }

  // Sends `len` bytes of buffer_: to from_ (UDP server), or on the
  // connected socket. TCP loops over short writes, which a 64 KiB socket
  // buffer makes rare for one message in flight.
  int SendTo(int len) {
    int sent = 0;
    while (sent < len) {
      ++kernel_entries_;
      const ssize_t n =
          options_.tcp || connected_ || from_len_ == 0
              ? send(fd_, buffer_ + sent, len - sent, MSG_NOSIGNAL)
              : sendto(fd_, buffer_, len, 0,
                       reinterpret_cast<sockaddr*>(&from_), from_len_);
      if (n < 0) return -errno;
      sent += static_cast<int>(n);
      if (!options_.tcp) break;
    }
    return sent;
  }

  // io_uring: optionally sends `send_len` bytes of buffer_ to from_ (or the
  // connected peer), arms a receive, and returns once the receive
  // completed. Returns the received length or -errno.
  int Exchange(int send_len) {
    if (send_len >= 0) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      std::memcpy(send_buffer_, buffer_, send_len);
      if (options_.tcp) {
        // A short TCP send completes with fewer bytes; with one message of
        // at most 64 KiB in flight the socket buffer takes it whole.
        io_uring_prep_send(sqe, fd_, send_buffer_, send_len, MSG_NOSIGNAL);
      } else {
        send_iov_ = {send_buffer_, static_cast<size_t>(send_len)};
        send_msg_ = {};
        send_msg_.msg_iov = &send_iov_;
        send_msg_.msg_iovlen = 1;
        if (from_len_ > 0) {
          send_msg_.msg_name = &from_;
          send_msg_.msg_namelen = from_len_;
        }
        io_uring_prep_sendmsg(sqe, fd_, &send_msg_, 0);
      }
      sqe->user_data = 2;
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (options_.tcp) {
      io_uring_prep_recv(sqe, fd_, buffer_, sizeof(buffer_), 0);
    } else {
      recv_iov_ = {buffer_, sizeof(buffer_)};
      recv_msg_ = {};
      recv_msg_.msg_iov = &recv_iov_;
      recv_msg_.msg_iovlen = 1;
      recv_msg_.msg_name = &from_;
      recv_msg_.msg_namelen = sizeof(from_);
      io_uring_prep_recvmsg(sqe, fd_, &recv_msg_, 0);
    }
    sqe->user_data = 1;
    const bool spin = options_.variant == "uring-spin";
    ++kernel_entries_;
    // One enter submits both and (not spinning) waits for both: the send
    // completes inline, so this returns when the reply arrived.
    io_uring_submit_and_wait(&ring_, spin ? 0 : (send_len >= 0 ? 2 : 1));
    const Timestamp give_up = MonotonicNow() + std::chrono::seconds(1);
    int received = -ETIMEDOUT;
    while (true) {
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
        if (cqe->user_data == 1) received = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
      }
      if (received != -ETIMEDOUT) break;
      if (MonotonicNow() > give_up || g_stop) return -ETIMEDOUT;
      if (!spin) {
        ++kernel_entries_;
        __kernel_timespec ts{0, 100'000'000};
        io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
      } else if (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN) {
        ++kernel_entries_;
        io_uring_get_events(&ring_);
      }
    }
    // A connected client sends without an address; a UDP server replies to
    // whoever spoke last.
    from_len_ = connected_ || options_.tcp ? 0 : recv_msg_.msg_namelen;
    return received;
  }

  // Init(), printing why the kernel refused on failure.
  bool InitOrReport() {
    const int ret = Init();
    if (ret < 0) {
      std::fprintf(stderr, "ringlab_floor_pingpong: %s setup: %s\n",
                   options_.variant.c_str(), std::strerror(-ret));
    }
    return ret >= 0;
  }

  bool uring() const { return options_.variant != "epoll"; }
  bool tcp() const { return options_.tcp; }
  uint64_t kernel_entries() const { return kernel_entries_; }
  char* buffer() { return buffer_; }
  void UseConnectedPeer() {
    connected_ = true;
    from_len_ = 0;
  }

 private:
  const Options& options_;
  int fd_;
  int epoll_fd_ = -1;
  io_uring ring_{};
  bool ring_ready_ = false;
  char buffer_[65536];
  char send_buffer_[65536];
  sockaddr_storage from_{};
  socklen_t from_len_ = 0;
  bool connected_ = false;
  iovec recv_iov_{}, send_iov_{};
  msghdr recv_msg_{}, send_msg_{};
  uint64_t kernel_entries_ = 0;
};

void PrintReady(int fd) {
  sockaddr_storage local;
  socklen_t len = sizeof(local);
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  std::printf("READY %s\n",
              Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&local), len)
                  .ToString()
                  .c_str());
  std::fflush(stdout);
}

// Echoes on `floor`'s socket until the stream ends (TCP) or a stop request.
void Echo(Floor& floor) {
  int pending_reply = -1;
  while (!g_stop) {
    const int n =
        floor.uring() ? floor.Exchange(pending_reply) : floor.Receive();
    pending_reply = -1;
    if (n == -ETIMEDOUT || n == -EINTR) continue;  // check for a stop request
    if (n < 0) {
      if (floor.tcp()) return;  // reset: take the next client
      continue;
    }
    if (n == 0 && floor.tcp()) return;  // the client left
    if (floor.uring()) {
      pending_reply = n;  // goes out with the next enter
    } else if (floor.SendTo(n) < 0 && floor.tcp()) {
      return;
    }
  }
}

void SetNoDelay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int RunServer(const Options& options) {
  absl::StatusOr<Endpoint> bind = Endpoint::Parse(options.bind);
  if (!bind.ok()) return Usage(std::string(bind.status().message()).c_str());
  const int type = options.tcp ? SOCK_STREAM : SOCK_DGRAM;
  const int fd = socket(bind->family(), type | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (fd >= 0 && options.tcp) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  }
  if (fd < 0 || ::bind(fd, bind->sockaddr(), bind->socklen()) != 0 ||
      (options.tcp && listen(fd, 16) != 0)) {
    std::perror("ringlab_floor_pingpong server: bind/listen");
    return kExitFailed;
  }
  if (!options.tcp) {
    Floor floor(options, fd);
    if (!floor.InitOrReport()) return kExitUnsupported;
    PrintReady(fd);
    Echo(floor);
    close(fd);
    return 0;
  }
  {
    // Probe the variant before announcing READY, so an unsupported one
    // exits 3 like the UDP server does.
    Floor probe(options, fd);
    if (!probe.InitOrReport()) return kExitUnsupported;
  }
  PrintReady(fd);
  while (!g_stop) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, 200) <= 0) continue;  // timeout or EINTR: check stop
    const int conn = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    SetNoDelay(conn);
    Floor floor(options, conn);
    if (floor.InitOrReport()) Echo(floor);
    close(conn);
  }
  close(fd);
  return 0;
}

int RunClient(const Options& options) {
  absl::StatusOr<Endpoint> server = Endpoint::Parse(options.server);
  if (!server.ok())
    return Usage(std::string(server.status().message()).c_str());
  const int type = options.tcp ? SOCK_STREAM : SOCK_DGRAM;
  const int fd = socket(server->family(), type | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, server->sockaddr(), server->socklen()) != 0) {
    std::perror("ringlab_floor_pingpong client: connect");
    return kExitFailed;
  }
  if (options.tcp) SetNoDelay(fd);
  Floor floor(options, fd);
  if (!floor.InitOrReport()) return kExitUnsupported;
  floor.UseConnectedPeer();
  LatencyHistogram rtt;
  std::memset(floor.buffer(), 0x5a, options.payload);
  uint64_t entries_at_start = 0;
  CpuTime cpu_at_start;
  Timestamp time_at_start;
  const uint32_t total = options.warmup + options.samples;
  for (uint32_t i = 0; i < total; ++i) {
    if (i == options.warmup) {
      entries_at_start = floor.kernel_entries();
      cpu_at_start = CpuTime::Now();
      time_at_start = MonotonicNow();
    }
    const Timestamp sent = MonotonicNow();
    int n;
    if (floor.uring()) {
      n = floor.Exchange(static_cast<int>(options.payload));
    } else {
      n = floor.SendTo(static_cast<int>(options.payload));
      if (n >= 0) n = floor.Receive();
    }
    // TCP: the echo may come back in pieces; wait for the rest.
    int64_t got = n;
    while (options.tcp && n > 0 && got < options.payload) {
      n = floor.uring() ? floor.Exchange(-1) : floor.Receive();
      if (n > 0) got += n;
    }
    if (n <= 0) {
      std::fprintf(
          stderr, "ringlab_floor_pingpong: no reply (%s)\n",
          n == 0 ? "the server closed the connection" : std::strerror(-n));
      return kExitFailed;
    }
    if (i >= options.warmup) rtt.Record((MonotonicNow() - sent).count());
  }
  const double seconds = (MonotonicNow() - time_at_start).count() / 1e9;
  const CpuTime cpu = CpuTime::Now() - cpu_at_start;
  const uint64_t entries = floor.kernel_entries() - entries_at_start;
  auto us = [](uint64_t ns) { return ns / 1000.0; };
  JsonWriter json;
  json.BeginObject()
      .Key("schema")
      .String("ringlab.pingpong/1")
      .Key("program")
      .String("ringlab_floor_pingpong")
      .Key("protocol")
      .String(options.tcp ? "tcp" : "udp")
      .Key("backend")
      .String("floor-" + options.variant)
      .Key("backend_flags")
      .String(options.variant == "epoll"
                  ? (options.tcp ? "epoll_wait,recv,send,tcp_nodelay"
                                 : "epoll_wait,recvfrom,sendto")
                  : (options.tcp
                         ? "io_uring,defer_taskrun,recv,send,tcp_nodelay"
                         : "io_uring,defer_taskrun,recvmsg,sendmsg"))
      .Key("mode")
      .String("pingpong")
      .Key("payload_bytes")
      .Uint(options.payload)
      .Key("connections")
      .Uint(1)
      .Key("samples")
      .Uint(options.samples)
      .Key("warmup")
      .Uint(options.warmup)
      .Key("lost")
      .Uint(0)
      .Key("rtt_us")
      .BeginObject()
      .Key("min")
      .Number(us(rtt.min()))
      .Key("mean")
      .Number(rtt.mean() / 1000.0)
      .Key("p50")
      .Number(us(rtt.Percentile(50)))
      .Key("p90")
      .Number(us(rtt.Percentile(90)))
      .Key("p99")
      .Number(us(rtt.Percentile(99)))
      .Key("p999")
      .Number(us(rtt.Percentile(99.9)))
      .Key("max")
      .Number(us(rtt.max()))
      .EndObject()
      .Key("duration_s")
      .Number(seconds)
      .Key("messages_per_s")
      .Number(options.samples / seconds)
      .Key("cpu_us_per_msg")
      .Number(static_cast<double>(cpu.total_us()) / options.samples)
      .Key("kernel_entries_per_msg")
      .Number(static_cast<double>(entries) / options.samples)
      .EndObject();
  std::printf(
      "floor-%s %s %uB: p50 %.1f us p99 %.1f us, %.2f kernel "
      "entries/msg\n",
      options.variant.c_str(), options.tcp ? "tcp" : "udp", options.payload,
      us(rtt.Percentile(50)), us(rtt.Percentile(99)),
      static_cast<double>(entries) / options.samples);
  if (options.json.empty()) {
    std::printf("RESULT %s\n", json.str().c_str());
  } else {
    std::ofstream(options.json) << json.str() << "\n";
  }
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 2) return Usage("missing role");
  Options options;
  options.role = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      return Usage(("bad argument: " + arg).c_str());
    }
    const std::string key = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    bool ok = true;
    if (key == "variant")
      options.variant = value;
    else if (key == "bind")
      options.bind = value;
    else if (key == "server")
      options.server = value;
    else if (key == "json")
      options.json = value;
    else if (key == "proto") {
      ok = value == "udp" || value == "tcp";
      options.tcp = value == "tcp";
    } else if (key == "payload")
      ok = absl::SimpleAtoi(value, &options.payload);
    else if (key == "samples")
      ok = absl::SimpleAtoi(value, &options.samples);
    else if (key == "warmup")
      ok = absl::SimpleAtoi(value, &options.warmup);
    else if (key == "cpu")
      ok = absl::SimpleAtoi(value, &options.cpu);
    else
      return Usage(("unknown flag --" + key).c_str());
    if (!ok) return Usage(("bad value for --" + key).c_str());
  }
  if (options.variant != "epoll" && options.variant != "uring" &&
      options.variant != "uring-spin") {
    return Usage("--variant must be epoll, uring or uring-spin");
  }
  if (options.payload < 1 || options.payload > 65507 || options.samples == 0) {
    return Usage("--payload must be 1..65507 and --samples > 0");
  }
  if (options.cpu >= 0) {
    if (absl::Status pinned = PinThisThreadToCpu(options.cpu); !pinned.ok()) {
      return Usage(std::string(pinned.message()).c_str());
    }
  }
  // No SA_RESTART: a stop request must end a blocking wait with EINTR.
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  if (options.role == "server") return RunServer(options);
  if (options.role == "client") {
    if (options.server.empty()) return Usage("client needs --server");
    return RunClient(options);
  }
  return Usage("role must be server or client");
}

}  // namespace
}  // namespace ringlab::bench

int main(int argc, char** argv) { return ringlab::bench::Main(argc, argv); }
