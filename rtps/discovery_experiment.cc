// ringlab_rtps_discovery_experiment: SPDP vs gossip discovery on SimNetwork
// (issue 11). N participants start at once, each with one reliable writer
// and reader on one topic; prints, per (mode, N, loss), the time until each
// participant knows every other and has matched all their endpoints (p50,
// max) and the discovery traffic per participant until the last one did.
// Virtual clock: the figures do not depend on the machine.
//
//   ringlab_rtps_discovery_experiment                 # 10,100,1000 x 0,5%
//   ringlab_rtps_discovery_experiment --n=10,100 --loss=0 --seed=2
//   ringlab_rtps_discovery_experiment --n=1000 --mode=gossip
//
// Exit codes: 0 ok, 1 a run did not reach full knowledge, 2 bad flags.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "rtps/discovery_sim.h"

namespace {

bool ParseList(const char* arg, std::vector<double>* out) {
  out->clear();
  for (absl::string_view s : absl::StrSplit(arg, ',')) {
    double v = 0;
    if (!absl::SimpleAtod(s, &v)) return false;
    out->push_back(v);
  }
  return !out->empty();
}

}  // namespace

int main(int argc, char** argv) {
  using ringlab::rtps::DiscoveryMode;
  std::vector<double> ns = {10, 100, 1000}, losses = {0, 0.05};
  uint64_t seed = 1;
  std::vector<DiscoveryMode> modes = {DiscoveryMode::kSpdp,
                                      DiscoveryMode::kGossip};
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    bool ok = true;
    if (std::strncmp(a, "--n=", 4) == 0) {
      ok = ParseList(a + 4, &ns);
    } else if (std::strncmp(a, "--loss=", 7) == 0) {
      ok = ParseList(a + 7, &losses);
    } else if (std::strncmp(a, "--seed=", 7) == 0) {
      ok = absl::SimpleAtoi(a + 7, &seed);
    } else if (std::strcmp(a, "--mode=spdp") == 0) {
      modes = {DiscoveryMode::kSpdp};
    } else if (std::strcmp(a, "--mode=gossip") == 0) {
      modes = {DiscoveryMode::kGossip};
    } else if (std::strcmp(a, "--help") == 0) {
      std::printf(
          "usage: %s [--n=10,100,1000] [--loss=0,0.05] [--seed=1]\n"
          "       [--mode=spdp|gossip] (default: both)\n"
          "SPDP vs gossip discovery on a simulated network (virtual "
          "clock).\nExit: 0 ok, 1 a run did not complete, 2 bad flags.\n",
          argv[0]);
      return 0;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "bad flag: %s (see --help)\n", a);
      return 2;
    }
  }
  std::printf("%-6s %5s %5s | %9s %9s | %10s %12s | %10s %12s | %s\n", "mode",
              "N", "loss", "full_p50", "full_max", "sent_dg/p", "sent_B/p",
              "recv_dg/p", "recv_B/p", "complete");
  std::printf("%-6s %5s %5s | %9s %9s | %10s %12s | %10s %12s |\n", "", "", "",
              "(ms)", "(ms)", "", "", "", "");
  int failures = 0;
  for (double loss : losses) {
    for (double n : ns) {
      for (DiscoveryMode mode : modes) {
        ringlab::rtps::DiscoveryRun run;
        run.participants = static_cast<int>(n);
        run.mode = mode;
        run.loss = loss;
        run.seed = seed;
        ringlab::rtps::DiscoveryResult r = ringlab::rtps::RunDiscovery(run);
        failures += r.complete ? 0 : 1;
        std::printf(
            "%-6s %5d %4.0f%% | %9.1f %9.1f | %10.1f %12.0f | %10.1f %12.0f | "
            "%d/%d\n",
            mode == DiscoveryMode::kSpdp ? "spdp" : "gossip", run.participants,
            loss * 100, r.full_ns_p50 / 1e6, r.full_ns_max / 1e6,
            r.datagrams_sent_per_participant, r.bytes_sent_per_participant,
            r.datagrams_received_per_participant,
            r.bytes_received_per_participant, r.complete_count,
            run.participants);
        std::fflush(stdout);
      }
    }
  }
  return failures == 0 ? 0 : 1;
}
