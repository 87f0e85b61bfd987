// Hostile input: spoofed and flooded handshakes, forged tokens, forged and
// oversized acknowledgements, a fragment claiming a 4 GiB message, flow
// control violations. Each must be counted, dropped, and leave memory where
// it was.
#include <array>
#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "transport/sim_network.h"
#include "udp/host.h"
#include "udp/sim_harness.h"
#include "udp/wire.h"

namespace ringlab::rudp {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::PatternMessage;
using testing::SimHarness;

const Endpoint kClient = Endpoint::Loopback(1000);
const Endpoint kServer = Endpoint::Loopback(2000);

HostOptions Options() {
  HostOptions o;
  o.connection.initial_rtt = milliseconds(50);
  o.connection.receive_window_bytes = 256 << 10;
  o.connection.send_buffer_bytes = 256 << 10;
  o.connection.max_message_bytes = 64 << 10;
  o.max_connections = 8;
  return o;
}

std::vector<std::byte> Initial(uint64_t client_cid,
                               std::span<const std::byte> token = {},
                               const ConnectionOptions& c = {}) {
  wire::LongHeader h;
  h.type = wire::PacketType::kInitial;
  h.version = wire::kVersion;
  h.client_cid = client_cid;
  h.token = token;
  h.params.max_data = 1 << 20;
  h.params.max_message_bytes = 1 << 20;
  h.params.channel_count = uint8_t(c.channels.size());
  for (size_t i = 0; i < c.channels.size(); ++i) {
    h.params.channel_types[i] = uint8_t(c.channels[i]);
  }
  std::vector<std::byte> out(1500);
  out.resize(wire::WriteLongHeader(h, out));
  return out;
}

// Drains a host's output.
std::vector<std::pair<std::vector<std::byte>, Endpoint>> Drain(Host& host,
                                                               Timestamp now) {
  std::vector<std::pair<std::vector<std::byte>, Endpoint>> out;
  std::array<std::byte, 2048> buf;
  while (auto t = host.PollTransmit(buf, now)) {
    out.push_back(
        {std::vector<std::byte>(buf.begin(), buf.begin() + ptrdiff_t(t->size)),
         t->destination});
  }
  return out;
}

uint64_t Drops(const Host& h, DropReason r) {
  return h.stats().drops[size_t(r)];
}

TEST(RudpHostileTest, SpoofedInitialFloodGetsOnlySmallStatelessReplies) {
  auto host = *Host::Create(Options());
  const size_t memory = host->memory_bytes();
  transport::SimRandom random(1);
  const Timestamp now = Timestamp::FromNanos(1'000'000'000);
  uint64_t reply_bytes = 0;
  size_t replies = 0;
  for (int i = 0; i < 5000; ++i) {
    const Endpoint spoofed =
        Endpoint::Ipv4(uint32_t(random.Next()), uint16_t(random.Next()));
    host->OnDatagram(Initial(random.Next()), spoofed, now);
    for (const auto& [bytes, to] : Drain(*host, now)) {
      EXPECT_EQ(to, spoofed);
      EXPECT_LE(bytes.size(), 30u);  // vs 1200 received: no amplification
      reply_bytes += bytes.size();
      ++replies;
    }
  }
  EXPECT_EQ(replies, 5000u);
  EXPECT_EQ(host->stats().retries_sent, 5000u);
  EXPECT_EQ(host->connection_count(), 0u);  // no state for a spoofed source
  EXPECT_EQ(host->memory_bytes(), memory);
  EXPECT_EQ(host->stats().bytes_sent_stateless, reply_bytes);
  EXPECT_LE(reply_bytes * 40, host->stats().bytes_received_unvalidated);

  // Nobody polls: the reply queue fills and further replies are dropped.
  for (int i = 0; i < 1000; ++i) {
    host->OnDatagram(Initial(uint64_t(i)), Endpoint::Loopback(uint16_t(i + 1)),
                     now);
  }
  EXPECT_EQ(Drops(*host, DropReason::kStatelessQueueFull),
            1000u - host->options().max_stateless_replies);
  EXPECT_EQ(host->memory_bytes(), memory);
}

TEST(RudpHostileTest, ShortInitialIsDroppedUnanswered) {
  auto host = *Host::Create(Options());
  auto initial = Initial(7);
  initial.resize(wire::kMinInitialBytes - 1);
  host->OnDatagram(initial, kClient, Timestamp::Zero());
  EXPECT_TRUE(Drain(*host, Timestamp::Zero()).empty());
  EXPECT_EQ(Drops(*host, DropReason::kShortInitial), 1u);
}

TEST(RudpHostileTest, ForgedReplayedAndExpiredCookiesAreRefused) {
  auto host = *Host::Create(Options());
  const Timestamp t0 = Timestamp::FromNanos(5'000'000'000);
  // A real cookie for kClient / cid 7.
  host->OnDatagram(Initial(7), kClient, t0);
  auto replies = Drain(*host, t0);
  ASSERT_EQ(replies.size(), 1u);
  wire::LongHeader retry;
  ASSERT_EQ(wire::ParseLongHeader(replies[0].first, &retry),
            wire::ParseError::kOk);
  ASSERT_EQ(retry.type, wire::PacketType::kRetry);
  const std::vector<std::byte> token(retry.token.begin(), retry.token.end());

  // Random bytes.
  std::vector<std::byte> forged(16, std::byte{0x55});
  host->OnDatagram(Initial(7, forged), kClient, t0);
  EXPECT_EQ(Drops(*host, DropReason::kBadToken), 1u);
  // The real cookie from another address, or for another connection id.
  host->OnDatagram(Initial(7, token), Endpoint::Loopback(1001), t0);
  host->OnDatagram(Initial(8, token), kClient, t0);
  EXPECT_EQ(Drops(*host, DropReason::kBadToken), 3u);
  // Too late: refused, with a fresh cookie.
  host->OnDatagram(Initial(7, token), kClient, t0 + seconds(11));
  EXPECT_EQ(Drops(*host, DropReason::kExpiredToken), 1u);
  replies = Drain(*host, t0 + seconds(11));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(host->connection_count(), 0u);
  // In time it works, once: a repeat finds the same connection.
  host->OnDatagram(Initial(7, token), kClient, t0 + seconds(1));
  host->OnDatagram(Initial(7, token), kClient, t0 + seconds(1));
  EXPECT_EQ(host->connection_count(), 1u);
  EXPECT_EQ(host->stats().connections_accepted, 1u);
}

TEST(RudpHostileTest, BadVersionGetsAReject) {
  auto host = *Host::Create(Options());
  auto initial = Initial(9);
  initial[4] = std::byte{0x77};  // version's last byte
  host->OnDatagram(initial, kClient, Timestamp::Zero());
  const auto replies = Drain(*host, Timestamp::Zero());
  ASSERT_EQ(replies.size(), 1u);
  wire::LongHeader h;
  ASSERT_EQ(wire::ParseLongHeader(replies[0].first, &h), wire::ParseError::kOk);
  EXPECT_EQ(h.type, wire::PacketType::kReject);
  EXPECT_EQ(h.reason, wire::RejectReason::kVersion);
  EXPECT_EQ(Drops(*host, DropReason::kBadVersion), 1u);
}

// Clients that complete the handshake from real addresses: only
// max_connections get a connection, the rest a REJECT; memory is bounded.
TEST(RudpHostileTest, HandshakeFloodIsBoundedByMaxConnections) {
  SimHarness sim(3);
  HostOptions o = Options();
  Host& server = sim.AddHost(kServer, o);
  std::vector<Host*> clients;
  int connected = 0, rejected = 0;
  sim.on_event = [&](Host& h, const Event& e) {
    if (&h == &server) return;
    if (e.type == EventType::kConnected) ++connected;
    if (e.type == EventType::kConnectFailed) {
      EXPECT_EQ(e.reason, CloseReason::kRejected);
      ++rejected;
    }
  };
  for (int i = 0; i < 40; ++i) {
    clients.push_back(&sim.AddHost(Endpoint::Loopback(uint16_t(3000 + i)), o));
    ASSERT_TRUE(clients.back()->Connect(kServer, sim.now()).ok());
  }
  ASSERT_TRUE(
      sim.RunUntil([&] { return connected + rejected == 40; }, seconds(30)))
      << sim.failure();
  EXPECT_EQ(connected, 8);
  EXPECT_EQ(rejected, 32);
  EXPECT_EQ(server.connection_count(), 8u);
  EXPECT_EQ(Drops(server, DropReason::kServerBusy), 32u);
  // Bounded: the host plus 8 connections, each well under its budget.
  EXPECT_LT(server.memory_bytes(), 8 * (2u << 20));
}

// An established pair, and the connection id an attacker would need.
struct Established {
  Established() : sim(5) {
    client = &sim.AddHost(kClient, Options());
    server = &sim.AddHost(kServer, Options());
    sim.on_send = [this](const Endpoint& from, const Endpoint&,
                         std::vector<std::byte>& bytes) {
      if (from == kClient && !wire::IsLongHeader(bytes)) {
        wire::Reader r(bytes);
        wire::ShortHeader h;
        if (wire::ParseShortHeader(r, &h) == wire::ParseError::kOk) {
          server_cid = h.dcid;
        }
      }
    };
    sim.on_event = [this](Host& h, const Event& e) {
      if (&h == client && e.type == EventType::kConnected) client_up = true;
      if (&h == server && e.type == EventType::kConnected)
        server_conn = e.connection;
      if (&h == server && e.type == EventType::kMessage) ++server_messages;
    };
    client_conn = *client->Connect(kServer, sim.now());
    EXPECT_TRUE(sim.RunUntil(
        [this] { return client_up && server_conn.valid() && server_cid != 0; },
        seconds(5)));
  }

  // A short packet for the server connection, from `from`.
  void Inject(const std::vector<std::byte>& frames,
              const Endpoint& from = kClient, uint64_t pn = 1000) {
    std::vector<std::byte> packet(2048);
    wire::Writer w(packet);
    wire::WriteShortHeader(w, server_cid, pn, 4);
    w.Bytes(frames);
    packet.resize(w.size());
    server->OnDatagram(packet, from, sim.now());
    sim.Flush();
  }

  uint64_t ServerDrops(DropReason r) {
    return server->Stats(server_conn)->drops[size_t(r)];
  }

  // The connection still works: a message goes through.
  bool StillWorks() {
    const int before = server_messages;
    if (client->Send(client_conn, 0, PatternMessage(1, 500), sim.now()) !=
        SendResult::kOk) {
      return false;
    }
    return sim.RunUntil([&] { return server_messages > before; }, seconds(5));
  }

  SimHarness sim;
  Host* client;
  Host* server;
  ConnectionHandle client_conn, server_conn;
  bool client_up = false;
  uint64_t server_cid = 0;
  int server_messages = 0;
};

std::vector<std::byte> Frames(const std::function<void(wire::Writer&)>& write) {
  std::vector<std::byte> out(2048);
  wire::Writer w(out);
  write(w);
  out.resize(w.size());
  return out;
}

TEST(RudpHostileTest, ForgedAckOfPacketsNeverSentIsDropped) {
  Established e;
  const size_t memory = e.server->memory_bytes();
  const wire::PacketRange never_sent[] = {{1'000'000, 1'000'010}};
  e.Inject(Frames(
      [&](wire::Writer& w) { wire::WriteAckFrame(w, never_sent, 0, 100); }));
  EXPECT_EQ(e.ServerDrops(DropReason::kForgedAck), 1u);
  // A NACK of packets never sent, too.
  e.Inject(Frames(
      [&](wire::Writer& w) { wire::WriteNackFrame(w, never_sent, 100); }));
  EXPECT_EQ(e.ServerDrops(DropReason::kForgedAck), 2u);
  EXPECT_EQ(e.server->memory_bytes(), memory);
  EXPECT_TRUE(e.StillWorks());
}

TEST(RudpHostileTest, HugeAndMalformedAckRangesAreDropped) {
  Established e;
  // First range larger than the largest acknowledged (reaches below 0).
  e.Inject(Frames([](wire::Writer& w) {
    w.U8(uint8_t(wire::FrameType::kAck));
    w.Varint(3);
    w.Varint(0);
    w.Varint(0);
    w.Varint(wire::kMaxVarint);
  }));
  // 300 ranges: more than any sender needs.
  e.Inject(Frames([](wire::Writer& w) {
    w.U8(uint8_t(wire::FrameType::kAck));
    w.Varint(100000);
    w.Varint(0);
    w.Varint(300);
    w.Varint(0);
    for (int i = 0; i < 300; ++i) {
      w.Varint(0);
      w.Varint(0);
    }
  }));
  // One huge range covering everything from 0: its largest was never sent.
  e.Inject(Frames([](wire::Writer& w) {
    const wire::PacketRange all[] = {{0, wire::kMaxVarint}};
    wire::WriteAckFrame(w, all, 0, 100);
  }));
  const ConnectionStats s = *e.server->Stats(e.server_conn);
  EXPECT_EQ(s.parse_errors[size_t(wire::ParseError::kBadRange)], 1u);
  EXPECT_EQ(s.parse_errors[size_t(wire::ParseError::kTooManyRanges)], 1u);
  EXPECT_EQ(s.drops[size_t(DropReason::kParse)], 2u);
  EXPECT_EQ(s.drops[size_t(DropReason::kForgedAck)], 1u);
  EXPECT_TRUE(e.StillWorks());
}

TEST(RudpHostileTest, FragmentClaimingFourGibIsDropped) {
  Established e;
  const size_t memory = e.server->memory_bytes();
  const std::vector<std::byte> data(1024, std::byte{1});
  e.Inject(Frames([&](wire::Writer& w) {
    wire::WriteMessageFrame(w, 0, 0, uint64_t{4} << 30, 0, 0, data);
  }));
  EXPECT_EQ(e.ServerDrops(DropReason::kMessageTooLarge), 1u);
  // Within the size limit but beyond the window we advertised.
  e.Inject(Frames([&](wire::Writer& w) {
    wire::WriteMessageFrame(w, 0, 0, 1024, 0, 64ull << 20, data);
  }));
  EXPECT_EQ(e.ServerDrops(DropReason::kFlowControl), 1u);
  // Unaligned fragments and a MESSAGE on the unreliable channel.
  e.Inject(Frames([&](wire::Writer& w) {
    wire::WriteMessageFrame(w, 0, 0, 4096, 0, 32, data);
  }));
  EXPECT_EQ(e.ServerDrops(DropReason::kMisalignedFragment), 1u);
  e.Inject(Frames([&](wire::Writer& w) {
    wire::WriteMessageFrame(w, 2, 0, 100, 0, 0, std::span(data).first(100));
  }));
  EXPECT_EQ(e.ServerDrops(DropReason::kChannelType), 1u);
  EXPECT_EQ(e.server->memory_bytes(), memory);
  EXPECT_TRUE(e.StillWorks());
}

TEST(RudpHostileTest, InconsistentFragmentsDoNotCorruptAMessage) {
  Established e;
  const std::vector<std::byte> data(1280, std::byte{2});
  // Message 0 claimed as 4096 bytes at offset 0, then as 2048 bytes.
  e.Inject(Frames([&](wire::Writer& w) {
             wire::WriteMessageFrame(w, 0, 0, 4096, 0, 0, data);
           }),
           kClient, 2000);
  e.Inject(Frames([&](wire::Writer& w) {
             wire::WriteMessageFrame(w, 0, 0, 2048, 0, 0, data);
           }),
           kClient, 2001);
  EXPECT_EQ(e.ServerDrops(DropReason::kInconsistentMessage), 1u);
}

TEST(RudpHostileTest, KnownConnectionIdFromAnotherAddressIsDropped) {
  Established e;
  e.Inject(
      Frames([](wire::Writer& w) { w.U8(uint8_t(wire::FrameType::kPing)); }),
      Endpoint::Loopback(4444));
  EXPECT_EQ(e.server->stats().drops[size_t(DropReason::kWrongAddress)], 1u);
  // An unknown connection id.
  std::vector<std::byte> packet(64);
  wire::Writer w(packet);
  wire::WriteShortHeader(w, e.server_cid ^ 1, 5, 2);
  w.U8(uint8_t(wire::FrameType::kPing));
  packet.resize(w.size());
  e.server->OnDatagram(packet, kClient, e.sim.now());
  EXPECT_EQ(e.server->stats().drops[size_t(DropReason::kUnknownConnection)],
            1u);
  EXPECT_TRUE(e.StillWorks());
}

// Random garbage at the established connection, every length 0..200: all
// dropped or harmlessly handled, memory unchanged, the connection alive.
TEST(RudpHostileTest, GarbageDatagramsLeaveTheConnectionIntact) {
  Established e;
  const size_t memory = e.server->memory_bytes();
  transport::SimRandom random(11);
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> junk(random.Uniform(200));
    for (auto& b : junk) b = std::byte(random.Next());
    if (!junk.empty() && random.Bernoulli(0.5)) {
      // Make it look like ours: right header, random frames.
      std::vector<std::byte> packet(16 + junk.size());
      wire::Writer w(packet);
      wire::WriteShortHeader(w, e.server_cid, random.Next(), 4);
      w.Bytes(junk);
      packet.resize(w.size());
      junk = std::move(packet);
    }
    e.server->OnDatagram(junk, kClient, e.sim.now());
  }
  e.sim.Flush();
  EXPECT_EQ(e.server->memory_bytes(), memory);
  EXPECT_GT(e.server->Stats(e.server_conn)->total_drops() +
                e.server->stats().drops[size_t(DropReason::kParse)],
            10000u);
  EXPECT_TRUE(e.StillWorks());
}

// Memory stays flat through a long lossy transfer: everything is sized at
// connection setup.
TEST(RudpHostileTest, MemoryIsFlatDuringATransfer) {
  Established e;
  transport::SimImpairment lossy;
  lossy.loss_probability = 0.1;
  lossy.delay = milliseconds(2);
  e.sim.SetLink(kClient, kServer, lossy);
  const size_t client_memory = e.client->memory_bytes();
  const size_t server_memory = e.server->memory_bytes();
  int sent = 0;
  ASSERT_TRUE(e.sim.RunUntil(
      [&] {
        while (sent < 2000 &&
               e.client->Send(e.client_conn, 0, PatternMessage(sent, 3000),
                              e.sim.now()) == SendResult::kOk) {
          ++sent;
        }
        return e.server_messages == 2000;
      },
      seconds(300)))
      << e.sim.failure();
  EXPECT_EQ(e.client->memory_bytes(), client_memory);
  EXPECT_EQ(e.server->memory_bytes(), server_memory);
  // And it is bounded: well under the configured buffers plus tables.
  EXPECT_LT(server_memory, size_t{2} << 20);
}

}  // namespace
}  // namespace ringlab::rudp
