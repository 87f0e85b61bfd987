// libFuzzer target: a whole broker fed arbitrary input. The input is a
// script: connections open and close, receive arbitrary bytes (or a valid
// CONNECT / SUBSCRIBE / PUBLISH to get deeper), time advances, output is
// polled with buffers of varying size. Checks: nothing crashes, every byte
// the broker sends parses as an MQTT packet of one of the two versions, and
// the connection count stays consistent.
// fuzz-deps: mqtt/broker.cc mqtt/internal/retained_store.cc mqtt/message.cc
// fuzz-deps: mqtt/packets.cc mqtt/properties.cc mqtt/stream_decoder.cc
// fuzz-deps: mqtt/topic.cc mqtt/topic_tree.cc mqtt/types.cc mqtt/wire.cc
// fuzz-deps: mqtt/rate_limit.cc mqtt/store.cc
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mqtt/broker.h"
#include "mqtt/stream_decoder.h"

namespace {

using namespace ringlab::mqtt;  // NOLINT: a fuzz target, not library code
using ringlab::Timestamp;

constexpr int kSlots = 6;

struct Reader {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  bool empty() const { return pos >= size; }
  uint8_t Byte() { return pos < size ? data[pos++] : 0; }
  std::span<const std::byte> Bytes(size_t n) {
    n = std::min(n, size - std::min(pos, size));
    std::span<const std::byte> s(reinterpret_cast<const std::byte*>(data) + pos,
                                 n);
    pos += n;
    return s;
  }
};

struct Slot {
  ConnectionId id;
  bool open = false;
  StreamDecoder decoder{kMaxPacketBytes};
  std::vector<std::byte> received;
};

void CheckOutput(Slot& slot) {
  std::span<const std::byte> in(slot.received);
  Frame frame;
  StreamDecoder::Result r;
  while ((r = slot.decoder.Next(&in, &frame)) ==
         StreamDecoder::Result::kFrame) {
    Packet p5, p311;
    const bool ok5 = DecodePacket(frame, Version::k5, &p5).ok();
    const bool ok311 = DecodePacket(frame, Version::k311, &p311).ok();
    if (!ok5 && !ok311) std::abort();  // the broker sent a bad packet
  }
  if (r != StreamDecoder::Result::kNeedMore) std::abort();
  slot.received.clear();
}

template <typename P>
void SendPacket(Broker& b, Slot& s, const P& p, Version v, Timestamp now) {
  std::byte buf[512];
  EncodeResult r;
  if constexpr (std::is_same_v<P, Connect>) {
    r = Encode(p, buf);
  } else {
    r = Encode(p, v, buf);
  }
  if (r.ok()) b.OnBytes(s.id, std::span<const std::byte>(buf, r.size), now);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  BrokerOptions options;
  options.max_connections = kSlots;
  options.max_packet_bytes = 4096;
  options.connect_timeout = std::chrono::seconds(2);
  options.max_queued_qos0 = 8;
  options.max_queued_messages = 8;
  options.max_retained_messages = 16;
  options.receive_maximum = 4;
  options.topic_alias_maximum = 4;
  if (size > 0 && (data[0] & 1)) {
    options.queue_full_policy = QueueFullPolicy::kDisconnect;
  }
  Broker broker(options);
  Slot slots[kSlots];
  Timestamp now = Timestamp::FromNanos(1);
  Reader in{data, size};
  std::byte out[1024];
  static const char* const kTopics[] = {"a", "a/b", "$SYS/x",      "+",
                                        "#", "a/+", "$share/g/a/#"};

  while (!in.empty()) {
    const uint8_t op = in.Byte();
    Slot& s = slots[(op >> 4) % kSlots];
    const Version v = (op & 0x08) ? Version::k5 : Version::k311;
    switch (op & 0x07) {
      case 0:
        if (!s.open) {
          absl::StatusOr<ConnectionId> id = broker.OnConnectionOpened(now);
          if (id.ok()) {
            s = Slot();
            s.id = *id;
            s.open = true;
          }
        }
        break;
      case 1:
        if (s.open) {
          broker.OnConnectionClosed(s.id, now);
          s.open = false;
        }
        break;
      case 2:
        if (s.open) broker.OnBytes(s.id, in.Bytes(in.Byte()), now);
        break;
      case 3:
        now += std::chrono::milliseconds(100 * in.Byte());
        if (broker.NextDeadline() <= now) broker.OnTimeout(now);
        break;
      case 4: {
        Connect c;
        c.version = v;
        c.client_id = (in.Byte() & 1) ? "x" : "y";
        c.clean_start = (op & 0x80) == 0;
        c.keep_alive_s = in.Byte() % 4;
        if (v == Version::k5) {
          c.properties.session_expiry_interval = in.Byte() % 3;
          c.properties.receive_maximum = 1 + in.Byte() % 3;
          c.properties.topic_alias_maximum = in.Byte() % 3;
        }
        if (in.Byte() & 1) {
          Will& w = c.will.emplace();
          w.topic = "a/b";
          w.qos = in.Byte() % 3;
          if (v == Version::k5)
            w.properties.will_delay_interval = in.Byte() % 3;
        }
        if (s.open) SendPacket(broker, s, c, v, now);
        break;
      }
      case 5: {
        SubscribeEntry e;
        const uint8_t b = in.Byte();
        e.filter = kTopics[b % std::size(kTopics)];
        e.options.max_qos = (b >> 3) % 3;
        e.options.retain_handling = (b >> 5) % 3;
        Subscribe sub;
        sub.packet_id = 1 + in.Byte();
        sub.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
        if (s.open) SendPacket(broker, s, sub, v, now);
        break;
      }
      case 6: {
        Publish p;
        const uint8_t b = in.Byte();
        p.topic = kTopics[b % 3];
        p.qos = (b >> 2) % 3;
        p.retain = (b >> 4) & 1;
        p.packet_id = p.qos > 0 ? uint16_t(1 + in.Byte()) : 0;
        p.payload = in.Bytes(in.Byte() % 32);
        if (v == Version::k5 && (b & 0x40))
          p.properties.message_expiry_interval = 1;
        if (s.open) SendPacket(broker, s, p, v, now);
        break;
      }
      case 7: {
        const size_t want = 64 + in.Byte() * 4;
        while (std::optional<ConnectionId> id = broker.NextReady()) {
          for (Slot& t : slots) {
            if (!t.open || t.id != *id) continue;
            while (std::optional<Transmit> tx = broker.PollTransmit(
                       *id,
                       std::span<std::byte>(out, std::min(want, sizeof(out))),
                       now)) {
              t.received.insert(t.received.end(), out, out + tx->header_bytes);
              t.received.insert(t.received.end(), tx->tail.begin(),
                                tx->tail.end());
            }
            CheckOutput(t);
          }
        }
        break;
      }
    }
    while (std::optional<BrokerEvent> e = broker.PollEvent()) {
      for (Slot& t : slots) {
        if (t.open && t.id == e->connection) {
          broker.OnConnectionClosed(t.id, now);
          t.open = false;
        }
      }
    }
    size_t open = 0;
    for (const Slot& t : slots) open += t.open;
    if (broker.connection_count() != open) std::abort();
  }
  return 0;
}
