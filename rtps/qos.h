// DDS QoS policies as carried by RTPS discovery (DDS 1.4 §2.2.3, RTPS 2.5
// §9.6.2.2), and the request-offered compatibility rules used for matching.
//
// The participant enforces RELIABILITY, HISTORY, RESOURCE_LIMITS,
// DURABILITY, DEADLINE, LIFESPAN, LATENCY_BUDGET (batching), LIVELINESS,
// OWNERSHIP (+ strength), DESTINATION_ORDER and PARTITION (wildcards).
// PRESENTATION is parsed, propagated and checked for compatibility only
// (coherent/ordered access is not implemented).
//
//   EndpointQos writer_qos = EndpointQos::WriterDefaults();
//   writer_qos.durability = DurabilityKind::kTransientLocal;
//   EndpointQos reader_qos = EndpointQos::ReaderDefaults();
//   reader_qos.reliability = ReliabilityKind::kReliable;
//   QosPolicyId bad = CheckCompatible(writer_qos, reader_qos);
//   if (bad != QosPolicyId::kNone) ...  // QosPolicyName(bad) == "DURABILITY"
//
// Plain values; no allocation except for partition names.
#ifndef RINGLAB_RTPS_QOS_H_
#define RINGLAB_RTPS_QOS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "rtps/types.h"

namespace ringlab::rtps {

// RTPS wire values (§9.6.2.2 / §9.3.2): note RELIABLE is 2 on the wire.
enum class ReliabilityKind : uint32_t { kBestEffort = 1, kReliable = 2 };
enum class DurabilityKind : uint32_t {
  kVolatile = 0,
  kTransientLocal = 1,
  kTransient = 2,
  kPersistent = 3,
};
enum class HistoryKind : uint32_t { kKeepLast = 0, kKeepAll = 1 };
enum class OwnershipKind : uint32_t { kShared = 0, kExclusive = 1 };
enum class LivelinessKind : uint32_t {
  kAutomatic = 0,
  kManualByParticipant = 1,
  kManualByTopic = 2,
};
enum class DestinationOrderKind : uint32_t {
  kByReceptionTimestamp = 0,
  kBySourceTimestamp = 1,
};
enum class PresentationScope : uint32_t {
  kInstance = 0,
  kTopic = 1,
  kGroup = 2
};

// XTypes 1.3 §7.6.3.1.1 data representation ids.
inline constexpr int16_t kXcdr1Representation = 0;
inline constexpr int16_t kXcdr2Representation = 2;

// The policies an endpoint announces (and a reader/writer is created with).
struct EndpointQos {
  ReliabilityKind reliability = ReliabilityKind::kReliable;
  int64_t max_blocking_time_ns = 100'000'000;
  DurabilityKind durability = DurabilityKind::kVolatile;
  HistoryKind history = HistoryKind::kKeepLast;
  int32_t history_depth = 1;
  // RESOURCE_LIMITS: -1 = unlimited (the implementation still bounds memory
  // with the participant's configured caps).
  int32_t max_samples = -1;
  int32_t max_instances = -1;
  int32_t max_samples_per_instance = -1;
  int64_t deadline_ns = kInfiniteNanos;
  int64_t latency_budget_ns = 0;
  LivelinessKind liveliness = LivelinessKind::kAutomatic;
  int64_t liveliness_lease_ns = kInfiniteNanos;
  OwnershipKind ownership = OwnershipKind::kShared;
  int32_t ownership_strength = 0;
  DestinationOrderKind destination_order =
      DestinationOrderKind::kByReceptionTimestamp;
  PresentationScope presentation = PresentationScope::kInstance;
  bool coherent_access = false;
  bool ordered_access = false;
  int64_t lifespan_ns = kInfiniteNanos;
  std::vector<std::string> partitions;       // empty = the default partition ""
  std::vector<int16_t> data_representation;  // empty = {XCDR1}

  // DDS 1.4 §2.2.3 defaults: writers reliable (max_blocking 100 ms), readers
  // best effort; both KEEP_LAST 1, VOLATILE.
  static EndpointQos WriterDefaults();
  static EndpointQos ReaderDefaults();

  // DDS 1.4 §2.2.3 consistency (e.g. KEEP_LAST depth <= max_samples_per
  // _instance). InvalidArgument naming the policy otherwise.
  absl::Status Validate() const;
};

enum class QosPolicyId : uint8_t {
  kNone = 0,
  kReliability,
  kDurability,
  kDeadline,
  kLatencyBudget,
  kLiveliness,
  kOwnership,
  kDestinationOrder,
  kPresentation,
  kPartition,
  kDataRepresentation,
  kTypeName,
};
// "RELIABILITY", "DURABILITY", ... as the DDS specification names them.
const char* QosPolicyName(QosPolicyId id);

// The first request-offered incompatibility (DDS 1.4 §2.2.3, RxO = yes
// policies), or kNone. Partitions are not RxO: see PartitionsMatch.
QosPolicyId CheckCompatible(const EndpointQos& offered,
                            const EndpointQos& requested);

// DDS 1.4 §2.2.3.13: two endpoints communicate if they share a partition
// name; names may be fnmatch(3) wildcards on either side (not both).
bool PartitionsMatch(const std::vector<std::string>& a,
                     const std::vector<std::string>& b);

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_QOS_H_
