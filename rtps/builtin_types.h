// Two built-in topic types for tools (ringlab_dds pub/sub) and quick tests,
// described for rtps/cdr.h:
//
//   module ringlab { module dds {
//     @final struct String { string data; };            //
//     "ringlab::dds::String"
//     @final struct Bytes { sequence<octet> data; };    //
//     "ringlab::dds::Bytes"
//   }; };
//
// Both are keyless. A peer with the same IDL (Cyclone's idlc compiles the
// snippet above) exchanges them with us.
//
//   DataWriter<DdsString>::Create(dp, Topic<DdsString>("chat"));
//   (*w)->Write(DdsString{"hello"});
//
// Plain values; no allocation beyond the member's storage.
#ifndef RINGLAB_RTPS_BUILTIN_TYPES_H_
#define RINGLAB_RTPS_BUILTIN_TYPES_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "rtps/cdr.h"

namespace ringlab::rtps {

struct DdsString {
  std::string data;
};

struct DdsBytes {
  std::vector<uint8_t> data;
};

template <>
struct CdrType<DdsString> {
  static constexpr bool kPrimitive = false;
  static constexpr size_t kMinBytes = 5;  // length + NUL
  static void Write(CdrWriter& w, const DdsString& v) { w.WriteString(v.data); }
  static bool Read(CdrReader& r, DdsString* v) {
    return r.ReadString(&v->data);
  }
};

template <>
struct TopicType<DdsString> {
  static constexpr std::string_view kTypeName = "ringlab::dds::String";
  static constexpr bool kKeyed = false;
  static constexpr size_t kMaxKeyBytes = 0;
  static void WriteKey(CdrWriter&, const DdsString&) {}
};

template <>
struct CdrType<DdsBytes> {
  static constexpr bool kPrimitive = false;
  static constexpr size_t kMinBytes = 4;
  static void Write(CdrWriter& w, const DdsBytes& v) { WriteCdr(w, v.data); }
  static bool Read(CdrReader& r, DdsBytes* v) { return ReadCdr(r, &v->data); }
};

template <>
struct TopicType<DdsBytes> {
  static constexpr std::string_view kTypeName = "ringlab::dds::Bytes";
  static constexpr bool kKeyed = false;
  static constexpr size_t kMaxKeyBytes = 0;
  static void WriteKey(CdrWriter&, const DdsBytes&) {}
};

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_BUILTIN_TYPES_H_
