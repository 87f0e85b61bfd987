#include "mqtt/multi_broker.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "mqtt/internal/absl_view.h"

namespace ringlab::mqtt {
namespace {

constexpr Duration kTick = std::chrono::milliseconds(50);

void Bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
  // One writer (the shard's Loop thread); readers elsewhere take snapshots.
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
uint64_t Get(const std::atomic<uint64_t>& c) {
  return c.load(std::memory_order_relaxed);
}

}  // namespace

// One Loop: its driver (and core), the channels to the other Loops, and the
// hooks the core calls: a forwarder (client publishes), an authenticator
// wrapper (CONNECT claims the client id, SUBSCRIBE marks the Loop as one
// with subscribers) and the consumer side of the channels into this Loop.
class MultiBroker::Shard final : public BrokerForwarder,
                                 public BrokerAuthenticator,
                                 public transport::LoopChannelHandler<Entry>,
                                 public transport::TimerHandler {
 private:
  // A CONNECT held on this Loop until its session lands here.
  struct Park {
    ConnectionId connection;
    uint64_t seq = 0;  // its number in the id table
    Timestamp since;
    bool clean_start = false;
    // Where the transit log stood (positions count every message ever
    // logged) when the id's first held CONNECT here began to wait; a newer
    // CONNECT that replaces it keeps these.
    uint64_t log_from = 0;
    uint64_t log_missed_from = 0;
  };

 public:
  Shard(MultiBroker* owner, size_t index) : owner_(owner), index_(index) {
    // Full size now: LogInTransit never allocates, and CatchUp may route
    // while a will is appended.
    transit_log_.reserve(kTransitLogMessages);
  }

  // BrokerForwarder: runs on this Loop for each client publish, after the
  // local routing.
  void OnClientPublish(const MessageRef& m) override {
    if (!parks_.empty()) LogInTransit(m);
    for (Outbound& o : out) {
      Release(o);
      const Shard& target = *owner_->shards_[o.target];
      if (!m->retain() &&
          !target.has_subscribers.load(std::memory_order_relaxed)) {
        Bump(skipped);
        continue;
      }
      const uint64_t seq = o.channel->accepted();
      if (!o.channel->Send(Entry{.message = m.get()})) {
        Bump(refused);
        continue;
      }
      // Kept until the target consumed the entry (it reads the bytes).
      o.held[seq % o.held.size()] = m;
      Bump(forwarded);
    }
  }

  // The consumer side: entries from any other Loop, on this Loop's thread.
  void OnChannelMessage(const Entry& e) override {
    if (e.session != nullptr) {
      OnDeliver(*e.client_id, e.transfer, *e.session);
      return;
    }
    if (e.message == nullptr) {
      OnExportRequest(*e.client_id, e.transfer);
      return;
    }
    const Message& m = *e.message;
    InjectedMessage in;
    in.topic = m.topic();
    in.payload = m.payload();
    in.qos = m.qos();
    in.retain = m.retain();
    in.properties = m.properties();
    const Timestamp now = loop->now();
    if (!m.expires_at().is_never()) {
      // MQTT-3.3.2-6: what is left of the interval travels on.
      const int64_t left_ns = (m.expires_at() - now).count();
      if (left_ns <= 0) {
        Bump(expired);
        return;
      }
      in.message_expiry_interval_s =
          uint32_t((left_ns + 999'999'999) / 1'000'000'000);
    }
    driver->broker().PublishMessage(in, now);
    Bump(received);
  }
  void OnChannelBatchEnd() override { driver->Flush(); }

  // BrokerAuthenticator: forwards to the configured one (if any).
  ReasonCode Authenticate(const Connect& connect) override {
    // The client id is claimed in ParkConnect, once the CONNECT passed
    // every check.
    return inner_ != nullptr ? inner_->Authenticate(connect)
                             : ReasonCode::kSuccess;
  }

  // BrokerForwarder: every accepted CONNECT with a client id, before its
  // session is looked up (multi_broker.h, "Sessions follow their client").
  bool ParkConnect(std::string_view client_id, bool clean_start,
                   ConnectionId connection, Timestamp now) override {
    // A Clean Start CONNECT waits too, for the old session to end where it
    // is (OnExportRequest): one path, and the old connection is closed by
    // the Loop that has it, wherever that is.
    const ConnectRoute r = owner_->RouteConnect(client_id, clean_start, index_);
    if (r.abort_loop != kNoLoop) {
      owner_->PostAbort(r.abort_loop, std::string(client_id), r.abort_seq);
    }
    Park park{.connection = connection,
              .seq = r.seq,
              .since = now,
              .clean_start = clean_start,
              .log_from = log_base_ + transit_log_.size(),
              .log_missed_from = transit_missed_};
    auto it = parks_.find(internal::AbslView(client_id));
    const bool replaces = it != parks_.end();
    if (replaces) {
      // An older CONNECT for this id waits here: the new one takes its
      // place (MQTT-3.1.4-3), and waits for the same session.
      driver->broker().AbortParkedConnect(it->second.connection,
                                          ReasonCode::kSessionTakenOver, now);
      park.log_from = it->second.log_from;
      park.log_missed_from = it->second.log_missed_from;
      parks_.erase(it);  // not ErasePark: `park` keeps its place in the log
      Bump(parks_replaced);
    }
    if (r.ask != kNoLoop) {
      Bump(handovers_requested);
      owner_->Request(r.ask, index_, std::string(client_id), r.transfer);
    }
    if (!r.hold) {
      if (replaces) {
        DropStart(park.log_from);
        TrimLog();
      }
      return false;
    }
    if (!replaces) NoteStart(park.log_from);
    parks_[std::string(client_id)] = park;
    return true;
  }

  // On this Loop, which held the session of `id` when a CONNECT elsewhere
  // asked for it (handover `transfer`).
  void OnExportRequest(const std::string& id, uint64_t transfer) {
    Broker& broker = driver->broker();
    const Timestamp now = loop->now();
    const ExportRoute r = owner_->RouteExport(id, index_, transfer);
    switch (r.kind) {
      case ExportRoute::kKeep: {
        // The newest CONNECT came back here before the request arrived: it
        // takes the session over locally (the core closes the old
        // connection, MQTT-3.1.4-3).
        auto it = parks_.find(id);
        if (it != parks_.end()) {
          // The session never left: what was published here meanwhile
          // reached it.
          const ConnectionId c = it->second.connection;
          ErasePark(it);
          Bump(kept);
          broker.ResumeConnect(c, now);
        }
        break;
      }
      case ExportRoute::kExport: {
        const std::optional<Broker::SessionInfo> info =
            broker.GetSessionInfo(id);
        if (info.has_value() && info->connected) Bump(remote_takeovers);
        if (r.end_session) {
          // The newest CONNECT starts clean (MQTT-3.1.2-4): the session
          // ends here, as on a takeover on one Loop, so its will is
          // published, delayed or not (MQTT 5.0 §3.1.3.2.2); nothing moves.
          broker.DisconnectClient(id, ReasonCode::kSessionTakenOver, now);
          Bump(sessions_ended);
          Deliver(r.target, id, transfer, std::nullopt);
        } else {
          Deliver(r.target, id, transfer,
                  broker.ExportSession(id, ReasonCode::kSessionTakenOver, now));
        }
        break;
      }
      case ExportRoute::kDiscard:
        // A handover that timed out: the copy here is no longer the
        // session, and its connection must not stay.
        if (broker.ExportSession(id, ReasonCode::kSessionTakenOver, now)
                .has_value()) {
          Bump(stale_discarded);
        }
        break;
      case ExportRoute::kIgnore:
        break;
    }
    driver->Flush();
  }

  // On this Loop: the session of `id` (or the news that there was none)
  // arrives, from the Loop that exported it or one that passed it on.
  void OnDeliver(const std::string& id, uint64_t transfer,
                 const std::shared_ptr<std::optional<StoredSession>>& session) {
    Broker& broker = driver->broker();
    const Timestamp now = loop->now();
    const LandRoute r = owner_->RouteLanding(id, index_, transfer);
    if (r.kind == LandRoute::kStale) {
      // Its CONNECT went on without it (handover_timeout).
      if (session->has_value()) Bump(lost);
      return;
    }
    auto it = parks_.find(id);
    std::optional<Park> held;
    if (it != parks_.end()) held = it->second;
    if (r.kind == LandRoute::kRelay) {
      // A newer CONNECT on another Loop superseded the one here while the
      // session was on its way: it goes on there.
      if (held.has_value()) {
        broker.AbortParkedConnect(held->connection,
                                  ReasonCode::kSessionTakenOver, now);
        ErasePark(id);
        Bump(parks_aborted);
      }
      Bump(relayed);
      SendSession(r.target, id, transfer, session);
      driver->Flush();
      return;
    }
    if (session->has_value()) {
      // A copy left here by a handover that timed out is not the session.
      (void)broker.ExportSession(id, ReasonCode::kSessionTakenOver, now);
      if (Import(**session, now)) {
        Bump(moved);
        if (held.has_value() && !held->clean_start) CatchUp(id, *held, now);
      } else {
        Bump(lost);
      }
    } else {
      Bump(empty);
    }
    if (held.has_value()) {
      ErasePark(id);
      broker.ResumeConnect(held->connection, now);
    }
    driver->Flush();
  }

  // Publishes of this Loop's clients while a CONNECT here waits for its
  // session: they went to the session's old Loop behind the request and
  // reached it after it had left, so the session here gets them
  // (CatchUp). Bounded; what does not fit is counted.
  static uint64_t LoggedBytes(const Message& m) {
    return m.topic().size() + m.payload().size();
  }
  void LogInTransit(const MessageRef& m) {
    const uint64_t bytes = LoggedBytes(*m);
    if (transit_log_.size() >= kTransitLogMessages ||
        transit_log_bytes_ + bytes > kTransitLogBytes) {
      ++transit_missed_;
      return;
    }
    transit_log_bytes_ += bytes;
    transit_log_.push_back(m);
  }

  // The session of `id` arrived for the CONNECT `park`: the messages
  // published here while it was on its way, in the order they were
  // published, after what it brought (a message a publisher here sent
  // before the CONNECT came went to the old Loop first and is in the
  // session already).
  void CatchUp(const std::string& id, const Park& park, Timestamp now) {
    Broker& broker = driver->broker();
    const uint64_t from = std::max(park.log_from, log_base_);
    for (uint64_t i = from - log_base_; i < transit_log_.size(); ++i) {
      caught_up.fetch_add(broker.RouteToSession(id, transit_log_[i], now),
                          std::memory_order_relaxed);
    }
    if (transit_missed_ > park.log_missed_from) {
      Bump(transit_missed, transit_missed_ - park.log_missed_from);
    }
  }

  // The log keeps what the CONNECTs still waiting here may need.
  void ErasePark(const std::string& id) {
    auto it = parks_.find(id);
    if (it != parks_.end()) ErasePark(it);
  }
  void ErasePark(absl::flat_hash_map<std::string, Park>::iterator it) {
    DropStart(it->second.log_from);
    parks_.erase(it);
    TrimLog();
  }
  void NoteStart(uint64_t from) { ++waiting_from_[from]; }
  void DropStart(uint64_t from) {
    auto it = waiting_from_.find(from);
    if (it != waiting_from_.end() && --it->second == 0) waiting_from_.erase(it);
  }
  void TrimLog() {
    const uint64_t keep_from = waiting_from_.empty()
                                   ? log_base_ + transit_log_.size()
                                   : waiting_from_.begin()->first;
    if (keep_from <= log_base_) return;
    const auto end = transit_log_.begin() + int64_t(keep_from - log_base_);
    for (auto i = transit_log_.begin(); i != end; ++i) {
      transit_log_bytes_ -= LoggedBytes(**i);
    }
    transit_log_.erase(transit_log_.begin(), end);
    log_base_ = keep_from;
  }

  // On this Loop: a newer CONNECT elsewhere superseded the one held here
  // (if it is still held).
  void OnAbort(const std::string& id, uint64_t seq) {
    auto it = parks_.find(id);
    if (it == parks_.end() || it->second.seq > seq) return;
    driver->broker().AbortParkedConnect(
        it->second.connection, ReasonCode::kSessionTakenOver, loop->now());
    ErasePark(it);
    Bump(parks_aborted);
    driver->Flush();
  }

  // This Loop's has_subscribers was set by the sender (SendSession).
  bool Import(const StoredSession& session, Timestamp now) {
    return driver->broker().ImportSession(session, now).ok();
  }

  // Set once, never cleared (multi_broker.h); seq_cst so that a publish
  // that follows on another Loop sees it.
  void MarkHasSubscribers() {
    if (!has_subscribers.load(std::memory_order_relaxed)) {
      has_subscribers.store(true, std::memory_order_seq_cst);
    }
  }

  void Deliver(size_t to, const std::string& id, uint64_t transfer,
               std::optional<StoredSession> session) {
    SendSession(
        to, id, transfer,
        std::make_shared<std::optional<StoredSession>>(std::move(session)));
  }

  // Through the channel to Loop `to`, like the messages: a message this
  // Loop routes after the session left is forwarded behind it, and finds it
  // there. The target counts as a Loop with subscribers from now on, or it
  // would not be forwarded at all.
  void SendSession(size_t to, const std::string& id, uint64_t transfer,
                   std::shared_ptr<std::optional<StoredSession>> session) {
    Shard* target = owner_->shards_[to].get();
    if (session->has_value() && !(*session)->subscriptions.empty()) {
      target->MarkHasSubscribers();
    }
    for (Outbound& o : out) {
      if (o.target != to) continue;
      Release(o);
      const uint64_t slot = o.channel->accepted() % o.ids.size();
      o.ids[slot] = id;
      o.sessions[slot] = std::move(session);
      const Entry e{.message = nullptr,
                    .client_id = &o.ids[slot],
                    .session = &o.sessions[slot],
                    .transfer = transfer};
      if (o.channel->Send(e)) return;
      session = std::move(o.sessions[slot]);  // both full: post it instead
      break;
    }
    target->loop->Post([target, id, transfer, session] {
      target->OnDeliver(id, transfer, session);
    });
  }

  // handover_timeout: a held CONNECT goes on without its session, or, if a
  // newer CONNECT elsewhere superseded it, is closed.
  void ExpireParks(Timestamp now) {
    const Duration limit = owner_->options_.handover_timeout;
    for (auto it = parks_.begin(); it != parks_.end();) {
      const Park& park = it->second;
      if (now - park.since < limit) {
        ++it;
        continue;
      }
      const ConnectionId c = park.connection;
      const bool go_on = owner_->TimeOutHold(it->first, index_, park.seq);
      ErasePark(it++);
      if (go_on) {
        Bump(timeouts);
        driver->broker().ResumeConnect(c, now);
      } else {
        Bump(parks_aborted);
        driver->broker().AbortParkedConnect(c, ReasonCode::kSessionTakenOver,
                                            now);
      }
    }
  }
  bool MayPublish(const ClientIdentity& client,
                  std::string_view topic) override {
    return inner_ == nullptr || inner_->MayPublish(client, topic);
  }
  bool MaySubscribe(const ClientIdentity& client,
                    std::string_view filter) override {
    const bool ok = inner_ == nullptr || inner_->MaySubscribe(client, filter);
    // Before the subscription exists and before its SUBACK: a publish sent
    // after the client saw the SUBACK finds the flag set.
    if (ok) MarkHasSubscribers();
    return ok;
  }
  bool MayReceive(const ClientIdentity& client,
                  std::string_view topic) override {
    return inner_ == nullptr || inner_->MayReceive(client, topic);
  }

  void OnTimer(uint64_t, Timestamp now) override {
    for (Outbound& o : out) Release(o);
    if (!parks_.empty()) {
      ExpireParks(now);
      driver->Flush();
    }
    const BrokerCounters& c = driver->broker().counters();
    gauges.delivered.store(
        c.publishes_sent[0] + c.publishes_sent[1] + c.publishes_sent[2],
        std::memory_order_relaxed);
    gauges.received.store(c.publishes_received[0] + c.publishes_received[1] +
                              c.publishes_received[2],
                          std::memory_order_relaxed);
    gauges.kernel_entries.store(loop->counters().kernel_entries(),
                                std::memory_order_relaxed);
    gauges.connections.store(driver->broker().connection_count(),
                             std::memory_order_relaxed);
    if (!stopping_ && owner_->stop_requested_.load()) {
      stopping_ = true;
      if (owner_->options_.before_shutdown) {
        owner_->options_.before_shutdown(index_);
      }
      driver->Shutdown();
      stop_at_ = now + owner_->options_.stop_linger;
    }
    if (stopping_ && now >= stop_at_) loop->Stop();
  }

  void Release(Outbound& o) {
    const uint64_t done = o.channel->consumed();
    while (o.released < done) {
      const size_t slot = o.released % o.held.size();
      o.held[slot].Reset();
      o.sessions[slot].reset();
      ++o.released;
    }
  }

  void set_inner(BrokerAuthenticator* inner) { inner_ = inner; }

  std::unique_ptr<transport::Loop> loop;
  std::unique_ptr<BrokerAuthenticator> own_auth;  // make_authenticator's
  std::unique_ptr<BrokerDriver> driver;
  std::vector<Outbound> out;  // to every other Loop
  uint64_t timer = 0;
  LoopGauges gauges;
  std::atomic<bool> has_subscribers{false};
  std::atomic<uint64_t> forwarded{0}, refused{0}, skipped{0}, received{0},
      expired{0}, remote_takeovers{0}, handovers_requested{0}, moved{0},
      empty{0}, timeouts{0}, lost{0}, parks_replaced{0}, parks_aborted{0},
      relayed{0}, kept{0}, stale_discarded{0}, caught_up{0}, transit_missed{0},
      sessions_ended{0};

 private:
  MultiBroker* owner_;
  size_t index_;
  BrokerAuthenticator* inner_ = nullptr;
  bool stopping_ = false;
  Timestamp stop_at_ = Timestamp::Never();
  absl::flat_hash_map<std::string, Park> parks_;  // by client id
  // LogInTransit: kept while parks_ is not empty.
  static constexpr size_t kTransitLogMessages = 4096;
  static constexpr uint64_t kTransitLogBytes = 64 << 20;
  std::vector<MessageRef> transit_log_;
  uint64_t log_base_ = 0;  // the position of transit_log_[0]
  // How many parks began waiting at each log position (the smallest is
  // where the log must start).
  std::map<uint64_t, uint32_t> waiting_from_;
  uint64_t transit_log_bytes_ = 0;
  uint64_t transit_missed_ = 0;
};

MultiBroker::MultiBroker(MultiBrokerOptions options)
    : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<MultiBroker>> MultiBroker::Create(
    MultiBrokerOptions options, std::unique_ptr<transport::Loop> first) {
  if (options.threads < 1 || options.threads > 64) {
    return absl::InvalidArgumentError("MultiBroker: threads must be 1..64");
  }
  std::unique_ptr<MultiBroker> mb(new MultiBroker(std::move(options)));
  const MultiBrokerOptions& o = mb->options_;
  const uint32_t n = o.threads;
  for (uint32_t i = 0; i < n; ++i) {
    auto shard = std::make_unique<Shard>(mb.get(), i);
    if (i == 0 && first != nullptr) {
      shard->loop = std::move(first);
    } else {
      absl::StatusOr<std::unique_ptr<transport::Loop>> loop =
          transport::Loop::Create(o.loop);
      if (!loop.ok()) return loop.status();
      shard->loop = *std::move(loop);
    }
    mb->shards_.push_back(std::move(shard));
  }
  for (uint32_t i = 0; i < n; ++i) {
    Shard& s = *mb->shards_[i];
    BrokerDriverOptions d = o.driver;
    d.tcp.reuse_port = true;
    if (i > 0) d.listen = mb->local_;  // the port Loop 0 got
    if (o.make_authenticator) {
      s.own_auth = o.make_authenticator();
      if (s.own_auth == nullptr) {
        return absl::InvalidArgumentError("MultiBroker: no authenticator");
      }
      s.set_inner(s.own_auth.get());
    } else {
      s.set_inner(o.driver.authenticator);
    }
    d.authenticator = &s;
    if (n > 1) {
      d.broker.assigned_client_id_prefix =
          absl::StrCat(o.driver.broker.assigned_client_id_prefix, "L", i, "-");
      // The listeners share the port: each takes its part of the rate.
      d.broker.rate.connections_per_s /= n;
      d.broker.rate.connection_burst /= n;
    }
    absl::StatusOr<std::unique_ptr<BrokerDriver>> driver =
        BrokerDriver::Start(s.loop.get(), std::move(d));
    if (!driver.ok()) return driver.status();
    s.driver = *std::move(driver);
    if (i == 0) mb->local_ = s.driver->local_endpoint();
    if (n > 1) s.driver->broker().set_forwarder(&s);
  }
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t j = 0; j < n; ++j) {
      if (i == j) continue;
      Shard& from = *mb->shards_[i];
      Shard& to = *mb->shards_[j];
      absl::StatusOr<std::unique_ptr<transport::LoopChannel<Entry>>> ch =
          transport::LoopChannel<Entry>::Create(from.loop.get(), to.loop.get(),
                                                &to, o.channel);
      if (!ch.ok()) return ch.status();
      Outbound& out = from.out.emplace_back();
      out.channel = *std::move(ch);
      out.held.resize(size_t(o.channel.capacity) + o.channel.overflow_capacity);
      out.ids.resize(out.held.size());
      out.sessions.resize(out.held.size());
      out.target = j;
    }
  }
  for (auto& s : mb->shards_) {
    s->timer = s->loop->AddTimer(s->loop->now() + kTick, kTick, s.get());
  }
  return mb;
}

MultiBroker::~MultiBroker() {
  RequestStop();
  Join();
  // Channels first (they hook into two Loops and hold messages of their
  // producer's pool), then the drivers, then the Loops.
  for (auto& s : shards_) {
    for (Outbound& o : s->out) {
      for (MessageRef& m : o.held) m.Reset();
    }
    s->out.clear();
  }
  for (auto& s : shards_) {
    if (s->timer != 0) s->loop->CancelTimer(s->timer);
    s->driver.reset();
  }
  for (auto& s : shards_) s->loop.reset();
}

void MultiBroker::Start() {
  for (size_t i = 0; i < shards_.size(); ++i) {
    Shard* s = shards_[i].get();
    const int cpu = options_.first_cpu >= 0 ? options_.first_cpu + int(i) : -1;
    threads_.emplace_back([s, cpu] {
      if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
      }
      (void)s->loop->Run();
    });
  }
}

void MultiBroker::RequestStop() {
  // An atomic store: safe from a signal handler. Each Loop's timer sees it.
  stop_requested_.store(true);
}

void MultiBroker::Join() {
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

transport::Loop& MultiBroker::loop(size_t i) { return *shards_[i]->loop; }
BrokerDriver& MultiBroker::driver(size_t i) { return *shards_[i]->driver; }
const MultiBroker::LoopGauges& MultiBroker::gauges(size_t i) const {
  return shards_[i]->gauges;
}

void MultiBroker::PostToAll(std::function<void(size_t)> fn) {
  for (size_t i = 0; i < shards_.size(); ++i) {
    shards_[i]->loop->Post([fn, i] { fn(i); });
  }
}

transport::ChannelNotify MultiBroker::notify_mode() const {
  for (const auto& s : shards_) {
    for (const Outbound& o : s->out) return o.channel->notify_mode();
  }
  return transport::ChannelNotify::kAuto;
}

std::string MultiBroker::notify_note() const {
  for (const auto& s : shards_) {
    for (const Outbound& o : s->out) return o.channel->notify_note();
  }
  return "one Loop: no channels";
}

MultiBrokerCounters MultiBroker::counters() const {
  MultiBrokerCounters c;
  for (const auto& s : shards_) {
    c.forwarded += Get(s->forwarded);
    c.forward_received += Get(s->received);
    c.forward_refused += Get(s->refused);
    c.forward_skipped += Get(s->skipped);
    c.forward_expired += Get(s->expired);
    c.remote_takeovers += Get(s->remote_takeovers);
    c.sessions_relayed += Get(s->relayed);
    c.sessions_kept += Get(s->kept);
    c.parks_aborted += Get(s->parks_aborted);
    c.stale_sessions_discarded += Get(s->stale_discarded);
    c.handovers_requested += Get(s->handovers_requested);
    c.sessions_moved += Get(s->moved);
    c.handovers_empty += Get(s->empty);
    c.handover_timeouts += Get(s->timeouts);
    c.handovers_lost += Get(s->lost);
    c.parks_replaced += Get(s->parks_replaced);
    c.transit_caught_up += Get(s->caught_up);
    c.sessions_ended += Get(s->sessions_ended);
    c.transit_missed += Get(s->transit_missed);
    for (const Outbound& o : s->out) {
      const transport::LoopChannelCounters k = o.channel->counters();
      c.queue_full += k.queue_full;
      c.notifications += k.notifications;
      c.msg_ring_notifications += k.msg_ring_notifications;
      c.eventfd_notifications += k.eventfd_notifications;
      c.msg_ring_failures += k.msg_ring_failures;
    }
  }
  return c;
}

MultiBroker::ConnectRoute MultiBroker::RouteConnect(std::string_view client_id,
                                                    bool clean_start,
                                                    size_t loop) {
  absl::MutexLock lock(&ids_mu_);
  ConnectRoute r;
  r.seq = ++next_claim_;
  const uint32_t here = uint32_t(loop);
  auto [it, inserted] = ids_.try_emplace(
      std::string(client_id),
      IdRecord{.latest_loop = here, .latest_seq = r.seq, .home = here});
  if (inserted) return r;  // a new id: its session (if any) starts here
  IdRecord& rec = it->second;
  rec.latest_clean = clean_start;
  // The record keeps home == latest_loop or home == kInTransit. In transit,
  // the previous newest CONNECT is held on its Loop: this one supersedes it.
  if (rec.home == kInTransit && rec.latest_loop != here) {
    r.abort_loop = rec.latest_loop;
    r.abort_seq = rec.latest_seq;
  }
  rec.latest_loop = here;
  rec.latest_seq = r.seq;
  if (rec.home == here) return r;  // the session is here: the core decides
  r.hold = true;
  if (rec.home != kInTransit) {
    r.ask = rec.home;
    r.transfer = ++rec.transfer;
    rec.exporter = rec.home;
    rec.home = kInTransit;
  }
  // Else a handover is on its way already; it lands on the newest CONNECT.
  return r;
}

MultiBroker::ExportRoute MultiBroker::RouteExport(const std::string& client_id,
                                                  size_t loop,
                                                  uint64_t transfer) {
  absl::MutexLock lock(&ids_mu_);
  const uint32_t here = uint32_t(loop);
  auto it = ids_.find(client_id);
  if (it == ids_.end()) return {ExportRoute::kIgnore, 0};
  IdRecord& rec = it->second;
  if (rec.home == kInTransit && rec.exporter == here &&
      rec.transfer == transfer) {
    rec.exporter = kNoLoop;
    if (rec.latest_loop == here) {
      rec.home = here;
      return {ExportRoute::kKeep, here};
    }
    return {ExportRoute::kExport, rec.latest_loop, rec.latest_clean};
  }
  // A request whose handover timed out. The session is elsewhere unless
  // this Loop holds it again (home) or must export it for a newer one.
  if (rec.home != here && rec.exporter != here) {
    return {ExportRoute::kDiscard, 0};
  }
  return {ExportRoute::kIgnore, 0};
}

MultiBroker::LandRoute MultiBroker::RouteLanding(const std::string& client_id,
                                                 size_t loop,
                                                 uint64_t transfer) {
  absl::MutexLock lock(&ids_mu_);
  const uint32_t here = uint32_t(loop);
  auto it = ids_.find(client_id);
  if (it == ids_.end()) return {LandRoute::kStale, 0};
  IdRecord& rec = it->second;
  if (rec.home != kInTransit || rec.transfer != transfer ||
      rec.exporter != kNoLoop) {
    return {LandRoute::kStale, 0};
  }
  if (rec.latest_loop == here) {
    rec.home = here;
    return {LandRoute::kHere, here};
  }
  return {LandRoute::kRelay, rec.latest_loop};
}

bool MultiBroker::TimeOutHold(const std::string& client_id, size_t loop,
                              uint64_t seq) {
  absl::MutexLock lock(&ids_mu_);
  const uint32_t here = uint32_t(loop);
  auto it = ids_.find(client_id);
  if (it == ids_.end()) return true;
  IdRecord& rec = it->second;
  if (rec.latest_loop != here || rec.latest_seq != seq) return false;
  if (rec.home == kInTransit) {
    // The session goes on here, new; the handover on its way is stale, and
    // the Loop that has not exported yet discards its copy.
    rec.home = here;
    rec.exporter = kNoLoop;
    ++rec.transfer;
  }
  return true;
}

void MultiBroker::Request(size_t target, size_t from, std::string client_id,
                          uint64_t transfer) {
  // On Loop `from`'s thread (its producer side of the channel to `target`).
  // Through the channel: a publish this Loop acknowledged before the
  // CONNECT reaches the session before it moves.
  Shard& source = *shards_[from];
  for (Outbound& o : source.out) {
    if (o.target != target) continue;
    source.Release(o);
    const uint64_t slot = o.channel->accepted() % o.ids.size();
    o.ids[slot] = std::move(client_id);
    const Entry e{
        .message = nullptr, .client_id = &o.ids[slot], .transfer = transfer};
    if (o.channel->Send(e)) return;
    client_id = std::move(o.ids[slot]);  // both full: post it instead
    break;
  }
  Shard* s = shards_[target].get();
  s->loop->Post([s, id = std::move(client_id), transfer] {
    s->OnExportRequest(id, transfer);
  });
}

void MultiBroker::PostAbort(size_t target, std::string client_id,
                            uint64_t seq) {
  Shard* s = shards_[target].get();
  s->loop->Post([s, id = std::move(client_id), seq] { s->OnAbort(id, seq); });
}

}  // namespace ringlab::mqtt
