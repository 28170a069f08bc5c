// PlanCronStep: the misfire and overlap policies as pure functions, checked
// case by case and against a model over random histories.
#include "scheduler/tick_plan.h"

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "scheduler/cron_expression.h"
#include "storage/job.h"

namespace adjutant {
namespace {

// 2026-01-01 10:00:00 UTC, a whole hour.
const absl::Time kT = absl::FromUnixSeconds(1767261600);

CronExpression Parse(const std::string& schedule,
                     const std::string& zone = "UTC", absl::Time anchor = kT) {
  absl::StatusOr<CronExpression> e =
      CronExpression::Parse(schedule, zone, anchor);
  EXPECT_TRUE(e.ok()) << e.status();
  return *e;
}

CronDefinition Definition(MisfirePolicy misfire = MisfirePolicy::kFireOnce,
                          OverlapPolicy overlap = OverlapPolicy::kAllow) {
  CronDefinition d;
  d.name = "report";
  d.timezone = "UTC";
  d.job.queue = "q";
  d.job.type = "t";
  d.misfire_policy = misfire;
  d.overlap_policy = overlap;
  return d;
}

CronState Due(absl::Time next_fire) {
  CronState s;
  s.next_fire_time = next_fire;
  return s;
}

// Steps until idle; the previous job is "running" while `running` says so.
struct History {
  std::vector<CronStep> steps;
  CronState state;
  std::vector<absl::Time> fired() const {
    std::vector<absl::Time> out;
    for (const CronStep& s : steps) {
      if (s.fires()) out.push_back(s.tick);
    }
    return out;
  }
};

History RunToIdle(const CronDefinition& d, CronState state,
                  const CronExpression& e, absl::Time now,
                  std::optional<JobState> previous = std::nullopt,
                  TickPlanOptions options = TickPlanOptions()) {
  History run;
  for (int i = 0; i < 100000; ++i) {
    CronStep step = PlanCronStep(d, state, e, now, previous, options);
    if (step.kind == CronStepKind::kIdle) break;
    run.steps.push_back(step);
    state = step.new_state;
    if (step.fires()) {
      state.last_job_id = "job-" + std::to_string(state.fired_count);
      previous = JobState::kPending;  // a fresh job is running
    }
  }
  run.state = state;
  return run;
}

// Fire-ahead: an ALLOW tick is due fire_ahead before its instant, one tick
// at a time; other policies' ticks at their instant.
TEST(TickPlanTest, FireAheadHorizonAndNextLook) {
  TickPlanOptions options;
  options.fire_ahead = absl::Seconds(2);
  const CronDefinition allow = Definition();
  const CronDefinition skip =
      Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kSkip);
  CronState state = Due(kT);
  const absl::Time now = kT - absl::Seconds(5);
  EXPECT_EQ(DueHorizon(allow, state, now, options), now + absl::Seconds(2));
  EXPECT_EQ(DueHorizon(skip, state, now, options), now);
  EXPECT_EQ(NextLook(allow, state, now, options), kT - absl::Seconds(2));
  EXPECT_EQ(NextLook(skip, state, now, options), kT);

  CronStep step = PlanCronStep(allow, state, Parse("* * * * * *"),
                               kT - absl::Seconds(2), std::nullopt, options);
  EXPECT_EQ(step.kind, CronStepKind::kFire);
  EXPECT_EQ(step.tick, kT);
  EXPECT_FALSE(step.late);
  EXPECT_EQ(PlanCronStep(skip, state, Parse("* * * * * *"),
                         kT - absl::Seconds(2), std::nullopt, options)
                .kind,
            CronStepKind::kIdle);

  // kT fired ahead: the next tick, 1 s later, waits for kT to come.
  state = step.new_state;
  const absl::Time before = kT - absl::Seconds(2);
  EXPECT_EQ(DueHorizon(allow, state, before, options), before);
  EXPECT_EQ(PlanCronStep(allow, state, Parse("* * * * * *"), before,
                         std::nullopt, options)
                .kind,
            CronStepKind::kIdle);
  EXPECT_EQ(NextLook(allow, state, before, options), kT);
  EXPECT_EQ(DueHorizon(allow, state, kT, options), kT + absl::Seconds(2));

  // Negative counts as 0.
  options.fire_ahead = -absl::Seconds(1);
  EXPECT_EQ(DueHorizon(allow, Due(kT), now, options), now);
}

TEST(TickPlanTest, NothingDueIsIdleAndChangesNothing) {
  CronState state = Due(kT);
  CronStep step = PlanCronStep(Definition(), state, Parse("0 * * * *"),
                               kT - absl::Seconds(1), std::nullopt, {});
  EXPECT_EQ(step.kind, CronStepKind::kIdle);
  EXPECT_FALSE(step.fires());
  EXPECT_EQ(step.new_state.next_fire_time, kT);
  EXPECT_EQ(step.new_state.fired_count, 0);
  EXPECT_FALSE(step.blocked_on_previous_job);
}

TEST(TickPlanTest, OnTimeTickFiresAndAdvances) {
  CronStep step = PlanCronStep(Definition(), Due(kT), Parse("0 * * * *"), kT,
                               std::nullopt, {});
  EXPECT_EQ(step.kind, CronStepKind::kFire);
  EXPECT_EQ(step.tick, kT);
  EXPECT_FALSE(step.late);
  EXPECT_EQ(step.missed, 0);
  EXPECT_EQ(step.new_state.next_fire_time, kT + absl::Hours(1));
  EXPECT_EQ(step.new_state.fired_count, 1);
  EXPECT_EQ(step.new_state.last_fire_time, kT);
}

TEST(TickPlanTest, MisfireThresholdSeparatesOnTimeFromLate) {
  TickPlanOptions options;
  options.misfire_threshold = absl::Seconds(1);
  const CronDefinition skip = Definition(MisfirePolicy::kSkip);
  // Exactly at the threshold: still on time, fired even under SKIP.
  CronStep at = PlanCronStep(skip, Due(kT), Parse("0 * * * *"),
                             kT + absl::Seconds(1), std::nullopt, options);
  EXPECT_EQ(at.kind, CronStepKind::kFire);
  // Past it: late, so SKIP counts it missed.
  CronStep past = PlanCronStep(skip, Due(kT), Parse("0 * * * *"),
                               kT + absl::Seconds(1) + absl::Nanoseconds(1),
                               std::nullopt, options);
  EXPECT_EQ(past.kind, CronStepKind::kMiss);
  EXPECT_EQ(past.missed, 1);
}

// The seed scenario: due at T, found at T + 35 min.
TEST(TickPlanTest, SeedScenarioFireOnceFiresTheMissedTick) {
  History run = RunToIdle(Definition(MisfirePolicy::kFireOnce), Due(kT),
                          Parse("0 * * * *"), kT + absl::Minutes(35));
  EXPECT_EQ(run.fired(), std::vector<absl::Time>{kT});
  ASSERT_EQ(run.steps.size(), 1u);
  EXPECT_TRUE(run.steps[0].late);
  EXPECT_EQ(run.state.missed_count, 0);
  EXPECT_EQ(run.state.next_fire_time, kT + absl::Hours(1));
}

TEST(TickPlanTest, SeedScenarioSkipFiresNoneAndCountsOneMissed) {
  History run = RunToIdle(Definition(MisfirePolicy::kSkip), Due(kT),
                          Parse("0 * * * *"), kT + absl::Minutes(35));
  EXPECT_TRUE(run.fired().empty());
  EXPECT_EQ(run.state.missed_count, 1);
  EXPECT_EQ(run.state.fired_count, 0);
  EXPECT_EQ(run.state.next_fire_time, kT + absl::Hours(1));
}

TEST(TickPlanTest, SeedScenarioFireAllFiresEachMissedTickOldestFirst) {
  History run = RunToIdle(Definition(MisfirePolicy::kFireAll), Due(kT),
                          Parse("*/10 * * * *"), kT + absl::Minutes(35));
  EXPECT_EQ(run.fired(), (std::vector<absl::Time>{kT, kT + absl::Minutes(10),
                                                  kT + absl::Minutes(20),
                                                  kT + absl::Minutes(30)}));
  EXPECT_EQ(run.state.missed_count, 0);
  EXPECT_EQ(run.state.fired_count, 4);
  EXPECT_EQ(run.state.last_fire_time, kT + absl::Minutes(30));
  EXPECT_EQ(run.state.next_fire_time, kT + absl::Minutes(40));
}

TEST(TickPlanTest, FireOnceCollapsesSeveralMissedTicksIntoTheLatest) {
  History run = RunToIdle(Definition(MisfirePolicy::kFireOnce), Due(kT),
                          Parse("*/10 * * * *"), kT + absl::Minutes(35));
  EXPECT_EQ(run.fired(), std::vector<absl::Time>{kT + absl::Minutes(30)});
  EXPECT_EQ(run.state.missed_count, 3);
  EXPECT_EQ(run.state.next_fire_time, kT + absl::Minutes(40));
}

TEST(TickPlanTest, SkipCountsLateTicksButFiresTheOnTimeOne) {
  // Per second, found 5.5 s late: the ticks older than the threshold are
  // missed; the one within it is on time and fires.
  History run = RunToIdle(Definition(MisfirePolicy::kSkip), Due(kT),
                          Parse("* * * * * *"), kT + absl::Milliseconds(5500));
  EXPECT_EQ(run.state.missed_count, 5);  // T .. T+4 s
  EXPECT_EQ(run.fired(), std::vector<absl::Time>{kT + absl::Seconds(5)});
  EXPECT_EQ(run.state.next_fire_time, kT + absl::Seconds(6));
}

TEST(TickPlanTest, FireAllHonoursTheCatchupWindow) {
  CronDefinition d = Definition(MisfirePolicy::kFireAll);
  d.catchup_window = absl::Minutes(15);
  History run =
      RunToIdle(d, Due(kT), Parse("*/10 * * * *"), kT + absl::Minutes(35));
  // The window starts at T+20 min: T and T+10 are missed.
  EXPECT_EQ(run.fired(), (std::vector<absl::Time>{kT + absl::Minutes(20),
                                                  kT + absl::Minutes(30)}));
  EXPECT_EQ(run.state.missed_count, 2);
}

TEST(TickPlanTest, FireAllFiresAtMostTheLatestHundredOldestFirst) {
  CronDefinition d = Definition(MisfirePolicy::kFireAll);
  d.catchup_window = absl::Hours(2);
  // 1000 per-second ticks missed (T .. T+999 s), found at T+999.5 s.
  const absl::Time now = kT + absl::Milliseconds(999500);
  History run = RunToIdle(d, Due(kT), Parse("* * * * * *"), now);
  std::vector<absl::Time> fired = run.fired();
  ASSERT_EQ(fired.size(), 100u);
  EXPECT_EQ(fired.front(), kT + absl::Seconds(900));
  EXPECT_EQ(fired.back(), kT + absl::Seconds(999));
  for (size_t i = 1; i < fired.size(); ++i) {
    EXPECT_EQ(fired[i] - fired[i - 1], absl::Seconds(1));
  }
  EXPECT_EQ(run.state.missed_count, 900);
  EXPECT_EQ(run.state.next_fire_time, kT + absl::Seconds(1000));
}

TEST(TickPlanTest, MaxCatchupTicksIsConfigurable) {
  TickPlanOptions options;
  options.max_catchup_ticks = 3;
  History run = RunToIdle(Definition(MisfirePolicy::kFireAll), Due(kT),
                          Parse("*/10 * * * *"), kT + absl::Minutes(55),
                          std::nullopt, options);
  EXPECT_EQ(run.fired(), (std::vector<absl::Time>{kT + absl::Minutes(30),
                                                  kT + absl::Minutes(40),
                                                  kT + absl::Minutes(50)}));
  EXPECT_EQ(run.state.missed_count, 3);
}

// A week down with a per-second schedule: the backlog is read in bounded
// chunks, one step each, and every tick is accounted for.
TEST(TickPlanTest, HugeBacklogIsHandledInBoundedSteps) {
  TickPlanOptions options;
  options.max_ticks_per_step = 10000;
  const int64_t week = 7 * 24 * 3600;
  const absl::Time now = kT + absl::Seconds(week) - absl::Milliseconds(500);
  // Ticks T .. T + week - 1 s are due: `week` of them.
  for (MisfirePolicy policy : {MisfirePolicy::kSkip, MisfirePolicy::kFireOnce,
                               MisfirePolicy::kFireAll}) {
    SCOPED_TRACE(static_cast<int>(policy));
    CronDefinition d = Definition(policy);
    d.catchup_window = absl::Hours(24 * 7);
    History run =
        RunToIdle(d, Due(kT), Parse("* * * * * *"), now, std::nullopt, options);
    EXPECT_EQ(run.state.fired_count + run.state.missed_count, week);
    EXPECT_EQ(run.state.next_fire_time, kT + absl::Seconds(week));
    for (const CronStep& step : run.steps) {
      EXPECT_LE(step.missed, options.max_ticks_per_step);
    }
    switch (policy) {
      case MisfirePolicy::kSkip:
        // Only the last tick (0.5 s old) is on time.
        EXPECT_EQ(run.state.fired_count, 1);
        break;
      case MisfirePolicy::kFireOnce:
        EXPECT_EQ(run.fired(),
                  std::vector<absl::Time>{kT + absl::Seconds(week - 1)});
        break;
      default:
        EXPECT_EQ(run.state.fired_count, 100);
        EXPECT_EQ(run.fired().front(), kT + absl::Seconds(week - 100));
        break;
    }
  }
}

TEST(TickPlanTest, ExpressionWithNoMoreTicksStaysIdle) {
  CronState state = Due(absl::InfiniteFuture());
  CronStep step = PlanCronStep(Definition(), state, Parse("0 0 30 2 *"),
                               kT + absl::Hours(24 * 365), std::nullopt, {});
  EXPECT_EQ(step.kind, CronStepKind::kIdle);
}

// ---- Overlap ----------------------------------------------------------

CronState DueWithPrevious(absl::Time next_fire) {
  CronState s = Due(next_fire);
  s.last_job_id = "previous";
  s.last_fire_time = next_fire - absl::Hours(1);
  s.fired_count = 1;
  return s;
}

TEST(TickPlanTest, NeedsPreviousJobStateOnlyWhenItMatters) {
  const CronState state = DueWithPrevious(kT);
  EXPECT_FALSE(NeedsPreviousJobState(
      Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kAllow), state, kT));
  for (OverlapPolicy p :
       {OverlapPolicy::kSkip, OverlapPolicy::kWait, OverlapPolicy::kReplace}) {
    const CronDefinition d = Definition(MisfirePolicy::kFireOnce, p);
    EXPECT_TRUE(NeedsPreviousJobState(d, state, kT));
    EXPECT_FALSE(NeedsPreviousJobState(d, state, kT - absl::Seconds(1)));
    EXPECT_FALSE(NeedsPreviousJobState(d, Due(kT), kT));  // no previous job
    CronState held = state;
    held.next_fire_time = kT + absl::Hours(1);
    held.waiting_tick_time = kT;
    EXPECT_EQ(NeedsPreviousJobState(d, held, kT), true);
  }
}

TEST(TickPlanTest, EveryPolicyFiresWhenThePreviousJobIsDone) {
  for (OverlapPolicy p : {OverlapPolicy::kAllow, OverlapPolicy::kSkip,
                          OverlapPolicy::kWait, OverlapPolicy::kReplace}) {
    for (std::optional<JobState> previous :
         {std::optional<JobState>(), std::optional(JobState::kSucceeded),
          std::optional(JobState::kDead),
          std::optional(JobState::kCancelled)}) {
      CronStep step = PlanCronStep(Definition(MisfirePolicy::kFireOnce, p),
                                   DueWithPrevious(kT), Parse("0 * * * *"), kT,
                                   previous, {});
      EXPECT_EQ(step.kind, CronStepKind::kFire) << static_cast<int>(p);
      EXPECT_FALSE(step.cancel_previous_job);
    }
  }
}

TEST(TickPlanTest, AllowFiresOverARunningJob) {
  for (JobState running : {JobState::kPending, JobState::kLeased}) {
    CronStep step = PlanCronStep(
        Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kAllow),
        DueWithPrevious(kT), Parse("0 * * * *"), kT, running, {});
    EXPECT_EQ(step.kind, CronStepKind::kFire);
    EXPECT_FALSE(step.cancel_previous_job);
  }
}

TEST(TickPlanTest, SkipDropsTheTickAndCountsIt) {
  CronStep step = PlanCronStep(
      Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kSkip),
      DueWithPrevious(kT), Parse("0 * * * *"), kT, JobState::kLeased, {});
  EXPECT_EQ(step.kind, CronStepKind::kOverlapSkip);
  EXPECT_EQ(step.tick, kT);
  EXPECT_EQ(step.new_state.overlap_skipped_count, 1);
  EXPECT_EQ(step.new_state.fired_count, 1);
  EXPECT_EQ(step.new_state.next_fire_time, kT + absl::Hours(1));
  EXPECT_EQ(step.new_state.last_job_id, "previous");
}

TEST(TickPlanTest, ReplaceCancelsThePreviousJobAndFires) {
  CronStep step = PlanCronStep(
      Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kReplace),
      DueWithPrevious(kT), Parse("0 * * * *"), kT, JobState::kPending, {});
  EXPECT_EQ(step.kind, CronStepKind::kFire);
  EXPECT_TRUE(step.cancel_previous_job);
  EXPECT_EQ(step.new_state.fired_count, 2);
}

TEST(TickPlanTest, WaitHoldsOneTickSkipsTheRestAndFiresItWhenDone) {
  const CronDefinition d =
      Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kWait);
  const CronExpression hourly = Parse("0 * * * *");
  // T: the previous job still runs: hold T.
  CronStep hold =
      PlanCronStep(d, DueWithPrevious(kT), hourly, kT, JobState::kLeased, {});
  ASSERT_EQ(hold.kind, CronStepKind::kBuffer);
  EXPECT_EQ(hold.new_state.waiting_tick_time, kT);
  EXPECT_EQ(hold.new_state.next_fire_time, kT + absl::Hours(1));

  // Until the next tick, nothing to do, but the schedule waits on the job.
  CronStep idle = PlanCronStep(d, hold.new_state, hourly,
                               kT + absl::Minutes(30), JobState::kLeased, {});
  EXPECT_EQ(idle.kind, CronStepKind::kIdle);
  EXPECT_TRUE(idle.blocked_on_previous_job);

  // T+1h: still running: that tick is skipped; T stays held.
  const absl::Time t1 = kT + absl::Hours(1);
  CronStep skip =
      PlanCronStep(d, hold.new_state, hourly, t1, JobState::kLeased, {});
  ASSERT_EQ(skip.kind, CronStepKind::kOverlapSkip);
  EXPECT_EQ(skip.tick, t1);
  EXPECT_EQ(skip.new_state.waiting_tick_time, kT);
  EXPECT_EQ(skip.new_state.overlap_skipped_count, 1);

  // The job finishes: the held tick T fires, before anything else.
  CronStep fire = PlanCronStep(d, skip.new_state, hourly, t1 + absl::Minutes(5),
                               JobState::kSucceeded, {});
  ASSERT_EQ(fire.kind, CronStepKind::kFireBuffered);
  EXPECT_EQ(fire.tick, kT);
  EXPECT_EQ(fire.new_state.waiting_tick_time, absl::InfinitePast());
  EXPECT_EQ(fire.new_state.fired_count, 2);
  EXPECT_EQ(fire.new_state.last_fire_time, kT);
  EXPECT_EQ(fire.new_state.next_fire_time, kT + absl::Hours(2));
  EXPECT_FALSE(fire.cancel_previous_job);
}

TEST(TickPlanTest, HeldTickIsSettledByTheNewPolicyWhenWaitIsDropped) {
  CronState held = DueWithPrevious(kT + absl::Hours(1));
  held.waiting_tick_time = kT;
  const CronExpression hourly = Parse("0 * * * *");
  const absl::Time now = kT + absl::Minutes(10);

  CronStep allow =
      PlanCronStep(Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kAllow),
                   held, hourly, now, JobState::kLeased, {});
  EXPECT_EQ(allow.kind, CronStepKind::kFireBuffered);
  EXPECT_EQ(allow.tick, kT);

  CronStep replace = PlanCronStep(
      Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kReplace), held,
      hourly, now, JobState::kLeased, {});
  EXPECT_EQ(replace.kind, CronStepKind::kFireBuffered);
  EXPECT_TRUE(replace.cancel_previous_job);

  CronStep skip =
      PlanCronStep(Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kSkip),
                   held, hourly, now, JobState::kLeased, {});
  EXPECT_EQ(skip.kind, CronStepKind::kOverlapSkip);
  EXPECT_EQ(skip.new_state.waiting_tick_time, absl::InfinitePast());
  EXPECT_EQ(skip.new_state.overlap_skipped_count, 1);
  for (const CronStep* s : {&allow, &replace, &skip}) {
    EXPECT_EQ(s->new_state.next_fire_time, kT + absl::Hours(1));
  }
}

TEST(TickPlanTest, MisfireAndOverlapCompose) {
  // FIRE_ALL catch-up under SKIP: the first missed tick fires, the others
  // find its job running and are skipped.
  History run =
      RunToIdle(Definition(MisfirePolicy::kFireAll, OverlapPolicy::kSkip),
                Due(kT), Parse("*/10 * * * *"), kT + absl::Minutes(35));
  EXPECT_EQ(run.fired(), std::vector<absl::Time>{kT});
  EXPECT_EQ(run.state.overlap_skipped_count, 3);
  EXPECT_EQ(run.state.missed_count, 0);

  // FIRE_ONCE over a running job under WAIT: older ticks missed, the latest
  // held.
  History wait =
      RunToIdle(Definition(MisfirePolicy::kFireOnce, OverlapPolicy::kWait),
                DueWithPrevious(kT), Parse("*/10 * * * *"),
                kT + absl::Minutes(35), JobState::kLeased);
  EXPECT_TRUE(wait.fired().empty());
  EXPECT_EQ(wait.state.missed_count, 3);
  EXPECT_EQ(wait.state.waiting_tick_time, kT + absl::Minutes(30));
}

// ---- A model over random histories ----------------------------------------

// Every tick of the expression from the first one up to the last planning
// instant is fired, counted missed, or counted skipped (or still held), once;
// fired ticks ascend; nothing fires past `now`.
TEST(TickPlanTest, EveryTickIsAccountedForOnceOverRandomHistories) {
  std::mt19937_64 rng(20260101);
  const std::vector<std::string> schedules = {"* * * * * *", "*/7 * * * * *",
                                              "*/10 * * * *", "@every 45s"};
  for (int round = 0; round < 200; ++round) {
    const std::string schedule = schedules[rng() % schedules.size()];
    const CronExpression e = Parse(schedule);
    CronDefinition d = Definition(static_cast<MisfirePolicy>(1 + rng() % 3),
                                  static_cast<OverlapPolicy>(1 + rng() % 4));
    d.catchup_window = absl::Seconds(1 + rng() % 7200);
    SCOPED_TRACE(schedule + " misfire " +
                 std::to_string(static_cast<int>(d.misfire_policy)) +
                 " overlap " +
                 std::to_string(static_cast<int>(d.overlap_policy)));
    CronState state = Due(e.Next(kT));
    absl::Time now = kT;
    std::optional<JobState> previous;
    std::vector<absl::Time> fired;
    for (int visit = 0; visit < 30; ++visit) {
      // Gaps from on time to hours (downtime).
      const int64_t gap_ms = rng() % 4 == 0 ? rng() % 7200000 : rng() % 3000;
      now += absl::Milliseconds(gap_ms);
      if (previous.has_value() && rng() % 2 == 0) {
        previous = JobState::kSucceeded;  // the job finished meanwhile
      }
      for (int i = 0; i < 100000; ++i) {
        CronStep step = PlanCronStep(d, state, e, now, previous, {});
        if (step.kind == CronStepKind::kIdle) break;
        if (step.fires()) {
          EXPECT_LE(step.tick, now);
          if (!fired.empty() && step.kind == CronStepKind::kFire) {
            EXPECT_GT(step.tick, fired.back());
          }
          fired.push_back(step.tick);
          step.new_state.last_job_id = "job";
          previous = JobState::kPending;
        }
        state = step.new_state;
      }
      EXPECT_GT(state.next_fire_time, now);
    }
    int64_t ticks = 0;
    for (absl::Time t = e.Next(kT); t < state.next_fire_time; t = e.Next(t)) {
      ++ticks;
    }
    const int64_t held =
        state.waiting_tick_time != absl::InfinitePast() ? 1 : 0;
    EXPECT_EQ(state.fired_count, static_cast<int64_t>(fired.size()));
    EXPECT_EQ(state.fired_count + state.missed_count +
                  state.overlap_skipped_count + held,
              ticks);
  }
}

}  // namespace
}  // namespace adjutant
