// HttpRequestReader: the sans-io HTTP/1.x request-head reader behind
// MetricsServer (mqtt/metrics.h), and the responses it sends.
//
//   HttpRequestReader reader;
//   switch (reader.Feed(bytes)) { case Result::kNeedMore: ...; }
//   std::string out = HttpResponseFor(result, RenderPrometheus(m));
//
// Only the request line is read (RFC 9112 §3); headers are skipped up to
// the blank line. Errors: a head over kMaxHeadBytes or a request line that
// is not "METHOD TARGET HTTP/1.x" gives kBadRequest. Threading: none.
#ifndef RINGLAB_MQTT_INTERNAL_HTTP_REQUEST_H_
#define RINGLAB_MQTT_INTERNAL_HTTP_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ringlab::mqtt {

// The HTTP/1.x request head reader behind MetricsServer (sans-io).
class HttpRequestReader {
 public:
  enum class Result : uint8_t {
    kNeedMore,
    kMetrics,     // GET /metrics
    kNotFound,    // GET elsewhere
    kBadMethod,   // not GET (HEAD is not served either)
    kBadRequest,  // not HTTP/1.x, or the head is over kMaxHeadBytes
  };
  static constexpr size_t kMaxHeadBytes = 8192;
  Result Feed(std::span<const std::byte> bytes);

 private:
  std::string head_;
};

// The full response for a reader result (status line, headers, body).
std::string HttpResponseFor(HttpRequestReader::Result result,
                            std::string_view metrics_body);

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_INTERNAL_HTTP_REQUEST_H_
