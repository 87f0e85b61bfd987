// TlsListener: the broker's second listener, for MQTT over TLS (port 8883 by
// convention), beside BrokerDriver's plain one on the same Loop and core.
//
//   auto ctx = TlsContext::Create({.role = TlsRole::kServer,
//                                  .cert_file = "server.crt",
//                                  .key_file = "server.key"});
//   TlsListenerOptions o;
//   o.listen = *Endpoint::Parse("127.0.0.1:8883");
//   o.context = *ctx;
//   o.ktls = true;                       // hand the record layer to the kernel
//   auto tls = TlsListener::Start(loop, driver.get(), o);
//   ...
//   tls->reset();                        // before the driver
//
// It owns the listening socket and is the Loop's handler of every TLS
// connection: accepts go to the driver (which opens the connection in the
// core, so the core's connect timeout also bounds the handshake), received
// ciphertext is decrypted by the connection's TlsStream and the plaintext
// passed to BrokerDriver::OnStreamBytes, and the driver writes through the
// stream (BrokerDriver::SetStreamSink), which encrypts. Other callbacks go
// to the driver unchanged.
//
// Refusals: a handshake that fails (plaintext on the TLS port, a client
// that rejects our certificate, a client certificate that does not verify)
// is counted by reason in counters(); the connection gets OpenSSL's alert
// and is closed the way the core closes one (flush, half-close, linger).
//
// Ownership: borrows the Loop and the driver, which must outlive it; its
// destructor closes its sockets. Threading: the Loop's thread.
#ifndef RINGLAB_MQTT_TLS_LISTENER_H_
#define RINGLAB_MQTT_TLS_LISTENER_H_

#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "mqtt/broker_driver.h"
#include "mqtt/tls.h"
#include "mqtt/tls_stream.h"
#include "transport/loop.h"

namespace ringlab::mqtt {

struct TlsListenerOptions {
  Endpoint listen = Endpoint::Loopback(8883);
  // Defaults to the driver's (send limits included); reuse_port for
  // several Loops on one port.
  std::optional<transport::TcpOptions> tcp;
  std::shared_ptr<TlsContext> context;  // a server context; required
  bool ktls = false;  // needs a context created with TlsConfig::ktls
};

class TlsListener : public transport::SocketHandler {
 public:
  static absl::StatusOr<std::unique_ptr<TlsListener>> Start(
      transport::Loop* loop, BrokerDriver* driver, TlsListenerOptions options);
  ~TlsListener() override;

  Endpoint local_endpoint() const { return local_; }
  const TlsCounters& counters() const { return counters_; }
  size_t open_streams() const { return streams_.size(); }
  // Stops accepting (the driver's Shutdown() ends the connections).
  void Shutdown();

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

 private:
  TlsListener(transport::Loop* loop, BrokerDriver* driver,
              TlsListenerOptions options);

  transport::Loop* loop_;
  BrokerDriver* driver_;
  TlsListenerOptions options_;
  transport::SocketId listener_;
  Endpoint local_;
  absl::flat_hash_map<transport::SocketId, std::unique_ptr<TlsStream>> streams_;
  std::vector<std::byte> scratch_;
  TlsCounters counters_;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_TLS_LISTENER_H_
