// StreamDecoder: packets split at every byte boundary come out whole and in
// order; contiguous packets are views of the input; limits and bad lengths
// end the stream.
#include "mqtt/stream_decoder.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "transport/sim_network.h"

namespace ringlab::mqtt {
namespace {

using Bytes = std::vector<std::byte>;

// A stream of assorted packets: small ones, an empty PINGREQ, and one whose
// Remaining Length needs two bytes.
Bytes SampleStream(std::vector<Bytes>* packets) {
  Bytes stream;
  auto add = [&](const Bytes& p) {
    packets->push_back(p);
    stream.insert(stream.end(), p.begin(), p.end());
  };
  std::string big(300, 'x');
  for (int i = 0; i < 3; ++i) {
    Publish p;
    p.topic = i == 1 ? "a/b" : "topic/with/levels";
    p.payload = AsBytes(i == 2 ? std::string_view(big) : "hi");
    Bytes out(EncodedSize(Packet(p), Version::k311));
    Encode(p, Version::k311, out);
    add(out);
    Bytes ping(2);
    Encode(Pingreq{}, Version::k311, ping);
    add(ping);
  }
  return stream;
}

TEST(StreamDecoder, WholeInputIsZeroCopy) {
  std::vector<Bytes> packets;
  const Bytes stream = SampleStream(&packets);
  StreamDecoder decoder;
  std::span<const std::byte> input(stream);
  Frame frame;
  size_t n = 0;
  while (decoder.Next(&input, &frame) == StreamDecoder::Result::kFrame) {
    ASSERT_LT(n, packets.size());
    EXPECT_EQ(frame.size_bytes, packets[n].size());
    // A view into the input, not a copy.
    EXPECT_GE(frame.body.data(), stream.data());
    EXPECT_LE(frame.body.data() + frame.body.size(),
              stream.data() + stream.size());
    ++n;
  }
  EXPECT_EQ(n, packets.size());
  EXPECT_EQ(decoder.copied_bytes(), 0u);
}

TEST(StreamDecoder, EverySplitPoint) {
  std::vector<Bytes> packets;
  const Bytes stream = SampleStream(&packets);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    StreamDecoder decoder;
    std::vector<Bytes> bodies;
    std::vector<size_t> sizes;
    for (auto piece : {std::span<const std::byte>(stream).first(cut),
                       std::span<const std::byte>(stream).subspan(cut)}) {
      Frame frame;
      StreamDecoder::Result r;
      while ((r = decoder.Next(&piece, &frame)) ==
             StreamDecoder::Result::kFrame) {
        bodies.emplace_back(frame.body.begin(), frame.body.end());
        sizes.push_back(frame.size_bytes);
      }
      ASSERT_EQ(r, StreamDecoder::Result::kNeedMore);
      EXPECT_TRUE(piece.empty());
    }
    ASSERT_EQ(bodies.size(), packets.size()) << "cut " << cut;
    for (size_t i = 0; i < bodies.size(); ++i) {
      EXPECT_EQ(sizes[i], packets[i].size());
      EXPECT_TRUE(std::equal(bodies[i].begin(), bodies[i].end(),
                             packets[i].end() - bodies[i].size()))
          << "cut " << cut << " packet " << i;
    }
  }
}

TEST(StreamDecoder, RandomPiecesOneByteToMany) {
  std::vector<Bytes> packets;
  Bytes stream;
  for (int rep = 0; rep < 20; ++rep) stream = SampleStream(&packets);
  // SampleStream appends to `packets` each time but returns one stream;
  // build the matching stream of all repetitions.
  stream.clear();
  for (const Bytes& p : packets)
    stream.insert(stream.end(), p.begin(), p.end());
  transport::SimRandom random(7);
  StreamDecoder decoder(4096);
  size_t pos = 0, n = 0;
  while (pos < stream.size()) {
    const size_t len =
        std::min<size_t>(1 + random.Uniform(40), stream.size() - pos);
    std::span<const std::byte> piece(stream.data() + pos, len);
    pos += len;
    Frame frame;
    while (decoder.Next(&piece, &frame) == StreamDecoder::Result::kFrame) {
      ASSERT_LT(n, packets.size());
      EXPECT_EQ(frame.size_bytes, packets[n].size());
      EXPECT_TRUE(std::equal(frame.body.begin(), frame.body.end(),
                             packets[n].end() - frame.body.size()));
      ++n;
    }
  }
  EXPECT_EQ(n, packets.size());
  EXPECT_GT(decoder.copied_bytes(), 0u);
  EXPECT_LE(decoder.buffer_capacity(), StreamDecoder::kRetainedBufferBytes);
}

TEST(StreamDecoder, TooLargeAndMalformedEndTheStream) {
  {
    StreamDecoder decoder(100);
    const Bytes bytes = {std::byte(0x30), std::byte(0xC8), std::byte(0x01)};
    std::span<const std::byte> in(bytes);
    Frame frame;
    EXPECT_EQ(decoder.Next(&in, &frame), StreamDecoder::Result::kTooLarge);
    std::span<const std::byte> more(bytes);
    EXPECT_EQ(decoder.Next(&more, &frame), StreamDecoder::Result::kTooLarge);
  }
  {
    // Split so the limit is found while reassembling the header.
    StreamDecoder decoder(100);
    const Bytes a = {std::byte(0x30), std::byte(0xC8)};
    const Bytes b = {std::byte(0x01)};
    std::span<const std::byte> in(a);
    Frame frame;
    EXPECT_EQ(decoder.Next(&in, &frame), StreamDecoder::Result::kNeedMore);
    std::span<const std::byte> in2(b);
    EXPECT_EQ(decoder.Next(&in2, &frame), StreamDecoder::Result::kTooLarge);
  }
  {
    StreamDecoder decoder;
    const Bytes bytes = {std::byte(0x30), std::byte(0xFF), std::byte(0xFF),
                         std::byte(0xFF), std::byte(0xFF), std::byte(0x01)};
    for (size_t i = 0; i < bytes.size(); ++i) {
      std::span<const std::byte> one(&bytes[i], 1);
      Frame frame;
      StreamDecoder::Result r = decoder.Next(&one, &frame);
      if (i < 4) {
        EXPECT_EQ(r, StreamDecoder::Result::kNeedMore) << i;
      } else {
        EXPECT_EQ(r, StreamDecoder::Result::kMalformed) << i;
      }
    }
  }
}

TEST(StreamDecoder, LargePacketBufferIsReleased) {
  Publish p;
  p.topic = "t";
  std::string payload(20000, 'z');
  p.payload = AsBytes(payload);
  Bytes out(EncodedSize(Packet(p), Version::k5));
  Encode(p, Version::k5, out);
  StreamDecoder decoder;
  std::span<const std::byte> first(out.data(), 1000);
  std::span<const std::byte> second(out.data() + 1000, out.size() - 1000);
  Frame frame;
  EXPECT_EQ(decoder.Next(&first, &frame), StreamDecoder::Result::kNeedMore);
  EXPECT_EQ(decoder.buffered_bytes(), 1000u);
  ASSERT_EQ(decoder.Next(&second, &frame), StreamDecoder::Result::kFrame);
  EXPECT_EQ(frame.size_bytes, out.size());
  std::span<const std::byte> none;
  EXPECT_EQ(decoder.Next(&none, &frame), StreamDecoder::Result::kNeedMore);
  EXPECT_EQ(decoder.buffer_capacity(), 0u);
}

}  // namespace
}  // namespace ringlab::mqtt
