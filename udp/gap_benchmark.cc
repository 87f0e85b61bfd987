// Gap finding, the RealMQ experiment with numbers: the three structures of
// internal/gap_finders.h on received-id sets of 10^3..10^6 ids at 1%, 5%
// and 20% loss, random (Bernoulli) and bursty (mean burst 4).
//
//   BM_Find<...>  : enumerate every gap of an already built set (a NACK or
//                   ACK being written).
//   BM_Build<...> : add every received id in arrival order, then enumerate
//                   (the whole receiver-side cost).
//
// Arguments: ids, loss in per mille, bursty (0/1). Run with
//   build/release/udp/ringlab_rudp_gap_benchmark --benchmark_min_time=0.2
// Compare figures within one run only: the host's speed drifts.
#include <benchmark/benchmark.h>

#include <vector>

#include "transport/sim_network.h"
#include "udp/internal/gap_finders.h"

namespace ringlab::rudp::internal {
namespace {

std::vector<uint64_t> ReceivedIds(uint64_t n, double loss, bool bursty) {
  transport::SimRandom r(n * 31 + uint64_t(loss * 1000) * 7 + bursty);
  std::vector<uint64_t> ids;
  ids.reserve(n);
  bool bad = false;
  for (uint64_t id = 0; id < n; ++id) {
    bool lost;
    if (bursty) {
      const double enter = loss / (1 - loss) * 0.25;  // mean burst 4
      bad = bad ? !r.Bernoulli(0.25) : r.Bernoulli(enter);
      lost = bad;
    } else {
      lost = r.Bernoulli(loss);
    }
    if (!lost || id == n - 1) ids.push_back(id);
  }
  return ids;
}

template <typename Finder>
Finder Make(uint64_t n) {
  if constexpr (std::is_same_v<Finder, BitmapGaps>) {
    return BitmapGaps(n);
  } else {
    return Finder();
  }
}

template <typename Finder>
void BM_Find(benchmark::State& state) {
  const uint64_t n = uint64_t(state.range(0));
  const auto ids =
      ReceivedIds(n, double(state.range(1)) / 1000, state.range(2));
  Finder finder = Make<Finder>(n);
  for (uint64_t id : ids) finder.Add(id);
  uint64_t gaps = 0;
  for (auto _ : state) {
    // Touch every gap (as writing a NACK would), so the walk cannot be
    // folded into a closed form.
    uint64_t count = 0, sum = 0;
    finder.ForEachGap([&](uint64_t first, uint64_t last) {
      ++count;
      sum += first ^ last;
    });
    benchmark::DoNotOptimize(sum);
    gaps = count;
  }
  state.counters["gaps"] = double(gaps);
  state.SetItemsProcessed(int64_t(state.iterations() * n));
}

template <typename Finder>
void BM_Build(benchmark::State& state) {
  const uint64_t n = uint64_t(state.range(0));
  const auto ids =
      ReceivedIds(n, double(state.range(1)) / 1000, state.range(2));
  for (auto _ : state) {
    Finder finder = Make<Finder>(n);
    for (uint64_t id : ids) finder.Add(id);
    uint64_t sum = 0;
    finder.ForEachGap(
        [&](uint64_t first, uint64_t last) { sum += first ^ last; });
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(int64_t(state.iterations() * n));
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"ids", "loss_permille", "bursty"});
  for (int64_t n : {1000, 10000, 100000, 1000000}) {
    for (int64_t loss : {10, 50, 200}) {
      for (int64_t bursty : {0, 1}) b->Args({n, loss, bursty});
    }
  }
}

BENCHMARK_TEMPLATE(BM_Find, SortedIdGaps)->Apply(Args);
BENCHMARK_TEMPLATE(BM_Find, BitmapGaps)->Apply(Args);
BENCHMARK_TEMPLATE(BM_Find, RangeGaps)->Apply(Args);
BENCHMARK_TEMPLATE(BM_Build, SortedIdGaps)->Apply(Args);
BENCHMARK_TEMPLATE(BM_Build, BitmapGaps)->Apply(Args);
BENCHMARK_TEMPLATE(BM_Build, RangeGaps)->Apply(Args);

}  // namespace
}  // namespace ringlab::rudp::internal

BENCHMARK_MAIN();
