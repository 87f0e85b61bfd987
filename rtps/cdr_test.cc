// CDR round trips against byte strings written out by hand from XTypes 1.3
// §7.4 (alignment relative to the end of the encapsulation header), in both
// byte orders, plus XCDR2 reading, key hashes and hostile input.
#include "rtps/cdr.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ringlab::rtps {
namespace {

std::vector<std::byte> B(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int x : v) out.push_back(std::byte(x));
  return out;
}

struct Prims {
  uint8_t a = 0;
  uint32_t b = 0;
  uint8_t c = 0;
  uint64_t d = 0;
  bool operator==(const Prims&) const = default;
};
struct Inner {
  uint16_t x = 0;
  uint32_t y = 0;
  bool operator==(const Inner&) const = default;
};
struct Outer {
  uint8_t tag = 0;
  Inner inner;
  std::string name;
  std::vector<uint16_t> values;
  std::array<uint8_t, 3> raw{};
  std::vector<Inner> inners;
  double ratio = 0;
  bool flag = false;
  bool operator==(const Outer&) const = default;
};
struct Keyed {
  uint32_t seq = 0;
  uint32_t keyval = 0;
  std::vector<uint8_t> baggage;
  bool operator==(const Keyed&) const = default;
};
struct StringKeyed {
  std::string host;
  uint32_t pid = 0;
  bool operator==(const StringKeyed&) const = default;
};

}  // namespace

template <>
struct CdrType<Prims> {
  static constexpr bool kPrimitive = false;
  static void Write(CdrWriter& w, const Prims& v) {
    w.Write(v.a);
    w.Write(v.b);
    w.Write(v.c);
    w.Write(v.d);
  }
  static bool Read(CdrReader& r, Prims* v) {
    return r.Read(&v->a) && r.Read(&v->b) && r.Read(&v->c) && r.Read(&v->d);
  }
};
template <>
struct TopicType<Prims> {
  static constexpr std::string_view kTypeName = "Prims";
  static constexpr bool kKeyed = false;
  static constexpr size_t kMaxKeyBytes = 0;
  static void WriteKey(CdrWriter&, const Prims&) {}
};
template <>
struct CdrType<Inner> {
  static constexpr bool kPrimitive = false;
  static void Write(CdrWriter& w, const Inner& v) {
    w.Write(v.x);
    w.Write(v.y);
  }
  static bool Read(CdrReader& r, Inner* v) {
    return r.Read(&v->x) && r.Read(&v->y);
  }
};
template <>
struct CdrType<Outer> {
  static constexpr bool kPrimitive = false;
  static void Write(CdrWriter& w, const Outer& v) {
    w.Write(v.tag);
    WriteCdr(w, v.inner);
    w.WriteString(v.name);
    WriteCdr(w, v.values);
    WriteCdr(w, v.raw);
    WriteCdr(w, v.inners);
    w.Write(v.ratio);
    w.Write(v.flag);
  }
  static bool Read(CdrReader& r, Outer* v) {
    return r.Read(&v->tag) && ReadCdr(r, &v->inner) && r.ReadString(&v->name) &&
           ReadCdr(r, &v->values) && ReadCdr(r, &v->raw) &&
           ReadCdr(r, &v->inners) && r.Read(&v->ratio) && r.Read(&v->flag);
  }
};
template <>
struct TopicType<Outer> {
  static constexpr std::string_view kTypeName = "Outer";
  static constexpr bool kKeyed = false;
  static constexpr size_t kMaxKeyBytes = 0;
  static void WriteKey(CdrWriter&, const Outer&) {}
};
template <>
struct CdrType<Keyed> {
  static constexpr bool kPrimitive = false;
  static void Write(CdrWriter& w, const Keyed& v) {
    w.Write(v.seq);
    w.Write(v.keyval);
    WriteCdr(w, v.baggage);
  }
  static bool Read(CdrReader& r, Keyed* v) {
    return r.Read(&v->seq) && r.Read(&v->keyval) && ReadCdr(r, &v->baggage);
  }
};
template <>
struct TopicType<Keyed> {
  static constexpr std::string_view kTypeName = "KeyedSeq";
  static constexpr bool kKeyed = true;
  static constexpr size_t kMaxKeyBytes = 4;
  static void WriteKey(CdrWriter& w, const Keyed& v) { w.Write(v.keyval); }
};
template <>
struct CdrType<StringKeyed> {
  static constexpr bool kPrimitive = false;
  static void Write(CdrWriter& w, const StringKeyed& v) {
    w.WriteString(v.host);
    w.Write(v.pid);
  }
  static bool Read(CdrReader& r, StringKeyed* v) {
    return r.ReadString(&v->host) && r.Read(&v->pid);
  }
};
template <>
struct TopicType<StringKeyed> {
  static constexpr std::string_view kTypeName = "StringKeyed";
  static constexpr bool kKeyed = true;
  static constexpr size_t kMaxKeyBytes = kUnboundedKey;
  static void WriteKey(CdrWriter& w, const StringKeyed& v) {
    w.WriteString(v.host);
    w.Write(v.pid);
  }
};

namespace {

template <typename T>
void ExpectRoundTrip(const T& v, Encoding enc,
                     const std::vector<std::byte>& want) {
  std::vector<std::byte> out;
  ASSERT_TRUE(SerializeSample(v, enc, &out));
  EXPECT_EQ(out, want);
  T back{};
  ASSERT_TRUE(DeserializeSample(std::span<const std::byte>(want), &back));
  EXPECT_EQ(back, v);
}

const Prims kPrims{0x01, 0x01020304, 0x05, 0x1112131415161718ull};

// XCDR1: uint64 aligned to 8 after the header.
TEST(CdrTest, PrimitivesXcdr1LittleEndian) {
  ExpectRoundTrip(kPrims, Encoding::kCdrLe,
                  B({0x00, 0x01, 0x00, 0x00,                          // CDR_LE
                     0x01, 0,    0,    0,    0x04, 0x03, 0x02, 0x01,  // a b
                     0x05, 0,    0,    0,    0,    0,    0,    0,     // c pad
                     0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11}));  // d
}

TEST(CdrTest, PrimitivesXcdr1BigEndian) {
  ExpectRoundTrip(
      kPrims, Encoding::kCdrBe,
      B({0x00, 0x00, 0x00, 0x00,  // CDR_BE
         0x01, 0,    0,    0,    0x01, 0x02, 0x03, 0x04, 0x05, 0,    0,   0, 0,
         0,    0,    0,    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}));
}

// XCDR2 (§7.4.1.2.1): an 8-byte primitive aligns to 4 only.
TEST(CdrTest, PrimitivesPlainCdr2BothOrders) {
  ExpectRoundTrip(kPrims, Encoding::kCdr2Le,
                  B({0x00, 0x07, 0x00, 0x00, 0x01, 0,    0,    0,
                     0x04, 0x03, 0x02, 0x01, 0x05, 0,    0,    0,
                     0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11}));
  ExpectRoundTrip(kPrims, Encoding::kCdr2Be,
                  B({0x00, 0x06, 0x00, 0x00, 0x01, 0,    0,    0,
                     0x01, 0x02, 0x03, 0x04, 0x05, 0,    0,    0,
                     0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}));
}

Outer MakeOuter() {
  Outer o;
  o.tag = 7;
  o.inner = {0x0102, 0x03040506};
  o.name = "hi";
  o.values = {1, 2};
  o.raw = {0xa, 0xb, 0xc};
  o.inners = {{0x0a0b, 0x01}};
  o.ratio = 1.0;
  o.flag = true;
  return o;
}

// Nested struct, string, sequence, array, sequence of structs, double,
// bool: every shape in one type.
TEST(CdrTest, NestedShapesXcdr1LittleEndian) {
  ExpectRoundTrip(
      MakeOuter(), Encoding::kCdrLe,
      B({0x00, 0x01, 0x00, 0x03,  // 3 bytes of final padding
         0x07, 0x00, 0x02, 0x01,  // tag, pad, inner.x
         0x06, 0x05, 0x04, 0x03,  // inner.y
         0x03, 0,    0,    0,    'h',  'i',  0,    0x00,  // "hi" + NUL, pad
         0x02, 0,    0,    0,    0x01, 0,    0x02, 0,     // values {1, 2}
         0x0a, 0x0b, 0x0c, 0x00,                          // raw[3], pad
         0x01, 0,    0,    0,    0x0b, 0x0a, 0,    0,     // 1 inner: x, pad
         0x01, 0,    0,    0,  // y; the double is at 40
         0,    0,    0,    0,    0,    0,    0xf0, 0x3f,  // 1.0
         0x01, 0,    0,    0}));                          // flag + padding to 4
}

TEST(CdrTest, NestedShapesXcdr1BigEndian) {
  ExpectRoundTrip(
      MakeOuter(), Encoding::kCdrBe,
      B({0x00, 0x00, 0x00, 0x03, 0x07, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
         0,    0,    0,    0x03, 'h',  'i',  0,    0x00, 0,    0,    0,    0x02,
         0,    0x01, 0,    0x02, 0x0a, 0x0b, 0x0c, 0x00, 0,    0,    0,    0x01,
         0x0a, 0x0b, 0,    0,    0,    0,    0,    0x01, 0x3f, 0xf0, 0,    0,
         0,    0,    0,    0,    0x01, 0,    0,    0}));
}

// The padding at the end goes in the options' low bits (§7.6.3.1.2).
TEST(CdrTest, PaddingRecordedInOptions) {
  Outer o = MakeOuter();
  std::vector<std::byte> out;
  ASSERT_TRUE(SerializeSample(o, Encoding::kCdrLe, &out));
  EXPECT_EQ(out[3], std::byte{3});
  EXPECT_EQ(out.size() % 4, 0u);
}

// PLAIN_CDR2: a sequence of non-primitive structs gets a DHEADER; the
// double aligns to 4.
TEST(CdrTest, ReadsPlainCdr2WithDheader) {
  auto bytes = B({0x00, 0x07, 0x00, 0x00, 0x07, 0x00, 0x02, 0x01,
                  0x06, 0x05, 0x04, 0x03, 0x03, 0,    0,    0,
                  'h',  'i',  0,    0x00, 0x02, 0,    0,    0,
                  0x01, 0,    0x02, 0,    0x0a, 0x0b, 0x0c, 0x00,
                  0x0c, 0,    0,    0,  // DHEADER: 12 bytes
                  0x01, 0,    0,    0,    0x0b, 0x0a, 0,    0,
                  0x01, 0,    0,    0,    0,    0,    0,    0,
                  0,    0,    0xf0, 0x3f,  // double at 4-alignment
                  0x01, 0,    0,    0});
  Outer back;
  ASSERT_TRUE(DeserializeSample(std::span<const std::byte>(bytes), &back));
  EXPECT_EQ(back, MakeOuter());
  std::vector<std::byte> out;
  ASSERT_TRUE(SerializeSample(MakeOuter(), Encoding::kCdr2Le, &out));
  out[3] = bytes[3];
  EXPECT_EQ(out, bytes);
}

// D_CDR2 (appendable): a DHEADER opens the type; extra trailing members
// from a newer version of the type are skipped.
TEST(CdrTest, ReadsDelimitedCdr2BigEndianAndSkipsUnknownMembers) {
  auto bytes =
      B({0x00, 0x08, 0x00, 0x00, 0,    0,    0,    0x18,  // DHEADER: 24 bytes
         0x01, 0,    0,    0,    0x01, 0x02, 0x03, 0x04,
         0x05, 0,    0,    0,    0x11, 0x12, 0x13, 0x14,
         0x15, 0x16, 0x17, 0x18, 0xde, 0xad, 0xbe, 0xef});  // not in the body
  Prims back;
  ASSERT_TRUE(DeserializeSample(std::span<const std::byte>(bytes), &back));
  EXPECT_EQ(back, kPrims);
  bytes[7] = std::byte{0x30};  // DHEADER past the end
  EXPECT_FALSE(DeserializeSample(std::span<const std::byte>(bytes), &back));
}

TEST(CdrTest, KeyedStructAndKeyHash) {
  Keyed k{42, 0x01020304, {9, 8, 7}};
  ExpectRoundTrip(k, Encoding::kCdrLe,
                  B({0x00, 0x01, 0x00, 0x01, 42, 0, 0, 0, 0x04, 0x03,
                     0x02, 0x01, 0x03, 0,    0,  0, 9, 8, 7,    0}));
  // §9.6.4.8: key fits 16 bytes -> the big-endian key, zero padded.
  KeyHash h = ComputeKeyHash(k);
  std::array<uint8_t, 16> want{0x01, 0x02, 0x03, 0x04};
  EXPECT_EQ(h.bytes, want);
}

TEST(CdrTest, UnboundedKeyUsesMd5) {
  // MD5 test vectors from RFC 1321 §A.5.
  auto hex = [](const std::array<uint8_t, 16>& d) {
    std::string s;
    for (uint8_t b : d) {
      static const char* k = "0123456789abcdef";
      s += k[b >> 4];
      s += k[b & 15];
    }
    return s;
  };
  EXPECT_EQ(hex(Md5({})), "d41d8cd98f00b204e9800998ecf8427e");
  std::string abc = "abc";
  EXPECT_EQ(hex(Md5(std::as_bytes(std::span(abc)))),
            "900150983cd24fb0d6963f7d28e17f72");
  std::string long_text(1000, 'a');  // more than one block
  EXPECT_EQ(hex(Md5(std::as_bytes(std::span(long_text)))),
            "cabe45dcc9ae5b66ba86600cca6b8ba8");
  StringKeyed v{"ab", 5};
  // Key serialized BE XCDR2: 00000003 'a' 'b' 00 | pad | 00000005.
  auto key = B({0, 0, 0, 3, 'a', 'b', 0, 0, 0, 0, 0, 5});
  EXPECT_EQ(ComputeKeyHash(v).bytes, Md5(key));
}

TEST(CdrTest, RejectsHostileInput) {
  Keyed k;
  // Sequence length far beyond the input: fails, allocates nothing big.
  auto huge = B({0x00, 0x01, 0x00, 0x00, 1,    0,    0, 0, 2, 0,
                 0,    0,    0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4});
  EXPECT_FALSE(DeserializeSample(std::span<const std::byte>(huge), &k));
  EXPECT_EQ(k.baggage.capacity() < 1024, true);
  // Truncated in the middle of a field.
  auto truncated = B({0x00, 0x01, 0x00, 0x00, 1, 0, 0, 0, 2, 0});
  EXPECT_FALSE(DeserializeSample(std::span<const std::byte>(truncated), &k));
  // Unknown / unsupported encapsulation (PL_CDR2).
  auto pl2 = B({0x00, 0x0b, 0x00, 0x00, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_FALSE(DeserializeSample(std::span<const std::byte>(pl2), &k));
  // A string without its NUL, and one with length 0.
  StringKeyed s;
  auto no_nul =
      B({0x00, 0x01, 0x00, 0x00, 2, 0, 0, 0, 'a', 'b', 0, 0, 1, 0, 0, 0});
  EXPECT_FALSE(DeserializeSample(std::span<const std::byte>(no_nul), &s));
  auto zero_len = B({0x00, 0x01, 0x00, 0x00, 0, 0, 0, 0, 1, 0, 0, 0});
  EXPECT_FALSE(DeserializeSample(std::span<const std::byte>(zero_len), &s));
  // A bool that is neither 0 nor 1 (§7.4.1.1.4).
  bool b = false;
  auto bad_bool = B({2});
  CdrReader r(bad_bool, Endian::kLittle);
  EXPECT_FALSE(r.Read(&b));
}

TEST(CdrTest, FixedWriterReportsOverflow) {
  std::array<std::byte, 6> small{};
  CdrWriter w(small, Endian::kLittle);
  w.Write(uint32_t{1});
  EXPECT_TRUE(w.ok());
  w.Write(uint32_t{2});
  EXPECT_FALSE(w.ok());
}

TEST(CdrTest, ReusedVectorDoesNotShrink) {
  std::vector<std::byte> buf;
  Keyed k{1, 2, std::vector<uint8_t>(100, 5)};
  ASSERT_TRUE(SerializeSample(k, Encoding::kCdrLe, &buf));
  size_t cap = buf.capacity();
  buf.clear();
  ASSERT_TRUE(SerializeSample(k, Encoding::kCdrLe, &buf));
  EXPECT_EQ(buf.capacity(), cap);
}

}  // namespace
}  // namespace ringlab::rtps

#include "rtps/ddsperf_types.h"
#include "rtps/topic.h"

namespace ringlab::rtps {
namespace {

// The key-only fast path (TopicType::ReadKey) and the full decode agree.
TEST(CdrTest, KeyHashFromPayloadMatchesComputeKeyHash) {
  KeyedSeq k{9, 0xabcdef01, {1, 2, 3}};
  for (Encoding e : {Encoding::kCdrLe, Encoding::kCdrBe, Encoding::kCdr2Le,
                     Encoding::kDCdr2Be}) {
    std::vector<std::byte> bytes;
    ASSERT_TRUE(SerializeSample(k, e, &bytes));
    KeyHash h;
    ASSERT_TRUE(MakeKeyHashFunction<KeyedSeq>()(bytes, &h));
    EXPECT_EQ(h, ComputeKeyHash(k));
  }
  KeyHash h;
  std::vector<std::byte> short_payload(6);
  EXPECT_FALSE(MakeKeyHashFunction<KeyedSeq>()(short_payload, &h));
}

}  // namespace
}  // namespace ringlab::rtps
