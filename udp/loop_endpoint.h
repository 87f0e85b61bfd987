// LoopEndpoint: rudp on a real UDP socket, driven by a transport Loop (any
// preset). One socket, one sans-io Host, any number of connections.
//
//   auto loop = transport::Loop::Create({.backend = "uring-fixed"});
//   LoopEndpointOptions options;
//   options.bind = Endpoint::Loopback(0);
//   auto endpoint = LoopEndpoint::Create(loop->get(), options);
//   (*endpoint)->SetEventHandler([&](const Event& e) {
//     if (e.type == EventType::kMessage) Use(e.message);  // valid in here
//   });
//   ConnectionHandle c = *(*endpoint)->Connect(server);
//   (*endpoint)->Send(c, /*channel=*/0, bytes);
//   (*loop)->Run();
//
// The driver only moves bytes and time: a datagram from the socket goes to
// Host::OnDatagram, then every datagram Host::PollTransmit produces goes out
// in a leased pool buffer (no copy), one Loop timer tracks
// Host::NextDeadline, and events are handed to the handler. It never waits
// for send completions before sending more.
//
// Send backpressure: a datagram the Host produced is one it counts as sent,
// so the driver asks for the next one only when the Loop will take it: while
// the socket's send queue holds less than send_queue_limit_bytes minus one
// datagram, and a pool buffer is free. Otherwise it stops and goes on once
// the queue has drained to its low-water mark (half the limit; a send
// completion tells), a buffer came back, or, after a refusal by the Loop's
// shared send budget (the datagram is then lost and recovered like any
// other), OnWritable. Each stop is counted in stats().
//
// Batching: with segmentation_offload (UDP GSO; the default on epoll) full
// data packets are padded to one size and the Loop sends up to
// Loop::kMaxGsoSegments of them in one system call; without it (the default
// on io_uring, or where the kernel refuses GSO) they still leave in one
// batch per loop iteration (sendmmsg on epoll, one submission on io_uring).
//
// Impairment: with `impairment` set, every outgoing datagram first crosses a
// SimNetwork link (transport/sim_network.h) running on the Loop's clock, so
// loss (Bernoulli or Gilbert-Elliott), delay, jitter, reordering and
// duplication hit real sockets exactly as they hit the simulator, from a
// seed. This path copies each datagram (it is a test and benchmark tool).
//
// Ownership: the Loop is borrowed and must outlive the endpoint. The event
// handler may call Send/Connect/Close; it must not destroy the endpoint.
// Threading: the Loop's thread only. Errors: Create() returns the socket's
// or the options' error; per-datagram failures are counted in stats().
#ifndef RINGLAB_UDP_LOOP_ENDPOINT_H_
#define RINGLAB_UDP_LOOP_ENDPOINT_H_

#include <memory>
#include <optional>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "transport/loop.h"
#include "transport/sim_network.h"
#include "udp/host.h"

namespace ringlab::rudp {

struct LoopEndpointOptions {
  Endpoint bind = Endpoint::Loopback(0);
  HostOptions host;
  // In-process impairment of every datagram this endpoint sends.
  std::optional<transport::SimImpairment> impairment;
  uint64_t impairment_seed = 1;
  // Drops this share of the datagrams the endpoint receives, before the
  // Host sees them, from a seeded generator: the way ringlab_enet_bench
  // impairs ENet, so the two can be compared. Changeable with
  // SetReceiveLoss().
  double receive_loss = 0;
  uint64_t receive_loss_seed = 1;
  int socket_receive_buffer_bytes = 4 << 20;
  int socket_send_buffer_bytes = 4 << 20;
  // The socket's send queue in the Loop (UdpOptions::send_queue_limit_bytes;
  // see "Send backpressure" above). Keep it below the Loop's send budget
  // (pool buffers) so that the queue, not the pool, is what stops a burst.
  size_t send_queue_limit_bytes = 256 << 10;
  // UDP GSO for trains of full data packets (UdpOptions::
  // segmentation_offload, ConnectionOptions::pad_full_packets). Unset: on
  // for the epoll presets, off for the io_uring ones. Measured on loopback
  // (udp/EXPERIMENTS.md §5): GSO cuts CPU per MB by ~30% on both, but the
  // io_uring backend keeps one GSO send in flight per socket, so a bulk
  // train there takes an enter per 16 datagrams where plain submissions put
  // the whole train in one enter (~8x the kernel entries); on epoll a GSO
  // send replaces sendmmsg entries at about the same count.
  std::optional<bool> segmentation_offload;
};

struct LoopEndpointStats {
  uint64_t datagrams_received = 0;
  uint64_t datagrams_sent = 0;  // handed to the Loop
  // SendTo refused a datagram the Host had produced (-EAGAIN from the
  // shared send budget, or another error): lost, the protocol repairs it.
  uint64_t send_errors = 0;
  uint64_t send_failures = 0;  // completed with an error
  // Output stopped because the send queue was full (resumed at low water),
  // because no pool buffer was free, or after a refusal (resumed on
  // OnWritable).
  uint64_t send_queue_full = 0;
  uint64_t pool_exhausted = 0;
  uint64_t writable_waits = 0;
  uint64_t impairment_dropped = 0;  // lost in the impairment layer
  uint64_t impairment_duplicated = 0;
  uint64_t receive_dropped = 0;  // by receive_loss
  // Datagrams the kernel dropped because the socket's receive queue was
  // full (SO_RXQ_OVFL, counted since the socket was opened).
  uint64_t kernel_receive_drops = 0;
  uint64_t timer_wakeups = 0;
  // How late the driver's timer fired after the deadline it asked for.
  uint64_t timer_late_ns_total = 0;
  uint64_t timer_late_ns_max = 0;
  uint64_t timers_late_over_100us = 0;
};

class LoopEndpoint : private transport::SocketHandler {
 public:
  using EventHandler = absl::AnyInvocable<void(const Event&)>;

  static absl::StatusOr<std::unique_ptr<LoopEndpoint>> Create(
      transport::Loop* loop, const LoopEndpointOptions& options);
  ~LoopEndpoint() override;
  LoopEndpoint(const LoopEndpoint&) = delete;
  LoopEndpoint& operator=(const LoopEndpoint&) = delete;

  // Called for every event, on the Loop's thread. A kMessage view is valid
  // during the call only.
  void SetEventHandler(EventHandler handler) { handler_ = std::move(handler); }

  absl::StatusOr<ConnectionHandle> Connect(const Endpoint& peer);
  // Queues a message and sends what the connection may send now.
  SendResult Send(ConnectionHandle connection, uint8_t channel,
                  std::span<const std::byte> data);
  absl::Status Close(ConnectionHandle connection);
  // Starts (or stops, with 0) dropping received datagrams; see
  // LoopEndpointOptions::receive_loss.
  void SetReceiveLoss(double probability, uint64_t seed);

  const Endpoint& local_endpoint() const { return local_; }
  bool segmentation_offload() const { return gso_; }
  Host& host() { return *host_; }
  const LoopEndpointStats& stats() const { return stats_; }
  transport::Loop* loop() const { return loop_; }

  // Sends pending output, delivers pending events and re-arms the timer.
  // Every entry point does this already; call it after changing the Host
  // directly.
  void Flush();

 private:
  LoopEndpoint(transport::Loop* loop, const LoopEndpointOptions& options,
               std::unique_ptr<Host> host);

  // transport::SocketHandler
  void OnDatagramInfo(transport::SocketId socket,
                      const transport::DatagramInfo& info,
                      transport::BufferLease data) override;
  void OnSendComplete(transport::SocketId socket, int result,
                      uint64_t tag) override;
  void OnWritable(transport::SocketId socket) override;
  // The Loop timer (a TimerFn with this endpoint as its context).
  static void OnTimer(void* context, uint64_t timer_id, Timestamp now);

  void TimerExpired(Timestamp now);
  // False when the Loop refused it with -EAGAIN (OnWritable follows).
  bool SendDatagram(transport::BufferLease lease, const Endpoint& to);
  void ReleaseImpaired();
  void ArmTimer();
  Timestamp Deadline() const;
  size_t DeliverEvents();

  transport::Loop* loop_;
  LoopEndpointOptions options_;
  std::unique_ptr<Host> host_;
  transport::SocketId socket_;
  Endpoint local_;
  EventHandler handler_;
  uint64_t timer_id_ = 0;  // 0: not pending
  Timestamp timer_deadline_ = Timestamp::Never();
  bool flushing_ = false;
  // Why output stopped, if it did (see "Send backpressure").
  enum class Blocked : uint8_t { kNo, kQueue, kPool, kWritable };
  Blocked blocked_ = Blocked::kNo;
  bool gso_ = false;
  // One pool buffer kept between flushes (see Flush).
  transport::BufferLease spare_;
  size_t queue_stop_bytes_ = 0;  // stop when the queue holds more
  size_t queue_resume_bytes_ = 0;
  // Impairment: a SimNetwork link from kSelf to kPeer on the Loop's clock.
  std::unique_ptr<transport::SimNetwork> impairment_;
  Timestamp impairment_epoch_;
  std::vector<std::byte> scratch_;
  double receive_loss_ = 0;
  transport::SimRandom receive_random_{1};
  LoopEndpointStats stats_;
};

}  // namespace ringlab::rudp

#endif  // RINGLAB_UDP_LOOP_ENDPOINT_H_
