// Durable state: the SQLite store on its own (what it writes, it loads, per
// fsync policy), a broker driver restarted on the same data directory
// (sessions, subscriptions and retained messages survive), and stores that
// are not databases or are truncated (an error, never an empty store).
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mqtt/broker.h"
#include "mqtt/broker_driver.h"
#include "mqtt/client_driver.h"
#include "mqtt/store_sqlite.h"
#include "mqtt/wire.h"

namespace ringlab::mqtt {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ringlab_store_test.XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::unique_ptr<SqliteStore> OpenStore(
    const std::string& dir, FsyncPolicy fsync = FsyncPolicy::kAlways) {
  SqliteStoreOptions o;
  o.data_dir = dir;
  o.fsync = fsync;
  absl::StatusOr<std::unique_ptr<SqliteStore>> s = SqliteStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(SqliteStore, WhatItWritesItLoads) {
  TempDir dir;
  MessagePool pool;
  {
    std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
    ASSERT_NE(store, nullptr);
    store->PutSession("alice", 3600);
    store->PutSubscription("alice", "a/+", {.max_qos = 1, .no_local = true}, 7);
    store->PutSubscription("alice", "$share/g/b/#", {.max_qos = 2}, 0);
    store->PutSubscription("alice", "gone", {.max_qos = 0}, 0);
    store->DeleteSubscription("alice", "gone");
    store->PutSession("bob", 60);
    store->PutSubscription("bob", "x", {.max_qos = 0}, 0);
    store->DeleteSession("bob");  // its subscription goes with it
    const std::byte props[] = {std::byte(0x01), std::byte(0x01)};
    MessageRef kept = pool.Create("r/1", 1, true, props, AsBytes("one"),
                                  Timestamp::Never(), kNoPublisher);
    MessageRef cleared = pool.Create("r/2", 0, true, {}, AsBytes("two"),
                                     Timestamp::Never(), kNoPublisher);
    store->PutRetained(*kept, Timestamp{});
    store->PutRetained(*cleared, Timestamp{});
    store->DeleteRetained("r/2");
    // Already expired when written (expiry 1 ms after `now`).
    MessageRef expiring =
        pool.Create("r/3", 0, true, {}, AsBytes("three"),
                    Timestamp{} + std::chrono::milliseconds(1), kNoPublisher);
    store->PutRetained(*expiring, Timestamp{});
    EXPECT_TRUE(store->status().ok()) << store->status();
    EXPECT_EQ(store->counters().write_errors, 0u);
  }
  ::usleep(5000);  // r/3's millisecond passes
  std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
  ASSERT_NE(store, nullptr);
  Broker broker;
  const Timestamp now = Timestamp{} + std::chrono::seconds(100);
  absl::StatusOr<StoreLoadReport> r = store->Load(&broker, now);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sessions, 1u) << r->ToString();
  EXPECT_EQ(r->subscriptions, 2u) << r->ToString();
  EXPECT_EQ(r->retained, 1u) << r->ToString();
  EXPECT_EQ(r->retained_expired, 1u) << r->ToString();
  EXPECT_EQ(broker.session_count(), 1u);
  EXPECT_EQ(broker.retained_count(), 1u);
  std::optional<Broker::SessionInfo> alice = broker.GetSessionInfo("alice");
  ASSERT_TRUE(alice.has_value());
  EXPECT_FALSE(alice->connected);
  EXPECT_EQ(alice->subscriptions, 2u);
  EXPECT_FALSE(broker.GetSessionInfo("bob").has_value());
  // The restored session expires an hour after the load, not before.
  broker.OnTimeout(now + std::chrono::seconds(3599));
  EXPECT_EQ(broker.session_count(), 1u);
  broker.OnTimeout(now + std::chrono::seconds(3601));
  EXPECT_EQ(broker.session_count(), 0u);
}

TEST(SqliteStore, BatchCommitsAtTheWindow) {
  TempDir dir;
  std::unique_ptr<SqliteStore> store =
      OpenStore(dir.path(), FsyncPolicy::kBatch);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->NextFlushDeadline(), Timestamp::Never());
  store->PutSession("a", 10);
  store->PutSession("b", 10);
  EXPECT_NE(store->NextFlushDeadline(), Timestamp::Never());
  EXPECT_EQ(store->counters().commits, 0u);
  // Not committed yet: a second reader sees nothing.
  {
    std::unique_ptr<SqliteStore> reader = OpenStore(dir.path());
    ASSERT_NE(reader, nullptr);
    Broker broker;
    absl::StatusOr<StoreLoadReport> r = reader->Load(&broker, Timestamp{});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->sessions, 0u);
  }
  store->Flush();
  EXPECT_EQ(store->counters().commits, 1u);
  EXPECT_EQ(store->counters().writes, 2u);
  EXPECT_EQ(store->NextFlushDeadline(), Timestamp::Never());
  std::unique_ptr<SqliteStore> reader = OpenStore(dir.path());
  ASSERT_NE(reader, nullptr);
  Broker broker;
  absl::StatusOr<StoreLoadReport> r = reader->Load(&broker, Timestamp{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sessions, 2u);
}

// The group-commit sequences the broker holds its acks on: batch confirms
// a change only at the commit, always and never when the call returns.
TEST(SqliteStore, DurableSequenceFollowsTheCommit) {
  TempDir dir;
  {
    std::unique_ptr<SqliteStore> batch =
        OpenStore(dir.path(), FsyncPolicy::kBatch);
    ASSERT_NE(batch, nullptr);
    EXPECT_EQ(batch->written_sequence(), batch->durable_sequence());
    const uint64_t start = batch->written_sequence();
    batch->PutSession("a", 10);
    batch->PutSubscription("a", "t", {.max_qos = 1}, 0);
    EXPECT_EQ(batch->written_sequence(), start + 2);
    EXPECT_EQ(batch->durable_sequence(), start);
    batch->Flush();
    EXPECT_EQ(batch->durable_sequence(), start + 2);
  }
  for (FsyncPolicy policy : {FsyncPolicy::kAlways, FsyncPolicy::kNever}) {
    std::unique_ptr<SqliteStore> store = OpenStore(dir.path(), policy);
    ASSERT_NE(store, nullptr);
    store->PutSession("b", 10);
    EXPECT_GT(store->written_sequence(), 0u);
    EXPECT_EQ(store->durable_sequence(), store->written_sequence());
  }
}

TEST(SqliteStore, NotADatabaseIsAnError) {
  TempDir dir;
  {
    std::ofstream f(dir.path() + "/broker.db", std::ios::binary);
    f << std::string(8192, 'x');
  }
  SqliteStoreOptions o;
  o.data_dir = dir.path();
  absl::StatusOr<std::unique_ptr<SqliteStore>> s = SqliteStore::Open(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("broker.db"), std::string_view::npos)
      << s.status();
}

TEST(SqliteStore, TruncatedStoreIsAnErrorNotEmpty) {
  TempDir dir;
  MessagePool pool;
  {
    std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
    ASSERT_NE(store, nullptr);
    // Enough rows for several pages, so half the file cuts the tables.
    const std::string payload(600, 'p');
    for (int i = 0; i < 200; ++i) {
      MessageRef m =
          pool.Create(absl::StrCat("t/", i), 1, true, {}, AsBytes(payload),
                      Timestamp::Never(), kNoPublisher);
      store->PutRetained(*m, Timestamp{});
      store->PutSession(absl::StrCat("c", i), 100);
    }
  }  // closing checkpoints the WAL into broker.db
  const std::string db = dir.path() + "/broker.db";
  struct stat st;
  ASSERT_EQ(::stat(db.c_str(), &st), 0);
  ASSERT_GT(st.st_size, 16 * 4096);
  ASSERT_EQ(::truncate(db.c_str(), st.st_size / 2), 0);
  SqliteStoreOptions o;
  o.data_dir = dir.path();
  absl::StatusOr<std::unique_ptr<SqliteStore>> s = SqliteStore::Open(o);
  if (s.ok()) {
    // If the open got through, reading must not: never an empty store.
    Broker broker;
    absl::StatusOr<StoreLoadReport> r = (*s)->Load(&broker, Timestamp{});
    ASSERT_FALSE(r.ok()) << r->ToString();
  } else {
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  }
}

TEST(SqliteStore, UnknownFsyncPolicyIsRefused) {
  EXPECT_FALSE(ParseFsyncPolicy("sometimes").ok());
  EXPECT_EQ(*ParseFsyncPolicy("always"), FsyncPolicy::kAlways);
  EXPECT_EQ(*ParseFsyncPolicy("batch"), FsyncPolicy::kBatch);
  EXPECT_EQ(*ParseFsyncPolicy("never"), FsyncPolicy::kNever);
}

// A broker driver restarted on the same directory, on a real Loop.
class Events : public ClientDriver::Listener {
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
        messages.push_back(
            std::string(e.message.topic) + "=" +
            std::string(reinterpret_cast<const char*>(e.message.payload.data()),
                        e.message.payload.size()) +
            (e.message.retain ? " (retained)" : ""));
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
  int connected = 0, subscribed = 0, acked = 0, closed = 0;
  bool session_present = false;
  std::vector<std::string> messages;
};

class Restart : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    transport::LoopOptions lo;
    lo.backend = GetParam();
    lo.max_sockets = 64;
    absl::StatusOr<std::unique_ptr<transport::Loop>> loop =
        transport::Loop::Create(lo);
    if (!loop.ok()) GTEST_SKIP() << GetParam() << ": " << loop.status();
    loop_ = std::move(*loop);
  }
  // Clients (and the Events they report to) live until the test ends: the
  // Loop reports a socket's close to its handler after Close().
  void TearDown() override {
    StopBroker();
    clients_.clear();
  }

  // Starts a broker on the data directory and loads it.
  StoreLoadReport StartBroker() {
    BrokerDriverOptions bo;
    bo.listen = Endpoint::Loopback(0);
    absl::StatusOr<std::unique_ptr<BrokerDriver>> b =
        BrokerDriver::Start(loop_.get(), bo);
    EXPECT_TRUE(b.ok()) << b.status();
    broker_ = std::move(*b);
    store_ = OpenStore(dir_.path());
    absl::StatusOr<StoreLoadReport> r =
        store_->Load(&broker_->broker(), MonotonicNow());
    EXPECT_TRUE(r.ok()) << r.status();
    broker_->broker().set_store(store_.get());
    return r.ok() ? *r : StoreLoadReport{};
  }
  void StopBroker() {
    if (broker_) {
      broker_->Shutdown();
      for (int i = 0; i < 20; ++i) {
        loop_->RunOnce(std::chrono::milliseconds(1));
      }
    }
    broker_.reset();
    if (store_) {
      EXPECT_TRUE(store_->status().ok()) << store_->status();
    }
    store_.reset();
  }
  ClientDriver* Client(Events* e, std::string id, bool persistent) {
    ClientDriverOptions o;
    o.server = broker_->local_endpoint();
    o.client.client_id = std::move(id);
    o.client.clean_start = !persistent;
    o.client.session_expiry_s = persistent ? 3600 : 0;
    absl::StatusOr<std::unique_ptr<ClientDriver>> d =
        ClientDriver::Create(loop_.get(), o, e);
    EXPECT_TRUE(d.ok());
    clients_.push_back(std::move(*d));
    EXPECT_TRUE(clients_.back()->Connect().ok());
    return clients_.back().get();
  }
  Events& NewEvents() {
    events_.push_back(std::make_unique<Events>());
    return *events_.back();
  }
  bool RunUntil(const std::function<bool()>& done) {
    const Timestamp deadline = MonotonicNow() + std::chrono::seconds(20);
    while (!done()) {
      if (MonotonicNow() > deadline) return false;
      loop_->RunOnce(std::chrono::milliseconds(5));
    }
    return true;
  }

  TempDir dir_;
  std::unique_ptr<transport::Loop> loop_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<BrokerDriver> broker_;
  std::vector<std::unique_ptr<Events>> events_;
  std::vector<std::unique_ptr<ClientDriver>> clients_;
};

INSTANTIATE_TEST_SUITE_P(Backends, Restart,
                         testing::Values("epoll", "uring-fixed"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

TEST_P(Restart, SessionsSubscriptionsAndRetainedSurvive) {
  StoreLoadReport first = StartBroker();
  EXPECT_EQ(first.sessions + first.retained, 0u);
  {
    Events& sub = NewEvents();
    Events& pub = NewEvents();
    Events& transient = NewEvents();
    ClientDriver* s = Client(&sub, "durable", /*persistent=*/true);
    ClientDriver* t = Client(&transient, "transient", /*persistent=*/false);
    ClientDriver* p = Client(&pub, "pub", false);
    ASSERT_TRUE(RunUntil([&] {
      return sub.connected + pub.connected + transient.connected == 3;
    }));
    ASSERT_TRUE(s->Subscribe("news/#", {.max_qos = 1}).ok());
    ASSERT_TRUE(t->Subscribe("news/#", {.max_qos = 1}).ok());
    ASSERT_TRUE(
        RunUntil([&] { return sub.subscribed + transient.subscribed == 2; }));
    ASSERT_TRUE(
        p->Publish("status/a", AsBytes("up"), {.qos = 1, .retain = true}).ok());
    ASSERT_TRUE(
        p->Publish("status/b", AsBytes("old"), {.qos = 1, .retain = true})
            .ok());
    // An empty retained message clears status/b (MQTT-3.3.1-6).
    ASSERT_TRUE(
        p->Publish("status/b", AsBytes(""), {.qos = 1, .retain = true}).ok());
    ASSERT_TRUE(RunUntil([&] { return pub.acked == 3; }));
  }
  StopBroker();

  StoreLoadReport second = StartBroker();
  EXPECT_EQ(second.sessions, 1u) << second.ToString();  // not "transient"
  EXPECT_EQ(second.subscriptions, 1u) << second.ToString();
  EXPECT_EQ(second.retained, 1u) << second.ToString();
  Events& sub = NewEvents();
  Events& pub = NewEvents();
  Events& fresh = NewEvents();
  Client(&sub, "durable", /*persistent=*/true);
  ClientDriver* p = Client(&pub, "pub", false);
  ASSERT_TRUE(RunUntil([&] { return sub.connected + pub.connected == 2; }));
  EXPECT_TRUE(sub.session_present);  // MQTT-3.2.2-3, across the restart
  // Its subscription came back with it: no SUBSCRIBE after the restart.
  ASSERT_TRUE(p->Publish("news/today", AsBytes("hello"), {.qos = 1}).ok());
  ASSERT_TRUE(RunUntil([&] { return !sub.messages.empty(); }));
  EXPECT_EQ(sub.messages[0], "news/today=hello");
  // The retained message came back too; the cleared one did not.
  ClientDriver* f = Client(&fresh, "fresh", false);
  ASSERT_TRUE(RunUntil([&] { return fresh.connected == 1; }));
  ASSERT_TRUE(f->Subscribe("status/#", {.max_qos = 1}).ok());
  ASSERT_TRUE(RunUntil([&] { return !fresh.messages.empty(); }));
  for (int i = 0; i < 20; ++i) loop_->RunOnce(std::chrono::milliseconds(1));
  ASSERT_EQ(fresh.messages.size(), 1u);
  EXPECT_EQ(fresh.messages[0], "status/a=up (retained)");
}

TEST_P(Restart, CleanStartRemovesTheStoredSession) {
  StartBroker();
  {
    Events& e = NewEvents();
    ClientDriver* c = Client(&e, "c1", /*persistent=*/true);
    ASSERT_TRUE(RunUntil([&] { return e.connected == 1; }));
    ASSERT_TRUE(c->Subscribe("a", {.max_qos = 1}).ok());
    ASSERT_TRUE(RunUntil([&] { return e.subscribed == 1; }));
  }
  StopBroker();
  EXPECT_EQ(StartBroker().sessions, 1u);
  {
    Events& e = NewEvents();
    Client(&e, "c1", /*persistent=*/false);  // Clean Start, expiry 0
    ASSERT_TRUE(RunUntil([&] { return e.connected == 1; }));
    EXPECT_FALSE(e.session_present);
  }
  StopBroker();
  StoreLoadReport r = StartBroker();
  EXPECT_EQ(r.sessions, 0u) << r.ToString();
  EXPECT_EQ(r.subscriptions, 0u) << r.ToString();
}

// QoS 1 messages queued for an offline persistent session survive the
// restart, arrive once it resumes, and are gone from the store once
// acknowledged; a QoS 0 message for it is not kept (offline QoS 0 is
// dropped, and counted, before and after).
TEST_P(Restart, QueuedQos1MessagesSurviveUntilAcknowledged) {
  StartBroker();
  {
    Events& sub = NewEvents();
    ClientDriver* s = Client(&sub, "offline", /*persistent=*/true);
    ASSERT_TRUE(RunUntil([&] { return sub.connected == 1; }));
    ASSERT_TRUE(s->Subscribe("q/#", {.max_qos = 1}, 0).ok());
    ASSERT_TRUE(RunUntil([&] { return sub.subscribed == 1; }));
    s->Disconnect();
    ASSERT_TRUE(RunUntil([&] {
      std::optional<Broker::SessionInfo> info =
          broker_->broker().GetSessionInfo("offline");
      return info.has_value() && !info->connected;
    }));
    Events& pub = NewEvents();
    ClientDriver* p = Client(&pub, "pub", false);
    ASSERT_TRUE(RunUntil([&] { return pub.connected == 1; }));
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(p->Publish(absl::StrCat("q/", i),
                             AsBytes(absl::StrCat("m", i)), {.qos = 1})
                      .ok());
    }
    ASSERT_TRUE(p->Publish("q/zero", AsBytes("qos0"), {.qos = 0}).ok());
    ASSERT_TRUE(RunUntil([&] { return pub.acked == 3; }));
    ASSERT_EQ(broker_->broker().GetSessionInfo("offline")->queued, 3u);
  }
  StopBroker();

  StoreLoadReport r = StartBroker();
  EXPECT_EQ(r.queued, 3u) << r.ToString();
  ASSERT_EQ(broker_->broker().GetSessionInfo("offline")->queued, 3u);
  {
    Events& sub = NewEvents();
    Client(&sub, "offline", /*persistent=*/true);
    ASSERT_TRUE(RunUntil([&] { return sub.messages.size() == 3; }));
    EXPECT_TRUE(sub.session_present);
    EXPECT_EQ(sub.messages,
              (std::vector<std::string>{"q/0=m0", "q/1=m1", "q/2=m2"}));
    // The client acknowledges them as they arrive.
    ASSERT_TRUE(RunUntil([&] {
      return broker_->broker().GetSessionInfo("offline")->inflight == 0;
    }));
  }
  StopBroker();
  r = StartBroker();
  EXPECT_EQ(r.sessions, 1u) << r.ToString();
  EXPECT_EQ(r.queued, 0u) << r.ToString();
}

}  // namespace
}  // namespace ringlab::mqtt
