#include "rtps/message.h"

#include <cstring>

#include "rtps/parameter_list.h"

namespace ringlab::rtps {

const char* ParseErrorName(ParseError e) {
  switch (e) {
    case ParseError::kOk:
      return "ok";
    case ParseError::kHeaderTooShort:
      return "header_too_short";
    case ParseError::kBadMagic:
      return "bad_magic";
    case ParseError::kUnsupportedVersion:
      return "unsupported_version";
    case ParseError::kSubmessageHeaderTruncated:
      return "submessage_header_truncated";
    case ParseError::kLengthPastEnd:
      return "length_past_end";
    case ParseError::kSubmessageTooShort:
      return "submessage_too_short";
    case ParseError::kBadSequenceNumber:
      return "bad_sequence_number";
    case ParseError::kBadSequenceNumberSet:
      return "bad_sequence_number_set";
    case ParseError::kBadFragmentNumberSet:
      return "bad_fragment_number_set";
    case ParseError::kBadHeartbeatRange:
      return "bad_heartbeat_range";
    case ParseError::kBadGap:
      return "bad_gap";
    case ParseError::kBadInlineQos:
      return "bad_inline_qos";
    case ParseError::kBadFragmentInfo:
      return "bad_fragment_info";
    case ParseError::kBadLocatorList:
      return "bad_locator_list";
    case ParseError::kCount:
      break;
  }
  return "?";
}

namespace {

// A bounds-checked cursor over a submessage body in its endianness.
class Cursor {
 public:
  Cursor(std::span<const std::byte> b, Endian e) : b_(b), e_(e) {}
  bool Has(size_t n) const { return b_.size() - pos_ >= n; }
  size_t pos() const { return pos_; }
  size_t left() const { return b_.size() - pos_; }
  uint16_t U16() {
    uint16_t a = std::to_integer<uint16_t>(b_[pos_]);
    uint16_t c = std::to_integer<uint16_t>(b_[pos_ + 1]);
    pos_ += 2;
    return e_ == Endian::kBig ? static_cast<uint16_t>(a << 8 | c)
                              : static_cast<uint16_t>(c << 8 | a);
  }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      uint32_t x = std::to_integer<uint32_t>(b_[pos_ + i]);
      v |= e_ == Endian::kBig ? x << (24 - 8 * i) : x << (8 * i);
    }
    pos_ += 4;
    return v;
  }
  // EntityId is an octet array, the same in both byte orders (§9.3.1.2).
  EntityId Entity() {
    EntityId e;
    e.value = (std::to_integer<uint32_t>(b_[pos_]) << 24) |
              (std::to_integer<uint32_t>(b_[pos_ + 1]) << 16) |
              (std::to_integer<uint32_t>(b_[pos_ + 2]) << 8) |
              std::to_integer<uint32_t>(b_[pos_ + 3]);
    pos_ += 4;
    return e;
  }
  // §9.3.2 SequenceNumber_t: {int32 high; uint32 low}.
  SequenceNumber Sn() {
    int32_t high = static_cast<int32_t>(U32());
    uint32_t low = U32();
    return static_cast<SequenceNumber>(
        (static_cast<uint64_t>(static_cast<uint32_t>(high)) << 32) | low);
  }
  void Prefix(GuidPrefix* p) {
    std::memcpy(p->bytes.data(), b_.data() + pos_, 12);
    pos_ += 12;
  }
  void Skip(size_t n) { pos_ += n; }
  std::span<const std::byte> Rest() const { return b_.subspan(pos_); }

 private:
  std::span<const std::byte> b_;
  size_t pos_ = 0;
  Endian e_;
};

// §9.4.2.6 SequenceNumberSet: bitmapBase, numBits, ceil(numBits/32) words.
// §8.3.5.5: valid iff bitmapBase >= 1 and 0 <= numBits <= 256.
ParseError ReadSnSet(Cursor& c, SequenceNumberSet* out) {
  if (!c.Has(12)) return ParseError::kSubmessageTooShort;
  out->base = c.Sn();
  out->num_bits = c.U32();
  if (out->base < 1 || out->num_bits > SequenceNumberSet::kMaxBits) {
    return ParseError::kBadSequenceNumberSet;
  }
  uint32_t words = (out->num_bits + 31) / 32;
  if (!c.Has(4 * size_t{words})) return ParseError::kBadSequenceNumberSet;
  out->bitmap.fill(0);
  for (uint32_t i = 0; i < words; ++i) out->bitmap[i] = c.U32();
  // Bits past numBits carry no meaning; clear them so Contains() is exact.
  if (out->num_bits % 32 != 0) {
    out->bitmap[words - 1] &= ~((1u << (32 - out->num_bits % 32)) - 1);
  }
  return ParseError::kOk;
}

ParseError ReadFragSet(Cursor& c, FragmentNumberSet* out) {
  if (!c.Has(8)) return ParseError::kSubmessageTooShort;
  out->base = c.U32();
  out->num_bits = c.U32();
  if (out->base < 1 || out->num_bits > 256) {
    return ParseError::kBadFragmentNumberSet;
  }
  uint32_t words = (out->num_bits + 31) / 32;
  if (!c.Has(4 * size_t{words})) return ParseError::kBadFragmentNumberSet;
  out->bitmap.fill(0);
  for (uint32_t i = 0; i < words; ++i) out->bitmap[i] = c.U32();
  if (out->num_bits % 32 != 0) {
    out->bitmap[words - 1] &= ~((1u << (32 - out->num_bits % 32)) - 1);
  }
  return ParseError::kOk;
}

// Splits [inline QoS][payload] after the fixed part of DATA / DATA_FRAG.
ParseError SplitInlineQos(const Submessage& sm, size_t qos_offset, bool has_qos,
                          std::span<const std::byte>* qos,
                          std::span<const std::byte>* rest) {
  if (qos_offset > sm.body.size()) return ParseError::kBadInlineQos;
  std::span<const std::byte> after = sm.body.subspan(qos_offset);
  if (has_qos) {
    size_t size = 0;
    if (ParameterListReader::Validate(after, sm.endian, &size) !=
        PlError::kOk) {
      return ParseError::kBadInlineQos;
    }
    *qos = after.first(size);
    after = after.subspan(size);
  }
  *rest = after;
  return ParseError::kOk;
}

}  // namespace

// §8.3.3.1 / §9.4.4: protocolId "RTPS", version, vendorId, guidPrefix.
ParseError ParseHeader(std::span<const std::byte> m, MessageHeader* out) {
  if (m.size() < kHeaderSize) return ParseError::kHeaderTooShort;
  if (std::memcmp(m.data(), "RTPS", 4) != 0) return ParseError::kBadMagic;
  out->version.major = std::to_integer<uint8_t>(m[4]);
  out->version.minor = std::to_integer<uint8_t>(m[5]);
  // §8.3.3.1.2 / §8.3.4.1: a different major version is not understood.
  if (out->version.major != 2) return ParseError::kUnsupportedVersion;
  out->vendor.bytes = {std::to_integer<uint8_t>(m[6]),
                       std::to_integer<uint8_t>(m[7])};
  std::memcpy(out->prefix.bytes.data(), m.data() + 8, 12);
  return ParseError::kOk;
}

// §9.4.5.1: submessageId, flags, octetsToNextHeader (in the flags' byte
// order). §8.3.4.1: a length that runs past the end invalidates the rest of
// the message.
bool SubmessageIterator::Next(Submessage* out) {
  if (error_ != ParseError::kOk || pos_ >= in_.size()) return false;
  if (in_.size() - pos_ < kSubmessageHeaderSize) {
    error_ = ParseError::kSubmessageHeaderTruncated;
    return false;
  }
  uint8_t id = std::to_integer<uint8_t>(in_[pos_]);
  uint8_t fl = std::to_integer<uint8_t>(in_[pos_ + 1]);
  uint16_t a = std::to_integer<uint16_t>(in_[pos_ + 2]);
  uint16_t b = std::to_integer<uint16_t>(in_[pos_ + 3]);
  bool little = fl & flags::kEndianness;
  size_t len = little ? (b << 8 | a) : (a << 8 | b);
  size_t body_at = pos_ + kSubmessageHeaderSize;
  size_t left = in_.size() - body_at;
  if (len == 0 && id != static_cast<uint8_t>(SubmessageId::kPad) &&
      id != static_cast<uint8_t>(SubmessageId::kInfoTs)) {
    len = left;  // §9.4.5.1.3: the last submessage extends to the end
  }
  if (len > left) {
    error_ = ParseError::kLengthPastEnd;
    return false;
  }
  out->id = id;
  out->flags = fl;
  out->endian = little ? Endian::kLittle : Endian::kBig;
  out->body = in_.subspan(body_at, len);
  pos_ = body_at + len;
  return true;
}

// §9.4.5.3: extraFlags(2) octetsToInlineQos(2) readerId writerId writerSN
// [inlineQos] [serializedPayload]. §8.3.7.2.3: writerSN must be >= 1; D and
// K are not both set.
ParseError ParseData(const Submessage& sm, DataSubmessage* out) {
  Cursor c(sm.body, sm.endian);
  if (!c.Has(20)) return ParseError::kSubmessageTooShort;
  c.Skip(2);
  uint16_t to_qos = c.U16();
  out->reader_id = c.Entity();
  out->writer_id = c.Entity();
  out->sn = c.Sn();
  if (out->sn < 1) return ParseError::kBadSequenceNumber;
  out->endian = sm.endian;
  out->has_inline_qos = sm.flags & flags::kDataInlineQos;
  out->has_data = sm.flags & flags::kDataData;
  out->has_key = sm.flags & flags::kDataKey;
  if (out->has_data && out->has_key) return ParseError::kBadInlineQos;
  // octetsToInlineQos counts from the end of its own field (offset 4).
  if (to_qos < 16) return ParseError::kBadInlineQos;
  std::span<const std::byte> rest;
  out->inline_qos = {};
  if (ParseError e = SplitInlineQos(sm, 4 + size_t{to_qos}, out->has_inline_qos,
                                    &out->inline_qos, &rest);
      e != ParseError::kOk) {
    return e;
  }
  out->payload =
      (out->has_data || out->has_key) ? rest : std::span<const std::byte>();
  return ParseError::kOk;
}

// §9.4.5.4: ... writerSN fragmentStartingNum(4) fragmentsInSubmessage(2)
// fragmentSize(2) sampleSize(4) [inlineQos] fragments. §8.3.7.3.3 validity:
// fragmentStartingNum >= 1, fragmentSize > 0 and <= sampleSize, the fragments
// lie within the sample.
ParseError ParseDataFrag(const Submessage& sm, DataFragSubmessage* out) {
  Cursor c(sm.body, sm.endian);
  if (!c.Has(32)) return ParseError::kSubmessageTooShort;
  c.Skip(2);
  uint16_t to_qos = c.U16();
  out->reader_id = c.Entity();
  out->writer_id = c.Entity();
  out->sn = c.Sn();
  if (out->sn < 1) return ParseError::kBadSequenceNumber;
  out->fragment_start = c.U32();
  out->fragments_in_submessage = c.U16();
  out->fragment_size = c.U16();
  out->sample_size = c.U32();
  out->endian = sm.endian;
  out->has_inline_qos = sm.flags & flags::kDataFragInlineQos;
  out->has_key = sm.flags & flags::kDataFragKey;
  if (out->fragment_start < 1 || out->fragment_size == 0 ||
      out->fragments_in_submessage == 0 ||
      out->fragment_size > out->sample_size) {
    return ParseError::kBadFragmentInfo;
  }
  uint64_t first_byte = uint64_t{out->fragment_start - 1} * out->fragment_size;
  if (first_byte >= out->sample_size) return ParseError::kBadFragmentInfo;
  if (to_qos < 28) return ParseError::kBadInlineQos;
  out->inline_qos = {};
  std::span<const std::byte> rest;
  if (ParseError e = SplitInlineQos(sm, 4 + size_t{to_qos}, out->has_inline_qos,
                                    &out->inline_qos, &rest);
      e != ParseError::kOk) {
    return e;
  }
  uint64_t want = std::min<uint64_t>(
      uint64_t{out->fragments_in_submessage} * out->fragment_size,
      out->sample_size - first_byte);
  if (rest.size() < want) return ParseError::kBadFragmentInfo;
  out->fragments = rest.first(want);
  return ParseError::kOk;
}

// §9.4.5.6 / §8.3.7.5.3: firstSN >= 1, lastSN >= 0, lastSN >= firstSN - 1.
ParseError ParseHeartbeat(const Submessage& sm, HeartbeatSubmessage* out) {
  Cursor c(sm.body, sm.endian);
  if (!c.Has(28)) return ParseError::kSubmessageTooShort;
  out->reader_id = c.Entity();
  out->writer_id = c.Entity();
  out->first_sn = c.Sn();
  out->last_sn = c.Sn();
  out->count = c.U32();
  out->final_flag = sm.flags & flags::kHeartbeatFinal;
  out->liveliness = sm.flags & flags::kHeartbeatLiveliness;
  if (out->first_sn < 1 || out->last_sn < 0) {
    return ParseError::kBadSequenceNumber;
  }
  if (out->last_sn < out->first_sn - 1) return ParseError::kBadHeartbeatRange;
  return ParseError::kOk;
}

// §9.4.5.2: readerId writerId readerSNState count.
ParseError ParseAckNack(const Submessage& sm, AckNackSubmessage* out) {
  Cursor c(sm.body, sm.endian);
  if (!c.Has(8)) return ParseError::kSubmessageTooShort;
  out->reader_id = c.Entity();
  out->writer_id = c.Entity();
  if (ParseError e = ReadSnSet(c, &out->state); e != ParseError::kOk) return e;
  if (!c.Has(4)) return ParseError::kSubmessageTooShort;
  out->count = c.U32();
  out->final_flag = sm.flags & flags::kAckNackFinal;
  return ParseError::kOk;
}

// §9.4.5.5 / §8.3.7.4.3: gapStart >= 1, gapList valid; the list's base is
// the first SN after the contiguous range [gapStart, base - 1].
ParseError ParseGap(const Submessage& sm, GapSubmessage* out) {
  Cursor c(sm.body, sm.endian);
  if (!c.Has(16)) return ParseError::kSubmessageTooShort;
  out->reader_id = c.Entity();
  out->writer_id = c.Entity();
  out->gap_start = c.Sn();
  if (out->gap_start < 1) return ParseError::kBadGap;
  if (ParseError e = ReadSnSet(c, &out->gap_list); e != ParseError::kOk) {
    return e;
  }
  if (out->gap_list.base < out->gap_start) return ParseError::kBadGap;
  return ParseError::kOk;
}

// §9.4.5.9: readerId writerId writerSN fragmentNumberState count.
ParseError ParseNackFrag(const Submessage& sm, NackFragSubmessage* out) {
  Cursor c(sm.body, sm.endian);
  if (!c.Has(16)) return ParseError::kSubmessageTooShort;
  out->reader_id = c.Entity();
  out->writer_id = c.Entity();
  out->sn = c.Sn();
  if (out->sn < 1) return ParseError::kBadSequenceNumber;
  if (ParseError e = ReadFragSet(c, &out->state); e != ParseError::kOk) {
    return e;
  }
  if (!c.Has(4)) return ParseError::kSubmessageTooShort;
  out->count = c.U32();
  return ParseError::kOk;
}

// §9.4.5.7: readerId writerId writerSN lastFragmentNum count.
ParseError ParseHeartbeatFrag(const Submessage& sm,
                              HeartbeatFragSubmessage* out) {
  Cursor c(sm.body, sm.endian);
  if (!c.Has(24)) return ParseError::kSubmessageTooShort;
  out->reader_id = c.Entity();
  out->writer_id = c.Entity();
  out->sn = c.Sn();
  out->last_fragment = c.U32();
  out->count = c.U32();
  if (out->sn < 1) return ParseError::kBadSequenceNumber;
  if (out->last_fragment < 1) return ParseError::kBadFragmentInfo;
  return ParseError::kOk;
}

// §9.4.5.10: with the I flag no timestamp follows.
ParseError ParseInfoTs(const Submessage& sm, InfoTsSubmessage* out) {
  out->invalidate = sm.flags & flags::kInfoTsInvalidate;
  if (out->invalidate) return ParseError::kOk;
  Cursor c(sm.body, sm.endian);
  if (!c.Has(8)) return ParseError::kSubmessageTooShort;
  out->time.seconds = static_cast<int32_t>(c.U32());
  out->time.fraction = c.U32();
  return ParseError::kOk;
}

// §9.4.5.11: unused(4) protocolVersion(2) vendorId(2) guidPrefix(12).
ParseError ParseInfoSrc(const Submessage& sm, InfoSrcSubmessage* out) {
  if (sm.body.size() < 20) return ParseError::kSubmessageTooShort;
  out->version.major = std::to_integer<uint8_t>(sm.body[4]);
  out->version.minor = std::to_integer<uint8_t>(sm.body[5]);
  out->vendor.bytes = {std::to_integer<uint8_t>(sm.body[6]),
                       std::to_integer<uint8_t>(sm.body[7])};
  std::memcpy(out->prefix.bytes.data(), sm.body.data() + 8, 12);
  return ParseError::kOk;
}

// §9.4.5.8: guidPrefix(12).
ParseError ParseInfoDst(const Submessage& sm, InfoDstSubmessage* out) {
  if (sm.body.size() < 12) return ParseError::kSubmessageTooShort;
  std::memcpy(out->prefix.bytes.data(), sm.body.data(), 12);
  return ParseError::kOk;
}

namespace {
ParseError ReadLocatorList(Cursor& c, std::array<Locator, 4>* out,
                           uint32_t* kept) {
  if (!c.Has(4)) return ParseError::kSubmessageTooShort;
  uint32_t n = c.U32();
  if (n > c.left() / 24) return ParseError::kBadLocatorList;
  *kept = 0;
  for (uint32_t i = 0; i < n; ++i) {
    Locator l;
    l.kind = static_cast<int32_t>(c.U32());
    l.port = c.U32();
    std::span<const std::byte> a = c.Rest().first(16);
    std::memcpy(l.address.data(), a.data(), 16);
    c.Skip(16);
    if (*kept < out->size()) (*out)[(*kept)++] = l;
  }
  return ParseError::kOk;
}
}  // namespace

// §9.4.5.12 (INFO_REPLY: locator lists) and §9.4.5.13 (INFO_REPLY_IP4:
// address(4) port(4), optionally a multicast pair).
ParseError ParseInfoReply(const Submessage& sm, InfoReplySubmessage* out) {
  Cursor c(sm.body, sm.endian);
  bool multicast = sm.flags & flags::kInfoReplyMulticast;
  out->unicast_count = out->multicast_count = 0;
  if (sm.id == static_cast<uint8_t>(SubmessageId::kInfoReplyIp4)) {
    if (!c.Has(multicast ? 16 : 8)) return ParseError::kSubmessageTooShort;
    uint32_t addr = c.U32();
    uint32_t port = c.U32();
    out->unicast[0] = Locator::UdpV4(addr, static_cast<uint16_t>(port));
    out->unicast[0].port = port;
    out->unicast_count = 1;
    if (multicast) {
      addr = c.U32();
      port = c.U32();
      out->multicast[0] = Locator::UdpV4(addr, static_cast<uint16_t>(port));
      out->multicast[0].port = port;
      out->multicast_count = 1;
    }
    return ParseError::kOk;
  }
  if (ParseError e = ReadLocatorList(c, &out->unicast, &out->unicast_count);
      e != ParseError::kOk) {
    return e;
  }
  if (multicast) {
    return ReadLocatorList(c, &out->multicast, &out->multicast_count);
  }
  return ParseError::kOk;
}

// ---- MessageBuilder
// ---------------------------------------------------------------

MessageBuilder::MessageBuilder(std::span<std::byte> out,
                               const GuidPrefix& prefix, VendorId vendor)
    : out_(out), limit_(out.size()) {
  if (out.size() < kHeaderSize) {
    ok_ = false;
    return;
  }
  std::memcpy(out.data(), "RTPS", 4);
  ProtocolVersion v;
  out[4] = std::byte(v.major);
  out[5] = std::byte(v.minor);
  out[6] = std::byte(vendor.bytes[0]);
  out[7] = std::byte(vendor.bytes[1]);
  std::memcpy(out.data() + 8, prefix.bytes.data(), 12);
  pos_ = kHeaderSize;
}

size_t MessageBuilder::Begin(SubmessageId id, uint8_t fl, size_t body) {
  if (!ok_ || limit_ - pos_ < kSubmessageHeaderSize + body || body > 0xffff) {
    return SIZE_MAX;
  }
  size_t at = pos_;
  out_[pos_++] = std::byte(static_cast<uint8_t>(id));
  out_[pos_++] = std::byte(fl | flags::kEndianness);
  pos_ += 2;  // length patched by End()
  return at;
}

void MessageBuilder::End(size_t at) {
  size_t len = pos_ - at - kSubmessageHeaderSize;
  out_[at + 2] = std::byte(len & 0xff);
  out_[at + 3] = std::byte(len >> 8);
}

void MessageBuilder::U16(uint16_t v) {
  out_[pos_++] = std::byte(v & 0xff);
  out_[pos_++] = std::byte(v >> 8);
}
void MessageBuilder::U32(uint32_t v) {
  for (int i = 0; i < 4; ++i) out_[pos_++] = std::byte((v >> (8 * i)) & 0xff);
}
void MessageBuilder::Entity(EntityId e) {
  out_[pos_++] = std::byte(e.value >> 24);
  out_[pos_++] = std::byte((e.value >> 16) & 0xff);
  out_[pos_++] = std::byte((e.value >> 8) & 0xff);
  out_[pos_++] = std::byte(e.value & 0xff);
}
void MessageBuilder::Sn(SequenceNumber sn) {
  uint64_t u = static_cast<uint64_t>(sn);
  U32(static_cast<uint32_t>(u >> 32));
  U32(static_cast<uint32_t>(u));
}
void MessageBuilder::SnSet(const SequenceNumberSet& s) {
  Sn(s.base);
  U32(s.num_bits);
  for (uint32_t i = 0; i < (s.num_bits + 31) / 32; ++i) U32(s.bitmap[i]);
}
void MessageBuilder::Bytes(const void* p, size_t n) {
  if (n != 0) std::memcpy(out_.data() + pos_, p, n);
  pos_ += n;
}

size_t MessageBuilder::InlineQosSize(const InlineQos& qos) {
  size_t n = 4;  // sentinel
  if (qos.key_hash) n += 4 + 16;
  if (qos.status_info) n += 4 + 4;
  return n;
}

// §9.6.3.3 PID_KEY_HASH (16 octets), §9.6.3.9 PID_STATUS_INFO (4 octets,
// flags in the last byte: big-endian regardless of the list's byte order).
void MessageBuilder::InlineQosList(const InlineQos& qos) {
  if (qos.key_hash) {
    U16(pid::kKeyHash);
    U16(16);
    Bytes(qos.key_hash->bytes.data(), 16);
  }
  if (qos.status_info) {
    U16(pid::kStatusInfo);
    U16(4);
    uint32_t s = *qos.status_info;
    uint8_t b[4] = {static_cast<uint8_t>(s >> 24),
                    static_cast<uint8_t>(s >> 16), static_cast<uint8_t>(s >> 8),
                    static_cast<uint8_t>(s)};
    Bytes(b, 4);
  }
  U16(pid::kSentinel);
  U16(0);
}

bool MessageBuilder::AddInfoTs(int64_t ns) {
  size_t at = Begin(SubmessageId::kInfoTs, 0, 8);
  if (at == SIZE_MAX) return ok_ = false;
  RtpsTime t = RtpsTime::FromNanos(ns);
  U32(static_cast<uint32_t>(t.seconds));
  U32(t.fraction);
  End(at);
  return true;
}

bool MessageBuilder::AddInfoTsInvalidate() {
  size_t at = Begin(SubmessageId::kInfoTs, flags::kInfoTsInvalidate, 0);
  if (at == SIZE_MAX) return ok_ = false;
  End(at);
  return true;
}

bool MessageBuilder::AddInfoDst(const GuidPrefix& prefix) {
  size_t at = Begin(SubmessageId::kInfoDst, 0, 12);
  if (at == SIZE_MAX) return ok_ = false;
  Bytes(prefix.bytes.data(), 12);
  End(at);
  return true;
}

bool MessageBuilder::AddInfoSrc(const GuidPrefix& prefix, VendorId vendor) {
  size_t at = Begin(SubmessageId::kInfoSrc, 0, 20);
  if (at == SIZE_MAX) return ok_ = false;
  U32(0);
  ProtocolVersion v;
  uint8_t b[4] = {v.major, v.minor, vendor.bytes[0], vendor.bytes[1]};
  Bytes(b, 4);
  Bytes(prefix.bytes.data(), 12);
  End(at);
  return true;
}

bool MessageBuilder::AddPad(size_t body) {
  size_t at = Begin(SubmessageId::kPad, 0, body);
  if (at == SIZE_MAX) return ok_ = false;
  std::memset(out_.data() + pos_, 0, body);
  pos_ += body;
  End(at);
  return true;
}

size_t MessageBuilder::DataSize(size_t payload, const InlineQos* qos) {
  return kSubmessageHeaderSize + 20 + (qos ? InlineQosSize(*qos) : 0) +
         ((payload + 3) & ~size_t{3});
}

size_t MessageBuilder::DataFragOverhead(const InlineQos* qos) {
  return kSubmessageHeaderSize + 32 + (qos ? InlineQosSize(*qos) : 0);
}

// §9.4.5.3; the payload is padded to 4 so the next submessage is aligned
// (§9.4.1).
bool MessageBuilder::AddData(EntityId reader, EntityId writer,
                             SequenceNumber sn, const InlineQos* qos,
                             std::span<const std::byte> payload,
                             bool key_only) {
  size_t padded = (payload.size() + 3) & ~size_t{3};
  size_t body = 20 + (qos ? InlineQosSize(*qos) : 0) + padded;
  uint8_t fl = 0;
  if (qos) fl |= flags::kDataInlineQos;
  if (!payload.empty()) fl |= key_only ? flags::kDataKey : flags::kDataData;
  size_t at = Begin(SubmessageId::kData, fl, body);
  if (at == SIZE_MAX) return ok_ = false;
  U16(0);   // extraFlags
  U16(16);  // octetsToInlineQos: readerId + writerId + writerSN
  Entity(reader);
  Entity(writer);
  Sn(sn);
  if (qos) InlineQosList(*qos);
  Bytes(payload.data(), payload.size());
  for (size_t i = payload.size(); i < padded; ++i) out_[pos_++] = std::byte(0);
  End(at);
  return true;
}

bool MessageBuilder::AddDataFrag(EntityId reader, EntityId writer,
                                 SequenceNumber sn, uint32_t fragment_start,
                                 uint16_t fragments, uint16_t fragment_size,
                                 uint32_t sample_size, const InlineQos* qos,
                                 std::span<const std::byte> bytes) {
  size_t padded = (bytes.size() + 3) & ~size_t{3};
  size_t body = 32 + (qos ? InlineQosSize(*qos) : 0) + padded;
  uint8_t fl = qos ? flags::kDataFragInlineQos : 0;
  size_t at = Begin(SubmessageId::kDataFrag, fl, body);
  if (at == SIZE_MAX) return ok_ = false;
  U16(0);
  U16(28);
  Entity(reader);
  Entity(writer);
  Sn(sn);
  U32(fragment_start);
  U16(fragments);
  U16(fragment_size);
  U32(sample_size);
  if (qos) InlineQosList(*qos);
  Bytes(bytes.data(), bytes.size());
  for (size_t i = bytes.size(); i < padded; ++i) out_[pos_++] = std::byte(0);
  End(at);
  return true;
}

bool MessageBuilder::AddHeartbeat(EntityId reader, EntityId writer,
                                  SequenceNumber first, SequenceNumber last,
                                  uint32_t count, bool final_flag,
                                  bool liveliness) {
  uint8_t fl = (final_flag ? flags::kHeartbeatFinal : 0) |
               (liveliness ? flags::kHeartbeatLiveliness : 0);
  size_t at = Begin(SubmessageId::kHeartbeat, fl, 28);
  if (at == SIZE_MAX) return ok_ = false;
  Entity(reader);
  Entity(writer);
  Sn(first);
  Sn(last);
  U32(count);
  End(at);
  return true;
}

bool MessageBuilder::AddAckNack(EntityId reader, EntityId writer,
                                const SequenceNumberSet& state, uint32_t count,
                                bool final_flag) {
  size_t body = 8 + 12 + 4 * ((state.num_bits + 31) / 32) + 4;
  size_t at = Begin(SubmessageId::kAckNack,
                    final_flag ? flags::kAckNackFinal : 0, body);
  if (at == SIZE_MAX) return ok_ = false;
  Entity(reader);
  Entity(writer);
  SnSet(state);
  U32(count);
  End(at);
  return true;
}

bool MessageBuilder::AddGap(EntityId reader, EntityId writer,
                            SequenceNumber gap_start,
                            const SequenceNumberSet& list) {
  size_t body = 8 + 8 + 12 + 4 * ((list.num_bits + 31) / 32);
  size_t at = Begin(SubmessageId::kGap, 0, body);
  if (at == SIZE_MAX) return ok_ = false;
  Entity(reader);
  Entity(writer);
  Sn(gap_start);
  SnSet(list);
  End(at);
  return true;
}

bool MessageBuilder::AddNackFrag(EntityId reader, EntityId writer,
                                 SequenceNumber sn,
                                 const FragmentNumberSet& state,
                                 uint32_t count) {
  size_t body = 8 + 8 + 8 + 4 * ((state.num_bits + 31) / 32) + 4;
  size_t at = Begin(SubmessageId::kNackFrag, 0, body);
  if (at == SIZE_MAX) return ok_ = false;
  Entity(reader);
  Entity(writer);
  Sn(sn);
  U32(state.base);
  U32(state.num_bits);
  for (uint32_t i = 0; i < (state.num_bits + 31) / 32; ++i) {
    U32(state.bitmap[i]);
  }
  U32(count);
  End(at);
  return true;
}

bool MessageBuilder::AddHeartbeatFrag(EntityId reader, EntityId writer,
                                      SequenceNumber sn, uint32_t last_fragment,
                                      uint32_t count) {
  size_t at = Begin(SubmessageId::kHeartbeatFrag, 0, 24);
  if (at == SIZE_MAX) return ok_ = false;
  Entity(reader);
  Entity(writer);
  Sn(sn);
  U32(last_fragment);
  U32(count);
  End(at);
  return true;
}

bool MessageBuilder::AddInfoReply(std::span<const Locator> unicast,
                                  std::span<const Locator> multicast) {
  size_t body = 4 + 24 * unicast.size() +
                (multicast.empty() ? 0 : 4 + 24 * multicast.size());
  size_t at = Begin(SubmessageId::kInfoReply,
                    multicast.empty() ? 0 : flags::kInfoReplyMulticast, body);
  if (at == SIZE_MAX) return ok_ = false;
  auto list = [&](std::span<const Locator> ls) {
    U32(static_cast<uint32_t>(ls.size()));
    for (const Locator& l : ls) {
      U32(static_cast<uint32_t>(l.kind));
      U32(l.port);
      Bytes(l.address.data(), 16);
    }
  };
  list(unicast);
  if (!multicast.empty()) list(multicast);
  End(at);
  return true;
}

}  // namespace ringlab::rtps
