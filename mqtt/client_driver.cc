#include "mqtt/client_driver.h"

#include <cerrno>

#include "absl/status/status.h"

namespace ringlab::mqtt {

absl::StatusOr<std::unique_ptr<ClientDriver>> ClientDriver::Create(
    transport::Loop* loop, ClientDriverOptions options, Listener* listener) {
  if (listener == nullptr) {
    return absl::InvalidArgumentError("mqtt client driver: no listener");
  }
  return std::unique_ptr<ClientDriver>(
      new ClientDriver(loop, std::move(options), listener));
}

ClientDriver::ClientDriver(transport::Loop* loop, ClientDriverOptions options,
                           Listener* listener)
    : loop_(loop),
      options_(std::move(options)),
      listener_(listener),
      core_(options_.client),
      writer_(loop) {
  const size_t hard = options_.max_send_queue_bytes + (256u << 10);
  if (options_.tcp.send_queue_limit_bytes < hard) {
    options_.tcp.send_queue_limit_bytes = hard;
  }
}

ClientDriver::~ClientDriver() {
  if (timer_id_ != 0) loop_->CancelTimer(timer_id_);
  if (socket_.valid()) loop_->Abandon(socket_);
}

absl::Status ClientDriver::Connect() {
  if (socket_.valid()) {
    return absl::FailedPreconditionError(
        "mqtt client driver: already connected or connecting");
  }
  absl::StatusOr<transport::SocketId> s =
      loop_->ConnectTcp(options_.server, this, options_.tcp);
  if (!s.ok()) return s.status();
  socket_ = *s;
  closing_ = false;
  close_deadline_ = Timestamp::Never();
  return absl::OkStatus();
}

void ClientDriver::Disconnect() {
  core_.Disconnect(now());
  Dispatch();
}

absl::StatusOr<uint16_t> ClientDriver::Publish(
    std::string_view topic, std::span<const std::byte> payload,
    const PublishOptions& options) {
  absl::StatusOr<uint16_t> id = core_.Publish(topic, payload, options, now());
  Flush();
  return id;
}

absl::StatusOr<uint16_t> ClientDriver::Subscribe(std::string_view filter,
                                                 SubscriptionOptions options,
                                                 uint32_t subscription_id) {
  absl::StatusOr<uint16_t> id =
      core_.Subscribe(filter, options, now(), subscription_id);
  Flush();
  return id;
}

absl::StatusOr<uint16_t> ClientDriver::Unsubscribe(std::string_view filter) {
  absl::StatusOr<uint16_t> id = core_.Unsubscribe(filter, now());
  Flush();
  return id;
}

size_t ClientDriver::queued_send_bytes() const {
  return socket_.valid() ? loop_->QueuedSendBytes(socket_) : 0;
}

void ClientDriver::Flush() {
  if (!socket_.valid()) return;
  if (!backlog_.empty()) {
    // Sends the Loop refused (-EAGAIN) go first; OnWritable retries.
    const int rc = internal::StreamWriter::Retry(loop_, socket_, &backlog_);
    if (rc == internal::StreamWriter::kBlocked) return;
    if (rc < 0) {
      TransportGone();
      return;
    }
  }
  if (core_.pending_output_bytes() == 0) return;
  writer_.Begin(socket_, &backlog_, tls_.get());
  bool blocked = false;
  while (core_.pending_output_bytes() > 0 && !writer_.blocked()) {
    // The socket's queue at the soft limit: the rest waits in the core
    // until OnWritable / a completed send. The lease being filled counts
    // too, so the queue ends at most one lease over the limit.
    if (loop_->QueuedSendBytes(socket_) + writer_.pending_bytes() >=
        options_.max_send_queue_bytes) {
      blocked = true;
      break;
    }
    std::span<std::byte> space = writer_.Space();
    if (space.empty()) break;  // the Loop's pool is exhausted
    writer_.Commit(core_.PollTransmit(space, now()));
  }
  const int rc = writer_.End();
  if (rc < 0) {
    // A send failed outright: the stream has a hole.
    TransportGone();
    return;
  }
  if (rc == internal::StreamWriter::kBlocked) {
    ++sends_deferred_;
    return;  // OnWritable resumes
  }
  if (core_.pending_output_bytes() > 0 && !blocked) {
    // Out of buffers: try again shortly. A send completing on this socket
    // would also retry, but there may be none in flight.
    retry_at_ = now() + kPoolRetry;
  }
  ArmTimer();
}

void ClientDriver::OnConnect(transport::SocketId socket, int result) {
  if (socket != socket_) return;
  if (result < 0) {
    TransportGone();
    return;
  }
  if (options_.tls != nullptr) {
    // CONNECT waits for the handshake (OnData below).
    absl::StatusOr<std::unique_ptr<TlsSession>> session =
        TlsSession::Create(*options_.tls);
    if (!session.ok()) {
      ++tls_counters_.failed_protocol;
      TransportGone();
      return;
    }
    if (tls_scratch_.empty()) tls_scratch_.resize(TlsStream::kMinScratchBytes);
    tls_ = std::make_unique<TlsStream>(
        loop_, socket_, std::move(*session),
        TlsStream::Options{.ktls = options_.ktls}, &tls_counters_,
        std::span<std::byte>(tls_scratch_));
    if (tls_->Start() < 0) TransportGone();
    return;
  }
  core_.OnTransportConnected(now());
  Flush();
}

void ClientDriver::OnData(transport::SocketId socket,
                          transport::BufferLease data) {
  if (socket != socket_) return;
  if (tls_ != nullptr) {
    if (tls_->failed()) return;  // closing: drop what still arrives
    const bool was_open = tls_->open();
    const TlsStream::Status st = tls_->OnReceived(
        std::move(data),
        [&](std::span<const std::byte> plain) { core_.OnBytes(plain, now()); });
    if (st == TlsStream::Status::kFailed && !closing_) {
      // The alert is queued: half-close behind it and let the server close
      // (or the linger deadline); the core hears of it then, once.
      (void)loop_->ShutdownWrite(socket_);
      closing_ = true;
      close_deadline_ = now() + options_.close_linger;
      ArmTimer();
      return;
    }
    if (st != TlsStream::Status::kOk) {
      if (st == TlsStream::Status::kPeerClosed) TransportGone();
      return;
    }
    if (!was_open && tls_->open()) {
      core_.OnTransportConnected(now());
      Flush();
    }
    Dispatch();
    return;
  }
  core_.OnBytes(data.bytes(), now());
  data.Release();
  Dispatch();
}

void ClientDriver::OnReadClosed(transport::SocketId socket, int result) {
  if (socket != socket_) return;
  if (tls_ != nullptr) tls_->ClassifyReadError(result);
  TransportGone();
}

void ClientDriver::OnSendComplete(transport::SocketId socket, int result,
                                  uint64_t) {
  if (socket != socket_) return;
  if (result < 0 && result != -ECANCELED) {
    TransportGone();
    return;
  }
  if (tls_ != nullptr) tls_->OnSendComplete();
  Flush();  // output that waited for the pool
}

void ClientDriver::OnClosed(transport::SocketId socket) {
  if (socket == socket_) socket_ = {};
}

void ClientDriver::OnWritable(transport::SocketId socket) {
  if (socket == socket_) Flush();
}

void ClientDriver::TransportGone() {
  backlog_.Clear();
  const transport::SocketId s = socket_;
  socket_ = {};
  tls_.reset();
  if (s.valid()) loop_->Close(s);
  // The core speaks only once MQTT started; a TCP connect or a TLS
  // handshake that failed before that is reported here, as the header
  // promises.
  const bool mqtt_started = core_.state() != Client::State::kOffline;
  core_.OnTransportClosed(now());
  if (!mqtt_started) {
    ClientEvent e;
    e.kind = ClientEvent::Kind::kClosed;
    e.reason = ReasonCode::kUnspecifiedError;
    listener_->OnClientEvent(*this, e);
  }
  Dispatch();
}

void ClientDriver::Dispatch() {
  if (dispatching_) return;  // a listener call inside a listener call
  dispatching_ = true;
  while (std::optional<ClientEvent> e = core_.PollEvent()) {
    if (e->kind == ClientEvent::Kind::kClosed && socket_.valid()) {
      // The MQTT connection is over: write its last bytes, then half-close;
      // the socket closes when the server closes or at the linger deadline.
      Flush();
      if (tls_ != nullptr) tls_->Close();  // close_notify before the FIN
      (void)loop_->ShutdownWrite(socket_);
      closing_ = true;
      close_deadline_ = now() + options_.close_linger;
    }
    listener_->OnClientEvent(*this, *e);
  }
  dispatching_ = false;
  Flush();
  ArmTimer();
}

void ClientDriver::ArmTimer() {
  Timestamp next = std::min(core_.NextDeadline(), retry_at_);
  if (closing_) next = std::min(next, close_deadline_);
  if (next >= timer_at_) return;
  if (timer_id_ != 0) loop_->CancelTimer(timer_id_);
  timer_at_ = next;
  timer_id_ = loop_->AddTimer(next, Duration(0), this);
}

void ClientDriver::OnTimer(uint64_t timer_id, Timestamp now) {
  if (timer_id != timer_id_) return;
  timer_id_ = 0;
  timer_at_ = Timestamp::Never();
  if (now >= retry_at_) {
    retry_at_ = Timestamp::Never();
    Flush();
  }
  if (closing_ && now >= close_deadline_ && socket_.valid()) {
    const transport::SocketId s = socket_;
    socket_ = {};
    closing_ = false;
    loop_->Close(s);
    core_.OnTransportClosed(now);
  }
  core_.OnTimeout(now);
  Dispatch();
}

}  // namespace ringlab::mqtt
