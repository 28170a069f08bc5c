// The Scheduler against real stores and a SimulatedClock: registration,
// leadership, firing exactly once per tick, misfire and overlap policies,
// DST, and the thread's sleeping. Nothing here sleeps: time moves only when
// a test moves it, and a test knows the thread is done when it is idle.
#include "scheduler/scheduler.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "spdlog/spdlog.h"
#include "storage/memory_job_store.h"
#include "storage/sqlite_job_store.h"
#include "tests/fakes/faulty_job_store.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {
namespace {

// 2026-01-01 00:00:00 UTC.
const absl::Time kStart = absl::FromUnixSeconds(1767225600);
// How long before its instant an ALLOW tick fires by default: the thread
// wakes that much before such a tick.
const absl::Duration kAhead = SchedulerConfig().fire_ahead;

// ---- Stores -----------------------------------------------------------

// A temporary directory, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-sched-XXXXXX")
            .string();
    EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The backend under test. A test opens "its" store any number of times (a
// restart reopens it): the memory kind keeps one store for the test, the
// SQLite kind opens the test's file again.
struct StoreKind {
  std::string name;  // "Memory" or "Sqlite"
};

std::shared_ptr<JobStore> OpenSqlite(const std::string& dir) {
  SqliteOptions options;
  options.path = dir + "/adjutant.db";
  options.synchronous = SqliteOptions::Synchronous::kNormal;
  absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
      SqliteJobStore::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::shared_ptr<JobStore>(std::move(*store)) : nullptr;
}

StoreKind MemoryKind() { return {"Memory"}; }
StoreKind SqliteKind() { return {"Sqlite"}; }

// Every job of `queue`, in enqueue order.
std::vector<Job> JobsOf(JobStore* store, const std::string& queue) {
  std::vector<Job> jobs;
  std::string token;
  do {
    absl::StatusOr<JobPage> page =
        store->ListJobs(queue, JobState::kUnspecified, 1000, token);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    jobs.insert(jobs.end(), page->jobs.begin(), page->jobs.end());
    token = page->next_page_token;
  } while (!token.empty());
  return jobs;
}

std::vector<absl::Time> TickTimes(JobStore* store, const std::string& queue) {
  std::vector<absl::Time> ticks;
  for (const Job& job : JobsOf(store, queue))
    ticks.push_back(job.cron_tick_time);
  return ticks;
}

bool AllDistinct(std::vector<absl::Time> ticks) {
  std::sort(ticks.begin(), ticks.end());
  return std::adjacent_find(ticks.begin(), ticks.end()) == ticks.end();
}

CronDefinition Cron(const std::string& name, const std::string& schedule,
                    const std::string& queue) {
  CronDefinition d;
  d.name = name;
  d.schedule = schedule;
  d.job.queue = queue;
  d.job.type = "tick";
  return d;
}

// ---- Fixture ------------------------------------------------------------

class SchedulerTest : public ::testing::TestWithParam<StoreKind> {
 protected:
  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::warn); }

  void SetUp() override { store_ = Open(); }

  std::shared_ptr<JobStore> Open() {
    if (GetParam().name == "Sqlite") return OpenSqlite(dir_.path());
    if (memory_ == nullptr) memory_ = std::make_shared<MemoryJobStore>();
    return memory_;
  }

  std::unique_ptr<Scheduler> NewScheduler(JobStore* store,
                                          SchedulerConfig config = {}) {
    return std::make_unique<Scheduler>(store, &clock_, config);
  }

  // A scheduler whose ALLOW ticks fire `ahead` before their instant.
  std::unique_ptr<Scheduler> NewSchedulerFiringAhead(absl::Duration ahead) {
    SchedulerConfig config;
    config.fire_ahead = ahead;
    return NewScheduler(store_.get(), config);
  }

  CronRecord MustRegister(Scheduler* s, const CronDefinition& d) {
    absl::StatusOr<CronRecord> r = s->Register(d);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CronRecord();
  }

  void Lead(Scheduler* s, uint64_t term,
            absl::Duration ttl = absl::ZeroDuration()) {
    absl::StatusOr<LeadershipState> l = s->SetLeadership(true, term, ttl);
    ASSERT_TRUE(l.ok()) << l.status();
    ASSERT_TRUE(l->leader);
  }

  CronRecord Get(const std::string& name) {
    absl::StatusOr<CronRecord> r = store_->GetCron(name);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CronRecord();
  }

  // A schedule "0 * * * *" of queue "q" registered at kStart: a pass at the
  // hour fires its first tick, and no other job of "q" was enqueued.
  void ExpectOnlyTheFirstHourlyTickOfQFires(Scheduler* s) {
    clock_.SetNow(kStart + absl::Hours(1));
    s->RunPassForTest();
    EXPECT_EQ(TickTimes(store_.get(), "q"),
              std::vector<absl::Time>{kStart + absl::Hours(1)});
  }

  TempDir dir_;
  SimulatedClock clock_{kStart};
  std::shared_ptr<JobStore> memory_;  // the memory kind's one store
  std::shared_ptr<JobStore> store_;
};

// ---- Registration -------------------------------------------------------

TEST_P(SchedulerTest, RegisterNormalizesAndComputesTheFirstTickFromNow) {
  clock_.SetNow(kStart + absl::Minutes(7));
  auto s = NewScheduler(store_.get());
  CronDefinition d = Cron("hourly", "0 * * * *", "");
  d.misfire_policy = MisfirePolicy::kUnspecified;
  d.overlap_policy = OverlapPolicy::kUnspecified;
  CronRecord r = MustRegister(s.get(), d);
  EXPECT_EQ(r.definition.timezone, "UTC");
  EXPECT_EQ(r.definition.job.queue, "default");
  EXPECT_EQ(r.definition.misfire_policy, MisfirePolicy::kFireOnce);
  EXPECT_EQ(r.definition.overlap_policy, OverlapPolicy::kAllow);
  EXPECT_EQ(r.definition.catchup_window, absl::Hours(1));
  EXPECT_EQ(r.state.next_fire_time, kStart + absl::Hours(1));
  EXPECT_EQ(r.created_at, kStart + absl::Minutes(7));
  EXPECT_EQ(r.version, 1);
  EXPECT_EQ(Get("hourly").state.next_fire_time, kStart + absl::Hours(1));
}

TEST_P(SchedulerTest, RegisterRefusesBadInputNamingTheFieldAndStoresNothing) {
  auto s = NewScheduler(store_.get());
  struct Case {
    std::function<void(CronDefinition*)> mutate;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](CronDefinition* d) { d->name.clear(); }, "name:"},
      {[](CronDefinition* d) { d->schedule = "61 * * * *"; }, "schedule:"},
      {[](CronDefinition* d) { d->schedule = ""; }, "schedule:"},
      {[](CronDefinition* d) { d->timezone = "Mars/Olympus"; }, "timezone:"},
      {[](CronDefinition* d) { d->job.type.clear(); }, "job.job_type:"},
      {[](CronDefinition* d) { d->job.max_attempts = -1; },
       "job.max_attempts:"},
      {[](CronDefinition* d) { d->catchup_window = absl::ZeroDuration(); },
       "catchup_window:"},
      {[](CronDefinition* d) {
         d->misfire_policy = static_cast<MisfirePolicy>(9);
       },
       "misfire_policy:"},
      {[](CronDefinition* d) {
         d->overlap_policy = static_cast<OverlapPolicy>(9);
       },
       "overlap_policy:"},
  };
  for (const Case& c : cases) {
    CronDefinition d = Cron("bad", "0 * * * *", "q");
    c.mutate(&d);
    absl::StatusOr<CronRecord> r = s->Register(d);
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(r.status().message(), c.field)) << r.status();
  }
  absl::StatusOr<CronPage> page = store_->ListCrons(10, "");
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->crons.empty());
}

TEST_P(SchedulerTest, IdenticalReRegistrationChangesNothing) {
  auto s = NewScheduler(store_.get());
  CronRecord first = MustRegister(s.get(), Cron("c", "*/5 * * * *", "q"));
  clock_.Advance(absl::Minutes(3));
  CronRecord again = MustRegister(s.get(), Cron("c", "*/5 * * * *", "q"));
  EXPECT_EQ(again.version, first.version);
  EXPECT_EQ(again.updated_at, first.updated_at);
  EXPECT_EQ(again.state.next_fire_time, first.state.next_fire_time);
  EXPECT_EQ(Get("c").version, first.version);
  // The same, spelled with the defaults left out.
  CronDefinition implicit = Cron("c", "*/5 * * * *", "q");
  implicit.timezone = "";
  implicit.misfire_policy = MisfirePolicy::kUnspecified;
  EXPECT_EQ(MustRegister(s.get(), implicit).version, first.version);
}

TEST_P(SchedulerTest, ChangedScheduleRecomputesOtherChangesKeepTheState) {
  auto s = NewScheduler(store_.get());
  CronRecord first = MustRegister(s.get(), Cron("c", "0 */6 * * *", "q"));
  EXPECT_EQ(first.state.next_fire_time, kStart + absl::Hours(6));

  clock_.Advance(absl::Minutes(90));
  CronDefinition d = Cron("c", "0 */6 * * *", "q");
  d.job.priority = 7;
  CronRecord priority = MustRegister(s.get(), d);
  EXPECT_EQ(priority.version, first.version + 1);
  EXPECT_EQ(priority.definition.job.priority, 7);
  EXPECT_EQ(priority.state.next_fire_time, kStart + absl::Hours(6));
  EXPECT_EQ(priority.created_at, first.created_at);

  d.schedule = "0 * * * *";
  CronRecord hourly = MustRegister(s.get(), d);
  EXPECT_EQ(hourly.state.next_fire_time, kStart + absl::Hours(2));

  d.timezone = "Asia/Kolkata";  // UTC+5:30: local hours fall on :30 UTC
  CronRecord zoned = MustRegister(s.get(), d);
  // Now is 07:00 in Kolkata: the next local hour, 08:00, is 02:30 UTC.
  EXPECT_EQ(zoned.state.next_fire_time,
            kStart + absl::Hours(2) + absl::Minutes(30));
}

TEST_P(SchedulerTest, EveryIsAnchoredAtCreation) {
  auto s = NewScheduler(store_.get());
  clock_.SetNow(kStart + absl::Seconds(7));
  CronRecord r = MustRegister(s.get(), Cron("e", "@every 90s", "q"));
  EXPECT_EQ(r.state.next_fire_time, kStart + absl::Seconds(97));
  clock_.Advance(absl::Seconds(100));  // now kStart + 107 s
  CronRecord changed = MustRegister(s.get(), Cron("e", "@every 60s", "q"));
  // Counted from created_at (kStart + 7 s), not from now.
  EXPECT_EQ(changed.state.next_fire_time, kStart + absl::Seconds(127));
}

TEST_P(SchedulerTest, UnregisterGetAndListPassThrough) {
  auto s = NewScheduler(store_.get());
  MustRegister(s.get(), Cron("a", "0 * * * *", "q"));
  MustRegister(s.get(), Cron("b", "0 * * * *", "q"));
  absl::StatusOr<CronPage> page = s->List(1, "");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->crons.size(), 1u);
  EXPECT_EQ(page->crons[0].definition.name, "a");
  EXPECT_TRUE(s->Unregister("a").ok());
  EXPECT_EQ(s->Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Unregister("a").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s->Get("b").ok());
}

// ---- Leadership -----------------------------------------------------------

TEST_P(SchedulerTest, FiresOnlyWhileLeader) {
  auto s = NewScheduler(store_.get());
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  clock_.Advance(absl::Seconds(5));
  EXPECT_EQ(s->RunPassForTest(), absl::InfiniteFuture());
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());

  Lead(s.get(), 1);
  // Found 5 s late: FIRE_ONCE fires the latest due tick.
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Seconds(6) - kAhead);
  EXPECT_EQ(TickTimes(store_.get(), "q"),
            std::vector<absl::Time>{kStart + absl::Seconds(5)});
  clock_.Advance(absl::Seconds(1));
  s->RunPassForTest();
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 2u);

  ASSERT_TRUE(s->SetLeadership(false, 1, absl::ZeroDuration()).ok());
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(s->RunPassForTest(), absl::InfiniteFuture());
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 2u);
}

TEST_P(SchedulerTest, FiredJobsCarryTheTemplateAndTheTick) {
  SchedulerConfig config;
  config.default_max_attempts = 4;
  auto s = NewScheduler(store_.get(), config);
  CronDefinition d = Cron("report", "0 * * * *", "reports");
  d.job.type = "build-report";
  d.job.payload = std::string("\0payload", 8);
  d.job.priority = -3;
  d.job.max_attempts = 0;  // the default
  MustRegister(s.get(), d);
  Lead(s.get(), 1);
  clock_.SetNow(kStart + absl::Hours(1));
  s->RunPassForTest();
  std::vector<Job> jobs = JobsOf(store_.get(), "reports");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].type, "build-report");
  EXPECT_EQ(jobs[0].payload, std::string("\0payload", 8));
  EXPECT_EQ(jobs[0].priority, -3);
  EXPECT_EQ(jobs[0].max_attempts, 4);
  EXPECT_EQ(jobs[0].state, JobState::kPending);
  EXPECT_EQ(jobs[0].cron_name, "report");
  EXPECT_EQ(jobs[0].cron_tick_time, kStart + absl::Hours(1));
  CronRecord r = Get("report");
  EXPECT_EQ(r.state.last_job_id, jobs[0].id);
  EXPECT_EQ(r.state.last_fire_time, kStart + absl::Hours(1));
  EXPECT_EQ(r.state.fired_count, 1);
  EXPECT_EQ(r.state.next_fire_time, kStart + absl::Hours(2));
}

TEST_P(SchedulerTest, LowerTermIsRefusedAndChangesNothing) {
  auto s = NewScheduler(store_.get());
  Lead(s.get(), 5);
  absl::StatusOr<LeadershipState> lower =
      s->SetLeadership(false, 4, absl::ZeroDuration());
  ASSERT_EQ(lower.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(lower.status().message(), "term:"))
      << lower.status();
  absl::StatusOr<LeadershipState> now = s->GetLeadership();
  ASSERT_TRUE(now.ok());
  EXPECT_TRUE(now->leader);
  EXPECT_EQ(now->term, 5u);
  EXPECT_EQ(now->highest_term, 5u);
  // The highest term is durable: a new scheduler on the store refuses it too.
  auto other = NewScheduler(store_.get());
  EXPECT_EQ(other->SetLeadership(true, 4, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(other->SetLeadership(true, 5, absl::ZeroDuration()).ok());
  EXPECT_EQ(s->SetLeadership(true, 1, -absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(SchedulerTest, LeadershipIsReportedWithItsWallClockExpiry) {
  auto s = NewScheduler(store_.get());
  absl::StatusOr<LeadershipState> none = s->GetLeadership();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->leader);
  EXPECT_EQ(none->term, 0u);

  absl::StatusOr<LeadershipState> l =
      s->SetLeadership(true, 3, absl::Seconds(10));
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->expires_at, kStart + absl::Seconds(10));
  EXPECT_EQ(l->highest_term, 3u);
  clock_.Advance(absl::Seconds(9));
  EXPECT_TRUE(s->GetLeadership()->leader);
  clock_.Advance(absl::Seconds(1));
  absl::StatusOr<LeadershipState> lapsed = s->GetLeadership();
  EXPECT_FALSE(lapsed->leader);
  EXPECT_EQ(lapsed->term, 3u);
  EXPECT_EQ(lapsed->expires_at, absl::InfiniteFuture());
  // Renewal without TTL: until revoked.
  absl::StatusOr<LeadershipState> renewed =
      s->SetLeadership(true, 3, absl::ZeroDuration());
  EXPECT_TRUE(renewed->leader);
  EXPECT_EQ(renewed->expires_at, absl::InfiniteFuture());
}

// ---- The thread -----------------------------------------------------------

TEST_P(SchedulerTest, ThreadFiresPerSecondWhileLeaderAndStopsWhenTheTtlLapses) {
  auto s = NewScheduler(store_.get());
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  s->Start();
  s->WaitForIdleForTest();
  for (int i = 0; i < 3; ++i) {  // not leader: nothing fires
    clock_.Advance(absl::Seconds(1));
    s->WaitForIdleForTest();
  }
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());

  const absl::Time led_at = clock_.Now();
  Lead(s.get(), 1, absl::Seconds(10));
  s->WaitForIdleForTest();
  for (int i = 0; i < 15; ++i) {
    clock_.Advance(absl::Seconds(1));
    s->WaitForIdleForTest();
  }
  std::vector<absl::Time> ticks = TickTimes(store_.get(), "q");
  EXPECT_TRUE(AllDistinct(ticks));
  // The tick found at the election (the latest of the missed ones), then one
  // a second until the TTL lapsed at led_at + 10 s: the tick due at that
  // very instant is not fired.
  ASSERT_EQ(ticks.size(), 10u);
  EXPECT_EQ(ticks.front(), led_at);
  EXPECT_EQ(ticks.back(), led_at + absl::Seconds(9));
  EXPECT_FALSE(s->GetLeadership()->leader);
}

TEST_P(SchedulerTest, RevocationStopsFiringAtOnce) {
  auto s = NewScheduler(store_.get());
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  Lead(s.get(), 1);
  s->Start();
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Seconds(1));
    s->WaitForIdleForTest();
  }
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 3u);
  ASSERT_TRUE(s->SetLeadership(false, 1, absl::ZeroDuration()).ok());
  // Nothing in flight once SetLeadership returned; nothing after.
  const size_t at_revocation = JobsOf(store_.get(), "q").size();
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Seconds(1));
    s->WaitForIdleForTest();
  }
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), at_revocation);
}

TEST_P(SchedulerTest, ThreadSleepsThroughTimeWhenNothingIsDue) {
  auto s = NewScheduler(store_.get());
  // Many schedules, all next due a week from now (fewer on SQLite, whose
  // registrations are transactions on a file).
  const absl::Time due = kStart + absl::Hours(24 * 7);
  const int count = GetParam().name == "Memory" ? 10000 : 1000;
  for (int i = 0; i < count; ++i) {
    CronDefinition d = Cron("weekly-" + std::to_string(i), "0 0 * * 4", "w");
    ASSERT_EQ(MustRegister(s.get(), d).state.next_fire_time, due);
  }
  Lead(s.get(), 1);
  s->Start();
  s->WaitForIdleForTest();
  // Every change so far was seen; now only time passes.
  const int64_t passes = s->PassCountForTest();
  for (int day = 0; day < 6; ++day) {
    clock_.Advance(absl::Hours(24));
    s->WaitForIdleForTest();
  }
  EXPECT_EQ(s->PassCountForTest(), passes);  // never woke
  EXPECT_TRUE(JobsOf(store_.get(), "w").empty());
  clock_.SetNow(due);
  s->WaitForIdleForTest();
  EXPECT_EQ(JobsOf(store_.get(), "w").size(), static_cast<size_t>(count));
  EXPECT_GT(s->PassCountForTest(), passes);
}

TEST_P(SchedulerTest, FollowerSleepsUntilTheLeadershipChanges) {
  auto s = NewScheduler(store_.get());
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  s->Start();
  s->WaitForIdleForTest();
  const int64_t passes = s->PassCountForTest();
  clock_.Advance(absl::Hours(5));
  s->WaitForIdleForTest();
  EXPECT_EQ(s->PassCountForTest(), passes);
  Lead(s.get(), 1);
  s->WaitForIdleForTest();
  EXPECT_GT(s->PassCountForTest(), passes);
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 1u);  // FIRE_ONCE after the gap
}

TEST_P(SchedulerTest, ThreadWakesForARegistration) {
  auto s = NewScheduler(store_.get());
  Lead(s.get(), 1);
  s->Start();
  s->WaitForIdleForTest();
  // Due in 10 s: the thread must re-plan its sleep to fire it.
  MustRegister(s.get(), Cron("soon", "10 * * * * *", "q"));
  s->WaitForIdleForTest();
  clock_.Advance(absl::Seconds(10));
  s->WaitForIdleForTest();
  EXPECT_EQ(TickTimes(store_.get(), "q"),
            std::vector<absl::Time>{kStart + absl::Seconds(10)});
}

// Days of ticks: on the memory store only, so that they take well under a
// second each (the store's speed is not what they are about).
class SchedulerDayTest : public SchedulerTest {};

// A simulated day of per-second ticks, one pass per second.
TEST_P(SchedulerDayTest, ADayOfPerSecondTicksFiresEachTickOnce) {
  auto s = NewScheduler(store_.get());
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  Lead(s.get(), 1);
  const int kDay = 24 * 3600;
  for (int i = 0; i < kDay; ++i) {
    clock_.Advance(absl::Seconds(1));
    s->RunPassForTest();
  }
  std::vector<absl::Time> ticks = TickTimes(store_.get(), "q");
  ASSERT_EQ(ticks.size(), static_cast<size_t>(kDay));
  for (int i = 0; i < kDay; ++i) {
    ASSERT_EQ(ticks[i], kStart + absl::Seconds(i + 1));
  }
  CronRecord r = Get("sec");
  EXPECT_EQ(r.state.fired_count, kDay);
  EXPECT_EQ(r.state.missed_count, 0);
}

// A day through the thread, moving time in big steps: a schedule every 10 s
// under FIRE_ALL catches up each 1000 s step (100 ticks, its cap), so every
// tick still fires once, oldest first.
TEST_P(SchedulerDayTest, ADayInBigStepsThroughTheThread) {
  auto s = NewScheduler(store_.get());
  CronDefinition d = Cron("ten", "*/10 * * * * *", "q");
  d.misfire_policy = MisfirePolicy::kFireAll;
  MustRegister(s.get(), d);
  Lead(s.get(), 1);
  s->Start();
  const int kSteps = 24 * 3600 / 1000 + 1;
  for (int i = 0; i < kSteps; ++i) {
    clock_.Advance(absl::Seconds(1000));
    s->WaitForIdleForTest();
  }
  std::vector<absl::Time> ticks = TickTimes(store_.get(), "q");
  ASSERT_EQ(ticks.size(), static_cast<size_t>(kSteps * 100));
  for (size_t i = 0; i < ticks.size(); ++i) {
    ASSERT_EQ(ticks[i], kStart + absl::Seconds(10 * (i + 1)));
  }
  EXPECT_EQ(Get("ten").state.missed_count, 0);
}

TEST_P(SchedulerTest, ReportsFiredJobsToTheServer) {
  SchedulerConfig config;
  std::vector<std::string> queues;
  config.on_job_fired = [&queues](const NewJob& job) {
    queues.push_back(job.queue);
  };
  auto s = NewScheduler(store_.get(), config);
  MustRegister(s.get(), Cron("a", "* * * * * *", "qa"));
  Lead(s.get(), 1);
  clock_.Advance(absl::Seconds(1));
  s->RunPassForTest();
  EXPECT_EQ(queues, std::vector<std::string>{"qa"});
}

// ---- Store faults ---------------------------------------------------------

TEST_P(SchedulerTest, RegisterRetriesALostCompareAndSet) {
  FaultyJobStore faulty(store_.get());
  SchedulerConfig config;
  config.max_register_attempts = 3;
  auto s = NewScheduler(&faulty, config);
  faulty.put_cron = {2, absl::AbortedError("raced"), false};
  CronRecord r = MustRegister(s.get(), Cron("c", "0 * * * *", "q"));
  EXPECT_EQ(r.version, 1);
  EXPECT_EQ(faulty.put_cron.remaining, 0);

  faulty.put_cron = {3, absl::AbortedError("raced"), false};
  CronDefinition changed = Cron("c", "*/5 * * * *", "q");
  absl::StatusOr<CronRecord> lost = s->Register(changed);
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Get("c").definition.schedule, "0 * * * *");  // nothing changed

  faulty.put_cron = {1, absl::UnavailableError("disk gone"), false};
  EXPECT_EQ(s->Register(changed).status().code(),
            absl::StatusCode::kUnavailable);  // not retried
  EXPECT_EQ(Get("c").version, 1);
}

TEST_P(SchedulerTest, StoreOutageDelaysFiringAndBacksOff) {
  FaultyJobStore faulty(store_.get());
  SchedulerConfig config;
  config.retry_backoff = absl::Seconds(3);
  auto s = NewScheduler(&faulty, config);
  MustRegister(s.get(), Cron("c", "0 * * * *", "q"));
  Lead(s.get(), 1);
  clock_.SetNow(kStart + absl::Hours(1));
  faulty.apply_transition = {1, absl::UnavailableError("disk gone"), false};
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Hours(1) + absl::Seconds(3));
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());
  faulty.due_crons = {1, absl::UnavailableError("disk gone"), false};
  clock_.Advance(absl::Seconds(3));
  EXPECT_EQ(s->RunPassForTest(), clock_.Now() + absl::Seconds(3));
  clock_.Advance(absl::Seconds(3));
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Hours(2) - kAhead);
  EXPECT_EQ(TickTimes(store_.get(), "q"),
            std::vector<absl::Time>{kStart + absl::Hours(1)});
}

// The look for the next fire after a pass (NextCronFireTime) fails: the
// thread comes back after the backoff rather than sleeping to an unknown
// time, and the tick fires then.
TEST_P(SchedulerTest, AFailedLookForTheNextFireRetriesAfterTheBackoff) {
  FaultyJobStore faulty(store_.get());
  SchedulerConfig config;
  config.retry_backoff = absl::Seconds(3);
  auto s = NewScheduler(&faulty, config);
  MustRegister(s.get(), Cron("c", "0 * * * *", "q"));
  Lead(s.get(), 1);
  faulty.next_cron_fire_time = {1, absl::UnavailableError("disk gone"), false};
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Seconds(3));
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Hours(1) - kAhead);
  ExpectOnlyTheFirstHourlyTickOfQFires(s.get());
}

// Unregister fails in the store: the error reaches the caller, and the
// schedule stays and fires.
TEST_P(SchedulerTest, AFailedUnregisterKeepsTheSchedule) {
  FaultyJobStore faulty(store_.get());
  auto s = NewScheduler(&faulty);
  MustRegister(s.get(), Cron("c", "0 * * * *", "q"));
  Lead(s.get(), 1);
  faulty.delete_cron = {1, absl::UnavailableError("disk gone"), false};
  EXPECT_EQ(s->Unregister("c").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Get("c").definition.name, "c");
  ExpectOnlyTheFirstHourlyTickOfQFires(s.get());
}

// A transition that committed but whose answer was lost, or that lost a
// race: the next look at the stored state never fires the tick twice.
TEST_P(SchedulerTest, LostAnswersAndLostRacesNeverFireTwice) {
  FaultyJobStore faulty(store_.get());
  auto s = NewScheduler(&faulty);
  MustRegister(s.get(), Cron("c", "* * * * * *", "q"));
  Lead(s.get(), 1);

  clock_.Advance(absl::Seconds(1));
  faulty.apply_transition = {1, absl::UnavailableError("timeout"), true};
  s->RunPassForTest();
  clock_.Advance(absl::Seconds(1));
  s->RunPassForTest();

  clock_.Advance(absl::Seconds(1));
  faulty.apply_transition = {1, absl::AbortedError("raced"), false};
  s->RunPassForTest();  // reloads, plans again, fires

  EXPECT_EQ(TickTimes(store_.get(), "q"),
            (std::vector<absl::Time>{kStart + absl::Seconds(1),
                                     kStart + absl::Seconds(2),
                                     kStart + absl::Seconds(3)}));
  EXPECT_EQ(Get("c").state.fired_count, 3);
}

// ---- Stop, and the TTL under a slow store ----------------------------------

// Stop() in the middle of a long FIRE_ALL catch-up: the transition in flight
// finishes, no other starts, and the thread leaves its pass, so Stop() returns
// after a bounded amount of store work however much catch-up was left. One
// schedule at a time here (the hooks count on one thread); the concurrent
// round is StopDuringAConcurrentRoundStartsNoOtherTransition.
TEST_P(SchedulerTest, StopDuringACatchUpStartsNoOtherTransition) {
  FaultyJobStore faulty(store_.get());
  SchedulerConfig serial;
  serial.cron_parallelism = 1;
  auto s = NewScheduler(&faulty, serial);
  const int crons = GetParam().name == "Memory" ? 20 : 5;
  constexpr int kMissed = 30;
  for (int i = 0; i < crons; ++i) {
    CronDefinition d = Cron("all-" + std::to_string(i), "* * * * * *", "q");
    d.misfire_policy = MisfirePolicy::kFireAll;
    MustRegister(s.get(), d);
  }
  Lead(s.get(), 1);
  clock_.Advance(absl::Seconds(kMissed));  // 30 missed ticks per schedule

  // Inside the 45th transition (in the second schedule's catch-up) another
  // thread calls Stop(); the transition goes on once Stop() has begun.
  constexpr int kStopAt = 45;
  // Touched by the scheduler thread only, until the stopper is joined.
  int started_before_stop = 0;
  int started_after_stop = 0;
  int due_reads_after_stop = 0;
  bool stop_began = false;
  std::thread stopper;
  absl::Notification stopper_running;
  faulty.on_apply_transition = [&] {
    if (stop_began) {
      ++started_after_stop;
      return;
    }
    if (++started_before_stop < kStopAt) return;
    stopper = std::thread([&s] { s->Stop(); });
    stopper_running.Notify();
    s->WaitForIdleForTest();  // returns once Stop() has begun
    stop_began = true;
  };
  faulty.on_due_crons = [&] {
    if (stop_began) ++due_reads_after_stop;
  };
  s->Start();
  // A real-time bound only so that a regression fails instead of hanging.
  ASSERT_TRUE(stopper_running.WaitForNotificationWithTimeout(absl::Minutes(1)));
  stopper.join();  // Stop() returned: the thread is gone

  EXPECT_EQ(started_before_stop, kStopAt);
  EXPECT_EQ(started_after_stop, 0) << "transitions started after Stop()";
  EXPECT_EQ(due_reads_after_stop, 0);
  // The one in flight when Stop() began is the only one applied after it.
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), static_cast<size_t>(kStopAt));

  // The claims keep the abandoned catch-up exact: the next leader fires the
  // rest, each tick once.
  auto next = NewScheduler(store_.get());
  Lead(next.get(), 1);
  next->RunPassForTest();
  std::set<std::pair<std::string, absl::Time>> fired;
  const std::vector<Job> jobs = JobsOf(store_.get(), "q");
  for (const Job& job : jobs) fired.insert({job.cron_name, job.cron_tick_time});
  EXPECT_EQ(jobs.size(), static_cast<size_t>(crons * kMissed));
  EXPECT_EQ(fired.size(), jobs.size());
}

// ---- Concurrent rounds ------------------------------------------------------

// Holds every ApplyCronTransition at its start until `open_at` of them are
// inside the store call at once (then lets every one go, for good), or
// until Release(); counts what starts and commits around a moment the test
// marks. Thread-safe: the firing pool's threads run it.
class TransitionGate {
 public:
  // Never opens by itself.
  static constexpr int kClosed = 1 << 30;

  explicit TransitionGate(int open_at) : open_at_(open_at) {}

  // The FaultyJobStore hook: runs at the start of each transition.
  void OnStart() {
    absl::MutexLock l(&mu_);
    ++started_;
    if (marked_) ++started_after_mark_;
    ++inside_;
    max_inside_ = std::max(max_inside_, inside_);
    if (inside_ >= open_at_) released_ = true;
    // A real-time bound only so that a regression fails instead of hanging.
    mu_.AwaitWithTimeout(absl::Condition(&released_), absl::Minutes(1));
  }
  // Called once the store call returned.
  void OnEnd(bool ok) {
    absl::MutexLock l(&mu_);
    --inside_;
    if (ok && marked_) ++committed_after_mark_;
  }
  // Blocks until `n` transitions are held inside at once.
  bool AwaitHeld(int n) {
    absl::MutexLock l(&mu_);
    auto held = [this, n]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return inside_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&held), absl::Minutes(1));
  }
  // Lets every held transition (and every later one) go on.
  void Release() {
    absl::MutexLock l(&mu_);
    released_ = true;
  }
  // Marks the moment (e.g. a revocation returned): returns how many
  // transitions were inside the store then.
  int Mark() {
    absl::MutexLock l(&mu_);
    marked_ = true;
    return inside_;
  }
  int started() {
    absl::MutexLock l(&mu_);
    return started_;
  }
  int started_after_mark() {
    absl::MutexLock l(&mu_);
    return started_after_mark_;
  }
  int committed_after_mark() {
    absl::MutexLock l(&mu_);
    return committed_after_mark_;
  }
  int max_inside() {
    absl::MutexLock l(&mu_);
    return max_inside_;
  }

 private:
  const int open_at_;
  absl::Mutex mu_;
  int started_ ABSL_GUARDED_BY(mu_) = 0;
  int inside_ ABSL_GUARDED_BY(mu_) = 0;
  int max_inside_ ABSL_GUARDED_BY(mu_) = 0;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  bool marked_ ABSL_GUARDED_BY(mu_) = false;
  int started_after_mark_ ABSL_GUARDED_BY(mu_) = 0;
  int committed_after_mark_ ABSL_GUARDED_BY(mu_) = 0;
};

// A store whose transitions pass through a TransitionGate.
class GatedJobStore {
 public:
  GatedJobStore(JobStore* base, int open_at) : faulty_(base), gate_(open_at) {
    faulty_.on_apply_transition = [this] { gate_.OnStart(); };
    faulty_.on_apply_transition_end = [this](bool ok) { gate_.OnEnd(ok); };
  }
  FaultyJobStore* store() { return &faulty_; }
  TransitionGate* gate() { return &gate_; }

 private:
  FaultyJobStore faulty_;
  TransitionGate gate_;
};

// Many schedules due in one round, read in several batches, fire each tick
// exactly once, with the transitions of a batch in the store at once.
TEST_P(SchedulerTest, ManySchedulesDueInARoundFireOnceEachConcurrently) {
  const int crons = GetParam().name == "Memory" ? 300 : 120;
  constexpr int kParallelism = 8;
  GatedJobStore gated(store_.get(), kParallelism);
  SchedulerConfig config;
  config.cron_parallelism = kParallelism;
  config.due_batch_size = 50;  // several batches per round
  absl::Mutex fired_mu;
  std::map<std::string, int> fired_by_queue;
  config.on_job_fired = [&](const NewJob& job) {
    absl::MutexLock l(&fired_mu);
    ++fired_by_queue[job.queue];
  };
  auto s = NewScheduler(gated.store(), config);
  for (int i = 0; i < crons; ++i) {
    MustRegister(s.get(), Cron("c" + std::to_string(i), "* * * * * *", "q"));
  }
  Lead(s.get(), 1);
  constexpr int kRounds = 3;
  for (int round = 0; round < kRounds; ++round) {
    clock_.Advance(absl::Seconds(1));
    EXPECT_EQ(s->RunPassForTest(), clock_.Now() + absl::Seconds(1) - kAhead);
  }

  // A serial round would never have kParallelism transitions inside the
  // store at once: each would wait out the gate's one-minute bound.
  EXPECT_EQ(gated.gate()->max_inside(), kParallelism);
  const std::vector<Job> jobs = JobsOf(store_.get(), "q");
  std::set<std::pair<std::string, absl::Time>> fired;
  for (const Job& job : jobs) fired.insert({job.cron_name, job.cron_tick_time});
  EXPECT_EQ(jobs.size(), static_cast<size_t>(crons * kRounds));
  EXPECT_EQ(fired.size(), jobs.size()) << "a tick fired twice";
  for (int i = 0; i < crons; ++i) {
    const CronRecord r = Get("c" + std::to_string(i));
    EXPECT_EQ(r.state.fired_count, kRounds) << r.definition.name;
    EXPECT_EQ(r.state.missed_count, 0) << r.definition.name;
  }
  absl::MutexLock l(&fired_mu);
  EXPECT_EQ(fired_by_queue["q"], crons * kRounds);
}

// A revocation while a round's transitions are inside the store: it waits
// for them, and once it returned no transition of the old term starts or
// commits, though the FIRE_ALL catch-up had far more to do.
TEST_P(SchedulerTest, RevocationDuringAConcurrentRoundWaitsForItsTransitions) {
  constexpr int kParallelism = 6;
  constexpr int kMissed = 20;
  GatedJobStore gated(store_.get(), TransitionGate::kClosed);
  SchedulerConfig config;
  config.cron_parallelism = kParallelism;
  auto s = NewScheduler(gated.store(), config);
  for (int i = 0; i < kParallelism; ++i) {
    CronDefinition d = Cron("all-" + std::to_string(i), "* * * * * *", "q");
    d.misfire_policy = MisfirePolicy::kFireAll;
    MustRegister(s.get(), d);
  }
  Lead(s.get(), 1);
  clock_.Advance(absl::Seconds(kMissed));

  std::thread pass([&s] { s->RunPassForTest(); });
  ASSERT_TRUE(gated.gate()->AwaitHeld(kParallelism));
  // The first transition of every schedule is held inside the store. Revoke
  // from another thread; the gate notes how many were still inside when the
  // revocation returned.
  absl::Notification revoke_reached_store;
  gated.store()->on_observe_term = [&] { revoke_reached_store.Notify(); };
  int inside_at_return = -1;
  absl::StatusOr<LeadershipState> revoked;
  absl::Notification revoke_returned;
  std::thread revoker([&] {
    revoked = s->SetLeadership(false, 1, absl::ZeroDuration());
    inside_at_return = gated.gate()->Mark();
    revoke_returned.Notify();
  });
  ASSERT_TRUE(
      revoke_reached_store.WaitForNotificationWithTimeout(absl::Minutes(1)));
  // A revocation that did not wait for the held transitions would return
  // now, with them inside. This one must not: the bounded wait costs the
  // correct code a fifth of a second and can never fail it.
  EXPECT_FALSE(
      revoke_returned.WaitForNotificationWithTimeout(absl::Milliseconds(200)))
      << "the revocation returned with transitions in flight";
  gated.gate()->Release();
  revoker.join();
  pass.join();
  gated.store()->on_observe_term = nullptr;

  ASSERT_TRUE(revoked.ok()) << revoked.status();
  EXPECT_FALSE(revoked->leader);
  EXPECT_EQ(inside_at_return, 0) << "transitions in flight after the revoke";
  EXPECT_EQ(gated.gate()->started_after_mark(), 0);
  EXPECT_EQ(gated.gate()->committed_after_mark(), 0);
  // Every transition that started committed before the revocation returned,
  // each one tick of its own; the rest of the catch-up waits for a leader.
  const std::vector<Job> jobs = JobsOf(store_.get(), "q");
  EXPECT_EQ(jobs.size(), static_cast<size_t>(gated.gate()->started()));
  EXPECT_GE(jobs.size(), static_cast<size_t>(kParallelism));

  // The next term resumes it: every missed tick fires, each once.
  Lead(s.get(), 2);
  s->RunPassForTest();
  std::set<std::pair<std::string, absl::Time>> fired;
  const std::vector<Job> all = JobsOf(store_.get(), "q");
  for (const Job& job : all) fired.insert({job.cron_name, job.cron_tick_time});
  EXPECT_EQ(all.size(), static_cast<size_t>(kParallelism * kMissed));
  EXPECT_EQ(fired.size(), all.size());
}

// Stop() while a concurrent round's transitions are inside the store: they
// finish, no other starts, and the thread and the pool are gone when Stop()
// returns.
TEST_P(SchedulerTest, StopDuringAConcurrentRoundStartsNoOtherTransition) {
  constexpr int kParallelism = 6;
  constexpr int kMissed = 20;
  GatedJobStore gated(store_.get(), TransitionGate::kClosed);
  SchedulerConfig config;
  config.cron_parallelism = kParallelism;
  auto s = NewScheduler(gated.store(), config);
  for (int i = 0; i < kParallelism; ++i) {
    CronDefinition d = Cron("all-" + std::to_string(i), "* * * * * *", "q");
    d.misfire_policy = MisfirePolicy::kFireAll;
    MustRegister(s.get(), d);
  }
  Lead(s.get(), 1);
  clock_.Advance(absl::Seconds(kMissed));
  s->Start();
  ASSERT_TRUE(gated.gate()->AwaitHeld(kParallelism));

  std::thread stopper([&s] { s->Stop(); });
  s->WaitForIdleForTest();  // returns once Stop() has begun
  EXPECT_EQ(gated.gate()->Mark(), kParallelism);
  gated.gate()->Release();
  stopper.join();  // Stop() returned: the thread and the pool are gone

  EXPECT_EQ(gated.gate()->started_after_mark(), 0)
      << "transitions started after Stop()";
  // Only the transitions in flight when Stop() began were applied.
  EXPECT_EQ(JobsOf(store_.get(), "q").size(),
            static_cast<size_t>(kParallelism));
}

// The grant arrives; then the store holds ObserveTerm for 4 s (another
// process has the SQLite write lock). The TTL counts from the grant.
TEST_P(SchedulerTest, TtlCountsFromTheGrantNotFromTheStoresAnswer) {
  FaultyJobStore faulty(store_.get());
  auto s = NewScheduler(&faulty);
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  const absl::Time granted = clock_.Now();
  const absl::Duration granted_at = clock_.Monotonic();
  faulty.on_observe_term = [this] { clock_.Advance(absl::Seconds(4)); };
  absl::StatusOr<LeadershipState> l =
      s->SetLeadership(true, 1, absl::Seconds(10), granted_at);
  faulty.on_observe_term = nullptr;
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_TRUE(l->leader);
  EXPECT_EQ(l->expires_at, granted + absl::Seconds(10));
  ASSERT_EQ(clock_.Now(), granted + absl::Seconds(4));

  // A pass each second, as the thread would wake, until well past the lapse.
  for (int i = 4; i <= 14; ++i) {
    clock_.SetNow(granted + absl::Seconds(i));
    EXPECT_EQ(s->GetLeadership()->leader, i < 10) << "at +" << i << " s";
    s->RunPassForTest();
  }
  // The latest of the ticks missed while the store held the grant, then one
  // a second while at least the safety margin (1 s) was left.
  std::vector<absl::Time> expected;
  for (int i = 4; i <= 9; ++i) expected.push_back(granted + absl::Seconds(i));
  EXPECT_EQ(TickTimes(store_.get(), "q"), expected);
}

// ttl = 2 s, and the store held the grant for 4 s: it lapsed before it took
// effect, so this instance never leads under it.
TEST_P(SchedulerTest, GrantThatLapsedWhileTheStoreHeldItNeverFires) {
  FaultyJobStore faulty(store_.get());
  auto s = NewScheduler(&faulty);
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  const absl::Duration granted_at = clock_.Monotonic();
  faulty.on_observe_term = [this] { clock_.Advance(absl::Seconds(4)); };
  absl::StatusOr<LeadershipState> l =
      s->SetLeadership(true, 1, absl::Seconds(2), granted_at);
  faulty.on_observe_term = nullptr;
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_FALSE(l->leader);
  EXPECT_EQ(l->term, 1u);
  EXPECT_EQ(l->highest_term, 1u);  // the term itself was recorded
  EXPECT_EQ(l->expires_at, absl::InfiniteFuture());
  EXPECT_EQ(s->RunPassForTest(), absl::InfiniteFuture());
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());
}

TEST_P(SchedulerTest, NoTransitionStartsInTheSafetyMarginBeforeTheLapse) {
  SchedulerConfig config;
  config.leadership_safety_margin = absl::Milliseconds(1500);
  auto s = NewScheduler(store_.get(), config);
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  const absl::Time led_at = clock_.Now();
  Lead(s.get(), 1, absl::Seconds(10));
  for (int i = 1; i <= 8; ++i) {
    clock_.Advance(absl::Seconds(1));
    s->RunPassForTest();
  }
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 8u);  // +1 s .. +8 s
  // +9 s: 1 s left, less than the margin. Still leader, but the tick waits,
  // and the thread would sleep until the lapse rather than spin.
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(s->RunPassForTest(), led_at + absl::Seconds(10));
  EXPECT_TRUE(s->GetLeadership()->leader);
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 8u);
  // Renewed in time, it fires the tick, still on time.
  clock_.Advance(absl::Milliseconds(500));
  Lead(s.get(), 1, absl::Seconds(10));
  s->RunPassForTest();
  std::vector<absl::Time> ticks = TickTimes(store_.get(), "q");
  ASSERT_EQ(ticks.size(), 9u);
  EXPECT_EQ(ticks.back(), led_at + absl::Seconds(9));
  EXPECT_EQ(Get("sec").state.missed_count, 0);
}

// The usual elector: a 3 s TTL renewed every second. The default margin
// never holds a tick back.
TEST_P(SchedulerTest, ThreeSecondTtlRenewedEachSecondFiresEverySecond) {
  auto s = NewScheduler(store_.get());
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  s->Start();
  Lead(s.get(), 1, absl::Seconds(3));
  s->WaitForIdleForTest();
  for (int i = 0; i < 20; ++i) {
    clock_.Advance(absl::Seconds(1));
    s->WaitForIdleForTest();
    Lead(s.get(), 1, absl::Seconds(3));
    s->WaitForIdleForTest();
  }
  std::vector<absl::Time> expected;
  for (int i = 1; i <= 20; ++i) expected.push_back(kStart + absl::Seconds(i));
  EXPECT_EQ(TickTimes(store_.get(), "q"), expected);
  EXPECT_EQ(Get("sec").state.missed_count, 0);
}

// ---- Exactly once ---------------------------------------------------------

TEST_P(SchedulerTest, RestartNeverRefiresAClaimedTick) {
  {
    auto s = NewScheduler(store_.get());
    MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
    Lead(s.get(), 1);
    for (int i = 0; i < 5; ++i) {
      clock_.Advance(absl::Seconds(1));
      s->RunPassForTest();
    }
  }
  store_.reset();
  store_ = Open();  // a restart: the same data, a new process's objects
  ASSERT_EQ(JobsOf(store_.get(), "q").size(), 5u);

  auto s = NewScheduler(store_.get());
  // A follower after restart.
  EXPECT_FALSE(s->GetLeadership()->leader);
  EXPECT_EQ(s->RunPassForTest(), absl::InfiniteFuture());
  Lead(s.get(), 1);
  s->RunPassForTest();  // same instant: nothing new is due
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 5u);

  // Even if the schedule's state went back (a restored backup, a clock
  // behind), the claims keep fired ticks from firing again.
  CronRecord r = Get("sec");
  CronState rewound = r.state;
  rewound.next_fire_time = kStart + absl::Seconds(4);
  ASSERT_TRUE(
      store_->PutCron(r.definition, rewound, r.version, clock_.Now()).ok());
  clock_.Advance(absl::Seconds(1));
  SchedulerConfig generous;
  generous.misfire_threshold = absl::Seconds(10);  // all of them "on time"
  auto t = NewScheduler(store_.get(), generous);
  Lead(t.get(), 1);
  t->RunPassForTest();
  std::vector<absl::Time> ticks = TickTimes(store_.get(), "q");
  EXPECT_TRUE(AllDistinct(ticks));
  EXPECT_EQ(ticks.size(), 6u);
  EXPECT_EQ(ticks.back(), kStart + absl::Seconds(6));
  EXPECT_EQ(Get("sec").state.next_fire_time, kStart + absl::Seconds(7));
}

TEST_P(SchedulerTest, TwoSchedulersOnOneStoreFireEachTickOnce) {
  std::shared_ptr<JobStore> other_store = Open();  // a second process
  auto a = NewScheduler(store_.get());
  auto b = NewScheduler(other_store.get());
  MustRegister(a.get(), Cron("sec", "* * * * * *", "q"));
  MustRegister(b.get(), Cron("sec", "* * * * * *", "q"));
  Lead(a.get(), 3);
  Lead(b.get(), 3);
  a->Start();
  b->Start();
  for (int i = 0; i < 60; ++i) {
    clock_.Advance(absl::Seconds(1));
    a->WaitForIdleForTest();
    b->WaitForIdleForTest();
  }
  std::vector<absl::Time> ticks = TickTimes(store_.get(), "q");
  EXPECT_TRUE(AllDistinct(ticks));
  EXPECT_EQ(ticks.size(), 60u);

  // b gets a higher term: a is deposed at its next transition and stops.
  Lead(b.get(), 4);
  for (int i = 0; i < 60; ++i) {
    clock_.Advance(absl::Seconds(1));
    a->WaitForIdleForTest();
    b->WaitForIdleForTest();
  }
  ticks = TickTimes(store_.get(), "q");
  EXPECT_TRUE(AllDistinct(ticks));
  EXPECT_EQ(ticks.size(), 120u);
  EXPECT_FALSE(a->GetLeadership()->leader);
  EXPECT_TRUE(b->GetLeadership()->leader);
  EXPECT_EQ(Get("sec").state.missed_count, 0);
}

TEST_P(SchedulerTest, DeposedSchedulerStopsFiring) {
  auto a = NewScheduler(store_.get());
  auto b = NewScheduler(store_.get());
  MustRegister(a.get(), Cron("sec", "* * * * * *", "q"));
  Lead(a.get(), 1);
  Lead(b.get(), 2);  // the store has now seen term 2
  clock_.Advance(absl::Seconds(1));
  a->RunPassForTest();
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());
  absl::StatusOr<LeadershipState> la = a->GetLeadership();
  EXPECT_FALSE(la->leader);
  EXPECT_EQ(la->highest_term, 2u);
  b->RunPassForTest();
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 1u);
}

// ---- Misfire ----------------------------------------------------------------

// The seed scenario: a schedule due at T; down from before T until after T;
// then leader.
TEST_P(SchedulerTest, SeedScenarioAcrossARestart) {
  clock_.SetNow(kStart + absl::Minutes(13));
  const absl::Time t = kStart + absl::Hours(1);
  {
    auto s = NewScheduler(store_.get());
    CronDefinition once = Cron("once", "0 * * * *", "once");
    once.misfire_policy = MisfirePolicy::kFireOnce;
    CronDefinition skip = Cron("skip", "0 * * * *", "skip");
    skip.misfire_policy = MisfirePolicy::kSkip;
    CronDefinition all = Cron("all", "*/10 * * * *", "all");
    all.misfire_policy = MisfirePolicy::kFireAll;
    all.catchup_window = absl::Hours(2);
    EXPECT_EQ(MustRegister(s.get(), once).state.next_fire_time, t);
    EXPECT_EQ(MustRegister(s.get(), skip).state.next_fire_time, t);
    MustRegister(s.get(), all);
    Lead(s.get(), 1);
    s->Start();
    s->WaitForIdleForTest();
    EXPECT_TRUE(JobsOf(store_.get(), "all").empty());
  }  // down before the first "all" tick at 00:20
  store_.reset();
  clock_.SetNow(t + absl::Minutes(35));
  store_ = Open();
  auto s = NewScheduler(store_.get());
  s->Start();
  s->WaitForIdleForTest();
  EXPECT_TRUE(JobsOf(store_.get(), "once").empty());  // not leader yet
  Lead(s.get(), 1);
  s->WaitForIdleForTest();

  EXPECT_EQ(TickTimes(store_.get(), "once"), std::vector<absl::Time>{t});
  EXPECT_EQ(JobsOf(store_.get(), "once")[0].cron_name, "once");
  EXPECT_TRUE(JobsOf(store_.get(), "skip").empty());
  CronRecord skip = Get("skip");
  EXPECT_EQ(skip.state.missed_count, 1);
  EXPECT_EQ(skip.state.fired_count, 0);
  std::vector<absl::Time> expected;
  for (absl::Time x = kStart + absl::Minutes(20); x <= t + absl::Minutes(30);
       x += absl::Minutes(10)) {
    expected.push_back(x);
  }
  EXPECT_EQ(TickTimes(store_.get(), "all"), expected);
  for (const char* name : {"once", "skip", "all"}) {
    EXPECT_EQ(Get(name).state.next_fire_time, name == std::string("all")
                                                  ? t + absl::Minutes(40)
                                                  : t + absl::Hours(1));
  }
}

TEST_P(SchedulerTest, FireAllCatchUpIsResumableAfterACrashMidWay) {
  auto s = NewScheduler(store_.get());
  CronDefinition d = Cron("all", "* * * * *", "q");
  d.misfire_policy = MisfirePolicy::kFireAll;
  MustRegister(s.get(), d);  // first tick 00:01
  clock_.SetNow(kStart + absl::Minutes(30) + absl::Seconds(30));
  // A "crash" after three of the thirty catch-up transitions: replay them by
  // hand as the scheduler would, then let a fresh scheduler finish.
  for (int i = 0; i < 3; ++i) {
    CronRecord r = Get("all");
    CronTransition step;
    step.name = "all";
    step.expected_version = r.version;
    step.term = 1;
    step.claim_tick = r.state.next_fire_time;
    NewJob job;
    job.queue = "q";
    job.type = "tick";
    job.cron_name = "all";
    job.cron_tick_time = r.state.next_fire_time;
    step.job = job;
    step.new_state = r.state;
    step.new_state.fired_count++;
    step.new_state.last_fire_time = r.state.next_fire_time;
    step.new_state.next_fire_time = r.state.next_fire_time + absl::Minutes(1);
    ASSERT_TRUE(store_->ApplyCronTransition(step, clock_.Now()).ok());
  }
  Lead(s.get(), 1);
  s->RunPassForTest();
  std::vector<absl::Time> ticks = TickTimes(store_.get(), "q");
  ASSERT_EQ(ticks.size(), 30u);
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(ticks[i], kStart + absl::Minutes(i + 1));
  }
}

// ---- Pause ---------------------------------------------------------------

TEST_P(SchedulerTest, PausedScheduleNeitherFiresNorCatchesUpOnResume) {
  auto s = NewScheduler(store_.get());
  CronDefinition d = Cron("p", "*/10 * * * *", "q");
  d.misfire_policy = MisfirePolicy::kFireAll;
  MustRegister(s.get(), d);
  Lead(s.get(), 1);
  d.paused = true;
  CronRecord paused = MustRegister(s.get(), d);
  EXPECT_EQ(paused.state.next_fire_time, absl::InfiniteFuture());
  clock_.Advance(absl::Minutes(45));
  EXPECT_EQ(s->RunPassForTest(), absl::InfiniteFuture());
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());

  d.paused = false;
  CronRecord resumed = MustRegister(s.get(), d);
  EXPECT_EQ(resumed.state.next_fire_time, kStart + absl::Minutes(50));
  s->RunPassForTest();
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());
  clock_.Advance(absl::Minutes(5));
  s->RunPassForTest();
  EXPECT_EQ(TickTimes(store_.get(), "q"),
            std::vector<absl::Time>{kStart + absl::Minutes(50)});
  EXPECT_EQ(Get("p").state.missed_count, 0);
}

TEST_P(SchedulerTest, ScheduleCreatedPausedDoesNotFire) {
  auto s = NewScheduler(store_.get());
  CronDefinition d = Cron("p", "* * * * * *", "q");
  d.paused = true;
  EXPECT_EQ(MustRegister(s.get(), d).state.next_fire_time,
            absl::InfiniteFuture());
  Lead(s.get(), 1);
  clock_.Advance(absl::Minutes(1));
  s->RunPassForTest();
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());
}

// ---- Overlap ----------------------------------------------------------------

class OverlapTest : public SchedulerTest {
 protected:
  // Registers an hourly schedule with `policy`, leads, and fires its first
  // tick (01:00). Returns that job's id.
  std::string FireFirst(Scheduler* s, OverlapPolicy policy) {
    CronDefinition d = Cron("o", "0 * * * *", "q");
    d.overlap_policy = policy;
    MustRegister(s, d);
    Lead(s, 1);
    clock_.SetNow(kStart + absl::Hours(1));
    s->RunPassForTest();
    std::vector<Job> jobs = JobsOf(store_.get(), "q");
    EXPECT_EQ(jobs.size(), 1u);
    return jobs.empty() ? "" : jobs[0].id;
  }

  // Leases and acks the job `id` (it must be the only available one).
  void Finish(const std::string& id) {
    DequeueOptions options;
    options.queue = "q";
    absl::StatusOr<std::vector<Lease>> leased =
        store_->Dequeue(options, clock_.Now());
    ASSERT_TRUE(leased.ok()) << leased.status();
    ASSERT_EQ(leased->size(), 1u);
    ASSERT_EQ((*leased)[0].job.id, id);
    ASSERT_TRUE(store_->Ack(id, (*leased)[0].token, clock_.Now()).ok());
  }
};

TEST_P(OverlapTest, AllowFiresOverARunningJob) {
  auto s = NewScheduler(store_.get());
  FireFirst(s.get(), OverlapPolicy::kAllow);
  clock_.Advance(absl::Hours(1));
  s->RunPassForTest();
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 2u);
}

TEST_P(OverlapTest, SkipDropsTicksWhileThePreviousJobRuns) {
  auto s = NewScheduler(store_.get());
  std::string first = FireFirst(s.get(), OverlapPolicy::kSkip);
  clock_.Advance(absl::Hours(1));
  s->RunPassForTest();
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 1u);
  EXPECT_EQ(Get("o").state.overlap_skipped_count, 1);
  Finish(first);
  clock_.Advance(absl::Hours(1));
  s->RunPassForTest();
  EXPECT_EQ(TickTimes(store_.get(), "q"),
            (std::vector<absl::Time>{kStart + absl::Hours(1),
                                     kStart + absl::Hours(3)}));
}

TEST_P(OverlapTest, ReplaceCancelsThePreviousJob) {
  auto s = NewScheduler(store_.get());
  std::string first = FireFirst(s.get(), OverlapPolicy::kReplace);
  // A worker holds it.
  DequeueOptions options;
  options.queue = "q";
  absl::StatusOr<std::vector<Lease>> leased =
      store_->Dequeue(options, clock_.Now());
  ASSERT_TRUE(leased.ok() && leased->size() == 1u);
  clock_.Advance(absl::Hours(1));
  s->RunPassForTest();
  std::vector<Job> jobs = JobsOf(store_.get(), "q");
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].id, first);
  EXPECT_EQ(jobs[0].state, JobState::kCancelled);
  EXPECT_EQ(jobs[1].state, JobState::kPending);
  // The holder's next Ack fails.
  EXPECT_EQ(store_->Ack(first, (*leased)[0].token, clock_.Now()).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(OverlapTest, WaitHoldsATickAndFiresItWhenWokenByTheJobsEnd) {
  auto s = NewScheduler(store_.get());
  std::string first = FireFirst(s.get(), OverlapPolicy::kWait);
  s->Start();
  s->WaitForIdleForTest();
  clock_.Advance(absl::Hours(1));  // 02:00: held
  s->WaitForIdleForTest();
  clock_.Advance(absl::Hours(1));  // 03:00: skipped, 02:00 still held
  s->WaitForIdleForTest();
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 1u);
  CronRecord r = Get("o");
  EXPECT_EQ(r.state.waiting_tick_time, kStart + absl::Hours(2));
  EXPECT_EQ(r.state.overlap_skipped_count, 1);

  // The job ends; the server's hook wakes the scheduler. No time passes.
  Finish(first);
  s->Wake();
  s->WaitForIdleForTest();
  EXPECT_EQ(TickTimes(store_.get(), "q"),
            (std::vector<absl::Time>{kStart + absl::Hours(1),
                                     kStart + absl::Hours(2)}));
  EXPECT_EQ(Get("o").state.waiting_tick_time, absl::InfinitePast());
}

// A held tick's recheck does not push back the look at the next tick: it is
// decided at its instant (here: skipped, as one is already held), not a
// recheck interval later.
TEST_P(OverlapTest, AHeldTickDoesNotDelayTheNextTick) {
  SchedulerConfig config;
  config.wait_recheck_interval = absl::Seconds(5);
  config.fire_ahead = absl::Seconds(30);  // not for WAIT ticks
  auto s = NewScheduler(store_.get(), config);
  FireFirst(s.get(), OverlapPolicy::kWait);  // 01:00, still running
  clock_.SetNow(kStart + absl::Hours(2));
  s->RunPassForTest();  // 02:00 is held
  ASSERT_EQ(Get("o").state.waiting_tick_time, kStart + absl::Hours(2));
  clock_.SetNow(kStart + absl::Hours(3) - absl::Milliseconds(100));
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Hours(3));
}

TEST_P(OverlapTest, WaitNoticesAJobThatEndedWithoutAWake) {
  SchedulerConfig config;
  config.wait_recheck_interval = absl::Seconds(5);
  auto s = NewScheduler(store_.get(), config);
  std::string first = FireFirst(s.get(), OverlapPolicy::kWait);
  s->Start();
  clock_.Advance(absl::Hours(1));  // 02:00 held
  s->WaitForIdleForTest();
  Finish(first);  // e.g. acked through another daemon: no Wake()
  s->WaitForIdleForTest();
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 1u);
  clock_.Advance(absl::Seconds(5));
  s->WaitForIdleForTest();
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 2u);
}

// ---- Daylight saving
// ---------------------------------------------------------

// ---- Fire-ahead -------------------------------------------------------------

// An ALLOW tick fires fire_ahead before its instant, as a job no worker can
// take before the tick; the thread then sleeps until the next tick less
// fire_ahead, and the pass at the tick fires nothing more.
TEST_P(SchedulerTest, AnAllowTickFiresAheadAsAJobRunnableAtTheTick) {
  SchedulerConfig config;
  config.fire_ahead = absl::Milliseconds(300);
  std::vector<NewJob> reported;
  config.on_job_fired = [&reported](const NewJob& job) {
    reported.push_back(job);
  };
  auto s = NewScheduler(store_.get(), config);
  MustRegister(s.get(), Cron("m", "* * * * *", "q"));
  Lead(s.get(), 1);
  const absl::Time tick = kStart + absl::Minutes(1);
  clock_.SetNow(tick - absl::Milliseconds(301));
  EXPECT_EQ(s->RunPassForTest(), tick - absl::Milliseconds(300));
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());

  clock_.SetNow(tick - absl::Milliseconds(300));
  EXPECT_EQ(s->RunPassForTest(),
            tick + absl::Minutes(1) - absl::Milliseconds(300));
  const std::vector<Job> jobs = JobsOf(store_.get(), "q");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].cron_tick_time, tick);
  EXPECT_EQ(jobs[0].run_at, tick);
  EXPECT_EQ(jobs[0].created_at, tick - absl::Milliseconds(300));
  EXPECT_EQ(jobs[0].state, JobState::kPending);
  const CronRecord r = Get("m");
  EXPECT_EQ(r.state.last_fire_time, tick);
  EXPECT_EQ(r.state.last_job_id, jobs[0].id);
  EXPECT_EQ(r.state.next_fire_time, tick + absl::Minutes(1));
  EXPECT_EQ(r.state.fired_count, 1);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0].run_at, tick);

  DequeueOptions options;
  options.queue = "q";
  absl::StatusOr<std::vector<Lease>> early =
      store_->Dequeue(options, tick - absl::Nanoseconds(1));
  ASSERT_TRUE(early.ok()) << early.status();
  EXPECT_TRUE(early->empty()) << "a worker got the job before its tick";
  absl::StatusOr<std::vector<Lease>> leased = store_->Dequeue(options, tick);
  ASSERT_TRUE(leased.ok()) << leased.status();
  ASSERT_EQ(leased->size(), 1u);
  EXPECT_EQ((*leased)[0].job.id, jobs[0].id);

  clock_.SetNow(tick);
  s->RunPassForTest();
  EXPECT_EQ(JobsOf(store_.get(), "q").size(), 1u);
}

// SKIP, WAIT and REPLACE look at the previous job, which may finish before
// the tick: their ticks fire at the instant, and the thread wakes for them
// there, while the ALLOW schedule beside them fires ahead.
TEST_P(SchedulerTest, OnlyAllowTicksFireAhead) {
  auto s = NewSchedulerFiringAhead(absl::Milliseconds(300));
  MustRegister(s.get(), Cron("allow", "* * * * *", "q"));
  const std::map<std::string, OverlapPolicy> others = {
      {"skip", OverlapPolicy::kSkip},
      {"wait", OverlapPolicy::kWait},
      {"replace", OverlapPolicy::kReplace}};
  for (const auto& [name, policy] : others) {
    CronDefinition d = Cron(name, "* * * * *", "q");
    d.overlap_policy = policy;
    MustRegister(s.get(), d);
  }
  Lead(s.get(), 1);
  const absl::Time tick = kStart + absl::Minutes(1);
  clock_.SetNow(tick - absl::Milliseconds(300));
  EXPECT_EQ(s->RunPassForTest(), tick);
  std::vector<Job> jobs = JobsOf(store_.get(), "q");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].cron_name, "allow");
  for (const auto& [name, policy] : others) {
    EXPECT_EQ(Get(name).state.next_fire_time, tick) << name;
  }

  clock_.SetNow(tick);
  EXPECT_EQ(s->RunPassForTest(),
            tick + absl::Minutes(1) - absl::Milliseconds(300));
  jobs = JobsOf(store_.get(), "q");
  ASSERT_EQ(jobs.size(), 4u);
  for (const Job& job : jobs) {
    EXPECT_EQ(job.cron_tick_time, tick) << job.cron_name;
    EXPECT_EQ(job.run_at, tick) << job.cron_name;
    EXPECT_EQ(job.created_at,
              job.cron_name == "allow" ? tick - absl::Milliseconds(300) : tick)
        << job.cron_name;
  }
}

// The tick fired ahead is claimed and its state stored: a restarted daemon
// (here without fire-ahead, under a new term) does not fire it again at its
// instant.
TEST_P(SchedulerTest, ATickFiredAheadIsNotFiredAgainAfterARestart) {
  const absl::Time tick = kStart + absl::Minutes(1);
  {
    SchedulerConfig config;
    config.fire_ahead = absl::Milliseconds(300);
    auto s = NewScheduler(store_.get(), config);
    MustRegister(s.get(), Cron("m", "* * * * *", "q"));
    Lead(s.get(), 1);
    clock_.SetNow(tick - absl::Milliseconds(200));
    s->RunPassForTest();
    ASSERT_EQ(JobsOf(store_.get(), "q").size(), 1u);
  }
  store_.reset();
  store_ = Open();
  SchedulerConfig at_the_tick;
  at_the_tick.fire_ahead = absl::ZeroDuration();
  auto s = NewScheduler(store_.get(), at_the_tick);
  Lead(s.get(), 2);
  clock_.SetNow(tick);
  EXPECT_EQ(s->RunPassForTest(), tick + absl::Minutes(1));
  EXPECT_EQ(TickTimes(store_.get(), "q"), std::vector<absl::Time>{tick});
  clock_.SetNow(tick + absl::Minutes(1));
  s->RunPassForTest();
  EXPECT_EQ(TickTimes(store_.get(), "q"),
            (std::vector<absl::Time>{tick, tick + absl::Minutes(1)}));
}

// A pause that lands after a tick fired ahead applies from the next tick:
// the fired job stays, runnable at its tick, and nothing else fires.
TEST_P(SchedulerTest, APauseWithinFireAheadAppliesFromTheNextTick) {
  auto s = NewSchedulerFiringAhead(absl::Milliseconds(300));
  CronDefinition d = Cron("m", "* * * * *", "q");
  MustRegister(s.get(), d);
  Lead(s.get(), 1);
  const absl::Time tick = kStart + absl::Minutes(1);
  clock_.SetNow(tick - absl::Milliseconds(300));
  s->RunPassForTest();
  clock_.SetNow(tick - absl::Milliseconds(100));
  d.paused = true;
  MustRegister(s.get(), d);
  clock_.SetNow(tick + absl::Minutes(5));
  EXPECT_EQ(s->RunPassForTest(), absl::InfiniteFuture());
  const std::vector<Job> jobs = JobsOf(store_.get(), "q");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].cron_tick_time, tick);
  EXPECT_EQ(jobs[0].state, JobState::kPending);
  EXPECT_EQ(Get("m").state.last_fire_time, tick);
}

// Deleting a schedule takes back the tick it fired ahead (its claim goes
// with it), so the same name registered again fires that tick once.
TEST_P(SchedulerTest, ATickFiredAheadFiresOnceThroughADeleteAndARegistration) {
  auto s = NewSchedulerFiringAhead(absl::Milliseconds(300));
  MustRegister(s.get(), Cron("m", "* * * * *", "q"));
  Lead(s.get(), 1);
  const absl::Time tick = kStart + absl::Minutes(1);
  clock_.SetNow(tick - absl::Milliseconds(300));
  s->RunPassForTest();
  ASSERT_EQ(JobsOf(store_.get(), "q").size(), 1u);

  clock_.SetNow(tick - absl::Milliseconds(200));
  ASSERT_TRUE(s->Unregister("m").ok());
  clock_.SetNow(tick - absl::Milliseconds(100));
  MustRegister(s.get(), Cron("m", "* * * * *", "q"));
  s->RunPassForTest();
  clock_.SetNow(tick);
  s->RunPassForTest();
  int live = 0;
  for (const Job& job : JobsOf(store_.get(), "q")) {
    EXPECT_EQ(job.cron_tick_time, tick);
    if (job.state != JobState::kCancelled) ++live;
  }
  EXPECT_EQ(live, 1) << "tick fired twice";
}

// A schedule has one tick fired ahead at a time: with ticks closer together
// than fire_ahead, the next one fires once the last one has come.
TEST_P(SchedulerTest, OneTickOfAScheduleIsAheadAtATime) {
  auto s = NewSchedulerFiringAhead(absl::Milliseconds(2500));
  MustRegister(s.get(), Cron("sec", "* * * * * *", "q"));
  Lead(s.get(), 1);
  const absl::Time t = kStart + absl::Milliseconds(500);
  clock_.SetNow(t);
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Seconds(1));
  EXPECT_EQ(TickTimes(store_.get(), "q"),
            std::vector<absl::Time>{kStart + absl::Seconds(1)});
  clock_.SetNow(kStart + absl::Seconds(1));
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Seconds(2));
  EXPECT_EQ(TickTimes(store_.get(), "q"),
            (std::vector<absl::Time>{kStart + absl::Seconds(1),
                                     kStart + absl::Seconds(2)}));
}

// An earlier tick of another policy does not shorten an ALLOW tick's lead:
// the thread wakes fire_ahead before the ALLOW tick, then at the other.
TEST_P(SchedulerTest, AnotherPolicysEarlierTickKeepsTheLeadOfAnAllowTick) {
  auto s = NewSchedulerFiringAhead(absl::Seconds(30));
  clock_.SetNow(kStart + absl::Seconds(11));
  CronDefinition wait = Cron("wait", "0 * * * * *", "q");  // 00:01:00
  wait.overlap_policy = OverlapPolicy::kWait;
  MustRegister(s.get(), wait);
  MustRegister(s.get(), Cron("allow", "10 * * * * *", "q"));  // 00:01:10
  Lead(s.get(), 1);
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Seconds(30));
  clock_.SetNow(kStart + absl::Seconds(30));
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Seconds(40));
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());
  clock_.SetNow(kStart + absl::Seconds(40));
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Minutes(1));
  std::vector<Job> jobs = JobsOf(store_.get(), "q");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].cron_name, "allow");
  EXPECT_EQ(jobs[0].run_at, kStart + absl::Seconds(70));
}

// No tick is fired ahead past the instant the transitions stop before an
// unrenewed TTL lapses, and the thread does not wake for it before then;
// after a renewal it fires ahead as usual.
TEST_P(SchedulerTest, NoTickFiresAheadPastTheLeadershipsLastFiringInstant) {
  SchedulerConfig config;
  config.fire_ahead = absl::Seconds(30);  // margin: 1 s
  auto s = NewScheduler(store_.get(), config);
  MustRegister(s.get(), Cron("m", "* * * * *", "q"));  // 00:01:00
  clock_.SetNow(kStart + absl::Seconds(50));
  Lead(s.get(), 1, absl::Seconds(8));  // transitions stop at 00:00:57
  EXPECT_EQ(s->RunPassForTest(), kStart + absl::Seconds(58))
      << "asleep until the lapse (a renewal wakes the thread)";
  EXPECT_TRUE(JobsOf(store_.get(), "q").empty());
  clock_.SetNow(kStart + absl::Seconds(55));
  Lead(s.get(), 1, absl::Seconds(10));  // now they stop at 00:01:04
  s->RunPassForTest();
  std::vector<Job> jobs = JobsOf(store_.get(), "q");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].run_at, kStart + absl::Minutes(1));
}

// "30 2 * * *" in New York: on 2026-03-08 02:30 does not exist (fires once,
// at 03:00 EDT); on 2026-11-01 01:00-02:00 repeats and 02:30 occurs once.
// "30 1 * * *" on 2026-11-01 occurs twice: fires once, at the first (EDT).
TEST_P(SchedulerTest, DstDaysFireOncePerDay) {
  const absl::TimeZone ny = [] {
    absl::TimeZone z;
    EXPECT_TRUE(absl::LoadTimeZone("America/New_York", &z));
    return z;
  }();
  struct Case {
    std::string schedule;
    absl::CivilDay from;
    std::vector<absl::Time> expected;
  };
  const std::vector<Case> cases = {
      {"30 2 * * *",
       absl::CivilDay(2026, 3, 7),
       {absl::FromCivil(absl::CivilSecond(2026, 3, 7, 2, 30, 0), ny),
        // 03:00 EDT = 07:00 UTC: the first instant after the gap.
        absl::FromUnixSeconds(1772953200),
        absl::FromCivil(absl::CivilSecond(2026, 3, 9, 2, 30, 0), ny)}},
      {"30 2 * * *",
       absl::CivilDay(2026, 10, 31),
       {absl::FromCivil(absl::CivilSecond(2026, 10, 31, 2, 30, 0), ny),
        absl::FromCivil(absl::CivilSecond(2026, 11, 1, 2, 30, 0), ny),
        absl::FromCivil(absl::CivilSecond(2026, 11, 2, 2, 30, 0), ny)}},
      {"30 1 * * *",
       absl::CivilDay(2026, 10, 31),
       {absl::FromCivil(absl::CivilSecond(2026, 10, 31, 1, 30, 0), ny),
        // 01:30 EDT = 05:30 UTC, the first of the two.
        absl::FromUnixSeconds(1793511000),
        absl::FromCivil(absl::CivilSecond(2026, 11, 2, 1, 30, 0), ny)}},
  };
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.schedule);
    const std::string queue = "dst" + std::to_string(n++);
    clock_.SetNow(absl::FromCivil(absl::CivilSecond(c.from), ny));
    auto s = NewScheduler(store_.get());
    CronDefinition d = Cron(queue, c.schedule, queue);
    d.timezone = "America/New_York";
    MustRegister(s.get(), d);
    Lead(s.get(), 1);
    // Three days, waking where the thread would: at each next fire time.
    const absl::Time end = clock_.Now() + absl::Hours(72);
    for (absl::Time wake = s->RunPassForTest(); wake <= end;
         wake = s->RunPassForTest()) {
      clock_.SetNow(wake);
    }
    EXPECT_EQ(TickTimes(store_.get(), queue), c.expected);
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, SchedulerTest,
                         ::testing::Values(MemoryKind(), SqliteKind()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Stores, SchedulerDayTest,
                         ::testing::Values(MemoryKind()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Stores, OverlapTest,
                         ::testing::Values(MemoryKind(), SqliteKind()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace adjutant
