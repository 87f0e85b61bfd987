#include "mqtt/client.h"

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "mqtt/internal/absl_view.h"
#include "mqtt/topic.h"

namespace ringlab::mqtt {
namespace {

bool IsV5(Version v) { return v == Version::k5; }

Duration Seconds(uint64_t s) { return std::chrono::seconds(int64_t(s)); }

}  // namespace

Client::Client(ClientOptions options)
    : options_(std::move(options)),
      version_(options_.version),
      decoder_(options_.max_packet_bytes),
      client_id_(options_.client_id) {}

std::vector<std::byte> Client::TakeBuffer() {
  if (free_buffers_.empty()) return {};
  std::vector<std::byte> b = std::move(free_buffers_.back());
  free_buffers_.pop_back();
  b.clear();
  return b;
}

void Client::GiveBuffer(std::vector<std::byte> buffer) {
  // Recycled so a steady publish loop allocates nothing; bounded so a burst
  // does not keep its memory.
  if (free_buffers_.size() < 1024 && buffer.capacity() <= 64 * 1024) {
    free_buffers_.push_back(std::move(buffer));
  }
}

void Client::QueueBytes(std::span<const std::byte> bytes) {
  output_.insert(output_.end(), bytes.begin(), bytes.end());
}

void Client::Queue(const Packet& packet) {
  const size_t size = EncodedSize(packet, version_);
  if (size == 0) return;
  const size_t at = output_.size();
  output_.resize(at + size);
  Encode(packet, version_, std::span<std::byte>(output_).subspan(at));
}

size_t Client::ArenaAppend(std::span<const std::byte> bytes) {
  const size_t at = arena_.size();
  arena_.insert(arena_.end(), bytes.begin(), bytes.end());
  return at;
}

uint16_t Client::NextPacketId() {
  // MQTT-2.2.1-3: non-zero and not in use. The caller keeps fewer than
  // 65535 in use, so this terminates.
  while (true) {
    const uint16_t id = next_packet_id_;
    next_packet_id_ = uint16_t(id == 0xFFFF ? 1 : id + 1);
    if (ids_in_use_.insert(id).second) return id;
  }
}

// ---- Transport
// ---------------------------------------------------------------

void Client::OnTransportConnected(Timestamp now) {
  decoder_.Reset();
  output_.clear();
  output_pos_ = 0;
  aliases_in_.clear();
  state_ = State::kConnecting;
  connect_started_ = now;
  ping_sent_ = Timestamp::Never();
  last_sent_ = now;

  Connect c;
  c.version = version_;
  c.client_id = client_id_;
  c.clean_start = options_.clean_start;
  c.keep_alive_s = options_.keep_alive_s;
  if (IsV5(version_)) {
    if (options_.session_expiry_s != 0) {
      c.properties.session_expiry_interval = options_.session_expiry_s;
    }
    if (options_.receive_maximum != 65535) {
      c.properties.receive_maximum = options_.receive_maximum;
    }
    if (options_.topic_alias_maximum != 0) {
      c.properties.topic_alias_maximum = options_.topic_alias_maximum;
    }
    if (options_.max_packet_bytes < kMaxPacketBytes) {
      c.properties.maximum_packet_size = options_.max_packet_bytes;
    }
  }
  if (options_.will) {
    Will& w = c.will.emplace();
    w.topic = options_.will->topic;
    w.payload = AsBytes(options_.will->payload);
    w.qos = options_.will->qos;
    w.retain = options_.will->retain;
    if (IsV5(version_) && options_.will->delay_s != 0) {
      w.properties.will_delay_interval = options_.will->delay_s;
    }
  }
  if (options_.username) c.username = *options_.username;
  if (options_.password) c.password = AsBytes(*options_.password);
  Queue(c);
}

void Client::OnTransportClosed(Timestamp now) {
  if (state_ == State::kConnecting || state_ == State::kConnected) {
    Close(ReasonCode::kUnspecifiedError);  // lost without a DISCONNECT
  }
  state_ = State::kOffline;
  output_.clear();
  output_pos_ = 0;
  decoder_.Reset();
  aliases_in_.clear();
  for (uint16_t id : pending_acks_) ids_in_use_.erase(id);
  pending_acks_.clear();
  ping_sent_ = Timestamp::Never();
}

size_t Client::PollTransmit(std::span<std::byte> out, Timestamp now) {
  const size_t n = std::min(out.size(), output_.size() - output_pos_);
  if (n == 0) return 0;
  std::memcpy(out.data(), output_.data() + output_pos_, n);
  output_pos_ += n;
  if (output_pos_ == output_.size()) {
    output_.clear();
    output_pos_ = 0;
  }
  counters_.bytes_sent += n;
  last_sent_ = now;  // §3.1.2.10: keep alive counts from what we send
  return n;
}

void Client::OnBytes(std::span<const std::byte> bytes, Timestamp now) {
  // Views handed out by PollEvent are valid until this call.
  if (events_.empty()) arena_.clear();
  counters_.bytes_received += bytes.size();
  Frame frame;
  while (state_ == State::kConnecting || state_ == State::kConnected) {
    const StreamDecoder::Result r = decoder_.Next(&bytes, &frame);
    if (r == StreamDecoder::Result::kNeedMore) return;
    if (r == StreamDecoder::Result::kFrame) {
      HandleFrame(frame, now);
      continue;
    }
    Fail(r == StreamDecoder::Result::kTooLarge ? ReasonCode::kPacketTooLarge
                                               : ReasonCode::kMalformedPacket,
         "bad packet from the server", now);
    return;
  }
}

// ---- Incoming packets
// --------------------------------------------------------

void Client::HandleFrame(const Frame& frame, Timestamp now) {
  if (state_ == State::kConnecting) {
    // MQTT-3.2.0-1: the server's first packet is CONNACK.
    Connack ack;
    if (frame.type != PacketType::kConnack) {
      Fail(ReasonCode::kProtocolError, "MQTT-3.2.0-1: expected CONNACK", now);
      return;
    }
    if (DecodeStatus s = DecodeConnack(frame, version_, &ack); !s.ok()) {
      Fail(s.code, s.detail, now);
      return;
    }
    if (ack.code != 0) {
      QueuedEvent e{ClientEvent::Kind::kConnectFailed};
      e.reason = IsV5(version_) ? ReasonCode(ack.code)
                                : ReasonCodeFromConnackV311(ack.code);
      PushEvent(e);
      Close(e.reason);
      return;
    }
    const Properties& p = ack.properties;
    send_window_ = std::min<uint16_t>(options_.max_inflight,
                                      p.receive_maximum.value_or(65535));
    if (send_window_ == 0) send_window_ = 1;
    server_max_packet_ = p.maximum_packet_size.value_or(kMaxPacketBytes);
    keep_alive_s_ = p.server_keep_alive.value_or(options_.keep_alive_s);
    QueuedEvent e{ClientEvent::Kind::kConnected};
    e.session_present = ack.session_present;
    e.server_keep_alive_s = keep_alive_s_;
    if (p.assigned_client_identifier) {
      client_id_ = std::string(*p.assigned_client_identifier);
      e.has_assigned_id = true;
      e.offset = ArenaAppend(AsBytes(client_id_));
      e.length = client_id_.size();
    }
    state_ = State::kConnected;
    if (ack.session_present) {
      // MQTT-4.4.0-1: resend what the server has not acknowledged, in
      // order: PUBLISH with DUP (MQTT-3.3.1-1), or the PUBREL.
      for (size_t i = 0; i < inflight_.size(); ++i) {
        Outgoing& o = inflight_[i];
        if (!o.released) o.packet[0] |= std::byte(0x08);
        QueueBytes(o.packet);
        ++counters_.resent;
      }
    } else {
      // MQTT-3.2.2-5: no session on the server: our session state goes.
      // Publishes never confirmed are sent again as new ones; those already
      // received by the server (PUBREC seen) are not, to avoid duplicates.
      held_qos2_.clear();
      internal::Ring<Outgoing> keep;
      while (!inflight_.empty()) {
        Outgoing o = std::move(inflight_.front());
        inflight_.pop_front();
        if (o.released) {
          ++counters_.dropped_new_session;
          ids_in_use_.erase(o.packet_id);
          GiveBuffer(std::move(o.packet));
          continue;
        }
        o.packet[0] &= std::byte(0xF7);  // a new message: DUP 0
        keep.push_back(std::move(o));
      }
      while (!waiting_.empty()) {
        keep.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
      waiting_ = std::move(keep);
    }
    had_session_ =
        IsV5(version_) ? options_.session_expiry_s != 0 : !options_.clean_start;
    PushEvent(e);
    FillWindow();
    return;
  }

  const Version v = version_;
  switch (frame.type) {
    case PacketType::kPublish: {
      mqtt::Publish p;
      if (DecodeStatus s = DecodePublish(frame, v, &p); !s.ok()) {
        Fail(s.code, s.detail, now);
        return;
      }
      HandlePublish(frame, p, now);
      return;
    }
    case PacketType::kPuback:
    case PacketType::kPubrec:
    case PacketType::kPubrel:
    case PacketType::kPubcomp: {
      PubResponse r;
      if (DecodeStatus s = DecodePubResponse(frame, v, &r); !s.ok()) {
        Fail(s.code, s.detail, now);
        return;
      }
      HandleAck(r, now);
      return;
    }
    case PacketType::kSuback:
    case PacketType::kUnsuback: {
      const bool sub = frame.type == PacketType::kSuback;
      uint16_t id;
      std::span<const uint8_t> codes;
      DecodeStatus s;
      if (sub) {
        Suback a;
        s = DecodeSuback(frame, v, &a);
        id = a.packet_id;
        codes = a.reason_codes;
      } else {
        Unsuback a;
        s = DecodeUnsuback(frame, v, &a);
        id = a.packet_id;
        codes = a.reason_codes;
      }
      if (!s.ok()) {
        Fail(s.code, s.detail, now);
        return;
      }
      auto it = std::find(pending_acks_.begin(), pending_acks_.end(), id);
      if (it != pending_acks_.end()) {
        pending_acks_.erase(it);
        ids_in_use_.erase(id);
      }
      QueuedEvent e{sub ? ClientEvent::Kind::kSubscribed
                        : ClientEvent::Kind::kUnsubscribed};
      e.packet_id = id;
      e.offset = ArenaAppend(std::as_bytes(codes));
      e.length = codes.size();
      PushEvent(e);
      return;
    }
    case PacketType::kPingresp:
      ping_sent_ = Timestamp::Never();
      PushEvent(QueuedEvent{ClientEvent::Kind::kPong});
      return;
    case PacketType::kDisconnect: {
      mqtt::Disconnect d;
      if (DecodeStatus s = DecodeDisconnect(frame, v, &d); !s.ok()) {
        Fail(s.code, s.detail, now);
        return;
      }
      Close(d.reason);  // §3.14: the server ends the connection
      return;
    }
    default:
      Fail(ReasonCode::kProtocolError,
           "a client-to-server packet sent by the server", now);
      return;
  }
}

void Client::HandlePublish(const Frame& frame, const mqtt::Publish& in,
                           Timestamp now) {
  std::string_view topic = in.topic;
  if (IsV5(version_) && in.properties.topic_alias) {
    const uint16_t alias = *in.properties.topic_alias;
    // §3.3.2.3.4: 0 or above what we allowed is 0x94 (MQTT-3.3.2-10).
    if (alias == 0 || alias > options_.topic_alias_maximum) {
      Fail(ReasonCode::kTopicAliasInvalid, "topic alias out of range", now);
      return;
    }
    if (aliases_in_.size() < alias) aliases_in_.resize(alias);
    std::string& mapped = aliases_in_[alias - 1];
    if (!topic.empty()) {
      mapped.assign(topic.data(), topic.size());
    } else if (mapped.empty()) {
      Fail(ReasonCode::kProtocolError, "unknown topic alias", now);
      return;
    } else {
      topic = mapped;
    }
  } else if (topic.empty()) {
    Fail(ReasonCode::kProtocolError, "empty topic without an alias", now);
    return;
  }
  ++counters_.received[in.qos];
  if (in.qos == 2) {
    // Method A (§4.3.3): a resend of an id we hold is acknowledged again,
    // not delivered again.
    if (std::find(held_qos2_.begin(), held_qos2_.end(), in.packet_id) !=
        held_qos2_.end()) {
      ++counters_.duplicates_ignored;
      PubResponse rec;
      rec.type = PacketType::kPubrec;
      rec.packet_id = in.packet_id;
      Queue(rec);
      return;
    }
  }
  QueuedEvent e{ClientEvent::Kind::kMessage};
  e.flags = frame.flags;
  e.offset = ArenaAppend(frame.body);
  e.length = frame.body.size();
  e.topic_offset = ArenaAppend(AsBytes(topic));
  e.topic_length = topic.size();
  PushEvent(e);
  if (in.qos == 1) {
    PubResponse ack;
    ack.type = PacketType::kPuback;
    ack.packet_id = in.packet_id;
    Queue(ack);
  } else if (in.qos == 2) {
    held_qos2_.push_back(in.packet_id);
    PubResponse rec;
    rec.type = PacketType::kPubrec;
    rec.packet_id = in.packet_id;
    Queue(rec);
  }
}

void Client::HandleAck(const PubResponse& r, Timestamp now) {
  if (r.type == PacketType::kPubrel) {
    // The server releases its QoS 2 message to us: complete it.
    auto it = std::find(held_qos2_.begin(), held_qos2_.end(), r.packet_id);
    PubResponse comp;
    comp.type = PacketType::kPubcomp;
    comp.packet_id = r.packet_id;
    if (it != held_qos2_.end()) {
      *it = held_qos2_.back();
      held_qos2_.pop_back();
    } else {
      comp.reason = ReasonCode::kPacketIdentifierNotFound;
    }
    Queue(comp);
    return;
  }
  size_t i = 0;
  for (; i < inflight_.size(); ++i) {
    if (inflight_[i].packet_id == r.packet_id) break;
  }
  if (i == inflight_.size()) return;  // not ours (late, or a resend's ack)
  Outgoing& o = inflight_[i];
  bool done = false;
  if (r.type == PacketType::kPuback && o.qos == 1) {
    done = true;
  } else if (r.type == PacketType::kPubrec && o.qos == 2) {
    if (IsError(r.reason)) {
      done = true;  // §4.3.3: refused; no PUBREL
    } else {
      // Keep the PUBREL, not the PUBLISH: that is what a resend needs.
      PubResponse rel;
      rel.type = PacketType::kPubrel;
      rel.packet_id = r.packet_id;
      o.packet.resize(EncodedSize(Packet(rel), version_));
      Encode(rel, version_, o.packet);
      o.released = true;
      QueueBytes(o.packet);
    }
  } else if (r.type == PacketType::kPubcomp && o.released) {
    done = true;
  }
  if (!done) return;
  QueuedEvent e{ClientEvent::Kind::kPublished};
  e.packet_id = r.packet_id;
  e.reason = r.reason;
  PushEvent(e);
  ++counters_.completed;
  ids_in_use_.erase(o.packet_id);
  GiveBuffer(std::move(o.packet));
  if (i == 0) {
    inflight_.pop_front();
  } else {
    inflight_.erase(i);
  }
  FillWindow();
}

void Client::FillWindow() {
  // MQTT-3.3.4-7: at most the server's Receive Maximum unacknowledged.
  while (state_ == State::kConnected && !waiting_.empty() &&
         inflight_.size() < send_window_) {
    Outgoing o = std::move(waiting_.front());
    waiting_.pop_front();
    QueueBytes(o.packet);
    inflight_.push_back(std::move(o));
  }
}

void Client::Fail(ReasonCode code, const char* detail, Timestamp now) {
  ++counters_.protocol_errors;
  if (state_ == State::kConnected && IsV5(version_)) {
    mqtt::Disconnect d;
    d.reason = code;
    d.properties.reason_string = std::string_view(detail);
    Queue(d);
  }
  Close(code);
}

void Client::Close(ReasonCode reason) {
  if (state_ == State::kClosing || state_ == State::kOffline) return;
  state_ = State::kClosing;
  QueuedEvent e{ClientEvent::Kind::kClosed};
  e.reason = reason;
  PushEvent(e);
}

// ---- Operations
// ----------------------------------------------------------------

absl::StatusOr<uint16_t> Client::Publish(std::string_view topic,
                                         std::span<const std::byte> payload,
                                         const PublishOptions& options,
                                         Timestamp now) {
  if (!IsValidTopicName(topic)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mqtt client: not a topic name: '", internal::AbslView(topic), "'"));
  }
  if (options.qos > 2) {
    return absl::InvalidArgumentError("mqtt client: QoS must be 0, 1 or 2");
  }
  if (state_ == State::kClosing ||
      (options.qos == 0 && state_ != State::kConnected)) {
    return absl::FailedPreconditionError("mqtt client: not connected");
  }
  if (pending_output_bytes() > options_.max_output_bytes) {
    return absl::ResourceExhaustedError("mqtt client: output queue full");
  }
  if (options.qos > 0 && (waiting_.size() >= options_.max_waiting ||
                          ids_in_use_.size() >= 65000)) {
    return absl::ResourceExhaustedError("mqtt client: too many in flight");
  }
  mqtt::Publish p;
  p.topic = topic;
  p.qos = options.qos;
  p.retain = options.retain;
  p.payload = payload;
  if (IsV5(version_)) {
    p.properties.message_expiry_interval = options.message_expiry_s;
    p.properties.response_topic = options.response_topic;
    p.properties.correlation_data = options.correlation_data;
    p.properties.content_type = options.content_type;
    p.properties.payload_format_indicator = options.payload_format;
    p.properties.user_properties = UserProperties(options.user_properties);
  }
  const size_t size = EncodedSize(Packet(p), version_);
  if (size == 0 || size > server_max_packet_) {
    return absl::InvalidArgumentError(
        "mqtt client: packet over the Maximum Packet Size");
  }
  ++counters_.published[p.qos];
  if (p.qos == 0) {
    const size_t at = output_.size();
    output_.resize(at + size);
    Encode(p, version_, std::span<std::byte>(output_).subspan(at));
    return uint16_t(0);
  }
  p.packet_id = NextPacketId();
  Outgoing o;
  o.packet = TakeBuffer();
  o.packet.resize(size);
  Encode(p, version_, o.packet);
  o.packet_id = p.packet_id;
  o.qos = p.qos;
  waiting_.push_back(std::move(o));
  FillWindow();
  return p.packet_id;
}

absl::StatusOr<uint16_t> Client::Subscribe(std::string_view filter,
                                           SubscriptionOptions options,
                                           Timestamp now,
                                           uint32_t subscription_id) {
  if (state_ != State::kConnected) {
    return absl::FailedPreconditionError("mqtt client: not connected");
  }
  SubscribeEntry e{filter, options};
  mqtt::Subscribe s;
  s.packet_id = NextPacketId();
  s.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
  const uint32_t ids[1] = {subscription_id};
  if (IsV5(version_) && subscription_id != 0) {
    s.properties.subscription_ids = SubscriptionIds(ids);
  }
  pending_acks_.push_back(s.packet_id);
  Queue(s);
  return s.packet_id;
}

absl::StatusOr<uint16_t> Client::Unsubscribe(std::string_view filter,
                                             Timestamp now) {
  if (state_ != State::kConnected) {
    return absl::FailedPreconditionError("mqtt client: not connected");
  }
  mqtt::Unsubscribe u;
  u.packet_id = NextPacketId();
  u.filters = TopicFilterList(std::span<const std::string_view>(&filter, 1));
  pending_acks_.push_back(u.packet_id);
  Queue(u);
  return u.packet_id;
}

void Client::Disconnect(Timestamp now, ReasonCode reason) {
  if (state_ == State::kConnected) {
    mqtt::Disconnect d;
    d.reason = reason;
    Queue(d);
  }
  Close(ReasonCode::kSuccess);
}

// ---- Events and time
// -----------------------------------------------------------

std::optional<ClientEvent> Client::PollEvent() {
  if (events_.empty()) return std::nullopt;
  const QueuedEvent q = events_.front();
  events_.pop_front();
  ClientEvent e;
  e.kind = q.kind;
  e.reason = q.reason;
  e.packet_id = q.packet_id;
  e.session_present = q.session_present;
  e.server_keep_alive_s = q.server_keep_alive_s;
  const std::span<const std::byte> bytes(arena_.data() + q.offset, q.length);
  switch (q.kind) {
    case ClientEvent::Kind::kMessage: {
      Frame f;
      f.type = PacketType::kPublish;
      f.flags = q.flags;
      f.body = bytes;
      (void)DecodePublish(f, version_, &e.message);  // validated on arrival
      e.message.topic = AsString(std::span<const std::byte>(
          arena_.data() + q.topic_offset, q.topic_length));
      break;
    }
    case ClientEvent::Kind::kSubscribed:
    case ClientEvent::Kind::kUnsubscribed:
      e.reason_codes = {reinterpret_cast<const uint8_t*>(bytes.data()),
                        bytes.size()};
      break;
    case ClientEvent::Kind::kConnected:
      if (q.has_assigned_id) e.assigned_client_id = AsString(bytes);
      break;
    default:
      break;
  }
  return e;
}

Timestamp Client::NextDeadline() const {
  if (state_ == State::kConnecting) {
    return connect_started_ + options_.connect_timeout;
  }
  if (state_ != State::kConnected || keep_alive_s_ == 0) {
    return Timestamp::Never();
  }
  const Duration ka = Seconds(keep_alive_s_);
  if (!ping_sent_.is_never()) return ping_sent_ + ka;
  return last_sent_ + ka;
}

void Client::OnTimeout(Timestamp now) {
  if (events_.empty()) arena_.clear();
  if (state_ == State::kConnecting) {
    if (now >= connect_started_ + options_.connect_timeout) {
      Close(ReasonCode::kUnspecifiedError);
    }
    return;
  }
  if (state_ != State::kConnected || keep_alive_s_ == 0) return;
  const Duration ka = Seconds(keep_alive_s_);
  if (!ping_sent_.is_never()) {
    // No PINGRESP within a keep alive period: the connection is dead
    // (§3.1.2.10).
    if (now >= ping_sent_ + ka) Close(ReasonCode::kKeepAliveTimeout);
    return;
  }
  if (now >= last_sent_ + ka) {
    Queue(Pingreq{});  // MQTT-3.1.2-20
    ping_sent_ = now;
    last_sent_ = now;
    ++counters_.pings;
  }
}

}  // namespace ringlab::mqtt
