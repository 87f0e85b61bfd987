// ringlab_enet_bench: ENet (Debian libenet 1.3.17) as a measured peer for the
// reliable-UDP module: a reliable ping-pong and a bulk transfer under
// in-process receive-side loss.
//
//   ringlab_enet_bench server --bind=127.0.0.1:0 [--cpu=N] [--loss=PCT
//   --seed=N] ringlab_enet_bench client --server=HOST:PORT --mode=pingpong
//       [--payload=64] [--samples=100000] [--warmup=5000]
//       [--loss=PCT --seed=N] [--cpu=N] [--json=PATH] [--timeout_s=60]
//   ringlab_enet_bench client --server=HOST:PORT --mode=bulk
//       [--bytes=100MiB] [--chunk=64KiB] [--direction=upload|download] ...
//
// The server prints `READY host:port` once bound and serves clients one
// after another until SIGINT/SIGTERM, then prints `SERVER_STATS {json}`. The
// client asks for the mode on a control channel, runs it, and writes the
// ringlab JSON result (the `ringlab_json` parser's format; bulk figures are
// extra keys) to --json, or prints it as a `RESULT {...}` line.
//
// ENet's rules, which shape every figure here (field notes): reliable
// commands are acknowledged one by one; a command is resent when it is not
// acknowledged within RTO = rtt + 4 * rttvar, and the RTO doubles on each
// further timeout (up to a limit) - there is no fast retransmit, so every
// loss costs at least one RTO. Reliable data in flight is capped by the
// peer's window scaled by its packet throttle. Packets above the MTU (1400)
// are sent as fragments, each a reliable command of its own.
//
// Loss: with --loss=PCT each side drops that share of the datagrams it
// receives (data and acknowledgements alike), decided by a seeded generator
// in ENet's intercept hook before ENet parses them, so a run is repeatable.
// It starts once the connection is up, so the handshake is never lost.
//
// Exit codes: 0 ok, 1 run failed (with a reason on stderr), 2 bad usage.
#include <enet/enet.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "bench/histogram.h"
#include "bench/json_writer.h"
#include "bench/process_stats.h"

namespace ringlab::bench {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

constexpr uint8_t kDataChannel = 0;
constexpr uint8_t kControlChannel = 1;
constexpr uint32_t kMagic = 0x524c454e;  // "RLEN"
constexpr size_t kPingHeaderBytes = 16;  // sequence number + check word

enum class Mode : uint32_t { kPingPong = 1, kBulk = 2 };
enum class Direction : uint32_t { kUpload = 1, kDownload = 2 };
enum class ControlKind : uint32_t {
  kHello = 1,
  kDone = 2,
  kStatsRequest = 3,
  kStats = 4,
  kHelloAck = 5,
};

// Control messages are fixed-layout structs sent between two copies of this
// program on one machine, so host byte order is fine.
struct Hello {
  uint32_t magic = kMagic;
  uint32_t kind = static_cast<uint32_t>(ControlKind::kHello);
  uint32_t mode = 0;
  uint32_t direction = 0;
  uint64_t bytes = 0;
  uint32_t chunk_bytes = 0;
  uint32_t payload_bytes = 0;
};
struct Done {  // the receiver of a bulk transfer has everything
  uint32_t magic = kMagic;
  uint32_t kind = static_cast<uint32_t>(ControlKind::kDone);
  uint64_t bytes = 0;
  int64_t receive_span_ns = 0;
};
struct SideStats {
  uint64_t reliable_resends = 0;
  uint64_t udp_datagrams_sent = 0;
  uint64_t udp_bytes_sent = 0;
  uint64_t udp_datagrams_received = 0;
  uint64_t dropped_by_impairment = 0;
  int64_t cpu_us = 0;
};
struct StatsMessage {
  uint32_t magic = kMagic;
  uint32_t kind = static_cast<uint32_t>(ControlKind::kStats);
  SideStats stats;
};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ------------------------------------------------------------ impairment

// splitmix64: small, seedable, and the same sequence everywhere.
struct Rng {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// One host per process, so the hook's state is process-wide.
Rng g_rng{1};
uint64_t g_drop_per_million = 0;
std::atomic<bool> g_loss_active{false};
uint64_t g_dropped = 0;
uint64_t g_received_datagrams = 0;

int ENET_CALLBACK InterceptLoss(ENetHost*, ENetEvent*) {
  ++g_received_datagrams;
  if (!g_loss_active.load(std::memory_order_relaxed) ||
      g_drop_per_million == 0) {
    return 0;
  }
  if (g_rng.Next() % 1000000 < g_drop_per_million) {
    ++g_dropped;
    return 1;  // intercepted: ENet never sees this datagram
  }
  return 0;
}

// ENet keeps packetsLost (resent reliable commands) per 10 s loss interval
// and zeroes it at each interval's end; sampling it after every service call
// and adding the increases gives a running total (a lower bound: resends in
// the call that ends an interval are missed).
struct ResendCounter {
  uint32_t last = 0;
  uint64_t total = 0;
  void Sample(const ENetPeer* peer) {
    if (peer == nullptr) return;
    const uint32_t now = peer->packetsLost;
    total += now >= last ? now - last : now;
    last = now;
  }
};

// Bytes of packets handed to ENet and not yet freed by it (a reliable packet
// is freed once every fragment is acknowledged): the sender's backlog.
uint64_t g_freed_bytes = 0;
void ENET_CALLBACK CountFreed(ENetPacket* packet) {
  g_freed_bytes += packet->dataLength;
}

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

// ------------------------------------------------------------ options

struct Options {
  bool server = false;
  std::string bind = "127.0.0.1:0";
  std::string server_address;
  Mode mode = Mode::kPingPong;
  Direction direction = Direction::kUpload;
  uint32_t payload_bytes = 64;
  uint64_t samples = 100000;
  uint64_t warmup = 5000;
  uint64_t bytes = 100ull << 20;
  uint32_t chunk_bytes = 64 << 10;
  uint64_t max_queued_bytes = 4ull << 20;
  double loss_pct = 0;
  uint64_t seed = 1;
  int cpu = -1;
  std::string json_path;
  double timeout_s = 60;
};

std::string Usage() {
  return "usage: ringlab_enet_bench server --bind=HOST:PORT [--cpu=N] "
         "[--loss=PCT] [--seed=N]\n"
         "       ringlab_enet_bench client --server=HOST:PORT "
         "[--mode=pingpong|bulk]\n"
         "         pingpong: [--payload=BYTES(>=16)] [--samples=N] "
         "[--warmup=N]\n"
         "         bulk: [--bytes=SIZE] [--chunk=SIZE] "
         "[--direction=upload|download] [--max_queued=SIZE]\n"
         "         [--loss=PCT] [--seed=N] [--cpu=N] [--json=PATH] "
         "[--timeout_s=S]\n"
         "SIZE: a number with an optional B, KiB, MiB, GiB (or K, M, G) "
         "suffix.\n";
}

bool ParseSize(absl::string_view text, uint64_t* out) {
  static const std::pair<absl::string_view, uint64_t> kUnits[] = {
      {"GiB", 1ull << 30},
      {"MiB", 1ull << 20},
      {"KiB", 1ull << 10},
      {"G", 1ull << 30},
      {"M", 1ull << 20},
      {"K", 1ull << 10},
      {"B", 1}};
  uint64_t mult = 1;
  for (const auto& [suffix, m] : kUnits) {
    if (absl::EndsWith(text, suffix)) {
      text.remove_suffix(suffix.size());
      mult = m;
      break;
    }
  }
  uint64_t n = 0;
  if (!absl::SimpleAtoi(text, &n) || n > UINT64_MAX / mult) return false;
  *out = n * mult;
  return true;
}

std::optional<Options> ParseArgs(int argc, char** argv, std::string* error) {
  Options o;
  if (argc < 2) {
    *error = "missing role (server|client)";
    return std::nullopt;
  }
  const std::string role = argv[1];
  if (role != "server" && role != "client") {
    *error = "first argument must be server or client, not " + role;
    return std::nullopt;
  }
  o.server = role == "server";
  for (int i = 2; i < argc; ++i) {
    absl::string_view arg = argv[i];
    const size_t eq = arg.find('=');
    if (!absl::StartsWith(arg, "--") || eq == absl::string_view::npos) {
      *error = absl::StrCat("bad argument ", arg, " (flags are --name=value)");
      return std::nullopt;
    }
    const absl::string_view name = arg.substr(2, eq - 2);
    const absl::string_view value = arg.substr(eq + 1);
    uint64_t size = 0;
    bool ok = true;
    if (name == "bind") {
      o.bind = std::string(value);
    } else if (name == "server") {
      o.server_address = std::string(value);
    } else if (name == "mode") {
      if (value == "pingpong") {
        o.mode = Mode::kPingPong;
      } else if (value == "bulk") {
        o.mode = Mode::kBulk;
      } else {
        ok = false;
      }
    } else if (name == "direction") {
      if (value == "upload") {
        o.direction = Direction::kUpload;
      } else if (value == "download") {
        o.direction = Direction::kDownload;
      } else {
        ok = false;
      }
    } else if (name == "payload") {
      ok = ParseSize(value, &size) && size >= kPingHeaderBytes &&
           size <= (1u << 24);
      o.payload_bytes = static_cast<uint32_t>(size);
    } else if (name == "samples") {
      ok = absl::SimpleAtoi(value, &o.samples) && o.samples > 0;
    } else if (name == "warmup") {
      ok = absl::SimpleAtoi(value, &o.warmup);
    } else if (name == "bytes") {
      ok = ParseSize(value, &o.bytes) && o.bytes > 0;
    } else if (name == "chunk") {
      ok = ParseSize(value, &size) && size >= 8 && size <= (16u << 20);
      o.chunk_bytes = static_cast<uint32_t>(size);
    } else if (name == "max_queued") {
      ok = ParseSize(value, &o.max_queued_bytes) && o.max_queued_bytes > 0;
    } else if (name == "loss") {
      ok = absl::SimpleAtod(value, &o.loss_pct) && o.loss_pct >= 0 &&
           o.loss_pct < 100;
    } else if (name == "seed") {
      ok = absl::SimpleAtoi(value, &o.seed);
    } else if (name == "cpu") {
      ok = absl::SimpleAtoi(value, &o.cpu) && o.cpu >= 0;
    } else if (name == "json") {
      o.json_path = std::string(value);
    } else if (name == "timeout_s") {
      ok = absl::SimpleAtod(value, &o.timeout_s) && o.timeout_s > 0;
    } else {
      *error = absl::StrCat("unknown flag --", name);
      return std::nullopt;
    }
    if (!ok) {
      *error = absl::StrCat("bad value for --", name, ": ", value);
      return std::nullopt;
    }
  }
  if (!o.server && o.server_address.empty()) {
    *error = "client needs --server=HOST:PORT";
    return std::nullopt;
  }
  return o;
}

bool ParseAddress(const std::string& text, ENetAddress* out) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  uint32_t port = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &port) || port > 65535) {
    return false;
  }
  if (enet_address_set_host_ip(out, text.substr(0, colon).c_str()) != 0) {
    return false;
  }
  out->port = static_cast<enet_uint16>(port);
  return true;
}

std::string AddressText(const ENetAddress& a) {
  char host[64] = "?";
  enet_address_get_host_ip(&a, host, sizeof(host));
  return absl::StrCat(host, ":", a.port);
}

void ConfigureLoss(const Options& o) {
  g_rng = Rng{o.seed};
  g_drop_per_million = static_cast<uint64_t>(std::llround(o.loss_pct * 1e4));
}

SideStats CollectStats(const ENetHost* host, const ResendCounter& resends,
                       const CpuTime& cpu_start) {
  SideStats s;
  s.reliable_resends = resends.total;
  s.udp_datagrams_sent = host->totalSentPackets;
  s.udp_bytes_sent = host->totalSentData;
  s.udp_datagrams_received = g_received_datagrams;
  s.dropped_by_impairment = g_dropped;
  s.cpu_us = (CpuTime::Now() - cpu_start).total_us();
  return s;
}

bool SendControl(ENetPeer* peer, const void* data, size_t size) {
  ENetPacket* p = enet_packet_create(data, size, ENET_PACKET_FLAG_RELIABLE);
  return p != nullptr && enet_peer_send(peer, kControlChannel, p) == 0;
}

template <typename T>
bool ReadControl(const ENetPacket* packet, T* out) {
  if (packet->dataLength != sizeof(T)) return false;
  std::memcpy(out, packet->data, sizeof(T));
  return true;
}

uint32_t ControlKindOf(const ENetPacket* packet) {
  uint32_t header[2] = {0, 0};
  if (packet->dataLength < sizeof(header)) return 0;
  std::memcpy(header, packet->data, sizeof(header));
  return header[0] == kMagic ? header[1] : 0;
}

// Bulk sender: keeps at most max_queued bytes handed to ENet and not yet
// acknowledged, so 100 MiB never sit in memory at once. Each chunk starts
// with its byte offset, which the receiver checks (order and completeness).
class BulkSender {
 public:
  BulkSender(ENetPeer* peer, uint64_t bytes, uint32_t chunk,
             uint64_t max_queued)
      : peer_(peer), bytes_(bytes), chunk_(chunk), max_queued_(max_queued) {
    g_freed_bytes = 0;
  }
  // Queues what the backlog allows; false on an ENet error.
  bool Pump() {
    while (queued_ < bytes_ && queued_ - g_freed_bytes < max_queued_) {
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(chunk_, bytes_ - queued_));
      ENetPacket* p = enet_packet_create(nullptr, n, ENET_PACKET_FLAG_RELIABLE);
      if (p == nullptr) return false;
      // The offset, then bytes that vary with it (never inspected: filling
      // them is part of a sender's cost anyway).
      std::memset(p->data, static_cast<int>(queued_ & 0xff), n);
      std::memcpy(p->data, &queued_, std::min<size_t>(8, n));
      p->freeCallback = CountFreed;
      if (enet_peer_send(peer_, kDataChannel, p) != 0) return false;
      queued_ += n;
      ++chunks_;
      if (first_send_ns_ == 0) first_send_ns_ = NowNs();
    }
    return true;
  }
  bool all_queued() const { return queued_ >= bytes_; }
  uint64_t chunks() const { return chunks_; }
  int64_t first_send_ns() const { return first_send_ns_; }

 private:
  ENetPeer* peer_;
  uint64_t bytes_;
  uint32_t chunk_;
  uint64_t max_queued_;
  uint64_t queued_ = 0;
  uint64_t chunks_ = 0;
  int64_t first_send_ns_ = 0;
};

// Bulk receiver: checks each chunk's offset against the bytes seen so far.
struct BulkReceiver {
  uint64_t expected = 0;
  uint64_t received = 0;
  uint64_t chunks = 0;
  int64_t first_ns = 0;
  int64_t last_ns = 0;
  bool bad = false;
  void Take(const ENetPacket* packet) {
    uint64_t offset = 0;
    std::memcpy(&offset, packet->data, std::min<size_t>(8, packet->dataLength));
    if (packet->dataLength < 8 || offset != received) bad = true;
    received += packet->dataLength;
    ++chunks;
    last_ns = NowNs();
    if (first_ns == 0) first_ns = last_ns;
  }
  bool complete() const { return received >= expected; }
};

// ------------------------------------------------------------ server

int RunServer(const Options& o) {
  ENetAddress address;
  if (!ParseAddress(o.bind, &address)) {
    std::fprintf(stderr, "ringlab_enet_bench server: bad --bind=%s\n",
                 o.bind.c_str());
    return kExitUsage;
  }
  ENetHost* host = enet_host_create(&address, 8, 2, 0, 0);
  if (host == nullptr) {
    std::fprintf(stderr, "ringlab_enet_bench server: cannot bind %s\n",
                 o.bind.c_str());
    return kExitFailed;
  }
  host->intercept = InterceptLoss;
  ConfigureLoss(o);
  ENetAddress bound;
  enet_socket_get_address(host->socket, &bound);
  bound.host = address.host;
  std::printf("READY %s\n", AddressText(bound).c_str());
  std::fflush(stdout);

  const CpuTime cpu_start = CpuTime::Now();
  CpuTime connection_cpu_start = cpu_start;
  ResendCounter resends;
  uint64_t echoed = 0;
  uint64_t bulk_chunks = 0;
  ENetPeer* client = nullptr;
  Hello hello;
  std::optional<BulkSender> sender;
  BulkReceiver receiver;
  bool done_sent = false;

  while (!g_stop.load()) {
    if (sender && !sender->Pump()) {
      std::fprintf(stderr,
                   "ringlab_enet_bench server: enet_peer_send failed\n");
      break;
    }
    ENetEvent ev;
    const int rc = enet_host_service(host, &ev, sender ? 1 : 50);
    resends.Sample(client);
    if (rc < 0) {
      std::fprintf(stderr,
                   "ringlab_enet_bench server: enet_host_service failed\n");
      break;
    }
    if (rc == 0) continue;
    switch (ev.type) {
      case ENET_EVENT_TYPE_CONNECT:
        client = ev.peer;
        hello = Hello{};
        resends = ResendCounter{};
        // Counters are per client: ENet's totals are the user's to reset.
        host->totalSentPackets = host->totalSentData = 0;
        host->totalReceivedPackets = host->totalReceivedData = 0;
        g_dropped = g_received_datagrams = 0;
        connection_cpu_start = CpuTime::Now();
        sender.reset();
        receiver = BulkReceiver{};
        done_sent = false;
        g_loss_active.store(true);
        break;
      case ENET_EVENT_TYPE_DISCONNECT:
        if (ev.peer == client) {
          client = nullptr;
          sender.reset();
          g_loss_active.store(false);
        }
        break;
      case ENET_EVENT_TYPE_RECEIVE: {
        ENetPacket* packet = ev.packet;
        if (ev.channelID == kControlChannel) {
          const uint32_t kind = ControlKindOf(packet);
          if (kind == static_cast<uint32_t>(ControlKind::kHello) &&
              ReadControl(packet, &hello)) {
            receiver.expected = hello.bytes;
            // The client starts only after this: data on the data channel
            // can otherwise overtake a hello that loss delayed.
            const uint32_t ack[2] = {
                kMagic, static_cast<uint32_t>(ControlKind::kHelloAck)};
            SendControl(ev.peer, ack, sizeof(ack));
            enet_host_flush(host);
            if (hello.mode == static_cast<uint32_t>(Mode::kBulk) &&
                hello.direction ==
                    static_cast<uint32_t>(Direction::kDownload)) {
              sender.emplace(ev.peer, hello.bytes, hello.chunk_bytes,
                             o.max_queued_bytes);
            }
          } else if (kind ==
                     static_cast<uint32_t>(ControlKind::kStatsRequest)) {
            StatsMessage m;
            m.stats = CollectStats(host, resends, connection_cpu_start);
            SendControl(ev.peer, &m, sizeof(m));
            enet_host_flush(host);
          }
        } else if (hello.mode == static_cast<uint32_t>(Mode::kBulk)) {
          receiver.Take(packet);
          ++bulk_chunks;
          if (receiver.complete() && !done_sent) {
            Done d;
            d.bytes = receiver.bad ? 0 : receiver.received;
            d.receive_span_ns = receiver.last_ns - receiver.first_ns;
            SendControl(ev.peer, &d, sizeof(d));
            enet_host_flush(host);
            done_sent = true;
          }
        } else {
          // Ping-pong: the same bytes straight back, reliable, flushed now
          // rather than at the next service call.
          ENetPacket* reply = enet_packet_create(
              packet->data, packet->dataLength, ENET_PACKET_FLAG_RELIABLE);
          if (reply != nullptr &&
              enet_peer_send(ev.peer, kDataChannel, reply) == 0) {
            enet_host_flush(host);
            ++echoed;
          }
        }
        enet_packet_destroy(packet);
        break;
      }
      case ENET_EVENT_TYPE_NONE:
        break;
    }
    if (sender && sender->all_queued() && g_freed_bytes >= hello.bytes) {
      sender.reset();  // everything acknowledged
    }
  }
  const CpuTime cpu = CpuTime::Now() - cpu_start;
  JsonWriter stats;
  stats.BeginObject();
  stats.Key("program").String("ringlab_enet_bench");
  stats.Key("cpu_us").Int(cpu.total_us());
  stats.Key("messages").Uint(echoed + bulk_chunks);
  stats.Key("datagrams_echoed").Uint(echoed);
  stats.Key("bulk_chunks_received").Uint(bulk_chunks);
  stats.Key("dropped_by_impairment").Uint(g_dropped);
  stats.EndObject();
  std::printf("SERVER_STATS %s\n", stats.str().c_str());
  std::fflush(stdout);
  enet_host_destroy(host);
  return kExitOk;
}

// ------------------------------------------------------------ client

class Client {
 public:
  explicit Client(const Options& o) : o_(o) {}
  int Run();

 private:
  bool Connect();
  bool WaitForHelloAck();
  bool RunPingPong();
  bool RunBulk();
  bool Service(ENetEvent* ev, uint32_t timeout_ms);
  bool TimedOut() const { return NowNs() > deadline_ns_; }
  bool Fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    return false;
  }
  std::optional<SideStats> FetchServerStats();
  void WriteJson();

  const Options& o_;
  ENetHost* host_ = nullptr;
  ENetPeer* peer_ = nullptr;
  int64_t deadline_ns_ = 0;
  std::string error_;
  ResendCounter resends_;
  CpuTime cpu_start_;
  // Results.
  LatencyHistogram rtt_;
  uint64_t samples_ = 0;
  int64_t start_ns_ = 0;
  int64_t end_ns_ = 0;
  CpuTime measured_cpu_;
  uint64_t chunks_ = 0;
  int64_t receive_span_ns_ = 0;
  SideStats client_stats_;
  std::optional<SideStats> server_stats_;
};

bool Client::Service(ENetEvent* ev, uint32_t timeout_ms) {
  const int rc = enet_host_service(host_, ev, timeout_ms);
  resends_.Sample(peer_);
  if (rc < 0) return Fail("enet_host_service failed");
  if (rc > 0 && ev->type == ENET_EVENT_TYPE_DISCONNECT) {
    return Fail("the server disconnected (or ENet timed the peer out)");
  }
  if (rc == 0) ev->type = ENET_EVENT_TYPE_NONE;
  return true;
}

bool Client::Connect() {
  ENetAddress address;
  if (!ParseAddress(o_.server_address, &address)) {
    return Fail("bad --server=" + o_.server_address);
  }
  host_ = enet_host_create(nullptr, 1, 2, 0, 0);
  if (host_ == nullptr) return Fail("enet_host_create failed");
  host_->intercept = InterceptLoss;
  peer_ = enet_host_connect(host_, &address, 2, 0);
  if (peer_ == nullptr) return Fail("enet_host_connect failed");
  while (!TimedOut()) {
    ENetEvent ev;
    const int rc = enet_host_service(host_, &ev, 50);
    if (rc < 0) return Fail("enet_host_service failed while connecting");
    if (rc > 0 && ev.type == ENET_EVENT_TYPE_CONNECT) {
      g_loss_active.store(true);
      Hello hello;
      hello.mode = static_cast<uint32_t>(o_.mode);
      hello.direction = static_cast<uint32_t>(o_.direction);
      hello.bytes = o_.bytes;
      hello.chunk_bytes = o_.chunk_bytes;
      hello.payload_bytes = o_.payload_bytes;
      if (!SendControl(peer_, &hello, sizeof(hello))) {
        return Fail("cannot send the hello");
      }
      enet_host_flush(host_);
      return WaitForHelloAck();
    }
    if (rc > 0 && ev.type == ENET_EVENT_TYPE_DISCONNECT) {
      return Fail("connection to " + o_.server_address +
                  " refused or timed out (is the server running?)");
    }
  }
  return Fail("timeout connecting to " + o_.server_address);
}

bool Client::WaitForHelloAck() {
  while (!TimedOut()) {
    ENetEvent ev;
    if (!Service(&ev, 10)) return false;
    if (ev.type != ENET_EVENT_TYPE_RECEIVE) continue;
    const bool ack = ev.channelID == kControlChannel &&
                     ControlKindOf(ev.packet) ==
                         static_cast<uint32_t>(ControlKind::kHelloAck);
    enet_packet_destroy(ev.packet);
    if (ack) return true;
  }
  return Fail("the server did not answer the hello");
}

bool Client::RunPingPong() {
  const uint64_t check = static_cast<uint64_t>(NowNs()) * 0x9E3779B97F4A7C15ull;
  std::vector<uint8_t> message(o_.payload_bytes, 0xa5);
  const uint64_t total = o_.warmup + o_.samples;
  for (uint64_t seq = 0; seq < total; ++seq) {
    if (seq == o_.warmup) {
      start_ns_ = NowNs();
      cpu_start_ = CpuTime::Now();
    }
    std::memcpy(message.data(), &seq, 8);
    std::memcpy(message.data() + 8, &check, 8);
    ENetPacket* p = enet_packet_create(message.data(), message.size(),
                                       ENET_PACKET_FLAG_RELIABLE);
    const int64_t sent_ns = NowNs();
    if (p == nullptr || enet_peer_send(peer_, kDataChannel, p) != 0) {
      return Fail("enet_peer_send failed");
    }
    enet_host_flush(host_);
    bool answered = false;
    while (!answered) {
      if (TimedOut()) {
        return Fail(absl::StrCat("timeout after ", o_.timeout_s, " s: ",
                                 samples_, " of ", o_.samples, " samples"));
      }
      ENetEvent ev;
      if (!Service(&ev, 5)) return false;
      if (ev.type != ENET_EVENT_TYPE_RECEIVE) continue;
      const int64_t now_ns = NowNs();
      uint64_t got_seq = UINT64_MAX;
      uint64_t got_check = 0;
      const bool data = ev.channelID == kDataChannel &&
                        ev.packet->dataLength == message.size();
      if (data) {
        std::memcpy(&got_seq, ev.packet->data, 8);
        std::memcpy(&got_check, ev.packet->data + 8, 8);
      }
      enet_packet_destroy(ev.packet);
      if (!data) continue;
      // A reliable, sequenced channel: an answer to anything else is a bug.
      if (got_seq != seq || got_check != check) {
        return Fail(absl::StrCat("answer seq ", got_seq, " to ping ", seq,
                                 " (or a wrong check word)"));
      }
      answered = true;
      if (seq >= o_.warmup) {
        rtt_.Record(static_cast<uint64_t>(now_ns - sent_ns));
        ++samples_;
      }
    }
  }
  end_ns_ = NowNs();
  measured_cpu_ = CpuTime::Now() - cpu_start_;
  return true;
}

bool Client::RunBulk() {
  start_ns_ = NowNs();
  cpu_start_ = CpuTime::Now();
  if (o_.direction == Direction::kUpload) {
    BulkSender sender(peer_, o_.bytes, o_.chunk_bytes, o_.max_queued_bytes);
    bool done = false;
    while (!done) {
      if (TimedOut()) {
        return Fail(
            absl::StrCat("timeout after ", o_.timeout_s, " s in the upload"));
      }
      if (!sender.Pump()) return Fail("enet_peer_send failed");
      ENetEvent ev;
      if (!Service(&ev, 1)) return false;
      if (ev.type != ENET_EVENT_TYPE_RECEIVE) continue;
      Done d;
      if (ev.channelID == kControlChannel &&
          ControlKindOf(ev.packet) ==
              static_cast<uint32_t>(ControlKind::kDone) &&
          ReadControl(ev.packet, &d)) {
        done = true;
        receive_span_ns_ = d.receive_span_ns;
        if (d.bytes != o_.bytes) {
          enet_packet_destroy(ev.packet);
          return Fail(absl::StrCat("the server received ", d.bytes, " of ",
                                   o_.bytes,
                                   " bytes in order (0: out of order)"));
        }
      }
      enet_packet_destroy(ev.packet);
    }
    chunks_ = sender.chunks();
  } else {
    BulkReceiver receiver;
    receiver.expected = o_.bytes;
    while (!receiver.complete()) {
      if (TimedOut()) {
        return Fail(absl::StrCat("timeout after ", o_.timeout_s,
                                 " s: ", receiver.received, " of ", o_.bytes,
                                 " bytes downloaded"));
      }
      ENetEvent ev;
      if (!Service(&ev, 5)) return false;
      if (ev.type != ENET_EVENT_TYPE_RECEIVE) continue;
      if (ev.channelID == kDataChannel) receiver.Take(ev.packet);
      enet_packet_destroy(ev.packet);
    }
    if (receiver.bad) return Fail("download arrived out of order or cut");
    chunks_ = receiver.chunks;
    receive_span_ns_ = receiver.last_ns - receiver.first_ns;
  }
  end_ns_ = NowNs();
  measured_cpu_ = CpuTime::Now() - cpu_start_;
  return true;
}

std::optional<SideStats> Client::FetchServerStats() {
  const uint32_t request[2] = {
      kMagic, static_cast<uint32_t>(ControlKind::kStatsRequest)};
  if (!SendControl(peer_, request, sizeof(request))) return std::nullopt;
  enet_host_flush(host_);
  const int64_t give_up = NowNs() + 5'000'000'000;
  while (NowNs() < give_up) {
    ENetEvent ev;
    const int rc = enet_host_service(host_, &ev, 10);
    if (rc < 0) return std::nullopt;
    if (rc == 0 || ev.type != ENET_EVENT_TYPE_RECEIVE) continue;
    StatsMessage m;
    const bool ok = ev.channelID == kControlChannel &&
                    ControlKindOf(ev.packet) ==
                        static_cast<uint32_t>(ControlKind::kStats) &&
                    ReadControl(ev.packet, &m);
    enet_packet_destroy(ev.packet);
    if (ok) return m.stats;
  }
  return std::nullopt;
}

void AppendSide(JsonWriter& json, const SideStats& s) {
  json.BeginObject();
  json.Key("reliable_resends").Uint(s.reliable_resends);
  json.Key("udp_datagrams_sent").Uint(s.udp_datagrams_sent);
  json.Key("udp_bytes_sent").Uint(s.udp_bytes_sent);
  json.Key("udp_datagrams_received").Uint(s.udp_datagrams_received);
  json.Key("dropped_by_impairment").Uint(s.dropped_by_impairment);
  json.Key("cpu_us").Int(s.cpu_us);
  json.EndObject();
}

double Us(uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

void Client::WriteJson() {
  const double duration_s = static_cast<double>(end_ns_ - start_ns_) / 1e9;
  const bool bulk = o_.mode == Mode::kBulk;
  const double messages =
      bulk ? static_cast<double>(chunks_) : static_cast<double>(samples_);
  JsonWriter json;
  json.BeginObject();
  json.Key("schema").String("ringlab.enet/1");
  json.Key("program").String("ringlab_enet_bench");
  json.Key("protocol").String("rudp");
  json.Key("backend").String("enet");
  json.Key("backend_flags")
      .String(absl::StrCat(
          "enet ", ENET_VERSION_GET_MAJOR(enet_linked_version()), ".",
          ENET_VERSION_GET_MINOR(enet_linked_version()), ".",
          ENET_VERSION_GET_PATCH(enet_linked_version()), ", mtu ", peer_->mtu));
  json.Key("mode").String(bulk ? "bulk" : "pingpong");
  json.Key("payload_bytes").Uint(bulk ? o_.chunk_bytes : o_.payload_bytes);
  json.Key("loss_pct").Number(o_.loss_pct);
  json.Key("seed").Uint(o_.seed);
  json.Key("samples").Uint(bulk ? chunks_ : samples_);
  json.Key("warmup").Uint(bulk ? 0 : o_.warmup);
  json.Key("lost").Uint(0);  // reliable: nothing is given up
  json.Key("rtt_us").BeginObject();
  if (bulk || rtt_.count() == 0) {
    for (const char* k : {"min", "mean", "p50", "p90", "p99", "p999", "max"}) {
      json.Key(k).Null();
    }
  } else {
    json.Key("min").Number(Us(rtt_.min()));
    json.Key("mean").Number(rtt_.mean() / 1000.0);
    json.Key("p50").Number(Us(rtt_.Percentile(50)));
    json.Key("p90").Number(Us(rtt_.Percentile(90)));
    json.Key("p99").Number(Us(rtt_.Percentile(99)));
    json.Key("p999").Number(Us(rtt_.Percentile(99.9)));
    json.Key("max").Number(Us(rtt_.max()));
  }
  json.EndObject();
  json.Key("duration_s").Number(duration_s);
  json.Key("messages_per_s").Number(duration_s > 0 ? messages / duration_s : 0);
  json.Key("cpu_us_per_msg")
      .Number(messages > 0
                  ? static_cast<double>(measured_cpu_.total_us()) / messages
                  : 0);
  // ENet makes its own syscalls (poll, sendmsg, recvmsg); they are not counted.
  json.Key("kernel_entries_per_msg").Null();
  if (bulk) {
    const double mb = static_cast<double>(o_.bytes) / 1e6;
    json.Key("bulk").BeginObject();
    json.Key("direction")
        .String(o_.direction == Direction::kUpload ? "upload" : "download");
    json.Key("bytes").Uint(o_.bytes);
    json.Key("chunk_bytes").Uint(o_.chunk_bytes);
    json.Key("completion_s").Number(duration_s);
    json.Key("goodput_mbit_s").Number(duration_s > 0 ? mb * 8 / duration_s : 0);
    json.Key("receive_span_s")
        .Number(static_cast<double>(receive_span_ns_) / 1e9);
    json.Key("client_cpu_us_per_mb")
        .Number(static_cast<double>(measured_cpu_.total_us()) / mb);
    // Sender-side resends over the reliable commands one copy needs (a chunk
    // above the MTU is one command per fragment).
    const SideStats* sender = o_.direction == Direction::kUpload
                                  ? &client_stats_
                                  : (server_stats_ ? &*server_stats_ : nullptr);
    const uint64_t fragment = peer_->mtu - sizeof(ENetProtocolHeader) -
                              sizeof(ENetProtocolSendFragment);
    const uint64_t per_chunk = o_.chunk_bytes > fragment
                                   ? (o_.chunk_bytes + fragment - 1) / fragment
                                   : 1;
    const uint64_t commands = chunks_ * per_chunk;
    if (sender != nullptr && commands > 0) {
      json.Key("retransmission_ratio")
          .Number(static_cast<double>(sender->reliable_resends) /
                  static_cast<double>(commands));
    } else {
      json.Key("retransmission_ratio").Null();
    }
    json.Key("reliable_commands_needed").Uint(commands);
    // ENet drops duplicate commands without counting them: not observable.
    json.Key("spurious_retransmissions").Null();
    json.EndObject();
  }
  json.Key("client");
  AppendSide(json, client_stats_);
  json.Key("server");
  if (server_stats_) {
    AppendSide(json, *server_stats_);
  } else {
    json.Null();
  }
  json.Key("enet_rtt_ms").Uint(peer_->roundTripTime);
  json.Key("enet_rtt_variance_ms").Uint(peer_->roundTripTimeVariance);
  json.Key("cpu").Int(o_.cpu);
  json.Key("server_address").String(o_.server_address);
  json.EndObject();

  if (bulk) {
    std::printf(
        "ringlab_enet_bench client: bulk %s %" PRIu64 " B in %" PRIu64
        " chunks, %.3f s, %.1f Mbit/s, loss %.1f%%, resends client %" PRIu64
        " server %" PRIu64 "\n",
        o_.direction == Direction::kUpload ? "upload" : "download", o_.bytes,
        chunks_, duration_s,
        duration_s > 0 ? static_cast<double>(o_.bytes) * 8 / 1e6 / duration_s
                       : 0,
        o_.loss_pct, client_stats_.reliable_resends,
        server_stats_ ? server_stats_->reliable_resends : 0);
  } else {
    std::printf("ringlab_enet_bench client: pingpong %u B, %" PRIu64
                " samples, rtt us p50 %.2f p99 %.2f max %.2f, loss %.1f%%\n",
                o_.payload_bytes, samples_, Us(rtt_.Percentile(50)),
                Us(rtt_.Percentile(99)), Us(rtt_.max()), o_.loss_pct);
  }
  if (o_.json_path.empty()) {
    std::printf("RESULT %s\n", json.str().c_str());
  } else if (FILE* f = std::fopen(o_.json_path.c_str(), "w")) {
    std::fprintf(f, "%s\n", json.str().c_str());
    std::fclose(f);
  } else {
    std::fprintf(stderr, "ringlab_enet_bench client: cannot write %s\n",
                 o_.json_path.c_str());
  }
  std::fflush(stdout);
}

int Client::Run() {
  deadline_ns_ = NowNs() + static_cast<int64_t>(o_.timeout_s * 1e9);
  ConfigureLoss(o_);
  const CpuTime whole_run = CpuTime::Now();
  bool ok = Connect();
  if (ok) ok = o_.mode == Mode::kPingPong ? RunPingPong() : RunBulk();
  if (ok) {
    client_stats_ = CollectStats(host_, resends_, whole_run);
    server_stats_ = FetchServerStats();
    WriteJson();
  }
  if (peer_ != nullptr) {
    enet_peer_disconnect(peer_, 0);
    const int64_t give_up = NowNs() + 500'000'000;
    ENetEvent ev;
    ev.type = ENET_EVENT_TYPE_NONE;
    while (NowNs() < give_up && enet_host_service(host_, &ev, 10) >= 0) {
      if (ev.type == ENET_EVENT_TYPE_RECEIVE) enet_packet_destroy(ev.packet);
      if (ev.type == ENET_EVENT_TYPE_DISCONNECT) break;
      ev.type = ENET_EVENT_TYPE_NONE;
    }
  }
  if (host_ != nullptr) enet_host_destroy(host_);
  if (!ok) {
    std::fprintf(stderr, "ringlab_enet_bench client: run failed: %s\n",
                 error_.c_str());
    return kExitFailed;
  }
  return kExitOk;
}

}  // namespace
}  // namespace ringlab::bench

int main(int argc, char** argv) {
  using namespace ringlab::bench;
  std::string error;
  std::optional<Options> options = ParseArgs(argc, argv, &error);
  if (!options) {
    std::fprintf(stderr, "ringlab_enet_bench: %s\n%s", error.c_str(),
                 Usage().c_str());
    return kExitUsage;
  }
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  if (options->cpu >= 0) {
    absl::Status pinned = PinThisThreadToCpu(options->cpu);
    if (!pinned.ok()) {
      std::fprintf(stderr, "ringlab_enet_bench: %s\n",
                   std::string(pinned.message()).c_str());
      return kExitUsage;
    }
  }
  if (enet_initialize() != 0) {
    std::fprintf(stderr, "ringlab_enet_bench: enet_initialize failed\n");
    return kExitFailed;
  }
  const int rc = options->server ? RunServer(*options) : Client(*options).Run();
  enet_deinitialize();
  return rc;
}
