// Interop with a real Cyclone DDS 0.10 (Debian cyclonedds-tools): ddsperf
// started by the test, in a domain of its own, loopback only (its config
// from testkit::CycloneLoopbackConfig; ours multicasts from 127.0.0.1).
//   - discovery both ways;
//   - keyed samples both ways, reliable and best effort (ddsperf pub/sub on
//     DDSPerf{R|U}DataKS, keyval = seq % nkeys as ddsperf checks it);
//   - our pong answers `ddsperf ping`, our ping gets answers from `ddsperf
//     pong`, on epoll and uring-fixed.
// Skipped (not passed) when ddsperf is not installed. Each test is bounded
// (ddsperf runs with -D, our side with deadlines).
#include <unistd.h>

#include <regex>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rtps/ddsperf_types.h"
#include "rtps/domain_participant.h"
#include "rtps/topic.h"
#include "testing/peers.h"
#include "testing/skip.h"

#ifndef RINGLAB_DDS_PINGPONG
#error "RINGLAB_DDS_PINGPONG (path of ringlab_dds_pingpong) must be defined"
#endif

namespace ringlab::rtps {
namespace {

using testkit::Process;

class CycloneInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RINGLAB_SKIP_IF_MISSING(
        testkit::FindBinary("ddsperf", "apt-get install cyclonedds-tools")
            .status());
    domain_ = testkit::PickDomainId();
  }

  std::unique_ptr<DomainParticipant> Ours(std::string backend = "epoll",
                                          std::string user_data = "") {
    DomainParticipantOptions o;
    o.domain_id = static_cast<uint32_t>(domain_);
    o.backend = std::move(backend);
    o.interface_address = "127.0.0.1";
    o.core.user_data = std::move(user_data);
    auto dp = DomainParticipant::Create(o);
    EXPECT_TRUE(dp.ok()) << dp.status();
    return dp.ok() ? std::move(*dp) : nullptr;
  }

  std::unique_ptr<Process> Ddsperf(std::vector<std::string> args) {
    auto p =
        testkit::StartDdsperf({.args = std::move(args), .domain_id = domain_});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  int domain_ = 0;
};

TEST_F(CycloneInteropTest, DiscoveryBothWays) {
  // ddsperf lists participants whose USER_DATA has its magic prefix.
  std::string magic = absl::StrCat("DDSPerf:0:", getpid(), ":ringlab-interop");
  std::unique_ptr<DomainParticipant> dp = Ours("epoll", magic);
  ASSERT_NE(dp, nullptr);
  std::unique_ptr<Process> pong = Ddsperf({"-D", "15", "pong"});
  ASSERT_NE(pong, nullptr);
  // Cyclone's participant shows up in ours, with Cyclone's vendor id.
  bool found = dp->RunUntil(
      [&] {
        bool cyclone = false;
        dp->core().ForEachParticipant([&](const RemoteParticipantInfo& p) {
          cyclone |= p.data.vendor == kVendorEclipseCyclone;
        });
        return cyclone;
      },
      std::chrono::seconds(10));
  EXPECT_TRUE(found) << pong->OutputTail();
  // Ours shows up in Cyclone's (ddsperf prints it from DCPSParticipant).
  std::string line =
      absl::StrCat("participant ringlab-interop:", getpid(), ": new");
  bool seen = dp->RunUntil([&] { return !pong->MatchingLines(line).empty(); },
                           std::chrono::seconds(10));
  EXPECT_TRUE(seen) << pong->OutputTail();
  // And its SEDP endpoints reached us (ddsperf has ping/pong/data ones).
  EXPECT_GE(dp->core().remote_endpoint_count(), 3u);
}

class KeyedDataTest : public CycloneInteropTest,
                      public ::testing::WithParamInterface<bool> {};

TEST_P(KeyedDataTest, CyclonePublishesWeReceive) {
  const bool reliable = GetParam();
  std::unique_ptr<DomainParticipant> dp = Ours();
  ASSERT_NE(dp, nullptr);
  Topic<KeyedSeq> topic(reliable ? "DDSPerfRDataKS" : "DDSPerfUDataKS");
  EndpointQos q = EndpointQos::ReaderDefaults();
  q.reliability =
      reliable ? ReliabilityKind::kReliable : ReliabilityKind::kBestEffort;
  q.history = HistoryKind::kKeepAll;
  auto reader = DataReader<KeyedSeq>::Create(*dp, topic, q);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<std::string> args = {"-D", "8", "-n", "4"};
  if (!reliable) args.push_back("-u");
  for (const char* a : {"pub", "500Hz", "size", "64"}) args.push_back(a);
  std::unique_ptr<Process> pub = Ddsperf(args);
  ASSERT_NE(pub, nullptr);
  std::vector<KeyedSeq> got;
  KeyedSeq s;
  SampleInfo info;
  bool enough = dp->RunUntil(
      [&] {
        while ((*reader)->Take(&s, &info)) got.push_back(s);
        return got.size() >= 300;
      },
      std::chrono::seconds(12));
  ASSERT_TRUE(enough) << got.size() << " samples\n" << pub->OutputTail();
  for (const KeyedSeq& k : got) {
    EXPECT_EQ(k.keyval, k.seq % 4);
    EXPECT_EQ(k.baggage.size(), 52u);
  }
  if (reliable) {
    // Reliable and KEEP_ALL: consecutive sequence numbers, no loss.
    for (size_t i = 1; i < got.size(); ++i) {
      ASSERT_EQ(got[i].seq, got[i - 1].seq + 1) << "at " << i;
    }
  }
  EXPECT_NE(info.source_time_ns, kNoSourceTimestamp);
}

TEST_P(KeyedDataTest, WePublishCycloneReceives) {
  const bool reliable = GetParam();
  std::unique_ptr<DomainParticipant> dp = Ours();
  ASSERT_NE(dp, nullptr);
  std::vector<std::string> args = {"-D", "10", "-n", "4", "-1"};
  if (!reliable) args.push_back("-u");
  args.push_back("sub");
  std::unique_ptr<Process> sub = Ddsperf(args);
  ASSERT_NE(sub, nullptr);
  Topic<KeyedSeq> topic(reliable ? "DDSPerfRDataKS" : "DDSPerfUDataKS");
  EndpointQos q = EndpointQos::WriterDefaults();
  q.reliability =
      reliable ? ReliabilityKind::kReliable : ReliabilityKind::kBestEffort;
  q.history = HistoryKind::kKeepAll;
  auto writer = DataWriter<KeyedSeq>::Create(*dp, topic, q);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE(dp->RunUntil([&] { return (*writer)->matched() > 0; },
                           std::chrono::seconds(10)))
      << sub->OutputTail();
  dp->RunFor(std::chrono::milliseconds(200));
  constexpr uint32_t kSamples = 400;
  KeyedSeq s;
  s.baggage.assign(52, 1);
  for (uint32_t seq = 1; seq <= kSamples; ++seq) {
    s.seq = seq;
    s.keyval = seq % 4;
    absl::Status st;
    do {
      st = (*writer)->Write(s);
      if (absl::IsResourceExhausted(st))
        dp->RunOnce(std::chrono::milliseconds(1));
    } while (absl::IsResourceExhausted(st));
    ASSERT_TRUE(st.ok()) << st;
    dp->RunOnce(std::chrono::microseconds(500));
  }
  if (reliable) {
    ASSERT_TRUE(dp->RunUntil([&] { return (*writer)->all_acknowledged(); },
                             std::chrono::seconds(5)));
  }
  // ddsperf prints "size 64 total N lost M ..." once a second.
  std::regex total_re("size 64 total ([0-9]+) lost ([0-9]+)");
  uint64_t total = 0, lost = 0;
  dp->RunUntil(
      [&] {
        for (const std::string& l : sub->MatchingLines("size 64 total")) {
          std::smatch m;
          if (std::regex_search(l, m, total_re)) {
            total = std::stoull(m[1]);
            lost = std::stoull(m[2]);
          }
        }
        return total >= kSamples;
      },
      std::chrono::seconds(5));
  if (reliable) {
    EXPECT_EQ(total, kSamples) << sub->OutputTail();
    EXPECT_EQ(lost, 0u) << sub->OutputTail();
  } else {
    // Best effort on loopback: nearly everything arrives.
    EXPECT_GE(total, kSamples * 9 / 10) << sub->OutputTail();
  }
}

// Cyclone fragments samples above 1344 bytes (DATA_FRAG, ~14.7 KB per
// datagram): we reassemble them.
TEST_F(CycloneInteropTest, FragmentedSamplesFromCyclone) {
  std::unique_ptr<DomainParticipant> dp = Ours();
  ASSERT_NE(dp, nullptr);
  Topic<KeyedSeq> topic("DDSPerfRDataKS");
  EndpointQos q = EndpointQos::ReaderDefaults();
  q.reliability = ReliabilityKind::kReliable;
  q.history = HistoryKind::kKeepAll;
  auto reader = DataReader<KeyedSeq>::Create(*dp, topic, q);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::unique_ptr<Process> pub =
      Ddsperf({"-D", "8", "pub", "100Hz", "size", "20000"});
  ASSERT_NE(pub, nullptr);
  std::vector<uint32_t> seqs;
  KeyedSeq s;
  bool enough = dp->RunUntil(
      [&] {
        while ((*reader)->Take(&s)) {
          EXPECT_EQ(s.baggage.size(), 20000u - 12);
          seqs.push_back(s.seq);
        }
        return seqs.size() >= 50;
      },
      std::chrono::seconds(12));
  ASSERT_TRUE(enough) << seqs.size() << "\n" << pub->OutputTail();
  for (size_t i = 1; i < seqs.size(); ++i) ASSERT_EQ(seqs[i], seqs[i - 1] + 1);
  EXPECT_GE(dp->core().counters().samples_reassembled, 50u);
}

INSTANTIATE_TEST_SUITE_P(Reliability, KeyedDataTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "Reliable" : "BestEffort";
                         });

class PingPongInteropTest : public CycloneInteropTest,
                            public ::testing::WithParamInterface<std::string> {
};

TEST_P(PingPongInteropTest, OurPingAgainstDdsperfPong) {
  std::unique_ptr<Process> pong = Ddsperf({"-D", "20", "pong"});
  ASSERT_NE(pong, nullptr);
  auto dir = testkit::TempDir::Create("rtps-interop");
  ASSERT_TRUE(dir.ok());
  std::string json = dir->path() + "/ping.json";
  auto ping = Process::Start(
      {.argv = {RINGLAB_DDS_PINGPONG, "ping", "--backend=" + GetParam(),
                absl::StrCat("--domain=", domain_), "--samples=500",
                "--warmup=50", "--timeout_s=15", "--json=" + json}});
  ASSERT_TRUE(ping.ok()) << ping.status();
  auto exit = (*ping)->Wait(absl::Seconds(20));
  ASSERT_TRUE(exit.ok()) << exit.status();
  if (exit->code == 3) GTEST_SKIP() << GetParam() << " unsupported here";
  ASSERT_TRUE(exit->success()) << exit->ToString() << "\n"
                               << (*ping)->OutputTail() << pong->OutputTail();
  std::string text;
  {
    std::FILE* f = std::fopen(json.c_str(), "r");
    ASSERT_NE(f, nullptr);
    char buf[8192];
    size_t n = std::fread(buf, 1, sizeof(buf), f);
    std::fclose(f);
    text.assign(buf, n);
  }
  EXPECT_NE(text.find("\"samples\":500"), std::string::npos) << text;
  EXPECT_NE(text.find("\"protocol\":\"dds\""), std::string::npos);
}

TEST_P(PingPongInteropTest, OurPongAnswersDdsperfPing) {
  auto pong = Process::Start(
      {.argv = {RINGLAB_DDS_PINGPONG, "pong", "--backend=" + GetParam(),
                absl::StrCat("--domain=", domain_), "--duration_s=20"}});
  ASSERT_TRUE(pong.ok()) << pong.status();
  auto ready = (*pong)->WaitForLine("^READY ", absl::Seconds(10));
  if (!ready.ok()) {
    auto exit = (*pong)->Wait(absl::Seconds(1));
    if (exit.ok() && exit->code == 3)
      GTEST_SKIP() << GetParam() << " unsupported";
  }
  ASSERT_TRUE(ready.ok()) << ready.status() << (*pong)->OutputTail();
  auto ping =
      testkit::RunDdsperf({.args = {"-D", "4", "-Qminmatch:1", "-Qinitwait:5",
                                    "ping", "size", "64"},
                           .domain_id = domain_},
                          absl::Seconds(15));
  ASSERT_TRUE(ping.ok()) << ping.status();
  // ddsperf prints one latency line per second: "... size 64 mean ... cnt N".
  std::regex cnt_re("size 64 mean .* cnt ([0-9]+)");
  uint64_t round_trips = 0;
  std::string out = ping->stdout_text;
  for (std::sregex_iterator it(out.begin(), out.end(), cnt_re), end; it != end;
       ++it) {
    round_trips += std::stoull((*it)[1]);
  }
  EXPECT_GT(round_trips, 100u) << out << (*pong)->OutputTail();
  EXPECT_TRUE(ping->exit.success()) << ping->exit.ToString() << out;
}

INSTANTIATE_TEST_SUITE_P(Presets, PingPongInteropTest,
                         ::testing::Values("epoll", "uring-fixed"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

}  // namespace
}  // namespace ringlab::rtps
