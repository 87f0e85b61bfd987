// Hostile clients against the real ringlab_mqtt_broker program, on epoll and
// uring-fixed. After each attack, a well-behaved client must still be
// served.
#include <poll.h>
#include <sys/resource.h>

#include <chrono>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "mqtt/internal/test_support.h"
#include "testing/skip.h"

namespace ringlab::mqtt {
namespace {

using internal::OurBroker;
using internal::RawSocket;
using internal::StartOurBroker;
using internal::StillServed;

class Hostile : public testing::TestWithParam<std::string> {
 protected:
  void Start(std::vector<std::string> extra = {}) {
    absl::StatusOr<OurBroker> b = StartOurBroker(GetParam(), std::move(extra));
    if (absl::IsUnimplemented(b.status())) {
      GTEST_SKIP() << b.status().message();
    }
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
  }
  // Stops the broker and returns its SERVER_STATS line.
  std::string Stats() {
    broker_.process->Stop();
    for (const std::string& line :
         broker_.process->MatchingLines("^SERVER_STATS ")) {
      return line;
    }
    return "";
  }
  OurBroker broker_;
};

INSTANTIATE_TEST_SUITE_P(Backends, Hostile,
                         testing::Values("epoll", "uring-fixed"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

Connect V5(std::string_view id) {
  Connect c;
  c.version = Version::k5;
  c.client_id = id;
  c.keep_alive_s = 30;
  return c;
}

TEST_P(Hostile, FirstPacketNotConnect) {
  Start();
  if (IsSkipped()) return;
  RawSocket s;
  ASSERT_TRUE(s.Connect(broker_.port));
  ASSERT_TRUE(s.SendPacket(Pingreq{}, Version::k311));
  std::vector<std::byte> p;
  EXPECT_FALSE(s.ReadPacket(&p));  // MQTT-3.1.0-1: closed, no CONNACK
  EXPECT_TRUE(s.WaitClosed(5000));
  EXPECT_TRUE(StillServed(broker_.port));
  EXPECT_TRUE(absl::StrContains(Stats(), "\"first_packet_not_connect\":1"));
}

TEST_P(Hostile, SecondConnect) {
  Start();
  if (IsSkipped()) return;
  RawSocket s;
  ASSERT_TRUE(s.Connect(broker_.port));
  ASSERT_TRUE(s.SendPacket(V5("twice"), Version::k5));
  std::vector<std::byte> p;
  ASSERT_TRUE(s.ReadPacket(&p));
  EXPECT_EQ(p[0], std::byte(0x20));  // CONNACK
  ASSERT_TRUE(s.SendPacket(V5("twice"), Version::k5));
  ASSERT_TRUE(s.ReadPacket(&p));
  EXPECT_EQ(p[0], std::byte(0xE0));  // DISCONNECT
  EXPECT_EQ(p[2], std::byte(0x82));  // Protocol Error, MQTT-3.1.0-2
  EXPECT_TRUE(s.WaitClosed(5000));
  EXPECT_TRUE(StillServed(broker_.port));
}

TEST_P(Hostile, Slowloris) {
  Start({"--connect_timeout_ms=300"});
  if (IsSkipped()) return;
  std::vector<RawSocket> slow(20);
  const std::byte partial[] = {std::byte(0x10), std::byte(0x30),
                               std::byte(0x00), std::byte(0x04)};
  for (RawSocket& s : slow) {
    ASSERT_TRUE(s.Connect(broker_.port));
    ASSERT_TRUE(s.Send(partial));
  }
  // Each is closed by the connect timeout, well before this bound.
  for (RawSocket& s : slow) EXPECT_TRUE(s.WaitClosed(10000));
  EXPECT_TRUE(StillServed(broker_.port));
  EXPECT_TRUE(absl::StrContains(Stats(), "\"connect_timeouts\":20"));
}

TEST_P(Hostile, RemainingLengthOverTheLimit) {
  Start({"--max_packet_bytes=1024"});
  if (IsSkipped()) return;
  RawSocket s;
  ASSERT_TRUE(s.Connect(broker_.port));
  ASSERT_TRUE(s.SendPacket(V5("big"), Version::k5));
  std::vector<std::byte> p;
  ASSERT_TRUE(s.ReadPacket(&p));
  // A PUBLISH header announcing 100,000 bytes; the body never comes.
  const std::byte header[] = {std::byte(0x30), std::byte(0xA0), std::byte(0x8D),
                              std::byte(0x06)};
  ASSERT_TRUE(s.Send(header));
  ASSERT_TRUE(s.ReadPacket(&p));
  EXPECT_EQ(p[0], std::byte(0xE0));
  EXPECT_EQ(p[2], std::byte(0x95));  // Packet too large
  EXPECT_TRUE(s.WaitClosed(5000));
  // The same before CONNECT: just closed.
  RawSocket t;
  ASSERT_TRUE(t.Connect(broker_.port));
  ASSERT_TRUE(t.Send(header));
  EXPECT_TRUE(t.WaitClosed(5000));
  EXPECT_TRUE(StillServed(broker_.port));
}

TEST_P(Hostile, OneMebibyteOfRandomBytes) {
  Start();
  if (IsSkipped()) return;
  std::mt19937_64 rng(7);
  std::vector<std::byte> junk(1 << 20);
  for (std::byte& b : junk) b = std::byte(rng());
  for (int variant = 0; variant < 2; ++variant) {
    RawSocket s;
    ASSERT_TRUE(s.Connect(broker_.port));
    if (variant == 1) {
      // After a valid CONNECT, so the junk reaches the packet decoder.
      ASSERT_TRUE(s.SendPacket(V5("junk"), Version::k5));
    }
    (void)s.Send(junk);  // the broker may close before all of it is sent
    EXPECT_TRUE(s.WaitClosed(10000));
  }
  EXPECT_TRUE(StillServed(broker_.port));
}

TEST_P(Hostile, NeverReadingSubscriber) {
  Start({"--max_send_queue_bytes=65536", "--max_queued_qos0=100",
         "--max_queued_messages=100"});
  if (IsSkipped()) return;
  auto subscribe = [&](RawSocket& s, std::string_view id, int rcvbuf) {
    ASSERT_TRUE(s.Connect(broker_.port, 5000, rcvbuf));
    ASSERT_TRUE(s.SendPacket(V5(id), Version::k5));
    std::vector<std::byte> p;
    ASSERT_TRUE(s.ReadPacket(&p));
    SubscribeEntry e{"flood", {.max_qos = 1}};
    Subscribe sub;
    sub.packet_id = 1;
    sub.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
    ASSERT_TRUE(s.SendPacket(sub, Version::k5));
    ASSERT_TRUE(s.ReadPacket(&p));
    ASSERT_EQ(p[0], std::byte(0x90));
  };
  RawSocket stuck, healthy;
  subscribe(stuck, "stuck", 4096);  // never reads again
  subscribe(healthy, "healthy", 0);
  RawSocket pub;
  ASSERT_TRUE(pub.Connect(broker_.port));
  ASSERT_TRUE(pub.SendPacket(V5("pub"), Version::k5));
  std::vector<std::byte> p;
  ASSERT_TRUE(pub.ReadPacket(&p));
  const std::string payload(1000, 'x');
  constexpr int kMessages = 3000;
  int received = 0;
  for (int i = 0; i < kMessages; ++i) {
    Publish m;
    m.topic = "flood";
    m.payload = AsBytes(payload);
    ASSERT_TRUE(pub.SendPacket(m, Version::k5));
    // The healthy subscriber keeps up as it goes (a few dozen KiB behind at
    // most, well inside its socket buffers, so it never looks slow).
    if (i % 20 == 19) {
      while (received < i - 20 && healthy.ReadPacket(&p)) ++received;
    }
  }
  while (received < kMessages && healthy.ReadPacket(&p)) ++received;
  EXPECT_EQ(received, kMessages);  // never held back by the stuck one
  EXPECT_TRUE(StillServed(broker_.port));
  const std::string stats = Stats();
  EXPECT_FALSE(absl::StrContains(stats, "\"dropped_qos0_queue_full\":0,"))
      << stats;
}

TEST_P(Hostile, TenThousandConnectionsOpenedAndDropped) {
  rlimit lim{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &lim), 0);
  constexpr rlim_t kNeed = 10'000 + 256;
  if (lim.rlim_cur < kNeed) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 65536);
    setrlimit(RLIMIT_NOFILE, &lim);  // the broker inherits it
  }
  if (lim.rlim_cur < kNeed) {
    GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << lim.rlim_max << " < "
                 << kNeed;
  }
  Start({"--max_connections=20000"});
  if (IsSkipped()) return;
  std::vector<int> fds;
  fds.reserve(10'000);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(broker_.port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < 10'000; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    (void)::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    fds.push_back(fd);
  }
  // Wait until every connect completed (a SYN dropped by a full backlog is
  // retried by the kernel), so all 10,000 really reach the broker.
  std::vector<pollfd> pending;
  for (int fd : fds) pending.push_back({fd, POLLOUT, 0});
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!pending.empty() && std::chrono::steady_clock::now() < deadline) {
    ASSERT_GE(::poll(pending.data(), pending.size(), 100), 0);
    std::vector<pollfd> still;
    for (const pollfd& p : pending) {
      if (p.revents == 0) still.push_back({p.fd, POLLOUT, 0});
    }
    pending.swap(still);
  }
  ASSERT_TRUE(pending.empty()) << pending.size() << " connects still pending";
  EXPECT_TRUE(StillServed(broker_.port));
  for (int fd : fds) ::close(fd);  // all dropped at once
  EXPECT_TRUE(StillServed(broker_.port));
  const std::string stats = Stats();
  EXPECT_TRUE(absl::StrContains(stats, "\"refused\":0")) << stats;
  // Every one of them reached the broker (plus the two checks).
  std::smatch m;
  const std::regex accepted("\"accepted\":([0-9]+)");
  ASSERT_TRUE(std::regex_search(stats, m, accepted)) << stats;
  EXPECT_GE(std::stoul(m[1]), 10'002u) << stats;
}

}  // namespace
}  // namespace ringlab::mqtt
