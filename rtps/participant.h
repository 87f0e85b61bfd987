// Participant: the sans-io DDS/RTPS participant core (DDSI-RTPS 2.5 §8.4,
// §8.5). No sockets, clocks or threads: datagrams and `now` go in, datagrams
// come out into a caller-owned buffer together with their destination
// locators, one NextDeadline() says when to call OnTimeout(), and events are
// polled.
//
// What it does:
//   - SPDP (§8.5.3): announces the participant every spdp_period to
//     `spdp_destinations` (the SPDP multicast locator and/or unicast peers),
//     and at once by unicast to each newly discovered participant. Remote
//     leases expire; any valid message from a participant renews its lease.
//   - SEDP (§8.5.4): reliable, transient-local built-in writers/readers for
//     publications and subscriptions; matching by topic, type, partition and
//     request-offered QoS (an incompatibility is an event naming the policy).
//   - Writers (§8.4.7-§8.4.9): best effort and reliable stateful writers with
//     heartbeats, ACKNACK handling, retransmission and GAPs for samples no
//     longer in the history; KEEP_LAST n per instance / KEEP_ALL with
//     RESOURCE_LIMITS; VOLATILE and TRANSIENT_LOCAL.
//   - Readers (§8.4.10-§8.4.12): best effort and reliable stateful readers
//     that deliver each sample once and in order, answer heartbeats with
//     ACKNACKs (SN sets) after heartbeat_response_delay, keep KEEP_LAST n per
//     instance, and derive the key hash from the payload when the writer
//     sends none (as Cyclone DDS does, §9.6.4.8).
//   - Large samples (§8.3.7.3, §8.4.14): DATA_FRAG above fragment_size_bytes,
//     bounded reassembly with time-outs, NACK_FRAG / HEARTBEAT_FRAG repair.
//   - QoS (DDS 1.4 §2.2.3): DEADLINE (offered/requested deadline-missed
//     events), LIFESPAN (expired samples leave both histories and are never
//     delivered), LATENCY_BUDGET (samples wait up to the writer's budget to
//     share a datagram), LIVELINESS (AUTOMATIC, MANUAL_BY_PARTICIPANT with
//     the participant message endpoints of §8.4.13, MANUAL_BY_TOPIC through
//     heartbeats with the liveliness flag), OWNERSHIP EXCLUSIVE by strength,
//     DESTINATION_ORDER BY_SOURCE_TIMESTAMP, PARTITION wildcards. Each
//     timer fires at the exact `now` the policy implies (NextDeadline).
//
//   ParticipantConfig config;
//   config.guid_prefix = RandomPrefix();            // caller's job
//   config.metatraffic_unicast = {Locator::UdpV4(0x7f000001, 7410)};
//   config.default_unicast = {Locator::UdpV4(0x7f000001, 7411)};
//   config.spdp_destinations = {Locator::UdpV4(ports::kDefaultMulticastGroup,
//                                              7400)};
//   auto p = Participant::Create(config, now);      // StatusOr
//   WriterConfig wc{"Square", "ShapeType", EndpointQos::WriterDefaults()};
//   EndpointHandle w = *(*p)->CreateWriter(wc, now);
//   (*p)->Write(w, payload, key_hash, wall_clock_ns, now);
//   while (auto t = (*p)->PollTransmit(buffer, now)) send(buffer, *t);
//   (*p)->OnDatagram(bytes, source, now);
//   while (const ReceivedSample* s = (*p)->Take(reader)) use(*s);
//   while (auto e = (*p)->PollEvent()) log(*e);
//
// Memory: everything is sized on the control path (creating endpoints,
// discovering peers). In steady state, Write/OnDatagram/PollTransmit/Take
// reuse pooled sample buffers and allocate nothing. Remote participants and
// endpoints are capped (max_remote_participants / max_remote_endpoints);
// announcements beyond the cap are counted and dropped.
//
// Errors: control calls return absl::Status(Or). Bad input from the wire is
// counted per reason in counters() and dropped; it never crashes and never
// disturbs accepted data.
//
// Threading: none; one thread drives a Participant.
#ifndef RINGLAB_RTPS_PARTICIPANT_H_
#define RINGLAB_RTPS_PARTICIPANT_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rtps/discovery_data.h"
#include "rtps/message.h"
#include "rtps/qos.h"
#include "rtps/types.h"
#include "transport/time.h"

namespace ringlab::rtps {

namespace internal {
struct ReassemblyBudget;
class FragmentReassembler;
struct PartialSample;
}  // namespace internal
class GossipDiscovery;
struct GossipCounters;
struct GossipRecord;

// How this participant finds the others (see rtps/GOSSIP.md).
enum class DiscoveryMode : uint8_t {
  kSpdp,    // RTPS SPDP + SEDP (§8.5), with everyone
  kGossip,  // SWIM gossip with ringlab peers; SPDP/SEDP with the rest
};

struct ParticipantConfig {
  uint32_t domain_id = 0;
  GuidPrefix guid_prefix;  // must be unique; the driver draws it at random
  // Our locators, advertised in SPDP. The driver fills them after binding.
  std::vector<Locator> metatraffic_unicast;
  std::vector<Locator> metatraffic_multicast;
  std::vector<Locator> default_unicast;
  std::vector<Locator> default_multicast;
  // Where periodic SPDP announcements go: the SPDP multicast group and/or a
  // unicast peer list (§8.5.3.2 SPDPbuiltinParticipantWriter reader locators).
  std::vector<Locator> spdp_destinations;
  int64_t lease_duration_ns = 10'000'000'000;
  int64_t spdp_period_ns = 3'000'000'000;
  int64_t heartbeat_period_ns = 100'000'000;
  // How long a reliable reader waits before answering a heartbeat (§8.4.12.1
  // heartbeatResponseDelay).
  int64_t heartbeat_response_delay_ns = 0;
  size_t max_remote_participants = 256;
  size_t max_remote_endpoints = 4096;
  // Largest datagram built (also bounded by the PollTransmit buffer).
  size_t max_message_bytes = 65000;
  // Fragmentation (§8.3.7.3, §8.4.14): samples larger than
  // fragment_size_bytes go out as DATA_FRAG (as many fragments per datagram
  // as fit). 1344 is Cyclone DDS's FragmentSize.
  size_t fragment_size_bytes = 1344;
  // The largest sample written or accepted.
  size_t max_sample_bytes = 16 << 20;
  // Reassembly: partial samples per remote writer, the bytes all partial
  // samples may hold together, and how long one may go without a new
  // fragment before it is dropped (a reliable reader then asks for it
  // whole).
  size_t max_partial_samples_per_writer = 8;
  size_t max_reassembly_bytes = 64 << 20;
  int64_t reassembly_timeout_ns = 5'000'000'000;
  // A reliable reader does not ask again for fragments it asked for less
  // than this long ago (the repair is probably on its way), in the spirit
  // of §8.4.12.1 heartbeatSuppressionDuration; later heartbeats do.
  int64_t nack_frag_suppression_ns = 10'000'000;
  // Caps for KEEP_ALL / unlimited RESOURCE_LIMITS, so memory stays bounded.
  int32_t default_max_samples = 4096;
  int32_t default_max_instances = 4096;
  size_t event_capacity = 1024;
  // CLOCK_REALTIME - `now`, in ns: source timestamps are wall-clock times, so
  // LIFESPAN (expiry = source time + lifespan) and DESTINATION_ORDER need
  // wall time. The driver sets it (and may refresh it with
  // SetWallClockOffset); 0 in simulations, where source times are `now`.
  int64_t wall_clock_offset_ns = 0;
  std::string user_data;
  std::string entity_name;
  // Announced in PID_PROPERTY_LIST (the driver adds __ProcessName, __Pid
  // and __Hostname, as Cyclone does).
  std::vector<std::pair<std::string, std::string>> properties;
  VendorId vendor = kVendorRinglab;
  // Discovery. In kGossip mode, ringlab peers that announce gossip
  // (PID_RINGLAB_GOSSIP) are found through rtps/gossip.h, with our
  // endpoints in our membership record, and other vendors (Cyclone) through
  // SPDP/SEDP as usual: we answer their SPDP at once and announce ourselves
  // by SPDP first after spdp_initial_delay_ns, then every spdp_period_ns.
  DiscoveryMode discovery = DiscoveryMode::kSpdp;
  std::vector<Locator> gossip_seeds;
  int64_t gossip_period_ns = 100'000'000;
  int64_t spdp_initial_delay_ns = 0;
  // Tells this process's gossip records from another one's that claims
  // the same GUID prefix (collision detection); the driver draws it at
  // random. 0: derived from the prefix and the metatraffic locator.
  uint64_t gossip_nonce = 0;
};

// Computes the key hash of a serialized sample (encapsulation header
// included); false if the payload cannot be decoded.
using KeyHashFunction =
    absl::AnyInvocable<bool(std::span<const std::byte> payload, KeyHash* out)>;

struct WriterConfig {
  std::string topic_name;
  std::string type_name;
  EndpointQos qos = EndpointQos::WriterDefaults();
  bool keyed = false;
};

struct ReaderConfig {
  std::string topic_name;
  std::string type_name;
  EndpointQos qos = EndpointQos::ReaderDefaults();
  bool keyed = false;
  // Needed for keyed topics whose writers send no key hash.
  KeyHashFunction key_hash_from_payload;
};

// 1-based index of a local endpoint; 0 is invalid.
using EndpointHandle = uint32_t;

inline constexpr int64_t kNoSourceTimestamp = INT64_MIN;

struct SampleInfo {
  Guid writer;
  SequenceNumber sn = 0;
  int64_t source_time_ns = kNoSourceTimestamp;  // wall clock from INFO_TS
  KeyHash key;
  uint32_t status_info = 0;  // kStatusInfoDisposed | kStatusInfoUnregistered
  bool valid_data = true;    // false for dispose/unregister without data
};

struct ReceivedSample {
  SampleInfo info;
  // Encapsulation header + serialized data; empty when !valid_data.
  std::span<const std::byte> payload;
};

struct Event {
  enum class Kind : uint8_t {
    kParticipantDiscovered,
    kParticipantLost,  // lease expired or disposed
    kPublicationDiscovered,
    kSubscriptionDiscovered,
    kPublicationLost,
    kSubscriptionLost,
    kWriterMatched,  // our writer `local` matched remote reader `remote`
    kWriterUnmatched,
    kReaderMatched,  // our reader `local` matched remote writer `remote`
    kReaderUnmatched,
    kIncompatibleQos,  // `policy` names the first incompatible policy
    kDataAvailable,    // reader `local` went from empty to non-empty
    // DDS 1.4 §2.2.4.1 communication statuses:
    // writer `local` did not write `instance` within its DEADLINE period.
    kOfferedDeadlineMissed,
    // reader `local` got nothing for `instance` within its DEADLINE period
    // (`remote` is the writer that wrote it last).
    kRequestedDeadlineMissed,
    // writer `local` (MANUAL_BY_PARTICIPANT / MANUAL_BY_TOPIC) did not
    // assert its liveliness within its lease.
    kLivelinessLost,
    // reader `local`: remote writer `remote` became alive (`alive`) or not
    // (its LIVELINESS lease ran out).
    kLivelinessChanged,
    // reader `local`: the EXCLUSIVE owner of `instance` is now `remote`
    // (all zeros: nobody).
    kOwnershipChanged,
    // Gossip mode: participant `remote`'s GUID prefix is claimed by two
    // processes (ours included), told apart by their nonces.
    kPrefixCollision,
  };
  Kind kind;
  EndpointHandle local = 0;
  Guid remote;
  QosPolicyId policy = QosPolicyId::kNone;
  KeyHash instance{};
  bool alive = false;
};
const char* EventKindName(Event::Kind kind);

struct Transmit {
  size_t size_bytes = 0;
  // Valid until the next call on the Participant.
  std::span<const Locator> destinations;
};

struct ParticipantCounters {
  uint64_t datagrams_received = 0;
  uint64_t datagrams_sent = 0;  // PollTransmit results
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  // Per-reason drops of whole messages or submessages.
  std::array<uint64_t, static_cast<size_t>(ParseError::kCount)> parse_errors{};
  uint64_t own_messages = 0;            // our own multicast looped back
  uint64_t not_for_us = 0;              // INFO_DST for another participant
  uint64_t unknown_submessages = 0;     // ids we skip (vendor-specific, future)
  uint64_t inline_qos_rejected = 0;     // must-understand PID we do not know
  uint64_t discovery_rejected[6] = {};  // by DiscoveryParseError
  uint64_t spdp_participant_limit = 0;  // dropped: max_remote_participants
  uint64_t sedp_endpoint_limit = 0;     // dropped: max_remote_endpoints
  uint64_t sedp_unknown_participant = 0;
  uint64_t domain_mismatch = 0;
  uint64_t data_from_unknown_writer = 0;
  uint64_t data_duplicates = 0;     // SN already delivered
  uint64_t data_out_of_window = 0;  // beyond the reorder window: dropped
  uint64_t data_rejected_full = 0;  // history full (KEEP_ALL)
  uint64_t key_hash_failures = 0;   // no key hash and payload undecodable
  uint64_t fragments_received = 0;  // DATA_FRAG submessages accepted
  uint64_t samples_reassembled = 0;
  // DATA_FRAG submessages dropped: inconsistent with the partial sample,
  // out of range, too large, no memory, or refused (slots full).
  uint64_t fragments_dropped = 0;
  uint64_t fragments_duplicate = 0;  // every fragment already there
  uint64_t partial_samples_evicted = 0;
  uint64_t partial_samples_timed_out = 0;
  uint64_t samples_fragmented = 0;       // written as DATA_FRAG
  uint64_t fragments_sent = 0;           // fragments in pushes
  uint64_t fragments_retransmitted = 0;  // fragments in repairs
  uint64_t nack_frags_sent = 0;
  uint64_t nack_frags_received = 0;
  uint64_t nack_frags_dropped = 0;  // request table full
  uint64_t heartbeat_frags_sent = 0;
  uint64_t heartbeat_frags_received = 0;
  uint64_t spdp_unchanged = 0;  // periodic SPDP identical to the last one
  // QoS enforcement (DDS 1.4 §2.2.3).
  uint64_t offered_deadlines_missed = 0;
  uint64_t requested_deadlines_missed = 0;
  uint64_t writer_samples_expired = 0;  // LIFESPAN: left the writer history
  uint64_t samples_expired = 0;    // LIFESPAN: dropped by a reader, never taken
  uint64_t samples_not_owner = 0;  // EXCLUSIVE: not from the owner
  uint64_t samples_out_of_order = 0;  // BY_SOURCE_TIMESTAMP: older than seen
  uint64_t instance_limit_drops = 0;  // no room to track a new instance
  uint64_t liveliness_lost = 0;       // our writers
  uint64_t liveliness_changes = 0;    // remote writers alive <-> not alive
  uint64_t participant_messages_sent = 0;  // §8.4.13 liveliness updates
  uint64_t participant_messages_received = 0;
  uint64_t batched_datagrams = 0;  // LATENCY_BUDGET: pushes with > 1 sample
  uint64_t prefix_collisions = 0;  // gossip: a prefix claimed twice
  uint64_t samples_delivered = 0;
  uint64_t samples_lost = 0;  // best effort gaps, reliable GAPs
  uint64_t heartbeats_sent = 0;
  uint64_t heartbeats_received = 0;
  uint64_t acknacks_sent = 0;
  uint64_t acknacks_received = 0;
  uint64_t gaps_sent = 0;
  uint64_t gaps_received = 0;
  uint64_t retransmits = 0;
  uint64_t leases_expired = 0;
  uint64_t events_dropped = 0;
  uint64_t samples_too_large = 0;  // Write: above max_sample_bytes
  // Sample payload bytes the core copied (memcpy): into the writer history
  // (Write; WriteBuffered swaps instead), into DATA/DATA_FRAG submessages
  // (first sends and repairs), into reassembly, into the reader history
  // (DATA; a reassembled sample is swapped in). Per 64 KiB sample: one
  // sample on each side, plus repairs.
  uint64_t sample_bytes_copied = 0;
};

struct RemoteParticipantInfo {
  ParticipantData data;
  Timestamp lease_expiry;
  Timestamp last_heard;  // the latest message from it (renews its lease)
  // The SPDP payload `data` was parsed from: an identical announcement only
  // renews the lease (no parse, no allocation).
  std::vector<std::byte> announcement;
  // Known through gossip: its membership (not a lease) says when it is
  // gone.
  bool via_gossip = false;
};

class Participant {
 public:
  static absl::StatusOr<std::unique_ptr<Participant>> Create(
      ParticipantConfig config, Timestamp now);
  ~Participant();
  Participant(const Participant&) = delete;
  Participant& operator=(const Participant&) = delete;

  const GuidPrefix& guid_prefix() const { return config_.guid_prefix; }
  const ParticipantConfig& config() const { return config_; }

  // ---- Local endpoints (control path) -------------------------------------
  // InvalidArgument for an inconsistent QoS or empty names.
  absl::StatusOr<EndpointHandle> CreateWriter(WriterConfig config,
                                              Timestamp now);
  absl::StatusOr<EndpointHandle> CreateReader(ReaderConfig config,
                                              Timestamp now);
  // Announces the deletion (SEDP dispose) and drops all matches.
  absl::Status DeleteEndpoint(EndpointHandle handle, Timestamp now);
  // Leaving the domain: deletes every endpoint (SEDP disposes) and queues
  // an SPDP dispose to every known participant, so they drop us at once.
  // Flush PollTransmit afterwards; no SPDP announcements follow.
  void Leave(Timestamp now);
  Guid EndpointGuid(EndpointHandle handle) const;
  size_t MatchedCount(EndpointHandle handle) const;

  // ---- Data path ------------------------------------------------------------
  // Stores a sample (encapsulation header + data) in the writer's history
  // and queues it; above fragment_size_bytes it goes out as DATA_FRAG.
  // ResourceExhausted when a KEEP_ALL history or a resource limit is full
  // (retry after acknowledgements arrive); InvalidArgument above
  // max_sample_bytes.
  absl::Status Write(EndpointHandle writer, std::span<const std::byte> payload,
                     const KeyHash& key, int64_t source_time_ns, Timestamp now);
  // Zero-copy variant: serialize into WriteBuffer() (returned empty; owned
  // by the participant, valid until the next call on it), then
  // WriteBuffered() takes those bytes into the history by swapping buffers
  // instead of copying them (same checks and errors as Write; on an error
  // the buffer keeps the bytes). Capacity cycles between the buffer and the
  // history slots, so steady state allocates nothing.
  //   std::vector<std::byte>* buf = p->WriteBuffer();
  //   SerializeSample(value, Encoding::kCdrLe, buf);
  //   p->WriteBuffered(w, key, source_time_ns, now);
  std::vector<std::byte>* WriteBuffer() {
    write_buffer_.clear();
    return &write_buffer_;
  }
  absl::Status WriteBuffered(EndpointHandle writer, const KeyHash& key,
                             int64_t source_time_ns, Timestamp now);
  // Disposes / unregisters an instance (key-only DATA with status info).
  absl::Status Dispose(EndpointHandle writer, const KeyHash& key,
                       std::span<const std::byte> serialized_key,
                       int64_t source_time_ns, Timestamp now);
  // The oldest sample in a reader's history, or nullptr. The sample (and
  // its payload view) stays valid until the next Take() on this reader.
  const ReceivedSample* Take(EndpointHandle reader);
  size_t Available(EndpointHandle reader) const;
  // True if every reliable matched reader acknowledged everything written.
  bool AllAcknowledged(EndpointHandle writer) const;
  // LIVELINESS (DDS 1.4 §2.2.3.11): asserts every MANUAL_BY_PARTICIPANT
  // writer of this participant and tells remote readers with a
  // participant message (§8.4.13). Writing on any such writer asserts too.
  void AssertLiveliness(Timestamp now);
  // Asserts one writer (any liveliness kind): MANUAL_BY_TOPIC writers need
  // this or a Write; remote readers learn it from a HEARTBEAT with the
  // liveliness flag (§8.3.7.5).
  absl::Status AssertWriterLiveliness(EndpointHandle writer, Timestamp now);
  void SetWallClockOffset(int64_t offset_ns) {
    config_.wall_clock_offset_ns = offset_ns;
  }

  // ---- I/O ------------------------------------------------------------------
  void OnDatagram(std::span<const std::byte> bytes, const Locator& source,
                  Timestamp now);
  // Builds the next datagram into `out`; nullopt when nothing is due.
  std::optional<Transmit> PollTransmit(std::span<std::byte> out, Timestamp now);
  Timestamp NextDeadline() const;
  void OnTimeout(Timestamp now);
  std::optional<Event> PollEvent();

  // ---- Introspection
  // ----------------------------------------------------------
  const ParticipantCounters& counters() const { return counters_; }
  // Gossip mode only (else nullptr).
  const GossipCounters* gossip_counters() const;
  size_t remote_participant_count() const { return participants_.size(); }
  size_t remote_endpoint_count() const { return remote_endpoints_.size(); }
  const RemoteParticipantInfo* FindParticipant(const GuidPrefix& p) const;
  const EndpointData* FindRemoteEndpoint(const Guid& g) const;
  // Calls fn for every remote participant (control path, e.g. a CLI).
  template <typename Fn>
  void ForEachParticipant(Fn fn) const {
    for (const auto& [prefix, info] : participants_) fn(info);
  }
  // Calls fn for every discovered remote writer and reader (control path).
  void ForEachRemoteEndpoint(
      absl::FunctionRef<void(const EndpointData&)> fn) const;

 private:
  struct Sample;
  struct SampleRing;
  struct InstanceState;
  struct ReaderProxy;
  struct WriterProxy;
  struct LocalWriter;
  struct LocalReader;
  struct RemoteEndpoint;
  struct Receiver;

  explicit Participant(ParticipantConfig config);

  // Receive path.
  void HandleSubmessage(Receiver& rx, const Submessage& sm, Timestamp now);
  void HandleData(Receiver& rx, const DataSubmessage& d, Timestamp now);
  void HandleDataFrag(Receiver& rx, const DataFragSubmessage& d, Timestamp now);
  void HandleHeartbeat(Receiver& rx, const HeartbeatSubmessage& hb,
                       Timestamp now);
  void HandleAckNack(Receiver& rx, const AckNackSubmessage& an, Timestamp now);
  void HandleGap(Receiver& rx, const GapSubmessage& gap, Timestamp now);
  void HandleNackFrag(Receiver& rx, const NackFragSubmessage& nf,
                      Timestamp now);
  void HandleHeartbeatFrag(Receiver& rx, const HeartbeatFragSubmessage& hf,
                           Timestamp now);
  void HandleSpdp(Receiver& rx, const DataSubmessage& d, uint32_t status,
                  Timestamp now);
  void ProcessBuiltinReaders(Timestamp now);
  void HandleParticipantMessage(const ReceivedSample& s, Timestamp now);
  // Gossip mode: our record from our endpoints, and members into the core.
  void UpdateGossipRecord(Timestamp now);
  void PumpGossip(Timestamp now);
  void ApplyGossipMember(const GossipRecord& r, Timestamp now);
  void WriteParticipantMessage(uint32_t kind, Timestamp now);
  // QoS timers (deadline, lifespan, liveliness), from OnTimeout.
  void WriterTimers(LocalWriter& w, EndpointHandle h, Timestamp now);
  void ReaderTimers(LocalReader& r, EndpointHandle h, Timestamp now);
  void RenewWriterProxy(LocalReader& r, WriterProxy& p, Timestamp now);
  void ReleaseOwnership(LocalReader& r, const Guid& writer);
  EndpointHandle HandleOf(bool writer, uint32_t index) const;
  int64_t WallNow(Timestamp now) const {
    return now.nanos() + config_.wall_clock_offset_ns;
  }
  void HandleSedp(const ReceivedSample& s, bool publication, Timestamp now);

  // Discovery and matching.
  void AddParticipant(const ParticipantData& data, Timestamp now);
  void RemoveParticipant(const GuidPrefix& prefix);
  void MatchBuiltins(const GuidPrefix& prefix, const ParticipantData& data,
                     Timestamp now);
  void MatchRemoteEndpoint(const Guid& guid, Timestamp now);
  void UnmatchRemoteEndpoint(const Guid& guid);
  void MatchLocalWriter(uint32_t index, Timestamp now);
  void MatchLocalReader(uint32_t index, Timestamp now);
  void TryMatch(uint32_t writer_index, uint32_t reader_index,
                const RemoteEndpoint& remote, Timestamp now);
  void AddReaderProxy(LocalWriter& w, const Guid& reader,
                      std::vector<Locator> locators, bool reliable,
                      bool transient_local, bool expects_inline_qos,
                      Timestamp now);
  void AddWriterProxy(LocalReader& r, const Guid& writer,
                      std::vector<Locator> locators, bool reliable,
                      bool skip_history, const EndpointQos* remote_qos,
                      Timestamp now);
  void Announce(uint32_t index, bool dispose, Timestamp now);
  std::vector<Locator> UserLocators(const EndpointData& e) const;
  std::vector<Locator> MetatrafficLocators(const ParticipantData& p) const;

  // Writer / reader machinery.
  // `adopt` (if not null) holds `payload`: its buffer is swapped into the
  // history slot instead of copying the bytes.
  absl::Status WriteInternal(LocalWriter& w, std::span<const std::byte> payload,
                             const KeyHash& key, int64_t source_time_ns,
                             uint32_t status_info, bool key_only, Timestamp now,
                             std::vector<std::byte>* adopt = nullptr);
  // `from`/`part` (if set): d.payload is that complete partial sample,
  // whose buffer is swapped into the history instead of copied.
  void DeliverToReader(LocalReader& r, WriterProxy& p, Receiver& rx,
                       const DataSubmessage& d, const KeyHash* key,
                       uint32_t status, Timestamp now,
                       internal::FragmentReassembler* from = nullptr,
                       internal::PartialSample* part = nullptr);
  // Puts a received sample into the reader's history, applying LIFESPAN,
  // OWNERSHIP, DESTINATION_ORDER and DEADLINE. False only when the history
  // is full (the sample was not taken: a reliable writer sends it again);
  // a sample the QoS filters out is released and counts as delivered.
  bool StoreInHistory(LocalReader& r, uint32_t slot, WriterProxy* from,
                      Timestamp now);
  void DrainReorder(LocalReader& r, WriterProxy& p, Timestamp now);
  void ScheduleAck(LocalReader& r, WriterProxy& p, Timestamp now);
  void PurgeAcked(LocalWriter& w);
  void PopOldest(LocalWriter& w);
  void PurgeExpired(LocalWriter& w, Timestamp now);
  // Drops reader samples whose LIFESPAN ended (Take and the timer).
  void PurgeExpired(LocalReader& r, Timestamp now);
  void RemoveFromHistory(LocalReader& r, uint32_t slot);
  SequenceNumber MinAcked(const LocalWriter& w) const;

  // Send path.
  bool BuildPush(LocalWriter& w, std::span<std::byte> out, Transmit* t,
                 Timestamp now);
  bool BuildRepair(LocalWriter& w, ReaderProxy& p, std::span<std::byte> out,
                   Transmit* t, Timestamp now);
  bool BuildHeartbeat(LocalWriter& w, std::span<std::byte> out, Transmit* t,
                      Timestamp now);
  bool BuildAckNack(LocalReader& r, WriterProxy& p, std::span<std::byte> out,
                    Transmit* t, Timestamp now);
  bool BuildSpdp(std::span<std::byte> out, Transmit* t, Timestamp now,
                 bool unicast_reply);
  bool BuildSpdpDispose(std::span<std::byte> out, Transmit* t);
  // Appends one DATA_FRAG with fragments [first, last] of `s` (as many as
  // fit); returns how many it added (0: none fit).
  uint32_t AddFragments(MessageBuilder& b, EntityId reader,
                        const LocalWriter& w, const Sample& s,
                        SequenceNumber sn, uint32_t first, uint32_t last,
                        bool inline_qos);
  uint32_t FragmentCount(const Sample& s) const;
  void SetDestinations(std::span<const Locator> a);
  void AddDestinations(std::span<const Locator> a);

  void PushEvent(Event e);
  Timestamp ScanDeadline() const;

  ParticipantConfig config_;
  ParticipantCounters counters_;
  std::vector<std::unique_ptr<LocalWriter>> writers_;  // index = handle - 1
  std::vector<std::unique_ptr<LocalReader>> readers_;
  // handle -> (is_writer, index)
  std::vector<std::pair<bool, uint32_t>> handles_;
  uint32_t next_entity_key_ = 1;

  absl::flat_hash_map<GuidPrefix, RemoteParticipantInfo> participants_;
  absl::flat_hash_map<Guid, std::unique_ptr<RemoteEndpoint>> remote_endpoints_;

  // Built-in endpoint indices into writers_/readers_.
  uint32_t sedp_pub_writer_ = 0, sedp_sub_writer_ = 0;
  uint32_t sedp_pub_reader_ = 0, sedp_sub_reader_ = 0;
  uint32_t pmd_writer_ = 0, pmd_reader_ = 0;  // §8.4.13 participant messages
  uint32_t pmd_count_ = 0;
  Timestamp pmd_automatic_next_ = Timestamp::Never();
  Timestamp pmd_manual_sent_ = Timestamp::Zero();
  // The `now` of the latest call, for Take() (LIFESPAN).
  Timestamp last_now_ = Timestamp::Zero();

  std::unique_ptr<GossipDiscovery> gossip_;
  bool gossip_dirty_ = false;
  bool leaving_ = false, leave_due_ = false;
  std::vector<Locator> leave_destinations_;
  Timestamp spdp_next_;
  // A lower bound on every remote participant's lease expiry (renewals
  // only raise them; OnTimeout recomputes it).
  Timestamp lease_next_ = Timestamp::Never();
  void NoteLease(Timestamp t) { lease_next_ = std::min(lease_next_, t); }
  SequenceNumber spdp_sn_ = 0;
  std::vector<Locator> spdp_unicast_pending_;
  std::vector<std::byte> spdp_payload_;
  std::vector<std::byte> scratch_;       // discovery serialization
  std::vector<std::byte> write_buffer_;  // WriteBuffer()/WriteBuffered()

  std::vector<Locator> tx_destinations_;
  std::vector<Event> events_;  // ring
  size_t event_head_ = 0, event_count_ = 0;
  size_t poll_cursor_ = 0;  // round robin over writers for fairness
  std::unique_ptr<internal::ReassemblyBudget> reassembly_budget_;
  // Set by every input that may create output or move a deadline; cleared
  // by a PollTransmit that found nothing, which caches the next deadline.
  bool maybe_pending_ = true;
  Timestamp idle_until_ = Timestamp::Zero();
};

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_PARTICIPANT_H_
