#include "storage/sqlite_job_store.h"

#include <pthread.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/ids.h"
#include "storage/sqlite_connection.h"
#include "storage/status_macros.h"

namespace adjutant {
namespace {

// ---- Schema ---------------------------------------------------------------
//
// kMigrations[v] takes a database from schema version v to v + 1. Append
// only: a released migration never changes.
//
// Times are int64 nanoseconds since the Unix epoch (sqlite_connection.h);
// NULL is "unset" (InfinitePast) except in crons.next_fire_time and
// cron_claims.tick, NOT NULL columns where INT64_MIN stands for it.
// Job states and cron policies are the numbers of the enums in job.h.
constexpr const char* kMigrations[] = {
    // 0 -> 1: jobs, terms, schedules and their tick claims.
    R"sql(
CREATE TABLE jobs (
  -- Enqueue order; AUTOINCREMENT so that a number is never handed out twice.
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  queue TEXT NOT NULL,
  type TEXT NOT NULL,
  payload BLOB NOT NULL,
  priority INTEGER NOT NULL,
  state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 5),
  attempts INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  run_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  lease_expires_at INTEGER,  -- set while LEASED
  lease_token TEXT NOT NULL,
  worker_id TEXT NOT NULL,
  cron_name TEXT NOT NULL,
  cron_tick_time INTEGER
);
-- Dequeue walks this in order and stops after max_jobs rows; `type` rides
-- along so that a job_types filter is checked without reading the table.
CREATE INDEX jobs_dequeue ON jobs (queue, priority DESC, run_at, seq, type)
  WHERE state = 1;
-- The next delayed job of a queue (NextAvailableTime).
CREATE INDEX jobs_pending_run_at ON jobs (queue, run_at) WHERE state = 1;
-- Expired leases of a queue (Dequeue, ExpireLeases, NextAvailableTime).
CREATE INDEX jobs_lease_expiry ON jobs (queue, lease_expires_at)
  WHERE state = 2;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key)
  WHERE idempotency_key <> '';
-- ListJobs by queue or by state, in seq order (the rowid ends each entry).
CREATE INDEX jobs_queue_seq ON jobs (queue);
CREATE INDEX jobs_state_seq ON jobs (state);

-- Small durable facts: 'highest_term' (a uint64 stored as its int64 bits).
CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE crons (
  name TEXT PRIMARY KEY,
  schedule TEXT NOT NULL,
  timezone TEXT NOT NULL,
  job_queue TEXT NOT NULL,
  job_type TEXT NOT NULL,
  job_payload BLOB NOT NULL,
  job_priority INTEGER NOT NULL,
  job_max_attempts INTEGER NOT NULL,
  misfire_policy INTEGER NOT NULL,
  catchup_window_ns INTEGER NOT NULL,
  overlap_policy INTEGER NOT NULL,
  paused INTEGER NOT NULL,
  next_fire_time INTEGER NOT NULL,
  last_fire_time INTEGER,
  last_job_id TEXT NOT NULL,
  fired_count INTEGER NOT NULL,
  missed_count INTEGER NOT NULL,
  overlap_skipped_count INTEGER NOT NULL,
  waiting_tick_time INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX crons_next_fire ON crons (next_fire_time) WHERE paused = 0;
CREATE INDEX crons_waiting ON crons (next_fire_time)
  WHERE paused = 0 AND waiting_tick_time IS NOT NULL;

-- A tick once claimed is never fired again: the primary key is the
-- (schedule, tick) uniqueness that makes firing exactly-once.
CREATE TABLE cron_claims (
  name TEXT NOT NULL REFERENCES crons (name) ON DELETE CASCADE,
  tick INTEGER NOT NULL,
  term INTEGER NOT NULL,    -- the leadership term that fired it
  job_id TEXT NOT NULL,     -- the job it enqueued, '' if none
  PRIMARY KEY (name, tick)
) WITHOUT ROWID;
)sql",
    // 1 -> 2: an index that a job_types filter of Dequeue can seek, one
    // (queue, type, priority) range at a time, instead of walking every
    // pending job of the queue to test its type.
    R"sql(
CREATE INDEX jobs_dequeue_by_type ON jobs (queue, type, priority DESC, run_at,
  seq) WHERE state = 1;
)sql",
    // 2 -> 3: finished jobs by state and finish time (updated_at), so that
    // retention deletes the oldest of them without reading pending ones.
    R"sql(
CREATE INDEX jobs_finished ON jobs (state, updated_at) WHERE state >= 3;
)sql",
    // 3 -> 4: each queue's pending (PENDING or LEASED) jobs, counted, for
    // the per-queue limit (SqliteOptions::max_pending_per_queue). Triggers
    // keep the count in the transaction of every write; a leased job
    // changing to PENDING and back costs nothing. A queue with none has no
    // row.
    R"sql(
CREATE TABLE queue_counts (
  queue TEXT PRIMARY KEY,
  pending INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO queue_counts (queue, pending)
  SELECT queue, COUNT(*) FROM jobs WHERE state IN (1, 2) GROUP BY queue;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
  WHEN NEW.state IN (1, 2)
BEGIN
  INSERT INTO queue_counts (queue, pending) VALUES (NEW.queue, 1)
    ON CONFLICT (queue) DO UPDATE SET pending = pending + 1;
END;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
  WHEN OLD.state IN (1, 2)
BEGIN
  UPDATE queue_counts SET pending = pending - 1 WHERE queue = OLD.queue;
  DELETE FROM queue_counts WHERE queue = OLD.queue AND pending <= 0;
END;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state, queue ON jobs
  WHEN (OLD.state IN (1, 2)) <> (NEW.state IN (1, 2))
    OR (OLD.queue <> NEW.queue AND NEW.state IN (1, 2))
BEGIN
  UPDATE queue_counts SET pending = pending - 1
    WHERE queue = OLD.queue AND OLD.state IN (1, 2);
  DELETE FROM queue_counts WHERE queue = OLD.queue AND pending <= 0;
  INSERT INTO queue_counts (queue, pending)
    SELECT NEW.queue, 1 WHERE NEW.state IN (1, 2)
    ON CONFLICT (queue) DO UPDATE SET pending = pending + 1;
END;
)sql",
    // 4 -> 5: the same counts, kept without an upsert. An upsert's DO UPDATE
    // is coded as ON CONFLICT ABORT whatever the outer statement says, and a
    // statement that may abort part-way makes SQLite keep a statement
    // journal: a copy of every page the statement touches, and a walk of
    // that journal when the statement ends, for every row written. The hot
    // writes (kInsertJobSql and the others marked OR FAIL) then run with
    // none: insert the queue's row if it is missing, then count.
    R"sql(
DROP TRIGGER jobs_count_insert;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
  WHEN NEW.state IN (1, 2)
BEGIN
  INSERT INTO queue_counts (queue, pending) SELECT NEW.queue, 0
    WHERE NOT EXISTS (SELECT 1 FROM queue_counts WHERE queue = NEW.queue);
  UPDATE queue_counts SET pending = pending + 1 WHERE queue = NEW.queue;
END;
DROP TRIGGER jobs_count_update;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state, queue ON jobs
  WHEN (OLD.state IN (1, 2)) <> (NEW.state IN (1, 2))
    OR (OLD.queue <> NEW.queue AND NEW.state IN (1, 2))
BEGIN
  UPDATE queue_counts SET pending = pending - 1
    WHERE queue = OLD.queue AND OLD.state IN (1, 2);
  DELETE FROM queue_counts WHERE queue = OLD.queue AND pending <= 0;
  INSERT INTO queue_counts (queue, pending) SELECT NEW.queue, 0
    WHERE NEW.state IN (1, 2)
    AND NOT EXISTS (SELECT 1 FROM queue_counts WHERE queue = NEW.queue);
  UPDATE queue_counts SET pending = pending + 1
    WHERE queue = NEW.queue AND NEW.state IN (1, 2);
END;
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) ==
                  SqliteJobStore::kSchemaVersion,
              "one migration per schema version");

constexpr char kBeginWrite[] = "BEGIN IMMEDIATE";
constexpr char kBeginRead[] = "BEGIN";
constexpr char kHighestTermKey[] = "highest_term";
// How many health probes wrote to the file (SqliteJobStore::Ping).
constexpr char kHealthProbeKey[] = "health_probes";
constexpr char kJobPageTokenPrefix[] = "seq:";
constexpr char kCronPageTokenPrefix[] = "name:";

// ---- Statements -------------------------------------------------------------
//
// The writes of the hot paths (enqueue, lease, ack, lease expiry) say OR
// FAIL: a statement that cannot fail part-way needs no statement journal,
// and SQLite otherwise keeps one for each (a copy of every page it touches).
// FAIL leaves what a failed statement did so far; every write runs inside
// its call's savepoint (RunWrite), and an error fails the call, which rolls
// the whole call back. Never run them in autocommit. The price: on a full
// disk or out of memory SQLite, with no statement journal to undo just the
// statement, rolls back the whole transaction, so every call of the group
// fails (CommitGroup reports it so), where one call alone would have.

#define JOB_COLUMNS                                                       \
  "id, queue, type, payload, priority, state, attempts, max_attempts, "   \
  "run_at, created_at, updated_at, last_error, idempotency_key, "         \
  "lease_expires_at, lease_token, worker_id, cron_name, cron_tick_time, " \
  "seq"

#define CRON_COLUMNS                                                      \
  "name, schedule, timezone, job_queue, job_type, job_payload, "          \
  "job_priority, job_max_attempts, misfire_policy, catchup_window_ns, "   \
  "overlap_policy, paused, next_fire_time, last_fire_time, last_job_id, " \
  "fired_count, missed_count, overlap_skipped_count, waiting_tick_time, " \
  "created_at, updated_at, version"

constexpr char kSelectJobSql[] =
    "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1";
constexpr char kSelectJobStateSql[] =
    "SELECT state, lease_token, lease_expires_at, attempts, max_attempts, "
    "queue, cron_name FROM jobs WHERE id = ?1";
constexpr char kFindIdempotentSql[] =
    "SELECT id FROM jobs WHERE queue = ?1 AND idempotency_key = ?2 "
    "AND idempotency_key <> ''";
constexpr char kInsertJobSql[] =
    "INSERT OR FAIL INTO jobs (id, queue, type, payload, priority, state, "
    "attempts, max_attempts, run_at, created_at, updated_at, last_error, "
    "idempotency_key, lease_expires_at, lease_token, worker_id, cron_name, "
    "cron_tick_time) "
    "VALUES (?1, ?2, ?3, ?4, ?5, 1, 0, ?6, ?7, ?8, ?8, '', ?9, NULL, '', '', "
    "?10, ?11)";

// Ends expired leases: back to PENDING (run_at kept, so the job keeps its
// place in line) or DEAD when no attempts are left.
#define EXPIRE_LEASES_SET                                               \
  "UPDATE OR FAIL jobs SET state = CASE WHEN attempts >= max_attempts " \
  "THEN 4 ELSE 1 END, last_error = 'lease expired', lease_token = '', " \
  "lease_expires_at = NULL, updated_at = ?1 "
constexpr char kExpireQueueLeasesSql[] = EXPIRE_LEASES_SET
    "WHERE state = 2 AND queue = ?2 AND lease_expires_at <= ?1 "
    "RETURNING " JOB_COLUMNS;
constexpr char kExpireAllLeasesSql[] = EXPIRE_LEASES_SET
    "WHERE state = 2 AND lease_expires_at <= ?1 RETURNING " JOB_COLUMNS;
// Whether there is any to end: every Dequeue asks, the answer is nearly
// always no, and a no costs an index probe, where the UPDATE ... RETURNING
// above opens an ephemeral table even for no row.
constexpr char kAnyExpiredQueueLeaseSql[] =
    "SELECT 1 FROM jobs INDEXED BY jobs_lease_expiry "
    "WHERE state = 2 AND queue = ?2 AND lease_expires_at <= ?1 LIMIT 1";
constexpr char kAnyExpiredLeaseSql[] =
    "SELECT 1 FROM jobs INDEXED BY jobs_lease_expiry "
    "WHERE state = 2 AND lease_expires_at <= ?1 LIMIT 1";

// ReleaseLeases: ?1 the job, ?2 the token it was leased under.
constexpr char kReleaseLeaseSql[] =
    "UPDATE OR FAIL jobs SET state = 1, attempts = max(attempts - 1, 0), "
    "lease_token = '', lease_expires_at = NULL, updated_at = ?3 "
    "WHERE id = ?1 AND state = 2 AND lease_token = ?2 RETURNING " JOB_COLUMNS;

// Dequeue selection. One ordered walk of (queue, priority DESC, run_at,
// seq) with `run_at <= now` tested row by row would step over every job not
// yet due that sorts ahead of the first due one (delayed jobs of a higher
// priority), and a job_types filter tested row by row over every job of
// other types. So Dequeue seeks instead, one priority at a time: the next
// lower priority present (one index seek), then the due jobs of that
// priority, a range of the index ordered by (run_at, seq) that ends at the
// first job not yet due. The cost is one seek per distinct priority ahead
// of the jobs it leases, plus the rows it leases; never the queue's size.
// A job_types filter does the same per type on jobs_dequeue_by_type, and
// Dequeue merges the types in C++.
//
// INDEXED BY keeps the planner from preferring jobs_pending_run_at (it has
// no statistics), and fails to prepare, loudly, if an index ever stops
// fitting its query. ?2 is an exclusive upper bound on the priority (int32
// priorities: INT64_MAX stands for "none yet").
constexpr char kNextPrioritySql[] =
    "SELECT priority FROM jobs INDEXED BY jobs_dequeue "
    "WHERE state = 1 AND queue = ?1 AND priority < ?2 "
    "ORDER BY priority DESC LIMIT 1";
constexpr char kDueAtPrioritySql[] =
    "SELECT seq, run_at FROM jobs INDEXED BY jobs_dequeue "
    "WHERE state = 1 AND queue = ?1 AND priority = ?2 AND run_at <= ?3 "
    "ORDER BY run_at, seq LIMIT ?4";
// The same per type: ?5 is the type.
constexpr char kNextPriorityOfTypeSql[] =
    "SELECT priority FROM jobs INDEXED BY jobs_dequeue_by_type "
    "WHERE state = 1 AND queue = ?1 AND type = ?5 AND priority < ?2 "
    "ORDER BY priority DESC LIMIT 1";
constexpr char kDueAtPriorityOfTypeSql[] =
    "SELECT seq, run_at FROM jobs INDEXED BY jobs_dequeue_by_type "
    "WHERE state = 1 AND queue = ?1 AND type = ?5 AND priority = ?2 "
    "AND run_at <= ?3 ORDER BY run_at, seq LIMIT ?4";
// A lease is an UPDATE and then a read of the row by its rowid, not an
// UPDATE ... RETURNING: SQLite runs RETURNING through an ephemeral table,
// opened and closed (a B-tree and a pager of its own) on every execution,
// which cost a fifth of a lease.
constexpr char kLeaseJobSql[] =
    "UPDATE OR FAIL jobs SET state = 2, attempts = attempts + 1, "
    "lease_token = ?2, lease_expires_at = ?3, worker_id = ?4, "
    "updated_at = ?5 WHERE seq = ?1";
constexpr char kJobBySeqSql[] =
    "SELECT " JOB_COLUMNS " FROM jobs WHERE seq = ?1";

constexpr char kAckSql[] =
    "UPDATE OR FAIL jobs SET state = 3, lease_expires_at = NULL, "
    "updated_at = ?2 WHERE id = ?1";
constexpr char kNackSql[] =
    "UPDATE jobs SET state = ?2, last_error = ?3, run_at = COALESCE(?4, "
    "run_at), lease_token = '', lease_expires_at = NULL, updated_at = ?5 "
    "WHERE id = ?1 RETURNING " JOB_COLUMNS;
constexpr char kExtendLeaseSql[] =
    "UPDATE jobs SET lease_expires_at = ?2, updated_at = ?3 WHERE id = ?1";
constexpr char kCancelJobSql[] =
    "UPDATE jobs SET state = 5, lease_token = '', lease_expires_at = NULL, "
    "updated_at = ?2 WHERE id = ?1 AND state IN (1, 2) RETURNING " JOB_COLUMNS;
constexpr char kRequeueJobSql[] =
    "UPDATE jobs SET state = 1, attempts = 0, run_at = ?2, updated_at = ?2, "
    "lease_token = '', lease_expires_at = NULL "
    "WHERE id = ?1 AND state IN (4, 5) RETURNING " JOB_COLUMNS;

// Retention: the oldest finished jobs of one state, finished before ?1, at
// most ?2 of them. SQLite uses a partial index only when the query repeats
// its condition word for word (it does not infer `state >= 3` from `state =
// 3`), hence both; INDEXED BY fails to prepare, loudly, if that ever breaks.
#define PRUNE_SQL(state)                                            \
  "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs INDEXED BY " \
  "jobs_finished WHERE state >= 3 AND state = " state               \
  " AND updated_at < "                                              \
  "?1 ORDER BY updated_at LIMIT ?2)"
constexpr char kPruneSucceededSql[] = PRUNE_SQL("3");
constexpr char kPruneDeadSql[] = PRUNE_SQL("4");
constexpr char kPruneCancelledSql[] = PRUNE_SQL("5");

// ListJobs: ?1 after this seq, ?2 page size + 1, ?3 queue or state, ?4 state.
constexpr char kListJobsSql[] =
    "SELECT " JOB_COLUMNS " FROM jobs WHERE seq > ?1 ORDER BY seq LIMIT ?2";
constexpr char kListJobsByQueueSql[] =
    "SELECT " JOB_COLUMNS
    " FROM jobs WHERE queue = ?3 AND seq > ?1 ORDER BY seq LIMIT ?2";
constexpr char kListJobsByStateSql[] =
    "SELECT " JOB_COLUMNS
    " FROM jobs WHERE state = ?3 AND seq > ?1 ORDER BY seq LIMIT ?2";
constexpr char kListJobsByQueueAndStateSql[] =
    "SELECT " JOB_COLUMNS
    " FROM jobs WHERE queue = ?3 AND state = ?4 AND seq > ?1 "
    "ORDER BY seq LIMIT ?2";

constexpr char kNextRunAtInQueueSql[] =
    "SELECT MIN(run_at) FROM jobs WHERE state = 1 AND queue = ?1 "
    "AND run_at > ?2";
constexpr char kNextExpiryInQueueSql[] =
    "SELECT MIN(lease_expires_at) FROM jobs WHERE state = 2 AND queue = ?1 "
    "AND lease_expires_at > ?2";
// Across queues: visit each queue with a pending (or leased) job through the
// partial index, one seek per queue, rather than scanning every job (left
// alone, the planner would walk jobs_state_seq to find MIN(queue)).
constexpr char kNextRunAtSql[] =
    "WITH RECURSIVE queues (q) AS ("
    " SELECT (SELECT MIN(queue) FROM jobs INDEXED BY jobs_pending_run_at"
    " WHERE state = 1)"
    " UNION ALL"
    " SELECT (SELECT MIN(queue) FROM jobs INDEXED BY jobs_pending_run_at"
    " WHERE state = 1 AND queue > q)"
    " FROM queues WHERE q IS NOT NULL) "
    "SELECT MIN((SELECT MIN(run_at) FROM jobs INDEXED BY jobs_pending_run_at"
    " WHERE state = 1 AND queue = q AND run_at > ?1)) "
    "FROM queues WHERE q IS NOT NULL";
constexpr char kNextExpirySql[] =
    "WITH RECURSIVE queues (q) AS ("
    " SELECT (SELECT MIN(queue) FROM jobs INDEXED BY jobs_lease_expiry"
    " WHERE state = 2)"
    " UNION ALL"
    " SELECT (SELECT MIN(queue) FROM jobs INDEXED BY jobs_lease_expiry"
    " WHERE state = 2 AND queue > q)"
    " FROM queues WHERE q IS NOT NULL) "
    "SELECT MIN((SELECT MIN(lease_expires_at) FROM jobs INDEXED BY "
    "jobs_lease_expiry WHERE state = 2 AND queue = q AND lease_expires_at > "
    "?1)) FROM queues WHERE q IS NOT NULL";

constexpr char kBumpHealthProbeSql[] =
    "INSERT INTO meta (key, value) VALUES (?1, 1) "
    "ON CONFLICT (key) DO UPDATE SET value = value + 1";
constexpr char kSelectTermSql[] = "SELECT value FROM meta WHERE key = ?1";
constexpr char kUpsertTermSql[] =
    "INSERT INTO meta (key, value) VALUES (?1, ?2) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value";

constexpr char kSelectCronSql[] =
    "SELECT " CRON_COLUMNS " FROM crons WHERE name = ?1";
constexpr char kInsertCronSql[] =
    "INSERT INTO crons (" CRON_COLUMNS
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
    "?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)";
constexpr char kUpdateCronSql[] =
    "UPDATE crons SET schedule = ?2, timezone = ?3, job_queue = ?4, "
    "job_type = ?5, job_payload = ?6, job_priority = ?7, "
    "job_max_attempts = ?8, misfire_policy = ?9, catchup_window_ns = ?10, "
    "overlap_policy = ?11, paused = ?12, next_fire_time = ?13, "
    "last_fire_time = ?14, last_job_id = ?15, fired_count = ?16, "
    "missed_count = ?17, overlap_skipped_count = ?18, "
    "waiting_tick_time = ?19, created_at = ?20, updated_at = ?21, "
    "version = ?22 WHERE name = ?1";
constexpr char kDeleteCronSql[] =
    "DELETE FROM crons WHERE name = ?1 RETURNING last_job_id";
// The job of a tick fired ahead whose instant has not come (never leased:
// not a retry waiting for its run_at): a deleted schedule's last.
constexpr char kCancelFiredAheadSql[] =
    "UPDATE jobs SET state = 5, updated_at = ?2 "
    "WHERE id = ?1 AND state = 1 AND attempts = 0 AND cron_tick_time > ?2";
constexpr char kListCronsSql[] =
    "SELECT " CRON_COLUMNS " FROM crons WHERE name > ?1 ORDER BY name LIMIT ?2";
constexpr char kDueCronsSql[] =
    "SELECT " CRON_COLUMNS
    " FROM crons WHERE paused = 0 AND next_fire_time <= ?1 "
    "UNION "
    "SELECT " CRON_COLUMNS
    " FROM crons WHERE paused = 0 AND waiting_tick_time IS NOT NULL "
    "ORDER BY next_fire_time, name LIMIT ?2";
constexpr char kNextCronFireSql[] =
    "SELECT MIN(next_fire_time) FROM crons "
    "WHERE paused = 0 AND next_fire_time > ?1";
constexpr char kClaimTickSql[] =
    "INSERT INTO cron_claims (name, tick, term, job_id) "
    "VALUES (?1, ?2, ?3, '') ON CONFLICT DO NOTHING";
constexpr char kSetClaimJobSql[] =
    "UPDATE cron_claims SET job_id = ?3 WHERE name = ?1 AND tick = ?2";
constexpr char kForgetClaimsSql[] =
    "DELETE FROM cron_claims WHERE name = ?1 AND tick < ?2";
constexpr char kUpdateCronStateSql[] =
    "UPDATE crons SET next_fire_time = ?2, last_fire_time = ?3, "
    "last_job_id = ?4, fired_count = ?5, missed_count = ?6, "
    "overlap_skipped_count = ?7, waiting_tick_time = ?8, "
    "version = version + 1 WHERE name = ?1";

// ---- Rows -------------------------------------------------------------------

// Reads a row of JOB_COLUMNS.
Job ReadJob(const SqliteStatement& row) {
  Job job;
  job.id = row.ColumnString(0);
  job.queue = row.ColumnString(1);
  job.type = row.ColumnString(2);
  job.payload = row.ColumnString(3);
  job.priority = static_cast<int32_t>(row.ColumnInt(4));
  job.state = static_cast<JobState>(row.ColumnInt(5));
  job.attempts = static_cast<int32_t>(row.ColumnInt(6));
  job.max_attempts = static_cast<int32_t>(row.ColumnInt(7));
  job.run_at = row.ColumnTime(8);
  job.created_at = row.ColumnTime(9);
  job.updated_at = row.ColumnTime(10);
  job.last_error = row.ColumnString(11);
  job.idempotency_key = row.ColumnString(12);
  job.lease_expires_at = row.ColumnTime(13);
  job.lease_token = row.ColumnString(14);
  job.worker_id = row.ColumnString(15);
  job.cron_name = row.ColumnString(16);
  job.cron_tick_time = row.ColumnTime(17);
  job.seq = row.ColumnInt(18);
  return job;
}

// Reads a row of CRON_COLUMNS.
CronRecord ReadCron(const SqliteStatement& row) {
  CronRecord cron;
  CronDefinition& d = cron.definition;
  d.name = row.ColumnString(0);
  d.schedule = row.ColumnString(1);
  d.timezone = row.ColumnString(2);
  d.job.queue = row.ColumnString(3);
  d.job.type = row.ColumnString(4);
  d.job.payload = row.ColumnString(5);
  d.job.priority = static_cast<int32_t>(row.ColumnInt(6));
  d.job.max_attempts = static_cast<int32_t>(row.ColumnInt(7));
  d.misfire_policy = static_cast<MisfirePolicy>(row.ColumnInt(8));
  d.catchup_window = DecodeDuration(row.ColumnInt(9));
  d.overlap_policy = static_cast<OverlapPolicy>(row.ColumnInt(10));
  d.paused = row.ColumnInt(11) != 0;
  CronState& s = cron.state;
  s.next_fire_time = DecodeOrderedTime(row.ColumnInt(12));
  s.last_fire_time = row.ColumnTime(13);
  s.last_job_id = row.ColumnString(14);
  s.fired_count = row.ColumnInt(15);
  s.missed_count = row.ColumnInt(16);
  s.overlap_skipped_count = row.ColumnInt(17);
  s.waiting_tick_time = row.ColumnTime(18);
  cron.created_at = row.ColumnTime(19);
  cron.updated_at = row.ColumnTime(20);
  cron.version = row.ColumnInt(21);
  return cron;
}

// Binds the 22 parameters of kInsertCronSql / kUpdateCronSql.
void BindCron(SqliteStatement& stmt, const CronDefinition& d,
              const CronState& s, absl::Time created_at, absl::Time updated_at,
              int64_t version) {
  stmt.BindText(1, d.name);
  stmt.BindText(2, d.schedule);
  stmt.BindText(3, d.timezone);
  stmt.BindText(4, d.job.queue);
  stmt.BindText(5, d.job.type);
  stmt.BindBlob(6, d.job.payload);
  stmt.BindInt(7, d.job.priority);
  stmt.BindInt(8, d.job.max_attempts);
  stmt.BindInt(9, static_cast<int64_t>(d.misfire_policy));
  stmt.BindInt(10, EncodeDuration(d.catchup_window));
  stmt.BindInt(11, static_cast<int64_t>(d.overlap_policy));
  stmt.BindInt(12, d.paused ? 1 : 0);
  stmt.BindInt(13, EncodeOrderedTime(s.next_fire_time));
  stmt.BindTime(14, s.last_fire_time);
  stmt.BindText(15, s.last_job_id);
  stmt.BindInt(16, s.fired_count);
  stmt.BindInt(17, s.missed_count);
  stmt.BindInt(18, s.overlap_skipped_count);
  stmt.BindTime(19, s.waiting_tick_time);
  stmt.BindTime(20, created_at);
  stmt.BindTime(21, updated_at);
  stmt.BindInt(22, version);
}

// A time as it reads back after being stored (the encoding saturates).
absl::Time AsStored(absl::Time t) {
  if (t == absl::InfinitePast()) return t;
  return DecodeTime(EncodeFiniteTime(t));
}

// Compares lease tokens in time independent of where they differ.
bool SameToken(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

absl::Status JobNotFound(const std::string& job_id) {
  return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
}

absl::Status CronNotFound(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("schedule ", name, " not found"));
}

// ---- Operations inside a transaction ----------------------------------------

absl::StatusOr<Job> LoadJob(SqliteConnection& c, const std::string& job_id) {
  ASSIGN_OR_RETURN(SqliteStatement stmt, c.Prepare(kSelectJobSql));
  stmt.BindText(1, job_id);
  ASSIGN_OR_RETURN(bool found, stmt.Step());
  if (!found) return JobNotFound(job_id);
  return ReadJob(stmt);
}

absl::StatusOr<CronRecord> LoadCron(SqliteConnection& c,
                                    const std::string& name) {
  ASSIGN_OR_RETURN(SqliteStatement stmt, c.Prepare(kSelectCronSql));
  stmt.BindText(1, name);
  ASSIGN_OR_RETURN(bool found, stmt.Step());
  if (!found) return CronNotFound(name);
  return ReadCron(stmt);
}

// Runs a statement whose rows are JOB_COLUMNS and appends them to `out` (if
// non-null).
absl::Status CollectJobs(SqliteStatement& stmt, std::vector<Job>* out) {
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return absl::OkStatus();
    if (out != nullptr) out->push_back(ReadJob(stmt));
  }
}

// Whether a lease of `queue` (empty: of any queue) expired by `now`, as `c`
// sees the jobs.
absl::StatusOr<bool> AnyExpiredLease(SqliteConnection& c,
                                     const std::string& queue, absl::Time now) {
  ASSIGN_OR_RETURN(SqliteStatement any,
                   c.Prepare(queue.empty() ? kAnyExpiredLeaseSql
                                           : kAnyExpiredQueueLeaseSql));
  any.BindTime(1, now);
  if (!queue.empty()) any.BindText(2, queue);
  return any.Step();
}

// Ends the leases of `queue` (empty: every queue) that expired by `now`.
absl::Status ExpireLeasesIn(SqliteConnection& c, const std::string& queue,
                            absl::Time now, std::vector<Job>* expired) {
  ASSIGN_OR_RETURN(bool any, AnyExpiredLease(c, queue, now));
  if (!any) return absl::OkStatus();
  ASSIGN_OR_RETURN(
      SqliteStatement stmt,
      c.Prepare(queue.empty() ? kExpireAllLeasesSql : kExpireQueueLeasesSql));
  stmt.BindTime(1, now);
  if (!queue.empty()) stmt.BindText(2, queue);
  return CollectJobs(stmt, expired);
}

absl::StatusOr<EnqueueResult> InsertJob(SqliteConnection& c, const NewJob& job,
                                        absl::Time now) {
  EnqueueResult result;
  if (!job.idempotency_key.empty()) {
    ASSIGN_OR_RETURN(SqliteStatement find, c.Prepare(kFindIdempotentSql));
    find.BindText(1, job.queue);
    find.BindText(2, job.idempotency_key);
    ASSIGN_OR_RETURN(bool found, find.Step());
    if (found) {
      result.job_id = find.ColumnString(0);
      result.duplicate = true;
      return result;
    }
  }
  result.job_id = NewJobId();
  ASSIGN_OR_RETURN(SqliteStatement insert, c.Prepare(kInsertJobSql));
  insert.BindText(1, result.job_id);
  insert.BindText(2, job.queue);
  insert.BindText(3, job.type);
  insert.BindBlob(4, job.payload);
  insert.BindInt(5, job.priority);
  insert.BindInt(6, job.max_attempts);
  insert.BindTime(7, job.run_at == absl::InfinitePast() ? now : job.run_at);
  insert.BindTime(8, now);
  insert.BindText(9, job.idempotency_key);
  insert.BindText(10, job.cron_name);
  insert.BindTime(11, job.cron_tick_time);
  RETURN_IF_ERROR(insert.Run());
  return result;
}

// A PENDING job that Dequeue may lease; sorts in dequeue order.
struct DueJob {
  int64_t priority = 0;
  int64_t run_at = 0;  // as stored
  int64_t seq = 0;

  bool operator<(const DueJob& o) const {
    return std::make_tuple(-priority, run_at, seq) <
           std::make_tuple(-o.priority, o.run_at, o.seq);
  }
};

// Appends to `out`, in dequeue order, up to `limit` PENDING jobs of `queue`
// (of `*type`, if not null) that are due at `now`: priority by priority,
// each with two index seeks (see kNextPrioritySql).
absl::Status FindDueJobs(SqliteConnection& c, const std::string& queue,
                         const std::string* type, absl::Time now, size_t limit,
                         std::vector<DueJob>& out) {
  int64_t below = std::numeric_limits<int64_t>::max();
  size_t found = 0;
  while (found < limit) {
    int64_t priority = 0;
    {
      ASSIGN_OR_RETURN(SqliteStatement next,
                       c.Prepare(type == nullptr ? kNextPrioritySql
                                                 : kNextPriorityOfTypeSql));
      next.BindText(1, queue);
      next.BindInt(2, below);
      if (type != nullptr) next.BindText(5, *type);
      ASSIGN_OR_RETURN(bool row, next.Step());
      if (!row) break;  // no lower priority left
      priority = next.ColumnInt(0);
    }
    ASSIGN_OR_RETURN(SqliteStatement due,
                     c.Prepare(type == nullptr ? kDueAtPrioritySql
                                               : kDueAtPriorityOfTypeSql));
    due.BindText(1, queue);
    due.BindInt(2, priority);
    due.BindTime(3, now);
    due.BindInt(4, static_cast<int64_t>(limit - found));
    if (type != nullptr) due.BindText(5, *type);
    while (true) {
      ASSIGN_OR_RETURN(bool row, due.Step());
      if (!row) break;
      out.push_back({priority, due.ColumnInt(1), due.ColumnInt(0)});
      ++found;
    }
    below = priority;
  }
  return absl::OkStatus();
}

struct LeaseCheck {
  bool already_acked = false;  // SUCCEEDED under this very token
  int32_t attempts = 0;
  int32_t max_attempts = 0;
  std::string queue;
  std::string cron_name;
};

// OK if `job_id` is LEASED under `token` and its lease has not expired at
// `now`; also OK, with already_acked, if it SUCCEEDED under `token`.
absl::StatusOr<LeaseCheck> CheckLease(SqliteConnection& c,
                                      const std::string& job_id,
                                      const std::string& token,
                                      absl::Time now) {
  ASSIGN_OR_RETURN(SqliteStatement stmt, c.Prepare(kSelectJobStateSql));
  stmt.BindText(1, job_id);
  ASSIGN_OR_RETURN(bool found, stmt.Step());
  if (!found) return JobNotFound(job_id);
  auto state = static_cast<JobState>(stmt.ColumnInt(0));
  bool token_matches = SameToken(stmt.ColumnString(1), token);
  LeaseCheck check;
  check.attempts = static_cast<int32_t>(stmt.ColumnInt(3));
  check.max_attempts = static_cast<int32_t>(stmt.ColumnInt(4));
  check.queue = stmt.ColumnString(5);
  check.cron_name = stmt.ColumnString(6);
  if (state == JobState::kSucceeded && token_matches && !token.empty()) {
    check.already_acked = true;
    return check;
  }
  if (state != JobState::kLeased) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " is ", JobStateName(state), ", not LEASED"));
  }
  if (!token_matches) {
    return absl::FailedPreconditionError(
        absl::StrCat("lease_token: not the current lease of job ", job_id,
                     " (wrong or stale)"));
  }
  absl::Time expires_at = stmt.ColumnTime(2);
  if (expires_at <= now) {
    return absl::FailedPreconditionError(
        absl::StrCat("the lease of job ", job_id, " expired at ",
                     absl::FormatTime(expires_at, absl::UTCTimeZone())));
  }
  return check;
}

absl::StatusOr<uint64_t> ReadHighestTerm(SqliteConnection& c) {
  ASSIGN_OR_RETURN(SqliteStatement stmt, c.Prepare(kSelectTermSql));
  std::string key = kHighestTermKey;
  stmt.BindText(1, key);
  ASSIGN_OR_RETURN(bool found, stmt.Step());
  if (!found) return 0;
  return static_cast<uint64_t>(stmt.ColumnInt(0));
}

// ObserveTerm's contract, inside the caller's write transaction.
absl::StatusOr<uint64_t> RecordTerm(SqliteConnection& c, uint64_t term) {
  ASSIGN_OR_RETURN(uint64_t highest, ReadHighestTerm(c));
  if (term < highest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "term ", term, " is lower than the highest term seen (", highest, ")"));
  }
  if (term > highest) {
    ASSIGN_OR_RETURN(SqliteStatement stmt, c.Prepare(kUpsertTermSql));
    std::string key = kHighestTermKey;
    stmt.BindText(1, key);
    stmt.BindInt(2, static_cast<int64_t>(term));
    RETURN_IF_ERROR(stmt.Run());
  }
  return term;
}

// Checks what is in the file before anything is written to it. Returns the
// schema version found (0: an empty database, ready for the first
// migration), or FAILED_PRECONDITION when the file must be left alone.
absl::StatusOr<int> CheckSchema(SqliteConnection& c, const std::string& path) {
  // Reading the header is where SQLite finds out a file is not a database.
  auto read_int = [&c](const char* sql) -> absl::StatusOr<int64_t> {
    ASSIGN_OR_RETURN(SqliteStatement stmt, c.PrepareOnce(sql));
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return absl::InternalError(absl::StrCat(sql, " gave no row"));
    return stmt.ColumnInt(0);
  };
  int64_t application_id = 0;
  int64_t version = 0;
  int64_t objects = 0;
  absl::StatusOr<int64_t> value = read_int("PRAGMA application_id");
  if (value.ok()) {
    application_id = *value;
    value = read_int("PRAGMA user_version");
  }
  if (value.ok()) {
    version = *value;
    value = read_int("SELECT count(*) FROM sqlite_schema");
  }
  if (value.ok()) {
    objects = *value;
  } else if (absl::IsUnavailable(value.status())) {
    return value.status();  // busy or I/O: worth a retry, not a verdict
  } else {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is not a usable SQLite database (corrupt, or not SQLite): ",
        value.status().message()));
  }
  if (application_id == SqliteJobStore::kApplicationId) {
    if (version > SqliteJobStore::kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " has Adjutant schema version ", version,
          ", newer than this build supports (", SqliteJobStore::kSchemaVersion,
          "); run a newer adjutantd"));
    }
    if (version < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " has an invalid Adjutant schema version ", version));
    }
    return static_cast<int>(version);
  }
  if (application_id == 0 && version == 0 && objects == 0) return 0;
  return absl::FailedPreconditionError(absl::StrCat(
      path, " is a SQLite database of another application, not Adjutant ",
      "(application_id ", application_id, ", user_version ", version, ", ",
      objects, " schema objects); refusing to touch it"));
}

// Reads every page of the file once (PRAGMA quick_check: b-tree structure,
// record formats, NOT NULL and CHECK constraints; not index contents), so
// that a file with garbled pages is refused before anything writes to it,
// rather than found out by a request much later. FAILED_PRECONDITION
// naming the file and SQLite's first findings when it is corrupt.
absl::Status CheckIntegrity(SqliteConnection& c, const std::string& path) {
  constexpr int kFindingsShown = 3;
  ASSIGN_OR_RETURN(SqliteStatement stmt, c.PrepareOnce("PRAGMA quick_check"));
  std::vector<std::string> findings;
  while (true) {
    absl::StatusOr<bool> row = stmt.Step();
    if (!row.ok()) {
      if (absl::IsUnavailable(row.status())) return row.status();
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is corrupt: ", row.status().message()));
    }
    if (!*row) break;
    std::string finding = stmt.ColumnString(0);
    if (finding == "ok") return absl::OkStatus();
    if (findings.size() < kFindingsShown) findings.push_back(finding);
  }
  if (findings.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      path, " is corrupt (PRAGMA quick_check: ", absl::StrJoin(findings, "; "),
      "); refusing to touch it"));
}

// Whether the header of the SQLite file at `path` says WAL mode (the read
// and write format versions, bytes 18 and 19, are 2). False when the file is
// shorter than that or unreadable.
bool HeaderSaysWalMode(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char header[20] = {};
  in.read(header, sizeof header);
  return in.gcount() == static_cast<std::streamsize>(sizeof header) &&
         header[18] == 2 && header[19] == 2;
}

// `path` as the path part of a "file:" URI.
std::string UriPath(const std::string& path) {
  std::string out;
  for (unsigned char ch : path) {
    if (ch == '%' || ch == '?' || ch == '#' || ch < 0x20 || ch >= 0x7f) {
      absl::StrAppend(&out, "%", absl::Hex(ch, absl::kZeroPad2));
    } else {
      out.push_back(static_cast<char>(ch));
    }
  }
  return out;
}

absl::Status SetBusyTimeout(SqliteConnection& c, absl::Duration timeout) {
  int64_t ms = std::clamp<int64_t>(absl::ToInt64Milliseconds(timeout), 0,
                                   std::numeric_limits<int>::max());
  int rc = sqlite3_busy_timeout(c.db(), static_cast<int>(ms));
  if (rc != SQLITE_OK) return SqliteStatus(rc, c.db(), "busy_timeout");
  return absl::OkStatus();
}

// Puts the file in WAL mode (a no-op if it is already). Switching needs an
// exclusive lock, and SQLite does not call the busy handler for it: when two
// processes create the file at once, one gets SQLITE_BUSY at once. So wait
// here as the busy handler would, up to `busy_timeout` in all.
absl::Status UseWal(SqliteConnection& c, const std::string& path,
                    absl::Duration busy_timeout) {
  static constexpr int kDelaysMs[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50};
  const int64_t budget_ms = absl::ToInt64Milliseconds(busy_timeout);
  int64_t waited_ms = 0;
  for (size_t attempt = 0;; ++attempt) {
    std::string mode;
    int rc = sqlite3_exec(
        c.db(), "PRAGMA journal_mode = WAL",
        [](void* out, int columns, char** values, char**) {
          if (columns > 0 && values[0] != nullptr) {
            *static_cast<std::string*>(out) = values[0];
          }
          return 0;
        },
        &mode, nullptr);
    if (rc == SQLITE_OK) {
      if (mode == "wal") return absl::OkStatus();
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": cannot use WAL mode (journal_mode stays '", mode, "')"));
    }
    if ((rc & 0xff) != SQLITE_BUSY || waited_ms >= budget_ms) {
      return SqliteStatus(rc, c.db(),
                          absl::StrCat(path, ": switching to WAL mode failed"));
    }
    int64_t delay_ms = std::min<int64_t>(
        kDelaysMs[std::min(attempt, std::size(kDelaysMs) - 1)],
        budget_ms - waited_ms);
    sqlite3_sleep(static_cast<int>(delay_ms));
    waited_ms += delay_ms;
  }
}

}  // namespace

// ---- Open -------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(
    const SqliteOptions& options) {
  if (options.path.empty()) {
    return absl::InvalidArgumentError(
        "SqliteOptions.path: empty; name the database file");
  }
  if (options.busy_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "SqliteOptions.busy_timeout: must not be negative");
  }
  if (options.max_group_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("SqliteOptions.max_group_size: must be at least 1, not ",
                     options.max_group_size));
  }

  // 1. Look at an existing file through a read-only connection, so that a
  // file we refuse is left exactly as it was. A missing file is fine: it is
  // created below.
  //
  // `locking`: a normal read-only connection (mode=ro), which reads one
  // consistent snapshot even while other processes write, but beside a WAL
  // database creates -wal and -shm files. Otherwise an immutable one, which
  // creates nothing but takes no locks: a process that writes the file
  // during the scan can make a healthy file look corrupt.
  auto check_read_only = [&options](bool locking) -> absl::Status {
    std::string uri = absl::StrCat("file:", UriPath(options.path),
                                   locking ? "?mode=ro" : "?immutable=1");
    absl::StatusOr<std::unique_ptr<SqliteConnection>> reader =
        SqliteConnection::Open(uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
                               options.vfs);
    if (!reader.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "cannot read ", options.path, ": ", reader.status().message()));
    }
    // A reader never checkpoints a WAL into the file, even when it is the
    // last connection to close.
    sqlite3_db_config((*reader)->db(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1,
                      nullptr);
    RETURN_IF_ERROR(SetBusyTimeout(**reader, options.busy_timeout));
    absl::Status checked = CheckSchema(**reader, options.path).status();
    if (checked.ok()) checked = CheckIntegrity(**reader, options.path);
    if (absl::IsUnavailable(checked)) {
      return absl::UnavailableError(
          absl::StrCat("cannot read ", options.path, ": ", checked.message()));
    }
    return checked;
  };
  std::error_code ignored;
  if (std::filesystem::exists(options.path, ignored)) {
    // Even a read-only connection creates -wal and -shm files beside a WAL
    // database. When there is no -wal, everything is in the file itself:
    // read it as immutable, which creates nothing. When there is one,
    // another connection is (or was) using the file; read it normally.
    auto wal_exists = [&options, &ignored] {
      return std::filesystem::exists(options.path + "-wal", ignored);
    };
    absl::Status checked = check_read_only(/*locking=*/wal_exists());
    if (!checked.ok() && !absl::IsUnavailable(checked)) {
      // Before refusing, look again: another process may have opened the
      // file after the -wal test above and written it (a checkpoint, or a
      // rollback-journal commit) while the immutable scan read it. This
      // time lock when that creates nothing new: when a -wal exists now
      // (its writer is still there; the lock gives a consistent snapshot),
      // or when the header is not in WAL mode (a rollback-journal reader
      // creates no file). Otherwise no process has the WAL database open,
      // and a second immutable scan sees the file at rest.
      checked = check_read_only(
          /*locking=*/wal_exists() || !HeaderSaysWalMode(options.path));
    }
    RETURN_IF_ERROR(checked);
  }

  // 2. Open for real.
  ASSIGN_OR_RETURN(
      std::unique_ptr<SqliteConnection> connection,
      SqliteConnection::Open(
          options.path,
          SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
          options.vfs));
  SqliteConnection& c = *connection;
  RETURN_IF_ERROR(SetBusyTimeout(c, options.busy_timeout));
  RETURN_IF_ERROR(UseWal(c, options.path, options.busy_timeout));
  RETURN_IF_ERROR(
      c.Exec(options.synchronous == SqliteOptions::Synchronous::kFull
                 ? "PRAGMA synchronous = FULL"
                 : "PRAGMA synchronous = NORMAL"));
  RETURN_IF_ERROR(c.Exec("PRAGMA foreign_keys = ON"));
  RETURN_IF_ERROR(c.Exec("PRAGMA temp_store = MEMORY"));
  // A page cache of up to 32 MiB (SQLite's default is 2 MiB), filled only
  // as pages are read: with a million jobs the indexes' hot pages stay in
  // memory instead of being read back from the OS on every commit.
  RETURN_IF_ERROR(c.Exec("PRAGMA cache_size = -32768"));

  // 3. Migrate, in one write transaction: a second process opening the file
  // at the same time waits here, then finds the schema current. The checks
  // run again inside, since the file may have changed since step 1.
  {
    ASSIGN_OR_RETURN(SqliteTransaction txn, c.Begin(kBeginWrite));
    ASSIGN_OR_RETURN(int version, CheckSchema(c, options.path));
    if (version < kSchemaVersion) {
      for (int v = version; v < kSchemaVersion; ++v) {
        absl::Status status = c.Exec(kMigrations[v]);
        if (!status.ok()) {
          return absl::Status(
              status.code(),
              absl::StrCat("migrating ", options.path, " to schema version ",
                           v + 1, ": ", status.message()));
        }
      }
      RETURN_IF_ERROR(
          c.Exec(absl::StrCat("PRAGMA application_id = ", kApplicationId,
                              "; PRAGMA user_version = ", kSchemaVersion)
                     .c_str()));
    }
    RETURN_IF_ERROR(txn.Commit());
  }

  // 4. The read connection: the same file, through the same VFS, never
  // writing. Opened after the migration, so it sees the current schema.
  ASSIGN_OR_RETURN(
      std::unique_ptr<SqliteConnection> reader,
      SqliteConnection::Open(options.path,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                             options.vfs));
  // The write connection closes last and checkpoints; this one never does.
  sqlite3_db_config(reader->db(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  RETURN_IF_ERROR(SetBusyTimeout(*reader, options.busy_timeout));
  RETURN_IF_ERROR(reader->Exec("PRAGMA query_only = ON"));
  RETURN_IF_ERROR(reader->Exec("PRAGMA temp_store = MEMORY"));
  RETURN_IF_ERROR(reader->Exec("PRAGMA cache_size = -16384"));  // 16 MiB
  return std::unique_ptr<SqliteJobStore>(
      new SqliteJobStore(std::move(connection), std::move(reader), options));
}

namespace {

// A verdict on one item of AckBatch (from CheckLease), rather than an
// error that ends the write.
bool IsAckVerdict(const absl::Status& status) {
  return absl::IsFailedPrecondition(status) || absl::IsNotFound(status);
}

// The job that CheckLease found LEASED under the token becomes SUCCEEDED.
absl::Status MarkSucceeded(SqliteConnection& c, const std::string& job_id,
                           absl::Time now) {
  ASSIGN_OR_RETURN(SqliteStatement ack, c.Prepare(kAckSql));
  ack.BindText(1, job_id);
  ack.BindTime(2, now);
  return ack.Run();
}

}  // namespace

// ---- Group commit
// -------------------------------------------------------------

struct SqliteJobStore::Write {
  // A synchronous call's: its caller waits for `done` (RunWrite).
  explicit Write(WriteBody b) : body(b) {}
  // An asynchronous call's (RunWriteAsync): the store owns it, runs
  // `on_done` once its group committed, and deletes it.
  Write(OwnedWriteBody b, WriteDone d)
      : body(std::move(b)), on_done(std::move(d)) {}

  OwnedWriteBody body;
  WriteDone on_done;  // empty for a synchronous call
  // Set by the group's committer under queue_mu_; read by the caller once
  // done (or, for on_done, by the answer thread).
  absl::Status status;
  bool done = false;
};

SqliteJobStore::SqliteJobStore(std::unique_ptr<SqliteConnection> connection,
                               std::unique_ptr<SqliteConnection> reader,
                               const SqliteOptions& options)
    : backoff_(options.backoff),
      max_pending_per_queue_(options.max_pending_per_queue),
      max_group_size_(options.max_group_size),
      max_write_together_wait_(options.max_write_together_wait),
      connection_(std::move(connection)),
      reader_(std::move(reader)) {
  sqlite3_commit_hook(
      connection_->db(),
      [](void* commits) {
        static_cast<std::atomic<int64_t>*>(commits)->fetch_add(1);
        return 0;  // let the commit proceed
      },
      &commits_);
  writer_ = std::thread([this] { WriterLoop(); });
  answerer_ = std::thread([this] { AnswerLoop(); });
  // Named for `top -H` and profilers (at most 15 characters).
  pthread_setname_np(writer_.native_handle(), "sqlite-writer");
  pthread_setname_np(answerer_.native_handle(), "sqlite-answer");
}

SqliteJobStore::~SqliteJobStore() {
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = true;
  }
  writer_.join();
  {
    absl::MutexLock lock(&answer_mu_);
    answers_stopping_ = true;
  }
  answerer_.join();
  // Best effort: a checkpoint that cannot complete loses nothing, and the
  // destructor has no one to report to.
  Checkpoint().IgnoreError();
}

absl::Status SqliteJobStore::RunWrite(WriteBody body) {
  Write self(body);
  absl::MutexLock lock(&queue_mu_);
  if (writers_.empty()) {
    // Nothing queued, nothing in flight: this call is a group of one, run
    // on the caller's thread. Two thread wake-ups fewer than a hand-off to
    // the writer thread, which is most of an idle store's write latency.
    // Calls arriving meanwhile queue for the writer thread, which waits
    // for this group as for one of its own.
    writers_.push_back(&self);
    CommitFront(1);
    return std::move(self.status);
  }
  writers_.push_back(&self);
  // absl::Mutex::Await rather than a CondVar: the sanitizer build sees what
  // Await orders (tests/sanitizers/tsan_absl_sync.cc).
  auto answered = [&self]() { return self.done; };
  queue_mu_.Await(absl::Condition(&answered));
  return std::move(self.status);
}

void SqliteJobStore::RunWriteAsync(OwnedWriteBody body, WriteDone done) {
  {
    absl::MutexLock lock(&queue_mu_);
    if (!writer_ended_) {
      // The writer thread wakes as queue_mu_ is freed.
      writers_.push_back(new Write(std::move(body), std::move(done)));
      return;
    }
  }
  std::move(done)(absl::UnavailableError("the SQLite store is closing"));
}

void SqliteJobStore::WriteTogether(absl::FunctionRef<void()> calls) {
  {
    absl::MutexLock lock(&queue_mu_);
    ++holds_;
  }
  calls();
  absl::MutexLock lock(&queue_mu_);  // the writer thread wakes as it is freed
  --holds_;
}

template <typename T, typename Body>
void SqliteJobStore::RunWriteAsyncFor(Body body, Done<T> done) {
  // Filled in by the body on the writer thread, read by `done` after it.
  auto result = std::make_shared<T>();
  RunWriteAsync([body = std::move(body),
                 result](SqliteConnection& c) { return body(c, result.get()); },
                [result, done = std::move(done)](absl::Status status) mutable {
                  if (status.ok()) {
                    std::move(done)(std::move(*result));
                  } else {
                    std::move(done)(std::move(status));
                  }
                });
}

void SqliteJobStore::CommitFront(size_t size) {
  const std::vector<Write*> group(writers_.begin(), writers_.begin() + size);
  committing_ = size;
  queue_mu_.Unlock();
  // Callers arriving meanwhile queue for the next group.
  std::vector<absl::Status> outcomes;
  {
    absl::MutexLock lock(&mu_);
    outcomes = CommitGroup(group);
  }
  queue_mu_.Lock();
  std::vector<std::unique_ptr<Write>> answered;  // asynchronous calls
  for (size_t i = 0; i < size; ++i) {
    Write* write = writers_.front();  // group[i]
    writers_.pop_front();
    write->status = std::move(outcomes[i]);
    if (write->on_done) {
      answered.emplace_back(write);
    } else {
      write->done = true;  // its caller wakes once queue_mu_ is released
    }
  }
  committing_ = 0;
  if (answered.empty()) return;
  absl::MutexLock lock(&answer_mu_);  // the answer thread wakes as it is freed
  for (std::unique_ptr<Write>& write : answered) {
    answers_.push_back(std::move(write));
  }
}

void SqliteJobStore::AnswerLoop() {
  absl::MutexLock lock(&answer_mu_);
  auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(answer_mu_) {
    return !answers_.empty() || answers_stopping_;
  };
  while (true) {
    answer_mu_.Await(absl::Condition(&work));
    if (answers_.empty()) break;  // stopping, and nothing left to answer
    std::deque<std::unique_ptr<Write>> batch;
    batch.swap(answers_);
    answer_mu_.Unlock();
    for (std::unique_ptr<Write>& write : batch) {
      std::move(write->on_done)(std::move(write->status));
    }
    batch.clear();  // frees the calls' state before the lock is taken back
    answer_mu_.Lock();
  }
}

void SqliteJobStore::WriterLoop() {
  queue_mu_.Lock();
  // Calls queued and no group in flight (a caller may be running its own,
  // see RunWrite).
  auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return committing_ == 0 && (!writers_.empty() || stopping_);
  };
  auto unheld = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return holds_ == 0;
  };
  while (true) {
    queue_mu_.Await(absl::Condition(&work));
    if (writers_.empty()) break;  // stopping, and nothing left to do
    // Let a WriteTogether finish queueing (bounded: holds that overlap must
    // not keep the calls already queued waiting).
    if (holds_ > 0) {
      queue_mu_.AwaitWithTimeout(absl::Condition(&unheld),
                                 max_write_together_wait_);
    }
    CommitFront(
        std::min(writers_.size(), static_cast<size_t>(max_group_size_)));
  }
  writer_ended_ = true;
  queue_mu_.Unlock();
}

std::vector<absl::Status> SqliteJobStore::CommitGroup(
    const std::vector<Write*>& group) {
  std::vector<absl::Status> outcomes = RunGroup(group);
  write_trouble_.store(!connection_->write_trouble().ok());
  return outcomes;
}

std::vector<absl::Status> SqliteJobStore::RunGroup(
    const std::vector<Write*>& group) {
  SqliteConnection& c = *connection_;
  absl::StatusOr<SqliteTransaction> txn = c.Begin(kBeginWrite);
  if (!txn.ok()) return std::vector<absl::Status>(group.size(), txn.status());
  std::vector<absl::Status> outcomes;
  outcomes.reserve(group.size());
  for (Write* write : group) {
    absl::Status status =
        txn->RunInSavepoint([&c, write] { return write->body(c); });
    if (!txn->active()) {
      // The error rolled back the whole transaction: the calls before this
      // one lost their changes too.
      if (status.ok()) {
        status = absl::InternalError("a write transaction ended unexpectedly");
      }
      return std::vector<absl::Status>(group.size(), status);
    }
    outcomes.push_back(std::move(status));
  }
  if (before_commit_hook_) before_commit_hook_(static_cast<int>(group.size()));
  if (absl::Status committed = txn->Commit(); !committed.ok()) {
    return std::vector<absl::Status>(group.size(), committed);
  }
  return outcomes;
}

absl::Status SqliteJobStore::Checkpoint() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(SqliteStatement stmt,
                   connection_->PrepareOnce("PRAGMA wal_checkpoint(TRUNCATE)"));
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  // The row: busy (1 if the checkpoint could not complete), frames in the
  // WAL, frames checkpointed.
  if (!row || stmt.ColumnInt(0) != 0) {
    return absl::UnavailableError(
        "WAL checkpoint: other connections kept it from completing");
  }
  return absl::OkStatus();
}

// ---- Jobs -------------------------------------------------------------------

absl::Status SqliteJobStore::Ping() {
  if (write_trouble_.load()) {
    // Whether the disk takes writes again: a real change, committed.
    return RunWrite([](SqliteConnection& c) -> absl::Status {
      const std::string key = kHealthProbeKey;
      ASSIGN_OR_RETURN(SqliteStatement stmt, c.Prepare(kBumpHealthProbeSql));
      stmt.BindText(1, key);
      return stmt.Run();
    });
  }
  // Opens a read transaction, so it reaches the file (and its WAL index).
  absl::MutexLock lock(&read_mu_);
  ASSIGN_OR_RETURN(SqliteStatement stmt,
                   reader_->Prepare("PRAGMA user_version"));
  return stmt.Run();
}

absl::StatusOr<std::vector<EnqueueResult>> SqliteJobStore::Enqueue(
    const std::vector<NewJob>& jobs, absl::Time now) {
  std::vector<EnqueueResult> results;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) {
    return EnqueueBody(c, jobs, now, &results);
  }));
  return results;
}

void SqliteJobStore::EnqueueAsync(std::vector<NewJob> jobs, absl::Time now,
                                  Done<std::vector<EnqueueResult>> done) {
  RunWriteAsyncFor<std::vector<EnqueueResult>>(
      [this, jobs = std::move(jobs), now](SqliteConnection& c,
                                          std::vector<EnqueueResult>* results) {
        return EnqueueBody(c, jobs, now, results);
      },
      std::move(done));
}

absl::Status SqliteJobStore::EnqueueBody(SqliteConnection& c,
                                         const std::vector<NewJob>& jobs,
                                         absl::Time now,
                                         std::vector<EnqueueResult>* results) {
  results->clear();
  results->reserve(jobs.size());
  for (const NewJob& job : jobs) {
    ASSIGN_OR_RETURN(EnqueueResult result, InsertJob(c, job, now));
    results->push_back(std::move(result));
  }
  if (max_pending_per_queue_ == 0) return absl::OkStatus();
  std::map<std::string, int64_t> added;  // new jobs per queue
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!(*results)[i].duplicate) ++added[jobs[i].queue];
  }
  // The triggers counted the rows just inserted: refuse (the call's
  // savepoint rolls back) if a queue now holds more than the limit.
  for (const auto& [queue, n] : added) {
    ASSIGN_OR_RETURN(
        SqliteStatement count,
        c.Prepare("SELECT pending FROM queue_counts WHERE queue = ?"));
    count.BindText(1, queue);
    ASSIGN_OR_RETURN(bool row, count.Step());
    const int64_t pending = row ? count.ColumnInt(0) : 0;
    if (pending > max_pending_per_queue_) {
      return QueueFullError(queue, pending - n, n, max_pending_per_queue_);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Lease>> SqliteJobStore::Dequeue(
    const DequeueOptions& options, absl::Time now) {
  std::vector<Lease> leases;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) {
    return DequeueBody(c, options, now, &leases);
  }));
  return leases;
}

void SqliteJobStore::DequeueAsync(DequeueOptions options, absl::Time now,
                                  Done<std::vector<Lease>> done) {
  RunWriteAsyncFor<std::vector<Lease>>(
      [options = std::move(options), now](SqliteConnection& c,
                                          std::vector<Lease>* leases) {
        return DequeueBody(c, options, now, leases);
      },
      std::move(done));
}

absl::Status SqliteJobStore::DequeueBody(SqliteConnection& c,
                                         const DequeueOptions& options,
                                         absl::Time now,
                                         std::vector<Lease>* leases) {
  leases->clear();
  RETURN_IF_ERROR(ExpireLeasesIn(c, options.queue, now, nullptr));

  // Pick first, then update: the seeks must not see their own changes.
  const size_t limit = static_cast<size_t>(std::max(options.max_jobs, 1));
  std::vector<DueJob> picked;
  if (options.job_types.empty()) {
    RETURN_IF_ERROR(FindDueJobs(c, options.queue, nullptr, now, limit, picked));
  } else {
    // Each type's first `limit` jobs in dequeue order hold the first
    // `limit` of them all.
    std::set<std::string> types(options.job_types.begin(),
                                options.job_types.end());
    for (const std::string& type : types) {
      RETURN_IF_ERROR(FindDueJobs(c, options.queue, &type, now, limit, picked));
    }
    std::sort(picked.begin(), picked.end());
    if (picked.size() > limit) picked.resize(limit);
  }

  leases->reserve(picked.size());
  absl::Time expires_at = now + options.lease_duration;
  for (const DueJob& due : picked) {
    std::string token = NewLeaseToken();
    {
      ASSIGN_OR_RETURN(SqliteStatement lease, c.Prepare(kLeaseJobSql));
      lease.BindInt(1, due.seq);
      lease.BindText(2, token);
      lease.BindTime(3, expires_at);
      lease.BindText(4, options.worker_id);
      lease.BindTime(5, now);
      RETURN_IF_ERROR(lease.Run());
      if (lease.Changes() != 1) {
        return absl::InternalError("a job picked for lease vanished");
      }
    }
    ASSIGN_OR_RETURN(SqliteStatement read, c.Prepare(kJobBySeqSql));
    read.BindInt(1, due.seq);
    std::vector<Job> updated;
    RETURN_IF_ERROR(CollectJobs(read, &updated));
    if (updated.size() != 1) {
      return absl::InternalError("a leased job vanished");
    }
    Lease& out = leases->emplace_back();
    out.job = std::move(updated[0]);
    out.token = std::move(token);
    out.expires_at = out.job.lease_expires_at;
  }
  return absl::OkStatus();
}

absl::Status SqliteJobStore::Ack(const std::string& job_id,
                                 const std::string& token, absl::Time now) {
  return RunWrite([&](SqliteConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(LeaseCheck check, CheckLease(c, job_id, token, now));
    if (check.already_acked) return absl::OkStatus();
    return MarkSucceeded(c, job_id, now);
  });
}

absl::StatusOr<std::vector<AckResult>> SqliteJobStore::AckBatch(
    const std::vector<AckItem>& items, absl::Time now) {
  std::vector<AckResult> results;
  RETURN_IF_ERROR(RunWrite(
      [&](SqliteConnection& c) { return AckBody(c, items, now, &results); }));
  return results;
}

void SqliteJobStore::AckAsync(AckItem item, absl::Time now,
                              Done<AckResult> done) {
  std::vector<AckItem> items;
  items.push_back(std::move(item));
  AckBatchAsync(std::move(items), now,
                [done = std::move(done)](
                    absl::StatusOr<std::vector<AckResult>> results) mutable {
                  std::move(done)(OneAckResult(std::move(results)));
                });
}

void SqliteJobStore::AckBatchAsync(std::vector<AckItem> items, absl::Time now,
                                   Done<std::vector<AckResult>> done) {
  RunWriteAsyncFor<std::vector<AckResult>>(
      [items = std::move(items), now](SqliteConnection& c,
                                      std::vector<AckResult>* results) {
        return AckBody(c, items, now, results);
      },
      std::move(done));
}

absl::Status SqliteJobStore::AckBody(SqliteConnection& c,
                                     const std::vector<AckItem>& items,
                                     absl::Time now,
                                     std::vector<AckResult>* results) {
  // One call of a group: the whole batch shares the group's transaction.
  // An item judged FAILED_PRECONDITION or NOT_FOUND changed nothing (the
  // check comes before the one UPDATE), so it needs no savepoint of its own.
  // Any other error fails the batch, and the call's savepoint undoes it
  // all: a read or the UPDATE failed (the disk refused it; the UPDATE says
  // OR FAIL, so it may have stopped part-way), or the transaction ended
  // under it (SQLITE_NOMEM, an interrupt) and the next statements would run
  // outside the group.
  results->assign(items.size(), AckResult());
  for (size_t i = 0; i < items.size(); ++i) {
    AckResult& result = (*results)[i];
    absl::StatusOr<LeaseCheck> check =
        CheckLease(c, items[i].job_id, items[i].token, now);
    if (!check.ok()) {
      if (!IsAckVerdict(check.status()) ||
          sqlite3_get_autocommit(c.db()) != 0) {
        return check.status();  // the batch fails
      }
      result.status = check.status();
      continue;
    }
    result.queue = std::move(check->queue);
    result.cron_name = std::move(check->cron_name);
    result.already_acked = check->already_acked;
    if (!check->already_acked) {
      RETURN_IF_ERROR(MarkSucceeded(c, items[i].job_id, now));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Job> SqliteJobStore::Nack(const std::string& job_id,
                                         const std::string& token,
                                         const NackOptions& options,
                                         absl::Time now) {
  Job nacked;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(LeaseCheck check, CheckLease(c, job_id, token, now));
    if (check.already_acked) {
      // A succeeded job cannot be given back (Nack has no retry exemption).
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " is SUCCEEDED, not LEASED"));
    }
    std::vector<Job> updated;
    {
      bool dead = options.dead || check.attempts >= check.max_attempts;
      ASSIGN_OR_RETURN(SqliteStatement nack, c.Prepare(kNackSql));
      nack.BindText(1, job_id);
      nack.BindInt(
          2, static_cast<int64_t>(dead ? JobState::kDead : JobState::kPending));
      nack.BindText(3, options.error);
      if (dead) {
        nack.BindNull(4);  // run_at kept
      } else {
        absl::Duration delay =
            options.retry_after.has_value()
                ? *options.retry_after
                : backoff_.Delay(check.attempts, RandomUnit());
        nack.BindTime(4, now + delay);
      }
      nack.BindTime(5, now);
      RETURN_IF_ERROR(CollectJobs(nack, &updated));
    }
    if (updated.size() != 1) {
      return absl::InternalError("a nacked job vanished");
    }
    nacked = std::move(updated[0]);
    return absl::OkStatus();
  }));
  return nacked;
}

absl::StatusOr<absl::Time> SqliteJobStore::ExtendLease(
    const std::string& job_id, const std::string& token,
    absl::Duration lease_duration, absl::Time now) {
  const absl::Time expires_at = AsStored(now + lease_duration);
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(LeaseCheck check, CheckLease(c, job_id, token, now));
    if (check.already_acked) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " is SUCCEEDED, not LEASED"));
    }
    ASSIGN_OR_RETURN(SqliteStatement extend, c.Prepare(kExtendLeaseSql));
    extend.BindText(1, job_id);
    extend.BindTime(2, expires_at);
    extend.BindTime(3, now);
    return extend.Run();
  }));
  return expires_at;
}

absl::StatusOr<Job> SqliteJobStore::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&read_mu_);
  return LoadJob(*reader_, job_id);
}

absl::StatusOr<Job> SqliteJobStore::CancelJob(const std::string& job_id,
                                              absl::Time now) {
  Job cancelled;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    std::vector<Job> updated;
    {
      ASSIGN_OR_RETURN(SqliteStatement cancel, c.Prepare(kCancelJobSql));
      cancel.BindText(1, job_id);
      cancel.BindTime(2, now);
      RETURN_IF_ERROR(CollectJobs(cancel, &updated));
    }
    if (updated.empty()) {
      ASSIGN_OR_RETURN(Job job, LoadJob(c, job_id));  // NOT_FOUND if unknown
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " is ", JobStateName(job.state),
                       "; only PENDING or LEASED jobs can be cancelled"));
    }
    cancelled = std::move(updated[0]);
    return absl::OkStatus();
  }));
  return cancelled;
}

absl::StatusOr<Job> SqliteJobStore::RequeueJob(const std::string& job_id,
                                               absl::Time now) {
  Job requeued;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    std::vector<Job> updated;
    {
      ASSIGN_OR_RETURN(SqliteStatement requeue, c.Prepare(kRequeueJobSql));
      requeue.BindText(1, job_id);
      requeue.BindTime(2, now);
      RETURN_IF_ERROR(CollectJobs(requeue, &updated));
    }
    if (updated.empty()) {
      ASSIGN_OR_RETURN(Job job, LoadJob(c, job_id));  // NOT_FOUND if unknown
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " is ", JobStateName(job.state),
                       "; only DEAD or CANCELLED jobs can be requeued"));
    }
    requeued = std::move(updated[0]);
    return absl::OkStatus();
  }));
  return requeued;
}

absl::StatusOr<JobPage> SqliteJobStore::ListJobs(
    const std::string& queue, JobState state, int page_size,
    const std::string& page_token) {
  // The token is the seq of the last job of the previous page: stable while
  // jobs are added (seq only grows) or change state.
  int64_t after = 0;
  if (!page_token.empty()) {
    absl::string_view digits = page_token;
    if (!absl::ConsumePrefix(&digits, kJobPageTokenPrefix) ||
        !absl::SimpleAtoi(digits, &after) || after < 0) {
      return absl::InvalidArgumentError(
          "page_token: not a token returned by ListJobs");
    }
  }
  page_size = std::max(page_size, 1);
  const char* sql = kListJobsSql;
  if (!queue.empty() && state != JobState::kUnspecified) {
    sql = kListJobsByQueueAndStateSql;
  } else if (!queue.empty()) {
    sql = kListJobsByQueueSql;
  } else if (state != JobState::kUnspecified) {
    sql = kListJobsByStateSql;
  }

  absl::MutexLock lock(&read_mu_);
  ASSIGN_OR_RETURN(SqliteStatement list, reader_->Prepare(sql));
  list.BindInt(1, after);
  list.BindInt(2, static_cast<int64_t>(page_size) +
                      1);  // one more: is there a next page?
  if (!queue.empty()) {
    list.BindText(3, queue);
    if (state != JobState::kUnspecified) {
      list.BindInt(4, static_cast<int64_t>(state));
    }
  } else if (state != JobState::kUnspecified) {
    list.BindInt(3, static_cast<int64_t>(state));
  }
  JobPage page;
  RETURN_IF_ERROR(CollectJobs(list, &page.jobs));
  if (page.jobs.size() > static_cast<size_t>(page_size)) {
    page.jobs.resize(page_size);
    page.next_page_token =
        absl::StrCat(kJobPageTokenPrefix, page.jobs.back().seq);
  }
  return page;
}

absl::StatusOr<std::vector<Job>> SqliteJobStore::ExpireLeases(absl::Time now) {
  std::vector<Job> expired;
  // Most sweeps find nothing (the long-poll timer sweeps whenever a delayed
  // job comes due): the reader answers that without a turn of the writer.
  // A lease it cannot see yet is still in a group in flight; it is ended
  // by a later sweep (the timer's next one is due at its expiry) or by a
  // Dequeue of its queue.
  {
    absl::MutexLock lock(&read_mu_);
    ASSIGN_OR_RETURN(bool any, AnyExpiredLease(*reader_, "", now));
    if (!any) return expired;
  }
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    expired.clear();
    return ExpireLeasesIn(c, "", now, &expired);
  }));
  return expired;
}

absl::StatusOr<std::vector<Job>> SqliteJobStore::ReleaseLeases(
    const std::vector<AckItem>& items, absl::Time now) {
  std::vector<Job> released;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    released.clear();
    for (const AckItem& item : items) {
      ASSIGN_OR_RETURN(SqliteStatement release, c.Prepare(kReleaseLeaseSql));
      release.BindText(1, item.job_id);
      release.BindText(2, item.token);
      release.BindTime(3, now);
      RETURN_IF_ERROR(CollectJobs(release, &released));
    }
    return absl::OkStatus();
  }));
  return released;
}

absl::StatusOr<std::vector<QueueStats>> SqliteJobStore::QueueStatistics(
    absl::Time now) {
  // One row per (queue, state); the runnable columns only mean something on
  // the PENDING row.
  static constexpr char kSql[] =
      "SELECT queue, state, COUNT(*),"
      " SUM(CASE WHEN state = 1 AND run_at <= ?1 THEN 1 ELSE 0 END),"
      " MIN(CASE WHEN state = 1 AND run_at <= ?1 THEN run_at END)"
      " FROM jobs GROUP BY queue, state ORDER BY queue, state";
  absl::MutexLock lock(&read_mu_);
  SqliteConnection& c = *reader_;
  ASSIGN_OR_RETURN(SqliteTransaction txn, c.Begin(kBeginRead));
  ASSIGN_OR_RETURN(SqliteStatement stmt, c.Prepare(kSql));
  stmt.BindTime(1, now);
  std::vector<QueueStats> result;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    std::string queue = stmt.ColumnString(0);
    if (result.empty() || result.back().queue != queue) {
      result.emplace_back();
      result.back().queue = std::move(queue);
    }
    QueueStats& stats = result.back();
    const int64_t count = stmt.ColumnInt(2);
    switch (static_cast<JobState>(stmt.ColumnInt(1))) {
      case JobState::kPending:
        stats.pending = count;
        stats.runnable = stmt.ColumnInt(3);
        if (!stmt.ColumnIsNull(4)) {
          stats.oldest_runnable_run_at = stmt.ColumnTime(4);
        }
        break;
      case JobState::kLeased:
        stats.leased = count;
        break;
      case JobState::kSucceeded:
        stats.succeeded = count;
        break;
      case JobState::kDead:
        stats.dead = count;
        break;
      case JobState::kCancelled:
        stats.cancelled = count;
        break;
      case JobState::kUnspecified:
        break;
    }
  }
  RETURN_IF_ERROR(txn.Commit());
  return result;
}

absl::StatusOr<absl::Time> SqliteJobStore::NextAvailableTime(
    const std::string& queue, absl::Time now) {
  absl::MutexLock lock(&read_mu_);
  SqliteConnection& c = *reader_;
  ASSIGN_OR_RETURN(SqliteTransaction txn, c.Begin(kBeginRead));
  absl::Time next = absl::InfiniteFuture();
  for (bool pending : {true, false}) {
    const char* sql;
    if (queue.empty()) {
      sql = pending ? kNextRunAtSql : kNextExpirySql;
    } else {
      sql = pending ? kNextRunAtInQueueSql : kNextExpiryInQueueSql;
    }
    ASSIGN_OR_RETURN(SqliteStatement stmt, c.Prepare(sql));
    if (queue.empty()) {
      stmt.BindTime(1, now);
    } else {
      stmt.BindText(1, queue);
      stmt.BindTime(2, now);
    }
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row && !stmt.ColumnIsNull(0)) next = std::min(next, stmt.ColumnTime(0));
  }
  RETURN_IF_ERROR(txn.Commit());
  return next;
}

absl::StatusOr<int64_t> SqliteJobStore::PruneFinishedJobs(
    absl::Time finished_before, absl::Time dead_before, int limit) {
  int64_t deleted = 0;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    deleted = 0;
    const std::pair<const char*, absl::Time> kinds[] = {
        {kPruneSucceededSql, finished_before},
        {kPruneCancelledSql, finished_before},
        {kPruneDeadSql, dead_before},
    };
    for (const auto& [sql, before] : kinds) {
      if (deleted >= limit || before == absl::InfinitePast()) continue;
      ASSIGN_OR_RETURN(SqliteStatement prune, c.Prepare(sql));
      prune.BindTime(1, before);
      prune.BindInt(2, limit - deleted);
      RETURN_IF_ERROR(prune.Run());
      deleted += prune.Changes();
    }
    return absl::OkStatus();
  }));
  return deleted;
}

// ---- Leadership terms -------------------------------------------------------

absl::StatusOr<uint64_t> SqliteJobStore::ObserveTerm(uint64_t term) {
  uint64_t highest = 0;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(highest, RecordTerm(c, term));
    return absl::OkStatus();
  }));
  return highest;
}

absl::StatusOr<uint64_t> SqliteJobStore::HighestTerm() {
  absl::MutexLock lock(&read_mu_);
  return ReadHighestTerm(*reader_);
}

// ---- Cron schedules ---------------------------------------------------------

absl::StatusOr<CronRecord> SqliteJobStore::GetCron(const std::string& name) {
  absl::MutexLock lock(&read_mu_);
  return LoadCron(*reader_, name);
}

absl::StatusOr<CronRecord> SqliteJobStore::PutCron(
    const CronDefinition& definition, const CronState& state,
    int64_t expected_version, absl::Time now) {
  CronRecord stored;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    absl::StatusOr<CronRecord> existing = LoadCron(c, definition.name);
    if (!existing.ok() && !absl::IsNotFound(existing.status())) {
      return existing.status();
    }
    if (expected_version == 0) {
      if (existing.ok()) {
        return absl::AlreadyExistsError(
            absl::StrCat("schedule ", definition.name, " already exists"));
      }
      ASSIGN_OR_RETURN(SqliteStatement insert, c.Prepare(kInsertCronSql));
      BindCron(insert, definition, state, now, now, 1);
      RETURN_IF_ERROR(insert.Run());
    } else {
      if (!existing.ok()) return existing.status();  // NOT_FOUND
      if (existing->version != expected_version) {
        return absl::AbortedError(absl::StrCat(
            "schedule ", definition.name, " changed concurrently (version ",
            existing->version, ", expected ", expected_version, ")"));
      }
      ASSIGN_OR_RETURN(SqliteStatement update, c.Prepare(kUpdateCronSql));
      BindCron(update, definition, state, existing->created_at, now,
               existing->version + 1);
      RETURN_IF_ERROR(update.Run());
    }
    ASSIGN_OR_RETURN(stored, LoadCron(c, definition.name));
    return absl::OkStatus();
  }));
  return stored;
}

absl::Status SqliteJobStore::DeleteCron(const std::string& name,
                                        absl::Time now) {
  return RunWrite([&](SqliteConnection& c) -> absl::Status {
    // Its claims go with it (ON DELETE CASCADE); the jobs it fired stay, but
    // for one fired ahead and not yet due.
    ASSIGN_OR_RETURN(SqliteStatement del, c.Prepare(kDeleteCronSql));
    del.BindText(1, name);
    ASSIGN_OR_RETURN(bool row, del.Step());
    if (!row) return CronNotFound(name);
    const std::string last_job_id = del.ColumnString(0);
    RETURN_IF_ERROR(del.Run());  // to its end: the statement is done
    if (last_job_id.empty()) return absl::OkStatus();
    ASSIGN_OR_RETURN(SqliteStatement cancel, c.Prepare(kCancelFiredAheadSql));
    cancel.BindText(1, last_job_id);
    cancel.BindTime(2, now);
    return cancel.Run();
  });
}

absl::StatusOr<CronPage> SqliteJobStore::ListCrons(
    int page_size, const std::string& page_token) {
  // The token is the name of the last schedule of the previous page.
  absl::string_view after = page_token;
  if (!page_token.empty() &&
      !absl::ConsumePrefix(&after, kCronPageTokenPrefix)) {
    return absl::InvalidArgumentError(
        "page_token: not a token returned by ListCrons");
  }
  std::string after_name(after);
  page_size = std::max(page_size, 1);
  absl::MutexLock lock(&read_mu_);
  ASSIGN_OR_RETURN(SqliteStatement list, reader_->Prepare(kListCronsSql));
  list.BindText(1, after_name);
  list.BindInt(2, static_cast<int64_t>(page_size) + 1);
  CronPage page;
  while (true) {
    ASSIGN_OR_RETURN(bool row, list.Step());
    if (!row) break;
    page.crons.push_back(ReadCron(list));
  }
  if (page.crons.size() > static_cast<size_t>(page_size)) {
    page.crons.resize(page_size);
    page.next_page_token =
        absl::StrCat(kCronPageTokenPrefix, page.crons.back().definition.name);
  }
  return page;
}

absl::StatusOr<std::vector<CronRecord>> SqliteJobStore::DueCrons(absl::Time now,
                                                                 int limit) {
  absl::MutexLock lock(&read_mu_);
  ASSIGN_OR_RETURN(SqliteStatement due, reader_->Prepare(kDueCronsSql));
  due.BindInt(1, EncodeOrderedTime(now));
  due.BindInt(2, std::max(limit, 0));
  std::vector<CronRecord> crons;
  while (true) {
    ASSIGN_OR_RETURN(bool row, due.Step());
    if (!row) break;
    crons.push_back(ReadCron(due));
  }
  return crons;
}

absl::StatusOr<absl::Time> SqliteJobStore::NextCronFireTime(absl::Time after) {
  absl::MutexLock lock(&read_mu_);
  ASSIGN_OR_RETURN(SqliteStatement next, reader_->Prepare(kNextCronFireSql));
  next.BindInt(1, EncodeOrderedTime(after));
  ASSIGN_OR_RETURN(bool row, next.Step());
  if (!row || next.ColumnIsNull(0)) return absl::InfiniteFuture();
  return DecodeOrderedTime(next.ColumnInt(0));
}

absl::StatusOr<CronRecord> SqliteJobStore::ApplyCronTransition(
    const CronTransition& t, absl::Time now) {
  CronRecord stored;
  RETURN_IF_ERROR(RunWrite([&](SqliteConnection& c) -> absl::Status {
    // 1. A deposed leader cannot fire.
    RETURN_IF_ERROR(RecordTerm(c, t.term).status());

    // 2. Compare-and-set on the schedule's version.
    ASSIGN_OR_RETURN(CronRecord cron, LoadCron(c, t.name));
    if (cron.version != t.expected_version) {
      return absl::AbortedError(
          absl::StrCat("schedule ", t.name, " changed concurrently (version ",
                       cron.version, ", expected ", t.expected_version, ")"));
    }

    // 3. The tick claim: the primary key makes it once only.
    if (t.claim_tick.has_value()) {
      ASSIGN_OR_RETURN(SqliteStatement claim, c.Prepare(kClaimTickSql));
      claim.BindText(1, t.name);
      claim.BindInt(2, EncodeOrderedTime(*t.claim_tick));
      claim.BindInt(3, static_cast<int64_t>(t.term));
      RETURN_IF_ERROR(claim.Run());
      if (claim.Changes() == 0) {
        return absl::AlreadyExistsError(absl::StrCat(
            "tick ", absl::FormatTime(*t.claim_tick, absl::UTCTimeZone()),
            " of schedule ", t.name, " was already claimed"));
      }
    }

    // 4. OverlapPolicy::kReplace: end the previous job if it still runs.
    if (!t.cancel_job_id.empty()) {
      ASSIGN_OR_RETURN(SqliteStatement cancel, c.Prepare(kCancelJobSql));
      cancel.BindText(1, t.cancel_job_id);
      cancel.BindTime(2, now);
      RETURN_IF_ERROR(CollectJobs(cancel, nullptr));
    }

    // 5. The job of the tick.
    CronState state = t.new_state;
    if (t.job.has_value()) {
      NewJob job = *t.job;
      job.idempotency_key.clear();
      ASSIGN_OR_RETURN(EnqueueResult result, InsertJob(c, job, now));
      state.last_job_id = result.job_id;
      if (t.claim_tick.has_value()) {
        ASSIGN_OR_RETURN(SqliteStatement note, c.Prepare(kSetClaimJobSql));
        note.BindText(1, t.name);
        note.BindInt(2, EncodeOrderedTime(*t.claim_tick));
        note.BindText(3, state.last_job_id);
        RETURN_IF_ERROR(note.Run());
      }
    }

    // 6. The new state; updated_at tracks definition changes only.
    {
      ASSIGN_OR_RETURN(SqliteStatement update, c.Prepare(kUpdateCronStateSql));
      update.BindText(1, t.name);
      update.BindInt(2, EncodeOrderedTime(state.next_fire_time));
      update.BindTime(3, state.last_fire_time);
      update.BindText(4, state.last_job_id);
      update.BindInt(5, state.fired_count);
      update.BindInt(6, state.missed_count);
      update.BindInt(7, state.overlap_skipped_count);
      update.BindTime(8, state.waiting_tick_time);
      RETURN_IF_ERROR(update.Run());
    }
    // Claims more than a day older than the last fired tick can never be
    // asked for again.
    if (state.last_fire_time != absl::InfinitePast() &&
        state.last_fire_time != absl::InfiniteFuture()) {
      ASSIGN_OR_RETURN(SqliteStatement forget, c.Prepare(kForgetClaimsSql));
      forget.BindText(1, t.name);
      forget.BindInt(2,
                     EncodeOrderedTime(state.last_fire_time - absl::Hours(24)));
      RETURN_IF_ERROR(forget.Run());
    }
    ASSIGN_OR_RETURN(stored, LoadCron(c, t.name));
    return absl::OkStatus();
  }));
  return stored;
}

// ---- Test hooks -------------------------------------------------------------

namespace {

// Runs `sql` on `c` and returns its rows, each as its columns' text joined
// by '|'.
absl::StatusOr<std::vector<std::string>> QueryRows(SqliteConnection& c,
                                                   const std::string& sql) {
  ASSIGN_OR_RETURN(SqliteStatement stmt, c.PrepareOnce(sql));
  std::vector<std::string> rows;
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    std::vector<std::string> columns;
    for (int i = 0; i < stmt.ColumnCount(); ++i) {
      columns.push_back(stmt.ColumnIsNull(i) ? "NULL" : stmt.ColumnString(i));
    }
    rows.push_back(absl::StrJoin(columns, "|"));
  }
  return rows;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SqliteJobStore::QueryForTest(
    const std::string& sql) {
  absl::MutexLock lock(&mu_);
  return QueryRows(*connection_, sql);
}

absl::StatusOr<std::vector<std::string>> SqliteJobStore::QueryReaderForTest(
    const std::string& sql) {
  absl::MutexLock lock(&read_mu_);
  return QueryRows(*reader_, sql);
}

absl::StatusOr<std::vector<std::string>> SqliteJobStore::DequeuePlanForTest(
    bool filter_job_types) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> plan;
  for (const char* sql :
       {kExpireQueueLeasesSql,
        filter_job_types ? kNextPriorityOfTypeSql : kNextPrioritySql,
        filter_job_types ? kDueAtPriorityOfTypeSql : kDueAtPrioritySql,
        kLeaseJobSql}) {
    ASSIGN_OR_RETURN(
        SqliteStatement stmt,
        connection_->PrepareOnce(absl::StrCat("EXPLAIN QUERY PLAN ", sql)));
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      plan.push_back(stmt.ColumnString(3));  // (id, parent, notused, detail)
    }
  }
  return plan;
}

void SqliteJobStore::SetBeforeCommitHookForTest(
    std::function<void(int group_size)> hook) {
  absl::MutexLock lock(&mu_);
  before_commit_hook_ = std::move(hook);
}

bool SqliteJobStore::AwaitQueuedWritesForTest(int n, absl::Duration timeout) {
  absl::MutexLock lock(&queue_mu_);
  auto queued = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return writers_.size() >= committing_ + static_cast<size_t>(n);
  };
  return queue_mu_.AwaitWithTimeout(absl::Condition(&queued), timeout);
}

void SqliteJobStore::AwaitWriterEndedForTest() {
  absl::MutexLock lock(&queue_mu_);
  queue_mu_.Await(absl::Condition(&writer_ended_));
}

}  // namespace adjutant
