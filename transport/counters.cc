#include "transport/counters.h"

#include "absl/strings/str_cat.h"

namespace ringlab::transport {

// One list drives Delta(), operator+=, ForEach() and ToString() so a new
// counter cannot be forgotten in one of them.
// clang-format off
#define RINGLAB_COUNTER_FIELDS(X) \
  X(io_uring_enter)               \
  X(epoll_wait)                   \
  X(socket_syscalls)              \
  X(submissions)                  \
  X(completions)                  \
  X(loop_iterations)              \
  X(bytes_received)               \
  X(bytes_sent)                   \
  X(datagrams_received)           \
  X(datagrams_sent)               \
  X(timers_fired)                 \
  X(buffer_ring_misses)           \
  X(multishot_rearms)             \
  X(pool_exhausted)               \
  X(send_partial)                 \
  X(send_would_block)             \
  X(zero_copy_sends)              \
  X(zero_copy_copied)             \
  X(receive_errors)               \
  X(datagrams_truncated)          \
  X(sqpoll_wakeups)               \
  X(submission_queue_full)        \
  X(submission_queue_stuck)       \
  X(read_budget_yields)           \
  X(accept_fd_limit)              \
  X(accept_system_limit)          \
  X(accept_retries)               \
  X(accept_socket_table_full)     \
  X(send_refused_queue_full)      \
  X(send_refused_budget)          \
  X(writable_notifications)       \
  X(ring_buffers_copied_for_send) \
  X(receive_buffers_held_long)    \
  X(receive_kicks)                \
  X(receives_held)                \
  X(socket_buffers_clamped)       \
  X(receive_queue_drops)          \
  X(gso_sends)                    \
  X(gso_datagrams)                \
  X(gso_refused)                  \
  X(batched_waits)                \
  X(batched_wait_expired)         \
  X(hybrid_spins)                 \
  X(hybrid_spin_misses)
// clang-format on

LoopCounters LoopCounters::Delta(const LoopCounters& earlier) const {
  LoopCounters d;
#define RINGLAB_SUB(f) d.f = f - earlier.f;
  RINGLAB_COUNTER_FIELDS(RINGLAB_SUB)
#undef RINGLAB_SUB
  return d;
}

LoopCounters& LoopCounters::operator+=(const LoopCounters& other) {
#define RINGLAB_ADD(f) f += other.f;
  RINGLAB_COUNTER_FIELDS(RINGLAB_ADD)
#undef RINGLAB_ADD
  return *this;
}

void LoopCounters::ForEach(
    absl::FunctionRef<void(const char* name, uint64_t value)> fn) const {
#define RINGLAB_VISIT(f) fn(#f, f);
  RINGLAB_COUNTER_FIELDS(RINGLAB_VISIT)
#undef RINGLAB_VISIT
}

std::string LoopCounters::ToString() const {
  std::string out;
#define RINGLAB_FMT(f) \
  absl::StrAppend(&out, out.empty() ? "" : " ", #f, "=", f);
  RINGLAB_COUNTER_FIELDS(RINGLAB_FMT)
#undef RINGLAB_FMT
  return out;
}

}  // namespace ringlab::transport
