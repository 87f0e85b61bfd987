// The types of Cyclone DDS's ddsperf tool (ddsperf_types.idl), described
// for rtps/cdr.h, so our programs speak ddsperf's topics:
//
//   @final struct KeyedSeq { unsigned long seq; @key unsigned long keyval;
//                            sequence<octet> baggage; };
//   @final struct OneULong { unsigned long seq; };
//
// ddsperf's conventions (checked against its source): topics
// "DDSPerf{R|U}{Ping|Pong|Data}KS" (R reliable, U best effort), type name
// "KeyedSeq", a "size" that counts the 12 fixed bytes (seq, keyval, the
// sequence length), participant USER_DATA "DDSPerf:<has_data_reader>:<pid>:
// <hostname>", pong readers in the partition named after the pinging
// participant's GUID (see DdsPerfGuidPartition), pong source timestamp =
// ping source timestamp | 1.
//
// Plain values; no allocation beyond the baggage vector.
#ifndef RINGLAB_RTPS_DDSPERF_TYPES_H_
#define RINGLAB_RTPS_DDSPERF_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "rtps/cdr.h"

namespace ringlab::rtps {

struct KeyedSeq {
  uint32_t seq = 0;
  uint32_t keyval = 0;
  std::vector<uint8_t> baggage;
};

template <>
struct CdrType<KeyedSeq> {
  static constexpr bool kPrimitive = false;
  static constexpr size_t kMinBytes = 12;
  static void Write(CdrWriter& w, const KeyedSeq& v) {
    w.Write(v.seq);
    w.Write(v.keyval);
    WriteCdr(w, v.baggage);
  }
  static bool Read(CdrReader& r, KeyedSeq* v) {
    return r.Read(&v->seq) && r.Read(&v->keyval) && ReadCdr(r, &v->baggage);
  }
};

template <>
struct TopicType<KeyedSeq> {
  static constexpr std::string_view kTypeName = "KeyedSeq";
  static constexpr bool kKeyed = true;
  static constexpr size_t kMaxKeyBytes = 4;
  static void WriteKey(CdrWriter& w, const KeyedSeq& v) { w.Write(v.keyval); }
  // Only the key from a payload (seq, then keyval).
  static bool ReadKey(CdrReader& r, CdrWriter& key) {
    uint32_t seq = 0, keyval = 0;
    if (!r.Read(&seq) || !r.Read(&keyval)) return false;
    key.Write(keyval);
    return true;
  }
};

// ddsperf's partition for pongs to a participant: its GUID as four groups
// of 8 lowercase hex digits joined by '_'.
std::string DdsPerfGuidPartition(const Guid& participant);

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_DDSPERF_TYPES_H_
