// MQTT protocol constants shared by the codec, the broker and the client:
// protocol versions, control packet types, reason codes (MQTT 5.0 §2.4) and
// the MQTT 3.1.1 CONNACK return codes, plus property identifiers (§2.2.2.2).
//
//   if (status.code == ReasonCode::kMalformedPacket) { ... }
//   std::string_view name = ReasonCodeName(ReasonCode::kQuotaExceeded);
//   uint8_t v311 = ConnackReturnCodeV311(ReasonCode::kNotAuthorized);  // 5
//
// Everything here is a plain value; no allocation, no state.
#ifndef RINGLAB_MQTT_TYPES_H_
#define RINGLAB_MQTT_TYPES_H_

#include <cstdint>
#include <string_view>

namespace ringlab::mqtt {

// The Protocol Level byte of CONNECT (MQTT 3.1.1 §3.1.2.2, 5.0 §3.1.2.2).
enum class Version : uint8_t {
  k311 = 4,
  k5 = 5,
};

// Control packet types, the high nibble of the fixed header (§2.1.2).
enum class PacketType : uint8_t {
  kReserved = 0,
  kConnect = 1,
  kConnack = 2,
  kPublish = 3,
  kPuback = 4,
  kPubrec = 5,
  kPubrel = 6,
  kPubcomp = 7,
  kSubscribe = 8,
  kSuback = 9,
  kUnsubscribe = 10,
  kUnsuback = 11,
  kPingreq = 12,
  kPingresp = 13,
  kDisconnect = 14,
  kAuth = 15,  // MQTT 5.0 only
};

std::string_view PacketTypeName(PacketType type);

// MQTT 5.0 §2.4 reason codes. The same byte means different things in
// different packets (0x00 is Success, Normal disconnection and Granted QoS 0),
// so the aliases below name the packet-specific meanings.
enum class ReasonCode : uint8_t {
  kSuccess = 0x00,
  kNormalDisconnection = 0x00,
  kGrantedQos0 = 0x00,
  kGrantedQos1 = 0x01,
  kGrantedQos2 = 0x02,
  kDisconnectWithWillMessage = 0x04,
  kNoMatchingSubscribers = 0x10,
  kNoSubscriptionExisted = 0x11,
  kContinueAuthentication = 0x18,
  kReAuthenticate = 0x19,
  kUnspecifiedError = 0x80,
  kMalformedPacket = 0x81,
  kProtocolError = 0x82,
  kImplementationSpecificError = 0x83,
  kUnsupportedProtocolVersion = 0x84,
  kClientIdentifierNotValid = 0x85,
  kBadUserNameOrPassword = 0x86,
  kNotAuthorized = 0x87,
  kServerUnavailable = 0x88,
  kServerBusy = 0x89,
  kBanned = 0x8A,
  kServerShuttingDown = 0x8B,
  kBadAuthenticationMethod = 0x8C,
  kKeepAliveTimeout = 0x8D,
  kSessionTakenOver = 0x8E,
  kTopicFilterInvalid = 0x8F,
  kTopicNameInvalid = 0x90,
  kPacketIdentifierInUse = 0x91,
  kPacketIdentifierNotFound = 0x92,
  kReceiveMaximumExceeded = 0x93,
  kTopicAliasInvalid = 0x94,
  kPacketTooLarge = 0x95,
  kMessageRateTooHigh = 0x96,
  kQuotaExceeded = 0x97,
  kAdministrativeAction = 0x98,
  kPayloadFormatInvalid = 0x99,
  kRetainNotSupported = 0x9A,
  kQosNotSupported = 0x9B,
  kUseAnotherServer = 0x9C,
  kServerMoved = 0x9D,
  kSharedSubscriptionsNotSupported = 0x9E,
  kConnectionRateExceeded = 0x9F,
  kMaximumConnectTime = 0xA0,
  kSubscriptionIdentifiersNotSupported = 0xA1,
  kWildcardSubscriptionsNotSupported = 0xA2,
};

// "Malformed Packet", "Quota exceeded", ...; "unknown" for other bytes.
std::string_view ReasonCodeName(ReasonCode code);
inline bool IsError(ReasonCode code) { return uint8_t(code) >= 0x80; }

// MQTT 3.1.1 §3.2.2.3 CONNACK return codes.
enum class ConnackV311 : uint8_t {
  kAccepted = 0,
  kUnacceptableProtocolVersion = 1,
  kIdentifierRejected = 2,
  kServerUnavailable = 3,
  kBadUserNameOrPassword = 4,
  kNotAuthorized = 5,
};
// The closest 3.1.1 return code for a 5.0 CONNACK reason code.
uint8_t ConnackReturnCodeV311(ReasonCode code);
// And back: the 5.0 reason code a 3.1.1 return code means.
ReasonCode ReasonCodeFromConnackV311(uint8_t code);

// Which packets may carry a reason code byte, and which values each allows
// (MQTT 5.0 §3.2.2.2, §3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1, §3.9.3,
// §3.11.3, §3.14.2.1, §3.15.2.1).
bool IsValidReasonCode(PacketType packet, ReasonCode code);

// MQTT 5.0 §2.2.2.2 property identifiers.
enum class PropertyId : uint8_t {
  kPayloadFormatIndicator = 0x01,
  kMessageExpiryInterval = 0x02,
  kContentType = 0x03,
  kResponseTopic = 0x08,
  kCorrelationData = 0x09,
  kSubscriptionIdentifier = 0x0B,
  kSessionExpiryInterval = 0x11,
  kAssignedClientIdentifier = 0x12,
  kServerKeepAlive = 0x13,
  kAuthenticationMethod = 0x15,
  kAuthenticationData = 0x16,
  kRequestProblemInformation = 0x17,
  kWillDelayInterval = 0x18,
  kRequestResponseInformation = 0x19,
  kResponseInformation = 0x1A,
  kServerReference = 0x1C,
  kReasonString = 0x1F,
  kReceiveMaximum = 0x21,
  kTopicAliasMaximum = 0x22,
  kTopicAlias = 0x23,
  kMaximumQos = 0x24,
  kRetainAvailable = 0x25,
  kUserProperty = 0x26,
  kMaximumPacketSize = 0x27,
  kWildcardSubscriptionAvailable = 0x28,
  kSubscriptionIdentifierAvailable = 0x29,
  kSharedSubscriptionAvailable = 0x2A,
};

// The largest value a Variable Byte Integer can hold (§1.5.5), and so the
// largest Remaining Length and Subscription Identifier.
inline constexpr uint32_t kMaxVarint = 268'435'455;
// The largest packet on the wire: 1 type byte + 4 length bytes + body.
inline constexpr uint32_t kMaxPacketBytes = kMaxVarint + 5;

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_TYPES_H_
