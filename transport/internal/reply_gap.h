// ReplyGapTracker: learns how soon after a Loop's sends the next receive
// arrives (in request/response traffic: the reply), so a backend can decide
// whether waiting a little longer, or spinning, is likely to pay.
//
// Two users:
//  - the io_uring batched wait (PresetFlags::min_wait_batching): the enter
//    that submits datagram sends waits for one completion beyond them, but
//    at most a window (the kernel's min_wait_usec), sized from the p90 of
//    the recent gaps; when the window passes with only the sends' own
//    completions, the enter returns and those are dispatched at once;
//  - the hybrid presets (uring-hybrid, epoll-hybrid): after a send, spin
//    for about the p90 gap, then sleep in the kernel.
//
//   ReplyGapTracker gaps;
//   gaps.Sent(now);                       // sends handed to the kernel
//   ... wait ...
//   if (received) gaps.Received(now);     // closes the open gap, if any
//   int64_t p90 = gaps.p90_ns();          // -1 until enough samples
//
// A gap opens at the first send after the last receive and closes at the
// next receive; Expired() records an open gap as "longer than any window"
// (a batched wait or a spin that the reply did not end), so a one-way sender
// stops batching after a few sends. Samples are kept in a fixed ring
// (kSamples), the p90 is recomputed every kRecomputeEvery samples; nothing
// allocates. Not thread-safe: one per Loop, used on its thread.
#ifndef RINGLAB_TRANSPORT_INTERNAL_REPLY_GAP_H_
#define RINGLAB_TRANSPORT_INTERNAL_REPLY_GAP_H_

#include <algorithm>
#include <array>
#include <cstdint>

namespace ringlab::transport::internal {

class ReplyGapTracker {
 public:
  static constexpr int kSamples = 32;
  static constexpr int kMinSamples = 8;
  static constexpr int kRecomputeEvery = 4;
  // What Expired() records: longer than any window a backend uses.
  static constexpr int64_t kBeyondNs = int64_t{1} << 40;

  // Sends were handed to the kernel at `now_ns`: opens a gap unless one is
  // open (the gap runs from the first unanswered send).
  void Sent(int64_t now_ns) {
    if (open_since_ns_ < 0) open_since_ns_ = now_ns;
  }
  // Something was received at `now_ns`: closes the open gap as a sample.
  void Received(int64_t now_ns) {
    if (open_since_ns_ < 0) return;
    Record(std::max<int64_t>(0, now_ns - open_since_ns_));
    open_since_ns_ = -1;
  }
  // A batched wait or a spin ended with the gap still open: the reply, if
  // there is one, comes later than the window, which is all that matters.
  void Expired() {
    if (open_since_ns_ < 0) return;
    Record(kBeyondNs);
    open_since_ns_ = -1;
  }
  bool gap_open() const { return open_since_ns_ >= 0; }
  int64_t open_since_ns() const { return open_since_ns_; }
  // The 90th percentile of the last kSamples gaps (kBeyondNs if more than a
  // tenth of them expired), or -1 before kMinSamples were seen.
  int64_t p90_ns() const { return p90_ns_; }
  uint64_t samples() const { return total_; }

 private:
  void Record(int64_t gap_ns) {
    samples_[next_] = gap_ns;
    next_ = (next_ + 1) % kSamples;
    ++total_;
    if (total_ >= kMinSamples && total_ % kRecomputeEvery == 0) Recompute();
  }
  void Recompute() {
    const int n = static_cast<int>(std::min<uint64_t>(total_, kSamples));
    std::array<int64_t, kSamples> sorted;
    std::copy(samples_.begin(), samples_.begin() + n, sorted.begin());
    // The smallest value at or above 90% of the samples.
    const int k = std::min(n - 1, (n * 9 + 9) / 10 - 1);
    std::nth_element(sorted.begin(), sorted.begin() + k, sorted.begin() + n);
    p90_ns_ = sorted[k];
  }

  std::array<int64_t, kSamples> samples_{};
  int next_ = 0;
  uint64_t total_ = 0;
  int64_t p90_ns_ = -1;
  int64_t open_since_ns_ = -1;
};

}  // namespace ringlab::transport::internal

#endif  // RINGLAB_TRANSPORT_INTERNAL_REPLY_GAP_H_
