// libFuzzer target for Endpoint::Parse: any byte string must either parse to
// an endpoint whose ToString() parses back to the same endpoint, or fail with
// a status. It must never crash or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "transport/endpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ringlab::Endpoint> parsed = ringlab::Endpoint::Parse(text);
  if (!parsed.ok()) return 0;
  absl::StatusOr<ringlab::Endpoint> again =
      ringlab::Endpoint::Parse(parsed->ToString());
  if (!again.ok() || *again != *parsed) std::abort();
  return 0;
}
