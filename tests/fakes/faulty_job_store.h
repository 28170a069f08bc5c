// A JobStore that forwards to another and lets a test break or hold the calls
// the scheduler makes, like leveldb's SpecialEnv.
#ifndef ADJUTANT_TESTS_FAKES_FAULTY_JOB_STORE_H_
#define ADJUTANT_TESTS_FAKES_FAULTY_JOB_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/job.h"
#include "storage/job_store.h"

namespace adjutant {

// Every call goes to `base`, except that:
//  * Faults: the next `remaining` calls of a kind fail with `status`,
//    optionally after the real call took effect (an answer lost on the way
//    back).
//  * Hooks: when set, run on the calling thread at the start of the call,
//    before any fault and before the call is forwarded. A hook may block (to
//    hold the call, as a store waiting for another process's write lock
//    would), move a SimulatedClock, or call into the code under test.
//
// Thread-safety: the calls are as thread-safe as `base`, but the fault and
// hook fields are plain data: set them while no call that reads them can
// run (before starting the thread that calls, or between calls made on the
// test's own thread). Calls may then run on several threads at once (the
// scheduler's firing pool): a fault's count is taken under a mutex, and a
// hook runs on each calling thread, so a hook that several threads may run
// must be thread-safe itself.
class FaultyJobStore final : public JobStore {
 public:
  // `base` must outlive this store.
  explicit FaultyJobStore(JobStore* base) : base_(base) {}

  struct Fault {
    int remaining = 0;
    absl::Status status;
    bool after_effect = false;  // apply the call, then report the failure
  };
  Fault put_cron;
  Fault apply_transition;
  Fault due_crons;
  Fault next_cron_fire_time;
  Fault delete_cron;
  Fault prune_finished_jobs;

  std::function<void()> on_observe_term;
  std::function<void()> on_due_crons;
  std::function<void()> on_apply_transition;
  // Runs after the forwarded ApplyCronTransition returned (not when a fault
  // answers instead), with whether it succeeded.
  std::function<void(bool ok)> on_apply_transition_end;
  std::function<void()> on_prune_finished_jobs;
  std::function<void()> on_enqueue;
  std::function<void()> on_queue_statistics;

  // While set, Ping() fails with UNAVAILABLE (a store that stopped
  // answering). Atomic, unlike the fields above: the server's health thread
  // pings while the test flips it.
  std::atomic<bool> ping_unavailable{false};

  absl::Status Ping() override {
    if (ping_unavailable) {
      return absl::UnavailableError("store not answering (injected)");
    }
    return base_->Ping();
  }
  absl::StatusOr<std::vector<QueueStats>> QueueStatistics(
      absl::Time now) override {
    if (on_queue_statistics) on_queue_statistics();
    return base_->QueueStatistics(now);
  }
  absl::StatusOr<int64_t> PruneFinishedJobs(absl::Time finished_before,
                                            absl::Time dead_before,
                                            int limit) override {
    if (on_prune_finished_jobs) on_prune_finished_jobs();
    return Inject(&prune_finished_jobs, [&] {
      return base_->PruneFinishedJobs(finished_before, dead_before, limit);
    });
  }
  absl::StatusOr<std::vector<EnqueueResult>> Enqueue(
      const std::vector<NewJob>& jobs, absl::Time now) override {
    if (on_enqueue) on_enqueue();
    return base_->Enqueue(jobs, now);
  }
  absl::StatusOr<std::vector<Lease>> Dequeue(const DequeueOptions& options,
                                             absl::Time now) override {
    return base_->Dequeue(options, now);
  }
  absl::Status Ack(const std::string& id, const std::string& token,
                   absl::Time now) override {
    return base_->Ack(id, token, now);
  }
  absl::StatusOr<Job> Nack(const std::string& id, const std::string& token,
                           const NackOptions& options,
                           absl::Time now) override {
    return base_->Nack(id, token, options, now);
  }
  absl::StatusOr<absl::Time> ExtendLease(const std::string& id,
                                         const std::string& token,
                                         absl::Duration d,
                                         absl::Time now) override {
    return base_->ExtendLease(id, token, d, now);
  }
  absl::StatusOr<Job> GetJob(const std::string& id) override {
    return base_->GetJob(id);
  }
  absl::StatusOr<Job> CancelJob(const std::string& id,
                                absl::Time now) override {
    return base_->CancelJob(id, now);
  }
  absl::StatusOr<Job> RequeueJob(const std::string& id,
                                 absl::Time now) override {
    return base_->RequeueJob(id, now);
  }
  absl::StatusOr<JobPage> ListJobs(const std::string& queue, JobState state,
                                   int page_size,
                                   const std::string& token) override {
    return base_->ListJobs(queue, state, page_size, token);
  }
  absl::StatusOr<std::vector<Job>> ExpireLeases(absl::Time now) override {
    return base_->ExpireLeases(now);
  }
  absl::StatusOr<std::vector<Job>> ReleaseLeases(
      const std::vector<AckItem>& items, absl::Time now) override {
    return base_->ReleaseLeases(items, now);
  }
  absl::StatusOr<absl::Time> NextAvailableTime(const std::string& queue,
                                               absl::Time now) override {
    return base_->NextAvailableTime(queue, now);
  }
  absl::StatusOr<uint64_t> ObserveTerm(uint64_t term) override {
    if (on_observe_term) on_observe_term();
    return base_->ObserveTerm(term);
  }
  absl::StatusOr<uint64_t> HighestTerm() override {
    return base_->HighestTerm();
  }
  absl::StatusOr<CronRecord> GetCron(const std::string& name) override {
    return base_->GetCron(name);
  }
  absl::StatusOr<CronRecord> PutCron(const CronDefinition& definition,
                                     const CronState& state,
                                     int64_t expected_version,
                                     absl::Time now) override {
    return Inject(&put_cron, [&] {
      return base_->PutCron(definition, state, expected_version, now);
    });
  }
  absl::Status DeleteCron(const std::string& name, absl::Time now) override {
    return Inject(&delete_cron, [&] { return base_->DeleteCron(name, now); });
  }
  absl::StatusOr<CronPage> ListCrons(int page_size,
                                     const std::string& token) override {
    return base_->ListCrons(page_size, token);
  }
  absl::StatusOr<std::vector<CronRecord>> DueCrons(absl::Time now,
                                                   int limit) override {
    if (on_due_crons) on_due_crons();
    return Inject(&due_crons, [&] { return base_->DueCrons(now, limit); });
  }
  absl::StatusOr<absl::Time> NextCronFireTime(absl::Time after) override {
    return Inject(&next_cron_fire_time,
                  [&] { return base_->NextCronFireTime(after); });
  }
  absl::StatusOr<CronRecord> ApplyCronTransition(const CronTransition& t,
                                                 absl::Time now) override {
    if (on_apply_transition) on_apply_transition();
    return Inject(&apply_transition, [&] {
      absl::StatusOr<CronRecord> r = base_->ApplyCronTransition(t, now);
      if (on_apply_transition_end) on_apply_transition_end(r.ok());
      return r;
    });
  }

 private:
  template <typename F>
  auto Inject(Fault* fault, F call) -> decltype(call()) {
    bool inject = false;
    absl::Status status;
    bool after_effect = false;
    {
      absl::MutexLock l(&fault_mu_);
      if (fault->remaining > 0) {
        --fault->remaining;
        inject = true;
        status = fault->status;
        after_effect = fault->after_effect;
      }
    }
    if (!inject) return call();  // outside the mutex: calls run side by side
    if (after_effect) (void)call();
    return status;
  }

  JobStore* const base_;
  // Taken around a fault's count; the Fault fields themselves are set by
  // the test while no call runs (see the class comment).
  absl::Mutex fault_mu_;
};

}  // namespace adjutant

#endif  // ADJUTANT_TESTS_FAKES_FAULTY_JOB_STORE_H_
