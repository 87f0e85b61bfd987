#include "mqtt/wire.h"

namespace ringlab::mqtt {

VarintResult DecodeVarint(std::span<const std::byte> in, uint32_t* value,
                          size_t* size_bytes) {
  uint32_t result = 0;
  for (size_t i = 0; i < 4; ++i) {
    if (i >= in.size()) return VarintResult::kNeedMore;
    const uint8_t b = uint8_t(in[i]);
    result |= uint32_t(b & 0x7F) << (7 * i);
    if ((b & 0x80) == 0) {
      // MQTT-1.5.5-1: the shortest form. A trailing zero group after the
      // first byte (e.g. 0x80 0x00) encodes a value a shorter form holds.
      if (i > 0 && b == 0) return VarintResult::kMalformed;
      *value = result;
      *size_bytes = i + 1;
      return VarintResult::kOk;
    }
  }
  // §1.5.5: four bytes at most; a continuation bit on the fourth is malformed.
  return VarintResult::kMalformed;
}

DecodeStatus ValidateUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const uint8_t* const end = p + text.size();
  while (p < end) {
    const uint8_t c = *p;
    if (c < 0x80) {
      // MQTT-1.5.4-2: the null character is not allowed.
      if (c == 0) return DecodeStatus::Malformed("MQTT-1.5.4-2: U+0000");
      ++p;
      continue;
    }
    // RFC 3629 §4: the well-formed multi-byte sequences. The second byte's
    // range depends on the lead byte, which rules out overlong forms, values
    // above U+10FFFF and (for 0xED) the surrogates.
    size_t length;
    uint8_t low = 0x80, high = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      if (c == 0xE0) low = 0xA0;
      if (c == 0xED) high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      if (c == 0xF0) low = 0x90;
      if (c == 0xF4) high = 0x8F;
    } else {
      return DecodeStatus::Malformed("MQTT-1.5.4-1: ill-formed UTF-8 lead");
    }
    if (size_t(end - p) < length) {
      return DecodeStatus::Malformed("MQTT-1.5.4-1: truncated UTF-8");
    }
    if (p[1] < low || p[1] > high) {
      if (c == 0xED && p[1] >= 0xA0 && p[1] <= 0xBF) {
        return DecodeStatus::Malformed("MQTT-1.5.4-1: UTF-16 surrogate");
      }
      return DecodeStatus::Malformed("MQTT-1.5.4-1: ill-formed UTF-8");
    }
    for (size_t i = 2; i < length; ++i) {
      if ((p[i] & 0xC0) != 0x80) {
        return DecodeStatus::Malformed("MQTT-1.5.4-1: ill-formed UTF-8");
      }
    }
    p += length;
  }
  return DecodeStatus::Ok();
}

DecodeStatus WireReader::ReadVarint(uint32_t* out) {
  size_t used = 0;
  switch (DecodeVarint(rest(), out, &used)) {
    case VarintResult::kOk:
      pos_ += used;
      return DecodeStatus::Ok();
    case VarintResult::kNeedMore:
      return DecodeStatus::Malformed("§1.5.5: truncated variable byte integer");
    case VarintResult::kMalformed:
      break;
  }
  return DecodeStatus::Malformed("MQTT-1.5.5-1: bad variable byte integer");
}

DecodeStatus WireReader::ReadString(std::string_view* out) {
  std::span<const std::byte> bytes;
  uint16_t length;
  if (!ReadU16(&length) || !ReadBytes(length, &bytes)) {
    return DecodeStatus::Malformed("§1.5.4: string runs past the packet");
  }
  *out = AsString(bytes);
  return ValidateUtf8(*out);
}

DecodeStatus WireReader::ReadBinary(std::span<const std::byte>* out) {
  uint16_t length;
  if (!ReadU16(&length) || !ReadBytes(length, out)) {
    return DecodeStatus::Malformed("§1.5.6: binary data runs past the packet");
  }
  return DecodeStatus::Ok();
}

DecodeStatus WireReader::ReadStringPair(std::string_view* key,
                                        std::string_view* value) {
  // MQTT-1.5.7-1: both strings obey the UTF-8 string rules.
  if (DecodeStatus s = ReadString(key); !s.ok()) return s;
  return ReadString(value);
}

}  // namespace ringlab::mqtt
