// Every MQTT control packet of versions 3.1.1 and 5.0: the decoded form,
// decoding from a located frame, and encoding into a caller buffer.
//
// Decoding is two steps. ParseFrame() finds one packet at the start of a
// buffer (fixed header + Remaining Length, §2.1); stream_decoder.h does that
// incrementally for a TCP stream. DecodePacket() (or one Decode* function)
// then reads the variable header and payload. Decoded packets are views into
// the frame's bytes: no copy, no allocation.
//
//   Frame frame;
//   size_t needed;
//   if (ParseFrame(bytes, max_packet, &frame, &needed) == FrameResult::kFrame)
//   {
//     Packet packet;
//     DecodeStatus s = DecodePacket(frame, Version::k5, &packet);
//     if (!s.ok()) { /* DISCONNECT with s.code (v5), or just close */ }
//     if (auto* publish = std::get_if<Publish>(&packet)) { ... }
//   }
//
//   Publish out;
//   out.topic = "a/b";
//   out.payload = AsBytes("hello");
//   EncodeResult r = Encode(out, Version::k311, lease.writable());
//   if (!r.ok()) { /* r.error: kBufferTooSmall, ... */ }
//
// Errors: decoding never crashes on any input; a bad packet gives the reason
// code the spec prescribes (Malformed Packet 0x81, Protocol Error 0x82,
// Unsupported Protocol Version 0x84) and a static detail citing the
// normative statement. Encoding fails only for a buffer too small, a packet
// over the 268,435,455-byte Remaining Length limit, or a field no packet can
// carry (a string over 65,535 bytes).
#ifndef RINGLAB_MQTT_PACKETS_H_
#define RINGLAB_MQTT_PACKETS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>

#include "mqtt/properties.h"
#include "mqtt/types.h"
#include "mqtt/wire.h"

namespace ringlab::mqtt {

// ---- Frames
// ------------------------------------------------------------------

// One whole control packet located in a buffer.
struct Frame {
  PacketType type = PacketType::kReserved;
  uint8_t flags = 0;                // low nibble of the first byte
  std::span<const std::byte> body;  // variable header + payload
  uint32_t size_bytes = 0;          // fixed header + body
};

enum class FrameResult : uint8_t {
  kFrame,      // *frame is valid
  kNeedMore,   // *needed_bytes is the total size needed (or a lower bound)
  kMalformed,  // bad Remaining Length (§1.5.5, MQTT-1.5.5-1)
  kTooLarge,   // the packet exceeds max_packet_bytes (0x95 in v5)
};

// Locates the packet at the start of `in`. `max_packet_bytes` bounds the
// whole packet (fixed header included), as Maximum Packet Size does.
FrameResult ParseFrame(std::span<const std::byte> in, uint32_t max_packet_bytes,
                       Frame* frame, size_t* needed_bytes);

// ---- Packets
// -----------------------------------------------------------------

struct SubscriptionOptions {
  uint8_t max_qos = 0;
  bool no_local = false;             // v5
  bool retain_as_published = false;  // v5
  uint8_t retain_handling = 0;       // v5: 0, 1 or 2
};

struct Will {
  std::string_view topic;
  std::span<const std::byte> payload;
  uint8_t qos = 0;
  bool retain = false;
  Properties properties;  // v5 Will Properties
};

struct Connect {
  Version version = Version::k5;
  bool clean_start = true;  // "Clean Session" in 3.1.1
  uint16_t keep_alive_s = 60;
  std::string_view client_id;
  std::optional<Will> will;
  std::optional<std::string_view> username;
  std::optional<std::span<const std::byte>> password;
  Properties properties;
};

struct Connack {
  bool session_present = false;
  // v5: a ReasonCode. 3.1.1: a return code (ConnackV311).
  uint8_t code = 0;
  Properties properties;
};

struct Publish {
  std::string_view topic;  // may be empty in v5 when a Topic Alias is set
  uint8_t qos = 0;
  bool dup = false;
  bool retain = false;
  uint16_t packet_id = 0;  // QoS 1 and 2 only
  Properties properties;
  std::span<const std::byte> payload;
};

// PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4 - §3.7) share one shape.
struct PubResponse {
  PacketType type = PacketType::kPuback;
  uint16_t packet_id = 0;
  ReasonCode reason = ReasonCode::kSuccess;  // v5
  Properties properties;                     // v5
};

struct SubscribeEntry {
  std::string_view filter;
  SubscriptionOptions options;
};

// The topic filters of a SUBSCRIBE. Decoded: a view of the validated
// payload, walked on demand. To encode: a borrowed array.
class SubscribeEntries {
 public:
  SubscribeEntries() = default;
  explicit SubscribeEntries(std::span<const SubscribeEntry> entries)
      : entries_(entries), count_(uint32_t(entries.size())) {}
  static SubscribeEntries FromWire(std::span<const std::byte> payload,
                                   uint32_t count, Version version);
  size_t size() const { return count_; }
  template <typename Fn>
  void ForEach(Fn&& fn) const;  // fn(const SubscribeEntry&)
  size_t EncodedSize() const;
  void Encode(Version version, WireWriter& w) const;

 private:
  std::span<const SubscribeEntry> entries_;
  std::span<const std::byte> wire_;
  uint32_t count_ = 0;
  Version version_ = Version::k5;
};

// The topic filters of an UNSUBSCRIBE; same two representations.
class TopicFilterList {
 public:
  TopicFilterList() = default;
  explicit TopicFilterList(std::span<const std::string_view> filters)
      : filters_(filters), count_(uint32_t(filters.size())) {}
  static TopicFilterList FromWire(std::span<const std::byte> payload,
                                  uint32_t count) {
    TopicFilterList l;
    l.wire_ = payload;
    l.count_ = count;
    return l;
  }
  size_t size() const { return count_; }
  template <typename Fn>
  void ForEach(Fn&& fn) const;  // fn(std::string_view)
  size_t EncodedSize() const;
  void Encode(WireWriter& w) const;

 private:
  std::span<const std::string_view> filters_;
  std::span<const std::byte> wire_;
  uint32_t count_ = 0;
};

struct Subscribe {
  uint16_t packet_id = 0;
  Properties properties;
  SubscribeEntries entries;
};

struct Suback {
  uint16_t packet_id = 0;
  Properties properties;
  // One per topic filter: a granted QoS or a failure (0x80 in 3.1.1, a
  // ReasonCode in v5).
  std::span<const uint8_t> reason_codes;
};

struct Unsubscribe {
  uint16_t packet_id = 0;
  Properties properties;
  TopicFilterList filters;
};

struct Unsuback {
  uint16_t packet_id = 0;
  Properties properties;
  std::span<const uint8_t> reason_codes;  // v5 only; empty in 3.1.1
};

struct Pingreq {};
struct Pingresp {};

struct Disconnect {
  ReasonCode reason = ReasonCode::kNormalDisconnection;  // v5
  Properties properties;                                 // v5
};

struct Auth {  // v5 only
  ReasonCode reason = ReasonCode::kSuccess;
  Properties properties;
};

using Packet =
    std::variant<Connect, Connack, Publish, PubResponse, Subscribe, Suback,
                 Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth>;

// ---- Decoding
// ----------------------------------------------------------------

// Decodes any packet. A CONNECT carries its own version; every other packet
// is read as `version` (the one the connection agreed on).
DecodeStatus DecodePacket(const Frame& frame, Version version, Packet* out);

// Checks the fixed-header flags of `frame` [MQTT-2.1.3-1] (and QoS 3 in a
// PUBLISH, MQTT-3.3.1-4). DecodePacket does this too.
DecodeStatus CheckFixedHeader(const Frame& frame, Version version);

DecodeStatus DecodeConnect(const Frame& frame, Connect* out);
DecodeStatus DecodeConnack(const Frame& frame, Version version, Connack* out);
DecodeStatus DecodePublish(const Frame& frame, Version version, Publish* out);
DecodeStatus DecodePubResponse(const Frame& frame, Version version,
                               PubResponse* out);
DecodeStatus DecodeSubscribe(const Frame& frame, Version version,
                             Subscribe* out);
DecodeStatus DecodeSuback(const Frame& frame, Version version, Suback* out);
DecodeStatus DecodeUnsubscribe(const Frame& frame, Version version,
                               Unsubscribe* out);
DecodeStatus DecodeUnsuback(const Frame& frame, Version version, Unsuback* out);
DecodeStatus DecodeDisconnect(const Frame& frame, Version version,
                              Disconnect* out);
DecodeStatus DecodeAuth(const Frame& frame, Version version, Auth* out);

// ---- Encoding
// ----------------------------------------------------------------

enum class EncodeError : uint8_t {
  kNone,
  kBufferTooSmall,  // `out` is shorter than EncodedSize()
  kTooLarge,        // Remaining Length over 268,435,455
  kInvalid,         // a string or binary field over 65,535 bytes
};

struct EncodeResult {
  size_t size = 0;  // bytes written when ok()
  EncodeError error = EncodeError::kNone;
  bool ok() const { return error == EncodeError::kNone; }
};

// The exact encoded size of a packet; 0 when it cannot be encoded.
size_t EncodedSize(const Packet& packet, Version version);

EncodeResult Encode(const Connect& p, std::span<std::byte> out);  // p.version
EncodeResult Encode(const Connack& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Publish& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const PubResponse& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Subscribe& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Suback& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Unsubscribe& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Unsuback& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Pingreq& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Pingresp& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Disconnect& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Auth& p, Version v, std::span<std::byte> out);
EncodeResult Encode(const Packet& p, Version v, std::span<std::byte> out);

// A PUBLISH whose last bytes the caller sends from elsewhere (one shared
// payload, a header per subscriber). Writes the fixed header, topic, packet
// id and, in v5, the Property Length and `p.properties`; then the caller
// sends `tail_property_bytes` of already-encoded properties (v5 only, else
// 0) followed by `payload_bytes` of payload. `p.payload` and
// `p.properties.raw_extra` are ignored.
EncodeResult EncodePublishHeader(const Publish& p, Version v,
                                 size_t tail_property_bytes,
                                 size_t payload_bytes,
                                 std::span<std::byte> out);
// The header size EncodePublishHeader would write.
size_t PublishHeaderSize(const Publish& p, Version v,
                         size_t tail_property_bytes, size_t payload_bytes);

// ---- Inline helpers
// ----------------------------------------------------------

template <typename Fn>
void SubscribeEntries::ForEach(Fn&& fn) const {
  if (!entries_.empty() || wire_.empty()) {
    for (const SubscribeEntry& e : entries_) fn(e);
    return;
  }
  WireReader r(wire_);
  while (!r.empty()) {
    SubscribeEntry e;
    uint8_t options = 0;
    (void)r.ReadString(&e.filter);
    (void)r.ReadByte(&options);
    e.options.max_qos = options & 0x03;
    if (version_ == Version::k5) {
      e.options.no_local = (options & 0x04) != 0;
      e.options.retain_as_published = (options & 0x08) != 0;
      e.options.retain_handling = (options >> 4) & 0x03;
    }
    fn(e);
  }
}

template <typename Fn>
void TopicFilterList::ForEach(Fn&& fn) const {
  if (!filters_.empty() || wire_.empty()) {
    for (std::string_view f : filters_) fn(f);
    return;
  }
  WireReader r(wire_);
  while (!r.empty()) {
    std::string_view f;
    (void)r.ReadString(&f);
    fn(f);
  }
}

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_PACKETS_H_
