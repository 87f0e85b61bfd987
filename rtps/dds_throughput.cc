// ringlab_dds_throughput: one DDS writer streams fixed-size samples to one
// reader as fast as the reliability protocol lets it; the reader measures
// MB/s, CPU per MB and kernel entries per sample. It is the throughput half
// of issue 11 ("64 KiB samples, reliable, one writer and one reader"),
// beside `ddsperf pub` / `ddsperf sub` (registry entry ddsperf_pubsub).
//
//   ringlab_dds_throughput pub --backend=uring-fixed --payload=65536 --cpu=0
//   ringlab_dds_throughput sub --backend=uring-fixed --payload=65536 --cpu=1
//       --warmup_s=1 --duration_s=5 --json=out.json
//
// Roles: `pub` (alias `server`) prints `READY <address>`, then writes
// KeyedSeq samples of --payload bytes (ddsperf's "size": 12 fixed bytes and
// the baggage) on topic "ringlab_throughput" as soon as a reader matched,
// KEEP_ALL with --window samples in flight (Write refuses when the history
// is full; acknowledgements free it), until SIGINT/SIGTERM. On the way out
// it prints one `SERVER_STATS {json}` line: CPU, samples written, kernel
// entries, and a 50 ms timeline the runner cuts to the reader's measured
// phase. `sub` (alias `client`) waits for the match, takes samples for
// --warmup_s, then measures --duration_s of samples and writes the ringlab
// bulk JSON (mode "bulk", direction "download": the server sent) to --json
// or a `RESULT {...}` line.
//
// LATENCY_BUDGET (issue 11): --latency_budget_us=N on both sides sets the
// writer's and the reader's budget (the reader's must be >= the writer's,
// §2.2.3.8's request-offered rule), and the writer then holds samples up to
// N µs to share a datagram. --rate=R (pub) writes R samples/s instead of as
// fast as the window allows, where the budget shows as latency. The sub
// reports datagrams received per sample and the write-to-take latency
// (`latency_us`, from the samples' source timestamps: one host only); the
// pub's SERVER_STATS its datagrams per sample and the core's
// batched_datagrams.
// Exit codes: 0 ok, 1 bad usage, 2 run failed (no match or no data in
// time), 3 the backend preset cannot run here.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

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
constexpr char kTopic[] = "ringlab_throughput";

struct Options : bench_program::CommonOptions {
  uint32_t payload = 65536;  // ddsperf "size": includes the 12 fixed bytes
  int32_t window = 32;       // pub: KEEP_ALL max_samples (in flight)
  // LATENCY_BUDGET (DDS 1.4 §2.2.3.8) of the writer and the reader (the
  // reader's must be >= the writer's to match): the writer holds samples
  // up to this long to put several into one datagram.
  int64_t latency_budget_us = 0;
  double rate_per_s = 0;  // pub: samples per second; 0 = as fast as it can
  double warmup_s = 1;
  double duration_s = 5;
  double timeout_s = 30;
};

const char* kUsage =
    "usage: ringlab_dds_throughput pub|sub [--backend=PRESET] [--domain=N]\n"
    "  [--interface=A.B.C.D|auto] [--reliability=reliable|best-effort]\n"
    "  [--payload=BYTES (>= 12, ddsperf size)] [--window=N (pub)]\n"
    "  [--latency_budget_us=US (both sides)] [--rate=SAMPLES_PER_S (pub)]\n"
    "  [--warmup_s=S] [--duration_s=S] [--timeout_s=S] (sub)\n"
    "  [--cpu=N] [--json=PATH (sub)]\n"
    "exit: 0 ok, 1 usage, 2 run failed, 3 backend unsupported here\n";

bool ParseArgs(int argc, char** argv, Options* o, std::string* err) {
  if (!bench_program::ParseRole(argc, argv, "pub", "sub",
                                "role must be pub or sub", &o->role, err)) {
    return false;
  }
  for (int i = 2; i < argc; ++i) {
    const bench_program::Flag f(argv[i]);
    absl::string_view v;
    bool ok = true;
    if (bench_program::FlagResult r = bench_program::ParseCommonFlag(f, o);
        r != bench_program::FlagResult::kNotCommon) {
      ok = r == bench_program::FlagResult::kOk;
    } else if (f.Value("--payload=", &v)) {
      ok = absl::SimpleAtoi(v, &o->payload) && o->payload >= 12 &&
           o->payload <= (16u << 20);
    } else if (f.Value("--window=", &v)) {
      ok = absl::SimpleAtoi(v, &o->window) && o->window >= 1 &&
           o->window <= 100000;
    } else if (f.Value("--latency_budget_us=", &v)) {
      ok = absl::SimpleAtoi(v, &o->latency_budget_us) &&
           o->latency_budget_us >= 0 && o->latency_budget_us <= 10'000'000;
    } else if (f.Value("--rate=", &v)) {
      ok = absl::SimpleAtod(v, &o->rate_per_s) && o->rate_per_s >= 0 &&
           o->rate_per_s <= 1e8;
    } else if (f.Value("--warmup_s=", &v)) {
      ok = absl::SimpleAtod(v, &o->warmup_s) && o->warmup_s >= 0;
    } else if (f.Value("--duration_s=", &v)) {
      ok = absl::SimpleAtod(v, &o->duration_s) && o->duration_s > 0;
    } else if (f.Value("--timeout_s=", &v)) {
      ok = absl::SimpleAtod(v, &o->timeout_s) && o->timeout_s > 0;
    } else {
      *err = absl::StrCat("unknown flag ", f.arg());
      return false;
    }
    if (!ok) {
      *err = absl::StrCat("bad value in ", f.arg());
      return false;
    }
  }
  return true;
}

Duration Seconds(double s) { return Duration(static_cast<int64_t>(s * 1e9)); }

class Throughput {
 public:
  explicit Throughput(const Options& o) : o_(o) {}

  int Setup() {
    DomainParticipantOptions dpo =
        bench_program::ParticipantOptions(o_, "ringlab_dds_throughput");
    // Room for a GSO train of DATA_FRAGs (or one whole small sample) and
    // for the windows of fragments in flight.
    uint32_t need = std::max<uint32_t>(o_.payload, 16384) + 1024;
    dpo.buffer_size = std::min<uint32_t>((need + 1023) & ~1023u, 66560);
    dpo.buffer_count =
        std::clamp<uint32_t>((16u << 20) / dpo.buffer_size, 64, 4096);
    if (int rc = bench_program::CreateParticipant("ringlab_dds_throughput", dpo,
                                                  &dp_);
        rc != kExitOk) {
      return rc;
    }
    topic_ = std::make_unique<Topic<KeyedSeq>>(kTopic);
    EndpointQos q = o_.role == "pub" ? EndpointQos::WriterDefaults()
                                     : EndpointQos::ReaderDefaults();
    q.reliability =
        o_.reliable ? ReliabilityKind::kReliable : ReliabilityKind::kBestEffort;
    q.history = HistoryKind::kKeepAll;
    q.latency_budget_ns = o_.latency_budget_us * 1000;
    if (o_.role == "pub") {
      q.max_samples = o_.window;
      auto w = DataWriter<KeyedSeq>::Create(*dp_, *topic_, q);
      if (!w.ok()) {
        std::fprintf(stderr, "ringlab_dds_throughput: writer: %s\n",
                     std::string(w.status().message()).c_str());
        return kExitRunFailed;
      }
      writer_ = std::move(*w);
    } else {
      auto r = DataReader<KeyedSeq>::Create(*dp_, *topic_, q);
      if (!r.ok()) {
        std::fprintf(stderr, "ringlab_dds_throughput: reader: %s\n",
                     std::string(r.status().message()).c_str());
        return kExitRunFailed;
      }
      reader_ = std::move(*r);
    }
    return kExitOk;
  }

  // ---- pub ----------------------------------------------------------------
  int RunPub() {
    Endpoint shown = dp_->core().config().default_unicast[0].ToEndpoint();
    std::printf("READY %s\n", shown.ToString().c_str());
    std::fflush(stdout);
    const bench::CpuTime cpu0 = bench::CpuTime::Now();
    const transport::LoopCounters k0 = dp_->loop().counters();
    timeline_.reserve(kMaxTimeline);
    auto sample = [&](bool force) {
      Timestamp now = MonotonicNow();
      if (!force && now < next_sample_) return;
      next_sample_ = now + std::chrono::milliseconds(kTimelineMs);
      if (timeline_.size() == kMaxTimeline) return;  // ~100 s covered
      timeline_.push_back({now.nanos(),
                           (bench::CpuTime::Now() - cpu0).total_us(), written_,
                           dp_->loop().counters().Delta(k0).kernel_entries(),
                           bench::ResidentSetKib(), writer_->matched()});
    };
    sample(true);
    KeyedSeq s{0, 0, std::vector<uint8_t>(o_.payload - 12, 0x5a)};
    const bool busy = dp_->loop().backend().flags.busy_poll;
    const Duration idle_wait =
        busy ? Duration(0) : Duration(std::chrono::milliseconds(1));
    const bool paced = o_.rate_per_s > 0;
    const Duration period = paced ? Seconds(1.0 / o_.rate_per_s) : Duration(0);
    Timestamp next_write = Timestamp::Never();
    while (!StopRequested()) {
      Duration wait = idle_wait;
      if (writer_->matched() > 0) {
        if (!paced) {
          // Fill the window; a full KEEP_ALL history refuses the next one.
          for (int i = 0; i < o_.window && WriteOne(s); ++i) {
          }
          // Best effort: nothing acknowledges, so a refusal means samples
          // waiting for send completions, which come without a wake-up;
          // sleeping 1 ms there capped epoll at 32 samples per ms.
          if (!o_.reliable) wait = Duration(0);
        } else {
          // Fixed rate: the samples due by now, at most a window per pass
          // (a refused one stays due). After a stall of more than 100 ms
          // the schedule restarts instead of bursting to catch up.
          Timestamp now = MonotonicNow();
          if (next_write.is_never() ||
              now - next_write > std::chrono::milliseconds(100)) {
            next_write = now;
          }
          for (int i = 0; i < o_.window && next_write <= now; ++i) {
            if (!WriteOne(s)) break;
            next_write = next_write + period;
          }
          if (!busy) {
            wait = std::clamp<Duration>(next_write - MonotonicNow(),
                                        Duration(0), idle_wait);
          }
        }
      }
      dp_->RunOnce(wait);
      sample(false);
    }
    sample(true);
    const bench::CpuTime cpu = bench::CpuTime::Now() - cpu0;
    const transport::LoopCounters k = dp_->loop().counters().Delta(k0);
    bench::JsonWriter json;
    json.BeginObject();
    json.Key("schema").String("ringlab.dds_throughput.server/1");
    json.Key("program").String("ringlab_dds_throughput");
    json.Key("role").String("pub");
    json.Key("backend").String(dp_->loop().backend().name);
    json.Key("payload_bytes").Uint(o_.payload);
    json.Key("latency_budget_us").Int(o_.latency_budget_us);
    json.Key("rate_per_s").Number(o_.rate_per_s);
    json.Key("cpu_us").Int(cpu.total_us());
    json.Key("messages").Uint(written_);
    json.Key("kernel_entries").Uint(k.kernel_entries());
    json.Key("datagrams_sent").Uint(k.datagrams_sent);
    json.Key("datagrams_per_sample")
        .Number(written_ > 0 ? static_cast<double>(k.datagrams_sent) / written_
                             : 0.0);
    json.Key("write_errors").Uint(write_errors_);
    const ParticipantCounters& pc = dp_->core().counters();
    json.Key("rtps").BeginObject();
    json.Key("datagrams_sent").Uint(pc.datagrams_sent);
    json.Key("batched_datagrams").Uint(pc.batched_datagrams);
    json.Key("fragments_sent").Uint(pc.fragments_sent);
    json.Key("fragments_retransmitted").Uint(pc.fragments_retransmitted);
    json.Key("retransmits").Uint(pc.retransmits);
    json.Key("heartbeats_sent").Uint(pc.heartbeats_sent);
    json.Key("acknacks_received").Uint(pc.acknacks_received);
    json.Key("sample_bytes_copied").Uint(pc.sample_bytes_copied);
    json.EndObject();
    json.Key("timeline").BeginObject();
    json.Key("interval_ms").Int(kTimelineMs);
    auto column = [&](const char* name, auto field) {
      json.Key(name).BeginArray();
      for (const Tick& t : timeline_) json.Int(static_cast<int64_t>(field(t)));
      json.EndArray();
    };
    column("t_ns", [](const Tick& t) { return t.t_ns; });
    column("cpu_us", [](const Tick& t) { return t.cpu_us; });
    column("messages", [](const Tick& t) { return t.messages; });
    column("kernel_entries", [](const Tick& t) { return t.kernel_entries; });
    column("rss_kib", [](const Tick& t) { return t.rss_kib; });
    column("connections", [](const Tick& t) { return t.connections; });
    json.EndObject();
    json.EndObject();
    std::printf("SERVER_STATS %s\n", json.str().c_str());
    std::fflush(stdout);
    return kExitOk;
  }

  // ---- sub ----------------------------------------------------------------
  int RunSub() {
    const Timestamp deadline = MonotonicNow() + Seconds(o_.timeout_s);
    const bool busy = dp_->loop().backend().flags.busy_poll;
    const Duration wait = busy ? Duration(0) : std::chrono::milliseconds(5);
    while (reader_->matched() == 0) {
      if (MonotonicNow() > deadline || StopRequested()) {
        std::fprintf(stderr, "ringlab_dds_throughput sub: no writer matched\n");
        return kExitRunFailed;
      }
      dp_->RunOnce(wait);
    }
    KeyedSeq got;
    SampleInfo info;
    uint64_t taken = 0, bytes = 0, last_seq = 0, gaps = 0;
    bool measuring = false;
    auto drain = [&] {
      while (reader_->Take(&got, &info)) {
        ++taken;
        // One-way latency, write to take: the writer's source timestamp is
        // CLOCK_REALTIME, so this holds on one host (loopback) only.
        if (measuring && info.source_time_ns != kNoSourceTimestamp) {
          latency_.Record(static_cast<uint64_t>(
              std::max<int64_t>(0, WallClockNanos() - info.source_time_ns)));
        }
        bytes += 12 + got.baggage.size();
        if (last_seq != 0 && got.seq != last_seq + 1) ++gaps;
        last_seq = got.seq;
      }
    };
    // Warm-up: from the first sample, --warmup_s.
    while (taken == 0) {
      if (MonotonicNow() > deadline || StopRequested()) {
        std::fprintf(stderr, "ringlab_dds_throughput sub: no data\n");
        return kExitRunFailed;
      }
      dp_->RunOnce(wait);
      drain();
    }
    const Timestamp warm_end = MonotonicNow() + Seconds(o_.warmup_s);
    while (MonotonicNow() < warm_end && !StopRequested()) {
      dp_->RunOnce(wait);
      drain();
    }
    const ParticipantCounters& pc = dp_->core().counters();
    const uint64_t taken0 = taken, bytes0 = bytes, acknacks0 = pc.acknacks_sent;
    const Timestamp t0 = MonotonicNow();
    const bench::CpuTime cpu0 = bench::CpuTime::Now();
    const transport::LoopCounters k0 = dp_->loop().counters();
    const Timestamp end = t0 + Seconds(o_.duration_s);
    measuring = true;
    while (MonotonicNow() < end && !StopRequested()) {
      dp_->RunOnce(wait);
      drain();
    }
    measuring = false;
    const Timestamp t1 = MonotonicNow();
    const bench::CpuTime cpu = bench::CpuTime::Now() - cpu0;
    const transport::LoopCounters k = dp_->loop().counters().Delta(k0);
    const uint64_t n = taken - taken0, nbytes = bytes - bytes0;
    if (n == 0) {
      std::fprintf(stderr, "ringlab_dds_throughput sub: no samples measured\n");
      return kExitRunFailed;
    }
    const double secs = (t1 - t0).count() / 1e9;
    const double mb = nbytes / 1e6;
    bench::JsonWriter json;
    json.BeginObject();
    json.Key("schema").String("ringlab.dds_throughput/1");
    json.Key("program").String("ringlab_dds_throughput");
    json.Key("protocol").String("dds");
    const transport::BackendInfo& b = dp_->loop().backend();
    json.Key("backend").String(b.name);
    json.Key("backend_requested").String(b.requested);
    json.Key("backend_flags").String(b.flags.ToString());
    json.Key("backend_note").String(b.chosen_because);
    json.Key("mode").String("bulk");
    json.Key("reliability").String(o_.reliable ? "reliable" : "best-effort");
    json.Key("payload_bytes").Uint(o_.payload);
    json.Key("latency_budget_us").Int(o_.latency_budget_us);
    json.Key("connections").Uint(1);
    json.Key("samples").Uint(n);
    json.Key("warmup").Uint(taken0);
    json.Key("lost").Uint(gaps);
    json.Key("rtt_us").BeginObject();
    for (const char* key :
         {"min", "mean", "p50", "p90", "p99", "p999", "max"}) {
      json.Key(key).Null();
    }
    json.EndObject();
    json.Key("messages_per_s").Number(n / secs);
    json.Key("cpu_us_per_msg").Number(static_cast<double>(cpu.total_us()) / n);
    json.Key("kernel_entries_per_msg")
        .Number(static_cast<double>(k.kernel_entries()) / n);
    // Every datagram the reader's participant received (data, heartbeats,
    // discovery) per sample: what batching shrinks.
    json.Key("datagrams_per_sample")
        .Number(static_cast<double>(k.datagrams_received) / n);
    json.Key("acknacks_per_sample")
        .Number(static_cast<double>(pc.acknacks_sent - acknacks0) / n);
    // Write to take, one way, same host (source timestamps): what the
    // budget costs. rtt_us stays null: there is no round trip.
    json.Key("latency_us").BeginObject();
    auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    json.Key("min").Number(us(latency_.min()));
    json.Key("mean").Number(latency_.mean() / 1000.0);
    json.Key("p50").Number(us(latency_.Percentile(50)));
    json.Key("p90").Number(us(latency_.Percentile(90)));
    json.Key("p99").Number(us(latency_.Percentile(99)));
    json.Key("p999").Number(us(latency_.Percentile(99.9)));
    json.Key("max").Number(us(latency_.max()));
    json.EndObject();
    json.Key("total_messages").Uint(taken);
    json.Key("measured_start_ns").Int(t0.nanos());
    json.Key("measured_end_ns").Int(t1.nanos());
    json.Key("bulk").BeginObject();
    json.Key("direction").String("download");
    json.Key("bytes").Uint(nbytes);
    json.Key("chunk_bytes").Uint(o_.payload);
    json.Key("completion_s").Number(secs);
    json.Key("goodput_bytes_per_s").Number(nbytes / secs);
    json.Key("receive_span_s").Number(secs);
    // The reader cannot see the writer's resends; the server's own
    // counters are in its SERVER_STATS.
    json.Key("retransmission_ratio").Null();
    json.Key("spurious_retransmissions").Null();
    json.Key("client_cpu_us_per_mb").Number(cpu.total_us() / mb);
    json.Key("client_kernel_entries_per_mb").Number(k.kernel_entries() / mb);
    json.EndObject();
    json.Key("counters").BeginObject();
    k.ForEach([&](const char* name, uint64_t v) { json.Key(name).Uint(v); });
    json.EndObject();
    json.Key("rtps").BeginObject();
    json.Key("samples_reassembled").Uint(pc.samples_reassembled);
    json.Key("acknacks_sent").Uint(pc.acknacks_sent);
    json.Key("nack_frags_sent").Uint(pc.nack_frags_sent);
    json.Key("sample_bytes_copied").Uint(pc.sample_bytes_copied);
    json.EndObject();
    json.Key("cpu").Int(o_.cpu);
    json.EndObject();
    std::fprintf(stderr,
                 "ringlab_dds_throughput sub: %s %u B: %.1f MB/s, %.0f cpu "
                 "us/MB, %.2f kernel entries/sample, %.3f datagrams/sample, "
                 "latency p50 %.0f us, %llu samples in %.2f s\n",
                 b.name.c_str(), o_.payload, mb / secs, cpu.total_us() / mb,
                 static_cast<double>(k.kernel_entries()) / n,
                 static_cast<double>(k.datagrams_received) / n,
                 us(latency_.Percentile(50)),
                 static_cast<unsigned long long>(n), secs);
    if (!bench_program::WriteResult(o_.json_path, json.str())) {
      return kExitRunFailed;
    }
    std::fflush(stdout);
    return kExitOk;
  }

 private:
  // Writes the next sample; false when the history refuses it (full
  // KEEP_ALL window: acknowledgements free it) or the write failed.
  bool WriteOne(KeyedSeq& s) {
    s.seq = static_cast<uint32_t>(written_ + 1);
    absl::Status st = writer_->Write(s);
    if (!st.ok()) {
      if (!absl::IsResourceExhausted(st)) ++write_errors_;
      return false;
    }
    ++written_;
    return true;
  }

  struct Tick {
    int64_t t_ns;
    int64_t cpu_us;
    uint64_t messages;
    uint64_t kernel_entries;
    uint64_t rss_kib;
    uint64_t connections;  // matched readers
  };
  static constexpr size_t kMaxTimeline = 2048;
  static constexpr int kTimelineMs = 50;

  const Options& o_;
  std::unique_ptr<DomainParticipant> dp_;
  std::unique_ptr<Topic<KeyedSeq>> topic_;
  std::unique_ptr<DataWriter<KeyedSeq>> writer_;
  std::unique_ptr<DataReader<KeyedSeq>> reader_;
  uint64_t written_ = 0, write_errors_ = 0;
  std::vector<Tick> timeline_;
  Timestamp next_sample_;
  // sub: write-to-take latency of the measured samples (ns).
  bench::LatencyHistogram latency_;
};

}  // namespace
}  // namespace ringlab::rtps

int main(int argc, char** argv) {
  using namespace ringlab::rtps;
  Options o;
  return bench_program::Main(
      argc, argv, "ringlab_dds_throughput", kUsage,
      [&](int c, char** v, std::string* err) {
        return ParseArgs(c, v, &o, err);
      },
      [&] {
        Throughput t(o);
        if (int rc = t.Setup(); rc != bench_program::kExitOk) return rc;
        return o.role == "pub" ? t.RunPub() : t.RunSub();
      },
      o);
}
