// RTPS 2.5 messages (DDSI-RTPS 2.5 §8.3, §9.4): the message header and every
// submessage a Cyclone DDS peer may send. Parsing validates first (each
// Parse* function checks the structure the section demands and returns a
// ParseError naming what is wrong), and the participant handles only valid
// submessages. Building writes into a caller-owned buffer.
//
//   MessageHeader header;
//   if (ParseHeader(bytes, &header) != ParseError::kOk) { count; drop; }
//   SubmessageIterator it(bytes);
//   Submessage sm;
//   while (it.Next(&sm)) {
//     if (sm.id == SubmessageId::kData) {
//       DataSubmessage data;
//       if (ParseData(sm, &data) == ParseError::kOk) handle(data);
//     }
//   }
//   if (it.error() != ParseError::kOk) count(it.error());
//
//   MessageBuilder b(out_span, our_prefix);        // writes the header
//   b.AddInfoTs(source_time_ns);
//   b.AddData(reader_id, writer_id, sn, nullptr, payload);
//   size_t n = b.size();                           // 0 if it did not fit
//
// Ownership: parsed structs are views into the input bytes; they live as long
// as the input. The builder writes only into its span.
// Errors: ParseError values; the builder latches ok() == false when a
// submessage does not fit (Mark/Rollback let callers drop a partial one).
// Thread-safety: none needed (no shared state).
#ifndef RINGLAB_RTPS_MESSAGE_H_
#define RINGLAB_RTPS_MESSAGE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "rtps/cdr.h"
#include "rtps/types.h"

namespace ringlab::rtps {

// §9.4.5.1.1 Table 9.18 submessage kinds.
enum class SubmessageId : uint8_t {
  kPad = 0x01,
  kAckNack = 0x06,
  kHeartbeat = 0x07,
  kGap = 0x08,
  kInfoTs = 0x09,
  kInfoSrc = 0x0c,
  kInfoReplyIp4 = 0x0d,
  kInfoDst = 0x0e,
  kInfoReply = 0x0f,
  kNackFrag = 0x12,
  kHeartbeatFrag = 0x13,
  kData = 0x15,
  kDataFrag = 0x16,
};

// Submessage flags (§9.4.5.x). Bit 0 is always endianness (1 = little).
namespace flags {
inline constexpr uint8_t kEndianness = 0x01;
inline constexpr uint8_t kDataInlineQos = 0x02;
inline constexpr uint8_t kDataData = 0x04;
inline constexpr uint8_t kDataKey = 0x08;
inline constexpr uint8_t kDataNonStandard = 0x10;
inline constexpr uint8_t kDataFragInlineQos = 0x02;
inline constexpr uint8_t kDataFragKey = 0x04;
inline constexpr uint8_t kHeartbeatFinal = 0x02;
inline constexpr uint8_t kHeartbeatLiveliness = 0x04;
inline constexpr uint8_t kAckNackFinal = 0x02;
inline constexpr uint8_t kInfoTsInvalidate = 0x02;
inline constexpr uint8_t kInfoReplyMulticast = 0x02;
}  // namespace flags

enum class ParseError : uint8_t {
  kOk = 0,
  kHeaderTooShort,      // fewer than 20 bytes
  kBadMagic,            // not "RTPS"
  kUnsupportedVersion,  // major version != 2 (§8.3.3.1.2)
  kSubmessageHeaderTruncated,
  kLengthPastEnd,         // octetsToNextHeader runs past the message end
  kSubmessageTooShort,    // body smaller than the fixed part
  kBadSequenceNumber,     // < 1 where the spec requires a valid one
  kBadSequenceNumberSet,  // numBits > 256, base < 1, bitmap truncated
  kBadFragmentNumberSet,  // numBits > 256, base < 1, bitmap truncated
  kBadHeartbeatRange,     // lastSN < firstSN - 1 (§8.3.7.5.3)
  kBadGap,                // gapStart < 1 or gapList.base < gapStart
  kBadInlineQos,          // octetsToInlineQos or the list itself malformed
  kBadFragmentInfo,       // DATA_FRAG sizes inconsistent (§8.3.7.3.3)
  kBadLocatorList,        // INFO_REPLY locator count past the end
  kCount,
};
const char* ParseErrorName(ParseError e);

struct MessageHeader {
  ProtocolVersion version;
  VendorId vendor;
  GuidPrefix prefix;
};
inline constexpr size_t kHeaderSize = 20;
inline constexpr size_t kSubmessageHeaderSize = 4;

// §8.3.3 / §9.4.4: "RTPS", version, vendor, prefix.
ParseError ParseHeader(std::span<const std::byte> message, MessageHeader* out);

struct Submessage {
  uint8_t id = 0;
  uint8_t flags = 0;
  Endian endian = Endian::kLittle;
  std::span<const std::byte> body;  // after the 4-byte submessage header
};

// Walks the submessages after the header (§9.4.5.1.3). A submessage whose
// octetsToNextHeader is 0 extends to the end of the message, except PAD and
// INFO_TS which may legitimately be empty.
class SubmessageIterator {
 public:
  explicit SubmessageIterator(std::span<const std::byte> message)
      : in_(message), pos_(kHeaderSize) {}
  bool Next(Submessage* out);
  ParseError error() const { return error_; }

 private:
  std::span<const std::byte> in_;
  size_t pos_;
  ParseError error_ = ParseError::kOk;
};

// ---- Submessage bodies ------------------------------------------------------

// §8.3.7.2 / §9.4.5.3.
struct DataSubmessage {
  EntityId reader_id;
  EntityId writer_id;
  SequenceNumber sn = 0;
  bool has_inline_qos = false;
  std::span<const std::byte> inline_qos;  // the parameter list, sentinel incl.
  bool has_data = false;                  // D flag: serialized data
  bool has_key = false;                   // K flag: serialized key only
  std::span<const std::byte> payload;     // encapsulation header + body
  Endian endian = Endian::kLittle;        // of the inline QoS
};
ParseError ParseData(const Submessage& sm, DataSubmessage* out);

// §8.3.7.3 / §9.4.5.4.
struct DataFragSubmessage {
  EntityId reader_id;
  EntityId writer_id;
  SequenceNumber sn = 0;
  uint32_t fragment_start = 0;  // first fragment number, >= 1
  uint16_t fragments_in_submessage = 0;
  uint16_t fragment_size = 0;
  uint32_t sample_size = 0;
  bool has_inline_qos = false;
  std::span<const std::byte> inline_qos;
  bool has_key = false;
  std::span<const std::byte> fragments;  // the fragment bytes
  Endian endian = Endian::kLittle;
};
ParseError ParseDataFrag(const Submessage& sm, DataFragSubmessage* out);

// §8.3.7.5 / §9.4.5.6.
struct HeartbeatSubmessage {
  EntityId reader_id;
  EntityId writer_id;
  SequenceNumber first_sn = 0;
  SequenceNumber last_sn = 0;
  uint32_t count = 0;
  bool final_flag = false;
  bool liveliness = false;
};
ParseError ParseHeartbeat(const Submessage& sm, HeartbeatSubmessage* out);

// §8.3.7.1 / §9.4.5.2.
struct AckNackSubmessage {
  EntityId reader_id;
  EntityId writer_id;
  SequenceNumberSet state;
  uint32_t count = 0;
  bool final_flag = false;
};
ParseError ParseAckNack(const Submessage& sm, AckNackSubmessage* out);

// §8.3.7.4 / §9.4.5.5.
struct GapSubmessage {
  EntityId reader_id;
  EntityId writer_id;
  SequenceNumber gap_start = 0;
  SequenceNumberSet gap_list;
};
ParseError ParseGap(const Submessage& sm, GapSubmessage* out);

// §8.3.7.8 / §9.4.5.9.
struct NackFragSubmessage {
  EntityId reader_id;
  EntityId writer_id;
  SequenceNumber sn = 0;
  FragmentNumberSet state;
  uint32_t count = 0;
};
ParseError ParseNackFrag(const Submessage& sm, NackFragSubmessage* out);

// §8.3.7.6 / §9.4.5.7.
struct HeartbeatFragSubmessage {
  EntityId reader_id;
  EntityId writer_id;
  SequenceNumber sn = 0;
  uint32_t last_fragment = 0;
  uint32_t count = 0;
};
ParseError ParseHeartbeatFrag(const Submessage& sm,
                              HeartbeatFragSubmessage* out);

// §8.3.7.9 / §9.4.5.10 (INFO_TS): invalidate flag or a timestamp.
struct InfoTsSubmessage {
  bool invalidate = false;
  RtpsTime time;
};
ParseError ParseInfoTs(const Submessage& sm, InfoTsSubmessage* out);

// §8.3.7.10 (INFO_SRC).
struct InfoSrcSubmessage {
  ProtocolVersion version;
  VendorId vendor;
  GuidPrefix prefix;
};
ParseError ParseInfoSrc(const Submessage& sm, InfoSrcSubmessage* out);

// §8.3.7.7 (INFO_DST).
struct InfoDstSubmessage {
  GuidPrefix prefix;
};
ParseError ParseInfoDst(const Submessage& sm, InfoDstSubmessage* out);

// §8.3.7.11 (INFO_REPLY) and INFO_REPLY_IP4 (§9.4.5.13): reply locators.
struct InfoReplySubmessage {
  static constexpr size_t kMaxLocators = 4;  // more are validated, not kept
  std::array<Locator, kMaxLocators> unicast{};
  uint32_t unicast_count = 0;  // kept: min(count, kMaxLocators)
  std::array<Locator, kMaxLocators> multicast{};
  uint32_t multicast_count = 0;
};
ParseError ParseInfoReply(const Submessage& sm, InfoReplySubmessage* out);

// ---- Building
// -----------------------------------------------------------------

// Inline QoS the participant sends (§9.6.3): key hash and status info.
struct InlineQos {
  std::optional<KeyHash> key_hash;
  std::optional<uint32_t> status_info;
};

// Writes one RTPS message, little-endian submessages, into `out`.
class MessageBuilder {
 public:
  MessageBuilder(std::span<std::byte> out, const GuidPrefix& prefix,
                 VendorId vendor = kVendorRinglab);
  bool ok() const { return ok_; }
  size_t size() const { return ok_ ? pos_ : 0; }
  size_t remaining() const { return ok_ ? limit_ - pos_ : 0; }
  // Keeps the last `tail_bytes` of the buffer free until ReleaseTail(), so
  // a trailing submessage (a heartbeat) still fits after a full payload.
  void ReserveTail(size_t tail_bytes) {
    limit_ = out_.size() - std::min(tail_bytes, out_.size() - pos_);
  }
  void ReleaseTail() { limit_ = out_.size(); }
  // True if only the header has been written.
  bool empty() const { return pos_ == kHeaderSize; }
  size_t Mark() const { return pos_; }
  void Rollback(size_t mark) {
    pos_ = mark;
    ok_ = true;
  }

  bool AddInfoTs(int64_t source_time_ns);
  bool AddInfoTsInvalidate();
  bool AddInfoDst(const GuidPrefix& prefix);
  bool AddInfoSrc(const GuidPrefix& prefix, VendorId vendor);
  bool AddPad(size_t body_bytes);
  // `payload` holds the encapsulation header and body; it is padded to 4.
  // `key_only` sends it with the K flag instead of D (dispose/unregister).
  bool AddData(EntityId reader, EntityId writer, SequenceNumber sn,
               const InlineQos* qos, std::span<const std::byte> payload,
               bool key_only = false);
  bool AddDataFrag(EntityId reader, EntityId writer, SequenceNumber sn,
                   uint32_t fragment_start, uint16_t fragments,
                   uint16_t fragment_size, uint32_t sample_size,
                   const InlineQos* qos, std::span<const std::byte> bytes);
  bool AddHeartbeat(EntityId reader, EntityId writer, SequenceNumber first,
                    SequenceNumber last, uint32_t count, bool final_flag,
                    bool liveliness = false);
  bool AddAckNack(EntityId reader, EntityId writer,
                  const SequenceNumberSet& state, uint32_t count,
                  bool final_flag);
  bool AddGap(EntityId reader, EntityId writer, SequenceNumber gap_start,
              const SequenceNumberSet& gap_list);
  bool AddNackFrag(EntityId reader, EntityId writer, SequenceNumber sn,
                   const FragmentNumberSet& state, uint32_t count);
  bool AddHeartbeatFrag(EntityId reader, EntityId writer, SequenceNumber sn,
                        uint32_t last_fragment, uint32_t count);
  bool AddInfoReply(std::span<const Locator> unicast,
                    std::span<const Locator> multicast);
  // Bytes a DATA submessage with `payload_bytes` of payload needs.
  static size_t DataSize(size_t payload_bytes, const InlineQos* qos);
  // Bytes of a DATA_FRAG submessage besides its (padded) fragment bytes.
  static size_t DataFragOverhead(const InlineQos* qos);

 private:
  // Starts a submessage; returns its header offset or SIZE_MAX if `body`
  // bytes do not fit.
  size_t Begin(SubmessageId id, uint8_t flags, size_t body);
  void End(size_t at);
  void U16(uint16_t v);
  void U32(uint32_t v);
  void Entity(EntityId e);
  void Sn(SequenceNumber sn);
  void SnSet(const SequenceNumberSet& s);
  void Bytes(const void* p, size_t n);
  void InlineQosList(const InlineQos& qos);
  static size_t InlineQosSize(const InlineQos& qos);

  std::span<std::byte> out_;
  size_t limit_ = 0;  // writes stay below this (see ReserveTail)
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_MESSAGE_H_
