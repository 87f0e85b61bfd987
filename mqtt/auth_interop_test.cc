// The broker program with --password_file (written by the real
// mosquitto_passwd) and --acl_file, driven by mosquitto_pub / mosquitto_sub
// on 3.1.1 and v5, epoll and uring-fixed: accepted and refused CONNECTs
// (mosquitto_pub exits with the CONNACK code), denied SUBSCRIBEs, and a
// read-denied topic that is not delivered. Skipped when a tool is missing.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mqtt/internal/test_support.h"
#include "testing/process.h"
#include "testing/skip.h"

namespace ringlab::mqtt {
namespace {

using internal::OurBroker;
using internal::StartOurBroker;
using testkit::Process;
using testkit::ProcessOptions;

struct Param {
  std::string backend;
  std::string version;  // mosquitto_* -V value
};

constexpr char kAcl[] =
    "user alice\n"
    "topic readwrite sensors/#\n"
    "topic deny sensors/secret\n"
    "user bob\n"
    "topic read sensors/+/temp\n"
    "user w\n"
    "topic write #\n";

class AuthInterop : public testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    for (const char* c :
         {"mosquitto_sub", "mosquitto_pub", "mosquitto_passwd"}) {
      RINGLAB_SKIP_IF_MISSING(
          testkit::FindBinary(c, "apt-get install mosquitto mosquitto-clients")
              .status());
    }
    absl::StatusOr<testkit::TempDir> dir = testkit::TempDir::Create("mqauth");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(*std::move(dir));
    const std::string pw = dir_->path() + "/passwd";
    const std::string tool = *testkit::FindBinary("mosquitto_passwd");
    for (const std::string& args : {absl::StrCat("-c -b ", pw, " alice secret"),
                                    absl::StrCat("-b ", pw, " bob bobpw"),
                                    absl::StrCat("-b ", pw, " w wpw")}) {
      ASSERT_EQ(std::system(absl::StrCat(tool, " ", args).c_str()), 0);
    }
    absl::StatusOr<std::string> acl = dir_->WriteFile("acl", kAcl);
    ASSERT_TRUE(acl.ok()) << acl.status();
    absl::StatusOr<OurBroker> b = StartOurBroker(
        GetParam().backend, {"--password_file=" + pw, "--acl_file=" + *acl});
    if (absl::IsUnimplemented(b.status())) GTEST_SKIP() << b.status().message();
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
  }
  bool v5() const { return GetParam().version == "mqttv5"; }

  std::vector<std::string> Common(const std::string& tool) const {
    return {tool,
            "-h",
            "127.0.0.1",
            "-p",
            absl::StrCat(broker_.port),
            "-V",
            GetParam().version};
  }
  // mosquitto_pub's exit code: 0, or the CONNACK code of a refusal.
  int Pub(std::vector<std::string> args) {
    ProcessOptions o;
    o.argv = Common("mosquitto_pub");
    for (std::string& a : args) o.argv.push_back(std::move(a));
    absl::StatusOr<testkit::ProcessResult> r =
        testkit::RunProcess(std::move(o), absl::Seconds(10));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->exit.code : -1;
  }
  std::unique_ptr<Process> Sub(std::vector<std::string> args) {
    ProcessOptions o;
    o.argv = Common("mosquitto_sub");
    o.argv.push_back("-d");
    for (std::string& a : args) o.argv.push_back(std::move(a));
    o.line_buffered = true;
    absl::StatusOr<std::unique_ptr<Process>> p = Process::Start(std::move(o));
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  std::optional<testkit::TempDir> dir_;
  OurBroker broker_;
};

TEST_P(AuthInterop, ConnectOutcomes) {
  EXPECT_EQ(Pub({"-u", "alice", "-P", "secret", "-t", "sensors/a", "-m", "x"}),
            0);
  // 3.1.1 return code 4 / v5 0x86 (134), then 5 / 0x87 (135).
  EXPECT_EQ(Pub({"-u", "alice", "-P", "nope", "-t", "sensors/a", "-m", "x"}),
            v5() ? 0x86 : 4);
  EXPECT_EQ(Pub({"-u", "eve", "-P", "secret", "-t", "sensors/a", "-m", "x"}),
            v5() ? 0x86 : 4);
  EXPECT_EQ(Pub({"-t", "sensors/a", "-m", "x"}), v5() ? 0x87 : 5);
}

TEST_P(AuthInterop, DeniedSubscribeAndReadDeniedTopic) {
  std::unique_ptr<Process> denied =
      Sub({"-u", "bob", "-P", "bobpw", "-t", "sensors/#", "-W", "10"});
  ASSERT_NE(denied, nullptr);
  absl::StatusOr<std::string> line =
      denied->WaitForLine("^Subscribed", absl::Seconds(10));
  ASSERT_TRUE(line.ok()) << line.status() << denied->OutputTail();
  EXPECT_EQ(*line,
            v5() ? "Subscribed (mid: 1): 135" : "Subscribed (mid: 1): 128");

  // alice may read sensors/#, except sensors/secret; w writes both.
  std::unique_ptr<Process> sub =
      Sub({"-u", "alice", "-P", "secret", "-t", "sensors/#", "-v", "-C", "1",
           "-W", "10"});
  ASSERT_NE(sub, nullptr);
  ASSERT_TRUE(sub->WaitForLine("received SUBACK", absl::Seconds(10)).ok())
      << sub->OutputTail();
  EXPECT_EQ(Pub({"-u", "w", "-P", "wpw", "-t", "sensors/secret", "-m", "s",
                 "-q", "1"}),
            0);
  EXPECT_EQ(
      Pub({"-u", "w", "-P", "wpw", "-t", "sensors/open", "-m", "o", "-q", "1"}),
      0);
  absl::StatusOr<testkit::ExitStatus> e = sub->Wait(absl::Seconds(15));
  ASSERT_TRUE(e.ok()) << e.status() << sub->OutputTail();
  EXPECT_EQ(sub->Stdout().find("sensors/secret"), std::string::npos)
      << sub->Stdout();
  EXPECT_NE(sub->Stdout().find("sensors/open o"), std::string::npos)
      << sub->Stdout();
}

INSTANTIATE_TEST_SUITE_P(BackendsAndVersions, AuthInterop,
                         testing::Values(Param{"epoll", "mqttv311"},
                                         Param{"epoll", "mqttv5"},
                                         Param{"uring-fixed", "mqttv311"},
                                         Param{"uring-fixed", "mqttv5"}),
                         [](const auto& info) {
                           std::string s =
                               info.param.backend + "_" + info.param.version;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

}  // namespace
}  // namespace ringlab::mqtt
