#include "udp/types.h"

namespace ringlab::rudp {

std::string_view ChannelTypeName(ChannelType type) {
  switch (type) {
    case ChannelType::kReliableOrdered:
      return "reliable_ordered";
    case ChannelType::kReliableUnordered:
      return "reliable_unordered";
    case ChannelType::kUnreliableSequenced:
      return "unreliable_sequenced";
  }
  return "?";
}

std::string_view EventTypeName(EventType type) {
  switch (type) {
    case EventType::kConnected:
      return "connected";
    case EventType::kConnectFailed:
      return "connect_failed";
    case EventType::kMessage:
      return "message";
    case EventType::kWritable:
      return "writable";
    case EventType::kPeerSuspected:
      return "peer_suspected";
    case EventType::kPeerDead:
      return "peer_dead";
    case EventType::kClosed:
      return "closed";
  }
  return "?";
}

std::string_view CloseReasonName(CloseReason reason) {
  switch (reason) {
    case CloseReason::kNone:
      return "none";
    case CloseReason::kLocal:
      return "local";
    case CloseReason::kPeer:
      return "peer";
    case CloseReason::kIdleTimeout:
      return "idle_timeout";
    case CloseReason::kPeerDead:
      return "peer_dead";
    case CloseReason::kHandshakeTimeout:
      return "handshake_timeout";
    case CloseReason::kRejected:
      return "rejected";
    case CloseReason::kChannelMismatch:
      return "channel_mismatch";
  }
  return "?";
}

std::string_view SendResultName(SendResult result) {
  switch (result) {
    case SendResult::kOk:
      return "ok";
    case SendResult::kWouldBlock:
      return "would_block";
    case SendResult::kTooLarge:
      return "too_large";
    case SendResult::kBadChannel:
      return "bad_channel";
    case SendResult::kNotConnected:
      return "not_connected";
  }
  return "?";
}

std::string_view DropReasonName(DropReason reason) {
  switch (reason) {
    case DropReason::kParse:
      return "parse";
    case DropReason::kUnknownConnection:
      return "unknown_connection";
    case DropReason::kWrongAddress:
      return "wrong_address";
    case DropReason::kShortInitial:
      return "short_initial";
    case DropReason::kBadVersion:
      return "bad_version";
    case DropReason::kBadToken:
      return "bad_token";
    case DropReason::kExpiredToken:
      return "expired_token";
    case DropReason::kServerBusy:
      return "server_busy";
    case DropReason::kNotAccepting:
      return "not_accepting";
    case DropReason::kStatelessQueueFull:
      return "stateless_queue_full";
    case DropReason::kUnexpectedHandshake:
      return "unexpected_handshake";
    case DropReason::kForgedAck:
      return "forged_ack";
    case DropReason::kChannelType:
      return "channel_type";
    case DropReason::kMessageTooLarge:
      return "message_too_large";
    case DropReason::kFlowControl:
      return "flow_control";
    case DropReason::kMessageWindow:
      return "message_window";
    case DropReason::kInconsistentMessage:
      return "inconsistent_message";
    case DropReason::kMisalignedFragment:
      return "misaligned_fragment";
    case DropReason::kUnreliableStale:
      return "unreliable_stale";
    case DropReason::kUnreliableFull:
      return "unreliable_full";
    case DropReason::kClosed:
      return "closed";
    case DropReason::kCount:
      break;
  }
  return "?";
}

}  // namespace ringlab::rudp
