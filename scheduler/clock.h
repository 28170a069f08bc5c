// Time, injected. Everything in Adjutant that reads the time or waits for it
// does so through a Clock, so tests can move a simulated day in a
// microsecond (tests/fakes/simulated_clock.h).
//
// Two faces, never mixed:
//  * Now(): wall time. Cron ticks, run_at, lease expiry instants (they are
//    stored and must survive a restart), and what is shown to people.
//  * Monotonic(): time since an arbitrary origin in this process. TTLs
//    (leadership) and timeouts; immune to wall-clock steps.
#ifndef ADJUTANT_SCHEDULER_CLOCK_H_
#define ADJUTANT_SCHEDULER_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace adjutant {

class Clock {
 public:
  virtual ~Clock() = default;

  // Wall time. Thread-safe.
  virtual absl::Time Now() = 0;

  // Monotonic time since an arbitrary origin. Thread-safe.
  virtual absl::Duration Monotonic() = 0;

  // Blocks until `cond` holds or Now() >= `deadline` (wall time), and returns
  // whether `cond` holds. Releases `mu` while blocked, like
  // absl::Mutex::AwaitWithDeadline; `cond` is re-evaluated whenever `mu` is
  // released by another thread. Thread-safe.
  // REQUIRES: the caller holds `mu`.
  virtual bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                                 absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;
};

// The process's real clock. Never null; lives forever.
Clock* RealClock();

}  // namespace adjutant

#endif  // ADJUTANT_SCHEDULER_CLOCK_H_
