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
constexpr uint32_t kMaxLoops = 64;  // MultiBrokerOptions::threads

void Bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
  // One writer (the shard's Loop thread); readers elsewhere take snapshots.
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
uint64_t Get(const std::atomic<uint64_t>& c) {
  return c.load(std::memory_order_relaxed);
}

// A FIFO that grows by doubling and then stays: no allocation per entry
// once it has grown to the peak of what waits.
template <typename T>
class GrowRing {
 public:
  explicit GrowRing(size_t capacity = 256) : buf_(capacity) {}
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](size_t i) { return buf_[(head_ + i) % buf_.size()]; }
  const T& operator[](size_t i) const {
    return buf_[(head_ + i) % buf_.size()];
  }
  T& front() { return (*this)[0]; }
  void pop_front() {
    head_ = (head_ + 1) % buf_.size();
    --size_;
  }
  void push_back(const T& v) {
    if (size_ == buf_.size()) {
      std::vector<T> grown(buf_.size() * 2);
      for (size_t i = 0; i < size_; ++i) grown[i] = (*this)[i];
      buf_.swap(grown);
      head_ = 0;
    }
    buf_[(head_ + size_) % buf_.size()] = v;
    ++size_;
  }

 private:
  std::vector<T> buf_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace

// One Loop: its driver (and core), the channels to the other Loops, and the
// hooks the core calls: a forwarder (client publishes), an authenticator
// wrapper (CONNECT claims the client id, SUBSCRIBE marks the Loop as one
// with subscribers) and the consumer side of the channels into this Loop.
//
// Cuts. A session that moves from Loop A to Loop B must get each message
// it matches once, wherever it was routed. Each Loop numbers its clients'
// publishes; a Loop routes the messages of each other Loop in their order
// (one FIFO channel per pair). When A exports, the session carries A's cut
// (seen[x]: the newest number of Loop x that A routed) and B gives it the
// messages it routed itself that lie beyond the cut (the transit log), and
// routes the later ones to it as to any session. That is exact when
//  (1) every message of x up to seen[x] has been routed by B before the
//      session is added there, so none of them reaches it twice: true for
//      x = A (its messages are in front of the session in the channel A->B)
//      and for x = B; for a third Loop C, B asks C for a marker (kSync) and
//      adds the session once the marker, which C sends behind everything it
//      sent before, arrived;
//  (2) every message of x beyond seen[x] that B routed before the session
//      landed is in B's log, which starts when B's CONNECT began to wait:
//      messages B routed earlier must be within A's cut. For x = B its
//      request, and everything B sent before it, is in front of it at A;
//      for a third Loop C, A asks C for a marker when the request arrives
//      and exports once it has it, so A has routed all that C sent before
//      B's CONNECT, as B has.
// With two Loops there is no third one, and no marker is needed. A session
// passed on from B to D because a newer CONNECT arrived on D is added on B
// (with what B's log owes it) and exported again by B with B's cut, after
// markers from every other Loop (D's CONNECT may have begun to wait before
// D's earlier messages reached B); a CONNECT that was superseded keeps its
// place in the log (a ghost) until its session came through or
// handover_timeout passed. A Loop that waits for a session counts as one
// with subscribers from then on, so a third Loop forwards to it what it
// publishes after its marker.
class MultiBroker::Shard final : public BrokerForwarder,
                                 public BrokerAuthenticator,
                                 public BrokerStore,
                                 public transport::LoopChannelHandler<Entry>,
                                 public transport::TimerHandler {
 private:
  // A CONNECT held on this Loop until its session lands here.
  struct Park {
    ConnectionId connection;
    uint64_t seq = 0;  // its number in the id table
    Timestamp since;
    bool clean_start = false;
    // Superseded by a newer CONNECT elsewhere (connection closed); kept for
    // its place in the log until the session came through.
    bool ghost = false;
    // Where the transit log stood (positions count every message ever
    // logged) when the id's first held CONNECT here began to wait; a newer
    // CONNECT that replaces it keeps these.
    uint64_t log_from = 0;
    uint64_t log_missed_from = 0;
  };
  // A message this Loop routed while a CONNECT waited here.
  struct Logged {
    uint32_t source = 0;  // the Loop its publisher is on
    uint64_t seq = 0;     // its publish number there
    MessageRef message;   // this Loop's copy
  };
  // An export or a landing waiting for the markers of the other Loops.
  struct Wait {
    enum Kind { kExport, kLand } kind = kExport;
    std::string id;
    uint64_t transfer = 0;
    uint32_t target = 0;  // kExport: where the session goes
    uint32_t remaining = 0;
    std::shared_ptr<Moving> moving;  // kLand
  };
  // Cross-Loop durability ("written_sequence", below): a QoS 1/2 forward
  // this Loop made, and one it routed from another Loop.
  struct ForwardHold {
    uint64_t combined = 0;
    uint64_t store_written = 0;
    uint64_t publish_seq = 0;
    uint64_t targets = 0;  // bit i: Loop i
    // "Exactly once across Loops": a QoS 2 exchange of a stored session
    // whose packet id is written here once the targets confirmed, and
    // counts as durable once that write is. id_written: the store's
    // sequence of the write (0: not yet); cancelled: the session ended
    // first, so it is not written.
    uint16_t packet_id = 0;
    bool cancelled = false;
    bool released = false;  // its PUBREL came first: clear, do not write
    uint64_t id_written = 0;
    std::string origin = {};
    // A gate (receiver side): this Loop routed QoS 2 message publish_seq of
    // Loop `gate_source`, whose copies here wait for its kCommitted.
    bool gate = false;
    uint32_t gate_source = 0;
  };
  struct Routed {
    uint64_t seq = 0;
    uint64_t store_written = 0;
  };

 public:
  Shard(MultiBroker* owner, size_t index, size_t loops)
      : last_seen(loops, 0),
        owner_(owner),
        index_(index),
        confirmed_through_(loops, 0),
        committed_through_(loops, 0),
        routed_(loops),
        confirm_sent_(loops, 0) {
    // Full size now: LogInTransit never allocates, and CatchUp may route
    // while a will is appended.
    transit_log_.reserve(kTransitLogMessages);
  }

  // BrokerForwarder: runs on this Loop for each client publish, after the
  // local routing.
  void OnClientPublish(const MessageRef& m) override {
    const uint64_t seq = ++publish_seq_;
    if (!parks_.empty()) LogInTransit(uint32_t(index_), seq, m);
    // With a store, the Loops this QoS 1/2 message goes to must store
    // their subscribers' copies before the publisher's ack ("Cross-Loop
    // durability", below).
    const bool confirm = store != nullptr && m->qos() > 0;
    // "Exactly once across Loops": the core tagged this publish's copies
    // (SetQueuedOrigin) and writes its packet id next (PutInboundQos2).
    const bool exchange = confirm && m->qos() == 2 && origin_packet_id_ != 0;
    uint64_t targets = 0;
    for (Outbound& o : out) {
      Release(o);
      const Shard& target = *owner_->shards_[o.target];
      if (!m->retain() &&
          !target.has_subscribers.load(std::memory_order_relaxed)) {
        Bump(skipped);
        continue;
      }
      const uint64_t slot = o.channel->accepted();
      const std::string* origin = nullptr;
      if (exchange) {
        // Kept until the target consumed the entry, like the message.
        std::string& kept = o.ids[slot % o.ids.size()];
        kept.assign(origin_);
        origin = &kept;
      }
      if (!o.channel->Send(Entry{.kind = Entry::kMessage,
                                 .source = uint32_t(index_),
                                 .seq = seq,
                                 .message = m.get(),
                                 .client_id = origin,
                                 .transfer = origin_packet_id_})) {
        Bump(refused);
        continue;
      }
      // Kept until the target consumed the entry (it reads the bytes).
      o.held[slot % o.held.size()] = m;
      Bump(forwarded);
      if (confirm) targets |= uint64_t{1} << o.target;
    }
    if (targets != 0) {
      TrimHolds();
      ++forwards_total_;
      ForwardHold h{.combined = store->written_sequence() + forwards_total_,
                    .store_written = store->written_sequence(),
                    .publish_seq = seq,
                    .targets = targets};
      if (exchange) {
        h.packet_id = origin_packet_id_;
        h.origin = origin_;
        defer_id_ = true;  // PutInboundQos2, next, leaves it to the hold
      }
      holds_.push_back(h);
    }
  }

  // BrokerForwarder: a shared group's member count here changed. The count
  // is stored before the SUBACK goes out, so a message published after it
  // finds the member on every Loop that routes it.
  uint32_t OnSharedGroupMembers(std::string_view group, std::string_view filter,
                                uint32_t slot, size_t members) override {
    if (slot == 0) {
      if (members == 0) return 0;
      GroupMembers* g = owner_->FindGroupMembers(group, filter);
      if (free_group_slots_.empty()) {
        group_slots_.push_back(g);
        slot = uint32_t(group_slots_.size());
      } else {
        slot = free_group_slots_.back();
        free_group_slots_.pop_back();
        group_slots_[slot - 1] = g;
      }
    }
    group_slots_[slot - 1]->on_loop[index_].store(uint32_t(members),
                                                  std::memory_order_release);
    if (members > 0) return slot;
    group_slots_[slot - 1] = nullptr;
    free_group_slots_.push_back(slot);
    return 0;
  }

  // BrokerForwarder: whether this Loop's members of a shared group take
  // `m`. Every Loop that routes the message picks the same member index k
  // (from the publisher's Loop and its publish number) over the group's
  // members counted Loop by Loop, so one Loop takes it.
  bool DeliverToGroup(uint32_t slot, const Message& m) override {
    if (slot == 0) return true;
    uint64_t key;
    if (m.publisher() != kNoPublisher) {
      // A client's publish or will here: OnClientPublish numbers it next.
      key = publish_seq_ + 1 + index_;
    } else if (routing_foreign_) {
      key = routing_key_;
    } else {
      return true;  // injected on this Loop only ($SYS)
    }
    // One read of each count, so the walk below sees the same numbers as
    // the total.
    const std::atomic<uint32_t>* on_loop =
        group_slots_[slot - 1]->on_loop.get();
    const size_t loops = last_seen.size();
    uint32_t counts[kMaxLoops];
    uint64_t total = 0;
    for (size_t i = 0; i < loops; ++i) {
      counts[i] = on_loop[i].load(std::memory_order_acquire);
      total += counts[i];
    }
    if (total == 0) return true;  // our own count is not in yet: take it
    uint64_t k = key % total;
    size_t turn = 0;
    while (k >= counts[turn]) k -= counts[turn++];
    if (turn == index_) return true;
    Bump(shared_elsewhere);
    return false;
  }

  // The consumer side: entries from any other Loop, on this Loop's thread.
  void OnChannelMessage(const Entry& e) override {
    switch (e.kind) {
      case Entry::kSession:
        OnDeliver(*e.client_id, e.transfer, *e.session);
        return;
      case Entry::kRequest:
        Saw(e.source, e.seq);
        OnExportRequest(*e.client_id, e.transfer, e.source);
        return;
      case Entry::kSync:
        SendMarker(e.source, e.transfer);
        return;
      case Entry::kMarker:
        Saw(e.source, e.seq);
        OnMarker(e.transfer);
        return;
      case Entry::kDurable:
        if (store != nullptr) OnDurable(e.source, e.transfer);
        return;
      case Entry::kCommitted:
        if (store != nullptr) OnCommitted(e.source, e.transfer);
        return;
      case Entry::kMessage:
        break;
    }
    if (store != nullptr && e.message->qos() > 0) {
      // Also when it is dropped below: the sender waits for this number.
      struct Note {
        Shard* shard;
        const Entry& e;
        ~Note() { shard->NoteRouted(e.source, e.seq); }
      } note{this, e};
      RouteForeign(e);
      return;
    }
    RouteForeign(e);
  }

  void RouteForeign(const Entry& e) {
    Saw(e.source, e.seq);
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
    // A QoS 2 exchange whose packet id the source writes once every copy is
    // stored: the copies queued here carry it (so a restore drops them if
    // it never was), and their sends wait for a gate step that the
    // source's kCommitted completes ("Exactly once across Loops").
    const bool exchange = store != nullptr && e.client_id != nullptr;
    if (exchange) {
      store->SetQueuedOrigin(*e.client_id, uint16_t(e.transfer));
      TrimHolds();
      ++forwards_total_;
      holds_.push_back(
          ForwardHold{.combined = store->written_sequence() + forwards_total_,
                      .store_written = store->written_sequence(),
                      .publish_seq = e.seq,
                      .gate = true,
                      .gate_source = e.source});
      in.hold_until_sequence = written_sequence();
    }
    routing_foreign_ = true;
    routing_key_ = e.seq + e.source;  // as DeliverToGroup on the source
    MessageRef copy = driver->broker().PublishMessage(in, now);
    routing_foreign_ = false;
    if (exchange) store->SetQueuedOrigin({}, 0);
    if (!parks_.empty() && copy) LogInTransit(e.source, e.seq, copy);
    Bump(received);
  }
  void OnChannelBatchEnd() override {
    if (store != nullptr) SendConfirmations();
    driver->Flush();
  }

  // BrokerStore (with --data-dir): this Loop's SqliteStore, one of the N
  // that write the one database. A retained message (or clear) that came
  // from another Loop is that Loop's to write: each Loop applies it, one
  // writes it.
  void PutRetained(const Message& message, Timestamp now) override {
    if (!routing_foreign_) store->PutRetained(message, now);
  }
  void DeleteRetained(std::string_view topic) override {
    if (!routing_foreign_) store->DeleteRetained(topic);
  }
  void PutSession(std::string_view client_id,
                  uint32_t expiry_interval_s) override {
    store->PutSession(client_id, expiry_interval_s);
  }
  void DeleteSession(std::string_view client_id) override {
    // Its exchanges whose ids are not written yet never will be: the id
    // would outlive the session (and answer a later PUBLISH of a new one
    // as a duplicate after a restart). Their copies lose the tag with the
    // session's (store.h), so they are kept.
    ForPendingIdsOf(client_id, [](ForwardHold& h) { h.cancelled = true; });
    store->DeleteSession(client_id);
  }
  void PutSubscription(std::string_view client_id, std::string_view filter,
                       const SubscriptionOptions& options,
                       uint32_t subscription_id) override {
    store->PutSubscription(client_id, filter, options, subscription_id);
  }
  void DeleteSubscription(std::string_view client_id,
                          std::string_view filter) override {
    store->DeleteSubscription(client_id, filter);
  }
  uint64_t PutQueued(std::string_view client_id, const Message& message,
                     uint8_t qos, bool retain,
                     std::span<const uint32_t> subscription_ids,
                     Timestamp now) override {
    return store->PutQueued(client_id, message, qos, retain, subscription_ids,
                            now);
  }
  void DeleteQueued(uint64_t key) override { store->DeleteQueued(key); }
  void MarkQueuedSent(uint64_t key, uint16_t packet_id) override {
    store->MarkQueuedSent(key, packet_id);
  }
  void MarkQueuedReleased(uint64_t key) override {
    store->MarkQueuedReleased(key);
  }
  void PutInboundQos2(std::string_view client_id, uint16_t packet_id) override {
    if (defer_id_ && packet_id == origin_packet_id_ && client_id == origin_) {
      defer_id_ = false;  // the hold OnClientPublish made writes it
      return;
    }
    store->PutInboundQos2(client_id, packet_id);
  }
  void SetQueuedOrigin(std::string_view client_id,
                       uint16_t packet_id) override {
    origin_.assign(packet_id != 0 ? client_id : std::string_view());
    origin_packet_id_ = packet_id;
    defer_id_ = false;
    store->SetQueuedOrigin(client_id, packet_id);
  }
  void DeleteInboundQos2(std::string_view client_id,
                         uint16_t packet_id) override {
    // A PUBREL before its PUBREC (MQTT-4.3.3 forbids it) finds the id not
    // written yet: the hold then clears the tags instead, once the copies
    // it waits for are stored (WriteDeferredId).
    ForPendingIdsOf(client_id, [packet_id](ForwardHold& h) {
      if (h.packet_id == packet_id && !h.cancelled) h.released = true;
    });
    store->DeleteInboundQos2(client_id, packet_id);
  }
  // Cross-Loop durability. The core holds a PUBACK/PUBREC/PUBCOMP until
  // durable_sequence() covers the written_sequence() its packet reached.
  // Here both count this Loop's store changes and its QoS 1/2 forwards to
  // other Loops (one step each, in the order they happened), and a forward
  // counts as durable once every Loop it went to confirmed (kDurable) that
  // what it queued for its own sessions from this Loop's messages up to
  // that one is durable in its store. So an ack leaves only when every copy
  // of the message, on every Loop, is stored: the guarantee of one Loop
  // (a message whose ack went out is never lost to a crash) holds across
  // them.
  uint64_t written_sequence() const override {
    return store->written_sequence() + forwards_total_;
  }
  uint64_t durable_sequence() const override {
    const uint64_t d = store->durable_sequence();
    const uint64_t end = holds_base_ + holds_.size();
    // Forwards made after store change d+1 was written (the tail of the
    // ring) lie beyond the first change not yet durable.
    if (covered_abs_ < holds_base_) covered_abs_ = holds_base_;
    while (covered_abs_ < end &&
           holds_[covered_abs_ - holds_base_].store_written <= d) {
      ++covered_abs_;
    }
    const uint64_t store_bound = d + forwards_total_ - (end - covered_abs_);
    if (unconfirmed_abs_ >= end) return store_bound;
    return std::min(store_bound,
                    holds_[unconfirmed_abs_ - holds_base_].combined - 1);
  }
  void BeginGroup() override { store->BeginGroup(); }
  void EndGroup() override { store->EndGroup(); }

  // Sender side: Loop `from` confirmed our publishes up to `seq`.
  void OnDurable(uint32_t from, uint64_t seq) {
    if (seq <= confirmed_through_[from]) return;
    confirmed_through_[from] = seq;
    AdvanceHolds();
    driver->broker().OnStoreDurable(loop->now());
    driver->Flush();
  }
  // Receiver side: Loop `from` stored the packet ids of its QoS 2
  // exchanges up to `seq`; the copies they gate here may go out.
  void OnCommitted(uint32_t from, uint64_t seq) {
    if (seq <= committed_through_[from]) return;
    committed_through_[from] = seq;
    AdvanceHolds();
    driver->broker().OnStoreDurable(loop->now());
    driver->Flush();
  }
  // Exactly once across Loops. A QoS 2 exchange of a stored session routed
  // to other Loops has rows in several stores that commit apart: the
  // publisher Loop's copies and the other Loops' copies, each tagged with
  // the exchange (SetQueuedOrigin), and the packet id, written here only
  // once every target confirmed its copies durable (kDurable). The id row
  // is the commit point: a restore drops the tagged copies of an exchange
  // whose id is missing (the publisher resends it, since no PUBREC went
  // out, and it is routed afresh), and no copy is sent before the id is
  // durable (here through inbound_sequence_, elsewhere through the gate
  // that kCommitted opens), so none reached a subscriber either. A kill
  // between any two of those commits thus neither loses the resend nor
  // delivers it twice.
  void AdvanceHolds() {
    const uint64_t end = holds_base_ + holds_.size();
    // The ids of exchanges every target confirmed, in order (a gate does
    // not stop it; it writes nothing).
    if (issue_abs_ < holds_base_) issue_abs_ = holds_base_;
    while (issue_abs_ < end) {
      ForwardHold& h = holds_[issue_abs_ - holds_base_];
      if (!h.gate && !Confirmed(h)) break;
      WriteDeferredId(h);
      ++issue_abs_;
    }
    uint64_t committed_targets = 0;
    uint64_t committed_seq = 0;
    while (unconfirmed_abs_ < end &&
           Done(holds_[unconfirmed_abs_ - holds_base_])) {
      const ForwardHold& h = holds_[unconfirmed_abs_ - holds_base_];
      if (h.packet_id != 0) {
        committed_targets |= h.targets;
        committed_seq = h.publish_seq;
      }
      ++unconfirmed_abs_;
    }
    for (uint64_t t = committed_targets; t != 0; t &= t - 1) {
      SendControl(OutTo(size_t(__builtin_ctzll(t))),
                  Entry{.kind = Entry::kCommitted, .transfer = committed_seq});
    }
    TrimHolds();
  }
  void WriteDeferredId(ForwardHold& h) {
    if (h.packet_id == 0 || h.id_written != 0 || h.cancelled) return;
    if (h.released) {
      store->DeleteInboundQos2(h.origin, h.packet_id);  // the tags, now
    } else {
      store->PutInboundQos2(h.origin, h.packet_id);
    }
    h.id_written = store->written_sequence();
  }
  // A session that leaves this Loop takes its exchanges along: their ids
  // are written now, before the barrier that precedes the hand-over, so
  // the Loop it lands on finds them (and may delete them at its PUBREL).
  // The price: if a kill comes before the targets committed their copies,
  // the id is there without them (mqtt/README.md, "Durable state").
  void WriteDeferredIdsOf(std::string_view client_id) {
    ForPendingIdsOf(client_id, [this](ForwardHold& h) { WriteDeferredId(h); });
  }
  // The holds of `client_id`'s exchanges whose ids are not written yet
  // (all lie at or beyond issue_abs_).
  template <typename F>
  void ForPendingIdsOf(std::string_view client_id, F f) {
    for (uint64_t i = std::max(issue_abs_, holds_base_);
         i < holds_base_ + holds_.size(); ++i) {
      ForwardHold& h = holds_[i - holds_base_];
      if (h.packet_id != 0 && h.id_written == 0 && h.origin == client_id) f(h);
    }
  }
  bool Done(const ForwardHold& h) const {
    if (h.gate) return committed_through_[h.gate_source] >= h.publish_seq;
    if (!Confirmed(h)) return false;
    if (h.packet_id == 0 || h.cancelled) return true;
    return h.id_written != 0 && store->durable_sequence() >= h.id_written;
  }
  bool Confirmed(const ForwardHold& h) const {
    for (uint64_t t = h.targets; t != 0; t &= t - 1) {
      if (confirmed_through_[size_t(__builtin_ctzll(t))] < h.publish_seq) {
        return false;
      }
    }
    return true;
  }
  // Entries both confirmed and behind the store's durable change go.
  void TrimHolds() {
    const uint64_t d = store->durable_sequence();
    while (!holds_.empty() && holds_base_ < unconfirmed_abs_ &&
           holds_.front().store_written <= d) {
      holds_.pop_front();
      ++holds_base_;
    }
  }
  // Receiver side: a QoS 1/2 message of Loop `source` numbered `seq` was
  // routed here (or dropped); what it queued is in the store's changes up
  // to the current written_sequence().
  void NoteRouted(uint32_t source, uint64_t seq) {
    routed_[source].push_back(Routed{seq, store->written_sequence()});
  }
  // Tells each Loop how far its messages are durable here (one entry per
  // Loop per call at most; after each batch and each commit).
  void SendConfirmations() {
    const uint64_t d = store->durable_sequence();
    for (size_t source = 0; source < routed_.size(); ++source) {
      GrowRing<Routed>& r = routed_[source];
      uint64_t due = 0;
      while (!r.empty() && r.front().store_written <= d) {
        due = r.front().seq;
        r.pop_front();
      }
      if (due <= confirm_sent_[source]) continue;
      confirm_sent_[source] = due;
      SendControl(OutTo(source),
                  Entry{.kind = Entry::kDurable, .transfer = due});
    }
  }
  // After a commit of this Loop's store: the acks it covers, and the
  // confirmations it allows.
  void OnStoreProgress() {
    store->Poll();
    SendConfirmations();
    AdvanceHolds();
    driver->broker().OnStoreDurable(loop->now());
    driver->Flush();
  }

  // A session that will not be added anywhere (its handover timed out, or
  // the import failed): its queued rows go by key. Its subscriptions and
  // inbound QoS 2 ids are named by client id, which the session that went
  // on in its place may share, so they stay (mqtt/README.md, --threads).
  void ForgetStored(const std::optional<StoredSession>& session) {
    if (store == nullptr || !session.has_value() || !session->stored) return;
    for (const StoredQueued& q : session->queued) {
      if (q.key != 0) store->DeleteQueued(q.key);
    }
  }

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
    // Before the request leaves: what a third Loop publishes after its
    // marker must be forwarded here ("Cuts", above).
    if (r.hold && !clean_start) MarkHasSubscribers();
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
      // An older CONNECT for this id waits here (or its ghost): the new one
      // takes its place (MQTT-3.1.4-3), and waits for the same session.
      if (!it->second.ghost) {
        driver->broker().AbortParkedConnect(it->second.connection,
                                            ReasonCode::kSessionTakenOver, now);
        Bump(parks_replaced);
      }
      park.log_from = it->second.log_from;
      park.log_missed_from = it->second.log_missed_from;
      parks_.erase(it);  // not ErasePark: `park` keeps its place in the log
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

  // On this Loop, which held the session of `id` when a CONNECT on Loop
  // `requester` asked for it (handover `transfer`). The session goes to
  // the requester, whose request made the cut of its own messages.
  void OnExportRequest(const std::string& id, uint64_t transfer,
                       uint32_t requester) {
    StartExport(id, transfer, requester, requester);
  }

  // Exports the session of `id` to Loop `to` once every Loop other than
  // this one and `synced` sent its marker.
  void StartExport(const std::string& id, uint64_t transfer, uint32_t to,
                   uint32_t synced) {
    Wait w;
    w.kind = Wait::kExport;
    w.id = id;
    w.transfer = transfer;
    w.target = to;
    if (!Sync(std::move(w), synced)) FinishExport(id, transfer, to);
  }

  void FinishExport(const std::string& id, uint64_t transfer, uint32_t to) {
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
          const Park park = it->second;
          ErasePark(it);
          Bump(kept);
          if (!park.ghost) broker.ResumeConnect(park.connection, now);
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
          Deliver(to, id, transfer, std::nullopt);
        } else {
          Deliver(to, id, transfer,
                  broker.ExportSession(id, ReasonCode::kSessionTakenOver, now));
        }
        break;
      }
      case ExportRoute::kDiscard: {
        // A handover that timed out: the copy here is no longer the
        // session, and its connection must not stay.
        const std::optional<StoredSession> stale =
            broker.ExportSession(id, ReasonCode::kSessionTakenOver, now);
        if (stale.has_value()) {
          ForgetStored(stale);
          Bump(stale_discarded);
        }
        break;
      }
      case ExportRoute::kIgnore:
        break;
    }
    driver->Flush();
  }

  // On this Loop: the session of `id` (or the news that there was none)
  // arrives, from the Loop that exported it. It is added once every third
  // Loop's marker came ("Cuts", (1)).
  void OnDeliver(const std::string& id, uint64_t transfer,
                 const std::shared_ptr<Moving>& moving) {
    Wait w;
    w.kind = Wait::kLand;
    w.id = id;
    w.transfer = transfer;
    w.moving = moving;
    if (!moving->session.has_value() || !Sync(std::move(w), moving->exporter)) {
      FinishLanding(id, transfer, moving);
    }
  }

  void FinishLanding(const std::string& id, uint64_t transfer,
                     const std::shared_ptr<Moving>& moving) {
    Broker& broker = driver->broker();
    const Timestamp now = loop->now();
    const LandRoute r = owner_->RouteLanding(id, index_, transfer);
    if (r.kind == LandRoute::kStale) {
      // Its CONNECT went on without it (handover_timeout).
      if (moving->session.has_value()) {
        ForgetStored(moving->session);
        Bump(lost);
      }
      return;
    }
    auto it = parks_.find(id);
    std::optional<Park> held;
    if (it != parks_.end()) held = it->second;
    // A copy left here by a handover that timed out is not the session.
    ForgetStored(broker.ExportSession(id, ReasonCode::kSessionTakenOver, now));
    bool added = false;
    if (moving->session.has_value()) {
      added = Import(*moving->session, now);
      if (!added) {
        ForgetStored(moving->session);
        Bump(lost);
      }
    }
    // The messages routed here that lie beyond the cut; a Clean Start
    // CONNECT discards the session anyway.
    if (added && held.has_value() &&
        !(r.kind == LandRoute::kHere && held->clean_start)) {
      CatchUp(id, *held, moving->seen, now);
    }
    if (held.has_value()) ErasePark(id);
    if (r.kind == LandRoute::kRelay) {
      // A newer CONNECT on another Loop superseded the one here while the
      // session was on its way: this Loop exports it again, with its own
      // cut, after markers from every other Loop.
      if (held.has_value() && !held->ghost) {
        broker.AbortParkedConnect(held->connection,
                                  ReasonCode::kSessionTakenOver, now);
        Bump(parks_aborted);
      }
      Bump(relayed);
      if (added) {
        StartExport(id, r.transfer, r.target, kNoLoop);
      } else {
        FinishExport(id, r.transfer, r.target);
      }
      driver->Flush();
      return;
    }
    if (moving->session.has_value()) {
      if (added) Bump(moved);
    } else {
      Bump(empty);
    }
    if (held.has_value() && !held->ghost) {
      broker.ResumeConnect(held->connection, now);
    }
    driver->Flush();
  }

  // Asks every Loop but this one and `synced` for a marker; false if there
  // is none to ask (`w` is then dropped).
  bool Sync(Wait w, uint32_t synced) {
    const uint64_t token = ++next_token_;
    for (Outbound& o : out) {
      if (o.target == synced) continue;
      ++w.remaining;
      SendControl(o, Entry{.kind = Entry::kSync, .transfer = token});
    }
    if (w.remaining == 0) return false;
    waits_.emplace(token, std::move(w));
    return true;
  }
  void SendMarker(uint32_t to, uint64_t token) {
    SendControl(OutTo(to), Entry{.kind = Entry::kMarker, .transfer = token});
  }
  // The channel to Loop `to` (Create makes `out` in Loop order, without
  // this one).
  Outbound& OutTo(size_t to) { return out[to < index_ ? to : to - 1]; }
  void OnMarker(uint64_t token) {
    auto it = waits_.find(token);
    if (it == waits_.end() || --it->second.remaining > 0) return;
    Wait w = std::move(it->second);
    waits_.erase(it);
    if (w.kind == Wait::kExport) {
      FinishExport(w.id, w.transfer, w.target);
    } else {
      FinishLanding(w.id, w.transfer, w.moving);
    }
  }
  // A sync or a marker, behind what this Loop sent before (both full: posted,
  // which may overtake them; the forward_refused count says so).
  void SendControl(Outbound& o, Entry e) {
    e.source = uint32_t(index_);
    e.seq = publish_seq_;
    Release(o);
    if (o.channel->Send(e)) return;
    Shard* target = owner_->shards_[o.target].get();
    target->loop->Post([target, e] { target->OnChannelMessage(e); });
  }
  void Saw(uint32_t source, uint64_t seq) {
    if (seq > last_seen[source]) last_seen[source] = seq;
  }
  // What this Loop has routed so far: the cut a session it exports carries.
  std::vector<uint64_t> Cut() const {
    std::vector<uint64_t> seen = last_seen;
    seen[index_] = publish_seq_;
    return seen;
  }

  // Messages this Loop routes while a CONNECT here waits for its session
  // (its clients' publishes and the other Loops'): CatchUp gives a session
  // that lands here those beyond its cut. Bounded; what does not fit is
  // counted.
  static uint64_t LoggedBytes(const Message& m) {
    return m.topic().size() + m.payload().size();
  }
  void LogInTransit(uint32_t source, uint64_t seq, const MessageRef& m) {
    const uint64_t bytes = LoggedBytes(*m);
    if (transit_log_.size() >= kTransitLogMessages ||
        transit_log_bytes_ + bytes > kTransitLogBytes) {
      ++transit_missed_;
      return;
    }
    transit_log_bytes_ += bytes;
    transit_log_.push_back(Logged{.source = source, .seq = seq, .message = m});
  }

  // The session of `id` was added here for the CONNECT `park`: the logged
  // messages beyond the cut `seen`, in the order they were routed here
  // (which keeps each publisher's order), after what it brought.
  void CatchUp(const std::string& id, const Park& park,
               const std::vector<uint64_t>& seen, Timestamp now) {
    Broker& broker = driver->broker();
    const uint64_t from = std::max(park.log_from, log_base_);
    for (uint64_t i = from - log_base_; i < transit_log_.size(); ++i) {
      const Logged& l = transit_log_[i];
      if (l.source < seen.size() && l.seq <= seen[l.source]) continue;
      caught_up.fetch_add(broker.RouteToSession(id, l.message, now),
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
      transit_log_bytes_ -= LoggedBytes(*i->message);
    }
    transit_log_.erase(transit_log_.begin(), end);
    log_base_ = keep_from;
  }

  // On this Loop: a newer CONNECT elsewhere superseded the one held here
  // (if it is still held). It stays as a ghost: the session may still come
  // through here.
  void OnAbort(const std::string& id, uint64_t seq) {
    auto it = parks_.find(id);
    if (it == parks_.end() || it->second.seq > seq || it->second.ghost) {
      return;
    }
    driver->broker().AbortParkedConnect(
        it->second.connection, ReasonCode::kSessionTakenOver, loop->now());
    it->second.ghost = true;
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
    // What this Loop wrote for the id (the session's rows, or their
    // deletion when it ended) is committed before the next Loop writes
    // them through its own store: SQLite then orders the two.
    if (store != nullptr) {
      WriteDeferredIdsOf(id);
      store->SyncNow();
    }
    auto moving = std::make_shared<Moving>();
    moving->session = std::move(session);
    moving->exporter = uint32_t(index_);
    moving->seen = Cut();
    SendSession(to, id, transfer, std::move(moving));
  }

  // Through the channel to Loop `to`, like the messages: a message this
  // Loop routes after the session left is forwarded behind it, and finds it
  // there. The target counts as a Loop with subscribers from now on, or it
  // would not be forwarded at all.
  void SendSession(size_t to, const std::string& id, uint64_t transfer,
                   std::shared_ptr<Moving> moving) {
    Shard* target = owner_->shards_[to].get();
    if (moving->session.has_value() &&
        !moving->session->subscriptions.empty()) {
      target->MarkHasSubscribers();
    }
    Outbound& o = OutTo(to);
    Release(o);
    const uint64_t slot = o.channel->accepted() % o.ids.size();
    o.ids[slot] = id;
    o.sessions[slot] = std::move(moving);
    const Entry e{.kind = Entry::kSession,
                  .source = uint32_t(index_),
                  .client_id = &o.ids[slot],
                  .session = &o.sessions[slot],
                  .transfer = transfer};
    if (o.channel->Send(e)) return;
    moving = std::move(o.sessions[slot]);  // both full: post it instead
    target->loop->Post([target, id, transfer, moving] {
      target->OnDeliver(id, transfer, moving);
    });
  }

  // handover_timeout: a held CONNECT goes on without its session, or, if a
  // newer CONNECT elsewhere superseded it, is closed; a ghost is dropped.
  void ExpireParks(Timestamp now) {
    const Duration limit = owner_->options_.handover_timeout;
    for (auto it = parks_.begin(); it != parks_.end();) {
      const Park& park = it->second;
      if (now - park.since < limit) {
        ++it;
        continue;
      }
      if (park.ghost) {
        ErasePark(it++);
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
  uint64_t publish_seq() const { return publish_seq_; }

  std::unique_ptr<transport::Loop> loop;
  std::unique_ptr<BrokerAuthenticator> own_auth;  // make_authenticator's
  std::unique_ptr<SqliteStore> store;  // --data-dir; outlives `driver`
  uint64_t store_timer = 0;
  std::unique_ptr<BrokerDriver> driver;
  std::vector<Outbound> out;  // to every other Loop
  uint64_t timer = 0;
  LoopGauges gauges;
  std::atomic<bool> has_subscribers{false};
  // last_seen[x]: the newest publish number of Loop x routed here (or, from
  // a marker, known to be in front of what comes next from x); this Loop's
  // own entry stays 0 (Cut() takes publish_seq_).
  std::vector<uint64_t> last_seen;
  std::atomic<uint64_t> forwarded{0}, refused{0}, skipped{0}, received{0},
      expired{0}, remote_takeovers{0}, handovers_requested{0}, moved{0},
      empty{0}, timeouts{0}, lost{0}, parks_replaced{0}, parks_aborted{0},
      relayed{0}, kept{0}, stale_discarded{0}, caught_up{0}, transit_missed{0},
      sessions_ended{0}, shared_elsewhere{0};

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
  std::vector<Logged> transit_log_;
  uint64_t log_base_ = 0;  // the position of transit_log_[0]
  // How many parks began waiting at each log position (the smallest is
  // where the log must start).
  std::map<uint64_t, uint32_t> waiting_from_;
  uint64_t transit_log_bytes_ = 0;
  uint64_t transit_missed_ = 0;
  uint64_t publish_seq_ = 0;  // this Loop's clients' publishes, numbered
  uint64_t next_token_ = 0;
  absl::flat_hash_map<uint64_t, Wait> waits_;  // by sync token
  // Shared groups with members here: slot s (the core keeps it with the
  // group) is group_slots_[s - 1].
  std::vector<GroupMembers*> group_slots_;
  std::vector<uint32_t> free_group_slots_;
  // Cross-Loop durability (with a store). Sender side: each QoS 1/2
  // forward, with its step in written_sequence(), the store's written
  // sequence when it was made, its publish number and the Loops it went
  // to; kept until confirmed by them all and behind the store's durable
  // change. Positions count every forward ever made (holds_base_ is the
  // front's).
  GrowRing<ForwardHold> holds_{1024};
  uint64_t holds_base_ = 0;
  uint64_t forwards_total_ = 0;
  uint64_t unconfirmed_abs_ = 0;      // the first not yet confirmed
  mutable uint64_t covered_abs_ = 0;  // the first beyond the durable change
  std::vector<uint64_t> confirmed_through_;  // by Loop: its last kDurable
  std::vector<uint64_t> committed_through_;  // by Loop: its last kCommitted
  uint64_t issue_abs_ = 0;  // the first hold whose id is not written yet
  // The exchange the core is publishing (SetQueuedOrigin), and whether
  // its PutInboundQos2 is left to the hold.
  std::string origin_;
  uint16_t origin_packet_id_ = 0;
  bool defer_id_ = false;
  // Receiver side: by source Loop, its QoS 1/2 messages routed here with
  // this store's written sequence after each; and the last number told.
  std::vector<GrowRing<Routed>> routed_;
  std::vector<uint64_t> confirm_sent_;
  // Set while a message from another Loop is routed: its key for
  // DeliverToGroup.
  bool routing_foreign_ = false;
  uint64_t routing_key_ = 0;
};

MultiBroker::MultiBroker(MultiBrokerOptions options)
    : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<MultiBroker>> MultiBroker::Create(
    MultiBrokerOptions options, std::unique_ptr<transport::Loop> first) {
  if (options.threads < 1 || options.threads > kMaxLoops) {
    return absl::InvalidArgumentError("MultiBroker: threads must be 1..64");
  }
  std::unique_ptr<MultiBroker> mb(new MultiBroker(std::move(options)));
  const MultiBrokerOptions& o = mb->options_;
  const uint32_t n = o.threads;
  for (uint32_t i = 0; i < n; ++i) {
    auto shard = std::make_unique<Shard>(mb.get(), i, n);
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
  if (o.store.has_value()) {
    if (absl::Status st = mb->OpenStores(); !st.ok()) return st;
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

absl::Status MultiBroker::OpenStores() {
  const uint32_t n = uint32_t(shards_.size());
  const SqliteStoreOptions& base = *options_.store;
  // One after the other: each Open() checks and, the first time, creates
  // the schema; then Loop 0 restores the sessions and every Loop the
  // retained set.
  for (uint32_t i = 0; i < n; ++i) {
    Shard& s = *shards_[i];
    SqliteStoreOptions so = base;
    so.key_stride = n;
    so.key_offset = i;
    so.tag_qos2_origins = n > 1;
    absl::StatusOr<std::unique_ptr<SqliteStore>> opened = SqliteStore::Open(so);
    if (!opened.ok()) return opened.status();
    s.store = *std::move(opened);
    const Timestamp now = s.loop->now();
    absl::StatusOr<StoreLoadReport> loaded =
        s.store->Load(&s.driver->broker(), now,
                      i == 0 ? LoadParts::kAll : LoadParts::kRetainedOnly);
    if (!loaded.ok()) return loaded.status();
    if (i == 0) {
      store_loaded_ = *std::move(loaded);
      // Restored subscriptions never passed MaySubscribe: without the flag
      // the other Loops would skip Loop 0 for what their clients publish.
      if (store_loaded_.subscriptions > 0) s.MarkHasSubscribers();
      // The restored sessions are on Loop 0: a CONNECT elsewhere asks it.
      absl::MutexLock lock(&ids_mu_);
      for (const std::string& id : store_loaded_.session_ids) {
        ids_.try_emplace(
            id,
            IdRecord{.latest_loop = 0, .latest_seq = ++next_claim_, .home = 0});
      }
    }
    s.driver->broker().set_store(&s);
    if (base.fsync != FsyncPolicy::kBatch) continue;
    // Group commit, as the one-Loop program does: the acks a commit covers
    // go out when the sync thread says it is durable (a Post), and the
    // window is handed off at most 1.25 windows after its first change.
    Shard* shard = &s;
    auto release = [shard] { shard->OnStoreProgress(); };
    s.store->set_durable_notifier(
        [shard, release] { shard->loop->Post(release); });
    const Duration window =
        std::max<Duration>(base.batch_window, std::chrono::milliseconds(1));
    const Duration tick =
        std::max<Duration>(window / 4, std::chrono::milliseconds(1));
    s.store_timer =
        s.loop->AddTimer(now + tick, tick, [shard, release](Timestamp at) {
          if (at >= shard->store->NextFlushDeadline()) shard->store->Flush();
          release();
        });
  }
  return absl::OkStatus();
}

SqliteStore* MultiBroker::store(size_t i) { return shards_[i]->store.get(); }

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
    if (s->store_timer != 0) s->loop->CancelTimer(s->store_timer);
    s->driver.reset();
  }
  // The stores commit what is pending, before the Loops their sync
  // threads post to are gone.
  for (auto& s : shards_) s->store.reset();
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
    c.shared_elsewhere += Get(s->shared_elsewhere);
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

MultiBroker::GroupMembers* MultiBroker::FindGroupMembers(
    std::string_view group, std::string_view filter) {
  // A share name has no '/' (MQTT-4.8.2-2), so the key is unambiguous.
  const std::string key =
      absl::StrCat(internal::AbslView(group), "/", internal::AbslView(filter));
  absl::MutexLock lock(&groups_mu_);
  std::unique_ptr<GroupMembers>& g = groups_[key];
  if (g == nullptr) g = std::make_unique<GroupMembers>(shards_.size());
  return g.get();
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
  // Still in transit, with this Loop the one to export it next.
  rec.exporter = here;
  return {LandRoute::kRelay, rec.latest_loop, ++rec.transfer};
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
  Outbound& o = source.OutTo(target);
  source.Release(o);
  const uint64_t slot = o.channel->accepted() % o.ids.size();
  o.ids[slot] = std::move(client_id);
  const Entry e{.kind = Entry::kRequest,
                .source = uint32_t(from),
                .seq = source.publish_seq(),
                .client_id = &o.ids[slot],
                .transfer = transfer};
  if (o.channel->Send(e)) return;
  client_id = std::move(o.ids[slot]);  // both full: post it instead
  Shard* s = shards_[target].get();
  s->loop->Post([s, id = std::move(client_id), transfer, from,
                 seq = source.publish_seq()] {
    s->Saw(uint32_t(from), seq);
    s->OnExportRequest(id, transfer, uint32_t(from));
  });
}

void MultiBroker::PostAbort(size_t target, std::string client_id,
                            uint64_t seq) {
  Shard* s = shards_[target].get();
  s->loop->Post([s, id = std::move(client_id), seq] { s->OnAbort(id, seq); });
}

}  // namespace ringlab::mqtt
