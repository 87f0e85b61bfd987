#include "transport/timer_queue.h"

#include <algorithm>
#include <utility>

namespace ringlab::transport {

// An id is a unique serial number shifted left, with the slot index in the
// low bits: Cancel() finds the slot in O(1), and because the serial never
// repeats, a stale id cannot cancel a timer that later reused its slot.
namespace {
constexpr int kSlotBits = 22;
constexpr uint64_t kSlotMask = (uint64_t{1} << kSlotBits) - 1;
}  // namespace

bool TimerQueue::Later(const HeapEntry& a, const HeapEntry& b) {
  if (a.deadline != b.deadline) return a.deadline > b.deadline;
  return a.sequence > b.sequence;
}

// The largest power of two (in ns) not above the slack: deadlines rounded up
// to it land on shared boundaries, so nearby timers wake the Loop once.
int64_t TimerQueue::GranularityFor(Duration slack) {
  const int64_t ns = slack.count();
  if (ns <= 1) return 0;
  int64_t g = 1;
  while (g <= ns / 2) g *= 2;
  return g;
}

Timestamp TimerQueue::RoundUp(Timestamp t, int64_t granularity_ns) {
  if (granularity_ns == 0 || t.is_never()) return t;
  const int64_t ns = t.nanos();
  int64_t rem = ns % granularity_ns;
  if (rem < 0) rem += granularity_ns;
  if (rem == 0) return t;
  return t + Duration(granularity_ns - rem);
}

uint64_t TimerQueue::Add(Timestamp deadline, Duration period,
                         TimerHandler* handler, void* context, Duration slack) {
  const uint64_t id = Insert(deadline, period, slack);
  Timer& t = slots_[id & kSlotMask];
  t.handler = handler;
  t.context = context;
  return id;
}

uint64_t TimerQueue::Add(Timestamp deadline, Duration period, TimerFn fn,
                         void* context, Duration slack) {
  const uint64_t id = Insert(deadline, period, slack);
  Timer& t = slots_[id & kSlotMask];
  t.fn = fn;
  t.context = context;
  return id;
}

uint64_t TimerQueue::Add(Timestamp deadline, Duration period, Callback callback,
                         Duration slack) {
  const uint64_t id = Insert(deadline, period, slack);
  slots_[id & kSlotMask].callback = std::move(callback);
  return id;
}

uint64_t TimerQueue::Insert(Timestamp deadline, Duration period,
                            Duration slack) {
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Timer& t = slots_[slot];
  t.id = (next_id_++ << kSlotBits) | slot;
  t.deadline = deadline;
  t.period = period;
  t.granularity_ns = GranularityFor(slack);
  t.fire_at = RoundUp(deadline, t.granularity_ns);
  t.handler = nullptr;
  t.fn = nullptr;
  t.context = nullptr;
  t.callback = nullptr;
  ++active_;
  Push(slot);
  return t.id;
}

void TimerQueue::Push(uint32_t slot) {
  heap_.push_back(
      HeapEntry{slots_[slot].fire_at, next_sequence_++, slot, slots_[slot].id});
  std::push_heap(heap_.begin(), heap_.end(), Later);
}

bool TimerQueue::Cancel(uint64_t timer_id) {
  if (timer_id == 0) return false;
  const uint64_t slot = timer_id & kSlotMask;
  if (slot >= slots_.size()) return false;
  Timer& t = slots_[slot];
  if (t.id != timer_id) return false;
  // The heap entry stays and is discarded when it reaches the top, or when
  // stale entries outnumber live ones (a timer re-armed over and over behind
  // an earlier one would otherwise grow the heap without bound). Compacting
  // in place keeps the vector within its high-water capacity.
  if (++stale_entries_ > heap_.size() / 2 + 16) {
    Compact(timer_id);
  }
  t.id = 0;
  t.handler = nullptr;
  t.fn = nullptr;
  t.context = nullptr;
  t.callback = nullptr;
  free_slots_.push_back(static_cast<uint32_t>(slot));
  --active_;
  // Keep the heap top live so NextDeadline() is a plain read: the Loop asks
  // for it on every iteration (hundreds of times per round trip when busy
  // polling), far more often than timers change.
  PopStale();
  return true;
}

bool TimerQueue::Reschedule(uint64_t timer_id, Timestamp deadline) {
  if (timer_id == 0) return false;
  const uint64_t slot = timer_id & kSlotMask;
  if (slot >= slots_.size()) return false;
  Timer& t = slots_[slot];
  if (t.id != timer_id) return false;
  const Timestamp fire_at = RoundUp(deadline, t.granularity_ns);
  t.deadline = deadline;
  if (fire_at == t.fire_at) return true;  // same wakeup: nothing to move
  t.fire_at = fire_at;
  // The old heap entry goes stale (its time no longer matches fire_at).
  if (++stale_entries_ > heap_.size() / 2 + 16) Compact(0);
  Push(static_cast<uint32_t>(slot));
  PopStale();  // the old entry may have been the top
  return true;
}

void TimerQueue::Compact(uint64_t dying_id) {
  size_t keep = 0;
  for (const HeapEntry& e : heap_) {
    const Timer& t = slots_[e.slot];
    if (e.id != dying_id && t.id == e.id && t.fire_at == e.deadline) {
      heap_[keep++] = e;
    }
  }
  heap_.resize(keep);
  std::make_heap(heap_.begin(), heap_.end(), Later);
  stale_entries_ = 0;
}

void TimerQueue::PopStale() {
  while (!heap_.empty()) {
    const HeapEntry& top = heap_.front();
    const Timer& t = slots_[top.slot];
    if (t.id == top.id && t.fire_at == top.deadline) return;
    std::pop_heap(heap_.begin(), heap_.end(), Later);
    heap_.pop_back();
    if (stale_entries_ > 0) --stale_entries_;
  }
}

int TimerQueue::RunDueSlow(Timestamp now) {
  int fired = 0;
  // Entries pushed while running (a callback re-adding itself at `now`) get a
  // later sequence, so one pass cannot loop forever on a zero-delay timer:
  // stop at the sequence number in force when we started.
  const uint64_t sequence_limit = next_sequence_;
  while (true) {
    PopStale();
    if (heap_.empty()) break;
    const HeapEntry top = heap_.front();
    if (top.deadline > now) break;
    std::pop_heap(heap_.begin(), heap_.end(), Later);
    heap_.pop_back();
    // A callback below may ask NextDeadline(): the new top must be live.
    PopStale();
    if (top.sequence >= sequence_limit) {
      // Added during this pass: it waits for the next pass, but must not
      // block timers behind it that were already due.
      deferred_.push_back(top);
      continue;
    }
    Timer& t = slots_[top.slot];
    const uint64_t id = t.id;
    const bool periodic = t.period.count() > 0;
    if (periodic) {
      // Anchor to the schedule, skipping periods we were too late for.
      Timestamp next = t.deadline + t.period;
      if (next <= now) {
        const int64_t behind = (now - t.deadline).count();
        const int64_t periods = behind / t.period.count() + 1;
        next = t.deadline + Duration(periods * t.period.count());
      }
      t.deadline = next;
      t.fire_at = RoundUp(next, t.granularity_ns);
      Push(top.slot);
    }
    ++fired;
    // Copy what we call: the callback may cancel this timer or add others,
    // which can reallocate slots_.
    if (t.handler != nullptr || t.fn != nullptr) {
      TimerHandler* handler = t.handler;
      TimerFn fn = t.fn;
      void* context = t.context;
      if (!periodic) {
        t.id = 0;
        t.handler = nullptr;
        t.fn = nullptr;
        t.context = nullptr;
        free_slots_.push_back(top.slot);
        --active_;
      }
      if (handler != nullptr) {
        handler->OnTimer(id, now, context);
      } else {
        fn(context, id, now);
      }
    } else {
      Callback callback = std::move(t.callback);
      if (!periodic) {
        t.id = 0;
        free_slots_.push_back(top.slot);
        --active_;
        callback(now);
      } else {
        callback(now);
        // Put it back unless the callback cancelled (or re-used) the slot.
        if (slots_[top.slot].id == id) {
          slots_[top.slot].callback = std::move(callback);
        }
      }
    }
  }
  for (const HeapEntry& e : deferred_) {
    heap_.push_back(e);
    std::push_heap(heap_.begin(), heap_.end(), Later);
  }
  deferred_.clear();
  // A deferred entry cancelled later in the pass is stale.
  PopStale();
  return fired;
}

}  // namespace ringlab::transport
