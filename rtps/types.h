// RTPS value types: GUIDs, entity ids, sequence numbers and their sets,
// locators, RTPS time, and the default port mapping (DDSI-RTPS 2.5 §8.2,
// §9.3, §9.6.1.1).
//
//   GuidPrefix prefix = ...;                       // 12 bytes, unique per host
//   Guid writer{prefix, EntityId::UserWriter(1, /*keyed=*/true)};
//   SequenceNumber sn = 1;                         // int64, wire = high:low
//   Locator loc = Locator::FromEndpoint(Endpoint::Loopback(7411));
//   uint16_t spdp = ports::SpdpMulticast(/*domain=*/0);  // 7400
//
// All types are small values; nothing here allocates except ToString().
// Thread-safety: plain values.
#ifndef RINGLAB_RTPS_TYPES_H_
#define RINGLAB_RTPS_TYPES_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "transport/endpoint.h"

namespace ringlab::rtps {

// RTPS 2.5 §8.2.4.1 / §9.3.1.1: the 12-byte GuidPrefix.
struct GuidPrefix {
  std::array<uint8_t, 12> bytes{};
  bool is_unknown() const {
    for (uint8_t b : bytes)
      if (b != 0) return false;
    return true;
  }
  friend bool operator==(const GuidPrefix&, const GuidPrefix&) = default;
  friend auto operator<=>(const GuidPrefix&, const GuidPrefix&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const GuidPrefix& p) {
    return H::combine_contiguous(std::move(h), p.bytes.data(), p.bytes.size());
  }
};

// RTPS 2.5 §9.3.1.2: entityKey (3 bytes) + entityKind (1 byte), stored as
// the big-endian uint32 of the 4 wire bytes.
struct EntityId {
  uint32_t value = 0;

  // Entity kinds, §9.3.1.2 Table 9.1.
  static constexpr uint8_t kUserWriterWithKey = 0x02;
  static constexpr uint8_t kUserWriterNoKey = 0x03;
  static constexpr uint8_t kUserReaderNoKey = 0x04;
  static constexpr uint8_t kUserReaderWithKey = 0x07;
  static constexpr uint8_t kBuiltinParticipant = 0xc1;
  static constexpr uint8_t kBuiltinWriterWithKey = 0xc2;
  static constexpr uint8_t kBuiltinReaderWithKey = 0xc7;

  static constexpr EntityId Unknown() { return {0}; }
  // §9.3.1.3 predefined entity ids.
  static constexpr EntityId Participant() { return {0x000001c1}; }
  static constexpr EntityId SedpTopicsWriter() { return {0x000002c2}; }
  static constexpr EntityId SedpTopicsReader() { return {0x000002c7}; }
  static constexpr EntityId SedpPublicationsWriter() { return {0x000003c2}; }
  static constexpr EntityId SedpPublicationsReader() { return {0x000003c7}; }
  static constexpr EntityId SedpSubscriptionsWriter() { return {0x000004c2}; }
  static constexpr EntityId SedpSubscriptionsReader() { return {0x000004c7}; }
  static constexpr EntityId SpdpWriter() { return {0x000100c2}; }
  static constexpr EntityId SpdpReader() { return {0x000100c7}; }
  static constexpr EntityId ParticipantMessageWriter() { return {0x000200c2}; }
  static constexpr EntityId ParticipantMessageReader() { return {0x000200c7}; }

  static constexpr EntityId Make(uint32_t key, uint8_t kind) {
    return {(key << 8) | kind};
  }
  uint8_t kind() const { return static_cast<uint8_t>(value & 0xff); }
  // Writers have kinds 0x02/0x03 (user) and 0xc2/0xc3 (built-in).
  bool is_writer() const {
    uint8_t k = kind() & 0x3f;
    return k == 0x02 || k == 0x03;
  }
  bool is_reader() const {
    uint8_t k = kind() & 0x3f;
    return k == 0x04 || k == 0x07;
  }
  bool is_builtin() const { return (kind() & 0xc0) == 0xc0; }
  bool is_unknown() const { return value == 0; }
  friend bool operator==(EntityId, EntityId) = default;
  friend auto operator<=>(EntityId, EntityId) = default;
  template <typename H>
  friend H AbslHashValue(H h, EntityId e) {
    return H::combine(std::move(h), e.value);
  }
};

// RTPS 2.5 §8.2.4.1: a GUID is prefix + entity id.
struct Guid {
  GuidPrefix prefix;
  EntityId entity;
  friend bool operator==(const Guid&, const Guid&) = default;
  friend auto operator<=>(const Guid&, const Guid&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const Guid& g) {
    return H::combine(std::move(h), g.prefix, g.entity);
  }
  // The 16 wire bytes (prefix then entity id, big-endian).
  std::array<uint8_t, 16> Bytes() const;
  static Guid FromBytes(const uint8_t* sixteen);
  // "0110abcd:...:000001c1"-style text for logs: four 8-digit hex groups.
  std::string ToString() const;
};

// RTPS 2.5 §9.3.2: a 64-bit sequence number sent as {int32 high, uint32 low}.
// Valid numbers are >= 1; SEQUENCENUMBER_UNKNOWN is {-1, 0}.
using SequenceNumber = int64_t;
inline constexpr SequenceNumber kSequenceNumberUnknown =
    static_cast<int64_t>(static_cast<uint64_t>(0xffffffffull) << 32);

// RTPS 2.5 §8.3.5.5 / §9.4.2.6: a set of at most 256 sequence numbers
// relative to a base. Validity (base >= 1, num_bits <= 256) is checked by the
// parser, not here.
struct SequenceNumberSet {
  static constexpr uint32_t kMaxBits = 256;
  SequenceNumber base = 1;
  uint32_t num_bits = 0;
  std::array<uint32_t, 8> bitmap{};

  bool Contains(SequenceNumber sn) const {
    if (sn < base || sn >= base + num_bits) return false;
    uint64_t i = static_cast<uint64_t>(sn - base);
    return (bitmap[i / 32] >> (31 - i % 32)) & 1u;
  }
  // Adds `sn`; it must lie in [base, base + kMaxBits). Grows num_bits.
  void Add(SequenceNumber sn) {
    uint64_t i = static_cast<uint64_t>(sn - base);
    bitmap[i / 32] |= 1u << (31 - i % 32);
    if (i + 1 > num_bits) num_bits = static_cast<uint32_t>(i + 1);
  }
};

// RTPS 2.5 §8.3.5.7 / §9.4.2.8: fragment numbers start at 1.
struct FragmentNumberSet {
  uint32_t base = 1;
  uint32_t num_bits = 0;
  std::array<uint32_t, 8> bitmap{};
  bool Contains(uint32_t fn) const {
    if (fn < base || fn - base >= num_bits) return false;
    uint32_t i = fn - base;
    return (bitmap[i / 32] >> (31 - i % 32)) & 1u;
  }
  void Add(uint32_t fn) {
    uint32_t i = fn - base;
    bitmap[i / 32] |= 1u << (31 - i % 32);
    if (i + 1 > num_bits) num_bits = i + 1;
  }
};

// RTPS 2.5 §9.3.2 Locator_t: kind, port, 16-byte address. UDPv4 addresses
// sit in the last 4 bytes.
struct Locator {
  static constexpr int32_t kInvalid = -1;
  static constexpr int32_t kUdpV4 = 1;
  static constexpr int32_t kUdpV6 = 2;
  int32_t kind = kInvalid;
  uint32_t port = 0;
  std::array<uint8_t, 16> address{};

  static Locator UdpV4(uint32_t host_order_address, uint16_t port);
  static Locator FromEndpoint(const Endpoint& endpoint);
  // An invalid Endpoint for kinds other than UDPv4/UDPv6 or ports > 65535.
  Endpoint ToEndpoint() const;
  bool is_udp_v4() const { return kind == kUdpV4; }
  uint32_t ipv4_host_order() const {
    return (uint32_t{address[12]} << 24) | (uint32_t{address[13]} << 16) |
           (uint32_t{address[14]} << 8) | address[15];
  }
  bool is_multicast() const;
  std::string ToString() const;
  friend bool operator==(const Locator&, const Locator&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const Locator& l) {
    return H::combine_contiguous(H::combine(std::move(h), l.kind, l.port),
                                 l.address.data(), l.address.size());
  }
};

// RTPS 2.5 §9.3.2 Time_t: seconds + 2^-32 fractions. We carry wall-clock
// nanoseconds since the UNIX epoch. The conversion to the wire rounds up and
// the one back rounds to nearest, so ns -> wire -> ns is exact (peers such
// as ddsperf rely on the low bit of a timestamp surviving a round trip).
struct RtpsTime {
  int32_t seconds = 0;
  uint32_t fraction = 0;
  static constexpr RtpsTime Invalid() { return {-1, 0xffffffffu}; }
  static constexpr RtpsTime Infinite() { return {0x7fffffff, 0xffffffffu}; }
  static RtpsTime FromNanos(int64_t ns);
  int64_t ToNanos() const;
  friend bool operator==(const RtpsTime&, const RtpsTime&) = default;
};

// Duration_t has the same layout (§9.3.2); "infinite" maps to INT64_MAX ns.
using RtpsDuration = RtpsTime;
RtpsDuration DurationFromNanos(int64_t ns);  // INT64_MAX -> infinite
int64_t DurationToNanos(RtpsDuration d);     // infinite -> INT64_MAX

inline constexpr int64_t kInfiniteNanos = INT64_MAX;

// RTPS 2.5 §8.3.3.1 / §9.4.5: protocol version and vendor id.
struct ProtocolVersion {
  uint8_t major = 2;
  uint8_t minor = 5;
  friend bool operator==(ProtocolVersion, ProtocolVersion) = default;
};
struct VendorId {
  std::array<uint8_t, 2> bytes{};
  friend bool operator==(VendorId, VendorId) = default;
  uint16_t value() const {
    return static_cast<uint16_t>(bytes[0] << 8 | bytes[1]);
  }
};
// ringlab has no vendor id assigned by the OMG; 0x01ff is outside the
// assigned list, so peers treat us as an unknown (spec-conforming) vendor.
inline constexpr VendorId kVendorRinglab{{0x01, 0xff}};
inline constexpr VendorId kVendorEclipseCyclone{{0x01, 0x10}};

// KeyHash: 16 bytes (§9.6.4.8).
struct KeyHash {
  std::array<uint8_t, 16> bytes{};
  friend bool operator==(const KeyHash&, const KeyHash&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const KeyHash& k) {
    return H::combine_contiguous(std::move(h), k.bytes.data(), k.bytes.size());
  }
};

// RTPS 2.5 §9.6.1.1 default port mapping with the recommended constants
// PB = 7400, DG = 250, PG = 2, d0 = 0, d1 = 10, d2 = 1, d3 = 11.
namespace ports {
inline constexpr uint32_t kPortBase = 7400;
inline constexpr uint32_t kDomainGain = 250;
inline constexpr uint32_t kParticipantGain = 2;
inline constexpr uint32_t SpdpMulticast(uint32_t domain) {
  return kPortBase + kDomainGain * domain + 0;
}
inline constexpr uint32_t SpdpUnicast(uint32_t domain, uint32_t participant) {
  return kPortBase + kDomainGain * domain + 10 + kParticipantGain * participant;
}
inline constexpr uint32_t UserMulticast(uint32_t domain) {
  return kPortBase + kDomainGain * domain + 1;
}
inline constexpr uint32_t UserUnicast(uint32_t domain, uint32_t participant) {
  return kPortBase + kDomainGain * domain + 11 + kParticipantGain * participant;
}
// The well-known SPDP multicast group (§9.6.1.4.1).
inline constexpr uint32_t kDefaultMulticastGroup = 0xefff0001;  // 239.255.0.1
}  // namespace ports

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_TYPES_H_
