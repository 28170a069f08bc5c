// LogRateLimiter: keeps a flood of like events (refused calls, say) from
// flooding the log, while still saying how many went unlogged.
#ifndef ADJUTANT_SERVER_LOG_RATE_LIMITER_H_
#define ADJUTANT_SERVER_LOG_RATE_LIMITER_H_

#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace adjutant {

// Allows at most `burst` events per `window` of monotonic time (a fixed
// window that starts at the first event after the previous one ended).
// Thread-safe.
class LogRateLimiter {
 public:
  // REQUIRES: burst >= 1, window > 0.
  LogRateLimiter(int burst, absl::Duration window);

  LogRateLimiter(const LogRateLimiter&) = delete;
  LogRateLimiter& operator=(const LogRateLimiter&) = delete;

  // Records an event at `monotonic_now` (any monotonic origin, the same for
  // every call; see Clock::Monotonic). True if it may be logged; then
  // `*suppressed` is the number of events refused since the last allowed
  // one (for "N more not logged"), else it is left alone.
  bool Allow(absl::Duration monotonic_now, int64_t* suppressed);

 private:
  const int burst_;
  const absl::Duration window_;

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration window_start_ ABSL_GUARDED_BY(mu_);
  int allowed_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_LOG_RATE_LIMITER_H_
