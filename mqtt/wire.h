// The MQTT data representations (MQTT 5.0 §1.5, 3.1.1 §1.5): big-endian
// integers, Variable Byte Integers, UTF-8 Encoded Strings, Binary Data and
// String Pairs, with a bounds-checked reader and an overflow-tracking writer.
//
//   WireReader reader(bytes);
//   std::string_view topic;
//   if (DecodeStatus s = reader.ReadString(&topic); !s.ok()) return s;
//
//   WireWriter writer(out);              // out: caller-owned span
//   writer.Byte(0x30);
//   writer.Varint(remaining_length);
//   writer.String("a/b");
//   if (writer.overflow()) { /* out too small; nothing is valid */ }
//
// Ownership: readers and writers borrow their span; views they return point
// into it. Errors: every check returns a DecodeStatus with the spec's reason
// code and a static description that cites the normative statement; nothing
// allocates or throws.
#ifndef RINGLAB_MQTT_WIRE_H_
#define RINGLAB_MQTT_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "mqtt/types.h"

namespace ringlab::mqtt {

// The outcome of a decode step: kSuccess, or the reason code the spec
// prescribes (usually Malformed Packet 0x81 or Protocol Error 0x82) with a
// static, never-freed description such as "MQTT-1.5.4-2: U+0000 in string".
struct DecodeStatus {
  ReasonCode code = ReasonCode::kSuccess;
  const char* detail = "";

  bool ok() const { return code == ReasonCode::kSuccess; }
  static DecodeStatus Ok() { return {}; }
  static DecodeStatus Malformed(const char* detail) {
    return {ReasonCode::kMalformedPacket, detail};
  }
  static DecodeStatus ProtocolError(const char* detail) {
    return {ReasonCode::kProtocolError, detail};
  }
};

// Bytes a Variable Byte Integer of `value` takes (1..4); value <= kMaxVarint.
constexpr size_t VarintSize(uint32_t value) {
  return value < 128u ? 1 : value < 16384u ? 2 : value < 2097152u ? 3 : 4;
}

// Result of decoding a Variable Byte Integer from a prefix of a buffer.
enum class VarintResult : uint8_t {
  kOk,
  kNeedMore,   // the buffer ended inside the integer
  kMalformed,  // more than four bytes, or not in its shortest form
};
// Decodes a Variable Byte Integer at the start of `in`. On kOk sets *value
// and *size_bytes. MQTT 5.0 §1.5.5: at most four bytes, and the minimum
// number of bytes [MQTT-1.5.5-1] (a longer form is treated as malformed).
VarintResult DecodeVarint(std::span<const std::byte> in, uint32_t* value,
                          size_t* size_bytes);

// UTF-8 checks of MQTT 5.0 §1.5.4 (3.1.1 §1.5.3): well-formed per RFC 3629
// (no overlong forms, nothing above U+10FFFF), no surrogates U+D800..U+DFFF
// [MQTT-1.5.4-1], and no U+0000 [MQTT-1.5.4-2]. A BOM is kept as U+FEFF
// [MQTT-1.5.4-3], so it needs no special case.
DecodeStatus ValidateUtf8(std::string_view text);

class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> data) : data_(data) {}

  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }
  bool empty() const { return pos_ == data_.size(); }
  std::span<const std::byte> rest() const { return data_.subspan(pos_); }

  bool ReadByte(uint8_t* out) {
    if (remaining() < 1) return false;
    *out = uint8_t(data_[pos_++]);
    return true;
  }
  bool ReadU16(uint16_t* out) {
    if (remaining() < 2) return false;
    *out = uint16_t(uint16_t(data_[pos_]) << 8 | uint16_t(data_[pos_ + 1]));
    pos_ += 2;
    return true;
  }
  bool ReadU32(uint32_t* out) {
    if (remaining() < 4) return false;
    *out = uint32_t(data_[pos_]) << 24 | uint32_t(data_[pos_ + 1]) << 16 |
           uint32_t(data_[pos_ + 2]) << 8 | uint32_t(data_[pos_ + 3]);
    pos_ += 4;
    return true;
  }
  bool ReadBytes(size_t n, std::span<const std::byte>* out) {
    if (remaining() < n) return false;
    *out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  // A Variable Byte Integer that must lie wholly inside the data.
  DecodeStatus ReadVarint(uint32_t* out);
  // Two-byte length + UTF-8 data, validated (§1.5.4).
  DecodeStatus ReadString(std::string_view* out);
  // Two-byte length + bytes (§1.5.6).
  DecodeStatus ReadBinary(std::span<const std::byte>* out);
  // Two strings (§1.5.7); both obey §1.5.4 [MQTT-1.5.7-1].
  DecodeStatus ReadStringPair(std::string_view* key, std::string_view* value);

 private:
  std::span<const std::byte> data_;
  size_t pos_ = 0;
};

// Writes into a caller-owned span. Once a write does not fit, overflow() is
// true and later writes are ignored; the caller then treats the output as
// invalid ("buffer too small").
class WireWriter {
 public:
  explicit WireWriter(std::span<std::byte> out) : out_(out) {}

  size_t size() const { return pos_; }
  bool overflow() const { return overflow_; }

  void Byte(uint8_t v) {
    if (Reserve(1)) out_[pos_++] = std::byte(v);
  }
  void U16(uint16_t v) {
    if (!Reserve(2)) return;
    out_[pos_++] = std::byte(v >> 8);
    out_[pos_++] = std::byte(v);
  }
  void U32(uint32_t v) {
    if (!Reserve(4)) return;
    out_[pos_++] = std::byte(v >> 24);
    out_[pos_++] = std::byte(v >> 16);
    out_[pos_++] = std::byte(v >> 8);
    out_[pos_++] = std::byte(v);
  }
  void Varint(uint32_t v) {
    do {
      uint8_t b = v & 0x7F;
      v >>= 7;
      if (v != 0) b |= 0x80;
      Byte(b);
    } while (v != 0);
  }
  void Bytes(std::span<const std::byte> bytes) {
    if (bytes.empty() || !Reserve(bytes.size())) return;
    std::memcpy(out_.data() + pos_, bytes.data(), bytes.size());
    pos_ += bytes.size();
  }
  void String(std::string_view s) {
    U16(uint16_t(s.size()));
    Bytes(std::as_bytes(std::span<const char>(s.data(), s.size())));
  }
  void Binary(std::span<const std::byte> b) {
    U16(uint16_t(b.size()));
    Bytes(b);
  }

 private:
  bool Reserve(size_t n) {
    if (overflow_ || out_.size() - pos_ < n) {
      overflow_ = true;
      return false;
    }
    return true;
  }
  std::span<std::byte> out_;
  size_t pos_ = 0;
  bool overflow_ = false;
};

inline std::span<const std::byte> AsBytes(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}
inline std::string_view AsString(std::span<const std::byte> b) {
  return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_WIRE_H_
