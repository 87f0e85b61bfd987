#include "udp/wire.h"

#include <array>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "transport/sim_network.h"

namespace ringlab::rudp::wire {
namespace {

std::vector<std::byte> Hex(std::initializer_list<int> bytes) {
  std::vector<std::byte> out;
  for (int b : bytes) out.push_back(std::byte(b));
  return out;
}

TEST(VarintTest, DecodesTheRfc9000Section16Examples) {
  // RFC 9000 §16 (and Appendix A.1): the example encodings.
  struct Case {
    std::vector<std::byte> bytes;
    uint64_t value;
  } cases[] = {
      {Hex({0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c}),
       151288809941952652ull},
      {Hex({0x9d, 0x7f, 0x3e, 0x7d}), 494878333},
      {Hex({0x7b, 0xbd}), 15293},
      {Hex({0x25}), 37},
      {Hex({0x40, 0x25}), 37},
  };
  for (const Case& c : cases) {
    Reader r(c.bytes);
    uint64_t v = 0;
    ASSERT_TRUE(r.Varint(&v));
    EXPECT_EQ(v, c.value);
    EXPECT_EQ(r.remaining(), 0u);
  }
}

TEST(VarintTest, RoundTripsAtEveryLengthBoundary) {
  const uint64_t values[] = {0,     63,         64,         16383,
                             16384, 1073741823, 1073741824, kMaxVarint};
  const size_t sizes[] = {1, 1, 2, 2, 4, 4, 8, 8};
  for (size_t i = 0; i < std::size(values); ++i) {
    std::array<std::byte, 8> buf{};
    Writer w(buf);
    w.Varint(values[i]);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(w.size(), sizes[i]);
    EXPECT_EQ(VarintSize(values[i]), sizes[i]);
    Reader r(w.written());
    uint64_t v = 0;
    ASSERT_TRUE(r.Varint(&v));
    EXPECT_EQ(v, values[i]);
  }
  std::array<std::byte, 8> buf{};
  Writer w(buf);
  w.Varint(kMaxVarint + 1);
  EXPECT_FALSE(w.ok());
  EXPECT_EQ(VarintSize(kMaxVarint + 1), 0u);
}

TEST(VarintTest, TruncatedInputFailsWithoutMoving) {
  const auto bytes = Hex({0x9d, 0x7f, 0x3e});  // a 4-byte varint, cut short
  Reader r(bytes);
  uint64_t v = 7;
  EXPECT_FALSE(r.Varint(&v));
  EXPECT_EQ(v, 7u);
  EXPECT_EQ(r.remaining(), 3u);
}

TEST(WriterTest, RefusesToOverrun) {
  std::array<std::byte, 3> buf{};
  Writer w(buf);
  w.U16(1);
  EXPECT_TRUE(w.ok());
  w.U16(2);
  EXPECT_FALSE(w.ok());
  EXPECT_EQ(w.remaining(), 0u);
}

TEST(PacketNumberTest, EncodingLengthFollowsAppendixA2) {
  // RFC 9000 Appendix A.2: with 0xabe8b3 acknowledged, 0xac5c02 needs 16
  // bits (rudp: 2 bytes) and 0xace8fe needs 24 (rudp: 4 bytes).
  EXPECT_EQ(PacketNumberLength(0xac5c02, 0xabe8b3), 2);
  EXPECT_EQ(PacketNumberLength(0xace8fe, 0xabe8b3), 4);
  EXPECT_EQ(PacketNumberLength(0, std::nullopt), 2);
  EXPECT_EQ(PacketNumberLength(32766, std::nullopt), 2);
  EXPECT_EQ(PacketNumberLength(32767, std::nullopt), 4);
  EXPECT_EQ(PacketNumberLength(100 + 32768, 100), 4);
  EXPECT_EQ(PacketNumberLength(100 + 32767, 100), 2);
}

TEST(PacketNumberTest, DecodesTheAppendixA3Example) {
  // RFC 9000 Appendix A.3: largest 0xa82f30ea, 16-bit 0x9b32 -> 0xa82f9b32.
  EXPECT_EQ(DecodePacketNumber(0xa82f30ea, 0x9b32, 2), 0xa82f9b32u);
  EXPECT_EQ(DecodePacketNumber(std::nullopt, 5, 2), 5u);
  // Just past a 16-bit wrap: expected 0x10000, truncated 0xffff is behind.
  EXPECT_EQ(DecodePacketNumber(0xffff, 0x0000, 2), 0x10000u);
  EXPECT_EQ(DecodePacketNumber(0x10002, 0xffff, 2), 0xffffu);
  // And a 32-bit one.
  EXPECT_EQ(DecodePacketNumber(0xfffffffeull, 0x00000001, 4), 0x100000001ull);
  EXPECT_EQ(DecodePacketNumber(0x100000001ull, 0xffffffff, 4), 0xffffffffull);
}

// The sender truncates each packet number against its view of the largest
// acknowledged packet at send time, the network reorders packets by up to
// 300 places, the receiver expands around its largest received, and the
// numbers cross 2^16 and 2^32: every number must come back exactly.
TEST(PacketNumberTest, RoundTripsAcrossTheWrapWithReordering) {
  struct InFlight {
    uint64_t pn;
    uint64_t truncated;
    int length;
  };
  for (const uint64_t start : {uint64_t{0xff00}, uint64_t{0xffffff00ull},
                               uint64_t{0x3fffffffff00ull}}) {
    transport::SimRandom random(start);
    // The handshake tells the receiver where the numbers start.
    std::optional<uint64_t> largest_received = start - 1;
    std::optional<uint64_t> largest_acked;
    std::vector<InFlight> network;
    uint64_t delivered = 0;
    bool crossed_2_bytes = false;
    for (uint64_t pn = start; pn < start + 200000; ++pn) {
      const int length = PacketNumberLength(pn, largest_acked);
      crossed_2_bytes |= length == 2 && (pn & 0xffff) == 0;
      network.push_back({pn, pn & ((uint64_t{1} << (8 * length)) - 1), length});
      // Deliver a random packet once 300 are in flight (reordering).
      while (network.size() > 300 ||
             (pn + 1 == start + 200000 && !network.empty())) {
        const size_t i = size_t(random.Uniform(network.size() - 1));
        const InFlight p = network[i];
        network[i] = network.back();
        network.pop_back();
        const uint64_t decoded =
            DecodePacketNumber(largest_received, p.truncated, p.length);
        ASSERT_EQ(decoded, p.pn) << "start " << start;
        ++delivered;
        if (!largest_received || decoded > *largest_received) {
          largest_received = decoded;
        }
      }
      // The receiver's acknowledgements reach the sender now and then, up
      // to 20000 packets behind.
      if (largest_received && random.Uniform(999) == 0) {
        const uint64_t lag = random.Uniform(20000);
        const uint64_t acked =
            *largest_received > start + lag ? *largest_received - lag : start;
        if (!largest_acked || acked > *largest_acked) largest_acked = acked;
      }
    }
    EXPECT_EQ(delivered, 200000u);
    EXPECT_TRUE(crossed_2_bytes) << "the 16-bit encoding never wrapped";
  }
}

TEST(LongHeaderTest, InitialIsPaddedAndRoundTrips) {
  const std::array<std::byte, 16> token = {std::byte{1}, std::byte{2}};
  LongHeader h;
  h.type = PacketType::kInitial;
  h.version = kVersion;
  h.client_cid = 0x1122334455667788ull;
  h.token = token;
  h.params.max_data = 1 << 21;
  h.params.max_ack_delay_us = 5000;
  h.params.idle_timeout_ms = 30000;
  h.params.max_message_bytes = 1 << 20;
  h.params.channel_count = 3;
  h.params.channel_types[1] = 1;
  h.params.channel_types[2] = 2;
  std::array<std::byte, 1500> buf{};
  const size_t n = WriteLongHeader(h, buf);
  ASSERT_EQ(n, kMinInitialBytes);
  LongHeader back;
  ASSERT_EQ(ParseLongHeader(std::span(buf.data(), n), &back), ParseError::kOk);
  EXPECT_EQ(back.type, PacketType::kInitial);
  EXPECT_EQ(back.client_cid, h.client_cid);
  ASSERT_EQ(back.token.size(), token.size());
  EXPECT_TRUE(std::equal(token.begin(), token.end(), back.token.begin()));
  EXPECT_EQ(back.params.max_data, h.params.max_data);
  EXPECT_EQ(back.params.max_ack_delay_us, 5000u);
  EXPECT_EQ(back.params.idle_timeout_ms, 30000u);
  EXPECT_EQ(back.params.max_message_bytes, 1u << 20);
  EXPECT_EQ(back.params.channel_count, 3);
  EXPECT_EQ(back.params.channel_types[2], 2);
  // An INITIAL needs room for its padding.
  std::array<std::byte, 600> small{};
  EXPECT_EQ(WriteLongHeader(h, small), 0u);
}

TEST(LongHeaderTest, RetryAcceptRejectRoundTrip) {
  std::array<std::byte, 1500> buf{};
  const std::array<std::byte, 16> token = {std::byte{9}};
  LongHeader retry;
  retry.type = PacketType::kRetry;
  retry.version = kVersion;
  retry.client_cid = 42;
  retry.token = token;
  size_t n = WriteLongHeader(retry, buf);
  EXPECT_EQ(n, 1u + 4 + 8 + 1 + 16);  // far below the 1200 that caused it
  LongHeader back;
  ASSERT_EQ(ParseLongHeader(std::span(buf.data(), n), &back), ParseError::kOk);
  EXPECT_EQ(back.type, PacketType::kRetry);
  EXPECT_EQ(back.token.size(), 16u);

  LongHeader accept;
  accept.type = PacketType::kAccept;
  accept.version = kVersion;
  accept.client_cid = 42;
  accept.server_cid = 77;
  accept.params.channel_count = 1;
  n = WriteLongHeader(accept, buf);
  ASSERT_GT(n, 0u);
  ASSERT_EQ(ParseLongHeader(std::span(buf.data(), n), &back), ParseError::kOk);
  EXPECT_EQ(back.server_cid, 77u);

  LongHeader reject;
  reject.type = PacketType::kReject;
  reject.version = kVersion;
  reject.client_cid = 42;
  reject.reason = RejectReason::kServerBusy;
  n = WriteLongHeader(reject, buf);
  ASSERT_EQ(ParseLongHeader(std::span(buf.data(), n), &back), ParseError::kOk);
  EXPECT_EQ(back.reason, RejectReason::kServerBusy);
}

TEST(LongHeaderTest, RejectsBadVersionTokenAndParams) {
  std::array<std::byte, 1500> buf{};
  LongHeader h;
  h.type = PacketType::kInitial;
  h.version = kVersion + 1;
  h.client_cid = 1;
  size_t n = WriteLongHeader(h, buf);
  LongHeader back;
  EXPECT_EQ(ParseLongHeader(std::span(buf.data(), n), &back),
            ParseError::kBadVersion);
  EXPECT_EQ(back.client_cid, 1u);  // still known, for the REJECT

  h.version = kVersion;
  n = WriteLongHeader(h, buf);
  buf[13] = std::byte{200};  // token length over kMaxTokenBytes
  EXPECT_EQ(ParseLongHeader(std::span(buf.data(), n), &back),
            ParseError::kBadToken);

  h.params.channel_count = 9;  // over kMaxChannels
  n = WriteLongHeader(h, buf);
  EXPECT_EQ(ParseLongHeader(std::span(buf.data(), n), &back),
            ParseError::kBadParams);

  buf[0] = std::byte{0x9f};
  EXPECT_EQ(ParseLongHeader(std::span(buf.data(), n), &back),
            ParseError::kUnknownType);
}

TEST(LongHeaderTest, EveryTruncationIsRejected) {
  std::array<std::byte, 1500> buf{};
  LongHeader h;
  h.type = PacketType::kAccept;
  h.version = kVersion;
  h.params.channel_count = 2;
  const size_t n = WriteLongHeader(h, buf);
  for (size_t cut = 0; cut < n; ++cut) {
    LongHeader back;
    EXPECT_NE(ParseLongHeader(std::span(buf.data(), cut), &back),
              ParseError::kOk)
        << cut;
  }
}

TEST(ShortHeaderTest, RoundTripsBothLengths) {
  for (int length : {2, 4}) {
    std::array<std::byte, 32> buf{};
    Writer w(buf);
    WriteShortHeader(w, 0xdeadbeefcafef00dull, 0x12345678, length);
    ASSERT_EQ(w.size(), size_t(1 + 8 + length));
    Reader r(w.written());
    ShortHeader h;
    ASSERT_EQ(ParseShortHeader(r, &h), ParseError::kOk);
    EXPECT_EQ(h.dcid, 0xdeadbeefcafef00dull);
    EXPECT_EQ(h.pn_length, length);
    EXPECT_EQ(h.truncated_pn, length == 2 ? 0x5678u : 0x12345678u);
  }
}

std::vector<PacketRange> ParseRanges(const Frame& f) {
  std::vector<PacketRange> out;
  auto it = f.ranges.ranges();
  uint64_t lo, hi;
  while (it.Next(&lo, &hi)) out.push_back({lo, hi});
  return out;
}

TEST(AckFrameTest, RangesRoundTrip) {
  const PacketRange ranges[] = {{90, 100}, {50, 80}, {10, 10}, {0, 5}};
  std::array<std::byte, 128> buf{};
  Writer w(buf);
  ASSERT_EQ(WriteAckFrame(w, ranges, 123, 128), 4u);
  Reader r(w.written());
  Frame f;
  ASSERT_EQ(ParseFrame(r, &f), ParseError::kOk);
  EXPECT_EQ(f.type, FrameType::kAck);
  EXPECT_EQ(f.ack_delay_raw, 123u);
  EXPECT_EQ(f.ranges.largest, 100u);
  EXPECT_EQ(f.ranges.smallest, 0u);
  const auto back = ParseRanges(f);
  ASSERT_EQ(back.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(back[i].low, ranges[i].low);
    EXPECT_EQ(back[i].high, ranges[i].high);
  }
}

TEST(AckFrameTest, TruncatesToTheBudgetButStaysValid) {
  std::vector<PacketRange> ranges;
  for (uint64_t i = 0; i < 100; ++i) {
    ranges.push_back({10000 - i * 10 - 5, 10000 - i * 10});
  }
  std::array<std::byte, 64> buf{};
  Writer w(buf);
  const size_t written = WriteAckFrame(w, ranges, 0, 20);
  ASSERT_GT(written, 0u);
  ASSERT_LT(written, ranges.size());
  EXPECT_LE(w.size(), 20u);
  Reader r(w.written());
  Frame f;
  ASSERT_EQ(ParseFrame(r, &f), ParseError::kOk);
  EXPECT_EQ(ParseRanges(f).size(), written);
}

TEST(AckFrameTest, RangesBelowZeroAreRejected) {
  // §19.3.1: a range reaching below packet number 0 is an encoding error.
  std::array<std::byte, 64> buf{};
  {
    Writer w(buf);
    w.U8(uint8_t(FrameType::kAck));
    w.Varint(5);  // largest
    w.Varint(0);  // delay
    w.Varint(0);  // range count
    w.Varint(6);  // first range: would reach -1
    Reader r(w.written());
    Frame f;
    EXPECT_EQ(ParseFrame(r, &f), ParseError::kBadRange);
  }
  {
    Writer w(buf);
    w.U8(uint8_t(FrameType::kAck));
    w.Varint(kMaxVarint);
    w.Varint(0);
    w.Varint(1);
    w.Varint(0);
    w.Varint(kMaxVarint);  // gap beyond everything
    w.Varint(0);
    Reader r(w.written());
    Frame f;
    EXPECT_EQ(ParseFrame(r, &f), ParseError::kBadRange);
  }
  {
    Writer w(buf);
    w.U8(uint8_t(FrameType::kNack));
    w.Varint(100);
    w.Varint(kMaxParsedRanges + 1);
    w.Varint(0);
    Reader r(w.written());
    Frame f;
    EXPECT_EQ(ParseFrame(r, &f), ParseError::kTooManyRanges);
  }
}

TEST(MessageFrameTest, RoundTripsAndChecksBounds) {
  const std::array<std::byte, 5> data = {
      std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}, std::byte{5}};
  std::array<std::byte, 64> buf{};
  Writer w(buf);
  WriteMessageFrame(w, 1, 7, 1000, 128, 4096 + 128, std::span(data).first(2),
                    std::span(data).subspan(2));
  EXPECT_EQ(w.size(), MessageFrameHeaderSize(7, 1000, 128, 4096 + 128, 5) + 5);
  Reader r(w.written());
  Frame f;
  ASSERT_EQ(ParseFrame(r, &f), ParseError::kOk);
  EXPECT_EQ(f.channel, 1);
  EXPECT_EQ(f.message_id, 7u);
  EXPECT_EQ(f.message_length, 1000u);
  EXPECT_EQ(f.fragment_offset, 128u);
  EXPECT_EQ(f.data_offset, 4096u + 128);
  ASSERT_EQ(f.data.size(), 5u);
  EXPECT_EQ(f.data[4], std::byte{5});

  auto parse = [&](uint64_t length, uint64_t frag, uint64_t offset, size_t n) {
    std::array<std::byte, 64> b{};
    Writer w2(b);
    WriteMessageFrame(w2, 0, 0, length, frag, offset, std::span(data).first(n));
    Reader r2(w2.written());
    Frame f2;
    return ParseFrame(r2, &f2);
  };
  EXPECT_EQ(parse(4, 0, 0, 5), ParseError::kBadMessageBounds);   // overruns
  EXPECT_EQ(parse(10, 8, 0, 1), ParseError::kBadMessageBounds);  // start < 0
  EXPECT_EQ(parse(kMaxVarint, 0, 8, 1), ParseError::kBadMessageBounds);
  EXPECT_EQ(parse(uint64_t{4} << 30, 0, 0, 5), ParseError::kOk);  // 4 GiB:
  // syntactically fine; the connection refuses it (max_message_bytes).
}

TEST(FrameTest, EveryTruncationOfEveryFrameIsRejected) {
  std::array<std::byte, 256> buf{};
  Writer w(buf);
  const PacketRange ranges[] = {{90, 100}, {50, 80}};
  WriteAckFrame(w, ranges, 5, 100);
  const size_t ack_end = w.size();
  WriteNackFrame(w, ranges, 100);
  const size_t nack_end = w.size();
  const std::array<std::byte, 3> data{};
  WriteMessageFrame(w, 0, 1, 3, 0, 64, data);
  const size_t msg_end = w.size();
  WriteUnreliableFrame(w, 2, 9, data);
  const size_t unrel_end = w.size();
  w.U8(uint8_t(FrameType::kMaxData));
  w.Varint(1 << 20);
  const size_t max_end = w.size();
  const size_t starts[] = {0, ack_end, nack_end, msg_end, unrel_end};
  const size_t ends[] = {ack_end, nack_end, msg_end, unrel_end, max_end};
  for (size_t i = 0; i < std::size(starts); ++i) {
    Frame f;
    Reader whole(std::span(buf.data() + starts[i], ends[i] - starts[i]));
    ASSERT_EQ(ParseFrame(whole, &f), ParseError::kOk) << i;
    EXPECT_EQ(whole.remaining(), 0u);
    for (size_t cut = 1; cut < ends[i] - starts[i]; ++cut) {
      Reader r(std::span(buf.data() + starts[i], cut));
      EXPECT_EQ(ParseFrame(r, &f), ParseError::kTruncated) << i << " " << cut;
    }
  }
  const std::byte unknown[] = {std::byte{0x3f}};
  Reader r(unknown);
  Frame f;
  EXPECT_EQ(ParseFrame(r, &f), ParseError::kUnknownType);
}

TEST(FrameTest, PaddingRunIsOneFrame) {
  std::array<std::byte, 40> buf{};
  buf[30] = std::byte(FrameType::kPing);
  Reader r(std::span(buf.data(), 31));
  Frame f;
  ASSERT_EQ(ParseFrame(r, &f), ParseError::kOk);
  EXPECT_EQ(f.type, FrameType::kPadding);
  ASSERT_EQ(ParseFrame(r, &f), ParseError::kOk);
  EXPECT_EQ(f.type, FrameType::kPing);
  EXPECT_EQ(r.remaining(), 0u);
}

}  // namespace
}  // namespace ringlab::rudp::wire
