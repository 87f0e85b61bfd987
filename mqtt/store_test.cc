// Durable state: the SQLite store on its own (what it writes, it loads, per
// fsync policy), a broker driver restarted on the same data directory
// (sessions, subscriptions and retained messages survive), and stores that
// are not databases or are truncated (an error, never an empty store).
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mqtt/broker.h"
#include "mqtt/broker_driver.h"
#include "mqtt/client_driver.h"
#include "mqtt/internal/broker_sim.h"
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

// kBatch: the sync thread makes a commit durable shortly after Flush();
// Poll() takes it in. Bounded wait (no timing assertion).
void WaitDurable(SqliteStore& store) {
  for (int i = 0;
       i < 5000 && store.durable_sequence() < store.written_sequence(); ++i) {
    ::usleep(1000);
    store.Poll();
  }
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
  WaitDurable(*store);
  EXPECT_EQ(store->durable_sequence(), store->written_sequence());
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
// a change only once its commit is synced, always and never when the call
// returns.
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
    WaitDurable(*batch);
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

// kAlways: the changes of one group (one packet's) commit together. An
// unfinished group, as at a kill -9 between two of them, leaves none; before
// groups each change committed alone, so the kill -9 loop with a resending
// publisher (store_crash_test.py --qos=2 --online --resend --fsync=always)
// kept a queued record without the publisher's packet id and delivered the
// resend twice (5 of 12 seeds).
TEST(SqliteStore, AGroupCommitsAsOne) {
  TempDir dir;
  for (FsyncPolicy policy : {FsyncPolicy::kAlways, FsyncPolicy::kNever}) {
    SCOPED_TRACE(policy == FsyncPolicy::kAlways ? "always" : "never");
    {
      std::unique_ptr<SqliteStore> store = OpenStore(dir.path(), policy);
      ASSERT_NE(store, nullptr);
      store->PutSession("a", 3600);
      const uint64_t start = store->written_sequence();
      ASSERT_EQ(store->durable_sequence(), start);
      store->BeginGroup();
      store->PutSubscription("a", "t", {.max_qos = 2}, 0);
      store->PutInboundQos2("a", 5);
      EXPECT_EQ(store->written_sequence(), start + 2);
      EXPECT_EQ(store->durable_sequence(), start) << "durable before COMMIT";
      // Closed inside the group: nothing of it was committed.
    }
    {
      std::unique_ptr<SqliteStore> store = OpenStore(dir.path(), policy);
      ASSERT_NE(store, nullptr);
      Broker broker;
      absl::StatusOr<StoreLoadReport> r = store->Load(&broker, Timestamp{});
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->sessions, 1u) << r->ToString();
      EXPECT_EQ(r->subscriptions, 0u) << r->ToString();
      EXPECT_EQ(r->awaiting_pubrel, 0u) << r->ToString();
      store->BeginGroup();
      store->PutSubscription("a", "t", {.max_qos = 2}, 0);
      store->PutInboundQos2("a", 5);
      store->EndGroup();
      EXPECT_EQ(store->durable_sequence(), store->written_sequence());
      EXPECT_TRUE(store->status().ok()) << store->status();
    }
    std::unique_ptr<SqliteStore> store = OpenStore(dir.path(), policy);
    ASSERT_NE(store, nullptr);
    Broker broker;
    absl::StatusOr<StoreLoadReport> r = store->Load(&broker, Timestamp{});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->subscriptions, 1u) << r->ToString();
    EXPECT_EQ(r->awaiting_pubrel, 1u) << r->ToString();
    store->DeleteSession("a");  // the next policy starts from nothing
  }
}

// In-flight state round trip: packet ids, PUBREL reached, inbound QoS 2 ids.
TEST(SqliteStore, InflightStateRoundTrip) {
  TempDir dir;
  MessagePool pool;
  {
    std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
    ASSERT_NE(store, nullptr);
    store->PutSession("s", 600);
    MessageRef m = pool.Create("t", 2, false, {}, AsBytes("x"),
                               Timestamp::Never(), kNoPublisher);
    const uint64_t sent = store->PutQueued("s", *m, 1, false, {}, Timestamp{});
    const uint64_t released =
        store->PutQueued("s", *m, 2, false, {}, Timestamp{});
    store->PutQueued("s", *m, 2, false, {}, Timestamp{});  // never sent
    store->MarkQueuedSent(sent, 17);
    store->MarkQueuedSent(released, 18);
    store->MarkQueuedReleased(released);
    store->PutInboundQos2("s", 5);
    store->PutInboundQos2("s", 6);
    store->DeleteInboundQos2("s", 5);
    store->PutSession("gone", 600);
    store->PutInboundQos2("gone", 9);
    store->DeleteSession("gone");  // its inbound ids go with it
    EXPECT_TRUE(store->status().ok()) << store->status();
  }
  std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
  ASSERT_NE(store, nullptr);
  Broker broker;
  absl::StatusOr<StoreLoadReport> r = store->Load(&broker, Timestamp{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sessions, 1u) << r->ToString();
  EXPECT_EQ(r->queued, 3u) << r->ToString();
  EXPECT_EQ(r->inflight, 2u) << r->ToString();
  EXPECT_EQ(r->awaiting_pubrel, 1u) << r->ToString();
  std::optional<Broker::SessionInfo> info = broker.GetSessionInfo("s");
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->inflight, 2u);
  EXPECT_EQ(info->queued, 1u);
}

// kBatch applies, commits and fdatasyncs on the store's thread: with that
// thread held between a window's COMMIT and its fdatasync, durable_sequence()
// must not move (the acks it would release could be lost to a power cut),
// and a second window must wait behind the first without blocking the
// caller. Fails if the sequence is confirmed at the hand-off or at the
// COMMIT (checked by moving synced_.store() before the hook).
TEST(SqliteStore, BatchConfirmsAWindowOnlyAfterItsSync) {
  TempDir dir;
  std::mutex mu;
  std::condition_variable cv;
  int entered = 0;
  bool open_gate = false;
  SqliteStoreOptions o;
  o.data_dir = dir.path();
  o.fsync = FsyncPolicy::kBatch;
  o.before_sync_for_test = [&] {
    std::unique_lock<std::mutex> lock(mu);
    ++entered;
    cv.notify_all();
    cv.wait(lock, [&] { return open_gate; });
  };
  absl::StatusOr<std::unique_ptr<SqliteStore>> opened = SqliteStore::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  SqliteStore& store = **opened;
  MessagePool pool;
  MessageRef m = pool.Create("t", 1, false, {}, AsBytes("x"),
                             Timestamp::Never(), kNoPublisher);
  store.PutSession("a", 600);
  store.PutQueued("a", *m, 1, false, {}, Timestamp{});
  const uint64_t first = store.written_sequence();
  store.Flush();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10),
                            [&] { return entered == 1; }));
  }
  // The thread has committed the window and waits before its fdatasync.
  for (int i = 0; i < 20; ++i) {
    store.Poll();
    EXPECT_EQ(store.durable_sequence(), 0u);
    ::usleep(1000);
  }
  // A second window while the first is not synced: Flush() returns at once
  // and confirms nothing.
  store.PutSession("b", 600);
  const uint64_t second = store.written_sequence();
  store.Flush();
  store.Poll();
  EXPECT_EQ(store.durable_sequence(), 0u);
  EXPECT_GT(second, first);
  {
    std::lock_guard<std::mutex> lock(mu);
    open_gate = true;
  }
  cv.notify_all();
  WaitDurable(store);
  EXPECT_EQ(store.durable_sequence(), second);
  EXPECT_EQ(store.counters().commits, 2u);
  EXPECT_TRUE(store.status().ok()) << store.status();
  std::unique_ptr<SqliteStore> reader = OpenStore(dir.path());
  ASSERT_NE(reader, nullptr);
  Broker broker;
  absl::StatusOr<StoreLoadReport> r = reader->Load(&broker, Timestamp{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sessions, 2u);
  EXPECT_EQ(r->queued, 1u);
}

// kill -9 of a process whose store thread is in the middle of a window:
// every queued message that durable_sequence() had confirmed (what the
// broker would have PUBACKed) is there after the restart. The child
// reports each confirmed key through a pipe; the parent kills it at a
// varying point of its write loop (5 rounds).
TEST(SqliteStore, BatchKeepsEveryConfirmedChangeAcrossKill9MidWindow) {
  for (int round = 0; round < 5; ++round) {
    TempDir dir;
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(fds[0]);
      SqliteStoreOptions o;
      o.data_dir = dir.path();
      o.fsync = FsyncPolicy::kBatch;
      absl::StatusOr<std::unique_ptr<SqliteStore>> s = SqliteStore::Open(o);
      if (!s.ok()) ::_exit(2);
      SqliteStore& store = **s;
      MessagePool pool;
      MessageRef m = pool.Create("t", 1, false, {}, AsBytes("payload"),
                                 Timestamp::Never(), kNoPublisher);
      store.PutSession("s", 600);
      std::vector<std::pair<uint64_t, uint64_t>> sequence_key;
      size_t confirmed = 0;
      while (true) {
        for (int i = 0; i < 200; ++i) {
          const uint64_t key = store.PutQueued("s", *m, 1, false, {}, {});
          sequence_key.emplace_back(store.written_sequence(), key);
        }
        store.Flush();
        store.Poll();
        uint64_t last = 0;
        while (confirmed < sequence_key.size() &&
               sequence_key[confirmed].first <= store.durable_sequence()) {
          last = sequence_key[confirmed++].second;
        }
        if (last != 0 && ::write(fds[1], &last, sizeof last) != sizeof last) {
          ::_exit(3);
        }
        ::usleep(500);
      }
    }
    ::close(fds[1]);
    uint64_t confirmed_key = 0;
    // Let a few windows be confirmed, then kill at a point that moves with
    // the round (the thread is applying or syncing most of the time).
    for (int reports = 0; reports < 3 + round; ++reports) {
      uint64_t key = 0;
      ASSERT_EQ(::read(fds[0], &key, sizeof key), ssize_t(sizeof key));
      confirmed_key = std::max(confirmed_key, key);
    }
    ::usleep(1000 * (round * 3 + 1));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    // Reports written before the kill count too.
    uint64_t key = 0;
    while (::read(fds[0], &key, sizeof key) == ssize_t(sizeof key)) {
      confirmed_key = std::max(confirmed_key, key);
    }
    ::close(fds[0]);
    ASSERT_TRUE(WIFSIGNALED(status)) << "round " << round;
    ASSERT_GT(confirmed_key, 0u);
    std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
    ASSERT_NE(store, nullptr) << "round " << round;
    Broker broker;
    absl::StatusOr<StoreLoadReport> r = store->Load(&broker, Timestamp{});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->sessions, 1u);
    // Keys are 1, 2, 3 ... in a fresh store and never deleted here.
    EXPECT_GE(r->queued, confirmed_key) << "round " << round;
  }
}

// kBatch keeps a queued message in memory until the commit: one that is
// acknowledged within its window is never written; one still queued at the
// commit is written with its latest state; DeleteSession drops its own.
TEST(SqliteStore, BatchWritesOnlyWhatIsStillQueuedAtTheCommit) {
  TempDir dir;
  MessagePool pool;
  MessageRef m = pool.Create("t", 2, false, {}, AsBytes("x"),
                             Timestamp::Never(), kNoPublisher);
  uint64_t kept = 0;
  uint64_t resumed = 0;
  {
    std::unique_ptr<SqliteStore> store =
        OpenStore(dir.path(), FsyncPolicy::kBatch);
    ASSERT_NE(store, nullptr);
    store->PutSession("s", 600);
    store->PutSession("gone", 600);
    const uint64_t acked = store->PutQueued("s", *m, 1, false, {}, Timestamp{});
    kept = store->PutQueued("s", *m, 2, false, {}, Timestamp{});
    store->PutQueued("gone", *m, 1, false, {}, Timestamp{});
    EXPECT_NE(acked, kept);
    store->MarkQueuedSent(acked, 3);
    store->DeleteQueued(acked);  // PUBACK within the window
    store->MarkQueuedSent(kept, 4);
    store->MarkQueuedReleased(kept);
    store->DeleteSession("gone");
    EXPECT_LT(store->durable_sequence(), store->written_sequence());
    store->Flush();
    WaitDurable(*store);
    EXPECT_EQ(store->durable_sequence(), store->written_sequence());
    EXPECT_EQ(store->counters().queued_coalesced, 1u);
    // After the commit the row is on disk: updates and deletes go there.
    const uint64_t later = store->PutQueued("s", *m, 1, false, {}, Timestamp{});
    EXPECT_GT(later, kept);
    store->Flush();
    store->MarkQueuedSent(later, 9);  // kept for the commit ...
    store->DeleteQueued(later);       // ... and dropped with the row
    store->Flush();
    EXPECT_EQ(store->counters().queued_coalesced, 1u);
    EXPECT_EQ(store->counters().updates_coalesced, 1u);
    // An update still wanted at the commit is written then.
    resumed = store->PutQueued("s", *m, 2, false, {}, Timestamp{});
    store->Flush();
    store->MarkQueuedSent(resumed, 5);
    store->MarkQueuedReleased(resumed);
    EXPECT_LT(store->durable_sequence(), store->written_sequence());
    store->Flush();
    WaitDurable(*store);
    EXPECT_EQ(store->durable_sequence(), store->written_sequence());
    EXPECT_TRUE(store->status().ok()) << store->status();
  }
  std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
  ASSERT_NE(store, nullptr);
  Broker broker;
  absl::StatusOr<StoreLoadReport> r = store->Load(&broker, Timestamp{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sessions, 1u) << r->ToString();
  EXPECT_EQ(r->queued, 2u) << r->ToString();  // `kept` and `resumed`
  EXPECT_EQ(r->inflight, 2u) << r->ToString();
  std::optional<Broker::SessionInfo> info = broker.GetSessionInfo("s");
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->inflight, 2u);
  // Keys keep growing across a reopen (never one of an earlier row).
  EXPECT_GT(store->PutQueued("s", *m, 1, false, {}, Timestamp{}), resumed);
}

// Creates a current store in `dir`, rewrites its file with `sql` (an older
// schema, by hand), opens it again and loads it.
StoreLoadReport LoadAfterRewrite(const std::string& dir, const char* sql) {
  {
    std::unique_ptr<SqliteStore> store = OpenStore(dir);
    EXPECT_NE(store, nullptr);
  }
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open((dir + "/broker.db").c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);
  std::unique_ptr<SqliteStore> store = OpenStore(dir);
  if (store == nullptr) return {};
  Broker broker;
  absl::StatusOr<StoreLoadReport> r = store->Load(&broker, Timestamp{});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : StoreLoadReport{};
}

// A schema version 1 file (before in-flight state) is migrated, not refused.
TEST(SqliteStore, VersionOneIsMigrated) {
  TempDir dir;
  const StoreLoadReport r = LoadAfterRewrite(
      dir.path(),
      "DROP TABLE queued; DROP TABLE inbound_qos2;"
      "CREATE TABLE queued(id INTEGER PRIMARY KEY AUTOINCREMENT, "
      "client_id TEXT NOT NULL, topic TEXT NOT NULL, message_qos "
      "INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, "
      "properties BLOB NOT NULL, payload BLOB NOT NULL, subscription_ids "
      "BLOB NOT NULL, expires_wall_ms INTEGER NOT NULL);"
      "INSERT INTO sessions VALUES('old', 600);"
      "INSERT INTO queued(client_id, topic, message_qos, qos, retain, "
      "properties, payload, subscription_ids, expires_wall_ms) "
      "VALUES('old', 't', 1, 1, 0, x'', x'41', x'', 0);"
      "UPDATE meta SET value=1 WHERE key='schema';");
  EXPECT_EQ(r.queued, 1u) << r.ToString();
  EXPECT_EQ(r.inflight, 0u) << r.ToString();
}

// A schema version 2 file (before the exchange tags) is migrated: its
// copies are untagged, so none is rolled back.
TEST(SqliteStore, VersionTwoIsMigrated) {
  TempDir dir;
  const StoreLoadReport r = LoadAfterRewrite(
      dir.path(),
      "DROP TABLE queued;"
      "CREATE TABLE queued(id INTEGER PRIMARY KEY AUTOINCREMENT, "
      "client_id TEXT NOT NULL, topic TEXT NOT NULL, message_qos "
      "INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, "
      "properties BLOB NOT NULL, payload BLOB NOT NULL, subscription_ids "
      "BLOB NOT NULL, expires_wall_ms INTEGER NOT NULL, packet_id "
      "INTEGER NOT NULL DEFAULT 0, released INTEGER NOT NULL DEFAULT 0);"
      "INSERT INTO sessions VALUES('old', 600);"
      "INSERT INTO queued(client_id, topic, message_qos, qos, retain, "
      "properties, payload, subscription_ids, expires_wall_ms, "
      "packet_id) VALUES('old', 't', 2, 2, 0, x'', x'41', x'', 0, 5);"
      "UPDATE meta SET value=2 WHERE key='schema';");
  EXPECT_EQ(r.queued, 1u) << r.ToString();
  EXPECT_EQ(r.inflight, 1u) << r.ToString();
  EXPECT_EQ(r.rolled_back, 0u) << r.ToString();
}

// The broker core on SimNetwork, restarted from the store in the middle of
// QoS 1 and QoS 2 exchanges in both directions (MQTT-4.4.0-1: resend with
// DUP and the original packet ids, PUBREL where PUBREC had come; exactly
// once for the publisher's QoS 2 across the restart).
class CoreRestart {
 public:
  explicit CoreRestart(const std::string& dir) {
    store_ = OpenStore(dir);
    EXPECT_NE(store_, nullptr);
    absl::StatusOr<StoreLoadReport> r =
        store_->Load(&sim_.broker(), sim_.now());
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) report = *r;
    sim_.broker().set_store(store_.get());
  }
  ~CoreRestart() {
    // Like kill -9: nothing more reaches the store from the core.
    sim_.broker().set_store(nullptr);
  }
  internal::RawClient& Connect(std::string_view id, bool session_present) {
    internal::RawClient& c = sim_.AddClient();
    c.Open();
    mqtt::Connect connect;
    connect.version = Version::k311;
    connect.client_id = id;
    connect.clean_start = false;  // persistent (3.1.1 Clean Session 0)
    c.Send(connect, Version::k311);
    Run();
    internal::OwnedFrame f;
    Connack ack = c.Expect<Connack>(Version::k311, &f);
    EXPECT_EQ(ack.code, 0);
    EXPECT_EQ(ack.session_present, session_present);
    return c;
  }
  void Run() { sim_.RunFor(std::chrono::milliseconds(5)); }
  static void SendAck(internal::RawClient& c, PacketType type, uint16_t id) {
    PubResponse r;
    r.type = type;
    r.packet_id = id;
    c.Send(r, Version::k311);
  }
  static PubResponse TakeAck(internal::RawClient& c) {
    internal::OwnedFrame f;
    return c.Expect<PubResponse>(Version::k311, &f);
  }

  StoreLoadReport report;

 private:
  std::unique_ptr<SqliteStore> store_;
  internal::BrokerSim sim_;
};

TEST(CoreRestartTest, ResumesInflightWithDupOriginalIdsAndPubrel) {
  TempDir dir;
  uint16_t id1 = 0, id2 = 0, id3 = 0;  // the broker's ids towards "sub"
  {
    CoreRestart b(dir.path());
    internal::RawClient& sub = b.Connect("sub", false);
    SubscribeEntry e{"t/#", {.max_qos = 2}};
    Subscribe s;
    s.packet_id = 1;
    s.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
    sub.Send(s, Version::k311);
    b.Run();
    internal::OwnedFrame f;
    ASSERT_EQ(sub.Expect<Suback>(Version::k311, &f).packet_id, 1);
    internal::RawClient& pub = b.Connect("pub", false);
    auto publish = [&](std::string_view topic, uint8_t qos, uint16_t id) {
      Publish p;
      p.topic = topic;
      p.payload = AsBytes(topic);
      p.qos = qos;
      p.packet_id = id;
      pub.Send(p, Version::k311);
    };
    publish("t/1", 1, 10);
    publish("t/2", 2, 11);  // PUBREC comes; no PUBREL before the restart
    publish("t/3", 2, 12);
    b.Run();
    EXPECT_EQ(CoreRestart::TakeAck(pub).packet_id, 10);
    EXPECT_EQ(CoreRestart::TakeAck(pub).packet_id, 11);
    EXPECT_EQ(CoreRestart::TakeAck(pub).packet_id, 12);
    CoreRestart::SendAck(pub, PacketType::kPubrel, 12);
    b.Run();
    EXPECT_EQ(CoreRestart::TakeAck(pub).type, PacketType::kPubcomp);
    ASSERT_EQ(sub.pending(), 3u);
    internal::OwnedFrame k1, k2, k3;
    id1 = sub.Expect<Publish>(Version::k311, &k1).packet_id;
    id2 = sub.Expect<Publish>(Version::k311, &k2).packet_id;
    id3 = sub.Expect<Publish>(Version::k311, &k3).packet_id;
    // t/3 reaches PUBREL; t/1 and t/2 stay unacknowledged.
    CoreRestart::SendAck(sub, PacketType::kPubrec, id3);
    b.Run();
    PubResponse rel = CoreRestart::TakeAck(sub);
    EXPECT_EQ(rel.type, PacketType::kPubrel);
    EXPECT_EQ(rel.packet_id, id3);
  }
  {
    CoreRestart b(dir.path());
    EXPECT_EQ(b.report.sessions, 2u) << b.report.ToString();
    EXPECT_EQ(b.report.inflight, 3u) << b.report.ToString();
    EXPECT_EQ(b.report.awaiting_pubrel, 1u) << b.report.ToString();
    internal::RawClient& sub = b.Connect("sub", true);
    ASSERT_EQ(sub.pending(), 3u);
    internal::OwnedFrame k1, k2;
    Publish p1 = sub.Expect<Publish>(Version::k311, &k1);
    EXPECT_TRUE(p1.dup);  // MQTT-3.3.1-1
    EXPECT_EQ(p1.packet_id, id1);
    EXPECT_EQ(p1.qos, 1);
    EXPECT_EQ(p1.topic, "t/1");
    Publish p2 = sub.Expect<Publish>(Version::k311, &k2);
    EXPECT_TRUE(p2.dup);
    EXPECT_EQ(p2.packet_id, id2);
    EXPECT_EQ(p2.qos, 2);
    EXPECT_EQ(p2.topic, "t/2");
    PubResponse rel = CoreRestart::TakeAck(sub);
    EXPECT_EQ(rel.type, PacketType::kPubrel);  // not a new PUBLISH
    EXPECT_EQ(rel.packet_id, id3);
    // The publisher resends its unreleased QoS 2 PUBLISH: PUBREC again,
    // and it is not delivered a second time.
    internal::RawClient& pub = b.Connect("pub", true);
    Publish again;
    again.topic = "t/2";
    again.payload = AsBytes("t/2");
    again.qos = 2;
    again.dup = true;
    again.packet_id = 11;
    pub.Send(again, Version::k311);
    b.Run();
    PubResponse rec = CoreRestart::TakeAck(pub);
    EXPECT_EQ(rec.type, PacketType::kPubrec);
    EXPECT_EQ(rec.packet_id, 11);
    EXPECT_EQ(sub.pending(), 0u) << "delivered twice";
    CoreRestart::SendAck(pub, PacketType::kPubrel, 11);
    CoreRestart::SendAck(sub, PacketType::kPuback, id1);
    CoreRestart::SendAck(sub, PacketType::kPubrec, id2);
    CoreRestart::SendAck(sub, PacketType::kPubcomp, id3);
    b.Run();
    PubResponse comp = CoreRestart::TakeAck(pub);
    EXPECT_EQ(comp.type, PacketType::kPubcomp);
    EXPECT_EQ(comp.reason, ReasonCode::kSuccess);  // the id was known
    PubResponse rel2 = CoreRestart::TakeAck(sub);
    EXPECT_EQ(rel2.type, PacketType::kPubrel);
    EXPECT_EQ(rel2.packet_id, id2);
    CoreRestart::SendAck(sub, PacketType::kPubcomp, id2);
    b.Run();
  }
  // Everything completed: nothing is left to resume.
  CoreRestart b(dir.path());
  EXPECT_EQ(b.report.queued, 0u) << b.report.ToString();
  EXPECT_EQ(b.report.awaiting_pubrel, 0u) << b.report.ToString();
}

// The multi-Loop broker's stores: one per Loop, on one database.
std::unique_ptr<SqliteStore> OpenSharedStore(const std::string& dir,
                                             uint32_t index, uint32_t count,
                                             FsyncPolicy fsync,
                                             bool tag_origins = false) {
  SqliteStoreOptions o;
  o.data_dir = dir;
  o.fsync = fsync;
  o.batch_window = std::chrono::milliseconds(2);
  o.key_stride = count;
  o.key_offset = index;
  o.tag_qos2_origins = tag_origins;
  absl::StatusOr<std::unique_ptr<SqliteStore>> s = SqliteStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Two stores write one file from two threads at once (as two Loops do):
// their queued keys never collide, SQLite orders their transactions, and
// what both wrote loads. A key taken twice would fail the INSERT (the id is
// the primary key) and count a write error.
TEST(SqliteStore, StoresSharingOneDatabaseKeepTheirKeysApart) {
  for (FsyncPolicy fsync : {FsyncPolicy::kBatch, FsyncPolicy::kNever}) {
    TempDir dir;
    constexpr int kPerStore = 400;
    std::vector<uint64_t> keys[2];
    {
      std::unique_ptr<SqliteStore> stores[2] = {
          OpenSharedStore(dir.path(), 0, 2, fsync),
          OpenSharedStore(dir.path(), 1, 2, fsync)};
      ASSERT_NE(stores[0], nullptr);
      ASSERT_NE(stores[1], nullptr);
      std::thread threads[2];
      for (int t = 0; t < 2; ++t) {
        threads[t] = std::thread([&, t] {
          SqliteStore& store = *stores[t];
          MessagePool pool;
          const std::string id = absl::StrCat("client", t);
          store.PutSession(id, 3600);
          for (int i = 0; i < kPerStore; ++i) {
            MessageRef m = pool.Create("t", 1, false, {}, AsBytes("x"),
                                       Timestamp::Never(), kNoPublisher);
            keys[t].push_back(store.PutQueued(id, *m, 1, false, {}, {}));
            if (i % 50 == 0) store.Flush();
          }
          store.SyncNow();
          EXPECT_EQ(store.durable_sequence(), store.written_sequence());
        });
      }
      for (std::thread& t : threads) t.join();
      for (int t = 0; t < 2; ++t) {
        EXPECT_TRUE(stores[t]->status().ok()) << stores[t]->status();
        EXPECT_EQ(stores[t]->counters().write_errors, 0u);
        for (uint64_t k : keys[t]) EXPECT_EQ((k - 1) % 2, uint64_t(t)) << k;
      }
    }
    // A third look, as after a crash: every row of both is there.
    std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
    ASSERT_NE(store, nullptr);
    Broker broker;
    absl::StatusOr<StoreLoadReport> r = store->Load(&broker, Timestamp{});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->sessions, 2u) << r->ToString();
    EXPECT_EQ(r->queued, uint64_t(2 * kPerStore)) << r->ToString();
    EXPECT_EQ(r->session_ids, (std::vector<std::string>{"client0", "client1"}));
    // Reopened with the other store's offset: above every key either used.
    std::unique_ptr<SqliteStore> again =
        OpenSharedStore(dir.path(), 1, 2, fsync);
    ASSERT_NE(again, nullptr);
    MessagePool pool;
    MessageRef m = pool.Create("t", 1, false, {}, AsBytes("x"),
                               Timestamp::Never(), kNoPublisher);
    const uint64_t next = again->PutQueued("client1", *m, 1, false, {}, {});
    EXPECT_GT(next, std::max(keys[0].back(), keys[1].back()));
    EXPECT_EQ((next - 1) % 2, 1u);
  }
}

// Two stores tag the copies of QoS 2 exchanges (SetQueuedOrigin, as the
// multi-Loop broker's Loops do) and the publisher's store writes the ids.
// A restore keeps a tagged copy exactly when its exchange's id is stored,
// or the id's PUBREL (or the publisher's session ending) cleared the tag;
// it drops the copies of the exchange whose id never was. Before schema 3
// nothing was tagged, and the resend of such an exchange after a crash was
// delivered twice (copies kept) or not at all (id kept, copies lost).
TEST(SqliteStore, CopiesOfAnExchangeWhoseIdWasNeverStoredAreRolledBack) {
  for (FsyncPolicy fsync : {FsyncPolicy::kAlways, FsyncPolicy::kBatch}) {
    SCOPED_TRACE(fsync == FsyncPolicy::kBatch ? "batch" : "always");
    TempDir dir;
    {
      std::unique_ptr<SqliteStore> a =
          OpenSharedStore(dir.path(), 0, 2, fsync, /*tag_origins=*/true);
      std::unique_ptr<SqliteStore> b =
          OpenSharedStore(dir.path(), 1, 2, fsync, /*tag_origins=*/true);
      ASSERT_NE(a, nullptr);
      ASSERT_NE(b, nullptr);
      MessagePool pool;
      MessageRef m = pool.Create("t", 2, false, {}, AsBytes("x"),
                                 Timestamp::Never(), kNoPublisher);
      for (const char* id : {"pub", "sub1", "sub2", "gone"}) {
        a->PutSession(id, 3600);
      }
      a->SyncNow();
      auto copies = [&](std::string_view publisher, uint16_t packet_id) {
        a->SetQueuedOrigin(publisher, packet_id);
        EXPECT_NE(a->PutQueued("sub1", *m, 2, false, {}, {}), 0u);
        a->SetQueuedOrigin({}, 0);
        b->SetQueuedOrigin(publisher, packet_id);
        EXPECT_NE(b->PutQueued("sub2", *m, 2, false, {}, {}), 0u);
        b->SetQueuedOrigin({}, 0);
      };
      copies("pub", 1);  // never committed: no id
      copies("pub", 2);  // committed, awaiting PUBREL
      a->PutInboundQos2("pub", 2);
      copies("pub", 3);  // committed and released
      a->PutInboundQos2("pub", 3);
      a->DeleteInboundQos2("pub", 3);
      b->PutQueued("sub2", *m, 2, false, {}, {});  // no exchange
      b->SetQueuedOrigin("gone", 4);  // its publisher's session ended
      b->PutQueued("sub2", *m, 2, false, {}, {});
      b->SetQueuedOrigin({}, 0);
      b->SyncNow();
      a->DeleteSession("gone");
      a->SyncNow();
      EXPECT_TRUE(a->status().ok()) << a->status();
      EXPECT_TRUE(b->status().ok()) << b->status();
    }
    for (uint64_t rolled_back : {2u, 0u}) {  // the second restore: none left
      std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
      ASSERT_NE(store, nullptr);
      Broker broker;
      absl::StatusOr<StoreLoadReport> r = store->Load(&broker, Timestamp{});
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->rolled_back, rolled_back) << r->ToString();
      // sub1: exchanges 2 and 3; sub2: 2, 3, the untagged one and 4.
      EXPECT_EQ(r->queued, 6u) << r->ToString();
      EXPECT_EQ(r->awaiting_pubrel, 1u) << r->ToString();
    }
  }
}

// Without tag_qos2_origins (one Loop: a copy and its id commit together)
// SetQueuedOrigin writes nothing, so nothing is rolled back.
TEST(SqliteStore, UntaggedStoreKeepsEveryCopy) {
  TempDir dir;
  {
    std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
    ASSERT_NE(store, nullptr);
    MessagePool pool;
    MessageRef m = pool.Create("t", 2, false, {}, AsBytes("x"),
                               Timestamp::Never(), kNoPublisher);
    store->PutSession("sub", 3600);
    store->SetQueuedOrigin("pub", 9);
    store->PutQueued("sub", *m, 2, false, {}, {});
    store->SetQueuedOrigin({}, 0);
  }
  std::unique_ptr<SqliteStore> store = OpenStore(dir.path());
  ASSERT_NE(store, nullptr);
  Broker broker;
  absl::StatusOr<StoreLoadReport> r = store->Load(&broker, Timestamp{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rolled_back, 0u) << r->ToString();
  EXPECT_EQ(r->queued, 1u) << r->ToString();
}

// A session moved between two cores whose stores share the database (the
// multi-Loop handover): the export leaves its rows, the import takes them
// over with their keys, and the importer's acknowledgements delete them.
// Before, ExportSession deleted the session's rows: a restart after the
// handover found no session.
TEST(CoreRestartTest, ExportedSessionKeepsItsRowsForTheImporter) {
  TempDir dir;
  std::unique_ptr<SqliteStore> store_a =
      OpenSharedStore(dir.path(), 0, 2, FsyncPolicy::kBatch);
  std::unique_ptr<SqliteStore> store_b =
      OpenSharedStore(dir.path(), 1, 2, FsyncPolicy::kBatch);
  ASSERT_NE(store_a, nullptr);
  ASSERT_NE(store_b, nullptr);
  internal::BrokerSim a, b;
  a.broker().set_store(store_a.get());
  b.broker().set_store(store_b.get());
  auto run = [](internal::BrokerSim& sim, SqliteStore& store) {
    for (int i = 0; i < 50; ++i) {
      sim.RunFor(std::chrono::milliseconds(1));
      store.Flush();
      sim.broker().OnStoreDurable(sim.now());
    }
    store.SyncNow();
    sim.broker().OnStoreDurable(sim.now());
    sim.RunFor(std::chrono::milliseconds(5));
  };
  auto connect = [&](internal::BrokerSim& sim, SqliteStore& store,
                     std::string_view id,
                     bool session_present) -> internal::RawClient& {
    internal::RawClient& c = sim.AddClient();
    c.Open();
    mqtt::Connect connect;
    connect.version = Version::k311;
    connect.client_id = id;
    connect.clean_start = false;
    c.Send(connect, Version::k311);
    run(sim, store);
    internal::OwnedFrame f;
    Connack ack = c.Expect<Connack>(Version::k311, &f);
    EXPECT_EQ(ack.code, 0);
    EXPECT_EQ(ack.session_present, session_present);
    return c;
  };
  internal::RawClient& sub = connect(a, *store_a, "sub", false);
  SubscribeEntry e{"t/#", {.max_qos = 1}};
  Subscribe subscribe;
  subscribe.packet_id = 1;
  subscribe.entries = SubscribeEntries(std::span<const SubscribeEntry>(&e, 1));
  sub.Send(subscribe, Version::k311);
  run(a, *store_a);
  internal::OwnedFrame f;
  ASSERT_EQ(sub.Expect<Suback>(Version::k311, &f).packet_id, 1);
  internal::RawClient& pub = connect(a, *store_a, "pub", false);
  for (uint16_t id = 10; id < 12; ++id) {
    Publish p;
    p.topic = "t/1";
    p.payload = AsBytes("m");
    p.qos = 1;
    p.packet_id = id;
    pub.Send(p, Version::k311);
  }
  run(a, *store_a);
  ASSERT_EQ(sub.pending(), 2u);  // in flight to "sub", unacknowledged
  internal::OwnedFrame k1, k2;
  const uint16_t id1 = sub.Expect<Publish>(Version::k311, &k1).packet_id;
  const uint16_t id2 = sub.Expect<Publish>(Version::k311, &k2).packet_id;

  std::optional<StoredSession> moved =
      a.broker().ExportSession("sub", ReasonCode::kSessionTakenOver, a.now());
  ASSERT_TRUE(moved.has_value());
  EXPECT_TRUE(moved->stored);
  ASSERT_EQ(moved->queued.size(), 2u);
  for (const StoredQueued& q : moved->queued) {
    EXPECT_NE(q.key, 0u);
    EXPECT_EQ((q.key - 1) % 2, 0u) << "a key of store A";
  }
  store_a->SyncNow();  // what the multi-Loop broker does before sending it
  {
    // A crash right after the export: the session is still in the store.
    std::unique_ptr<SqliteStore> look = OpenStore(dir.path());
    ASSERT_NE(look, nullptr);
    Broker broker;
    absl::StatusOr<StoreLoadReport> r = look->Load(&broker, Timestamp{});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(broker.GetSessionInfo("sub").has_value()) << r->ToString();
    EXPECT_EQ(r->queued, 2u) << r->ToString();
    EXPECT_EQ(r->inflight, 2u) << r->ToString();
  }
  const uint64_t written_b = store_b->written_sequence();
  ASSERT_TRUE(b.broker().ImportSession(*moved, b.now()).ok());
  EXPECT_EQ(store_b->written_sequence(), written_b) << "rows written again";
  internal::RawClient& sub_b = connect(b, *store_b, "sub", true);
  ASSERT_EQ(sub_b.pending(), 2u);
  EXPECT_EQ(sub_b.Expect<Publish>(Version::k311, &k1).packet_id, id1);
  EXPECT_EQ(sub_b.Expect<Publish>(Version::k311, &k2).packet_id, id2);
  CoreRestart::SendAck(sub_b, PacketType::kPuback, id1);
  CoreRestart::SendAck(sub_b, PacketType::kPuback, id2);
  run(b, *store_b);
  a.broker().set_store(nullptr);
  b.broker().set_store(nullptr);
  store_a.reset();
  store_b.reset();
  std::unique_ptr<SqliteStore> look = OpenStore(dir.path());
  ASSERT_NE(look, nullptr);
  Broker broker;
  absl::StatusOr<StoreLoadReport> r = look->Load(&broker, Timestamp{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(broker.GetSessionInfo("sub").has_value()) << r->ToString();
  EXPECT_EQ(r->queued, 0u) << "the importer's PUBACKs deleted A's rows: "
                           << r->ToString();
  // The other Loops restore only the retained set.
  Broker other;
  absl::StatusOr<StoreLoadReport> retained_only =
      look->Load(&other, Timestamp{}, LoadParts::kRetainedOnly);
  ASSERT_TRUE(retained_only.ok());
  EXPECT_EQ(retained_only->sessions, 0u);
  EXPECT_EQ(other.session_count(), 0u);
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
