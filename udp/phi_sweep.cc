// ringlab_rudp_phi_sweep: the heartbeat-threshold experiment RealMQ's
// roadmap asked for, on the virtual clock, so every figure is deterministic.
//
// A peer sends a heartbeat every h over a SimNetwork link with delay,
// jitter and (in one scenario) Gilbert-Elliott burst loss; rudp's
// PhiAccrualDetector (with the options a rudp connection gives it) watches
// the arrivals. For every phi threshold it reports
//   - false suspicions: gaps during which phi reached the threshold although
//     the peer was alive, per hour;
//   - detection time: how long after a crash (the peer stops sending; what
//     was in flight still arrives) phi reaches the threshold, over many
//     crash instants spread through the run.
//
//   ringlab_rudp_phi_sweep --out=DIR [--hours=12]
// writes DIR/phi_sweep.csv and DIR/phi_sweep.gp (gnuplot: detection time
// against false-suspicion rate), and runs gnuplot when it is installed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "transport/sim_network.h"
#include "udp/host.h"
#include "udp/phi_accrual.h"
#include "udp/sim_harness.h"

namespace {

using ringlab::Duration;
using ringlab::Endpoint;
using ringlab::Timestamp;
using ringlab::rudp::PhiAccrualDetector;
using ringlab::rudp::PhiAccrualOptions;
using ringlab::transport::SimImpairment;
using ringlab::transport::SimNetwork;
using std::chrono::milliseconds;

struct Scenario {
  const char* name;
  SimImpairment link;
};

struct Family {
  const char* name;
  // min_std_dev as a multiple of the heartbeat interval.
  double min_std_in_intervals;
};

struct Arrival {
  int64_t at_ns;
  int64_t sent_ns;
};

const double kThresholds[] = {1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16};

std::vector<Arrival> Simulate(const SimImpairment& link, Duration interval,
                              Duration run, uint64_t seed) {
  SimNetwork::Options options;
  options.seed = seed;
  SimNetwork net(options);
  const Endpoint a = Endpoint::Loopback(1), b = Endpoint::Loopback(2);
  (void)net.AddNode(a);
  (void)net.AddNode(b);
  (void)net.SetLinkImpairment(a, b, link);
  std::vector<Arrival> arrivals;
  int64_t sent_ns = 0;
  const std::byte payload[16] = {};
  for (Timestamp t = Timestamp::Zero(); t < Timestamp::Zero() + run;
       t += interval) {
    (void)net.AdvanceTo(t);
    while (auto d = net.PollDatagram(b)) {
      arrivals.push_back({d->delivered_at.nanos(), d->sent_at.nanos()});
    }
    (void)net.SendDatagram(a, b, payload);
    sent_ns = t.nanos();
  }
  (void)sent_ns;
  net.RunUntilIdle();
  while (auto d = net.PollDatagram(b)) {
    arrivals.push_back({d->delivered_at.nanos(), d->sent_at.nanos()});
  }
  std::stable_sort(
      arrivals.begin(), arrivals.end(),
      [](const Arrival& x, const Arrival& y) { return x.at_ns < y.at_ns; });
  return arrivals;
}

PhiAccrualOptions DetectorFor(Duration interval, const Family& f) {
  // What a rudp connection configures for heartbeat interval h.
  PhiAccrualOptions o;
  o.window_size = 100;
  o.first_heartbeat_estimate = interval;
  o.min_sample_interval = interval / 2;
  o.min_std_dev =
      Duration(int64_t(double(interval.count()) * f.min_std_in_intervals));
  o.acceptable_pause = Duration::zero();
  return o;
}

// The whole protocol, not just the detector: an idle rudp connection pair
// (heartbeats, and PING probes from probe_phi on, answered at once) over
// the bursty link for `hours`; every false "peer dead" is counted and the
// pair reconnects.
uint64_t ConnectionLevelFalseDeaths(const SimImpairment& link, double threshold,
                                    double hours, uint64_t seed) {
  using namespace ringlab::rudp;
  ringlab::rudp::testing::SimHarness sim(seed);
  HostOptions o;
  o.connection.initial_rtt = milliseconds(50);
  o.connection.failure_detector.threshold = threshold;
  o.connection.idle_timeout = Duration::zero();
  const Endpoint a = Endpoint::Loopback(1), b = Endpoint::Loopback(2);
  Host& client = sim.AddHost(a, o);
  sim.AddHost(b, o);
  sim.SetLink(a, b, link);
  uint64_t deaths = 0;
  bool open = false;
  sim.on_event = [&](Host& h, const Event& e) {
    if (&h != &client) return;
    if (e.type == EventType::kConnected) open = true;
    if (e.type == EventType::kPeerDead) ++deaths;
    if (e.type == EventType::kClosed || e.type == EventType::kConnectFailed) {
      open = false;
      (void)client.Connect(b, sim.now());
    }
  };
  (void)client.Connect(b, sim.now());
  sim.RunFor(Duration(int64_t(hours * 3600e9)));
  (void)open;
  return deaths;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * double(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_dir = ".";
  double hours = 12;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--out=", 6) == 0) {
      out_dir = argv[i] + 6;
    } else if (std::strncmp(argv[i], "--hours=", 8) == 0) {
      hours = std::atof(argv[i] + 8);
    } else {
      std::fprintf(stderr, "usage: %s [--out=DIR] [--hours=H]\n", argv[0]);
      return 2;
    }
  }
  SimImpairment jitter;
  jitter.delay = milliseconds(20);
  jitter.jitter = milliseconds(30);
  SimImpairment bursty = jitter;
  // Mean loss 10% in bursts of mean length 3 packets.
  bursty.gilbert_elliott = true;
  bursty.ge_bad_to_good = 1.0 / 3;
  bursty.ge_good_to_bad = 0.1 / 0.9 / 3;
  const Scenario scenarios[] = {{"jitter", jitter}, {"jitter+burst10", bursty}};
  const Family families[] = {
      {"min_std=h/4", 0.25}, {"min_std=h", 1.0}, {"min_std=3h", 3.0}};
  const Duration intervals[] = {milliseconds(20), milliseconds(50),
                                milliseconds(100), milliseconds(200)};
  const Duration run = Duration(int64_t(hours * 3600e9));

  const std::string csv_path = out_dir + "/phi_sweep.csv";
  FILE* csv = std::fopen(csv_path.c_str(), "w");
  if (csv == nullptr) {
    std::perror(csv_path.c_str());
    return 1;
  }
  std::fprintf(csv,
               "scenario,family,interval_ms,threshold,heartbeats_arrived,"
               "false_suspicions,false_per_hour,detect_mean_ms,detect_p50_ms,"
               "detect_p99_ms,detect_mean_intervals\n");
  uint64_t seed = 1;
  for (const Scenario& sc : scenarios) {
    for (const Duration h : intervals) {
      const std::vector<Arrival> arrivals = Simulate(sc.link, h, run, seed++);
      for (const Family& fam : families) {
        const PhiAccrualOptions options = DetectorFor(h, fam);
        // Alive run: the highest phi of each gap is reached just before the
        // next arrival.
        std::vector<uint64_t> false_count(std::size(kThresholds), 0);
        PhiAccrualDetector d(options);
        d.Start(Timestamp::FromNanos(arrivals.front().at_ns));
        for (size_t i = 1; i < arrivals.size(); ++i) {
          const Timestamp next = Timestamp::FromNanos(arrivals[i].at_ns);
          const double peak = d.Phi(next);
          for (size_t k = 0; k < std::size(kThresholds); ++k) {
            if (peak >= kThresholds[k]) ++false_count[k];
          }
          d.OnArrival(next);
        }
        // Crash trials: the peer stops at t_c; packets sent before t_c still
        // arrive. The detector is rebuilt from the last 300 such arrivals
        // (its window is 100 samples, so the state is exact).
        std::vector<std::vector<double>> detect(std::size(kThresholds));
        const int trials = 1000;
        for (int t = 1; t <= trials; ++t) {
          const int64_t crash_ns =
              int64_t(double(run.count()) * t / (trials + 1)) +
              1234567 * t % h.count();
          std::vector<Arrival> before;
          auto it = std::upper_bound(
              arrivals.begin(), arrivals.end(), crash_ns + 2'000'000'000,
              [](int64_t v, const Arrival& a) { return v < a.at_ns; });
          while (it != arrivals.begin() && before.size() < 300) {
            --it;
            if (it->sent_ns < crash_ns) before.push_back(*it);
          }
          std::reverse(before.begin(), before.end());
          if (before.size() < 150) continue;
          PhiAccrualDetector trial(options);
          trial.Start(Timestamp::FromNanos(before.front().at_ns));
          for (size_t i = 1; i < before.size(); ++i) {
            trial.OnArrival(Timestamp::FromNanos(before[i].at_ns));
          }
          for (size_t k = 0; k < std::size(kThresholds); ++k) {
            const Timestamp reach = trial.TimeWhenPhiReaches(kThresholds[k]);
            detect[k].push_back(double(reach.nanos() - crash_ns) / 1e6);
          }
        }
        for (size_t k = 0; k < std::size(kThresholds); ++k) {
          double mean = 0;
          for (double v : detect[k]) mean += v;
          mean /= double(std::max<size_t>(detect[k].size(), 1));
          const double h_ms = double(h.count()) / 1e6;
          std::fprintf(
              csv, "%s,%s,%.0f,%.0f,%zu,%llu,%.3f,%.1f,%.1f,%.1f,%.2f\n",
              sc.name, fam.name, h_ms, kThresholds[k], arrivals.size(),
              (unsigned long long)false_count[k],
              double(false_count[k]) / hours, mean, Percentile(detect[k], 0.5),
              Percentile(detect[k], 0.99), mean / h_ms);
        }
      }
    }
  }
  std::fclose(csv);

  // Connection level, rudp defaults (h = 100 ms, min_std = 3h), bursty link.
  const std::string conn_path = out_dir + "/phi_connection.csv";
  FILE* conn = std::fopen(conn_path.c_str(), "w");
  if (conn == nullptr) {
    std::perror(conn_path.c_str());
    return 1;
  }
  std::fprintf(conn, "scenario,threshold,hours,false_deaths,per_hour\n");
  for (double threshold : {4.0, 6.0, 8.0, 12.0}) {
    const uint64_t deaths =
        ConnectionLevelFalseDeaths(bursty, threshold, hours, 99);
    std::fprintf(conn, "jitter+burst10,%.0f,%.1f,%llu,%.3f\n", threshold, hours,
                 (unsigned long long)deaths, double(deaths) / hours);
    std::fflush(conn);
  }
  std::fclose(conn);

  const std::string gp_path = out_dir + "/phi_sweep.gp";
  FILE* gp = std::fopen(gp_path.c_str(), "w");
  if (gp == nullptr) {
    std::perror(gp_path.c_str());
    return 1;
  }
  // Zero false suspicions cannot go on a log axis: they are drawn at 0.01/h
  // (below one in the whole run).
  std::fprintf(gp,
               R"(# Detection time against false-suspicion rate (phi_sweep.csv).
set datafile separator ','
set terminal pngcairo size 1800,1000 noenhanced
set output 'phi_sweep.png'
set multiplot layout 2,3 title 'phi accrual: detection time vs false suspicions (labels: threshold)'
set logscale y
set yrange [0.005:*]
set xlabel 'mean detection time after a crash (ms)'
set ylabel 'false suspicions per hour (0 drawn at 0.01)'
set key top right
nonzero(x) = x > 0 ? x : 0.01
do for [sc in 'jitter jitter+burst10'] {
  do for [fam in 'min_std=h/4 min_std=h min_std=3h'] {
    set title sc.', '.fam
    plot for [h in '20 50 100 200'] 'phi_sweep.csv' \
      using (strcol(1) eq sc && strcol(2) eq fam && strcol(3) eq h ? $8 : 1/0):(nonzero($7)) \
      with linespoints title 'h='.h.' ms', \
      for [h in '20 50 100 200'] 'phi_sweep.csv' \
      using (strcol(1) eq sc && strcol(2) eq fam && strcol(3) eq h ? $8 : 1/0):(nonzero($7)):(sprintf('%%d', $4)) \
      with labels offset 0.6,0.6 font ',7' notitle
  }
}
unset multiplot
)");
  std::fclose(gp);
  std::printf("wrote %s and %s\n", csv_path.c_str(), gp_path.c_str());
  if (std::system("command -v gnuplot >/dev/null 2>&1") == 0) {
    const std::string cmd = "cd '" + out_dir + "' && gnuplot phi_sweep.gp";
    if (std::system(cmd.c_str()) == 0) {
      std::printf("wrote %s/phi_sweep.png\n", out_dir.c_str());
    }
  }
  return 0;
}
