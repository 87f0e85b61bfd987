// SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
// 2012): a keyed 64-bit hash. rudp uses it where a value must be
// unpredictable to someone without the key: the handshake cookie's MAC and
// the connection ids a host derives.
//
//   SipKey key{k0, k1};
//   uint64_t mac = SipHash24(key, bytes);
//
// Not a replacement for a cryptographic MAC with a longer tag; a 64-bit tag
// is plenty against blind spoofing of a short-lived cookie. No allocation.
#ifndef RINGLAB_UDP_INTERNAL_SIPHASH_H_
#define RINGLAB_UDP_INTERNAL_SIPHASH_H_

#include <cstddef>
#include <cstdint>
#include <span>

namespace ringlab::rudp::internal {

struct SipKey {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
};

uint64_t SipHash24(const SipKey& key, std::span<const std::byte> message);

}  // namespace ringlab::rudp::internal

#endif  // RINGLAB_UDP_INTERNAL_SIPHASH_H_
