#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/grpc_handoff.h"
#include "server/malformed_request.h"
#include "server/metered_job_store.h"
#include "server/rpc_metrics.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

class OffsetClock final : public Clock {
 public:
  OffsetClock(Clock* base, absl::Duration offset)
      : base_(base), offset_(offset) {}

  absl::Time Now() override { return base_->Now() + offset_; }
  absl::Duration Monotonic() override { return base_->Monotonic(); }
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return base_->AwaitWithDeadline(mu, cond, deadline - offset_);
  }

 private:
  Clock* const base_;
  const absl::Duration offset_;
};

}  // namespace

std::unique_ptr<Clock> NewOffsetClock(Clock* base, absl::Duration offset) {
  return std::make_unique<OffsetClock>(base, offset);
}

AdjutantServer::AdjutantServer(AdjutantServerConfig config,
                               std::unique_ptr<JobStore> store, Clock* clock)
    : config_(std::move(config)),
      metrics_(std::make_unique<ServerMetrics>()),
      store_(std::make_unique<MeteredJobStore>(std::move(store), metrics_.get(),
                                               clock)),
      clock_(clock),
      executor_(std::make_unique<Executor>(config_.executor_threads)),
      long_poll_(std::make_unique<LongPollRegistry>(
          store_.get(), clock_,
          [this](const Job& job) { OnCronJobFinished(job); })),
      job_queue_service_(std::make_unique<JobQueueService>(
          config_.limits, store_.get(), clock_, executor_.get(),
          long_poll_.get(),
          [this](const Job& job) { OnCronJobFinished(job); })) {
  SchedulerConfig scheduler_config = config_.scheduler;
  scheduler_config.default_max_attempts = config_.limits.default_max_attempts;
  // A fired job is available at once, or at its tick if it fired ahead:
  // wake a long-poll of its queue then. Called from the scheduler's firing
  // threads, several at once: the metrics and the long-poll registry are
  // thread-safe.
  scheduler_config.on_job_fired = [this](const NewJob& job) {
    metrics_->JobsEnqueued(job.queue, 1);
    long_poll_->JobsAvailableAt(job.queue, job.type, job.run_at);
  };
  scheduler_ = std::make_unique<Scheduler>(store_.get(), clock_,
                                           std::move(scheduler_config));
  scheduler_service_ = std::make_unique<SchedulerService>(
      scheduler_.get(), clock_, executor_.get(), config_.limits);
  job_queue_service_->SetScheduler(scheduler_.get());
  job_queue_service_->SetAuthorizer(config_.authorizer.get());
  scheduler_service_->SetAuthorizer(config_.authorizer.get());
  retention_ = std::make_unique<RetentionPruner>(store_.get(), clock_,
                                                 config_.retention);
  job_queue_service_->SetMetrics(metrics_.get());
  long_poll_->SetMetrics(metrics_.get());
  ServerMetrics::StateSources sources;
  sources.store = store_.get();
  sources.scheduler = scheduler_.get();
  sources.long_poll = long_poll_.get();
  sources.executor = executor_.get();
  sources.clock = clock_;
  sources.store_timeout = config_.metrics_store_timeout;
  metrics_->CollectStateFrom(sources);
}

AdjutantServer::~AdjutantServer() {
  Shutdown();
  // gRPC's shutdown returned only after every call's OnDone, whose last
  // touches of the service happened in gRPC's threads (server/grpc_handoff.h).
  if (job_queue_service_ != nullptr) {
    TakeCallFromGrpc(job_queue_service_.get());
  }
  // Members die in reverse order, the executor after the scheduler and the
  // long-poll registry; a task still queued there (a timed-out scrape's
  // store read) must run while they exist.
  executor_.reset();
}

absl::Status AdjutantServer::Start() {
  if (absl::Status s = ValidateRequestLimits(config_.limits); !s.ok()) {
    return s;
  }
  // Both process-wide switches: they take effect for servers built after.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen_address,
                           config_.credentials != nullptr
                               ? config_.credentials
                               : grpc::InsecureServerCredentials(),
                           &port_);
  // Without this, Linux lets a second daemon bind the same port and steal
  // half the connections; we want a clear failure instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // gRPC answers a larger request RESOURCE_EXHAUSTED itself ("Received
  // message larger than max (N vs. LIMIT)"); validated above to fit in an
  // int and to hold an Enqueue of the largest payload.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(config_.limits.max_message_bytes));
  builder.RegisterService(job_queue_service_.get());
  builder.RegisterService(scheduler_service_.get());
  // Every call's count and latency, by method and code.
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  // First: a request gRPC could not parse answers INVALID_ARGUMENT, not
  // gRPC's bare UNIMPLEMENTED (server/malformed_request.h).
  interceptors.push_back(
      std::make_unique<MalformedRequestInterceptorFactory>());
  interceptors.push_back(
      std::make_unique<RpcMetricsInterceptorFactory>(metrics_.get(), clock_));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // Bound first: a bad metrics address fails the start before anything runs.
  if (!config_.metrics_listen.empty()) {
    metrics_http_ = std::make_unique<MetricsHttpServer>(metrics_->registry());
    if (absl::Status s = metrics_http_->Start(config_.metrics_listen);
        !s.ok()) {
      metrics_http_.reset();
      return s;
    }
    const std::string metrics_host =
        config_.metrics_listen.substr(0, config_.metrics_listen.rfind(':'));
    spdlog::info("metrics: Prometheus /metrics on http://{}:{}/metrics",
                 metrics_host, metrics_http_->port());
  }

  // The first reaper round returns leases that expired while we were down.
  long_poll_->Start();
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || port_ == 0) {
    grpc_server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", config_.listen_address,
                     " (address in use or not valid for this host)"));
  }
  // A follower until told otherwise (SetLeadership); its thread sleeps.
  scheduler_->Start();
  // Its first round catches up on what finished while the daemon was down.
  retention_->Start();
  const absl::Status first_check = store_->Ping();
  {
    // The first answer before Start() returns: no client sees an adjutant
    // service unknown to the health service.
    absl::MutexLock lock(&health_mu_);
    PublishHealthLocked(first_check);
  }
  if (config_.on_health_check) config_.on_health_check(first_check);
  health_thread_ = std::thread([this] { HealthLoop(); });
  pthread_setname_np(health_thread_.native_handle(), "health-probe");
  // Show the port actually bound (the address may have asked for port 0).
  const std::string host =
      config_.listen_address.substr(0, config_.listen_address.rfind(':'));
  spdlog::info("listening on {}:{}", host, port_);
  return absl::OkStatus();
}

void AdjutantServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // First of all, so that load balancers stop sending calls here.
  if (health_thread_.joinable()) {
    {
      absl::MutexLock lock(&health_mu_);
      health_stopping_ = true;
    }
    health_thread_.join();
  }
  // New calls get UNAVAILABLE from here on, before gRPC's own shutdown
  // below (which would cancel a call racing it).
  job_queue_service_->RefuseNewCalls();
  scheduler_service_->RefuseNewCalls();
  // Before anything else: no tick fires once shutdown has begun.
  scheduler_->Stop();
  retention_->Stop();
  // First, so that no call waits out its `wait` and no new one parks: the
  // waiting ones end with UNAVAILABLE, and their workers reconnect.
  long_poll_->Shutdown();
  if (grpc_server_ != nullptr) {
    spdlog::info("shutting down: finishing in-flight calls");
    grpc_server_->Shutdown(std::chrono::system_clock::now() +
                           absl::ToChronoMilliseconds(config_.shutdown_grace));
    grpc_server_->Wait();
    spdlog::info("gRPC server stopped");
  }
  // Last: a scrape during shutdown still answers.
  if (metrics_http_ != nullptr) metrics_http_->Stop();
}

int AdjutantServer::metrics_port() const {
  return metrics_http_ == nullptr ? 0 : metrics_http_->port();
}

void AdjutantServer::HealthLoop() {
  absl::MutexLock lock(&health_mu_);
  for (;;) {
    ++health_checks_;
    clock_->AwaitWithDeadline(&health_mu_, absl::Condition(&health_stopping_),
                              clock_->Now() + config_.health_check_interval);
    if (health_stopping_) break;
    // Ping may block on the store: not under the lock, so Shutdown() can
    // always set the flag.
    health_mu_.Unlock();
    const absl::Status status = store_->Ping();
    health_mu_.Lock();
    if (health_stopping_) break;
    PublishHealthLocked(status);
    if (config_.on_health_check) {
      health_mu_.Unlock();
      config_.on_health_check(status);
      health_mu_.Lock();
      if (health_stopping_) break;
    }
  }
  PublishHealthLocked(absl::UnavailableError("shutting down"));
}

void AdjutantServer::PublishHealthLocked(const absl::Status& status) {
  const bool serving = status.ok();
  if (serving_ == serving) return;
  if (serving) {
    spdlog::info("health: SERVING (the store answers)");
  } else {
    spdlog::warn("health: NOT_SERVING: {}", status.ToString());
  }
  serving_ = serving;
  SetServing(serving);
}

void AdjutantServer::AwaitHealthChecksForTest(int64_t n) {
  absl::MutexLock lock(&health_mu_);
  const auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_mu_) {
    return health_checks_ >= n;
  };
  health_mu_.Await(absl::Condition(&reached));
}

void AdjutantServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health =
      grpc_server_ == nullptr ? nullptr : grpc_server_->GetHealthCheckService();
  if (health == nullptr) return;
  // "" is the whole server; the named entries let a client ask per service.
  // (Not SetServingStatus(bool): it sets every name, and would tell each
  // watcher twice.)
  for (const char* service :
       {"", "adjutant.v1.JobQueue", "adjutant.v1.Scheduler"}) {
    health->SetServingStatus(service, serving);
  }
}

void AdjutantServer::OnCronJobFinished(const Job& job) {
  if (config_.on_cron_job_finished) config_.on_cron_job_finished(job);
  // A WAIT schedule may be holding a tick for this job.
  scheduler_->Wake();
}

}  // namespace adjutant
