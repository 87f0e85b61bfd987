#include "transport/sim_network.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ringlab::transport {
namespace {

using ::std::chrono::microseconds;
using ::std::chrono::milliseconds;
using ::testing::HasSubstr;

std::vector<std::byte> Bytes(std::string_view text) {
  std::vector<std::byte> out(text.size());
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

std::string Text(std::span<const std::byte> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::vector<std::byte> SeqPayload(uint64_t seq, size_t size = 16) {
  std::vector<std::byte> out(std::max<size_t>(size, 8));
  std::memcpy(out.data(), &seq, 8);
  return out;
}

uint64_t SeqOf(const SimDatagram& d) {
  uint64_t seq = 0;
  std::memcpy(&seq, d.bytes.data(), 8);
  return seq;
}

// Binomial tolerance: `sigmas` standard deviations around n * p. The runs
// are seeded, so they cannot flake; the bound is what a fair coin allows.
double Tolerance(double n, double p, double sigmas = 6.0) {
  return sigmas * std::sqrt(n * p * (1.0 - p));
}

const Endpoint kA = Endpoint::Loopback(1001);
const Endpoint kB = Endpoint::Loopback(1002);
const Endpoint kC = Endpoint::Loopback(1003);
const Endpoint kD = Endpoint::Loopback(1004);

SimNetwork::Options Seeded(uint64_t seed) {
  SimNetwork::Options options;
  options.seed = seed;
  return options;
}

Endpoint Group() { return Endpoint::Parse("239.255.0.1:7400").value(); }

void AddNodes(SimNetwork& net, std::initializer_list<Endpoint> nodes) {
  for (const Endpoint& e : nodes) ASSERT_TRUE(net.AddNode(e).ok());
}

void ExpectCounterInvariant(const SimCounters& c) {
  EXPECT_EQ(c.datagrams_sent + c.datagrams_duplicated,
            c.datagrams_delivered + c.dropped_loss + c.dropped_burst +
                c.dropped_queue + c.datagrams_in_flight);
}

// Sends `count` sequence-numbered datagrams A -> B, one every `interval`,
// polling deliveries as the clock moves. Returns, per sequence number, how
// many copies arrived, and collects every delivered datagram.
struct SeqRun {
  std::vector<int> copies;
  std::vector<SimDatagram> delivered;  // in arrival order
};

SeqRun SendSequence(SimNetwork& net, int count, Duration interval,
                    size_t payload_bytes = 16) {
  SeqRun run;
  run.copies.assign(count, 0);
  auto drain = [&] {
    while (std::optional<SimDatagram> d = net.PollDatagram(kB)) {
      const uint64_t seq = SeqOf(*d);
      if (seq < run.copies.size()) ++run.copies[seq];
      run.delivered.push_back(std::move(*d));
    }
  };
  for (int i = 0; i < count; ++i) {
    EXPECT_TRUE(net.SendDatagram(kA, kB, SeqPayload(i, payload_bytes)).ok());
    EXPECT_TRUE(net.AdvanceBy(interval).ok());
    drain();
  }
  net.RunUntilIdle();
  drain();
  return run;
}

// ---- SimRandom
// ---------------------------------------------------------------

TEST(SimRandomTest, SameSeedSameSequenceDifferentSeedDiffers) {
  SimRandom a(7), b(7), c(8);
  bool any_difference = false;
  for (int i = 0; i < 100; ++i) {
    const uint64_t va = a.Next();
    EXPECT_EQ(va, b.Next());
    any_difference |= (va != c.Next());
  }
  EXPECT_TRUE(any_difference);
}

TEST(SimRandomTest, UniformStaysInRangeAndCoversIt) {
  SimRandom r(3);
  std::vector<int> seen(7, 0);
  for (int i = 0; i < 7000; ++i) {
    const uint64_t v = r.Uniform(6);
    ASSERT_LE(v, 6u);
    ++seen[v];
  }
  for (int n : seen) EXPECT_NEAR(n, 1000, Tolerance(7000, 1.0 / 7));
  EXPECT_EQ(r.Uniform(0), 0u);
}

TEST(SimRandomTest, DegenerateProbabilitiesConsumeNoDraw) {
  SimRandom a(11), b(11);
  EXPECT_FALSE(a.Bernoulli(0.0));
  EXPECT_TRUE(a.Bernoulli(1.0));
  EXPECT_EQ(a.Next(), b.Next());
}

TEST(SimRandomTest, NextDoubleInUnitInterval) {
  SimRandom r(5);
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const double d = r.NextDouble();
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
    sum += d;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

// ---- Determinism
// ---------------------------------------------------------------

struct ScenarioResult {
  std::vector<SimTraceEvent> trace;
  uint64_t digest;
  SimCounters counters;
};

ScenarioResult RunScenario(uint64_t seed) {
  SimNetwork::Options options;
  options.seed = seed;
  options.trace = true;
  SimNetwork net(options);
  AddNodes(net, {kA, kB, kC});
  SimImpairment imp;
  imp.loss_probability = 0.05;
  imp.gilbert_elliott = true;
  imp.ge_good_to_bad = 0.01;
  imp.ge_bad_to_good = 0.3;
  imp.delay = milliseconds(2);
  imp.jitter = microseconds(500);
  imp.reorder_probability = 0.05;
  imp.reorder_delay = milliseconds(3);
  imp.duplicate_probability = 0.03;
  imp.corrupt_probability = 0.03;
  imp.rate_bytes_per_sec = 10'000'000;
  imp.queue_limit_packets = 64;
  EXPECT_TRUE(net.SetDefaultImpairment(imp).ok());
  EXPECT_TRUE(net.JoinGroup(kB, Group()).ok());
  EXPECT_TRUE(net.JoinGroup(kC, Group()).ok());
  EXPECT_TRUE(net.Listen(kC).ok());
  absl::StatusOr<SimStreamId> stream = net.Connect(kA, kC);
  EXPECT_TRUE(stream.ok());
  for (int i = 0; i < 3000; ++i) {
    const Endpoint& to = (i % 3 == 0) ? Group() : kB;
    EXPECT_TRUE(net.SendDatagram(kA, to, SeqPayload(i, 16 + i % 200)).ok());
    if (i % 10 == 0) {
      EXPECT_TRUE(net.StreamWrite(*stream, SeqPayload(i, 100)).ok());
    }
    EXPECT_TRUE(net.AdvanceBy(microseconds(50)).ok());
    while (net.PollDatagram(kB) || net.PollDatagram(kC)) {
    }
  }
  net.RunUntilIdle();
  ExpectCounterInvariant(net.counters());
  return {net.trace(), net.TraceDigest(), net.counters()};
}

TEST(SimNetworkTest, SameSeedGivesIdenticalTrace) {
  const ScenarioResult first = RunScenario(1234);
  const ScenarioResult second = RunScenario(1234);
  ASSERT_GT(first.trace.size(), 6000u);
  ASSERT_EQ(first.trace.size(), second.trace.size());
  for (size_t i = 0; i < first.trace.size(); ++i) {
    ASSERT_EQ(first.trace[i], second.trace[i])
        << "first divergence at " << i << ": " << first.trace[i].ToString()
        << " vs " << second.trace[i].ToString();
  }
  EXPECT_EQ(first.digest, second.digest);
  // Every impairment fired at least once, so the comparison covered them.
  EXPECT_GT(first.counters.dropped_loss, 0u);
  EXPECT_GT(first.counters.dropped_burst, 0u);
  EXPECT_GT(first.counters.datagrams_duplicated, 0u);
  EXPECT_GT(first.counters.datagrams_corrupted, 0u);
  EXPECT_GT(first.counters.datagrams_reordered, 0u);
  EXPECT_GT(first.counters.stream_bytes_delivered, 0u);
}

TEST(SimNetworkTest, DifferentSeedGivesDifferentTrace) {
  const ScenarioResult first = RunScenario(1234);
  const ScenarioResult second = RunScenario(4321);
  EXPECT_NE(first.digest, second.digest);
  EXPECT_NE(first.trace, second.trace);
  // Same workload, so the same number of sends either way.
  EXPECT_EQ(first.counters.datagrams_sent, second.counters.datagrams_sent);
}

TEST(SimNetworkTest, TraceRecordsDeliveryDetails) {
  SimNetwork::Options options;
  options.trace = true;
  SimNetwork net(options);
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.delay = milliseconds(3);
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  ASSERT_TRUE(net.SendDatagram(kA, kB, Bytes("abc")).ok());
  net.RunUntilIdle();
  ASSERT_EQ(net.trace().size(), 2u);
  const SimTraceEvent& send = net.trace()[0];
  const SimTraceEvent& deliver = net.trace()[1];
  EXPECT_EQ(send.kind, SimTraceEvent::Kind::kSend);
  EXPECT_EQ(send.time_ns, 0);
  EXPECT_EQ(deliver.kind, SimTraceEvent::Kind::kDeliver);
  EXPECT_EQ(deliver.time_ns, 3'000'000);
  EXPECT_EQ(deliver.from, 0u);
  EXPECT_EQ(deliver.to, 1u);
  EXPECT_EQ(deliver.size_bytes, 3u);
  EXPECT_EQ(deliver.bytes_hash, send.bytes_hash);
  EXPECT_NE(deliver.bytes_hash, 0u);
  EXPECT_EQ(net.NodeEndpoint(deliver.to), kB);
  EXPECT_THAT(deliver.ToString(), HasSubstr("deliver"));
  net.ClearTrace();
  EXPECT_TRUE(net.trace().empty());
}

TEST(SimNetworkTest, TraceOffRecordsNothing) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  ASSERT_TRUE(net.SendDatagram(kA, kB, Bytes("x")).ok());
  net.RunUntilIdle();
  EXPECT_TRUE(net.trace().empty());
  EXPECT_EQ(net.counters().datagrams_delivered, 1u);
}

// ---- Clock
// ----------------------------------------------------------------------

TEST(SimNetworkTest, PerfectLinkDeliversInOrderAfterDelay) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  EXPECT_EQ(net.NextDeadline(), Timestamp::Never());
  EXPECT_FALSE(net.Step());
  SimImpairment imp;
  imp.delay = milliseconds(4);
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  ASSERT_TRUE(net.SendDatagram(kA, kB, Bytes("one")).ok());
  ASSERT_TRUE(net.AdvanceBy(milliseconds(1)).ok());
  ASSERT_TRUE(net.SendDatagram(kA, kB, Bytes("two")).ok());
  EXPECT_EQ(net.NextDeadline(), Timestamp::Zero() + milliseconds(4));
  ASSERT_TRUE(net.AdvanceTo(Timestamp::Zero() + microseconds(3999)).ok());
  EXPECT_EQ(net.PendingDatagrams(kB), 0u);
  EXPECT_TRUE(net.Step());
  EXPECT_EQ(net.now(), Timestamp::Zero() + milliseconds(4));
  ASSERT_EQ(net.PendingDatagrams(kB), 1u);
  std::optional<SimDatagram> d = net.PollDatagram(kB);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(Text(d->bytes), "one");
  EXPECT_EQ(d->from, kA);
  EXPECT_EQ(d->to, kB);
  EXPECT_EQ(d->sent_at, Timestamp::Zero());
  EXPECT_EQ(d->delivered_at, Timestamp::Zero() + milliseconds(4));
  // AdvanceTo past the event: delivered_at is the event time, not now().
  ASSERT_TRUE(net.AdvanceTo(Timestamp::Zero() + milliseconds(10)).ok());
  d = net.PollDatagram(kB);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(Text(d->bytes), "two");
  EXPECT_EQ(d->delivered_at, Timestamp::Zero() + milliseconds(5));
  EXPECT_FALSE(net.PollDatagram(kB).has_value());
  EXPECT_EQ(net.NextDeadline(), Timestamp::Never());
}

TEST(SimNetworkTest, SenderBufferMayBeReusedAfterSend) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  std::vector<std::byte> buffer = Bytes("first");
  ASSERT_TRUE(net.SendDatagram(kA, kB, buffer).ok());
  std::fill(buffer.begin(), buffer.end(), std::byte{'X'});
  net.RunUntilIdle();
  std::optional<SimDatagram> d = net.PollDatagram(kB);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(Text(d->bytes), "first");
}

TEST(SimNetworkTest, SameTimeEventsKeepSendOrder) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(net.SendDatagram(kA, kB, SeqPayload(i)).ok());
  }
  ASSERT_TRUE(net.AdvanceTo(net.now()).ok());  // zero delay: due now
  for (uint64_t i = 0; i < 100; ++i) {
    std::optional<SimDatagram> d = net.PollDatagram(kB);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(SeqOf(*d), i);
  }
}

// ---- Loss
// ---------------------------------------------------------------------------

TEST(SimNetworkTest, BernoulliLossMatchesProbability) {
  constexpr int kCount = 100'000;
  constexpr double kLoss = 0.1;
  for (uint64_t seed : {1u, 2u, 3u}) {
    SimNetwork::Options options;
    options.seed = seed;
    SimNetwork net(options);
    AddNodes(net, {kA, kB});
    SimImpairment imp;
    imp.loss_probability = kLoss;
    ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
    const SeqRun run = SendSequence(net, kCount, microseconds(10));
    const SimCounters& c = net.counters();
    EXPECT_EQ(c.datagrams_sent, static_cast<uint64_t>(kCount));
    EXPECT_NEAR(static_cast<double>(c.dropped_loss), kCount * kLoss,
                Tolerance(kCount, kLoss))
        << "seed " << seed;
    EXPECT_EQ(c.datagrams_delivered + c.dropped_loss, c.datagrams_sent);
    EXPECT_EQ(run.delivered.size(), c.datagrams_delivered);
    EXPECT_EQ(c.dropped_burst, 0u);
    EXPECT_EQ(c.datagrams_in_flight, 0u);
    ExpectCounterInvariant(c);
  }
}

TEST(SimNetworkTest, FullLossDropsEverythingZeroLossNothing) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  SimImpairment all;
  all.loss_probability = 1.0;
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, all).ok());
  SeqRun run = SendSequence(net, 1000, microseconds(10));
  EXPECT_TRUE(run.delivered.empty());
  EXPECT_EQ(net.counters().dropped_loss, 1000u);
  // The reverse link keeps the (perfect) default.
  ASSERT_TRUE(net.SendDatagram(kB, kA, Bytes("back")).ok());
  net.RunUntilIdle();
  EXPECT_TRUE(net.PollDatagram(kA).has_value());
}

struct LossRuns {
  double loss_rate;
  double mean_burst;  // mean length of runs of consecutive losses
};

LossRuns MeasureLossRuns(const SeqRun& run) {
  uint64_t lost = 0, bursts = 0;
  bool in_burst = false;
  for (int n : run.copies) {
    if (n == 0) {
      ++lost;
      if (!in_burst) ++bursts;
      in_burst = true;
    } else {
      in_burst = false;
    }
  }
  return {static_cast<double>(lost) / run.copies.size(),
          bursts == 0 ? 0.0 : static_cast<double>(lost) / bursts};
}

TEST(SimNetworkTest, GilbertElliottLossIsBurstierThanBernoulli) {
  constexpr int kCount = 100'000;
  // Stationary bad-state share p_gb / (p_gb + p_bg) = 0.02 / 0.22 ~ 9.1%,
  // all lost; mean burst 1 / p_bg = 5 packets.
  SimImpairment ge;
  ge.gilbert_elliott = true;
  ge.ge_good_to_bad = 0.02;
  ge.ge_bad_to_good = 0.2;
  ge.ge_loss_in_good = 0.0;
  ge.ge_loss_in_bad = 1.0;
  const double expected_rate = 0.02 / 0.22;
  SimImpairment bernoulli;
  bernoulli.loss_probability = expected_rate;

  SimNetwork ge_net(Seeded(99));
  AddNodes(ge_net, {kA, kB});
  ASSERT_TRUE(ge_net.SetLinkImpairment(kA, kB, ge).ok());
  const LossRuns ge_runs =
      MeasureLossRuns(SendSequence(ge_net, kCount, microseconds(10)));

  SimNetwork b_net(Seeded(99));
  AddNodes(b_net, {kA, kB});
  ASSERT_TRUE(b_net.SetLinkImpairment(kA, kB, bernoulli).ok());
  const LossRuns b_runs =
      MeasureLossRuns(SendSequence(b_net, kCount, microseconds(10)));

  // Same average rate (bursts make the GE estimate noisier: ~1800 bursts).
  EXPECT_NEAR(ge_runs.loss_rate, expected_rate, 0.015);
  EXPECT_NEAR(b_runs.loss_rate, expected_rate, 0.006);
  // Bernoulli runs average 1 / (1 - p) ~ 1.1; GE runs average ~5.
  EXPECT_NEAR(ge_runs.mean_burst, 5.0, 0.75);
  EXPECT_LT(b_runs.mean_burst, 1.25);
  EXPECT_GT(ge_runs.mean_burst, 3.0 * b_runs.mean_burst);
  EXPECT_EQ(ge_net.counters().dropped_burst,
            static_cast<uint64_t>(std::llround(ge_runs.loss_rate * kCount)));
  EXPECT_EQ(ge_net.counters().dropped_loss, 0u);
  EXPECT_EQ(b_net.counters().dropped_burst, 0u);
}

// ---- Delay, jitter, rate
// ---------------------------------------------------------

TEST(SimNetworkTest, DelayAndJitterStayWithinBounds) {
  SimNetwork net(Seeded(5));
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.delay = milliseconds(10);
  imp.jitter = milliseconds(2);
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  const SeqRun run = SendSequence(net, 10'000, microseconds(100));
  ASSERT_EQ(run.delivered.size(), 10'000u);
  int64_t min_ns = std::numeric_limits<int64_t>::max(), max_ns = 0;
  double sum_ns = 0;
  for (const SimDatagram& d : run.delivered) {
    const int64_t took_ns = (d.delivered_at - d.sent_at).count();
    ASSERT_GE(took_ns, 10'000'000);
    ASSERT_LE(took_ns, 12'000'000);
    min_ns = std::min(min_ns, took_ns);
    max_ns = std::max(max_ns, took_ns);
    sum_ns += static_cast<double>(took_ns);
  }
  // The jitter really spreads over the whole interval, uniformly.
  EXPECT_LT(min_ns, 10'010'000);
  EXPECT_GT(max_ns, 11'990'000);
  EXPECT_NEAR(sum_ns / 10'000, 11'000'000, 30'000);
}

TEST(SimNetworkTest, RateLimitSpacesPackets) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.delay = milliseconds(5);
  imp.rate_bytes_per_sec = 10'000;  // 1000 bytes take 100 ms
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(net.SendDatagram(kA, kB, SeqPayload(i, 1000)).ok());
  }
  net.RunUntilIdle();
  for (int i = 0; i < 5; ++i) {
    std::optional<SimDatagram> d = net.PollDatagram(kB);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(SeqOf(*d), static_cast<uint64_t>(i));
    EXPECT_EQ(d->delivered_at,
              Timestamp::Zero() + milliseconds(100 * (i + 1) + 5));
  }
}

// ---- Reordering, duplication, corruption
// -----------------------------------------

TEST(SimNetworkTest, ReorderingMatchesProbabilityAndLosesNothing) {
  constexpr int kCount = 10'000;
  constexpr double kReorder = 0.1;
  SimNetwork net(Seeded(17));
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.delay = milliseconds(1);
  imp.reorder_probability = kReorder;
  imp.reorder_delay = milliseconds(10);
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  const SeqRun run = SendSequence(net, kCount, milliseconds(1));
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(run.copies[i], 1) << "seq " << i;
  const uint64_t reordered = net.counters().datagrams_reordered;
  EXPECT_NEAR(static_cast<double>(reordered), kCount * kReorder,
              Tolerance(kCount, kReorder));
  // A held-back packet is overtaken by the next one (sent 1 ms later, held
  // 10 ms), so it arrives after a higher sequence number; only the last few
  // packets have nobody left to overtake them.
  uint64_t late = 0, highest = 0;
  bool first = true;
  for (const SimDatagram& d : run.delivered) {
    const uint64_t seq = SeqOf(d);
    if (!first && seq < highest) ++late;
    highest = first ? seq : std::max(highest, seq);
    first = false;
  }
  EXPECT_LE(late, reordered);
  EXPECT_GE(late + 10, reordered);
  EXPECT_EQ(net.counters().datagrams_delivered, static_cast<uint64_t>(kCount));
}

TEST(SimNetworkTest, NoJitterNoReorderMeansFifo) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.delay = milliseconds(3);
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  const SeqRun run = SendSequence(net, 1000, microseconds(7));
  ASSERT_EQ(run.delivered.size(), 1000u);
  for (size_t i = 0; i < run.delivered.size(); ++i) {
    EXPECT_EQ(SeqOf(run.delivered[i]), i);
  }
}

TEST(SimNetworkTest, DuplicationMatchesProbability) {
  constexpr int kCount = 20'000;
  constexpr double kDup = 0.05;
  SimNetwork net(Seeded(23));
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.duplicate_probability = kDup;
  imp.delay = milliseconds(1);
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  const SeqRun run = SendSequence(net, kCount, microseconds(100));
  const SimCounters& c = net.counters();
  EXPECT_NEAR(static_cast<double>(c.datagrams_duplicated), kCount * kDup,
              Tolerance(kCount, kDup));
  uint64_t twice = 0;
  for (int n : run.copies) {
    ASSERT_GE(n, 1);
    ASSERT_LE(n, 2);
    if (n == 2) ++twice;
  }
  EXPECT_EQ(twice, c.datagrams_duplicated);
  EXPECT_EQ(c.datagrams_delivered, kCount + c.datagrams_duplicated);
  ExpectCounterInvariant(c);
}

TEST(SimNetworkTest, CorruptionFlipsExactlyOneBit) {
  constexpr int kCount = 10'000;
  constexpr double kCorrupt = 0.1;
  constexpr size_t kSize = 32;
  SimNetwork net(Seeded(29));
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.corrupt_probability = kCorrupt;
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  // Identical payloads: a corrupted sequence number could not be matched
  // back to its original, a fixed pattern can.
  const std::vector<std::byte> pattern(kSize, std::byte{0xa5});
  uint64_t one_bit = 0;
  std::vector<int> byte_hits(kSize, 0);
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(net.SendDatagram(kA, kB, pattern).ok());
    net.RunUntilIdle();
    std::optional<SimDatagram> d = net.PollDatagram(kB);
    ASSERT_TRUE(d.has_value());
    ASSERT_EQ(d->bytes.size(), kSize);
    int flipped = 0;
    for (size_t j = 0; j < kSize; ++j) {
      const int bits = std::popcount(static_cast<unsigned>(
          static_cast<uint8_t>(d->bytes[j] ^ pattern[j])));
      flipped += bits;
      if (bits != 0) ++byte_hits[j];
    }
    ASSERT_LE(flipped, 1) << "datagram " << i;
    one_bit += flipped;
  }
  EXPECT_EQ(one_bit, net.counters().datagrams_corrupted);
  EXPECT_NEAR(static_cast<double>(one_bit), kCount * kCorrupt,
              Tolerance(kCount, kCorrupt));
  // The flipped bit is spread over the whole datagram.
  for (size_t j = 0; j < kSize; ++j) EXPECT_GT(byte_hits[j], 0) << "byte " << j;
}

TEST(SimNetworkTest, EmptyDatagramIsDeliveredAndNeverCorrupted) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.corrupt_probability = 1.0;
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  ASSERT_TRUE(net.SendDatagram(kA, kB, {}).ok());
  net.RunUntilIdle();
  std::optional<SimDatagram> d = net.PollDatagram(kB);
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->bytes.empty());
  EXPECT_EQ(net.counters().datagrams_corrupted, 0u);
}

// ---- Queue limit
// ---------------------------------------------------------------------

TEST(SimNetworkTest, QueueLimitTailDrops) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.delay = milliseconds(10);
  imp.queue_limit_packets = 10;
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(net.SendDatagram(kA, kB, SeqPayload(i)).ok());
  }
  EXPECT_EQ(net.counters().dropped_queue, 40u);
  EXPECT_EQ(net.counters().datagrams_in_flight, 10u);
  ASSERT_TRUE(net.AdvanceBy(milliseconds(10)).ok());
  // Tail drop: the first ten made it.
  for (uint64_t i = 0; i < 10; ++i) {
    std::optional<SimDatagram> d = net.PollDatagram(kB);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(SeqOf(*d), i);
  }
  EXPECT_FALSE(net.PollDatagram(kB).has_value());
  // The queue drained, so new packets are accepted again.
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(net.SendDatagram(kA, kB, SeqPayload(100 + i)).ok());
  }
  EXPECT_EQ(net.counters().dropped_queue, 40u);
  net.RunUntilIdle();
  EXPECT_EQ(net.PendingDatagrams(kB), 5u);
  ExpectCounterInvariant(net.counters());
}

TEST(SimNetworkTest, QueueLimitWithRateDropsWhatTheBottleneckCannotHold) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  SimImpairment imp;
  imp.rate_bytes_per_sec = 10'000;
  imp.queue_limit_packets = 3;
  ASSERT_TRUE(net.SetLinkImpairment(kA, kB, imp).ok());
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(net.SendDatagram(kA, kB, SeqPayload(i, 1000)).ok());
  }
  EXPECT_EQ(net.counters().dropped_queue, 7u);
  // After one serialization time, one slot is free again.
  ASSERT_TRUE(net.AdvanceTo(Timestamp::Zero() + milliseconds(100)).ok());
  EXPECT_EQ(net.PendingDatagrams(kB), 1u);
  ASSERT_TRUE(net.SendDatagram(kA, kB, SeqPayload(10, 1000)).ok());
  ASSERT_TRUE(net.SendDatagram(kA, kB, SeqPayload(11, 1000)).ok());
  EXPECT_EQ(net.counters().dropped_queue, 8u);
  net.RunUntilIdle();
  EXPECT_EQ(net.counters().datagrams_delivered, 4u);
}

// ---- Multicast
// -------------------------------------------------------------------------

TEST(SimNetworkTest, MulticastReachesMembersOnly) {
  SimNetwork net;
  AddNodes(net, {kA, kB, kC, kD});
  ASSERT_TRUE(net.JoinGroup(kB, Group()).ok());
  ASSERT_TRUE(net.JoinGroup(kC, Group()).ok());
  ASSERT_TRUE(net.JoinGroup(kC, Group()).ok());  // twice: still one copy
  ASSERT_TRUE(net.JoinGroup(kA, Group()).ok());  // sender: no loopback
  ASSERT_TRUE(net.SendDatagram(kA, Group(), Bytes("spdp")).ok());
  net.RunUntilIdle();
  for (const Endpoint& member : {kB, kC}) {
    std::optional<SimDatagram> d = net.PollDatagram(member);
    ASSERT_TRUE(d.has_value()) << member.ToString();
    EXPECT_EQ(Text(d->bytes), "spdp");
    EXPECT_EQ(d->from, kA);
    EXPECT_EQ(d->to, Group());
    EXPECT_FALSE(net.PollDatagram(member).has_value());
  }
  EXPECT_FALSE(net.PollDatagram(kA).has_value());
  EXPECT_FALSE(net.PollDatagram(kD).has_value());
  EXPECT_EQ(net.counters().multicast_sends, 1u);
  EXPECT_EQ(net.counters().datagrams_sent, 2u);

  // Another group, and a group port that differs, reach nobody.
  const Endpoint other_port = Endpoint::Parse("239.255.0.1:7401").value();
  ASSERT_TRUE(net.SendDatagram(kA, other_port, Bytes("x")).ok());
  net.RunUntilIdle();
  EXPECT_EQ(net.counters().datagrams_delivered, 2u);

  ASSERT_TRUE(net.LeaveGroup(kB, Group()).ok());
  ASSERT_TRUE(net.SendDatagram(kA, Group(), Bytes("again")).ok());
  net.RunUntilIdle();
  EXPECT_FALSE(net.PollDatagram(kB).has_value());
  EXPECT_TRUE(net.PollDatagram(kC).has_value());
}

TEST(SimNetworkTest, MulticastLoopbackOptionAndPerMemberLinks) {
  SimNetwork::Options options;
  options.multicast_loopback = true;
  SimNetwork net(options);
  AddNodes(net, {kA, kB, kC});
  for (const Endpoint& e : {kA, kB, kC}) {
    ASSERT_TRUE(net.JoinGroup(e, Group()).ok());
  }
  SimImpairment dead;
  dead.loss_probability = 1.0;
  ASSERT_TRUE(net.SetLinkImpairment(kA, kC, dead).ok());
  ASSERT_TRUE(net.SendDatagram(kA, Group(), Bytes("hello")).ok());
  net.RunUntilIdle();
  EXPECT_TRUE(net.PollDatagram(kA).has_value());
  EXPECT_TRUE(net.PollDatagram(kB).has_value());
  EXPECT_FALSE(net.PollDatagram(kC).has_value());
  EXPECT_EQ(net.counters().dropped_loss, 1u);
  // Clearing the override restores the default link.
  ASSERT_TRUE(net.ClearLinkImpairment(kA, kC).ok());
  ASSERT_TRUE(net.SendDatagram(kA, Group(), Bytes("hello")).ok());
  net.RunUntilIdle();
  EXPECT_TRUE(net.PollDatagram(kC).has_value());
}

TEST(SimNetworkTest, UnknownUnicastDestinationIsCountedNotDelivered) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  EXPECT_TRUE(net.SendDatagram(kA, kD, Bytes("nowhere")).ok());
  net.RunUntilIdle();
  EXPECT_EQ(net.counters().dropped_unroutable, 1u);
  EXPECT_EQ(net.counters().datagrams_sent, 0u);
  EXPECT_EQ(net.PendingDatagrams(kB), 0u);
}

// ---- Streams
// ---------------------------------------------------------------------------

// Polls every stream event of `node` into a list of kinds.
std::vector<SimStreamEvent::Kind> EventKinds(SimNetwork& net,
                                             const Endpoint& node) {
  std::vector<SimStreamEvent::Kind> kinds;
  while (std::optional<SimStreamEvent> e = net.PollStreamEvent(node)) {
    kinds.push_back(e->kind);
  }
  return kinds;
}

std::string ReadAll(SimNetwork& net, SimStreamId id, bool* eof = nullptr) {
  std::string out;
  std::byte buf[3];  // small on purpose: partial reads must keep order
  while (true) {
    absl::StatusOr<SimStreamReadResult> r = net.StreamRead(id, buf);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    out.append(reinterpret_cast<const char*>(buf), r->bytes);
    if (eof != nullptr) *eof = r->eof;
    if (r->bytes == 0) break;
  }
  return out;
}

class SimStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SimImpairment imp;
    imp.delay = milliseconds(5);
    // Datagram impairments must not touch streams.
    imp.loss_probability = 0.5;
    imp.duplicate_probability = 0.5;
    imp.corrupt_probability = 0.5;
    imp.reorder_probability = 0.5;
    imp.reorder_delay = milliseconds(7);
    imp.queue_limit_packets = 1;
    ASSERT_TRUE(net_.SetDefaultImpairment(imp).ok());
    AddNodes(net_, {kA, kB, kC});
    ASSERT_TRUE(net_.Listen(kB).ok());
  }

  Timestamp At(Duration d) { return Timestamp::Zero() + d; }

  // Connects A -> B and runs the handshake; returns {client, server}.
  std::pair<SimStreamId, SimStreamId> Establish() {
    absl::StatusOr<SimStreamId> client = net_.Connect(kA, kB);
    EXPECT_TRUE(client.ok());
    EXPECT_TRUE(net_.AdvanceBy(milliseconds(10)).ok());
    std::optional<SimStreamEvent> in = net_.PollStreamEvent(kB);
    EXPECT_TRUE(in.has_value());
    std::optional<SimStreamEvent> up = net_.PollStreamEvent(kA);
    EXPECT_TRUE(up.has_value());
    return {*client, in ? in->stream : 0};
  }

  SimNetwork net_{Seeded(3)};
};

TEST_F(SimStreamTest, HandshakeDataInOrderWithDelayAndFin) {
  absl::StatusOr<SimStreamId> client = net_.Connect(kA, kB);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_NE(*client, 0u);
  // Written before the handshake: leaves when the client is established.
  ASSERT_TRUE(net_.StreamWrite(*client, Bytes("hello ")).ok());

  ASSERT_TRUE(net_.AdvanceTo(At(microseconds(4999))).ok());
  EXPECT_FALSE(net_.PollStreamEvent(kB).has_value());
  ASSERT_TRUE(net_.AdvanceTo(At(milliseconds(5))).ok());
  std::optional<SimStreamEvent> incoming = net_.PollStreamEvent(kB);
  ASSERT_TRUE(incoming.has_value());
  EXPECT_EQ(incoming->kind, SimStreamEvent::Kind::kIncoming);
  EXPECT_EQ(incoming->peer, kA);
  const SimStreamId server = incoming->stream;
  EXPECT_NE(server, *client);
  EXPECT_FALSE(net_.PollStreamEvent(kA).has_value());

  ASSERT_TRUE(net_.AdvanceTo(At(milliseconds(10))).ok());
  std::optional<SimStreamEvent> connected = net_.PollStreamEvent(kA);
  ASSERT_TRUE(connected.has_value());
  EXPECT_EQ(connected->kind, SimStreamEvent::Kind::kConnected);
  EXPECT_EQ(connected->stream, *client);
  EXPECT_EQ(connected->peer, kB);

  ASSERT_TRUE(net_.AdvanceTo(At(microseconds(14999))).ok());
  EXPECT_EQ(net_.StreamReadable(server), 0u);
  ASSERT_TRUE(net_.AdvanceTo(At(milliseconds(15))).ok());
  EXPECT_EQ(net_.StreamReadable(server), 6u);
  EXPECT_EQ(EventKinds(net_, kB),
            std::vector<SimStreamEvent::Kind>{SimStreamEvent::Kind::kReadable});

  ASSERT_TRUE(net_.StreamWrite(*client, Bytes("wor")).ok());
  ASSERT_TRUE(net_.StreamWrite(*client, Bytes("ld")).ok());
  ASSERT_TRUE(net_.StreamClose(*client).ok());
  ASSERT_TRUE(net_.StreamClose(*client).ok());  // idempotent
  EXPECT_EQ(net_.StreamWrite(*client, Bytes("late")).code(),
            absl::StatusCode::kFailedPrecondition);
  net_.RunUntilIdle();
  EXPECT_EQ(net_.now(), At(milliseconds(20)));
  bool eof = false;
  EXPECT_EQ(ReadAll(net_, server, &eof), "hello world");
  EXPECT_TRUE(eof);
  EXPECT_EQ(EventKinds(net_, kB),
            (std::vector<SimStreamEvent::Kind>{SimStreamEvent::Kind::kReadable,
                                               SimStreamEvent::Kind::kReadable,
                                               SimStreamEvent::Kind::kFin}));

  // Half-close: the server can still answer.
  ASSERT_TRUE(net_.StreamWrite(server, Bytes("bye")).ok());
  ASSERT_TRUE(net_.StreamClose(server).ok());
  net_.RunUntilIdle();
  EXPECT_EQ(ReadAll(net_, *client, &eof), "bye");
  EXPECT_TRUE(eof);
  const SimCounters& c = net_.counters();
  EXPECT_EQ(c.streams_opened, 1u);
  EXPECT_EQ(c.stream_bytes_written, 14u);
  EXPECT_EQ(c.stream_bytes_delivered, 14u);
  EXPECT_EQ(c.stream_fins, 2u);
  EXPECT_EQ(c.datagrams_sent, 0u);
}

TEST_F(SimStreamTest, EofOnlyAfterAllBytesRead) {
  auto [client, server] = Establish();
  ASSERT_TRUE(net_.StreamWrite(client, Bytes("abcdef")).ok());
  ASSERT_TRUE(net_.StreamClose(client).ok());
  net_.RunUntilIdle();
  std::byte buf[4];
  absl::StatusOr<SimStreamReadResult> r = net_.StreamRead(server, buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->bytes, 4u);
  EXPECT_FALSE(r->eof);
  r = net_.StreamRead(server, buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->bytes, 2u);
  EXPECT_TRUE(r->eof);
}

TEST_F(SimStreamTest, LargeStreamStaysInOrderWhenDelayChanges) {
  auto [client, server] = Establish();
  std::string sent;
  SimRandom rng(77);
  for (int i = 0; i < 500; ++i) {
    std::string chunk(1 + rng.Uniform(300), '\0');
    for (char& ch : chunk) ch = static_cast<char>('a' + rng.Uniform(25));
    sent += chunk;
    ASSERT_TRUE(net_.StreamWrite(client, Bytes(chunk)).ok());
    if (i == 250) {
      // A shorter delay mid-stream must not let later bytes overtake.
      SimImpairment fast;
      fast.delay = microseconds(10);
      ASSERT_TRUE(net_.SetLinkImpairment(kA, kB, fast).ok());
    }
    ASSERT_TRUE(net_.AdvanceBy(microseconds(20)).ok());
  }
  net_.RunUntilIdle();
  EXPECT_EQ(ReadAll(net_, server), sent);
}

TEST_F(SimStreamTest, BandwidthDeliversProgressively) {
  SimImpairment shaped;
  shaped.delay = milliseconds(5);
  shaped.rate_bytes_per_sec = 100'000;  // 1460-byte segment: 14.6 ms
  ASSERT_TRUE(net_.SetLinkImpairment(kB, kA, shaped).ok());
  auto [client, server] = Establish();
  const Timestamp start = net_.now();
  const std::string big(14'600, 'z');
  ASSERT_TRUE(net_.StreamWrite(server, Bytes(big)).ok());
  ASSERT_TRUE(net_.AdvanceTo(start + microseconds(19'599)).ok());
  EXPECT_EQ(net_.StreamReadable(client), 0u);
  ASSERT_TRUE(net_.AdvanceTo(start + microseconds(19'600)).ok());
  EXPECT_EQ(net_.StreamReadable(client), 1460u);
  ASSERT_TRUE(net_.AdvanceTo(start + microseconds(150'999)).ok());
  EXPECT_EQ(net_.StreamReadable(client), 14'600u - 1460u);
  ASSERT_TRUE(net_.AdvanceTo(start + milliseconds(151)).ok());
  EXPECT_EQ(net_.StreamReadable(client), 14'600u);
  EXPECT_EQ(ReadAll(net_, client), big);
}

TEST_F(SimStreamTest, ConnectToNonListenerIsRefused) {
  absl::StatusOr<SimStreamId> client = net_.Connect(kA, kC);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(net_.AdvanceTo(At(microseconds(9999))).ok());
  EXPECT_FALSE(net_.PollStreamEvent(kA).has_value());
  ASSERT_TRUE(net_.AdvanceTo(At(milliseconds(10))).ok());
  std::optional<SimStreamEvent> e = net_.PollStreamEvent(kA);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->kind, SimStreamEvent::Kind::kRefused);
  EXPECT_EQ(e->stream, *client);
  EXPECT_FALSE(net_.PollStreamEvent(kC).has_value());
  std::byte buf[4];
  EXPECT_EQ(net_.StreamRead(*client, buf).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(net_.StreamWrite(*client, Bytes("x")).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(net_.counters().streams_refused, 1u);
  EXPECT_EQ(net_.counters().streams_opened, 0u);

  // An address with no node at all is refused too.
  absl::StatusOr<SimStreamId> nowhere = net_.Connect(kA, kD);
  ASSERT_TRUE(nowhere.ok());
  net_.RunUntilIdle();
  EXPECT_EQ(EventKinds(net_, kA),
            std::vector<SimStreamEvent::Kind>{SimStreamEvent::Kind::kRefused});
  EXPECT_EQ(net_.counters().streams_refused, 2u);
}

TEST_F(SimStreamTest, StopListeningRefusesNewConnections) {
  ASSERT_TRUE(net_.StopListening(kB).ok());
  EXPECT_EQ(net_.StopListening(kB).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(net_.Connect(kA, kB).ok());
  net_.RunUntilIdle();
  EXPECT_EQ(EventKinds(net_, kA),
            std::vector<SimStreamEvent::Kind>{SimStreamEvent::Kind::kRefused});
  EXPECT_EQ(net_.Listen(kB).code(), absl::StatusCode::kOk);
  EXPECT_EQ(net_.Listen(kB).code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(SimStreamTest, InjectedResetCutsBothEndsAndDropsInFlightBytes) {
  auto [client, server] = Establish();
  ASSERT_TRUE(net_.StreamWrite(client, Bytes("in flight")).ok());
  ASSERT_TRUE(net_.StreamWrite(server, Bytes("also")).ok());
  ASSERT_TRUE(net_.AdvanceBy(milliseconds(1)).ok());
  ASSERT_TRUE(net_.InjectStreamReset(client).ok());
  EXPECT_EQ(EventKinds(net_, kA),
            std::vector<SimStreamEvent::Kind>{SimStreamEvent::Kind::kReset});
  EXPECT_EQ(EventKinds(net_, kB),
            std::vector<SimStreamEvent::Kind>{SimStreamEvent::Kind::kReset});
  net_.RunUntilIdle();
  EXPECT_EQ(net_.counters().stream_bytes_delivered, 0u);
  EXPECT_EQ(net_.counters().streams_reset, 1u);
  EXPECT_TRUE(EventKinds(net_, kB).empty());
  std::byte buf[8];
  EXPECT_EQ(net_.StreamRead(server, buf).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(net_.StreamRead(client, buf).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(net_.StreamWrite(client, Bytes("x")).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(net_.StreamReadable(server), 0u);
}

TEST_F(SimStreamTest, AbortResetsPeerAfterDelayBehindSentData) {
  auto [client, server] = Establish();
  ASSERT_TRUE(net_.StreamWrite(client, Bytes("last words")).ok());
  ASSERT_TRUE(net_.StreamAbort(client).ok());
  EXPECT_EQ(EventKinds(net_, kA),
            std::vector<SimStreamEvent::Kind>{SimStreamEvent::Kind::kReset});
  ASSERT_TRUE(net_.AdvanceBy(microseconds(4999)).ok());
  EXPECT_TRUE(EventKinds(net_, kB).empty());
  ASSERT_TRUE(net_.AdvanceBy(microseconds(1)).ok());
  // The bytes arrive first, then the RST, which discards them (as TCP does).
  EXPECT_EQ(EventKinds(net_, kB),
            (std::vector<SimStreamEvent::Kind>{SimStreamEvent::Kind::kReadable,
                                               SimStreamEvent::Kind::kReset}));
  std::byte buf[16];
  EXPECT_EQ(net_.StreamRead(server, buf).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(net_.counters().streams_reset, 1u);
}

TEST_F(SimStreamTest, AbortBeforeSynArrivesNeverOpensServer) {
  absl::StatusOr<SimStreamId> client = net_.Connect(kA, kB);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(net_.StreamWrite(*client, Bytes("never sent")).ok());
  ASSERT_TRUE(net_.StreamAbort(*client).ok());
  net_.RunUntilIdle();
  EXPECT_TRUE(EventKinds(net_, kB).empty());
  EXPECT_EQ(net_.counters().streams_opened, 0u);
  EXPECT_EQ(net_.counters().stream_bytes_delivered, 0u);
}

TEST_F(SimStreamTest, UnknownStreamsAreNotFound) {
  std::byte buf[4];
  for (SimStreamId id : {SimStreamId{0}, SimStreamId{1}, SimStreamId{12345}}) {
    EXPECT_EQ(net_.StreamWrite(id, Bytes("x")).code(),
              absl::StatusCode::kNotFound);
    EXPECT_EQ(net_.StreamRead(id, buf).status().code(),
              absl::StatusCode::kNotFound);
    EXPECT_EQ(net_.StreamClose(id).code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(net_.StreamAbort(id).code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(net_.InjectStreamReset(id).code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(net_.StreamReadable(id), 0u);
  }
  // The server end of a connection whose SYN is still in flight is not open.
  absl::StatusOr<SimStreamId> client = net_.Connect(kA, kB);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ(net_.StreamWrite(*client + 1, Bytes("x")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(net_.Connect(kD, kB).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(net_.Connect(kA, Group()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net_.Listen(kD).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(net_.PollStreamEvent(kD).has_value());
}

TEST_F(SimStreamTest, ConnectionToSelfWorks) {
  ASSERT_TRUE(net_.Listen(kA).ok());
  absl::StatusOr<SimStreamId> client = net_.Connect(kA, kA);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(net_.StreamWrite(*client, Bytes("me")).ok());
  net_.RunUntilIdle();
  SimStreamId server = 0;
  while (std::optional<SimStreamEvent> e = net_.PollStreamEvent(kA)) {
    if (e->kind == SimStreamEvent::Kind::kIncoming) server = e->stream;
  }
  ASSERT_NE(server, 0u);
  EXPECT_EQ(ReadAll(net_, server), "me");
  EXPECT_EQ(net_.StreamReadable(*client), 0u);
}

// ---- Bad configuration
// ---------------------------------------------------------------

TEST(SimNetworkConfigTest, BadProbabilitiesAreRejectedByName) {
  SimNetwork net;
  AddNodes(net, {kA, kB});
  struct Case {
    double SimImpairment::*field;
    double value;
    const char* name;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const Case& c :
       {Case{&SimImpairment::loss_probability, 1.5, "loss_probability"},
        Case{&SimImpairment::loss_probability, -0.1, "loss_probability"},
        Case{&SimImpairment::loss_probability, nan, "loss_probability"},
        Case{&SimImpairment::ge_good_to_bad, 2.0, "ge_good_to_bad"},
        Case{&SimImpairment::ge_bad_to_good, -1.0, "ge_bad_to_good"},
        Case{&SimImpairment::ge_loss_in_good, nan, "ge_loss_in_good"},
        Case{&SimImpairment::ge_loss_in_bad, 1.01, "ge_loss_in_bad"},
        Case{&SimImpairment::duplicate_probability, 7, "duplicate_probability"},
        Case{&SimImpairment::corrupt_probability, -3, "corrupt_probability"},
        Case{&SimImpairment::reorder_probability, 1.1,
             "reorder_probability"}}) {
    SimImpairment imp;
    imp.*c.field = c.value;
    const absl::Status s = net.SetLinkImpairment(kA, kB, imp);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.name));
    EXPECT_EQ(net.SetDefaultImpairment(imp).code(),
              absl::StatusCode::kInvalidArgument);
  }
  // Nothing was applied.
  EXPECT_EQ(net.LinkImpairment(kA, kB).loss_probability, 0.0);
  ASSERT_TRUE(net.SendDatagram(kA, kB, Bytes("ok")).ok());
  net.RunUntilIdle();
  EXPECT_TRUE(net.PollDatagram(kB).has_value());
}

TEST(SimNetworkConfigTest, BadDurationsAreRejected) {
  SimNetwork net;
  SimImpairment imp;
  imp.delay = Duration(-1);
  EXPECT_THAT(std::string(net.SetDefaultImpairment(imp).message()),
              HasSubstr("delay"));
  imp = SimImpairment();
  imp.jitter = Duration(-5);
  EXPECT_THAT(std::string(net.SetDefaultImpairment(imp).message()),
              HasSubstr("jitter"));
  imp = SimImpairment();
  imp.reorder_probability = 0.1;  // with no reorder_delay
  EXPECT_EQ(net.SetDefaultImpairment(imp).code(),
            absl::StatusCode::kInvalidArgument);
  imp.reorder_delay = milliseconds(1);
  EXPECT_TRUE(net.SetDefaultImpairment(imp).ok());
  EXPECT_EQ(imp.Validate(), absl::OkStatus());
}

TEST(SimNetworkConfigTest, InvalidOptionsAreReportedAndBlockSetup) {
  SimNetwork::Options options;
  options.default_impairment.loss_probability = 3.0;
  SimNetwork net(options);
  EXPECT_EQ(net.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net.AddNode(kA).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(net.HasNode(kA));

  SimNetwork::Options no_segments;
  no_segments.stream_segment_bytes = 0;
  SimNetwork net2(no_segments);
  EXPECT_THAT(std::string(net2.status().message()),
              HasSubstr("stream_segment_bytes"));
}

TEST(SimNetworkConfigTest, BadTopologyIsRejected) {
  SimNetwork net;
  EXPECT_EQ(net.AddNode(Endpoint()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net.AddNode(Group()).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(net.AddNode(kA).ok());
  EXPECT_EQ(net.AddNode(kA).code(), absl::StatusCode::kAlreadyExists);
  const Endpoint v6 = Endpoint::Parse("[::1]:1001").value();
  EXPECT_TRUE(net.AddNode(v6).ok());  // same port, other family: distinct
  EXPECT_EQ(net.node_count(), 2u);
  EXPECT_EQ(net.NodeEndpoint(1), v6);
  EXPECT_FALSE(net.NodeEndpoint(7).valid());

  EXPECT_EQ(net.SetLinkImpairment(kA, kB, SimImpairment()).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(net.ClearLinkImpairment(kB, kA).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(net.JoinGroup(kB, Group()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(net.JoinGroup(kA, kA).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net.LeaveGroup(kA, Group()).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(net.JoinGroup(kA, Group()).ok());
  ASSERT_TRUE(net.LeaveGroup(kA, Group()).ok());
  EXPECT_EQ(net.LeaveGroup(kA, Group()).code(), absl::StatusCode::kNotFound);

  EXPECT_EQ(net.SendDatagram(kB, kA, Bytes("x")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(net.SendDatagram(kA, Endpoint(), Bytes("x")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(net.PollDatagram(kB).has_value());
  EXPECT_EQ(net.PendingDatagrams(kB), 0u);
}

TEST(SimNetworkConfigTest, ClockOnlyMovesForward) {
  SimNetwork net;
  ASSERT_TRUE(net.AdvanceTo(Timestamp::Zero() + milliseconds(5)).ok());
  const absl::Status back = net.AdvanceTo(Timestamp::Zero() + milliseconds(4));
  EXPECT_EQ(back.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(back.message()), HasSubstr("forward"));
  EXPECT_EQ(net.AdvanceTo(Timestamp::Never()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net.AdvanceBy(Duration(-1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(net.now(), Timestamp::Zero() + milliseconds(5));
  EXPECT_TRUE(net.AdvanceTo(net.now()).ok());
}

// ---- A harness loop, as a protocol test would write it
// ------------------------------

// Stop-and-wait over a lossy, duplicating, reordering link: the shape of a
// sans-io core test. The "core" is a few lines here; the point is that the
// network drives time and delivery deterministically.
TEST(SimNetworkTest, HarnessLoopDeliversEverythingOverBadLink) {
  SimNetwork net(Seeded(8));
  AddNodes(net, {kA, kB});
  SimImpairment bad;
  bad.loss_probability = 0.3;
  bad.duplicate_probability = 0.1;
  bad.delay = milliseconds(2);
  bad.jitter = milliseconds(1);
  ASSERT_TRUE(net.SetDefaultImpairment(bad).ok());
  constexpr uint64_t kMessages = 200;
  const Duration rto = milliseconds(10);
  uint64_t next_to_send = 0, expected = 0;
  Timestamp retransmit_at = Timestamp::Zero();
  int guard = 0;
  while (next_to_send < kMessages && ++guard < 100'000) {
    if (net.now() >= retransmit_at) {
      ASSERT_TRUE(net.SendDatagram(kA, kB, SeqPayload(next_to_send)).ok());
      retransmit_at = net.now() + rto;
    }
    ASSERT_TRUE(
        net.AdvanceTo(std::min(net.NextDeadline(), retransmit_at)).ok());
    while (std::optional<SimDatagram> d = net.PollDatagram(kB)) {
      const uint64_t seq = SeqOf(*d);
      if (seq == expected) ++expected;
      ASSERT_TRUE(net.SendDatagram(kB, kA, SeqPayload(expected)).ok());  // ack
    }
    while (std::optional<SimDatagram> ack = net.PollDatagram(kA)) {
      if (SeqOf(*ack) > next_to_send) {
        next_to_send = SeqOf(*ack);
        retransmit_at = net.now();  // send the next one at once
      }
    }
  }
  EXPECT_EQ(expected, kMessages);
  EXPECT_EQ(next_to_send, kMessages);
  EXPECT_GT(net.counters().dropped_loss, 0u);
}

// ---- Stream flow control
// ----------------------------------------------------------------------------

// Flow control is off unless configured: writes are all accepted and sent at
// once, as before (the MQTT tests rely on that).
TEST(SimFlowControlTest, OffByDefault) {
  SimNetwork net(Seeded(5));
  AddNodes(net, {kA, kB});
  ASSERT_TRUE(net.Listen(kB).ok());
  absl::StatusOr<SimStreamId> client = net.Connect(kA, kB);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ(net.StreamWritableBytes(*client), SIZE_MAX);
  const std::vector<std::byte> big(1 << 20, std::byte{'x'});
  ASSERT_TRUE(net.StreamWrite(*client, big).ok());
  absl::StatusOr<size_t> some = net.StreamWriteSome(*client, big);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(*some, big.size());
  net.RunUntilIdle();
  EXPECT_EQ(net.counters().stream_bytes_delivered, 2 * big.size());
  EXPECT_EQ(net.counters().stream_writes_refused, 0u);
}

class SimFlowControlWindowTest : public ::testing::Test {
 protected:
  void Build(uint32_t window, uint32_t send_buffer) {
    SimNetwork::Options options = Seeded(11);
    options.stream_receive_window_bytes = window;
    options.stream_send_buffer_bytes = send_buffer;
    options.default_impairment.delay = milliseconds(5);
    net_ = std::make_unique<SimNetwork>(options);
    AddNodes(*net_, {kA, kB});
    ASSERT_TRUE(net_->Listen(kB).ok());
    absl::StatusOr<SimStreamId> client = net_->Connect(kA, kB);
    ASSERT_TRUE(client.ok());
    client_ = *client;
    ASSERT_TRUE(net_->AdvanceBy(milliseconds(10)).ok());
    std::optional<SimStreamEvent> in = net_->PollStreamEvent(kB);
    ASSERT_TRUE(in.has_value());
    server_ = in->stream;
    while (net_->PollStreamEvent(kA)) {
    }
  }
  std::vector<SimStreamEvent::Kind> Kinds(const Endpoint& node) {
    return EventKinds(*net_, node);
  }
  std::unique_ptr<SimNetwork> net_;
  SimStreamId client_ = 0;
  SimStreamId server_ = 0;
};

// A reader that does not read holds the sender to the window: the unread
// bytes never exceed it, the rest waits in the sender's buffer, and every
// byte arrives in order once the reader reads.
TEST_F(SimFlowControlWindowTest, SlowReaderHoldsSenderToTheWindow) {
  Build(/*window=*/4096, /*send_buffer=*/0);
  std::vector<std::byte> data(20000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(i * 7);
  ASSERT_TRUE(net_->StreamWrite(client_, data).ok());
  ASSERT_TRUE(net_->AdvanceBy(milliseconds(50)).ok());
  EXPECT_EQ(net_->StreamReadable(server_), 4096u);
  EXPECT_EQ(net_->StreamPendingBytes(client_), 20000u - 4096u);
  EXPECT_GT(net_->counters().stream_window_stalls, 0u);
  std::vector<std::byte> got;
  std::byte buf[1000];
  for (int round = 0; round < 200 && got.size() < data.size(); ++round) {
    absl::StatusOr<SimStreamReadResult> r = net_->StreamRead(server_, buf);
    ASSERT_TRUE(r.ok()) << r.status();
    got.insert(got.end(), buf, buf + r->bytes);
    // Never more unread than the window, at any time.
    ASSERT_LE(net_->StreamReadable(server_), 4096u);
    ASSERT_TRUE(net_->AdvanceBy(milliseconds(5)).ok());
  }
  ASSERT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == data) << "bytes reordered or corrupted";
  EXPECT_EQ(net_->StreamPendingBytes(client_), 0u);
}

// A full send buffer refuses a write whole (StreamWrite), or takes what fits
// (StreamWriteSome), and says kWritable once half of it is free again.
TEST_F(SimFlowControlWindowTest, FullSendBufferRefusesThenSignalsWritable) {
  Build(/*window=*/4096, /*send_buffer=*/8192);
  const std::vector<std::byte> chunk(4096, std::byte{'a'});
  ASSERT_TRUE(net_->StreamWrite(client_, chunk).ok());  // sent at once
  ASSERT_TRUE(net_->StreamWrite(client_, chunk).ok());  // waits
  ASSERT_TRUE(net_->StreamWrite(client_, chunk).ok());  // waits: buffer full
  EXPECT_EQ(net_->StreamPendingBytes(client_), 8192u);
  EXPECT_EQ(net_->StreamWritableBytes(client_), 0u);
  absl::Status refused = net_->StreamWrite(client_, chunk);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  absl::StatusOr<size_t> some = net_->StreamWriteSome(client_, chunk);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(*some, 0u);
  EXPECT_EQ(net_->counters().stream_writes_refused, 2u);
  ASSERT_TRUE(net_->AdvanceBy(milliseconds(20)).ok());
  EXPECT_TRUE(Kinds(kA).empty()) << "kWritable before the reader read";
  // The reader takes 4096 bytes; the window update reaches the sender one
  // delay later, 4096 more leave, and half the buffer is free.
  std::byte buf[4096];
  absl::StatusOr<SimStreamReadResult> r = net_->StreamRead(server_, buf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->bytes, 4096u);
  ASSERT_TRUE(net_->AdvanceBy(milliseconds(4)).ok());
  EXPECT_TRUE(Kinds(kA).empty()) << "the window update came early";
  ASSERT_TRUE(net_->AdvanceBy(milliseconds(2)).ok());
  EXPECT_EQ(Kinds(kA),
            std::vector<SimStreamEvent::Kind>{SimStreamEvent::Kind::kWritable});
  EXPECT_EQ(net_->StreamPendingBytes(client_), 4096u);
  some = net_->StreamWriteSome(client_, std::vector<std::byte>(6000));
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(*some, 4096u) << "what fits is taken";
}

// A FIN waits behind the bytes the window held back.
TEST_F(SimFlowControlWindowTest, FinFollowsHeldBackBytes) {
  Build(/*window=*/1000, /*send_buffer=*/0);
  ASSERT_TRUE(net_->StreamWrite(client_, Bytes(std::string(3000, 'f'))).ok());
  ASSERT_TRUE(net_->StreamClose(client_).ok());
  std::string got;
  bool eof = false;
  for (int i = 0; i < 100 && !eof; ++i) {
    ASSERT_TRUE(net_->AdvanceBy(milliseconds(5)).ok());
    got += ReadAll(*net_, server_, &eof);
  }
  EXPECT_TRUE(eof);
  EXPECT_EQ(got, std::string(3000, 'f'));
}

// Same seed, same calls, same trace, with flow control on.
TEST(SimFlowControlTest, Deterministic) {
  auto run = [] {
    SimNetwork::Options options = Seeded(21);
    options.stream_receive_window_bytes = 2000;
    options.stream_send_buffer_bytes = 5000;
    options.trace = true;
    SimImpairment imp;
    imp.delay = milliseconds(3);
    imp.rate_bytes_per_sec = 1'000'000;
    options.default_impairment = imp;
    SimNetwork net(options);
    AddNodes(net, {kA, kB});
    EXPECT_TRUE(net.Listen(kB).ok());
    absl::StatusOr<SimStreamId> client = net.Connect(kA, kB);
    EXPECT_TRUE(client.ok());
    SimStreamId server = 0;
    std::byte buf[700];
    for (int step = 0; step < 400; ++step) {
      (void)net.StreamWriteSome(*client, std::vector<std::byte>(900));
      while (std::optional<SimStreamEvent> e = net.PollStreamEvent(kB)) {
        if (e->kind == SimStreamEvent::Kind::kIncoming) server = e->stream;
      }
      if (server != 0 && step % 3 == 0) (void)net.StreamRead(server, buf);
      EXPECT_TRUE(net.AdvanceBy(milliseconds(1)).ok());
    }
    return net.TraceDigest();
  };
  EXPECT_EQ(run(), run());
}

}  // namespace
}  // namespace ringlab::transport
