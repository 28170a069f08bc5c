// A JobStore that times each write call of the store it wraps
// (adjutant_store_write_duration_seconds{op}) and records how many jobs each
// wrote (adjutant_store_batch_size{op}), and otherwise passes every call
// through unchanged.
//
// Each store write is one transaction, so the duration includes its commit
// (on SQLite, the commit of the group that carried it: group commit).
// Batch size is per call: jobs stored by one Enqueue, leased by one Dequeue
// (recorded only when it leased any), ended by one ExpireLeases, deleted by
// one PruneFinishedJobs (likewise), acked by one AckBatch (items that
// succeeded; recorded only when any did).
// Reads (GetJob, ListJobs, QueueStatistics, DueCrons...) are not timed.
#ifndef ADJUTANT_SERVER_METERED_JOB_STORE_H_
#define ADJUTANT_SERVER_METERED_JOB_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "scheduler/clock.h"
#include "server/server_metrics.h"
#include "storage/job_store.h"

namespace adjutant {

// Thread-safe as the wrapped store is. Times on `clock`'s monotonic face.
class MeteredJobStore final : public JobStore {
 public:
  // `metrics` and `clock` must outlive the store.
  MeteredJobStore(std::unique_ptr<JobStore> store, ServerMetrics* metrics,
                  Clock* clock);

  absl::Status Ping() override { return store_->Ping(); }
  absl::StatusOr<std::vector<EnqueueResult>> Enqueue(
      const std::vector<NewJob>& jobs, absl::Time now) override;
  absl::StatusOr<std::vector<Lease>> Dequeue(const DequeueOptions& options,
                                             absl::Time now) override;
  absl::Status Ack(const std::string& job_id, const std::string& token,
                   absl::Time now) override;
  // Forwarded whole to the wrapped store (its one-transaction version, if it
  // has one), timed as op "ack_batch".
  absl::StatusOr<std::vector<AckResult>> AckBatch(
      const std::vector<AckItem>& items, absl::Time now) override;
  // The *Async writes forward to the wrapped store's, timed from the call
  // to `done` as ops "enqueue", "dequeue", "ack" and "ack_batch".
  bool WritesAsynchronously() const override {
    return store_->WritesAsynchronously();
  }
  void WriteTogether(absl::FunctionRef<void()> calls) override {
    store_->WriteTogether(calls);
  }
  void EnqueueAsync(std::vector<NewJob> jobs, absl::Time now,
                    Done<std::vector<EnqueueResult>> done) override;
  void DequeueAsync(DequeueOptions options, absl::Time now,
                    Done<std::vector<Lease>> done) override;
  void AckAsync(AckItem item, absl::Time now, Done<AckResult> done) override;
  void AckBatchAsync(std::vector<AckItem> items, absl::Time now,
                     Done<std::vector<AckResult>> done) override;
  absl::StatusOr<Job> Nack(const std::string& job_id, const std::string& token,
                           const NackOptions& options, absl::Time now) override;
  absl::StatusOr<absl::Time> ExtendLease(const std::string& job_id,
                                         const std::string& token,
                                         absl::Duration lease_duration,
                                         absl::Time now) override;
  absl::StatusOr<Job> GetJob(const std::string& job_id) override {
    return store_->GetJob(job_id);
  }
  absl::StatusOr<Job> CancelJob(const std::string& job_id,
                                absl::Time now) override;
  absl::StatusOr<Job> RequeueJob(const std::string& job_id,
                                 absl::Time now) override;
  absl::StatusOr<JobPage> ListJobs(const std::string& queue, JobState state,
                                   int page_size,
                                   const std::string& page_token) override {
    return store_->ListJobs(queue, state, page_size, page_token);
  }
  absl::StatusOr<std::vector<Job>> ExpireLeases(absl::Time now) override;
  absl::StatusOr<std::vector<Job>> ReleaseLeases(
      const std::vector<AckItem>& items, absl::Time now) override;
  absl::StatusOr<absl::Time> NextAvailableTime(const std::string& queue,
                                               absl::Time now) override {
    return store_->NextAvailableTime(queue, now);
  }
  absl::StatusOr<std::vector<QueueStats>> QueueStatistics(
      absl::Time now) override {
    return store_->QueueStatistics(now);
  }
  absl::StatusOr<uint64_t> ObserveTerm(uint64_t term) override;
  absl::StatusOr<uint64_t> HighestTerm() override {
    return store_->HighestTerm();
  }
  absl::StatusOr<CronRecord> GetCron(const std::string& name) override {
    return store_->GetCron(name);
  }
  absl::StatusOr<CronRecord> PutCron(const CronDefinition& definition,
                                     const CronState& state,
                                     int64_t expected_version,
                                     absl::Time now) override;
  absl::Status DeleteCron(const std::string& name, absl::Time now) override;
  absl::StatusOr<CronPage> ListCrons(int page_size,
                                     const std::string& page_token) override {
    return store_->ListCrons(page_size, page_token);
  }
  absl::StatusOr<std::vector<CronRecord>> DueCrons(absl::Time now,
                                                   int limit) override {
    return store_->DueCrons(now, limit);
  }
  absl::StatusOr<absl::Time> NextCronFireTime(absl::Time after) override {
    return store_->NextCronFireTime(after);
  }
  absl::StatusOr<CronRecord> ApplyCronTransition(
      const CronTransition& transition, absl::Time now) override;
  absl::StatusOr<int64_t> PruneFinishedJobs(absl::Time finished_before,
                                            absl::Time dead_before,
                                            int limit) override;

 private:
  // The children of one operation, resolved once.
  struct Op {
    // `counts_jobs`: the op records a batch size.
    Op(ServerMetrics* metrics, const std::string& name,
       bool counts_jobs = false);
    Histogram* const duration;
    Histogram* const batch_size;  // null unless counts_jobs
  };
  // Runs `call`, records its duration under `op`, returns its result.
  template <typename Call>
  auto Timed(const Op& op, Call call) -> decltype(call());
  // `done`, recording under `op` the time since this call (and, through
  // `count`, the batch size) before passing the outcome on.
  template <typename T>
  Done<T> TimedDone(const Op& op, Done<T> done,
                    int64_t (*count)(const T&) = nullptr);
  // The batch sizes of Enqueue, Dequeue and AckBatch outcomes.
  static int64_t Stored(const std::vector<EnqueueResult>& results);
  static int64_t Leased(const std::vector<Lease>& leases);
  static int64_t Acked(const std::vector<AckResult>& results);

  Clock* const clock_;
  const Op enqueue_, dequeue_, ack_, nack_, extend_lease_, cancel_job_,
      requeue_job_, expire_leases_, observe_term_, put_cron_, delete_cron_,
      apply_cron_transition_, prune_finished_jobs_, ack_batch_, release_leases_;
  // Last, so that it dies first: a write it still answers while it closes
  // is timed with the members above.
  const std::unique_ptr<JobStore> store_;
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_METERED_JOB_STORE_H_
