// Broker core on SimNetwork streams with a virtual clock: CONNECT rules,
// every QoS flow in both directions, redelivery, keep alive, wills, session
// expiry, flow control, topic aliases, retained messages, subscription
// options, shared subscriptions and the slow-subscriber policy.
#include "mqtt/broker.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/internal/broker_sim.h"

namespace ringlab::mqtt {
namespace {

using internal::BrokerSim;
using internal::OwnedFrame;
using internal::RawClient;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr Duration kStep = milliseconds(5);

Connect MakeConnect(Version v, std::string_view id, bool clean = true,
                    uint16_t keep_alive = 0) {
  Connect c;
  c.version = v;
  c.client_id = id;
  c.clean_start = clean;
  c.keep_alive_s = keep_alive;
  return c;
}

std::span<const std::byte> Bytes(std::string_view s) { return AsBytes(s); }

class Fixture {
 public:
  explicit Fixture(BrokerOptions options = {}) : sim(std::move(options)) {}

  // Opens a client, sends CONNECT and checks the CONNACK.
  RawClient& Connected(const Connect& connect, bool session_present = false) {
    RawClient& c = sim.AddClient();
    c.Open();
    c.Send(connect, connect.version);
    sim.RunFor(kStep);
    OwnedFrame f;
    Connack ack = c.Expect<Connack>(connect.version, &f);
    EXPECT_EQ(ack.code, 0);
    EXPECT_EQ(ack.session_present, session_present);
    return c;
  }
  void Reconnect(RawClient& c, const Connect& connect, bool session_present) {
    c.Open();
    c.Send(connect, connect.version);
    sim.RunFor(kStep);
    OwnedFrame f;
    Connack ack = c.Expect<Connack>(connect.version, &f);
    EXPECT_EQ(ack.code, 0);
    EXPECT_EQ(ack.session_present, session_present);
  }
  void Subscribe(RawClient& c, Version v, std::string_view filter,
                 SubscriptionOptions options = {}, uint32_t sub_id = 0,
                 uint8_t expect_code = 0xFF) {
    SubscribeEntry e{filter, options};
    mqtt::Subscribe s;
    s.packet_id = next_id++;
    s.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
    const uint32_t ids[1] = {sub_id};
    if (sub_id != 0) s.properties.subscription_ids = SubscriptionIds(ids);
    c.Send(s, v);
    sim.RunFor(kStep);
    OwnedFrame f;
    Suback ack = c.Expect<Suback>(v, &f);
    EXPECT_EQ(ack.packet_id, s.packet_id);
    ASSERT_EQ(ack.reason_codes.size(), 1u);
    EXPECT_EQ(ack.reason_codes[0],
              expect_code == 0xFF ? options.max_qos : expect_code);
  }
  void Publish(RawClient& c, Version v, std::string_view topic,
               std::string_view payload, uint8_t qos = 0, bool retain = false,
               uint16_t id = 0) {
    mqtt::Publish p;
    p.topic = topic;
    p.payload = Bytes(payload);
    p.qos = qos;
    p.retain = retain;
    p.packet_id = qos > 0 ? (id != 0 ? id : next_id++) : 0;
    c.Send(p, v);
  }
  // Takes the next frame, which must be a PUBLISH, and returns it with its
  // bytes kept alive in `keep`.
  mqtt::Publish TakePublish(RawClient& c, Version v, OwnedFrame* keep) {
    return c.Expect<mqtt::Publish>(v, keep);
  }
  void Ack(RawClient& c, Version v, PacketType type, uint16_t id) {
    PubResponse r;
    r.type = type;
    r.packet_id = id;
    c.Send(r, v);
  }

  BrokerSim sim;
  uint16_t next_id = 1;
};

class Both : public testing::TestWithParam<Version> {};
INSTANTIATE_TEST_SUITE_P(Versions, Both,
                         testing::Values(Version::k311, Version::k5),
                         [](const auto& info) {
                           return info.param == Version::k5 ? "v5" : "v311";
                         });

// ---- CONNECT
// -------------------------------------------------------------------

TEST_P(Both, ConnectAndPing) {
  Fixture fx;
  RawClient& c = fx.Connected(MakeConnect(GetParam(), "a"));
  c.Send(Pingreq{}, GetParam());
  fx.sim.RunFor(kStep);
  EXPECT_EQ(c.Take().type(), PacketType::kPingresp);  // MQTT-3.12.4-1
  EXPECT_EQ(fx.sim.broker().session_count(), 1u);
}

TEST(Connect, FirstPacketNotConnectClosesWithoutReply) {
  Fixture fx;
  RawClient& c = fx.sim.AddClient();
  c.Open();
  c.Send(Pingreq{}, Version::k5);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(c.pending(), 0u);  // MQTT-3.1.0-1: no CONNACK
  EXPECT_EQ(fx.sim.broker().counters().first_packet_not_connect, 1u);
  EXPECT_EQ(fx.sim.broker().connection_count(), 0u);
}

TEST(Connect, SecondConnectIsProtocolError) {
  Fixture fx;
  RawClient& c = fx.Connected(MakeConnect(Version::k5, "a"));
  c.Send(MakeConnect(Version::k5, "a"), Version::k5);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  Disconnect d = c.Expect<Disconnect>(Version::k5, &f);
  EXPECT_EQ(d.reason, ReasonCode::kProtocolError);  // MQTT-3.1.0-2
  EXPECT_TRUE(d.properties.reason_string.has_value());
  EXPECT_EQ(fx.sim.broker().connection_count(), 0u);
}

TEST(Connect, SlowlorisIsClosedAtTheConnectTimeout) {
  BrokerOptions o;
  o.connect_timeout = seconds(2);
  Fixture fx(o);
  RawClient& c = fx.sim.AddClient();
  c.Open();
  // Half a CONNECT, then nothing.
  const std::byte partial[] = {std::byte(0x10), std::byte(0x20),
                               std::byte(0x00)};
  c.SendBytes(partial);
  fx.sim.RunFor(seconds(1));
  EXPECT_EQ(fx.sim.broker().connection_count(), 1u);
  fx.sim.RunFor(seconds(2));
  EXPECT_EQ(fx.sim.broker().connection_count(), 0u);
  EXPECT_EQ(fx.sim.broker().counters().connect_timeouts, 1u);
}

TEST(Connect, UnsupportedVersionGetsReturnCode1) {
  Fixture fx;
  RawClient& c = fx.sim.AddClient();
  c.Open();
  // An MQTT 3.1 CONNECT ("MQIsdp", level 3).
  const std::byte connect31[] = {
      std::byte(0x10), std::byte(15),  std::byte(0),   std::byte(6),
      std::byte('M'),  std::byte('Q'), std::byte('I'), std::byte('s'),
      std::byte('d'),  std::byte('p'), std::byte(3),   std::byte(2),
      std::byte(0),    std::byte(60),  std::byte(0),   std::byte(1),
      std::byte('x')};
  c.SendBytes(std::span<const std::byte>(connect31).first(17));
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  Connack ack = c.Expect<Connack>(Version::k311, &f);
  EXPECT_EQ(ack.code, 1);  // 3.1.1 MQTT-3.1.2-2
}

TEST(Connect, MalformedV5ConnectGetsConnackWithReason) {
  Fixture fx;
  RawClient& c = fx.sim.AddClient();
  c.Open();
  Connect bad = MakeConnect(Version::k5, "a");
  bad.properties.receive_maximum = 5;
  std::vector<std::byte> bytes(EncodedSize(Packet(bad), Version::k5));
  Encode(bad, bytes);
  // Patch Receive Maximum to 0: a Protocol Error (§3.1.2.11.3).
  for (size_t i = 0; i + 2 < bytes.size(); ++i) {
    if (bytes[i] == std::byte(0x21) && bytes[i + 2] == std::byte(5)) {
      bytes[i + 2] = std::byte(0);
      break;
    }
  }
  c.SendBytes(bytes);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  Connack ack = c.Expect<Connack>(Version::k5, &f);
  EXPECT_EQ(ack.code, uint8_t(ReasonCode::kProtocolError));
}

TEST(Connect, AssignedClientIdentifier) {
  Fixture fx;
  RawClient& c = fx.sim.AddClient();
  c.Open();
  c.Send(MakeConnect(Version::k5, ""), Version::k5);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  Connack ack = c.Expect<Connack>(Version::k5, &f);
  EXPECT_EQ(ack.code, 0);
  ASSERT_TRUE(ack.properties.assigned_client_identifier.has_value());
  EXPECT_FALSE(ack.properties.assigned_client_identifier->empty());
  // MQTT-3.1.3-8 (3.1.1): an empty id with Clean Session 0 is refused.
  RawClient& d = fx.sim.AddClient();
  d.Open();
  d.Send(MakeConnect(Version::k311, "", /*clean=*/false), Version::k311);
  fx.sim.RunFor(kStep);
  Connack refused = d.Expect<Connack>(Version::k311, &f);
  EXPECT_EQ(refused.code, 2);
}

TEST(Connect, ConnackAdvertisesLimits) {
  BrokerOptions o;
  o.receive_maximum = 7;
  o.max_packet_bytes = 4096;
  o.topic_alias_maximum = 3;
  o.server_keep_alive_s = 30;
  Fixture fx(o);
  RawClient& c = fx.sim.AddClient();
  c.Open();
  c.Send(MakeConnect(Version::k5, "x", true, 600), Version::k5);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  Connack ack = c.Expect<Connack>(Version::k5, &f);
  EXPECT_EQ(ack.properties.receive_maximum, 7);
  EXPECT_EQ(ack.properties.maximum_packet_size, 4096u);
  EXPECT_EQ(ack.properties.topic_alias_maximum, 3);
  EXPECT_EQ(ack.properties.server_keep_alive, 30);
}

TEST(Connect, TakeoverDisconnectsTheOldConnection) {
  Fixture fx;
  RawClient& a = fx.Connected(MakeConnect(Version::k5, "same"));
  RawClient& b = fx.Connected(MakeConnect(Version::k5, "same"));
  OwnedFrame f;
  Disconnect d = a.Expect<Disconnect>(Version::k5, &f);
  EXPECT_EQ(d.reason, ReasonCode::kSessionTakenOver);  // MQTT-3.1.4-3
  b.Send(Pingreq{}, Version::k5);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(b.Take().type(), PacketType::kPingresp);
  EXPECT_EQ(fx.sim.broker().counters().session_takeovers, 1u);
  EXPECT_EQ(fx.sim.broker().connection_count(), 1u);
}

// ---- QoS flows
// ---------------------------------------------------------------

TEST_P(Both, Qos0PublishSubscribe) {
  const Version v = GetParam();
  Fixture fx;
  RawClient& sub = fx.Connected(MakeConnect(v, "sub"));
  RawClient& pub = fx.Connected(MakeConnect(v, "pub"));
  fx.Subscribe(sub, v, "a/+");
  fx.Publish(pub, v, "a/b", "hello");
  fx.Publish(pub, v, "x/y", "not for sub");
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  mqtt::Publish p = fx.TakePublish(sub, v, &f);
  EXPECT_EQ(p.topic, "a/b");
  EXPECT_EQ(AsString(p.payload), "hello");
  EXPECT_EQ(p.qos, 0);
  EXPECT_EQ(sub.pending(), 0u);
}

TEST_P(Both, Qos1BothDirections) {
  const Version v = GetParam();
  Fixture fx;
  RawClient& sub = fx.Connected(MakeConnect(v, "sub"));
  RawClient& pub = fx.Connected(MakeConnect(v, "pub"));
  fx.Subscribe(sub, v, "t", {.max_qos = 1});
  fx.Publish(pub, v, "t", "m1", 1, false, 77);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  PubResponse ack = pub.Expect<PubResponse>(v, &f);
  EXPECT_EQ(ack.type, PacketType::kPuback);
  EXPECT_EQ(ack.packet_id, 77);  // MQTT-2.2.1-4: same id
  OwnedFrame g;
  mqtt::Publish p = fx.TakePublish(sub, v, &g);
  EXPECT_EQ(p.qos, 1);
  EXPECT_NE(p.packet_id, 0);
  EXPECT_FALSE(p.dup);
  auto info = fx.sim.broker().GetSessionInfo("sub");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->inflight, 1u);
  fx.Ack(sub, v, PacketType::kPuback, p.packet_id);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(fx.sim.broker().GetSessionInfo("sub")->inflight, 0u);
}

TEST_P(Both, Qos2BothDirections) {
  const Version v = GetParam();
  Fixture fx;
  RawClient& sub = fx.Connected(MakeConnect(v, "sub"));
  RawClient& pub = fx.Connected(MakeConnect(v, "pub"));
  fx.Subscribe(sub, v, "t", {.max_qos = 2});
  fx.Publish(pub, v, "t", "once", 2, false, 9);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  PubResponse rec = pub.Expect<PubResponse>(v, &f);
  EXPECT_EQ(rec.type, PacketType::kPubrec);
  EXPECT_EQ(rec.packet_id, 9);
  // The publisher resends the PUBLISH (DUP): it is not delivered twice.
  mqtt::Publish again;
  again.topic = "t";
  again.payload = Bytes("once");
  again.qos = 2;
  again.dup = true;
  again.packet_id = 9;
  pub.Send(again, v);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(pub.Expect<PubResponse>(v, &f).type, PacketType::kPubrec);
  fx.Ack(pub, v, PacketType::kPubrel, 9);
  fx.sim.RunFor(kStep);
  PubResponse comp = pub.Expect<PubResponse>(v, &f);
  EXPECT_EQ(comp.type, PacketType::kPubcomp);
  EXPECT_EQ(comp.reason, ReasonCode::kSuccess);

  OwnedFrame g;
  mqtt::Publish p = fx.TakePublish(sub, v, &g);
  EXPECT_EQ(p.qos, 2);
  EXPECT_EQ(sub.pending(), 0u);  // exactly once
  fx.Ack(sub, v, PacketType::kPubrec, p.packet_id);
  fx.sim.RunFor(kStep);
  PubResponse rel = sub.Expect<PubResponse>(v, &f);
  EXPECT_EQ(rel.type, PacketType::kPubrel);
  EXPECT_EQ(rel.packet_id, p.packet_id);
  fx.Ack(sub, v, PacketType::kPubcomp, p.packet_id);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(fx.sim.broker().GetSessionInfo("sub")->inflight, 0u);
  // A PUBREL for an unknown id: PUBCOMP 0x92 in v5.
  fx.Ack(pub, v, PacketType::kPubrel, 1234);
  fx.sim.RunFor(kStep);
  PubResponse unknown = pub.Expect<PubResponse>(v, &f);
  EXPECT_EQ(unknown.type, PacketType::kPubcomp);
  if (v == Version::k5) {
    EXPECT_EQ(unknown.reason, ReasonCode::kPacketIdentifierNotFound);
  }
}

TEST_P(Both, GrantedQosCapsDelivery) {
  const Version v = GetParam();
  Fixture fx;
  RawClient& sub = fx.Connected(MakeConnect(v, "sub"));
  RawClient& pub = fx.Connected(MakeConnect(v, "pub"));
  fx.Subscribe(sub, v, "t", {.max_qos = 0});
  fx.Publish(pub, v, "t", "m", 2, false, 5);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  mqtt::Publish p = fx.TakePublish(sub, v, &f);
  EXPECT_EQ(p.qos, 0);
}

TEST(Routing, OverlappingSubscriptionsDeliverOnceAtMaxQos) {
  Fixture fx;
  RawClient& sub = fx.Connected(MakeConnect(Version::k5, "sub"));
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  fx.Subscribe(sub, Version::k5, "a/+", {.max_qos = 0}, 11);
  fx.Subscribe(sub, Version::k5, "a/#", {.max_qos = 2}, 22);
  fx.Subscribe(sub, Version::k5, "a/b", {.max_qos = 1});
  fx.Publish(pub, Version::k5, "a/b", "x", 2, false, 3);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  mqtt::Publish p = fx.TakePublish(sub, Version::k5, &f);
  // 3.1.1 MQTT-3.3.5-1 / 5.0 MQTT-3.3.4-2: one copy, the highest QoS;
  // MQTT-3.3.4-4: every subscription identifier.
  EXPECT_EQ(p.qos, 2);
  std::vector<uint32_t> ids;
  p.properties.subscription_ids.ForEach(
      [&](uint32_t id) { ids.push_back(id); });
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<uint32_t>{11, 22}));
  EXPECT_EQ(sub.pending(), 0u);
}

TEST_P(Both, DollarTopicsAndWildcards) {
  const Version v = GetParam();
  Fixture fx;
  RawClient& all = fx.Connected(MakeConnect(v, "all"));
  RawClient& sys = fx.Connected(MakeConnect(v, "sys"));
  RawClient& pub = fx.Connected(MakeConnect(v, "pub"));
  fx.Subscribe(all, v, "#");
  fx.Subscribe(sys, v, "$SYS/#");
  fx.Subscribe(all, v, "+/info");
  fx.Publish(pub, v, "$SYS/info", "s");
  fx.Publish(pub, v, "app/info", "a");
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  // MQTT-4.7.2-1: "#" and "+/info" do not match "$SYS/info".
  EXPECT_EQ(fx.TakePublish(all, v, &f).topic, "app/info");
  EXPECT_EQ(all.pending(), 0u);
  EXPECT_EQ(fx.TakePublish(sys, v, &f).topic, "$SYS/info");
  EXPECT_EQ(sys.pending(), 0u);
}

TEST(Routing, NoLocalAndRetainAsPublished) {
  Fixture fx;
  RawClient& c = fx.Connected(MakeConnect(Version::k5, "self"));
  RawClient& other = fx.Connected(MakeConnect(Version::k5, "other"));
  fx.Subscribe(c, Version::k5, "nl", {.no_local = true});
  fx.Subscribe(c, Version::k5, "rap", {.retain_as_published = true});
  fx.Subscribe(other, Version::k5, "rap");
  fx.Publish(c, Version::k5, "nl", "mine");  // MQTT-3.8.3-3: not to self
  fx.Publish(c, Version::k5, "rap", "r", 0, /*retain=*/true);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  mqtt::Publish p = fx.TakePublish(c, Version::k5, &f);
  EXPECT_EQ(p.topic, "rap");
  EXPECT_TRUE(p.retain);  // MQTT-3.3.1-13
  EXPECT_EQ(c.pending(), 0u);
  mqtt::Publish q = fx.TakePublish(other, Version::k5, &f);
  EXPECT_FALSE(q.retain);  // MQTT-3.3.1-12
}

TEST(Routing, SharedSubscriptionsRoundRobin) {
  Fixture fx;
  RawClient& a = fx.Connected(MakeConnect(Version::k5, "a"));
  RawClient& b = fx.Connected(MakeConnect(Version::k5, "b"));
  RawClient& plain = fx.Connected(MakeConnect(Version::k5, "plain"));
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  fx.Subscribe(a, Version::k5, "$share/g/jobs/+", {.max_qos = 1});
  fx.Subscribe(b, Version::k5, "$share/g/jobs/+", {.max_qos = 1});
  fx.Subscribe(plain, Version::k5, "jobs/#");
  fx.Subscribe(a, Version::k5, "$share//x", {}, 0,
               uint8_t(ReasonCode::kTopicFilterInvalid));  // MQTT-4.8.2-1
  for (int i = 0; i < 6; ++i) fx.Publish(pub, Version::k5, "jobs/1", "j");
  fx.sim.RunFor(kStep);
  EXPECT_EQ(a.pending(), 3u);
  EXPECT_EQ(b.pending(), 3u);
  EXPECT_EQ(plain.pending(), 6u);  // a plain subscription gets every one
}

// The hooks the multi-Loop broker keeps one turn per group with
// (BrokerForwarder): each change of a group's member count is reported
// with the slot the forwarder handed out, each message is offered to the
// forwarder first, and one it leaves to another core reaches no member of
// the group here (a plain subscription still gets it).
struct GroupForwarder : BrokerForwarder {
  void OnClientPublish(const MessageRef&) override {}
  uint32_t OnSharedGroupMembers(std::string_view group, std::string_view filter,
                                uint32_t slot, size_t members) override {
    changes.push_back(std::string(group) + " " + std::string(filter) + " " +
                      std::to_string(slot) + "->" + std::to_string(members));
    return members == 0 ? 0 : 7;
  }
  bool DeliverToGroup(uint32_t slot, const Message&) override {
    ++asked;
    last_slot = slot;
    return take;
  }
  std::vector<std::string> changes;
  int asked = 0;
  uint32_t last_slot = 0;
  bool take = true;
};

TEST(Routing, SharedGroupsAskTheForwarder) {
  Fixture fx;
  GroupForwarder fwd;
  fx.sim.broker().set_forwarder(&fwd);
  RawClient& a = fx.Connected(MakeConnect(Version::k5, "a"));
  RawClient& b = fx.Connected(MakeConnect(Version::k5, "b"));
  RawClient& plain = fx.Connected(MakeConnect(Version::k5, "plain"));
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  fx.Subscribe(a, Version::k5, "$share/g/jobs/+", {.max_qos = 1});
  fx.Subscribe(b, Version::k5, "$share/g/jobs/+", {.max_qos = 1});
  // Again: it replaces a's subscription (MQTT-3.8.4-3), the count stays.
  fx.Subscribe(a, Version::k5, "$share/g/jobs/+", {.max_qos = 1});
  fx.Subscribe(plain, Version::k5, "jobs/#");
  EXPECT_EQ(fwd.changes,
            (std::vector<std::string>{"g jobs/+ 0->1", "g jobs/+ 7->2"}));
  for (int i = 0; i < 4; ++i) fx.Publish(pub, Version::k5, "jobs/1", "j");
  fx.sim.RunFor(kStep);
  EXPECT_EQ(fwd.asked, 4);
  EXPECT_EQ(fwd.last_slot, 7u);
  EXPECT_EQ(a.pending(), 2u);
  EXPECT_EQ(b.pending(), 2u);
  fwd.take = false;  // another core's turn
  for (int i = 0; i < 4; ++i) fx.Publish(pub, Version::k5, "jobs/1", "j");
  fx.sim.RunFor(kStep);
  EXPECT_EQ(fwd.asked, 8);
  EXPECT_EQ(a.pending(), 2u);
  EXPECT_EQ(b.pending(), 2u);
  EXPECT_EQ(plain.pending(), 8u);
  // Clean sessions end with their connections, and so do their members.
  a.Close();
  fx.sim.RunFor(kStep);
  b.Close();
  fx.sim.RunFor(kStep);
  EXPECT_EQ(fwd.changes,
            (std::vector<std::string>{"g jobs/+ 0->1", "g jobs/+ 7->2",
                                      "g jobs/+ 7->1", "g jobs/+ 7->0"}));
}

// ---- Retained
// ------------------------------------------------------------------

TEST_P(Both, RetainedMessages) {
  const Version v = GetParam();
  Fixture fx;
  RawClient& pub = fx.Connected(MakeConnect(v, "pub"));
  fx.Publish(pub, v, "r/1", "one", 1, true, 1);
  fx.Publish(pub, v, "r/2", "two", 0, true);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(fx.sim.broker().retained_count(), 2u);
  RawClient& sub = fx.Connected(MakeConnect(v, "sub"));
  fx.Subscribe(sub, v, "r/+", {.max_qos = 1});
  fx.sim.RunFor(kStep);
  ASSERT_EQ(sub.pending(), 2u);
  OwnedFrame f;
  mqtt::Publish p = fx.TakePublish(sub, v, &f);
  EXPECT_TRUE(p.retain);  // sent because of the subscription
  // MQTT-3.3.1-6: an empty retained payload clears.
  fx.Publish(pub, v, "r/1", "", 0, true);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(fx.sim.broker().retained_count(), 1u);
}

TEST(Retained, RetainHandling) {
  Fixture fx;
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  fx.Publish(pub, Version::k5, "k", "v", 0, true);
  fx.sim.RunFor(kStep);
  RawClient& sub = fx.Connected(MakeConnect(Version::k5, "sub"));
  // MQTT-3.3.1-11: Retain Handling 2 never sends retained messages.
  fx.Subscribe(sub, Version::k5, "k", {.retain_handling = 2});
  fx.sim.RunFor(kStep);
  EXPECT_EQ(sub.pending(), 0u);
  // MQTT-3.3.1-10: 1 sends them for a new subscription only.
  fx.Subscribe(sub, Version::k5, "#", {.retain_handling = 1});
  fx.sim.RunFor(kStep);
  EXPECT_EQ(sub.pending(), 1u);
  sub.Take();
  fx.Subscribe(sub, Version::k5, "#", {.retain_handling = 1});
  fx.sim.RunFor(kStep);
  EXPECT_EQ(sub.pending(), 0u);
  // 0 sends them on every SUBSCRIBE (MQTT-3.3.1-9).
  fx.Subscribe(sub, Version::k5, "#", {.retain_handling = 0});
  fx.sim.RunFor(kStep);
  EXPECT_EQ(sub.pending(), 1u);
  // Shared subscriptions never get retained messages (§4.8.2).
  RawClient& shared = fx.Connected(MakeConnect(Version::k5, "shared"));
  fx.Subscribe(shared, Version::k5, "$share/g/k");
  fx.sim.RunFor(kStep);
  EXPECT_EQ(shared.pending(), 0u);
}

// ---- Wills and keep alive
// ----------------------------------------------------

Connect WithWill(Connect c, std::string_view topic, uint32_t delay_s = 0) {
  Will& w = c.will.emplace();
  w.topic = topic;
  w.payload = Bytes("gone");
  w.qos = 1;
  if (delay_s > 0) w.properties.will_delay_interval = delay_s;
  return c;
}

TEST_P(Both, WillOnNetworkFailureNotOnDisconnect) {
  const Version v = GetParam();
  Fixture fx;
  RawClient& watcher = fx.Connected(MakeConnect(v, "w"));
  fx.Subscribe(watcher, v, "will/#", {.max_qos = 1});
  RawClient& a = fx.Connected(WithWill(MakeConnect(v, "a"), "will/a"));
  a.Abort();  // network failure
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  mqtt::Publish p = fx.TakePublish(watcher, v, &f);
  EXPECT_EQ(p.topic, "will/a");
  EXPECT_EQ(AsString(p.payload), "gone");
  // MQTT-3.14.4-3: a normal DISCONNECT discards the will.
  RawClient& b = fx.Connected(WithWill(MakeConnect(v, "b"), "will/b"));
  b.Send(Disconnect{}, v);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(watcher.pending(), 0u);
  EXPECT_EQ(fx.sim.broker().counters().wills_published, 1u);
}

TEST(Will, DisconnectWithWillMessage) {
  Fixture fx;
  RawClient& watcher = fx.Connected(MakeConnect(Version::k5, "w"));
  fx.Subscribe(watcher, Version::k5, "will/#");
  RawClient& a =
      fx.Connected(WithWill(MakeConnect(Version::k5, "a"), "will/a"));
  Disconnect d;
  d.reason = ReasonCode::kDisconnectWithWillMessage;
  a.Send(d, Version::k5);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(watcher.pending(), 1u);
}

TEST(Will, DelayAndReconnectCancels) {
  Fixture fx;
  RawClient& watcher = fx.Connected(MakeConnect(Version::k5, "w"));
  fx.Subscribe(watcher, Version::k5, "will/#");
  Connect connect = WithWill(MakeConnect(Version::k5, "a", false), "will/a",
                             /*delay_s=*/5);
  connect.properties.session_expiry_interval = 60;
  RawClient& a = fx.Connected(connect);
  a.Abort();
  fx.sim.RunFor(seconds(3));
  EXPECT_EQ(watcher.pending(), 0u);  // still inside the delay
  // MQTT-3.1.3-9: reconnecting within the delay: no will.
  Connect again = connect;  // the same will again
  RawClient& a2 = fx.sim.AddClient();
  fx.Reconnect(a2, again, /*session_present=*/true);
  fx.sim.RunFor(seconds(10));
  EXPECT_EQ(watcher.pending(), 0u);
  // Now drop it for good: the will goes out after 5 s.
  a2.Abort();
  fx.sim.RunFor(seconds(4));
  EXPECT_EQ(watcher.pending(), 0u);
  fx.sim.RunFor(seconds(2));
  EXPECT_EQ(watcher.pending(), 1u);
}

TEST(Will, SessionEndingFirstSendsTheWill) {
  Fixture fx;
  RawClient& watcher = fx.Connected(MakeConnect(Version::k5, "w"));
  fx.Subscribe(watcher, Version::k5, "will/#");
  Connect connect = WithWill(MakeConnect(Version::k5, "a", false), "will/a",
                             /*delay_s=*/100);
  connect.properties.session_expiry_interval = 2;
  RawClient& a = fx.Connected(connect);
  a.Abort();
  fx.sim.RunFor(seconds(1));
  EXPECT_EQ(watcher.pending(), 0u);
  fx.sim.RunFor(seconds(2));
  EXPECT_EQ(watcher.pending(), 1u);  // session expired before the delay
  EXPECT_EQ(fx.sim.broker().session_count(), 1u);  // only the watcher
  EXPECT_EQ(fx.sim.broker().counters().sessions_expired, 1u);
}

TEST_P(Both, KeepAliveExpiresAtOneAndAHalf) {
  const Version v = GetParam();
  Fixture fx;
  RawClient& watcher = fx.Connected(MakeConnect(v, "w"));
  fx.Subscribe(watcher, v, "will/#");
  RawClient& a =
      fx.Connected(WithWill(MakeConnect(v, "a", true, 10), "will/a"));
  // Pings keep it alive well past 15 s.
  for (int i = 0; i < 4; ++i) {
    fx.sim.RunFor(seconds(8));
    a.Send(Pingreq{}, v);
  }
  fx.sim.RunFor(kStep);
  EXPECT_EQ(fx.sim.broker().connection_count(), 2u);
  while (a.pending() > 0) a.Take();
  // Silence: closed after 15 s (MQTT-3.1.2-22), not at 10 s.
  fx.sim.RunFor(seconds(14));
  EXPECT_EQ(fx.sim.broker().connection_count(), 2u);
  fx.sim.RunFor(seconds(2));
  EXPECT_EQ(fx.sim.broker().connection_count(), 1u);
  EXPECT_EQ(fx.sim.broker().counters().keepalive_timeouts, 1u);
  EXPECT_EQ(watcher.pending(), 1u);  // the will went out
  if (v == Version::k5) {
    OwnedFrame f;
    EXPECT_EQ(a.Expect<Disconnect>(v, &f).reason,
              ReasonCode::kKeepAliveTimeout);
  }
}

// ---- Sessions
// ------------------------------------------------------------------

TEST_P(Both, PersistentSessionQueuesAndRedelivers) {
  const Version v = GetParam();
  Fixture fx;
  Connect connect = MakeConnect(v, "p", /*clean=*/false);
  if (v == Version::k5) connect.properties.session_expiry_interval = 300;
  RawClient& sub = fx.Connected(connect);
  fx.Subscribe(sub, v, "q", {.max_qos = 1});
  RawClient& pub = fx.Connected(MakeConnect(v, "pub"));
  fx.Publish(pub, v, "q", "in-flight", 1);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  mqtt::Publish first = fx.TakePublish(sub, v, &f);
  EXPECT_FALSE(first.dup);
  const uint16_t id = first.packet_id;
  sub.Abort();  // never acknowledged
  fx.sim.RunFor(kStep);
  fx.Publish(pub, v, "q", "queued-1", 1);
  fx.Publish(pub, v, "q", "queued-2", 1);
  fx.Publish(pub, v, "q", "qos0-dropped", 0);
  fx.sim.RunFor(kStep);
  auto info = fx.sim.broker().GetSessionInfo("p");
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->connected);
  EXPECT_EQ(info->queued, 2u);
  EXPECT_EQ(info->inflight, 1u);

  RawClient& again = fx.sim.AddClient();
  fx.Reconnect(again, connect, /*session_present=*/true);
  fx.sim.RunFor(kStep);
  // MQTT-4.4.0-1: the unacknowledged one first, with DUP and its id.
  mqtt::Publish resent = fx.TakePublish(again, v, &f);
  EXPECT_TRUE(resent.dup);
  EXPECT_EQ(resent.packet_id, id);
  EXPECT_EQ(AsString(resent.payload), "in-flight");
  OwnedFrame g, h;
  EXPECT_EQ(AsString(fx.TakePublish(again, v, &g).payload), "queued-1");
  EXPECT_EQ(AsString(fx.TakePublish(again, v, &h).payload), "queued-2");
  EXPECT_EQ(again.pending(), 0u);
}

TEST(Session, Qos2PubrelIsResentOnReconnect) {
  Fixture fx;
  Connect connect = MakeConnect(Version::k5, "p", false);
  connect.properties.session_expiry_interval = 300;
  RawClient& sub = fx.Connected(connect);
  fx.Subscribe(sub, Version::k5, "q", {.max_qos = 2});
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  fx.Publish(pub, Version::k5, "q", "x", 2, false, 4);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  mqtt::Publish p = fx.TakePublish(sub, Version::k5, &f);
  fx.Ack(sub, Version::k5, PacketType::kPubrec, p.packet_id);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(sub.Expect<PubResponse>(Version::k5, &f).type, PacketType::kPubrel);
  sub.Abort();  // PUBCOMP never sent
  fx.sim.RunFor(kStep);
  RawClient& again = fx.sim.AddClient();
  fx.Reconnect(again, connect, true);
  fx.sim.RunFor(kStep);
  PubResponse rel = again.Expect<PubResponse>(Version::k5, &f);
  EXPECT_EQ(rel.type, PacketType::kPubrel);  // MQTT-4.4.0-1
  EXPECT_EQ(rel.packet_id, p.packet_id);
  fx.Ack(again, Version::k5, PacketType::kPubcomp, p.packet_id);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(fx.sim.broker().GetSessionInfo("p")->inflight, 0u);
}

TEST(Session, ExpiryAndCleanStart) {
  Fixture fx;
  Connect connect = MakeConnect(Version::k5, "e", false);
  connect.properties.session_expiry_interval = 10;
  RawClient& a = fx.Connected(connect);
  fx.Subscribe(a, Version::k5, "t", {.max_qos = 1});
  a.Abort();
  fx.sim.RunFor(seconds(5));
  EXPECT_TRUE(fx.sim.broker().GetSessionInfo("e").has_value());
  fx.sim.RunFor(seconds(6));
  EXPECT_FALSE(fx.sim.broker().GetSessionInfo("e").has_value());
  EXPECT_EQ(fx.sim.broker().subscription_count(), 0u);
  // Clean start discards a session (MQTT-3.1.2-4): session present 0.
  RawClient& b = fx.Connected(connect);
  fx.Subscribe(b, Version::k5, "t");
  b.Abort();
  fx.sim.RunFor(kStep);
  RawClient& c = fx.sim.AddClient();
  fx.Reconnect(c, MakeConnect(Version::k5, "e", true), false);
  EXPECT_EQ(fx.sim.broker().subscription_count(), 0u);
  // 3.1.1 Clean Session 1: the session ends with the connection.
  RawClient& d = fx.Connected(MakeConnect(Version::k311, "v3", true));
  fx.Subscribe(d, Version::k311, "t");
  d.Abort();
  fx.sim.RunFor(kStep);
  EXPECT_FALSE(fx.sim.broker().GetSessionInfo("v3").has_value());
}

TEST(Session, DisconnectCannotAddExpiryToAZeroSession) {
  Fixture fx;
  RawClient& a = fx.Connected(MakeConnect(Version::k5, "z"));
  Disconnect d;
  d.properties.session_expiry_interval = 30;
  a.Send(d, Version::k5);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  EXPECT_EQ(a.Expect<Disconnect>(Version::k5, &f).reason,
            ReasonCode::kProtocolError);  // MQTT-3.14.2-2
}

// ---- Flow control and limits -----------------------------------------------

TEST(FlowControl, ClientReceiveMaximumLimitsInflight) {
  Fixture fx;
  Connect connect = MakeConnect(Version::k5, "slow");
  connect.properties.receive_maximum = 2;
  RawClient& sub = fx.Connected(connect);
  fx.Subscribe(sub, Version::k5, "t", {.max_qos = 1});
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  for (int i = 0; i < 5; ++i) fx.Publish(pub, Version::k5, "t", "m", 1);
  fx.Publish(pub, Version::k5, "t", "qos0 goes past", 0);
  fx.sim.RunFor(kStep);
  // MQTT-3.3.4-9: two QoS 1 in flight; QoS 0 is not held back.
  ASSERT_EQ(sub.pending(), 3u);
  std::vector<uint16_t> ids;
  for (int i = 0; i < 3; ++i) {
    OwnedFrame f;
    mqtt::Publish p = fx.TakePublish(sub, Version::k5, &f);
    if (p.qos == 1) ids.push_back(p.packet_id);
  }
  ASSERT_EQ(ids.size(), 2u);
  fx.Ack(sub, Version::k5, PacketType::kPuback, ids[0]);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(sub.pending(), 1u);  // one more fits now
}

TEST(FlowControl, ExceedingOurReceiveMaximumIs0x93) {
  BrokerOptions o;
  o.receive_maximum = 3;
  Fixture fx(o);
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  for (uint16_t id = 1; id <= 4; ++id) {
    fx.Publish(pub, Version::k5, "t", "x", 2, false, id);  // no PUBREL
  }
  fx.sim.RunFor(kStep);
  for (int i = 0; i < 3; ++i) {
    OwnedFrame f;
    EXPECT_EQ(pub.Expect<PubResponse>(Version::k5, &f).type,
              PacketType::kPubrec);
  }
  OwnedFrame f;
  EXPECT_EQ(pub.Expect<Disconnect>(Version::k5, &f).reason,
            ReasonCode::kReceiveMaximumExceeded);
  EXPECT_EQ(fx.sim.broker().counters().receive_maximum_exceeded, 1u);
}

TEST(Limits, PacketTooLargeBothWays) {
  BrokerOptions o;
  o.max_packet_bytes = 256;
  Fixture fx(o);
  Connect connect = MakeConnect(Version::k5, "small");
  connect.properties.maximum_packet_size = 64;
  RawClient& sub = fx.Connected(connect);
  fx.Subscribe(sub, Version::k5, "t");
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  fx.Publish(pub, Version::k5, "t", std::string(100, 'x'));  // > 64 for sub
  fx.Publish(pub, Version::k5, "t", "small");
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  // MQTT-3.1.2-25: the oversized one is skipped.
  EXPECT_EQ(AsString(fx.TakePublish(sub, Version::k5, &f).payload), "small");
  EXPECT_EQ(fx.sim.broker().counters().dropped_too_large, 1u);
  // Over our own limit: DISCONNECT 0x95.
  fx.Publish(pub, Version::k5, "t", std::string(300, 'y'));
  fx.sim.RunFor(kStep);
  EXPECT_EQ(pub.Expect<Disconnect>(Version::k5, &f).reason,
            ReasonCode::kPacketTooLarge);
}

TEST(Limits, MessageExpiry) {
  Fixture fx;
  Connect connect = MakeConnect(Version::k5, "off", false);
  connect.properties.session_expiry_interval = 600;
  RawClient& sub = fx.Connected(connect);
  fx.Subscribe(sub, Version::k5, "t", {.max_qos = 1});
  sub.Abort();
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  mqtt::Publish p;
  p.topic = "t";
  p.qos = 1;
  p.packet_id = 1;
  p.payload = Bytes("short");
  p.properties.message_expiry_interval = 2;
  pub.Send(p, Version::k5);
  p.packet_id = 2;
  p.payload = Bytes("long");
  p.properties.message_expiry_interval = 100;
  pub.Send(p, Version::k5);
  fx.sim.RunFor(seconds(5));
  RawClient& again = fx.sim.AddClient();
  fx.Reconnect(again, connect, true);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  mqtt::Publish got = fx.TakePublish(again, Version::k5, &f);
  // MQTT-3.3.2-5: the expired one is gone; MQTT-3.3.2-6: the other shows
  // the time left.
  EXPECT_EQ(AsString(got.payload), "long");
  ASSERT_TRUE(got.properties.message_expiry_interval.has_value());
  EXPECT_LE(*got.properties.message_expiry_interval, 95u);
  EXPECT_GE(*got.properties.message_expiry_interval, 94u);
  EXPECT_EQ(again.pending(), 0u);
  EXPECT_EQ(fx.sim.broker().counters().dropped_expired, 1u);
}

// ---- Topic aliases
// -------------------------------------------------------------

TEST(TopicAlias, Inbound) {
  Fixture fx;
  RawClient& sub = fx.Connected(MakeConnect(Version::k5, "sub"));
  fx.Subscribe(sub, Version::k5, "long/topic/name");
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  mqtt::Publish p;
  p.topic = "long/topic/name";
  p.payload = Bytes("1");
  p.properties.topic_alias = 1;
  pub.Send(p, Version::k5);
  p.topic = "";
  p.payload = Bytes("2");
  pub.Send(p, Version::k5);
  fx.sim.RunFor(kStep);
  OwnedFrame f, g;
  EXPECT_EQ(fx.TakePublish(sub, Version::k5, &f).topic, "long/topic/name");
  EXPECT_EQ(fx.TakePublish(sub, Version::k5, &g).topic, "long/topic/name");
  // Unknown alias: Protocol Error; alias 0 or above the maximum: 0x94.
  p.properties.topic_alias = 2;
  pub.Send(p, Version::k5);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(pub.Expect<Disconnect>(Version::k5, &f).reason,
            ReasonCode::kProtocolError);
  RawClient& bad = fx.Connected(MakeConnect(Version::k5, "bad"));
  p.topic = "x";
  p.properties.topic_alias = 65;  // our maximum is 64
  bad.Send(p, Version::k5);
  fx.sim.RunFor(kStep);
  EXPECT_EQ(bad.Expect<Disconnect>(Version::k5, &f).reason,
            ReasonCode::kTopicAliasInvalid);
}

TEST(TopicAlias, Outbound) {
  Fixture fx;
  Connect connect = MakeConnect(Version::k5, "sub");
  connect.properties.topic_alias_maximum = 1;
  RawClient& sub = fx.Connected(connect);
  fx.Subscribe(sub, Version::k5, "#");
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  fx.Publish(pub, Version::k5, "first/topic", "a");
  fx.Publish(pub, Version::k5, "first/topic", "b");
  fx.Publish(pub, Version::k5, "second/topic", "c");
  fx.sim.RunFor(kStep);
  OwnedFrame f1, f2, f3;
  mqtt::Publish a = fx.TakePublish(sub, Version::k5, &f1);
  EXPECT_EQ(a.topic, "first/topic");
  EXPECT_EQ(a.properties.topic_alias, 1);
  mqtt::Publish b = fx.TakePublish(sub, Version::k5, &f2);
  EXPECT_EQ(b.topic, "");
  EXPECT_EQ(b.properties.topic_alias, 1);
  mqtt::Publish c = fx.TakePublish(sub, Version::k5, &f3);
  EXPECT_EQ(c.topic, "second/topic");  // no alias left (MQTT-3.3.2-11)
  EXPECT_FALSE(c.properties.topic_alias.has_value());
}

// ---- Properties pass through
// -------------------------------------------------

TEST(Properties, ForwardedUnchangedAndInOrder) {
  Fixture fx;
  RawClient& sub = fx.Connected(MakeConnect(Version::k5, "sub"));
  RawClient& sub311 = fx.Connected(MakeConnect(Version::k311, "old"));
  fx.Subscribe(sub, Version::k5, "req");
  fx.Subscribe(sub311, Version::k311, "req");
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  mqtt::Publish p;
  p.topic = "req";
  p.payload = Bytes("{}");
  StringPair pairs[] = {{"z", "1"}, {"a", "2"}, {"z", "3"}};
  p.properties.user_properties = UserProperties(pairs);
  p.properties.response_topic = "resp/1";
  const std::byte corr[] = {std::byte(9), std::byte(0), std::byte(8)};
  p.properties.correlation_data = std::span<const std::byte>(corr);
  p.properties.content_type = "application/json";
  p.properties.payload_format_indicator = 1;
  pub.Send(p, Version::k5);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  mqtt::Publish got = fx.TakePublish(sub, Version::k5, &f);
  std::vector<std::string> seen;
  got.properties.user_properties.ForEach(
      [&](std::string_view k, std::string_view v) {
        seen.push_back(std::string(k) + std::string(v));
      });
  EXPECT_EQ(seen, (std::vector<std::string>{"z1", "a2", "z3"}));
  EXPECT_EQ(got.properties.response_topic, "resp/1");
  ASSERT_TRUE(got.properties.correlation_data.has_value());
  EXPECT_EQ(got.properties.correlation_data->size(), 3u);
  EXPECT_EQ(got.properties.content_type, "application/json");
  EXPECT_EQ(got.properties.payload_format_indicator, 1);
  OwnedFrame g;
  mqtt::Publish old = fx.TakePublish(sub311, Version::k311, &g);
  EXPECT_EQ(AsString(old.payload), "{}");  // a 3.1.1 subscriber: payload only
}

// ---- Slow subscribers
// --------------------------------------------------------

TEST(SlowSubscriber, NeverStallsOthers) {
  BrokerOptions o;
  o.max_queued_qos0 = 50;
  o.max_queued_messages = 20;
  Fixture fx(o);
  fx.sim.socket_buffer_bytes = 2048;
  RawClient& slow = fx.Connected(MakeConnect(Version::k5, "slow"));
  RawClient& fast = fx.Connected(MakeConnect(Version::k5, "fast"));
  fx.Subscribe(slow, Version::k5, "t", {.max_qos = 1});
  fx.Subscribe(fast, Version::k5, "t", {.max_qos = 1});
  slow.reading = false;
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  const std::string payload(100, 'p');
  size_t fast_got = 0;
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 20; ++i) fx.Publish(pub, Version::k5, "t", payload, 0);
    for (int i = 0; i < 5; ++i) fx.Publish(pub, Version::k5, "t", payload, 1);
    fx.sim.RunFor(kStep);
    while (fast.pending() > 0) {
      OwnedFrame f = fast.Take();
      if (f.type() != PacketType::kPublish) continue;
      Packet pk;
      ASSERT_TRUE(DecodePacket(f.frame(), Version::k5, &pk).ok());
      const mqtt::Publish& p = std::get<mqtt::Publish>(pk);
      if (p.qos == 1)
        fx.Ack(fast, Version::k5, PacketType::kPuback, p.packet_id);
      ++fast_got;
    }
    while (pub.pending() > 0) pub.Take();
  }
  // The fast subscriber got everything; the slow one's QoS 0 overflow was
  // dropped and counted, and its QoS 1 queue stopped at the limit.
  EXPECT_EQ(fast_got, 20u * 25u);
  const BrokerCounters& c = fx.sim.broker().counters();
  EXPECT_GT(c.dropped_qos0_queue_full, 0u);
  EXPECT_GT(c.dropped_queue_full, 0u);
  auto info = fx.sim.broker().GetSessionInfo("slow");
  ASSERT_TRUE(info);
  EXPECT_LE(info->queued, size_t(o.max_queued_qos0 + o.max_queued_messages));
}

TEST(SlowSubscriber, DisconnectPolicy) {
  BrokerOptions o;
  o.max_queued_messages = 5;
  o.queue_full_policy = QueueFullPolicy::kDisconnect;
  Fixture fx(o);
  Connect connect = MakeConnect(Version::k5, "slow");
  connect.properties.receive_maximum = 1;
  RawClient& slow = fx.Connected(connect);
  fx.Subscribe(slow, Version::k5, "t", {.max_qos = 1});
  RawClient& pub = fx.Connected(MakeConnect(Version::k5, "pub"));
  for (int i = 0; i < 10; ++i) fx.Publish(pub, Version::k5, "t", "x", 1);
  fx.sim.RunFor(kStep);
  bool disconnected = false;
  while (slow.pending() > 0) {
    OwnedFrame f = slow.Take();
    if (f.type() == PacketType::kDisconnect) {
      Packet pk;
      ASSERT_TRUE(DecodePacket(f.frame(), Version::k5, &pk).ok());
      EXPECT_EQ(std::get<Disconnect>(pk).reason, ReasonCode::kQuotaExceeded);
      disconnected = true;
    }
  }
  EXPECT_TRUE(disconnected);
}

// ---- Bad input after CONNECT
// ---------------------------------------------------

TEST_P(Both, MalformedPacketClosesTheConnection) {
  const Version v = GetParam();
  Fixture fx;
  RawClient& c = fx.Connected(MakeConnect(v, "m"));
  // A PUBLISH whose topic contains U+0000 (MQTT-1.5.4-2).
  const std::byte bad[] = {std::byte(0x30), std::byte(5),   std::byte(0),
                           std::byte(3),    std::byte('a'), std::byte(0),
                           std::byte('b')};
  c.SendBytes(bad);
  fx.sim.RunFor(kStep);
  if (v == Version::k5) {
    OwnedFrame f;
    EXPECT_EQ(c.Expect<Disconnect>(v, &f).reason, ReasonCode::kMalformedPacket);
  }
  EXPECT_EQ(fx.sim.broker().connection_count(), 0u);
  EXPECT_EQ(fx.sim.broker().counters().malformed_packets, 1u);
}

TEST(Unsubscribe, ReasonCodes) {
  Fixture fx;
  RawClient& c = fx.Connected(MakeConnect(Version::k5, "u"));
  fx.Subscribe(c, Version::k5, "a/b");
  fx.Subscribe(c, Version::k5, "$share/g/a/#");
  const std::string_view filters[] = {"a/b", "nothing", "$share/g/a/#"};
  Unsubscribe u;
  u.packet_id = 50;
  u.filters = TopicFilterList(filters);
  c.Send(u, Version::k5);
  fx.sim.RunFor(kStep);
  OwnedFrame f;
  Unsuback ack = c.Expect<Unsuback>(Version::k5, &f);
  EXPECT_EQ(ack.packet_id, 50);
  ASSERT_EQ(ack.reason_codes.size(), 3u);
  EXPECT_EQ(ack.reason_codes[0], 0x00);
  EXPECT_EQ(ack.reason_codes[1], uint8_t(ReasonCode::kNoSubscriptionExisted));
  EXPECT_EQ(ack.reason_codes[2], 0x00);
  EXPECT_EQ(fx.sim.broker().subscription_count(), 0u);
}

}  // namespace
}  // namespace ringlab::mqtt
