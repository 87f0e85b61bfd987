// TokenBucket arithmetic, and the broker's rate limits on a SimNetwork: a
// client over its message or byte rate is disconnected (v5 DISCONNECT 0x96
// / 0x97, 3.1.1 closed) while a client within its rate keeps publishing and
// its subscriber keeps receiving; new connections over the rate are
// refused until the bucket refills.
#include "mqtt/rate_limit.h"

#include <string>

#include "gtest/gtest.h"
#include "mqtt/broker.h"
#include "mqtt/internal/broker_sim.h"

namespace ringlab::mqtt {
namespace {

using internal::BrokerSim;
using internal::OwnedFrame;
using internal::RawClient;
using std::chrono::milliseconds;

TEST(TokenBucketTest, BurstThenRefillAtRate) {
  TokenBucket b(/*rate_per_s=*/10, /*burst=*/3);
  const Timestamp t0 = Timestamp::FromNanos(1'000'000'000);
  EXPECT_TRUE(b.TryTake(1, t0));
  EXPECT_TRUE(b.TryTake(2, t0));
  EXPECT_FALSE(b.TryTake(1, t0));
  EXPECT_FALSE(b.TryTake(1, t0 + milliseconds(99)));  // 0.99 tokens
  EXPECT_TRUE(b.TryTake(1, t0 + milliseconds(101)));
  // Refill is capped at the burst.
  EXPECT_DOUBLE_EQ(b.Available(t0 + std::chrono::seconds(10)), 3.0);
  EXPECT_FALSE(b.TryTake(4, t0 + std::chrono::seconds(20)));  // > burst
  // A clock step backwards adds nothing.
  EXPECT_TRUE(b.TryTake(3, t0 + std::chrono::seconds(20)));
  EXPECT_FALSE(b.TryTake(1, t0));
}

TEST(TokenBucketTest, DefaultIsUnlimited) {
  TokenBucket b;
  EXPECT_TRUE(b.unlimited());
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(b.TryTake(1e9, Timestamp()));
}

class RateBroker : public ::testing::TestWithParam<Version> {
 protected:
  static BrokerOptions Options(double messages_per_s, double bytes_per_s) {
    BrokerOptions o;
    o.rate.messages_per_s = messages_per_s;
    o.rate.message_burst = 5;
    o.rate.bytes_per_s = bytes_per_s;
    o.rate.byte_burst = bytes_per_s > 0 ? 2000 : 0;
    return o;
  }
  Version v() const { return GetParam(); }

  RawClient& Connected(BrokerSim& sim, std::string_view id) {
    RawClient& c = sim.AddClient();
    c.Open();
    Connect connect;
    connect.version = v();
    connect.client_id = id;
    connect.keep_alive_s = 0;
    c.Send(connect, v());
    sim.RunFor(milliseconds(1));
    OwnedFrame f;
    EXPECT_EQ(c.Expect<Connack>(v(), &f).code, 0);
    return c;
  }
  void Publish(RawClient& c, std::string_view topic, size_t payload_bytes) {
    payload_.assign(payload_bytes, 'p');
    mqtt::Publish p;
    p.topic = topic;
    p.payload = AsBytes(std::string_view(payload_));
    c.Send(p, v());
  }
  void Subscribe(BrokerSim& sim, RawClient& c, std::string_view filter) {
    SubscribeEntry e{filter, {}};
    mqtt::Subscribe s;
    s.packet_id = 1;
    s.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
    c.Send(s, v());
    sim.RunFor(milliseconds(1));
    OwnedFrame f;
    EXPECT_EQ(c.Expect<Suback>(v(), &f).reason_codes[0], 0);
  }
  // Counts the PUBLISH packets `c` got per topic prefix "fast"/"slow".
  void Count(RawClient& c, int* fast, int* slow) {
    while (c.pending() > 0) {
      OwnedFrame f;
      mqtt::Publish p = c.Expect<mqtt::Publish>(v(), &f);
      (p.topic == "fast" ? *fast : *slow) += 1;
    }
  }
  // The rate-limited client was told why (v5) and closed.
  void ExpectDisconnected(BrokerSim& sim, RawClient& c, ReasonCode code) {
    sim.RunFor(milliseconds(5));
    if (v() == Version::k5) {
      ASSERT_GT(c.pending(), 0u);
      OwnedFrame f;
      EXPECT_EQ(c.Expect<Disconnect>(v(), &f).reason, code);
    }
    EXPECT_EQ(c.pending(), 0u);
    EXPECT_TRUE(c.closed());
  }

  std::string payload_;
};

TEST_P(RateBroker, MessageRateDisconnectsOnlyTheFastClient) {
  BrokerSim sim(Options(/*messages_per_s=*/50, 0));
  RawClient& sub = Connected(sim, "sub");
  Subscribe(sim, sub, "#");
  RawClient& fast = Connected(sim, "fast");
  RawClient& slow = Connected(sim, "slow");
  int fast_got = 0, slow_got = 0;
  // slow: 20/s for a second, within 50/s. fast: 5 at once (the burst), then
  // 100/s, over the rate.
  for (int i = 0; i < 5; ++i) Publish(fast, "fast", 10);
  for (int ms = 0; ms < 1000; ms += 10) {
    if (ms % 50 == 0) Publish(slow, "slow", 10);
    if (!fast.closed()) Publish(fast, "fast", 10);
    sim.RunFor(milliseconds(10));
    Count(sub, &fast_got, &slow_got);
  }
  ExpectDisconnected(sim, fast, ReasonCode::kMessageRateTooHigh);
  EXPECT_FALSE(slow.closed());
  EXPECT_EQ(slow_got, 20);
  // The burst passed; the first packet over the rate did not.
  EXPECT_GE(fast_got, 5);
  EXPECT_LT(fast_got, 20);
  EXPECT_EQ(sim.broker().counters().rate_limited_messages, 1u);
  EXPECT_EQ(sim.broker().counters().protocol_errors, 0u);
}

TEST_P(RateBroker, ByteRateDisconnectsWithQuotaExceeded) {
  BrokerSim sim(Options(0, /*bytes_per_s=*/1000));
  RawClient& sub = Connected(sim, "sub");
  Subscribe(sim, sub, "#");
  RawClient& big = Connected(sim, "big");
  RawClient& small = Connected(sim, "small");
  int big_got = 0, small_got = 0;
  for (int ms = 0; ms < 1000; ms += 100) {
    Publish(small, "slow", 50);                    // ~60 bytes each, 600 B/s
    if (!big.closed()) Publish(big, "fast", 900);  // ~9 kB/s
    sim.RunFor(milliseconds(100));
    Count(sub, &big_got, &small_got);
  }
  ExpectDisconnected(sim, big, ReasonCode::kQuotaExceeded);
  EXPECT_FALSE(small.closed());
  EXPECT_EQ(small_got, 10);
  EXPECT_GE(big_got, 2);  // the 2000-byte burst
  EXPECT_LT(big_got, 5);
  EXPECT_EQ(sim.broker().counters().rate_limited_bytes, 1u);
}

INSTANTIATE_TEST_SUITE_P(Versions, RateBroker,
                         ::testing::Values(Version::k311, Version::k5),
                         [](const auto& info) {
                           return info.param == Version::k5 ? "v5" : "v311";
                         });

TEST(ConnectionRateTest, RefusesOverTheRateUntilRefilled) {
  BrokerOptions o;
  o.rate.connections_per_s = 10;
  o.rate.connection_burst = 3;
  Broker broker(o);
  const Timestamp t0 = Timestamp::FromNanos(5'000'000'000);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(broker.OnConnectionOpened(t0).ok());
  absl::StatusOr<ConnectionId> refused = broker.OnConnectionOpened(t0);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(broker.counters().connections_refused_rate, 1u);
  EXPECT_EQ(broker.connection_count(), 3u);
  EXPECT_TRUE(broker.OnConnectionOpened(t0 + milliseconds(100)).ok());
  EXPECT_FALSE(broker.OnConnectionOpened(t0 + milliseconds(100)).ok());
  EXPECT_EQ(broker.counters().connections_refused_rate, 2u);
}

// Issue 12 "Limits": the rate is per listener, so a flood on one listener
// does not refuse the other's connections.
TEST(ConnectionRateTest, EachListenerHasItsOwnBucket) {
  BrokerOptions o;
  o.rate.connections_per_s = 10;
  o.rate.connection_burst = 2;
  Broker broker(o);
  const Timestamp t0 = Timestamp::FromNanos(5'000'000'000);
  constexpr uint32_t kPlain = 0, kTls = 1;
  EXPECT_TRUE(broker.OnConnectionOpened(t0, kPlain).ok());
  EXPECT_TRUE(broker.OnConnectionOpened(t0, kPlain).ok());
  EXPECT_FALSE(broker.OnConnectionOpened(t0, kPlain).ok());  // over its rate
  EXPECT_EQ(broker.counters().connections_refused_rate, 1u);
  // The TLS listener is not affected by the plain one's flood.
  EXPECT_TRUE(broker.OnConnectionOpened(t0, kTls).ok());
  EXPECT_TRUE(broker.OnConnectionOpened(t0, kTls).ok());
  EXPECT_FALSE(broker.OnConnectionOpened(t0, kTls).ok());
  EXPECT_FALSE(broker.OnConnectionOpened(t0, kPlain).ok());
  EXPECT_EQ(broker.counters().connections_refused_rate, 3u);
  EXPECT_EQ(broker.connection_count(), 4u);
  EXPECT_EQ(
      broker.OnConnectionOpened(t0, Broker::kMaxListeners).status().code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ringlab::mqtt
