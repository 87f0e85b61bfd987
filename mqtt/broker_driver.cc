#include "mqtt/broker_driver.h"

#include <cerrno>

namespace ringlab::mqtt {

absl::StatusOr<std::unique_ptr<BrokerDriver>> BrokerDriver::Start(
    transport::Loop* loop, BrokerDriverOptions options) {
  std::unique_ptr<BrokerDriver> d(new BrokerDriver(loop, std::move(options)));
  // The Loop's per-socket limit sits above the soft limit plus one largest
  // packet: stopping at the soft limit then keeps every packet whole.
  transport::TcpOptions& tcp = d->options_.tcp;
  const size_t hard = d->options_.max_send_queue_bytes +
                      d->options_.broker.max_packet_bytes + (64u << 10);
  if (tcp.send_queue_limit_bytes < hard) tcp.send_queue_limit_bytes = hard;
  absl::StatusOr<transport::SocketId> listener =
      loop->ListenTcp(d->options_.listen, d.get(), d->options_.tcp);
  if (!listener.ok()) return listener.status();
  d->listener_ = *listener;
  absl::StatusOr<Endpoint> local = loop->LocalEndpoint(*listener);
  if (!local.ok()) return local.status();
  d->local_ = *local;
  // Housekeeping: close connections that never finished closing.
  d->housekeeping_timer_ =
      loop->AddTimer(loop->now() + std::chrono::milliseconds(500),
                     std::chrono::milliseconds(500), d.get());
  return d;
}

BrokerDriver::BrokerDriver(transport::Loop* loop, BrokerDriverOptions options)
    : loop_(loop),
      options_(std::move(options)),
      broker_(options_.broker, options_.authenticator),
      writer_(loop),
      shared_(options_.shared_payload_cache_entries) {}

BrokerDriver::~BrokerDriver() {
  if (timer_id_ != 0) loop_->CancelTimer(timer_id_);
  if (housekeeping_timer_ != 0) loop_->CancelTimer(housekeeping_timer_);
  // Sockets still open refer to this handler: close them now. Their
  // OnClosed callbacks may come later from the Loop, so nothing here may
  // depend on them.
  std::vector<transport::SocketId> sockets;
  for (const auto& [socket, id] : by_socket_) sockets.push_back(socket);
  for (const Lingering& l : lingering_) sockets.push_back(l.socket);
  if (listener_.valid()) sockets.push_back(listener_);
  by_socket_.clear();
  lingering_.clear();
  for (transport::SocketId s : sockets) loop_->Abandon(s);
}

void BrokerDriver::Publish(const InjectedMessage& message) {
  broker_.PublishMessage(message, now());
  Pump();
}

void BrokerDriver::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (listener_.valid()) {
    loop_->Close(listener_);
    closed_listener_ = listener_;  // its OnClosed is not a connection's
    listener_ = {};
  }
  broker_.Shutdown(now());
  Pump();
}

transport::SocketHandler* BrokerDriver::OnAccept(transport::SocketId listener,
                                                 transport::SocketId connection,
                                                 const Endpoint&) {
  if (shut_down_) return nullptr;
  // Our listener is 0; the TLS listener's accepts come through here too
  // (tls_listener.h) and get their own connection rate bucket as 1.
  absl::StatusOr<ConnectionId> id =
      broker_.OnConnectionOpened(now(), listener == listener_ ? 0 : 1);
  if (!id.ok()) {
    ++counters_.refused;
    return nullptr;  // the Loop closes it
  }
  ++counters_.accepted;
  if (conns_.size() <= id->index) conns_.resize(id->index + 1);
  Conn& c = conns_[id->index];
  c.socket = connection;
  c.id = *id;
  c.blocked = false;
  c.backlog.Clear();
  c.sink = nullptr;
  by_socket_[connection] = *id;
  ArmTimer();  // the connect timeout
  return this;
}

void BrokerDriver::OnData(transport::SocketId socket,
                          transport::BufferLease data) {
  auto it = by_socket_.find(socket);
  if (it == by_socket_.end()) return;  // closing: ignore late bytes
  broker_.OnBytes(it->second, data.bytes(), now());
  data.Release();  // back to the pool (or the ring) before writing
  Pump();
}

void BrokerDriver::OnStreamBytes(transport::SocketId socket,
                                 std::span<const std::byte> bytes) {
  auto it = by_socket_.find(socket);
  if (it == by_socket_.end()) return;
  broker_.OnBytes(it->second, bytes, now());
  Pump();
}

void BrokerDriver::SetStreamSink(transport::SocketId socket,
                                 internal::StreamSink* sink) {
  auto it = by_socket_.find(socket);
  if (it == by_socket_.end() || it->second.index >= conns_.size()) return;
  conns_[it->second.index].sink = sink;
}

void BrokerDriver::CloseConnection(transport::SocketId socket) {
  auto it = by_socket_.find(socket);
  if (it == by_socket_.end() || it->second.index >= conns_.size()) return;
  EndConnection(conns_[it->second.index]);
  Pump();
}

void BrokerDriver::EndConnection(Conn& c) {
  // Flush what the core still has (CONNACK refusal, DISCONNECT), then
  // half-close; the socket closes when the peer does, or at the linger
  // deadline.
  Drain(c, /*ignore_limits=*/true);
  by_socket_.erase(c.socket);
  broker_.OnConnectionClosed(c.id, now());
  (void)loop_->ShutdownWrite(c.socket);
  lingering_.push_back({c.socket, now() + options_.close_linger});
}

void BrokerDriver::OnReadClosed(transport::SocketId socket, int result) {
  auto it = by_socket_.find(socket);
  if (it != by_socket_.end()) {
    // The peer went away (EOF or reset) without the core asking: a network
    // failure from the core's point of view.
    const ConnectionId id = it->second;
    by_socket_.erase(it);
    broker_.OnConnectionClosed(id, now());
  }
  CloseSocket(socket);
  Pump();
}

void BrokerDriver::OnSendComplete(transport::SocketId socket, int result,
                                  uint64_t) {
  if (result < 0 && result != -ECANCELED) {
    ++counters_.send_errors;
    auto it = by_socket_.find(socket);
    if (it != by_socket_.end()) {
      const ConnectionId id = it->second;
      by_socket_.erase(it);
      broker_.OnConnectionClosed(id, now());
      CloseSocket(socket);
    }
  }
  // Room again: connections waiting on their queue or on the pool retry.
  if (!waiting_.empty()) Pump();
}

void BrokerDriver::OnClosed(transport::SocketId socket) {
  auto it = by_socket_.find(socket);
  if (it != by_socket_.end()) {
    const ConnectionId id = it->second;
    by_socket_.erase(it);
    broker_.OnConnectionClosed(id, now());
    Pump();
  }
  for (size_t i = 0; i < lingering_.size(); ++i) {
    if (lingering_[i].socket == socket) {
      lingering_[i] = lingering_.back();
      lingering_.pop_back();
      break;
    }
  }
  if (socket != listener_ && socket != closed_listener_) ++counters_.closed;
}

void BrokerDriver::OnError(transport::SocketId, int) {
  // Accept failures (EMFILE, ...) are retried by the Loop; nothing to do.
}

void BrokerDriver::OnWritable(transport::SocketId socket) {
  ++counters_.writable;
  auto it = by_socket_.find(socket);
  if (it != by_socket_.end() && it->second.index < conns_.size()) {
    conns_[it->second.index].blocked = false;
  }
  Pump();
}

void BrokerDriver::OnTimer(uint64_t timer_id, Timestamp now) {
  if (timer_id == housekeeping_timer_) {
    // Connections paused for the pool are retried by send completions; this
    // is the backstop for when no send was in flight.
    if (!waiting_.empty()) Pump();
    for (size_t i = 0; i < lingering_.size();) {
      if (lingering_[i].deadline <= now) {
        ++counters_.linger_closes;
        const transport::SocketId s = lingering_[i].socket;
        lingering_[i] = lingering_.back();
        lingering_.pop_back();
        loop_->Close(s);
      } else {
        ++i;
      }
    }
    return;
  }
  if (timer_id != timer_id_) return;
  timer_id_ = 0;
  timer_at_ = Timestamp::Never();
  broker_.OnTimeout(now);
  Pump();
}

void BrokerDriver::ArmTimer() {
  const Timestamp next = broker_.NextDeadline();
  if (next >= timer_at_) return;  // the armed timer fires first
  if (timer_id_ != 0) loop_->CancelTimer(timer_id_);
  timer_at_ = next;
  timer_id_ = loop_->AddTimer(next, Duration(0), this);
}

void BrokerDriver::CloseSocket(transport::SocketId socket) {
  loop_->Close(socket);
}

bool BrokerDriver::Drain(Conn& conn, bool ignore_limits) {
  if (!conn.backlog.empty()) {
    // Sends the Loop refused earlier go first, in order.
    const int rc =
        internal::StreamWriter::Retry(loop_, conn.socket, &conn.backlog);
    if (rc == internal::StreamWriter::kBlocked) {
      conn.blocked = true;
      return false;
    }
    if (rc < 0) {
      ++counters_.send_refused_closes;
      DropConnection(conn);
      return true;
    }
  }
  writer_.Begin(conn.socket, &conn.backlog, conn.sink);
  bool complete = true;
  while (true) {
    if (!ignore_limits) {
      if (loop_->QueuedSendBytes(conn.socket) >=
          options_.max_send_queue_bytes) {
        if (!conn.blocked) ++counters_.blocked;
        conn.blocked = true;
        complete = false;
        break;
      }
      // Room for the whole next packet on top of the Loop's receive
      // reserve (AcquireBuffer() will not dip into it): a packet cut short
      // would corrupt the stream.
      const size_t bound = broker_.NextTransmitBound(conn.id);
      const size_t slot = loop_->buffers().buffer_size();
      const size_t need = (bound + slot - 1) / slot + 1 +
                          loop_->backend().receive_reserve_buffers +
                          options_.pool_reserve_buffers;
      if (loop_->buffers().free_count() < need) {
        // Shared payloads kept for later subscribers go back first.
        shared_.Clear();
        if (loop_->buffers().free_count() < need) {
          ++counters_.pool_low;
          complete = false;
          break;
        }
      }
    }
    std::span<std::byte> space = writer_.Space(Broker::kMinTransmitBytes);
    if (space.size() < Broker::kMinTransmitBytes) {
      complete = false;  // no buffer at all
      break;
    }
    std::optional<Transmit> t = broker_.PollTransmit(conn.id, space, now());
    if (!t) break;
    writer_.Commit(t->header_bytes);
    if (!t->tail.empty() && !WriteTail(*t)) {
      // The pool ran dry inside a packet: the stream would have a hole.
      ++counters_.pool_exhausted_closes;
      writer_.End();
      DropConnection(conn);
      return true;
    }
    if (writer_.blocked()) {
      // The Loop refused a send (budget or descriptors): the rest waits in
      // the backlog until OnWritable.
      ++counters_.sends_deferred;
      conn.blocked = true;
      complete = false;
      break;
    }
  }
  counters_.leases_sent += writer_.leases();
  counters_.shared_sends += writer_.shared_sends();
  const int rc = writer_.End();
  if (rc < 0) {
    // A send failed outright: part of a packet is gone, so the stream
    // cannot continue.
    ++counters_.send_refused_closes;
    DropConnection(conn);
    return true;
  }
  if (rc == internal::StreamWriter::kBlocked) {
    if (complete) ++counters_.sends_deferred;
    conn.blocked = true;
    complete = false;
  }
  if (complete) conn.blocked = false;
  return complete;
}

bool BrokerDriver::WriteTail(const Transmit& t) {
  // The tail is [forwarded v5 properties][payload] (v5) or [payload]: the
  // payload is what every subscriber shares; the properties travel in the
  // per-subscriber header.
  const Message& m = *t.message;
  const std::span<const std::byte> payload = m.payload();
  const bool payload_last =
      !payload.empty() && t.tail.size() >= payload.size() &&
      t.tail.data() + t.tail.size() == payload.data() + payload.size();
  // A TLS connection's sink must see every byte: no shared sends there.
  if (!payload_last || m.fanout() < 2 || writer_.has_sink() ||
      payload.size() < options_.share_min_payload_bytes) {
    // One subscriber: a copy into its lease costs what a share would.
    counters_.payload_bytes_copied += payload_last ? payload.size() : 0;
    return writer_.Append(t.tail);
  }
  std::span<const transport::SharedBuffer> chunks =
      shared_.Get(*loop_, m, payload);
  if (chunks.empty()) return writer_.Append(t.tail);  // fails the same way
  return writer_.AppendShared(
      t.header_bytes, t.tail.first(t.tail.size() - payload.size()), chunks);
}

void BrokerDriver::DropConnection(Conn& conn) {
  conn.backlog.Clear();
  by_socket_.erase(conn.socket);
  broker_.OnConnectionClosed(conn.id, now());
  CloseSocket(conn.socket);
}

void BrokerDriver::Pump() {
  // Re-entrancy guard: Loop calls made here can complete synchronously on
  // some backends and call back into the handler.
  if (pumping_) return;
  pumping_ = true;
  for (int pass = 0; pass < 4; ++pass) {
    std::vector<ConnectionId> retry;
    retry.swap(waiting_);
    for (ConnectionId id : retry) {
      if (id.index >= conns_.size() || conns_[id.index].id != id) continue;
      Conn& c = conns_[id.index];
      if (by_socket_.find(c.socket) == by_socket_.end()) continue;
      if (!Drain(c, false)) waiting_.push_back(id);
    }
    while (std::optional<ConnectionId> id = broker_.NextReady()) {
      if (id->index >= conns_.size()) continue;
      Conn& c = conns_[id->index];
      if (c.id != *id || by_socket_.find(c.socket) == by_socket_.end()) {
        continue;
      }
      if (c.blocked) continue;  // resumed from waiting_ when sends complete
      if (!Drain(c, false)) waiting_.push_back(*id);
    }
    bool closed_any = false;
    while (std::optional<BrokerEvent> e = broker_.PollEvent()) {
      closed_any = true;
      if (e->connection.index >= conns_.size()) continue;
      Conn& c = conns_[e->connection.index];
      if (c.id != e->connection) continue;
      EndConnection(c);
    }
    if (!closed_any) break;
  }
  pumping_ = false;
  ArmTimer();
}

}  // namespace ringlab::mqtt
