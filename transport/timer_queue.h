// TimerQueue: one-shot and periodic timers ordered by deadline.
//
// The Loop owns one and fires it with its cached `now`; it is also usable on
// its own (the simulated network's virtual clock drives one in tests).
//
//   TimerQueue timers;
//   uint64_t id = timers.Add(now + std::chrono::milliseconds(5), Duration(0),
//                            [](Timestamp fired_at) { ... });
//   timers.Cancel(id);                       // true: it will not fire
//   Timestamp next = timers.NextDeadline();  // Timestamp::Never() when empty
//   timers.RunDue(now);                      // fires everything due, in order
//
// Ordering: timers fire in deadline order; equal deadlines fire in the order
// they were added. A periodic timer stays anchored to its first deadline
// (deadline_k = first + k * period), so it does not drift; if the caller was
// late by several periods, it fires once and skips the missed ones.
//
// Cancelling is O(1) (the heap entry is dropped lazily). Callbacks may add or
// cancel timers, including themselves. Ids are never reused.
// Memory: Add() with a TimerHandler allocates only when the queue grows past
// its previous high-water mark.
#ifndef RINGLAB_TRANSPORT_TIMER_QUEUE_H_
#define RINGLAB_TRANSPORT_TIMER_QUEUE_H_

#include <cstdint>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "transport/time.h"

namespace ringlab::transport {

// Receives timer expiries without a per-timer closure allocation.
class TimerHandler {
 public:
  virtual ~TimerHandler() = default;
  virtual void OnTimer(uint64_t timer_id, Timestamp now) = 0;
};

class TimerQueue {
 public:
  using Callback = absl::AnyInvocable<void(Timestamp now)>;

  TimerQueue() = default;
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // `period` <= 0 means one-shot. Returns an id, never 0.
  uint64_t Add(Timestamp deadline, Duration period, TimerHandler* handler);
  uint64_t Add(Timestamp deadline, Duration period, Callback callback);
  // True if the timer existed and will not fire again.
  bool Cancel(uint64_t timer_id);
  Timestamp NextDeadline() const;
  // Fires every timer whose deadline <= now. Returns how many fired.
  int RunDue(Timestamp now);
  size_t size() const { return active_; }

 private:
  struct Timer {
    uint64_t id = 0;  // 0: slot free
    Timestamp deadline;
    Duration period{0};
    TimerHandler* handler = nullptr;
    Callback callback;
  };
  struct HeapEntry {
    Timestamp deadline;
    uint64_t sequence;  // FIFO among equal deadlines
    uint32_t slot;
    uint64_t id;  // stale if slots_[slot].id != id
  };
  static bool Later(const HeapEntry& a, const HeapEntry& b);
  uint64_t Insert(Timestamp deadline, Duration period, TimerHandler* handler,
                  Callback callback);
  void Push(uint32_t slot);
  void PopStale();
  void Compact(uint64_t dying_id);

  std::vector<Timer> slots_;
  std::vector<uint32_t> free_slots_;
  std::vector<HeapEntry> heap_;
  std::vector<HeapEntry> deferred_;  // added during RunDue, fire next pass
  size_t stale_entries_ = 0;         // cancelled entries still in heap_
  uint64_t next_id_ = 1;
  uint64_t next_sequence_ = 0;
  size_t active_ = 0;
};

}  // namespace ringlab::transport

#endif  // RINGLAB_TRANSPORT_TIMER_QUEUE_H_
