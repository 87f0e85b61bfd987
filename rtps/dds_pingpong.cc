// ringlab_dds_pingpong: a DDS round-trip benchmark that speaks ddsperf's
// protocol, so it can stand in for either side of `ddsperf ping` /
// `ddsperf pong` and measure against Cyclone DDS in the same run.
//
//   ringlab_dds_pingpong pong --backend=uring-fixed --cpu=0 [--best-effort]
//   ringlab_dds_pingpong ping --backend=uring-fixed --cpu=1 --payload=64
//       --samples=20000 --warmup=2000 --json=out.json   (one command line)
//   ringlab_dds_pingpong ping --mode=burst --inflight=32 ...   # stream mode
//
// Roles: `pong` (alias `server`) answers pings from us or from `ddsperf
// ping`; `ping` (alias `client`) measures against our pong or `ddsperf pong`.
// Both create ddsperf's endpoints: topics DDSPerf{R|U}{Ping,Pong}KS of type
// KeyedSeq, KEEP_LAST 1, a pong reader in the partition named after our own
// GUID, one pong writer per discovered ddsperf-style participant in that
// participant's partition, and USER_DATA "DDSPerf:0:<pid>:<host>" (without
// it ddsperf ignores a participant). A ping carries source timestamp
// now|1 and the pong echoes it |1, as ddsperf does. We time round trips with
// the monotonic clock, keyed by the sample's sequence number, and report
// full round trips (ddsperf prints halves).
//
// Output: `READY <address>` once the pong is up (stdout); the ping writes the
// ringlab JSON result (schema ringlab.pingpong/1, protocol "dds") to --json
// or a `RESULT {...}` line. Exit codes: 0 ok, 1 bad usage, 2 run failed (no
// match in time, too many losses), 3 the backend preset cannot run here.
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/histogram.h"
#include "bench/json_writer.h"
#include "bench/process_stats.h"
#include "rtps/ddsperf_types.h"
#include "rtps/domain_participant.h"
#include "rtps/internal/bench_program.h"
#include "rtps/topic.h"

namespace ringlab::rtps {
namespace {

using bench_program::kExitOk;
using bench_program::kExitRunFailed;
using bench_program::StopRequested;

struct Options : bench_program::CommonOptions {
  bool multicast = true;
  std::vector<std::string> peers;
  uint32_t payload = 64;  // ddsperf "size": includes the 12 fixed bytes
  uint64_t samples = 20000;
  uint64_t warmup = 2000;
  uint32_t inflight = 1;
  std::string mode = "pingpong";
  double timeout_s = 60;
  double duration_s = 0;  // pong: 0 = until a signal
  bool wait_batching = false;
};

const char* kUsage =
    "usage: ringlab_dds_pingpong ping|pong [--backend=PRESET] [--domain=N]\n"
    "  [--interface=A.B.C.D|auto] [--no-multicast] [--peer=A.B.C.D[:PORT]]\n"
    "  [--reliable|--best-effort] [--payload=BYTES (>= 12, ddsperf size)]\n"
    "  [--samples=N] [--warmup=N] [--mode=pingpong|burst] [--inflight=N]\n"
    "  [--cpu=N] [--json=PATH] [--timeout_s=S] [--duration_s=S]\n"
    "  [--wait_batching=0|1 (uring-fixed/sqpoll: one enter per round trip)]\n"
    "exit: 0 ok, 1 usage, 2 run failed, 3 backend unsupported here\n";

bool ParseArgs(int argc, char** argv, Options* o, std::string* err) {
  if (!bench_program::ParseRole(argc, argv, "pong", "ping",
                                "role must be ping or pong", &o->role, err)) {
    return false;
  }
  for (int i = 2; i < argc; ++i) {
    const bench_program::Flag f(argv[i]);
    const absl::string_view a = f.arg();
    absl::string_view v;
    bool ok = true;
    if (a == "--reliable") {
      o->reliable = true;
    } else if (a == "--best-effort") {
      o->reliable = false;
    } else if (a == "--no-multicast") {
      o->multicast = false;
    } else if (bench_program::FlagResult r =
                   bench_program::ParseCommonFlag(f, o);
               r != bench_program::FlagResult::kNotCommon) {
      ok = r == bench_program::FlagResult::kOk;
    } else if (f.Value("--peer=", &v)) {
      o->peers.emplace_back(v);
    } else if (f.Value("--payload=", &v)) {
      ok = absl::SimpleAtoi(v, &o->payload) && o->payload >= 12;
    } else if (f.Value("--samples=", &v)) {
      ok = absl::SimpleAtoi(v, &o->samples) && o->samples > 0;
    } else if (f.Value("--warmup=", &v)) {
      ok = absl::SimpleAtoi(v, &o->warmup);
    } else if (f.Value("--inflight=", &v)) {
      ok = absl::SimpleAtoi(v, &o->inflight) && o->inflight >= 1 &&
           o->inflight <= 1024;
    } else if (f.Value("--mode=", &v)) {
      o->mode = std::string(v);
      ok = v == "pingpong" || v == "burst";
    } else if (f.Value("--timeout_s=", &v)) {
      ok = absl::SimpleAtod(v, &o->timeout_s);
    } else if (f.Value("--duration_s=", &v)) {
      ok = absl::SimpleAtod(v, &o->duration_s);
    } else if (f.Value("--wait_batching=", &v)) {
      ok = v == "0" || v == "1";
      o->wait_batching = v == "1";
    } else {
      *err = absl::StrCat("unknown flag ", a);
      return false;
    }
    if (!ok) {
      *err = absl::StrCat("bad value in ", a);
      return false;
    }
  }
  if (o->mode == "pingpong") o->inflight = 1;
  return true;
}

// The ping/pong endpoints both roles create (see the file comment).
class PingPong {
 public:
  explicit PingPong(const Options& o) : o_(o) {}

  int Setup() {
    DomainParticipantOptions dpo =
        bench_program::ParticipantOptions(o_, "ringlab_dds_pingpong");
    dpo.multicast = o_.multicast;
    dpo.peers = o_.peers;
    dpo.wait_batching = o_.wait_batching;
    char host[256] = "?";
    gethostname(host, sizeof(host) - 1);
    dpo.core.user_data = absl::StrCat("DDSPerf:0:", getpid(), ":", host);
    // A datagram must hold one sample plus RTPS overhead, and any datagram
    // Cyclone sends (it fragments into datagrams of up to ~14.7 KB).
    uint32_t need = std::max<uint32_t>(o_.payload, 16384) + 1024;
    dpo.buffer_size = (need + 1023) & ~1023u;
    dpo.buffer_count =
        std::clamp<uint32_t>((4u << 20) / dpo.buffer_size, 64, 2048);
    if (int rc =
            bench_program::CreateParticipant("ringlab_dds_pingpong", dpo, &dp_);
        rc != kExitOk) {
      return rc;
    }
    const char* rel = o_.reliable ? "R" : "U";
    ping_topic_ = std::make_unique<Topic<KeyedSeq>>(
        absl::StrCat("DDSPerf", rel, "PingKS"));
    pong_topic_ = std::make_unique<Topic<KeyedSeq>>(
        absl::StrCat("DDSPerf", rel, "PongKS"));
    // ddsperf: reliability from the topic (max_blocking 10 s), KEEP_LAST 1.
    wqos_ = EndpointQos::WriterDefaults();
    wqos_.reliability =
        o_.reliable ? ReliabilityKind::kReliable : ReliabilityKind::kBestEffort;
    wqos_.max_blocking_time_ns = 10'000'000'000;
    wqos_.history_depth = 1;
    rqos_ = wqos_;
    auto pr = DataReader<KeyedSeq>::Create(*dp_, *ping_topic_, rqos_);
    auto pw = DataWriter<KeyedSeq>::Create(*dp_, *ping_topic_, wqos_);
    EndpointQos own = rqos_;
    own.partitions = {DdsPerfGuidPartition(
        Guid{dp_->core().guid_prefix(), EntityId::Participant()})};
    auto qr = DataReader<KeyedSeq>::Create(*dp_, *pong_topic_, own);
    if (!pr.ok() || !pw.ok() || !qr.ok()) {
      std::fprintf(stderr, "ringlab_dds_pingpong: creating endpoints failed\n");
      return kExitRunFailed;
    }
    ping_reader_ = std::move(*pr);
    ping_writer_ = std::move(*pw);
    pong_reader_ = std::move(*qr);
    dp_->SetDataCallback([this] { OnData(); });
    return kExitOk;
  }

  DomainParticipant& dp() { return *dp_; }

  // Control path: a pong writer per ddsperf-style participant.
  void HandleEvents() {
    while (std::optional<Event> e = dp_->core().PollEvent()) {
      if (e->kind == Event::Kind::kParticipantDiscovered) {
        const RemoteParticipantInfo* p =
            dp_->core().FindParticipant(e->remote.prefix);
        if (p == nullptr || !absl::StartsWith(p->data.user_data, "DDSPerf:")) {
          continue;
        }
        EndpointQos q = wqos_;
        q.partitions = {DdsPerfGuidPartition(e->remote)};
        auto w = DataWriter<KeyedSeq>::Create(*dp_, *pong_topic_, q);
        if (w.ok()) pong_writers_[e->remote.prefix] = std::move(*w);
      } else if (e->kind == Event::Kind::kIncompatibleQos) {
        std::fprintf(stderr,
                     "ringlab_dds_pingpong: incompatible QoS %s with %s\n",
                     QosPolicyName(e->policy), e->remote.ToString().c_str());
      }
    }
  }

  void OnData() {
    HandleEvents();
    SampleInfo info;
    // Pings: answer through the pong writer of the pinging participant.
    while (ping_reader_->Take(&sample_, &info)) {
      auto it = pong_writers_.find(info.writer.prefix);
      if (it == pong_writers_.end()) {
        ++pings_unanswered_;
        continue;
      }
      int64_t ts = info.source_time_ns == kNoSourceTimestamp
                       ? WallClockNanos()
                       : info.source_time_ns;
      if (it->second->Write(sample_, ts | 1).ok()) ++pongs_sent_;
    }
    while (pong_reader_->Take(&sample_, &info)) {
      if (info.source_time_ns == kNoSourceTimestamp ||
          (info.source_time_ns & 1) == 0) {
        continue;  // ddsperf: an even timestamp answers data, not a ping
      }
      OnPong(sample_.seq);
    }
  }

  // ---- pong -------------------------------------------------------------
  int RunPong() {
    Endpoint shown = dp_->core().config().default_unicast[0].ToEndpoint();
    std::printf("READY %s\n", shown.ToString().c_str());
    std::fflush(stdout);
    bench::CpuTime cpu0 = bench::CpuTime::Now();
    Timestamp end =
        o_.duration_s > 0
            ? MonotonicNow() +
                  Duration(static_cast<int64_t>(o_.duration_s * 1e9))
            : Timestamp::Never();
    Duration wait = Busy() ? Duration(0) : std::chrono::milliseconds(100);
    while (!StopRequested() && MonotonicNow() < end) {
      dp_->RunOnce(wait);
      HandleEvents();
    }
    bench::CpuTime cpu = bench::CpuTime::Now() - cpu0;
    std::fprintf(
        stderr,
        "ringlab_dds_pingpong pong: %llu pongs, %llu unanswered pings, "
        "cpu %lld us\n",
        static_cast<unsigned long long>(pongs_sent_),
        static_cast<unsigned long long>(pings_unanswered_),
        static_cast<long long>(cpu.total_us()));
    return kExitOk;
  }

  // ---- ping -------------------------------------------------------------
  int RunPing() {
    const Timestamp deadline =
        MonotonicNow() + Duration(static_cast<int64_t>(o_.timeout_s * 1e9));
    // Discovery: our ping writer matched a reader, our pong reader a writer.
    Duration wait = Busy() ? Duration(0) : std::chrono::milliseconds(20);
    while (ping_writer_->matched() == 0 || pong_reader_->matched() == 0) {
      if (MonotonicNow() > deadline || StopRequested()) {
        std::fprintf(stderr,
                     "ringlab_dds_pingpong ping: no pong matched within %.0f s "
                     "(ping writer matched %zu, pong reader matched %zu)\n",
                     o_.timeout_s, ping_writer_->matched(),
                     pong_reader_->matched());
        return kExitRunFailed;
      }
      dp_->RunOnce(wait);
      HandleEvents();
    }
    // Let the peer's endpoints finish matching ours (its pong writer may
    // match a moment after ours matched its reader).
    dp_->RunFor(std::chrono::milliseconds(300));
    HandleEvents();
    sent_at_.assign(4096, Timestamp::Never());
    sample_.baggage.assign(o_.payload - 12, 0x5a);
    for (uint32_t i = 0; i < o_.inflight; ++i) SendPing();
    while (recorded_ < o_.samples) {
      if (MonotonicNow() > deadline || StopRequested()) {
        std::fprintf(stderr,
                     "ringlab_dds_pingpong ping: only %llu of %llu round trips "
                     "within %.0f s (%llu lost)\n",
                     static_cast<unsigned long long>(recorded_),
                     static_cast<unsigned long long>(o_.samples), o_.timeout_s,
                     static_cast<unsigned long long>(lost_));
        return kExitRunFailed;
      }
      dp_->RunOnce(Busy() ? Duration(0) : std::chrono::milliseconds(50));
      ResendLost();
    }
    end_time_ = MonotonicNow();
    end_cpu_ = bench::CpuTime::Now();
    end_counters_ = dp_->loop().counters();
    Report();
    return kExitOk;
  }

 private:
  bool Busy() const { return dp_->loop().backend().flags.busy_poll; }

  void SendPing() {
    KeyedSeq& s = ping_sample_;
    s.seq = next_seq_++;
    s.keyval = o_.inflight > 1 ? s.seq % o_.inflight : 0;
    s.baggage.resize(o_.payload - 12, 0x5a);
    sent_at_[s.seq % sent_at_.size()] = MonotonicNow();
    if (!ping_writer_->Write(s, WallClockNanos() | 1).ok()) ++write_failures_;
  }

  void OnPong(uint32_t seq) {
    Timestamp& sent = sent_at_[seq % sent_at_.size()];
    if (sent.is_never()) return;  // a late answer to a ping given up on
    Timestamp now = MonotonicNow();
    int64_t rtt = (now - sent).count();
    sent = Timestamp::Never();
    ++answered_;
    if (answered_ == o_.warmup + 1 || (o_.warmup == 0 && answered_ == 1)) {
      start_time_ = now;
      start_cpu_ = bench::CpuTime::Now();
      start_counters_ = dp_->loop().counters();
    }
    if (answered_ > o_.warmup) {
      histogram_.Record(static_cast<uint64_t>(rtt));
      ++recorded_;
    }
    if (recorded_ < o_.samples) SendPing();
  }

  // A ping unanswered for 1 s is lost (ddsperf's rule): send a new one.
  void ResendLost() {
    Timestamp now = MonotonicNow();
    if (now - last_scan_ < std::chrono::milliseconds(100)) return;
    last_scan_ = now;
    for (Timestamp& t : sent_at_) {
      if (!t.is_never() && now - t > std::chrono::seconds(1)) {
        t = Timestamp::Never();
        ++lost_;
        SendPing();
      }
    }
  }

  void Report() {
    const double n = static_cast<double>(recorded_);
    const double duration_s = (end_time_ - start_time_).count() / 1e9;
    bench::CpuTime cpu = end_cpu_ - start_cpu_;
    transport::LoopCounters c = end_counters_.Delta(start_counters_);
    auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    bench::JsonWriter json;
    json.BeginObject();
    json.Key("schema").String("ringlab.pingpong/1");
    json.Key("program").String("ringlab_dds_pingpong");
    json.Key("protocol").String("dds");
    const transport::BackendInfo& b = dp_->loop().backend();
    json.Key("backend").String(b.name);
    json.Key("backend_requested").String(b.requested);
    json.Key("backend_flags").String(b.flags.ToString());
    json.Key("backend_note").String(b.chosen_because);
    json.Key("mode").String(o_.mode);
    json.Key("reliability").String(o_.reliable ? "reliable" : "best-effort");
    json.Key("payload_bytes").Uint(o_.payload);
    json.Key("connections").Uint(1);
    json.Key("inflight").Uint(o_.inflight);
    json.Key("samples").Uint(recorded_);
    json.Key("warmup").Uint(o_.warmup);
    json.Key("lost").Uint(lost_);
    json.Key("rtt_us").BeginObject();
    json.Key("min").Number(us(histogram_.min()));
    json.Key("mean").Number(histogram_.mean() / 1000.0);
    json.Key("p50").Number(us(histogram_.Percentile(50)));
    json.Key("p90").Number(us(histogram_.Percentile(90)));
    json.Key("p99").Number(us(histogram_.Percentile(99)));
    json.Key("p999").Number(us(histogram_.Percentile(99.9)));
    json.Key("max").Number(us(histogram_.max()));
    json.EndObject();
    json.Key("duration_s").Number(duration_s);
    json.Key("messages_per_s").Number(duration_s > 0 ? n / duration_s : 0);
    json.Key("cpu_us_per_msg").Number(static_cast<double>(cpu.total_us()) / n);
    json.Key("kernel_entries_per_msg")
        .Number(static_cast<double>(c.kernel_entries()) / n);
    json.Key("counters").BeginObject();
    c.ForEach([&](const char* name, uint64_t v) { json.Key(name).Uint(v); });
    json.EndObject();
    json.Key("cpu").Int(o_.cpu);
    const ParticipantCounters& pc = dp_->core().counters();
    json.Key("rtps").BeginObject();
    json.Key("heartbeats_sent").Uint(pc.heartbeats_sent);
    json.Key("acknacks_sent").Uint(pc.acknacks_sent);
    json.Key("retransmits").Uint(pc.retransmits);
    json.Key("samples_lost").Uint(pc.samples_lost);
    json.Key("write_failures").Uint(write_failures_);
    json.EndObject();
    json.Key("cpu_user_us").Int(cpu.user_us);
    json.Key("cpu_system_us").Int(cpu.system_us);
    json.EndObject();
    std::fprintf(stderr,
                 "ringlab_dds_pingpong ping: %s %s %u B: p50 %.1f us p99 %.1f "
                 "us, %.2f kernel entries and %.2f cpu us per round trip\n",
                 b.name.c_str(), o_.reliable ? "reliable" : "best-effort",
                 o_.payload, us(histogram_.Percentile(50)),
                 us(histogram_.Percentile(99)), c.kernel_entries() / n,
                 cpu.total_us() / n);
    bench_program::WriteResult(o_.json_path, json.str());
    std::fflush(stdout);
  }

  const Options& o_;
  std::unique_ptr<DomainParticipant> dp_;
  std::unique_ptr<Topic<KeyedSeq>> ping_topic_, pong_topic_;
  EndpointQos wqos_, rqos_;
  std::unique_ptr<DataReader<KeyedSeq>> ping_reader_, pong_reader_;
  std::unique_ptr<DataWriter<KeyedSeq>> ping_writer_;
  absl::flat_hash_map<GuidPrefix, std::unique_ptr<DataWriter<KeyedSeq>>>
      pong_writers_;
  KeyedSeq sample_, ping_sample_;
  uint64_t pongs_sent_ = 0, pings_unanswered_ = 0;
  // ping state
  std::vector<Timestamp> sent_at_;
  uint32_t next_seq_ = 1;
  uint64_t answered_ = 0, recorded_ = 0, lost_ = 0, write_failures_ = 0;
  Timestamp last_scan_;
  Timestamp start_time_, end_time_;
  bench::CpuTime start_cpu_, end_cpu_;
  transport::LoopCounters start_counters_, end_counters_;
  bench::LatencyHistogram histogram_;
};

}  // namespace
}  // namespace ringlab::rtps

int main(int argc, char** argv) {
  using namespace ringlab::rtps;
  Options o;
  return bench_program::Main(
      argc, argv, "ringlab_dds_pingpong", kUsage,
      [&](int c, char** v, std::string* err) {
        return ParseArgs(c, v, &o, err);
      },
      [&] {
        PingPong pp(o);
        if (int rc = pp.Setup(); rc != bench_program::kExitOk) return rc;
        return o.role == "pong" ? pp.RunPong() : pp.RunPing();
      },
      o);
}
