// rudp on real UDP sockets over loopback, on every transport preset, with
// the in-process impairment (loss, delay, jitter, reordering, duplication):
// the same exactly-once checks as the SimNetwork tests. Presets the kernel
// cannot run are skipped with the Loop's reason.
#include "udp/loop_endpoint.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "transport/loop.h"
#include "transport/preset.h"
#include "udp/sim_harness.h"

namespace ringlab::rudp {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::CheckPatternMessage;
using testing::PatternMessage;

LoopEndpointOptions EndpointOptions(double loss, uint64_t seed) {
  LoopEndpointOptions o;
  o.host.connection.initial_rtt = milliseconds(10);
  o.host.connection.max_ack_delay = milliseconds(1);
  o.host.connection.receive_window_bytes = 1 << 20;
  o.host.connection.send_buffer_bytes = 1 << 20;
  o.host.connection.max_message_bytes = 256 << 10;
  o.host.seed = seed;
  transport::SimImpairment i;
  i.loss_probability = loss;
  i.delay = std::chrono::microseconds(300);
  i.jitter = std::chrono::microseconds(400);  // reorders
  i.reorder_probability = 0.02;
  i.reorder_delay = milliseconds(2);
  i.duplicate_probability = 0.02;
  o.impairment = i;
  o.impairment_seed = seed;
  return o;
}

// Runs the loop until `done` or a (generous, failure-only) real-time limit.
bool RunUntil(transport::Loop& loop, const std::function<bool()>& done,
              Duration limit = seconds(60)) {
  const Timestamp end = MonotonicNow() + limit;
  while (!done()) {
    if (MonotonicNow() > end) return false;
    if (loop.RunOnce(milliseconds(5)) < 0) return false;
  }
  return true;
}

class RudpLoopbackTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    transport::LoopOptions options;
    options.backend = GetParam();
    auto loop = transport::Loop::Create(options);
    if (!loop.ok()) {
      GTEST_SKIP() << GetParam() << " unavailable here: " << loop.status();
    }
    loop_ = std::move(*loop);
  }
  std::unique_ptr<transport::Loop> loop_;
};

struct Sizes {
  std::vector<size_t> sizes;
  explicit Sizes(uint64_t seed, size_t count) {
    transport::SimRandom r(seed);
    for (size_t i = 0; i < count; ++i) {
      sizes.push_back(i % 50 == 25 ? 200000
                                   : 8 + r.Uniform(i % 3 ? 1200 : 9000));
    }
  }
};

TEST_P(RudpLoopbackTest, ExactlyOnceUnderImpairmentBothWays) {
  auto server = LoopEndpoint::Create(loop_.get(), EndpointOptions(0.10, 2));
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = LoopEndpoint::Create(loop_.get(), EndpointOptions(0.10, 3));
  ASSERT_TRUE(client.ok()) << client.status();
  const Sizes up(5, 150), down(6, 150);
  std::vector<uint64_t> got_up, got_down, got_unordered;
  size_t bad = 0;
  ConnectionHandle server_conn, client_conn;
  bool client_up = false;
  size_t sent_up = 0, sent_down = 0, sent_unordered = 0;
  auto receive = [&](std::vector<uint64_t>& into,
                     const std::vector<size_t>& sizes, const Event& e) {
    const uint64_t n = CheckPatternMessage(e.message);
    if (n >= sizes.size() || e.message.size() != sizes[n]) {
      ++bad;
      return;
    }
    into.push_back(n);
  };
  (*server)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kConnected) server_conn = e.connection;
    if (e.type == EventType::kMessage && e.channel == 0)
      receive(got_up, up.sizes, e);
    if (e.type == EventType::kMessage && e.channel == 1) {
      receive(got_unordered, up.sizes, e);
    }
  });
  (*client)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kConnected) client_up = true;
    if (e.type == EventType::kMessage && e.channel == 0) {
      receive(got_down, down.sizes, e);
    }
  });
  client_conn = *(*client)->Connect((*server)->local_endpoint());
  auto pump = [&] {
    while (client_up && sent_up < up.sizes.size() &&
           (*client)->Send(client_conn, 0,
                           PatternMessage(sent_up, up.sizes[sent_up])) ==
               SendResult::kOk) {
      ++sent_up;
    }
    while (client_up && sent_unordered < 100 &&
           (*client)->Send(
               client_conn, 1,
               PatternMessage(sent_unordered, up.sizes[sent_unordered])) ==
               SendResult::kOk) {
      ++sent_unordered;
    }
    while (server_conn.valid() && sent_down < down.sizes.size() &&
           (*server)->Send(server_conn, 0,
                           PatternMessage(sent_down, down.sizes[sent_down])) ==
               SendResult::kOk) {
      ++sent_down;
    }
  };
  ASSERT_TRUE(RunUntil(*loop_,
                       [&] {
                         pump();
                         return got_up.size() == up.sizes.size() &&
                                got_down.size() == down.sizes.size() &&
                                got_unordered.size() == 100;
                       }))
      << "up " << got_up.size() << " down " << got_down.size() << " unordered "
      << got_unordered.size();
  EXPECT_EQ(bad, 0u);
  for (size_t i = 0; i < got_up.size(); ++i) ASSERT_EQ(got_up[i], i);
  for (size_t i = 0; i < got_down.size(); ++i) ASSERT_EQ(got_down[i], i);
  std::map<uint64_t, int> unordered;
  for (uint64_t n : got_unordered) ++unordered[n];
  EXPECT_EQ(unordered.size(), 100u);
  // The impairment really happened on this path.
  EXPECT_GT((*client)->stats().impairment_dropped, 0u);
  EXPECT_GT((*client)->stats().impairment_duplicated, 0u);
  const ConnectionStats stats = *(*client)->host().Stats(client_conn);
  EXPECT_GT(stats.fragments_retransmitted, 0u);
  EXPECT_EQ((*client)->stats().send_errors, 0u);
}

TEST_P(RudpLoopbackTest, ManyConnectionsShareOneSocket) {
  LoopEndpointOptions o = EndpointOptions(0.05, 7);
  o.host.connection.receive_window_bytes = 128 << 10;
  o.host.connection.send_buffer_bytes = 128 << 10;
  o.host.connection.max_message_bytes = 32 << 10;
  auto server = LoopEndpoint::Create(loop_.get(), o);
  ASSERT_TRUE(server.ok()) << server.status();
  constexpr int kClients = 20;
  std::map<uint32_t, std::vector<uint64_t>> received;
  (*server)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kMessage) {
      received[e.connection.index].push_back(CheckPatternMessage(e.message));
    }
  });
  std::vector<std::unique_ptr<LoopEndpoint>> clients;
  std::vector<ConnectionHandle> handles;
  std::vector<bool> up(kClients, false);
  std::vector<int> sent(kClients, 0);
  for (int i = 0; i < kClients; ++i) {
    o.host.seed = 100 + uint64_t(i);
    o.impairment_seed = 100 + uint64_t(i);
    auto c = LoopEndpoint::Create(loop_.get(), o);
    ASSERT_TRUE(c.ok()) << c.status();
    (*c)->SetEventHandler([&up, i](const Event& e) {
      if (e.type == EventType::kConnected) up[size_t(i)] = true;
    });
    handles.push_back(*(*c)->Connect((*server)->local_endpoint()));
    clients.push_back(std::move(*c));
  }
  ASSERT_TRUE(RunUntil(*loop_, [&] {
    for (size_t i = 0; i < kClients; ++i) {
      while (up[i] && sent[i] < 30 &&
             clients[i]->Send(handles[i], 0, PatternMessage(sent[i], 2000)) ==
                 SendResult::kOk) {
        ++sent[i];
      }
    }
    size_t total = 0;
    for (const auto& [k, v] : received) total += v.size();
    return total == kClients * 30;
  }));
  EXPECT_EQ((*server)->host().connection_count(), size_t(kClients));
  ASSERT_EQ(received.size(), size_t(kClients));
  for (const auto& [k, v] : received) {
    for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], i);
  }
}

// A reply queued by an event handler leaves in the same iteration: with
// congestion control off there is no pacing timer to mask a driver that
// forgot it, so each round trip would wait for an ACK-delay timer.
TEST_P(RudpLoopbackTest, RepliesFromHandlersNeedNoTimer) {
  LoopEndpointOptions o;
  o.host.connection.congestion_control = false;
  o.host.connection.pacing = false;
  o.host.connection.max_ack_delay = milliseconds(20);
  auto server = LoopEndpoint::Create(loop_.get(), o);
  auto client = LoopEndpoint::Create(loop_.get(), o);
  ASSERT_TRUE(server.ok() && client.ok());
  const std::vector<std::byte> ping(64, std::byte{1});
  int round_trips = 0;
  ConnectionHandle c;
  (*server)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kMessage) (*server)->Send(e.connection, 0, ping);
  });
  (*client)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kConnected) (*client)->Send(c, 0, ping);
    if (e.type == EventType::kMessage && ++round_trips < 200) {
      (*client)->Send(c, 0, ping);
    }
  });
  c = *(*client)->Connect((*server)->local_endpoint());
  ASSERT_TRUE(RunUntil(*loop_, [&] { return round_trips >= 200; }));
  // Heartbeats and the handshake may need a few; one per message would be
  // hundreds.
  EXPECT_LT((*client)->stats().timer_wakeups + (*server)->stats().timer_wakeups,
            20u);
}

// Without congestion control the sender is limited only by the driver: it
// must stop at the socket's send queue, not hand the Loop datagrams it
// refuses (each refusal is a datagram the Host counted as sent, lost
// before it left: the first version lost two of every three that way).
// With GSO on, full data packets leave in trains of one size.
TEST_P(RudpLoopbackTest, BulkWithoutCongestionControlStaysWithinTheSendQueue) {
  LoopEndpointOptions o;
  o.host.connection.congestion_control = false;
  o.host.connection.pacing = false;
  o.host.connection.initial_rtt = milliseconds(10);
  o.host.connection.max_ack_delay = milliseconds(1);
  o.host.connection.receive_window_bytes = 2 << 20;
  o.host.connection.send_buffer_bytes = 2 << 20;
  o.host.connection.max_message_bytes = 64 << 10;
  o.send_queue_limit_bytes = 64 << 10;  // far below the window: it binds
  o.segmentation_offload = true;        // on every preset, to check the trains
  auto server = LoopEndpoint::Create(loop_.get(), o);
  auto client = LoopEndpoint::Create(loop_.get(), o);
  ASSERT_TRUE(server.ok() && client.ok());
  constexpr size_t kMessages = 48;  // 3 MiB
  std::vector<uint64_t> got;
  (*server)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kMessage)
      got.push_back(CheckPatternMessage(e.message));
  });
  bool up = false;
  (*client)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kConnected) up = true;
  });
  const ConnectionHandle c = *(*client)->Connect((*server)->local_endpoint());
  const transport::LoopCounters before = loop_->counters();
  size_t sent = 0;
  ASSERT_TRUE(RunUntil(*loop_, [&] {
    while (up && sent < kMessages &&
           (*client)->Send(c, 0, PatternMessage(sent, 64 << 10)) ==
               SendResult::kOk) {
      ++sent;
    }
    return got.size() == kMessages;
  })) << got.size();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], i);
  const transport::LoopCounters d = loop_->counters().Delta(before);
  EXPECT_EQ((*client)->stats().send_errors, 0u);
  EXPECT_EQ(d.send_refused_queue_full, 0u);
  EXPECT_GT((*client)->stats().send_queue_full, 0u);  // the limit was reached
  if (d.gso_refused == 0) {
    // Trains, not single datagrams: several segments per GSO send.
    EXPECT_GT(d.gso_datagrams, 4 * d.gso_sends) << d.gso_sends;
  }
}

// The kernel's own drops (a full socket receive queue) reach the stats
// through SO_RXQ_OVFL: the server's Loop does not run while the client
// bursts into its small receive buffer.
TEST_P(RudpLoopbackTest, KernelReceiveQueueDropsAreCounted) {
  transport::LoopOptions lo;
  lo.backend = GetParam();
  auto server_loop = transport::Loop::Create(lo);
  ASSERT_TRUE(server_loop.ok()) << server_loop.status();
  LoopEndpointOptions o;
  o.host.connection.congestion_control = false;
  o.host.connection.pacing = false;
  o.host.connection.initial_rtt = milliseconds(10);
  o.host.connection.receive_window_bytes = 4 << 20;
  o.host.connection.send_buffer_bytes = 4 << 20;
  o.host.connection.max_message_bytes = 256 << 10;
  LoopEndpointOptions so = o;
  so.socket_receive_buffer_bytes = 16 << 10;
  auto server = LoopEndpoint::Create(server_loop->get(), so);
  auto client = LoopEndpoint::Create(loop_.get(), o);
  ASSERT_TRUE(server.ok() && client.ok());
  bool up = false;
  (*client)->SetEventHandler([&](const Event& e) {
    if (e.type == EventType::kConnected) up = true;
  });
  const ConnectionHandle c = *(*client)->Connect((*server)->local_endpoint());
  auto run_both = [&](const std::function<bool()>& done) {
    const Timestamp end = MonotonicNow() + seconds(60);
    while (!done() && MonotonicNow() < end) {
      loop_->RunOnce(Duration::zero());
      (*server_loop)->RunOnce(Duration::zero());
    }
    return done();
  };
  ASSERT_TRUE(run_both([&] { return up; }));
  const std::vector<std::byte> m = PatternMessage(1, 256 << 10);
  for (int i = 0; i < 12; ++i) {
    ASSERT_EQ((*client)->Send(c, 0, m), SendResult::kOk);  // 3 MiB
  }
  // The server sleeps: the burst overflows its socket. The count arrives
  // with the next datagram the server reads.
  for (int i = 0; i < 50; ++i) loop_->RunOnce(milliseconds(1));
  EXPECT_EQ((*server)->stats().kernel_receive_drops, 0u);
  EXPECT_TRUE(
      run_both([&] { return (*server)->stats().kernel_receive_drops > 0; }));
}

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (transport::Preset p : transport::AllPresets()) {
    names.emplace_back(transport::PresetName(p));
  }
  return names;
}

INSTANTIATE_TEST_SUITE_P(Presets, RudpLoopbackTest,
                         ::testing::ValuesIn(PresetNames()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace ringlab::rudp
