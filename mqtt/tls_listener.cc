#include "mqtt/tls_listener.h"

#include <cerrno>

#include "absl/status/status.h"

namespace ringlab::mqtt {

absl::StatusOr<std::unique_ptr<TlsListener>> TlsListener::Start(
    transport::Loop* loop, BrokerDriver* driver, TlsListenerOptions options) {
  if (options.context == nullptr ||
      options.context->config().role != TlsRole::kServer) {
    return absl::InvalidArgumentError(
        "tls listener: needs a server TlsContext");
  }
  if (options.ktls && !options.context->config().ktls) {
    return absl::InvalidArgumentError(
        "tls listener: ktls needs a context created with TlsConfig::ktls");
  }
  std::unique_ptr<TlsListener> l(
      new TlsListener(loop, driver, std::move(options)));
  // The driver's TCP options carry the send-queue limits it relies on
  // (a packet is never cut short).
  transport::TcpOptions tcp = driver->options().tcp;
  if (l->options_.tcp) {
    const size_t limit = tcp.send_queue_limit_bytes;
    tcp = *l->options_.tcp;
    tcp.send_queue_limit_bytes = std::max(tcp.send_queue_limit_bytes, limit);
  }
  absl::StatusOr<transport::SocketId> s =
      loop->ListenTcp(l->options_.listen, l.get(), tcp);
  if (!s.ok()) return s.status();
  l->listener_ = *s;
  absl::StatusOr<Endpoint> local = loop->LocalEndpoint(*s);
  if (!local.ok()) return local.status();
  l->local_ = *local;
  return l;
}

TlsListener::TlsListener(transport::Loop* loop, BrokerDriver* driver,
                         TlsListenerOptions options)
    : loop_(loop),
      driver_(driver),
      options_(std::move(options)),
      scratch_(TlsStream::kMinScratchBytes) {}

TlsListener::~TlsListener() {
  std::vector<transport::SocketId> sockets;
  for (const auto& [socket, stream] : streams_) sockets.push_back(socket);
  if (listener_.valid()) sockets.push_back(listener_);
  listener_ = {};
  for (transport::SocketId s : sockets) loop_->Abandon(s);
  // OnClosed may run inside Close (or later, when the Loop no longer runs):
  // nothing below depends on it.
  streams_.clear();
}

void TlsListener::Shutdown() {
  if (!listener_.valid()) return;
  loop_->Close(listener_);
  listener_ = {};
}

transport::SocketHandler* TlsListener::OnAccept(transport::SocketId listener,
                                                transport::SocketId connection,
                                                const Endpoint& peer) {
  if (!listener_.valid()) return nullptr;
  absl::StatusOr<std::unique_ptr<TlsSession>> session =
      TlsSession::Create(*options_.context);
  if (!session.ok()) {
    ++counters_.failed_protocol;
    return nullptr;
  }
  if (driver_->OnAccept(listener, connection, peer) == nullptr) {
    return nullptr;  // refused by the core (max_connections), counted there
  }
  auto stream =
      std::make_unique<TlsStream>(loop_, connection, std::move(*session),
                                  TlsStream::Options{.ktls = options_.ktls},
                                  &counters_, std::span<std::byte>(scratch_));
  driver_->SetStreamSink(connection, stream.get());
  streams_[connection] = std::move(stream);
  return this;
}

void TlsListener::OnData(transport::SocketId socket,
                         transport::BufferLease data) {
  auto it = streams_.find(socket);
  if (it == streams_.end()) return;
  TlsStream& stream = *it->second;
  if (stream.failed()) return;  // closing: ignore what still arrives
  const TlsStream::Status st = stream.OnReceived(
      std::move(data),
      [&](std::span<const std::byte> p) { driver_->OnStreamBytes(socket, p); });
  if (st == TlsStream::Status::kFailed) {
    // The alert is queued; the core forgets the connection and the socket
    // drains and closes.
    driver_->CloseConnection(socket);
  } else if (st == TlsStream::Status::kPeerClosed) {
    driver_->OnReadClosed(socket, 0);  // close_notify: an orderly end
  }
}

void TlsListener::OnReadClosed(transport::SocketId socket, int result) {
  auto it = streams_.find(socket);
  if (it != streams_.end()) result = it->second->ClassifyReadError(result);
  driver_->OnReadClosed(socket, result);
}

void TlsListener::OnSendComplete(transport::SocketId socket, int result,
                                 uint64_t tag) {
  auto it = streams_.find(socket);
  if (it != streams_.end() && result >= 0) it->second->OnSendComplete();
  driver_->OnSendComplete(socket, result, tag);
}

void TlsListener::OnClosed(transport::SocketId socket) {
  if (socket == listener_) {
    listener_ = {};
    return;
  }
  if (!streams_.contains(socket)) return;
  // The driver first: it may still drain through the stream while it
  // forgets the connection.
  driver_->OnClosed(socket);
  streams_.erase(socket);
}

void TlsListener::OnError(transport::SocketId socket, int error) {
  driver_->OnError(socket, error);
}

void TlsListener::OnWritable(transport::SocketId socket) {
  driver_->OnWritable(socket);
}

}  // namespace ringlab::mqtt
