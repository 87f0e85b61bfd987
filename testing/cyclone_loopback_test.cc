// Checks testing/'s Cyclone DDS loopback configuration with real ddsperf
// ping/pong: the two discover each other and exchange samples, and a packet
// capture on every interface sees RTPS only on `lo`. Skipped when ddsperf is
// missing, or the capture when the test lacks CAP_NET_RAW.
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/packet_capture.h"
#include "testing/peers.h"
#include "testing/process.h"
#include "testing/skip.h"

namespace ringlab::testkit {
namespace {

class CycloneLoopbackTest : public ::testing::TestWithParam<bool> {};

TEST_P(CycloneLoopbackTest, DdsperfPingPongStaysOnLoopback) {
  RINGLAB_SKIP_IF_MISSING(
      FindBinary("ddsperf", "apt-get install cyclonedds-tools").status());
  const bool multicast = GetParam();
  // Every RTPS packet on the machine: other tests may run beside this one,
  // so only the off-loopback count is global; the multicast check looks at
  // this domain's SPDP port (7400 + 250 * domain, RTPS 2.5 §9.6.1.1).
  absl::StatusOr<std::unique_ptr<UdpCapture>> capture =
      UdpCapture::Start({.payload_prefix = "RTPS", .keep_packets = 100000});
  if (absl::IsPermissionDenied(capture.status())) {
    GTEST_SKIP() << capture.status().message();
  }
  ASSERT_TRUE(capture.ok()) << capture.status();

  const int domain = PickDomainId();
  const std::string config = CycloneLoopbackConfig({.multicast = multicast});
  absl::StatusOr<std::unique_ptr<Process>> pong =
      StartDdsperf({.args = {"-D", "10", "pong"},
                    .domain_id = domain,
                    .cyclone_config = config});
  ASSERT_TRUE(pong.ok()) << pong.status();
  ASSERT_TRUE((*pong)->WaitForUdpBound(0, absl::Seconds(10)).ok());
  // -Qminmatch/-Qinitwait: ping waits for pong before it starts, and fails
  // (exit 1) if pong never shows up.
  absl::StatusOr<ProcessResult> ping =
      RunDdsperf({.args = {"-D", "3", "-Qminmatch:1", "-Qinitwait:5", "ping",
                           "100Hz", "size", "64"},
                  .domain_id = domain,
                  .cyclone_config = config},
                 absl::Seconds(15));
  ASSERT_TRUE(ping.ok()) << ping.status();
  const UdpCapture::Summary seen = (*capture)->Stop();
  EXPECT_FALSE(ping->timed_out);
  EXPECT_TRUE(ping->exit.success()) << ping->exit.ToString() << "\n"
                                    << ping->stdout_text << ping->stderr_text;
  // One "size 64 mean ..." line per second with round trips in it.
  EXPECT_NE(ping->stdout_text.find("size 64 mean"), std::string::npos)
      << ping->stdout_text;
  EXPECT_NE(ping->stdout_text.find("participant"), std::string::npos);

  EXPECT_GT(seen.on_loopback, 0u) << "the capture saw no RTPS at all";
  EXPECT_EQ(seen.off_loopback, 0u);
  for (const auto& [interface, count] : seen.per_interface) {
    EXPECT_EQ(interface, "lo") << count << " RTPS packets on " << interface;
  }
  const uint16_t spdp_port = static_cast<uint16_t>(7400 + 250 * domain);
  bool multicast_seen = false;
  for (const CapturedPacket& p : (*capture)->packets()) {
    multicast_seen |= (p.dst_ip >> 28) == 0xE && p.dst_port == spdp_port;
    EXPECT_EQ(p.src_ip >> 24, 127u) << Ipv4ToString(p.src_ip);
  }
  EXPECT_EQ(multicast_seen, multicast);
}

INSTANTIATE_TEST_SUITE_P(Discovery, CycloneLoopbackTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Multicast" : "UnicastOnly";
                         });

}  // namespace
}  // namespace ringlab::testkit
