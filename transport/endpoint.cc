#include "transport/endpoint.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringlab {
namespace {
// Debian's abseil keeps its own string_view type; bridge for StrCat.
absl::string_view Sv(std::string_view v) { return {v.data(), v.size()}; }
}  // namespace

Endpoint::Endpoint() {
  std::memset(&storage_, 0, sizeof(storage_));
  storage_.ss_family = AF_UNSPEC;
}

absl::StatusOr<Endpoint> Endpoint::FromHostPort(std::string_view host,
                                                uint16_t port) {
  if (host.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError("host contains a NUL byte");
  }
  Endpoint ep;
  std::string host_copy(host);  // inet_pton needs a NUL-terminated string.
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ep.storage_);
  if (inet_pton(AF_INET, host_copy.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    return ep;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ep.storage_);
  if (inet_pton(AF_INET6, host_copy.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    return ep;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("not a numeric IPv4/IPv6 address: '", Sv(host), "'"));
}

absl::StatusOr<Endpoint> Endpoint::Parse(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError("endpoint contains a NUL byte");
  }
  std::string_view host;
  std::string_view port_text;
  bool bracketed = false;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() ||
        text[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("bad endpoint '", Sv(text), "': expected [ipv6]:port"));
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    bracketed = true;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad endpoint '", Sv(text), "': expected host:port"));
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      // "::1:80" is ambiguous; IPv6 needs brackets.
      return absl::InvalidArgumentError(absl::StrCat(
          "bad endpoint '", Sv(text), "': write IPv6 as [address]:port"));
    }
  }
  // Digits only: no sign, no spaces, at most 5 of them.
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad port in endpoint '", Sv(text), "'"));
  }
  uint32_t port = 0;
  for (char c : port_text) port = port * 10 + static_cast<uint32_t>(c - '0');
  if (port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port out of range in endpoint '", Sv(text), "'"));
  }
  absl::StatusOr<Endpoint> ep = FromHostPort(host, static_cast<uint16_t>(port));
  if (ep.ok() && bracketed && !ep->is_ipv4()) return ep;
  if (ep.ok() && bracketed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad endpoint '", Sv(text), "': brackets are for IPv6 only"));
  }
  return ep;
}

Endpoint Endpoint::FromSockaddr(const struct sockaddr* addr, socklen_t len) {
  Endpoint ep;
  if (addr == nullptr) return ep;
  if (addr->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    std::memcpy(&ep.storage_, addr, sizeof(sockaddr_in));
  } else if (addr->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    std::memcpy(&ep.storage_, addr, sizeof(sockaddr_in6));
  }
  return ep;
}

Endpoint Endpoint::Ipv4(uint32_t host_order_addr, uint16_t port) {
  Endpoint ep;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ep.storage_);
  v4->sin_family = AF_INET;
  v4->sin_addr.s_addr = htonl(host_order_addr);
  v4->sin_port = htons(port);
  return ep;
}

uint16_t Endpoint::port() const {
  if (storage_.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  }
  if (storage_.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  }
  return 0;
}

void Endpoint::set_port(uint16_t port) {
  if (storage_.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&storage_)->sin_port = htons(port);
  } else if (storage_.ss_family == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(&storage_)->sin6_port = htons(port);
  }
}

uint32_t Endpoint::ipv4_host_order() const {
  if (storage_.ss_family != AF_INET) return 0;
  return ntohl(
      reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr);
}

bool Endpoint::is_multicast() const {
  if (storage_.ss_family == AF_INET) {
    return (ipv4_host_order() >> 28) == 0xe;
  }
  if (storage_.ss_family == AF_INET6) {
    return reinterpret_cast<const sockaddr_in6*>(&storage_)
               ->sin6_addr.s6_addr[0] == 0xff;
  }
  return false;
}

socklen_t Endpoint::socklen() const {
  if (storage_.ss_family == AF_INET) return sizeof(sockaddr_in);
  if (storage_.ss_family == AF_INET6) return sizeof(sockaddr_in6);
  return 0;
}

std::string Endpoint::HostString() const {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (storage_.ss_family == AF_INET) {
    inet_ntop(AF_INET,
              &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf,
              sizeof(buf));
  } else if (storage_.ss_family == AF_INET6) {
    inet_ntop(AF_INET6,
              &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf,
              sizeof(buf));
  } else {
    return "unspecified";
  }
  return buf;
}

std::string Endpoint::ToString() const {
  if (storage_.ss_family == AF_INET6) {
    return absl::StrCat("[", HostString(), "]:", port());
  }
  if (storage_.ss_family == AF_INET)
    return absl::StrCat(HostString(), ":", port());
  return "unspecified";
}

uint64_t Endpoint::HashBytes() const {
  if (storage_.ss_family == AF_INET) return ipv4_host_order();
  if (storage_.ss_family == AF_INET6) {
    const auto* a =
        reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr.s6_addr;
    uint64_t lo, hi;
    std::memcpy(&hi, a, 8);
    std::memcpy(&lo, a + 8, 8);
    return hi * 0x9e3779b97f4a7c15ULL ^ lo;
  }
  return 0;
}

bool operator==(const Endpoint& a, const Endpoint& b) {
  // Compare the meaningful fields only: padding such as sin_zero may differ
  // between an address the kernel wrote and one we built.
  if (a.family() != b.family()) return false;
  if (a.family() == AF_INET) {
    return a.port() == b.port() && a.ipv4_host_order() == b.ipv4_host_order();
  }
  if (a.family() == AF_INET6) {
    const auto* x = reinterpret_cast<const sockaddr_in6*>(a.sockaddr());
    const auto* y = reinterpret_cast<const sockaddr_in6*>(b.sockaddr());
    return x->sin6_port == y->sin6_port &&
           x->sin6_scope_id == y->sin6_scope_id &&
           std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(in6_addr)) == 0;
  }
  return true;
}

}  // namespace ringlab
