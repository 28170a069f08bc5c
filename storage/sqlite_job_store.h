// A JobStore on one SQLite file: the default backend.
//
// The file holds a versioned schema (PRAGMA application_id identifies an
// Adjutant database, PRAGMA user_version its schema version); Open applies
// any missing migrations in one transaction. Times are stored as int64
// nanoseconds since the Unix epoch, unset (InfinitePast) as NULL; see
// storage/sqlite_connection.h for the exact encoding and its range.
//
// Several processes (or several SqliteJobStore objects) may open the same
// file at once: every write runs in a BEGIN IMMEDIATE transaction, so they
// serialize on SQLite's write lock and never lease a job twice or claim a
// tick twice. A write waiting longer than SqliteOptions::busy_timeout for
// that lock fails with UNAVAILABLE.
#ifndef ADJUTANT_STORAGE_SQLITE_JOB_STORE_H_
#define ADJUTANT_STORAGE_SQLITE_JOB_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/job_store.h"

namespace adjutant {

class SqliteConnection;

struct SqliteOptions {
  // The database file; created if missing.
  std::string path;
  // PRAGMA synchronous. FULL (the default): a call returns only once its
  // transaction is on disk. NORMAL: in WAL mode, a power loss may undo the
  // last transactions (a process crash does not).
  enum class Synchronous { kFull, kNormal };
  Synchronous synchronous = Synchronous::kFull;
  // How long a write waits for another process holding the file's write
  // lock before failing with UNAVAILABLE.
  absl::Duration busy_timeout = absl::Seconds(5);
  BackoffPolicy backoff;
  // The SQLite VFS (the layer under SQLite that does file I/O) to open the
  // file with: the name of one registered with sqlite3_vfs_register. Empty
  // (the default): SQLite's default VFS. For tests that inject I/O faults
  // (tests/fakes/faulty_sqlite_vfs.h) and deployments with special storage.
  std::string vfs;
  // Enqueue refuses (RESOURCE_EXHAUSTED, QueueFullError in job.h) a call
  // that would leave a queue holding more than this many pending (PENDING
  // or LEASED) jobs; 0: no limit. The count is exact: the table
  // queue_counts holds it per queue, kept by triggers on `jobs` in the
  // transaction of every write (schema version 4), so the check reads one
  // row. ApplyCronTransition (a fired tick) and RequeueJob are counted but
  // never refused. Default 0.
  int64_t max_pending_per_queue = 0;
};

// Thread-safe. For now one SQLite connection serves every call, under one
// mutex: calls on one SqliteJobStore run one at a time, each in its own
// transaction (group commit of concurrent writes is left for later).
class SqliteJobStore final : public JobStore {
 public:
  // The PRAGMA application_id of an Adjutant database ("ADJT").
  static constexpr int32_t kApplicationId = 0x41444A54;
  // The schema version this build writes and reads (PRAGMA user_version).
  static constexpr int kSchemaVersion = 4;

  // Opens (creating or migrating) the database. Fails without touching the
  // file if it is not an Adjutant database, is corrupt, or has a schema
  // newer than this build knows (FAILED_PRECONDITION, naming the file and
  // saying which). An existing file is read once from end to end first
  // (PRAGMA quick_check, through a read-only connection), so that garbled
  // pages are found before anything writes to the file: opening a large
  // database takes about as long as reading it. UNAVAILABLE if the file
  // cannot be opened or read at all.
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(
      const SqliteOptions& options);
  // Checkpoint(), then closes the connection. A clean stop leaves the
  // database file holding everything and the -wal file empty (or, when this
  // was the file's last connection, removed by SQLite).
  ~SqliteJobStore() override;

  // Copies every committed transaction from the -wal file into the database
  // file and truncates the -wal file to zero bytes (PRAGMA
  // wal_checkpoint(TRUNCATE)), waiting up to busy_timeout for other
  // connections' readers and writers. UNAVAILABLE if they keep it from
  // completing: nothing is lost, the WAL simply stays for a later
  // checkpoint. Thread-safe.
  absl::Status Checkpoint();

  SqliteJobStore(const SqliteJobStore&) = delete;
  SqliteJobStore& operator=(const SqliteJobStore&) = delete;

  // JobStore (see job_store.h for the contracts).
  //
  // Ping reads the file. After a write transaction failed with an I/O error
  // or disk full, and until one commits again, Ping also writes (a counter
  // in the meta table), since reads go on working while the disk refuses
  // writes: it fails with that write's UNAVAILABLE or RESOURCE_EXHAUSTED
  // while the trouble lasts.
  absl::Status Ping() override;
  absl::StatusOr<std::vector<EnqueueResult>> Enqueue(
      const std::vector<NewJob>& jobs, absl::Time now) override;
  absl::StatusOr<std::vector<Lease>> Dequeue(const DequeueOptions& options,
                                             absl::Time now) override;
  absl::Status Ack(const std::string& job_id, const std::string& token,
                   absl::Time now) override;
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
  absl::Status DeleteCron(const std::string& name) override;
  absl::StatusOr<CronPage> ListCrons(int page_size,
                                     const std::string& page_token) override;
  absl::StatusOr<std::vector<CronRecord>> DueCrons(absl::Time now,
                                                   int limit) override;
  absl::StatusOr<absl::Time> NextCronFireTime() override;
  absl::StatusOr<CronRecord> ApplyCronTransition(
      const CronTransition& transition, absl::Time now) override;

  // Test-only: runs one SQL statement on this store's connection and returns
  // its rows, each as its columns' text joined by '|'.
  absl::StatusOr<std::vector<std::string>> QueryForTest(const std::string& sql);
  // Test-only: the EXPLAIN QUERY PLAN of the statements Dequeue runs (the
  // expired-lease sweep and the selection, with or without a job_types
  // filter), one line per plan step.
  absl::StatusOr<std::vector<std::string>> DequeuePlanForTest(
      bool filter_job_types);

 private:
  SqliteJobStore(std::unique_ptr<SqliteConnection> connection,
                 const SqliteOptions& options);

  const BackoffPolicy backoff_;
  const int64_t max_pending_per_queue_;  // 0: no limit

  absl::Mutex mu_;
  // State below is protected by mu_.
  // The connection and its cached statements; every use holds mu_.
  const std::unique_ptr<SqliteConnection> connection_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_SQLITE_JOB_STORE_H_
