#include "tests/fakes/simulated_clock.h"

#include <map>
#include <vector>

namespace adjutant {

SimulatedClock::SimulatedClock(absl::Time start)
    : now_ns_(absl::ToUnixNanos(start)), monotonic_ns_(0) {}

absl::Time SimulatedClock::Now() { return absl::FromUnixNanos(now_ns_.load()); }

absl::Duration SimulatedClock::Monotonic() {
  return absl::Nanoseconds(monotonic_ns_.load());
}

bool SimulatedClock::AwaitWithDeadline(absl::Mutex* mu,
                                       const absl::Condition& cond,
                                       absl::Time deadline) {
  std::multimap<absl::Mutex*, absl::Time>::iterator entry;
  {
    absl::MutexLock l(&mu_);
    entry = waiters_.emplace(mu, deadline);
  }
  struct Args {
    const absl::Condition* cond;
    SimulatedClock* clock;
    absl::Time deadline;
  } args{&cond, this, deadline};
  // Re-evaluated by absl whenever `mu` is released; WakeAll() releases it
  // after every time change.
  mu->Await(absl::Condition(
      +[](Args* a) {
        return a->cond->Eval() || a->clock->Now() >= a->deadline;
      },
      &args));
  {
    absl::MutexLock l(&mu_);
    waiters_.erase(entry);
  }
  return cond.Eval();
}

void SimulatedClock::Advance(absl::Duration d) {
  now_ns_ += absl::ToInt64Nanoseconds(d);
  monotonic_ns_ += absl::ToInt64Nanoseconds(d);
  WakeAll();
}

void SimulatedClock::SetNow(absl::Time t) {
  int64_t target = absl::ToUnixNanos(t);
  int64_t old = now_ns_.exchange(target);
  if (target > old) monotonic_ns_ += target - old;
  WakeAll();
}

int SimulatedClock::WaiterCount() {
  absl::MutexLock l(&mu_);
  return static_cast<int>(waiters_.size());
}

void SimulatedClock::WaitForWaitersPast(absl::Time t, int n) {
  absl::MutexLock l(&mu_);
  auto enough = [this, t, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int count = 0;
    for (const auto& [mu, deadline] : waiters_) count += deadline > t;
    return count >= n;
  };
  mu_.Await(absl::Condition(&enough));
}

void SimulatedClock::WakeAll() {
  std::vector<absl::Mutex*> mutexes;
  {
    absl::MutexLock l(&mu_);
    for (auto it = waiters_.begin(); it != waiters_.end();
         it = waiters_.upper_bound(it->first)) {
      mutexes.push_back(it->first);
    }
  }
  // Releasing a mutex makes absl re-evaluate the conditions waiting on it.
  for (absl::Mutex* mu : mutexes) {
    mu->Lock();
    mu->Unlock();
  }
}

}  // namespace adjutant
