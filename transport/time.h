// Time for ringlab: a monotonic `Timestamp` and `Duration` in nanoseconds.
//
// Protocol cores never read a clock; they take a `Timestamp now` argument.
// The Loop caches `now()` once per iteration and the simulated network drives
// a virtual clock, so both hand the same type to a core.
//
//   Timestamp start = MonotonicNow();
//   Timestamp deadline = start + std::chrono::milliseconds(200);
//   if (now >= deadline) { ... }
//   int64_t waited_ns = (now - start).count();
//
// `Timestamp::Never()` is the "no deadline" value returned by idle cores.
#ifndef RINGLAB_TRANSPORT_TIME_H_
#define RINGLAB_TRANSPORT_TIME_H_

#include <chrono>
#include <compare>
#include <cstdint>
#include <limits>

namespace ringlab {

using Duration = std::chrono::nanoseconds;

// A point on a monotonic clock, in nanoseconds since an arbitrary epoch.
class Timestamp {
 public:
  constexpr Timestamp() = default;
  static constexpr Timestamp FromNanos(int64_t ns) { return Timestamp(ns); }
  static constexpr Timestamp Zero() { return Timestamp(0); }
  static constexpr Timestamp Never() {
    return Timestamp(std::numeric_limits<int64_t>::max());
  }

  constexpr int64_t nanos() const { return ns_; }
  constexpr bool is_never() const { return *this == Never(); }

  constexpr auto operator<=>(const Timestamp&) const = default;

  // Adding to Never() stays Never(); saturates instead of overflowing.
  constexpr Timestamp operator+(Duration d) const {
    if (is_never()) return Never();
    const int64_t add = d.count();
    if (add > 0 && ns_ > std::numeric_limits<int64_t>::max() - add) {
      return Never();
    }
    return Timestamp(ns_ + add);
  }
  constexpr Timestamp operator-(Duration d) const { return *this + (-d); }
  constexpr Timestamp& operator+=(Duration d) { return *this = *this + d; }
  constexpr Duration operator-(Timestamp other) const {
    return Duration(ns_ - other.ns_);
  }

 private:
  constexpr explicit Timestamp(int64_t ns) : ns_(ns) {}
  int64_t ns_ = 0;
};

// Reads CLOCK_MONOTONIC. Only drivers, the Loop and benchmarks call this.
Timestamp MonotonicNow();

}  // namespace ringlab

#endif  // RINGLAB_TRANSPORT_TIME_H_
