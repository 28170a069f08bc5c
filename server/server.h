// AdjutantServer: the daemon's parts, assembled and owned in one place —
// the store, the executor for blocking work, the long-poll registry (with
// its timer and lease reaper), the gRPC services and the grpc::Server.
// adjutantd's main() and the in-process tests build the same object.
//
// The cron Scheduler (issue 3) lives here too: its jobs wake the long-polls
// of their queue, the end of a job it fired wakes it (a WAIT schedule may be
// holding a tick), it starts after the gRPC server and stops first.
//
// So does the RetentionPruner (server/retention.h), which deletes finished
// jobs past their retention; it starts with the scheduler and stops with it.
#ifndef ADJUTANT_SERVER_SERVER_H_
#define ADJUTANT_SERVER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "server/auth.h"
#include "server/executor.h"
#include "server/job_queue_service.h"
#include "server/long_poll.h"
#include "server/metrics_http.h"
#include "server/retention.h"
#include "server/scheduler_service.h"
#include "server/server_metrics.h"
#include "server/validation.h"
#include "storage/job_store.h"

namespace adjutant {

struct AdjutantServerConfig {
  // HOST:PORT to listen on (--listen); port 0 picks a free port, reported
  // by port(). Default 127.0.0.1:50051.
  std::string listen_address = "127.0.0.1:50051";
  // Threads that run store calls (--executor-threads). Default 64 (see
  // DaemonConfig::executor_threads).
  int executor_threads = 64;
  // Payload, attempts and batch limits (--max-payload-bytes,
  // --default-max-attempts), and the limits against overload
  // (--max-batch-size, --max-lease-duration, --max-long-polls,
  // --max-message-bytes). Start() fails with INVALID_ARGUMENT if they do not
  // pass ValidateRequestLimits. (--max-pending-per-queue belongs to the
  // store: see SqliteOptions and the other backends' options.)
  RequestLimits limits;
  // How long Shutdown() lets in-flight calls finish before gRPC cancels
  // them (--shutdown-timeout). Default 20 s: inside systemd's
  // TimeoutStopSec=30 (deploy/), so the store still closes cleanly.
  absl::Duration shutdown_grace = absl::Seconds(20);
  // Optional: told when a job fired by a schedule becomes SUCCEEDED, DEAD
  // or CANCELLED (see JobFinishedHook). Default: none.
  JobFinishedHook on_cron_job_finished;
  // How often the health service re-checks the store with Ping() (wall
  // time, through the clock). Default 5 s.
  absl::Duration health_check_interval = absl::Seconds(5);
  // Optional: told the store's answer to each health check (the one in
  // Start() and every one after), on the thread that checked, holding no
  // lock of the server's; never once Shutdown() began. adjutantd feeds the
  // service manager's watchdog with it (server/service_notifier.h).
  // Default: none.
  std::function<void(const absl::Status&)> on_health_check;
  // The cron scheduler's settings (see SchedulerConfig for the defaults).
  // The server overrides default_max_attempts with limits' and sets
  // on_job_fired.
  SchedulerConfig scheduler;

  // Access control. The credentials the port is served with
  // (MakeServerCredentials in server/tls.h: --tls-cert, --tls-key,
  // --tls-client-ca). Default (null): plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // The bearer tokens every adjutant.v1 call must carry (server/auth.h;
  // --auth-tokens). Health and reflection stay open. Default (null): tokens
  // are not checked and every call is allowed.
  std::shared_ptr<const Authorizer> authorizer;
  // How long finished jobs are kept (--retention, --dead-retention,
  // --retention-batch-size; see RetentionConfig for the defaults).
  RetentionConfig retention;

  // ---- Metrics (docs/METRICS.md) ----
  // HOST:PORT of the Prometheus endpoint, GET /metrics (--metrics-listen);
  // port 0 picks a free port, reported by metrics_port(). Default "": no
  // endpoint (the server still keeps its metrics, see metrics()).
  std::string metrics_listen;
  // How long a scrape waits for the store reads behind the jobs-by-state,
  // leadership and schedule metrics. Default 5 s.
  absl::Duration metrics_store_timeout = absl::Seconds(5);
};

// Thread-safe, except that Start() and Shutdown() are called by one owner
// thread.
class AdjutantServer {
 public:
  // Takes the store; `clock` (RealClock() in production) must outlive the
  // server and gives every `now`.
  AdjutantServer(AdjutantServerConfig config, std::unique_ptr<JobStore> store,
                 Clock* clock);
  // Shutdown(), then drains the executor while everything its tasks use
  // still exists (a metrics scrape that timed out may have left a store read
  // there that then asks the scheduler), then closes the store.
  ~AdjutantServer();

  AdjutantServer(const AdjutantServer&) = delete;
  AdjutantServer& operator=(const AdjutantServer&) = delete;

  // Binds the listen address and starts serving: JobQueue, Scheduler,
  // server reflection (grpc.reflection.v1alpha, for grpcurl and the like)
  // and the standard health service grpc.health.v1.Health, which answers
  // SERVING (for "" and for each adjutant service) while the store answers
  // Ping(), checked at start and every health_check_interval, and
  // NOT_SERVING when it does not or once Shutdown() began. UNAVAILABLE if
  // the address cannot be bound. REQUIRES: called at most once.
  absl::Status Start();

  // The bound port (the chosen one when the address asked for port 0).
  // REQUIRES: Start() succeeded.
  int port() const { return port_; }

  // The bound port of the /metrics endpoint. REQUIRES: Start() succeeded
  // with config.metrics_listen set.
  int metrics_port() const;

  // In this order: reports NOT_SERVING to health checks; stops the
  // scheduler and the retention thread; ends every waiting long-poll with
  // UNAVAILABLE ("server shutting down"), so that workers retry, on another
  // server if there is one; refuses new calls (UNAVAILABLE); lets in-flight
  // calls finish for up to shutdown_grace, then cancels them; and stops the
  // background threads. The store stays open until destruction.
  // Idempotent.
  void Shutdown();

  // Test hook: blocks (in real time) until the health thread has finished
  // `n` checks of the store and is asleep until the next one, so that a
  // test can move a simulated clock past it.
  void AwaitHealthChecksForTest(int64_t n);

  // Every metric the server keeps (RPCs, jobs, the store's writes).
  ServerMetrics* metrics() { return metrics_.get(); }
  JobStore* store() { return store_.get(); }
  LongPollRegistry* long_poll() { return long_poll_.get(); }
  Scheduler* scheduler() { return scheduler_.get(); }
  RetentionPruner* retention() { return retention_.get(); }

 private:
  // Fans a finished cron job out to whoever listens.
  void OnCronJobFinished(const Job& job);
  // The health thread: sleeps health_check_interval (or until shutting
  // down), pings the store, publishes the answer and tells on_health_check;
  // NOT_SERVING at the end.
  void HealthLoop();
  // Publishes SERVING if `status` is OK, else NOT_SERVING, when that
  // changes what was published.
  void PublishHealthLocked(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_mu_);
  // Publishes `serving` for every service name the health service knows.
  void SetServing(bool serving);

  const AdjutantServerConfig config_;
  // Before the store: the store (a MeteredJobStore around the one given)
  // records into it.
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<JobStore> store_;
  Clock* const clock_;
  // Destroyed in reverse order: the services before the registry before the
  // executor before the store.
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<LongPollRegistry> long_poll_;
  std::unique_ptr<JobQueueService> job_queue_service_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<SchedulerService> scheduler_service_;
  std::unique_ptr<RetentionPruner> retention_;
  std::unique_ptr<grpc::Server> grpc_server_;
  // The /metrics endpoint (null without metrics_listen); destroyed first.
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  int port_ = 0;
  bool shut_down_ = false;
  std::thread health_thread_;

  // State below is protected by health_mu_.
  absl::Mutex health_mu_;
  // Set by Shutdown(): the health thread stops and reports NOT_SERVING.
  bool health_stopping_ ABSL_GUARDED_BY(health_mu_) = false;
  // The last status published; nullopt before the first check.
  std::optional<bool> serving_ ABSL_GUARDED_BY(health_mu_);
  // Rounds of the health thread begun, each as it goes to sleep (the first
  // after the check in Start()); for AwaitHealthChecksForTest.
  int64_t health_checks_ ABSL_GUARDED_BY(health_mu_) = 0;
};

// A clock `offset` ahead of `base` in wall time (monotonic time unchanged).
// For adjutantd --clock-offset-for-test: a process-level test makes leases
// and cron ticks "come due" across a restart without waiting. `base` must
// outlive it.
std::unique_ptr<Clock> NewOffsetClock(Clock* base, absl::Duration offset);

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_SERVER_H_
