#include "rtps/qos.h"

#include <fnmatch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace ringlab::rtps {

EndpointQos EndpointQos::WriterDefaults() {
  EndpointQos q;
  q.reliability = ReliabilityKind::kReliable;
  return q;
}

EndpointQos EndpointQos::ReaderDefaults() {
  EndpointQos q;
  q.reliability = ReliabilityKind::kBestEffort;
  q.max_blocking_time_ns = 0;
  return q;
}

absl::Status EndpointQos::Validate() const {
  if (history == HistoryKind::kKeepLast && history_depth < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HISTORY: KEEP_LAST depth must be >= 1, got ", history_depth));
  }
  // DDS 1.4 §2.2.3.19: depth <= max_samples_per_instance, and
  // max_samples >= max_samples_per_instance.
  if (history == HistoryKind::kKeepLast && max_samples_per_instance > 0 &&
      history_depth > max_samples_per_instance) {
    return absl::InvalidArgumentError(
        "HISTORY/RESOURCE_LIMITS: depth exceeds max_samples_per_instance");
  }
  if (max_samples > 0 && max_samples_per_instance > 0 &&
      max_samples < max_samples_per_instance) {
    return absl::InvalidArgumentError(
        "RESOURCE_LIMITS: max_samples < max_samples_per_instance");
  }
  if (max_samples == 0 || max_instances == 0 || max_samples_per_instance == 0) {
    return absl::InvalidArgumentError(
        "RESOURCE_LIMITS: limits must be positive or -1 (unlimited)");
  }
  if (deadline_ns <= 0) {
    return absl::InvalidArgumentError("DEADLINE: the period must be > 0");
  }
  if (latency_budget_ns < 0) {
    return absl::InvalidArgumentError("LATENCY_BUDGET: negative duration");
  }
  if (lifespan_ns <= 0) {
    return absl::InvalidArgumentError("LIFESPAN: the duration must be > 0");
  }
  if (liveliness_lease_ns <= 0) {
    return absl::InvalidArgumentError(
        "LIVELINESS: the lease duration must be > 0");
  }
  // (A manual liveliness kind with an infinite lease is legal, DDS 1.4
  // §2.2.3.11: it can never be lost.)
  for (const std::string& p : partitions) {
    if (p.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("PARTITION: a name contains NUL");
    }
  }
  return absl::OkStatus();
}

const char* QosPolicyName(QosPolicyId id) {
  switch (id) {
    case QosPolicyId::kNone:
      return "NONE";
    case QosPolicyId::kReliability:
      return "RELIABILITY";
    case QosPolicyId::kDurability:
      return "DURABILITY";
    case QosPolicyId::kDeadline:
      return "DEADLINE";
    case QosPolicyId::kLatencyBudget:
      return "LATENCY_BUDGET";
    case QosPolicyId::kLiveliness:
      return "LIVELINESS";
    case QosPolicyId::kOwnership:
      return "OWNERSHIP";
    case QosPolicyId::kDestinationOrder:
      return "DESTINATION_ORDER";
    case QosPolicyId::kPresentation:
      return "PRESENTATION";
    case QosPolicyId::kPartition:
      return "PARTITION";
    case QosPolicyId::kDataRepresentation:
      return "DATA_REPRESENTATION";
    case QosPolicyId::kTypeName:
      return "TYPE_NAME";
  }
  return "?";
}

// DDS 1.4 §2.2.3, the "RxO" column: offered must be at least as strong as
// requested.
QosPolicyId CheckCompatible(const EndpointQos& o, const EndpointQos& r) {
  if (static_cast<uint32_t>(o.reliability) <
      static_cast<uint32_t>(r.reliability)) {
    return QosPolicyId::kReliability;
  }
  if (static_cast<uint32_t>(o.durability) <
      static_cast<uint32_t>(r.durability)) {
    return QosPolicyId::kDurability;
  }
  if (o.deadline_ns > r.deadline_ns) return QosPolicyId::kDeadline;
  if (o.latency_budget_ns > r.latency_budget_ns) {
    return QosPolicyId::kLatencyBudget;
  }
  if (static_cast<uint32_t>(o.liveliness) <
          static_cast<uint32_t>(r.liveliness) ||
      o.liveliness_lease_ns > r.liveliness_lease_ns) {
    return QosPolicyId::kLiveliness;
  }
  if (o.ownership != r.ownership) return QosPolicyId::kOwnership;
  if (static_cast<uint32_t>(o.destination_order) <
      static_cast<uint32_t>(r.destination_order)) {
    return QosPolicyId::kDestinationOrder;
  }
  if (static_cast<uint32_t>(o.presentation) <
          static_cast<uint32_t>(r.presentation) ||
      (r.coherent_access && !o.coherent_access) ||
      (r.ordered_access && !o.ordered_access)) {
    return QosPolicyId::kPresentation;
  }
  // XTypes 1.3 §7.6.3.1.1: the writer's (first) representation must be one
  // the reader accepts; an empty list means XCDR1.
  int16_t offered = o.data_representation.empty() ? kXcdr1Representation
                                                  : o.data_representation[0];
  if (r.data_representation.empty()) {
    if (offered != kXcdr1Representation) {
      return QosPolicyId::kDataRepresentation;
    }
  } else if (std::find(r.data_representation.begin(),
                       r.data_representation.end(),
                       offered) == r.data_representation.end()) {
    return QosPolicyId::kDataRepresentation;
  }
  return QosPolicyId::kNone;
}

namespace {
bool HasWildcard(const std::string& s) {
  return s.find_first_of("*?[") != std::string::npos;
}
bool NameMatch(const std::string& a, const std::string& b) {
  bool wa = HasWildcard(a), wb = HasWildcard(b);
  if (wa && wb) return a == b;  // two patterns match only if identical
  if (wa) return fnmatch(a.c_str(), b.c_str(), 0) == 0;
  if (wb) return fnmatch(b.c_str(), a.c_str(), 0) == 0;
  return a == b;
}
}  // namespace

bool PartitionsMatch(const std::vector<std::string>& a,
                     const std::vector<std::string>& b) {
  static const std::vector<std::string> kDefault{""};
  const auto& x = a.empty() ? kDefault : a;
  const auto& y = b.empty() ? kDefault : b;
  for (const std::string& p : x) {
    for (const std::string& q : y) {
      if (NameMatch(p, q)) return true;
    }
  }
  return false;
}

}  // namespace ringlab::rtps
