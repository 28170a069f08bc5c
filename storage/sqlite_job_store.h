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
//
// Group commit. Write calls (every method that may change the file) that
// arrive while another group is being committed queue up, and the next
// group carries all of them, up to SqliteOptions::max_group_size, in one
// BEGIN IMMEDIATE ... COMMIT: one sync of the WAL for the whole group
// instead of one per call. Each call runs inside its own SAVEPOINT, so a
// call that fails on its own (a stale lease, a claimed tick, a lost
// compare-and-set) has its changes rolled back and gets its own error,
// while the others commit. A call returns only after the COMMIT that covers
// it returned (synchronous=FULL: after the sync). When BEGIN or COMMIT
// fails, or an error ends the transaction midway (an I/O error, a full
// disk), every call of the group fails with that error and none of their
// changes is stored. Calls in a group run in the order they arrived, each
// seeing the changes of those before it, as if they had run one by one.
#ifndef ADJUTANT_STORAGE_SQLITE_JOB_STORE_H_
#define ADJUTANT_STORAGE_SQLITE_JOB_STORE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
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
  // Most write calls one transaction carries (group commit, see
  // SqliteJobStore), >= 1. 1: every call its own transaction and sync.
  int max_group_size = 256;
  // Longest the writer thread waits, with calls queued, for WriteTogether
  // calls to return before it starts the next group anyway: a bound on
  // what holds that overlap without a gap can cost the writes queued
  // before them. The calls a WriteTogether makes after it then go to the
  // next group.
  absl::Duration max_write_together_wait = absl::Milliseconds(1);
  // Enqueue refuses (RESOURCE_EXHAUSTED, QueueFullError in job.h) a call
  // that would leave a queue holding more than this many pending (PENDING
  // or LEASED) jobs; 0: no limit. The count is exact: the table
  // queue_counts holds it per queue, kept by triggers on `jobs` in the
  // transaction of every write (schema version 4), so the check reads one
  // row. ApplyCronTransition (a fired tick) and RequeueJob are counted but
  // never refused. Default 0.
  int64_t max_pending_per_queue = 0;
};

// Thread-safe. Two SQLite connections serve the calls:
//  * the write connection runs every write call, one group at a time. A
//    call that finds no other queued or in flight runs alone, at once, on
//    its caller's thread. Otherwise it queues and its caller sleeps; a
//    writer thread of the store's own takes every call queued (up to
//    max_group_size) once the group in flight is done, runs them in one
//    transaction, answers them all after the COMMIT, and takes the calls
//    that queued meanwhile. An asynchronous call (EnqueueAsync,
//    DequeueAsync, AckAsync, AckBatchAsync) always queues, and its caller goes
//    on: once its group committed, the writer thread hands it to an answer
//    thread of the store's own, which calls its `done` while the writer
//    thread goes on with the next group: under load no thread sleeps per
//    call and none is woken to answer it, one wake-up per group. The writer
//    is a dedicated thread rather than a leader chosen among the callers
//    (leveldb's DBImpl::Write): the next group starts at once, without
//    waiting for the wake-up of a sleeping caller to lead it, which on a
//    busy machine costs more than the fsync.
//  * the read connection runs the reads (GetJob, ListJobs, QueueStatistics,
//    NextAvailableTime, HighestTerm, GetCron, ListCrons, DueCrons,
//    NextCronFireTime) under a mutex of its own: WAL lets it read the last
//    committed state while a group is being written and synced, so reads
//    never wait for a commit's sync. A read that starts after a write call
//    returned sees that write.
class SqliteJobStore final : public JobStore {
 public:
  // The PRAGMA application_id of an Adjutant database ("ADJT").
  static constexpr int32_t kApplicationId = 0x41444A54;
  // The schema version this build writes and reads (PRAGMA user_version).
  static constexpr int kSchemaVersion = 5;

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
  // Commits the write calls still queued and stops the writer thread, then
  // Checkpoint(), then closes both connections. A clean stop leaves the
  // database file holding everything and the -wal file empty (or, when this
  // was the file's last connection, removed by SQLite).
  // REQUIRES: no call starts once destruction has begun.
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
  // One write call: the batch shares its group's transaction and sync.
  absl::StatusOr<std::vector<AckResult>> AckBatch(
      const std::vector<AckItem>& items, absl::Time now) override;
  // The *Async writes queue for the writer thread, never run on the
  // caller's, and call `done` on the answer thread after the COMMIT of
  // their group.
  bool WritesAsynchronously() const override { return true; }
  // The writer thread starts no group while `calls` runs, for up to
  // SqliteOptions::max_write_together_wait (a caller with no other queued
  // still runs its own group at once, see above).
  void WriteTogether(absl::FunctionRef<void()> calls) override;
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

  // Test-only: runs one SQL statement on this store's connection and returns
  // its rows, each as its columns' text joined by '|'.
  absl::StatusOr<std::vector<std::string>> QueryForTest(const std::string& sql);
  // Test-only: the EXPLAIN QUERY PLAN of the statements Dequeue runs (the
  // expired-lease sweep and the selection, with or without a job_types
  // filter), one line per plan step.
  absl::StatusOr<std::vector<std::string>> DequeuePlanForTest(
      bool filter_job_types);
  // Test-only: QueryForTest on the read connection.
  absl::StatusOr<std::vector<std::string>> QueryReaderForTest(
      const std::string& sql);
  // Test-only: from now on the writer thread calls `hook` with the group's
  // size
  // after every call of a group ran and before its COMMIT, holding no lock
  // that keeps other callers from queueing (they queue for the next group).
  // Set it while no write call runs; empty: none.
  void SetBeforeCommitHookForTest(std::function<void(int group_size)> hook);
  // Test-only: waits until `n` write calls are queued behind the group
  // being committed (or, with none in flight, in all); false if `timeout`
  // (real time) passed first.
  bool AwaitQueuedWritesForTest(
      int n, absl::Duration timeout = absl::InfiniteDuration());
  // Test-only: waits until the writer thread has ended (the destructor,
  // running on another thread, stops it before the answer thread).
  void AwaitWriterEndedForTest();
  // Test-only: COMMITs of write transactions on the write connection since
  // Open (counted by sqlite3_commit_hook, which runs as a COMMIT starts: one
  // that then fails counts too).
  int64_t CommitsForTest() const { return commits_.load(); }

 private:
  // One write call: its body, and its outcome once its group committed.
  struct Write;
  using WriteBody = absl::FunctionRef<absl::Status(SqliteConnection&)>;
  using OwnedWriteBody = absl::AnyInvocable<absl::Status(SqliteConnection&)>;
  using WriteDone = absl::AnyInvocable<void(absl::Status) &&>;

  SqliteJobStore(std::unique_ptr<SqliteConnection> connection,
                 std::unique_ptr<SqliteConnection> reader,
                 const SqliteOptions& options);

  // Runs `body` as one call of a group commit (see the class comment) and
  // returns its outcome: the body's error, or the group's, or OK once the
  // COMMIT covering it returned. `body` runs on the writer thread or the
  // caller's, inside a write transaction, and must write its results only
  // into variables the caller reads after RunWrite returns.
  absl::Status RunWrite(WriteBody body) ABSL_LOCKS_EXCLUDED(queue_mu_, mu_);
  // Queues `body` for the writer thread (never runs it on the caller's)
  // and returns; `done` gets what RunWrite would return, on the answer
  // thread, with no lock held.
  void RunWriteAsync(OwnedWriteBody body, WriteDone done)
      ABSL_LOCKS_EXCLUDED(queue_mu_, mu_);
  // RunWriteAsync for a call whose body fills in a T: `body(c, &t)`, and
  // `done` gets t once the write is durable, or the error.
  template <typename T, typename Body>
  void RunWriteAsyncFor(Body body, Done<T> done)
      ABSL_LOCKS_EXCLUDED(queue_mu_, mu_);
  // The bodies of Enqueue, Dequeue and AckBatch, shared by their *Async
  // versions.
  absl::Status EnqueueBody(SqliteConnection& c, const std::vector<NewJob>& jobs,
                           absl::Time now, std::vector<EnqueueResult>* results);
  static absl::Status DequeueBody(SqliteConnection& c,
                                  const DequeueOptions& options, absl::Time now,
                                  std::vector<Lease>* leases);
  static absl::Status AckBody(SqliteConnection& c,
                              const std::vector<AckItem>& items, absl::Time now,
                              std::vector<AckResult>* results);
  // Commits the first `size` queued calls as one group (queue_mu_ released
  // meanwhile), answers them and pops them, the asynchronous ones by
  // handing them to the answer thread. REQUIRES: no group in flight, at
  // least `size` calls queued.
  void CommitFront(size_t size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The writer thread: commits the queued groups until stopping_ and no
  // call is left.
  void WriterLoop() ABSL_LOCKS_EXCLUDED(queue_mu_, mu_);
  // The answer thread: runs the `done` of the asynchronous calls of each
  // committed group, in commit order, until answers_stopping_ and none is
  // left.
  void AnswerLoop() ABSL_LOCKS_EXCLUDED(answer_mu_);
  // Runs `group` in one transaction; one outcome per call. Notes in
  // write_trouble_ whether the write connection's latest write failed.
  std::vector<absl::Status> CommitGroup(const std::vector<Write*>& group)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<absl::Status> RunGroup(const std::vector<Write*>& group)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BackoffPolicy backoff_;
  const int64_t max_pending_per_queue_;  // 0: no limit
  const int max_group_size_;
  const absl::Duration max_write_together_wait_;
  // COMMITs of write transactions begun (sqlite3_commit_hook).
  std::atomic<int64_t> commits_{0};
  // The write connection's write_trouble() is not OK: its latest write
  // failed. Set after each group under mu_; read by Ping without mu_, so
  // that a health check never waits for a group's fsync.
  std::atomic<bool> write_trouble_{false};

  absl::Mutex queue_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  // State below is protected by queue_mu_.
  // Write calls waiting or being committed, in arrival order; the group in
  // flight is at the front.
  std::deque<Write*> writers_ ABSL_GUARDED_BY(queue_mu_);
  // The size of the group in flight (0: none).
  size_t committing_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // Set by the destructor: the writer thread ends once the queue is empty.
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  // WriteTogether calls running: the writer thread waits (up to
  // max_write_together_wait_) before it starts a group.
  int holds_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // Set by the writer thread as it ends: an asynchronous call made after
  // (from a `done` the answer thread runs while the store closes) is
  // answered UNAVAILABLE at once.
  bool writer_ended_ ABSL_GUARDED_BY(queue_mu_) = false;

  // Held while a group runs and commits (by the writer thread or a caller
  // running its own), and by the few other users of the write connection
  // (Checkpoint, test hooks).
  absl::Mutex mu_;
  // State below is protected by mu_.
  // The write connection and its cached statements; every use holds mu_.
  const std::unique_ptr<SqliteConnection> connection_ ABSL_PT_GUARDED_BY(mu_);
  std::function<void(int)> before_commit_hook_ ABSL_GUARDED_BY(mu_);

  absl::Mutex read_mu_;
  // State below is protected by read_mu_.
  // The read connection (PRAGMA query_only); destroyed before connection_,
  // so that the write connection is the file's last and checkpoints it.
  const std::unique_ptr<SqliteConnection> reader_ ABSL_PT_GUARDED_BY(read_mu_);

  absl::Mutex answer_mu_ ABSL_ACQUIRED_AFTER(queue_mu_);
  // State below is protected by answer_mu_.
  // Asynchronous calls committed (or failed) and not yet answered, in
  // commit order.
  std::deque<std::unique_ptr<Write>> answers_ ABSL_GUARDED_BY(answer_mu_);
  // Set by the destructor once the writer thread ended.
  bool answers_stopping_ ABSL_GUARDED_BY(answer_mu_) = false;

  // Run WriterLoop and AnswerLoop; started by the constructor, joined by
  // the destructor.
  std::thread writer_;
  std::thread answerer_;
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_SQLITE_JOB_STORE_H_
