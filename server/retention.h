// Retention: the background thread that deletes finished jobs once they are
// old enough (JobStore::PruneFinishedJobs), so that the store does not grow
// without bound.
//
// SUCCEEDED and CANCELLED jobs go `finished` after they finished, DEAD ones
// `dead` after (longer by default: an operator may still want to look at
// them or RequeueJob them). A job's finish time is its updated_at, wall
// time, so the cutoffs are Clock::Now() minus the retention.
//
// The thread sleeps on the injected Clock (never a fast fixed beat) for
// Interval(): a tenth of the shorter retention, between 1 s and 1 min, so
// a job outlives its retention by at most that. Each round deletes in
// batches of batch_size jobs, one store transaction each: a full batch is
// followed at once by another, but the thread yields between them so that
// Dequeues and Acks waiting for the store interleave; a short batch ends
// the round. The first round runs at Start(), so a daemon that was down
// catches up at once. A round that deleted something logs one line with
// the count; a store error logs a warning and the round is tried again
// after Interval().
//
// What deleting a job means for clients (idempotency keys freed, GetJob
// NOT_FOUND, schedules whose last job is gone) is in storage/job_store.h.
#ifndef ADJUTANT_SERVER_RETENTION_H_
#define ADJUTANT_SERVER_RETENTION_H_

#include <cstdint>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "storage/job_store.h"

namespace adjutant {

struct RetentionConfig {
  // How long SUCCEEDED and CANCELLED jobs are kept after they finished
  // (--retention). Zero keeps them forever. Default 24 h.
  absl::Duration finished = absl::Hours(24);
  // How long DEAD jobs are kept after they died (--dead-retention). Zero
  // keeps them forever. Default 7 days (168 h).
  absl::Duration dead = absl::Hours(168);
  // Jobs deleted per store transaction (--retention-batch-size), 1..100000.
  // Default 500: a few milliseconds of SQLite's write lock.
  int batch_size = 500;
};

// The largest batch_size accepted.
inline constexpr int kMaxRetentionBatchSize = 100000;

// OK, or INVALID_ARGUMENT naming the flag (--retention, --dead-retention,
// --retention-batch-size) and the reason: a negative duration, a batch size
// outside 1..kMaxRetentionBatchSize.
absl::Status ValidateRetentionConfig(const RetentionConfig& config);

// Thread-safe, except that Start() and Stop() are called by one owner thread.
class RetentionPruner {
 public:
  // `store` and `clock` must outlive the pruner. REQUIRES: `config` is valid
  // (ValidateRetentionConfig).
  RetentionPruner(JobStore* store, Clock* clock, RetentionConfig config);
  // Calls Stop().
  ~RetentionPruner();

  RetentionPruner(const RetentionPruner&) = delete;
  RetentionPruner& operator=(const RetentionPruner&) = delete;

  // Starts the thread, whose first round runs at once. Does nothing when
  // both retentions are zero (everything is kept). REQUIRES: called at
  // most once.
  void Start();

  // Stops the thread: a sleeping one at once, a pruning one after the batch
  // in flight. Idempotent.
  void Stop();

  // The time between rounds: min(finished, dead) / 10 (the nonzero ones),
  // clamped to [1 s, 1 min]. InfiniteDuration when both are zero.
  static absl::Duration Interval(const RetentionConfig& config);

  // ---- For tests ----------------------------------------------------------

  // Blocks (in real time) until `n` rounds have ended and the thread is
  // asleep until the next one (or has stopped), so that a test can move a
  // simulated clock past it.
  void AwaitRoundsForTest(int64_t n);
  // Rounds ended so far.
  int64_t RoundsForTest();
  // Jobs deleted since Start().
  int64_t DeletedCountForTest();

 private:
  void Loop();
  // One round's batches at `now`; returns how many jobs it deleted, or the
  // store's error (with what it deleted before it lost nothing).
  absl::StatusOr<int64_t> PruneRound(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  bool Stopping() ABSL_LOCKS_EXCLUDED(mu_);

  JobStore* const store_;
  Clock* const clock_;
  const RetentionConfig config_;
  std::thread thread_;

  absl::Mutex mu_;
  // State below is protected by mu_.
  // Set by Stop(): the thread ends.
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Rounds ended, each counted as the thread goes to sleep.
  int64_t rounds_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t deleted_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_RETENTION_H_
