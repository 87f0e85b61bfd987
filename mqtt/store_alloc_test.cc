// The --fsync=batch store's calling side does not allocate per change: in a
// steady state of equal windows, PutQueued / MarkQueuedSent / DeleteQueued
// and the hand-off at Flush() only reuse the change log's buffers and the
// index's table. Counts operator new on every thread; SQLite on the sync
// thread allocates with malloc, which is not counted (store.h: a store may
// allocate where it writes; this is about the Loop's side).
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/message.h"
#include "mqtt/store_sqlite.h"
#include "testing/counting_allocator.h"

namespace ringlab::mqtt {
namespace {

std::span<const std::byte> AsBytes(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

TEST(SqliteStoreAlloc, BatchChangesAndHandOffsDoNotAllocate) {
  char tmpl[] = "/tmp/ringlab_store_alloc_test.XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  {
    SqliteStoreOptions o;
    o.data_dir = dir;
    o.fsync = FsyncPolicy::kBatch;
    absl::StatusOr<std::unique_ptr<SqliteStore>> opened = SqliteStore::Open(o);
    ASSERT_TRUE(opened.ok()) << opened.status();
    SqliteStore& store = **opened;
    MessagePool pool;
    MessageRef m =
        pool.Create("bench/p1", 1, false, {}, AsBytes(std::string(64, 'x')),
                    Timestamp::Never(), kNoPublisher);
    store.PutSession("sub", 600);
    std::vector<uint64_t> keys(400);
    // One window: 400 messages queued and sent; half acknowledged within
    // it (coalesced), half in the next window (a DELETE record, and the
    // update of the written row dropped with it).
    auto window = [&](std::vector<uint64_t>& previous) {
      for (size_t i = 0; i < keys.size(); ++i) {
        keys[i] = store.PutQueued("sub", *m, 1, false, {}, Timestamp{});
        store.MarkQueuedSent(keys[i], uint16_t(i + 1));
      }
      for (size_t i = 0; i < keys.size(); i += 2) store.DeleteQueued(keys[i]);
      for (size_t i = 1; i < previous.size(); i += 2) {
        store.DeleteQueued(previous[i]);
      }
      previous = keys;  // no allocation: same size after the first
      store.Flush();
      for (int i = 0;
           i < 5000 && store.durable_sequence() < store.written_sequence();
           ++i) {
        ::usleep(1000);
        store.Poll();
      }
    };
    std::vector<uint64_t> previous;
    previous.reserve(keys.size());
    for (int i = 0; i < 4; ++i) window(previous);  // the buffers grow
    counting_allocator::Start();
    for (int i = 0; i < 20; ++i) window(previous);
    EXPECT_EQ(counting_allocator::Stop(), 0u);
    EXPECT_EQ(store.durable_sequence(), store.written_sequence());
    EXPECT_TRUE(store.status().ok()) << store.status();
    EXPECT_GT(store.counters().queued_coalesced, 0u);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ringlab::mqtt
