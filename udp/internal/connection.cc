#include "udp/internal/connection.h"

#include <algorithm>
#include <cassert>

namespace ringlab::rudp::internal {
namespace {

using std::chrono::microseconds;

// Room kept free in a data packet for the ACK, NACK and control frames, so
// that a whole fragment still fits beside them.
constexpr size_t kControlReserveBytes = 64;
constexpr size_t kAckBudgetWithData = 40;
constexpr size_t kNackBudgetBytes = 16;
// The largest MESSAGE frame header (1 type, 1 channel, message id up to 8,
// length and fragment offset up to 4 each, data offset up to 8, fragment
// length up to 2).
constexpr size_t kMaxMessageHeaderBytes = 28;

PhiAccrualOptions DetectorOptions(const ConnectionOptions& o) {
  PhiAccrualOptions d = o.failure_detector;
  if (o.heartbeat_interval > Duration::zero()) {
    d.first_heartbeat_estimate = o.heartbeat_interval;
    if (d.min_sample_interval == Duration::zero()) {
      d.min_sample_interval = o.heartbeat_interval / 2;
    }
    // Unset floor: three intervals (see DefaultFailureDetector()).
    if (d.min_std_dev == Duration::zero()) {
      d.min_std_dev = o.heartbeat_interval * 3;
    }
  } else if (d.min_std_dev == Duration::zero()) {
    d.min_std_dev = d.first_heartbeat_estimate * 3;
  }
  return d;
}

Duration Backoff(Duration base, uint32_t count) {
  const uint32_t shift = std::min<uint32_t>(count, 16);
  return base * (int64_t{1} << shift);
}

}  // namespace

Connection::Connection(const ConnectionOptions& options, Role role,
                       uint64_t local_cid, const Endpoint& peer, Timestamp now)
    : options_(options),
      role_(role),
      state_(State::kHandshake),
      local_cid_(local_cid),
      peer_(peer),
      fragment_bytes_((options.max_datagram_bytes - wire::kShortHeaderMaxBytes -
                       kMaxMessageHeaderBytes - kControlReserveBytes) /
                      kUnitBytes * kUnitBytes),
      channel_count_(uint8_t(
          std::min<size_t>(options.channels.size(), wire::kMaxChannels))),
      next_pn_(options.initial_packet_number),
      rtt_(options.initial_rtt),
      cc_(options.max_datagram_bytes, options.congestion_control),
      pacer_(10 * uint64_t{options.max_datagram_bytes}),
      detector_(DetectorOptions(options)) {
  for (uint8_t i = 0; i < channel_count_; ++i) {
    channel_types_[i] = options.channels[i];
  }
  // Every buffer is sized here, once (bounded memory, no allocation later).
  sent_.Init(options.max_packets_in_flight);
  chunk_refs_.Init(std::max<size_t>(2 * size_t{options.max_send_fragments},
                                    4 * kMaxFragmentsPerPacket));
  send_bytes_.Init(options.send_buffer_bytes);
  chunks_.Init(options.max_send_fragments);
  retransmit_.Init(chunks_.capacity());
  unreliable_out_.Init(options.unreliable_queue_messages);
  unreliable_out_bytes_.resize(unreliable_out_.capacity() *
                               options.max_datagram_bytes);
  unreliable_in_.Init(options.unreliable_queue_messages);
  unreliable_in_bytes_.resize(unreliable_in_.capacity() *
                              options.max_datagram_bytes);
  recv_bytes_.Init(options.receive_window_bytes);
  const uint64_t window = recv_bytes_.capacity();
  received_units_.Init(window / kUnitBytes);
  consumed_units_.Init(window / kUnitBytes);
  advertised_max_data_ = window;
  for (uint8_t i = 0; i < channel_count_; ++i) {
    RecvChannel& ch = recv_channels_[i];
    ch.type = channel_types_[i];
    if (ch.type != ChannelType::kUnreliableSequenced) {
      // Each undelivered message holds at least kMinSpanBytes of the
      // window, so this many ids can be outstanding at once.
      ch.table.resize(RoundUpPow2(window / kMinSpanBytes));
      if (ch.type == ChannelType::kReliableUnordered) {
        ch.ready.Init(ch.table.size());
      }
    }
  }
  handshake_started_ = now;
  next_initial_time_ = now;
  last_receive_time_ = now;
  idle_reference_ = now;
  last_ack_eliciting_sent_ = now;
}

wire::TransportParams Connection::LocalParams() const {
  wire::TransportParams p;
  p.max_data = advertised_max_data_;
  p.max_ack_delay_us = uint32_t(
      std::chrono::duration_cast<microseconds>(options_.max_ack_delay).count());
  p.idle_timeout_ms =
      uint32_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                   options_.idle_timeout)
                   .count());
  p.max_message_bytes = options_.max_message_bytes;
  p.initial_packet_number = options_.initial_packet_number;
  p.channel_count = channel_count_;
  for (uint8_t i = 0; i < channel_count_; ++i) {
    p.channel_types[i] = uint8_t(channel_types_[i]);
  }
  return p;
}

void Connection::Establish(const wire::TransportParams& peer, Timestamp now) {
  peer_max_data_ = peer.max_data;
  peer_max_ack_delay_ = microseconds(peer.max_ack_delay_us);
  peer_max_message_bytes_ = peer.max_message_bytes;
  // Packet numbers decode around the peer's first one until it arrives.
  if (!largest_received_.has_value() && peer.initial_packet_number > 0) {
    largest_received_ = peer.initial_packet_number - 1;
  }
  // RFC 9000 §10.1: the effective idle timeout is the minimum of the two
  // announced values, where 0 means "none".
  const Duration peer_idle = std::chrono::milliseconds(peer.idle_timeout_ms);
  if (options_.idle_timeout == Duration::zero()) {
    idle_timeout_ = peer_idle;
  } else if (peer_idle == Duration::zero()) {
    idle_timeout_ = options_.idle_timeout;
  } else {
    idle_timeout_ = std::min(options_.idle_timeout, peer_idle);
  }
  state_ = State::kEstablished;
  connected_event_pending_ = true;
  last_receive_time_ = now;
  idle_reference_ = now;
  last_ack_eliciting_sent_ = now;
  if (role_ == Role::kClient) {
    // The client knows the handshake is done; the server learns it from the
    // first packet after ACCEPT, so send one at once.
    Confirm(now);
    ping_pending_ = true;
  }
}

void Connection::Confirm(Timestamp now) {
  if (confirmed_) return;
  confirmed_ = true;
  if (options_.failure_detection) detector_.Start(now);
}

void Connection::AcceptFrom(uint64_t client_cid,
                            const wire::TransportParams& params,
                            std::optional<Duration> rtt_sample, Timestamp now) {
  remote_cid_ = client_cid;
  if (rtt_sample.has_value()) rtt_.OnSample(*rtt_sample, Duration::zero());
  Establish(params, now);
  accept_pending_ = true;
}

// --- Input -------------------------------------------------------------------

void Connection::OnLongPacket(const wire::LongHeader& h, size_t datagram_bytes,
                              Timestamp now) {
  ++stats_.packets_received;
  stats_.bytes_received += datagram_bytes;
  if (role_ == Role::kServer) {
    // A repeated INITIAL (the Host validated its cookie): our ACCEPT was
    // lost, send it again.
    if (h.type == wire::PacketType::kInitial && state_ == State::kEstablished) {
      accept_pending_ = true;
      last_receive_time_ = now;
      idle_reference_ = now;
      return;
    }
    CountDrop(DropReason::kUnexpectedHandshake);
    return;
  }
  if (state_ != State::kHandshake) {
    // A late duplicate RETRY or ACCEPT after we are up: harmless.
    CountDrop(DropReason::kUnexpectedHandshake);
    return;
  }
  switch (h.type) {
    case wire::PacketType::kRetry:
      if (h.token.empty() || h.token.size() > token_.size()) {
        CountDrop(DropReason::kUnexpectedHandshake);
        return;
      }
      if (token_size_ > 0) {
        // We hold a cookie and have sent INITIALs with it: this RETRY
        // answers an older INITIAL (the server answers each one, so a
        // retransmitted INITIAL brings a second RETRY, often in the same
        // receive batch as the first), or the server re-issued the cookie.
        // Take the new cookie for the next retransmission, but neither
        // sample the RTT (it would pair this RETRY with the INITIAL just
        // sent: a sample of ~0) nor answer at once (a duplicate would make
        // us send an INITIAL per RETRY).
        std::copy(h.token.begin(), h.token.end(), token_.begin());
        token_size_ = h.token.size();
        return;
      }
      std::copy(h.token.begin(), h.token.end(), token_.begin());
      token_size_ = h.token.size();
      // Karn's rule: only an unambiguous exchange gives an RTT sample.
      if (initials_since_token_ == 1) {
        rtt_.OnSample(now - last_initial_time_, Duration::zero());
      }
      initials_since_token_ = 0;
      next_initial_time_ = now;  // answer with the cookie at once
      return;
    case wire::PacketType::kAccept:
      if (token_size_ > 0 && initials_since_token_ == 1) {
        rtt_.OnSample(now - last_initial_time_, Duration::zero());
      }
      remote_cid_ = h.server_cid;
      Establish(h.params, now);
      OnPacketFromPeer(now);
      return;
    case wire::PacketType::kReject:
      connect_failed_event_pending_ = true;
      EnterClosed(h.reason == wire::RejectReason::kChannelMismatch
                      ? CloseReason::kChannelMismatch
                      : CloseReason::kRejected);
      return;
    default:
      CountDrop(DropReason::kUnexpectedHandshake);
  }
}

void Connection::OnShortPacket(const wire::ShortHeader& h,
                               std::span<const std::byte> frames,
                               size_t datagram_bytes, Timestamp now) {
  if (state_ == State::kHandshake) {
    // Data before ACCEPT (the ACCEPT was lost or reordered): we cannot
    // answer yet; the peer retransmits.
    CountDrop(DropReason::kUnexpectedHandshake);
    return;
  }
  if (state_ == State::kClosed) {
    CountDrop(DropReason::kClosed);
    return;
  }
  ++stats_.packets_received;
  stats_.bytes_received += datagram_bytes;
  if (state_ == State::kDraining) {
    // RFC 9000 §10.2.1: answer with CLOSE, but rate-limited so a flood
    // cannot make us send a packet per packet received.
    if (last_close_sent_.is_never() ||
        now - last_close_sent_ >=
            std::max(rtt_.smoothed(), options_.timer_granularity)) {
      close_reply_pending_ = close_reason_ != CloseReason::kPeer;
    }
    CountDrop(DropReason::kClosed);
    return;
  }
  bool ack_eliciting = false;
  if (!ValidateFrames(frames, &ack_eliciting)) return;  // counted inside
  // Server: the first packet after ACCEPT confirms the handshake.
  Confirm(now);
  // RFC 9000 Appendix A.3 expands the truncated number around the largest
  // packet number received so far.
  const uint64_t pn =
      wire::DecodePacketNumber(largest_received_, h.truncated_pn, h.pn_length);
  const auto inserted = received_.Insert(pn);
  if (inserted == RangeSet<64>::InsertResult::kDuplicate) {
    ++stats_.duplicate_packets;
    // Our ACK may have been lost; acknowledge again, with the usual delay.
    if (ack_eliciting) {
      ack_pending_ = true;
      ack_deadline_ = std::min(ack_deadline_, now + options_.max_ack_delay);
    }
    OnPacketFromPeer(now);
    return;
  }
  if (inserted == RangeSet<64>::InsertResult::kNew) {
    RecordReceived(pn, ack_eliciting, now);
  }
  // kTooOld: a straggler below what we still track. Its frames are handled
  // (fragments deduplicate themselves) but it is not acknowledged again.
  OnPacketFromPeer(now);
  HandleFrames(frames, now);
}

void Connection::OnPacketFromPeer(Timestamp now) {
  last_receive_time_ = now;
  // RFC 9000 §10.1: the idle timer restarts on every packet received.
  idle_reference_ = now;
  ack_eliciting_sent_since_receive_ = false;
  if (options_.failure_detection && state_ != State::kHandshake) {
    detector_.OnArrival(now);
    suspected_ = false;
  }
}

void Connection::RecordReceived(uint64_t pn, bool ack_eliciting,
                                Timestamp now) {
  // RFC 9000 §13.2.1: acknowledge at once when an ack-eliciting packet
  // arrives out of order: below the largest seen, or above it with a gap.
  bool out_of_order = false;
  if (!largest_received_.has_value() || pn > *largest_received_) {
    if (largest_received_.has_value() && pn > *largest_received_ + 1) {
      out_of_order = true;
      if (options_.nack_on_gap && nack_count_ < nacks_.size()) {
        // Newest gap first, as range lists are written highest first.
        std::copy_backward(nacks_.begin(), nacks_.begin() + nack_count_,
                           nacks_.begin() + nack_count_ + 1);
        nacks_[0] = {*largest_received_ + 1, pn - 1};
        ++nack_count_;
      }
    }
    largest_received_ = pn;
    largest_received_time_ = now;
  } else {
    out_of_order = true;
  }
  if (!ack_eliciting) return;  // §13.2.1: only ack-eliciting packets count
  ack_pending_ = true;
  ++ack_eliciting_since_ack_;
  // §13.2.2: an ACK after every second ack-eliciting packet, else within
  // max_ack_delay.
  if (out_of_order ||
      ack_eliciting_since_ack_ >= options_.ack_eliciting_threshold) {
    ack_now_ = true;
  } else {
    ack_deadline_ = std::min(ack_deadline_, now + options_.max_ack_delay);
  }
}

bool Connection::ValidateFrames(std::span<const std::byte> frames,
                                bool* ack_eliciting) {
  // Validate every frame before handling any: a packet is taken whole or
  // not at all.
  wire::Reader r(frames);
  wire::Frame f;
  if (r.remaining() == 0) {
    ++stats_.parse_errors[size_t(wire::ParseError::kTruncated)];
    CountDrop(DropReason::kParse);
    return false;
  }
  while (r.remaining() > 0) {
    const wire::ParseError e = wire::ParseFrame(r, &f);
    if (e != wire::ParseError::kOk) {
      ++stats_.parse_errors[size_t(e)];
      CountDrop(DropReason::kParse);
      return false;
    }
    switch (f.type) {
      case wire::FrameType::kAck:
      case wire::FrameType::kNack:
        // RFC 9000 §13.1: an acknowledgement of a packet never sent is a
        // protocol violation. Without packet protection anyone who knows
        // the connection id could forge one, so we drop the packet rather
        // than let it close the connection.
        if (!largest_sent_.has_value() || f.ranges.largest > *largest_sent_ ||
            f.ranges.smallest < options_.initial_packet_number) {
          CountDrop(DropReason::kForgedAck);
          return false;
        }
        break;
      case wire::FrameType::kMessage: {
        if (f.channel >= channel_count_ ||
            channel_types_[f.channel] == ChannelType::kUnreliableSequenced) {
          CountDrop(DropReason::kChannelType);
          return false;
        }
        if (f.message_length > options_.max_message_bytes) {
          CountDrop(DropReason::kMessageTooLarge);
          return false;
        }
        const uint64_t start = f.data_offset - f.fragment_offset;
        // RFC 9000 §4.1: data beyond the advertised limit is a flow
        // control violation.
        if (start + SpanOf(f.message_length) > advertised_max_data_) {
          CountDrop(DropReason::kFlowControl);
          return false;
        }
        const bool last = f.fragment_offset + f.data.size() == f.message_length;
        if (start % kUnitBytes != 0 || f.fragment_offset % kUnitBytes != 0 ||
            (!last && (f.data.empty() || f.data.size() % kUnitBytes != 0))) {
          CountDrop(DropReason::kMisalignedFragment);
          return false;
        }
        *ack_eliciting = true;
        break;
      }
      case wire::FrameType::kUnreliable:
        if (f.channel >= channel_count_ ||
            channel_types_[f.channel] != ChannelType::kUnreliableSequenced) {
          CountDrop(DropReason::kChannelType);
          return false;
        }
        *ack_eliciting = true;
        break;
      case wire::FrameType::kPing:
      case wire::FrameType::kMaxData:
      case wire::FrameType::kDataBlocked:
        *ack_eliciting = true;
        break;
      case wire::FrameType::kPadding:
      case wire::FrameType::kClose:  // §13.2.1: not ack-eliciting
        break;
    }
  }
  return true;
}

void Connection::HandleFrames(std::span<const std::byte> frames,
                              Timestamp now) {
  wire::Reader r(frames);
  wire::Frame f;
  bool peer_closed = false;
  while (r.remaining() > 0) {
    wire::ParseFrame(r, &f);  // validated already
    switch (f.type) {
      case wire::FrameType::kAck:
        OnAckFrame(f, now);
        break;
      case wire::FrameType::kNack:
        OnNackFrame(f, now);
        break;
      case wire::FrameType::kMaxData:
        // RFC 9000 §19.9: a smaller limit than already known is ignored.
        if (f.value > peer_max_data_) peer_max_data_ = f.value;
        break;
      case wire::FrameType::kDataBlocked:
        // §19.12: the peer is stuck at f.value. If we already allowed more,
        // our MAX_DATA is lost or late: send it again.
        if (advertised_max_data_ > f.value) max_data_pending_ = true;
        break;
      case wire::FrameType::kPing:
        // Probes and keepalives measure liveness: answer at once.
        ack_now_ = true;
        break;
      case wire::FrameType::kClose:
        peer_closed = true;
        break;
      case wire::FrameType::kMessage:
        OnMessageFrame(f);
        break;
      case wire::FrameType::kUnreliable:
        OnUnreliableFrame(f);
        break;
      case wire::FrameType::kPadding:
        break;
    }
  }
  // The other frames of the packet (its last ACK, its data) count first.
  if (peer_closed) OnPeerClose(now);
}

void Connection::OnAckFrame(const wire::Frame& f, Timestamp now) {
  ++stats_.acks_received;
  const uint64_t largest = f.ranges.largest;
  if (!largest_acked_.has_value() || largest > *largest_acked_) {
    largest_acked_ = largest;
  }
  // RFC 9002 Appendix A.7: find the newly acknowledged packets.
  bool any_newly_acked = false;
  const SentPacket* largest_newly_acked = nullptr;
  auto it = f.ranges.ranges();
  uint64_t low, high;
  while (it.Next(&low, &high)) {
    for (size_t i = FindSent(low); i < sent_.size() && sent_[i].pn <= high;
         ++i) {
      SentPacket& p = sent_[i];
      if (p.state == kPacketInFlight) {
        OnPacketAcked(p, now);
        any_newly_acked = true;
        if (p.pn == largest) largest_newly_acked = &p;
      } else if (p.state == kPacketLost) {
        // Declared lost, yet it arrived: the retransmission was spurious.
        ++stats_.spurious_losses;
        p.state = kPacketAcked;
        for (uint16_t k = 0; k < p.chunk_count; ++k) {
          if (Chunk* c = ChunkAt(chunk_refs_[p.first_ref - refs_base_ + k])) {
            c->state = kChunkAcked;
          }
        }
        if (p.has_ack) received_.RemoveBelow(p.ack_floor);
      }
    }
  }
  if (!any_newly_acked) {
    RetireChunks();
    return;
  }
  // §5.1: an RTT sample when the largest acknowledged packet is newly
  // acknowledged (every packet we track is ack-eliciting). §5.3: the peer's
  // ack delay counts up to its max_ack_delay.
  if (largest_newly_acked != nullptr) {
    const Duration ack_delay = std::min<Duration>(
        microseconds(f.ack_delay_raw << wire::kAckDelayExponent),
        peer_max_ack_delay_);
    if (!rtt_.has_sample()) first_rtt_sample_time_ = now;
    rtt_.OnSample(now - largest_newly_acked->time_sent, ack_delay);
    ++stats_.rtt_samples;
  }
  DetectLostPackets(now);
  // §6.2.1: the PTO backoff resets when an acknowledgement arrives.
  pto_count_ = 0;
  RetireSentPackets(now);
  RetireChunks();
}

void Connection::OnPacketAcked(SentPacket& p, Timestamp now) {
  p.state = kPacketAcked;
  if (p.in_flight) {
    cc_.OnPacketAcked(p.size, p.time_sent, p.app_limited);
    --ack_eliciting_in_flight_;
  }
  for (uint16_t k = 0; k < p.chunk_count; ++k) {
    if (Chunk* c = ChunkAt(chunk_refs_[p.first_ref - refs_base_ + k])) {
      c->state = kChunkAcked;
    }
  }
  // RFC 9000 §13.2.4: the peer has seen the ACK this packet carried, so the
  // ranges it reported need not be repeated.
  if (p.has_ack) received_.RemoveBelow(p.ack_floor);
  (void)now;
}

void Connection::OnNackFrame(const wire::Frame& f, Timestamp now) {
  ++stats_.nacks_received;
  if (!largest_acked_.has_value()) return;
  // The receiver saw a later packet than these: treat them as lost now,
  // without waiting for RFC 9002's packet or time threshold.
  Timestamp latest_lost_sent = Timestamp::Zero();
  bool any = false;
  auto it = f.ranges.ranges();
  uint64_t low, high;
  while (it.Next(&low, &high)) {
    for (size_t i = FindSent(low); i < sent_.size() && sent_[i].pn <= high;
         ++i) {
      SentPacket& p = sent_[i];
      if (p.state != kPacketInFlight || p.pn >= *largest_acked_) continue;
      DeclareLost(p, now);
      ++stats_.packets_lost_by_nack;
      latest_lost_sent = std::max(latest_lost_sent, p.time_sent);
      any = true;
    }
  }
  if (any) cc_.OnCongestionEvent(latest_lost_sent, now);
}

void Connection::OnMessageFrame(const wire::Frame& f) {
  RecvChannel& ch = recv_channels_[f.channel];
  const uint64_t start = f.data_offset - f.fragment_offset;
  const uint64_t span = SpanOf(f.message_length);
  if (start + span <= consumed_offset_ || f.message_id < ch.base) {
    ++stats_.duplicate_fragments;  // delivered long ago
    return;
  }
  if (start < consumed_offset_) {
    CountDrop(DropReason::kInconsistentMessage);
    return;
  }
  if (f.message_id - ch.base >= ch.table.size()) {
    CountDrop(DropReason::kMessageWindow);
    return;
  }
  RecvMessage& m = Entry(ch, f.message_id);
  if (m.state == kMsgEmpty) {
    m.start = start;
    m.length = uint32_t(f.message_length);
    m.received = 0;
    m.state = kMsgPartial;
  } else if (m.start != start || m.length != f.message_length) {
    CountDrop(DropReason::kInconsistentMessage);
    return;
  }
  if (m.state != kMsgPartial) {
    ++stats_.duplicate_fragments;
    return;
  }
  // Which 64-byte units of the window this fragment fills: the last one
  // also claims the padding up to the end of the message's span.
  const bool last = f.fragment_offset + f.data.size() == f.message_length;
  const uint64_t unit_begin = f.data_offset / kUnitBytes;
  const uint64_t unit_end = last ? (start + span) / kUnitBytes
                                 : (f.data_offset + f.data.size()) / kUnitBytes;
  const size_t already = received_units_.Count(unit_begin, unit_end);
  if (already == unit_end - unit_begin) {
    ++stats_.duplicate_fragments;
    return;
  }
  if (already != 0) {
    CountDrop(DropReason::kInconsistentMessage);  // overlapping fragments
    return;
  }
  received_units_.Set(unit_begin, unit_end);
  recv_bytes_.Write(f.data_offset, f.data);
  m.received += uint32_t(f.data.size());
  if (m.received == m.length) {
    m.state = kMsgComplete;
    if (ch.type == ChannelType::kReliableUnordered) {
      ch.ready.push_back(f.message_id);
    }
  }
}

void Connection::OnUnreliableFrame(const wire::Frame& f) {
  RecvChannel& ch = recv_channels_[f.channel];
  // Sequenced: anything not newer than the newest seen is stale.
  if (ch.has_unreliable && f.message_id <= ch.last_unreliable) {
    CountDrop(DropReason::kUnreliableStale);
    return;
  }
  if (unreliable_in_.full() || f.data.size() > options_.max_datagram_bytes) {
    CountDrop(DropReason::kUnreliableFull);
    return;
  }
  const size_t slot = (unreliable_in_head_slot_ + unreliable_in_.size()) %
                      unreliable_in_.capacity();
  std::copy(f.data.begin(), f.data.end(),
            unreliable_in_bytes_.begin() +
                ptrdiff_t(slot * options_.max_datagram_bytes));
  unreliable_in_.push_back({f.message_id, uint32_t(f.data.size()), f.channel});
  ch.has_unreliable = true;
  ch.last_unreliable = f.message_id;
}

void Connection::OnPeerClose(Timestamp now) {
  if (state_ != State::kEstablished && state_ != State::kClosing) return;
  close_reason_ = CloseReason::kPeer;
  // RFC 9000 §10.2.2: one CLOSE in reply, then draining.
  close_reply_pending_ = true;
  EnterDraining(now);
}

// --- Recovery (RFC 9002)
// -------------------------------------------------------

size_t Connection::FindSent(uint64_t pn) const {
  // sent_ is sorted by packet number (ACK-only packets are not in it).
  size_t lo = 0, hi = sent_.size();
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (sent_[mid].pn < pn) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

Connection::Chunk* Connection::ChunkAt(uint64_t seq) {
  if (seq < first_chunk_seq_ || seq - first_chunk_seq_ >= chunks_.size()) {
    return nullptr;
  }
  return &chunks_[seq - first_chunk_seq_];
}

void Connection::QueueRetransmit(uint64_t seq) {
  Chunk* c = ChunkAt(seq);
  if (c == nullptr || c->queued || c->state == kChunkAcked) return;
  c->queued = true;
  retransmit_.push_back(seq);  // capacity == chunk capacity: never full
}

void Connection::DeclareLost(SentPacket& p, Timestamp now) {
  p.state = kPacketLost;
  p.lost_time = now;
  if (p.in_flight) {
    cc_.OnPacketRemoved(p.size);
    --ack_eliciting_in_flight_;
  }
  ++stats_.packets_lost;
  // Retransmit the lost frames, not the packet (RFC 9000 §13.3): each
  // fragment goes back in the queue unless a newer copy is in flight.
  for (uint16_t k = 0; k < p.chunk_count; ++k) {
    const uint64_t seq = chunk_refs_[p.first_ref - refs_base_ + k];
    Chunk* c = ChunkAt(seq);
    if (c != nullptr && c->state != kChunkAcked && c->last_packet == p.pn) {
      QueueRetransmit(seq);
    }
  }
  if (p.has_max_data) max_data_pending_ = true;
}

void Connection::DetectLostPackets(Timestamp now) {
  // RFC 9002 §6.1 and Appendix A.10.
  if (!largest_acked_.has_value()) return;
  loss_time_ = Timestamp::Never();
  const Duration loss_delay = rtt_.LossDelay(options_.timer_granularity);
  const Timestamp lost_send_time = now - loss_delay;
  // §7.6.2: persistent congestion is a run of lost ack-eliciting packets,
  // none acknowledged between them, spanning more than 3 PTOs.
  const Duration persistent_duration =
      (rtt_.smoothed() +
       std::max(rtt_.rttvar() * 4, options_.timer_granularity) +
       peer_max_ack_delay_) *
      kPersistentCongestionThreshold;
  bool any_lost = false;
  bool persistent = false;
  Timestamp latest_lost_sent = Timestamp::Zero();
  Timestamp run_start = Timestamp::Never();
  for (size_t i = 0; i < sent_.size(); ++i) {
    SentPacket& p = sent_[i];
    if (p.pn > *largest_acked_) break;
    if (p.state == kPacketAcked) {
      run_start = Timestamp::Never();
      continue;
    }
    if (p.state == kPacketLost) continue;  // punished already: neutral
    // §6.1.1 packet threshold, §6.1.2 time threshold.
    if (p.time_sent > lost_send_time &&
        *largest_acked_ < p.pn + kPacketThreshold) {
      loss_time_ = std::min(loss_time_, p.time_sent + loss_delay);
      run_start = Timestamp::Never();
      continue;
    }
    DeclareLost(p, now);
    any_lost = true;
    latest_lost_sent = std::max(latest_lost_sent, p.time_sent);
    // §7.6.2: only packets declared lost now count, and only those sent
    // after the first RTT sample (before it the PTO was a guess).
    if (!rtt_.has_sample() || p.time_sent < first_rtt_sample_time_) continue;
    if (run_start.is_never()) run_start = p.time_sent;
    if (p.time_sent - run_start > persistent_duration) persistent = true;
  }
  if (any_lost) {
    cc_.OnCongestionEvent(latest_lost_sent, now);
    if (persistent) cc_.OnPersistentCongestion();
  }
}

Duration Connection::ProbeTimeout() const {
  return rtt_.ProbeTimeout(peer_max_ack_delay_, options_.timer_granularity);
}

Timestamp Connection::LossDetectionDeadline() const {
  // RFC 9002 Appendix A.8 SetLossDetectionTimer.
  if (!loss_time_.is_never()) return loss_time_;
  if (ack_eliciting_in_flight_ == 0) return Timestamp::Never();
  // §6.2.1 adds max_ack_delay for the peer's delayed ACK, and leaves it out
  // for packets the peer acknowledges at once (Initial and Handshake
  // there). A PING is acknowledged at once here, and the ACK of the newest
  // packet covers all older ones, so when the newest ack-eliciting packet
  // carried one, its ACK is due one RTT after it left: a lost tail of a
  // window-limited flight (whose last packet asks with a PING) is probed
  // after srtt + 4 rttvar instead of waiting out max_ack_delay as well,
  // which on a LAN is many round trips.
  const Duration pto = rtt_.ProbeTimeout(
      last_ack_eliciting_immediate_ ? Duration::zero() : peer_max_ack_delay_,
      options_.timer_granularity);
  return last_ack_eliciting_sent_ + Backoff(pto, pto_count_);
}

void Connection::OnLossDetectionTimeout(Timestamp now) {
  // RFC 9002 Appendix A.9.
  if (!loss_time_.is_never()) {
    if (now >= loss_time_) {
      DetectLostPackets(now);
      RetireSentPackets(now);
    }
    return;
  }
  if (ack_eliciting_in_flight_ == 0) return;
  ++pto_count_;
  ++stats_.probe_timeouts;
  // §6.2.4: send one or two ack-eliciting probes. They carry data: new data
  // if there is any, else the oldest unacknowledged fragments again.
  probes_pending_ = 2;
  if (retransmit_.empty() && !HasNewData()) {
    for (size_t i = 0; i < sent_.size(); ++i) {
      const SentPacket& p = sent_[i];
      if (p.state != kPacketInFlight || p.chunk_count == 0) continue;
      for (uint16_t k = 0; k < p.chunk_count; ++k) {
        QueueRetransmit(chunk_refs_[p.first_ref - refs_base_ + k]);
      }
      break;
    }
  }
}

void Connection::RetireSentPackets(Timestamp now) {
  // Lost packets stay a while, so a late ACK can reveal a spurious loss.
  const Duration keep_lost =
      std::max(rtt_.smoothed() * 2, options_.timer_granularity);
  while (!sent_.empty()) {
    const SentPacket& p = sent_.front();
    if (p.state == kPacketInFlight) break;
    if (p.state == kPacketLost && now < p.lost_time + keep_lost &&
        sent_.size() < sent_.capacity() * 3 / 4) {
      break;
    }
    for (uint16_t k = 0; k < p.chunk_count; ++k) chunk_refs_.pop_front();
    refs_base_ += p.chunk_count;
    sent_.pop_front();
  }
}

void Connection::RetireChunks() {
  bool freed = false;
  while (!chunks_.empty() && chunks_.front().state == kChunkAcked) {
    chunks_.pop_front();
    ++first_chunk_seq_;
    freed = true;
  }
  if (next_unsent_chunk_ < first_chunk_seq_)
    next_unsent_chunk_ = first_chunk_seq_;
  if (freed && send_blocked_) {
    send_blocked_ = false;
    writable_event_pending_ = true;
  }
  if (state_ == State::kClosing && chunks_.empty() && unreliable_out_.empty()) {
    close_pending_ = true;
  }
}

// --- Output
// ---------------------------------------------------------------------

bool Connection::HasNewData() const {
  return next_unsent_chunk_ < first_chunk_seq_ + chunks_.size();
}

bool Connection::NewDataAllowedByFlowControl() const {
  const Chunk& c = chunks_[next_unsent_chunk_ - first_chunk_seq_];
  const uint64_t start = c.data_offset - c.fragment_offset;
  return start + SpanOf(c.message_length) <= peer_max_data_;
}

bool Connection::AckDue(Timestamp now) const {
  return ack_pending_ && (ack_now_ || now >= ack_deadline_);
}

bool Connection::ControlPending() const {
  return ping_pending_ || max_data_pending_ || data_blocked_pending_ ||
         nack_count_ > 0;
}

size_t Connection::MaxUnreliableBytes() const {
  return options_.max_datagram_bytes - wire::kShortHeaderMaxBytes -
         kControlReserveBytes - 12;
}

size_t Connection::PollTransmit(std::span<std::byte> out, Timestamp now) {
  switch (state_) {
    case State::kClosed:
      return 0;
    case State::kHandshake:
      if (role_ == Role::kClient && now >= next_initial_time_) {
        return WriteInitial(out, now);
      }
      return 0;
    case State::kDraining:
      if (close_reply_pending_) return WriteClosePacket(out, now);
      return 0;
    case State::kEstablished:
    case State::kClosing:
      break;
  }
  if (accept_pending_) return WriteAccept(out);
  // An unconfirmed server has only ACCEPT to send: the client drops short
  // packets until ACCEPT arrives, and repeats its INITIAL if it was lost.
  if (!confirmed_) return 0;
  return WriteShortPacket(out, now);
}

size_t Connection::WriteInitial(std::span<std::byte> out, Timestamp now) {
  wire::LongHeader h;
  h.type = wire::PacketType::kInitial;
  h.version = wire::kVersion;
  h.client_cid = local_cid_;
  h.token = std::span<const std::byte>(token_.data(), token_size_);
  h.params = LocalParams();
  const size_t n = wire::WriteLongHeader(h, out);
  if (n == 0) return 0;
  ++initials_sent_;
  ++initials_since_token_;
  last_initial_time_ = now;
  // Retransmit with exponential backoff, like a PTO with the initial RTT
  // (RFC 9002 §6.2.2).
  // The backoff stops doubling after 8x: a handshake has no congestion
  // state to protect, and a long wait only delays recovery from a burst.
  next_initial_time_ = now + Backoff(std::max(options_.initial_rtt * 2,
                                              options_.timer_granularity),
                                     std::min<uint32_t>(initials_sent_ - 1, 3));
  ++stats_.packets_sent;
  stats_.bytes_sent += n;
  return n;
}

size_t Connection::WriteAccept(std::span<std::byte> out) {
  wire::LongHeader h;
  h.type = wire::PacketType::kAccept;
  h.version = wire::kVersion;
  h.client_cid = remote_cid_;
  h.server_cid = local_cid_;
  h.params = LocalParams();
  const size_t n = wire::WriteLongHeader(h, out);
  if (n == 0) return 0;
  accept_pending_ = false;
  ++stats_.packets_sent;
  stats_.bytes_sent += n;
  return n;
}

size_t Connection::WriteClosePacket(std::span<std::byte> out, Timestamp now) {
  out = out.first(std::min<size_t>(out.size(), options_.max_datagram_bytes));
  wire::Writer w(out);
  const uint64_t pn = next_pn_;
  wire::WriteShortHeader(w, remote_cid_, pn,
                         wire::PacketNumberLength(pn, largest_acked_));
  w.U8(uint8_t(wire::FrameType::kClose));
  w.Varint(close_code_);
  if (!w.ok()) return 0;
  ++next_pn_;
  largest_sent_ = pn;
  close_reply_pending_ = false;
  last_close_sent_ = now;
  ++stats_.packets_sent;
  stats_.bytes_sent += w.size();
  return w.size();
}

size_t Connection::WriteShortPacket(std::span<std::byte> out, Timestamp now) {
  out = out.first(std::min<size_t>(out.size(), options_.max_datagram_bytes));
  if (close_pending_) {
    close_pending_ = false;
    const size_t n = WriteClosePacket(out, now);
    EnterDraining(now);
    return n;
  }
  const bool probe = probes_pending_ > 0;
  const bool can_track = !sent_.full();
  // New data waits for flow control (RFC 9000 §4.1).
  bool new_data = HasNewData();
  if (new_data && !NewDataAllowedByFlowControl()) {
    new_data = false;
    // RFC 9000 §19.12: say once per limit that we are blocked, so a lost
    // MAX_DATA is repaired even if its loss went unnoticed.
    if (data_blocked_sent_at_ != peer_max_data_) {
      data_blocked_sent_at_ = peer_max_data_;
      data_blocked_pending_ = true;
      ++stats_.flow_control_blocked;
    }
  }
  bool data = can_track &&
              (new_data || !retransmit_.empty() || !unreliable_out_.empty());
  // Congestion control and pacing gate data, not ACKs or control frames;
  // probes are sent regardless (RFC 9002 §7.5).
  if (data && !probe) {
    if (!cc_.CanSend(options_.max_datagram_bytes)) {
      data = false;
      ++stats_.congestion_window_blocked;
    } else if (cc_.enabled() && options_.pacing &&
               pacer_.NextSendTime(now, options_.max_datagram_bytes,
                                   cc_.window(), rtt_.smoothed()) > now) {
      data = false;
      ++stats_.pacing_blocked;
    }
  }
  const bool control = can_track && ControlPending();
  const bool ack = AckDue(now);
  if (!ack && !control && !data && !(probe && can_track) && nack_count_ == 0) {
    return 0;
  }

  wire::Writer w(out);
  const uint64_t pn = next_pn_;
  wire::WriteShortHeader(w, remote_cid_, pn,
                         wire::PacketNumberLength(pn, largest_acked_));
  const size_t header_bytes = w.size();
  SentPacket rec;
  rec.pn = pn;
  rec.time_sent = now;
  rec.first_ref = refs_base_ + chunk_refs_.size();
  bool ack_eliciting = false;
  bool immediate_ack = false;  // carries a PING, which is answered at once
  bool full_fragment = false;

  // ACK (RFC 9000 §19.3), truncated so a fragment still fits beside it.
  if (ack_pending_ && !received_.empty()) {
    const Duration delay = now - largest_received_time_;
    const uint64_t delay_raw =
        uint64_t(std::max<int64_t>(
            std::chrono::duration_cast<microseconds>(delay).count(), 0)) >>
        wire::kAckDelayExponent;
    const size_t budget = data ? kAckBudgetWithData : w.remaining();
    const auto ranges = received_.ranges();
    const size_t n = wire::WriteAckFrame(w, ranges, delay_raw, budget);
    if (n > 0) {
      rec.has_ack = true;
      rec.ack_floor = ranges[n - 1].low;
      ack_pending_ = false;
      ack_now_ = false;
      ack_eliciting_since_ack_ = 0;
      ack_deadline_ = Timestamp::Never();
      ++stats_.acks_sent;
    }
  }
  if (nack_count_ > 0) {
    if (wire::WriteNackFrame(w, std::span(nacks_.data(), nack_count_),
                             kNackBudgetBytes) > 0) {
      ++stats_.nacks_sent;
    }
    nack_count_ = 0;  // best effort: the ACK ranges carry the same facts
  }
  if (can_track) {
    if (max_data_pending_ && w.remaining() >= 9) {
      w.U8(uint8_t(wire::FrameType::kMaxData));
      w.Varint(advertised_max_data_);
      max_data_pending_ = false;
      rec.has_max_data = true;
      ack_eliciting = true;
    }
    if (data_blocked_pending_ && w.remaining() >= 9) {
      w.U8(uint8_t(wire::FrameType::kDataBlocked));
      w.Varint(peer_max_data_);
      data_blocked_pending_ = false;
      ack_eliciting = true;
    }
    if (ping_pending_ && w.remaining() >= 1) {
      w.U8(uint8_t(wire::FrameType::kPing));
      ping_pending_ = false;
      ++stats_.pings_sent;
      ack_eliciting = true;
      immediate_ack = true;
    }
  }
  if (data || (probe && can_track)) {
    // Fragments: retransmissions first, then new data in order.
    while (rec.chunk_count < kMaxFragmentsPerPacket && !chunk_refs_.full()) {
      uint64_t seq;
      bool retransmission;
      if (!retransmit_.empty()) {
        seq = retransmit_.front();
        Chunk* c = ChunkAt(seq);
        if (c == nullptr || c->state == kChunkAcked || !c->queued) {
          if (c != nullptr) c->queued = false;
          retransmit_.pop_front();  // acknowledged meanwhile
          continue;
        }
        retransmission = true;
      } else if (HasNewData() && NewDataAllowedByFlowControl()) {
        seq = next_unsent_chunk_;
        retransmission = false;
      } else {
        break;
      }
      Chunk& c = chunks_[seq - first_chunk_seq_];
      const size_t header = wire::MessageFrameHeaderSize(
          c.message_id, c.message_length, c.fragment_offset, c.data_offset,
          c.length);
      if (w.remaining() < header + c.length) break;
      const auto [first, second] = send_bytes_.Read(c.data_offset, c.length);
      wire::WriteMessageFrame(w, c.channel, c.message_id, c.message_length,
                              c.fragment_offset, c.data_offset, first, second);
      if (retransmission) {
        retransmit_.pop_front();
        c.queued = false;
        ++stats_.fragments_retransmitted;
        stats_.fragment_bytes_retransmitted += c.length;
      } else {
        ++next_unsent_chunk_;
        c.state = kChunkSent;
        ++stats_.fragments_sent;
        stats_.fragment_bytes_sent += c.length;
      }
      c.last_packet = pn;
      chunk_refs_.push_back(seq);
      ++rec.chunk_count;
      ack_eliciting = true;
      full_fragment = full_fragment || c.length == fragment_bytes_;
    }
    // Unreliable messages: sent once, never retransmitted.
    while (!unreliable_out_.empty()) {
      const UnreliableSlot& u = unreliable_out_.front();
      if (w.remaining() <
          wire::UnreliableFrameHeaderSize(u.sequence, u.length) + u.length) {
        break;
      }
      const std::byte* bytes =
          unreliable_out_bytes_.data() +
          unreliable_out_head_slot_ * options_.max_datagram_bytes;
      wire::WriteUnreliableFrame(w, u.channel, u.sequence,
                                 std::span(bytes, u.length));
      unreliable_out_.pop_front();
      unreliable_out_head_slot_ =
          (unreliable_out_head_slot_ + 1) % unreliable_out_.capacity();
      ack_eliciting = true;
    }
  }
  // The packet that fills the congestion window asks for an immediate ACK
  // (a PING, which the receiver answers at once; the idea of QUIC's
  // IMMEDIATE_ACK): otherwise a small window waits max_ack_delay for the
  // receiver's every-second-packet rule each round trip.
  if (ack_eliciting && !immediate_ack && cc_.enabled() && w.remaining() >= 1 &&
      !cc_.CanSend(w.size() + options_.max_datagram_bytes)) {
    w.U8(uint8_t(wire::FrameType::kPing));
    immediate_ack = true;
  }
  if (probe && can_track && !ack_eliciting && w.remaining() >= 1) {
    w.U8(uint8_t(wire::FrameType::kPing));
    ++stats_.pings_sent;
    ack_eliciting = true;
    immediate_ack = true;
  }
  if (!w.ok()) return 0;  // cannot happen: every write checked its room
  if (w.size() == header_bytes) return 0;  // nothing fitted after all
  // RFC 9000 §19.1: PADDING fills the packet up to the datagram size, so
  // the packets of a train are all one size (UDP GSO segments).
  if (full_fragment && options_.pad_full_packets) w.Zeros(w.remaining());
  const size_t size = w.size();
  ++next_pn_;
  largest_sent_ = pn;
  ++stats_.packets_sent;
  stats_.bytes_sent += size;
  if (ack_eliciting) {
    rec.size = uint32_t(size);
    rec.in_flight = true;
    // RFC 9002 §7.8: a sender far below its window is application-limited
    // and its ACKs must not grow the window.
    rec.app_limited = cc_.bytes_in_flight() + size < cc_.window() / 2;
    sent_.push_back(rec);
    cc_.OnPacketSent(size);
    if (cc_.enabled() && options_.pacing) {
      pacer_.OnSent(now, size, cc_.window(), rtt_.smoothed());
    }
    ++ack_eliciting_in_flight_;
    last_ack_eliciting_sent_ = now;
    last_ack_eliciting_immediate_ = immediate_ack;
    // RFC 9000 §10.1: the idle timer also restarts on the first
    // ack-eliciting packet sent after a receive.
    if (!ack_eliciting_sent_since_receive_) {
      idle_reference_ = now;
      ack_eliciting_sent_since_receive_ = true;
    }
    if (probe) --probes_pending_;
  } else {
    ++stats_.ack_only_packets_sent;
  }
  return size;
}

// --- Timers
// ----------------------------------------------------------------------

Timestamp Connection::IdleDeadline() const {
  if (idle_timeout_ == Duration::zero()) return Timestamp::Never();
  // RFC 9000 §10.1: at least three times the current PTO.
  return idle_reference_ + std::max(idle_timeout_, ProbeTimeout() * 3);
}

Timestamp Connection::NextDeadline() const {
  switch (state_) {
    case State::kClosed:
      return Timestamp::Never();
    case State::kHandshake:
      if (role_ != Role::kClient) return Timestamp::Never();
      return std::min(next_initial_time_,
                      handshake_started_ + options_.handshake_timeout);
    case State::kDraining:
      return draining_until_;
    case State::kEstablished:
    case State::kClosing:
      break;
  }
  // An unconfirmed server waits for the client (or its idle timeout).
  if (!confirmed_) return IdleDeadline();
  Timestamp t = LossDetectionDeadline();
  if (ack_pending_ && !ack_now_) t = std::min(t, ack_deadline_);
  t = std::min(t, IdleDeadline());
  if (options_.heartbeat_interval > Duration::zero() && !ping_pending_) {
    t = std::min(t, last_ack_eliciting_sent_ + options_.heartbeat_interval);
  }
  if (options_.failure_detection && detector_.started() && !ping_pending_) {
    if (!suspected_) {
      t = std::min(t, detector_.TimeWhenPhiReaches(options_.probe_phi));
    } else {
      t = std::min(t, last_probe_time_ + ProbeTimeout());
    }
    t = std::min(
        t, detector_.TimeWhenPhiReaches(options_.failure_detector.threshold));
  }
  // Data held back only by the pacer.
  if (cc_.enabled() && options_.pacing && !sent_.full() &&
      cc_.CanSend(options_.max_datagram_bytes) &&
      (!retransmit_.empty() || !unreliable_out_.empty() ||
       (HasNewData() && NewDataAllowedByFlowControl()))) {
    t = std::min(t, pacer_.EarliestSendTime(options_.max_datagram_bytes,
                                            cc_.window(), rtt_.smoothed()));
  }
  if (state_ == State::kClosing && !close_pending_) {
    t = std::min(t, close_started_ + options_.close_linger);
  }
  return t;
}

void Connection::OnTimeout(Timestamp now) {
  switch (state_) {
    case State::kClosed:
      return;
    case State::kHandshake:
      if (role_ == Role::kClient &&
          now >= handshake_started_ + options_.handshake_timeout) {
        connect_failed_event_pending_ = true;
        EnterClosed(CloseReason::kHandshakeTimeout);
      }
      return;  // INITIAL retransmissions happen in PollTransmit
    case State::kDraining:
      if (now >= draining_until_) EnterClosed(close_reason_);
      return;
    case State::kEstablished:
    case State::kClosing:
      break;
  }
  if (now >= IdleDeadline()) {
    EnterClosed(CloseReason::kIdleTimeout);  // §10.1: silently
    return;
  }
  if (!confirmed_) return;
  if (ack_pending_ && now >= ack_deadline_) ack_now_ = true;
  if (now >= LossDetectionDeadline()) OnLossDetectionTimeout(now);
  if (options_.failure_detection && detector_.started()) {
    const double phi = detector_.Phi(now);
    last_phi_ = phi;
    if (phi >= options_.failure_detector.threshold) {
      dead_event_pending_ = true;
      EnterClosed(CloseReason::kPeerDead);
      return;
    }
    if (phi >= options_.probe_phi &&
        (!suspected_ || now >= last_probe_time_ + ProbeTimeout())) {
      // Suspicion drives a probe: a PING the peer answers at once.
      if (!suspected_) suspected_event_pending_ = true;
      suspected_ = true;
      last_probe_time_ = now;
      ping_pending_ = true;
      ++stats_.suspicion_probes;
    }
  }
  if (options_.heartbeat_interval > Duration::zero() && !ping_pending_ &&
      now >= last_ack_eliciting_sent_ + options_.heartbeat_interval) {
    ping_pending_ = true;
    ++stats_.keepalive_pings;
  }
  if (state_ == State::kClosing &&
      now >= close_started_ + options_.close_linger) {
    close_pending_ = true;
  }
}

// --- Application
// --------------------------------------------------------------------

SendResult Connection::Send(uint8_t channel, std::span<const std::byte> data,
                            Timestamp now) {
  (void)now;
  if (state_ != State::kEstablished) return SendResult::kNotConnected;
  if (channel >= channel_count_) return SendResult::kBadChannel;
  if (channel_types_[channel] == ChannelType::kUnreliableSequenced) {
    if (data.size() > MaxUnreliableBytes()) return SendResult::kTooLarge;
    if (unreliable_out_.full()) {
      ++stats_.send_would_block;
      return SendResult::kWouldBlock;
    }
    const size_t slot = (unreliable_out_head_slot_ + unreliable_out_.size()) %
                        unreliable_out_.capacity();
    std::copy(data.begin(), data.end(),
              unreliable_out_bytes_.begin() +
                  ptrdiff_t(slot * options_.max_datagram_bytes));
    unreliable_out_.push_back(
        {next_message_id_[channel]++, uint32_t(data.size()), channel});
    ++stats_.messages_sent;
    stats_.message_bytes_sent += data.size();
    return SendResult::kOk;
  }
  if (data.size() > options_.max_message_bytes ||
      data.size() > peer_max_message_bytes_) {
    return SendResult::kTooLarge;
  }
  const uint64_t span = SpanOf(data.size());
  const uint64_t fragments = std::max<uint64_t>(
      1, (data.size() + fragment_bytes_ - 1) / fragment_bytes_);
  const uint64_t free_offset =
      chunks_.empty()
          ? next_offset_
          : chunks_.front().data_offset - chunks_.front().fragment_offset;
  if (next_offset_ + span - free_offset > send_bytes_.capacity() ||
      chunks_.size() + fragments > chunks_.capacity()) {
    send_blocked_ = true;
    ++stats_.send_would_block;
    return SendResult::kWouldBlock;
  }
  send_bytes_.Write(next_offset_, data);
  const uint64_t id = next_message_id_[channel]++;
  for (uint64_t i = 0; i < fragments; ++i) {
    Chunk c;
    c.data_offset = next_offset_ + i * fragment_bytes_;
    c.message_id = id;
    c.message_length = uint32_t(data.size());
    c.fragment_offset = uint32_t(i * fragment_bytes_);
    c.length = uint32_t(
        std::min<uint64_t>(fragment_bytes_, data.size() - i * fragment_bytes_));
    c.channel = channel;
    chunks_.push_back(c);
  }
  next_offset_ += span;
  ++stats_.messages_sent;
  stats_.message_bytes_sent += data.size();
  return SendResult::kOk;
}

void Connection::Close(Timestamp now) {
  switch (state_) {
    case State::kHandshake:
      EnterClosed(CloseReason::kLocal);
      return;
    case State::kEstablished:
      state_ = State::kClosing;
      close_started_ = now;
      close_reason_ = CloseReason::kLocal;
      if (chunks_.empty() && unreliable_out_.empty()) close_pending_ = true;
      return;
    default:
      return;
  }
}

void Connection::EnterDraining(Timestamp now) {
  state_ = State::kDraining;
  // RFC 9000 §10.2: the draining period lasts three times the PTO.
  draining_until_ = now + ProbeTimeout() * 3;
}

void Connection::EnterClosed(CloseReason reason) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (close_reason_ == CloseReason::kNone || reason == CloseReason::kPeerDead ||
      reason == CloseReason::kIdleTimeout) {
    close_reason_ = reason;
  }
  closed_event_pending_ = true;
}

// --- Delivery
// --------------------------------------------------------------------

void Connection::ConsumeSpan(uint64_t start, uint64_t span) {
  consumed_units_.Set(start / kUnitBytes, (start + span) / kUnitBytes);
  AdvanceConsumed();
}

void Connection::AdvanceConsumed() {
  const uint64_t begin = consumed_offset_ / kUnitBytes;
  const uint64_t end =
      consumed_units_.FindClear(begin, begin + consumed_units_.units());
  if (end == begin) return;
  consumed_units_.Clear(begin, end);
  received_units_.Clear(begin, end);
  consumed_offset_ = end * kUnitBytes;
  MaybeQueueMaxData();
}

void Connection::MaybeQueueMaxData() {
  // RFC 9000 §4.2: raise the limit as the application takes data; a
  // quarter of the window at a time keeps MAX_DATA frames rare.
  const uint64_t window = recv_bytes_.capacity();
  const uint64_t limit = consumed_offset_ + window;
  if (limit - advertised_max_data_ >= window / 4) {
    advertised_max_data_ = limit;
    max_data_pending_ = true;
  }
}

void Connection::ReleaseEvent() {
  switch (held_) {
    case Held::kNone:
      return;
    case Held::kReliable: {
      RecvChannel& ch = recv_channels_[held_channel_];
      RecvMessage& m = Entry(ch, held_id_);
      const uint64_t start = m.start;
      const uint64_t span = SpanOf(m.length);
      m.state = kMsgDelivered;
      // Free the table slots of delivered messages at the channel's base.
      while (Entry(ch, ch.base).state == kMsgDelivered) {
        Entry(ch, ch.base) = RecvMessage{};
        ++ch.base;
      }
      held_ = Held::kNone;
      ConsumeSpan(start, span);
      return;
    }
    case Held::kUnreliable:
      unreliable_in_.pop_front();
      unreliable_in_head_slot_ =
          (unreliable_in_head_slot_ + 1) % unreliable_in_.capacity();
      held_ = Held::kNone;
      return;
  }
}

bool Connection::HasEvents() const {
  if (connected_event_pending_ || connect_failed_event_pending_ ||
      writable_event_pending_ || suspected_event_pending_ ||
      dead_event_pending_ || closed_event_pending_ || !unreliable_in_.empty()) {
    return true;
  }
  for (uint8_t i = 0; i < channel_count_; ++i) {
    const RecvChannel& ch = recv_channels_[i];
    if (ch.type == ChannelType::kReliableOrdered &&
        ch.table[ch.base & (ch.table.size() - 1)].state == kMsgComplete) {
      return true;
    }
    if (ch.type == ChannelType::kReliableUnordered && !ch.ready.empty()) {
      return true;
    }
  }
  return false;
}

bool Connection::PollEvent(Event* e) {
  ReleaseEvent();
  *e = Event{};
  if (connected_event_pending_) {
    connected_event_pending_ = false;
    e->type = EventType::kConnected;
    e->incoming = role_ == Role::kServer;
    return true;
  }
  if (writable_event_pending_) {
    writable_event_pending_ = false;
    e->type = EventType::kWritable;
    return true;
  }
  if (suspected_event_pending_) {
    suspected_event_pending_ = false;
    e->type = EventType::kPeerSuspected;
    return true;
  }
  // Messages, round robin over the channels.
  for (uint8_t k = 0; k < channel_count_; ++k) {
    const uint8_t i = uint8_t((poll_channel_ + k) % channel_count_);
    RecvChannel& ch = recv_channels_[i];
    uint64_t id;
    if (ch.type == ChannelType::kReliableOrdered) {
      if (Entry(ch, ch.base).state != kMsgComplete) continue;
      id = ch.base;
    } else if (ch.type == ChannelType::kReliableUnordered) {
      if (ch.ready.empty()) continue;
      id = ch.ready.front();
      ch.ready.pop_front();
    } else {
      continue;
    }
    RecvMessage& m = Entry(ch, id);
    const auto [first, second] = recv_bytes_.Read(m.start, m.length);
    m.state = kMsgDelivered;
    held_ = Held::kReliable;
    held_channel_ = i;
    held_id_ = id;
    poll_channel_ = uint8_t((i + 1) % channel_count_);
    e->type = EventType::kMessage;
    e->channel = i;
    e->message = {first, second};
    ++stats_.messages_delivered;
    stats_.message_bytes_delivered += m.length;
    return true;
  }
  if (!unreliable_in_.empty()) {
    const UnreliableSlot& u = unreliable_in_.front();
    held_ = Held::kUnreliable;
    e->type = EventType::kMessage;
    e->channel = u.channel;
    e->message.first = std::span<const std::byte>(
        unreliable_in_bytes_.data() +
            unreliable_in_head_slot_ * options_.max_datagram_bytes,
        u.length);
    ++stats_.messages_delivered;
    stats_.message_bytes_delivered += u.length;
    return true;
  }
  if (dead_event_pending_) {
    dead_event_pending_ = false;
    e->type = EventType::kPeerDead;
    return true;
  }
  if (connect_failed_event_pending_) {
    connect_failed_event_pending_ = false;
    e->type = EventType::kConnectFailed;
    e->reason = close_reason_;
    return true;
  }
  if (closed_event_pending_) {
    closed_event_pending_ = false;
    closed_event_delivered_ = true;
    e->type = EventType::kClosed;
    e->reason = close_reason_;
    return true;
  }
  return false;
}

// --- Observation
// --------------------------------------------------------------------

ConnectionStats Connection::stats() const {
  ConnectionStats s = stats_;
  s.smoothed_rtt = rtt_.smoothed();
  s.rttvar = rtt_.rttvar();
  s.min_rtt = rtt_.min();
  s.latest_rtt = rtt_.latest();
  s.congestion_window = cc_.window();
  s.slow_start_threshold = cc_.ssthresh();
  s.bytes_in_flight = cc_.bytes_in_flight();
  s.congestion_events = cc_.congestion_events();
  s.persistent_congestion = cc_.persistent_congestion_events();
  s.phi = last_phi_;
  return s;
}

size_t Connection::memory_bytes() const {
  size_t n = sizeof(*this) + sent_.memory_bytes() + chunk_refs_.memory_bytes() +
             send_bytes_.memory_bytes() + chunks_.memory_bytes() +
             retransmit_.memory_bytes() + unreliable_out_.memory_bytes() +
             unreliable_out_bytes_.capacity() + unreliable_in_.memory_bytes() +
             unreliable_in_bytes_.capacity() + recv_bytes_.memory_bytes() +
             received_units_.memory_bytes() + consumed_units_.memory_bytes() +
             detector_.options().window_size * sizeof(double);
  for (const RecvChannel& ch : recv_channels_) {
    n += ch.table.capacity() * sizeof(RecvMessage) + ch.ready.memory_bytes();
  }
  return n;
}

}  // namespace ringlab::rudp::internal
