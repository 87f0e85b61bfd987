#include "rtps/discovery_sim.h"

#include <algorithm>
#include <array>
#include <memory>
#include <queue>
#include <utility>

#include "transport/sim_network.h"

namespace ringlab::rtps {
namespace {

using transport::SimNetwork;

constexpr uint32_t kBaseIp = 0x0a000001;  // node i is 10.0.0.(1 + i)
constexpr uint16_t kPort = 7410;
const Endpoint kGroup = Endpoint::Ipv4(ports::kDefaultMulticastGroup, 7400);

struct SimNode {
  Endpoint addr;
  std::unique_ptr<Participant> p;
  EndpointHandle writer = 0, reader = 0;
  Timestamp deadline = Timestamp::Never();
  uint32_t pending = 0;  // datagrams sent to it and not yet polled
  bool pending_listed = false;
  int64_t full_ns = -1;
};

class Runner {
 public:
  explicit Runner(const DiscoveryRun& run) : run_(run), net_(Options(run)) {
    rng_state_ = run.seed * 0x9e3779b97f4a7c15ull + 1;
  }

  DiscoveryResult Run() {
    const int n = run_.participants;
    nodes_.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) Create(i);
    for (int i = 0; i < n; ++i) Process(static_cast<size_t>(i));
    const Timestamp limit = Timestamp::Zero() + Duration(run_.limit_ns);
    while (complete_ < n) {
      Timestamp next = net_.NextDeadline();
      while (!timers_.empty() &&
             timers_.top().first != nodes_[timers_.top().second].deadline) {
        timers_.pop();  // stale entry
      }
      if (!timers_.empty()) next = std::min(next, timers_.top().first);
      if (next > limit || next.is_never()) break;
      (void)net_.AdvanceTo(std::max(next, net_.now()));
      // Nodes with datagrams, then nodes whose timer is due.
      std::vector<size_t> touched;
      std::vector<size_t> still;
      for (size_t i : inbox_list_) {
        SimNode& s = nodes_[i];
        bool any = false;
        while (auto d = net_.PollDatagram(s.addr)) {
          --s.pending;
          ++received_datagrams_;
          received_bytes_ += d->bytes.size();
          s.p->OnDatagram(d->bytes, Locator::FromEndpoint(d->from), net_.now());
          any = true;
        }
        if (any) touched.push_back(i);
        if (s.pending > 0) {
          still.push_back(i);
        } else {
          s.pending_listed = false;
        }
      }
      inbox_list_ = std::move(still);
      while (!timers_.empty() && timers_.top().first <= net_.now()) {
        auto [t, i] = timers_.top();
        timers_.pop();
        if (t != nodes_[i].deadline) continue;
        nodes_[i].deadline = Timestamp::Never();
        nodes_[i].p->OnTimeout(net_.now());
        touched.push_back(i);
      }
      std::sort(touched.begin(), touched.end());
      touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
      for (size_t i : touched) Process(i);
    }
    return Result();
  }

 private:
  static SimNetwork::Options Options(const DiscoveryRun& run) {
    SimNetwork::Options o;
    o.seed = run.seed;
    transport::SimImpairment link;
    link.delay = Duration(run.link_delay_ns);
    o.default_impairment = link;
    return o;
  }

  void Create(int i) {
    SimNode& s = nodes_[static_cast<size_t>(i)];
    s.addr = Endpoint::Ipv4(kBaseIp + static_cast<uint32_t>(i), kPort);
    (void)net_.AddNode(s.addr);
    ParticipantConfig c;
    c.guid_prefix.bytes = {0x01,
                           0xff,
                           0x5e,
                           0,
                           0,
                           0,
                           0,
                           0,
                           static_cast<uint8_t>(run_.seed),
                           static_cast<uint8_t>(i >> 16),
                           static_cast<uint8_t>(i >> 8),
                           static_cast<uint8_t>(i)};
    c.metatraffic_unicast = {Locator::FromEndpoint(s.addr)};
    c.default_unicast = {Locator::FromEndpoint(s.addr)};
    c.spdp_destinations = {Locator::FromEndpoint(kGroup)};
    c.max_remote_participants = static_cast<size_t>(run_.participants) + 16;
    c.max_remote_endpoints = 2 * c.max_remote_participants + 64;
    c.discovery = run_.mode;
    if (run_.mode == DiscoveryMode::kGossip) {
      c.gossip_period_ns = run_.gossip_period_ns;
      c.spdp_initial_delay_ns = run_.gossip_spdp_delay_ns;
      if (i != 0) {
        c.gossip_seeds = {Locator::FromEndpoint(nodes_[0].addr)};
      }
    }
    auto p = Participant::Create(c, net_.now());
    if (!p.ok()) return;
    s.p = std::move(*p);
    // Best effort: no user-data heartbeats or ACKNACKs, so every datagram
    // counted is discovery (SPDP/SEDP, or gossip).
    EndpointQos wq = EndpointQos::WriterDefaults();
    wq.reliability = ReliabilityKind::kBestEffort;
    EndpointQos rq = EndpointQos::ReaderDefaults();
    rq.reliability = ReliabilityKind::kBestEffort;
    WriterConfig w;
    w.topic_name = "Square";
    w.type_name = "ShapeType";
    w.qos = wq;
    ReaderConfig r;
    r.topic_name = "Square";
    r.type_name = "ShapeType";
    r.qos = rq;
    s.writer = *s.p->CreateWriter(std::move(w), net_.now());
    s.reader = *s.p->CreateReader(std::move(r), net_.now());
  }

  bool Drop() {
    if (run_.loss <= 0) return false;
    uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53 < run_.loss;
  }

  // Loss is applied here (not by SimNetwork) so that every datagram handed
  // to the network arrives, and `pending` tells which inboxes to poll.
  void SendTo(size_t from, size_t to, std::span<const std::byte> bytes) {
    if (Drop()) return;
    (void)net_.SendDatagram(nodes_[from].addr, nodes_[to].addr, bytes);
    SimNode& d = nodes_[to];
    ++d.pending;
    if (!d.pending_listed) {
      d.pending_listed = true;
      inbox_list_.push_back(to);
    }
  }

  void Process(size_t i) {
    SimNode& s = nodes_[i];
    while (auto t = s.p->PollTransmit(buffer_, net_.now())) {
      std::span<const std::byte> bytes(buffer_.data(), t->size_bytes);
      for (const Locator& l : t->destinations) {
        // Sent: one per destination (a multicast is one datagram on the
        // wire); received: each copy.
        ++sent_datagrams_;
        sent_bytes_ += t->size_bytes;
        Endpoint e = l.ToEndpoint();
        if (e == kGroup) {
          for (size_t k = 0; k < nodes_.size(); ++k) {
            if (k != i) SendTo(i, k, bytes);
          }
          continue;
        }
        uint32_t ip = e.ipv4_host_order();
        if (ip >= kBaseIp && ip - kBaseIp < nodes_.size()) {
          SendTo(i, ip - kBaseIp, bytes);
        }
      }
    }
    const size_t others = nodes_.size() - 1;
    if (s.full_ns < 0 && s.p->remote_participant_count() == others &&
        s.p->MatchedCount(s.writer) == others &&
        s.p->MatchedCount(s.reader) == others) {
      s.full_ns = (net_.now() - Timestamp::Zero()).count();
      ++complete_;
    }
    while (auto e = s.p->PollEvent()) {
      collisions_ += e->kind == Event::Kind::kPrefixCollision;
    }
    Timestamp d = s.p->NextDeadline();
    if (d != s.deadline) {
      s.deadline = d;
      if (!d.is_never()) timers_.push({d, i});
    }
  }

  DiscoveryResult Result() const {
    DiscoveryResult r;
    const double n = static_cast<double>(nodes_.size());
    r.complete_count = complete_;
    r.complete = complete_ == run_.participants;
    std::vector<int64_t> full;
    for (const SimNode& s : nodes_) {
      if (s.full_ns >= 0) full.push_back(s.full_ns);
    }
    std::sort(full.begin(), full.end());
    if (!full.empty()) {
      r.full_ns_p50 = full[(full.size() - 1) / 2];
      r.full_ns_max = full.back();
    }
    r.datagrams_sent_per_participant = static_cast<double>(sent_datagrams_) / n;
    r.bytes_sent_per_participant = static_cast<double>(sent_bytes_) / n;
    r.datagrams_received_per_participant =
        static_cast<double>(received_datagrams_) / n;
    r.bytes_received_per_participant = static_cast<double>(received_bytes_) / n;
    r.prefix_collisions = collisions_;
    return r;
  }

  DiscoveryRun run_;
  SimNetwork net_;
  std::vector<SimNode> nodes_;
  std::vector<size_t> inbox_list_;
  using TimerEntry = std::pair<Timestamp, size_t>;
  std::priority_queue<TimerEntry, std::vector<TimerEntry>,
                      std::greater<TimerEntry>>
      timers_;
  uint64_t rng_state_;
  int complete_ = 0;
  uint64_t sent_datagrams_ = 0, sent_bytes_ = 0;
  uint64_t received_datagrams_ = 0, received_bytes_ = 0;
  uint64_t collisions_ = 0;
  std::array<std::byte, 65536> buffer_{};
};

}  // namespace

DiscoveryResult RunDiscovery(const DiscoveryRun& run) {
  return Runner(run).Run();
}

}  // namespace ringlab::rtps
