#include "bench/process_stats.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
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

absl::StatusOr<uint64_t> RaiseOpenFileLimit(uint64_t needed) {
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(
        absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  if (limit.rlim_cur < limit.rlim_max) {
    const rlim_t old = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) limit.rlim_cur = old;
  }
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "needs ", needed, " file descriptors but RLIMIT_NOFILE allows ",
        limit.rlim_cur, " (hard limit ", limit.rlim_max,
        "); raise the hard limit (ulimit -Hn, or LimitNOFILE= for a service)"));
  }
  return static_cast<uint64_t>(limit.rlim_cur);
}

uint64_t ResidentSetKib() {
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[128];
  const ssize_t n = ::read(fd, text, sizeof(text) - 1);
  ::close(fd);
  if (n <= 0) return 0;
  text[n] = '\0';
  // statm: size resident shared ... in pages.
  unsigned long long size_pages = 0, resident_pages = 0;
  if (std::sscanf(text, "%llu %llu", &size_pages, &resident_pages) != 2) {
    return 0;
  }
  return resident_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) / 1024;
}

}  // namespace ringlab::bench
