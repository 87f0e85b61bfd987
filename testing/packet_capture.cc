#include "testing/packet_capture.h"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringlab::testkit {

std::string Ipv4ToString(uint32_t ip) {
  return absl::StrCat(ip >> 24, ".", (ip >> 16) & 0xff, ".", (ip >> 8) & 0xff,
                      ".", ip & 0xff);
}

absl::StatusOr<std::unique_ptr<UdpCapture>> UdpCapture::Start(Options options) {
  const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0) {
    const int err = errno;
    if (err == EPERM || err == EACCES) {
      return absl::PermissionDeniedError(
          "a packet socket needs CAP_NET_RAW (run as root)");
    }
    return absl::InternalError(
        absl::StrCat("socket(AF_PACKET): ", std::strerror(err)));
  }
  std::unique_ptr<UdpCapture> capture(new UdpCapture());
  capture->options_ = options;
  capture->fd_ = fd;
  capture->thread_ = std::thread([c = capture.get()] { c->Run(); });
  return capture;
}

UdpCapture::~UdpCapture() { Stop(); }

UdpCapture::Summary UdpCapture::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  return summary_;
}

void UdpCapture::Run() {
  std::vector<uint8_t> frame(65536 + 64);
  while (!stop_.load()) {
    pollfd p{fd_, POLLIN, 0};
    // Short polls so Stop() returns promptly.
    if (::poll(&p, 1, 20) <= 0) continue;
    sockaddr_ll from{};
    socklen_t from_len = sizeof(from);
    const ssize_t n = ::recvfrom(fd_, frame.data(), frame.size(), MSG_DONTWAIT,
                                 reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n <= 0) continue;
    if (ntohs(from.sll_protocol) != ETH_P_IP) continue;
    // Every interface kind seen here (loopback, Ethernet, veth) has a
    // 14-byte link header on packet sockets; others are ignored.
    if (from.sll_hatype != 1 /*ARPHRD_ETHER*/ &&
        from.sll_hatype != 772 /*ARPHRD_LOOPBACK*/) {
      continue;
    }
    const bool loopback = from.sll_hatype == 772;
    // A loopback packet reaches packet sockets twice, as it leaves and as it
    // arrives; count it once. Elsewhere the outgoing copy is the one that
    // matters: it is traffic leaving the machine.
    if (loopback && from.sll_pkttype == PACKET_OUTGOING) continue;
    const size_t size = static_cast<size_t>(n);
    constexpr size_t kLink = 14;
    if (size < kLink + 20) continue;
    const uint8_t* ip = frame.data() + kLink;
    if ((ip[0] >> 4) != 4 || ip[9] != 17 /*UDP*/) continue;
    const size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
    if (size < kLink + ihl + 8) continue;
    const uint8_t* udp = ip + ihl;
    CapturedPacket packet;
    packet.src_port = static_cast<uint16_t>(udp[0] << 8 | udp[1]);
    packet.dst_port = static_cast<uint16_t>(udp[2] << 8 | udp[3]);
    auto in_range = [&](uint16_t port) {
      return port >= options_.port_min && port <= options_.port_max;
    };
    if (!in_range(packet.src_port) && !in_range(packet.dst_port)) continue;
    const std::string& prefix = options_.payload_prefix;
    if (!prefix.empty() &&
        (size < kLink + ihl + 8 + prefix.size() ||
         std::memcmp(udp + 8, prefix.data(), prefix.size()) != 0)) {
      continue;
    }
    char name[IF_NAMESIZE] = {};
    if (::if_indextoname(static_cast<unsigned>(from.sll_ifindex), name) ==
        nullptr) {
      std::snprintf(name, sizeof(name), "if%d", from.sll_ifindex);
    }
    packet.interface = name;
    ++(loopback ? summary_.on_loopback : summary_.off_loopback);
    ++summary_.per_interface[packet.interface];
    if (packets_.size() < options_.keep_packets) {
      uint32_t src = 0;
      uint32_t dst = 0;
      std::memcpy(&src, ip + 12, 4);
      std::memcpy(&dst, ip + 16, 4);
      packet.src_ip = ntohl(src);
      packet.dst_ip = ntohl(dst);
      const size_t udp_len = static_cast<size_t>(udp[4] << 8 | udp[5]);
      const size_t available = size - kLink - ihl;
      const size_t end = std::min(udp_len, available);
      if (end > 8) packet.payload.assign(udp + 8, udp + end);
      packets_.push_back(std::move(packet));
    }
  }
}

}  // namespace ringlab::testkit
