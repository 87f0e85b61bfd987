#include "rtps/parameter_list.h"

namespace ringlab::rtps {

const char* PlErrorName(PlError e) {
  switch (e) {
    case PlError::kOk:
      return "ok";
    case PlError::kTruncated:
      return "truncated";
    case PlError::kNoSentinel:
      return "no_sentinel";
    case PlError::kBadLength:
      return "bad_length";
  }
  return "?";
}

namespace {
uint16_t LoadU16(const std::byte* p, Endian e) {
  uint16_t a = std::to_integer<uint16_t>(p[0]);
  uint16_t b = std::to_integer<uint16_t>(p[1]);
  return e == Endian::kBig ? static_cast<uint16_t>(a << 8 | b)
                           : static_cast<uint16_t>(b << 8 | a);
}
}  // namespace

// RTPS 2.5 §9.4.2.11: each parameter is {uint16 parameterId, uint16 length,
// octet value[length]} with the next parameter 4-aligned; the list ends with
// PID_SENTINEL (whose length is ignored, §9.6.2.2.1).
bool ParameterListReader::Next(Parameter* out) {
  if (done_ || error_ != PlError::kOk) return false;
  for (;;) {
    if (in_.size() - pos_ < 4) {
      error_ = pos_ == in_.size() ? PlError::kNoSentinel : PlError::kTruncated;
      return false;
    }
    uint16_t id = LoadU16(in_.data() + pos_, endian_);
    uint16_t len = LoadU16(in_.data() + pos_ + 2, endian_);
    pos_ += 4;
    if (id == pid::kSentinel) {
      done_ = true;
      return false;
    }
    if (len % 4 != 0) {
      error_ = PlError::kBadLength;
      return false;
    }
    if (in_.size() - pos_ < len) {
      error_ = PlError::kTruncated;
      return false;
    }
    std::span<const std::byte> value = in_.subspan(pos_, len);
    pos_ += len;
    if (id == pid::kPad) continue;
    out->id = id;
    out->value = value;
    return true;
  }
}

PlError ParameterListReader::Validate(std::span<const std::byte> bytes,
                                      Endian endian, size_t* size) {
  ParameterListReader r(bytes, endian);
  Parameter p;
  while (r.Next(&p)) {
  }
  if (size != nullptr) *size = r.consumed();
  return r.error();
}

size_t ParameterListWriter::Begin(uint16_t id) {
  w_->Align(4);
  size_t at = w_->size();
  w_->Write(id);
  w_->Write(uint16_t{0});
  return at;
}

void ParameterListWriter::End(size_t token) {
  size_t len = w_->size() - token - 4;
  size_t pad = (4 - len % 4) % 4;
  w_->Zeros(pad);
  w_->PatchU16(token + 2, static_cast<uint16_t>(len + pad));
}

void ParameterListWriter::Finish() {
  w_->Align(4);
  w_->Write(pid::kSentinel);
  w_->Write(uint16_t{0});
}

}  // namespace ringlab::rtps
