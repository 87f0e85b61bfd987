// Counting-allocator test for the per-message checks issue 12 adds to the
// hot path: ACL decisions (FileAuthenticator::MayPublish / MayReceive, with
// user rules, patterns and deny lines) and token buckets allocate nothing.
//
// This binary links testing/counting_allocator, which replaces the global
// operator new; it counts only between Start() and Stop().
#include <cstdlib>
#include <new>
#include <vector>

#include "gtest/gtest.h"
#include "mqtt/acl.h"
#include "mqtt/auth.h"
#include "mqtt/rate_limit.h"
#include "testing/counting_allocator.h"

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
  counting_allocator::Start();
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
  const size_t allocations = counting_allocator::Stop();
  EXPECT_EQ(allocations, 0u);
  // 6 of the 8 checks allow, every time.
  EXPECT_EQ(allowed, 1000u * 6);
}

}  // namespace
}  // namespace ringlab::mqtt
