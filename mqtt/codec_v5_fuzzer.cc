// libFuzzer target: the MQTT 5.0 decoder over a byte stream in pieces,
// with a re-encode round-trip check on every packet that decodes.
// fuzz-deps: mqtt/packets.cc mqtt/properties.cc mqtt/stream_decoder.cc
// fuzz-deps: mqtt/topic.cc mqtt/types.cc mqtt/wire.cc
#include <cstddef>
#include <cstdint>

#include "mqtt/internal/codec_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return ringlab::mqtt::internal::FuzzCodec(data, size,
                                            ringlab::mqtt::Version::k5);
}
