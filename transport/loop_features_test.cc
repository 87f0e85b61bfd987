// Conformance tests for what the protocol modules need from the Loop (issue
// 6, second part), on every preset (`Features/LoopFeatureTest.X/epoll`,
// ...): fan-out without copies, backpressure, stream receive size, batched
// and annotated UDP, listener and socket options, timers.
//
// A preset the kernel cannot provide is skipped with the reason Loop::Create
// gave.
#include <linux/capability.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "transport/loop.h"
#include "transport/loop_test_support.h"
#include "transport/sim_network.h"
#include "transport/stream_assembler.h"

#ifndef IPV6_MULTICAST_ALL
#define IPV6_MULTICAST_ALL 29  // linux/in6.h, Linux 4.20
#endif

namespace ringlab::transport {
namespace {

using namespace std::chrono_literals;
using namespace testing_support;

class LoopFeatureTest : public LoopTestBase {
 protected:
  // SlowReaderWithSmallReceiveBufferGetsEveryByte on the current loop_.
  void RunSlowReader(size_t send_queue_limit_bytes, int send_buffer_bytes);
};

std::span<const std::byte> AsBytes(const std::string& s) {
  return std::as_bytes(std::span(s));
}

SharedBuffer MakeShared(Loop& loop, const std::string& text) {
  return loop.Share(MakePayload(loop, text));
}

// --- Fan-out without copies ------------------------------------------------

// One payload to many streams: a per-connection header (as an MQTT broker's
// fixed header + topic + packet id) gathered with one shared pool buffer.
// While every send is queued the pool is short of exactly one buffer.
TEST_P(LoopFeatureTest, SharedPayloadToManyStreamsUsesOneBuffer) {
  Loop& loop = *loop_;
  constexpr int kConnections = 50;
  Recorder* server = Make();
  server->on_accept = [&](SocketId, SocketId, const Endpoint&) {
    return server;
  };
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), server);
  ASSERT_TRUE(listener.ok()) << listener.status();
  absl::StatusOr<Endpoint> ep = loop.LocalEndpoint(*listener);
  ASSERT_TRUE(ep.ok());
  Recorder* clients = Make();
  clients->keep_bytes = false;
  absl::flat_hash_map<uint32_t, std::string> got;
  clients->on_data = [&](SocketId s, BufferLease data) {
    got[s.value] += ToString(data.bytes());
  };
  std::vector<SocketId> client_ids;
  for (int i = 0; i < kConnections; ++i) {
    absl::StatusOr<SocketId> id = loop.ConnectTcp(*ep, clients);
    ASSERT_TRUE(id.ok()) << id.status();
    client_ids.push_back(*id);
  }
  ASSERT_TRUE(RunUntil(
      loop,
      [&] {
        return server->accepted.size() == size_t(kConnections) &&
               clients->connects.size() == size_t(kConnections);
      },
      kWait, "every connection"));
  ASSERT_TRUE(RunFor(loop, 10ms));

  std::string body(1500, '\0');
  FillPattern(42, 0, std::as_writable_bytes(std::span(body)));
  const uint32_t free_before = loop.buffers().free_count();
  SharedBuffer payload = MakeShared(loop, body);
  ASSERT_TRUE(payload.valid());
  std::vector<std::string> headers;
  for (int i = 0; i < kConnections; ++i) {
    headers.push_back(absl::StrCat("header-for-", i, ";"));
    ASSERT_EQ(loop.Send(server->accepted[i], payload, AsBytes(headers[i]), i),
              0);
  }
  EXPECT_EQ(payload.use_count(), 1u + kConnections)
      << "each queued send holds one reference on the same buffer";
  EXPECT_EQ(loop.buffers().free_count(), free_before - 1)
      << "one pool buffer for " << kConnections << " sends";
  payload.Reset();
  size_t expected_bytes = 0;
  for (const std::string& h : headers) expected_bytes += h.size() + body.size();
  ASSERT_TRUE(RunUntil(
      loop,
      [&] {
        size_t bytes = 0;
        for (const auto& [id, text] : got) bytes += text.size();
        return bytes == expected_bytes &&
               server->completions.size() == size_t(kConnections);
      },
      kWait, "every connection's header and payload"));
  // Each client got one header (which server end it is connected to is not
  // known here) and the whole payload behind it.
  ASSERT_EQ(got.size(), size_t(kConnections));
  absl::flat_hash_set<std::string> seen_headers;
  for (const auto& [id, text] : got) {
    const size_t semi = text.find(';');
    ASSERT_NE(semi, std::string::npos) << text.substr(0, 40);
    seen_headers.insert(text.substr(0, semi + 1));
    EXPECT_TRUE(text.substr(semi + 1) == body) << "payload corrupted";
  }
  EXPECT_EQ(seen_headers.size(), size_t(kConnections)) << "a header twice";
  for (const Recorder::Completion& c : server->completions) {
    EXPECT_EQ(c.result, static_cast<int>(headers[c.tag].size() + body.size()));
  }
  EXPECT_EQ(loop.buffers().free_count(), free_before) << "the buffer is back";
  for (SocketId id : client_ids) loop.Close(id);
  for (SocketId id : server->accepted) loop.Close(id);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return clients->closed_count() == size_t(kConnections); },
      kWait, "closes"));
  ASSERT_TRUE(CloseAndWait(*listener, server));
  EXPECT_TRUE(server->violations.empty()) << server->ViolationText();
  ExpectNoLeakedBuffers();
}

// One payload to many endpoints (RTPS multi-locator): each datagram is its
// header followed by the shared payload, from one pool buffer.
TEST_P(LoopFeatureTest, SharedPayloadToManyEndpointsUsesOneBuffer) {
  Loop& loop = *loop_;
  constexpr int kReceivers = 20;
  std::vector<Recorder*> receivers;
  std::vector<SocketId> rx_ids;
  std::vector<Endpoint> rx_eps;
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  for (int i = 0; i < kReceivers; ++i) {
    receivers.push_back(Make());
    absl::StatusOr<SocketId> id = loop.OpenUdp(udp, receivers.back());
    ASSERT_TRUE(id.ok()) << id.status();
    rx_ids.push_back(*id);
    rx_eps.push_back(*loop.LocalEndpoint(*id));
  }
  Recorder* sender = Make();
  absl::StatusOr<SocketId> tx = loop.OpenUdp(udp, sender);
  ASSERT_TRUE(tx.ok());
  ASSERT_TRUE(RunFor(loop, 10ms));
  const uint32_t free_before = loop.buffers().free_count();
  const std::string body(1000, 'p');
  SharedBuffer payload = MakeShared(loop, body);
  for (int i = 0; i < kReceivers; ++i) {
    const std::string header = absl::StrCat("RTPS", i, "|");
    ASSERT_EQ(loop.SendTo(*tx, payload, rx_eps[i], AsBytes(header), i), 0);
  }
  EXPECT_EQ(loop.buffers().free_count(), free_before - 1);
  payload.Reset();
  ASSERT_TRUE(RunUntil(
      loop,
      [&] {
        for (Recorder* r : receivers) {
          if (r->datagrams.empty()) return false;
        }
        return sender->completions.size() == size_t(kReceivers);
      },
      kWait, "a datagram at every receiver"));
  for (int i = 0; i < kReceivers; ++i) {
    ASSERT_EQ(receivers[i]->datagrams.size(), 1u);
    EXPECT_EQ(receivers[i]->datagrams[0].bytes,
              absl::StrCat("RTPS", i, "|", body));
  }
  for (const Recorder::Completion& c : sender->completions) {
    EXPECT_EQ(c.result,
              static_cast<int>(absl::StrCat("RTPS", c.tag, "|").size() +
                               body.size()));
  }
  EXPECT_EQ(loop.buffers().free_count(), free_before);
  ASSERT_TRUE(CloseAndWait(*tx, sender));
  for (int i = 0; i < kReceivers; ++i) {
    ASSERT_TRUE(CloseAndWait(rx_ids[i], receivers[i]));
  }
  ExpectNoLeakedBuffers();
}

// "One payload to 1,000 sockets uses one pool buffer" (issue 6): 1,000 UDP
// receivers, each sent the shared payload behind its own header.
class CountingReceiver : public SocketHandler {
 public:
  void OnDatagram(SocketId, const Endpoint&, BufferLease data) override {
    ++datagrams;
    bytes += data.size();
  }
  int datagrams = 0;
  size_t bytes = 0;
};

TEST_P(LoopFeatureTest, FanOutToThousandEndpointsUsesOneBuffer) {
  const std::string limit = EnsureFileLimit(2048);
  if (!limit.empty()) GTEST_SKIP() << limit;
  LoopOptions options;
  options.buffer_size = 1024;
  options.buffer_count = 4096;  // plain uring holds one per armed receive
  options.provided_buffers = 512;
  CREATE_LOOP_OR_RETURN(options);
  Loop& loop = *loop_;
  constexpr int kReceivers = 1000;
  std::vector<std::unique_ptr<CountingReceiver>> receivers;
  std::vector<SocketId> rx_ids;
  std::vector<Endpoint> rx_eps;
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  for (int i = 0; i < kReceivers; ++i) {
    receivers.push_back(std::make_unique<CountingReceiver>());
    absl::StatusOr<SocketId> id = loop.OpenUdp(udp, receivers.back().get());
    ASSERT_TRUE(id.ok()) << i << ": " << id.status();
    rx_ids.push_back(*id);
    rx_eps.push_back(*loop.LocalEndpoint(*id));
  }
  Recorder* sender = Make();
  sender->keep_bytes = false;
  UdpOptions tx_udp = udp;
  tx_udp.send_queue_limit_bytes = 4u << 20;
  absl::StatusOr<SocketId> tx = loop.OpenUdp(tx_udp, sender);
  ASSERT_TRUE(tx.ok());
  ASSERT_TRUE(RunFor(loop, 10ms));
  const uint32_t free_before = loop.buffers().free_count();
  const std::string body(1000, 'k');
  const std::string header(16, 'h');
  SharedBuffer payload = MakeShared(loop, body);
  for (int i = 0; i < kReceivers; ++i) {
    ASSERT_EQ(loop.SendTo(*tx, payload, rx_eps[i], AsBytes(header)), 0) << i;
  }
  EXPECT_EQ(loop.buffers().free_count(), free_before - 1)
      << "one pool buffer for 1,000 sends";
  EXPECT_EQ(payload.use_count(), 1u + kReceivers);
  payload.Reset();
  ASSERT_TRUE(RunUntil(
      loop,
      [&] {
        int got = 0;
        for (const auto& r : receivers) got += r->datagrams;
        return got == kReceivers &&
               sender->completions.size() == size_t(kReceivers);
      },
      30s, "a datagram at each of 1,000 receivers"));
  for (const auto& r : receivers) {
    EXPECT_EQ(r->bytes, header.size() + body.size());
  }
  EXPECT_EQ(loop.buffers().free_count(), free_before);
  for (SocketId id : rx_ids) loop.Close(id);
  loop.Close(*tx);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return loop.open_sockets() == 0; }, kWait, "closes"));
  ExpectNoLeakedBuffers();
}

// A header alone is a small send that needs no pool buffer at all; a header
// over kMaxSendHeaderBytes is refused.
TEST_P(LoopFeatureTest, HeaderOnlySendsNeedNoBuffer) {
  Loop& loop = *loop_;
  Recorder* server = Make();
  Recorder* client = Make();
  UdpPair pair;
  ASSERT_TRUE(OpenUdpPair(server, client, &pair));
  ASSERT_TRUE(RunFor(loop, 10ms));
  const uint32_t free_before = loop.buffers().free_count();
  const std::string ack = "PUBACK 42";
  ASSERT_EQ(loop.SendTo(pair.client, SharedBuffer(), pair.server_endpoint,
                        AsBytes(ack)),
            0);
  EXPECT_EQ(loop.buffers().free_count(), free_before);
  const std::string too_big(Loop::kMaxSendHeaderBytes + 1, 'h');
  EXPECT_EQ(loop.SendTo(pair.client, SharedBuffer(), pair.server_endpoint,
                        AsBytes(too_big)),
            -EMSGSIZE);
  EXPECT_EQ(loop.SendTo(pair.client, SharedBuffer(), pair.server_endpoint),
            -EINVAL)
      << "nothing to send";
  ASSERT_TRUE(RunUntil(
      loop, [&] { return !server->datagrams.empty(); }, kWait, "the ack"));
  EXPECT_EQ(server->datagrams[0].bytes, ack);
  ASSERT_TRUE(CloseAndWait(pair.client, client));
  ASSERT_TRUE(CloseAndWait(pair.server, server));
  ExpectNoLeakedBuffers();
}

// Headers and shared payloads through a stream that must send them in many
// partial writes (small kernel buffers): every byte arrives in order.
TEST_P(LoopFeatureTest, GatheredSendsSurvivePartialWrites) {
  LoopOptions options = DefaultOptions();
  options.buffer_size = 16384;
  options.buffer_count = 256;
  options.provided_buffers = 64;
  CREATE_LOOP_OR_RETURN(options);
  Loop& loop = *loop_;
  Recorder* server = Make();
  server->keep_bytes = false;
  std::string received;
  server->on_accept = [&](SocketId, SocketId, const Endpoint&) {
    return server;
  };
  server->on_data = [&](SocketId, BufferLease data) {
    received += ToString(data.bytes());
  };
  TcpOptions tcp;
  tcp.receive_buffer_bytes = 8192;
  tcp.send_buffer_bytes = 8192;
  tcp.send_queue_limit_bytes = 8u << 20;
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), server, tcp);
  ASSERT_TRUE(listener.ok());
  absl::StatusOr<Endpoint> ep = loop.LocalEndpoint(*listener);
  ASSERT_TRUE(ep.ok());
  Recorder* client = Make();
  absl::StatusOr<SocketId> id = loop.ConnectTcp(*ep, client, tcp);
  ASSERT_TRUE(id.ok());
  std::string body(16000, '\0');
  FillPattern(7, 0, std::as_writable_bytes(std::span(body)));
  SharedBuffer payload = MakeShared(loop, body);
  std::string expected;
  constexpr int kSends = 200;
  for (int i = 0; i < kSends; ++i) {
    const std::string header = absl::StrCat("<", i, ">");
    ASSERT_EQ(loop.Send(*id, payload, AsBytes(header), i), 0) << i;
    expected += header + body;
  }
  payload.Reset();
  ASSERT_TRUE(RunUntil(
      loop,
      [&] {
        return received.size() == expected.size() &&
               client->completions.size() == size_t(kSends);
      },
      30s, absl::StrCat("the whole stream")));
  EXPECT_TRUE(received == expected) << "stream corrupted";
  for (size_t i = 0; i < client->completions.size(); ++i) {
    EXPECT_EQ(client->completions[i].tag, i) << "out of order";
  }
  ASSERT_TRUE(CloseAndWait(*id, client));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return !server->read_closed.empty(); }, kWait, "EOF"));
  loop.Close(server->accepted[0]);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->closed_count() == 1; }, kWait, "close"));
  ASSERT_TRUE(CloseAndWait(*listener, server));
  ExpectNoLeakedBuffers();
}

// A received lease can be fanned out too. On the provided-ring presets it
// is copied once into a pool buffer first, so no queue holds a ring buffer.
TEST_P(LoopFeatureTest, SharingAReceivedLease) {
  Loop& loop = *loop_;
  Recorder* server = Make();
  Recorder* client = Make();
  UdpPair pair;
  ASSERT_TRUE(OpenUdpPair(server, client, &pair));
  absl::StatusOr<Endpoint> client_ep = loop.LocalEndpoint(pair.client);
  ASSERT_TRUE(client_ep.ok());
  int fanned = 0;
  server->on_datagram = [&](SocketId s, const Endpoint& from, BufferLease d) {
    SharedBuffer payload = loop.Share(std::move(d));
    for (int i = 0; i < 3; ++i) {
      const std::string header = absl::StrCat(i);
      if (loop.SendTo(s, payload, from, AsBytes(header)) == 0) ++fanned;
    }
  };
  const uint64_t copies_before = loop.counters().ring_buffers_copied_for_send;
  ASSERT_EQ(loop.SendTo(pair.client, MakePayload(loop, "-news"),
                        pair.server_endpoint),
            0);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return client->datagrams.size() == 3; }, kWait,
      "three copies back"));
  EXPECT_EQ(fanned, 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(client->datagrams[i].bytes, absl::StrCat(i, "-news"));
  }
  EXPECT_EQ(loop.counters().ring_buffers_copied_for_send - copies_before,
            HasBufferRing() ? 1u : 0u);
  ASSERT_TRUE(CloseAndWait(pair.client, client));
  ASSERT_TRUE(CloseAndWait(pair.server, server));
  ExpectNoLeakedBuffers();
}

// --- Listeners and sockets -------------------------------------------------

// SO_REUSEPORT: two Loops listen on one port (a broker sharding over
// threads; here both Loops run on this thread in turn) and the kernel
// spreads the connections over both.
TEST_P(LoopFeatureTest, ReusePortListenersShareAPort) {
  Loop& a = *loop_;
  LoopOptions options = DefaultOptions();
  options.backend = GetParam();
  absl::StatusOr<std::unique_ptr<Loop>> created = Loop::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  Loop& b = **created;
  Recorder* ha = Make();
  Recorder* hb = Make();
  TcpOptions tcp;
  tcp.reuse_port = true;
  absl::StatusOr<SocketId> la = a.ListenTcp(Endpoint::Loopback(0), ha, tcp);
  ASSERT_TRUE(la.ok()) << la.status();
  const Endpoint ep = *a.LocalEndpoint(*la);
  absl::StatusOr<SocketId> lb = b.ListenTcp(ep, hb, tcp);
  ASSERT_TRUE(lb.ok()) << "second listener on " << ep.ToString() << ": "
                       << lb.status();
  EXPECT_FALSE(b.ListenTcp(ep, hb).ok())
      << "a listener without reuse_port must not join";
  constexpr int kClients = 40;
  std::vector<ScopedFd> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back(ConnectRawTcp(ep));
    ASSERT_GE(clients.back().get(), 0);
  }
  const Timestamp deadline = MonotonicNow() + kWait;
  while (ha->accepted.size() + hb->accepted.size() < size_t(kClients) &&
         MonotonicNow() < deadline) {
    ASSERT_GE(a.RunOnce(Duration(0)), 0);
    ASSERT_GE(b.RunOnce(1ms), 0);
  }
  std::cout << "[ info     ] " << GetParam() << ": loop A accepted "
            << ha->accepted.size() << ", loop B " << hb->accepted.size()
            << "\n";
  EXPECT_EQ(ha->accepted.size() + hb->accepted.size(), size_t(kClients));
  // 40 connections all hashed to one listener: 2 * 2^-40.
  EXPECT_GT(ha->accepted.size(), 0u);
  EXPECT_GT(hb->accepted.size(), 0u);
  a.Close(*la);
  b.Close(*lb);
  for (int i = 0; i < 100 && (a.open_sockets() + b.open_sockets()) > 0; ++i) {
    a.RunOnce(Duration(0));
    b.RunOnce(1ms);
  }
}

// Buffer sizes are read back after setting; as root the FORCE options get
// past net.core.rmem_max, and without CAP_NET_ADMIN a request beyond it is
// granted less and counted.
TEST_P(LoopFeatureTest, SocketBufferSizesAreReadBack) {
  Loop& loop = *loop_;
  Recorder* h = Make();
  // Twice net.core.rmem_max / wmem_max, so only the FORCE options grant it.
  auto read_sysctl = [](const char* path) {
    std::ifstream in(path);
    int value = 0;
    in >> value;
    return value;
  };
  const int rmem_max = read_sysctl("/proc/sys/net/core/rmem_max");
  const int wmem_max = read_sysctl("/proc/sys/net/core/wmem_max");
  ASSERT_GT(rmem_max, 0);
  ASSERT_GT(wmem_max, 0);
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  udp.receive_buffer_bytes = 2 * rmem_max;
  udp.send_buffer_bytes = 2 * wmem_max;
  absl::StatusOr<SocketId> id = loop.OpenUdp(udp, h);
  ASSERT_TRUE(id.ok()) << id.status();
  absl::StatusOr<SocketBuffers> got = loop.GetSocketBuffers(*id);
  ASSERT_TRUE(got.ok()) << got.status();
  std::cout << "[ info     ] " << GetParam() << ": asked "
            << udp.receive_buffer_bytes << " / " << udp.send_buffer_bytes
            << " (twice rmem_max / wmem_max), got " << got->receive_bytes
            << " / " << got->send_bytes << "; clamped "
            << loop.counters().socket_buffers_clamped << "\n";
  // Root here: the FORCE variants grant it (the kernel reports double).
  EXPECT_EQ(got->receive_bytes, 2 * udp.receive_buffer_bytes);
  EXPECT_EQ(got->send_bytes, 2 * udp.send_buffer_bytes);
  EXPECT_EQ(loop.counters().socket_buffers_clamped, 0u);
  ASSERT_TRUE(CloseAndWait(*id, h));
  EXPECT_FALSE(loop.GetSocketBuffers(*id).ok());

  const std::string preset = GetParam();
  const ChildResult child = RunInChild([&]() -> int {
    const std::string dropped = DropCapability(CAP_NET_ADMIN);
    CHILD_CHECK(dropped.empty(), dropped);
    LoopOptions options = DefaultOptions();
    options.backend = preset;
    absl::StatusOr<std::unique_ptr<Loop>> created = Loop::Create(options);
    CHILD_CHECK(created.ok(), created.status());
    Recorder rec;
    absl::StatusOr<SocketId> s = (*created)->OpenUdp(udp, &rec);
    CHILD_CHECK(s.ok(), s.status());
    absl::StatusOr<SocketBuffers> b = (*created)->GetSocketBuffers(*s);
    CHILD_CHECK(b.ok(), b.status());
    std::cout << "without CAP_NET_ADMIN: " << b->receive_bytes << " / "
              << b->send_bytes << std::endl;
    CHILD_CHECK(b->receive_bytes < 2 * udp.receive_buffer_bytes,
                "rmem_max did not cap it: " << b->receive_bytes);
    CHILD_CHECK((*created)->counters().socket_buffers_clamped >= 1,
                (*created)->counters().ToString());
    return 0;
  });
  EXPECT_EQ(child.exit_code, 0) << child.Describe();
}

// IPv6 multicast join and leave. lo has no multicast route for IPv6, so the
// test runs in a child in its own network namespace with a veth pair.
TEST_P(LoopFeatureTest, Ipv6MulticastJoinAndLeave) {
  const std::string preset = GetParam();
  const ChildResult child = RunInChild([&]() -> int {
    if (::unshare(CLONE_NEWNET) != 0) {
      std::cout << "SKIP: unshare(CLONE_NEWNET): " << std::strerror(errno);
      return 77;
    }
    if (std::system("ip link set lo up && "
                    "ip link add rlv0 type veth peer name rlv1 && "
                    "ip link set rlv0 up && ip link set rlv1 up && "
                    "ip -6 addr add fd00::1/64 dev rlv0 nodad") != 0) {
      std::cout << "SKIP: could not set up a veth pair with `ip`";
      return 77;
    }
    LoopOptions options = DefaultOptions();
    options.backend = preset;
    absl::StatusOr<std::unique_ptr<Loop>> created = Loop::Create(options);
    CHILD_CHECK(created.ok(), created.status());
    Loop& loop = **created;
    absl::StatusOr<Endpoint> iface = Endpoint::Parse("[fd00::1]:0");
    CHILD_CHECK(iface.ok(), iface.status());
    absl::StatusOr<Endpoint> group = Endpoint::Parse("[ff12::7:1]:47400");
    CHILD_CHECK(group.ok(), group.status());
    absl::StatusOr<Endpoint> any = Endpoint::Parse("[::]:47400");
    CHILD_CHECK(any.ok(), any.status());
    Recorder rx[2];
    SocketId ids[2];
    for (int i = 0; i < 2; ++i) {
      UdpOptions udp;
      udp.bind = *any;
      udp.reuse_address = true;
      absl::StatusOr<SocketId> id = loop.OpenUdp(udp, &rx[i]);
      CHILD_CHECK(id.ok(), id.status());
      ids[i] = *id;
      // Deliver only the groups this socket joined (Linux's default is
      // every group anyone joined on the port), so a leave is observable.
      int zero = 0;
      CHILD_CHECK(::setsockopt(loop.NativeHandle(*id), IPPROTO_IPV6,
                               IPV6_MULTICAST_ALL, &zero, sizeof(zero)) == 0,
                  std::strerror(errno));
      absl::Status joined = loop.JoinMulticast(*id, *group, *iface);
      CHILD_CHECK(joined.ok(), joined);
    }
    Recorder tx;
    UdpOptions send;
    send.bind = *Endpoint::Parse("[fd00::1]:0");
    send.multicast_interface = *iface;
    absl::StatusOr<SocketId> sender = loop.OpenUdp(send, &tx);
    CHILD_CHECK(sender.ok(), sender.status());
    CHILD_CHECK(loop.SendTo(*sender, MakePayload(loop, "to-both"), *group) == 0,
                "");
    CHILD_CHECK(RunUntil(
                    loop,
                    [&] {
                      return !rx[0].datagrams.empty() &&
                             !rx[1].datagrams.empty();
                    },
                    kWait, "the group datagram at both receivers"),
                "");
    CHILD_CHECK(loop.LeaveMulticast(ids[0], *group, *iface).ok(), "leave");
    CHILD_CHECK(!loop.LeaveMulticast(ids[0], *group, *iface).ok(),
                "a second leave must fail");
    CHILD_CHECK(loop.SendTo(*sender, MakePayload(loop, "after"), *group) == 0,
                "");
    CHILD_CHECK(RunUntil(
                    loop, [&] { return rx[1].datagrams.size() == 2; }, kWait,
                    "the datagram at the receiver still joined"),
                "");
    CHILD_CHECK(RunFor(loop, 50ms), "");
    CHILD_CHECK(rx[0].datagrams.size() == 1,
                "received after leaving: " << rx[0].datagrams.size());
    std::cout << "ipv6 multicast: joined both, left one" << std::endl;
    return 0;
  });
  if (child.exit_code == 77) GTEST_SKIP() << child.output;
  EXPECT_EQ(child.exit_code, 0) << child.Describe();
}

// --- UDP control messages ----------------------------------------------------

// IP_PKTINFO: the address a datagram was sent to (127.0.0.2 and 127.0.0.1
// both reach a socket bound to INADDR_ANY), and the interface; SO_RXQ_OVFL:
// the kernel's count of datagrams dropped on a full receive queue.
TEST_P(LoopFeatureTest, DatagramDestinationAndDropCount) {
  Loop& loop = *loop_;
  std::vector<DatagramInfo> infos;
  bool last_arrived = false;
  class InfoRecorder : public SocketHandler {
   public:
    InfoRecorder(std::vector<DatagramInfo>* out, bool* last_arrived)
        : out_(out), last_arrived_(last_arrived) {}
    void OnDatagramInfo(SocketId, const DatagramInfo& info,
                        BufferLease data) override {
      out_->push_back(info);
      if (ToString(data.bytes()) == "last") *last_arrived_ = true;
    }

   private:
    std::vector<DatagramInfo>* out_;
    bool* last_arrived_;
  } rx(&infos, &last_arrived);
  UdpOptions udp;
  udp.bind = Endpoint::Ipv4(0, 0);  // INADDR_ANY
  udp.receive_destination = true;
  udp.receive_drop_count = true;
  udp.receive_buffer_bytes = 4096;  // a queue that overflows soon
  absl::StatusOr<SocketId> id = loop.OpenUdp(udp, &rx);
  ASSERT_TRUE(id.ok()) << id.status();
  const uint16_t port = loop.LocalEndpoint(*id)->port();
  ASSERT_TRUE(RunFor(loop, 10ms));
  ScopedFd tx(BoundRawSocket(SOCK_DGRAM, 0));
  auto send_to = [&](uint32_t host, const std::string& text) {
    const Endpoint to = Endpoint::Ipv4(host, port);
    return ::sendto(tx.get(), text.data(), text.size(), 0, to.sockaddr(),
                    to.socklen());
  };
  ASSERT_GT(send_to(0x7f000002, "to .2"), 0);
  ASSERT_GT(send_to(0x7f000001, "to .1"), 0);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return infos.size() == 2; }, kWait, "two datagrams"));
  const uint32_t lo = if_nametoindex("lo");
  EXPECT_EQ(infos[0].to, Endpoint::Ipv4(0x7f000002, 0))
      << infos[0].to.ToString();
  EXPECT_EQ(infos[1].to, Endpoint::Ipv4(0x7f000001, 0))
      << infos[1].to.ToString();
  EXPECT_EQ(infos[0].interface_index, lo);
  EXPECT_EQ(infos[0].dropped, 0u);
  // Overflow the queue while the Loop does not run, drain it, then one more
  // datagram carries the drop count.
  const std::string filler(1000, 'f');
  for (int i = 0; i < 300; ++i) send_to(0x7f000001, filler);
  ASSERT_TRUE(RunFor(loop, 50ms));
  ASSERT_GT(send_to(0x7f000001, "last"), 0);
  // Wait for "last" itself: on uring-sqpoll the kernel's SQ thread drains
  // the queue while the filler is still being sent, so a filler datagram
  // can carry a drop count (the count so far) before "last" arrives. The
  // count is the socket's running total, so the last datagram's is final.
  ASSERT_TRUE(RunUntil(
      loop, [&] { return last_arrived; }, kWait, "the last datagram"));
  EXPECT_GT(infos.back().dropped, 0u) << "the queue never overflowed";
  std::cout << "[ info     ] " << GetParam() << ": received " << infos.size()
            << " of 302, kernel dropped " << infos.back().dropped << "\n";
  EXPECT_EQ(loop.counters().receive_queue_drops, infos.back().dropped);
  EXPECT_EQ(infos.size() + infos.back().dropped, 303u)
      << "every datagram is either received or counted as dropped";
  loop.Close(*id);
  ASSERT_TRUE(RunFor(loop, 20ms));
}

// UDP GSO: 40 queued datagrams of 1,000 bytes (header + shared payload, as
// RTPS data) leave in a few segmented sends; the receiver gets 40 ordinary
// datagrams, each byte-exact, and each send completes on its own.
TEST_P(LoopFeatureTest, UdpGsoBatchesDatagrams) {
  Loop& loop = *loop_;
  Recorder* rx = Make();
  Recorder* tx = Make();
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  absl::StatusOr<SocketId> r = loop.OpenUdp(udp, rx);
  ASSERT_TRUE(r.ok());
  UdpOptions send = udp;
  send.segmentation_offload = true;
  absl::StatusOr<SocketId> t = loop.OpenUdp(send, tx);
  ASSERT_TRUE(t.ok());
  const Endpoint to = *loop.LocalEndpoint(*r);
  ASSERT_TRUE(RunFor(loop, 10ms));
  constexpr int kDatagrams = 40;
  const std::string body(990, 'g');
  SharedBuffer payload = MakeShared(loop, body);
  for (int i = 0; i < kDatagrams; ++i) {
    const std::string header = absl::StrFormat("%09d|", i);  // 10 bytes
    ASSERT_EQ(loop.SendTo(*t, payload, to, AsBytes(header), i), 0);
  }
  // A shorter last one may share the final send.
  ASSERT_EQ(loop.SendTo(*t, MakePayload(loop, "short tail"), to), 0);
  payload.Reset();
  ASSERT_TRUE(RunUntil(
      loop,
      [&] {
        return rx->datagrams.size() == size_t(kDatagrams + 1) &&
               tx->completions.size() == size_t(kDatagrams + 1);
      },
      kWait, "every datagram"));
  for (int i = 0; i < kDatagrams; ++i) {
    EXPECT_EQ(rx->datagrams[i].bytes, absl::StrFormat("%09d|", i) + body)
        << "datagram " << i;
  }
  EXPECT_EQ(rx->datagrams.back().bytes, "short tail");
  for (const Recorder::Completion& c : tx->completions) {
    EXPECT_GT(c.result, 0) << ErrnoName(c.result);
  }
  const LoopCounters& k = loop.counters();
  std::cout << "[ info     ] " << GetParam() << ": gso_sends=" << k.gso_sends
            << " gso_datagrams=" << k.gso_datagrams
            << " gso_refused=" << k.gso_refused << "\n";
  EXPECT_EQ(k.gso_refused, 0u) << "loopback takes UDP GSO";
  EXPECT_GE(k.gso_sends, 3u);
  EXPECT_GE(k.gso_datagrams, uint64_t(kDatagrams - 8))
      << "most datagrams should leave in segmented sends";
  ASSERT_TRUE(CloseAndWait(*t, tx));
  ASSERT_TRUE(CloseAndWait(*r, rx));
  ExpectNoLeakedBuffers();
}

// --- Backpressure -----------------------------------------------------------

// PauseReceive: nothing is delivered for the socket until ResumeReceive,
// then everything that waited arrives in order (UDP and TCP). A receive the
// kernel had already under way may still complete (on uring-sqpoll the SQ
// thread picks the cancellation up later), but the Loop holds what it
// brings until ResumeReceive: not one datagram or byte while paused.
TEST_P(LoopFeatureTest, PausedReceiveReadsNothingUntilResumed) {
  Loop& loop = *loop_;
  Recorder* rx = Make();
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  absl::StatusOr<SocketId> u = loop.OpenUdp(udp, rx);
  ASSERT_TRUE(u.ok());
  const Endpoint uep = *loop.LocalEndpoint(*u);
  ASSERT_TRUE(RunFor(loop, 10ms));
  ASSERT_EQ(loop.PauseReceive(*u), 0);
  ScopedFd tx(BoundRawSocket(SOCK_DGRAM, 0));
  for (int i = 0; i < 5; ++i) {
    const std::string text = absl::StrCat("d", i);
    ASSERT_EQ(::sendto(tx.get(), text.data(), text.size(), 0, uep.sockaddr(),
                       uep.socklen()),
              ssize_t(text.size()));
  }
  ASSERT_TRUE(RunFor(loop, 50ms));
  EXPECT_EQ(rx->datagrams.size(), 0u) << "delivered while paused";
  ASSERT_EQ(loop.ResumeReceive(*u), 0);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return rx->datagrams.size() == 5; }, kWait,
      "the datagrams that waited"));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(rx->datagrams[i].bytes, absl::StrCat("d", i));
  }

  // TCP: the peer's bytes wait in the kernel (and then in the peer).
  Recorder* server = Make();
  server->on_accept = [&](SocketId, SocketId, const Endpoint&) {
    return server;
  };
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), server);
  ASSERT_TRUE(listener.ok());
  ScopedFd peer(ConnectRawTcp(*loop.LocalEndpoint(*listener)));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->accepted.size() == 1; }, kWait, "accept"));
  const SocketId conn = server->accepted[0];
  ASSERT_TRUE(RunFor(loop, 10ms));
  ASSERT_EQ(loop.PauseReceive(conn), 0);
  std::string sent(10000, '\0');
  FillPattern(9, 0, std::as_writable_bytes(std::span(sent)));
  ASSERT_EQ(::write(peer.get(), sent.data(), sent.size()),
            ssize_t(sent.size()));
  ASSERT_TRUE(RunFor(loop, 50ms));
  EXPECT_EQ(server->stream.size(), 0u) << "delivered while paused";
  ASSERT_EQ(loop.ResumeReceive(conn), 0);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->stream.size() == sent.size(); }, kWait,
      "the stream that waited"));
  EXPECT_TRUE(server->stream == sent);
  EXPECT_EQ(loop.PauseReceive(*listener), -EBADF) << "not for listeners";
  ASSERT_TRUE(CloseAndWait(*u, rx));
  loop.Close(conn);
  ASSERT_TRUE(CloseAndWait(*listener, server));
  ExpectNoLeakedBuffers();
}

// PauseReceive from inside OnDatagram / OnData (a broker whose reply was
// just refused): the rest of the same receive batch (a recvmmsg on epoll,
// the CQEs of a multishot receive on uring-fixed, the next reads of the
// stream) is held, not delivered, until ResumeReceive; then it arrives in
// order.
TEST_P(LoopFeatureTest, PauseInsideHandlerStopsDeliveryAtOnce) {
  Loop& loop = *loop_;
  Recorder* rx = Make();
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  absl::StatusOr<SocketId> u = loop.OpenUdp(udp, rx);
  ASSERT_TRUE(u.ok());
  rx->on_datagram = [&](SocketId s, const Endpoint&, BufferLease) {
    if (rx->datagrams.size() == 1) {
      EXPECT_EQ(loop.PauseReceive(s), 0);
    }
  };
  const Endpoint uep = *loop.LocalEndpoint(*u);
  ASSERT_TRUE(RunFor(loop, 10ms));
  // Sent while the Loop does not run: they wait together in the kernel.
  constexpr int kDatagrams = 20;
  ScopedFd tx(BoundRawSocket(SOCK_DGRAM, 0));
  for (int i = 0; i < kDatagrams; ++i) {
    const std::string text = absl::StrCat("d", i);
    ASSERT_EQ(::sendto(tx.get(), text.data(), text.size(), 0, uep.sockaddr(),
                       uep.socklen()),
              ssize_t(text.size()));
  }
  ASSERT_TRUE(RunUntil(
      loop, [&] { return !rx->datagrams.empty(); }, kWait, "a datagram"));
  ASSERT_TRUE(RunFor(loop, 50ms));
  EXPECT_EQ(rx->datagrams.size(), 1u) << "delivered after PauseReceive";
  ASSERT_EQ(loop.ResumeReceive(*u), 0);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return rx->datagrams.size() == size_t(kDatagrams); }, kWait,
      "the datagrams that waited"));
  for (int i = 0; i < kDatagrams; ++i) {
    EXPECT_EQ(rx->datagrams[i].bytes, absl::StrCat("d", i)) << "out of order";
  }

  Recorder* server = Make();
  size_t pieces = 0;
  server->on_accept = [&](SocketId, SocketId, const Endpoint&) {
    return server;
  };
  server->on_data = [&](SocketId s, BufferLease) {
    if (++pieces == 1) {
      EXPECT_EQ(loop.PauseReceive(s), 0);
    }
  };
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), server);
  ASSERT_TRUE(listener.ok());
  ScopedFd peer(ConnectRawTcp(*loop.LocalEndpoint(*listener)));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->accepted.size() == 1; }, kWait, "accept"));
  const SocketId conn = server->accepted[0];
  ASSERT_TRUE(RunFor(loop, 10ms));
  std::string sent(64 * 1024, '\0');
  FillPattern(11, 0, std::as_writable_bytes(std::span(sent)));
  ASSERT_EQ(::write(peer.get(), sent.data(), sent.size()),
            ssize_t(sent.size()));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return pieces > 0; }, kWait, "the first piece"));
  ASSERT_TRUE(RunFor(loop, 50ms));
  EXPECT_EQ(pieces, 1u) << "delivered after PauseReceive";
  ASSERT_EQ(loop.ResumeReceive(conn), 0);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->stream.size() == sent.size(); }, kWait,
      "the stream that waited"));
  EXPECT_TRUE(server->stream == sent) << "stream out of order";
  ASSERT_TRUE(CloseAndWait(*u, rx));
  loop.Close(conn);
  ASSERT_TRUE(CloseAndWait(*listener, server));
  ExpectNoLeakedBuffers();
}

// ResumeReceive right after PauseReceive, before the Loop ran (the io_uring
// cancellation of the armed receive is still on its way): the socket keeps
// receiving. Then pause and resume on alternate iterations.
TEST_P(LoopFeatureTest, ResumeRightAfterPauseKeepsReceiving) {
  Loop& loop = *loop_;
  Recorder* rx = Make();
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  absl::StatusOr<SocketId> u = loop.OpenUdp(udp, rx);
  ASSERT_TRUE(u.ok());
  const Endpoint uep = *loop.LocalEndpoint(*u);
  Recorder* server = Make();
  server->on_accept = [&](SocketId, SocketId, const Endpoint&) {
    return server;
  };
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), server);
  ASSERT_TRUE(listener.ok());
  ScopedFd peer(ConnectRawTcp(*loop.LocalEndpoint(*listener)));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->accepted.size() == 1; }, kWait, "accept"));
  const SocketId conn = server->accepted[0];
  ASSERT_TRUE(RunFor(loop, 10ms));
  ScopedFd tx(BoundRawSocket(SOCK_DGRAM, 0));
  std::string expected_stream;
  for (int round = 0; round < 4; ++round) {
    ASSERT_EQ(loop.PauseReceive(*u), 0);
    ASSERT_EQ(loop.PauseReceive(conn), 0);
    if (round % 2 == 1) {
      ASSERT_GE(loop.RunOnce(Duration(0)), 0);
    }
    ASSERT_EQ(loop.ResumeReceive(*u), 0);
    ASSERT_EQ(loop.ResumeReceive(conn), 0);
    ASSERT_TRUE(RunFor(loop, 20ms));
    const std::string text = absl::StrCat("round", round);
    ASSERT_EQ(::sendto(tx.get(), text.data(), text.size(), 0, uep.sockaddr(),
                       uep.socklen()),
              ssize_t(text.size()));
    ASSERT_EQ(::write(peer.get(), text.data(), text.size()),
              ssize_t(text.size()));
    expected_stream += text;
    ASSERT_TRUE(RunUntil(
        loop,
        [&] {
          return rx->datagrams.size() == size_t(round + 1) &&
                 server->stream.size() == expected_stream.size();
        },
        kWait, absl::StrCat("round ", round, "'s datagram and bytes")));
    EXPECT_EQ(rx->datagrams.back().bytes, text);
  }
  EXPECT_EQ(server->stream, expected_stream);
  ASSERT_TRUE(CloseAndWait(*u, rx));
  loop.Close(conn);
  ASSERT_TRUE(CloseAndWait(*listener, server));
  ExpectNoLeakedBuffers();
}

// Once a pause has taken effect the Loop reads nothing: what the peers send
// stays in the kernel (so TCP pushes back on the sender, and a UDP flood
// cannot take the buffer ring from other sockets). Every kind of receive:
// unconnected UDP, connected UDP (plain multishot recv on uring-fixed),
// connected UDP with control messages (multishot recvmsg), and TCP.
TEST_P(LoopFeatureTest, PausedSocketLeavesDataInTheKernel) {
  Loop& loop = *loop_;
  ScopedFd tx(BoundRawSocket(SOCK_DGRAM, 0));
  const Endpoint tx_ep = Endpoint::Loopback(BoundPort(tx.get()));
  struct Case {
    const char* name;
    bool connect;
    bool control;
  };
  const Case cases[] = {{"unconnected UDP", false, false},
                        {"connected UDP", true, false},
                        {"connected UDP with control messages", true, true}};
  std::vector<Recorder*> rx;
  std::vector<SocketId> ids;
  std::vector<Endpoint> eps;
  for (const Case& c : cases) {
    UdpOptions udp;
    udp.bind = Endpoint::Loopback(0);
    if (c.connect) udp.connect = tx_ep;
    udp.receive_destination = c.control;
    rx.push_back(Make());
    absl::StatusOr<SocketId> id = loop.OpenUdp(udp, rx.back());
    ASSERT_TRUE(id.ok()) << c.name << ": " << id.status();
    ids.push_back(*id);
    eps.push_back(*loop.LocalEndpoint(*id));
  }
  Recorder* server = Make();
  server->on_accept = [&](SocketId, SocketId, const Endpoint&) {
    return server;
  };
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), server);
  ASSERT_TRUE(listener.ok());
  ScopedFd peer(ConnectRawTcp(*loop.LocalEndpoint(*listener)));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->accepted.size() == 1; }, kWait, "accept"));
  const SocketId conn = server->accepted[0];
  ASSERT_TRUE(RunFor(loop, 10ms));
  for (SocketId id : ids) ASSERT_EQ(loop.PauseReceive(id), 0);
  ASSERT_EQ(loop.PauseReceive(conn), 0);
  // Time for the cancellations to reach the kernel (uring-sqpoll: the SQ
  // thread).
  ASSERT_TRUE(RunFor(loop, 100ms));
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string text = absl::StrCat("to ", cases[i].name);
    ASSERT_EQ(::sendto(tx.get(), text.data(), text.size(), 0, eps[i].sockaddr(),
                       eps[i].socklen()),
              ssize_t(text.size()));
  }
  ASSERT_EQ(::write(peer.get(), "stream", 6), 6);
  ASSERT_TRUE(RunFor(loop, 50ms));
  for (size_t i = 0; i < ids.size(); ++i) {
    int waiting = 0;
    ASSERT_EQ(::ioctl(loop.NativeHandle(ids[i]), FIONREAD, &waiting), 0);
    EXPECT_GT(waiting, 0) << cases[i].name << ": read while paused";
    EXPECT_TRUE(rx[i]->datagrams.empty()) << cases[i].name;
  }
  int waiting = 0;
  ASSERT_EQ(::ioctl(loop.NativeHandle(conn), FIONREAD, &waiting), 0);
  EXPECT_EQ(waiting, 6) << "TCP: read while paused";
  EXPECT_TRUE(server->stream.empty());
  for (SocketId id : ids) ASSERT_EQ(loop.ResumeReceive(id), 0);
  ASSERT_EQ(loop.ResumeReceive(conn), 0);
  ASSERT_TRUE(RunUntil(
      loop,
      [&] {
        for (Recorder* r : rx) {
          if (r->datagrams.size() != 1) return false;
        }
        return server->stream == "stream";
      },
      kWait, "what waited in the kernel"));
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(rx[i]->datagrams[0].bytes, absl::StrCat("to ", cases[i].name));
    ASSERT_TRUE(CloseAndWait(ids[i], rx[i]));
  }
  loop.Close(conn);
  ASSERT_TRUE(CloseAndWait(*listener, server));
  ExpectNoLeakedBuffers();
}

// A plain server that shrinks its accepted socket's receive buffer to
// 16 KiB and reads slowly: the Loop's client sends 8 MiB in pool-buffer
// leases (refused with -EAGAIN when its queue is full, resumed on
// OnWritable; or held back by an empty pool), and every send
// completes and every byte arrives in order (the MQTT client's stall on
// uring-fixed after ~3 MB).
//
// Twice: with the fixture's pool, and with the MQTT driver test's (64
// buffers, 16 of them in the provided ring) and its 320 KiB queue limit,
// where the pool and the send budget run out long before the queue does.
struct SlowReaderCase {
  const char* name;
  uint32_t buffer_count;
  uint32_t provided_buffers;
  size_t send_queue_limit_bytes;
  int send_buffer_bytes;  // the client's SO_SNDBUF, 0: the default
};

TEST_P(LoopFeatureTest, SlowReaderWithSmallReceiveBufferGetsEveryByte) {
  const SlowReaderCase cases[] = {{"default pool", 0, 0, 0, 0},
                                  {"64-buffer pool", 64, 16, 320u << 10, 0},
                                  {"16 KiB SO_SNDBUF too", 0, 0, 0, 16 * 1024}};
  for (const SlowReaderCase& c : cases) {
    SCOPED_TRACE(c.name);
    LoopOptions options = DefaultOptions();
    if (c.buffer_count != 0) {
      options.buffer_count = c.buffer_count;
      options.provided_buffers = c.provided_buffers;
    }
    CreateLoop(options);
    if (IsSkipped()) return;
    ASSERT_NO_FATAL_FAILURE(
        RunSlowReader(c.send_queue_limit_bytes, c.send_buffer_bytes));
  }
}

void LoopFeatureTest::RunSlowReader(size_t send_queue_limit_bytes,
                                    int send_buffer_bytes) {
  Loop& loop = *loop_;
  ScopedFd listener(BoundRawSocket(SOCK_STREAM, 0));
  ASSERT_GE(listener.get(), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  Recorder* client = Make();
  bool writable = true;
  client->on_writable = [&](SocketId) { writable = true; };
  TcpOptions tcp;
  tcp.send_queue_limit_bytes = send_queue_limit_bytes;
  absl::StatusOr<SocketId> id = loop.ConnectTcp(
      Endpoint::Loopback(BoundPort(listener.get())), client, tcp);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(RunUntil(
      loop, [&] { return !client->connects.empty(); }, kWait, "connect"));
  ASSERT_EQ(client->connects[0].second, 0);
  if (send_buffer_bytes > 0) {
    // A small send buffer on our side too: the kernel takes each gathered
    // send in small pieces, so the stream leaves in many short writes.
    ASSERT_EQ(::setsockopt(loop.NativeHandle(*id), SOL_SOCKET, SO_SNDBUF,
                           &send_buffer_bytes, sizeof(send_buffer_bytes)),
              0);
  }
  ScopedFd server(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK));
  ASSERT_GE(server.get(), 0);
  const int small = 16 * 1024;
  ASSERT_EQ(
      ::setsockopt(server.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)),
      0);
  constexpr uint64_t kSeed = 23;
  constexpr size_t kTotal = 8u << 20;
  size_t queued = 0;
  size_t received = 0;
  uint64_t sends = 0;
  bool in_order = true;
  std::vector<std::byte> got(16 * 1024);
  std::vector<std::byte> want(got.size());
  Timestamp last_progress = MonotonicNow();
  size_t progress_mark = 0;
  while (received < kTotal || client->completions.size() < sends) {
    while (writable && queued < kTotal) {
      BufferLease lease = loop.AcquireBuffer();
      if (!lease) break;  // the pool: sends complete and return buffers
      const size_t n = std::min(lease.capacity(), kTotal - queued);
      FillPattern(kSeed, queued, lease.writable().first(n));
      lease.set_size(n);
      const int rc = loop.Send(*id, std::move(lease), sends);
      if (rc == -EAGAIN) {
        writable = false;  // OnWritable follows
        break;
      }
      ASSERT_EQ(rc, 0) << ErrnoName(rc);
      queued += n;
      ++sends;
    }
    ASSERT_GE(loop.RunOnce(1ms), 0);
    // Slowly: at most one 16 KiB read per iteration.
    const ssize_t n = ::recv(server.get(), got.data(), got.size(), 0);
    if (n > 0) {
      FillPattern(kSeed, received, std::span(want).first(size_t(n)));
      in_order = in_order && std::memcmp(got.data(), want.data(), n) == 0;
      received += static_cast<size_t>(n);
    }
    if (received + client->completions.size() != progress_mark) {
      progress_mark = received + client->completions.size();
      last_progress = MonotonicNow();
    }
    ASSERT_LT(MonotonicNow() - last_progress, Duration(10s))
        << "stalled: " << received << " of " << kTotal << " bytes received, "
        << client->completions.size() << " of " << sends << " sends complete, "
        << loop.QueuedSendBytes(*id) << " bytes queued, writable=" << writable
        << "; counters: " << loop.counters().ToString();
  }
  EXPECT_TRUE(in_order) << "stream corrupted";
  EXPECT_EQ(received, kTotal);
  ASSERT_EQ(client->completions.size(), sends);
  size_t completed_bytes = 0;
  for (size_t i = 0; i < client->completions.size(); ++i) {
    const Recorder::Completion& c = client->completions[i];
    EXPECT_EQ(c.tag, i) << "out of order";
    ASSERT_GT(c.result, 0) << ErrnoName(c.result);
    completed_bytes += static_cast<size_t>(c.result);
  }
  EXPECT_EQ(completed_bytes, kTotal);
  std::cout << "[ info     ] " << GetParam() << ": " << sends << " sends, "
            << loop.counters().send_partial << " partial writes, "
            << client->writable.size() << " OnWritable\n";
  ASSERT_TRUE(CloseAndWait(*id, client));
  ExpectNoLeakedBuffers();
}

// --- Stream receive size and fairness --------------------------------------

// A 64 KiB message through a 2 KiB pool arrives in about 32 leases; the
// StreamAssembler holds them without copying and hands the message over in
// one Read (the single copy a large message costs), byte exact.
TEST_P(LoopFeatureTest, LargeStreamMessageIsAssembledWithOneCopy) {
  Loop& loop = *loop_;
  constexpr size_t kMessage = 64 * 1024;
  StreamAssembler in(64);
  std::vector<std::byte> message(kMessage);
  size_t most_leases = 0;
  bool done = false;
  Recorder* server = Make();
  server->keep_bytes = false;
  server->on_accept = [&](SocketId, SocketId, const Endpoint&) {
    return server;
  };
  server->on_data = [&](SocketId, BufferLease data) {
    ASSERT_TRUE(in.Append(std::move(data)));
    most_leases = std::max(most_leases, in.leases());
    if (in.size() >= kMessage) {
      ASSERT_EQ(in.Read(message), kMessage);
      done = true;
    }
  };
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), server);
  ASSERT_TRUE(listener.ok());
  ScopedFd peer(ConnectRawTcp(*loop.LocalEndpoint(*listener)));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->accepted.size() == 1; }, kWait, "accept"));
  std::string sent(kMessage, '\0');
  FillPattern(64, 0, std::as_writable_bytes(std::span(sent)));
  // Written while the Loop does not run, so it waits in the kernel and the
  // Loop reads it in buffer-sized pieces.
  ASSERT_EQ(::write(peer.get(), sent.data(), sent.size()),
            ssize_t(sent.size()));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return done; }, kWait, "the whole message"));
  EXPECT_EQ(std::memcmp(message.data(), sent.data(), kMessage), 0);
  EXPECT_GE(most_leases, kMessage / loop.buffers().slot_bytes() / 2)
      << "the message should have come in many pieces";
  EXPECT_EQ(in.size(), 0u);
  loop.Close(server->accepted[0]);
  ASSERT_TRUE(CloseAndWait(*listener, server));
  ExpectNoLeakedBuffers();
}

// Fairness: a connection with a large backlog does not keep another from
// being read. On epoll each socket gets at most 16 reads per iteration; on
// io_uring the kernel caps a multishot receive's retries.
//
// The provided ring is kept well under half the backlog: on uring-sqpoll the
// kernel's SQ thread receives while the test is still writing, and fills the
// whole ring with busy bytes before the quiet byte exists. With 512 buffers
// (1.15 MB) that pre-read alone crossed written / 2 and the test failed in CI
// under load; it measured the writer's timing, not the Loop's order.
TEST_P(LoopFeatureTest, BusyStreamDoesNotStarveAnother) {
  LoopOptions options = DefaultOptions();
  options.buffer_count = 2048;
  options.provided_buffers = 64;
  CREATE_LOOP_OR_RETURN(options);
  Loop& loop = *loop_;
  Recorder* server = Make();
  server->keep_bytes = false;
  absl::flat_hash_map<uint32_t, size_t> bytes;
  size_t busy_bytes_when_quiet_arrived = 0;
  SocketId quiet_id;
  server->on_accept = [&](SocketId, SocketId, const Endpoint&) {
    return server;
  };
  server->on_data = [&](SocketId s, BufferLease data) {
    bytes[s.value] += data.size();
    if (s == quiet_id && busy_bytes_when_quiet_arrived == 0) {
      for (const auto& [id, n] : bytes) {
        if (id != quiet_id.value) busy_bytes_when_quiet_arrived += n;
      }
    }
  };
  TcpOptions tcp;
  tcp.receive_buffer_bytes = 4 << 20;  // the whole backlog fits the kernel
  absl::StatusOr<SocketId> listener =
      loop.ListenTcp(Endpoint::Loopback(0), server, tcp);
  ASSERT_TRUE(listener.ok());
  const Endpoint ep = *loop.LocalEndpoint(*listener);
  ScopedFd busy(ConnectRawTcp(ep));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->accepted.size() == 1; }, kWait, "busy"));
  ScopedFd quiet(ConnectRawTcp(ep));
  ASSERT_TRUE(RunUntil(
      loop, [&] { return server->accepted.size() == 2; }, kWait, "quiet"));
  quiet_id = server->accepted[1];
  ASSERT_TRUE(RunFor(loop, 10ms));
  constexpr size_t kBacklog = 2u << 20;
  const std::string chunk(64 * 1024, 'b');
  size_t written = 0;
  while (written < kBacklog) {
    const ssize_t n = ::write(busy.get(), chunk.data(), chunk.size());
    ASSERT_GT(n, 0) << std::strerror(errno);
    written += static_cast<size_t>(n);
  }
  ASSERT_EQ(::write(quiet.get(), "q", 1), 1);
  ASSERT_TRUE(RunUntil(
      loop,
      [&] {
        return bytes[quiet_id.value] == 1 &&
               bytes[server->accepted[0].value] == written;
      },
      kWait, "both streams"));
  std::cout << "[ info     ] " << GetParam() << ": the quiet byte came after "
            << busy_bytes_when_quiet_arrived << " of " << written
            << " busy bytes; read_budget_yields="
            << loop.counters().read_budget_yields << "\n";
  EXPECT_LT(busy_bytes_when_quiet_arrived, written / 2)
      << "the busy connection was drained before the quiet one was read "
         "(the provided ring holds "
      << options.provided_buffers * loop.buffers().slot_bytes() << " bytes)";
  if (!IsUring()) {
    EXPECT_GT(loop.counters().read_budget_yields, 0u);
  }
  loop.Close(server->accepted[0]);
  loop.Close(quiet_id);
  ASSERT_TRUE(CloseAndWait(*listener, server));
  ExpectNoLeakedBuffers();
}

// --- Bounded wait batching ------------------------------------------------

// A peer on its own thread: echoes every datagram on a plain socket until
// told to stop, or ignores them (answer = false).
class EchoThread {
 public:
  explicit EchoThread(bool answer) : fd_(BoundRawSocket(SOCK_DGRAM, 0)) {
    timeval tv{0, 20'000};  // wake up to look at stop_
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    thread_ = std::thread([this, answer] {
      char buf[2048];
      while (!stop_.load()) {
        sockaddr_storage from;
        socklen_t len = sizeof(from);
        const ssize_t n = ::recvfrom(fd_.get(), buf, sizeof(buf), 0,
                                     reinterpret_cast<sockaddr*>(&from), &len);
        if (n > 0 && answer) {
          ::sendto(fd_.get(), buf, static_cast<size_t>(n), 0,
                   reinterpret_cast<sockaddr*>(&from), len);
        }
      }
    });
  }
  ~EchoThread() {
    stop_.store(true);
    thread_.join();
  }
  Endpoint endpoint() const { return Endpoint::Loopback(BoundPort(fd_.get())); }

 private:
  ScopedFd fd_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// min_wait_batching (uring-fixed, uring-sqpoll): a request/response round
// trip costs about one enter, where it costs two with the feature off; the
// send completions are all delivered. Counts, not times: a batched wait that
// a slow peer lets pass its window costs one more enter, so the bound
// leaves room for a loaded machine.
TEST_P(LoopFeatureTest, BoundedWaitBatchingOneEnterPerRoundTrip) {
  if (!loop_->backend().flags.min_wait_batching) {
    GTEST_SKIP() << "preset has no min_wait_batching: "
                 << loop_->backend().flags.ToString();
  }
  EchoThread peer(/*answer=*/true);
  auto round_trips = [&](Loop& loop, int count) -> uint64_t {
    Recorder* client = Make();
    UdpOptions udp;
    udp.bind = Endpoint::Loopback(0);
    udp.connect = peer.endpoint();
    absl::StatusOr<SocketId> id = loop.OpenUdp(udp, client);
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return 0;
    int replies = 0;
    client->keep_bytes = false;
    client->on_datagram = [&](SocketId s, const Endpoint& from, BufferLease) {
      if (++replies < count) loop.SendTo(s, MakePayload(loop, "ping"), from);
    };
    EXPECT_EQ(loop.SendTo(*id, MakePayload(loop, "ping"), peer.endpoint()), 0);
    // Warm up the reply-gap estimate, then count.
    EXPECT_TRUE(RunUntil(
        loop, [&] { return replies >= 50; }, kWait, "warm"));
    const uint64_t enters_before = loop.counters().io_uring_enter;
    const int replies_before = replies;
    EXPECT_TRUE(RunUntil(
        loop, [&] { return replies >= count; }, kWait, "replies"));
    const uint64_t enters = loop.counters().io_uring_enter - enters_before;
    const int measured = replies - replies_before;
    EXPECT_TRUE(RunUntil(
        loop, [&] { return client->completions.size() >= size_t(count); },
        kWait, "send completions"));
    EXPECT_TRUE(CloseAndWait(*id, client));
    return measured > 0 ? enters * 100 / measured : 0;  // per 100
  };
  const uint64_t batched = round_trips(*loop_, 1000);
  // Most of the 1,000 round trips batch (0 without the feature); a loaded
  // 2-core host (the SQ thread spins on one of them) makes some replies late
  // enough for the tracker to skip batching, so no tighter bound (892 seen).
  EXPECT_GT(loop_->counters().batched_waits, 500u);
  EXPECT_LE(batched, 130u) << "enters per 100 round trips with batching";

  LoopOptions off = DefaultOptions();
  off.features.min_wait_batching = false;
  CREATE_LOOP_OR_RETURN(off);
  EXPECT_FALSE(loop_->backend().flags.min_wait_batching);
  const uint64_t plain = round_trips(*loop_, 1000);
  // Without batching a wait ends at the send's own completion, so a round
  // trip takes two enters, fewer only when the reply is already there at
  // the second one; on uring-sqpoll (the SQ thread submits, on a CPU of its
  // own) the reply is often there before the Loop would wait, so anything
  // from 1.00 to 1.79 per round trip was seen: there the count bounds
  // nothing, and only the batched-wait counter below is checked.
  if (!loop_->backend().flags.sqpoll) {
    EXPECT_GE(plain, 180u) << "enters per 100 round trips without batching";
  }
  EXPECT_EQ(loop_->counters().batched_waits, 0u);
}

// Issue 6 fault 6 with batching on: after request/response traffic taught
// the Loop that replies come fast, a run of one-way sends expires a few
// windows and then stops batching, and every send completes.
TEST_P(LoopFeatureTest, BoundedWaitBatchingStopsForOneWaySends) {
  if (!loop_->backend().flags.min_wait_batching) {
    GTEST_SKIP() << "preset has no min_wait_batching";
  }
  Loop& loop = *loop_;
  EchoThread echo(/*answer=*/true);
  EchoThread sink(/*answer=*/false);
  Recorder* client = Make();
  client->keep_bytes = false;
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  absl::StatusOr<SocketId> id = loop.OpenUdp(udp, client);
  ASSERT_TRUE(id.ok()) << id.status();
  int replies = 0;
  client->on_datagram = [&](SocketId s, const Endpoint& from, BufferLease) {
    if (++replies < 100) loop.SendTo(s, MakePayload(loop, "ping"), from);
  };
  ASSERT_EQ(loop.SendTo(*id, MakePayload(loop, "ping"), echo.endpoint()), 0);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return replies >= 100; }, kWait, "echo"));
  const uint64_t expired_before = loop.counters().batched_wait_expired;
  const uint64_t batched_before = loop.counters().batched_waits;
  constexpr int kOneWay = 100;
  for (int i = 0; i < kOneWay; ++i) {
    const size_t done = client->completions.size();
    ASSERT_EQ(loop.SendTo(*id, MakePayload(loop, "one way"), sink.endpoint()),
              0);
    ASSERT_TRUE(RunUntil(
        loop, [&] { return client->completions.size() > done; }, kWait,
        "one-way completion"));
  }
  EXPECT_EQ(client->completions.size(), size_t{100 + kOneWay});
  const uint64_t expired =
      loop.counters().batched_wait_expired - expired_before;
  EXPECT_LE(expired, 12u) << "batching should stop after a few unanswered "
                             "windows";
  // Nothing answers the one-way sends, so every batched wait of this phase
  // ends without a receive and counts as expired.
  EXPECT_EQ(expired, loop.counters().batched_waits - batched_before);
  // On uring-sqpoll the SQ thread submits each send on its own CPU, and its
  // completion is often posted before the Loop would wait at all: then no
  // wait is batched and none expires (0 seen once in 1 CI run of release).
  // Elsewhere the first one-way send always waits out a window.
  if (!loop.backend().flags.sqpoll) {
    EXPECT_GE(expired, 1u);
  }
  ASSERT_TRUE(CloseAndWait(*id, client));
  ExpectNoLeakedBuffers();
}

// --- Hybrid presets: spin only when a reply is due ---------------------------

// uring-hybrid, epoll-hybrid: an idle Loop never spins; request/response
// traffic spins (and every round trip completes); a one-way sender stops
// spinning after a few unanswered sends. Counts of iterations, not times.
TEST_P(LoopFeatureTest, HybridSpinsOnlyWhenAReplyIsDue) {
  if (!loop_->backend().flags.hybrid_spin) {
    GTEST_SKIP() << "not a hybrid preset: "
                 << loop_->backend().flags.ToString();
  }
  Loop& loop = *loop_;
  EchoThread echo(/*answer=*/true);
  EchoThread sink(/*answer=*/false);
  Recorder* client = Make();
  client->keep_bytes = false;
  UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  absl::StatusOr<SocketId> id = loop.OpenUdp(udp, client);
  ASSERT_TRUE(id.ok()) << id.status();

  // Idle: a socket open, nothing sent. 50 ms of RunOnce(1 ms) sleeps.
  ASSERT_TRUE(RunFor(loop, 50ms));
  EXPECT_EQ(loop.counters().hybrid_spins, 0u) << "an idle Loop must sleep";

  int replies = 0;
  constexpr int kRoundTrips = 500;
  client->on_datagram = [&](SocketId s, const Endpoint& from, BufferLease) {
    if (++replies < kRoundTrips) {
      loop.SendTo(s, MakePayload(loop, "ping"), from);
    }
  };
  ASSERT_EQ(loop.SendTo(*id, MakePayload(loop, "ping"), echo.endpoint()), 0);
  ASSERT_TRUE(RunUntil(
      loop, [&] { return replies >= kRoundTrips; }, kWait, "echo"));
  const uint64_t spins = loop.counters().hybrid_spins;
  EXPECT_GT(spins, 0u) << "request/response should spin for the reply";

  // One-way: each send opens a spin at first; once the unanswered sends
  // outnumber a tenth of the recent gaps, no more spins.
  constexpr int kOneWay = 60;
  for (int i = 0; i < kOneWay; ++i) {
    const size_t done = client->completions.size();
    ASSERT_EQ(loop.SendTo(*id, MakePayload(loop, "one way"), sink.endpoint()),
              0);
    ASSERT_TRUE(RunUntil(
        loop, [&] { return client->completions.size() > done; }, kWait,
        "one-way completion"));
    ASSERT_TRUE(RunFor(loop, 200us));  // longer than the spin cap
  }
  const uint64_t misses_mid = loop.counters().hybrid_spin_misses;
  const uint64_t spins_mid = loop.counters().hybrid_spins;
  for (int i = 0; i < 20; ++i) {
    const size_t done = client->completions.size();
    ASSERT_EQ(loop.SendTo(*id, MakePayload(loop, "one way"), sink.endpoint()),
              0);
    ASSERT_TRUE(RunUntil(
        loop, [&] { return client->completions.size() > done; }, kWait,
        "one-way completion"));
    ASSERT_TRUE(RunFor(loop, 200us));
  }
  EXPECT_EQ(loop.counters().hybrid_spin_misses, misses_mid)
      << "a one-way sender should have stopped spinning";
  EXPECT_EQ(loop.counters().hybrid_spins, spins_mid);
  EXPECT_EQ(client->completions.size(), size_t{kRoundTrips + kOneWay + 20});
  ASSERT_TRUE(CloseAndWait(*id, client));
  ExpectNoLeakedBuffers();
}

// --- Timers ---------------------------------------------------------------

// Timers with slack share wakeups: 1,000 periodic 200 ms timers with random
// phases and 50 ms of slack wake the Loop a few times per period, not 1,000
// times; and each one fires every period, never early. Run(1 s) so that the
// timers alone end each wait.
TEST_P(LoopFeatureTest, TimerSlackCoalescesWakeups) {
  Loop& loop = *loop_;
  if (loop.backend().flags.busy_poll) GTEST_SKIP() << "busy presets spin";
  constexpr int kTimers = 1000;
  struct Ctx {
    int fired = 0;
    bool early = false;
    Timestamp first;
  };
  std::vector<Ctx> ctx(kTimers);
  SimRandom random(5);
  const Timestamp start = MonotonicNow() + 50ms;
  for (int i = 0; i < kTimers; ++i) {
    ctx[i].first =
        start + Duration(static_cast<int64_t>(random.Uniform(199'999'999)));
    loop.AddTimer(
        ctx[i].first, 200ms,
        [](void* c, uint64_t, Timestamp now) {
          Ctx* x = static_cast<Ctx*>(c);
          if (now < x->first + 200ms * x->fired) x->early = true;
          ++x->fired;
        },
        &ctx[i], 50ms);
  }
  const LoopCounters before = loop.counters();
  const Timestamp end = start + 1s;
  while (MonotonicNow() < end) ASSERT_GE(loop.RunOnce(1s), 0);
  const LoopCounters used = loop.counters().Delta(before);
  int fired = 0;
  for (const Ctx& c : ctx) {
    fired += c.fired;
    EXPECT_FALSE(c.early);
  }
  std::cout << "[ info     ] " << GetParam() << ": " << fired
            << " firings of 1,000 timers in 1 s with " << used.loop_iterations
            << " loop iterations\n";
  EXPECT_GE(fired, 4 * kTimers) << "each timer fires every 200 ms";
  EXPECT_LT(used.loop_iterations, 200u)
      << "the timers' slack did not coalesce their wakeups";
}

// RescheduleTimer pushes a pending timer back (a keepalive reset by each
// packet): it fires once, at the last deadline it was given.
TEST_P(LoopFeatureTest, RescheduleTimerPushesItBack) {
  Loop& loop = *loop_;
  int fired = 0;
  Timestamp fired_at;
  // Each push-back is far beyond the 10 ms the loop runs between them, so a
  // loaded machine that overshoots RunFor (seen: uring-busy under 7 parallel
  // builds) cannot let the timer fire legitimately before the next push.
  const uint64_t id =
      loop.AddTimer(MonotonicNow() + 500ms, Duration(0), [&](Timestamp now) {
        ++fired;
        fired_at = now;
      });
  Timestamp last;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(RunFor(loop, 10ms));
    last = MonotonicNow() + 500ms;
    ASSERT_TRUE(loop.RescheduleTimer(id, last));
  }
  EXPECT_EQ(fired, 0) << "fired before its pushed-back deadline";
  ASSERT_TRUE(RunUntil(
      loop, [&] { return fired == 1; }, kWait, "the timer"));
  EXPECT_GE(fired_at, last);
  EXPECT_FALSE(loop.RescheduleTimer(id, last)) << "it is no longer pending";
}

INSTANTIATE_TEST_SUITE_P(Features, LoopFeatureTest, RINGLAB_ALL_PRESETS,
                         PresetTestName);

}  // namespace
}  // namespace ringlab::transport
