// The measuring side of ringlab_pingpong.
//
// Each connection (a connected UDP socket or a TCP stream) keeps a sliding
// window of outstanding messages indexed by sequence number. A message is
// written straight into a pool buffer lease: bytes [0, 8) hold the sequence
// number, [8, 16) a check word unique to the run and connection; the rest of
// the payload is whatever the pool buffer held (it is never inspected, and
// filling it would add a per-byte cost that is not the transport's).
//
// Timing: the send time is read right before SendTo/Send and the receive time
// in the completion callback, both with MonotonicNow(). In rate mode the
// latency starts at the message's *intended* send time, so a stalled client
// or server cannot hide the wait of the messages queued behind it
// (coordinated omission).
//
// Warm-up: the first `warmup` answered messages are not recorded. The
// measured phase (time, rusage, Loop counters) starts after the last of them
// and ends when the `samples`-th recorded answer arrives, or, with
// --max_duration_s, when that time has passed (checked after each loop
// iteration, so it ends at most one poll interval late). Without it exactly
// `samples` round trips are recorded; lost UDP messages are replaced by new
// ones. Rates and per-message costs divide by the round trips recorded.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/histogram.h"
#include "bench/json_writer.h"
#include "bench/pingpong_options.h"
#include "bench/process_stats.h"
#include "transport/loop.h"
#include "transport/time.h"

namespace ringlab::bench {
namespace {

using transport::BufferLease;
using transport::Loop;
using transport::LoopCounters;
using transport::SocketHandler;
using transport::SocketId;

// A UDP message not answered within this time counts as lost.
constexpr int64_t kUdpLossTimeoutNs = 200'000'000;
// Rate mode: a message sent this much after its intended time counts as late.
constexpr int64_t kLateThresholdNs = 1'000'000;
constexpr size_t kHeaderBytes = 16;

struct Slot {
  int64_t intended_ns = 0;  // latency origin
  int64_t sent_ns = 0;      // loss timer origin
  bool pending = false;
};

class Client;

// One socket and its window of outstanding messages.
class Connection : public SocketHandler {
 public:
  Connection(Client* client, uint32_t index, uint64_t check_word,
             uint32_t window_capacity)
      : client_(client),
        index_(index),
        check_word_(check_word),
        window_(window_capacity),
        mask_(window_capacity - 1) {}

  void OnDatagram(SocketId, const Endpoint&, BufferLease data) override;
  void OnData(SocketId, BufferLease data) override;
  void OnReadClosed(SocketId, int result) override;
  void OnConnect(SocketId, int result) override;
  void OnSendComplete(SocketId, int result, uint64_t) override;
  void OnError(SocketId, int error) override;
  void OnClosed(SocketId) override { closed_ = true; }

  bool window_full() const { return next_seq_ - tail_seq_ > mask_; }

 private:
  friend class Client;
  Client* client_;
  uint32_t index_;
  uint64_t check_word_;
  SocketId socket_;
  bool connected_ = false;
  bool closed_ = false;
  std::vector<Slot> window_;
  uint64_t mask_;
  uint64_t tail_seq_ = 0;  // oldest message not yet answered or expired
  uint64_t next_seq_ = 0;  // next sequence number to send
  uint32_t outstanding_ = 0;
  // TCP reassembly: bytes of the current message seen, and its header.
  uint32_t rx_offset_ = 0;
  std::array<std::byte, kHeaderBytes> rx_header_{};
};

class Client {
 public:
  Client(const PingPongConfig& config, Loop* loop)
      : config_(config), loop_(loop) {}

  int Run();

 private:
  friend class Connection;

  absl::Status OpenConnections();
  enum class SendResult {
    kSent,
    // The oldest unanswered message holds the window; a reply or its loss
    // timeout frees it, and both top the connection up again.
    kWindowFull,
    // No pool buffer or a full send queue: retry on the next iteration.
    kNoResources,
    kFailed,  // the run failed (Fail() was called)
  };
  SendResult SendOne(Connection& c, int64_t intended_ns);
  // Keeps `c` at its in-flight target (pingpong / burst).
  void TopUp(Connection& c);
  void SendDue(int64_t now_ns);  // rate mode
  void ExpireLost(int64_t now_ns);
  void OnReply(Connection& c, uint64_t seq, uint64_t check, int64_t now_ns);
  void AdvanceTail(Connection& c);
  void StartMeasuring();
  void FinishMeasuring();
  void Fail(std::string message);
  uint64_t budget_left() const {
    // Idle mode exchanges its warm-up only.
    const uint64_t total = config_.warmup + (idle() ? 0 : config_.samples);
    const uint64_t used = answered_ + total_inflight_;
    return used >= total ? 0 : total - used;
  }
  uint32_t per_connection_target() const {
    switch (config_.mode) {
      case Mode::kPingPong:
      case Mode::kIdle:
        return 1;
      case Mode::kBurst:
        return config_.inflight;
      case Mode::kRate:
        break;
    }
    return UINT32_MAX;  // only the global cap and the window apply
  }
  int64_t IntendedTimeNs(uint64_t k) const {
    return rate_start_ns_ +
           static_cast<int64_t>(static_cast<long double>(k) * 1e9L /
                                static_cast<long double>(config_.rate_per_s));
  }
  bool idle() const { return config_.mode == Mode::kIdle; }
  // Mode idle: after the warm-up, nothing for config_.idle_s seconds.
  void RunIdlePhase(Timestamp deadline);
  void CloseAll();
  std::string ResultJson() const;
  void PrintSummary() const;

  const PingPongConfig& config_;
  Loop* loop_;
  std::vector<std::unique_ptr<Connection>> connections_;
  LatencyHistogram histogram_;

  uint64_t answered_ = 0;  // warm-up and measured answers
  uint64_t recorded_ = 0;  // measured answers
  uint64_t total_inflight_ = 0;
  uint64_t inflight_at_reply_sum_ = 0;  // over the measured replies
  uint64_t connected_ = 0;
  bool measuring_ = false;
  bool finished_ = false;
  bool failed_ = false;
  bool needs_retry_ = false;
  std::string error_;

  // Rate mode schedule.
  int64_t rate_start_ns_ = 0;
  uint64_t rate_next_k_ = 0;
  bool rate_blocked_ = false;  // a due message could not be sent

  // Outcome counts.
  uint64_t lost_ = 0;
  uint64_t warmup_lost_ = 0;
  uint64_t stale_replies_ = 0;  // answers to expired or unknown messages
  uint64_t bad_replies_ = 0;    // wrong size or check word
  uint64_t late_ = 0;
  uint64_t send_retries_ = 0;
  std::vector<BufferLease> staging_;  // one multi-buffer message being sent
  uint64_t send_errors_ = 0;
  uint64_t receive_errors_ = 0;

  // Measured phase.
  Timestamp start_time_;
  Timestamp end_time_;
  CpuTime start_cpu_;
  CpuTime end_cpu_;
  LoopCounters start_counters_;
  LoopCounters end_counters_;
};

void Connection::OnDatagram(SocketId, const Endpoint&, BufferLease data) {
  const int64_t now_ns = MonotonicNow().nanos();
  if (data.size() != client_->config_.payload_bytes) {
    ++client_->bad_replies_;
    return;
  }
  uint64_t seq = 0;
  uint64_t check = 0;
  std::memcpy(&seq, data.data(), 8);
  std::memcpy(&check, data.data() + 8, 8);
  client_->OnReply(*this, seq, check, now_ns);
}

void Connection::OnData(SocketId, BufferLease data) {
  const int64_t now_ns = MonotonicNow().nanos();
  const uint32_t payload = client_->config_.payload_bytes;
  const std::byte* bytes = data.data();
  size_t left = data.size();
  // Only the 16 header bytes are copied; the rest of each message is counted
  // and skipped.
  while (left > 0 && !client_->failed_) {
    size_t take;
    if (rx_offset_ < kHeaderBytes) {
      take = std::min(left, kHeaderBytes - rx_offset_);
      std::memcpy(rx_header_.data() + rx_offset_, bytes, take);
    } else {
      take = std::min<size_t>(left, payload - rx_offset_);
    }
    rx_offset_ += static_cast<uint32_t>(take);
    bytes += take;
    left -= take;
    if (rx_offset_ == payload) {
      rx_offset_ = 0;
      uint64_t seq = 0;
      uint64_t check = 0;
      std::memcpy(&seq, rx_header_.data(), 8);
      std::memcpy(&check, rx_header_.data() + 8, 8);
      if (check != check_word_) {
        client_->Fail(absl::StrFormat(
            "tcp connection %u: message header check word %#x != %#x "
            "(seq %u): the echoed stream lost, duplicated or reordered bytes",
            index_, check, check_word_, seq));
        return;
      }
      client_->OnReply(*this, seq, check, now_ns);
    }
  }
}

void Connection::OnReadClosed(SocketId, int result) {
  if (client_->finished_) return;
  client_->Fail(absl::StrCat(
      "tcp connection ", index_, ": server closed the stream (",
      result == 0 ? std::string("EOF") : std::string(std::strerror(-result)),
      ") before the run finished"));
}

void Connection::OnConnect(SocketId, int result) {
  if (result < 0) {
    client_->Fail(absl::StrCat(
        "tcp connect to ", client_->config_.server.ToString(), ": ",
        std::strerror(-result), " (is the server running?)"));
    return;
  }
  connected_ = true;
  ++client_->connected_;
}

void Connection::OnSendComplete(SocketId, int result, uint64_t) {
  if (result >= 0 || result == -ECANCELED) return;
  ++client_->send_errors_;
  if (client_->config_.protocol == Protocol::kTcp && !client_->finished_) {
    client_->Fail(absl::StrCat("tcp connection ", index_,
                               ": send failed: ", std::strerror(-result)));
  }
  // UDP: the message will expire and count as lost.
}

void Connection::OnError(SocketId, int error) {
  if (error == -ECONNREFUSED && client_->answered_ == 0 &&
      !client_->finished_) {
    client_->Fail(absl::StrCat("server ", client_->config_.server.ToString(),
                               " unreachable: ", std::strerror(-error),
                               " (is the server running?)"));
    return;
  }
  ++client_->receive_errors_;
}

void Client::Fail(std::string message) {
  if (failed_) return;
  failed_ = true;
  error_ = std::move(message);
}

absl::Status Client::OpenConnections() {
  // A nonce per run makes a stray answer from an earlier run fail the check.
  const uint64_t nonce =
      static_cast<uint64_t>(MonotonicNow().nanos()) * 0x9E3779B97F4A7C15ull ^
      static_cast<uint64_t>(::getpid());
  // The window spans sequence numbers from the oldest unanswered message to
  // the newest. It is several times the in-flight target so that one lost
  // UDP message (held for the 200 ms loss timeout) does not stop the others.
  uint32_t window = 64;
  switch (config_.mode) {
    case Mode::kPingPong:
    case Mode::kIdle:
      break;
    case Mode::kBurst: {
      // Bounded to about a million slots in total (24 MiB) for runs with
      // many connections; never below the in-flight target itself.
      const uint32_t need = std::bit_ceil(config_.inflight);
      const uint32_t budget = std::bit_floor(
          std::max<uint32_t>(1, (1u << 20) / config_.connections));
      window = std::max(need, std::min(std::max(64u, need * 8), budget));
      break;
    }
    case Mode::kRate: {
      // Twice a fair share of the global cap, so one slow connection does
      // not stall the schedule early.
      const uint32_t share = (kRateModeMaxInflight + config_.connections - 1) /
                             config_.connections;
      window = std::clamp<uint32_t>(std::bit_ceil(share * 2), 64,
                                    kRateModeMaxInflight);
      break;
    }
  }
  for (uint32_t i = 0; i < config_.connections; ++i) {
    connections_.push_back(std::make_unique<Connection>(
        this, i, nonce ^ (uint64_t{i} + 1) * 0xD6E8FEB86659FD93ull, window));
    Connection& c = *connections_.back();
    absl::StatusOr<SocketId> socket;
    if (config_.protocol == Protocol::kUdp) {
      transport::UdpOptions udp;
      absl::StatusOr<Endpoint> any =
          Endpoint::Parse(config_.server.is_ipv4() ? "0.0.0.0:0" : "[::]:0");
      if (!any.ok()) return any.status();
      udp.bind = *any;
      udp.connect = config_.server;
      udp.receive_buffer_bytes = 1 << 20;
      socket = loop_->OpenUdp(udp, &c);
      c.connected_ = true;
    } else {
      socket = loop_->ConnectTcp(config_.server, &c);
    }
    if (!socket.ok()) {
      return absl::Status(
          socket.status().code(),
          absl::StrCat("connection ", i, " to ", config_.server.ToString(),
                       ": ", socket.status().message()));
    }
    c.socket_ = *socket;
    if (config_.protocol == Protocol::kUdp) ++connected_;
  }
  return absl::OkStatus();
}

Client::SendResult Client::SendOne(Connection& c, int64_t intended_ns) {
  if (c.window_full()) return SendResult::kWindowFull;
  const uint64_t seq = c.next_seq_;
  Slot& slot = c.window_[seq & c.mask_];
  const uint32_t payload = config_.payload_bytes;

  if (config_.protocol == Protocol::kUdp) {
    BufferLease lease = loop_->AcquireBuffer();
    if (!lease) {
      ++send_retries_;
      return SendResult::kNoResources;
    }
    std::memcpy(lease.data(), &seq, 8);
    std::memcpy(lease.data() + 8, &c.check_word_, 8);
    lease.set_size(payload);
    slot.sent_ns = MonotonicNow().nanos();
    if (loop_->SendTo(c.socket_, std::move(lease), config_.server) < 0) {
      ++send_retries_;
      return SendResult::kNoResources;
    }
  } else {
    // A message larger than one buffer goes out as several leases. Take
    // every lease before sending any, so a message is never cut: free_count()
    // is not enough, because AcquireBuffer() keeps the Loop's receive reserve
    // (an empty lease here used to be written through: SIGSEGV with 1,000
    // connections x 8 in flight on epoll). `staging_` keeps its capacity, so
    // this allocates once, not per message.
    const size_t chunk = loop_->buffers().buffer_size();
    const size_t chunks = (payload + chunk - 1) / chunk;
    staging_.clear();
    if (staging_.capacity() < chunks) staging_.reserve(chunks);
    for (size_t i = 0; i < chunks; ++i) {
      BufferLease lease = loop_->AcquireBuffer();
      if (!lease) {
        staging_.clear();  // back to the pool
        ++send_retries_;
        return SendResult::kNoResources;
      }
      staging_.push_back(std::move(lease));
    }
    size_t remaining = payload;
    bool first = true;
    slot.sent_ns = MonotonicNow().nanos();
    for (BufferLease& lease : staging_) {
      const size_t n = std::min(remaining, lease.capacity());
      if (first) {
        std::memcpy(lease.data(), &seq, 8);
        std::memcpy(lease.data() + 8, &c.check_word_, 8);
      }
      lease.set_size(n);
      if (loop_->Send(c.socket_, std::move(lease)) < 0) {
        staging_.clear();
        if (first) {
          ++send_retries_;
          return SendResult::kNoResources;
        }
        Fail(absl::StrCat("tcp connection ", c.index_,
                          ": send queue refused the rest of a message"));
        return SendResult::kFailed;
      }
      first = false;
      remaining -= n;
    }
    staging_.clear();
  }
  slot.intended_ns = config_.mode == Mode::kRate ? intended_ns : slot.sent_ns;
  slot.pending = true;
  ++c.next_seq_;
  ++c.outstanding_;
  ++total_inflight_;
  return SendResult::kSent;
}

void Client::TopUp(Connection& c) {
  if (!c.connected_) return;
  const uint32_t target = per_connection_target();
  while (!finished_ && !failed_ && c.outstanding_ < target &&
         budget_left() > 0) {
    const SendResult sent = SendOne(c, 0);
    if (sent == SendResult::kSent) continue;
    if (sent == SendResult::kNoResources) needs_retry_ = true;
    return;
  }
}

void Client::SendDue(int64_t now_ns) {
  rate_blocked_ = false;
  while (!finished_ && !failed_ && budget_left() > 0) {
    const int64_t intended = IntendedTimeNs(rate_next_k_);
    if (intended > now_ns) return;
    // Due but held back (in-flight cap, full window, no buffer): it goes out
    // later and its latency still counts from `intended`.
    if (total_inflight_ >= kRateModeMaxInflight) {
      rate_blocked_ = true;
      return;
    }
    Connection& c = *connections_[rate_next_k_ % connections_.size()];
    if (SendOne(c, intended) != SendResult::kSent) {
      rate_blocked_ = true;
      return;
    }
    if (now_ns - intended >= kLateThresholdNs) ++late_;
    ++rate_next_k_;
  }
}

void Client::AdvanceTail(Connection& c) {
  while (c.tail_seq_ < c.next_seq_ &&
         !c.window_[c.tail_seq_ & c.mask_].pending) {
    ++c.tail_seq_;
  }
}

void Client::ExpireLost(int64_t now_ns) {
  for (auto& owned : connections_) {
    Connection& c = *owned;
    bool expired = false;
    while (c.tail_seq_ < c.next_seq_) {
      Slot& slot = c.window_[c.tail_seq_ & c.mask_];
      if (slot.pending) {
        if (now_ns - slot.sent_ns < kUdpLossTimeoutNs) break;
        slot.pending = false;
        --c.outstanding_;
        --total_inflight_;
        ++(measuring_ ? lost_ : warmup_lost_);
        expired = true;
      }
      ++c.tail_seq_;
    }
    if (expired && config_.mode != Mode::kRate) TopUp(c);
  }
}

void Client::OnReply(Connection& c, uint64_t seq, uint64_t check,
                     int64_t now_ns) {
  if (check != c.check_word_) {
    ++bad_replies_;
    return;
  }
  if (finished_) return;
  Slot& slot = c.window_[seq & c.mask_];
  if (seq < c.tail_seq_ || seq >= c.next_seq_ || !slot.pending) {
    ++stale_replies_;
    return;
  }
  slot.pending = false;
  --c.outstanding_;
  --total_inflight_;
  ++answered_;
  if (idle()) {  // warm-up only; Run() measures the quiet phase after it
    AdvanceTail(c);
    TopUp(c);
    return;
  }
  if (measuring_) {
    // In flight when this reply came, itself included: the mean over the
    // measured replies says whether the run kept its target in flight.
    inflight_at_reply_sum_ += total_inflight_ + 1;
    histogram_.Record(
        static_cast<uint64_t>(std::max<int64_t>(0, now_ns - slot.intended_ns)));
    if (++recorded_ == config_.samples) {
      FinishMeasuring();
      return;
    }
  } else if (answered_ >= config_.warmup) {
    StartMeasuring();
  }
  AdvanceTail(c);
  if (config_.mode != Mode::kRate) TopUp(c);
}

void Client::StartMeasuring() {
  measuring_ = true;
  start_counters_ = loop_->counters();
  start_cpu_ = CpuTime::Now();
  start_time_ = MonotonicNow();
}

void Client::FinishMeasuring() {
  end_time_ = MonotonicNow();
  end_cpu_ = CpuTime::Now();
  end_counters_ = loop_->counters();
  finished_ = true;
}

void Client::RunIdlePhase(Timestamp deadline) {
  for (auto& c : connections_) TopUp(*c);
  while (!failed_ && answered_ + lost_ + warmup_lost_ < config_.warmup) {
    if (MonotonicNow() >= deadline) {
      Fail(absl::StrCat("timeout: ", answered_, " of ", config_.warmup,
                        " warm-up round trips answered"));
      return;
    }
    const int rc = loop_->RunOnce(std::chrono::milliseconds(10));
    if (rc < 0) Fail(absl::StrCat("RunOnce: ", std::strerror(-rc)));
    if (config_.protocol == Protocol::kUdp) ExpireLost(MonotonicNow().nanos());
  }
  if (failed_) return;
  // The quiet phase: the Loop waits as an application's would (Run()'s
  // one-second cap), with every socket open and nothing to do.
  StartMeasuring();
  const Timestamp until =
      start_time_ + Duration(static_cast<int64_t>(config_.idle_s * 1e9));
  while (!failed_) {
    const Timestamp now = MonotonicNow();
    if (now >= until) break;
    const int rc = loop_->RunOnce(
        std::min<Duration>(until - now, std::chrono::seconds(1)));
    if (rc < 0) Fail(absl::StrCat("RunOnce: ", std::strerror(-rc)));
  }
  FinishMeasuring();
}

void Client::CloseAll() {
  for (auto& c : connections_) {
    if (c->socket_.valid()) loop_->Close(c->socket_);
  }
  // Let the Loop finish the closes (and TCP FINs) before it is destroyed.
  const Timestamp give_up = MonotonicNow() + std::chrono::milliseconds(500);
  while (loop_->open_sockets() > 0 && MonotonicNow() < give_up) {
    if (loop_->RunOnce(std::chrono::milliseconds(5)) < 0) break;
  }
}

int Client::Run() {
  absl::Status opened = OpenConnections();
  if (!opened.ok()) {
    std::fprintf(stderr, "ringlab_pingpong client: %s\n",
                 opened.ToString().c_str());
    CloseAll();
    return kExitRunFailed;
  }
  const Timestamp deadline =
      MonotonicNow() + Duration(static_cast<int64_t>(config_.timeout_s * 1e9));

  // TCP: every connection is established before the first message, so the
  // handshake is not part of any round trip.
  while (!failed_ && connected_ < connections_.size()) {
    if (MonotonicNow() >= deadline) {
      Fail(absl::StrCat("timeout: ", connected_, " of ", connections_.size(),
                        " tcp connections established within ",
                        config_.timeout_s, " s"));
      break;
    }
    const int rc = loop_->RunOnce(std::chrono::milliseconds(10));
    if (rc < 0) Fail(absl::StrCat("RunOnce: ", std::strerror(-rc)));
  }

  if (!failed_ && idle()) {
    RunIdlePhase(deadline);
  } else if (!failed_) {
    if (config_.warmup == 0) StartMeasuring();
    if (config_.mode == Mode::kRate) {
      rate_start_ns_ = MonotonicNow().nanos();
      SendDue(rate_start_ns_);
    } else {
      for (auto& c : connections_) TopUp(*c);
    }
  }

  const Duration poll_cap = config_.protocol == Protocol::kUdp
                                ? Duration(std::chrono::milliseconds(10))
                                : Duration(std::chrono::milliseconds(50));
  while (!finished_ && !failed_) {
    Timestamp now = MonotonicNow();
    if (now >= deadline) {
      Fail(absl::StrCat(
          "timeout after ", config_.timeout_s, " s: ", recorded_, " of ",
          config_.samples, " samples recorded (", answered_,
          " answers incl. warm-up, ", lost_ + warmup_lost_, " lost)",
          answered_ > 0 ? ""
                        : "; no answer at all: is the server running and "
                          "reachable, and (UDP) was it given a --payload "
                          "at least this large?"));
      break;
    }
    Duration wait = poll_cap;
    if (needs_retry_) {
      wait = Duration(0);
    } else if (config_.mode == Mode::kRate && rate_blocked_) {
      // Replies wake us; the short wait only bounds loss-expiry checks.
      wait = std::chrono::milliseconds(1);
    } else if (config_.mode == Mode::kRate && budget_left() > 0) {
      const int64_t until = IntendedTimeNs(rate_next_k_) - now.nanos();
      wait = std::clamp(Duration(until), Duration(0), poll_cap);
    }
    const int rc = loop_->RunOnce(wait);
    if (rc < 0) {
      Fail(absl::StrCat("RunOnce: ", std::strerror(-rc)));
      break;
    }
    if (finished_ || failed_) break;
    const int64_t now_ns = MonotonicNow().nanos();
    if (measuring_ && config_.max_duration_s > 0 &&
        now_ns - start_time_.nanos() >=
            static_cast<int64_t>(config_.max_duration_s * 1e9)) {
      FinishMeasuring();
      break;
    }
    if (config_.protocol == Protocol::kUdp) ExpireLost(now_ns);
    if (config_.mode == Mode::kRate) {
      SendDue(now_ns);
    } else if (needs_retry_) {
      needs_retry_ = false;
      for (auto& c : connections_) TopUp(*c);
    }
  }

  if (!failed_ && bad_replies_ > 0) {
    Fail(absl::StrCat(
        bad_replies_,
        " replies had the wrong size or check word: the echo returned data "
        "that was not sent (UDP payloads above 2048 bytes need the same "
        "--payload on the server, or its buffers truncate them)"));
  }
  CloseAll();
  if (failed_) {
    std::fprintf(stderr, "ringlab_pingpong client: run failed: %s\n",
                 error_.c_str());
    return kExitRunFailed;
  }

  PrintSummary();
  const std::string json = ResultJson();
  if (config_.json_path.empty()) {
    std::printf("RESULT %s\n", json.c_str());
  } else {
    absl::Status written = WriteTextFile(config_.json_path, json);
    if (!written.ok()) {
      std::fprintf(stderr, "ringlab_pingpong client: %s\n",
                   std::string(written.message()).c_str());
      return kExitRunFailed;
    }
  }
  std::fflush(stdout);
  return kExitOk;
}

double Us(uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

uint32_t ReportedInflight(const PingPongConfig& config) {
  switch (config.mode) {
    case Mode::kPingPong:
      return 1;
    case Mode::kBurst:
      return config.inflight;
    case Mode::kRate:
      return kRateModeMaxInflight;
    case Mode::kIdle:
      return 0;
  }
  return 1;
}

std::string Client::ResultJson() const {
  const LoopCounters counters = end_counters_.Delta(start_counters_);
  const CpuTime cpu = end_cpu_ - start_cpu_;
  const double duration_s = (end_time_ - start_time_).count() / 1e9;
  const double samples = static_cast<double>(std::max<uint64_t>(1, recorded_));

  JsonWriter json;
  json.BeginObject();
  json.Key("schema").String("ringlab.pingpong/1");
  json.Key("program").String("ringlab_pingpong");
  json.Key("protocol").String(ProtocolName(config_.protocol));
  AppendBackend(json, loop_->backend());
  json.Key("mode").String(ModeName(config_.mode));
  json.Key("payload_bytes").Uint(config_.payload_bytes);
  json.Key("connections").Uint(config_.connections);
  json.Key("inflight").Uint(ReportedInflight(config_));
  // What the run achieved, all connections together: the mean number of
  // messages in flight when a measured reply arrived (target: connections x
  // inflight in burst mode). A client that cannot keep its target in
  // flight measures a lighter load than the one asked for.
  if (recorded_ > 0) {
    json.Key("inflight_achieved")
        .Number(static_cast<double>(inflight_at_reply_sum_) /
                static_cast<double>(recorded_));
  } else {
    json.Key("inflight_achieved").Null();
  }
  json.Key("rate_per_s").Number(config_.rate_per_s);
  json.Key("samples").Uint(recorded_);
  json.Key("warmup").Uint(config_.warmup);
  json.Key("lost").Uint(lost_);
  json.Key("rtt_us").BeginObject();
  if (idle()) {  // no round trips were measured
    for (const char* key :
         {"min", "mean", "p50", "p90", "p99", "p999", "max"}) {
      json.Key(key).Null();
    }
  } else {
    json.Key("min").Number(Us(histogram_.min()));
    json.Key("mean").Number(histogram_.mean() / 1000.0);
    json.Key("p50").Number(Us(histogram_.Percentile(50)));
    json.Key("p90").Number(Us(histogram_.Percentile(90)));
    json.Key("p99").Number(Us(histogram_.Percentile(99)));
    json.Key("p999").Number(Us(histogram_.Percentile(99.9)));
    json.Key("max").Number(Us(histogram_.max()));
  }
  json.EndObject();
  json.Key("duration_s").Number(duration_s);
  // The measured phase on CLOCK_MONOTONIC, which the server's timeline
  // shares (same host or network namespace): the runner cuts the server's
  // CPU and kernel entries to this window.
  json.Key("measured_start_ns").Int(start_time_.nanos());
  json.Key("measured_end_ns").Int(end_time_.nanos());
  if (idle()) {
    json.Key("messages_per_s").Number(0);
    json.Key("cpu_us_per_msg").Null();
    json.Key("kernel_entries_per_msg").Null();
  } else {
    json.Key("messages_per_s")
        .Number(duration_s > 0 ? samples / duration_s : 0);
    json.Key("cpu_us_per_msg")
        .Number(static_cast<double>(cpu.total_us()) / samples);
    json.Key("kernel_entries_per_msg")
        .Number(static_cast<double>(counters.kernel_entries()) / samples);
  }
  // CPU as a share of one core over the measured phase: the cost of a
  // spinning or hybrid preset beside its latency, and (mode idle) what a
  // Loop burns with nothing to do.
  json.Key("cpu_pct").Number(
      duration_s > 0 ? static_cast<double>(cpu.total_us()) / 1e4 / duration_s
                     : 0);
  json.Key("kernel_entries_per_s")
      .Number(duration_s > 0
                  ? static_cast<double>(counters.kernel_entries()) / duration_s
                  : 0);
  json.Key("counters");
  AppendCounters(json, counters);
  json.Key("cpu").Int(config_.cpu);
  // Beyond the shared schema: details a report may want.
  json.Key("server").String(config_.server.ToString());
  json.Key("lost_warmup").Uint(warmup_lost_);
  json.Key("late").Uint(late_);
  json.Key("stale_replies").Uint(stale_replies_);
  json.Key("send_retries").Uint(send_retries_);
  json.Key("send_errors").Uint(send_errors_);
  json.Key("receive_errors").Uint(receive_errors_);
  json.Key("cpu_user_us").Int(cpu.user_us);
  json.Key("cpu_system_us").Int(cpu.system_us);
  json.Key("histogram_max_relative_error")
      .Number(histogram_.max_relative_error());
  json.EndObject();
  return json.str();
}

void Client::PrintSummary() const {
  const LoopCounters counters = end_counters_.Delta(start_counters_);
  const CpuTime cpu = end_cpu_ - start_cpu_;
  const double duration_s = (end_time_ - start_time_).count() / 1e9;
  const double samples = static_cast<double>(std::max<uint64_t>(1, recorded_));
  const transport::BackendInfo& info = loop_->backend();
  std::printf(
      "ringlab_pingpong client: %s %s, backend %s (requested %s) [%s]%s%s\n",
      std::string(ProtocolName(config_.protocol)).c_str(),
      std::string(ModeName(config_.mode)).c_str(), info.name.c_str(),
      info.requested.c_str(), info.flags.ToString().c_str(),
      info.chosen_because.empty() ? "" : ": ", info.chosen_because.c_str());
  std::printf("  server %s, payload %u B, %u connection(s), in flight %u%s\n",
              config_.server.ToString().c_str(), config_.payload_bytes,
              config_.connections, ReportedInflight(config_),
              config_.mode == Mode::kRate
                  ? absl::StrFormat(", rate %.0f/s (late %u)",
                                    config_.rate_per_s, late_)
                        .c_str()
                  : "");
  std::printf("  samples %llu after %llu warm-up, lost %llu (warm-up %llu)\n",
              static_cast<unsigned long long>(recorded_),
              static_cast<unsigned long long>(config_.warmup),
              static_cast<unsigned long long>(lost_),
              static_cast<unsigned long long>(warmup_lost_));
  if (idle()) {
    std::printf(
        "  idle %.3f s after %llu warm-up round trips: cpu %.3f%% of a core, "
        "%.1f kernel entries/s, %.1f loop iterations/s, %llu hybrid spins\n",
        duration_s, static_cast<unsigned long long>(answered_),
        duration_s > 0 ? static_cast<double>(cpu.total_us()) / 1e4 / duration_s
                       : 0.0,
        duration_s > 0
            ? static_cast<double>(counters.kernel_entries()) / duration_s
            : 0.0,
        duration_s > 0
            ? static_cast<double>(counters.loop_iterations) / duration_s
            : 0.0,
        static_cast<unsigned long long>(counters.hybrid_spins));
    return;
  }
  std::printf(
      "  rtt us: min %.2f  mean %.2f  p50 %.2f  p90 %.2f  p99 %.2f  "
      "p99.9 %.2f  max %.2f\n",
      Us(histogram_.min()), histogram_.mean() / 1000.0,
      Us(histogram_.Percentile(50)), Us(histogram_.Percentile(90)),
      Us(histogram_.Percentile(99)), Us(histogram_.Percentile(99.9)),
      Us(histogram_.max()));
  std::printf(
      "  %.1f msg/s over %.3f s; cpu %.2f us/msg; kernel entries %.3f/msg "
      "(io_uring_enter %llu, epoll_wait %llu, socket syscalls %llu)\n",
      duration_s > 0 ? samples / duration_s : 0.0, duration_s,
      static_cast<double>(cpu.total_us()) / samples,
      static_cast<double>(counters.kernel_entries()) / samples,
      static_cast<unsigned long long>(counters.io_uring_enter),
      static_cast<unsigned long long>(counters.epoll_wait),
      static_cast<unsigned long long>(counters.socket_syscalls));
  if (stale_replies_ > 0 || send_errors_ > 0 || receive_errors_ > 0) {
    std::printf("  stale replies %llu, send errors %llu, receive errors %llu\n",
                static_cast<unsigned long long>(stale_replies_),
                static_cast<unsigned long long>(send_errors_),
                static_cast<unsigned long long>(receive_errors_));
  }
}

}  // namespace

int RunPingPongClient(const PingPongConfig& config) {
  // SIGPIPE is left at its default on purpose: the Loop must never raise it
  // (issue 6, fault 2), and ignoring it here would hide a regression.
  if (config.cpu >= 0) {
    absl::Status pinned = PinThisThreadToCpu(config.cpu);
    if (!pinned.ok()) {
      std::fprintf(stderr, "ringlab_pingpong client: %s\n",
                   std::string(pinned.message()).c_str());
      return kExitUsage;
    }
  }
  // One descriptor per connection; the default soft limit (often 1024) is
  // below 10,000 connections.
  absl::StatusOr<uint64_t> nofile =
      RaiseOpenFileLimit(uint64_t{config.connections} + kSocketHeadroom);
  if (!nofile.ok()) {
    std::fprintf(stderr, "ringlab_pingpong client: %s\n",
                 std::string(nofile.status().message()).c_str());
    return kExitUnsupportedBackend;
  }
  absl::StatusOr<std::unique_ptr<Loop>> loop =
      Loop::Create(PingPongLoopOptions(config));
  if (!loop.ok()) {
    std::fprintf(stderr, "ringlab_pingpong client: backend %s: %s\n",
                 config.backend.c_str(), loop.status().ToString().c_str());
    return IsUnsupportedBackend(loop.status()) ? kExitUnsupportedBackend
                                               : kExitRunFailed;
  }
  // The Client (and its connection handlers) must outlive the Loop's
  // sockets: destroy the Loop first.
  auto client = std::make_unique<Client>(config, loop->get());
  const int exit_code = client->Run();
  loop->reset();
  return exit_code;
}

}  // namespace ringlab::bench
