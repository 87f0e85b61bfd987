// rudp on SimNetwork: delivery under loss, reordering and duplication,
// packet-number wraparound, liveness, idle timeout and close. Every run is
// seeded and reproduces exactly.
#include <array>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "transport/sim_network.h"
#include "udp/host.h"
#include "udp/sim_harness.h"

namespace ringlab::rudp {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::CheckPatternMessage;
using testing::PatternMessage;
using testing::SimHarness;
using transport::SimImpairment;
using transport::SimRandom;

const Endpoint kClient = Endpoint::Loopback(1000);
const Endpoint kServer = Endpoint::Loopback(2000);

HostOptions SimOptions() {
  HostOptions o;
  o.connection.initial_rtt = milliseconds(100);
  o.connection.max_ack_delay = milliseconds(5);
  o.connection.heartbeat_interval = milliseconds(100);
  o.connection.idle_timeout = seconds(30);
  o.max_connections = 64;
  return o;
}

// Sizes: mostly small, some multi-fragment, a few large, and one 1 MiB
// message, from a seeded generator.
std::vector<size_t> MessageSizes(uint64_t seed, size_t count) {
  SimRandom random(seed);
  std::vector<size_t> sizes;
  for (size_t i = 0; i < count; ++i) {
    const uint64_t kind = random.Uniform(99);
    if (i == count / 2) {
      sizes.push_back(1 << 20);
    } else if (kind < 70) {
      sizes.push_back(8 + random.Uniform(1200));
    } else if (kind < 95) {
      sizes.push_back(1200 + random.Uniform(20000));
    } else {
      sizes.push_back(20000 + random.Uniform(180000));
    }
  }
  return sizes;
}

// One direction of a transfer: what to send, what arrived.
struct Stream {
  std::vector<size_t> sizes;
  size_t next_to_send = 0;
  std::vector<uint64_t> received;  // message numbers in arrival order
  size_t bad_content = 0;
  std::map<uint64_t, int> seen;
  std::optional<SendResult> last_error;
  std::vector<std::byte> pending;  // the next message, generated once
  size_t pending_for = SIZE_MAX;

  void Pump(Host& host, ConnectionHandle c, uint8_t channel, Timestamp now) {
    while (next_to_send < sizes.size()) {
      if (pending_for != next_to_send) {
        pending = PatternMessage(next_to_send, sizes[next_to_send]);
        pending_for = next_to_send;
      }
      const SendResult r = host.Send(c, channel, pending, now);
      if (r == SendResult::kWouldBlock) return;
      if (r != SendResult::kOk) {
        last_error = r;
        return;
      }
      ++next_to_send;
    }
  }
  void Receive(const MessageView& m) {
    const uint64_t n = CheckPatternMessage(m);
    if (n == UINT64_MAX || n >= sizes.size() || m.size() != sizes[n]) {
      ++bad_content;
      return;
    }
    received.push_back(n);
    ++seen[n];
  }
  bool complete() const { return received.size() >= sizes.size(); }
};

// A client and a server exchanging `count` messages each way on `channel`.
struct Transfer {
  explicit Transfer(uint64_t seed, HostOptions options = SimOptions())
      : sim(seed),
        client(sim.AddHost(kClient, options)),
        server(sim.AddHost(kServer, options)) {
    sim.on_event = [this](Host& host, const Event& e) { OnEvent(host, e); };
  }

  void OnEvent(Host& host, const Event& e) {
    const bool at_client = &host == &client;
    switch (e.type) {
      case EventType::kConnected:
        if (at_client) {
          client_connected = true;
        } else {
          server_conn = e.connection;
        }
        break;
      case EventType::kMessage:
        if (e.channel == channel) {
          (at_client ? to_client : to_server).Receive(e.message);
        }
        break;
      case EventType::kClosed:
        (at_client ? client_closed : server_closed) = e.reason;
        break;
      case EventType::kPeerDead:
        ++dead_events;
        break;
      default:
        break;
    }
    Pump();
  }

  void Pump() {
    if (client_connected)
      to_server.Pump(client, client_conn, channel, sim.now());
    if (server_conn.valid())
      to_client.Pump(server, server_conn, channel, sim.now());
  }

  bool Run(Duration limit = seconds(600)) {
    auto c = client.Connect(kServer, sim.now());
    if (!c.ok()) return false;
    client_conn = *c;
    return sim.RunUntil(
        [this] {
          Pump();
          return to_server.complete() && to_client.complete();
        },
        limit);
  }

  // Everything a failing test should print.
  std::string Describe() {
    std::string out = "failure: " + sim.failure();
    auto reason = [](const std::optional<CloseReason>& r) {
      return r ? std::string(CloseReasonName(*r)) : std::string("open");
    };
    absl::StrAppend(&out, "; t=", sim.now().nanos() / 1000000, " ms; client ",
                    reason(client_closed), ", server ", reason(server_closed),
                    "; dead events ", dead_events, "; sent ",
                    to_server.next_to_send, "/", to_server.sizes.size(),
                    " got ", to_server.received.size(), "; back: sent ",
                    to_client.next_to_send, "/", to_client.sizes.size(),
                    " got ", to_client.received.size());
    for (auto [name, host, conn] :
         {std::tuple{"client", &client, client_conn},
          std::tuple{"server", &server, server_conn}}) {
      auto st = host->Stats(conn);
      if (!st.ok()) continue;
      absl::StrAppend(&out, "\n", name, ": sent ", st->packets_sent, " recv ",
                      st->packets_received, " lost ", st->packets_lost,
                      " spurious ", st->spurious_losses, " pto ",
                      st->probe_timeouts, " retx ", st->fragments_retransmitted,
                      " srtt_us ", st->smoothed_rtt.count() / 1000, " cwnd ",
                      st->congestion_window, " inflight ", st->bytes_in_flight,
                      " frags ", st->fragments_sent, " dupfrags ",
                      st->duplicate_fragments, " delivered ",
                      st->messages_delivered, " acks ", st->acks_received,
                      " dups ", st->duplicate_packets);
      for (size_t i = 0; i < st->drops.size(); ++i) {
        if (st->drops[i] != 0) {
          absl::StrAppend(&out,
                          " drop:", std::string(DropReasonName(DropReason(i))),
                          "=", st->drops[i]);
        }
      }
    }
    return out;
  }

  SimHarness sim;
  Host& client;
  Host& server;
  uint8_t channel = 0;
  ConnectionHandle client_conn;
  ConnectionHandle server_conn;
  bool client_connected = false;
  Stream to_server;
  Stream to_client;
  std::optional<CloseReason> client_closed;
  std::optional<CloseReason> server_closed;
  int dead_events = 0;
};

void ExpectExactlyOnceInOrder(const Stream& s) {
  EXPECT_EQ(s.bad_content, 0u);
  ASSERT_EQ(s.received.size(), s.sizes.size());
  for (size_t i = 0; i < s.received.size(); ++i) {
    ASSERT_EQ(s.received[i], i) << "out of order or duplicated at " << i;
  }
}

void ExpectExactlyOnce(const Stream& s) {
  EXPECT_EQ(s.bad_content, 0u);
  ASSERT_EQ(s.received.size(), s.sizes.size());
  ASSERT_EQ(s.seen.size(), s.sizes.size());
  for (const auto& [n, count] : s.seen) ASSERT_EQ(count, 1) << n;
}

TEST(RudpSimTest, CleanLinkDeliversEverythingInOrder) {
  Transfer t(1);
  t.sim.SetLink(kClient, kServer, [] {
    SimImpairment i;
    i.delay = milliseconds(5);
    return i;
  }());
  t.to_server.sizes = MessageSizes(1, 120);
  t.to_client.sizes = MessageSizes(2, 120);
  ASSERT_TRUE(t.Run()) << t.Describe();
  ExpectExactlyOnceInOrder(t.to_server);
  ExpectExactlyOnceInOrder(t.to_client);
  const ConnectionStats stats = *t.client.Stats(t.client_conn);
  EXPECT_EQ(stats.packets_lost, 0u);
  EXPECT_EQ(stats.fragments_retransmitted, 0u);
  EXPECT_EQ(stats.total_drops(), 0u);
  EXPECT_EQ(t.dead_events, 0);
}

class LossySeedTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(LossySeedTest, TwentyPercentBernoulliLossOrderedExactlyOnce) {
  const uint64_t seed = GetParam();
  Transfer t(seed);
  SimImpairment lossy;
  lossy.loss_probability = 0.20;
  lossy.delay = milliseconds(10);
  lossy.jitter = milliseconds(2);
  t.sim.SetLink(kClient, kServer, lossy);
  t.to_server.sizes = MessageSizes(seed * 10 + 1, 100);
  t.to_client.sizes = MessageSizes(seed * 10 + 2, 100);
  ASSERT_TRUE(t.Run()) << t.Describe();
  ExpectExactlyOnceInOrder(t.to_server);
  ExpectExactlyOnceInOrder(t.to_client);
  const ConnectionStats stats = *t.client.Stats(t.client_conn);
  EXPECT_GT(stats.packets_lost, 0u);
  EXPECT_GT(stats.fragments_retransmitted, 0u);
  EXPECT_EQ(t.dead_events, 0);
  EXPECT_GT(t.sim.net().counters().dropped_loss, 0u);
}

TEST_P(LossySeedTest, ThirtyPercentBurstyLossOrderedExactlyOnce) {
  const uint64_t seed = GetParam();
  Transfer t(seed);
  // Gilbert-Elliott: bursts of mean length 4 (bad->good 0.25), mean loss
  // p_gb / (p_gb + p_bg) = 0.107 / 0.357 = 30%.
  SimImpairment bursty;
  bursty.gilbert_elliott = true;
  bursty.ge_good_to_bad = 0.107;
  bursty.ge_bad_to_good = 0.25;
  bursty.delay = milliseconds(10);
  bursty.jitter = milliseconds(2);
  t.sim.SetLink(kClient, kServer, bursty);
  t.to_server.sizes = MessageSizes(seed * 10 + 3, 80);
  t.to_client.sizes = MessageSizes(seed * 10 + 4, 80);
  ASSERT_TRUE(t.Run()) << t.Describe();
  ExpectExactlyOnceInOrder(t.to_server);
  ExpectExactlyOnceInOrder(t.to_client);
  const auto& net = t.sim.net().counters();
  const double loss = double(net.dropped_burst) / double(net.datagrams_sent);
  EXPECT_GT(loss, 0.2);
  EXPECT_LT(loss, 0.4);
  EXPECT_EQ(t.dead_events, 0);
}

TEST_P(LossySeedTest, ReorderingAndDuplicationOrderedExactlyOnce) {
  const uint64_t seed = GetParam();
  Transfer t(seed);
  SimImpairment messy;
  messy.loss_probability = 0.05;
  messy.delay = milliseconds(10);
  messy.jitter = milliseconds(8);  // jitter alone reorders
  messy.reorder_probability = 0.1;
  messy.reorder_delay = milliseconds(25);
  messy.duplicate_probability = 0.1;
  t.sim.SetLink(kClient, kServer, messy);
  t.to_server.sizes = MessageSizes(seed * 10 + 5, 100);
  t.to_client.sizes = MessageSizes(seed * 10 + 6, 100);
  ASSERT_TRUE(t.Run()) << t.Describe();
  ExpectExactlyOnceInOrder(t.to_server);
  ExpectExactlyOnceInOrder(t.to_client);
  const ConnectionStats stats = *t.server.Stats(t.server_conn);
  EXPECT_GT(stats.duplicate_packets, 0u);
  EXPECT_GT(t.sim.net().counters().datagrams_reordered, 0u);
}

TEST_P(LossySeedTest, UnorderedChannelDeliversEverythingExactlyOnce) {
  const uint64_t seed = GetParam();
  Transfer t(seed);
  t.channel = 1;  // reliable-unordered in the default channel list
  SimImpairment messy;
  messy.loss_probability = 0.15;
  messy.delay = milliseconds(10);
  messy.jitter = milliseconds(5);
  messy.reorder_probability = 0.05;
  messy.reorder_delay = milliseconds(20);
  messy.duplicate_probability = 0.05;
  t.sim.SetLink(kClient, kServer, messy);
  t.to_server.sizes = MessageSizes(seed * 10 + 7, 150);
  t.to_client.sizes = MessageSizes(seed * 10 + 8, 150);
  ASSERT_TRUE(t.Run()) << t.Describe();
  ExpectExactlyOnce(t.to_server);
  ExpectExactlyOnce(t.to_client);
  // Unordered really is: with loss, something overtook something.
  bool overtaken = false;
  for (size_t i = 1; i < t.to_server.received.size(); ++i) {
    overtaken |= t.to_server.received[i] < t.to_server.received[i - 1];
  }
  EXPECT_TRUE(overtaken);
}

INSTANTIATE_TEST_SUITE_P(Seeds, LossySeedTest, ::testing::Values(1, 2, 3));

TEST(RudpSimTest, PacketNumbersWrapAt16And32Bits) {
  for (const uint64_t start :
       {uint64_t{65536 - 300}, uint64_t{(1ull << 32) - 300}}) {
    SCOPED_TRACE(start);
    HostOptions o = SimOptions();
    o.connection.initial_packet_number = start;
    Transfer t(start, o);
    SimImpairment lossy;
    lossy.loss_probability = 0.1;
    lossy.delay = milliseconds(5);
    lossy.jitter = milliseconds(3);
    t.sim.SetLink(kClient, kServer, lossy);
    // Enough packets to cross the boundary several times over.
    t.to_server.sizes = std::vector<size_t>(1500, 1000);
    t.to_client.sizes = std::vector<size_t>(200, 50);
    ASSERT_TRUE(t.Run()) << t.Describe();
    ExpectExactlyOnceInOrder(t.to_server);
    ExpectExactlyOnceInOrder(t.to_client);
    const ConnectionStats stats = *t.client.Stats(t.client_conn);
    EXPECT_GT(stats.packets_sent, 1000u);
    EXPECT_EQ(stats.drops[size_t(DropReason::kForgedAck)], 0u);
    EXPECT_EQ(stats.total_drops(), 0u);
  }
}

TEST(RudpSimTest, UnreliableSequencedNeverGoesBackwards) {
  Transfer t(5);
  SimImpairment messy;
  messy.loss_probability = 0.2;
  messy.delay = milliseconds(10);
  messy.jitter = milliseconds(10);
  messy.duplicate_probability = 0.1;
  t.sim.SetLink(kClient, kServer, messy);
  std::vector<uint64_t> got;
  size_t sent = 0;
  t.sim.on_event = [&](Host& host, const Event& e) {
    if (&host == &t.client && e.type == EventType::kConnected) {
      t.client_connected = true;
    }
    if (&host == &t.server && e.type == EventType::kMessage && e.channel == 2) {
      got.push_back(CheckPatternMessage(e.message));
    }
  };
  t.client_conn = *t.client.Connect(kServer, t.sim.now());
  ASSERT_TRUE(t.sim.RunUntil([&] { return t.client_connected; }, seconds(20)))
      << t.sim.failure();
  // 500 messages, one every 2 ms.
  ASSERT_TRUE(t.sim.RunUntil(
      [&] {
        if (sent < 500 && t.sim.now().nanos() / 2000000 > int64_t(sent)) {
          const auto m = PatternMessage(sent, 100);
          if (t.client.Send(t.client_conn, 2, m, t.sim.now()) ==
              SendResult::kOk) {
            ++sent;
          }
        }
        return sent == 500 && t.sim.now().nanos() > 3'000'000'000;
      },
      seconds(10)));
  ASSERT_GT(got.size(), 250u);  // most arrive
  ASSERT_LT(got.size(), 500u);  // some are lost and stay lost
  for (size_t i = 1; i < got.size(); ++i) {
    ASSERT_GT(got[i], got[i - 1]) << "stale or duplicate delivered";
  }
}

// Liveness: heartbeats every 100 ms, then the link goes dead. The detector
// must declare the peer dead after the cut, not before, and within a bound
// derived from phi: elapsed = mean + z(phi) * sigma with mean <= one
// heartbeat and sigma <= half of one, z(8) = 5.61, so at most ~3.9
// heartbeats after the last arrival.
TEST(RudpSimTest, DeadPeerDeclaredWithinExpectedHeartbeats) {
  HostOptions o = SimOptions();
  o.connection.heartbeat_interval = milliseconds(100);
  o.connection.failure_detector.threshold = 8;
  o.connection.failure_detector.min_std_dev = milliseconds(10);
  o.connection.idle_timeout = seconds(60);
  Transfer t(9, o);
  SimImpairment link;
  link.delay = milliseconds(5);
  link.jitter = milliseconds(1);
  t.sim.SetLink(kClient, kServer, link);
  std::optional<Timestamp> dead_at;
  std::optional<CloseReason> closed;
  bool suspected = false;
  t.sim.on_event = [&](Host& host, const Event& e) {
    if (&host != &t.client) return;
    if (e.type == EventType::kConnected) t.client_connected = true;
    if (e.type == EventType::kPeerSuspected) suspected = true;
    if (e.type == EventType::kPeerDead) dead_at = t.sim.now();
    if (e.type == EventType::kClosed) closed = e.reason;
  };
  t.client_conn = *t.client.Connect(kServer, t.sim.now());
  ASSERT_TRUE(t.sim.RunUntil([&] { return t.client_connected; }, seconds(5)));
  // Ten seconds of idle heartbeats: no suspicion.
  t.sim.RunFor(seconds(10));
  EXPECT_FALSE(dead_at.has_value());
  EXPECT_FALSE(suspected);
  const uint64_t pings = t.client.Stats(t.client_conn)->keepalive_pings;
  EXPECT_GE(pings, 90u);  // one per interval
  EXPECT_LE(pings, 110u);
  // Cut the server -> client direction.
  SimImpairment dead = link;
  dead.loss_probability = 1.0;
  ASSERT_TRUE(t.sim.net().SetLinkImpairment(kServer, kClient, dead).ok());
  const Timestamp cut = t.sim.now();
  ASSERT_TRUE(t.sim.RunUntil([&] { return dead_at.has_value(); }, seconds(10)))
      << t.sim.failure();
  const double heartbeats = double((*dead_at - cut).count()) / 1e8;
  EXPECT_GT(heartbeats, 0.5);
  EXPECT_LT(heartbeats, 4.5);
  EXPECT_TRUE(suspected);  // a probe went out first
  t.sim.RunFor(milliseconds(10));
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(*closed, CloseReason::kPeerDead);
}

TEST(RudpSimTest, IdleTimeoutClosesSilently) {
  HostOptions o = SimOptions();
  o.connection.heartbeat_interval = Duration::zero();
  o.connection.failure_detection = false;
  o.connection.idle_timeout = seconds(2);
  Transfer t(11, o);
  SimImpairment link;
  link.delay = milliseconds(5);
  t.sim.SetLink(kClient, kServer, link);
  std::optional<Timestamp> client_closed_at, server_closed_at;
  std::optional<CloseReason> reason;
  std::optional<Timestamp> last_message_at;
  t.sim.on_event = [&](Host& host, const Event& e) {
    if (e.type == EventType::kConnected && &host == &t.client) {
      t.client_connected = true;
    }
    if (e.type == EventType::kMessage) last_message_at = t.sim.now();
    if (e.type == EventType::kClosed) {
      (&host == &t.client ? client_closed_at : server_closed_at) = t.sim.now();
      reason = e.reason;
    }
  };
  t.client_conn = *t.client.Connect(kServer, t.sim.now());
  ASSERT_TRUE(t.sim.RunUntil([&] { return t.client_connected; }, seconds(5)));
  const auto m = PatternMessage(0, 64);
  ASSERT_EQ(t.client.Send(t.client_conn, 0, m, t.sim.now()), SendResult::kOk);
  ASSERT_TRUE(t.sim.RunUntil(
      [&] {
        return client_closed_at.has_value() && server_closed_at.has_value();
      },
      seconds(10)))
      << t.sim.failure();
  ASSERT_TRUE(last_message_at.has_value());
  EXPECT_EQ(*reason, CloseReason::kIdleTimeout);
  // Closed 2 s after the last exchange (the server's ACK is the client's
  // last packet in, 5 ms after the message arrived), not later.
  const double client_idle_s =
      double((*client_closed_at - *last_message_at).count()) / 1e9;
  EXPECT_GE(client_idle_s, 2.0);
  EXPECT_LT(client_idle_s, 2.02);
  EXPECT_EQ(t.client.connection_count(), 0u);
  EXPECT_EQ(t.server.connection_count(), 0u);
}

TEST(RudpSimTest, GracefulCloseDeliversEverythingFirst) {
  HostOptions o = SimOptions();
  // NewReno at 10% loss moves ~100 fragments/s here; the 1 MiB message
  // alone needs ~8 s, so linger long enough.
  o.connection.close_linger = seconds(60);
  Transfer t(13, o);
  SimImpairment lossy;
  lossy.loss_probability = 0.1;
  lossy.delay = milliseconds(10);
  t.sim.SetLink(kClient, kServer, lossy);
  t.to_server.sizes = MessageSizes(13, 60);
  bool close_called = false;
  ASSERT_TRUE(t.sim.RunUntil(
      [&] {
        if (!t.client_conn.valid()) {
          t.client_conn = *t.client.Connect(kServer, t.sim.now());
        }
        t.Pump();
        if (t.to_server.next_to_send == t.to_server.sizes.size() &&
            !close_called) {
          EXPECT_TRUE(t.client.Close(t.client_conn, t.sim.now()).ok());
          close_called = true;
          // Closing refuses new messages at once.
          EXPECT_EQ(t.client.Send(t.client_conn, 0, PatternMessage(0, 10),
                                  t.sim.now()),
                    SendResult::kNotConnected);
        }
        return t.client_closed.has_value() && t.server_closed.has_value();
      },
      seconds(120)))
      << t.Describe();
  ExpectExactlyOnceInOrder(t.to_server);
  EXPECT_EQ(t.to_server.received.size(), 60u) << t.Describe();
  EXPECT_EQ(*t.client_closed, CloseReason::kLocal);
  EXPECT_EQ(*t.server_closed, CloseReason::kPeer);
  EXPECT_EQ(t.client.connection_count(), 0u);
  EXPECT_EQ(t.server.connection_count(), 0u);
}

TEST(RudpSimTest, HandshakeSurvivesLossAndUsesTheCookie) {
  Transfer t(17);
  SimImpairment lossy;
  lossy.loss_probability = 0.5;
  lossy.delay = milliseconds(10);
  t.sim.SetLink(kClient, kServer, lossy);
  t.to_server.sizes = {100, 200};
  t.to_client.sizes = {300};
  ASSERT_TRUE(t.Run(seconds(60))) << t.sim.failure();
  EXPECT_GE(t.server.stats().retries_sent, 1u);
  EXPECT_EQ(t.server.stats().connections_accepted, 1u);
  // The stateless replies never exceed what unvalidated sources sent.
  EXPECT_LE(t.server.stats().bytes_sent_stateless,
            t.server.stats().bytes_received_unvalidated);
}

// The server answers every token-less INITIAL with a RETRY, so a client
// that retransmitted its INITIAL gets two, and a real driver sends its
// next INITIAL between the two datagrams of one receive batch. The second
// RETRY must neither pair with that INITIAL for an RTT sample (it was ~0:
// min_rtt stuck at 1 ns for the rest of the connection) nor trigger one
// more INITIAL.
TEST(RudpSimTest, DuplicateRetryGivesNoRttSampleAndNoExtraInitial) {
  HostOptions o = SimOptions();
  auto client = *Host::Create(o);
  auto server = *Host::Create(o);
  std::array<std::byte, 2048> buf;
  Timestamp now = Timestamp::Zero() + seconds(1);
  const ConnectionHandle c = *client->Connect(kServer, now);
  auto t = client->PollTransmit(buf, now);  // INITIAL #1
  ASSERT_TRUE(t.has_value());
  std::vector<std::byte> initial(buf.begin(), buf.begin() + ptrdiff_t(t->size));
  now += milliseconds(250);  // lost; the client retransmits
  client->OnTimeout(now);
  t = client->PollTransmit(buf, now);
  ASSERT_TRUE(t.has_value());
  std::vector<std::byte> initial2(buf.begin(),
                                  buf.begin() + ptrdiff_t(t->size));
  // Both arrive late, together; the server answers each with a RETRY.
  now += milliseconds(10);
  std::vector<std::vector<std::byte>> retries;
  for (const auto& i : {initial, initial2}) {
    server->OnDatagram(i, kClient, now);
    while (auto r = server->PollTransmit(buf, now)) {
      retries.emplace_back(buf.begin(), buf.begin() + ptrdiff_t(r->size));
    }
  }
  ASSERT_EQ(retries.size(), 2u);
  now += milliseconds(10);
  int initials_sent = 0;
  for (const auto& r : retries) {  // one batch: same `now`, sends between
    client->OnDatagram(r, kServer, now);
    while (client->PollTransmit(buf, now)) ++initials_sent;
  }
  EXPECT_EQ(initials_sent, 1);
  const ConnectionStats s = *client->Stats(c);
  EXPECT_GE(s.min_rtt, milliseconds(1)) << s.min_rtt.count() << " ns";
}

TEST(RudpSimTest, HandshakeTimesOutWithoutAServer) {
  HostOptions o = SimOptions();
  o.connection.handshake_timeout = seconds(3);
  SimHarness sim(19);
  Host& client = sim.AddHost(kClient, o);
  ASSERT_TRUE(sim.net().AddNode(kServer).ok());  // nobody answers
  std::optional<CloseReason> failed;
  Timestamp failed_at;
  sim.on_event = [&](Host&, const Event& e) {
    if (e.type == EventType::kConnectFailed) {
      failed = e.reason;
      failed_at = sim.now();
    }
  };
  ASSERT_TRUE(client.Connect(kServer, sim.now()).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return failed.has_value(); }, seconds(10)));
  EXPECT_EQ(*failed, CloseReason::kHandshakeTimeout);
  EXPECT_EQ(failed_at.nanos(), 3'000'000'000);
}

TEST(RudpSimTest, ChannelMismatchIsRejected) {
  HostOptions a = SimOptions();
  HostOptions b = SimOptions();
  b.connection.channels = {ChannelType::kReliableOrdered};
  SimHarness sim(23);
  Host& client = sim.AddHost(kClient, a);
  sim.AddHost(kServer, b);
  std::optional<CloseReason> failed;
  sim.on_event = [&](Host&, const Event& e) {
    if (e.type == EventType::kConnectFailed) failed = e.reason;
  };
  ASSERT_TRUE(client.Connect(kServer, sim.now()).ok());
  ASSERT_TRUE(sim.RunUntil([&] { return failed.has_value(); }, seconds(10)));
  EXPECT_EQ(*failed, CloseReason::kChannelMismatch);
}

// A reader that stops reading: the sender fills the window and its own
// buffer, Send() says kWouldBlock, memory stays where it was, and everything
// flows again once the reader resumes.
TEST(RudpSimTest, FlowControlHoldsBackAStalledReader) {
  HostOptions o = SimOptions();
  o.connection.receive_window_bytes = 256 << 10;
  o.connection.send_buffer_bytes = 256 << 10;
  o.connection.max_message_bytes = 64 << 10;
  Transfer t(29, o);
  SimImpairment link;
  link.delay = milliseconds(5);
  t.sim.SetLink(kClient, kServer, link);
  t.to_server.sizes = std::vector<size_t>(300, 10000);  // 3 MB
  bool reader_paused = false;
  t.sim.paused = [&](const Host& h) {
    return reader_paused && &h == &t.server;
  };
  bool writable_seen = false;
  auto inner = t.sim.on_event;
  t.sim.on_event = [&](Host& host, const Event& e) {
    if (e.type == EventType::kWritable) writable_seen = true;
    inner(host, e);
  };
  t.client_conn = *t.client.Connect(kServer, t.sim.now());
  ASSERT_TRUE(
      t.sim.RunUntil([&] { return t.server_conn.valid(); }, seconds(5)));
  reader_paused = true;
  const size_t memory_before = t.server.memory_bytes();
  t.sim.RunUntil(
      [&] {
        t.Pump();
        return false;
      },
      seconds(5));
  // The window and the sender's buffer are full: nothing more moves.
  const ConnectionStats sender = *t.client.Stats(t.client_conn);
  EXPECT_GT(sender.send_would_block, 0u);
  EXPECT_GT(sender.flow_control_blocked, 0u);
  EXPECT_LT(t.to_server.next_to_send, 300u);
  EXPECT_LE(sender.fragment_bytes_sent, (256u << 10) + 10000u);
  EXPECT_EQ(t.server.memory_bytes(), memory_before);
  reader_paused = false;
  ASSERT_TRUE(t.sim.RunUntil(
      [&] {
        t.Pump();
        return t.to_server.complete();
      },
      seconds(120)))
      << t.sim.failure();
  ExpectExactlyOnceInOrder(t.to_server);
  EXPECT_TRUE(writable_seen);
}

// Fifty clients, each its own host, all on one server host (one socket).
TEST(RudpSimTest, ManyConnectionsOverOneHost) {
  SimHarness sim(31);
  HostOptions o = SimOptions();
  o.connection.receive_window_bytes = 64 << 10;
  o.connection.send_buffer_bytes = 64 << 10;
  o.connection.max_message_bytes = 16 << 10;
  Host& server = sim.AddHost(kServer, o);
  std::vector<Host*> clients;
  std::vector<ConnectionHandle> handles;
  std::map<const Host*, size_t> index;
  SimImpairment lossy;
  lossy.loss_probability = 0.05;
  lossy.delay = milliseconds(3);
  for (int i = 0; i < 50; ++i) {
    const Endpoint ep = Endpoint::Loopback(uint16_t(3000 + i));
    clients.push_back(&sim.AddHost(ep, o));
    index[clients.back()] = size_t(i);
    sim.SetLink(ep, kServer, lossy);
  }
  std::map<uint32_t, std::vector<uint64_t>> received;  // by server conn
  std::vector<int> sent(50, 0);
  std::vector<bool> connected(50, false);
  sim.on_event = [&](Host& host, const Event& e) {
    if (&host == &server && e.type == EventType::kMessage) {
      received[e.connection.index].push_back(CheckPatternMessage(e.message));
    }
    if (&host != &server && e.type == EventType::kConnected) {
      connected[index[&host]] = true;
    }
  };
  for (int i = 0; i < 50; ++i) {
    handles.push_back(*clients[size_t(i)]->Connect(kServer, sim.now()));
  }
  ASSERT_TRUE(sim.RunUntil(
      [&] {
        for (size_t i = 0; i < 50; ++i) {
          while (connected[i] && sent[i] < 20 &&
                 clients[i]->Send(handles[i], 0, PatternMessage(sent[i], 3000),
                                  sim.now()) == SendResult::kOk) {
            ++sent[i];
          }
        }
        size_t total = 0;
        for (const auto& [k, v] : received) total += v.size();
        return total == 50 * 20;
      },
      seconds(60)))
      << sim.failure();
  EXPECT_EQ(server.connection_count(), 50u);
  EXPECT_EQ(received.size(), 50u);
  for (const auto& [k, v] : received) {
    ASSERT_EQ(v.size(), 20u);
    for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], i);
  }
}

// RFC 9002 §6.2.1 with an immediate-ACK request: when the newest packet
// carried a PING (the window-filling packet of a flight does), the peer
// answers at once, so the probe timeout leaves out max_ack_delay; when it
// did not (a lone small message), the peer may sit on it for
// max_ack_delay and the probe waits for that too.
struct PtoProbe {
  Duration gap{0};       // last packet of the flight -> first probe
  Duration expected{0};  // srtt + max(4 rttvar, granularity) before it
};

PtoProbe MeasureFirstProbe(size_t message_bytes, size_t messages) {
  HostOptions o = SimOptions();
  o.connection.max_ack_delay = milliseconds(25);
  o.connection.heartbeat_interval = Duration::zero();
  o.connection.failure_detection = false;
  o.connection.idle_timeout = Duration::zero();
  SimHarness sim(77);
  Host& client = sim.AddHost(kClient, o);
  Host& server = sim.AddHost(kServer, o);
  SimImpairment link;
  link.delay = milliseconds(5);
  sim.SetLink(kClient, kServer, link);
  bool up = false, blackout = false;
  int echoes = 0;
  ConnectionHandle c;
  Timestamp last_client_send, first_probe = Timestamp::Never();
  sim.on_send = [&](const Endpoint& from, const Endpoint&,
                    std::vector<std::byte>& bytes) {
    if (!blackout) return;
    if (from == kClient) {
      if (client.Stats(c)->probe_timeouts == 0) {
        last_client_send = sim.now();
      } else if (first_probe.is_never()) {
        first_probe = sim.now();
      }
    }
    bytes.clear();  // nothing gets through any more
  };
  const std::vector<std::byte> small(64, std::byte{1});
  sim.on_event = [&](Host& h, const Event& e) {
    if (&h == &client && e.type == EventType::kConnected) up = true;
    if (&h == &server && e.type == EventType::kMessage) {
      server.Send(e.connection, 0, small, sim.now());  // echo: RTT samples
    }
    if (&h == &client && e.type == EventType::kMessage && ++echoes < 30) {
      client.Send(c, 0, small, sim.now());
    }
  };
  c = *client.Connect(kServer, sim.now());
  EXPECT_TRUE(sim.RunUntil([&] { return up; }, seconds(5)));
  client.Send(c, 0, small, sim.now());
  EXPECT_TRUE(sim.RunUntil([&] { return echoes >= 30; }, seconds(30)));
  sim.RunFor(milliseconds(100));  // every ACK is in
  const ConnectionStats before = *client.Stats(c);
  blackout = true;
  const std::vector<std::byte> m(message_bytes, std::byte{2});
  for (size_t i = 0; i < messages; ++i) client.Send(c, 0, m, sim.now());
  EXPECT_TRUE(
      sim.RunUntil([&] { return !first_probe.is_never(); }, seconds(5)));
  return {first_probe - last_client_send,
          before.smoothed_rtt +
              std::max(before.rttvar * 4, o.connection.timer_granularity)};
}

TEST(RudpSimTest, ProbeTimeoutSkipsAckDelayAfterAnImmediateAckRequest) {
  // 64 KiB is more than the initial window: the flight's last packet fills
  // the window and carries a PING.
  const PtoProbe window_limited = MeasureFirstProbe(64 << 10, 1);
  EXPECT_GE(window_limited.gap, window_limited.expected);
  EXPECT_LT(window_limited.gap, window_limited.expected + milliseconds(1));
  // One small message: no PING, the peer may delay its ACK by 25 ms.
  const PtoProbe lone = MeasureFirstProbe(64, 1);
  EXPECT_GE(lone.gap, lone.expected + milliseconds(25));
  EXPECT_LT(lone.gap, lone.expected + milliseconds(26));
}

// pad_full_packets: every packet with a full fragment is exactly one
// datagram size (what UDP GSO needs); the data still arrives intact.
TEST(RudpSimTest, PaddedTrainsAreOneDatagramSize) {
  for (bool pad : {false, true}) {
    HostOptions o = SimOptions();
    o.connection.pad_full_packets = pad;
    Transfer t(91, o);
    SimImpairment link;
    link.delay = milliseconds(2);
    link.loss_probability = 0.02;
    t.sim.SetLink(kClient, kServer, link);
    std::map<size_t, int> sizes;  // client datagrams by size
    t.sim.on_send = [&](const Endpoint& from, const Endpoint&,
                        std::vector<std::byte>& bytes) {
      if (from == kClient) ++sizes[bytes.size()];
    };
    t.to_server.sizes = std::vector<size_t>(20, 64 << 10);
    t.to_client.sizes = {100};
    ASSERT_TRUE(t.Run()) << t.Describe();
    ExpectExactlyOnceInOrder(t.to_server);
    int full = 0, between = 0;
    for (const auto& [size, n] : sizes) {
      if (size == o.connection.max_datagram_bytes) {
        full += n;
      } else if (size > 1000 && size != wire::kMinInitialBytes) {
        between += n;  // a data packet of another size: breaks a GSO train
      }
    }
    if (pad) {
      EXPECT_EQ(between, 0);
      EXPECT_GE(full, 20 * 51);  // 51 full 1280-byte fragments per message
    } else {
      EXPECT_GT(between, 20 * 50);
    }
  }
}

// The same seed gives the same run, packet for packet.
TEST(RudpSimTest, RunsReproduce) {
  auto run = [](uint64_t seed) {
    Transfer t(seed);
    SimImpairment lossy;
    lossy.loss_probability = 0.2;
    lossy.delay = milliseconds(10);
    lossy.jitter = milliseconds(5);
    t.sim.SetLink(kClient, kServer, lossy);
    t.to_server.sizes = MessageSizes(seed, 40);
    t.to_client.sizes = MessageSizes(seed + 1, 40);
    EXPECT_TRUE(t.Run()) << t.Describe();
    const ConnectionStats s = *t.client.Stats(t.client_conn);
    return std::vector<uint64_t>{s.packets_sent, s.packets_lost,
                                 s.fragments_retransmitted,
                                 uint64_t(t.sim.now().nanos())};
  };
  EXPECT_EQ(run(41), run(41));
  EXPECT_NE(run(41), run(42));
}

}  // namespace
}  // namespace ringlab::rudp
