#include "mqtt/stream_decoder.h"

#include <algorithm>
#include <cstring>

namespace ringlab::mqtt {
namespace {

// The fixed header's size once its Remaining Length is complete, 0 while it
// is not, and SIZE_MAX when it is malformed.
size_t HeaderBytes(std::span<const std::byte> in, uint32_t* remaining) {
  if (in.size() < 2) return 0;
  size_t used = 0;
  switch (DecodeVarint(in.subspan(1), remaining, &used)) {
    case VarintResult::kOk:
      return 1 + used;
    case VarintResult::kNeedMore:
      return 0;
    case VarintResult::kMalformed:
      break;
  }
  return SIZE_MAX;
}

}  // namespace

void StreamDecoder::Reset() {
  buffered_ = 0;
  packet_bytes_ = 0;
  release_on_next_ = false;
  error_ = Result::kNeedMore;
}

StreamDecoder::Result StreamDecoder::Next(std::span<const std::byte>* input,
                                          Frame* frame) {
  if (error_ != Result::kNeedMore) return error_;
  if (release_on_next_) {
    // The previous frame viewed the buffer; it is free to reuse now. Large
    // buffers are handed back so thousands of idle connections stay small.
    release_on_next_ = false;
    buffered_ = 0;
    packet_bytes_ = 0;
    if (buffer_.capacity() > kRetainedBufferBytes) {
      std::vector<std::byte>().swap(buffer_);
    }
  }

  if (buffered_ == 0) {
    if (input->empty()) return Result::kNeedMore;
    size_t needed = 0;
    switch (ParseFrame(*input, max_packet_bytes_, frame, &needed)) {
      case FrameResult::kFrame:
        // The common case: the whole packet is in this piece. No copy.
        *input = input->subspan(frame->size_bytes);
        return Result::kFrame;
      case FrameResult::kMalformed:
        return Fail(Result::kMalformed);
      case FrameResult::kTooLarge:
        return Fail(Result::kTooLarge);
      case FrameResult::kNeedMore:
        break;
    }
    // Falls through to buffering the partial packet.
  }

  while (!input->empty()) {
    if (packet_bytes_ == 0) {
      // The fixed header is still incomplete: take one byte at a time (at
      // most five) so no bytes of the next packet are swallowed.
      if (buffer_.size() < buffered_ + 1) buffer_.resize(buffered_ + 1);
      buffer_[buffered_++] = (*input)[0];
      *input = input->subspan(1);
      ++copied_bytes_;
      uint32_t remaining = 0;
      const size_t header =
          HeaderBytes({buffer_.data(), buffered_}, &remaining);
      if (header == SIZE_MAX) return Fail(Result::kMalformed);
      if (header == 0) continue;
      const uint64_t total = header + uint64_t(remaining);
      if (total > max_packet_bytes_) return Fail(Result::kTooLarge);
      packet_bytes_ = uint32_t(total);
      if (buffer_.size() < packet_bytes_) buffer_.resize(packet_bytes_);
    }
    const size_t take =
        std::min<size_t>(input->size(), packet_bytes_ - buffered_);
    if (take > 0) {
      std::memcpy(buffer_.data() + buffered_, input->data(), take);
      buffered_ += uint32_t(take);
      copied_bytes_ += take;
      *input = input->subspan(take);
    }
    if (buffered_ == packet_bytes_) {
      size_t needed = 0;
      const FrameResult r = ParseFrame({buffer_.data(), buffered_},
                                       max_packet_bytes_, frame, &needed);
      // The header was checked above, so the frame is complete.
      if (r != FrameResult::kFrame) return Fail(Result::kMalformed);
      release_on_next_ = true;
      return Result::kFrame;
    }
  }
  return Result::kNeedMore;
}

}  // namespace ringlab::mqtt
