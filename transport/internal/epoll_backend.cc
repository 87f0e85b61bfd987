// The epoll backend: readiness turned into completions.
//
// Fairness rules (ARCHITECTURE.md, "The transport contract"): each socket is
// registered once, edge-triggered for both directions, so the hot path makes
// no epoll_ctl calls; UDP receives and sends are batched with recvmmsg /
// sendmmsg, and stream sends gather up to kMaxGather queued buffers in one
// sendmsg, the same batching the io_uring backends get from one enter. The
// receive buffers come from the same pool and are delivered as leases.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "transport/internal/loop_core.h"

namespace ringlab::transport::internal {
namespace {

constexpr int kUdpBatch = 32;
constexpr uint64_t kWakeupToken = 0;

class EpollBackend final : public LoopCore {
 public:
  ~EpollBackend() override {
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    for (int i = 0; i < rx_ready_; ++i) pool->ReleaseIndex(rx_buffers_[i]);
  }

  absl::Status InitBackend() override {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) {
      return absl::InternalError(
          absl::StrCat("epoll_create1: ", std::strerror(errno)));
    }
    events_.resize(options_.queue_depth == 0 ? 256 : options_.queue_depth);
    // The receive batch's headers point at fixed per-slot storage; only the
    // buffer addresses change between calls.
    std::memset(rx_msgs_, 0, sizeof(rx_msgs_));
    for (int i = 0; i < kUdpBatch; ++i) {
      rx_iov_[i].iov_len = pool->buffer_size();
      rx_msgs_[i].msg_hdr.msg_iov = &rx_iov_[i];
      rx_msgs_[i].msg_hdr.msg_iovlen = 1;
      rx_msgs_[i].msg_hdr.msg_name = &rx_addrs_[i];
    }
    RefillReceiveBatch();
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeupToken;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wakeup_fd(), &ev) != 0) {
      return absl::InternalError(
          absl::StrCat("epoll_ctl(eventfd): ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }

 protected:
  absl::Status RegisterSocket(Socket& s) override {
    epoll_event ev{};
    // One persistent edge-triggered registration: receives never need an
    // epoll_ctl. Streams watch both directions (TCP raises EPOLLOUT only
    // after it ran out of send space). UDP watches input only, because every
    // sent datagram freed by the kernel raises a writable edge, which would
    // wake the loop once per send for nothing; a UDP socket adds EPOLLOUT
    // only while a send is blocked (rare).
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    if (s.kind != SocketKind::kUdp) ev.events |= EPOLLOUT;
    ev.data.u64 = IdOf(s).value;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, s.fd, &ev) != 0) {
      return absl::InternalError(
          absl::StrCat("epoll_ctl(ADD): ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }

  void UnregisterSocket(Socket& s) override {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, s.fd, nullptr);
  }

  void ArmReceive(Socket& s) override {
    s.receive_armed = true;
    // Edge-triggered: data that arrived before this point produced an edge
    // we may have ignored (e.g. while connecting), so read once now.
    // UDP needs no such read: a UDP socket is registered just before this
    // call, and registering a readable socket reports it.
    if (s.kind == SocketKind::kStream) ReadStream(s);
    if (s.kind == SocketKind::kListener) AcceptAll(s);
  }

  bool StartConnect(Socket& s, const Endpoint& peer) override {
    return false;  // LoopCore calls connect(); EPOLLOUT reports the result.
  }

  void CancelAll(Socket& s) override {
    // Nothing is in flight inside the kernel; RunOnce finishes the close.
  }

  void RearmStarved(Socket& s) override { ContinueReceive(s); }

  void RetryAccept(Socket& listener) override { AcceptAll(listener); }

  // Edge-triggered: whatever arrived while paused raised its edge already,
  // so resuming reads now.
  void PauseReceiveOp(Socket& s) override {}
  void ResumeReceiveOp(Socket& s) override { ContinueReceive(s); }

  // Reading on is harmless here: edge-triggered epoll reports the hangup,
  // so this only makes sure.
  void KickReceive(Socket& s) override {
    s.peer_hup_seen = true;
    ReadStream(s);
  }

  void ContinueReceive(Socket& s) override {
    if (s.kind == SocketKind::kStream) ReadStream(s);
    if (s.kind == SocketKind::kUdp) ReadDatagrams(s);
    if (s.kind == SocketKind::kListener) AcceptAll(s);
  }

  void FlushSends(Socket& s) override {
    if (s.kind == SocketKind::kUdp) {
      FlushDatagrams(s);
    } else if (s.kind == SocketKind::kStream) {
      FlushStream(s);
    }
  }

  int WaitAndDispatch(Duration timeout) override {
    timespec ts;
    const int64_t ns = timeout.count() < 0 ? 0 : timeout.count();
    ts.tv_sec = ns / 1'000'000'000;
    ts.tv_nsec = ns % 1'000'000'000;
    ++counters.epoll_wait;
    const int n = epoll_pwait2(epoll_fd_, events_.data(),
                               static_cast<int>(events_.size()), &ts, nullptr);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    now = MonotonicNow();
    int dispatched = 0;
    for (int i = 0; i < n; ++i) {
      const epoll_event& ev = events_[i];
      if (ev.data.u64 == kWakeupToken) {
        DrainWakeup();
        continue;
      }
      Socket* s = FromId(static_cast<uint32_t>(ev.data.u64));
      if (s == nullptr || s->closing) continue;
      dispatched += Dispatch(*s, ev.events);
    }
    return dispatched;
  }

 private:
  int Dispatch(Socket& s, uint32_t events) {
    const uint64_t before = counters.completions;
    switch (s.kind) {
      case SocketKind::kListener:
        if (events & (EPOLLIN | EPOLLERR)) AcceptAll(s);
        break;
      case SocketKind::kUdp:
        if (events & (EPOLLIN | EPOLLERR)) ReadDatagrams(s);
        if ((events & EPOLLOUT) && s.want_write && !s.closing) {
          s.want_write = false;
          FlushDatagrams(s);
          if (!s.want_write) WatchWritable(s, false);
        }
        break;
      case SocketKind::kStream:
        if (s.connecting) {
          if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
            ++counters.completions;
            DeliverConnect(s, -err);
          }
          break;
        }
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
          s.peer_hup_seen = true;
        }
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
          ReadStream(s);
        }
        if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && s.want_write &&
            !s.closing) {
          s.want_write = false;
          FlushStream(s);
        }
        break;
      case SocketKind::kFree:
        break;
    }
    return static_cast<int>(counters.completions - before);
  }

  // UDP only: adds or removes EPOLLOUT around a blocked send.
  void WatchWritable(Socket& s, bool on) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0u);
    ev.data.u64 = IdOf(s).value;
    ++counters.socket_syscalls;  // a kernel entry like any other
    epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, s.fd, &ev);
  }

  void AcceptAll(Socket& listener) {
    for (int accepted = 0; !listener.closing; ++accepted) {
      if (accepted == kAcceptsPerIteration) {
        MarkReadReady(listener);
        return;
      }
      sockaddr_storage addr;
      socklen_t len = sizeof(addr);
      ++counters.socket_syscalls;
      const int fd = accept4(listener.fd, reinterpret_cast<sockaddr*>(&addr),
                             &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const int err = errno;
        if (err == EAGAIN || err == EINTR) return;
        // ECONNABORTED and friends concern one connection only.
        if (err == ECONNABORTED || err == EPROTO) continue;
        // Out of descriptors: the pending connections raise no new edge, so
        // retry on a backoff instead of waiting for one (issue 6, fault 3).
        if (PauseAccept(listener, -err)) return;
        DeliverError(listener, -err);
        return;
      }
      ++counters.completions;
      DeliverAccept(listener, fd, reinterpret_cast<sockaddr*>(&addr), len);
    }
  }

  // Reads until the socket is empty (EAGAIN), ends (0 or an error), or used
  // its reads for this iteration. A short read normally means the socket was
  // empty at that moment, and later data raises a new edge; but an end of
  // stream that arrived together with the last bytes raises no new edge, so
  // once the peer's hangup was reported (RDHUP/HUP/ERR) a short read does not
  // end the loop: the next recv returns the 0 or the error (issue 6, fault 1).
  void ReadStream(Socket& s) {
    if (s.receive_paused) return;  // ResumeReceive reads on
    int reads = 0;
    while (!s.closing && !s.read_closed && s.connected) {
      if (reads == kStreamReadsPerIteration) {
        MarkReadReady(s);
        return;
      }
      BufferLease lease = pool->Acquire();
      if (!lease.valid()) {
        ++counters.pool_exhausted;
        MarkStarved(s);
        return;
      }
      const size_t capacity = lease.capacity();
      ++counters.socket_syscalls;
      ++reads;
      const ssize_t n = ::recv(s.fd, lease.data(), capacity, MSG_DONTWAIT);
      if (n > 0) {
        ++counters.completions;
        const uint32_t index = BufferPool::Detach(lease);
        DeliverData(s, index, BufferPool::kHeadroom, static_cast<uint32_t>(n));
        if (static_cast<size_t>(n) < capacity && !s.peer_hup_seen) return;
        continue;
      }
      if (n == 0) {
        ++counters.completions;
        DeliverReadClosed(s, 0);
        return;
      }
      if (errno == EAGAIN || errno == EINTR) return;
      ++counters.completions;
      const int err = -errno;
      DeliverReadClosed(s, err);
      return;
    }
  }

  // Keeps up to kUdpBatch pool buffers leased as the next recvmmsg's
  // targets, so a receive costs one Acquire per datagram that arrived, not
  // one per batch slot (the batch is usually one datagram long).
  void RefillReceiveBatch() {
    while (rx_ready_ < kUdpBatch) {
      BufferLease lease = pool->Acquire();
      if (!lease.valid()) return;
      const uint32_t index = BufferPool::Detach(lease);
      rx_buffers_[rx_ready_] = index;
      rx_iov_[rx_ready_].iov_base = pool->PayloadAddress(index);
      ++rx_ready_;
    }
  }

  void ReadDatagrams(Socket& s) {
    DrainDatagrams(s);
    // Top the batch up now rather than on the next read, so the number of
    // buffers the backend holds is the same whenever the Loop is idle.
    RefillReceiveBatch();
  }

  void DrainDatagrams(Socket& s) {
    if (s.receive_paused) return;
    for (int batches = 0; !s.closing; ++batches) {
      if (batches == kDatagramBatchesPerIteration) {
        MarkReadReady(s);
        return;
      }
      RefillReceiveBatch();
      const int batch = rx_ready_;
      if (batch == 0) {
        ++counters.pool_exhausted;
        MarkStarved(s);
        return;
      }
      for (int i = 0; i < batch; ++i) {
        rx_msgs_[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
        rx_msgs_[i].msg_hdr.msg_flags = 0;
        // Control messages only when the socket asked for them.
        rx_msgs_[i].msg_hdr.msg_control =
            s.receive_control ? rx_control_[i] : nullptr;
        rx_msgs_[i].msg_hdr.msg_controllen =
            s.receive_control ? kReceiveControlBytes : 0;
      }
      ++counters.socket_syscalls;
      const int n = recvmmsg(s.fd, rx_msgs_, batch, MSG_DONTWAIT, nullptr);
      const int received = n < 0 ? 0 : n;
      const int err = n < 0 ? errno : 0;
      for (int i = 0; i < received; ++i) {
        ++counters.completions;
        const uint32_t buffer = rx_buffers_[i];
        if (rx_msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) {
          // Larger than a pool buffer: counted and dropped, never delivered
          // as if it were whole.
          DropTruncatedDatagram(s, buffer);
          continue;
        }
        // Handlers cannot re-enter ReadDatagrams (UDP sockets are read only
        // from dispatch), so the batch arrays stay valid while we deliver.
        DatagramInfo info;
        info.from =
            Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&rx_addrs_[i]),
                                   rx_msgs_[i].msg_hdr.msg_namelen);
        if (s.receive_control) {
          msghdr& m = rx_msgs_[i].msg_hdr;
          for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr;
               c = CMSG_NXTHDR(&m, c)) {
            NoteControl(s, *c, &info);
          }
        }
        DeliverDatagram(s, buffer, BufferPool::kHeadroom, rx_msgs_[i].msg_len,
                        info);
      }
      // The unused leased buffers move to the front for the next call.
      for (int i = received; i < batch; ++i) {
        rx_buffers_[i - received] = rx_buffers_[i];
        rx_iov_[i - received].iov_base = rx_iov_[i].iov_base;
      }
      rx_ready_ = batch - received;
      if (n < 0) {
        if (err == EAGAIN || err == EINTR) return;
        // ICMP errors (ECONNREFUSED on a connected socket) are per-socket
        // notifications; the socket keeps working.
        ++counters.completions;
        DeliverError(s, -err);
        continue;
      }
      if (received < batch) return;
    }
  }

  void FlushDatagrams(Socket& s) {
    while (s.send_head != kNoOp && !s.want_write) {
      if (s.gso) {
        int count = 0;
        const uint32_t batch = PopGsoBatch(s, &count);
        if (batch != kNoOp) {
          ++counters.socket_syscalls;
          const ssize_t n =
              ::sendmsg(s.fd, &s.send_msg, MSG_DONTWAIT | MSG_NOSIGNAL);
          if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            // Put them back as they were and wait for room.
            const int err = errno;
            RequeueGsoBatch(s, batch);
            if (err == EAGAIN) {
              ++counters.send_would_block;
              s.want_write = true;
              WatchWritable(s, true);
              return;
            }
            continue;
          }
          counters.completions += static_cast<uint64_t>(count);
          CompleteGsoBatch(s, batch, n < 0 ? -errno : static_cast<int>(n));
          continue;
        }
      }
      int batch = 0;
      for (uint32_t index = s.send_head; index != kNoOp && batch < kUdpBatch;
           index = op(index).next, ++batch) {
        const SendOp& o = op(index);
        std::memset(&tx_msgs_[batch], 0, sizeof(mmsghdr));
        // Header and payload gathered into one datagram (fan-out sends a
        // shared payload behind a per-destination header).
        tx_msgs_[batch].msg_hdr.msg_iov = tx_iov_[batch];
        tx_msgs_[batch].msg_hdr.msg_iovlen =
            static_cast<size_t>(AppendIov(o, tx_iov_[batch], 2));
        if (!s.connected) {
          tx_msgs_[batch].msg_hdr.msg_name =
              const_cast<sockaddr*>(o.destination.sockaddr());
          tx_msgs_[batch].msg_hdr.msg_namelen = o.destination.socklen();
        }
      }
      ++counters.socket_syscalls;
      const int n =
          sendmmsg(s.fd, tx_msgs_, batch, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN) {
          ++counters.send_would_block;
          s.want_write = true;  // EPOLLOUT edge resumes the flush
          WatchWritable(s, true);
          return;
        }
        if (errno == EINTR) continue;
        // The head datagram failed (EMSGSIZE, ECONNREFUSED, ...): complete
        // it with the error and carry on with the rest.
        const int err = -errno;
        ++counters.completions;
        CompleteDatagram(s, PopDatagram(s), err);
        continue;
      }
      for (int i = 0; i < n; ++i) {
        ++counters.completions;
        const uint32_t index = PopDatagram(s);
        CompleteDatagram(s, index, static_cast<int>(tx_msgs_[i].msg_len));
      }
    }
  }

  void FlushStream(Socket& s) {
    if (s.connecting || s.want_write || !s.connected) return;
    while (s.send_head != kNoOp) {
      int count = 0;
      size_t requested = 0;
      for (uint32_t index = s.send_head;
           index != kNoOp && count + 2 <= kMaxGather; index = op(index).next) {
        const SendOp& o = op(index);
        count += AppendIov(o, s.send_iov + count, kMaxGather - count);
        requested += o.size() - o.sent;
      }
      msghdr msg{};
      msg.msg_iov = s.send_iov;
      msg.msg_iovlen = static_cast<size_t>(count);
      ++counters.socket_syscalls;
      const ssize_t n = ::sendmsg(s.fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          ++counters.send_would_block;
          s.want_write = true;
          return;
        }
        const int err = -errno;
        ++counters.completions;
        FailStream(s, err);
        return;
      }
      ++counters.completions;
      counters.bytes_sent += static_cast<uint64_t>(n);
      ConsumeStreamSent(s, static_cast<size_t>(n));
      if (static_cast<size_t>(n) < requested) {
        // The socket buffer is full; EPOLLOUT will resume the flush.
        s.want_write = true;
        return;
      }
    }
    if (s.shutdown_requested && !s.shutdown_done) {
      s.shutdown_done = true;
      ++counters.socket_syscalls;
      ::shutdown(s.fd, SHUT_WR);
    }
  }

  int epoll_fd_ = -1;
  std::vector<epoll_event> events_;
  mmsghdr rx_msgs_[kUdpBatch];
  iovec rx_iov_[kUdpBatch];
  sockaddr_storage rx_addrs_[kUdpBatch];
  alignas(8) unsigned char rx_control_[kUdpBatch][kReceiveControlBytes];
  uint32_t rx_buffers_[kUdpBatch];
  int rx_ready_ = 0;  // rx_buffers_[0, rx_ready_) are leased and ready
  mmsghdr tx_msgs_[kUdpBatch];
  iovec tx_iov_[kUdpBatch][2];  // header, payload
};

}  // namespace

std::unique_ptr<LoopCore> MakeEpollBackend() {
  return std::make_unique<EpollBackend>();
}

}  // namespace ringlab::transport::internal
