// Interop test of testing/'s mosquitto helper: a real mosquitto started on a
// free loopback port with its own config, and mosquitto_sub/mosquitto_pub
// round trips through it. Skipped when mosquitto or its clients are missing.
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/peers.h"
#include "testing/process.h"
#include "testing/skip.h"

namespace ringlab::testkit {
namespace {

class MosquittoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* client : {"mosquitto_sub", "mosquitto_pub"}) {
      RINGLAB_SKIP_IF_MISSING(
          FindBinary(client, "apt-get install mosquitto-clients").status());
    }
    absl::StatusOr<std::unique_ptr<MosquittoBroker>> broker =
        StartMosquitto({.extra_config_lines = {"max_keepalive 120"}});
    RINGLAB_SKIP_IF_MISSING(broker.status());
    ASSERT_TRUE(broker.ok()) << broker.status();
    broker_ = std::move(*broker);
  }

  // mosquitto_sub -d prints the SUBACK it got: after that line a publish
  // cannot be missed.
  std::unique_ptr<Process> Subscribe(const std::string& topic, int count,
                                     const std::string& version = "mqttv311") {
    absl::StatusOr<std::unique_ptr<Process>> sub = Process::Start(
        {.argv = {"mosquitto_sub", "-d", "-h", "127.0.0.1", "-p",
                  absl::StrCat(broker_->port()), "-V", version, "-t", topic,
                  "-q", "1", "-C", absl::StrCat(count), "-W", "20"},
         .line_buffered = true});
    EXPECT_TRUE(sub.ok()) << sub.status();
    if (!sub.ok()) return nullptr;
    absl::StatusOr<std::string> subscribed =
        (*sub)->WaitForLine("received SUBACK", absl::Seconds(10));
    EXPECT_TRUE(subscribed.ok()) << subscribed.status();
    return subscribed.ok() ? std::move(*sub) : nullptr;
  }

  absl::StatusOr<ProcessResult> Publish(const std::string& topic,
                                        const std::string& message,
                                        const std::string& version = "mqttv311",
                                        bool retain = false) {
    ProcessOptions options{.argv = {"mosquitto_pub", "-h", "127.0.0.1", "-p",
                                    absl::StrCat(broker_->port()), "-V",
                                    version, "-t", topic, "-q", "1", "-m",
                                    message}};
    if (retain) options.argv.push_back("-r");
    return RunProcess(std::move(options), absl::Seconds(10));
  }

  std::unique_ptr<MosquittoBroker> broker_;
};

TEST_F(MosquittoTest, BrokerListensOnlyOnItsLoopbackPortWithNodelay) {
  EXPECT_EQ(broker_->address(), absl::StrCat("127.0.0.1:", broker_->port()));
  EXPECT_TRUE(broker_->process().Running());
  // Its log names our config's listener, not the system service's 1883.
  absl::StatusOr<std::string> opened = broker_->process().WaitForLine(
      absl::StrCat("Opening ipv4 listen socket on port ", broker_->port()),
      absl::Seconds(5));
  EXPECT_TRUE(opened.ok()) << opened.status();
  EXPECT_NE(broker_->config_path().find(broker_->dir()), std::string::npos);
}

TEST_F(MosquittoTest, PubSubRoundTripV311AndV5) {
  for (const std::string version : {"mqttv311", "mqttv5"}) {
    SCOPED_TRACE(version);
    const std::string topic = absl::StrCat("ringlab/testkit/", version);
    std::unique_ptr<Process> sub = Subscribe(topic, 2, version);
    ASSERT_NE(sub, nullptr);
    for (const char* message : {"hello", "world"}) {
      absl::StatusOr<ProcessResult> pub = Publish(topic, message, version);
      ASSERT_TRUE(pub.ok()) << pub.status();
      EXPECT_TRUE(pub->exit.success()) << pub->stderr_text;
    }
    absl::StatusOr<ExitStatus> done = sub->Wait(absl::Seconds(15));
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_TRUE(done->success()) << sub->OutputTail();
    // -d adds debug lines; the payloads are lines of their own, in order.
    std::vector<std::string> got = sub->MatchingLines("^(hello|world)$");
    EXPECT_EQ(got, (std::vector<std::string>{"hello", "world"}))
        << sub->OutputTail();
  }
  // The broker saw the clients connect (connection_messages true).
  EXPECT_GE(broker_->process().MatchingLines("New client connected").size(),
            4u);
}

TEST_F(MosquittoTest, RetainedMessageReachesALateSubscriber) {
  absl::StatusOr<ProcessResult> pub =
      Publish("ringlab/testkit/retained", "kept", "mqttv311", /*retain=*/true);
  ASSERT_TRUE(pub.ok()) << pub.status();
  ASSERT_TRUE(pub->exit.success()) << pub->stderr_text;
  std::unique_ptr<Process> sub = Subscribe("ringlab/testkit/retained", 1);
  ASSERT_NE(sub, nullptr);
  absl::StatusOr<ExitStatus> done = sub->Wait(absl::Seconds(15));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(sub->MatchingLines("^kept$").size(), 1u) << sub->OutputTail();
}

TEST(MosquittoStartTest, TwoBrokersRunSideBySide) {
  absl::StatusOr<std::unique_ptr<MosquittoBroker>> a = StartMosquitto();
  RINGLAB_SKIP_IF_MISSING(a.status());
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<std::unique_ptr<MosquittoBroker>> b = StartMosquitto();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*a)->port(), (*b)->port());
  EXPECT_NE((*a)->dir(), (*b)->dir());
  const pid_t pid = (*a)->process().pid();
  a->reset();  // stops it
  EXPECT_TRUE((*b)->process().Running());
  EXPECT_NE(pid, (*b)->process().pid());
}

}  // namespace
}  // namespace ringlab::testkit
