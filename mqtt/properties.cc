#include "mqtt/properties.h"

namespace ringlab::mqtt {
namespace {

enum class Type : uint8_t {
  kNone,
  kByte,
  kU16,
  kU32,
  kVarint,
  kString,
  kBinary,
  kPair
};

constexpr uint32_t Bit(PropertyContext c) { return 1u << uint32_t(c); }
constexpr uint32_t kPublishWill =
    Bit(PropertyContext::kPublish) | Bit(PropertyContext::kWill);
constexpr uint32_t kAll = 0x3FFF;

struct Rule {
  Type type = Type::kNone;
  uint32_t contexts = 0;
};

// MQTT 5.0 §2.2.2.2: the type of each identifier and the packets it may
// appear in.
constexpr Rule RuleFor(uint32_t id) {
  using C = PropertyContext;
  switch (id) {
    case 0x01:
    case 0x02:
    case 0x03:
    case 0x08:
    case 0x09:
      return {id == 0x01   ? Type::kByte
              : id == 0x02 ? Type::kU32
              : id == 0x09 ? Type::kBinary
                           : Type::kString,
              kPublishWill};
    case 0x0B:
      return {Type::kVarint, Bit(C::kPublish) | Bit(C::kSubscribe)};
    case 0x11:
      return {Type::kU32,
              Bit(C::kConnect) | Bit(C::kConnack) | Bit(C::kDisconnect)};
    case 0x12:
      return {Type::kString, Bit(C::kConnack)};
    case 0x13:
      return {Type::kU16, Bit(C::kConnack)};
    case 0x15:
      return {Type::kString,
              Bit(C::kConnect) | Bit(C::kConnack) | Bit(C::kAuth)};
    case 0x16:
      return {Type::kBinary,
              Bit(C::kConnect) | Bit(C::kConnack) | Bit(C::kAuth)};
    case 0x17:
    case 0x19:
      return {Type::kByte, Bit(C::kConnect)};
    case 0x18:
      return {Type::kU32, Bit(C::kWill)};
    case 0x1A:
      return {Type::kString, Bit(C::kConnack)};
    case 0x1C:
      return {Type::kString, Bit(C::kConnack) | Bit(C::kDisconnect)};
    case 0x1F:
      return {Type::kString,
              Bit(C::kConnack) | Bit(C::kPuback) | Bit(C::kPubrec) |
                  Bit(C::kPubrel) | Bit(C::kPubcomp) | Bit(C::kSuback) |
                  Bit(C::kUnsuback) | Bit(C::kDisconnect) | Bit(C::kAuth)};
    case 0x21:
    case 0x22:
      return {Type::kU16, Bit(C::kConnect) | Bit(C::kConnack)};
    case 0x23:
      return {Type::kU16, Bit(C::kPublish)};
    case 0x24:
    case 0x25:
    case 0x28:
    case 0x29:
    case 0x2A:
      return {Type::kByte, Bit(C::kConnack)};
    case 0x26:
      return {Type::kPair, kAll};
    case 0x27:
      return {Type::kU32, Bit(C::kConnect) | Bit(C::kConnack)};
    default:
      return {};
  }
}

// Reads a value of `type`; views point into the reader's data.
struct Value {
  uint32_t number = 0;
  std::string_view text;
  std::string_view text2;
  std::span<const std::byte> binary;
};

DecodeStatus ReadValue(WireReader& r, Type type, Value* v) {
  switch (type) {
    case Type::kByte: {
      uint8_t b;
      if (!r.ReadByte(&b)) break;
      v->number = b;
      return DecodeStatus::Ok();
    }
    case Type::kU16: {
      uint16_t x;
      if (!r.ReadU16(&x)) break;
      v->number = x;
      return DecodeStatus::Ok();
    }
    case Type::kU32:
      if (!r.ReadU32(&v->number)) break;
      return DecodeStatus::Ok();
    case Type::kVarint:
      return r.ReadVarint(&v->number);
    case Type::kString:
      return r.ReadString(&v->text);
    case Type::kBinary:
      return r.ReadBinary(&v->binary);
    case Type::kPair:
      return r.ReadStringPair(&v->text, &v->text2);
    case Type::kNone:
      break;
  }
  return DecodeStatus::Malformed("§2.2.2.2: property value runs past the end");
}

template <typename T>
DecodeStatus SetOnce(std::optional<T>& field, T value) {
  // §2.2.2.2, and each property's section: "It is a Protocol Error to
  // include <property> more than once".
  if (field.has_value()) {
    return DecodeStatus::ProtocolError("§2.2.2.2: duplicate property");
  }
  field = value;
  return DecodeStatus::Ok();
}

DecodeStatus SetFlag(std::optional<uint8_t>& field, uint32_t value,
                     const char* detail) {
  if (value > 1) return DecodeStatus::ProtocolError(detail);
  return SetOnce(field, uint8_t(value));
}

}  // namespace

DecodeStatus DecodeProperties(WireReader& reader, PropertyContext context,
                              Properties* out) {
  uint32_t length;
  if (DecodeStatus s = reader.ReadVarint(&length); !s.ok()) return s;
  std::span<const std::byte> block;
  if (!reader.ReadBytes(length, &block)) {
    return DecodeStatus::Malformed("§2.2.2.1: property length past the end");
  }
  out->wire = block;
  WireReader r(block);
  uint32_t user_count = 0;
  uint32_t sub_id_count = 0;
  while (!r.empty()) {
    uint32_t id;
    if (DecodeStatus s = r.ReadVarint(&id); !s.ok()) return s;
    const Rule rule = RuleFor(id);
    if (rule.type == Type::kNone) {
      return DecodeStatus::Malformed("§2.2.2.2: unknown property identifier");
    }
    if ((rule.contexts & Bit(context)) == 0) {
      return DecodeStatus::Malformed(
          "§2.2.2.2: property not valid for this packet");
    }
    Value v;
    if (DecodeStatus s = ReadValue(r, rule.type, &v); !s.ok()) return s;
    DecodeStatus s;
    switch (PropertyId(id)) {
      case PropertyId::kPayloadFormatIndicator:
        s = SetFlag(out->payload_format_indicator, v.number,
                    "§3.3.2.3.2: payload format indicator not 0 or 1");
        break;
      case PropertyId::kMessageExpiryInterval:
        s = SetOnce(out->message_expiry_interval, v.number);
        break;
      case PropertyId::kContentType:
        s = SetOnce(out->content_type, v.text);
        break;
      case PropertyId::kResponseTopic:
        s = SetOnce(out->response_topic, v.text);
        break;
      case PropertyId::kCorrelationData:
        s = SetOnce(out->correlation_data, v.binary);
        break;
      case PropertyId::kSubscriptionIdentifier:
        // §3.8.2.1.2: 1..268,435,455; 0 is a Protocol Error.
        if (v.number == 0) {
          return DecodeStatus::ProtocolError(
              "§3.8.2.1.2: subscription identifier 0");
        }
        // Only a PUBLISH may repeat it (MQTT-3.3.4-4); SUBSCRIBE has one.
        if (context == PropertyContext::kSubscribe && sub_id_count > 0) {
          return DecodeStatus::ProtocolError(
              "§3.8.2.1.2: duplicate subscription identifier");
        }
        ++sub_id_count;
        break;
      case PropertyId::kSessionExpiryInterval:
        s = SetOnce(out->session_expiry_interval, v.number);
        break;
      case PropertyId::kAssignedClientIdentifier:
        s = SetOnce(out->assigned_client_identifier, v.text);
        break;
      case PropertyId::kServerKeepAlive:
        s = SetOnce(out->server_keep_alive, uint16_t(v.number));
        break;
      case PropertyId::kAuthenticationMethod:
        s = SetOnce(out->authentication_method, v.text);
        break;
      case PropertyId::kAuthenticationData:
        s = SetOnce(out->authentication_data, v.binary);
        break;
      case PropertyId::kRequestProblemInformation:
        s = SetFlag(out->request_problem_information, v.number,
                    "§3.1.2.11.7: request problem information not 0 or 1");
        break;
      case PropertyId::kWillDelayInterval:
        s = SetOnce(out->will_delay_interval, v.number);
        break;
      case PropertyId::kRequestResponseInformation:
        s = SetFlag(out->request_response_information, v.number,
                    "§3.1.2.11.6: request response information not 0 or 1");
        break;
      case PropertyId::kResponseInformation:
        s = SetOnce(out->response_information, v.text);
        break;
      case PropertyId::kServerReference:
        s = SetOnce(out->server_reference, v.text);
        break;
      case PropertyId::kReasonString:
        s = SetOnce(out->reason_string, v.text);
        break;
      case PropertyId::kReceiveMaximum:
        // §3.1.2.11.3 / §3.2.2.3.3: a Receive Maximum of 0 is a Protocol
        // Error.
        if (v.number == 0) {
          return DecodeStatus::ProtocolError("§3.1.2.11.3: receive maximum 0");
        }
        s = SetOnce(out->receive_maximum, uint16_t(v.number));
        break;
      case PropertyId::kTopicAliasMaximum:
        s = SetOnce(out->topic_alias_maximum, uint16_t(v.number));
        break;
      case PropertyId::kTopicAlias:
        s = SetOnce(out->topic_alias, uint16_t(v.number));
        break;
      case PropertyId::kMaximumQos:
        s = SetFlag(out->maximum_qos, v.number,
                    "§3.2.2.3.4: maximum QoS not 0 or 1");
        break;
      case PropertyId::kRetainAvailable:
        s = SetFlag(out->retain_available, v.number,
                    "§3.2.2.3.5: retain available not 0 or 1");
        break;
      case PropertyId::kUserProperty:
        ++user_count;
        break;
      case PropertyId::kMaximumPacketSize:
        // §3.1.2.11.4: a Maximum Packet Size of 0 is a Protocol Error.
        if (v.number == 0) {
          return DecodeStatus::ProtocolError(
              "§3.1.2.11.4: maximum packet size 0");
        }
        s = SetOnce(out->maximum_packet_size, v.number);
        break;
      case PropertyId::kWildcardSubscriptionAvailable:
        s = SetFlag(out->wildcard_subscription_available, v.number,
                    "§3.2.2.3.11: flag not 0 or 1");
        break;
      case PropertyId::kSubscriptionIdentifierAvailable:
        s = SetFlag(out->subscription_identifier_available, v.number,
                    "§3.2.2.3.12: flag not 0 or 1");
        break;
      case PropertyId::kSharedSubscriptionAvailable:
        s = SetFlag(out->shared_subscription_available, v.number,
                    "§3.2.2.3.13: flag not 0 or 1");
        break;
    }
    if (!s.ok()) return s;
  }
  out->user_properties = UserProperties::FromWire(block, user_count);
  out->subscription_ids = SubscriptionIds::FromWire(block, sub_id_count);
  return DecodeStatus::Ok();
}

namespace internal {

uint8_t NextProperty(WireReader& reader, StringPair* pair, uint32_t* varint) {
  uint32_t id = 0;
  (void)reader.ReadVarint(&id);
  Value v;
  (void)ReadValue(reader, RuleFor(id).type, &v);
  pair->key = v.text;
  pair->value = v.text2;
  *varint = v.number;
  return uint8_t(id);
}

}  // namespace internal

uint32_t SubscriptionIds::first() const {
  uint32_t result = 0;
  bool found = false;
  ForEach([&](uint32_t id) {
    if (!found) result = id;
    found = true;
  });
  return result;
}

size_t SubscriptionIds::EncodedSize() const {
  size_t n = 0;
  ForEach([&](uint32_t id) { n += 1 + VarintSize(id); });
  return n;
}

void SubscriptionIds::Encode(WireWriter& w) const {
  ForEach([&](uint32_t id) {
    w.Byte(uint8_t(PropertyId::kSubscriptionIdentifier));
    w.Varint(id);
  });
}

size_t UserProperties::EncodedSize() const {
  size_t n = 0;
  ForEach([&](std::string_view k, std::string_view v) {
    n += 1 + 2 + k.size() + 2 + v.size();
  });
  return n;
}

void UserProperties::Encode(WireWriter& w) const {
  ForEach([&](std::string_view k, std::string_view v) {
    w.Byte(uint8_t(PropertyId::kUserProperty));
    w.String(k);
    w.String(v);
  });
}

size_t PropertiesSize(const Properties& p, bool* invalid) {
  size_t n = 0;
  bool too_long = false;
  auto byte = [&](const std::optional<uint8_t>& f) { n += f ? 2 : 0; };
  auto u16 = [&](const std::optional<uint16_t>& f) { n += f ? 3 : 0; };
  auto u32 = [&](const std::optional<uint32_t>& f) { n += f ? 5 : 0; };
  auto str = [&](const std::optional<std::string_view>& f) {
    n += f ? 3 + f->size() : 0;
    if (f && f->size() > 0xFFFF) too_long = true;
  };
  auto bin = [&](const std::optional<std::span<const std::byte>>& f) {
    n += f ? 3 + f->size() : 0;
    if (f && f->size() > 0xFFFF) too_long = true;
  };
  byte(p.payload_format_indicator);
  u32(p.message_expiry_interval);
  str(p.content_type);
  str(p.response_topic);
  bin(p.correlation_data);
  n += p.subscription_ids.EncodedSize();
  u32(p.session_expiry_interval);
  str(p.assigned_client_identifier);
  u16(p.server_keep_alive);
  str(p.authentication_method);
  bin(p.authentication_data);
  byte(p.request_problem_information);
  u32(p.will_delay_interval);
  byte(p.request_response_information);
  str(p.response_information);
  str(p.server_reference);
  str(p.reason_string);
  u16(p.receive_maximum);
  u16(p.topic_alias_maximum);
  u16(p.topic_alias);
  byte(p.maximum_qos);
  byte(p.retain_available);
  n += p.user_properties.EncodedSize();
  p.user_properties.ForEach([&](std::string_view k, std::string_view v) {
    if (k.size() > 0xFFFF || v.size() > 0xFFFF) too_long = true;
  });
  u32(p.maximum_packet_size);
  byte(p.wildcard_subscription_available);
  byte(p.subscription_identifier_available);
  byte(p.shared_subscription_available);
  n += p.raw_extra.size();
  if (invalid != nullptr && too_long) *invalid = true;
  return n;
}

void EncodePropertyList(const Properties& p, WireWriter& w) {
  auto byte = [&](PropertyId id, const std::optional<uint8_t>& f) {
    if (!f) return;
    w.Byte(uint8_t(id));
    w.Byte(*f);
  };
  auto u16 = [&](PropertyId id, const std::optional<uint16_t>& f) {
    if (!f) return;
    w.Byte(uint8_t(id));
    w.U16(*f);
  };
  auto u32 = [&](PropertyId id, const std::optional<uint32_t>& f) {
    if (!f) return;
    w.Byte(uint8_t(id));
    w.U32(*f);
  };
  auto str = [&](PropertyId id, const std::optional<std::string_view>& f) {
    if (!f) return;
    w.Byte(uint8_t(id));
    w.String(*f);
  };
  auto bin = [&](PropertyId id,
                 const std::optional<std::span<const std::byte>>& f) {
    if (!f) return;
    w.Byte(uint8_t(id));
    w.Binary(*f);
  };
  using P = PropertyId;
  byte(P::kPayloadFormatIndicator, p.payload_format_indicator);
  u32(P::kMessageExpiryInterval, p.message_expiry_interval);
  str(P::kContentType, p.content_type);
  str(P::kResponseTopic, p.response_topic);
  bin(P::kCorrelationData, p.correlation_data);
  p.subscription_ids.Encode(w);
  u32(P::kSessionExpiryInterval, p.session_expiry_interval);
  str(P::kAssignedClientIdentifier, p.assigned_client_identifier);
  u16(P::kServerKeepAlive, p.server_keep_alive);
  str(P::kAuthenticationMethod, p.authentication_method);
  bin(P::kAuthenticationData, p.authentication_data);
  byte(P::kRequestProblemInformation, p.request_problem_information);
  u32(P::kWillDelayInterval, p.will_delay_interval);
  byte(P::kRequestResponseInformation, p.request_response_information);
  str(P::kResponseInformation, p.response_information);
  str(P::kServerReference, p.server_reference);
  str(P::kReasonString, p.reason_string);
  u16(P::kReceiveMaximum, p.receive_maximum);
  u16(P::kTopicAliasMaximum, p.topic_alias_maximum);
  u16(P::kTopicAlias, p.topic_alias);
  byte(P::kMaximumQos, p.maximum_qos);
  byte(P::kRetainAvailable, p.retain_available);
  p.user_properties.Encode(w);
  u32(P::kMaximumPacketSize, p.maximum_packet_size);
  byte(P::kWildcardSubscriptionAvailable, p.wildcard_subscription_available);
  byte(P::kSubscriptionIdentifierAvailable,
       p.subscription_identifier_available);
  byte(P::kSharedSubscriptionAvailable, p.shared_subscription_available);
  w.Bytes(p.raw_extra);
}

void EncodeProperties(const Properties& p, WireWriter& w) {
  w.Varint(uint32_t(PropertiesSize(p)));
  EncodePropertyList(p, w);
}

}  // namespace ringlab::mqtt
