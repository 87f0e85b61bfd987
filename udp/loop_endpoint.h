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
};

struct LoopEndpointStats {
  uint64_t datagrams_received = 0;
  uint64_t datagrams_sent = 0;      // handed to the Loop
  uint64_t send_errors = 0;         // SendTo refused (queue full, ...)
  uint64_t send_failures = 0;       // completed with an error
  uint64_t pool_exhausted = 0;      // no buffer for an outgoing datagram
  uint64_t impairment_dropped = 0;  // lost in the impairment layer
  uint64_t impairment_duplicated = 0;
  uint64_t receive_dropped = 0;  // by receive_loss
  uint64_t timer_wakeups = 0;
};

class LoopEndpoint : private transport::SocketHandler,
                     private transport::TimerHandler {
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
  void OnDatagram(transport::SocketId socket, const Endpoint& from,
                  transport::BufferLease data) override;
  void OnSendComplete(transport::SocketId socket, int result,
                      uint64_t tag) override;
  // transport::TimerHandler
  void OnTimer(uint64_t timer_id, Timestamp now) override;

  void SendDatagram(transport::BufferLease lease, const Endpoint& to);
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
  uint64_t timer_id_ = 0;
  Timestamp timer_deadline_ = Timestamp::Never();
  bool flushing_ = false;
  bool blocked_on_pool_ = false;
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
