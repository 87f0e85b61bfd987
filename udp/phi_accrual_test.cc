#include "udp/phi_accrual.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace ringlab::rudp {
namespace {

using std::chrono::milliseconds;

constexpr double kMs = 1e6;  // ns per ms

Timestamp At(double ms) { return Timestamp::FromNanos(int64_t(ms * kMs)); }

PhiAccrualOptions Options(size_t window = 100, double min_std_ms = 1) {
  PhiAccrualOptions o;
  o.window_size = window;
  o.min_std_dev = Duration(int64_t(min_std_ms * kMs));
  o.first_heartbeat_estimate = milliseconds(100);
  return o;
}

// Feeds arrivals at the given inter-arrival times (ms), starting at t=0.
double Feed(PhiAccrualDetector& d, const std::vector<double>& intervals_ms) {
  double t = 0;
  d.Start(At(t));
  for (double i : intervals_ms) {
    t += i;
    d.OnArrival(At(t));
  }
  return t;
}

// RealMQ's detector never updated its history. Every arrival must land in
// the window, in order, and the fit must follow.
TEST(PhiAccrualTest, HistoryRecordsEveryInterval) {
  PhiAccrualDetector d(Options());
  Feed(d, {90, 110, 100, 120, 80});
  const std::vector<double> history = d.history_ns();
  ASSERT_EQ(history.size(), 5u);
  const double expected[] = {90, 110, 100, 120, 80};
  for (size_t i = 0; i < 5; ++i)
    EXPECT_DOUBLE_EQ(history[i], expected[i] * kMs);
  EXPECT_NEAR(d.mean_ns(), 100 * kMs, 1);
  // Population std of {-10, 10, 0, 20, -20} ms: sqrt(200) ms.
  EXPECT_NEAR(d.std_dev_ns(), std::sqrt(200.0) * kMs, 1);
}

TEST(PhiAccrualTest, WindowSlidesOverTheOldestSamples) {
  PhiAccrualDetector d(Options(/*window=*/3));
  Feed(d, {10, 20, 30, 40, 50});
  const std::vector<double> history = d.history_ns();
  ASSERT_EQ(history.size(), 3u);
  EXPECT_DOUBLE_EQ(history[0], 30 * kMs);
  EXPECT_DOUBLE_EQ(history[1], 40 * kMs);
  EXPECT_DOUBLE_EQ(history[2], 50 * kMs);
  EXPECT_NEAR(d.mean_ns(), 40 * kMs, 1);
}

TEST(PhiAccrualTest, PhiFollowsTheNormalTail) {
  PhiAccrualDetector d(Options());
  const double last = Feed(d, {90, 110, 100, 120, 80});
  const double sigma = std::sqrt(200.0);
  // At the mean, P_later = 1/2: phi = log10(2).
  EXPECT_NEAR(d.Phi(At(last + 100)), std::log10(2.0), 1e-6);
  // Two standard deviations late: P_later = Q(2) = 0.0227501.
  EXPECT_NEAR(d.Phi(At(last + 100 + 2 * sigma)), -std::log10(0.0227501), 1e-4);
  // Monotone in the elapsed time, right out into the asymptotic branch.
  double previous = -1;
  for (double ms = 0; ms < 3000; ms += 7) {
    const double phi = d.Phi(At(last + ms));
    EXPECT_GE(phi, previous) << ms;
    EXPECT_TRUE(std::isfinite(phi));
    previous = phi;
  }
  EXPECT_GT(previous, 1000);
}

TEST(PhiAccrualTest, AsymptoticBranchIsContinuous) {
  const double below = PhiAccrualDetector::PhiOf(29.999, 0, 1);
  const double above = PhiAccrualDetector::PhiOf(30.001, 0, 1);
  EXPECT_NEAR(below, above, 0.05 * below);
}

TEST(PhiAccrualTest, MinStdDevAndPauseShiftTheCurve) {
  // Perfectly regular heartbeats: the fitted std is 0, the floor rules.
  PhiAccrualDetector tight(Options(100, /*min_std_ms=*/5));
  const double last = Feed(tight, std::vector<double>(20, 100));
  EXPECT_NEAR(tight.std_dev_ns(), 5 * kMs, 1);
  EXPECT_NEAR(tight.Phi(At(last + 105)), -std::log10(0.158655), 1e-4);  // 1σ

  PhiAccrualOptions o = Options(100, 5);
  o.acceptable_pause = milliseconds(50);
  PhiAccrualDetector paused(o);
  Feed(paused, std::vector<double>(20, 100));
  EXPECT_NEAR(paused.mean_ns(), 150 * kMs, 1);
  EXPECT_NEAR(paused.Phi(At(last + 155)), tight.Phi(At(last + 105)), 1e-9);
}

TEST(PhiAccrualTest, TimeWhenPhiReachesInvertsPhi) {
  PhiAccrualDetector d(Options(100, 2));
  const double last = Feed(d, {95, 105, 98, 102, 100, 97, 103});
  for (double target : {1.0, 3.0, 8.0, 16.0}) {
    const Timestamp t = d.TimeWhenPhiReaches(target);
    EXPECT_GE(d.Phi(t), target - 1e-6);
    EXPECT_LT(d.Phi(t - Duration(1000)), target);  // 1 µs earlier: below
    EXPECT_GT(t, At(last));
  }
  // Higher thresholds come later.
  EXPECT_LT(d.TimeWhenPhiReaches(3), d.TimeWhenPhiReaches(8));
}

TEST(PhiAccrualTest, ArrivalResetsSuspicion) {
  PhiAccrualDetector d(Options(100, 5));
  const double last = Feed(d, std::vector<double>(10, 100));
  EXPECT_GT(d.Phi(At(last + 300)), 8);
  d.OnArrival(At(last + 300));
  EXPECT_LT(d.Phi(At(last + 301)), 1);
  // The long gap entered the history and widened the distribution.
  EXPECT_GT(d.std_dev_ns(), 5 * kMs);
}

TEST(PhiAccrualTest, ArrivalsCloserThanTheSampleIntervalRefreshOnly) {
  PhiAccrualOptions o = Options();
  o.min_sample_interval = milliseconds(50);
  PhiAccrualDetector d(o);
  d.Start(At(0));
  // A burst of data every 1 ms for 200 ms: about 4 samples of ~50 ms.
  for (int ms = 1; ms <= 200; ++ms) d.OnArrival(At(ms));
  EXPECT_EQ(d.samples(), 4u);
  for (double h : d.history_ns()) EXPECT_NEAR(h, 50 * kMs, 1);
  EXPECT_EQ(d.last_arrival(), At(200));
  EXPECT_LT(d.Phi(At(201)), 1);
}

TEST(PhiAccrualTest, BootstrapsFromTheFirstEstimate) {
  PhiAccrualDetector d(Options());
  EXPECT_EQ(d.Phi(At(1000)), 0);  // not started
  EXPECT_TRUE(d.TimeWhenPhiReaches(8).is_never());
  d.Start(At(0));
  EXPECT_EQ(d.samples(), 0u);
  EXPECT_NEAR(d.mean_ns(), 100 * kMs, 1);
  EXPECT_NEAR(d.std_dev_ns(), 25 * kMs, 1);
}

}  // namespace
}  // namespace ringlab::rudp
