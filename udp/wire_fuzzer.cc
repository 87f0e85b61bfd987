// libFuzzer target: the rudp packet parser. Any bytes are parsed as a long
// header, or as a short header and a frame sequence; range lists and
// MESSAGE bounds are walked and checked against what the parser promised.
// fuzz-deps: udp/wire.cc
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "udp/wire.h"

using namespace ringlab::rudp::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(
      reinterpret_cast<const std::byte*>(data), size);
  if (IsLongHeader(bytes)) {
    LongHeader h;
    if (ParseLongHeader(bytes, &h) == ParseError::kOk) {
      if (h.token.size() > kMaxTokenBytes) std::abort();
      if (h.params.channel_count > kMaxChannels) std::abort();
      // Writing back what was parsed must succeed (INITIAL needs room).
      std::byte out[2048];
      if (WriteLongHeader(h, out) == 0) std::abort();
    }
    return 0;
  }
  Reader r(bytes);
  ShortHeader h;
  if (ParseShortHeader(r, &h) != ParseError::kOk) return 0;
  Frame f;
  while (r.remaining() > 0) {
    const size_t before = r.remaining();
    if (ParseFrame(r, &f) != ParseError::kOk) break;
    if (r.remaining() >= before) std::abort();  // every frame consumes bytes
    switch (f.type) {
      case FrameType::kAck:
      case FrameType::kNack: {
        // The parser validated the list: iterating never underflows and
        // ends at `smallest`.
        auto it = f.ranges.ranges();
        uint64_t low, high, count = 0, last_low = f.ranges.largest;
        while (it.Next(&low, &high)) {
          if (low > high || high > last_low) std::abort();
          last_low = low;
          ++count;
        }
        if (count != f.ranges.range_count + 1) std::abort();
        if (last_low != f.ranges.smallest) std::abort();
        break;
      }
      case FrameType::kMessage:
        if (f.fragment_offset + f.data.size() > f.message_length) std::abort();
        if (f.fragment_offset > f.data_offset) std::abort();
        break;
      default:
        break;
    }
  }
  return 0;
}
