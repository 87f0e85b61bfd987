// libFuzzer target for the /metrics request reader: any bytes, fed in two
// pieces, must give an answer or ask for more, never crash; the response
// for the answer must be well formed.
// fuzz-deps: mqtt/internal/http_request.cc
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "mqtt/internal/http_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ringlab::mqtt::HttpRequestReader;
  const std::span<const std::byte> bytes(
      reinterpret_cast<const std::byte*>(data), size);
  const size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  HttpRequestReader reader;
  HttpRequestReader::Result r = reader.Feed(bytes.first(cut));
  if (r == HttpRequestReader::Result::kNeedMore) {
    r = reader.Feed(bytes.subspan(cut));
  }
  const std::string out = ringlab::mqtt::HttpResponseFor(r, "x 1\n");
  if (out.rfind("HTTP/1.1 ", 0) != 0) std::abort();
  return 0;
}
