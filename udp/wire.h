// The rudp wire format: byte cursors, QUIC variable-length integers, packet
// number truncation, and the packet and frame codec.
//
// rudp borrows QUIC's encodings where QUIC solved the same problem (RFC 9000:
// §16 varints, §17.1 and Appendix A packet numbers, §19.3 ACK ranges, §19.9
// MAX_DATA) but is not QUIC: there is no encryption and the frames are its
// own. One datagram carries one packet.
//
//   Long header (handshake), first byte has the high bit set:
//     type u8 (0x80 INITIAL, 0x81 RETRY, 0x82 ACCEPT, 0x83 REJECT)
//     version u32
//     INITIAL: client_cid u64, token_len u8, token, params, zero padding
//              (the whole datagram is at least kMinInitialBytes)
//     RETRY:   client_cid u64, token_len u8, token
//     ACCEPT:  client_cid u64, server_cid u64, params
//     REJECT:  client_cid u64, reason u8
//   Short header (everything after the handshake):
//     0x40 | (pn_length == 4), dcid u64, packet number (2 or 4 bytes), frames
//
// Frames (type byte, then fields; "v" is a varint):
//   0x00 PADDING
//   0x01 PING                      ack-eliciting, answered at once
//   0x02 ACK   largest v, delay v (µs >> kAckDelayExponent), range_count v,
//              first_range v, (gap v, length v) * range_count
//   0x03 NACK  same range list without delay: packet numbers seen missing
//   0x04 MAX_DATA limit v
//   0x05 CLOSE code v
//   0x06 MESSAGE channel u8, message_id v, message_length v,
//              fragment_offset v, data_offset v, length v, data
//   0x07 UNRELIABLE channel u8, sequence v, length v, data
//   0x08 DATA_BLOCKED limit v
//
// Parsing validates before anything is handled: ParseFrame() checks syntax
// and arithmetic (ranges that would run below packet number 0, fragments
// that overrun their message, offsets past 2^62), so a caller can parse a
// whole packet first and act only when every frame is well formed. Limits
// that depend on state (window, message size) are the connection's job.
//
// Memory: Reader/Writer and the parsed views borrow the caller's bytes.
// Nothing here allocates. Thread-safety: none needed (no shared state).
//
//   wire::Writer w(out);
//   wire::WriteShortHeader(w, dcid, pn, wire::PacketNumberLength(pn, acked));
//   w.U8(uint8_t(wire::FrameType::kPing));
//   if (!w.ok()) { /* out too small */ }
//
//   wire::Reader r(datagram);
//   wire::ShortHeader h;
//   if (wire::ParseShortHeader(r, &h) != wire::ParseError::kOk) drop();
//   wire::Frame f;
//   while (r.remaining() > 0) {
//     if (wire::ParseFrame(r, &f) != wire::ParseError::kOk) drop();
//   }
#ifndef RINGLAB_UDP_WIRE_H_
#define RINGLAB_UDP_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

namespace ringlab::rudp::wire {

inline constexpr uint32_t kVersion = 0x524c5501;  // "RLU" 1
// RFC 9000 §16: varints carry 62 bits.
inline constexpr uint64_t kMaxVarint = (uint64_t{1} << 62) - 1;
// RFC 9000 §14.1: a client's first datagram is padded to 1200 bytes, so the
// server's stateless reply is never larger than what it received (§8.1).
inline constexpr size_t kMinInitialBytes = 1200;
// RFC 9000 §18.2: ack_delay is sent in units of 2^3 µs by default.
inline constexpr int kAckDelayExponent = 3;
inline constexpr size_t kMaxTokenBytes = 64;
inline constexpr size_t kShortHeaderMaxBytes = 1 + 8 + 4;
// Parse limits: a packet with more ranges than this in one ACK or NACK is
// dropped. Far more than rudp ever sends (see AckTracker::kMaxRanges).
inline constexpr uint64_t kMaxParsedRanges = 256;
inline constexpr int kMaxChannels = 8;

enum class PacketType : uint8_t {
  kInitial = 0x80,
  kRetry = 0x81,
  kAccept = 0x82,
  kReject = 0x83,
  kShort = 0x40,  // low bit: 4-byte packet number
};

enum class FrameType : uint8_t {
  kPadding = 0x00,
  kPing = 0x01,
  kAck = 0x02,
  kNack = 0x03,
  kMaxData = 0x04,
  kClose = 0x05,
  kMessage = 0x06,
  kUnreliable = 0x07,
  kDataBlocked = 0x08,
};

enum class RejectReason : uint8_t {
  kServerBusy = 1,
  kVersion = 2,
  kChannelMismatch = 3,
};

// Why a packet or frame failed to parse. Each has a drop counter.
enum class ParseError : uint8_t {
  kOk = 0,
  kTruncated,         // ran out of bytes mid-field
  kUnknownType,       // packet or frame type not defined above
  kBadVersion,        // long header with another version
  kBadToken,          // token longer than kMaxTokenBytes
  kBadParams,         // transport parameters out of range
  kTooManyRanges,     // ACK/NACK range_count > kMaxParsedRanges
  kBadRange,          // a range would run below packet number 0
  kBadMessageBounds,  // fragment outside its message, or offset overflow
  kBadChannel,        // channel >= kMaxChannels
  kCount,             // number of values (for counter arrays)
};
std::string_view ParseErrorName(ParseError error);

// --- Cursors -----------------------------------------------------------------

// Appends into a fixed span. Writes past the end are refused and make ok()
// false; size() then is meaningless.
class Writer {
 public:
  explicit Writer(std::span<std::byte> out) : out_(out) {}
  void U8(uint8_t v);
  void U16(uint16_t v);  // big endian, like every fixed field here
  void U32(uint32_t v);
  void U64(uint64_t v);
  void Varint(uint64_t v);  // RFC 9000 §16; v > kMaxVarint fails
  void Bytes(std::span<const std::byte> bytes);
  void Zeros(size_t n);
  size_t size() const { return pos_; }
  size_t remaining() const { return ok_ ? out_.size() - pos_ : 0; }
  bool ok() const { return ok_; }
  std::span<std::byte> written() const { return out_.first(pos_); }

 private:
  bool Reserve(size_t n);
  std::span<std::byte> out_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Reads from a span; every getter returns false (and leaves the cursor where
// it was) when the bytes run out.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  bool U8(uint8_t* v);
  bool U16(uint16_t* v);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  bool Varint(uint64_t* v);
  bool Bytes(size_t n, std::span<const std::byte>* out);
  bool Skip(size_t n);
  size_t remaining() const { return in_.size() - pos_; }
  size_t position() const { return pos_; }
  std::span<const std::byte> rest() const { return in_.subspan(pos_); }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
};

// Bytes the RFC 9000 §16 encoding of `v` takes (1, 2, 4 or 8); 0 if v is
// beyond kMaxVarint.
inline size_t VarintSize(uint64_t v);

// Inline: every field of every packet goes through these.
// --- Writer
// --------------------------------------------------------------------

inline bool Writer::Reserve(size_t n) {
  if (!ok_ || out_.size() - pos_ < n) {
    ok_ = false;
    return false;
  }
  return true;
}

inline void Writer::U8(uint8_t v) {
  if (!Reserve(1)) return;
  out_[pos_++] = std::byte{v};
}

inline void Writer::U16(uint16_t v) {
  if (!Reserve(2)) return;
  out_[pos_++] = std::byte(v >> 8);
  out_[pos_++] = std::byte(v);
}

inline void Writer::U32(uint32_t v) {
  if (!Reserve(4)) return;
  for (int shift = 24; shift >= 0; shift -= 8) {
    out_[pos_++] = std::byte(v >> shift);
  }
}

inline void Writer::U64(uint64_t v) {
  if (!Reserve(8)) return;
  for (int shift = 56; shift >= 0; shift -= 8) {
    out_[pos_++] = std::byte(v >> shift);
  }
}

// RFC 9000 §16: the two most significant bits of the first byte give the
// length (00: 1, 01: 2, 10: 4, 11: 8 bytes), the rest is the value in
// network byte order.
inline void Writer::Varint(uint64_t v) {
  switch (VarintSize(v)) {
    case 1:
      U8(uint8_t(v));
      return;
    case 2:
      U16(uint16_t(v | 0x4000));
      return;
    case 4:
      U32(uint32_t(v | 0x80000000u));
      return;
    case 8:
      U64(v | 0xc000000000000000ull);
      return;
    default:
      ok_ = false;
  }
}

inline void Writer::Bytes(std::span<const std::byte> bytes) {
  if (bytes.empty() || !Reserve(bytes.size())) return;
  std::memcpy(out_.data() + pos_, bytes.data(), bytes.size());
  pos_ += bytes.size();
}

inline void Writer::Zeros(size_t n) {
  if (n == 0 || !Reserve(n)) return;
  std::memset(out_.data() + pos_, 0, n);
  pos_ += n;
}

inline size_t VarintSize(uint64_t v) {
  if (v < (1u << 6)) return 1;
  if (v < (1u << 14)) return 2;
  if (v < (1u << 30)) return 4;
  if (v <= kMaxVarint) return 8;
  return 0;
}

// --- Reader
// --------------------------------------------------------------------

inline bool Reader::U8(uint8_t* v) {
  if (remaining() < 1) return false;
  *v = uint8_t(in_[pos_++]);
  return true;
}

inline bool Reader::U16(uint16_t* v) {
  if (remaining() < 2) return false;
  *v = uint16_t(uint16_t(in_[pos_]) << 8 | uint16_t(in_[pos_ + 1]));
  pos_ += 2;
  return true;
}

inline bool Reader::U32(uint32_t* v) {
  if (remaining() < 4) return false;
  uint32_t x = 0;
  for (int i = 0; i < 4; ++i) x = x << 8 | uint32_t(in_[pos_ + i]);
  pos_ += 4;
  *v = x;
  return true;
}

inline bool Reader::U64(uint64_t* v) {
  if (remaining() < 8) return false;
  uint64_t x = 0;
  for (int i = 0; i < 8; ++i) x = x << 8 | uint64_t(in_[pos_ + i]);
  pos_ += 8;
  *v = x;
  return true;
}

inline bool Reader::Varint(uint64_t* v) {
  if (remaining() < 1) return false;
  const size_t length = size_t{1} << (uint8_t(in_[pos_]) >> 6);
  if (remaining() < length) return false;
  uint64_t x = uint8_t(in_[pos_]) & 0x3f;
  for (size_t i = 1; i < length; ++i) x = x << 8 | uint64_t(in_[pos_ + i]);
  pos_ += length;
  *v = x;
  return true;
}

inline bool Reader::Bytes(size_t n, std::span<const std::byte>* out) {
  if (remaining() < n) return false;
  *out = in_.subspan(pos_, n);
  pos_ += n;
  return true;
}

inline bool Reader::Skip(size_t n) {
  if (remaining() < n) return false;
  pos_ += n;
  return true;
}

// --- Packet numbers (RFC 9000 §17.1, Appendix A) -----------------------------

// The truncated length (2 or 4 bytes) for sending `pn` when the peer has
// acknowledged up to `largest_acked` (nullopt: nothing yet). §17.1: the
// encoding must represent more than twice the distance to the largest
// acknowledged packet. rudp never uses 1 or 3 bytes.
int PacketNumberLength(uint64_t pn, std::optional<uint64_t> largest_acked);
// Appendix A.3: the 64-bit packet number closest to largest_received + 1
// whose low `length_bytes * 8` bits are `truncated`.
uint64_t DecodePacketNumber(std::optional<uint64_t> largest_received,
                            uint64_t truncated, int length_bytes);

// --- Handshake packets -------------------------------------------------------

// What each side announces in INITIAL (client) and ACCEPT (server).
struct TransportParams {
  uint64_t max_data = 0;          // initial receive window in data-offset bytes
  uint32_t max_ack_delay_us = 0;  // RFC 9000 §18.2 max_ack_delay
  uint32_t idle_timeout_ms = 0;   // §10.1: each side uses the minimum
  uint32_t max_message_bytes = 0;
  // The first packet number this side sends: the peer expands truncated
  // numbers around it until the first packet arrives (Appendix A.3 needs
  // a reference point).
  uint64_t initial_packet_number = 0;
  uint8_t channel_count = 0;
  uint8_t channel_types[kMaxChannels] = {};
};

struct LongHeader {
  PacketType type = PacketType::kInitial;
  uint32_t version = 0;
  uint64_t client_cid = 0;
  uint64_t server_cid = 0;                // ACCEPT
  std::span<const std::byte> token;       // INITIAL, RETRY
  TransportParams params;                 // INITIAL, ACCEPT
  RejectReason reason = RejectReason{0};  // REJECT
};

// True if the first byte announces a long (handshake) header.
inline bool IsLongHeader(std::span<const std::byte> datagram) {
  return !datagram.empty() && (uint8_t(datagram[0]) & 0x80) != 0;
}

// Parses a whole handshake datagram. A version other than kVersion is
// kBadVersion after the version field (the caller may answer with REJECT).
ParseError ParseLongHeader(std::span<const std::byte> datagram,
                           LongHeader* out);
// Writes a handshake packet; INITIAL is padded to kMinInitialBytes (so `out`
// must hold that much). Returns the size, or 0 if `out` is too small.
size_t WriteLongHeader(const LongHeader& header, std::span<std::byte> out);

// --- Short header ------------------------------------------------------------

struct ShortHeader {
  uint64_t dcid = 0;
  uint64_t truncated_pn = 0;
  int pn_length = 2;
};
ParseError ParseShortHeader(Reader& r, ShortHeader* out);
void WriteShortHeader(Writer& w, uint64_t dcid, uint64_t pn, int pn_length);

// --- Frames
// --------------------------------------------------------------------

// A decoded ACK or NACK range list. Ranges come out highest first as
// inclusive [low, high] packet numbers. ParseFrame() already walked the list,
// so iterating a parsed frame cannot fail.
struct RangeList {
  uint64_t largest = 0;
  uint64_t range_count = 0;  // additional ranges after the first
  uint64_t first_range = 0;
  std::span<const std::byte> encoded_rest;  // (gap, length) pairs

  class Iterator {
   public:
    explicit Iterator(const RangeList& list);
    // The next range; false at the end.
    bool Next(uint64_t* low, uint64_t* high);

   private:
    Reader reader_;
    uint64_t remaining_;
    uint64_t next_high_;
    bool first_ = true;
    bool done_ = false;
    uint64_t first_range_;
  };
  Iterator ranges() const { return Iterator(*this); }
  // The lowest packet number the list covers.
  uint64_t smallest = 0;
};

struct Frame {
  FrameType type = FrameType::kPadding;
  // ACK / NACK
  RangeList ranges;
  uint64_t ack_delay_raw = 0;  // ACK: µs >> kAckDelayExponent
  // MAX_DATA / DATA_BLOCKED limit, CLOSE code
  uint64_t value = 0;
  // MESSAGE / UNRELIABLE
  uint8_t channel = 0;
  uint64_t message_id = 0;  // UNRELIABLE: sequence
  uint64_t message_length = 0;
  uint64_t fragment_offset = 0;
  uint64_t data_offset = 0;
  std::span<const std::byte> data;
};

// Parses one frame at the reader's position. A run of PADDING is one frame.
ParseError ParseFrame(Reader& r, Frame* out);

// Writes a range list: `ranges` are inclusive [low, high] pairs, highest
// first, disjoint and not adjacent. Writes as many as fit in
// `max_bytes` (at least the first); returns how many were written, 0 if not
// even the first fits.
struct PacketRange {
  uint64_t low;
  uint64_t high;
};
size_t WriteAckFrame(Writer& w, std::span<const PacketRange> ranges,
                     uint64_t ack_delay_raw, size_t max_bytes);
size_t WriteNackFrame(Writer& w, std::span<const PacketRange> ranges,
                      size_t max_bytes);
// The MESSAGE frame header size for these fields (without the data).
size_t MessageFrameHeaderSize(uint64_t message_id, uint64_t message_length,
                              uint64_t fragment_offset, uint64_t data_offset,
                              uint64_t length);
void WriteMessageFrame(Writer& w, uint8_t channel, uint64_t message_id,
                       uint64_t message_length, uint64_t fragment_offset,
                       uint64_t data_offset, std::span<const std::byte> data);
// MESSAGE data may arrive in two pieces (a ring buffer that wraps).
void WriteMessageFrame(Writer& w, uint8_t channel, uint64_t message_id,
                       uint64_t message_length, uint64_t fragment_offset,
                       uint64_t data_offset, std::span<const std::byte> first,
                       std::span<const std::byte> second);
size_t UnreliableFrameHeaderSize(uint64_t sequence, uint64_t length);
void WriteUnreliableFrame(Writer& w, uint8_t channel, uint64_t sequence,
                          std::span<const std::byte> data);

}  // namespace ringlab::rudp::wire

#endif  // RINGLAB_UDP_WIRE_H_
