// libFuzzer target: the gossip-discovery message parser
// (GossipDiscovery::OnDatagram, rtps/gossip.h) and what it does with whatever
// parses: merges, probes, sync replies, events. Any crash, sanitizer report
// or leak is a bug; malformed input must only be counted.
// fuzz-deps: rtps/gossip.cc rtps/message.cc rtps/parameter_list.cc
// fuzz-deps: rtps/cdr.cc rtps/types.cc rtps/discovery_data.cc rtps/qos.cc
// fuzz-deps: transport/endpoint.cc
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "rtps/gossip.h"
#include "rtps/message.h"

using namespace ringlab::rtps;

namespace {

GossipDiscovery& Instance() {
  static GossipDiscovery* g = [] {
    GossipConfig c;
    c.prefix.bytes = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    c.self = Locator::UdpV4(0x7f000001, 7410);
    c.seeds = {Locator::UdpV4(0x7f000001, 7420)};
    c.max_members = 64;
    auto* d = new GossipDiscovery(c, ringlab::Timestamp::Zero());
    GossipRecord r;
    r.prefix = c.prefix;
    r.gossip_locator = c.self;
    r.user_locator = Locator::UdpV4(0x7f000001, 7411);
    d->SetLocalRecord(r, ringlab::Timestamp::Zero());
    return d;
  }();
  return *g;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  GossipDiscovery& g = Instance();
  static int64_t now_ns = 0;
  now_ns += 7'000'000;  // time moves, so suspicion and backoff paths run
  const ringlab::Timestamp now = ringlab::Timestamp::FromNanos(now_ns);
  const Locator from = Locator::UdpV4(0x7f000001, 7500);

  // As received: anything at all.
  std::span<const std::byte> raw(reinterpret_cast<const std::byte*>(data),
                                 size);
  g.OnDatagram(raw, from, now);

  // Wrapped in a valid RTPS header and gossip submessage header, so the
  // fuzzer spends its time in the body parser: input byte 0 is the
  // submessage flags, byte 1 the sender prefix's last byte, the rest the
  // body (its length field says exactly that much).
  if (size >= 2 && size - 2 <= 0xffff) {
    std::vector<std::byte> m(kHeaderSize + kSubmessageHeaderSize + size - 2);
    std::memcpy(m.data(), "RTPS", 4);
    m[4] = std::byte{2};
    m[5] = std::byte{5};
    m[6] = std::byte{kVendorRinglab.bytes[0]};
    m[7] = std::byte{kVendorRinglab.bytes[1]};
    for (int i = 0; i < 11; ++i) m[8 + i] = std::byte(0x40 + i);
    m[19] = std::byte{data[1]};
    m[kHeaderSize] = std::byte{kGossipSubmessageId};
    m[kHeaderSize + 1] = std::byte{data[0]};
    const uint16_t len = static_cast<uint16_t>(size - 2);
    // Little-endian lengths when flag E (bit 0) is set, as RTPS §9.4.5.1.
    if (data[0] & 1) {
      m[kHeaderSize + 2] = std::byte(len & 0xff);
      m[kHeaderSize + 3] = std::byte(len >> 8);
    } else {
      m[kHeaderSize + 2] = std::byte(len >> 8);
      m[kHeaderSize + 3] = std::byte(len & 0xff);
    }
    if (size > 2) {
      std::memcpy(m.data() + kHeaderSize + kSubmessageHeaderSize, data + 2,
                  size - 2);
    }
    g.OnDatagram(m, from, now);
  }

  std::array<std::byte, 65536> out;
  if (g.NextDeadline() <= now) g.OnTimeout(now);
  for (int i = 0; i < 64; ++i) {
    if (!g.PollTransmit(out, now)) break;
  }
  while (g.PollEvent()) {
  }
  return 0;
}
