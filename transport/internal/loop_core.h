// LoopCore: the backend-independent half of a Loop.
//
// It owns the socket table, the per-socket send queues, timers, the buffer
// pool, counters and the cross-thread post queue, and it turns backend events
// into SocketHandler callbacks. A backend (EpollBackend, UringBackend)
// subclasses it and implements the kernel half: arming receives, flushing
// send queues, connecting, accepting, cancelling and waiting.
//
// Invariants the backends rely on:
//  - A socket's slot is not reused until every operation the backend started
//    on it has completed (`ops_in_flight == 0`) and FinishClose() ran.
//  - Send queues are intrusive lists of SendOps (a fixed array allocated at
//    setup), so queueing never allocates. An op holds a reference on its
//    payload buffer; several ops may share one buffer (fan-out).
//  - No handler callback runs for a socket after Close() except send
//    completions with -ECANCELED and the final OnClosed().
#ifndef RINGLAB_TRANSPORT_INTERNAL_LOOP_CORE_H_
#define RINGLAB_TRANSPORT_INTERNAL_LOOP_CORE_H_

#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "transport/internal/reply_gap.h"
#include "transport/loop.h"

namespace ringlab::transport::internal {

enum class SocketKind : uint8_t { kFree, kUdp, kListener, kStream };

// Room for the receive control messages a UDP socket may ask for:
// IP(V6)_PKTINFO and SO_RXQ_OVFL.
inline constexpr size_t kReceiveControlBytes = 64;

// Most iovecs gathered into one stream sendmsg (a send contributes up to
// two: its header and its payload).
inline constexpr int kMaxGather = 32;
inline constexpr uint32_t kNoOp = 0xffffffffu;

// One queued send: up to Loop::kMaxSendHeaderBytes of header copied inline,
// then an optional payload in a pool buffer on which the op holds one
// reference. Lives in LoopCore::ops_; linked into its socket's queue.
struct SendOp {
  uint32_t next = kNoOp;
  uint32_t buffer = BufferPool::kNoBuffer;  // payload, or none
  uint32_t payload_offset = 0;              // into the buffer
  uint32_t payload_size = 0;
  uint32_t header_size = 0;
  uint32_t sent = 0;  // stream: bytes of header + payload already written
  uint64_t tag = 0;
  Endpoint destination;  // datagrams on unconnected sockets
  // io_uring datagram sendmsg storage: the kernel reads it while in flight.
  msghdr msg{};
  iovec iov[2]{};
  alignas(8) std::byte header[Loop::kMaxSendHeaderBytes];
  uint32_t size() const { return header_size + payload_size; }
};

// A receive that completed while its socket was paused (or while earlier
// held receives still waited): the Loop keeps its buffer and delivers it on
// ResumeReceive, in arrival order. Lives in LoopCore::held_ (one per pool
// buffer, so holding never allocates); linked into its socket's list.
struct HeldReceive {
  uint32_t next = kNoOp;
  uint32_t buffer = BufferPool::kNoBuffer;
  uint32_t offset = 0;
  uint32_t size = 0;
  DatagramInfo info;  // UDP only
};
// Fairness (epoll): most reads one socket gets per loop iteration before the
// others have their turn; a socket with more to read waits on the ready list
// for the next iteration.
inline constexpr int kStreamReadsPerIteration = 16;
inline constexpr int kDatagramBatchesPerIteration = 4;
inline constexpr int kAcceptsPerIteration = 64;
// Descriptors kept out of max_sockets for the Loop itself (ring or epoll fd,
// eventfd) and the rest of the process when max_sockets is fitted to
// RLIMIT_NOFILE.
inline constexpr uint32_t kFdReserve = 16;

struct Socket {
  uint32_t generation = 1;
  SocketKind kind = SocketKind::kFree;
  int fd = -1;
  SocketHandler* handler = nullptr;
  bool connected = false;    // UDP connected / TCP established
  bool connecting = false;   // TCP connect in progress
  bool read_closed = false;  // EOF / error delivered
  bool shutdown_requested = false;
  bool shutdown_done = false;
  bool closing = false;          // Close() called
  bool dirty = false;            // on the flush list
  bool want_write = false;       // epoll: waiting for EPOLLOUT after EAGAIN
  bool receive_armed = false;    // a receive (or accept) op is outstanding
  bool receive_starved = false;  // waiting for buffers to re-arm
  bool send_in_flight = false;   // stream: one send op outstanding
  bool receive_kick = false;     // uring: receive cancelled to re-arm it
  // uring: PauseReceive found no SQE for its cancel; sent on the next CQE.
  bool pause_cancel_pending = false;
  bool receive_paused = false;   // PauseReceive(): no receive armed
  bool receive_control = false;  // UDP: IP_PKTINFO and/or SO_RXQ_OVFL on
  uint32_t last_dropped = 0;     // UDP: the last SO_RXQ_OVFL value seen
  bool gso = false;              // UDP: segmentation_offload in effect
  // UDP GSO send in flight (uring): its ops, linked through SendOp::next.
  uint32_t gso_head = kNoOp;
  alignas(8) unsigned char send_cmsg[16]{};  // UDP_SEGMENT
  bool cancel_pending = false;  // uring: Close() found no SQE for its cancel
  bool dead_listed = false;     // on dead_streams_ (see KickReceive)
  Duration dead_check_every{0};
  Timestamp dead_check_at;
  bool peer_hup_seen = false;  // epoll: RDHUP/HUP/ERR reported once
  bool read_ready = false;     // epoll: on the ready list (more to read)
  uint32_t ops_in_flight = 0;  // uring: SQEs not yet fully completed
  int zc_result = 0;           // uring: SEND_ZC result awaiting its notif
  int write_error = 0;         // stream: the send/connect error, sticky
  // Backpressure: this socket's send queue limit and low-water mark (a
  // listener keeps them for its connections), and whether a refused Send
  // waits for OnWritable (by the budget, when writable_budget).
  size_t send_limit = 0;
  size_t send_low_water = 0;
  bool writable_wanted = false;
  bool writable_budget = false;
  // Listener backing off after EMFILE/ENFILE (see LoopCore::PauseAccept).
  bool accept_paused = false;
  Duration accept_backoff{0};
  Timestamp accept_retry_at;
  // Send queue: SendOp indices linked through SendOp::next.
  uint32_t send_head = kNoOp;
  uint32_t send_tail = kNoOp;
  uint32_t send_queued = 0;  // ops in the queue (stream: incl. the
                             // in-flight head; UDP: unsubmitted)
  size_t send_bytes = 0;     // unsent bytes across the queue
  // Plain (non-provided) receive: the buffer the armed receive fills.
  uint32_t receive_buffer = BufferPool::kNoBuffer;
  // Per-socket op storage (the kernel reads these while an op is in flight).
  msghdr receive_msg{};
  iovec receive_iov{};
  sockaddr_storage receive_addr{};
  alignas(8) unsigned char receive_cmsg[kReceiveControlBytes]{};
  msghdr send_msg{};
  iovec send_iov[kMaxGather]{};
  sockaddr_storage peer_addr{};
  socklen_t peer_addr_len = 0;
  uint32_t next_dirty = 0;
  // Receives held while paused (HeldReceive indices through ::next), and an
  // end of stream or read error that came after them.
  uint32_t held_head = kNoOp;
  uint32_t held_tail = kNoOp;
  bool held_listed = false;  // on held_ready_ (deliver next iteration)
  bool read_close_held = false;
  int read_close_result = 0;
};

// Cross-Loop channels (transport/loop_channel.h) hook into a Loop's
// iteration through this: BeforeWait() sees the wait RunOnce is about to
// make and may shorten it (0: it has work, do not sleep); AfterWait() runs
// after the completions were dispatched and returns how many items it
// handled. Both run on the Loop's thread; pollers are added and removed
// while the Loop is not running.
class LoopPoller {
 public:
  virtual ~LoopPoller() = default;
  virtual Duration BeforeWait(Duration wait) = 0;
  virtual int AfterWait() = 0;
};

// A notification that failed to reach another Loop by IORING_OP_MSG_RING
// (see LoopCore::SendMsgRing) is delivered here instead.
class MsgRingSender {
 public:
  virtual ~MsgRingSender() = default;
  virtual void OnMsgRingFailed(int negative_errno) = 0;
};

class LoopCore {
 public:
  virtual ~LoopCore();

  // --- Cross-Loop hooks (transport/loop_channel.h) --------------------------
  void AddPoller(LoopPoller* poller) { pollers_.push_back(poller); }
  void RemovePoller(LoopPoller* poller);
  // Senders whose MSG_RING failures may still complete here (SendMsgRing).
  // A sender is removed before it is destroyed; a failure that completes
  // after that is dropped instead of calling into freed memory (a channel
  // destroyed while its MSG_RING was in flight). Setup/teardown only: the
  // list is scanned on the failure path, never on success.
  void AddMsgRingSender(MsgRingSender* sender) {
    msg_ring_senders_.push_back(sender);
  }
  void RemoveMsgRingSender(MsgRingSender* sender);
  bool HasMsgRingSender(const MsgRingSender* sender) const;
  // The ring fd another Loop can target with IORING_OP_MSG_RING, or -1
  // (epoll backends, or a kernel without MSG_RING).
  virtual int MsgRingFd() const { return -1; }
  // Queues an IORING_OP_MSG_RING SQE on this Loop's ring (submitted with the
  // next iteration's enter) that posts a CQE to the ring `target_fd`; the
  // target's backend recognises and drops it (its only job is to end a
  // blocking wait). The SQE skips its own CQE on success; a failure calls
  // sender->OnMsgRingFailed on this Loop's thread if `sender` is still
  // added (AddMsgRingSender), and is dropped otherwise. False if this backend
  // cannot (the caller falls back to the target's eventfd). This Loop's thread
  // only.
  virtual bool SendMsgRing(int target_fd, MsgRingSender* sender) {
    (void)target_fd;
    (void)sender;
    return false;
  }

  // Shared setup: pool, socket table, wakeup fd. Backends call it first.
  absl::Status InitCore(const LoopOptions& options, const BackendInfo& info);
  // Kernel half setup (ring / epoll fd).
  virtual absl::Status InitBackend() = 0;

  // --- Public API, forwarded by Loop ----------------------------------------
  absl::StatusOr<SocketId> OpenUdp(const UdpOptions& options,
                                   SocketHandler* handler);
  absl::Status Multicast(SocketId id, const Endpoint& group,
                         const Endpoint& interface_address, bool join);
  int SendTo(SocketId id, BufferLease data, const Endpoint& to, uint64_t tag);
  int SendShared(SocketId id, const SharedBuffer& payload,
                 std::span<const std::byte> header, const Endpoint* to,
                 uint64_t tag);
  SharedBuffer Share(BufferLease lease);
  absl::StatusOr<SocketId> ListenTcp(const Endpoint& bind,
                                     SocketHandler* handler,
                                     const TcpOptions& options);
  absl::StatusOr<SocketId> ConnectTcp(const Endpoint& peer,
                                      SocketHandler* handler,
                                      const TcpOptions& options);
  int Send(SocketId id, BufferLease data, uint64_t tag);
  size_t QueuedSendBytes(SocketId id) const;
  int SetReceivePaused(SocketId id, bool paused);
  absl::StatusOr<SocketBuffers> GetSocketBuffers(SocketId id) const;
  absl::Status ShutdownWrite(SocketId id);
  void Close(SocketId id);
  void Abandon(SocketId id);
  absl::StatusOr<Endpoint> LocalEndpoint(SocketId id) const;
  int NativeHandle(SocketId id) const;
  int RunOnce(Duration timeout);
  absl::Status Run();
  void Stop();
  void Wakeup();
  void Post(absl::AnyInvocable<void()> fn);

  BackendInfo info;
  LoopCounters counters;
  Timestamp now;
  std::unique_ptr<BufferPool> pool;
  TimerQueue timers;
  size_t open_sockets = 0;

 protected:
  // --- Kernel half -----------------------------------------------------------
  // Starts receiving on a new UDP / stream socket, or accepting on a
  // listener.
  virtual void ArmReceive(Socket& s) = 0;
  // Registers a new socket (epoll_ctl ADD / fixed file slot).
  virtual absl::Status RegisterSocket(Socket& s) = 0;
  // Called when a TCP connect was started and returned EINPROGRESS (epoll)
  // or before connecting (uring submits the connect op itself). Returns true
  // if the backend drives the connect itself.
  virtual bool StartConnect(Socket& s, const Endpoint& peer) = 0;
  // Hands queued sends of one socket to the kernel.
  virtual void FlushSends(Socket& s) = 0;
  // Cancels everything in flight on `s`. FinishClose() runs once
  // ops_in_flight reaches zero.
  virtual void CancelAll(Socket& s) = 0;
  // Removes the socket from the kernel side just before its fd is closed.
  virtual void UnregisterSocket(Socket& s) = 0;
  // Submits and waits up to `timeout` (0 = poll), dispatching completions.
  // Returns completions dispatched or a negative errno.
  virtual int WaitAndDispatch(Duration timeout) = 0;
  // Re-arms receives that stopped for lack of buffers (called each
  // iteration when starved sockets exist).
  virtual void RearmStarved(Socket& s) = 0;
  // How many starved receives may be re-armed this iteration (the provided
  // ring's free buffers on the uring-fixed family; unlimited elsewhere, where
  // a re-armed receive that finds no buffer starves again at once).
  virtual uint32_t StarvedRearmLimit() { return UINT32_MAX; }
  // The stream's send failed because the connection is gone, and its end
  // has not been read yet: make sure the receive side notices (uring:
  // cancel the armed receive and arm a fresh one; epoll: read on).
  virtual void KickReceive(Socket& s) = 0;
  // PauseReceive/ResumeReceive: stop arming receives on `s` (uring: cancel
  // the armed one) / arm them again (epoll: read what waits).
  virtual void PauseReceiveOp(Socket& s) = 0;
  virtual void ResumeReceiveOp(Socket& s) = 0;
  // Accepts again on a listener that backed off (PauseAccept): epoll
  // accepts until EAGAIN, io_uring arms the accept op again.
  virtual void RetryAccept(Socket& listener) = 0;
  // Continues reading a socket that used up its per-iteration read budget
  // (epoll only; see MarkReadReady).
  virtual void ContinueReceive(Socket& s) {}

  // --- Helpers for backends --------------------------------------------------
  Socket* Lookup(SocketId id);
  const Socket* Lookup(SocketId id) const;
  Socket& SlotAt(uint32_t slot) { return sockets_[slot]; }
  uint32_t SlotOf(const Socket& s) const {
    return static_cast<uint32_t>(&s - sockets_.data());
  }
  SocketId IdOf(const Socket& s) const;
  Socket* FromId(uint32_t id_value);  // like Lookup, raw value

  // Delivery (skipped silently when the socket is closing).
  void DeliverDatagram(Socket& s, uint32_t buffer, uint32_t offset,
                       uint32_t size, const Endpoint& from);
  void DeliverDatagram(Socket& s, uint32_t buffer, uint32_t offset,
                       uint32_t size, DatagramInfo& info);
  // Reads IP(V6)_PKTINFO and SO_RXQ_OVFL from one control message into
  // `info` (and the drop counter); called for each cmsg of a datagram.
  void NoteControl(Socket& s, const cmsghdr& cmsg, DatagramInfo* info);
  void DeliverData(Socket& s, uint32_t buffer, uint32_t offset, uint32_t size);
  // Paused (or receives still held): the Deliver* calls above keep the
  // receive instead, until ResumeReceive; see HeldReceive.
  bool MustHold(const Socket& s) const {
    return s.receive_paused || s.held_head != kNoOp;
  }
  void DeliverReadClosed(Socket& s, int result);
  void DeliverConnect(Socket& s, int result);
  void DeliverError(Socket& s, int error);
  // A datagram longer than a pool buffer: dropped (never delivered cut
  // short), counted, and reported as OnError(-EMSGSIZE).
  void DropTruncatedDatagram(Socket& s, uint32_t buffer);
  // An accept failed for lack of descriptors or memory (-EMFILE, -ENFILE,
  // -ENOBUFS, -ENOMEM): stop accepting on `listener`, report the first
  // failure of the episode with OnError, and retry after a backoff that
  // doubles from 1 ms to 64 ms, or at once when this Loop closes a socket.
  // Returns false for other errors (the caller reports them).
  bool PauseAccept(Socket& listener, int error);
  // A listener accepted `fd`; creates the socket, asks the handler, arms it.
  void DeliverAccept(Socket& listener, int fd, const sockaddr* addr,
                     socklen_t len);
  // Stream: `bytes` of the queue head were written. Completes whole sends.
  void ConsumeStreamSent(Socket& s, size_t bytes);
  // Pops the head of a UDP queue (to hand it to the kernel); kNoOp if none.
  uint32_t PopDatagram(Socket& s);
  // A datagram the kernel took finished: release, then callback.
  void CompleteDatagram(Socket& s, uint32_t op, int result);
  // UDP GSO: pops the longest run of queued datagrams one send can carry
  // (same destination, one size, the last may be shorter; at least 2) into
  // a chain through SendOp::next and fills s.send_msg / s.send_iov /
  // s.send_cmsg for it. Returns the chain's head (count in *count), or kNoOp
  // when the head of the queue goes alone.
  uint32_t PopGsoBatch(Socket& s, int* count);
  // Completes every op of a GSO chain: with its own size on success
  // (`result` is the total), with `result` on failure. A refusal of GSO
  // itself (EIO/EINVAL/EOPNOTSUPP) instead puts the datagrams back at the
  // head of the queue and turns GSO off for the socket.
  void CompleteGsoBatch(Socket& s, uint32_t head, int result);
  // Puts a popped GSO chain back at the head of the queue, in order.
  void RequeueGsoBatch(Socket& s, uint32_t head);
  // The queued send `index` (see SendOp).
  SendOp& op(uint32_t index) { return ops_[index]; }
  // Where a send's payload bytes start.
  std::byte* PayloadOf(const SendOp& op) const {
    return pool->BufferAddress(op.buffer) + op.payload_offset;
  }
  // Fills `iov` (room for `max` entries) with the unsent part of `op`;
  // returns how many it used.
  int AppendIov(const SendOp& op, iovec* iov, int max) const;
  // Completes every queued send with `error` (close / reset). Callbacks may
  // queue new sends meanwhile.
  void FailQueuedSends(Socket& s, int error);
  // A stream send (or connect) failed: fails the queue and makes later
  // Send() calls return `error` at once.
  void FailStream(Socket& s, int error);
  // If `s` is closing and idle, closes the fd and delivers OnClosed.
  void MaybeFinishClose(Socket& s);
  void MarkDirty(Socket& s);
  void MarkStarved(Socket& s);
  // `s` has more to read but used its budget for this iteration: it is read
  // again at the start of the next one, and that iteration does not sleep.
  void MarkReadReady(Socket& s);
  // A send is done (or failed): drops its payload reference (out of the
  // send budget when no other send holds the buffer) and frees the op.
  void FreeOp(uint32_t index);
  // AcquireBuffer(): honours the receive reserve.
 public:
  BufferLease AcquireForSend();

 protected:
  // Reply gaps (reply_gap.h), kept when a flag uses them (hybrid_spin,
  // min_wait_batching): backends call NoteSends() when they hand sends to
  // the kernel (or submit them) and NoteReceived() when receives completed.
  // On hybrid presets a send opens a spin window that RunOnce honours.
  void NoteSends() {
    if (track_gaps_) NoteSendsSlow();
  }
  void NoteReceived() {
    if (track_gaps_) reply_gaps_.Received(now.nanos());
  }
  ReplyGapTracker reply_gaps_;
  bool track_gaps_ = false;

  // Writes to the wakeup fd's counterpart; backends read it.
  int wakeup_fd() const { return wakeup_fd_; }
  void DrainWakeup();
  bool busy() const { return info.flags.busy_poll; }

  LoopOptions options_;
  std::vector<Socket> sockets_;
  std::vector<uint32_t> free_slots_;
  std::vector<uint32_t> dirty_;          // slots with queued sends
  std::vector<uint32_t> starved_;        // slots whose receive awaits buffers
  std::vector<uint32_t> ready_;          // slots with more to read (epoll)
  std::vector<uint32_t> starved_next_;   // reused by ServeStarved
  std::vector<uint32_t> accept_paused_;  // listeners backing off
  std::vector<uint32_t> writable_waiters_;  // refused sockets (OnWritable)
  std::vector<uint32_t> dead_streams_;      // send failed, end not read
  std::vector<uint32_t> held_ready_;        // resumed with receives held
  std::vector<HeldReceive> held_;           // see HeldReceive
  std::vector<uint32_t> free_held_;
  // Budgets (see LoopOptions): pool buffers any send queue holds, ring
  // buffers send queues hold, and their limits.
  uint32_t receive_reserve_ = 0;
  uint32_t send_budget_ = 0;
  uint32_t send_held_ = 0;
  uint32_t ring_send_limit_ = 0;
  uint32_t ring_send_held_ = 0;
  // Send descriptors: a fixed array and a free list (LoopOptions::send_ops).
  std::vector<SendOp> ops_;
  std::vector<uint32_t> free_ops_;
  std::vector<uint32_t> closing_;  // slots closing, not yet finished
  std::vector<uint32_t> scratch_;  // reused while walking the lists above

 private:
  absl::Status FitFileLimit();
  void NoteSendsSlow();
  // Hybrid presets: how long to spin after a send (0: do not).
  Duration SpinWindow() const;
  // Whether this iteration polls instead of sleeping (hybrid presets).
  bool Spinning();
  absl::StatusOr<Socket*> NewSocket(SocketKind kind, int fd,
                                    SocketHandler* handler);
  void FinishClose(Socket& s);
  void RunPosted();
  void ServeStarved();
  void RetryPausedAccepts();
  void NotifyWritable();
  void CheckDeadStreams();
  // Keeps a receive of a paused socket (see MustHold); false if no record
  // was free (cannot happen: one per pool buffer).
  void Hold(Socket& s, uint32_t buffer, uint32_t offset, uint32_t size,
            const DatagramInfo* info);
  // Delivers what a resumed socket held, in order, until it is paused again;
  // then arms its receive.
  void DeliverHeld(Socket& s);
  void ReleaseHeld(Socket& s);
  int Refuse(Socket& s, bool budget);
  // Queues `op` on `s` after the limit and budget checks (refusing frees
  // it). `payload_buffer` is the pool buffer it references, or kNoBuffer.
  int QueueOp(Socket& s, uint32_t op_index);
  uint32_t AllocOp();
  void SetSendLimits(Socket& s, size_t limit, size_t low_water);
  void NoteBufferSizes(Socket& s, int receive_bytes, int send_bytes);
  int Enqueue(Socket& s, BufferLease data, uint64_t tag, const Endpoint* to);

  std::vector<LoopPoller*> pollers_;
  std::vector<MsgRingSender*> msg_ring_senders_;
  int wakeup_fd_ = -1;
  Timestamp spin_until_ = Timestamp::Zero();
  bool spinning_ = false;  // the last iteration polled for a reply
  std::atomic<bool> stop_{false};
  std::atomic<bool> has_posted_{false};
  absl::Mutex posted_mu_;
  std::vector<absl::AnyInvocable<void()>> posted_ ABSL_GUARDED_BY(posted_mu_);
};

// Test hook: while true, the io_uring backend treats a full submission queue
// as stuck at once (no retries), so tests can drive that path.
bool SqStuckForTesting();
void SetSqStuckForTesting(bool stuck);
// Test hook: while true, the io_uring backend finds no free SQE at all (as
// if the submission queue were full and stuck), wherever it asks for one.
bool SqFullForTesting();
void SetSqFullForTesting(bool full);

// Factories for the two kernel halves.
std::unique_ptr<LoopCore> MakeEpollBackend();
std::unique_ptr<LoopCore> MakeUringBackend();

}  // namespace ringlab::transport::internal

#endif  // RINGLAB_TRANSPORT_INTERNAL_LOOP_CORE_H_
