#include "udp/loop_endpoint.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringlab::rudp {
namespace {

// The two ends of the impairment link. They never touch a real socket.
const Endpoint kSelf = Endpoint::Ipv4(0x0a000001, 1);
const Endpoint kPeer = Endpoint::Ipv4(0x0a000002, 2);

uint64_t RandomSeed() {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
    seed = uint64_t(MonotonicNow().nanos()) ^ 0x5bd1e995;
  }
  return seed;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LoopEndpoint>> LoopEndpoint::Create(
    transport::Loop* loop, const LoopEndpointOptions& options) {
  HostOptions host_options = options.host;
  // Cookie keys and connection ids must be unpredictable on a real socket.
  if (host_options.seed == HostOptions{}.seed) host_options.seed = RandomSeed();
  const bool gso =
      options.segmentation_offload.value_or(!loop->backend().flags.io_uring);
  // Trains of one datagram size are what UDP GSO batches.
  if (gso) host_options.connection.pad_full_packets = true;
  if (options.send_queue_limit_bytes <
      2 * size_t{host_options.connection.max_datagram_bytes}) {
    return absl::InvalidArgumentError(
        "LoopEndpoint: send_queue_limit_bytes must hold two datagrams");
  }
  absl::StatusOr<std::unique_ptr<Host>> host = Host::Create(host_options);
  if (!host.ok()) return host.status();
  if (loop->buffers().buffer_size() < (*host)->MinTransmitBytes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LoopEndpoint: the Loop's buffers (", loop->buffers().buffer_size(),
        " bytes) are smaller than a datagram (", (*host)->MinTransmitBytes(),
        "); raise LoopOptions::buffer_size"));
  }
  if (options.impairment.has_value()) {
    if (absl::Status s = options.impairment->Validate(); !s.ok()) return s;
  }
  if (!(options.receive_loss >= 0 && options.receive_loss <= 1)) {
    return absl::InvalidArgumentError(
        "LoopEndpoint: receive_loss must be in [0, 1]");
  }
  std::unique_ptr<LoopEndpoint> endpoint(
      new LoopEndpoint(loop, options, std::move(*host)));
  transport::UdpOptions udp;
  udp.bind = options.bind;
  udp.receive_buffer_bytes = options.socket_receive_buffer_bytes;
  udp.send_buffer_bytes = options.socket_send_buffer_bytes;
  // The kernel's drop count rides on every datagram (SO_RXQ_OVFL): losses
  // the protocol sees that no impairment caused.
  udp.receive_drop_count = true;
  udp.segmentation_offload = gso;
  udp.send_queue_limit_bytes = options.send_queue_limit_bytes;
  udp.send_queue_low_water_bytes = options.send_queue_limit_bytes / 2;
  absl::StatusOr<transport::SocketId> socket =
      loop->OpenUdp(udp, endpoint.get());
  if (!socket.ok()) return socket.status();
  endpoint->socket_ = *socket;
  absl::StatusOr<Endpoint> local = loop->LocalEndpoint(*socket);
  if (!local.ok()) return local.status();
  endpoint->local_ = *local;
  endpoint->gso_ = gso;
  // One more datagram must fit below the limit, or the Loop refuses it.
  endpoint->queue_stop_bytes_ =
      options.send_queue_limit_bytes - (*endpoint->host_).MinTransmitBytes();
  endpoint->queue_resume_bytes_ = options.send_queue_limit_bytes / 2;
  return endpoint;
}

LoopEndpoint::LoopEndpoint(transport::Loop* loop,
                           const LoopEndpointOptions& options,
                           std::unique_ptr<Host> host)
    : loop_(loop),
      options_(options),
      host_(std::move(host)),
      receive_loss_(options.receive_loss),
      receive_random_(options.receive_loss_seed) {
  if (options.impairment.has_value()) {
    transport::SimNetwork::Options net;
    net.seed = options.impairment_seed;
    impairment_ = std::make_unique<transport::SimNetwork>(net);
    (void)impairment_->AddNode(kSelf);
    (void)impairment_->AddNode(kPeer);
    (void)impairment_->SetLinkImpairment(kSelf, kPeer, *options.impairment);
    impairment_epoch_ = loop->now();
  }
}

LoopEndpoint::~LoopEndpoint() {
  if (timer_id_ != 0) loop_->CancelTimer(timer_id_);
  if (socket_.valid()) loop_->Abandon(socket_);
}

absl::StatusOr<ConnectionHandle> LoopEndpoint::Connect(const Endpoint& peer) {
  absl::StatusOr<ConnectionHandle> c = host_->Connect(peer, loop_->now());
  Flush();
  return c;
}

SendResult LoopEndpoint::Send(ConnectionHandle connection, uint8_t channel,
                              std::span<const std::byte> data) {
  const SendResult r = host_->Send(connection, channel, data, loop_->now());
  if (r == SendResult::kOk) Flush();
  return r;
}

absl::Status LoopEndpoint::Close(ConnectionHandle connection) {
  absl::Status s = host_->Close(connection, loop_->now());
  Flush();
  return s;
}

void LoopEndpoint::SetReceiveLoss(double probability, uint64_t seed) {
  receive_loss_ = probability;
  receive_random_ = transport::SimRandom(seed);
}

void LoopEndpoint::OnDatagramInfo(transport::SocketId,
                                  const transport::DatagramInfo& info,
                                  transport::BufferLease data) {
  const Endpoint& from = info.from;
  ++stats_.datagrams_received;
  // Cumulative; a datagram without the control message says 0.
  stats_.kernel_receive_drops =
      std::max<uint64_t>(stats_.kernel_receive_drops, info.dropped);
  if (receive_loss_ > 0 && receive_random_.Bernoulli(receive_loss_)) {
    ++stats_.receive_dropped;
    return;
  }
  host_->OnDatagram(data.bytes(), from, loop_->now());
  data.Release();  // back to the pool (or the kernel's ring) before sending
  Flush();
}

void LoopEndpoint::OnSendComplete(transport::SocketId, int result, uint64_t) {
  if (result < 0) ++stats_.send_failures;
  // A buffer came back, and the queue got shorter: go on if output waited
  // for either (for the queue, only once it is down to half, so output
  // resumes in bursts rather than a datagram per completion).
  if (blocked_ == Blocked::kPool ||
      (blocked_ == Blocked::kQueue &&
       loop_->QueuedSendBytes(socket_) <= queue_resume_bytes_)) {
    Flush();
  }
}

void LoopEndpoint::OnWritable(transport::SocketId) {
  if (blocked_ == Blocked::kWritable) Flush();
}

void LoopEndpoint::OnTimer(void* context, uint64_t timer_id, Timestamp now) {
  auto* self = static_cast<LoopEndpoint*>(context);
  if (timer_id != self->timer_id_) return;
  self->timer_id_ = 0;
  self->TimerExpired(now);
}

void LoopEndpoint::TimerExpired(Timestamp now) {
  const uint64_t late_ns =
      now > timer_deadline_ ? uint64_t((now - timer_deadline_).count()) : 0;
  stats_.timer_late_ns_total += late_ns;
  stats_.timer_late_ns_max = std::max(stats_.timer_late_ns_max, late_ns);
  if (late_ns > 100'000) ++stats_.timers_late_over_100us;
  timer_deadline_ = Timestamp::Never();
  ++stats_.timer_wakeups;
  if (host_->NextDeadline() <= now) host_->OnTimeout(now);
  Flush();
}

void LoopEndpoint::Flush() {
  if (flushing_) return;  // an event handler called Send: the loop below
  flushing_ = true;       // picks its output up
  for (int round = 0;; ++round) {
    blocked_ = Blocked::kNo;
    for (;;) {
      // Ask the Host for a datagram only when the Loop will take it (see
      // "Send backpressure" in the header): once produced, it counts as sent.
      if (loop_->QueuedSendBytes(socket_) > queue_stop_bytes_) {
        ++stats_.send_queue_full;
        blocked_ = Blocked::kQueue;
        break;
      }
      // Most flushes end with a poll that produces nothing: the buffer it
      // was offered waits here for the next one instead of going back to
      // the pool and out again.
      transport::BufferLease lease =
          spare_ ? std::move(spare_) : loop_->AcquireBuffer();
      if (!lease) {
        ++stats_.pool_exhausted;
        blocked_ = Blocked::kPool;
        break;
      }
      std::optional<Host::Transmit> t =
          host_->PollTransmit(lease.writable(), loop_->now());
      if (!t.has_value()) {
        spare_ = std::move(lease);
        break;
      }
      lease.set_size(t->size);
      if (!SendDatagram(std::move(lease), t->destination)) {
        ++stats_.writable_waits;
        blocked_ = Blocked::kWritable;
        break;
      }
    }
    // Handlers may queue more (an echo, the next message): go round again
    // until a round delivers no event, so the last step is always a send.
    if (blocked_ != Blocked::kNo || round == 64 || handler_ == nullptr) break;
    if (DeliverEvents() == 0) break;
  }
  // Events still due (output stopped above) go out now; their sends wait
  // with the rest.
  if (blocked_ != Blocked::kNo && handler_ != nullptr) DeliverEvents();
  if (impairment_) ReleaseImpaired();
  ArmTimer();
  flushing_ = false;
}

size_t LoopEndpoint::DeliverEvents() {
  Event e;
  size_t n = 0;
  while (host_->PollEvent(&e)) {
    handler_(e);
    ++n;
  }
  return n;
}

bool LoopEndpoint::SendDatagram(transport::BufferLease lease,
                                const Endpoint& to) {
  if (!impairment_) {
    ++stats_.datagrams_sent;
    const int r = loop_->SendTo(socket_, std::move(lease), to);
    if (r < 0) ++stats_.send_errors;
    return r != -EAGAIN;
  }
  // Through the simulated link: the destination travels in front of the
  // bytes, and the SimNetwork clock follows the Loop's.
  (void)impairment_->AdvanceTo(Timestamp::Zero() +
                               (loop_->now() - impairment_epoch_));
  scratch_.resize(sizeof(Endpoint) + lease.size());
  std::memcpy(scratch_.data(), &to, sizeof(Endpoint));
  std::memcpy(scratch_.data() + sizeof(Endpoint), lease.data(), lease.size());
  const uint64_t lost_before = impairment_->counters().dropped_loss +
                               impairment_->counters().dropped_burst;
  const uint64_t dup_before = impairment_->counters().datagrams_duplicated;
  (void)impairment_->SendDatagram(kSelf, kPeer, scratch_);
  stats_.impairment_dropped += impairment_->counters().dropped_loss +
                               impairment_->counters().dropped_burst -
                               lost_before;
  stats_.impairment_duplicated +=
      impairment_->counters().datagrams_duplicated - dup_before;
  return true;
}

void LoopEndpoint::ReleaseImpaired() {
  (void)impairment_->AdvanceTo(Timestamp::Zero() +
                               (loop_->now() - impairment_epoch_));
  while (std::optional<transport::SimDatagram> d =
             impairment_->PollDatagram(kPeer)) {
    if (d->bytes.size() < sizeof(Endpoint)) continue;
    transport::BufferLease lease = loop_->AcquireBuffer();
    if (!lease) {
      ++stats_.pool_exhausted;
      continue;  // lost, like a full queue
    }
    Endpoint to;
    std::memcpy(&to, d->bytes.data(), sizeof(Endpoint));
    const size_t n = d->bytes.size() - sizeof(Endpoint);
    std::memcpy(lease.data(), d->bytes.data() + sizeof(Endpoint), n);
    lease.set_size(n);
    ++stats_.datagrams_sent;
    if (loop_->SendTo(socket_, std::move(lease), to) < 0) ++stats_.send_errors;
  }
}

Timestamp LoopEndpoint::Deadline() const {
  Timestamp t = host_->NextDeadline();
  if (impairment_) {
    const Timestamp sim = impairment_->NextDeadline();
    if (!sim.is_never()) {
      t = std::min(t, impairment_epoch_ + (sim - Timestamp::Zero()));
    }
  }
  return t;
}

void LoopEndpoint::ArmTimer() {
  const Timestamp deadline = Deadline();
  if (deadline.is_never()) return;  // an armed later timer just fires early
  // Move the timer only to an earlier deadline; one that fires early costs
  // one wakeup, moving it on every packet would cost a heap operation each.
  if (timer_id_ != 0 && timer_deadline_ <= deadline) return;
  timer_deadline_ = deadline;
  if (timer_id_ != 0 && loop_->RescheduleTimer(timer_id_, deadline)) return;
  timer_id_ =
      loop_->AddTimer(deadline, Duration::zero(), &LoopEndpoint::OnTimer, this);
}

}  // namespace ringlab::rudp
