#include "rtps/domain_participant.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ringlab::rtps {

using transport::BufferLease;
using transport::Loop;
using transport::LoopOptions;
using transport::SocketId;
using transport::UdpOptions;

int64_t WallClockNanos() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

namespace {

absl::StatusOr<uint32_t> ResolveInterface(const std::string& text) {
  if (text != "auto") {
    absl::StatusOr<Endpoint> e = Endpoint::FromHostPort(text, 0);
    if (!e.ok() || !e->is_ipv4()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "interface_address must be an IPv4 literal or auto: ", text));
    }
    return e->ipv4_host_order();
  }
  ifaddrs* list = nullptr;
  uint32_t chosen = 0x7f000001;
  if (getifaddrs(&list) == 0) {
    for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
      if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
      if (!(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) continue;
      chosen =
          ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
      break;
    }
    freeifaddrs(list);
  }
  return chosen;
}

// RTPS 2.5 §9.3.1.5 suggests vendor id first; the rest must make the prefix
// unique: host bits, pid and randomness.
GuidPrefix MakePrefix(VendorId vendor) {
  GuidPrefix p;
  std::random_device rd;
  uint32_t host = static_cast<uint32_t>(gethostid()) ^ rd();
  uint32_t pid = static_cast<uint32_t>(getpid());
  uint32_t r = rd();
  p.bytes = {vendor.bytes[0],
             vendor.bytes[1],
             static_cast<uint8_t>(host >> 24),
             static_cast<uint8_t>(host >> 16),
             static_cast<uint8_t>(host >> 8),
             static_cast<uint8_t>(host),
             static_cast<uint8_t>(pid >> 24),
             static_cast<uint8_t>(pid >> 16),
             static_cast<uint8_t>(pid >> 8),
             static_cast<uint8_t>(pid),
             static_cast<uint8_t>(r >> 8),
             static_cast<uint8_t>(r)};
  return p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DomainParticipant>> DomainParticipant::Create(
    DomainParticipantOptions options) {
  std::unique_ptr<DomainParticipant> dp(new DomainParticipant());
  absl::StatusOr<uint32_t> iface = ResolveInterface(options.interface_address);
  if (!iface.ok()) return iface.status();
  LoopOptions lo;
  lo.backend = options.backend;
  lo.buffer_size = options.buffer_size;
  lo.buffer_count = options.buffer_count;
  // A power of two, at most half the pool (the kernel fills these).
  uint32_t provided = 1;
  while (provided * 2 <= std::min<uint32_t>(256, options.buffer_count / 2)) {
    provided *= 2;
  }
  lo.provided_buffers = provided;
  lo.wait_batching = options.wait_batching;
  absl::StatusOr<std::unique_ptr<Loop>> loop = Loop::Create(lo);
  if (!loop.ok()) return loop.status();
  dp->loop_ = std::move(*loop);
  Loop& l = *dp->loop_;
  const uint32_t d = options.domain_id;
  const Endpoint iface_any = Endpoint::Ipv4(*iface, 0);

  // Unicast sockets: the first participant id with both ports free.
  int first = options.participant_id >= 0 ? options.participant_id : 0;
  int last = options.participant_id >= 0 ? options.participant_id : 119;
  absl::Status last_error = absl::OkStatus();
  for (int pid = first; pid <= last; ++pid) {
    UdpOptions meta;
    meta.bind = Endpoint::Ipv4(
        *iface, static_cast<uint16_t>(ports::SpdpUnicast(d, pid)));
    meta.receive_buffer_bytes = options.receive_buffer_bytes;
    absl::StatusOr<SocketId> m = l.OpenUdp(meta, dp.get());
    if (!m.ok()) {
      last_error = m.status();
      continue;
    }
    UdpOptions user;
    user.bind = Endpoint::Ipv4(
        *iface, static_cast<uint16_t>(ports::UserUnicast(d, pid)));
    user.multicast_interface = iface_any;
    user.multicast_loop = true;
    user.receive_buffer_bytes = options.receive_buffer_bytes;
    user.send_queue_limit_bytes = options.send_queue_bytes;
    // A DATA_FRAG train is equal-sized datagrams to one reader: GSO sends
    // it in one system call (the Loop falls back if the path refuses).
    user.segmentation_offload = options.udp_gso;
    absl::StatusOr<SocketId> u = l.OpenUdp(user, dp.get());
    if (!u.ok()) {
      last_error = u.status();
      l.Close(*m);
      continue;
    }
    dp->meta_socket_ = *m;
    dp->user_socket_ = *u;
    dp->participant_id_ = pid;
    break;
  }
  if (dp->participant_id_ < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no free participant id in [", first, ", ", last,
                     "] for domain ", d, ": ", last_error.message()));
  }
  const Endpoint group =
      Endpoint::Ipv4(ports::kDefaultMulticastGroup,
                     static_cast<uint16_t>(ports::SpdpMulticast(d)));
  if (options.multicast) {
    UdpOptions spdp;
    spdp.bind =
        Endpoint::Ipv4(0, static_cast<uint16_t>(ports::SpdpMulticast(d)));
    spdp.reuse_address = true;
    spdp.receive_buffer_bytes = options.receive_buffer_bytes;
    absl::StatusOr<SocketId> s = l.OpenUdp(spdp, dp.get());
    if (!s.ok()) return s.status();
    if (absl::Status j = l.JoinMulticast(*s, group, iface_any); !j.ok()) {
      return j;
    }
    dp->spdp_socket_ = *s;
  }

  ParticipantConfig& c = options.core;
  c.domain_id = d;
  if (options.advertise_process && c.properties.empty()) {
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    c.properties = {{"__ProcessName", program_invocation_short_name},
                    {"__Pid", absl::StrCat(getpid())},
                    {"__Hostname", host}};
  }
  if (c.guid_prefix.is_unknown()) c.guid_prefix = MakePrefix(c.vendor);
  const uint16_t meta_port =
      static_cast<uint16_t>(ports::SpdpUnicast(d, dp->participant_id_));
  const uint16_t user_port =
      static_cast<uint16_t>(ports::UserUnicast(d, dp->participant_id_));
  c.metatraffic_unicast = {Locator::UdpV4(*iface, meta_port)};
  c.default_unicast = {Locator::UdpV4(*iface, user_port)};
  c.spdp_destinations.clear();
  if (options.multicast)
    c.spdp_destinations.push_back(Locator::FromEndpoint(group));
  for (const std::string& peer : options.peers) {
    absl::StatusOr<Endpoint> e = Endpoint::Parse(peer);
    if (e.ok() && e->port() != 0) {
      c.spdp_destinations.push_back(Locator::FromEndpoint(*e));
      continue;
    }
    absl::StatusOr<Endpoint> host = Endpoint::FromHostPort(peer, 0);
    if (!host.ok() || !host->is_ipv4()) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer must be a.b.c.d or a.b.c.d:port: ", peer));
    }
    for (uint32_t pid = 0; pid < 10; ++pid) {
      c.spdp_destinations.push_back(
          Locator::UdpV4(host->ipv4_host_order(),
                         static_cast<uint16_t>(ports::SpdpUnicast(d, pid))));
    }
  }
  c.max_message_bytes =
      std::min<size_t>(c.max_message_bytes, l.buffers().buffer_size());
  // LIFESPAN and DESTINATION_ORDER compare wall-clock source timestamps.
  c.wall_clock_offset_ns = WallClockNanos() - l.now().nanos();
  absl::StatusOr<std::unique_ptr<Participant>> core =
      Participant::Create(c, l.now());
  if (!core.ok()) return core.status();
  dp->core_ = std::move(*core);
  dp->drop_state_ = options.drop_seed;
  dp->options_ = std::move(options);
  dp->Flush();
  return dp;
}

DomainParticipant::~DomainParticipant() {
  if (loop_ && core_) {
    // Say goodbye (SEDP and SPDP disposes) and give the sends a moment.
    // The application's callback may refer to what is already gone.
    data_callback_ = nullptr;
    core_->Leave(loop_->now());
    Flush();
    for (int i = 0; i < 4 && loop_->QueuedSendBytes(user_socket_) > 0; ++i) {
      loop_->RunOnce(std::chrono::milliseconds(5));
    }
  }
  if (loop_ && timer_id_ != 0) loop_->CancelTimer(timer_id_);
}

// splitmix64: a seeded, reproducible draw for the test hooks.
bool DomainParticipant::Drop(double fraction) {
  if (fraction <= 0) return false;
  uint64_t z = (drop_state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  if (static_cast<double>(z >> 11) * 0x1.0p-53 >= fraction) return false;
  ++dropped_for_test_;
  return true;
}

void DomainParticipant::OnDatagram(SocketId socket, const Endpoint& from,
                                   BufferLease data) {
  if (Drop(options_.drop_received_fraction)) return;
  core_->OnDatagram(data.bytes(), Locator::FromEndpoint(from), loop_->now());
  data.Release();
  if (data_callback_) data_callback_();
  Flush();
}

void DomainParticipant::OnTimer(uint64_t timer_id, Timestamp now) {
  if (timer_id != timer_id_) return;
  timer_id_ = 0;
  timer_deadline_ = Timestamp::Never();
  core_->SetWallClockOffset(WallClockNanos() - now.nanos());
  core_->OnTimeout(now);
  Flush();
}

void DomainParticipant::OnSendComplete(SocketId socket, int result,
                                       uint64_t tag) {
  if (send_blocked_) Flush();
}

void DomainParticipant::OnWritable(SocketId socket) {
  if (send_blocked_) Flush();
}

void DomainParticipant::Flush() {
  if (in_flush_) return;  // a callback inside Flush wrote: the loop covers it
  in_flush_ = true;
  send_blocked_ = false;
  const Timestamp now = loop_->now();
  const size_t max_message = core_->config().max_message_bytes;
  for (;;) {
    // Stop while a few more datagrams would not fit the send queue: the
    // core keeps what it has not built yet, and a completion resumes us.
    if (loop_->QueuedSendBytes(user_socket_) + 4 * max_message >
        options_.send_queue_bytes) {
      send_blocked_ = true;
      break;
    }
    BufferLease lease = loop_->AcquireBuffer();
    if (!lease) {  // pool exhausted (counted by the Loop): wait for sends
      send_blocked_ = true;
      break;
    }
    std::optional<Transmit> t = core_->PollTransmit(lease.writable(), now);
    if (!t) break;
    lease.set_size(t->size_bytes);
    if (Drop(options_.drop_sent_fraction)) continue;
    const size_t n = t->destinations.size();
    if (n == 1) {
      Endpoint to = t->destinations[0].ToEndpoint();
      if (to.valid() &&
          loop_->SendTo(user_socket_, std::move(lease), to) == -EAGAIN) {
        send_blocked_ = true;
      }
    } else if (n > 1) {
      // One payload to several readers: every send shares the buffer.
      transport::SharedBuffer shared = loop_->Share(std::move(lease));
      if (!shared) {
        send_blocked_ = true;
        break;
      }
      for (size_t i = 0; i < n; ++i) {
        Endpoint to = t->destinations[i].ToEndpoint();
        if (!to.valid()) continue;
        if (loop_->SendTo(user_socket_, shared, to) == -EAGAIN) {
          send_blocked_ = true;
        }
      }
    }
    if (send_blocked_) break;
  }
  in_flush_ = false;
  ArmTimer();
}

void DomainParticipant::ArmTimer() {
  Timestamp next = core_->NextDeadline();
  if (next == timer_deadline_) return;
  if (timer_id_ != 0) loop_->CancelTimer(timer_id_);
  timer_id_ = 0;
  timer_deadline_ = next;
  if (!next.is_never()) timer_id_ = loop_->AddTimer(next, Duration(0), this);
}

int DomainParticipant::RunOnce(Duration timeout) {
  int n = loop_->RunOnce(timeout);
  return n;
}

absl::Status DomainParticipant::Run() { return loop_->Run(); }

void DomainParticipant::RunFor(Duration budget) {
  Timestamp end = MonotonicNow() + budget;
  for (;;) {
    Timestamp now = MonotonicNow();
    if (now >= end) return;
    loop_->RunOnce(
        std::min<Duration>(end - now, std::chrono::milliseconds(50)));
  }
}

bool DomainParticipant::RunUntil(absl::AnyInvocable<bool()> done,
                                 Duration budget) {
  Timestamp end = MonotonicNow() + budget;
  while (!done()) {
    Timestamp now = MonotonicNow();
    if (now >= end) return false;
    loop_->RunOnce(
        std::min<Duration>(end - now, std::chrono::milliseconds(20)));
  }
  return true;
}

}  // namespace ringlab::rtps
