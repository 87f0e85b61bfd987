#include "udp/phi_accrual.h"

#include <algorithm>
#include <cmath>

namespace ringlab::rudp {

PhiAccrualDetector::PhiAccrualDetector(const PhiAccrualOptions& options)
    : options_(options), window_(std::max<size_t>(options.window_size, 1)) {
  Refit();
}

void PhiAccrualDetector::Start(Timestamp now) {
  started_ = true;
  last_arrival_ = now;
  last_sample_ = now;
  head_ = 0;
  count_ = 0;
  Refit();
}

void PhiAccrualDetector::OnArrival(Timestamp now) {
  if (!started_) {
    Start(now);
    return;
  }
  if (now < last_arrival_) now = last_arrival_;
  last_arrival_ = now;
  const Duration since_sample = now - last_sample_;
  if (since_sample < options_.min_sample_interval ||
      since_sample <= Duration::zero()) {
    return;
  }
  // Paper §4.1: the window holds the most recent inter-arrival times; the
  // oldest is overwritten once it is full.
  window_[head_] = double(since_sample.count());
  head_ = (head_ + 1) % window_.size();
  count_ = std::min(count_ + 1, window_.size());
  last_sample_ = now;
  Refit();
}

void PhiAccrualDetector::Refit() {
  double mean, std;
  if (count_ == 0) {
    mean = double(options_.first_heartbeat_estimate.count());
    std = mean / 4;
  } else {
    // Two passes over at most window_size values: exact, no running-sum
    // drift, and only done when a sample is added.
    double sum = 0;
    for (size_t i = 0; i < count_; ++i) sum += window_[i];
    mean = sum / double(count_);
    double squares = 0;
    for (size_t i = 0; i < count_; ++i) {
      squares += (window_[i] - mean) * (window_[i] - mean);
    }
    std = std::sqrt(squares / double(count_));
  }
  mean_ns_ = mean + double(options_.acceptable_pause.count());
  std_ns_ = std::max(std, double(options_.min_std_dev.count()));
  if (std_ns_ <= 0) std_ns_ = 1;
  cached_phi_[0] = cached_phi_[1] = -1;
}

std::vector<double> PhiAccrualDetector::history_ns() const {
  std::vector<double> out;
  out.reserve(count_);
  const size_t start = (head_ + window_.size() - count_) % window_.size();
  for (size_t i = 0; i < count_; ++i) {
    out.push_back(window_[(start + i) % window_.size()]);
  }
  return out;
}

double PhiAccrualDetector::PhiOf(double elapsed_ns, double mean_ns,
                                 double std_ns) {
  const double y = (elapsed_ns - mean_ns) / std_ns;
  // P_later = Q(y) = erfc(y / sqrt 2) / 2. Beyond y ~ 37 erfc underflows
  // to 0; use the first term of its asymptotic expansion there,
  // ln Q(y) ~ -y^2/2 - ln(y sqrt(2 pi)), so phi keeps growing smoothly.
  if (y < 30) {
    const double q = 0.5 * std::erfc(y / std::sqrt(2.0));
    return -std::log10(q);
  }
  const double ln_q = -0.5 * y * y - std::log(y * std::sqrt(2.0 * M_PI));
  return -ln_q / std::log(10.0);
}

double PhiAccrualDetector::Phi(Timestamp now) const {
  if (!started_) return 0;
  const double elapsed =
      now > last_arrival_ ? double((now - last_arrival_).count()) : 0.0;
  return PhiOf(elapsed, mean_ns_, std_ns_);
}

double PhiAccrualDetector::ElapsedForPhi(double phi) const {
  for (int i = 0; i < 2; ++i) {
    if (cached_phi_[i] == phi) return cached_elapsed_[i];
  }
  // phi is increasing in y; bisect y on [-40, 60] (phi from ~0 to ~785).
  double lo = -40, hi = 60;
  for (int i = 0; i < 80; ++i) {
    const double mid = (lo + hi) / 2;
    if (PhiOf(mean_ns_ + mid * std_ns_, mean_ns_, std_ns_) < phi) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const double elapsed = std::max(0.0, mean_ns_ + hi * std_ns_);
  cached_phi_[1] = cached_phi_[0];
  cached_elapsed_[1] = cached_elapsed_[0];
  cached_phi_[0] = phi;
  cached_elapsed_[0] = elapsed;
  return elapsed;
}

Timestamp PhiAccrualDetector::TimeWhenPhiReaches(double phi) const {
  if (!started_) return Timestamp::Never();
  const double elapsed = std::ceil(ElapsedForPhi(phi));
  if (elapsed > 9e18) return Timestamp::Never();
  return last_arrival_ + Duration(int64_t(elapsed));
}

}  // namespace ringlab::rudp
