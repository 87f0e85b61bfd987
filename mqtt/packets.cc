#include "mqtt/packets.h"

#include "mqtt/topic.h"

namespace ringlab::mqtt {
namespace {

constexpr std::string_view kProtocolName = "MQTT";

bool IsV5(Version v) { return v == Version::k5; }

DecodeStatus Trailing(const WireReader& r) {
  if (r.empty()) return DecodeStatus::Ok();
  return DecodeStatus::Malformed("§2.1.4: bytes after the packet's fields");
}

DecodeStatus ReadPacketId(WireReader& r, uint16_t* id) {
  if (!r.ReadU16(id)) {
    return DecodeStatus::Malformed("§2.2.1: packet identifier missing");
  }
  // 5.0 MQTT-2.2.1-3, 3.1.1 MQTT-2.3.1-1: a packet identifier is non-zero.
  if (*id == 0) return DecodeStatus::Malformed("MQTT-2.2.1-3: packet id 0");
  return DecodeStatus::Ok();
}

// Reads an optional properties block at the end of a packet whose v5 form
// may omit it (PUBACK family, DISCONNECT, AUTH).
DecodeStatus ReadTrailingProperties(WireReader& r, PropertyContext c,
                                    Properties* props) {
  if (r.empty()) return DecodeStatus::Ok();
  if (DecodeStatus s = DecodeProperties(r, c, props); !s.ok()) return s;
  return Trailing(r);
}

PropertyContext ContextFor(PacketType type) {
  switch (type) {
    case PacketType::kPuback:
      return PropertyContext::kPuback;
    case PacketType::kPubrec:
      return PropertyContext::kPubrec;
    case PacketType::kPubrel:
      return PropertyContext::kPubrel;
    default:
      return PropertyContext::kPubcomp;
  }
}

// ---- Encoding helpers
// --------------------------------------------------------

// Accumulates a body size and remembers a field that no packet can carry.
struct Size {
  size_t n = 0;
  bool invalid = false;
  void Add(size_t bytes) { n += bytes; }
  void Str(std::string_view s) {
    n += 2 + s.size();
    if (s.size() > 0xFFFF) invalid = true;
  }
  void Bin(std::span<const std::byte> b) {
    n += 2 + b.size();
    if (b.size() > 0xFFFF) invalid = true;
  }
  void Props(const Properties& p) {
    const size_t length = PropertiesSize(p, &invalid);
    n += VarintSize(uint32_t(std::min<size_t>(length, kMaxVarint))) + length;
  }
};

// Checks the sizes and writes the fixed header; returns the writer ready for
// the body, or an error.
struct Started {
  EncodeResult result;
  size_t total = 0;
};
Started Start(uint8_t first_byte, const Size& body, std::span<std::byte> out,
              WireWriter& w) {
  Started s;
  if (body.invalid) {
    s.result.error = EncodeError::kInvalid;
    return s;
  }
  if (body.n > kMaxVarint) {
    s.result.error = EncodeError::kTooLarge;
    return s;
  }
  s.total = 1 + VarintSize(uint32_t(body.n)) + body.n;
  if (out.size() < s.total) {
    s.result.error = EncodeError::kBufferTooSmall;
    return s;
  }
  w.Byte(first_byte);
  w.Varint(uint32_t(body.n));
  return s;
}

EncodeResult Finish(const WireWriter& w, size_t expected) {
  EncodeResult r;
  if (w.overflow() || w.size() != expected) {
    // Cannot happen when the size computation and the writer agree; kept so
    // a mistake shows up as an error rather than a short packet.
    r.error = EncodeError::kBufferTooSmall;
    return r;
  }
  r.size = w.size();
  return r;
}

uint8_t First(PacketType type, uint8_t flags) {
  return uint8_t(uint8_t(type) << 4 | flags);
}

uint8_t OptionsByte(const SubscriptionOptions& o, Version v) {
  uint8_t b = o.max_qos & 0x03;
  if (IsV5(v)) {
    if (o.no_local) b |= 0x04;
    if (o.retain_as_published) b |= 0x08;
    b |= uint8_t((o.retain_handling & 0x03) << 4);
  }
  return b;
}

}  // namespace

// ---- Frames
// ------------------------------------------------------------------

FrameResult ParseFrame(std::span<const std::byte> in, uint32_t max_packet_bytes,
                       Frame* frame, size_t* needed_bytes) {
  if (in.size() < 2) {
    *needed_bytes = 2;
    return FrameResult::kNeedMore;
  }
  uint32_t remaining = 0;
  size_t used = 0;
  switch (DecodeVarint(in.subspan(1), &remaining, &used)) {
    case VarintResult::kOk:
      break;
    case VarintResult::kNeedMore:
      *needed_bytes = in.size() + 1;
      return FrameResult::kNeedMore;
    case VarintResult::kMalformed:
      return FrameResult::kMalformed;
  }
  const uint64_t total = 1 + used + uint64_t(remaining);
  if (total > max_packet_bytes) {
    *needed_bytes = size_t(total);
    return FrameResult::kTooLarge;
  }
  if (in.size() < total) {
    *needed_bytes = size_t(total);
    return FrameResult::kNeedMore;
  }
  const uint8_t first = uint8_t(in[0]);
  frame->type = PacketType(first >> 4);
  frame->flags = first & 0x0F;
  frame->body = in.subspan(1 + used, remaining);
  frame->size_bytes = uint32_t(total);
  return FrameResult::kFrame;
}

// ---- Decoding
// ----------------------------------------------------------------

DecodeStatus CheckFixedHeader(const Frame& frame, Version version) {
  switch (frame.type) {
    case PacketType::kReserved:
      return DecodeStatus::Malformed("§2.1.2: reserved packet type 0");
    case PacketType::kAuth:
      if (!IsV5(version)) {
        return DecodeStatus::Malformed("3.1.1 §2.2.1: packet type 15");
      }
      break;
    case PacketType::kPublish:
      // MQTT-3.3.1-4: QoS 3 is malformed.
      if (((frame.flags >> 1) & 0x03) == 3) {
        return DecodeStatus::Malformed("MQTT-3.3.1-4: PUBLISH with QoS 3");
      }
      return DecodeStatus::Ok();
    case PacketType::kPubrel:
    case PacketType::kSubscribe:
    case PacketType::kUnsubscribe:
      // MQTT-2.1.3-1 (3.1.1 MQTT-3.6.1-1, MQTT-3.8.1-1, MQTT-3.10.1-1).
      if (frame.flags != 0x02) {
        return DecodeStatus::Malformed("MQTT-2.1.3-1: flags must be 0010");
      }
      return DecodeStatus::Ok();
    default:
      break;
  }
  if (frame.flags != 0) {
    return DecodeStatus::Malformed("MQTT-2.1.3-1: reserved flags set");
  }
  return DecodeStatus::Ok();
}

DecodeStatus DecodeConnect(const Frame& frame, Connect* out) {
  if (frame.type != PacketType::kConnect) {
    return DecodeStatus::ProtocolError("MQTT-3.1.0-1: expected CONNECT");
  }
  if (frame.flags != 0) {
    return DecodeStatus::Malformed("MQTT-2.1.3-1: reserved flags set");
  }
  WireReader r(frame.body);
  std::string_view name;
  if (DecodeStatus s = r.ReadString(&name); !s.ok()) return s;
  uint8_t level;
  if (!r.ReadByte(&level)) {
    return DecodeStatus::Malformed("§3.1.2.2: protocol level missing");
  }
  // MQTT-3.1.2-1: the protocol name is "MQTT". A 3.1 client ("MQIsdp",
  // level 3) or any other name or level gets Unsupported Protocol Version
  // (MQTT-3.1.2-2), which the broker answers with CONNACK 0x01 / 0x84.
  if (name != kProtocolName) {
    return {ReasonCode::kUnsupportedProtocolVersion,
            "MQTT-3.1.2-1: protocol name is not MQTT"};
  }
  if (level != uint8_t(Version::k311) && level != uint8_t(Version::k5)) {
    return {ReasonCode::kUnsupportedProtocolVersion,
            "MQTT-3.1.2-2: unsupported protocol level"};
  }
  out->version = Version(level);
  const bool v5 = IsV5(out->version);
  uint8_t flags;
  if (!r.ReadByte(&flags) || !r.ReadU16(&out->keep_alive_s)) {
    return DecodeStatus::Malformed("§3.1.2: variable header truncated");
  }
  // MQTT-3.1.2-3: the reserved flag is 0.
  if (flags & 0x01) {
    return DecodeStatus::Malformed("MQTT-3.1.2-3: reserved connect flag set");
  }
  out->clean_start = (flags & 0x02) != 0;
  const bool will_flag = (flags & 0x04) != 0;
  const uint8_t will_qos = (flags >> 3) & 0x03;
  const bool will_retain = (flags & 0x20) != 0;
  const bool password_flag = (flags & 0x40) != 0;
  const bool username_flag = (flags & 0x80) != 0;
  if (!will_flag && (will_qos != 0 || will_retain)) {
    // MQTT-3.1.2-11 / MQTT-3.1.2-13 (3.1.1: MQTT-3.1.2-13 / -15).
    return DecodeStatus::Malformed(
        "MQTT-3.1.2-11: will QoS or retain without will flag");
  }
  if (will_qos == 3) {
    // MQTT-3.1.2-12 (3.1.1: MQTT-3.1.2-14).
    return DecodeStatus::Malformed("MQTT-3.1.2-12: will QoS 3");
  }
  if (!v5 && password_flag && !username_flag) {
    // 3.1.1 MQTT-3.1.2-22: no password without a user name.
    return DecodeStatus::Malformed("3.1.1 MQTT-3.1.2-22: password, no user");
  }
  out->properties = Properties();
  if (v5) {
    if (DecodeStatus s =
            DecodeProperties(r, PropertyContext::kConnect, &out->properties);
        !s.ok()) {
      return s;
    }
  }
  // MQTT-3.1.3-1: client id, will properties, will topic, will payload,
  // user name, password, in that order. MQTT-3.1.3-3/-4: the client id is
  // present and a UTF-8 string.
  if (DecodeStatus s = r.ReadString(&out->client_id); !s.ok()) return s;
  out->will.reset();
  if (will_flag) {
    Will& will = out->will.emplace();
    will.qos = will_qos;
    will.retain = will_retain;
    if (v5) {
      if (DecodeStatus s =
              DecodeProperties(r, PropertyContext::kWill, &will.properties);
          !s.ok()) {
        return s;
      }
    }
    // MQTT-3.1.3-10 (3.1.1 MQTT-3.1.3-10): the will topic is a UTF-8 string.
    if (DecodeStatus s = r.ReadString(&will.topic); !s.ok()) return s;
    if (DecodeStatus s = r.ReadBinary(&will.payload); !s.ok()) return s;
  }
  out->username.reset();
  out->password.reset();
  if (username_flag) {
    std::string_view user;
    // MQTT-3.1.3-11 (3.1.1 MQTT-3.1.3-11): a UTF-8 string.
    if (DecodeStatus s = r.ReadString(&user); !s.ok()) return s;
    out->username = user;
  }
  if (password_flag) {
    std::span<const std::byte> password;
    if (DecodeStatus s = r.ReadBinary(&password); !s.ok()) return s;
    out->password = password;
  }
  return Trailing(r);
}

DecodeStatus DecodeConnack(const Frame& frame, Version version, Connack* out) {
  WireReader r(frame.body);
  uint8_t ack_flags;
  if (!r.ReadByte(&ack_flags) || !r.ReadByte(&out->code)) {
    return DecodeStatus::Malformed("§3.2.2: CONNACK truncated");
  }
  // MQTT-3.2.2-1: bits 7-1 of the acknowledge flags are reserved (0).
  if (ack_flags & 0xFE) {
    return DecodeStatus::Malformed("MQTT-3.2.2-1: reserved CONNACK flags");
  }
  out->session_present = (ack_flags & 0x01) != 0;
  out->properties = Properties();
  if (IsV5(version)) {
    if (!IsValidReasonCode(PacketType::kConnack, ReasonCode(out->code))) {
      return DecodeStatus::Malformed("§3.2.2.2: unknown CONNACK reason code");
    }
    if (DecodeStatus s =
            DecodeProperties(r, PropertyContext::kConnack, &out->properties);
        !s.ok()) {
      return s;
    }
  } else if (out->code > 5) {
    return DecodeStatus::Malformed("3.1.1 §3.2.2.3: reserved return code");
  }
  // MQTT-3.2.2-4 (3.1.1 MQTT-3.2.2-4): a refusal has Session Present 0.
  if (out->code != 0 && out->session_present) {
    return DecodeStatus::ProtocolError(
        "MQTT-3.2.2-4: session present with a failure code");
  }
  return Trailing(r);
}

DecodeStatus DecodePublish(const Frame& frame, Version version, Publish* out) {
  if (DecodeStatus s = CheckFixedHeader(frame, version); !s.ok()) return s;
  out->dup = (frame.flags & 0x08) != 0;
  out->qos = (frame.flags >> 1) & 0x03;
  out->retain = (frame.flags & 0x01) != 0;
  // MQTT-3.3.1-2: DUP is 0 for every QoS 0 message.
  if (out->qos == 0 && out->dup) {
    return DecodeStatus::ProtocolError("MQTT-3.3.1-2: DUP set on QoS 0");
  }
  WireReader r(frame.body);
  // MQTT-3.3.2-1: the topic name comes first, a UTF-8 string.
  if (DecodeStatus s = r.ReadString(&out->topic); !s.ok()) return s;
  // MQTT-3.3.2-2: no wildcards in a topic name. An empty name is allowed
  // only in v5, where a Topic Alias must then be present (checked by the
  // receiver, §3.3.2.3.4); in 3.1.1 it breaks MQTT-4.7.3-1.
  if (out->topic.find_first_of("+#") != std::string_view::npos) {
    return DecodeStatus::Malformed("MQTT-3.3.2-2: wildcard in topic name");
  }
  if (out->topic.empty() && !IsV5(version)) {
    return DecodeStatus::Malformed("MQTT-4.7.3-1: empty topic name");
  }
  out->packet_id = 0;
  if (out->qos > 0) {
    if (DecodeStatus s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  }
  out->properties = Properties();
  if (IsV5(version)) {
    if (DecodeStatus s =
            DecodeProperties(r, PropertyContext::kPublish, &out->properties);
        !s.ok()) {
      return s;
    }
  }
  out->payload = r.rest();
  return DecodeStatus::Ok();
}

DecodeStatus DecodePubResponse(const Frame& frame, Version version,
                               PubResponse* out) {
  if (DecodeStatus s = CheckFixedHeader(frame, version); !s.ok()) return s;
  out->type = frame.type;
  out->reason = ReasonCode::kSuccess;
  out->properties = Properties();
  WireReader r(frame.body);
  if (DecodeStatus s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  if (!IsV5(version)) return Trailing(r);  // 3.1.1: exactly two bytes
  // §3.4.2.1: the reason code and properties may be omitted (Remaining
  // Length 2), or the properties alone (Remaining Length 3).
  if (r.empty()) return DecodeStatus::Ok();
  uint8_t reason;
  (void)r.ReadByte(&reason);
  out->reason = ReasonCode(reason);
  if (!IsValidReasonCode(frame.type, out->reason)) {
    return DecodeStatus::Malformed("§3.4.2.1: reason code not allowed here");
  }
  return ReadTrailingProperties(r, ContextFor(frame.type), &out->properties);
}

SubscribeEntries SubscribeEntries::FromWire(std::span<const std::byte> payload,
                                            uint32_t count, Version version) {
  SubscribeEntries e;
  e.wire_ = payload;
  e.count_ = count;
  e.version_ = version;
  return e;
}

DecodeStatus DecodeSubscribe(const Frame& frame, Version version,
                             Subscribe* out) {
  if (DecodeStatus s = CheckFixedHeader(frame, version); !s.ok()) return s;
  const bool v5 = IsV5(version);
  WireReader r(frame.body);
  if (DecodeStatus s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  out->properties = Properties();
  if (v5) {
    if (DecodeStatus s =
            DecodeProperties(r, PropertyContext::kSubscribe, &out->properties);
        !s.ok()) {
      return s;
    }
  }
  const std::span<const std::byte> payload = r.rest();
  uint32_t count = 0;
  while (!r.empty()) {
    std::string_view filter;
    // MQTT-3.8.3-1: topic filters are UTF-8 strings.
    if (DecodeStatus s = r.ReadString(&filter); !s.ok()) return s;
    uint8_t options;
    if (!r.ReadByte(&options)) {
      return DecodeStatus::Malformed("§3.8.3.1: subscription options missing");
    }
    if ((options & 0x03) == 3) {
      return DecodeStatus::Malformed("§3.8.3.1: maximum QoS 3");
    }
    if (v5) {
      // MQTT-3.8.3-5: bits 7 and 6 are reserved.
      if (options & 0xC0) {
        return DecodeStatus::Malformed("MQTT-3.8.3-5: reserved option bits");
      }
      // §3.8.3.1: Retain Handling 3 is a Protocol Error.
      if (((options >> 4) & 0x03) == 3) {
        return DecodeStatus::ProtocolError("§3.8.3.1: retain handling 3");
      }
      // MQTT-3.8.3-4: No Local on a shared subscription is a Protocol Error.
      if ((options & 0x04) && IsSharedFilter(filter)) {
        return DecodeStatus::ProtocolError(
            "MQTT-3.8.3-4: no local on a shared subscription");
      }
    } else if (options & 0xFC) {
      // 3.1.1 MQTT-3-8.3-4: bits 7-2 are reserved.
      return DecodeStatus::Malformed("3.1.1 MQTT-3-8.3-4: reserved QoS bits");
    }
    ++count;
  }
  // 5.0 MQTT-3.8.3-2, 3.1.1 MQTT-3.8.3-3: at least one topic filter.
  if (count == 0) {
    return DecodeStatus::ProtocolError("MQTT-3.8.3-2: no topic filter");
  }
  out->entries = SubscribeEntries::FromWire(payload, count, version);
  return DecodeStatus::Ok();
}

DecodeStatus DecodeSuback(const Frame& frame, Version version, Suback* out) {
  if (DecodeStatus s = CheckFixedHeader(frame, version); !s.ok()) return s;
  WireReader r(frame.body);
  if (DecodeStatus s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  out->properties = Properties();
  if (IsV5(version)) {
    if (DecodeStatus s =
            DecodeProperties(r, PropertyContext::kSuback, &out->properties);
        !s.ok()) {
      return s;
    }
  }
  const std::span<const std::byte> codes = r.rest();
  if (codes.empty()) {
    return DecodeStatus::ProtocolError("§3.9.3: SUBACK without reason codes");
  }
  for (std::byte b : codes) {
    const uint8_t c = uint8_t(b);
    const bool ok = IsV5(version)
                        ? IsValidReasonCode(PacketType::kSuback, ReasonCode(c))
                        : (c <= 2 || c == 0x80);  // 3.1.1 MQTT-3.9.3-2
    if (!ok) return DecodeStatus::Malformed("§3.9.3: bad SUBACK code");
  }
  out->reason_codes = {reinterpret_cast<const uint8_t*>(codes.data()),
                       codes.size()};
  return DecodeStatus::Ok();
}

DecodeStatus DecodeUnsubscribe(const Frame& frame, Version version,
                               Unsubscribe* out) {
  if (DecodeStatus s = CheckFixedHeader(frame, version); !s.ok()) return s;
  WireReader r(frame.body);
  if (DecodeStatus s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  out->properties = Properties();
  if (IsV5(version)) {
    if (DecodeStatus s = DecodeProperties(r, PropertyContext::kUnsubscribe,
                                          &out->properties);
        !s.ok()) {
      return s;
    }
  }
  const std::span<const std::byte> payload = r.rest();
  uint32_t count = 0;
  while (!r.empty()) {
    std::string_view filter;
    // MQTT-3.10.3-1: UTF-8 strings.
    if (DecodeStatus s = r.ReadString(&filter); !s.ok()) return s;
    ++count;
  }
  // MQTT-3.10.3-2: at least one topic filter.
  if (count == 0) {
    return DecodeStatus::ProtocolError("MQTT-3.10.3-2: no topic filter");
  }
  out->filters = TopicFilterList::FromWire(payload, count);
  return DecodeStatus::Ok();
}

DecodeStatus DecodeUnsuback(const Frame& frame, Version version,
                            Unsuback* out) {
  if (DecodeStatus s = CheckFixedHeader(frame, version); !s.ok()) return s;
  WireReader r(frame.body);
  if (DecodeStatus s = ReadPacketId(r, &out->packet_id); !s.ok()) return s;
  out->properties = Properties();
  out->reason_codes = {};
  if (!IsV5(version)) return Trailing(r);  // 3.1.1 §3.11: no payload
  if (DecodeStatus s =
          DecodeProperties(r, PropertyContext::kUnsuback, &out->properties);
      !s.ok()) {
    return s;
  }
  const std::span<const std::byte> codes = r.rest();
  if (codes.empty()) {
    return DecodeStatus::ProtocolError("§3.11.3: UNSUBACK without codes");
  }
  for (std::byte b : codes) {
    if (!IsValidReasonCode(PacketType::kUnsuback, ReasonCode(b))) {
      return DecodeStatus::Malformed("§3.11.3: bad UNSUBACK reason code");
    }
  }
  out->reason_codes = {reinterpret_cast<const uint8_t*>(codes.data()),
                       codes.size()};
  return DecodeStatus::Ok();
}

DecodeStatus DecodeDisconnect(const Frame& frame, Version version,
                              Disconnect* out) {
  if (DecodeStatus s = CheckFixedHeader(frame, version); !s.ok()) return s;
  out->reason = ReasonCode::kNormalDisconnection;
  out->properties = Properties();
  WireReader r(frame.body);
  if (!IsV5(version)) return Trailing(r);  // 3.1.1 §3.14: no fields
  // §3.14.2.1: Remaining Length 0 means Normal disconnection.
  if (r.empty()) return DecodeStatus::Ok();
  uint8_t reason;
  (void)r.ReadByte(&reason);
  out->reason = ReasonCode(reason);
  if (!IsValidReasonCode(PacketType::kDisconnect, out->reason)) {
    return DecodeStatus::Malformed("§3.14.2.1: bad DISCONNECT reason code");
  }
  return ReadTrailingProperties(r, PropertyContext::kDisconnect,
                                &out->properties);
}

DecodeStatus DecodeAuth(const Frame& frame, Version version, Auth* out) {
  if (DecodeStatus s = CheckFixedHeader(frame, version); !s.ok()) return s;
  out->reason = ReasonCode::kSuccess;
  out->properties = Properties();
  WireReader r(frame.body);
  // §3.15.2.1: Remaining Length 0 means Success with no properties.
  if (r.empty()) return DecodeStatus::Ok();
  uint8_t reason;
  (void)r.ReadByte(&reason);
  out->reason = ReasonCode(reason);
  if (!IsValidReasonCode(PacketType::kAuth, out->reason)) {
    return DecodeStatus::Malformed("§3.15.2.1: bad AUTH reason code");
  }
  return ReadTrailingProperties(r, PropertyContext::kAuth, &out->properties);
}

DecodeStatus DecodePacket(const Frame& frame, Version version, Packet* out) {
  if (DecodeStatus s = CheckFixedHeader(frame, version); !s.ok()) return s;
  switch (frame.type) {
    case PacketType::kConnect:
      return DecodeConnect(frame, &out->emplace<Connect>());
    case PacketType::kConnack:
      return DecodeConnack(frame, version, &out->emplace<Connack>());
    case PacketType::kPublish:
      return DecodePublish(frame, version, &out->emplace<Publish>());
    case PacketType::kPuback:
    case PacketType::kPubrec:
    case PacketType::kPubrel:
    case PacketType::kPubcomp:
      return DecodePubResponse(frame, version, &out->emplace<PubResponse>());
    case PacketType::kSubscribe:
      return DecodeSubscribe(frame, version, &out->emplace<Subscribe>());
    case PacketType::kSuback:
      return DecodeSuback(frame, version, &out->emplace<Suback>());
    case PacketType::kUnsubscribe:
      return DecodeUnsubscribe(frame, version, &out->emplace<Unsubscribe>());
    case PacketType::kUnsuback:
      return DecodeUnsuback(frame, version, &out->emplace<Unsuback>());
    case PacketType::kPingreq:
    case PacketType::kPingresp:
      // §3.12, §3.13: no variable header and no payload.
      if (!frame.body.empty()) {
        return DecodeStatus::Malformed("§3.12: PINGREQ/PINGRESP with a body");
      }
      if (frame.type == PacketType::kPingreq) {
        out->emplace<Pingreq>();
      } else {
        out->emplace<Pingresp>();
      }
      return DecodeStatus::Ok();
    case PacketType::kDisconnect:
      return DecodeDisconnect(frame, version, &out->emplace<Disconnect>());
    case PacketType::kAuth:
      return DecodeAuth(frame, version, &out->emplace<Auth>());
    case PacketType::kReserved:
      break;
  }
  return DecodeStatus::Malformed("§2.1.2: reserved packet type");
}

// ---- Encoding
// ----------------------------------------------------------------

size_t SubscribeEntries::EncodedSize() const {
  size_t n = 0;
  ForEach([&](const SubscribeEntry& e) { n += 2 + e.filter.size() + 1; });
  return n;
}

void SubscribeEntries::Encode(Version version, WireWriter& w) const {
  ForEach([&](const SubscribeEntry& e) {
    w.String(e.filter);
    w.Byte(OptionsByte(e.options, version));
  });
}

size_t TopicFilterList::EncodedSize() const {
  size_t n = 0;
  ForEach([&](std::string_view f) { n += 2 + f.size(); });
  return n;
}

void TopicFilterList::Encode(WireWriter& w) const {
  ForEach([&](std::string_view f) { w.String(f); });
}

namespace {

Size ConnectBody(const Connect& p) {
  const bool v5 = IsV5(p.version);
  Size s;
  s.Str(kProtocolName);
  s.Add(1 + 1 + 2);  // level, flags, keep alive
  if (v5) s.Props(p.properties);
  s.Str(p.client_id);
  if (p.will) {
    if (v5) s.Props(p.will->properties);
    s.Str(p.will->topic);
    s.Bin(p.will->payload);
  }
  if (p.username) s.Str(*p.username);
  if (p.password) s.Bin(*p.password);
  return s;
}

Size ConnackBody(const Connack& p, Version v) {
  Size s;
  s.Add(2);
  if (IsV5(v)) s.Props(p.properties);
  return s;
}

Size PublishBody(const Publish& p, Version v, size_t tail_props,
                 size_t payload) {
  Size s;
  s.Str(p.topic);
  if (p.qos > 0) s.Add(2);
  if (IsV5(v)) {
    const size_t length = PropertiesSize(p.properties, &s.invalid) + tail_props;
    s.Add(VarintSize(uint32_t(std::min<size_t>(length, kMaxVarint))) + length);
  }
  s.Add(payload);
  return s;
}

bool PubResponseShort(const PubResponse& p) {
  return p.reason == ReasonCode::kSuccess && PropertiesSize(p.properties) == 0;
}

Size PubResponseBody(const PubResponse& p, Version v) {
  Size s;
  s.Add(2);
  // §3.4.2.1: a v5 success without properties takes the 2-byte form.
  if (IsV5(v) && !PubResponseShort(p)) {
    s.Add(1);
    s.Props(p.properties);
  }
  return s;
}

Size SubscribeBody(const Subscribe& p, Version v) {
  Size s;
  s.Add(2);
  if (IsV5(v)) s.Props(p.properties);
  p.entries.ForEach([&](const SubscribeEntry& e) {
    s.Str(e.filter);
    s.Add(1);
  });
  return s;
}

Size SubackBody(const Suback& p, Version v) {
  Size s;
  s.Add(2);
  if (IsV5(v)) s.Props(p.properties);
  s.Add(p.reason_codes.size());
  return s;
}

Size UnsubscribeBody(const Unsubscribe& p, Version v) {
  Size s;
  s.Add(2);
  if (IsV5(v)) s.Props(p.properties);
  p.filters.ForEach([&](std::string_view f) { s.Str(f); });
  return s;
}

Size UnsubackBody(const Unsuback& p, Version v) {
  Size s;
  s.Add(2);
  if (IsV5(v)) {
    s.Props(p.properties);
    s.Add(p.reason_codes.size());
  }
  return s;
}

bool ReasonOnlyShort(ReasonCode reason, const Properties& props) {
  return reason == ReasonCode::kSuccess && PropertiesSize(props) == 0;
}

Size ReasonBody(ReasonCode reason, const Properties& props, Version v) {
  Size s;
  if (IsV5(v) && !ReasonOnlyShort(reason, props)) {
    s.Add(1);
    s.Props(props);
  }
  return s;
}

}  // namespace

EncodeResult Encode(const Connect& p, std::span<std::byte> out) {
  const Size body = ConnectBody(p);
  WireWriter w(out);
  Started st = Start(First(PacketType::kConnect, 0), body, out, w);
  if (!st.result.ok()) return st.result;
  const bool v5 = IsV5(p.version);
  w.String(kProtocolName);
  w.Byte(uint8_t(p.version));
  uint8_t flags = 0;
  if (p.clean_start) flags |= 0x02;
  if (p.will) {
    flags |= 0x04;
    flags |= uint8_t((p.will->qos & 0x03) << 3);
    if (p.will->retain) flags |= 0x20;
  }
  if (p.password) flags |= 0x40;
  if (p.username) flags |= 0x80;
  w.Byte(flags);
  w.U16(p.keep_alive_s);
  if (v5) EncodeProperties(p.properties, w);
  w.String(p.client_id);
  if (p.will) {
    if (v5) EncodeProperties(p.will->properties, w);
    w.String(p.will->topic);
    w.Binary(p.will->payload);
  }
  if (p.username) w.String(*p.username);
  if (p.password) w.Binary(*p.password);
  return Finish(w, st.total);
}

EncodeResult Encode(const Connack& p, Version v, std::span<std::byte> out) {
  WireWriter w(out);
  Started st = Start(First(PacketType::kConnack, 0), ConnackBody(p, v), out, w);
  if (!st.result.ok()) return st.result;
  w.Byte(p.session_present ? 1 : 0);
  w.Byte(p.code);
  if (IsV5(v)) EncodeProperties(p.properties, w);
  return Finish(w, st.total);
}

namespace {

uint8_t PublishFirst(const Publish& p) {
  uint8_t flags = uint8_t((p.qos & 0x03) << 1);
  if (p.dup) flags |= 0x08;
  if (p.retain) flags |= 0x01;
  return First(PacketType::kPublish, flags);
}

// Writes the PUBLISH through its own properties; the tail follows.
void PublishHeaderFields(const Publish& p, Version v, size_t tail_props,
                         WireWriter& w) {
  w.String(p.topic);
  if (p.qos > 0) w.U16(p.packet_id);
  if (IsV5(v)) {
    w.Varint(uint32_t(PropertiesSize(p.properties) + tail_props));
    EncodePropertyList(p.properties, w);
  }
}

}  // namespace

EncodeResult Encode(const Publish& p, Version v, std::span<std::byte> out) {
  // The properties' raw_extra is part of PropertiesSize, so no tail here.
  const Size body = PublishBody(p, v, 0, p.payload.size());
  WireWriter w(out);
  Started st = Start(PublishFirst(p), body, out, w);
  if (!st.result.ok()) return st.result;
  PublishHeaderFields(p, v, 0, w);
  w.Bytes(p.payload);
  return Finish(w, st.total);
}

size_t PublishHeaderSize(const Publish& p, Version v,
                         size_t tail_property_bytes, size_t payload_bytes) {
  Publish header = p;
  header.properties.raw_extra = {};
  const Size body = PublishBody(header, v, tail_property_bytes, payload_bytes);
  if (body.invalid || body.n > kMaxVarint) return 0;
  const size_t total = 1 + VarintSize(uint32_t(body.n)) + body.n;
  return total - tail_property_bytes - payload_bytes;
}

EncodeResult EncodePublishHeader(const Publish& p, Version v,
                                 size_t tail_property_bytes,
                                 size_t payload_bytes,
                                 std::span<std::byte> out) {
  EncodeResult r;
  if (!IsV5(v) && tail_property_bytes != 0) {
    r.error = EncodeError::kInvalid;
    return r;
  }
  Publish header = p;
  header.properties.raw_extra = {};
  const Size body = PublishBody(header, v, tail_property_bytes, payload_bytes);
  if (body.invalid) {
    r.error = EncodeError::kInvalid;
    return r;
  }
  if (body.n > kMaxVarint) {
    r.error = EncodeError::kTooLarge;
    return r;
  }
  const size_t total = 1 + VarintSize(uint32_t(body.n)) + body.n;
  const size_t header_bytes = total - tail_property_bytes - payload_bytes;
  if (out.size() < header_bytes) {
    r.error = EncodeError::kBufferTooSmall;
    return r;
  }
  WireWriter w(out);
  w.Byte(PublishFirst(header));
  w.Varint(uint32_t(body.n));
  PublishHeaderFields(header, v, tail_property_bytes, w);
  return Finish(w, header_bytes);
}

EncodeResult Encode(const PubResponse& p, Version v, std::span<std::byte> out) {
  const uint8_t flags = p.type == PacketType::kPubrel ? 0x02 : 0x00;
  WireWriter w(out);
  Started st = Start(First(p.type, flags), PubResponseBody(p, v), out, w);
  if (!st.result.ok()) return st.result;
  w.U16(p.packet_id);
  if (IsV5(v) && !PubResponseShort(p)) {
    w.Byte(uint8_t(p.reason));
    EncodeProperties(p.properties, w);
  }
  return Finish(w, st.total);
}

EncodeResult Encode(const Subscribe& p, Version v, std::span<std::byte> out) {
  WireWriter w(out);
  Started st =
      Start(First(PacketType::kSubscribe, 0x02), SubscribeBody(p, v), out, w);
  if (!st.result.ok()) return st.result;
  w.U16(p.packet_id);
  if (IsV5(v)) EncodeProperties(p.properties, w);
  p.entries.Encode(v, w);
  return Finish(w, st.total);
}

EncodeResult Encode(const Suback& p, Version v, std::span<std::byte> out) {
  WireWriter w(out);
  Started st = Start(First(PacketType::kSuback, 0), SubackBody(p, v), out, w);
  if (!st.result.ok()) return st.result;
  w.U16(p.packet_id);
  if (IsV5(v)) EncodeProperties(p.properties, w);
  w.Bytes(std::as_bytes(p.reason_codes));
  return Finish(w, st.total);
}

EncodeResult Encode(const Unsubscribe& p, Version v, std::span<std::byte> out) {
  WireWriter w(out);
  Started st = Start(First(PacketType::kUnsubscribe, 0x02),
                     UnsubscribeBody(p, v), out, w);
  if (!st.result.ok()) return st.result;
  w.U16(p.packet_id);
  if (IsV5(v)) EncodeProperties(p.properties, w);
  p.filters.Encode(w);
  return Finish(w, st.total);
}

EncodeResult Encode(const Unsuback& p, Version v, std::span<std::byte> out) {
  WireWriter w(out);
  Started st =
      Start(First(PacketType::kUnsuback, 0), UnsubackBody(p, v), out, w);
  if (!st.result.ok()) return st.result;
  w.U16(p.packet_id);
  if (IsV5(v)) {
    EncodeProperties(p.properties, w);
    w.Bytes(std::as_bytes(p.reason_codes));
  }
  return Finish(w, st.total);
}

EncodeResult Encode(const Pingreq&, Version, std::span<std::byte> out) {
  WireWriter w(out);
  Started st = Start(First(PacketType::kPingreq, 0), Size{}, out, w);
  if (!st.result.ok()) return st.result;
  return Finish(w, st.total);
}

EncodeResult Encode(const Pingresp&, Version, std::span<std::byte> out) {
  WireWriter w(out);
  Started st = Start(First(PacketType::kPingresp, 0), Size{}, out, w);
  if (!st.result.ok()) return st.result;
  return Finish(w, st.total);
}

EncodeResult Encode(const Disconnect& p, Version v, std::span<std::byte> out) {
  WireWriter w(out);
  Started st = Start(First(PacketType::kDisconnect, 0),
                     ReasonBody(p.reason, p.properties, v), out, w);
  if (!st.result.ok()) return st.result;
  if (IsV5(v) && !ReasonOnlyShort(p.reason, p.properties)) {
    w.Byte(uint8_t(p.reason));
    EncodeProperties(p.properties, w);
  }
  return Finish(w, st.total);
}

EncodeResult Encode(const Auth& p, Version v, std::span<std::byte> out) {
  EncodeResult r;
  if (!IsV5(v)) {
    r.error = EncodeError::kInvalid;  // AUTH does not exist in 3.1.1
    return r;
  }
  WireWriter w(out);
  Started st = Start(First(PacketType::kAuth, 0),
                     ReasonBody(p.reason, p.properties, v), out, w);
  if (!st.result.ok()) return st.result;
  if (!ReasonOnlyShort(p.reason, p.properties)) {
    w.Byte(uint8_t(p.reason));
    EncodeProperties(p.properties, w);
  }
  return Finish(w, st.total);
}

EncodeResult Encode(const Packet& p, Version v, std::span<std::byte> out) {
  return std::visit(
      [&](const auto& packet) -> EncodeResult {
        using T = std::decay_t<decltype(packet)>;
        if constexpr (std::is_same_v<T, Connect>) {
          return Encode(packet, out);
        } else {
          return Encode(packet, v, out);
        }
      },
      p);
}

size_t EncodedSize(const Packet& p, Version v) {
  Size body = std::visit(
      [&](const auto& packet) -> Size {
        using T = std::decay_t<decltype(packet)>;
        if constexpr (std::is_same_v<T, Connect>) {
          return ConnectBody(packet);
        } else if constexpr (std::is_same_v<T, Connack>) {
          return ConnackBody(packet, v);
        } else if constexpr (std::is_same_v<T, Publish>) {
          return PublishBody(packet, v, 0, packet.payload.size());
        } else if constexpr (std::is_same_v<T, PubResponse>) {
          return PubResponseBody(packet, v);
        } else if constexpr (std::is_same_v<T, Subscribe>) {
          return SubscribeBody(packet, v);
        } else if constexpr (std::is_same_v<T, Suback>) {
          return SubackBody(packet, v);
        } else if constexpr (std::is_same_v<T, Unsubscribe>) {
          return UnsubscribeBody(packet, v);
        } else if constexpr (std::is_same_v<T, Unsuback>) {
          return UnsubackBody(packet, v);
        } else if constexpr (std::is_same_v<T, Disconnect> ||
                             std::is_same_v<T, Auth>) {
          return ReasonBody(packet.reason, packet.properties, v);
        } else {
          return Size{};
        }
      },
      p);
  if (body.invalid || body.n > kMaxVarint) return 0;
  return 1 + VarintSize(uint32_t(body.n)) + body.n;
}

}  // namespace ringlab::mqtt
