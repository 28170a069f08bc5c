// Long-polling Dequeue: the registry of parked calls, and the one timer
// thread that ends their waits and reaps expired leases.
//
// How a Dequeue with `wait` uses it (server/job_queue_service.cc):
//   1. g = Generation(queue, job_types); now = clock->Now();
//      ExpireLeasesIfDue(now); store->Dequeue(..., now).
//   2. Found nothing, wait not over: Park(call, queue, job_types, g, now,
//      deadline). kRetry means something may have become available while
//      the attempt ran (the generation moved): go back to 1 instead of
//      sleeping through it. That check, under the registry's mutex, is what
//      makes a wake-up impossible to miss.
//   3. A parked call holds no thread. Exactly one of these ends the park:
//      Wake(queue[, job_type]) -> waiter->Wake() (try again), its deadline
//      -> waiter->Expire() (finish empty), Shutdown() ->
//      waiter->ShutDown() (finish UNAVAILABLE), or Remove() (the client
//      left).
//
// Wake-ups are per queue and job type: a waiter filtered on job types is
// woken (and its generation moves) only for jobs of one of its types, or by
// an untyped Wake(queue) that cannot tell the type (a delayed job's run_at
// came, a fired cron tick). Generations are hashed into fixed buckets, so a
// collision costs a spurious retry, never a missed wake-up.
//
// A typed wake-up for n new jobs wakes at most n parked waiters, the
// longest parked first, not every waiter of the queue: with 10 000 calls
// parked on a queue, one Enqueue costs one retry, not 10 000. Every woken
// waiter takes a job or finds it taken by someone else; one that cannot
// try (its client left, the store failed) passes the wake-up on to one
// other waiter (PassWakeUpOn). Attempts in flight still see the generation
// move, however many they are.
//
// Who calls Wake: the service after every store write that makes a job
// available now (JobsAvailableAt) — or, for an enqueue of jobs without a
// run_at on a store that writes asynchronously, as soon as the write is
// queued: every attempt whose lease is queued after it sees its jobs
// (JobStore's write order), and usually shares its commit; the timer
// thread after it reaps expired leases or reaches a delayed job's run_at.
// Jobs that become available later are announced with NoteNextAvailable so
// the timer wakes for them.
//
// Two kinds of time, never mixed (scheduler/clock.h): a wait's deadline is
// monotonic (Clock::Monotonic() + wait), so a wall-clock step neither
// stretches nor cuts it; run_at and lease expiries are wall time, as stored.
//
// The timer thread sleeps (Clock::AwaitWithDeadline, never a fixed beat)
// until the earliest of: a parked call's deadline (converted to wall time
// when it plans the sleep), and the store's NextAvailableTime("") (a delayed
// job's run_at, a lease's expiry). There it expires waiters, runs
// ExpireLeases, and wakes the queues that gained available jobs. It re-plans
// whenever it sees the wall clock behind the instant it planned at, and
// ends a sleep early when a deadline has passed on the monotonic clock; it
// sees both whenever the registry's mutex is released (any Dequeue attempt,
// wake-up or park). Known limit: with the real clock, abseil's timed waits
// are absolute on CLOCK_REALTIME, so a step back that lands while the timer
// sleeps and the registry is otherwise idle still stretches that one sleep;
// only a monotonic wait in Clock would remove it.
//
// Not across processes by itself: daemons sharing a SQLite file do not wake
// each other's waiters. A job enqueued through one daemon reaches a call
// parked in another only when that call tries again for a reason of its own
// daemon (a wake-up there, a round of its timer) or when its wait ends empty
// and the client asks again. (On PostgreSQL, server/store_notifier.h relays
// wake-ups between daemons into Wake and NoteNextAvailable.)
#ifndef ADJUTANT_SERVER_LONG_POLL_H_
#define ADJUTANT_SERVER_LONG_POLL_H_

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "storage/job.h"
#include "storage/job_store.h"

namespace adjutant {

class ServerMetrics;  // server/server_metrics.h

// Called when a job fired by a schedule (cron_name non-empty) becomes
// SUCCEEDED, DEAD or CANCELLED, so the scheduler can act on it (overlap
// policy WAIT). May be called more than once for the same job (a retried
// Ack). Called on an executor or timer thread with no lock held; must not
// block.
using JobFinishedHook = std::function<void(const Job&)>;

// Calls `hook` (if set) when `job` is one it is meant to hear about.
void NotifyIfCronJobFinished(const JobFinishedHook& hook, const Job& job);

// A parked Dequeue call or Work stream; implemented by the service's
// reactors (a Work stream parks with an infinite deadline: it is never
// expired, only woken, shut down or removed).
class LongPollWaiter {
 public:
  // Whether the client has gone away. Thread-safe.
  virtual bool IsCancelled() const = 0;
  // A job may be available: retry the Dequeue. Must not block: retry here
  // only as far as that never waits for I/O (an asynchronous store write),
  // otherwise schedule the retry elsewhere. Called without registry locks
  // held; may finish the call.
  virtual void Wake() = 0;
  // The wait is over (its deadline came): finish with an empty response.
  // Must not block. Called without registry locks held.
  virtual void Expire() = 0;
  // The server is shutting down: finish with UNAVAILABLE, so that the
  // client retries (on another server, or on this one once restarted)
  // rather than taking the end for an empty queue. Must not block. Called
  // without registry locks held.
  virtual void ShutDown() = 0;

 protected:
  ~LongPollWaiter() = default;
};

// Thread-safe. Neither owns nor outlives the store and the clock it is given.
class LongPollRegistry {
 public:
  enum class ParkResult {
    kParked,        // the registry now holds the waiter
    kRetry,         // something changed since Generation(): attempt again
    kCancelled,     // the waiter is cancelled: finish it
    kShuttingDown,  // finish it with UNAVAILABLE
  };

  // `store` and `clock` must outlive the registry. `on_cron_job_finished`
  // (optional) hears of cron jobs that the reaper made DEAD.
  LongPollRegistry(JobStore* store, Clock* clock,
                   JobFinishedHook on_cron_job_finished);
  // Calls Shutdown().
  ~LongPollRegistry();

  LongPollRegistry(const LongPollRegistry&) = delete;
  LongPollRegistry& operator=(const LongPollRegistry&) = delete;

  // Starts the timer thread. Its first round reaps leases that expired
  // while the daemon was down. REQUIRES: called at most once.
  void Start();

  // Refuses further parks, ends every parked waiter with ShutDown() (their
  // calls end with UNAVAILABLE), and stops the timer thread. Idempotent.
  // REQUIRES: not called concurrently with itself.
  void Shutdown();

  // ---- The attempt protocol (see the top of this file) --------------------

  // A number to read before an attempt's store Dequeue and pass to Park().
  // It changes whenever a wake-up concerns a call on `queue` filtered on
  // `job_types` (empty: any type), and whenever the reaper runs.
  uint64_t Generation(absl::string_view queue,
                      const std::vector<std::string>& job_types);

  // Parks `waiter`, unless shutting down, cancelled, or
  // Generation(queue, job_types) is no longer `generation`. `attempted_at`
  // is the (wall) `now` of the attempt that found nothing; `deadline` is
  // monotonic (Clock::Monotonic() + wait) and ends the wait. After kParked
  // the caller must not touch the waiter: the registry may end the park at
  // once.
  // REQUIRES: `waiter` is not parked; `job_types` outlives the park.
  ParkResult Park(LongPollWaiter* waiter, const std::string& queue,
                  const std::vector<std::string>& job_types,
                  uint64_t generation, absl::Time attempted_at,
                  absl::Duration deadline);

  // Unparks `waiter` and returns true if it was parked (the caller then
  // finishes it); false if it was not (someone else owns it).
  bool Remove(LongPollWaiter* waiter);

  // ---- Notifications ------------------------------------------------------

  // Jobs of `queue`, of types not known, are available now: wakes every
  // waiter parked on it.
  void Wake(const std::string& queue);
  // `jobs` jobs of `queue` and `job_type` are available now: wakes up to
  // `jobs` of the waiters parked on `queue` whose filter admits `job_type`,
  // the longest parked first — when no waiter of the queue is filtered on
  // job types. Otherwise it wakes every waiter that admits `job_type`: a
  // woken call takes the best job its filter admits, which need not be the
  // one it was woken for, so with mixed filters a limited wake-up could
  // leave a job that no woken call will take while a parked call could.
  void Wake(const std::string& queue, absl::string_view job_type,
            size_t jobs = 1);
  // A woken waiter of `queue` ends without asking the store (its client
  // left, the store failed): hands its wake-up on, for a job of a type it
  // cannot tell, to one other waiter — or, with waiters filtered on job
  // types parked, to every waiter, as Wake(queue, type) would. Moves the
  // untyped generation as Wake(queue) does.
  void PassWakeUpOn(const std::string& queue);

  // A store write made `jobs` jobs of `queue` and `job_type` available, the
  // first at `at` (InfinitePast: now). Wakes up to `jobs` waiters if `at`
  // has come (read from the clock after the write, which is what makes
  // this race-free), otherwise NoteNextAvailable(at).
  void JobsAvailableAt(const std::string& queue, absl::string_view job_type,
                       absl::Time at, size_t jobs = 1);

  // Something becomes available at `at` (a delayed job, a lease expiry):
  // the timer will wake by then.
  void NoteNextAvailable(absl::Time at);

  // If a lease may have expired by `now` that no sweep has yet ended, runs
  // ExpireLeases(now) here, wakes whom it concerns, and asks the store when
  // the next one is due (so that the attempts after it skip the sweep). Called
  // before a Dequeue attempt so that a lease that expired with its attempts
  // used up goes DEAD through the reaper (which reports it) rather than
  // silently inside the store's Dequeue. One sweep runs at a time (the
  // timer's included): a caller that finds one running waits for it, then
  // decides again. Blocking (store calls).
  void ExpireLeasesIfDue(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether ExpireLeasesIfDue(now) might sweep or wait for a sweep now;
  // false: it would return at once. Never blocks.
  bool SweepMayBeDue(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Metrics --------------------------------------------------------------

  // Counts the leases the reaper ends (and the jobs it makes DEAD) into
  // `metrics`. Not owned; must outlive the registry. REQUIRES: called before
  // Start().
  void SetMetrics(ServerMetrics* metrics) { metrics_ = metrics; }

  // How many Dequeue calls and Work streams are parked now.
  int WaitingCount() ABSL_LOCKS_EXCLUDED(mu_);
  // Whether any is parked on `queue` now. Never blocks.
  bool AnyParkedOn(absl::string_view queue) ABSL_LOCKS_EXCLUDED(mu_);

  // ---- For tests ----------------------------------------------------------

  // How many waiters are parked.
  int ParkedCountForTest();
  // How many times the registry has called the store's ExpireLeases.
  int SweepCountForTest();
  // Blocks (in real time) until exactly `n` waiters are parked.
  void AwaitParkedForTest(int n);
  // Blocks (in real time) until the timer thread has handled everything
  // due at the clock's current time and sleeps with nothing pending. For
  // tests that move a SimulatedClock and then look at the effects.
  void AwaitTimerIdleForTest();

 private:
  struct Parked {
    std::string queue;
    const std::vector<std::string>* job_types;  // empty: any type
    absl::Time attempted_at;
    std::multimap<absl::Duration, LongPollWaiter*>::iterator by_deadline;
    uint64_t park_order;  // its key in by_queue_
  };

  static constexpr size_t kGenerationBuckets = 64;
  static size_t Bucket(absl::string_view queue);
  static size_t Bucket(absl::string_view queue, absl::string_view job_type);

  void TimerLoop();
  bool TimerShouldWake() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // One round of the reaper at `now`. REQUIRES: mu_ not held.
  void Reap(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // Takes the sweeper's role, waiting while another holds it, and starts
  // collecting noted instants afresh.
  void BeginSweepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives the role back. `next`: the store's NextAvailableTime("", now)
  // after a successful ExpireLeases(now), or an error if either failed (the
  // sweep is then still due). Returns the earliest instant noted meanwhile.
  absl::Time EndSweepLocked(const absl::StatusOr<absl::Time>& next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NotSweeping() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Moves the queue's and its untyped generations, then wakes up to
  // `limit` of its waiters, whatever their types (Wake(queue),
  // PassWakeUpOn).
  void WakeUntyped(const std::string& queue, size_t limit)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Wakes up to `limit` of the waiters parked on `queue` that `admits`
  // selects, in park order.
  template <typename Admits>
  void WakeWaiters(const std::string& queue, Admits admits, size_t limit)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Reports and wakes for jobs returned by ExpireLeases.
  void HandleExpiredLeases(const std::vector<Job>& jobs)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Unlink(LongPollWaiter* waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t GenerationLocked(absl::string_view queue,
                            const std::vector<std::string>& job_types) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  JobStore* const store_;
  Clock* const clock_;
  const JobFinishedHook on_cron_job_finished_;
  // Set once before Start() (SetMetrics), read-only after; may stay null.
  ServerMetrics* metrics_ = nullptr;
  std::thread timer_;

  absl::Mutex mu_;
  // State below is protected by mu_.
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // Set to make the timer re-plan its sleep (an earlier deadline or
  // availability instant).
  bool timer_kicked_ ABSL_GUARDED_BY(mu_) = false;
  // Whether the timer is blocked in the clock, until when (wall time), and
  // the wall time at which it planned that sleep (a step back below it makes
  // the plan stale).
  bool timer_asleep_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time timer_wake_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time timer_planned_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Wake counters, hashed into a fixed number of buckets so that
  // client-chosen names cannot grow memory; a collision only costs a
  // spurious retry. A call on any type reads queue_generation_ (moved by
  // every wake-up of its queue); a call filtered on types reads
  // untyped_generation_ (moved by Wake(queue) and PassWakeUpOn) and the
  // type_generation_ of each of its types (moved by Wake(queue, type)).
  std::array<uint64_t, kGenerationBuckets> queue_generation_
      ABSL_GUARDED_BY(mu_) = {};
  std::array<uint64_t, kGenerationBuckets> untyped_generation_
      ABSL_GUARDED_BY(mu_) = {};
  std::array<uint64_t, kGenerationBuckets> type_generation_
      ABSL_GUARDED_BY(mu_) = {};
  // Incremented at the start of every reaper round: an attempt that began
  // before the round must not park without being seen by it.
  uint64_t reap_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // When the reaper must run next (the store's NextAvailableTime, lowered by
  // NoteNextAvailable). InfinitePast until the first round.
  absl::Time next_due_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // When a Dequeue attempt must sweep expired leases first: the store's
  // NextAvailableTime after the last successful sweep (the timer's or an
  // attempt's), lowered by NoteNextAvailable. Separate from next_due_,
  // which an attempt's sweep must not move: the timer still has waiters to
  // wake at a delayed job's run_at.
  absl::Time sweep_due_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Whether a sweep (ExpireLeases, then NextAvailableTime) is running.
  bool sweeping_ ABSL_GUARDED_BY(mu_) = false;
  // The earliest instant noted since the running sweep began, so that the
  // sweep's own NextAvailableTime cannot overwrite it.
  absl::Time noted_since_sweep_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  int sweep_count_ ABSL_GUARDED_BY(mu_) = 0;  // for SweepCountForTest()
  std::map<LongPollWaiter*, Parked> parked_ ABSL_GUARDED_BY(mu_);
  // Parked calls by queue, in the order they parked.
  std::map<std::string, std::map<uint64_t, LongPollWaiter*>, std::less<>>
      by_queue_ ABSL_GUARDED_BY(mu_);
  // Per queue, the parked waiters filtered on job types (absent: none).
  absl::flat_hash_map<std::string, int> typed_parked_ ABSL_GUARDED_BY(mu_);
  uint64_t next_park_order_ ABSL_GUARDED_BY(mu_) = 0;
  // Parked calls by their monotonic deadline.
  std::multimap<absl::Duration, LongPollWaiter*> by_deadline_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_LONG_POLL_H_
