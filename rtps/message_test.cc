// RTPS 2.5 message parsing and building: hand-written messages in both byte
// orders (§9.4), and every malformation the parser must reject.
#include "rtps/message.h"

#include <gtest/gtest.h>

#include <vector>

#include "rtps/parameter_list.h"

namespace ringlab::rtps {
namespace {

std::vector<std::byte> B(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int x : v) out.push_back(std::byte(x));
  return out;
}

std::vector<std::byte> Header() {
  return B({'R', 'T', 'P', 'S', 2, 5, 0x01, 0x10, 1,  2,
            3,   4,   5,   6,   7, 8, 9,    10,   11, 12});
}

std::vector<std::byte> Cat(std::vector<std::byte> a,
                           const std::vector<std::byte>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// One submessage parsed out of header + `sub`.
bool ParseOne(const std::vector<std::byte>& msg, Submessage* sm) {
  SubmessageIterator it(msg);
  return it.Next(sm);
}

TEST(MessageTest, Header) {
  MessageHeader h;
  auto m = Header();
  ASSERT_EQ(ParseHeader(m, &h), ParseError::kOk);
  EXPECT_EQ(h.version.major, 2);
  EXPECT_EQ(h.vendor, kVendorEclipseCyclone);
  EXPECT_EQ(h.prefix.bytes[11], 12);
  auto bad = m;
  bad[0] = std::byte{'X'};
  EXPECT_EQ(ParseHeader(bad, &h), ParseError::kBadMagic);
  bad = m;
  bad[4] = std::byte{3};
  EXPECT_EQ(ParseHeader(bad, &h), ParseError::kUnsupportedVersion);
  EXPECT_EQ(ParseHeader(std::span(m).first(19), &h),
            ParseError::kHeaderTooShort);
}

// §9.4.5.3 DATA, little endian, with inline QoS (key hash) and a payload.
TEST(MessageTest, DataLittleEndianWithInlineQos) {
  auto msg =
      Cat(Header(), B({0x15, 0x07, 0,    0,     // DATA, E|Q|D, length below
                       0,    0,    16,   0,     // extraFlags, octetsToInlineQos
                       0,    0,    0x12, 0x07,  // readerId
                       0,    0,    0x01, 0x02,  // writerId
                       0,    0,    0,    0,    5,  0, 0, 0,  // writerSN = 5
                       0x70, 0,    16,   0,                  // PID_KEY_HASH
                       1,    2,    3,    4,    5,  6, 7, 8, 9, 10, 11,
                       12,   13,   14,   15,   16, 1, 0, 0, 0,  // PID_SENTINEL
                       0x00, 0x01, 0x00, 0x00}));  // payload: CDR_LE header
  // 4 + 16 (ids, SN) + 24 (inline QoS) + 4 (payload) = 48.
  msg[kHeaderSize + 2] = std::byte{48};
  Submessage sm;
  ASSERT_TRUE(ParseOne(msg, &sm));
  DataSubmessage d;
  ASSERT_EQ(ParseData(sm, &d), ParseError::kOk);
  EXPECT_EQ(d.reader_id.value, 0x00001207u);
  EXPECT_EQ(d.writer_id.value, 0x00000102u);
  EXPECT_EQ(d.sn, 5);
  EXPECT_TRUE(d.has_inline_qos);
  EXPECT_TRUE(d.has_data);
  EXPECT_EQ(d.payload.size(), 4u);
  EXPECT_EQ(d.inline_qos.size(), 24u);
}

// The same DATA in big endian: SN high/low and lengths swap, entity ids
// (octet arrays) do not.
TEST(MessageTest, DataBigEndian) {
  auto msg =
      Cat(Header(),
          B({0x15, 0x04, 0,    24,   0, 0, 0, 16, 0, 0, 0, 0,
             0,    0,    0x01, 0x02, 0, 0, 0, 1,  0, 0, 0, 7,  // SN = 2^32 + 7
             0x00, 0x00, 0x00, 0x00}));  // payload CDR_BE header
  Submessage sm;
  ASSERT_TRUE(ParseOne(msg, &sm));
  DataSubmessage d;
  ASSERT_EQ(ParseData(sm, &d), ParseError::kOk);
  EXPECT_EQ(d.sn, (int64_t{1} << 32) + 7);
  EXPECT_EQ(d.writer_id.value, 0x00000102u);
  EXPECT_EQ(d.payload.size(), 4u);
}

TEST(MessageTest, RejectsMalformedData) {
  // SN 0 is invalid (§8.3.7.2.3).
  auto msg = Cat(Header(), B({0x15, 0x05, 20, 0, 0, 0, 16, 0, 0, 0, 0, 0,
                              0,    0,    1,  2, 0, 0, 0,  0, 0, 0, 0, 0}));
  Submessage sm;
  ASSERT_TRUE(ParseOne(msg, &sm));
  DataSubmessage d;
  EXPECT_EQ(ParseData(sm, &d), ParseError::kBadSequenceNumber);
  // Truncated: 12 bytes where DATA needs 20.
  msg = Cat(Header(),
            B({0x15, 0x05, 12, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 1, 2}));
  ASSERT_TRUE(ParseOne(msg, &sm));
  EXPECT_EQ(ParseData(sm, &d), ParseError::kSubmessageTooShort);
  // Q flag but the parameter list has no sentinel.
  msg = Cat(Header(),
            B({0x15, 0x03, 28, 0, 0, 0, 16, 0, 0,    0, 0, 0, 0,    0, 1, 2,
               0,    0,    0,  0, 1, 0, 0,  0, 0x70, 0, 0, 0, 0x71, 0, 0, 0}));
  ASSERT_TRUE(ParseOne(msg, &sm));
  EXPECT_EQ(ParseData(sm, &d), ParseError::kBadInlineQos);
}

TEST(MessageTest, LengthPastEndAndTruncatedHeader) {
  auto msg = Cat(Header(), B({0x07, 0x01, 100, 0, 0, 0, 0, 0}));
  SubmessageIterator it(msg);
  Submessage sm;
  EXPECT_FALSE(it.Next(&sm));
  EXPECT_EQ(it.error(), ParseError::kLengthPastEnd);
  msg = Cat(Header(), B({0x07, 0x01}));
  SubmessageIterator it2(msg);
  EXPECT_FALSE(it2.Next(&sm));
  EXPECT_EQ(it2.error(), ParseError::kSubmessageHeaderTruncated);
  // octetsToNextHeader == 0 on a non-PAD submessage: it runs to the end.
  msg = Cat(Header(),
            B({0x0e, 0x01, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  SubmessageIterator it3(msg);
  ASSERT_TRUE(it3.Next(&sm));
  EXPECT_EQ(sm.body.size(), 12u);
  InfoDstSubmessage dst;
  EXPECT_EQ(ParseInfoDst(sm, &dst), ParseError::kOk);
  EXPECT_EQ(dst.prefix.bytes[0], 1);
}

TEST(MessageTest, HeartbeatBothOrdersAndRange) {
  auto le =
      Cat(Header(), B({0x07, 0x03, 28, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0,
                       1,    0,    0,  0, 0, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0}));
  Submessage sm;
  ASSERT_TRUE(ParseOne(le, &sm));
  HeartbeatSubmessage hb;
  ASSERT_EQ(ParseHeartbeat(sm, &hb), ParseError::kOk);
  EXPECT_EQ(hb.first_sn, 1);
  EXPECT_EQ(hb.last_sn, 9);
  EXPECT_EQ(hb.count, 4u);
  EXPECT_TRUE(hb.final_flag);
  auto be =
      Cat(Header(), B({0x07, 0x00, 0, 28, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0,
                       0,    0,    0, 5,  0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1}));
  ASSERT_TRUE(ParseOne(be, &sm));
  // lastSN 3 < firstSN 5 - 1: §8.3.7.5.3 invalid.
  EXPECT_EQ(ParseHeartbeat(sm, &hb), ParseError::kBadHeartbeatRange);
}

TEST(MessageTest, AckNackSetValidation) {
  // base 3, numBits 5, bitmap 0b10100 << 27: SNs 3 and 5 missing.
  auto msg = Cat(Header(),
                 B({0x06, 0x01, 28, 0, 0, 0, 1, 7, 0, 0, 1, 2,    0, 0, 0, 0,
                    3,    0,    0,  0, 5, 0, 0, 0, 0, 0, 0, 0xa0, 2, 0, 0, 0}));
  Submessage sm;
  ASSERT_TRUE(ParseOne(msg, &sm));
  AckNackSubmessage an;
  ASSERT_EQ(ParseAckNack(sm, &an), ParseError::kOk);
  EXPECT_TRUE(an.state.Contains(3));
  EXPECT_FALSE(an.state.Contains(4));
  EXPECT_TRUE(an.state.Contains(5));
  EXPECT_EQ(an.count, 2u);
  // numBits = 257 > 256.
  auto bad = msg;
  bad[kHeaderSize + 4 + 16] = std::byte{1};
  bad[kHeaderSize + 4 + 17] = std::byte{1};
  ASSERT_TRUE(ParseOne(bad, &sm));
  EXPECT_EQ(ParseAckNack(sm, &an), ParseError::kBadSequenceNumberSet);
  // base 0.
  bad = msg;
  bad[kHeaderSize + 4 + 12] = std::byte{0};
  ASSERT_TRUE(ParseOne(bad, &sm));
  EXPECT_EQ(ParseAckNack(sm, &an), ParseError::kBadSequenceNumberSet);
  // numBits 96 needs three bitmap words; two words' worth of bytes remain.
  bad = msg;
  bad[kHeaderSize + 4 + 16] = std::byte{96};
  ASSERT_TRUE(ParseOne(bad, &sm));
  EXPECT_EQ(ParseAckNack(sm, &an), ParseError::kBadSequenceNumberSet);
}

TEST(MessageTest, GapNackFragHeartbeatFragInfo) {
  Submessage sm;
  // GAP start 2, list base 5 numBits 0: [2, 4] irrelevant.
  auto gap =
      Cat(Header(), B({0x08, 0x01, 28, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0,
                       2,    0,    0,  0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0}));
  ASSERT_TRUE(ParseOne(gap, &sm));
  GapSubmessage g;
  ASSERT_EQ(ParseGap(sm, &g), ParseError::kOk);
  EXPECT_EQ(g.gap_start, 2);
  EXPECT_EQ(g.gap_list.base, 5);
  gap[kHeaderSize + 4 + 12] = std::byte{9};  // start 9 > base 5
  ASSERT_TRUE(ParseOne(gap, &sm));
  EXPECT_EQ(ParseGap(sm, &g), ParseError::kBadGap);

  auto nf = Cat(Header(), B({0x12, 0x01, 28, 0, 0, 0, 0, 0,    0, 0, 1, 2,
                             0,    0,    0,  0, 1, 0, 0, 0,    1, 0, 0, 0,
                             2,    0,    0,  0, 0, 0, 0, 0x80, 1, 0, 0, 0}));
  nf[kHeaderSize + 2] = std::byte{32};
  ASSERT_TRUE(ParseOne(nf, &sm));
  NackFragSubmessage n;
  ASSERT_EQ(ParseNackFrag(sm, &n), ParseError::kOk);
  EXPECT_TRUE(n.state.Contains(1));
  EXPECT_FALSE(n.state.Contains(2));

  auto hf = Cat(Header(), B({0x13, 0x01, 24, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0,
                             0,    0,    1,  0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0}));
  ASSERT_TRUE(ParseOne(hf, &sm));
  HeartbeatFragSubmessage h;
  ASSERT_EQ(ParseHeartbeatFrag(sm, &h), ParseError::kOk);
  EXPECT_EQ(h.last_fragment, 3u);

  auto ts = Cat(Header(), B({0x09, 0x01, 8, 0, 10, 0, 0, 0, 0, 0, 0, 0x80}));
  ASSERT_TRUE(ParseOne(ts, &sm));
  InfoTsSubmessage t;
  ASSERT_EQ(ParseInfoTs(sm, &t), ParseError::kOk);
  EXPECT_EQ(t.time.ToNanos(), 10'500'000'000);
  auto inv = Cat(Header(), B({0x09, 0x03, 0, 0}));
  ASSERT_TRUE(ParseOne(inv, &sm));
  ASSERT_EQ(ParseInfoTs(sm, &t), ParseError::kOk);
  EXPECT_TRUE(t.invalidate);

  auto reply =
      Cat(Header(), B({0x0d, 0x01, 8, 0, 1, 0, 0, 0x7f, 0x2a, 0x1d, 0, 0}));
  ASSERT_TRUE(ParseOne(reply, &sm));
  InfoReplySubmessage r;
  ASSERT_EQ(ParseInfoReply(sm, &r), ParseError::kOk);
  EXPECT_EQ(r.unicast[0].ToString(), "udp/127.0.0.1:7466");
  // INFO_REPLY with a locator count past the end.
  auto bad_reply = Cat(Header(), B({0x0f, 0x01, 4, 0, 9, 0, 0, 0}));
  ASSERT_TRUE(ParseOne(bad_reply, &sm));
  EXPECT_EQ(ParseInfoReply(sm, &r), ParseError::kBadLocatorList);
}

TEST(MessageTest, DataFragValidation) {
  // SN 1, fragment 1 of a 10-byte sample, 1 fragment of 8 bytes.
  auto m = Cat(Header(), B({0x16, 0x01, 40, 0, 0, 0, 28, 0, 0, 0, 0, 0, 0, 0, 1,
                            2,    0,    0,  0, 0, 1, 0,  0, 0, 1, 0, 0, 0, 1, 0,
                            8,    0,    10, 0, 0, 0, 1,  2, 3, 4, 5, 6, 7, 8}));
  Submessage sm;
  ASSERT_TRUE(ParseOne(m, &sm));
  DataFragSubmessage d;
  ASSERT_EQ(ParseDataFrag(sm, &d), ParseError::kOk);
  EXPECT_EQ(d.fragments.size(), 8u);
  auto bad = m;
  bad[kHeaderSize + 4 + 20] = std::byte{3};  // fragment 3 starts past byte 10
  ASSERT_TRUE(ParseOne(bad, &sm));
  EXPECT_EQ(ParseDataFrag(sm, &d), ParseError::kBadFragmentInfo);
  bad = m;
  bad[kHeaderSize + 4 + 26] = std::byte{20};  // fragmentSize 20 > sampleSize
  ASSERT_TRUE(ParseOne(bad, &sm));
  EXPECT_EQ(ParseDataFrag(sm, &d), ParseError::kBadFragmentInfo);
}

TEST(MessageTest, BuilderRoundTrip) {
  GuidPrefix prefix;
  prefix.bytes = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1};
  std::array<std::byte, 512> out{};
  MessageBuilder b(out, prefix);
  ASSERT_TRUE(b.AddInfoTs(1'000'000'001));
  InlineQos q;
  q.key_hash = KeyHash{};
  q.key_hash->bytes[0] = 0xaa;
  q.status_info = kStatusInfoDisposed;
  auto payload = B({0, 1, 0, 0, 7, 0, 0});  // padded to 8 on the wire
  ASSERT_TRUE(
      b.AddData(EntityId::Unknown(), EntityId::Make(1, 2), 3, &q, payload));
  SequenceNumberSet set;
  set.base = 10;
  set.Add(12);
  ASSERT_TRUE(
      b.AddAckNack(EntityId::Make(2, 7), EntityId::Make(1, 2), set, 5, false));
  ASSERT_TRUE(
      b.AddHeartbeat(EntityId::Unknown(), EntityId::Make(1, 2), 1, 3, 6, true));
  ASSERT_TRUE(b.AddGap(EntityId::Unknown(), EntityId::Make(1, 2), 1,
                       SequenceNumberSet{3, 0, {}}));
  ASSERT_TRUE(b.AddPad(4));
  std::span<const std::byte> msg(out.data(), b.size());
  MessageHeader h;
  ASSERT_EQ(ParseHeader(msg, &h), ParseError::kOk);
  EXPECT_EQ(h.prefix, prefix);
  SubmessageIterator it(msg);
  Submessage sm;
  ASSERT_TRUE(it.Next(&sm));
  InfoTsSubmessage ts;
  ASSERT_EQ(ParseInfoTs(sm, &ts), ParseError::kOk);
  EXPECT_EQ(ts.time.ToNanos(), 1'000'000'001);  // exact round trip
  ASSERT_TRUE(it.Next(&sm));
  DataSubmessage d;
  ASSERT_EQ(ParseData(sm, &d), ParseError::kOk);
  EXPECT_EQ(d.sn, 3);
  EXPECT_EQ(d.payload.size(), 8u);
  ParameterListReader pl(d.inline_qos, d.endian);
  Parameter p;
  ASSERT_TRUE(pl.Next(&p));
  EXPECT_EQ(p.id, pid::kKeyHash);
  ASSERT_TRUE(pl.Next(&p));
  EXPECT_EQ(p.id, pid::kStatusInfo);
  EXPECT_EQ(p.value[3], std::byte{1});
  ASSERT_TRUE(it.Next(&sm));
  AckNackSubmessage an;
  ASSERT_EQ(ParseAckNack(sm, &an), ParseError::kOk);
  EXPECT_TRUE(an.state.Contains(12));
  EXPECT_FALSE(an.state.Contains(11));
  ASSERT_TRUE(it.Next(&sm));
  HeartbeatSubmessage hb;
  ASSERT_EQ(ParseHeartbeat(sm, &hb), ParseError::kOk);
  EXPECT_EQ(hb.last_sn, 3);
  ASSERT_TRUE(it.Next(&sm));
  GapSubmessage g;
  ASSERT_EQ(ParseGap(sm, &g), ParseError::kOk);
  ASSERT_TRUE(it.Next(&sm));
  EXPECT_EQ(sm.id, static_cast<uint8_t>(SubmessageId::kPad));
  EXPECT_FALSE(it.Next(&sm));
  EXPECT_EQ(it.error(), ParseError::kOk);
}

TEST(MessageTest, BuilderRefusesWhatDoesNotFit) {
  std::array<std::byte, 40> out{};
  MessageBuilder b(out, GuidPrefix{});
  auto payload = std::vector<std::byte>(64);
  size_t mark = b.Mark();
  EXPECT_FALSE(b.AddData(EntityId::Unknown(), EntityId::Make(1, 2), 1, nullptr,
                         payload));
  b.Rollback(mark);
  EXPECT_TRUE(b.AddInfoTsInvalidate());
  EXPECT_EQ(b.size(), kHeaderSize + 4);
}

TEST(ParameterListTest, ValidatesSentinelAndLengths) {
  auto ok = B({0x05, 0, 8, 0, 3, 0, 0, 0, 'a', 'b', 0, 0, 1, 0, 0, 0});
  size_t size = 0;
  EXPECT_EQ(ParameterListReader::Validate(ok, Endian::kLittle, &size),
            PlError::kOk);
  EXPECT_EQ(size, ok.size());
  auto no_sentinel = B({0x05, 0, 8, 0, 3, 0, 0, 0, 'a', 'b', 0, 0});
  EXPECT_EQ(
      ParameterListReader::Validate(no_sentinel, Endian::kLittle, nullptr),
      PlError::kNoSentinel);
  auto bad_len = B({0x05, 0, 6, 0, 3, 0, 0, 0, 'a', 'b', 1, 0, 0, 0});
  EXPECT_EQ(ParameterListReader::Validate(bad_len, Endian::kLittle, nullptr),
            PlError::kBadLength);
  auto truncated = B({0x05, 0, 12, 0, 3, 0, 0, 0});
  EXPECT_EQ(ParameterListReader::Validate(truncated, Endian::kLittle, nullptr),
            PlError::kTruncated);
  auto be = B({0, 0x05, 0, 8, 0, 0, 0, 3, 'a', 'b', 0, 0, 0, 1, 0, 0});
  EXPECT_EQ(ParameterListReader::Validate(be, Endian::kBig, nullptr),
            PlError::kOk);
  EXPECT_TRUE(IsMustUnderstand(0x4001));
  EXPECT_FALSE(IsMustUnderstand(0xc001));  // vendor-specific
  EXPECT_FALSE(IsMustUnderstand(0x0005));
}

TEST(TypesTest, TimeConversionIsExactBothWays) {
  for (int64_t ns : {int64_t{0}, int64_t{1}, int64_t{999'999'999},
                     int64_t{1'700'000'000'123'456'789},
                     int64_t{1'700'000'000'123'456'789} | 1}) {
    EXPECT_EQ(RtpsTime::FromNanos(ns).ToNanos(), ns) << ns;
  }
  EXPECT_EQ(ports::SpdpMulticast(0), 7400u);
  EXPECT_EQ(ports::SpdpUnicast(1, 2), 7664u);
  EXPECT_EQ(ports::UserMulticast(0), 7401u);
  EXPECT_EQ(ports::UserUnicast(0, 1), 7413u);
}

}  // namespace
}  // namespace ringlab::rtps
