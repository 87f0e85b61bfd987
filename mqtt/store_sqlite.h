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
// - kBatch: changes gather in a window, committed at most `batch_window`
//   after its first (group commit) by the store's sync thread (below). A
//   queued message stays in the window's change log until the hand-off, so
//   one that is acknowledged within its window costs no write at all
//   (counters().queued_coalesced). The broker holds the PUBACK/PUBREC/
//   PUBCOMP/SUBACK/UNSUBACK of a packet that changed the store until that
//   commit is synced (durable_sequence()), so a kill -9 or power cut loses
//   only changes nobody was told about (the clients send them again),
//   never an acknowledged message, and never corrupts. The cost: acks of
//   stored messages wait for the window plus its commit and sync.
// - kNever: every change is committed at once but never fsynced
//   (synchronous=OFF): a kill -9 loses nothing (the kernel holds the
//   writes), a power cut or kernel crash may lose recent changes or, per
//   SQLite's documentation, corrupt the database.
//
// kBatch and the Loop: the Loop only appends each change to a change log
// (a reused buffer); Flush() hands the window to the sync thread (a buffer
// swap), which applies it in one transaction, COMMITs (synchronous=NORMAL:
// the WAL is written, not synced), fdatasyncs the WAL and runs the
// checkpoints (PASSIVE, on its own connection). The Loop never runs SQLite
// after Load() nor waits for the disk. A window counts as durable
// (durable_sequence()) once its fdatasync has returned; Poll() takes that
// in. If the thread is still busy at Flush(), the window grows until the
// next Flush()/Poll() (SqliteStoreOptions::sync_thread_nice lets the Loop
// keep a CPU they share).
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
// Threading: every method on one thread (the Loop's); kBatch's sync thread
// uses the handles only while it holds a window (the Loop only in Load(),
// before any). set_durable_notifier's callback runs on the sync thread.
#ifndef RINGLAB_MQTT_STORE_SQLITE_H_
#define RINGLAB_MQTT_STORE_SQLITE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <span>
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
  // kBatch: the sync thread's nice value (0: the Loop's). Above 0 the
  // Loop keeps the CPU they share under load; the windows then grow and
  // more queued messages are acknowledged before their commit (so never
  // written), at the cost of acks held longer.
  int sync_thread_nice = 0;
  // Several stores on one data_dir (the multi-Loop broker: one per Loop,
  // each on its own thread): store `key_offset` of `key_stride` hands out
  // only the queued keys k with (k - 1) % key_stride == key_offset, so the
  // keys of all of them are unique in the one database. SQLite orders their
  // transactions (each BEGIN IMMEDIATE waits, up to busy_timeout_ms, for
  // the write lock another store holds while it applies and commits).
  uint32_t key_stride = 1;
  uint32_t key_offset = 0;
  int busy_timeout_ms = 10'000;
  // SetQueuedOrigin is honoured (the multi-Loop broker sets it): queued
  // records carry the QoS 2 exchange they copy. Off, they never do; the
  // tags a database already holds are still cleared and rolled back.
  bool tag_qos2_origins = false;
  // Tests only: kBatch, called on the sync thread after a window's COMMIT
  // and before its fdatasync (a test blocks it to see that nothing is
  // confirmed in between).
  std::function<void()> before_sync_for_test;
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
  // SyncNow() calls, and how long the Loop waited in them.
  uint64_t barriers = 0;
  uint64_t barrier_wait_ns = 0;
};

// What Load() restores.
enum class LoadParts : uint8_t {
  kAll,           // sessions (with everything queued) and retained messages
  kRetainedOnly,  // another Loop of a multi-Loop broker: the sessions go to
                  // the first Loop, every Loop holds the retained set
};

class SqliteStore : public BrokerStore {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(
      const SqliteStoreOptions& options);
  ~SqliteStore() override;  // commits what is pending

  // Restores everything stored (or only the retained messages) into
  // `broker` (which must not have a store set yet, so nothing is written
  // back); the report names the sessions restored. Errors: DataLoss if a
  // row cannot be read (corruption found while reading).
  absl::StatusOr<StoreLoadReport> Load(Broker* broker, Timestamp now,
                                       LoadParts parts = LoadParts::kAll);

  // kBatch: when the open transaction must be committed; Never otherwise.
  Timestamp NextFlushDeadline() const { return flush_at_; }
  // kBatch: takes in what the sync thread made durable since the last call
  // (durable_sequence() advances here and in Flush()). Call it on every
  // batch tick, then Broker::OnStoreDurable.
  void Poll();
  // kAlways/kNever: nothing to do. kBatch: hands the window's changes to
  // the sync thread, which applies, commits and fdatasyncs them; if the
  // thread is still busy with the previous window the hand-off waits for
  // the next Flush() or Poll() (the window grows, nothing blocks).
  void Flush();
  // A barrier: returns once every change made so far is committed (and
  // synced, as the policy says), blocking this thread for the window's
  // commit (kBatch; kAlways and kNever commit each change at once, outside
  // a group). The multi-Loop broker calls it before a session (or the
  // news that it ended) leaves this Loop, so that the changes this Loop
  // made to its rows are in the database before the next Loop's, which
  // commit through another store on the same file. Returns at once after
  // a write error (status()).
  void SyncNow();
  // kBatch: called on the sync thread after each commit is synced (and
  // after a failure), so the Loop can Poll() at once instead of at its next
  // tick (e.g. a Loop::Post). Set before the first change; the store's
  // destructor stops calling it.
  void set_durable_notifier(std::function<void()> notify);

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
  void SetQueuedOrigin(std::string_view client_id, uint16_t packet_id) override;
  uint64_t written_sequence() const override { return written_; }
  uint64_t durable_sequence() const override { return durable_; }
  // kAlways / kNever: one transaction (BEGIN ... COMMIT) for the group;
  // durable_sequence() covers its changes once COMMIT returns. kBatch:
  // nothing to do (the window is one transaction).
  void BeginGroup() override;
  void EndGroup() override;

 private:
  explicit SqliteStore(const SqliteStoreOptions& options);
  absl::Status Init();
  // Load()'s sessions part: reads them and restores them into `broker`.
  absl::Status LoadSessions(Broker* broker, Timestamp now,
                            StoreLoadReport* report);
  absl::Status Exec(const char* sql);
  bool batch() const;
  // kAlways/kNever, after a change: it committed (autocommit) or failed.
  void EndChange(int rc);
  void Fail(const char* what);

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
    kClearOrigin,
    kClearSessionOrigins,
    kBegin,
    kCommit,
    kStatementCount,
  };
  sqlite3_stmt* statements_[kStatementCount] = {};
  // kBatch change log: the Loop serializes each change into log_ (a reused
  // buffer, so no allocation per change once it has grown) and the sync
  // thread applies a whole window with prepared statements (ApplyLog), so
  // the Loop never runs SQLite after Load(). Records are 8-aligned LogRecord
  // headers followed by their strings.
  enum class LogKind : uint8_t {
    kPutRetained,
    kDeleteRetained,
    kPutSession,
    kDeleteSession,
    kPutSubscription,
    kDeleteSubscription,
    kPutQueued,
    kDeleteQueued,
    kUpdateQueued,
    kPutInbound,
    kDeleteInbound,
  };
  struct LogRecord {
    uint32_t size = 0;  // header + strings, rounded up to 8
    LogKind kind = LogKind::kPutSession;
    uint8_t dead = 0;  // coalesced away before the hand-off
    uint8_t qos = 0;
    uint8_t message_qos = 0;
    uint8_t retain = 0;
    uint8_t released = 0;    // kPutQueued / kUpdateQueued: PUBREL went out
    uint16_t packet_id = 0;  // kUpdateQueued: 0 leaves it as it is
    // expiry_s, packed options or packet id; kPutQueued: the origin's
    // packet id (SetQueuedOrigin), its client id the sixth string
    uint32_t number = 0;
    uint64_t key = 0;  // queued key
    uint32_t subscription_id = 0;
    uint32_t length[6] = {};  // the strings that follow, in order
    int64_t expires_wall_ms = 0;
  };
  // Appends a record with `strings` after it; returns its offset in log_.
  uint32_t Append(const LogRecord& header,
                  std::initializer_list<std::span<const std::byte>> strings);
  LogRecord& RecordAt(uint32_t offset) {
    return *std::launder(reinterpret_cast<LogRecord*>(log_.data() + offset));
  }
  // Counts a change of the window (kBatch).
  void CountLogged();
  // kBatch: hands log_ to the sync thread if it is idle.
  void HandOff();
  // On the sync thread: applies one window; false on the first failure.
  bool ApplyLog(const std::vector<std::byte>& log);
  int ApplyRecord(const LogRecord& r, const std::byte* strings);
  std::vector<std::byte> log_;
  // key -> offset of the window's kPutQueued or kUpdateQueued for it, so an
  // update patches it and a delete drops it (the subscriber's ack usually
  // comes within the window: counters().queued_coalesced/updates_coalesced).
  absl::flat_hash_map<uint64_t, uint32_t> log_index_;
  bool handoff_wanted_ = false;   // Flush() found the thread busy
  uint64_t next_queued_key_ = 1;  // keys are ours: explicit row ids
  // SetQueuedOrigin's exchange (origin_packet_id_ 0: none).
  std::string origin_client_;
  uint16_t origin_packet_id_ = 0;
  // kBatch sync thread (SyncLoop): applies, commits, fdatasyncs a window.
  void SyncLoop();
  void StopSync();
  int wal_fd_ = -1;
  sqlite3* checkpoint_db_ = nullptr;  // the sync thread's connection
  std::thread sync_thread_;
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  // Guarded by sync_mu_: the window handed off (the thread owns it while
  // busy_), the sequence it covers, and what the thread reports back.
  std::vector<std::byte> handed_;
  uint64_t handed_sequence_ = 0;
  bool busy_ = false;
  bool sync_stop_ = false;
  uint64_t thread_commits_ = 0;
  uint64_t thread_errors_ = 0;
  std::string thread_error_;  // the first failure
  std::function<void()> notify_;
  // The last sequence committed and synced (the thread stores, Poll reads).
  std::atomic<uint64_t> synced_{0};
  std::atomic<bool> sync_failed_{false};
  uint64_t written_ = 0;   // changes made (BrokerStore::written_sequence)
  uint64_t durable_ = 0;   // of them, committed
  bool in_group_ = false;  // kAlways/kNever: inside BeginGroup's BEGIN
  Timestamp flush_at_ = Timestamp::Never();
  absl::Status status_;
  SqliteStoreCounters counters_;
};

}  // namespace ringlab::mqtt

#endif  // RINGLAB_MQTT_STORE_SQLITE_H_
