#include "transport/internal/loop_core.h"

#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringlab::transport::internal {

namespace {
std::atomic<bool> g_sq_stuck_for_testing{false};
}  // namespace
bool SqStuckForTesting() {
  return g_sq_stuck_for_testing.load(std::memory_order_relaxed);
}
void SetSqStuckForTesting(bool stuck) { g_sq_stuck_for_testing.store(stuck); }
namespace {
std::atomic<bool> g_sq_full_for_testing{false};
}  // namespace
bool SqFullForTesting() {
  return g_sq_full_for_testing.load(std::memory_order_relaxed);
}
void SetSqFullForTesting(bool full) { g_sq_full_for_testing.store(full); }

namespace {

// SocketId layout: generation in the high bits, slot + 1 in the low bits, so
// 0 is never a valid id and a stale id fails the generation check.
constexpr int kSlotBits = 20;
constexpr uint32_t kSlotMask = (1u << kSlotBits) - 1;
constexpr uint32_t kGenerationMask = (1u << (32 - kSlotBits)) - 1;

absl::Status ErrnoStatus(absl::string_view what, int err) {
  std::string message = absl::StrCat(what, ": ", std::strerror(err));
  if (err == EADDRINUSE) return absl::AlreadyExistsError(message);
  if (err == EACCES || err == EPERM)
    return absl::PermissionDeniedError(message);
  if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
    return absl::ResourceExhaustedError(
        absl::StrCat(message, " (raise `ulimit -n` or LoopOptions limits)"));
  }
  if (err == EINVAL || err == EAFNOSUPPORT) {
    return absl::InvalidArgumentError(message);
  }
  return absl::InternalError(message);
}

int SetInt(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof(value));
}

int GetInt(int fd, int level, int name) {
  int value = 0;
  socklen_t len = sizeof(value);
  return getsockopt(fd, level, name, &value, &len) == 0 ? value : -1;
}

// Sets a socket buffer size. The plain option is capped by
// net.core.rmem_max / wmem_max; as root (CAP_NET_ADMIN) the FORCE variant
// is not, so try it first. Returns 0 or -1 with errno, like setsockopt.
int SetBufferSize(int fd, int force_name, int name, int bytes) {
  if (SetInt(fd, SOL_SOCKET, force_name, bytes) == 0) return 0;
  return SetInt(fd, SOL_SOCKET, name, bytes);
}

// The interface index for a multicast interface given by address (IPv6
// joins and IPV6_MULTICAST_IF take an index): the address's scope id if
// it has one, else the interface that holds the address; 0 (the kernel's
// choice) for an unspecified address.
absl::StatusOr<unsigned> InterfaceIndexFor(const Endpoint& address) {
  if (!address.valid()) return 0u;
  if (address.family() != AF_INET6) {
    return absl::InvalidArgumentError(
        absl::StrCat(address.ToString(), " is not an IPv6 interface address"));
  }
  const auto* want = reinterpret_cast<const sockaddr_in6*>(address.sockaddr());
  if (want->sin6_scope_id != 0) return want->sin6_scope_id;
  if (IN6_IS_ADDR_UNSPECIFIED(&want->sin6_addr)) return 0u;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return ErrnoStatus("getifaddrs", errno);
  unsigned index = 0;
  for (ifaddrs* a = list; a != nullptr && index == 0; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET6) continue;
    const auto* have = reinterpret_cast<const sockaddr_in6*>(a->ifa_addr);
    if (std::memcmp(&have->sin6_addr, &want->sin6_addr, 16) == 0) {
      index = if_nametoindex(a->ifa_name);
    }
  }
  freeifaddrs(list);
  if (index == 0) {
    return absl::NotFoundError(
        absl::StrCat("no interface has the address ", address.HostString()));
  }
  return index;
}

}  // namespace

LoopCore::~LoopCore() {
  for (Socket& s : sockets_) {
    if (s.kind != SocketKind::kFree && s.fd >= 0) ::close(s.fd);
  }
  if (wakeup_fd_ >= 0) ::close(wakeup_fd_);
}

absl::Status LoopCore::InitCore(const LoopOptions& options,
                                const BackendInfo& backend_info) {
  options_ = options;
  info = backend_info;
  info.flags.zero_copy_send = options.zero_copy_send && info.flags.io_uring;
  info.flags.wait_batching = options.wait_batching && info.flags.io_uring &&
                             info.flags.provided_buffers &&
                             !info.flags.busy_poll && !info.flags.hybrid_spin;
  track_gaps_ = info.flags.hybrid_spin || info.flags.min_wait_batching;
  if (options.max_sockets == 0 || options.max_sockets >= kSlotMask) {
    return absl::InvalidArgumentError("max_sockets must be in 1..1048574");
  }
  absl::Status limits = FitFileLimit();
  if (!limits.ok()) return limits;
  absl::StatusOr<std::unique_ptr<BufferPool>> created =
      BufferPool::Create(options.buffer_size, options.buffer_count);
  if (!created.ok()) return created.status();
  pool = *std::move(created);
  // Budgets: receives come from the pool on epoll and plain uring, so
  // AcquireBuffer() leaves them a reserve; the provided-ring presets keep
  // their receive buffers in the ring. Send queues share what is left.
  const uint32_t ring_buffers =
      backend_info.flags.provided_buffers ? options.provided_buffers : 0;
  receive_reserve_ = options.receive_reserve_buffers;
  if (receive_reserve_ == 0 && ring_buffers == 0) {
    receive_reserve_ = options.buffer_count / 4;
  }
  if (receive_reserve_ + ring_buffers >= options.buffer_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoopOptions: receive_reserve_buffers (", receive_reserve_,
                     ") and provided_buffers (", ring_buffers,
                     ") leave nothing of buffer_count (", options.buffer_count,
                     ") for sends"));
  }
  send_budget_ = options.send_budget_buffers;
  const uint32_t sendable =
      options.buffer_count - receive_reserve_ - ring_buffers;
  if (send_budget_ == 0 || send_budget_ > sendable) send_budget_ = sendable;
  ring_send_limit_ = ring_buffers / 4;
  // Send descriptors: enough for every pool buffer to be queued twice (a
  // shared payload takes one per destination).
  const uint32_t op_count =
      options.send_ops != 0
          ? options.send_ops
          : std::max<uint32_t>(options.buffer_count * 2, 1024);
  if (op_count >= (1u << 24)) {
    return absl::InvalidArgumentError(
        "LoopOptions::send_ops must be below 2^24 (16,777,216)");
  }
  ops_.resize(op_count);
  free_ops_.reserve(op_count);
  for (uint32_t i = op_count; i-- > 0;) free_ops_.push_back(i);
  info.receive_reserve_buffers = receive_reserve_;
  info.send_budget_buffers = send_budget_;
  const uint32_t max_sockets = options_.max_sockets;  // after FitFileLimit
  sockets_.resize(max_sockets);
  free_slots_.reserve(max_sockets);
  for (uint32_t i = max_sockets; i-- > 0;) free_slots_.push_back(i);
  dirty_.reserve(max_sockets);
  scratch_.reserve(max_sockets);
  starved_.reserve(max_sockets);
  ready_.reserve(max_sockets);
  starved_next_.reserve(max_sockets);
  closing_.reserve(max_sockets);
  accept_paused_.reserve(max_sockets);
  writable_waiters_.reserve(max_sockets);
  dead_streams_.reserve(max_sockets);
  held_ready_.reserve(max_sockets);
  held_.resize(pool->buffer_count());
  free_held_.reserve(held_.size());
  for (uint32_t i = static_cast<uint32_t>(held_.size()); i-- > 0;) {
    free_held_.push_back(i);
  }
  wakeup_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeup_fd_ < 0) return ErrnoStatus("eventfd", errno);
  now = MonotonicNow();
  return absl::OkStatus();
}

// A Loop can hold max_sockets descriptors at once, and uring-fixed sizes its
// fixed-file table to max_sockets, which the kernel refuses beyond
// RLIMIT_NOFILE. Debian's default soft limit is 1024 (the hard one is usually
// far higher), so: raise the soft limit toward the hard one if allowed, and
// if that is not enough, clamp max_sockets and say so (issue 6, fault 4).
absl::Status LoopCore::FitFileLimit() {
  info.max_sockets = options_.max_sockets;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return absl::OkStatus();
  const rlim_t wanted = rlim_t{options_.max_sockets} + kFdReserve;
  if (limit.rlim_cur >= wanted) return absl::OkStatus();
  const rlim_t before = limit.rlim_cur;
  if (options_.raise_fd_limit && limit.rlim_max > limit.rlim_cur) {
    rlimit raised = limit;
    raised.rlim_cur = std::min(wanted, limit.rlim_max);
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      limit = raised;
      absl::StrAppend(&info.adjustments,
                      "raised RLIMIT_NOFILE soft limit from ", before, " to ",
                      limit.rlim_cur, " (hard ", limit.rlim_max,
                      ") for max_sockets=", options_.max_sockets);
    }
  }
  if (limit.rlim_cur >= wanted) return absl::OkStatus();
  if (limit.rlim_cur < kFdReserve + 16) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "RLIMIT_NOFILE is ", limit.rlim_cur, " (hard ", limit.rlim_max,
        "): too low for a Loop. Fix: raise it (`ulimit -n 4096`, or "
        "LimitNOFILE= in a systemd unit)"));
  }
  const uint32_t clamped = static_cast<uint32_t>(limit.rlim_cur - kFdReserve);
  if (!info.adjustments.empty()) info.adjustments += "; ";
  absl::StrAppend(&info.adjustments, "max_sockets clamped from ",
                  options_.max_sockets, " to ", clamped,
                  " to fit RLIMIT_NOFILE (soft ", limit.rlim_cur, ", hard ",
                  limit.rlim_max,
                  "); raise it with `ulimit -n` (or LimitNOFILE=) for more");
  options_.max_sockets = clamped;
  info.max_sockets = clamped;
  return absl::OkStatus();
}

// --- Socket table ------------------------------------------------------------

SocketId LoopCore::IdOf(const Socket& s) const {
  return SocketId{((s.generation & kGenerationMask) << kSlotBits) |
                  (SlotOf(s) + 1)};
}

Socket* LoopCore::FromId(uint32_t value) {
  const uint32_t slot_plus_one = value & kSlotMask;
  if (slot_plus_one == 0 || slot_plus_one > sockets_.size()) return nullptr;
  Socket& s = sockets_[slot_plus_one - 1];
  if (s.kind == SocketKind::kFree) return nullptr;
  if ((s.generation & kGenerationMask) != (value >> kSlotBits)) return nullptr;
  return &s;
}

Socket* LoopCore::Lookup(SocketId id) { return FromId(id.value); }

const Socket* LoopCore::Lookup(SocketId id) const {
  return const_cast<LoopCore*>(this)->FromId(id.value);
}

absl::StatusOr<Socket*> LoopCore::NewSocket(SocketKind kind, int fd,
                                            SocketHandler* handler) {
  if (free_slots_.empty()) {
    ::close(fd);
    return absl::ResourceExhaustedError(absl::StrCat(
        "Loop socket table full (max_sockets=", options_.max_sockets,
        "; raise LoopOptions::max_sockets)"));
  }
  const uint32_t slot = free_slots_.back();
  free_slots_.pop_back();
  Socket& s = sockets_[slot];
  const uint32_t generation = s.generation;
  s = Socket();
  s.generation = generation;
  s.kind = kind;
  s.fd = fd;
  s.handler = handler;
  absl::Status registered = RegisterSocket(s);
  if (!registered.ok()) {
    ::close(fd);
    s.kind = SocketKind::kFree;
    s.fd = -1;
    ++s.generation;
    free_slots_.push_back(slot);
    return registered;
  }
  ++open_sockets;
  return &s;
}

absl::StatusOr<SocketId> LoopCore::OpenUdp(const UdpOptions& options,
                                           SocketHandler* handler) {
  if (!options.bind.valid()) {
    return absl::InvalidArgumentError("UdpOptions::bind is required");
  }
  const int fd = ::socket(options.bind.family(),
                          SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket(UDP)", errno);
  auto fail = [fd](absl::string_view what) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(what, err);
  };
  if (options.reuse_address) {
    if (SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0 ||
        SetInt(fd, SOL_SOCKET, SO_REUSEPORT, 1) != 0) {
      return fail("setsockopt(SO_REUSEADDR)");
    }
  }
  if (options.receive_buffer_bytes > 0 &&
      SetBufferSize(fd, SO_RCVBUFFORCE, SO_RCVBUF,
                    options.receive_buffer_bytes) != 0) {
    return fail("setsockopt(SO_RCVBUF)");
  }
  if (options.send_buffer_bytes > 0 &&
      SetBufferSize(fd, SO_SNDBUFFORCE, SO_SNDBUF, options.send_buffer_bytes) !=
          0) {
    return fail("setsockopt(SO_SNDBUF)");
  }
  if (options.bind.family() == AF_INET6) {
    if (options.multicast_interface.has_value()) {
      absl::StatusOr<unsigned> index =
          InterfaceIndexFor(*options.multicast_interface);
      if (!index.ok()) {
        ::close(fd);
        return index.status();
      }
      if (SetInt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF,
                 static_cast<int>(*index)) != 0) {
        return fail("setsockopt(IPV6_MULTICAST_IF)");
      }
    }
    if (SetInt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, options.multicast_ttl) !=
            0 ||
        SetInt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP,
               options.multicast_loop ? 1 : 0) != 0) {
      return fail("setsockopt(IPV6_MULTICAST_HOPS/LOOP)");
    }
  }
  if (options.receive_destination) {
    const bool v6 = options.bind.family() == AF_INET6;
    if (SetInt(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP,
               v6 ? IPV6_RECVPKTINFO : IP_PKTINFO, 1) != 0) {
      return fail("setsockopt(IP_PKTINFO)");
    }
  }
  if (options.receive_drop_count &&
      SetInt(fd, SOL_SOCKET, SO_RXQ_OVFL, 1) != 0) {
    return fail("setsockopt(SO_RXQ_OVFL)");
  }
  if (options.bind.is_ipv4()) {
    if (options.multicast_interface.has_value()) {
      in_addr iface{};
      iface.s_addr = htonl(options.multicast_interface->ipv4_host_order());
      if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &iface, sizeof(iface)) !=
          0) {
        return fail("setsockopt(IP_MULTICAST_IF)");
      }
    }
    if (SetInt(fd, IPPROTO_IP, IP_MULTICAST_TTL, options.multicast_ttl) != 0 ||
        SetInt(fd, IPPROTO_IP, IP_MULTICAST_LOOP,
               options.multicast_loop ? 1 : 0) != 0) {
      return fail("setsockopt(IP_MULTICAST_TTL/LOOP)");
    }
  }
  if (::bind(fd, options.bind.sockaddr(), options.bind.socklen()) != 0) {
    return fail(absl::StrCat("bind UDP ", options.bind.ToString()));
  }
  bool connected = false;
  if (options.connect.has_value()) {
    if (::connect(fd, options.connect->sockaddr(),
                  options.connect->socklen()) != 0) {
      return fail(absl::StrCat("connect UDP ", options.connect->ToString()));
    }
    connected = true;
  }
  absl::StatusOr<Socket*> s = NewSocket(SocketKind::kUdp, fd, handler);
  if (!s.ok()) return s.status();
  (*s)->connected = connected;
  SetSendLimits(**s, options.send_queue_limit_bytes,
                options.send_queue_low_water_bytes);
  NoteBufferSizes(**s, options.receive_buffer_bytes, options.send_buffer_bytes);
  (*s)->receive_control =
      options.receive_destination || options.receive_drop_count;
  (*s)->gso = options.segmentation_offload;
  if (connected) {
    std::memcpy(&(*s)->peer_addr, options.connect->sockaddr(),
                options.connect->socklen());
    (*s)->peer_addr_len = options.connect->socklen();
  }
  ArmReceive(**s);
  return IdOf(**s);
}

absl::Status LoopCore::Multicast(SocketId id, const Endpoint& group,
                                 const Endpoint& interface_address, bool join) {
  Socket* s = Lookup(id);
  if (s == nullptr || s->kind != SocketKind::kUdp) {
    return absl::InvalidArgumentError("not an open UDP socket");
  }
  if (!group.is_multicast()) {
    return absl::InvalidArgumentError(
        absl::StrCat(group.ToString(), " is not a multicast group"));
  }
  int rc = 0;
  if (group.is_ipv4()) {
    ip_mreq mreq{};
    mreq.imr_multiaddr.s_addr = htonl(group.ipv4_host_order());
    mreq.imr_interface.s_addr = htonl(interface_address.ipv4_host_order());
    rc = setsockopt(s->fd, IPPROTO_IP,
                    join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &mreq,
                    sizeof(mreq));
  } else {
    // IPv6 joins name the interface by index.
    absl::StatusOr<unsigned> index = InterfaceIndexFor(interface_address);
    if (!index.ok()) return index.status();
    ipv6_mreq mreq{};
    std::memcpy(
        &mreq.ipv6mr_multiaddr,
        &reinterpret_cast<const sockaddr_in6*>(group.sockaddr())->sin6_addr,
        16);
    mreq.ipv6mr_interface = *index;
    rc = setsockopt(s->fd, IPPROTO_IPV6,
                    join ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP, &mreq,
                    sizeof(mreq));
  }
  if (rc != 0) {
    return ErrnoStatus(
        absl::StrCat(join ? "join " : "leave ", group.HostString(), " on ",
                     interface_address.HostString()),
        errno);
  }
  return absl::OkStatus();
}

// What was asked for and what the kernel granted (it reports twice what was
// set, for its own bookkeeping, and caps the plain options at rmem_max /
// wmem_max); a request granted less than asked is counted.
void LoopCore::NoteBufferSizes(Socket& s, int receive_bytes, int send_bytes) {
  if (receive_bytes > 0 &&
      GetInt(s.fd, SOL_SOCKET, SO_RCVBUF) < 2 * receive_bytes) {
    ++counters.socket_buffers_clamped;
  }
  if (send_bytes > 0 && GetInt(s.fd, SOL_SOCKET, SO_SNDBUF) < 2 * send_bytes) {
    ++counters.socket_buffers_clamped;
  }
}

absl::StatusOr<SocketBuffers> LoopCore::GetSocketBuffers(SocketId id) const {
  const Socket* s = Lookup(id);
  if (s == nullptr) return absl::NotFoundError("no such socket");
  SocketBuffers b;
  b.receive_bytes = GetInt(s->fd, SOL_SOCKET, SO_RCVBUF);
  b.send_bytes = GetInt(s->fd, SOL_SOCKET, SO_SNDBUF);
  if (b.receive_bytes < 0 || b.send_bytes < 0) {
    return ErrnoStatus("getsockopt(SO_RCVBUF/SO_SNDBUF)", errno);
  }
  return b;
}

absl::StatusOr<SocketId> LoopCore::ListenTcp(const Endpoint& bind,
                                             SocketHandler* handler,
                                             const TcpOptions& options) {
  const int fd =
      ::socket(bind.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket(TCP)", errno);
  auto fail = [fd](absl::string_view what) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(what, err);
  };
  if (options.reuse_address && SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0) {
    return fail("setsockopt(SO_REUSEADDR)");
  }
  // SO_REUSEPORT: several listeners (one per Loop, each on its own thread)
  // share the port and the kernel spreads new connections over them.
  if (options.reuse_port && SetInt(fd, SOL_SOCKET, SO_REUSEPORT, 1) != 0) {
    return fail("setsockopt(SO_REUSEPORT)");
  }
  // Accepted sockets inherit TCP_NODELAY and buffer sizes from the listener.
  if (options.no_delay && SetInt(fd, IPPROTO_TCP, TCP_NODELAY, 1) != 0) {
    return fail("setsockopt(TCP_NODELAY)");
  }
  if (options.receive_buffer_bytes > 0 &&
      SetBufferSize(fd, SO_RCVBUFFORCE, SO_RCVBUF,
                    options.receive_buffer_bytes) != 0) {
    return fail("setsockopt(SO_RCVBUF)");
  }
  if (options.send_buffer_bytes > 0 &&
      SetBufferSize(fd, SO_SNDBUFFORCE, SO_SNDBUF, options.send_buffer_bytes) !=
          0) {
    return fail("setsockopt(SO_SNDBUF)");
  }
  if (::bind(fd, bind.sockaddr(), bind.socklen()) != 0) {
    return fail(absl::StrCat("bind TCP ", bind.ToString()));
  }
  if (::listen(fd, options.backlog) != 0) return fail("listen");
  absl::StatusOr<Socket*> s = NewSocket(SocketKind::kListener, fd, handler);
  if (!s.ok()) return s.status();
  // Kept for the connections it accepts.
  SetSendLimits(**s, options.send_queue_limit_bytes,
                options.send_queue_low_water_bytes);
  NoteBufferSizes(**s, options.receive_buffer_bytes, options.send_buffer_bytes);
  ArmReceive(**s);
  return IdOf(**s);
}

absl::StatusOr<SocketId> LoopCore::ConnectTcp(const Endpoint& peer,
                                              SocketHandler* handler,
                                              const TcpOptions& options) {
  if (!peer.valid()) return absl::InvalidArgumentError("invalid peer");
  const int fd =
      ::socket(peer.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket(TCP)", errno);
  if (options.no_delay) SetInt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  if (options.receive_buffer_bytes > 0) {
    SetBufferSize(fd, SO_RCVBUFFORCE, SO_RCVBUF, options.receive_buffer_bytes);
  }
  if (options.send_buffer_bytes > 0) {
    SetBufferSize(fd, SO_SNDBUFFORCE, SO_SNDBUF, options.send_buffer_bytes);
  }
  absl::StatusOr<Socket*> created = NewSocket(SocketKind::kStream, fd, handler);
  if (!created.ok()) return created.status();
  Socket& s = **created;
  s.connecting = true;
  SetSendLimits(s, options.send_queue_limit_bytes,
                options.send_queue_low_water_bytes);
  NoteBufferSizes(s, options.receive_buffer_bytes, options.send_buffer_bytes);
  std::memcpy(&s.peer_addr, peer.sockaddr(), peer.socklen());
  s.peer_addr_len = peer.socklen();
  if (!StartConnect(s, peer)) {
    // The backend wants a plain non-blocking connect(); it will watch for
    // writability.
    ++counters.socket_syscalls;
    if (::connect(fd, peer.sockaddr(), peer.socklen()) == 0) {
      DeliverConnect(s, 0);
    } else if (errno != EINPROGRESS) {
      DeliverConnect(s, -errno);
    }
  }
  return IdOf(s);
}

absl::StatusOr<Endpoint> LoopCore::LocalEndpoint(SocketId id) const {
  const Socket* s = Lookup(id);
  if (s == nullptr) return absl::NotFoundError("no such socket");
  sockaddr_storage addr;
  socklen_t len = sizeof(addr);
  if (getsockname(s->fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return ErrnoStatus("getsockname", errno);
  }
  return Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&addr), len);
}

int LoopCore::NativeHandle(SocketId id) const {
  const Socket* s = Lookup(id);
  return s == nullptr ? -1 : s->fd;
}

// --- Sends -------------------------------------------------------------------

void LoopCore::SetSendLimits(Socket& s, size_t limit, size_t low_water) {
  s.send_limit = limit > 0 ? limit : options_.send_queue_limit_bytes;
  s.send_low_water =
      low_water > 0 && low_water < s.send_limit ? low_water : s.send_limit / 2;
}

BufferLease LoopCore::AcquireForSend() {
  // The receive reserve: what receives need to keep every socket readable
  // while the application holds buffers for sending.
  if (pool->free_count() <= receive_reserve_) {
    ++counters.pool_exhausted;
    return BufferLease();
  }
  BufferLease lease = pool->Acquire();
  if (!lease.valid()) ++counters.pool_exhausted;
  return lease;
}

int LoopCore::Refuse(Socket& s, bool budget) {
  if (budget) {
    ++counters.send_refused_budget;
  } else {
    ++counters.send_refused_queue_full;
  }
  if (!s.writable_wanted) {
    s.writable_wanted = true;
    writable_waiters_.push_back(SlotOf(s));
  }
  s.writable_budget = s.writable_budget || budget;
  return -EAGAIN;
}

uint32_t LoopCore::AllocOp() {
  if (free_ops_.empty()) return kNoOp;
  const uint32_t index = free_ops_.back();
  free_ops_.pop_back();
  SendOp& o = ops_[index];
  o.next = kNoOp;
  o.buffer = BufferPool::kNoBuffer;
  o.payload_offset = 0;
  o.payload_size = 0;
  o.header_size = 0;
  o.sent = 0;
  o.tag = 0;
  return index;
}

void LoopCore::FreeOp(uint32_t index) {
  SendOp& o = ops_[index];
  if (o.buffer != BufferPool::kNoBuffer) {
    BufferPool::Slot& slot = pool->slot(o.buffer);
    // The buffer leaves the send budget when no other queued send holds it
    // (a shared payload counts once however many sockets it goes to).
    if (--slot.send_refs == 0) {
      if (slot.ring_owned != 0) {
        --ring_send_held_;
      } else {
        --send_held_;
      }
    }
    pool->Unref(o.buffer);
    o.buffer = BufferPool::kNoBuffer;
  }
  free_ops_.push_back(index);
}

// Backpressure (issue 6, fault 7): a socket's queue holds at most its limit
// (a send larger than the limit is taken when the queue is empty, so it can
// always make progress), and all send queues together at most the send
// budget of pool buffers and the send descriptors, so a peer that stops
// reading cannot take the buffers receives and other sockets need. A refused
// op is freed (its payload reference dropped); OnWritable follows.
int LoopCore::QueueOp(Socket& s, uint32_t index) {
  SendOp& o = ops_[index];
  if (s.send_bytes > 0 && s.send_bytes + o.size() > s.send_limit) {
    FreeOp(index);
    return Refuse(s, /*budget=*/false);
  }
  if (o.buffer != BufferPool::kNoBuffer) {
    BufferPool::Slot& slot = pool->slot(o.buffer);
    if (slot.send_refs == 0) {
      // First send of this buffer: it enters the budget.
      const bool ring = slot.ring_owned != 0;
      if (ring ? ring_send_held_ >= ring_send_limit_
               : send_held_ >= send_budget_) {
        FreeOp(index);
        return Refuse(s, /*budget=*/true);
      }
      if (ring) {
        ++ring_send_held_;
      } else {
        ++send_held_;
      }
    }
    ++slot.send_refs;
  }
  if (s.send_tail == kNoOp) {
    s.send_head = index;
  } else {
    ops_[s.send_tail].next = index;
  }
  s.send_tail = index;
  ++s.send_queued;
  s.send_bytes += o.size();
  MarkDirty(s);
  return 0;
}

int LoopCore::Enqueue(Socket& s, BufferLease data, uint64_t tag,
                      const Endpoint* to) {
  if (!data.valid()) return -EINVAL;
  if (pool->slot(data.index()).ring_owned != 0 &&
      ring_send_held_ >= ring_send_limit_) {
    // A received buffer from the provided ring: queued for long, it would
    // starve every socket's receives. Past a quarter of the ring, send a
    // copy and hand the ring buffer back now.
    if (send_held_ >= send_budget_) return Refuse(s, /*budget=*/true);
    BufferLease copy = pool->Acquire();
    if (!copy.valid()) return Refuse(s, /*budget=*/true);
    std::memcpy(copy.data(), data.data(), data.size());
    copy.set_size(data.size());
    data = std::move(copy);  // the ring buffer goes back to the ring
    ++counters.ring_buffers_copied_for_send;
  }
  const uint32_t index = AllocOp();
  if (index == kNoOp) return Refuse(s, /*budget=*/true);
  SendOp& o = ops_[index];
  o.payload_size = static_cast<uint32_t>(data.size());
  o.buffer = BufferPool::Detach(data);
  o.payload_offset = pool->slot(o.buffer).data_offset;
  pool->slot(o.buffer).refs = 1;  // the op's reference
  o.tag = tag;
  if (to != nullptr) o.destination = *to;
  return QueueOp(s, index);
}

SharedBuffer LoopCore::Share(BufferLease lease) {
  if (!lease.valid()) return SharedBuffer();
  if (pool->slot(lease.index()).ring_owned != 0) {
    // A ring buffer fanned out would be held by every queue it goes to:
    // one copy into a pool buffer keeps the ring for receives.
    BufferLease copy = AcquireForSend();
    if (!copy.valid()) return SharedBuffer();
    std::memcpy(copy.data(), lease.data(), lease.size());
    copy.set_size(lease.size());
    ++counters.ring_buffers_copied_for_send;
    return pool->Share(std::move(copy));
  }
  return pool->Share(std::move(lease));
}

int LoopCore::SendShared(SocketId id, const SharedBuffer& payload,
                         std::span<const std::byte> header, const Endpoint* to,
                         uint64_t tag) {
  Socket* s = Lookup(id);
  const SocketKind kind =
      to != nullptr ? SocketKind::kUdp : SocketKind::kStream;
  if (s == nullptr || s->kind != kind) return -EBADF;
  if (s->closing) return -ECANCELED;
  if (header.size() > Loop::kMaxSendHeaderBytes) return -EMSGSIZE;
  if (!payload.valid() && header.empty()) return -EINVAL;
  if (to != nullptr) {
    if (!s->connected && !to->valid()) return -EDESTADDRREQ;
  } else {
    if (s->shutdown_requested) return -EPIPE;
    if (s->write_error != 0) return s->write_error;
    if (!s->connected && !s->connecting) return -ENOTCONN;
  }
  const uint32_t index = AllocOp();
  if (index == kNoOp) return Refuse(*s, /*budget=*/true);
  SendOp& o = ops_[index];
  if (!header.empty()) {
    std::memcpy(o.header, header.data(), header.size());
    o.header_size = static_cast<uint32_t>(header.size());
  }
  if (payload.valid()) {
    o.buffer = payload.index();
    o.payload_offset = payload.offset();
    o.payload_size = static_cast<uint32_t>(payload.size());
    pool->AddRef(o.buffer);
  }
  o.tag = tag;
  if (to != nullptr) o.destination = *to;
  return QueueOp(*s, index);
}

int LoopCore::AppendIov(const SendOp& o, iovec* iov, int max) const {
  int n = 0;
  if (o.sent < o.header_size && n < max) {
    iov[n].iov_base = const_cast<std::byte*>(o.header) + o.sent;
    iov[n].iov_len = o.header_size - o.sent;
    ++n;
  }
  const uint32_t payload_sent =
      o.sent > o.header_size ? o.sent - o.header_size : 0;
  if (o.payload_size > payload_sent && n < max) {
    iov[n].iov_base = PayloadOf(o) + payload_sent;
    iov[n].iov_len = o.payload_size - payload_sent;
    ++n;
  }
  return n;
}

// Called at the end of each iteration: refused sockets hear OnWritable once
// their queue is below its low-water mark and, if the budget refused them,
// the budget is at most half spent and at least half the send descriptors
// are free. (Descriptors only come back with completions, which this call
// does not reap: without that check a handler refused for descriptors would
// be woken, refused and re-queued here forever.)
void LoopCore::NotifyWritable() {
  for (size_t i = 0; i < writable_waiters_.size();) {
    Socket& s = sockets_[writable_waiters_[i]];
    const bool valid = s.kind != SocketKind::kFree && s.writable_wanted;
    const bool room =
        valid && s.send_bytes <= s.send_low_water &&
        (s.writable_budget ? send_held_ <= send_budget_ / 2 &&
                                 free_ops_.size() * 2 >= ops_.size()
                           : send_held_ < send_budget_ && !free_ops_.empty());
    if (valid && !room && !s.closing) {
      ++i;
      continue;
    }
    writable_waiters_[i] = writable_waiters_.back();
    writable_waiters_.pop_back();
    if (!valid) continue;
    s.writable_wanted = false;
    s.writable_budget = false;
    if (s.closing) continue;
    ++counters.writable_notifications;
    s.handler->OnWritable(IdOf(s));
  }
}

int LoopCore::SendTo(SocketId id, BufferLease data, const Endpoint& to,
                     uint64_t tag) {
  Socket* s = Lookup(id);
  if (s == nullptr || s->kind != SocketKind::kUdp) return -EBADF;
  if (s->closing) return -ECANCELED;
  if (!s->connected && !to.valid()) return -EDESTADDRREQ;
  return Enqueue(*s, std::move(data), tag, &to);
}

int LoopCore::Send(SocketId id, BufferLease data, uint64_t tag) {
  Socket* s = Lookup(id);
  if (s == nullptr || s->kind != SocketKind::kStream) return -EBADF;
  if (s->closing) return -ECANCELED;
  if (s->shutdown_requested) return -EPIPE;
  if (s->write_error != 0) return s->write_error;
  // Neither connected nor connecting: the connect failed (write_error holds
  // its result), or this is not a stream that can carry data.
  if (!s->connected && !s->connecting) return -ENOTCONN;
  return Enqueue(*s, std::move(data), tag, nullptr);
}

int LoopCore::SetReceivePaused(SocketId id, bool paused) {
  Socket* s = Lookup(id);
  if (s == nullptr || s->kind == SocketKind::kListener) return -EBADF;
  if (s->closing) return -ECANCELED;
  if (s->receive_paused == paused) return 0;
  s->receive_paused = paused;
  if (paused) {
    PauseReceiveOp(*s);
  } else if (s->held_head != kNoOp || s->read_close_held) {
    // Delivered by the next iteration rather than from inside this call,
    // which may itself run in a handler; the receive is armed after them.
    if (!s->held_listed) {
      s->held_listed = true;
      held_ready_.push_back(SlotOf(*s));
    }
  } else if (!s->read_closed && (s->connected || s->kind == SocketKind::kUdp)) {
    ResumeReceiveOp(*s);
  }
  return 0;
}

// A receive the kernel had under way when PauseReceive ran can still
// complete: on uring-sqpoll the SQ thread picks the cancellation up some
// time later, and a multishot receive posts CQEs until then; a handler that
// pauses in the middle of a batch (recvmmsg, a CQ full of CQEs) leaves the
// rest of the batch. Delivering them would break the promise that nothing
// arrives while paused, and dropping them would lose accepted data, so the
// Loop keeps them (with their buffers) and delivers them on ResumeReceive.
void LoopCore::Hold(Socket& s, uint32_t buffer, uint32_t offset, uint32_t size,
                    const DatagramInfo* info) {
  if (free_held_.empty()) {
    // One record per pool buffer, so this means a bookkeeping bug; count
    // it as a drop rather than deliver while paused.
    ++counters.receive_errors;
    pool->ReleaseIndex(buffer);
    return;
  }
  const uint32_t index = free_held_.back();
  free_held_.pop_back();
  HeldReceive& h = held_[index];
  h.next = kNoOp;
  h.buffer = buffer;
  h.offset = offset;
  h.size = size;
  if (info != nullptr) h.info = *info;
  if (s.held_tail == kNoOp) {
    s.held_head = index;
  } else {
    held_[s.held_tail].next = index;
  }
  s.held_tail = index;
  ++counters.receives_held;
}

void LoopCore::DeliverHeld(Socket& s) {
  while (s.held_head != kNoOp && !s.receive_paused && !s.closing) {
    const uint32_t index = s.held_head;
    HeldReceive& h = held_[index];
    s.held_head = h.next;
    if (s.held_head == kNoOp) s.held_tail = kNoOp;
    const uint32_t buffer = h.buffer;
    const uint32_t offset = h.offset;
    const uint32_t size = h.size;
    DatagramInfo info = h.info;
    free_held_.push_back(index);
    pool->slot(buffer).lent_at_ns = now.nanos();
    BufferLease lease = pool->Adopt(buffer, size, offset);
    if (s.kind == SocketKind::kUdp) {
      s.handler->OnDatagramInfo(IdOf(s), info, std::move(lease));
    } else {
      s.handler->OnData(IdOf(s), std::move(lease));
    }
  }
  if (s.held_head != kNoOp || s.receive_paused || s.closing) return;
  if (s.read_close_held) {
    s.read_close_held = false;
    s.handler->OnReadClosed(IdOf(s), s.read_close_result);
    return;
  }
  if (!s.read_closed && (s.connected || s.kind == SocketKind::kUdp)) {
    ResumeReceiveOp(s);
  }
}

void LoopCore::ReleaseHeld(Socket& s) {
  while (s.held_head != kNoOp) {
    const uint32_t index = s.held_head;
    s.held_head = held_[index].next;
    pool->ReleaseIndex(held_[index].buffer);
    free_held_.push_back(index);
  }
  s.held_tail = kNoOp;
  s.read_close_held = false;
}

size_t LoopCore::QueuedSendBytes(SocketId id) const {
  const Socket* s = Lookup(id);
  return s == nullptr ? 0 : s->send_bytes;
}

absl::Status LoopCore::ShutdownWrite(SocketId id) {
  Socket* s = Lookup(id);
  if (s == nullptr || s->kind != SocketKind::kStream) {
    return absl::InvalidArgumentError("not an open TCP stream");
  }
  s->shutdown_requested = true;
  // The FIN goes out once the queue drains: FlushSends checks this flag.
  MarkDirty(*s);
  return absl::OkStatus();
}

void LoopCore::MarkDirty(Socket& s) {
  if (s.dirty) return;
  s.dirty = true;
  dirty_.push_back(SlotOf(s));
}

void LoopCore::MarkStarved(Socket& s) {
  if (s.receive_starved) return;
  s.receive_starved = true;
  starved_.push_back(SlotOf(s));
}

void LoopCore::MarkReadReady(Socket& s) {
  if (s.read_ready) return;
  s.read_ready = true;
  ++counters.read_budget_yields;
  ready_.push_back(SlotOf(s));
}

void LoopCore::ConsumeStreamSent(Socket& s, size_t bytes) {
  s.send_bytes -= bytes < s.send_bytes ? bytes : s.send_bytes;
  while (s.send_head != kNoOp) {
    const uint32_t index = s.send_head;
    SendOp& o = ops_[index];
    const size_t left = o.size() - o.sent;
    if (bytes < left) {
      // The kernel took only part of this send: remember where to resume.
      o.sent += static_cast<uint32_t>(bytes);
      if (bytes > 0) ++counters.send_partial;
      return;
    }
    bytes -= left;
    s.send_head = o.next;
    if (s.send_head == kNoOp) s.send_tail = kNoOp;
    --s.send_queued;
    const int size = static_cast<int>(o.size());
    const uint64_t tag = o.tag;
    FreeOp(index);
    if (!s.closing) s.handler->OnSendComplete(IdOf(s), size, tag);
  }
}

uint32_t LoopCore::PopDatagram(Socket& s) {
  const uint32_t index = s.send_head;
  if (index == kNoOp) return index;
  SendOp& o = ops_[index];
  s.send_head = o.next;
  if (s.send_head == kNoOp) s.send_tail = kNoOp;
  --s.send_queued;
  s.send_bytes -= o.size();
  return index;
}

void LoopCore::CompleteDatagram(Socket& s, uint32_t index, int result) {
  const uint64_t tag = ops_[index].tag;
  if (result >= 0) {
    ++counters.datagrams_sent;
    counters.bytes_sent += static_cast<uint64_t>(result);
  }
  FreeOp(index);
  if (!s.closing || result < 0) s.handler->OnSendComplete(IdOf(s), result, tag);
}

uint32_t LoopCore::PopGsoBatch(Socket& s, int* count) {
  *count = 0;
  if (!s.gso || s.send_head == kNoOp) return kNoOp;
  const SendOp& first = ops_[s.send_head];
  const uint32_t segment = first.size();
  if (segment == 0) return kNoOp;
  // How many of the queue's head can go together.
  int n = 0;
  size_t total = 0;
  for (uint32_t i = s.send_head; i != kNoOp && n < Loop::kMaxGsoSegments;
       i = ops_[i].next) {
    const SendOp& o = ops_[i];
    if (o.size() > segment ||
        (!s.connected && o.destination != first.destination) ||
        total + o.size() > 65000) {
      break;
    }
    ++n;
    total += o.size();
    if (o.size() < segment) break;  // a shorter one can only be the last
  }
  if (n < 2) return kNoOp;
  std::memset(&s.send_msg, 0, sizeof(s.send_msg));
  int iovs = 0;
  const uint32_t head = s.send_head;
  uint32_t tail = kNoOp;
  for (int k = 0; k < n; ++k) {
    const uint32_t index = PopDatagram(s);
    SendOp& o = ops_[index];
    iovs += AppendIov(o, s.send_iov + iovs, kMaxGather - iovs);
    if (tail != kNoOp) ops_[tail].next = index;
    tail = index;
  }
  ops_[tail].next = kNoOp;
  s.send_msg.msg_iov = s.send_iov;
  s.send_msg.msg_iovlen = static_cast<size_t>(iovs);
  if (!s.connected) {
    s.send_msg.msg_name = const_cast<sockaddr*>(first.destination.sockaddr());
    s.send_msg.msg_namelen = first.destination.socklen();
  }
  s.send_msg.msg_control = s.send_cmsg;
  s.send_msg.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
  cmsghdr* c = CMSG_FIRSTHDR(&s.send_msg);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  const uint16_t gso_size = static_cast<uint16_t>(segment);
  std::memcpy(CMSG_DATA(c), &gso_size, sizeof(gso_size));
  *count = n;
  return head;
}

void LoopCore::RequeueGsoBatch(Socket& s, uint32_t head) {
  uint32_t tail = head;
  uint32_t n = 1;
  size_t bytes = ops_[head].size();
  while (ops_[tail].next != kNoOp) {
    tail = ops_[tail].next;
    ++n;
    bytes += ops_[tail].size();
  }
  ops_[tail].next = s.send_head;
  if (s.send_head == kNoOp) s.send_tail = tail;
  s.send_head = head;
  s.send_queued += n;
  s.send_bytes += bytes;
  MarkDirty(s);
}

void LoopCore::CompleteGsoBatch(Socket& s, uint32_t head, int result) {
  if (result == -EIO || result == -EINVAL || result == -EOPNOTSUPP) {
    // The path does not take GSO: send these one by one from now on, in
    // their order, ahead of what was queued after them.
    s.gso = false;
    ++counters.gso_refused;
    RequeueGsoBatch(s, head);
    return;
  }
  if (result >= 0) ++counters.gso_sends;
  uint32_t index = head;
  while (index != kNoOp) {
    const uint32_t next = ops_[index].next;
    if (result >= 0) ++counters.gso_datagrams;
    CompleteDatagram(
        s, index, result >= 0 ? static_cast<int>(ops_[index].size()) : result);
    index = next;
  }
}

void LoopCore::FailQueuedSends(Socket& s, int error) {
  // Detach the whole queue first: a completion callback may Send() again
  // (to this socket or another), and must find a consistent, empty queue.
  uint32_t index = s.send_head;
  s.send_head = kNoOp;
  s.send_tail = kNoOp;
  s.send_queued = 0;
  s.send_bytes = 0;
  while (index != kNoOp) {
    const uint32_t next = ops_[index].next;
    const uint64_t tag = ops_[index].tag;
    FreeOp(index);
    s.handler->OnSendComplete(IdOf(s), error, tag);
    index = next;
  }
}

// A stream whose send failed (or whose connect failed) cannot be written any
// more: later Send() calls fail at once with the same error instead of
// queueing a lease that would wait for Close().
void LoopCore::FailStream(Socket& s, int error) {
  if (s.write_error == 0 && error != -ECANCELED) s.write_error = error;
  FailQueuedSends(s, error);
  // The connection is gone but its end has not been read: watch that it
  // is (CheckDeadStreams).
  if (error != -ECANCELED && !s.read_closed && !s.closing && !s.dead_listed &&
      s.kind == SocketKind::kStream) {
    s.dead_listed = true;
    s.dead_check_every = std::chrono::milliseconds(20);
    s.dead_check_at = now + s.dead_check_every;
    dead_streams_.push_back(SlotOf(s));
  }
}

// Issue 6, fault 8, on uring-sqpoll: under load, after a peer reset and a
// send had failed on the connection, its multishot receive could stay
// armed with nothing left to wake it: the socket closed, no bytes queued,
// the error consumed by the failed send, and OnReadClosed never came. So a
// stream whose send failed and whose end is still unread gets its receive
// kicked after 20 ms, then with a backoff up to 1 s until the end is read.
void LoopCore::CheckDeadStreams() {
  for (size_t i = 0; i < dead_streams_.size();) {
    Socket& s = sockets_[dead_streams_[i]];
    if (s.kind != SocketKind::kStream || !s.dead_listed || s.read_closed ||
        s.closing) {
      s.dead_listed = false;
      dead_streams_[i] = dead_streams_.back();
      dead_streams_.pop_back();
      continue;
    }
    if (s.dead_check_at <= now) {
      KickReceive(s);
      s.dead_check_every =
          std::min<Duration>(s.dead_check_every * 2, std::chrono::seconds(1));
      s.dead_check_at = now + s.dead_check_every;
    }
    ++i;
  }
}

// --- Delivery ----------------------------------------------------------------

void LoopCore::DeliverDatagram(Socket& s, uint32_t buffer, uint32_t offset,
                               uint32_t size, const Endpoint& from) {
  DatagramInfo info;
  info.from = from;
  DeliverDatagram(s, buffer, offset, size, info);
}

void LoopCore::DeliverDatagram(Socket& s, uint32_t buffer, uint32_t offset,
                               uint32_t size, DatagramInfo& info) {
  ++counters.datagrams_received;
  counters.bytes_received += size;
  if (s.receive_control) info.dropped = s.last_dropped;
  if (!s.closing && MustHold(s)) {
    Hold(s, buffer, offset, size, &info);
    return;
  }
  pool->slot(buffer).lent_at_ns = now.nanos();
  BufferLease lease = pool->Adopt(buffer, size, offset);
  if (s.closing) return;  // lease releases the buffer
  s.handler->OnDatagramInfo(IdOf(s), info, std::move(lease));
}

void LoopCore::NoteControl(Socket& s, const cmsghdr& cmsg, DatagramInfo* info) {
  const unsigned char* data = CMSG_DATA(&cmsg);
  if (cmsg.cmsg_level == IPPROTO_IP && cmsg.cmsg_type == IP_PKTINFO) {
    in_pktinfo pi;
    std::memcpy(&pi, data, sizeof(pi));
    info->to = Endpoint::Ipv4(ntohl(pi.ipi_addr.s_addr), 0);
    info->interface_index = static_cast<uint32_t>(pi.ipi_ifindex);
  } else if (cmsg.cmsg_level == IPPROTO_IPV6 &&
             cmsg.cmsg_type == IPV6_PKTINFO) {
    in6_pktinfo pi;
    std::memcpy(&pi, data, sizeof(pi));
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = pi.ipi6_addr;
    info->to =
        Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&a), sizeof(a));
    info->interface_index = pi.ipi6_ifindex;
  } else if (cmsg.cmsg_level == SOL_SOCKET && cmsg.cmsg_type == SO_RXQ_OVFL) {
    uint32_t dropped = 0;
    std::memcpy(&dropped, data, sizeof(dropped));
    // The kernel reports a running total; count what is new.
    if (dropped > s.last_dropped) {
      counters.receive_queue_drops += dropped - s.last_dropped;
    }
    s.last_dropped = dropped;
  }
}

void LoopCore::DeliverData(Socket& s, uint32_t buffer, uint32_t offset,
                           uint32_t size) {
  counters.bytes_received += size;
  if (!s.closing && MustHold(s)) {
    Hold(s, buffer, offset, size, nullptr);
    return;
  }
  pool->slot(buffer).lent_at_ns = now.nanos();
  BufferLease lease = pool->Adopt(buffer, size, offset);
  if (s.closing) return;
  s.handler->OnData(IdOf(s), std::move(lease));
}

void LoopCore::DeliverReadClosed(Socket& s, int result) {
  if (s.read_closed) return;
  s.read_closed = true;
  if (!s.closing && MustHold(s)) {
    // After the data held before it (see Hold).
    s.read_close_held = true;
    s.read_close_result = result;
    return;
  }
  if (!s.closing) s.handler->OnReadClosed(IdOf(s), result);
}

void LoopCore::DeliverConnect(Socket& s, int result) {
  s.connecting = false;
  s.connected = result == 0;
  if (s.closing) return;
  s.handler->OnConnect(IdOf(s), result);
  if (s.closing) return;
  if (result == 0) {
    ArmReceive(s);
    if (s.send_head != kNoOp || s.shutdown_requested) {
      MarkDirty(s);
    }
  } else {
    FailStream(s, result);
  }
}

void LoopCore::DropTruncatedDatagram(Socket& s, uint32_t buffer) {
  ++counters.datagrams_truncated;
  pool->ReleaseIndex(buffer);
  DeliverError(s, -EMSGSIZE);
}

void LoopCore::DeliverError(Socket& s, int error) {
  ++counters.receive_errors;
  if (!s.closing) s.handler->OnError(IdOf(s), error);
}

bool LoopCore::PauseAccept(Socket& listener, int error) {
  if (error == -EMFILE) {
    ++counters.accept_fd_limit;
  } else if (error == -ENFILE || error == -ENOBUFS || error == -ENOMEM) {
    ++counters.accept_system_limit;
  } else {
    return false;
  }
  using std::chrono::milliseconds;
  if (!listener.accept_paused) {
    listener.accept_paused = true;
    listener.accept_backoff = milliseconds(1);
    accept_paused_.push_back(SlotOf(listener));
    // Once per episode: retries that fail again are only counted.
    DeliverError(listener, error);
  } else {
    listener.accept_backoff =
        std::min<Duration>(listener.accept_backoff * 2, milliseconds(64));
  }
  listener.accept_retry_at = now + listener.accept_backoff;
  return true;
}

void LoopCore::RetryPausedAccepts() {
  for (size_t i = 0; i < accept_paused_.size();) {
    Socket& s = sockets_[accept_paused_[i]];
    if (s.kind != SocketKind::kListener || !s.accept_paused || s.closing) {
      s.accept_paused = false;
      accept_paused_[i] = accept_paused_.back();
      accept_paused_.pop_back();
      continue;
    }
    if (s.accept_retry_at <= now) {
      ++counters.accept_retries;
      RetryAccept(s);  // PauseAccept again on failure, with a longer backoff
    }
    ++i;
  }
}

void LoopCore::DeliverAccept(Socket& listener, int fd, const sockaddr* addr,
                             socklen_t len) {
  if (listener.closing) {
    ::close(fd);
    return;
  }
  // An accept succeeded: the episode (if any) is over.
  listener.accept_paused = false;
  absl::StatusOr<Socket*> created =
      NewSocket(SocketKind::kStream, fd, listener.handler);
  if (!created.ok()) {
    // The Loop's own table is full (or registering the fd failed): the
    // connection is closed. Counted apart from the kernel's fd limits.
    ++counters.accept_socket_table_full;
    DeliverError(listener, -EMFILE);
    return;
  }
  Socket& s = **created;
  s.connected = true;
  s.send_limit = listener.send_limit;
  s.send_low_water = listener.send_low_water;
  const SocketId id = IdOf(s);
  SocketHandler* handler = listener.handler->OnAccept(
      IdOf(listener), id, Endpoint::FromSockaddr(addr, len));
  if (handler == nullptr) {
    s.handler = listener.handler;  // receives nothing: closing suppresses it
    Close(id);
    return;
  }
  s.handler = handler;
  if (!s.closing) ArmReceive(s);
}

// --- Close -------------------------------------------------------------------

void LoopCore::Close(SocketId id) {
  Socket* s = Lookup(id);
  if (s == nullptr || s->closing) return;
  s->closing = true;
  closing_.push_back(SlotOf(*s));
  CancelAll(*s);
}

namespace {
// Stands in for a handler that was destroyed before its socket finished
// closing. Every default is empty, so a lease delivered to it is dropped
// (back to the pool) and OnAccept refuses.
SocketHandler& AbandonedHandler() {
  static SocketHandler* const handler = new SocketHandler();
  return *handler;
}
}  // namespace

void LoopCore::Abandon(SocketId id) {
  Socket* s = Lookup(id);
  if (s == nullptr) return;
  // Swap first: Close() may finish at once (nothing in flight) and call
  // OnClosed(), which must not reach the handler being destroyed.
  s->handler = &AbandonedHandler();
  Close(id);
}

void LoopCore::MaybeFinishClose(Socket& s) {
  if (s.closing && s.ops_in_flight == 0 && s.kind != SocketKind::kFree) {
    FinishClose(s);
  }
}

void LoopCore::FinishClose(Socket& s) {
  const SocketId id = IdOf(s);
  FailQueuedSends(s, -ECANCELED);
  if (s.receive_buffer != BufferPool::kNoBuffer) {
    pool->ReleaseIndex(s.receive_buffer);
    s.receive_buffer = BufferPool::kNoBuffer;
  }
  ReleaseHeld(s);
  UnregisterSocket(s);
  ::close(s.fd);
  s.fd = -1;
  SocketHandler* handler = s.handler;
  s.kind = SocketKind::kFree;
  s.handler = nullptr;
  ++s.generation;
  // Dirty / starved / closing lists may still name this slot; they check
  // `kind` and the flags, which a fresh Socket resets.
  s.dirty = false;
  s.receive_starved = false;
  s.read_ready = false;
  s.writable_wanted = false;
  s.dead_listed = false;
  s.held_listed = false;
  free_slots_.push_back(SlotOf(s));
  --open_sockets;
  // A descriptor is free again: listeners backing off retry at once.
  for (uint32_t slot : accept_paused_) sockets_[slot].accept_retry_at = now;
  handler->OnClosed(id);
}

// --- Running -----------------------------------------------------------------

void LoopCore::Post(absl::AnyInvocable<void()> fn) {
  {
    absl::MutexLock lock(&posted_mu_);
    posted_.push_back(std::move(fn));
  }
  has_posted_.store(true, std::memory_order_release);
  Wakeup();
}

void LoopCore::RunPosted() {
  // A plain load first: the locked exchange costs every busy-poll iteration
  // even with nothing posted. A post racing past the load is picked up on
  // the next iteration, as it would be after an exchange that ran first.
  if (!has_posted_.load(std::memory_order_relaxed)) return;
  if (!has_posted_.exchange(false, std::memory_order_acquire)) return;
  std::vector<absl::AnyInvocable<void()>> run;
  {
    absl::MutexLock lock(&posted_mu_);
    run.swap(posted_);
  }
  for (auto& fn : run) fn();
}

void LoopCore::Stop() {
  stop_.store(true, std::memory_order_release);
  Wakeup();
}

void LoopCore::RemovePoller(LoopPoller* poller) {
  pollers_.erase(std::remove(pollers_.begin(), pollers_.end(), poller),
                 pollers_.end());
}

void LoopCore::RemoveMsgRingSender(MsgRingSender* sender) {
  msg_ring_senders_.erase(
      std::remove(msg_ring_senders_.begin(), msg_ring_senders_.end(), sender),
      msg_ring_senders_.end());
}

bool LoopCore::HasMsgRingSender(const MsgRingSender* sender) const {
  return std::find(msg_ring_senders_.begin(), msg_ring_senders_.end(),
                   sender) != msg_ring_senders_.end();
}

void LoopCore::Wakeup() {
  const uint64_t one = 1;
  // eventfd write is async-signal-safe, so Stop() works from a signal handler.
  [[maybe_unused]] ssize_t n = ::write(wakeup_fd_, &one, sizeof(one));
}

void LoopCore::DrainWakeup() {
  uint64_t value;
  [[maybe_unused]] ssize_t n = ::read(wakeup_fd_, &value, sizeof(value));
}

// Starved receives take turns (issue 6, fault 8). The list is served from
// the front only while buffers last: a socket whose re-armed receive starves
// again goes to the back, and the sockets not tried yet keep their places in
// front of it. Re-arming everyone in the same order every iteration gave the
// few returned buffers to the sockets at the front, which kept having data,
// and a socket at the back with only its end of stream left could wait
// forever.
void LoopCore::ServeStarved() {
  scratch_.swap(starved_);  // starved_ now collects those that starve again
  uint32_t limit = StarvedRearmLimit();
  size_t i = 0;
  for (; i < scratch_.size() && limit > 0; ++i) {
    Socket& s = sockets_[scratch_[i]];
    const bool was_starved = s.receive_starved;
    if (s.kind == SocketKind::kFree || !was_starved || s.closing) {
      s.receive_starved = false;
      continue;
    }
    s.receive_starved = false;
    const uint64_t received_before = counters.bytes_received;
    RearmStarved(s);
    --limit;
    // Starved again at once: there is nothing left to hand out. If this
    // socket got nothing either, it keeps its place at the front
    // (MarkStarved just appended it to starved_; take it back); if it got
    // some bytes first, it stays at the back.
    if (s.receive_starved) {
      if (counters.bytes_received == received_before) {
        starved_.pop_back();
        --i;  // re-queued below with the untried ones
      }
      ++i;
      break;
    }
  }
  starved_next_.clear();
  for (; i < scratch_.size(); ++i) {
    const Socket& s = sockets_[scratch_[i]];
    if (s.kind != SocketKind::kFree && s.receive_starved) {
      starved_next_.push_back(scratch_[i]);
    }
  }
  starved_next_.insert(starved_next_.end(), starved_.begin(), starved_.end());
  starved_.swap(starved_next_);
  starved_next_.clear();
  scratch_.clear();
}

void LoopCore::NoteSendsSlow() {
  const int64_t t = now.nanos();
  if (info.flags.hybrid_spin && reply_gaps_.gap_open() &&
      t - reply_gaps_.open_since_ns() > options_.hybrid_spin_max.count()) {
    // The last unanswered send got no reply within the cap: whatever comes
    // back later is not worth spinning for (a one-way sender, or a slow
    // peer), so it counts as a gap beyond the window.
    reply_gaps_.Expired();
  }
  if (reply_gaps_.gap_open()) return;
  reply_gaps_.Sent(t);
  if (info.flags.hybrid_spin) spin_until_ = now + SpinWindow();
}

// A reply is likely soon when recent ones came within the cap: spin for
// their p90 plus a quarter (and 2 us for the clock's and the loop's own
// granularity), so about nine replies in ten end the spin. Before there
// are enough samples, spin up to the cap to learn them; once the p90 is
// beyond the cap (replies come later, or never), do not spin.
Duration LoopCore::SpinWindow() const {
  const int64_t cap = options_.hybrid_spin_max.count();
  const int64_t p90 = reply_gaps_.p90_ns();
  if (p90 < 0) return Duration(cap);
  if (p90 > cap) return Duration(0);
  return Duration(std::min<int64_t>(cap, p90 + p90 / 4 + 2000));
}

bool LoopCore::Spinning() {
  if (!info.flags.hybrid_spin) return false;
  const bool spin = reply_gaps_.gap_open() && now < spin_until_;
  if (spin) {
    ++counters.hybrid_spins;
  } else if (spinning_ && reply_gaps_.gap_open()) {
    ++counters.hybrid_spin_misses;  // the window passed without a reply
  }
  spinning_ = spin;
  return spin;
}

int LoopCore::RunOnce(Duration timeout) {
  ++counters.loop_iterations;
  now = MonotonicNow();
  int dispatched = timers.RunDue(now);
  counters.timers_fired += static_cast<uint64_t>(dispatched);
  RunPosted();

  // Re-arm receives that ran out of buffers, now that callbacks may have
  // released some.
  if (!starved_.empty()) ServeStarved();

  if (!accept_paused_.empty()) RetryPausedAccepts();
  if (!dead_streams_.empty()) CheckDeadStreams();

  // Resumed sockets get what was held for them while paused.
  if (!held_ready_.empty()) {
    scratch_.swap(held_ready_);
    for (uint32_t slot : scratch_) {
      Socket& s = sockets_[slot];
      const bool was_listed = s.held_listed;
      s.held_listed = false;
      if (s.kind == SocketKind::kFree || !was_listed || s.closing) continue;
      DeliverHeld(s);
    }
    scratch_.clear();
  }

  // Sockets that used their read budget last iteration read on (epoll).
  if (!ready_.empty()) {
    scratch_.swap(ready_);
    for (uint32_t slot : scratch_) {
      Socket& s = sockets_[slot];
      const bool was_ready = s.read_ready;
      s.read_ready = false;
      if (s.kind == SocketKind::kFree || !was_ready || s.closing) continue;
      ContinueReceive(s);
    }
    scratch_.clear();
  }

  // Hand queued sends to the kernel: one batch per socket per iteration. A
  // flush that could not finish re-lists the socket for the next iteration.
  if (!dirty_.empty()) {
    scratch_.swap(dirty_);
    for (uint32_t slot : scratch_) {
      Socket& s = sockets_[slot];
      if (!s.dirty) continue;
      s.dirty = false;
      if (s.kind == SocketKind::kFree || s.closing) continue;
      FlushSends(s);
    }
    scratch_.clear();
  }

  Duration wait = timeout;
  if (busy() || !ready_.empty() || !held_ready_.empty() || Spinning()) {
    wait = Duration(0);
  } else if (!dirty_.empty() || !starved_.empty()) {
    // Starved receives retry next iteration; don't sleep past that.
    wait = std::min(wait, Duration(std::chrono::microseconds(100)));
  }
  for (uint32_t slot : dead_streams_) {
    const Socket& s = sockets_[slot];
    if (!s.dead_listed) continue;
    const Duration until = s.dead_check_at - now;
    wait = std::min(wait, until < Duration(0) ? Duration(0) : until);
  }
  for (uint32_t slot : accept_paused_) {
    const Socket& s = sockets_[slot];
    if (!s.accept_paused) continue;
    const Duration until = s.accept_retry_at - now;
    wait = std::min(wait, until < Duration(0) ? Duration(0) : until);
  }
  const Timestamp next_timer = timers.NextDeadline();
  if (!next_timer.is_never()) {
    const Duration until = next_timer - now;
    wait = std::min(wait, until < Duration(0) ? Duration(0) : until);
  }
  // Cross-Loop channels last: a consumer that may sleep announces it only
  // when nothing above keeps the Loop awake (loop_channel.h).
  for (LoopPoller* p : pollers_) wait = p->BeforeWait(wait);
  if (stop_.load(std::memory_order_acquire)) wait = Duration(0);

  const int completions = WaitAndDispatch(wait);
  if (completions < 0) return completions;
  dispatched += completions;
  for (LoopPoller* p : pollers_) dispatched += p->AfterWait();

  if (!writable_waiters_.empty()) NotifyWritable();

  // Finish closes whose operations all completed.
  if (!closing_.empty()) {
    scratch_.swap(closing_);
    for (uint32_t slot : scratch_) {
      Socket& s = sockets_[slot];
      if (s.kind == SocketKind::kFree || !s.closing) continue;
      if (s.ops_in_flight == 0) {
        FinishClose(s);
      } else {
        if (s.cancel_pending) CancelAll(s);  // no SQE for it last time
        closing_.push_back(slot);
      }
    }
    scratch_.clear();
  }
  return dispatched;
}

absl::Status LoopCore::Run() {
  // A Stop() that raced ahead of Run() still counts; the flag is re-armed on
  // the way out so the Loop can run again.
  while (!stop_.load(std::memory_order_acquire)) {
    const int result = RunOnce(std::chrono::seconds(1));
    if (result < 0 && result != -EINTR) {
      stop_.store(false, std::memory_order_release);
      return absl::InternalError(
          absl::StrCat("loop wait failed: ", std::strerror(-result)));
    }
  }
  stop_.store(false, std::memory_order_release);
  return absl::OkStatus();
}

}  // namespace ringlab::transport::internal
