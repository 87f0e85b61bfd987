// Interop with a Cyclone DDS program of our own (rtps/interop's
// ringlab_cyclone_peer, idlc-compiled ringlab::interop::KeyedSample): what
// ddsperf cannot show. Transient-local late joiners both ways, and keyed
// samples of a type with a 64-bit member (XCDR1 8-byte alignment) and a
// string. Loopback only; each test in a domain of its own, bounded.
#include <unistd.h>

#include <cstdio>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rtps/domain_participant.h"
#include "rtps/interop/cyclone_peer.h"
#include "rtps/topic.h"
#include "testing/peers.h"
#include "testing/skip.h"

namespace ringlab::rtps {
namespace {

// ringlab::interop::KeyedSample (rtps/interop/ringlab_interop.idl).
struct KeyedSample {
  int32_t id = 0;
  uint64_t seq = 0;
  std::vector<uint8_t> payload;
  std::string text;
};

}  // namespace

template <>
struct CdrType<KeyedSample> {
  static constexpr bool kPrimitive = false;
  static void Write(CdrWriter& w, const KeyedSample& v) {
    w.Write(v.id);
    w.Write(v.seq);
    WriteCdr(w, v.payload);
    w.WriteString(v.text);
  }
  static bool Read(CdrReader& r, KeyedSample* v) {
    return r.Read(&v->id) && r.Read(&v->seq) && ReadCdr(r, &v->payload) &&
           r.ReadString(&v->text);
  }
};
template <>
struct TopicType<KeyedSample> {
  static constexpr std::string_view kTypeName = "ringlab::interop::KeyedSample";
  static constexpr bool kKeyed = true;
  static constexpr size_t kMaxKeyBytes = 4;
  static void WriteKey(CdrWriter& w, const KeyedSample& v) { w.Write(v.id); }
};

namespace {

KeyedSample Make(int32_t id, uint64_t seq, size_t size) {
  KeyedSample s;
  s.id = id;
  s.seq = seq;
  for (size_t i = 0; i < size; ++i)
    s.payload.push_back(static_cast<uint8_t>(seq + i));
  s.text = absl::StrCat("ringlab seq=", seq);
  return s;
}

class CyclonePeerInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testkit::CyclonePeerBinary().empty()) {
      GTEST_SKIP() << "ringlab_cyclone_peer not built (needs cyclonedds-dev)";
    }
    domain_ = testkit::PickDomainId();
    DomainParticipantOptions o;
    o.domain_id = static_cast<uint32_t>(domain_);
    o.backend = "epoll";
    auto dp = DomainParticipant::Create(o);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = std::move(*dp);
  }
  int domain_ = 0;
  std::unique_ptr<DomainParticipant> dp_;
};

TEST_F(CyclonePeerInteropTest, TransientLocalLateJoinerReadsCycloneHistory) {
  // Cyclone writes 10 samples with nobody listening, then stays up.
  auto pub = testkit::StartCyclonePeer({.mode = "pub",
                                        .topic = "tl_from_cyclone",
                                        .reliable = true,
                                        .transient_local = true,
                                        .history = 10,
                                        .count = 10,
                                        .size_bytes = 24,
                                        .wait_match = 0,
                                        .duration_s = 20,
                                        .linger_s = 15,
                                        .domain_id = domain_});
  RINGLAB_SKIP_IF_MISSING(pub.status());
  ASSERT_TRUE(pub.ok()) << pub.status();
  ASSERT_TRUE((*pub)->WaitForLine("^SENT id=0 seq=9 ", absl::Seconds(10)).ok())
      << (*pub)->OutputTail();
  // Now we join, transient-local and reliable: we must get all ten.
  Topic<KeyedSample> topic("tl_from_cyclone");
  EndpointQos q = EndpointQos::ReaderDefaults();
  q.reliability = ReliabilityKind::kReliable;
  q.durability = DurabilityKind::kTransientLocal;
  q.history = HistoryKind::kKeepAll;
  auto reader = DataReader<KeyedSample>::Create(*dp_, topic, q);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<KeyedSample> got;
  KeyedSample s;
  dp_->RunUntil(
      [&] {
        while ((*reader)->Take(&s)) got.push_back(s);
        return got.size() >= 10;
      },
      std::chrono::seconds(10));
  ASSERT_EQ(got.size(), 10u) << (*pub)->OutputTail();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq, i);
    EXPECT_EQ(got[i].text, absl::StrCat("ringlab seq=", i));
    ASSERT_EQ(got[i].payload.size(), 24u);
    EXPECT_EQ(got[i].payload[5], static_cast<uint8_t>(i + 5));
  }
}

// A volatile reader matched to a transient-local writer gets what is
// written after it joined, not the writer's history (DDS 1.4 §2.2.3.4):
// Cyclone sends its history to every reliable reader, so we skip what its
// first heartbeat to us covers.
TEST_F(CyclonePeerInteropTest, VolatileReaderSkipsTransientLocalHistory) {
  auto pub = testkit::StartCyclonePeer({.mode = "pub",
                                        .topic = "tl_volatile",
                                        .reliable = true,
                                        .transient_local = true,
                                        .history = 0,
                                        .count = 40,
                                        .size_bytes = 8,
                                        .wait_match = 0,
                                        .interval_ms = 50,
                                        .duration_s = 15,
                                        .linger_s = 1,
                                        .domain_id = domain_});
  RINGLAB_SKIP_IF_MISSING(pub.status());
  ASSERT_TRUE(pub.ok()) << pub.status();
  ASSERT_TRUE((*pub)->WaitForLine("^SENT id=0 seq=5 ", absl::Seconds(10)).ok())
      << (*pub)->OutputTail();
  Topic<KeyedSample> topic("tl_volatile");
  EndpointQos q = EndpointQos::ReaderDefaults();
  q.reliability = ReliabilityKind::kReliable;
  q.history = HistoryKind::kKeepAll;
  auto reader = DataReader<KeyedSample>::Create(*dp_, topic, q);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<uint64_t> got;
  KeyedSample s;
  dp_->RunUntil(
      [&] {
        while ((*reader)->Take(&s)) got.push_back(s.seq);
        return !got.empty() && got.back() == 39;
      },
      std::chrono::seconds(10));
  ASSERT_GE(got.size(), 10u) << (*pub)->OutputTail();
  EXPECT_GT(got.front(), 5u) << "got the writer's history";
  for (size_t i = 1; i < got.size(); ++i) EXPECT_EQ(got[i], got[i - 1] + 1);
}

TEST_F(CyclonePeerInteropTest, CycloneLateJoinerReadsOurHistory) {
  Topic<KeyedSample> topic("tl_from_ringlab");
  EndpointQos q = EndpointQos::WriterDefaults();
  q.durability = DurabilityKind::kTransientLocal;
  q.history = HistoryKind::kKeepLast;
  q.history_depth = 10;
  auto writer = DataWriter<KeyedSample>::Create(*dp_, topic, q);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (uint64_t seq = 0; seq < 10; ++seq) {
    ASSERT_TRUE((*writer)->Write(Make(0, seq, 16)).ok());
  }
  dp_->RunFor(std::chrono::milliseconds(200));
  auto sub = testkit::StartCyclonePeer({.mode = "sub",
                                        .topic = "tl_from_ringlab",
                                        .reliable = true,
                                        .transient_local = true,
                                        .history = 0,
                                        .count = 10,
                                        .duration_s = 15,
                                        .domain_id = domain_});
  RINGLAB_SKIP_IF_MISSING(sub.status());
  ASSERT_TRUE(sub.ok()) << sub.status();
  bool done = dp_->RunUntil(
      [&] { return testkit::ReceivedSamples(**sub).size() >= 10; },
      std::chrono::seconds(12));
  std::vector<testkit::KeyedRecv> got = testkit::ReceivedSamples(**sub);
  ASSERT_TRUE(done) << got.size() << "\n" << (*sub)->OutputTail();
  std::set<uint64_t> seqs;
  for (const auto& r : got) {
    EXPECT_TRUE(r.valid);
    EXPECT_EQ(r.size_bytes, 16u);
    seqs.insert(r.seq);
  }
  EXPECT_EQ(seqs.size(), 10u);
  EXPECT_EQ(*seqs.begin(), 0u);
  EXPECT_EQ(*seqs.rbegin(), 9u);
}

TEST_F(CyclonePeerInteropTest, KeyedSamplesBothWaysWithWideType) {
  // Cyclone -> us, 4 keys, reliable.
  Topic<KeyedSample> in("keyed_in");
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.reliability = ReliabilityKind::kReliable;
  rq.history = HistoryKind::kKeepAll;
  auto reader = DataReader<KeyedSample>::Create(*dp_, in, rq);
  ASSERT_TRUE(reader.ok());
  auto pub = testkit::StartCyclonePeer({.mode = "pub",
                                        .topic = "keyed_in",
                                        .reliable = true,
                                        .history = 0,
                                        .count = 40,
                                        .keys = 4,
                                        .size_bytes = 10,
                                        .wait_match = 1,
                                        .duration_s = 15,
                                        .linger_s = 2,
                                        .domain_id = domain_});
  RINGLAB_SKIP_IF_MISSING(pub.status());
  ASSERT_TRUE(pub.ok()) << pub.status();
  std::vector<KeyedSample> got;
  KeyedSample s;
  dp_->RunUntil(
      [&] {
        while ((*reader)->Take(&s)) got.push_back(s);
        return got.size() >= 40;
      },
      std::chrono::seconds(12));
  ASSERT_EQ(got.size(), 40u) << (*pub)->OutputTail();
  for (const KeyedSample& k : got)
    EXPECT_EQ(static_cast<uint64_t>(k.id), k.seq % 4);
  // Us -> Cyclone, best effort.
  auto sub = testkit::StartCyclonePeer({.mode = "sub",
                                        .topic = "keyed_out",
                                        .reliable = false,
                                        .history = 0,
                                        .count = 0,
                                        .duration_s = 10,
                                        .domain_id = domain_});
  ASSERT_TRUE(sub.ok()) << sub.status();
  Topic<KeyedSample> out("keyed_out");
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.reliability = ReliabilityKind::kBestEffort;
  auto writer = DataWriter<KeyedSample>::Create(*dp_, out, wq);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(dp_->RunUntil([&] { return (*writer)->matched() > 0; },
                            std::chrono::seconds(10)));
  // Cyclone's best-effort reader drops samples of a writer it has not yet
  // discovered through SEDP: give it a moment after the match.
  dp_->RunFor(std::chrono::milliseconds(500));
  for (uint64_t seq = 0; seq < 20; ++seq) {
    ASSERT_TRUE(
        (*writer)->Write(Make(static_cast<int32_t>(seq % 3), seq, 12)).ok());
    dp_->RunFor(std::chrono::milliseconds(5));
  }
  bool done = dp_->RunUntil(
      [&] { return testkit::ReceivedSamples(**sub).size() >= 18; },
      std::chrono::seconds(5));
  std::vector<testkit::KeyedRecv> recv = testkit::ReceivedSamples(**sub);
  EXPECT_TRUE(done) << recv.size() << "\n" << (*sub)->OutputTail();
  for (const auto& r : recv) {
    EXPECT_EQ(static_cast<uint64_t>(r.id), r.seq % 3);
    EXPECT_EQ(r.text, absl::StrCat("ringlab seq=", r.seq));
  }
}

// A DEADLINE mismatch (DDS 1.4 §2.2.3.7: offered period <= requested) is
// reported on both sides, naming the policy: Cyclone's offered/requested
// incompatible QoS status, our kIncompatibleQos event.
std::string OurIncompatiblePolicy(DomainParticipant& dp, EndpointHandle h) {
  std::string name;
  while (auto e = dp.core().PollEvent()) {
    if (e->kind == Event::Kind::kIncompatibleQos && e->local == h) {
      name = QosPolicyName(e->policy);
    }
  }
  return name;
}

TEST_F(CyclonePeerInteropTest,
       DeadlineMismatchReportedOnBothSidesCycloneReads) {
  auto sub = testkit::StartCyclonePeer({.mode = "sub",
                                        .topic = "deadline_mismatch_r",
                                        .reliable = true,
                                        .deadline_ms = 100,
                                        .duration_s = 8,
                                        .domain_id = domain_});
  RINGLAB_SKIP_IF_MISSING(sub.status());
  ASSERT_TRUE(sub.ok()) << sub.status();
  Topic<KeyedSample> topic("deadline_mismatch_r");
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.deadline_ns = 200'000'000;  // offers less than Cyclone asks for
  auto writer = DataWriter<KeyedSample>::Create(*dp_, topic, wq);
  ASSERT_TRUE(writer.ok());
  std::string ours;
  bool both = dp_->RunUntil(
      [&] {
        if (ours.empty())
          ours = OurIncompatiblePolicy(*dp_, (*writer)->handle());
        return !ours.empty() &&
               !(*sub)
                    ->MatchingLines("^INCOMPATIBLE reader .*policy=DEADLINE")
                    .empty();
      },
      std::chrono::seconds(10));
  EXPECT_TRUE(both) << (*sub)->OutputTail();
  EXPECT_EQ(ours, "DEADLINE");
  EXPECT_EQ((*writer)->matched(), 0u);
}

TEST_F(CyclonePeerInteropTest,
       DeadlineMismatchReportedOnBothSidesCycloneWrites) {
  Topic<KeyedSample> topic("deadline_mismatch_w");
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.reliability = ReliabilityKind::kReliable;
  rq.deadline_ns = 100'000'000;  // asks for more than Cyclone offers
  auto reader = DataReader<KeyedSample>::Create(*dp_, topic, rq);
  ASSERT_TRUE(reader.ok());
  auto pub = testkit::StartCyclonePeer({.mode = "pub",
                                        .topic = "deadline_mismatch_w",
                                        .reliable = true,
                                        .count = 0,
                                        .wait_match = 0,
                                        .deadline_ms = 200,
                                        .duration_s = 8,
                                        .linger_s = 6,
                                        .domain_id = domain_});
  RINGLAB_SKIP_IF_MISSING(pub.status());
  ASSERT_TRUE(pub.ok()) << pub.status();
  std::string ours;
  bool both = dp_->RunUntil(
      [&] {
        if (ours.empty())
          ours = OurIncompatiblePolicy(*dp_, (*reader)->handle());
        return !ours.empty() &&
               !(*pub)
                    ->MatchingLines("^INCOMPATIBLE writer .*policy=DEADLINE")
                    .empty();
      },
      std::chrono::seconds(10));
  EXPECT_TRUE(both) << (*pub)->OutputTail();
  EXPECT_EQ(ours, "DEADLINE");
  EXPECT_EQ((*reader)->matched(), 0u);
}

// Compatible deadlines: we write once, then stop; both sides see the
// deadline missed (ours: kOfferedDeadlineMissed every period; Cyclone's
// reader: its requested deadline missed status).
TEST_F(CyclonePeerInteropTest, DeadlineMissedBothWays) {
  auto sub = testkit::StartCyclonePeer({.mode = "sub",
                                        .topic = "deadline_ok",
                                        .reliable = true,
                                        .deadline_ms = 100,
                                        .duration_s = 8,
                                        .domain_id = domain_});
  RINGLAB_SKIP_IF_MISSING(sub.status());
  ASSERT_TRUE(sub.ok()) << sub.status();
  Topic<KeyedSample> topic("deadline_ok");
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.deadline_ns = 100'000'000;
  auto writer = DataWriter<KeyedSample>::Create(*dp_, topic, wq);
  ASSERT_TRUE(writer.ok());
  // Cyclone drops (and acknowledges) data that comes before its reader is
  // connected to our writer: wait for its side of the match.
  ASSERT_TRUE(dp_->RunUntil(
      [&] {
        return (*writer)->matched() > 0 &&
               !(*sub)->MatchingLines("^MATCHED reader ").empty();
      },
      std::chrono::seconds(10)));
  ASSERT_TRUE((*writer)->Write(Make(3, 1, 8)).ok());
  int offered = 0;
  bool seen = dp_->RunUntil(
      [&] {
        while (auto e = dp_->core().PollEvent()) {
          offered += e->kind == Event::Kind::kOfferedDeadlineMissed;
        }
        return offered >= 2 &&
               !(*sub)->MatchingLines("^DEADLINE_MISSED reader ").empty();
      },
      std::chrono::seconds(5));
  EXPECT_TRUE(seen) << offered << "\n" << (*sub)->OutputTail();
}

// DATA_FRAG both ways (DDSI-RTPS 2.5 §8.3.7.3): 64 KiB and 1 MiB samples,
// best effort and reliable. Cyclone fragments into 1344-byte fragments and
// repairs with NACK_FRAG; so do we.
struct FragCase {
  bool reliable;
  int size_bytes;
  double loss = 0;  // our side drops this share of datagrams, both ways
};

class FragmentInteropTest : public CyclonePeerInteropTest,
                            public ::testing::WithParamInterface<FragCase> {};

std::string FragName(const ::testing::TestParamInfo<FragCase>& info) {
  return absl::StrCat(info.param.reliable ? "Reliable" : "BestEffort",
                      info.param.size_bytes / 1024, "KiB",
                      info.param.loss > 0 ? "Lossy" : "");
}

// Count: enough that best effort shows samples arrive whole (a best-effort
// sample whose fragment the loopback socket buffer dropped is lost, which
// is what best effort means), few enough to stay well under 30 s.
int FragCount(const FragCase& c) { return c.size_bytes > (1 << 17) ? 4 : 8; }

TEST_P(FragmentInteropTest, CycloneSendsUsLargeSamples) {
  const FragCase c = GetParam();
  const std::string topic =
      absl::StrCat("frag_in_", c.reliable, "_", c.size_bytes);
  Topic<KeyedSample> in(topic);
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.reliability =
      c.reliable ? ReliabilityKind::kReliable : ReliabilityKind::kBestEffort;
  rq.history = HistoryKind::kKeepAll;
  auto reader = DataReader<KeyedSample>::Create(*dp_, in, rq);
  ASSERT_TRUE(reader.ok());
  const int count = FragCount(c);
  auto pub = testkit::StartCyclonePeer({.mode = "pub",
                                        .topic = topic,
                                        .reliable = c.reliable,
                                        .history = 0,
                                        .count = count,
                                        .size_bytes = c.size_bytes,
                                        .wait_match = 1,
                                        .interval_ms = 20,
                                        .duration_s = 15,
                                        .linger_s = 2,
                                        .domain_id = domain_});
  RINGLAB_SKIP_IF_MISSING(pub.status());
  ASSERT_TRUE(pub.ok()) << pub.status();
  std::vector<KeyedSample> got;
  KeyedSample s;
  if (c.loss > 0) {
    ASSERT_TRUE(dp_->RunUntil([&] { return (*reader)->matched() > 0; },
                              std::chrono::seconds(10)));
    dp_->SetTestDrops(c.loss, c.loss);
  }
  dp_->RunUntil(
      [&] {
        while ((*reader)->Take(&s)) got.push_back(s);
        return static_cast<int>(got.size()) >= count;
      },
      std::chrono::seconds(c.reliable ? 14 : 6));
  dp_->SetTestDrops(0, 0);
  if (c.reliable) {
    ASSERT_EQ(static_cast<int>(got.size()), count) << (*pub)->OutputTail();
  } else {
    ASSERT_GE(got.size(), 1u) << (*pub)->OutputTail();
  }
  uint64_t last = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const KeyedSample& k = got[i];
    if (i > 0) {
      EXPECT_GT(k.seq, last);
    }
    last = k.seq;
    ASSERT_EQ(k.payload.size(), static_cast<size_t>(c.size_bytes));
    for (size_t j = 0; j < k.payload.size(); j += 997) {
      ASSERT_EQ(k.payload[j], static_cast<uint8_t>(k.seq + j)) << j;
    }
    EXPECT_EQ(k.text, absl::StrCat("ringlab seq=", k.seq));
  }
  EXPECT_GT(dp_->core().counters().samples_reassembled, 0u);
  if (c.loss > 0) {
    // Lost fragments came back through our NACK_FRAGs.
    EXPECT_GT(dp_->dropped_for_test(), 0u);
    EXPECT_GT(dp_->core().counters().nack_frags_sent, 0u);
  }
  std::printf("from Cyclone: %zu of %d samples of %d B arrived\n", got.size(),
              count, c.size_bytes);
}

TEST_P(FragmentInteropTest, WeSendCycloneLargeSamples) {
  const FragCase c = GetParam();
  const std::string topic =
      absl::StrCat("frag_out_", c.reliable, "_", c.size_bytes);
  const int count = FragCount(c);
  auto sub = testkit::StartCyclonePeer({.mode = "sub",
                                        .topic = topic,
                                        .reliable = c.reliable,
                                        .history = 0,
                                        .count = count,
                                        .duration_s = 15,
                                        .domain_id = domain_});
  RINGLAB_SKIP_IF_MISSING(sub.status());
  ASSERT_TRUE(sub.ok()) << sub.status();
  Topic<KeyedSample> out(topic);
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.reliability =
      c.reliable ? ReliabilityKind::kReliable : ReliabilityKind::kBestEffort;
  wq.history = HistoryKind::kKeepAll;
  auto writer = DataWriter<KeyedSample>::Create(*dp_, out, wq);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(dp_->RunUntil([&] { return (*writer)->matched() > 0; },
                            std::chrono::seconds(10)));
  // Cyclone's best-effort reader drops samples of a writer it has not yet
  // discovered through SEDP: give it a moment after the match.
  dp_->RunFor(std::chrono::milliseconds(500));
  dp_->SetTestDrops(c.loss, c.loss);
  for (int seq = 0; seq < count; ++seq) {
    ASSERT_TRUE((*writer)->Write(Make(0, seq, c.size_bytes)).ok());
    dp_->RunFor(std::chrono::milliseconds(20));
  }
  const size_t want = c.reliable ? count : 1;
  bool done = dp_->RunUntil(
      [&] {
        return testkit::ReceivedSamples(**sub).size() >= want &&
               (!c.reliable || (*writer)->all_acknowledged());
      },
      std::chrono::seconds(12));
  dp_->SetTestDrops(0, 0);
  dp_->RunFor(std::chrono::milliseconds(200));
  std::vector<testkit::KeyedRecv> recv = testkit::ReceivedSamples(**sub);
  {
    const ParticipantCounters& k = dp_->core().counters();
    ASSERT_TRUE(done) << recv.size() << " received; hb " << k.heartbeats_sent
                      << " hb_frag " << k.heartbeat_frags_sent << " acknack "
                      << k.acknacks_received << " nack_frag "
                      << k.nack_frags_received << " (dropped "
                      << k.nack_frags_dropped << ") retransmitted "
                      << k.fragments_retransmitted << " whole " << k.retransmits
                      << "\n"
                      << (*sub)->OutputTail();
  }
  if (c.reliable) {
    EXPECT_EQ(recv.size(), want);
  }
  for (const auto& r : recv) {
    EXPECT_TRUE(r.valid) << r.seq;
    EXPECT_EQ(r.size_bytes, static_cast<uint32_t>(c.size_bytes));
  }
  EXPECT_GT(dp_->core().counters().samples_fragmented, 0u);
  if (c.loss > 0) {
    // Cyclone asked for the lost fragments with NACK_FRAG.
    EXPECT_GT(dp_->core().counters().nack_frags_received, 0u);
    EXPECT_GT(dp_->core().counters().fragments_retransmitted, 0u);
  }
  std::printf("to Cyclone: %zu of %d samples of %d B arrived\n", recv.size(),
              count, c.size_bytes);
}

INSTANTIATE_TEST_SUITE_P(Sizes, FragmentInteropTest,
                         ::testing::Values(FragCase{false, 64 << 10},
                                           FragCase{true, 64 << 10},
                                           FragCase{false, 1 << 20},
                                           FragCase{true, 1 << 20},
                                           FragCase{true, 1 << 20, 0.05}),
                         FragName);

}  // namespace
}  // namespace ringlab::rtps
