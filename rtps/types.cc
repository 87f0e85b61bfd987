#include "rtps/types.h"

#include <cstdio>

#include "absl/strings/str_format.h"

namespace ringlab::rtps {

std::array<uint8_t, 16> Guid::Bytes() const {
  std::array<uint8_t, 16> out{};
  std::memcpy(out.data(), prefix.bytes.data(), 12);
  out[12] = static_cast<uint8_t>(entity.value >> 24);
  out[13] = static_cast<uint8_t>(entity.value >> 16);
  out[14] = static_cast<uint8_t>(entity.value >> 8);
  out[15] = static_cast<uint8_t>(entity.value);
  return out;
}

Guid Guid::FromBytes(const uint8_t* b) {
  Guid g;
  std::memcpy(g.prefix.bytes.data(), b, 12);
  g.entity.value = (uint32_t{b[12]} << 24) | (uint32_t{b[13]} << 16) |
                   (uint32_t{b[14]} << 8) | b[15];
  return g;
}

std::string Guid::ToString() const {
  std::array<uint8_t, 16> b = Bytes();
  return absl::StrFormat(
      "%02x%02x%02x%02x:%02x%02x%02x%02x:%02x%02x%02x%02x:%02x%02x%02x%02x",
      b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
      b[12], b[13], b[14], b[15]);
}

Locator Locator::UdpV4(uint32_t a, uint16_t port) {
  Locator l;
  l.kind = kUdpV4;
  l.port = port;
  l.address[12] = static_cast<uint8_t>(a >> 24);
  l.address[13] = static_cast<uint8_t>(a >> 16);
  l.address[14] = static_cast<uint8_t>(a >> 8);
  l.address[15] = static_cast<uint8_t>(a);
  return l;
}

Locator Locator::FromEndpoint(const Endpoint& e) {
  if (e.is_ipv4()) return UdpV4(e.ipv4_host_order(), e.port());
  Locator l;
  if (e.family() == AF_INET6) {
    l.kind = kUdpV6;
    l.port = e.port();
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(e.sockaddr());
    std::memcpy(l.address.data(), &sin6->sin6_addr, 16);
  }
  return l;
}

Endpoint Locator::ToEndpoint() const {
  if (port > 65535) return Endpoint();
  if (kind == kUdpV4) {
    return Endpoint::Ipv4(ipv4_host_order(), static_cast<uint16_t>(port));
  }
  if (kind == kUdpV6) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(static_cast<uint16_t>(port));
    std::memcpy(&sin6.sin6_addr, address.data(), 16);
    return Endpoint::FromSockaddr(reinterpret_cast<const sockaddr*>(&sin6),
                                  sizeof(sin6));
  }
  return Endpoint();
}

bool Locator::is_multicast() const {
  if (kind == kUdpV4) return (address[12] & 0xf0) == 0xe0;
  if (kind == kUdpV6) return address[0] == 0xff;
  return false;
}

std::string Locator::ToString() const {
  if (kind == kUdpV4) {
    return absl::StrFormat("udp/%d.%d.%d.%d:%u", address[12], address[13],
                           address[14], address[15], port);
  }
  Endpoint e = ToEndpoint();
  if (e.valid()) return "udp6/" + e.ToString();
  return absl::StrFormat("kind%d:%u", kind, port);
}

// RTPS 2.5 §9.3.2: fraction is in units of 2^-32 s. Rounding up on the way
// out and to nearest on the way back makes ns -> wire -> ns the identity
// (one fraction step is ~0.23 ns, finer than a nanosecond).
RtpsTime RtpsTime::FromNanos(int64_t ns) {
  if (ns == kInfiniteNanos) return Infinite();
  constexpr int64_t kNs = 1'000'000'000;
  int64_t s = ns / kNs;
  int64_t rem = ns % kNs;
  if (rem < 0) {
    rem += kNs;
    --s;
  }
  RtpsTime t;
  t.seconds = static_cast<int32_t>(s);
  t.fraction = static_cast<uint32_t>(((rem << 32) + (kNs - 1)) / kNs);
  return t;
}

int64_t RtpsTime::ToNanos() const {
  if (*this == Infinite()) return kInfiniteNanos;
  constexpr int64_t kNs = 1'000'000'000;
  int64_t frac_ns =
      static_cast<int64_t>((uint64_t{fraction} * kNs + (1ull << 31)) >> 32);
  return int64_t{seconds} * kNs + frac_ns;
}

RtpsDuration DurationFromNanos(int64_t ns) {
  if (ns >= kInfiniteNanos) return RtpsTime::Infinite();
  return RtpsTime::FromNanos(ns);
}

int64_t DurationToNanos(RtpsDuration d) {
  if (d == RtpsTime::Infinite() || d.seconds == 0x7fffffff) {
    return kInfiniteNanos;
  }
  return d.ToNanos();
}

}  // namespace ringlab::rtps
