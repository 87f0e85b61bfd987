// Gossip discovery (rtps/gossip.h) on a virtual clock: the membership
// protocol alone (collisions, leaving, failure detection, bad input), and
// participants in gossip mode on SimNetwork: with SPDP-only peers, under
// loss, and 1,000 of them reaching full knowledge within a bounded time.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "rtps/discovery_sim.h"
#include "rtps/gossip.h"
#include "rtps/participant.h"
#include "rtps/sim_harness_test.h"

namespace ringlab::rtps {
namespace {

using namespace simtest;  // NOLINT: test-only

// Routes messages among GossipDiscovery instances with a fixed delay; a
// member can be cut off (crashed: neither sends nor receives).
class GossipMesh {
 public:
  GossipDiscovery& Add(uint8_t id, uint8_t prefix_byte, uint64_t nonce,
                       std::vector<Locator> seeds) {
    GossipConfig c;
    c.prefix.bytes = {0x01, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, prefix_byte};
    c.self = Locator::UdpV4(0x0a000000u + id, 7410);
    c.seeds = std::move(seeds);
    c.nonce = nonce;
    c.random_seed = id;
    c.period_ns = 100'000'000;
    c.suspicion_periods = 5;
    auto g = std::make_unique<GossipDiscovery>(c, now_);
    GossipRecord r;
    r.vendor = kVendorRinglab;
    g->SetLocalRecord(r, now_);
    auto& ref = *g;
    members_[c.self] = std::move(g);
    return ref;
  }
  static Locator Addr(uint8_t id) {
    return Locator::UdpV4(0x0a000000u + id, 7410);
  }
  void Cut(uint8_t id) { cut_.push_back(Addr(id)); }
  bool IsCut(const Locator& l) const {
    for (const Locator& c : cut_) {
      if (c == l) return true;
    }
    return false;
  }

  void RunFor(Duration d) {
    const Timestamp end = now_ + d;
    while (now_ < end) {
      for (auto& [addr, g] : members_) {
        if (IsCut(addr)) continue;
        if (g->NextDeadline() <= now_) g->OnTimeout(now_);
        while (auto t = g->PollTransmit(buf_, now_)) {
          ++sent_;
          in_flight_.push_back(
              {now_ + std::chrono::milliseconds(1), addr, t->destination,
               std::vector<std::byte>(buf_.begin(),
                                      buf_.begin() + t->size_bytes)});
        }
      }
      now_ += std::chrono::milliseconds(1);
      std::vector<Flight> later;
      for (Flight& f : in_flight_) {
        if (f.at > now_) {
          later.push_back(std::move(f));
          continue;
        }
        auto it = members_.find(f.to);
        if (it == members_.end() || IsCut(f.to)) continue;
        it->second->OnDatagram(f.bytes, f.from, now_);
      }
      in_flight_ = std::move(later);
    }
  }
  GossipDiscovery& at(uint8_t id) { return *members_.at(Addr(id)); }
  Timestamp now() const { return now_; }

 private:
  struct Flight {
    Timestamp at;
    Locator from, to;
    std::vector<std::byte> bytes;
  };
  struct LocatorLess {
    bool operator()(const Locator& a, const Locator& b) const {
      return std::memcmp(&a, &b, sizeof(Locator)) < 0;
    }
  };
  std::map<Locator, std::unique_ptr<GossipDiscovery>, LocatorLess> members_;
  std::vector<Locator> cut_;
  std::vector<Flight> in_flight_;
  std::array<std::byte, 65536> buf_{};
  Timestamp now_ = Timestamp::Zero();
  uint64_t sent_ = 0;
};

std::vector<GossipEvent::Kind> Kinds(GossipDiscovery& g) {
  std::vector<GossipEvent::Kind> k;
  while (auto e = g.PollEvent()) k.push_back(e->kind);
  return k;
}
int Count(const std::vector<GossipEvent::Kind>& v, GossipEvent::Kind k) {
  return static_cast<int>(std::count(v.begin(), v.end(), k));
}

TEST(GossipTest, MembersJoinLeaveAndFailuresAreDetected) {
  GossipMesh m;
  m.Add(1, 1, 11, {});
  for (uint8_t i = 2; i <= 5; ++i) m.Add(i, i, 10 + i, {GossipMesh::Addr(1)});
  m.RunFor(std::chrono::seconds(3));
  for (uint8_t i = 1; i <= 5; ++i) {
    EXPECT_EQ(m.at(i).member_count(), 4u) << int{i};
    EXPECT_EQ(Count(Kinds(m.at(i)), GossipEvent::Kind::kMemberJoined), 4);
  }
  // 5 leaves: the others learn it without waiting for a failure detector.
  m.at(5).Leave(m.now());
  m.RunFor(std::chrono::seconds(2));
  for (uint8_t i = 1; i <= 4; ++i) {
    EXPECT_EQ(m.at(i).member_count(), 3u) << int{i};
    EXPECT_EQ(Count(Kinds(m.at(i)), GossipEvent::Kind::kMemberLeft), 1);
  }
  // 4 crashes: probes fail, it is suspected, then declared dead.
  m.Cut(4);
  m.RunFor(std::chrono::seconds(4));
  for (uint8_t i = 1; i <= 3; ++i) {
    EXPECT_EQ(m.at(i).member_count(), 2u) << int{i};
    EXPECT_EQ(Count(Kinds(m.at(i)), GossipEvent::Kind::kMemberLeft), 1);
    EXPECT_EQ(
        m.at(i)
            .FindMember(GuidPrefix{{0x01, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4}})
            ->state,
        GossipRecord::State::kDead);
  }
  EXPECT_GT(m.at(1).counters().suspicions + m.at(2).counters().suspicions +
                m.at(3).counters().suspicions,
            0u);
}

TEST(GossipTest, TwoProcessesWithOnePrefixAreACollision) {
  GossipMesh m;
  m.Add(1, 1, 11, {});
  m.Add(2, 7, 22, {GossipMesh::Addr(1)});
  m.Add(3, 7, 33, {GossipMesh::Addr(1)});  // same prefix, another nonce
  m.RunFor(std::chrono::seconds(3));
  std::vector<GossipEvent::Kind> k1 = Kinds(m.at(1));
  EXPECT_GE(Count(k1, GossipEvent::Kind::kPrefixCollision), 1);
  EXPECT_GT(m.at(1).counters().collisions, 0u);
  // One of the two claimants sees the other's record as a collision too.
  EXPECT_GT(m.at(2).counters().collisions + m.at(3).counters().collisions, 0u);
  // The first record seen keeps the prefix: 1 knows exactly one of them.
  EXPECT_EQ(m.at(1).member_count(), 1u);
}

TEST(GossipTest, MalformedMessagesAreCountedAndDropped) {
  GossipConfig c;
  c.prefix.bytes = {0x01, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  c.self = GossipMesh::Addr(1);
  GossipDiscovery g(c, Timestamp::Zero());
  std::array<std::byte, 64> msg{};
  std::memcpy(msg.data(), "RTPS", 4);
  msg[4] = std::byte{2};
  msg[5] = std::byte{5};
  msg[6] = std::byte{kVendorRinglab.bytes[0]};
  msg[7] = std::byte{kVendorRinglab.bytes[1]};
  msg[20] = std::byte{kGossipSubmessageId};
  msg[21] = std::byte{1};
  msg[22] = std::byte{40};  // length
  msg[24] = std::byte{1};   // version
  msg[25] = std::byte{9};   // no such type
  ASSERT_TRUE(IsGossipMessage(msg));
  g.OnDatagram(msg, GossipMesh::Addr(2), Timestamp::Zero());
  msg[25] = std::byte{4};  // a sync with a zero-sized filter
  g.OnDatagram(msg, GossipMesh::Addr(2), Timestamp::Zero());
  msg[22] = std::byte{200};  // longer than the datagram
  g.OnDatagram(msg, GossipMesh::Addr(2), Timestamp::Zero());
  g.OnDatagram(std::span(msg).first(21), GossipMesh::Addr(2),
               Timestamp::Zero());
  EXPECT_EQ(g.counters().malformed, 4u);
  EXPECT_EQ(g.member_count(), 0u);
}

// Gossip participants find each other through gossip (their SPDP
// announcements only make contact) and a plain SPDP participant - what a
// Cyclone peer would be - through SPDP/SEDP; everyone matches everyone.
// Regression (found by gossip_fuzzer, fixed in eea2c30): a member we had
// declared dead (a tombstone) that comes back in a newer record as
// *suspect* counts as alive again, so that its second death does not take
// the alive count below zero (it wrapped to SIZE_MAX, and the piggy-back
// limit computed from it never returned).
TEST(GossipTest, TombstoneRevivedAsSuspectKeepsTheAliveCount) {
  auto make = [](uint8_t id, std::vector<Locator> seeds) {
    GossipConfig c;
    c.prefix.bytes = {0x01, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, id};
    c.self = Locator::UdpV4(0x0a000000u + id, 7410);
    c.seeds = std::move(seeds);
    c.nonce = 100 + id;
    c.random_seed = id;
    c.period_ns = 100'000'000;
    c.suspicion_periods = 3;
    auto g = std::make_unique<GossipDiscovery>(c, Timestamp::Zero());
    g->SetLocalRecord(GossipRecord{}, Timestamp::Zero());
    return g;
  };
  auto a = make(1, {});
  auto b = make(2, {Locator::UdpV4(0x0a000001u, 7410)});
  const Locator a_addr = Locator::UdpV4(0x0a000001u, 7410);
  const Locator b_addr = Locator::UdpV4(0x0a000002u, 7410);
  const GuidPrefix b_prefix{{0x01, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}};
  std::array<std::byte, 20> head{};  // B's prefix, then its nonce (102, LE)
  std::memcpy(head.data(), b_prefix.bytes.data(), 12);
  head[12] = std::byte{102};
  std::array<std::byte, 65536> buf{};
  std::vector<std::byte> from_b;  // B's last message that holds its record
  Timestamp now = Timestamp::Zero();
  // One step of 1 ms; B's traffic is delivered only while `b_up`.
  auto step = [&](bool b_up) {
    for (GossipDiscovery* g : {a.get(), b.get()}) {
      if (g == b.get() && !b_up) continue;
      if (g->NextDeadline() <= now) g->OnTimeout(now);
      while (auto t = g->PollTransmit(buf, now)) {
        std::span<const std::byte> msg(buf.data(), t->size_bytes);
        if (g == a.get()) {
          if (b_up) b->OnDatagram(msg, a_addr, now);
          continue;
        }
        // B's own record starts with its prefix and nonce (EncodeRecord).
        if (std::search(msg.begin(), msg.end(), head.begin(), head.end()) !=
            msg.end()) {
          from_b.assign(msg.begin(), msg.end());
        }
        a->OnDatagram(msg, b_addr, now);
      }
    }
    now += std::chrono::milliseconds(1);
  };
  for (int i = 0; i < 2000 && a->member_count() == 0; ++i) step(true);
  ASSERT_EQ(a->member_count(), 1u);
  for (int i = 0; i < 200; ++i) step(true);
  ASSERT_FALSE(from_b.empty());
  // B crashes: A suspects it, then keeps a tombstone.
  for (int i = 0; i < 3000 && a->member_count() == 1; ++i) step(false);
  ASSERT_EQ(a->member_count(), 0u);
  const GossipRecord* tomb = a->FindMember(b_prefix);
  ASSERT_NE(tomb, nullptr);
  ASSERT_EQ(tomb->state, GossipRecord::State::kDead);
  // B's record comes back, newer (incarnation + 1) and suspect: the record
  // layout is prefix(12) nonce(8) incarnation(4, LE) state(1).
  auto at = std::search(from_b.begin(), from_b.end(), head.begin(), head.end());
  ASSERT_NE(at, from_b.end());
  const size_t off = static_cast<size_t>(at - from_b.begin()) + 20;
  const uint32_t inc = tomb->incarnation + 1;
  for (int i = 0; i < 4; ++i) {
    from_b[off + i] = std::byte((inc >> (8 * i)) & 0xff);
  }
  from_b[off + 4] = std::byte{1};  // GossipRecord::State::kSuspect
  a->OnDatagram(from_b, b_addr, now);
  ASSERT_EQ(a->FindMember(b_prefix)->state, GossipRecord::State::kSuspect);
  EXPECT_EQ(a->member_count(), 1u);
  // The suspicion runs out: dead again, and the count is back at zero.
  for (int i = 0; i < 3000; ++i) {
    step(false);
    ASSERT_LE(a->member_count(), 1u) << "at step " << i;
  }
  EXPECT_EQ(a->FindMember(b_prefix)->state, GossipRecord::State::kDead);
  EXPECT_EQ(a->member_count(), 0u);
}

// A seed that never answers must not keep every pull to itself: the next
// seed in the list gets its turn (before the fix, contacts_.front() was
// the only target until it became a member, so 2 never met 3).
TEST(GossipTest, ASeedThatNeverAnswersDoesNotBlockTheNextOne) {
  GossipMesh m;
  m.Add(3, 3, 13, {});
  m.Add(2, 2, 12, {GossipMesh::Addr(9), GossipMesh::Addr(3)});  // 9: nobody
  m.RunFor(std::chrono::seconds(3));
  EXPECT_EQ(m.at(2).member_count(), 1u);
  EXPECT_EQ(m.at(3).member_count(), 1u);
}

TEST(GossipSimTest, GossipParticipantsAndAnSpdpPeerAllMatch) {
  SimHarness h;
  ParticipantConfig g;
  g.discovery = DiscoveryMode::kGossip;
  std::vector<Node*> nodes = {&h.Add(g), &h.Add(g), &h.Add()};
  std::vector<std::pair<EndpointHandle, EndpointHandle>> eps;
  for (Node* n : nodes) {
    eps.push_back(
        {*n->p->CreateWriter(Writer("Square", EndpointQos::WriterDefaults()),
                             h.now()),
         *n->p->CreateReader(Reader("Square", EndpointQos::ReaderDefaults()),
                             h.now())});
  }
  bool all = h.RunUntil(h.now() + std::chrono::seconds(10), [&] {
    for (size_t i = 0; i < 3; ++i) {
      Participant& p = *nodes[i]->p;
      if (p.remote_participant_count() != 2 ||
          p.MatchedCount(eps[i].first) != 2 ||
          p.MatchedCount(eps[i].second) != 2) {
        return false;
      }
    }
    return true;
  });
  ASSERT_TRUE(all);
  const RemoteParticipantInfo* via =
      nodes[0]->p->FindParticipant(nodes[1]->p->guid_prefix());
  ASSERT_NE(via, nullptr);
  EXPECT_TRUE(via->via_gossip);
  const RemoteParticipantInfo* spdp =
      nodes[0]->p->FindParticipant(nodes[2]->p->guid_prefix());
  ASSERT_NE(spdp, nullptr);
  EXPECT_FALSE(spdp->via_gossip);
  EXPECT_GT(nodes[0]->p->gossip_counters()->records_new, 0u);
  EXPECT_EQ(nodes[2]->p->gossip_counters(), nullptr);
  // Data flows over a gossip-made match.
  ASSERT_TRUE(
      nodes[0]
          ->p->Write(eps[0].first, Encode(1, 7), KeyOf(7), 1000, h.now())
          .ok());
  EXPECT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(1), [&] {
    return nodes[1]->p->Available(eps[1].second) > 0 &&
           nodes[2]->p->Available(eps[2].second) > 0;
  }));
}

TEST(GossipSimTest, HundredParticipantsAtFivePercentLoss) {
  DiscoveryRun run;
  run.participants = 100;
  run.mode = DiscoveryMode::kGossip;
  run.loss = 0.05;
  run.limit_ns = 60'000'000'000;
  DiscoveryResult r = RunDiscovery(run);
  EXPECT_TRUE(r.complete) << r.complete_count;
  EXPECT_EQ(r.prefix_collisions, 0u);
}

// Issue 11: the gossip mode at 1,000 participants, bounded in (virtual)
// time; and far fewer bytes than SPDP would need (measured by
// ringlab_rtps_discovery_experiment; here only gossip runs, for time).
TEST(GossipSimTest, ThousandParticipantsReachFullKnowledge) {
  DiscoveryRun run;
  // Under ASan the 1,000-participant run costs ~10 minutes of CPU on this
  // 2-core VM (25 s in release), too much for CI: the sanitizer build checks
  // memory safety at 300, the release build checks the 1,000.
#if defined(__SANITIZE_ADDRESS__)
  run.participants = 300;
#else
  run.participants = 1000;
#endif
  run.mode = DiscoveryMode::kGossip;
  run.limit_ns = 60'000'000'000;
  DiscoveryResult r = RunDiscovery(run);
  EXPECT_TRUE(r.complete) << r.complete_count;
  EXPECT_GT(r.full_ns_max, 0);
  EXPECT_LE(r.full_ns_max, run.limit_ns);
}

}  // namespace
}  // namespace ringlab::rtps
