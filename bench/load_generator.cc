#include "bench/load_generator.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "adjutant/v1/scheduler.grpc.pb.h"

namespace adjutant::bench {
namespace {

using SteadyTime = std::chrono::steady_clock::time_point;
using v1::JobQueue;
using v1::Scheduler;

SteadyTime SteadyNow() { return std::chrono::steady_clock::now(); }

int64_t NanosBetween(SteadyTime from, SteadyTime to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from)
      .count();
}

SteadyTime SteadyAfter(SteadyTime t, double seconds) {
  return t + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                 std::chrono::duration<double>(seconds));
}

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  out->set_seconds(absl::ToInt64Seconds(d));
  out->set_nanos(static_cast<int32_t>(
      absl::ToInt64Nanoseconds(d - absl::Seconds(out->seconds()))));
}

// "what: CODE_NAME: message".
std::string Describe(const std::string& what, const grpc::Status& status) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int code = static_cast<int>(status.error_code());
  const std::string name =
      code >= 0 && code <= 16 ? kNames[code] : absl::StrCat("code ", code);
  std::string out = absl::StrCat(what, ": ", name);
  if (!status.error_message().empty()) {
    absl::StrAppend(&out, ": ", status.error_message());
  }
  return out;
}

// A warm-up followed by the measured window, on the monotonic clock.
class Window {
 public:
  Window(double warmup_seconds, double seconds)
      : start_(SteadyNow()),
        measure_from_(SteadyAfter(start_, warmup_seconds)),
        end_(SteadyAfter(measure_from_, seconds)) {}
  bool Over() const { return SteadyNow() >= end_; }
  bool Measuring(SteadyTime t) const { return t >= measure_from_ && t < end_; }
  double MeasuredSeconds() const {
    return NanosBetween(measure_from_, end_) / 1e9;
  }

 private:
  const SteadyTime start_;
  const SteadyTime measure_from_;
  const SteadyTime end_;
};

// What a phase counted: operations, latencies, the first failure.
// Thread-safe.
class Tally {
 public:
  void Add(int64_t ops, std::optional<int64_t> latency_ns) {
    absl::MutexLock lock(&mutex_);
    ops_ += ops;
    if (latency_ns.has_value()) latencies_ns_.push_back(*latency_ns);
  }
  // Keeps the first failure; later ones are counted only.
  void Fail(const grpc::Status& status, const std::string& what) {
    absl::MutexLock lock(&mutex_);
    ++failures_;
    if (failures_ == 1) {
      code_ = status.error_code();
      message_ = Describe(what, status);
    }
  }
  bool Failed() const {
    absl::MutexLock lock(&mutex_);
    return failures_ > 0;
  }

  // Fills ops, ops_per_s, p50/p99 (when latencies were taken) and status.
  void Fill(double seconds, ScenarioResult* result) const {
    absl::MutexLock lock(&mutex_);
    result->ops = ops_;
    result->measured_seconds = seconds;
    result->ops_per_s = seconds > 0 ? ops_ / seconds : 0;
    if (!latencies_ns_.empty()) {
      result->p50_ms = PercentileMs(latencies_ns_, 0.50);
      result->p99_ms = PercentileMs(latencies_ns_, 0.99);
    }
    if (failures_ > 0) {
      result->status =
          code_ == grpc::StatusCode::UNIMPLEMENTED ? "unimplemented" : "error";
      result->message = message_;
      result->extras.emplace_back("failures", static_cast<double>(failures_));
    }
  }

  static double PercentileMs(std::vector<int64_t> values, double q) {
    const size_t k = std::min(
        values.size() - 1,
        static_cast<size_t>(std::ceil(q * static_cast<double>(values.size()))) -
            (q > 0 ? 1 : 0));
    std::nth_element(values.begin(), values.begin() + k, values.end());
    return values[k] / 1e6;
  }

 private:
  mutable absl::Mutex mutex_;
  int64_t ops_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<int64_t> latencies_ns_ ABSL_GUARDED_BY(mutex_);
  int64_t failures_ ABSL_GUARDED_BY(mutex_) = 0;
  grpc::StatusCode code_ ABSL_GUARDED_BY(mutex_) = grpc::StatusCode::OK;
  std::string message_ ABSL_GUARDED_BY(mutex_);
};

// Counts callers still running; Wait() returns when none is.
class Running {
 public:
  explicit Running(int n) : n_(n) {}
  void Done() {
    absl::MutexLock lock(&mutex_);
    --n_;
  }
  void Wait() {
    absl::MutexLock lock(&mutex_);
    mutex_.Await(absl::Condition(&Running::None, &n_));
  }
  // False if some are still running after `timeout`.
  bool WaitFor(absl::Duration timeout) {
    absl::MutexLock lock(&mutex_);
    return mutex_.AwaitWithTimeout(absl::Condition(&Running::None, &n_),
                                   timeout);
  }

 private:
  static bool None(int* n) { return *n == 0; }

  absl::Mutex mutex_;
  int n_ ABSL_GUARDED_BY(mutex_);
};

template <typename Response>
using Done = std::function<void(const grpc::Status&, Response*)>;

// One unary call in flight: its context, request and response live until
// its callback returned.
template <typename Request, typename Response>
struct UnaryCall {
  grpc::ClientContext context;
  Request request;
  Response response;
  Done<Response> done;
};

// The channels and stubs, and one method per RPC the scenarios use. Each
// call's callback runs on a gRPC thread; it may start the next call.
class Api {
 public:
  explicit Api(const LoadConfig& config) {
    for (int i = 0; i < std::max(1, config.channels); ++i) {
      grpc::ChannelArguments args;
      // Distinct arguments: each channel gets its own connection.
      args.SetInt("adjutant.bench.channel", i);
      args.SetMaxReceiveMessageSize(64 << 20);
      auto channel = grpc::CreateCustomChannel(
          config.target, grpc::InsecureChannelCredentials(), args);
      queues_.push_back(JobQueue::NewStub(channel));
      schedulers_.push_back(Scheduler::NewStub(channel));
      generics_.push_back(std::make_unique<grpc::GenericStub>(channel));
    }
  }

  JobQueue::Stub* Queue() { return queues_[Next()].get(); }
  Scheduler::Stub* Sched() { return schedulers_[0].get(); }

  void Health(Done<grpc::ByteBuffer> done) {
    auto* call = new UnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>;
    // An empty HealthCheckRequest (service "") serializes to no bytes.
    grpc::Slice empty("", 0);
    call->request = grpc::ByteBuffer(&empty, 1);
    call->done = std::move(done);
    Deadline(&call->context);
    generics_[Next()]->UnaryCall(&call->context, "/grpc.health.v1.Health/Check",
                                 grpc::StubOptions(), &call->request,
                                 &call->response, [call](grpc::Status status) {
                                   call->done(status, &call->response);
                                   delete call;
                                 });
  }

#define ADJUTANT_BENCH_UNARY(Rpc, Req, Resp, stub)                      \
  void Rpc(v1::Req request, Done<v1::Resp> done) {                      \
    auto* call = new UnaryCall<v1::Req, v1::Resp>;                      \
    call->request = std::move(request);                                 \
    call->done = std::move(done);                                       \
    Deadline(&call->context);                                           \
    stub->async()->Rpc(&call->context, &call->request, &call->response, \
                       [call](grpc::Status status) {                    \
                         call->done(status, &call->response);           \
                         delete call;                                   \
                       });                                              \
  }
  ADJUTANT_BENCH_UNARY(Enqueue, EnqueueRequest, EnqueueResponse, Queue())
  ADJUTANT_BENCH_UNARY(EnqueueBatch, EnqueueBatchRequest, EnqueueBatchResponse,
                       Queue())
  ADJUTANT_BENCH_UNARY(Dequeue, DequeueRequest, DequeueResponse, Queue())
  ADJUTANT_BENCH_UNARY(Ack, AckRequest, AckResponse, Queue())
  ADJUTANT_BENCH_UNARY(AckBatch, AckBatchRequest, AckBatchResponse, Queue())
  ADJUTANT_BENCH_UNARY(RegisterCron, RegisterCronRequest, Cron, Sched())
#undef ADJUTANT_BENCH_UNARY

 private:
  static void Deadline(grpc::ClientContext* context) {
    // Generous: a store stalled under load is measured, not cut short.
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(120));
  }
  size_t Next() { return next_.fetch_add(1) % queues_.size(); }

  std::atomic<size_t> next_{0};
  std::vector<std::unique_ptr<JobQueue::Stub>> queues_;
  std::vector<std::unique_ptr<Scheduler::Stub>> schedulers_;
  std::vector<std::unique_ptr<grpc::GenericStub>> generics_;
};

std::string Payload(int bytes) { return std::string(bytes, 'x'); }

v1::EnqueueRequest NewJob(const std::string& queue,
                          const std::string& payload) {
  v1::EnqueueRequest job;
  job.set_queue(queue);
  job.set_job_type("bench");
  job.set_payload(payload);
  return job;
}

v1::DequeueRequest NewDequeue(const std::string& queue, int max_jobs,
                              absl::Duration wait) {
  v1::DequeueRequest request;
  request.set_queue(queue);
  request.set_max_jobs(max_jobs);
  request.set_worker_id("adjutant_bench");
  SetDuration(absl::Minutes(10), request.mutable_lease_duration());
  if (wait > absl::ZeroDuration()) SetDuration(wait, request.mutable_wait());
  return request;
}

// One loop iteration of a closed-loop caller: does its calls, then calls
// `done` with the outcome and the operations (jobs) it completed.
using StepDone = std::function<void(const grpc::Status&, int64_t ops)>;
using Step = std::function<void(int caller, StepDone done)>;

// Runs `callers` closed loops of `step` until the window is over. An
// iteration that ends inside the measured window counts its operations and
// its duration as one latency sample (when `latency_per_step`). A caller
// stops at its first failure.
class ClosedLoop {
 public:
  ClosedLoop(int callers, const Window* window, Tally* tally, Step step,
             std::string what, bool latency_per_step)
      : callers_(callers),
        window_(window),
        tally_(tally),
        step_(std::move(step)),
        what_(std::move(what)),
        latency_per_step_(latency_per_step),
        running_(callers) {}

  void Run() {
    for (int i = 0; i < callers_; ++i) Next(i);
    running_.Wait();
  }

 private:
  void Next(int caller) {
    if (window_->Over()) {
      running_.Done();
      return;
    }
    const SteadyTime t0 = SteadyNow();
    step_(caller, [this, caller, t0](const grpc::Status& status, int64_t ops) {
      const SteadyTime t1 = SteadyNow();
      if (!status.ok()) {
        tally_->Fail(status, what_);
        running_.Done();
        return;
      }
      if (window_->Measuring(t1) && ops > 0) {
        tally_->Add(ops, latency_per_step_
                             ? std::optional<int64_t>(NanosBetween(t0, t1))
                             : std::nullopt);
      }
      Next(caller);
    });
  }

  const int callers_;
  const Window* const window_;
  Tally* const tally_;
  const Step step_;
  const std::string what_;
  const bool latency_per_step_;
  Running running_;
};

// Runs fn(i, done) for i in [0, n), at most `concurrency` at once; returns
// the first failure.
grpc::Status ForEach(int64_t n, int concurrency,
                     std::function<void(int64_t, StepDone)> fn) {
  std::atomic<int64_t> next{0};
  absl::Mutex mutex;
  grpc::Status first = grpc::Status::OK;
  const int callers =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(concurrency, n)));
  Running running(callers);
  std::function<void()> pump = [&] {
    const int64_t i = next.fetch_add(1);
    if (i >= n) {
      running.Done();
      return;
    }
    fn(i, [&](const grpc::Status& status, int64_t) {
      if (!status.ok()) {
        absl::MutexLock lock(&mutex);
        if (first.ok()) first = status;
        next.store(n);
      }
      pump();
    });
  };
  for (int c = 0; c < callers; ++c) pump();
  running.Wait();
  absl::MutexLock lock(&mutex);
  return first;
}

ScenarioResult Named(const std::string& scenario) {
  ScenarioResult result;
  result.scenario = scenario;
  return result;
}

ScenarioResult Failed(const std::string& scenario, const std::string& what,
                      const grpc::Status& status) {
  ScenarioResult result = Named(scenario);
  result.status = status.error_code() == grpc::StatusCode::UNIMPLEMENTED
                      ? "unimplemented"
                      : "error";
  result.message = Describe(what, status);
  return result;
}

// ---- The daemon's process, from /proc.

// The CPU time `pid` has used, in seconds: the sum of its threads' run
// time in /proc/PID/task/*/schedstat (nanoseconds; /proc/PID/stat counts
// in clock ticks, 10 ms, too coarse for an idle daemon).
std::optional<double> CpuSeconds(int pid) {
  std::error_code error;
  std::filesystem::directory_iterator tasks(
      absl::StrCat("/proc/", pid, "/task"), error);
  if (error) return std::nullopt;
  double nanos = 0;
  for (const auto& task : tasks) {
    std::ifstream in(task.path() / "schedstat");
    double run_ns = 0;
    if (in >> run_ns) nanos += run_ns;
  }
  return nanos / 1e9;
}

// A "VmRSS"/"VmHWM" line of /proc/PID/status, in MiB.
std::optional<double> StatusMiB(int pid, const std::string& key) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      return std::stod(line.substr(key.size() + 1)) / 1024.0;
    }
  }
  return std::nullopt;
}

// ---- The scenarios.

ScenarioResult RunEcho(const LoadConfig& config, Api* api) {
  Window window(config.warmup_seconds, config.seconds);
  Tally tally;
  ClosedLoop loop(
      config.concurrency, &window, &tally,
      [api](int, StepDone done) {
        api->Health([done](const grpc::Status& status, grpc::ByteBuffer*) {
          done(status, 1);
        });
      },
      "Health.Check", /*latency_per_step=*/true);
  loop.Run();
  ScenarioResult result = Named("echo");
  tally.Fill(window.MeasuredSeconds(), &result);
  return result;
}

ScenarioResult RunEnqueue(const LoadConfig& config, Api* api) {
  const std::string payload = Payload(config.payload_bytes);
  Window window(config.warmup_seconds, config.seconds);
  Tally tally;
  ClosedLoop loop(
      config.concurrency, &window, &tally,
      [api, &payload](int, StepDone done) {
        api->Enqueue(NewJob("bench-enqueue", payload),
                     [done](const grpc::Status& status, v1::EnqueueResponse*) {
                       done(status, 1);
                     });
      },
      "Enqueue", /*latency_per_step=*/true);
  loop.Run();
  ScenarioResult result = Named("enqueue");
  tally.Fill(window.MeasuredSeconds(), &result);
  return result;
}

ScenarioResult RunLifecycle(const LoadConfig& config, Api* api) {
  const std::string payload = Payload(config.payload_bytes);
  const std::string queue = "bench-lifecycle";
  Window window(config.warmup_seconds, config.seconds);
  Tally tally;
  ClosedLoop loop(
      config.concurrency, &window, &tally,
      [api, &payload, &queue](int, StepDone done) {
        api->Enqueue(NewJob(queue, payload), [api, done, &queue](
                                                 const grpc::Status& status,
                                                 v1::EnqueueResponse*) {
          if (!status.ok()) return done(status, 0);
          api->Dequeue(NewDequeue(queue, 1, absl::Seconds(1)),
                       [api, done](const grpc::Status& status,
                                   v1::DequeueResponse* response) {
                         if (!status.ok()) return done(status, 0);
                         // Another worker took every job: this loop leased
                         // none.
                         if (response->jobs_size() == 0) return done(status, 0);
                         v1::AckRequest ack;
                         ack.set_job_id(response->jobs(0).job().job_id());
                         ack.set_lease_token(response->jobs(0).lease_token());
                         api->Ack(
                             std::move(ack),
                             [done](const grpc::Status& status,
                                    v1::AckResponse*) { done(status, 1); });
                       });
        });
      },
      "Enqueue/Dequeue/Ack", /*latency_per_step=*/true);
  loop.Run();
  ScenarioResult result = Named("lifecycle");
  tally.Fill(window.MeasuredSeconds(), &result);
  return result;
}

ScenarioResult RunBatched(const LoadConfig& config, Api* api) {
  const std::string payload = Payload(config.payload_bytes);
  const std::string queue = "bench-batched";
  const int batch = config.batch;
  Window window(config.warmup_seconds, config.seconds);
  Tally tally;
  ClosedLoop loop(
      config.concurrency, &window, &tally,
      [api, &payload, &queue, batch](int, StepDone done) {
        v1::EnqueueBatchRequest jobs;
        for (int i = 0; i < batch; ++i) {
          *jobs.add_jobs() = NewJob(queue, payload);
        }
        api->EnqueueBatch(std::move(jobs), [api, done, &queue, batch](
                                               const grpc::Status& status,
                                               v1::EnqueueBatchResponse*) {
          if (!status.ok()) return done(status, 0);
          api->Dequeue(
              NewDequeue(queue, batch, absl::Seconds(1)),
              [api, done](const grpc::Status& status,
                          v1::DequeueResponse* response) {
                if (!status.ok()) return done(status, 0);
                if (response->jobs_size() == 0) return done(status, 0);
                v1::AckBatchRequest acks;
                for (const v1::LeasedJob& leased : response->jobs()) {
                  v1::AckRequest* ack = acks.add_acks();
                  ack->set_job_id(leased.job().job_id());
                  ack->set_lease_token(leased.lease_token());
                }
                api->AckBatch(
                    std::move(acks), [done](const grpc::Status& status,
                                            v1::AckBatchResponse* response) {
                      int64_t acked = 0;
                      if (status.ok()) {
                        for (const v1::SettleResult& r : response->results()) {
                          if (r.code() == 0) ++acked;
                        }
                      }
                      done(status, acked);
                    });
              });
        });
      },
      "EnqueueBatch/Dequeue/AckBatch", /*latency_per_step=*/false);
  loop.Run();
  ScenarioResult result = Named("batched");
  tally.Fill(window.MeasuredSeconds(), &result);
  result.extras.emplace_back("batch", batch);
  return result;
}

// Jobs enqueued and not yet settled, bounded so that producers and workers
// stay in step: a producer over the bound parks until settlements free room.
// Thread-safe.
class Backlog {
 public:
  explicit Backlog(int64_t bound) : bound_(bound) {}
  // Room for `n` more: true, counted. False: `resume` runs once there is.
  bool TryReserve(int64_t n, std::function<void()> resume) {
    absl::MutexLock lock(&mutex_);
    if (outstanding_ + n <= bound_) {
      outstanding_ += n;
      return true;
    }
    parked_.push_back(std::move(resume));
    return false;
  }
  void Settled(int64_t n) {
    std::vector<std::function<void()>> wake;
    {
      absl::MutexLock lock(&mutex_);
      outstanding_ -= n;
      if (outstanding_ <= bound_ / 2) wake.swap(parked_);
    }
    for (auto& resume : wake) resume();
  }
  // Ends the run: parked producers resume (and then see the window over).
  void Release() {
    std::vector<std::function<void()>> wake;
    {
      absl::MutexLock lock(&mutex_);
      bound_ = INT64_MAX / 2;
      wake.swap(parked_);
    }
    for (auto& resume : wake) resume();
  }

 private:
  absl::Mutex mutex_;
  int64_t bound_ ABSL_GUARDED_BY(mutex_);
  int64_t outstanding_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<std::function<void()>> parked_ ABSL_GUARDED_BY(mutex_);
};

class WorkStream;

// The Work streams still running, for cancelling them. Thread-safe.
class StreamSet {
 public:
  void Add(WorkStream* stream) {
    absl::MutexLock lock(&mutex_);
    streams_.insert(stream);
  }
  void Remove(WorkStream* stream) {
    absl::MutexLock lock(&mutex_);
    streams_.erase(stream);
  }
  void CancelAll();

 private:
  absl::Mutex mutex_;
  std::set<WorkStream*> streams_ ABSL_GUARDED_BY(mutex_);
};

// One worker's Work stream: `start`, then an `ack` for every job pushed,
// until Close(); then it waits for the server to end the stream. A hold
// keeps the stream (and this object) alive until Close(); OnDone deletes it.
class WorkStream final
    : public grpc::ClientBidiReactor<v1::WorkRequest, v1::WorkResponse> {
 public:
  WorkStream(const Window* window, Tally* tally, Backlog* backlog,
             StreamSet* set, Running* running)
      : window_(window),
        tally_(tally),
        backlog_(backlog),
        set_(set),
        running_(running) {
    set_->Add(this);
  }

  void Start(JobQueue::Stub* stub, const std::string& queue, int capacity) {
    v1::WorkStart* start = start_.mutable_start();
    start->set_queue(queue);
    start->set_worker_id("adjutant_bench");
    start->set_capacity(capacity);
    SetDuration(absl::Minutes(10), start->mutable_lease_duration());
    stub->async()->Work(&context_, this);
    {
      absl::MutexLock lock(&mutex_);
      writing_ = true;
    }
    AddHold();
    StartWrite(&start_);
    StartRead(&response_);
    StartCall();
  }

  // Closes our side once the writes in flight are done. Call once; the
  // stream may be gone when it returns.
  void Close() {
    {
      absl::MutexLock lock(&mutex_);
      closing_ = true;
      MaybeWriteLocked();
    }
    RemoveHold();
  }

  // Ends the stream now (for a server that does not end it).
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ends; OnDone follows
    if (response_.has_job()) {
      v1::WorkRequest ack;
      ack.mutable_ack()->set_job_id(response_.job().job().job_id());
      ack.mutable_ack()->set_lease_token(response_.job().lease_token());
      absl::MutexLock lock(&mutex_);
      pending_.push_back(std::move(ack));
      MaybeWriteLocked();
    } else if (response_.has_settled()) {
      backlog_->Settled(1);
      if (response_.settled().code() == 0 && window_->Measuring(SteadyNow())) {
        tally_->Add(1, std::nullopt);
      }
    }
    StartRead(&response_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mutex_);
    writing_ = false;
    if (ok) MaybeWriteLocked();
  }

  void OnDone(const grpc::Status& status) override {
    // After our WritesDone the server ends the stream with OK; a stream we
    // had to cancel ends CANCELLED. Anything else is a failure.
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      tally_->Fail(status, "Work");
    }
    Running* running = running_;
    set_->Remove(this);
    delete this;
    running->Done();
  }

 private:
  // Starts the next write, or closes our side once asked to.
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    if (writing_ || closed_) return;
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      StartWrite(&current_);
    } else if (closing_) {
      closed_ = true;
      StartWritesDone();
    }
  }

  grpc::ClientContext context_;
  const Window* const window_;
  Tally* const tally_;
  Backlog* const backlog_;
  StreamSet* const set_;
  Running* const running_;
  v1::WorkRequest start_;
  v1::WorkResponse response_;  // only the reading side touches it

  absl::Mutex mutex_;
  bool writing_ ABSL_GUARDED_BY(mutex_) = false;
  bool closing_ ABSL_GUARDED_BY(mutex_) = false;
  bool closed_ ABSL_GUARDED_BY(mutex_) = false;
  v1::WorkRequest current_ ABSL_GUARDED_BY(mutex_);
  std::deque<v1::WorkRequest> pending_ ABSL_GUARDED_BY(mutex_);
};

void StreamSet::CancelAll() {
  absl::MutexLock lock(&mutex_);
  for (WorkStream* stream : streams_) stream->Cancel();
}

ScenarioResult RunBatchedStream(const LoadConfig& config, Api* api) {
  const std::string payload = Payload(config.payload_bytes);
  const std::string queue = "bench-stream";
  const int batch = config.batch;
  Window window(config.warmup_seconds, config.seconds);
  Tally tally;
  // Enough queued for every stream's capacity, twice over.
  Backlog backlog(2LL * config.concurrency * batch);
  Running running(config.concurrency);
  StreamSet live;
  std::vector<WorkStream*> streams;
  for (int i = 0; i < config.concurrency; ++i) {
    streams.push_back(
        new WorkStream(&window, &tally, &backlog, &live, &running));
    streams.back()->Start(api->Queue(), queue, batch);
  }
  // Producers: EnqueueBatch while the backlog has room.
  const int producers = std::max(1, std::min(4, config.concurrency));
  Tally produced;
  std::function<void(int, StepDone)> produce;
  produce = [&](int caller, StepDone done) {
    if (tally.Failed()) {
      return done(grpc::Status(grpc::StatusCode::ABORTED, "Work failed"), 0);
    }
    if (window.Over()) return done(grpc::Status::OK, 0);
    if (!backlog.TryReserve(batch,
                            [&, caller, done] { produce(caller, done); })) {
      return;
    }
    v1::EnqueueBatchRequest jobs;
    for (int i = 0; i < batch; ++i) *jobs.add_jobs() = NewJob(queue, payload);
    api->EnqueueBatch(
        std::move(jobs),
        [done, batch](const grpc::Status& status, v1::EnqueueBatchResponse*) {
          done(status, batch);
        });
  };
  ClosedLoop producer_loop(producers, &window, &produced, produce,
                           "EnqueueBatch", /*latency_per_step=*/false);
  std::thread producer_thread([&] { producer_loop.Run(); });
  while (!window.Over() && !tally.Failed()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  backlog.Release();  // parked producers see the window over and stop
  producer_thread.join();
  for (WorkStream* stream : streams) stream->Close();  // may delete it
  if (!running.WaitFor(absl::Seconds(10))) {
    live.CancelAll();
    running.Wait();
  }
  ScenarioResult result = Named("batched_stream");
  tally.Fill(window.MeasuredSeconds(), &result);
  if (result.status == "ok") {
    ScenarioResult producer_result;
    produced.Fill(window.MeasuredSeconds(), &producer_result);
    if (producer_result.status != "ok") {
      result.status = producer_result.status;
      result.message = producer_result.message;
    }
  }
  result.extras.emplace_back("capacity", batch);
  return result;
}

// Encodes the send instant (steady clock, this process) in the payload.
std::string LatencyPayload(int bytes, SteadyTime sent) {
  std::string payload(std::max(bytes, 8), 'x');
  const int64_t ns = sent.time_since_epoch().count();
  std::memcpy(payload.data(), &ns, sizeof ns);
  return payload;
}

ScenarioResult RunLatency(const LoadConfig& config, Api* api) {
  const std::string queue = "bench-latency";
  const int consumers = std::max(2, std::min(4, config.concurrency));
  Window window(config.warmup_seconds, config.seconds);
  Tally tally;
  Running running(consumers + 1);
  const bool paced = config.latency_rate > 0;
  // The producer: one job at a time. Closed loop: the next once the last
  // one arrived. Paced: the next at its slot (start + i / rate), or as soon
  // as the last Enqueue was answered if that is later.
  std::function<void()> send = [&] {
    if (window.Over() || tally.Failed()) {
      running.Done();
      return;
    }
    api->Enqueue(
        NewJob(queue, LatencyPayload(config.payload_bytes, SteadyNow())),
        [&](const grpc::Status& status, v1::EnqueueResponse*) {
          if (!status.ok()) {
            tally.Fail(status, "Enqueue");
            running.Done();
          }
        });
  };
  std::thread pacer;
  if (paced) {
    pacer = std::thread([&] {
      const SteadyTime start = SteadyNow();
      for (int64_t i = 0;; ++i) {
        std::this_thread::sleep_until(
            start + std::chrono::nanoseconds(static_cast<int64_t>(
                        1e9 * static_cast<double>(i) / config.latency_rate)));
        if (window.Over() || tally.Failed()) break;
        std::promise<grpc::Status> answered;
        api->Enqueue(
            NewJob(queue, LatencyPayload(config.payload_bytes, SteadyNow())),
            [&answered](const grpc::Status& status, v1::EnqueueResponse*) {
              answered.set_value(status);
            });
        const grpc::Status status = answered.get_future().get();
        if (!status.ok()) {
          tally.Fail(status, "Enqueue");
          break;
        }
      }
      running.Done();
    });
  }
  // The consumers: parked in Dequeue; an arrival triggers the next send.
  std::function<void()> consume = [&] {
    if (window.Over() || tally.Failed()) {
      running.Done();
      return;
    }
    api->Dequeue(
        NewDequeue(queue, 1, absl::Seconds(1)),
        [&](const grpc::Status& status, v1::DequeueResponse* response) {
          const SteadyTime arrived = SteadyNow();
          if (!status.ok()) {
            tally.Fail(status, "Dequeue");
            running.Done();
            return;
          }
          if (response->jobs_size() == 0) return consume();
          const v1::LeasedJob& leased = response->jobs(0);
          int64_t ns = 0;
          std::memcpy(&ns, leased.job().payload().data(), sizeof ns);
          const SteadyTime sent{SteadyTime::duration(ns)};
          if (window.Measuring(arrived))
            tally.Add(1, NanosBetween(sent, arrived));
          if (!paced) send();
          v1::AckRequest ack;
          ack.set_job_id(leased.job().job_id());
          ack.set_lease_token(leased.lease_token());
          api->Ack(std::move(ack),
                   [&](const grpc::Status& status, v1::AckResponse*) {
                     if (!status.ok()) {
                       tally.Fail(status, "Ack");
                       running.Done();
                       return;
                     }
                     consume();
                   });
        });
  };
  for (int i = 0; i < consumers; ++i) consume();
  // Let the consumers park before the first job goes out.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (!paced) send();
  running.Wait();
  if (pacer.joinable()) pacer.join();
  ScenarioResult result = Named("latency");
  tally.Fill(window.MeasuredSeconds(), &result);
  result.extras.emplace_back("consumers", consumers);
  result.extras.emplace_back("rate", config.latency_rate);
  return result;
}

grpc::Status Lead(Api* api, uint64_t* term) {
  grpc::ClientContext get_context;
  v1::Leadership current;
  grpc::Status status = api->Sched()->GetLeadership(
      &get_context, v1::GetLeadershipRequest(), &current);
  if (!status.ok()) return status;
  *term = std::max(current.term(), current.highest_term()) + 1;
  grpc::ClientContext set_context;
  v1::SetLeadershipRequest request;
  request.set_leader(true);
  request.set_term(*term);
  v1::Leadership leadership;
  return api->Sched()->SetLeadership(&set_context, request, &leadership);
}

void StepDown(Api* api, uint64_t term) {
  grpc::ClientContext context;
  v1::SetLeadershipRequest request;
  request.set_leader(false);
  request.set_term(term);
  v1::Leadership leadership;
  (void)api->Sched()->SetLeadership(&context, request, &leadership);
}

grpc::Status RegisterSchedules(Api* api, const std::string& prefix, int64_t n,
                               const std::string& schedule,
                               const std::string& queue, int concurrency) {
  return ForEach(n, concurrency, [&](int64_t i, StepDone done) {
    v1::RegisterCronRequest request;
    request.set_name(absl::StrCat(prefix, i));
    request.set_schedule(schedule);
    request.mutable_job()->set_queue(queue);
    request.mutable_job()->set_job_type("bench-tick");
    // Ticks that passed before the harness made the daemon leader are not
    // fired late: they would count as lateness the daemon did not cause.
    request.set_misfire_policy(v1::MISFIRE_POLICY_SKIP);
    request.set_overlap_policy(v1::OVERLAP_POLICY_ALLOW);
    api->RegisterCron(
        std::move(request),
        [done](const grpc::Status& status, v1::Cron*) { done(status, 1); });
  });
}

ScenarioResult RunCron(const LoadConfig& config, Api* api) {
  const std::string queue = "bench-cron";
  grpc::Status status =
      RegisterSchedules(api, "bench-cron-", config.cron_schedules,
                        "* * * * * *", queue, config.concurrency);
  if (!status.ok()) return Failed("cron", "RegisterCron", status);
  uint64_t term = 0;
  status = Lead(api, &term);
  if (!status.ok()) return Failed("cron", "SetLeadership", status);
  // The ticks measured: whole seconds inside the measured window, on the
  // daemon's wall clock (the same machine's).
  const absl::Time lead_time = absl::Now();
  const absl::Time warm =
      lead_time + absl::Seconds(std::max(1.0, config.warmup_seconds));
  absl::Time first_tick = absl::FromUnixSeconds(absl::ToUnixSeconds(warm));
  if (first_tick < warm) first_tick += absl::Seconds(1);
  const int64_t tick_count =
      std::max<int64_t>(1, static_cast<int64_t>(std::floor(config.seconds)));
  const absl::Time last_tick = first_tick + absl::Seconds(tick_count - 1);
  const int64_t expected = tick_count * config.cron_schedules;
  // Consumers lease the fired jobs (no ack: nothing else should load the
  // store) until every expected one was seen or a grace period passed.
  const absl::Time give_up = last_tick + absl::Seconds(5);
  Tally seen_tally;     // harness receipt - tick
  Tally created_tally;  // job created_at - tick
  std::atomic<int64_t> seen{0};
  const int consumers = 2;
  Running running(consumers);
  std::function<void()> consume = [&] {
    if (absl::Now() > give_up || seen.load() >= expected ||
        seen_tally.Failed()) {
      running.Done();
      return;
    }
    api->Dequeue(
        NewDequeue(queue, std::min(config.cron_schedules, 1000),
                   absl::Seconds(1)),
        [&](const grpc::Status& status, v1::DequeueResponse* response) {
          const absl::Time arrived = absl::Now();
          if (!status.ok()) {
            seen_tally.Fail(status, "Dequeue");
            running.Done();
            return;
          }
          for (const v1::LeasedJob& leased : response->jobs()) {
            const absl::Time tick = FromProto(leased.job().cron_tick_time());
            if (tick < first_tick || tick > last_tick) continue;
            seen.fetch_add(1);
            seen_tally.Add(1, absl::ToInt64Nanoseconds(arrived - tick));
            created_tally.Add(0,
                              absl::ToInt64Nanoseconds(
                                  FromProto(leased.job().created_at()) - tick));
          }
          consume();
        });
  };
  for (int i = 0; i < consumers; ++i) consume();
  running.Wait();
  StepDown(api, term);
  ScenarioResult result = Named("cron");
  const double window_seconds = static_cast<double>(tick_count);
  seen_tally.Fill(window_seconds, &result);
  ScenarioResult created;
  created_tally.Fill(window_seconds, &created);
  result.extras.emplace_back("schedules", config.cron_schedules);
  result.extras.emplace_back("expected_fires", static_cast<double>(expected));
  if (created.p50_ms.has_value()) {
    result.extras.emplace_back("created_p50_ms", *created.p50_ms);
    result.extras.emplace_back("created_p99_ms", *created.p99_ms);
  }
  if (result.status == "ok" && result.ops == 0) {
    result.status = "error";
    result.message = "no fired job was seen";
  }
  return result;
}

ScenarioResult RunCronIdle(const LoadConfig& config, Api* api) {
  // Due next week: one fixed instant seven days from now (UTC).
  const absl::CivilSecond due = absl::ToCivilSecond(
      absl::Now() + absl::Hours(24 * 7), absl::UTCTimeZone());
  const std::string schedule =
      absl::StrFormat("0 0 0 %d %d *", due.day(), due.month());
  grpc::Status status =
      RegisterSchedules(api, "bench-idle-", config.idle_schedules, schedule,
                        "bench-idle", config.concurrency);
  if (!status.ok()) return Failed("cron_idle", "RegisterCron", status);
  uint64_t term = 0;
  status = Lead(api, &term);
  if (!status.ok()) return Failed("cron_idle", "SetLeadership", status);
  // Let the registration's writes and the first scheduler round settle.
  std::this_thread::sleep_for(
      std::chrono::duration<double>(std::max(1.0, config.warmup_seconds)));
  const SteadyTime t0 = SteadyNow();
  const std::optional<double> cpu0 = CpuSeconds(config.daemon_pid);
  std::this_thread::sleep_for(std::chrono::duration<double>(config.seconds));
  const std::optional<double> cpu1 = CpuSeconds(config.daemon_pid);
  const double wall = NanosBetween(t0, SteadyNow()) / 1e9;
  StepDown(api, term);
  ScenarioResult result = Named("cron_idle");
  result.measured_seconds = wall;
  if (!cpu0.has_value() || !cpu1.has_value()) {
    result.status = "error";
    result.message =
        absl::StrCat("cannot read /proc/", config.daemon_pid, "/stat");
    return result;
  }
  result.extras.emplace_back("cpu_percent", (*cpu1 - *cpu0) / wall * 100.0);
  result.extras.emplace_back("schedules", config.idle_schedules);
  if (auto rss = StatusMiB(config.daemon_pid, "VmRSS")) {
    result.extras.emplace_back("rss_mb", *rss);
  }
  return result;
}

// Fills `queue` with `n` more jobs, EnqueueBatch of up to 1000.
grpc::Status Fill(Api* api, const std::string& queue, int64_t n,
                  const std::string& payload) {
  constexpr int64_t kFillBatch = 1000;
  const int64_t batches = (n + kFillBatch - 1) / kFillBatch;
  return ForEach(batches, 4, [&](int64_t b, StepDone done) {
    const int64_t size = std::min(kFillBatch, n - b * kFillBatch);
    v1::EnqueueBatchRequest jobs;
    for (int64_t i = 0; i < size; ++i)
      *jobs.add_jobs() = NewJob(queue, payload);
    api->EnqueueBatch(std::move(jobs),
                      [done](const grpc::Status& status,
                             v1::EnqueueBatchResponse*) { done(status, 0); });
  });
}

// Dequeue(1) + Ack loops at a steady backlog: whenever 100 jobs were taken,
// the caller that took the 100th puts 100 back (EnqueueBatch), the same
// cost at any depth.
ScenarioResult MeasureDequeue(const LoadConfig& config, Api* api,
                              const std::string& queue, const std::string& name,
                              int64_t queued) {
  constexpr int64_t kRefill = 100;
  const std::string payload = Payload(config.payload_bytes);
  absl::Mutex mutex;
  int64_t taken = 0;
  Window window(config.warmup_seconds, config.seconds);
  Tally tally;
  ClosedLoop loop(
      config.concurrency, &window, &tally,
      [&](int, StepDone done) {
        api->Dequeue(
            NewDequeue(queue, 1, absl::Seconds(1)),
            [&, done](const grpc::Status& status,
                      v1::DequeueResponse* response) {
              if (!status.ok()) return done(status, 0);
              if (response->jobs_size() == 0) return done(status, 0);
              v1::AckRequest ack;
              ack.set_job_id(response->jobs(0).job().job_id());
              ack.set_lease_token(response->jobs(0).lease_token());
              api->Ack(std::move(ack),
                       [&, done](const grpc::Status& status, v1::AckResponse*) {
                         if (!status.ok()) return done(status, 0);
                         bool refill = false;
                         {
                           absl::MutexLock lock(&mutex);
                           if (++taken >= kRefill) {
                             taken -= kRefill;
                             refill = true;
                           }
                         }
                         if (!refill) return done(status, 1);
                         v1::EnqueueBatchRequest jobs;
                         for (int64_t i = 0; i < kRefill; ++i) {
                           *jobs.add_jobs() = NewJob(queue, payload);
                         }
                         api->EnqueueBatch(std::move(jobs),
                                           [done](const grpc::Status& status,
                                                  v1::EnqueueBatchResponse*) {
                                             done(status, 1);
                                           });
                       });
            });
      },
      "Dequeue/Ack", /*latency_per_step=*/true);
  loop.Run();
  ScenarioResult result = Named(name);
  tally.Fill(window.MeasuredSeconds(), &result);
  result.extras.emplace_back("queued", static_cast<double>(queued));
  if (auto rss = StatusMiB(config.daemon_pid, "VmRSS")) {
    result.extras.emplace_back("rss_mb", *rss);
  }
  if (auto hwm = StatusMiB(config.daemon_pid, "VmHWM")) {
    result.extras.emplace_back("rss_peak_mb", *hwm);
  }
  return result;
}

std::vector<ScenarioResult> RunScale(const LoadConfig& config, Api* api) {
  const std::string queue = "bench-scale";
  const std::string payload = Payload(config.payload_bytes);
  std::vector<ScenarioResult> results;
  grpc::Status status = Fill(api, queue, config.scale_baseline_jobs, payload);
  if (!status.ok()) {
    results.push_back(Failed("scale_baseline", "EnqueueBatch", status));
    return results;
  }
  results.push_back(MeasureDequeue(config, api, queue, "scale_baseline",
                                   config.scale_baseline_jobs));
  if (results.back().status != "ok") return results;
  const SteadyTime fill_start = SteadyNow();
  status =
      Fill(api, queue, config.scale_jobs - config.scale_baseline_jobs, payload);
  const double fill_seconds = NanosBetween(fill_start, SteadyNow()) / 1e9;
  if (!status.ok()) {
    results.push_back(Failed("scale", "EnqueueBatch", status));
    return results;
  }
  results.push_back(
      MeasureDequeue(config, api, queue, "scale", config.scale_jobs));
  results.back().extras.emplace_back(
      "fill_jobs_per_s",
      (config.scale_jobs - config.scale_baseline_jobs) / fill_seconds);
  return results;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(std::optional<double> v) {
  if (!v.has_value() || !std::isfinite(*v)) return "null";
  return absl::StrFormat("%.10g", *v);
}

}  // namespace

const std::vector<std::string>& ScenarioNames() {
  static const auto* const kNames = new std::vector<std::string>{
      "echo",    "enqueue", "lifecycle", "batched", "batched_stream",
      "latency", "cron",    "cron_idle", "scale"};
  return *kNames;
}

absl::StatusOr<std::vector<ScenarioResult>> RunScenario(
    const LoadConfig& config) {
  const auto& names = ScenarioNames();
  if (std::find(names.begin(), names.end(), config.scenario) == names.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--scenario: unknown scenario \"", config.scenario,
                     "\" (one of echo, enqueue, lifecycle, batched, "
                     "batched_stream, latency, cron, cron_idle, scale)"));
  }
  if (config.target.empty()) {
    return absl::InvalidArgumentError("--target: required (HOST:PORT)");
  }
  if (!(config.seconds > 0) || !(config.warmup_seconds >= 0)) {
    return absl::InvalidArgumentError(
        "--seconds must be > 0 and --warmup-seconds >= 0");
  }
  if (config.concurrency < 1 || config.concurrency > 10000) {
    return absl::InvalidArgumentError("--concurrency: must be 1..10000");
  }
  if (config.batch < 1 || config.batch > 1000) {
    return absl::InvalidArgumentError(
        "--batch: must be 1..1000 (the server's default --max-batch-size)");
  }
  if (config.payload_bytes < 0 || config.channels < 1) {
    return absl::InvalidArgumentError(
        "--payload-bytes must be >= 0 and --channels >= 1");
  }
  if ((config.scenario == "cron_idle" || config.scenario == "scale") &&
      config.daemon_pid <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--daemon-pid: required by --scenario ", config.scenario,
                     " (it reads the daemon's /proc/PID)"));
  }
  if (config.scale_baseline_jobs < 1 ||
      config.scale_jobs < config.scale_baseline_jobs ||
      config.cron_schedules < 1 || config.idle_schedules < 1) {
    return absl::InvalidArgumentError(
        "--scale-jobs >= --scale-baseline-jobs >= 1, --cron-schedules >= 1 "
        "and --idle-schedules >= 1 are required");
  }
  Api api(config);
  const std::string& s = config.scenario;
  if (s == "echo") return std::vector<ScenarioResult>{RunEcho(config, &api)};
  if (s == "enqueue") {
    return std::vector<ScenarioResult>{RunEnqueue(config, &api)};
  }
  if (s == "lifecycle") {
    return std::vector<ScenarioResult>{RunLifecycle(config, &api)};
  }
  if (s == "batched") {
    return std::vector<ScenarioResult>{RunBatched(config, &api)};
  }
  if (s == "batched_stream") {
    return std::vector<ScenarioResult>{RunBatchedStream(config, &api)};
  }
  if (s == "latency") {
    return std::vector<ScenarioResult>{RunLatency(config, &api)};
  }
  if (s == "cron") return std::vector<ScenarioResult>{RunCron(config, &api)};
  if (s == "cron_idle") {
    return std::vector<ScenarioResult>{RunCronIdle(config, &api)};
  }
  return RunScale(config, &api);
}

std::string ToJsonLine(const LoadConfig& config, const ScenarioResult& r) {
  std::string out = absl::StrCat(
      "{\"system\":\"adjutant\",\"scenario\":", JsonString(r.scenario),
      ",\"ops_per_s\":", JsonNumber(r.ops_per_s),
      ",\"p50_ms\":", JsonNumber(r.p50_ms),
      ",\"p99_ms\":", JsonNumber(r.p99_ms),
      ",\"durability\":", JsonString(config.durability),
      ",\"status\":", JsonString(r.status));
  if (!r.message.empty()) {
    absl::StrAppend(&out, ",\"message\":", JsonString(r.message));
  }
  absl::StrAppend(&out, ",\"ops\":", r.ops,
                  ",\"seconds\":", JsonNumber(r.measured_seconds),
                  ",\"concurrency\":", config.concurrency,
                  ",\"payload_bytes\":", config.payload_bytes);
  for (const auto& [key, value] : r.extras) {
    absl::StrAppend(&out, ",", JsonString(key), ":", JsonNumber(value));
  }
  return out + "}";
}

}  // namespace adjutant::bench
