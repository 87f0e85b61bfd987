// Client core against our broker core on SimNetwork streams: every QoS end
// to end, keep alive, persistent sessions with redelivery after a network
// failure, the server's Receive Maximum, topic aliases; plus the client's
// keep-alive expiry on its own.
#include "mqtt/client.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mqtt/internal/broker_sim.h"

namespace ringlab::mqtt {
namespace {

using internal::BrokerSim;
using internal::CoreClient;
using Kind = ClientEvent::Kind;
using std::chrono::milliseconds;
using std::chrono::seconds;

ClientOptions Options(Version v, std::string id) {
  ClientOptions o;
  o.version = v;
  o.client_id = std::move(id);
  o.keep_alive_s = 30;
  return o;
}

class ClientVersions : public testing::TestWithParam<Version> {};
INSTANTIATE_TEST_SUITE_P(Versions, ClientVersions,
                         testing::Values(Version::k311, Version::k5),
                         [](const auto& info) {
                           return info.param == Version::k5 ? "v5" : "v311";
                         });

CoreClient& ConnectedClient(BrokerSim& sim, ClientOptions options,
                            bool session_present = false) {
  CoreClient& c = sim.AddCoreClient(std::move(options));
  c.Open();
  sim.RunFor(milliseconds(5));
  std::vector<CoreClient::Event> up = c.Of(Kind::kConnected);
  EXPECT_EQ(up.size(), 1u);
  if (!up.empty()) {
    EXPECT_EQ(up[0].session_present, session_present);
  }
  return c;
}

void SubscribeAndWait(BrokerSim& sim, CoreClient& c, std::string_view filter,
                      uint8_t qos) {
  const size_t before = c.Of(Kind::kSubscribed).size();
  ASSERT_TRUE(c.client.Subscribe(filter, {.max_qos = qos}, sim.now()).ok());
  sim.RunFor(milliseconds(5));
  std::vector<CoreClient::Event> acks = c.Of(Kind::kSubscribed);
  ASSERT_EQ(acks.size(), before + 1);
  EXPECT_EQ(acks.back().codes, std::vector<uint8_t>{qos});
}

TEST_P(ClientVersions, EveryQosEndToEnd) {
  const Version v = GetParam();
  BrokerSim sim;
  CoreClient& sub = ConnectedClient(sim, Options(v, "sub"));
  CoreClient& pub = ConnectedClient(sim, Options(v, "pub"));
  SubscribeAndWait(sim, sub, "t/#", 2);
  for (uint8_t qos = 0; qos <= 2; ++qos) {
    for (int i = 0; i < 10; ++i) {
      const std::string payload = absl::StrCat("q", qos, "-", i);
      ASSERT_TRUE(
          pub.client.Publish("t/x", AsBytes(payload), {.qos = qos}, sim.now())
              .ok());
    }
  }
  sim.RunFor(milliseconds(20));
  std::vector<CoreClient::Event> got = sub.Of(Kind::kMessage);
  ASSERT_EQ(got.size(), 30u);  // QoS 2: exactly once
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].topic, "t/x");
    EXPECT_EQ(got[i].qos, i / 10);
    EXPECT_EQ(got[i].payload, absl::StrCat("q", i / 10, "-", i % 10));  // order
  }
  EXPECT_EQ(pub.Of(Kind::kPublished).size(), 20u);  // QoS 1 and 2 completed
  EXPECT_EQ(pub.client.inflight(), 0u);
  EXPECT_EQ(sim.broker().GetSessionInfo("sub")->inflight, 0u);
}

TEST_P(ClientVersions, UnsubscribeStopsDelivery) {
  const Version v = GetParam();
  BrokerSim sim;
  CoreClient& c = ConnectedClient(sim, Options(v, "c"));
  SubscribeAndWait(sim, c, "a", 0);
  ASSERT_TRUE(c.client.Unsubscribe("a", sim.now()).ok());
  sim.RunFor(milliseconds(5));
  ASSERT_EQ(c.Of(Kind::kUnsubscribed).size(), 1u);
  ASSERT_TRUE(c.client.Publish("a", AsBytes("x"), {}, sim.now()).ok());
  sim.RunFor(milliseconds(5));
  EXPECT_TRUE(c.Of(Kind::kMessage).empty());
}

TEST_P(ClientVersions, KeepAlivePingsKeepTheConnection) {
  const Version v = GetParam();
  BrokerSim sim;
  ClientOptions o = Options(v, "idle");
  o.keep_alive_s = 2;
  CoreClient& c = ConnectedClient(sim, o);
  sim.RunFor(seconds(20));
  EXPECT_GE(c.client.counters().pings, 9u);
  EXPECT_GE(c.Of(Kind::kPong).size(), 9u);
  EXPECT_EQ(sim.broker().counters().keepalive_timeouts, 0u);
  EXPECT_EQ(c.client.state(), Client::State::kConnected);
}

TEST(Client, KeepAliveWithoutPingrespClosesTheConnection) {
  ClientOptions o = Options(Version::k5, "lonely");
  o.keep_alive_s = 5;
  Client c(o);
  Timestamp now = Timestamp::FromNanos(1);
  c.OnTransportConnected(now);
  std::byte out[256];
  ASSERT_GT(c.PollTransmit(out, now), 0u);  // CONNECT
  const std::byte connack[] = {std::byte(0x20), std::byte(3), std::byte(0),
                               std::byte(0), std::byte(0)};
  c.OnBytes(connack, now);
  ASSERT_EQ(c.PollEvent()->kind, Kind::kConnected);
  now = c.NextDeadline();
  EXPECT_EQ(now, Timestamp::FromNanos(1) + seconds(5));
  c.OnTimeout(now);
  EXPECT_EQ(c.PollTransmit(out, now), 2u);  // PINGREQ
  EXPECT_EQ(out[0], std::byte(0xC0));
  now = c.NextDeadline();
  c.OnTimeout(now);  // no PINGRESP within another period
  std::optional<ClientEvent> e = c.PollEvent();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->kind, Kind::kClosed);
  EXPECT_EQ(e->reason, ReasonCode::kKeepAliveTimeout);
}

TEST(Client, RefusedConnection) {
  ClientOptions o = Options(Version::k311, "");
  o.clean_start = false;  // 3.1.1: empty id needs clean session
  BrokerSim sim;
  CoreClient& c = sim.AddCoreClient(o);
  c.Open();
  sim.RunFor(milliseconds(5));
  std::vector<CoreClient::Event> failed = c.Of(Kind::kConnectFailed);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].reason, ReasonCode::kClientIdentifierNotValid);
  EXPECT_EQ(c.Of(Kind::kClosed).size(), 1u);
}

TEST_P(ClientVersions, PersistentSessionSurvivesANetworkFailure) {
  const Version v = GetParam();
  BrokerSim sim;
  ClientOptions so = Options(v, "durable");
  so.clean_start = false;
  so.session_expiry_s = 600;
  CoreClient& sub = ConnectedClient(sim, so);
  SubscribeAndWait(sim, sub, "jobs", 1);
  CoreClient& pub = ConnectedClient(sim, Options(v, "pub"));
  sub.Abort();
  sim.RunFor(milliseconds(5));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(pub.client
                    .Publish("jobs", AsBytes("job" + std::to_string(i)),
                             {.qos = 1}, sim.now())
                    .ok());
  }
  sim.RunFor(milliseconds(5));
  EXPECT_EQ(sim.broker().GetSessionInfo("durable")->queued, 3u);
  sub.Open();  // the same Client core reconnects
  sim.RunFor(milliseconds(10));
  std::vector<CoreClient::Event> up = sub.Of(Kind::kConnected);
  ASSERT_EQ(up.size(), 2u);
  EXPECT_TRUE(up[1].session_present);
  std::vector<CoreClient::Event> got = sub.Of(Kind::kMessage);
  ASSERT_EQ(got.size(), 3u);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(got[i].payload, "job" + std::to_string(i));
  EXPECT_EQ(sim.broker().GetSessionInfo("durable")->inflight, 0u);
}

TEST_P(ClientVersions, UnackedPublishesAreResentWithDup) {
  const Version v = GetParam();
  BrokerSim sim;
  CoreClient& sub = ConnectedClient(sim, Options(v, "sub"));
  SubscribeAndWait(sim, sub, "x", 2);
  ClientOptions po = Options(v, "pub");
  po.clean_start = false;
  po.session_expiry_s = 600;
  CoreClient& pub = ConnectedClient(sim, po);
  // Publish and lose the connection before any ack can come back.
  ASSERT_TRUE(
      pub.client.Publish("x", AsBytes("one"), {.qos = 1}, sim.now()).ok());
  ASSERT_TRUE(
      pub.client.Publish("x", AsBytes("two"), {.qos = 2}, sim.now()).ok());
  std::byte out[4096];
  size_t n;
  while ((n = pub.client.PollTransmit(out, sim.now())) > 0) {
    ASSERT_TRUE(sim.net()
                    .StreamWrite(pub.stream, std::span<const std::byte>(out, n))
                    .ok());
  }
  sim.RunFor(std::chrono::microseconds(60));  // delivered, acks in flight
  pub.Abort();
  sim.RunFor(milliseconds(5));
  EXPECT_EQ(pub.client.inflight(), 2u);
  pub.Open();
  sim.RunFor(milliseconds(10));
  EXPECT_EQ(pub.client.counters().resent, 2u);
  EXPECT_EQ(pub.client.inflight(), 0u);
  // QoS 1 may arrive twice (at least once); QoS 2 exactly once.
  std::vector<CoreClient::Event> got = sub.Of(Kind::kMessage);
  int ones = 0, twos = 0;
  for (const auto& e : got) {
    ones += e.payload == "one";
    twos += e.payload == "two";
  }
  EXPECT_GE(ones, 1);
  EXPECT_EQ(twos, 1);
}

TEST(Client, ServerReceiveMaximumBoundsTheWindow) {
  BrokerOptions bo;
  bo.receive_maximum = 2;
  BrokerSim sim(bo);
  CoreClient& sub = ConnectedClient(sim, Options(Version::k5, "sub"));
  SubscribeAndWait(sim, sub, "w", 1);
  CoreClient& pub = ConnectedClient(sim, Options(Version::k5, "pub"));
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(
        pub.client.Publish("w", AsBytes("m"), {.qos = 1}, sim.now()).ok());
  }
  EXPECT_LE(pub.client.inflight(), 2u);
  EXPECT_EQ(pub.client.inflight() + pub.client.waiting(), 10u);
  sim.RunFor(milliseconds(20));
  EXPECT_EQ(pub.Of(Kind::kPublished).size(), 10u);
  EXPECT_EQ(sub.Of(Kind::kMessage).size(), 10u);
  EXPECT_EQ(sim.broker().counters().receive_maximum_exceeded, 0u);
}

TEST(Client, ResolvesTopicAliasesFromTheServer) {
  BrokerSim sim;
  ClientOptions so = Options(Version::k5, "sub");
  so.topic_alias_maximum = 2;
  CoreClient& sub = ConnectedClient(sim, so);
  SubscribeAndWait(sim, sub, "#", 0);
  CoreClient& pub = ConnectedClient(sim, Options(Version::k5, "pub"));
  for (int i = 0; i < 4; ++i) {
    for (const char* t : {"alpha/one", "beta/two", "gamma/three"}) {
      ASSERT_TRUE(pub.client.Publish(t, AsBytes("p"), {}, sim.now()).ok());
    }
  }
  sim.RunFor(milliseconds(10));
  std::vector<CoreClient::Event> got = sub.Of(Kind::kMessage);
  ASSERT_EQ(got.size(), 12u);
  for (size_t i = 0; i < got.size(); ++i) {
    const char* want[] = {"alpha/one", "beta/two", "gamma/three"};
    EXPECT_EQ(got[i].topic, want[i % 3]);
  }
}

TEST(Client, WillIsPublishedWhenTheClientVanishes) {
  BrokerSim sim;
  CoreClient& watcher = ConnectedClient(sim, Options(Version::k5, "w"));
  SubscribeAndWait(sim, watcher, "status/#", 1);
  ClientOptions o = Options(Version::k5, "dev");
  o.will = ClientWill{"status/dev", "offline", 1, true, 0};
  CoreClient& dev = ConnectedClient(sim, o);
  dev.Abort();
  sim.RunFor(milliseconds(5));
  std::vector<CoreClient::Event> got = watcher.Of(Kind::kMessage);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].topic, "status/dev");
  EXPECT_EQ(got[0].payload, "offline");
  EXPECT_EQ(sim.broker().retained_count(), 1u);  // a retained will
}

TEST(Client, OperationsNeedAConnection) {
  Client c(Options(Version::k5, "x"));
  const Timestamp now = Timestamp::FromNanos(1);
  EXPECT_EQ(c.Publish("a", {}, {}, now).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.Subscribe("a", {}, now).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.Publish("a/+", {}, {.qos = 1}, now).status().code(),
            absl::StatusCode::kInvalidArgument);
  // QoS 1 may be queued offline for a later session.
  EXPECT_TRUE(c.Publish("a", {}, {.qos = 1}, now).ok());
  EXPECT_EQ(c.waiting(), 1u);
}

}  // namespace
}  // namespace ringlab::mqtt
