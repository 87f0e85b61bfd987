// StreamDecoder: splits a TCP byte stream, arriving in pieces of any size,
// into MQTT control packet frames.
//
// A packet that lies wholly inside one input piece comes back as a view of
// that piece (no copy). Only a packet that straddles pieces is copied, into a
// reassembly buffer bounded by the maximum packet size; the buffer's memory
// is given back once it grows past `kRetainedBufferBytes`, so an idle
// connection keeps at most that much.
//
//   StreamDecoder decoder(/*max_packet_bytes=*/1 << 20);
//   std::span<const std::byte> input = received_bytes;
//   Frame frame;
//   while (true) {
//     StreamDecoder::Result r = decoder.Next(&input, &frame);
//     if (r == StreamDecoder::Result::kNeedMore) break;  // input used up
//     if (r != StreamDecoder::Result::kFrame) { /* close: r says why */ }
//     Handle(frame);  // frame.body is valid until the next Next() call
//   }
//
// Ownership: `frame` views the caller's input or the decoder's own buffer;
// either stays valid until the next call to Next() or Reset().
// Errors: a malformed Remaining Length (Malformed Packet 0x81) or a packet
// over the limit (Packet too large 0x95) ends the stream: every later call
// returns the same error.
#ifndef RINGLAB_MQTT_STREAM_DECODER_H_
#define RINGLAB_MQTT_STREAM_DECODER_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "mqtt/packets.h"

namespace ringlab::mqtt {

class StreamDecoder {
 public:
  enum class Result : uint8_t { kFrame, kNeedMore, kMalformed, kTooLarge };
  // Reassembly memory kept between packets; more is freed after use.
  static constexpr size_t kRetainedBufferBytes = 4096;

  explicit StreamDecoder(uint32_t max_packet_bytes = kMaxPacketBytes)
      : max_packet_bytes_(max_packet_bytes) {}

  // Takes bytes from the front of *input. Returns kFrame with *frame set
  // (possibly leaving bytes in *input for the next call), or kNeedMore with
  // *input empty, or an error.
  Result Next(std::span<const std::byte>* input, Frame* frame);

  // A tighter or looser limit, e.g. after CONNECT negotiated one.
  void set_max_packet_bytes(uint32_t bytes) { max_packet_bytes_ = bytes; }
  uint32_t max_packet_bytes() const { return max_packet_bytes_; }
  // Bytes of a partial packet held.
  size_t buffered_bytes() const { return buffered_; }
  size_t buffer_capacity() const { return buffer_.capacity(); }
  // Bytes copied into the reassembly buffer so far (straddling packets).
  uint64_t copied_bytes() const { return copied_bytes_; }
  // Forgets any partial packet and error.
  void Reset();

 private:
  Result Fail(Result r) {
    error_ = r;
    return r;
  }

  uint32_t max_packet_bytes_;
  std::vector<std::byte> buffer_;
  uint32_t buffered_ = 0;
  // The total size of the buffered packet once its header is known, else 0.
  uint32_t packet_bytes_ = 0;
  bool release_on_next_ = false;
  Result error_ = Result::kNeedMore;  // kNeedMore: no error
  uint64_t copied_bytes_ = 0;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_STREAM_DECODER_H_
