#include "server/long_poll.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
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
  for (LongPollWaiter* waiter : waiters) waiter->Expire();
  if (timer_.joinable()) timer_.join();
}

size_t LongPollRegistry::Bucket(absl::string_view queue) {
  return absl::Hash<absl::string_view>()(queue) % kGenerationBuckets;
}

uint64_t LongPollRegistry::GenerationLocked(absl::string_view queue) const {
  // Both terms only grow, so the sum changes whenever either does.
  return bucket_generation_[Bucket(queue)] + reap_epoch_;
}

uint64_t LongPollRegistry::Generation(absl::string_view queue) {
  absl::MutexLock l(&mu_);
  return GenerationLocked(queue);
}

LongPollRegistry::ParkResult LongPollRegistry::Park(LongPollWaiter* waiter,
                                                    const std::string& queue,
                                                    uint64_t generation,
                                                    absl::Time attempted_at,
                                                    absl::Time deadline) {
  absl::MutexLock l(&mu_);
  if (shutting_down_) return ParkResult::kShuttingDown;
  // OnCancel sets the flag before it calls Remove() (which takes mu_), so
  // either we see the flag here or Remove() sees the waiter parked.
  if (waiter->IsCancelled()) return ParkResult::kCancelled;
  if (GenerationLocked(queue) != generation) return ParkResult::kRetry;
  auto by_deadline = by_deadline_.emplace(deadline, waiter);
  parked_.emplace(waiter, Parked{queue, attempted_at, by_deadline});
  by_queue_[queue].insert(waiter);
  if (by_deadline == by_deadline_.begin()) timer_kicked_ = true;
  return ParkResult::kParked;
}

void LongPollRegistry::Unlink(LongPollWaiter* waiter) {
  auto it = parked_.find(waiter);
  by_deadline_.erase(it->second.by_deadline);
  auto queue = by_queue_.find(it->second.queue);
  queue->second.erase(waiter);
  if (queue->second.empty()) by_queue_.erase(queue);
  parked_.erase(it);
}

bool LongPollRegistry::Remove(LongPollWaiter* waiter) {
  absl::MutexLock l(&mu_);
  if (parked_.find(waiter) == parked_.end()) return false;
  Unlink(waiter);
  return true;
}

void LongPollRegistry::Wake(const std::string& queue) {
  std::vector<LongPollWaiter*> woken;
  {
    absl::MutexLock l(&mu_);
    ++bucket_generation_[Bucket(queue)];
    auto it = by_queue_.find(queue);
    if (it == by_queue_.end()) return;
    woken.assign(it->second.begin(), it->second.end());
    for (LongPollWaiter* waiter : woken) Unlink(waiter);
  }
  for (LongPollWaiter* waiter : woken) waiter->Wake();
}

void LongPollRegistry::JobsAvailableAt(const std::string& queue,
                                       absl::Time at) {
  // The clock is read after the store write: any attempt that missed the
  // job read its own `now` before this, so if `at` has not come for us it
  // had not come for that attempt either, and the timer will handle it.
  if (at <= clock_->Now()) {
    Wake(queue);
  } else {
    NoteNextAvailable(at);
  }
}

void LongPollRegistry::NoteNextAvailable(absl::Time at) {
  absl::MutexLock l(&mu_);
  noted_since_reap_ = std::min(noted_since_reap_, at);
  if (at < next_due_) {
    next_due_ = at;
    timer_kicked_ = true;
  }
}

void LongPollRegistry::ExpireLeasesIfDue(absl::Time now) {
  {
    absl::MutexLock l(&mu_);
    if (now < next_due_) return;
  }
  absl::StatusOr<std::vector<Job>> expired = store_->ExpireLeases(now);
  // On failure the timer's round retries and logs.
  if (expired.ok()) HandleExpiredLeases(*expired);
}

void LongPollRegistry::HandleExpiredLeases(const std::vector<Job>& jobs) {
  std::set<std::string> queues;
  for (const Job& job : jobs) {
    if (job.state == JobState::kPending) queues.insert(job.queue);
    NotifyIfCronJobFinished(on_cron_job_finished_, job);
  }
  if (!jobs.empty()) {
    spdlog::debug("lease reaper: {} expired lease(s)", jobs.size());
  }
  for (const std::string& queue : queues) Wake(queue);
}

bool LongPollRegistry::TimerShouldWake() const {
  return timer_kicked_ || shutting_down_;
}

void LongPollRegistry::TimerLoop() {
  absl::MutexLock l(&mu_);
  while (!shutting_down_) {
    absl::Time wake_at = next_due_;
    if (!by_deadline_.empty()) {
      wake_at = std::min(wake_at, by_deadline_.begin()->first);
    }
    timer_kicked_ = false;
    timer_asleep_ = true;
    timer_wake_at_ = wake_at;
    clock_->AwaitWithDeadline(
        &mu_, absl::Condition(this, &LongPollRegistry::TimerShouldWake),
        wake_at);
    timer_asleep_ = false;
    if (shutting_down_) break;
    const absl::Time now = clock_->Now();

    std::vector<LongPollWaiter*> expired;
    while (!by_deadline_.empty() && by_deadline_.begin()->first <= now) {
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
    ++reap_epoch_;
    noted_since_reap_ = absl::InfiniteFuture();
    for (const auto& [waiter, parked] : parked_) {
      auto [it, inserted] = waiting.emplace(parked.queue, parked.attempted_at);
      if (!inserted) it->second = std::min(it->second, parked.attempted_at);
    }
  }

  absl::Time next_due = absl::InfiniteFuture();
  absl::StatusOr<std::vector<Job>> expired = store_->ExpireLeases(now);
  if (expired.ok()) {
    HandleExpiredLeases(*expired);
  } else {
    spdlog::warn("lease reaper: ExpireLeases failed: {}",
                 expired.status().ToString());
    next_due = now + kReapRetryDelay;
  }

  // A waiter needs another look if a job of its queue became available
  // after the `now` of its last attempt (a delayed job's run_at came).
  for (const auto& [queue, since] : waiting) {
    absl::StatusOr<absl::Time> next = store_->NextAvailableTime(queue, since);
    // When in doubt, wake: a spurious retry costs one Dequeue.
    if (!next.ok() || *next <= now) Wake(queue);
  }

  absl::StatusOr<absl::Time> next = store_->NextAvailableTime("", now);
  if (next.ok()) {
    next_due = std::min(next_due, *next);
  } else {
    spdlog::warn("lease reaper: NextAvailableTime failed: {}",
                 next.status().ToString());
    next_due = std::min(next_due, now + kReapRetryDelay);
  }

  absl::MutexLock l(&mu_);
  next_due_ = std::min(next_due, noted_since_reap_);
}

int LongPollRegistry::ParkedCountForTest() {
  absl::MutexLock l(&mu_);
  return static_cast<int>(parked_.size());
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
    return shutting_down_ ||
           (timer_asleep_ && !timer_kicked_ && timer_wake_at_ > clock_->Now());
  };
  mu_.Await(absl::Condition(&idle));
}

}  // namespace adjutant
