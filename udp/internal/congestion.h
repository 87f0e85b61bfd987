// NewReno congestion control (RFC 9002 §7) and a token-bucket pacer
// (§7.7), with a switch that turns both into "no limit" for comparisons
// with stacks that have no congestion control (KCP's `nc` mode; ENet only
// throttles).
//
//   NewReno cc(1400, /*enabled=*/true);
//   if (cc.CanSend(bytes)) { ...send...; cc.OnPacketSent(bytes); }
//   cc.OnPacketAcked(bytes, sent_time, app_limited);
//   cc.OnCongestionEvent(largest_lost_sent_time, now);
//
//   Pacer pacer;
//   Timestamp t = pacer.NextSendTime(now, size, cc.window(), srtt);
//
// Byte counts are of UDP payload. Plain value types; no allocation.
#ifndef RINGLAB_UDP_INTERNAL_CONGESTION_H_
#define RINGLAB_UDP_INTERNAL_CONGESTION_H_

#include <algorithm>
#include <cstdint>
#include <limits>

#include "transport/time.h"

namespace ringlab::rudp::internal {

class NewReno {
 public:
  // §7.2: the initial window is min(10 * max_datagram_size,
  // max(14720, 2 * max_datagram_size)); the minimum is 2 datagrams.
  NewReno(uint64_t max_datagram_bytes, bool enabled)
      : enabled_(enabled),
        mss_(max_datagram_bytes),
        window_(enabled
                    ? std::min(10 * mss_, std::max<uint64_t>(14720, 2 * mss_))
                    : kUnlimited) {}

  static constexpr uint64_t kUnlimited =
      std::numeric_limits<uint64_t>::max() / 4;

  bool enabled() const { return enabled_; }
  uint64_t window() const { return window_; }
  uint64_t bytes_in_flight() const { return bytes_in_flight_; }
  uint64_t ssthresh() const { return ssthresh_; }
  bool in_slow_start() const { return window_ < ssthresh_; }
  uint64_t minimum_window() const { return 2 * mss_; }

  bool CanSend(uint64_t bytes) const {
    return bytes_in_flight_ + bytes <= window_;
  }
  void OnPacketSent(uint64_t bytes) { bytes_in_flight_ += bytes; }
  // Removes bytes from flight without a congestion response (a packet
  // declared lost whose loss is handled by OnCongestionEvent, or discarded).
  void OnPacketRemoved(uint64_t bytes) {
    bytes_in_flight_ -= std::min(bytes, bytes_in_flight_);
  }

  // §7.3.1 / §7.3.2 and Appendix B.5. `app_limited`: the sender was not
  // using its window when this packet went out (§7.8), so an ACK of it says
  // nothing about the network's capacity.
  void OnPacketAcked(uint64_t bytes, Timestamp sent_time, bool app_limited) {
    OnPacketRemoved(bytes);
    if (!enabled_ || app_limited) return;
    if (sent_time <= recovery_start_) return;  // §7.3.2: no growth in recovery
    if (in_slow_start()) {
      window_ += bytes;
      return;
    }
    // Congestion avoidance: one datagram per window of acknowledged bytes.
    acked_in_avoidance_ += bytes;
    if (acked_in_avoidance_ >= window_) {
      acked_in_avoidance_ -= window_;
      window_ += mss_;
    }
  }

  // §7.3.2: one reduction per round trip; packets sent before the current
  // recovery period started do not reduce the window again.
  void OnCongestionEvent(Timestamp sent_time, Timestamp now) {
    if (!enabled_ || sent_time <= recovery_start_) return;
    recovery_start_ = now;
    ssthresh_ =
        std::max(window_ / 2, minimum_window());  // kLossReductionFactor
    window_ = ssthresh_;
    acked_in_avoidance_ = 0;
    ++congestion_events_;
  }

  // §7.6.2: persistent congestion collapses the window to the minimum.
  void OnPersistentCongestion() {
    if (!enabled_) return;
    window_ = minimum_window();
    recovery_start_ = Timestamp::Zero();
    acked_in_avoidance_ = 0;
    ++persistent_congestion_events_;
  }

  uint64_t congestion_events() const { return congestion_events_; }
  uint64_t persistent_congestion_events() const {
    return persistent_congestion_events_;
  }

 private:
  bool enabled_;
  uint64_t mss_;
  uint64_t window_;
  uint64_t ssthresh_ = kUnlimited;
  uint64_t bytes_in_flight_ = 0;
  uint64_t acked_in_avoidance_ = 0;
  Timestamp recovery_start_ = Timestamp::Zero();
  uint64_t congestion_events_ = 0;
  uint64_t persistent_congestion_events_ = 0;
};

// RFC 9002 §7.7: send at rate N * cwnd / smoothed_rtt with N = 1.25 (so the
// window is not starved by timer slack), allowing a burst of up to
// `burst_bytes` after an idle period.
class Pacer {
 public:
  explicit Pacer(uint64_t burst_bytes = 10 * 1400)
      : burst_bytes_(burst_bytes), tokens_(burst_bytes) {}

  // When a packet of `bytes` may leave: `now` if the bucket holds enough.
  Timestamp NextSendTime(Timestamp now, uint64_t bytes, uint64_t window,
                         Duration smoothed_rtt) {
    Refill(now, window, smoothed_rtt);
    if (tokens_ >= double(bytes)) return now;
    const double rate = RateBytesPerNs(window, smoothed_rtt);
    const double wait_ns = (double(bytes) - tokens_) / rate;
    return now + Duration(int64_t(wait_ns) + 1);
  }

  // The same answer without refilling: when a packet of `bytes` could leave
  // if nothing else is sent meanwhile (for NextDeadline(), which is const).
  Timestamp EarliestSendTime(uint64_t bytes, uint64_t window,
                             Duration smoothed_rtt) const {
    if (tokens_ >= double(bytes)) return last_;
    const double rate = RateBytesPerNs(window, smoothed_rtt);
    return last_ + Duration(int64_t((double(bytes) - tokens_) / rate) + 1);
  }

  void OnSent(Timestamp now, uint64_t bytes, uint64_t window,
              Duration smoothed_rtt) {
    Refill(now, window, smoothed_rtt);
    tokens_ -= double(bytes);
  }

 private:
  static double RateBytesPerNs(uint64_t window, Duration smoothed_rtt) {
    const double rtt_ns =
        std::max<double>(double(smoothed_rtt.count()), 1000.0);
    return 1.25 * double(window) / rtt_ns;
  }
  void Refill(Timestamp now, uint64_t window, Duration smoothed_rtt) {
    if (now > last_) {
      tokens_ +=
          double((now - last_).count()) * RateBytesPerNs(window, smoothed_rtt);
      last_ = now;
    }
    tokens_ = std::min(tokens_, double(burst_bytes_));
  }

  uint64_t burst_bytes_;
  double tokens_;
  Timestamp last_ = Timestamp::Zero();
};

}  // namespace ringlab::rudp::internal

#endif  // RINGLAB_UDP_INTERNAL_CONGESTION_H_
