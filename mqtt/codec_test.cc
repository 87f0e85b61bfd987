// Codec tests: the byte strings of the specs' examples written out by hand,
// round trips of every packet in both versions, and malformed input.
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/packets.h"
#include "mqtt/properties.h"
#include "mqtt/wire.h"

namespace ringlab::mqtt {
namespace {

using Bytes = std::vector<std::byte>;

Bytes B(std::initializer_list<int> values) {
  Bytes out;
  for (int v : values) out.push_back(std::byte(v));
  return out;
}

Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes Str(std::string_view s) {
  Bytes out = B({int(s.size() >> 8), int(s.size() & 0xFF)});
  for (char c : s) out.push_back(std::byte(c));
  return out;
}

Bytes Raw(std::string_view s) {
  Bytes out;
  for (char c : s) out.push_back(std::byte(c));
  return out;
}

template <typename P>
Bytes EncodeOrDie(const P& p, Version v) {
  Bytes out(EncodedSize(Packet(p), v));
  EncodeResult r;
  if constexpr (std::is_same_v<P, Connect>) {
    r = Encode(p, out);
  } else {
    r = Encode(p, v, out);
  }
  EXPECT_TRUE(r.ok()) << int(r.error);
  EXPECT_EQ(r.size, out.size());
  out.resize(r.size);
  return out;
}

// Locates and decodes one whole packet; fails the test on leftovers.
DecodeStatus DecodeAll(const Bytes& bytes, Version v, Packet* packet) {
  Frame frame;
  size_t needed = 0;
  const FrameResult fr = ParseFrame(bytes, kMaxPacketBytes, &frame, &needed);
  if (fr != FrameResult::kFrame) return DecodeStatus::Malformed("frame");
  EXPECT_EQ(frame.size_bytes, bytes.size());
  return DecodePacket(frame, v, packet);
}

template <typename P>
P DecodeAs(const Bytes& bytes, Version v) {
  Packet packet;
  DecodeStatus s = DecodeAll(bytes, v, &packet);
  EXPECT_TRUE(s.ok()) << s.detail;
  EXPECT_TRUE(std::holds_alternative<P>(packet));
  if (!std::holds_alternative<P>(packet)) return P{};
  return std::get<P>(packet);
}

ReasonCode DecodeError(const Bytes& bytes, Version v) {
  Packet packet;
  return DecodeAll(bytes, v, &packet).code;
}

// ---- Variable Byte Integer (§1.5.5) ----------------------------------------

TEST(Varint, SpecTableBoundaries) {
  // MQTT 5.0 §1.5.5 Table 1-1, the size of Variable Byte Integer.
  struct Case {
    uint32_t value;
    Bytes bytes;
  } cases[] = {
      {0, B({0x00})},
      {127, B({0x7F})},
      {128, B({0x80, 0x01})},
      {16383, B({0xFF, 0x7F})},
      {16384, B({0x80, 0x80, 0x01})},
      {2097151, B({0xFF, 0xFF, 0x7F})},
      {2097152, B({0x80, 0x80, 0x80, 0x01})},
      {268435455, B({0xFF, 0xFF, 0xFF, 0x7F})},
  };
  for (const Case& c : cases) {
    Bytes out(4);
    WireWriter w(out);
    w.Varint(c.value);
    out.resize(w.size());
    EXPECT_EQ(out, c.bytes) << c.value;
    EXPECT_EQ(VarintSize(c.value), c.bytes.size());
    uint32_t value = 0;
    size_t used = 0;
    ASSERT_EQ(DecodeVarint(c.bytes, &value, &used), VarintResult::kOk);
    EXPECT_EQ(value, c.value);
    EXPECT_EQ(used, c.bytes.size());
  }
}

TEST(Varint, RejectsFiveBytesAndLongForms) {
  uint32_t value;
  size_t used;
  EXPECT_EQ(DecodeVarint(B({0xFF, 0xFF, 0xFF, 0xFF, 0x7F}), &value, &used),
            VarintResult::kMalformed);
  // MQTT-1.5.5-1: 0x80 0x00 is a two-byte zero.
  EXPECT_EQ(DecodeVarint(B({0x80, 0x00}), &value, &used),
            VarintResult::kMalformed);
  EXPECT_EQ(DecodeVarint(B({0xFF, 0x80, 0x00}), &value, &used),
            VarintResult::kMalformed);
  EXPECT_EQ(DecodeVarint(B({0x80, 0x80}), &value, &used),
            VarintResult::kNeedMore);
  EXPECT_EQ(DecodeVarint(B({}), &value, &used), VarintResult::kNeedMore);
}

// ---- UTF-8 strings (§1.5.4) ------------------------------------------------

TEST(Utf8, SpecExampleAndValidText) {
  // §1.5.4 non-normative example: "A" U+2A6D4 is 00 05 41 F0 AA 9B 94.
  const Bytes example = B({0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94});
  WireReader r(example);
  std::string_view s;
  ASSERT_TRUE(r.ReadString(&s).ok());
  EXPECT_EQ(s, "A\xF0\xAA\x9B\x94");
  EXPECT_TRUE(r.empty());
  EXPECT_TRUE(ValidateUtf8("").ok());
  EXPECT_TRUE(ValidateUtf8("plain/topic").ok());
  EXPECT_TRUE(ValidateUtf8("\xC2\x80\xDF\xBF").ok());          // U+0080, U+07FF
  EXPECT_TRUE(ValidateUtf8("\xE0\xA0\x80\xEF\xBF\xBD").ok());  // U+0800..
  EXPECT_TRUE(ValidateUtf8("\xED\x9F\xBF").ok());              // U+D7FF
  EXPECT_TRUE(ValidateUtf8("\xEE\x80\x80").ok());              // U+E000
  EXPECT_TRUE(ValidateUtf8("\xF4\x8F\xBF\xBF").ok());          // U+10FFFF
  // MQTT-1.5.4-3: a BOM is a character like any other.
  EXPECT_TRUE(ValidateUtf8("\xEF\xBB\xBFx").ok());
}

TEST(Utf8, RejectsIllFormed) {
  const char* bad[] = {
      "\xC0\x80",          // overlong U+0000
      "\xC1\xBF",          // overlong
      "\xE0\x80\x80",      // overlong 3-byte
      "\xE0\x9F\xBF",      // overlong 3-byte
      "\xF0\x80\x80\x80",  // overlong 4-byte
      "\xF0\x8F\xBF\xBF",  // overlong 4-byte
      "\xF4\x90\x80\x80",  // above U+10FFFF
      "\xF5\x80\x80\x80",  // invalid lead
      "\xFF",              // invalid lead
      "\x80",              // lone continuation
      "\xC2",              // truncated
      "\xE2\x82",          // truncated
      "\xE2\x28\xA1",      // bad continuation
      "\xF0\x9F\x98",      // truncated 4-byte
  };
  for (const char* text : bad) {
    DecodeStatus s = ValidateUtf8(text);
    EXPECT_EQ(s.code, ReasonCode::kMalformedPacket)
        << testing::PrintToString(std::string(text));
  }
}

TEST(Utf8, RejectsNulAndSurrogates) {
  // MQTT-1.5.4-2.
  DecodeStatus nul = ValidateUtf8(std::string_view("a\0b", 3));
  EXPECT_EQ(nul.code, ReasonCode::kMalformedPacket);
  EXPECT_NE(std::string(nul.detail).find("MQTT-1.5.4-2"), std::string::npos);
  // MQTT-1.5.4-1: U+D800 and U+DFFF as CESU-style three-byte forms.
  for (const char* s : {"\xED\xA0\x80", "\xED\xBF\xBF", "x\xED\xB0\x80y"}) {
    DecodeStatus st = ValidateUtf8(s);
    EXPECT_EQ(st.code, ReasonCode::kMalformedPacket);
    EXPECT_NE(std::string(st.detail).find("surrogate"), std::string::npos);
  }
}

TEST(Wire, StringRunningPastTheEnd) {
  const Bytes short_string = B({0x00, 0x05, 'a', 'b'});
  WireReader r(short_string);
  std::string_view s;
  EXPECT_EQ(r.ReadString(&s).code, ReasonCode::kMalformedPacket);
  const Bytes one_byte = B({0x00});
  WireReader r2(one_byte);
  EXPECT_EQ(r2.ReadString(&s).code, ReasonCode::kMalformedPacket);
}

// ---- Spec examples, byte by byte -------------------------------------------

TEST(SpecBytes, Connect311) {
  // 3.1.1 §3.1.2.10 Figure 3.6 variable header: "MQTT", level 4, flags
  // 0xCE (user name, password, will QoS 1, will flag, clean session), keep
  // alive 10; then the payload fields in order (MQTT-3.1.3-1).
  const Bytes body = Cat({Str("MQTT"), B({0x04, 0xCE, 0x00, 0x0A}), Str("cid"),
                          Str("will/t"), Str("bye"), Str("user"), Str("pw")});
  const Bytes bytes = Cat({B({0x10, int(body.size())}), body});
  Connect c = DecodeAs<Connect>(bytes, Version::k311);
  EXPECT_EQ(c.version, Version::k311);
  EXPECT_TRUE(c.clean_start);
  EXPECT_EQ(c.keep_alive_s, 10);
  EXPECT_EQ(c.client_id, "cid");
  ASSERT_TRUE(c.will.has_value());
  EXPECT_EQ(c.will->topic, "will/t");
  EXPECT_EQ(AsString(c.will->payload), "bye");
  EXPECT_EQ(c.will->qos, 1);
  EXPECT_FALSE(c.will->retain);
  EXPECT_EQ(c.username, "user");
  ASSERT_TRUE(c.password.has_value());
  EXPECT_EQ(AsString(*c.password), "pw");
  EXPECT_EQ(EncodeOrDie(c, Version::k311), bytes);
}

TEST(SpecBytes, Connect5VariableHeader) {
  // 5.0 §3.1.2.12 Figure 3-7: "MQTT", level 5, flags 0xC2 (user name,
  // password, clean start), keep alive 10, properties length 5, Session
  // Expiry Interval (0x11) = 10.
  const Bytes body =
      Cat({Str("MQTT"), B({0x05, 0xC2, 0x00, 0x0A, 0x05, 0x11, 0, 0, 0, 10}),
           Str("c"), Str("u"), Str("p")});
  const Bytes bytes = Cat({B({0x10, int(body.size())}), body});
  Connect c = DecodeAs<Connect>(bytes, Version::k5);
  EXPECT_EQ(c.version, Version::k5);
  EXPECT_TRUE(c.clean_start);
  EXPECT_EQ(c.keep_alive_s, 10);
  EXPECT_EQ(c.properties.session_expiry_interval, 10u);
  EXPECT_FALSE(c.will.has_value());
  EXPECT_EQ(EncodeOrDie(c, Version::k5), bytes);
}

TEST(SpecBytes, PublishVariableHeader) {
  // §3.3.2.3 (3.1.1 Figure 3.11): topic "a/b", packet id 10.
  const Bytes v311 =
      Cat({B({0x32, 0x0A}), B({0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A}),
           Raw("xyz")});
  Publish p = DecodeAs<Publish>(v311, Version::k311);
  EXPECT_EQ(p.topic, "a/b");
  EXPECT_EQ(p.qos, 1);
  EXPECT_EQ(p.packet_id, 10);
  EXPECT_EQ(AsString(p.payload), "xyz");
  EXPECT_EQ(EncodeOrDie(p, Version::k311), v311);
  // 5.0 Figure 3-9 adds a zero Property Length.
  const Bytes v5 =
      Cat({B({0x3B, 0x08}), B({0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A, 0x00}),
           Raw("")});
  Publish q = DecodeAs<Publish>(v5, Version::k5);
  EXPECT_TRUE(q.dup);
  EXPECT_TRUE(q.retain);
  EXPECT_EQ(q.qos, 1);
  EXPECT_TRUE(q.payload.empty());
  EXPECT_EQ(EncodeOrDie(q, Version::k5), v5);
}

TEST(SpecBytes, SubscribePayload) {
  // 3.1.1 §3.8.3 Figure 3.23: "a/b" QoS 1, "c/d" QoS 2.
  const Bytes payload =
      B({0x00, 0x03, 'a', '/', 'b', 0x01, 0x00, 0x03, 'c', '/', 'd', 0x02});
  const Bytes bytes =
      Cat({B({0x82, int(2 + payload.size()), 0x00, 0x0A}), payload});
  Subscribe s = DecodeAs<Subscribe>(bytes, Version::k311);
  EXPECT_EQ(s.packet_id, 10);
  std::vector<std::pair<std::string, int>> got;
  s.entries.ForEach([&](const SubscribeEntry& e) {
    got.emplace_back(std::string(e.filter), e.options.max_qos);
  });
  EXPECT_EQ(got,
            (std::vector<std::pair<std::string, int>>{{"a/b", 1}, {"c/d", 2}}));
  EXPECT_EQ(EncodeOrDie(s, Version::k311), bytes);
}

TEST(SpecBytes, SubackAndUnsubscribe) {
  // 3.1.1 Figure 3.26: return codes 0, 1, 2, 0x80.
  const Bytes suback = B({0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80});
  Suback a = DecodeAs<Suback>(suback, Version::k311);
  EXPECT_EQ(a.reason_codes.size(), 4u);
  EXPECT_EQ(a.reason_codes[3], 0x80);
  EXPECT_EQ(EncodeOrDie(a, Version::k311), suback);
  // 3.1.1 Figure 3.30: unsubscribe "a/b" and "c/d".
  const Bytes unsub = B({0xA2, 0x0C, 0x00, 0x0A, 0x00, 0x03, 'a', '/', 'b',
                         0x00, 0x03, 'c', '/', 'd'});
  Unsubscribe u = DecodeAs<Unsubscribe>(unsub, Version::k311);
  std::vector<std::string> filters;
  u.filters.ForEach([&](std::string_view f) { filters.emplace_back(f); });
  EXPECT_EQ(filters, (std::vector<std::string>{"a/b", "c/d"}));
  EXPECT_EQ(EncodeOrDie(u, Version::k311), unsub);
}

TEST(SpecBytes, ShortForms) {
  // §3.12-§3.14: PINGREQ C0 00, PINGRESP D0 00, DISCONNECT E0 00.
  EXPECT_EQ(EncodeOrDie(Pingreq{}, Version::k311), B({0xC0, 0x00}));
  EXPECT_EQ(EncodeOrDie(Pingresp{}, Version::k5), B({0xD0, 0x00}));
  EXPECT_EQ(EncodeOrDie(Disconnect{}, Version::k5), B({0xE0, 0x00}));
  // §3.4.2.1: a v5 PUBACK with Success and no properties is 2 bytes.
  PubResponse ack;
  ack.packet_id = 7;
  EXPECT_EQ(EncodeOrDie(ack, Version::k5), B({0x40, 0x02, 0x00, 0x07}));
  // PUBREL carries flags 0010 (MQTT-2.1.3-1).
  ack.type = PacketType::kPubrel;
  EXPECT_EQ(EncodeOrDie(ack, Version::k311), B({0x62, 0x02, 0x00, 0x07}));
  // v5 forms with a reason code and no Property Length (Remaining Length 3)
  // decode too.
  PubResponse r =
      DecodeAs<PubResponse>(B({0x50, 0x03, 0x00, 0x07, 0x10}), Version::k5);
  EXPECT_EQ(r.type, PacketType::kPubrec);
  EXPECT_EQ(r.reason, ReasonCode::kNoMatchingSubscribers);
  Disconnect d = DecodeAs<Disconnect>(B({0xE0, 0x01, 0x8E}), Version::k5);
  EXPECT_EQ(d.reason, ReasonCode::kSessionTakenOver);
  Auth au = DecodeAs<Auth>(B({0xF0, 0x00}), Version::k5);
  EXPECT_EQ(au.reason, ReasonCode::kSuccess);
}

TEST(SpecBytes, Connack) {
  // 3.1.1 §3.2: 20 02 01 00 (session present, accepted).
  Connack c = DecodeAs<Connack>(B({0x20, 0x02, 0x01, 0x00}), Version::k311);
  EXPECT_TRUE(c.session_present);
  EXPECT_EQ(c.code, 0);
  EXPECT_EQ(EncodeOrDie(c, Version::k311), B({0x20, 0x02, 0x01, 0x00}));
  // 5.0: 20 03 00 00 00 (no properties).
  Connack d = DecodeAs<Connack>(B({0x20, 0x03, 0x00, 0x00, 0x00}), Version::k5);
  EXPECT_FALSE(d.session_present);
  EXPECT_EQ(EncodeOrDie(d, Version::k5), B({0x20, 0x03, 0x00, 0x00, 0x00}));
}

// ---- Round trips of every packet
// ---------------------------------------------

// Every property of one context set to a recognisable value.
struct AllProps {
  StringPair pairs[2] = {{"k1", "v1"}, {"k2", "\xC3\xA9"}};
  uint32_t ids[2] = {5, 268435455};
  std::byte data[3] = {std::byte(1), std::byte(0), std::byte(2)};
};

void Fill(PropertyContext c, const AllProps& a, Properties* p) {
  using C = PropertyContext;
  p->user_properties = UserProperties(a.pairs);
  switch (c) {
    case C::kPublish:
    case C::kWill:
      p->payload_format_indicator = 1;
      p->message_expiry_interval = 3600;
      p->content_type = "text/plain";
      p->response_topic = "reply/here";
      p->correlation_data = std::span<const std::byte>(a.data);
      if (c == C::kPublish) {
        p->subscription_ids = SubscriptionIds(a.ids);
        p->topic_alias = 12;
      } else {
        p->will_delay_interval = 30;
      }
      break;
    case C::kConnect:
      p->session_expiry_interval = 0xFFFFFFFF;
      p->authentication_method = "SCRAM";
      p->authentication_data = std::span<const std::byte>(a.data);
      p->request_problem_information = 0;
      p->request_response_information = 1;
      p->receive_maximum = 20;
      p->topic_alias_maximum = 10;
      p->maximum_packet_size = 1 << 20;
      break;
    case C::kConnack:
      p->session_expiry_interval = 60;
      p->assigned_client_identifier = "auto-1";
      p->server_keep_alive = 30;
      p->response_information = "resp/";
      p->server_reference = "other:1883";
      p->reason_string = "ok";
      p->receive_maximum = 100;
      p->topic_alias_maximum = 16;
      p->maximum_qos = 1;
      p->retain_available = 1;
      p->maximum_packet_size = 65536;
      p->wildcard_subscription_available = 1;
      p->subscription_identifier_available = 0;
      p->shared_subscription_available = 1;
      break;
    case C::kSubscribe:
      p->subscription_ids =
          SubscriptionIds(std::span<const uint32_t>(a.ids, 1));
      break;
    case C::kDisconnect:
      p->session_expiry_interval = 0;
      p->server_reference = "x";
      p->reason_string = "bye";
      break;
    case C::kAuth:
      p->authentication_method = "SCRAM";
      p->authentication_data = std::span<const std::byte>(a.data);
      p->reason_string = "more";
      break;
    case C::kUnsubscribe:
      break;  // user properties only (§3.10.2.1)
    default:
      p->reason_string = "why";
      break;
  }
}

template <typename P>
void ExpectRoundTrip(const P& p, Version v) {
  const Bytes first = EncodeOrDie(p, v);
  Packet decoded;
  DecodeStatus s = DecodeAll(first, v, &decoded);
  ASSERT_TRUE(s.ok()) << s.detail;
  ASSERT_TRUE(std::holds_alternative<P>(decoded));
  const Bytes second = EncodeOrDie(std::get<P>(decoded), v);
  EXPECT_EQ(first, second);
}

class RoundTrip : public testing::TestWithParam<Version> {};

TEST_P(RoundTrip, EveryPacket) {
  const Version v = GetParam();
  const bool v5 = v == Version::k5;
  AllProps a;
  std::byte payload[5] = {std::byte(0), std::byte(0xFF), std::byte('x'),
                          std::byte(0), std::byte(1)};

  Connect c;
  c.version = v;
  c.clean_start = false;
  c.keep_alive_s = 0xFFFF;
  c.client_id = "client-\xE2\x82\xAC";
  Will& will = c.will.emplace();
  will.topic = "will/topic";
  will.payload = payload;
  will.qos = 2;
  will.retain = true;
  c.username = "user";
  c.password = std::span<const std::byte>(payload);
  if (v5) {
    Fill(PropertyContext::kConnect, a, &c.properties);
    Fill(PropertyContext::kWill, a, &will.properties);
  }
  ExpectRoundTrip(c, v);
  // Without will, user name or password.
  Connect bare;
  bare.version = v;
  bare.client_id = "";
  ExpectRoundTrip(bare, v);
  if (v5) {
    Connect password_only = bare;  // allowed in v5 (§3.1.2.9)
    password_only.password = std::span<const std::byte>(payload);
    ExpectRoundTrip(password_only, v);
  }

  Connack ack;
  ack.session_present = true;
  if (v5) Fill(PropertyContext::kConnack, a, &ack.properties);
  ExpectRoundTrip(ack, v);
  Connack refused;
  refused.code = v5 ? uint8_t(ReasonCode::kNotAuthorized) : 5;
  ExpectRoundTrip(refused, v);

  for (uint8_t qos = 0; qos <= 2; ++qos) {
    Publish p;
    p.topic = "sensors/\xC3\xA9t\xC3\xA9/temp";
    p.qos = qos;
    p.dup = qos > 0;
    p.retain = qos == 1;
    p.packet_id = qos > 0 ? 65535 : 0;
    p.payload = payload;
    if (v5) Fill(PropertyContext::kPublish, a, &p.properties);
    ExpectRoundTrip(p, v);
  }
  if (v5) {
    Publish aliased;  // v5: an empty topic with a Topic Alias
    aliased.topic = "";
    aliased.properties.topic_alias = 3;
    ExpectRoundTrip(aliased, v);
  }

  for (PacketType t : {PacketType::kPuback, PacketType::kPubrec,
                       PacketType::kPubrel, PacketType::kPubcomp}) {
    PubResponse r;
    r.type = t;
    r.packet_id = 1;
    ExpectRoundTrip(r, v);
    if (v5) {
      r.reason = (t == PacketType::kPubrel || t == PacketType::kPubcomp)
                     ? ReasonCode::kPacketIdentifierNotFound
                     : ReasonCode::kQuotaExceeded;
      ExpectRoundTrip(r, v);
      Fill(t == PacketType::kPuback   ? PropertyContext::kPuback
           : t == PacketType::kPubrec ? PropertyContext::kPubrec
           : t == PacketType::kPubrel ? PropertyContext::kPubrel
                                      : PropertyContext::kPubcomp,
           a, &r.properties);
      ExpectRoundTrip(r, v);
      r.reason = ReasonCode::kSuccess;  // success with properties: long form
      ExpectRoundTrip(r, v);
    }
  }

  SubscribeEntry entries[3];
  entries[0].filter = "a/+/c";
  entries[0].options.max_qos = 2;
  entries[1].filter = "#";
  entries[1].options.max_qos = 1;
  entries[2].filter = "$share/g/x/#";
  if (v5) {
    entries[0].options.no_local = true;
    entries[0].options.retain_as_published = true;
    entries[1].options.retain_handling = 2;
    entries[2].options.retain_handling = 1;
  }
  Subscribe sub;
  sub.packet_id = 42;
  sub.entries = SubscribeEntries(entries);
  if (v5) Fill(PropertyContext::kSubscribe, a, &sub.properties);
  ExpectRoundTrip(sub, v);
  {
    // The decoded entries carry every option bit.
    Packet decoded;
    const Bytes wire = EncodeOrDie(sub, v);
    ASSERT_TRUE(DecodeAll(wire, v, &decoded).ok());
    std::vector<SubscribeEntry> got;
    std::get<Subscribe>(decoded).entries.ForEach(
        [&](const SubscribeEntry& e) { got.push_back(e); });
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0].filter, "a/+/c");
    EXPECT_EQ(got[0].options.no_local, v5);
    EXPECT_EQ(got[0].options.retain_as_published, v5);
    EXPECT_EQ(got[1].options.retain_handling, v5 ? 2 : 0);
    EXPECT_EQ(got[2].filter, "$share/g/x/#");
  }

  const uint8_t v5_codes[] = {0x00, 0x01, 0x02, 0x8F, 0x9E, 0xA2};
  const uint8_t v311_codes[] = {0x00, 0x01, 0x02, 0x80};
  Suback sa;
  sa.packet_id = 42;
  if (v5) {
    sa.reason_codes = v5_codes;
    Fill(PropertyContext::kSuback, a, &sa.properties);
  } else {
    sa.reason_codes = v311_codes;
  }
  ExpectRoundTrip(sa, v);

  const std::string_view filters[] = {"a/b", "c/#", "$share/g/+"};
  Unsubscribe un;
  un.packet_id = 9;
  un.filters = TopicFilterList(filters);
  if (v5) Fill(PropertyContext::kUnsubscribe, a, &un.properties);
  ExpectRoundTrip(un, v);

  const uint8_t unsub_codes[] = {0x00, 0x11, 0x87};
  Unsuback ua;
  ua.packet_id = 9;
  if (v5) {
    ua.reason_codes = unsub_codes;
    Fill(PropertyContext::kUnsuback, a, &ua.properties);
  }
  ExpectRoundTrip(ua, v);

  ExpectRoundTrip(Pingreq{}, v);
  ExpectRoundTrip(Pingresp{}, v);
  Disconnect d;
  ExpectRoundTrip(d, v);
  if (v5) {
    d.reason = ReasonCode::kDisconnectWithWillMessage;
    Fill(PropertyContext::kDisconnect, a, &d.properties);
    ExpectRoundTrip(d, v);
    Auth au;
    au.reason = ReasonCode::kContinueAuthentication;
    Fill(PropertyContext::kAuth, a, &au.properties);
    ExpectRoundTrip(au, v);
  }
}

INSTANTIATE_TEST_SUITE_P(Versions, RoundTrip,
                         testing::Values(Version::k311, Version::k5),
                         [](const auto& info) {
                           return info.param == Version::k5 ? "v5" : "v311";
                         });

TEST(RoundTrip, DecodedPropertiesKeepEveryValue) {
  AllProps a;
  Publish p;
  p.topic = "t";
  Fill(PropertyContext::kPublish, a, &p.properties);
  const Bytes wire = EncodeOrDie(p, Version::k5);
  Publish q = DecodeAs<Publish>(wire, Version::k5);
  EXPECT_EQ(q.properties.payload_format_indicator, 1);
  EXPECT_EQ(q.properties.message_expiry_interval, 3600u);
  EXPECT_EQ(q.properties.content_type, "text/plain");
  EXPECT_EQ(q.properties.response_topic, "reply/here");
  ASSERT_TRUE(q.properties.correlation_data.has_value());
  EXPECT_EQ(q.properties.correlation_data->size(), 3u);
  EXPECT_EQ(q.properties.topic_alias, 12);
  std::vector<uint32_t> ids;
  q.properties.subscription_ids.ForEach(
      [&](uint32_t id) { ids.push_back(id); });
  EXPECT_EQ(ids, (std::vector<uint32_t>{5, 268435455}));
  EXPECT_EQ(q.properties.subscription_ids.first(), 5u);
  std::vector<std::string> pairs;
  q.properties.user_properties.ForEach(
      [&](std::string_view k, std::string_view v) {
        pairs.push_back(std::string(k) + "=" + std::string(v));
      });
  EXPECT_EQ(pairs, (std::vector<std::string>{"k1=v1", "k2=\xC3\xA9"}));
}

TEST(PublishHeader, HeaderPlusTailEqualsWholePacket) {
  for (Version v : {Version::k311, Version::k5}) {
    // The forwarded properties, pre-encoded, then the payload: the shared
    // tail of a fan-out.
    Properties forwarded;
    forwarded.content_type = "json";
    StringPair pair[] = {{"a", "b"}};
    forwarded.user_properties = UserProperties(pair);
    Bytes tail(PropertiesSize(forwarded));
    WireWriter tw(tail);
    EncodePropertyList(forwarded, tw);
    ASSERT_FALSE(tw.overflow());
    const size_t tail_props = v == Version::k5 ? tail.size() : 0;
    if (v != Version::k5) tail.clear();
    const Bytes payload = Raw("the payload");
    tail.insert(tail.end(), payload.begin(), payload.end());

    Publish header;
    header.topic = "x/y";
    header.qos = 1;
    header.packet_id = 77;
    uint32_t sub_id[] = {9};
    if (v == Version::k5) {
      header.properties.subscription_ids = SubscriptionIds(sub_id);
      header.properties.message_expiry_interval = 5;
    }
    Bytes out(64);
    EncodeResult r =
        EncodePublishHeader(header, v, tail_props, payload.size(), out);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.size, PublishHeaderSize(header, v, tail_props, payload.size()));
    out.resize(r.size);
    out.insert(out.end(), tail.begin(), tail.end());

    Publish whole = header;
    whole.payload = payload;
    if (v == Version::k5) {
      whole.properties.raw_extra =
          std::span<const std::byte>(tail.data(), tail_props);
    }
    EXPECT_EQ(out, EncodeOrDie(whole, v));
    Publish back = DecodeAs<Publish>(out, v);
    EXPECT_EQ(AsString(back.payload), "the payload");
    if (v == Version::k5) {
      EXPECT_EQ(back.properties.content_type, "json");
      EXPECT_EQ(back.properties.subscription_ids.first(), 9u);
    }
  }
}

TEST(Encode, ReportsTooSmallAndInvalid) {
  Publish p;
  p.topic = "a/b";
  p.qos = 1;
  p.packet_id = 1;
  const Bytes payload = Raw("0123456789");
  p.payload = payload;
  const size_t size = EncodedSize(Packet(p), Version::k5);
  for (size_t n = 0; n < size; ++n) {
    Bytes out(n);
    EncodeResult r = Encode(p, Version::k5, out);
    EXPECT_EQ(r.error, EncodeError::kBufferTooSmall) << n;
  }
  const std::string long_topic(70000, 'a');
  p.topic = long_topic;
  Bytes out(80000);
  EXPECT_EQ(Encode(p, Version::k5, out).error, EncodeError::kInvalid);
  EXPECT_EQ(EncodedSize(Packet(p), Version::k5), 0u);
  Auth auth;
  EXPECT_EQ(Encode(auth, Version::k311, out).error, EncodeError::kInvalid);
}

// ---- Malformed input
// ---------------------------------------------------------

Bytes Packet311(int first, const Bytes& body) {
  return Cat({B({first, int(body.size())}), body});
}

TEST(Malformed, FixedHeaderFlags) {
  // MQTT-2.1.3-1: reserved flags.
  EXPECT_EQ(DecodeError(B({0xC1, 0x00}), Version::k5),
            ReasonCode::kMalformedPacket);  // PINGREQ with a flag
  EXPECT_EQ(DecodeError(B({0x60, 0x02, 0x00, 0x01}), Version::k311),
            ReasonCode::kMalformedPacket);  // PUBREL without 0010
  EXPECT_EQ(DecodeError(B({0x80, 0x06, 0, 1, 0, 1, 'a', 0}), Version::k311),
            ReasonCode::kMalformedPacket);  // SUBSCRIBE without 0010
  EXPECT_EQ(DecodeError(B({0xA0, 0x05, 0, 1, 0, 1, 'a'}), Version::k311),
            ReasonCode::kMalformedPacket);  // UNSUBSCRIBE without 0010
  EXPECT_EQ(DecodeError(B({0x00, 0x00}), Version::k5),
            ReasonCode::kMalformedPacket);  // reserved type 0
  EXPECT_EQ(DecodeError(B({0xF0, 0x00}), Version::k311),
            ReasonCode::kMalformedPacket);  // AUTH does not exist in 3.1.1
  // MQTT-3.3.1-4: QoS 3.
  EXPECT_EQ(
      DecodeError(Packet311(0x36, Cat({Str("a"), B({0, 1})})), Version::k311),
      ReasonCode::kMalformedPacket);
}

TEST(Malformed, Publish) {
  // MQTT-3.3.1-2: DUP on QoS 0.
  EXPECT_EQ(DecodeError(Packet311(0x38, Str("a")), Version::k311),
            ReasonCode::kProtocolError);
  // MQTT-3.3.2-2: wildcards in the topic name.
  EXPECT_EQ(DecodeError(Packet311(0x30, Str("a/+")), Version::k311),
            ReasonCode::kMalformedPacket);
  EXPECT_EQ(
      DecodeError(Packet311(0x30, Cat({Str("a/#"), B({0})})), Version::k5),
      ReasonCode::kMalformedPacket);
  // MQTT-4.7.3-1: an empty topic in 3.1.1.
  EXPECT_EQ(DecodeError(Packet311(0x30, Str("")), Version::k311),
            ReasonCode::kMalformedPacket);
  // Packet id 0 at QoS 1 (MQTT-2.2.1-3).
  EXPECT_EQ(
      DecodeError(Packet311(0x32, Cat({Str("a"), B({0, 0})})), Version::k311),
      ReasonCode::kMalformedPacket);
  // Missing packet id.
  EXPECT_EQ(DecodeError(Packet311(0x32, Str("a")), Version::k311),
            ReasonCode::kMalformedPacket);
  // U+0000 in the topic (MQTT-1.5.4-2), and a surrogate (MQTT-1.5.4-1).
  EXPECT_EQ(DecodeError(Packet311(0x30, Cat({B({0, 3, 'a', 0, 'b'})})),
                        Version::k311),
            ReasonCode::kMalformedPacket);
  EXPECT_EQ(DecodeError(Packet311(0x30, Cat({B({0, 3, 0xED, 0xA0, 0x80})})),
                        Version::k311),
            ReasonCode::kMalformedPacket);
  // v5: property length past the end.
  EXPECT_EQ(DecodeError(Packet311(0x30, Cat({Str("a"), B({0x05, 0x01})})),
                        Version::k5),
            ReasonCode::kMalformedPacket);
}

Bytes PublishWithProps(const Bytes& props) {
  return Packet311(0x30, Cat({Str("t"), B({int(props.size())}), props}));
}

TEST(Malformed, Properties) {
  // A duplicate property is a Protocol Error (§2.2.2.2).
  EXPECT_EQ(
      DecodeError(PublishWithProps(B({0x01, 0x00, 0x01, 0x01})), Version::k5),
      ReasonCode::kProtocolError);
  EXPECT_EQ(
      DecodeError(PublishWithProps(B({0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2})),
                  Version::k5),
      ReasonCode::kProtocolError);
  // User properties may repeat; so may subscription ids in a PUBLISH.
  EXPECT_EQ(DecodeError(PublishWithProps(B({0x26, 0, 1, 'k', 0, 1, 'v', 0x26, 0,
                                            1, 'k', 0, 1, 'v'})),
                        Version::k5),
            ReasonCode::kSuccess);
  EXPECT_EQ(
      DecodeError(PublishWithProps(B({0x0B, 0x01, 0x0B, 0x02})), Version::k5),
      ReasonCode::kSuccess);
  // A property of another packet (Session Expiry in PUBLISH) and an unknown
  // identifier are malformed (§2.2.2.2).
  EXPECT_EQ(DecodeError(PublishWithProps(B({0x11, 0, 0, 0, 1})), Version::k5),
            ReasonCode::kMalformedPacket);
  EXPECT_EQ(DecodeError(PublishWithProps(B({0x7F, 0x00})), Version::k5),
            ReasonCode::kMalformedPacket);
  // Value ranges.
  EXPECT_EQ(DecodeError(PublishWithProps(B({0x01, 0x02})), Version::k5),
            ReasonCode::kProtocolError);  // payload format 2
  EXPECT_EQ(DecodeError(PublishWithProps(B({0x0B, 0x00})), Version::k5),
            ReasonCode::kProtocolError);  // subscription id 0
  // A value that runs past the block.
  EXPECT_EQ(DecodeError(PublishWithProps(B({0x02, 0, 0})), Version::k5),
            ReasonCode::kMalformedPacket);
  // A bad varint as the subscription id.
  EXPECT_EQ(DecodeError(PublishWithProps(B({0x0B, 0x80, 0x80, 0x80, 0x80})),
                        Version::k5),
            ReasonCode::kMalformedPacket);
  // Bad UTF-8 in a user property (MQTT-1.5.7-1).
  EXPECT_EQ(DecodeError(PublishWithProps(B({0x26, 0, 1, 0xC0, 0, 1, 'v'})),
                        Version::k5),
            ReasonCode::kMalformedPacket);
}

Bytes ConnectBody(int level, int flags, const Bytes& rest) {
  return Cat({Str("MQTT"), B({level, flags, 0, 60}), rest});
}

TEST(Malformed, Connect) {
  auto connect = [](const Bytes& body) { return Packet311(0x10, body); };
  // MQTT-3.1.2-3: the reserved flag.
  EXPECT_EQ(DecodeError(connect(ConnectBody(4, 0x03, Str("c"))), Version::k311),
            ReasonCode::kMalformedPacket);
  // MQTT-3.1.2-11/-13: will QoS or retain without the will flag.
  EXPECT_EQ(DecodeError(connect(ConnectBody(4, 0x0A, Str("c"))), Version::k311),
            ReasonCode::kMalformedPacket);
  EXPECT_EQ(DecodeError(connect(ConnectBody(4, 0x22, Str("c"))), Version::k311),
            ReasonCode::kMalformedPacket);
  // MQTT-3.1.2-12: will QoS 3.
  EXPECT_EQ(DecodeError(connect(ConnectBody(
                            4, 0x1E, Cat({Str("c"), Str("t"), Str("p")}))),
                        Version::k311),
            ReasonCode::kMalformedPacket);
  // 3.1.1 MQTT-3.1.2-22: a password without a user name.
  EXPECT_EQ(
      DecodeError(connect(ConnectBody(4, 0x42, Cat({Str("c"), Str("p")}))),
                  Version::k311),
      ReasonCode::kMalformedPacket);
  // MQTT-3.1.2-1 / -2: another protocol name or level.
  EXPECT_EQ(
      DecodeError(connect(Cat({Str("MQIsdp"), B({3, 2, 0, 60}), Str("c")})),
                  Version::k311),
      ReasonCode::kUnsupportedProtocolVersion);
  EXPECT_EQ(DecodeError(connect(ConnectBody(6, 0x02, Str("c"))), Version::k5),
            ReasonCode::kUnsupportedProtocolVersion);
  // Trailing bytes after the last field.
  EXPECT_EQ(DecodeError(connect(ConnectBody(4, 0x02, Cat({Str("c"), B({0})}))),
                        Version::k311),
            ReasonCode::kMalformedPacket);
  // The client id missing.
  EXPECT_EQ(DecodeError(connect(ConnectBody(4, 0x02, B({}))), Version::k311),
            ReasonCode::kMalformedPacket);
  // v5: a will property outside the will (Will Delay in CONNECT).
  EXPECT_EQ(
      DecodeError(connect(ConnectBody(
                      5, 0x02, Cat({B({5, 0x18, 0, 0, 0, 1}), Str("c")}))),
                  Version::k5),
      ReasonCode::kMalformedPacket);
  // v5: Receive Maximum 0, and a duplicate.
  EXPECT_EQ(DecodeError(connect(ConnectBody(
                            5, 0x02, Cat({B({3, 0x21, 0, 0}), Str("c")}))),
                        Version::k5),
            ReasonCode::kProtocolError);
  EXPECT_EQ(DecodeError(
                connect(ConnectBody(
                    5, 0x02, Cat({B({6, 0x21, 0, 1, 0x21, 0, 2}), Str("c")}))),
                Version::k5),
            ReasonCode::kProtocolError);
  // v5: Request Problem Information 2.
  EXPECT_EQ(DecodeError(
                connect(ConnectBody(5, 0x02, Cat({B({2, 0x17, 2}), Str("c")}))),
                Version::k5),
            ReasonCode::kProtocolError);
}

TEST(Malformed, Subscribe) {
  auto sub = [](const Bytes& body) { return Packet311(0x82, body); };
  // 5.0 MQTT-3.8.3-2 / 3.1.1 MQTT-3.8.3-3: no topic filter.
  EXPECT_EQ(DecodeError(sub(B({0, 1})), Version::k311),
            ReasonCode::kProtocolError);
  EXPECT_EQ(DecodeError(sub(B({0, 1, 0})), Version::k5),
            ReasonCode::kProtocolError);
  // 3.1.1 MQTT-3-8.3-4: reserved bits of the requested QoS byte.
  EXPECT_EQ(
      DecodeError(sub(Cat({B({0, 1}), Str("a"), B({0x04})})), Version::k311),
      ReasonCode::kMalformedPacket);
  // QoS 3.
  EXPECT_EQ(
      DecodeError(sub(Cat({B({0, 1}), Str("a"), B({0x03})})), Version::k311),
      ReasonCode::kMalformedPacket);
  // 5.0 MQTT-3.8.3-5: bits 7-6 reserved.
  EXPECT_EQ(
      DecodeError(sub(Cat({B({0, 1, 0}), Str("a"), B({0x40})})), Version::k5),
      ReasonCode::kMalformedPacket);
  // Retain Handling 3 is a Protocol Error.
  EXPECT_EQ(
      DecodeError(sub(Cat({B({0, 1, 0}), Str("a"), B({0x30})})), Version::k5),
      ReasonCode::kProtocolError);
  // MQTT-3.8.3-4: No Local on a shared subscription.
  EXPECT_EQ(DecodeError(sub(Cat({B({0, 1, 0}), Str("$share/g/a"), B({0x04})})),
                        Version::k5),
            ReasonCode::kProtocolError);
  // Options byte missing.
  EXPECT_EQ(DecodeError(sub(Cat({B({0, 1}), Str("a")})), Version::k311),
            ReasonCode::kMalformedPacket);
  // Two subscription identifiers in SUBSCRIBE.
  EXPECT_EQ(
      DecodeError(sub(Cat({B({0, 1, 4, 0x0B, 1, 0x0B, 2}), Str("a"), B({0})})),
                  Version::k5),
      ReasonCode::kProtocolError);
  // MQTT-3.10.3-2: UNSUBSCRIBE with no filter.
  EXPECT_EQ(DecodeError(Packet311(0xA2, B({0, 1})), Version::k311),
            ReasonCode::kProtocolError);
}

TEST(Malformed, Others) {
  // PINGREQ with a body (§3.12).
  EXPECT_EQ(DecodeError(B({0xC0, 0x01, 0x00}), Version::k311),
            ReasonCode::kMalformedPacket);
  // 3.1.1 DISCONNECT with a body.
  EXPECT_EQ(DecodeError(B({0xE0, 0x01, 0x00}), Version::k311),
            ReasonCode::kMalformedPacket);
  // A reason code DISCONNECT does not allow.
  EXPECT_EQ(DecodeError(B({0xE0, 0x01, 0x01}), Version::k5),
            ReasonCode::kMalformedPacket);
  // PUBACK 3.1.1 with an extra byte; v5 PUBREL with a PUBACK-only code.
  EXPECT_EQ(DecodeError(B({0x40, 0x03, 0, 1, 0}), Version::k311),
            ReasonCode::kMalformedPacket);
  EXPECT_EQ(DecodeError(B({0x62, 0x03, 0, 1, 0x10}), Version::k5),
            ReasonCode::kMalformedPacket);
  // CONNACK reserved flag bits (MQTT-3.2.2-1), session present on refusal.
  EXPECT_EQ(DecodeError(B({0x20, 0x02, 0x02, 0x00}), Version::k311),
            ReasonCode::kMalformedPacket);
  EXPECT_EQ(DecodeError(B({0x20, 0x02, 0x01, 0x05}), Version::k311),
            ReasonCode::kProtocolError);
  // SUBACK codes.
  EXPECT_EQ(DecodeError(B({0x90, 0x03, 0, 1, 0x03}), Version::k311),
            ReasonCode::kMalformedPacket);
  EXPECT_EQ(DecodeError(B({0x90, 0x02, 0, 1}), Version::k311),
            ReasonCode::kProtocolError);
}

TEST(Frame, RemainingLength) {
  Frame f;
  size_t needed = 0;
  EXPECT_EQ(ParseFrame(B({0x30}), 100, &f, &needed), FrameResult::kNeedMore);
  EXPECT_EQ(ParseFrame(B({0x30, 0x80}), 100, &f, &needed),
            FrameResult::kNeedMore);
  EXPECT_EQ(ParseFrame(B({0x30, 0xFF, 0xFF, 0xFF, 0xFF}), kMaxPacketBytes, &f,
                       &needed),
            FrameResult::kMalformed);
  EXPECT_EQ(ParseFrame(B({0x30, 0x80, 0x00}), 100, &f, &needed),
            FrameResult::kMalformed);
  EXPECT_EQ(ParseFrame(B({0x30, 0x7F}), 100, &f, &needed),
            FrameResult::kTooLarge);
  EXPECT_EQ(ParseFrame(B({0x30, 0x05, 0}), 100, &f, &needed),
            FrameResult::kNeedMore);
  EXPECT_EQ(needed, 7u);
}

}  // namespace
}  // namespace ringlab::mqtt
