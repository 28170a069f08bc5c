// A JobStore that keeps everything in memory: for tests, for `--db :memory:`,
// and as the model the other backends are checked against. Nothing survives
// the process.
#ifndef ADJUTANT_STORAGE_MEMORY_JOB_STORE_H_
#define ADJUTANT_STORAGE_MEMORY_JOB_STORE_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/job_store.h"

namespace adjutant {

// Thread-safe: one mutex guards all state; no call blocks on I/O.
//
// Cost: Dequeue, Ack, Nack, ExtendLease, CancelJob and RequeueJob are
// O(log n) in the number of jobs (times the number of job types of the queue
// for an unfiltered Dequeue); ListJobs is O(page_size) per page;
// PruneFinishedJobs is O(limit log n); nothing scans every job but
// QueueStatistics.
class MemoryJobStore final : public JobStore {
 public:
  explicit MemoryJobStore(BackoffPolicy backoff = BackoffPolicy());
  // With a per-queue limit: Enqueue refuses (RESOURCE_EXHAUSTED,
  // QueueFullError in job.h) a call that would leave a queue holding more
  // than `max_pending_per_queue` pending (PENDING or LEASED) jobs; 0: no
  // limit. The count is exact (the sizes of the queue's state indexes).
  // ApplyCronTransition and RequeueJob are never refused.
  MemoryJobStore(BackoffPolicy backoff, int64_t max_pending_per_queue);
  ~MemoryJobStore() override;

  MemoryJobStore(const MemoryJobStore&) = delete;
  MemoryJobStore& operator=(const MemoryJobStore&) = delete;

  // (JobStore methods; see job_store.h for their contracts.)
  absl::Status Ping() override;
  absl::StatusOr<std::vector<EnqueueResult>> Enqueue(
      const std::vector<NewJob>& jobs, absl::Time now) override;
  absl::StatusOr<std::vector<Lease>> Dequeue(const DequeueOptions& options,
                                             absl::Time now) override;
  absl::Status Ack(const std::string& job_id, const std::string& token,
                   absl::Time now) override;
  // Every item under one hold of the lock.
  absl::StatusOr<std::vector<AckResult>> AckBatch(
      const std::vector<AckItem>& items, absl::Time now) override;
  absl::StatusOr<Job> Nack(const std::string& job_id, const std::string& token,
                           const NackOptions& options, absl::Time now) override;
  absl::StatusOr<absl::Time> ExtendLease(const std::string& job_id,
                                         const std::string& token,
                                         absl::Duration lease_duration,
                                         absl::Time now) override;
  absl::StatusOr<Job> GetJob(const std::string& job_id) override;
  absl::StatusOr<Job> CancelJob(const std::string& job_id,
                                absl::Time now) override;
  absl::StatusOr<Job> RequeueJob(const std::string& job_id,
                                 absl::Time now) override;
  absl::StatusOr<JobPage> ListJobs(const std::string& queue, JobState state,
                                   int page_size,
                                   const std::string& page_token) override;
  absl::StatusOr<std::vector<Job>> ExpireLeases(absl::Time now) override;
  absl::StatusOr<std::vector<Job>> ReleaseLeases(
      const std::vector<AckItem>& items, absl::Time now) override;
  absl::StatusOr<absl::Time> NextAvailableTime(const std::string& queue,
                                               absl::Time now) override;
  absl::StatusOr<std::vector<QueueStats>> QueueStatistics(
      absl::Time now) override;
  absl::StatusOr<int64_t> PruneFinishedJobs(absl::Time finished_before,
                                            absl::Time dead_before,
                                            int limit) override;

  absl::StatusOr<uint64_t> ObserveTerm(uint64_t term) override;
  absl::StatusOr<uint64_t> HighestTerm() override;

  absl::StatusOr<CronRecord> GetCron(const std::string& name) override;
  absl::StatusOr<CronRecord> PutCron(const CronDefinition& definition,
                                     const CronState& state,
                                     int64_t expected_version,
                                     absl::Time now) override;
  absl::Status DeleteCron(const std::string& name, absl::Time now) override;
  absl::StatusOr<CronPage> ListCrons(int page_size,
                                     const std::string& page_token) override;
  absl::StatusOr<std::vector<CronRecord>> DueCrons(absl::Time now,
                                                   int limit) override;
  absl::StatusOr<absl::Time> NextCronFireTime(absl::Time after) override;
  absl::StatusOr<CronRecord> ApplyCronTransition(
      const CronTransition& transition, absl::Time now) override;

 private:
  // Dequeue order of a PENDING job: priority descending, run_at, seq.
  struct ReadyKey {
    int32_t priority;
    absl::Time run_at;
    int64_t seq;

    bool operator<(const ReadyKey& o) const {
      return std::make_tuple(-int64_t{priority}, run_at, seq) <
             std::make_tuple(-int64_t{o.priority}, o.run_at, o.seq);
    }
  };
  // (time, seq): a PENDING job's run_at or a LEASED job's lease_expires_at.
  using TimeKey = std::pair<absl::Time, int64_t>;

  // The indexes of one queue. Every job of the queue is in exactly one
  // seqs_by_state set, and in the sets its state calls for below.
  struct QueueIndex {
    // PENDING jobs by run_at.
    std::set<TimeKey> pending_by_run_at;
    // PENDING jobs with run_at <= horizon, by type, in dequeue order. Jobs
    // move in and out as Dequeue moves the horizon to its `now` (forwards,
    // or backwards if the wall clock stepped back; Enqueue moves it only
    // forwards), so Dequeue never skips over jobs that are not due yet.
    std::map<std::string, std::set<ReadyKey>> ready_by_type;
    absl::Time horizon = absl::InfinitePast();
    // LEASED jobs by lease_expires_at.
    std::set<TimeKey> leased_by_expiry;
    // Every job by state, in seq order (indexed by JobState), for ListJobs.
    std::set<int64_t> seqs_by_state[6];
  };

  // An unpaused schedule in cron_fire_index_: (next_fire_time, name).
  using CronKey = std::pair<absl::Time, std::string>;

  // Adds `job` to / removes it from the indexes of its queue, as its current
  // state calls for. Every change of a job's state, run_at, lease expiry or
  // priority happens between an Unindex and an Index.
  void Index(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unindex(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the ready sets of `q` so that they hold exactly the PENDING jobs
  // with run_at <= now.
  void MoveHorizon(QueueIndex& q, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The job with that id, or NOT_FOUND.
  absl::StatusOr<Job*> FindJob(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job, if it is LEASED under `token` and the lease has not expired by
  // `now`; NOT_FOUND or FAILED_PRECONDITION otherwise.
  absl::StatusOr<Job*> FindLiveLease(const std::string& job_id,
                                     const std::string& token, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores a new PENDING job and returns it. REQUIRES: no idempotency check
  // is needed (the caller did it, or the job has no key).
  Job& InsertJob(const NewJob& new_job, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ack's contract; when OK, fills `result` (if not null) but for its
  // status.
  absl::Status AckLocked(const std::string& job_id, const std::string& token,
                         absl::Time now, AckResult* result = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // PENDING or LEASED `job` -> CANCELLED.
  void Cancel(Job& job, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An expired lease ends: PENDING if attempts are left, else DEAD.
  void EndExpiredLease(Job& job, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Replaces the record `name` and keeps the cron indexes in step.
  void StoreCron(const CronRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnindexCron(const CronRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BackoffPolicy backoff_;
  const int64_t max_pending_per_queue_ = 0;  // 0: no limit

  absl::Mutex mu_;
  // State below is protected by mu_.

  // Every job, by seq. Only PruneFinishedJobs removes jobs, so a pointer
  // into it stays valid while mu_ is held.
  std::map<int64_t, Job> jobs_ ABSL_GUARDED_BY(mu_);
  // SUCCEEDED, DEAD and CANCELLED jobs by (updated_at, seq), indexed by
  // JobState (the other entries stay empty), for PruneFinishedJobs.
  std::set<TimeKey> finished_by_time_[6] ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, int64_t> seq_by_id_ ABSL_GUARDED_BY(mu_);
  int64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // (queue, idempotency_key) -> job id.
  std::map<std::pair<std::string, std::string>, std::string> idempotency_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, QueueIndex> queues_ ABSL_GUARDED_BY(mu_);

  uint64_t highest_term_ ABSL_GUARDED_BY(mu_) = 0;

  std::map<std::string, CronRecord> crons_ ABSL_GUARDED_BY(mu_);
  // Unpaused schedules by (next_fire_time, name).
  std::set<CronKey> cron_fire_index_ ABSL_GUARDED_BY(mu_);
  // Unpaused schedules holding a waiting tick.
  std::set<std::string> cron_waiting_ ABSL_GUARDED_BY(mu_);
  // Claimed ticks, by schedule name.
  std::map<std::string, std::set<absl::Time>> cron_claims_ ABSL_GUARDED_BY(mu_);
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_MEMORY_JOB_STORE_H_
