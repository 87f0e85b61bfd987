// Google Benchmark micro-benchmarks of the RTPS core's own CPU cost, with
// no sockets: two participants wired back to back exchange a reliable keyed
// 64-byte KeyedSeq sample and its answer (what one DDS round trip costs in
// the protocol layer, both sides), plus the CDR and message parsing pieces.
//
//   build/release/rtps/ringlab_rtps_benchmark --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include "rtps/cdr.h"
#include "rtps/ddsperf_types.h"
#include "rtps/message.h"
#include "rtps/participant.h"
#include "rtps/topic.h"

namespace ringlab::rtps {
namespace {

std::unique_ptr<Participant> Make(uint8_t id) {
  ParticipantConfig c;
  c.guid_prefix.bytes = {1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, id};
  c.metatraffic_unicast = {Locator::UdpV4(0x7f000001, 7400 + id)};
  c.default_unicast = c.metatraffic_unicast;
  c.spdp_destinations = {Locator::UdpV4(0xefff0001, 7400)};
  c.spdp_period_ns = 3600'000'000'000;
  c.lease_duration_ns = 7200'000'000'000;
  return std::move(*Participant::Create(c, Timestamp::Zero()));
}

struct Pair {
  std::unique_ptr<Participant> a = Make(1), b = Make(2);
  std::array<std::byte, 65536> buf{};
  Timestamp now = Timestamp::Zero();
  void Pump(Participant& from, Participant& to) {
    if (from.NextDeadline() <= now) from.OnTimeout(now);
    while (auto t = from.PollTransmit(buf, now)) {
      to.OnDatagram(std::span(buf.data(), t->size_bytes),
                    Locator::UdpV4(0x7f000001, 7400), now);
    }
  }
  void PumpAll() {
    for (int i = 0; i < 8; ++i) {
      Pump(*a, *b);
      Pump(*b, *a);
    }
  }
};

void BM_ReliableKeyedRoundTrip(benchmark::State& state) {
  Pair p;
  EndpointQos wq = EndpointQos::WriterDefaults();
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.reliability = ReliabilityKind::kReliable;
  auto writer = [&](Participant& x, const char* topic) {
    return *x.CreateWriter(WriterConfig{topic, "KeyedSeq", wq, true}, p.now);
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
  for (int i = 0; i < 20; ++i) {
    p.now += std::chrono::milliseconds(10);
    p.PumpAll();
  }
  KeyedSeq sample{0, 0, std::vector<uint8_t>(52, 7)}, got;
  std::vector<std::byte> wire;
  uint32_t seq = 0;
  for (auto _ : state) {
    sample.seq = ++seq;
    wire.clear();
    SerializeSample(sample, Encoding::kCdrLe, &wire);
    (void)p.a->Write(ping_w, wire, ComputeKeyHash(sample), seq, p.now);
    p.Pump(*p.a, *p.b);
    while (const ReceivedSample* s = p.b->Take(ping_r)) {
      DeserializeSample(s->payload, &got);
      wire.clear();
      SerializeSample(got, Encoding::kCdrLe, &wire);
      (void)p.b->Write(pong_w, wire, ComputeKeyHash(got),
                       s->info.source_time_ns, p.now);
    }
    p.Pump(*p.b, *p.a);
    while (const ReceivedSample* s = p.a->Take(pong_r)) {
      DeserializeSample(s->payload, &got);
      benchmark::DoNotOptimize(got.seq);
    }
    while (p.a->PollEvent() || p.b->PollEvent()) {
    }
    p.now += std::chrono::microseconds(50);  // heartbeats every 100 ms
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ReliableKeyedRoundTrip);

void BM_SerializeKeyedSeq64(benchmark::State& state) {
  KeyedSeq s{1, 2, std::vector<uint8_t>(52, 7)};
  std::vector<std::byte> out;
  for (auto _ : state) {
    out.clear();
    SerializeSample(s, Encoding::kCdrLe, &out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_SerializeKeyedSeq64);

void BM_ParseDataMessage(benchmark::State& state) {
  std::array<std::byte, 256> buf{};
  MessageBuilder b(buf, GuidPrefix{{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}});
  b.AddInfoTs(123456789);
  std::vector<std::byte> payload(68);
  b.AddData(EntityId::Unknown(), EntityId::Make(1, 2), 7, nullptr, payload);
  std::span<const std::byte> msg(buf.data(), b.size());
  for (auto _ : state) {
    MessageHeader h;
    ParseHeader(msg, &h);
    SubmessageIterator it(msg);
    Submessage sm;
    while (it.Next(&sm)) {
      DataSubmessage d;
      benchmark::DoNotOptimize(ParseData(sm, &d));
    }
  }
}
BENCHMARK(BM_ParseDataMessage);

}  // namespace
}  // namespace ringlab::rtps

BENCHMARK_MAIN();
