// Large samples on SimNetwork (DDSI-RTPS 2.5 §8.3.7.3, §8.4.14): DATA_FRAG
// out, reassembly, NACK_FRAG / HEARTBEAT_FRAG repair under loss, 16 MiB
// samples, and the time-out of partial samples.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <vector>

#include "rtps/message.h"
#include "rtps/sim_harness_test.h"

namespace ringlab::rtps {
namespace {

using namespace simtest;  // NOLINT: test-only

// A KeyedSeq of exactly `size` serialized bytes (4 encapsulation + 12 fixed
// + baggage) whose baggage depends on seq, so corruption would show.
std::vector<std::byte> BigSample(uint32_t seq, size_t size) {
  KeyedSeq s{seq, 0, std::vector<uint8_t>(size - 16)};
  for (size_t i = 0; i < s.baggage.size(); ++i) {
    s.baggage[i] = static_cast<uint8_t>((seq * 131 + i * 7) >> 2);
  }
  std::vector<std::byte> out;
  EXPECT_TRUE(SerializeSample(s, Encoding::kCdrLe, &out));
  EXPECT_EQ(out.size(), size);
  return out;
}

struct Pair {
  Node* a;
  Node* b;
  EndpointHandle w, r;
};

Pair MakePair(SimHarness& h, bool reliable, const std::string& topic,
              ParticipantConfig c = {}) {
  Pair p;
  p.a = &h.Add(c);
  p.b = &h.Add(c);
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.history = HistoryKind::kKeepAll;
  wq.max_samples = 4;
  if (!reliable) wq.reliability = ReliabilityKind::kBestEffort;
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.history = HistoryKind::kKeepAll;
  if (reliable) rq.reliability = ReliabilityKind::kReliable;
  p.w = *p.a->p->CreateWriter(Writer(topic, wq), h.now());
  p.r = *p.b->p->CreateReader(Reader(topic, rq), h.now());
  EXPECT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(5), [&] {
    return p.a->p->MatchedCount(p.w) == 1 && p.b->p->MatchedCount(p.r) == 1;
  }));
  return p;
}

// Writes `count` samples of `size` bytes as fast as the KEEP_ALL history
// allows and takes them; returns what arrived, in order.
std::vector<std::vector<std::byte>> Transfer(SimHarness& h, Pair& p,
                                             uint32_t count, size_t size,
                                             Duration budget) {
  uint32_t written = 0;
  std::vector<std::vector<std::byte>> got;
  h.RunUntil(h.now() + budget, [&] {
    while (written < count) {
      absl::Status s = p.a->p->Write(p.w, BigSample(written + 1, size),
                                     KeyOf(0), 1000 + written, h.now());
      if (absl::IsResourceExhausted(s)) break;
      EXPECT_TRUE(s.ok()) << s;
      ++written;
    }
    while (const ReceivedSample* s = p.b->p->Take(p.r)) {
      got.emplace_back(s->payload.begin(), s->payload.end());
    }
    return got.size() >= count && p.a->p->AllAcknowledged(p.w);
  });
  return got;
}

TEST(FragmentationSimTest, SmallSamplesStayDataLargeOnesGoAsDataFrag) {
  SimHarness h;
  Pair p = MakePair(h, true, "Sizes");
  auto got = Transfer(h, p, 3, 1344, std::chrono::seconds(2));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(p.a->p->counters().samples_fragmented, 0u);
  got = Transfer(h, p, 3, 1348, std::chrono::seconds(2));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(p.a->p->counters().samples_fragmented, 3u);
  EXPECT_EQ(p.b->p->counters().samples_reassembled, 3u);
  EXPECT_EQ(got[2], BigSample(3, 1348));
}

// The test: 1 MiB samples at 10% loss arrive complete, repaired by
// NACK_FRAG (fragments), never by resending whole samples, and the repair
// traffic is close to the lost fraction.
TEST(FragmentationSimTest, OneMebibyteSamplesAtTenPercentLossRepairFragments) {
  SimHarness h(2, /*trace=*/true);
  Pair p = MakePair(h, true, "Big");
  SimImpairment lossy;
  lossy.delay = std::chrono::microseconds(100);
  lossy.loss_probability = 0.10;
  ASSERT_TRUE(h.net().SetDefaultImpairment(lossy).ok());
  h.net().ClearTrace();
  const ParticipantCounters w0 = p.a->p->counters();
  constexpr uint32_t kSamples = 20;
  // 1 MiB less 256 bytes: 780 whole fragments, so every datagram carrying
  // data is at least 1,400 bytes and the network trace can tell it from
  // control traffic (below).
  constexpr size_t kSize = 780 * 1344;
  auto got = Transfer(h, p, kSamples, kSize, std::chrono::seconds(60));
  ASSERT_EQ(got.size(), kSamples);
  for (uint32_t i = 0; i < kSamples; ++i) {
    ASSERT_EQ(got[i], BigSample(i + 1, kSize)) << "sample " << i + 1;
  }
  const ParticipantCounters& w = p.a->p->counters();
  const ParticipantCounters& r = p.b->p->counters();
  // Fragments in the data datagrams the network dropped (a datagram holds
  // up to 144 bytes of headers besides its 1344-byte fragments; control
  // datagrams are smaller than one fragment).
  uint64_t data_sent = 0, data_lost = 0, fragments_lost = 0;
  for (const transport::SimTraceEvent& e : h.net().trace()) {
    if (e.size_bytes < 1400) continue;  // control traffic
    if (e.kind == transport::SimTraceEvent::Kind::kSend) ++data_sent;
    if (e.kind == transport::SimTraceEvent::Kind::kDropLoss) {
      ++data_lost;
      fragments_lost += (e.size_bytes - 144 + 1343) / 1344;
    }
  }
  const uint64_t per_sample = kSize / 1344;
  const uint64_t needed = per_sample * kSamples;
  const uint64_t resent =
      w.fragments_retransmitted - w0.fragments_retransmitted;
  const double repair_ratio = static_cast<double>(resent) / needed;
  std::printf(
      "1 MiB-class x %u at 10%% loss: %llu of %llu data datagrams lost (%.3f), "
      "%llu fragments lost, %llu retransmitted (%.3f of the %llu needed), "
      "%llu NACK_FRAG, %llu HEARTBEAT_FRAG\n",
      kSamples, static_cast<unsigned long long>(data_lost),
      static_cast<unsigned long long>(data_sent),
      static_cast<double>(data_lost) / data_sent,
      static_cast<unsigned long long>(fragments_lost),
      static_cast<unsigned long long>(resent), repair_ratio,
      static_cast<unsigned long long>(needed),
      static_cast<unsigned long long>(r.nack_frags_sent),
      static_cast<unsigned long long>(w.heartbeat_frags_sent));
  ::testing::Test::RecordProperty("fragment_repair_ratio",
                                  std::to_string(repair_ratio));
  EXPECT_GT(r.nack_frags_sent, 0u);
  EXPECT_GT(w.heartbeat_frags_sent, 0u);
  EXPECT_EQ(w.retransmits, w0.retransmits) << "whole samples were resent";
  // Every lost fragment was sent again (repairs that were lost themselves
  // count as lost fragments too), and hardly more than that: the estimate
  // of fragments per lost datagram is exact for pushes and may overcount a
  // repair datagram of several short runs by one, hence the 3% slack.
  EXPECT_GE(static_cast<double>(resent), 0.97 * fragments_lost);
  EXPECT_LE(static_cast<double>(resent), 1.05 * fragments_lost);
  // So the repair traffic tracks the loss rate: about p / (1 - p) of the
  // sample bytes for a loss rate p (0.111 at 10%).
  const double loss = static_cast<double>(data_lost) / data_sent;
  EXPECT_GT(repair_ratio, 0.8 * loss);
  EXPECT_LT(repair_ratio, 1.5 * loss / (1 - loss));
  EXPECT_EQ(r.partial_samples_timed_out, 0u);
}

TEST(FragmentationSimTest, BestEffortLargeSamplesArriveWithoutLoss) {
  SimHarness h;
  Pair p = MakePair(h, false, "BigBE");
  for (size_t size : {size_t{64 << 10}, size_t{1 << 20}}) {
    ASSERT_TRUE(
        p.a->p->Write(p.w, BigSample(9, size), KeyOf(0), 5, h.now()).ok());
    h.RunFor(std::chrono::milliseconds(50));
    const ReceivedSample* s = p.b->p->Take(p.r);
    ASSERT_NE(s, nullptr) << size;
    EXPECT_TRUE(std::equal(s->payload.begin(), s->payload.end(),
                           BigSample(9, size).begin()));
    EXPECT_EQ(s->info.source_time_ns, 5);
  }
}

TEST(FragmentationSimTest, SixteenMebibytesIsTheLimit) {
  SimHarness h;
  Pair p = MakePair(h, true, "Huge");
  constexpr size_t kMax = 16 << 20;
  EXPECT_TRUE(absl::IsInvalidArgument(
      p.a->p->Write(p.w, BigSample(1, kMax + 4), KeyOf(0), 1, h.now())));
  EXPECT_EQ(p.a->p->counters().samples_too_large, 1u);
  auto got = Transfer(h, p, 1, kMax, std::chrono::seconds(20));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], BigSample(1, kMax));
}

// A best-effort sample that lost a fragment never completes: its partial
// state is dropped once it made no progress for reassembly_timeout_ns, at
// the first timer tick after that.
TEST(FragmentationSimTest, IncompletePartialSampleTimesOut) {
  SimHarness h;
  ParticipantConfig c;
  c.reassembly_timeout_ns = 300'000'000;
  Pair p = MakePair(h, false, "Partial", c);
  // Lose exactly the first datagram of the sample (a -> b only).
  SimImpairment drop_all;
  drop_all.loss_probability = 1.0;
  ASSERT_TRUE(h.net().SetLinkImpairment(p.a->addr, p.b->addr, drop_all).ok());
  ASSERT_TRUE(
      p.a->p->Write(p.w, BigSample(1, 200000), KeyOf(0), 1, h.now()).ok());
  // One PollTransmit = one datagram; the first one is lost.
  std::array<std::byte, 65536> buf{};
  auto t = p.a->p->PollTransmit(buf, h.now());
  ASSERT_TRUE(t.has_value());
  for (const Locator& l : t->destinations) {
    ASSERT_TRUE(h.net()
                    .SendDatagram(p.a->addr, l.ToEndpoint(),
                                  std::span(buf.data(), t->size_bytes))
                    .ok());
  }
  ASSERT_TRUE(h.net().ClearLinkImpairment(p.a->addr, p.b->addr).ok());
  SimImpairment fast;
  fast.delay = std::chrono::microseconds(100);
  ASSERT_TRUE(h.net().SetLinkImpairment(p.a->addr, p.b->addr, fast).ok());
  const Timestamp sent = h.now();
  h.RunFor(std::chrono::milliseconds(10));
  EXPECT_EQ(p.b->p->Available(p.r), 0u);
  EXPECT_GT(p.b->p->counters().fragments_received, 0u);
  EXPECT_EQ(p.b->p->counters().partial_samples_timed_out, 0u);
  // The last fragment arrived 100 us after `sent` (the link delay); the
  // partial sample is dropped exactly reassembly_timeout_ns later.
  ASSERT_TRUE(h.RunUntil(sent + std::chrono::seconds(1), [&] {
    return p.b->p->counters().partial_samples_timed_out == 1;
  }));
  EXPECT_EQ(h.now(), sent + std::chrono::microseconds(100) +
                         std::chrono::milliseconds(300));
  EXPECT_EQ(p.b->p->Available(p.r), 0u);
}

// The writer's HEARTBEATs (reader id, first SN, last SN) in what `n` sends
// at the current instant, without delivering any of it.
struct SentHeartbeat {
  EntityId reader_id;
  SequenceNumber first_sn, last_sn;
};
std::vector<SentHeartbeat> HeartbeatsSentNow(SimHarness& h, Node& n,
                                             EntityId writer_id) {
  std::vector<SentHeartbeat> out;
  std::array<std::byte, 65536> buf{};
  while (auto t = n.p->PollTransmit(buf, h.now())) {
    std::span<const std::byte> msg(buf.data(), t->size_bytes);
    SubmessageIterator it(msg);
    Submessage sm;
    while (it.Next(&sm)) {
      HeartbeatSubmessage hb;
      if (sm.id == static_cast<uint8_t>(SubmessageId::kHeartbeat) &&
          ParseHeartbeat(sm, &hb) == ParseError::kOk &&
          hb.writer_id == writer_id) {
        out.push_back({hb.reader_id, hb.first_sn, hb.last_sn});
      }
    }
  }
  return out;
}

// Regression (issue 11, the 1 MiB lossy interop test to Cyclone): an
// ACKNACK without the FinalFlag asks for a HEARTBEAT (§8.3.7.1) even when
// it acknowledges everything. Cyclone's reader sends one after it matches
// and takes the first HEARTBEAT it sees as where our sequence starts; when
// we ignored it, that first HEARTBEAT came after our first fragmented
// sample and a sample with one lost fragment was skipped, not repaired.
TEST(FragmentationSimTest, NonFinalAckNackIsAnsweredEvenWhenAllIsAcked) {
  SimHarness h;
  Pair p = MakePair(h, true, "Preemptive");
  h.RunFor(std::chrono::seconds(1));  // discovery and match traffic settle
  const Guid writer = p.a->p->EndpointGuid(p.w);
  const Guid reader = p.b->p->EndpointGuid(p.r);
  auto ack_nack = [&](uint32_t count, bool final_flag) {
    std::array<std::byte, 256> out{};
    MessageBuilder mb(out, reader.prefix);
    SequenceNumberSet nothing_missing;
    nothing_missing.base = 1;  // the writer has written nothing yet
    mb.AddAckNack(reader.entity, writer.entity, nothing_missing, count,
                  final_flag);
    p.a->p->OnDatagram(std::span(out.data(), mb.size()),
                       Locator::FromEndpoint(p.b->addr), h.now());
  };
  ASSERT_TRUE(HeartbeatsSentNow(h, *p.a, writer.entity).empty());
  // A final ACKNACK that acknowledges everything needs no answer.
  ack_nack(1000, /*final_flag=*/true);
  EXPECT_TRUE(HeartbeatsSentNow(h, *p.a, writer.entity).empty());
  // A non-final one gets a HEARTBEAT for that reader: empty range [1, 0].
  ack_nack(1001, /*final_flag=*/false);
  std::vector<SentHeartbeat> hbs = HeartbeatsSentNow(h, *p.a, writer.entity);
  ASSERT_EQ(hbs.size(), 1u);
  EXPECT_EQ(hbs[0].reader_id, reader.entity);
  EXPECT_EQ(hbs[0].first_sn, 1);
  EXPECT_EQ(hbs[0].last_sn, 0);
}

// The shape of ringlab_dds_throughput: 64 KiB reliable samples through a
// KEEP_ALL window of 32, no loss. Returns the per-stream counter deltas.
struct StreamCounts {
  uint64_t writer_bytes_copied = 0;
  uint64_t reader_bytes_copied = 0;
  uint64_t reader_acknacks = 0;
  uint64_t retransmitted = 0;
};

StreamCounts StreamLargeSamples(bool buffered, uint32_t count, size_t size) {
  SimHarness h;
  h.set_flush_after_each_datagram(true);  // reply timing of the driver
  Pair p;
  p.a = &h.Add();
  p.b = &h.Add();
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.history = HistoryKind::kKeepAll;
  wq.max_samples = 32;
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.history = HistoryKind::kKeepAll;
  rq.reliability = ReliabilityKind::kReliable;
  p.w = *p.a->p->CreateWriter(Writer("Stream", wq), h.now());
  p.r = *p.b->p->CreateReader(Reader("Stream", rq), h.now());
  EXPECT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(5), [&] {
    return p.a->p->MatchedCount(p.w) == 1 && p.b->p->MatchedCount(p.r) == 1;
  }));
  h.RunFor(std::chrono::seconds(1));  // discovery settles
  const ParticipantCounters wc0 = p.a->p->counters();
  const ParticipantCounters rc0 = p.b->p->counters();
  uint32_t written = 0;
  uint32_t taken = 0;
  bool intact = true;
  h.RunUntil(h.now() + std::chrono::seconds(60), [&] {
    while (written < count) {
      std::vector<std::byte> sample = BigSample(written + 1, size);
      absl::Status st;
      if (buffered) {
        std::vector<std::byte>* buf = p.a->p->WriteBuffer();
        EXPECT_TRUE(buf->empty());
        buf->insert(buf->end(), sample.begin(), sample.end());
        st = p.a->p->WriteBuffered(p.w, KeyOf(0), 1000 + written, h.now());
      } else {
        st = p.a->p->Write(p.w, sample, KeyOf(0), 1000 + written, h.now());
      }
      if (absl::IsResourceExhausted(st)) break;
      EXPECT_TRUE(st.ok()) << st;
      ++written;
    }
    while (const ReceivedSample* s = p.b->p->Take(p.r)) {
      ++taken;
      std::vector<std::byte> want = BigSample(taken, size);
      intact = intact && std::equal(s->payload.begin(), s->payload.end(),
                                    want.begin(), want.end());
    }
    return taken >= count && p.a->p->AllAcknowledged(p.w);
  });
  EXPECT_EQ(taken, count);
  EXPECT_TRUE(intact) << "a sample arrived with other bytes than written";
  const ParticipantCounters& wc = p.a->p->counters();
  const ParticipantCounters& rc = p.b->p->counters();
  StreamCounts out;
  out.writer_bytes_copied = wc.sample_bytes_copied - wc0.sample_bytes_copied;
  out.reader_bytes_copied = rc.sample_bytes_copied - rc0.sample_bytes_copied;
  out.reader_acknacks = rc.acknacks_sent - rc0.acknacks_sent;
  out.retransmitted =
      (wc.fragments_retransmitted - wc0.fragments_retransmitted) +
      (wc.retransmits - wc0.retransmits);
  return out;
}

// Issue 11 (throughput): the core copies a large sample's bytes once on
// each side: WriteBuffered takes the serialized sample into the history
// without a copy (Write copies it), the fragments go from the history into
// the datagram, and the reassembled sample becomes the reader's history
// entry without a second copy.
TEST(FragmentationSimTest, CoreCopiesALargeSampleOncePerSide) {
  constexpr uint32_t kCount = 64;
  constexpr size_t kSize = 64 * 1024;
  StreamCounts buffered = StreamLargeSamples(true, kCount, kSize);
  ASSERT_EQ(buffered.retransmitted, 0u);
  EXPECT_EQ(buffered.writer_bytes_copied, uint64_t{kCount} * kSize);
  EXPECT_EQ(buffered.reader_bytes_copied, uint64_t{kCount} * kSize);
  StreamCounts copied = StreamLargeSamples(false, kCount, kSize);
  ASSERT_EQ(copied.retransmitted, 0u);
  EXPECT_EQ(copied.writer_bytes_copied, 2 * uint64_t{kCount} * kSize);
  EXPECT_EQ(copied.reader_bytes_copied, uint64_t{kCount} * kSize);
}

// A reader that misses nothing answers a final HEARTBEAT with nothing
// (§8.3.7.5); the writer asks (non-final) only when its KEEP_ALL history
// needs acknowledgements, once per quarter of it. It used to ask after
// every fragmented sample: ~2 ACKNACKs per 64 KiB sample.
TEST(FragmentationSimTest, StreamingLargeSamplesCostsFewAckNacks) {
  constexpr uint32_t kCount = 256;
  StreamCounts c = StreamLargeSamples(true, kCount, 64 * 1024);
  ASSERT_EQ(c.retransmitted, 0u);
  std::printf("64 KiB x %u, KEEP_ALL window 32: %.3f ACKNACKs per sample\n",
              kCount, static_cast<double>(c.reader_acknacks) / kCount);
  EXPECT_GT(c.reader_acknacks, 0u);  // the history still gets acknowledged
  EXPECT_LE(c.reader_acknacks, kCount / 4)
      << static_cast<double>(c.reader_acknacks) / kCount
      << " ACKNACKs per sample";
}

}  // namespace
}  // namespace ringlab::rtps
