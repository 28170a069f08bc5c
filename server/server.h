// AdjutantServer: the daemon's parts, assembled and owned in one place —
// the store, the executor for blocking work, the long-poll registry (with
// its timer and lease reaper), the gRPC services and the grpc::Server.
// adjutantd's main() and the in-process tests build the same object.
//
// The cron Scheduler (issue 3) lives here too: its jobs wake the long-polls
// of their queue, the end of a job it fired wakes it (a WAIT schedule may be
// holding a tick), it starts after the gRPC server and stops first.
#ifndef ADJUTANT_SERVER_SERVER_H_
#define ADJUTANT_SERVER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "server/executor.h"
#include "server/job_queue_service.h"
#include "server/long_poll.h"
#include "server/scheduler_service.h"
#include "server/validation.h"
#include "storage/job_store.h"

namespace adjutant {

struct AdjutantServerConfig {
  // HOST:PORT to listen on (--listen); port 0 picks a free port, reported
  // by port(). Default 127.0.0.1:50051.
  std::string listen_address = "127.0.0.1:50051";
  // Threads that run store calls (--executor-threads). Default 4.
  int executor_threads = 4;
  // Payload, attempts and batch limits (--max-payload-bytes,
  // --default-max-attempts).
  RequestLimits limits;
  // How long Shutdown() lets in-flight calls finish before gRPC cancels
  // them. Default 20 s: inside systemd's TimeoutStopSec=30 (deploy/), so
  // the store still closes cleanly.
  absl::Duration shutdown_grace = absl::Seconds(20);
  // Optional: told when a job fired by a schedule becomes SUCCEEDED, DEAD
  // or CANCELLED (see JobFinishedHook). Default: none.
  JobFinishedHook on_cron_job_finished;
  // The cron scheduler's settings (see SchedulerConfig for the defaults).
  // The server overrides default_max_attempts with limits' and sets
  // on_job_fired.
  SchedulerConfig scheduler;
};

// Thread-safe, except that Start() and Shutdown() are called by one owner
// thread.
class AdjutantServer {
 public:
  // Takes the store; `clock` (RealClock() in production) must outlive the
  // server and gives every `now`.
  AdjutantServer(AdjutantServerConfig config, std::unique_ptr<JobStore> store,
                 Clock* clock);
  // Shutdown(), then closes the store.
  ~AdjutantServer();

  AdjutantServer(const AdjutantServer&) = delete;
  AdjutantServer& operator=(const AdjutantServer&) = delete;

  // Binds the listen address and starts serving. UNAVAILABLE if the
  // address cannot be bound. REQUIRES: called at most once.
  absl::Status Start();

  // The bound port (the chosen one when the address asked for port 0).
  // REQUIRES: Start() succeeded.
  int port() const { return port_; }

  // Stops accepting calls, ends every waiting long-poll with an empty OK
  // response, lets in-flight calls finish (up to shutdown_grace), and stops
  // the background threads. The store stays open until destruction.
  // Idempotent.
  void Shutdown();

  JobStore* store() { return store_.get(); }
  LongPollRegistry* long_poll() { return long_poll_.get(); }
  Scheduler* scheduler() { return scheduler_.get(); }

 private:
  // Fans a finished cron job out to whoever listens.
  void OnCronJobFinished(const Job& job);

  const AdjutantServerConfig config_;
  std::unique_ptr<JobStore> store_;
  Clock* const clock_;
  // Destroyed in reverse order: the services before the registry before the
  // executor before the store.
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<LongPollRegistry> long_poll_;
  std::unique_ptr<JobQueueService> job_queue_service_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<SchedulerService> scheduler_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int port_ = 0;
  bool shut_down_ = false;
};

// A clock `offset` ahead of `base` in wall time (monotonic time unchanged).
// For adjutantd --clock-offset-for-test: a process-level test makes leases
// and cron ticks "come due" across a restart without waiting. `base` must
// outlive it.
std::unique_ptr<Clock> NewOffsetClock(Clock* base, absl::Duration offset);

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_SERVER_H_
