// Test-only: the SimNetwork harness shared by the participant's sim tests
// (participant_*_sim_test.cc). Nodes are Participants on a SimNetwork with
// a virtual clock; RunUntil() advances the network and every participant's
// timers together, so each test sees exactly the ticks the cores ask for.
//
//   SimHarness h;
//   Node& a = h.Add();
//   Node& b = h.Add();
//   EndpointHandle w = *a.p->CreateWriter(Writer("T", wq), h.now());
//   EndpointHandle r = *b.p->CreateReader(Reader("T", rq), h.now());
//   ASSERT_TRUE(h.RunUntil(h.now() + std::chrono::seconds(2),
//                          [&] { return b.p->MatchedCount(r) == 1; }));
//
// Nodes never move (tests hold references). Not installed; no threads.
#ifndef RINGLAB_RTPS_SIM_HARNESS_TEST_H_
#define RINGLAB_RTPS_SIM_HARNESS_TEST_H_

#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "rtps/cdr.h"
#include "rtps/ddsperf_types.h"
#include "rtps/participant.h"
#include "rtps/topic.h"
#include "transport/sim_network.h"

namespace ringlab::rtps::simtest {

using transport::SimImpairment;
using transport::SimNetwork;

inline const Endpoint kGroup =
    Endpoint::Ipv4(ports::kDefaultMulticastGroup, 7400);

struct Node {
  Endpoint addr;
  std::unique_ptr<Participant> p;
  bool silent = false;  // neither sends nor receives (a crashed process)
};

class SimHarness {
 public:
  // Nodes never move: tests hold references to them.
  explicit SimHarness(uint64_t seed = 1, bool trace = false)
      : net_(MakeOptions(seed, trace)) {
    nodes_.reserve(64);
  }

  static SimNetwork::Options MakeOptions(uint64_t seed, bool trace) {
    SimNetwork::Options o;
    o.seed = seed;
    o.trace = trace;
    SimImpairment link;
    link.delay = std::chrono::microseconds(100);
    o.default_impairment = link;
    return o;
  }

  Node& Add(ParticipantConfig c = {}) {
    uint32_t i = static_cast<uint32_t>(nodes_.size());
    Node n;
    n.addr = Endpoint::Ipv4(0x0a000001 + i, 7410);
    EXPECT_TRUE(net_.AddNode(n.addr).ok());
    EXPECT_TRUE(net_.JoinGroup(n.addr, kGroup).ok());
    c.guid_prefix.bytes = {0x01,
                           0xff,
                           0,
                           0,
                           0,
                           0,
                           0,
                           0,
                           0,
                           0,
                           static_cast<uint8_t>(i >> 8),
                           static_cast<uint8_t>(i + 1)};
    c.metatraffic_unicast = {Locator::FromEndpoint(n.addr)};
    c.default_unicast = {Locator::FromEndpoint(n.addr)};
    c.spdp_destinations = {Locator::FromEndpoint(kGroup)};
    auto p = Participant::Create(c, net_.now());
    EXPECT_TRUE(p.ok()) << p.status();
    n.p = std::move(*p);
    nodes_.push_back(std::move(n));
    return nodes_.back();
  }

  SimNetwork& net() { return net_; }
  // Bounds each step of RunUntil, for tests whose done() acts on time.
  void set_max_step(Duration d) { max_step_ = d; }
  // Flushes a participant after each datagram it takes, as the driver
  // (DomainParticipant::OnDatagram) does; by default a node takes every
  // datagram due and flushes once, which coalesces its replies.
  void set_flush_after_each_datagram(bool on) { flush_each_ = on; }
  Timestamp now() const { return net_.now(); }
  std::vector<Node>& nodes() { return nodes_; }

  void Flush(Node& n) {
    if (n.silent) return;
    while (auto t = n.p->PollTransmit(buffer_, net_.now())) {
      for (const Locator& l : t->destinations) {
        EXPECT_TRUE(net_.SendDatagram(n.addr, l.ToEndpoint(),
                                      std::span(buffer_.data(), t->size_bytes))
                        .ok());
      }
    }
  }

  // Runs the network and every participant until `until`, or until
  // `done()` holds (checked after each step).
  template <typename Done>
  bool RunUntil(Timestamp until, Done done) {
    for (;;) {
      for (Node& n : nodes_) Flush(n);
      if (done()) return true;
      Timestamp next = net_.NextDeadline();
      for (Node& n : nodes_) {
        if (!n.silent) next = std::min(next, n.p->NextDeadline());
      }
      next = std::min(next, net_.now() + max_step_);
      if (next > until) {
        EXPECT_TRUE(net_.AdvanceTo(until).ok());
        Deliver();
        return done();
      }
      EXPECT_TRUE(net_.AdvanceTo(std::max(next, net_.now())).ok());
      Deliver();
      for (Node& n : nodes_) {
        if (!n.silent && n.p->NextDeadline() <= net_.now()) {
          n.p->OnTimeout(net_.now());
        }
      }
    }
  }
  void RunFor(Duration d) {
    RunUntil(net_.now() + d, [] { return false; });
  }

 private:
  void Deliver() {
    for (Node& n : nodes_) {
      while (auto d = net_.PollDatagram(n.addr)) {
        if (n.silent) continue;
        n.p->OnDatagram(d->bytes, Locator::FromEndpoint(d->from), net_.now());
        if (flush_each_) Flush(n);
      }
    }
  }

  SimNetwork net_;
  Duration max_step_ = std::chrono::hours(24);
  bool flush_each_ = false;
  std::vector<Node> nodes_;
  std::array<std::byte, 65536> buffer_{};
};

inline std::vector<std::byte> Encode(uint32_t seq, uint32_t key,
                                     size_t baggage = 8) {
  KeyedSeq s{seq, key, std::vector<uint8_t>(baggage, 0xab)};
  std::vector<std::byte> out;
  EXPECT_TRUE(SerializeSample(s, Encoding::kCdrLe, &out));
  return out;
}

inline KeyHash KeyOf(uint32_t key) {
  KeyedSeq s{0, key, {}};
  return ComputeKeyHash(s);
}

inline WriterConfig Writer(const std::string& topic, EndpointQos q) {
  WriterConfig c;
  c.topic_name = topic;
  c.type_name = "KeyedSeq";
  c.qos = q;
  c.keyed = true;
  return c;
}

inline ReaderConfig Reader(const std::string& topic, EndpointQos q) {
  ReaderConfig c;
  c.topic_name = topic;
  c.type_name = "KeyedSeq";
  c.qos = q;
  c.keyed = true;
  c.key_hash_from_payload = MakeKeyHashFunction<KeyedSeq>();
  return c;
}

inline std::vector<uint32_t> TakeSeqs(Participant& p, EndpointHandle r) {
  std::vector<uint32_t> out;
  while (const ReceivedSample* s = p.Take(r)) {
    KeyedSeq v;
    EXPECT_TRUE(DeserializeSample(s->payload, &v));
    out.push_back(v.seq);
  }
  return out;
}

}  // namespace ringlab::rtps::simtest

#endif  // RINGLAB_RTPS_SIM_HARNESS_TEST_H_
