// A counting global operator new for allocation tests: the hot path must not
// allocate per message, and a test proves it by counting operator new calls
// across steady-state traffic.
//
//   #include "testing/counting_allocator.h"
//   ringlab::counting_allocator::Start();
//   for (...) broker.OnBytes(...);
//   EXPECT_EQ(ringlab::counting_allocator::Stop(), 0u);
//
// Linking `ringlab_counting_allocator` (an object library) into a test binary
// replaces the global operator new / new[] (throwing and nothrow) and their
// deletes for the whole binary, so link it only into a binary of its own:
// every allocation of every test in it goes through malloc and is counted
// while counting is on. The binary also gets the counter's self-tests
// (CountingAllocator.*), which prove that it counts.
//
// Threading: the counter and the switch are atomics (relaxed), so calls on
// other threads (a second Loop, a store thread) count too. Start/Stop are
// meant to be called from one thread.
#ifndef RINGLAB_TESTING_COUNTING_ALLOCATOR_H_
#define RINGLAB_TESTING_COUNTING_ALLOCATOR_H_

#include <cstddef>

namespace ringlab::counting_allocator {

// Sets the count to zero and starts counting.
void Start();
// Stops counting and returns the calls counted since Start().
size_t Stop();
// Whether counting is on (for a test's own hooks, e.g. OpenSSL's allocator).
bool Counting();
// The calls counted since the last Start(), so far.
size_t Count();

}  // namespace ringlab::counting_allocator

#endif  // RINGLAB_TESTING_COUNTING_ALLOCATOR_H_
