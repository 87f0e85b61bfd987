// Test helpers for tests against the real ringlab_mqtt_broker program:
// starting it on a free loopback port (it prints READY host:port), a plain
// blocking TCP socket with timeouts for hostile clients, and a check that a
// well-behaved client is still served (CONNECT/CONNACK, PINGREQ/PINGRESP).
//
//   auto broker = StartOurBroker("epoll", {"--connect_timeout_ms=500"});
//   ASSERT_TRUE(broker.ok()) << broker.status();
//   RawSocket s;
//   ASSERT_TRUE(s.Connect(broker->port));
//   EXPECT_TRUE(StillServed(broker->port));
#ifndef RINGLAB_MQTT_INTERNAL_TEST_SUPPORT_H_
#define RINGLAB_MQTT_INTERNAL_TEST_SUPPORT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "mqtt/packets.h"
#include "testing/process.h"

#ifndef RINGLAB_MQTT_BROKER_BINARY
#error "RINGLAB_MQTT_BROKER_BINARY must name the broker program"
#endif

namespace ringlab::mqtt::internal {

struct OurBroker {
  std::unique_ptr<testkit::Process> process;
  uint16_t port = 0;
};

// Starts ringlab_mqtt_broker --backend=BACKEND --listen=127.0.0.1:0. A
// backend this machine cannot run gives Unimplemented (tests skip).
inline absl::StatusOr<OurBroker> StartOurBroker(
    const std::string& backend, std::vector<std::string> extra = {}) {
  testkit::ProcessOptions o;
  o.argv = {RINGLAB_MQTT_BROKER_BINARY, "--backend=" + backend,
            "--listen=127.0.0.1:0"};
  for (std::string& a : extra) o.argv.push_back(std::move(a));
  o.name = "ringlab_mqtt_broker-" + backend;
  o.stop_signal = 2;  // SIGINT: prints SERVER_STATS
  o.max_lifetime = absl::Seconds(300);
  absl::StatusOr<std::unique_ptr<testkit::Process>> p =
      testkit::Process::Start(std::move(o));
  if (!p.ok()) return p.status();
  absl::StatusOr<std::string> ready =
      (*p)->WaitForLine("^READY ", absl::Seconds(20));
  if (!ready.ok()) {
    absl::StatusOr<testkit::ExitStatus> exit = (*p)->Wait(absl::Seconds(2));
    if (exit.ok() && exit->code == 3) {
      return absl::UnimplementedError(absl::StrCat(
          "backend ", backend, " unsupported here: ", (*p)->OutputTail(5)));
    }
    return ready.status();
  }
  const size_t colon = ready->rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(ready->substr(colon + 1), &port)) {
    return absl::InternalError("bad READY line: " + *ready);
  }
  OurBroker b;
  b.process = std::move(*p);
  b.port = uint16_t(port);
  return b;
}

// A blocking IPv4 TCP socket with receive/send timeouts.
class RawSocket {
 public:
  RawSocket() = default;
  RawSocket(RawSocket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  RawSocket& operator=(RawSocket&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~RawSocket() { Close(); }

  bool Connect(uint16_t port, int timeout_ms = 5000, int rcvbuf = 0) {
    Close();
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (rcvbuf > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }

  bool Send(std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes = bytes.subspan(size_t(n));
    }
    return true;
  }
  bool SendPacket(const Packet& p, Version v) {
    std::vector<std::byte> out(EncodedSize(p, v));
    if (out.empty() || !Encode(p, v, out).ok()) return false;
    return Send(out);
  }
  // Reads exactly n bytes; false on EOF, error or timeout.
  bool ReadExact(size_t n, std::vector<std::byte>* out) {
    out->resize(n);
    size_t got = 0;
    while (got < n) {
      const ssize_t r = ::recv(fd_, out->data() + got, n - got, 0);
      if (r <= 0) return false;
      got += size_t(r);
    }
    return true;
  }
  // Reads one whole MQTT packet; false on EOF, error or timeout.
  bool ReadPacket(std::vector<std::byte>* packet) {
    std::vector<std::byte> b;
    if (!ReadExact(2, &b)) return false;
    *packet = b;
    while ((uint8_t(packet->back()) & 0x80) && packet->size() < 5) {
      if (!ReadExact(1, &b)) return false;
      packet->push_back(b[0]);
    }
    uint32_t remaining = 0;
    size_t used = 0;
    if (DecodeVarint(std::span<const std::byte>(*packet).subspan(1), &remaining,
                     &used) != VarintResult::kOk) {
      return false;
    }
    if (remaining > 0) {
      if (!ReadExact(remaining, &b)) return false;
      packet->insert(packet->end(), b.begin(), b.end());
    }
    return true;
  }
  // True once the peer has closed (EOF or reset), reading and dropping any
  // bytes before that; false if it stays open for `timeout_ms`.
  bool WaitClosed(int timeout_ms) {
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[4096];
    while (true) {
      const ssize_t r = ::recv(fd_, buf, sizeof(buf), 0);
      if (r == 0) return true;
      if (r < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
    }
  }

 private:
  int fd_ = -1;
};

// A well-behaved 3.1.1 client: CONNECT -> CONNACK accepted, PINGREQ ->
// PINGRESP.
inline bool StillServed(uint16_t port) {
  RawSocket s;
  if (!s.Connect(port)) return false;
  Connect c;
  c.version = Version::k311;
  c.client_id = "still-served";
  c.keep_alive_s = 30;
  if (!s.SendPacket(c, Version::k311)) return false;
  std::vector<std::byte> p;
  if (!s.ReadPacket(&p) || p.size() != 4 || p[0] != std::byte(0x20) ||
      p[3] != std::byte(0)) {
    return false;
  }
  if (!s.SendPacket(Pingreq{}, Version::k311)) return false;
  return s.ReadPacket(&p) && p.size() == 2 && p[0] == std::byte(0xD0);
}

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_TEST_SUPPORT_H_
