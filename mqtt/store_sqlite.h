// SqliteStore: the embedded default BrokerStore, one SQLite database in WAL
// mode under --data-dir (no server to run). Why SQLite and not our own
// journal: mqtt/README.md, "Durable state".
//
//   SqliteStoreOptions o;
//   o.data_dir = "/var/lib/ringlab";
//   o.fsync = FsyncPolicy::kBatch;  o.batch_window = 10ms;
//   absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(o);
//   absl::StatusOr<StoreLoadReport> loaded = (*store)->Load(&broker, now);
//   broker.set_store(store->get());
//   // On the Loop: when now >= NextFlushDeadline(), call Flush(), then
//   // broker.OnStoreDurable(now) to send the acks the commit covers.
//
// The fsync policy, and what each risks:
// - kAlways: every change is its own transaction, committed with
//   synchronous=FULL (the WAL is fsynced before the call returns). Nothing
//   acknowledged is lost to a crash or a power cut; one fsync per change.
// - kBatch: changes gather in one open transaction, committed at most
//   `batch_window` after the first (group commit); the commit's WAL frames
//   are fdatasynced by the store's sync thread (below). A queued message
//   is kept in memory until the commit and written then, so one that is
//   acknowledged within its window costs no write at all
//   (counters().queued_coalesced). The broker holds the PUBACK/PUBREC/
//   PUBCOMP of a packet that changed the store until that commit is synced
//   (durable_sequence()), so a kill -9 or power cut loses only changes
//   nobody was told about (the clients send them again), never an
//   acknowledged message, and never corrupts. The cost: acks of stored
//   messages wait up to `batch_window` plus the sync, plus one tick.
// - kNever: every change is committed at once but never fsynced
//   (synchronous=OFF): a kill -9 loses nothing (the kernel holds the
//   writes), a power cut or kernel crash may lose recent changes or, per
//   SQLite's documentation, corrupt the database.
//
// kBatch and the Loop: COMMIT itself only writes the WAL (synchronous=
// NORMAL); a sync thread of the store fdatasyncs the WAL file and runs the
// checkpoints (PASSIVE, on its own connection), so the Loop never waits for
// the disk. A commit counts as durable (durable_sequence()) once a
// fdatasync that began after it has returned; Poll() takes that in.
//
// Errors: Open() fails (never silently starts empty) when the directory
// cannot be used, the file is not a database or fails PRAGMA quick_check
// (corrupt or truncated), or its schema is from an unknown version. SQLite
// itself drops a torn WAL tail (frames whose checksum does not match) at
// open; Load() reports what it found. A write that fails later is counted
// and the first such error kept in status(); the broker keeps running, but
// durable_sequence() stops there, so acks of stored messages are held from
// then on (nothing that may be lost is confirmed).
// Ownership: owns its sqlite3 handles (and, kBatch, its sync thread).
// Threading: every method on one thread (the Loop's).
#ifndef RINGLAB_MQTT_STORE_SQLITE_H_
#define RINGLAB_MQTT_STORE_SQLITE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mqtt/store.h"
#include "transport/time.h"

struct sqlite3;
struct sqlite3_stmt;

namespace ringlab::mqtt {

class Broker;

enum class FsyncPolicy : uint8_t { kAlways, kBatch, kNever };

// "always", "batch" or "never".
absl::StatusOr<FsyncPolicy> ParseFsyncPolicy(std::string_view text);

struct SqliteStoreOptions {
  std::string data_dir;  // created if missing; holds broker.db (+ -wal)
  FsyncPolicy fsync = FsyncPolicy::kBatch;
  Duration batch_window = std::chrono::milliseconds(10);
};

struct SqliteStoreCounters {
  uint64_t writes = 0;        // changes applied
  uint64_t commits = 0;       // transactions committed
  uint64_t write_errors = 0;  // changes SQLite refused (see status())
  // kBatch: queued messages acknowledged (or dropped) within the window
  // they were queued in, so never written at all; and in-flight updates
  // (packet id, PUBREL sent) of rows deleted within the same window.
  uint64_t queued_coalesced = 0;
  uint64_t updates_coalesced = 0;
};

class SqliteStore : public BrokerStore {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(
      const SqliteStoreOptions& options);
  ~SqliteStore() override;  // commits what is pending

  // Restores everything stored into `broker` (which must not have a store
  // set yet, so nothing is written back). Errors: DataLoss if a row cannot
  // be read (corruption found while reading).
  absl::StatusOr<StoreLoadReport> Load(Broker* broker, Timestamp now);

  // kBatch: when the open transaction must be committed; Never otherwise.
  Timestamp NextFlushDeadline() const { return flush_at_; }
  // kBatch: takes in what the sync thread made durable since the last call
  // (durable_sequence() advances here and in Flush()). Call it on every
  // batch tick, then Broker::OnStoreDurable.
  void Poll();
  // Commits the open transaction (if any).
  void Flush();

  // The first write error, or OK.
  const absl::Status& status() const { return status_; }
  const SqliteStoreCounters& counters() const { return counters_; }
  const std::string& path() const { return path_; }

  // BrokerStore
  void PutRetained(const Message& message, Timestamp now) override;
  void DeleteRetained(std::string_view topic) override;
  void PutSession(std::string_view client_id,
                  uint32_t expiry_interval_s) override;
  void DeleteSession(std::string_view client_id) override;
  void PutSubscription(std::string_view client_id, std::string_view filter,
                       const SubscriptionOptions& options,
                       uint32_t subscription_id) override;
  void DeleteSubscription(std::string_view client_id,
                          std::string_view filter) override;
  uint64_t PutQueued(std::string_view client_id, const Message& message,
                     uint8_t qos, bool retain,
                     std::span<const uint32_t> subscription_ids,
                     Timestamp now) override;
  void DeleteQueued(uint64_t key) override;
  void MarkQueuedSent(uint64_t key, uint16_t packet_id) override;
  void MarkQueuedReleased(uint64_t key) override;
  void PutInboundQos2(std::string_view client_id, uint16_t packet_id) override;
  void DeleteInboundQos2(std::string_view client_id,
                         uint16_t packet_id) override;
  uint64_t written_sequence() const override { return written_; }
  uint64_t durable_sequence() const override { return durable_; }

 private:
  explicit SqliteStore(const SqliteStoreOptions& options);
  absl::Status Init();
  absl::Status Exec(const char* sql);
  // Before a change: opens the batch transaction if needed.
  void BeginChange();
  // After a change: commits it (kAlways/kNever) or schedules the commit.
  void EndChange(int rc);
  void Fail(const char* what);
  // Counts a change that needs no statement (kept in pending_queued_).
  void CountBuffered();

  SqliteStoreOptions options_;
  std::string path_;
  sqlite3* db_ = nullptr;
  enum Statement {
    kPutRetained,
    kDeleteRetained,
    kPutSession,
    kDeleteSession,
    kDeleteSessionSubscriptions,
    kPutSubscription,
    kDeleteSubscription,
    kPutQueued,
    kDeleteQueued,
    kDeleteSessionQueued,
    kMarkQueuedSent,
    kMarkQueuedReleased,
    kPutInbound,
    kDeleteInbound,
    kDeleteSessionInbound,
    kBegin,
    kCommit,
    kStatementCount,
  };
  sqlite3_stmt* statements_[kStatementCount] = {};
  bool in_transaction_ = false;
  // kBatch: queued messages not written yet, by key (written at Flush).
  struct PendingQueued {
    std::string client_id;
    std::string topic;
    uint8_t message_qos = 0;
    uint8_t qos = 0;
    bool retain = false;
    std::vector<std::byte> properties;
    std::vector<std::byte> payload;
    std::vector<uint32_t> subscription_ids;
    int64_t expires_wall_ms = 0;
    uint16_t packet_id = 0;
    bool released = false;
  };
  absl::flat_hash_map<uint64_t, PendingQueued> pending_queued_;
  // kBatch: in-flight state of rows already written (key -> packet id,
  // with kReleasedBit for PUBREL sent), applied at Flush unless the row is
  // deleted first (the subscriber's ack usually comes within the window).
  static constexpr uint32_t kReleasedBit = 1u << 16;
  absl::flat_hash_map<uint64_t, uint32_t> pending_sent_;
  // Binds and runs kPutQueued for one row; the SQLite result code.
  int WritePendingQueued(uint64_t key, const PendingQueued& row);
  uint64_t last_queued_key_ = 0;  // keys are ours: explicit row ids
  // kBatch sync thread (SyncLoop): fdatasyncs the WAL up to a commit.
  void SyncLoop();
  void StopSync();
  int wal_fd_ = -1;
  sqlite3* checkpoint_db_ = nullptr;  // the sync thread's connection
  std::thread sync_thread_;
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  uint64_t sync_requested_ = 0;  // guarded by sync_mu_
  bool sync_stop_ = false;       // guarded by sync_mu_
  std::atomic<uint64_t> synced_{0};
  std::atomic<bool> sync_failed_{false};
  uint64_t written_ = 0;  // changes made (BrokerStore::written_sequence)
  uint64_t durable_ = 0;  // of them, committed
  Timestamp flush_at_ = Timestamp::Never();
  absl::Status status_;
  SqliteStoreCounters counters_;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_STORE_SQLITE_H_
