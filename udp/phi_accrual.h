// PhiAccrualDetector: the phi-accrual failure detector of Hayashibara,
// Défago, Yared and Katayama, "The φ Accrual Failure Detector" (SRDS 2004),
// with the two practical knobs Akka and Cassandra added: a minimum standard
// deviation and an acceptable pause.
//
// The detector keeps a sliding window of inter-arrival times of messages
// from the monitored peer and fits a normal distribution to it (paper §4.1,
// "estimation of the distribution"). At time `now`, with `T_last` the last
// arrival,
//
//   phi(now) = -log10(P_later(now - T_last)),
//   P_later(t) = 1 - F(t),  F the normal CDF with the window's mean
//                (+ acceptable_pause) and standard deviation
//                (at least min_std_dev).
//
// phi = 1 means a 10% chance the peer is still alive and merely late, phi =
// 8 a 10^-8 chance. The caller picks thresholds: rudp probes at a lower one
// and declares the peer dead at `threshold`.
//
//   PhiAccrualOptions options;
//   options.threshold = 8;
//   PhiAccrualDetector detector(options);
//   detector.Start(now);                  // the connection came up
//   detector.OnArrival(now);              // every packet from the peer
//   if (detector.Phi(now) >= options.threshold) { /* dead */ }
//   Timestamp wake = detector.TimeWhenPhiReaches(options.threshold);
//
// Arrivals closer together than `min_sample_interval` to the last sampled
// arrival refresh T_last but add no sample: a burst of data packets is
// evidence the peer is alive, but its microsecond gaps say nothing about
// how long the next silence may last, and would make any pause look fatal.
//
// RealMQ's detector never updated its history (a pointer-arithmetic bug);
// this one's window is a ring whose every step is unit-tested with known
// arrival sequences.
//
// Memory: the window (window_size doubles) is allocated by the constructor;
// nothing allocates afterwards. Not thread-safe.
#ifndef RINGLAB_UDP_PHI_ACCRUAL_H_
#define RINGLAB_UDP_PHI_ACCRUAL_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "transport/time.h"

namespace ringlab::rudp {

struct PhiAccrualOptions {
  // phi at which the peer is declared failed.
  double threshold = 8.0;
  // Inter-arrival samples kept (the paper's window size). At least 1.
  size_t window_size = 100;
  // Floor on the fitted standard deviation: a perfectly regular history
  // would otherwise make any tiny delay look like a failure.
  Duration min_std_dev = std::chrono::milliseconds(10);
  // Added to the fitted mean: a pause the application tolerates (GC, a
  // loaded host) before suspicion starts to rise.
  Duration acceptable_pause = Duration::zero();
  // The mean assumed before the first sample (standard deviation a quarter
  // of it); normally the heartbeat interval.
  Duration first_heartbeat_estimate = std::chrono::milliseconds(100);
  // See the header comment. 0 samples every arrival.
  Duration min_sample_interval = Duration::zero();
};

class PhiAccrualDetector {
 public:
  explicit PhiAccrualDetector(const PhiAccrualOptions& options);

  // Starts monitoring: T_last = now, history cleared.
  void Start(Timestamp now);
  // A message from the peer arrived at `now` (non-decreasing).
  void OnArrival(Timestamp now);

  double Phi(Timestamp now) const;
  // The earliest time at which Phi() reaches `phi` if nothing arrives
  // before; Never() before Start().
  Timestamp TimeWhenPhiReaches(double phi) const;

  bool started() const { return started_; }
  Timestamp last_arrival() const { return last_arrival_; }
  size_t samples() const { return count_; }
  // The fitted distribution, in nanoseconds, with the floors applied
  // (mean includes acceptable_pause).
  double mean_ns() const { return mean_ns_; }
  double std_dev_ns() const { return std_ns_; }
  // The raw window, oldest first (for tests).
  std::vector<double> history_ns() const;
  const PhiAccrualOptions& options() const { return options_; }

  // phi for a normal distribution: -log10(P(X > elapsed)). Exposed for the
  // tests and the threshold sweep.
  static double PhiOf(double elapsed_ns, double mean_ns, double std_ns);

 private:
  void Refit();
  double ElapsedForPhi(double phi) const;

  PhiAccrualOptions options_;
  std::vector<double> window_;  // ring of inter-arrival times, ns
  size_t head_ = 0;             // next slot to write
  size_t count_ = 0;
  bool started_ = false;
  Timestamp last_arrival_ = Timestamp::Zero();
  Timestamp last_sample_ = Timestamp::Zero();
  double mean_ns_ = 0;
  double std_ns_ = 0;
  // ElapsedForPhi cache: the fit changes only when a sample is added.
  mutable double cached_phi_[2] = {-1, -1};
  mutable double cached_elapsed_[2] = {0, 0};
};

}  // namespace ringlab::rudp

#endif  // RINGLAB_UDP_PHI_ACCRUAL_H_
