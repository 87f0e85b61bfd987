// LoopCounters: what one Loop did, so a report can explain *why* a backend is
// faster or slower (kernel entries and batching), not just that it is.
//
//   const LoopCounters& c = loop.counters();
//   double entries_per_message = double(c.kernel_entries()) / messages;
//
// Counters are plain integers updated on the Loop's thread; read them there
// (or after the Loop stopped). `Delta()` subtracts a snapshot, so a benchmark
// can exclude its warm-up.
#ifndef RINGLAB_TRANSPORT_COUNTERS_H_
#define RINGLAB_TRANSPORT_COUNTERS_H_

#include <cstdint>
#include <string>

#include "absl/functional/function_ref.h"

namespace ringlab::transport {

struct LoopCounters {
  // Kernel entries, by kind. `io_uring_enter` counts only real syscalls (a
  // submit that SQPOLL picked up without a wakeup is not one).
  uint64_t io_uring_enter = 0;
  uint64_t epoll_wait = 0;
  uint64_t socket_syscalls = 0;  // recv*/send*/accept/connect on the data path
  // Work done.
  uint64_t submissions = 0;  // SQEs queued (io_uring) / ops started (epoll)
  uint64_t completions = 0;  // CQEs reaped / emulated completions
  uint64_t loop_iterations = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t datagrams_received = 0;
  uint64_t datagrams_sent = 0;
  uint64_t timers_fired = 0;
  // Provided buffer ring: receives that found the ring empty (ENOBUFS), and
  // multishot operations armed again after the kernel ended them.
  uint64_t buffer_ring_misses = 0;
  uint64_t multishot_rearms = 0;
  // Receives dropped because the pool had no buffer (epoll / plain uring).
  uint64_t pool_exhausted = 0;
  uint64_t send_partial = 0;      // stream sends that wrote only part
  uint64_t send_would_block = 0;  // EAGAIN on send (epoll)
  uint64_t zero_copy_sends = 0;
  uint64_t zero_copy_copied = 0;  // SEND_ZC notifications saying "copied"
  uint64_t receive_errors = 0;
  // Datagrams longer than a pool buffer: dropped, reported as
  // OnError(-EMSGSIZE) (also counted in receive_errors).
  uint64_t datagrams_truncated = 0;
  uint64_t sqpoll_wakeups = 0;
  uint64_t submission_queue_full = 0;  // io_uring SQ full: flushed early
  // io_uring SQ still full after flushing: the operations wait for the next
  // iteration (it used to abort the process).
  uint64_t submission_queue_stuck = 0;
  // epoll fairness: a socket used its reads for this iteration and was put
  // on the ready list to read on in the next one.
  uint64_t read_budget_yields = 0;
  // Accepts refused for lack of descriptors: the process limit
  // (RLIMIT_NOFILE, EMFILE), the system file table (ENFILE) or kernel memory
  // (ENOBUFS/ENOMEM). The listener backs off and retries (accept_retries);
  // OnError(-errno) reports the first of each episode.
  uint64_t accept_fd_limit = 0;
  uint64_t accept_system_limit = 0;
  uint64_t accept_retries = 0;
  // Connections accepted and closed at once because the Loop's socket table
  // (LoopOptions::max_sockets) was full; each reported as OnError(-EMFILE).
  uint64_t accept_socket_table_full = 0;
  // Backpressure: Send/SendTo refused with -EAGAIN because the socket's
  // queue was at its limit, or because the Loop's send budget (buffers held
  // by all send queues) was spent; and OnWritable calls that followed.
  uint64_t send_refused_queue_full = 0;
  uint64_t send_refused_budget = 0;
  uint64_t writable_notifications = 0;
  // uring-fixed family: ring buffers copied into pool buffers by Send()
  // because a quarter of the ring already sat in send queues, and ring
  // buffers handed back later than LoopOptions::receive_hold_limit.
  uint64_t ring_buffers_copied_for_send = 0;
  uint64_t receive_buffers_held_long = 0;
  // Receives kicked (cancelled and armed afresh) on streams whose send had
  // failed and whose end was still unread after 20 ms (see loop_core.cc).
  uint64_t receive_kicks = 0;
  // Receives that completed while their socket was paused (a cancellation
  // still on its way, the rest of a batch): held with their buffers and
  // delivered on ResumeReceive.
  uint64_t receives_held = 0;
  // Socket buffer sizes (UdpOptions/TcpOptions) the kernel granted less of
  // than asked (capped by net.core.rmem_max/wmem_max without privilege).
  uint64_t socket_buffers_clamped = 0;
  // SO_RXQ_OVFL (UdpOptions::receive_drop_count): datagrams the kernel
  // dropped because a socket's receive queue was full.
  uint64_t receive_queue_drops = 0;
  // UDP GSO: sends that carried several datagrams, the datagrams they
  // carried, and sockets where the kernel refused GSO (it was turned off).
  uint64_t gso_sends = 0;
  uint64_t gso_datagrams = 0;
  uint64_t gso_refused = 0;
  // Bounded wait batching (min_wait_batching): enters that waited for a
  // completion beyond the datagram sends they submitted, and those whose
  // window passed with nothing but the sends completing (the reply, if any,
  // came later; the sends were dispatched at the window's end).
  uint64_t batched_waits = 0;
  uint64_t batched_wait_expired = 0;
  // Hybrid presets: loop iterations that polled instead of sleeping because
  // a reply was due, and spins that ended (the window passed) without one.
  uint64_t hybrid_spins = 0;
  uint64_t hybrid_spin_misses = 0;

  uint64_t kernel_entries() const {
    return io_uring_enter + epoll_wait + socket_syscalls;
  }
  LoopCounters Delta(const LoopCounters& earlier) const;
  // Adds another Loop's counters (a figure over several Loops).
  LoopCounters& operator+=(const LoopCounters& other);
  // Calls fn(name, value) for every counter, in declaration order, so
  // writers (JSON, logs) never miss a newly added one.
  void ForEach(
      absl::FunctionRef<void(const char* name, uint64_t value)> fn) const;
  // "key=value" pairs on one line, for logs.
  std::string ToString() const;
};

}  // namespace ringlab::transport

#endif  // RINGLAB_TRANSPORT_COUNTERS_H_
