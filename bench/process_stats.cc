#include "bench/process_stats.h"

#include <sched.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringlab::bench {

CpuTime CpuTime::Now() {
  struct rusage usage {};
  // RUSAGE_SELF cannot fail with a valid pointer; keep zeros if it somehow
  // does rather than aborting a measurement.
  ::getrusage(RUSAGE_SELF, &usage);
  CpuTime t;
  t.user_us =
      int64_t{usage.ru_utime.tv_sec} * 1'000'000 + usage.ru_utime.tv_usec;
  t.system_us =
      int64_t{usage.ru_stime.tv_sec} * 1'000'000 + usage.ru_stime.tv_usec;
  return t;
}

absl::Status PinThisThreadToCpu(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) {
    return absl::InvalidArgumentError(
        absl::StrCat("--cpu=", cpu, " is out of range [0, ", CPU_SETSIZE, ")"));
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  // pid 0: the calling thread only, so helper threads created later (none
  // today) would inherit it but already running ones are not moved.
  if (::sched_setaffinity(0, sizeof(set), &set) != 0) {
    const int err = errno;
    return absl::InvalidArgumentError(absl::StrCat(
        "sched_setaffinity(cpu ", cpu, "): ", std::strerror(err),
        " (is the CPU online and in this process's allowed set?)"));
  }
  return absl::OkStatus();
}

}  // namespace ringlab::bench
