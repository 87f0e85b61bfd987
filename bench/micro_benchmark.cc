// ringlab_micro_benchmark: Google Benchmark micro-benchmarks of the pieces a
// message passes through: buffer pool, latency histogram, clock, and the UDP
// submission path of each backend preset.
//
//   ringlab_micro_benchmark --benchmark_filter=UdpSendTo
//
// BM_UdpSendTo/<preset>/batch:<n> queues n 64-byte datagrams with SendTo()
// and then calls RunOnce(0) until all n have completed. The receiver is a
// plain socket that is never read, with the smallest receive buffer, so
// after the first few datagrams the kernel drops every one: each iteration
// pays the same send path, and no reader competes for the CPU. The
// kernel_entries_per_send counter shows what batching buys: io_uring submits
// a batch in one io_uring_enter, epoll issues sendmmsg/sendto itself.
// A preset the machine cannot run is skipped with Loop::Create's reason.
//
// BM_FanOut/<preset>/<shared|copies> sends one 1 KiB payload, each copy
// behind its own 32-byte header, to 1,000 UDP endpoints (plain sockets that
// are never read, like the receiver above) and runs the Loop until all
// 1,000 sends completed. `shared` uses one SharedBuffer for all of them
// (Loop::Share + SendTo(payload, to, header)); `copies` acquires a buffer
// per destination and copies the header and payload into it. Items are
// deliveries, so the time per item is the CPU per delivery;
// pool_buffers_per_fanout reports 1 against 1,000.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/histogram.h"
#include "benchmark/benchmark.h"
#include "transport/buffer_pool.h"
#include "transport/loop.h"
#include "transport/time.h"

namespace ringlab::bench {
namespace {

using transport::BufferLease;
using transport::BufferPool;
using transport::Loop;
using transport::LoopCounters;
using transport::SocketHandler;
using transport::SocketId;

void BM_BufferPoolAcquireRelease(benchmark::State& state) {
  absl::StatusOr<std::unique_ptr<BufferPool>> pool =
      BufferPool::Create(2048, 1024);
  if (!pool.ok()) {
    state.SkipWithError(pool.status().ToString().c_str());
    return;
  }
  for (auto _ : state) {
    BufferLease lease = (*pool)->Acquire();
    benchmark::DoNotOptimize(lease.data());
    lease.Release();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BufferPoolAcquireRelease);

// Latency-like values (lognormal around 20 us), precomputed so the benchmark
// measures Record(), not the random generator.
std::vector<uint64_t> LatencySamples(size_t count) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(std::log(20000.0), 0.7);
  std::vector<uint64_t> values(count);
  for (auto& v : values) v = static_cast<uint64_t>(dist(rng));
  return values;
}

void BM_HistogramRecord(benchmark::State& state) {
  const std::vector<uint64_t> values = LatencySamples(4096);
  LatencyHistogram histogram;
  size_t i = 0;
  for (auto _ : state) {
    histogram.Record(values[i]);
    i = (i + 1) & 4095;
  }
  benchmark::DoNotOptimize(histogram.count());
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HistogramRecord);

void BM_HistogramPercentile(benchmark::State& state) {
  LatencyHistogram histogram;
  for (uint64_t v : LatencySamples(1 << 20)) histogram.Record(v);
  const double q = static_cast<double>(state.range(0)) / 10.0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(histogram.Percentile(q));
  }
}
// p50 and p99.9 (the walk is longer for high quantiles).
BENCHMARK(BM_HistogramPercentile)->Arg(500)->Arg(999);

void BM_MonotonicNow(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(MonotonicNow());
}
BENCHMARK(BM_MonotonicNow);

// Counts send completions of the sender socket.
class SendCounter : public SocketHandler {
 public:
  void OnSendComplete(SocketId, int result, uint64_t) override {
    ++completed;
    if (result < 0) ++failed;
  }
  uint64_t completed = 0;
  uint64_t failed = 0;
};

// A UDP socket bound to 127.0.0.1:0 that is never read. Closed on scope exit.
class BlackholeReceiver {
 public:
  BlackholeReceiver() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    int smallest = 1;  // the kernel raises it to its minimum
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &smallest, sizeof(smallest));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(fd_);
      fd_ = -1;
      return;
    }
    endpoint_ = Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&addr), len);
  }
  ~BlackholeReceiver() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  const Endpoint& endpoint() const { return endpoint_; }

 private:
  int fd_ = -1;
  Endpoint endpoint_;
};

void BM_UdpSendTo(benchmark::State& state, const std::string& preset,
                  int batch) {
  BlackholeReceiver receiver;
  if (!receiver.ok()) {
    state.SkipWithError("cannot create the receiving UDP socket");
    return;
  }
  SendCounter counter;  // declared before the Loop: outlives its sockets
  transport::LoopOptions options;
  options.backend = preset;
  options.buffer_size = 2048;
  options.buffer_count = 256;
  options.provided_buffers = 64;
  absl::StatusOr<std::unique_ptr<Loop>> created = Loop::Create(options);
  if (!created.ok()) {
    state.SkipWithError(
        absl::StrCat(preset, ": ", created.status().ToString()).c_str());
    return;
  }
  Loop& loop = **created;
  transport::UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  absl::StatusOr<SocketId> socket = loop.OpenUdp(udp, &counter);
  if (!socket.ok()) {
    state.SkipWithError(socket.status().ToString().c_str());
    return;
  }
  const Endpoint to = receiver.endpoint();

  // Fill the receiver's queue so every measured datagram takes the same
  // (drop) path.
  for (int i = 0; i < 64; ++i) {
    BufferLease lease = loop.AcquireBuffer();
    lease.set_size(64);
    loop.SendTo(*socket, std::move(lease), to);
  }
  while (counter.completed < 64) loop.RunOnce(Duration(0));

  uint64_t sends = 0;
  uint64_t rejected = 0;
  const LoopCounters before = loop.counters();
  for (auto _ : state) {
    uint64_t target = counter.completed;
    for (int i = 0; i < batch; ++i) {
      BufferLease lease = loop.AcquireBuffer();
      std::memset(lease.data(), 0x5a, 64);
      lease.set_size(64);
      if (loop.SendTo(*socket, std::move(lease), to) < 0) {
        ++rejected;
      } else {
        ++target;
      }
    }
    sends += batch;
    // RunOnce(0) until every accepted datagram has completed: on io_uring the
    // first call submits, and a completion may need a further call.
    while (counter.completed < target) {
      if (loop.RunOnce(Duration(0)) < 0) break;
    }
  }
  const LoopCounters used = loop.counters().Delta(before);
  loop.Close(*socket);
  loop.RunOnce(Duration(0));

  if (rejected > 0 || counter.failed > 0) {
    state.SkipWithError(absl::StrCat(rejected, " SendTo calls rejected and ",
                                     counter.failed, " sends failed")
                            .c_str());
    return;
  }
  const double per_send = sends == 0 ? 0.0 : 1.0 / static_cast<double>(sends);
  state.SetItemsProcessed(static_cast<int64_t>(sends));
  state.counters["kernel_entries_per_send"] =
      static_cast<double>(used.kernel_entries()) * per_send;
  state.counters["io_uring_enter_per_send"] =
      static_cast<double>(used.io_uring_enter) * per_send;
  state.counters["socket_syscalls_per_send"] =
      static_cast<double>(used.socket_syscalls) * per_send;
  state.SetLabel(loop.backend().flags.ToString());
}

void BM_FanOut(benchmark::State& state, const std::string& preset,
               bool shared) {
  constexpr int kDestinations = 1000;
  constexpr size_t kPayload = 1024;
  constexpr size_t kHeader = 32;
  std::vector<std::unique_ptr<BlackholeReceiver>> receivers;
  for (int i = 0; i < kDestinations; ++i) {
    receivers.push_back(std::make_unique<BlackholeReceiver>());
    if (!receivers.back()->ok()) {
      state.SkipWithError("cannot create 1,000 receiving UDP sockets");
      return;
    }
  }
  SendCounter counter;
  transport::LoopOptions options;
  options.backend = preset;
  options.buffer_size = 2048;
  options.buffer_count = 2048;
  options.provided_buffers = 256;
  absl::StatusOr<std::unique_ptr<Loop>> created = Loop::Create(options);
  if (!created.ok()) {
    state.SkipWithError(
        absl::StrCat(preset, ": ", created.status().ToString()).c_str());
    return;
  }
  Loop& loop = **created;
  transport::UdpOptions udp;
  udp.bind = Endpoint::Loopback(0);
  udp.send_queue_limit_bytes = 4u << 20;  // room for the whole fan-out
  absl::StatusOr<SocketId> socket = loop.OpenUdp(udp, &counter);
  if (!socket.ok()) {
    state.SkipWithError(socket.status().ToString().c_str());
    return;
  }
  std::byte header[kHeader];
  std::memset(header, 0x48, sizeof(header));
  std::vector<std::byte> body(kPayload, std::byte{0x50});
  uint64_t deliveries = 0;
  uint64_t rejected = 0;
  uint32_t most_buffers = 0;
  const uint32_t idle_free = loop.buffers().free_count();
  for (auto _ : state) {
    uint64_t target = counter.completed;
    if (shared) {
      BufferLease lease = loop.AcquireBuffer();
      std::memcpy(lease.data(), body.data(), kPayload);
      lease.set_size(kPayload);
      transport::SharedBuffer payload = loop.Share(std::move(lease));
      for (int i = 0; i < kDestinations; ++i) {
        if (loop.SendTo(*socket, payload, receivers[i]->endpoint(),
                        std::span<const std::byte>(header, kHeader)) == 0) {
          ++target;
        } else {
          ++rejected;
        }
      }
    } else {
      for (int i = 0; i < kDestinations; ++i) {
        BufferLease lease = loop.AcquireBuffer();
        if (!lease) {
          ++rejected;
          continue;
        }
        std::memcpy(lease.data(), header, kHeader);
        std::memcpy(lease.data() + kHeader, body.data(), kPayload);
        lease.set_size(kHeader + kPayload);
        if (loop.SendTo(*socket, std::move(lease), receivers[i]->endpoint()) ==
            0) {
          ++target;
        } else {
          ++rejected;
        }
      }
    }
    most_buffers =
        std::max(most_buffers, idle_free - loop.buffers().free_count());
    while (counter.completed < target) {
      if (loop.RunOnce(Duration(0)) < 0) break;
    }
    deliveries += kDestinations;
  }
  loop.Close(*socket);
  loop.RunOnce(Duration(0));
  if (rejected > 0) {
    state.SkipWithError(absl::StrCat(rejected, " sends refused").c_str());
    return;
  }
  state.SetItemsProcessed(static_cast<int64_t>(deliveries));
  state.counters["pool_buffers_per_fanout"] = most_buffers;
  state.SetLabel(loop.backend().flags.ToString());
}

void RegisterSendBenchmarks() {
  for (const char* preset : {"epoll", "uring-fixed"}) {
    for (bool shared : {true, false}) {
      benchmark::RegisterBenchmark(
          absl::StrCat("BM_FanOut/", preset, "/", shared ? "shared" : "copies")
              .c_str(),
          [preset = std::string(preset), shared](benchmark::State& state) {
            BM_FanOut(state, preset, shared);
          })
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (const char* preset : {"epoll", "uring", "uring-fixed"}) {
    for (int batch : {1, 32}) {
      benchmark::RegisterBenchmark(
          absl::StrCat("BM_UdpSendTo/", preset, "/batch:", batch).c_str(),
          [preset = std::string(preset), batch](benchmark::State& state) {
            BM_UdpSendTo(state, preset, batch);
          });
    }
  }
}

}  // namespace
}  // namespace ringlab::bench

int main(int argc, char** argv) {
  ringlab::bench::RegisterSendBenchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
