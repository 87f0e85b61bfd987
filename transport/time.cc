#include "transport/time.h"

#include <time.h>

namespace ringlab {

Timestamp MonotonicNow() {
  timespec ts;
  // CLOCK_MONOTONIC is served by the vDSO, so this is not a kernel entry.
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return Timestamp::FromNanos(static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 +
                              ts.tv_nsec);
}

}  // namespace ringlab
