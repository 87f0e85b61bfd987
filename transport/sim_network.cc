#include "transport/sim_network.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ringlab::transport {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t Fnv1a(uint64_t h, std::span<const std::byte> bytes) {
  for (std::byte b : bytes) {
    h ^= static_cast<uint8_t>(b);
    h *= kFnvPrime;
  }
  return h;
}

uint64_t FnvU64(uint64_t h, uint64_t v) {
  // Byte by byte in a fixed order, so the digest does not depend on
  // endianness.
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= kFnvPrime;
  }
  return h;
}

uint64_t HashBytes(std::span<const std::byte> bytes) {
  return bytes.empty() ? 0 : Fnv1a(kFnvOffset, bytes);
}

uint64_t LinkKey(uint32_t from, uint32_t to) {
  return (static_cast<uint64_t>(from) << 32) | to;
}

// How long `bytes` occupy a link of `rate` bytes/s, rounded up so a stream of
// tiny packets cannot exceed the rate through truncation.
Duration SerializationTime(size_t bytes, uint64_t rate_bytes_per_sec) {
  if (rate_bytes_per_sec == 0 || bytes == 0) return Duration(0);
  const unsigned __int128 ns =
      (static_cast<unsigned __int128>(bytes) * 1'000'000'000u +
       rate_bytes_per_sec - 1) /
      rate_bytes_per_sec;
  const unsigned __int128 cap = std::numeric_limits<int64_t>::max() / 2;
  return Duration(static_cast<int64_t>(ns < cap ? ns : cap));
}

absl::Status CheckProbability(double p, const char* field) {
  // Written so that NaN fails too.
  if (!(p >= 0.0 && p <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SimImpairment.", field, " must be a probability in [0, 1], got ", p));
  }
  return absl::OkStatus();
}

absl::Status CheckDuration(Duration d, const char* field) {
  if (d.count() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SimImpairment.", field, " must be >= 0 ns, got ", d.count()));
  }
  return absl::OkStatus();
}

const char* KindName(SimTraceEvent::Kind kind) {
  using K = SimTraceEvent::Kind;
  switch (kind) {
    case K::kSend:
      return "send";
    case K::kDropLoss:
      return "drop-loss";
    case K::kDropBurst:
      return "drop-burst";
    case K::kDropQueue:
      return "drop-queue";
    case K::kDuplicate:
      return "duplicate";
    case K::kCorrupt:
      return "corrupt";
    case K::kReorder:
      return "reorder";
    case K::kDeliver:
      return "deliver";
    case K::kUnroutable:
      return "unroutable";
    case K::kStreamOpen:
      return "stream-open";
    case K::kStreamRefused:
      return "stream-refused";
    case K::kStreamData:
      return "stream-data";
    case K::kStreamFin:
      return "stream-fin";
    case K::kStreamReset:
      return "stream-reset";
  }
  return "?";
}

constexpr uint32_t kNoNode = SimTraceEvent::kNoNode;

// Stream ids: (connection index * 2 + side) + 1, so 0 is never valid.
SimStreamId MakeStreamId(uint64_t connection, int side) {
  return connection * 2 + static_cast<uint64_t>(side) + 1;
}

}  // namespace

// ---- SimRandom
// ---------------------------------------------------------------

SimRandom::SimRandom(uint64_t seed) {
  uint64_t sm = seed;
  for (uint64_t& word : s_) word = SplitMix64(sm);
}

uint64_t SimRandom::Next() {
  // xoshiro256**: small, fast, and fully specified, so every platform draws
  // the same sequence (std:: distributions are implementation-defined).
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

double SimRandom::NextDouble() {
  return static_cast<double>(Next() >> 11) * 0x1.0p-53;
}

uint64_t SimRandom::Uniform(uint64_t bound_inclusive) {
  if (bound_inclusive == UINT64_MAX) return Next();
  const uint64_t range = bound_inclusive + 1;
  // Lemire's multiply-shift with rejection: unbiased without a division on
  // the common path.
  unsigned __int128 m = static_cast<unsigned __int128>(Next()) * range;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < range) {
    const uint64_t threshold = (0 - range) % range;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(Next()) * range;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

bool SimRandom::Bernoulli(double p) {
  // No draw for the degenerate cases, so a feature left at 0 does not shift
  // the random stream of the features that are on.
  if (p <= 0.0) return false;
  if (p >= 1.0) return true;
  return NextDouble() < p;
}

// ---- SimImpairment / SimTraceEvent ---------------------------------------

absl::Status SimImpairment::Validate() const {
  struct P {
    double value;
    const char* name;
  };
  for (const P& p : {P{loss_probability, "loss_probability"},
                     P{ge_good_to_bad, "ge_good_to_bad"},
                     P{ge_bad_to_good, "ge_bad_to_good"},
                     P{ge_loss_in_good, "ge_loss_in_good"},
                     P{ge_loss_in_bad, "ge_loss_in_bad"},
                     P{reorder_probability, "reorder_probability"},
                     P{duplicate_probability, "duplicate_probability"},
                     P{corrupt_probability, "corrupt_probability"}}) {
    if (absl::Status s = CheckProbability(p.value, p.name); !s.ok()) return s;
  }
  if (absl::Status s = CheckDuration(delay, "delay"); !s.ok()) return s;
  if (absl::Status s = CheckDuration(jitter, "jitter"); !s.ok()) return s;
  if (absl::Status s = CheckDuration(reorder_delay, "reorder_delay"); !s.ok()) {
    return s;
  }
  if (reorder_probability > 0.0 && reorder_delay.count() == 0) {
    return absl::InvalidArgumentError(
        "SimImpairment.reorder_probability > 0 needs reorder_delay > 0 (a "
        "packet held back by 0 ns overtakes nothing)");
  }
  return absl::OkStatus();
}

std::string SimTraceEvent::ToString() const {
  return absl::StrFormat("t=%dns %s %u->%u size=%u hash=%016x", time_ns,
                         KindName(kind), from, to, size_bytes, bytes_hash);
}

// ---- SimNetwork: setup ------------------------------------------------------

SimNetwork::SimNetwork(Options options) : options_(std::move(options)) {
  options_status_ = options_.default_impairment.Validate();
  if (options_status_.ok() && options_.stream_segment_bytes == 0) {
    options_status_ = absl::InvalidArgumentError(
        "SimNetwork::Options.stream_segment_bytes must be > 0");
  }
  if (!options_status_.ok()) {
    // Keep the object usable (nothing is sent) but with a sane default, so a
    // caller that ignores status() still cannot trip over bad values.
    options_.default_impairment = SimImpairment();
    options_.stream_segment_bytes = 1460;
  }
}

std::optional<uint32_t> SimNetwork::FindNode(const Endpoint& e) const {
  auto it = node_index_.find(e);
  if (it == node_index_.end()) return std::nullopt;
  return it->second;
}

absl::Status SimNetwork::AddNode(const Endpoint& node) {
  if (!options_status_.ok()) return options_status_;
  if (!node.valid()) {
    return absl::InvalidArgumentError("SimNetwork::AddNode: invalid endpoint");
  }
  if (node.is_multicast()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SimNetwork::AddNode: ", node.ToString(),
        " is a multicast address; use JoinGroup to receive from a group"));
  }
  if (node_index_.contains(node)) {
    return absl::AlreadyExistsError(
        absl::StrCat("SimNetwork::AddNode: ", node.ToString(), " exists"));
  }
  node_index_.emplace(node, static_cast<uint32_t>(nodes_.size()));
  nodes_.push_back(Node{node, {}, {}, false});
  return absl::OkStatus();
}

bool SimNetwork::HasNode(const Endpoint& node) const {
  return node_index_.contains(node);
}

Endpoint SimNetwork::NodeEndpoint(uint32_t index) const {
  return index < nodes_.size() ? nodes_[index].endpoint : Endpoint();
}

absl::Status SimNetwork::JoinGroup(const Endpoint& node,
                                   const Endpoint& group) {
  if (!options_status_.ok()) return options_status_;
  const std::optional<uint32_t> idx = FindNode(node);
  if (!idx) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::JoinGroup: unknown node ", node.ToString()));
  }
  if (!group.is_multicast()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SimNetwork::JoinGroup: ", group.ToString(), " is not multicast"));
  }
  std::vector<uint32_t>& members = groups_[group];
  if (std::find(members.begin(), members.end(), *idx) == members.end()) {
    members.push_back(*idx);
  }
  return absl::OkStatus();
}

absl::Status SimNetwork::LeaveGroup(const Endpoint& node,
                                    const Endpoint& group) {
  const std::optional<uint32_t> idx = FindNode(node);
  auto it = groups_.find(group);
  if (!idx || it == groups_.end()) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::LeaveGroup: ", node.ToString(), " is not in ",
                     group.ToString()));
  }
  auto pos = std::find(it->second.begin(), it->second.end(), *idx);
  if (pos == it->second.end()) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::LeaveGroup: ", node.ToString(), " is not in ",
                     group.ToString()));
  }
  it->second.erase(pos);
  return absl::OkStatus();
}

absl::Status SimNetwork::SetDefaultImpairment(const SimImpairment& impairment) {
  if (!options_status_.ok()) return options_status_;
  if (absl::Status s = impairment.Validate(); !s.ok()) return s;
  options_.default_impairment = impairment;
  return absl::OkStatus();
}

SimNetwork::Link& SimNetwork::GetLink(uint32_t from, uint32_t to) {
  const uint64_t key = LinkKey(from, to);
  auto it = links_.find(key);
  if (it != links_.end()) return it->second;
  // The link's stream depends only on the seed and the two node indices, so
  // it is the same whichever link happens to be used first.
  uint64_t sm = options_.seed ^ (key * 0xd6e8feb86659fd93ULL);
  const uint64_t link_seed = SplitMix64(sm) ^ SplitMix64(sm);
  return links_.try_emplace(key, link_seed).first->second;
}

absl::Status SimNetwork::SetLinkImpairment(const Endpoint& from,
                                           const Endpoint& to,
                                           const SimImpairment& impairment) {
  if (!options_status_.ok()) return options_status_;
  const std::optional<uint32_t> f = FindNode(from);
  const std::optional<uint32_t> t = FindNode(to);
  if (!f || !t) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::SetLinkImpairment: unknown node ",
                     (!f ? from : to).ToString(),
                     " (for a multicast group, set the link to each member)"));
  }
  if (absl::Status s = impairment.Validate(); !s.ok()) return s;
  Link& link = GetLink(*f, *t);
  link.impairment = impairment;
  link.overridden = true;
  link.ge_bad = false;
  return absl::OkStatus();
}

absl::Status SimNetwork::ClearLinkImpairment(const Endpoint& from,
                                             const Endpoint& to) {
  const std::optional<uint32_t> f = FindNode(from);
  const std::optional<uint32_t> t = FindNode(to);
  if (!f || !t) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::ClearLinkImpairment: unknown node ",
                     (!f ? from : to).ToString()));
  }
  Link& link = GetLink(*f, *t);
  link.overridden = false;
  link.ge_bad = false;
  return absl::OkStatus();
}

SimImpairment SimNetwork::LinkImpairment(const Endpoint& from,
                                         const Endpoint& to) const {
  const std::optional<uint32_t> f = FindNode(from);
  const std::optional<uint32_t> t = FindNode(to);
  if (f && t) {
    auto it = links_.find(LinkKey(*f, *t));
    if (it != links_.end()) return Effective(it->second);
  }
  return options_.default_impairment;
}

// ---- Clock and events
// ---------------------------------------------------------

bool SimNetwork::EventLater(const Event& a, const Event& b) {
  if (a.at != b.at) return a.at > b.at;
  return a.sequence > b.sequence;
}

void SimNetwork::Schedule(Event event) {
  event.sequence = next_sequence_++;
  events_.push_back(std::move(event));
  std::push_heap(events_.begin(), events_.end(), EventLater);
}

Timestamp SimNetwork::NextDeadline() const {
  return events_.empty() ? Timestamp::Never() : events_.front().at;
}

size_t SimNetwork::ProcessDue(Timestamp t, size_t max_events) {
  size_t processed = 0;
  while (!events_.empty() && events_.front().at <= t &&
         processed < max_events) {
    std::pop_heap(events_.begin(), events_.end(), EventLater);
    Event event = std::move(events_.back());
    events_.pop_back();
    // Handlers schedule follow-ups (SYN-ACK, flushed writes) relative to the
    // event's own time, not to the target of the advance.
    now_ = event.at;
    Process(event);
    ++processed;
  }
  return processed;
}

absl::Status SimNetwork::AdvanceTo(Timestamp t) {
  if (t.is_never()) {
    return absl::InvalidArgumentError(
        "SimNetwork::AdvanceTo: cannot advance to Timestamp::Never()");
  }
  if (t < now_) {
    return absl::InvalidArgumentError(
        absl::StrCat("SimNetwork::AdvanceTo: time runs forward only (now ",
                     now_.nanos(), " ns, asked for ", t.nanos(), " ns)"));
  }
  ProcessDue(t, SIZE_MAX);
  now_ = t;
  return absl::OkStatus();
}

bool SimNetwork::Step() {
  const Timestamp next = NextDeadline();
  if (next.is_never()) return false;
  return AdvanceTo(next).ok();
}

size_t SimNetwork::RunUntilIdle(size_t max_events) {
  size_t processed = 0;
  while (processed < max_events && !events_.empty()) {
    const Timestamp next = NextDeadline();
    if (next.is_never()) break;  // saturated times never come due
    processed += ProcessDue(next, max_events - processed);
  }
  return processed;
}

void SimNetwork::Record(SimTraceEvent::Kind kind, uint32_t from, uint32_t to,
                        std::span<const std::byte> bytes) {
  if (!options_.trace) return;
  trace_.push_back(SimTraceEvent{now_.nanos(), kind, from, to,
                                 static_cast<uint32_t>(bytes.size()),
                                 HashBytes(bytes)});
}

uint64_t SimNetwork::TraceDigest() const {
  uint64_t h = kFnvOffset;
  for (const SimTraceEvent& e : trace_) {
    h = FnvU64(h, static_cast<uint64_t>(e.time_ns));
    h = FnvU64(h, static_cast<uint64_t>(e.kind));
    h = FnvU64(h, e.from);
    h = FnvU64(h, e.to);
    h = FnvU64(h, e.size_bytes);
    h = FnvU64(h, e.bytes_hash);
  }
  return h;
}

// ---- Datagrams -------------------------------------------------------------

absl::Status SimNetwork::SendDatagram(const Endpoint& from, const Endpoint& to,
                                      std::span<const std::byte> bytes) {
  const std::optional<uint32_t> f = FindNode(from);
  if (!f) {
    return absl::NotFoundError(absl::StrCat(
        "SimNetwork::SendDatagram: unknown sender ", from.ToString()));
  }
  if (!to.valid()) {
    return absl::InvalidArgumentError(
        "SimNetwork::SendDatagram: invalid destination endpoint");
  }
  if (to.is_multicast()) {
    ++counters_.multicast_sends;
    auto it = groups_.find(to);
    if (it == groups_.end()) return absl::OkStatus();
    // Copy the member list: nothing below changes it, but a copy keeps the
    // fan-out obviously independent of container internals.
    const std::vector<uint32_t> members = it->second;
    for (uint32_t member : members) {
      if (member == *f && !options_.multicast_loopback) continue;
      SendCopy(*f, member, to, bytes);
    }
    return absl::OkStatus();
  }
  const std::optional<uint32_t> t = FindNode(to);
  if (!t) {
    ++counters_.dropped_unroutable;
    Record(SimTraceEvent::Kind::kUnroutable, *f, kNoNode, bytes);
    return absl::OkStatus();
  }
  SendCopy(*f, *t, to, bytes);
  return absl::OkStatus();
}

void SimNetwork::SendCopy(uint32_t from, uint32_t to,
                          const Endpoint& destination,
                          std::span<const std::byte> bytes) {
  using K = SimTraceEvent::Kind;
  Link& link = GetLink(from, to);
  const SimImpairment& imp = Effective(link);
  SimRandom& rng = link.random;
  ++counters_.datagrams_sent;
  counters_.bytes_sent += bytes.size();
  Record(K::kSend, from, to, bytes);

  // Loss is decided before queueing: a packet lost "on the wire" never holds
  // a queue slot, which keeps the queue-limit counts easy to reason about.
  if (imp.gilbert_elliott) {
    // Step the Markov chain once per packet, then draw with the state's rate.
    if (link.ge_bad) {
      if (rng.Bernoulli(imp.ge_bad_to_good)) link.ge_bad = false;
    } else {
      if (rng.Bernoulli(imp.ge_good_to_bad)) link.ge_bad = true;
    }
    if (rng.Bernoulli(link.ge_bad ? imp.ge_loss_in_bad : imp.ge_loss_in_good)) {
      ++counters_.dropped_burst;
      Record(K::kDropBurst, from, to, bytes);
      return;
    }
  }
  if (rng.Bernoulli(imp.loss_probability)) {
    ++counters_.dropped_loss;
    Record(K::kDropLoss, from, to, bytes);
    return;
  }

  int copies = 1;
  if (rng.Bernoulli(imp.duplicate_probability)) {
    copies = 2;
    ++counters_.datagrams_duplicated;
    Record(K::kDuplicate, from, to, bytes);
  }
  for (int c = 0; c < copies; ++c) {
    if (imp.queue_limit_packets != 0 &&
        link.in_flight >= imp.queue_limit_packets) {
      ++counters_.dropped_queue;
      Record(K::kDropQueue, from, to, bytes);
      continue;
    }
    // The simulator owns a copy from here on (documented in the header): the
    // caller's buffer may be reused as soon as SendDatagram returns.
    std::vector<std::byte> payload(bytes.begin(), bytes.end());
    if (!payload.empty() && rng.Bernoulli(imp.corrupt_probability)) {
      const uint64_t bit = rng.Uniform(payload.size() * 8 - 1);
      payload[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
      ++counters_.datagrams_corrupted;
      Record(K::kCorrupt, from, to, payload);
    }
    Timestamp depart = now_;
    if (imp.rate_bytes_per_sec != 0) {
      depart = std::max(now_, link.datagram_busy_until) +
               SerializationTime(payload.size(), imp.rate_bytes_per_sec);
      link.datagram_busy_until = depart;
    }
    Timestamp arrive = depart + imp.delay;
    if (imp.jitter.count() > 0) {
      arrive += Duration(static_cast<int64_t>(
          rng.Uniform(static_cast<uint64_t>(imp.jitter.count()))));
    }
    if (rng.Bernoulli(imp.reorder_probability)) {
      arrive += imp.reorder_delay;
      ++counters_.datagrams_reordered;
      Record(K::kReorder, from, to, payload);
    }
    ++link.in_flight;
    ++counters_.datagrams_in_flight;
    Event event;
    event.at = arrive;
    event.type = EventType::kDatagram;
    event.from = from;
    event.to = to;
    event.connection = 0;
    event.generation = 0;
    event.to_side = 0;
    event.destination = destination;
    event.sent_at = now_;
    event.bytes = std::move(payload);
    Schedule(std::move(event));
  }
}

std::optional<SimDatagram> SimNetwork::PollDatagram(const Endpoint& node) {
  const std::optional<uint32_t> idx = FindNode(node);
  if (!idx) return std::nullopt;
  std::deque<SimDatagram>& inbox = nodes_[*idx].inbox;
  if (inbox.empty()) return std::nullopt;
  SimDatagram d = std::move(inbox.front());
  inbox.pop_front();
  return d;
}

size_t SimNetwork::PendingDatagrams(const Endpoint& node) const {
  const std::optional<uint32_t> idx = FindNode(node);
  return idx ? nodes_[*idx].inbox.size() : 0;
}

// ---- Streams
// ------------------------------------------------------------------

absl::Status SimNetwork::Listen(const Endpoint& server) {
  if (!options_status_.ok()) return options_status_;
  const std::optional<uint32_t> idx = FindNode(server);
  if (!idx) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::Listen: unknown node ", server.ToString()));
  }
  if (nodes_[*idx].listening) {
    return absl::AlreadyExistsError(absl::StrCat(
        "SimNetwork::Listen: ", server.ToString(), " already listens"));
  }
  nodes_[*idx].listening = true;
  return absl::OkStatus();
}

absl::Status SimNetwork::StopListening(const Endpoint& server) {
  const std::optional<uint32_t> idx = FindNode(server);
  if (!idx || !nodes_[*idx].listening) {
    return absl::NotFoundError(absl::StrCat(
        "SimNetwork::StopListening: ", server.ToString(), " is not listening"));
  }
  nodes_[*idx].listening = false;
  return absl::OkStatus();
}

absl::StatusOr<SimStreamId> SimNetwork::Connect(const Endpoint& client,
                                                const Endpoint& server) {
  if (!options_status_.ok()) return options_status_;
  const std::optional<uint32_t> c = FindNode(client);
  if (!c) {
    return absl::NotFoundError(absl::StrCat(
        "SimNetwork::Connect: unknown client node ", client.ToString()));
  }
  if (!server.valid() || server.is_multicast()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SimNetwork::Connect: bad server address ", server.ToString()));
  }
  const std::optional<uint32_t> s = FindNode(server);
  const uint64_t conn = connections_.size();
  connections_.emplace_back();
  Connection& connection = connections_.back();
  connection.end[0].node = *c;
  connection.end[0].open = true;
  connection.end[1].node = s.value_or(kNoNode);
  if (!s) {
    // No such host: refuse after a round trip on the default delay, the way
    // a real connect fails asynchronously.
    connection.refused = true;
    Event event{};
    event.at = now_ + options_.default_impairment.delay * 2;
    event.type = EventType::kStreamRefused;
    event.from = kNoNode;
    event.to = *c;
    event.connection = conn;
    Schedule(std::move(event));
    return MakeStreamId(conn, 0);
  }
  ScheduleStream(conn, 0, EventType::kStreamSyn, {});
  return MakeStreamId(conn, 0);
}

SimNetwork::Connection* SimNetwork::FindStream(SimStreamId id, int* side) {
  if (id == 0) return nullptr;
  const uint64_t conn = (id - 1) / 2;
  if (conn >= connections_.size()) return nullptr;
  *side = static_cast<int>((id - 1) % 2);
  Connection& c = connections_[conn];
  return c.end[*side].open ? &c : nullptr;
}

const SimNetwork::Connection* SimNetwork::FindStream(SimStreamId id,
                                                     int* side) const {
  return const_cast<SimNetwork*>(this)->FindStream(id, side);
}

void SimNetwork::ScheduleStream(uint64_t connection, int from_side,
                                EventType type,
                                std::span<const std::byte> bytes) {
  Connection& c = connections_[connection];
  const uint32_t from = c.end[from_side].node;
  const uint32_t to = c.end[1 - from_side].node;
  Link& link = GetLink(from, to);
  const SimImpairment& imp = Effective(link);
  Event event{};
  event.type = type;
  event.from = from;
  event.to = to;
  event.connection = connection;
  event.generation = c.generation;
  event.to_side = static_cast<uint8_t>(1 - from_side);
  event.sent_at = now_;

  // Arrival times on one direction never go backwards, even if the link's
  // delay is lowered mid-stream: TCP delivers in order.
  auto arrival_after = [&](Timestamp depart) {
    Timestamp at = std::max(depart + imp.delay, link.stream_last_arrival);
    link.stream_last_arrival = at;
    return at;
  };

  if (type != EventType::kStreamData) {
    // Control segments carry no payload but queue behind earlier data.
    event.at = arrival_after(std::max(now_, link.stream_busy_until));
    Schedule(std::move(event));
    return;
  }
  if (imp.rate_bytes_per_sec == 0) {
    event.at = arrival_after(std::max(now_, link.stream_busy_until));
    event.bytes.assign(bytes.begin(), bytes.end());
    Schedule(std::move(event));
    return;
  }
  // With a rate limit, cut the write into segments so the reader sees bytes
  // arrive progressively, as it would from a bottleneck link.
  size_t offset = 0;
  while (offset < bytes.size()) {
    const size_t n =
        std::min<size_t>(options_.stream_segment_bytes, bytes.size() - offset);
    const Timestamp start = std::max(now_, link.stream_busy_until);
    const Timestamp done = start + SerializationTime(n, imp.rate_bytes_per_sec);
    link.stream_busy_until = done;
    Event segment{};
    segment.type = type;
    segment.from = from;
    segment.to = to;
    segment.connection = connection;
    segment.generation = c.generation;
    segment.to_side = static_cast<uint8_t>(1 - from_side);
    segment.sent_at = now_;
    segment.at = arrival_after(done);
    segment.bytes.assign(bytes.begin() + offset, bytes.begin() + offset + n);
    Schedule(std::move(segment));
    offset += n;
  }
}

std::optional<SimStreamEvent> SimNetwork::PollStreamEvent(
    const Endpoint& node) {
  const std::optional<uint32_t> idx = FindNode(node);
  if (!idx) return std::nullopt;
  std::deque<SimStreamEvent>& q = nodes_[*idx].stream_events;
  if (q.empty()) return std::nullopt;
  SimStreamEvent e = std::move(q.front());
  q.pop_front();
  return e;
}

absl::Status SimNetwork::StreamWrite(SimStreamId stream,
                                     std::span<const std::byte> bytes) {
  int side = 0;
  Connection* c = FindStream(stream, &side);
  if (c == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::StreamWrite: unknown stream ", stream));
  }
  StreamEnd& end = c->end[side];
  if (end.reset) {
    return absl::FailedPreconditionError(
        absl::StrCat("SimNetwork::StreamWrite: stream ", stream,
                     c->refused ? " was refused" : " was reset"));
  }
  if (end.write_closed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "SimNetwork::StreamWrite: stream ", stream, " was closed for writing"));
  }
  if (bytes.empty()) return absl::OkStatus();
  if (flow_control()) {
    if (bytes.size() > SendBufferRoom(end)) {
      ++counters_.stream_writes_refused;
      end.writable_wanted = true;
      return absl::ResourceExhaustedError(absl::StrCat(
          "SimNetwork::StreamWrite: stream ", stream,
          "'s send buffer is full (", end.pending.size(), " of ",
          options_.stream_send_buffer_bytes, " bytes held, ", bytes.size(),
          " to write); wait for kWritable or use StreamWriteSome"));
    }
    counters_.stream_bytes_written += bytes.size();
    end.pending.insert(end.pending.end(), bytes.begin(), bytes.end());
    Pump(static_cast<uint64_t>(c - connections_.data()), side);
    return absl::OkStatus();
  }
  counters_.stream_bytes_written += bytes.size();
  if (!end.established) {
    end.unsent.insert(end.unsent.end(), bytes.begin(), bytes.end());
    return absl::OkStatus();
  }
  ScheduleStream(static_cast<uint64_t>(c - connections_.data()), side,
                 EventType::kStreamData, bytes);
  return absl::OkStatus();
}

absl::StatusOr<size_t> SimNetwork::StreamWriteSome(
    SimStreamId stream, std::span<const std::byte> bytes) {
  int side = 0;
  Connection* c = FindStream(stream, &side);
  if (c == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::StreamWriteSome: unknown stream ", stream));
  }
  const size_t room = flow_control() ? SendBufferRoom(c->end[side]) : SIZE_MAX;
  const size_t n = std::min(room, bytes.size());
  if (n < bytes.size() && !c->end[side].reset && !c->end[side].write_closed) {
    ++counters_.stream_writes_refused;
    c->end[side].writable_wanted = true;
  }
  absl::Status s = StreamWrite(stream, bytes.first(n));
  if (!s.ok()) return s;
  return n;
}

size_t SimNetwork::SendBufferRoom(const StreamEnd& end) const {
  if (options_.stream_send_buffer_bytes == 0) return SIZE_MAX;
  const size_t limit = options_.stream_send_buffer_bytes;
  return end.pending.size() >= limit ? 0 : limit - end.pending.size();
}

size_t SimNetwork::StreamPendingBytes(SimStreamId stream) const {
  int side = 0;
  const Connection* c = FindStream(stream, &side);
  if (c == nullptr || c->end[side].reset) return 0;
  return c->end[side].pending.size();
}

size_t SimNetwork::StreamWritableBytes(SimStreamId stream) const {
  int side = 0;
  const Connection* c = FindStream(stream, &side);
  if (c == nullptr || c->end[side].reset || c->end[side].write_closed) {
    return 0;
  }
  return flow_control() ? SendBufferRoom(c->end[side]) : SIZE_MAX;
}

void SimNetwork::Pump(uint64_t connection, int side) {
  Connection& c = connections_[connection];
  StreamEnd& end = c.end[side];
  if (!end.established || end.reset) return;
  const uint64_t window = options_.stream_receive_window_bytes;
  while (!end.pending.empty()) {
    size_t n = end.pending.size();
    if (window > 0) {
      const uint64_t open =
          end.sent_unread >= window ? 0 : window - end.sent_unread;
      if (open == 0) {
        ++counters_.stream_window_stalls;
        break;
      }
      n = static_cast<size_t>(std::min<uint64_t>(n, open));
    }
    std::vector<std::byte> chunk(
        end.pending.begin(), end.pending.begin() + static_cast<ptrdiff_t>(n));
    end.pending.erase(end.pending.begin(),
                      end.pending.begin() + static_cast<ptrdiff_t>(n));
    end.sent_unread += n;
    ScheduleStream(connection, side, EventType::kStreamData, chunk);
  }
  if (end.pending.empty() && end.fin_after_pending) {
    end.fin_after_pending = false;
    ScheduleStream(connection, side, EventType::kStreamFin, {});
  }
  if (end.writable_wanted &&
      (options_.stream_send_buffer_bytes == 0 ||
       end.pending.size() <= options_.stream_send_buffer_bytes / 2)) {
    end.writable_wanted = false;
    const uint32_t peer_node = c.end[1 - side].node;
    nodes_[end.node].stream_events.push_back(SimStreamEvent{
        SimStreamEvent::Kind::kWritable, MakeStreamId(connection, side),
        peer_node < nodes_.size() ? nodes_[peer_node].endpoint : Endpoint()});
  }
}

absl::StatusOr<SimStreamReadResult> SimNetwork::StreamRead(
    SimStreamId stream, std::span<std::byte> out) {
  int side = 0;
  Connection* c = FindStream(stream, &side);
  if (c == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::StreamRead: unknown stream ", stream));
  }
  StreamEnd& end = c->end[side];
  if (end.reset) {
    return absl::AbortedError(
        absl::StrCat("SimNetwork::StreamRead: stream ", stream,
                     c->refused ? " was refused" : " was reset"));
  }
  SimStreamReadResult result;
  result.bytes = std::min(out.size(), end.received.size());
  std::copy_n(end.received.begin(), result.bytes, out.begin());
  end.received.erase(
      end.received.begin(),
      end.received.begin() + static_cast<ptrdiff_t>(result.bytes));
  result.eof = end.peer_fin && end.received.empty();
  if (flow_control() && options_.stream_receive_window_bytes > 0 &&
      result.bytes > 0 && !c->refused) {
    // Tell the sender its window opened; it hears one link delay later.
    const uint64_t conn = static_cast<uint64_t>(c - connections_.data());
    Event update{};
    update.type = EventType::kStreamWindow;
    update.credit = result.bytes;
    const uint32_t from = end.node;
    const uint32_t to = c->end[1 - side].node;
    Link& link = GetLink(from, to);
    update.from = from;
    update.to = to;
    update.connection = conn;
    update.generation = c->generation;
    update.to_side = static_cast<uint8_t>(1 - side);
    update.sent_at = now_;
    update.at = now_ + Effective(link).delay;
    Schedule(std::move(update));
  }
  return result;
}

size_t SimNetwork::StreamReadable(SimStreamId stream) const {
  int side = 0;
  const Connection* c = FindStream(stream, &side);
  if (c == nullptr || c->end[side].reset) return 0;
  return c->end[side].received.size();
}

absl::Status SimNetwork::StreamClose(SimStreamId stream) {
  int side = 0;
  Connection* c = FindStream(stream, &side);
  if (c == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::StreamClose: unknown stream ", stream));
  }
  StreamEnd& end = c->end[side];
  if (end.write_closed || end.reset) return absl::OkStatus();
  end.write_closed = true;
  if (flow_control()) {
    // The FIN follows every byte still waiting for the window.
    end.fin_after_pending = true;
    Pump(static_cast<uint64_t>(c - connections_.data()), side);
    return absl::OkStatus();
  }
  if (!end.established) {
    end.fin_pending = true;
    return absl::OkStatus();
  }
  ScheduleStream(static_cast<uint64_t>(c - connections_.data()), side,
                 EventType::kStreamFin, {});
  return absl::OkStatus();
}

void SimNetwork::ResetEnd(uint64_t connection, int side, uint32_t other_node) {
  StreamEnd& end = connections_[connection].end[side];
  if (!end.open || end.reset) return;
  end.reset = true;
  end.received.clear();
  end.unsent.clear();
  end.pending.clear();
  end.fin_after_pending = false;
  end.writable_wanted = false;
  Node& node = nodes_[end.node];
  node.stream_events.push_back(SimStreamEvent{
      SimStreamEvent::Kind::kReset, MakeStreamId(connection, side),
      other_node < nodes_.size() ? nodes_[other_node].endpoint : Endpoint()});
  Record(SimTraceEvent::Kind::kStreamReset, other_node, end.node, {});
}

absl::Status SimNetwork::StreamAbort(SimStreamId stream) {
  int side = 0;
  Connection* c = FindStream(stream, &side);
  if (c == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::StreamAbort: unknown stream ", stream));
  }
  if (c->end[side].reset) return absl::OkStatus();
  const uint64_t conn = static_cast<uint64_t>(c - connections_.data());
  ++counters_.streams_reset;
  const uint32_t peer_node = c->end[1 - side].node;
  // Unsent client bytes die with the connection; the RST still follows the
  // SYN (or the data already sent), so the peer sees things in order.
  ResetEnd(conn, side, peer_node);
  if (peer_node != kNoNode && !c->refused) {
    ScheduleStream(conn, side, EventType::kStreamRst, {});
  }
  return absl::OkStatus();
}

absl::Status SimNetwork::InjectStreamReset(SimStreamId stream) {
  int side = 0;
  Connection* c = FindStream(stream, &side);
  if (c == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("SimNetwork::InjectStreamReset: unknown stream ", stream));
  }
  const uint64_t conn = static_cast<uint64_t>(c - connections_.data());
  if (!c->end[0].reset || !c->end[1].reset) ++counters_.streams_reset;
  // A new generation makes every segment still in flight stale, so nothing
  // of the old connection arrives after the cut (including a SYN, which then
  // never opens the server end).
  ++c->generation;
  ResetEnd(conn, 0, c->end[1].node);
  ResetEnd(conn, 1, c->end[0].node);
  return absl::OkStatus();
}

// ---- Event processing
// ----------------------------------------------------------

void SimNetwork::Process(Event& event) {
  using K = SimTraceEvent::Kind;
  if (event.type == EventType::kDatagram) {
    Link& link = GetLink(event.from, event.to);
    --link.in_flight;
    --counters_.datagrams_in_flight;
    ++counters_.datagrams_delivered;
    counters_.bytes_delivered += event.bytes.size();
    Record(K::kDeliver, event.from, event.to, event.bytes);
    nodes_[event.to].inbox.push_back(
        SimDatagram{nodes_[event.from].endpoint, event.destination,
                    std::move(event.bytes), event.sent_at, event.at});
    return;
  }

  Connection& c = connections_[event.connection];
  if (event.generation != c.generation) return;  // cut by InjectStreamReset
  const uint64_t conn = event.connection;
  StreamEnd& client = c.end[0];
  StreamEnd& server = c.end[1];
  switch (event.type) {
    case EventType::kDatagram:
      break;  // handled above
    case EventType::kStreamSyn: {
      if (client.reset) return;  // aborted before the SYN arrived
      Node& node = nodes_[server.node];
      if (!node.listening) {
        c.refused = true;
        Event refuse{};
        refuse.type = EventType::kStreamRefused;
        refuse.from = server.node;
        refuse.to = client.node;
        refuse.connection = conn;
        refuse.generation = c.generation;
        refuse.at = now_ + Effective(GetLink(server.node, client.node)).delay;
        Schedule(std::move(refuse));
        return;
      }
      server.open = true;
      server.established = true;
      ++counters_.streams_opened;
      Record(K::kStreamOpen, client.node, server.node, {});
      node.stream_events.push_back(
          SimStreamEvent{SimStreamEvent::Kind::kIncoming, MakeStreamId(conn, 1),
                         nodes_[client.node].endpoint});
      ScheduleStream(conn, 1, EventType::kStreamSynAck, {});
      return;
    }
    case EventType::kStreamSynAck: {
      if (client.reset) return;
      client.established = true;
      c.client_established_at = now_;
      nodes_[client.node].stream_events.push_back(
          SimStreamEvent{SimStreamEvent::Kind::kConnected,
                         MakeStreamId(conn, 0), nodes_[server.node].endpoint});
      if (!client.unsent.empty()) {
        std::vector<std::byte> unsent = std::move(client.unsent);
        client.unsent.clear();
        ScheduleStream(conn, 0, EventType::kStreamData, unsent);
      }
      if (client.fin_pending) {
        client.fin_pending = false;
        ScheduleStream(conn, 0, EventType::kStreamFin, {});
      }
      if (flow_control()) Pump(conn, 0);
      return;
    }
    case EventType::kStreamRefused: {
      if (client.reset) return;
      client.reset = true;
      client.unsent.clear();
      ++counters_.streams_refused;
      Record(K::kStreamRefused, event.from, client.node, {});
      nodes_[client.node].stream_events.push_back(SimStreamEvent{
          SimStreamEvent::Kind::kRefused, MakeStreamId(conn, 0),
          server.node < nodes_.size() ? nodes_[server.node].endpoint
                                      : Endpoint()});
      return;
    }
    case EventType::kStreamData:
    case EventType::kStreamFin:
    case EventType::kStreamRst:
      break;  // below
    case EventType::kStreamWindow: {
      StreamEnd& sender = c.end[event.to_side];
      if (!sender.open || sender.reset) return;
      sender.sent_unread -= std::min(sender.sent_unread, event.credit);
      Pump(conn, event.to_side);
      return;
    }
  }
  // Data, FIN and RST go to the end that did not send them. The side travels
  // in the event because a node may connect to itself (from == to).
  const int to_side = event.to_side;
  StreamEnd& receiver = c.end[to_side];
  if (!receiver.open || receiver.reset) return;
  if (event.type == EventType::kStreamData) {
    counters_.stream_bytes_delivered += event.bytes.size();
    Record(K::kStreamData, event.from, event.to, event.bytes);
    receiver.received.insert(receiver.received.end(), event.bytes.begin(),
                             event.bytes.end());
    nodes_[receiver.node].stream_events.push_back(SimStreamEvent{
        SimStreamEvent::Kind::kReadable, MakeStreamId(conn, to_side),
        nodes_[event.from].endpoint});
  } else if (event.type == EventType::kStreamFin) {
    receiver.peer_fin = true;
    ++counters_.stream_fins;
    Record(K::kStreamFin, event.from, event.to, {});
    nodes_[receiver.node].stream_events.push_back(
        SimStreamEvent{SimStreamEvent::Kind::kFin, MakeStreamId(conn, to_side),
                       nodes_[event.from].endpoint});
  } else {
    ResetEnd(conn, to_side, event.from);
  }
}

}  // namespace ringlab::transport
