// MQTT 5.0 properties (§2.2.2): decoding with the type and placement rules of
// the §2.2.2.2 table, and encoding into a caller buffer.
//
//   WireReader reader(body);
//   Properties props;
//   DecodeStatus s = DecodeProperties(reader, PropertyContext::kPublish,
//                                     &props);
//   if (!s.ok()) return s;            // 0x81 Malformed or 0x82 Protocol Error
//   props.user_properties.ForEach([](std::string_view k,
//                                    std::string_view v) { ... });
//
//   Properties out;
//   out.reason_string = "quota";
//   StringPair pairs[] = {{"k", "v"}};
//   out.user_properties = UserProperties(pairs);
//   EncodeProperties(out, writer);    // Property Length + the properties
//
// Ownership: decoded views (strings, binary data, the user property and
// subscription identifier lists) point into the decoded bytes and live as
// long as they do. An encode-side UserProperties borrows its array.
//
// Errors (decode): an identifier unknown or not allowed in the packet, or a
// value of the wrong type, is a Malformed Packet (§2.2.2.2); a duplicate, a
// value outside its range (a 0 Receive Maximum, a flag that is not 0 or 1, a
// 0 Subscription Identifier) is a Protocol Error, as each property's section
// says.
#ifndef RINGLAB_MQTT_PROPERTIES_H_
#define RINGLAB_MQTT_PROPERTIES_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "mqtt/types.h"
#include "mqtt/wire.h"

namespace ringlab::mqtt {

struct StringPair {
  std::string_view key;
  std::string_view value;
};

// The packet (or Will Properties block) a property list belongs to: one
// column of the §2.2.2.2 table.
enum class PropertyContext : uint8_t {
  kConnect,
  kConnack,
  kPublish,
  kWill,
  kPuback,
  kPubrec,
  kPubrel,
  kPubcomp,
  kSubscribe,
  kSuback,
  kUnsubscribe,
  kUnsuback,
  kDisconnect,
  kAuth,
};

// The User Property (0x26) list. Decoded: a view of the whole property block,
// walked on demand (so decoding allocates nothing). To encode: a borrowed
// array of pairs. Order is preserved either way [MQTT-3.3.2-18].
class UserProperties {
 public:
  UserProperties() = default;
  explicit UserProperties(std::span<const StringPair> pairs)
      : pairs_(pairs), count_(uint32_t(pairs.size())) {}
  // `block`: the property bytes after the Property Length, already
  // validated by DecodeProperties; `count` the user properties in it.
  static UserProperties FromWire(std::span<const std::byte> block,
                                 uint32_t count) {
    UserProperties p;
    p.wire_ = block;
    p.count_ = count;
    return p;
  }

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  // Calls fn(key, value) for each pair, in order.
  template <typename Fn>
  void ForEach(Fn&& fn) const;
  // Bytes the pairs take when encoded as properties (ids included).
  size_t EncodedSize() const;
  void Encode(WireWriter& writer) const;

 private:
  std::span<const StringPair> pairs_;
  std::span<const std::byte> wire_;
  uint32_t count_ = 0;
};

// The Subscription Identifier (0x0B) list: one in SUBSCRIBE, any number in a
// PUBLISH from the server (MQTT-3.3.4-4). Same two representations.
class SubscriptionIds {
 public:
  SubscriptionIds() = default;
  explicit SubscriptionIds(std::span<const uint32_t> ids)
      : ids_(ids), count_(uint32_t(ids.size())) {}
  static SubscriptionIds FromWire(std::span<const std::byte> block,
                                  uint32_t count) {
    SubscriptionIds s;
    s.wire_ = block;
    s.count_ = count;
    return s;
  }
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  template <typename Fn>
  void ForEach(Fn&& fn) const;
  // The first identifier, or 0 when there is none.
  uint32_t first() const;
  size_t EncodedSize() const;
  void Encode(WireWriter& writer) const;

 private:
  std::span<const uint32_t> ids_;
  std::span<const std::byte> wire_;
  uint32_t count_ = 0;
};

struct Properties {
  std::optional<uint8_t> payload_format_indicator;             // 0x01
  std::optional<uint32_t> message_expiry_interval;             // 0x02, seconds
  std::optional<std::string_view> content_type;                // 0x03
  std::optional<std::string_view> response_topic;              // 0x08
  std::optional<std::span<const std::byte>> correlation_data;  // 0x09
  SubscriptionIds subscription_ids;                            // 0x0B
  std::optional<uint32_t> session_expiry_interval;             // 0x11, seconds
  std::optional<std::string_view> assigned_client_identifier;  // 0x12
  std::optional<uint16_t> server_keep_alive;                   // 0x13, seconds
  std::optional<std::string_view> authentication_method;       // 0x15
  std::optional<std::span<const std::byte>> authentication_data;  // 0x16
  std::optional<uint8_t> request_problem_information;             // 0x17
  std::optional<uint32_t> will_delay_interval;               // 0x18, seconds
  std::optional<uint8_t> request_response_information;       // 0x19
  std::optional<std::string_view> response_information;      // 0x1A
  std::optional<std::string_view> server_reference;          // 0x1C
  std::optional<std::string_view> reason_string;             // 0x1F
  std::optional<uint16_t> receive_maximum;                   // 0x21
  std::optional<uint16_t> topic_alias_maximum;               // 0x22
  std::optional<uint16_t> topic_alias;                       // 0x23
  std::optional<uint8_t> maximum_qos;                        // 0x24
  std::optional<uint8_t> retain_available;                   // 0x25
  UserProperties user_properties;                            // 0x26
  std::optional<uint32_t> maximum_packet_size;               // 0x27
  std::optional<uint8_t> wildcard_subscription_available;    // 0x28
  std::optional<uint8_t> subscription_identifier_available;  // 0x29
  std::optional<uint8_t> shared_subscription_available;      // 0x2A

  // Encode only: properties already in wire form, appended verbatim after
  // the fields above (the broker forwards a publisher's properties so).
  std::span<const std::byte> raw_extra;
  // Decode only: the property bytes after the Property Length.
  std::span<const std::byte> wire;
};

// Reads Property Length and the properties that follow from `reader`,
// checking each against `context`.
DecodeStatus DecodeProperties(WireReader& reader, PropertyContext context,
                              Properties* out);

// Bytes of the properties without the Property Length prefix. Sets
// *invalid (when given) if a string or binary value is over 65,535 bytes.
size_t PropertiesSize(const Properties& props, bool* invalid = nullptr);
// Property Length + properties: VarintSize(PropertiesSize(p)) + that.
inline size_t PropertiesBlockSize(const Properties& props) {
  const size_t n = PropertiesSize(props);
  return VarintSize(uint32_t(n)) + n;
}
// Writes the properties only (no length prefix).
void EncodePropertyList(const Properties& props, WireWriter& writer);
// Writes Property Length and the properties.
void EncodeProperties(const Properties& props, WireWriter& writer);

namespace internal {
// Steps over one validated property at the reader's position; returns its id
// and, for 0x26 / 0x0B, its value. Only for blocks DecodeProperties
// accepted.
uint8_t NextProperty(WireReader& reader, StringPair* pair, uint32_t* varint);
}  // namespace internal

template <typename Fn>
void UserProperties::ForEach(Fn&& fn) const {
  if (count_ == 0) return;
  if (!pairs_.empty() || wire_.empty()) {
    for (const StringPair& p : pairs_) fn(p.key, p.value);
    return;
  }
  WireReader reader(wire_);
  while (!reader.empty()) {
    StringPair pair;
    uint32_t unused;
    if (internal::NextProperty(reader, &pair, &unused) ==
        uint8_t(PropertyId::kUserProperty)) {
      fn(pair.key, pair.value);
    }
  }
}

template <typename Fn>
void SubscriptionIds::ForEach(Fn&& fn) const {
  if (count_ == 0) return;
  if (!ids_.empty() || wire_.empty()) {
    for (uint32_t id : ids_) fn(id);
    return;
  }
  WireReader reader(wire_);
  while (!reader.empty()) {
    StringPair unused;
    uint32_t id = 0;
    if (internal::NextProperty(reader, &unused, &id) ==
        uint8_t(PropertyId::kSubscriptionIdentifier)) {
      fn(id);
    }
  }
}

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_PROPERTIES_H_
