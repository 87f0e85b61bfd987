// The body of the codec fuzz targets (codec_v311_fuzzer.cc,
// codec_v5_fuzzer.cc): split the input into stream pieces, decode every
// frame, and check that what decodes re-encodes to a canonical form that
// decodes and re-encodes to the same bytes, and that EncodedSize() agrees.
#ifndef RINGLAB_MQTT_INTERNAL_CODEC_FUZZ_H_
#define RINGLAB_MQTT_INTERNAL_CODEC_FUZZ_H_

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mqtt/packets.h"
#include "mqtt/stream_decoder.h"

namespace ringlab::mqtt::internal {

inline void CheckCanonical(const Packet& packet, Version version) {
  const Version v = std::holds_alternative<Connect>(packet)
                        ? std::get<Connect>(packet).version
                        : version;
  const size_t size = EncodedSize(packet, v);
  if (size == 0) std::abort();  // a decoded packet always fits
  std::vector<std::byte> first(size);
  EncodeResult r = Encode(packet, v, first);
  if (!r.ok() || r.size != size) std::abort();
  Frame frame;
  size_t needed = 0;
  if (ParseFrame(first, kMaxPacketBytes, &frame, &needed) !=
      FrameResult::kFrame) {
    std::abort();
  }
  Packet again;
  if (!DecodePacket(frame, v, &again).ok()) std::abort();
  std::vector<std::byte> second(EncodedSize(again, v));
  r = Encode(again, v, second);
  if (!r.ok() || second != first) std::abort();
}

inline int FuzzCodec(const uint8_t* data, size_t size, Version version) {
  if (size == 0) return 0;
  // The first byte picks the piece size, so packets straddle pieces in
  // every way; the rest is the stream.
  const size_t piece = 1 + data[0] % 64;
  std::span<const std::byte> stream(
      reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  StreamDecoder decoder(1 << 16);
  while (!stream.empty()) {
    std::span<const std::byte> in =
        stream.first(std::min(piece, stream.size()));
    stream = stream.subspan(in.size());
    Frame frame;
    StreamDecoder::Result r;
    while ((r = decoder.Next(&in, &frame)) == StreamDecoder::Result::kFrame) {
      Packet packet;
      if (DecodePacket(frame, version, &packet).ok()) {
        CheckCanonical(packet, version);
      }
    }
    if (r != StreamDecoder::Result::kNeedMore) return 0;
  }
  return 0;
}

}  // namespace ringlab::mqtt::internal

#endif  // RINGLAB_MQTT_INTERNAL_CODEC_FUZZ_H_
