// The time-based and ownership QoS of DDS 1.4 §2.2.3 on SimNetwork with a
// virtual clock: DEADLINE, LIFESPAN and LIVELINESS fire at the exact tick
// the specification implies; OWNERSHIP, DESTINATION_ORDER, PARTITION
// wildcards and LATENCY_BUDGET batching; mismatches are events naming the
// policy and inconsistent QoS is refused at creation.
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "rtps/sim_harness_test.h"

namespace ringlab::rtps {
namespace {

using namespace simtest;  // NOLINT: test-only

using std::chrono::microseconds;
using std::chrono::milliseconds;

// Every event of a participant with the (virtual) time it was polled at.
struct EventLog {
  std::vector<std::pair<Timestamp, Event>> events;
  void Poll(Participant& p, Timestamp now) {
    while (auto e = p.PollEvent()) events.emplace_back(now, *e);
  }
  std::vector<Timestamp> TimesOf(Event::Kind k) const {
    std::vector<Timestamp> out;
    for (const auto& [t, e] : events) {
      if (e.kind == k) out.push_back(t);
    }
    return out;
  }
  const Event* Last(Event::Kind k) const {
    const Event* found = nullptr;
    for (const auto& [t, e] : events) {
      if (e.kind == k) found = &e;
    }
    return found;
  }
};

// Runs `h` for `d`, logging both nodes' events each step.
void RunLogging(SimHarness& h, Duration d, Node& a, EventLog& la, Node& b,
                EventLog& lb) {
  h.RunUntil(h.now() + d, [&] {
    la.Poll(*a.p, h.now());
    lb.Poll(*b.p, h.now());
    return false;
  });
  la.Poll(*a.p, h.now());
  lb.Poll(*b.p, h.now());
}

struct Matched {
  Node* a;
  Node* b;
  EndpointHandle w, r;
};

Matched Match(SimHarness& h, const std::string& topic, EndpointQos wq,
              EndpointQos rq) {
  Matched m;
  m.a = &h.Add();
  m.b = &h.Add();
  auto w = m.a->p->CreateWriter(Writer(topic, wq), h.now());
  auto r = m.b->p->CreateReader(Reader(topic, rq), h.now());
  EXPECT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(r.ok()) << r.status();
  m.w = *w;
  m.r = *r;
  EXPECT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2), [&] {
    return m.a->p->MatchedCount(m.w) == 1 && m.b->p->MatchedCount(m.r) == 1;
  }));
  while (m.a->p->PollEvent() || m.b->p->PollEvent()) {
  }
  return m;
}

EndpointQos ReliableReader() {
  EndpointQos q = EndpointQos::ReaderDefaults();
  q.reliability = ReliabilityKind::kReliable;
  q.history = HistoryKind::kKeepAll;
  return q;
}

constexpr Duration kLink = microseconds(100);  // the harness's link delay

// DDS 1.4 §2.2.3.7: the writer misses the deadline of an instance it did
// not write for one period, at t + period, and again each period; the
// reader misses it one period after the last sample arrived.
TEST(QosSimTest, DeadlineMissedAtTheExactTick) {
  SimHarness h;
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.deadline_ns = 100'000'000;
  EndpointQos rq = ReliableReader();
  rq.deadline_ns = 100'000'000;
  Matched m = Match(h, "Deadline", wq, rq);
  EventLog la, lb;
  const Timestamp t0 = h.now();
  ASSERT_TRUE(m.a->p->Write(m.w, Encode(1, 7), KeyOf(7), 1, t0).ok());
  RunLogging(h, milliseconds(250), *m.a, la, *m.b, lb);
  EXPECT_EQ(
      la.TimesOf(Event::Kind::kOfferedDeadlineMissed),
      (std::vector<Timestamp>{t0 + milliseconds(100), t0 + milliseconds(200)}));
  EXPECT_EQ(lb.TimesOf(Event::Kind::kRequestedDeadlineMissed),
            (std::vector<Timestamp>{t0 + kLink + milliseconds(100),
                                    t0 + kLink + milliseconds(200)}));
  const Event* e = lb.Last(Event::Kind::kRequestedDeadlineMissed);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->instance, KeyOf(7));
  EXPECT_EQ(e->local, m.r);
  EXPECT_EQ(e->remote, m.a->p->EndpointGuid(m.w));
  // Writing again restarts the period.
  la.events.clear();
  lb.events.clear();
  const Timestamp t1 = h.now();
  ASSERT_TRUE(m.a->p->Write(m.w, Encode(2, 7), KeyOf(7), 2, t1).ok());
  RunLogging(h, milliseconds(150), *m.a, la, *m.b, lb);
  EXPECT_EQ(la.TimesOf(Event::Kind::kOfferedDeadlineMissed),
            std::vector<Timestamp>{t1 + milliseconds(100)});
  EXPECT_EQ(m.a->p->counters().offered_deadlines_missed, 3u);
}

// §2.2.3.16: a sample expires at source timestamp + lifespan: it leaves the
// writer's history and the reader's at that instant, and one that arrives
// already expired is never delivered. (Simulated wall time = `now`.)
TEST(QosSimTest, LifespanExpiresAtTheExactTick) {
  SimHarness h;
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.lifespan_ns = 50'000'000;
  wq.durability = DurabilityKind::kTransientLocal;
  wq.history = HistoryKind::kKeepAll;
  EndpointQos rq = ReliableReader();
  Matched m = Match(h, "Lifespan", wq, rq);
  const Timestamp t0 = h.now();
  ASSERT_TRUE(m.a->p->Write(m.w, Encode(1, 1), KeyOf(1), t0.nanos(), t0).ok());
  // Already 60 ms old when written: expired on arrival.
  ASSERT_TRUE(m.a->p
                  ->Write(m.w, Encode(2, 1), KeyOf(1),
                          (t0 - milliseconds(60)).nanos(), t0)
                  .ok());
  Timestamp reader_drop = Timestamp::Never(), writer_drop = Timestamp::Never();
  h.RunUntil(t0 + milliseconds(80), [&] {
    if (reader_drop.is_never() && m.b->p->counters().samples_expired == 2) {
      reader_drop = h.now();
    }
    if (writer_drop.is_never() &&
        m.a->p->counters().writer_samples_expired == 2) {
      writer_drop = h.now();
    }
    return false;
  });
  // The stale one was dropped on arrival; the fresh one at t0 + 50 ms.
  EXPECT_EQ(reader_drop, t0 + milliseconds(50));
  EXPECT_EQ(writer_drop, t0 + milliseconds(50));
  EXPECT_EQ(m.b->p->Available(m.r), 0u);
  EXPECT_EQ(m.b->p->Take(m.r), nullptr);
  // A transient-local late joiner gets nothing: the history is empty.
  Node& c = h.Add();
  EndpointQos late = ReliableReader();
  late.durability = DurabilityKind::kTransientLocal;
  EndpointHandle rc = *c.p->CreateReader(Reader("Lifespan", late), h.now());
  h.RunFor(milliseconds(200));
  EXPECT_EQ(c.p->MatchedCount(rc), 1u);
  EXPECT_EQ(c.p->Available(rc), 0u);
  EXPECT_TRUE(TakeSeqs(*c.p, rc).empty());
}

// §2.2.3.11: MANUAL_BY_PARTICIPANT. The writer loses its liveliness one
// lease after its last assertion; the reader sees the writer not alive one
// lease after the assertion reached it (by a participant message, §8.4.13),
// and alive again with the next sample.
TEST(QosSimTest, ManualLivelinessLostAtTheExactTick) {
  SimHarness h;
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.liveliness = LivelinessKind::kManualByParticipant;
  wq.liveliness_lease_ns = 200'000'000;
  EndpointQos rq = ReliableReader();
  rq.liveliness = LivelinessKind::kManualByParticipant;
  rq.liveliness_lease_ns = 200'000'000;
  Matched m = Match(h, "Alive", wq, rq);
  EventLog la, lb;
  const Timestamp t0 = h.now();
  m.a->p->AssertLiveliness(t0);
  RunLogging(h, milliseconds(350), *m.a, la, *m.b, lb);
  EXPECT_EQ(la.TimesOf(Event::Kind::kLivelinessLost),
            std::vector<Timestamp>{t0 + milliseconds(200)});
  EXPECT_EQ(lb.TimesOf(Event::Kind::kLivelinessChanged),
            std::vector<Timestamp>{t0 + kLink + milliseconds(200)});
  const Event* e = lb.Last(Event::Kind::kLivelinessChanged);
  ASSERT_NE(e, nullptr);
  EXPECT_FALSE(e->alive);
  EXPECT_EQ(e->remote, m.a->p->EndpointGuid(m.w));
  EXPECT_GT(m.a->p->counters().participant_messages_sent, 0u);
  EXPECT_GT(m.b->p->counters().participant_messages_received, 0u);
  // A write asserts it again; the reader sees it alive when it arrives.
  lb.events.clear();
  const Timestamp t1 = h.now();
  ASSERT_TRUE(m.a->p->Write(m.w, Encode(1, 1), KeyOf(1), 1, t1).ok());
  RunLogging(h, milliseconds(10), *m.a, la, *m.b, lb);
  e = lb.Last(Event::Kind::kLivelinessChanged);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->alive);
  EXPECT_EQ(lb.TimesOf(Event::Kind::kLivelinessChanged),
            std::vector<Timestamp>{t1 + kLink});
}

// AUTOMATIC liveliness with a finite lease: participant messages keep the
// writer alive while its participant runs; a silent participant's writer
// is not alive within one lease of its last message.
TEST(QosSimTest, AutomaticLivelinessFollowsTheParticipant) {
  SimHarness h;
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.liveliness_lease_ns = 60'000'000;
  EndpointQos rq = ReliableReader();
  rq.liveliness_lease_ns = 60'000'000;
  Matched m = Match(h, "Auto", wq, rq);
  EventLog la, lb;
  RunLogging(h, milliseconds(500), *m.a, la, *m.b, lb);
  EXPECT_TRUE(lb.TimesOf(Event::Kind::kLivelinessChanged).empty());
  EXPECT_GE(m.a->p->counters().participant_messages_sent, 500u / 20 - 1);
  const Timestamp silent = h.now();
  m.a->silent = true;
  RunLogging(h, milliseconds(200), *m.a, la, *m.b, lb);
  std::vector<Timestamp> lost = lb.TimesOf(Event::Kind::kLivelinessChanged);
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_GT(lost[0], silent);
  EXPECT_LE(lost[0], silent + milliseconds(60));
}

// §2.2.3.9 EXCLUSIVE: the reader hears only the strongest writer of an
// instance; when it goes away the next one takes over.
TEST(QosSimTest, ExclusiveOwnershipFollowsStrength) {
  SimHarness h;
  Node& weak = h.Add();
  Node& strong = h.Add();
  Node& sub = h.Add();
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.ownership = OwnershipKind::kExclusive;
  wq.ownership_strength = 10;
  EndpointHandle ww = *weak.p->CreateWriter(Writer("Own", wq), h.now());
  wq.ownership_strength = 20;
  EndpointHandle ws = *strong.p->CreateWriter(Writer("Own", wq), h.now());
  EndpointQos rq = ReliableReader();
  rq.ownership = OwnershipKind::kExclusive;
  EndpointHandle r = *sub.p->CreateReader(Reader("Own", rq), h.now());
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2),
                         [&] { return sub.p->MatchedCount(r) == 2; }));
  // Both write instance 1 in turns: only the strong one is delivered.
  for (uint32_t i = 0; i < 6; ++i) {
    Node& n = i % 2 == 0 ? weak : strong;
    EndpointHandle w = i % 2 == 0 ? ww : ws;
    ASSERT_TRUE(n.p->Write(w, Encode(100 + i, 1), KeyOf(1), i, h.now()).ok());
    h.RunFor(milliseconds(5));
  }
  // The weak writer's first sample came before anyone owned the instance.
  EXPECT_EQ(TakeSeqs(*sub.p, r), (std::vector<uint32_t>{100, 101, 103, 105}));
  EXPECT_EQ(sub.p->counters().samples_not_owner, 2u);
  // Another instance is owned separately: the weak writer has it.
  ASSERT_TRUE(weak.p->Write(ww, Encode(200, 2), KeyOf(2), 9, h.now()).ok());
  h.RunFor(milliseconds(5));
  EXPECT_EQ(TakeSeqs(*sub.p, r), std::vector<uint32_t>{200});
  // The strong writer leaves: the weak one owns instance 1 now.
  ASSERT_TRUE(strong.p->DeleteEndpoint(ws, h.now()).ok());
  h.RunFor(milliseconds(50));
  ASSERT_TRUE(weak.p->Write(ww, Encode(300, 1), KeyOf(1), 10, h.now()).ok());
  h.RunFor(milliseconds(5));
  EXPECT_EQ(TakeSeqs(*sub.p, r), std::vector<uint32_t>{300});
  int changes = 0;
  while (auto e = sub.p->PollEvent()) {
    changes += e->kind == Event::Kind::kOwnershipChanged;
  }
  // weak (1), strong (1), weak (2), released (1), weak (1).
  EXPECT_EQ(changes, 5);
}

// §2.2.3.17 BY_SOURCE_TIMESTAMP: an instance never goes back in source time
// at the reader; BY_RECEPTION_TIMESTAMP takes everything.
TEST(QosSimTest, DestinationOrderBySourceTimestamp) {
  SimHarness h;
  Node& a = h.Add();
  Node& b = h.Add();
  Node& sub = h.Add();
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.destination_order = DestinationOrderKind::kBySourceTimestamp;
  EndpointHandle wa = *a.p->CreateWriter(Writer("Order", wq), h.now());
  EndpointHandle wb = *b.p->CreateWriter(Writer("Order", wq), h.now());
  EndpointQos by_source = ReliableReader();
  by_source.destination_order = DestinationOrderKind::kBySourceTimestamp;
  EndpointHandle rs = *sub.p->CreateReader(Reader("Order", by_source), h.now());
  EndpointHandle rr =
      *sub.p->CreateReader(Reader("Order", ReliableReader()), h.now());
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2), [&] {
    return sub.p->MatchedCount(rs) == 2 && sub.p->MatchedCount(rr) == 2;
  }));
  ASSERT_TRUE(a.p->Write(wa, Encode(1, 5), KeyOf(5), 1000, h.now()).ok());
  h.RunFor(milliseconds(5));
  // b's clock is behind: its newer write carries an older timestamp.
  ASSERT_TRUE(b.p->Write(wb, Encode(2, 5), KeyOf(5), 900, h.now()).ok());
  h.RunFor(milliseconds(5));
  ASSERT_TRUE(b.p->Write(wb, Encode(3, 5), KeyOf(5), 1100, h.now()).ok());
  h.RunFor(milliseconds(5));
  EXPECT_EQ(TakeSeqs(*sub.p, rs), (std::vector<uint32_t>{1, 3}));
  EXPECT_EQ(TakeSeqs(*sub.p, rr), (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(sub.p->counters().samples_out_of_order, 1u);
}

// §2.2.3.13: partition names may be fnmatch wildcards on one side.
TEST(QosSimTest, PartitionWildcards) {
  SimHarness h;
  Node& a = h.Add();
  Node& b = h.Add();
  auto writer = [&](std::vector<std::string> parts, const char* topic) {
    EndpointQos q = EndpointQos::WriterDefaults();
    q.partitions = std::move(parts);
    return *a.p->CreateWriter(Writer(topic, q), h.now());
  };
  auto reader = [&](std::vector<std::string> parts, const char* topic) {
    EndpointQos q = EndpointQos::ReaderDefaults();
    q.partitions = std::move(parts);
    return *b.p->CreateReader(Reader(topic, q), h.now());
  };
  EndpointHandle w1 = writer({"sensor*"}, "P1");
  EndpointHandle r1 = reader({"sensor17"}, "P1");  // matches the pattern
  EndpointHandle w2 = writer({"plant/a?"}, "P2");
  EndpointHandle r2 = reader({"plant/b1", "plant/ab"}, "P2");  // one matches
  EndpointHandle w3 = writer({"x*"}, "P3");
  EndpointHandle r3 = reader({"x?"}, "P3");  // two patterns: no match
  EndpointHandle w4 = writer({"x*"}, "P4");
  EndpointHandle r4 = reader({"x*"}, "P4");  // identical patterns match
  EndpointHandle w5 = writer({"sensor*"}, "P5");
  EndpointHandle r5 = reader({}, "P5");  // default partition: no match
  h.RunFor(milliseconds(500));
  EXPECT_EQ(b.p->MatchedCount(r1), 1u);
  EXPECT_EQ(b.p->MatchedCount(r2), 1u);
  EXPECT_EQ(b.p->MatchedCount(r3), 0u);
  EXPECT_EQ(b.p->MatchedCount(r4), 1u);
  EXPECT_EQ(b.p->MatchedCount(r5), 0u);
  EXPECT_EQ(a.p->MatchedCount(w1) + a.p->MatchedCount(w2) +
                a.p->MatchedCount(w3) + a.p->MatchedCount(w4) +
                a.p->MatchedCount(w5),
            3u);
}

// §2.2.3.8 LATENCY_BUDGET: samples written within the budget share one
// datagram, pushed when the first one's budget ends.
TEST(QosSimTest, LatencyBudgetBatchesSamplesIntoOneDatagram) {
  SimHarness h;
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.reliability = ReliabilityKind::kBestEffort;
  wq.history = HistoryKind::kKeepAll;
  wq.latency_budget_ns = 1'000'000;
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.history = HistoryKind::kKeepAll;
  rq.latency_budget_ns = 2'000'000;
  Matched m = Match(h, "Budget", wq, rq);
  const Timestamp t0 = h.now();
  Timestamp first_arrival = Timestamp::Never();
  size_t arrived_together = 0;
  uint32_t written = 0;
  h.set_max_step(microseconds(50));
  h.RunUntil(t0 + milliseconds(5), [&] {
    // Ten samples, one every 50 us.
    while (written < 10 && h.now() >= t0 + microseconds(50) * written) {
      ++written;
      EXPECT_TRUE(
          m.a->p->Write(m.w, Encode(written, 0), KeyOf(0), 1, h.now()).ok());
    }
    if (first_arrival.is_never() && m.b->p->Available(m.r) > 0) {
      first_arrival = h.now();
      arrived_together = m.b->p->Available(m.r);
    }
    return false;
  });
  EXPECT_EQ(m.b->p->Available(m.r), 10u);
  EXPECT_EQ(arrived_together, 10u);  // one datagram
  EXPECT_EQ(m.a->p->counters().batched_datagrams, 1u);
  EXPECT_EQ(first_arrival, t0 + milliseconds(1) + kLink);
  // A budget larger than the reader's is an incompatibility (RxO).
  EndpointQos big = wq;
  big.latency_budget_ns = 3'000'000;
  EndpointHandle w2 = *m.a->p->CreateWriter(Writer("Budget", big), h.now());
  h.RunFor(milliseconds(200));
  EXPECT_EQ(m.a->p->MatchedCount(w2), 0u);
}

// LATENCY_BUDGET: a batch that overflows one datagram sends the datagram
// full, and the samples that did not fit keep waiting for company (or
// their budget). Before, they left at once in a small datagram of their
// own, so a steady writer alternated full and small datagrams (about half
// a buffer on average, seen in the rtps-batching suite).
TEST(QosSimTest, LatencyBudgetOverflowSendsFullDatagrams) {
  SimHarness h;
  ParticipantConfig small;
  small.max_message_bytes = 8192;
  Matched m;
  m.a = &h.Add(small);
  m.b = &h.Add();
  EndpointQos wq = EndpointQos::WriterDefaults();
  wq.reliability = ReliabilityKind::kBestEffort;
  wq.history = HistoryKind::kKeepAll;
  wq.latency_budget_ns = 20'000'000;
  EndpointQos rq = EndpointQos::ReaderDefaults();
  rq.history = HistoryKind::kKeepAll;
  rq.latency_budget_ns = 20'000'000;
  m.w = *m.a->p->CreateWriter(Writer("Overflow", wq), h.now());
  m.r = *m.b->p->CreateReader(Reader("Overflow", rq), h.now());
  ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2), [&] {
    return m.a->p->MatchedCount(m.w) == 1 && m.b->p->MatchedCount(m.r) == 1;
  }));
  const uint64_t batched_before = m.a->p->counters().batched_datagrams;
  const Timestamp t0 = h.now();
  constexpr uint32_t kSamples = 300;
  uint32_t written = 0;
  h.set_max_step(microseconds(10));
  h.RunUntil(t0 + milliseconds(30), [&] {
    // One sample every 10 us: 3 ms of writes, well inside the budget.
    while (written < kSamples && h.now() >= t0 + microseconds(10) * written) {
      ++written;
      // Each with its own source timestamp, so each carries an INFO_TS.
      EXPECT_TRUE(m.a->p
                      ->Write(m.w, Encode(written, 0, 64), KeyOf(0),
                              h.now().nanos(), h.now())
                      .ok());
    }
    return false;
  });
  EXPECT_EQ(m.b->p->Available(m.r), kSamples);
  // 300 samples of ~116 B on the wire fill four 8 KiB datagrams; the rest
  // go in a fifth when the budget ends. With the early close it took 9.
  const uint64_t datagrams =
      m.a->p->counters().batched_datagrams - batched_before;
  EXPECT_LE(datagrams, 5u);
  EXPECT_GE(datagrams, 4u);
}

// A request-offered mismatch is reported on both sides, naming the policy.
TEST(QosSimTest, MismatchesNameThePolicyOnBothSides) {
  struct Case {
    const char* policy;
    void (*offer)(EndpointQos&);
    void (*request)(EndpointQos&);
  };
  const Case cases[] = {
      {"DEADLINE", [](EndpointQos& q) { q.deadline_ns = 200'000'000; },
       [](EndpointQos& q) { q.deadline_ns = 100'000'000; }},
      {"OWNERSHIP",
       [](EndpointQos& q) { q.ownership = OwnershipKind::kShared; },
       [](EndpointQos& q) { q.ownership = OwnershipKind::kExclusive; }},
      {"LIVELINESS",
       [](EndpointQos& q) { q.liveliness = LivelinessKind::kAutomatic; },
       [](EndpointQos& q) {
         q.liveliness = LivelinessKind::kManualByParticipant;
       }},
      {"DESTINATION_ORDER", [](EndpointQos&) {},
       [](EndpointQos& q) {
         q.destination_order = DestinationOrderKind::kBySourceTimestamp;
       }},
      {"DURABILITY", [](EndpointQos&) {},
       [](EndpointQos& q) { q.durability = DurabilityKind::kTransientLocal; }},
  };
  for (const Case& c : cases) {
    SimHarness h;
    Node& a = h.Add();
    Node& b = h.Add();
    EndpointQos wq = EndpointQos::WriterDefaults();
    EndpointQos rq = ReliableReader();
    c.offer(wq);
    c.request(rq);
    EndpointHandle w = *a.p->CreateWriter(Writer("Mis", wq), h.now());
    EndpointHandle r = *b.p->CreateReader(Reader("Mis", rq), h.now());
    h.RunFor(milliseconds(500));
    auto policy = [](Participant& p, EndpointHandle local) {
      std::string name;
      while (auto e = p.PollEvent()) {
        if (e->kind == Event::Kind::kIncompatibleQos && e->local == local) {
          name = QosPolicyName(e->policy);
        }
      }
      return name;
    };
    EXPECT_EQ(policy(*a.p, w), c.policy);
    EXPECT_EQ(policy(*b.p, r), c.policy);
    EXPECT_EQ(a.p->MatchedCount(w), 0u) << c.policy;
  }
}

// DDS 1.4 §2.2.3 consistency: an inconsistent QoS is refused when the
// entity is created, with the policy named.
TEST(QosSimTest, InconsistentQosIsRefusedAtCreation) {
  SimHarness h;
  Node& a = h.Add();
  struct Case {
    const char* policy;
    void (*make)(EndpointQos&);
  };
  const Case cases[] = {
      {"HISTORY", [](EndpointQos& q) { q.history_depth = 0; }},
      {"RESOURCE_LIMITS",
       [](EndpointQos& q) {
         q.history_depth = 4;
         q.max_samples_per_instance = 2;
       }},
      {"RESOURCE_LIMITS",
       [](EndpointQos& q) {
         q.max_samples = 2;
         q.max_samples_per_instance = 3;
       }},
      {"DEADLINE", [](EndpointQos& q) { q.deadline_ns = 0; }},
      {"LIFESPAN", [](EndpointQos& q) { q.lifespan_ns = 0; }},
      {"LIVELINESS", [](EndpointQos& q) { q.liveliness_lease_ns = -5; }},
      {"LATENCY_BUDGET", [](EndpointQos& q) { q.latency_budget_ns = -1; }},
  };
  for (const Case& c : cases) {
    EndpointQos q = EndpointQos::WriterDefaults();
    c.make(q);
    auto w = a.p->CreateWriter(Writer("Bad", q), h.now());
    ASSERT_FALSE(w.ok()) << c.policy;
    EXPECT_TRUE(absl::IsInvalidArgument(w.status()));
    EXPECT_TRUE(absl::StrContains(w.status().message(), c.policy))
        << w.status();
    auto r = a.p->CreateReader(Reader("Bad", q), h.now());
    EXPECT_FALSE(r.ok()) << c.policy;
  }
}

}  // namespace
}  // namespace ringlab::rtps
