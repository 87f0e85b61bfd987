// Process-level measurement helpers for benchmark programs: CPU time from
// getrusage() and pinning the calling thread to one CPU.
//
//   CpuTime before = CpuTime::Now();
//   ... measured phase ...
//   CpuTime used = CpuTime::Now() - before;
//   double us_per_msg = used.total_us() / messages;
//
//   absl::Status s = PinThisThreadToCpu(1);  // InvalidArgument / errno text
//
//   absl::StatusOr<uint64_t> limit = RaiseOpenFileLimit(10064);
//   uint64_t rss_kib = ResidentSetKib();
//
// CpuTime covers the whole process (RUSAGE_SELF): all threads, including an
// io_uring SQPOLL thread, which the kernel accounts to the owning process.
#ifndef RINGLAB_BENCH_PROCESS_STATS_H_
#define RINGLAB_BENCH_PROCESS_STATS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ringlab::bench {

struct CpuTime {
  int64_t user_us = 0;
  int64_t system_us = 0;

  static CpuTime Now();  // getrusage(RUSAGE_SELF)
  int64_t total_us() const { return user_us + system_us; }
  friend CpuTime operator-(const CpuTime& a, const CpuTime& b) {
    return {a.user_us - b.user_us, a.system_us - b.system_us};
  }
};

// Restricts the calling thread to `cpu` (sched_setaffinity). Errors name the
// CPU and the errno text (e.g. a CPU outside the allowed set).
absl::Status PinThisThreadToCpu(int cpu);

// Raises RLIMIT_NOFILE's soft limit to its hard limit and returns the new
// soft limit. ResourceExhausted (naming both numbers and the fix) when even
// the hard limit is below `needed` descriptors.
absl::StatusOr<uint64_t> RaiseOpenFileLimit(uint64_t needed);

// The process's resident set in KiB (/proc/self/statm), 0 if unreadable.
// Makes three syscalls and no allocation: fine on a timer, not per message.
uint64_t ResidentSetKib();

}  // namespace ringlab::bench

#endif  // RINGLAB_BENCH_PROCESS_STATS_H_
