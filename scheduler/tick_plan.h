// Tick planning: what one step of a schedule does, given its definition, its
// state, the time, and whether its previous job is still running. Pure
// functions, no I/O: the Scheduler reads the inputs from the store, applies
// the step with JobStore::ApplyCronTransition, and plans again until the
// schedule is idle. Each step moves the schedule forward by itself, so a
// crash between two steps (say, in the middle of a FIRE_ALL catch-up) loses
// nothing and repeats nothing: the next scheduler resumes from the stored
// state.
//
// The rules (issue 3, "The scheduler"):
//  * A tick t is due once now >= t. It is late when now - t exceeds the
//    misfire threshold: it came due while nobody could fire it (downtime, a
//    leadership gap, a stall). Ticks fired on time ignore the misfire policy.
//  * Misfire policy, when the schedule's next tick is late:
//      SKIP       every late tick is counted missed, none fired;
//      FIRE_ONCE  every due tick collapses into one firing of the latest due
//                 tick, the others counted missed;
//      FIRE_ALL   every due tick inside the catch-up window, at most
//                 max_catchup_ticks of the latest, fires, oldest first; the
//                 older ones are counted missed.
//  * Overlap policy, when a tick is to fire while the previous job
//    (state.last_job_id) is PENDING or LEASED:
//      ALLOW      fire anyway;
//      SKIP       do not fire; count it in overlap_skipped_count;
//      WAIT       hold it in waiting_tick_time (one at most; a tick arriving
//                 while one is held is counted skipped) and fire it as soon
//                 as the previous job finishes, before any later tick;
//      REPLACE    cancel the previous job and fire.
//    A held tick is never subject to the misfire policy: it was on time when
//    it was held. If the overlap policy stops being WAIT while a tick is
//    held, the held tick is settled under the new policy.
//  * Fire-ahead (TickPlanOptions::fire_ahead): under ALLOW, a tick t is
//    also due once now >= t - fire_ahead, and fires ahead of its instant
//    (the Scheduler stores its job with run_at = t, so no worker sees it
//    before t) — one tick at a time: not while the last tick fired
//    (state.last_fire_time) is still to come. Nothing about such a tick
//    depends on the moment it is decided, as ALLOW fires whatever the
//    previous job does. The other overlap policies look at the previous
//    job, which may finish in the meantime, so their ticks fire at their
//    instant, as without it.
#ifndef ADJUTANT_SCHEDULER_TICK_PLAN_H_
#define ADJUTANT_SCHEDULER_TICK_PLAN_H_

#include <cstdint>
#include <optional>

#include "absl/time/time.h"
#include "scheduler/cron_expression.h"
#include "storage/job.h"

namespace adjutant {

struct TickPlanOptions {
  // A due tick is late (misfired) when now is more than this past it.
  // Default 1 s.
  absl::Duration misfire_threshold = absl::Seconds(1);
  // FIRE_ALL fires at most this many missed ticks (the latest ones).
  // Default 100; at least 1.
  int max_catchup_ticks = 100;
  // One step reads at most this many ticks of the expression; a longer
  // backlog (a per-second schedule after a week down) is counted missed in
  // chunks of this size, one step per chunk. Default 100 000; raised to
  // 2 * max_catchup_ticks if lower.
  int max_ticks_per_step = 100000;
  // How long before its instant a tick of an ALLOW schedule may fire (see
  // above). Default 0: at its instant; negative counts as 0.
  absl::Duration fire_ahead = absl::ZeroDuration();
};

// What a step does.
enum class CronStepKind {
  kIdle,          // nothing to do at `now`
  kFire,          // a due tick fires a job
  kFireBuffered,  // the held WAIT tick fires a job
  kMiss,          // late ticks are counted missed; nothing else happens
  kOverlapSkip,   // a tick is dropped: the previous job is still running
  kBuffer,        // a tick is held until the previous job finishes (WAIT)
};

// "idle", "fire", ... for logs.
const char* CronStepKindName(CronStepKind kind);

struct CronStep {
  CronStepKind kind = CronStepKind::kIdle;
  // The tick fired, held or skipped (kMiss: the first tick counted missed).
  // InfinitePast for kIdle.
  absl::Time tick = absl::InfinitePast();
  // Ticks this step counts in missed_count (kMiss, or FIRE_ONCE collapsing
  // older ticks into the one it fires).
  int64_t missed = 0;
  // Whether `tick` was late when fired (a catch-up).
  bool late = false;
  // kFire / kFireBuffered under REPLACE: cancel state.last_job_id first.
  bool cancel_previous_job = false;
  // kIdle: a held WAIT tick is blocked on a running previous job, so the
  // schedule needs a look when that job finishes.
  bool blocked_on_previous_job = false;
  // The schedule's state after the step. When the step fires, fired_count
  // and last_fire_time are already updated; last_job_id is left for the
  // store to fill with the new job's id. For kIdle: the input state.
  CronState new_state;

  // Whether the step enqueues a job (and so claims `tick`).
  bool fires() const {
    return kind == CronStepKind::kFire || kind == CronStepKind::kFireBuffered;
  }
};

// Whether PlanCronStep needs to know the state of `state.last_job_id` at
// `now`: the overlap policy is not ALLOW, there is a previous job, and a
// tick is due or held.
bool NeedsPreviousJobState(const CronDefinition& definition,
                           const CronState& state, absl::Time now);

// The instant up to which ticks of the schedule are due at `now`: now +
// fire_ahead under ALLOW unless its last tick fired is still to come,
// otherwise now.
absl::Time DueHorizon(const CronDefinition& definition, const CronState& state,
                      absl::Time now, const TickPlanOptions& options);

// When a schedule that PlanCronStep found idle at `now` next needs a look
// for its next tick: that tick less fire_ahead under ALLOW, but not before
// its last tick fired has come; otherwise the tick itself. Always later
// than `now`. (A held WAIT tick blocked on its previous job needs looks of
// its own besides.)
absl::Time NextLook(const CronDefinition& definition, const CronState& state,
                    absl::Time now, const TickPlanOptions& options);

// Plans the next step of a schedule at `now`.
//  * `expression` is the schedule's parsed expression (definition.schedule
//    in definition.timezone, anchored at the schedule's created_at).
//  * `previous_job` is the state of state.last_job_id, or nullopt when there
//    is none (or it is unknown to the store): only read when
//    NeedsPreviousJobState() says so.
// A paused schedule is planned like any other: the caller does not plan
// paused schedules.
CronStep PlanCronStep(const CronDefinition& definition, const CronState& state,
                      const CronExpression& expression, absl::Time now,
                      std::optional<JobState> previous_job,
                      const TickPlanOptions& options);

}  // namespace adjutant

#endif  // ADJUTANT_SCHEDULER_TICK_PLAN_H_
