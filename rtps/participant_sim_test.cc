// The participant core on SimNetwork with a virtual clock: discovery at
// scale, lease expiry, reliability under loss/reordering/duplication,
// transient-local late joiners, QoS mismatch events, and bad input.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "rtps/cdr.h"
#include "rtps/ddsperf_types.h"
#include "rtps/participant.h"
#include "rtps/sim_harness_test.h"
#include "rtps/topic.h"
#include "transport/sim_network.h"

namespace ringlab::rtps {
namespace {

using namespace simtest;  // NOLINT: test-only

TEST(ParticipantSimTest, TwentyParticipantsDiscoverEachOtherAndMatch) {
  SimHarness h;
  std::vector<EndpointHandle> writers, readers;
  for (int i = 0; i < 20; ++i) {
    Node& n = h.Add();
    writers.push_back(*n.p->CreateWriter(
        Writer("Square", EndpointQos::WriterDefaults()), h.now()));
    readers.push_back(*n.p->CreateReader(
        Reader("Square", EndpointQos::ReaderDefaults()), h.now()));
  }
  bool all = h.RunUntil(h.now() + std::chrono::seconds(10), [&] {
    for (size_t i = 0; i < 20; ++i) {
      Participant& p = *h.nodes()[i].p;
      if (p.remote_participant_count() != 19 ||
          p.MatchedCount(writers[i]) != 19 ||
          p.MatchedCount(readers[i]) != 19) {
        return false;
      }
    }
    return true;
  });
  EXPECT_TRUE(all);
  // Discovery took well under the SPDP period: newcomers are answered by
  // unicast at once.
  EXPECT_LT(h.now(), Timestamp::Zero() + std::chrono::seconds(3));
  Participant& p0 = *h.nodes()[0].p;
  int discovered = 0, matched = 0;
  while (auto e = p0.PollEvent()) {
    discovered += e->kind == Event::Kind::kParticipantDiscovered;
    matched += e->kind == Event::Kind::kWriterMatched;
  }
  EXPECT_EQ(discovered, 19);
  EXPECT_EQ(matched, 19);
  // A sample from node 0 reaches all 19 readers.
  ASSERT_TRUE(p0.Write(writers[0], Encode(1, 7), KeyOf(7), 1000, h.now()).ok());
  bool got = h.RunUntil(h.now() + std::chrono::seconds(1), [&] {
    for (size_t i = 1; i < 20; ++i) {
      if (h.nodes()[i].p->Available(readers[i]) == 0) return false;
    }
    return true;
  });
  EXPECT_TRUE(got);
}

TEST(ParticipantSimTest, SilentParticipantLeaseExpires) {
  SimHarness h;
  ParticipantConfig c;
  c.lease_duration_ns = 2'000'000'000;
  c.spdp_period_ns = 500'000'000;
  Node& a = h.Add(c);
  h.Add(c);
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(1), [&] {
    return h.nodes()[0].p->remote_participant_count() == 1;
  }));
  // Keep talking for longer than a lease: renewals keep it alive.
  h.RunFor(std::chrono::seconds(3));
  EXPECT_EQ(a.p->remote_participant_count(), 1u);
  Timestamp silent_since = h.now();
  h.nodes()[1].silent = true;
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(5), [&] {
    return h.nodes()[0].p->remote_participant_count() == 0;
  }));
  // Gone no earlier than one lease after the last message, and not much
  // later.
  EXPECT_GE(h.now() - silent_since, std::chrono::milliseconds(1400));
  EXPECT_LE(h.now() - silent_since, std::chrono::milliseconds(2100));
  EXPECT_EQ(h.nodes()[0].p->counters().leases_expired, 1u);
  bool lost = false;
  while (auto e = h.nodes()[0].p->PollEvent()) {
    lost |= e->kind == Event::Kind::kParticipantLost;
  }
  EXPECT_TRUE(lost);
}

TEST(ParticipantSimTest,
     ReliableUnderLossReorderingDuplicationIsExactlyOnceInOrder) {
  for (uint64_t seed : {1, 2, 3}) {
    SimHarness h(seed);
    SimImpairment bad;
    bad.loss_probability = 0.2;
    bad.delay = std::chrono::microseconds(200);
    bad.jitter = std::chrono::microseconds(100);
    bad.reorder_probability = 0.1;
    bad.reorder_delay = std::chrono::milliseconds(2);
    bad.duplicate_probability = 0.1;
    ASSERT_TRUE(h.net().SetDefaultImpairment(bad).ok());
    Node& a = h.Add();
    Node& b = h.Add();
    EndpointQos wq = EndpointQos::WriterDefaults();
    wq.history = HistoryKind::kKeepAll;
    wq.max_samples = 64;
    EndpointQos rq = EndpointQos::ReaderDefaults();
    rq.reliability = ReliabilityKind::kReliable;
    rq.history = HistoryKind::kKeepAll;
    EndpointHandle w = *a.p->CreateWriter(Writer("Reliable", wq), h.now());
    EndpointHandle r = *b.p->CreateReader(Reader("Reliable", rq), h.now());
    ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(30), [&] {
      return a.p->MatchedCount(w) == 1 && b.p->MatchedCount(r) == 1;
    }));
    constexpr uint32_t kSamples = 500;
    uint32_t written = 0;
    std::vector<uint32_t> got;
    Timestamp next_write = h.now();
    h.set_max_step(std::chrono::microseconds(300));
    bool done = h.RunUntil(h.now() + std::chrono::seconds(120), [&] {
      // One sample per 300 us (so most travel alone and the loss hits
      // them), as fast as the history allows.
      while (written < kSamples && h.now() >= next_write) {
        next_write = h.now() + std::chrono::microseconds(300);
        absl::Status s =
            h.nodes()[0].p->Write(w, Encode(written + 1, written % 5),
                                  KeyOf(written % 5), 0, h.now());
        if (absl::IsResourceExhausted(s)) break;
        EXPECT_TRUE(s.ok()) << s;
        ++written;
      }
      for (uint32_t s : TakeSeqs(*h.nodes()[1].p, r)) got.push_back(s);
      return got.size() >= kSamples && h.nodes()[0].p->AllAcknowledged(w);
    });
    ASSERT_TRUE(done) << "seed " << seed << ": got " << got.size();
    ASSERT_EQ(got.size(), kSamples) << "seed " << seed;
    for (uint32_t i = 0; i < kSamples; ++i) ASSERT_EQ(got[i], i + 1) << seed;
    // The impairments really happened and were repaired.
    EXPECT_GT(h.net().counters().dropped_loss, 80u);
    EXPECT_GT(h.net().counters().datagrams_duplicated, 30u);
    EXPECT_GT(a.p->counters().retransmits, 50u);
    EXPECT_GT(b.p->counters().data_duplicates, 0u);
  }
}

TEST(ParticipantSimTest, TransientLocalLateJoinerGetsHistoryVolatileDoesNot) {
  SimHarness h;
  Node& a = h.Add();
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.durability = DurabilityKind::kTransientLocal;
  wq.history = HistoryKind::kKeepLast;
  wq.history_depth = 10;
  EndpointHandle w = *a.p->CreateWriter(Writer("History", wq), h.now());
  for (uint32_t i = 1; i <= 25; ++i) {
    ASSERT_TRUE(a.p->Write(w, Encode(i, 1), KeyOf(1), 0, h.now()).ok());
  }
  h.RunFor(std::chrono::milliseconds(100));
  Node& b = h.Add();
  Node& c = h.Add();
  EndpointQos tl = EndpointQos::ReaderDefaults();
  tl.reliability = ReliabilityKind::kReliable;
  tl.durability = DurabilityKind::kTransientLocal;
  tl.history = HistoryKind::kKeepAll;
  EndpointQos vol = tl;
  vol.durability = DurabilityKind::kVolatile;
  EndpointHandle rb = *b.p->CreateReader(Reader("History", tl), h.now());
  EndpointHandle rc = *c.p->CreateReader(Reader("History", vol), h.now());
  std::vector<uint32_t> got_b;
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(5), [&] {
    for (uint32_t s : TakeSeqs(*h.nodes()[1].p, rb)) got_b.push_back(s);
    return got_b.size() >= 10;
  }));
  h.RunFor(std::chrono::milliseconds(500));
  std::vector<uint32_t> want;
  for (uint32_t i = 16; i <= 25; ++i) want.push_back(i);
  EXPECT_EQ(got_b, want);
  EXPECT_EQ(c.p->MatchedCount(rc), 1u);
  EXPECT_TRUE(TakeSeqs(*c.p, rc).empty());
  // New data reaches both.
  ASSERT_TRUE(a.p->Write(w, Encode(26, 1), KeyOf(1), 0, h.now()).ok());
  h.RunFor(std::chrono::milliseconds(200));
  EXPECT_EQ(TakeSeqs(*b.p, rb), std::vector<uint32_t>{26});
  EXPECT_EQ(TakeSeqs(*c.p, rc), std::vector<uint32_t>{26});
}

TEST(ParticipantSimTest, KeepLastPerInstanceInTheReader) {
  SimHarness h;
  Node& a = h.Add();
  Node& b = h.Add();
  EndpointHandle w = *a.p->CreateWriter(
      Writer("Keys", EndpointQos::WriterDefaults()), h.now());
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.history_depth = 2;
  EndpointHandle r = *b.p->CreateReader(Reader("Keys", rq), h.now());
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2),
                         [&] { return b.p->MatchedCount(r) == 1; }));
  // 3 samples per key for keys 1 and 2; KEEP_LAST 2 keeps the last two each.
  uint32_t seq = 1;
  for (int round = 0; round < 3; ++round) {
    for (uint32_t key : {1u, 2u}) {
      ASSERT_TRUE(
          a.p->Write(w, Encode(seq++, key), KeyOf(key), 0, h.now()).ok());
      h.RunFor(std::chrono::milliseconds(5));
    }
  }
  EXPECT_EQ(TakeSeqs(*b.p, r), (std::vector<uint32_t>{3, 4, 5, 6}));
}

TEST(ParticipantSimTest, BestEffortDeliversNewerAndCountsGaps) {
  SimHarness h;
  Node& a = h.Add();
  Node& b = h.Add();
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.reliability = ReliabilityKind::kBestEffort;
  wq.history = HistoryKind::kKeepAll;
  EndpointHandle w = *a.p->CreateWriter(Writer("BE", wq), h.now());
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.history = HistoryKind::kKeepAll;
  EndpointHandle r = *b.p->CreateReader(Reader("BE", rq), h.now());
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2),
                         [&] { return a.p->MatchedCount(w) == 1; }));
  for (uint32_t i = 1; i <= 100; ++i) {
    ASSERT_TRUE(a.p->Write(w, Encode(i, 0), KeyOf(0), 0, h.now()).ok());
    h.RunFor(std::chrono::microseconds(300));
  }
  h.RunFor(std::chrono::milliseconds(10));
  std::vector<uint32_t> got = TakeSeqs(*b.p, r);
  ASSERT_EQ(got.size(), 100u);
  for (uint32_t i = 0; i < 100; ++i) EXPECT_EQ(got[i], i + 1);
  // Nothing to acknowledge on a best-effort match.
  EXPECT_TRUE(a.p->AllAcknowledged(w));
}

TEST(ParticipantSimTest, IncompatibleQosIsAnEventNamingThePolicy) {
  SimHarness h;
  Node& a = h.Add();
  Node& b = h.Add();
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.reliability = ReliabilityKind::kBestEffort;
  EndpointHandle w = *a.p->CreateWriter(Writer("Mismatch", wq), h.now());
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.reliability = ReliabilityKind::kReliable;
  EndpointHandle r = *b.p->CreateReader(Reader("Mismatch", rq), h.now());
  h.RunFor(std::chrono::seconds(1));
  EXPECT_EQ(a.p->MatchedCount(w), 0u);
  EXPECT_EQ(b.p->MatchedCount(r), 0u);
  auto find = [](Participant& p, EndpointHandle local) {
    while (auto e = p.PollEvent()) {
      if (e->kind == Event::Kind::kIncompatibleQos && e->local == local) {
        return std::string(QosPolicyName(e->policy));
      }
    }
    return std::string();
  };
  EXPECT_EQ(find(*a.p, w), "RELIABILITY");
  EXPECT_EQ(find(*b.p, r), "RELIABILITY");
  // Different partitions: no match and no event.
  EndpointQos pa = EndpointQos::WriterDefaults();
  pa.partitions = {"left"};
  EndpointQos pb = EndpointQos::ReaderDefaults();
  pb.partitions = {"right"};
  EndpointHandle w2 = *a.p->CreateWriter(Writer("Parted", pa), h.now());
  EndpointHandle r2 = *b.p->CreateReader(Reader("Parted", pb), h.now());
  h.RunFor(std::chrono::seconds(1));
  EXPECT_EQ(a.p->MatchedCount(w2), 0u);
  EXPECT_EQ(b.p->MatchedCount(r2), 0u);
}

TEST(ParticipantSimTest, DeletedEndpointIsUnmatchedRemotely) {
  SimHarness h;
  Node& a = h.Add();
  Node& b = h.Add();
  EndpointHandle w = *a.p->CreateWriter(
      Writer("Gone", EndpointQos::WriterDefaults()), h.now());
  EndpointHandle r = *b.p->CreateReader(
      Reader("Gone", EndpointQos::ReaderDefaults()), h.now());
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2),
                         [&] { return b.p->MatchedCount(r) == 1; }));
  ASSERT_TRUE(a.p->DeleteEndpoint(w, h.now()).ok());
  EXPECT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2),
                         [&] { return b.p->MatchedCount(r) == 0; }));
  EXPECT_EQ(b.p->remote_endpoint_count(), 0u);
}

// ---- Bad input from the wire ---------------------------------------------

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ParticipantConfig c;
    c.guid_prefix.bytes = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    c.metatraffic_unicast = {Locator::UdpV4(0x7f000001, 7410)};
    c.max_remote_participants = 64;
    p_ = std::move(*Participant::Create(c, Timestamp::Zero()));
  }
  std::vector<std::byte> Header(uint8_t last = 0x42) {
    std::vector<std::byte> m = {std::byte{'R'}, std::byte{'T'}, std::byte{'P'},
                                std::byte{'S'}, std::byte{2},   std::byte{5},
                                std::byte{1},   std::byte{0x10}};
    for (int i = 0; i < 11; ++i) m.push_back(std::byte{0x77});
    m.push_back(std::byte{last});
    return m;
  }
  void Feed(const std::vector<std::byte>& m) {
    p_->OnDatagram(m, Locator::UdpV4(0x7f000001, 9999), Timestamp::Zero());
  }
  uint64_t Errors(ParseError e) {
    return p_->counters().parse_errors[static_cast<size_t>(e)];
  }
  std::unique_ptr<Participant> p_;
};

TEST_F(BadInputTest, MalformedSubmessagesAreCountedPerReason) {
  auto m = Header();
  for (int b : {0x07, 0x01, 8, 0, 0, 0, 0, 0, 0, 0, 1, 2}) {
    m.push_back(std::byte(b));
  }
  Feed(m);  // HEARTBEAT of 8 bytes where 28 are needed
  EXPECT_EQ(Errors(ParseError::kSubmessageTooShort), 1u);
  m = Header();
  for (int b : {0x15, 0x01, 0xff, 0x00, 0, 0, 16, 0}) m.push_back(std::byte(b));
  Feed(m);  // octetsToNextHeader past the end
  EXPECT_EQ(Errors(ParseError::kLengthPastEnd), 1u);
  m = Header();
  for (int b : {0x06, 0x01, 28, 0, 0,    0,    1, 7, 0, 0, 1, 2, 0, 0, 0, 0,
                1,    0,    0,  0, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0})
    m.push_back(std::byte(b));
  Feed(m);  // ACKNACK numBits 257
  EXPECT_EQ(Errors(ParseError::kBadSequenceNumberSet), 1u);
  m = Header();
  m.resize(10);
  Feed(m);
  EXPECT_EQ(Errors(ParseError::kHeaderTooShort), 1u);
  EXPECT_EQ(p_->remote_participant_count(), 0u);
}

std::vector<std::byte> SpdpMessage(uint8_t id_hi, uint8_t id_lo,
                                   std::vector<std::byte> extra_params = {},
                                   bool sentinel = true) {
  GuidPrefix prefix;
  prefix.bytes = {0x01, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, id_hi, id_lo};
  std::vector<std::byte> payload = {std::byte{0}, std::byte{3}, std::byte{0},
                                    std::byte{0}};
  auto put = [&](std::initializer_list<int> v) {
    for (int x : v) payload.push_back(std::byte(x));
  };
  put({0x50, 0x00, 16, 0});
  for (uint8_t b : prefix.bytes) payload.push_back(std::byte(b));
  put({0, 0, 1, 0xc1});
  put({0x32, 0x00, 24, 0, 1, 0, 0, 0, 0xf2, 0x1c, 0, 0});
  for (int i = 0; i < 12; ++i) payload.push_back(std::byte{0});
  put({127, 0, 0, 1});
  payload.insert(payload.end(), extra_params.begin(), extra_params.end());
  if (sentinel) put({0x01, 0x00, 0x00, 0x00});
  std::array<std::byte, 1024> out{};
  MessageBuilder b(out, prefix, kVendorEclipseCyclone);
  b.AddData(EntityId::SpdpReader(), EntityId::SpdpWriter(), 1, nullptr,
            payload);
  return std::vector<std::byte>(out.begin(), out.begin() + b.size());
}

TEST_F(BadInputTest, ParameterListWithoutSentinelOrWithUnknownMustUnderstand) {
  Feed(SpdpMessage(0, 1, {}, /*sentinel=*/false));
  EXPECT_EQ(p_->counters().discovery_rejected[static_cast<size_t>(
                DiscoveryParseError::kMalformedList)],
            1u);
  Feed(
      SpdpMessage(0, 2,
                  {std::byte{0x99}, std::byte{0x40}, std::byte{4}, std::byte{0},
                   std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0}}));
  EXPECT_EQ(p_->counters().discovery_rejected[static_cast<size_t>(
                DiscoveryParseError::kUnknownMustUnderstand)],
            1u);
  EXPECT_EQ(p_->remote_participant_count(), 0u);
  Feed(SpdpMessage(0, 3));  // a good one is accepted
  EXPECT_EQ(p_->remote_participant_count(), 1u);
}

TEST_F(BadInputTest, SpdpFloodIsBoundedAndCounted) {
  for (int i = 0; i < 10000; ++i) {
    Feed(SpdpMessage(static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)));
  }
  EXPECT_EQ(p_->remote_participant_count(), 64u);
  EXPECT_EQ(p_->counters().spdp_participant_limit, 10000u - 64u);
  // Memory for the unicast SPDP replies is bounded too.
  int sent = 0;
  std::array<std::byte, 65536> out{};
  while (p_->PollTransmit(out, Timestamp::Zero())) ++sent;
  EXPECT_LE(sent, 200);
}

}  // namespace
}  // namespace ringlab::rtps

namespace ringlab::rtps {
namespace {

// DATA_FRAG reassembly (§8.4.14.1): fragments out of order and duplicated
// make one sample; inconsistent fragments are dropped and counted.
TEST(ParticipantSimTest, ReassemblesDataFrag) {
  SimHarness h;
  Node& a = h.Add();
  Node& b = h.Add();
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.reliability = ReliabilityKind::kBestEffort;
  EndpointHandle w = *a.p->CreateWriter(Writer("Big", wq), h.now());
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.history = HistoryKind::kKeepAll;
  EndpointHandle r = *b.p->CreateReader(Reader("Big", rq), h.now());
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2),
                         [&] { return b.p->MatchedCount(r) == 1; }));
  std::vector<std::byte> sample = Encode(7, 3, 5000);
  const uint16_t frag = 1344;
  const uint32_t total = (sample.size() + frag - 1) / frag;  // 4
  EntityId writer_id = a.p->EndpointGuid(w).entity;
  auto send_fragment = [&](uint32_t fn, uint32_t sample_size) {
    std::array<std::byte, 4096> out{};
    MessageBuilder mb(out, a.p->guid_prefix());
    size_t off = size_t{fn - 1} * frag;
    size_t len = std::min<size_t>(frag, sample.size() - off);
    mb.AddDataFrag(EntityId::Unknown(), writer_id, 1, fn, 1, frag, sample_size,
                   nullptr, std::span(sample).subspan(off, len));
    b.p->OnDatagram(std::span(out.data(), mb.size()),
                    Locator::FromEndpoint(a.addr), h.now());
  };
  const uint32_t size = static_cast<uint32_t>(sample.size());
  send_fragment(3, size);
  send_fragment(1, size);
  send_fragment(3, size);      // duplicate
  send_fragment(2, size + 8);  // inconsistent sampleSize: dropped
  EXPECT_EQ(b.p->Available(r), 0u);
  send_fragment(4, size);
  send_fragment(2, size);
  ASSERT_EQ(b.p->Available(r), 1u);
  const ReceivedSample* s = b.p->Take(r);
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(std::equal(s->payload.begin(), s->payload.end(), sample.begin(),
                         sample.end()));
  EXPECT_EQ(b.p->counters().samples_reassembled, 1u);
  EXPECT_EQ(b.p->counters().fragments_dropped, 1u);
  EXPECT_EQ(total, 4u);
}

}  // namespace
}  // namespace ringlab::rtps

namespace ringlab::rtps {
namespace {

// A KEEP_LAST 1 history where one instance is written once and another 300
// times: the replaced samples are dropped from the history's index, and the
// long-lived instance's sample must survive that (a late joiner gets both).
TEST(ParticipantSimTest,
     KeepLastHistoryKeepsOldInstanceThroughManyReplacements) {
  SimHarness h;
  Node& a = h.Add();
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.durability = DurabilityKind::kTransientLocal;
  EndpointHandle w = *a.p->CreateWriter(Writer("Instances", wq), h.now());
  ASSERT_TRUE(a.p->Write(w, Encode(1, 100), KeyOf(100), 0, h.now()).ok());
  for (uint32_t i = 2; i <= 301; ++i) {
    ASSERT_TRUE(a.p->Write(w, Encode(i, 200), KeyOf(200), 0, h.now()).ok());
  }
  Node& b = h.Add();
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.reliability = ReliabilityKind::kReliable;
  rq.durability = DurabilityKind::kTransientLocal;
  rq.history = HistoryKind::kKeepAll;
  EndpointHandle r = *b.p->CreateReader(Reader("Instances", rq), h.now());
  std::vector<uint32_t> got;
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(5), [&] {
    for (uint32_t s : TakeSeqs(*h.nodes()[1].p, r)) got.push_back(s);
    return got.size() >= 2;
  }));
  EXPECT_EQ(got, (std::vector<uint32_t>{1, 301}));
}

}  // namespace
}  // namespace ringlab::rtps

namespace ringlab::rtps {
namespace {

// Any message from a participant renews its lease (as Cyclone does), not
// only its SPDP announcements: a writer that announces itself rarely but
// sends data stays alive; once it stops sending, it expires.
TEST(ParticipantSimTest, DataTrafficRenewsTheLease) {
  SimHarness h;
  ParticipantConfig quiet;
  quiet.lease_duration_ns = 1'000'000'000;
  quiet.spdp_period_ns = 60'000'000'000;  // far beyond the lease
  Node& a = h.Add();
  Node& b = h.Add(quiet);
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.reliability = ReliabilityKind::kBestEffort;
  EndpointHandle w = *b.p->CreateWriter(Writer("Alive", wq), h.now());
  EndpointHandle r = *a.p->CreateReader(
      Reader("Alive", EndpointQos::ReaderDefaults()), h.now());
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(1),
                         [&] { return a.p->MatchedCount(r) == 1; }));
  for (uint32_t i = 1; i <= 30; ++i) {  // 3 s of data, 3 leases
    ASSERT_TRUE(b.p->Write(w, Encode(i, 0), KeyOf(0), 0, h.now()).ok());
    h.RunFor(std::chrono::milliseconds(100));
    ASSERT_EQ(a.p->remote_participant_count(), 1u) << "at sample " << i;
  }
  h.RunFor(std::chrono::milliseconds(1500));  // silence: the lease runs out
  EXPECT_EQ(a.p->remote_participant_count(), 0u);
  EXPECT_EQ(a.p->MatchedCount(r), 0u);
}

}  // namespace
}  // namespace ringlab::rtps

namespace ringlab::rtps {
namespace {

// Leaving (§8.5.3): SEDP disposes for every endpoint and an SPDP dispose, so
// the others drop the participant at once instead of after its lease.
TEST(ParticipantSimTest, LeavingIsAnnouncedAndPeersDropUsAtOnce) {
  SimHarness h;
  Node& a = h.Add();
  Node& b = h.Add();
  EndpointHandle w =
      *a.p->CreateWriter(Writer("Bye", EndpointQos::WriterDefaults()), h.now());
  EndpointHandle r =
      *b.p->CreateReader(Reader("Bye", EndpointQos::ReaderDefaults()), h.now());
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2),
                         [&] { return b.p->MatchedCount(r) == 1; }));
  while (b.p->PollEvent()) {
  }
  a.p->Leave(h.now());
  EXPECT_EQ(a.p->MatchedCount(w), 0u);
  h.RunFor(std::chrono::milliseconds(5));  // one link delay, not a lease
  EXPECT_EQ(b.p->remote_participant_count(), 0u);
  EXPECT_EQ(b.p->MatchedCount(r), 0u);
  bool lost = false, unmatched = false;
  while (auto e = b.p->PollEvent()) {
    lost |= e->kind == Event::Kind::kParticipantLost;
    unmatched |= e->kind == Event::Kind::kReaderUnmatched;
  }
  EXPECT_TRUE(lost);
  EXPECT_TRUE(unmatched);
  EXPECT_EQ(b.p->counters().leases_expired, 0u);
}

}  // namespace
}  // namespace ringlab::rtps
