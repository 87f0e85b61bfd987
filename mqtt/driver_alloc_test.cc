// Zero allocations on the driver's fan-out path: a BrokerDriver on a real
// Loop forwards QoS 0 publishes from one raw TCP client to several raw
// subscribers, sharing each payload's pool buffer (SharedPayloadCache,
// StreamWriter::AppendShared, Loop::Send(SharedBuffer, header)). After a
// warm-up, a counting global operator new sees no allocation across the
// steady-state loop. The clients are plain sockets with fixed buffers, so
// only the broker side is counted. Its own binary (it replaces operator
// new).
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/broker_driver.h"
#include "testing/counting_allocator.h"

namespace ringlab::mqtt {
namespace {

// MQTT 3.1.1 packets by hand (§3.1, §3.8, §3.3), so the clients allocate
// nothing.
std::vector<uint8_t> ConnectPacket(const std::string& id) {
  std::vector<uint8_t> p = {
      0x10, uint8_t(12 + id.size()), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60,
      0,    uint8_t(id.size())};
  p.insert(p.end(), id.begin(), id.end());
  return p;
}

int Connect(const Endpoint& to) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, to.sockaddr(), to.socklen()) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class DriverAlloc : public testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(Backends, DriverAlloc,
                         testing::Values("epoll", "uring-fixed"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

TEST_P(DriverAlloc, FanOutSteadyStateAllocatesNothing) {
  transport::LoopOptions lo;
  lo.backend = GetParam();
  lo.max_sockets = 64;
  absl::StatusOr<std::unique_ptr<transport::Loop>> loop =
      transport::Loop::Create(lo);
  if (!loop.ok()) GTEST_SKIP() << GetParam() << ": " << loop.status();
  BrokerDriverOptions bo;
  bo.listen = Endpoint::Loopback(0);
  absl::StatusOr<std::unique_ptr<BrokerDriver>> broker =
      BrokerDriver::Start(loop->get(), bo);
  ASSERT_TRUE(broker.ok()) << broker.status();
  BrokerDriver& b = **broker;
  auto run = [&](int n, Duration wait = Duration(0)) {
    for (int i = 0; i < n; ++i) (*loop)->RunOnce(wait);
  };

  constexpr int kSubscribers = 8;
  std::vector<int> subs;
  for (int i = 0; i < kSubscribers; ++i) {
    const int fd = Connect(b.local_endpoint());
    ASSERT_GE(fd, 0);
    subs.push_back(fd);
    const std::vector<uint8_t> c = ConnectPacket("s" + std::to_string(i));
    ASSERT_EQ(::send(fd, c.data(), c.size(), 0), ssize_t(c.size()));
    const uint8_t sub[] = {0x82, 8, 0, 1, 0, 3, 'f', '/', 'x', 0};
    ASSERT_EQ(::send(fd, sub, sizeof(sub), 0), ssize_t(sizeof(sub)));
  }
  const int pub = Connect(b.local_endpoint());
  ASSERT_GE(pub, 0);
  const std::vector<uint8_t> c = ConnectPacket("pub");
  ASSERT_EQ(::send(pub, c.data(), c.size(), 0), ssize_t(c.size()));
  for (int i = 0; i < 200 && b.broker().subscription_count() < kSubscribers;
       ++i) {
    run(1);
    ::usleep(1000);
  }
  ASSERT_EQ(b.broker().subscription_count(), size_t(kSubscribers));

  // PUBLISH QoS 0 "f/x" with a 700-byte payload: remaining length 705.
  std::vector<uint8_t> publish = {0x30, 0xC1, 0x05, 0, 3, 'f', '/', 'x'};
  publish.resize(publish.size() + 700, 'p');
  static uint8_t sink[1 << 16];
  auto drain = [&] {
    for (int fd : subs) {
      while (::recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
      }
    }
    while (::recv(pub, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
    }
  };
  auto round = [&] {
    ASSERT_EQ(::send(pub, publish.data(), publish.size(), 0),
              ssize_t(publish.size()));
    run(4);
    drain();
  };
  constexpr int kWarmUp = 300;  // pools, rings, caches reach their size
  for (int i = 0; i < kWarmUp; ++i) round();
  for (int i = 0; i < 2000 && b.broker().counters().publishes_sent[0] <
                                  uint64_t(kWarmUp) * kSubscribers;
       ++i) {
    run(1, std::chrono::milliseconds(1));
    drain();
  }
  ASSERT_EQ(b.broker().counters().publishes_sent[0],
            uint64_t(kWarmUp) * kSubscribers)
      << "received " << b.broker().counters().publishes_received[0]
      << " qos0 full " << b.broker().counters().dropped_qos0_queue_full
      << " malformed " << b.broker().counters().malformed_packets << " closed "
      << b.broker().counters().connections_closed;

  const uint64_t sent_before = b.broker().counters().publishes_sent[0];
  const uint64_t shared_before = b.counters().shared_sends;
  counting_allocator::Start();
  constexpr int kRounds = 500;
  for (int i = 0; i < kRounds; ++i) round();
  for (int i = 0; i < 2000; ++i) {
    if (b.broker().counters().publishes_sent[0] - sent_before ==
        uint64_t(kRounds) * kSubscribers) {
      break;
    }
    run(1, std::chrono::milliseconds(1));
    drain();
  }
  const size_t allocations = counting_allocator::Stop();
  EXPECT_EQ(allocations, 0u);
  // The loop did the fan-out it is meant to measure: every publish went
  // to every subscriber through a shared payload buffer.
  EXPECT_EQ(b.broker().counters().publishes_sent[0] - sent_before,
            uint64_t(kRounds) * kSubscribers);
  EXPECT_EQ(b.counters().shared_sends - shared_before,
            uint64_t(kRounds) * kSubscribers);
  for (int fd : subs) ::close(fd);
  ::close(pub);
  run(20);
}

}  // namespace
}  // namespace ringlab::mqtt
