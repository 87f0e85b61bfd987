#include "rtps/gossip.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "rtps/message.h"

namespace ringlab::rtps {

enum class GossipDiscovery::Type : uint8_t {
  kPing = 1,       // SWIM probe, with piggy-backed changes
  kAck = 2,        // probe answer (or a relayed one: `about` = target)
  kPingReq = 3,    // "probe `about` for me" (indirect probe)
  kSync = 4,       // pull: a Bloom filter of what we know + our record
  kSyncReply = 5,  // the records the filter lacks
};

namespace {

constexpr uint8_t kVersion = 1;
constexpr size_t kMessageHeader = kHeaderSize + kSubmessageHeaderSize + 8;
constexpr uint32_t kBloomHashes = 4;
constexpr uint32_t kBloomBitsPerEntry = 10;  // ~1% false positives
constexpr uint32_t kTombstonePeriods = 100;
constexpr uint32_t kNoDuration = 0xffffffffu;

// ---- Little-endian encoding
// --------------------------------------------------

class Writer {
 public:
  explicit Writer(std::vector<std::byte>* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(std::byte(v)); }
  void U16(uint16_t v) {
    U8(static_cast<uint8_t>(v));
    U8(static_cast<uint8_t>(v >> 8));
  }
  void U32(uint32_t v) {
    U16(static_cast<uint16_t>(v));
    U16(static_cast<uint16_t>(v >> 16));
  }
  void U64(uint64_t v) {
    U32(static_cast<uint32_t>(v));
    U32(static_cast<uint32_t>(v >> 32));
  }
  void Bytes(const void* p, size_t n) {
    const std::byte* b = static_cast<const std::byte*>(p);
    out_->insert(out_->end(), b, b + n);
  }
  void Str(const std::string& s) {
    size_t n = std::min<size_t>(s.size(), 0xffff);
    U16(static_cast<uint16_t>(n));
    Bytes(s.data(), n);
  }
  size_t size() const { return out_->size(); }

 private:
  std::vector<std::byte>* out_;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  bool ok() const { return ok_; }
  size_t left() const { return ok_ ? in_.size() - pos_ : 0; }
  uint8_t U8() {
    if (!Need(1)) return 0;
    return std::to_integer<uint8_t>(in_[pos_++]);
  }
  uint16_t U16() {
    uint16_t a = U8();
    return static_cast<uint16_t>(a | U8() << 8);
  }
  uint32_t U32() {
    uint32_t a = U16();
    return a | static_cast<uint32_t>(U16()) << 16;
  }
  uint64_t U64() {
    uint64_t a = U32();
    return a | static_cast<uint64_t>(U32()) << 32;
  }
  std::span<const std::byte> Bytes(size_t n) {
    if (!Need(n)) return {};
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  bool Str(std::string* s) {
    uint16_t n = U16();
    auto b = Bytes(n);
    if (!ok_) return false;
    s->assign(reinterpret_cast<const char*>(b.data()), b.size());
    return true;
  }

 private:
  bool Need(size_t n) {
    if (!ok_ || in_.size() - pos_ < n) ok_ = false;
    return ok_;
  }
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

uint32_t Ms(int64_t ns) {
  if (ns >= kInfiniteNanos) return kNoDuration;
  int64_t ms = (ns + 999'999) / 1'000'000;
  return static_cast<uint32_t>(std::min<int64_t>(ms, kNoDuration - 1));
}
int64_t FromMs(uint32_t ms) {
  return ms == kNoDuration ? kInfiniteNanos : int64_t{ms} * 1'000'000;
}

void PutLocator(Writer& w, const Locator& l) {
  w.U32(l.is_udp_v4() ? l.ipv4_host_order() : 0);
  w.U16(static_cast<uint16_t>(l.port));
}
Locator GetLocator(Reader& r) {
  uint32_t ip = r.U32();
  uint16_t port = r.U16();
  return port == 0 ? Locator{} : Locator::UdpV4(ip, port);
}

// A record: identity, state, locators, lease, then its endpoints with the
// QoS matching needs; durations that have their default are left out
// (`mask`), in milliseconds (latency budget: microseconds).
void EncodeRecord(const GossipRecord& rec, std::vector<std::byte>* out) {
  Writer w(out);
  w.Bytes(rec.prefix.bytes.data(), 12);
  w.U64(rec.nonce);
  w.U32(rec.incarnation);
  w.U8(static_cast<uint8_t>(rec.state));
  w.Bytes(rec.vendor.bytes.data(), 2);
  const bool alive = rec.state != GossipRecord::State::kDead;
  size_t n = alive ? std::min<size_t>(rec.endpoints.size(), 255) : 0;
  w.U8(static_cast<uint8_t>(n));
  PutLocator(w, rec.gossip_locator);
  PutLocator(w, rec.user_locator);
  w.U32(Ms(rec.lease_duration_ns));
  for (size_t i = 0; i < n; ++i) {
    const EndpointData& e = rec.endpoints[i];
    const EndpointQos& q = e.qos;
    w.U32(e.guid.entity.value);
    uint8_t fl =
        (q.reliability == ReliabilityKind::kReliable ? 1 : 0) |
        (static_cast<uint8_t>(q.durability) & 3) << 1 |
        (q.history == HistoryKind::kKeepAll ? 8 : 0) |
        (q.ownership == OwnershipKind::kExclusive ? 16 : 0) |
        (q.destination_order == DestinationOrderKind::kBySourceTimestamp ? 32
                                                                         : 0) |
        (static_cast<uint8_t>(q.liveliness) & 3) << 6;
    uint8_t mask = (q.deadline_ns != kInfiniteNanos ? 1 : 0) |
                   (q.latency_budget_ns != 0 ? 2 : 0) |
                   (q.lifespan_ns != kInfiniteNanos ? 4 : 0) |
                   (q.liveliness_lease_ns != kInfiniteNanos ? 8 : 0) |
                   (q.ownership_strength != 0 ? 16 : 0);
    w.U8(fl);
    w.U8(mask);
    w.U16(static_cast<uint16_t>(std::clamp(q.history_depth, 0, 0xffff)));
    if (mask & 1) w.U32(Ms(q.deadline_ns));
    if (mask & 2) {
      w.U32(static_cast<uint32_t>(
          std::min<int64_t>(q.latency_budget_ns / 1000, kNoDuration - 1)));
    }
    if (mask & 4) w.U32(Ms(q.lifespan_ns));
    if (mask & 8) w.U32(Ms(q.liveliness_lease_ns));
    if (mask & 16) w.U32(static_cast<uint32_t>(q.ownership_strength));
    w.Str(e.topic_name);
    w.Str(e.type_name);
    size_t parts = std::min<size_t>(q.partitions.size(), 255);
    w.U8(static_cast<uint8_t>(parts));
    for (size_t k = 0; k < parts; ++k) w.Str(q.partitions[k]);
  }
}

bool DecodeRecord(Reader& r, GossipRecord* rec) {
  auto p = r.Bytes(12);
  if (!r.ok()) return false;
  std::memcpy(rec->prefix.bytes.data(), p.data(), 12);
  rec->nonce = r.U64();
  rec->incarnation = r.U32();
  uint8_t state = r.U8();
  if (state > 2) return false;
  rec->state = static_cast<GossipRecord::State>(state);
  auto v = r.Bytes(2);
  if (!r.ok()) return false;
  rec->vendor.bytes = {std::to_integer<uint8_t>(v[0]),
                       std::to_integer<uint8_t>(v[1])};
  uint8_t n = r.U8();
  rec->gossip_locator = GetLocator(r);
  rec->user_locator = GetLocator(r);
  rec->lease_duration_ns = FromMs(r.U32());
  rec->endpoints.clear();
  for (uint8_t i = 0; i < n && r.ok(); ++i) {
    EndpointData e;
    e.guid = Guid{rec->prefix, EntityId{r.U32()}};
    e.participant_guid = Guid{rec->prefix, EntityId::Participant()};
    uint8_t fl = r.U8();
    uint8_t mask = r.U8();
    bool writer = e.guid.entity.is_writer();
    if (!writer && !e.guid.entity.is_reader()) return false;
    EndpointQos q =
        writer ? EndpointQos::WriterDefaults() : EndpointQos::ReaderDefaults();
    q.reliability =
        fl & 1 ? ReliabilityKind::kReliable : ReliabilityKind::kBestEffort;
    q.durability = static_cast<DurabilityKind>(fl >> 1 & 3);
    q.history = fl & 8 ? HistoryKind::kKeepAll : HistoryKind::kKeepLast;
    q.ownership = fl & 16 ? OwnershipKind::kExclusive : OwnershipKind::kShared;
    q.destination_order = fl & 32 ? DestinationOrderKind::kBySourceTimestamp
                                  : DestinationOrderKind::kByReceptionTimestamp;
    uint8_t live = fl >> 6 & 3;
    if (live > 2) return false;
    q.liveliness = static_cast<LivelinessKind>(live);
    q.history_depth = r.U16();
    if (mask & 1) q.deadline_ns = FromMs(r.U32());
    if (mask & 2) q.latency_budget_ns = int64_t{r.U32()} * 1000;
    if (mask & 4) q.lifespan_ns = FromMs(r.U32());
    if (mask & 8) q.liveliness_lease_ns = FromMs(r.U32());
    if (mask & 16) q.ownership_strength = static_cast<int32_t>(r.U32());
    if (!r.Str(&e.topic_name) || !r.Str(&e.type_name)) return false;
    uint8_t parts = r.U8();
    for (uint8_t k = 0; k < parts && r.ok(); ++k) {
      std::string s;
      if (!r.Str(&s)) return false;
      q.partitions.push_back(std::move(s));
    }
    e.qos = std::move(q);
    rec->endpoints.push_back(std::move(e));
  }
  return r.ok();
}

// ---- Bloom filter of (prefix, nonce, incarnation, state) --------------------

// The nonce is in the key so that a record of another process claiming the
// same prefix is "missing" from a filter and reaches the claimants, which
// then see the collision.
uint64_t KeyHash64(const GuidPrefix& p, uint64_t nonce, uint32_t incarnation,
                   uint8_t state, uint32_t salt) {
  uint64_t h = 0xcbf29ce484222325ull ^ salt;
  auto mix = [&](uint8_t b) {
    h ^= b;
    h *= 0x100000001b3ull;
  };
  for (uint8_t b : p.bytes) mix(b);
  for (int i = 0; i < 8; ++i) mix(static_cast<uint8_t>(nonce >> 8 * i));
  for (int i = 0; i < 4; ++i) mix(static_cast<uint8_t>(incarnation >> 8 * i));
  mix(state);
  // A final avalanche, so nearby prefixes spread over the filter.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

void BloomAdd(std::span<std::byte> bits, uint32_t m, uint64_t h) {
  uint64_t h1 = h, h2 = (h >> 32) | 1;
  for (uint32_t i = 0; i < kBloomHashes; ++i) {
    uint32_t b = static_cast<uint32_t>((h1 + i * h2) % m);
    bits[b / 8] |= std::byte(1u << (b % 8));
  }
}

bool BloomHas(std::span<const std::byte> bits, uint32_t m, uint64_t h) {
  uint64_t h1 = h, h2 = (h >> 32) | 1;
  for (uint32_t i = 0; i < kBloomHashes; ++i) {
    uint32_t b = static_cast<uint32_t>((h1 + i * h2) % m);
    if ((std::to_integer<uint8_t>(bits[b / 8]) & (1u << (b % 8))) == 0) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool IsGossipMessage(std::span<const std::byte> m) {
  return m.size() >= kHeaderSize + kSubmessageHeaderSize &&
         std::to_integer<uint8_t>(m[6]) == kVendorRinglab.bytes[0] &&
         std::to_integer<uint8_t>(m[7]) == kVendorRinglab.bytes[1] &&
         std::memcmp(m.data(), "RTPS", 4) == 0 &&
         std::to_integer<uint8_t>(m[kHeaderSize]) == kGossipSubmessageId;
}

GossipDiscovery::GossipDiscovery(GossipConfig config, Timestamp now)
    : config_(std::move(config)),
      random_state_(config_.random_seed ^ 0x6a09e667f3bcc909ull) {
  self_.prefix = config_.prefix;
  self_.nonce = config_.nonce != 0 ? config_.nonce : (Random() | 1);
  self_.gossip_locator = config_.self;
  contacts_ = config_.seeds;
  // Members start their periods out of step with each other.
  next_period_ = now + Duration(static_cast<int64_t>(RandomBelow(
                           static_cast<uint64_t>(config_.period_ns))));
  next_sync_ = now;
  recent_.reserve(64);
}

uint64_t GossipDiscovery::Random() {
  uint64_t z = (random_state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void GossipDiscovery::SetLocalRecord(GossipRecord record, Timestamp now) {
  record.prefix = config_.prefix;
  record.nonce = self_.nonce;
  record.incarnation = self_.incarnation + 1;
  record.state =
      left_ ? GossipRecord::State::kDead : GossipRecord::State::kAlive;
  if (record.gossip_locator.kind == Locator::kInvalid) {
    record.gossip_locator = config_.self;
  }
  self_ = std::move(record);
  recent_.push_back(self_.prefix);  // piggy-back the change
  (void)now;
}

void GossipDiscovery::AddContact(const Locator& l) {
  if (members_.size() >= config_.max_members) return;
  if (std::find(contacts_.begin(), contacts_.end(), l) == contacts_.end()) {
    contacts_.push_back(l);
    next_sync_ = Timestamp::Zero();  // pull from it at the next period
  }
}

const GossipRecord* GossipDiscovery::FindMember(const GuidPrefix& p) const {
  auto it = members_.find(p);
  return it == members_.end() ? nullptr : &it->second.record;
}

std::optional<GossipEvent> GossipDiscovery::PollEvent() {
  if (event_head_ == events_.size()) {
    events_.clear();
    event_head_ = 0;
    return std::nullopt;
  }
  return std::move(events_[event_head_++]);
}

uint32_t GossipDiscovery::PiggybackLimit() const {
  // ceil(log2(alive + 1)), at least 1; bit_width keeps it bounded for any
  // count (a shift loop here never ended when alive_ had wrapped).
  const uint32_t log =
      std::max<uint32_t>(1, static_cast<uint32_t>(std::bit_width(alive_)));
  return config_.piggyback_lambda * log;
}

GossipDiscovery::Member* GossipDiscovery::RandomMember(
    const GuidPrefix* except) {
  if (probe_order_.empty()) return nullptr;
  for (int tries = 0; tries < 8; ++tries) {
    const GuidPrefix& p = probe_order_[RandomBelow(probe_order_.size())];
    auto it = members_.find(p);
    if (it == members_.end()) continue;
    if (it->second.record.state == GossipRecord::State::kDead) continue;
    if (except != nullptr && p == *except) continue;
    return &it->second;
  }
  return nullptr;
}

// ---- Merging records (SWIM §4.2: incarnation orders a member's states) ------

bool GossipDiscovery::Merge(GossipRecord r, Timestamp now) {
  ++counters_.records_received;
  if (r.prefix == self_.prefix) {
    if (r.nonce != self_.nonce) {
      ++counters_.collisions;
      events_.push_back({GossipEvent::Kind::kPrefixCollision, std::move(r)});
      return false;
    }
    // Someone thinks we are suspect or dead: refute with a higher
    // incarnation (unless we are leaving).
    if (!left_ && r.state != GossipRecord::State::kAlive &&
        r.incarnation >= self_.incarnation) {
      ++counters_.refutations;
      self_.incarnation = r.incarnation + 1;
      recent_.push_back(self_.prefix);
    }
    return false;
  }
  auto it = members_.find(r.prefix);
  if (it != members_.end()) {
    Member& m = it->second;
    if (r.nonce != m.record.nonce) {
      ++counters_.collisions;
      events_.push_back({GossipEvent::Kind::kPrefixCollision, std::move(r)});
      return false;
    }
    bool newer =
        r.incarnation > m.record.incarnation ||
        (r.incarnation == m.record.incarnation &&
         static_cast<uint8_t>(r.state) > static_cast<uint8_t>(m.record.state));
    if (!newer) return false;
    ++counters_.records_new;
    GossipRecord::State was = m.record.state;
    // A suspect or dead update carries no endpoints: keep what we had.
    if (r.state != GossipRecord::State::kAlive && r.endpoints.empty()) {
      r.endpoints = std::move(m.record.endpoints);
    }
    m.record = std::move(r);
    m.wire.clear();
    EncodeRecord(m.record, &m.wire);
    m.piggybacked = 0;
    recent_.push_back(m.record.prefix);
    switch (m.record.state) {
      case GossipRecord::State::kAlive:
        m.suspect_deadline = Timestamp::Never();
        if (was == GossipRecord::State::kDead) {
          ++alive_;
          m.dead_since = Timestamp::Never();
          events_.push_back({GossipEvent::Kind::kMemberJoined, m.record});
        } else {
          events_.push_back({GossipEvent::Kind::kMemberUpdated, m.record});
        }
        break;
      case GossipRecord::State::kSuspect:
        // A tombstone revived as suspect counts as alive again: the suspect
        // deadline will declare it dead (and count it down) once more.
        // Without this, alive_ wrapped below zero (found by gossip_fuzzer).
        if (was == GossipRecord::State::kDead) {
          ++alive_;
          m.dead_since = Timestamp::Never();
        }
        if (m.suspect_deadline.is_never()) {
          m.suspect_deadline =
              now + Duration(config_.period_ns * config_.suspicion_periods);
        }
        break;
      case GossipRecord::State::kDead:
        if (was != GossipRecord::State::kDead) {
          --alive_;
          ++counters_.deaths;
          m.dead_since = now;
          events_.push_back({GossipEvent::Kind::kMemberLeft, m.record});
        }
        break;
    }
    return true;
  }
  if (members_.size() >= config_.max_members) {
    ++counters_.member_limit;
    return false;
  }
  ++counters_.records_new;
  Member m;
  m.record = std::move(r);
  EncodeRecord(m.record, &m.wire);
  const bool dead = m.record.state == GossipRecord::State::kDead;
  if (dead) {
    m.dead_since = now;  // a tombstone: keeps an old alive record out
  } else {
    ++alive_;
    if (m.record.state == GossipRecord::State::kSuspect) {
      m.suspect_deadline =
          now + Duration(config_.period_ns * config_.suspicion_periods);
    }
    events_.push_back({GossipEvent::Kind::kMemberJoined, m.record});
    contacts_.erase(std::remove(contacts_.begin(), contacts_.end(),
                                m.record.gossip_locator),
                    contacts_.end());
    // SWIM's round-robin probing over a random order: insert at random.
    probe_order_.insert(
        probe_order_.begin() +
            static_cast<ptrdiff_t>(RandomBelow(probe_order_.size() + 1)),
        m.record.prefix);
  }
  members_.emplace(m.record.prefix, std::move(m));
  return true;
}

void GossipDiscovery::Suspect(Member& m, Timestamp now) {
  if (m.record.state != GossipRecord::State::kAlive) return;
  ++counters_.suspicions;
  m.record.state = GossipRecord::State::kSuspect;
  m.suspect_deadline =
      now + Duration(config_.period_ns * config_.suspicion_periods);
  m.wire.clear();
  EncodeRecord(m.record, &m.wire);
  m.piggybacked = 0;
  recent_.push_back(m.record.prefix);
}

// ---- Messages
// ------------------------------------------------------------------

// Header, submessage header (patched length), version, type, seq, then the
// type's fields; records last, as many as fit.
void GossipDiscovery::Queue(Type type, const Locator& to, uint32_t seq,
                            const GuidPrefix* about,
                            const Locator* about_locator) {
  Outgoing o;
  o.to = to;
  std::vector<std::byte>& b = o.bytes;
  b.reserve(256);
  Writer w(&b);
  w.Bytes("RTPS", 4);
  w.U8(2);
  w.U8(5);
  w.Bytes(kVendorRinglab.bytes.data(), 2);
  w.Bytes(self_.prefix.bytes.data(), 12);
  w.U8(kGossipSubmessageId);
  w.U8(0x01);  // little endian
  w.U16(0);    // length, patched below
  w.U8(kVersion);
  w.U8(static_cast<uint8_t>(type));
  w.U16(about != nullptr ? 1 : 0);  // flags: bit 0 = `about` follows
  w.U32(seq);
  const size_t limit = config_.max_message_bytes;
  if (about != nullptr) {
    w.Bytes(about->bytes.data(), 12);
    PutLocator(w, about_locator != nullptr ? *about_locator : Locator{});
  }
  if (type == Type::kSync) {
    // Pull: a Bloom filter of every record we hold (ours included), and
    // our record so the peer learns us too.
    uint32_t entries = static_cast<uint32_t>(members_.size()) + 1;
    uint32_t m =
        std::max<uint32_t>(64, (entries * kBloomBitsPerEntry + 31) & ~31u);
    uint32_t salt = static_cast<uint32_t>(Random());
    w.U32(m);
    w.U32(salt);
    size_t at = b.size();
    b.resize(at + m / 8);
    std::span<std::byte> bits(b.data() + at, m / 8);
    BloomAdd(bits, m,
             KeyHash64(self_.prefix, self_.nonce, self_.incarnation,
                       static_cast<uint8_t>(self_.state), salt));
    for (const auto& [p, mem] : members_) {
      BloomAdd(bits, m,
               KeyHash64(p, mem.record.nonce, mem.record.incarnation,
                         static_cast<uint8_t>(mem.record.state), salt));
    }
  }
  // Records: our own on a sync (so the peer learns us), and piggy-backed
  // recent changes on probes and acks (SWIM's dissemination).
  std::vector<std::byte> self_wire;
  uint16_t count = 0;
  size_t count_at = b.size();
  w.U16(0);
  auto add = [&](const std::vector<std::byte>& rec) {
    if (b.size() + rec.size() > limit) return false;
    b.insert(b.end(), rec.begin(), rec.end());
    ++count;
    ++counters_.records_sent;
    return true;
  };
  if (type == Type::kSync || type == Type::kPing || type == Type::kAck) {
    bool self_recent = std::find(recent_.begin(), recent_.end(),
                                 self_.prefix) != recent_.end();
    if (type == Type::kSync || self_recent || left_) {
      EncodeRecord(self_, &self_wire);
      add(self_wire);
    }
  }
  if (type == Type::kPing || type == Type::kAck) {
    const uint32_t limit_count = PiggybackLimit();
    uint32_t added = 0;
    for (size_t i = recent_.size(); i-- > 0 && added < config_.max_piggyback;) {
      auto it = members_.find(recent_[i]);
      if (it == members_.end()) continue;
      Member& mem = it->second;
      if (mem.piggybacked >= limit_count) continue;
      if (!add(mem.wire)) break;
      ++mem.piggybacked;
      ++added;
    }
    // Forget changes that were told often enough.
    recent_.erase(std::remove_if(recent_.begin(), recent_.end(),
                                 [&](const GuidPrefix& p) {
                                   if (p == self_.prefix) return false;
                                   auto it = members_.find(p);
                                   return it == members_.end() ||
                                          it->second.piggybacked >= limit_count;
                                 }),
                  recent_.end());
    if (recent_.size() > 256) {
      recent_.erase(recent_.begin(), recent_.end() - 256);
    }
  }
  b[count_at] = std::byte(count & 0xff);
  b[count_at + 1] = std::byte(count >> 8);
  size_t len = b.size() - kHeaderSize - kSubmessageHeaderSize;
  b[kHeaderSize + 2] = std::byte(len & 0xff);
  b[kHeaderSize + 3] = std::byte(len >> 8);
  outgoing_.push_back(std::move(o));
  switch (type) {
    case Type::kPing:
      ++counters_.probes_sent;
      break;
    case Type::kAck:
      ++counters_.acks_sent;
      break;
    case Type::kPingReq:
      ++counters_.indirect_probes_sent;
      break;
    case Type::kSync:
      ++counters_.syncs_sent;
      break;
    case Type::kSyncReply:
      ++counters_.sync_replies_sent;
      break;
  }
}

std::optional<GossipTransmit> GossipDiscovery::PollTransmit(
    std::span<std::byte> out, Timestamp now) {
  while (outgoing_head_ < outgoing_.size()) {
    Outgoing& o = outgoing_[outgoing_head_++];
    if (o.bytes.size() > out.size() || o.bytes.size() > 0xffff + kHeaderSize) {
      ++counters_.malformed;  // our own message too large: dropped
      continue;
    }
    std::memcpy(out.data(), o.bytes.data(), o.bytes.size());
    GossipTransmit t{o.bytes.size(), o.to};
    ++counters_.messages_sent;
    counters_.bytes_sent += t.size_bytes;
    return t;
  }
  outgoing_.clear();
  outgoing_head_ = 0;
  (void)now;
  return std::nullopt;
}

void GossipDiscovery::OnDatagram(std::span<const std::byte> bytes,
                                 const Locator& from, Timestamp now) {
  ++counters_.messages_received;
  counters_.bytes_received += bytes.size();
  if (!IsGossipMessage(bytes) || bytes.size() < kMessageHeader) {
    ++counters_.malformed;
    return;
  }
  GuidPrefix sender;
  std::memcpy(sender.bytes.data(), bytes.data() + 8, 12);
  Reader r(bytes.subspan(kHeaderSize));
  r.U8();
  uint8_t flags = r.U8();
  uint16_t len = r.U16();
  if ((flags & 1) == 0 || len > r.left() || len < 8) {
    ++counters_.malformed;  // we only write little endian
    return;
  }
  Reader body(bytes.subspan(kHeaderSize + kSubmessageHeaderSize, len));
  uint8_t version = body.U8();
  uint8_t type = body.U8();
  uint16_t msg_flags = body.U16();
  uint32_t seq = body.U32();
  if (version != kVersion || type < 1 || type > 5 || (msg_flags & ~1u) != 0) {
    ++counters_.malformed;
    return;
  }
  Handle(static_cast<Type>(type), msg_flags, sender, seq,
         bytes.subspan(kHeaderSize + kSubmessageHeaderSize + 8, len - 8), from,
         now);
}

void GossipDiscovery::Handle(Type type, uint16_t msg_flags,
                             const GuidPrefix& sender, uint32_t seq,
                             std::span<const std::byte> rest,
                             const Locator& from, Timestamp now) {
  (void)sender;  // records name their own prefix; the header's is not used
  if (left_) return;
  Reader r(rest);
  GuidPrefix about;
  Locator about_locator;
  const bool has_about = msg_flags & 1;
  if (type == Type::kPingReq && !has_about) {
    ++counters_.malformed;
    return;
  }
  if (has_about) {
    auto p = r.Bytes(12);
    if (!r.ok()) {
      ++counters_.malformed;
      return;
    }
    std::memcpy(about.bytes.data(), p.data(), 12);
    about_locator = GetLocator(r);
  }
  std::span<const std::byte> filter;
  uint32_t filter_bits = 0, salt = 0;
  if (type == Type::kSync) {
    filter_bits = r.U32();
    salt = r.U32();
    if (filter_bits == 0 || filter_bits % 32 != 0 ||
        filter_bits > 8 * config_.max_message_bytes) {
      ++counters_.malformed;
      return;
    }
    filter = r.Bytes(filter_bits / 8);
  }
  if (type == Type::kAck) {
    // The answer to a probe we run for someone else goes back to them
    // (with the target in `about`); else it answers our own probe.
    bool relayed = false;
    for (auto it = relays_.begin(); it != relays_.end(); ++it) {
      if (it->seq == seq) {
        Queue(Type::kAck, it->requester, it->their_seq, &it->target, nullptr);
        relays_.erase(it);
        relayed = true;
        break;
      }
    }
    if (!relayed && probe_pending_ && seq == probe_seq_ &&
        (!has_about || about == probe_target_)) {
      probe_pending_ = false;
    }
  }
  uint16_t count = r.U16();
  if (!r.ok()) {
    ++counters_.malformed;
    return;
  }
  bool news = false;
  for (uint16_t i = 0; i < count; ++i) {
    GossipRecord rec;
    if (!DecodeRecord(r, &rec)) {
      ++counters_.malformed;
      break;
    }
    news |= Merge(std::move(rec), now);
  }
  switch (type) {
    case Type::kPing:
      Queue(Type::kAck, from, seq);
      break;
    case Type::kPingReq: {
      // Probe the target for the requester (SWIM §3.1).
      uint32_t s = ++seq_;
      Queue(Type::kPing, about_locator, s);
      if (relays_.size() < 64) {
        relays_.push_back(
            {s, seq, from, about, now + Duration(config_.period_ns)});
      }
      break;
    }
    case Type::kSync: {
      // Reply with what the filter lacks: ours first, then members, as
      // many as fit one message (the requester pulls again for the rest).
      Outgoing o;
      o.to = from;
      std::vector<std::byte>& b = o.bytes;
      Writer w(&b);
      w.Bytes("RTPS", 4);
      w.U8(2);
      w.U8(5);
      w.Bytes(kVendorRinglab.bytes.data(), 2);
      w.Bytes(self_.prefix.bytes.data(), 12);
      w.U8(kGossipSubmessageId);
      w.U8(0x01);
      w.U16(0);
      w.U8(kVersion);
      w.U8(static_cast<uint8_t>(Type::kSyncReply));
      w.U16(0);
      w.U32(seq);
      size_t count_at = b.size();
      w.U16(0);
      uint16_t n = 0;
      auto missing = [&](const GossipRecord& rec) {
        return !BloomHas(filter, filter_bits,
                         KeyHash64(rec.prefix, rec.nonce, rec.incarnation,
                                   static_cast<uint8_t>(rec.state), salt));
      };
      auto add = [&](const std::vector<std::byte>& rec) {
        if (b.size() + rec.size() > config_.max_message_bytes || n == 0xffff) {
          return false;
        }
        b.insert(b.end(), rec.begin(), rec.end());
        ++n;
        ++counters_.records_sent;
        return true;
      };
      if (missing(self_)) {
        std::vector<std::byte> sw;
        EncodeRecord(self_, &sw);
        add(sw);
      }
      // (The requester's own record is in its filter, so it is not sent
      // back; another process's record with its prefix is.)
      for (const auto& [p, mem] : members_) {
        if (missing(mem.record) && !add(mem.wire)) {
          break;
        }
      }
      b[count_at] = std::byte(n & 0xff);
      b[count_at + 1] = std::byte(n >> 8);
      size_t len = b.size() - kHeaderSize - kSubmessageHeaderSize;
      b[kHeaderSize + 2] = std::byte(len & 0xff);
      b[kHeaderSize + 3] = std::byte(len >> 8);
      outgoing_.push_back(std::move(o));
      ++counters_.sync_replies_sent;
      break;
    }
    case Type::kSyncReply:
      // Back off while pulls bring nothing new.
      sync_backoff_ =
          news ? 1 : std::min(sync_backoff_ * 2, config_.max_sync_backoff);
      next_sync_ = now + Duration(config_.period_ns * sync_backoff_);
      break;
    case Type::kAck:
      break;
  }
}

// ---- Timers
// -------------------------------------------------------------------

Timestamp GossipDiscovery::NextDeadline() const {
  if (left_) return Timestamp::Never();
  Timestamp next = next_period_;
  if (probe_pending_ && !indirect_sent_) {
    next = std::min(next, probe_sent_ + Duration(config_.probe_timeout_ns));
  }
  return next;
}

void GossipDiscovery::OnTimeout(Timestamp now) {
  if (left_) return;
  if (probe_pending_ && !indirect_sent_ &&
      now >= probe_sent_ + Duration(config_.probe_timeout_ns)) {
    // SWIM §3.1: no direct ack in time: ask k members to probe it.
    indirect_sent_ = true;
    auto it = members_.find(probe_target_);
    if (it != members_.end()) {
      for (uint32_t i = 0; i < config_.indirect_probes; ++i) {
        Member* via = RandomMember(&probe_target_);
        if (via == nullptr) break;
        Queue(Type::kPingReq, via->record.gossip_locator, probe_seq_,
              &probe_target_, &it->second.record.gossip_locator);
      }
    }
  }
  if (now >= next_period_) Tick(now);
}

void GossipDiscovery::Tick(Timestamp now) {
  next_period_ = now + Duration(config_.period_ns);
  // The last period's probe got no ack at all: suspect (SWIM §4.2).
  if (probe_pending_) {
    auto it = members_.find(probe_target_);
    if (it != members_.end()) Suspect(it->second, now);
    probe_pending_ = false;
  }
  // Suspects that were not refuted are dead; tombstones expire.
  std::vector<GuidPrefix> gone;
  for (auto& [p, m] : members_) {
    if (m.record.state == GossipRecord::State::kSuspect &&
        m.suspect_deadline <= now) {
      m.record.state = GossipRecord::State::kDead;
      m.dead_since = now;
      m.wire.clear();
      EncodeRecord(m.record, &m.wire);
      m.piggybacked = 0;
      recent_.push_back(p);
      --alive_;
      ++counters_.deaths;
      events_.push_back({GossipEvent::Kind::kMemberLeft, m.record});
    } else if (m.record.state == GossipRecord::State::kDead &&
               m.dead_since + Duration(config_.period_ns * kTombstonePeriods) <=
                   now) {
      gone.push_back(p);
    }
  }
  for (const GuidPrefix& p : gone) {
    members_.erase(p);
    probe_order_.erase(std::remove(probe_order_.begin(), probe_order_.end(), p),
                       probe_order_.end());
  }
  relays_.erase(std::remove_if(relays_.begin(), relays_.end(),
                               [&](const Relay& r) { return r.until <= now; }),
                relays_.end());
  // One probe per period, round robin (SWIM §4.3).
  for (size_t tries = 0; tries < probe_order_.size(); ++tries) {
    if (probe_cursor_ >= probe_order_.size()) probe_cursor_ = 0;
    const GuidPrefix p = probe_order_[probe_cursor_++];
    auto it = members_.find(p);
    if (it == members_.end() ||
        it->second.record.state == GossipRecord::State::kDead) {
      continue;
    }
    probe_target_ = p;
    probe_seq_ = ++seq_;
    probe_pending_ = true;
    indirect_sent_ = false;
    probe_sent_ = now;
    Queue(Type::kPing, it->second.record.gossip_locator, probe_seq_);
    break;
  }
  // Anti-entropy pull: contacts (seeds, SPDP hints) until they are members,
  // then a random member.
  if (now >= next_sync_) {
    next_sync_ = now + Duration(config_.period_ns * sync_backoff_);
    // (contacts_ holds only contacts that are not members yet: Merge()
    // drops a contact when its member joins.)
    // Contacts take turns (a seed that never answers must not keep every
    // pull to itself), and once we have members every other pull goes to
    // one of them, so a dead contact cannot stall anti-entropy either.
    std::optional<Locator> dest;
    if (contacts_.empty() || (last_sync_to_contact_ && alive_ > 0)) {
      if (Member* m = RandomMember()) {
        dest = m->record.gossip_locator;
        last_sync_to_contact_ = false;
      }
    }
    if (!dest && !contacts_.empty()) {
      dest = contacts_.front();
      std::rotate(contacts_.begin(), contacts_.begin() + 1, contacts_.end());
      last_sync_to_contact_ = true;
    }
    if (dest) Queue(Type::kSync, *dest, ++seq_);
  }
}

void GossipDiscovery::Leave(Timestamp now) {
  if (left_) return;
  self_.state = GossipRecord::State::kDead;
  ++self_.incarnation;
  left_ = true;
  recent_.push_back(self_.prefix);
  for (int i = 0; i < 3; ++i) {
    if (Member* m = RandomMember()) {
      Queue(Type::kPing, m->record.gossip_locator, ++seq_);
    }
  }
  (void)now;
}

}  // namespace ringlab::rtps
