// ringlab_rudp_goodput_model: what ringlab_rudp_bench's bulk transfer should
// reach, predicted on SimNetwork (virtual clock, deterministic) with the
// benchmark's own connection settings (udp/internal/bench_profile.h) and its
// loss model (each side loses loss% of what it receives, data and ACKs).
//
// The link stands for loopback: a fixed round trip (--rtt_us, split evenly
// between the directions), a serialization rate (--rate_mbit, 0 = none) that
// stands for the per-datagram CPU cost which bounds a real loopback transfer,
// and a queue (--queue_packets) that stands for the receiving socket's
// buffer. Hosts process in zero time, so the model is an upper bound for a
// given RTT and rate: the gap to a real run is time the real path spends
// elsewhere (wakeups, timers, kernel queues).
//
//   ringlab_rudp_goodput_model [--loss=0,1,5,20] [--cc=on|off|both]
//       [--rtt_us=50] [--rate_mbit=0] [--queue_packets=0] [--bytes=100MiB]
//       [--chunk=64KiB] [--seed=1] [--max_ack_delay_us=N] [--trace=PATH]
//
// Prints one CSV row per case (header first). --trace writes the sender's
// congestion state after every step of the first case, in the columns of
// ringlab_rudp_bench --trace, so a real run can be laid over the model.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "udp/host.h"
#include "udp/internal/bench_profile.h"
#include "udp/sim_harness.h"

namespace {

using namespace ringlab;
using namespace ringlab::rudp;
using transport::SimImpairment;

const Endpoint kClient = Endpoint::Loopback(1);
const Endpoint kServer = Endpoint::Loopback(2);

struct Flags {
  std::vector<double> losses = {0, 1, 5, 20};
  std::vector<bool> cc = {true};
  int64_t rtt_us = 50;
  double rate_mbit = 0;
  uint32_t queue_packets = 0;
  uint64_t bytes = 100ull << 20;
  uint64_t chunk = 64 << 10;
  uint64_t seed = 1;
  int64_t max_ack_delay_us = -1;  // -1: the benchmark profile's
  std::string trace;
};

bool ParseSize(absl::string_view text, uint64_t* out) {
  uint64_t scale = 1;
  if (absl::EndsWith(text, "KiB")) {
    scale = 1 << 10;
    text.remove_suffix(3);
  } else if (absl::EndsWith(text, "MiB")) {
    scale = 1 << 20;
    text.remove_suffix(3);
  }
  uint64_t v = 0;
  if (!absl::SimpleAtoi(text, &v) || v == 0) return false;
  *out = v * scale;
  return true;
}

struct Outcome {
  bool ok = false;
  double completion_s = 0;
  ConnectionStats sender;
  ConnectionStats receiver;
};

double Us(Duration d) { return double(d.count()) / 1000.0; }

Outcome RunCase(const Flags& f, double loss_pct, bool cc, FILE* trace) {
  testing::SimHarness sim(f.seed);
  HostOptions ho;
  ho.connection = internal::LanBenchProfile(cc, cc, false);
  // As LoopEndpoint configures it with UDP GSO on (the benchmark default).
  ho.connection.pad_full_packets = true;
  if (f.max_ack_delay_us >= 0) {
    ho.connection.max_ack_delay = std::chrono::microseconds(f.max_ack_delay_us);
  }
  ho.max_connections = 4;
  Host& client = sim.AddHost(kClient, ho);
  Host& server = sim.AddHost(kServer, ho);
  SimImpairment link;
  link.delay = std::chrono::nanoseconds(f.rtt_us * 1000 / 2);
  if (f.rate_mbit > 0) {
    link.rate_bytes_per_sec = uint64_t(f.rate_mbit * 1e6 / 8);
  }
  link.queue_limit_packets = f.queue_packets;
  sim.SetLink(kClient, kServer, link);
  bool up = false;
  ConnectionHandle server_conn;
  uint64_t received = 0;
  sim.on_event = [&](Host& h, const Event& e) {
    if (&h == &client && e.type == EventType::kConnected) up = true;
    if (&h == &server && e.type == EventType::kConnected) {
      server_conn = e.connection;
    }
    if (&h == &server && e.type == EventType::kMessage) {
      received += e.message.size();
    }
  };
  const ConnectionHandle c = *client.Connect(kServer, sim.now());
  Outcome out;
  if (!sim.RunUntil([&] { return up; }, std::chrono::seconds(30))) return out;
  // Loss starts once the connection is up, as in the benchmark.
  link.loss_probability = loss_pct / 100;
  sim.SetLink(kClient, kServer, link);
  const std::vector<std::byte> chunk(f.chunk, std::byte{0x5a});
  uint64_t queued = 0;
  const Timestamp start = sim.now();
  out.ok = sim.RunUntil(
      [&] {
        while (queued < f.bytes) {
          const size_t n = size_t(std::min(f.chunk, f.bytes - queued));
          if (client.Send(c, 0, std::span(chunk).first(n), sim.now()) !=
              SendResult::kOk) {
            break;
          }
          queued += n;
        }
        if (trace != nullptr) {
          const ConnectionStats s = *client.Stats(c);
          std::fprintf(trace, "%.1f,%llu,%llu,%.1f,%.1f,%.1f,%llu,%llu,%llu\n",
                       double((sim.now() - start).count()) / 1000.0,
                       (unsigned long long)s.congestion_window,
                       (unsigned long long)s.bytes_in_flight,
                       Us(s.smoothed_rtt), Us(s.latest_rtt), Us(s.min_rtt),
                       (unsigned long long)s.packets_lost,
                       (unsigned long long)s.probe_timeouts,
                       (unsigned long long)s.congestion_events);
        }
        return received >= f.bytes;
      },
      std::chrono::seconds(3600));
  out.completion_s = double((sim.now() - start).count()) / 1e9;
  out.sender = *client.Stats(c);
  if (auto s = server.Stats(server_conn); s.ok()) out.receiver = *s;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    const size_t eq = arg.find('=');
    if (!absl::StartsWith(arg, "--") || eq == absl::string_view::npos) {
      std::fprintf(stderr, "ringlab_rudp_goodput_model: bad argument %s\n",
                   argv[i]);
      return 2;
    }
    const absl::string_view name = arg.substr(2, eq - 2);
    const absl::string_view value = arg.substr(eq + 1);
    bool ok = true;
    if (name == "loss") {
      f.losses.clear();
      for (absl::string_view v : absl::StrSplit(value, ',')) {
        double d = 0;
        ok = ok && absl::SimpleAtod(v, &d) && d >= 0 && d <= 100;
        f.losses.push_back(d);
      }
    } else if (name == "cc") {
      if (value == "on") {
        f.cc = {true};
      } else if (value == "off") {
        f.cc = {false};
      } else if (value == "both") {
        f.cc = {true, false};
      } else {
        ok = false;
      }
    } else if (name == "rtt_us") {
      ok = absl::SimpleAtoi(value, &f.rtt_us) && f.rtt_us > 0;
    } else if (name == "rate_mbit") {
      ok = absl::SimpleAtod(value, &f.rate_mbit) && f.rate_mbit >= 0;
    } else if (name == "queue_packets") {
      ok = absl::SimpleAtoi(value, &f.queue_packets);
    } else if (name == "bytes") {
      ok = ParseSize(value, &f.bytes);
    } else if (name == "chunk") {
      ok = ParseSize(value, &f.chunk) && f.chunk <= (1 << 20);
    } else if (name == "max_ack_delay_us") {
      ok = absl::SimpleAtoi(value, &f.max_ack_delay_us) &&
           f.max_ack_delay_us >= 0;
    } else if (name == "seed") {
      ok = absl::SimpleAtoi(value, &f.seed);
    } else if (name == "trace") {
      f.trace = std::string(value);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "ringlab_rudp_goodput_model: bad --%.*s\n",
                   int(name.size()), name.data());
      return 2;
    }
  }
  FILE* trace = nullptr;
  if (!f.trace.empty()) {
    trace = std::fopen(f.trace.c_str(), "w");
    if (trace == nullptr) {
      std::perror(f.trace.c_str());
      return 1;
    }
    std::fprintf(trace,
                 "t_us,cwnd,bytes_in_flight,srtt_us,latest_rtt_us,min_rtt_us,"
                 "packets_lost,probe_timeouts,congestion_events\n");
  }
  std::printf(
      "cc,loss_pct,rtt_us,rate_mbit,bytes,completion_s,goodput_mbit_s,"
      "retransmission_ratio,packets_lost,probe_timeouts,congestion_events,"
      "spurious_losses,duplicate_fragments,srtt_us,final_cwnd\n");
  int failures = 0;
  for (bool cc : f.cc) {
    for (double loss : f.losses) {
      const Outcome o = RunCase(f, loss, cc, trace);
      if (trace != nullptr) {
        std::fclose(trace);
        trace = nullptr;
      }
      if (!o.ok) ++failures;
      const ConnectionStats& s = o.sender;
      std::printf(
          "%s,%g,%lld,%g,%llu,%.4f,%.1f,%.4f,%llu,%llu,%llu,%llu,%llu,%.1f,"
          "%llu%s\n",
          cc ? "on" : "off", loss, (long long)f.rtt_us, f.rate_mbit,
          (unsigned long long)f.bytes, o.completion_s,
          o.completion_s > 0 ? double(f.bytes) * 8 / 1e6 / o.completion_s : 0,
          double(s.fragments_retransmitted) /
              double(std::max<uint64_t>(1, s.fragments_sent)),
          (unsigned long long)s.packets_lost,
          (unsigned long long)s.probe_timeouts,
          (unsigned long long)s.congestion_events,
          (unsigned long long)s.spurious_losses,
          (unsigned long long)o.receiver.duplicate_fragments,
          Us(s.smoothed_rtt), (unsigned long long)s.congestion_window,
          o.ok ? "" : ",FAILED");
      std::fflush(stdout);
    }
  }
  return failures == 0 ? 0 : 1;
}
