#include "udp/wire.h"

#include <cstring>

namespace ringlab::rudp::wire {

std::string_view ParseErrorName(ParseError error) {
  switch (error) {
    case ParseError::kOk:
      return "ok";
    case ParseError::kTruncated:
      return "truncated";
    case ParseError::kUnknownType:
      return "unknown_type";
    case ParseError::kBadVersion:
      return "bad_version";
    case ParseError::kBadToken:
      return "bad_token";
    case ParseError::kBadParams:
      return "bad_params";
    case ParseError::kTooManyRanges:
      return "too_many_ranges";
    case ParseError::kBadRange:
      return "bad_range";
    case ParseError::kBadMessageBounds:
      return "bad_message_bounds";
    case ParseError::kBadChannel:
      return "bad_channel";
    case ParseError::kCount:
      break;
  }
  return "?";
}

// --- Packet numbers
// ------------------------------------------------------------

int PacketNumberLength(uint64_t pn, std::optional<uint64_t> largest_acked) {
  // RFC 9000 §17.1 and Appendix A.2: count the packets the receiver may not
  // have seen, including this one; the window 2^bits must exceed twice that.
  const uint64_t unacked = largest_acked.has_value() && *largest_acked < pn
                               ? pn - *largest_acked
                               : pn + 1;
  return unacked < (uint64_t{1} << 15) ? 2 : 4;
}

uint64_t DecodePacketNumber(std::optional<uint64_t> largest_received,
                            uint64_t truncated, int length_bytes) {
  // RFC 9000 Appendix A.3, written without unsigned underflow.
  const uint64_t expected =
      largest_received.has_value() ? *largest_received + 1 : 0;
  const uint64_t window = uint64_t{1} << (length_bytes * 8);
  const uint64_t half_window = window / 2;
  const uint64_t mask = window - 1;
  const uint64_t candidate = (expected & ~mask) | (truncated & mask);
  if (candidate + half_window <= expected &&
      candidate < (uint64_t{1} << 62) - window) {
    return candidate + window;
  }
  if (candidate > expected + half_window && candidate >= window) {
    return candidate - window;
  }
  return candidate;
}

// --- Handshake packets
// -----------------------------------------------------------

namespace {

void WriteParams(Writer& w, const TransportParams& p) {
  w.Varint(p.max_data);
  w.Varint(p.max_ack_delay_us);
  w.Varint(p.idle_timeout_ms);
  w.Varint(p.max_message_bytes);
  w.Varint(p.initial_packet_number);
  w.U8(p.channel_count);
  for (int i = 0; i < p.channel_count && i < kMaxChannels; ++i) {
    w.U8(p.channel_types[i]);
  }
}

ParseError ReadParams(Reader& r, TransportParams* p) {
  uint64_t max_data, ack_delay, idle, max_message, initial_pn;
  uint8_t count;
  if (!r.Varint(&max_data) || !r.Varint(&ack_delay) || !r.Varint(&idle) ||
      !r.Varint(&max_message) || !r.Varint(&initial_pn) || !r.U8(&count)) {
    return ParseError::kTruncated;
  }
  // RFC 9000 §18.2: max_ack_delay values of 2^14 ms or more are invalid.
  if (ack_delay >= (uint64_t{1} << 14) * 1000 || idle > 0xffffffffu ||
      max_message > 0xffffffffu || count > kMaxChannels) {
    return ParseError::kBadParams;
  }
  p->max_data = max_data;
  p->max_ack_delay_us = uint32_t(ack_delay);
  p->idle_timeout_ms = uint32_t(idle);
  p->max_message_bytes = uint32_t(max_message);
  p->initial_packet_number = initial_pn;
  p->channel_count = count;
  for (int i = 0; i < count; ++i) {
    if (!r.U8(&p->channel_types[i])) return ParseError::kTruncated;
    if (p->channel_types[i] > 2) return ParseError::kBadParams;
  }
  return ParseError::kOk;
}

}  // namespace

ParseError ParseLongHeader(std::span<const std::byte> datagram,
                           LongHeader* out) {
  Reader r(datagram);
  uint8_t type;
  if (!r.U8(&type)) return ParseError::kTruncated;
  if (type < uint8_t(PacketType::kInitial) ||
      type > uint8_t(PacketType::kReject)) {
    return ParseError::kUnknownType;
  }
  out->type = PacketType(type);
  if (!r.U32(&out->version)) return ParseError::kTruncated;
  if (!r.U64(&out->client_cid)) return ParseError::kTruncated;
  if (out->version != kVersion) return ParseError::kBadVersion;
  out->token = {};
  switch (out->type) {
    case PacketType::kInitial:
    case PacketType::kRetry: {
      uint8_t token_length;
      if (!r.U8(&token_length)) return ParseError::kTruncated;
      if (token_length > kMaxTokenBytes) return ParseError::kBadToken;
      if (!r.Bytes(token_length, &out->token)) return ParseError::kTruncated;
      if (out->type == PacketType::kInitial) {
        // The rest after the parameters is padding; its content is ignored.
        return ReadParams(r, &out->params);
      }
      return ParseError::kOk;
    }
    case PacketType::kAccept:
      if (!r.U64(&out->server_cid)) return ParseError::kTruncated;
      return ReadParams(r, &out->params);
    case PacketType::kReject: {
      uint8_t reason;
      if (!r.U8(&reason)) return ParseError::kTruncated;
      out->reason = RejectReason(reason);
      return ParseError::kOk;
    }
    default:
      return ParseError::kUnknownType;
  }
}

size_t WriteLongHeader(const LongHeader& h, std::span<std::byte> out) {
  Writer w(out);
  w.U8(uint8_t(h.type));
  w.U32(h.version);
  w.U64(h.client_cid);
  switch (h.type) {
    case PacketType::kInitial:
    case PacketType::kRetry:
      if (h.token.size() > kMaxTokenBytes) return 0;
      w.U8(uint8_t(h.token.size()));
      w.Bytes(h.token);
      if (h.type == PacketType::kInitial) {
        WriteParams(w, h.params);
        if (w.ok() && w.size() < kMinInitialBytes) {
          w.Zeros(kMinInitialBytes - w.size());
        }
      }
      break;
    case PacketType::kAccept:
      w.U64(h.server_cid);
      WriteParams(w, h.params);
      break;
    case PacketType::kReject:
      w.U8(uint8_t(h.reason));
      break;
    default:
      return 0;
  }
  return w.ok() ? w.size() : 0;
}

// --- Short header
// ----------------------------------------------------------------

ParseError ParseShortHeader(Reader& r, ShortHeader* out) {
  uint8_t first;
  if (!r.U8(&first)) return ParseError::kTruncated;
  if ((first & 0xfe) != uint8_t(PacketType::kShort)) {
    return ParseError::kUnknownType;
  }
  out->pn_length = (first & 1) ? 4 : 2;
  if (!r.U64(&out->dcid)) return ParseError::kTruncated;
  if (out->pn_length == 2) {
    uint16_t pn;
    if (!r.U16(&pn)) return ParseError::kTruncated;
    out->truncated_pn = pn;
  } else {
    uint32_t pn;
    if (!r.U32(&pn)) return ParseError::kTruncated;
    out->truncated_pn = pn;
  }
  return ParseError::kOk;
}

void WriteShortHeader(Writer& w, uint64_t dcid, uint64_t pn, int pn_length) {
  w.U8(uint8_t(PacketType::kShort) | (pn_length == 4 ? 1 : 0));
  w.U64(dcid);
  if (pn_length == 4) {
    w.U32(uint32_t(pn));
  } else {
    w.U16(uint16_t(pn));
  }
}

// --- Range lists (RFC 9000 §19.3.1)
// ---------------------------------------------

RangeList::Iterator::Iterator(const RangeList& list)
    : reader_(list.encoded_rest),
      remaining_(list.range_count),
      next_high_(list.largest),
      first_range_(list.first_range) {}

bool RangeList::Iterator::Next(uint64_t* low, uint64_t* high) {
  if (done_) return false;
  if (first_) {
    first_ = false;
    *high = next_high_;
    *low = next_high_ - first_range_;
    next_high_ = *low;  // smallest so far
    return true;
  }
  uint64_t gap, length;
  if (remaining_ == 0 || !reader_.Varint(&gap) || !reader_.Varint(&length)) {
    done_ = true;
    return false;
  }
  --remaining_;
  // §19.3.1: the next range's largest is the previous smallest - gap - 2.
  *high = next_high_ - gap - 2;
  *low = *high - length;
  next_high_ = *low;
  return true;
}

namespace {

// Reads and checks a range list; §19.3.1 makes a range that would reach
// below 0 a FRAME_ENCODING_ERROR.
ParseError ReadRangeList(Reader& r, bool with_delay, RangeList* list,
                         uint64_t* delay) {
  if (!r.Varint(&list->largest)) return ParseError::kTruncated;
  if (with_delay && !r.Varint(delay)) return ParseError::kTruncated;
  if (!r.Varint(&list->range_count) || !r.Varint(&list->first_range)) {
    return ParseError::kTruncated;
  }
  if (list->range_count > kMaxParsedRanges) return ParseError::kTooManyRanges;
  if (list->first_range > list->largest) return ParseError::kBadRange;
  uint64_t smallest = list->largest - list->first_range;
  const size_t start = r.position();
  const std::span<const std::byte> rest = r.rest();
  for (uint64_t i = 0; i < list->range_count; ++i) {
    uint64_t gap, length;
    if (!r.Varint(&gap) || !r.Varint(&length)) return ParseError::kTruncated;
    // high = smallest - gap - 2 must be >= 0, and high - length >= 0.
    if (smallest < 2 || gap > smallest - 2) return ParseError::kBadRange;
    const uint64_t high = smallest - gap - 2;
    if (length > high) return ParseError::kBadRange;
    smallest = high - length;
  }
  list->encoded_rest = rest.first(r.position() - start);
  list->smallest = smallest;
  return ParseError::kOk;
}

size_t WriteRanges(Writer& w, std::span<const PacketRange> ranges,
                   bool with_delay, uint64_t delay, uint8_t type,
                   size_t max_bytes) {
  if (ranges.empty()) return 0;
  // Size the frame first so a truncated list is still a valid frame.
  const PacketRange& top = ranges[0];
  size_t size = 1 + VarintSize(top.high) +
                (with_delay ? VarintSize(delay) : 0) +
                VarintSize(top.high - top.low);
  size_t count = 1;
  size_t pairs = 0;
  for (size_t i = 1; i < ranges.size(); ++i) {
    const uint64_t gap = ranges[i - 1].low - ranges[i].high - 2;
    const uint64_t length = ranges[i].high - ranges[i].low;
    const size_t pair = VarintSize(gap) + VarintSize(length);
    if (size + VarintSize(count) + pairs + pair > max_bytes) break;
    pairs += pair;
    ++count;
  }
  size += VarintSize(count - 1) + pairs;
  if (size > max_bytes || size > w.remaining()) return 0;
  w.U8(type);
  w.Varint(top.high);
  if (with_delay) w.Varint(delay);
  w.Varint(count - 1);
  w.Varint(top.high - top.low);
  for (size_t i = 1; i < count; ++i) {
    w.Varint(ranges[i - 1].low - ranges[i].high - 2);
    w.Varint(ranges[i].high - ranges[i].low);
  }
  return w.ok() ? count : 0;
}

}  // namespace

size_t WriteAckFrame(Writer& w, std::span<const PacketRange> ranges,
                     uint64_t ack_delay_raw, size_t max_bytes) {
  return WriteRanges(w, ranges, true, ack_delay_raw, uint8_t(FrameType::kAck),
                     max_bytes);
}

size_t WriteNackFrame(Writer& w, std::span<const PacketRange> ranges,
                      size_t max_bytes) {
  return WriteRanges(w, ranges, false, 0, uint8_t(FrameType::kNack), max_bytes);
}

// --- Frames
// --------------------------------------------------------------------

ParseError ParseFrame(Reader& r, Frame* out) {
  uint8_t type;
  if (!r.U8(&type)) return ParseError::kTruncated;
  out->type = FrameType(type);
  switch (out->type) {
    case FrameType::kPadding: {
      // Swallow the whole run of padding as one frame.
      const std::span<const std::byte> rest = r.rest();
      size_t n = 0;
      while (n < rest.size() && rest[n] == std::byte{0}) ++n;
      r.Skip(n);
      return ParseError::kOk;
    }
    case FrameType::kPing:
      return ParseError::kOk;
    case FrameType::kAck:
      return ReadRangeList(r, true, &out->ranges, &out->ack_delay_raw);
    case FrameType::kNack:
      return ReadRangeList(r, false, &out->ranges, nullptr);
    case FrameType::kMaxData:
    case FrameType::kClose:
    case FrameType::kDataBlocked:
      return r.Varint(&out->value) ? ParseError::kOk : ParseError::kTruncated;
    case FrameType::kMessage: {
      uint64_t length;
      if (!r.U8(&out->channel) || !r.Varint(&out->message_id) ||
          !r.Varint(&out->message_length) || !r.Varint(&out->fragment_offset) ||
          !r.Varint(&out->data_offset) || !r.Varint(&length)) {
        return ParseError::kTruncated;
      }
      if (out->channel >= kMaxChannels) return ParseError::kBadChannel;
      // The fragment lies inside its message, the message starts at a
      // non-negative offset, and nothing overflows the 62-bit offset space.
      if (out->fragment_offset > out->message_length ||
          length > out->message_length - out->fragment_offset ||
          out->fragment_offset > out->data_offset ||
          out->message_length > kMaxVarint - out->data_offset) {
        return ParseError::kBadMessageBounds;
      }
      if (!r.Bytes(length, &out->data)) return ParseError::kTruncated;
      return ParseError::kOk;
    }
    case FrameType::kUnreliable: {
      uint64_t length;
      if (!r.U8(&out->channel) || !r.Varint(&out->message_id) ||
          !r.Varint(&length)) {
        return ParseError::kTruncated;
      }
      if (out->channel >= kMaxChannels) return ParseError::kBadChannel;
      if (!r.Bytes(length, &out->data)) return ParseError::kTruncated;
      out->message_length = length;
      return ParseError::kOk;
    }
  }
  return ParseError::kUnknownType;
}

size_t MessageFrameHeaderSize(uint64_t message_id, uint64_t message_length,
                              uint64_t fragment_offset, uint64_t data_offset,
                              uint64_t length) {
  return 2 + VarintSize(message_id) + VarintSize(message_length) +
         VarintSize(fragment_offset) + VarintSize(data_offset) +
         VarintSize(length);
}

void WriteMessageFrame(Writer& w, uint8_t channel, uint64_t message_id,
                       uint64_t message_length, uint64_t fragment_offset,
                       uint64_t data_offset, std::span<const std::byte> data) {
  WriteMessageFrame(w, channel, message_id, message_length, fragment_offset,
                    data_offset, data, {});
}

void WriteMessageFrame(Writer& w, uint8_t channel, uint64_t message_id,
                       uint64_t message_length, uint64_t fragment_offset,
                       uint64_t data_offset, std::span<const std::byte> first,
                       std::span<const std::byte> second) {
  w.U8(uint8_t(FrameType::kMessage));
  w.U8(channel);
  w.Varint(message_id);
  w.Varint(message_length);
  w.Varint(fragment_offset);
  w.Varint(data_offset);
  w.Varint(first.size() + second.size());
  w.Bytes(first);
  w.Bytes(second);
}

size_t UnreliableFrameHeaderSize(uint64_t sequence, uint64_t length) {
  return 2 + VarintSize(sequence) + VarintSize(length);
}

void WriteUnreliableFrame(Writer& w, uint8_t channel, uint64_t sequence,
                          std::span<const std::byte> data) {
  w.U8(uint8_t(FrameType::kUnreliable));
  w.U8(channel);
  w.Varint(sequence);
  w.Varint(data.size());
  w.Bytes(data);
}

}  // namespace ringlab::rudp::wire
