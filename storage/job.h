// Domain types of the job store. Plain values: no proto, no gRPC, so that the
// store, the scheduler and their tests stand without the RPC layer.
#ifndef ADJUTANT_STORAGE_JOB_H_
#define ADJUTANT_STORAGE_JOB_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace adjutant {

// The numbering matches adjutant.v1.JobState.
enum class JobState : int {
  kUnspecified = 0,  // "any" in filters; never stored
  kPending = 1,
  kLeased = 2,
  kSucceeded = 3,
  kDead = 4,
  kCancelled = 5,
};

// "PENDING", "LEASED", ... ("UNSPECIFIED" for kUnspecified).
const char* JobStateName(JobState state);

// A job as stored. Times that are unset hold absl::InfinitePast().
struct Job {
  std::string id;
  std::string queue;
  std::string type;
  std::string payload;
  int32_t priority = 0;
  JobState state = JobState::kPending;
  int32_t attempts = 0;
  int32_t max_attempts = 0;
  absl::Time run_at = absl::InfinitePast();
  absl::Time created_at = absl::InfinitePast();
  absl::Time updated_at = absl::InfinitePast();
  std::string last_error;
  std::string idempotency_key;  // empty: none
  // Set while LEASED (InfinitePast otherwise).
  absl::Time lease_expires_at = absl::InfinitePast();
  // The token of the current lease, or of the lease that acked the job (so a
  // retried Ack can be recognised). Never shown to anyone but the lease
  // holder: the RPC layer drops it from Job messages.
  std::string lease_token;
  std::string worker_id;  // of the last Dequeue that leased it
  std::string cron_name;  // empty: not fired by a schedule
  absl::Time cron_tick_time = absl::InfinitePast();
  // Enqueue order, strictly increasing across the store. Breaks ties in
  // dequeue order and orders ListJobs.
  int64_t seq = 0;
};

// What Enqueue stores. Validated by the caller (the RPC layer): the store
// assumes a non-empty queue and type and max_attempts >= 1.
struct NewJob {
  std::string queue;
  std::string type;
  std::string payload;
  int32_t priority = 0;
  absl::Time run_at = absl::InfinitePast();  // InfinitePast: now
  int32_t max_attempts = 1;
  std::string idempotency_key;  // empty: none
  std::string cron_name;
  absl::Time cron_tick_time = absl::InfinitePast();
};

struct EnqueueResult {
  std::string job_id;
  bool duplicate = false;  // an existing job with that key was found
};

struct DequeueOptions {
  std::string queue;
  std::vector<std::string> job_types;                 // empty: any type
  int max_jobs = 1;                                   // >= 1
  absl::Duration lease_duration = absl::Seconds(30);  // > 0
  std::string worker_id;
};

struct Lease {
  Job job;  // as leased: state kLeased, attempts incremented
  std::string token;
  absl::Time expires_at;
};

// One item of JobStore::AckBatch.
struct AckItem {
  std::string job_id;
  std::string token;
};

// JobStore::AckBatch's answer for one item.
struct AckResult {
  // What Ack would return for the item.
  absl::Status status;
  // Set when status is OK, so that the caller need not read the job again:
  // its queue and cron_name ("" for a job no schedule fired), and whether
  // it had been acked already under this token (a retried ack, which
  // changed nothing).
  std::string queue;
  std::string cron_name;
  bool already_acked = false;
};

struct NackOptions {
  std::string error;
  // Retry no sooner than now + retry_after; nullopt: the store's
  // BackoffPolicy decides.
  std::optional<absl::Duration> retry_after;
  bool dead = false;  // go DEAD now, whatever the attempts
};

struct JobPage {
  std::vector<Job> jobs;
  std::string next_page_token;  // empty: last page
};

// Retry delay after the n-th failed attempt (n >= 1):
//   min(max_delay, base * 2^(n-1)) * (1 - jitter + 2 * jitter * u)
// with u uniform in [0, 1): exponential, capped, +/- jitter.
struct BackoffPolicy {
  absl::Duration base = absl::Seconds(1);
  absl::Duration max_delay = absl::Hours(1);
  double jitter = 0.2;  // in [0, 1)

  // `u` in [0, 1) is the random draw; the result is deterministic in it.
  absl::Duration Delay(int attempts, double u) const;
};

// ---- Pending limit ---------------------------------------------------------
//
// A queue's pending jobs, for the per-queue limit (--max-pending-per-queue),
// are its unfinished ones: PENDING or LEASED. A leased job counts because
// it comes back to PENDING whenever its lease ends without an Ack, so a
// limit on PENDING alone would not bound what the queue may hold. Every
// backend keeps the count as it writes, in the same transaction: the check
// never walks the queue.

// The error of an Enqueue that would take `queue` past `limit` pending jobs;
// `pending` is what the queue holds before the call. RESOURCE_EXHAUSTED:
//   queue "emails" holds 10 pending jobs; 3 more would pass the limit of
//   10 (--max-pending-per-queue)
// The status carries a payload that IsQueueFullError recognizes, so that
// callers can tell it from a full disk (also RESOURCE_EXHAUSTED).
absl::Status QueueFullError(const std::string& queue, int64_t pending,
                            int64_t added, int64_t limit);

// Whether `status` came from QueueFullError: the producer's business, not
// the server's trouble.
bool IsQueueFullError(const absl::Status& status);

// ---- Cron schedules ----------------------------------------------------

// The numbering matches adjutant.v1.MisfirePolicy / OverlapPolicy. The store
// never holds kUnspecified: the RPC layer maps it to the default.
enum class MisfirePolicy : int {
  kUnspecified = 0,
  kSkip = 1,
  kFireOnce = 2,
  kFireAll = 3
};
enum class OverlapPolicy : int {
  kUnspecified = 0,
  kAllow = 1,
  kSkip = 2,
  kWait = 3,
  kReplace = 4,
};

// What a schedule enqueues at each tick.
struct JobTemplate {
  std::string queue;
  std::string type;
  std::string payload;
  int32_t priority = 0;
  int32_t max_attempts = 1;

  bool operator==(const JobTemplate& o) const;
};

// A schedule as registered.
struct CronDefinition {
  std::string name;
  std::string schedule;  // the expression, as registered
  std::string timezone;  // IANA name, never empty
  JobTemplate job;
  MisfirePolicy misfire_policy = MisfirePolicy::kFireOnce;
  absl::Duration catchup_window = absl::Hours(1);
  OverlapPolicy overlap_policy = OverlapPolicy::kAllow;
  bool paused = false;

  bool operator==(const CronDefinition& o) const;
};

// A schedule's firing state. Unset times hold absl::InfinitePast().
struct CronState {
  // The next tick to consider; InfiniteFuture when the expression has no
  // more ticks.
  absl::Time next_fire_time = absl::InfiniteFuture();
  absl::Time last_fire_time = absl::InfinitePast();
  std::string last_job_id;
  int64_t fired_count = 0;
  int64_t missed_count = 0;
  int64_t overlap_skipped_count = 0;
  // OverlapPolicy::kWait: a tick held back until last_job_id finishes.
  absl::Time waiting_tick_time = absl::InfinitePast();
};

struct CronRecord {
  CronDefinition definition;
  CronState state;
  absl::Time created_at = absl::InfinitePast();
  absl::Time updated_at = absl::InfinitePast();
  // Incremented by every write; the compare-and-set token of PutCron and
  // ApplyCronTransition.
  int64_t version = 0;
};

struct CronPage {
  std::vector<CronRecord> crons;
  std::string next_page_token;  // empty: last page
};

// One atomic step of a schedule, decided by the scheduler and applied by the
// store in one transaction (see JobStore::ApplyCronTransition).
struct CronTransition {
  std::string name;
  // The CronRecord::version the scheduler decided on.
  int64_t expected_version = 0;
  // The leadership term of the scheduler deciding it.
  uint64_t term = 0;
  // If set: the (name, tick) claim to take. A tick is claimed at most once
  // for the life of the schedule.
  std::optional<absl::Time> claim_tick;
  // If set: the job to enqueue (its cron_name / cron_tick_time filled in by
  // the scheduler). Its id becomes new_state.last_job_id.
  std::optional<NewJob> job;
  // If non-empty: a job to cancel first if it is still PENDING or LEASED
  // (OverlapPolicy::kReplace). A job already finished is left alone.
  std::string cancel_job_id;
  // The schedule's state after the step. last_job_id is overwritten with the
  // new job's id when `job` is set.
  CronState new_state;
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_JOB_H_
