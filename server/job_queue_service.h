// The adjutant.v1.JobQueue gRPC service (callback API).
//
// Each handler first checks the caller's token and role when the server
// checks tokens (SetAuthorizer, server/auth.h): UNAUTHENTICATED or
// PERMISSION_DENIED before anything else. Then it validates its request on
// the reaction thread (cheap, no I/O; server/validation.h) and rejects bad
// input at once with INVALID_ARGUMENT, before anything is touched. Everything
// else — every store call — runs on the Executor, which finishes the RPC. No
// handler ever blocks a gRPC thread: a long-polling Dequeue parks in the
// LongPollRegistry, and so does a Work stream with a free slot and nothing
// to lease.
//
// A Work stream (WorkCall) keeps up to its `capacity` jobs pushed and
// unsettled. Leasing (a store Dequeue for the free slots) and settling (the
// worker's acks, together in one AckBatch, and nacks) run on the Executor,
// one task of each kind at a time per stream; one Write is in flight at a
// time, the others queued (at most capacity jobs plus the answers to
// pending settlements, because the stream stops reading while capacity
// answers wait). A settlement answered OK, FAILED_PRECONDITION or NOT_FOUND
// frees its slot (the job is no longer the worker's); another answer (the
// store failed) leaves the job pushed so the worker may send it again.
//
// After each store write the service tells the registry what became
// available (waking long-polls), and calls the JobFinishedHook for cron jobs
// that finished (Ack, Nack to DEAD, CancelJob).
#ifndef ADJUTANT_SERVER_JOB_QUEUE_SERVICE_H_
#define ADJUTANT_SERVER_JOB_QUEUE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "server/auth.h"
#include "server/executor.h"
#include "server/long_poll.h"
#include "server/server_metrics.h"
#include "server/validation.h"
#include "storage/job.h"
#include "storage/job_store.h"

namespace adjutant {

// Fills `out` from `job`. The lease token is never copied: only the lease
// holder sees it, in LeasedJob.
void ToProto(const Job& job, v1::Job* out);

// Thread-safe (gRPC calls the handlers from many threads).
class JobQueueService final : public v1::JobQueue::CallbackService {
 public:
  // Every pointer must outlive the service and every call it serves (the
  // server's shutdown finishes the calls first). `on_cron_job_finished` is
  // optional.
  JobQueueService(RequestLimits limits, JobStore* store, Clock* clock,
                  Executor* executor, LongPollRegistry* long_poll,
                  JobFinishedHook on_cron_job_finished);

  grpc::ServerUnaryReactor* Enqueue(grpc::CallbackServerContext* context,
                                    const v1::EnqueueRequest* request,
                                    v1::EnqueueResponse* response) override;
  grpc::ServerUnaryReactor* EnqueueBatch(
      grpc::CallbackServerContext* context,
      const v1::EnqueueBatchRequest* request,
      v1::EnqueueBatchResponse* response) override;
  grpc::ServerUnaryReactor* Dequeue(grpc::CallbackServerContext* context,
                                    const v1::DequeueRequest* request,
                                    v1::DequeueResponse* response) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* context,
                                const v1::AckRequest* request,
                                v1::AckResponse* response) override;
  grpc::ServerUnaryReactor* Nack(grpc::CallbackServerContext* context,
                                 const v1::NackRequest* request,
                                 v1::NackResponse* response) override;
  // Acks each item as Ack would (one store AckBatch, one transaction where
  // the store has one) and answers one SettleResult per item.
  grpc::ServerUnaryReactor* AckBatch(grpc::CallbackServerContext* context,
                                     const v1::AckBatchRequest* request,
                                     v1::AckBatchResponse* response) override;
  // A worker's session (see the top of this file and the proto).
  grpc::ServerBidiReactor<v1::WorkRequest, v1::WorkResponse>* Work(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ExtendLease(
      grpc::CallbackServerContext* context,
      const v1::ExtendLeaseRequest* request,
      v1::ExtendLeaseResponse* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request,
                                   v1::Job* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* RequeueJob(grpc::CallbackServerContext* context,
                                       const v1::RequeueJobRequest* request,
                                       v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  // Per-queue counts (JobStore::QueueStatistics), the number of schedules
  // and the leadership, both from the scheduler (see SetScheduler; without
  // one, schedules is 0 and leadership absent).
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;

  // Gives GetStats the scheduler to report on. Not owned; must outlive the
  // service. REQUIRES: called before the service serves any call (the
  // server calls it while it assembles itself).
  void SetScheduler(Scheduler* scheduler) { scheduler_ = scheduler; }
  // Makes every call carry a token allowed to call its RPC (server/auth.h),
  // checked before anything else. Not owned; must outlive the service; null
  // (the default) allows every call. REQUIRES: called before the service
  // serves any call.
  void SetAuthorizer(const Authorizer* authorizer) { authorizer_ = authorizer; }

  // From now on every new call is answered UNAVAILABLE (ShuttingDownError)
  // at once, without touching the store; calls already running finish, and
  // every Work stream ends with UNAVAILABLE once its store task in flight
  // (if any) is done. AdjutantServer::Shutdown() calls it before gRPC's own
  // shutdown, which then refuses calls at the transport. Thread-safe;
  // cannot be undone.
  void RefuseNewCalls();

  // How many Work streams are open now. Thread-safe.
  int WorkStreamCount();

  // Counts jobs enqueued, leased, acked, nacked, dead and cancelled by queue
  // into `metrics` (see ServerMetrics). Not owned; must outlive the service.
  // REQUIRES: called before the service serves any call.
  void SetMetrics(ServerMetrics* metrics) { metrics_ = metrics; }

 private:
  class DequeueCall;
  class WorkCall;

  // Finishes the call at once with `status` (a validation failure).
  grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* context,
                                   const absl::Status& status);
  // Runs `work` on the executor, then finishes the call with its status.
  // `method` names the RPC in logs.
  grpc::ServerUnaryReactor* RunOnExecutor(grpc::CallbackServerContext* context,
                                          const char* method,
                                          std::function<absl::Status()> work);
  // Runs `start`, which starts one of the store's *Async writes whose
  // `done` answers the call: on this thread when the store's *Async writes
  // never block (JobStore::WritesAsynchronously), so that no thread waits
  // for the commit, and on the executor otherwise.
  void StartStoreWrite(std::function<void()> start);
  // Runs `then` on this thread, or on the executor when `reads_store` and
  // this may be the store's own thread (a `done` of an *Async write): what
  // reads or waits for the store must not hold up its writes.
  void AfterStoreWrite(bool reads_store, std::function<void()> then);
  // Finishes `reactor` with `status`, logging it first when it is the
  // server's fault; `method` names the RPC in the log.
  static void Answer(grpc::ServerUnaryReactor* reactor, const char* method,
                     const absl::Status& status);
  // Whether JobAcked(method, job_id, result) reads the store.
  bool JobAckedReadsStore(const AckResult& result) const;

  // Where a job went, for what follows its enqueue.
  struct JobPlace {
    std::string queue;
    std::string type;
    absl::Time run_at;
    // Its long-polls were woken as its write was queued (EnqueueThenWake):
    // JobsEnqueued wakes none for it.
    bool woken = false;
  };
  // Runs `enqueue` (the EnqueueAsync of jobs going to `places`, which it is
  // given back). When the store writes asynchronously, it first marks the
  // places whose jobs have no run_at (available whatever the clock says) as
  // woken, and once `enqueue` returned (the write is queued) wakes their
  // long-polls; a job with a run_at is announced after its commit, by
  // JobsAvailableAt, which reads the clock then. The woken calls' leases
  // are writes queued after the enqueue's, which the store applies in
  // order (JobStore::WritesAsynchronously), so they see its jobs; when one
  // is parked on such a queue, all of it runs in one
  // JobStore::WriteTogether, so that they usually also share its commit and
  // its fsync, where a wake-up after the commit would make them wait for
  // another. The price: a woken call shares the fate of that
  // commit. If the enqueue alone is refused (a full queue, a duplicate),
  // the woken call finds nothing and parks again; if the whole commit fails
  // (an I/O error, a full disk), the woken call fails with it, as any call
  // of that group would, and a Dequeue answers the error, a Work stream
  // ends with it.
  void EnqueueThenWake(
      std::vector<JobPlace> places,
      absl::FunctionRef<void(std::vector<JobPlace> places)> enqueue);
  // What follows a store's Enqueue of jobs going to `places` (by
  // EnqueueBatch if `batch`, for the debug log): fills in `response_for(i)`
  // for the i-th, wakes the long-polls their new jobs may serve, counts
  // them; the call's status.
  template <typename ResponseFor>
  absl::Status JobsEnqueued(
      bool batch, const std::vector<JobPlace>& places,
      const absl::StatusOr<std::vector<EnqueueResult>>& results,
      ResponseFor response_for);
  // What follows a store's AckBatch of `request`'s items (in its order, as
  // ValidateAckBatch gives them): fills in `response`, JobAcked for each
  // acked job; the call's status.
  absl::Status JobsAcked(const v1::AckBatchRequest& request,
                         const absl::StatusOr<std::vector<AckResult>>& results,
                         v1::AckBatchResponse* response);

  // What follows a job's successful ack by `method` (Ack, AckBatch, Work;
  // for the debug log): the metrics' count for its queue, and the cron hook.
  void JobAcked(const char* method, const Job& job);
  // The same when only the job's id is known (the store's Ack answers no
  // job): reads the job first, and does nothing when nobody listens.
  void JobAcked(const char* method, const std::string& job_id);
  // Takes one of the limits_.max_long_polls slots (a Dequeue with a wait,
  // a Work stream); false, taking none, when all are taken.
  bool TakeLongPollSlot();
  // The error for a long-poll refused by TakeLongPollSlot, after `field`.
  absl::Status LongPollsExhausted(absl::string_view field);
  // The same from what the store's AckBatch said of the job: no count for a
  // retried ack (counted the first time), and a read of the job only for a
  // cron job when the hook listens.
  void JobAcked(const char* method, const std::string& job_id,
                const AckResult& result);

  const RequestLimits limits_;
  JobStore* const store_;
  Clock* const clock_;
  Executor* const executor_;
  LongPollRegistry* const long_poll_;
  const JobFinishedHook on_cron_job_finished_;
  // Set once before serving (SetScheduler), read-only after.
  Scheduler* scheduler_ = nullptr;
  // Set once before serving (SetAuthorizer), read-only after.
  const Authorizer* authorizer_ = nullptr;
  // Set by RefuseNewCalls().
  std::atomic<bool> refusing_new_calls_{false};
  // Set once before serving (SetMetrics), read-only after; may stay null.
  ServerMetrics* metrics_ = nullptr;
  // Long-polls in progress: Dequeue calls with a wait (taken before the
  // first attempt) and open Work streams, each given back when gRPC is done
  // with the call; at most limits_.max_long_polls.
  std::atomic<int> long_polls_{0};

  absl::Mutex streams_mu_;
  // The open Work streams (each adds itself once started, removes itself in
  // OnDone), so that RefuseNewCalls can end them.
  std::set<WorkCall*> streams_ ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_JOB_QUEUE_SERVICE_H_
