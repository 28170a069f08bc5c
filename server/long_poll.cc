#include "server/long_poll.h"

#include <pthread.h>

#include <algorithm>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "server/server_metrics.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

// How soon the reaper tries again after the store failed it.
constexpr absl::Duration kReapRetryDelay = absl::Seconds(1);

}  // namespace

void NotifyIfCronJobFinished(const JobFinishedHook& hook, const Job& job) {
  if (!hook || job.cron_name.empty()) return;
  if (job.state == JobState::kSucceeded || job.state == JobState::kDead ||
      job.state == JobState::kCancelled) {
    hook(job);
  }
}

LongPollRegistry::LongPollRegistry(JobStore* store, Clock* clock,
                                   JobFinishedHook on_cron_job_finished)
    : store_(store),
      clock_(clock),
      on_cron_job_finished_(std::move(on_cron_job_finished)) {}

LongPollRegistry::~LongPollRegistry() { Shutdown(); }

void LongPollRegistry::Start() {
  timer_ = std::thread([this] { TimerLoop(); });
  pthread_setname_np(timer_.native_handle(), "long-poll-timer");
}

void LongPollRegistry::Shutdown() {
  std::vector<LongPollWaiter*> waiters;
  {
    absl::MutexLock l(&mu_);
    shutting_down_ = true;
    for (const auto& [waiter, parked] : parked_) waiters.push_back(waiter);
    parked_.clear();
    by_queue_.clear();
    by_deadline_.clear();
  }
  for (LongPollWaiter* waiter : waiters) waiter->ShutDown();
  if (timer_.joinable()) timer_.join();
}

size_t LongPollRegistry::Bucket(absl::string_view queue) {
  return absl::Hash<absl::string_view>()(queue) % kGenerationBuckets;
}

size_t LongPollRegistry::Bucket(absl::string_view queue,
                                absl::string_view job_type) {
  return absl::Hash<std::pair<absl::string_view, absl::string_view>>()(
             {queue, job_type}) %
         kGenerationBuckets;
}

uint64_t LongPollRegistry::GenerationLocked(
    absl::string_view queue, const std::vector<std::string>& job_types) const {
  // Every term only grows, so the sum changes whenever any of them does.
  uint64_t generation = reap_epoch_;
  if (job_types.empty()) return generation + queue_generation_[Bucket(queue)];
  generation += untyped_generation_[Bucket(queue)];
  for (const std::string& type : job_types) {
    generation += type_generation_[Bucket(queue, type)];
  }
  return generation;
}

uint64_t LongPollRegistry::Generation(
    absl::string_view queue, const std::vector<std::string>& job_types) {
  absl::MutexLock l(&mu_);
  return GenerationLocked(queue, job_types);
}

LongPollRegistry::ParkResult LongPollRegistry::Park(
    LongPollWaiter* waiter, const std::string& queue,
    const std::vector<std::string>& job_types, uint64_t generation,
    absl::Time attempted_at, absl::Duration deadline) {
  absl::MutexLock l(&mu_);
  if (shutting_down_) return ParkResult::kShuttingDown;
  // OnCancel sets the flag before it calls Remove() (which takes mu_), so
  // either we see the flag here or Remove() sees the waiter parked.
  if (waiter->IsCancelled()) return ParkResult::kCancelled;
  if (GenerationLocked(queue, job_types) != generation) {
    return ParkResult::kRetry;
  }
  auto by_deadline = by_deadline_.emplace(deadline, waiter);
  const uint64_t park_order = next_park_order_++;
  parked_.emplace(
      waiter, Parked{queue, &job_types, attempted_at, by_deadline, park_order});
  by_queue_[queue].emplace(park_order, waiter);
  if (!job_types.empty()) ++typed_parked_[queue];
  if (by_deadline == by_deadline_.begin()) timer_kicked_ = true;
  spdlog::debug("long-poll: a Dequeue waits on queue '{}' ({} waiting)", queue,
                parked_.size());
  return ParkResult::kParked;
}

void LongPollRegistry::Unlink(LongPollWaiter* waiter) {
  auto it = parked_.find(waiter);
  if (!it->second.job_types->empty()) {
    auto typed = typed_parked_.find(it->second.queue);
    if (--typed->second == 0) typed_parked_.erase(typed);
  }
  by_deadline_.erase(it->second.by_deadline);
  auto queue = by_queue_.find(it->second.queue);
  queue->second.erase(it->second.park_order);
  if (queue->second.empty()) by_queue_.erase(queue);
  parked_.erase(it);
}

bool LongPollRegistry::Remove(LongPollWaiter* waiter) {
  absl::MutexLock l(&mu_);
  if (parked_.find(waiter) == parked_.end()) return false;
  Unlink(waiter);
  return true;
}

template <typename Admits>
void LongPollRegistry::WakeWaiters(const std::string& queue, Admits admits,
                                   size_t limit) {
  std::vector<LongPollWaiter*> woken;
  {
    absl::MutexLock l(&mu_);
    auto it = by_queue_.find(queue);
    if (it == by_queue_.end()) return;
    // With waiters filtered on types, a woken call may take another job
    // than the one it was woken for: wake every waiter that admits it (see
    // the header).
    if (typed_parked_.contains(queue)) {
      limit = std::numeric_limits<size_t>::max();
    }
    // Untyped waiters admit every job, so with few typed ones this stops
    // after `limit` steps, not after every waiter of the queue.
    for (const auto& [order, waiter] : it->second) {
      if (woken.size() >= limit) break;
      if (admits(*parked_.at(waiter).job_types)) woken.push_back(waiter);
    }
    for (LongPollWaiter* waiter : woken) Unlink(waiter);
  }
  for (LongPollWaiter* waiter : woken) waiter->Wake();
}

void LongPollRegistry::WakeUntyped(const std::string& queue, size_t limit) {
  {
    absl::MutexLock l(&mu_);
    ++queue_generation_[Bucket(queue)];
    ++untyped_generation_[Bucket(queue)];
  }
  WakeWaiters(
      queue, [](const std::vector<std::string>&) { return true; }, limit);
}

void LongPollRegistry::Wake(const std::string& queue) {
  WakeUntyped(queue, std::numeric_limits<size_t>::max());
}

void LongPollRegistry::PassWakeUpOn(const std::string& queue) {
  // Any untyped waiter admits the job; WakeWaiters lifts the limit when
  // typed ones are parked.
  WakeUntyped(queue, 1);
}

void LongPollRegistry::Wake(const std::string& queue,
                            absl::string_view job_type, size_t jobs) {
  {
    absl::MutexLock l(&mu_);
    ++queue_generation_[Bucket(queue)];
    ++type_generation_[Bucket(queue, job_type)];
  }
  WakeWaiters(
      queue,
      [job_type](const std::vector<std::string>& types) {
        return types.empty() ||
               std::find(types.begin(), types.end(), job_type) != types.end();
      },
      jobs);
}

void LongPollRegistry::JobsAvailableAt(const std::string& queue,
                                       absl::string_view job_type,
                                       absl::Time at, size_t jobs) {
  // The clock is read after the store write: any attempt that missed the
  // job read its own `now` before this, so if `at` has not come for us it
  // had not come for that attempt either, and the timer will handle it.
  if (at <= clock_->Now()) {
    Wake(queue, job_type, jobs);
  } else {
    NoteNextAvailable(at);
  }
}

void LongPollRegistry::NoteNextAvailable(absl::Time at) {
  absl::MutexLock l(&mu_);
  noted_since_sweep_ = std::min(noted_since_sweep_, at);
  sweep_due_ = std::min(sweep_due_, at);
  if (at < next_due_) {
    next_due_ = at;
    timer_kicked_ = true;
  }
}

bool LongPollRegistry::NotSweeping() const { return !sweeping_; }

void LongPollRegistry::BeginSweepLocked() {
  mu_.Await(absl::Condition(this, &LongPollRegistry::NotSweeping));
  sweeping_ = true;
  noted_since_sweep_ = absl::InfiniteFuture();
  ++sweep_count_;
}

absl::Time LongPollRegistry::EndSweepLocked(
    const absl::StatusOr<absl::Time>& next) {
  sweeping_ = false;
  if (next.ok()) sweep_due_ = std::min(*next, noted_since_sweep_);
  return noted_since_sweep_;
}

bool LongPollRegistry::SweepMayBeDue(absl::Time now) {
  absl::MutexLock l(&mu_);
  return sweeping_ || now >= sweep_due_;
}

void LongPollRegistry::ExpireLeasesIfDue(absl::Time now) {
  {
    absl::MutexLock l(&mu_);
    // Someone else's sweep may make ours unnecessary: decide after it.
    mu_.Await(absl::Condition(this, &LongPollRegistry::NotSweeping));
    if (now < sweep_due_) return;
    BeginSweepLocked();
  }
  absl::StatusOr<std::vector<Job>> expired = store_->ExpireLeases(now);
  absl::StatusOr<absl::Time> next =
      expired.ok() ? store_->NextAvailableTime("", now) : expired.status();
  {
    absl::MutexLock l(&mu_);
    EndSweepLocked(next);
  }
  // On failure the timer's round retries and logs; the next attempt sweeps
  // again.
  if (expired.ok()) HandleExpiredLeases(*expired);
}

void LongPollRegistry::HandleExpiredLeases(const std::vector<Job>& jobs) {
  std::map<std::pair<std::string, std::string>, size_t> available;
  for (const Job& job : jobs) {
    if (job.state == JobState::kPending) ++available[{job.queue, job.type}];
    if (metrics_ != nullptr) {
      metrics_->LeaseExpired(job.queue);
      if (job.state == JobState::kDead) metrics_->JobDead(job.queue);
    }
    NotifyIfCronJobFinished(on_cron_job_finished_, job);
  }
  if (!jobs.empty()) {
    spdlog::debug("lease reaper: {} expired lease(s)", jobs.size());
  }
  for (const auto& [queue_and_type, n] : available) {
    Wake(queue_and_type.first, queue_and_type.second, n);
  }
}

bool LongPollRegistry::TimerShouldWake() const {
  if (timer_kicked_ || shutting_down_) return true;
  // The plan converted a monotonic deadline to wall time: a step back makes
  // it late, so re-plan; and a deadline reached ends the sleep whatever the
  // wall clock says. (Evaluated whenever mu_ is released: by any Dequeue
  // attempt or wake-up, or by a SimulatedClock moving.)
  if (by_deadline_.empty()) return false;
  return clock_->Now() < timer_planned_at_ ||
         by_deadline_.begin()->first <= clock_->Monotonic();
}

void LongPollRegistry::TimerLoop() {
  absl::MutexLock l(&mu_);
  while (!shutting_down_) {
    absl::Time wake_at = next_due_;
    const absl::Time planned_at = clock_->Now();
    if (!by_deadline_.empty()) {
      // The Clock sleeps until a wall time: convert the monotonic deadline.
      wake_at = std::min(wake_at, planned_at + (by_deadline_.begin()->first -
                                                clock_->Monotonic()));
    }
    timer_kicked_ = false;
    timer_asleep_ = true;
    timer_wake_at_ = wake_at;
    timer_planned_at_ = planned_at;
    clock_->AwaitWithDeadline(
        &mu_, absl::Condition(this, &LongPollRegistry::TimerShouldWake),
        wake_at);
    timer_asleep_ = false;
    if (shutting_down_) break;
    const absl::Time now = clock_->Now();
    const absl::Duration monotonic_now = clock_->Monotonic();

    std::vector<LongPollWaiter*> expired;
    while (!by_deadline_.empty() &&
           by_deadline_.begin()->first <= monotonic_now) {
      LongPollWaiter* waiter = by_deadline_.begin()->second;
      Unlink(waiter);
      expired.push_back(waiter);
    }
    const bool reap = now >= next_due_;
    if (expired.empty() && !reap) continue;

    mu_.Unlock();
    for (LongPollWaiter* waiter : expired) waiter->Expire();
    if (reap) Reap(now);
    mu_.Lock();
  }
}

void LongPollRegistry::Reap(absl::Time now) {
  // Each waiting queue, with the earliest `now` its waiters looked at.
  std::map<std::string, absl::Time> waiting;
  {
    absl::MutexLock l(&mu_);
    BeginSweepLocked();
    ++reap_epoch_;
    for (const auto& [waiter, parked] : parked_) {
      auto [it, inserted] = waiting.emplace(parked.queue, parked.attempted_at);
      if (!inserted) it->second = std::min(it->second, parked.attempted_at);
    }
  }

  absl::StatusOr<std::vector<Job>> expired = store_->ExpireLeases(now);
  absl::StatusOr<absl::Time> next = store_->NextAvailableTime("", now);
  absl::Time next_due = absl::InfiniteFuture();
  if (!expired.ok()) {
    spdlog::warn("lease reaper: ExpireLeases failed: {}",
                 expired.status().ToString());
    next_due = now + kReapRetryDelay;
  }
  if (next.ok()) {
    next_due = std::min(next_due, *next);
  } else {
    spdlog::warn("lease reaper: NextAvailableTime failed: {}",
                 next.status().ToString());
    next_due = std::min(next_due, now + kReapRetryDelay);
  }
  {
    absl::MutexLock l(&mu_);
    const absl::Time noted =
        EndSweepLocked(expired.ok() ? next : expired.status());
    next_due_ = std::min(next_due, noted);
  }

  if (expired.ok()) HandleExpiredLeases(*expired);
  // A waiter needs another look if a job of its queue became available
  // after the `now` of its last attempt (a delayed job's run_at came).
  for (const auto& [queue, since] : waiting) {
    absl::StatusOr<absl::Time> next = store_->NextAvailableTime(queue, since);
    // When in doubt, wake: a spurious retry costs one Dequeue.
    if (!next.ok() || *next <= now) Wake(queue);
  }
}

int LongPollRegistry::WaitingCount() {
  absl::MutexLock l(&mu_);
  return static_cast<int>(parked_.size());
}

bool LongPollRegistry::AnyParkedOn(absl::string_view queue) {
  absl::MutexLock l(&mu_);
  return by_queue_.find(queue) != by_queue_.end();
}

int LongPollRegistry::ParkedCountForTest() {
  absl::MutexLock l(&mu_);
  return static_cast<int>(parked_.size());
}

int LongPollRegistry::SweepCountForTest() {
  absl::MutexLock l(&mu_);
  return sweep_count_;
}

void LongPollRegistry::AwaitParkedForTest(int n) {
  absl::MutexLock l(&mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<int>(parked_.size()) == n;
  };
  mu_.Await(absl::Condition(&enough));
}

void LongPollRegistry::AwaitTimerIdleForTest() {
  absl::MutexLock l(&mu_);
  // Re-evaluated whenever mu_ is released: by the timer going back to
  // sleep, and by a SimulatedClock after every move of the time.
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shutting_down_ || (timer_asleep_ && !TimerShouldWake() &&
                              timer_wake_at_ > clock_->Now());
  };
  mu_.Await(absl::Condition(&idle));
}

}  // namespace adjutant
