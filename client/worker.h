// adjutant::Worker: runs handlers for the jobs of one queue.
//
//   adjutant::ClientOptions client_options;
//   client_options.target = "127.0.0.1:50051";
//   auto client = adjutant::Client::Create(client_options);
//   adjutant::WorkerOptions options;
//   options.queue = "emails";
//   options.concurrency = 8;
//   adjutant::Worker worker(client->get(), options);
//   worker.Register("send", [](const adjutant::JobContext& job) {
//     return Send(job.payload());  // OK: acked; an error: nacked
//   });
//   worker.Start();
//   ...
//   worker.Stop();  // finishes the jobs in hand, gives back the others
//
// How it works. One receiver thread keeps a Work stream open for the
// registered job types with capacity = the free handler slots (never more),
// so every job the server pushes has a handler ready for it; the handlers
// settle their jobs on the same stream (acks sent together are settled in
// one store transaction), and each settlement frees a slot on the server,
// which pushes the next job at once. `concurrency` handler threads run the
// handlers. When the stream breaks, the jobs in hand are settled with the
// Ack and Nack RPCs instead, and the stream is opened again (with backoff,
// for the free slots; once the worker is idle it reopens with its whole
// concurrency). A server that answers the stream UNIMPLEMENTED (a daemon
// older than the Work RPC) is long-polled with Dequeue instead, asking for
// as many jobs as there are free slots. A lease keeper thread extends the lease
// of every job in hand once `extend_fraction` of the lease has passed, until
// the job is acked or nacked. When an extension fails with
// FAILED_PRECONDITION or NOT_FOUND the lease is lost (the job was cancelled,
// or the lease expired and the job went to someone else): the job's context
// reports cancelled(), so its handler can stop early, and its result is not
// acked. Calls that fail with UNAVAILABLE or DEADLINE_EXCEEDED are retried
// with capped exponential backoff.
//
// Delivery is at least once: a handler may run again for a job whose earlier
// run lost its lease, or whose Ack never reached the server. One rare case:
// a Dequeue that Stop() cuts short, or a Work stream that breaks, may have
// leased jobs whose message is lost; they come back when their lease
// expires.
//
// Thread-safety: Register(), Start(), Stop() and stats() may be called from
// any thread, but Stop() (and the destructor) must not be called from a
// handler (it waits for the handlers). Handlers run on the worker's threads,
// up to `concurrency` at once, so one handler may run for several jobs at
// the same time and must be thread-safe. The worker owns its threads and
// its copies of the handlers; the Client is borrowed.
#ifndef ADJUTANT_CLIENT_WORKER_H_
#define ADJUTANT_CLIENT_WORKER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.pb.h"
#include "client/client.h"

namespace adjutant {

// What a handler is given: the job, and whether its lease was lost.
// Thread-safe. Valid only during the handler call.
class JobContext {
 public:
  // The job as leased (state LEASED, attempts counting this lease).
  const v1::Job& job() const { return job_; }
  const std::string& payload() const { return job_.payload(); }
  // This lease's attempt number, from 1.
  int attempt() const { return job_.attempts(); }

  // True once the lease is known to be lost: an extension failed with
  // FAILED_PRECONDITION or NOT_FOUND (the job was cancelled, or the lease
  // expired). The handler should stop early; its result will not be acked.
  bool cancelled() const;
  // Waits up to `timeout` for cancelled() and returns it. For handlers that
  // wait on something else with a timeout, or that poll between steps.
  bool AwaitCancelled(absl::Duration timeout) const;

 private:
  friend class Worker;
  explicit JobContext(v1::Job job) : job_(std::move(job)) {}
  void Cancel();

  const v1::Job job_;
  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// A handler's result: OK acks the job; an error nacks it with the error's
// text (ToString()) as last_error. A C++ exception nacks it with what().
using JobHandler = std::function<absl::Status(const JobContext&)>;

struct WorkerOptions {
  // The queue to take jobs from; empty means "default".
  std::string queue;
  // How many handlers run at once (handler threads). Default 1.
  // REQUIRES: in [1, 1000].
  int concurrency = 1;
  // The duration of each lease and of each extension. Default 30 s.
  // REQUIRES: in [1 s, 24 h].
  absl::Duration lease_duration = absl::Seconds(30);
  // How long each Dequeue long-polls when the queue is empty (with a server
  // without the Work stream). Stop() does not wait it out. Default 30 s.
  // REQUIRES: in (0, 5 min].
  absl::Duration poll_wait = absl::Seconds(30);
  // A lease is extended once this fraction of lease_duration has passed
  // since it was granted or last extended. Default 1/3, which leaves two
  // thirds of the lease to retry a failed extension.
  // REQUIRES: in (0, 0.9].
  double extend_fraction = 1.0 / 3;
  // Stored on the jobs this worker leases, for operators. Default (empty):
  // "<hostname>-<pid>".
  std::string worker_id;
  // retry_after of the Nack that follows a failed handler. Default (unset):
  // the server's backoff policy.
  std::optional<absl::Duration> failure_retry_after;
  // Backoff between retries of a call that failed with UNAVAILABLE or
  // DEADLINE_EXCEEDED (or, for Dequeue and the Work stream, any error):
  // doubles from
  // retry_initial_backoff up to retry_max_backoff. Defaults 100 ms and 5 s.
  absl::Duration retry_initial_backoff = absl::Milliseconds(100);
  absl::Duration retry_max_backoff = absl::Seconds(5);
  // Told of each failed call the worker handles by itself (a retry, a lost
  // lease), with what it was doing ("Dequeue", "Ack job 123"...). Called on
  // the worker's threads; must be thread-safe. Default (null): logged as a
  // warning with spdlog.
  std::function<void(absl::string_view what, const absl::Status& status)>
      on_error;
};

// Counters since Start().
struct WorkerStats {
  int64_t leased = 0;     // jobs received (Work stream or Dequeue)
  int64_t in_hand = 0;    // leased and not yet acked, nacked or given up
  int64_t running = 0;    // handlers running now
  int64_t acked = 0;      // handler OK, Ack succeeded
  int64_t nacked = 0;     // handler error or exception, Nack succeeded
  int64_t returned = 0;   // unstarted leases given back by Stop()
  int64_t lost = 0;       // leases lost (cancelled, expired) or not settled
  int64_t extended = 0;   // successful lease extensions
  bool stopping = false;  // Stop() has begun
  int64_t streams = 0;    // Work streams opened
  bool polling = false;   // the server lacks Work: Dequeue is used
};

class Worker {
 public:
  // `client` is not owned and must outlive the worker.
  Worker(Client* client, WorkerOptions options);
  // Stop().
  ~Worker();

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs `handler` for the jobs of type `job_type`. INVALID_ARGUMENT if
  // job_type is empty or the handler null; ALREADY_EXISTS if job_type
  // already has a handler (it is kept); FAILED_PRECONDITION after Start().
  absl::Status Register(const std::string& job_type, JobHandler handler);

  // Checks the options and starts the threads. INVALID_ARGUMENT naming the
  // option at fault; FAILED_PRECONDITION if no handler is registered, or if
  // already started (or stopped).
  absl::Status Start();

  // Stops receiving (half-closes the Work stream and waits for its end, at
  // most kStopStreamGrace before cancelling it; or cancels the Dequeue);
  // waits for the running handlers and acks or nacks their
  // jobs; gives back every lease not yet started (Nack with retry_after 0,
  // so it is available again at once) — except a job on its last attempt,
  // which a Nack would make DEAD: that one is run instead. Returns when the
  // worker holds no lease. Idempotent; a no-op before Start().
  void Stop();

  WorkerStats stats() const;

  // Test hooks. While paused, handler threads start no job, so leases stay
  // unstarted in the worker's hands (Stop() gives them back).
  void PauseHandlersForTest(bool paused);
  // Waits up to `timeout` for `predicate(stats())`; returns whether it held.
  bool AwaitStatsForTest(std::function<bool(const WorkerStats&)> predicate,
                         absl::Duration timeout) const;

 private:
  // How long Stop() waits for a half-closed Work stream to end before it
  // cancels it (a server that stopped answering).
  static constexpr absl::Duration kStopStreamGrace = absl::Seconds(10);

  // One lease in hand, from Dequeue until it is settled.
  struct HeldLease {
    std::string job_id;
    std::string token;
    // The Work stream that pushed it (see stream_id_), 0 from Dequeue.
    uint64_t stream_id = 0;
    std::shared_ptr<JobContext> context;
    // Local estimates (wall time, taken before the call that set them, so
    // never later than the server's).
    absl::Time expires_at;
    absl::Time next_extension;
    absl::Duration extend_backoff;  // zero after a successful extension
    bool lost = false;
  };

  // Keeps a Work stream open; falls back to PollLoop() on UNIMPLEMENTED.
  void ReceiveLoop();
  void PollLoop();
  // Settles the job on the Work stream that pushed it, if it is still open.
  // Returns the server's answer, or nullopt if the stream could not
  // answer (closed or broken): the caller then uses the RPCs.
  std::optional<absl::Status> SettleOnStream(
      const std::string& job_id, const std::string& token,
      const std::string* error, std::optional<absl::Duration> retry_after);
  // A Nack request for `error`, `retry_after`.
  static v1::NackRequest MakeNack(const std::string& job_id,
                                  const std::string& token,
                                  const std::string& error,
                                  std::optional<absl::Duration> retry_after);
  // Half-closes the stream when the worker is idle and the stream's
  // capacity is below `concurrency`, so that it reopens with all of it.
  // Returns the stream to close (with mu_ released).
  std::shared_ptr<WorkStream> StreamToResizeLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandlerLoop();
  void LeaseKeeperLoop();

  // Runs the handler of a job in hand, then acks or nacks it.
  void RunJob(const std::string& job_id);
  // Acks the job (`error` null) or nacks it with `error` and `retry_after`
  // (unset: the server's backoff), retrying transient errors while the lease
  // may still be held. Returns the last call's status.
  absl::Status Settle(const std::string& job_id, const std::string& token,
                      const std::string* error,
                      std::optional<absl::Duration> retry_after);
  // Extends the lease of `job_id` once; updates its HeldLease.
  void ExtendOnce(const std::string& job_id);

  // Waits on `mu_` until stopping_ or `deadline`; returns stopping_.
  bool SleepUntil(absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time LeaseExpiry(const std::string& job_id) const;
  void ReportError(absl::string_view what, const absl::Status& status);
  absl::Duration NextBackoff(absl::Duration previous) const;

  Client* const client_;
  WorkerOptions options_;
  // Cancels the poller's Dequeue in progress on Stop().
  CallCanceller poll_canceller_;

  // Serializes Start() and Stop() (Stop joins threads without mu_ held).
  absl::Mutex lifecycle_mu_;

  mutable absl::Mutex mu_;
  // State below is protected by mu_.
  std::map<std::string, JobHandler> handlers_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set by Stop() once it has taken the unstarted leases it gives back;
  // handlers then run what is left in unstarted_ and exit.
  bool handoff_done_ ABSL_GUARDED_BY(mu_) = false;
  // The lease keeper runs until the handlers and Stop() settled every lease.
  bool keeper_stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_for_test_ ABSL_GUARDED_BY(mu_) = false;
  // Every lease in hand, by job id.
  std::map<std::string, HeldLease> leases_ ABSL_GUARDED_BY(mu_);
  // Bumped when leases are added, to wake the lease keeper.
  uint64_t leases_generation_ ABSL_GUARDED_BY(mu_) = 0;
  // Leased jobs no handler has started yet, in Dequeue order.
  std::deque<std::string> unstarted_ ABSL_GUARDED_BY(mu_);
  WorkerStats stats_ ABSL_GUARDED_BY(mu_);
  // The open Work stream (null between streams, and when polling), its id
  // (counts streams from 1) and the capacity it was opened with.
  std::shared_ptr<WorkStream> stream_ ABSL_GUARDED_BY(mu_);
  uint64_t stream_id_ ABSL_GUARDED_BY(mu_) = 0;
  int stream_capacity_ ABSL_GUARDED_BY(mu_) = 0;
  // Settlements sent on the stream, by job id, until answered; an answer
  // that will not come (the stream ended) is nullopt with answered = true.
  struct StreamSettlement {
    uint64_t stream_id = 0;
    bool answered = false;
    std::optional<absl::Status> status;
  };
  std::map<std::string, StreamSettlement> stream_settlements_
      ABSL_GUARDED_BY(mu_);
  // Set by the receiver thread when it has returned.
  bool receiver_done_ ABSL_GUARDED_BY(mu_) = false;

  std::thread poller_;
  std::vector<std::thread> handler_threads_;
  std::thread lease_keeper_;
};

}  // namespace adjutant

#endif  // ADJUTANT_CLIENT_WORKER_H_
