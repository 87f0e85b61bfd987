// libFuzzer target: the CDR reader (XTypes 1.3 §7.4) on every supported
// encapsulation, through a type with strings, sequences, arrays and nested
// structs; what decodes must re-encode and decode to the same value.
// fuzz-deps: rtps/cdr.cc rtps/types.cc transport/endpoint.cc
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rtps/cdr.h"

using namespace ringlab::rtps;

namespace {
struct Inner {
  int16_t a = 0;
  double b = 0;
  bool operator==(const Inner& o) const {
    return a == o.a && (b == o.b || (b != b && o.b != o.b));
  }
};
struct Fuzzed {
  uint8_t tag = 0;
  std::string name;
  std::vector<Inner> inners;
  std::array<uint16_t, 3> fixed{};
  std::vector<std::string> names;
  int64_t big = 0;
  bool flag = false;
  bool operator==(const Fuzzed&) const = default;
};
}  // namespace

namespace ringlab::rtps {
template <>
struct CdrType<Inner> {
  static constexpr bool kPrimitive = false;
  static void Write(CdrWriter& w, const Inner& v) {
    w.Write(v.a);
    w.Write(v.b);
  }
  static bool Read(CdrReader& r, Inner* v) {
    return r.Read(&v->a) && r.Read(&v->b);
  }
};
template <>
struct CdrType<Fuzzed> {
  static constexpr bool kPrimitive = false;
  static void Write(CdrWriter& w, const Fuzzed& v) {
    w.Write(v.tag);
    w.WriteString(v.name);
    WriteCdr(w, v.inners);
    WriteCdr(w, v.fixed);
    WriteCdr(w, v.names);
    w.Write(v.big);
    w.Write(v.flag);
  }
  static bool Read(CdrReader& r, Fuzzed* v) {
    return r.Read(&v->tag) && r.ReadString(&v->name) &&
           ReadCdr(r, &v->inners) && ReadCdr(r, &v->fixed) &&
           ReadCdr(r, &v->names) && r.Read(&v->big) && r.Read(&v->flag);
  }
};
template <>
struct TopicType<Fuzzed> {
  static constexpr std::string_view kTypeName = "Fuzzed";
  static constexpr bool kKeyed = true;
  static constexpr size_t kMaxKeyBytes = kUnboundedKey;
  static void WriteKey(CdrWriter& w, const Fuzzed& v) { w.WriteString(v.name); }
};
}  // namespace ringlab::rtps

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data),
                                   size);
  Fuzzed v;
  if (!DeserializeSample(bytes, &v)) return 0;
  (void)ComputeKeyHash(v);
  uint16_t id = static_cast<uint16_t>(data[0] << 8 | data[1]);
  std::vector<std::byte> again;
  if (!SerializeSample(v, static_cast<Encoding>(id), &again)) return 0;
  Fuzzed back;
  if (!DeserializeSample(again, &back) || !(back == v)) __builtin_trap();
  return 0;
}
