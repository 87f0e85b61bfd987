// ringlab_mqtt_bench: drives any MQTT broker (ours or mosquitto) with our
// client (mqtt/client_driver.h) on one transport Loop, and prints a ringlab
// result (the runner's `ringlab_json` parser reads it).
//
// The experiment runner's form (experiments/README.md, "the MQTT bench
// JSON"): `ringlab_mqtt_bench client --mode=pingpong|rate|burst
// [--pattern=fanin|fanout]`: pingpong is rtt, rate is a pattern at --rate,
// burst a pattern at saturation with --inflight; --max_duration_s ends the
// measured phase early. The direct form names the pattern in --mode.
//
// Modes (every message carries [seq u64][intended send time ns i64]
// [publisher u32] in its first 24 bytes; latency is publish -> delivery,
// client -> broker -> client, both ends in this process and on one clock):
//   rtt     one publisher and one subscriber connection, closed loop: the
//           next message goes when the previous one arrived; --samples
//           round trips are recorded after --warmup.
//   fanin   --connections publishers, one subscriber. --rate=R: R messages/s
//           in total, open loop, each timed from its intended send time
//           (coordinated omission corrected); --rate=0: saturation, each
//           publisher keeps --inflight messages undelivered.
//   fanout  one publisher, --connections subscribers of one topic. --rate
//           as above; saturation keeps --inflight messages not yet
//           delivered to every subscriber.
//   idle    --connections connected clients that only keep alive, for
//           --hold_s; with --broker_pid the broker's RSS before and after
//           is reported per connection.
//
// Output: "RESULT {json}" (schema ringlab.mqtt_bench/1) and --json=FILE:
// messages_per_s = distinct publishes delivered (to every subscriber) per
// second, ack_us = publish -> PUBACK/PUBCOMP percentiles (QoS 1/2),
// deliveries_per_s = every subscriber's copy, samples = deliveries measured,
// warmup = publishes before the measured phase, total_messages = deliveries in
// the whole run, measured_start_ns/measured_end_ns on CLOCK_MONOTONIC (the
// runner cuts the broker's timeline with them); cpu_us_per_msg and
// kernel_entries_per_msg are this client's, per delivery. Exit codes: 0 ok, 1
// run failed, 2 usage, 3 backend unsupported.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "bench/histogram.h"
#include "bench/json_writer.h"
#include "bench/process_stats.h"
#include "mqtt/client_driver.h"
#include "mqtt/programs/program_support.h"
#include "transport/loop.h"

namespace ringlab::mqtt::programs {
namespace {

constexpr size_t kHeaderBytes = 24;

struct Config {
  std::string server = "127.0.0.1:1883";
  std::string mode = "rtt";
  std::string pattern;      // runner form: fanin | fanout
  std::string runner_mode;  // pingpong | rate | burst when given so
  std::string backend = "auto";
  uint32_t qos = 0;
  uint32_t version = 5;
  uint32_t payload = 64;
  uint64_t samples = 100000;
  uint64_t warmup = 5000;
  uint32_t connections = 1;
  double rate = 0;
  uint32_t inflight = 16;
  double duration_s = 0;
  double timeout_s = 120;
  double hold_s = 5;
  double drain_s = 3;
  int broker_pid = 0;
  int cpu = -1;
  uint32_t keep_alive_s = 60;
  // > 0: persistent sessions (Clean Start 0 with this expiry), so a broker
  // with a durable store keeps every QoS 1/2 delivery.
  uint32_t session_expiry_s = 0;
  std::string json_path;
  // TLS (ClientDriverOptions::tls): every connection speaks TLS.
  bool tls = false;
  std::string cafile;
  std::string cert;
  std::string key;
  std::string tls_server_name;
  bool insecure = false;
  bool ktls = false;
  std::string tls_version;  // "" (1.2..1.3), "1.2" or "1.3"
};

void PutU64(std::byte* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint64_t GetU64(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

uint64_t ReadRss(int pid) {
  if (pid <= 0) return 0;
  std::FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/statm").c_str(), "r");
  if (f == nullptr) return 0;
  unsigned long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  return n == 2 ? uint64_t(resident) * uint64_t(::sysconf(_SC_PAGESIZE)) : 0;
}

class Bench : public ClientDriver::Listener {
 public:
  Bench(const Config& cfg, transport::Loop* loop)
      : cfg_(cfg),
        loop_(loop),
        payload_(std::max<size_t>(cfg.payload, kHeaderBytes)) {}

  int Run();
  void OnClientEvent(ClientDriver& c, const ClientEvent& e) override;

 private:
  enum class Phase { kConnecting, kSubscribing, kRunning, kDraining, kDone };

  ClientDriver* Add(const std::string& id) {
    ClientDriverOptions o;
    o.server = server_;
    o.client.version = cfg_.version == 311 ? Version::k311 : Version::k5;
    o.client.client_id = id;
    o.client.keep_alive_s = uint16_t(cfg_.keep_alive_s);
    o.client.max_inflight = 65535;
    if (cfg_.session_expiry_s > 0) {
      o.client.clean_start = false;
      o.client.session_expiry_s = cfg_.session_expiry_s;
    }
    o.tls = tls_;
    o.ktls = cfg_.ktls;
    absl::StatusOr<std::unique_ptr<ClientDriver>> d =
        ClientDriver::Create(loop_, o, this);
    if (!d.ok()) return nullptr;
    clients_.push_back(std::move(*d));
    return clients_.back().get();
  }
  bool WaitFor(const std::function<bool()>& done, double seconds) {
    const Timestamp deadline =
        MonotonicNow() + Duration(int64_t(seconds * 1e9));
    while (!done() && !failed_) {
      if (MonotonicNow() > deadline || stop_requested()) return false;
      loop_->RunOnce(std::chrono::milliseconds(1));
    }
    return !failed_;
  }
  void Publish(uint32_t publisher, int64_t intended_ns);
  void OnDelivery(const ClientEvent& e);
  void OnAck(const ClientDriver& c, const ClientEvent& e);
  void PaceRate(Timestamp now);
  void StartMeasuring();
  bool Finished() const {
    if (measured_ >= cfg_.samples) return true;
    if (cfg_.duration_s > 0 && measuring_ &&
        (MonotonicNow() - measure_start_).count() / 1e9 >= cfg_.duration_s) {
      return true;
    }
    return false;
  }
  int Report();

  Config cfg_;
  transport::Loop* loop_;
  Endpoint server_;
  std::shared_ptr<TlsContext> tls_;
  std::vector<std::unique_ptr<ClientDriver>> clients_;
  std::vector<ClientDriver*> pubs_;
  std::vector<ClientDriver*> subs_;
  std::vector<uint32_t> outstanding_;  // per publisher (saturation)
  // fanout saturation: deliveries still due for the message in each slot
  std::vector<uint32_t> remaining_;
  std::vector<std::byte> payload_;
  std::string topic_prefix_;
  Phase phase_ = Phase::kConnecting;
  size_t connected_ = 0;
  size_t subscribed_ = 0;
  bool failed_ = false;
  std::string failure_;
  uint64_t next_seq_ = 0;
  uint64_t received_ = 0;  // every delivery
  uint64_t measured_ = 0;  // deliveries recorded
  uint64_t publish_errors_ = 0;
  uint64_t stalls_ = 0;
  bool measuring_ = false;
  Timestamp measure_start_;
  Timestamp measure_end_;
  bench::CpuTime cpu_start_;
  transport::LoopCounters counters_start_;
  bench::LatencyHistogram histogram_;
  // QoS 1/2: publish -> PUBACK/PUBCOMP, per publisher in publish order (a
  // server acknowledges in the order it received, MQTT 5.0 §4.6). An
  // entry the ring had no room for is not timed (acks_untimed_).
  struct AckRing {
    std::vector<std::pair<uint16_t, int64_t>> sent;  // packet id, sent ns
    size_t head = 0;
    size_t count = 0;
  };
  std::vector<AckRing> acks_;
  absl::flat_hash_map<const ClientDriver*, uint32_t> publisher_of_;
  bench::LatencyHistogram ack_histogram_;
  uint64_t acks_untimed_ = 0;
  // Rate pacing.
  Timestamp rate_start_;
  uint64_t rate_k_ = 0;
  uint64_t late_ = 0;
  uint64_t pacing_timer_ = 0;
  Timestamp last_progress_;
  uint64_t rss_before_ = 0;
  uint64_t rss_after_ = 0;
};

void Bench::Publish(uint32_t publisher, int64_t intended_ns) {
  const uint64_t seq = next_seq_++;
  PutU64(payload_.data(), seq);
  PutU64(payload_.data() + 8, uint64_t(intended_ns));
  std::memcpy(payload_.data() + 16, &publisher, 4);
  const std::string topic = cfg_.mode == "fanin"
                                ? absl::StrCat(topic_prefix_, "/p", publisher)
                                : topic_prefix_ + "/t";
  ClientDriver* pub = pubs_[publisher];
  absl::StatusOr<uint16_t> id =
      pub->Publish(topic, payload_, {.qos = uint8_t(cfg_.qos)});
  if (!id.ok()) {
    ++publish_errors_;
    return;
  }
  if (cfg_.qos > 0 && publisher < acks_.size()) {
    AckRing& r = acks_[publisher];
    if (r.count < r.sent.size()) {
      r.sent[(r.head + r.count) % r.sent.size()] = {*id, intended_ns};
      ++r.count;
    }
  }
  if (cfg_.rate == 0 && !outstanding_.empty()) ++outstanding_[publisher];
  if (cfg_.mode == "fanout" && cfg_.rate == 0) {
    remaining_[seq % remaining_.size()] = uint32_t(subs_.size());
  }
}

void Bench::StartMeasuring() {
  measuring_ = true;
  measure_start_ = MonotonicNow();
  cpu_start_ = bench::CpuTime::Now();
  counters_start_ = loop_->counters();
}

void Bench::OnDelivery(const ClientEvent& e) {
  const std::span<const std::byte> p = e.message.payload;
  if (p.size() < kHeaderBytes) return;
  const uint64_t seq = GetU64(p.data());
  const int64_t intended = int64_t(GetU64(p.data() + 8));
  uint32_t publisher;
  std::memcpy(&publisher, p.data() + 16, 4);
  const Timestamp now = MonotonicNow();
  last_progress_ = now;
  ++received_;
  // The warm-up is counted in publishes: every subscriber's copy of
  // `warmup` messages.
  if (!measuring_ && received_ > cfg_.warmup * subs_.size()) StartMeasuring();
  if (measuring_ && measured_ < cfg_.samples) {
    histogram_.Record(uint64_t(std::max<int64_t>(0, now.nanos() - intended)));
    ++measured_;
    if (Finished()) {
      measure_end_ = now;
      phase_ = Phase::kDraining;
      return;
    }
  }
  if (cfg_.rate > 0) return;  // open loop: the pacer sends
  if (cfg_.mode == "fanout") {
    uint32_t& left = remaining_[seq % remaining_.size()];
    if (left > 0 && --left == 0) Publish(0, now.nanos());
    return;
  }
  if (publisher < outstanding_.size()) {
    if (outstanding_[publisher] > 0) --outstanding_[publisher];
    Publish(publisher, now.nanos());
  }
}

void Bench::OnAck(const ClientDriver& c, const ClientEvent& e) {
  auto it = publisher_of_.find(&c);
  if (it == publisher_of_.end()) return;
  AckRing& r = acks_[it->second];
  if (r.count == 0 || r.sent[r.head].first != e.packet_id) {
    ++acks_untimed_;  // its publish found the ring full
    return;
  }
  const int64_t sent_ns = r.sent[r.head].second;
  r.head = (r.head + 1) % r.sent.size();
  --r.count;
  if (measuring_ && phase_ == Phase::kRunning) {
    ack_histogram_.Record(
        uint64_t(std::max<int64_t>(0, MonotonicNow().nanos() - sent_ns)));
  }
}

void Bench::OnClientEvent(ClientDriver& c, const ClientEvent& e) {
  switch (e.kind) {
    case ClientEvent::Kind::kConnected:
      ++connected_;
      break;
    case ClientEvent::Kind::kConnectFailed:
    case ClientEvent::Kind::kClosed:
      if (phase_ != Phase::kDone) {
        failed_ = true;
        failure_ =
            absl::StrCat("connection ", c.core().client_id(),
                         " ended: ", std::string(ReasonCodeName(e.reason)));
      }
      break;
    case ClientEvent::Kind::kSubscribed:
      ++subscribed_;
      if (!e.reason_codes.empty() && e.reason_codes[0] >= 0x80) {
        failed_ = true;
        failure_ = "subscription refused";
      }
      break;
    case ClientEvent::Kind::kPublished:
      OnAck(c, e);
      break;
    case ClientEvent::Kind::kMessage:
      if (phase_ == Phase::kRunning) {
        OnDelivery(e);
      } else if (phase_ == Phase::kDraining) {
        ++received_;  // in flight when recording ended: not lost
      }
      break;
    default:
      break;
  }
}

void Bench::PaceRate(Timestamp now) {
  // Open loop: message k is due at start + k / rate, whatever happened to
  // earlier ones; its latency counts from then.
  const double per_ns = cfg_.rate / 1e9;
  while (phase_ == Phase::kRunning) {
    const int64_t due = rate_start_.nanos() + int64_t(double(rate_k_) / per_ns);
    if (due > now.nanos()) {
      const Timestamp next = std::max(Timestamp::FromNanos(due),
                                      now + std::chrono::microseconds(20));
      pacing_timer_ = loop_->AddTimer(next, Duration(0),
                                      [this](Timestamp t) { PaceRate(t); });
      return;
    }
    if (now.nanos() - due > 1'000'000) ++late_;
    Publish(uint32_t(rate_k_ % pubs_.size()), due);
    ++rate_k_;
  }
}

int Bench::Run() {
  absl::StatusOr<Endpoint> server = Endpoint::Parse(cfg_.server);
  if (!server.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_bench: --server: %s\n",
                 std::string(server.status().message()).c_str());
    return kExitUsage;
  }
  server_ = *server;
  if (cfg_.tls) {
    TlsConfig tc;
    tc.role = TlsRole::kClient;
    tc.ca_file = cfg_.cafile;
    tc.cert_file = cfg_.cert;
    tc.key_file = cfg_.key;
    tc.verify_peer = !cfg_.insecure;
    tc.server_name = cfg_.tls_server_name.empty()
                         ? cfg_.server.substr(0, cfg_.server.rfind(':'))
                         : cfg_.tls_server_name;
    tc.ktls = cfg_.ktls;
    if (!cfg_.tls_version.empty()) {
      tc.min_version = tc.max_version = cfg_.tls_version;
    }
    absl::StatusOr<std::shared_ptr<TlsContext>> ctx = TlsContext::Create(tc);
    if (!ctx.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_bench: %s\n",
                   std::string(ctx.status().message()).c_str());
      return kExitUsage;
    }
    tls_ = *ctx;
  }
  const std::string run_id = absl::StrCat(::getpid());
  topic_prefix_ = absl::StrCat("ringlab/bench/", run_id);

  size_t n_pubs = 1, n_subs = 1;
  if (cfg_.mode == "fanin") n_pubs = cfg_.connections;
  if (cfg_.mode == "fanout") n_subs = cfg_.connections;
  if (cfg_.mode == "idle") {
    n_pubs = 0;
    n_subs = cfg_.connections;
  }
  rss_before_ = ReadRss(cfg_.broker_pid);
  for (size_t i = 0; i < n_subs; ++i) {
    ClientDriver* d = Add(absl::StrCat("rb-s", i, "-", run_id));
    if (d == nullptr) return kExitRunFailed;
    subs_.push_back(d);
  }
  for (size_t i = 0; i < n_pubs; ++i) {
    ClientDriver* d = Add(absl::StrCat("rb-p", i, "-", run_id));
    if (d == nullptr) return kExitRunFailed;
    pubs_.push_back(d);
  }
  // Connect in batches so a listen backlog is never the bottleneck.
  for (size_t i = 0; i < clients_.size(); ++i) {
    if (absl::Status s = clients_[i]->Connect(); !s.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_bench: connect: %s\n",
                   s.ToString().c_str());
      return kExitRunFailed;
    }
    if (i % 256 == 255) {
      WaitFor([&] { return connected_ + 64 >= i; }, cfg_.timeout_s);
    }
  }
  if (!WaitFor([&] { return connected_ == clients_.size(); }, cfg_.timeout_s)) {
    std::fprintf(stderr, "ringlab_mqtt_bench: %zu of %zu connected: %s\n",
                 connected_, clients_.size(), failure_.c_str());
    return kExitRunFailed;
  }
  if (cfg_.mode == "idle") {
    const Timestamp until =
        MonotonicNow() + Duration(int64_t(cfg_.hold_s * 1e9));
    WaitFor([&] { return MonotonicNow() >= until; }, cfg_.hold_s + 5);
    rss_after_ = ReadRss(cfg_.broker_pid);
    measure_start_ = measure_end_ = MonotonicNow();
    phase_ = Phase::kDone;
    return Report();
  }
  phase_ = Phase::kSubscribing;
  const std::string filter =
      cfg_.mode == "fanin" ? topic_prefix_ + "/#" : topic_prefix_ + "/t";
  for (ClientDriver* s : subs_) {
    if (!s->Subscribe(filter, {.max_qos = uint8_t(cfg_.qos)}).ok()) {
      return kExitRunFailed;
    }
  }
  if (!WaitFor([&] { return subscribed_ == subs_.size(); }, cfg_.timeout_s)) {
    std::fprintf(stderr, "ringlab_mqtt_bench: subscriptions: %s\n",
                 failure_.c_str());
    return kExitRunFailed;
  }

  if (cfg_.qos > 0) {
    // Bounded however many publishers: 64 to 4096 outstanding each.
    const size_t ring =
        std::clamp<size_t>(65536 / std::max<size_t>(pubs_.size(), 1), 64, 4096);
    acks_.resize(pubs_.size());
    for (uint32_t i = 0; i < pubs_.size(); ++i) {
      acks_[i].sent.resize(ring);
      publisher_of_[pubs_[i]] = i;
    }
  }
  phase_ = Phase::kRunning;
  last_progress_ = MonotonicNow();
  if (cfg_.rate > 0) {
    rate_start_ = MonotonicNow();
    PaceRate(rate_start_);
  } else if (cfg_.mode == "rtt") {
    outstanding_.assign(1, 0);
    Publish(0, MonotonicNow().nanos());
  } else if (cfg_.mode == "fanin") {
    outstanding_.assign(pubs_.size(), 0);
    for (uint32_t p = 0; p < pubs_.size(); ++p) {
      for (uint32_t k = 0; k < cfg_.inflight; ++k) {
        Publish(p, MonotonicNow().nanos());
      }
    }
  } else {
    remaining_.assign(std::max<uint32_t>(cfg_.inflight, 1) * 2, 0);
    for (uint32_t k = 0; k < cfg_.inflight; ++k) {
      Publish(0, MonotonicNow().nanos());
    }
  }
  const Timestamp deadline =
      MonotonicNow() + Duration(int64_t(cfg_.timeout_s * 1e9));
  while (phase_ == Phase::kRunning && !failed_ && !stop_requested()) {
    loop_->RunOnce(std::chrono::milliseconds(1));
    const Timestamp now = MonotonicNow();
    if (phase_ == Phase::kRunning && Finished()) {
      measure_end_ = now;
      phase_ = Phase::kDraining;
      break;
    }
    if (now > deadline) {
      failed_ = true;
      failure_ = "timed out";
      break;
    }
    // A QoS 0 message the broker dropped never comes back: after 500 ms
    // without progress, count the window as lost and refill it.
    if (cfg_.rate == 0 &&
        now - last_progress_ > std::chrono::milliseconds(500)) {
      ++stalls_;
      last_progress_ = now;
      if (cfg_.mode == "fanout") {
        std::fill(remaining_.begin(), remaining_.end(), 0);
        for (uint32_t k = 0; k < std::max<uint32_t>(cfg_.inflight, 1); ++k) {
          Publish(0, now.nanos());
        }
      } else {
        for (uint32_t p = 0; p < pubs_.size(); ++p) {
          outstanding_[p] = 0;
          for (uint32_t k = 0; k < std::max<uint32_t>(cfg_.inflight, 1); ++k) {
            Publish(p, now.nanos());
          }
        }
      }
    }
  }
  if (pacing_timer_ != 0) loop_->CancelTimer(pacing_timer_);
  // A run that timed out, failed or was stopped ended its measured phase
  // now: without this the report's duration was end(unset) - start < 0.
  if (measuring_ && measure_end_ < measure_start_)
    measure_end_ = MonotonicNow();
  // Messages still in flight when recording ended are waited for (up to
  // --drain_s), so `lost` counts only those that do not arrive by then.
  phase_ = Phase::kDraining;
  WaitFor([&] { return received_ >= next_seq_ * subs_.size(); }, cfg_.drain_s);
  if (failed_) {
    std::fprintf(stderr, "ringlab_mqtt_bench: %s\n", failure_.c_str());
  }
  const int rc = Report();
  phase_ = Phase::kDone;
  for (auto& c : clients_) c->Disconnect();
  WaitFor(
      [&] {
        for (auto& c : clients_) {
          if (c->transport_open()) return false;
        }
        return true;
      },
      3);
  return failed_ ? kExitRunFailed : rc;
}

int Bench::Report() {
  const bench::CpuTime cpu =
      measuring_ ? bench::CpuTime::Now() - cpu_start_ : bench::CpuTime{};
  const transport::LoopCounters lc = loop_->counters().Delta(counters_start_);
  const double duration_s =
      measuring_ ? (measure_end_ - measure_start_).count() / 1e9 : 0;
  auto us = [](uint64_t ns) { return ns / 1000.0; };
  const double msgs = double(measured_);
  bench::JsonWriter json;
  json.BeginObject();
  json.Key("schema").String("ringlab.mqtt_bench/1");
  json.Key("program").String("ringlab_mqtt_bench");
  json.Key("protocol").String("mqtt");
  AppendBackend(json, loop_->backend());
  const bool fan = cfg_.mode == "fanin" || cfg_.mode == "fanout";
  json.Key("mode").String(cfg_.runner_mode.empty() ? cfg_.mode
                                                   : cfg_.runner_mode);
  json.Key("bench_mode").String(cfg_.mode);
  if (fan) {
    json.Key("pattern").String(cfg_.mode);
  } else {
    json.Key("pattern").Null();
  }
  json.Key("mqtt_version").Uint(cfg_.version);
  json.Key("qos").Uint(cfg_.qos);
  json.Key("payload_bytes").Uint(payload_.size());
  json.Key("connections").Uint(cfg_.connections);
  json.Key("publishers").Uint(pubs_.size());
  json.Key("subscribers").Uint(subs_.size());
  json.Key("connections_open").Uint(clients_.size());
  if (cfg_.rate > 0) {
    json.Key("rate_per_s").Number(cfg_.rate);
  } else {
    json.Key("rate_per_s").Null();
  }
  json.Key("inflight").Uint(cfg_.inflight);
  json.Key("samples").Uint(measured_);
  json.Key("warmup").Uint(cfg_.warmup);
  const uint64_t sent = next_seq_;
  const size_t nsubs = std::max<size_t>(subs_.size(), 1);
  const uint64_t expected = sent * subs_.size();
  const uint64_t missing = expected > received_ ? expected - received_ : 0;
  json.Key("lost").Uint((missing + nsubs - 1) / nsubs);
  json.Key("lost_deliveries").Uint(missing);
  json.Key("rtt_us").BeginObject();
  json.Key("min").Number(us(histogram_.min()));
  json.Key("mean").Number(histogram_.mean() / 1000.0);
  json.Key("p50").Number(us(histogram_.Percentile(50)));
  json.Key("p90").Number(us(histogram_.Percentile(90)));
  json.Key("p99").Number(us(histogram_.Percentile(99)));
  json.Key("p999").Number(us(histogram_.Percentile(99.9)));
  json.Key("max").Number(us(histogram_.max()));
  json.EndObject();
  if (cfg_.qos > 0) {
    // Publish (its intended send time) to PUBACK or PUBCOMP: with a
    // durable store, how long the broker held the acknowledgement.
    json.Key("ack_us").BeginObject();
    json.Key("samples").Uint(ack_histogram_.count());
    json.Key("p50").Number(us(ack_histogram_.Percentile(50)));
    json.Key("p90").Number(us(ack_histogram_.Percentile(90)));
    json.Key("p99").Number(us(ack_histogram_.Percentile(99)));
    json.Key("p999").Number(us(ack_histogram_.Percentile(99.9)));
    json.Key("max").Number(us(ack_histogram_.max()));
    json.EndObject();
    json.Key("acks_untimed").Uint(acks_untimed_);
  }
  json.Key("duration_s").Number(duration_s);
  const double deliveries_per_s = duration_s > 0 ? msgs / duration_s : 0;
  json.Key("messages_per_s").Number(deliveries_per_s / double(nsubs));
  json.Key("deliveries_per_s").Number(deliveries_per_s);
  json.Key("cpu_us_per_msg").Number(msgs > 0 ? cpu.total_us() / msgs : 0);
  json.Key("kernel_entries_per_msg")
      .Number(msgs > 0 ? lc.kernel_entries() / msgs : 0);
  json.Key("total_messages").Uint(received_);
  json.Key("measured_start_ns").Int(measuring_ ? measure_start_.nanos() : 0);
  json.Key("measured_end_ns").Int(measuring_ ? measure_end_.nanos() : 0);
  json.Key("published").Uint(sent);
  json.Key("delivered").Uint(received_);
  json.Key("publish_errors").Uint(publish_errors_);
  json.Key("late").Uint(late_);
  json.Key("stalls").Uint(stalls_);
  // Where undelivered messages sit at the end: still unacknowledged or
  // waiting for a window slot in the publishers, or unsent output.
  uint64_t pub_inflight = 0, pub_waiting = 0, pending_output = 0;
  for (ClientDriver* p : pubs_) {
    pub_inflight += p->core().inflight();
    pub_waiting += p->core().waiting();
    pending_output += p->core().pending_output_bytes();
  }
  json.Key("publisher_inflight_at_end").Uint(pub_inflight);
  json.Key("publisher_waiting_at_end").Uint(pub_waiting);
  json.Key("publisher_pending_output_bytes").Uint(pending_output);
  uint64_t sub_pending = 0, sub_received = 0;
  for (ClientDriver* c : subs_) {
    sub_pending += c->core().pending_output_bytes();
    for (uint64_t r : c->core().counters().received) sub_received += r;
  }
  json.Key("subscriber_pending_output_bytes").Uint(sub_pending);
  json.Key("subscriber_publishes_received").Uint(sub_received);
  json.Key("cpu_user_us").Int(cpu.user_us);
  json.Key("cpu_system_us").Int(cpu.system_us);
  json.Key("counters");
  AppendCounters(json, lc);
  json.Key("server").String(cfg_.server);
  json.Key("tls").Bool(cfg_.tls);
  if (cfg_.tls) {
    TlsCounters t;
    uint64_t ktls_tx = 0, ktls_rx = 0;
    for (const auto& c : clients_) {
      const TlsCounters& ct = c->tls_counters();
      t.handshakes_completed += ct.handshakes_completed;
      t.ktls_tx += ct.ktls_tx;
      t.ktls_rx += ct.ktls_rx;
      t.ktls_unavailable += ct.ktls_unavailable;
      ktls_tx += ct.ktls_tx;
      ktls_rx += ct.ktls_rx;
      if (const TlsStream* s = c->tls_stream(); s != nullptr && s->open()) {
        json.Key("tls_version")
            .String(std::string(s->session().version_name()));
        json.Key("tls_cipher").String(std::string(s->session().cipher_name()));
      }
    }
    json.Key("tls_handshakes").Uint(t.handshakes_completed);
    json.Key("ktls_requested").Bool(cfg_.ktls);
    json.Key("ktls_tx_connections").Uint(ktls_tx);
    json.Key("ktls_rx_connections").Uint(ktls_rx);
    json.Key("ktls_unavailable").Uint(t.ktls_unavailable);
  }
  if (cfg_.broker_pid > 0) {
    json.Key("broker_pid").Int(cfg_.broker_pid);
    json.Key("broker_rss_before_bytes").Uint(rss_before_);
    json.Key("broker_rss_after_bytes").Uint(rss_after_);
    const double per = cfg_.connections > 0 && rss_after_ > rss_before_
                           ? double(rss_after_ - rss_before_) / cfg_.connections
                           : 0;
    json.Key("broker_rss_per_connection_bytes").Number(per);
  }
  json.Key("cpu").Int(cfg_.cpu);
  json.EndObject();
  std::printf("RESULT %s\n", json.str().c_str());
  std::fflush(stdout);
  if (!cfg_.json_path.empty()) {
    if (absl::Status s = WriteTextFile(cfg_.json_path, json.str()); !s.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_bench: %s\n",
                   std::string(s.message()).c_str());
      return kExitRunFailed;
    }
  }
  return kExitOk;
}

int Run(int argc, char** argv) {
  Config cfg;
  Flags flags("ringlab_mqtt_bench",
              "Drives an MQTT broker with ringlab's MQTT client and prints a "
              "RESULT JSON line\n(the experiment runner's ringlab_json "
              "format).");
  flags.Add("server", "broker HOST:PORT", &cfg.server);
  flags.Add("mode",
            "rtt, fanin, fanout or idle; or the runner's pingpong, rate or "
            "burst with --pattern (see the file header)",
            &cfg.mode);
  flags.Add("pattern", "with --mode=rate|burst: fanin or fanout", &cfg.pattern);
  flags.Add("backend", "transport preset of the client Loop", &cfg.backend);
  flags.Add("qos", "QoS of publishes and subscriptions: 0, 1 or 2", &cfg.qos);
  flags.Add("version", "MQTT version: 5 or 311", &cfg.version);
  flags.Add("payload", "payload bytes (at least 24)", &cfg.payload);
  flags.Add("samples", "deliveries to record after the warm-up", &cfg.samples);
  flags.Add("warmup", "deliveries before recording starts", &cfg.warmup);
  flags.Add("connections",
            "fanin: publishers; fanout: subscribers; idle: clients",
            &cfg.connections);
  flags.Add("rate", "messages per second in total, open loop (0: saturation)",
            &cfg.rate);
  flags.Add("inflight",
            "saturation: undelivered messages per publisher (fanin) or in "
            "total (fanout)",
            &cfg.inflight);
  flags.Add("duration_s",
            "also stop recording after this many seconds (0: samples only)",
            &cfg.duration_s);
  flags.Add("max_duration_s", "the same as --duration_s (the runner's name)",
            &cfg.duration_s);
  flags.Add("timeout_s", "give up after this many seconds", &cfg.timeout_s);
  flags.Add("hold_s", "idle mode: how long the connections stay", &cfg.hold_s);
  flags.Add("drain_s",
            "after recording, wait this long for messages still in flight; "
            "those that do not arrive are counted as lost",
            &cfg.drain_s);
  flags.Add("broker_pid",
            "idle mode: read this process's RSS before and after connecting",
            &cfg.broker_pid);
  flags.Add("keep_alive_s", "MQTT keep alive of every client",
            &cfg.keep_alive_s);
  flags.Add("session_expiry_s",
            "> 0: every client opens a persistent session (Clean Start 0, "
            "this expiry; 3.1.1: Clean Session 0), so a durable broker "
            "stores each QoS 1/2 delivery",
            &cfg.session_expiry_s);
  flags.Add("cpu", "pin this process's thread to this CPU (-1: no)", &cfg.cpu);
  flags.Add("json", "also write the RESULT object to this file",
            &cfg.json_path);
  flags.Add("tls", "speak MQTT over TLS (the broker's TLS port in --server)",
            &cfg.tls);
  flags.Add("cafile", "TLS: PEM CA bundle that verifies the broker",
            &cfg.cafile);
  flags.Add("cert", "TLS: PEM client certificate (mutual TLS)", &cfg.cert);
  flags.Add("key", "TLS: PEM key of --cert", &cfg.key);
  flags.Add("tls_server_name",
            "TLS: name the broker's certificate must carry (default: the "
            "host of --server)",
            &cfg.tls_server_name);
  flags.Add("insecure", "TLS: do not verify the broker's certificate",
            &cfg.insecure);
  flags.Add("ktls",
            "TLS: hand the record layer to the kernel after the handshake "
            "(where the kernel has a tls module)",
            &cfg.ktls);
  flags.Add("tls_version", "TLS: force 1.2 or 1.3 (default: either)",
            &cfg.tls_version);
  // The runner's form starts with a role word: `ringlab_mqtt_bench client`.
  if (argc > 1 && std::string_view(argv[1]) == "client") {
    argv[1] = argv[0];
    --argc;
    ++argv;
  }
  if (absl::Status s = flags.Parse(argc, argv); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  if (flags.help()) {
    std::fputs(flags.Usage().c_str(), stdout);
    return kExitOk;
  }
  if (cfg.mode == "pingpong" || cfg.mode == "rate" || cfg.mode == "burst") {
    cfg.runner_mode = cfg.mode;
    if (cfg.mode == "pingpong") {
      cfg.mode = "rtt";
    } else if (cfg.pattern == "fanin" || cfg.pattern == "fanout") {
      cfg.mode = cfg.pattern;
      if (cfg.runner_mode == "burst") cfg.rate = 0;
      if (cfg.runner_mode == "rate" && cfg.rate <= 0) {
        std::fprintf(stderr, "ringlab_mqtt_bench: --mode=rate needs --rate\n");
        return kExitUsage;
      }
    } else {
      std::fprintf(
          stderr,
          "ringlab_mqtt_bench: --mode=%s needs --pattern=fanin|fanout\n",
          cfg.mode.c_str());
      return kExitUsage;
    }
  }
  if (cfg.mode != "rtt" && cfg.mode != "fanin" && cfg.mode != "fanout" &&
      cfg.mode != "idle") {
    std::fprintf(stderr,
                 "ringlab_mqtt_bench: --mode must be rtt, fanin, "
                 "fanout or idle\n");
    return kExitUsage;
  }
  if (cfg.qos > 2 || (cfg.version != 5 && cfg.version != 311) ||
      cfg.connections == 0) {
    std::fprintf(stderr,
                 "ringlab_mqtt_bench: bad --qos, --version or "
                 "--connections\n");
    return kExitUsage;
  }
  if (cfg.mode == "rtt") cfg.connections = 1;
  InstallStopHandlers();
  if (cfg.cpu >= 0) {
    if (absl::Status s = bench::PinThisThreadToCpu(cfg.cpu); !s.ok()) {
      std::fprintf(stderr, "ringlab_mqtt_bench: %s\n",
                   std::string(s.message()).c_str());
      return kExitUsage;
    }
  }
  RaiseFileLimit(uint64_t(cfg.connections) + 256);
  transport::LoopOptions lo;
  lo.backend = cfg.backend;
  lo.max_sockets = cfg.connections + 64;
  absl::StatusOr<std::unique_ptr<transport::Loop>> loop =
      transport::Loop::Create(lo);
  if (!loop.ok()) {
    std::fprintf(stderr, "ringlab_mqtt_bench: backend %s: %s\n",
                 cfg.backend.c_str(), loop.status().ToString().c_str());
    return IsUnsupportedBackend(loop.status()) ? kExitUnsupportedBackend
                                               : kExitRunFailed;
  }
  int rc;
  {
    Bench bench(cfg, loop->get());
    rc = bench.Run();
  }
  return rc;
}

}  // namespace
}  // namespace ringlab::mqtt::programs

int main(int argc, char** argv) {
  return ringlab::mqtt::programs::Run(argc, argv);
}
