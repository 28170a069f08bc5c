// A JobStore on PostgreSQL, for several daemons sharing one database.
//
// Same contract as storage/job_store.h, and the same schema and semantics
// as SqliteJobStore (storage/sqlite_job_store.cc is the reference): times
// are bigint Unix nanoseconds with the encoding of storage/
// sqlite_connection.h (unset = NULL; INT64_MIN in NOT NULL columns that must
// sort first), job states and cron policies the numbers of the enums in
// storage/job.h, payloads bytea.
//
// Every table lives in one schema (PostgresOptions::schema), created if
// missing; schema_migrations in it records the versions applied. Open
// applies the missing migrations in one transaction under a transaction-
// scoped advisory lock keyed by the schema name, so daemons starting at once
// migrate one after the other and the later ones find the schema current.
//
// What makes several daemons on one database safe:
//  * Dequeue picks jobs with SELECT ... FOR UPDATE SKIP LOCKED, so two
//    dequeuers never wait for each other and never lease one job twice;
//    expired leases are taken back the same way.
//  * Ack, Nack and ExtendLease lock the job's row (SELECT ... FOR UPDATE)
//    before checking its token, so a check and its update see one state.
//  * The highest leadership term is one row of `meta`. ObserveTerm and
//    ApplyCronTransition lock that row first, so every transition is checked
//    against the latest term and a deposed leader cannot fire; tick claims
//    are unique by the primary key of cron_claims (name, tick).
//  * Idempotency keys are unique by a partial unique index; a concurrent
//    Enqueue of the same key waits for the first and then reports it as a
//    duplicate.
// Transactions run at READ COMMITTED. A serialization failure or deadlock
// runs the whole transaction again, up to max_retries times, then fails with
// ABORTED. Connection errors are UNAVAILABLE: when PostgreSQL is down every
// call fails with UNAVAILABLE, and calls succeed again once it is back (a
// pooled connection found broken is replaced). A call whose COMMIT was cut
// off fails with UNAVAILABLE although it may have committed; every write is
// such that retrying it is safe (Ack) or visible (GetJob, ListJobs).
//
// seq comes from an identity column: it is unique and increases in each
// transaction, but two concurrent transactions may commit their seqs out of
// order, so a ListJobs paginator running during Enqueues may miss a job
// committed behind its page token.
#ifndef ADJUTANT_STORAGE_POSTGRES_JOB_STORE_H_
#define ADJUTANT_STORAGE_POSTGRES_JOB_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/job_store.h"

namespace adjutant {

class PgConnection;
class PgPool;

struct PostgresOptions {
  // A libpq connection string: "host=/run/postgresql dbname=adjutant" or
  // "postgresql://user@host:5432/adjutant". Required.
  std::string conninfo;
  // The schema holding Adjutant's tables; created if missing. Default
  // "adjutant". Several deployments may share a database under different
  // schemas.
  std::string schema = "adjutant";
  // Connections in the pool, >= 1: at most this many calls run at once; a
  // call beyond waits for a free one. Default 4.
  int pool_size = 4;
  // How long opening a connection may take before UNAVAILABLE. Default 5 s.
  absl::Duration connect_timeout = absl::Seconds(5);
  // How long a call waits for a free pooled connection before UNAVAILABLE.
  // Default 10 s.
  absl::Duration acquire_timeout = absl::Seconds(10);
  // Times a transaction that hit a serialization failure or a deadlock is
  // run again before the call fails with ABORTED. Default 3.
  int max_retries = 3;
  BackoffPolicy backoff;
  // Enqueue refuses (RESOURCE_EXHAUSTED, QueueFullError in job.h) a call
  // that would leave a queue holding more than this many pending (PENDING
  // or LEASED) jobs; 0: no limit. Default 0. ApplyCronTransition (a fired
  // tick) and RequeueJob are counted but never refused.
  //
  // How it is counted without serializing writers (schema version 3): a
  // single counter row per queue would make every Enqueue, Ack and lease
  // expiry of a queue wait for each other's commit, across daemons. So
  // triggers on `jobs` only append rows to queue_count_deltas (an insert
  // conflicts with nothing), one per Enqueue statement and queue and one per
  // job that starts or stops being pending; the count is queue_counts.pending
  // plus the sum of the queue's deltas, read in one statement. An Enqueue
  // that finds more than kFoldDeltasAbove delta rows folds them into
  // queue_counts, under a transaction-scoped advisory lock per queue that it
  // only tries (another folder is never waited for).
  // Trade-off: the count is exact as of the committed writes, but two
  // Enqueues in flight at once do not see each other's jobs, so a queue may
  // pass the limit by at most what the Enqueue transactions running at that
  // moment insert: (daemons x pg_pool_size x the largest batch) jobs.
  int64_t max_pending_per_queue = 0;
};

// Thread-safe: calls run concurrently, each on its own pooled connection
// and in its own transaction.
class PostgresJobStore final : public JobStore {
 public:
  // The schema version this build writes and reads.
  static constexpr int kSchemaVersion = 3;

  // Connects, creates the schema if missing and applies any missing
  // migration. INVALID_ARGUMENT for bad options (naming the field);
  // UNAVAILABLE if PostgreSQL cannot be reached; FAILED_PRECONDITION if the
  // schema holds tables of another application or a schema version newer
  // than this build knows.
  static absl::StatusOr<std::unique_ptr<PostgresJobStore>> Open(
      const PostgresOptions& options);
  ~PostgresJobStore() override;

  PostgresJobStore(const PostgresJobStore&) = delete;
  PostgresJobStore& operator=(const PostgresJobStore&) = delete;

  // JobStore (see job_store.h for the contracts).
  absl::Status Ping() override;
  absl::StatusOr<std::vector<EnqueueResult>> Enqueue(
      const std::vector<NewJob>& jobs, absl::Time now) override;
  absl::StatusOr<std::vector<Lease>> Dequeue(const DequeueOptions& options,
                                             absl::Time now) override;
  absl::Status Ack(const std::string& job_id, const std::string& token,
                   absl::Time now) override;
  // One transaction: BEGIN, one statement that locks every row of the
  // batch (in id order), one UPDATE of the rows that pass, COMMIT; each
  // item judged as Ack would.
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

  // Test-only: runs one SQL statement (in this store's schema) on a pooled
  // connection and returns its rows, each as its columns' text joined by
  // '|' (NULL as "NULL").
  absl::StatusOr<std::vector<std::string>> QueryForTest(const std::string& sql);

 private:
  using Body = std::function<absl::Status(PgConnection&)>;

  PostgresJobStore(std::unique_ptr<PgPool> pool,
                   const PostgresOptions& options);

  // Runs `body` inside BEGIN ... COMMIT on a pooled connection, running it
  // again after a serialization failure or deadlock (up to max_retries_),
  // and once more on a fresh connection if the pooled one turns out broken
  // before the transaction began. `body` must reset its outputs on entry.
  absl::Status Transact(const Body& body);
  // Runs `body` (reads only, no transaction) on a pooled connection, again
  // on a fresh one if the first was broken.
  absl::Status Read(const Body& body);

  const BackoffPolicy backoff_;
  const int max_retries_;
  const int64_t max_pending_per_queue_;  // 0: no limit
  // Thread-safe; lends each connection to one call at a time.
  const std::unique_ptr<PgPool> pool_;
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_POSTGRES_JOB_STORE_H_
