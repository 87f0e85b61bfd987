#include "udp/internal/siphash.h"

#include <bit>

namespace ringlab::rudp::internal {
namespace {

uint64_t LoadLittle64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | uint64_t(p[i]);
  return v;
}

struct State {
  uint64_t v0, v1, v2, v3;
  // One SipRound (paper §2, "SipRound").
  void Round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }
  void Compress(uint64_t m) {
    v3 ^= m;
    Round();
    Round();  // c = 2
    v0 ^= m;
  }
};

}  // namespace

uint64_t SipHash24(const SipKey& key, std::span<const std::byte> message) {
  // Initialization with the constants "somepseudorandomlygeneratedbytes".
  State s{key.k0 ^ 0x736f6d6570736575ull, key.k1 ^ 0x646f72616e646f6dull,
          key.k0 ^ 0x6c7967656e657261ull, key.k1 ^ 0x7465646279746573ull};
  const size_t n = message.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) s.Compress(LoadLittle64(message.data() + i));
  // The last block: remaining bytes, little endian, length mod 256 on top.
  uint64_t last = uint64_t(n & 0xff) << 56;
  for (size_t j = 0; i + j < n; ++j)
    last |= uint64_t(message[i + j]) << (8 * j);
  s.Compress(last);
  // Finalization: d = 4 rounds.
  s.v2 ^= 0xff;
  for (int r = 0; r < 4; ++r) s.Round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

}  // namespace ringlab::rudp::internal
