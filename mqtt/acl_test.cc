// AclFile rules (user, topic, pattern, deny, wildcards, the '$' rule) and
// each allow/deny path through the broker core on 3.1.1 and v5: SUBACK
// failure codes, dropped or 0x87-acknowledged publishes, read-denied topics
// and retained messages not delivered, denied wills.
#include "mqtt/acl.h"

#include <string>

#include "gtest/gtest.h"
#include "mqtt/auth.h"
#include "mqtt/internal/broker_sim.h"

namespace ringlab::mqtt {
namespace {

using internal::BrokerSim;
using internal::OwnedFrame;
using internal::RawClient;
using std::chrono::milliseconds;

constexpr char kAcl[] =
    "# anonymous clients\n"
    "topic read public/#\n"
    "\n"
    "user alice\n"
    "topic readwrite sensors/#\n"
    "topic deny sensors/secret\n"
    "topic write cmd/+\n"
    "topic read $SYS/#\n"
    "user bob\n"
    "topic read sensors/+/temp\n"
    "topic public/#\n"  // no access word: readwrite
    "pattern readwrite devices/%c/#\n"
    "pattern read users/%u\n"
    "pattern write ids/id-%c\n";

ClientIdentity Anon(std::string_view id) { return {id, std::nullopt}; }
ClientIdentity User(std::string_view id, std::string_view user) {
  return {id, user};
}

TEST(AclFileTest, TopicRulesByUser) {
  absl::StatusOr<AclFile> acl = AclFile::Parse(kAcl);
  ASSERT_TRUE(acl.ok()) << acl.status();
  EXPECT_EQ(acl->rule_count(), 10u);
  const ClientIdentity alice = User("a1", "alice");
  const ClientIdentity bob = User("b1", "bob");
  const ClientIdentity anon = Anon("x1");
  using A = AclFile;
  EXPECT_TRUE(acl->Allows(alice, "sensors/t1", A::kWrite));
  EXPECT_TRUE(acl->Allows(alice, "sensors", A::kRead));  // "#" has parent
  EXPECT_FALSE(acl->Allows(alice, "sensors/secret", A::kRead));  // deny
  EXPECT_FALSE(acl->Allows(alice, "sensors/secret", A::kWrite));
  EXPECT_TRUE(acl->Allows(alice, "cmd/go", A::kWrite));
  EXPECT_FALSE(acl->Allows(alice, "cmd/go", A::kRead));  // write only
  EXPECT_FALSE(acl->Allows(alice, "cmd/go/now", A::kWrite));
  EXPECT_FALSE(acl->Allows(alice, "public/x", A::kRead));  // anonymous rule
  EXPECT_TRUE(acl->Allows(bob, "sensors/t1/temp", A::kRead));
  EXPECT_FALSE(acl->Allows(bob, "sensors/t1/temp", A::kWrite));
  EXPECT_TRUE(acl->Allows(bob, "public/x", A::kWrite));
  EXPECT_TRUE(acl->Allows(anon, "public/x", A::kRead));
  EXPECT_FALSE(acl->Allows(anon, "public/x", A::kWrite));
  EXPECT_FALSE(acl->Allows(anon, "sensors/t1", A::kRead));
  EXPECT_FALSE(acl->Allows(User("u", "nobody"), "public/x", A::kRead));
}

TEST(AclFileTest, PatternsSubstituteClientIdAndUser) {
  absl::StatusOr<AclFile> acl = AclFile::Parse(kAcl);
  ASSERT_TRUE(acl.ok());
  using A = AclFile;
  EXPECT_TRUE(acl->Allows(Anon("d7"), "devices/d7/state", A::kWrite));
  EXPECT_TRUE(acl->Allows(User("d7", "bob"), "devices/d7", A::kRead));
  EXPECT_FALSE(acl->Allows(Anon("d7"), "devices/d8/state", A::kWrite));
  EXPECT_TRUE(acl->Allows(User("x", "bob"), "users/bob", A::kRead));
  EXPECT_FALSE(acl->Allows(User("x", "bob"), "users/alice", A::kRead));
  EXPECT_FALSE(acl->Allows(Anon("bob"), "users/bob", A::kRead));  // no %u
  EXPECT_TRUE(acl->Allows(Anon("42"), "ids/id-42", A::kWrite));
  EXPECT_FALSE(acl->Allows(Anon("42"), "ids/id-420", A::kWrite));
  EXPECT_FALSE(acl->Allows(Anon("42"), "ids/id-4", A::kWrite));
  // A client id with wildcards or '/' never widens a pattern.
  EXPECT_FALSE(acl->Allows(Anon("+"), "devices/+/x", A::kWrite));
  EXPECT_FALSE(acl->Allows(Anon("a/b"), "devices/a/b/x", A::kWrite));
  EXPECT_FALSE(acl->AllowsSubscribe(Anon("#"), "devices/#"));
}

TEST(AclFileTest, SubscriptionsMustLieInsideARule) {
  absl::StatusOr<AclFile> acl = AclFile::Parse(kAcl);
  ASSERT_TRUE(acl.ok());
  const ClientIdentity alice = User("a1", "alice");
  const ClientIdentity bob = User("b1", "bob");
  EXPECT_TRUE(acl->AllowsSubscribe(alice, "sensors/#"));
  EXPECT_TRUE(acl->AllowsSubscribe(alice, "sensors/+/x"));
  EXPECT_TRUE(acl->AllowsSubscribe(alice, "$share/g/sensors/#"));
  EXPECT_FALSE(acl->AllowsSubscribe(alice, "sensors/secret"));  // deny
  EXPECT_FALSE(acl->AllowsSubscribe(alice, "cmd/+"));           // write only
  EXPECT_FALSE(acl->AllowsSubscribe(alice, "#"));  // wider than rules
  EXPECT_TRUE(acl->AllowsSubscribe(alice, "$SYS/broker/uptime"));
  EXPECT_TRUE(acl->AllowsSubscribe(bob, "sensors/k/temp"));
  EXPECT_TRUE(acl->AllowsSubscribe(bob, "sensors/+/temp"));
  EXPECT_FALSE(acl->AllowsSubscribe(bob, "sensors/#"));
  EXPECT_FALSE(acl->AllowsSubscribe(bob, "sensors/k/+"));
  EXPECT_TRUE(acl->AllowsSubscribe(Anon("d1"), "devices/d1/#"));
  EXPECT_FALSE(acl->AllowsSubscribe(Anon("d1"), "devices/+/#"));
}

TEST(AclFileTest, DollarTopicsNeedExplicitRules) {
  absl::StatusOr<AclFile> acl = AclFile::Parse("topic readwrite #\n");
  ASSERT_TRUE(acl.ok());
  EXPECT_TRUE(acl->Allows(Anon("c"), "a/b", AclFile::kRead));
  EXPECT_FALSE(acl->Allows(Anon("c"), "$SYS/x", AclFile::kRead));
  EXPECT_TRUE(acl->AllowsSubscribe(Anon("c"), "#"));
  EXPECT_FALSE(acl->AllowsSubscribe(Anon("c"), "$SYS/#"));
}

TEST(AclFileTest, ParseErrorsNameTheLine) {
  for (const char* bad :
       {"topic\n", "topic sideways a\n", "bogus a\n", "user\n",
        "topic read a/#/b\n", "pattern write a+\n"}) {
    absl::StatusOr<AclFile> acl = AclFile::Parse(bad);
    EXPECT_FALSE(acl.ok()) << bad;
    EXPECT_EQ(acl.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(acl.status().message().find("line 1"), std::string::npos);
  }
  EXPECT_EQ(AclFile::Load("/nonexistent/acl").status().code(),
            absl::StatusCode::kNotFound);
}

// ---- Through the broker core ------------------------------------------

class AclBroker : public ::testing::TestWithParam<Version> {
 protected:
  AclBroker()
      : auth_(MakeOptions()), sim_({}, std::chrono::microseconds(50), &auth_) {}
  static FileAuthenticator::Options MakeOptions() {
    FileAuthenticator::Options o;
    o.acl = *AclFile::Parse(kAcl);
    o.allow_anonymous = true;  // user names are taken on trust here
    return o;
  }
  Version v() const { return GetParam(); }
  bool v5() const { return v() == Version::k5; }

  RawClient& Connected(std::string_view id,
                       std::optional<std::string_view> user) {
    RawClient& c = sim_.AddClient();
    c.Open();
    Connect connect;
    connect.version = v();
    connect.client_id = id;
    connect.username = user;
    c.Send(connect, v());
    Step();
    OwnedFrame f;
    EXPECT_EQ(c.Expect<Connack>(v(), &f).code, 0);
    return c;
  }
  uint8_t Subscribe(RawClient& c, std::string_view filter) {
    SubscribeEntry e{filter, {}};
    e.options.max_qos = 1;
    mqtt::Subscribe s;
    s.packet_id = next_id_++;
    s.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
    c.Send(s, v());
    Step();
    OwnedFrame f;
    Suback ack = c.Expect<Suback>(v(), &f);
    EXPECT_EQ(ack.reason_codes.size(), 1u);
    return ack.reason_codes.empty() ? 0xFF : ack.reason_codes[0];
  }
  void Publish(RawClient& c, std::string_view topic, uint8_t qos,
               bool retain = false) {
    mqtt::Publish p;
    p.topic = topic;
    p.payload = AsBytes(std::string_view("x"));
    p.qos = qos;
    p.retain = retain;
    p.packet_id = qos > 0 ? next_id_++ : 0;
    c.Send(p, v());
    Step();
  }
  // The PUBLISH topics `c` received (acknowledging QoS 1), in order.
  std::vector<std::string> Received(RawClient& c) {
    std::vector<std::string> topics;
    while (c.pending() > 0) {
      OwnedFrame f;
      mqtt::Publish p = c.Expect<mqtt::Publish>(v(), &f);
      topics.emplace_back(p.topic);
      if (p.qos == 1) {
        PubResponse ack;
        ack.packet_id = p.packet_id;
        c.Send(ack, v());
      }
    }
    Step();
    return topics;
  }
  void Step() { sim_.RunFor(milliseconds(5)); }

  FileAuthenticator auth_;
  BrokerSim sim_;
  uint16_t next_id_ = 1;
};

TEST_P(AclBroker, DeniedSubscribeGetsFailureCode) {
  RawClient& bob = Connected("b1", "bob");
  EXPECT_EQ(Subscribe(bob, "sensors/+/temp"), 1);  // granted QoS 1
  // 3.1.1 §3.9.3: 0x80 Failure; v5 §3.9.3: 0x87 Not authorized.
  EXPECT_EQ(Subscribe(bob, "sensors/#"), v5() ? 0x87 : 0x80);
  EXPECT_EQ(Subscribe(bob, "cmd/go"), v5() ? 0x87 : 0x80);
  EXPECT_EQ(sim_.broker().counters().subscribes_denied, 2u);
  EXPECT_EQ(sim_.broker().subscription_count(), 1u);
}

TEST_P(AclBroker, DeniedPublishIsDroppedOrRefused) {
  RawClient& alice = Connected("a1", "alice");
  RawClient& bob = Connected("b1", "bob");
  ASSERT_EQ(Subscribe(bob, "sensors/+/temp"), 1);
  Publish(bob, "sensors/k/temp", 0);  // bob may read, not write: dropped
  for (uint8_t qos : {1, 2}) {
    Publish(bob, "sensors/k/temp", qos);
    OwnedFrame f;
    PubResponse r = bob.Expect<PubResponse>(v(), &f);
    EXPECT_EQ(r.type, qos == 1 ? PacketType::kPuback : PacketType::kPubrec);
    // v5 §3.4.2.1: 0x87 Not authorized. 3.1.1 has no code: the PUBACK /
    // PUBREC goes out and the message is dropped.
    if (v5()) {
      EXPECT_EQ(r.reason, ReasonCode::kNotAuthorized);
    }
  }
  EXPECT_TRUE(Received(bob).empty());
  EXPECT_EQ(sim_.broker().counters().publishes_denied, 3u);
  // The allowed path: alice writes, bob receives.
  Publish(alice, "sensors/k/temp", 1);
  OwnedFrame f;
  PubResponse ok = alice.Expect<PubResponse>(v(), &f);
  EXPECT_EQ(ok.reason, ReasonCode::kSuccess);
  EXPECT_EQ(Received(bob), std::vector<std::string>{"sensors/k/temp"});
}

TEST_P(AclBroker, ReadDeniedTopicsAreNotDelivered) {
  RawClient& alice = Connected("a1", "alice");
  RawClient& writer = Connected("d1", "bob");  // writes public/ and devices/
  ASSERT_EQ(Subscribe(alice, "sensors/#"), 1);
  Publish(alice, "sensors/open", 0);
  Publish(alice, "sensors/secret", 0);  // deny: not written either
  EXPECT_EQ(Received(alice), std::vector<std::string>{"sensors/open"});
  // bob may write public/#, anonymous clients may read it; alice has no
  // public rule, so her subscription is refused.
  RawClient& anon = Connected("x1", std::nullopt);
  ASSERT_EQ(Subscribe(anon, "public/#"), 1);
  ASSERT_EQ(Subscribe(writer, "devices/d1/#"), 1);
  Publish(writer, "public/news", 1);
  OwnedFrame f;
  writer.Expect<PubResponse>(v(), &f);
  EXPECT_EQ(Received(anon), std::vector<std::string>{"public/news"});
  EXPECT_EQ(Subscribe(alice, "public/#"), v5() ? 0x87 : 0x80);
}

TEST_P(AclBroker, PerDeliveryReadCheckFiltersWideSubscriptions) {
  // A subscription allowed by a wide read rule; a narrower deny line still
  // keeps its topics away, for live and retained messages alike.
  FileAuthenticator::Options o;
  o.acl = *AclFile::Parse(
      "user w\ntopic write #\n"
      "user r\ntopic read a/#\ntopic deny a/secret\n");
  o.allow_anonymous = true;
  FileAuthenticator auth(std::move(o));
  BrokerSim sim({}, std::chrono::microseconds(50), &auth);
  auto connect = [&](std::string_view id) {
    RawClient& c = sim.AddClient();
    c.Open();
    Connect connect;
    connect.version = v();
    connect.client_id = id;
    connect.username = id;
    c.Send(connect, v());
    sim.RunFor(milliseconds(5));
    OwnedFrame f;
    EXPECT_EQ(c.Expect<Connack>(v(), &f).code, 0);
    return &c;
  };
  RawClient* w = connect("w");
  RawClient* r = connect("r");
  // Retained first: a/secret retained must not reach r on subscribe.
  for (std::string_view topic : {"a/secret", "a/open"}) {
    mqtt::Publish p;
    p.topic = topic;
    p.payload = AsBytes(std::string_view("x"));
    p.retain = true;
    w->Send(p, v());
  }
  sim.RunFor(milliseconds(5));
  SubscribeEntry e{"a/#", {}};
  mqtt::Subscribe s;
  s.packet_id = 1;
  s.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
  r->Send(s, v());
  sim.RunFor(milliseconds(5));
  OwnedFrame f;
  ASSERT_EQ(r->Expect<Suback>(v(), &f).reason_codes[0], 0);
  for (std::string_view topic : {"a/secret", "a/open2"}) {
    mqtt::Publish p;
    p.topic = topic;
    p.payload = AsBytes(std::string_view("y"));
    w->Send(p, v());
  }
  sim.RunFor(milliseconds(5));
  std::vector<std::string> got;
  while (r->pending() > 0) {
    got.emplace_back(r->Expect<mqtt::Publish>(v(), &f).topic);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"a/open", "a/open2"}));
  EXPECT_EQ(sim.broker().counters().deliveries_denied, 2u);
  EXPECT_EQ(auth.counters().receive_denied, 2u);
}

TEST_P(AclBroker, DeniedWillIsNotPublished) {
  RawClient& anon = Connected("x1", std::nullopt);
  ASSERT_EQ(Subscribe(anon, "public/#"), 1);
  for (std::string_view who : {"alice", "bob"}) {
    RawClient& c = sim_.AddClient();
    c.Open();
    Connect connect;
    connect.version = v();
    connect.client_id = who == "alice" ? "a9" : "b9";
    connect.username = who;
    Will will;
    will.topic = "public/will";
    will.payload = AsBytes(std::string_view("bye"));
    connect.will = will;
    c.Send(connect, v());
    Step();
    OwnedFrame f;
    ASSERT_EQ(c.Expect<Connack>(v(), &f).code, 0);
    c.Abort();  // network failure: the will goes out if allowed
    Step();
  }
  // alice may not write public/#, bob may.
  EXPECT_EQ(Received(anon), std::vector<std::string>{"public/will"});
}

INSTANTIATE_TEST_SUITE_P(Versions, AclBroker,
                         ::testing::Values(Version::k311, Version::k5),
                         [](const auto& info) {
                           return info.param == Version::k5 ? "v5" : "v311";
                         });

}  // namespace
}  // namespace ringlab::mqtt
