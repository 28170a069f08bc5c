#include "server/log_rate_limiter.h"

namespace adjutant {

LogRateLimiter::LogRateLimiter(int burst, absl::Duration window)
    : burst_(burst), window_(window) {}

bool LogRateLimiter::Allow(absl::Duration monotonic_now, int64_t* suppressed) {
  absl::MutexLock lock(&mu_);
  if (!started_ || monotonic_now - window_start_ >= window_) {
    started_ = true;
    window_start_ = monotonic_now;
    allowed_in_window_ = 0;
  }
  if (allowed_in_window_ >= burst_) {
    ++suppressed_;
    return false;
  }
  ++allowed_in_window_;
  *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

}  // namespace adjutant
