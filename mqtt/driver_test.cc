// The broker and client drivers together on one real Loop (epoll and
// uring-fixed): every message arrives even when the Loop's buffer pool is
// far smaller than the burst, and a persistent session resumes after the
// client reconnects.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mqtt/broker_driver.h"
#include "mqtt/client_driver.h"

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

}  // namespace
}  // namespace ringlab::mqtt
