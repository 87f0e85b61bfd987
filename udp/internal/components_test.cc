// Unit tests of the small recovery pieces: SipHash, RTT estimation, NewReno,
// the pacer and the fixed-capacity rings.
#include <array>
#include <vector>

#include "gtest/gtest.h"
#include "udp/internal/congestion.h"
#include "udp/internal/rings.h"
#include "udp/internal/rtt.h"
#include "udp/internal/siphash.h"

namespace ringlab::rudp::internal {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(SipHashTest, MatchesThePaperVectors) {
  // Aumasson & Bernstein 2012, Appendix A: key 00..0f, message 00..0e.
  SipKey key{0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
  std::array<std::byte, 15> message;
  for (size_t i = 0; i < message.size(); ++i) message[i] = std::byte(i);
  EXPECT_EQ(SipHash24(key, message), 0xa129ca6149be45e5ull);
  // The reference implementation's vector for the empty message.
  EXPECT_EQ(SipHash24(key, {}), 0x726fdb47dd0e0e31ull);
}

TEST(RttEstimatorTest, FollowsRfc9002Section5) {
  RttEstimator rtt(milliseconds(333));
  EXPECT_FALSE(rtt.has_sample());
  EXPECT_EQ(rtt.smoothed(), milliseconds(333));
  rtt.OnSample(milliseconds(100), milliseconds(0));
  // §5.3: the first sample sets smoothed = sample, rttvar = sample / 2.
  EXPECT_EQ(rtt.smoothed(), milliseconds(100));
  EXPECT_EQ(rtt.rttvar(), milliseconds(50));
  EXPECT_EQ(rtt.min(), milliseconds(100));
  // A 120 ms sample with 10 ms ack delay: adjusted 110 ms.
  rtt.OnSample(milliseconds(120), milliseconds(10));
  EXPECT_EQ(rtt.rttvar(),
            (Duration(milliseconds(50)) * 3 + milliseconds(10)) / 4);
  EXPECT_EQ(rtt.smoothed(),
            (Duration(milliseconds(100)) * 7 + milliseconds(110)) / 8);
  // Ack delay is not subtracted below min_rtt.
  rtt.OnSample(milliseconds(101), milliseconds(50));
  EXPECT_EQ(rtt.latest(), milliseconds(101));
  EXPECT_EQ(rtt.min(), milliseconds(100));
  // §6.2.1 PTO and §6.1.2 loss delay.
  EXPECT_EQ(rtt.ProbeTimeout(milliseconds(5), milliseconds(1)),
            rtt.smoothed() + rtt.rttvar() * 4 + milliseconds(5));
  const Duration base = std::max(rtt.smoothed(), rtt.latest());
  EXPECT_EQ(rtt.LossDelay(milliseconds(1)), base + base / 8);
  RttEstimator tiny(microseconds(10));
  tiny.OnSample(microseconds(10), Duration::zero());
  EXPECT_EQ(tiny.LossDelay(milliseconds(1)), milliseconds(1));  // granularity
}

TEST(NewRenoTest, InitialWindowSlowStartAndReduction) {
  NewReno cc(1400, true);
  // §7.2: min(10 * 1400, max(14720, 2800)) = 14000.
  EXPECT_EQ(cc.window(), 14000u);
  EXPECT_TRUE(cc.in_slow_start());
  const Timestamp t0 = Timestamp::FromNanos(1000);
  for (int i = 0; i < 10; ++i) cc.OnPacketSent(1400);
  EXPECT_FALSE(cc.CanSend(1400));
  for (int i = 0; i < 10; ++i) cc.OnPacketAcked(1400, t0, false);
  EXPECT_EQ(cc.window(), 28000u);  // slow start doubles per round trip
  EXPECT_EQ(cc.bytes_in_flight(), 0u);
  // A loss: half the window, and a second loss from the same flight does
  // not reduce it again (§7.3.2).
  const Timestamp now = Timestamp::FromNanos(5000);
  cc.OnCongestionEvent(t0, now);
  EXPECT_EQ(cc.window(), 14000u);
  cc.OnCongestionEvent(t0, now);
  EXPECT_EQ(cc.window(), 14000u);
  EXPECT_EQ(cc.congestion_events(), 1u);
  // Packets sent before recovery began do not grow the window.
  cc.OnPacketSent(1400);
  cc.OnPacketAcked(1400, t0, false);
  EXPECT_EQ(cc.window(), 14000u);
  // Congestion avoidance: one datagram per window acknowledged.
  const Timestamp later = Timestamp::FromNanos(9000);
  for (int i = 0; i < 10; ++i) {
    cc.OnPacketSent(1400);
    cc.OnPacketAcked(1400, later, false);
  }
  EXPECT_EQ(cc.window(), 15400u);
  // App-limited ACKs change nothing.
  cc.OnPacketSent(1400);
  cc.OnPacketAcked(1400, later, true);
  EXPECT_EQ(cc.window(), 15400u);
  cc.OnPersistentCongestion();
  EXPECT_EQ(cc.window(), 2800u);  // §7.6.2: the minimum window
}

TEST(NewRenoTest, DisabledNeverLimits) {
  NewReno cc(1400, false);
  for (int i = 0; i < 100000; ++i) cc.OnPacketSent(1400);
  EXPECT_TRUE(cc.CanSend(1400));
  cc.OnCongestionEvent(Timestamp::FromNanos(1), Timestamp::FromNanos(2));
  EXPECT_EQ(cc.window(), NewReno::kUnlimited);
}

TEST(PacerTest, BurstThenRate) {
  Pacer pacer(/*burst_bytes=*/3000);
  const Timestamp t0 = Timestamp::FromNanos(1'000'000'000);
  // Window 100000 bytes per 10 ms: 1.25 * 10 bytes/µs = 12.5 bytes/µs.
  const Duration srtt = milliseconds(10);
  EXPECT_EQ(pacer.NextSendTime(t0, 1000, 100000, srtt), t0);
  pacer.OnSent(t0, 1000, 100000, srtt);
  pacer.OnSent(t0, 1000, 100000, srtt);
  pacer.OnSent(t0, 1000, 100000, srtt);
  const Timestamp next = pacer.NextSendTime(t0, 1000, 100000, srtt);
  // 1000 bytes at 12.5 bytes/µs: 80 µs.
  EXPECT_NEAR(double((next - t0).count()), 80000, 10);
  EXPECT_EQ(pacer.EarliestSendTime(1000, 100000, srtt), next);
}

TEST(RingTest, WrapsAndRefusesWhenFull) {
  Ring<int> r;
  r.Init(3);  // rounded up to 4
  EXPECT_EQ(r.capacity(), 4u);
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(r.push_back(round * 10 + i));
    EXPECT_FALSE(r.push_back(99));
    EXPECT_EQ(r[3], round * 10 + 3);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(r.front(), round * 10 + i);
      r.pop_front();
    }
    EXPECT_TRUE(r.empty());
    r.push_back(0);
    r.pop_front();  // shifts the head, so the next round wraps
  }
}

TEST(ByteRingTest, WritesAndReadsAcrossTheEnd) {
  ByteRing ring;
  ring.Init(16);
  std::array<std::byte, 10> data;
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(i + 1);
  ring.Write(12, data);  // 12..21: wraps after 4 bytes
  const auto [a, b] = ring.Read(12, 10);
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 6u);
  EXPECT_EQ(a[0], std::byte{1});
  EXPECT_EQ(b[5], std::byte{10});
  const auto [c, d] = ring.Read(16 + 2, 3);  // offset 18 = position 2
  EXPECT_EQ(c.size(), 3u);
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(c[0], std::byte{7});
}

TEST(UnitBitmapTest, SetCountClearFindAcrossWords) {
  UnitBitmap bits;
  bits.Init(256);
  bits.Set(60, 130);
  EXPECT_EQ(bits.Count(0, 256), 70u);
  EXPECT_EQ(bits.Count(64, 128), 64u);
  EXPECT_TRUE(bits.Test(60));
  EXPECT_FALSE(bits.Test(59));
  EXPECT_FALSE(bits.Test(130));
  EXPECT_EQ(bits.FindClear(60, 256), 130u);
  EXPECT_EQ(bits.FindClear(0, 256), 0u);
  EXPECT_EQ(bits.FindClear(60, 100), 100u);  // limit
  bits.Clear(60, 70);
  EXPECT_EQ(bits.Count(0, 256), 60u);
  // Absolute units wrap modulo the size.
  bits.Set(256 + 250, 256 + 262);
  EXPECT_TRUE(bits.Test(250));
  EXPECT_TRUE(bits.Test(5));
  EXPECT_EQ(bits.Count(256 + 250, 256 + 262), 12u);
  EXPECT_EQ(bits.FindClear(256 + 250, 256 + 300), 256 + 262u);
}

}  // namespace
}  // namespace ringlab::rudp::internal
