#include "mqtt/store_sqlite.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "mqtt/broker.h"

namespace ringlab::mqtt {
namespace {

// Bumped when the tables change; a database from another version is an
// error, not something to guess at.
// 2: queued.packet_id/released and inbound_qos2 (a version 1 file is
// migrated in place at open).
// 3: queued.origin_client/origin_pid, the QoS 2 exchange a copy belongs to
// (BrokerStore::SetQueuedOrigin; versions 1 and 2 are migrated at open).
constexpr int kSchemaVersion = 3;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(
  key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS retained(
  topic TEXT PRIMARY KEY, qos INTEGER NOT NULL, properties BLOB NOT NULL,
  payload BLOB NOT NULL, expires_wall_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
  client_id TEXT PRIMARY KEY, expiry_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions(
  client_id TEXT NOT NULL, filter TEXT NOT NULL, options INTEGER NOT NULL,
  subscription_id INTEGER NOT NULL, PRIMARY KEY(client_id, filter));
CREATE TABLE IF NOT EXISTS queued(
  id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL,
  topic TEXT NOT NULL, message_qos INTEGER NOT NULL, qos INTEGER NOT NULL,
  retain INTEGER NOT NULL, properties BLOB NOT NULL, payload BLOB NOT NULL,
  subscription_ids BLOB NOT NULL, expires_wall_ms INTEGER NOT NULL,
  packet_id INTEGER NOT NULL DEFAULT 0, released INTEGER NOT NULL DEFAULT 0,
  origin_client TEXT NOT NULL DEFAULT '', origin_pid INTEGER NOT NULL DEFAULT 0);
DROP INDEX IF EXISTS queued_by_client;
-- Partial: only copies whose exchange is not released yet are in it, so it
-- costs nothing where no copy is tagged (one Loop).
CREATE INDEX IF NOT EXISTS queued_by_origin ON queued(origin_client, origin_pid)
  WHERE origin_pid != 0;
CREATE TABLE IF NOT EXISTS inbound_qos2(
  client_id TEXT NOT NULL, packet_id INTEGER NOT NULL,
  PRIMARY KEY(client_id, packet_id));
)sql";

// Version 1 had no in-flight state: its rows were never sent (0) as far as
// a restart is concerned, which is what version 1 did.
constexpr const char* kMigrate1To2 = R"sql(
ALTER TABLE queued ADD COLUMN packet_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queued ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
UPDATE meta SET value=2 WHERE key='schema';
)sql";

// Version 2 rows copy no tracked exchange: untagged, as one Loop writes them.
constexpr const char* kMigrate2To3 = R"sql(
ALTER TABLE queued ADD COLUMN origin_client TEXT NOT NULL DEFAULT '';
ALTER TABLE queued ADD COLUMN origin_pid INTEGER NOT NULL DEFAULT 0;
UPDATE meta SET value=3 WHERE key='schema';
)sql";

// Expiry is kept as wall-clock time: the core's monotonic Timestamps mean
// nothing after a restart.
int64_t WallNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint8_t PackOptions(const SubscriptionOptions& o) {
  // The SUBSCRIBE options byte layout (MQTT 5.0 §3.8.3.1).
  return uint8_t((o.max_qos & 3) | (o.no_local ? 4 : 0) |
                 (o.retain_as_published ? 8 : 0) |
                 ((o.retain_handling & 3) << 4));
}

SubscriptionOptions UnpackOptions(int64_t v) {
  SubscriptionOptions o;
  o.max_qos = uint8_t(v & 3);
  o.no_local = (v & 4) != 0;
  o.retain_as_published = (v & 8) != 0;
  o.retain_handling = uint8_t((v >> 4) & 3);
  return o;
}

void BindText(sqlite3_stmt* st, int i, std::string_view text) {
  sqlite3_bind_text(st, i, text.data(), int(text.size()), SQLITE_TRANSIENT);
}

void BindBlob(sqlite3_stmt* st, int i, std::span<const std::byte> bytes) {
  // A zero-length blob, not NULL (the columns are NOT NULL).
  if (bytes.empty()) {
    sqlite3_bind_zeroblob(st, i, 0);
  } else {
    sqlite3_bind_blob(st, i, bytes.data(), int(bytes.size()), SQLITE_TRANSIENT);
  }
}

std::string ColumnText(sqlite3_stmt* st, int i) {
  const unsigned char* p = sqlite3_column_text(st, i);
  return p == nullptr ? std::string()
                      : std::string(reinterpret_cast<const char*>(p),
                                    size_t(sqlite3_column_bytes(st, i)));
}

std::vector<std::byte> ColumnBlob(sqlite3_stmt* st, int i) {
  const auto* p = static_cast<const std::byte*>(sqlite3_column_blob(st, i));
  const int n = sqlite3_column_bytes(st, i);
  return p == nullptr ? std::vector<std::byte>()
                      : std::vector<std::byte>(p, p + n);
}

// A statement that lives for one Load() call.
struct Query {
  sqlite3_stmt* st = nullptr;
  ~Query() { sqlite3_finalize(st); }
};

}  // namespace

absl::StatusOr<FsyncPolicy> ParseFsyncPolicy(std::string_view text) {
  if (text == "always") return FsyncPolicy::kAlways;
  if (text == "batch") return FsyncPolicy::kBatch;
  if (text == "never") return FsyncPolicy::kNever;
  return absl::InvalidArgumentError(
      absl::StrCat("fsync policy '", std::string(text),
                   "': expected always, batch or never"));
}

SqliteStore::SqliteStore(const SqliteStoreOptions& options)
    : options_(options), path_(options.data_dir + "/broker.db") {}

SqliteStore::~SqliteStore() {
  if (sync_thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(sync_mu_);
      notify_ = nullptr;  // the Loop may be gone before us
    }
    // Everything logged reaches the disk before we close: wait for the
    // thread's current window, then hand it the last one.
    while (!log_.empty()) {
      {
        std::unique_lock<std::mutex> lock(sync_mu_);
        sync_cv_.wait(lock, [&] { return !busy_; });
      }
      HandOff();
    }
  }
  StopSync();
  for (sqlite3_stmt* st : statements_) sqlite3_finalize(st);
  sqlite3_close(db_);
}

void SqliteStore::set_durable_notifier(std::function<void()> notify) {
  std::lock_guard<std::mutex> lock(sync_mu_);
  notify_ = std::move(notify);
}

void SqliteStore::StopSync() {
  if (sync_thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(sync_mu_);
      sync_stop_ = true;
    }
    sync_cv_.notify_all();
    sync_thread_.join();  // it finishes the window it was handed first
  }
  if (checkpoint_db_ != nullptr) {
    sqlite3_close(checkpoint_db_);
    checkpoint_db_ = nullptr;
  }
  if (wal_fd_ >= 0) {
    ::close(wal_fd_);
    wal_fd_ = -1;
  }
}

void SqliteStore::SyncLoop() {
  if (options_.sync_thread_nice != 0) {
    ::setpriority(PRIO_PROCESS, pid_t(::syscall(SYS_gettid)),
                  options_.sync_thread_nice);
  }
  uint64_t syncs = 0;
  std::vector<std::byte> window;
  std::unique_lock<std::mutex> lock(sync_mu_);
  while (true) {
    sync_cv_.wait(lock, [&] { return sync_stop_ || busy_; });
    if (!busy_) return;  // stopping, and nothing handed off
    window.swap(handed_);
    const uint64_t sequence = handed_sequence_;
    lock.unlock();
    // db_ is ours while busy_ (the Loop touches it only in Load(), before
    // any hand-off); the mutex orders the two threads' uses.
    bool ok = !sync_failed_.load() && ApplyLog(window);
    if (ok && options_.before_sync_for_test) options_.before_sync_for_test();
    // The COMMIT (synchronous=NORMAL) only wrote the WAL; fsync is per
    // file, not per descriptor, so this covers every frame of it.
    if (ok && ::fdatasync(wal_fd_) != 0) ok = false;
    // Checkpoints here too (wal_autocheckpoint=0 on db_); PASSIVE never
    // blocks the writer. With synchronous=NORMAL SQLite syncs the WAL
    // before and the database after copying.
    if (ok && ++syncs % 16 == 0) {
      sqlite3_wal_checkpoint_v2(checkpoint_db_, nullptr,
                                SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    }
    window.clear();  // keeps its capacity: the next hand-off reuses it
    lock.lock();
    handed_.swap(window);  // the buffer goes back for the Loop's next swap
    if (ok) {
      ++thread_commits_;
      // Only now: a sequence is durable once its COMMIT was fdatasynced.
      synced_.store(sequence);
    } else {
      ++thread_errors_;
      if (thread_error_.empty()) {
        thread_error_ = absl::StrCat("commit or fdatasync of the WAL failed: ",
                                     sqlite3_errmsg(db_));
      }
      sync_failed_.store(true);
    }
    busy_ = false;
    if (notify_) notify_();
    sync_cv_.notify_all();
  }
}

bool SqliteStore::ApplyLog(const std::vector<std::byte>& log) {
  auto step = [&](Statement which) {
    sqlite3_stmt* st = statements_[which];
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE;
  };
  if (!step(kBegin)) return false;
  for (size_t at = 0; at < log.size();) {
    LogRecord r;
    std::memcpy(&r, log.data() + at, sizeof r);
    if (r.dead == 0 &&
        ApplyRecord(r, log.data() + at + sizeof(LogRecord)) != SQLITE_DONE) {
      // Nothing of this window is confirmed, and nothing later either
      // (durable_sequence() stops; status() says why).
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return false;
    }
    at += r.size;
  }
  if (!step(kCommit)) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return false;
  }
  return true;
}

int SqliteStore::ApplyRecord(const LogRecord& r, const std::byte* strings) {
  // The strings live in the window's buffer until the statement is reset:
  // SQLITE_STATIC, no copy.
  std::span<const std::byte> field[6];
  for (int i = 0; i < 6; ++i) {
    field[i] = std::span<const std::byte>(strings, r.length[i]);
    strings += r.length[i];
  }
  auto text = [&](sqlite3_stmt* st, int i, int f) {
    sqlite3_bind_text(st, i, reinterpret_cast<const char*>(field[f].data()),
                      int(field[f].size()), SQLITE_STATIC);
  };
  auto blob = [&](sqlite3_stmt* st, int i, int f) {
    if (field[f].empty()) {
      sqlite3_bind_zeroblob(st, i, 0);  // NOT NULL columns
    } else {
      sqlite3_bind_blob(st, i, field[f].data(), int(field[f].size()),
                        SQLITE_STATIC);
    }
  };
  auto run = [&](sqlite3_stmt* st) {
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
  };
  sqlite3_stmt* st = nullptr;
  switch (r.kind) {
    case LogKind::kPutRetained:
      st = statements_[kPutRetained];
      text(st, 1, 0);
      sqlite3_bind_int(st, 2, r.qos);
      blob(st, 3, 1);
      blob(st, 4, 2);
      sqlite3_bind_int64(st, 5, r.expires_wall_ms);
      return run(st);
    case LogKind::kDeleteRetained:
      st = statements_[kDeleteRetained];
      text(st, 1, 0);
      return run(st);
    case LogKind::kPutSession:
      st = statements_[kPutSession];
      text(st, 1, 0);
      sqlite3_bind_int64(st, 2, r.number);
      return run(st);
    case LogKind::kDeleteSession:
      for (Statement which :
           {kDeleteSessionQueued, kClearSessionOrigins, kDeleteSessionInbound,
            kDeleteSessionSubscriptions, kDeleteSession}) {
        st = statements_[which];
        text(st, 1, 0);
        if (const int rc = run(st); rc != SQLITE_DONE) return rc;
      }
      return SQLITE_DONE;
    case LogKind::kPutSubscription:
      st = statements_[kPutSubscription];
      text(st, 1, 0);
      text(st, 2, 1);
      sqlite3_bind_int(st, 3, int(r.number));
      sqlite3_bind_int64(st, 4, r.subscription_id);
      return run(st);
    case LogKind::kDeleteSubscription:
      st = statements_[kDeleteSubscription];
      text(st, 1, 0);
      text(st, 2, 1);
      return run(st);
    case LogKind::kPutQueued:
      st = statements_[kPutQueued];
      text(st, 1, 0);
      text(st, 2, 1);
      sqlite3_bind_int(st, 3, r.message_qos);
      sqlite3_bind_int(st, 4, r.qos);
      sqlite3_bind_int(st, 5, r.retain);
      blob(st, 6, 2);
      blob(st, 7, 3);
      blob(st, 8, 4);  // subscription ids, host order (this host)
      sqlite3_bind_int64(st, 9, r.expires_wall_ms);
      sqlite3_bind_int64(st, 10, int64_t(r.key));
      sqlite3_bind_int(st, 11, r.packet_id);
      sqlite3_bind_int(st, 12, r.released);
      text(st, 13, 5);
      sqlite3_bind_int(st, 14, int(r.number));
      return run(st);
    case LogKind::kDeleteQueued:
      st = statements_[kDeleteQueued];
      sqlite3_bind_int64(st, 1, int64_t(r.key));
      return run(st);
    case LogKind::kUpdateQueued:
      if (r.packet_id != 0) {
        st = statements_[kMarkQueuedSent];
        sqlite3_bind_int64(st, 1, int64_t(r.key));
        sqlite3_bind_int(st, 2, r.packet_id);
        if (const int rc = run(st); rc != SQLITE_DONE) return rc;
      }
      if (r.released != 0) {
        st = statements_[kMarkQueuedReleased];
        sqlite3_bind_int64(st, 1, int64_t(r.key));
        return run(st);
      }
      return SQLITE_DONE;
    case LogKind::kPutInbound:
      st = statements_[kPutInbound];
      text(st, 1, 0);
      sqlite3_bind_int(st, 2, int(r.number));
      return run(st);
    case LogKind::kDeleteInbound:
      // The tags first (SetQueuedOrigin): the copies are kept from now on.
      for (Statement which : {kClearOrigin, kDeleteInbound}) {
        st = statements_[which];
        text(st, 1, 0);
        sqlite3_bind_int(st, 2, int(r.number));
        if (const int rc = run(st); rc != SQLITE_DONE) return rc;
      }
      return SQLITE_DONE;
  }
  return SQLITE_MISUSE;
}

void SqliteStore::Poll() {
  if (!sync_thread_.joinable()) return;
  if (handoff_wanted_) HandOff();
  std::lock_guard<std::mutex> lock(sync_mu_);
  counters_.commits = thread_commits_;
  counters_.write_errors = thread_errors_;
  if (sync_failed_.load()) {
    if (status_.ok()) {
      status_ = absl::InternalError(
          absl::StrCat("store ", path_, ": ", thread_error_));
    }
    return;
  }
  if (status_.ok()) durable_ = std::max(durable_, synced_.load());
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(
    const SqliteStoreOptions& options) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("store: empty data directory");
  }
  if (::mkdir(options.data_dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store: cannot create ", options.data_dir, ": ", std::strerror(errno)));
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(options));
  if (absl::Status s = store->Init(); !s.ok()) return s;
  return store;
}

absl::Status SqliteStore::Exec(const char* sql) {
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
  if (rc == SQLITE_OK) return absl::OkStatus();
  absl::Status s = absl::DataLossError(absl::StrCat(
      "store ", path_, ": ", error != nullptr ? error : sqlite3_errstr(rc)));
  sqlite3_free(error);
  return s;
}

absl::Status SqliteStore::Init() {
  // Once per process, before SQLite initializes: without its allocation
  // statistics SQLite takes no global mutex per malloc (it did per row).
  static const int configured = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)configured;
  int rc = sqlite3_open_v2(
      path_.c_str(), &db_,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store: cannot open ", path_, ": ",
        db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc)));
  }
  // The first statements read the file: a non-database or a damaged header
  // fails here (SQLITE_NOTADB / SQLITE_CORRUPT) and Open() reports it.
  if (absl::Status s = Exec("PRAGMA journal_mode=WAL"); !s.ok()) return s;
  // Other stores may write the same file (SqliteStoreOptions::key_stride):
  // wait for their commits instead of failing.
  if (absl::Status s = Exec(absl::StrCat("PRAGMA busy_timeout=",
                                         std::max(options_.busy_timeout_ms, 0))
                                .c_str());
      !s.ok()) {
    return s;
  }
  // kBatch: COMMIT writes the WAL without fsync; the sync thread makes it
  // durable (see the header).
  const char* sync =
      options_.fsync == FsyncPolicy::kNever   ? "PRAGMA synchronous=OFF"
      : options_.fsync == FsyncPolicy::kBatch ? "PRAGMA synchronous=NORMAL"
                                              : "PRAGMA synchronous=FULL";
  if (absl::Status s = Exec(sync); !s.ok()) return s;
  {
    // A truncated or damaged file that still has a valid header.
    Query q;
    if (sqlite3_prepare_v2(db_, "PRAGMA quick_check", -1, &q.st, nullptr) !=
        SQLITE_OK) {
      return absl::DataLossError(
          absl::StrCat("store ", path_, ": ", sqlite3_errmsg(db_)));
    }
    std::string problems;
    while ((rc = sqlite3_step(q.st)) == SQLITE_ROW) {
      const std::string line = ColumnText(q.st, 0);
      if (line != "ok") absl::StrAppend(&problems, line, "; ");
    }
    if (rc != SQLITE_DONE) {
      return absl::DataLossError(
          absl::StrCat("store ", path_, ": ", sqlite3_errmsg(db_)));
    }
    if (!problems.empty()) {
      return absl::DataLossError(absl::StrCat(
          "store ", path_, " is corrupt (quick_check): ", problems));
    }
  }
  // The version first: CREATE TABLE IF NOT EXISTS leaves a version 1
  // queued table as it is, so it must be migrated before it is used.
  int64_t version = 0;
  if (absl::Status s = Exec(
          "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER "
          "NOT NULL)");
      !s.ok()) {
    return s;
  }
  {
    Query q;
    sqlite3_prepare_v2(db_, "SELECT value FROM meta WHERE key='schema'", -1,
                       &q.st, nullptr);
    if (q.st != nullptr && sqlite3_step(q.st) == SQLITE_ROW) {
      version = sqlite3_column_int64(q.st, 0);
    }
  }
  if (version == 1) {
    if (absl::Status s = Exec(kMigrate1To2); !s.ok()) return s;
    version = 2;
  }
  if (version == 2) {
    if (absl::Status s = Exec(kMigrate2To3); !s.ok()) return s;
  }
  if (absl::Status s = Exec(kSchema); !s.ok()) return s;
  {
    Query q;
    sqlite3_prepare_v2(db_, "SELECT value FROM meta WHERE key='schema'", -1,
                       &q.st, nullptr);
    rc = q.st == nullptr ? SQLITE_ERROR : sqlite3_step(q.st);
    if (rc == SQLITE_ROW) {
      const int64_t v = sqlite3_column_int64(q.st, 0);
      if (v != kSchemaVersion) {
        return absl::FailedPreconditionError(
            absl::StrCat("store ", path_, ": schema version ", v,
                         ", this broker reads ", kSchemaVersion));
      }
    } else if (rc == SQLITE_DONE) {
      if (absl::Status s =
              Exec(absl::StrCat("INSERT INTO meta VALUES('schema',",
                                kSchemaVersion, ")")
                       .c_str());
          !s.ok()) {
        return s;
      }
    } else {
      return absl::DataLossError(
          absl::StrCat("store ", path_, ": ", sqlite3_errmsg(db_)));
    }
  }
  const char* sql[kStatementCount] = {
      "INSERT OR REPLACE INTO retained VALUES(?1,?2,?3,?4,?5)",
      "DELETE FROM retained WHERE topic=?1",
      "INSERT OR REPLACE INTO sessions VALUES(?1,?2)",
      "DELETE FROM sessions WHERE client_id=?1",
      "DELETE FROM subscriptions WHERE client_id=?1",
      "INSERT OR REPLACE INTO subscriptions VALUES(?1,?2,?3,?4)",
      "DELETE FROM subscriptions WHERE client_id=?1 AND filter=?2",
      "INSERT INTO queued(client_id, topic, message_qos, qos, retain, "
      "properties, payload, subscription_ids, expires_wall_ms, id, "
      "packet_id, released, origin_client, origin_pid) "
      "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
      "DELETE FROM queued WHERE id=?1",
      "DELETE FROM queued WHERE client_id=?1",
      "UPDATE queued SET packet_id=?2 WHERE id=?1",
      "UPDATE queued SET released=1 WHERE id=?1",
      "INSERT OR REPLACE INTO inbound_qos2 VALUES(?1,?2)",
      "DELETE FROM inbound_qos2 WHERE client_id=?1 AND packet_id=?2",
      "DELETE FROM inbound_qos2 WHERE client_id=?1",
      // "origin_pid != 0" spelled out: it lets SQLite use the partial index.
      "UPDATE queued SET origin_client='', origin_pid=0 WHERE origin_pid != 0 "
      "AND origin_client=?1 AND origin_pid=?2",
      "UPDATE queued SET origin_client='', origin_pid=0 WHERE origin_pid != 0 "
      "AND origin_client=?1",
      // IMMEDIATE: the write lock is taken (or waited for, busy_timeout)
      // here, not at the first write, where SQLite could refuse a
      // transaction whose snapshot another store's commit made stale.
      "BEGIN IMMEDIATE",
      "COMMIT",
  };
  {
    // Queued keys are ours (explicit row ids, so a message can be written
    // at the commit): above every id AUTOINCREMENT ever gave out.
    Query q;
    sqlite3_prepare_v2(
        db_,
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM queued), 0), "
        "COALESCE((SELECT seq FROM sqlite_sequence WHERE name='queued'), 0))",
        -1, &q.st, nullptr);
    if (q.st == nullptr || sqlite3_step(q.st) != SQLITE_ROW) {
      return absl::DataLossError(
          absl::StrCat("store ", path_, ": ", sqlite3_errmsg(db_)));
    }
    const uint64_t max_key = uint64_t(sqlite3_column_int64(q.st, 0));
    // The first key above max_key that is this store's (key_offset of
    // key_stride): the stores sharing the file never hand out the same one.
    const uint64_t stride = std::max<uint32_t>(options_.key_stride, 1);
    const uint64_t offset = options_.key_offset % stride;
    next_queued_key_ =
        max_key + 1 + (offset + stride - max_key % stride) % stride;
  }
  for (int i = 0; i < kStatementCount; ++i) {
    if (sqlite3_prepare_v3(db_, sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                           &statements_[i], nullptr) != SQLITE_OK) {
      return absl::InternalError(absl::StrCat("store: preparing '", sql[i],
                                              "': ", sqlite3_errmsg(db_)));
    }
  }
  if (options_.fsync == FsyncPolicy::kBatch) {
    // The WAL exists once the schema was written (journal_mode=WAL).
    if (absl::Status s = Exec("PRAGMA wal_autocheckpoint=0"); !s.ok()) {
      return s;
    }
    wal_fd_ = ::open((path_ + "-wal").c_str(), O_RDWR | O_CLOEXEC);
    if (wal_fd_ < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "store: cannot open ", path_, "-wal: ", std::strerror(errno)));
    }
    if (sqlite3_open_v2(path_.c_str(), &checkpoint_db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK ||
        sqlite3_exec(checkpoint_db_,
                     "PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=1000",
                     nullptr, nullptr, nullptr) != SQLITE_OK) {
      return absl::FailedPreconditionError(
          absl::StrCat("store: checkpoint connection to ", path_, ": ",
                       sqlite3_errmsg(checkpoint_db_)));
    }
    sync_thread_ = std::thread([this] { SyncLoop(); });
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::LoadSessions(Broker* broker, Timestamp now,
                                       StoreLoadReport* out) {
  StoreLoadReport& report = *out;
  auto read_error = [&](const char* table) {
    return absl::DataLossError(absl::StrCat("store ", path_, ": reading ",
                                            table, ": ", sqlite3_errmsg(db_)));
  };
  // Before anything is read: the copies of QoS 2 exchanges that never
  // committed (SetQueuedOrigin). Their publisher got no PUBREC, so it sends
  // the PUBLISH again and it is routed afresh; kept, the copies would be
  // delivered a second time. The rule needs no timing: whoever wrote a
  // tagged copy, it counts exactly when its exchange's id is stored.
  {
    Query q;
    if (sqlite3_prepare_v2(
            db_,
            "DELETE FROM queued WHERE origin_pid != 0 AND NOT EXISTS (SELECT "
            "1 FROM inbound_qos2 i WHERE i.client_id = queued.origin_client "
            "AND i.packet_id = queued.origin_pid)",
            -1, &q.st, nullptr) != SQLITE_OK ||
        sqlite3_step(q.st) != SQLITE_DONE) {
      return absl::DataLossError(absl::StrCat(
          "store ", path_,
          ": rolling back uncommitted QoS 2 copies: ", sqlite3_errmsg(db_)));
    }
    report.rolled_back = uint64_t(sqlite3_changes(db_));
  }
  // Sessions first, then their subscriptions (one pass, ordered).
  std::vector<StoredSession> sessions;
  {
    Query q;
    if (sqlite3_prepare_v2(db_,
                           "SELECT client_id, expiry_s FROM sessions ORDER BY "
                           "client_id",
                           -1, &q.st, nullptr) != SQLITE_OK) {
      return read_error("sessions");
    }
    int rc;
    while ((rc = sqlite3_step(q.st)) == SQLITE_ROW) {
      StoredSession& s = sessions.emplace_back();
      s.client_id = ColumnText(q.st, 0);
      s.expiry_interval_s = uint32_t(sqlite3_column_int64(q.st, 1));
    }
    if (rc != SQLITE_DONE) return read_error("sessions");
  }
  {
    Query q;
    if (sqlite3_prepare_v2(db_,
                           "SELECT client_id, filter, options, subscription_id "
                           "FROM subscriptions ORDER BY client_id",
                           -1, &q.st, nullptr) != SQLITE_OK) {
      return read_error("subscriptions");
    }
    size_t at = 0;
    int rc;
    while ((rc = sqlite3_step(q.st)) == SQLITE_ROW) {
      const std::string client = ColumnText(q.st, 0);
      while (at < sessions.size() && sessions[at].client_id < client) ++at;
      if (at == sessions.size() || sessions[at].client_id != client) {
        continue;  // a subscription without its session: not restored
      }
      StoredSubscription& sub = sessions[at].subscriptions.emplace_back();
      sub.filter = ColumnText(q.st, 1);
      sub.options = UnpackOptions(sqlite3_column_int64(q.st, 2));
      sub.subscription_id = uint32_t(sqlite3_column_int64(q.st, 3));
    }
    if (rc != SQLITE_DONE) return read_error("subscriptions");
  }
  {
    Query q;
    if (sqlite3_prepare_v2(db_,
                           "SELECT client_id, id, topic, message_qos, qos, "
                           "retain, properties, payload, subscription_ids, "
                           "expires_wall_ms, packet_id, released FROM queued "
                           "ORDER BY client_id, id",
                           -1, &q.st, nullptr) != SQLITE_OK) {
      return read_error("queued");
    }
    const int64_t wall_ms = WallNowMs();
    size_t at = 0;
    int rc;
    while ((rc = sqlite3_step(q.st)) == SQLITE_ROW) {
      const std::string client = ColumnText(q.st, 0);
      while (at < sessions.size() && sessions[at].client_id < client) ++at;
      if (at == sessions.size() || sessions[at].client_id != client) continue;
      const int64_t expires = sqlite3_column_int64(q.st, 9);
      const bool released = sqlite3_column_int64(q.st, 11) != 0;
      // A released QoS 2 delivery needs only its PUBREL, expired or not.
      if (expires != 0 && expires <= wall_ms && !released) {
        ++report.queued_expired;
        continue;
      }
      StoredQueued& m = sessions[at].queued.emplace_back();
      m.key = uint64_t(sqlite3_column_int64(q.st, 1));
      m.message.topic = ColumnText(q.st, 2);
      m.message.qos = uint8_t(sqlite3_column_int64(q.st, 3) & 3);
      m.qos = uint8_t(sqlite3_column_int64(q.st, 4) & 3);
      m.retain = sqlite3_column_int64(q.st, 5) != 0;
      m.message.properties = ColumnBlob(q.st, 6);
      m.message.payload = ColumnBlob(q.st, 7);
      const std::vector<std::byte> ids = ColumnBlob(q.st, 8);
      m.subscription_ids.resize(ids.size() / sizeof(uint32_t));
      if (!m.subscription_ids.empty()) {
        std::memcpy(m.subscription_ids.data(), ids.data(),
                    m.subscription_ids.size() * sizeof(uint32_t));
      }
      m.message.expires_in_ms =
          expires == 0 ? 0 : uint64_t(std::max<int64_t>(expires - wall_ms, 1));
      m.packet_id = uint16_t(sqlite3_column_int64(q.st, 10));
      m.released = released && m.packet_id != 0;
      if (m.packet_id != 0) ++report.inflight;
    }
    if (rc != SQLITE_DONE) return read_error("queued");
  }
  {
    Query q;
    if (sqlite3_prepare_v2(db_,
                           "SELECT client_id, packet_id FROM inbound_qos2 "
                           "ORDER BY client_id, packet_id",
                           -1, &q.st, nullptr) != SQLITE_OK) {
      return read_error("inbound_qos2");
    }
    size_t at = 0;
    int rc;
    while ((rc = sqlite3_step(q.st)) == SQLITE_ROW) {
      const std::string client = ColumnText(q.st, 0);
      while (at < sessions.size() && sessions[at].client_id < client) ++at;
      if (at == sessions.size() || sessions[at].client_id != client) continue;
      const int64_t id = sqlite3_column_int64(q.st, 1);
      if (id <= 0 || id > 0xFFFF) continue;  // not a packet id
      sessions[at].awaiting_pubrel.push_back(uint16_t(id));
      ++report.awaiting_pubrel;
    }
    if (rc != SQLITE_DONE) return read_error("inbound_qos2");
  }
  for (const StoredSession& s : sessions) {
    report.queued += s.queued.size();
    if (absl::Status st = broker->RestoreSession(s, now); !st.ok()) {
      return st;
    }
    ++report.sessions;
    report.session_ids.push_back(s.client_id);
    report.subscriptions += s.subscriptions.size();
  }
  return absl::OkStatus();
}

absl::StatusOr<StoreLoadReport> SqliteStore::Load(Broker* broker, Timestamp now,
                                                  LoadParts parts) {
  StoreLoadReport report;
  auto read_error = [&](const char* table) {
    return absl::DataLossError(absl::StrCat("store ", path_, ": reading ",
                                            table, ": ", sqlite3_errmsg(db_)));
  };
  if (parts == LoadParts::kAll) {
    if (absl::Status s = LoadSessions(broker, now, &report); !s.ok()) return s;
  }
  {
    Query q;
    if (sqlite3_prepare_v2(db_,
                           "SELECT topic, qos, properties, payload, "
                           "expires_wall_ms FROM retained",
                           -1, &q.st, nullptr) != SQLITE_OK) {
      return read_error("retained");
    }
    const int64_t wall_ms = WallNowMs();
    int rc;
    while ((rc = sqlite3_step(q.st)) == SQLITE_ROW) {
      StoredRetained r;
      r.topic = ColumnText(q.st, 0);
      r.qos = uint8_t(sqlite3_column_int64(q.st, 1) & 3);
      r.properties = ColumnBlob(q.st, 2);
      r.payload = ColumnBlob(q.st, 3);
      const int64_t expires = sqlite3_column_int64(q.st, 4);
      if (expires != 0) {
        if (expires <= wall_ms) {
          ++report.retained_expired;
          continue;
        }
        r.expires_in_ms = uint64_t(expires - wall_ms);
      }
      if (broker->RestoreRetained(r, now)) {
        ++report.retained;
      } else {
        ++report.retained_rejected;
      }
    }
    if (rc != SQLITE_DONE) return read_error("retained");
  }
  return report;
}

void SqliteStore::Fail(const char* what) {
  // From the first error on, durable_ stops: a change that may be lost is
  // never confirmed, so no ack for it goes out (the clients send again after
  // a reconnect; status() says why).
  ++counters_.write_errors;
  if (status_.ok()) {
    status_ = absl::InternalError(
        absl::StrCat("store ", path_, ": ", what, ": ", sqlite3_errmsg(db_)));
  }
}

void SqliteStore::BeginGroup() {
  if (batch() || in_group_ || !status_.ok()) return;
  // If BEGIN fails, the changes commit one by one as without a group.
  in_group_ = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) ==
              SQLITE_OK;
}

void SqliteStore::EndGroup() {
  if (!in_group_) return;
  in_group_ = false;
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    Fail("commit");
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return;
  }
  ++counters_.commits;
  if (status_.ok()) durable_ = written_;
}

void SqliteStore::EndChange(int rc) {
  // kAlways / kNever: each statement commits on its own (autocommit),
  // durable as the policy promises when it returns; inside a group, at
  // EndGroup's COMMIT.
  ++written_;
  if (in_group_) {
    if (rc == SQLITE_DONE) {
      ++counters_.writes;
    } else {
      Fail("write");
    }
    return;
  }
  if (rc == SQLITE_DONE) {
    ++counters_.writes;
    ++counters_.commits;
    if (status_.ok()) durable_ = written_;
  } else {
    Fail("write");
  }
}

bool SqliteStore::batch() const {
  return options_.fsync == FsyncPolicy::kBatch;
}

uint32_t SqliteStore::Append(
    const LogRecord& header,
    std::initializer_list<std::span<const std::byte>> strings) {
  LogRecord r = header;
  size_t bytes = sizeof(LogRecord);
  int i = 0;
  for (std::span<const std::byte> s : strings) {
    r.length[i++] = uint32_t(s.size());
    bytes += s.size();
  }
  r.size = uint32_t((bytes + 7) & ~size_t{7});
  const uint32_t offset = uint32_t(log_.size());
  // resize() on a buffer whose capacity survives the hand-offs (the two
  // buffers swap): no allocation once both have grown to a window.
  log_.resize(offset + r.size);
  std::byte* at = log_.data() + offset;
  new (at) LogRecord(r);  // trivially copyable: the buffer may move it
  at += sizeof r;
  for (std::span<const std::byte> s : strings) {
    if (!s.empty()) std::memcpy(at, s.data(), s.size());
    at += s.size();
  }
  CountLogged();
  return offset;
}

void SqliteStore::CountLogged() {
  // The window opens with its first change: committed at most batch_window
  // later (the driver's tick).
  if (flush_at_ == Timestamp::Never()) {
    flush_at_ = MonotonicNow() + options_.batch_window;
  }
  ++written_;
  ++counters_.writes;
}

void SqliteStore::HandOff() {
  handoff_wanted_ = false;
  if (log_.empty()) return;
  {
    std::lock_guard<std::mutex> lock(sync_mu_);
    if (busy_) {
      // The previous window's commit or fdatasync is still running: this
      // window grows until it is done (group commit under load).
      handoff_wanted_ = true;
      return;
    }
    handed_.swap(log_);  // handed_ was the thread's cleared buffer
    handed_sequence_ = written_;
    busy_ = true;
  }
  sync_cv_.notify_all();
  log_.clear();
  // Not clear(): absl frees a table above 127 slots there, and the index
  // would grow again, allocating, every window.
  for (auto it = log_index_.begin(); it != log_index_.end();) {
    log_index_.erase(it++);
  }
  flush_at_ = Timestamp::Never();
}

void SqliteStore::Flush() {
  if (batch()) HandOff();
  Poll();
}

void SqliteStore::SyncNow() {
  ++counters_.barriers;
  if (!batch()) return;  // each change committed when it was made
  const uint64_t target = written_;
  if (synced_.load() >= target) return;
  const Timestamp start = MonotonicNow();
  while (synced_.load() < target && !sync_failed_.load()) {
    {
      std::unique_lock<std::mutex> lock(sync_mu_);
      sync_cv_.wait(lock, [&] { return !busy_; });
    }
    // Idle now: what is still in log_ is the rest up to target.
    if (synced_.load() >= target || log_.empty()) break;
    HandOff();
  }
  counters_.barrier_wait_ns += uint64_t((MonotonicNow() - start).count());
  Poll();
}

namespace {
// Wall-clock expiry of a message (0: never), for the expires_wall_ms
// columns.
int64_t WallExpiry(const Message& m, Timestamp now) {
  if (m.expires_at() == Timestamp::Never()) return 0;
  const int64_t left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              m.expires_at() - now)
                              .count();
  return WallNowMs() + std::max<int64_t>(left_ms, 1);
}

std::span<const std::byte> Bytes(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}
}  // namespace

uint64_t SqliteStore::PutQueued(std::string_view client_id, const Message& m,
                                uint8_t qos, bool retain,
                                std::span<const uint32_t> subscription_ids,
                                Timestamp now) {
  const uint64_t key = next_queued_key_;
  next_queued_key_ += std::max<uint32_t>(options_.key_stride, 1);
  if (batch()) {
    // Written at the commit only if it is still queued then.
    LogRecord r;
    r.kind = LogKind::kPutQueued;
    r.key = key;
    r.message_qos = m.qos();
    r.qos = qos;
    r.retain = retain ? 1 : 0;
    r.expires_wall_ms = WallExpiry(m, now);
    r.number = origin_packet_id_;
    log_index_[key] = Append(
        r, {Bytes(client_id), Bytes(m.topic()), m.properties(), m.payload(),
            std::as_bytes(subscription_ids), Bytes(origin_client_)});
    return key;
  }
  sqlite3_stmt* st = statements_[kPutQueued];
  BindText(st, 1, client_id);
  BindText(st, 2, m.topic());
  sqlite3_bind_int(st, 3, m.qos());
  sqlite3_bind_int(st, 4, qos);
  sqlite3_bind_int(st, 5, retain ? 1 : 0);
  BindBlob(st, 6, m.properties());
  BindBlob(st, 7, m.payload());
  BindBlob(st, 8, std::as_bytes(subscription_ids));  // host order
  sqlite3_bind_int64(st, 9, WallExpiry(m, now));
  sqlite3_bind_int64(st, 10, int64_t(key));
  sqlite3_bind_int(st, 11, 0);
  sqlite3_bind_int(st, 12, 0);
  BindText(st, 13, origin_client_);
  sqlite3_bind_int(st, 14, origin_packet_id_);
  const int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  EndChange(rc);
  return rc == SQLITE_DONE ? key : 0;
}

void SqliteStore::DeleteQueued(uint64_t key) {
  if (batch()) {
    if (auto it = log_index_.find(key); it != log_index_.end()) {
      LogRecord& r = RecordAt(it->second);
      r.dead = 1;
      log_index_.erase(it);
      if (r.kind == LogKind::kPutQueued) {
        // Acknowledged within its window: never written at all.
        ++counters_.queued_coalesced;
        CountLogged();
        return;
      }
      ++counters_.updates_coalesced;  // the row goes: its update too
    }
    LogRecord r;
    r.kind = LogKind::kDeleteQueued;
    r.key = key;
    Append(r, {});
    return;
  }
  sqlite3_stmt* st = statements_[kDeleteQueued];
  sqlite3_bind_int64(st, 1, int64_t(key));
  EndChange(sqlite3_step(st));
  sqlite3_reset(st);
}

void SqliteStore::MarkQueuedSent(uint64_t key, uint16_t packet_id) {
  if (batch()) {
    if (auto it = log_index_.find(key); it != log_index_.end()) {
      RecordAt(it->second).packet_id = packet_id;  // insert or update
      CountLogged();
      return;
    }
    LogRecord r;
    r.kind = LogKind::kUpdateQueued;
    r.key = key;
    r.packet_id = packet_id;
    log_index_[key] = Append(r, {});
    return;
  }
  sqlite3_stmt* st = statements_[kMarkQueuedSent];
  sqlite3_bind_int64(st, 1, int64_t(key));
  sqlite3_bind_int(st, 2, packet_id);
  EndChange(sqlite3_step(st));
  sqlite3_reset(st);
}

void SqliteStore::MarkQueuedReleased(uint64_t key) {
  if (batch()) {
    if (auto it = log_index_.find(key); it != log_index_.end()) {
      RecordAt(it->second).released = 1;
      CountLogged();
      return;
    }
    LogRecord r;
    r.kind = LogKind::kUpdateQueued;
    r.key = key;
    r.released = 1;
    log_index_[key] = Append(r, {});
    return;
  }
  sqlite3_stmt* st = statements_[kMarkQueuedReleased];
  sqlite3_bind_int64(st, 1, int64_t(key));
  EndChange(sqlite3_step(st));
  sqlite3_reset(st);
}

void SqliteStore::PutInboundQos2(std::string_view client_id,
                                 uint16_t packet_id) {
  if (batch()) {
    LogRecord r;
    r.kind = LogKind::kPutInbound;
    r.number = packet_id;
    Append(r, {Bytes(client_id)});
    return;
  }
  sqlite3_stmt* st = statements_[kPutInbound];
  BindText(st, 1, client_id);
  sqlite3_bind_int(st, 2, packet_id);
  EndChange(sqlite3_step(st));
  sqlite3_reset(st);
}

void SqliteStore::DeleteInboundQos2(std::string_view client_id,
                                    uint16_t packet_id) {
  if (batch()) {
    LogRecord r;
    r.kind = LogKind::kDeleteInbound;
    r.number = packet_id;
    Append(r, {Bytes(client_id)});
    return;
  }
  // The tags go first: a crash between the two autocommits then keeps the
  // copies (the id stays until the client's PUBREL comes again), where the
  // other order would roll back copies of an exchange that was PUBRECed.
  for (Statement which : {kClearOrigin, kDeleteInbound}) {
    sqlite3_stmt* st = statements_[which];
    BindText(st, 1, client_id);
    sqlite3_bind_int(st, 2, packet_id);
    EndChange(sqlite3_step(st));
    sqlite3_reset(st);
  }
}

void SqliteStore::SetQueuedOrigin(std::string_view client_id,
                                  uint16_t packet_id) {
  if (!options_.tag_qos2_origins) return;
  origin_client_.assign(packet_id != 0 ? client_id : std::string_view());
  origin_packet_id_ = packet_id;
}

void SqliteStore::PutRetained(const Message& m, Timestamp now) {
  if (batch()) {
    LogRecord r;
    r.kind = LogKind::kPutRetained;
    r.qos = m.qos();
    r.expires_wall_ms = WallExpiry(m, now);
    Append(r, {Bytes(m.topic()), m.properties(), m.payload()});
    return;
  }
  sqlite3_stmt* st = statements_[kPutRetained];
  BindText(st, 1, m.topic());
  sqlite3_bind_int(st, 2, m.qos());
  BindBlob(st, 3, m.properties());
  BindBlob(st, 4, m.payload());
  sqlite3_bind_int64(st, 5, WallExpiry(m, now));
  EndChange(sqlite3_step(st));
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
}

void SqliteStore::DeleteRetained(std::string_view topic) {
  if (batch()) {
    LogRecord r;
    r.kind = LogKind::kDeleteRetained;
    Append(r, {Bytes(topic)});
    return;
  }
  sqlite3_stmt* st = statements_[kDeleteRetained];
  BindText(st, 1, topic);
  EndChange(sqlite3_step(st));
  sqlite3_reset(st);
}

void SqliteStore::PutSession(std::string_view client_id,
                             uint32_t expiry_interval_s) {
  if (batch()) {
    LogRecord r;
    r.kind = LogKind::kPutSession;
    r.number = expiry_interval_s;
    Append(r, {Bytes(client_id)});
    return;
  }
  sqlite3_stmt* st = statements_[kPutSession];
  BindText(st, 1, client_id);
  sqlite3_bind_int64(st, 2, expiry_interval_s);
  EndChange(sqlite3_step(st));
  sqlite3_reset(st);
}

void SqliteStore::DeleteSession(std::string_view client_id) {
  if (batch()) {
    // Its queued messages of this window need not be written: the record
    // below deletes whatever the session has anyway (the log is applied in
    // order), so this only saves the writes.
    absl::erase_if(log_index_, [&](const auto& entry) {
      LogRecord& r = RecordAt(entry.second);
      const std::string_view owner(
          reinterpret_cast<const char*>(log_.data() + entry.second +
                                        sizeof(LogRecord)),
          r.length[0]);
      if (r.kind != LogKind::kPutQueued || owner != client_id) return false;
      r.dead = 1;
      return true;
    });
    LogRecord r;
    r.kind = LogKind::kDeleteSession;
    Append(r, {Bytes(client_id)});
    return;
  }
  for (Statement which :
       {kDeleteSessionQueued, kClearSessionOrigins, kDeleteSessionInbound,
        kDeleteSessionSubscriptions, kDeleteSession}) {
    sqlite3_stmt* st = statements_[which];
    BindText(st, 1, client_id);
    EndChange(sqlite3_step(st));
    sqlite3_reset(st);
  }
}

void SqliteStore::PutSubscription(std::string_view client_id,
                                  std::string_view filter,
                                  const SubscriptionOptions& options,
                                  uint32_t subscription_id) {
  if (batch()) {
    LogRecord r;
    r.kind = LogKind::kPutSubscription;
    r.number = PackOptions(options);
    r.subscription_id = subscription_id;
    Append(r, {Bytes(client_id), Bytes(filter)});
    return;
  }
  sqlite3_stmt* st = statements_[kPutSubscription];
  BindText(st, 1, client_id);
  BindText(st, 2, filter);
  sqlite3_bind_int(st, 3, PackOptions(options));
  sqlite3_bind_int64(st, 4, subscription_id);
  EndChange(sqlite3_step(st));
  sqlite3_reset(st);
}

void SqliteStore::DeleteSubscription(std::string_view client_id,
                                     std::string_view filter) {
  if (batch()) {
    LogRecord r;
    r.kind = LogKind::kDeleteSubscription;
    Append(r, {Bytes(client_id), Bytes(filter)});
    return;
  }
  sqlite3_stmt* st = statements_[kDeleteSubscription];
  BindText(st, 1, client_id);
  BindText(st, 2, filter);
  EndChange(sqlite3_step(st));
  sqlite3_reset(st);
}

}  // namespace ringlab::mqtt
