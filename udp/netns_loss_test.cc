// rudp across real kernel packet loss: the test creates its own network
// namespace, installs an nftables input-hook rule that drops 5% of UDP
// packets (`numgen random mod 100 < 5 drop`; an output-hook drop would make
// sendto fail with EPERM instead of losing the packet, see FIELD-NOTES.md),
// and moves 4 MB each way over loopback inside it. The namespace is deleted
// at the end, also when the test fails. Without root, ip or nft it skips.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "transport/loop.h"
#include "udp/loop_endpoint.h"
#include "udp/sim_harness.h"

namespace ringlab::rudp {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

int Shell(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str());
}

std::string Output(const std::string& command) {
  std::string out;
  if (FILE* p = popen(command.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    pclose(p);
  }
  return out;
}

class Namespace {
 public:
  explicit Namespace(std::string name) : name_(std::move(name)) {
    created_ = Shell("ip netns add " + name_) == 0;
  }
  ~Namespace() {
    if (created_) Shell("ip netns del " + name_);
  }
  bool created() const { return created_; }
  const std::string& name() const { return name_; }
  int Exec(const std::string& command) const {
    return Shell("ip netns exec " + name_ + " " + command);
  }

 private:
  std::string name_;
  bool created_ = false;
};

TEST(RudpNetnsTest, TransferAcrossFivePercentInputHookLoss) {
  if (geteuid() != 0)
    GTEST_SKIP() << "needs root to create a network namespace";
  if (access("/usr/sbin/ip", X_OK) != 0 && Shell("command -v ip") != 0) {
    GTEST_SKIP() << "iproute2 (ip) not installed";
  }
  if (Shell("command -v nft") != 0)
    GTEST_SKIP() << "nftables (nft) not installed";
  Namespace ns(absl::StrCat("rl-rudp-", getpid()));
  if (!ns.created()) GTEST_SKIP() << "ip netns add failed (no netns support?)";
  ASSERT_EQ(ns.Exec("ip link set lo up"), 0);
  ASSERT_EQ(ns.Exec("nft add table inet rudp_test"), 0);
  ASSERT_EQ(ns.Exec("nft 'add chain inet rudp_test input { type filter hook "
                    "input priority 0; policy accept; }'"),
            0);
  ASSERT_EQ(ns.Exec("nft add rule inet rudp_test input meta l4proto udp "
                    "numgen random mod 100 '<' 5 counter drop"),
            0);

  // The transfer runs on a thread that joined the namespace (setns affects
  // only the calling thread), so its sockets live behind the nft rule.
  std::string failure;
  ConnectionStats client_stats, server_stats;
  size_t delivered_up = 0, delivered_down = 0, bad = 0;
  std::thread worker([&] {
    const std::string path = "/var/run/netns/" + ns.name();
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      failure = "setns failed";
      if (fd >= 0) close(fd);
      return;
    }
    close(fd);
    transport::LoopOptions lo;
    lo.backend = "epoll";
    auto loop = transport::Loop::Create(lo);
    if (!loop.ok()) {
      failure = std::string(loop.status().message());
      return;
    }
    LoopEndpointOptions o;
    o.host.connection.initial_rtt = milliseconds(10);
    o.host.connection.max_ack_delay = milliseconds(1);
    auto server = LoopEndpoint::Create(loop->get(), o);
    auto client = LoopEndpoint::Create(loop->get(), o);
    if (!server.ok() || !client.ok()) {
      failure = "endpoint creation failed";
      return;
    }
    constexpr size_t kMessages = 400, kSize = 10000;  // 4 MB each way
    ConnectionHandle server_conn, client_conn;
    bool up = false;
    size_t next_up = 0, next_down = 0, sent_up = 0, sent_down = 0;
    (*server)->SetEventHandler([&](const Event& e) {
      if (e.type == EventType::kConnected) server_conn = e.connection;
      if (e.type == EventType::kMessage) {
        if (testing::CheckPatternMessage(e.message, kSize) != next_up++) ++bad;
        ++delivered_up;
      }
    });
    (*client)->SetEventHandler([&](const Event& e) {
      if (e.type == EventType::kConnected) up = true;
      if (e.type == EventType::kMessage) {
        if (testing::CheckPatternMessage(e.message, kSize) != next_down++)
          ++bad;
        ++delivered_down;
      }
    });
    client_conn = *(*client)->Connect((*server)->local_endpoint());
    const Timestamp end = MonotonicNow() + seconds(120);
    while (delivered_up < kMessages || delivered_down < kMessages) {
      if (MonotonicNow() > end) {
        failure = absl::StrCat("timed out: up ", delivered_up, " down ",
                               delivered_down);
        break;
      }
      while (up && sent_up < kMessages &&
             (*client)->Send(client_conn, 0,
                             testing::PatternMessage(sent_up, kSize)) ==
                 SendResult::kOk) {
        ++sent_up;
      }
      while (server_conn.valid() && sent_down < kMessages &&
             (*server)->Send(server_conn, 0,
                             testing::PatternMessage(sent_down, kSize)) ==
                 SendResult::kOk) {
        ++sent_down;
      }
      (*loop)->RunOnce(milliseconds(5));
    }
    client_stats = *(*client)->host().Stats(client_conn);
    server_stats = *(*server)->host().Stats(server_conn);
  });
  worker.join();
  ASSERT_TRUE(failure.empty()) << failure;
  EXPECT_EQ(delivered_up, 400u);
  EXPECT_EQ(delivered_down, 400u);
  EXPECT_EQ(bad, 0u);
  // The kernel dropped packets and rudp repaired every loss.
  const std::string ruleset =
      Output("ip netns exec " + ns.name() + " nft list table inet rudp_test");
  EXPECT_NE(ruleset.find("counter packets"), std::string::npos) << ruleset;
  EXPECT_EQ(ruleset.find("counter packets 0 "), std::string::npos) << ruleset;
  EXPECT_GT(client_stats.packets_lost + server_stats.packets_lost, 0u);
  EXPECT_GT(client_stats.fragments_retransmitted, 0u);
  EXPECT_GT(server_stats.fragments_retransmitted, 0u);
}

}  // namespace
}  // namespace ringlab::rudp
