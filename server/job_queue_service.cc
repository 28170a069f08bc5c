#include "server/job_queue_service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <iterator>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/convert.h"
#include "server/grpc_handoff.h"
#include "server/scheduler_service.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

// How many Dequeue attempts one executor task runs for a long-poll before it
// yields its thread (see DequeueCall::Attempt).
constexpr int kMaxRetriesInPlace = 4;

// Codes that mean the server (not the request) has a problem: worth a log
// line. The others are the client's business.
bool IsServerError(const absl::Status& status) {
  // A queue at its --max-pending-per-queue is the producer's business (and
  // a log line per refusal would flood the log under overload).
  if (IsQueueFullError(status)) return false;
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kAborted:
      return true;
    default:
      return false;
  }
}

}  // namespace

void ToProto(const Job& job, v1::Job* out) {
  // Unset times (InfinitePast) stay absent in the message.
  const auto set_time =
      [](absl::Time t, google::protobuf::Timestamp* (v1::Job::*mutable_field)(),
         void (v1::Job::*clear_field)(), v1::Job* out) {
        if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) {
          (out->*clear_field)();
        } else {
          ToProto(t, (out->*mutable_field)());
        }
      };
  out->set_job_id(job.id);
  out->set_queue(job.queue);
  out->set_job_type(job.type);
  out->set_payload(job.payload);
  out->set_priority(job.priority);
  out->set_state(static_cast<v1::JobState>(job.state));
  out->set_attempts(job.attempts);
  out->set_max_attempts(job.max_attempts);
  set_time(job.run_at, &v1::Job::mutable_run_at, &v1::Job::clear_run_at, out);
  set_time(job.created_at, &v1::Job::mutable_created_at,
           &v1::Job::clear_created_at, out);
  out->set_last_error(job.last_error);
  out->set_idempotency_key(job.idempotency_key);
  // Only a LEASED job has a lease.
  set_time(job.state == JobState::kLeased ? job.lease_expires_at
                                          : absl::InfinitePast(),
           &v1::Job::mutable_lease_expires_at, &v1::Job::clear_lease_expires_at,
           out);
  out->set_cron_name(job.cron_name);
  set_time(job.cron_tick_time, &v1::Job::mutable_cron_tick_time,
           &v1::Job::clear_cron_tick_time, out);
  set_time(job.updated_at, &v1::Job::mutable_updated_at,
           &v1::Job::clear_updated_at, out);
  out->set_worker_id(job.worker_id);
  // job.lease_token is deliberately not copied.
}

// A Dequeue call. Owned by gRPC (deleted in OnDone); at any moment exactly
// one party may finish it: the attempt running (on the executor, or, with
// a store whose writes are asynchronous, on the thread that received or
// woke the call and then in its store write's `done`), or the registry
// while it is parked, or OnCancel after taking it out of the registry.
class JobQueueService::DequeueCall final : public grpc::ServerUnaryReactor,
                                           public LongPollWaiter {
 public:
  // `counted`: the call holds one of the service's long-poll slots
  // (long_polls_), given back in OnDone.
  DequeueCall(JobQueueService* service, DequeueArgs args,
              absl::Duration deadline, v1::DequeueResponse* response,
              bool counted)
      : service_(service),
        args_(std::move(args)),
        deadline_(deadline),
        response_(response),
        counted_(counted) {}

  // Leases what it can; if nothing and the wait is not over, parks.
  // Runs on the executor, blocking; or (`may_block` false), when the
  // store's writes are asynchronous (JobStore::WritesAsynchronously), on
  // the gRPC thread that received the call or the thread that woke it,
  // where it goes on on the executor if it would have to block for a lease
  // sweep. With such a store the attempt ends on the store's thread, and a
  // retry goes to the executor.
  void Attempt(bool may_block = true) {
    LongPollRegistry* const long_poll = service_->long_poll_;
    Clock* const clock = service_->clock_;
    for (int retries = 0;; ++retries) {
      // Each retry answers a wake-up that came while the previous attempt
      // ran, so retries are bounded by the wake-ups of this call's queue
      // and types; but a steady stream of them (other workers taking each
      // job first, a hash collision with a busy queue) must not hold this
      // executor thread. Past a few, go to the back of the executor's
      // queue. Parking instead could sleep through the last wake-up — a job
      // that came during the last attempt — until the wait ends.
      if (retries == kMaxRetriesInPlace) {
        service_->executor_->Schedule([this] { Attempt(); });
        return;
      }
      // A client that left would not see what we lease for it.
      if (IsCancelled()) {
        PassOnWakeUp();
        Finish(grpc::Status::CANCELLED);
        return;
      }
      Look look;
      // Read before `now` and before the store call (see long_poll.h).
      look.generation =
          long_poll->Generation(args_.options.queue, args_.options.job_types);
      look.now = clock->Now();
      // The wait is measured on the monotonic clock: wall steps (NTP) move
      // neither its end nor the registry's timer for it.
      look.monotonic_now = clock->Monotonic();
      if (may_block) {
        long_poll->ExpireLeasesIfDue(look.now);
      } else if (long_poll->SweepMayBeDue(look.now)) {
        // A sweep (a store write) is due or running: not on this thread.
        service_->executor_->Schedule([this] { Attempt(); });
        return;
      }
      // (Without may_block and with no sweep due at look.now,
      // ExpireLeasesIfDue would have returned at once: it is skipped, as a
      // sweep that began meanwhile would make it wait.)
      JobStore* const store = service_->store_;
      if (store->WritesAsynchronously()) {
        store->DequeueAsync(
            args_.options, look.now,
            [this, look](absl::StatusOr<std::vector<Lease>> leases) {
              if (!Found(look, std::move(leases))) {
                service_->executor_->Schedule([this] { Attempt(); });
              }
            });
        return;
      }
      if (Found(look, store->Dequeue(args_.options, look.now))) return;
    }
  }

  // LongPollWaiter.
  bool IsCancelled() const override { return cancelled_.load(); }
  void Wake() override {
    woken_.store(true);
    if (service_->store_->WritesAsynchronously()) {
      // Does not block: it goes on on the executor if it would.
      Attempt(/*may_block=*/false);
    } else {
      service_->executor_->Schedule([this] { Attempt(); });
    }
  }
  void Expire() override { Finish(grpc::Status::OK); }
  void ShutDown() override { Finish(ToGrpcStatus(ShuttingDownError())); }

  // grpc::ServerUnaryReactor.
  void OnCancel() override {
    TakeCallFromGrpc(this);
    cancelled_.store(true);
    if (service_->long_poll_->Remove(this)) {
      Finish(grpc::Status::CANCELLED);
      return;
    }
    // Otherwise an attempt is running: it sees the flag when it tries to
    // park, or finishes with what it found. gRPC calls OnDone only after
    // this reaction returns; say so to ThreadSanitizer (grpc_handoff.h).
    HandCallToGrpc(this);
  }
  // A woken call that ends without a store attempt that succeeded may
  // leave behind the job it was woken for (the registry wakes only as many
  // waiters as there are new jobs): hand the wake-up to another waiter.
  void PassOnWakeUp() {
    if (woken_.exchange(false)) {
      service_->long_poll_->PassWakeUpOn(args_.options.queue);
    }
  }

  void OnDone() override {
    TakeCallFromGrpc(this);
    if (counted_) service_->long_polls_.fetch_sub(1);
    // The server's shutdown waits for every OnDone before the service dies
    // (AdjutantServer takes it back from gRPC then).
    HandCallToGrpc(service_);
    delete this;
  }

 private:
  // When an attempt looked: the registry's generation, then the wall and
  // monotonic clocks.
  struct Look {
    uint64_t generation = 0;
    absl::Time now;
    absl::Duration monotonic_now;
  };

  // What the store's Dequeue made at `look` found: finishes the call with
  // the leases or the error, or with nothing once the wait is over, or
  // parks it (the registry owns it then). False: nothing found and the
  // registry says to look again (a wake-up came meanwhile); the call is
  // still this attempt's.
  bool Found(const Look& look, absl::StatusOr<std::vector<Lease>> leases) {
    LongPollRegistry* const long_poll = service_->long_poll_;
    if (!leases.ok()) {
      if (IsServerError(leases.status())) {
        spdlog::warn("Dequeue: {}", leases.status().ToString());
      }
      PassOnWakeUp();
      Finish(ToGrpcStatus(leases.status()));
      return true;
    }
    woken_.store(false);  // this attempt looked: the wake-up is spent
    if (!leases->empty()) {
      absl::Time earliest_expiry = absl::InfiniteFuture();
      for (const Lease& lease : *leases) {
        v1::LeasedJob* out = response_->add_jobs();
        ToProto(lease.job, out->mutable_job());
        out->set_lease_token(lease.token);
        ToProto(lease.expires_at, out->mutable_lease_expires_at());
        earliest_expiry = std::min(earliest_expiry, lease.expires_at);
      }
      long_poll->NoteNextAvailable(earliest_expiry);
      if (service_->metrics_ != nullptr) {
        service_->metrics_->JobsLeased(args_.options.queue,
                                       static_cast<int64_t>(leases->size()));
      }
      if (spdlog::should_log(spdlog::level::debug)) {
        for (const Lease& lease : *leases) {
          spdlog::debug("Dequeue: job {} of queue {} leased (attempt {})",
                        lease.job.id, lease.job.queue, lease.job.attempts);
        }
      }
      Finish(grpc::Status::OK);
      return true;
    }
    if (look.monotonic_now >= deadline_) {
      Finish(grpc::Status::OK);  // nothing in time: an empty response
      return true;
    }
    switch (long_poll->Park(this, args_.options.queue, args_.options.job_types,
                            look.generation, look.now, deadline_)) {
      case LongPollRegistry::ParkResult::kParked:
        return true;  // the registry owns the call now: do not touch `this`
      case LongPollRegistry::ParkResult::kRetry:
        return false;
      case LongPollRegistry::ParkResult::kCancelled:
        PassOnWakeUp();
        Finish(grpc::Status::CANCELLED);
        return true;
      case LongPollRegistry::ParkResult::kShuttingDown:
        ShutDown();
        return true;
    }
    return true;
  }

  // Hides grpc::ServerUnaryReactor::Finish for every finish above: hands the
  // call to gRPC (server/grpc_handoff.h), then finishes it.
  void Finish(grpc::Status status) {
    HandCallToGrpc(this);
    grpc::ServerUnaryReactor::Finish(std::move(status));
  }

  JobQueueService* const service_;
  const DequeueArgs args_;
  const absl::Duration deadline_;  // Clock::Monotonic(); the wait ends then
  v1::DequeueResponse* const response_;
  const bool counted_;
  std::atomic<bool> cancelled_{false};
  // Set by Wake(): a wake-up was spent on this call.
  std::atomic<bool> woken_{false};
};

// A Work stream. Owned by gRPC (deleted in OnDone). Its state is under mu_;
// gRPC operations (StartRead, StartWrite, Finish) are started with mu_
// released, because gRPC may run a reaction on the starting thread. Exactly
// one party calls Finish: whoever sets finished_ (FinishIfDoneLocked).
//
// Lock order: mu_, then the registry's (Park and Remove are called under
// mu_; the registry calls back only IsCancelled, an atomic, under its own).
class JobQueueService::WorkCall final
    : public grpc::ServerBidiReactor<v1::WorkRequest, v1::WorkResponse>,
      public LongPollWaiter {
 public:
  explicit WorkCall(JobQueueService* service) : service_(service) {
    HandCallToGrpc(this);
    StartRead(&request_);
  }

  // Ends the stream with UNAVAILABLE (the server is shutting down) once its
  // store task in flight is done. Returns the status to Finish with when the
  // caller must finish it now (with no lock held). Called with the
  // service's streams_mu_ held, which keeps `this` alive.
  std::optional<grpc::Status> BeginShutdown() {
    absl::MutexLock l(&mu_);
    if (!error_.has_value()) error_ = ToGrpcStatus(ShuttingDownError());
    return FinishIfDoneLocked();
  }

  // grpc::ServerBidiReactor.
  void OnReadDone(bool ok) override {
    TakeCallFromGrpc(this);
    std::optional<grpc::Status> finish;
    bool read_more = false;
    bool lease = false;
    {
      absl::MutexLock l(&mu_);
      reading_ = false;
      if (!ok) {
        // The client half-closed (or the call broke: OnCancel says so).
        if (!started_ && !error_.has_value()) {
          error_ = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "start: required as the first message (the "
                                "stream was closed without one)");
        }
        read_done_ = true;
        finish = FinishIfDoneLocked();
      } else if (!started_) {
        lease = HandleStartLocked();
        finish = FinishIfDoneLocked();
      } else {
        HandleSettlementLocked();
        finish = FinishIfDoneLocked();
      }
      read_more = !finish.has_value() && ShouldReadLocked();
      if (read_more) {
        reading_ = true;
        ++reads_starting_;
      }
    }
    if (lease) service_->executor_->Schedule([this] { LeaseJobs(); });
    if (finish.has_value()) {
      HandCallToGrpc(this);
      Finish(*finish);
    }
    if (read_more) StartDecidedRead();
    StartWriteIfAny();
  }

  void OnWriteDone(bool ok) override {
    TakeCallFromGrpc(this);
    std::optional<grpc::Status> finish;
    bool read_more = false;
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      if (!ok && !error_.has_value()) {
        // The stream is broken (the client went away).
        error_ = grpc::Status(grpc::StatusCode::CANCELLED,
                              "the stream broke while writing");
      }
      finish = FinishIfDoneLocked();
      read_more = !finish.has_value() && ShouldReadLocked();
      if (read_more) {
        reading_ = true;
        ++reads_starting_;
      }
    }
    if (finish.has_value()) {
      HandCallToGrpc(this);
      Finish(*finish);
    }
    if (read_more) StartDecidedRead();
    StartWriteIfAny();
  }

  void OnCancel() override {
    TakeCallFromGrpc(this);
    cancelled_.store(true);
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock l(&mu_);
      if (!error_.has_value()) error_ = grpc::Status::CANCELLED;
      finish = FinishIfDoneLocked();
    }
    // Either way the call goes back to gRPC, which runs OnDone only after
    // this reaction returns (grpc_handoff.h).
    HandCallToGrpc(this);
    if (finish.has_value()) Finish(*finish);
  }

  void OnDone() override {
    TakeCallFromGrpc(this);
    {
      absl::MutexLock l(&service_->streams_mu_);
      service_->streams_.erase(this);
    }
    service_->long_polls_.fetch_sub(1);  // the slot taken in Work()
    HandCallToGrpc(service_);            // as DequeueCall::OnDone
    {
      absl::MutexLock l(&mu_);
      if (!pushed_unsettled_.empty()) {
        // Their leases run out by themselves (then another worker gets
        // them).
        spdlog::debug("Work: stream of worker '{}' ended holding {} job(s)",
                      args_.options.worker_id, pushed_unsettled_.size());
      }
    }
    delete this;
  }

  // LongPollWaiter.
  bool IsCancelled() const override { return cancelled_.load(); }
  void Wake() override {
    {
      absl::MutexLock l(&mu_);
      lease_state_ = LeaseState::kRunning;
      woken_ = true;
    }
    // kRunning keeps the stream alive until the task ends.
    if (service_->store_->WritesAsynchronously()) {
      // Does not block: it goes on on the executor if it would. Woken by an
      // enqueue, its lease then queues behind the enqueue's write and
      // shares its commit (EnqueueThenWake).
      LeaseJobs(/*may_block=*/false);
    } else {
      service_->executor_->Schedule([this] { LeaseJobs(); });
    }
  }
  void Expire() override { Wake(); }  // parked without a deadline: unused
  void ShutDown() override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock l(&mu_);
      lease_state_ = LeaseState::kIdle;
      if (!error_.has_value()) error_ = ToGrpcStatus(ShuttingDownError());
      finish = FinishIfDoneLocked();
    }
    if (finish.has_value()) {
      HandCallToGrpc(this);
      Finish(*finish);
    }
  }

 private:
  // Where the stream's leasing stands.
  enum class LeaseState {
    kIdle,     // no task: every slot is taken, or the stream is ending
    kRunning,  // Lease() is scheduled or running on the executor
    kParked,   // in the registry, which calls Wake() or ShutDown()
  };

  // A job pushed on this stream and not yet settled.
  struct Pushed {
    std::string token;
    Job job;  // as leased, without its payload (for metrics and the hook)
    bool settling = false;
  };

  // A settlement accepted for the executor.
  struct Settlement {
    std::string job_id;
    std::string token;
    std::optional<NackOptions> nack;  // unset: an ack
  };

  // Handles request_ as the first message. Returns whether to start
  // leasing.
  bool HandleStartLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (request_.kind_case() != v1::WorkRequest::kStart) {
      error_ = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "start: required as the first message");
      return false;
    }
    absl::StatusOr<WorkStartArgs> args =
        ValidateWorkStart(request_.start(), service_->limits_);
    if (!args.ok()) {
      error_ = ToGrpcStatus(args.status());
      return false;
    }
    args_ = *std::move(args);
    started_ = true;
    lease_state_ = LeaseState::kRunning;
    spdlog::debug("Work: worker '{}' on queue {}, capacity {}",
                  args_.options.worker_id, args_.options.queue, args_.capacity);
    return true;
  }

  // Handles request_ as a later message.
  void HandleSettlementLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Settlement settlement;
    absl::Status invalid;
    switch (request_.kind_case()) {
      case v1::WorkRequest::kAck:
        invalid = ValidateAck(request_.ack(), "ack.");
        settlement.job_id = request_.ack().job_id();
        settlement.token = request_.ack().lease_token();
        break;
      case v1::WorkRequest::kNack: {
        absl::StatusOr<NackOptions> options =
            ValidateNack(request_.nack(), "nack.");
        invalid = options.status();
        if (options.ok()) settlement.nack = *std::move(options);
        settlement.job_id = request_.nack().job_id();
        settlement.token = request_.nack().lease_token();
        break;
      }
      case v1::WorkRequest::kStart:
        error_ = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "start: only the first message may be start");
        return;
      case v1::WorkRequest::KIND_NOT_SET:
        error_ = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "kind: empty message (expected ack or nack)");
        return;
    }
    if (!invalid.ok()) {
      // The job (if it is one of ours) stays pushed: the worker may send a
      // well-formed settlement for it.
      AnswerLocked(settlement.job_id, invalid);
      return;
    }
    auto it = pushed_unsettled_.find(settlement.job_id);
    if (it == pushed_unsettled_.end()) {
      AnswerLocked(settlement.job_id,
                   absl::FailedPreconditionError(absl::StrCat(
                       "job ", settlement.job_id,
                       " is not held on this stream (not pushed on it, or "
                       "already settled)")));
      return;
    }
    if (it->second.token != settlement.token) {
      AnswerLocked(settlement.job_id,
                   absl::FailedPreconditionError(
                       absl::StrCat("lease_token: not the token job ",
                                    settlement.job_id, " was pushed with")));
      return;
    }
    if (it->second.settling) {
      AnswerLocked(settlement.job_id,
                   absl::FailedPreconditionError(absl::StrCat(
                       "job ", settlement.job_id,
                       " is already being settled on this stream")));
      return;
    }
    it->second.settling = true;
    pending_.push_back(std::move(settlement));
    if (!settling_) {
      settling_ = true;
      service_->executor_->Schedule([this] { Settle(); });
    }
  }

  // Queues a `settled` answer.
  void AnswerLocked(const std::string& job_id, const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::WorkResponse response;
    v1::SettleResult* result = response.mutable_settled();
    result->set_job_id(job_id);
    result->set_code(static_cast<int32_t>(status.code()));
    result->set_message(std::string(status.message()));
    outgoing_.push_back(std::move(response));
    ++queued_answers_;
  }

  // Whether to read the next message: not while capacity answers (queued or
  // to come from pending settlements) wait for the client to take them.
  bool ShouldReadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (reading_ || read_done_ || finished_ || error_.has_value()) {
      return false;
    }
    return queued_answers_ + static_cast<int>(pending_.size()) <
           std::max(1, args_.capacity);
  }

  // Starts the read decided under mu_ (reads_starting_ counted it), then
  // finishes the call if it became done meanwhile: a lease or settle task
  // that ended it could not finish it while the read was starting. `this`
  // stays alive until then, as nothing can finish it.
  void StartDecidedRead() {
    HandCallToGrpc(this);
    StartRead(&request_);
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock l(&mu_);
      --reads_starting_;
      finish = FinishIfDoneLocked();
    }
    if (finish.has_value()) {
      HandCallToGrpc(this);
      Finish(*finish);
    }
  }

  // Starts the next write if none is in flight.
  void StartWriteIfAny() {
    {
      absl::MutexLock l(&mu_);
      if (writing_ || finished_ || outgoing_.empty()) return;
      if (error_.has_value()) return;  // ending: nothing more is sent
      writing_ = true;
      write_ = std::move(outgoing_.front());
      outgoing_.pop_front();
      if (write_.kind_case() == v1::WorkResponse::kSettled) --queued_answers_;
    }
    HandCallToGrpc(this);
    StartWrite(&write_);
  }

  // Returns the status to finish the call with now, and marks it finished,
  // when nothing is in flight that could still touch `this`: no lease task
  // (a parked one is taken back from the registry), no settle task, no
  // write.
  std::optional<grpc::Status> FinishIfDoneLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return std::nullopt;
    const bool ending = error_.has_value() || read_done_;
    if (!ending) return std::nullopt;
    if (lease_state_ == LeaseState::kParked) {
      // False: the registry is waking or shutting us down; it calls back.
      if (!service_->long_poll_->Remove(this)) return std::nullopt;
      lease_state_ = LeaseState::kIdle;
    }
    if (lease_state_ == LeaseState::kRunning || settling_ || writing_ ||
        reads_starting_ > 0) {
      return std::nullopt;
    }
    if (error_.has_value()) {
      finished_ = true;
      ReleaseUnsentLocked();
      return *error_;
    }
    // Half-closed: finish once every settlement is answered and sent.
    if (!pending_.empty() || !outgoing_.empty()) return std::nullopt;
    finished_ = true;
    return grpc::Status::OK;
  }

  // The stream ends with an error, so nothing more is written: the jobs
  // leased for it and still queued to be written never reached the worker.
  // Their leases are taken back without costing an attempt
  // (JobStore::ReleaseLeases), on the executor, and their queues' waiters
  // woken. (A job in the write in flight may have reached the worker: its
  // lease runs out by itself.) The task does not touch `this`.
  void ReleaseUnsentLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<AckItem> unsent;
    for (const v1::WorkResponse& message : outgoing_) {
      if (message.kind_case() != v1::WorkResponse::kJob) continue;
      const std::string& id = message.job().job().job_id();
      unsent.push_back(AckItem{id, message.job().lease_token()});
      pushed_unsettled_.erase(id);
    }
    if (unsent.empty()) return;
    JobStore* const store = service_->store_;
    LongPollRegistry* const long_poll = service_->long_poll_;
    Clock* const clock = service_->clock_;
    service_->executor_->Schedule(
        [store, long_poll, clock, unsent = std::move(unsent)] {
          absl::StatusOr<std::vector<Job>> released =
              store->ReleaseLeases(unsent, clock->Now());
          if (!released.ok()) {
            spdlog::warn(
                "Work: giving back {} job(s) never sent: {} (their leases "
                "run out by themselves)",
                unsent.size(), released.status().ToString());
            return;
          }
          for (const Job& job : *released) {
            long_poll->JobsAvailableAt(job.queue, job.type, job.run_at);
          }
          spdlog::debug("Work: {} job(s) leased but never sent given back",
                        released->size());
        });
  }

  // Whether Lease() should stop: the stream is ending or every slot taken.
  bool LeaseShouldStopLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return error_.has_value() || read_done_ ||
           static_cast<int>(pushed_unsettled_.size()) >= args_.capacity;
  }

  // Leases jobs for the free slots until every slot is taken (then idle) or
  // nothing is available (then parked). Runs on the executor, blocking; or
  // (`may_block` false), when the store's writes are asynchronous
  // (JobStore::WritesAsynchronously), on the thread that woke the stream,
  // where it goes on on the executor if it would have to block for a lease
  // sweep. With such a store each lease is a DequeueAsync: the task goes on
  // on the store's thread, and a retry goes to the executor. A stream woken
  // for a job that ends this task before a store attempt (it is ending, or
  // the store failed) passes the wake-up on to the queue's other waiters,
  // as a Dequeue does: the registry woke only as many waiters as there were
  // jobs. After LeaseJobsOnce returns, `this` may be gone.
  void LeaseJobs(bool may_block = true) {
    LongPollRegistry* const long_poll = service_->long_poll_;
    std::optional<std::string> pass_on = LeaseJobsOnce(may_block);
    if (pass_on.has_value()) long_poll->PassWakeUpOn(*pass_on);
  }

  // What to pass a wake-up on to (the queue) when this stream was woken and
  // made no store attempt that succeeded since.
  std::optional<std::string> TakeWakeUpLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!woken_) return std::nullopt;
    woken_ = false;
    return args_.options.queue;
  }

  std::optional<std::string> LeaseJobsOnce(bool may_block) {
    LongPollRegistry* const long_poll = service_->long_poll_;
    Clock* const clock = service_->clock_;
    JobStore* const store = service_->store_;
    for (int retries = 0;; ++retries) {
      if (retries == kMaxRetriesInPlace) {  // as DequeueCall::Attempt
        service_->executor_->Schedule([this] { LeaseJobs(); });
        return std::nullopt;
      }
      DequeueOptions options;
      {
        absl::MutexLock l(&mu_);
        if (service_->refusing_new_calls_.load() && !error_.has_value()) {
          error_ = ToGrpcStatus(ShuttingDownError());
        }
        if (LeaseShouldStopLocked()) {
          lease_state_ = LeaseState::kIdle;
          std::optional<std::string> pass_on = TakeWakeUpLocked();
          FinishLater();
          return pass_on;
        }
        options = args_.options;
        options.max_jobs =
            args_.capacity - static_cast<int>(pushed_unsettled_.size());
      }
      // Read before `now` and before the store call (see long_poll.h).
      const uint64_t generation =
          long_poll->Generation(options.queue, options.job_types);
      const absl::Time now = clock->Now();
      if (may_block) {
        long_poll->ExpireLeasesIfDue(now);
      } else if (long_poll->SweepMayBeDue(now)) {
        // A sweep (a store write) is due or running: not on this thread.
        service_->executor_->Schedule([this] { LeaseJobs(); });
        return std::nullopt;
      }
      if (store->WritesAsynchronously()) {
        const std::string queue = options.queue;
        store->DequeueAsync(
            std::move(options), now,
            [this, long_poll, generation, now,
             queue](absl::StatusOr<std::vector<::adjutant::Lease>> leases) {
              std::optional<std::string> pass_on;
              switch (
                  Leased(generation, now, queue, std::move(leases), &pass_on)) {
                case AfterLease::kMore:
                  LeaseJobs(/*may_block=*/false);
                  return;
                case AfterLease::kRetry:
                  service_->executor_->Schedule([this] { LeaseJobs(); });
                  return;
                case AfterLease::kEnded:  // `this` may be gone
                  if (pass_on.has_value()) long_poll->PassWakeUpOn(*pass_on);
                  return;
              }
            });
        return std::nullopt;
      }
      std::optional<std::string> pass_on;
      if (Leased(generation, now, options.queue, store->Dequeue(options, now),
                 &pass_on) == AfterLease::kEnded) {
        return pass_on;
      }
    }
  }

  enum class AfterLease {
    kMore,   // jobs were pushed: lease for the slots still free
    kRetry,  // nothing found, but something changed since: attempt again
    kEnded,  // the task is over (idle, parked, or the stream is ending)
  };
  // What follows a lease attempt on `queue` at `now` (the registry's
  // generation read before it): pushes the leased jobs, or parks the
  // stream, or ends it on a store error. With kEnded, `*pass_on` is what to
  // pass a wake-up on to, and `this` may be gone once this returns.
  AfterLease Leased(uint64_t generation, absl::Time now,
                    const std::string& queue,
                    absl::StatusOr<std::vector<::adjutant::Lease>> leases,
                    std::optional<std::string>* pass_on) {
    LongPollRegistry* const long_poll = service_->long_poll_;
    absl::MutexLock l(&mu_);
    if (!leases.ok()) {
      if (IsServerError(leases.status())) {
        spdlog::warn("Work: {}", leases.status().ToString());
      }
      if (!error_.has_value()) error_ = ToGrpcStatus(leases.status());
      lease_state_ = LeaseState::kIdle;
      *pass_on = TakeWakeUpLocked();
      FinishLater();
      return AfterLease::kEnded;
    }
    woken_ = false;  // the store was asked: the wake-up is used
    if (!leases->empty()) {
      absl::Time earliest_expiry = absl::InfiniteFuture();
      for (::adjutant::Lease& lease : *leases) {
        v1::WorkResponse response;
        v1::LeasedJob* out = response.mutable_job();
        ToProto(lease.job, out->mutable_job());
        out->set_lease_token(lease.token);
        ToProto(lease.expires_at, out->mutable_lease_expires_at());
        earliest_expiry = std::min(earliest_expiry, lease.expires_at);
        outgoing_.push_back(std::move(response));
        lease.job.payload.clear();
        const std::string id = lease.job.id;
        pushed_unsettled_[id] =
            Pushed{std::move(lease.token), std::move(lease.job), false};
      }
      long_poll->NoteNextAvailable(earliest_expiry);
      if (service_->metrics_ != nullptr) {
        service_->metrics_->JobsLeased(queue,
                                       static_cast<int64_t>(leases->size()));
      }
      spdlog::debug("Work: {} job(s) of queue {} pushed to worker '{}'",
                    leases->size(), queue, args_.options.worker_id);
      WriteLater();
      return AfterLease::kMore;
    }
    // The stream may have begun to end (half-closed, cancelled) while the
    // store call ran without mu_: its end saw kRunning and left finishing
    // to this task, so do not park (nothing would take it back).
    if (LeaseShouldStopLocked()) {
      lease_state_ = LeaseState::kIdle;
      FinishLater();
      return AfterLease::kEnded;
    }
    switch (long_poll->Park(this, args_.options.queue, args_.options.job_types,
                            generation, now, absl::InfiniteDuration())) {
      case LongPollRegistry::ParkResult::kParked:
        // The registry may call Wake() at once: it waits for mu_.
        lease_state_ = LeaseState::kParked;
        return AfterLease::kEnded;
      case LongPollRegistry::ParkResult::kRetry:
        return AfterLease::kRetry;
      case LongPollRegistry::ParkResult::kCancelled:
        if (!error_.has_value()) error_ = grpc::Status::CANCELLED;
        break;
      case LongPollRegistry::ParkResult::kShuttingDown:
        if (!error_.has_value()) error_ = ToGrpcStatus(ShuttingDownError());
        break;
    }
    lease_state_ = LeaseState::kIdle;
    FinishLater();
    return AfterLease::kEnded;
  }

  // Runs the accepted settlements: the acks together (one AckBatch), the
  // nacks one by one; answers each. Runs on the executor.
  void Settle() {
    for (;;) {
      std::vector<Settlement> batch;
      {
        absl::MutexLock l(&mu_);
        if (pending_.empty()) {
          settling_ = false;
          // Reading resumes in OnWriteDone, as the answers are sent.
          FinishLater();
          return;
        }
        batch.assign(std::make_move_iterator(pending_.begin()),
                     std::make_move_iterator(pending_.end()));
        pending_.clear();
      }
      const absl::Time now = service_->clock_->Now();
      std::vector<AckItem> acks;
      std::vector<size_t> ack_index;  // into batch
      std::vector<absl::Status> results(batch.size());
      std::vector<std::optional<Job>> nacked(batch.size());
      for (size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].nack.has_value()) {
          absl::StatusOr<Job> job = service_->store_->Nack(
              batch[i].job_id, batch[i].token, *batch[i].nack, now);
          results[i] = job.status();
          if (job.ok()) nacked[i] = *std::move(job);
        } else {
          acks.push_back(AckItem{batch[i].job_id, batch[i].token});
          ack_index.push_back(i);
        }
      }
      if (acks.size() == 1) {
        results[ack_index[0]] =
            service_->store_->Ack(acks[0].job_id, acks[0].token, now);
      } else if (!acks.empty()) {
        absl::StatusOr<std::vector<AckResult>> acked =
            service_->store_->AckBatch(acks, now);
        for (size_t k = 0; k < acks.size(); ++k) {
          if (!acked.ok()) {
            results[ack_index[k]] = acked.status();
          } else if (acked->size() != acks.size()) {
            results[ack_index[k]] = absl::InternalError(
                absl::StrCat("the store returned ", acked->size(),
                             " results for ", acks.size(), " acks"));
          } else {
            results[ack_index[k]] = (*acked)[k].status;
          }
        }
      }
      // What the jobs' settlements mean for others: without mu_.
      std::vector<Job> finished;
      {
        absl::MutexLock l(&mu_);
        for (size_t i = 0; i < batch.size(); ++i) {
          const absl::Status& status = results[i];
          if (IsServerError(status)) {
            spdlog::warn("Work: settling job {}: {}", batch[i].job_id,
                         status.ToString());
          }
          auto it = pushed_unsettled_.find(batch[i].job_id);
          // The job may have been leased again on this stream (its lease
          // expired) while this settlement ran: that newer lease stays.
          if (it != pushed_unsettled_.end() &&
              it->second.token != batch[i].token) {
            it = pushed_unsettled_.end();
          }
          if (status.ok() && !batch[i].nack.has_value() &&
              it != pushed_unsettled_.end()) {
            Job job = it->second.job;
            job.state = JobState::kSucceeded;
            finished.push_back(std::move(job));
          }
          if (it != pushed_unsettled_.end()) {
            if (status.ok() || absl::IsFailedPrecondition(status) ||
                absl::IsNotFound(status)) {
              pushed_unsettled_.erase(it);  // the slot is free
            } else {
              it->second.settling = false;  // the worker may try again
            }
          }
          AnswerLocked(batch[i].job_id, status);
        }
        WriteLater();
        if (lease_state_ == LeaseState::kIdle && !LeaseShouldStopLocked()) {
          lease_state_ = LeaseState::kRunning;
          service_->executor_->Schedule([this] { LeaseJobs(); });
        }
      }
      ServerMetrics* const metrics = service_->metrics_;
      for (const Job& job : finished) service_->JobAcked("Work", job);
      for (const std::optional<Job>& job : nacked) {
        if (!job.has_value()) continue;
        if (job->state == JobState::kPending) {
          service_->long_poll_->JobsAvailableAt(job->queue, job->type,
                                                job->run_at);
        }
        if (metrics != nullptr) {
          metrics->JobNacked(job->queue);
          if (job->state == JobState::kDead) metrics->JobDead(job->queue);
        }
        spdlog::debug("Work: job {} of queue {} nacked, now {}", job->id,
                      job->queue, JobStateName(job->state));
        NotifyIfCronJobFinished(service_->on_cron_job_finished_, *job);
      }
    }
  }

  // Helpers for the executor tasks, which hold mu_ when they decide: the
  // gRPC operation is started on the executor once mu_ is released.
  void FinishLater() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::optional<grpc::Status> finish = FinishIfDoneLocked();
    if (finish.has_value()) {
      service_->executor_->Schedule([this, status = *finish] {
        HandCallToGrpc(this);
        Finish(status);
      });
    }
  }
  void WriteLater() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || outgoing_.empty() || error_.has_value()) return;
    writing_ = true;
    write_ = std::move(outgoing_.front());
    outgoing_.pop_front();
    if (write_.kind_case() == v1::WorkResponse::kSettled) --queued_answers_;
    service_->executor_->Schedule([this] {
      HandCallToGrpc(this);
      StartWrite(&write_);
    });
  }

  JobQueueService* const service_;
  std::atomic<bool> cancelled_{false};

  absl::Mutex mu_;
  // State below is protected by mu_ (request_ and write_ by the protocol:
  // one read and one write in flight at a time).
  v1::WorkRequest request_;
  v1::WorkResponse write_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  WorkStartArgs args_ ABSL_GUARDED_BY(mu_);
  // Set when the stream must end with this status (not OK).
  std::optional<grpc::Status> error_ ABSL_GUARDED_BY(mu_);
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;  // the client half-closed
  bool reading_ ABSL_GUARDED_BY(mu_) = true;     // a Read is in flight
  // Reads decided under mu_ whose StartRead has not returned yet: Finish
  // waits for them (FinishIfDoneLocked), so that no StartRead follows it.
  int reads_starting_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;   // a Write is in flight
  bool settling_ ABSL_GUARDED_BY(mu_) = false;  // Settle() scheduled/running
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called (or due)
  // Woken by the registry, and no store attempt made since (LeaseJobs).
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  LeaseState lease_state_ ABSL_GUARDED_BY(mu_) = LeaseState::kIdle;
  std::map<std::string, Pushed> pushed_unsettled_ ABSL_GUARDED_BY(mu_);
  std::deque<Settlement> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::WorkResponse> outgoing_ ABSL_GUARDED_BY(mu_);
  int queued_answers_ ABSL_GUARDED_BY(mu_) = 0;  // settled in outgoing_
};

namespace {

// A Work stream refused before it began (shutting down, not authorized).
class RejectedStream final
    : public grpc::ServerBidiReactor<v1::WorkRequest, v1::WorkResponse> {
 public:
  explicit RejectedStream(const absl::Status& status) {
    HandCallToGrpc(this);
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override {
    TakeCallFromGrpc(this);
    delete this;
  }
};

}  // namespace

JobQueueService::JobQueueService(RequestLimits limits, JobStore* store,
                                 Clock* clock, Executor* executor,
                                 LongPollRegistry* long_poll,
                                 JobFinishedHook on_cron_job_finished)
    : limits_(limits),
      store_(store),
      clock_(clock),
      executor_(executor),
      long_poll_(long_poll),
      on_cron_job_finished_(std::move(on_cron_job_finished)) {}

grpc::ServerUnaryReactor* JobQueueService::Reject(
    grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* JobQueueService::RunOnExecutor(
    grpc::CallbackServerContext* context, const char* method,
    std::function<absl::Status()> work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executor_->Schedule([reactor, method, work = std::move(work)] {
    Answer(reactor, method, work());
  });
  return reactor;
}

void JobQueueService::Answer(grpc::ServerUnaryReactor* reactor,
                             const char* method, const absl::Status& status) {
  if (IsServerError(status)) {
    spdlog::warn("{}: {}", method, status.ToString());
  }
  reactor->Finish(ToGrpcStatus(status));
}

void JobQueueService::StartStoreWrite(std::function<void()> start) {
  if (store_->WritesAsynchronously()) {
    start();
  } else {
    executor_->Schedule(std::move(start));
  }
}

void JobQueueService::AfterStoreWrite(bool reads_store,
                                      std::function<void()> then) {
  if (reads_store && store_->WritesAsynchronously()) {
    executor_->Schedule(std::move(then));
  } else {
    then();
  }
}

grpc::ServerUnaryReactor* JobQueueService::Enqueue(
    grpc::CallbackServerContext* context, const v1::EnqueueRequest* request,
    v1::EnqueueResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.Enqueue");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<NewJob> job = ValidateEnqueue(*request, limits_);
  if (!job.ok()) return Reject(context, job.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  StartStoreWrite([this, reactor, response, job = *std::move(job)]() mutable {
    const absl::Time now = clock_->Now();
    std::vector<JobPlace> places;
    places.push_back(JobPlace{job.queue, job.type, job.run_at});
    std::vector<NewJob> jobs;
    jobs.push_back(std::move(job));
    EnqueueThenWake(std::move(places), [&](std::vector<JobPlace> marked) {
      store_->EnqueueAsync(
          std::move(jobs), now,
          [this, reactor, response, places = std::move(marked)](
              absl::StatusOr<std::vector<EnqueueResult>> results) {
            Answer(reactor, "Enqueue",
                   JobsEnqueued(/*batch=*/false, places, results,
                                [response](size_t) { return response; }));
          });
    });
  });
  return reactor;
}

void JobQueueService::EnqueueThenWake(
    std::vector<JobPlace> places,
    absl::FunctionRef<void(std::vector<JobPlace> places)> enqueue) {
  // How many jobs of each (queue, type) to wake long-polls for.
  std::map<std::pair<std::string, std::string>, size_t> wakes;
  if (store_->WritesAsynchronously()) {
    for (JobPlace& place : places) {
      // A run_at, even a past one, waits for JobsEnqueued: a woken attempt
      // whose `now` fell behind it (the wall clock stepped back) would miss
      // the job, and nothing would note it for the timer.
      if (place.run_at != absl::InfinitePast()) continue;
      place.woken = true;
      ++wakes[std::make_pair(place.queue, place.type)];
    }
  }
  auto enqueue_then_wake = [&] {
    enqueue(std::move(places));
    for (const auto& [queue_and_type, jobs] : wakes) {
      long_poll_->Wake(queue_and_type.first, queue_and_type.second, jobs);
    }
  };
  for (const auto& entry : wakes) {
    if (long_poll_->AnyParkedOn(entry.first.first)) {
      return store_->WriteTogether(enqueue_then_wake);
    }
  }
  enqueue_then_wake();
}

template <typename ResponseFor>
absl::Status JobQueueService::JobsEnqueued(
    bool batch, const std::vector<JobPlace>& places,
    const absl::StatusOr<std::vector<EnqueueResult>>& results,
    ResponseFor response_for) {
  if (!results.ok()) return results.status();
  if (results->size() != places.size()) {
    return absl::InternalError(absl::StrCat("the store returned ",
                                            results->size(), " results for ",
                                            places.size(), " jobs"));
  }
  // The earliest new run_at per queue and type is all the registry needs.
  std::map<std::pair<std::string, std::string>, std::pair<absl::Time, size_t>>
      earliest;  // and how many
  std::map<std::string, int64_t> stored_by_queue;
  int64_t stored = 0;
  for (size_t i = 0; i < places.size(); ++i) {
    const EnqueueResult& result = (*results)[i];
    v1::EnqueueResponse* out = response_for(i);
    out->set_job_id(result.job_id);
    out->set_duplicate(result.duplicate);
    if (!batch) {
      // Ids, queues and types only: payloads and tokens are never logged.
      spdlog::debug("Enqueue: job {} in queue {} (type {}){}", result.job_id,
                    places[i].queue, places[i].type,
                    result.duplicate ? ": a duplicate" : "");
    }
    if (result.duplicate) continue;
    ++stored;
    ++stored_by_queue[places[i].queue];
    if (places[i].woken) continue;
    auto [it, inserted] =
        earliest.emplace(std::make_pair(places[i].queue, places[i].type),
                         std::make_pair(places[i].run_at, size_t{1}));
    if (!inserted) {
      it->second.first = std::min(it->second.first, places[i].run_at);
      ++it->second.second;
    }
  }
  for (const auto& [queue_and_type, at_and_count] : earliest) {
    long_poll_->JobsAvailableAt(queue_and_type.first, queue_and_type.second,
                                at_and_count.first, at_and_count.second);
  }
  if (metrics_ != nullptr) {
    for (const auto& [queue, n] : stored_by_queue) {
      metrics_->JobsEnqueued(queue, n);
    }
  }
  if (batch) {
    spdlog::debug("EnqueueBatch: {} job(s), {} new", places.size(), stored);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* JobQueueService::EnqueueBatch(
    grpc::CallbackServerContext* context,
    const v1::EnqueueBatchRequest* request,
    v1::EnqueueBatchResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.EnqueueBatch");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<std::vector<NewJob>> jobs =
      ValidateEnqueueBatch(*request, limits_);
  if (!jobs.ok()) return Reject(context, jobs.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  StartStoreWrite([this, reactor, response, jobs = *std::move(jobs)]() mutable {
    const absl::Time now = clock_->Now();
    std::vector<JobPlace> places;
    places.reserve(jobs.size());
    for (const NewJob& job : jobs) {
      places.push_back(JobPlace{job.queue, job.type, job.run_at});
    }
    EnqueueThenWake(std::move(places), [&](std::vector<JobPlace> marked) {
      store_->EnqueueAsync(
          std::move(jobs), now,
          [this, reactor, response, places = std::move(marked)](
              absl::StatusOr<std::vector<EnqueueResult>> results) {
            Answer(reactor, "EnqueueBatch",
                   JobsEnqueued(
                       /*batch=*/true, places, results,
                       [response](size_t) { return response->add_results(); }));
          });
    });
  });
  return reactor;
}

bool JobQueueService::TakeLongPollSlot() {
  if (long_polls_.fetch_add(1) < limits_.max_long_polls) return true;
  long_polls_.fetch_sub(1);
  return false;
}

absl::Status JobQueueService::LongPollsExhausted(absl::string_view field) {
  return absl::ResourceExhaustedError(absl::StrCat(
      field, limits_.max_long_polls,
      " long-polls (Dequeue calls with a wait, and Work streams) are in "
      "progress, the server's limit (--max-long-polls); retry later, or "
      "dequeue without a wait"));
}

grpc::ServerUnaryReactor* JobQueueService::Dequeue(
    grpc::CallbackServerContext* context, const v1::DequeueRequest* request,
    v1::DequeueResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.Dequeue");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<DequeueArgs> args = ValidateDequeue(*request, limits_);
  if (!args.ok()) return Reject(context, args.status());
  // A long-poll takes a slot before it touches the store, so a refused one
  // changes nothing; a Dequeue without a wait needs none.
  const bool counted = args->wait > absl::ZeroDuration();
  if (counted && !TakeLongPollSlot()) {
    return Reject(context, LongPollsExhausted("wait: "));
  }
  const absl::Duration deadline = clock_->Monotonic() + args->wait;
  auto* call =
      new DequeueCall(this, *std::move(args), deadline, response, counted);
  HandCallToGrpc(call);  // gRPC may call OnCancel before the attempt runs
  if (store_->WritesAsynchronously()) {
    call->Attempt(/*may_block=*/false);
  } else {
    executor_->Schedule([call] { call->Attempt(); });
  }
  return call;
}

grpc::ServerUnaryReactor* JobQueueService::Ack(
    grpc::CallbackServerContext* context, const v1::AckRequest* request,
    v1::AckResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.Ack");
  if (!caller.ok()) return Reject(context, caller.status());
  if (absl::Status s = ValidateAck(*request); !s.ok()) {
    return Reject(context, s);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  StartStoreWrite([this, reactor, request] {
    store_->AckAsync(
        AckItem{request->job_id(), request->lease_token()}, clock_->Now(),
        [this, reactor, request](absl::StatusOr<AckResult> result) {
          const bool reads_store = result.ok() && JobAckedReadsStore(*result);
          AfterStoreWrite(reads_store,
                          [this, reactor, request, result = std::move(result)] {
                            if (result.ok())
                              JobAcked("Ack", request->job_id(), *result);
                            Answer(reactor, "Ack", result.status());
                          });
        });
  });
  return reactor;
}

bool JobQueueService::JobAckedReadsStore(const AckResult& result) const {
  return result.queue.empty() ||
         (on_cron_job_finished_ && !result.cron_name.empty());
}

void JobQueueService::JobAcked(const char* method, const Job& job) {
  if (metrics_ != nullptr) metrics_->JobAcked(job.queue);
  spdlog::debug("{}: job {} of queue {} succeeded", method, job.id, job.queue);
  NotifyIfCronJobFinished(on_cron_job_finished_, job);
}

void JobQueueService::JobAcked(const char* method, const std::string& job_id) {
  if (!on_cron_job_finished_ && metrics_ == nullptr) return;
  absl::StatusOr<Job> job = store_->GetJob(job_id);
  if (job.ok()) JobAcked(method, *job);
}

void JobQueueService::JobAcked(const char* method, const std::string& job_id,
                               const AckResult& result) {
  if (result.queue.empty()) {
    // The store could not say (JobStore's default AckBatch, its read
    // failed): read the job as for Ack.
    JobAcked(method, job_id);
    return;
  }
  if (!result.already_acked) {
    // A retried ack was counted the first time.
    if (metrics_ != nullptr) metrics_->JobAcked(result.queue);
    spdlog::debug("{}: job {} of queue {} succeeded", method, job_id,
                  result.queue);
  }
  // The hook hears of a retried one again: the first answer may not have
  // reached the caller, and a second notice is harmless (JobFinishedHook).
  if (on_cron_job_finished_ && !result.cron_name.empty()) {
    absl::StatusOr<Job> job = store_->GetJob(job_id);
    if (job.ok()) NotifyIfCronJobFinished(on_cron_job_finished_, *job);
  }
}

grpc::ServerUnaryReactor* JobQueueService::Nack(
    grpc::CallbackServerContext* context, const v1::NackRequest* request,
    v1::NackResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.Nack");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<NackOptions> options = ValidateNack(*request);
  if (!options.ok()) return Reject(context, options.status());
  return RunOnExecutor(
      context, "Nack",
      [this, request, response,
       options = *std::move(options)]() -> absl::Status {
        absl::StatusOr<Job> job = store_->Nack(
            request->job_id(), request->lease_token(), options, clock_->Now());
        if (!job.ok()) return job.status();
        if (job->state == JobState::kPending) {
          long_poll_->JobsAvailableAt(job->queue, job->type, job->run_at);
        }
        if (metrics_ != nullptr) {
          metrics_->JobNacked(job->queue);
          if (job->state == JobState::kDead) metrics_->JobDead(job->queue);
        }
        spdlog::debug("Nack: job {} of queue {} is {}", job->id, job->queue,
                      JobStateName(job->state));
        NotifyIfCronJobFinished(on_cron_job_finished_, *job);
        ToProto(*job, response->mutable_job());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* JobQueueService::AckBatch(
    grpc::CallbackServerContext* context, const v1::AckBatchRequest* request,
    v1::AckBatchResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.AckBatch");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<std::vector<AckItem>> items =
      ValidateAckBatch(*request, limits_);
  if (!items.ok()) return Reject(context, items.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  StartStoreWrite([this, reactor, request, response,
                   items = *std::move(items)]() mutable {
    store_->AckBatchAsync(
        std::move(items), clock_->Now(),
        [this, reactor, request,
         response](absl::StatusOr<std::vector<AckResult>> results) {
          bool reads_store = false;
          if (results.ok()) {
            for (const AckResult& result : *results) {
              reads_store |= result.status.ok() && JobAckedReadsStore(result);
            }
          }
          AfterStoreWrite(reads_store, [this, reactor, request, response,
                                        results = std::move(results)] {
            Answer(reactor, "AckBatch", JobsAcked(*request, results, response));
          });
        });
  });
  return reactor;
}

absl::Status JobQueueService::JobsAcked(
    const v1::AckBatchRequest& request,
    const absl::StatusOr<std::vector<AckResult>>& results,
    v1::AckBatchResponse* response) {
  if (!results.ok()) return results.status();
  const size_t items = static_cast<size_t>(request.acks_size());
  if (results->size() != items) {
    return absl::InternalError(absl::StrCat("the store returned ",
                                            results->size(), " results for ",
                                            items, " acks"));
  }
  int64_t acked = 0;
  for (size_t i = 0; i < items; ++i) {
    const std::string& job_id = request.acks(static_cast<int>(i)).job_id();
    const AckResult& result = (*results)[i];
    v1::SettleResult* out = response->add_results();
    out->set_job_id(job_id);
    out->set_code(static_cast<int32_t>(result.status.code()));
    out->set_message(std::string(result.status.message()));
    if (!result.status.ok()) continue;
    ++acked;
    JobAcked("AckBatch", job_id, result);
  }
  spdlog::debug("AckBatch: {} job(s), {} acked", items, acked);
  return absl::OkStatus();
}

grpc::ServerBidiReactor<v1::WorkRequest, v1::WorkResponse>*
JobQueueService::Work(grpc::CallbackServerContext* context) {
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.Work");
  if (!caller.ok()) return new RejectedStream(caller.status());
  absl::MutexLock l(&streams_mu_);
  // Checked under streams_mu_: RefuseNewCalls() ends every stream in
  // streams_, so none may join after it.
  if (refusing_new_calls_.load())
    return new RejectedStream(ShuttingDownError());
  // A stream waits for jobs as a long-poll does, for as long as it is open:
  // it takes a slot too, given back in its OnDone.
  if (!TakeLongPollSlot()) return new RejectedStream(LongPollsExhausted(""));
  auto* call = new WorkCall(this);
  streams_.insert(call);
  HandCallToGrpc(call);  // the handler returns it to gRPC
  return call;
}

void JobQueueService::RefuseNewCalls() {
  std::vector<std::pair<WorkCall*, grpc::Status>> to_finish;
  {
    absl::MutexLock l(&streams_mu_);
    refusing_new_calls_.store(true);
    for (WorkCall* call : streams_) {
      std::optional<grpc::Status> finish = call->BeginShutdown();
      if (finish.has_value()) to_finish.emplace_back(call, *finish);
    }
  }
  // Not deleted yet: a call is deleted only after it is finished.
  for (auto& [call, status] : to_finish) {
    HandCallToGrpc(call);
    call->Finish(status);
  }
}

int JobQueueService::WorkStreamCount() {
  absl::MutexLock l(&streams_mu_);
  return static_cast<int>(streams_.size());
}

grpc::ServerUnaryReactor* JobQueueService::ExtendLease(
    grpc::CallbackServerContext* context, const v1::ExtendLeaseRequest* request,
    v1::ExtendLeaseResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.ExtendLease");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<absl::Duration> lease_duration =
      ValidateExtendLease(*request, limits_);
  if (!lease_duration.ok()) return Reject(context, lease_duration.status());
  return RunOnExecutor(
      context, "ExtendLease",
      [this, request, response,
       lease_duration = *lease_duration]() -> absl::Status {
        absl::StatusOr<absl::Time> expires =
            store_->ExtendLease(request->job_id(), request->lease_token(),
                                lease_duration, clock_->Now());
        if (!expires.ok()) return expires.status();
        // A later expiry needs no note: the timer wakes at the old one and
        // asks the store again.
        ToProto(*expires, response->mutable_lease_expires_at());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* JobQueueService::GetJob(
    grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
    v1::Job* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.GetJob");
  if (!caller.ok()) return Reject(context, caller.status());
  if (absl::Status s = ValidateJobId(request->job_id()); !s.ok()) {
    return Reject(context, s);
  }
  return RunOnExecutor(
      context, "GetJob", [this, request, response]() -> absl::Status {
        absl::StatusOr<Job> job = store_->GetJob(request->job_id());
        if (!job.ok()) return job.status();
        ToProto(*job, response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* JobQueueService::CancelJob(
    grpc::CallbackServerContext* context, const v1::CancelJobRequest* request,
    v1::Job* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.CancelJob");
  if (!caller.ok()) return Reject(context, caller.status());
  if (absl::Status s = ValidateJobId(request->job_id()); !s.ok()) {
    return Reject(context, s);
  }
  return RunOnExecutor(
      context, "CancelJob", [this, request, response]() -> absl::Status {
        absl::StatusOr<Job> job =
            store_->CancelJob(request->job_id(), clock_->Now());
        if (!job.ok()) return job.status();
        if (metrics_ != nullptr) metrics_->JobCancelled(job->queue);
        spdlog::debug("CancelJob: job {} of queue {} cancelled", job->id,
                      job->queue);
        NotifyIfCronJobFinished(on_cron_job_finished_, *job);
        ToProto(*job, response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* JobQueueService::RequeueJob(
    grpc::CallbackServerContext* context, const v1::RequeueJobRequest* request,
    v1::Job* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.RequeueJob");
  if (!caller.ok()) return Reject(context, caller.status());
  if (absl::Status s = ValidateJobId(request->job_id()); !s.ok()) {
    return Reject(context, s);
  }
  return RunOnExecutor(
      context, "RequeueJob", [this, request, response]() -> absl::Status {
        absl::StatusOr<Job> job =
            store_->RequeueJob(request->job_id(), clock_->Now());
        if (!job.ok()) return job.status();
        long_poll_->JobsAvailableAt(job->queue, job->type, job->run_at);
        ToProto(*job, response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* JobQueueService::ListJobs(
    grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
    v1::ListJobsResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.ListJobs");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<ListJobsArgs> args = ValidateListJobs(*request);
  if (!args.ok()) return Reject(context, args.status());
  return RunOnExecutor(
      context, "ListJobs",
      [this, response, args = *std::move(args)]() -> absl::Status {
        absl::StatusOr<JobPage> page = store_->ListJobs(
            args.queue, args.state, args.page_size, args.page_token);
        if (!page.ok()) return page.status();
        for (const Job& job : page->jobs) ToProto(job, response->add_jobs());
        response->set_next_page_token(page->next_page_token);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* JobQueueService::GetStats(
    grpc::CallbackServerContext* context, const v1::GetStatsRequest* request,
    v1::GetStatsResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.JobQueue.GetStats");
  if (!caller.ok()) return Reject(context, caller.status());
  return RunOnExecutor(context, "GetStats", [this, response]() -> absl::Status {
    const absl::Time now = clock_->Now();
    absl::StatusOr<std::vector<QueueStats>> queues =
        store_->QueueStatistics(now);
    if (!queues.ok()) return queues.status();
    ToProto(now, response->mutable_as_of());
    for (const QueueStats& stats : *queues) {
      v1::QueueStats* out = response->add_queues();
      out->set_queue(stats.queue);
      out->set_pending(stats.pending);
      out->set_runnable(stats.runnable);
      out->set_leased(stats.leased);
      out->set_succeeded(stats.succeeded);
      out->set_dead(stats.dead);
      out->set_cancelled(stats.cancelled);
      if (stats.oldest_runnable_run_at != absl::InfiniteFuture()) {
        ToProto(
            std::max(absl::ZeroDuration(), now - stats.oldest_runnable_run_at),
            out->mutable_oldest_runnable_age());
      }
    }
    if (scheduler_ == nullptr) return absl::OkStatus();
    // Schedules are few (one per recurring task): count them by pages.
    constexpr int kCronPageSize = 1000;
    int64_t schedules = 0;
    std::string token;
    do {
      absl::StatusOr<CronPage> page = scheduler_->List(kCronPageSize, token);
      if (!page.ok()) return page.status();
      schedules += static_cast<int64_t>(page->crons.size());
      token = page->next_page_token;
    } while (!token.empty());
    response->set_schedules(schedules);
    absl::StatusOr<LeadershipState> leadership = scheduler_->GetLeadership();
    if (!leadership.ok()) return leadership.status();
    ToProto(*leadership, response->mutable_leadership());
    return absl::OkStatus();
  });
}

}  // namespace adjutant
