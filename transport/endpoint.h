// Endpoint: an IPv4 or IPv6 socket address (address + port).
//
// Used by the Loop for bind/connect/sendto and by the simulated network as a
// node address. It is a small value type (a sockaddr_storage copy); it never
// allocates.
//
//   absl::StatusOr<Endpoint> ep = Endpoint::Parse("127.0.0.1:7400");
//   if (!ep.ok()) return ep.status();           // InvalidArgument, names input
//   ::bind(fd, ep->sockaddr(), ep->socklen());
//   std::string shown = ep->ToString();         // "127.0.0.1:7400"
//
// IPv6 literals use brackets: "[::1]:9000".
#ifndef RINGLAB_TRANSPORT_ENDPOINT_H_
#define RINGLAB_TRANSPORT_ENDPOINT_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace ringlab {

class Endpoint {
 public:
  // An unspecified endpoint (family AF_UNSPEC); `valid()` is false.
  Endpoint();

  // Parses "a.b.c.d:port", "[v6]:port". Port must be 0..65535.
  static absl::StatusOr<Endpoint> Parse(std::string_view text);
  // Host and port given separately; host is a numeric IPv4/IPv6 literal.
  static absl::StatusOr<Endpoint> FromHostPort(std::string_view host,
                                               uint16_t port);
  // Copies a kernel-provided address. Unknown families give an invalid one.
  static Endpoint FromSockaddr(const struct sockaddr* addr, socklen_t len);
  static Endpoint Ipv4(uint32_t host_order_addr, uint16_t port);
  static Endpoint Loopback(uint16_t port) { return Ipv4(0x7f000001, port); }

  bool valid() const { return storage_.ss_family != AF_UNSPEC; }
  int family() const { return storage_.ss_family; }
  bool is_ipv4() const { return storage_.ss_family == AF_INET; }
  uint16_t port() const;
  void set_port(uint16_t port);
  // IPv4 address in host byte order; 0 for IPv6.
  uint32_t ipv4_host_order() const;
  bool is_multicast() const;

  const struct sockaddr* sockaddr() const {
    return reinterpret_cast<const struct sockaddr*>(&storage_);
  }
  struct sockaddr* mutable_sockaddr() {
    return reinterpret_cast<struct sockaddr*>(&storage_);
  }
  socklen_t socklen() const;
  std::string ToString() const;
  std::string HostString() const;

  friend bool operator==(const Endpoint& a, const Endpoint& b);
  friend bool operator!=(const Endpoint& a, const Endpoint& b) {
    return !(a == b);
  }
  template <typename H>
  friend H AbslHashValue(H h, const Endpoint& e) {
    return H::combine(std::move(h), e.family(), e.port(), e.HashBytes());
  }

 private:
  uint64_t HashBytes() const;
  struct sockaddr_storage storage_;
};

}  // namespace ringlab

#endif  // RINGLAB_TRANSPORT_ENDPOINT_H_
