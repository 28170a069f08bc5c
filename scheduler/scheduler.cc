#include "scheduler/scheduler.h"

#include <pthread.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

// Steps one schedule may take in one pass before the others get their turn
// (a FIRE_ALL catch-up is at most max_catchup_ticks + a few); the pass comes
// back to it.
constexpr int kMaxStepsPerCronPerPass = 1000;

std::string TimeText(absl::Time t) {
  if (t == absl::InfiniteFuture()) return "never";
  if (t == absl::InfinitePast()) return "-";
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
}

const char* MisfireName(MisfirePolicy p) {
  switch (p) {
    case MisfirePolicy::kSkip:
      return "SKIP";
    case MisfirePolicy::kFireOnce:
      return "FIRE_ONCE";
    case MisfirePolicy::kFireAll:
      return "FIRE_ALL";
    case MisfirePolicy::kUnspecified:
      break;
  }
  return "UNSPECIFIED";
}

TickPlanOptions PlanOptionsFrom(const SchedulerConfig& config) {
  TickPlanOptions options;
  options.misfire_threshold = config.misfire_threshold;
  options.max_catchup_ticks = config.max_catchup_ticks;
  options.fire_ahead =
      std::clamp(config.fire_ahead, absl::ZeroDuration(), kMaxCronFireAhead);
  return options;
}

// Fills the defaults Register documents and refuses what the store must
// never hold.
absl::Status NormalizeDefinition(CronDefinition* d) {
  if (d->name.empty()) return absl::InvalidArgumentError("name: required");
  if (d->timezone.empty()) d->timezone = "UTC";
  if (d->job.queue.empty()) d->job.queue = "default";
  if (d->job.type.empty()) {
    return absl::InvalidArgumentError("job.job_type: required");
  }
  if (d->job.max_attempts < 0) {
    return absl::InvalidArgumentError(
        "job.max_attempts: must not be negative (0 means the default)");
  }
  if (d->catchup_window <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("catchup_window: must be positive");
  }
  switch (d->misfire_policy) {
    case MisfirePolicy::kUnspecified:
      d->misfire_policy = MisfirePolicy::kFireOnce;
      break;
    case MisfirePolicy::kSkip:
    case MisfirePolicy::kFireOnce:
    case MisfirePolicy::kFireAll:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("misfire_policy: unknown value ",
                       static_cast<int>(d->misfire_policy)));
  }
  switch (d->overlap_policy) {
    case OverlapPolicy::kUnspecified:
      d->overlap_policy = OverlapPolicy::kAllow;
      break;
    case OverlapPolicy::kAllow:
    case OverlapPolicy::kSkip:
    case OverlapPolicy::kWait:
    case OverlapPolicy::kReplace:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("overlap_policy: unknown value ",
                       static_cast<int>(d->overlap_policy)));
  }
  return absl::OkStatus();
}

bool IsRetryableRegisterError(const absl::Status& s) {
  // Lost a compare-and-set, or the schedule was created or deleted between
  // our read and our write.
  return absl::IsAborted(s) || absl::IsAlreadyExists(s) || absl::IsNotFound(s);
}

}  // namespace

// A fixed set of threads that run the tasks of one RunAll call, the calling
// thread among them. The other threads start at the first RunAll with more
// than one task and sleep on mu_ between calls: an idle pool costs nothing.
// Thread-safe; RunAll is not reentrant and is called by one thread at a
// time (the scheduler thread, or RunPassForTest's caller).
class FirePool {
 public:
  // `threads` >= 1 counts the caller of RunAll.
  explicit FirePool(int threads)
      : threads_(std::clamp(threads, 1, kMaxCronParallelism)) {}
  ~FirePool() { Shutdown(); }

  FirePool(const FirePool&) = delete;
  FirePool& operator=(const FirePool&) = delete;

  // Runs tasks[0..n) once each, at most `threads` at a time, and returns
  // when every one has returned. After Shutdown(), runs them all on the
  // calling thread.
  void RunAll(const std::vector<std::function<void()>>& tasks)
      ABSL_LOCKS_EXCLUDED(mu_) {
    if (tasks.empty()) return;
    {
      absl::MutexLock l(&mu_);
      if (tasks.size() > 1 && threads_ > 1 && workers_.empty() && !stopping_) {
        for (int i = 1; i < threads_; ++i) {
          workers_.emplace_back([this] { Work(); });
          pthread_setname_np(workers_.back().native_handle(), "cron-fire");
        }
      }
      tasks_ = &tasks;
      next_ = 0;
      done_ = 0;
    }
    Work(/*until_taken=*/true);
    absl::MutexLock l(&mu_);
    auto all_done = [this, &tasks]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return done_ == tasks.size();
    };
    mu_.Await(absl::Condition(&all_done));
    tasks_ = nullptr;
  }

  // Stops and joins the threads. A RunAll in progress finishes its tasks
  // (its caller runs those not taken). Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::thread> workers;
    {
      absl::MutexLock l(&mu_);
      stopping_ = true;
      workers.swap(workers_);
    }
    for (std::thread& t : workers) t.join();
  }

 private:
  // Takes and runs tasks. The caller of RunAll (until_taken) returns once
  // every task is taken; a pool thread sleeps until the next RunAll or
  // Shutdown().
  void Work(bool until_taken = false) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    for (;;) {
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || (tasks_ != nullptr && next_ < tasks_->size());
      };
      if (until_taken) {
        if (tasks_ == nullptr || next_ >= tasks_->size()) return;
      } else {
        mu_.Await(absl::Condition(&has_work));
        if (tasks_ == nullptr || next_ >= tasks_->size()) return;  // stopping
      }
      const std::function<void()>& task = (*tasks_)[next_++];
      mu_.Unlock();
      task();
      mu_.Lock();
      ++done_;
    }
  }

  const int threads_;
  absl::Mutex mu_;
  // State below is protected by mu_.
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The tasks of the RunAll in progress (nullptr: none), the next one to
  // take, and how many have returned.
  const std::vector<std::function<void()>>* tasks_ ABSL_GUARDED_BY(mu_) =
      nullptr;
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  size_t done_ ABSL_GUARDED_BY(mu_) = 0;
};

Scheduler::Scheduler(JobStore* store, Clock* clock, SchedulerConfig config)
    : store_(store),
      clock_(clock),
      config_(config),
      plan_options_(PlanOptionsFrom(config)),
      pool_(std::make_unique<FirePool>(config.cron_parallelism)) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  absl::MutexLock l(&mu_);
  started_ = true;
  thread_ = std::thread([this] { Loop(); });
  pthread_setname_np(thread_.native_handle(), "scheduler");
}

void Scheduler::Stop() {
  {
    absl::MutexLock l(&mu_);
    shutting_down_ = true;
  }
  if (thread_.joinable()) thread_.join();
  pool_->Shutdown();
}

// ---- Schedules ------------------------------------------------------------

absl::StatusOr<CronRecord> Scheduler::Register(CronDefinition definition) {
  if (absl::Status s = NormalizeDefinition(&definition); !s.ok()) return s;
  // Refuse a bad expression or zone before touching the store.
  if (absl::StatusOr<CronExpression> parsed = CronExpression::Parse(
          definition.schedule, definition.timezone, clock_->Now());
      !parsed.ok()) {
    return parsed.status();
  }
  for (int attempt = 0; attempt < std::max(1, config_.max_register_attempts);
       ++attempt) {
    absl::StatusOr<CronRecord> stored = RegisterOnce(definition, clock_->Now());
    if (stored.ok()) {
      Wake();
      return stored;
    }
    if (!IsRetryableRegisterError(stored.status())) return stored.status();
  }
  return absl::AbortedError(
      absl::StrCat("name: schedule '", definition.name,
                   "' kept changing while it was being registered; retry"));
}

absl::StatusOr<CronRecord> Scheduler::RegisterOnce(
    const CronDefinition& definition, absl::Time now) {
  absl::StatusOr<CronRecord> existing = store_->GetCron(definition.name);
  if (!existing.ok() && !absl::IsNotFound(existing.status())) {
    return existing.status();
  }

  if (!existing.ok()) {  // a new schedule
    CronState state;
    if (!definition.paused) {
      absl::StatusOr<CronExpression> expression =
          CronExpression::Parse(definition.schedule, definition.timezone, now);
      if (!expression.ok()) return expression.status();
      state.next_fire_time = expression->Next(now);
    }
    absl::StatusOr<CronRecord> created =
        store_->PutCron(definition, state, /*expected_version=*/0, now);
    if (!created.ok() || definition.paused || created->created_at == now) {
      return created;
    }
    // The store kept created_at at its own precision, and @every counts
    // from what it kept: make the first tick agree with the later ones.
    absl::StatusOr<CronExpression> expression = CronExpression::Parse(
        definition.schedule, definition.timezone, created->created_at);
    if (!expression.ok()) return expression.status();
    const absl::Time next = expression->Next(now);
    if (next == created->state.next_fire_time) return created;
    state = created->state;
    state.next_fire_time = next;
    return store_->PutCron(definition, state, created->version, now);
  }

  const CronRecord& old = *existing;
  if (old.definition == definition) return old;  // nothing changes

  CronState state = old.state;
  const bool resumed = old.definition.paused && !definition.paused;
  const bool retimed = old.definition.schedule != definition.schedule ||
                       old.definition.timezone != definition.timezone;
  if (definition.paused) {
    state.next_fire_time = absl::InfiniteFuture();
  } else if (resumed || retimed) {
    absl::StatusOr<CronExpression> expression = CronExpression::Parse(
        definition.schedule, definition.timezone, old.created_at);
    if (!expression.ok()) return expression.status();
    state.next_fire_time = expression->Next(now);
    // A paused schedule does not catch up, and that includes a held tick.
    if (resumed) state.waiting_tick_time = absl::InfinitePast();
  }
  absl::StatusOr<CronRecord> stored =
      store_->PutCron(definition, state, old.version, now);
  if (stored.ok()) {
    spdlog::info("cron {}: registered changes (next fire {})", definition.name,
                 TimeText(stored->state.next_fire_time));
  }
  return stored;
}

absl::Status Scheduler::Unregister(const std::string& name) {
  // A tick it fired ahead and not yet come is taken back with it: the name
  // registered again may fire that tick itself.
  absl::Status s = store_->DeleteCron(name, clock_->Now());
  if (s.ok()) Wake();
  return s;
}

absl::StatusOr<CronRecord> Scheduler::Get(const std::string& name) {
  return store_->GetCron(name);
}

absl::StatusOr<CronPage> Scheduler::List(int page_size,
                                         const std::string& page_token) {
  return store_->ListCrons(page_size, page_token);
}

// ---- Leadership -----------------------------------------------------------

absl::StatusOr<LeadershipState> Scheduler::SetLeadership(
    bool leader, uint64_t term, absl::Duration ttl,
    std::optional<absl::Duration> granted_at) {
  if (ttl < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ttl: must not be negative");
  }
  // Read before anything that can block (the store's synced write, a
  // transition in flight holding fire_mu_): the TTL counts from the grant.
  const absl::Duration called_at = clock_->Monotonic();
  const absl::Duration granted =
      granted_at.has_value() ? std::min(*granted_at, called_at) : called_at;
  absl::MutexLock serial(&set_leadership_mu_);
  absl::StatusOr<uint64_t> highest = store_->ObserveTerm(term);
  if (!highest.ok()) {
    if (absl::IsFailedPrecondition(highest.status())) {
      return absl::FailedPreconditionError(
          absl::StrCat("term: ", highest.status().message()));
    }
    return highest.status();
  }

  // Waits for a transition in flight, so that a revocation is complete when
  // this returns.
  absl::WriterMutexLock fire(&fire_mu_);
  absl::MutexLock l(&mu_);
  const bool was_leader = LeaderTermLocked().has_value();
  const uint64_t old_term = term_;
  leader_ = leader;
  term_ = term;
  lapse_logged_ = false;
  if (leader && ttl > absl::ZeroDuration()) {
    lapse_at_ = granted + ttl;
    // The wall-clock equivalent: what is left of the TTL, from now.
    expires_at_ = clock_->Now() + (*lapse_at_ - clock_->Monotonic());
  } else {
    lapse_at_.reset();
    expires_at_ = absl::InfiniteFuture();
  }
  wake_pending_ = true;

  const bool leads = LeaderTermLocked().has_value();
  const absl::Duration margin =
      std::max(absl::ZeroDuration(), config_.leadership_safety_margin);
  if (leader && !leads) {
    spdlog::warn(
        "scheduler: leadership (term {}, ttl {}) lapsed before it took effect, "
        "{} after it was granted (a slow store or a long transition); not "
        "firing",
        term, absl::FormatDuration(ttl),
        absl::FormatDuration(clock_->Monotonic() - granted));
    lapse_logged_ = true;
  } else if (leader && lapse_at_.has_value() && ttl <= margin) {
    spdlog::warn(
        "scheduler: ttl {} is not longer than the leadership safety margin "
        "{}: it leaves this instance no time to fire",
        absl::FormatDuration(ttl), absl::FormatDuration(margin));
  }
  if (leads != was_leader || term != old_term) {
    spdlog::info("scheduler: {} (term {}{})",
                 leads ? "leader, firing ticks" : "follower, not firing", term,
                 leads && lapse_at_
                     ? absl::StrCat(", lapses at ", TimeText(expires_at_))
                     : std::string());
  } else {
    spdlog::debug("scheduler: leadership renewed (term {})", term);
  }
  LeadershipState state = LeadershipLocked();
  state.highest_term = *highest;
  return state;
}

absl::StatusOr<LeadershipState> Scheduler::GetLeadership() {
  absl::StatusOr<uint64_t> highest = store_->HighestTerm();
  if (!highest.ok()) return highest.status();
  LeadershipState state;
  {
    absl::MutexLock l(&mu_);
    state = LeadershipLocked();
    state.highest_term = *highest;
    if (!state.leader || state.term >= *highest) return state;
  }
  // Another instance was given a higher term: this one is deposed, whether
  // or not it has tried to fire since.
  Depose(state.term);
  absl::MutexLock l(&mu_);
  state = LeadershipLocked();
  state.highest_term = *highest;
  return state;
}

LeadershipState Scheduler::LeadershipLocked() {
  LeadershipState state;
  state.leader = LeaderTermLocked().has_value();
  state.term = term_;
  state.expires_at = state.leader ? expires_at_ : absl::InfiniteFuture();
  return state;
}

std::optional<uint64_t> Scheduler::FiringTerm() {
  absl::MutexLock l(&mu_);
  return FiringTermLocked();
}

absl::Duration Scheduler::FireAhead() {
  absl::MutexLock l(&mu_);
  if (!lapse_at_.has_value()) return plan_options_.fire_ahead;
  const absl::Duration firing_left =
      *lapse_at_ - clock_->Monotonic() - config_.leadership_safety_margin;
  return std::clamp(firing_left, absl::ZeroDuration(),
                    plan_options_.fire_ahead);
}

std::optional<uint64_t> Scheduler::FiringTermLocked() {
  if (shutting_down_ || !leader_) return std::nullopt;
  if (lapse_at_.has_value()) {
    const absl::Duration left = *lapse_at_ - clock_->Monotonic();
    if (left <= absl::ZeroDuration() ||
        left < config_.leadership_safety_margin) {
      return std::nullopt;
    }
  }
  return term_;
}

bool Scheduler::ShuttingDown() {
  absl::MutexLock l(&mu_);
  return shutting_down_;
}

std::optional<uint64_t> Scheduler::LeaderTermLocked() {
  if (!leader_) return std::nullopt;
  if (lapse_at_.has_value() && clock_->Monotonic() >= *lapse_at_) {
    return std::nullopt;
  }
  return term_;
}

void Scheduler::Depose(uint64_t term) {
  absl::MutexLock l(&mu_);
  if (!leader_ || term_ != term) return;  // told something newer meanwhile
  leader_ = false;
  spdlog::warn(
      "scheduler: the store has seen a term higher than {}: another instance "
      "leads now, so this one stops firing until told again",
      term);
}

void Scheduler::Wake() {
  absl::MutexLock l(&mu_);
  wake_pending_ = true;
}

// ---- The thread -----------------------------------------------------------

void Scheduler::Loop() {
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      if (shutting_down_) return;
      // Cleared before reading the store: a Wake() from now on means another
      // pass.
      wake_pending_ = false;
      ++passes_;
    }
    const absl::Time deadline = RunPassAndPlanSleep();

    absl::MutexLock l(&mu_);
    if (shutting_down_) return;
    if (wake_pending_) continue;
    sleeping_ = true;
    sleep_deadline_ = deadline;
    auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return wake_pending_ || shutting_down_;
    };
    clock_->AwaitWithDeadline(&mu_, absl::Condition(&woken), deadline);
    sleeping_ = false;
  }
}

absl::Time Scheduler::RunPassAndPlanSleep() {
  const absl::Time pass_start = clock_->Now();
  absl::Time deadline = absl::InfiniteFuture();
  if (FiringTerm().has_value()) {
    PassOutcome outcome = RunPass();
    const absl::Time now = clock_->Now();
    deadline = outcome.next_wake;
    if (!outcome.status.ok()) {
      if (!store_error_logged_) {
        spdlog::error("scheduler: {}; retrying every {}",
                      outcome.status.ToString(),
                      absl::FormatDuration(config_.retry_backoff));
        store_error_logged_ = true;
      }
      deadline = now + config_.retry_backoff;
    } else {
      if (store_error_logged_) {
        spdlog::info("scheduler: the store answers again");
        store_error_logged_ = false;
      }
      // Something was due that no step could move (an expression that no
      // longer parses): do not spin on it.
      if (!outcome.progressed && deadline <= pass_start) {
        deadline = now + config_.retry_backoff;
      }
    }
  }

  absl::MutexLock l(&mu_);
  if (leader_ && lapse_at_.has_value()) {
    const absl::Duration left = *lapse_at_ - clock_->Monotonic();
    if (left > absl::ZeroDuration()) {
      // The clock waits in wall time; the TTL runs in monotonic time.
      deadline = std::min(deadline, clock_->Now() + left);
    } else if (!lapse_logged_) {
      spdlog::warn(
          "scheduler: leadership (term {}) lapsed unrenewed; not "
          "firing",
          term_);
      lapse_logged_ = true;
    }
  }
  return deadline;
}

Scheduler::PassOutcome Scheduler::RunPass() {
  PassOutcome outcome;
  // Ticks are judged late against the instant the pass began, the instant
  // the thread woke: a long pass does not make its own ticks late.
  const absl::Time now = clock_->Now();
  const absl::Time started = now;
  TickPlanOptions options = plan_options_;
  options.fire_ahead = FireAhead();
  const absl::Duration ahead = options.fire_ahead;
  const int batch = std::max(1, config_.due_batch_size);
  int processed = 0;
  bool read_all = false;  // every schedule due by now + ahead was read
  for (;;) {
    // Stop() may come in the middle of a long catch-up: leave at once.
    if (ShuttingDown()) return outcome;
    // Schedules of other overlap policies read here but not yet due are
    // left idle by their plan, which says when to look again.
    absl::StatusOr<std::vector<CronRecord>> due =
        store_->DueCrons(now + ahead, batch);
    if (!due.ok()) {
      outcome.status = due.status();
      return outcome;
    }
    // Parsed here, on the scheduler thread, which alone owns parsed_ and
    // unparsable_logged_; the pool gets the expressions.
    std::vector<CronRecord> runnable;
    std::vector<CronExpression> expressions;
    runnable.reserve(due->size());
    expressions.reserve(due->size());
    for (CronRecord& record : *due) {
      absl::StatusOr<CronExpression> expression = ParseFor(record);
      if (!expression.ok()) {
        if (unparsable_logged_.insert(record.definition.name).second) {
          spdlog::error(
              "cron {}: stored expression no longer parses ({}); not "
              "firing it",
              record.definition.name, expression.status().ToString());
        }
        continue;
      }
      expressions.push_back(*std::move(expression));
      runnable.push_back(std::move(record));
    }
    // One schedule per task, each with an outcome of its own: a batch holds
    // a schedule once, so no two threads step the same schedule, and the
    // next batch is read only once every task has returned.
    std::vector<PassOutcome> outcomes(runnable.size());
    std::vector<std::function<void()>> tasks;
    tasks.reserve(runnable.size());
    for (size_t i = 0; i < runnable.size(); ++i) {
      tasks.push_back(
          [this, &runnable, &expressions, &outcomes, &options, i, now] {
            ProcessCron(std::move(runnable[i]), std::move(expressions[i]), now,
                        options, &outcomes[i]);
          });
    }
    if (config_.cron_parallelism > 1) {
      pool_->RunAll(tasks);
    } else {
      for (const std::function<void()>& task : tasks) task();
    }
    processed += static_cast<int>(runnable.size());
    bool progressed_now = false;
    for (const PassOutcome& o : outcomes) {
      progressed_now = progressed_now || o.progressed;
      outcome.next_wake = std::min(outcome.next_wake, o.next_wake);
      if (!o.status.ok() && outcome.status.ok()) outcome.status = o.status;
    }
    outcome.progressed = outcome.progressed || progressed_now;
    // Not leader any more, too close to the lapse, or stopping.
    if (!FiringTerm().has_value()) return outcome;
    // A full batch may hide more due schedules behind it; the ones that
    // stayed due (held WAIT ticks, and ticks of other overlap policies
    // within fire_ahead) sort last, so stop once a batch moves nothing.
    read_all = static_cast<int>(due->size()) < batch;
    if (read_all || !progressed_now || !outcome.status.ok()) break;
  }
  // The earliest next fire of all; and, with fire-ahead, of the schedules
  // beyond this pass's horizon (those within it planned their own look).
  absl::StatusOr<absl::Time> first =
      store_->NextCronFireTime(absl::InfinitePast());
  absl::StatusOr<absl::Time> beyond = first;
  if (first.ok() && ahead > absl::ZeroDuration() && *first <= now + ahead) {
    beyond = store_->NextCronFireTime(now + ahead);
  }
  if (!first.ok() || !beyond.ok()) {
    if (outcome.status.ok()) {
      outcome.status = first.ok() ? beyond.status() : first.status();
    }
  } else if (*first <= now) {
    // Due and not stepped (see RunPassAndPlanSleep), as without fire-ahead.
    outcome.next_wake = std::min(outcome.next_wake, *first);
  } else {
    // Beyond the horizon, an ALLOW schedule may fire `ahead` early. Unless
    // the horizon is where the transitions stop before the TTL's lapse
    // (FireAhead): nothing beyond it fires until a renewal, which wakes the
    // thread. If a full batch that moved nothing hid some within it, they
    // fire at their tick at the latest.
    absl::Time wake = ahead < plan_options_.fire_ahead ? absl::InfiniteFuture()
                                                       : *beyond - ahead;
    if (!read_all) wake = std::min(wake, *first);
    outcome.next_wake = std::min(outcome.next_wake, wake);
  }
  if (processed > 0) {
    spdlog::debug("scheduler: pass at {} looked at {} due schedule(s) in {}",
                  TimeText(now), processed,
                  absl::FormatDuration(clock_->Now() - started));
  }
  return outcome;
}

absl::StatusOr<CronExpression> Scheduler::ParseFor(const CronRecord& record) {
  const CronDefinition& d = record.definition;
  auto it = parsed_.find(d.name);
  if (it == parsed_.end() || it->second.schedule != d.schedule ||
      it->second.timezone != d.timezone ||
      it->second.anchor != record.created_at) {
    // A schedule re-created under the same name, or redefined: parse again.
    if (parsed_.size() > 100000) parsed_.clear();  // bound it, crudely
    it = parsed_
             .insert_or_assign(
                 d.name,
                 ParsedExpression{d.schedule, d.timezone, record.created_at,
                                  CronExpression::Parse(d.schedule, d.timezone,
                                                        record.created_at)})
             .first;
  }
  return it->second.expression;
}

void Scheduler::ProcessCron(CronRecord record, CronExpression expression,
                            absl::Time now, const TickPlanOptions& options,
                            PassOutcome* outcome) {
  // Not leader any more, too close to the lapse, or stopping: the other
  // tasks of the batch leave at once too.
  if (!FiringTerm().has_value()) return;
  absl::Status s = ProcessCronSteps(std::move(record), std::move(expression),
                                    now, options, outcome);
  if (!s.ok() && outcome->status.ok()) outcome->status = s;
}

absl::Status Scheduler::ProcessCronSteps(CronRecord record,
                                         CronExpression expression,
                                         absl::Time now,
                                         const TickPlanOptions& options,
                                         PassOutcome* outcome) {
  for (int steps = 0; steps < kMaxStepsPerCronPerPass; ++steps) {
    std::optional<JobState> previous_job;
    if (NeedsPreviousJobState(record.definition, record.state, now)) {
      absl::StatusOr<Job> job = store_->GetJob(record.state.last_job_id);
      if (job.ok()) {
        previous_job = job->state;
      } else if (!absl::IsNotFound(job.status())) {
        return job.status();
      }
    }
    CronStep step = PlanCronStep(record.definition, record.state, expression,
                                 now, previous_job, options);
    if (step.kind == CronStepKind::kIdle) {
      if (step.blocked_on_previous_job) {
        outcome->next_wake = std::min(
            outcome->next_wake, clock_->Now() + config_.wait_recheck_interval);
      }
      // Its next tick (a held tick does not stop it from being decided).
      outcome->next_wake =
          std::min(outcome->next_wake,
                   NextLook(record.definition, record.state, now, options));
      return absl::OkStatus();
    }

    CronTransition transition;
    transition.name = record.definition.name;
    transition.expected_version = record.version;
    transition.new_state = step.new_state;
    if (step.fires()) {
      transition.claim_tick = step.tick;
      transition.job = JobFor(record.definition, step.tick, now);
      if (step.cancel_previous_job) {
        transition.cancel_job_id = record.state.last_job_id;
      }
    }

    std::optional<absl::StatusOr<CronRecord>> applied =
        ApplyAsLeader(&transition);
    if (!applied.has_value()) return absl::OkStatus();  // not leader now
    if (absl::IsAlreadyExists(applied->status()) &&
        transition.claim_tick.has_value()) {
      // Fired before (by another scheduler on this store, or before the
      // schedule's state went back): move past it without firing again.
      spdlog::warn("cron {}: tick {} was claimed before; not firing it again",
                   record.definition.name, TimeText(step.tick));
      transition.claim_tick.reset();
      transition.job.reset();
      transition.cancel_job_id.clear();
      transition.new_state.fired_count = record.state.fired_count;
      transition.new_state.last_fire_time = record.state.last_fire_time;
      transition.new_state.last_job_id = record.state.last_job_id;
      step.kind = CronStepKind::kIdle;  // logs nothing more below
      applied = ApplyAsLeader(&transition);
      if (!applied.has_value()) return absl::OkStatus();
    }

    if (applied->ok()) {
      outcome->progressed = true;
      LogStep(record, step, **applied, transition.term);
      if (transition.job.has_value() && config_.on_job_fired) {
        config_.on_job_fired(*transition.job);
      }
      record = **std::move(applied);
      continue;
    }
    const absl::Status status = applied->status();
    if (absl::IsAborted(status)) {
      // Raced: another scheduler stepped it, or it was re-registered. Plan
      // again from what is stored.
      absl::StatusOr<CronRecord> reloaded =
          store_->GetCron(record.definition.name);
      if (absl::IsNotFound(reloaded.status())) return absl::OkStatus();
      if (!reloaded.ok()) return reloaded.status();
      const bool redefined = !(reloaded->definition == record.definition) ||
                             reloaded->created_at != record.created_at;
      record = *std::move(reloaded);
      if (record.definition.paused) return absl::OkStatus();
      if (redefined) {
        // Parsed here without the scheduler thread's cache (parsed_), which
        // this pool thread must not touch; the next pass caches it. One that
        // no longer parses is logged by the next pass.
        absl::StatusOr<CronExpression> reparsed = CronExpression::Parse(
            record.definition.schedule, record.definition.timezone,
            record.created_at);
        if (!reparsed.ok()) return absl::OkStatus();
        expression = *std::move(reparsed);
      }
      continue;
    }
    if (absl::IsNotFound(status)) return absl::OkStatus();  // unregistered
    if (absl::IsFailedPrecondition(status)) {
      Depose(transition.term);
      return absl::OkStatus();
    }
    return status;
  }
  return absl::OkStatus();
}

std::optional<absl::StatusOr<CronRecord>> Scheduler::ApplyAsLeader(
    CronTransition* transition) {
  // Shared: transitions run side by side; SetLeadership waits for them all.
  absl::ReaderMutexLock fire(&fire_mu_);
  // Also refuses once Stop() began: the transition in flight (if any) was
  // the last.
  std::optional<uint64_t> term = FiringTerm();
  if (!term.has_value()) return std::nullopt;
  transition->term = *term;
  return store_->ApplyCronTransition(*transition, clock_->Now());
}

NewJob Scheduler::JobFor(const CronDefinition& definition, absl::Time tick,
                         absl::Time now) const {
  NewJob job;
  job.queue = definition.job.queue.empty() ? "default" : definition.job.queue;
  job.type = definition.job.type;
  job.payload = definition.job.payload;
  job.priority = definition.job.priority;
  job.max_attempts = definition.job.max_attempts > 0
                         ? definition.job.max_attempts
                         : std::max(1, config_.default_max_attempts);
  job.cron_name = definition.name;
  job.cron_tick_time = tick;
  if (tick > now) job.run_at = tick;  // fired ahead
  return job;
}

void Scheduler::LogStep(const CronRecord& before, const CronStep& step,
                        const CronRecord& after, uint64_t term) const {
  // Below info nothing is logged, debug included.
  if (!spdlog::should_log(spdlog::level::info)) return;  // skip formatting
  const std::string& name = before.definition.name;
  if (step.missed > 0) {
    spdlog::info(
        "cron {}: {} late tick(s) from {} not fired (misfire policy {})", name,
        step.missed, TimeText(step.tick),
        MisfireName(before.definition.misfire_policy));
  }
  switch (step.kind) {
    case CronStepKind::kFire:
    case CronStepKind::kFireBuffered:
      // Debug: a thousand per-second schedules would write a thousand lines
      // a second (adjutant_cron_fired_total counts them).
      spdlog::debug(
          "cron {}: fired tick {} as job {} (term {}{}{})", name,
          TimeText(step.tick), after.state.last_job_id, term,
          step.kind == CronStepKind::kFireBuffered
              ? ", held until the previous job finished"
              : (step.late ? ", late" : ""),
          step.cancel_previous_job
              ? absl::StrCat(", replacing job ", before.state.last_job_id)
              : std::string());
      break;
    case CronStepKind::kOverlapSkip:
      spdlog::info("cron {}: tick {} skipped: job {} still running", name,
                   TimeText(step.tick), before.state.last_job_id);
      break;
    case CronStepKind::kBuffer:
      spdlog::info("cron {}: tick {} held until job {} finishes", name,
                   TimeText(step.tick), before.state.last_job_id);
      break;
    case CronStepKind::kMiss:  // logged above
    case CronStepKind::kIdle:
      break;
  }
}

// ---- Test hooks -----------------------------------------------------------

absl::Time Scheduler::RunPassForTest() { return RunPassAndPlanSleep(); }

void Scheduler::WaitForIdleForTest() {
  absl::MutexLock l(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shutting_down_ ||
           (sleeping_ && !wake_pending_ && sleep_deadline_ > clock_->Now());
  };
  mu_.Await(absl::Condition(&idle));
}

int64_t Scheduler::PassCountForTest() {
  absl::MutexLock l(&mu_);
  return passes_;
}

}  // namespace adjutant
