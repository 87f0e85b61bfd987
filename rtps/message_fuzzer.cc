// libFuzzer target: the RTPS message parser (RTPS 2.5 §9.4) and a
// participant that handles whatever parses. Any crash, sanitizer report or
// leak is a bug; malformed input must only be counted.
// fuzz-deps: rtps/message.cc rtps/parameter_list.cc rtps/cdr.cc
// fuzz-deps: rtps/types.cc rtps/discovery_data.cc rtps/qos.cc
// fuzz-deps: rtps/participant.cc rtps/gossip.cc rtps/internal/reassembly.cc
// fuzz-deps: transport/endpoint.cc
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "rtps/message.h"
#include "rtps/participant.h"

using namespace ringlab::rtps;

namespace {
std::unique_ptr<Participant> MakeParticipant() {
  ParticipantConfig c;
  c.guid_prefix.bytes = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  c.metatraffic_unicast = {Locator::UdpV4(0x7f000001, 7410)};
  c.default_unicast = {Locator::UdpV4(0x7f000001, 7411)};
  c.max_remote_participants = 8;
  c.max_remote_endpoints = 32;
  auto p = std::move(*Participant::Create(c, ringlab::Timestamp::Zero()));
  WriterConfig w{"T", "KeyedSeq", EndpointQos::WriterDefaults(), true};
  (void)p->CreateWriter(std::move(w), ringlab::Timestamp::Zero());
  ReaderConfig r;
  r.topic_name = "T";
  r.type_name = "KeyedSeq";
  r.qos.reliability = ReliabilityKind::kReliable;
  r.keyed = true;
  r.key_hash_from_payload = [](std::span<const std::byte> b, KeyHash* k) {
    if (b.size() < 12) return false;
    std::memcpy(k->bytes.data(), b.data() + 8, 4);
    return true;
  };
  (void)p->CreateReader(std::move(r), ringlab::Timestamp::Zero());
  return p;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data),
                                   size);
  // The parser on its own: every submessage kind.
  MessageHeader h;
  if (ParseHeader(bytes, &h) == ParseError::kOk) {
    SubmessageIterator it(bytes);
    Submessage sm;
    while (it.Next(&sm)) {
      DataSubmessage d;
      DataFragSubmessage df;
      HeartbeatSubmessage hb;
      AckNackSubmessage an;
      GapSubmessage g;
      NackFragSubmessage nf;
      HeartbeatFragSubmessage hf;
      InfoTsSubmessage ts;
      InfoSrcSubmessage src;
      InfoDstSubmessage dst;
      InfoReplySubmessage rep;
      (void)ParseData(sm, &d);
      (void)ParseDataFrag(sm, &df);
      (void)ParseHeartbeat(sm, &hb);
      (void)ParseAckNack(sm, &an);
      (void)ParseGap(sm, &g);
      (void)ParseNackFrag(sm, &nf);
      (void)ParseHeartbeatFrag(sm, &hf);
      (void)ParseInfoTs(sm, &ts);
      (void)ParseInfoSrc(sm, &src);
      (void)ParseInfoDst(sm, &dst);
      (void)ParseInfoReply(sm, &rep);
    }
  }
  // And a participant handling it twice (state carried over), then sending.
  static std::unique_ptr<Participant> p = MakeParticipant();
  static int64_t t = 0;
  t += 1'000'000;
  ringlab::Timestamp now = ringlab::Timestamp::FromNanos(t);
  p->OnDatagram(bytes, Locator::UdpV4(0x7f000001, 9), now);
  p->OnTimeout(now);
  static std::array<std::byte, 65536> out;
  for (int i = 0; i < 64 && p->PollTransmit(out, now); ++i) {
  }
  while (p->PollEvent()) {
  }
  if (p->remote_participant_count() >= 8) p = MakeParticipant();
  return 0;
}
