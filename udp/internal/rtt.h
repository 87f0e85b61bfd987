// RttEstimator: RFC 9002 §5 round-trip time estimation, and the probe
// timeout it implies (§6.2.1).
//
//   RttEstimator rtt(std::chrono::milliseconds(333));
//   rtt.OnSample(latest_rtt, ack_delay, max_ack_delay);
//   Duration pto = rtt.ProbeTimeout(max_ack_delay, granularity);
//
// Plain value type; no allocation; not thread-safe.
#ifndef RINGLAB_UDP_INTERNAL_RTT_H_
#define RINGLAB_UDP_INTERNAL_RTT_H_

#include <algorithm>

#include "transport/time.h"

namespace ringlab::rudp::internal {

class RttEstimator {
 public:
  explicit RttEstimator(Duration initial_rtt)
      : smoothed_(initial_rtt), rttvar_(initial_rtt / 2) {}

  // §5.3. `ack_delay` is what the peer reported, already clamped by the
  // caller to the peer's max_ack_delay.
  void OnSample(Duration latest, Duration ack_delay) {
    if (latest <= Duration::zero()) latest = Duration(1);
    latest_ = latest;
    if (!has_sample_) {
      // §5.3: the first sample sets everything.
      has_sample_ = true;
      min_ = latest;
      smoothed_ = latest;
      rttvar_ = latest / 2;
      return;
    }
    // §5.2: min_rtt ignores ack delay.
    min_ = std::min(min_, latest);
    // §5.3: subtract the peer's ack delay unless that would go below min_rtt.
    Duration adjusted = latest;
    if (latest >= min_ + ack_delay) adjusted = latest - ack_delay;
    const Duration diff =
        smoothed_ > adjusted ? smoothed_ - adjusted : adjusted - smoothed_;
    rttvar_ = (rttvar_ * 3 + diff) / 4;
    smoothed_ = (smoothed_ * 7 + adjusted) / 8;
  }

  // §6.2.1: PTO = smoothed_rtt + max(4 * rttvar, kGranularity) +
  // max_ack_delay, before backoff.
  Duration ProbeTimeout(Duration max_ack_delay, Duration granularity) const {
    return smoothed_ + std::max(rttvar_ * 4, granularity) + max_ack_delay;
  }

  // §6.1.2: max(kTimeThreshold * max(smoothed_rtt, latest_rtt),
  // kGranularity) with kTimeThreshold = 9/8.
  Duration LossDelay(Duration granularity) const {
    const Duration base = std::max(smoothed_, latest_);
    return std::max(base + base / 8, granularity);
  }

  bool has_sample() const { return has_sample_; }
  Duration smoothed() const { return smoothed_; }
  Duration rttvar() const { return rttvar_; }
  Duration min() const { return has_sample_ ? min_ : smoothed_; }
  Duration latest() const { return latest_; }

 private:
  bool has_sample_ = false;
  Duration latest_{0};
  Duration min_{0};
  Duration smoothed_;
  Duration rttvar_;
};

}  // namespace ringlab::rudp::internal

#endif  // RINGLAB_UDP_INTERNAL_RTT_H_
