// The built-in discovery topics' data (DDSI-RTPS 2.5 §8.5.3, §9.6.2.2):
// SPDPdiscoveredParticipantData and DiscoveredWriterData/ReaderData (SEDP),
// encoded as PL_CDR_LE / PL_CDR_BE parameter lists.
//
//   ParticipantData p;
//   p.guid_prefix = prefix;
//   p.metatraffic_unicast.push_back(Locator::UdpV4(0x7f000001, 7410));
//   std::vector<std::byte> payload;
//   SerializeParticipant(p, &payload);                // PL_CDR_LE
//   ParticipantData back;
//   DiscoveryParseError e = ParseParticipant(payload, &back);
//
// Parsing validates the encapsulation and the parameter list (sentinel,
// lengths), rejects a list with a must-understand PID we do not know
// (§9.6.2.2.1), and ignores other unknown and vendor-specific PIDs.
// Locator lists are capped at kMaxLocators each (extra ones are counted in
// `locators_dropped`, not kept), so a hostile announcement cannot make us
// keep unbounded memory.
//
// Errors: a DiscoveryParseError naming the reason. Serializing allocates
// only by growing the caller's vector.
#ifndef RINGLAB_RTPS_DISCOVERY_DATA_H_
#define RINGLAB_RTPS_DISCOVERY_DATA_H_

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "rtps/parameter_list.h"
#include "rtps/qos.h"
#include "rtps/types.h"

namespace ringlab::rtps {

// §8.5.4.3 / §9.3.2.12 BuiltinEndpointSet_t bits.
namespace builtin_endpoint {
inline constexpr uint32_t kParticipantAnnouncer = 1u << 0;
inline constexpr uint32_t kParticipantDetector = 1u << 1;
inline constexpr uint32_t kPublicationsAnnouncer = 1u << 2;
inline constexpr uint32_t kPublicationsDetector = 1u << 3;
inline constexpr uint32_t kSubscriptionsAnnouncer = 1u << 4;
inline constexpr uint32_t kSubscriptionsDetector = 1u << 5;
inline constexpr uint32_t kParticipantMessageWriter = 1u << 10;
inline constexpr uint32_t kParticipantMessageReader = 1u << 11;
inline constexpr uint32_t kTopicsAnnouncer = 1u << 28;
inline constexpr uint32_t kTopicsDetector = 1u << 29;
}  // namespace builtin_endpoint

inline constexpr size_t kMaxLocators = 8;

struct ParticipantData {
  GuidPrefix guid_prefix;
  ProtocolVersion protocol_version;
  VendorId vendor;
  uint32_t builtin_endpoints = 0;
  std::vector<Locator> metatraffic_unicast;
  std::vector<Locator> metatraffic_multicast;
  std::vector<Locator> default_unicast;
  std::vector<Locator> default_multicast;
  int64_t lease_duration_ns = 100'000'000'000;  // §9.6.2.2 default: 100 s
  bool has_domain_id = false;
  uint32_t domain_id = 0;
  std::string domain_tag;
  std::string user_data;  // USER_DATA octets
  std::string entity_name;
  // PID_PROPERTY_LIST (DDS-Security 1.1 §7.2.1 PropertyQosPolicy; Cyclone
  // puts __ProcessName, __Pid and __Hostname there): name/value pairs, at
  // most kMaxProperties kept.
  std::vector<std::pair<std::string, std::string>> properties;
  // ringlab's vendor-specific PID_RINGLAB_GOSSIP: this participant runs
  // gossip discovery (read only when the vendor is ringlab).
  bool gossip = false;
  uint32_t locators_dropped = 0;
};
inline constexpr size_t kMaxProperties = 16;

struct EndpointData {
  Guid guid;  // endpoint GUID: its entity kind says writer or reader
  Guid participant_guid;
  std::string topic_name;
  std::string type_name;
  EndpointQos qos;
  std::vector<Locator> unicast;
  std::vector<Locator> multicast;
  bool expects_inline_qos = false;
  bool has_type_information = false;  // XTypes TypeInformation was announced
  uint32_t locators_dropped = 0;
};

enum class DiscoveryParseError : uint8_t {
  kOk,
  kBadEncapsulation,       // not PL_CDR_LE/BE, or under 4 bytes
  kMalformedList,          // parameter list error (see PlError)
  kUnknownMustUnderstand,  // §9.6.2.2.1: must be rejected
  kMissingGuid,            // no PID_PARTICIPANT_GUID / PID_ENDPOINT_GUID
  kBadValue,               // a parameter whose value cannot be decoded
};
const char* DiscoveryParseErrorName(DiscoveryParseError e);

// Appends encapsulation + parameter list to `*out` (cleared first).
void SerializeParticipant(const ParticipantData& p,
                          std::vector<std::byte>* out);
// `is_writer` selects the defaults applied to absent QoS (DDS 1.4:
// writers reliable, readers best effort).
void SerializeEndpoint(const EndpointData& e, std::vector<std::byte>* out);

// `payload` includes the 4-byte encapsulation header.
DiscoveryParseError ParseParticipant(std::span<const std::byte> payload,
                                     ParticipantData* out);
DiscoveryParseError ParseEndpoint(std::span<const std::byte> payload,
                                  EndpointData* out);

// Reads PID_KEY_HASH / PID_STATUS_INFO from an inline QoS list. Unknown
// must-understand PIDs make it return false (§9.6.2.2.1). `key_hash` and
// `status_info` are left untouched when absent.
bool ParseInlineQos(std::span<const std::byte> list, Endian endian,
                    bool* has_key_hash, KeyHash* key_hash,
                    uint32_t* status_info);

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_DISCOVERY_DATA_H_
