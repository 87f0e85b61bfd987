// ringlab_rudp_nack_experiment: does an explicit NACK on a detected gap
// help? On SimNetwork (virtual clock, deterministic), rudp with nack_on_gap
// on and off, under Bernoulli and burst loss, with and without reordering:
//
//   stream: a 100-byte reliable message every 2 ms for 60 s over a 20 ms
//     RTT link; the figure is the delivery delay (send -> application),
//     p50/p99/p99.9/max. Loss recovery shows in the tail.
//   bulk: 8 MiB, as fast as NewReno allows; completion time, retransmission
//     ratio and spurious retransmissions (fragments the receiver got twice).
//
//   ringlab_rudp_nack_experiment [--out=DIR]   writes DIR/nack.csv
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "udp/host.h"
#include "udp/sim_harness.h"

namespace {

using namespace ringlab;
using namespace ringlab::rudp;
using std::chrono::milliseconds;
using transport::SimImpairment;

const Endpoint kA = Endpoint::Loopback(1);
const Endpoint kB = Endpoint::Loopback(2);

struct Link {
  const char* name;
  SimImpairment impairment;
};

struct Result {
  double p50_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
  double completion_s = 0;
  double retransmission_ratio = 0;
  uint64_t spurious = 0, lost_by_nack = 0, packets_lost = 0;
};

HostOptions Options(bool nack) {
  HostOptions o;
  o.connection.initial_rtt = milliseconds(20);
  o.connection.max_ack_delay = milliseconds(5);
  o.connection.nack_on_gap = nack;
  o.connection.idle_timeout = Duration::zero();
  o.connection.failure_detection = false;
  return o;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
}

Result Stream(const SimImpairment& link, bool nack, uint64_t seed) {
  testing::SimHarness sim(seed);
  Host& a = sim.AddHost(kA, Options(nack));
  Host& b = sim.AddHost(kB, Options(nack));
  sim.SetLink(kA, kB, link);
  ConnectionHandle c;
  bool up = false;
  std::vector<int64_t> sent_at;
  std::vector<double> delays;
  sim.on_event = [&](Host& h, const Event& e) {
    if (&h == &a && e.type == EventType::kConnected) up = true;
    if (&h == &b && e.type == EventType::kMessage) {
      uint64_t n = 0;
      std::array<std::byte, 8> head;
      e.message.CopyTo(head);
      std::memcpy(&n, head.data(), 8);
      if (n < sent_at.size()) {
        delays.push_back(double(sim.now().nanos() - sent_at[n]) / 1e6);
      }
    }
  };
  c = *a.Connect(kB, sim.now());
  sim.RunUntil([&] { return up; }, std::chrono::seconds(30));
  std::vector<std::byte> m(100);
  const Timestamp start = sim.now();
  for (uint64_t n = 0; n < 30000; ++n) {
    const Timestamp t = start + milliseconds(2) * int64_t(n);
    sim.RunUntil([&] { return sim.now() >= t; }, std::chrono::seconds(1));
    std::memcpy(m.data(), &n, 8);
    sent_at.push_back(sim.now().nanos());
    a.Send(c, 0, m, sim.now());
  }
  sim.RunUntil([&] { return delays.size() >= sent_at.size(); },
               std::chrono::seconds(60));
  Result r;
  r.p50_ms = Percentile(delays, 0.5);
  r.p99_ms = Percentile(delays, 0.99);
  r.p999_ms = Percentile(delays, 0.999);
  r.max_ms =
      delays.empty() ? 0 : *std::max_element(delays.begin(), delays.end());
  const ConnectionStats s = *a.Stats(c);
  r.retransmission_ratio = double(s.fragments_retransmitted) /
                           double(std::max<uint64_t>(1, s.fragments_sent));
  r.lost_by_nack = s.packets_lost_by_nack;
  r.packets_lost = s.packets_lost;
  return r;
}

Result Bulk(const SimImpairment& link, bool nack, uint64_t seed) {
  testing::SimHarness sim(seed);
  Host& a = sim.AddHost(kA, Options(nack));
  Host& b = sim.AddHost(kB, Options(nack));
  sim.SetLink(kA, kB, link);
  ConnectionHandle c, server;
  bool up = false;
  uint64_t received = 0;
  const uint64_t total = 8 << 20;
  sim.on_event = [&](Host& h, const Event& e) {
    if (&h == &a && e.type == EventType::kConnected) up = true;
    if (&h == &b && e.type == EventType::kConnected) server = e.connection;
    if (&h == &b && e.type == EventType::kMessage) received += e.message.size();
  };
  c = *a.Connect(kB, sim.now());
  sim.RunUntil([&] { return up; }, std::chrono::seconds(30));
  const std::vector<std::byte> chunk(64 << 10);
  uint64_t queued = 0;
  const Timestamp start = sim.now();
  sim.RunUntil(
      [&] {
        while (queued < total &&
               a.Send(c, 0, chunk, sim.now()) == SendResult::kOk) {
          queued += chunk.size();
        }
        return received >= total;
      },
      std::chrono::seconds(3600));
  Result r;
  r.completion_s = double((sim.now() - start).count()) / 1e9;
  const ConnectionStats s = *a.Stats(c);
  r.retransmission_ratio = double(s.fragments_retransmitted) /
                           double(std::max<uint64_t>(1, s.fragments_sent));
  r.lost_by_nack = s.packets_lost_by_nack;
  r.packets_lost = s.packets_lost;
  if (auto rs = b.Stats(server); rs.ok()) r.spurious = rs->duplicate_fragments;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_dir = ".";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--out=", 6) == 0) out_dir = argv[i] + 6;
  }
  SimImpairment base;
  base.delay = milliseconds(10);
  std::vector<Link> links;
  for (double loss : {0.01, 0.05, 0.2}) {
    SimImpairment l = base;
    l.loss_probability = loss;
    links.push_back({loss == 0.01   ? "bernoulli1"
                     : loss == 0.05 ? "bernoulli5"
                                    : "bernoulli20",
                     l});
  }
  {
    SimImpairment l = base;
    l.gilbert_elliott = true;  // 5% mean loss, bursts of mean 4
    l.ge_bad_to_good = 0.25;
    l.ge_good_to_bad = 0.05 / 0.95 * 0.25;
    links.push_back({"burst5", l});
    SimImpairment r = base;
    r.loss_probability = 0.05;
    r.jitter = milliseconds(4);  // reorders packets closer than 4 ms
    links.push_back({"bernoulli5+jitter4ms", r});
    SimImpairment q = base;
    q.loss_probability = 0.05;
    q.reorder_probability = 0.05;
    q.reorder_delay = milliseconds(3);
    links.push_back({"bernoulli5+reorder5%", q});
  }
  const std::string path = out_dir + "/nack.csv";
  FILE* csv = std::fopen(path.c_str(), "w");
  if (csv == nullptr) {
    std::perror(path.c_str());
    return 1;
  }
  std::fprintf(
      csv,
      "link,nack,stream_p50_ms,stream_p99_ms,stream_p999_ms,stream_max_ms,"
      "stream_retx_ratio,stream_lost_by_nack,bulk_completion_s,"
      "bulk_retx_ratio,bulk_spurious_fragments,bulk_lost_by_nack,"
      "bulk_packets_lost\n");
  for (const Link& l : links) {
    for (bool nack : {false, true}) {
      const Result s = Stream(l.impairment, nack, 7);
      const Result b = Bulk(l.impairment, nack, 7);
      std::fprintf(
          csv, "%s,%s,%.2f,%.2f,%.2f,%.2f,%.4f,%llu,%.2f,%.4f,%llu,%llu,%llu\n",
          l.name, nack ? "on" : "off", s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms,
          s.retransmission_ratio, (unsigned long long)s.lost_by_nack,
          b.completion_s, b.retransmission_ratio,
          (unsigned long long)b.spurious, (unsigned long long)b.lost_by_nack,
          (unsigned long long)b.packets_lost);
      std::fflush(csv);
    }
  }
  std::fclose(csv);
  std::printf("wrote %s\n", path.c_str());
  return 0;
}
