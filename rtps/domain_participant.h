// DomainParticipant: the driver that runs a sans-io rtps::Participant on a
// transport::Loop (any preset), with the sockets and ports of the RTPS 2.5
// default port mapping (§9.6.1.1).
//
//   DomainParticipantOptions options;
//   options.backend = "uring-fixed";          // any preset, or "auto"
//   options.interface_address = "127.0.0.1";  // loopback-only operation
//   auto dp = DomainParticipant::Create(options);
//   if (!dp.ok()) { std::cerr << dp.status(); return 1; }
//   Topic<KeyedSeq> topic("DDSPerfRPingKS");          // rtps/topic.h
//   auto writer = DataWriter<KeyedSeq>::Create(**dp, topic, qos);
//   (*writer)->Write(sample);
//   (*dp)->RunFor(std::chrono::seconds(1));          // or Run() / RunOnce()
//
// Sockets: the SPDP multicast port (7400 + 250 d) bound with SO_REUSEADDR
// and joined to 239.255.0.1 on `interface_address`; the metatraffic unicast
// port (7410 + 250 d + 2 p) and the user unicast port (7411 + 250 d + 2 p)
// for the first free participant id p (or the one given). Everything is
// sent from the user unicast socket, whose outgoing multicast interface is
// `interface_address` (127.0.0.1 keeps SPDP on loopback: `lo` has no
// MULTICAST flag, but IP_MULTICAST_IF + a join on 127.0.0.1 work).
//
// Time: the core gets the Loop's monotonic now(); samples carry a wall-clock
// source timestamp (CLOCK_REALTIME), as DDS peers expect.
//
// Threading: like the Loop, a DomainParticipant belongs to the thread that
// runs it. Errors: Create() returns the Loop's or the socket's status (a
// preset the kernel lacks names the fix; a port range with no free
// participant id says so).
#ifndef RINGLAB_RTPS_DOMAIN_PARTICIPANT_H_
#define RINGLAB_RTPS_DOMAIN_PARTICIPANT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "rtps/participant.h"
#include "transport/loop.h"

namespace ringlab::rtps {

struct DomainParticipantOptions {
  uint32_t domain_id = 0;
  std::string backend = "auto";
  // -1: the first id in [0, 120) whose two unicast ports are free.
  int participant_id = -1;
  // The IPv4 address we advertise and send multicast from. "auto" picks the
  // first up, non-loopback IPv4 interface (falling back to 127.0.0.1).
  std::string interface_address = "127.0.0.1";
  // Send SPDP to 239.255.0.1 (and listen on it).
  bool multicast = true;
  // Unicast SPDP peers: "a.b.c.d" (participant ids 0..9 of that host) or
  // "a.b.c.d:port".
  std::vector<std::string> peers;
  // Passed to the core (guid_prefix, locators and SPDP destinations are
  // filled in by Create).
  ParticipantConfig core;
  // Transport buffers: a datagram must fit one buffer.
  uint32_t buffer_size = 16 * 1024 + 1024;
  uint32_t buffer_count = 256;
  int receive_buffer_bytes = 4 << 20;
  // The user socket's send queue in the Loop. A large sample goes out as a
  // train of DATA_FRAG datagrams; when the queue (or the buffer pool) is
  // full the rest waits for send completions instead of being dropped.
  size_t send_queue_bytes = 4 << 20;
  // UDP GSO (transport UdpOptions::segmentation_offload) on the user socket.
  bool udp_gso = true;
  // Announce __ProcessName, __Pid and __Hostname (PID_PROPERTY_LIST), as
  // Cyclone does, so `ringlab_dds ls` and `cyclonedds ls` can show them.
  bool advertise_process = true;
  // Test hooks: drop this share of the datagrams received / sent (seeded,
  // after the kernel), to exercise repair against real peers. Counted in
  // dropped_for_test().
  double drop_received_fraction = 0;
  double drop_sent_fraction = 0;
  uint64_t drop_seed = 1;
  // transport::LoopOptions::wait_batching (uring-fixed, uring-sqpoll): one
  // kernel entry per request/response round trip; off by default (see
  // transport/loop.h for what it costs one-way traffic).
  bool wait_batching = false;
};

// CLOCK_REALTIME in nanoseconds (DDS source timestamps).
int64_t WallClockNanos();

class DomainParticipant : public transport::SocketHandler,
                          public transport::TimerHandler {
 public:
  static absl::StatusOr<std::unique_ptr<DomainParticipant>> Create(
      DomainParticipantOptions options);
  ~DomainParticipant() override;

  Participant& core() { return *core_; }
  transport::Loop& loop() { return *loop_; }
  int participant_id() const { return participant_id_; }
  const DomainParticipantOptions& options() const { return options_; }

  // Sends whatever the core has queued and re-arms its timer. Call after
  // using core() directly (the typed writers do it for you).
  void Flush();
  // Loop iterations: once (waiting at most `timeout`), until Stop(), or for
  // a wall-time budget.
  int RunOnce(Duration timeout);
  absl::Status Run();
  void RunFor(Duration budget);
  // Runs until `done()` is true or `budget` passed; true if done.
  bool RunUntil(absl::AnyInvocable<bool()> done, Duration budget);
  void Stop() { loop_->Stop(); }
  uint64_t dropped_for_test() const { return dropped_for_test_; }
  void SetTestDrops(double received_fraction, double sent_fraction) {
    options_.drop_received_fraction = received_fraction;
    options_.drop_sent_fraction = sent_fraction;
  }

  // Called once per sample-available reader after each incoming datagram
  // (before Flush), so a request-response program can answer without an
  // extra loop iteration.
  void SetDataCallback(absl::AnyInvocable<void()> callback) {
    data_callback_ = std::move(callback);
  }

  // SocketHandler / TimerHandler.
  void OnDatagram(transport::SocketId socket, const Endpoint& from,
                  transport::BufferLease data) override;
  void OnTimer(uint64_t timer_id, Timestamp now) override;
  void OnSendComplete(transport::SocketId socket, int result,
                      uint64_t tag) override;
  void OnWritable(transport::SocketId socket) override;

 private:
  DomainParticipant() = default;
  void ArmTimer();

  DomainParticipantOptions options_;
  std::unique_ptr<transport::Loop> loop_;
  std::unique_ptr<Participant> core_;
  transport::SocketId spdp_socket_, meta_socket_, user_socket_;
  int participant_id_ = -1;
  uint64_t timer_id_ = 0;
  Timestamp timer_deadline_ = Timestamp::Never();
  absl::AnyInvocable<void()> data_callback_;
  bool in_flush_ = false;
  bool send_blocked_ = false;  // Flush stopped for lack of room: resume
  bool Drop(double fraction);
  uint64_t drop_state_ = 0;
  uint64_t dropped_for_test_ = 0;
};

}  // namespace ringlab::rtps

#endif  // RINGLAB_RTPS_DOMAIN_PARTICIPANT_H_
