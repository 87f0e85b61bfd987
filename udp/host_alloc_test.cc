// No allocation per packet: two Hosts exchange messages over an in-memory
// lossy pipe built from fixed arrays, and after a warm-up a long steady-state
// run (sends, receives, ACKs, NACKs, losses, retransmissions, PTOs,
// fragmentation, MAX_DATA, heartbeats) must not call operator new once.
//
// testing/counting_allocator replaces operator new for this binary; nothing
// else in the binary allocates inside the measured loop.
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "gtest/gtest.h"
#include "testing/counting_allocator.h"
#include "udp/host.h"

namespace ringlab::rudp {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

// A one-way link: a fixed ring of datagrams with a fixed delay, dropping
// every `drop_every`-th datagram.
class Pipe {
 public:
  explicit Pipe(uint32_t drop_every) : drop_every_(drop_every) {}
  void Send(std::span<const std::byte> bytes, Timestamp now) {
    if (++count_ % drop_every_ == 0) return;
    if (size_ == kSlots) return;  // tail drop
    Slot& s = slots_[(head_ + size_) % kSlots];
    std::copy(bytes.begin(), bytes.end(), s.bytes.begin());
    s.size = bytes.size();
    s.due = now + microseconds(500);
    ++size_;
  }
  // The next datagram due by `now`, or an empty span.
  std::span<const std::byte> Receive(Timestamp now) {
    if (size_ == 0 || slots_[head_].due > now) return {};
    Slot& s = slots_[head_];
    head_ = (head_ + 1) % kSlots;
    --size_;
    return std::span<const std::byte>(s.bytes.data(), s.size);
  }
  Timestamp NextDue() const {
    return size_ == 0 ? Timestamp::Never() : slots_[head_].due;
  }

 private:
  static constexpr size_t kSlots = 4096;
  struct Slot {
    std::array<std::byte, 1500> bytes;
    size_t size = 0;
    Timestamp due;
  };
  std::array<Slot, kSlots> slots_{};
  size_t head_ = 0, size_ = 0;
  uint32_t drop_every_;
  uint64_t count_ = 0;
};

struct Pair {
  Pair() {
    HostOptions o;
    o.connection.initial_rtt = milliseconds(10);
    o.connection.max_ack_delay = milliseconds(2);
    o.connection.heartbeat_interval = milliseconds(20);
    o.connection.nack_on_gap = true;  // exercise the NACK paths too
    o.connection.receive_window_bytes = 1 << 20;
    o.connection.send_buffer_bytes = 1 << 20;
    o.connection.max_message_bytes = 256 << 10;
    o.seed = 1;
    a = std::move(*Host::Create(o));
    o.seed = 2;
    b = std::move(*Host::Create(o));
  }

  // One round: deliver, timers, transmit, events.
  void Step() {
    Timestamp next = std::min(
        {a->NextDeadline(), b->NextDeadline(), ab.NextDue(), ba.NextDue()});
    if (next.is_never()) next = now + milliseconds(1);
    if (next > now) now = next;
    for (auto d = ab.Receive(now); !d.empty(); d = ab.Receive(now)) {
      b->OnDatagram(d, kA, now);
    }
    for (auto d = ba.Receive(now); !d.empty(); d = ba.Receive(now)) {
      a->OnDatagram(d, kB, now);
    }
    if (a->NextDeadline() <= now) a->OnTimeout(now);
    if (b->NextDeadline() <= now) b->OnTimeout(now);
    while (auto t = a->PollTransmit(buffer, now))
      ab.Send(std::span(buffer).first(t->size), now);
    while (auto t = b->PollTransmit(buffer, now))
      ba.Send(std::span(buffer).first(t->size), now);
    Event e;
    while (a->PollEvent(&e)) OnEvent(e, true);
    while (b->PollEvent(&e)) OnEvent(e, false);
  }

  void OnEvent(const Event& e, bool at_a) {
    if (e.type == EventType::kConnected && at_a) a_conn = e.connection;
    if (e.type == EventType::kConnected && !at_a) b_conn = e.connection;
    if (e.type == EventType::kMessage) {
      ++(at_a ? received_by_a : received_by_b);
      bytes_received += e.message.size();
    }
    if (e.type == EventType::kClosed) closed = true;
  }

  // Keeps both directions busy with messages of varied sizes.
  void Pump() {
    static const size_t kSizes[] = {16, 700, 1400, 5000, 40000, 64, 200000};
    while (a_conn.valid() && a->Send(a_conn, uint8_t(sent_by_a % 2),
                                     std::span(payload).first(
                                         kSizes[sent_by_a % std::size(kSizes)]),
                                     now) == SendResult::kOk) {
      ++sent_by_a;
    }
    while (b_conn.valid() &&
           b->Send(b_conn, 0, std::span(payload).first(kSizes[sent_by_b % 3]),
                   now) == SendResult::kOk) {
      ++sent_by_b;
    }
    if (a_conn.valid()) {
      a->Send(a_conn, 2, std::span(payload).first(100), now);  // unreliable
    }
  }

  static inline const Endpoint kA = Endpoint::Loopback(1);
  static inline const Endpoint kB = Endpoint::Loopback(2);
  std::unique_ptr<Host> a, b;
  Pipe ab{9}, ba{13};
  Timestamp now = Timestamp::FromNanos(1'000'000'000);
  std::array<std::byte, 2048> buffer{};
  std::array<std::byte, 200000> payload{};
  ConnectionHandle a_conn, b_conn;
  uint64_t sent_by_a = 0, sent_by_b = 0, received_by_a = 0, received_by_b = 0;
  uint64_t bytes_received = 0;
  bool closed = false;
};

TEST(RudpAllocationTest, SteadyStateAllocatesNothing) {
  auto pair = std::make_unique<Pair>();
  auto client = pair->a->Connect(Pair::kB, pair->now);
  ASSERT_TRUE(client.ok());
  // Warm up: handshake (allocates the connections) and some traffic.
  for (int i = 0; i < 20000 && pair->received_by_b < 200; ++i) {
    pair->Pump();
    pair->Step();
  }
  ASSERT_TRUE(pair->a_conn.valid() && pair->b_conn.valid());
  ASSERT_GE(pair->received_by_b, 200u);
  const uint64_t received_before = pair->received_by_a + pair->received_by_b;
  const uint64_t bytes_before = pair->bytes_received;
  const auto stats_before = *pair->a->Stats(pair->a_conn);

  counting_allocator::Start();
  for (int i = 0; i < 30000; ++i) {
    pair->Pump();
    pair->Step();
  }
  const uint64_t allocations = counting_allocator::Stop();

  const auto stats = *pair->a->Stats(pair->a_conn);
  EXPECT_EQ(allocations, 0u);
  std::printf(
      "steady state: %llu messages, %llu bytes, %llu lost packets, "
      "%llu allocations\n",
      (unsigned long long)(pair->received_by_a + pair->received_by_b -
                           received_before),
      (unsigned long long)(pair->bytes_received - bytes_before),
      (unsigned long long)(stats.packets_lost - stats_before.packets_lost),
      (unsigned long long)allocations);
  EXPECT_FALSE(pair->closed);
  // The loop really exercised the paths it claims to.
  EXPECT_GT(pair->received_by_a + pair->received_by_b - received_before, 1000u);
  EXPECT_GT(pair->bytes_received - bytes_before, 10u << 20);
  EXPECT_GT(stats.packets_lost, stats_before.packets_lost + 100);
  EXPECT_GT(stats.fragments_retransmitted,
            stats_before.fragments_retransmitted);
  EXPECT_GT(stats.nacks_received, stats_before.nacks_received);
  EXPECT_GT(stats.send_would_block, stats_before.send_would_block);
}

}  // namespace
}  // namespace ringlab::rudp
