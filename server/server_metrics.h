// The daemon's own metrics (docs/METRICS.md lists each with its meaning):
// the instruments the server updates as things happen, and a collector that
// reads the rest — jobs by state, the leadership, the schedules' durable
// counters, waiting long-polls — at scrape time.
#ifndef ADJUTANT_SERVER_SERVER_METRICS_H_
#define ADJUTANT_SERVER_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "server/executor.h"
#include "server/long_poll.h"
#include "server/metrics.h"
#include "storage/job_store.h"

namespace adjutant {

// Thread-safe: every method may be called from any thread.
class ServerMetrics {
 public:
  ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  MetricsRegistry* registry() { return &registry_; }

  // ---- Jobs, by queue: counted by this daemon after the store said OK ----

  // New jobs stored (Enqueue, EnqueueBatch without duplicates, cron fires).
  void JobsEnqueued(const std::string& queue, int64_t n);
  // Leases handed out by Dequeue and pushed on Work streams.
  void JobsLeased(const std::string& queue, int64_t n);
  // Acks answered OK (a retried Ack of an acked job counts again).
  void JobAcked(const std::string& queue);
  // Nacks answered OK (the job went back to PENDING or to DEAD).
  void JobNacked(const std::string& queue);
  // Jobs that went DEAD: a Nack out of attempts (or dead = true), or a lease
  // that expired with no attempt left.
  void JobDead(const std::string& queue);
  // CancelJob calls answered OK.
  void JobCancelled(const std::string& queue);
  // Leases ended by this daemon's lease reaper (JobStore::ExpireLeases).
  void LeaseExpired(const std::string& queue);

  // ---- RPCs and the store ------------------------------------------------

  // One finished RPC: `method` as "adjutant.v1.JobQueue/Enqueue", `code` a
  // canonical code name ("OK", "NOT_FOUND"...).
  void RpcFinished(const std::string& method, const std::string& code,
                   absl::Duration latency);
  // The RPC instruments of one method, resolved once per (method, code) and
  // then reached through atomics: recording a finished call takes no
  // family mutex (only the histogram child's own short one).
  // Thread-safe; lives as long as the ServerMetrics.
  class RpcMethod {
   public:
    // As RpcFinished(method, StatusCodeName(code), latency).
    void Finished(int code, absl::Duration latency);

   private:
    friend class ServerMetrics;
    static constexpr int kCodes = 17;  // the canonical codes, 0..16
    RpcMethod(ServerMetrics* metrics, std::string method)
        : metrics_(metrics), method_(std::move(method)) {}
    ServerMetrics* const metrics_;
    const std::string method_;
    std::array<std::atomic<Counter*>, kCodes> calls_{};
    std::array<std::atomic<Histogram*>, kCodes> durations_{};
  };
  // The instruments of `method` ("adjutant.v1.JobQueue/Enqueue"), created
  // on first use. Takes a mutex: resolve once, keep the pointer.
  RpcMethod* ResolveRpcMethod(const std::string& method);

  // adjutant_store_write_duration_seconds{op} and
  // adjutant_store_batch_size{op}: the children for `op`, to resolve once.
  Histogram* StoreWriteDuration(const std::string& op);
  Histogram* StoreBatchSize(const std::string& op);

  // ---- Scrape time --------------------------------------------------------

  struct StateSources {
    // Every pointer must outlive every Render() of the registry and every
    // store read it left on the executor after a timeout (the server stops
    // its /metrics endpoint and drains the executor before it destroys
    // them).
    JobStore* store = nullptr;
    Scheduler* scheduler = nullptr;
    LongPollRegistry* long_poll = nullptr;
    // Runs the store reads, so that they share the store's thread budget.
    Executor* executor = nullptr;
    Clock* clock = nullptr;
    // How long a scrape waits for the store reads; past it (or on a store
    // error) the store-backed families are left out of that scrape and
    // adjutant_metrics_store_errors_total goes up.
    absl::Duration store_timeout = absl::Seconds(5);
  };
  // Adds the scrape-time collector. REQUIRES: called at most once.
  void CollectStateFrom(StateSources sources);

 private:
  MetricsRegistry registry_;
  CounterFamily* const jobs_enqueued_;
  CounterFamily* const jobs_leased_;
  CounterFamily* const jobs_acked_;
  CounterFamily* const jobs_nacked_;
  CounterFamily* const jobs_dead_;
  CounterFamily* const jobs_cancelled_;
  CounterFamily* const lease_expirations_;
  CounterFamily* const rpcs_;
  HistogramFamily* const rpc_duration_;
  HistogramFamily* const store_write_duration_;
  HistogramFamily* const store_batch_size_;
  Counter* const store_errors_;
  absl::Mutex rpc_methods_mu_;
  std::map<std::string, std::unique_ptr<RpcMethod>> rpc_methods_
      ABSL_GUARDED_BY(rpc_methods_mu_);
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_SERVER_METRICS_H_
