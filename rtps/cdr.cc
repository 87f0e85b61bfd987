#include "rtps/cdr.h"

#include <algorithm>

namespace ringlab::rtps {

bool DescribeEncoding(uint16_t id, EncodingInfo* out) {
  EncodingInfo info;
  switch (static_cast<Encoding>(id)) {
    case Encoding::kCdrBe:
      info.endian = Endian::kBig;
      break;
    case Encoding::kCdrLe:
      break;
    case Encoding::kPlCdrBe:
      info.endian = Endian::kBig;
      info.parameter_list = true;
      break;
    case Encoding::kPlCdrLe:
      info.parameter_list = true;
      break;
    case Encoding::kCdr2Be:
      info.endian = Endian::kBig;
      info.version = CdrVersion::kXcdr2;
      break;
    case Encoding::kCdr2Le:
      info.version = CdrVersion::kXcdr2;
      break;
    case Encoding::kDCdr2Be:
      info.endian = Endian::kBig;
      info.version = CdrVersion::kXcdr2;
      info.delimited = true;
      break;
    case Encoding::kDCdr2Le:
      info.version = CdrVersion::kXcdr2;
      info.delimited = true;
      break;
    default:
      return false;  // PL_CDR2 (mutable types) and unknown ids
  }
  *out = info;
  return true;
}

// ---- CdrWriter
// ---------------------------------------------------------------

std::byte* CdrWriter::Reserve(size_t n) {
  if (!ok_) return nullptr;
  if (vec_ != nullptr) {
    size_t at = origin_ + pos_;
    if (vec_->size() < at + n) vec_->resize(at + n);
    pos_ += n;
    return vec_->data() + at;
  }
  if (fixed_.size() - pos_ < n) {
    ok_ = false;
    return nullptr;
  }
  std::byte* p = fixed_.data() + pos_;
  pos_ += n;
  return p;
}

void CdrWriter::AlignSlow(size_t pad) { Zeros(pad); }

void CdrWriter::WriteRaw(const void* data, size_t n) {
  if (n == 0) return;
  if (ok_ && vec_ != nullptr && vec_->size() == origin_ + pos_) {
    // Appending: insert copies once; resize-then-copy would zero-fill the
    // bytes first (a memset as large as a 64 KiB sample's baggage).
    const auto* b = static_cast<const std::byte*>(data);
    vec_->insert(vec_->end(), b, b + n);
    pos_ += n;
    return;
  }
  std::byte* p = Reserve(n);
  if (p != nullptr) std::memcpy(p, data, n);
}

void CdrWriter::Zeros(size_t n) {
  if (n == 0) return;
  std::byte* p = Reserve(n);
  if (p != nullptr) std::memset(p, 0, n);
}

void CdrWriter::WriteString(std::string_view s) {
  Write(static_cast<uint32_t>(s.size() + 1));
  WriteRaw(s.data(), s.size());
  uint8_t nul = 0;
  WriteRaw(&nul, 1);
}

size_t CdrWriter::ReserveU32() {
  Align(4);
  size_t at = pos_;
  Zeros(4);
  return at;
}

void CdrWriter::PatchU32(size_t offset, uint32_t value) {
  if (!ok_ || offset + 4 > pos_) return;
  uint8_t b[4];
  if (endian_ == Endian::kBig) {
    b[0] = static_cast<uint8_t>(value >> 24);
    b[1] = static_cast<uint8_t>(value >> 16);
    b[2] = static_cast<uint8_t>(value >> 8);
    b[3] = static_cast<uint8_t>(value);
  } else {
    b[3] = static_cast<uint8_t>(value >> 24);
    b[2] = static_cast<uint8_t>(value >> 16);
    b[1] = static_cast<uint8_t>(value >> 8);
    b[0] = static_cast<uint8_t>(value);
  }
  std::byte* base = vec_ != nullptr ? vec_->data() + origin_ : fixed_.data();
  std::memcpy(base + offset, b, 4);
}

void CdrWriter::PatchU16(size_t offset, uint16_t value) {
  if (!ok_ || offset + 2 > pos_) return;
  uint8_t b[2];
  if (endian_ == Endian::kBig) {
    b[0] = static_cast<uint8_t>(value >> 8);
    b[1] = static_cast<uint8_t>(value);
  } else {
    b[1] = static_cast<uint8_t>(value >> 8);
    b[0] = static_cast<uint8_t>(value);
  }
  std::byte* base = vec_ != nullptr ? vec_->data() + origin_ : fixed_.data();
  std::memcpy(base + offset, b, 2);
}

// ---- CdrReader
// ---------------------------------------------------------------

bool CdrReader::Skip(size_t n) {
  if (!ok_) return false;
  if (in_.size() - pos_ < n) return Fail();
  pos_ += n;
  return true;
}

bool CdrReader::ReadRaw(void* out, size_t n) {
  if (!ok_) return false;
  if (in_.size() - pos_ < n) return Fail();
  if (n != 0) std::memcpy(out, in_.data() + pos_, n);
  pos_ += n;
  return true;
}

bool CdrReader::ReadView(size_t n, std::span<const std::byte>* out) {
  if (!ok_) return false;
  if (in_.size() - pos_ < n) return Fail();
  *out = in_.subspan(pos_, n);
  pos_ += n;
  return true;
}

bool CdrReader::ReadStringView(std::string_view* out) {
  uint32_t len = 0;
  if (!Read(&len)) return false;
  // XTypes §7.4.1.1.6: the length counts the terminating NUL, so 0 is
  // malformed; the NUL must be there.
  if (len == 0 || len > remaining()) return Fail();
  const char* p = reinterpret_cast<const char*>(in_.data() + pos_);
  if (p[len - 1] != '\0') return Fail();
  *out = std::string_view(p, len - 1);
  pos_ += len;
  return true;
}

bool CdrReader::ReadString(std::string* out) {
  std::string_view v;
  if (!ReadStringView(&v)) return false;
  out->assign(v.data(), v.size());
  return true;
}

bool CdrReader::ReadLength(uint32_t* count, size_t min_element_bytes) {
  uint32_t n = 0;
  if (!Read(&n)) return false;
  if (min_element_bytes != 0 && n > remaining() / min_element_bytes) {
    return Fail();
  }
  *count = n;
  return true;
}

bool CdrReader::ReadDHeader(uint32_t* byte_length) {
  uint32_t n = 0;
  if (!Read(&n)) return false;
  if (n > remaining()) return Fail();
  *byte_length = n;
  return true;
}

// ---- Key hash
// ----------------------------------------------------------------

KeyHash KeyHashFromSerializedKey(std::span<const std::byte> key,
                                 bool max_size_within_16) {
  KeyHash h;
  if (max_size_within_16 && key.size() <= 16) {
    std::memcpy(h.bytes.data(), key.data(), key.size());
    return h;
  }
  h.bytes = Md5(key);
  return h;
}

// RFC 1321, written from the specification's description of the algorithm.
namespace {
constexpr uint32_t kMd5K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
    0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
    0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
    0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
    0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
    0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
constexpr uint8_t kMd5S[64] = {
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};

void Md5Block(uint32_t state[4], const uint8_t* block) {
  uint32_t m[16];
  for (int i = 0; i < 16; ++i) {
    m[i] = uint32_t{block[i * 4]} | uint32_t{block[i * 4 + 1]} << 8 |
           uint32_t{block[i * 4 + 2]} << 16 | uint32_t{block[i * 4 + 3]} << 24;
  }
  uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
  for (int i = 0; i < 64; ++i) {
    uint32_t f;
    int g;
    if (i < 16) {
      f = (b & c) | (~b & d);
      g = i;
    } else if (i < 32) {
      f = (d & b) | (~d & c);
      g = (5 * i + 1) % 16;
    } else if (i < 48) {
      f = b ^ c ^ d;
      g = (3 * i + 5) % 16;
    } else {
      f = c ^ (b | ~d);
      g = (7 * i) % 16;
    }
    uint32_t rotated = a + f + kMd5K[i] + m[g];
    a = d;
    d = c;
    c = b;
    b = b + ((rotated << kMd5S[i]) | (rotated >> (32 - kMd5S[i])));
  }
  state[0] += a;
  state[1] += b;
  state[2] += c;
  state[3] += d;
}
}  // namespace

std::array<uint8_t, 16> Md5(std::span<const std::byte> data) {
  uint32_t state[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
  const uint8_t* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size();
  size_t full = n / 64;
  for (size_t i = 0; i < full; ++i) Md5Block(state, p + i * 64);
  uint8_t tail[128] = {};
  size_t rest = n % 64;
  if (rest != 0) std::memcpy(tail, p + full * 64, rest);
  tail[rest] = 0x80;
  size_t tail_len = rest < 56 ? 64 : 128;
  uint64_t bits = static_cast<uint64_t>(n) * 8;
  for (int i = 0; i < 8; ++i) {
    tail[tail_len - 8 + i] = static_cast<uint8_t>(bits >> (8 * i));
  }
  Md5Block(state, tail);
  if (tail_len == 128) Md5Block(state, tail + 64);
  std::array<uint8_t, 16> out;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      out[i * 4 + j] = static_cast<uint8_t>(state[i] >> (8 * j));
    }
  }
  return out;
}

}  // namespace ringlab::rtps
