// CDR: the OMG XTypes 1.3 §7.4 serialization used for DDS sample payloads and
// discovery data. Supports XCDR1 plain CDR (CDR_BE/CDR_LE), the parameter-list
// encapsulations PL_CDR_BE/PL_CDR_LE (see rtps/parameter_list.h), and reading
// the XCDR2 encapsulations of final and appendable types (PLAIN_CDR2 and
// D_CDR2, BE and LE).
//
// Alignment is relative to the first byte after the 4-byte encapsulation
// header (XTypes 1.3 §7.4.1.1.1). XCDR1 aligns a primitive to its size; XCDR2
// caps alignment at 4 (§7.4.1.2.1) and puts a DHEADER (uint32 byte length)
// before appendable structs and before sequences/arrays of non-primitive
// elements (§7.4.3.5.3, §7.4.3.5.1).
//
// A user type is described by specializing `CdrType<T>` (how to read/write
// it) and, for a topic type, `TopicType<T>` (name, keys):
//
//   struct Ping { uint32_t seq; uint32_t id; std::vector<uint8_t> data; };
//   template <> struct CdrType<Ping> {
//     static constexpr bool kPrimitive = false;
//     static void Write(CdrWriter& w, const Ping& v) {
//       w.Write(v.seq); w.Write(v.id); WriteCdr(w, v.data);
//     }
//     static bool Read(CdrReader& r, Ping* v) {
//       return r.Read(&v->seq) && r.Read(&v->id) && ReadCdr(r, &v->data);
//     }
//   };
//   template <> struct TopicType<Ping> {
//     static constexpr std::string_view kTypeName = "Ping";
//     static constexpr bool kKeyed = true;
//     static constexpr size_t kMaxKeyBytes = 4;      // kUnboundedKey if not
//     static void WriteKey(CdrWriter& w, const Ping& v) { w.Write(v.id); }
//   };
//
//   std::vector<std::byte> buf;
//   SerializeSample(ping, Encoding::kCdrLe, &buf);   // header + body
//   Ping back;
//   bool ok = DeserializeSample(std::span(buf), &back);
//   KeyHash kh = ComputeKeyHash(ping);               // RTPS 2.5 §9.6.4.8
//
// Ownership: writers write into caller-owned memory (a span, or a vector they
// grow only when it is too small, so reusing one vector allocates nothing in
// steady state). Readers borrow their input span for their lifetime.
//
// Errors: a writer that runs out of space, or a reader that meets truncated
// or inconsistent input, latches `ok() == false`; every later call is a no-op
// returning false. Lengths are checked against the bytes left before anything
// is resized, so hostile input cannot make a reader allocate more than the
// input size. Never throws.
#ifndef RINGLAB_RTPS_CDR_H_
#define RINGLAB_RTPS_CDR_H_

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "rtps/types.h"

namespace ringlab::rtps {

enum class Endian : uint8_t { kBig, kLittle };
enum class CdrVersion : uint8_t { kXcdr1, kXcdr2 };

// XTypes 1.3 §7.6.3.1.2 Table 60 / RTPS 2.5 §10: encapsulation identifiers.
enum class Encoding : uint16_t {
  kCdrBe = 0x0000,
  kCdrLe = 0x0001,
  kPlCdrBe = 0x0002,
  kPlCdrLe = 0x0003,
  kCdr2Be = 0x0006,  // PLAIN_CDR2 (final types)
  kCdr2Le = 0x0007,
  kDCdr2Be = 0x0008,  // DELIMITED_CDR2 (appendable types)
  kDCdr2Le = 0x0009,
  kPlCdr2Be = 0x000a,  // PL_CDR2 (mutable types): not supported
  kPlCdr2Le = 0x000b,
};

struct EncodingInfo {
  Endian endian = Endian::kLittle;
  CdrVersion version = CdrVersion::kXcdr1;
  bool parameter_list = false;  // PL_CDR*
  bool delimited = false;       // D_CDR2: a DHEADER opens the top-level type
};

// Classifies an encapsulation id; false for unknown or unsupported ones.
bool DescribeEncoding(uint16_t id, EncodingInfo* out);

inline constexpr Endian kNativeEndian =
    std::endian::native == std::endian::little ? Endian::kLittle : Endian::kBig;

class CdrWriter {
 public:
  // Writes into a fixed span. Alignment origin = out.data().
  CdrWriter(std::span<std::byte> out, Endian endian,
            CdrVersion version = CdrVersion::kXcdr1)
      : fixed_(out), endian_(endian), version_(version) {}
  // Appends to `*out` starting at out->size(); the alignment origin is
  // `origin` bytes into the vector (the end of the encapsulation header).
  CdrWriter(std::vector<std::byte>* out, size_t origin, Endian endian,
            CdrVersion version = CdrVersion::kXcdr1)
      : vec_(out), origin_(origin), endian_(endian), version_(version) {
    pos_ = out->size() - origin;
  }

  bool ok() const { return ok_; }
  // Bytes written since the alignment origin.
  size_t size() const { return pos_; }
  Endian endian() const { return endian_; }
  CdrVersion version() const { return version_; }

  // `n` is a power of two (1, 2, 4 or 8).
  void Align(size_t n) {
    size_t pad = (n - (pos_ & (n - 1))) & (n - 1);
    if (pad != 0) AlignSlow(pad);
  }
  void WriteRaw(const void* data, size_t n);
  void Zeros(size_t n);

  template <typename T>
  requires(std::is_arithmetic_v<T> || std::is_enum_v<T>) void Write(T value) {
    if constexpr (std::is_same_v<T, bool>) {
      uint8_t b = value ? 1 : 0;
      WriteRaw(&b, 1);
    } else {
      Align(AlignmentOf(sizeof(T)));
      T v = value;
      if (endian_ != kNativeEndian) v = ByteSwap(v);
      WriteRaw(&v, sizeof(T));
    }
  }
  // CDR string: uint32 length including the NUL, the bytes, a NUL.
  void WriteString(std::string_view s);
  // Writes a uint32 placeholder and returns its offset, for DHEADERs and
  // parameter lengths patched with PatchU32 later.
  size_t ReserveU32();
  void PatchU32(size_t offset, uint32_t value);
  // Writes into an earlier position (already written bytes only).
  void PatchU16(size_t offset, uint16_t value);

  size_t AlignmentOf(size_t size) const {
    return version_ == CdrVersion::kXcdr2 && size > 4 ? 4 : size;
  }

 private:
  template <typename T>
  static T ByteSwap(T v) {
    if constexpr (sizeof(T) == 1) {
      return v;
    } else {
      std::array<std::byte, sizeof(T)> b;
      std::memcpy(b.data(), &v, sizeof(T));
      for (size_t i = 0; i < sizeof(T) / 2; ++i)
        std::swap(b[i], b[sizeof(T) - 1 - i]);
      std::memcpy(&v, b.data(), sizeof(T));
      return v;
    }
  }
  std::byte* Reserve(size_t n);
  void AlignSlow(size_t pad);

  std::span<std::byte> fixed_;
  std::vector<std::byte>* vec_ = nullptr;
  size_t origin_ = 0;
  size_t pos_ = 0;
  Endian endian_;
  CdrVersion version_;
  bool ok_ = true;
};

class CdrReader {
 public:
  // Reads `in`; alignment origin = in.data().
  CdrReader(std::span<const std::byte> in, Endian endian,
            CdrVersion version = CdrVersion::kXcdr1)
      : in_(in), endian_(endian), version_(version) {}

  bool ok() const { return ok_; }
  size_t position() const { return pos_; }
  size_t remaining() const { return ok_ ? in_.size() - pos_ : 0; }
  Endian endian() const { return endian_; }
  CdrVersion version() const { return version_; }
  // Latches failure; returns false for convenient `return r.Fail();`.
  bool Fail() {
    ok_ = false;
    return false;
  }

  // `n` is a power of two (1, 2, 4 or 8).
  bool Align(size_t n) {
    if (!ok_) return false;
    size_t pad = (n - (pos_ & (n - 1))) & (n - 1);
    return pad == 0 || Skip(pad);
  }
  bool ReadRaw(void* out, size_t n);
  bool Skip(size_t n);
  // A view of the next n bytes (no copy).
  bool ReadView(size_t n, std::span<const std::byte>* out);

  template <typename T>
  requires(std::is_arithmetic_v<T> || std::is_enum_v<T>) bool Read(T* out) {
    if constexpr (std::is_same_v<T, bool>) {
      uint8_t b = 0;
      if (!ReadRaw(&b, 1)) return false;
      if (b > 1) return Fail();  // XTypes §7.4.1.1.4: bool is 0 or 1
      *out = b != 0;
      return true;
    } else {
      if (!Align(AlignmentOf(sizeof(T)))) return false;
      T v;
      if (!ReadRaw(&v, sizeof(T))) return false;
      if (endian_ != kNativeEndian) {
        std::array<std::byte, sizeof(T)> b;
        std::memcpy(b.data(), &v, sizeof(T));
        for (size_t i = 0; i < sizeof(T) / 2; ++i)
          std::swap(b[i], b[sizeof(T) - 1 - i]);
        std::memcpy(&v, b.data(), sizeof(T));
      }
      *out = v;
      return true;
    }
  }
  // A CDR string; the length must include a terminating NUL that is present.
  bool ReadString(std::string* out);  // reuses out's capacity
  bool ReadStringView(std::string_view* out);
  // A sequence length whose elements take at least `min_element_bytes` each:
  // fails when they cannot fit in the remaining input.
  bool ReadLength(uint32_t* count, size_t min_element_bytes);
  // XCDR2 DHEADER: the byte length that follows; fails if it overruns.
  bool ReadDHeader(uint32_t* byte_length);

  size_t AlignmentOf(size_t size) const {
    return version_ == CdrVersion::kXcdr2 && size > 4 ? 4 : size;
  }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  Endian endian_;
  CdrVersion version_;
  bool ok_ = true;
};

// ---- Type descriptions -----------------------------------------------------

// Specialize for each serializable type. `kPrimitive` is true for the
// fixed-size primitives: XCDR2 puts no DHEADER before collections of them.
// `kMinBytes` is the least serialized size of one value (for length checks).
template <typename T, typename Enable = void>
struct CdrType;

template <typename T>
struct CdrType<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool kPrimitive = true;
  static constexpr size_t kMinBytes = sizeof(T);
  static void Write(CdrWriter& w, const T& v) { w.Write(v); }
  static bool Read(CdrReader& r, T* v) { return r.Read(v); }
};

template <>
struct CdrType<std::string> {
  static constexpr bool kPrimitive = false;
  static constexpr size_t kMinBytes = 5;
  static void Write(CdrWriter& w, const std::string& v) { w.WriteString(v); }
  static bool Read(CdrReader& r, std::string* v) { return r.ReadString(v); }
};

template <typename T>
void WriteCdr(CdrWriter& w, const T& v) {
  CdrType<T>::Write(w, v);
}
template <typename T>
bool ReadCdr(CdrReader& r, T* v) {
  return CdrType<T>::Read(r, v);
}

template <typename T>
constexpr size_t CdrMinBytes() {
  if constexpr (requires { CdrType<T>::kMinBytes; }) {
    return CdrType<T>::kMinBytes;
  } else {
    return 1;
  }
}

// sequence<T>: uint32 count, then the elements (XCDR2: DHEADER first when T
// is not primitive).
template <typename T>
struct CdrType<std::vector<T>> {
  static constexpr bool kPrimitive = false;
  static constexpr size_t kMinBytes = 4;
  static void Write(CdrWriter& w, const std::vector<T>& v) {
    size_t dheader = 0;
    bool delimited =
        w.version() == CdrVersion::kXcdr2 && !CdrType<T>::kPrimitive;
    if (delimited) dheader = w.ReserveU32();
    w.Write(static_cast<uint32_t>(v.size()));
    if constexpr (sizeof(T) == 1 && std::is_arithmetic_v<T>) {
      w.WriteRaw(v.data(), v.size());
    } else {
      for (const T& e : v) CdrType<T>::Write(w, e);
    }
    if (delimited) {
      w.PatchU32(dheader, static_cast<uint32_t>(w.size() - dheader - 4));
    }
  }
  static bool Read(CdrReader& r, std::vector<T>* v) {
    bool delimited =
        r.version() == CdrVersion::kXcdr2 && !CdrType<T>::kPrimitive;
    uint32_t dlen = 0;
    if (delimited && !r.ReadDHeader(&dlen)) return false;
    uint32_t n = 0;
    if (!r.ReadLength(&n, CdrMinBytes<T>())) return false;
    v->resize(n);
    if constexpr (sizeof(T) == 1 && std::is_arithmetic_v<T>) {
      if (std::is_same_v<T, bool>) {
        for (uint32_t i = 0; i < n; ++i)
          if (!r.Read(&(*v)[i])) return false;
        return true;
      }
      return r.ReadRaw(v->data(), n);
    } else {
      for (uint32_t i = 0; i < n; ++i)
        if (!CdrType<T>::Read(r, &(*v)[i])) return false;
      return true;
    }
  }
};

// T[N]: the elements only (XCDR2: DHEADER first when T is not primitive).
template <typename T, size_t N>
struct CdrType<std::array<T, N>> {
  static constexpr bool kPrimitive = false;
  static constexpr size_t kMinBytes = N * CdrMinBytes<T>();
  static void Write(CdrWriter& w, const std::array<T, N>& v) {
    size_t dheader = 0;
    bool delimited =
        w.version() == CdrVersion::kXcdr2 && !CdrType<T>::kPrimitive;
    if (delimited) dheader = w.ReserveU32();
    if constexpr (sizeof(T) == 1 && std::is_arithmetic_v<T> &&
                  !std::is_same_v<T, bool>) {
      w.WriteRaw(v.data(), N);
    } else {
      for (const T& e : v) CdrType<T>::Write(w, e);
    }
    if (delimited) {
      w.PatchU32(dheader, static_cast<uint32_t>(w.size() - dheader - 4));
    }
  }
  static bool Read(CdrReader& r, std::array<T, N>* v) {
    bool delimited =
        r.version() == CdrVersion::kXcdr2 && !CdrType<T>::kPrimitive;
    uint32_t dlen = 0;
    if (delimited && !r.ReadDHeader(&dlen)) return false;
    if constexpr (sizeof(T) == 1 && std::is_arithmetic_v<T> &&
                  !std::is_same_v<T, bool>) {
      return r.ReadRaw(v->data(), N);
    } else {
      for (size_t i = 0; i < N; ++i)
        if (!CdrType<T>::Read(r, &(*v)[i])) return false;
      return true;
    }
  }
};

// ---- Topic types -----------------------------------------------------------

inline constexpr size_t kUnboundedKey = SIZE_MAX;

enum class Extensibility : uint8_t { kFinal, kAppendable };

// Specialize for a topic type (see the example at the top). Required:
//   static constexpr std::string_view kTypeName;
//   static constexpr bool kKeyed;
//   static constexpr size_t kMaxKeyBytes;      // XCDR2 BE size bound
//   static void WriteKey(CdrWriter&, const T&); // key members, in order
// Optional: static constexpr Extensibility kExtensibility (default final).
template <typename T>
struct TopicType;

template <typename T>
constexpr Extensibility ExtensibilityOf() {
  if constexpr (requires { TopicType<T>::kExtensibility; }) {
    return TopicType<T>::kExtensibility;
  } else {
    return Extensibility::kFinal;
  }
}

// Writes the 4-byte encapsulation header for `encoding` at the end of `*out`
// and then `value`, padding the body to a multiple of 4 and recording the
// padding in the options field (XTypes 1.3 §7.6.3.1.2). Only the plain
// encodings are accepted (CDR, CDR2, D_CDR2). Returns false if `encoding` is
// not one of those. Reuses out's capacity.
template <typename T>
bool SerializeSample(const T& value, Encoding encoding,
                     std::vector<std::byte>* out);

// Reads a sample with any supported plain encapsulation (CDR_BE/LE,
// PLAIN_CDR2 and D_CDR2 BE/LE). False on unknown encodings or bad input.
template <typename T>
bool DeserializeSample(std::span<const std::byte> bytes, T* value);

// RTPS 2.5 §9.6.4.8 / XTypes 1.3 §7.6.8: the key members serialized as
// big-endian XCDR2; if they can never exceed 16 bytes, zero-padded to 16,
// otherwise the MD5 of the serialization. Keyless types hash to zeros.
template <typename T>
KeyHash ComputeKeyHash(const T& value);

// The same rule for an already serialized key (BE XCDR2 bytes).
KeyHash KeyHashFromSerializedKey(std::span<const std::byte> key,
                                 bool max_size_within_16);

// RFC 1321 MD5 (for key hashes only; not a security primitive here).
std::array<uint8_t, 16> Md5(std::span<const std::byte> data);

// ---- Template implementations ----------------------------------------------

namespace internal {
inline void WriteEncapsulation(std::vector<std::byte>* out, Encoding e,
                               uint16_t options) {
  uint16_t id = static_cast<uint16_t>(e);
  // §10.4: the identifier and options are big-endian on the wire.
  out->push_back(std::byte(id >> 8));
  out->push_back(std::byte(id & 0xff));
  out->push_back(std::byte(options >> 8));
  out->push_back(std::byte(options & 0xff));
}
}  // namespace internal

template <typename T>
bool SerializeSample(const T& value, Encoding encoding,
                     std::vector<std::byte>* out) {
  EncodingInfo info;
  if (!DescribeEncoding(static_cast<uint16_t>(encoding), &info) ||
      info.parameter_list) {
    return false;
  }
  size_t start = out->size();
  internal::WriteEncapsulation(out, encoding, 0);
  size_t origin = out->size();
  CdrWriter w(out, origin, info.endian, info.version);
  size_t dheader = 0;
  if (info.delimited) dheader = w.ReserveU32();
  CdrType<T>::Write(w, value);
  if (info.delimited) {
    w.PatchU32(dheader, static_cast<uint32_t>(w.size() - dheader - 4));
  }
  size_t pad = (4 - w.size() % 4) % 4;
  w.Zeros(pad);
  // Options low two bits: padding bytes at the end (§7.6.3.1.2).
  (*out)[start + 3] = std::byte(pad);
  return w.ok();
}

template <typename T>
bool DeserializeSample(std::span<const std::byte> bytes, T* value) {
  if (bytes.size() < 4) return false;
  uint16_t id =
      static_cast<uint16_t>((std::to_integer<uint16_t>(bytes[0]) << 8) |
                            std::to_integer<uint16_t>(bytes[1]));
  EncodingInfo info;
  if (!DescribeEncoding(id, &info) || info.parameter_list) return false;
  CdrReader r(bytes.subspan(4), info.endian, info.version);
  if (info.delimited) {
    uint32_t len = 0;
    if (!r.ReadDHeader(&len)) return false;
    // Appendable: members beyond the ones we know are skipped by the
    // DHEADER; read ours from a reader limited to the delimited body, with
    // the same alignment origin.
    CdrReader limited(bytes.subspan(4, 4 + size_t{len}), info.endian,
                      info.version);
    limited.Skip(4);
    return CdrType<T>::Read(limited, value) && limited.ok();
  }
  return CdrType<T>::Read(r, value) && r.ok();
}

template <typename T>
KeyHash ComputeKeyHash(const T& value) {
  if constexpr (!TopicType<T>::kKeyed) {
    return KeyHash{};
  } else {
    std::array<std::byte, 64> small;
    if constexpr (TopicType<T>::kMaxKeyBytes <= 16) {
      CdrWriter w(std::span<std::byte>(small).first(16), Endian::kBig,
                  CdrVersion::kXcdr2);
      TopicType<T>::WriteKey(w, value);
      return KeyHashFromSerializedKey(std::span(small).first(w.size()), true);
    } else {
      CdrWriter w(std::span<std::byte>(small), Endian::kBig,
                  CdrVersion::kXcdr2);
      TopicType<T>::WriteKey(w, value);
      if (w.ok()) {
        return KeyHashFromSerializedKey(std::span(small).first(w.size()),
                                        false);
      }
      // Rare: a long key. The vector form allocates; keys are short.
      std::vector<std::byte> big;
      CdrWriter wb(&big, 0, Endian::kBig, CdrVersion::kXcdr2);
      TopicType<T>::WriteKey(wb, value);
      return KeyHashFromSerializedKey(big, false);
    }
  }
}

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_CDR_H_
