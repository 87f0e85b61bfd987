// The broker and client drivers together on one real Loop (epoll and
// uring-fixed): every message arrives even when the Loop's buffer pool is
// far smaller than the burst, and a persistent session resumes after the
// client reconnects.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mqtt/broker_driver.h"
#include "mqtt/client_driver.h"
#include "mqtt/stream_decoder.h"

namespace ringlab::mqtt {
namespace {

class Counter : public ClientDriver::Listener {
 public:
  void OnClientEvent(ClientDriver&, const ClientEvent& e) override {
    switch (e.kind) {
      case ClientEvent::Kind::kConnected:
        ++connected;
        session_present = e.session_present;
        break;
      case ClientEvent::Kind::kSubscribed:
        ++subscribed;
        break;
      case ClientEvent::Kind::kMessage:
        ++messages;
        break;
      case ClientEvent::Kind::kPublished:
        ++acked;
        break;
      case ClientEvent::Kind::kClosed:
        ++closed;
        break;
      default:
        break;
    }
  }
  int connected = 0, subscribed = 0, messages = 0, acked = 0, closed = 0;
  bool session_present = false;
};

class Drivers : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    transport::LoopOptions lo;
    lo.backend = GetParam();
    lo.buffer_count = 64;  // far fewer buffers than the bursts below
    lo.provided_buffers = 16;
    lo.max_sockets = 256;
    absl::StatusOr<std::unique_ptr<transport::Loop>> loop =
        transport::Loop::Create(lo);
    if (!loop.ok()) GTEST_SKIP() << GetParam() << ": " << loop.status();
    loop_ = std::move(*loop);
    BrokerDriverOptions bo;
    bo.listen = Endpoint::Loopback(0);
    bo.pool_reserve_buffers = 8;
    absl::StatusOr<std::unique_ptr<BrokerDriver>> b =
        BrokerDriver::Start(loop_.get(), bo);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
  }
  void TearDown() override {
    clients_.clear();
    broker_.reset();
  }
  ClientDriver* Client(Counter* c, std::string id, bool clean = true) {
    ClientDriverOptions o;
    o.server = broker_->local_endpoint();
    o.client.client_id = std::move(id);
    o.client.clean_start = clean;
    o.client.session_expiry_s = clean ? 0 : 300;
    absl::StatusOr<std::unique_ptr<ClientDriver>> d =
        ClientDriver::Create(loop_.get(), o, c);
    EXPECT_TRUE(d.ok());
    clients_.push_back(std::move(*d));
    return clients_.back().get();
  }
  bool RunUntil(const std::function<bool()>& done) {
    const Timestamp deadline = MonotonicNow() + std::chrono::seconds(20);
    while (!done()) {
      if (MonotonicNow() > deadline) return false;
      loop_->RunOnce(std::chrono::milliseconds(5));
    }
    return true;
  }

  std::unique_ptr<transport::Loop> loop_;
  std::unique_ptr<BrokerDriver> broker_;
  std::vector<std::unique_ptr<ClientDriver>> clients_;
};

INSTANTIATE_TEST_SUITE_P(Backends, Drivers,
                         testing::Values("epoll", "uring-fixed"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

TEST_P(Drivers, BurstLargerThanThePoolArrivesWhole) {
  Counter sub_events, pub_events;
  ClientDriver* sub = Client(&sub_events, "sub");
  ASSERT_TRUE(sub->Connect().ok());
  constexpr int kPublishers = 100;
  constexpr int kEach = 5;
  std::vector<ClientDriver*> pubs;
  for (int i = 0; i < kPublishers; ++i) {
    pubs.push_back(Client(&pub_events, absl::StrCat("pub", i)));
    ASSERT_TRUE(pubs.back()->Connect().ok());
  }
  ASSERT_TRUE(RunUntil(
      [&] { return sub_events.connected + pub_events.connected == 101; }));
  ASSERT_TRUE(sub->Subscribe("burst/#", {.max_qos = 1}).ok());
  ASSERT_TRUE(RunUntil([&] { return sub_events.subscribed == 1; }));
  const std::string payload(1500, 'b');  // most of a pool buffer each
  for (ClientDriver* p : pubs) {
    for (int k = 0; k < kEach; ++k) {
      ASSERT_TRUE(p->Publish("burst/x", AsBytes(payload), {.qos = 1}).ok());
    }
  }
  ASSERT_TRUE(RunUntil([&] {
    return sub_events.messages == kPublishers * kEach &&
           pub_events.acked == kPublishers * kEach;
  })) << sub_events.messages
      << " delivered, " << pub_events.acked << " acked";
  EXPECT_EQ(sub_events.closed + pub_events.closed, 0);
  EXPECT_EQ(broker_->counters().pool_exhausted_closes, 0u);
}

TEST_P(Drivers, PersistentSessionAcrossReconnect) {
  Counter sub_events, pub_events;
  ClientDriver* sub = Client(&sub_events, "durable", /*clean=*/false);
  ClientDriver* pub = Client(&pub_events, "pub");
  ASSERT_TRUE(sub->Connect().ok());
  ASSERT_TRUE(pub->Connect().ok());
  ASSERT_TRUE(RunUntil(
      [&] { return sub_events.connected == 1 && pub_events.connected == 1; }));
  ASSERT_TRUE(sub->Subscribe("d", {.max_qos = 1}).ok());
  ASSERT_TRUE(RunUntil([&] { return sub_events.subscribed == 1; }));
  sub->Disconnect();
  ASSERT_TRUE(RunUntil([&] { return !sub->transport_open(); }));
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(pub->Publish("d", AsBytes("queued"), {.qos = 1}).ok());
  }
  ASSERT_TRUE(RunUntil([&] { return pub_events.acked == 20; }));
  ASSERT_TRUE(sub->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return sub_events.messages == 20; }));
  EXPECT_TRUE(sub_events.session_present);
  EXPECT_EQ(sub_events.connected, 2);
}

// A server that stops reading: the client's output waits in its core at the
// soft limit (the Loop never refuses bytes the core handed out), and once
// the server reads again every packet arrives whole and in order.
TEST_P(Drivers, ClientSoftSendLimitKeepsTheStreamWhole) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len), 0);

  Counter events;
  ClientDriverOptions o;
  o.server = Endpoint::Loopback(ntohs(a.sin_port));
  o.client.version = Version::k311;
  o.client.client_id = "flood";
  o.max_send_queue_bytes = 64 << 10;
  absl::StatusOr<std::unique_ptr<ClientDriver>> d =
      ClientDriver::Create(loop_.get(), o, &events);
  ASSERT_TRUE(d.ok());
  ClientDriver& client = **d;
  ASSERT_TRUE(client.Connect().ok());
  for (int i = 0; i < 20; ++i) loop_->RunOnce(std::chrono::milliseconds(5));
  const int server = ::accept(listener, nullptr, nullptr);
  ASSERT_GE(server, 0);
  ::close(listener);
  // (A 16 KiB SO_RCVBUF set here makes the uring-fixed client stall after
  // about 3 MB while epoll completes: reported to the transport, not
  // exercised here.)
  ::fcntl(server, F_SETFL, O_NONBLOCK);
  std::byte buf[65536];
  StreamDecoder decoder;
  std::vector<Packet> unused;
  int publishes = 0;
  uint32_t next_seq = 0;
  bool connack_sent = false;
  auto drain_server = [&](int max_reads) {
    for (int r = 0; r < max_reads; ++r) {
      const ssize_t n = ::recv(server, buf, sizeof(buf), 0);
      if (n <= 0) return;
      std::span<const std::byte> in(buf, size_t(n));
      Frame f;
      StreamDecoder::Result res;
      while ((res = decoder.Next(&in, &f)) == StreamDecoder::Result::kFrame) {
        if (f.type == PacketType::kConnect && !connack_sent) {
          const std::byte ack[] = {std::byte(0x20), std::byte(2), std::byte(0),
                                   std::byte(0)};
          ASSERT_EQ(::send(server, ack, sizeof(ack), 0), 4);
          connack_sent = true;
          continue;
        }
        ASSERT_EQ(f.type, PacketType::kPublish);
        Publish p;
        ASSERT_TRUE(DecodePublish(f, Version::k311, &p).ok());
        uint32_t seq;
        std::memcpy(&seq, p.payload.data(), 4);
        ASSERT_EQ(seq, next_seq);  // whole and in order
        ++next_seq;
        ++publishes;
      }
      ASSERT_EQ(res, StreamDecoder::Result::kNeedMore);
    }
  };
  ASSERT_TRUE(RunUntil([&] {
    drain_server(1);
    return client.connected();
  }));
  // 8 MB while the server does not read.
  constexpr int kMessages = 8000;
  std::vector<std::byte> payload(1000);
  bool waited_in_core = false;
  for (uint32_t i = 0; i < kMessages; ++i) {
    std::memcpy(payload.data(), &i, 4);
    ASSERT_TRUE(client.Publish("flood", payload).ok());
    if (i % 100 == 0) loop_->RunOnce(Duration(0));
    if (client.core().pending_output_bytes() > 0) waited_in_core = true;
    EXPECT_LE(loop_->QueuedSendBytes(client.socket()),
              o.max_send_queue_bytes + loop_->buffers().buffer_size());
  }
  EXPECT_TRUE(waited_in_core);
  ASSERT_TRUE(RunUntil([&] {
    drain_server(8);
    return publishes == kMessages;
  })) << publishes
      << " received; core pending " << client.core().pending_output_bytes()
      << " queued " << loop_->QueuedSendBytes(client.socket()) << " pool free "
      << loop_->buffers().free_count() << " state "
      << int(client.core().state()) << " " << loop_->counters().ToString();
  EXPECT_EQ(events.closed, 0);
  EXPECT_EQ(loop_->counters().send_refused_queue_full, 0u);
  ::close(server);
}

}  // namespace
}  // namespace ringlab::mqtt
