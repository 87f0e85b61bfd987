// MQTT over TLS on one real Loop: the broker driver with its TLS listener
// and client drivers with TLS, on epoll, uring and uring-fixed, with and
// without kernel TLS. QoS 0/1/2 through TLS both ways, a plaintext client on
// the TLS port refused and counted while TLS clients go on, and (where the
// kernel has the tls module) the record layer really handed to the kernel.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mqtt/broker_driver.h"
#include "mqtt/client_driver.h"
#include "mqtt/internal/tls_test_certs.h"
#include "mqtt/tls_listener.h"
#include "testing/skip.h"

namespace ringlab::mqtt {
namespace {

class Events : public ClientDriver::Listener {
 public:
  void OnClientEvent(ClientDriver&, const ClientEvent& e) override {
    switch (e.kind) {
      case ClientEvent::Kind::kConnected:
        ++connected;
        break;
      case ClientEvent::Kind::kSubscribed:
        ++subscribed;
        break;
      case ClientEvent::Kind::kMessage:
        payloads.emplace_back(
            reinterpret_cast<const char*>(e.message.payload.data()),
            e.message.payload.size());
        break;
      case ClientEvent::Kind::kPublished:
        ++acked;
        break;
      case ClientEvent::Kind::kClosed:
      case ClientEvent::Kind::kConnectFailed:
        ++closed;
        break;
      default:
        break;
    }
  }
  int connected = 0, subscribed = 0, acked = 0, closed = 0;
  std::vector<std::string> payloads;
};

struct Param {
  std::string backend;
  bool ktls;
};

class TlsDrivers : public testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    absl::StatusOr<internal::TestCerts> c = internal::MakeTestCerts();
    RINGLAB_SKIP_IF_MISSING(c.status());
    ASSERT_TRUE(c.ok()) << c.status();
    certs_ = std::make_unique<internal::TestCerts>(std::move(*c));
    transport::LoopOptions lo;
    lo.backend = GetParam().backend;
    lo.buffer_count = 256;
    lo.provided_buffers = 64;
    lo.max_sockets = 256;
    absl::StatusOr<std::unique_ptr<transport::Loop>> loop =
        transport::Loop::Create(lo);
    if (!loop.ok()) GTEST_SKIP() << GetParam().backend << ": " << loop.status();
    loop_ = std::move(*loop);
    BrokerDriverOptions bo;
    bo.listen = Endpoint::Loopback(0);
    absl::StatusOr<std::unique_ptr<BrokerDriver>> b =
        BrokerDriver::Start(loop_.get(), bo);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
    TlsConfig sc;
    sc.role = TlsRole::kServer;
    sc.cert_file = certs_->server_cert;
    sc.key_file = certs_->server_key;
    sc.ktls = GetParam().ktls;
    absl::StatusOr<std::shared_ptr<TlsContext>> sctx = TlsContext::Create(sc);
    ASSERT_TRUE(sctx.ok()) << sctx.status();
    server_ctx_ = *sctx;
    TlsListenerOptions to;
    to.listen = Endpoint::Loopback(0);
    to.context = *sctx;
    to.ktls = GetParam().ktls;
    absl::StatusOr<std::unique_ptr<TlsListener>> t =
        TlsListener::Start(loop_.get(), broker_.get(), to);
    ASSERT_TRUE(t.ok()) << t.status();
    tls_ = std::move(*t);
    TlsConfig cc;
    cc.role = TlsRole::kClient;
    cc.ca_file = certs_->ca;
    cc.server_name = "127.0.0.1";
    cc.ktls = GetParam().ktls;
    absl::StatusOr<std::shared_ptr<TlsContext>> cctx = TlsContext::Create(cc);
    ASSERT_TRUE(cctx.ok()) << cctx.status();
    client_ctx_ = *cctx;
  }
  void TearDown() override {
    clients_.clear();
    tls_.reset();
    broker_.reset();
  }
  ClientDriver* Client(Events* e, std::string id, Version v = Version::k5) {
    ClientDriverOptions o;
    o.server = tls_->local_endpoint();
    o.client.client_id = std::move(id);
    o.client.version = v;
    o.tls = client_ctx_;
    o.ktls = GetParam().ktls;
    absl::StatusOr<std::unique_ptr<ClientDriver>> d =
        ClientDriver::Create(loop_.get(), o, e);
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

  std::unique_ptr<internal::TestCerts> certs_;
  std::unique_ptr<transport::Loop> loop_;
  std::unique_ptr<BrokerDriver> broker_;
  std::unique_ptr<TlsListener> tls_;
  std::shared_ptr<TlsContext> server_ctx_;
  std::shared_ptr<TlsContext> client_ctx_;
  std::vector<std::unique_ptr<ClientDriver>> clients_;
};

INSTANTIATE_TEST_SUITE_P(
    Backends, TlsDrivers,
    testing::Values(Param{"epoll", false}, Param{"epoll", true},
                    Param{"uring", false}, Param{"uring", true},
                    Param{"uring-fixed", false}, Param{"uring-fixed", true}),
    [](const auto& info) {
      std::string s = info.param.backend + (info.param.ktls ? "_ktls" : "");
      for (char& c : s) c = c == '-' ? '_' : c;
      return s;
    });

TEST_P(TlsDrivers, EveryQosThroughTls) {
  Events sub_e, pub_e;
  ClientDriver* sub = Client(&sub_e, "sub");
  ClientDriver* pub = Client(&pub_e, "pub", Version::k311);
  ASSERT_TRUE(sub->Connect().ok());
  ASSERT_TRUE(pub->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return sub_e.connected + pub_e.connected == 2; }))
      << tls_->counters().failures() << " TLS failures";
  ASSERT_TRUE(sub->Subscribe("t/#", {.max_qos = 2}).ok());
  ASSERT_TRUE(RunUntil([&] { return sub_e.subscribed == 1; }));
  const std::string big(20'000, 'z');  // several TLS records and leases
  for (int i = 0; i < 30; ++i) {
    const std::string body = absl::StrCat("m", i, i % 10 == 9 ? big : "");
    ASSERT_TRUE(
        pub->Publish("t/x", AsBytes(body), {.qos = uint8_t(i % 3)}).ok());
  }
  ASSERT_TRUE(RunUntil([&] {
    return sub_e.payloads.size() == 30 && pub_e.acked == 20;
  })) << sub_e.payloads.size()
      << " delivered, " << pub_e.acked << " acked";
  for (int i = 0; i < 30; ++i) {  // in order, whole
    EXPECT_EQ(sub_e.payloads[i], absl::StrCat("m", i, i % 10 == 9 ? big : ""))
        << i;
  }
  EXPECT_EQ(sub_e.closed + pub_e.closed, 0);
  const TlsCounters& t = tls_->counters();
  EXPECT_EQ(t.handshakes_completed, 2u);
  EXPECT_EQ(t.failures(), 0u);
  EXPECT_GT(t.ciphertext_bytes_in, t.plaintext_bytes_in);
  if (GetParam().ktls) {
    if (!ProbeKernelTls().ok()) {
      // Nothing was handed over, and each connection says why.
      EXPECT_EQ(t.ktls_tx + t.ktls_rx, 0u);
      EXPECT_EQ(t.ktls_unavailable, 2u);
    } else {
      EXPECT_EQ(t.ktls_tx, 2u);
      EXPECT_EQ(t.ktls_rx + t.ktls_rx_multishot, 2u);
    }
  } else {
    EXPECT_EQ(t.ktls_tx + t.ktls_rx + t.ktls_unavailable, 0u);
  }
}

TEST_P(TlsDrivers, KernelTakesTheRecordLayer) {
  if (!GetParam().ktls) GTEST_SKIP() << "kTLS off in this instance";
  if (absl::Status k = ProbeKernelTls(); !k.ok()) GTEST_SKIP() << k.message();
  Events e;
  ClientDriver* c = Client(&e, "k");
  ASSERT_TRUE(c->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return e.connected == 1; }));
  ASSERT_TRUE(c->Subscribe("k", {.max_qos = 1}).ok());
  ASSERT_TRUE(RunUntil([&] { return e.subscribed == 1; }));
  ASSERT_TRUE(
      c->Publish("k", AsBytes(std::string("via the kernel")), {.qos = 1}).ok());
  ASSERT_TRUE(RunUntil([&] { return e.payloads.size() == 1 && e.acked == 1; }));
  ASSERT_NE(c->tls_stream(), nullptr);
  EXPECT_TRUE(c->tls_stream()->ktls_tx());
  EXPECT_EQ(tls_->counters().ktls_tx, 1u);
}

TEST_P(TlsDrivers, PlaintextOnTheTlsPortIsRefusedAndCounted) {
  // A plain MQTT client (no TLS) on the TLS port.
  Events plain_e;
  ClientDriverOptions o;
  o.server = tls_->local_endpoint();
  o.client.client_id = "plain";
  absl::StatusOr<std::unique_ptr<ClientDriver>> plain =
      ClientDriver::Create(loop_.get(), o, &plain_e);
  ASSERT_TRUE(plain.ok());
  ASSERT_TRUE((*plain)->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return plain_e.closed == 1; }));
  EXPECT_EQ(plain_e.connected, 0);
  EXPECT_EQ(tls_->counters().failed_not_tls, 1u);
  // A TLS client is still served.
  Events e;
  ClientDriver* c = Client(&e, "after");
  ASSERT_TRUE(c->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return e.connected == 1; }));
  EXPECT_EQ(broker_->broker().connection_count(), 1u);
}

// Issue 12 "Limits": connections per second per listener. The plain
// listener over its rate refuses its next client; the TLS listener, with a
// bucket of its own, still accepts.
TEST_P(TlsDrivers, ConnectionRateIsPerListener) {
  tls_.reset();
  broker_.reset();
  BrokerDriverOptions bo;
  bo.listen = Endpoint::Loopback(0);
  bo.broker.rate.connections_per_s = 0.01;  // one token, refilled in 100 s
  bo.broker.rate.connection_burst = 1;
  absl::StatusOr<std::unique_ptr<BrokerDriver>> b =
      BrokerDriver::Start(loop_.get(), bo);
  ASSERT_TRUE(b.ok()) << b.status();
  broker_ = std::move(*b);
  TlsListenerOptions to;
  to.listen = Endpoint::Loopback(0);
  to.context = server_ctx_;
  to.ktls = GetParam().ktls;
  absl::StatusOr<std::unique_ptr<TlsListener>> t =
      TlsListener::Start(loop_.get(), broker_.get(), to);
  ASSERT_TRUE(t.ok()) << t.status();
  tls_ = std::move(*t);
  auto plain = [&](Events* e, std::string id) {
    ClientDriverOptions o;
    o.server = broker_->local_endpoint();
    o.client.client_id = std::move(id);
    absl::StatusOr<std::unique_ptr<ClientDriver>> d =
        ClientDriver::Create(loop_.get(), o, e);
    EXPECT_TRUE(d.ok());
    clients_.push_back(std::move(*d));
    return clients_.back().get();
  };
  Events first_e, second_e, tls_e;
  ASSERT_TRUE(plain(&first_e, "first")->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return first_e.connected == 1; }));
  ASSERT_TRUE(plain(&second_e, "second")->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return second_e.closed == 1; }));
  EXPECT_EQ(second_e.connected, 0);
  EXPECT_EQ(broker_->broker().counters().connections_refused_rate, 1u);
  ClientDriver* c = Client(&tls_e, "tls");
  ASSERT_TRUE(c->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return tls_e.connected == 1; }));
  EXPECT_EQ(broker_->broker().counters().connections_refused_rate, 1u);
  EXPECT_EQ(broker_->broker().connection_count(), 2u);
}

TEST_P(TlsDrivers, ClientRefusesABrokerItCannotVerify) {
  TlsConfig cc;
  cc.role = TlsRole::kClient;
  cc.ca_file = certs_->other_ca;
  absl::StatusOr<std::shared_ptr<TlsContext>> wrong = TlsContext::Create(cc);
  ASSERT_TRUE(wrong.ok());
  Events e;
  ClientDriverOptions o;
  o.server = tls_->local_endpoint();
  o.client.client_id = "wrong-ca";
  o.tls = *wrong;
  absl::StatusOr<std::unique_ptr<ClientDriver>> d =
      ClientDriver::Create(loop_.get(), o, &e);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE((*d)->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return e.closed == 1; }));
  EXPECT_EQ(e.connected, 0);
  EXPECT_EQ((*d)->tls_counters().failed_verify, 1u);
  ASSERT_TRUE(
      RunUntil([&] { return tls_->counters().failed_peer_alert == 1; }));
}

}  // namespace
}  // namespace ringlab::mqtt
