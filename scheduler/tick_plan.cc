#include "scheduler/tick_plan.h"

#include <algorithm>
#include <deque>

namespace adjutant {
namespace {

MisfirePolicy EffectiveMisfire(MisfirePolicy p) {
  return p == MisfirePolicy::kUnspecified ? MisfirePolicy::kFireOnce : p;
}

OverlapPolicy EffectiveOverlap(OverlapPolicy p) {
  return p == OverlapPolicy::kUnspecified ? OverlapPolicy::kAllow : p;
}

bool IsRunning(std::optional<JobState> job) {
  return job.has_value() &&
         (*job == JobState::kPending || *job == JobState::kLeased);
}

bool HasHeldTick(const CronState& state) {
  return state.waiting_tick_time != absl::InfinitePast();
}

// The due ticks from state.next_fire_time up to `now`, read once.
struct DueTicks {
  int64_t count = 0;  // ticks read, all due
  int64_t late = 0;   // of which late (a prefix: earlier ticks are later)
  absl::Time latest = absl::InfinitePast();
  // The first tick read with t >= window_start (InfiniteFuture: none).
  absl::Time first_in_window = absl::InfiniteFuture();
  int64_t before_window = 0;  // ticks read with t < window_start
  // The first tick not late (InfiniteFuture: none read).
  absl::Time first_on_time = absl::InfiniteFuture();
  // The last `keep` ticks read, oldest first.
  std::deque<absl::Time> tail;
  // The first tick not read: > now, or the rest of a truncated backlog.
  absl::Time after = absl::InfiniteFuture();
  bool truncated = false;  // stopped at max_ticks_per_step with more due
};

DueTicks ReadDueTicks(const CronExpression& expression, absl::Time first,
                      absl::Time now, absl::Duration threshold,
                      absl::Time window_start, int keep, int64_t max_ticks) {
  DueTicks due;
  absl::Time t = first;
  while (t <= now && due.count < max_ticks) {
    ++due.count;
    due.latest = t;
    if (now - t > threshold) {
      ++due.late;
    } else if (due.first_on_time == absl::InfiniteFuture()) {
      due.first_on_time = t;
    }
    if (t < window_start) {
      ++due.before_window;
    } else if (due.first_in_window == absl::InfiniteFuture()) {
      due.first_in_window = t;
    }
    due.tail.push_back(t);
    if (static_cast<int>(due.tail.size()) > keep) due.tail.pop_front();
    t = expression.Next(t);
  }
  due.after = t;
  due.truncated = t <= now;
  return due;
}

// Settles a tick that is to fire now, under the overlap policy. `state` is
// the state after the step so far (next_fire_time already moved past the
// tick); `may_hold` is false for a tick that is already the held one.
CronStep SettleTick(CronStep step, absl::Time tick, OverlapPolicy overlap,
                    bool previous_running, bool may_hold) {
  step.tick = tick;
  const bool fire = !previous_running || overlap == OverlapPolicy::kAllow ||
                    overlap == OverlapPolicy::kReplace;
  if (fire) {
    step.kind = may_hold ? CronStepKind::kFire : CronStepKind::kFireBuffered;
    step.cancel_previous_job =
        previous_running && overlap == OverlapPolicy::kReplace;
    ++step.new_state.fired_count;
    step.new_state.last_fire_time = tick;
    return step;
  }
  if (overlap == OverlapPolicy::kWait && may_hold &&
      !HasHeldTick(step.new_state)) {
    step.kind = CronStepKind::kBuffer;
    step.new_state.waiting_tick_time = tick;
    return step;
  }
  step.kind = CronStepKind::kOverlapSkip;
  ++step.new_state.overlap_skipped_count;
  return step;
}

CronStep Miss(CronStep step, absl::Time first, int64_t count,
              absl::Time resume_at) {
  step.kind = CronStepKind::kMiss;
  step.tick = first;
  step.missed = count;
  step.new_state.missed_count += count;
  step.new_state.next_fire_time = resume_at;
  return step;
}

}  // namespace

const char* CronStepKindName(CronStepKind kind) {
  switch (kind) {
    case CronStepKind::kIdle:
      return "idle";
    case CronStepKind::kFire:
      return "fire";
    case CronStepKind::kFireBuffered:
      return "fire-held";
    case CronStepKind::kMiss:
      return "miss";
    case CronStepKind::kOverlapSkip:
      return "overlap-skip";
    case CronStepKind::kBuffer:
      return "hold";
  }
  return "unknown";
}

absl::Time DueHorizon(const CronDefinition& definition, const CronState& state,
                      absl::Time now, const TickPlanOptions& options) {
  if (EffectiveOverlap(definition.overlap_policy) != OverlapPolicy::kAllow ||
      state.last_fire_time > now) {
    return now;
  }
  return now + std::max(options.fire_ahead, absl::ZeroDuration());
}

absl::Time NextLook(const CronDefinition& definition, const CronState& state,
                    absl::Time now, const TickPlanOptions& options) {
  const absl::Time next = state.next_fire_time;
  if (EffectiveOverlap(definition.overlap_policy) != OverlapPolicy::kAllow) {
    return next;
  }
  // Not before the tick fired ahead, if any, has come (one at a time).
  return std::max(next - std::max(options.fire_ahead, absl::ZeroDuration()),
                  state.last_fire_time);
}

bool NeedsPreviousJobState(const CronDefinition& definition,
                           const CronState& state, absl::Time now) {
  return EffectiveOverlap(definition.overlap_policy) != OverlapPolicy::kAllow &&
         !state.last_job_id.empty() &&
         (HasHeldTick(state) || state.next_fire_time <= now);
}

CronStep PlanCronStep(const CronDefinition& definition, const CronState& state,
                      const CronExpression& expression, absl::Time now,
                      std::optional<JobState> previous_job,
                      const TickPlanOptions& options) {
  const OverlapPolicy overlap = EffectiveOverlap(definition.overlap_policy);
  const bool previous_running = IsRunning(previous_job);
  CronStep step;
  step.new_state = state;

  // 1. A held tick goes first once its previous job is done (or the policy
  //    no longer says to wait).
  if (HasHeldTick(state)) {
    if (overlap != OverlapPolicy::kWait || !previous_running) {
      step.new_state.waiting_tick_time = absl::InfinitePast();
      return SettleTick(std::move(step), state.waiting_tick_time, overlap,
                        previous_running, /*may_hold=*/false);
    }
    step.blocked_on_previous_job = true;
  }

  // 2. Nothing due (fire-ahead counted).
  const absl::Time first = state.next_fire_time;
  if (first > DueHorizon(definition, state, now, options)) {
    step.kind = CronStepKind::kIdle;
    return step;
  }
  step.blocked_on_previous_job = false;

  // 3. The next tick is on time, or ahead: fire it (the overlap policy
  //    permitting).
  if (now - first <= options.misfire_threshold) {
    step.new_state.next_fire_time = expression.Next(first);
    return SettleTick(std::move(step), first, overlap, previous_running,
                      /*may_hold=*/true);
  }

  // 4. It is late: the misfire policy decides.
  const int keep = std::max(1, options.max_catchup_ticks);
  const int64_t max_ticks =
      std::max<int64_t>(options.max_ticks_per_step, 2 * int64_t{keep});
  const absl::Time window_start = now - definition.catchup_window;
  DueTicks due = ReadDueTicks(expression, first, now, options.misfire_threshold,
                              window_start, keep, max_ticks);

  switch (EffectiveMisfire(definition.misfire_policy)) {
    case MisfirePolicy::kSkip: {
      const absl::Time resume =
          due.late < due.count ? due.first_on_time : due.after;
      return Miss(std::move(step), first, due.late, resume);
    }

    case MisfirePolicy::kFireOnce: {
      if (due.truncated) {
        return Miss(std::move(step), first, due.count, due.after);
      }
      step.missed = due.count - 1;
      step.new_state.missed_count += step.missed;
      step.new_state.next_fire_time = due.after;
      step.late = now - due.latest > options.misfire_threshold;
      return SettleTick(std::move(step), due.latest, overlap, previous_running,
                        /*may_hold=*/true);
    }

    case MisfirePolicy::kFireAll:
    case MisfirePolicy::kUnspecified: {
      if (due.truncated) {
        // The whole chunk is older than the latest `keep` due ticks, but for
        // its tail: count the rest missed and resume at the tail.
        return Miss(std::move(step), first, due.count - keep, due.tail.front());
      }
      const int64_t over_cap = std::max<int64_t>(0, due.count - keep);
      if (due.before_window > 0 || over_cap > 0) {
        if (due.before_window >= over_cap) {
          return Miss(
              std::move(step), first, due.before_window,
              due.before_window < due.count ? due.first_in_window : due.after);
        }
        return Miss(std::move(step), first, over_cap, due.tail.front());
      }
      step.new_state.next_fire_time = expression.Next(first);
      step.late = true;
      return SettleTick(std::move(step), first, overlap, previous_running,
                        /*may_hold=*/true);
    }
  }
  return step;  // unreachable: every policy is handled above
}

}  // namespace adjutant
