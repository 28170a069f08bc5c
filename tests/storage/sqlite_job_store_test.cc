// SqliteJobStore: the conformance suite on a fresh file, plus what only a
// file-backed, multi-process store has to prove: reopening, refusing files
// it must not touch, migrations, two stores on one file, the query plan of
// Dequeue, and the durability pragmas.
#include "storage/sqlite_job_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/job.h"
#include "storage/sqlite_connection.h"
#include "tests/storage/job_store_conformance.h"

namespace adjutant {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

#define SQLITE_TEST_CONCAT_INNER(a, b) a##b
#define SQLITE_TEST_CONCAT(a, b) SQLITE_TEST_CONCAT_INNER(a, b)
#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const absl::Status assert_ok_status = (expr);           \
    ASSERT_TRUE(assert_ok_status.ok()) << assert_ok_status; \
  } while (0)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(SQLITE_TEST_CONCAT(status_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(var, lhs, expr) \
  auto var = (expr);                              \
  ASSERT_TRUE(var.ok()) << var.status();          \
  lhs = std::move(*var)

// ---- The conformance suite --------------------------------------------------

absl::StatusOr<std::unique_ptr<JobStore>> OpenInDir(const std::string& dir) {
  SqliteOptions options;
  options.path = dir + "/adjutant.db";
  absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
      SqliteJobStore::Open(options);
  if (!store.ok()) return store.status();
  return std::unique_ptr<JobStore>(std::move(*store));
}

StoreFactory SqliteFactory() {
  StoreFactory factory;
  factory.name = "Sqlite";
  factory.make = OpenInDir;
  factory.reopen = OpenInDir;
  factory.make_limited = [](const std::string& dir,
                            int64_t max_pending_per_queue)
      -> absl::StatusOr<std::unique_ptr<JobStore>> {
    SqliteOptions options;
    options.path = dir + "/adjutant.db";
    options.max_pending_per_queue = max_pending_per_queue;
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
        SqliteJobStore::Open(options);
    if (!store.ok()) return store.status();
    return std::unique_ptr<JobStore>(std::move(*store));
  };
  return factory;
}

INSTANTIATE_TEST_SUITE_P(Sqlite, JobStoreConformance,
                         ::testing::Values(SqliteFactory()),
                         JobStoreConformance::Name);
INSTANTIATE_TEST_SUITE_P(Sqlite, PendingLimit,
                         ::testing::Values(SqliteFactory()),
                         JobStoreConformance::Name);

// ---- Helpers ----------------------------------------------------------------

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::set<std::string> FilesIn(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

// Runs `sql` on its own connection to `path` (as another program would).
absl::Status RawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open(path.c_str(), &db);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  absl::Status status =
      rc == SQLITE_OK ? absl::OkStatus()
                      : absl::InternalError(absl::StrCat(
                            "raw sqlite: ", sqlite3_errmsg(db), " in ", sql));
  sqlite3_close(db);
  return status;
}

NewJob MakeJob(const std::string& queue = "q", const std::string& type = "t",
               int32_t max_attempts = 3) {
  NewJob job;
  job.queue = queue;
  job.type = type;
  job.payload = "secret-payload";
  job.max_attempts = max_attempts;
  return job;
}

DequeueOptions LeaseOptions(const std::string& queue = "q", int max_jobs = 1,
                            absl::Duration lease = absl::Minutes(1)) {
  DequeueOptions options;
  options.queue = queue;
  options.max_jobs = max_jobs;
  options.lease_duration = lease;
  options.worker_id = "w";
  return options;
}

CronDefinition MakeCron(const std::string& name) {
  CronDefinition cron;
  cron.name = name;
  cron.schedule = "*/5 * * * *";
  cron.timezone = "Europe/London";
  cron.job.queue = "cronq";
  cron.job.type = "report";
  cron.job.payload = std::string("bin\0ary", 7);
  cron.job.priority = 4;
  cron.job.max_attempts = 2;
  cron.misfire_policy = MisfirePolicy::kFireAll;
  cron.catchup_window = absl::Minutes(90) + absl::Nanoseconds(7);
  cron.overlap_policy = OverlapPolicy::kWait;
  return cron;
}

void ExpectSameJob(const Job& a, const Job& b) {
  SCOPED_TRACE("job " + a.id);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.queue, b.queue);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.payload, b.payload);
  EXPECT_EQ(a.priority, b.priority);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.attempts, b.attempts);
  EXPECT_EQ(a.max_attempts, b.max_attempts);
  EXPECT_EQ(a.run_at, b.run_at);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.updated_at, b.updated_at);
  EXPECT_EQ(a.last_error, b.last_error);
  EXPECT_EQ(a.idempotency_key, b.idempotency_key);
  EXPECT_EQ(a.lease_expires_at, b.lease_expires_at);
  EXPECT_EQ(a.lease_token, b.lease_token);
  EXPECT_EQ(a.worker_id, b.worker_id);
  EXPECT_EQ(a.cron_name, b.cron_name);
  EXPECT_EQ(a.cron_tick_time, b.cron_tick_time);
  EXPECT_EQ(a.seq, b.seq);
}

void ExpectSameCron(const CronRecord& a, const CronRecord& b) {
  SCOPED_TRACE("schedule " + a.definition.name);
  EXPECT_TRUE(a.definition == b.definition);
  EXPECT_EQ(a.state.next_fire_time, b.state.next_fire_time);
  EXPECT_EQ(a.state.last_fire_time, b.state.last_fire_time);
  EXPECT_EQ(a.state.last_job_id, b.state.last_job_id);
  EXPECT_EQ(a.state.fired_count, b.state.fired_count);
  EXPECT_EQ(a.state.missed_count, b.state.missed_count);
  EXPECT_EQ(a.state.overlap_skipped_count, b.state.overlap_skipped_count);
  EXPECT_EQ(a.state.waiting_tick_time, b.state.waiting_tick_time);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.updated_at, b.updated_at);
  EXPECT_EQ(a.version, b.version);
}

class SqliteJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-sqlite-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/adjutant.db";
  }

  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  SqliteOptions Options() const {
    SqliteOptions options;
    options.path = path_;
    return options;
  }

  absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open() {
    return SqliteJobStore::Open(Options());
  }

  // Every job in the store, in seq order.
  static std::vector<Job> AllJobs(JobStore& store) {
    std::vector<Job> all;
    std::string token;
    do {
      absl::StatusOr<JobPage> page =
          store.ListJobs("", JobState::kUnspecified, 500, token);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      all.insert(all.end(), page->jobs.begin(), page->jobs.end());
      token = page->next_page_token;
    } while (!token.empty());
    return all;
  }

  // Opens path_ and expects a refusal naming `reason`, with the file's bytes
  // and the directory's contents exactly as before.
  void ExpectRefusedUntouched(const std::string& reason) {
    std::string before = ReadBytes(path_);
    std::set<std::string> files_before = FilesIn(dir_);
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> store = Open();
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition)
        << store.status();
    EXPECT_THAT(std::string(store.status().message()), HasSubstr(reason));
    EXPECT_THAT(std::string(store.status().message()), HasSubstr(path_));
    EXPECT_EQ(ReadBytes(path_), before) << "the refused file was modified";
    EXPECT_EQ(FilesIn(dir_), files_before);
  }

  std::string dir_;
  std::string path_;
  absl::Time now_ = absl::FromUnixSeconds(1767225600);  // 2026-01-01 UTC
};

// ---- Reopening --------------------------------------------------------------

TEST_F(SqliteJobStoreTest, ReopenKeepsJobsLeasesCronsClaimsAndTerm) {
  std::vector<Job> jobs_before;
  std::vector<CronRecord> crons_before;
  Lease live;
  std::string acked_token;
  std::string acked_id;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    // One job in each state, plus a delayed one, a keyed one and one of
    // another queue.
    NewJob delayed = MakeJob();
    delayed.run_at = now_ + absl::Hours(2) + absl::Nanoseconds(123);
    NewJob keyed = MakeJob("other");
    keyed.idempotency_key = "key-1";
    keyed.priority = -3;
    std::vector<NewJob> batch = {MakeJob(), MakeJob(), MakeJob("q", "t", 1),
                                 MakeJob(), MakeJob(), delayed,
                                 keyed};
    ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> ids,
                         store->Enqueue(batch, now_));
    ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                         store->Dequeue(LeaseOptions("q", 4), now_));
    ASSERT_THAT(leases, SizeIs(4));
    // leases[0]: stays leased. [1]: acked. [2]: lease expires, dead (1
    // attempt). [3]: nacked to retry later. The fifth job: cancelled.
    live = leases[0];
    acked_id = leases[1].job.id;
    acked_token = leases[1].token;
    ASSERT_OK(store->Ack(acked_id, acked_token, now_ + absl::Seconds(1)));
    ASSERT_OK(store
                  ->Nack(leases[3].job.id, leases[3].token,
                         NackOptions{"flaky", absl::Minutes(5), false},
                         now_ + absl::Seconds(2))
                  .status());
    ASSERT_OK_AND_ASSIGN(
        live.expires_at,
        store->ExtendLease(live.job.id, live.token, absl::Hours(1),
                           now_ + absl::Seconds(50)));
    ASSERT_OK(store->ExpireLeases(now_ + absl::Minutes(1)).status());
    ASSERT_OK(store->CancelJob(ids[4].job_id, now_).status());

    // A schedule that fired one tick under term 7.
    CronState state;
    state.next_fire_time = now_ + absl::Minutes(5);
    ASSERT_OK_AND_ASSIGN(CronRecord cron,
                         store->PutCron(MakeCron("nightly"), state, 0, now_));
    ASSERT_OK(
        store->PutCron(MakeCron("paused"), CronState(), 0, now_).status());
    CronTransition fire;
    fire.name = "nightly";
    fire.expected_version = cron.version;
    fire.term = 7;
    fire.claim_tick = now_ + absl::Minutes(5);
    NewJob tick_job = MakeJob("cronq", "report");
    tick_job.cron_name = "nightly";
    tick_job.cron_tick_time = *fire.claim_tick;
    fire.job = tick_job;
    fire.new_state.next_fire_time = now_ + absl::Minutes(10);
    fire.new_state.last_fire_time = *fire.claim_tick;
    fire.new_state.fired_count = 1;
    fire.new_state.waiting_tick_time = now_ + absl::Minutes(5);
    ASSERT_OK(
        store->ApplyCronTransition(fire, now_ + absl::Minutes(5)).status());

    jobs_before = AllJobs(*store);
    ASSERT_OK_AND_ASSIGN(CronPage page, store->ListCrons(10, ""));
    crons_before = page.crons;
  }
  // Every state is represented.
  std::set<JobState> states;
  for (const Job& job : jobs_before) states.insert(job.state);
  EXPECT_EQ(states, (std::set<JobState>{JobState::kPending, JobState::kLeased,
                                        JobState::kSucceeded, JobState::kDead,
                                        JobState::kCancelled}));

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  std::vector<Job> jobs_after = AllJobs(*store);
  ASSERT_EQ(jobs_after.size(), jobs_before.size());
  for (size_t i = 0; i < jobs_before.size(); ++i) {
    ExpectSameJob(jobs_after[i], jobs_before[i]);
  }
  ASSERT_OK_AND_ASSIGN(CronPage crons_after, store->ListCrons(10, ""));
  ASSERT_EQ(crons_after.crons.size(), crons_before.size());
  for (size_t i = 0; i < crons_before.size(); ++i) {
    ExpectSameCron(crons_after.crons[i], crons_before[i]);
  }
  EXPECT_EQ(*store->HighestTerm(), 7u);

  // The live lease still works, the acked one still recognises its retry.
  EXPECT_TRUE(store->Ack(acked_id, acked_token, now_ + absl::Minutes(2)).ok());
  EXPECT_TRUE(
      store->Ack(live.job.id, live.token, now_ + absl::Minutes(30)).ok());
  // The claim survived: the same tick cannot fire again.
  ASSERT_OK_AND_ASSIGN(CronRecord nightly, store->GetCron("nightly"));
  CronTransition again;
  again.name = "nightly";
  again.expected_version = nightly.version;
  again.term = 7;
  again.claim_tick = now_ + absl::Minutes(5);
  again.new_state = nightly.state;
  EXPECT_EQ(store->ApplyCronTransition(again, now_).status().code(),
            absl::StatusCode::kAlreadyExists);
  // The term cannot go back; the idempotency key still finds its job; seq
  // keeps growing.
  EXPECT_EQ(store->ObserveTerm(6).status().code(),
            absl::StatusCode::kFailedPrecondition);
  NewJob keyed = MakeJob("other");
  keyed.idempotency_key = "key-1";
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                       store->Enqueue({keyed, MakeJob()}, now_));
  EXPECT_TRUE(results[0].duplicate);
  ASSERT_OK_AND_ASSIGN(Job fresh, store->GetJob(results[1].job_id));
  EXPECT_GT(fresh.seq, jobs_before.back().seq);
}

// The store's two threads carry names, so that `top -H` and a profiler tell
// the writer (the bottleneck of a busy store) from gRPC's threads.
TEST_F(SqliteJobStoreTest, ItsThreadsAreNamed) {
  auto thread_names = [] {
    std::multiset<std::string> names;
    for (const auto& task :
         std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      std::getline(comm, name);
      names.insert(name);
    }
    return names;
  };
  // Named by their creator, so named once Open returned. (At least one:
  // a store of an earlier test in this process may still be ending.)
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  const std::multiset<std::string> names = thread_names();
  EXPECT_GE(names.count("sqlite-writer"), 1u);
  EXPECT_GE(names.count("sqlite-answer"), 1u);
}

// A transaction object already committed, or moved from, touches nothing:
// its connection may have begun another transaction since.
TEST_F(SqliteJobStoreTest, AnEndedTransactionObjectTouchesNothing) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteConnection> c,
                       SqliteConnection::Open(
                           path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  ASSERT_OK(c->Exec("CREATE TABLE t (x INTEGER)"));
  auto rows = [&c]() -> int64_t {
    absl::StatusOr<SqliteStatement> count =
        c->PrepareOnce("SELECT COUNT(*) FROM t");
    EXPECT_TRUE(count.ok() && *count->Step());
    return count.ok() ? count->ColumnInt(0) : -1;
  };

  ASSERT_OK_AND_ASSIGN(SqliteTransaction first, c->Begin("BEGIN IMMEDIATE"));
  ASSERT_OK(c->Exec("INSERT INTO t VALUES (1)"));
  ASSERT_OK(first.Commit());
  {
    ASSERT_OK_AND_ASSIGN(SqliteTransaction second, c->Begin("BEGIN IMMEDIATE"));
    ASSERT_OK(c->Exec("INSERT INTO t VALUES (2)"));
    EXPECT_EQ(first.Commit().code(), absl::StatusCode::kFailedPrecondition);
    SqliteTransaction moved = std::move(second);
    bool ran = false;
    EXPECT_EQ(second
                  .RunInSavepoint([&ran] {
                    ran = true;
                    return absl::OkStatus();
                  })
                  .code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_FALSE(ran);
    EXPECT_EQ(second.Commit().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(moved.active());
    EXPECT_EQ(rows(), 2);
  }  // `moved` rolls back: the second row was never committed
  EXPECT_EQ(rows(), 1);
}

// ---- Files Open must refuse without touching --------------------------------

TEST_F(SqliteJobStoreTest, RefusesAFileThatIsNotSqlite) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "this is a text file, not a database\n";
  WriteBytes(path_, text);
  ExpectRefusedUntouched("not a usable SQLite database");
}

TEST_F(SqliteJobStoreTest, RefusesACorruptSqliteHeader) {
  // The magic string of a SQLite file, then garbage: a damaged database.
  std::string bytes("SQLite format 3\0", 16);
  for (int i = 0; i < 8192; ++i) bytes.push_back(static_cast<char>(i * 7 + 3));
  WriteBytes(path_, bytes);
  ExpectRefusedUntouched("not a usable SQLite database");
}

TEST_F(SqliteJobStoreTest, RefusesASqliteDatabaseOfAnotherApplication) {
  ASSERT_OK(RawExec(path_,
                    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner "
                    "TEXT); INSERT INTO accounts (owner) VALUES ('alice');"));
  ExpectRefusedUntouched("not Adjutant");
}

TEST_F(SqliteJobStoreTest, RefusesADatabaseWithAnotherApplicationId) {
  ASSERT_OK(RawExec(path_,
                    "PRAGMA application_id = 1234567; "
                    "CREATE TABLE t (x);"));
  ExpectRefusedUntouched("application_id 1234567");
}

TEST_F(SqliteJobStoreTest, RefusesAForeignDatabaseInWalMode) {
  // A WAL database keeps part of its state beside the file; a refusal must
  // not checkpoint it into the file either.
  ASSERT_OK(RawExec(path_,
                    "PRAGMA journal_mode = WAL; CREATE TABLE t (x); "
                    "INSERT INTO t VALUES (1);"));
  ExpectRefusedUntouched("not Adjutant");
}

TEST_F(SqliteJobStoreTest, RefusesAForeignDatabaseThatAnotherProgramHasOpen) {
  // The other program's table is still only in its -wal file: Open must
  // read the WAL to see it, and still change neither file.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other,
                         "PRAGMA journal_mode = WAL; PRAGMA "
                         "wal_autocheckpoint = 0; CREATE TABLE t (x); "
                         "INSERT INTO t VALUES (1);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  std::string wal_before = ReadBytes(path_ + "-wal");
  ASSERT_FALSE(wal_before.empty());
  ExpectRefusedUntouched("not Adjutant");
  EXPECT_EQ(ReadBytes(path_ + "-wal"), wal_before);
  sqlite3_close(other);
}

TEST_F(SqliteJobStoreTest, RefusesADatabaseWithGarbledPages) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    std::vector<NewJob> batch(200, MakeJob());
    for (NewJob& job : batch) job.payload = std::string(500, 'p');
    ASSERT_OK(store->Enqueue(batch, now_).status());
  }
  // The header and the schema (page 1) intact, a page of jobs garbled: only
  // reading the whole file finds it.
  constexpr size_t kPage = 4096;
  std::string bytes = ReadBytes(path_);
  ASSERT_GT(bytes.size(), 8 * kPage);
  ASSERT_FALSE(std::filesystem::exists(path_ + "-wal"));
  const size_t page = bytes.size() / kPage - 2;
  for (size_t i = 0; i < kPage; ++i) {
    bytes[page * kPage + i] = static_cast<char>(i * 37 + 11);
  }
  WriteBytes(path_, bytes);
  ExpectRefusedUntouched("is corrupt");
}

TEST_F(SqliteJobStoreTest, RefusesANewerSchemaAndKeepsItsData) {
  std::string id;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                         store->Enqueue({MakeJob()}, now_));
    id = results[0].job_id;
  }
  // What a future build would have left behind.
  ASSERT_OK(RawExec(path_, absl::StrCat("PRAGMA user_version = ",
                                        SqliteJobStore::kSchemaVersion + 1)));
  ExpectRefusedUntouched(absl::StrCat("schema version ",
                                      SqliteJobStore::kSchemaVersion + 1,
                                      ", newer than this build supports"));

  // Back at the version this build knows, the same file opens with its job.
  ASSERT_OK(RawExec(path_, absl::StrCat("PRAGMA user_version = ",
                                        SqliteJobStore::kSchemaVersion)));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  EXPECT_TRUE(store->GetJob(id).ok());
}

TEST_F(SqliteJobStoreTest, OpenRejectsBadOptions) {
  SqliteOptions options;
  absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
      SqliteJobStore::Open(options);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("path"));

  options.path = dir_ + "/missing-directory/adjutant.db";
  store = SqliteJobStore::Open(options);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable)
      << store.status();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(options.path));
}

// ---- Migrations -------------------------------------------------------------

TEST_F(SqliteJobStoreTest, MigratesAnEmptyFile) {
  WriteBytes(path_, "");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  EXPECT_THAT(
      *store->QueryForTest("PRAGMA user_version"),
      ::testing::ElementsAre(absl::StrCat(SqliteJobStore::kSchemaVersion)));
  EXPECT_THAT(
      *store->QueryForTest("PRAGMA application_id"),
      ::testing::ElementsAre(absl::StrCat(SqliteJobStore::kApplicationId)));
  ASSERT_OK_AND_ASSIGN(
      std::vector<std::string> tables,
      store->QueryForTest("SELECT name FROM sqlite_schema WHERE type = "
                          "'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"));
  EXPECT_THAT(tables, ::testing::ElementsAre("cron_claims", "crons", "jobs",
                                             "meta", "queue_counts"));
  ASSERT_OK(store->Enqueue({MakeJob()}, now_).status());
  EXPECT_THAT(*store->Dequeue(LeaseOptions(), now_), SizeIs(1));
}

TEST_F(SqliteJobStoreTest, ReopeningACurrentFileChangesNoSchema) {
  const std::string kSchema =
      "SELECT type, name, sql FROM sqlite_schema ORDER BY name";
  std::vector<std::string> schema;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    ASSERT_OK_AND_ASSIGN(schema, store->QueryForTest(kSchema));
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  EXPECT_EQ(*store->QueryForTest(kSchema), schema);
}

TEST_F(SqliteJobStoreTest, TwoStoresCreatingOneFileAtOnceBothSucceed) {
  for (int round = 0; round < 5; ++round) {
    path_ = absl::StrCat(dir_, "/race-", round, ".db");
    absl::Notification go;
    absl::Status results[2];
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, i] {
        go.WaitForNotification();
        absl::StatusOr<std::unique_ptr<SqliteJobStore>> store = Open();
        results[i] = store.status();
        if (store.ok()) {
          results[i] = (*store)->Enqueue({MakeJob()}, now_).status();
        }
      });
    }
    go.Notify();
    for (std::thread& t : threads) t.join();
    EXPECT_TRUE(results[0].ok()) << results[0];
    EXPECT_TRUE(results[1].ok()) << results[1];
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    EXPECT_THAT(AllJobs(*store), SizeIs(2));
  }
}

// ---- Two stores on one file -------------------------------------------------

// Runs `call` again while it fails with UNAVAILABLE: what the contract
// (sqlite_job_store.h) says a write waiting past busy_timeout for another
// connection's lock gets, and what a caller may retry, since the failed call
// changed nothing. Gives up after `max_tries`, returning the last error.
template <typename Call>
auto RetryUnavailable(Call call, int max_tries = 1000) -> decltype(call()) {
  auto result = call();
  for (int tries = 1; tries < max_tries; ++tries) {
    absl::Status status;
    if constexpr (std::is_same_v<decltype(result), absl::Status>) {
      status = result;
    } else {
      status = result.status();
    }
    if (!absl::IsUnavailable(status)) break;
    result = call();
  }
  return result;
}

TEST_F(SqliteJobStoreTest, TwoStoresWithFourThreadsEachNeverLeaseAJobTwice) {
  constexpr int kJobs = 2000;
  constexpr int kThreadsPerStore = 4;
  constexpr int kThreads = 2 * kThreadsPerStore;
  SqliteOptions options = Options();
  // The property is about locking, not durability: skip the fsyncs.
  options.synchronous = SqliteOptions::Synchronous::kNormal;
  // SQLite's busy handler polls with growing sleeps and no queue, so under
  // load one store can keep missing the lock for longer than any timeout;
  // a short one makes that UNAVAILABLE (and its retry below) likely rather
  // than a rare event on a loaded machine.
  options.busy_timeout = absl::Milliseconds(50);
  std::unique_ptr<SqliteJobStore> stores[2];
  for (auto& store : stores) {
    ASSERT_OK_AND_ASSIGN(store, SqliteJobStore::Open(options));
  }
  std::vector<NewJob> batch;
  for (int i = 0; i < kJobs; ++i) {
    batch.push_back(MakeJob("q", i % 2 == 0 ? "even" : "odd"));
  }
  ASSERT_OK(stores[0]->Enqueue(batch, now_).status());

  // Every thread leases its first jobs before any goes on, so both stores
  // (and every thread) take part however the threads are scheduled: with
  // unfair locking, one store could otherwise drain the queue alone.
  absl::Notification go;
  absl::BlockingCounter first_leases(kThreads);
  absl::Notification all_started;
  std::vector<std::vector<std::string>> leased(kThreads);
  std::vector<absl::Status> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      SqliteJobStore& store = *stores[t % 2];
      DequeueOptions dequeue = LeaseOptions("q", 1 + t % 3, absl::Hours(1));
      go.WaitForNotification();
      for (bool first = true;; first = false) {
        absl::StatusOr<std::vector<Lease>> leases =
            RetryUnavailable([&] { return store.Dequeue(dequeue, now_); });
        if (first) {
          // At most 3 jobs per thread are leased before all_started, so
          // every first Dequeue finds some.
          if (leases.ok() && leases->empty()) {
            leases = absl::InternalError("the first Dequeue found no job");
          }
          first_leases.DecrementCount();
          if (t == 0) {
            first_leases.Wait();
            all_started.Notify();
          }
          all_started.WaitForNotification();
        }
        if (!leases.ok()) {
          errors[t] = leases.status();
          return;
        }
        if (leases->empty()) return;
        for (const Lease& lease : *leases) {
          leased[t].push_back(lease.job.id);
          absl::Status ack = RetryUnavailable(
              [&] { return store.Ack(lease.job.id, lease.token, now_); });
          if (!ack.ok()) {
            errors[t] = ack;
            return;
          }
        }
      }
    });
  }
  go.Notify();
  for (std::thread& t : threads) t.join();

  std::vector<std::string> all;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(errors[t].ok()) << "thread " << t << ": " << errors[t];
    EXPECT_THAT(leased[t], Not(IsEmpty())) << "thread " << t;
    all.insert(all.end(), leased[t].begin(), leased[t].end());
  }
  std::set<std::string> distinct(all.begin(), all.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kJobs)) << "a job leased twice";
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kJobs));
  // Every job was leased exactly once, and acked.
  for (const Job& job : AllJobs(*stores[1])) {
    EXPECT_EQ(job.state, JobState::kSucceeded) << job.id;
    EXPECT_EQ(job.attempts, 1) << job.id;
  }
}

TEST_F(SqliteJobStoreTest, TwoStoresRacingForOneTickExactlyOneWins) {
  constexpr int kTicks = 20;
  std::unique_ptr<SqliteJobStore> stores[2];
  for (auto& store : stores) {
    ASSERT_OK_AND_ASSIGN(store, Open());
  }
  CronState state;
  state.next_fire_time = now_ + absl::Minutes(5);
  ASSERT_OK(stores[0]->PutCron(MakeCron("every5"), state, 0, now_).status());

  for (int tick = 1; tick <= kTicks; ++tick) {
    SCOPED_TRACE(absl::StrCat("tick ", tick));
    absl::Time tick_time = now_ + absl::Minutes(5 * tick);
    // Both schedulers read the same version, then race to fire the tick.
    CronTransition fire[2];
    for (int i = 0; i < 2; ++i) {
      ASSERT_OK_AND_ASSIGN(CronRecord cron, stores[i]->GetCron("every5"));
      fire[i].name = "every5";
      fire[i].expected_version = cron.version;
      fire[i].term = 1;
      fire[i].claim_tick = tick_time;
      NewJob job = MakeJob("cronq", "report");
      job.cron_name = "every5";
      job.cron_tick_time = tick_time;
      fire[i].job = job;
      fire[i].new_state = cron.state;
      fire[i].new_state.last_fire_time = tick_time;
      fire[i].new_state.next_fire_time = tick_time + absl::Minutes(5);
      fire[i].new_state.fired_count = cron.state.fired_count + 1;
    }
    absl::Notification go;
    absl::Status results[2];
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, i] {
        go.WaitForNotification();
        results[i] =
            stores[i]->ApplyCronTransition(fire[i], tick_time).status();
      });
    }
    go.Notify();
    for (std::thread& t : threads) t.join();

    int winners = results[0].ok() + results[1].ok();
    ASSERT_EQ(winners, 1) << results[0] << " / " << results[1];
    int loser = results[0].ok() ? 1 : 0;
    EXPECT_THAT(results[loser].code(),
                ::testing::AnyOf(absl::StatusCode::kAborted,
                                 absl::StatusCode::kAlreadyExists))
        << results[loser];
    // The loser, retrying with the fresh version, finds the tick claimed.
    ASSERT_OK_AND_ASSIGN(CronRecord fresh, stores[loser]->GetCron("every5"));
    fire[loser].expected_version = fresh.version;
    EXPECT_EQ(stores[loser]
                  ->ApplyCronTransition(fire[loser], tick_time)
                  .status()
                  .code(),
              absl::StatusCode::kAlreadyExists);
  }
  // One job per tick, no more.
  std::map<absl::Time, int> jobs_per_tick;
  for (const Job& job : AllJobs(*stores[0]))
    ++jobs_per_tick[job.cron_tick_time];
  EXPECT_EQ(jobs_per_tick.size(), static_cast<size_t>(kTicks));
  for (const auto& [tick, count] : jobs_per_tick) EXPECT_EQ(count, 1);
  EXPECT_EQ(stores[1]->GetCron("every5")->state.fired_count, kTicks);
}

// ---- The cost of Dequeue, and pragmas ---------------------------------------

// The virtual-machine steps run so far by every statement cached on the
// store's two connections (writes run on one, reads on the other)
// (SQLITE_STMTSTATUS_VM_STEP, read through SQLite's sqlite_stmt table;
// Debian builds SQLite with SQLITE_ENABLE_STMTVTAB). A statement runs
// several steps for each row it visits, so the steps that one call adds
// bound the rows it visited: a count, not a timing.
int64_t VmSteps(SqliteJobStore& store) {
  constexpr char kSql[] =
      "SELECT coalesce(sum(nstep), 0) FROM sqlite_stmt "
      "WHERE sql NOT LIKE '%sqlite_stmt%'";
  int64_t total = 0;
  for (const absl::StatusOr<std::vector<std::string>>& rows :
       {store.QueryForTest(kSql), store.QueryReaderForTest(kSql)}) {
    EXPECT_TRUE(rows.ok()) << rows.status();
    int64_t steps = -1;
    if (rows.ok() && rows->size() == 1) {
      EXPECT_TRUE(absl::SimpleAtoi((*rows)[0], &steps)) << (*rows)[0];
    }
    if (steps < 0) return -1;
    total += steps;
  }
  return total;
}

TEST_F(SqliteJobStoreTest, DequeueCostDoesNotGrowWithJobsItMustSkip) {
  // Jobs a Dequeue must step over to find what it may lease: delayed jobs
  // of a higher priority ahead of a due one, and jobs of types a job_types
  // filter does not want. Two shapes of queues, each built twice: with
  // kBig such jobs and with kSmall. A Dequeue that looked at them one by
  // one would cost several VM steps per job.
  constexpr int kBig = 20000;
  constexpr int kSmall = 10;
  SqliteOptions options = Options();
  options.synchronous = SqliteOptions::Synchronous::kNormal;  // just faster
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store,
                       SqliteJobStore::Open(options));
  std::map<std::string, std::string> ids;  // "<queue>/<type>" -> the one job
  for (int size : {kSmall, kBig}) {
    std::string suffix = absl::StrCat("-", size);
    std::vector<NewJob> batch;
    for (int i = 0; i < size; ++i) {
      // Not due for an hour, ahead of "late" by priority.
      NewJob delayed = MakeJob("delayed" + suffix, "bulk");
      delayed.priority = 5;
      delayed.run_at = now_ + absl::Hours(1) + absl::Seconds(i);
      batch.push_back(delayed);
      // Due, ahead of "rare" by priority, but of another type.
      NewJob due = MakeJob("due" + suffix, "bulk");
      due.priority = 5;
      batch.push_back(due);
    }
    batch.push_back(MakeJob("delayed" + suffix, "late"));
    batch.push_back(MakeJob("due" + suffix, "rare"));
    ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                         store->Enqueue(batch, now_));
    ids["delayed" + suffix + "/late"] = results[results.size() - 2].job_id;
    ids["due" + suffix + "/rare"] = results.back().job_id;
  }

  struct Case {
    std::string queue;
    std::vector<std::string> job_types;
    std::string expected_type;  // the type of the one job leased; "": none
  };
  const Case kCases[] = {
      {"delayed", {}, "late"},      {"delayed", {"bulk"}, ""},
      {"delayed", {"missing"}, ""}, {"delayed", {"late", "missing"}, "late"},
      {"due", {"missing"}, ""},     {"due", {"rare"}, "rare"},
  };
  for (const Case& c : kCases) {
    SCOPED_TRACE(absl::StrCat(c.queue, " job_types [",
                              absl::StrJoin(c.job_types, ","), "]"));
    int64_t steps[2];
    int i = 0;
    for (int size : {kSmall, kBig}) {
      std::string queue = absl::StrCat(c.queue, "-", size);
      DequeueOptions dequeue = LeaseOptions(queue);
      dequeue.job_types = c.job_types;
      int64_t before = VmSteps(*store);
      ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                           store->Dequeue(dequeue, now_));
      steps[i++] = VmSteps(*store) - before;
      std::vector<std::string> leased;
      for (const Lease& lease : leases) leased.push_back(lease.job.id);
      if (c.expected_type.empty()) {
        EXPECT_THAT(leased, IsEmpty());
      } else {
        EXPECT_THAT(leased,
                    ::testing::ElementsAre(ids[queue + "/" + c.expected_type]));
        // Give it back for the next case.
        ASSERT_OK(store
                      ->Nack(leases[0].job.id, leases[0].token,
                             NackOptions{"", absl::ZeroDuration(), false}, now_)
                      .status());
      }
    }
    ASSERT_OK_AND_ASSIGN(std::vector<std::string> plan,
                         store->DequeuePlanForTest(!c.job_types.empty()));
    SCOPED_TRACE("plan:\n" + absl::StrJoin(plan, "\n"));
    EXPECT_GT(steps[0], 0) << "the step counter counts nothing";
    EXPECT_LT(steps[1], kBig / 10)
        << "Dequeue visited rows in proportion to the jobs it skipped";
    EXPECT_LE(steps[1], steps[0] + steps[0] / 2)
        << "Dequeue cost grew from " << kSmall << " to " << kBig
        << " skipped jobs: " << steps[0] << " -> " << steps[1] << " steps";
  }

  // The instrument itself: a call that does visit every job of a queue
  // shows at least one step per job.
  int64_t before = VmSteps(*store);
  ASSERT_OK_AND_ASSIGN(JobPage page,
                       store->ListJobs(absl::StrCat("due-", kBig),
                                       JobState::kUnspecified, 2 * kBig, ""));
  EXPECT_THAT(page.jobs, SizeIs(kBig + 1));
  EXPECT_GT(VmSteps(*store) - before, kBig);
}

TEST_F(SqliteJobStoreTest, SynchronousIsWhatTheOptionsSay) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    EXPECT_THAT(*store->QueryForTest("PRAGMA synchronous"),
                ::testing::ElementsAre("2"));  // FULL
    EXPECT_THAT(*store->QueryForTest("PRAGMA journal_mode"),
                ::testing::ElementsAre("wal"));
    EXPECT_THAT(*store->QueryForTest("PRAGMA foreign_keys"),
                ::testing::ElementsAre("1"));
  }
  SqliteOptions options = Options();
  options.synchronous = SqliteOptions::Synchronous::kNormal;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store,
                       SqliteJobStore::Open(options));
  EXPECT_THAT(*store->QueryForTest("PRAGMA synchronous"),
              ::testing::ElementsAre("1"));  // NORMAL
}

// What schema version 4 added (the pending counts), undone.
constexpr char kDropVersion4[] =
    "DROP TRIGGER jobs_count_insert; DROP TRIGGER jobs_count_delete; "
    "DROP TRIGGER jobs_count_update; DROP TABLE queue_counts; ";

TEST_F(SqliteJobStoreTest, MigratesAVersion3FileCountingItsPendingJobs) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    for (int i = 0; i < 3; ++i) {
      ASSERT_OK(store->Enqueue({MakeJob()}, now_).status());
    }
    ASSERT_OK(store->Enqueue({MakeJob("other")}, now_).status());
    // One leased (counts), one acked (does not).
    ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                         store->Dequeue(LeaseOptions("q", 2), now_));
    ASSERT_EQ(leases.size(), 2u);
    ASSERT_OK(store->Ack(leases[0].job.id, leases[0].token, now_));
  }
  ASSERT_OK(
      RawExec(path_, kDropVersion4 + std::string("PRAGMA user_version = 3")));
  SqliteOptions options;
  options.path = path_;
  options.max_pending_per_queue = 3;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store,
                       SqliteJobStore::Open(options));
  EXPECT_THAT(
      *store->QueryForTest("PRAGMA user_version"),
      ::testing::ElementsAre(absl::StrCat(SqliteJobStore::kSchemaVersion)));
  EXPECT_THAT(
      *store->QueryForTest("SELECT queue || '=' || pending FROM queue_counts "
                           "ORDER BY queue"),
      ::testing::ElementsAre("other=1", "q=2"));
  // The migrated count drives the limit.
  ASSERT_OK(store->Enqueue({MakeJob()}, now_).status());
  EXPECT_EQ(store->Enqueue({MakeJob()}, now_).status().code(),
            absl::StatusCode::kResourceExhausted);
}

// The counting triggers of schema version 4, with upserts (5 replaced them).
constexpr char kVersion4Triggers[] = R"sql(
DROP TRIGGER jobs_count_insert;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
  WHEN NEW.state IN (1, 2)
BEGIN
  INSERT INTO queue_counts (queue, pending) VALUES (NEW.queue, 1)
    ON CONFLICT (queue) DO UPDATE SET pending = pending + 1;
END;
DROP TRIGGER jobs_count_update;
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
PRAGMA user_version = 4;
)sql";

TEST_F(SqliteJobStoreTest, MigratesAVersion4FileKeepingItsCounts) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    ASSERT_OK(store->Enqueue({MakeJob(), MakeJob()}, now_).status());
  }
  // The version 4 triggers, and a job written under them: the upserts
  // count as before.
  ASSERT_OK(RawExec(path_, kVersion4Triggers));
  ASSERT_OK(RawExec(
      path_,
      "INSERT INTO jobs (id, queue, type, payload, priority, state, "
      "attempts, max_attempts, run_at, created_at, updated_at, last_error, "
      "idempotency_key, lease_token, worker_id, cron_name) VALUES ('v4', "
      "'q', 't', x'', 0, 1, 0, 3, 0, 0, 0, '', '', '', '', '')"));
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    EXPECT_THAT(*store->QueryForTest(
                    "SELECT count(*) FROM sqlite_schema WHERE name "
                    "LIKE 'jobs_count_%' AND sql LIKE '%ON CONFLICT%'"),
                ::testing::ElementsAre("0"));
    EXPECT_THAT(
        *store->QueryForTest("PRAGMA user_version"),
        ::testing::ElementsAre(absl::StrCat(SqliteJobStore::kSchemaVersion)));
    EXPECT_THAT(*store->QueryForTest("SELECT queue || '=' || pending FROM "
                                     "queue_counts ORDER BY queue"),
                ::testing::ElementsAre("q=3"));
    // The new triggers: a new queue gets a row, a finished job leaves it,
    // and the last one leaving removes the row.
    ASSERT_OK(store->Enqueue({MakeJob("other")}, now_).status());
    ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                         store->Dequeue(LeaseOptions("q", 2), now_));
    ASSERT_EQ(leases.size(), 2u);
    ASSERT_OK(store->Ack(leases[0].job.id, leases[0].token, now_));
    EXPECT_THAT(*store->QueryForTest("SELECT queue || '=' || pending FROM "
                                     "queue_counts ORDER BY queue"),
                ::testing::ElementsAre("other=1", "q=2"));
    ASSERT_OK(store->Ack(leases[1].job.id, leases[1].token, now_));
    EXPECT_THAT(*store->QueryForTest("SELECT queue || '=' || pending FROM "
                                     "queue_counts ORDER BY queue"),
                ::testing::ElementsAre("other=1", "q=1"));
  }
}

// queue_counts, kept by triggers, against the rows themselves after every
// kind of write.
TEST_F(SqliteJobStoreTest, QueueCountsMatchTheJobsAfterEveryKindOfWrite) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  auto expect_counts_match = [&store](const std::string& after) {
    SCOPED_TRACE(after);
    ASSERT_OK_AND_ASSIGN(
        std::vector<std::string> rows,
        store->QueryForTest("SELECT queue || '=' || count(*) FROM jobs WHERE "
                            "state IN (1, 2) GROUP BY queue ORDER BY queue"));
    EXPECT_THAT(*store->QueryForTest("SELECT queue || '=' || pending FROM "
                                     "queue_counts ORDER BY queue"),
                ::testing::ElementsAreArray(rows));
  };
  NewJob keyed = MakeJob("a");
  keyed.idempotency_key = "k";
  ASSERT_OK(store->Enqueue({MakeJob("a"), keyed, MakeJob("b"), keyed}, now_)
                .status());
  expect_counts_match("a batch over two queues with a duplicate in it");
  ASSERT_OK(store->Enqueue({keyed}, now_).status());
  expect_counts_match("a duplicate alone");

  CronState state;
  state.next_fire_time = now_;
  ASSERT_OK(store->PutCron(MakeCron("every5"), state, 0, now_).status());
  ASSERT_OK_AND_ASSIGN(CronRecord cron, store->GetCron("every5"));
  CronTransition fire;
  fire.name = "every5";
  fire.expected_version = cron.version;
  fire.term = 1;
  fire.claim_tick = now_;
  NewJob job = MakeJob("cronq", "report");
  job.cron_name = "every5";
  job.cron_tick_time = now_;
  fire.job = job;
  fire.new_state = cron.state;
  fire.new_state.last_fire_time = now_;
  fire.new_state.next_fire_time = now_ + absl::Minutes(5);
  ASSERT_OK(store->ApplyCronTransition(fire, now_).status());
  expect_counts_match("a fired tick");

  ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                       store->Dequeue(LeaseOptions("a", 2), now_));
  ASSERT_EQ(leases.size(), 2u);
  expect_counts_match("leases");
  ASSERT_OK(store->Ack(leases[0].job.id, leases[0].token, now_));
  expect_counts_match("an ack");
  NackOptions dead;
  dead.dead = true;
  ASSERT_OK(
      store->Nack(leases[1].job.id, leases[1].token, dead, now_).status());
  expect_counts_match("a nack to DEAD");
  ASSERT_OK(store->RequeueJob(leases[1].job.id, now_).status());
  expect_counts_match("a requeue");
  ASSERT_OK_AND_ASSIGN(leases, store->Dequeue(LeaseOptions("b", 1), now_));
  ASSERT_OK(store->ExpireLeases(now_ + absl::Hours(1)).status());
  expect_counts_match("an expired lease");
  ASSERT_OK(store->CancelJob(leases[0].job.id, now_).status());
  expect_counts_match("a cancel");
  EXPECT_THAT(*store->QueryForTest("SELECT queue || '=' || pending FROM "
                                   "queue_counts ORDER BY queue"),
              ::testing::ElementsAre("a=1", "cronq=1"));
}

TEST_F(SqliteJobStoreTest, MigratesAVersion2FileAddingTheRetentionIndex) {
  std::string id;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> ids,
                         store->Enqueue({MakeJob()}, now_));
    id = ids[0].job_id;
  }
  // What schema version 2 looked like.
  ASSERT_OK(
      RawExec(path_, kDropVersion4 + std::string("DROP INDEX jobs_finished; "
                                                 "PRAGMA user_version = 2")));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  EXPECT_THAT(
      *store->QueryForTest("PRAGMA user_version"),
      ::testing::ElementsAre(absl::StrCat(SqliteJobStore::kSchemaVersion)));
  EXPECT_THAT(*store->QueryForTest("SELECT name FROM sqlite_schema WHERE name "
                                   "= 'jobs_finished'"),
              ::testing::ElementsAre("jobs_finished"));
  EXPECT_TRUE(store->GetJob(id).ok());
  EXPECT_EQ(*store->PruneFinishedJobs(now_, now_, 10), 0);
}

// A clean close leaves everything in the database file: the -wal file is
// empty even when another connection keeps the file open (SQLite itself
// checkpoints and removes the WAL only when the last connection closes).
TEST_F(SqliteJobStoreTest, ClosingCheckpointsTheWalIntoTheDatabaseFile) {
  const std::string wal = path_ + "-wal";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> other, Open());
  std::vector<std::string> ids;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
    std::vector<NewJob> jobs(50, MakeJob());
    ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                         store->Enqueue(jobs, now_));
    for (const EnqueueResult& r : results) ids.push_back(r.job_id);
    ASSERT_TRUE(std::filesystem::exists(wal));
    EXPECT_GT(std::filesystem::file_size(wal), 0u);
    // Checkpoint() on its own does the same.
    ASSERT_OK(store->Checkpoint());
    EXPECT_EQ(std::filesystem::file_size(wal), 0u);
    ASSERT_OK(store->Enqueue({MakeJob()}, now_).status());
    EXPECT_GT(std::filesystem::file_size(wal), 0u);
  }
  EXPECT_EQ(std::filesystem::file_size(wal), 0u)
      << "the closed store left transactions in the WAL";
  EXPECT_THAT(AllJobs(*other), SizeIs(51));
  other.reset();
  // The last connection gone, the database file alone holds every job.
  std::error_code ignored;
  EXPECT_TRUE(!std::filesystem::exists(wal) ||
              std::filesystem::file_size(wal, ignored) == 0);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> reopened, Open());
  for (const std::string& id : ids) EXPECT_TRUE(reopened->GetJob(id).ok());
}

// ---- Errors -----------------------------------------------------------------

TEST_F(SqliteJobStoreTest, AWriterHoldingTheLockPastTheTimeoutIsUnavailable) {
  SqliteOptions options = Options();
  options.busy_timeout = absl::ZeroDuration();  // fail at once, no waiting
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store,
                       SqliteJobStore::Open(options));
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> ids,
                       store->Enqueue({MakeJob()}, now_));

  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr),
            SQLITE_OK);
  absl::StatusOr<std::vector<Lease>> leases =
      store->Dequeue(LeaseOptions(), now_);
  EXPECT_EQ(leases.status().code(), absl::StatusCode::kUnavailable)
      << leases.status();
  // Readers are not blocked by a writer in WAL mode.
  EXPECT_EQ(store->GetJob(ids[0].job_id)->state, JobState::kPending);
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);

  EXPECT_THAT(*store->Dequeue(LeaseOptions(), now_), SizeIs(1));
}

TEST_F(SqliteJobStoreTest, DiskFullIsResourceExhaustedAndStoresNothing) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  ASSERT_OK(store->Enqueue({MakeJob()}, now_).status());
  // Cap the file at its current size: the next page it needs is "disk full".
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> pages,
                       store->QueryForTest("PRAGMA page_count"));
  ASSERT_OK(
      store->QueryForTest("PRAGMA max_page_count = " + pages[0]).status());
  std::vector<NewJob> batch(200, MakeJob());
  for (NewJob& job : batch) job.payload = std::string(2000, 'p');
  absl::StatusOr<std::vector<EnqueueResult>> results =
      store->Enqueue(batch, now_);
  EXPECT_EQ(results.status().code(), absl::StatusCode::kResourceExhausted)
      << results.status();
  EXPECT_THAT(std::string(results.status().message()), Not(HasSubstr("pppp")));
  EXPECT_THAT(AllJobs(*store), SizeIs(1)) << "part of a failed batch stored";
}

TEST_F(SqliteJobStoreTest, ARefusedTransitionRecordsNoTerm) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  ASSERT_OK(store->ObserveTerm(5).status());
  ASSERT_OK_AND_ASSIGN(CronRecord cron,
                       store->PutCron(MakeCron("c"), CronState(), 0, now_));
  CronTransition fire;
  fire.name = "c";
  fire.expected_version = cron.version;
  fire.term = 5;
  fire.claim_tick = now_;
  fire.job = MakeJob("cronq", "report");
  ASSERT_OK_AND_ASSIGN(cron, store->ApplyCronTransition(fire, now_));

  // A higher term, but the tick is taken: the whole step is undone,
  // including the term it would have recorded.
  fire.expected_version = cron.version;
  fire.term = 9;
  EXPECT_EQ(store->ApplyCronTransition(fire, now_).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(*store->HighestTerm(), 5u);
  EXPECT_THAT(AllJobs(*store), SizeIs(1));
  EXPECT_EQ(store->GetCron("c")->version, cron.version);
}

TEST_F(SqliteJobStoreTest, WrongTokenMessageNamesTheFieldNotTheToken) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  ASSERT_OK(store->Enqueue({MakeJob()}, now_).status());
  ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                       store->Dequeue(LeaseOptions(), now_));
  std::string wrong = leases[0].token;
  wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
  absl::Status status = store->Ack(leases[0].job.id, wrong, now_);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("lease_token"));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr(wrong)));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr(leases[0].token)));
}

// ---- Time encoding ----------------------------------------------------------

TEST_F(SqliteJobStoreTest, TimesKeepNanosecondsAndSaturateOutOfRange) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteJobStore> store, Open());
  NewJob soon = MakeJob();
  soon.run_at = now_ + absl::Nanoseconds(1);
  NewJob far = MakeJob("far");
  far.run_at = absl::FromCivil(absl::CivilSecond(9999, 12, 31, 23, 59, 59),
                               absl::UTCTimeZone());
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> ids,
                       store->Enqueue({soon, far}, now_));
  EXPECT_EQ(store->GetJob(ids[0].job_id)->run_at, soon.run_at);
  EXPECT_THAT(*store->Dequeue(LeaseOptions(), now_), IsEmpty());
  EXPECT_THAT(*store->Dequeue(LeaseOptions(), soon.run_at), SizeIs(1));
  // Past 2262 a time no longer fits int64 nanoseconds: it reads back as
  // "never", which is what such a run_at means in practice.
  EXPECT_EQ(store->GetJob(ids[1].job_id)->run_at, absl::InfiniteFuture());

  EXPECT_EQ(DecodeTime(EncodeFiniteTime(absl::InfiniteFuture())),
            absl::InfiniteFuture());
  EXPECT_EQ(DecodeOrderedTime(EncodeOrderedTime(absl::InfinitePast())),
            absl::InfinitePast());
  absl::Time ancient = absl::FromCivil(absl::CivilSecond(1000, 1, 1, 0, 0, 0),
                                       absl::UTCTimeZone());
  EXPECT_NE(DecodeOrderedTime(EncodeOrderedTime(ancient)),
            absl::InfinitePast());
  EXPECT_EQ(DecodeDuration(EncodeDuration(absl::InfiniteDuration())),
            absl::InfiniteDuration());
  EXPECT_EQ(DecodeDuration(EncodeDuration(absl::Nanoseconds(-5))),
            absl::Nanoseconds(-5));
}

TEST(SqliteStatusTest, MapsResultCodesToCanonicalCodes) {
  EXPECT_EQ(SqliteStatus(SQLITE_BUSY, nullptr, "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(SqliteStatus(SQLITE_LOCKED, nullptr, "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(SqliteStatus(SQLITE_IOERR_FSYNC, nullptr, "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(SqliteStatus(SQLITE_FULL, nullptr, "x").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(SqliteStatus(SQLITE_CONSTRAINT_UNIQUE, nullptr, "x").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(SqliteStatus(SQLITE_CONSTRAINT_FOREIGNKEY, nullptr, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(SqliteStatus(SQLITE_CONSTRAINT_NOTNULL, nullptr, "x").code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(SqliteStatus(SQLITE_CORRUPT, nullptr, "x").code(),
            absl::StatusCode::kInternal);
  absl::Status status = SqliteStatus(SQLITE_FULL, nullptr, "enqueue");
  EXPECT_THAT(std::string(status.message()), HasSubstr("enqueue"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("full"));
}

}  // namespace
}  // namespace adjutant
