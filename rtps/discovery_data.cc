#include "rtps/discovery_data.h"

#include <cstring>

namespace ringlab::rtps {

const char* DiscoveryParseErrorName(DiscoveryParseError e) {
  switch (e) {
    case DiscoveryParseError::kOk:
      return "ok";
    case DiscoveryParseError::kBadEncapsulation:
      return "bad_encapsulation";
    case DiscoveryParseError::kMalformedList:
      return "malformed_parameter_list";
    case DiscoveryParseError::kUnknownMustUnderstand:
      return "unknown_must_understand_pid";
    case DiscoveryParseError::kMissingGuid:
      return "missing_guid";
    case DiscoveryParseError::kBadValue:
      return "bad_parameter_value";
  }
  return "?";
}

namespace {

// ---- writing ---------------------------------------------------------------

void PutLocator(ParameterListWriter& pl, uint16_t id, const Locator& l) {
  size_t at = pl.Begin(id);
  CdrWriter& w = pl.cdr();
  w.Write(l.kind);
  w.Write(l.port);
  w.WriteRaw(l.address.data(), 16);
  pl.End(at);
}

void PutGuid(ParameterListWriter& pl, uint16_t id, const Guid& g) {
  size_t at = pl.Begin(id);
  std::array<uint8_t, 16> b = g.Bytes();
  pl.cdr().WriteRaw(b.data(), 16);
  pl.End(at);
}

void PutDuration(CdrWriter& w, int64_t ns) {
  RtpsDuration d = DurationFromNanos(ns);
  w.Write(d.seconds);
  w.Write(d.fraction);
}

void PutString(ParameterListWriter& pl, uint16_t id, std::string_view s) {
  size_t at = pl.Begin(id);
  pl.cdr().WriteString(s);
  pl.End(at);
}

void PutU32(ParameterListWriter& pl, uint16_t id, uint32_t v) {
  size_t at = pl.Begin(id);
  pl.cdr().Write(v);
  pl.End(at);
}

void PutVersionVendor(ParameterListWriter& pl, ProtocolVersion v,
                      VendorId vendor) {
  size_t at = pl.Begin(pid::kProtocolVersion);
  pl.cdr().Write(v.major);
  pl.cdr().Write(v.minor);
  pl.End(at);
  at = pl.Begin(pid::kVendorId);
  pl.cdr().Write(vendor.bytes[0]);
  pl.cdr().Write(vendor.bytes[1]);
  pl.End(at);
}

void PutOctets(ParameterListWriter& pl, uint16_t id, std::string_view s) {
  size_t at = pl.Begin(id);
  pl.cdr().Write(static_cast<uint32_t>(s.size()));
  pl.cdr().WriteRaw(s.data(), s.size());
  pl.End(at);
}

void BeginPayload(std::vector<std::byte>* out) {
  out->clear();
  // PL_CDR_LE, options 0 (§9.4.2.11: the payload of discovery data).
  out->push_back(std::byte{0x00});
  out->push_back(std::byte{0x03});
  out->push_back(std::byte{0x00});
  out->push_back(std::byte{0x00});
}

// ---- reading ---------------------------------------------------------------

bool ReadLocator(const Parameter& p, Endian e, Locator* out) {
  CdrReader r = ParameterValueReader(p, e);
  Locator l;
  if (!r.Read(&l.kind) || !r.Read(&l.port) || !r.ReadRaw(l.address.data(), 16))
    return false;
  *out = l;
  return true;
}

bool ReadGuid(const Parameter& p, Guid* out) {
  if (p.value.size() < 16) return false;
  *out = Guid::FromBytes(reinterpret_cast<const uint8_t*>(p.value.data()));
  return true;
}

bool ReadDuration(CdrReader& r, int64_t* ns) {
  RtpsDuration d;
  if (!r.Read(&d.seconds) || !r.Read(&d.fraction)) return false;
  *ns = DurationToNanos(d);
  return true;
}

void AddLocator(std::vector<Locator>* list, const Locator& l,
                uint32_t* dropped) {
  if (list->size() >= kMaxLocators) {
    ++*dropped;
    return;
  }
  list->push_back(l);
}

// Shared start: the encapsulation header must be PL_CDR_LE/BE.
bool OpenList(std::span<const std::byte> payload, Endian* endian,
              std::span<const std::byte>* list) {
  if (payload.size() < 4) return false;
  uint16_t id =
      static_cast<uint16_t>(std::to_integer<uint16_t>(payload[0]) << 8 |
                            std::to_integer<uint16_t>(payload[1]));
  if (id == static_cast<uint16_t>(Encoding::kPlCdrLe)) {
    *endian = Endian::kLittle;
  } else if (id == static_cast<uint16_t>(Encoding::kPlCdrBe)) {
    *endian = Endian::kBig;
  } else {
    return false;
  }
  *list = payload.subspan(4);
  return true;
}

// Reads a QoS policy into `q`; true if `p` was one (whether or not valid:
// `*bad` reports an undecodable value).
bool ReadQosParameter(const Parameter& p, Endian e, EndpointQos* q, bool* bad) {
  CdrReader r = ParameterValueReader(p, e);
  uint32_t kind = 0;
  switch (p.id) {
    case pid::kReliability:
      if (!r.Read(&kind) || !ReadDuration(r, &q->max_blocking_time_ns)) break;
      // Wire values: 1 best effort, 2 reliable (some old peers send 3).
      q->reliability =
          kind >= 2 ? ReliabilityKind::kReliable : ReliabilityKind::kBestEffort;
      return true;
    case pid::kDurability:
      if (!r.Read(&kind) || kind > 3) break;
      q->durability = static_cast<DurabilityKind>(kind);
      return true;
    case pid::kHistory:
      if (!r.Read(&kind) || kind > 1 || !r.Read(&q->history_depth)) break;
      q->history = static_cast<HistoryKind>(kind);
      return true;
    case pid::kResourceLimits:
      if (!r.Read(&q->max_samples) || !r.Read(&q->max_instances) ||
          !r.Read(&q->max_samples_per_instance))
        break;
      return true;
    case pid::kDeadline:
      if (!ReadDuration(r, &q->deadline_ns)) break;
      return true;
    case pid::kLatencyBudget:
      if (!ReadDuration(r, &q->latency_budget_ns)) break;
      return true;
    case pid::kLifespan:
      if (!ReadDuration(r, &q->lifespan_ns)) break;
      return true;
    case pid::kLiveliness:
      if (!r.Read(&kind) || kind > 2 ||
          !ReadDuration(r, &q->liveliness_lease_ns))
        break;
      q->liveliness = static_cast<LivelinessKind>(kind);
      return true;
    case pid::kOwnership:
      if (!r.Read(&kind) || kind > 1) break;
      q->ownership = static_cast<OwnershipKind>(kind);
      return true;
    case pid::kOwnershipStrength:
      if (!r.Read(&q->ownership_strength)) break;
      return true;
    case pid::kDestinationOrder:
      if (!r.Read(&kind) || kind > 1) break;
      q->destination_order = static_cast<DestinationOrderKind>(kind);
      return true;
    case pid::kPresentation: {
      uint8_t coherent = 0, ordered = 0;
      if (!r.Read(&kind) || kind > 2 || !r.Read(&coherent) || !r.Read(&ordered))
        break;
      q->presentation = static_cast<PresentationScope>(kind);
      q->coherent_access = coherent != 0;
      q->ordered_access = ordered != 0;
      return true;
    }
    case pid::kPartition: {
      uint32_t n = 0;
      if (!r.ReadLength(&n, 5)) break;
      q->partitions.clear();
      bool okp = true;
      for (uint32_t i = 0; i < n && okp; ++i) {
        std::string s;
        okp = r.ReadString(&s);
        if (okp) q->partitions.push_back(std::move(s));
      }
      if (!okp) break;
      return true;
    }
    case pid::kDataRepresentation: {
      uint32_t n = 0;
      if (!r.ReadLength(&n, 2)) break;
      q->data_representation.clear();
      bool okd = true;
      for (uint32_t i = 0; i < n && okd; ++i) {
        int16_t v = 0;
        okd = r.Read(&v);
        q->data_representation.push_back(v);
      }
      if (!okd) break;
      return true;
    }
    default:
      return false;
  }
  *bad = true;
  return true;
}

void PutQos(ParameterListWriter& pl, const EndpointQos& q, bool writer) {
  CdrWriter& w = pl.cdr();
  size_t at = pl.Begin(pid::kReliability);
  w.Write(static_cast<uint32_t>(q.reliability));
  PutDuration(w, q.max_blocking_time_ns);
  pl.End(at);
  at = pl.Begin(pid::kDurability);
  w.Write(static_cast<uint32_t>(q.durability));
  pl.End(at);
  at = pl.Begin(pid::kHistory);
  w.Write(static_cast<uint32_t>(q.history));
  w.Write(q.history_depth);
  pl.End(at);
  if (q.max_samples != -1 || q.max_instances != -1 ||
      q.max_samples_per_instance != -1) {
    at = pl.Begin(pid::kResourceLimits);
    w.Write(q.max_samples);
    w.Write(q.max_instances);
    w.Write(q.max_samples_per_instance);
    pl.End(at);
  }
  if (q.deadline_ns != kInfiniteNanos) {
    at = pl.Begin(pid::kDeadline);
    PutDuration(w, q.deadline_ns);
    pl.End(at);
  }
  if (q.latency_budget_ns != 0) {
    at = pl.Begin(pid::kLatencyBudget);
    PutDuration(w, q.latency_budget_ns);
    pl.End(at);
  }
  if (q.lifespan_ns != kInfiniteNanos) {
    at = pl.Begin(pid::kLifespan);
    PutDuration(w, q.lifespan_ns);
    pl.End(at);
  }
  if (q.liveliness != LivelinessKind::kAutomatic ||
      q.liveliness_lease_ns != kInfiniteNanos) {
    at = pl.Begin(pid::kLiveliness);
    w.Write(static_cast<uint32_t>(q.liveliness));
    PutDuration(w, q.liveliness_lease_ns);
    pl.End(at);
  }
  if (q.ownership != OwnershipKind::kShared) {
    at = pl.Begin(pid::kOwnership);
    w.Write(static_cast<uint32_t>(q.ownership));
    pl.End(at);
  }
  // DDS 1.4 §2.2.3.10: OWNERSHIP_STRENGTH is a writer policy.
  if (writer && q.ownership_strength != 0) {
    at = pl.Begin(pid::kOwnershipStrength);
    w.Write(q.ownership_strength);
    pl.End(at);
  }
  if (q.destination_order != DestinationOrderKind::kByReceptionTimestamp) {
    at = pl.Begin(pid::kDestinationOrder);
    w.Write(static_cast<uint32_t>(q.destination_order));
    pl.End(at);
  }
  if (q.presentation != PresentationScope::kInstance || q.coherent_access ||
      q.ordered_access) {
    at = pl.Begin(pid::kPresentation);
    w.Write(static_cast<uint32_t>(q.presentation));
    w.Write(static_cast<uint8_t>(q.coherent_access));
    w.Write(static_cast<uint8_t>(q.ordered_access));
    pl.End(at);
  }
  if (!q.partitions.empty()) {
    at = pl.Begin(pid::kPartition);
    w.Write(static_cast<uint32_t>(q.partitions.size()));
    for (const std::string& s : q.partitions) w.WriteString(s);
    pl.End(at);
  }
  at = pl.Begin(pid::kDataRepresentation);
  const std::vector<int16_t> xcdr1{kXcdr1Representation};
  const auto& reps =
      q.data_representation.empty() ? xcdr1 : q.data_representation;
  w.Write(static_cast<uint32_t>(reps.size()));
  for (int16_t v : reps) w.Write(v);
  pl.End(at);
}

}  // namespace

void SerializeParticipant(const ParticipantData& p,
                          std::vector<std::byte>* out) {
  BeginPayload(out);
  CdrWriter w(out, 4, Endian::kLittle);
  ParameterListWriter pl(&w);
  PutGuid(pl, pid::kParticipantGuid,
          Guid{p.guid_prefix, EntityId::Participant()});
  PutVersionVendor(pl, p.protocol_version, p.vendor);
  PutU32(pl, pid::kBuiltinEndpointSet, p.builtin_endpoints);
  if (p.has_domain_id) PutU32(pl, pid::kDomainId, p.domain_id);
  if (!p.domain_tag.empty()) PutString(pl, pid::kDomainTag, p.domain_tag);
  for (const Locator& l : p.metatraffic_unicast)
    PutLocator(pl, pid::kMetatrafficUnicastLocator, l);
  for (const Locator& l : p.metatraffic_multicast)
    PutLocator(pl, pid::kMetatrafficMulticastLocator, l);
  for (const Locator& l : p.default_unicast)
    PutLocator(pl, pid::kDefaultUnicastLocator, l);
  for (const Locator& l : p.default_multicast)
    PutLocator(pl, pid::kDefaultMulticastLocator, l);
  size_t at = pl.Begin(pid::kParticipantLeaseDuration);
  PutDuration(w, p.lease_duration_ns);
  pl.End(at);
  if (!p.user_data.empty()) PutOctets(pl, pid::kUserData, p.user_data);
  if (!p.entity_name.empty()) PutString(pl, pid::kEntityName, p.entity_name);
  if (p.gossip) PutU32(pl, pid::kRinglabGossip, 1);
  if (!p.properties.empty()) {
    // sequence<Property_t {string name; string value}>, then an empty
    // sequence<BinaryProperty_t>.
    size_t at2 = pl.Begin(pid::kPropertyList);
    w.Write(static_cast<uint32_t>(p.properties.size()));
    for (const auto& [name, value] : p.properties) {
      w.WriteString(name);
      w.WriteString(value);
    }
    w.Write(uint32_t{0});
    pl.End(at2);
  }
  pl.Finish();
}

void SerializeEndpoint(const EndpointData& e, std::vector<std::byte>* out) {
  BeginPayload(out);
  CdrWriter w(out, 4, Endian::kLittle);
  ParameterListWriter pl(&w);
  PutGuid(pl, pid::kEndpointGuid, e.guid);
  PutGuid(pl, pid::kParticipantGuid,
          Guid{e.guid.prefix, EntityId::Participant()});
  PutString(pl, pid::kTopicName, e.topic_name);
  PutString(pl, pid::kTypeName, e.type_name);
  PutVersionVendor(pl, ProtocolVersion{}, kVendorRinglab);
  PutQos(pl, e.qos, e.guid.entity.is_writer());
  for (const Locator& l : e.unicast) PutLocator(pl, pid::kUnicastLocator, l);
  for (const Locator& l : e.multicast)
    PutLocator(pl, pid::kMulticastLocator, l);
  if (e.expects_inline_qos) {
    size_t at = pl.Begin(pid::kExpectsInlineQos);
    w.Write(uint8_t{1});
    pl.End(at);
  }
  pl.Finish();
}

DiscoveryParseError ParseParticipant(std::span<const std::byte> payload,
                                     ParticipantData* out) {
  Endian e;
  std::span<const std::byte> list;
  if (!OpenList(payload, &e, &list)) {
    return DiscoveryParseError::kBadEncapsulation;
  }
  ParticipantData p;
  bool have_guid = false;
  bool gossip_pid = false;
  ParameterListReader pl(list, e);
  Parameter prm;
  while (pl.Next(&prm)) {
    CdrReader r = ParameterValueReader(prm, e);
    Locator l;
    bool okv = true;
    switch (prm.id) {
      case pid::kParticipantGuid: {
        Guid g;
        okv = ReadGuid(prm, &g);
        if (okv) {
          p.guid_prefix = g.prefix;
          have_guid = true;
        }
        break;
      }
      case pid::kProtocolVersion:
        okv = r.Read(&p.protocol_version.major) &&
              r.Read(&p.protocol_version.minor);
        break;
      case pid::kVendorId:
        okv = r.Read(&p.vendor.bytes[0]) && r.Read(&p.vendor.bytes[1]);
        break;
      case pid::kBuiltinEndpointSet:
        okv = r.Read(&p.builtin_endpoints);
        break;
      case pid::kDomainId:
        okv = r.Read(&p.domain_id);
        p.has_domain_id = okv;
        break;
      case pid::kDomainTag:
        okv = r.ReadString(&p.domain_tag);
        break;
      case pid::kMetatrafficUnicastLocator:
        okv = ReadLocator(prm, e, &l);
        if (okv) AddLocator(&p.metatraffic_unicast, l, &p.locators_dropped);
        break;
      case pid::kMetatrafficMulticastLocator:
        okv = ReadLocator(prm, e, &l);
        if (okv) AddLocator(&p.metatraffic_multicast, l, &p.locators_dropped);
        break;
      case pid::kDefaultUnicastLocator:
        okv = ReadLocator(prm, e, &l);
        if (okv) AddLocator(&p.default_unicast, l, &p.locators_dropped);
        break;
      case pid::kDefaultMulticastLocator:
        okv = ReadLocator(prm, e, &l);
        if (okv) AddLocator(&p.default_multicast, l, &p.locators_dropped);
        break;
      case pid::kParticipantLeaseDuration:
        okv = ReadDuration(r, &p.lease_duration_ns);
        break;
      case pid::kUserData: {
        uint32_t n = 0;
        std::span<const std::byte> v;
        okv = r.ReadLength(&n, 1) && r.ReadView(n, &v);
        if (okv) p.user_data.assign(reinterpret_cast<const char*>(v.data()), n);
        break;
      }
      case pid::kEntityName:
        okv = r.ReadString(&p.entity_name);
        break;
      case pid::kPropertyList: {
        uint32_t n = 0;
        okv = r.Read(&n);
        for (uint32_t i = 0; okv && i < n; ++i) {
          std::string name, value;
          okv = r.ReadString(&name) && r.ReadString(&value);
          if (okv && p.properties.size() < kMaxProperties) {
            p.properties.emplace_back(std::move(name), std::move(value));
          }
        }
        break;
      }
      case pid::kRinglabGossip: {
        uint32_t v = 0;
        okv = r.Read(&v);
        gossip_pid = okv && v == 1;
        break;
      }
      default:
        if (IsMustUnderstand(prm.id)) {
          return DiscoveryParseError::kUnknownMustUnderstand;
        }
        break;
    }
    if (!okv) return DiscoveryParseError::kBadValue;
  }
  if (pl.error() != PlError::kOk) return DiscoveryParseError::kMalformedList;
  if (!have_guid) return DiscoveryParseError::kMissingGuid;
  // Vendor-specific PIDs mean something only from their vendor.
  p.gossip = gossip_pid && p.vendor == kVendorRinglab;
  *out = std::move(p);
  return DiscoveryParseError::kOk;
}

DiscoveryParseError ParseEndpoint(std::span<const std::byte> payload,
                                  EndpointData* out) {
  Endian e;
  std::span<const std::byte> list;
  if (!OpenList(payload, &e, &list)) {
    return DiscoveryParseError::kBadEncapsulation;
  }
  EndpointData d;
  bool have_guid = false, have_participant = false;
  bool reliability_seen = false;
  ParameterListReader pl(list, e);
  Parameter prm;
  while (pl.Next(&prm)) {
    CdrReader r = ParameterValueReader(prm, e);
    Locator l;
    bool okv = true;
    bool bad = false;
    if (ReadQosParameter(prm, e, &d.qos, &bad)) {
      if (bad) return DiscoveryParseError::kBadValue;
      if (prm.id == pid::kReliability) reliability_seen = true;
      continue;
    }
    switch (prm.id) {
      case pid::kEndpointGuid:
        okv = ReadGuid(prm, &d.guid);
        have_guid = okv;
        break;
      case pid::kParticipantGuid:
        okv = ReadGuid(prm, &d.participant_guid);
        have_participant = okv;
        break;
      case pid::kTopicName:
        okv = r.ReadString(&d.topic_name);
        break;
      case pid::kTypeName:
        okv = r.ReadString(&d.type_name);
        break;
      case pid::kUnicastLocator:
        okv = ReadLocator(prm, e, &l);
        if (okv) AddLocator(&d.unicast, l, &d.locators_dropped);
        break;
      case pid::kMulticastLocator:
        okv = ReadLocator(prm, e, &l);
        if (okv) AddLocator(&d.multicast, l, &d.locators_dropped);
        break;
      case pid::kExpectsInlineQos: {
        uint8_t b = 0;
        okv = r.Read(&b);
        d.expects_inline_qos = b != 0;
        break;
      }
      case pid::kTypeInformation:
        d.has_type_information = true;
        break;
      default:
        if (IsMustUnderstand(prm.id)) {
          return DiscoveryParseError::kUnknownMustUnderstand;
        }
        break;
    }
    if (!okv) return DiscoveryParseError::kBadValue;
  }
  if (pl.error() != PlError::kOk) return DiscoveryParseError::kMalformedList;
  if (!have_guid) return DiscoveryParseError::kMissingGuid;
  if (!have_participant) {
    d.participant_guid = Guid{d.guid.prefix, EntityId::Participant()};
  }
  // §9.6.2.2 defaults for absent policies: readers best effort, writers
  // reliable (EndpointQos's default is the writer's).
  if (!reliability_seen && d.guid.entity.is_reader()) {
    d.qos.reliability = ReliabilityKind::kBestEffort;
  }
  *out = std::move(d);
  return DiscoveryParseError::kOk;
}

bool ParseInlineQos(std::span<const std::byte> list, Endian endian,
                    bool* has_key_hash, KeyHash* key_hash,
                    uint32_t* status_info) {
  ParameterListReader pl(list, endian);
  Parameter p;
  while (pl.Next(&p)) {
    if (p.id == pid::kKeyHash && p.value.size() >= 16) {
      std::memcpy(key_hash->bytes.data(), p.value.data(), 16);
      *has_key_hash = true;
    } else if (p.id == pid::kStatusInfo && p.value.size() >= 4) {
      // §9.6.3.9: the flags are in the last octet, independent of the
      // list's byte order.
      *status_info = (std::to_integer<uint32_t>(p.value[0]) << 24) |
                     (std::to_integer<uint32_t>(p.value[1]) << 16) |
                     (std::to_integer<uint32_t>(p.value[2]) << 8) |
                     std::to_integer<uint32_t>(p.value[3]);
    } else if (IsMustUnderstand(p.id)) {
      return false;
    }
  }
  return pl.error() == PlError::kOk;
}

}  // namespace ringlab::rtps
