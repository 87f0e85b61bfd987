// ClientDriver: runs a Client core over one TCP connection on a
// transport::Loop, and hands the core's events to a listener.
//
//   class Printer : public ClientDriver::Listener {
//     void OnClientEvent(ClientDriver& c, const ClientEvent& e) override {
//       if (e.kind == ClientEvent::Kind::kConnected) {
//         (void)c.Subscribe("a/#", {.max_qos = 1});
//       } else if (e.kind == ClientEvent::Kind::kMessage) {
//         std::printf("%.*s\n", int(e.message.payload.size()),
//                     reinterpret_cast<const char*>(e.message.payload.data()));
//       }
//     }
//   } printer;
//   ClientDriverOptions options;
//   options.server = *Endpoint::Parse("127.0.0.1:1883");
//   options.client.client_id = "printer";
//   auto client = ClientDriver::Create(loop, options, &printer);
//   (*client)->Connect();
//   loop->Run();
//
// The listener runs on the Loop's thread inside driver callbacks and may
// call any driver method (publishing from OnClientEvent is fine). Event
// views are valid during the callback only. Reconnecting: call Connect()
// again after a kClosed event; a persistent session resumes and the core
// resends what was not acknowledged.
//
// Ownership: borrows the Loop and the listener (both must outlive it).
// Errors: Connect() returns the ConnectTcp error; a refused or failed TCP
// connection and every MQTT-level end arrive as a kClosed event.
#ifndef RINGLAB_MQTT_CLIENT_DRIVER_H_
#define RINGLAB_MQTT_CLIENT_DRIVER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "mqtt/client.h"
#include "mqtt/internal/stream_writer.h"
#include "transport/loop.h"

namespace ringlab::mqtt {

struct ClientDriverOptions {
  Endpoint server = Endpoint::Loopback(1883);
  ClientOptions client;
  transport::TcpOptions tcp;  // no_delay defaults to true
  // Bytes queued on the socket beyond which output waits in the core (for
  // OnWritable or a completed send). The socket's own limit is set above
  // it, so the Loop never refuses bytes the core already handed out.
  size_t max_send_queue_bytes = 4 << 20;
  Duration close_linger = std::chrono::seconds(2);
};

class ClientDriver : public transport::SocketHandler,
                     public transport::TimerHandler {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    virtual void OnClientEvent(ClientDriver& client,
                               const ClientEvent& event) = 0;
  };

  static absl::StatusOr<std::unique_ptr<ClientDriver>> Create(
      transport::Loop* loop, ClientDriverOptions options, Listener* listener);
  ~ClientDriver() override;

  // Opens the TCP connection; CONNECT follows when it is up.
  absl::Status Connect();
  // Sends DISCONNECT and closes once it is written.
  void Disconnect();

  absl::StatusOr<uint16_t> Publish(std::string_view topic,
                                   std::span<const std::byte> payload,
                                   const PublishOptions& options = {});
  absl::StatusOr<uint16_t> Subscribe(std::string_view filter,
                                     SubscriptionOptions options,
                                     uint32_t subscription_id = 0);
  absl::StatusOr<uint16_t> Unsubscribe(std::string_view filter);
  // Writes whatever the core has queued (the operations above do it).
  void Flush();

  Client& core() { return core_; }
  bool connected() const { return core_.state() == Client::State::kConnected; }
  bool transport_open() const { return socket_.valid(); }
  transport::SocketId socket() const { return socket_; }
  size_t queued_send_bytes() const;

  // transport::SocketHandler
  void OnConnect(transport::SocketId socket, int result) override;
  void OnData(transport::SocketId socket, transport::BufferLease data) override;
  void OnReadClosed(transport::SocketId socket, int result) override;
  void OnSendComplete(transport::SocketId socket, int result,
                      uint64_t tag) override;
  void OnClosed(transport::SocketId socket) override;
  void OnWritable(transport::SocketId socket) override;
  // transport::TimerHandler
  void OnTimer(uint64_t timer_id, Timestamp now) override;

 private:
  ClientDriver(transport::Loop* loop, ClientDriverOptions options,
               Listener* listener);
  Timestamp now() const { return loop_->now(); }
  void Dispatch();
  void TransportGone();
  void ArmTimer();

  transport::Loop* loop_;
  ClientDriverOptions options_;
  Listener* listener_;
  Client core_;
  internal::StreamWriter writer_;
  transport::SocketId socket_;
  bool closing_ = false;
  Timestamp close_deadline_ = Timestamp::Never();
  uint64_t timer_id_ = 0;
  Timestamp timer_at_ = Timestamp::Never();
  // When Flush() found the Loop's pool empty: retry then.
  static constexpr Duration kPoolRetry = std::chrono::microseconds(500);
  Timestamp retry_at_ = Timestamp::Never();
  bool dispatching_ = false;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_CLIENT_DRIVER_H_
