#include "testing/counting_allocator.h"

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "gtest/gtest.h"

// The replacement new allocates with malloc and its delete frees with free;
// GCC cannot see that the pair matches once both are inlined into a caller.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<bool> g_counting{false};
std::atomic<size_t> g_allocations{0};

void CountOne() {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
}
}  // namespace

namespace ringlab::counting_allocator {

void Start() {
  g_allocations.store(0, std::memory_order_relaxed);
  g_counting.store(true, std::memory_order_seq_cst);
}
size_t Stop() {
  g_counting.store(false, std::memory_order_seq_cst);
  return g_allocations.load(std::memory_order_relaxed);
}
bool Counting() { return g_counting.load(std::memory_order_relaxed); }
size_t Count() { return g_allocations.load(std::memory_order_relaxed); }

}  // namespace ringlab::counting_allocator

void* operator new(size_t n) {
  CountOne();
  // malloc(0) may return null; operator new must not.
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  CountOne();
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](size_t n, const std::nothrow_t& t) noexcept {
  return operator new(n, t);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

// Every binary that links the counter runs these, so a counter that counts
// nothing (an allocation path it does not replace, or calls it misses on
// another thread) fails there instead of passing every zero-allocation
// check. Direct calls, not new-expressions: the compiler may elide a
// new-expression's allocation in a release build.
TEST(CountingAllocator, CountsEveryReplacedOperatorNew) {
  ringlab::counting_allocator::Start();
  void* a = ::operator new(64);
  void* b = ::operator new[](64);
  void* c = ::operator new(64, std::nothrow);
  void* d = ::operator new[](64, std::nothrow);
  const size_t allocations = ringlab::counting_allocator::Stop();
  ::operator delete(a);
  ::operator delete[](b);
  ::operator delete(c);
  ::operator delete[](d);
  EXPECT_EQ(allocations, 4u);
  void* e = ::operator new(64);  // not counted: counting is off
  ::operator delete(e);
  EXPECT_EQ(ringlab::counting_allocator::Count(), 4u);
}

TEST(CountingAllocator, CountsAllocationsOnAnotherThread) {
  // The thread is started before counting (std::thread allocates its state
  // on the caller), then allocates once when told to.
  std::atomic<bool> go{false};
  std::thread t([&go] {
    while (!go.load()) std::this_thread::yield();
    ::operator delete(::operator new(64));
  });
  ringlab::counting_allocator::Start();
  go.store(true);
  t.join();
  EXPECT_EQ(ringlab::counting_allocator::Stop(), 1u);
}
