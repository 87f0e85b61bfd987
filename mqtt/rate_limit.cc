#include "mqtt/rate_limit.h"

#include <algorithm>

namespace ringlab::mqtt {

void TokenBucket::Refill(Timestamp now) {
  if (!started_) {
    started_ = true;
    last_ = now;
    return;
  }
  if (now <= last_) return;  // same instant, or the clock stepped back
  const double elapsed_s = double((now - last_).count()) * 1e-9;
  tokens_ = std::min(burst_, tokens_ + elapsed_s * rate_per_s_);
  last_ = now;
}

bool TokenBucket::TryTake(double n, Timestamp now) {
  if (unlimited()) return true;
  Refill(now);
  if (tokens_ < n) return false;
  tokens_ -= n;
  return true;
}

double TokenBucket::Available(Timestamp now) {
  if (unlimited()) return burst_;
  Refill(now);
  return tokens_;
}

}  // namespace ringlab::mqtt
