#include "transport/preset.h"

#include <linux/capability.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "liburing.h"

namespace ringlab::transport {
namespace {

// Debian's abseil keeps its own string_view type; bridge for StrCat.
absl::string_view Sv(std::string_view v) { return {v.data(), v.size()}; }

constexpr std::array<Preset, 6> kAllPresets = {
    Preset::kEpoll,      Preset::kEpollBusy,   Preset::kUring,
    Preset::kUringFixed, Preset::kUringSqpoll, Preset::kUringBusy,
};

int ReadIoUringDisabledSysctl() {
  std::ifstream in("/proc/sys/kernel/io_uring_disabled");
  int value = -1;
  if (in >> value) return value;
  return -1;
}

bool HasCapIpcLock() {
  // capget with version 3 reads the effective set without libcap.
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  return (data[CAP_IPC_LOCK / 32].effective & (1u << (CAP_IPC_LOCK % 32))) != 0;
}

// Tries a ring with `flags`; returns 0 or -errno.
int TryRing(unsigned flags, io_uring_params* out = nullptr) {
  io_uring ring;
  io_uring_params params;
  std::memset(&params, 0, sizeof(params));
  params.flags = flags;
  if (flags & IORING_SETUP_SQPOLL) params.sq_thread_idle = 10;
  const int ret = io_uring_queue_init_params(8, &ring, &params);
  if (ret < 0) return ret;
  if (out != nullptr) *out = params;
  io_uring_queue_exit(&ring);
  return 0;
}

// Sends one byte to a socket of our own with IORING_OP_SEND and a
// destination address (sendto-style), which saves a msghdr per datagram
// over IORING_OP_SENDMSG on kernels that accept it.
bool ProbeSendWithAddress(io_uring* ring) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in self{};
  self.sin_family = AF_INET;
  self.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(self);
  bool ok = false;
  if (bind(fd, reinterpret_cast<sockaddr*>(&self), sizeof(self)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len) == 0) {
    const char byte = 0;
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    io_uring_prep_send(sqe, fd, &byte, 1, 0);
    io_uring_prep_send_set_addr(sqe, reinterpret_cast<sockaddr*>(&self),
                                sizeof(self));
    io_uring_cqe* cqe = nullptr;
    if (io_uring_submit_and_wait(ring, 1) >= 0 &&
        io_uring_wait_cqe(ring, &cqe) == 0) {
      ok = cqe->res == 1;
      io_uring_cqe_seen(ring, cqe);
    }
  }
  close(fd);
  return ok;
}

Capabilities Probe() {
  Capabilities caps;
  utsname uts;
  if (uname(&uts) == 0) caps.kernel_release = uts.release;
  caps.io_uring_disabled_sysctl = ReadIoUringDisabledSysctl();
  rlimit memlock;
  if (getrlimit(RLIMIT_MEMLOCK, &memlock) == 0) {
    caps.memlock_limit_bytes = memlock.rlim_cur == RLIM_INFINITY
                                   ? UINT64_MAX
                                   : static_cast<uint64_t>(memlock.rlim_cur);
  }
  caps.cap_ipc_lock = HasCapIpcLock();

  io_uring_params params;
  const int base = TryRing(0, &params);
  if (base < 0) {
    caps.io_uring_available = false;
    if (base == -ENOSYS) {
      caps.io_uring_error =
          "io_uring_setup returned ENOSYS: the kernel was built without "
          "io_uring, or a seccomp profile (e.g. a container runtime's default) "
          "blocks it. Fix: run on a kernel with CONFIG_IO_URING=y and allow "
          "the "
          "io_uring_* syscalls in the seccomp profile, or use an epoll preset.";
    } else if (base == -EPERM) {
      caps.io_uring_error = absl::StrCat(
          "io_uring_setup returned EPERM (kernel.io_uring_disabled=",
          caps.io_uring_disabled_sysctl,
          "). Fix: `sysctl -w kernel.io_uring_disabled=0` (or 1 and add the "
          "user to the group in kernel.io_uring_group), or check the seccomp "
          "profile; or use an epoll preset.");
    } else if (base == -ENOMEM) {
      caps.io_uring_error =
          "io_uring_setup returned ENOMEM: the memlock limit is too low for "
          "the ring. Fix: raise it with `ulimit -l` (or LimitMEMLOCK= in a "
          "systemd unit), or use an epoll preset.";
    } else {
      caps.io_uring_error =
          absl::StrCat("io_uring_setup failed: ", std::strerror(-base),
                       ". Use an epoll preset.");
    }
    return caps;
  }
  caps.io_uring_available = true;
  caps.ext_arg = (params.features & IORING_FEAT_EXT_ARG) != 0;
  caps.single_issuer = TryRing(IORING_SETUP_SINGLE_ISSUER) == 0;
  caps.defer_taskrun =
      TryRing(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
              IORING_SETUP_TASKRUN_FLAG) == 0;
  caps.sqpoll = TryRing(IORING_SETUP_SQPOLL) == 0;

  io_uring ring;
  if (io_uring_queue_init(8, &ring, 0) == 0) {
    caps.registered_ring_fd = io_uring_register_ring_fd(&ring) == 1;
    if (io_uring_probe* probe = io_uring_get_probe_ring(&ring)) {
      // Multishot recv and accept shipped in 5.19/6.0 together with buffer
      // rings; SEND_ZC is 6.0. An opcode being present is necessary; the
      // buffer ring registration below checks the rest.
      caps.multishot_recv = io_uring_opcode_supported(probe, IORING_OP_RECV) &&
                            io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
      caps.multishot_accept =
          io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
          caps.multishot_recv;
      caps.send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
      io_uring_free_probe(probe);
    }
    // Register a one-entry buffer ring to prove the feature exists.
    void* mem = mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem != MAP_FAILED) {
      io_uring_buf_reg reg;
      std::memset(&reg, 0, sizeof(reg));
      reg.ring_addr = reinterpret_cast<uint64_t>(mem);
      reg.ring_entries = 1;
      reg.bgid = 0;
      const int ret = io_uring_register_buf_ring(&ring, &reg, 0);
      caps.buffer_ring = ret == 0;
      caps.buffer_ring_errno = ret < 0 ? -ret : 0;
      if (caps.buffer_ring) io_uring_unregister_buf_ring(&ring, 0);
      munmap(mem, 4096);
    }
    caps.send_with_address = ProbeSendWithAddress(&ring);
    io_uring_queue_exit(&ring);
  }
  return caps;
}

std::string Yes(bool b) { return b ? "yes" : "no"; }

}  // namespace

std::string PresetFlags::ToString() const {
  std::vector<absl::string_view> on;
  if (io_uring) on.push_back("io_uring");
  if (!io_uring) on.push_back("epoll");
  if (edge_triggered) on.push_back("edge_triggered");
  if (recvmmsg_batching) on.push_back("mmsg_batching");
  if (registered_buffers) on.push_back("registered_buffers");
  if (provided_buffers) on.push_back("provided_buffer_ring+multishot_recv");
  if (multishot_accept) on.push_back("multishot_accept");
  if (registered_files) on.push_back("registered_files");
  if (defer_taskrun) on.push_back("defer_taskrun+single_issuer");
  if (registered_ring_fd) on.push_back("registered_ring_fd");
  if (sqpoll) on.push_back("sqpoll");
  if (busy_poll) on.push_back("busy_poll");
  if (wait_batching) on.push_back("wait_batching");
  if (zero_copy_send) on.push_back("send_zc");
  return absl::StrJoin(on, ",");
}

std::span<const Preset> AllPresets() { return kAllPresets; }

std::string_view PresetName(Preset preset) {
  switch (preset) {
    case Preset::kEpoll:
      return "epoll";
    case Preset::kEpollBusy:
      return "epoll-busy";
    case Preset::kUring:
      return "uring";
    case Preset::kUringFixed:
      return "uring-fixed";
    case Preset::kUringSqpoll:
      return "uring-sqpoll";
    case Preset::kUringBusy:
      return "uring-busy";
  }
  return "unknown";
}

std::optional<Preset> ParsePreset(std::string_view name) {
  for (Preset p : kAllPresets) {
    if (PresetName(p) == name) return p;
  }
  return std::nullopt;
}

std::string ValidPresetNames() {
  std::vector<absl::string_view> names;
  for (Preset p : kAllPresets) names.push_back(Sv(PresetName(p)));
  names.push_back("auto");
  return absl::StrJoin(names, ", ");
}

PresetFlags FlagsFor(Preset preset) {
  PresetFlags f;
  switch (preset) {
    case Preset::kEpollBusy:
      f.busy_poll = true;
      [[fallthrough]];
    case Preset::kEpoll:
      f.edge_triggered = true;
      f.recvmmsg_batching = true;
      return f;
    case Preset::kUring:
      f.io_uring = true;
      return f;
    case Preset::kUringFixed:
    case Preset::kUringSqpoll:
    case Preset::kUringBusy:
      f.io_uring = true;
      f.registered_buffers = true;
      f.provided_buffers = true;
      f.multishot_accept = true;
      f.registered_files = true;
      f.registered_ring_fd = true;
      // SQPOLL and DEFER_TASKRUN are mutually exclusive in the kernel. The
      // busy preset keeps DEFER_TASKRUN: with TASKRUN_FLAG the kernel marks
      // the SQ ring when work is pending, so the spinning task enters only
      // then instead of waiting for an IPI to run task work.
      f.defer_taskrun = preset != Preset::kUringSqpoll;
      f.sqpoll = preset == Preset::kUringSqpoll;
      f.busy_poll = preset == Preset::kUringBusy;
      return f;
  }
  return f;
}

std::string Capabilities::ToString() const {
  if (!io_uring_available) {
    return absl::StrCat("io_uring=no (", io_uring_error,
                        ") kernel=", kernel_release);
  }
  return absl::StrCat(
      "io_uring=yes kernel=", kernel_release,
      " io_uring_disabled=", io_uring_disabled_sysctl, " sqpoll=", Yes(sqpoll),
      " defer_taskrun=", Yes(defer_taskrun), " buffer_ring=", Yes(buffer_ring),
      " multishot_recv=", Yes(multishot_recv),
      " multishot_accept=", Yes(multishot_accept), " send_zc=", Yes(send_zc),
      " ext_arg=", Yes(ext_arg), " send_with_address=", Yes(send_with_address),
      " registered_ring_fd=", Yes(registered_ring_fd), " memlock=",
      memlock_limit_bytes == UINT64_MAX ? std::string("unlimited")
                                        : absl::StrCat(memlock_limit_bytes),
      cap_ipc_lock ? " (CAP_IPC_LOCK: limit not enforced)" : "");
}

const Capabilities& ProbeCapabilities() {
  static const Capabilities* caps = new Capabilities(Probe());
  return *caps;
}

namespace {
std::atomic<uint64_t> g_memlock_charged_bytes{0};
std::atomic<uint32_t> g_memlock_charged_loops{0};
}  // namespace

namespace internal {
void MemlockCharge(uint64_t bytes) {
  g_memlock_charged_bytes.fetch_add(bytes);
  g_memlock_charged_loops.fetch_add(1);
}
void MemlockRelease(uint64_t bytes) {
  g_memlock_charged_bytes.fetch_sub(bytes);
  g_memlock_charged_loops.fetch_sub(1);
}
}  // namespace internal

uint64_t MemlockPagesBytes(uint64_t bytes) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

Capabilities CurrentCapabilities() {
  Capabilities caps = ProbeCapabilities();
  rlimit memlock;
  if (getrlimit(RLIMIT_MEMLOCK, &memlock) == 0) {
    caps.memlock_limit_bytes = memlock.rlim_cur == RLIM_INFINITY
                                   ? UINT64_MAX
                                   : static_cast<uint64_t>(memlock.rlim_cur);
  }
  caps.cap_ipc_lock = HasCapIpcLock();
  caps.memlock_charged_bytes = g_memlock_charged_bytes.load();
  caps.memlock_charged_loops = g_memlock_charged_loops.load();
  return caps;
}

absl::Status CheckPresetSupported(Preset preset, const Capabilities& caps,
                                  uint64_t registered_bytes) {
  const PresetFlags f = FlagsFor(preset);
  const absl::string_view name = Sv(PresetName(preset));
  if (!f.io_uring) return absl::OkStatus();
  if (!caps.io_uring_available) {
    return absl::FailedPreconditionError(absl::StrCat(
        "preset ", name,
        " needs io_uring, which is unavailable: ", caps.io_uring_error));
  }
  auto missing = [&](absl::string_view feature, absl::string_view fix) {
    return absl::FailedPreconditionError(
        absl::StrCat("preset ", name, " needs ", feature, ", which kernel ",
                     caps.kernel_release, " does not provide. Fix: ", fix));
  };
  constexpr absl::string_view kNewerKernel =
      "run on Linux >= 6.1, or pick preset `uring` or `epoll`.";
  if (f.provided_buffers && !caps.buffer_ring) {
    if (caps.buffer_ring_errno == ENOMEM || caps.buffer_ring_errno == EPERM) {
      // The kernel has the feature but could not pin the ring's pages.
      return absl::ResourceExhaustedError(absl::StrCat(
          "preset ", name, " could not register a provided buffer ring: ",
          std::strerror(caps.buffer_ring_errno), " with a memlock limit of ",
          caps.memlock_limit_bytes,
          " bytes. Fix: raise it (`ulimit -l unlimited`, LimitMEMLOCK= in "
          "systemd, `--ulimit memlock=-1:-1` in docker)."));
    }
    return missing("provided buffer rings (IORING_REGISTER_PBUF_RING)",
                   kNewerKernel);
  }
  if (f.provided_buffers && !caps.multishot_recv) {
    return missing("multishot recv", kNewerKernel);
  }
  if (f.multishot_accept && !caps.multishot_accept) {
    return missing("multishot accept", kNewerKernel);
  }
  if (f.defer_taskrun && !caps.defer_taskrun) {
    return missing("IORING_SETUP_DEFER_TASKRUN", kNewerKernel);
  }
  if (f.io_uring && !caps.ext_arg) {
    return missing("timed waits in io_uring_enter (IORING_FEAT_EXT_ARG)",
                   kNewerKernel);
  }
  if (f.registered_ring_fd && !caps.registered_ring_fd) {
    return missing("a registered ring fd", kNewerKernel);
  }
  if (f.sqpoll && !caps.sqpoll) {
    return missing("IORING_SETUP_SQPOLL",
                   "SQPOLL may need CAP_SYS_NICE on old kernels, or is "
                   "blocked by seccomp; pick preset uring-fixed instead.");
  }
  const uint64_t charge = MemlockPagesBytes(registered_bytes);
  if (f.registered_buffers && !caps.cap_ipc_lock &&
      caps.memlock_limit_bytes != UINT64_MAX &&
      charge + caps.memlock_charged_bytes > caps.memlock_limit_bytes) {
    // The kernel charges registered buffers to the user, so what other
    // Loops of this process hold counts too (issue 6, fault 5).
    const uint64_t left =
        caps.memlock_charged_bytes >= caps.memlock_limit_bytes
            ? 0
            : caps.memlock_limit_bytes - caps.memlock_charged_bytes;
    std::string already;
    if (caps.memlock_charged_loops > 0) {
      already = absl::StrCat(
          "; this process already has ", caps.memlock_charged_bytes,
          " bytes registered by ", caps.memlock_charged_loops, " other Loop",
          caps.memlock_charged_loops == 1 ? "" : "s", ", leaving ", left);
    }
    return absl::ResourceExhaustedError(absl::StrCat(
        "preset ", name, " registers ", charge,
        " bytes of buffers, which count against RLIMIT_MEMLOCK (",
        caps.memlock_limit_bytes,
        " bytes, charged per user, not per pool, without CAP_IPC_LOCK)",
        already,
        ". Fix: raise the limit (`ulimit -l unlimited`, LimitMEMLOCK= in "
        "systemd, `--ulimit memlock=-1:-1` in docker), grant CAP_IPC_LOCK, "
        "or shrink the pool (LoopOptions::buffer_count / buffer_size); or "
        "use preset uring, which registers nothing."));
  }
  return absl::OkStatus();
}

absl::StatusOr<BackendInfo> ResolveBackend(std::string_view requested,
                                           const Capabilities& caps,
                                           uint64_t registered_bytes) {
  BackendInfo info;
  info.requested = std::string(requested);
  if (requested == "auto") {
    const absl::Status fixed =
        CheckPresetSupported(Preset::kUringFixed, caps, registered_bytes);
    if (fixed.ok()) {
      info.preset = Preset::kUringFixed;
      info.chosen_because =
          "auto: io_uring with buffer rings, multishot and DEFER_TASKRUN is "
          "available";
    } else if (CheckPresetSupported(Preset::kUring, caps, registered_bytes)
                   .ok()) {
      info.preset = Preset::kUring;
      info.chosen_because =
          absl::StrCat("auto: uring-fixed unavailable (", fixed.message(),
                       "); using plain uring");
    } else {
      info.preset = Preset::kEpoll;
      info.chosen_because =
          absl::StrCat("auto: io_uring unavailable (", caps.io_uring_error,
                       "); falling back to epoll");
    }
  } else {
    std::optional<Preset> preset = ParsePreset(requested);
    if (!preset.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown backend preset '", Sv(requested),
                       "'; valid presets: ", ValidPresetNames()));
    }
    absl::Status supported =
        CheckPresetSupported(*preset, caps, registered_bytes);
    if (!supported.ok()) return supported;
    info.preset = *preset;
  }
  info.name = std::string(PresetName(info.preset));
  info.flags = FlagsFor(info.preset);
  return info;
}

}  // namespace ringlab::transport
