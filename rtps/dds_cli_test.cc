// ringlab_dds (dds_cli.cc), run as a program: usage errors and --help with
// their exit codes, `ls` against a ringlab participant in this process
// (text and JSON), `ls --watch`, and pub -> sub between two CLI processes.
// Loopback only, each test in a domain of its own and bounded in time.
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "rtps/builtin_types.h"
#include "rtps/domain_participant.h"
#include "rtps/topic.h"
#include "testing/peers.h"
#include "testing/process.h"

#ifndef RINGLAB_DDS_CLI
#error "RINGLAB_DDS_CLI (path of ringlab_dds) must be defined"
#endif

namespace ringlab::rtps {
namespace {

using testkit::Process;

// Runs ringlab_dds to completion (bounded) and returns its exit status.
struct CliRun {
  testkit::ExitStatus status;
  std::string out, err;
};

CliRun RunCli(std::vector<std::string> args, absl::Duration timeout) {
  testkit::ProcessOptions o;
  o.argv = {RINGLAB_DDS_CLI};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.max_lifetime = timeout + absl::Seconds(5);
  auto p = Process::Start(std::move(o));
  CliRun r;
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return r;
  auto st = (*p)->Wait(timeout);
  EXPECT_TRUE(st.ok()) << st.status() << (*p)->OutputTail();
  if (st.ok()) r.status = *st;
  r.out = (*p)->Stdout();
  r.err = (*p)->Stderr();
  return r;
}

TEST(DdsCliTest, UsageErrorsExitOneWithAHint) {
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  const Case cases[] = {
      {{}, "usage: ringlab_dds"},
      {{"frobnicate"}, "unknown command 'frobnicate'"},
      {{"ls", "--bogus"}, "unknown flag --bogus (see ringlab_dds ls --help)"},
      {{"ls", "--domain=999"}, "bad value in --domain=999"},
      {{"ls", "--expect"}, "--expect needs a value"},
      {{"ls", "--watch=yes"}, "--watch takes no value"},
      {{"pub"}, "missing TOPIC"},
      {{"pub", "t", "--rate=fast"}, "bad value in --rate=fast"},
      {{"pub", "t", "--type=raw"}, "string or bytes"},
      {{"pub", "t", "--history=0"}, "a depth >= 1 or all"},
      {{"pub", "t", "--deadline_ms=-3"}, "milliseconds"},
      {{"pub", "t", "u"}, "unexpected argument u"},
      {{"sub", "t", "--type=raw"}, "--type=raw needs --type-name"},
      {{"sub", "t", "--size=3"}, "unknown flag --size"},
      {{"sub", "t", "--liveliness=sometimes"}, "automatic, manual_by"},
  };
  for (const Case& c : cases) {
    CliRun r = RunCli(c.args, absl::Seconds(10));
    EXPECT_EQ(r.status.code, 1) << absl::StrJoin(c.args, " ");
    EXPECT_TRUE(absl::StrContains(r.err, c.message))
        << absl::StrJoin(c.args, " ") << ": " << r.err;
  }
}

TEST(DdsCliTest, HelpOnEveryCommand) {
  for (const char* cmd : {"ls", "pub", "sub"}) {
    CliRun r = RunCli({cmd, "--help"}, absl::Seconds(10));
    EXPECT_EQ(r.status.code, 0) << cmd;
    EXPECT_TRUE(
        absl::StartsWith(r.out, absl::StrCat("usage: ringlab_dds ", cmd)))
        << r.out;
    EXPECT_TRUE(absl::StrContains(r.out, "--domain=N")) << cmd;
  }
  CliRun r = RunCli({"pub", "--help"}, absl::Seconds(10));
  EXPECT_TRUE(absl::StrContains(r.out, "--deadline_ms=MS"));
  r = RunCli({"help"}, absl::Seconds(10));
  EXPECT_EQ(r.status.code, 0);
  EXPECT_TRUE(absl::StrContains(r.out, "exit codes"));
}

class DdsCliLiveTest : public ::testing::Test {
 protected:
  void SetUp() override { domain_ = testkit::PickDomainId(); }
  std::string Domain() const { return absl::StrCat("--domain=", domain_); }
  int domain_ = 0;
};

// `ls` shows a ringlab participant of this process: vendor, GUID, process
// and host (PID_PROPERTY_LIST), its locators and lease, and its topic with
// the writer's QoS.
TEST_F(DdsCliLiveTest, LsListsARinglabParticipantAndItsTopic) {
  DomainParticipantOptions o;
  o.domain_id = static_cast<uint32_t>(domain_);
  o.backend = "epoll";
  o.core.lease_duration_ns = 7'000'000'000;
  auto dp = DomainParticipant::Create(o);
  ASSERT_TRUE(dp.ok()) << dp.status();
  EndpointQos q = EndpointQos::WriterDefaults();
  q.deadline_ns = 250'000'000;
  q.partitions = {"plant*"};
  auto w =
      DataWriter<DdsString>::Create(**dp, Topic<DdsString>("cli_topic"), q);
  ASSERT_TRUE(w.ok());
  const std::string guid =
      Guid{(*dp)->core().guid_prefix(), EntityId::Participant()}.ToString();
  const std::string writer =
      (*dp)->core().EndpointGuid((*w)->handle()).ToString();
  // The CLI runs in its own process; we keep answering while it listens.
  for (bool json : {false, true}) {
    testkit::ProcessOptions po;
    po.argv = {RINGLAB_DDS_CLI, "ls", Domain(), "--expect=1", "--duration_s=8"};
    if (json) po.argv.push_back("--json");
    auto p = Process::Start(std::move(po));
    ASSERT_TRUE(p.ok()) << p.status();
    absl::StatusOr<testkit::ExitStatus> st;
    (*dp)->RunUntil(
        [&] {
          st = (*p)->Wait(absl::ZeroDuration());
          return st.ok();
        },
        std::chrono::seconds(12));
    ASSERT_TRUE(st.ok()) << (*p)->OutputTail();
    EXPECT_EQ(st->code, 0) << (*p)->OutputTail();
    const std::string out = (*p)->Stdout();
    EXPECT_TRUE(absl::StrContains(out, guid)) << out;
    EXPECT_TRUE(absl::StrContains(out, writer)) << out;
    EXPECT_TRUE(absl::StrContains(out, "cli_topic")) << out;
    EXPECT_TRUE(absl::StrContains(out, "ringlab::dds::String")) << out;
    EXPECT_TRUE(absl::StrContains(out, absl::StrCat(getpid()))) << out;
    if (json) {
      EXPECT_TRUE(absl::StrContains(out, "\"vendor\":\"ringlab\"")) << out;
      EXPECT_TRUE(absl::StrContains(out, "\"lease_s\":7")) << out;
      EXPECT_TRUE(absl::StrContains(out, "\"deadline_s\":0.25")) << out;
      EXPECT_TRUE(absl::StrContains(out, "\"partitions\":[\"plant*\"]")) << out;
      EXPECT_TRUE(absl::StrContains(out, "\"kind\":\"writer\"")) << out;
    } else {
      EXPECT_TRUE(absl::StrContains(out, "ringlab (0x01ff)  lease 7s")) << out;
      EXPECT_TRUE(absl::StrContains(out, "deadline 0.25s partition plant*"))
          << out;
    }
  }
}

// Nobody there: --expect makes it exit 4.
TEST_F(DdsCliLiveTest, LsExpectNotMetExitsFour) {
  CliRun r = RunCli({"ls", Domain(), "--expect=1", "--duration_s=1"},
                    absl::Seconds(10));
  EXPECT_EQ(r.status.code, 4) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "participants (0)")) << r.out;
}

// pub -> sub between two CLI processes (reliable, bytes of a given size),
// and `ls --watch --json` sees both come and go.
TEST_F(DdsCliLiveTest, PubToSubAndWatch) {
  testkit::ProcessOptions wo;
  wo.argv = {RINGLAB_DDS_CLI, "ls",     Domain(),
             "--watch",       "--json", "--duration_s=10"};
  auto watch = Process::Start(std::move(wo));
  ASSERT_TRUE(watch.ok()) << watch.status();
  testkit::ProcessOptions so;
  so.argv = {RINGLAB_DDS_CLI,   "sub",        "cli_chat",      Domain(),
             "--type=bytes",    "--reliable", "--history=all", "--count=20",
             "--duration_s=10", "--json"};
  auto sub = Process::Start(std::move(so));
  ASSERT_TRUE(sub.ok()) << sub.status();
  CliRun pub = RunCli(
      {"pub", "cli_chat", Domain(), "--type=bytes", "--size=3000", "--count=20",
       "--rate=100", "--wait_match=1", "--history=all", "--quiet"},
      absl::Seconds(15));
  EXPECT_EQ(pub.status.code, 0) << pub.err;
  EXPECT_TRUE(absl::StrContains(pub.err, "20 samples")) << pub.err;
  auto st = (*sub)->Wait(absl::Seconds(10));
  ASSERT_TRUE(st.ok()) << (*sub)->OutputTail();
  EXPECT_EQ(st->code, 0) << (*sub)->OutputTail();
  std::vector<std::string> lines = (*sub)->MatchingLines("^\\{\"n\":");
  EXPECT_EQ(lines.size(), 20u) << (*sub)->OutputTail();
  // 3000 payload bytes + 4 encapsulation + 4 length: fragmented (> 1344).
  if (!lines.empty()) {
    EXPECT_TRUE(absl::StrContains(lines.back(), "\"bytes\":3008"))
        << lines.back();
  }
  ASSERT_TRUE((*watch)
                  ->WaitForLine("\"event\":\"writer_lost\"", absl::Seconds(10))
                  .ok())
      << (*watch)->OutputTail();
  EXPECT_FALSE(
      (*watch)->MatchingLines("\"event\":\"reader_discovered\"").empty());
  EXPECT_FALSE(
      (*watch)->MatchingLines("\"event\":\"participant_discovered\"").empty());
  EXPECT_TRUE(absl::StrContains(
      (*watch)->MatchingLines("\"event\":\"writer_discovered\"")[0],
      "\"topic\":\"cli_chat\""));
}

}  // namespace
}  // namespace ringlab::rtps
