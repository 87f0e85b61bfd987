// Counting-allocator test for the per-message checks issue 12 adds to the
// hot path: ACL decisions (FileAuthenticator::MayPublish / MayReceive, with
// user rules, patterns and deny lines) and token buckets allocate nothing.
//
// This binary replaces the global operator new; the counter runs only
// while `g_counting` is set.
#include <cstdlib>
#include <new>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/acl.h"
#include "mqtt/auth.h"
#include "mqtt/rate_limit.h"

#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {
bool g_counting = false;
size_t g_allocations = 0;
}  // namespace

void* operator new(size_t n) {
  if (g_counting) ++g_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  if (g_counting) ++g_allocations;
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](size_t n, const std::nothrow_t& t) noexcept {
  return operator new(n, t);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace ringlab::mqtt {
namespace {

TEST(AclAlloc, ChecksAllocateNothing) {
  FileAuthenticator::Options o;
  o.acl = *AclFile::Parse(
      "topic read public/#\n"
      "user alice\ntopic readwrite sensors/#\ntopic deny sensors/secret\n"
      "pattern readwrite devices/%c/#\npattern read users/%u/+\n");
  FileAuthenticator auth(std::move(o));
  const ClientIdentity alice{"dev1", "alice"};
  const ClientIdentity anon{"dev2", std::nullopt};
  TokenBucket bucket(1e6, 1e6);
  Timestamp now = Timestamp::FromNanos(1);
  size_t allowed = 0;
  g_counting = true;
  for (int i = 0; i < 1000; ++i) {
    allowed += auth.MayPublish(alice, "sensors/t1");
    allowed += auth.MayReceive(alice, "sensors/secret");
    allowed += auth.MayReceive(alice, "devices/dev1/x");
    allowed += auth.MayReceive(alice, "users/alice/inbox");
    allowed += auth.MayReceive(anon, "public/news");
    allowed += auth.MayPublish(anon, "public/news");
    allowed += auth.MaySubscribe(alice, "sensors/+");
    now += std::chrono::microseconds(1);
    allowed += bucket.TryTake(1, now);
  }
  g_counting = false;
  EXPECT_EQ(g_allocations, 0u);
  // 6 of the 8 checks allow, every time.
  EXPECT_EQ(allowed, 1000u * 6);
}

TEST(AclAlloc, CounterSeesAnAllocation) {
  g_allocations = 0;
  g_counting = true;
  // A vector, not a lone int: release builds may elide a new/delete pair.
  auto* v = new std::vector<int>(100);
  g_counting = false;
  delete v;
  EXPECT_GE(g_allocations, 2u);
}

}  // namespace
}  // namespace ringlab::mqtt
