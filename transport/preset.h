// Backend presets: named, documented sets of transport flags.
//
// The same name is used in code, on every command line (--backend=NAME) and
// in every report. A preset is exactly its flags; if the kernel cannot give
// one of them, Loop::Create fails with the cause and the fix instead of
// quietly running something else. Only `auto` chooses, and it says what it
// chose in BackendInfo::chosen_because.
//
//   preset         kernel API  flags
//   epoll          epoll       edge-triggered, persistent registration,
//                              recvmmsg/sendmmsg batches, blocking wait
//   epoll-busy     epoll       as epoll, epoll_wait(timeout 0) spin
//   uring          io_uring    plain recv/send/accept ops, one
//                              io_uring_enter per iteration (submit + wait)
//   uring-fixed    io_uring    registered buffers + provided buffer ring with
//                              multishot recv/recvmsg/accept, registered files,
//                              DEFER_TASKRUN + SINGLE_ISSUER, registered ring
//                              fd (LoopOptions::wait_batching adds
//                              wait_batching here and on uring-sqpoll)
//   uring-sqpoll   io_uring    uring-fixed + SQPOLL (no DEFER_TASKRUN: the
//                              kernel forbids it with SQPOLL)
//   uring-busy     io_uring    uring-fixed + TASKRUN_FLAG; never sleeps: spins
//                              on the CQ and the SQ ring's TASKRUN bit, and
//                              enters only to submit or to run pending work
//
//   std::optional<Preset> p = ParsePreset("uring-fixed");
//   PresetFlags f = FlagsFor(*p);
//   std::cout << PresetName(*p) << ": " << f.ToString();
#ifndef RINGLAB_TRANSPORT_PRESET_H_
#define RINGLAB_TRANSPORT_PRESET_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace ringlab::transport {

enum class Preset {
  kEpoll,
  kEpollBusy,
  kUring,
  kUringFixed,
  kUringSqpoll,
  kUringBusy,
};

struct PresetFlags {
  bool io_uring = false;
  bool busy_poll = false;           // never sleep in the kernel
  bool registered_buffers = false;  // io_uring_register_buffers on the pool
  bool provided_buffers = false;    // buffer ring + multishot recv
  bool multishot_accept = false;
  bool registered_files = false;  // sockets in the fixed file table
  bool defer_taskrun = false;     // DEFER_TASKRUN + SINGLE_ISSUER
  bool registered_ring_fd = false;
  bool sqpoll = false;
  bool zero_copy_send = false;     // set from LoopOptions, not by a preset
  bool recvmmsg_batching = false;  // epoll: recvmmsg/sendmmsg
  // io_uring wait batching, opt-in through LoopOptions::wait_batching (no
  // preset turns it on): the enter that submits datagram sends also waits
  // for one completion beyond them, so a UDP request/response round trip
  // costs one enter instead of two. The price: a datagram whose send is not
  // answered has its OnSendComplete held until the next completion or the
  // wait's timeout (issue 6, fault 6), so it is only for workloads where
  // every send is answered soon. Never applied with a stream send in the
  // batch, nor on busy presets (they never wait).
  bool wait_batching = false;
  bool edge_triggered = false;  // epoll

  // The flags in effect, comma-separated, as reports print them: the kernel
  // API first ("epoll" or "io_uring"), then each feature that is on, e.g.
  // "io_uring,registered_buffers,provided_buffer_ring+multishot_recv,...".
  std::string ToString() const;
};

// Every preset, in report order.
std::span<const Preset> AllPresets();
std::string_view PresetName(Preset preset);
std::optional<Preset> ParsePreset(std::string_view name);
// "epoll, epoll-busy, uring, uring-fixed, uring-sqpoll, uring-busy, auto".
std::string ValidPresetNames();
PresetFlags FlagsFor(Preset preset);

// What the Loop actually runs.
struct BackendInfo {
  Preset preset = Preset::kEpoll;
  std::string name;            // PresetName(preset)
  PresetFlags flags;           // flags in effect
  std::string requested;       // what LoopOptions::backend said
  std::string chosen_because;  // non-empty when `auto` decided
  // Limits the Loop adapted to at setup, e.g. "raised RLIMIT_NOFILE soft
  // limit from 1024 to 4112" or "max_sockets clamped from 4096 to 1008
  // (RLIMIT_NOFILE soft=hard=1024)". Empty when nothing was adapted.
  std::string adjustments;
  uint32_t max_sockets = 0;  // in effect (after any clamp)
  // Budgets in effect (see LoopOptions): buffers AcquireBuffer() leaves for
  // receives, and pool buffers all send queues together may hold.
  uint32_t receive_reserve_buffers = 0;
  uint32_t send_budget_buffers = 0;
};

// What the kernel and process limits allow, probed once per process.
struct Capabilities {
  bool io_uring_available = false;
  std::string io_uring_error;         // why not, with the fix, when unavailable
  int io_uring_disabled_sysctl = -1;  // kernel.io_uring_disabled, -1 unknown
  bool sqpoll = false;
  bool defer_taskrun = false;
  bool single_issuer = false;
  bool registered_ring_fd = false;
  bool buffer_ring = false;
  bool multishot_recv = false;
  bool multishot_accept = false;
  bool send_zc = false;
  bool ext_arg = false;
  int buffer_ring_errno = 0;         // why registering a buffer ring failed
  bool send_with_address = false;    // IORING_OP_SEND takes a destination
  uint64_t memlock_limit_bytes = 0;  // RLIMIT_MEMLOCK soft limit (max = inf)
  bool cap_ipc_lock = false;         // memlock limit does not apply
  // What this process's live Loops have registered (and the kernel charged
  // to the user's RLIMIT_MEMLOCK), and how many Loops hold it. The kernel
  // charges per user, not per pool: a second pool must fit what is left.
  uint64_t memlock_charged_bytes = 0;
  uint32_t memlock_charged_loops = 0;
  std::string kernel_release;

  std::string ToString() const;
};

// Probes once and caches the answer (thread-safe).
const Capabilities& ProbeCapabilities();
// The probe with the values that change at run time read again: the memlock
// limit, CAP_IPC_LOCK, and the registered bytes of this process's Loops.
// Loop::Create checks presets against this.
Capabilities CurrentCapabilities();

// Bytes of memory the kernel pins (and charges to RLIMIT_MEMLOCK) when a
// region of `bytes` is registered: whole pages.
uint64_t MemlockPagesBytes(uint64_t bytes);

namespace internal {
// The process-wide record of registered buffer memory, kept by the io_uring
// backend: Charge() after a successful registration, Release() once it is
// unregistered. Thread-safe.
void MemlockCharge(uint64_t bytes);
void MemlockRelease(uint64_t bytes);
}  // namespace internal

// OK if `preset` can run here with `registered_bytes` of registered buffers,
// otherwise an error naming the missing feature, its cause and the fix.
absl::Status CheckPresetSupported(Preset preset, const Capabilities& caps,
                                  uint64_t registered_bytes);

// Resolves a requested name ("auto" included) to a supported preset.
absl::StatusOr<BackendInfo> ResolveBackend(std::string_view requested,
                                           const Capabilities& caps,
                                           uint64_t registered_bytes);

}  // namespace ringlab::transport

#endif  // RINGLAB_TRANSPORT_PRESET_H_
