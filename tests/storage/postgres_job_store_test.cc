// PostgresJobStore against a throwaway PostgreSQL 15 (tests/fakes/
// postgres_server.h, one server per run of this binary, a fresh schema per
// case): the conformance suite, plus what only a shared, networked store has
// to prove: several stores (several pools, as several daemons) never lease a
// job twice or fire a tick twice, terms hold across stores, migrations run
// safely at once, and an outage of PostgreSQL is UNAVAILABLE, then over,
// with nothing acknowledged lost.
#include "storage/postgres_job_store.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/job.h"
#include "storage/postgres_connection.h"
#include "tests/fakes/postgres_server.h"
#include "tests/storage/job_store_conformance.h"

namespace adjutant {
namespace {

using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

#define PG_TEST_CONCAT_INNER(a, b) a##b
#define PG_TEST_CONCAT(a, b) PG_TEST_CONCAT_INNER(a, b)
#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const absl::Status assert_ok_status = (expr);           \
    ASSERT_TRUE(assert_ok_status.ok()) << assert_ok_status; \
  } while (0)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(PG_TEST_CONCAT(status_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(var, lhs, expr) \
  auto var = (expr);                              \
  ASSERT_TRUE(var.ok()) << var.status();          \
  lhs = std::move(*var)

// ---- The conformance suite --------------------------------------------------

// Each case gets its own schema, named after its (unique) temp dir.
absl::StatusOr<std::unique_ptr<JobStore>> OpenForDir(const std::string& dir) {
  absl::StatusOr<PostgresServer*> server = PostgresServer::Shared();
  if (!server.ok()) return server.status();
  PostgresOptions options;
  options.conninfo = (*server)->ConnInfo();
  options.schema = std::filesystem::path(dir).filename().string();
  options.pool_size = 2;
  absl::StatusOr<std::unique_ptr<PostgresJobStore>> store =
      PostgresJobStore::Open(options);
  if (!store.ok()) return store.status();
  return std::unique_ptr<JobStore>(std::move(*store));
}

StoreFactory PostgresFactory() {
  StoreFactory factory;
  factory.name = "Postgres";
  factory.make = OpenForDir;
  factory.reopen = OpenForDir;
  // A schema of its own, named after the case's temp dir (the parent).
  factory.make_limited = [](const std::string& dir,
                            int64_t max_pending_per_queue)
      -> absl::StatusOr<std::unique_ptr<JobStore>> {
    absl::StatusOr<PostgresServer*> server = PostgresServer::Shared();
    if (!server.ok()) return server.status();
    PostgresOptions options;
    options.conninfo = (*server)->ConnInfo();
    options.schema =
        std::filesystem::path(dir).parent_path().filename().string() +
        "_limited";
    options.pool_size = 2;
    options.max_pending_per_queue = max_pending_per_queue;
    absl::StatusOr<std::unique_ptr<PostgresJobStore>> store =
        PostgresJobStore::Open(options);
    if (!store.ok()) return store.status();
    return std::unique_ptr<JobStore>(std::move(*store));
  };
  return factory;
}

INSTANTIATE_TEST_SUITE_P(Postgres, JobStoreConformance,
                         ::testing::Values(PostgresFactory()),
                         JobStoreConformance::Name);
INSTANTIATE_TEST_SUITE_P(Postgres, PendingLimit,
                         ::testing::Values(PostgresFactory()),
                         JobStoreConformance::Name);

// ---- Helpers ----------------------------------------------------------------

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
  cron.timezone = "UTC";
  cron.job.queue = "cronq";
  cron.job.type = "report";
  cron.job.payload = std::string("bin\0ary", 7);
  cron.job.max_attempts = 2;
  return cron;
}

// A transition firing `tick` of `cron` as read, under `term`.
CronTransition FireTick(const CronRecord& cron, absl::Time tick,
                        uint64_t term) {
  CronTransition fire;
  fire.name = cron.definition.name;
  fire.expected_version = cron.version;
  fire.term = term;
  fire.claim_tick = tick;
  NewJob job = MakeJob("cronq", "report");
  job.cron_name = cron.definition.name;
  job.cron_tick_time = tick;
  fire.job = job;
  fire.new_state = cron.state;
  fire.new_state.last_fire_time = tick;
  fire.new_state.next_fire_time = tick + absl::Minutes(5);
  fire.new_state.fired_count = cron.state.fired_count + 1;
  return fire;
}

class PostgresJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<PostgresServer*> server = PostgresServer::Shared();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *server;
    const ::testing::TestInfo* info =
        ::testing::UnitTest::GetInstance()->current_test_info();
    // Unique in the process, so that --gtest_repeat starts afresh too.
    static std::atomic<int> cases{0};
    schema_ = absl::StrCat("t", cases++, "_", info->name());
    if (schema_.size() > 63) schema_.resize(63);
  }

  PostgresOptions Options() const {
    PostgresOptions options;
    options.conninfo = server_->ConnInfo();
    options.schema = schema_;
    return options;
  }

  absl::StatusOr<std::unique_ptr<PostgresJobStore>> Open() {
    return PostgresJobStore::Open(Options());
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

  PostgresServer* server_ = nullptr;
  std::string schema_;
  absl::Time now_ = absl::FromUnixSeconds(1767225600);  // 2026-01-01 UTC
};

// ---- Several stores on one database -----------------------------------------

TEST_F(PostgresJobStoreTest, TwoStoresWithFourThreadsEachNeverLeaseAJobTwice) {
  constexpr int kJobs = 2000;
  constexpr int kThreadsPerStore = 4;
  std::unique_ptr<PostgresJobStore> stores[2];
  for (auto& store : stores) {
    ASSERT_OK_AND_ASSIGN(store, Open());
  }
  std::vector<NewJob> batch;
  for (int i = 0; i < kJobs; ++i) {
    batch.push_back(MakeJob("q", i % 2 == 0 ? "even" : "odd"));
  }
  ASSERT_OK(stores[0]->Enqueue(batch, now_).status());

  absl::Notification go;
  std::vector<std::vector<std::string>> leased(2 * kThreadsPerStore);
  std::vector<absl::Status> errors(2 * kThreadsPerStore);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2 * kThreadsPerStore; ++t) {
    threads.emplace_back([&, t] {
      PostgresJobStore& store = *stores[t % 2];
      DequeueOptions dequeue = LeaseOptions("q", 1 + t % 3, absl::Hours(1));
      if (t % 4 == 3) dequeue.job_types = {"odd", "even"};
      go.WaitForNotification();
      while (true) {
        absl::StatusOr<std::vector<Lease>> leases =
            store.Dequeue(dequeue, now_);
        if (!leases.ok()) {
          errors[t] = leases.status();
          return;
        }
        if (leases->empty()) return;
        for (const Lease& lease : *leases) {
          leased[t].push_back(lease.job.id);
          absl::Status ack = store.Ack(lease.job.id, lease.token, now_);
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
  for (int t = 0; t < 2 * kThreadsPerStore; ++t) {
    EXPECT_TRUE(errors[t].ok()) << "thread " << t << ": " << errors[t];
    all.insert(all.end(), leased[t].begin(), leased[t].end());
  }
  std::set<std::string> distinct(all.begin(), all.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kJobs)) << "a job leased twice";
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kJobs));
  size_t by_store[2] = {0, 0};
  for (int t = 0; t < 2 * kThreadsPerStore; ++t)
    by_store[t % 2] += leased[t].size();
  EXPECT_GT(by_store[0], 0u);
  EXPECT_GT(by_store[1], 0u);
  for (const Job& job : AllJobs(*stores[1])) {
    EXPECT_EQ(job.state, JobState::kSucceeded) << job.id;
    EXPECT_EQ(job.attempts, 1) << job.id;
  }
}

TEST_F(PostgresJobStoreTest, TwoStoresRacingForOneTickExactlyOneWins) {
  constexpr int kTicks = 20;
  std::unique_ptr<PostgresJobStore> stores[2];
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
      fire[i] = FireTick(cron, tick_time, 1);
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
    EXPECT_THAT(results[loser].code(), AnyOf(absl::StatusCode::kAborted,
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
  std::map<absl::Time, int> jobs_per_tick;
  for (const Job& job : AllJobs(*stores[0]))
    ++jobs_per_tick[job.cron_tick_time];
  EXPECT_EQ(jobs_per_tick.size(), static_cast<size_t>(kTicks));
  for (const auto& [tick, count] : jobs_per_tick) EXPECT_EQ(count, 1);
  EXPECT_EQ(stores[1]->GetCron("every5")->state.fired_count, kTicks);
}

TEST_F(PostgresJobStoreTest, ALowerTermIsRefusedAcrossStores) {
  std::unique_ptr<PostgresJobStore> old_leader;
  std::unique_ptr<PostgresJobStore> new_leader;
  ASSERT_OK_AND_ASSIGN(old_leader, Open());
  ASSERT_OK_AND_ASSIGN(new_leader, Open());
  ASSERT_OK_AND_ASSIGN(
      CronRecord cron,
      old_leader->PutCron(MakeCron("c"), CronState(), 0, now_));
  ASSERT_EQ(*old_leader->ObserveTerm(4), 4u);

  // The new leader is told term 5 on its daemon; the old one has not heard.
  ASSERT_EQ(*new_leader->ObserveTerm(5), 5u);
  EXPECT_EQ(*old_leader->HighestTerm(), 5u);
  absl::Status deposed =
      old_leader->ApplyCronTransition(FireTick(cron, now_, 4), now_).status();
  EXPECT_EQ(deposed.code(), absl::StatusCode::kFailedPrecondition) << deposed;
  EXPECT_THAT(std::string(deposed.message()), HasSubstr("term 4"));
  EXPECT_EQ(old_leader->ObserveTerm(3).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Nothing of the refused step stayed: no job, no claim, same version.
  EXPECT_THAT(AllJobs(*new_leader), IsEmpty());
  EXPECT_EQ(new_leader->GetCron("c")->version, cron.version);

  // The new leader fires the tick; the old one, even with the fresh version
  // and the current term, cannot fire it again.
  ASSERT_OK(
      new_leader->ApplyCronTransition(FireTick(cron, now_, 5), now_).status());
  ASSERT_OK_AND_ASSIGN(CronRecord fresh, old_leader->GetCron("c"));
  EXPECT_EQ(old_leader->ApplyCronTransition(FireTick(fresh, now_, 5), now_)
                .status()
                .code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(AllJobs(*old_leader), SizeIs(1));
}

TEST_F(PostgresJobStoreTest, ConcurrentObserversAndFiringKeepTheTermMonotonic) {
  // One store keeps raising the term while another fires with a fixed
  // term: every firing that succeeded happened before the term passed it.
  std::unique_ptr<PostgresJobStore> elector;
  std::unique_ptr<PostgresJobStore> scheduler;
  ASSERT_OK_AND_ASSIGN(elector, Open());
  ASSERT_OK_AND_ASSIGN(scheduler, Open());
  CronState state;
  ASSERT_OK(scheduler->PutCron(MakeCron("c"), state, 0, now_).status());
  ASSERT_OK(scheduler->ObserveTerm(1).status());

  std::atomic<bool> refused{false};
  std::atomic<int> fired_after_refusal{0};
  std::thread raise([&] {
    for (uint64_t term = 2; term <= 30; ++term) {
      absl::Status s = elector->ObserveTerm(term).status();
      EXPECT_TRUE(s.ok()) << s;
    }
  });
  for (int tick = 0; tick < 200; ++tick) {
    absl::StatusOr<CronRecord> cron = scheduler->GetCron("c");
    ASSERT_TRUE(cron.ok()) << cron.status();
    absl::Status s =
        scheduler
            ->ApplyCronTransition(
                FireTick(*cron, now_ + absl::Seconds(tick), 1), now_)
            .status();
    if (s.ok()) {
      if (refused) ++fired_after_refusal;
    } else {
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
      refused = true;
    }
  }
  raise.join();
  EXPECT_EQ(fired_after_refusal, 0);
  ASSERT_OK_AND_ASSIGN(CronRecord cron, scheduler->GetCron("c"));
  EXPECT_EQ(
      scheduler
          ->ApplyCronTransition(FireTick(cron, now_ + absl::Hours(1), 1), now_)
          .status()
          .code(),
      absl::StatusCode::kFailedPrecondition)
      << "term 1 still fires after the term rose to 30";
  EXPECT_EQ(*scheduler->HighestTerm(), 30u);
}

// ---- Migrations
// ---------------------------------------------------------------

TEST_F(PostgresJobStoreTest, ThreeStoresMigratingAtOnceAllSucceed) {
  const std::string base = schema_.substr(0, 40);
  for (int round = 0; round < 3; ++round) {
    schema_ = absl::StrCat(base, "_race_", round);
    absl::Notification go;
    absl::Status results[3];
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i) {
      threads.emplace_back([&, i] {
        go.WaitForNotification();
        absl::StatusOr<std::unique_ptr<PostgresJobStore>> store = Open();
        results[i] = store.status();
        if (store.ok()) {
          results[i] = (*store)->Enqueue({MakeJob()}, now_).status();
        }
      });
    }
    go.Notify();
    for (std::thread& t : threads) t.join();
    for (const absl::Status& result : results)
      EXPECT_TRUE(result.ok()) << result;
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store, Open());
    EXPECT_THAT(AllJobs(*store), SizeIs(3));
    EXPECT_THAT(*store->QueryForTest("SELECT max(version), count(*) FROM "
                                     "schema_migrations"),
                ElementsAre(absl::StrCat(PostgresJobStore::kSchemaVersion, "|",
                                         PostgresJobStore::kSchemaVersion)));
  }
}

TEST_F(PostgresJobStoreTest, MigratesAVersion2SchemaCountingItsPendingJobs) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store, Open());
    for (int i = 0; i < 3; ++i) {
      ASSERT_OK(store->Enqueue({MakeJob()}, now_).status());
    }
    ASSERT_OK(store->Enqueue({MakeJob("other")}, now_).status());
    ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                         store->Dequeue(LeaseOptions("q", 2), now_));
    ASSERT_EQ(leases.size(), 2u);
    ASSERT_OK(store->Ack(leases[0].job.id, leases[0].token, now_));
  }
  // What schema version 2 looked like.
  const std::string quoted = QuoteIdentifier(schema_);
  ASSERT_OK(server_->Psql(absl::StrCat(
      "SET search_path TO ", quoted,
      "; DROP TABLE queue_counts, queue_count_deltas; "
      "DROP FUNCTION count_inserted_jobs, count_changed_job CASCADE; "
      "DELETE FROM schema_migrations WHERE version = 3")));
  PostgresOptions options = Options();
  options.max_pending_per_queue = 3;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store,
                       PostgresJobStore::Open(options));
  EXPECT_THAT(
      *store->QueryForTest("SELECT queue || '=' || pending FROM queue_counts "
                           "ORDER BY queue"),
      ElementsAre("other=1", "q=2"));
  ASSERT_OK(store->Enqueue({MakeJob()}, now_).status());
  EXPECT_EQ(store->Enqueue({MakeJob()}, now_).status().code(),
            absl::StatusCode::kResourceExhausted);
}

// Many concurrent writers never deadlock or wait on the count, and folding
// keeps it exact.
TEST_F(PostgresJobStoreTest, ThePendingCountStaysExactUnderConcurrentWrites) {
  PostgresOptions options = Options();
  options.max_pending_per_queue = 1000000;
  options.pool_size = 4;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store,
                       PostgresJobStore::Open(options));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  std::atomic<int> acked{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 30; ++i) {
        std::vector<NewJob> batch(50, MakeJob());
        if (!store->Enqueue(batch, now_).ok()) ++failures;
        absl::StatusOr<std::vector<Lease>> leases =
            store->Dequeue(LeaseOptions("q", 10), now_);
        if (!leases.ok()) {
          ++failures;
          continue;
        }
        for (const Lease& lease : *leases) {
          if (store->Ack(lease.job.id, lease.token, now_).ok()) {
            ++acked;
          } else {
            ++failures;
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  // 6000 enqueued, some acked (a Dequeue may skip rows others lock).
  const std::string expected = absl::StrCat(6000 - acked.load());
  EXPECT_THAT(*store->QueryForTest(
                  "SELECT coalesce((SELECT pending FROM queue_counts WHERE "
                  "queue = 'q'), 0) + (SELECT coalesce(sum(delta), 0) FROM "
                  "queue_count_deltas WHERE queue = 'q')"),
              ElementsAre(expected));
  EXPECT_THAT(*store->QueryForTest("SELECT count(*) FROM jobs WHERE "
                                   "queue = 'q' AND state IN (1, 2)"),
              ElementsAre(expected));
  EXPECT_THAT(*store->QueryForTest("SELECT count(*) < 1000 + 4 * 50 FROM "
                                   "queue_count_deltas"),
              ElementsAre("t"))
      << "folded as it went";
}

TEST_F(PostgresJobStoreTest, ReopeningACurrentSchemaChangesNothing) {
  std::string job_id;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store, Open());
    ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> ids,
                         store->Enqueue({MakeJob()}, now_));
    job_id = ids[0].job_id;
    ASSERT_OK(store->ObserveTerm(9).status());
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store, Open());
  EXPECT_EQ(store->GetJob(job_id)->payload, "secret-payload");
  EXPECT_EQ(*store->HighestTerm(), 9u);
  EXPECT_THAT(*store->QueryForTest("SELECT count(*) FROM schema_migrations"),
              ElementsAre(absl::StrCat(PostgresJobStore::kSchemaVersion)));
}

TEST_F(PostgresJobStoreTest, RefusesASchemaOfAnotherApplication) {
  const std::string quoted = QuoteIdentifier(schema_);
  ASSERT_OK(server_->Psql(absl::StrCat(
      "CREATE SCHEMA ", quoted, "; CREATE TABLE ", quoted,
      ".jobs (x int); INSERT INTO ", quoted, ".jobs VALUES (42)")));
  absl::StatusOr<std::unique_ptr<PostgresJobStore>> store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition)
      << store.status();
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("another application"));
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(schema_));
  // Untouched: still one table, with its row.
  PostgresOptions options = Options();
  options.schema = "t_probe_foreign";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> probe,
                       PostgresJobStore::Open(options));
  EXPECT_THAT(
      *probe->QueryForTest(absl::StrCat(
          "SELECT count(*) FROM pg_tables WHERE schemaname = '", schema_, "'")),
      ElementsAre("1"));
  EXPECT_THAT(
      *probe->QueryForTest(absl::StrCat("SELECT x FROM ", quoted, ".jobs")),
      ElementsAre("42"));
}

TEST_F(PostgresJobStoreTest, RefusesANewerSchemaVersion) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store, Open());
    ASSERT_OK(store->Enqueue({MakeJob()}, now_).status());
    ASSERT_OK(store
                  ->QueryForTest(absl::StrCat(
                      "INSERT INTO schema_migrations (version) VALUES (",
                      PostgresJobStore::kSchemaVersion + 1, ")"))
                  .status());
  }
  absl::StatusOr<std::unique_ptr<PostgresJobStore>> store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("newer than this build"));
}

// ---- Options, connections, errors -------------------------------------------

TEST_F(PostgresJobStoreTest, OpenRejectsBadOptionsNamingTheField) {
  PostgresOptions options = Options();
  options.conninfo = "";
  EXPECT_THAT(std::string(PostgresJobStore::Open(options).status().message()),
              HasSubstr("conninfo"));
  options = Options();
  options.pool_size = 0;
  absl::Status status = PostgresJobStore::Open(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("pool_size"));
  options = Options();
  options.schema = "";
  EXPECT_THAT(std::string(PostgresJobStore::Open(options).status().message()),
              HasSubstr("schema"));
  options = Options();
  options.max_retries = -1;
  EXPECT_THAT(std::string(PostgresJobStore::Open(options).status().message()),
              HasSubstr("max_retries"));
}

TEST_F(PostgresJobStoreTest, AnUnreachableServerIsUnavailable) {
  PostgresOptions options = Options();
  options.conninfo =
      absl::StrCat("host=", server_->dir(), "/nowhere port=5432 user=postgres");
  absl::Status status = PostgresJobStore::Open(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("PostgreSQL"));
}

TEST_F(PostgresJobStoreTest, ABrokenPooledConnectionIsReplaced) {
  PostgresOptions options = Options();
  options.pool_size = 3;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store,
                       PostgresJobStore::Open(options));
  // Open every pooled connection, then end all their sessions from outside.
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] { EXPECT_TRUE(store->Ping().ok()); });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_OK(
      server_->Psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'adjutant'"));
  // Every call finds a fresh connection, on its first try.
  ASSERT_OK(store->Ping());
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> ids,
                       store->Enqueue({MakeJob()}, now_));
  ASSERT_OK(store->GetJob(ids[0].job_id).status());
  ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                       store->Dequeue(LeaseOptions(), now_));
  ASSERT_THAT(leases, SizeIs(1));
  ASSERT_OK(store->Ack(leases[0].job.id, leases[0].token, now_));
}

TEST_F(PostgresJobStoreTest, ErrorsNameTheFieldNotTheTokenOrPayload) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store, Open());
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

TEST_F(PostgresJobStoreTest, ConcurrentEnqueuesOfOneKeyStoreOneJob) {
  std::unique_ptr<PostgresJobStore> stores[2];
  for (auto& store : stores) {
    ASSERT_OK_AND_ASSIGN(store, Open());
  }
  for (int round = 0; round < 20; ++round) {
    NewJob job = MakeJob();
    job.idempotency_key = absl::StrCat("key-", round);
    absl::Notification go;
    absl::StatusOr<std::vector<EnqueueResult>> results[2];
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, i] {
        go.WaitForNotification();
        results[i] = stores[i]->Enqueue({job}, now_);
      });
    }
    go.Notify();
    for (std::thread& t : threads) t.join();
    ASSERT_TRUE(results[0].ok()) << results[0].status();
    ASSERT_TRUE(results[1].ok()) << results[1].status();
    EXPECT_EQ((*results[0])[0].job_id, (*results[1])[0].job_id);
    EXPECT_NE((*results[0])[0].duplicate, (*results[1])[0].duplicate);
  }
  EXPECT_THAT(AllJobs(*stores[0]), SizeIs(20));
}

TEST(PostgresStatusTest, MapsSqlStatesToCanonicalCodes) {
  EXPECT_EQ(PostgresStatus("", "x", "y").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(PostgresStatus("08006", "x", "y").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(PostgresStatus("57P01", "x", "y").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(PostgresStatus("57P03", "x", "y").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(PostgresStatus("53100", "x", "y").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(PostgresStatus("40001", "x", "y").code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(PostgresStatus("40P01", "x", "y").code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(PostgresStatus("23505", "x", "y").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(PostgresStatus("23503", "x", "y").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(PostgresStatus("42P01", "x", "y").code(),
            absl::StatusCode::kInternal);
  EXPECT_TRUE(IsRetryableSqlState("40001"));
  EXPECT_TRUE(IsRetryableSqlState("40P01"));
  EXPECT_FALSE(IsRetryableSqlState("23505"));
  absl::Status status = PostgresStatus("53100", "enqueue", "disk full");
  EXPECT_THAT(std::string(status.message()), HasSubstr("enqueue"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("disk full"));
  EXPECT_EQ(QuoteIdentifier("a\"b"), "\"a\"\"b\"");
}

// ---- An outage of PostgreSQL ------------------------------------------------

// Last in the file: it stops the shared server (and starts it again).
TEST_F(PostgresJobStoreTest, AnOutageIsUnavailableThenOverWithNothingLost) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresJobStore> store, Open());
  // A worker enqueues, leases and acks in a loop through the outage,
  // remembering what the store acknowledged.
  absl::Mutex mu;
  std::set<std::string> enqueued;  // Enqueue returned OK
  std::set<std::string> acked;     // Ack returned OK
  std::vector<absl::Status> errors;
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    while (!stop) {
      absl::StatusOr<std::vector<EnqueueResult>> ids =
          store->Enqueue({MakeJob()}, now_);
      {
        absl::MutexLock lock(&mu);
        if (ids.ok()) {
          enqueued.insert((*ids)[0].job_id);
        } else {
          errors.push_back(ids.status());
        }
      }
      absl::StatusOr<std::vector<Lease>> leases =
          store->Dequeue(LeaseOptions("q", 1, absl::Hours(1)), now_);
      absl::Status ack = leases.status();
      std::string id;
      if (leases.ok() && !leases->empty()) {
        id = (*leases)[0].job.id;
        ack = store->Ack(id, (*leases)[0].token, now_);
      }
      absl::MutexLock lock(&mu);
      if (!ack.ok()) {
        errors.push_back(ack);
      } else if (!id.empty()) {
        acked.insert(id);
      }
    }
  });
  // Waits (on the worker's progress, not on time) until `n` acks are in.
  auto await_acks = [&](size_t n) {
    absl::MutexLock lock(&mu);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return acked.size() >= n;
    };
    mu.Await(absl::Condition(&done));
  };
  auto count = [&] {
    absl::MutexLock lock(&mu);
    return acked.size();
  };
  await_acks(20);  // some work before the outage

  ASSERT_OK(server_->Stop());
  // While it is down: every kind of call is UNAVAILABLE.
  EXPECT_EQ(store->Ping().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(store->Enqueue({MakeJob()}, now_).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(store->Dequeue(LeaseOptions(), now_).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(store->GetJob("x").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(store->ApplyCronTransition(CronTransition(), now_).status().code(),
            absl::StatusCode::kUnavailable);
  size_t acked_during = count();
  ASSERT_OK(server_->Resume());

  // Back: the very next call succeeds, and the worker makes progress again.
  ASSERT_OK(store->Ping());
  await_acks(acked_during + 20);
  stop = true;
  worker.join();

  absl::MutexLock lock(&mu);
  for (const absl::Status& error : errors) {
    EXPECT_EQ(error.code(), absl::StatusCode::kUnavailable) << error;
  }
  EXPECT_THAT(errors, Not(IsEmpty())) << "the worker never saw the outage";
  std::map<std::string, Job> stored;
  for (const Job& job : AllJobs(*store)) stored[job.id] = job;
  for (const std::string& id : enqueued) {
    EXPECT_EQ(stored.count(id), 1u) << "acknowledged enqueue lost: " << id;
  }
  for (const std::string& id : acked) {
    ASSERT_EQ(stored.count(id), 1u) << id;
    EXPECT_EQ(stored[id].state, JobState::kSucceeded) << id;
  }
}

}  // namespace
}  // namespace adjutant
