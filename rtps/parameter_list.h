// Parameter lists (DDSI-RTPS 2.5 §9.4.2.11, §9.6.2.2): the {pid, length,
// value} sequence ended by PID_SENTINEL that carries inline QoS in DATA
// submessages and the PL_CDR_LE/BE discovery payloads (SPDP, SEDP).
//
//   ParameterListReader pl(bytes, Endian::kLittle);
//   Parameter p;
//   while (pl.Next(&p)) {
//     if (p.id == pid::kTopicName) ...  // p.value: the value bytes
//   }
//   if (pl.error() != PlError::kOk) ...  // counted by the caller, dropped
//
//   ParameterListWriter w(&cdr_writer);   // writes into the caller's buffer
//   size_t at = w.Begin(pid::kTopicName);
//   cdr_writer.WriteString("Square");
//   w.End(at);                            // pads to 4 and patches the length
//   w.Finish();                           // PID_SENTINEL
//
// Validation (§9.4.2.11): every parameter must fit in the input, lengths are
// multiples of 4, the list must end with a sentinel. PID_PAD is skipped. The
// reader does not judge must-understand PIDs (§9.6.2.2.1: 0x4000 set, 0x8000
// clear): the caller knows which PIDs it understands and calls
// IsMustUnderstand() on the others.
//
// Ownership: the reader borrows the input; parameter values are views of it.
// Errors: reported by error(), never thrown.
#ifndef RINGLAB_RTPS_PARAMETER_LIST_H_
#define RINGLAB_RTPS_PARAMETER_LIST_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "rtps/cdr.h"

namespace ringlab::rtps {

// RTPS 2.5 §9.6.2.2.2 Table 9.13/9.14, §9.6.3 (inline QoS), XTypes 1.3
// §7.6.2.1 (data representation, type information).
namespace pid {
inline constexpr uint16_t kPad = 0x0000;
inline constexpr uint16_t kSentinel = 0x0001;
inline constexpr uint16_t kParticipantLeaseDuration = 0x0002;
inline constexpr uint16_t kTimeBasedFilter = 0x0004;
inline constexpr uint16_t kTopicName = 0x0005;
inline constexpr uint16_t kOwnershipStrength = 0x0006;
inline constexpr uint16_t kTypeName = 0x0007;
inline constexpr uint16_t kMetatrafficMulticastIpAddress = 0x000b;
inline constexpr uint16_t kDefaultUnicastIpAddress = 0x000c;
inline constexpr uint16_t kMetatrafficUnicastPort = 0x000d;
inline constexpr uint16_t kDefaultUnicastPort = 0x000e;
inline constexpr uint16_t kDomainId = 0x000f;
inline constexpr uint16_t kMulticastIpAddress = 0x0011;
inline constexpr uint16_t kProtocolVersion = 0x0015;
inline constexpr uint16_t kVendorId = 0x0016;
inline constexpr uint16_t kReliability = 0x001a;
inline constexpr uint16_t kLiveliness = 0x001b;
inline constexpr uint16_t kDurability = 0x001d;
inline constexpr uint16_t kDurabilityService = 0x001e;
inline constexpr uint16_t kOwnership = 0x001f;
inline constexpr uint16_t kPresentation = 0x0021;
inline constexpr uint16_t kDeadline = 0x0023;
inline constexpr uint16_t kDestinationOrder = 0x0025;
inline constexpr uint16_t kLatencyBudget = 0x0027;
inline constexpr uint16_t kPartition = 0x0029;
inline constexpr uint16_t kLifespan = 0x002b;
inline constexpr uint16_t kUserData = 0x002c;
inline constexpr uint16_t kGroupData = 0x002d;
inline constexpr uint16_t kTopicData = 0x002e;
inline constexpr uint16_t kUnicastLocator = 0x002f;
inline constexpr uint16_t kMulticastLocator = 0x0030;
inline constexpr uint16_t kDefaultUnicastLocator = 0x0031;
inline constexpr uint16_t kMetatrafficUnicastLocator = 0x0032;
inline constexpr uint16_t kMetatrafficMulticastLocator = 0x0033;
inline constexpr uint16_t kParticipantManualLivelinessCount = 0x0034;
inline constexpr uint16_t kContentFilterProperty = 0x0035;
inline constexpr uint16_t kParticipantBuiltinEndpoints = 0x0044;
inline constexpr uint16_t kHistory = 0x0040;
inline constexpr uint16_t kResourceLimits = 0x0041;
inline constexpr uint16_t kExpectsInlineQos = 0x0043;
inline constexpr uint16_t kDefaultMulticastLocator = 0x0048;
inline constexpr uint16_t kTransportPriority = 0x0049;
inline constexpr uint16_t kParticipantGuid = 0x0050;
inline constexpr uint16_t kGroupGuid = 0x0052;
inline constexpr uint16_t kContentFilterInfo = 0x0055;
inline constexpr uint16_t kCoherentSet = 0x0056;
inline constexpr uint16_t kDirectedWrite = 0x0057;
inline constexpr uint16_t kBuiltinEndpointSet = 0x0058;
inline constexpr uint16_t kPropertyList = 0x0059;
inline constexpr uint16_t kEndpointGuid = 0x005a;
inline constexpr uint16_t kTypeMaxSizeSerialized = 0x0060;
inline constexpr uint16_t kOriginalWriterInfo = 0x0061;
inline constexpr uint16_t kEntityName = 0x0062;
// Vendor-specific (§9.6.2.2.1: 0x8000 set), meaningful only from ringlab
// (vendor 0x01ff): the participant runs gossip discovery (rtps/gossip.h);
// value: uint32 1.
inline constexpr uint16_t kRinglabGossip = 0x8001;
inline constexpr uint16_t kGroupCoherentSet = 0x0063;
inline constexpr uint16_t kGroupSeqNum = 0x0064;
inline constexpr uint16_t kWriterGroupInfo = 0x0065;
inline constexpr uint16_t kSecureWriterGroupInfo = 0x0066;
inline constexpr uint16_t kKeyHash = 0x0070;
inline constexpr uint16_t kStatusInfo = 0x0071;
inline constexpr uint16_t kDataRepresentation = 0x0073;
inline constexpr uint16_t kTypeConsistency = 0x0074;
inline constexpr uint16_t kTypeInformation = 0x0075;
inline constexpr uint16_t kBuiltinEndpointQos = 0x0077;
inline constexpr uint16_t kDomainTag = 0x4014;

inline constexpr uint16_t kVendorSpecificBit = 0x8000;
inline constexpr uint16_t kMustUnderstandBit = 0x4000;
}  // namespace pid

// §9.6.2.2.1: a PID the receiver must understand or reject the message.
// Vendor-specific PIDs (0x8000 set) are ignored when not understood.
inline bool IsMustUnderstand(uint16_t id) {
  return (id & pid::kMustUnderstandBit) != 0 &&
         (id & pid::kVendorSpecificBit) == 0;
}

// Status info flags (§9.6.3.9).
inline constexpr uint32_t kStatusInfoDisposed = 1;
inline constexpr uint32_t kStatusInfoUnregistered = 2;

enum class PlError : uint8_t {
  kOk,
  kTruncated,   // a parameter header or value runs past the input
  kNoSentinel,  // the input ended before PID_SENTINEL
  kBadLength,   // a length that is not a multiple of 4
};
const char* PlErrorName(PlError e);

struct Parameter {
  uint16_t id = 0;
  std::span<const std::byte> value;
};

class ParameterListReader {
 public:
  ParameterListReader(std::span<const std::byte> bytes, Endian endian)
      : in_(bytes), endian_(endian) {}
  // The next non-pad parameter. False at the sentinel (error() == kOk) or on
  // malformed input (error() says why).
  bool Next(Parameter* out);
  PlError error() const { return error_; }
  // Bytes consumed so far; after the sentinel, the list's total size.
  size_t consumed() const { return pos_; }
  Endian endian() const { return endian_; }
  // Walks the whole list; kOk if well-formed. `size` gets the byte length
  // including the sentinel.
  static PlError Validate(std::span<const std::byte> bytes, Endian endian,
                          size_t* size);

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  Endian endian_;
  PlError error_ = PlError::kOk;
  bool done_ = false;
};

// A CdrReader over one parameter value: alignment restarts at the value,
// which is 4-aligned in the list.
inline CdrReader ParameterValueReader(const Parameter& p, Endian endian) {
  return CdrReader(p.value, endian, CdrVersion::kXcdr1);
}

class ParameterListWriter {
 public:
  // Writes through `w`, which must be 4-aligned at the current position.
  explicit ParameterListWriter(CdrWriter* w) : w_(w) {}
  // Starts a parameter; returns a token for End().
  size_t Begin(uint16_t id);
  // Pads the value to 4 bytes and patches the length.
  void End(size_t token);
  void Finish();  // PID_SENTINEL
  CdrWriter& cdr() { return *w_; }

 private:
  CdrWriter* w_;
};

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_PARAMETER_LIST_H_
