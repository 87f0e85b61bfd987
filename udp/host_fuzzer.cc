// libFuzzer target: a whole rudp connection fed arbitrary datagrams. Two
// Hosts complete a real handshake in memory; then the input is cut into
// datagrams, each injected at the server or the client either raw or behind
// a valid short header with the real connection id (so frames are reached),
// with the clock advancing and real traffic flowing in between. Nothing may
// crash, memory must not grow, and every event must be well formed.
// fuzz-deps: udp/host.cc udp/types.cc udp/wire.cc udp/phi_accrual.cc
// fuzz-deps: udp/internal/connection.cc udp/internal/siphash.cc
// fuzz-deps: transport/endpoint.cc
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "udp/host.h"
#include "udp/wire.h"

namespace {

using namespace ringlab;
using namespace ringlab::rudp;

const Endpoint kA = Endpoint::Loopback(1);
const Endpoint kB = Endpoint::Loopback(2);

struct World {
  std::unique_ptr<Host> a, b;
  Timestamp now = Timestamp::FromNanos(1'000'000'000);
  uint64_t a_to_b_cid = 0, b_to_a_cid = 0;
  ConnectionHandle a_conn;
  std::array<std::byte, 2048> buffer;
  size_t max_message = 0;

  // Moves real traffic both ways and drains events.
  void Exchange() {
    for (int round = 0; round < 20; ++round) {
      bool any = false;
      while (auto t = a->PollTransmit(buffer, now)) {
        Learn(std::span(buffer).first(t->size), &a_to_b_cid);
        b->OnDatagram(std::span(buffer).first(t->size), kA, now);
        any = true;
      }
      while (auto t = b->PollTransmit(buffer, now)) {
        Learn(std::span(buffer).first(t->size), &b_to_a_cid);
        a->OnDatagram(std::span(buffer).first(t->size), kB, now);
        any = true;
      }
      Event e;
      for (Host* h : {a.get(), b.get()}) {
        while (h->PollEvent(&e)) {
          any = true;
          if (e.type == EventType::kConnected && h == a.get())
            a_conn = e.connection;
          if (e.type == EventType::kMessage && e.message.size() > max_message) {
            std::abort();
          }
        }
      }
      if (!any) break;
    }
    for (Host* h : {a.get(), b.get()}) {
      if (h->NextDeadline() <= now) h->OnTimeout(now);
    }
  }
  static void Learn(std::span<const std::byte> d, uint64_t* cid) {
    if (wire::IsLongHeader(d)) return;
    wire::Reader r(d);
    wire::ShortHeader h;
    if (wire::ParseShortHeader(r, &h) == wire::ParseError::kOk) *cid = h.dcid;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  HostOptions o;
  o.connection.initial_rtt = std::chrono::milliseconds(10);
  o.connection.receive_window_bytes = 64 << 10;
  o.connection.send_buffer_bytes = 64 << 10;
  o.connection.max_message_bytes = 16 << 10;
  o.connection.max_send_fragments = 256;
  o.connection.max_packets_in_flight = 256;
  o.max_connections = 4;
  World w;
  w.max_message = o.connection.max_message_bytes;
  o.seed = 1;
  w.a = std::move(*Host::Create(o));
  o.seed = 2;
  w.b = std::move(*Host::Create(o));
  if (!w.a->Connect(kB, w.now).ok()) std::abort();
  for (int i = 0; i < 10; ++i) {
    w.Exchange();
    w.now += std::chrono::milliseconds(1);
  }
  if (!w.a_conn.valid() || w.a_to_b_cid == 0) std::abort();
  const size_t memory_a = w.a->memory_bytes();
  const size_t memory_b = w.b->memory_bytes();

  // Input: [control byte][length byte][payload]...
  size_t pos = 0;
  std::vector<std::byte> packet;
  const std::byte message[600] = {};
  while (pos + 2 <= size) {
    const uint8_t control = data[pos];
    const size_t length = std::min<size_t>(data[pos + 1], size - pos - 2);
    const std::span<const std::byte> payload(
        reinterpret_cast<const std::byte*>(data + pos + 2), length);
    pos += 2 + length;
    const bool to_b = control & 1;
    Host& target = to_b ? *w.b : *w.a;
    if (control & 2) {
      // Behind a valid header with a fuzzed packet number.
      packet.assign(16 + length, std::byte{0});
      wire::Writer writer(packet);
      wire::WriteShortHeader(writer, to_b ? w.a_to_b_cid : w.b_to_a_cid,
                             control >> 3, (control & 4) ? 4 : 2);
      writer.Bytes(payload);
      packet.resize(writer.size());
      target.OnDatagram(packet, to_b ? kA : kB, w.now);
    } else {
      target.OnDatagram(payload, to_b ? kA : kB, w.now);
    }
    if (control & 0x80) {
      w.a->Send(w.a_conn, uint8_t(control % 3),
                std::span(message).first(length), w.now);
    }
    w.now += std::chrono::microseconds(control * 37);
    w.Exchange();
  }
  if (w.a->memory_bytes() > memory_a || w.b->memory_bytes() > memory_b) {
    std::abort();
  }
  return 0;
}
