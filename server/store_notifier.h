// Cross-daemon wake-ups for several adjutantd processes on one PostgreSQL
// database, through LISTEN/NOTIFY.
//
// Each daemon's long-poll registry (server/long_poll.h) only hears of the
// writes its own daemon makes. With several daemons on one database a job
// enqueued through daemon A must also wake a worker parked on daemon B. So:
//
//  * NotifyingJobStore wraps the daemon's JobStore. After a write commits
//    that makes a job of queue Q available now (Enqueue, a Nack or lease
//    expiry back to PENDING, RequeueJob, a cron tick's job), it asks the
//    notifier to publish Q; after one that makes something available later
//    (a delayed job, a retry delay, a lease handed out, whose expiry frees
//    the job if its worker dies), it publishes that instant.
//  * PgNotifier owns one dedicated libpq connection and one thread. The
//    thread LISTENs on two channels and blocks in poll() on the connection's
//    socket and an eventfd (no polling loop):
//      NOTIFY adjutant_jobs,       '<queue>'           -> on_available(queue)
//      NOTIFY adjutant_jobs_later, '<unix nanoseconds>' -> on_later(at)
//    and sends what the stores asked it to publish (coalesced: one NOTIFY
//    per queue per round, one for the earliest instant). Notifications sent
//    by its own session are skipped: the local registry already knew.
//
// The NOTIFY goes out right after the write's COMMIT, from the notifier's
// own connection (not inside the write's transaction), so a listener that
// reacts to it sees the write. If the daemon dies between the COMMIT and
// the NOTIFY, other daemons' waiters find the job when their wait ends or at
// the next notification for that queue: a late wake-up, never a lost job.
//
// When the connection drops, the thread reconnects with exponential backoff
// (100 ms doubling up to 5 s). Notifications sent meanwhile are lost, so
// after every (re)connection it calls on_resync(): the registry then
// re-checks every waiting queue against the store. Publications requested
// while disconnected are kept (coalesced) and sent after reconnecting.
#ifndef ADJUTANT_SERVER_STORE_NOTIFIER_H_
#define ADJUTANT_SERVER_STORE_NOTIFIER_H_

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/job_store.h"

namespace adjutant {

// The channel names (shared by every daemon of a deployment).
inline constexpr char kAvailableChannel[] = "adjutant_jobs";
inline constexpr char kLaterChannel[] = "adjutant_jobs_later";

struct PgNotifierConfig {
  // A libpq connection string or postgresql:// URI (the store's). Required.
  std::string conninfo;
  // How long one connection attempt may take. Default 5 s.
  absl::Duration connect_timeout = absl::Seconds(5);
  // Reconnection backoff: first delay, doubled up to the maximum.
  // Defaults 100 ms and 5 s.
  absl::Duration reconnect_initial = absl::Milliseconds(100);
  absl::Duration reconnect_max = absl::Seconds(5);
};

// What the listener does with what it hears. Each is called on the
// notifier's thread with no notifier lock held; each must not block for
// long (the registry's Wake and NoteNextAvailable do not).
struct PgNotifierTargets {
  // Jobs of `queue` are available now (another daemon's write).
  std::function<void(const std::string& queue)> on_available;
  // Something becomes available at `at` (another daemon's delayed job or
  // lease).
  std::function<void(absl::Time at)> on_later;
  // (Re)connected: notifications may have been missed; re-check waiters.
  std::function<void()> on_resync;
};

// Thread-safe: Publish* may be called from any thread at any time, also
// before Start() and after Stop() (then they do nothing but remember or
// drop the publication).
class PgNotifier {
 public:
  explicit PgNotifier(PgNotifierConfig config);
  // Stop().
  ~PgNotifier();
  PgNotifier(const PgNotifier&) = delete;
  PgNotifier& operator=(const PgNotifier&) = delete;

  // Starts the thread, which connects (retrying with backoff until Stop())
  // and calls targets.on_resync once listening. INVALID_ARGUMENT naming the
  // field if conninfo is empty or a target is missing; INTERNAL if no
  // eventfd can be made. REQUIRES: called at most once.
  absl::Status Start(PgNotifierTargets targets);

  // Ends the thread and closes the connection. Pending publications are
  // dropped. Idempotent; REQUIRES: not called from a target callback.
  void Stop();

  // Asks the thread to NOTIFY adjutant_jobs, '<queue>'. Never blocks on I/O.
  void PublishAvailable(const std::string& queue);
  // Asks the thread to NOTIFY adjutant_jobs_later with `at` (only the
  // earliest pending instant is sent). Never blocks on I/O.
  void PublishLater(absl::Time at);

  // For tests: true once the thread is connected and listening.
  bool ListeningForTest();
  // For tests: the number of successful (re)connections so far.
  int ConnectionsForTest();

 private:
  class Session;

  void Run();
  // Waits up to `delay` (real time) or until Stop(). False when stopping.
  bool Backoff(absl::Duration delay);
  void Signal();

  const PgNotifierConfig config_;
  PgNotifierTargets targets_;  // set by Start(), then read only by the thread
  std::thread thread_;
  int event_fd_ = -1;  // written by Publish*/Stop, read by the thread

  absl::Mutex mu_;
  // State below is protected by mu_.
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool listening_ ABSL_GUARDED_BY(mu_) = false;
  int connections_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<std::string> pending_available_ ABSL_GUARDED_BY(mu_);
  absl::Time pending_later_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
};

// A JobStore that forwards every call to `inner` and, after each successful
// write that changes when jobs are available, publishes it through
// `notifier` (see the top of this file). Same contract and thread-safety as
// `inner`. `notifier` must outlive it.
class NotifyingJobStore final : public JobStore {
 public:
  NotifyingJobStore(std::unique_ptr<JobStore> inner, PgNotifier* notifier);

  absl::Status Ping() override;
  absl::StatusOr<std::vector<QueueStats>> QueueStatistics(
      absl::Time now) override;
  // Deleting finished jobs makes nothing available: not announced.
  absl::StatusOr<int64_t> PruneFinishedJobs(absl::Time finished_before,
                                            absl::Time dead_before,
                                            int limit) override;
  absl::StatusOr<std::vector<EnqueueResult>> Enqueue(
      const std::vector<NewJob>& jobs, absl::Time now) override;
  absl::StatusOr<std::vector<Lease>> Dequeue(const DequeueOptions& options,
                                             absl::Time now) override;
  absl::Status Ack(const std::string& job_id, const std::string& token,
                   absl::Time now) override;
  // The inner store's own (one transaction); an ack makes nothing
  // available, so nothing is published.
  absl::StatusOr<std::vector<AckResult>> AckBatch(
      const std::vector<AckItem>& items, absl::Time now) override;
  absl::StatusOr<Job> Nack(const std::string& job_id, const std::string& token,
                           const NackOptions& options, absl::Time now) override;
  absl::StatusOr<absl::Time> ExtendLease(const std::string& job_id,
                                         const std::string& token,
                                         absl::Duration lease_duration,
                                         absl::Time now) override;
  absl::StatusOr<Job> GetJob(const std::string& job_id) override;
  absl::StatusOr<Job> CancelJob(const std::string& job_id,
                                absl::Time now) override;
  absl::StatusOr<Job> RequeueJob(const std::string& job_id,
                                 absl::Time now) override;
  absl::StatusOr<JobPage> ListJobs(const std::string& queue, JobState state,
                                   int page_size,
                                   const std::string& page_token) override;
  absl::StatusOr<std::vector<Job>> ExpireLeases(absl::Time now) override;
  absl::StatusOr<std::vector<Job>> ReleaseLeases(
      const std::vector<AckItem>& items, absl::Time now) override;
  absl::StatusOr<absl::Time> NextAvailableTime(const std::string& queue,
                                               absl::Time now) override;
  absl::StatusOr<uint64_t> ObserveTerm(uint64_t term) override;
  absl::StatusOr<uint64_t> HighestTerm() override;
  absl::StatusOr<CronRecord> GetCron(const std::string& name) override;
  absl::StatusOr<CronRecord> PutCron(const CronDefinition& definition,
                                     const CronState& state,
                                     int64_t expected_version,
                                     absl::Time now) override;
  absl::Status DeleteCron(const std::string& name, absl::Time now) override;
  absl::StatusOr<CronPage> ListCrons(int page_size,
                                     const std::string& page_token) override;
  absl::StatusOr<std::vector<CronRecord>> DueCrons(absl::Time now,
                                                   int limit) override;
  absl::StatusOr<absl::Time> NextCronFireTime(absl::Time after) override;
  absl::StatusOr<CronRecord> ApplyCronTransition(
      const CronTransition& transition, absl::Time now) override;

  JobStore* inner() { return inner_.get(); }

 private:
  // Publishes that a job of `queue` is available at `at` (InfinitePast or
  // <= now: now).
  void PublishAt(const std::string& queue, absl::Time at, absl::Time now);

  const std::unique_ptr<JobStore> inner_;
  PgNotifier* const notifier_;
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_STORE_NOTIFIER_H_
