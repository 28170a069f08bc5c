// A Clock whose time moves only when a test says so.
#ifndef ADJUTANT_TESTS_FAKES_SIMULATED_CLOCK_H_
#define ADJUTANT_TESTS_FAKES_SIMULATED_CLOCK_H_

#include <atomic>
#include <cstdint>
#include <map>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"

namespace adjutant {

// Wall and monotonic time both start where the test puts them and advance
// together, only through Advance() / SetNow(). Threads blocked in
// AwaitWithDeadline wake when the time passes their deadline.
//
// Thread-safe. REQUIRES: a mutex passed to AwaitWithDeadline is not
// destroyed while Advance() or SetNow() runs (tests destroy their objects on
// the thread that moves the time).
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(absl::Time start = absl::FromUnixSeconds(1767225600));

  absl::Time Now() override;
  absl::Duration Monotonic() override;
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Moves both faces forward by `d` (>= 0) and wakes the waiters it passes.
  void Advance(absl::Duration d);
  // Moves wall time to `t` (wall time may step backwards, as NTP may make it;
  // monotonic time advances by max(0, t - Now())).
  void SetNow(absl::Time t);

  // How many threads are blocked in AwaitWithDeadline now.
  int WaiterCount();
  // Blocks (in real time) until at least `n` threads are blocked in
  // AwaitWithDeadline with a deadline later than `t`: the way a test knows
  // that a background thread has handled everything due at `t` and gone back
  // to sleep, before it moves the time again.
  void WaitForWaitersPast(absl::Time t, int n = 1);

 private:
  void WakeAll();

  std::atomic<int64_t> now_ns_;        // wall, ns since the Unix epoch
  std::atomic<int64_t> monotonic_ns_;  // since construction

  absl::Mutex mu_;
  // State below is protected by mu_.
  // One entry per blocked thread: the mutex it waits on and its deadline.
  std::multimap<absl::Mutex*, absl::Time> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace adjutant

#endif  // ADJUTANT_TESTS_FAKES_SIMULATED_CLOCK_H_
