#include "udp/host.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "udp/internal/connection.h"

namespace ringlab::rudp {
namespace {

using internal::Connection;

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Family, port and address bytes: what identifies a peer for the cookie.
size_t AddressBytes(const Endpoint& e, std::byte* out) {
  size_t n = 0;
  out[n++] = std::byte(e.family());
  out[n++] = std::byte(e.port() >> 8);
  out[n++] = std::byte(e.port());
  if (e.is_ipv4()) {
    const uint32_t a = e.ipv4_host_order();
    for (int shift = 24; shift >= 0; shift -= 8)
      out[n++] = std::byte(a >> shift);
  } else if (e.family() == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(e.sockaddr());
    std::memcpy(out + n, &sin6->sin6_addr, 16);
    n += 16;
  }
  return n;
}

void PutU64(std::byte* p, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    p[i] = std::byte(v);
    v >>= 8;
  }
}

uint64_t GetU64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | uint64_t(p[i]);
  return v;
}

bool DeadlineLater(const auto& a, const auto& b) { return a.at > b.at; }

}  // namespace

absl::Status Host::ValidateOptions(const HostOptions& options) {
  const ConnectionOptions& c = options.connection;
  if (c.channels.empty() || c.channels.size() > wire::kMaxChannels) {
    return absl::InvalidArgumentError(
        absl::StrCat("connection.channels: need 1..", wire::kMaxChannels,
                     " channels, got ", c.channels.size()));
  }
  if (c.max_datagram_bytes < wire::kMinInitialBytes ||
      c.max_datagram_bytes > 65000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "connection.max_datagram_bytes must be in [1200, 65000], got ",
        c.max_datagram_bytes));
  }
  if (c.max_message_bytes == 0) {
    return absl::InvalidArgumentError("connection.max_message_bytes is 0");
  }
  const uint64_t span = Connection::SpanOf(c.max_message_bytes);
  if (internal::RoundUpPow2(c.receive_window_bytes) < span) {
    return absl::InvalidArgumentError(absl::StrCat(
        "connection.receive_window_bytes (", c.receive_window_bytes,
        ") must hold one max_message_bytes message (", span, " bytes)"));
  }
  if (internal::RoundUpPow2(c.send_buffer_bytes) < span) {
    return absl::InvalidArgumentError(absl::StrCat(
        "connection.send_buffer_bytes (", c.send_buffer_bytes,
        ") must hold one max_message_bytes message (", span, " bytes)"));
  }
  const uint64_t fragment =
      (c.max_datagram_bytes - wire::kShortHeaderMaxBytes - 28 - 64) / 64 * 64;
  const uint64_t fragments = (c.max_message_bytes + fragment - 1) / fragment;
  if (internal::RoundUpPow2(c.max_send_fragments) < fragments) {
    return absl::InvalidArgumentError(
        absl::StrCat("connection.max_send_fragments (", c.max_send_fragments,
                     ") must hold one max_message_bytes message (", fragments,
                     " fragments)"));
  }
  if (c.max_packets_in_flight < 16) {
    return absl::InvalidArgumentError(
        "connection.max_packets_in_flight must be at least 16");
  }
  if (c.unreliable_queue_messages == 0) {
    return absl::InvalidArgumentError(
        "connection.unreliable_queue_messages is 0");
  }
  if (c.ack_eliciting_threshold == 0) {
    return absl::InvalidArgumentError(
        "connection.ack_eliciting_threshold is 0");
  }
  if (c.initial_rtt <= Duration::zero() ||
      c.timer_granularity <= Duration::zero()) {
    return absl::InvalidArgumentError(
        "connection.initial_rtt and timer_granularity must be positive");
  }
  if (c.max_ack_delay < Duration::zero() ||
      c.max_ack_delay >= std::chrono::milliseconds(1 << 14)) {
    return absl::InvalidArgumentError(
        "connection.max_ack_delay must be in [0, 2^14 ms) (RFC 9000 §18.2)");
  }
  if (c.failure_detection &&
      !(c.probe_phi > 0 && c.failure_detector.threshold > c.probe_phi)) {
    return absl::InvalidArgumentError(
        "connection.failure_detector.threshold must exceed probe_phi > 0");
  }
  if (c.failure_detector.window_size == 0) {
    return absl::InvalidArgumentError(
        "connection.failure_detector.window_size is 0");
  }
  if (options.max_connections == 0) {
    return absl::InvalidArgumentError("max_connections is 0");
  }
  if (options.max_stateless_replies == 0) {
    return absl::InvalidArgumentError("max_stateless_replies is 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Host>> Host::Create(const HostOptions& options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  return std::unique_ptr<Host>(new Host(options));
}

Host::Host(const HostOptions& options) : options_(options) {
  uint64_t state = options.seed;
  cookie_key_ = {SplitMix64(&state), SplitMix64(&state)};
  cid_key_ = {SplitMix64(&state), SplitMix64(&state)};
  slots_.resize(options.max_connections);
  free_slots_.reserve(options.max_connections);
  for (uint32_t i = options.max_connections; i > 0; --i) {
    free_slots_.push_back(i - 1);
  }
  // Reserved once so inserting and erasing never rehash into new memory.
  by_cid_.reserve(size_t{options.max_connections} * 2);
  transmit_queue_.Init(options.max_connections);
  event_queue_.Init(options.max_connections);
  stateless_.Init(options.max_stateless_replies);
  heap_.reserve(4 * size_t{options.max_connections} + 16);
  due_.reserve(options.max_connections);
  stale_deadlines_.reserve(options.max_connections);
}

Host::~Host() = default;

size_t Host::MinTransmitBytes() const {
  return std::max<size_t>(options_.connection.max_datagram_bytes,
                          wire::kMinInitialBytes);
}

Connection* Host::Find(ConnectionHandle handle) const {
  if (!handle.valid() || handle.index >= slots_.size()) return nullptr;
  const Slot& slot = slots_[handle.index];
  if (slot.generation != handle.generation) return nullptr;
  return slot.connection.get();
}

uint64_t Host::NewConnectionId() {
  for (;;) {
    std::byte counter[8];
    PutU64(counter, cid_counter_++);
    const uint64_t cid = internal::SipHash24(cid_key_, counter);
    if (cid != 0 && !by_cid_.contains(cid)) return cid;
  }
}

uint64_t Host::ServerConnectionId(const Endpoint& client,
                                  uint64_t client_cid) const {
  // Derived, not drawn: a repeated INITIAL finds the same connection, so
  // the server needs no table of handshakes in progress.
  std::byte input[1 + 2 + 16 + 8 + 1];
  size_t n = AddressBytes(client, input);
  PutU64(input + n, client_cid);
  n += 8;
  input[n++] = std::byte{0x5c};  // domain separation from NewConnectionId
  return internal::SipHash24(cid_key_, std::span(input, n)) | 1;
}

void Host::MakeToken(const Endpoint& client, uint64_t client_cid,
                     Timestamp issued,
                     std::array<std::byte, kTokenBytes>* token) const {
  std::byte input[1 + 2 + 16 + 8 + 8];
  size_t n = AddressBytes(client, input);
  PutU64(input + n, client_cid);
  n += 8;
  PutU64(input + n, uint64_t(issued.nanos()));
  n += 8;
  PutU64(token->data(), uint64_t(issued.nanos()));
  PutU64(token->data() + 8,
         internal::SipHash24(cookie_key_, std::span(input, n)));
}

absl::StatusOr<ConnectionHandle> Host::Connect(const Endpoint& peer,
                                               Timestamp now) {
  if (!peer.valid()) {
    return absl::InvalidArgumentError("Connect: invalid peer endpoint");
  }
  if (free_slots_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Connect: max_connections (", options_.max_connections, ") reached"));
  }
  const uint32_t index = free_slots_.back();
  free_slots_.pop_back();
  const uint64_t cid = NewConnectionId();
  slots_[index].connection = std::make_unique<Connection>(
      options_.connection, Connection::Role::kClient, cid, peer, now);
  by_cid_[cid] = index;
  ++connection_count_;
  ++stats_.connections_initiated;
  Touch(index, true);
  return HandleOf(index);
}

void Host::QueueStateless(const StatelessReply& reply) {
  if (!stateless_.push_back(reply)) Drop(DropReason::kStatelessQueueFull);
}

void Host::OnDatagram(std::span<const std::byte> bytes, const Endpoint& from,
                      Timestamp now) {
  ++stats_.datagrams_received;
  stats_.bytes_received += bytes.size();
  if (wire::IsLongHeader(bytes)) {
    wire::LongHeader h;
    const wire::ParseError e = wire::ParseLongHeader(bytes, &h);
    if (e == wire::ParseError::kBadVersion &&
        h.type == wire::PacketType::kInitial &&
        bytes.size() >= wire::kMinInitialBytes) {
      // Tell a client of another version why (it sent >= 1200 bytes, we
      // answer with 14).
      Drop(DropReason::kBadVersion);
      stats_.bytes_received_unvalidated += bytes.size();
      StatelessReply reply;
      reply.to = from;
      reply.type = wire::PacketType::kReject;
      reply.client_cid = h.client_cid;
      reply.reason = wire::RejectReason::kVersion;
      QueueStateless(reply);
      return;
    }
    if (e != wire::ParseError::kOk) {
      ++stats_.parse_errors[size_t(e)];
      Drop(DropReason::kParse);
      return;
    }
    if (h.type == wire::PacketType::kInitial) {
      HandleInitial(h, bytes.size(), from, now);
      return;
    }
    // RETRY / ACCEPT / REJECT answer one of our client connections.
    auto it = by_cid_.find(h.client_cid);
    if (it == by_cid_.end()) {
      Drop(DropReason::kUnknownConnection);
      return;
    }
    Connection* c = slots_[it->second].connection.get();
    if (c->role() != Connection::Role::kClient) {
      Drop(DropReason::kUnexpectedHandshake);
      return;
    }
    if (c->peer() != from) {
      Drop(DropReason::kWrongAddress);
      c->CountDrop(DropReason::kWrongAddress);
      return;
    }
    c->OnLongPacket(h, bytes.size(), now);
    Touch(it->second, true);
    return;
  }
  wire::Reader r(bytes);
  wire::ShortHeader h;
  const wire::ParseError e = wire::ParseShortHeader(r, &h);
  if (e != wire::ParseError::kOk) {
    ++stats_.parse_errors[size_t(e)];
    Drop(DropReason::kParse);
    return;
  }
  auto it = by_cid_.find(h.dcid);
  if (it == by_cid_.end()) {
    Drop(DropReason::kUnknownConnection);
    return;
  }
  Connection* c = slots_[it->second].connection.get();
  if (c->peer() != from) {
    // No migration: a packet for a known id from elsewhere is spoofed (or a
    // NAT rebinding, which rudp does not support).
    Drop(DropReason::kWrongAddress);
    c->CountDrop(DropReason::kWrongAddress);
    return;
  }
  c->OnShortPacket(h, r.rest(), bytes.size(), now);
  Touch(it->second, true);
}

void Host::HandleInitial(const wire::LongHeader& h, size_t size,
                         const Endpoint& from, Timestamp now) {
  // RFC 9000 §14.1: an INITIAL below 1200 bytes is dropped, unanswered, so
  // no reply can be larger than the datagram that caused it.
  if (size < wire::kMinInitialBytes) {
    Drop(DropReason::kShortInitial);
    return;
  }
  stats_.bytes_received_unvalidated += size;
  if (!options_.accept_incoming) {
    Drop(DropReason::kNotAccepting);
    return;
  }
  StatelessReply reply;
  reply.to = from;
  reply.client_cid = h.client_cid;
  const ConnectionOptions& ours = options_.connection;
  bool channels_match = h.params.channel_count == ours.channels.size();
  for (size_t i = 0; channels_match && i < ours.channels.size(); ++i) {
    channels_match = h.params.channel_types[i] == uint8_t(ours.channels[i]);
  }
  if (!channels_match) {
    reply.type = wire::PacketType::kReject;
    reply.reason = wire::RejectReason::kChannelMismatch;
    QueueStateless(reply);
    return;
  }
  if (h.token.empty()) {
    // RFC 9000 §8.1.2: address validation with a Retry; no state kept.
    reply.type = wire::PacketType::kRetry;
    MakeToken(from, h.client_cid, now, &reply.token);
    QueueStateless(reply);
    return;
  }
  if (h.token.size() != kTokenBytes) {
    Drop(DropReason::kBadToken);
    return;
  }
  const uint64_t issued_ns = GetU64(h.token.data());
  std::array<std::byte, kTokenBytes> expected;
  MakeToken(from, h.client_cid, Timestamp::FromNanos(int64_t(issued_ns)),
            &expected);
  if (!std::equal(expected.begin(), expected.end(), h.token.begin())) {
    Drop(DropReason::kBadToken);
    return;
  }
  const Timestamp issued = Timestamp::FromNanos(int64_t(issued_ns));
  if (issued > now || now - issued > options_.cookie_lifetime) {
    // A stale cookie: a fresh one lets an honest client continue.
    Drop(DropReason::kExpiredToken);
    reply.type = wire::PacketType::kRetry;
    MakeToken(from, h.client_cid, now, &reply.token);
    QueueStateless(reply);
    return;
  }
  const uint64_t server_cid = ServerConnectionId(from, h.client_cid);
  if (auto it = by_cid_.find(server_cid); it != by_cid_.end()) {
    Connection* c = slots_[it->second].connection.get();
    if (c->role() == Connection::Role::kServer && c->peer() == from &&
        c->remote_cid() == h.client_cid) {
      c->OnLongPacket(h, size, now);  // our ACCEPT was lost: resend
      Touch(it->second, true);
    } else {
      Drop(DropReason::kUnexpectedHandshake);
    }
    return;
  }
  if (free_slots_.empty()) {
    Drop(DropReason::kServerBusy);
    reply.type = wire::PacketType::kReject;
    reply.reason = wire::RejectReason::kServerBusy;
    QueueStateless(reply);
    return;
  }
  const uint32_t index = free_slots_.back();
  free_slots_.pop_back();
  auto c = std::make_unique<Connection>(
      options_.connection, Connection::Role::kServer, server_cid, from, now);
  // The cookie went out at `issued` and came back now: one round trip.
  c->AcceptFrom(h.client_cid, h.params, now - issued, now);
  slots_[index].connection = std::move(c);
  by_cid_[server_cid] = index;
  ++connection_count_;
  ++stats_.connections_accepted;
  Touch(index, true);
}

std::optional<Host::Transmit> Host::PollTransmit(std::span<std::byte> out,
                                                 Timestamp now) {
  while (!stateless_.empty()) {
    const StatelessReply r = stateless_.front();
    stateless_.pop_front();
    wire::LongHeader h;
    h.type = r.type;
    h.version = wire::kVersion;
    h.client_cid = r.client_cid;
    h.reason = r.reason;
    if (r.type == wire::PacketType::kRetry) h.token = r.token;
    const size_t n = wire::WriteLongHeader(h, out);
    if (n == 0) continue;
    if (r.type == wire::PacketType::kRetry) {
      ++stats_.retries_sent;
    } else {
      ++stats_.rejects_sent;
    }
    stats_.bytes_sent_stateless += n;
    ++stats_.datagrams_sent;
    return Transmit{n, r.to};
  }
  while (!transmit_queue_.empty()) {
    const uint32_t index = transmit_queue_.front();
    transmit_queue_.pop_front();
    Slot& slot = slots_[index];
    slot.in_transmit_queue = false;
    if (slot.connection == nullptr) continue;
    const size_t n = slot.connection->PollTransmit(out, now);
    Touch(index, false);
    if (n == 0) continue;
    // It may have more: back in line, behind the others (round robin).
    slot.in_transmit_queue = true;
    transmit_queue_.push_back(index);
    ++stats_.datagrams_sent;
    return Transmit{n, slot.connection->peer()};
  }
  return std::nullopt;
}

void Host::Touch(uint32_t index, bool ready_to_send) {
  Slot& slot = slots_[index];
  Connection* c = slot.connection.get();
  if (c == nullptr) return;
  if (ready_to_send && !slot.in_transmit_queue) {
    slot.in_transmit_queue = transmit_queue_.push_back(index);
  }
  if (!slot.in_event_queue && c->HasEvents()) {
    slot.in_event_queue = event_queue_.push_back(index);
  }
  if (!slot.deadline_stale) {
    slot.deadline_stale = true;
    stale_deadlines_.push_back(index);  // capacity: one per slot
  }
}

void Host::RefreshDeadlines() const {
  for (const uint32_t index : stale_deadlines_) {
    Slot& slot = slots_[index];
    slot.deadline_stale = false;
    if (slot.connection == nullptr) continue;
    const Timestamp deadline = slot.connection->NextDeadline();
    if (deadline == slot.scheduled) continue;
    slot.scheduled = deadline;
    if (deadline.is_never()) continue;
    if (heap_.size() + 1 > heap_.capacity()) CompactHeap();
    heap_.push_back({deadline, index, slot.generation});
    std::push_heap(heap_.begin(), heap_.end(),
                   [](const DeadlineEntry& a, const DeadlineEntry& b) {
                     return DeadlineLater(a, b);
                   });
  }
  stale_deadlines_.clear();
}

void Host::CompactHeap() const {
  // Drop stale entries in place (capacity stays: no allocation).
  auto stale = [this](const DeadlineEntry& e) {
    const Slot& s = slots_[e.index];
    return s.connection == nullptr || s.generation != e.generation ||
           s.scheduled != e.at;
  };
  heap_.erase(std::remove_if(heap_.begin(), heap_.end(), stale), heap_.end());
  std::make_heap(heap_.begin(), heap_.end(),
                 [](const DeadlineEntry& a, const DeadlineEntry& b) {
                   return DeadlineLater(a, b);
                 });
}

Timestamp Host::NextDeadline() const {
  RefreshDeadlines();
  auto later = [](const DeadlineEntry& a, const DeadlineEntry& b) {
    return DeadlineLater(a, b);
  };
  while (!heap_.empty()) {
    const DeadlineEntry& top = heap_.front();
    const Slot& s = slots_[top.index];
    if (s.connection != nullptr && s.generation == top.generation &&
        s.scheduled == top.at) {
      return top.at;
    }
    std::pop_heap(heap_.begin(), heap_.end(), later);
    heap_.pop_back();
  }
  return Timestamp::Never();
}

void Host::OnTimeout(Timestamp now) {
  auto later = [](const DeadlineEntry& a, const DeadlineEntry& b) {
    return DeadlineLater(a, b);
  };
  RefreshDeadlines();
  // Collect first: a connection's new deadline may again be <= now.
  due_.clear();
  while (!heap_.empty() && heap_.front().at <= now) {
    const DeadlineEntry top = heap_.front();
    std::pop_heap(heap_.begin(), heap_.end(), later);
    heap_.pop_back();
    Slot& s = slots_[top.index];
    if (s.connection == nullptr || s.generation != top.generation ||
        s.scheduled != top.at) {
      continue;
    }
    s.scheduled = Timestamp::Never();
    if (due_.size() < due_.capacity()) due_.push_back(top.index);
  }
  for (uint32_t index : due_) {
    Slot& s = slots_[index];
    if (s.connection == nullptr) continue;
    s.connection->OnTimeout(now);
    Touch(index, true);
  }
}

bool Host::PollEvent(Event* event) {
  if (last_event_index_.has_value()) {
    Slot& s = slots_[*last_event_index_];
    if (s.connection != nullptr) {
      s.connection->ReleaseEvent();
      Touch(*last_event_index_, true);  // freed window space: MAX_DATA
    }
    last_event_index_.reset();
  }
  if (pending_free_.has_value()) {
    Free(*pending_free_);
    pending_free_.reset();
  }
  while (!event_queue_.empty()) {
    const uint32_t index = event_queue_.front();
    event_queue_.pop_front();
    Slot& s = slots_[index];
    s.in_event_queue = false;
    if (s.connection == nullptr) continue;
    if (!s.connection->PollEvent(event)) continue;
    event->connection = HandleOf(index);
    last_event_index_ = index;
    if (event->type == EventType::kClosed) {
      pending_free_ = index;  // Stats() still answers until the next poll
    } else {
      s.in_event_queue = event_queue_.push_back(index);
    }
    return true;
  }
  return false;
}

void Host::Free(uint32_t index) {
  Slot& s = slots_[index];
  if (s.connection == nullptr) return;
  by_cid_.erase(s.connection->local_cid());
  s.connection.reset();
  s.scheduled = Timestamp::Never();
  if (++s.generation == 0) s.generation = 1;
  free_slots_.push_back(index);
  --connection_count_;
  ++stats_.connections_closed;
}

SendResult Host::Send(ConnectionHandle handle, uint8_t channel,
                      std::span<const std::byte> data, Timestamp now) {
  Connection* c = Find(handle);
  if (c == nullptr) return SendResult::kNotConnected;
  const SendResult r = c->Send(channel, data, now);
  if (r == SendResult::kOk) Touch(handle.index, true);
  return r;
}

absl::Status Host::Close(ConnectionHandle handle, Timestamp now) {
  Connection* c = Find(handle);
  if (c == nullptr) return absl::NotFoundError("Close: no such connection");
  c->Close(now);
  Touch(handle.index, true);
  return absl::OkStatus();
}

absl::StatusOr<ConnectionStats> Host::Stats(ConnectionHandle handle) const {
  const Connection* c = Find(handle);
  if (c == nullptr) return absl::NotFoundError("Stats: no such connection");
  return c->stats();
}

absl::StatusOr<Endpoint> Host::Peer(ConnectionHandle handle) const {
  const Connection* c = Find(handle);
  if (c == nullptr) return absl::NotFoundError("Peer: no such connection");
  return c->peer();
}

bool Host::IsOpen(ConnectionHandle handle) const {
  const Connection* c = Find(handle);
  return c != nullptr && c->state() != Connection::State::kClosed;
}

size_t Host::memory_bytes() const {
  size_t n = sizeof(*this) + slots_.capacity() * sizeof(Slot) +
             free_slots_.capacity() * 4 +
             heap_.capacity() * sizeof(DeadlineEntry) + due_.capacity() * 4 +
             stale_deadlines_.capacity() * 4 + transmit_queue_.memory_bytes() +
             event_queue_.memory_bytes() + stateless_.memory_bytes() +
             by_cid_.capacity() * (sizeof(uint64_t) + sizeof(uint32_t) + 1);
  for (const Slot& s : slots_) {
    if (s.connection != nullptr) n += s.connection->memory_bytes();
  }
  return n;
}

}  // namespace ringlab::rudp
