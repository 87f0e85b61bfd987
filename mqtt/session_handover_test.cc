// The broker core's hooks for moving a session between cores (the
// multi-Loop broker, multi_broker.h), on SimNetwork with a virtual clock:
// a CONNECT held by BrokerForwarder::ParkConnect goes on with the bytes
// that came behind it, in order; an aborted one closes without a CONNACK;
// ExportSession on one core and ImportSession on another carry the
// subscriptions, queued and in-flight QoS 1/2 messages (resent with DUP and
// their packet ids, or as PUBREL) and drop the delayed will.
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/broker.h"
#include "mqtt/internal/broker_sim.h"

namespace ringlab::mqtt {
namespace {

using internal::BrokerSim;
using internal::OwnedFrame;
using internal::RawClient;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr Duration kStep = milliseconds(5);

// Parks every CONNECT whose client id is `park_id`, and remembers it.
struct ParkingForwarder : BrokerForwarder {
  void OnClientPublish(const MessageRef&) override {}
  bool ParkConnect(std::string_view client_id, bool clean_start,
                   ConnectionId connection, Timestamp) override {
    ++asked;
    if (client_id != park_id) return false;
    parked.push_back(connection);
    last_clean_start = clean_start;
    return true;
  }
  std::string park_id = "parked";
  int asked = 0;
  bool last_clean_start = false;
  std::vector<ConnectionId> parked;
};

// A core whose forwarder parks the client id "parked".
struct ParkingSim {
  explicit ParkingSim(BrokerOptions options = {}) : sim(std::move(options)) {
    sim.broker().set_forwarder(&fwd);
  }
  RawClient& OpenClient() {
    RawClient& c = sim.AddClient();
    c.Open();
    return c;
  }
  BrokerSim sim;
  ParkingForwarder fwd;
};

Connect MakeConnect(Version v, std::string_view id, bool clean,
                    uint32_t expiry_s = 0) {
  Connect c;
  c.version = v;
  c.client_id = id;
  c.clean_start = clean;
  if (v == Version::k5 && expiry_s > 0) {
    c.properties.session_expiry_interval = expiry_s;
  }
  return c;
}

Subscribe MakeSubscribe(uint16_t id, const SubscribeEntry* entry) {
  Subscribe s;
  s.packet_id = id;
  s.entries = SubscribeEntries(std::span<const SubscribeEntry>(entry, 1));
  return s;
}

Publish MakePublish(std::string_view topic, std::string_view payload,
                    uint8_t qos, uint16_t id) {
  Publish p;
  p.topic = topic;
  p.payload = AsBytes(payload);
  p.qos = qos;
  p.packet_id = id;
  return p;
}

std::string PayloadOf(const Publish& p) {
  return std::string(reinterpret_cast<const char*>(p.payload.data()),
                     p.payload.size());
}

TEST(ParkConnect, TheHeldConnectGoesOnWithTheBytesBehindItInOrder) {
  ParkingSim ps;
  BrokerSim& sim = ps.sim;
  ParkingForwarder& fwd = ps.fwd;
  RawClient& c = ps.OpenClient();
  // Pipelined: the client does not wait for its CONNACK.
  c.Send(MakeConnect(Version::k5, "parked", false, 60), Version::k5);
  const SubscribeEntry e{"t/#", SubscriptionOptions{.max_qos = 1}};
  c.Send(MakeSubscribe(7, &e), Version::k5);
  c.Send(Pingreq{}, Version::k5);
  sim.RunFor(kStep);
  ASSERT_EQ(fwd.parked.size(), 1u);
  EXPECT_FALSE(fwd.last_clean_start);
  EXPECT_EQ(c.pending(), 0u) << "a held CONNECT got an answer";
  EXPECT_EQ(sim.broker().counters().connects_parked, 1u);
  EXPECT_EQ(sim.broker().session_count(), 0u);
  // More bytes while it is held are kept behind the first ones.
  c.Send(Pingreq{}, Version::k5);
  sim.RunFor(kStep);
  EXPECT_EQ(c.pending(), 0u);

  ASSERT_TRUE(sim.broker().ResumeConnect(fwd.parked[0], sim.now()));
  sim.RunFor(kStep);
  OwnedFrame f;
  const Connack ack = c.Expect<Connack>(Version::k5, &f);
  EXPECT_EQ(ack.code, 0);
  EXPECT_FALSE(ack.session_present);
  const Suback sub = c.Expect<Suback>(Version::k5, &f);
  EXPECT_EQ(sub.packet_id, 7);
  EXPECT_EQ(c.Take().type(), PacketType::kPingresp);
  EXPECT_EQ(c.Take().type(), PacketType::kPingresp);
  EXPECT_EQ(fwd.asked, 1) << "the resumed CONNECT was offered again";
  EXPECT_EQ(sim.broker().session_count(), 1u);
  // Not twice.
  EXPECT_FALSE(sim.broker().ResumeConnect(fwd.parked[0], sim.now()));
}

TEST(ParkConnect, OtherClientIdsAndAssignedOnesAreNotHeld) {
  BrokerSim sim;
  ParkingForwarder fwd;
  sim.broker().set_forwarder(&fwd);
  RawClient& a = sim.AddClient();
  a.Open();
  a.Send(MakeConnect(Version::k5, "other", true), Version::k5);
  RawClient& b = sim.AddClient();
  b.Open();
  b.Send(MakeConnect(Version::k5, "", true), Version::k5);  // assigned
  sim.RunFor(kStep);
  OwnedFrame f;
  EXPECT_EQ(a.Expect<Connack>(Version::k5, &f).code, 0);
  EXPECT_EQ(b.Expect<Connack>(Version::k5, &f).code, 0);
  EXPECT_EQ(fwd.asked, 1);  // not for the assigned id
  EXPECT_EQ(sim.broker().counters().connects_parked, 0u);
}

TEST(ParkConnect, AnAbortedConnectClosesWithoutAConnack) {
  ParkingSim ps;
  BrokerSim& sim = ps.sim;
  ParkingForwarder& fwd = ps.fwd;
  RawClient& c = ps.OpenClient();
  c.Send(MakeConnect(Version::k5, "parked", false, 60), Version::k5);
  sim.RunFor(kStep);
  ASSERT_EQ(fwd.parked.size(), 1u);
  ASSERT_TRUE(sim.broker().AbortParkedConnect(
      fwd.parked[0], ReasonCode::kSessionTakenOver, sim.now()));
  sim.RunFor(kStep);
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(c.pending(), 0u);
  EXPECT_EQ(sim.broker().connection_count(), 0u);
  EXPECT_FALSE(sim.broker().ResumeConnect(fwd.parked[0], sim.now()));
}

TEST(ParkConnect, TooManyBytesBehindAHeldConnectClose) {
  BrokerOptions o;
  o.max_parked_bytes = 64;
  ParkingSim ps(o);
  BrokerSim& sim = ps.sim;
  ParkingForwarder& fwd = ps.fwd;
  RawClient& c = ps.OpenClient();
  c.Send(MakeConnect(Version::k311, "parked", false), Version::k311);
  sim.RunFor(kStep);
  ASSERT_EQ(fwd.parked.size(), 1u);
  const std::string big(200, 'x');
  c.Send(MakePublish("t/1", big, 0, 0), Version::k311);
  sim.RunFor(kStep);
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(sim.broker().connection_count(), 0u);
  EXPECT_FALSE(sim.broker().ResumeConnect(fwd.parked[0], sim.now()));
}

class Move : public testing::TestWithParam<Version> {};
INSTANTIATE_TEST_SUITE_P(Versions, Move,
                         testing::Values(Version::k311, Version::k5),
                         [](const auto& info) {
                           return info.param == Version::k5 ? "v5" : "v311";
                         });

// Subscriber "s" on core A with a QoS 1 and a QoS 2 subscription: one QoS 1
// message in flight (not acknowledged), one QoS 2 message past PUBREC
// (only PUBCOMP is missing), and two queued while it is offline. The
// session moves to core B; the client reconnects there.
TEST_P(Move, AnExportedSessionResumesOnAnotherCore) {
  const Version v = GetParam();
  BrokerSim a;
  BrokerSim b;
  RawClient& sub = a.AddClient();
  sub.Open();
  sub.Send(MakeConnect(v, "s", false, 300), v);
  a.RunFor(kStep);
  OwnedFrame f;
  ASSERT_EQ(sub.Expect<Connack>(v, &f).code, 0);
  const SubscribeEntry e1{"one/#", SubscriptionOptions{.max_qos = 1}};
  sub.Send(MakeSubscribe(1, &e1), v);
  const SubscribeEntry e2{"two/#", SubscriptionOptions{.max_qos = 2}};
  sub.Send(MakeSubscribe(2, &e2), v);
  a.RunFor(kStep);
  sub.Expect<Suback>(v, &f);
  sub.Expect<Suback>(v, &f);

  RawClient& pub = a.AddClient();
  pub.Open();
  pub.Send(MakeConnect(v, "p", true), v);
  a.RunFor(kStep);
  ASSERT_EQ(pub.Expect<Connack>(v, &f).code, 0);
  pub.Send(MakePublish("one/a", "m1", 1, 1), v);
  pub.Send(MakePublish("two/a", "m2", 2, 2), v);
  a.RunFor(kStep);
  const Publish d1 = sub.Expect<Publish>(v, &f);
  const uint16_t id1 = d1.packet_id;
  OwnedFrame f2;
  const Publish d2 = sub.Expect<Publish>(v, &f2);
  const uint16_t id2 = d2.packet_id;
  EXPECT_EQ(d2.qos, 2);
  PubResponse rec;
  rec.type = PacketType::kPubrec;
  rec.packet_id = id2;
  sub.Send(rec, v);
  a.RunFor(kStep);
  const PubResponse rel = sub.Expect<PubResponse>(v, &f);
  EXPECT_EQ(rel.type, PacketType::kPubrel);
  sub.Abort();  // neither PUBACK for m1 nor PUBCOMP for m2
  a.RunFor(kStep);
  pub.Send(MakePublish("one/b", "m3", 1, 3), v);
  pub.Send(MakePublish("two/b", "m4", 2, 4), v);
  a.RunFor(kStep);

  std::optional<StoredSession> moved =
      a.broker().ExportSession("s", ReasonCode::kSessionTakenOver, a.now());
  ASSERT_TRUE(moved.has_value());
  EXPECT_EQ(moved->subscriptions.size(), 2u);
  EXPECT_EQ(moved->queued.size(), 4u);
  EXPECT_FALSE(a.broker().GetSessionInfo("s").has_value());
  EXPECT_EQ(a.broker().counters().sessions_exported, 1u);
  // Gone from A's routing too.
  const uint64_t sent_before = a.broker().counters().publishes_sent[1];
  pub.Send(MakePublish("one/c", "not here", 1, 5), v);
  a.RunFor(kStep);
  EXPECT_EQ(a.broker().counters().publishes_sent[1], sent_before);

  ASSERT_TRUE(b.broker().ImportSession(*moved, b.now()).ok());
  EXPECT_EQ(b.broker().counters().sessions_imported, 1u);
  EXPECT_EQ(b.broker().ImportSession(*moved, b.now()).code(),
            absl::StatusCode::kAlreadyExists);
  RawClient& again = b.AddClient();
  again.Open();
  again.Send(MakeConnect(v, "s", false, 300), v);
  b.RunFor(kStep);
  const Connack ack = again.Expect<Connack>(v, &f);
  EXPECT_EQ(ack.code, 0);
  EXPECT_TRUE(ack.session_present);  // MQTT-3.2.2-3
  // MQTT-4.4.0-1: the unacknowledged PUBLISH again with DUP and its id,
  // the PUBREL again, then what was queued.
  const Publish r1 = again.Expect<Publish>(v, &f);
  EXPECT_EQ(PayloadOf(r1), "m1");
  EXPECT_TRUE(r1.dup);
  EXPECT_EQ(r1.packet_id, id1);
  const PubResponse rel2 = again.Expect<PubResponse>(v, &f);
  EXPECT_EQ(rel2.type, PacketType::kPubrel);
  EXPECT_EQ(rel2.packet_id, id2);
  const Publish r3 = again.Expect<Publish>(v, &f);
  EXPECT_EQ(PayloadOf(r3), "m3");
  EXPECT_EQ(r3.qos, 1);
  EXPECT_FALSE(r3.dup);
  OwnedFrame f4;
  const Publish r4 = again.Expect<Publish>(v, &f4);
  EXPECT_EQ(PayloadOf(r4), "m4");
  EXPECT_EQ(r4.qos, 2);
  EXPECT_NE(r4.packet_id, id1);
  EXPECT_NE(r4.packet_id, id2);
  // The subscriptions route on B.
  RawClient& pub_b = b.AddClient();
  pub_b.Open();
  pub_b.Send(MakeConnect(v, "pb", true), v);
  pub_b.Send(MakePublish("one/z", "m5", 0, 0), v);
  b.RunFor(kStep);
  pub_b.Expect<Connack>(v, &f);
  const Publish r5 = again.Expect<Publish>(v, &f);
  EXPECT_EQ(PayloadOf(r5), "m5");
}

TEST(Move, ExportClosesTheConnectedClientAndDropsTheDelayedWill) {
  BrokerSim a;
  RawClient& watcher = a.AddClient();
  watcher.Open();
  watcher.Send(MakeConnect(Version::k5, "w", true), Version::k5);
  const SubscribeEntry e{"will/#", SubscriptionOptions{.max_qos = 0}};
  watcher.Send(MakeSubscribe(1, &e), Version::k5);
  a.RunFor(kStep);
  OwnedFrame f;
  watcher.Expect<Connack>(Version::k5, &f);
  watcher.Expect<Suback>(Version::k5, &f);

  RawClient& c = a.AddClient();
  c.Open();
  Connect connect = MakeConnect(Version::k5, "c", false, 300);
  Will will;
  will.topic = "will/c";
  will.payload = AsBytes("gone");
  will.properties.will_delay_interval = 10;
  connect.will = will;
  c.Send(connect, Version::k5);
  a.RunFor(kStep);
  ASSERT_EQ(c.Expect<Connack>(Version::k5, &f).code, 0);

  std::optional<StoredSession> moved =
      a.broker().ExportSession("c", ReasonCode::kSessionTakenOver, a.now());
  ASSERT_TRUE(moved.has_value());
  a.RunFor(kStep);
  const Disconnect d = c.Expect<Disconnect>(Version::k5, &f);
  EXPECT_EQ(d.reason, ReasonCode::kSessionTakenOver);  // MQTT-3.1.4-3
  EXPECT_TRUE(c.closed());
  // MQTT-3.1.3-9: the reconnect the session moved for cancels its will.
  a.RunFor(seconds(20));
  EXPECT_EQ(watcher.pending(), 0u);
  EXPECT_EQ(a.broker().counters().wills_published, 0u);
}

TEST(Move, ASessionThatEndsWithItsConnectionIsNotExported) {
  BrokerSim a;
  RawClient& c = a.AddClient();
  c.Open();
  c.Send(MakeConnect(Version::k5, "c", true), Version::k5);  // expiry 0
  a.RunFor(kStep);
  OwnedFrame f;
  ASSERT_EQ(c.Expect<Connack>(Version::k5, &f).code, 0);
  EXPECT_FALSE(a.broker()
                   .ExportSession("c", ReasonCode::kSessionTakenOver, a.now())
                   .has_value());
  a.RunFor(kStep);
  EXPECT_TRUE(c.closed());
  EXPECT_FALSE(
      a.broker()
          .ExportSession("nobody", ReasonCode::kSessionTakenOver, a.now())
          .has_value());
}

// Keeps every message the core reports, as the multi-Loop broker's transit
// log does.
struct KeepingForwarder : BrokerForwarder {
  void OnClientPublish(const MessageRef& m) override { kept.push_back(m); }
  std::vector<MessageRef> kept;
};

RawClient& Subscribed(BrokerSim& sim, std::string_view id,
                      std::string_view filter, SubscriptionOptions options) {
  RawClient& c = sim.AddClient();
  c.Open();
  c.Send(MakeConnect(Version::k5, id, false, 300), Version::k5);
  const SubscribeEntry e{filter, options};
  c.Send(MakeSubscribe(1, &e), Version::k5);
  sim.RunFor(kStep);
  OwnedFrame f;
  EXPECT_EQ(c.Expect<Connack>(Version::k5, &f).code, 0);
  EXPECT_EQ(c.Expect<Suback>(Version::k5, &f).packet_id, 1);
  return c;
}

// RouteToSession: a message routed again reaches the named session's own
// subscriptions and nobody else; No Local, shared groups, unknown ids and
// expiry as the comment in broker.h says.
TEST(RouteToSession, RoutesAgainToOneSessionOnly) {
  BrokerSim sim;
  KeepingForwarder fwd;
  sim.broker().set_forwarder(&fwd);
  RawClient& s = Subscribed(sim, "s", "t/#", {.max_qos = 1});
  RawClient& other = Subscribed(sim, "other", "t/#", {.max_qos = 1});
  RawClient& member = Subscribed(sim, "member", "$share/g/t/#", {.max_qos = 1});
  RawClient& elsewhere = Subscribed(sim, "elsewhere", "x/#", {.max_qos = 1});
  // The publisher subscribes too, with No Local (MQTT-3.8.3-3).
  RawClient& pub =
      Subscribed(sim, "p", "t/#", {.max_qos = 1, .no_local = true});
  pub.Send(MakePublish("t/a", "m1", 1, 9), Version::k5);
  Publish expiring = MakePublish("t/b", "m2", 1, 10);
  expiring.properties.message_expiry_interval = 1;
  pub.Send(expiring, Version::k5);
  sim.RunFor(kStep);
  OwnedFrame f;
  pub.Expect<PubResponse>(Version::k5, &f);
  pub.Expect<PubResponse>(Version::k5, &f);
  ASSERT_EQ(fwd.kept.size(), 2u);
  for (RawClient* c : {&s, &other, &member}) {
    EXPECT_EQ(PayloadOf(c->Expect<Publish>(Version::k5, &f)), "m1");
    EXPECT_EQ(PayloadOf(c->Expect<Publish>(Version::k5, &f)), "m2");
    EXPECT_EQ(c->pending(), 0u);
  }

  Broker& b = sim.broker();
  EXPECT_EQ(b.RouteToSession("s", fwd.kept[0], sim.now()), 1u);
  sim.RunFor(kStep);
  const Publish again = s.Expect<Publish>(Version::k5, &f);
  EXPECT_EQ(PayloadOf(again), "m1");
  EXPECT_EQ(again.qos, 1);
  EXPECT_FALSE(again.dup);  // a new delivery, not a resend
  EXPECT_EQ(other.pending(), 0u);
  EXPECT_EQ(member.pending(), 0u);  // the group had its turn

  EXPECT_EQ(b.RouteToSession("member", fwd.kept[0], sim.now()), 0u);
  EXPECT_EQ(b.RouteToSession("elsewhere", fwd.kept[0], sim.now()), 0u);
  EXPECT_EQ(b.RouteToSession("p", fwd.kept[0], sim.now()), 0u);
  EXPECT_EQ(b.RouteToSession("nobody", fwd.kept[0], sim.now()), 0u);
  // MQTT-3.3.2-5: past its expiry interval it is not delivered again.
  sim.RunFor(seconds(2));
  EXPECT_EQ(b.RouteToSession("s", fwd.kept[1], sim.now()), 0u);
  sim.RunFor(kStep);
  for (RawClient* c : {&s, &other, &member, &elsewhere, &pub}) {
    EXPECT_EQ(c->pending(), 0u);
  }
}

}  // namespace
}  // namespace ringlab::mqtt
