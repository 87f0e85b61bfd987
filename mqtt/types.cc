#include "mqtt/types.h"

#include <algorithm>
#include <initializer_list>

namespace ringlab::mqtt {

std::string_view PacketTypeName(PacketType type) {
  switch (type) {
    case PacketType::kReserved:
      return "RESERVED";
    case PacketType::kConnect:
      return "CONNECT";
    case PacketType::kConnack:
      return "CONNACK";
    case PacketType::kPublish:
      return "PUBLISH";
    case PacketType::kPuback:
      return "PUBACK";
    case PacketType::kPubrec:
      return "PUBREC";
    case PacketType::kPubrel:
      return "PUBREL";
    case PacketType::kPubcomp:
      return "PUBCOMP";
    case PacketType::kSubscribe:
      return "SUBSCRIBE";
    case PacketType::kSuback:
      return "SUBACK";
    case PacketType::kUnsubscribe:
      return "UNSUBSCRIBE";
    case PacketType::kUnsuback:
      return "UNSUBACK";
    case PacketType::kPingreq:
      return "PINGREQ";
    case PacketType::kPingresp:
      return "PINGRESP";
    case PacketType::kDisconnect:
      return "DISCONNECT";
    case PacketType::kAuth:
      return "AUTH";
  }
  return "unknown";
}

std::string_view ReasonCodeName(ReasonCode code) {
  switch (uint8_t(code)) {
    case 0x00:
      return "Success";
    case 0x01:
      return "Granted QoS 1";
    case 0x02:
      return "Granted QoS 2";
    case 0x04:
      return "Disconnect with Will Message";
    case 0x10:
      return "No matching subscribers";
    case 0x11:
      return "No subscription existed";
    case 0x18:
      return "Continue authentication";
    case 0x19:
      return "Re-authenticate";
    case 0x80:
      return "Unspecified error";
    case 0x81:
      return "Malformed Packet";
    case 0x82:
      return "Protocol Error";
    case 0x83:
      return "Implementation specific error";
    case 0x84:
      return "Unsupported Protocol Version";
    case 0x85:
      return "Client Identifier not valid";
    case 0x86:
      return "Bad User Name or Password";
    case 0x87:
      return "Not authorized";
    case 0x88:
      return "Server unavailable";
    case 0x89:
      return "Server busy";
    case 0x8A:
      return "Banned";
    case 0x8B:
      return "Server shutting down";
    case 0x8C:
      return "Bad authentication method";
    case 0x8D:
      return "Keep Alive timeout";
    case 0x8E:
      return "Session taken over";
    case 0x8F:
      return "Topic Filter invalid";
    case 0x90:
      return "Topic Name invalid";
    case 0x91:
      return "Packet Identifier in use";
    case 0x92:
      return "Packet Identifier not found";
    case 0x93:
      return "Receive Maximum exceeded";
    case 0x94:
      return "Topic Alias invalid";
    case 0x95:
      return "Packet too large";
    case 0x96:
      return "Message rate too high";
    case 0x97:
      return "Quota exceeded";
    case 0x98:
      return "Administrative action";
    case 0x99:
      return "Payload format invalid";
    case 0x9A:
      return "Retain not supported";
    case 0x9B:
      return "QoS not supported";
    case 0x9C:
      return "Use another server";
    case 0x9D:
      return "Server moved";
    case 0x9E:
      return "Shared Subscriptions not supported";
    case 0x9F:
      return "Connection rate exceeded";
    case 0xA0:
      return "Maximum connect time";
    case 0xA1:
      return "Subscription Identifiers not supported";
    case 0xA2:
      return "Wildcard Subscriptions not supported";
  }
  return "unknown";
}

uint8_t ConnackReturnCodeV311(ReasonCode code) {
  switch (code) {
    case ReasonCode::kSuccess:
      return uint8_t(ConnackV311::kAccepted);
    case ReasonCode::kUnsupportedProtocolVersion:
      return uint8_t(ConnackV311::kUnacceptableProtocolVersion);
    case ReasonCode::kClientIdentifierNotValid:
      return uint8_t(ConnackV311::kIdentifierRejected);
    case ReasonCode::kBadUserNameOrPassword:
      return uint8_t(ConnackV311::kBadUserNameOrPassword);
    case ReasonCode::kNotAuthorized:
    case ReasonCode::kBanned:
      return uint8_t(ConnackV311::kNotAuthorized);
    default:
      return uint8_t(ConnackV311::kServerUnavailable);
  }
}

ReasonCode ReasonCodeFromConnackV311(uint8_t code) {
  switch (code) {
    case 0:
      return ReasonCode::kSuccess;
    case 1:
      return ReasonCode::kUnsupportedProtocolVersion;
    case 2:
      return ReasonCode::kClientIdentifierNotValid;
    case 3:
      return ReasonCode::kServerUnavailable;
    case 4:
      return ReasonCode::kBadUserNameOrPassword;
    case 5:
      return ReasonCode::kNotAuthorized;
    default:
      return ReasonCode::kUnspecifiedError;
  }
}

namespace {

bool In(ReasonCode code, std::initializer_list<uint8_t> allowed) {
  return std::find(allowed.begin(), allowed.end(), uint8_t(code)) !=
         allowed.end();
}

}  // namespace

bool IsValidReasonCode(PacketType packet, ReasonCode code) {
  switch (packet) {
    case PacketType::kConnack:  // MQTT 5.0 §3.2.2.2
      return In(code, {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                       0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                       0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F});
    case PacketType::kPuback:  // §3.4.2.1
    case PacketType::kPubrec:  // §3.5.2.1
      return In(code, {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99});
    case PacketType::kPubrel:   // §3.6.2.1
    case PacketType::kPubcomp:  // §3.7.2.1
      return In(code, {0x00, 0x92});
    case PacketType::kSuback:  // §3.9.3
      return In(code, {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97,
                       0x9E, 0xA1, 0xA2});
    case PacketType::kUnsuback:  // §3.11.3
      return In(code, {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91});
    case PacketType::kDisconnect:  // §3.14.2.1
      return In(code,
                {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D,
                 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
                 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2});
    case PacketType::kAuth:  // §3.15.2.1
      return In(code, {0x00, 0x18, 0x19});
    default:
      return false;
  }
}

}  // namespace ringlab::mqtt
