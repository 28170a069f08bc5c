#include "server/metered_job_store.h"

#include <utility>

namespace adjutant {

MeteredJobStore::Op::Op(ServerMetrics* metrics, const std::string& name,
                        bool counts_jobs)
    : duration(metrics->StoreWriteDuration(name)),
      batch_size(counts_jobs ? metrics->StoreBatchSize(name) : nullptr) {}

MeteredJobStore::MeteredJobStore(std::unique_ptr<JobStore> store,
                                 ServerMetrics* metrics, Clock* clock)
    : clock_(clock),
      enqueue_(metrics, "enqueue", /*counts_jobs=*/true),
      dequeue_(metrics, "dequeue", /*counts_jobs=*/true),
      ack_(metrics, "ack"),
      nack_(metrics, "nack"),
      extend_lease_(metrics, "extend_lease"),
      cancel_job_(metrics, "cancel_job"),
      requeue_job_(metrics, "requeue_job"),
      expire_leases_(metrics, "expire_leases", /*counts_jobs=*/true),
      observe_term_(metrics, "observe_term"),
      put_cron_(metrics, "put_cron"),
      delete_cron_(metrics, "delete_cron"),
      apply_cron_transition_(metrics, "apply_cron_transition"),
      prune_finished_jobs_(metrics, "prune_finished_jobs",
                           /*counts_jobs=*/true),
      ack_batch_(metrics, "ack_batch", /*counts_jobs=*/true),
      release_leases_(metrics, "release_leases", /*counts_jobs=*/true),
      store_(std::move(store)) {}

template <typename Call>
auto MeteredJobStore::Timed(const Op& op, Call call) -> decltype(call()) {
  const absl::Duration start = clock_->Monotonic();
  auto result = call();
  op.duration->Observe(absl::ToDoubleSeconds(clock_->Monotonic() - start));
  return result;
}

template <typename T>
JobStore::Done<T> MeteredJobStore::TimedDone(const Op& op, Done<T> done,
                                             int64_t (*count)(const T&)) {
  return [this, &op, count, start = clock_->Monotonic(),
          done = std::move(done)](absl::StatusOr<T> result) mutable {
    op.duration->Observe(absl::ToDoubleSeconds(clock_->Monotonic() - start));
    if (count != nullptr && result.ok()) {
      if (const int64_t n = count(*result); n > 0) {
        op.batch_size->Observe(static_cast<double>(n));
      }
    }
    std::move(done)(std::move(result));
  };
}

int64_t MeteredJobStore::Stored(const std::vector<EnqueueResult>& results) {
  int64_t stored = 0;
  for (const EnqueueResult& r : results) stored += r.duplicate ? 0 : 1;
  return stored;
}

int64_t MeteredJobStore::Acked(const std::vector<AckResult>& results) {
  int64_t acked = 0;
  for (const AckResult& r : results) acked += r.status.ok() ? 1 : 0;
  return acked;
}

absl::StatusOr<std::vector<EnqueueResult>> MeteredJobStore::Enqueue(
    const std::vector<NewJob>& jobs, absl::Time now) {
  auto results = Timed(enqueue_, [&] { return store_->Enqueue(jobs, now); });
  if (results.ok()) {
    if (const int64_t stored = Stored(*results); stored > 0) {
      enqueue_.batch_size->Observe(static_cast<double>(stored));
    }
  }
  return results;
}

void MeteredJobStore::EnqueueAsync(std::vector<NewJob> jobs, absl::Time now,
                                   Done<std::vector<EnqueueResult>> done) {
  store_->EnqueueAsync(std::move(jobs), now,
                       TimedDone(enqueue_, std::move(done), &Stored));
}

int64_t MeteredJobStore::Leased(const std::vector<Lease>& leases) {
  return static_cast<int64_t>(leases.size());
}

absl::StatusOr<std::vector<Lease>> MeteredJobStore::Dequeue(
    const DequeueOptions& options, absl::Time now) {
  auto leases = Timed(dequeue_, [&] { return store_->Dequeue(options, now); });
  if (leases.ok() && !leases->empty()) {
    dequeue_.batch_size->Observe(static_cast<double>(leases->size()));
  }
  return leases;
}

void MeteredJobStore::DequeueAsync(DequeueOptions options, absl::Time now,
                                   Done<std::vector<Lease>> done) {
  store_->DequeueAsync(std::move(options), now,
                       TimedDone(dequeue_, std::move(done), &Leased));
}

absl::Status MeteredJobStore::Ack(const std::string& job_id,
                                  const std::string& token, absl::Time now) {
  return Timed(ack_, [&] { return store_->Ack(job_id, token, now); });
}

void MeteredJobStore::AckAsync(AckItem item, absl::Time now,
                               Done<AckResult> done) {
  store_->AckAsync(std::move(item), now, TimedDone(ack_, std::move(done)));
}

absl::StatusOr<std::vector<AckResult>> MeteredJobStore::AckBatch(
    const std::vector<AckItem>& items, absl::Time now) {
  auto results =
      Timed(ack_batch_, [&] { return store_->AckBatch(items, now); });
  if (results.ok()) {
    if (const int64_t acked = Acked(*results); acked > 0) {
      ack_batch_.batch_size->Observe(static_cast<double>(acked));
    }
  }
  return results;
}

void MeteredJobStore::AckBatchAsync(std::vector<AckItem> items, absl::Time now,
                                    Done<std::vector<AckResult>> done) {
  store_->AckBatchAsync(std::move(items), now,
                        TimedDone(ack_batch_, std::move(done), &Acked));
}

absl::StatusOr<Job> MeteredJobStore::Nack(const std::string& job_id,
                                          const std::string& token,
                                          const NackOptions& options,
                                          absl::Time now) {
  return Timed(nack_,
               [&] { return store_->Nack(job_id, token, options, now); });
}

absl::StatusOr<absl::Time> MeteredJobStore::ExtendLease(
    const std::string& job_id, const std::string& token,
    absl::Duration lease_duration, absl::Time now) {
  return Timed(extend_lease_, [&] {
    return store_->ExtendLease(job_id, token, lease_duration, now);
  });
}

absl::StatusOr<Job> MeteredJobStore::CancelJob(const std::string& job_id,
                                               absl::Time now) {
  return Timed(cancel_job_, [&] { return store_->CancelJob(job_id, now); });
}

absl::StatusOr<Job> MeteredJobStore::RequeueJob(const std::string& job_id,
                                                absl::Time now) {
  return Timed(requeue_job_, [&] { return store_->RequeueJob(job_id, now); });
}

absl::StatusOr<std::vector<Job>> MeteredJobStore::ReleaseLeases(
    const std::vector<AckItem>& items, absl::Time now) {
  auto jobs =
      Timed(release_leases_, [&] { return store_->ReleaseLeases(items, now); });
  if (jobs.ok() && !jobs->empty()) {
    release_leases_.batch_size->Observe(static_cast<double>(jobs->size()));
  }
  return jobs;
}

absl::StatusOr<std::vector<Job>> MeteredJobStore::ExpireLeases(absl::Time now) {
  auto jobs = Timed(expire_leases_, [&] { return store_->ExpireLeases(now); });
  if (jobs.ok() && !jobs->empty()) {
    expire_leases_.batch_size->Observe(static_cast<double>(jobs->size()));
  }
  return jobs;
}

absl::StatusOr<int64_t> MeteredJobStore::PruneFinishedJobs(
    absl::Time finished_before, absl::Time dead_before, int limit) {
  auto deleted = Timed(prune_finished_jobs_, [&] {
    return store_->PruneFinishedJobs(finished_before, dead_before, limit);
  });
  if (deleted.ok() && *deleted > 0) {
    prune_finished_jobs_.batch_size->Observe(static_cast<double>(*deleted));
  }
  return deleted;
}

absl::StatusOr<uint64_t> MeteredJobStore::ObserveTerm(uint64_t term) {
  return Timed(observe_term_, [&] { return store_->ObserveTerm(term); });
}

absl::StatusOr<CronRecord> MeteredJobStore::PutCron(
    const CronDefinition& definition, const CronState& state,
    int64_t expected_version, absl::Time now) {
  return Timed(put_cron_, [&] {
    return store_->PutCron(definition, state, expected_version, now);
  });
}

absl::Status MeteredJobStore::DeleteCron(const std::string& name,
                                         absl::Time now) {
  return Timed(delete_cron_, [&] { return store_->DeleteCron(name, now); });
}

absl::StatusOr<CronRecord> MeteredJobStore::ApplyCronTransition(
    const CronTransition& transition, absl::Time now) {
  return Timed(apply_cron_transition_,
               [&] { return store_->ApplyCronTransition(transition, now); });
}

}  // namespace adjutant
