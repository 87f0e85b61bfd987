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
// Slack: a timer added with slack S may fire up to S late. Its deadline is
// rounded up to a multiple of the largest power of two (in ns) not above S,
// so timers with nearby deadlines share one wakeup: 10,000 one-second
// keepalives with 100 ms of slack wake a Loop about 15 times a second
// instead of 10,000. Timers fire in the order of their rounded deadlines;
// none ever fires early.
//
// Cancelling is cheap: the heap entry is dropped lazily, except that stale
// entries reaching the top are popped at once (amortised O(log n)), so
// NextDeadline() is an O(1) read of a live entry. Reschedule() moves
// a pending timer to a new deadline without touching its callback (an MQTT
// keepalive pushed back on every packet). Callbacks may add, cancel or
// reschedule timers, including themselves. Ids are never reused.
//
// Memory: below the queue's high-water mark (the most timers ever pending
// at once), Add() with a TimerHandler or a TimerFn, Reschedule() and the
// re-arming of periodic timers never allocate. A callback (AnyInvocable)
// allocates on Add() when its captures exceed AnyInvocable's inline storage
// (about two pointers); a lambda capturing one pointer does not. Handlers
// and TimerFn are the zero-allocation path.
#ifndef RINGLAB_TRANSPORT_TIMER_QUEUE_H_
#define RINGLAB_TRANSPORT_TIMER_QUEUE_H_

#include <cstdint>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "transport/time.h"

namespace ringlab::transport {

// Receives timer expiries without a per-timer closure allocation. Override
// the form with `context` to get the pointer given to Add(); the default
// forwards to the two-argument form.
class TimerHandler {
 public:
  virtual ~TimerHandler() = default;
  virtual void OnTimer(uint64_t timer_id, Timestamp now) {}
  virtual void OnTimer(uint64_t timer_id, Timestamp now, void* context) {
    OnTimer(timer_id, now);
  }
};

// A plain function and a context pointer: the cheapest timer callback.
using TimerFn = void (*)(void* context, uint64_t timer_id, Timestamp now);

class TimerQueue {
 public:
  using Callback = absl::AnyInvocable<void(Timestamp now)>;

  TimerQueue() = default;
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // `period` <= 0 means one-shot; `slack` (>= 0) is how late it may fire.
  // Returns an id, never 0.
  uint64_t Add(Timestamp deadline, Duration period, TimerHandler* handler,
               void* context = nullptr, Duration slack = Duration(0));
  uint64_t Add(Timestamp deadline, Duration period, TimerFn fn, void* context,
               Duration slack = Duration(0));
  uint64_t Add(Timestamp deadline, Duration period, Callback callback,
               Duration slack = Duration(0));
  // True if the timer existed and will not fire again.
  bool Cancel(uint64_t timer_id);
  // Moves a pending timer to fire next at `deadline` (a periodic timer's
  // schedule is then anchored there). False if no such timer is pending.
  bool Reschedule(uint64_t timer_id, Timestamp deadline);
  // O(1): every mutation leaves a live entry on top of the heap.
  Timestamp NextDeadline() const {
    return heap_.empty() ? Timestamp::Never() : heap_.front().deadline;
  }
  // Fires every timer whose deadline <= now. Returns how many fired.
  int RunDue(Timestamp now) {
    // Inline: a busy-polling Loop calls this every iteration, almost always
    // with nothing due.
    if (heap_.empty() || heap_.front().deadline > now) return 0;
    return RunDueSlow(now);
  }
  size_t size() const { return active_; }

 private:
  struct Timer {
    uint64_t id = 0;     // 0: slot free
    Timestamp deadline;  // the requested one
    Timestamp fire_at;   // deadline rounded up by the slack
    Duration period{0};
    int64_t granularity_ns = 0;  // from the slack; 0: exact
    TimerHandler* handler = nullptr;
    TimerFn fn = nullptr;
    void* context = nullptr;
    Callback callback;
  };
  struct HeapEntry {
    Timestamp deadline;  // Timer::fire_at when pushed
    uint64_t sequence;   // FIFO among equal deadlines
    uint32_t slot;
    uint64_t id;  // stale if slots_[slot].id != id or its fire_at moved
  };
  static bool Later(const HeapEntry& a, const HeapEntry& b);
  static int64_t GranularityFor(Duration slack);
  static Timestamp RoundUp(Timestamp t, int64_t granularity_ns);
  uint64_t Insert(Timestamp deadline, Duration period, Duration slack);
  void Push(uint32_t slot);
  // Drops stale entries off the top; called after every change so the top
  // is always live.
  void PopStale();
  int RunDueSlow(Timestamp now);
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
