// GossipDiscovery: an experimental discovery mode for ringlab participants
// (see rtps/GOSSIP.md): SWIM-style membership (Das, Gupta, Motivala 2002:
// a probe per protocol period, indirect probes, suspicion and refutation by
// incarnation) with each member's endpoints carried in its membership
// record, and pull anti-entropy with Bloom-filter digests, so N
// participants reach full knowledge with O(N) records received each
// instead of SPDP's N announcements plus N SEDP sessions.
//
//   GossipConfig c;
//   c.prefix = my_prefix;
//   c.self = Locator::UdpV4(ip, metatraffic_port);
//   c.seeds = {Locator::UdpV4(seed_ip, seed_port)};
//   GossipDiscovery g(c, now);
//   g.SetLocalRecord(record, now);             // our locators and endpoints
//   g.OnDatagram(bytes, from, now);            // IsGossipMessage(bytes)
//   while (auto t = g.PollTransmit(buf, now)) send(buf, t->destination);
//   while (auto e = g.PollEvent()) ...          // joined / updated / left
//
// Messages are RTPS messages (header with our prefix and vendor) holding one
// vendor-specific submessage (id kGossipSubmessageId, §9.4.5.1.1: ids
// 0x80-0xff are vendor-specific and other implementations skip them).
//
// GUID-prefix collisions: every record carries a random 64-bit nonce drawn
// at start; a record with a known prefix but another nonce (ours included)
// is a collision event, and the first record seen keeps the prefix.
//
// Memory: members are bounded by max_members (records beyond are counted
// and dropped); every message is built into the caller's buffer and is at
// most its size. Errors: malformed input is counted per reason and
// dropped. Threading: none.
#ifndef RINGLAB_RTPS_GOSSIP_H_
#define RINGLAB_RTPS_GOSSIP_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "rtps/discovery_data.h"
#include "rtps/types.h"
#include "transport/time.h"

namespace ringlab::rtps {

inline constexpr uint8_t kGossipSubmessageId = 0x80;

// True if `message` is a ringlab gossip message (RTPS header from our
// vendor and a first submessage with kGossipSubmessageId).
bool IsGossipMessage(std::span<const std::byte> message);

struct GossipConfig {
  GuidPrefix prefix;
  Locator self;                     // where peers send gossip (metatraffic)
  std::vector<Locator> seeds;       // first contacts
  uint64_t nonce = 0;               // 0: drawn from `random_seed`
  uint64_t random_seed = 1;         // member choice, Bloom salts, the nonce
  int64_t period_ns = 100'000'000;  // SWIM protocol period
  int64_t probe_timeout_ns = 30'000'000;  // direct probe -> indirect
  uint32_t indirect_probes = 3;
  uint32_t suspicion_periods = 10;  // suspect -> dead after this many
  // Anti-entropy: a pull per period while pulls bring news, backing off
  // (doubling) up to this many periods when they do not.
  uint32_t max_sync_backoff = 32;
  // Largest message built (also bounded by the PollTransmit buffer).
  size_t max_message_bytes = 60000;
  size_t max_members = 4096;
  // SWIM piggy-back: recent changes ride on probes, each up to
  // lambda * ceil(log2(members + 1)) times.
  uint32_t piggyback_lambda = 3;
  uint32_t max_piggyback = 8;
};

// One member's record: who it is, where, and what it publishes/subscribes.
struct GossipRecord {
  GuidPrefix prefix;
  uint64_t nonce = 0;
  uint32_t incarnation = 0;
  enum class State : uint8_t { kAlive = 0, kSuspect = 1, kDead = 2 };
  State state = State::kAlive;
  Locator gossip_locator;  // metatraffic unicast
  Locator user_locator;    // default unicast
  int64_t lease_duration_ns = 10'000'000'000;
  VendorId vendor = kVendorRinglab;
  std::vector<EndpointData> endpoints;  // guid, topic, type, qos
};

struct GossipEvent {
  enum class Kind : uint8_t {
    kMemberJoined,     // `record` is new (alive)
    kMemberUpdated,    // a newer incarnation (locators or endpoints changed)
    kMemberLeft,       // declared dead (failed or left): `record.prefix`
    kPrefixCollision,  // `record` has a known prefix and another nonce
  };
  Kind kind;
  GossipRecord record;
};

struct GossipTransmit {
  size_t size_bytes = 0;
  Locator destination;
};

struct GossipCounters {
  uint64_t messages_sent = 0, bytes_sent = 0;
  uint64_t messages_received = 0, bytes_received = 0;
  uint64_t probes_sent = 0, acks_sent = 0, indirect_probes_sent = 0;
  uint64_t syncs_sent = 0, sync_replies_sent = 0;
  uint64_t records_sent = 0, records_received = 0, records_new = 0;
  uint64_t malformed = 0;     // dropped: bad structure or values
  uint64_t member_limit = 0;  // dropped: max_members reached
  uint64_t collisions = 0;
  uint64_t suspicions = 0, deaths = 0, refutations = 0;
};

class GossipDiscovery {
 public:
  GossipDiscovery(GossipConfig config, Timestamp now);
  GossipDiscovery(const GossipDiscovery&) = delete;
  GossipDiscovery& operator=(const GossipDiscovery&) = delete;

  // Our own record (its prefix, nonce and incarnation are ours to set: the
  // incarnation goes up each time the content changes).
  void SetLocalRecord(GossipRecord record, Timestamp now);
  // Leaving: our record goes out as dead to a few members at once.
  void Leave(Timestamp now);
  // A contact learnt elsewhere (e.g. an SPDP announcement with the gossip
  // flag): pulled from at the next period if not yet a member.
  void AddContact(const Locator& l);

  void OnDatagram(std::span<const std::byte> bytes, const Locator& from,
                  Timestamp now);
  std::optional<GossipTransmit> PollTransmit(std::span<std::byte> out,
                                             Timestamp now);
  Timestamp NextDeadline() const;
  void OnTimeout(Timestamp now);
  std::optional<GossipEvent> PollEvent();

  const GossipCounters& counters() const { return counters_; }
  size_t member_count() const { return alive_; }  // alive, not counting us
  const GossipRecord* FindMember(const GuidPrefix& p) const;

 private:
  // A member as we know it, with its record encoded once for the wire.
  struct Member {
    GossipRecord record;
    std::vector<std::byte> wire;
    Timestamp suspect_deadline = Timestamp::Never();
    Timestamp dead_since = Timestamp::Never();
    uint32_t piggybacked = 0;  // times sent as a piggy-backed change
  };
  // A message waiting to go out, encoded when it was queued.
  struct Outgoing {
    Locator to;
    std::vector<std::byte> bytes;
  };
  enum class Type : uint8_t;

  void Handle(Type type, uint16_t flags, const GuidPrefix& from_prefix,
              uint32_t seq, std::span<const std::byte> body,
              const Locator& from, Timestamp now);
  // Merges a received record; true if it was news.
  bool Merge(GossipRecord r, Timestamp now);
  void Suspect(Member& m, Timestamp now);
  // Queues a message of `type` to `to`; Build() encodes it when polled.
  void Queue(Type type, const Locator& to, uint32_t seq,
             const GuidPrefix* about = nullptr,
             const Locator* about_locator = nullptr);
  size_t Build(const Outgoing& o, std::span<std::byte> out);
  Member* RandomMember(const GuidPrefix* except = nullptr);
  void Tick(Timestamp now);
  uint32_t PiggybackLimit() const;

  uint64_t Random();  // splitmix64, seeded by config.random_seed
  uint64_t RandomBelow(uint64_t n) { return n == 0 ? 0 : Random() % n; }

  GossipConfig config_;
  GossipRecord self_;
  uint64_t random_state_;
  // Ordered (not hashed): iteration order decides which records fit a
  // reply, and a simulation must not depend on absl's per-process hash
  // seed.
  std::map<GuidPrefix, Member> members_;
  std::vector<GuidPrefix> probe_order_;  // round robin over a shuffle
  size_t probe_cursor_ = 0;
  size_t alive_ = 0;
  std::vector<Locator> contacts_;
  bool last_sync_to_contact_ = false;  // the last pull went to a contact
  std::vector<Outgoing> outgoing_;
  size_t outgoing_head_ = 0;
  // Indirect probes we run for others: (seq we used, requester, target).
  struct Relay {
    uint32_t seq;
    uint32_t their_seq;
    Locator requester;
    GuidPrefix target;
    Timestamp until;
  };
  std::vector<Relay> relays_;
  std::vector<GossipEvent> events_;
  size_t event_head_ = 0;
  std::vector<GuidPrefix> recent_;  // piggy-back candidates, newest last
  Timestamp next_period_;
  Timestamp next_sync_;
  uint32_t sync_backoff_ = 1;
  uint32_t seq_ = 0;
  // The probe of this period.
  GuidPrefix probe_target_;
  bool probe_pending_ = false;
  bool indirect_sent_ = false;
  uint32_t probe_seq_ = 0;
  Timestamp probe_sent_;
  bool left_ = false;
  GossipCounters counters_;
};

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_GOSSIP_H_
