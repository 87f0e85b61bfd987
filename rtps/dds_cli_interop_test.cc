// `ringlab_dds ls` against Cyclone DDS (rtps/interop's ringlab_cyclone_peer):
// it lists the Cyclone participant (vendor, process from its property list)
// and its topic with type and writer; `--watch` sees it leave. Loopback
// only, bounded; skipped when the peer is not built.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rtps/interop/cyclone_peer.h"
#include "testing/peers.h"
#include "testing/process.h"
#include "testing/skip.h"

#ifndef RINGLAB_DDS_CLI
#error "RINGLAB_DDS_CLI (path of ringlab_dds) must be defined"
#endif

namespace ringlab::rtps {
namespace {

TEST(DdsCliInteropTest, LsListsACycloneParticipantAndItsTopic) {
  const int domain = testkit::PickDomainId();
  if (testkit::CyclonePeerBinary().empty()) {
    GTEST_SKIP() << "ringlab_cyclone_peer not built (needs cyclonedds-dev)";
  }
  // --watch runs through the peer's whole life: it must see it come and go
  // (the peer disposes its participant when it exits after its linger).
  testkit::ProcessOptions wo;
  wo.argv = {RINGLAB_DDS_CLI, "ls", absl::StrCat("--domain=", domain),
             "--watch", "--duration_s=20"};
  auto watch = testkit::Process::Start(std::move(wo));
  ASSERT_TRUE(watch.ok()) << watch.status();
  auto pub = testkit::StartCyclonePeer({.mode = "pub",
                                        .topic = "cyclone_cli_topic",
                                        .reliable = true,
                                        .count = 0,
                                        .wait_match = 0,
                                        .duration_s = 10,
                                        .linger_s = 6,
                                        .domain_id = domain});
  RINGLAB_SKIP_IF_MISSING(pub.status());
  ASSERT_TRUE(pub.ok()) << pub.status();
  std::string cyclone = testkit::PeerParticipantGuid(**pub);
  ASSERT_FALSE(cyclone.empty());
  for (bool json : {false, true}) {
    testkit::ProcessOptions o;
    o.argv = {RINGLAB_DDS_CLI, "ls", absl::StrCat("--domain=", domain),
              "--expect=1", "--duration_s=10"};
    if (json) o.argv.push_back("--json");
    auto ls = testkit::Process::Start(std::move(o));
    ASSERT_TRUE(ls.ok()) << ls.status();
    auto st = (*ls)->Wait(absl::Seconds(15));
    ASSERT_TRUE(st.ok()) << (*ls)->OutputTail();
    EXPECT_EQ(st->code, 0) << (*ls)->OutputTail();
    const std::string out = (*ls)->Stdout();
    EXPECT_TRUE(absl::StrContains(out, cyclone)) << out;
    EXPECT_TRUE(absl::StrContains(out, "Eclipse Cyclone DDS")) << out;
    EXPECT_TRUE(absl::StrContains(out, "ringlab_cyclone_peer")) << out;
    EXPECT_TRUE(absl::StrContains(out, "cyclone_cli_topic")) << out;
    EXPECT_TRUE(absl::StrContains(out, "ringlab::interop::KeyedSample")) << out;
    if (json) {
      EXPECT_TRUE(absl::StrContains(out, "\"vendor_id\":\"0x0110\"")) << out;
      EXPECT_TRUE(absl::StrContains(out, "\"kind\":\"writer\"")) << out;
      EXPECT_TRUE(absl::StrContains(out, "\"reliability\":\"reliable\""))
          << out;
    } else {
      EXPECT_TRUE(absl::StrContains(out, "writer ")) << out;
      EXPECT_TRUE(absl::StrContains(out, "reliable volatile")) << out;
    }
  }
  EXPECT_TRUE(
      (*watch)
          ->WaitForLine("\\+ writer .*cyclone_cli_topic", absl::Seconds(5))
          .ok())
      << (*watch)->OutputTail();
  EXPECT_TRUE((*watch)
                  ->WaitForLine(absl::StrCat("- participant ", cyclone),
                                absl::Seconds(12))
                  .ok())
      << (*watch)->OutputTail() << (*pub)->OutputTail();
}

// Cyclone discovers a `ringlab_dds pub` and its writer's topic and type.
TEST(DdsCliInteropTest, CycloneDiscoversOurPublisher) {
  const int domain = testkit::PickDomainId();
  auto disc = testkit::StartCyclonePeer({.mode = "discover",
                                         .expect_participants = 0,
                                         .duration_s = 10,
                                         .linger_s = 0,
                                         .domain_id = domain});
  RINGLAB_SKIP_IF_MISSING(disc.status());
  ASSERT_TRUE(disc.ok()) << disc.status();
  testkit::ProcessOptions o;
  o.argv = {RINGLAB_DDS_CLI,  "pub",
            "cli_to_cyclone", absl::StrCat("--domain=", domain),
            "--count=3",      "--linger_s=2",
            "--quiet"};
  auto pub = testkit::Process::Start(std::move(o));
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_TRUE((*disc)
                  ->WaitForLine("DISCOVERED publication .*topic=cli_to_cyclone "
                                "type=ringlab::dds::String",
                                absl::Seconds(10))
                  .ok())
      << (*disc)->OutputTail();
  auto st = (*pub)->Wait(absl::Seconds(10));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->code, 0) << (*pub)->OutputTail();
}

}  // namespace
}  // namespace ringlab::rtps
