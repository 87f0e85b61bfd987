#include "mqtt/internal/http_request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "mqtt/internal/absl_view.h"

namespace ringlab::mqtt {

HttpRequestReader::Result HttpRequestReader::Feed(
    std::span<const std::byte> bytes) {
  const size_t room = kMaxHeadBytes + 4 - std::min(head_.size(), kMaxHeadBytes);
  head_.append(reinterpret_cast<const char*>(bytes.data()),
               std::min(bytes.size(), room));
  const size_t end = head_.find("\r\n\r\n");
  if (end == std::string::npos) {
    return head_.size() > kMaxHeadBytes ? Result::kBadRequest
                                        : Result::kNeedMore;
  }
  // RFC 9112 §3: request-line = method SP request-target SP HTTP-version.
  const std::string_view line =
      std::string_view(head_).substr(0, head_.find("\r\n"));
  const size_t sp1 = line.find(' ');
  const size_t sp2 =
      sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Result::kBadRequest;
  const std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return Result::kBadRequest;
  }
  if (method != "GET") return Result::kBadMethod;
  target = target.substr(0, target.find('?'));  // a query is ignored
  return target == "/metrics" ? Result::kMetrics : Result::kNotFound;
}

std::string HttpResponseFor(HttpRequestReader::Result result,
                            std::string_view metrics_body) {
  // absl::string_view: Debian's abseil does not take std::string_view.
  absl::string_view status;
  absl::string_view body;
  absl::string_view type = "text/plain; charset=utf-8";
  switch (result) {
    case HttpRequestReader::Result::kMetrics:
      status = "200 OK";
      body = internal::AbslView(metrics_body);
      type = "text/plain; version=0.0.4; charset=utf-8";
      break;
    case HttpRequestReader::Result::kNotFound:
      status = "404 Not Found";
      body = "not found: try /metrics\n";
      break;
    case HttpRequestReader::Result::kBadMethod:
      status = "405 Method Not Allowed";
      body = "GET only\n";
      break;
    default:
      status = "400 Bad Request";
      body = "bad request\n";
      break;
  }
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(),
                      "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace ringlab::mqtt
