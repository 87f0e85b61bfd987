// Counting-allocator test: once warmed up, a publish/deliver loop through
// the broker core allocates nothing, at QoS 0, 1 and 2, for 3.1.1 and for
// v5 subscribers with subscription identifiers and topic aliases; and with
// a store that commits in batches (a persistent subscriber, so every
// PUBACK/PUBREC is held until the commit: the group-commit path).
//
// This binary replaces the global operator new; the counter runs only
// between Arm() and Disarm().
#include <cstdlib>
#include <new>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/broker.h"
#include "mqtt/stream_decoder.h"
#include "testing/counting_allocator.h"

namespace ringlab::mqtt {
namespace {

// A store that allocates nothing: it counts changes, durable at Commit().
class CountingStore : public BrokerStore {
 public:
  void Commit() { durable_ = written_; }
  void PutRetained(const Message&, Timestamp) override { ++written_; }
  void DeleteRetained(std::string_view) override { ++written_; }
  void PutSession(std::string_view, uint32_t) override { ++written_; }
  void DeleteSession(std::string_view) override { ++written_; }
  void PutSubscription(std::string_view, std::string_view,
                       const SubscriptionOptions&, uint32_t) override {
    ++written_;
  }
  void DeleteSubscription(std::string_view, std::string_view) override {
    ++written_;
  }
  uint64_t PutQueued(std::string_view, const Message&, uint8_t, bool,
                     std::span<const uint32_t>, Timestamp) override {
    return ++written_;
  }
  void DeleteQueued(uint64_t) override { ++written_; }
  void MarkQueuedSent(uint64_t, uint16_t) override { ++written_; }
  void MarkQueuedReleased(uint64_t) override { ++written_; }
  void PutInboundQos2(std::string_view, uint16_t) override { ++written_; }
  void DeleteInboundQos2(std::string_view, uint16_t) override { ++written_; }
  uint64_t written_sequence() const override { return written_; }
  uint64_t durable_sequence() const override { return durable_; }

 private:
  uint64_t written_ = 0;
  uint64_t durable_ = 0;
};

// Drives one Broker directly (no network): a publisher and a subscriber
// connection, each with a preallocated receive buffer.
class Direct {
 public:
  explicit Direct(Version pub_version, Version sub_version)
      : pv_(pub_version), sv_(sub_version) {
    pub_ = *broker_.OnConnectionOpened(now_);
    sub_ = *broker_.OnConnectionOpened(now_);
    pub_in_.reserve(1 << 16);
    sub_in_.reserve(1 << 16);
  }

  void Send(ConnectionId c, const Packet& p, Version v) {
    std::byte buf[512];
    EncodeResult r = Encode(p, v, buf);
    ASSERT_TRUE(r.ok());
    broker_.OnBytes(c, std::span<const std::byte>(buf, r.size), now_);
  }
  void SendBytes(ConnectionId c, std::span<const std::byte> bytes) {
    broker_.OnBytes(c, bytes, now_);
  }

  // Moves everything the broker wants to send into the per-connection
  // buffers (the way a driver copies into leases today).
  void Drain() {
    while (std::optional<ConnectionId> id = broker_.NextReady()) {
      std::vector<std::byte>& in = *id == pub_ ? pub_in_ : sub_in_;
      while (std::optional<Transmit> t =
                 broker_.PollTransmit(*id, out_, now_)) {
        in.insert(in.end(), out_, out_ + t->header_bytes);
        in.insert(in.end(), t->tail.begin(), t->tail.end());
      }
    }
    ASSERT_FALSE(broker_.PollEvent().has_value());
  }

  // Calls fn(frame) for each packet the client received, then clears.
  template <typename Fn>
  void Receive(ConnectionId c, Fn&& fn) {
    std::vector<std::byte>& in = c == pub_ ? pub_in_ : sub_in_;
    std::span<const std::byte> bytes(in);
    StreamDecoder& d = c == pub_ ? pub_decoder_ : sub_decoder_;
    Frame frame;
    while (d.Next(&bytes, &frame) == StreamDecoder::Result::kFrame) fn(frame);
    in.clear();
  }

  Broker broker_;
  Version pv_, sv_;
  ConnectionId pub_, sub_;
  Timestamp now_ = Timestamp::FromNanos(1'000'000);
  std::byte out_[2048];
  std::vector<std::byte> pub_in_, sub_in_;
  StreamDecoder pub_decoder_, sub_decoder_;
};

struct Case {
  uint8_t qos;
  Version pub_version;
  Version sub_version;
  bool store = false;  // a persistent subscriber on a batch-commit store
};

class SteadyState : public testing::TestWithParam<Case> {};

TEST_P(SteadyState, PublishDeliverLoopAllocatesNothing) {
  const Case param = GetParam();
  Direct d(param.pub_version, param.sub_version);
  CountingStore store;
  if (param.store) d.broker_.set_store(&store);
  // A batch commit: the acks held since the last one go out.
  auto commit = [&] {
    if (!param.store) return;
    store.Commit();
    d.broker_.OnStoreDurable(d.now_);
    d.Drain();
  };
  Connect pc;
  pc.version = param.pub_version;
  pc.client_id = "pub";
  pc.keep_alive_s = 60;
  d.Send(d.pub_, pc, pc.version);
  Connect sc;
  sc.version = param.sub_version;
  sc.client_id = "sub";
  sc.keep_alive_s = 60;
  if (sc.version == Version::k5) sc.properties.topic_alias_maximum = 4;
  if (param.store) {  // persistent: its QoS 1/2 deliveries are stored
    sc.clean_start = false;
    if (sc.version == Version::k5) sc.properties.session_expiry_interval = 600;
  }
  d.Send(d.sub_, sc, sc.version);
  SubscribeEntry entry{"bench/+", {.max_qos = 2}};
  Subscribe s;
  s.packet_id = 1;
  s.entries = SubscribeEntries(std::span<const SubscribeEntry>(&entry, 1));
  const uint32_t sub_id[1] = {42};
  if (sc.version == Version::k5)
    s.properties.subscription_ids = SubscriptionIds(sub_id);
  d.Send(d.sub_, s, sc.version);
  d.Drain();
  d.Receive(d.pub_, [](const Frame&) {});
  d.Receive(d.sub_, [](const Frame&) {});

  // The publisher's PUBLISH, encoded once; its packet id is patched in
  // place for each round.
  const std::byte payload[64] = {};
  Publish p;
  p.topic = "bench/topic";
  p.payload = payload;
  p.qos = param.qos;
  p.packet_id = p.qos > 0 ? 1 : 0;
  StringPair user[] = {{"k", "v"}};
  if (pc.version == Version::k5)
    p.properties.user_properties = UserProperties(user);
  std::vector<std::byte> wire(EncodedSize(Packet(p), pc.version));
  ASSERT_TRUE(Encode(p, pc.version, wire).ok());
  const size_t id_offset = 2 + 2 + p.topic.size();  // header, length, topic

  uint16_t pub_id = 1;
  size_t delivered = 0;
  auto round = [&]() {
    if (p.qos > 0) {
      pub_id = uint16_t(pub_id == 0xFFFF ? 1 : pub_id + 1);
      wire[id_offset] = std::byte(pub_id >> 8);
      wire[id_offset + 1] = std::byte(pub_id & 0xFF);
    }
    d.SendBytes(d.pub_, wire);
    d.Drain();
    commit();
    // The subscriber acknowledges what it got.
    d.Receive(d.sub_, [&](const Frame& f) {
      if (f.type == PacketType::kPublish) {
        ++delivered;
        Publish got;
        if (!DecodePublish(f, d.sv_, &got).ok()) std::abort();
        if (got.qos == 0) return;
        PubResponse r;
        r.type = got.qos == 1 ? PacketType::kPuback : PacketType::kPubrec;
        r.packet_id = got.packet_id;
        d.Send(d.sub_, r, d.sv_);
      } else if (f.type == PacketType::kPubrel) {
        PubResponse r;
        if (!DecodePubResponse(f, d.sv_, &r).ok()) std::abort();
        r.type = PacketType::kPubcomp;
        d.Send(d.sub_, r, d.sv_);
      }
    });
    d.Drain();
    // The PUBREL to the subscriber waits for the commit that records it.
    commit();
    // The publisher completes its QoS 2 exchanges.
    d.Receive(d.pub_, [&](const Frame& f) {
      if (f.type == PacketType::kPubrec) {
        PubResponse r;
        if (!DecodePubResponse(f, d.pv_, &r).ok()) std::abort();
        r.type = PacketType::kPubrel;
        r.reason = ReasonCode::kSuccess;
        r.properties = Properties();
        d.Send(d.pub_, r, d.pv_);
      }
    });
    d.Drain();
    d.Receive(d.sub_, [&](const Frame& f) {
      if (f.type == PacketType::kPubrel) {
        PubResponse r;
        if (!DecodePubResponse(f, d.sv_, &r).ok()) std::abort();
        r.type = PacketType::kPubcomp;
        d.Send(d.sub_, r, d.sv_);
      }
    });
    d.Drain();
    d.Receive(d.pub_, [](const Frame&) {});
    d.now_ += std::chrono::microseconds(10);
  };

  for (int i = 0; i < 2000; ++i) round();  // warm-up: pools and rings grow
  const size_t warm = delivered;
  counting_allocator::Start();
  for (int i = 0; i < 20000; ++i) round();
  const size_t allocations = counting_allocator::Stop();
  EXPECT_EQ(allocations, 0u);
  EXPECT_EQ(delivered - warm, 20000u);  // every round delivered one message
  if (param.store && param.qos > 0) {
    // The acks did take the group-commit path.
    EXPECT_GE(d.broker_.counters().acks_held, 20000u);
  }
  auto info = d.broker_.GetSessionInfo("sub");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->inflight, 0u);
  EXPECT_EQ(info->queued, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Qos, SteadyState,
    testing::Values(Case{0, Version::k311, Version::k311},
                    Case{1, Version::k311, Version::k311},
                    Case{2, Version::k311, Version::k311},
                    Case{0, Version::k5, Version::k5},
                    Case{1, Version::k5, Version::k5},
                    Case{2, Version::k5, Version::k5},
                    Case{1, Version::k5, Version::k311},
                    Case{1, Version::k311, Version::k311, true},
                    Case{2, Version::k5, Version::k5, true}),
    [](const auto& info) {
      return "qos" + std::to_string(info.param.qos) + "_" +
             (info.param.pub_version == Version::k5 ? "v5" : "v311") + "_to_" +
             (info.param.sub_version == Version::k5 ? "v5" : "v311") +
             (info.param.store ? "_batch_store" : "");
    });

}  // namespace
}  // namespace ringlab::mqtt
