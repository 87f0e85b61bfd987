// Loop: one completion-based event loop per thread, on io_uring or on epoll.
//
// The backend is a named preset chosen at run time (see transport/preset.h):
// `epoll`, `epoll-busy`, `epoll-hybrid`, `uring`, `uring-fixed`,
// `uring-sqpoll`, `uring-busy`, `uring-hybrid`, or `auto`. Every preset
// offers the same interface: UDP and TCP sockets whose operations complete
// into a `SocketHandler`, timers, a buffer pool and counters. The epoll
// backends emulate completions: on readiness they make the syscall and
// deliver the result exactly as io_uring would.
//
//   LoopOptions options;
//   options.backend = "uring-fixed";
//   absl::StatusOr<std::unique_ptr<Loop>> loop = Loop::Create(options);
//   if (!loop.ok()) { std::cerr << loop.status(); return 1; }  // names the fix
//
//   class Echo : public SocketHandler {
//    public:
//     explicit Echo(Loop* loop) : loop_(loop) {}
//     void OnDatagram(SocketId s, const Endpoint& from, BufferLease data)
//     override {
//       loop_->SendTo(s, std::move(data), from);   // echo: no copy
//     }
//    private:
//     Loop* loop_;
//   };
//   Echo echo(loop->get());
//   UdpOptions udp;
//   udp.bind = Endpoint::Loopback(9000);
//   absl::StatusOr<SocketId> socket = (*loop)->OpenUdp(udp, &echo);
//   (*loop)->Run();            // until Stop()
//
// Threading: a Loop and everything it owns belong to the thread that calls
// Run()/RunOnce(); the io_uring presets bind their ring to the first thread
// that does (a Loop may be created on one thread and run on another). Only
// Wakeup(), Post() and Stop() may be called from other threads; Stop() and
// Wakeup() are also safe in a signal handler. Per-message traffic between
// Loops goes through transport/loop_channel.h (lock-free, no syscall while
// the receiver is busy), not Post().
//
// Ownership: handlers are borrowed and must outlive their sockets (until
// OnClosed), or end them with Abandon() before they go (a driver's
// destructor while its Loop runs on). Leases passed to Send/SendTo move into
// the Loop; it returns the buffer to the pool when the operation completes or
// fails.
//
// Errors: setup and control calls return absl::Status. Per-operation failures
// reach the handler as a negative errno in `result`. Send/SendTo return 0 or a
// negative errno when the operation could not even be queued; the lease is
// released in that case:
//   -EBADF     not a (live) socket of this kind      -ECANCELED  closing
//   -EAGAIN    send queue or send budget full: OnWritable() follows
//   -EPIPE     after ShutdownWrite()                 -ENOTCONN   no stream
//   the stream's send or connect error (e.g. -ECONNRESET) once it failed
// The hot path throws nothing and allocates nothing (loop_alloc_test counts
// operator new around send/receive, fan-out and timer re-arms).
//
// Beyond one send per lease: Share() + Send/SendTo(SharedBuffer, header)
// fan one pool buffer out to many sockets or endpoints with a small
// per-send header gathered in front; PauseReceive()/ResumeReceive() stop
// reading a socket whose peer does not read our replies; timers carry a
// context pointer and optional slack (AddTimer); UdpOptions turn on
// control messages (DatagramInfo), UDP GSO, multicast (IPv4 and IPv6) and
// socket buffer sizes; TcpOptions::reuse_port shares a port between Loops.
//
// Buffers and backpressure: one pool per Loop, split in budgets so a peer
// that stops reading cannot starve anyone else.
//  - Receives: on epoll and plain uring they take pool buffers, and
//    AcquireBuffer() leaves them a reserve (receive_reserve_buffers). On the
//    uring-fixed family the kernel fills buffers of the provided ring, which
//    is their budget. A received lease on those presets belongs to the ring:
//    while the handler holds it, no socket can receive into it. The rule:
//    copy the bytes out, or hand the lease back (release it, or Send it on)
//    within the iteration; leases held longer than receive_hold_limit are
//    counted in counters().receive_buffers_held_long.
//  - Sends: each socket queues at most send_queue_limit_bytes, and all send
//    queues together hold at most send_budget_buffers pool buffers (ring
//    buffers sent on, as by an echo, may fill a quarter of the ring; past
//    that Send() copies them into a pool buffer). A Send that would exceed
//    either returns -EAGAIN; once the socket's queue is below its low-water
//    mark (and the budget below half, if it was the budget) the handler gets
//    OnWritable(). counters() counts both refusals.
#ifndef RINGLAB_TRANSPORT_LOOP_H_
#define RINGLAB_TRANSPORT_LOOP_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "transport/buffer_pool.h"
#include "transport/counters.h"
#include "transport/endpoint.h"
#include "transport/preset.h"
#include "transport/time.h"
#include "transport/timer_queue.h"

namespace ringlab::transport {

namespace internal {
class LoopCore;
class ChannelLink;
}  // namespace internal

// Identifies a socket inside one Loop. Ids are not reused while in use: a
// generation counter makes a stale id fail with -EBADF instead of hitting a
// new socket.
struct SocketId {
  uint32_t value = 0;  // 0 is never a valid id
  bool valid() const { return value != 0; }
  friend bool operator==(SocketId a, SocketId b) { return a.value == b.value; }
  friend bool operator!=(SocketId a, SocketId b) { return a.value != b.value; }
  template <typename H>
  friend H AbslHashValue(H h, SocketId id) {
    return H::combine(std::move(h), id.value);
  }
};

// What a UDP receive knows beyond the bytes. `to` and `interface_index` are
// set when UdpOptions::receive_destination asked for them (IP_PKTINFO /
// IPV6_PKTINFO: which of the host's addresses, e.g. a multicast group or a
// unicast address, the datagram was sent to, and on which interface);
// `dropped` when UdpOptions::receive_drop_count did (SO_RXQ_OVFL: datagrams
// the kernel dropped on this socket because its queue was full, counted
// since the socket was opened).
struct DatagramInfo {
  Endpoint from;
  Endpoint to;  // invalid unless receive_destination (port 0)
  uint32_t interface_index = 0;
  uint32_t dropped = 0;
};

// Receives the completions of one socket. Every method has an empty default.
// Callbacks run on the Loop's thread from inside Run()/RunOnce(); they may call
// any Loop method, including Close() on the same socket.
class SocketHandler {
 public:
  virtual ~SocketHandler() = default;

  // UDP: one datagram from `from`. `data` holds the bytes; keep the lease to
  // keep them, or move it into SendTo() to reply in place. Datagrams longer
  // than buffers().buffer_size() are dropped, never delivered cut short,
  // reported as OnError(-EMSGSIZE) and counted.
  virtual void OnDatagram(SocketId socket, const Endpoint& from,
                          BufferLease data) {}
  // The same with what the control messages said (see DatagramInfo). The
  // Loop calls this one; the default forwards to OnDatagram above, so a
  // handler overrides whichever it needs.
  virtual void OnDatagramInfo(SocketId socket, const DatagramInfo& info,
                              BufferLease data) {
    OnDatagram(socket, info.from, std::move(data));
  }
  // TCP: the next bytes of the stream, in order. One lease holds at most
  // buffers().slot_bytes() bytes (buffer_size() plus the headroom, which
  // provided-buffer presets let the kernel fill too). Messages longer than
  // that arrive over several calls: transport/stream_assembler.h gathers
  // them with one copy per byte (or keep the leases and parse across them).
  // Fairness: per iteration the epoll presets read at most 16 buffers from
  // one stream (4 recvmmsg batches from one UDP socket, 64 accepts from one
  // listener) before serving the other ready sockets; io_uring completes one
  // receive per socket at a time and re-arms starved receives in turn.
  virtual void OnData(SocketId socket, BufferLease data) {}
  // TCP: the read side ended. `result` is 0 for an orderly EOF from the peer
  // or a negative errno (-ECONNRESET, ...). The socket stays open until
  // Close().
  virtual void OnReadClosed(SocketId socket, int result) {}
  // TCP ConnectTcp() finished: 0, or a negative errno such as -ECONNREFUSED.
  virtual void OnConnect(SocketId socket, int result) {}
  // A Send()/SendTo() lease was fully written (result = its size) or failed
  // (negative errno). Stream sends complete in the order they were queued.
  virtual void OnSendComplete(SocketId socket, int result, uint64_t tag) {}
  // A listener accepted `connection` from `peer`. Return the handler for the
  // new socket, or nullptr to close it at once.
  virtual SocketHandler* OnAccept(SocketId listener, SocketId connection,
                                  const Endpoint& peer) {
    return nullptr;
  }
  // A non-fatal error on the socket that belongs to no send: a UDP receive
  // error (e.g. -ECONNREFUSED from an ICMP), an accept failure.
  virtual void OnError(SocketId socket, int error) {}
  // Send()/SendTo() refused this socket with -EAGAIN (its send queue or the
  // Loop's send budget was full) and there is room again: the queue drained
  // below its low-water mark and the budget below half. Called once per
  // refusal episode, from inside Run()/RunOnce().
  virtual void OnWritable(SocketId socket) {}
  // Close() finished: no operation on the socket is in flight any more and the
  // id is dead. The last callback a socket receives.
  virtual void OnClosed(SocketId socket) {}
};

// Kernel socket buffer sizes, as getsockopt(SO_RCVBUF/SO_SNDBUF) reports
// them.
struct SocketBuffers {
  int receive_bytes = 0;
  int send_bytes = 0;
};

struct LoopOptions {
  // A preset name (see preset.h) or "auto".
  std::string backend = "auto";
  // The buffer pool. Registered with the ring by the uring-fixed family, so
  // buffer_size * buffer_count counts against RLIMIT_MEMLOCK when the process
  // lacks CAP_IPC_LOCK.
  uint32_t buffer_size = 2048;
  uint32_t buffer_count = 2048;
  // Buffers lent to the kernel through the provided buffer ring (uring-fixed
  // family). A power of two, at most buffer_count / 2.
  uint32_t provided_buffers = 512;
  // Submission queue entries (io_uring) / events per epoll_wait.
  uint32_t queue_depth = 512;
  // Backpressure and budgets (see "Buffers and backpressure" above).
  // Default per-socket send queue limit (UdpOptions/TcpOptions can override).
  size_t send_queue_limit_bytes = 1u << 20;
  // Buffers AcquireBuffer() leaves in the pool for receives; 0 picks a
  // quarter of the pool on presets whose receives come from it (epoll,
  // uring) and none on the provided-ring presets (the ring is their receive
  // budget).
  uint32_t receive_reserve_buffers = 0;
  // Send descriptors (one per queued send, each with room for a header of
  // up to Loop::kMaxSendHeaderBytes); 0 picks twice buffer_count, at least
  // 1024. When they run out, Send() refuses with -EAGAIN like a full budget.
  uint32_t send_ops = 0;
  // Pool buffers all send queues together may hold; 0 picks the pool minus
  // the receive reserve and the provided ring. Ring buffers (received
  // leases sent on, e.g. an echo) may fill at most a quarter of the ring in
  // send queues; beyond that Send() copies them into a pool buffer.
  uint32_t send_budget_buffers = 0;
  // uring-fixed family: a received buffer handed back later than this counts
  // in counters().receive_buffers_held_long.
  Duration receive_hold_limit = std::chrono::milliseconds(10);
  // Most sockets the Loop can hold at once (listening + connected + UDP).
  // It must fit RLIMIT_NOFILE (uring-fixed also sizes its fixed-file table
  // to it): if the soft limit is too low, Create() raises it toward the hard
  // limit (when raise_fd_limit), and if that is not enough clamps
  // max_sockets. Either is reported in backend().adjustments, and
  // backend().max_sockets is the value in effect.
  uint32_t max_sockets = 4096;
  bool raise_fd_limit = true;
  // Zero-copy send (IORING_OP_SEND_ZC) for TCP payloads of at least
  // zero_copy_threshold_bytes. io_uring backends only. On loopback the kernel
  // copies anyway, so expect no gain there.
  bool zero_copy_send = false;
  uint32_t zero_copy_threshold_bytes = 8192;
  // Unbounded io_uring wait batching (uring-fixed, uring-sqpoll; ignored
  // elsewhere): the enter that submits datagram sends waits for one more
  // completion, so a UDP request/response round trip costs one kernel entry
  // instead of two. Off by default because a datagram nobody answers then
  // has its OnSendComplete (and its lease) held until the next completion
  // or the wait's timeout. min_wait_batching (below) is the bounded form
  // the presets use.
  bool wait_batching = false;
  // Optional kernel features (see LoopFeatures); unset ones follow the
  // preset.
  LoopFeatures features;
  // min_wait_batching: the longest a batched wait holds the completions of
  // the sends it submitted when nothing else completes; replies slower than
  // this turn batching off. Keep it above the kernel's tick (4 ms at
  // HZ=250): shorter windows made every batched wait cost a timer
  // reprogram, which on a VM is slower than the enter saved (README.md,
  // "Limits").
  Duration min_wait_window = std::chrono::milliseconds(5);
  // Hybrid presets (uring-hybrid, epoll-hybrid): the longest spin after a
  // send while a reply is due; replies slower than this (p90) turn the
  // spin off. A spin costs CPU, never correctness.
  Duration hybrid_spin_max = std::chrono::microseconds(100);
  // SQPOLL thread CPU (-1: let the kernel choose) and idle time before it
  // sleeps.
  int sqpoll_cpu = -1;
  uint32_t sqpoll_idle_ms = 200;
};

struct UdpOptions {
  Endpoint bind;                    // required; port 0 picks a free port
  std::optional<Endpoint> connect;  // fixes the peer; SendTo may then use any
                                    // endpoint argument (ignored)
  bool reuse_address = false;       // SO_REUSEADDR (+ SO_REUSEPORT)
  // Outgoing multicast: interface address (e.g. 127.0.0.1 for lo; for IPv6
  // an address of the interface, or one with its scope id), TTL (hop limit
  // for IPv6), and whether our own multicast comes back to us.
  std::optional<Endpoint> multicast_interface;
  int multicast_ttl = 1;
  bool multicast_loop = true;
  // SO_RCVBUF / SO_SNDBUF when > 0. As root the FORCE variants are tried
  // first (not capped by net.core.rmem_max / wmem_max). What the kernel
  // granted: Loop::GetSocketBuffers(); a request granted less is counted in
  // counters().socket_buffers_clamped.
  int receive_buffer_bytes = 0;
  int send_buffer_bytes = 0;
  // Control messages on receive, delivered in OnDatagramInfo(): the
  // destination address and interface (IP_PKTINFO / IPV6_RECVPKTINFO; RTPS
  // tells multicast from unicast by it), and the kernel's count of
  // datagrams dropped on a full receive queue (SO_RXQ_OVFL; also added to
  // counters().receive_queue_drops). On the provided-ring presets the
  // control bytes share a buffer's headroom, so with either on, a datagram
  // must be up to 48 bytes shorter than buffer_size() to fit (longer ones
  // are reported as -EMSGSIZE).
  bool receive_destination = false;
  bool receive_drop_count = false;
  // UDP GSO (UDP_SEGMENT): consecutive queued datagrams to one destination,
  // all of one size (the last may be shorter), leave in one send of up to
  // kMaxGsoSegments segments, which the kernel (or the NIC) cuts into
  // datagrams; the receiver sees ordinary datagrams. Each send still gets
  // its own OnSendComplete. A destination that refuses GSO (EIO, EINVAL)
  // turns it off for the socket (counted) and the datagrams are sent one by
  // one.
  bool segmentation_offload = false;
  // Backpressure: bytes the Loop queues for this socket before Send/SendTo
  // refuse with -EAGAIN (0: LoopOptions::send_queue_limit_bytes), and the
  // level below which OnWritable follows a refusal (0: half the limit).
  size_t send_queue_limit_bytes = 0;
  size_t send_queue_low_water_bytes = 0;
};

struct TcpOptions {
  bool no_delay = true;  // TCP_NODELAY
  int backlog = 4096;    // listen()
  bool reuse_address = true;
  // SO_REUSEPORT on a listener: several Loops (one per thread) may listen on
  // one port, and the kernel spreads new connections over them.
  bool reuse_port = false;
  int receive_buffer_bytes = 0;
  int send_buffer_bytes = 0;
  // As in UdpOptions; a listener passes them on to its accepted sockets.
  size_t send_queue_limit_bytes = 0;
  size_t send_queue_low_water_bytes = 0;
};

class Loop {
 public:
  // Most bytes of per-send header Send()/SendTo() copy into a send
  // descriptor (enough for an MQTT fixed header, topic, packet id and
  // properties, or an RTPS header and submessage headers).
  static constexpr size_t kMaxSendHeaderBytes = 512;
  // Most datagrams one UDP GSO send carries (UdpOptions::
  // segmentation_offload).
  static constexpr int kMaxGsoSegments = 16;

  // Probes the kernel, resolves `auto`, and builds the backend. Errors:
  // InvalidArgument for an unknown preset (the message lists valid ones);
  // FailedPrecondition / PermissionDenied / ResourceExhausted when the preset
  // needs something the machine lacks, naming the cause and the fix.
  static absl::StatusOr<std::unique_ptr<Loop>> Create(
      const LoopOptions& options);
  virtual ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // The preset in effect, its flags, and why `auto` chose it.
  const BackendInfo& backend() const;
  const LoopCounters& counters() const;
  // Time cached at the start of the current loop iteration.
  Timestamp now() const;
  BufferPool& buffers();
  // An empty lease when the pool is exhausted (counted).
  BufferLease AcquireBuffer();
  // Makes a payload shareable by many sends. A lease received on a
  // provided-ring preset is first copied into a pool buffer (one copy per
  // fan-out, counted in ring_buffers_copied_for_send), since every queue
  // holding it would keep it from the ring. Empty if no buffer is free.
  //
  //   SharedBuffer payload = loop.Share(std::move(lease));
  //   for (SocketId s : subscribers) loop.Send(s, payload, HeaderFor(s));
  SharedBuffer Share(BufferLease lease);

  // --- UDP -------------------------------------------------------------------
  absl::StatusOr<SocketId> OpenUdp(const UdpOptions& options,
                                   SocketHandler* handler);
  // Joins `group` on the interface with address `interface_address`. IPv4
  // and IPv6 (the interface is found by its address, or by the address's
  // scope id; an unspecified address lets the kernel choose).
  absl::Status JoinMulticast(SocketId socket, const Endpoint& group,
                             const Endpoint& interface_address);
  absl::Status LeaveMulticast(SocketId socket, const Endpoint& group,
                              const Endpoint& interface_address);
  // Queues one datagram of `data.size()` bytes to `to` (ignored on a
  // connected socket). Returns 0 or a negative errno.
  int SendTo(SocketId socket, BufferLease data, const Endpoint& to,
             uint64_t tag = 0);
  // Fan-out: queues one datagram made of `header` (copied, at most
  // kMaxSendHeaderBytes) followed by `payload`, without copying the payload:
  // every send of one SharedBuffer uses the same pool buffer (RTPS to many
  // locators). Both backends gather the two parts in one sendmsg.
  int SendTo(SocketId socket, const SharedBuffer& payload, const Endpoint& to,
             std::span<const std::byte> header = {}, uint64_t tag = 0);

  // --- TCP -------------------------------------------------------------------
  absl::StatusOr<SocketId> ListenTcp(const Endpoint& bind,
                                     SocketHandler* handler,
                                     const TcpOptions& options = {});
  // Starts a non-blocking connect; OnConnect() reports the outcome. Data may
  // be queued with Send() before it completes.
  absl::StatusOr<SocketId> ConnectTcp(const Endpoint& peer,
                                      SocketHandler* handler,
                                      const TcpOptions& options = {});
  // Queues `data` on the stream. Partial sends continue automatically; leases
  // complete in order. Returns 0 or a negative errno.
  int Send(SocketId socket, BufferLease data, uint64_t tag = 0);
  // Fan-out on streams: `header` (copied; e.g. an MQTT PUBLISH's fixed
  // header, topic and packet id, which differ per subscriber) followed by
  // the shared `payload`, in one gathered send, without copying the payload.
  // Either part may be empty (a header alone sends small messages with no
  // pool buffer at all).
  int Send(SocketId socket, const SharedBuffer& payload,
           std::span<const std::byte> header = {}, uint64_t tag = 0);
  // Bytes queued on `socket` and not yet confirmed sent.
  size_t QueuedSendBytes(SocketId socket) const;
  // Receive-side backpressure (streams and UDP sockets): while paused the
  // Loop reads nothing from the socket, so TCP's flow control pushes back on
  // the peer instead of the Loop reading data it cannot forward (an echo or
  // a broker whose sends to that peer are refused). Nothing is delivered
  // for the socket from the call on, not even the rest of the batch a
  // handler pauses in: receives the kernel already had under way when the
  // pause reached it (a multishot receive until the SQ thread sees the
  // cancellation, plain uring's armed receive) are held by the Loop, with
  // their buffers, and delivered in order, before anything newer, in the
  // first iteration after ResumeReceive (counted in
  // LoopCounters::receives_held; an end of stream that follows them waits
  // too). Returns 0 or -EBADF / -ECANCELED.
  //
  //   if (loop.Send(s, std::move(lease)) == -EAGAIN) loop.PauseReceive(s);
  //   void OnWritable(SocketId s) override { loop.ResumeReceive(s); }
  int PauseReceive(SocketId socket);
  int ResumeReceive(SocketId socket);
  // Half-close: sends FIN once all queued data is written.
  absl::Status ShutdownWrite(SocketId socket);

  // --- Any socket ------------------------------------------------------------
  // Cancels everything in flight, closes the fd, then calls OnClosed(). Queued
  // sends complete with -ECANCELED. Safe to call twice (second is a no-op).
  void Close(SocketId socket);
  // Close() for a handler that is going away (its destructor): from now on
  // the Loop calls no method of the socket's handler, not even OnClosed() or
  // the -ECANCELED send completions; leases it would have delivered go back
  // to the pool. Also valid after Close(), while the close is still under
  // way. A no-op for a dead id.
  //   ~MyDriver() { if (socket_.valid()) loop_->Abandon(socket_); }
  void Abandon(SocketId socket);
  absl::StatusOr<Endpoint> LocalEndpoint(SocketId socket) const;
  // SO_RCVBUF / SO_SNDBUF as the kernel reports them now (twice what was
  // set: the kernel counts its bookkeeping too).
  absl::StatusOr<SocketBuffers> GetSocketBuffers(SocketId socket) const;
  // The file descriptor, for setsockopt. Do not read or write it directly.
  int NativeHandle(SocketId socket) const;
  size_t open_sockets() const;

  // --- Timers ----------------------------------------------------------------
  // Fires at `deadline`, then every `period` if period > 0, no earlier and
  // (given `slack`) at most `slack` later: timers with slack share wakeups
  // (see timer_queue.h), so 10,000 one-second keepalives with 100 ms slack
  // wake the Loop ~15 times a second, not 10,000. `context` is passed back
  // to the handler. Returns an id (never 0) for CancelTimer() and
  // RescheduleTimer().
  //
  // Memory: the timer queue grows to the most timers ever pending at once
  // and then stays. Below that, AddTimer with a TimerHandler or a TimerFn,
  // RescheduleTimer and periodic re-arming never allocate; a callback
  // allocates on AddTimer when its captures exceed AnyInvocable's inline
  // storage (about two pointers). To push a timer back on every packet, use
  // RescheduleTimer rather than cancel-and-add.
  uint64_t AddTimer(Timestamp deadline, Duration period, TimerHandler* handler,
                    void* context = nullptr, Duration slack = Duration(0));
  uint64_t AddTimer(Timestamp deadline, Duration period, TimerFn fn,
                    void* context, Duration slack = Duration(0));
  uint64_t AddTimer(Timestamp deadline, Duration period,
                    absl::AnyInvocable<void(Timestamp now)> callback,
                    Duration slack = Duration(0));
  // True if the timer was pending and will not fire again.
  bool CancelTimer(uint64_t timer_id);
  // Moves a pending timer to `deadline`. False if it is not pending.
  bool RescheduleTimer(uint64_t timer_id, Timestamp deadline);

  // --- Running ---------------------------------------------------------------
  // Runs until Stop(). Returns an error only if the backend itself fails.
  absl::Status Run();
  // One iteration: submit, wait at most `timeout` (0: poll without waiting;
  // busy presets never sleep), dispatch completions and due timers. Returns
  // the number of completions and timers dispatched, or a negative errno.
  int RunOnce(Duration timeout);
  // Makes Run() return after the current iteration. Thread-safe.
  void Stop();
  // Interrupts a blocking wait from another thread.
  void Wakeup();
  // Runs `fn` on the Loop's thread in its next iteration. Thread-safe; takes
  // a lock, so it is for control messages, not per-packet traffic (see
  // LoopChannel for that).
  void Post(absl::AnyInvocable<void()> fn);

 private:
  // Cross-Loop channels (loop_channel.h) hook into the core.
  friend class internal::ChannelLink;
  explicit Loop(std::unique_ptr<internal::LoopCore> core);
  std::unique_ptr<internal::LoopCore> core_;
};

}  // namespace ringlab::transport

#endif  // RINGLAB_TRANSPORT_LOOP_H_
