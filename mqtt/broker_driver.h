// BrokerDriver: runs a Broker core on a transport::Loop: it listens on a TCP
// endpoint, feeds every connection's bytes to the core, writes what the core
// polls, arms one Loop timer at the core's NextDeadline(), and closes what
// the core asks to close.
//
//   auto loop = transport::Loop::Create({.backend = "uring-fixed"});
//   BrokerDriverOptions options;
//   options.listen = *Endpoint::Parse("127.0.0.1:1883");
//   absl::StatusOr<std::unique_ptr<BrokerDriver>> broker =
//       BrokerDriver::Start(loop->get(), options);
//   if (!broker.ok()) return broker.status();
//   (*loop)->Run();                       // until Stop()
//
// Backpressure: a connection whose socket has more than
// `max_send_queue_bytes` queued is not polled until sends complete; the
// core's bounded per-session queues then make it a slow subscriber (QoS 0
// dropped and counted, QoS 1/2 queued to a limit), and nobody else waits.
// Polling also pauses while the Loop's pool cannot hold the next packet on
// top of its receive reserve; sends completing and OnWritable resume it.
// The sockets' own send-queue limit is set above the soft limit plus one
// largest packet, so the Loop never refuses part of a packet (if it does,
// the connection is closed and counted: its stream would have a hole).
// Every socket has TCP_NODELAY.
//
// Ownership: the driver borrows the Loop (which must outlive it) and owns
// the core. Threading: the Loop's thread only. Errors: Start() returns the
// listen error; per-connection failures close that connection and are
// counted in counters().
#ifndef RINGLAB_MQTT_BROKER_DRIVER_H_
#define RINGLAB_MQTT_BROKER_DRIVER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "mqtt/broker.h"
#include "mqtt/internal/stream_writer.h"
#include "transport/loop.h"

namespace ringlab::mqtt {

struct BrokerDriverOptions {
  BrokerOptions broker;
  // Borrowed; must outlive the driver. nullptr: everything is allowed.
  BrokerAuthenticator* authenticator = nullptr;
  Endpoint listen = Endpoint::Loopback(1883);
  transport::TcpOptions tcp;  // no_delay defaults to true
  // Bytes queued on one socket beyond which the driver stops polling it.
  size_t max_send_queue_bytes = 256 * 1024;
  // Polling pauses while fewer pool buffers than this are free.
  uint32_t pool_reserve_buffers = 64;
  // How long a closed connection may take to drain its last bytes (the
  // DISCONNECT) before the socket is closed anyway.
  Duration close_linger = std::chrono::seconds(2);
  // Fan-out: the payload of a message queued for more than one subscriber
  // is copied once into pool buffers shared by every subscriber's send
  // (the header, which differs per subscriber, is copied per send). Below
  // this size it is copied into each subscriber's lease instead (0: always
  // share). Messages whose shared buffers are kept for later subscribers:
  // each entry pins its pool buffers until reused.
  size_t share_min_payload_bytes = 0;
  size_t shared_payload_cache_entries = 64;
};

struct BrokerDriverCounters {
  uint64_t accepted = 0;
  uint64_t refused = 0;  // over max_connections
  uint64_t closed = 0;
  uint64_t send_errors = 0;  // Send() refused or a send completed < 0
  uint64_t blocked = 0;      // times a connection hit max_send_queue_bytes
  uint64_t pool_low = 0;     // times polling paused for the pool
  uint64_t pool_exhausted_closes = 0;  // a packet could not be written whole
  uint64_t leases_sent = 0;
  uint64_t linger_closes = 0;        // closed at close_linger, not by the peer
  uint64_t send_refused_closes = 0;  // the Loop refused part of a packet
  uint64_t writable = 0;             // OnWritable calls
  // Fan-out: sends of a shared payload buffer, and payload bytes copied
  // into a subscriber's own lease (single-subscriber messages).
  uint64_t shared_sends = 0;
  uint64_t payload_bytes_copied = 0;
  // Times the Loop refused a send with -EAGAIN and the rest of the stream
  // waited in its backlog for OnWritable.
  uint64_t sends_deferred = 0;
};

class BrokerDriver : public transport::SocketHandler,
                     public transport::TimerHandler {
 public:
  static absl::StatusOr<std::unique_ptr<BrokerDriver>> Start(
      transport::Loop* loop, BrokerDriverOptions options);
  ~BrokerDriver() override;

  Endpoint local_endpoint() const { return local_; }
  const BrokerDriverOptions& options() const { return options_; }
  Broker& broker() { return broker_; }
  const BrokerDriverCounters& counters() const { return counters_; }
  // Routes a message from outside any connection ($SYS, tests) and writes
  // what it produced.
  void Publish(const InjectedMessage& message);
  // Messages and pool buffers made shareable for fan-out.
  const internal::SharedPayloadCache& shared_payloads() const {
    return shared_;
  }
  // Stops listening and closes every connection (v5 clients are told
  // "Server shutting down").
  void Shutdown();

  // For front ends that own the socket callbacks of some connections (the
  // TLS listener, mqtt/tls_listener.h) and for input from outside any
  // connection (messages injected with Broker::PublishMessage):
  // - a connection's output goes through `sink` (nullptr: straight to the
  //   Loop); the socket must have come through OnAccept;
  void SetStreamSink(transport::SocketId socket, internal::StreamSink* sink);
  // - plaintext bytes of a connection, as OnData would pass them;
  void OnStreamBytes(transport::SocketId socket,
                     std::span<const std::byte> bytes);
  // - ends a connection the way the core's kClose does: what the core has
  //   is written, then the socket is half-closed and lingers;
  void CloseConnection(transport::SocketId socket);
  // - writes what the core has after calls made on broker() directly
  //   (Broker::PublishMessage).
  void Flush() { Pump(); }

  // transport::SocketHandler
  transport::SocketHandler* OnAccept(transport::SocketId listener,
                                     transport::SocketId connection,
                                     const Endpoint& peer) override;
  void OnData(transport::SocketId socket, transport::BufferLease data) override;
  void OnReadClosed(transport::SocketId socket, int result) override;
  void OnSendComplete(transport::SocketId socket, int result,
                      uint64_t tag) override;
  void OnClosed(transport::SocketId socket) override;
  void OnError(transport::SocketId socket, int error) override;
  void OnWritable(transport::SocketId socket) override;
  // transport::TimerHandler
  void OnTimer(uint64_t timer_id, Timestamp now) override;

 private:
  struct Conn {
    transport::SocketId socket;
    ConnectionId id;
    bool blocked = false;
    internal::SendBacklog backlog;  // sends the Loop refused, in order
    internal::StreamSink* sink = nullptr;
  };
  struct Lingering {
    transport::SocketId socket;
    Timestamp deadline;
  };

  BrokerDriver(transport::Loop* loop, BrokerDriverOptions options);
  Timestamp now() const { return loop_->now(); }
  // Writes what the core has, closes what it asks to, re-arms the timer.
  void Pump();
  // Drains one connection; false if it stopped on backpressure.
  bool Drain(Conn& conn, bool ignore_limits);
  // Writes a PUBLISH's tail after its header: the payload shared for
  // fan-out, or copied. False if the pool ran out.
  bool WriteTail(const Transmit& t);
  // Closes a connection whose stream cannot continue.
  void DropConnection(Conn& conn);
  // The end of a connection the core asked for (kClose) or a front end did.
  void EndConnection(Conn& c);
  void CloseSocket(transport::SocketId socket);
  void ArmTimer();

  transport::Loop* loop_;
  BrokerDriverOptions options_;
  Broker broker_;
  internal::StreamWriter writer_;
  internal::SharedPayloadCache shared_;
  transport::SocketId listener_;
  transport::SocketId closed_listener_;  // by Shutdown()
  Endpoint local_;
  // By ConnectionId.index (dense), and socket -> connection.
  std::vector<Conn> conns_;
  absl::flat_hash_map<transport::SocketId, ConnectionId> by_socket_;
  std::vector<ConnectionId> waiting_;  // blocked or paused for the pool
  std::vector<Lingering> lingering_;
  uint64_t timer_id_ = 0;
  Timestamp timer_at_ = Timestamp::Never();
  uint64_t housekeeping_timer_ = 0;
  bool pumping_ = false;
  bool shut_down_ = false;
  BrokerDriverCounters counters_;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_BROKER_DRIVER_H_
