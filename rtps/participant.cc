#include "rtps/participant.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "rtps/gossip.h"
#include "rtps/internal/reassembly.h"

namespace ringlab::rtps {

namespace {
constexpr uint32_t kNone = 0xffffffffu;
constexpr uint32_t kGapSlot = 0xfffffffeu;
// Reliable readers keep up to this many out-of-order samples per writer:
// one ACKNACK bitmap's worth (§8.3.5.5: numBits <= 256).
constexpr uint32_t kReorderWindow = 256;
// Header + INFO_TS + DATA header + inline QoS (key hash, status) + padding.
constexpr size_t kDataOverhead = kHeaderSize + 12 + 24 + 32 + 4;
constexpr size_t kMaxSpdpUnicastPending = 64;
// §9.6.2.1 ParticipantMessageData kinds.
constexpr uint32_t kPmdAutomatic = 0x00000001;
constexpr uint32_t kPmdManual = 0x00000002;
// A reliable writer puts a HEARTBEAT_FRAG (§8.3.7.6) into a sample's push
// every this many fragments, so readers repair a long sample while it is
// still going out.
constexpr uint32_t kHeartbeatFragEvery = 128;
// NACK_FRAG windows (256 fragments each) per partial sample per ACKNACK.
constexpr uint32_t kMaxNackFragWindows = 64;

Timestamp After(Timestamp now, int64_t ns) {
  if (ns >= kInfiniteNanos) return Timestamp::Never();
  return now + Duration(ns);
}

KeyHash GuidKeyHash(const Guid& g) {
  KeyHash k;
  k.bytes = g.Bytes();
  return k;
}
}  // namespace

const char* EventKindName(Event::Kind kind) {
  switch (kind) {
    case Event::Kind::kParticipantDiscovered:
      return "participant_discovered";
    case Event::Kind::kParticipantLost:
      return "participant_lost";
    case Event::Kind::kPublicationDiscovered:
      return "publication_discovered";
    case Event::Kind::kSubscriptionDiscovered:
      return "subscription_discovered";
    case Event::Kind::kPublicationLost:
      return "publication_lost";
    case Event::Kind::kSubscriptionLost:
      return "subscription_lost";
    case Event::Kind::kWriterMatched:
      return "writer_matched";
    case Event::Kind::kWriterUnmatched:
      return "writer_unmatched";
    case Event::Kind::kReaderMatched:
      return "reader_matched";
    case Event::Kind::kReaderUnmatched:
      return "reader_unmatched";
    case Event::Kind::kIncompatibleQos:
      return "incompatible_qos";
    case Event::Kind::kDataAvailable:
      return "data_available";
    case Event::Kind::kOfferedDeadlineMissed:
      return "offered_deadline_missed";
    case Event::Kind::kRequestedDeadlineMissed:
      return "requested_deadline_missed";
    case Event::Kind::kLivelinessLost:
      return "liveliness_lost";
    case Event::Kind::kLivelinessChanged:
      return "liveliness_changed";
    case Event::Kind::kOwnershipChanged:
      return "ownership_changed";
    case Event::Kind::kPrefixCollision:
      return "prefix_collision";
  }
  return "?";
}

// ---- Internal structures
// ------------------------------------------------------

struct Participant::Sample {
  std::vector<std::byte> data;  // capacity reused across samples
  SampleInfo info;
  uint64_t order = 0;  // key in the owning SampleRing
  uint32_t instance_next = kNone;
  bool key_only = false;
  Timestamp expiry = Timestamp::Never();  // LIFESPAN (monotonic)
};

// Entries {key, slot} sorted by key, with tombstones (slot == kNone). A
// vector plus a head index: pops advance the head and the front is erased
// in bulk (no reallocation), so steady-state use allocates nothing.
struct Participant::SampleRing {
  struct Entry {
    uint64_t key;
    uint32_t slot;
  };
  std::vector<Entry> entries;
  size_t head = 0;
  size_t live = 0;

  size_t size() const { return entries.size() - head; }
  void Push(uint64_t key, uint32_t slot) {
    entries.push_back({key, slot});
    ++live;
  }
  // First live entry, skipping (and dropping) tombstones at the front.
  const Entry* Front() {
    while (head < entries.size() && entries[head].slot == kNone) ++head;
    Compact();
    return head < entries.size() ? &entries[head] : nullptr;
  }
  void PopFront() {
    Front();
    if (head < entries.size()) {
      ++head;
      --live;
    }
    Compact();
  }
  Entry* Find(uint64_t key) {
    auto it = std::lower_bound(
        entries.begin() + static_cast<ptrdiff_t>(head), entries.end(), key,
        [](const Entry& e, uint64_t k) { return e.key < k; });
    if (it == entries.end() || it->key != key) return nullptr;
    return &*it;
  }
  void Tombstone(Entry* e) {
    if (e->slot != kNone) {
      e->slot = kNone;
      --live;
    }
    // Drop tombstones when they outnumber live entries, so a long-lived
    // instance at the front cannot make the vector grow without bound.
    if (size() > 2 * live + 64) {
      auto first = entries.begin() + static_cast<ptrdiff_t>(head);
      entries.erase(
          std::remove_if(first, entries.end(),
                         [](const Entry& x) { return x.slot == kNone; }),
          entries.end());
      entries.erase(entries.begin(), first);
      head = 0;
    }
  }
  void Compact() {
    if (head >= 64 && head * 2 >= entries.size()) {
      entries.erase(entries.begin(),
                    entries.begin() + static_cast<ptrdiff_t>(head));
      head = 0;
    }
  }
};

struct Participant::InstanceState {
  uint32_t head = kNone;  // oldest sample of the instance
  uint32_t tail = kNone;
  uint32_t count = 0;
  Timestamp deadline_due = Timestamp::Never();  // writers: DEADLINE
};

namespace {
// What a reader remembers of an instance across Take()s, for DEADLINE,
// OWNERSHIP (EXCLUSIVE) and DESTINATION_ORDER (BY_SOURCE_TIMESTAMP).
struct ReaderInstance {
  Timestamp deadline_due = Timestamp::Never();
  Guid last_writer;
  bool has_owner = false;
  Guid owner;
  int32_t owner_strength = 0;
  int64_t last_source_ns = INT64_MIN;
};
}  // namespace

namespace {
// A pool of sample slots with a free list; grows up to `limit` slots on
// demand and keeps them, so reuse allocates nothing.
template <typename S>
struct Pool {
  std::vector<S> slots;
  std::vector<uint32_t> free;
  size_t limit = 0;
  size_t in_use = 0;
  uint32_t Acquire() {
    uint32_t i;
    if (!free.empty()) {
      i = free.back();
      free.pop_back();
    } else {
      if (slots.size() >= limit) return kNone;
      slots.emplace_back();
      free.reserve(slots.capacity());
      i = static_cast<uint32_t>(slots.size() - 1);
    }
    ++in_use;
    return i;
  }
  void Release(uint32_t i) {
    free.push_back(i);
    --in_use;
  }
};
}  // namespace

// A NACK_FRAG request a reliable writer still has to answer.
struct FragRequest {
  SequenceNumber sn = 0;
  FragmentNumberSet set;
};
constexpr size_t kMaxFragRequests = 16;

struct Participant::ReaderProxy {
  Guid guid;
  std::vector<Locator> locators;
  bool reliable = false;
  bool transient_local = false;
  bool expects_inline_qos = false;
  SequenceNumber acked = 0;           // every SN <= acked was acknowledged
  SequenceNumber volatile_floor = 0;  // SNs <= floor predate the match
  SequenceNumberSet requested;
  bool has_requests = false;
  bool heartbeat_due = false;
  bool gap_floor_due = false;
  bool any_acknack = false;
  uint32_t last_acknack_count = 0;
  // NACK_FRAG requests (§8.4.9.2: fragments instead of whole samples).
  std::vector<FragRequest> frag_requests;  // kMaxFragRequests, on first use
  uint32_t frag_request_count = 0;
  bool any_nackfrag = false;
  uint32_t last_nackfrag_count = 0;
  // A fragmented sample resent whole across several datagrams: where the
  // next datagram resumes.
  SequenceNumber resend_sn = 0;
  uint32_t resend_frag = 1;
};

struct Participant::WriterProxy {
  Guid guid;
  std::vector<Locator> locators;
  bool reliable = false;
  SequenceNumber expected = 1;  // next SN to deliver
  SequenceNumber hb_last = 0;   // highest lastSN announced
  bool hb_seen = false;  // reliable: a heartbeat arrived; best effort: data did
  uint32_t last_hb_count = 0;
  Timestamp ack_deadline = Timestamp::Never();
  uint32_t acknack_count = 0;
  // Reorder window: slot (or kGapSlot) of SN s at window[s % size].
  // Allocated on first use (an out-of-order sample or a GAP), so a proxy
  // that only ever sees in-order data costs no window memory.
  std::vector<uint32_t> window;
  std::vector<SequenceNumber> window_sn;
  bool Holds(SequenceNumber s) const {
    if (window.empty()) return false;
    uint32_t w = static_cast<uint32_t>(s % kReorderWindow);
    return window[w] != kNone && window_sn[w] == s;
  }
  void EnsureWindow() {
    if (window.empty()) {
      window.assign(kReorderWindow, kNone);
      window_sn.assign(kReorderWindow, 0);
    }
  }
  // A volatile reader of a transient-local writer: what the writer had
  // before our first heartbeat from it predates the match (DDS 1.4
  // §2.2.3.4), so nothing is delivered before that heartbeat.
  bool skip_history = false;
  // The remote writer's QoS that this reader enforces: LIFESPAN of its
  // samples, OWNERSHIP_STRENGTH, LIVELINESS (kind, lease, last assertion).
  int64_t lifespan_ns = kInfiniteNanos;
  int32_t strength = 0;
  LivelinessKind liveliness = LivelinessKind::kAutomatic;
  int64_t liveliness_lease_ns = kInfiniteNanos;
  Timestamp last_asserted;
  bool alive = true;
  // DATA_FRAG reassembly (§8.4.14.1), created with the proxy.
  std::unique_ptr<internal::FragmentReassembler> frags;
  // The last HEARTBEAT_FRAG (§8.3.7.6): fragments <= hbfrag_last of
  // hbfrag_sn were sent.
  SequenceNumber hbfrag_sn = 0;
  uint32_t hbfrag_last = 0;
  bool any_hbfrag = false;
  uint32_t last_hbfrag_count = 0;
  uint32_t nackfrag_count = 0;
};

struct Participant::LocalWriter {
  Guid guid;
  // Some reader proxy may have a repair, GAP or heartbeat due (set with
  // those flags, cleared by a PollTransmit scan that finds none).
  bool repair_maybe = false;
  EndpointHandle handle = 0;  // 0 for built-in endpoints
  WriterConfig config;
  bool builtin = false;
  bool active = true;
  SequenceNumber next_sn = 1;
  SequenceNumber pushed = 0;  // every SN <= pushed went to the matched readers
  uint32_t push_frag = 1;     // next fragment of SN pushed + 1 to push
  uint32_t frags_since_hbfrag = 0;
  uint32_t hbfrag_count = 0;
  Pool<Sample> pool;
  SampleRing ring;  // key = SN
  absl::flat_hash_map<KeyHash, InstanceState> instances;
  size_t max_instances = 0;
  std::vector<ReaderProxy> readers;
  uint32_t hb_count = 0;
  // lastSN of the latest piggy-backed non-final HEARTBEAT (see BuildPush).
  SequenceNumber ack_asked_sn = 0;
  Timestamp hb_deadline = Timestamp::Never();
  // QoS timers: lower bounds of the next instance deadline and sample
  // expiry (exact after each scan), the last liveliness assertion, and the
  // LATENCY_BUDGET batch (the oldest unpushed sample's latest push time).
  Timestamp deadline_next = Timestamp::Never();
  Timestamp expiry_next = Timestamp::Never();
  Timestamp last_asserted;
  bool liveliness_lost_reported = false;
  Timestamp batch_deadline = Timestamp::Never();
  size_t unpushed_bytes = 0;
  bool liveliness_hb_due = false;  // AssertWriterLiveliness

  bool manual_liveliness() const {
    return config.qos.liveliness != LivelinessKind::kAutomatic &&
           config.qos.liveliness_lease_ns != kInfiniteNanos;
  }
  SequenceNumber last_sn() const { return next_sn - 1; }
  SequenceNumber first_sn() {
    const SampleRing::Entry* e = ring.Front();
    return e ? static_cast<SequenceNumber>(e->key) : next_sn;
  }
  bool reliable_unacked() const {
    for (const ReaderProxy& p : readers) {
      if (p.reliable && p.acked < last_sn()) return true;
    }
    return false;
  }
};

struct Participant::LocalReader {
  Guid guid;
  // A lower bound on the writer proxies' ack_deadline (PollTransmit's scan
  // recomputes it), and whether any proxy ever had a reassembler.
  Timestamp ack_next = Timestamp::Never();
  bool any_frags = false;
  EndpointHandle handle = 0;
  ReaderConfig config;
  bool builtin = false;
  bool active = true;
  Pool<Sample> pool;
  SampleRing ring;  // key = delivery order
  uint64_t next_order = 1;
  absl::flat_hash_map<KeyHash, InstanceState> instances;
  size_t max_instances = 0;
  size_t max_history = 0;  // samples in the history (not the window)
  size_t history_count = 0;
  std::vector<WriterProxy> writers;
  uint32_t loaned = kNone;
  ReceivedSample taken;
  // Per-instance QoS state (see ReaderInstance), when a policy needs it.
  bool track_instances = false;
  absl::flat_hash_map<KeyHash, ReaderInstance> meta;
  Timestamp deadline_next = Timestamp::Never();
  Timestamp expiry_next = Timestamp::Never();
  Timestamp liveliness_next = Timestamp::Never();
};

struct Participant::RemoteEndpoint {
  EndpointData data;
  std::vector<Locator> locators;
};

struct Participant::Receiver {
  GuidPrefix source;
  VendorId vendor;
  bool for_us = true;
  int64_t timestamp_ns = kNoSourceTimestamp;
  Locator from;
};

// ---- Creation
// -----------------------------------------------------------------

Participant::Participant(ParticipantConfig config)
    : config_(std::move(config)) {}
Participant::~Participant() {
  // Reassemblers return their memory to the budget: drop them first.
  for (auto& r : readers_) r->writers.clear();
}

absl::StatusOr<std::unique_ptr<Participant>> Participant::Create(
    ParticipantConfig config, Timestamp now) {
  if (config.guid_prefix.is_unknown()) {
    return absl::InvalidArgumentError("guid_prefix must not be all zeros");
  }
  if (config.metatraffic_unicast.empty() &&
      config.metatraffic_multicast.empty()) {
    return absl::InvalidArgumentError(
        "no metatraffic locator: peers could not send discovery to us");
  }
  if (config.max_message_bytes < 512) {
    return absl::InvalidArgumentError("max_message_bytes must be >= 512");
  }
  config.max_message_bytes = std::min<size_t>(config.max_message_bytes, 65000);
  // A sample up to one fragment goes as one DATA, so it must fit a datagram
  // with its headers; DATA_FRAG needs 16-bit fragment sizes (§9.4.5.4).
  if (config.fragment_size_bytes < 64 || config.fragment_size_bytes > 65000 ||
      config.fragment_size_bytes + kDataOverhead > config.max_message_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("fragment_size_bytes must be in [64, max_message_bytes - ",
                     kDataOverhead, "], got ", config.fragment_size_bytes));
  }
  if (config.max_sample_bytes > 0xffffffffu) {
    return absl::InvalidArgumentError("max_sample_bytes must fit 32 bits");
  }
  std::unique_ptr<Participant> p(new Participant(std::move(config)));
  p->reassembly_budget_ = std::make_unique<internal::ReassemblyBudget>();
  p->reassembly_budget_->limit_bytes = p->config_.max_reassembly_bytes;
  p->events_.resize(std::max<size_t>(p->config_.event_capacity, 16));
  p->tx_destinations_.reserve(64);
  p->spdp_unicast_pending_.reserve(kMaxSpdpUnicastPending);

  // Built-in SEDP endpoints (§8.5.4.2): reliable, transient-local, keyed
  // by endpoint GUID, KEEP_LAST 1 per instance.
  EndpointQos sedp = EndpointQos::WriterDefaults();
  sedp.durability = DurabilityKind::kTransientLocal;
  sedp.history = HistoryKind::kKeepLast;
  sedp.history_depth = 1;
  auto make_writer = [&](EntityId id, const char* topic) {
    auto w = std::make_unique<LocalWriter>();
    w->guid = Guid{p->config_.guid_prefix, id};
    w->config.topic_name = topic;
    w->config.qos = sedp;
    w->config.keyed = true;
    w->builtin = true;
    w->pool.limit = static_cast<size_t>(p->config_.max_remote_endpoints) + 64;
    w->max_instances = w->pool.limit;
    p->writers_.push_back(std::move(w));
    return static_cast<uint32_t>(p->writers_.size() - 1);
  };
  auto make_reader = [&](EntityId id, const char* topic) {
    auto r = std::make_unique<LocalReader>();
    r->guid = Guid{p->config_.guid_prefix, id};
    r->config.topic_name = topic;
    r->config.qos = sedp;
    r->builtin = true;
    r->pool.limit = 1024 + kReorderWindow;
    r->max_history = 1024;
    r->max_instances = 1;
    p->readers_.push_back(std::move(r));
    return static_cast<uint32_t>(p->readers_.size() - 1);
  };
  p->sedp_pub_writer_ =
      make_writer(EntityId::SedpPublicationsWriter(), "DCPSPublication");
  p->sedp_sub_writer_ =
      make_writer(EntityId::SedpSubscriptionsWriter(), "DCPSSubscription");
  p->sedp_pub_reader_ =
      make_reader(EntityId::SedpPublicationsReader(), "DCPSPublication");
  p->sedp_sub_reader_ =
      make_reader(EntityId::SedpSubscriptionsReader(), "DCPSSubscription");
  // §8.4.13 BuiltinParticipantMessageWriter/Reader: reliable,
  // transient-local, KEEP_LAST 1 per (prefix, kind): liveliness updates.
  p->pmd_writer_ = make_writer(EntityId::ParticipantMessageWriter(),
                               "DCPSParticipantMessage");
  p->writers_[p->pmd_writer_]->pool.limit = 8;
  p->writers_[p->pmd_writer_]->max_instances = 8;
  p->pmd_reader_ = make_reader(EntityId::ParticipantMessageReader(),
                               "DCPSParticipantMessage");

  ParticipantData self;
  self.guid_prefix = p->config_.guid_prefix;
  self.vendor = p->config_.vendor;
  self.builtin_endpoints = builtin_endpoint::kParticipantAnnouncer |
                           builtin_endpoint::kParticipantDetector |
                           builtin_endpoint::kPublicationsAnnouncer |
                           builtin_endpoint::kPublicationsDetector |
                           builtin_endpoint::kSubscriptionsAnnouncer |
                           builtin_endpoint::kSubscriptionsDetector |
                           builtin_endpoint::kParticipantMessageWriter |
                           builtin_endpoint::kParticipantMessageReader;
  self.metatraffic_unicast = p->config_.metatraffic_unicast;
  self.metatraffic_multicast = p->config_.metatraffic_multicast;
  self.default_unicast = p->config_.default_unicast;
  self.default_multicast = p->config_.default_multicast;
  self.lease_duration_ns = p->config_.lease_duration_ns;
  self.has_domain_id = true;
  self.domain_id = p->config_.domain_id;
  self.user_data = p->config_.user_data;
  self.entity_name = p->config_.entity_name;
  self.properties = p->config_.properties;
  self.gossip = p->config_.discovery == DiscoveryMode::kGossip;
  SerializeParticipant(self, &p->spdp_payload_);
  p->spdp_next_ = now + Duration(p->config_.spdp_initial_delay_ns);
  if (self.gossip) {
    GossipConfig g;
    g.prefix = p->config_.guid_prefix;
    g.self = p->config_.metatraffic_unicast.empty()
                 ? p->config_.metatraffic_multicast[0]
                 : p->config_.metatraffic_unicast[0];
    g.seeds = p->config_.gossip_seeds;
    g.period_ns = p->config_.gossip_period_ns;
    g.probe_timeout_ns = p->config_.gossip_period_ns * 3 / 10;
    g.max_message_bytes = p->config_.max_message_bytes;
    g.max_members = p->config_.max_remote_participants;
    uint64_t seed = 0;
    for (uint8_t b : g.prefix.bytes) seed = seed * 131 + b;
    seed = seed * 131 + g.self.ipv4_host_order();
    seed = seed * 131 + g.self.port;
    g.random_seed = seed ^ p->config_.gossip_nonce;
    g.nonce = p->config_.gossip_nonce;
    p->gossip_ = std::make_unique<GossipDiscovery>(std::move(g), now);
    p->UpdateGossipRecord(now);
  }
  return p;
}

// ---- Events
// ---------------------------------------------------------------------

void Participant::PushEvent(Event e) {
  if (event_count_ == events_.size()) {
    ++counters_.events_dropped;
    return;
  }
  events_[(event_head_ + event_count_) % events_.size()] = e;
  ++event_count_;
}

std::optional<Event> Participant::PollEvent() {
  if (event_count_ == 0) return std::nullopt;
  Event e = events_[event_head_];
  event_head_ = (event_head_ + 1) % events_.size();
  --event_count_;
  return e;
}

// ---- Local endpoints
// --------------------------------------------------------------

absl::StatusOr<EndpointHandle> Participant::CreateWriter(WriterConfig config,
                                                         Timestamp now) {
  if (config.topic_name.empty() || config.type_name.empty()) {
    return absl::InvalidArgumentError("writer needs a topic and a type name");
  }
  if (absl::Status s = config.qos.Validate(); !s.ok()) return s;
  auto w = std::make_unique<LocalWriter>();
  w->guid = Guid{config_.guid_prefix,
                 EntityId::Make(next_entity_key_++,
                                config.keyed ? EntityId::kUserWriterWithKey
                                             : EntityId::kUserWriterNoKey)};
  const EndpointQos& q = config.qos;
  size_t max_samples = q.max_samples > 0
                           ? static_cast<size_t>(q.max_samples)
                           : static_cast<size_t>(config_.default_max_samples);
  w->max_instances = q.max_instances > 0
                         ? static_cast<size_t>(q.max_instances)
                         : static_cast<size_t>(config_.default_max_instances);
  if (q.history == HistoryKind::kKeepLast && !config.keyed) {
    max_samples =
        std::min<size_t>(max_samples, static_cast<size_t>(q.history_depth));
  }
  // +1: a slot for the sample being written while the oldest is evicted.
  w->pool.limit = max_samples + 1;
  w->config = std::move(config);
  writers_.push_back(std::move(w));
  uint32_t index = static_cast<uint32_t>(writers_.size() - 1);
  handles_.push_back({true, index});
  writers_[index]->handle = static_cast<EndpointHandle>(handles_.size());
  writers_[index]->last_asserted = now;  // a new writer starts alive
  const EndpointQos& wq = writers_[index]->config.qos;
  if (wq.liveliness == LivelinessKind::kAutomatic &&
      wq.liveliness_lease_ns != kInfiniteNanos) {
    pmd_automatic_next_ = std::min(pmd_automatic_next_, now);
  }
  Announce(index, false, now);
  MatchLocalWriter(index, now);
  gossip_dirty_ = gossip_ != nullptr;
  return static_cast<EndpointHandle>(handles_.size());
}

absl::StatusOr<EndpointHandle> Participant::CreateReader(ReaderConfig config,
                                                         Timestamp now) {
  if (config.topic_name.empty() || config.type_name.empty()) {
    return absl::InvalidArgumentError("reader needs a topic and a type name");
  }
  if (absl::Status s = config.qos.Validate(); !s.ok()) return s;
  if (config.keyed && !config.key_hash_from_payload) {
    return absl::InvalidArgumentError(
        "a keyed reader needs key_hash_from_payload: peers send no key hash");
  }
  auto r = std::make_unique<LocalReader>();
  r->guid = Guid{config_.guid_prefix,
                 EntityId::Make(next_entity_key_++,
                                config.keyed ? EntityId::kUserReaderWithKey
                                             : EntityId::kUserReaderNoKey)};
  const EndpointQos& q = config.qos;
  size_t max_samples = q.max_samples > 0
                           ? static_cast<size_t>(q.max_samples)
                           : static_cast<size_t>(config_.default_max_samples);
  r->max_instances = q.max_instances > 0
                         ? static_cast<size_t>(q.max_instances)
                         : static_cast<size_t>(config_.default_max_instances);
  r->max_history = max_samples;
  // History + one reorder window per writer (grown when writers match) + 1
  // loaned slot.
  r->pool.limit = max_samples + 1;
  r->config = std::move(config);
  readers_.push_back(std::move(r));
  uint32_t index = static_cast<uint32_t>(readers_.size() - 1);
  handles_.push_back({false, index});
  readers_[index]->handle = static_cast<EndpointHandle>(handles_.size());
  {
    const EndpointQos& rq = readers_[index]->config.qos;
    readers_[index]->track_instances =
        rq.deadline_ns != kInfiniteNanos ||
        rq.ownership == OwnershipKind::kExclusive ||
        rq.destination_order == DestinationOrderKind::kBySourceTimestamp;
  }
  Announce(index | 0x80000000u, false, now);
  MatchLocalReader(index, now);
  gossip_dirty_ = gossip_ != nullptr;
  return static_cast<EndpointHandle>(handles_.size());
}

Guid Participant::EndpointGuid(EndpointHandle h) const {
  if (h == 0 || h > handles_.size()) return Guid{};
  auto [is_writer, index] = handles_[h - 1];
  return is_writer ? writers_[index]->guid : readers_[index]->guid;
}

size_t Participant::MatchedCount(EndpointHandle h) const {
  if (h == 0 || h > handles_.size()) return 0;
  auto [is_writer, index] = handles_[h - 1];
  return is_writer ? writers_[index]->readers.size()
                   : readers_[index]->writers.size();
}

absl::Status Participant::DeleteEndpoint(EndpointHandle h, Timestamp now) {
  maybe_pending_ = true;
  gossip_dirty_ = gossip_ != nullptr;
  if (h == 0 || h > handles_.size()) {
    return absl::NotFoundError("no such endpoint handle");
  }
  auto [is_writer, index] = handles_[h - 1];
  if (is_writer) {
    LocalWriter& w = *writers_[index];
    if (!w.active) return absl::NotFoundError("endpoint already deleted");
    for (const ReaderProxy& p : w.readers) {
      PushEvent({Event::Kind::kWriterUnmatched, h, p.guid});
    }
    w.readers.clear();
    w.active = false;
    Announce(index, true, now);
  } else {
    LocalReader& r = *readers_[index];
    if (!r.active) return absl::NotFoundError("endpoint already deleted");
    for (const WriterProxy& p : r.writers) {
      PushEvent({Event::Kind::kReaderUnmatched, h, p.guid});
    }
    r.writers.clear();
    r.active = false;
    Announce(index | 0x80000000u, true, now);
  }
  return absl::OkStatus();
}

// SEDP (§8.5.4): our endpoint's DiscoveredWriterData/ReaderData goes into
// the built-in writer's transient-local history, keyed by endpoint GUID.
// `index` has the top bit set for readers.
void Participant::Announce(uint32_t index, bool dispose, Timestamp now) {
  bool is_reader = index & 0x80000000u;
  index &= 0x7fffffffu;
  EndpointData e;
  if (is_reader) {
    const LocalReader& r = *readers_[index];
    e.guid = r.guid;
    e.topic_name = r.config.topic_name;
    e.type_name = r.config.type_name;
    e.qos = r.config.qos;
  } else {
    const LocalWriter& w = *writers_[index];
    e.guid = w.guid;
    e.topic_name = w.config.topic_name;
    e.type_name = w.config.type_name;
    e.qos = w.config.qos;
  }
  e.participant_guid = Guid{config_.guid_prefix, EntityId::Participant()};
  LocalWriter& sedp =
      *writers_[is_reader ? sedp_sub_writer_ : sedp_pub_writer_];
  KeyHash key = GuidKeyHash(e.guid);
  if (dispose) {
    // Key-only payload: the key (PID_ENDPOINT_GUID) as a parameter list.
    scratch_.clear();
    for (std::byte b :
         {std::byte{0}, std::byte{3}, std::byte{0}, std::byte{0}}) {
      scratch_.push_back(b);  // PL_CDR_LE
    }
    CdrWriter w(&scratch_, 4, Endian::kLittle);
    ParameterListWriter pl(&w);
    size_t at = pl.Begin(pid::kEndpointGuid);
    std::array<uint8_t, 16> b = e.guid.Bytes();
    w.WriteRaw(b.data(), 16);
    pl.End(at);
    pl.Finish();
    (void)WriteInternal(sedp, scratch_, key, kNoSourceTimestamp,
                        kStatusInfoDisposed | kStatusInfoUnregistered, true,
                        now);
    return;
  }
  SerializeEndpoint(e, &scratch_);
  (void)WriteInternal(sedp, scratch_, key, kNoSourceTimestamp, 0, false, now);
}

// ---- Writing
// ----------------------------------------------------------------------

absl::Status Participant::Write(EndpointHandle h,
                                std::span<const std::byte> payload,
                                const KeyHash& key, int64_t source_time_ns,
                                Timestamp now) {
  if (h == 0 || h > handles_.size() || !handles_[h - 1].first) {
    return absl::NotFoundError("not a writer handle");
  }
  LocalWriter& w = *writers_[handles_[h - 1].second];
  if (!w.active) return absl::FailedPreconditionError("writer deleted");
  return WriteInternal(w, payload, w.config.keyed ? key : KeyHash{},
                       source_time_ns, 0, false, now);
}

absl::Status Participant::WriteBuffered(EndpointHandle h, const KeyHash& key,
                                        int64_t source_time_ns, Timestamp now) {
  if (h == 0 || h > handles_.size() || !handles_[h - 1].first) {
    return absl::NotFoundError("not a writer handle");
  }
  LocalWriter& w = *writers_[handles_[h - 1].second];
  if (!w.active) return absl::FailedPreconditionError("writer deleted");
  return WriteInternal(w, write_buffer_, w.config.keyed ? key : KeyHash{},
                       source_time_ns, 0, false, now, &write_buffer_);
}

absl::Status Participant::Dispose(EndpointHandle h, const KeyHash& key,
                                  std::span<const std::byte> serialized_key,
                                  int64_t source_time_ns, Timestamp now) {
  if (h == 0 || h > handles_.size() || !handles_[h - 1].first) {
    return absl::NotFoundError("not a writer handle");
  }
  LocalWriter& w = *writers_[handles_[h - 1].second];
  if (!w.active) return absl::FailedPreconditionError("writer deleted");
  return WriteInternal(w, serialized_key, key, source_time_ns,
                       kStatusInfoDisposed, true, now);
}

namespace {
// A full KEEP_ALL history refuses Write() over and over while a writer
// streams (ringlab_dds_throughput writes until refused): the refusal is
// built once, and a copy of a Status only takes a reference, so the
// refusal allocates nothing.
enum Refusal { kRefusedPerInstance, kRefusedHistoryFull };
const absl::Status& RefusalStatus(Refusal r) {
  static const absl::Status* const kStatuses[] = {
      new absl::Status(absl::ResourceExhaustedError(
          "RESOURCE_LIMITS: max_samples_per_instance (KEEP_ALL)")),
      new absl::Status(absl::ResourceExhaustedError(
          "history full: reliable readers have not acknowledged (KEEP_ALL)")),
  };
  return *kStatuses[r];
}
}  // namespace

absl::Status Participant::WriteInternal(
    LocalWriter& w, std::span<const std::byte> payload, const KeyHash& key,
    int64_t source_time_ns, uint32_t status_info, bool key_only, Timestamp now,
    std::vector<std::byte>* adopt) {
  maybe_pending_ = true;
  last_now_ = now;
  if (payload.size() > config_.max_sample_bytes ||
      (key_only && payload.size() > config_.fragment_size_bytes)) {
    ++counters_.samples_too_large;
    return absl::InvalidArgumentError(absl::StrCat(
        "sample of ", payload.size(), " bytes is above max_sample_bytes (",
        config_.max_sample_bytes, ")"));
  }
  const EndpointQos& q = w.config.qos;
  bool keep_last = q.history == HistoryKind::kKeepLast;
  auto it = w.instances.find(key);
  if (it == w.instances.end()) {
    if (w.instances.size() >= w.max_instances) {
      return absl::ResourceExhaustedError("RESOURCE_LIMITS: max_instances");
    }
    it = w.instances.emplace(key, InstanceState{}).first;
  }
  InstanceState& inst = it->second;
  auto evict_instance_head = [&](InstanceState& in) {
    uint32_t slot = in.head;
    Sample& s = w.pool.slots[slot];
    if (SampleRing::Entry* e = w.ring.Find(s.order)) w.ring.Tombstone(e);
    in.head = s.instance_next;
    if (in.head == kNone) in.tail = kNone;
    --in.count;
    w.pool.Release(slot);
  };
  // KEEP_LAST n per instance (DDS 1.4 §2.2.3.18): replace the oldest, even
  // if a reliable reader has not acknowledged it (it will get a GAP).
  int32_t per_instance_limit =
      keep_last ? q.history_depth
                : (q.max_samples_per_instance > 0 ? q.max_samples_per_instance
                                                  : INT32_MAX);
  if (keep_last && inst.count >= static_cast<uint32_t>(per_instance_limit)) {
    evict_instance_head(inst);
  } else if (inst.count >= static_cast<uint32_t>(per_instance_limit)) {
    PurgeAcked(w);
    if (inst.count >= static_cast<uint32_t>(per_instance_limit)) {
      return RefusalStatus(kRefusedPerInstance);
    }
  }
  uint32_t slot = w.pool.Acquire();
  if (slot == kNone) {
    PurgeAcked(w);
    slot = w.pool.Acquire();
  }
  if (slot == kNone && keep_last) {
    // The history is full across instances: drop the globally oldest.
    if (const SampleRing::Entry* e = w.ring.Front()) {
      Sample& oldest = w.pool.slots[e->slot];
      auto oit = w.instances.find(oldest.info.key);
      if (oit != w.instances.end()) evict_instance_head(oit->second);
      slot = w.pool.Acquire();
    }
  }
  if (slot == kNone) {
    return RefusalStatus(kRefusedHistoryFull);
  }
  Sample& s = w.pool.slots[slot];
  if (adopt != nullptr) {
    // The caller serialized into a buffer we own: take it as it is (the
    // slot's old buffer, free now, becomes the next one to serialize into).
    s.data.swap(*adopt);
  } else {
    s.data.assign(payload.begin(), payload.end());
    counters_.sample_bytes_copied += payload.size();
  }
  s.info.writer = w.guid;
  s.info.sn = w.next_sn++;
  s.info.source_time_ns = source_time_ns;
  s.info.key = key;
  s.info.status_info = status_info;
  s.info.valid_data = !key_only;
  s.key_only = key_only;
  s.order = static_cast<uint64_t>(s.info.sn);
  s.instance_next = kNone;
  // LIFESPAN (DDS 1.4 §2.2.3.16): the sample leaves the history when it
  // expires, so neither a retransmission nor a late joiner gets it.
  s.expiry = After(now, q.lifespan_ns);
  if (s.expiry < w.expiry_next) w.expiry_next = s.expiry;
  if (inst.tail != kNone) {
    w.pool.slots[inst.tail].instance_next = slot;
  } else {
    inst.head = slot;
  }
  inst.tail = slot;
  ++inst.count;
  w.ring.Push(s.order, slot);
  if (!w.builtin) {
    // DEADLINE (§2.2.3.7): the instance must be written again within the
    // period; a disposed or unregistered instance is no longer expected.
    if (q.deadline_ns != kInfiniteNanos) {
      inst.deadline_due =
          status_info != 0 ? Timestamp::Never() : After(now, q.deadline_ns);
      if (inst.deadline_due < w.deadline_next) {
        w.deadline_next = inst.deadline_due;
      }
    }
    // LIVELINESS (§2.2.3.11): writing asserts the writer.
    if (w.manual_liveliness()) {
      w.last_asserted = now;
      w.liveliness_lost_reported = false;
    }
    if (q.liveliness == LivelinessKind::kManualByParticipant) {
      // ...and every MANUAL_BY_PARTICIPANT writer of the participant; remote
      // readers of those learn it from a participant message, sent at most
      // every quarter lease.
      int64_t min_lease = kInfiniteNanos;
      for (auto& other : writers_) {
        if (other->builtin || !other->active ||
            other->config.qos.liveliness !=
                LivelinessKind::kManualByParticipant) {
          continue;
        }
        other->last_asserted = now;
        other->liveliness_lost_reported = false;
        min_lease = std::min(min_lease, other->config.qos.liveliness_lease_ns);
      }
      if (min_lease != kInfiniteNanos &&
          now - pmd_manual_sent_ >= Duration(min_lease / 4)) {
        pmd_manual_sent_ = now;
        WriteParticipantMessage(kPmdManual, now);
      }
    }
    // LATENCY_BUDGET (§2.2.3.8): the first unpushed sample starts the
    // batch; it goes out by its budget at the latest.
    if (w.pushed + 1 == s.info.sn) {
      w.batch_deadline = After(now, q.latency_budget_ns);
      w.unpushed_bytes = 0;
    }
    w.unpushed_bytes += payload.size() + 32;
  }
  if (w.readers.empty()) w.pushed = w.last_sn();
  return absl::OkStatus();
}

SequenceNumber Participant::MinAcked(const LocalWriter& w) const {
  SequenceNumber m = w.last_sn();
  for (const ReaderProxy& p : w.readers) {
    if (p.reliable) m = std::min(m, p.acked);
  }
  return std::min(m, w.pushed);
}

// Removes the writer's oldest sample (the ring's front, which is also the
// head of its instance).
void Participant::PopOldest(LocalWriter& w) {
  const SampleRing::Entry* e = w.ring.Front();
  if (e == nullptr) return;
  uint32_t slot = e->slot;
  Sample& s = w.pool.slots[slot];
  auto it = w.instances.find(s.info.key);
  if (it != w.instances.end()) {
    InstanceState& in = it->second;
    in.head = s.instance_next;
    if (in.head == kNone) in.tail = kNone;
    --in.count;
    // An instance with a DEADLINE stays known while it has no samples.
    if (in.count == 0 && in.deadline_due.is_never()) w.instances.erase(it);
  }
  w.ring.PopFront();
  w.pool.Release(slot);
}

// A volatile writer keeps samples only until every reliable reader has
// acknowledged them (§8.4.7.2: isAckedByAll -> may be removed); a
// transient-local writer keeps them for late joiners, bounded by its
// HISTORY / RESOURCE_LIMITS.
void Participant::PurgeAcked(LocalWriter& w) {
  if (w.config.qos.durability != DurabilityKind::kVolatile) return;
  SequenceNumber acked = MinAcked(w);
  while (const SampleRing::Entry* e = w.ring.Front()) {
    if (static_cast<SequenceNumber>(e->key) > acked) break;
    PopOldest(w);
  }
}

// LIFESPAN: samples leave the history at their expiry. One lifespan per
// writer makes expiry grow with the SN, so they leave from the front.
void Participant::PurgeExpired(LocalWriter& w, Timestamp now) {
  while (const SampleRing::Entry* e = w.ring.Front()) {
    if (w.pool.slots[e->slot].expiry > now) break;
    PopOldest(w);
    ++counters_.writer_samples_expired;
  }
  const SampleRing::Entry* e = w.ring.Front();
  w.expiry_next =
      e == nullptr ? Timestamp::Never() : w.pool.slots[e->slot].expiry;
}

bool Participant::AllAcknowledged(EndpointHandle h) const {
  if (h == 0 || h > handles_.size() || !handles_[h - 1].first) return false;
  const LocalWriter& w = *writers_[handles_[h - 1].second];
  if (w.pushed < w.last_sn()) return false;
  for (const ReaderProxy& p : w.readers) {
    if (p.reliable && p.acked < w.last_sn()) return false;
  }
  return true;
}

// ---- Reading
// ------------------------------------------------------------------------

const ReceivedSample* Participant::Take(EndpointHandle h) {
  if (h == 0 || h > handles_.size() || handles_[h - 1].first) return nullptr;
  LocalReader& r = *readers_[handles_[h - 1].second];
  if (r.loaned != kNone) {
    r.pool.Release(r.loaned);
    r.loaned = kNone;
  }
  // LIFESPAN: an expired sample is never delivered (the timer drops them at
  // their expiry; this covers a Take between the expiry and that tick).
  if (r.expiry_next <= last_now_) PurgeExpired(r, last_now_);
  const SampleRing::Entry* e = r.ring.Front();
  if (e == nullptr) return nullptr;
  uint32_t slot = e->slot;
  r.ring.PopFront();
  Sample& s = r.pool.slots[slot];
  auto it = r.instances.find(s.info.key);
  if (it != r.instances.end()) {
    InstanceState& in = it->second;
    in.head = s.instance_next;
    if (in.head == kNone) in.tail = kNone;
    --in.count;
    if (in.count == 0) r.instances.erase(it);
  }
  --r.history_count;
  r.loaned = slot;
  r.taken.info = s.info;
  r.taken.payload = s.key_only ? std::span<const std::byte>()
                               : std::span<const std::byte>(s.data);
  return &r.taken;
}

// Unlinks a sample from the reader's history wherever it is (its ring entry
// becomes a tombstone, its instance list skips it) and frees its slot.
void Participant::RemoveFromHistory(LocalReader& r, uint32_t slot) {
  Sample& s = r.pool.slots[slot];
  if (SampleRing::Entry* e = r.ring.Find(s.order)) r.ring.Tombstone(e);
  auto it = r.instances.find(s.info.key);
  if (it != r.instances.end()) {
    InstanceState& in = it->second;
    uint32_t prev = kNone;
    for (uint32_t cur = in.head; cur != kNone;
         cur = r.pool.slots[cur].instance_next) {
      if (cur == slot) {
        if (prev == kNone) {
          in.head = s.instance_next;
        } else {
          r.pool.slots[prev].instance_next = s.instance_next;
        }
        if (in.tail == slot) in.tail = prev;
        --in.count;
        break;
      }
      prev = cur;
    }
    if (in.count == 0) r.instances.erase(it);
  }
  --r.history_count;
  r.pool.Release(slot);
}

void Participant::PurgeExpired(LocalReader& r, Timestamp now) {
  // Removing may compact the ring, so each removal restarts the scan; the
  // expired samples are almost always the oldest, at the front.
  for (;;) {
    uint32_t victim = kNone;
    Timestamp next = Timestamp::Never();
    for (size_t i = r.ring.head; i < r.ring.entries.size(); ++i) {
      uint32_t slot = r.ring.entries[i].slot;
      if (slot == kNone) continue;
      Timestamp x = r.pool.slots[slot].expiry;
      if (x <= now) {
        victim = slot;
        break;
      }
      next = std::min(next, x);
    }
    if (victim == kNone) {
      r.expiry_next = next;
      return;
    }
    RemoveFromHistory(r, victim);
    ++counters_.samples_expired;
  }
}

size_t Participant::Available(EndpointHandle h) const {
  if (h == 0 || h > handles_.size() || handles_[h - 1].first) return 0;
  return readers_[handles_[h - 1].second]->history_count;
}

// KEEP_LAST n per instance evicts the instance's oldest unread sample;
// KEEP_ALL refuses when RESOURCE_LIMITS are reached (the sample is then not
// accepted, so a reliable writer will send it again).
bool Participant::StoreInHistory(LocalReader& r, uint32_t slot,
                                 WriterProxy* from, Timestamp now) {
  Sample& s = r.pool.slots[slot];
  const EndpointQos& q = r.config.qos;
  bool keep_last = q.history == HistoryKind::kKeepLast && !r.builtin;
  // QoS filters (DDS 1.4 §2.2.3), decided before anything changes.
  ReaderInstance* meta = nullptr;
  bool new_owner = false;
  const int64_t src = s.info.source_time_ns;
  const bool by_source =
      q.destination_order == DestinationOrderKind::kBySourceTimestamp;
  auto filtered = [&](uint64_t& counter) {
    ++counter;
    r.pool.Release(slot);
    return true;  // consumed: a reliable writer must not send it again
  };
  if (from != nullptr && !r.builtin) {
    // LIFESPAN (§2.2.3.16): expiry = source timestamp + the writer's
    // lifespan; an expired sample is never delivered.
    if (from->lifespan_ns != kInfiniteNanos) {
      const int64_t wall = WallNow(now);
      const int64_t base = src != kNoSourceTimestamp ? src : wall;
      const int64_t left = base > INT64_MAX - from->lifespan_ns
                               ? INT64_MAX
                               : base + from->lifespan_ns - wall;
      if (left <= 0) return filtered(counters_.samples_expired);
      s.expiry = now + Duration(left);
    }
    if (r.track_instances) {
      auto mit = r.meta.find(s.info.key);
      if (mit == r.meta.end()) {
        if (r.meta.size() < std::max<size_t>(r.max_instances, 1)) {
          mit = r.meta.emplace(s.info.key, ReaderInstance{}).first;
        } else {
          ++counters_.instance_limit_drops;
        }
      }
      if (mit != r.meta.end()) meta = &mit->second;
    }
    if (meta != nullptr) {
      // OWNERSHIP EXCLUSIVE (§2.2.3.9): only the strongest alive writer of
      // an instance is heard; equal strengths go to the lower GUID.
      if (q.ownership == OwnershipKind::kExclusive) {
        if (!meta->has_owner) {
          new_owner = true;
        } else if (meta->owner != from->guid) {
          bool wins = from->strength > meta->owner_strength ||
                      (from->strength == meta->owner_strength &&
                       from->guid < meta->owner);
          if (!wins) return filtered(counters_.samples_not_owner);
          new_owner = true;
        }
      }
      // DESTINATION_ORDER BY_SOURCE_TIMESTAMP (§2.2.3.17): an instance
      // never goes back in source time.
      if (by_source && src != kNoSourceTimestamp &&
          src < meta->last_source_ns) {
        return filtered(counters_.samples_out_of_order);
      }
    }
  }
  auto it = r.instances.find(s.info.key);
  if (it == r.instances.end()) {
    if (r.instances.size() >= std::max<size_t>(r.max_instances, 1)) {
      ++counters_.data_rejected_full;
      return false;
    }
    it = r.instances.emplace(s.info.key, InstanceState{}).first;
  }
  InstanceState& in = it->second;
  uint32_t per_instance =
      keep_last ? static_cast<uint32_t>(q.history_depth)
                : (q.max_samples_per_instance > 0
                       ? static_cast<uint32_t>(q.max_samples_per_instance)
                       : UINT32_MAX);
  if (keep_last && in.count >= per_instance) {
    uint32_t old = in.head;
    Sample& os = r.pool.slots[old];
    if (SampleRing::Entry* e = r.ring.Find(os.order)) r.ring.Tombstone(e);
    in.head = os.instance_next;
    if (in.head == kNone) in.tail = kNone;
    --in.count;
    --r.history_count;
    r.pool.Release(old);
  } else if (in.count >= per_instance || r.history_count >= r.max_history) {
    ++counters_.data_rejected_full;
    if (in.count == 0) r.instances.erase(it);
    return false;
  }
  if (meta != nullptr) {
    if (new_owner) {
      meta->has_owner = true;
      meta->owner = from->guid;
      meta->owner_strength = from->strength;
      Event e{Event::Kind::kOwnershipChanged, r.handle, from->guid};
      e.instance = s.info.key;
      PushEvent(e);
    }
    if (by_source && src != kNoSourceTimestamp) meta->last_source_ns = src;
    meta->last_writer = from->guid;
    const bool gone =
        s.info.status_info & (kStatusInfoDisposed | kStatusInfoUnregistered);
    if (q.deadline_ns != kInfiniteNanos) {
      // DEADLINE (§2.2.3.7): the next sample of the instance is due within
      // the period; a disposed/unregistered instance is not expected.
      meta->deadline_due =
          gone ? Timestamp::Never() : After(now, q.deadline_ns);
      if (meta->deadline_due < r.deadline_next) {
        r.deadline_next = meta->deadline_due;
      }
    }
    if ((s.info.status_info & kStatusInfoUnregistered) &&
        meta->owner == from->guid) {
      meta->has_owner = false;
    }
  }
  if (s.expiry < r.expiry_next) r.expiry_next = s.expiry;
  s.order = r.next_order++;
  s.instance_next = kNone;
  if (in.tail != kNone) {
    r.pool.slots[in.tail].instance_next = slot;
  } else {
    in.head = slot;
  }
  in.tail = slot;
  ++in.count;
  r.ring.Push(s.order, slot);
  bool was_empty = r.history_count == 0;
  ++r.history_count;
  ++counters_.samples_delivered;
  if (was_empty && !r.builtin) {
    PushEvent({Event::Kind::kDataAvailable, r.handle, s.info.writer});
  }
  return true;
}

// ---- Receiving
// ----------------------------------------------------------------------

void Participant::OnDatagram(std::span<const std::byte> bytes,
                             const Locator& source, Timestamp now) {
  maybe_pending_ = true;
  last_now_ = now;
  ++counters_.datagrams_received;
  counters_.bytes_received += bytes.size();
  if (gossip_ != nullptr && IsGossipMessage(bytes)) {
    gossip_->OnDatagram(bytes, source, now);
    PumpGossip(now);
    return;
  }
  MessageHeader header;
  if (ParseError e = ParseHeader(bytes, &header); e != ParseError::kOk) {
    ++counters_.parse_errors[static_cast<size_t>(e)];
    return;
  }
  if (header.prefix == config_.guid_prefix) {
    ++counters_.own_messages;
    return;
  }
  // Any traffic from a known participant renews its lease (as Cyclone does;
  // §8.5.3.3 only requires SPDP to).
  if (auto it = participants_.find(header.prefix); it != participants_.end()) {
    if (!it->second.via_gossip) {
      it->second.lease_expiry = After(now, it->second.data.lease_duration_ns);
      NoteLease(it->second.lease_expiry);
    }
    it->second.last_heard = now;
  }
  Receiver rx;
  rx.source = header.prefix;
  rx.vendor = header.vendor;
  rx.from = source;
  SubmessageIterator it(bytes);
  Submessage sm;
  while (it.Next(&sm)) HandleSubmessage(rx, sm, now);
  if (it.error() != ParseError::kOk) {
    ++counters_.parse_errors[static_cast<size_t>(it.error())];
  }
  ProcessBuiltinReaders(now);
}

void Participant::HandleSubmessage(Receiver& rx, const Submessage& sm,
                                   Timestamp now) {
  auto fail = [&](ParseError e) {
    ++counters_.parse_errors[static_cast<size_t>(e)];
  };
  switch (static_cast<SubmessageId>(sm.id)) {
    case SubmessageId::kPad:
      return;
    case SubmessageId::kInfoTs: {
      // §8.3.7.9: sets (or invalidates) the timestamp of what follows.
      InfoTsSubmessage ts;
      if (ParseError e = ParseInfoTs(sm, &ts); e != ParseError::kOk) {
        return fail(e);
      }
      rx.timestamp_ns = ts.invalidate ? kNoSourceTimestamp : ts.time.ToNanos();
      return;
    }
    case SubmessageId::kInfoSrc: {
      // §8.3.7.10: what follows comes from another participant.
      InfoSrcSubmessage src;
      if (ParseError e = ParseInfoSrc(sm, &src); e != ParseError::kOk) {
        return fail(e);
      }
      rx.source = src.prefix;
      rx.vendor = src.vendor;
      rx.timestamp_ns = kNoSourceTimestamp;
      return;
    }
    case SubmessageId::kInfoDst: {
      // §8.3.7.7: an unknown prefix means "everyone".
      InfoDstSubmessage dst;
      if (ParseError e = ParseInfoDst(sm, &dst); e != ParseError::kOk) {
        return fail(e);
      }
      rx.for_us = dst.prefix.is_unknown() || dst.prefix == config_.guid_prefix;
      return;
    }
    case SubmessageId::kInfoReply:
    case SubmessageId::kInfoReplyIp4: {
      // §8.3.7.11: we reply to the locators discovery gave us, so the
      // reply locators are validated and otherwise not used.
      InfoReplySubmessage reply;
      if (ParseError e = ParseInfoReply(sm, &reply); e != ParseError::kOk) {
        return fail(e);
      }
      return;
    }
    default:
      break;
  }
  bool known = true;
  ParseError e = ParseError::kOk;
  switch (static_cast<SubmessageId>(sm.id)) {
    case SubmessageId::kData: {
      DataSubmessage d;
      e = ParseData(sm, &d);
      if (e == ParseError::kOk && rx.for_us) HandleData(rx, d, now);
      break;
    }
    case SubmessageId::kDataFrag: {
      DataFragSubmessage d;
      e = ParseDataFrag(sm, &d);
      if (e == ParseError::kOk && rx.for_us) HandleDataFrag(rx, d, now);
      break;
    }
    case SubmessageId::kHeartbeat: {
      HeartbeatSubmessage hb;
      e = ParseHeartbeat(sm, &hb);
      if (e == ParseError::kOk && rx.for_us) HandleHeartbeat(rx, hb, now);
      break;
    }
    case SubmessageId::kAckNack: {
      AckNackSubmessage an;
      e = ParseAckNack(sm, &an);
      if (e == ParseError::kOk && rx.for_us) HandleAckNack(rx, an, now);
      break;
    }
    case SubmessageId::kGap: {
      GapSubmessage gap;
      e = ParseGap(sm, &gap);
      if (e == ParseError::kOk && rx.for_us) HandleGap(rx, gap, now);
      break;
    }
    case SubmessageId::kNackFrag: {
      NackFragSubmessage nf;
      e = ParseNackFrag(sm, &nf);
      if (e == ParseError::kOk && rx.for_us) HandleNackFrag(rx, nf, now);
      break;
    }
    case SubmessageId::kHeartbeatFrag: {
      HeartbeatFragSubmessage hf;
      e = ParseHeartbeatFrag(sm, &hf);
      if (e == ParseError::kOk && rx.for_us) HandleHeartbeatFrag(rx, hf, now);
      break;
    }
    default:
      known = false;
      break;
  }
  if (!known) {
    // §8.3.4.1: unknown submessage kinds are skipped.
    ++counters_.unknown_submessages;
    return;
  }
  if (e != ParseError::kOk) fail(e);
  if (!rx.for_us && e == ParseError::kOk) ++counters_.not_for_us;
}

void Participant::HandleData(Receiver& rx, const DataSubmessage& d,
                             Timestamp now) {
  bool has_key = false;
  KeyHash key;
  uint32_t status = 0;
  if (d.has_inline_qos &&
      !ParseInlineQos(d.inline_qos, d.endian, &has_key, &key, &status)) {
    ++counters_.inline_qos_rejected;  // §9.6.2.2.1 must-understand
    return;
  }
  if (d.writer_id == EntityId::SpdpWriter()) {
    HandleSpdp(rx, d, status, now);
    return;
  }
  Guid writer{rx.source, d.writer_id};
  bool delivered = false;
  for (auto& rp : readers_) {
    LocalReader& r = *rp;
    if (!r.active) continue;
    if (!d.reader_id.is_unknown() && d.reader_id != r.guid.entity) continue;
    for (WriterProxy& p : r.writers) {
      if (p.guid != writer) continue;
      DeliverToReader(r, p, rx, d, has_key ? &key : nullptr, status, now);
      delivered = true;
      break;
    }
  }
  if (!delivered) ++counters_.data_from_unknown_writer;
}

// §8.4.14.1 / §8.3.7.3: DATA_FRAG carries fragments [start, start + n) of
// a sample of sampleSize bytes. Each remote writer has a bounded
// reassembler; a complete sample is delivered like a DATA. A reliable
// reader repairs what is missing with NACK_FRAG (see BuildAckNack).
void Participant::HandleDataFrag(Receiver& rx, const DataFragSubmessage& d,
                                 Timestamp now) {
  ++counters_.fragments_received;
  bool has_key = false;
  KeyHash key;
  uint32_t status = 0;
  if (d.has_inline_qos &&
      !ParseInlineQos(d.inline_qos, d.endian, &has_key, &key, &status)) {
    ++counters_.inline_qos_rejected;
    return;
  }
  Guid writer{rx.source, d.writer_id};
  bool known = false;
  for (auto& rp : readers_) {
    LocalReader& r = *rp;
    if (!r.active) continue;
    if (!d.reader_id.is_unknown() && d.reader_id != r.guid.entity) continue;
    for (WriterProxy& p : r.writers) {
      if (p.guid != writer) continue;
      known = true;
      if (d.sn < p.expected ||
          (p.reliable && d.sn >= p.expected + kReorderWindow)) {
        ++counters_.data_duplicates;
        break;
      }
      if (p.reliable) {
        if (p.Holds(d.sn)) {
          ++counters_.data_duplicates;  // already complete (or GAPped)
          break;
        }
      }
      if (!p.frags) {
        // Made on the first fragment: most writers never fragment.
        internal::FragmentReassembler::Limits limits;
        limits.max_samples = config_.max_partial_samples_per_writer;
        limits.max_sample_bytes = config_.max_sample_bytes;
        limits.timeout_ns = config_.reassembly_timeout_ns;
        // Reliable: the sample closest to delivery wins; best effort: the
        // newest.
        limits.keep_lowest = p.reliable;
        p.frags = std::make_unique<internal::FragmentReassembler>(
            reassembly_budget_.get(), limits);
        r.any_frags = true;
      }
      internal::FragmentReassembler& fr = *p.frags;
      fr.DropBelow(p.expected);
      internal::FragmentInput in{d.sn,
                                 d.sample_size,
                                 d.fragment_size,
                                 d.fragment_start,
                                 d.fragments_in_submessage,
                                 d.fragments};
      internal::PartialSample* slot = nullptr;
      uint64_t evicted = fr.evictions();
      const uint64_t copied_before = fr.bytes_copied();
      internal::ReassemblyOutcome o = fr.Add(in, now, &slot);
      counters_.sample_bytes_copied += fr.bytes_copied() - copied_before;
      counters_.partial_samples_evicted += fr.evictions() - evicted;
      using internal::ReassemblyOutcome;
      if (o == ReassemblyOutcome::kDuplicate) {
        ++counters_.fragments_duplicate;
        break;
      }
      if (o != ReassemblyOutcome::kAccepted &&
          o != ReassemblyOutcome::kCompleted) {
        ++counters_.fragments_dropped;
        break;
      }
      internal::FragmentMeta& m = slot->meta;
      if (has_key) {
        m.has_key_hash = true;
        m.key_hash = key;
      }
      if (status != 0) m.status_info = status;
      if (d.has_key) m.key_only = true;
      if (rx.timestamp_ns != kNoSourceTimestamp) {
        m.source_time_ns = rx.timestamp_ns;
      }
      if (o == ReassemblyOutcome::kCompleted) {
        DataSubmessage whole;
        whole.reader_id = d.reader_id;
        whole.writer_id = d.writer_id;
        whole.sn = slot->sn;
        whole.has_data = !m.key_only;
        whole.has_key = m.key_only;
        whole.payload = slot->bytes();
        Receiver rx2 = rx;
        rx2.timestamp_ns = m.source_time_ns;
        ++counters_.samples_reassembled;
        // `m` lives in the slot, which DeliverToReader may hand over: copy
        // what it needs first.
        const internal::FragmentMeta meta = m;
        DeliverToReader(r, p, rx2, whole,
                        meta.has_key_hash ? &meta.key_hash : nullptr,
                        meta.status_info, now, &fr, slot);
        fr.Release(slot);  // not delivered (duplicate, full): drop it
      }
      break;
    }
  }
  if (!known) ++counters_.data_from_unknown_writer;
}

void Participant::DeliverToReader(LocalReader& r, WriterProxy& p, Receiver& rx,
                                  const DataSubmessage& d, const KeyHash* key,
                                  uint32_t status, Timestamp now,
                                  internal::FragmentReassembler* from,
                                  internal::PartialSample* part) {
  SequenceNumber sn = d.sn;
  if (sn < p.expected) {
    ++counters_.data_duplicates;
    return;
  }
  if (p.reliable && sn >= p.expected + kReorderWindow) {
    ++counters_.data_out_of_window;
    return;
  }
  if (p.reliable && sn > p.expected) {
    if (p.Holds(sn)) {
      ++counters_.data_duplicates;
      return;
    }
  }
  // Build the sample in a pool slot.
  KeyHash k;
  if (r.config.keyed) {
    if (key != nullptr) {
      k = *key;
    } else if (d.has_data && r.config.key_hash_from_payload &&
               r.config.key_hash_from_payload(d.payload, &k)) {
      // §9.6.4.8: derived from the payload, the peer sent none.
    } else {
      ++counters_.key_hash_failures;
      return;
    }
  }
  uint32_t slot = r.pool.Acquire();
  if (slot == kNone) {
    ++counters_.data_rejected_full;
    return;
  }
  Sample& s = r.pool.slots[slot];
  if (from != nullptr && part != nullptr) {
    // Reassembled: the partial sample's buffer becomes the history's (no
    // second copy of a large sample); d.payload is not used after this.
    from->ReleaseInto(part, &s.data);
  } else {
    s.data.assign(d.payload.begin(), d.payload.end());
    counters_.sample_bytes_copied += d.payload.size();
  }
  s.key_only = !d.has_data;
  s.info.writer = p.guid;
  s.info.sn = sn;
  s.info.source_time_ns = rx.timestamp_ns;
  s.info.key = k;
  s.info.status_info = status;
  s.info.valid_data = d.has_data;
  s.expiry = Timestamp::Never();
  // LIVELINESS: data asserts its writer, whatever the kind (§2.2.3.11).
  if (!r.builtin) RenewWriterProxy(r, p, now);
  if (!p.reliable) {
    // Best effort (§8.4.11): deliver anything newer; count what we skipped.
    if (!StoreInHistory(r, slot, &p, now)) {
      r.pool.Release(slot);
      return;
    }
    // Skipped SNs count as lost, except before the first sample (a reader
    // joining a writer that has been running for a while).
    if (p.hb_seen)
      counters_.samples_lost += static_cast<uint64_t>(sn - p.expected);
    p.hb_seen = true;  // best effort: "has seen data"
    p.expected = sn + 1;
    return;
  }
  if (sn == p.expected && !(p.skip_history && !p.hb_seen)) {
    if (!StoreInHistory(r, slot, &p, now)) {
      r.pool.Release(slot);  // not accepted: the writer will resend it
      return;
    }
    ++p.expected;
    DrainReorder(r, p, now);
    return;
  }
  // Out of order (§8.4.12.1): keep it until the gap before it is filled.
  uint32_t w = static_cast<uint32_t>(sn % kReorderWindow);
  p.EnsureWindow();
  if (p.window[w] != kNone && p.window[w] != kGapSlot) {
    r.pool.Release(p.window[w]);  // a stale entry from an older round
  }
  p.window[w] = slot;
  p.window_sn[w] = sn;
  (void)now;
}

void Participant::DrainReorder(LocalReader& r, WriterProxy& p, Timestamp now) {
  if (p.skip_history && !p.hb_seen) return;  // see WriterProxy
  for (;;) {
    if (!p.Holds(p.expected)) return;
    uint32_t w = static_cast<uint32_t>(p.expected % kReorderWindow);
    uint32_t slot = p.window[w];
    if (slot != kGapSlot && !StoreInHistory(r, slot, &p, now))
      return;  // full: stop
    p.window[w] = kNone;
    ++p.expected;
  }
}

void Participant::ScheduleAck(LocalReader& r, WriterProxy& p, Timestamp now) {
  Timestamp due = After(now, config_.heartbeat_response_delay_ns);
  if (due < p.ack_deadline) p.ack_deadline = due;
  r.ack_next = std::min(r.ack_next, p.ack_deadline);
}

// §8.4.12.1 (reliable reader, WriterProxy): on HEARTBEAT, SNs below firstSN
// are irrelevant, and the reader answers with an ACKNACK unless the
// heartbeat is final and nothing is missing.
void Participant::HandleHeartbeat(Receiver& rx, const HeartbeatSubmessage& hb,
                                  Timestamp now) {
  ++counters_.heartbeats_received;
  Guid writer{rx.source, hb.writer_id};
  for (auto& rp : readers_) {
    LocalReader& r = *rp;
    if (!r.active) continue;
    if (!hb.reader_id.is_unknown() && hb.reader_id != r.guid.entity) continue;
    for (WriterProxy& p : r.writers) {
      if (p.guid != writer) continue;
      if (!p.reliable) {
        // A best-effort reader takes only the liveliness from a heartbeat.
        if (hb.liveliness && !r.builtin) RenewWriterProxy(r, p, now);
        break;
      }
      if (p.hb_seen && hb.count <= p.last_hb_count) break;  // stale / dup
      const bool first_heartbeat = !p.hb_seen;
      p.hb_seen = true;
      p.last_hb_count = hb.count;
      // LIVELINESS: a heartbeat shows an AUTOMATIC writer alive; a manual
      // one asserts with the liveliness flag (§8.3.7.5).
      if (!r.builtin &&
          (p.liveliness == LivelinessKind::kAutomatic || hb.liveliness)) {
        RenewWriterProxy(r, p, now);
      }
      if (first_heartbeat && p.skip_history && hb.last_sn + 1 > p.expected) {
        // Everything up to lastSN predates our match: irrelevant to a
        // volatile reader, not lost.
        for (SequenceNumber s = p.expected;
             s <= hb.last_sn && s < p.expected + kReorderWindow; ++s) {
          uint32_t w = static_cast<uint32_t>(s % kReorderWindow);
          if (p.Holds(s)) {
            if (p.window[w] != kGapSlot) r.pool.Release(p.window[w]);
            p.window[w] = kNone;
          }
        }
        p.expected = hb.last_sn + 1;
        if (p.frags) p.frags->DropBelow(p.expected);
      }
      if (first_heartbeat) DrainReorder(r, p, now);
      if (hb.first_sn > p.expected) {
        for (SequenceNumber s = p.expected;
             s < hb.first_sn && s < p.expected + kReorderWindow; ++s) {
          uint32_t w = static_cast<uint32_t>(s % kReorderWindow);
          if (p.Holds(s)) {
            if (p.window[w] != kGapSlot) r.pool.Release(p.window[w]);
            p.window[w] = kNone;
          } else if (!r.builtin) {
            ++counters_.samples_lost;
          }
        }
        p.expected = hb.first_sn;
        DrainReorder(r, p, now);
      }
      if (p.frags) p.frags->DropBelow(p.expected);
      p.hb_last = std::max(p.hb_last, hb.last_sn);
      bool missing = false;
      for (SequenceNumber s = p.expected;
           s <= p.hb_last && s < p.expected + kReorderWindow; ++s) {
        if (!p.Holds(s)) {
          missing = true;
          break;
        }
      }
      if (!hb.final_flag || missing) ScheduleAck(r, p, now);
      break;
    }
  }
}

// §8.4.12.1: a GAP marks SNs irrelevant: [gapStart, gapList.base - 1] and
// the set bits of gapList.
void Participant::HandleGap(Receiver& rx, const GapSubmessage& gap,
                            Timestamp now) {
  ++counters_.gaps_received;
  Guid writer{rx.source, gap.writer_id};
  for (auto& rp : readers_) {
    LocalReader& r = *rp;
    if (!r.active) continue;
    if (!gap.reader_id.is_unknown() && gap.reader_id != r.guid.entity) continue;
    for (WriterProxy& p : r.writers) {
      if (p.guid != writer) continue;
      auto mark = [&](SequenceNumber s) {
        if (s < p.expected || s >= p.expected + kReorderWindow) return;
        uint32_t w = static_cast<uint32_t>(s % kReorderWindow);
        if (p.Holds(s)) return;  // have data
        p.EnsureWindow();
        p.window[w] = kGapSlot;
        p.window_sn[w] = s;
      };
      SequenceNumber range_end = gap.gap_list.base - 1;
      if (!p.reliable) {
        if (gap.gap_start <= p.expected && range_end >= p.expected) {
          p.expected = range_end + 1;
        }
        break;
      }
      if (gap.gap_start <= p.expected && range_end >= p.expected) {
        for (SequenceNumber s = p.expected;
             s <= range_end && s < p.expected + kReorderWindow; ++s) {
          uint32_t w = static_cast<uint32_t>(s % kReorderWindow);
          if (p.Holds(s)) {
            if (p.window[w] != kGapSlot) r.pool.Release(p.window[w]);
            p.window[w] = kNone;
          }
        }
        p.expected = range_end + 1;
      } else {
        for (SequenceNumber s = gap.gap_start; s <= range_end; ++s) {
          if (s >= p.expected + kReorderWindow) break;
          mark(s);
        }
      }
      for (uint32_t i = 0; i < gap.gap_list.num_bits; ++i) {
        SequenceNumber s = gap.gap_list.base + i;
        if (gap.gap_list.Contains(s)) mark(s);
      }
      DrainReorder(r, p, now);
      (void)now;
      break;
    }
  }
}

// §8.4.9.2 (reliable StatefulWriter, ReaderProxy): ACKNACK base - 1 is
// acknowledged; set bits are requested again.
void Participant::HandleAckNack(Receiver& rx, const AckNackSubmessage& an,
                                Timestamp now) {
  ++counters_.acknacks_received;
  Guid reader{rx.source, an.reader_id};
  for (auto& wp : writers_) {
    LocalWriter& w = *wp;
    if (w.guid.entity != an.writer_id || !w.active) continue;
    for (ReaderProxy& p : w.readers) {
      if (p.guid != reader || !p.reliable) continue;
      if (p.any_acknack && an.count <= p.last_acknack_count) return;
      p.any_acknack = true;
      p.last_acknack_count = an.count;
      SequenceNumber acked = std::min(an.state.base - 1, w.last_sn());
      if (acked > p.acked) p.acked = acked;
      p.requested = SequenceNumberSet{};
      p.requested.base = an.state.base;
      p.has_requests = false;
      for (uint32_t i = 0; i < an.state.num_bits; ++i) {
        SequenceNumber s = an.state.base + i;
        if (s > w.last_sn()) break;
        if (an.state.Contains(s)) {
          p.requested.Add(s);
          p.has_requests = true;
          w.repair_maybe = true;
        }
      }
      // §8.3.7.1: an ACKNACK without the FinalFlag asks for a response,
      // even when it acknowledges everything. Cyclone's reader sends such a
      // pre-emptive ACKNACK after it matches us and, until it has seen a
      // HEARTBEAT, it does not know where our sequence starts: the first
      // HEARTBEAT it sees makes [1, lastSN] a gap for what it has not
      // received whole. Left unanswered, the HEARTBEAT after our first
      // fragmented sample was that first one, and a sample with a lost
      // fragment was dropped instead of repaired (issue 11).
      if (!p.has_requests && !an.final_flag) {
        p.heartbeat_due = true;
        w.repair_maybe = true;
      }
      PurgeAcked(w);
      (void)now;
      return;
    }
    return;
  }
}

// §8.4.9.2 / §8.3.7.8: a reliable reader asks for fragments of one sample.
// Requests are kept per reader proxy (bounded) and answered by BuildRepair.
void Participant::HandleNackFrag(Receiver& rx, const NackFragSubmessage& nf,
                                 Timestamp now) {
  ++counters_.nack_frags_received;
  Guid reader{rx.source, nf.reader_id};
  for (auto& wp : writers_) {
    LocalWriter& w = *wp;
    if (w.guid.entity != nf.writer_id || !w.active) continue;
    for (ReaderProxy& p : w.readers) {
      if (p.guid != reader || !p.reliable) continue;
      if (p.any_nackfrag && nf.count <= p.last_nackfrag_count) return;
      p.any_nackfrag = true;
      p.last_nackfrag_count = nf.count;
      if (nf.sn > w.last_sn() || nf.sn <= p.acked || nf.state.num_bits == 0) {
        return;
      }
      for (uint32_t i = 0; i < p.frag_request_count; ++i) {
        FragRequest& q = p.frag_requests[i];
        if (q.sn == nf.sn && q.set.base == nf.state.base) {
          for (size_t k = 0; k < q.set.bitmap.size(); ++k) {
            q.set.bitmap[k] |= nf.state.bitmap[k];
          }
          q.set.num_bits = std::max(q.set.num_bits, nf.state.num_bits);
          return;
        }
      }
      if (p.frag_requests.empty()) p.frag_requests.resize(kMaxFragRequests);
      if (p.frag_request_count == kMaxFragRequests) {
        ++counters_.nack_frags_dropped;
        return;
      }
      p.frag_requests[p.frag_request_count++] = {nf.sn, nf.state};
      w.repair_maybe = true;
      (void)now;
      return;
    }
    return;
  }
}

// §8.3.7.6: fragments up to lastFragmentNum of writerSN were sent; a reader
// missing some of them answers with NACK_FRAG (BuildAckNack).
void Participant::HandleHeartbeatFrag(Receiver& rx,
                                      const HeartbeatFragSubmessage& hf,
                                      Timestamp now) {
  ++counters_.heartbeat_frags_received;
  Guid writer{rx.source, hf.writer_id};
  for (auto& rp : readers_) {
    LocalReader& r = *rp;
    if (!r.active) continue;
    if (!hf.reader_id.is_unknown() && hf.reader_id != r.guid.entity) continue;
    for (WriterProxy& p : r.writers) {
      if (p.guid != writer || !p.reliable) continue;
      if (p.any_hbfrag && hf.count <= p.last_hbfrag_count) break;
      p.any_hbfrag = true;
      p.last_hbfrag_count = hf.count;
      if (hf.sn < p.expected || hf.sn >= p.expected + kReorderWindow) break;
      if (p.Holds(hf.sn)) break;  // have it
      p.hbfrag_sn = hf.sn;
      p.hbfrag_last = hf.last_fragment;
      internal::PartialSample* s = p.frags ? p.frags->Find(hf.sn) : nullptr;
      FragmentNumberSet missing;
      if (s == nullptr || p.frags->Missing(*s, 1, hf.last_fragment, &missing)) {
        ScheduleAck(r, p, now);
      }
      break;
    }
  }
}

// ---- SPDP
// -----------------------------------------------------------------------------

void Participant::HandleSpdp(Receiver& rx, const DataSubmessage& d,
                             uint32_t status, Timestamp now) {
  if (status & (kStatusInfoDisposed | kStatusInfoUnregistered)) {
    // §8.5.3: the participant left.
    if (participants_.contains(rx.source)) {
      RemoveParticipant(rx.source);
    }
    return;
  }
  if (!d.has_data) return;
  // The periodic announcement of a known participant is almost always the
  // same bytes: then it only renews the lease (no parse, no allocation).
  if (auto known = participants_.find(rx.source);
      known != participants_.end() &&
      known->second.announcement.size() == d.payload.size() &&
      std::equal(d.payload.begin(), d.payload.end(),
                 known->second.announcement.begin())) {
    ++counters_.spdp_unchanged;
    known->second.lease_expiry =
        After(now, known->second.data.lease_duration_ns);
    NoteLease(known->second.lease_expiry);
    return;
  }
  ParticipantData data;
  DiscoveryParseError e = ParseParticipant(d.payload, &data);
  if (e != DiscoveryParseError::kOk) {
    ++counters_.discovery_rejected[static_cast<size_t>(e)];
    return;
  }
  if (data.guid_prefix == config_.guid_prefix) {
    ++counters_.own_messages;
    return;
  }
  if (gossip_ != nullptr && data.gossip) {
    // A gossip peer: gossip brings its record (the announcement is only a
    // way in, if it is not a member yet).
    if (!participants_.contains(data.guid_prefix)) {
      for (const Locator& l : MetatrafficLocators(data)) {
        gossip_->AddContact(l);
        break;
      }
    }
    return;
  }
  if (data.has_domain_id && data.domain_id != config_.domain_id) {
    ++counters_.domain_mismatch;
    return;
  }
  if (!data.domain_tag.empty()) {  // §8.5.3: tags must match; ours is ""
    ++counters_.domain_mismatch;
    return;
  }
  // Only an announcement from the participant itself is cached (keyed by
  // the sender's prefix above).
  const bool own = data.guid_prefix == rx.source;
  auto it = participants_.find(data.guid_prefix);
  if (it != participants_.end()) {
    it->second.data = std::move(data);
    it->second.lease_expiry = After(now, it->second.data.lease_duration_ns);
    NoteLease(it->second.lease_expiry);
    if (own) {
      it->second.announcement.assign(d.payload.begin(), d.payload.end());
    }
    return;
  }
  if (participants_.size() >= config_.max_remote_participants) {
    ++counters_.spdp_participant_limit;
    return;
  }
  AddParticipant(data, now);
  if (own && participants_.contains(data.guid_prefix)) {
    participants_[data.guid_prefix].announcement.assign(d.payload.begin(),
                                                        d.payload.end());
  }
}

void Participant::AddParticipant(const ParticipantData& data, Timestamp now) {
  RemoteParticipantInfo info;
  info.data = data;
  info.lease_expiry = After(now, data.lease_duration_ns);
  NoteLease(info.lease_expiry);
  info.last_heard = now;
  GuidPrefix prefix = data.guid_prefix;
  participants_.emplace(prefix, std::move(info));
  PushEvent({Event::Kind::kParticipantDiscovered, 0,
             Guid{prefix, EntityId::Participant()}});
  // Tell the newcomer about us at once rather than at the next period.
  for (const Locator& l : MetatrafficLocators(data)) {
    if (spdp_unicast_pending_.size() >= kMaxSpdpUnicastPending) break;
    if (std::find(spdp_unicast_pending_.begin(), spdp_unicast_pending_.end(),
                  l) == spdp_unicast_pending_.end()) {
      spdp_unicast_pending_.push_back(l);
    }
  }
  MatchBuiltins(prefix, data, now);
}

std::vector<Locator> Participant::MetatrafficLocators(
    const ParticipantData& p) const {
  std::vector<Locator> out;
  for (const Locator& l : p.metatraffic_unicast) {
    if (l.is_udp_v4() && l.port != 0 && l.port <= 65535) out.push_back(l);
  }
  if (out.empty()) {
    for (const Locator& l : p.metatraffic_multicast) {
      if (l.is_udp_v4() && l.port != 0 && l.port <= 65535) out.push_back(l);
    }
  }
  return out;
}

std::vector<Locator> Participant::UserLocators(const EndpointData& e) const {
  std::vector<Locator> out;
  auto take = [&](const std::vector<Locator>& ls) {
    for (const Locator& l : ls) {
      if (l.is_udp_v4() && l.port != 0 && l.port <= 65535 &&
          std::find(out.begin(), out.end(), l) == out.end()) {
        out.push_back(l);
      }
    }
  };
  take(e.unicast);
  if (out.empty()) {
    auto it = participants_.find(e.guid.prefix);
    if (it != participants_.end()) {
      take(it->second.data.default_unicast);
      if (out.empty()) take(e.multicast);
      if (out.empty()) take(it->second.data.default_multicast);
    }
  }
  return out;
}

// §8.5.5.1: pair our SEDP endpoints with the remote's, as its
// BuiltinEndpointSet announces them.
void Participant::MatchBuiltins(const GuidPrefix& prefix,
                                const ParticipantData& data, Timestamp now) {
  std::vector<Locator> locs = MetatrafficLocators(data);
  uint32_t set = data.builtin_endpoints;
  if (set & builtin_endpoint::kPublicationsDetector) {
    AddReaderProxy(*writers_[sedp_pub_writer_],
                   Guid{prefix, EntityId::SedpPublicationsReader()}, locs, true,
                   true, false, now);
  }
  if (set & builtin_endpoint::kSubscriptionsDetector) {
    AddReaderProxy(*writers_[sedp_sub_writer_],
                   Guid{prefix, EntityId::SedpSubscriptionsReader()}, locs,
                   true, true, false, now);
  }
  if (set & builtin_endpoint::kPublicationsAnnouncer) {
    AddWriterProxy(*readers_[sedp_pub_reader_],
                   Guid{prefix, EntityId::SedpPublicationsWriter()}, locs, true,
                   false, nullptr, now);
  }
  if (set & builtin_endpoint::kSubscriptionsAnnouncer) {
    AddWriterProxy(*readers_[sedp_sub_reader_],
                   Guid{prefix, EntityId::SedpSubscriptionsWriter()}, locs,
                   true, false, nullptr, now);
  }
  if (set & builtin_endpoint::kParticipantMessageReader) {
    AddReaderProxy(*writers_[pmd_writer_],
                   Guid{prefix, EntityId::ParticipantMessageReader()}, locs,
                   true, true, false, now);
  }
  if (set & builtin_endpoint::kParticipantMessageWriter) {
    AddWriterProxy(*readers_[pmd_reader_],
                   Guid{prefix, EntityId::ParticipantMessageWriter()}, locs,
                   true, false, nullptr, now);
  }
}

void Participant::AddReaderProxy(LocalWriter& w, const Guid& reader,
                                 std::vector<Locator> locators, bool reliable,
                                 bool transient_local, bool expects_inline_qos,
                                 Timestamp now) {
  for (const ReaderProxy& p : w.readers) {
    if (p.guid == reader) return;
  }
  ReaderProxy p;
  p.guid = reader;
  p.locators = std::move(locators);
  p.reliable = reliable;
  p.transient_local = transient_local;
  p.expects_inline_qos = expects_inline_qos;
  // §8.7.2.2.1 / DDS durability: a volatile reader gets only what is
  // written after it matched; a transient-local writer's history goes to
  // transient-local readers.
  bool history_for_reader =
      transient_local && w.config.qos.durability != DurabilityKind::kVolatile;
  p.volatile_floor = history_for_reader ? 0 : w.last_sn();
  p.acked = history_for_reader ? w.first_sn() - 1 : w.last_sn();
  p.gap_floor_due = reliable && p.volatile_floor > 0;
  p.heartbeat_due = reliable;  // announce the range at once
  w.repair_maybe |= p.heartbeat_due || p.gap_floor_due;
  w.readers.push_back(std::move(p));
  (void)now;
}

void Participant::AddWriterProxy(LocalReader& r, const Guid& writer,
                                 std::vector<Locator> locators, bool reliable,
                                 bool skip_history,
                                 const EndpointQos* remote_qos, Timestamp now) {
  for (const WriterProxy& p : r.writers) {
    if (p.guid == writer) return;
  }
  WriterProxy p;
  p.guid = writer;
  p.locators = std::move(locators);
  p.reliable = reliable;
  p.skip_history = reliable && skip_history;
  if (remote_qos != nullptr) {
    p.lifespan_ns = remote_qos->lifespan_ns;
    p.strength = remote_qos->ownership_strength;
    p.liveliness = remote_qos->liveliness;
    p.liveliness_lease_ns = remote_qos->liveliness_lease_ns;
  }
  // The match counts as the first assertion: the lease runs from here.
  p.last_asserted = now;
  if (p.liveliness_lease_ns != kInfiniteNanos) {
    r.liveliness_next =
        std::min(r.liveliness_next, After(now, p.liveliness_lease_ns));
  }
  if (reliable) {
    r.pool.limit += kReorderWindow;
    // A pre-emptive ACKNACK (nothing acknowledged, nothing requested, not
    // final) asks the writer for a heartbeat straight away.
    p.ack_deadline = now;
    r.ack_next = std::min(r.ack_next, now);
  }
  r.writers.push_back(std::move(p));
}

void Participant::RemoveParticipant(const GuidPrefix& prefix) {
  // Remote endpoints of that participant.
  std::vector<Guid> gone;
  for (const auto& [g, e] : remote_endpoints_) {
    if (g.prefix == prefix) gone.push_back(g);
  }
  for (const Guid& g : gone) {
    UnmatchRemoteEndpoint(g);
    bool pub = g.entity.is_writer();
    remote_endpoints_.erase(g);
    PushEvent(
        {pub ? Event::Kind::kPublicationLost : Event::Kind::kSubscriptionLost,
         0, g});
  }
  // Built-in proxies.
  for (auto& wp : writers_) {
    if (!wp->builtin) continue;
    auto& v = wp->readers;
    v.erase(std::remove_if(
                v.begin(), v.end(),
                [&](const ReaderProxy& p) { return p.guid.prefix == prefix; }),
            v.end());
  }
  for (auto& rp : readers_) {
    if (!rp->builtin) continue;
    LocalReader& r = *rp;
    for (auto it = r.writers.begin(); it != r.writers.end();) {
      if (it->guid.prefix == prefix) {
        for (uint32_t s : it->window) {
          if (s != kNone && s != kGapSlot) r.pool.Release(s);
        }
        if (it->reliable) r.pool.limit -= kReorderWindow;
        it = r.writers.erase(it);
      } else {
        ++it;
      }
    }
  }
  participants_.erase(prefix);
  PushEvent({Event::Kind::kParticipantLost, 0,
             Guid{prefix, EntityId::Participant()}});
}

// ---- SEDP
// ------------------------------------------------------------------------------

void Participant::ProcessBuiltinReaders(Timestamp now) {
  for (uint32_t idx : {sedp_pub_reader_, sedp_sub_reader_, pmd_reader_}) {
    LocalReader& r = *readers_[idx];
    bool pub = idx == sedp_pub_reader_;
    while (r.history_count > 0) {
      if (r.loaned != kNone) {
        r.pool.Release(r.loaned);
        r.loaned = kNone;
      }
      const SampleRing::Entry* e = r.ring.Front();
      if (e == nullptr) break;
      uint32_t slot = e->slot;
      r.ring.PopFront();
      --r.history_count;
      auto it = r.instances.find(r.pool.slots[slot].info.key);
      if (it != r.instances.end()) {
        InstanceState& in = it->second;
        in.head = r.pool.slots[slot].instance_next;
        if (in.head == kNone) in.tail = kNone;
        if (--in.count == 0) r.instances.erase(it);
      }
      r.loaned = slot;
      ReceivedSample s;
      s.info = r.pool.slots[slot].info;
      s.payload = r.pool.slots[slot].data;
      if (idx == pmd_reader_) {
        HandleParticipantMessage(s, now);
      } else {
        HandleSedp(s, pub, now);
      }
    }
  }
}

// §8.4.13 / §9.6.2.1: ParticipantMessageData {GuidPrefix
// participantGuidPrefix; octet kind[4]; sequence<octet> data}, keyed by
// prefix and kind, as plain CDR (either byte order).
void Participant::WriteParticipantMessage(uint32_t kind, Timestamp now) {
  scratch_.clear();
  for (std::byte b : {std::byte{0}, std::byte{1}, std::byte{0}, std::byte{0}}) {
    scratch_.push_back(b);  // CDR_LE
  }
  KeyHash key;
  for (size_t i = 0; i < 12; ++i) {
    key.bytes[i] = config_.guid_prefix.bytes[i];
    scratch_.push_back(std::byte(config_.guid_prefix.bytes[i]));
  }
  for (int i = 0; i < 4; ++i) {
    key.bytes[12 + i] = static_cast<uint8_t>(kind >> (24 - 8 * i));
    scratch_.push_back(std::byte(key.bytes[12 + i]));
  }
  // data: a 4-byte counter, so consecutive updates differ.
  ++pmd_count_;
  for (uint32_t v : {4u, pmd_count_}) {
    for (int i = 0; i < 4; ++i)
      scratch_.push_back(std::byte((v >> (8 * i)) & 0xff));
  }
  if (WriteInternal(*writers_[pmd_writer_], scratch_, key, kNoSourceTimestamp,
                    0, false, now)
          .ok()) {
    ++counters_.participant_messages_sent;
  }
}

void Participant::HandleParticipantMessage(const ReceivedSample& s,
                                           Timestamp now) {
  if (!s.info.valid_data || s.payload.size() < 4 + 16) return;
  ++counters_.participant_messages_received;
  GuidPrefix prefix;
  for (size_t i = 0; i < 12; ++i) {
    prefix.bytes[i] = std::to_integer<uint8_t>(s.payload[4 + i]);
  }
  uint32_t kind = 0;
  for (size_t i = 0; i < 4; ++i) {
    kind = kind << 8 | std::to_integer<uint8_t>(s.payload[16 + i]);
  }
  // Only the participant itself speaks for its writers.
  if (prefix != s.info.writer.prefix) return;
  const bool manual = kind == kPmdManual;
  if (!manual && kind != kPmdAutomatic) return;  // vendor kinds: ignore
  for (auto& rp : readers_) {
    if (rp->builtin) continue;
    for (WriterProxy& p : rp->writers) {
      if (p.guid.prefix != prefix) continue;
      // A manual update asserts MANUAL_BY_PARTICIPANT writers; an automatic
      // one AUTOMATIC writers (§8.4.13.1).
      bool applies = manual
                         ? p.liveliness == LivelinessKind::kManualByParticipant
                         : p.liveliness == LivelinessKind::kAutomatic;
      if (applies) RenewWriterProxy(*rp, p, now);
    }
  }
}

void Participant::HandleSedp(const ReceivedSample& s, bool publication,
                             Timestamp now) {
  if (s.info.status_info & (kStatusInfoDisposed | kStatusInfoUnregistered)) {
    Guid g;
    EndpointData d;
    if (!s.payload.empty() &&
        ParseEndpoint(s.payload, &d) == DiscoveryParseError::kOk) {
      g = d.guid;
    } else {
      g = Guid::FromBytes(s.info.key.bytes.data());
    }
    auto it = remote_endpoints_.find(g);
    if (it == remote_endpoints_.end()) return;
    UnmatchRemoteEndpoint(g);
    remote_endpoints_.erase(it);
    PushEvent({publication ? Event::Kind::kPublicationLost
                           : Event::Kind::kSubscriptionLost,
               0, g});
    return;
  }
  EndpointData d;
  DiscoveryParseError e = ParseEndpoint(s.payload, &d);
  if (e != DiscoveryParseError::kOk) {
    ++counters_.discovery_rejected[static_cast<size_t>(e)];
    return;
  }
  if (publication != d.guid.entity.is_writer()) {
    ++counters_.discovery_rejected[static_cast<size_t>(
        DiscoveryParseError::kBadValue)];
    return;
  }
  if (!participants_.contains(d.guid.prefix)) {
    ++counters_.sedp_unknown_participant;
    return;
  }
  auto it = remote_endpoints_.find(d.guid);
  if (it != remote_endpoints_.end()) {
    // An update (e.g. set_qos). Rematch only if what matching looks at
    // changed: a rematch restarts the reliable protocol state.
    const EndpointData& old = it->second->data;
    bool same = old.topic_name == d.topic_name &&
                old.type_name == d.type_name &&
                old.qos.partitions == d.qos.partitions &&
                old.qos.reliability == d.qos.reliability &&
                old.qos.durability == d.qos.durability &&
                old.qos.ownership == d.qos.ownership;
    if (!same) UnmatchRemoteEndpoint(d.guid);
    it->second->data = std::move(d);
    it->second->locators = UserLocators(it->second->data);
    if (!same) MatchRemoteEndpoint(it->first, now);
    return;
  }
  if (remote_endpoints_.size() >= config_.max_remote_endpoints) {
    ++counters_.sedp_endpoint_limit;
    return;
  }
  auto re = std::make_unique<RemoteEndpoint>();
  re->locators = UserLocators(d);
  re->data = std::move(d);
  Guid g = re->data.guid;
  remote_endpoints_.emplace(g, std::move(re));
  PushEvent({publication ? Event::Kind::kPublicationDiscovered
                         : Event::Kind::kSubscriptionDiscovered,
             0, g});
  MatchRemoteEndpoint(g, now);
}

void Participant::MatchRemoteEndpoint(const Guid& guid, Timestamp now) {
  auto it = remote_endpoints_.find(guid);
  if (it == remote_endpoints_.end()) return;
  const RemoteEndpoint& re = *it->second;
  if (guid.entity.is_writer()) {
    for (uint32_t i = 0; i < readers_.size(); ++i) {
      if (!readers_[i]->builtin && readers_[i]->active) {
        TryMatch(kNone, i, re, now);
      }
    }
  } else {
    for (uint32_t i = 0; i < writers_.size(); ++i) {
      if (!writers_[i]->builtin && writers_[i]->active) {
        TryMatch(i, kNone, re, now);
      }
    }
  }
}

void Participant::MatchLocalWriter(uint32_t index, Timestamp now) {
  for (const auto& [g, re] : remote_endpoints_) {
    if (g.entity.is_reader()) TryMatch(index, kNone, *re, now);
  }
}

void Participant::MatchLocalReader(uint32_t index, Timestamp now) {
  for (const auto& [g, re] : remote_endpoints_) {
    if (g.entity.is_writer()) TryMatch(kNone, index, *re, now);
  }
}

// Matching (DDS 1.4 §2.2.3, RTPS 2.5 §8.5.5.2): same topic and type, a
// shared partition, request-offered compatible QoS.
void Participant::TryMatch(uint32_t wi, uint32_t ri, const RemoteEndpoint& re,
                           Timestamp now) {
  const EndpointData& d = re.data;
  auto handle_of = [&](bool writer, uint32_t index) -> EndpointHandle {
    for (size_t h = 0; h < handles_.size(); ++h) {
      if (handles_[h].first == writer && handles_[h].second == index) {
        return static_cast<EndpointHandle>(h + 1);
      }
    }
    return 0;
  };
  if (wi != kNone) {
    LocalWriter& w = *writers_[wi];
    if (w.config.topic_name != d.topic_name) return;
    EndpointHandle h = handle_of(true, wi);
    if (w.config.type_name != d.type_name) {
      PushEvent(
          {Event::Kind::kIncompatibleQos, h, d.guid, QosPolicyId::kTypeName});
      return;
    }
    if (!PartitionsMatch(w.config.qos.partitions, d.qos.partitions)) return;
    QosPolicyId bad = CheckCompatible(w.config.qos, d.qos);
    if (bad != QosPolicyId::kNone) {
      PushEvent({Event::Kind::kIncompatibleQos, h, d.guid, bad});
      return;
    }
    for (const ReaderProxy& p : w.readers) {
      if (p.guid == d.guid) return;
    }
    AddReaderProxy(w, d.guid, re.locators,
                   d.qos.reliability == ReliabilityKind::kReliable,
                   d.qos.durability != DurabilityKind::kVolatile,
                   d.expects_inline_qos, now);
    PushEvent({Event::Kind::kWriterMatched, h, d.guid});
  } else {
    LocalReader& r = *readers_[ri];
    if (r.config.topic_name != d.topic_name) return;
    EndpointHandle h = handle_of(false, ri);
    if (r.config.type_name != d.type_name) {
      PushEvent(
          {Event::Kind::kIncompatibleQos, h, d.guid, QosPolicyId::kTypeName});
      return;
    }
    if (!PartitionsMatch(r.config.qos.partitions, d.qos.partitions)) return;
    QosPolicyId bad = CheckCompatible(d.qos, r.config.qos);
    if (bad != QosPolicyId::kNone) {
      PushEvent({Event::Kind::kIncompatibleQos, h, d.guid, bad});
      return;
    }
    for (const WriterProxy& p : r.writers) {
      if (p.guid == d.guid) return;
    }
    // Reliable only if both sides are (a best-effort reader of a reliable
    // writer sends no ACKNACKs).
    bool reliable = r.config.qos.reliability == ReliabilityKind::kReliable;
    bool skip_history = r.config.qos.durability == DurabilityKind::kVolatile &&
                        d.qos.durability != DurabilityKind::kVolatile;
    AddWriterProxy(r, d.guid, re.locators, reliable, skip_history, &d.qos, now);
    PushEvent({Event::Kind::kReaderMatched, h, d.guid});
  }
}

void Participant::UnmatchRemoteEndpoint(const Guid& guid) {
  for (size_t h = 0; h < handles_.size(); ++h) {
    auto [is_writer, index] = handles_[h];
    if (is_writer && guid.entity.is_reader()) {
      auto& v = writers_[index]->readers;
      auto it = std::find_if(v.begin(), v.end(), [&](const ReaderProxy& p) {
        return p.guid == guid;
      });
      if (it != v.end()) {
        v.erase(it);
        PushEvent({Event::Kind::kWriterUnmatched,
                   static_cast<EndpointHandle>(h + 1), guid});
      }
    } else if (!is_writer && guid.entity.is_writer()) {
      LocalReader& r = *readers_[index];
      auto it =
          std::find_if(r.writers.begin(), r.writers.end(),
                       [&](const WriterProxy& p) { return p.guid == guid; });
      if (it != r.writers.end()) {
        for (uint32_t s : it->window) {
          if (s != kNone && s != kGapSlot) r.pool.Release(s);
        }
        if (it->reliable) r.pool.limit -= kReorderWindow;
        r.writers.erase(it);
        ReleaseOwnership(r, guid);
        PushEvent({Event::Kind::kReaderUnmatched,
                   static_cast<EndpointHandle>(h + 1), guid});
      }
    }
  }
}

// ---- QoS: liveliness, ownership, deadlines, lifespan
// -------------------------

EndpointHandle Participant::HandleOf(bool writer, uint32_t index) const {
  return writer ? writers_[index]->handle : readers_[index]->handle;
}

void Participant::RenewWriterProxy(LocalReader& r, WriterProxy& p,
                                   Timestamp now) {
  p.last_asserted = now;
  if (p.liveliness_lease_ns == kInfiniteNanos) return;
  if (!p.alive) {
    p.alive = true;
    ++counters_.liveliness_changes;
    Event e{Event::Kind::kLivelinessChanged, r.handle, p.guid};
    e.alive = true;
    PushEvent(e);
  }
  Timestamp until = After(now, p.liveliness_lease_ns);
  if (until < r.liveliness_next) r.liveliness_next = until;
}

// §2.2.3.9: an owner that is gone (unmatched, not alive) or silent past the
// instance's deadline leaves its instances to the next strongest writer.
void Participant::ReleaseOwnership(LocalReader& r, const Guid& writer) {
  if (r.config.qos.ownership != OwnershipKind::kExclusive) return;
  for (auto& [key, m] : r.meta) {
    if (m.has_owner && m.owner == writer) {
      m.has_owner = false;
      Event e{Event::Kind::kOwnershipChanged, r.handle, Guid{}};
      e.instance = key;
      PushEvent(e);
    }
  }
}

void Participant::AssertLiveliness(Timestamp now) {
  maybe_pending_ = true;
  last_now_ = now;
  for (auto& w : writers_) {
    if (w->builtin || !w->active ||
        w->config.qos.liveliness != LivelinessKind::kManualByParticipant) {
      continue;
    }
    w->last_asserted = now;
    w->liveliness_lost_reported = false;
  }
  pmd_manual_sent_ = now;
  WriteParticipantMessage(kPmdManual, now);
}

absl::Status Participant::AssertWriterLiveliness(EndpointHandle h,
                                                 Timestamp now) {
  if (h == 0 || h > handles_.size() || !handles_[h - 1].first) {
    return absl::NotFoundError("not a writer handle");
  }
  LocalWriter& w = *writers_[handles_[h - 1].second];
  if (!w.active) return absl::FailedPreconditionError("writer deleted");
  maybe_pending_ = true;
  last_now_ = now;
  w.last_asserted = now;
  w.liveliness_lost_reported = false;
  if (w.config.qos.liveliness == LivelinessKind::kManualByParticipant) {
    AssertLiveliness(now);
    return absl::OkStatus();
  }
  // §8.3.7.5: a HEARTBEAT with the liveliness flag to the matched readers.
  w.liveliness_hb_due = true;
  return absl::OkStatus();
}

void Participant::WriterTimers(LocalWriter& w, EndpointHandle h,
                               Timestamp now) {
  if (w.expiry_next <= now) PurgeExpired(w, now);
  const EndpointQos& q = w.config.qos;
  if (w.deadline_next <= now) {
    Timestamp next = Timestamp::Never();
    for (auto& [key, in] : w.instances) {
      if (in.deadline_due <= now) {
        ++counters_.offered_deadlines_missed;
        Event e{Event::Kind::kOfferedDeadlineMissed, h, w.guid};
        e.instance = key;
        PushEvent(e);
        // Missed again every period while the instance stays silent.
        in.deadline_due = in.deadline_due + Duration(q.deadline_ns);
        if (in.deadline_due <= now) in.deadline_due = After(now, q.deadline_ns);
      }
      next = std::min(next, in.deadline_due);
    }
    w.deadline_next = next;
  }
  if (w.manual_liveliness() && !w.liveliness_lost_reported &&
      w.last_asserted + Duration(q.liveliness_lease_ns) <= now) {
    w.liveliness_lost_reported = true;
    ++counters_.liveliness_lost;
    PushEvent({Event::Kind::kLivelinessLost, h, w.guid});
  }
}

void Participant::ReaderTimers(LocalReader& r, EndpointHandle h,
                               Timestamp now) {
  if (r.expiry_next <= now) PurgeExpired(r, now);
  const EndpointQos& q = r.config.qos;
  if (r.deadline_next <= now) {
    Timestamp next = Timestamp::Never();
    for (auto& [key, m] : r.meta) {
      if (m.deadline_due <= now) {
        ++counters_.requested_deadlines_missed;
        Event e{Event::Kind::kRequestedDeadlineMissed, h, m.last_writer};
        e.instance = key;
        PushEvent(e);
        if (q.ownership == OwnershipKind::kExclusive && m.has_owner) {
          m.has_owner = false;  // §2.2.3.9: a silent owner loses the instance
          Event o{Event::Kind::kOwnershipChanged, h, Guid{}};
          o.instance = key;
          PushEvent(o);
        }
        m.deadline_due = m.deadline_due + Duration(q.deadline_ns);
        if (m.deadline_due <= now) m.deadline_due = After(now, q.deadline_ns);
      }
      next = std::min(next, m.deadline_due);
    }
    r.deadline_next = next;
  }
  if (r.liveliness_next <= now) {
    Timestamp next = Timestamp::Never();
    for (WriterProxy& p : r.writers) {
      if (p.liveliness_lease_ns == kInfiniteNanos || !p.alive) continue;
      Timestamp heard = p.last_asserted;
      if (p.liveliness == LivelinessKind::kAutomatic) {
        // Any message from its participant shows an AUTOMATIC writer alive.
        if (const RemoteParticipantInfo* info =
                FindParticipant(p.guid.prefix)) {
          heard = std::max(heard, info->last_heard);
        }
      }
      Timestamp until = heard + Duration(p.liveliness_lease_ns);
      if (until <= now) {
        p.alive = false;
        ++counters_.liveliness_changes;
        Event e{Event::Kind::kLivelinessChanged, h, p.guid};
        e.alive = false;
        PushEvent(e);
        ReleaseOwnership(r, p.guid);
      } else {
        next = std::min(next, until);
      }
    }
    r.liveliness_next = next;
  }
}

// ---- Timers
// ---------------------------------------------------------------------------------

Timestamp Participant::NextDeadline() const {
  if (!maybe_pending_) return idle_until_;  // nothing changed since the scan
  return ScanDeadline();
}

Timestamp Participant::ScanDeadline() const {
  // Cached lower bounds keep this O(endpoints), not O(remote entities): it
  // runs after every datagram, and a scan per datagram made discovery of N
  // participants O(N^3) (1,000 simulated participants did not finish).
  Timestamp next = std::min(spdp_next_, lease_next_);
  next = std::min(next, pmd_automatic_next_);
  if (gossip_ != nullptr) next = std::min(next, gossip_->NextDeadline());
  for (const auto& w : writers_) {
    next = std::min({next, w->hb_deadline, w->expiry_next, w->deadline_next});
    if (w->pushed < w->last_sn()) next = std::min(next, w->batch_deadline);
    if (w->manual_liveliness() && !w->liveliness_lost_reported) {
      next = std::min(
          next, w->last_asserted + Duration(w->config.qos.liveliness_lease_ns));
    }
  }
  for (const auto& r : readers_) {
    next =
        std::min({next, r->expiry_next, r->deadline_next, r->liveliness_next});
    next = std::min(next, r->ack_next);
    if (!r->any_frags) continue;
    for (const WriterProxy& p : r->writers) {
      if (p.frags && p.frags->active() > 0) {
        next = std::min(next, p.frags->NextExpiry());
      }
    }
  }
  return next;
}

void Participant::OnTimeout(Timestamp now) {
  maybe_pending_ = true;
  // §8.5.3.3: a participant whose lease ran out is gone.
  std::vector<GuidPrefix> expired;
  lease_next_ = Timestamp::Never();
  for (const auto& [prefix, info] : participants_) {
    if (info.lease_expiry <= now) {
      expired.push_back(prefix);
    } else {
      lease_next_ = std::min(lease_next_, info.lease_expiry);
    }
  }
  for (const GuidPrefix& p : expired) {
    ++counters_.leases_expired;
    RemoveParticipant(p);
  }
  // Partial samples that stopped making progress (§8.4.14.1 leaves the
  // policy to the implementation; memory must not be held forever).
  for (auto& r : readers_) {
    if (!r->any_frags) continue;
    for (WriterProxy& p : r->writers) {
      if (p.frags && p.frags->active() > 0) {
        counters_.partial_samples_timed_out += p.frags->Expire(now);
      }
    }
  }
  if (gossip_ != nullptr) {
    if (gossip_->NextDeadline() <= now) gossip_->OnTimeout(now);
    PumpGossip(now);
  }
  // QoS timers.
  last_now_ = now;
  for (auto& w : writers_) {
    if (!w->builtin && w->active) WriterTimers(*w, w->handle, now);
  }
  for (auto& r : readers_) {
    if (!r->builtin && r->active) ReaderTimers(*r, r->handle, now);
  }
  // AUTOMATIC liveliness with a finite lease: a participant message every
  // third of the shortest lease (§8.4.13), so remote readers never wait
  // for the next SPDP announcement.
  if (pmd_automatic_next_ <= now) {
    int64_t min_lease = kInfiniteNanos;
    for (const auto& w : writers_) {
      if (!w->builtin && w->active &&
          w->config.qos.liveliness == LivelinessKind::kAutomatic) {
        min_lease = std::min(min_lease, w->config.qos.liveliness_lease_ns);
      }
    }
    if (min_lease == kInfiniteNanos) {
      pmd_automatic_next_ = Timestamp::Never();
    } else {
      WriteParticipantMessage(kPmdAutomatic, now);
      pmd_automatic_next_ = After(now, std::max<int64_t>(min_lease / 3, 1));
    }
  }
}

// ---- Sending
// ----------------------------------------------------------------------------------

void Participant::SetDestinations(std::span<const Locator> a) {
  tx_destinations_.clear();
  AddDestinations(a);
}

void Participant::AddDestinations(std::span<const Locator> a) {
  for (const Locator& l : a) {
    if (std::find(tx_destinations_.begin(), tx_destinations_.end(), l) ==
        tx_destinations_.end()) {
      tx_destinations_.push_back(l);
    }
  }
}

std::optional<Transmit> Participant::PollTransmit(std::span<std::byte> out,
                                                  Timestamp now) {
  last_now_ = now;
  // Fast path: nothing happened since the last empty poll and no timer is
  // due, so a scan would find nothing.
  if (!maybe_pending_ && now < idle_until_) return std::nullopt;
  if (out.size() > config_.max_message_bytes) {
    out = out.first(config_.max_message_bytes);
  }
  Transmit t;
  auto done = [&]() -> std::optional<Transmit> {
    ++counters_.datagrams_sent;
    counters_.bytes_sent += t.size_bytes;
    t.destinations = tx_destinations_;
    return t;
  };
  // 1. New samples: latency matters most.
  size_t n = writers_.size();
  for (size_t k = 0; k < n; ++k) {
    LocalWriter& w = *writers_[(poll_cursor_ + k) % n];
    if (w.pushed < w.last_sn()) {
      // LATENCY_BUDGET: wait for more samples to share the datagram, until
      // the oldest one's budget ends or a datagram's worth is waiting.
      if (!w.batch_deadline.is_never() && now < w.batch_deadline &&
          w.unpushed_bytes + kDataOverhead < out.size() && !w.readers.empty()) {
        continue;
      }
      if (BuildPush(w, out, &t, now)) {
        if (w.pushed == w.last_sn()) {
          w.batch_deadline = Timestamp::Never();
          w.unpushed_bytes = 0;
        }
        poll_cursor_ = (poll_cursor_ + k + 1) % n;
        return done();
      }
    }
  }
  // 2. Acknowledgements that are due.
  for (auto& rp : readers_) {
    if (rp->ack_next > now) continue;
    Timestamp ack_next = Timestamp::Never();
    for (WriterProxy& p : rp->writers) {
      if (p.reliable && p.ack_deadline <= now) {
        if (BuildAckNack(*rp, p, out, &t, now)) return done();
      }
      if (p.reliable) ack_next = std::min(ack_next, p.ack_deadline);
    }
    rp->ack_next = ack_next;
  }
  // 3. Repairs: retransmissions, GAPs, directed heartbeats.
  for (auto& wp : writers_) {
    if (!wp->repair_maybe) continue;
    bool pending = false;
    for (ReaderProxy& p : wp->readers) {
      auto due = [&p] {
        return p.has_requests || p.heartbeat_due || p.gap_floor_due ||
               p.frag_request_count > 0;
      };
      if (due()) {
        if (BuildRepair(*wp, p, out, &t, now)) return done();
        pending |= due();
      }
    }
    wp->repair_maybe = pending;
  }
  // 4. Periodic heartbeats (and liveliness assertions).
  for (auto& wp : writers_) {
    if (wp->hb_deadline <= now || wp->liveliness_hb_due) {
      if (BuildHeartbeat(*wp, out, &t, now)) return done();
    }
  }
  // 5. Gossip (when it is our discovery), then SPDP (after the SEDP
  // disposes above when leaving).
  if (gossip_ != nullptr) {
    if (gossip_dirty_) UpdateGossipRecord(now);
    if (auto g = gossip_->PollTransmit(out, now)) {
      tx_destinations_.clear();
      tx_destinations_.push_back(g->destination);
      t.size_bytes = g->size_bytes;
      return done();
    }
  }
  if (leave_due_) {
    if (BuildSpdpDispose(out, &t)) return done();
  }
  if (leaving_) {
    maybe_pending_ = false;
    idle_until_ = ScanDeadline();
    return std::nullopt;
  }
  if (!spdp_unicast_pending_.empty()) {
    if (BuildSpdp(out, &t, now, true)) return done();
  }
  if (spdp_next_ <= now) {
    spdp_next_ = After(now, config_.spdp_period_ns);
    if (!config_.spdp_destinations.empty() && BuildSpdp(out, &t, now, false)) {
      return done();
    }
  }
  maybe_pending_ = false;
  idle_until_ = ScanDeadline();
  return std::nullopt;
}

uint32_t Participant::FragmentCount(const Sample& s) const {
  const size_t fs = config_.fragment_size_bytes;
  if (s.key_only || s.data.size() <= fs) return 0;
  return static_cast<uint32_t>((s.data.size() + fs - 1) / fs);
}

// §8.3.7.3 / §9.4.5.4: fragments of fragment_size_bytes (the last one
// shorter); the first carries the inline QoS.
uint32_t Participant::AddFragments(MessageBuilder& b, EntityId reader,
                                   const LocalWriter& w, const Sample& s,
                                   SequenceNumber sn, uint32_t first,
                                   uint32_t last, bool inline_qos) {
  const size_t fs = config_.fragment_size_bytes;
  last = std::min(last, FragmentCount(s));
  if (first < 1 || first > last) return 0;
  InlineQos q;
  bool has_q = false;
  if (first == 1 && (inline_qos || s.info.status_info != 0)) {
    q.key_hash = s.info.key;
    if (s.info.status_info != 0) q.status_info = s.info.status_info;
    has_q = true;
  }
  const size_t overhead =
      MessageBuilder::DataFragOverhead(has_q ? &q : nullptr);
  const size_t room = b.remaining();
  if (room <= overhead) return 0;
  // octetsToNextHeader is 16 bits: the body is at most 0xffff bytes.
  const size_t avail = std::min(
      room - overhead, size_t{0xffff} - (overhead - kSubmessageHeaderSize));
  const size_t off = size_t{first - 1} * fs;
  auto bytes_of = [&](size_t n) {
    return std::min(n * fs, s.data.size() - off);
  };
  size_t n = std::min<size_t>(last - first + 1, avail / fs + 1);
  while (n > 0 && ((bytes_of(n) + 3) & ~size_t{3}) > avail) --n;
  if (n == 0) return 0;
  if (!b.AddDataFrag(reader, w.guid.entity, sn, first, static_cast<uint16_t>(n),
                     static_cast<uint16_t>(fs),
                     static_cast<uint32_t>(s.data.size()), has_q ? &q : nullptr,
                     std::span(s.data).subspan(off, bytes_of(n)))) {
    return 0;
  }
  counters_.sample_bytes_copied += bytes_of(n);
  return static_cast<uint32_t>(n);
}

// §8.4.8.1 / §8.4.9.1: new changes go to every matched reader. One datagram
// to the union of their locators, readerId UNKNOWN, as many samples (or
// fragments of a large one) as fit.
bool Participant::BuildPush(LocalWriter& w, std::span<std::byte> out,
                            Transmit* t, Timestamp now) {
  if (w.readers.empty()) {
    w.pushed = w.last_sn();
    w.push_frag = 1;
    return false;
  }
  tx_destinations_.clear();
  bool any_reliable = false, inline_qos = w.builtin;
  for (const ReaderProxy& p : w.readers) {
    AddDestinations(p.locators);
    any_reliable |= p.reliable;
    inline_qos |= p.expects_inline_qos;
  }
  if (tx_destinations_.empty()) {
    w.pushed = w.last_sn();
    w.push_frag = 1;
    return false;
  }
  MessageBuilder b(out, config_.guid_prefix, config_.vendor);
  // Room for the HEARTBEAT and HEARTBEAT_FRAG that may follow.
  if (any_reliable) b.ReserveTail(64);
  int64_t last_ts = kNoSourceTimestamp;
  size_t samples = 0;
  bool finished_fragmented = false;  // a whole DATA_FRAG sample went out
  bool mid_sample = false;           // the datagram ends inside a sample
  // LATENCY_BUDGET: what went out leaves the batch, so samples that did not
  // fit wait for more company (or their budget) instead of leaving at once
  // in a small datagram of their own (counted as in Write()).
  auto took = [&w](const Sample& s) {
    w.unpushed_bytes -= std::min(w.unpushed_bytes, s.data.size() + 32);
  };
  while (w.pushed < w.last_sn()) {
    SequenceNumber sn = w.pushed + 1;
    SampleRing::Entry* e = w.ring.Find(static_cast<uint64_t>(sn));
    if (e == nullptr || e->slot == kNone) {
      w.pushed = sn;  // replaced before it went out; readers get a GAP
      w.push_frag = 1;
      continue;
    }
    const Sample& s = w.pool.slots[e->slot];
    size_t mark = b.Mark();
    bool okb = true;
    if (s.info.source_time_ns != kNoSourceTimestamp &&
        s.info.source_time_ns != last_ts) {
      okb = b.AddInfoTs(s.info.source_time_ns);
    }
    const uint32_t total = FragmentCount(s);
    if (okb && total > 0) {
      uint32_t n = AddFragments(b, EntityId::Unknown(), w, s, sn, w.push_frag,
                                total, inline_qos);
      if (n == 0) {
        b.Rollback(mark);
        mid_sample = w.push_frag > 1;
        break;
      }
      if (w.push_frag == 1) ++counters_.samples_fragmented;
      counters_.fragments_sent += n;
      w.push_frag += n;
      w.frags_since_hbfrag += n;
      last_ts = s.info.source_time_ns;
      ++samples;
      if (w.push_frag <= total) {
        mid_sample = true;
        break;  // the datagram is full; the sample continues in the next
      }
      w.pushed = sn;
      w.push_frag = 1;
      w.frags_since_hbfrag = 0;
      finished_fragmented = true;
      took(s);
      continue;
    }
    InlineQos q;
    // Built-in topics and readers that ask for it get the key hash inline
    // (§9.6.3.3); user data otherwise goes without (peers derive the key).
    if (inline_qos) q.key_hash = s.info.key;
    if (s.info.status_info != 0) {
      q.key_hash = s.info.key;
      q.status_info = s.info.status_info;
    }
    bool has_q = q.key_hash.has_value() || q.status_info.has_value();
    if (okb) {
      okb = b.AddData(EntityId::Unknown(), w.guid.entity, sn,
                      has_q ? &q : nullptr, s.data, s.key_only);
      if (okb) counters_.sample_bytes_copied += s.data.size();
    }
    if (!okb) {
      b.Rollback(mark);
      break;
    }
    last_ts = s.info.source_time_ns;
    w.pushed = sn;
    ++samples;
    took(s);
  }
  if (samples == 0) return false;
  if (samples > 1) ++counters_.batched_datagrams;
  b.ReleaseTail();
  if (any_reliable) {
    // Piggy-back a heartbeat when a KEEP_ALL history is half full, so
    // acknowledgements free it before Write() must refuse, and after a
    // fragmented sample, so lost fragments are repaired at once. It
    // announces only what went out (lastSN = pushed): a reader must not
    // NACK what is still on its way. Only the history's request needs every
    // reader to answer, so only it is non-final, and at most once per
    // quarter of the history pushed; after a fragmented sample the heartbeat
    // is final: a reader that misses something answers anyway, one that has
    // it all need not (§8.3.7.5 FinalFlag). Non-final in every push under
    // pressure and after every fragmented sample cost a reader ~2 ACKNACKs
    // per 64 KiB sample in ringlab_dds_throughput.
    const EndpointQos& q = w.config.qos;
    const bool pressure =
        q.history == HistoryKind::kKeepAll && w.pool.in_use * 2 >= w.pool.limit;
    const SequenceNumber ask_every = std::max<SequenceNumber>(
        1, static_cast<SequenceNumber>(w.pool.limit / 4));
    const bool ask = pressure && w.pushed >= w.ack_asked_sn + ask_every;
    if (ask || finished_fragmented) {
      size_t mark = b.Mark();
      SequenceNumber first = std::min(w.first_sn(), w.pushed + 1);
      if (b.AddHeartbeat(EntityId::Unknown(), w.guid.entity, first, w.pushed,
                         ++w.hb_count, /*final_flag=*/!ask)) {
        if (ask) w.ack_asked_sn = w.pushed;
        ++counters_.heartbeats_sent;
      } else {
        b.Rollback(mark);
        --w.hb_count;
      }
    }
    if (mid_sample && w.frags_since_hbfrag >= kHeartbeatFragEvery) {
      size_t mark = b.Mark();
      if (b.AddHeartbeatFrag(EntityId::Unknown(), w.guid.entity, w.pushed + 1,
                             w.push_frag - 1, ++w.hbfrag_count)) {
        ++counters_.heartbeat_frags_sent;
        w.frags_since_hbfrag = 0;
      } else {
        b.Rollback(mark);
        --w.hbfrag_count;
      }
    }
    if (w.hb_deadline.is_never()) {
      w.hb_deadline = After(now, config_.heartbeat_period_ns);
    }
  } else {
    PurgeAcked(w);
  }
  t->size_bytes = b.size();
  return t->size_bytes > 0;
}

// §8.4.9.2.5-7: answer a reader: the requested samples we still have, a GAP
// for those we do not (or that predate a volatile reader's match), the
// fragments NACK_FRAG asked for, then a heartbeat so it knows where we are.
// A repair too large for one datagram resumes in the next one.
bool Participant::BuildRepair(LocalWriter& w, ReaderProxy& p,
                              std::span<std::byte> out, Transmit* t,
                              Timestamp now) {
  SetDestinations(p.locators);
  if (tx_destinations_.empty()) {
    p.has_requests = p.heartbeat_due = p.gap_floor_due = false;
    p.frag_request_count = 0;
    return false;
  }
  MessageBuilder b(out, config_.guid_prefix, config_.vendor);
  b.AddInfoDst(p.guid.prefix);
  const size_t empty_mark = b.Mark();
  if (p.gap_floor_due) {
    SequenceNumberSet list;
    list.base = p.volatile_floor + 1;
    if (b.AddGap(p.guid.entity, w.guid.entity, 1, list)) {
      ++counters_.gaps_sent;
      p.gap_floor_due = false;
    }
  }
  SequenceNumber gap_begin = 0, gap_end = 0;  // a pending run [begin, end]
  auto flush_gap = [&]() -> bool {
    if (gap_begin == 0) return true;
    SequenceNumberSet list;
    list.base = gap_end + 1;
    if (!b.AddGap(p.guid.entity, w.guid.entity, gap_begin, list)) return false;
    ++counters_.gaps_sent;
    gap_begin = 0;
    return true;
  };
  const bool with_qos = w.builtin || p.expects_inline_qos;
  auto add_ts = [&](const Sample& s) {
    return s.info.source_time_ns != kNoSourceTimestamp
               ? b.AddInfoTs(s.info.source_time_ns)
               : b.AddInfoTsInvalidate();
  };
  // Fragments [first, last] of sample `s` in as many DATA_FRAGs as fit;
  // returns the first fragment not sent (last + 1 when all went).
  auto add_fragments = [&](const Sample& s, SequenceNumber sn, uint32_t first,
                           uint32_t last) {
    while (first <= last) {
      size_t mark = b.Mark();
      uint32_t n = add_ts(s) ? AddFragments(b, p.guid.entity, w, s, sn, first,
                                            last, with_qos)
                             : 0;
      if (n == 0) {
        b.Rollback(mark);
        break;
      }
      counters_.fragments_retransmitted += n;
      first += n;
    }
    return first;
  };
  bool full = false;
  if (p.has_requests) {
    SequenceNumberSet& req = p.requested;
    for (uint32_t i = 0; i < req.num_bits && !full; ++i) {
      SequenceNumber sn = req.base + i;
      if (!req.Contains(sn)) continue;
      SampleRing::Entry* e = sn <= p.volatile_floor
                                 ? nullptr
                                 : w.ring.Find(static_cast<uint64_t>(sn));
      if (e == nullptr || e->slot == kNone) {
        if (gap_begin != 0 && gap_end + 1 == sn) {
          gap_end = sn;
        } else {
          if (!flush_gap()) {
            full = true;
            break;
          }
          gap_begin = gap_end = sn;
        }
      } else {
        size_t mark = b.Mark();
        if (!flush_gap()) {
          full = true;
          break;
        }
        const Sample& s = w.pool.slots[e->slot];
        if (uint32_t total = FragmentCount(s); total > 0) {
          // A whole fragmented sample, resumed where the last datagram
          // stopped.
          uint32_t from = p.resend_sn == sn ? p.resend_frag : 1;
          uint32_t next = add_fragments(s, sn, from, total);
          if (next <= total) {
            p.resend_sn = sn;
            p.resend_frag = next;
            full = true;
            break;
          }
          p.resend_sn = 0;
          ++counters_.retransmits;
        } else {
          InlineQos q;
          bool has_q = false;
          if (with_qos || s.info.status_info != 0) {
            q.key_hash = s.info.key;
            if (s.info.status_info != 0) q.status_info = s.info.status_info;
            has_q = true;
          }
          bool okb =
              add_ts(s) && b.AddData(p.guid.entity, w.guid.entity, sn,
                                     has_q ? &q : nullptr, s.data, s.key_only);
          if (!okb) {
            b.Rollback(mark);
            full = true;
            break;
          }
          counters_.sample_bytes_copied += s.data.size();
          ++counters_.retransmits;
        }
      }
      // Done with sn: clear it so a partial repair resumes after it.
      req.bitmap[i / 32] &= ~(1u << (31 - i % 32));
    }
    if (!full && !flush_gap()) full = true;
    if (!full) p.has_requests = false;
  }
  // NACK_FRAG requests: runs of consecutive fragments per DATA_FRAG.
  while (!full && p.frag_request_count > 0) {
    FragRequest& q = p.frag_requests[0];
    SampleRing::Entry* e = q.sn <= p.volatile_floor
                               ? nullptr
                               : w.ring.Find(static_cast<uint64_t>(q.sn));
    if (e == nullptr || e->slot == kNone ||
        FragmentCount(w.pool.slots[e->slot]) == 0) {
      // Gone (or never fragmented): the reader must skip it.
      SequenceNumberSet list;
      list.base = q.sn + 1;
      if (e == nullptr || e->slot == kNone) {
        if (!b.AddGap(p.guid.entity, w.guid.entity, q.sn, list)) {
          full = true;
          break;
        }
        ++counters_.gaps_sent;
      }
    } else {
      const Sample& s = w.pool.slots[e->slot];
      FragmentNumberSet& set = q.set;
      for (uint32_t i = 0; i < set.num_bits && !full;) {
        uint32_t fn = set.base + i;
        if (!set.Contains(fn)) {
          ++i;
          continue;
        }
        uint32_t j = i;
        while (j + 1 < set.num_bits && set.Contains(set.base + j + 1)) ++j;
        uint32_t next = add_fragments(s, q.sn, fn, set.base + j);
        for (uint32_t k = i; k < i + (next - fn); ++k) {
          set.bitmap[k / 32] &= ~(1u << (31 - k % 32));
        }
        if (next <= set.base + j) {
          full = true;
          break;
        }
        i = j + 1;
      }
      if (full) break;
    }
    // Request answered: drop it (the table is small; keep the order).
    for (uint32_t k = 1; k < p.frag_request_count; ++k) {
      p.frag_requests[k - 1] = p.frag_requests[k];
    }
    --p.frag_request_count;
  }
  if (!full) {
    size_t mark = b.Mark();
    if (b.AddHeartbeat(p.guid.entity, w.guid.entity, w.first_sn(), w.last_sn(),
                       ++w.hb_count, false)) {
      ++counters_.heartbeats_sent;
      p.heartbeat_due = false;
    } else {
      b.Rollback(mark);
      --w.hb_count;
    }
  }
  if (w.hb_deadline.is_never() && w.reliable_unacked()) {
    w.hb_deadline = After(now, config_.heartbeat_period_ns);
  }
  if (b.Mark() == empty_mark) return false;  // nothing fit the buffer
  t->size_bytes = b.size();
  return t->size_bytes > 0;
}

// §8.4.7.2 / §8.4.9.2.3: periodic HEARTBEATs while some reliable reader has
// not acknowledged everything.
bool Participant::BuildHeartbeat(LocalWriter& w, std::span<std::byte> out,
                                 Transmit* t, Timestamp now) {
  if (w.liveliness_hb_due) {
    // §8.3.7.5: the liveliness flag asserts the writer to every matched
    // reader; final, so nobody needs to answer.
    w.liveliness_hb_due = false;
    tx_destinations_.clear();
    for (const ReaderProxy& p : w.readers) AddDestinations(p.locators);
    if (!tx_destinations_.empty()) {
      MessageBuilder b(out, config_.guid_prefix, config_.vendor);
      SequenceNumber first = std::min(w.first_sn(), w.pushed + 1);
      if (b.AddHeartbeat(EntityId::Unknown(), w.guid.entity, first, w.pushed,
                         ++w.hb_count, true, /*liveliness=*/true)) {
        ++counters_.heartbeats_sent;
        t->size_bytes = b.size();
        return true;
      }
    }
  }
  if (w.hb_deadline > now) return false;
  tx_destinations_.clear();
  for (const ReaderProxy& p : w.readers) {
    if (p.reliable && p.acked < w.last_sn()) AddDestinations(p.locators);
  }
  if (tx_destinations_.empty()) {
    w.hb_deadline = Timestamp::Never();
    return false;
  }
  w.hb_deadline = After(now, config_.heartbeat_period_ns);
  MessageBuilder b(out, config_.guid_prefix, config_.vendor);
  if (!b.AddHeartbeat(EntityId::Unknown(), w.guid.entity, w.first_sn(),
                      w.last_sn(), ++w.hb_count, false)) {
    return false;
  }
  ++counters_.heartbeats_sent;
  t->size_bytes = b.size();
  return true;
}

// §8.4.12.2 / §9.4.5.2: ACKNACK with base = first missing SN and a bit per
// missing SN up to the writer's last announced one. A sample we hold part
// of is not in the bitmap (that would bring it back whole): its missing
// fragments go in NACK_FRAGs after the ACKNACK (§8.3.7.8), as many 256-bit
// windows as fit.
bool Participant::BuildAckNack(LocalReader& r, WriterProxy& p,
                               std::span<std::byte> out, Transmit* t,
                               Timestamp now) {
  p.ack_deadline = Timestamp::Never();
  SetDestinations(p.locators);
  if (tx_destinations_.empty()) return false;
  if (p.frags) p.frags->DropBelow(p.expected);
  SequenceNumberSet set;
  set.base = p.expected;
  bool partial = false;
  for (SequenceNumber s = p.expected;
       s <= p.hb_last && s < p.expected + kReorderWindow; ++s) {
    if (p.Holds(s)) continue;
    if (p.frags && p.frags->active() > 0 && p.frags->Find(s) != nullptr) {
      partial = true;
      continue;
    }
    set.Add(s);
  }
  // A HEARTBEAT_FRAG for a sample beyond hb_last (still being sent).
  const bool hbfrag_pending =
      p.hbfrag_sn > p.hb_last && p.hbfrag_sn >= p.expected &&
      p.hbfrag_sn < p.expected + kReorderWindow && !p.Holds(p.hbfrag_sn);
  bool final_flag =
      set.num_bits == 0 && !partial && !hbfrag_pending && p.hb_seen;
  MessageBuilder b(out, config_.guid_prefix, config_.vendor);
  b.AddInfoDst(p.guid.prefix);
  if (!b.AddAckNack(r.guid.entity, p.guid.entity, set, ++p.acknack_count,
                    final_flag)) {
    return false;
  }
  ++counters_.acknacks_sent;
  auto nack = [&](SequenceNumber sn, const FragmentNumberSet& m) {
    size_t mark = b.Mark();
    if (!b.AddNackFrag(r.guid.entity, p.guid.entity, sn, m,
                       ++p.nackfrag_count)) {
      b.Rollback(mark);
      --p.nackfrag_count;
      return false;
    }
    ++counters_.nack_frags_sent;
    return true;
  };
  bool room = true;
  if (p.frags && (partial || hbfrag_pending)) {
    p.frags->ForEach([&](internal::PartialSample& ps) {
      if (!room || ps.sn < p.expected) return;
      // Fragments the writer has sent: all of them once a HEARTBEAT covers
      // the sample, else up to its last HEARTBEAT_FRAG.
      uint32_t upto = ps.sn <= p.hb_last     ? ps.total_fragments
                      : ps.sn == p.hbfrag_sn ? p.hbfrag_last
                                             : 0;
      // Within the suppression time, only fragments beyond the last
      // request: the ones asked for are probably on their way.
      uint32_t from = 1;
      if (ps.nacked &&
          now - ps.nacked_at < Duration(config_.nack_frag_suppression_ns)) {
        from = ps.nacked_upto + 1;
      }
      bool sent = false;
      for (uint32_t k = 0; k < kMaxNackFragWindows && room && from <= upto;
           ++k) {
        FragmentNumberSet m;
        if (!p.frags->Missing(ps, from, upto, &m)) break;
        room = nack(ps.sn, m);
        sent |= room;
        from = m.base + FragmentNumberSet{}.bitmap.size() * 32;
      }
      if (sent) {
        ps.nacked = true;
        ps.nacked_at = now;
        ps.nacked_upto = std::max(ps.nacked_upto, upto);
      }
    });
  }
  if (room && hbfrag_pending &&
      (!p.frags || p.frags->Find(p.hbfrag_sn) == nullptr)) {
    // Nothing of that sample arrived: ask for what was announced.
    FragmentNumberSet m;
    m.base = 1;
    for (uint32_t fn = 1; fn <= std::min<uint32_t>(p.hbfrag_last, 256); ++fn) {
      m.Add(fn);
    }
    if (m.num_bits > 0) nack(p.hbfrag_sn, m);
  }
  t->size_bytes = b.size();
  return true;
}

// §8.5.3.2: SPDPdiscoveredParticipantData as DATA from the SPDP writer,
// keyed by the participant GUID.
bool Participant::BuildSpdp(std::span<std::byte> out, Transmit* t,
                            Timestamp now, bool unicast_reply) {
  if (unicast_reply) {
    SetDestinations(spdp_unicast_pending_);
    spdp_unicast_pending_.clear();
  } else {
    SetDestinations(config_.spdp_destinations);
  }
  MessageBuilder b(out, config_.guid_prefix, config_.vendor);
  InlineQos q;
  q.key_hash = GuidKeyHash(Guid{config_.guid_prefix, EntityId::Participant()});
  // Each periodic announcement gets the next SN (a best-effort reader
  // drops repeats); unicast replies resend the current one.
  if (!unicast_reply) ++spdp_sn_;
  if (!b.AddData(EntityId::SpdpReader(), EntityId::SpdpWriter(),
                 std::max<SequenceNumber>(spdp_sn_, 1), &q, spdp_payload_)) {
    return false;
  }
  t->size_bytes = b.size();
  (void)now;
  return true;
}

// §8.5.3 / §9.6.2.1: leaving, the participant disposes of its endpoints
// (SEDP) and of itself: an SPDP DATA with status info disposed|unregistered
// and the key hash only, to the SPDP destinations and every participant we
// know, so peers drop us at once instead of waiting for the lease.
void Participant::Leave(Timestamp now) {
  if (leaving_) return;
  leaving_ = true;
  maybe_pending_ = true;
  if (gossip_ != nullptr) gossip_->Leave(now);
  for (size_t h = 0; h < handles_.size(); ++h) {
    auto [is_writer, index] = handles_[h];
    bool active = is_writer ? writers_[index]->active : readers_[index]->active;
    if (active) (void)DeleteEndpoint(static_cast<EndpointHandle>(h + 1), now);
  }
  leave_destinations_ = config_.spdp_destinations;
  for (const auto& [prefix, info] : participants_) {
    for (const Locator& l : MetatrafficLocators(info.data)) {
      if (std::find(leave_destinations_.begin(), leave_destinations_.end(),
                    l) == leave_destinations_.end()) {
        leave_destinations_.push_back(l);
      }
    }
  }
  leave_due_ = true;
}

bool Participant::BuildSpdpDispose(std::span<std::byte> out, Transmit* t) {
  leave_due_ = false;
  SetDestinations(leave_destinations_);
  if (tx_destinations_.empty()) return false;
  MessageBuilder b(out, config_.guid_prefix, config_.vendor);
  InlineQos q;
  q.key_hash = GuidKeyHash(Guid{config_.guid_prefix, EntityId::Participant()});
  q.status_info = kStatusInfoDisposed | kStatusInfoUnregistered;
  if (!b.AddData(EntityId::SpdpReader(), EntityId::SpdpWriter(), ++spdp_sn_, &q,
                 {})) {
    return false;
  }
  t->size_bytes = b.size();
  return true;
}

// ---- Gossip discovery (rtps/gossip.h) ---------------------------------------

const GossipCounters* Participant::gossip_counters() const {
  return gossip_ != nullptr ? &gossip_->counters() : nullptr;
}

// Our membership record: where we are and every endpoint we have (what
// SEDP would announce), with a new incarnation on each change.
void Participant::UpdateGossipRecord(Timestamp now) {
  gossip_dirty_ = false;
  GossipRecord r;
  r.vendor = config_.vendor;
  r.lease_duration_ns = config_.lease_duration_ns;
  if (!config_.default_unicast.empty()) {
    r.user_locator = config_.default_unicast[0];
  }
  for (const auto& w : writers_) {
    if (w->builtin || !w->active) continue;
    EndpointData e;
    e.guid = w->guid;
    e.topic_name = w->config.topic_name;
    e.type_name = w->config.type_name;
    e.qos = w->config.qos;
    r.endpoints.push_back(std::move(e));
  }
  for (const auto& rd : readers_) {
    if (rd->builtin || !rd->active) continue;
    EndpointData e;
    e.guid = rd->guid;
    e.topic_name = rd->config.topic_name;
    e.type_name = rd->config.type_name;
    e.qos = rd->config.qos;
    r.endpoints.push_back(std::move(e));
  }
  gossip_->SetLocalRecord(std::move(r), now);
}

void Participant::PumpGossip(Timestamp now) {
  while (std::optional<GossipEvent> e = gossip_->PollEvent()) {
    switch (e->kind) {
      case GossipEvent::Kind::kMemberJoined:
      case GossipEvent::Kind::kMemberUpdated:
        ApplyGossipMember(e->record, now);
        break;
      case GossipEvent::Kind::kMemberLeft:
        if (auto it = participants_.find(e->record.prefix);
            it != participants_.end() && it->second.via_gossip) {
          RemoveParticipant(e->record.prefix);
        }
        break;
      case GossipEvent::Kind::kPrefixCollision:
        ++counters_.prefix_collisions;
        PushEvent({Event::Kind::kPrefixCollision, 0,
                   Guid{e->record.prefix, EntityId::Participant()}});
        break;
    }
  }
}

// A member's record is what SPDP and SEDP would have told us: the
// participant (no built-in endpoints: no SEDP with it) and its endpoints,
// matched like SEDP publications and subscriptions.
void Participant::ApplyGossipMember(const GossipRecord& r, Timestamp now) {
  const GuidPrefix& prefix = r.prefix;
  auto it = participants_.find(prefix);
  if (it != participants_.end() && !it->second.via_gossip) return;
  ParticipantData pd;
  pd.guid_prefix = prefix;
  pd.vendor = r.vendor;
  pd.lease_duration_ns = r.lease_duration_ns;
  pd.gossip = true;
  if (r.gossip_locator.kind != Locator::kInvalid) {
    pd.metatraffic_unicast = {r.gossip_locator};
  }
  if (r.user_locator.kind != Locator::kInvalid) {
    pd.default_unicast = {r.user_locator};
  }
  if (it == participants_.end()) {
    if (participants_.size() >= config_.max_remote_participants) {
      ++counters_.spdp_participant_limit;
      return;
    }
    RemoteParticipantInfo info;
    info.data = std::move(pd);
    info.lease_expiry = Timestamp::Never();
    info.last_heard = now;
    info.via_gossip = true;
    participants_.emplace(prefix, std::move(info));
    PushEvent({Event::Kind::kParticipantDiscovered, 0,
               Guid{prefix, EntityId::Participant()}});
  } else {
    it->second.data = std::move(pd);
    it->second.last_heard = now;
  }
  // Endpoints that left the record are gone (a scan of every remote
  // endpoint, so only on an update: a join has none yet).
  std::vector<Guid> gone;
  const bool joined = it == participants_.end();
  for (const auto& [g, re] : remote_endpoints_) {
    if (joined) break;
    if (g.prefix != prefix) continue;
    bool still = false;
    for (const EndpointData& e : r.endpoints) still |= e.guid == g;
    if (!still) gone.push_back(g);
  }
  for (const Guid& g : gone) {
    UnmatchRemoteEndpoint(g);
    remote_endpoints_.erase(g);
    PushEvent({g.entity.is_writer() ? Event::Kind::kPublicationLost
                                    : Event::Kind::kSubscriptionLost,
               0, g});
  }
  for (const EndpointData& e : r.endpoints) {
    auto re = remote_endpoints_.find(e.guid);
    if (re != remote_endpoints_.end()) {
      const EndpointData& old = re->second->data;
      bool same = old.topic_name == e.topic_name &&
                  old.type_name == e.type_name &&
                  old.qos.partitions == e.qos.partitions &&
                  old.qos.reliability == e.qos.reliability &&
                  old.qos.durability == e.qos.durability &&
                  old.qos.ownership == e.qos.ownership;
      if (same) {
        re->second->data.qos = e.qos;
        continue;
      }
      UnmatchRemoteEndpoint(e.guid);
      re->second->data = e;
      re->second->locators = UserLocators(re->second->data);
      MatchRemoteEndpoint(e.guid, now);
      continue;
    }
    if (remote_endpoints_.size() >= config_.max_remote_endpoints) {
      ++counters_.sedp_endpoint_limit;
      continue;
    }
    auto ep = std::make_unique<RemoteEndpoint>();
    ep->data = e;
    ep->locators = UserLocators(ep->data);
    remote_endpoints_.emplace(e.guid, std::move(ep));
    PushEvent({e.guid.entity.is_writer() ? Event::Kind::kPublicationDiscovered
                                         : Event::Kind::kSubscriptionDiscovered,
               0, e.guid});
    MatchRemoteEndpoint(e.guid, now);
  }
}

const RemoteParticipantInfo* Participant::FindParticipant(
    const GuidPrefix& p) const {
  auto it = participants_.find(p);
  return it == participants_.end() ? nullptr : &it->second;
}

void Participant::ForEachRemoteEndpoint(
    absl::FunctionRef<void(const EndpointData&)> fn) const {
  for (const auto& [g, e] : remote_endpoints_) fn(e->data);
}

const EndpointData* Participant::FindRemoteEndpoint(const Guid& g) const {
  auto it = remote_endpoints_.find(g);
  return it == remote_endpoints_.end() ? nullptr : &it->second->data;
}

}  // namespace ringlab::rtps
