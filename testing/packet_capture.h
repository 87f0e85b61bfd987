// A raw-socket capture of UDP/IPv4 packets on every interface, for tests that
// must prove their traffic stays on loopback (and for looking at what a peer
// sends when no tshark is installed).
//
//   auto capture = testkit::UdpCapture::Start({.port_min = 7400 + 250 * d,
//                                              .port_max = 7649 + 250 * d});
//   if (absl::IsPermissionDenied(capture.status()))
//     GTEST_SKIP() << capture.status().message();      // needs CAP_NET_RAW
//   ... run the peers ...
//   testkit::UdpCapture::Summary s = (*capture)->Stop();
//   EXPECT_EQ(s.off_loopback, 0u);
//   EXPECT_GT(s.on_loopback, 0u);   // proves the capture saw the traffic
//
// A packet counts when its UDP source or destination port is in
// [port_min, port_max] and its payload starts with `payload_prefix`. A loopback
// packet is counted once (packet sockets see it leave and arrive); on other
// interfaces outgoing packets count too, since they are the traffic that leaves
// the machine.
//
// Threading: Start() runs one capture thread; Stop() (or the destructor)
// joins it. Summary and packets are read after Stop().
// Errors: PermissionDenied without CAP_NET_RAW; Internal for other socket
// failures.
#ifndef RINGLAB_TESTING_PACKET_CAPTURE_H_
#define RINGLAB_TESTING_PACKET_CAPTURE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace ringlab::testkit {

struct CapturedPacket {
  std::string interface {};
  uint32_t src_ip = 0;  // host byte order
  uint32_t dst_ip = 0;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  std::vector<uint8_t> payload;  // the UDP payload
};

class UdpCapture {
 public:
  struct Options {
    uint16_t port_min = 0;
    uint16_t port_max = 65535;
    // Non-empty: only packets whose UDP payload starts with these bytes
    // (e.g. "RTPS", whose ports are not known in advance).
    std::string payload_prefix;
    // Keep at most this many packets' payloads (all are counted).
    size_t keep_packets = 256;
  };
  struct Summary {
    uint64_t on_loopback = 0;
    uint64_t off_loopback = 0;
    std::map<std::string, uint64_t> per_interface;
  };

  static absl::StatusOr<std::unique_ptr<UdpCapture>> Start(Options options);
  UdpCapture(const UdpCapture&) = delete;
  UdpCapture& operator=(const UdpCapture&) = delete;
  ~UdpCapture();

  Summary Stop();
  const std::vector<CapturedPacket>& packets() const { return packets_; }

 private:
  UdpCapture() = default;
  void Run();

  Options options_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  Summary summary_;
  std::vector<CapturedPacket> packets_;
};

// "a.b.c.d".
std::string Ipv4ToString(uint32_t ip_host_order);

}  // namespace ringlab::testkit

#endif  // RINGLAB_TESTING_PACKET_CAPTURE_H_
