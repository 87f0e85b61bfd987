// The hot path allocates nothing: a counting global operator new around
// steady-state traffic on every preset (UDP echo, TCP echo, fan-out of a
// shared payload with per-socket headers, timer re-arming, receives held
// between PauseReceive and ResumeReceive). Its own binary,
// because replacing operator new affects every test linked with it.
//
// Handlers here keep plain counters instead of the Recorder's vectors, so
// the only allocations the counter can see are the Loop's.
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/counting_allocator.h"
#include "transport/loop.h"
#include "transport/loop_test_support.h"

namespace ringlab::transport {
namespace {

using namespace std::chrono_literals;
using namespace testing_support;

// Counts allocations made while it is alive.
class CountAllocations {
 public:
  CountAllocations() { counting_allocator::Start(); }
  ~CountAllocations() { counting_allocator::Stop(); }
  size_t count() const { return counting_allocator::Count(); }
};

class LoopAllocTest : public LoopTestBase {};

// UDP request/response: the client sends the next request when the echo
// arrives; the server echoes in place.
class UdpEchoServer : public SocketHandler {
 public:
  explicit UdpEchoServer(Loop* loop) : loop_(loop) {}
  void OnDatagram(SocketId s, const Endpoint& from, BufferLease d) override {
    loop_->SendTo(s, std::move(d), from);
  }

 private:
  Loop* loop_;
};

class UdpPingClient : public SocketHandler {
 public:
  UdpPingClient(Loop* loop, Endpoint server) : loop_(loop), server_(server) {}
  void Ping(SocketId s) {
    BufferLease lease = loop_->AcquireBuffer();
    if (!lease) return;
    lease.set_size(64);
    if (loop_->SendTo(s, std::move(lease), server_) == 0) ++sent;
  }
  void OnDatagram(SocketId s, const Endpoint&, BufferLease) override {
    ++received;
    Ping(s);
  }
  int sent = 0;
  int received = 0;

 private:
  Loop* loop_;
  Endpoint server_;
};

TEST_P(LoopAllocTest, UdpEchoSteadyStateDoesNotAllocate) {
  Loop& loop = *loop_;
  UdpEchoServer server(&loop);
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  absl::StatusOr<SocketId> server_id = loop.OpenUdp(udp, &server);
  ASSERT_TRUE(server_id.ok());
  UdpPingClient client(&loop, *loop.LocalEndpoint(*server_id));
  absl::StatusOr<SocketId> client_id = loop.OpenUdp(udp, &client);
  ASSERT_TRUE(client_id.ok());
  client.Ping(*client_id);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return client.received >= 200; }, kWait, "warm-up"));
  size_t allocations = 0;
  {
    CountAllocations counting;
    const int target = client.received + 2000;
    for (int i = 0; i < 1'000'000 && client.received < target; ++i) {
      if (loop.RunOnce(1ms) < 0) break;
    }
    allocations = counting.count();
  }
  EXPECT_GE(client.received, 2200);
  EXPECT_EQ(allocations, 0u) << "allocations during 2000 UDP round trips";
  loop.Close(*client_id);
  loop.Close(*server_id);
  ASSERT_TRUE(RunFor(loop, 20ms));
}

// TCP: the same, over a stream, with the server echoing the lease.
class TcpEcho : public SocketHandler {
 public:
  explicit TcpEcho(Loop* loop) : loop_(loop) {}
  SocketHandler* OnAccept(SocketId, SocketId, const Endpoint&) override {
    return this;
  }
  void OnData(SocketId s, BufferLease d) override {
    loop_->Send(s, std::move(d));
  }

 private:
  Loop* loop_;
};

class TcpPingClient : public SocketHandler {
 public:
  explicit TcpPingClient(Loop* loop) : loop_(loop) {}
  void Ping(SocketId s) {
    BufferLease lease = loop_->AcquireBuffer();
    if (!lease) return;
    lease.set_size(64);
    loop_->Send(s, std::move(lease));
    pending_ = 64;
  }
  void OnConnect(SocketId s, int result) override {
    if (result == 0) Ping(s);
  }
  void OnData(SocketId s, BufferLease d) override {
    pending_ -= std::min(pending_, d.size());
    if (pending_ == 0) {
      ++round_trips;
      Ping(s);
    }
  }
  int round_trips = 0;

 private:
  Loop* loop_;
  size_t pending_ = 0;
};

TEST_P(LoopAllocTest, TcpEchoSteadyStateDoesNotAllocate) {
  Loop& loop = *loop_;
  TcpEcho server(&loop);
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), &server);
  ASSERT_TRUE(listener.ok());
  TcpPingClient client(&loop);
  absl::StatusOr<SocketId> id =
      loop.ConnectTcp(*loop.LocalEndpoint(*listener), &client);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(RunUntil(
      loop, [&] { return client.round_trips >= 200; }, kWait, "warm-up"));
  size_t allocations = 0;
  {
    CountAllocations counting;
    const int target = client.round_trips + 2000;
    for (int i = 0; i < 1'000'000 && client.round_trips < target; ++i) {
      if (loop.RunOnce(1ms) < 0) break;
    }
    allocations = counting.count();
  }
  EXPECT_GE(client.round_trips, 2200);
  EXPECT_EQ(allocations, 0u) << "allocations during 2000 TCP round trips";
}

// Fan-out: a shared payload with a header per socket to 20 streams, over
// and over, with the sinks discarding what they read.
class Sink : public SocketHandler {
 public:
  SocketHandler* OnAccept(SocketId, SocketId c, const Endpoint&) override {
    if (accepted < kMax) ids[accepted++] = c;
    return this;
  }
  void OnData(SocketId, BufferLease d) override { bytes += d.size(); }
  void OnSendComplete(SocketId, int result, uint64_t) override {
    if (result > 0) ++completed;
  }
  static constexpr int kMax = 32;
  SocketId ids[kMax];
  int accepted = 0;
  size_t bytes = 0;
  int completed = 0;
};

TEST_P(LoopAllocTest, FanOutDoesNotAllocate) {
  Loop& loop = *loop_;
  constexpr int kStreams = 20;
  Sink server;
  Sink clients;
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), &server);
  ASSERT_TRUE(listener.ok());
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(loop.ConnectTcp(*loop.LocalEndpoint(*listener), &clients).ok());
  }
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server.accepted == kStreams; }, kWait, "connections"));
  const std::string header = "topic/with/some/length + packet id";
  int queued = 0;  // sends accepted (a full budget refuses with -EAGAIN)
  auto publish = [&] {
    BufferLease lease = loop.AcquireBuffer();
    if (!lease) return false;
    lease.set_size(1000);
    SharedBuffer payload = loop.Share(std::move(lease));
    for (int i = 0; i < kStreams; ++i) {
      queued +=
          loop.Send(server.ids[i], payload,
                    std::as_bytes(std::span(header.data(), header.size()))) ==
          0;
    }
    return true;
  };
  for (int round = 0; round < 20; ++round) {
    ASSERT_TRUE(publish());
    ASSERT_TRUE(RunFor(loop, 1ms));
  }
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server.completed == queued; }, kWait,
      "warm-up fan-out"));
  size_t allocations = 0;
  int published = 0;
  {
    CountAllocations counting;
    for (int round = 0; round < 200; ++round) {
      published += publish();
      for (int k = 0; k < 3; ++k) loop.RunOnce(Duration(0));
    }
    for (int i = 0; i < 10000 && server.completed < queued; ++i) {
      loop.RunOnce(1ms);
    }
    allocations = counting.count();
  }
  EXPECT_EQ(published, 200);
  EXPECT_GT(queued, 20 * kStreams);
  EXPECT_EQ(server.completed, queued)
      << "counters: " << loop.counters().ToString() << "; queued: " << [&] {
           std::string q;
           for (int i = 0; i < kStreams; ++i) {
             absl::StrAppend(&q, loop.QueuedSendBytes(server.ids[i]), " ");
           }
           return q;
         }();
  EXPECT_EQ(allocations, 0u)
      << "allocations during 200 fan-outs to " << kStreams << " streams";
}

// Timers: a TimerHandler re-armed from its own callback.
class Rearm : public TimerHandler {
 public:
  explicit Rearm(Loop* loop) : loop_(loop) {}
  void OnTimer(uint64_t, Timestamp now) override {
    ++fired;
    loop_->AddTimer(now + std::chrono::microseconds(50), Duration(0), this);
  }
  int fired = 0;

 private:
  Loop* loop_;
};

TEST_P(LoopAllocTest, TimerRearmDoesNotAllocate) {
  Loop& loop = *loop_;
  Rearm handler(&loop);
  loop.AddTimer(MonotonicNow(), Duration(0), &handler);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return handler.fired >= 100; }, kWait, "warm-up"));
  size_t allocations = 0;
  {
    CountAllocations counting;
    const int target = handler.fired + 1000;
    for (int i = 0; i < 1'000'000 && handler.fired < target; ++i) {
      loop.RunOnce(1ms);
    }
    allocations = counting.count();
  }
  EXPECT_EQ(allocations, 0u) << "allocations during 1000 timer re-arms";
}

// PauseReceive from inside a burst (as a broker does when its reply was
// refused), the rest of the burst held by the Loop, then ResumeReceive and
// the held receives delivered: UDP and TCP, over and over.
class PausingReceiver : public SocketHandler {
 public:
  explicit PausingReceiver(Loop* loop) : loop_(loop) {}
  SocketHandler* OnAccept(SocketId, SocketId c, const Endpoint&) override {
    connection = c;
    return this;
  }
  void OnDatagram(SocketId s, const Endpoint&, BufferLease) override {
    ++datagrams;
    Note(s);
  }
  void OnData(SocketId s, BufferLease data) override {
    bytes += data.size();
    Note(s);
  }
  // Each socket pauses at its first delivery after Arm().
  void Arm() { armed[0] = armed[1] = true; }
  void Note(SocketId s) {
    const int k = s == connection ? 1 : 0;
    if (paused[k]) ++delivered_while_paused;
    if (!armed[k]) return;
    armed[k] = false;
    paused[k] = true;
    ids[k] = s;
    loop_->PauseReceive(s);
  }
  bool both_paused() const { return paused[0] && paused[1]; }
  void ResumeAll() {
    for (int k = 0; k < 2; ++k) {
      paused[k] = false;
      loop_->ResumeReceive(ids[k]);
    }
  }
  SocketId connection;
  int datagrams = 0;
  size_t bytes = 0;
  int delivered_while_paused = 0;

 private:
  Loop* loop_;
  bool armed[2] = {false, false};
  bool paused[2] = {false, false};
  SocketId ids[2];
};

TEST_P(LoopAllocTest, PauseAndResumeDoNotAllocate) {
  Loop& loop = *loop_;
  PausingReceiver rx(&loop);
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  absl::StatusOr<SocketId> u = loop.OpenUdp(udp, &rx);
  ASSERT_TRUE(u.ok());
  const Endpoint uep = *loop.LocalEndpoint(*u);
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), &rx);
  ASSERT_TRUE(listener.ok());
  ScopedFd peer(ConnectRawTcp(*loop.LocalEndpoint(*listener)));
  ScopedFd tx(BoundRawSocket(SOCK_DGRAM, 0));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return rx.connection.valid(); }, kWait, "accept"));
  constexpr int kDatagrams = 8;
  constexpr size_t kStreamBytes = 8192;
  static char bytes[kStreamBytes] = {};
  int rounds = 0;
  auto round = [&] {
    rx.Arm();
    for (int i = 0; i < kDatagrams; ++i) {
      if (::sendto(tx.get(), bytes, 100, 0, uep.sockaddr(), uep.socklen()) !=
          100) {
        return false;
      }
    }
    if (::write(peer.get(), bytes, kStreamBytes) != ssize_t(kStreamBytes)) {
      return false;
    }
    ++rounds;
    if (!RunUntil(
            loop, [&] { return rx.both_paused(); }, kWait, "both paused")) {
      return false;
    }
    for (int k = 0; k < 5; ++k) loop.RunOnce(Duration(0));
    rx.ResumeAll();
    return bool(RunUntil(
        loop,
        [&] {
          return rx.datagrams == kDatagrams * rounds &&
                 rx.bytes == kStreamBytes * size_t(rounds);
        },
        kWait, "the round's datagrams and bytes"));
  };
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(round()) << "warm-up round " << i;
  size_t allocations = 0;
  bool ok = true;
  {
    CountAllocations counting;
    for (int i = 0; i < 100 && ok; ++i) ok = round();
    allocations = counting.count();
  }
  ASSERT_TRUE(ok) << "counters: " << loop.counters().ToString();
  EXPECT_EQ(rx.delivered_while_paused, 0);
  EXPECT_EQ(allocations, 0u)
      << "allocations during 100 rounds of pause, held receives, resume";
  std::cout << "[ info     ] " << GetParam() << ": "
            << loop.counters().receives_held << " receives held\n";
  loop.Close(*u);
  loop.Close(rx.connection);
  loop.Close(*listener);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return loop.open_sockets() == 0; }, kWait, "closes"));
  ExpectNoLeakedBuffers();
}

INSTANTIATE_TEST_SUITE_P(Alloc, LoopAllocTest, RINGLAB_ALL_PRESETS,
                         PresetTestName);

}  // namespace
}  // namespace ringlab::transport
