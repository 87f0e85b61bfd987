// The io_uring backends: uring, uring-fixed, uring-sqpoll, uring-busy,
// uring-hybrid.
//
// One class serves every io_uring preset; PresetFlags decide which features
// are used, and each feature is set up exactly as the flag says or setup
// fails (no silent downgrade).
//
// Why we drive io_uring_enter ourselves instead of io_uring_submit_and_wait:
// counting kernel entries exactly is part of the product (reports explain
// *why* a preset is faster), and liburing decides internally whether a call
// enters the kernel. We publish the SQ tail and call io_uring_enter2 with the
// flags we chose, so every entry is one counted syscall, and each loop
// iteration submits and waits in a single entry.
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "liburing.h"
#include "transport/internal/loop_core.h"

// Kernel 6.0+ constants that liburing 2.3's header may lack.
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

namespace ringlab::transport::internal {
namespace {

// user_data layout: [op:8][buffer:24][socket id:32].
enum Op : uint8_t {
  kOpWakeup = 1,
  kOpRecv,           // stream receive (single-shot or multishot)
  kOpRecvMsg,        // UDP receive (single-shot or multishot)
  kOpRecvConnected,  // connected UDP, multishot recv: no recvmsg header
  kOpStreamSend,     // one stream send / sendmsg / write_fixed
  kOpStreamSendZc,   // SEND_ZC on a stream: result CQE, then a notification
  kOpDatagramSend,   // one datagram; its SendOp index in the middle field
  kOpDatagramGso,    // a UDP GSO send: the chain starts at Socket::gso_head
  kOpAccept,
  kOpConnect,
  kOpShutdown,
  kOpCancel,
  // Cross-Loop notification (loop_channel.h): a CQE another Loop posted with
  // IORING_OP_MSG_RING, which only ends our wait; and the failure CQE of
  // one we sent (success skips it), whose low 56 bits are the MsgRingSender.
  kOpMsgRing,
  kOpMsgRingSent,
};

constexpr uint64_t Encode(Op op, uint32_t buffer, uint32_t socket) {
  return (static_cast<uint64_t>(op) << 56) |
         (static_cast<uint64_t>(buffer & 0xffffff) << 32) | socket;
}
constexpr Op DecodeOp(uint64_t data) { return static_cast<Op>(data >> 56); }
constexpr uint32_t DecodeBuffer(uint64_t data) {
  return static_cast<uint32_t>((data >> 32) & 0xffffff);
}
constexpr uint32_t DecodeSocket(uint64_t data) {
  return static_cast<uint32_t>(data);
}

constexpr uint16_t kBufferGroup = 0;
constexpr uint32_t kKickCancel = 1;  // kOpCancel of a KickReceive
constexpr int kCqeBatch = 64;
constexpr int kRegisteredRingFlag = 1;  // liburing's INT_FLAG_REG_RING
constexpr int kSqFullRetries = 64;

// Calls `fn` (a liburing call returning 0 or -errno) and, while it fails
// with ENOMEM, again after a doubling pause from 5 ms, for up to a second in
// all. Memlock charges of rings whose process just exited are released
// asynchronously, so an ENOMEM right after another process ended often
// passes on a retry (ring setup and buffer registration both meet it).
template <typename Fn>
int RetryWhileEnomem(Fn fn) {
  int ret = fn();
  Duration slept(0);
  for (Duration pause = std::chrono::milliseconds(5);
       ret == -ENOMEM && slept < std::chrono::seconds(1); pause *= 2) {
    std::this_thread::sleep_for(pause);
    slept += pause;
    ret = fn();
  }
  return ret;
}

absl::Status UringError(absl::string_view what, int negative_errno) {
  const int err = -negative_errno;
  std::string message = absl::StrCat(what, ": ", std::strerror(err));
  if (err == ENOMEM) {
    return absl::ResourceExhaustedError(absl::StrCat(
        message,
        ". The memlock limit (RLIMIT_MEMLOCK, charged per user without "
        "CAP_IPC_LOCK) is probably too low; raise it with `ulimit -l` or "
        "shrink the pool."));
  }
  if (err == EPERM) {
    return absl::PermissionDeniedError(absl::StrCat(
        message, ". Check kernel.io_uring_disabled and the seccomp profile."));
  }
  if (err == EINVAL || err == EOPNOTSUPP) {
    return absl::FailedPreconditionError(
        absl::StrCat(message, ". The kernel lacks this io_uring feature."));
  }
  return absl::InternalError(message);
}

class UringBackend final : public LoopCore, public BufferRecycler {
 public:
  ~UringBackend() override {
    if (ring_ready_ && memlock_charged_ > 0) {
      // Unregistering releases the memlock charge now; left to
      // io_uring_queue_exit, the kernel releases it some time later from a
      // work queue, and a Loop (or process) created right after could find
      // the limit still taken (issue 6, fault 5).
      io_uring_unregister_buffers(&ring_);
      internal::MemlockRelease(memlock_charged_);
      memlock_charged_ = 0;
    }
    if (ring_ready_) io_uring_queue_exit(&ring_);
    if (buf_ring_ != nullptr) munmap(buf_ring_, buf_ring_bytes_);
  }

  absl::Status InitBackend() override {
    const PresetFlags& f = info.flags;
    io_uring_params params;
    std::memset(&params, 0, sizeof(params));
    // Multishot receives can post many CQEs per SQE: give the CQ headroom.
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = std::max<uint32_t>(options_.queue_depth * 8, 1024);
    if (f.defer_taskrun) {
      // SINGLE_ISSUER binds the ring to one task. Created disabled, it binds
      // when enabled, which Bind() does on the thread that first runs the
      // Loop: creating a Loop on one thread and running it on another works.
      // TASKRUN_FLAG makes the kernel set IORING_SQ_TASKRUN when deferred
      // work is pending, so a poll (timeout 0) or a spin enters only when
      // there is something to complete.
      params.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                      IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED;
    }
    if (f.sqpoll) {
      params.flags |= IORING_SETUP_SQPOLL;
      params.sq_thread_idle = options_.sqpoll_idle_ms;
      if (options_.sqpoll_cpu >= 0) {
        params.flags |= IORING_SETUP_SQ_AFF;
        params.sq_thread_cpu = static_cast<uint32_t>(options_.sqpoll_cpu);
      }
    }
    // The kernel's limit on SQ entries; beyond it setup fails with a bare
    // EINVAL, which would read like a missing feature.
    constexpr uint32_t kMaxQueueDepth = 32768;
    if (options_.queue_depth == 0 || options_.queue_depth > kMaxQueueDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("LoopOptions::queue_depth (", options_.queue_depth,
                       ") must be in 1..", kMaxQueueDepth, " for io_uring"));
    }
    // The rings' memory is charged like the pool (below): ENOMEM here can
    // be the charge of a ring whose process just exited, which the kernel
    // releases asynchronously, so retry for up to a second as RegisterPool
    // does. (Seen in CI: MemlockBackToBackProcesses, the second process's
    // ring setup failed right after the first one exited.)
    const io_uring_params requested = params;
    int ret = RetryWhileEnomem([&] {
      params = requested;  // the kernel writes into it, also on failure
      return io_uring_queue_init_params(options_.queue_depth, &ring_, &params);
    });
    if (ret < 0) return UringError("io_uring_queue_init_params", ret);
    ring_ready_ = true;

    if (f.registered_files) {
      ret = io_uring_register_files_sparse(&ring_, options_.max_sockets);
      if (ret == -EMFILE) {
        rlimit limit{};
        ::getrlimit(RLIMIT_NOFILE, &limit);
        return absl::ResourceExhaustedError(absl::StrCat(
            "io_uring_register_files_sparse(", options_.max_sockets,
            "): the fixed-file table exceeds RLIMIT_NOFILE (soft ",
            limit.rlim_cur, ", hard ", limit.rlim_max,
            "). Fix: raise it (`ulimit -n`, LimitNOFILE= in systemd) or "
            "lower LoopOptions::max_sockets"));
      }
      if (ret < 0) return UringError("io_uring_register_files_sparse", ret);
    }
    if (f.registered_buffers) {
      absl::Status s = RegisterPool();
      if (!s.ok()) return s;
    }
    if (f.provided_buffers) {
      absl::Status s = SetUpBufferRing();
      if (!s.ok()) return s;
    }
    send_with_address_ = ProbeCapabilities().send_with_address;
    if (io_uring_probe* probe = io_uring_get_probe_ring(&ring_)) {
      msg_ring_ = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0;
      io_uring_free_probe(probe);
    }
    ArmWakeup();
    return absl::OkStatus();
  }

  // The whole pool is one registered buffer (index 0); any address range
  // inside it can be used by a *_FIXED op. Without CAP_IPC_LOCK the kernel
  // charges its pages to the user's RLIMIT_MEMLOCK. Loop::Create checked that
  // this process's Loops leave room, so an ENOMEM here means the rest of the
  // limit is charged elsewhere: to other processes of the same user, or to
  // rings of processes that just exited, whose charge the kernel releases
  // asynchronously. The latter passes, so retry for up to a second.
  absl::Status RegisterPool() {
    iovec region{pool->region(), pool->region_bytes()};
    int ret = RetryWhileEnomem(
        [&] { return io_uring_register_buffers(&ring_, &region, 1); });
    if (ret == -ENOMEM) {
      const Capabilities caps = CurrentCapabilities();
      return absl::ResourceExhaustedError(absl::StrCat(
          "io_uring_register_buffers(", pool->region_bytes(),
          " bytes): ENOMEM after retrying for 1 s. RLIMIT_MEMLOCK is ",
          caps.memlock_limit_bytes, " bytes and is charged per user (uid ",
          getuid(), "), not per pool; this process's Loops hold ",
          caps.memlock_charged_bytes, " bytes (", caps.memlock_charged_loops,
          " Loops), so the rest is charged to other processes of this user. "
          "Fix: raise the limit (`ulimit -l unlimited`, LimitMEMLOCK= in "
          "systemd, `--ulimit memlock=-1:-1` in docker), grant "
          "CAP_IPC_LOCK, or shrink the pool (LoopOptions::buffer_count / "
          "buffer_size)."));
    }
    if (ret < 0) return UringError("io_uring_register_buffers", ret);
    if (!CurrentCapabilities().cap_ipc_lock) {
      memlock_charged_ = MemlockPagesBytes(pool->region_bytes());
      internal::MemlockCharge(memlock_charged_);
    }
    return absl::OkStatus();
  }

  // BufferRecycler: a lease of a ring buffer ended; give it back to the
  // kernel at once so the ring never runs dry while buffers sit idle.
  void Recycle(uint32_t index) override {
    // The rule for the provided ring (loop.h): copy out or hand back fast.
    // Count the buffers that were held for longer.
    const int64_t lent = pool->slot(index).lent_at_ns;
    if (lent != 0 && now.nanos() - lent > options_.receive_hold_limit.count()) {
      ++counters.receive_buffers_held_long;
    }
    pool->slot(index).lent_at_ns = 0;
    io_uring_buf_ring_add(buf_ring_, pool->BufferAddress(index),
                          static_cast<unsigned>(pool->slot_bytes()),
                          static_cast<unsigned short>(index),
                          io_uring_buf_ring_mask(buf_ring_entries_), 0);
    io_uring_buf_ring_advance(buf_ring_, 1);
    ++ring_available_;
  }

 protected:
  absl::Status RegisterSocket(Socket& s) override {
    if (!info.flags.registered_files) return absl::OkStatus();
    int fd = s.fd;
    const int ret = io_uring_register_files_update(&ring_, SlotOf(s), &fd, 1);
    if (ret < 0) return UringError("io_uring_register_files_update", ret);
    return absl::OkStatus();
  }

  void UnregisterSocket(Socket& s) override {
    if (!info.flags.registered_files) return;
    int fd = -1;
    io_uring_register_files_update(&ring_, SlotOf(s), &fd, 1);
  }

  void ArmReceive(Socket& s) override {
    if (s.receive_armed || s.closing) return;
    switch (s.kind) {
      case SocketKind::kListener:
        ArmAccept(s);
        break;
      case SocketKind::kUdp:
        ArmDatagramReceive(s);
        break;
      case SocketKind::kStream:
        if (s.connected && !s.read_closed) ArmStreamReceive(s);
        break;
      case SocketKind::kFree:
        break;
    }
  }

  void RearmStarved(Socket& s) override {
    if (s.closing || s.receive_armed || s.receive_paused) return;
    if (info.flags.provided_buffers && s.kind != SocketKind::kListener &&
        ring_available_ == 0) {
      // Still empty: re-arming now would only fail again with ENOBUFS.
      MarkStarved(s);
      return;
    }
    ArmReceive(s);
  }

  void RetryAccept(Socket& listener) override {
    if (!listener.receive_armed && !listener.closing) ArmAccept(listener);
  }

  // Pausing cancels the armed receive (its CQEs up to the cancellation are
  // still delivered); nothing re-arms it until ResumeReceive.
  void PauseReceiveOp(Socket& s) override {
    s.pause_cancel_pending = false;
    if (!s.receive_armed) return;
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      // The SQ is stuck: the multishot receive stays armed, and each CQE it
      // posts is held while paused. Its next CQE sends the cancel again
      // (RetryPauseCancel), so it cannot go on taking ring buffers.
      s.pause_cancel_pending = true;
      return;
    }
    // The same choice as ArmDatagramReceive: a connected socket that asked
    // for control messages uses recvmsg, and a cancel of the wrong
    // user_data finds nothing and leaves the multishot receive reading.
    const Op op =
        s.kind == SocketKind::kStream ? kOpRecv
        : (info.flags.provided_buffers && s.connected && !s.receive_control)
            ? kOpRecvConnected
            : kOpRecvMsg;
    io_uring_prep_cancel64(sqe, Encode(op, 0, IdOf(s).value), 0);
    sqe->user_data = Encode(kOpCancel, 0, IdOf(s).value);
    ++counters.submissions;
  }
  void ResumeReceiveOp(Socket& s) override {
    s.pause_cancel_pending = false;
    if (!s.receive_armed) ArmReceive(s);
  }

  // A receive CQE for a paused socket whose cancel could not be sent.
  void RetryPauseCancel(Socket& s) {
    if (!s.pause_cancel_pending) return;
    if (s.receive_paused && s.receive_armed && !s.closing) {
      PauseReceiveOp(s);
    } else {
      s.pause_cancel_pending = false;
    }
  }

  uint32_t StarvedRearmLimit() override {
    return info.flags.provided_buffers ? ring_available_ : UINT32_MAX;
  }

  bool StartConnect(Socket& s, const Endpoint& peer) override {
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      DeliverConnect(s, -EBUSY);
      return true;
    }
    io_uring_prep_connect(sqe, FdFor(s),
                          reinterpret_cast<sockaddr*>(&s.peer_addr),
                          s.peer_addr_len);
    Finish(sqe, s, Encode(kOpConnect, 0, IdOf(s).value));
    return true;
  }

  void CancelAll(Socket& s) override {
    if (s.ops_in_flight == 0) return;
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      s.cancel_pending = true;  // RunOnce tries again
      return;
    }
    s.cancel_pending = false;
    unsigned flags = IORING_ASYNC_CANCEL_ALL;
    if (info.flags.registered_files) flags |= IORING_ASYNC_CANCEL_FD_FIXED;
    // With registered files the fd field is the fixed index, used as a
    // match key; the SQE itself is not an operation on that file, so it
    // does not get IOSQE_FIXED_FILE.
    io_uring_prep_cancel_fd(sqe, FdFor(s), flags);
    sqe->user_data = Encode(kOpCancel, 0, IdOf(s).value);
    ++counters.submissions;
  }

  void FlushSends(Socket& s) override {
    if (s.kind == SocketKind::kUdp) {
      while (s.send_head != kNoOp && SubmitDatagram(s)) {
      }
    } else if (s.kind == SocketKind::kStream) {
      SubmitStream(s);
    }
  }

  int WaitAndDispatch(Duration timeout) override {
    if (wakeup_pending_) ArmWakeup();
    if (sq_stuck_) {
      // Operations are waiting for SQ space: do not sleep on them.
      sq_stuck_ = false;
      timeout = Duration(0);
    }
    const unsigned to_submit = PublishSq();
    if (info.flags.sqpoll && to_submit > 0) {
      // The SQ thread sets NEED_WAKEUP and then looks at the SQ tail once
      // more before it sleeps; we publish the tail and then look at
      // NEED_WAKEUP. Without a full barrier between our store and our load
      // (a release store does not order a later load, not even on x86),
      // both can miss each other: the thread sleeps without seeing our
      // entries and we do not wake it, so they sit unsubmitted until some
      // later submission wakes it. Seen as a receive "armed with one op in
      // flight" that never completed after a burst ended (issue 6, fault
      // 8, on uring-sqpoll).
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    const bool busy_flag = info.flags.busy_poll;
    const bool sqpoll = info.flags.sqpoll;
    const bool have_cqes = io_uring_cq_ready(&ring_) > 0;
    const unsigned sq_flags = IO_URING_READ_ONCE(*ring_.sq.kflags);
    // CQEs that did not fit in the CQ wait in the kernel (FEAT_NODROP) until
    // an enter with GETEVENTS flushes them; a spinning loop must ask too.
    const bool cq_overflow = (sq_flags & IORING_SQ_CQ_OVERFLOW) != 0;
    // DEFER_TASKRUN: completions wait as task work until we enter.
    const bool work_pending = (sq_flags & IORING_SQ_TASKRUN) != 0;
    const bool wait = !busy_flag && timeout.count() > 0 && !have_cqes;

    unsigned flags = 0;
    unsigned submit_count = to_submit;
    bool enter = false;
    // Wait batching (see below) counts what this enter hands over.
    const uint32_t datagram_cqes = datagram_cqes_expected_;
    const bool stream_send = stream_send_submitted_;
    datagram_cqes_expected_ = 0;
    stream_send_submitted_ = false;
    bool batched = false;
    if (sqpoll) {
      // The SQ thread consumes the SQ; we enter only to wake it or to sleep.
      submit_count = 0;
      if (to_submit > 0 &&
          (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_NEED_WAKEUP)) {
        flags |= IORING_ENTER_SQ_WAKEUP;
        ++counters.sqpoll_wakeups;
        enter = true;
      }
      if (wait || cq_overflow) {
        flags |= IORING_ENTER_GETEVENTS;
        enter = true;
      }
    } else {
      if (to_submit > 0) enter = true;
      if (wait) enter = true;
      // DEFER_TASKRUN posts completions only while we are in the kernel
      // asking for them; TASKRUN_FLAG tells us when that is worth it.
      if (info.flags.defer_taskrun && work_pending) enter = true;
      if (cq_overflow) enter = true;
      if (enter) flags |= IORING_ENTER_GETEVENTS;
    }
    if (enter) {
      // By default a wait ends at the first completion, which is often the
      // completion of a datagram send submitted by this same enter: the
      // handler hears of it at once, and the next iteration waits for the
      // rest. That costs a UDP request/response round trip two enters. With
      // LoopOptions::wait_batching the enter also waits for one completion
      // beyond the datagram sends (they complete inline and would end the
      // wait), so a round trip costs one; but a send nobody answers then
      // completes only at the next completion or the timeout (issue 6,
      // fault 6: one-way sends 1 s late), hence opt-in. A batch with a
      // stream send is never batched: it may wait on the peer.
      // min_wait_batching is the bounded form (see BatchWindow).
      unsigned min_complete = wait ? 1 : 0;
      unsigned min_wait_us = 0;
      const bool candidate = wait && !stream_send && datagram_cqes > 0;
      if (candidate && info.flags.wait_batching) {
        min_complete += datagram_cqes;
      } else if (candidate && info.flags.min_wait_batching) {
        const Duration window = BatchWindow(timeout);
        if (window.count() > 0) {
          min_complete += datagram_cqes;
          min_wait_us = static_cast<unsigned>(
              std::max<int64_t>(1, window.count() / 1000));
          batched = true;
          ++counters.batched_waits;
        }
      }
      const int ret = Enter(submit_count, min_complete, flags,
                            wait ? timeout : Duration(0), min_wait_us);
      if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY &&
          ret != -EAGAIN) {
        return ret;
      }
    }
    now = MonotonicNow();
    received_ = false;
    const int reaped = Reap();
    if (received_) {
      NoteReceived();
    } else if (batched) {
      // The window passed (or something other than a receive ended the
      // wait) with no reply: the sends were dispatched at its end.
      ++counters.batched_wait_expired;
      reply_gaps_.Expired();
    }
    return reaped;
  }

  // The window of a bounded batched wait, or 0 not to batch. In
  // request/response traffic the reply ends the wait long before the window
  // passes, so a round trip costs one enter; a send nobody answers
  // completes when it passes. Replies slower than the window, or none at
  // all (a one-way sender: each expired window counts as a gap beyond it),
  // turn batching off until the gaps, measured on every wait that follows
  // datagram sends, batched or not, are shorter again.
  // The window is fixed (LoopOptions::min_wait_window, 5 ms), not fitted to
  // the gaps: on this VM (HZ=250) a window shorter than the 4 ms tick made
  // ping-pong slower than not batching at all (200 us: 1.41x the p50 of
  // two enters per round trip, 1 ms: 1.28x, 3 ms: 1.06x), while 4.5 ms and
  // longer cost nothing measurable against unbounded batching (0.99-1.02x;
  // paired runs in README.md "Limits"). A timer due before the next tick
  // reprograms the clock event device, a VM exit, on every wait.
  Duration BatchWindow(Duration timeout) const {
    const int64_t window = options_.min_wait_window.count();
    const int64_t p90 = reply_gaps_.p90_ns();
    if (p90 > window) return Duration(0);
    const int64_t bounded = std::min<int64_t>(window, timeout.count());
    return Duration(bounded >= 1000 ? bounded : 0);
  }

 private:
  // --- Submission ------------------------------------------------------------

  // The next free SQE, or nullptr when the SQ stays full. SQ full: hand
  // what we have to the kernel without waiting for completions, then retry.
  // Their completions will be in the CQ, so nothing is batched. With SQPOLL
  // the SQ thread frees the space; under load it may need several tries
  // (SQ_WAIT can return before our view of the ring's head moves), so ask a
  // few times, yielding the CPU in between. If the kernel still takes
  // nothing, give up for this iteration (counted): every caller leaves its
  // operation to be tried again later, instead of aborting the process
  // (issue 6, fault 9).
  io_uring_sqe* GetSqe() {
    const bool full = internal::SqFullForTesting();
    io_uring_sqe* sqe = full ? nullptr : io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      ++counters.submission_queue_full;
      const bool stuck = full || internal::SqStuckForTesting();
      for (int attempt = 0;
           sqe == nullptr && !stuck && attempt < kSqFullRetries; ++attempt) {
        const unsigned pending = PublishSq();
        datagram_cqes_expected_ = 0;
        stream_send_submitted_ = false;
        info.flags.sqpoll
            ? Enter(0, 0, IORING_ENTER_SQ_WAKEUP | IORING_ENTER_SQ_WAIT,
                    Duration(0))
            : Enter(pending, 0, 0, Duration(0));
        sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) sched_yield();
      }
      if (sqe == nullptr) {
        ++counters.submission_queue_stuck;
        sq_stuck_ = true;  // makes the next iteration poll, not sleep
        return nullptr;
      }
    }
    io_uring_sqe_set_flags(sqe, 0);
    return sqe;
  }

  // Marks `sqe` as an operation on `s` (fixed file when registered).
  void Finish(io_uring_sqe* sqe, Socket& s, uint64_t user_data) {
    if (info.flags.registered_files) sqe->flags |= IOSQE_FIXED_FILE;
    sqe->user_data = user_data;
    ++s.ops_in_flight;
    ++counters.submissions;
  }

  int FdFor(const Socket& s) const {
    return info.flags.registered_files ? static_cast<int>(SlotOf(s)) : s.fd;
  }

  // Makes queued SQEs visible to the kernel. Returns how many are pending.
  unsigned PublishSq() {
    io_uring_sq& sq = ring_.sq;
    const unsigned tail = sq.sqe_tail;
    if (sq.sqe_head != tail) {
      sq.sqe_head = tail;
      io_uring_smp_store_release(sq.ktail, tail);
    }
    return tail - io_uring_smp_load_acquire(sq.khead);
  }

  // Binds the ring to the calling thread: enables a SINGLE_ISSUER ring and
  // registers the ring fd, which is a per-thread registration.
  int Bind() {
    bound_ = true;
    if (info.flags.defer_taskrun) {
      // liburing 2.3 declares io_uring_enable_rings but does not export it.
      if (syscall(__NR_io_uring_register, ring_.ring_fd,
                  IORING_REGISTER_ENABLE_RINGS, nullptr, 0) != 0) {
        return -errno;
      }
    }
    if (info.flags.registered_ring_fd) {
      const int ret = io_uring_register_ring_fd(&ring_);
      if (ret != 1) return ret < 0 ? ret : -EINVAL;
    }
    return 0;
  }

  int Enter(unsigned to_submit, unsigned min_complete, unsigned flags,
            Duration timeout, unsigned min_wait_us = 0) {
    if (!bound_) {
      const int ret = Bind();
      if (ret < 0) return ret;
    }
    int fd = ring_.ring_fd;
    if (ring_.int_flags & kRegisteredRingFlag) {
      fd = ring_.enter_ring_fd;
      flags |= IORING_ENTER_REGISTERED_RING;
    }
    ++counters.io_uring_enter;
    int ret;
    if (min_complete > 0) {
      __kernel_timespec ts;
      ts.tv_sec = timeout.count() / 1'000'000'000;
      ts.tv_nsec = timeout.count() % 1'000'000'000;
      io_uring_getevents_arg arg;
      std::memset(&arg, 0, sizeof(arg));
      arg.sigmask_sz = _NSIG / 8;
      // min_wait_usec since 6.12 (liburing 2.3 still calls it `pad`): wait
      // for min_complete completions for at most this long, then return if
      // any completion is there, else wait on for one until the timeout.
      arg.pad = min_wait_us;
      arg.ts = reinterpret_cast<uint64_t>(&ts);
      ret = io_uring_enter2(fd, to_submit, min_complete,
                            flags | IORING_ENTER_EXT_ARG,
                            reinterpret_cast<sigset_t*>(&arg), sizeof(arg));
    } else {
      ret = io_uring_enter2(fd, to_submit, 0, flags, nullptr, _NSIG / 8);
    }
    // liburing's syscall wrappers return -errno themselves; errno may hold
    // a stale value from an unrelated call.
    return ret;
  }

  int MsgRingFd() const override { return msg_ring_ ? ring_.ring_fd : -1; }

  bool SendMsgRing(int target_fd, MsgRingSender* sender) override {
    if (!msg_ring_) return false;
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) return false;  // the caller falls back to eventfd
    io_uring_prep_msg_ring(sqe, target_fd, 0, Encode(kOpMsgRing, 0, 0), 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data =
        (static_cast<uint64_t>(kOpMsgRingSent) << 56) |
        (reinterpret_cast<uintptr_t>(sender) & ((uint64_t(1) << 56) - 1));
    ++counters.submissions;
    return true;
  }

  void ArmWakeup() {
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      wakeup_pending_ = true;  // armed at the next WaitAndDispatch
      return;
    }
    wakeup_pending_ = false;
    io_uring_prep_read(sqe, wakeup_fd(), &wakeup_value_, sizeof(wakeup_value_),
                       0);
    sqe->user_data = Encode(kOpWakeup, 0, 0);
    ++counters.submissions;
  }

  void ArmAccept(Socket& s) {
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      MarkStarved(s);
      return;
    }
    if (info.flags.multishot_accept) {
      io_uring_prep_multishot_accept(sqe, FdFor(s), nullptr, nullptr,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    } else {
      s.peer_addr_len = sizeof(s.peer_addr);
      io_uring_prep_accept(sqe, FdFor(s),
                           reinterpret_cast<sockaddr*>(&s.peer_addr),
                           &s.peer_addr_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    Finish(sqe, s, Encode(kOpAccept, 0, IdOf(s).value));
    s.receive_armed = true;
  }

  void ArmDatagramReceive(Socket& s) {
    std::memset(&s.receive_msg, 0, sizeof(s.receive_msg));
    if (info.flags.provided_buffers && s.connected && !s.receive_control) {
      // The peer is fixed, so plain multishot recv will do: no msghdr to
      // import and no header in the buffer.
      ArmMultishotRecv(s, kOpRecvConnected);
      return;
    }
    if (info.flags.provided_buffers) {
      // Multishot recvmsg lays out each buffer as
      // [io_uring_recvmsg_out][name: msg_namelen bytes][payload]; an IPv6
      // sockaddr is the largest name we accept.
      // 32 rather than sizeof(sockaddr_in6) (28) keeps what follows the
      // name (the control messages) 8-byte aligned, as cmsghdr needs.
      s.receive_msg.msg_namelen = 32;
      // Control messages go between the name and the payload; only their
      // length matters here (the kernel lays them out in each buffer).
      s.receive_msg.msg_controllen =
          s.receive_control ? kReceiveControlBytes : 0;
      io_uring_sqe* sqe = GetSqe();
      if (sqe == nullptr) {
        MarkStarved(s);
        return;
      }
      io_uring_prep_recvmsg_multishot(sqe, FdFor(s), &s.receive_msg, 0);
      sqe->buf_group = kBufferGroup;
      Finish(sqe, s, Encode(kOpRecvMsg, 0, IdOf(s).value));
      sqe->flags |= IOSQE_BUFFER_SELECT;
      s.receive_armed = true;
      return;
    }
    if (!TakeReceiveBuffer(s)) return;
    s.receive_iov.iov_base = pool->PayloadAddress(s.receive_buffer);
    s.receive_iov.iov_len = pool->buffer_size();
    s.receive_msg.msg_iov = &s.receive_iov;
    s.receive_msg.msg_iovlen = 1;
    s.receive_msg.msg_name = &s.receive_addr;
    s.receive_msg.msg_namelen = sizeof(s.receive_addr);
    if (s.receive_control) {
      s.receive_msg.msg_control = s.receive_cmsg;
      s.receive_msg.msg_controllen = kReceiveControlBytes;
    }
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      ReturnReceiveBuffer(s);
      MarkStarved(s);
      return;
    }
    io_uring_prep_recvmsg(sqe, FdFor(s), &s.receive_msg, 0);
    Finish(sqe, s, Encode(kOpRecvMsg, 0, IdOf(s).value));
    s.receive_armed = true;
  }

  // Multishot recv from the provided buffer ring.
  void ArmMultishotRecv(Socket& s, Op op) {
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      MarkStarved(s);
      return;
    }
    io_uring_prep_recv_multishot(sqe, FdFor(s), nullptr, 0, 0);
    sqe->buf_group = kBufferGroup;
    Finish(sqe, s, Encode(op, 0, IdOf(s).value));
    sqe->flags |= IOSQE_BUFFER_SELECT;
    s.receive_armed = true;
  }

  void ReturnReceiveBuffer(Socket& s) {
    if (s.receive_buffer == BufferPool::kNoBuffer) return;
    pool->ReleaseIndex(s.receive_buffer);
    s.receive_buffer = BufferPool::kNoBuffer;
  }

  // Plain receives hold a pool buffer while armed. False (and the socket is
  // listed as starved) when the pool is empty.
  bool TakeReceiveBuffer(Socket& s) {
    BufferLease lease = pool->Acquire();
    if (!lease.valid()) {
      ++counters.pool_exhausted;
      MarkStarved(s);
      return false;
    }
    s.receive_buffer = BufferPool::Detach(lease);
    return true;
  }

  void ArmStreamReceive(Socket& s) {
    if (info.flags.provided_buffers) {
      ArmMultishotRecv(s, kOpRecv);
      return;
    }
    if (!TakeReceiveBuffer(s)) return;
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      ReturnReceiveBuffer(s);
      MarkStarved(s);
      return;
    }
    io_uring_prep_recv(sqe, FdFor(s), pool->PayloadAddress(s.receive_buffer),
                       pool->buffer_size(), 0);
    Finish(sqe, s, Encode(kOpRecv, 0, IdOf(s).value));
    s.receive_armed = true;
  }

  // Hands the head datagram to the kernel. False when no SQE was free: the
  // datagram stays at the head and the socket is flushed again later.
  bool SubmitDatagram(Socket& s) {
    // One GSO send at a time per socket: it uses the socket's msghdr.
    if (s.gso && s.gso_head != kNoOp) return false;  // its CQE flushes on
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      MarkDirty(s);
      return false;
    }
    if (s.gso) {
      int count = 0;
      const uint32_t batch = PopGsoBatch(s, &count);
      if (batch != kNoOp) {
        s.gso_head = batch;
        io_uring_prep_sendmsg(sqe, FdFor(s), &s.send_msg, MSG_NOSIGNAL);
        Finish(sqe, s, Encode(kOpDatagramGso, 0, IdOf(s).value));
        ++datagram_cqes_expected_;
        NoteSends();
        return true;
      }
    }
    const uint32_t index = PopDatagram(s);
    SendOp& o = op(index);
    if (o.header_size == 0 && o.payload_size > 0) {
      // One contiguous payload: the cheap single-buffer forms.
      std::byte* data = PayloadOf(o);
      if (s.connected && info.flags.registered_buffers) {
        // A write on a connected datagram socket sends one datagram. Unlike
        // a stream write it cannot raise SIGPIPE: UDP never reports EPIPE.
        io_uring_prep_write_fixed(sqe, FdFor(s), data, o.payload_size, 0, 0);
      } else if (s.connected) {
        io_uring_prep_send(sqe, FdFor(s), data, o.payload_size, MSG_NOSIGNAL);
      } else if (send_with_address_) {
        io_uring_prep_send(sqe, FdFor(s), data, o.payload_size, MSG_NOSIGNAL);
        io_uring_prep_send_set_addr(
            sqe, o.destination.sockaddr(),
            static_cast<uint16_t>(o.destination.socklen()));
      } else {
        PrepareDatagramMsg(s, o);
        io_uring_prep_sendmsg(sqe, FdFor(s), &o.msg, MSG_NOSIGNAL);
      }
    } else {
      // Header + shared payload (fan-out), or a header alone: gathered by
      // sendmsg from the op's own msghdr, which lives as long as the op.
      PrepareDatagramMsg(s, o);
      io_uring_prep_sendmsg(sqe, FdFor(s), &o.msg, MSG_NOSIGNAL);
    }
    Finish(sqe, s, Encode(kOpDatagramSend, index, IdOf(s).value));
    ++datagram_cqes_expected_;
    NoteSends();
    return true;
  }

  void PrepareDatagramMsg(const Socket& s, SendOp& o) {
    std::memset(&o.msg, 0, sizeof(o.msg));
    o.msg.msg_iov = o.iov;
    o.msg.msg_iovlen = static_cast<size_t>(AppendIov(o, o.iov, 2));
    if (!s.connected) {
      o.msg.msg_name = const_cast<sockaddr*>(o.destination.sockaddr());
      o.msg.msg_namelen = o.destination.socklen();
    }
  }

  void SubmitStream(Socket& s) {
    if (s.send_in_flight || s.connecting || !s.connected) return;
    if (s.send_head == kNoOp) {
      if (s.shutdown_requested && !s.shutdown_done) {
        io_uring_sqe* sqe = GetSqe();
        if (sqe == nullptr) {
          MarkDirty(s);
          return;
        }
        s.shutdown_done = true;
        io_uring_prep_shutdown(sqe, FdFor(s), SHUT_WR);
        Finish(sqe, s, Encode(kOpShutdown, 0, IdOf(s).value));
      }
      return;
    }
    // One send in flight per stream keeps completions in order; it gathers
    // everything queued (up to kMaxGather iovecs: each send gives its
    // header and its payload) so batching is not lost.
    int count = 0;
    size_t total_bytes = 0;
    bool headers = false;
    for (uint32_t index = s.send_head;
         index != kNoOp && count + 2 <= kMaxGather; index = op(index).next) {
      const SendOp& o = op(index);
      headers = headers || o.sent < o.header_size;
      count += AppendIov(o, s.send_iov + count, kMaxGather - count);
      total_bytes += o.size() - o.sent;
    }
    // Zero-copy pays a page-pinning and notification cost per send, so it
    // only applies above the threshold (on loopback the kernel copies anyway
    // and reports it through the notification).
    const bool zero_copy = info.flags.zero_copy_send &&
                           total_bytes >= options_.zero_copy_threshold_bytes;
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) {
      MarkDirty(s);
      return;
    }
    const Op op = zero_copy ? kOpStreamSendZc : kOpStreamSend;
    if (count == 1) {
      void* data = s.send_iov[0].iov_base;
      const size_t len = s.send_iov[0].iov_len;
      if (zero_copy && info.flags.registered_buffers && !headers) {
        // The one iovec is a payload in the registered pool.
        io_uring_prep_send_zc_fixed(sqe, FdFor(s), data, len, MSG_NOSIGNAL, 0,
                                    0);
      } else if (zero_copy) {
        io_uring_prep_send_zc(sqe, FdFor(s), data, len, MSG_NOSIGNAL, 0);
      } else {
        // Never WRITE_FIXED on a stream: a write has no MSG_NOSIGNAL, so
        // writing to a reset TCP peer raises SIGPIPE and kills a process
        // that did not ignore it (issue 6, fault 2). A copying send gains
        // nothing from a registered buffer anyway (the kernel copies from
        // the user address either way).
        io_uring_prep_send(sqe, FdFor(s), data, len, MSG_NOSIGNAL);
      }
    } else {
      std::memset(&s.send_msg, 0, sizeof(s.send_msg));
      s.send_msg.msg_iov = s.send_iov;
      s.send_msg.msg_iovlen = static_cast<size_t>(count);
      if (zero_copy) {
        io_uring_prep_sendmsg_zc(sqe, FdFor(s), &s.send_msg, MSG_NOSIGNAL);
      } else {
        io_uring_prep_sendmsg(sqe, FdFor(s), &s.send_msg, MSG_NOSIGNAL);
      }
    }
    if (zero_copy) {
      sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
      ++counters.zero_copy_sends;
    }
    stream_send_submitted_ = true;
    Finish(sqe, s, Encode(op, 0, IdOf(s).value));
    s.send_in_flight = true;
    NoteSends();
  }

  // --- Completion ------------------------------------------------------------

  int Reap() {
    int total = 0;
    io_uring_cqe* cqes[kCqeBatch];
    while (true) {
      const unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, kCqeBatch);
      if (n == 0) break;
      for (unsigned i = 0; i < n; ++i) {
        // Copy out: handling may submit, and the CQE slot is ours only until
        // we advance.
        const uint64_t user_data = cqes[i]->user_data;
        const int res = cqes[i]->res;
        const uint32_t flags = cqes[i]->flags;
        Handle(user_data, res, flags);
      }
      io_uring_cq_advance(&ring_, n);
      counters.completions += n;
      total += static_cast<int>(n);
      if (n < kCqeBatch) break;
    }
    return total;
  }

  void Handle(uint64_t user_data, int res, uint32_t flags) {
    const Op op = DecodeOp(user_data);
    if (op == kOpWakeup) {
      ArmWakeup();
      return;
    }
    if (op == kOpMsgRing) return;  // a cross-Loop wakeup: the wait ended
    if (op == kOpMsgRingSent) {
      // Only a failure comes back (success skips its CQE). Its sender may
      // be gone by now: look it up instead of calling through the pointer.
      MsgRingSender* sender = reinterpret_cast<MsgRingSender*>(
          static_cast<uintptr_t>(user_data & ((uint64_t(1) << 56) - 1)));
      if (HasMsgRingSender(sender)) sender->OnMsgRingFailed(res);
      return;
    }
    // A provided buffer the kernel picked belongs to us now, whatever
    // happens to the socket.
    uint32_t picked = BufferPool::kNoBuffer;
    if (flags & IORING_CQE_F_BUFFER) {
      picked = flags >> IORING_CQE_BUFFER_SHIFT;
      --ring_available_;
    }
    Socket* s = FromId(DecodeSocket(user_data));
    if (s == nullptr) {
      // Only the cancel of an already-finished socket can get here.
      if (picked != BufferPool::kNoBuffer) pool->ReleaseIndex(picked);
      return;
    }
    const bool more = (flags & IORING_CQE_F_MORE) != 0;
    switch (op) {
      case kOpRecv:
        received_ = true;
        OnStreamReceive(*s, res, more, picked);
        break;
      case kOpRecvMsg:
      case kOpRecvConnected:
        received_ = true;
        OnDatagramReceive(*s, res, more, picked, op == kOpRecvConnected);
        break;
      case kOpStreamSend:
        --s->ops_in_flight;
        s->send_in_flight = false;
        OnStreamSent(*s, res);
        break;
      case kOpStreamSendZc:
        if (flags & IORING_CQE_F_NOTIF) {
          // The kernel no longer reads the buffer: now it may be reused.
          --s->ops_in_flight;
          s->send_in_flight = false;
          if (static_cast<uint32_t>(res) & IORING_NOTIF_USAGE_ZC_COPIED) {
            ++counters.zero_copy_copied;
          }
          OnStreamSent(*s, s->zc_result);
        } else {
          s->zc_result = res;
          if (!more) {  // failed before any notification was promised
            --s->ops_in_flight;
            s->send_in_flight = false;
            OnStreamSent(*s, res);
          }
        }
        break;
      case kOpDatagramGso: {
        --s->ops_in_flight;
        const uint32_t head = s->gso_head;
        s->gso_head = kNoOp;
        CompleteGsoBatch(*s, head, res);
        if (!s->closing && s->send_head != kNoOp) MarkDirty(*s);
        break;
      }
      case kOpDatagramSend:
        --s->ops_in_flight;
        CompleteDatagram(*s, DecodeBuffer(user_data), res);  // the op index
        break;
      case kOpAccept:
        OnAccept(*s, res, more);
        break;
      case kOpConnect:
        --s->ops_in_flight;
        DeliverConnect(*s, res);
        break;
      case kOpShutdown:
        --s->ops_in_flight;
        break;
      case kOpCancel:
        // A kick that found nothing to cancel (the receive ended on its
        // own meanwhile): the next check may kick again.
        if (DecodeBuffer(user_data) == kKickCancel && res < 0) {
          s->receive_kick = false;
        }
        break;
      case kOpWakeup:
      case kOpMsgRing:
      case kOpMsgRingSent:
        break;
    }
  }

  void OnStreamReceive(Socket& s, int res, bool more, uint32_t picked) {
    const bool multishot = info.flags.provided_buffers;
    if (!more || !multishot) {
      --s.ops_in_flight;
      s.receive_armed = false;
    }
    RetryPauseCancel(s);
    uint32_t buffer = picked;
    if (!multishot) {
      buffer = s.receive_buffer;
      s.receive_buffer = BufferPool::kNoBuffer;
    }
    if (res > 0 && buffer != BufferPool::kNoBuffer) {
      // Provided buffers are filled from their start; our own from after
      // the headroom.
      DeliverData(s, buffer, multishot ? 0 : BufferPool::kHeadroom,
                  static_cast<uint32_t>(res));
    } else {
      if (buffer != BufferPool::kNoBuffer) pool->ReleaseIndex(buffer);
      if (res == 0) {
        DeliverReadClosed(s, 0);
        return;
      }
      if (res == -ENOBUFS) {
        ++counters.buffer_ring_misses;
        if (!s.receive_armed) MarkStarved(s);
        return;
      }
      if (res == -ECANCELED && s.receive_kick && !s.closing) {
        // Cancelled by KickReceive: arm a fresh receive, whose first
        // attempt returns what is left and then 0 or the error.
        s.receive_kick = false;
      } else if (s.closing || (res == -ECANCELED && s.receive_paused)) {
        return;
      } else if (res == -ECANCELED) {
        // Cancelled by a PauseReceive that ResumeReceive has undone since
        // (the SQ thread may pick a cancellation up late): arm again.
      } else if (res < 0) {
        DeliverReadClosed(s, res);
        return;
      }
    }
    if (!s.receive_armed && !s.closing && !s.read_closed && !s.receive_paused) {
      if (multishot) ++counters.multishot_rearms;
      ArmStreamReceive(s);
    }
  }

  // See LoopCore::CheckDeadStreams. The old receive's CQEs all come before
  // its cancellation, so data stays in order. A receive that is not armed
  // (starved) needs nothing: it is armed afresh when buffers come back.
  void KickReceive(Socket& s) override {
    if (!s.receive_armed || s.receive_kick) return;
    io_uring_sqe* sqe = GetSqe();
    if (sqe == nullptr) return;  // the next check kicks again
    io_uring_prep_cancel64(sqe, Encode(kOpRecv, 0, IdOf(s).value), 0);
    sqe->user_data = Encode(kOpCancel, kKickCancel, IdOf(s).value);
    ++counters.submissions;
    ++counters.receive_kicks;
    s.receive_kick = true;
  }

  void OnDatagramReceive(Socket& s, int res, bool more, uint32_t picked,
                         bool connected_recv) {
    const bool multishot = info.flags.provided_buffers;
    if (!more || !multishot) {
      --s.ops_in_flight;
      s.receive_armed = false;
    }
    RetryPauseCancel(s);
    if (res >= 0) {
      if (connected_recv && picked != BufferPool::kNoBuffer) {
        // recv cannot report MSG_TRUNC. A datagram that filled the whole
        // buffer may have been cut, and the API promises only buffer_size()
        // bytes, so a full buffer is dropped as possibly truncated.
        if (static_cast<size_t>(res) >= pool->slot_bytes()) {
          DropTruncatedDatagram(s, picked);
        } else {
          DeliverDatagram(
              s, picked, 0, static_cast<uint32_t>(res),
              Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&s.peer_addr),
                                     s.peer_addr_len));
        }
      } else if (multishot && picked != BufferPool::kNoBuffer) {
        DeliverMultishotDatagram(s, res, picked);
      } else if (!multishot) {
        const uint32_t buffer = s.receive_buffer;
        s.receive_buffer = BufferPool::kNoBuffer;
        if (s.receive_msg.msg_flags & MSG_TRUNC) {
          DropTruncatedDatagram(s, buffer);
        } else {
          DatagramInfo dinfo;
          dinfo.from = Endpoint::FromSockaddr(
              reinterpret_cast<sockaddr*>(&s.receive_addr),
              s.receive_msg.msg_namelen);
          if (s.receive_control) {
            for (cmsghdr* c = CMSG_FIRSTHDR(&s.receive_msg); c != nullptr;
                 c = CMSG_NXTHDR(&s.receive_msg, c)) {
              NoteControl(s, *c, &dinfo);
            }
          }
          DeliverDatagram(s, buffer, BufferPool::kHeadroom,
                          static_cast<uint32_t>(res), dinfo);
        }
      }
    } else {
      if (picked != BufferPool::kNoBuffer) pool->ReleaseIndex(picked);
      if (!multishot && s.receive_buffer != BufferPool::kNoBuffer) {
        pool->ReleaseIndex(s.receive_buffer);
        s.receive_buffer = BufferPool::kNoBuffer;
      }
      if (res == -ENOBUFS) {
        ++counters.buffer_ring_misses;
        if (!s.receive_armed) MarkStarved(s);
        return;
      }
      if (s.closing || (res == -ECANCELED && s.receive_paused)) return;
      // ICMP errors on a connected UDP socket: report, keep receiving. A
      // cancellation by a PauseReceive undone since: arm again.
      if (res != -ECANCELED) DeliverError(s, res);
    }
    if (!s.receive_armed && !s.closing && !s.receive_paused) {
      if (multishot) ++counters.multishot_rearms;
      ArmDatagramReceive(s);
    }
  }

  void DeliverMultishotDatagram(Socket& s, int res, uint32_t buffer) {
    std::byte* base = pool->BufferAddress(buffer);
    io_uring_recvmsg_out* out =
        io_uring_recvmsg_validate(base, res, &s.receive_msg);
    if (out == nullptr || (out->flags & MSG_TRUNC)) {
      DropTruncatedDatagram(s, buffer);
      return;
    }
    auto* payload =
        static_cast<std::byte*>(io_uring_recvmsg_payload(out, &s.receive_msg));
    const uint32_t length =
        io_uring_recvmsg_payload_length(out, res, &s.receive_msg);
    DatagramInfo dinfo;
    dinfo.from = Endpoint::FromSockaddr(
        static_cast<sockaddr*>(io_uring_recvmsg_name(out)),
        std::min<socklen_t>(out->namelen, s.receive_msg.msg_namelen));
    if (s.receive_control) {
      for (cmsghdr* c = io_uring_recvmsg_cmsg_firsthdr(out, &s.receive_msg);
           c != nullptr;
           c = io_uring_recvmsg_cmsg_nexthdr(out, &s.receive_msg, c)) {
        NoteControl(s, *c, &dinfo);
      }
    }
    DeliverDatagram(s, buffer, static_cast<uint32_t>(payload - base), length,
                    dinfo);
  }

  void OnStreamSent(Socket& s, int res) {
    if (res < 0) {
      FailStream(s, res);
      return;
    }
    counters.bytes_sent += static_cast<uint64_t>(res);
    ConsumeStreamSent(s, static_cast<size_t>(res));
    if (!s.closing) SubmitStream(s);
  }

  void OnAccept(Socket& listener, int res, bool more) {
    const bool multishot = info.flags.multishot_accept;
    if (!more || !multishot) {
      --listener.ops_in_flight;
      listener.receive_armed = false;
    }
    if (res >= 0) {
      if (listener.closing) {
        ::close(res);
        return;
      }
      sockaddr_storage addr;
      socklen_t len = sizeof(addr);
      const sockaddr* peer = reinterpret_cast<sockaddr*>(&listener.peer_addr);
      if (multishot) {
        // Multishot accept cannot return the peer address (one SQE, many
        // connections), so ask for it: control path, once per connection.
        ++counters.socket_syscalls;
        getpeername(res, reinterpret_cast<sockaddr*>(&addr), &len);
        peer = reinterpret_cast<sockaddr*>(&addr);
      } else {
        len = listener.peer_addr_len;
      }
      DeliverAccept(listener, res, peer, len);
    } else if (res != -ECANCELED && !listener.closing) {
      // Out of descriptors: re-arming at once fails at once, a spin of
      // about a million OnError calls a second (issue 6, fault 3). Back off
      // instead; the accept is armed again by RetryAccept.
      if (!listener.receive_armed && PauseAccept(listener, res)) return;
      DeliverError(listener, res);
    }
    if (!listener.receive_armed && !listener.closing) {
      if (multishot) ++counters.multishot_rearms;
      ArmAccept(listener);
    }
  }

  absl::Status SetUpBufferRing() {
    buf_ring_entries_ = options_.provided_buffers;
    if (pool->buffer_count() > 65536) {
      return absl::InvalidArgumentError(
          "provided buffer ids are 16 bits: buffer_count must be <= 65536");
    }
    // liburing 2.3 has no io_uring_setup_buf_ring: map the ring ourselves.
    buf_ring_bytes_ = buf_ring_entries_ * sizeof(io_uring_buf);
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    buf_ring_bytes_ = (buf_ring_bytes_ + page - 1) / page * page;
    void* mem = mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE,
                     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) return UringError("mmap(buffer ring)", -errno);
    buf_ring_ = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(buf_ring_);
    io_uring_buf_reg reg;
    std::memset(&reg, 0, sizeof(reg));
    reg.ring_addr = reinterpret_cast<uint64_t>(buf_ring_);
    reg.ring_entries = buf_ring_entries_;
    reg.bgid = kBufferGroup;
    const int ret = io_uring_register_buf_ring(&ring_, &reg, 0);
    if (ret < 0) return UringError("io_uring_register_buf_ring", ret);
    std::vector<uint32_t> indices;
    indices.reserve(buf_ring_entries_);
    pool->TakeForRing(this, buf_ring_entries_, &indices);
    const int mask = io_uring_buf_ring_mask(buf_ring_entries_);
    for (size_t i = 0; i < indices.size(); ++i) {
      io_uring_buf_ring_add(buf_ring_, pool->BufferAddress(indices[i]),
                            static_cast<unsigned>(pool->slot_bytes()),
                            static_cast<unsigned short>(indices[i]), mask,
                            static_cast<int>(i));
    }
    io_uring_buf_ring_advance(buf_ring_, static_cast<int>(indices.size()));
    ring_available_ = static_cast<uint32_t>(indices.size());
    return absl::OkStatus();
  }

  io_uring ring_{};
  bool ring_ready_ = false;
  uint64_t memlock_charged_ = 0;    // this Loop's share of MemlockCharge
  bool bound_ = false;              // Bind() ran (on the Loop's thread)
  bool send_with_address_ = false;  // sendto-style IORING_OP_SEND works
  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  uint32_t buf_ring_entries_ = 0;
  uint32_t ring_available_ = 0;
  uint64_t wakeup_value_ = 0;
  bool wakeup_pending_ = false;  // ArmWakeup found no SQE
  bool msg_ring_ = false;        // the kernel has IORING_OP_MSG_RING
  bool sq_stuck_ = false;        // GetSqe gave up this iteration
  // What the next enter submits, for wait batching.
  uint32_t datagram_cqes_expected_ = 0;
  bool stream_send_submitted_ = false;
  // Whether the last reap saw a receive (for the reply gaps).
  bool received_ = false;
};

}  // namespace

std::unique_ptr<LoopCore> MakeUringBackend() {
  return std::make_unique<UringBackend>();
}

}  // namespace ringlab::transport::internal
