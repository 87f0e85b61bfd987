// Proves the steady-state publish and receive paths allocate nothing: a
// counting global operator new wraps two participants wired back to back
// (reliable ping-pong with heartbeats and ACKNACKs, keyed samples), and the
// allocation count across thousands of round trips must stay zero.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "rtps/cdr.h"
#include "rtps/ddsperf_types.h"
#include "rtps/participant.h"
#include "rtps/topic.h"
#include "testing/counting_allocator.h"

namespace ringlab::rtps {
namespace {

struct Pair {
  std::unique_ptr<Participant> a, b;
  std::array<std::byte, 65536> buf{};
  Timestamp now = Timestamp::Zero();

  static std::unique_ptr<Participant> Make(uint8_t id) {
    ParticipantConfig c;
    c.guid_prefix.bytes = {1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, id};
    c.metatraffic_unicast = {Locator::UdpV4(0x7f000001, 7400 + id)};
    c.default_unicast = c.metatraffic_unicast;
    c.spdp_destinations = {Locator::UdpV4(0xefff0001, 7400)};
    // Discovery is not the steady state: keep SPDP quiet during the loop.
    c.spdp_period_ns = 3600'000'000'000;
    c.lease_duration_ns = 7200'000'000'000;
    return std::move(*Participant::Create(c, Timestamp::Zero()));
  }
  void Pump() {
    for (int round = 0; round < 8; ++round) {
      bool any = false;
      for (auto [from, to] :
           {std::pair{a.get(), b.get()}, std::pair{b.get(), a.get()}}) {
        if (from->NextDeadline() <= now) from->OnTimeout(now);
        while (auto t = from->PollTransmit(buf, now)) {
          to->OnDatagram(std::span(buf.data(), t->size_bytes),
                         Locator::UdpV4(0x7f000001, 7400), now);
          any = true;
        }
      }
      if (!any) break;
    }
  }
};

TEST(ParticipantAllocTest, SteadyStateWriteReceiveTakeAllocatesNothing) {
  Pair p;
  p.a = Pair::Make(1);
  p.b = Pair::Make(2);
  EndpointQos wq = EndpointQos::WriterDefaults();  // reliable, KEEP_LAST 1
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.reliability = ReliabilityKind::kReliable;
  auto writer = [&](Participant& x, const char* topic) {
    WriterConfig c{topic, "KeyedSeq", wq, true};
    return *x.CreateWriter(std::move(c), p.now);
  };
  auto reader = [&](Participant& x, const char* topic) {
    ReaderConfig c;
    c.topic_name = topic;
    c.type_name = "KeyedSeq";
    c.qos = rq;
    c.keyed = true;
    c.key_hash_from_payload = MakeKeyHashFunction<KeyedSeq>();
    return *x.CreateReader(std::move(c), p.now);
  };
  EndpointHandle ping_w = writer(*p.a, "Ping"), pong_r = reader(*p.a, "Pong");
  EndpointHandle ping_r = reader(*p.b, "Ping"), pong_w = writer(*p.b, "Pong");
  for (int i = 0; i < 20 && p.a->MatchedCount(ping_w) == 0; ++i) {
    p.now += std::chrono::milliseconds(10);
    p.Pump();
  }
  ASSERT_EQ(p.a->MatchedCount(ping_w), 1u);
  ASSERT_EQ(p.b->MatchedCount(pong_w), 1u);

  KeyedSeq sample{0, 0, std::vector<uint8_t>(52, 7)};
  KeyedSeq got;
  got.baggage.reserve(64);
  std::vector<std::byte> wire;
  wire.reserve(256);
  uint64_t round_trips = 0;
  auto round_trip = [&](uint32_t seq) {
    sample.seq = seq;
    sample.keyval = seq % 4;  // four instances
    wire.clear();
    ASSERT_TRUE(SerializeSample(sample, Encoding::kCdrLe, &wire));
    ASSERT_TRUE(
        p.a->Write(ping_w, wire, ComputeKeyHash(sample), seq, p.now).ok());
    p.Pump();
    while (const ReceivedSample* s = p.b->Take(ping_r)) {
      ASSERT_TRUE(DeserializeSample(s->payload, &got));
      wire.clear();
      ASSERT_TRUE(SerializeSample(got, Encoding::kCdrLe, &wire));
      ASSERT_TRUE(p.b->Write(pong_w, wire, ComputeKeyHash(got),
                             s->info.source_time_ns | 1, p.now)
                      .ok());
    }
    p.Pump();
    while (const ReceivedSample* s = p.a->Take(pong_r)) {
      ASSERT_TRUE(DeserializeSample(s->payload, &got));
      ASSERT_EQ(got.seq, seq);
      ++round_trips;
    }
    // Let heartbeats and ACKNACKs flow now and then, as time passes.
    p.now += std::chrono::milliseconds(3);
    while (p.a->PollEvent() || p.b->PollEvent()) {
    }
  };
  uint32_t seq = 1;
  for (int i = 0; i < 2000; ++i) round_trip(seq++);  // warm-up: pools grow
  counting_allocator::Start();
  uint64_t hb_before =
      p.a->counters().heartbeats_sent + p.b->counters().acknacks_sent;
  for (int i = 0; i < 10000; ++i) round_trip(seq++);
  uint64_t allocations = counting_allocator::Stop();
  EXPECT_EQ(allocations, 0u);
  EXPECT_EQ(round_trips, 12000u);
  // The loop really exercised the reliable protocol, not just pushes.
  EXPECT_GT(p.a->counters().heartbeats_sent + p.b->counters().acknacks_sent,
            hb_before + 100);
}

// Issue 11's throughput shape: 64 KiB samples (DATA_FRAG) through a KEEP_ALL
// window, written with WriteBuffered (serialized into the core's buffer,
// swapped into the history) and reassembled straight into the reader's
// history: buffers cycle, nothing is allocated once they have grown.
TEST(ParticipantAllocTest, SteadyStateLargeSamplesAllocateNothing) {
  Pair p;
  p.a = Pair::Make(1);
  p.b = Pair::Make(2);
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.history = HistoryKind::kKeepAll;
  wq.max_samples = 32;
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.reliability = ReliabilityKind::kReliable;
  rq.history = HistoryKind::kKeepAll;
  WriterConfig wc{"Bulk", "KeyedSeq", wq, true};
  EndpointHandle w = *p.a->CreateWriter(std::move(wc), p.now);
  ReaderConfig rc;
  rc.topic_name = "Bulk";
  rc.type_name = "KeyedSeq";
  rc.qos = rq;
  rc.keyed = true;
  rc.key_hash_from_payload = MakeKeyHashFunction<KeyedSeq>();
  EndpointHandle r = *p.b->CreateReader(std::move(rc), p.now);
  for (int i = 0; i < 20 && p.a->MatchedCount(w) == 0; ++i) {
    p.now += std::chrono::milliseconds(10);
    p.Pump();
  }
  ASSERT_EQ(p.a->MatchedCount(w), 1u);

  KeyedSeq sample{0, 0, std::vector<uint8_t>(65536 - 16, 7)};
  KeyedSeq got;
  got.baggage.reserve(65536);
  uint32_t seq = 1;
  uint64_t taken = 0;
  auto step = [&] {
    for (;;) {
      sample.seq = seq;
      ASSERT_TRUE(
          SerializeSample(sample, Encoding::kCdrLe, p.a->WriteBuffer()));
      absl::Status st =
          p.a->WriteBuffered(w, ComputeKeyHash(sample), seq, p.now);
      if (absl::IsResourceExhausted(st)) break;
      ASSERT_TRUE(st.ok()) << st;
      ++seq;
    }
    p.Pump();
    while (const ReceivedSample* s = p.b->Take(r)) {
      ASSERT_TRUE(DeserializeSample(s->payload, &got));
      ASSERT_EQ(got.baggage.size(), sample.baggage.size());
      ++taken;
    }
    p.now += std::chrono::milliseconds(1);
    while (p.a->PollEvent() || p.b->PollEvent()) {
    }
  };
  for (int i = 0; i < 50; ++i) step();  // warm-up: buffers grow
  const uint64_t taken_before = taken;
  const uint64_t copied_before = p.b->counters().sample_bytes_copied;
  counting_allocator::Start();
  for (int i = 0; i < 200; ++i) step();
  EXPECT_EQ(counting_allocator::Stop(), 0u);
  const uint64_t n = taken - taken_before;
  ASSERT_GT(n, 1000u);
  // Reassembly is the reader's only copy of the sample's bytes.
  EXPECT_EQ(p.b->counters().sample_bytes_copied - copied_before, n * 65536);
}

// Periodic SPDP from a known participant (the same announcement every few
// seconds) renews its lease without parsing it again, so it allocates
// nothing; a changed announcement is parsed.
TEST(ParticipantAllocTest, RepeatedSpdpFromAKnownParticipantAllocatesNothing) {
  Pair p;
  p.a = Pair::Make(1);
  ParticipantConfig c;
  c.guid_prefix.bytes = {1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  c.metatraffic_unicast = {Locator::UdpV4(0x7f000001, 7402)};
  c.spdp_destinations = {Locator::UdpV4(0xefff0001, 7400)};
  c.spdp_period_ns = 1'000'000;  // an announcement every ms
  c.user_data = "some user data";
  p.b = std::move(*Participant::Create(c, p.now));
  std::vector<std::byte> announcement;
  auto next_spdp = [&] {
    // Drain b's queue and keep the last SPDP datagram it built.
    while (auto t = p.b->PollTransmit(p.buf, p.now)) {
      announcement.assign(p.buf.begin(), p.buf.begin() + t->size_bytes);
    }
  };
  next_spdp();
  ASSERT_FALSE(announcement.empty());
  p.a->OnDatagram(announcement, Locator::UdpV4(0x7f000001, 7402), p.now);
  ASSERT_EQ(p.a->remote_participant_count(), 1u);
  while (p.a->PollEvent()) {
  }
  while (p.a->PollTransmit(p.buf, p.now)) {
  }
  announcement.reserve(4096);
  counting_allocator::Start();
  for (int i = 0; i < 1000; ++i) {
    p.now += std::chrono::milliseconds(1);
    next_spdp();
    p.a->OnDatagram(announcement, Locator::UdpV4(0x7f000001, 7402), p.now);
  }
  EXPECT_EQ(counting_allocator::Stop(), 0u);
  EXPECT_EQ(p.a->counters().spdp_unchanged, 1000u);
  // The lease was renewed by the last one.
  const RemoteParticipantInfo* info = p.a->FindParticipant(c.guid_prefix);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->lease_expiry, p.now + Duration(c.lease_duration_ns));
}

}  // namespace
}  // namespace ringlab::rtps
