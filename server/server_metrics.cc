#include "server/server_metrics.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

// Long-polls last up to their `wait` (at most minutes): the top buckets
// catch them.
std::vector<double> RpcBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
          0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
}

std::vector<double> StoreWriteBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5};
}

std::vector<double> BatchSizeBuckets() {
  return {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
}

// Schedules are few (one per recurring task): read them by pages.
constexpr int kCronPageSize = 1000;

// The families read from the store, or the first error.
absl::StatusOr<std::vector<CollectedFamily>> ReadStoreFamilies(
    const ServerMetrics::StateSources& sources) {
  std::vector<CollectedFamily> families;
  const absl::Time now = sources.clock->Now();
  absl::StatusOr<std::vector<QueueStats>> queues =
      sources.store->QueueStatistics(now);
  if (!queues.ok()) return queues.status();

  CollectedFamily jobs{"adjutant_jobs",
                       "Jobs in the store, by queue and state.",
                       MetricType::kGauge,
                       {"queue", "state"},
                       {}};
  CollectedFamily runnable{
      "adjutant_jobs_runnable",
      "PENDING jobs whose run_at has come (a subset of state=\"pending\").",
      MetricType::kGauge,
      {"queue"},
      {}};
  CollectedFamily oldest{
      "adjutant_queue_oldest_runnable_age_seconds",
      "How long the oldest runnable job has been waiting since its run_at "
      "(0 when none waits).",
      MetricType::kGauge,
      {"queue"},
      {}};
  for (const QueueStats& q : *queues) {
    const std::pair<const char*, int64_t> states[] = {
        {"pending", q.pending},     {"leased", q.leased},
        {"succeeded", q.succeeded}, {"dead", q.dead},
        {"cancelled", q.cancelled},
    };
    for (const auto& [state, count] : states) {
      jobs.samples.push_back({{q.queue, state}, static_cast<double>(count)});
    }
    runnable.samples.push_back({{q.queue}, static_cast<double>(q.runnable)});
    const double age =
        q.oldest_runnable_run_at == absl::InfiniteFuture()
            ? 0
            : absl::ToDoubleSeconds(std::max(absl::ZeroDuration(),
                                             now - q.oldest_runnable_run_at));
    oldest.samples.push_back({{q.queue}, age});
  }
  families.push_back(std::move(jobs));
  families.push_back(std::move(runnable));
  families.push_back(std::move(oldest));

  if (sources.scheduler == nullptr) return families;
  absl::StatusOr<LeadershipState> leadership =
      sources.scheduler->GetLeadership();
  if (!leadership.ok()) return leadership.status();
  families.push_back({"adjutant_is_leader",
                      "1 while this daemon's scheduler leads (fires ticks).",
                      MetricType::kGauge,
                      {},
                      {{{}, leadership->leader ? 1.0 : 0.0}}});
  families.push_back(
      {"adjutant_leader_term",
       "The leadership term this daemon was last told (0 if never).",
       MetricType::kGauge,
       {},
       {{{}, static_cast<double>(leadership->term)}}});
  families.push_back({"adjutant_highest_term",
                      "The highest leadership term the store has seen.",
                      MetricType::kGauge,
                      {},
                      {{{}, static_cast<double>(leadership->highest_term)}}});

  CollectedFamily fired{
      "adjutant_cron_fired_total",
      "Ticks a schedule fired as jobs (durable: counted in the store).",
      MetricType::kCounter,
      {"schedule"},
      {}};
  CollectedFamily missed{
      "adjutant_cron_missed_total",
      "Late ticks a schedule did not fire (misfire policy; durable).",
      MetricType::kCounter,
      {"schedule"},
      {}};
  CollectedFamily skipped{
      "adjutant_cron_skipped_total",
      "Ticks a schedule skipped because its previous job was still running "
      "(overlap policy SKIP; durable).",
      MetricType::kCounter,
      {"schedule"},
      {}};
  std::string token;
  do {
    absl::StatusOr<CronPage> page =
        sources.scheduler->List(kCronPageSize, token);
    if (!page.ok()) return page.status();
    for (const CronRecord& cron : page->crons) {
      const std::string& name = cron.definition.name;
      fired.samples.push_back(
          {{name}, static_cast<double>(cron.state.fired_count)});
      missed.samples.push_back(
          {{name}, static_cast<double>(cron.state.missed_count)});
      skipped.samples.push_back(
          {{name}, static_cast<double>(cron.state.overlap_skipped_count)});
    }
    token = page->next_page_token;
  } while (!token.empty());
  families.push_back(std::move(fired));
  families.push_back(std::move(missed));
  families.push_back(std::move(skipped));
  return families;
}

// What a store read hands back to the scrape that asked for it. Shared: a
// scrape that gave up waiting leaves it to the read.
struct PendingRead {
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::StatusOr<std::vector<CollectedFamily>> result ABSL_GUARDED_BY(mu);
};

}  // namespace

ServerMetrics::ServerMetrics()
    : jobs_enqueued_(registry_.AddCounter(
          "adjutant_jobs_enqueued_total",
          "New jobs stored, by queue: Enqueue and EnqueueBatch (duplicates "
          "not counted) and jobs fired by schedules.",
          {"queue"})),
      jobs_leased_(registry_.AddCounter("adjutant_jobs_leased_total",
                                        "Leases handed out by Dequeue.",
                                        {"queue"})),
      jobs_acked_(registry_.AddCounter(
          "adjutant_jobs_acked_total",
          "Acks answered OK (a retried Ack counts again).", {"queue"})),
      jobs_nacked_(registry_.AddCounter("adjutant_jobs_nacked_total",
                                        "Nacks answered OK.", {"queue"})),
      jobs_dead_(registry_.AddCounter(
          "adjutant_jobs_dead_total",
          "Jobs that went DEAD: by Nack, or by a lease that expired with no "
          "attempt left.",
          {"queue"})),
      jobs_cancelled_(registry_.AddCounter("adjutant_jobs_cancelled_total",
                                           "CancelJob calls answered OK.",
                                           {"queue"})),
      lease_expirations_(registry_.AddCounter(
          "adjutant_lease_expirations_total",
          "Leases that expired unacked and were ended by this daemon's lease "
          "reaper (the job went back to PENDING or DEAD).",
          {"queue"})),
      rpcs_(registry_.AddCounter("adjutant_rpcs_total",
                                 "Finished RPCs, by method and status code.",
                                 {"method", "code"})),
      rpc_duration_(registry_.AddHistogram(
          "adjutant_rpc_duration_seconds",
          "RPC latency from the request's arrival to its status (a "
          "long-poll's includes its wait), by method and status code.",
          {"method", "code"}, RpcBuckets())),
      store_write_duration_(registry_.AddHistogram(
          "adjutant_store_write_duration_seconds",
          "Duration of each store write call (one transaction, its commit "
          "included), by operation.",
          {"op"}, StoreWriteBuckets())),
      store_batch_size_(registry_.AddHistogram(
          "adjutant_store_batch_size",
          "Jobs written by one store write call that wrote any: enqueue "
          "(jobs stored), dequeue (jobs leased), expire_leases (leases "
          "ended), prune_finished_jobs (finished jobs deleted).",
          {"op"}, BatchSizeBuckets())),
      store_errors_(
          registry_
              .AddCounter("adjutant_metrics_store_errors_total",
                          "Scrapes whose store reads failed or timed out "
                          "(their store-backed metrics were left out).")
              ->WithLabels({})) {}

void ServerMetrics::JobsEnqueued(const std::string& queue, int64_t n) {
  if (n > 0) jobs_enqueued_->WithLabels({queue})->Increment(n);
}
void ServerMetrics::JobsLeased(const std::string& queue, int64_t n) {
  if (n > 0) jobs_leased_->WithLabels({queue})->Increment(n);
}
void ServerMetrics::JobAcked(const std::string& queue) {
  jobs_acked_->WithLabels({queue})->Increment();
}
void ServerMetrics::JobNacked(const std::string& queue) {
  jobs_nacked_->WithLabels({queue})->Increment();
}
void ServerMetrics::JobDead(const std::string& queue) {
  jobs_dead_->WithLabels({queue})->Increment();
}
void ServerMetrics::JobCancelled(const std::string& queue) {
  jobs_cancelled_->WithLabels({queue})->Increment();
}
void ServerMetrics::LeaseExpired(const std::string& queue) {
  lease_expirations_->WithLabels({queue})->Increment();
}

void ServerMetrics::RpcFinished(const std::string& method,
                                const std::string& code,
                                absl::Duration latency) {
  rpcs_->WithLabels({method, code})->Increment();
  rpc_duration_->WithLabels({method, code})
      ->Observe(absl::ToDoubleSeconds(latency));
}

ServerMetrics::RpcMethod* ServerMetrics::ResolveRpcMethod(
    const std::string& method) {
  absl::MutexLock l(&rpc_methods_mu_);
  std::unique_ptr<RpcMethod>& entry = rpc_methods_[method];
  if (entry == nullptr) entry.reset(new RpcMethod(this, method));
  return entry.get();
}

void ServerMetrics::RpcMethod::Finished(int code, absl::Duration latency) {
  if (code < 0 || code >= kCodes) {
    metrics_->RpcFinished(
        method_, absl::StatusCodeToString(static_cast<absl::StatusCode>(code)),
        latency);
    return;
  }
  Counter* calls = calls_[code].load(std::memory_order_acquire);
  Histogram* duration = durations_[code].load(std::memory_order_acquire);
  if (calls == nullptr || duration == nullptr) {
    // First call with this code: resolve the children (the families hand
    // out the same pointer to every racer).
    const std::string name =
        absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
    calls = metrics_->rpcs_->WithLabels({method_, name});
    duration = metrics_->rpc_duration_->WithLabels({method_, name});
    calls_[code].store(calls, std::memory_order_release);
    durations_[code].store(duration, std::memory_order_release);
  }
  calls->Increment();
  duration->Observe(absl::ToDoubleSeconds(latency));
}

Histogram* ServerMetrics::StoreWriteDuration(const std::string& op) {
  return store_write_duration_->WithLabels({op});
}

Histogram* ServerMetrics::StoreBatchSize(const std::string& op) {
  return store_batch_size_->WithLabels({op});
}

void ServerMetrics::CollectStateFrom(StateSources sources) {
  Counter* const store_errors = store_errors_;
  registry_.AddCollector([sources, store_errors] {
    std::vector<CollectedFamily> families;
    if (sources.long_poll != nullptr) {
      families.push_back(
          {"adjutant_long_polls_waiting",
           "Dequeue calls and Work streams parked, waiting for a job "
           "(holding no thread).",
           MetricType::kGauge,
           {},
           {{{}, static_cast<double>(sources.long_poll->WaitingCount())}}});
    }
    auto pending = std::make_shared<PendingRead>();
    sources.executor->Schedule([pending, sources] {
      absl::StatusOr<std::vector<CollectedFamily>> result =
          ReadStoreFamilies(sources);
      absl::MutexLock l(&pending->mu);
      pending->result = std::move(result);
      pending->done = true;
    });
    absl::MutexLock l(&pending->mu);
    // Real time: a bound on how long a scraper waits, not time the code
    // reasons about.
    if (!pending->mu.AwaitWithTimeout(absl::Condition(&pending->done),
                                      sources.store_timeout)) {
      store_errors->Increment();
      spdlog::warn("metrics: the store did not answer within {}",
                   absl::FormatDuration(sources.store_timeout));
      return families;
    }
    if (!pending->result.ok()) {
      store_errors->Increment();
      spdlog::warn("metrics: reading the store: {}",
                   pending->result.status().ToString());
      return families;
    }
    for (CollectedFamily& family : *pending->result) {
      families.push_back(std::move(family));
    }
    return families;
  });
}

}  // namespace adjutant
