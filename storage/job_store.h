// The durable store behind the queue and the scheduler.
//
// JobStore is the one interface every backend implements (MemoryJobStore,
// SqliteJobStore, and later PostgresJobStore); tests/storage/
// job_store_conformance_test.cc runs the same suite against each.
//
// Contract common to every method:
//  * Thread-safe: any number of threads may call any method at once.
//  * Blocking: methods may wait for disk I/O. Never call them from a gRPC
//    reaction thread; the server runs them on its own executor. The
//    exception: the *Async writes of a store whose WritesAsynchronously()
//    is true return at once.
//  * `now` is wall time, passed in by the caller, so the store itself reads
//    no clock. Every time comparison in a call uses that `now`.
//  * Every mutating method is atomic: it succeeds entirely, or returns an
//    error and changes nothing. A method that returned OK is durable to the
//    degree the backend promises (SQLite synchronous=FULL: on disk).
//  * Errors: NOT_FOUND (unknown job or schedule), FAILED_PRECONDITION (the
//    state forbids it: stale lease, finished job, lower term), ABORTED (a
//    compare-and-set lost), UNAVAILABLE (the backend cannot be reached, I/O
//    error), RESOURCE_EXHAUSTED (disk full), INTERNAL (a broken invariant).
//    Messages are fit for a client to read; they never contain payloads or
//    lease tokens.
//  * Inputs are assumed validated by the caller (non-empty names, positive
//    durations, max_jobs >= 1): the store checks only what needs its state.
#ifndef ADJUTANT_STORAGE_JOB_STORE_H_
#define ADJUTANT_STORAGE_JOB_STORE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/job.h"

namespace adjutant {

// One queue's numbers, for JobStore::QueueStatistics.
struct QueueStats {
  std::string queue;
  // Jobs per state. `pending` counts every PENDING job, `runnable` those of
  // them whose run_at <= now. A LEASED job counts as leased until the
  // reaper ends its lease, even past lease_expires_at.
  int64_t pending = 0;
  int64_t runnable = 0;
  int64_t leased = 0;
  int64_t succeeded = 0;
  int64_t dead = 0;
  int64_t cancelled = 0;
  // The smallest run_at among runnable jobs; InfiniteFuture when none.
  absl::Time oldest_runnable_run_at = absl::InfiniteFuture();

  bool operator==(const QueueStats& o) const {
    return queue == o.queue && pending == o.pending && runnable == o.runnable &&
           leased == o.leased && succeeded == o.succeeded && dead == o.dead &&
           cancelled == o.cancelled &&
           oldest_runnable_run_at == o.oldest_runnable_run_at;
  }
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // ---- Jobs --------------------------------------------------------------

  // OK if the store is usable (a cheap round trip); for health checks.
  virtual absl::Status Ping() = 0;

  // Stores `jobs` in one transaction, all or none, and returns one result per
  // job in order. A job whose (queue, idempotency_key) already exists —
  // stored earlier or earlier in the same batch — is not stored: its result
  // names the existing job with duplicate = true. New jobs get fresh ids,
  // state PENDING, attempts 0, created_at = updated_at = now, run_at = now
  // when unset, and increasing seq in batch order.
  virtual absl::StatusOr<std::vector<EnqueueResult>> Enqueue(
      const std::vector<NewJob>& jobs, absl::Time now) = 0;

  // Leases up to options.max_jobs available jobs of options.queue (matching
  // options.job_types if non-empty), in order: priority descending, run_at
  // ascending, seq ascending. Available means PENDING with run_at <= now, or
  // LEASED with lease_expires_at <= now (an expired lease; such a job whose
  // attempts are used up goes DEAD instead, last_error "lease expired").
  // Each leased job gets state LEASED, attempts + 1, a fresh unguessable
  // token, lease_expires_at = now + lease_duration, worker_id, updated_at =
  // now. Returns an empty vector when nothing is available. Never waits.
  virtual absl::StatusOr<std::vector<Lease>> Dequeue(
      const DequeueOptions& options, absl::Time now) = 0;

  // Marks the job SUCCEEDED. FAILED_PRECONDITION if the job is not LEASED
  // under `token`, or its lease expired (lease_expires_at <= now) — except
  // that a job already SUCCEEDED under this same token returns OK and
  // changes nothing (a retried Ack). NOT_FOUND if unknown.
  virtual absl::Status Ack(const std::string& job_id, const std::string& token,
                           absl::Time now) = 0;

  // Acks each item as by Ack, judged on its own, and returns one result per
  // item in order: what Ack would return for it (an item that failed was
  // not acked) and, when acked, the job's queue and cron_name. A backend
  // that can applies the whole batch in one transaction, so that it costs
  // one disk sync, and then reports a failure of that transaction
  // (UNAVAILABLE, RESOURCE_EXHAUSTED) as the call's error: no item was
  // acked. The default calls Ack, then GetJob, once per item (it never
  // sets already_acked; a wrapper forwards to the store it wraps).
  // REQUIRES: no job id appears twice.
  virtual absl::StatusOr<std::vector<AckResult>> AckBatch(
      const std::vector<AckItem>& items, absl::Time now) {
    std::vector<AckResult> results(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      results[i].status = Ack(items[i].job_id, items[i].token, now);
      if (!results[i].status.ok()) continue;
      absl::StatusOr<Job> job = GetJob(items[i].job_id);
      if (job.ok()) {
        results[i].queue = job->queue;
        results[i].cron_name = job->cron_name;
      }
    }
    return results;
  }

  // ---- Asynchronous writes ----------------------------------------------
  //
  // The same calls as Enqueue, Dequeue, Ack and AckBatch, with the outcome
  // passed to `done` (exactly once) instead of returned: what the
  // synchronous call would return, and for AckAsync the AckResult AckBatch
  // would give the item (an error, the item's verdict included, as the
  // StatusOr's).

  // A write's outcome, delivered once.
  template <typename T>
  using Done = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;

  // True if the *Async calls return without waiting for I/O and call `done`
  // later, on a thread of the store's own, once the write is durable: they
  // may then be called from a thread that must not block (a gRPC reaction),
  // and `done` must be short and must never wait for this store (it holds
  // up the answers of the writes behind it, and a synchronous write of this
  // store from it waits for a commit while it does). Writes take effect in
  // the order of their calls: a write (asynchronous or not) called after an
  // *Async call returned sees what that call wrote, if it commits (the
  // server wakes long-polls before an enqueue commits on this). False (the
  // default): they run the synchronous call on the calling thread and call
  // `done` before returning.
  virtual bool WritesAsynchronously() const { return false; }

  virtual void EnqueueAsync(std::vector<NewJob> jobs, absl::Time now,
                            Done<std::vector<EnqueueResult>> done) {
    std::move(done)(Enqueue(jobs, now));
  }
  virtual void DequeueAsync(DequeueOptions options, absl::Time now,
                            Done<std::vector<Lease>> done) {
    std::move(done)(Dequeue(options, now));
  }
  virtual void AckAsync(AckItem item, absl::Time now, Done<AckResult> done) {
    std::move(done)(OneAckResult(AckBatch({std::move(item)}, now)));
  }
  virtual void AckBatchAsync(std::vector<AckItem> items, absl::Time now,
                             Done<std::vector<AckResult>> done) {
    std::move(done)(AckBatch(items, now));
  }

  // Runs `calls`, which makes *Async calls on this thread and must not block
  // (nor wait for this store), so that its writes can share one commit: the
  // store tries not to start committing the writes queued meanwhile before
  // `calls` returns. A hint, not a promise (a store may bound the wait, or
  // cap its groups). Default: runs `calls`.
  virtual void WriteTogether(absl::FunctionRef<void()> calls) { calls(); }

  // The outcome of an AckBatch of one item, as AckAsync gives it.
  static absl::StatusOr<AckResult> OneAckResult(
      absl::StatusOr<std::vector<AckResult>> results) {
    if (!results.ok()) return results.status();
    if (results->size() != 1) {
      return absl::InternalError("the store returned no result for an ack");
    }
    AckResult& result = results->front();
    if (!result.status.ok()) return result.status;
    return std::move(result);
  }

  // Gives a leased job back. Same preconditions as Ack (no retry exemption).
  // The job keeps options.error as last_error and becomes DEAD if
  // options.dead or attempts >= max_attempts; otherwise PENDING with run_at
  // = now + (retry_after, or the BackoffPolicy delay for its attempts).
  // Returns the job after the change.
  virtual absl::StatusOr<Job> Nack(const std::string& job_id,
                                   const std::string& token,
                                   const NackOptions& options,
                                   absl::Time now) = 0;

  // Sets the lease's expiry to now + lease_duration and returns it. Same
  // preconditions as Ack (no retry exemption).
  virtual absl::StatusOr<absl::Time> ExtendLease(const std::string& job_id,
                                                 const std::string& token,
                                                 absl::Duration lease_duration,
                                                 absl::Time now) = 0;

  // NOT_FOUND if unknown.
  virtual absl::StatusOr<Job> GetJob(const std::string& job_id) = 0;

  // PENDING or LEASED -> CANCELLED (the lease ends: lease_expires_at unset;
  // the old token no longer works). FAILED_PRECONDITION for any other state.
  // Returns the job after the change.
  virtual absl::StatusOr<Job> CancelJob(const std::string& job_id,
                                        absl::Time now) = 0;

  // DEAD or CANCELLED -> PENDING with attempts 0, run_at = now, last_error
  // kept. FAILED_PRECONDITION for any other state.
  virtual absl::StatusOr<Job> RequeueJob(const std::string& job_id,
                                         absl::Time now) = 0;

  // Jobs in seq order, filtered by queue (empty: any) and state
  // (kUnspecified: any), at most page_size (>= 1) of them, starting after
  // the position encoded in page_token (empty: from the start; a token not
  // made by this method: INVALID_ARGUMENT). A page token stays valid while
  // jobs are added or change state.
  virtual absl::StatusOr<JobPage> ListJobs(const std::string& queue,
                                           JobState state, int page_size,
                                           const std::string& page_token) = 0;

  // Ends every lease that expired by `now` (LEASED with lease_expires_at <=
  // now): a job with attempts left goes back to PENDING (run_at kept, so it
  // keeps its place in line), one without goes DEAD; both get last_error
  // "lease expired" and lose their token. Returns the jobs after the change,
  // so the caller can wake whoever waits on them.
  virtual absl::StatusOr<std::vector<Job>> ExpireLeases(absl::Time now) = 0;

  // Takes back leases whose jobs never reached their worker (a Work stream
  // ended before it sent them): each job still LEASED under its item's
  // token, expired or not, goes back to PENDING as if it had not been
  // leased: attempts - 1, no token, no expiry, run_at and last_error kept
  // (so it keeps its place in line). An item whose job is gone, no longer
  // LEASED, or leased under another token is left alone. All in one
  // transaction. Returns the jobs it released, after the change.
  virtual absl::StatusOr<std::vector<Job>> ReleaseLeases(
      const std::vector<AckItem>& items, absl::Time now) = 0;

  // The earliest instant after `now` at which a job of `queue` (empty: any
  // queue) may become available: the smallest run_at > now among PENDING
  // jobs and lease_expires_at > now among LEASED jobs. InfiniteFuture if
  // none. The server sleeps until then to wake long-polls.
  virtual absl::StatusOr<absl::Time> NextAvailableTime(const std::string& queue,
                                                       absl::Time now) = 0;

  // Counts the jobs of every queue that holds at least one, by state, as of
  // `now` (see QueueStats), one entry per queue in queue-name order. A
  // read: one consistent snapshot, changes nothing. For GetStats, an
  // operator's call: it may visit every job, so keep it off hot paths.
  virtual absl::StatusOr<std::vector<QueueStats>> QueueStatistics(
      absl::Time now) = 0;

  // Retention: deletes at most `limit` (>= 1) finished jobs, in one
  // transaction, and returns how many it deleted. A finished job's finish
  // time is its updated_at (the instant it became SUCCEEDED, CANCELLED or
  // DEAD: nothing changes a finished job but RequeueJob, which makes it
  // PENDING again). Deleted are SUCCEEDED and CANCELLED jobs with updated_at
  // < finished_before, and DEAD jobs with updated_at < dead_before; oldest
  // first within each state. InfinitePast as a cutoff deletes nothing of
  // that kind. PENDING and LEASED jobs are never deleted, however old.
  // A caller drains the backlog by calling again while it gets `limit`.
  // Fewer than `limit` means nothing more was due, or (PostgreSQL, several
  // daemons) that due jobs were locked by another daemon's call, which
  // deletes them itself.
  // Cost: proportional to the jobs deleted (an index on (state,
  // updated_at)), never to the number of pending jobs.
  // After the deletion:
  //  * GetJob, CancelJob and RequeueJob of the job return NOT_FOUND; it is
  //    gone from ListJobs and QueueStatistics; a retried Ack of it returns
  //    NOT_FOUND.
  //  * Its idempotency key is free again: an Enqueue with the same (queue,
  //    key) stores a new job. Retention is the window in which a key
  //    deduplicates once its job has finished.
  //  * A schedule whose last_job_id names it keeps the id (GetJob:
  //    NOT_FOUND); a job that is gone is finished, so no overlap policy
  //    waits for it or cancels it.
  virtual absl::StatusOr<int64_t> PruneFinishedJobs(absl::Time finished_before,
                                                    absl::Time dead_before,
                                                    int limit) = 0;

  // ---- Leadership terms ----------------------------------------------------

  // Records `term` as seen: FAILED_PRECONDITION if it is lower than the
  // highest term stored; otherwise stores max(term, highest) durably.
  // Returns the highest term after the call.
  virtual absl::StatusOr<uint64_t> ObserveTerm(uint64_t term) = 0;

  // The highest term stored (0 if none).
  virtual absl::StatusOr<uint64_t> HighestTerm() = 0;

  // ---- Cron schedules
  // --------------------------------------------------------

  // NOT_FOUND if unknown.
  virtual absl::StatusOr<CronRecord> GetCron(const std::string& name) = 0;

  // Creates or replaces a schedule's definition and state. expected_version
  // 0 means "must not exist" (ALREADY_EXISTS otherwise); any other value
  // must equal the stored version (ABORTED otherwise; NOT_FOUND if it does
  // not exist). Stores version = old + 1 (1 on create), created_at = now on
  // create (kept otherwise), updated_at = now. Returns the stored record.
  virtual absl::StatusOr<CronRecord> PutCron(const CronDefinition& definition,
                                             const CronState& state,
                                             int64_t expected_version,
                                             absl::Time now) = 0;

  // Deletes a schedule and its tick claims; jobs it fired stay, but for the
  // job of a tick fired ahead of its instant (SchedulerConfig::fire_ahead):
  // if the schedule's last_job_id is still PENDING, never leased (attempts
  // 0), with a cron_tick_time after `now`, it is cancelled as by CancelJob,
  // in the same transaction. (The claims go, so a schedule registered again
  // under the name may fire that tick itself.) NOT_FOUND if unknown.
  virtual absl::Status DeleteCron(const std::string& name, absl::Time now) = 0;

  // Schedules in name order, at most page_size (>= 1), after page_token
  // (empty: from the start).
  virtual absl::StatusOr<CronPage> ListCrons(int page_size,
                                             const std::string& page_token) = 0;

  // Unpaused schedules that need the scheduler at `now`: next_fire_time <=
  // now, or a waiting tick is held (waiting_tick_time set). At most `limit`,
  // earliest next_fire_time first.
  virtual absl::StatusOr<std::vector<CronRecord>> DueCrons(absl::Time now,
                                                           int limit) = 0;

  // The smallest next_fire_time later than `after` among unpaused schedules
  // (InfinitePast: of them all); InfiniteFuture if none.
  virtual absl::StatusOr<absl::Time> NextCronFireTime(absl::Time after) = 0;

  // Applies one scheduler step in one transaction, in this order:
  //  1. FAILED_PRECONDITION if transition.term is lower than the highest term
  //     stored (a deposed leader cannot fire); otherwise the term is
  //     recorded as by ObserveTerm.
  //  2. NOT_FOUND if the schedule is gone; ABORTED if its version is not
  //     expected_version.
  //  3. If claim_tick is set and (name, tick) was claimed before:
  //     ALREADY_EXISTS. Otherwise the claim is stored.
  //  4. If cancel_job_id is set and that job is PENDING or LEASED, it is
  //     cancelled as by CancelJob.
  //  5. If job is set it is enqueued (no idempotency key) and its id goes
  //     into new_state.last_job_id.
  //  6. The state becomes new_state; version + 1; updated_at unchanged (it
  //     tracks definition changes only).
  // The store may forget claims of ticks more than a day older than
  // new_state.last_fire_time (the scheduler never goes back that far).
  // Returns the record after the step.
  virtual absl::StatusOr<CronRecord> ApplyCronTransition(
      const CronTransition& transition, absl::Time now) = 0;
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_JOB_STORE_H_
