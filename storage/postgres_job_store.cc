#include "storage/postgres_job_store.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "storage/ids.h"
#include "storage/postgres_connection.h"
#include "storage/sqlite_connection.h"  // the shared time encoding
#include "storage/status_macros.h"

namespace adjutant {
namespace {

// ---- Schema ---------------------------------------------------------------
//
// kMigrations[v] takes a schema from version v to v + 1; each runs with the
// store's schema first on the search_path. Append only: a released
// migration never changes. The tables mirror SQLite's (sqlite_job_store.cc).
constexpr const char* kMigrations[] = {
    // 0 -> 1: jobs, terms, schedules and their tick claims.
    R"sql(
CREATE TABLE jobs (
  -- Enqueue order; an identity never hands a number out twice.
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id text NOT NULL UNIQUE,
  queue text NOT NULL,
  type text NOT NULL,
  payload bytea NOT NULL,
  priority integer NOT NULL,
  state smallint NOT NULL CHECK (state BETWEEN 1 AND 5),
  attempts integer NOT NULL,
  max_attempts integer NOT NULL,
  run_at bigint NOT NULL,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  last_error text NOT NULL,
  idempotency_key text NOT NULL,
  lease_expires_at bigint,  -- set while LEASED
  lease_token text NOT NULL,
  worker_id text NOT NULL,
  cron_name text NOT NULL,
  cron_tick_time bigint
);
-- Dequeue walks this in order and stops after max_jobs rows; no sort.
CREATE INDEX jobs_dequeue ON jobs (queue, priority DESC, run_at, seq)
  WHERE state = 1;
-- The next delayed job of a queue, or of any queue (NextAvailableTime).
CREATE INDEX jobs_pending_run_at ON jobs (queue, run_at) WHERE state = 1;
CREATE INDEX jobs_pending_any_run_at ON jobs (run_at) WHERE state = 1;
-- Expired leases of a queue (Dequeue) or of any queue (ExpireLeases).
CREATE INDEX jobs_lease_expiry ON jobs (queue, lease_expires_at)
  WHERE state = 2;
CREATE INDEX jobs_lease_any_expiry ON jobs (lease_expires_at) WHERE state = 2;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key)
  WHERE idempotency_key <> '';
-- ListJobs by queue or by state, in seq order.
CREATE INDEX jobs_queue_seq ON jobs (queue, seq);
CREATE INDEX jobs_state_seq ON jobs (state, seq);

-- Small durable facts: 'highest_term' (a uint64 stored as its int64 bits).
-- The row exists from the start, so that it can always be locked.
CREATE TABLE meta (
  key text PRIMARY KEY,
  value bigint NOT NULL
);
INSERT INTO meta (key, value) VALUES ('highest_term', 0);

CREATE TABLE crons (
  name text PRIMARY KEY,
  schedule text NOT NULL,
  timezone text NOT NULL,
  job_queue text NOT NULL,
  job_type text NOT NULL,
  job_payload bytea NOT NULL,
  job_priority integer NOT NULL,
  job_max_attempts integer NOT NULL,
  misfire_policy smallint NOT NULL,
  catchup_window_ns bigint NOT NULL,
  overlap_policy smallint NOT NULL,
  paused boolean NOT NULL,
  next_fire_time bigint NOT NULL,
  last_fire_time bigint,
  last_job_id text NOT NULL,
  fired_count bigint NOT NULL,
  missed_count bigint NOT NULL,
  overlap_skipped_count bigint NOT NULL,
  waiting_tick_time bigint,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  version bigint NOT NULL
);
CREATE INDEX crons_next_fire ON crons (next_fire_time) WHERE NOT paused;
CREATE INDEX crons_waiting ON crons (next_fire_time)
  WHERE NOT paused AND waiting_tick_time IS NOT NULL;

-- A tick once claimed is never fired again: the primary key is the
-- (schedule, tick) uniqueness that makes firing exactly-once, across every
-- daemon on the database.
CREATE TABLE cron_claims (
  name text NOT NULL REFERENCES crons (name) ON DELETE CASCADE,
  tick bigint NOT NULL,
  term bigint NOT NULL,    -- the leadership term that fired it
  job_id text NOT NULL,    -- the job it enqueued, '' if none
  PRIMARY KEY (name, tick)
);
)sql",
    // 1 -> 2: finished jobs by state and finish time (updated_at), so that
    // retention deletes the oldest of them without reading pending ones.
    // IF NOT EXISTS: an operator may build it beforehand with CREATE INDEX
    // CONCURRENTLY, so that the migration does not block writes to a large
    // jobs table (docs/OPERATIONS.md, Upgrades).
    R"sql(
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, updated_at)
  WHERE state >= 3;
)sql",
    // 2 -> 3: each queue's pending (PENDING or LEASED) jobs, counted, for
    // the per-queue limit (see PostgresOptions::max_pending_per_queue): a
    // folded count per queue and the changes not yet folded in, which the
    // triggers only ever append.
    R"sql(
CREATE TABLE queue_counts (
  queue text PRIMARY KEY,
  pending bigint NOT NULL
);
INSERT INTO queue_counts (queue, pending)
  SELECT queue, count(*) FROM jobs WHERE state IN (1, 2) GROUP BY queue;
CREATE TABLE queue_count_deltas (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  queue text NOT NULL,
  delta bigint NOT NULL
);
CREATE INDEX queue_count_deltas_queue ON queue_count_deltas (queue);
-- One delta row per statement and queue for an insert (a batch Enqueue).
CREATE FUNCTION count_inserted_jobs() RETURNS trigger LANGUAGE plpgsql
  SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO queue_count_deltas (queue, delta)
    SELECT queue, count(*) FROM inserted_jobs WHERE state IN (1, 2)
    GROUP BY queue;
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
  REFERENCING NEW TABLE AS inserted_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_jobs();
-- One per job that starts or stops being pending (an Ack, a job going
-- DEAD, a cancel, a requeue); a Dequeue (PENDING -> LEASED) fires nothing.
CREATE FUNCTION count_changed_job() RETURNS trigger LANGUAGE plpgsql
  SET search_path FROM CURRENT AS $$
BEGIN
  IF OLD.state IN (1, 2) THEN
    INSERT INTO queue_count_deltas (queue, delta) VALUES (OLD.queue, -1);
  END IF;
  IF TG_OP = 'UPDATE' THEN
    IF NEW.state IN (1, 2) THEN
      INSERT INTO queue_count_deltas (queue, delta) VALUES (NEW.queue, 1);
    END IF;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state, queue ON jobs
  FOR EACH ROW
  WHEN ((OLD.state IN (1, 2)) IS DISTINCT FROM (NEW.state IN (1, 2))
        OR OLD.queue IS DISTINCT FROM NEW.queue)
  EXECUTE FUNCTION count_changed_job();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
  FOR EACH ROW WHEN (OLD.state IN (1, 2))
  EXECUTE FUNCTION count_changed_job();
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) ==
                  PostgresJobStore::kSchemaVersion,
              "one migration per schema version");

// The first key of the advisory lock around migrations ("ADJT"); the second
// is hashtext(schema).
constexpr int64_t kMigrationLockKey = 0x41444A54;
// The first key of the advisory lock an Enqueue tries before folding a
// queue's count deltas ("ADJQ"); the second is hashtext(queue).
constexpr int64_t kFoldLockKey = 0x41444A51;
// An Enqueue that reads more delta rows than this for a queue folds them.
constexpr int64_t kFoldDeltasAbove = 1000;
constexpr char kHighestTermKey[] = "highest_term";
constexpr char kJobPageTokenPrefix[] = "seq:";
constexpr char kCronPageTokenPrefix[] = "name:";

// ---- Statements -------------------------------------------------------------

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
    "SELECT " JOB_COLUMNS " FROM jobs WHERE id = $1";
constexpr char kLockJobStateSql[] =
    "SELECT state, lease_token, lease_expires_at, attempts, max_attempts "
    "FROM jobs WHERE id = $1 FOR UPDATE";
// AckBatch: locks the rows of the batch's jobs, in id order (so that two
// batches never wait on each other's locks in a cycle).
constexpr char kLockJobStatesSql[] =
    "SELECT id, state, lease_token, lease_expires_at, queue, cron_name "
    "FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE";
constexpr char kAckJobsSql[] =
    "UPDATE jobs SET state = 3, lease_expires_at = NULL, updated_at = $2 "
    "WHERE id = ANY($1::text[])";
constexpr char kInsertJobSql[] =
    "INSERT INTO jobs (id, queue, type, payload, priority, state, attempts, "
    "max_attempts, run_at, created_at, updated_at, last_error, "
    "idempotency_key, lease_expires_at, lease_token, worker_id, cron_name, "
    "cron_tick_time) "
    "VALUES ($1, $2, $3, $4, $5, 1, 0, $6, $7, $8, $8, '', $9, NULL, '', '', "
    "$10, $11) RETURNING id";
// The same with a key: an existing (queue, key) — committed, or committed
// meanwhile by a concurrent Enqueue, which this one waits for — inserts
// nothing and returns no row.
constexpr char kInsertKeyedJobSql[] =
    "INSERT INTO jobs (id, queue, type, payload, priority, state, attempts, "
    "max_attempts, run_at, created_at, updated_at, last_error, "
    "idempotency_key, lease_expires_at, lease_token, worker_id, cron_name, "
    "cron_tick_time) "
    "VALUES ($1, $2, $3, $4, $5, 1, 0, $6, $7, $8, $8, '', $9, NULL, '', '', "
    "$10, $11) "
    "ON CONFLICT (queue, idempotency_key) WHERE idempotency_key <> '' "
    "DO NOTHING RETURNING id";
// A queue's pending jobs (folded count plus deltas, one snapshot) and how
// many delta rows it read.
constexpr char kQueuePendingSql[] =
    "SELECT coalesce((SELECT pending FROM queue_counts WHERE queue = $1), 0) "
    "+ coalesce(sum(delta), 0), count(*) "
    "FROM queue_count_deltas WHERE queue = $1::text";
constexpr char kTryFoldLockSql[] =
    "SELECT pg_try_advisory_xact_lock($1::int, hashtext($2))";
// Moves the queue's committed deltas (and this transaction's) into its
// folded count; deltas of transactions still running stay.
constexpr char kFoldDeltasSql[] =
    "WITH folded AS (DELETE FROM queue_count_deltas WHERE queue = $1 "
    "RETURNING delta) "
    "INSERT INTO queue_counts (queue, pending) "
    "SELECT $1::text, coalesce(sum(delta), 0) FROM folded "
    "ON CONFLICT (queue) DO UPDATE "
    "SET pending = queue_counts.pending + EXCLUDED.pending";
constexpr char kFindIdempotentSql[] =
    "SELECT id FROM jobs WHERE queue = $1 AND idempotency_key = $2 "
    "AND idempotency_key <> ''";

// Ends expired leases: back to PENDING (run_at kept, so the job keeps its
// place in line) or DEAD when no attempts are left. Rows another
// transaction holds are skipped: it is leasing or finishing them.
#define EXPIRE_LEASES_SET                                              \
  "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN 4 " \
  "ELSE 1 END, last_error = 'lease expired', lease_token = '', "       \
  "lease_expires_at = NULL, updated_at = $1::bigint "
constexpr char kExpireQueueLeasesSql[] = EXPIRE_LEASES_SET
    "WHERE state = 2 AND seq IN (SELECT seq FROM jobs WHERE state = 2 "
    "AND queue = $2 AND lease_expires_at <= $1::bigint "
    "FOR UPDATE SKIP LOCKED) RETURNING " JOB_COLUMNS;
constexpr char kExpireAllLeasesSql[] = EXPIRE_LEASES_SET
    "WHERE state = 2 AND seq IN (SELECT seq FROM jobs WHERE state = 2 "
    "AND lease_expires_at <= $1::bigint FOR UPDATE SKIP LOCKED) "
    "RETURNING " JOB_COLUMNS;

// ReleaseLeases: $1 job ids and $2 the tokens they were leased under,
// pairwise.
constexpr char kReleaseLeasesSql[] =
    "UPDATE jobs SET state = 1, attempts = GREATEST(attempts - 1, 0), "
    "lease_token = '', lease_expires_at = NULL, updated_at = $3 "
    "FROM unnest($1::text[], $2::text[]) AS item (item_id, item_token) "
    "WHERE jobs.id = item.item_id AND jobs.state = 2 "
    "AND jobs.lease_token = item.item_token RETURNING " JOB_COLUMNS;

// The claim: rows locked by another dequeuer are skipped, not waited for.
constexpr char kSelectDequeueSql[] =
    "SELECT seq FROM jobs WHERE state = 1 AND queue = $1 AND run_at <= $2 "
    "ORDER BY priority DESC, run_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED";
constexpr char kSelectDequeueFilteredSql[] =
    "SELECT seq FROM jobs WHERE state = 1 AND queue = $1 AND run_at <= $2 "
    "AND type = ANY($4::text[]) "
    "ORDER BY priority DESC, run_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED";
// $1 seqs and $2 tokens, pairwise.
constexpr char kLeaseJobsSql[] =
    "UPDATE jobs SET state = 2, attempts = attempts + 1, "
    "lease_token = picked.token, lease_expires_at = $3, worker_id = $4, "
    "updated_at = $5 "
    "FROM unnest($1::bigint[], $2::text[]) AS picked (picked_seq, token) "
    "WHERE jobs.seq = picked.picked_seq AND jobs.state = 1 "
    "RETURNING " JOB_COLUMNS;

constexpr char kAckSql[] =
    "UPDATE jobs SET state = 3, lease_expires_at = NULL, updated_at = $2 "
    "WHERE id = $1";
constexpr char kNackSql[] =
    "UPDATE jobs SET state = $2, last_error = $3, "
    "run_at = COALESCE($4::bigint, run_at), lease_token = '', "
    "lease_expires_at = NULL, updated_at = $5 "
    "WHERE id = $1 RETURNING " JOB_COLUMNS;
constexpr char kExtendLeaseSql[] =
    "UPDATE jobs SET lease_expires_at = $2, updated_at = $3 WHERE id = $1";
constexpr char kCancelJobSql[] =
    "UPDATE jobs SET state = 5, lease_token = '', lease_expires_at = NULL, "
    "updated_at = $2 WHERE id = $1 AND state IN (1, 2) RETURNING " JOB_COLUMNS;
constexpr char kRequeueJobSql[] =
    "UPDATE jobs SET state = 1, attempts = 0, run_at = $2::bigint, "
    "updated_at = $2::bigint, lease_token = '', lease_expires_at = NULL "
    "WHERE id = $1 AND state IN (4, 5) RETURNING " JOB_COLUMNS;

// Retention: the oldest finished jobs of one state, finished before $1, at
// most $2 of them; returns how many it deleted. The state is a literal so
// that even a generic plan can use the partial index. Rows another
// transaction holds (a RequeueJob) are skipped. The picked rows are
// MATERIALIZED: as `seq IN (SELECT ... LIMIT)` the planner may run the
// LIMIT subquery more than once and delete more than $2 rows.
#define PRUNE_SQL(state)                                                   \
  "WITH picked AS MATERIALIZED (SELECT seq FROM jobs WHERE state = " state \
  " AND updated_at < $1::bigint ORDER BY updated_at LIMIT $2 "             \
  "FOR UPDATE SKIP LOCKED), deleted AS (DELETE FROM jobs USING picked "    \
  "WHERE jobs.seq = picked.seq RETURNING 1) SELECT count(*) FROM deleted"
constexpr char kPruneSucceededSql[] = PRUNE_SQL("3");
constexpr char kPruneDeadSql[] = PRUNE_SQL("4");
constexpr char kPruneCancelledSql[] = PRUNE_SQL("5");

// ListJobs: $1 after this seq, $2 page size + 1, $3 queue or state, $4 state.
constexpr char kListJobsSql[] =
    "SELECT " JOB_COLUMNS " FROM jobs WHERE seq > $1 ORDER BY seq LIMIT $2";
constexpr char kListJobsByQueueSql[] =
    "SELECT " JOB_COLUMNS
    " FROM jobs WHERE queue = $3 AND seq > $1 ORDER BY seq LIMIT $2";
constexpr char kListJobsByStateSql[] =
    "SELECT " JOB_COLUMNS
    " FROM jobs WHERE state = $3 AND seq > $1 ORDER BY seq LIMIT $2";
constexpr char kListJobsByQueueAndStateSql[] =
    "SELECT " JOB_COLUMNS
    " FROM jobs WHERE queue = $3 AND state = $4 AND seq > $1 "
    "ORDER BY seq LIMIT $2";

// LEAST ignores NULLs; NULL only when both are.
constexpr char kNextAvailableInQueueSql[] =
    "SELECT LEAST("
    "(SELECT min(run_at) FROM jobs WHERE state = 1 AND queue = $1 "
    "AND run_at > $2::bigint), "
    "(SELECT min(lease_expires_at) FROM jobs WHERE state = 2 AND queue = $1 "
    "AND lease_expires_at > $2::bigint))";
constexpr char kNextAvailableSql[] =
    "SELECT LEAST("
    "(SELECT min(run_at) FROM jobs WHERE state = 1 AND run_at > $1::bigint), "
    "(SELECT min(lease_expires_at) FROM jobs WHERE state = 2 "
    "AND lease_expires_at > $1::bigint))";

constexpr char kSelectTermSql[] = "SELECT value FROM meta WHERE key = $1";
constexpr char kLockTermSql[] =
    "SELECT value FROM meta WHERE key = $1 FOR UPDATE";
constexpr char kUpdateTermSql[] = "UPDATE meta SET value = $2 WHERE key = $1";

constexpr char kSelectCronSql[] =
    "SELECT " CRON_COLUMNS " FROM crons WHERE name = $1";
constexpr char kLockCronSql[] =
    "SELECT " CRON_COLUMNS " FROM crons WHERE name = $1 FOR UPDATE";
constexpr char kInsertCronSql[] =
    "INSERT INTO crons (" CRON_COLUMNS
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
    "$15, $16, $17, $18, $19, $20, $21, $22) ON CONFLICT (name) DO NOTHING "
    "RETURNING " CRON_COLUMNS;
constexpr char kUpdateCronSql[] =
    "UPDATE crons SET schedule = $2, timezone = $3, job_queue = $4, "
    "job_type = $5, job_payload = $6, job_priority = $7, "
    "job_max_attempts = $8, misfire_policy = $9, catchup_window_ns = $10, "
    "overlap_policy = $11, paused = $12, next_fire_time = $13, "
    "last_fire_time = $14, last_job_id = $15, fired_count = $16, "
    "missed_count = $17, overlap_skipped_count = $18, "
    "waiting_tick_time = $19, created_at = $20, updated_at = $21, "
    "version = $22 WHERE name = $1 RETURNING " CRON_COLUMNS;
constexpr char kDeleteCronSql[] =
    "DELETE FROM crons WHERE name = $1 RETURNING last_job_id";
// The job of a tick fired ahead whose instant has not come (never leased:
// not a retry waiting for its run_at): a deleted schedule's last.
constexpr char kCancelFiredAheadSql[] =
    "UPDATE jobs SET state = 5, updated_at = $2 "
    "WHERE id = $1 AND state = 1 AND attempts = 0 AND cron_tick_time > $2";
constexpr char kListCronsSql[] =
    "SELECT " CRON_COLUMNS " FROM crons WHERE name > $1 ORDER BY name LIMIT $2";
constexpr char kDueCronsSql[] =
    "SELECT " CRON_COLUMNS
    " FROM crons WHERE NOT paused AND (next_fire_time <= $1 "
    "OR waiting_tick_time IS NOT NULL) ORDER BY next_fire_time, name LIMIT $2";
constexpr char kNextCronFireSql[] =
    "SELECT min(next_fire_time) FROM crons "
    "WHERE NOT paused AND next_fire_time > $1";
constexpr char kClaimTickSql[] =
    "INSERT INTO cron_claims (name, tick, term, job_id) "
    "VALUES ($1, $2, $3, '') ON CONFLICT DO NOTHING";
constexpr char kSetClaimJobSql[] =
    "UPDATE cron_claims SET job_id = $3 WHERE name = $1 AND tick = $2";
constexpr char kForgetClaimsSql[] =
    "DELETE FROM cron_claims WHERE name = $1 AND tick < $2";
constexpr char kUpdateCronStateSql[] =
    "UPDATE crons SET next_fire_time = $2, last_fire_time = $3, "
    "last_job_id = $4, fired_count = $5, missed_count = $6, "
    "overlap_skipped_count = $7, waiting_tick_time = $8, "
    "version = version + 1 WHERE name = $1 RETURNING " CRON_COLUMNS;

// ---- Rows -------------------------------------------------------------------

// Reads a row of JOB_COLUMNS.
Job ReadJob(const PgResult& r, int row) {
  Job job;
  job.id = r.Text(row, 0);
  job.queue = r.Text(row, 1);
  job.type = r.Text(row, 2);
  job.payload = r.Bytes(row, 3);
  job.priority = static_cast<int32_t>(r.Int(row, 4));
  job.state = static_cast<JobState>(r.Int(row, 5));
  job.attempts = static_cast<int32_t>(r.Int(row, 6));
  job.max_attempts = static_cast<int32_t>(r.Int(row, 7));
  job.run_at = r.Time(row, 8);
  job.created_at = r.Time(row, 9);
  job.updated_at = r.Time(row, 10);
  job.last_error = r.Text(row, 11);
  job.idempotency_key = r.Text(row, 12);
  job.lease_expires_at = r.Time(row, 13);
  job.lease_token = r.Text(row, 14);
  job.worker_id = r.Text(row, 15);
  job.cron_name = r.Text(row, 16);
  job.cron_tick_time = r.Time(row, 17);
  job.seq = r.Int(row, 18);
  return job;
}

void ReadJobs(const PgResult& r, std::vector<Job>* out) {
  for (int i = 0; i < r.rows(); ++i) out->push_back(ReadJob(r, i));
}

// Reads a row of CRON_COLUMNS.
CronRecord ReadCron(const PgResult& r, int row) {
  CronRecord cron;
  CronDefinition& d = cron.definition;
  d.name = r.Text(row, 0);
  d.schedule = r.Text(row, 1);
  d.timezone = r.Text(row, 2);
  d.job.queue = r.Text(row, 3);
  d.job.type = r.Text(row, 4);
  d.job.payload = r.Bytes(row, 5);
  d.job.priority = static_cast<int32_t>(r.Int(row, 6));
  d.job.max_attempts = static_cast<int32_t>(r.Int(row, 7));
  d.misfire_policy = static_cast<MisfirePolicy>(r.Int(row, 8));
  d.catchup_window = DecodeDuration(r.Int(row, 9));
  d.overlap_policy = static_cast<OverlapPolicy>(r.Int(row, 10));
  d.paused = r.Text(row, 11) == "t";
  CronState& s = cron.state;
  s.next_fire_time = DecodeOrderedTime(r.Int(row, 12));
  s.last_fire_time = r.Time(row, 13);
  s.last_job_id = r.Text(row, 14);
  s.fired_count = r.Int(row, 15);
  s.missed_count = r.Int(row, 16);
  s.overlap_skipped_count = r.Int(row, 17);
  s.waiting_tick_time = r.Time(row, 18);
  cron.created_at = r.Time(row, 19);
  cron.updated_at = r.Time(row, 20);
  cron.version = r.Int(row, 21);
  return cron;
}

// The 22 parameters of kInsertCronSql / kUpdateCronSql.
PgParams CronParams(const CronDefinition& d, const CronState& s,
                    absl::Time created_at, absl::Time updated_at,
                    int64_t version) {
  PgParams p;
  p.Text(d.name)
      .Text(d.schedule)
      .Text(d.timezone)
      .Text(d.job.queue)
      .Text(d.job.type)
      .Bytes(d.job.payload)
      .Int(d.job.priority)
      .Int(d.job.max_attempts)
      .Int(static_cast<int64_t>(d.misfire_policy))
      .Int(EncodeDuration(d.catchup_window))
      .Int(static_cast<int64_t>(d.overlap_policy))
      .Text(d.paused ? "true" : "false")
      .Int(EncodeOrderedTime(s.next_fire_time))
      .Time(s.last_fire_time)
      .Text(s.last_job_id)
      .Int(s.fired_count)
      .Int(s.missed_count)
      .Int(s.overlap_skipped_count)
      .Time(s.waiting_tick_time)
      .Time(created_at)
      .Time(updated_at)
      .Int(version);
  return p;
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

absl::Status ChangedConcurrently(const std::string& name, int64_t version,
                                 int64_t expected) {
  return absl::AbortedError(
      absl::StrCat("schedule ", name, " changed concurrently (version ",
                   version, ", expected ", expected, ")"));
}

// ---- Operations inside a transaction ----------------------------------------

absl::StatusOr<Job> LoadJob(PgConnection& c, const std::string& job_id) {
  ASSIGN_OR_RETURN(PgResult r, c.Exec(kSelectJobSql, PgParams().Text(job_id)));
  if (r.rows() == 0) return JobNotFound(job_id);
  return ReadJob(r, 0);
}

absl::StatusOr<CronRecord> LoadCron(PgConnection& c, const std::string& name,
                                    bool lock) {
  ASSIGN_OR_RETURN(PgResult r, c.Exec(lock ? kLockCronSql : kSelectCronSql,
                                      PgParams().Text(name)));
  if (r.rows() == 0) return CronNotFound(name);
  return ReadCron(r, 0);
}

// Ends the leases of `queue` (empty: every queue) that expired by `now`.
absl::Status ExpireLeasesIn(PgConnection& c, const std::string& queue,
                            absl::Time now, std::vector<Job>* expired) {
  PgParams params;
  params.Time(now);
  if (!queue.empty()) params.Text(queue);
  ASSIGN_OR_RETURN(PgResult r, c.Exec(queue.empty() ? kExpireAllLeasesSql
                                                    : kExpireQueueLeasesSql,
                                      params));
  if (expired != nullptr) ReadJobs(r, expired);
  return absl::OkStatus();
}

absl::StatusOr<EnqueueResult> InsertJob(PgConnection& c, const NewJob& job,
                                        absl::Time now) {
  EnqueueResult result;
  std::string id = NewJobId();
  PgParams params;
  params.Text(id)
      .Text(job.queue)
      .Text(job.type)
      .Bytes(job.payload)
      .Int(job.priority)
      .Int(job.max_attempts)
      .Time(job.run_at == absl::InfinitePast() ? now : job.run_at)
      .Time(now)
      .Text(job.idempotency_key)
      .Text(job.cron_name)
      .Time(job.cron_tick_time);
  bool keyed = !job.idempotency_key.empty();
  ASSIGN_OR_RETURN(PgResult r,
                   c.Exec(keyed ? kInsertKeyedJobSql : kInsertJobSql, params));
  if (r.rows() == 1) {
    result.job_id = r.Text(0, 0);
    return result;
  }
  ASSIGN_OR_RETURN(PgResult found,
                   c.Exec(kFindIdempotentSql, PgParams().Text(job.queue).Text(
                                                  job.idempotency_key)));
  if (found.rows() != 1) {
    return absl::InternalError(
        "an idempotency key conflicted but its job was not found");
  }
  result.job_id = found.Text(0, 0);
  result.duplicate = true;
  return result;
}

struct LeaseCheck {
  bool already_acked = false;  // SUCCEEDED under this very token
  int32_t attempts = 0;
  int32_t max_attempts = 0;
};

// The verdict on a job whose locked row reads `state`, `stored_token` and
// `expires_at`: OK if it is LEASED under `token` and its lease has not
// expired at `now`; also OK, with already_acked, if it SUCCEEDED under
// `token`.
absl::StatusOr<LeaseCheck> JudgeLease(const std::string& job_id,
                                      const std::string& token, JobState state,
                                      const std::string& stored_token,
                                      absl::Time expires_at, absl::Time now) {
  bool token_matches = SameToken(stored_token, token);
  LeaseCheck check;
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
  if (expires_at <= now) {
    return absl::FailedPreconditionError(
        absl::StrCat("the lease of job ", job_id, " expired at ",
                     absl::FormatTime(expires_at, absl::UTCTimeZone())));
  }
  return check;
}

// Locks the job's row and judges it as JudgeLease does.
absl::StatusOr<LeaseCheck> CheckLease(PgConnection& c,
                                      const std::string& job_id,
                                      const std::string& token,
                                      absl::Time now) {
  ASSIGN_OR_RETURN(PgResult r,
                   c.Exec(kLockJobStateSql, PgParams().Text(job_id)));
  if (r.rows() == 0) return JobNotFound(job_id);
  ASSIGN_OR_RETURN(LeaseCheck check,
                   JudgeLease(job_id, token, static_cast<JobState>(r.Int(0, 0)),
                              r.Text(0, 1), r.Time(0, 2), now));
  check.attempts = static_cast<int32_t>(r.Int(0, 3));
  check.max_attempts = static_cast<int32_t>(r.Int(0, 4));
  return check;
}

// ObserveTerm's contract, inside the caller's transaction. Locks the term
// row until the transaction ends, so concurrent transitions and
// observations are checked one after the other against the latest term.
absl::StatusOr<uint64_t> RecordTerm(PgConnection& c, uint64_t term) {
  ASSIGN_OR_RETURN(PgResult r,
                   c.Exec(kLockTermSql, PgParams().Text(kHighestTermKey)));
  if (r.rows() != 1) {
    return absl::InternalError("the highest_term row of meta is missing");
  }
  auto highest = static_cast<uint64_t>(r.Int(0, 0));
  if (term < highest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "term ", term, " is lower than the highest term seen (", highest, ")"));
  }
  if (term > highest) {
    RETURN_IF_ERROR(
        c.Exec(kUpdateTermSql,
               PgParams().Text(kHighestTermKey).Int(static_cast<int64_t>(term)))
            .status());
  }
  return term;
}

std::string Int64Array(const std::vector<int64_t>& values) {
  return absl::StrCat("{", absl::StrJoin(values, ","), "}");
}

}  // namespace

// ---- Open -------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PostgresJobStore>> PostgresJobStore::Open(
    const PostgresOptions& options) {
  if (options.conninfo.empty()) {
    return absl::InvalidArgumentError(
        "PostgresOptions.conninfo: empty; give a libpq connection string or "
        "a postgresql:// URI");
  }
  if (options.schema.empty() || options.schema.size() > 63) {
    return absl::InvalidArgumentError(
        "PostgresOptions.schema: must be 1 to 63 characters");
  }
  if (options.schema.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        "PostgresOptions.schema: must not contain NUL");
  }
  if (options.pool_size < 1 || options.pool_size > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("PostgresOptions.pool_size: ", options.pool_size,
                     " is outside 1..1000"));
  }
  if (options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "PostgresOptions.connect_timeout: must be positive");
  }
  if (options.acquire_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "PostgresOptions.acquire_timeout: must not be negative");
  }
  if (options.max_retries < 0) {
    return absl::InvalidArgumentError(
        "PostgresOptions.max_retries: must not be negative");
  }

  const std::string schema = QuoteIdentifier(options.schema);
  auto pool = std::make_unique<PgPool>(
      options.conninfo, options.pool_size, options.connect_timeout,
      options.acquire_timeout, absl::StrCat("SET search_path TO ", schema));
  std::unique_ptr<PostgresJobStore> store(
      new PostgresJobStore(std::move(pool), options));

  // Migrate, in one transaction under an advisory lock on the schema's name:
  // a second daemon opening at the same time waits here, then finds the
  // schema current.
  absl::Status migrated = store->Transact([&](PgConnection& c) -> absl::Status {
    RETURN_IF_ERROR(
        c.Exec("SELECT pg_advisory_xact_lock($1::int, "
               "hashtext($2))",
               PgParams().Int(kMigrationLockKey).Text(options.schema))
            .status());
    ASSIGN_OR_RETURN(
        PgResult found,
        c.Exec("SELECT (SELECT count(*) FROM pg_class cl JOIN pg_namespace n "
               "ON n.oid = cl.relnamespace WHERE n.nspname = $1::text), "
               "to_regclass(format('%I.schema_migrations', $1::text)) "
               "IS NOT NULL",
               PgParams().Text(options.schema)));
    int64_t relations = found.Int(0, 0);
    bool has_versions = found.Text(0, 1) == "t";
    if (relations > 0 && !has_versions) {
      return absl::FailedPreconditionError(absl::StrCat(
          "PostgreSQL schema ", schema, " holds ", relations,
          " relations but no Adjutant schema_migrations table; it belongs to "
          "another application: refusing to touch it (choose another "
          "schema)"));
    }
    RETURN_IF_ERROR(
        c.ExecScript(absl::StrCat("CREATE SCHEMA IF NOT EXISTS ", schema,
                                  "; SET LOCAL search_path TO ", schema,
                                  "; CREATE TABLE IF NOT EXISTS "
                                  "schema_migrations (version integer "
                                  "PRIMARY KEY, applied_at timestamptz NOT "
                                  "NULL DEFAULT now())")));
    ASSIGN_OR_RETURN(
        PgResult current,
        c.Exec("SELECT COALESCE(max(version), 0) FROM schema_migrations"));
    int64_t version = current.Int(0, 0);
    if (version > kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          "PostgreSQL schema ", schema, " has Adjutant schema version ",
          version, ", newer than this build supports (", kSchemaVersion,
          "); run a newer adjutantd"));
    }
    for (int64_t v = version; v < kSchemaVersion; ++v) {
      absl::Status status = c.ExecScript(kMigrations[v]);
      if (!status.ok()) {
        return absl::Status(
            status.code(),
            absl::StrCat("migrating PostgreSQL schema ", schema, " to version ",
                         v + 1, ": ", status.message()));
      }
      RETURN_IF_ERROR(
          c.Exec("INSERT INTO schema_migrations (version) VALUES ($1)",
                 PgParams().Int(v + 1))
              .status());
    }
    return absl::OkStatus();
  });
  RETURN_IF_ERROR(migrated);
  return store;
}

PostgresJobStore::PostgresJobStore(std::unique_ptr<PgPool> pool,
                                   const PostgresOptions& options)
    : backoff_(options.backoff),
      max_retries_(options.max_retries),
      max_pending_per_queue_(options.max_pending_per_queue),
      pool_(std::move(pool)) {}

PostgresJobStore::~PostgresJobStore() = default;

// ---- Running statements -----------------------------------------------------

absl::Status PostgresJobStore::Transact(const Body& body) {
  bool replaced_broken = false;
  int attempt = 0;
  while (true) {
    ASSIGN_OR_RETURN(PgPool::Handle c, pool_->Acquire());
    absl::Status begin = c->Exec("BEGIN").status();
    if (!begin.ok()) {
      // Nothing was sent yet: a pooled connection that broke while idle
      // (PostgreSQL restarted) is replaced, and so are its idle siblings,
      // which broke with it.
      if (!c->ok() && !replaced_broken) {
        replaced_broken = true;
        c.Discard();
        pool_->CloseIdle();
        continue;
      }
      return begin;
    }
    absl::Status status = body(*c);
    if (status.ok()) {
      status = c->Exec("COMMIT").status();
      if (status.ok()) return status;
      if (!c->ok()) {
        return absl::UnavailableError(absl::StrCat(
            "the connection to PostgreSQL broke during COMMIT; the change "
            "may or may not have been stored: ",
            status.message()));
      }
    }
    std::string sqlstate = c->last_sqlstate();
    if (c->ok() && !c->Exec("ROLLBACK").ok()) c.Discard();
    if (!IsRetryableSqlState(sqlstate)) return status;
    if (++attempt > max_retries_) {
      return absl::AbortedError(absl::StrCat(
          "gave up after ", attempt,
          " attempts that each hit a serialization failure or deadlock: ",
          status.message()));
    }
  }
}

absl::Status PostgresJobStore::Read(const Body& body) {
  for (int attempt = 0;; ++attempt) {
    ASSIGN_OR_RETURN(PgPool::Handle c, pool_->Acquire());
    absl::Status status = body(*c);
    // Reads are safe to run again: once more on a fresh connection if this
    // one turned out broken.
    if (status.ok() || c->ok() || attempt > 0) return status;
    c.Discard();
    pool_->CloseIdle();
  }
}

// ---- Jobs -------------------------------------------------------------------

absl::Status PostgresJobStore::Ping() {
  return Read([](PgConnection& c) { return c.Exec("SELECT 1").status(); });
}

absl::StatusOr<std::vector<EnqueueResult>> PostgresJobStore::Enqueue(
    const std::vector<NewJob>& jobs, absl::Time now) {
  std::vector<EnqueueResult> results;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    results.clear();
    results.reserve(jobs.size());
    std::map<std::string, int64_t> added;  // new jobs per queue
    for (const NewJob& job : jobs) {
      ASSIGN_OR_RETURN(EnqueueResult result, InsertJob(c, job, now));
      if (!result.duplicate) ++added[job.queue];
      results.push_back(std::move(result));
    }
    if (max_pending_per_queue_ <= 0) return absl::OkStatus();
    // The triggers counted the rows just inserted: refuse (the transaction
    // rolls back) if a queue now holds more than the limit.
    for (const auto& [queue, n] : added) {
      ASSIGN_OR_RETURN(PgResult count,
                       c.Exec(kQueuePendingSql, PgParams().Text(queue)));
      const int64_t pending = count.Int(0, 0);
      if (pending > max_pending_per_queue_) {
        return QueueFullError(queue, pending - n, n, max_pending_per_queue_);
      }
      if (count.Int(0, 1) > kFoldDeltasAbove) {
        ASSIGN_OR_RETURN(
            PgResult locked,
            c.Exec(kTryFoldLockSql, PgParams().Int(kFoldLockKey).Text(queue)));
        if (locked.Text(0, 0) == "t") {
          RETURN_IF_ERROR(
              c.Exec(kFoldDeltasSql, PgParams().Text(queue)).status());
        }
      }
    }
    return absl::OkStatus();
  }));
  return results;
}

absl::StatusOr<std::vector<Lease>> PostgresJobStore::Dequeue(
    const DequeueOptions& options, absl::Time now) {
  std::vector<Lease> leases;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    leases.clear();
    RETURN_IF_ERROR(ExpireLeasesIn(c, options.queue, now, nullptr));

    PgParams select;
    select.Text(options.queue).Time(now).Int(std::max(options.max_jobs, 1));
    bool filtered = !options.job_types.empty();
    if (filtered) select.TextArray(options.job_types);
    ASSIGN_OR_RETURN(
        PgResult picked_rows,
        c.Exec(filtered ? kSelectDequeueFilteredSql : kSelectDequeueSql,
               select));
    if (picked_rows.rows() == 0) return absl::OkStatus();

    std::vector<int64_t> picked;
    std::vector<std::string> tokens;
    std::map<int64_t, size_t> position;  // seq -> place in dequeue order
    for (int i = 0; i < picked_rows.rows(); ++i) {
      picked.push_back(picked_rows.Int(i, 0));
      tokens.push_back(NewLeaseToken());
      position[picked.back()] = picked.size() - 1;
    }
    ASSIGN_OR_RETURN(
        PgResult leased,
        c.Exec(kLeaseJobsSql, PgParams()
                                  .Text(Int64Array(picked))
                                  .TextArray(tokens)
                                  .Time(now + options.lease_duration)
                                  .Text(options.worker_id)
                                  .Time(now)));
    if (leased.rows() != static_cast<int>(picked.size())) {
      return absl::InternalError("a job picked for lease vanished");
    }
    leases.resize(picked.size());
    for (int i = 0; i < leased.rows(); ++i) {
      Job job = ReadJob(leased, i);
      Lease& out = leases[position.at(job.seq)];
      out.token = job.lease_token;
      out.expires_at = job.lease_expires_at;
      out.job = std::move(job);
    }
    return absl::OkStatus();
  }));
  return leases;
}

absl::Status PostgresJobStore::Ack(const std::string& job_id,
                                   const std::string& token, absl::Time now) {
  return Transact([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(LeaseCheck check, CheckLease(c, job_id, token, now));
    if (check.already_acked) return absl::OkStatus();
    return c.Exec(kAckSql, PgParams().Text(job_id).Time(now)).status();
  });
}

absl::StatusOr<std::vector<AckResult>> PostgresJobStore::AckBatch(
    const std::vector<AckItem>& items, absl::Time now) {
  std::vector<AckResult> results;
  if (items.empty()) return results;
  std::vector<std::string> ids;
  ids.reserve(items.size());
  for (const AckItem& item : items) ids.push_back(item.job_id);
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    results.assign(items.size(), AckResult());
    ASSIGN_OR_RETURN(PgResult rows,
                     c.Exec(kLockJobStatesSql, PgParams().TextArray(ids)));
    std::unordered_map<std::string, int> row_of;
    for (int i = 0; i < rows.rows(); ++i) row_of.emplace(rows.Text(i, 0), i);
    std::vector<std::string> to_ack;
    for (size_t i = 0; i < items.size(); ++i) {
      const AckItem& item = items[i];
      auto row = row_of.find(item.job_id);
      if (row == row_of.end()) {
        results[i].status = JobNotFound(item.job_id);
        continue;
      }
      const int r = row->second;
      absl::StatusOr<LeaseCheck> check = JudgeLease(
          item.job_id, item.token, static_cast<JobState>(rows.Int(r, 1)),
          rows.Text(r, 2), rows.Time(r, 3), now);
      if (!check.ok()) {
        results[i].status = check.status();
        continue;
      }
      results[i].queue = rows.Text(r, 4);
      results[i].cron_name = rows.Text(r, 5);
      results[i].already_acked = check->already_acked;
      if (!check->already_acked) to_ack.push_back(item.job_id);
    }
    if (to_ack.empty()) return absl::OkStatus();
    return c.Exec(kAckJobsSql, PgParams().TextArray(to_ack).Time(now)).status();
  }));
  return results;
}

absl::StatusOr<Job> PostgresJobStore::Nack(const std::string& job_id,
                                           const std::string& token,
                                           const NackOptions& options,
                                           absl::Time now) {
  Job updated;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(LeaseCheck check, CheckLease(c, job_id, token, now));
    if (check.already_acked) {
      // A succeeded job cannot be given back (Nack has no retry exemption).
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " is SUCCEEDED, not LEASED"));
    }
    bool dead = options.dead || check.attempts >= check.max_attempts;
    PgParams params;
    params.Text(job_id)
        .Int(static_cast<int64_t>(dead ? JobState::kDead : JobState::kPending))
        .Text(options.error);
    if (dead) {
      params.Null();  // run_at kept
    } else {
      absl::Duration delay = options.retry_after.has_value()
                                 ? *options.retry_after
                                 : backoff_.Delay(check.attempts, RandomUnit());
      params.Time(now + delay);
    }
    params.Time(now);
    ASSIGN_OR_RETURN(PgResult r, c.Exec(kNackSql, params));
    if (r.rows() != 1) return absl::InternalError("a nacked job vanished");
    updated = ReadJob(r, 0);
    return absl::OkStatus();
  }));
  return updated;
}

absl::StatusOr<absl::Time> PostgresJobStore::ExtendLease(
    const std::string& job_id, const std::string& token,
    absl::Duration lease_duration, absl::Time now) {
  absl::Time expires_at = AsStored(now + lease_duration);
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(LeaseCheck check, CheckLease(c, job_id, token, now));
    if (check.already_acked) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " is SUCCEEDED, not LEASED"));
    }
    return c
        .Exec(kExtendLeaseSql,
              PgParams().Text(job_id).Time(expires_at).Time(now))
        .status();
  }));
  return expires_at;
}

absl::StatusOr<Job> PostgresJobStore::GetJob(const std::string& job_id) {
  Job job;
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(job, LoadJob(c, job_id));
    return absl::OkStatus();
  }));
  return job;
}

absl::StatusOr<Job> PostgresJobStore::CancelJob(const std::string& job_id,
                                                absl::Time now) {
  Job updated;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(PgResult r,
                     c.Exec(kCancelJobSql, PgParams().Text(job_id).Time(now)));
    if (r.rows() == 0) {
      ASSIGN_OR_RETURN(Job job, LoadJob(c, job_id));  // NOT_FOUND if unknown
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " is ", JobStateName(job.state),
                       "; only PENDING or LEASED jobs can be cancelled"));
    }
    updated = ReadJob(r, 0);
    return absl::OkStatus();
  }));
  return updated;
}

absl::StatusOr<Job> PostgresJobStore::RequeueJob(const std::string& job_id,
                                                 absl::Time now) {
  Job updated;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(PgResult r,
                     c.Exec(kRequeueJobSql, PgParams().Text(job_id).Time(now)));
    if (r.rows() == 0) {
      ASSIGN_OR_RETURN(Job job, LoadJob(c, job_id));  // NOT_FOUND if unknown
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " is ", JobStateName(job.state),
                       "; only DEAD or CANCELLED jobs can be requeued"));
    }
    updated = ReadJob(r, 0);
    return absl::OkStatus();
  }));
  return updated;
}

absl::StatusOr<JobPage> PostgresJobStore::ListJobs(
    const std::string& queue, JobState state, int page_size,
    const std::string& page_token) {
  // The token is the seq of the last job of the previous page.
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
  PgParams params;
  // One more than asked: is there a next page?
  params.Int(after).Int(static_cast<int64_t>(page_size) + 1);
  if (!queue.empty() && state != JobState::kUnspecified) {
    sql = kListJobsByQueueAndStateSql;
    params.Text(queue).Int(static_cast<int64_t>(state));
  } else if (!queue.empty()) {
    sql = kListJobsByQueueSql;
    params.Text(queue);
  } else if (state != JobState::kUnspecified) {
    sql = kListJobsByStateSql;
    params.Int(static_cast<int64_t>(state));
  }
  JobPage page;
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    page.jobs.clear();
    ASSIGN_OR_RETURN(PgResult r, c.Exec(sql, params));
    ReadJobs(r, &page.jobs);
    return absl::OkStatus();
  }));
  if (page.jobs.size() > static_cast<size_t>(page_size)) {
    page.jobs.resize(page_size);
    page.next_page_token =
        absl::StrCat(kJobPageTokenPrefix, page.jobs.back().seq);
  }
  return page;
}

absl::StatusOr<std::vector<Job>> PostgresJobStore::ExpireLeases(
    absl::Time now) {
  std::vector<Job> expired;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    expired.clear();
    return ExpireLeasesIn(c, "", now, &expired);
  }));
  return expired;
}

absl::StatusOr<std::vector<Job>> PostgresJobStore::ReleaseLeases(
    const std::vector<AckItem>& items, absl::Time now) {
  std::vector<Job> released;
  if (items.empty()) return released;
  std::vector<std::string> ids, tokens;
  for (const AckItem& item : items) {
    ids.push_back(item.job_id);
    tokens.push_back(item.token);
  }
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    released.clear();
    ASSIGN_OR_RETURN(
        PgResult r,
        c.Exec(kReleaseLeasesSql,
               PgParams().TextArray(ids).TextArray(tokens).Time(now)));
    ReadJobs(r, &released);
    return absl::OkStatus();
  }));
  return released;
}

absl::StatusOr<int64_t> PostgresJobStore::PruneFinishedJobs(
    absl::Time finished_before, absl::Time dead_before, int limit) {
  int64_t deleted = 0;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    deleted = 0;
    const std::pair<const char*, absl::Time> kinds[] = {
        {kPruneSucceededSql, finished_before},
        {kPruneCancelledSql, finished_before},
        {kPruneDeadSql, dead_before},
    };
    for (const auto& [sql, before] : kinds) {
      if (deleted >= limit || before == absl::InfinitePast()) continue;
      ASSIGN_OR_RETURN(
          PgResult r,
          c.Exec(sql, PgParams().Time(before).Int(limit - deleted)));
      deleted += r.Int(0, 0);
    }
    return absl::OkStatus();
  }));
  return deleted;
}

absl::StatusOr<std::vector<QueueStats>> PostgresJobStore::QueueStatistics(
    absl::Time now) {
  // One row per (queue, state), in byte order of the queue name (as the
  // other backends sort it); the runnable columns only mean something on
  // the PENDING row.
  static constexpr char kSql[] =
      "SELECT queue, state, count(*),"
      " count(*) FILTER (WHERE state = 1 AND run_at <= $1::bigint),"
      " min(run_at) FILTER (WHERE state = 1 AND run_at <= $1::bigint)"
      " FROM jobs GROUP BY queue, state ORDER BY queue COLLATE \"C\", state";
  std::vector<QueueStats> result;
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    result.clear();
    PgParams params;
    params.Time(now);
    ASSIGN_OR_RETURN(PgResult r, c.Exec(kSql, params));
    for (int row = 0; row < r.rows(); ++row) {
      std::string queue = r.Text(row, 0);
      if (result.empty() || result.back().queue != queue) {
        result.emplace_back();
        result.back().queue = std::move(queue);
      }
      QueueStats& stats = result.back();
      const int64_t count = r.Int(row, 2);
      switch (static_cast<JobState>(r.Int(row, 1))) {
        case JobState::kPending:
          stats.pending = count;
          stats.runnable = r.Int(row, 3);
          if (!r.IsNull(row, 4)) stats.oldest_runnable_run_at = r.Time(row, 4);
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
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<absl::Time> PostgresJobStore::NextAvailableTime(
    const std::string& queue, absl::Time now) {
  absl::Time next = absl::InfiniteFuture();
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    PgParams params;
    if (!queue.empty()) params.Text(queue);
    params.Time(now);
    ASSIGN_OR_RETURN(
        PgResult r,
        c.Exec(queue.empty() ? kNextAvailableSql : kNextAvailableInQueueSql,
               params));
    if (!r.IsNull(0, 0)) next = r.Time(0, 0);
    return absl::OkStatus();
  }));
  return next;
}

// ---- Leadership terms -------------------------------------------------------

absl::StatusOr<uint64_t> PostgresJobStore::ObserveTerm(uint64_t term) {
  uint64_t highest = 0;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(highest, RecordTerm(c, term));
    return absl::OkStatus();
  }));
  return highest;
}

absl::StatusOr<uint64_t> PostgresJobStore::HighestTerm() {
  uint64_t highest = 0;
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(PgResult r,
                     c.Exec(kSelectTermSql, PgParams().Text(kHighestTermKey)));
    highest = r.rows() == 0 ? 0 : static_cast<uint64_t>(r.Int(0, 0));
    return absl::OkStatus();
  }));
  return highest;
}

// ---- Cron schedules ---------------------------------------------------------

absl::StatusOr<CronRecord> PostgresJobStore::GetCron(const std::string& name) {
  CronRecord cron;
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(cron, LoadCron(c, name, /*lock=*/false));
    return absl::OkStatus();
  }));
  return cron;
}

absl::StatusOr<CronRecord> PostgresJobStore::PutCron(
    const CronDefinition& definition, const CronState& state,
    int64_t expected_version, absl::Time now) {
  CronRecord stored;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    absl::StatusOr<CronRecord> existing =
        LoadCron(c, definition.name, /*lock=*/true);
    if (!existing.ok() && !absl::IsNotFound(existing.status())) {
      return existing.status();
    }
    if (expected_version == 0) {
      if (existing.ok()) {
        return absl::AlreadyExistsError(
            absl::StrCat("schedule ", definition.name, " already exists"));
      }
      // ON CONFLICT: a concurrent creator of the same name wins cleanly.
      ASSIGN_OR_RETURN(
          PgResult r,
          c.Exec(kInsertCronSql, CronParams(definition, state, now, now, 1)));
      if (r.rows() == 0) {
        return absl::AlreadyExistsError(
            absl::StrCat("schedule ", definition.name, " already exists"));
      }
      stored = ReadCron(r, 0);
      return absl::OkStatus();
    }
    if (!existing.ok()) return existing.status();  // NOT_FOUND
    if (existing->version != expected_version) {
      return ChangedConcurrently(definition.name, existing->version,
                                 expected_version);
    }
    ASSIGN_OR_RETURN(PgResult r,
                     c.Exec(kUpdateCronSql,
                            CronParams(definition, state, existing->created_at,
                                       now, existing->version + 1)));
    if (r.rows() != 1)
      return absl::InternalError("an updated schedule vanished");
    stored = ReadCron(r, 0);
    return absl::OkStatus();
  }));
  return stored;
}

absl::Status PostgresJobStore::DeleteCron(const std::string& name,
                                          absl::Time now) {
  return Transact([&](PgConnection& c) -> absl::Status {
    // Its claims go with it (ON DELETE CASCADE); the jobs it fired stay, but
    // for one fired ahead and not yet due.
    ASSIGN_OR_RETURN(PgResult r, c.Exec(kDeleteCronSql, PgParams().Text(name)));
    if (r.rows() == 0) return CronNotFound(name);
    const std::string last_job_id = r.Text(0, 0);
    if (last_job_id.empty()) return absl::OkStatus();
    return c.Exec(kCancelFiredAheadSql, PgParams().Text(last_job_id).Time(now))
        .status();
  });
}

absl::StatusOr<CronPage> PostgresJobStore::ListCrons(
    int page_size, const std::string& page_token) {
  // The token is the name of the last schedule of the previous page.
  absl::string_view after = page_token;
  if (!page_token.empty() &&
      !absl::ConsumePrefix(&after, kCronPageTokenPrefix)) {
    return absl::InvalidArgumentError(
        "page_token: not a token returned by ListCrons");
  }
  page_size = std::max(page_size, 1);
  CronPage page;
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    page.crons.clear();
    ASSIGN_OR_RETURN(
        PgResult r,
        c.Exec(kListCronsSql, PgParams().Text(after).Int(
                                  static_cast<int64_t>(page_size) + 1)));
    for (int i = 0; i < r.rows(); ++i) page.crons.push_back(ReadCron(r, i));
    return absl::OkStatus();
  }));
  if (page.crons.size() > static_cast<size_t>(page_size)) {
    page.crons.resize(page_size);
    page.next_page_token =
        absl::StrCat(kCronPageTokenPrefix, page.crons.back().definition.name);
  }
  return page;
}

absl::StatusOr<std::vector<CronRecord>> PostgresJobStore::DueCrons(
    absl::Time now, int limit) {
  std::vector<CronRecord> crons;
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    crons.clear();
    ASSIGN_OR_RETURN(
        PgResult r,
        c.Exec(kDueCronsSql,
               PgParams().Int(EncodeOrderedTime(now)).Int(std::max(limit, 0))));
    for (int i = 0; i < r.rows(); ++i) crons.push_back(ReadCron(r, i));
    return absl::OkStatus();
  }));
  return crons;
}

absl::StatusOr<absl::Time> PostgresJobStore::NextCronFireTime(
    absl::Time after) {
  absl::Time next = absl::InfiniteFuture();
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    ASSIGN_OR_RETURN(
        PgResult r,
        c.Exec(kNextCronFireSql, PgParams().Int(EncodeOrderedTime(after))));
    if (r.rows() == 1 && !r.IsNull(0, 0)) {
      next = DecodeOrderedTime(r.Int(0, 0));
    }
    return absl::OkStatus();
  }));
  return next;
}

absl::StatusOr<CronRecord> PostgresJobStore::ApplyCronTransition(
    const CronTransition& t, absl::Time now) {
  CronRecord stored;
  RETURN_IF_ERROR(Transact([&](PgConnection& c) -> absl::Status {
    // 1. A deposed leader cannot fire. The term row stays locked until the
    // end, so no transition of a lower term can commit after this one.
    RETURN_IF_ERROR(RecordTerm(c, t.term).status());

    // 2. Compare-and-set on the schedule's version.
    ASSIGN_OR_RETURN(CronRecord cron, LoadCron(c, t.name, /*lock=*/true));
    if (cron.version != t.expected_version) {
      return ChangedConcurrently(t.name, cron.version, t.expected_version);
    }

    // 3. The tick claim: the primary key makes it once only.
    if (t.claim_tick.has_value()) {
      ASSIGN_OR_RETURN(
          PgResult claim,
          c.Exec(kClaimTickSql, PgParams()
                                    .Text(t.name)
                                    .Int(EncodeOrderedTime(*t.claim_tick))
                                    .Int(static_cast<int64_t>(t.term))));
      if (claim.affected() == 0) {
        return absl::AlreadyExistsError(absl::StrCat(
            "tick ", absl::FormatTime(*t.claim_tick, absl::UTCTimeZone()),
            " of schedule ", t.name, " was already claimed"));
      }
    }

    // 4. OverlapPolicy::kReplace: end the previous job if it still runs.
    if (!t.cancel_job_id.empty()) {
      RETURN_IF_ERROR(
          c.Exec(kCancelJobSql, PgParams().Text(t.cancel_job_id).Time(now))
              .status());
    }

    // 5. The job of the tick.
    CronState state = t.new_state;
    if (t.job.has_value()) {
      NewJob job = *t.job;
      job.idempotency_key.clear();
      ASSIGN_OR_RETURN(EnqueueResult result, InsertJob(c, job, now));
      state.last_job_id = result.job_id;
      if (t.claim_tick.has_value()) {
        RETURN_IF_ERROR(
            c.Exec(kSetClaimJobSql, PgParams()
                                        .Text(t.name)
                                        .Int(EncodeOrderedTime(*t.claim_tick))
                                        .Text(state.last_job_id))
                .status());
      }
    }

    // 6. The new state; updated_at tracks definition changes only.
    ASSIGN_OR_RETURN(PgResult updated,
                     c.Exec(kUpdateCronStateSql,
                            PgParams()
                                .Text(t.name)
                                .Int(EncodeOrderedTime(state.next_fire_time))
                                .Time(state.last_fire_time)
                                .Text(state.last_job_id)
                                .Int(state.fired_count)
                                .Int(state.missed_count)
                                .Int(state.overlap_skipped_count)
                                .Time(state.waiting_tick_time)));
    if (updated.rows() != 1) {
      return absl::InternalError("a locked schedule vanished");
    }
    stored = ReadCron(updated, 0);
    // Claims more than a day older than the last fired tick can never be
    // asked for again.
    if (state.last_fire_time != absl::InfinitePast() &&
        state.last_fire_time != absl::InfiniteFuture()) {
      RETURN_IF_ERROR(c.Exec(kForgetClaimsSql,
                             PgParams().Text(t.name).Int(EncodeOrderedTime(
                                 state.last_fire_time - absl::Hours(24))))
                          .status());
    }
    return absl::OkStatus();
  }));
  return stored;
}

// ---- Test hooks -------------------------------------------------------------

absl::StatusOr<std::vector<std::string>> PostgresJobStore::QueryForTest(
    const std::string& sql) {
  std::vector<std::string> rows;
  RETURN_IF_ERROR(Read([&](PgConnection& c) -> absl::Status {
    rows.clear();
    ASSIGN_OR_RETURN(PgResult r, c.Exec(sql));
    for (int i = 0; i < r.rows(); ++i) {
      std::vector<std::string> columns;
      for (int j = 0; j < r.columns(); ++j) {
        columns.push_back(r.IsNull(i, j) ? "NULL" : r.Text(i, j));
      }
      rows.push_back(absl::StrJoin(columns, "|"));
    }
    return absl::OkStatus();
  }));
  return rows;
}

}  // namespace adjutant
