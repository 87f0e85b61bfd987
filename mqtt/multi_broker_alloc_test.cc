// Zero allocations on the cross-Loop path: a MultiBroker on two Loops (two
// threads) routes QoS 0 publishes from raw TCP publishers to raw
// subscribers on both Loops, so every publish is routed on its own Loop and
// passed through a LoopChannel to the other, which copies it into its pool
// and fans it out. After a warm-up, a counting global operator new (all
// threads) sees no allocation across the steady state. The clients are
// plain sockets with fixed buffers, so only the broker side is counted. Its
// own binary (it replaces operator new).
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/multi_broker.h"
#include "testing/counting_allocator.h"

namespace ringlab::mqtt {
namespace {

using namespace std::chrono_literals;

// MQTT 3.1.1 CONNECT by hand (§3.1), so the clients allocate nothing.
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

class MultiBrokerAlloc : public testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(Backends, MultiBrokerAlloc,
                         testing::Values("epoll", "uring-fixed"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

TEST_P(MultiBrokerAlloc, CrossLoopSteadyStateAllocatesNothing) {
  MultiBrokerOptions o;
  o.threads = 2;
  o.loop.backend = GetParam();
  o.loop.max_sockets = 128;
  o.driver.listen = Endpoint::Loopback(0);
  o.driver.broker.max_queued_qos0 = 100'000;  // no drops to explain
  absl::StatusOr<std::unique_ptr<MultiBroker>> created = MultiBroker::Create(o);
  if (!created.ok()) GTEST_SKIP() << GetParam() << ": " << created.status();
  MultiBroker& mb = **created;
  mb.Start();
  auto connections = [&](size_t i) {
    return mb.gauges(i).connections.load(std::memory_order_relaxed);
  };
  auto delivered = [&] {
    return mb.gauges(0).delivered.load(std::memory_order_relaxed) +
           mb.gauges(1).delivered.load(std::memory_order_relaxed);
  };
  static uint8_t sink[1 << 16];
  std::vector<int> fds;
  fds.reserve(64);
  auto drain = [&] {
    for (int fd : fds) {
      while (::recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
      }
    }
  };
  auto wait_until = [&](auto done, Duration timeout) {
    const Timestamp deadline = MonotonicNow() + timeout;
    while (!done() && MonotonicNow() < deadline) {
      drain();
      std::this_thread::sleep_for(1ms);
    }
    return done();
  };

  // Subscribers until each Loop has one (the kernel spreads connections).
  int subscribers = 0;
  for (; subscribers < 32 &&
         (subscribers < 2 || connections(0) == 0 || connections(1) == 0);
       ++subscribers) {
    const int fd = Connect(mb.local_endpoint());
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    const std::vector<uint8_t> c =
        ConnectPacket("s" + std::to_string(subscribers));
    ASSERT_EQ(::send(fd, c.data(), c.size(), 0), ssize_t(c.size()));
    const uint8_t sub[] = {0x82, 8, 0, 1, 0, 3, 'f', '/', 'x', 0};
    ASSERT_EQ(::send(fd, sub, sizeof(sub), 0), ssize_t(sizeof(sub)));
    const size_t want = size_t(subscribers) + 1;
    ASSERT_TRUE(wait_until(
        [&] { return connections(0) + connections(1) == want; }, 10s));
  }
  ASSERT_TRUE(connections(0) > 0 && connections(1) > 0)
      << "every subscriber landed on one Loop";
  // Members of one shared group (most likely on both Loops): the Loops ask
  // each other's member counts per message, and that allocates nothing
  // either. They get each message once between them.
  constexpr int kMembers = 4;
  std::vector<int> members;
  for (int i = 0; i < kMembers; ++i) {
    const int fd = Connect(mb.local_endpoint());
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    members.push_back(fd);
    const std::vector<uint8_t> c = ConnectPacket("m" + std::to_string(i));
    ASSERT_EQ(::send(fd, c.data(), c.size(), 0), ssize_t(c.size()));
    const uint8_t sub[] = {0x82, 17,  0,   1,   0,   12,  '$', 's', 'h', 'a',
                           'r',  'e', '/', 'g', '/', 'f', '/', 'x', 0};
    ASSERT_EQ(::send(fd, sub, sizeof(sub), 0), ssize_t(sizeof(sub)));
  }
  // Publishers: whichever Loop each lands on, its messages cross to the
  // other Loop's subscribers.
  constexpr int kPublishers = 4;
  std::vector<int> pubs;
  for (int i = 0; i < kPublishers; ++i) {
    const int fd = Connect(mb.local_endpoint());
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    pubs.push_back(fd);
    const std::vector<uint8_t> c = ConnectPacket("p" + std::to_string(i));
    ASSERT_EQ(::send(fd, c.data(), c.size(), 0), ssize_t(c.size()));
  }
  std::this_thread::sleep_for(100ms);  // the SUBSCRIBEs are in

  // Everything so far (CONNACKs, SUBACKs) is read; from here each
  // subscriber's socket is read to the exact byte count of a round.
  drain();
  for (int i = 0; i < subscribers; ++i) {
    timeval tv{5, 0};
    ::setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }

  // PUBLISH QoS 0 "f/x" with a 300-byte payload: remaining length 305,
  // 308 bytes on the wire, the same bytes again to each subscriber.
  std::vector<uint8_t> publish = {0x30, 0xB1, 0x02, 0, 3, 'f', '/', 'x'};
  publish.resize(publish.size() + 300, 'p');
  const size_t round_bytes = publish.size() * kPublishers;
  uint64_t published = 0;
  // One round: every publisher sends one, and every subscriber reads all
  // of them before the next round, so the queues (and the pools behind
  // them) stay at the depth the warm-up reached.
  auto round = [&]() -> bool {
    for (int fd : pubs) {
      if (::send(fd, publish.data(), publish.size(), 0) !=
          ssize_t(publish.size())) {
        return false;
      }
      ++published;
    }
    for (int i = 0; i < subscribers; ++i) {
      size_t got = 0;
      while (got < round_bytes) {
        const ssize_t n = ::recv(fds[i], sink, round_bytes - got, 0);
        if (n <= 0) return false;  // timed out or closed
        got += size_t(n);
      }
    }
    // The members' shares vary; what is there is read.
    for (int fd : members) {
      while (::recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
      }
    }
    return true;
  };
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(round()) << "warm-up round " << i;
  std::this_thread::sleep_for(100ms);  // a few idle iterations and timers

  const uint64_t forwarded_before = mb.counters().forwarded;
  counting_allocator::Start();
  bool ok = true;
  for (int i = 0; i < 500 && ok; ++i) ok = round();
  const size_t allocations = counting_allocator::Stop();
  EXPECT_TRUE(ok) << "a subscriber missed bytes of a round";
  EXPECT_EQ(allocations, 0u);
  // Each subscriber every message, and the group each message once.
  const uint64_t want = published * (uint64_t(subscribers) + 1);
  EXPECT_TRUE(wait_until([&] { return delivered() == want; }, 5s))
      << delivered() << " of " << want << " (shared_elsewhere "
      << mb.counters().shared_elsewhere << ")";
  // The window exercised the cross-Loop path.
  EXPECT_GT(mb.counters().forwarded - forwarded_before, 0u);
  EXPECT_EQ(mb.counters().forward_refused, 0u);
  for (int fd : fds) ::close(fd);
  mb.RequestStop();
  mb.Join();
}

}  // namespace
}  // namespace ringlab::mqtt
