// The cron scheduler: registers schedules, holds this instance's leadership,
// and runs the one thread that fires due ticks as jobs.
//
// Firing a tick is one JobStore::ApplyCronTransition: claim (name, tick),
// enqueue the job, store the schedule's new state, and record the term that
// fired it, in one transaction. A claimed tick is never enqueued again: not
// after a crash, a restart, or by a second scheduler on the same store. What
// each step does (misfire and overlap policies) is planned by the pure
// functions of scheduler/tick_plan.h.
//
// Leadership is pushed in from outside (SetLeadership) and lives in memory
// only: a new Scheduler is a follower. The scheduler fires only while it is
// leader and its leadership has not lapsed. Its term must never be lower
// than the highest the store has seen; a scheduler that finds itself deposed
// (a transition refused for a lower term) stops firing until told again.
// A TTL counts from the instant the grant arrived (the caller passes it in),
// not from when the store let SetLeadership through; and no transition
// starts in the last leadership_safety_margin of a TTL, since a transition
// may block on the store and must not commit long after the lapse.
//
// A pass processes the schedules due in it concurrently, on a fixed pool of
// cron_parallelism threads owned by the Scheduler (the scheduler thread is
// one of them): their reads and transitions meet in the store's group
// commit (SQLite) or use several of its connections (PostgreSQL), so a
// round of a thousand due schedules costs a few syncs rather than a
// thousand. Within a pass one schedule is stepped by one thread at a time,
// in order; the pass waits for every schedule of a batch before it reads
// the next batch.
//
// The thread sleeps (Clock::AwaitWithDeadline) until the earliest of: the
// next fire time of any active schedule (less SchedulerConfig::fire_ahead
// for one that may fire ahead), the leadership TTL lapsing, a look
// at a held WAIT tick whose previous job may have finished elsewhere
// (wait_recheck_interval), or Wake(). There is no polling beat: with
// thousands of schedules due next week the thread stays asleep until then,
// and while not leader it sleeps until the leadership changes.
#ifndef ADJUTANT_SCHEDULER_SCHEDULER_H_
#define ADJUTANT_SCHEDULER_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "scheduler/cron_expression.h"
#include "scheduler/tick_plan.h"
#include "storage/job.h"
#include "storage/job_store.h"

namespace adjutant {

struct SchedulerConfig {
  // max_attempts of the jobs a schedule fires when its template says 0
  // (the server's --default-max-attempts). Default 3.
  int32_t default_max_attempts = 3;
  // A due tick is late (and the misfire policy applies) when the thread
  // finds it more than this long after its instant. Default 1 s.
  absl::Duration misfire_threshold = absl::Seconds(1);
  // FIRE_ALL fires at most this many missed ticks per catch-up. Default 100.
  int max_catchup_ticks = 100;
  // While a WAIT tick is held, the thread looks at its previous job this
  // often, for jobs that finish without Wake() (acked through another
  // daemon, or gone DEAD when their lease expired). Default 1 s.
  absl::Duration wait_recheck_interval = absl::Seconds(1);
  // After a store error the thread retries this much later. Default 1 s.
  absl::Duration retry_backoff = absl::Seconds(1);
  // Due schedules read from the store at a time. Default 1024.
  int due_batch_size = 1024;
  // Due schedules processed at once in a pass: the threads of the firing
  // pool (the scheduler thread included). 1: one after another on the
  // scheduler thread. Values below 1 count as 1, above kMaxCronParallelism
  // as that. The pool's threads start at the first pass that has more than
  // one schedule due, and sleep between passes. On SQLite a round costs
  // about (due schedules / cron_parallelism) group commits, each one sync.
  // Default 64 (like the server's executor threads).
  int cron_parallelism = 64;
  // Register retries a lost compare-and-set this many times before giving up
  // with ABORTED. Default 16.
  int max_register_attempts = 16;
  // Under a leadership with a TTL, no transition starts once less than this
  // is left before the lapse: a transition can block on the store (SQLite
  // waits up to its busy_timeout while another process writes), and one
  // started just before the lapse could commit well after it. The store's
  // term check remains the fence against a deposed leader; this keeps an
  // unrenewed one from firing on borrowed time. An elector that renews a
  // 3 s TTL every second leaves at least 2 s at each renewal, so firing is
  // never held back; a TTL not longer than the margin leaves no time to fire.
  // Negative counts as 0. Default 1 s.
  absl::Duration leadership_safety_margin = absl::Seconds(1);
  // How long before its instant a tick of a schedule with overlap policy
  // ALLOW may fire: its job is stored then, with run_at = the tick, so it
  // becomes runnable at the tick itself, however many schedules share that
  // tick and however long their transitions take (a thousand take tens of
  // milliseconds). One tick of a schedule at a time is ahead: the next
  // fires once the last has come. The tick is decided when it fires: a
  // pause or change that lands between then and the tick takes effect from
  // the next tick (the fired job stays, as after any tick, and can be
  // cancelled), and the record's last_fire_time may be up to fire_ahead in
  // the future; Unregister takes the tick back (DeleteCron cancels its
  // job). Under a TTL no tick fires ahead past the instant transitions stop
  // (the lapse less leadership_safety_margin). Ticks of the other overlap
  // policies fire at their instant (tick_plan.h); the thread looks at them
  // once fire_ahead before as well, to no effect. 0: every tick fires at its
  // instant. Negative counts as 0, more than kMaxCronFireAhead as that.
  // Default 250 ms.
  absl::Duration fire_ahead = absl::Milliseconds(250);
  // Optional: told after a tick enqueued `job` (runnable at job.run_at,
  // InfinitePast for now), so the server can wake the long-polls of its
  // queue. Called on the firing pool's threads, several at once (so it must
  // be thread-safe), after the transition's commit, with no lock of the
  // Scheduler held; must not block. Default: none.
  std::function<void(const NewJob& job)> on_job_fired;
};

// This instance's leadership, as SetLeadership / GetLeadership report it.
struct LeadershipState {
  // Whether this instance leads now: told it is leader, not lapsed, not
  // deposed by a higher term. (In the last leadership_safety_margin of a TTL
  // it still leads but starts no transition.)
  bool leader = false;
  // The term it was last told (0 if never).
  uint64_t term = 0;
  // When the leadership lapses, in wall time; InfiniteFuture when it does
  // not (ttl 0) or when not leader.
  absl::Time expires_at = absl::InfiniteFuture();
  // The highest term the store has seen.
  uint64_t highest_term = 0;
};

// Thread-safe: every public method may be called from any thread. The
// methods that touch the store block on it; call them off gRPC reaction
// threads.
class FirePool;

// The largest SchedulerConfig::cron_parallelism (the daemon's
// --cron-parallelism refuses more); larger values count as this.
inline constexpr int kMaxCronParallelism = 1024;

// The largest SchedulerConfig::fire_ahead (the daemon's --cron-fire-ahead
// refuses more); larger values count as this.
inline constexpr absl::Duration kMaxCronFireAhead = absl::Minutes(1);

class Scheduler {
 public:
  // `store` and `clock` must outlive the Scheduler.
  Scheduler(JobStore* store, Clock* clock,
            SchedulerConfig config = SchedulerConfig());
  // Stops the thread (see Stop()).
  ~Scheduler();

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts the background thread. REQUIRES: not started before.
  void Start();
  // Stops the thread and the firing pool and waits for them: the
  // transitions in flight (at most cron_parallelism) finish, no other
  // starts, and the thread leaves its pass at once (a catch-up of thousands
  // of ticks is abandoned part-way; the claims already stored keep it exact
  // when the next leader resumes it). Idempotent; after it the Scheduler
  // may still register and answer, but fires nothing. REQUIRES: not called
  // from the scheduler thread or a pool thread (e.g. from on_job_fired),
  // nor from two threads at once.
  void Stop();

  // Creates or updates the schedule `definition.name`, and returns it as
  // stored. Normalizes first: empty timezone -> "UTC", empty job.queue ->
  // "default", unspecified policies -> FIRE_ONCE / ALLOW; job.max_attempts 0
  // stays 0 and means default_max_attempts when a job is fired.
  //  * INVALID_ARGUMENT naming the field: empty name or job.type, negative
  //    job.max_attempts, catchup_window <= 0, a policy out of range, or an
  //    expression or zone CronExpression refuses.
  //  * New: next_fire_time = the first tick after now (@every counts from
  //    the creation instant, created_at).
  //  * Identical to the stored definition (after normalization): nothing
  //    changes, not even the version; the stored record is returned.
  //  * Changed schedule or timezone: next_fire_time recomputed from now.
  //  * Paused: next_fire_time unset (InfiniteFuture); nothing fires.
  //  * Resumed (paused -> not paused): next_fire_time recomputed from now,
  //    so the ticks of the pause are neither fired nor caught up; a WAIT
  //    tick held before the pause is dropped.
  //  * Any other change keeps the state (next_fire_time, counters).
  // Retries a lost compare-and-set (the thread fired meanwhile) up to
  // max_register_attempts times, then ABORTED. Wakes the thread.
  absl::StatusOr<CronRecord> Register(CronDefinition definition);

  // Deletes a schedule; jobs it fired stay, but for the job of a tick fired
  // ahead whose instant has not come (JobStore::DeleteCron cancels it), so
  // the name registered again fires that tick at most once. NOT_FOUND if
  // unknown. Wakes the thread.
  absl::Status Unregister(const std::string& name);

  // Pass-throughs to the store (see JobStore::GetCron / ListCrons).
  absl::StatusOr<CronRecord> Get(const std::string& name);
  // REQUIRES: page_size >= 1.
  absl::StatusOr<CronPage> List(int page_size, const std::string& page_token);

  // Tells this instance whether it is leader. `term` goes through
  // JobStore::ObserveTerm first: FAILED_PRECONDITION if it is lower than the
  // highest term the store has seen, and then nothing changes. `ttl` > 0:
  // the leadership lapses at granted_at + ttl (monotonic time) unless
  // renewed; 0: until revoked. `granted_at` is the clock's Monotonic() when
  // the grant arrived (the RPC handler reads it before queueing the call);
  // nullopt means when this call began, and an instant later than that
  // counts as that. The TTL thus includes the time spent waiting for the
  // store and for a transition in flight: a grant that lapsed meanwhile
  // returns leader false and fires nothing. INVALID_ARGUMENT if ttl < 0.
  // Returns the leadership after the call. When it returns false-leadership,
  // no transition is in flight and none starts, on any pool thread: it
  // waits for the transitions in flight (see fire_mu_). Wakes the thread.
  absl::StatusOr<LeadershipState> SetLeadership(
      bool leader, uint64_t term, absl::Duration ttl,
      std::optional<absl::Duration> granted_at = std::nullopt);

  // This instance's leadership now, and the store's highest term.
  absl::StatusOr<LeadershipState> GetLeadership();

  // Asks the thread to look at the schedules again now: for the server to
  // call when a job fired by a schedule finishes (a WAIT tick may be held
  // for it). Cheap; never blocks on the store.
  void Wake();

  // Test hooks.

  // Runs one pass of the thread on the calling thread (and the firing pool)
  // at clock->Now(): fires everything due while leader. Returns the wall
  // time the thread would sleep until (InfiniteFuture: until woken).
  // REQUIRES: Start() not called; not called from two threads at once.
  absl::Time RunPassForTest();
  // Blocks (in real time) until the thread is asleep with nothing to do at
  // the clock's current time: no Wake() pending and a deadline later than
  // now. With a SimulatedClock, this is how a test knows that everything
  // due has been handled. Also returns once Stop() has begun (from any
  // thread, even the scheduler thread inside a store call). REQUIRES:
  // started.
  void WaitForIdleForTest();
  // How many passes the thread has run since Start().
  int64_t PassCountForTest();

 private:
  struct PassOutcome {
    absl::Time next_wake = absl::InfiniteFuture();
    bool progressed = false;  // some transition was applied
    absl::Status status;      // the first error met, if any
  };

  void Loop();
  // One pass, then the wall time to sleep until.
  absl::Time RunPassAndPlanSleep();
  PassOutcome RunPass();
  // Steps one due schedule until it is idle at `now` (or stops being ours),
  // `expression` being its parsed schedule. Runs on any pool thread: touches
  // no state of the scheduler thread (parsed_, unparsable_logged_); fills
  // *outcome, which is its own.
  void ProcessCron(CronRecord record, CronExpression expression, absl::Time now,
                   const TickPlanOptions& options, PassOutcome* outcome);
  absl::Status ProcessCronSteps(CronRecord record, CronExpression expression,
                                absl::Time now, const TickPlanOptions& options,
                                PassOutcome* outcome);
  // Applies `transition` under this scheduler's term (which it fills in).
  // nullopt, and nothing applied, when not leader at that moment. Holds
  // fire_mu_ shared across the store call. Thread-safe.
  std::optional<absl::StatusOr<CronRecord>> ApplyAsLeader(
      CronTransition* transition);
  // The expression of `record` (parsed once per definition). Scheduler
  // thread only.
  absl::StatusOr<CronExpression> ParseFor(const CronRecord& record);
  absl::StatusOr<CronRecord> RegisterOnce(const CronDefinition& definition,
                                          absl::Time now);
  // The job a tick fires: runnable at once, or at the tick if it fires
  // ahead of it (tick > now).
  NewJob JobFor(const CronDefinition& definition, absl::Time tick,
                absl::Time now) const;
  void LogStep(const CronRecord& before, const CronStep& step,
               const CronRecord& after, uint64_t term) const;
  // Notes that the store refused `term` as lower than its highest.
  void Depose(uint64_t term);

  // The fire-ahead of a pass starting now: SchedulerConfig::fire_ahead, but
  // no tick is fired ahead past the instant its transitions stop (the TTL's
  // lapse less leadership_safety_margin), so an unrenewed leader never
  // decides a tick that comes after it stopped leading.
  absl::Duration FireAhead() ABSL_LOCKS_EXCLUDED(mu_);
  // The term to start a transition under: leader now, Stop() not begun, and
  // at least leadership_safety_margin left of a TTL.
  std::optional<uint64_t> FiringTerm() ABSL_LOCKS_EXCLUDED(mu_);
  std::optional<uint64_t> FiringTermLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The term, if leader now (not lapsed; margin ignored): for reports.
  std::optional<uint64_t> LeaderTermLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether Stop() has begun.
  bool ShuttingDown() ABSL_LOCKS_EXCLUDED(mu_);
  LeadershipState LeadershipLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  JobStore* const store_;
  Clock* const clock_;
  const SchedulerConfig config_;
  const TickPlanOptions plan_options_;

  // Serializes SetLeadership calls, so that their terms reach memory in the
  // order the store observed them.
  absl::Mutex set_leadership_mu_;

  // A reader-writer lock between the transitions and the leadership. Each
  // pool thread holds it shared around "am I leader? apply the transition"
  // (ApplyAsLeader), so transitions run side by side; SetLeadership holds it
  // exclusively while it changes the leadership. An exclusive holder waits
  // for every shared holder to leave, and a waiting one keeps new shared
  // holders out (absl::Mutex lets a waiting writer block new readers), so
  // once SetLeadership has the lock no transition is in flight, and every
  // transition that starts after it reads the new leadership under mu_
  // before it reaches the store: once a revocation returns, no transition
  // with the old term is in flight or can start. Acquired before mu_.
  absl::Mutex fire_mu_ ABSL_ACQUIRED_BEFORE(mu_);

  absl::Mutex mu_;
  // State below is protected by mu_.
  bool leader_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t term_ ABSL_GUARDED_BY(mu_) = 0;
  // Monotonic instant the leadership lapses at; nullopt: no TTL.
  std::optional<absl::Duration> lapse_at_ ABSL_GUARDED_BY(mu_);
  // Its wall-time equivalent when it was set, for reports.
  absl::Time expires_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool lapse_logged_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  // So WaitForIdleForTest can tell the thread is asleep, and until when.
  bool sleeping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time sleep_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t passes_ ABSL_GUARDED_BY(mu_) = 0;

  // Runs a pass's due schedules on cron_parallelism threads (defined in
  // scheduler.cc). Thread-safe.
  const std::unique_ptr<FirePool> pool_;

  // Used by the scheduler thread only (or RunPassForTest's caller), never
  // by the pool's other threads.
  bool store_error_logged_ = false;  // so a store outage logs once
  // Parsed expressions by schedule name, with what they were parsed from.
  struct ParsedExpression {
    std::string schedule;
    std::string timezone;
    absl::Time anchor;
    absl::StatusOr<CronExpression> expression;
  };
  std::map<std::string, ParsedExpression> parsed_;
  // Schedules whose stored expression no longer parses, logged once each.
  std::set<std::string> unparsable_logged_;

  std::thread thread_;
};

}  // namespace adjutant

#endif  // ADJUTANT_SCHEDULER_SCHEDULER_H_
