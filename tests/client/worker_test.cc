// adjutant::Worker against a real in-process AdjutantServer (SQLite store in
// a temp dir, 127.0.0.1:0) on the real clock: leases must really be
// extended, so durations are short (1 s leases) and every wait is on a
// condition, never a sleep.
#include "client/worker.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/clock.h"
#include "server/server.h"
#include "tests/server/server_test_util.h"

namespace adjutant {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Generous: only a guard against a hung test.
constexpr absl::Duration kGuard = absl::Seconds(60);

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-worker-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    StartServer("127.0.0.1:0");
    ClientOptions options;
    options.target = absl::StrCat("127.0.0.1:", port_);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  void TearDown() override {
    server_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void StartServer(const std::string& address) {
    std::unique_ptr<JobStore> store;
    for (const StoreBackend& backend : AllStoreBackends()) {
      if (backend.name != "Sqlite") continue;
      absl::StatusOr<std::unique_ptr<JobStore>> made = backend.make(dir_);
      ASSERT_TRUE(made.ok()) << made.status();
      store = *std::move(made);
    }
    ASSERT_NE(store, nullptr);
    AdjutantServerConfig config;
    config.listen_address = address;
    config.executor_threads = 4;
    config.limits.default_max_attempts = 5;
    config.shutdown_grace = absl::Seconds(2);
    server_ =
        std::make_unique<AdjutantServer>(config, std::move(store), RealClock());
    absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started;
    port_ = server_->port();
  }

  // Options for a worker on queue "q" with short leases.
  static WorkerOptions Options(int concurrency) {
    WorkerOptions options;
    options.queue = "q";
    options.concurrency = concurrency;
    options.lease_duration = absl::Seconds(1);
    options.poll_wait = absl::Seconds(5);
    options.worker_id = "worker-test";
    return options;
  }

  // Enqueues `n` jobs of `type` in queue "q"; returns their ids.
  std::vector<std::string> EnqueueJobs(const std::string& type, int n,
                                       int max_attempts = 5, int priority = 0) {
    std::vector<std::string> ids;
    v1::EnqueueBatchRequest batch;
    for (int i = 0; i < n; ++i) {
      v1::EnqueueRequest* job = batch.add_jobs();
      job->set_queue("q");
      job->set_job_type(type);
      job->set_payload(absl::StrCat(type, "#", i));
      job->set_max_attempts(max_attempts);
      job->set_priority(priority);
    }
    absl::StatusOr<v1::EnqueueBatchResponse> response =
        client_->EnqueueBatch(batch);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return ids;
    for (const v1::EnqueueResponse& r : response->results()) {
      ids.push_back(r.job_id());
    }
    return ids;
  }

  // Every job of queue "q", all pages.
  std::vector<v1::Job> ListAll() {
    std::vector<v1::Job> jobs;
    v1::ListJobsRequest request;
    request.set_queue("q");
    request.set_page_size(1000);
    do {
      absl::StatusOr<v1::ListJobsResponse> page = client_->ListJobs(request);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      jobs.insert(jobs.end(), page->jobs().begin(), page->jobs().end());
      request.set_page_token(page->next_page_token());
    } while (!request.page_token().empty());
    return jobs;
  }

  v1::Job GetJob(const std::string& id) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    absl::StatusOr<v1::Job> job = client_->GetJob(request);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }

  std::string dir_;
  int port_ = 0;
  std::unique_ptr<AdjutantServer> server_;
  std::unique_ptr<Client> client_;
};

absl::Status Ok(const JobContext&) { return absl::OkStatus(); }

// Records what the handlers did, for the test thread to wait on.
struct Journal {
  absl::Mutex mu;
  std::map<std::string, int> runs ABSL_GUARDED_BY(mu);  // by job id
  int started ABSL_GUARDED_BY(mu) = 0;
  bool release ABSL_GUARDED_BY(mu) = false;

  void Ran(const JobContext& job) {
    absl::MutexLock lock(&mu);
    ++runs[job.job().job_id()];
    ++started;
  }
  bool AwaitStarted(int n) {
    absl::MutexLock lock(&mu);
    auto reached = [this, n]()
                       ABSL_NO_THREAD_SAFETY_ANALYSIS { return started >= n; };
    return mu.AwaitWithTimeout(absl::Condition(&reached), kGuard);
  }
  void AwaitRelease() {
    absl::MutexLock lock(&mu);
    mu.AwaitWithTimeout(absl::Condition(&release), kGuard);
  }
  void Release() {
    absl::MutexLock lock(&mu);
    release = true;
  }
  int Runs(const std::string& id) {
    absl::MutexLock lock(&mu);
    return runs.count(id) ? runs[id] : 0;
  }
  int Started() {
    absl::MutexLock lock(&mu);
    return started;
  }
};

TEST_F(WorkerTest, RegistrationRules) {
  Worker worker(client_.get(), Options(1));
  // Start needs a handler.
  absl::Status status = worker.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;

  Journal journal;
  EXPECT_TRUE(worker
                  .Register("t",
                            [&journal](const JobContext& job) {
                              journal.Ran(job);
                              return absl::OkStatus();
                            })
                  .ok());
  // The same type again is refused, and the first handler is kept.
  status = worker.Register("t", [](const JobContext&) -> absl::Status {
    return absl::InternalError("the replacement must never run");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
  EXPECT_THAT(status.message(), HasSubstr("\"t\""));

  status = worker.Register("", Ok);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("job_type"));
  status = worker.Register("u", nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("handler"));

  ASSERT_TRUE(worker.Start().ok());
  status = worker.Register("v", Ok);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  status = worker.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;

  const std::vector<std::string> ids = EnqueueJobs("t", 1);
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.acked == 1; }, kGuard));
  EXPECT_EQ(journal.Runs(ids[0]), 1);
  EXPECT_EQ(GetJob(ids[0]).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(WorkerTest, StartRejectsBadOptionsNamingThem) {
  struct Case {
    std::string field;
    std::function<void(WorkerOptions*)> spoil;
  };
  const std::vector<Case> cases = {
      {"concurrency", [](WorkerOptions* o) { o->concurrency = 0; }},
      {"concurrency", [](WorkerOptions* o) { o->concurrency = 1001; }},
      {"lease_duration",
       [](WorkerOptions* o) { o->lease_duration = absl::Milliseconds(500); }},
      {"poll_wait",
       [](WorkerOptions* o) { o->poll_wait = absl::ZeroDuration(); }},
      {"poll_wait", [](WorkerOptions* o) { o->poll_wait = absl::Minutes(6); }},
      {"extend_fraction", [](WorkerOptions* o) { o->extend_fraction = 1; }},
      {"extend_fraction", [](WorkerOptions* o) { o->extend_fraction = 0; }},
      {"queue", [](WorkerOptions* o) { o->queue = std::string(129, 'q'); }},
      {"failure_retry_after",
       [](WorkerOptions* o) { o->failure_retry_after = absl::Seconds(-1); }},
      {"retry_max_backoff",
       [](WorkerOptions* o) {
         o->retry_max_backoff = o->retry_initial_backoff / 2;
       }},
  };
  for (const Case& c : cases) {
    WorkerOptions options = Options(1);
    c.spoil(&options);
    Worker worker(client_.get(), options);
    ASSERT_TRUE(worker.Register("t", Ok).ok());
    absl::Status status = worker.Start();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(status.message(), HasSubstr(c.field));
    // Nothing started: registering is still allowed.
    EXPECT_TRUE(worker.Register("t2", Ok).ok()) << c.field;
  }
  // Nothing was leased by any of them.
  EnqueueJobs("t", 1);
  for (const v1::Job& job : ListAll()) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
    EXPECT_EQ(job.attempts(), 0);
  }
}

// Issue 4's acceptance: 8 handlers drain 1 000 jobs, each acked once,
// including jobs that outlive their lease and jobs whose handler throws.
TEST_F(WorkerTest, EightHandlersDrainAThousandJobs) {
  constexpr int kSlow = 4;    // run 2.5 s on a 1 s lease
  constexpr int kFlaky = 10;  // throw on their first attempt
  constexpr int kQuick = 1000 - kSlow - kFlaky;

  WorkerOptions options = Options(8);
  // Keep the retries of the thrown jobs quick.
  options.failure_retry_after = absl::Milliseconds(100);
  Worker worker(client_.get(), options);
  Journal journal;
  std::atomic<int> slow_saw_cancel{0};
  ASSERT_TRUE(worker
                  .Register("quick",
                            [&](const JobContext& job) {
                              journal.Ran(job);
                              return absl::OkStatus();
                            })
                  .ok());
  ASSERT_TRUE(
      worker
          .Register("slow",
                    [&](const JobContext& job) {
                      journal.Ran(job);
                      // The work: 2.5 s, two and a half leases.
                      if (job.AwaitCancelled(absl::Milliseconds(2500))) {
                        ++slow_saw_cancel;
                      }
                      return absl::OkStatus();
                    })
          .ok());
  ASSERT_TRUE(worker
                  .Register("flaky",
                            [&](const JobContext& job) -> absl::Status {
                              journal.Ran(job);
                              if (job.attempt() == 1) {
                                throw std::runtime_error(absl::StrCat(
                                    "flaky failure of ", job.payload()));
                              }
                              return absl::OkStatus();
                            })
                  .ok());

  // The slow ones first (higher priority), so they overlap the rest.
  std::vector<std::string> slow = EnqueueJobs("slow", kSlow, 5, /*priority=*/1);
  std::vector<std::string> flaky = EnqueueJobs("flaky", kFlaky);
  std::vector<std::string> quick = EnqueueJobs("quick", kQuick);
  ASSERT_EQ(slow.size() + flaky.size() + quick.size(), 1000u);

  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.acked == 1000; }, kGuard))
      << "acked " << worker.stats().acked;
  worker.Stop();

  const WorkerStats stats = worker.stats();
  EXPECT_EQ(stats.acked, 1000);
  EXPECT_EQ(stats.nacked, kFlaky);
  EXPECT_EQ(stats.lost, 0);
  EXPECT_EQ(stats.returned, 0);
  EXPECT_EQ(stats.in_hand, 0);
  EXPECT_EQ(stats.leased, 1000 + kFlaky);
  // Each slow job was extended at least twice (at ~0.33 s intervals).
  EXPECT_GE(stats.extended, 2 * kSlow);
  EXPECT_EQ(slow_saw_cancel.load(), 0);

  const std::vector<v1::Job> jobs = ListAll();
  ASSERT_EQ(jobs.size(), 1000u);
  std::map<std::string, v1::Job> by_id;
  for (const v1::Job& job : jobs) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.job_id();
    EXPECT_EQ(job.worker_id(), "worker-test");
    by_id[job.job_id()] = job;
  }
  for (const std::string& id : quick) {
    EXPECT_EQ(by_id[id].attempts(), 1) << id;
    EXPECT_EQ(journal.Runs(id), 1) << id;
  }
  for (const std::string& id : slow) {
    // Never lost its lease although it ran 2.5 leases long.
    EXPECT_EQ(by_id[id].attempts(), 1) << id;
    EXPECT_EQ(journal.Runs(id), 1) << id;
  }
  for (const std::string& id : flaky) {
    EXPECT_EQ(by_id[id].attempts(), 2) << id;
    EXPECT_EQ(journal.Runs(id), 2) << id;
    // The exception's what() was the Nack's error text.
    EXPECT_THAT(by_id[id].last_error(), HasSubstr("flaky failure of flaky#"));
  }
}

TEST_F(WorkerTest, HandlerErrorsAreNackedWithTheirText) {
  WorkerOptions options = Options(2);
  Worker worker(client_.get(), options);
  ASSERT_TRUE(worker
                  .Register("status",
                            [](const JobContext&) {
                              return absl::InternalError("disk on fire");
                            })
                  .ok());
  ASSERT_TRUE(worker
                  .Register("bad-utf8",
                            [](const JobContext&) -> absl::Status {
                              // An exception text need not be UTF-8; the
                              // Nack must still get through.
                              throw std::runtime_error("caf\xC3 \xFF!");
                            })
                  .ok());
  // One attempt each: the Nack makes them DEAD, keeping the text.
  const std::string status_job = EnqueueJobs("status", 1, 1)[0];
  const std::string utf8_job = EnqueueJobs("bad-utf8", 1, 1)[0];
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.nacked == 2; }, kGuard));
  worker.Stop();
  EXPECT_EQ(worker.stats().acked, 0);
  EXPECT_EQ(worker.stats().lost, 0);

  v1::Job job = GetJob(status_job);
  EXPECT_EQ(job.state(), v1::JOB_STATE_DEAD);
  EXPECT_EQ(job.last_error(), "INTERNAL: disk on fire");
  job = GetJob(utf8_job);
  EXPECT_EQ(job.state(), v1::JOB_STATE_DEAD);
  EXPECT_EQ(job.last_error(), "caf? ?!");
}

TEST_F(WorkerTest, HandlerObservesCancellation) {
  Worker worker(client_.get(), Options(2));
  Journal journal;
  std::atomic<bool> saw_cancel{false};
  ASSERT_TRUE(worker
                  .Register("t",
                            [&](const JobContext& job) {
                              journal.Ran(job);
                              saw_cancel = job.AwaitCancelled(kGuard);
                              // Claims success; it must not be acked.
                              return absl::OkStatus();
                            })
                  .ok());
  const std::string id = EnqueueJobs("t", 1)[0];
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(journal.AwaitStarted(1));

  v1::CancelJobRequest cancel;
  cancel.set_job_id(id);
  ASSERT_TRUE(client_->CancelJob(cancel).ok());

  // The next extension (within a third of the lease) finds the lease gone.
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.lost == 1; }, kGuard));
  EXPECT_TRUE(saw_cancel.load());
  EXPECT_EQ(worker.stats().acked, 0);
  EXPECT_EQ(worker.stats().in_hand, 0);
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_CANCELLED);
  worker.Stop();
}

TEST_F(WorkerTest, StopReturnsUnstartedLeasesAtOnce) {
  Worker worker(client_.get(), Options(3));
  Journal journal;
  ASSERT_TRUE(worker
                  .Register("t",
                            [&](const JobContext& job) {
                              journal.Ran(job);
                              return absl::OkStatus();
                            })
                  .ok());
  worker.PauseHandlersForTest(true);
  const std::vector<std::string> ids = EnqueueJobs("t", 3);
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.in_hand == 3; }, kGuard));
  for (const v1::Job& job : ListAll()) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_LEASED);
    EXPECT_EQ(job.attempts(), 1);
  }

  worker.Stop();
  EXPECT_EQ(journal.Started(), 0);
  EXPECT_EQ(worker.stats().returned, 3);
  EXPECT_EQ(worker.stats().in_hand, 0);
  for (const std::string& id : ids) {
    v1::Job job = GetJob(id);
    EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
    EXPECT_EQ(job.attempts(), 1);  // the Nack took nothing more
  }
  // Leasable again right away (retry_after 0), not after a backoff.
  v1::DequeueRequest dequeue;
  dequeue.set_queue("q");
  dequeue.set_max_jobs(10);
  absl::StatusOr<v1::DequeueResponse> leased = client_->Dequeue(dequeue);
  ASSERT_TRUE(leased.ok()) << leased.status();
  EXPECT_EQ(leased->jobs_size(), 3);
  for (const v1::LeasedJob& job : leased->jobs()) {
    EXPECT_EQ(job.job().attempts(), 2);
  }
}

TEST_F(WorkerTest, StopRunsAnUnstartedJobOnItsLastAttempt) {
  Worker worker(client_.get(), Options(2));
  Journal journal;
  ASSERT_TRUE(worker
                  .Register("t",
                            [&](const JobContext& job) {
                              journal.Ran(job);
                              return absl::OkStatus();
                            })
                  .ok());
  worker.PauseHandlersForTest(true);
  // Giving back the max_attempts = 1 job would make it DEAD.
  const std::string last = EnqueueJobs("t", 1, /*max_attempts=*/1)[0];
  const std::string other = EnqueueJobs("t", 1, /*max_attempts=*/5)[0];
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.in_hand == 2; }, kGuard));
  worker.Stop();
  EXPECT_EQ(journal.Runs(last), 1);
  EXPECT_EQ(journal.Runs(other), 0);
  EXPECT_EQ(GetJob(last).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(GetJob(other).state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(worker.stats().acked, 1);
  EXPECT_EQ(worker.stats().returned, 1);
}

TEST_F(WorkerTest, StopFinishesTheJobsInHand) {
  Worker worker(client_.get(), Options(2));
  Journal journal;
  ASSERT_TRUE(worker
                  .Register("t",
                            [&](const JobContext& job) {
                              journal.Ran(job);
                              journal.AwaitRelease();
                              return absl::OkStatus();
                            })
                  .ok());
  const std::vector<std::string> ids = EnqueueJobs("t", 2);
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(journal.AwaitStarted(2));

  std::thread stopper([&worker] { worker.Stop(); });
  // Stop has begun (it waits for the two handlers); let them finish.
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.stopping; }, kGuard));
  journal.Release();
  stopper.join();

  EXPECT_EQ(worker.stats().acked, 2);
  EXPECT_EQ(worker.stats().in_hand, 0);
  for (const std::string& id : ids) {
    EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_SUCCEEDED);
  }
}

TEST_F(WorkerTest, StopDoesNotWaitOutTheLongPoll) {
  WorkerOptions options = Options(1);
  options.poll_wait = absl::Minutes(5);
  Worker worker(client_.get(), options);
  ASSERT_TRUE(worker.Register("t", Ok).ok());
  ASSERT_TRUE(worker.Start().ok());
  const absl::Time start = absl::Now();
  worker.Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  // Then a job enqueued now stays untouched.
  const std::string id = EnqueueJobs("t", 1)[0];
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_PENDING);
}

// A server shutting down ends the worker's long-poll with UNAVAILABLE; the
// worker retries, and carries on with the server that comes back on the
// same address (as it would with another instance behind the address).
TEST_F(WorkerTest, AServerShuttingDownMidPollIsRetriedUntilOneAnswers) {
  WorkerOptions options = Options(1);
  options.poll_wait = absl::Minutes(5);
  options.retry_initial_backoff = absl::Milliseconds(10);
  options.retry_max_backoff = absl::Milliseconds(40);
  absl::Mutex mu;
  std::vector<absl::Status> errors;
  options.on_error = [&](absl::string_view what, const absl::Status& status) {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(what, "Work");
    errors.push_back(status);
  };
  Journal journal;
  // The worker's own client (it outlives the worker).
  const std::unique_ptr<Client> worker_client = std::move(client_);
  Worker worker(worker_client.get(), options);
  ASSERT_TRUE(worker
                  .Register("t",
                            [&journal](const JobContext& job) {
                              journal.Ran(job);
                              return absl::OkStatus();
                            })
                  .ok());
  ASSERT_TRUE(worker.Start().ok());
  server_->long_poll()->AwaitParkedForTest(1);
  server_->Shutdown();
  {
    absl::MutexLock lock(&mu);
    auto one = [&errors]() { return !errors.empty(); };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&one), kGuard));
    EXPECT_EQ(errors[0].code(), absl::StatusCode::kUnavailable) << errors[0];
    EXPECT_THAT(std::string(errors[0].message()),
                ::testing::HasSubstr("server shutting down"));
  }
  server_.reset();
  ASSERT_NO_FATAL_FAILURE(StartServer(absl::StrCat("127.0.0.1:", port_)));
  // The producer on a connection of its own: the worker's channel waits
  // out gRPC's reconnect backoff after the drop. Its own subchannel pool
  // too: channels to one target otherwise share gRPC's subchannel, whose
  // last attempt (the worker's, while no server listened) was refused, and
  // a new call would fail fast on that until the backoff ends.
  grpc::ChannelArguments own_connection;
  own_connection.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::unique_ptr<v1::JobQueue::Stub> producer =
      v1::JobQueue::NewStub(grpc::CreateCustomChannel(
          absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials(),
          own_connection));
  v1::EnqueueRequest request;
  request.set_queue("q");
  request.set_job_type("t");
  request.set_max_attempts(5);
  v1::EnqueueResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  const grpc::Status enqueued = producer->Enqueue(&context, request, &response);
  ASSERT_TRUE(enqueued.ok()) << enqueued.error_message();
  const std::string id = response.job_id();
  ASSERT_TRUE(journal.AwaitStarted(1));
  EXPECT_EQ(journal.Runs(id), 1);
  worker.Stop();
}

TEST_F(WorkerTest, UnreachableServerIsRetriedWithBackoff) {
  // A port nothing listens on any more.
  server_.reset();
  WorkerOptions options = Options(1);
  options.retry_initial_backoff = absl::Milliseconds(10);
  options.retry_max_backoff = absl::Milliseconds(40);
  absl::Mutex mu;
  std::vector<absl::Status> errors;
  options.on_error = [&](absl::string_view what, const absl::Status& status) {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(what, "Work");
    errors.push_back(status);
  };
  Worker worker(client_.get(), options);
  ASSERT_TRUE(worker.Register("t", Ok).ok());
  ASSERT_TRUE(worker.Start().ok());
  {
    absl::MutexLock lock(&mu);
    auto several = [&errors]() { return errors.size() >= 3; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&several), kGuard));
    for (const absl::Status& status : errors) {
      EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    }
  }
  worker.Stop();
}

// The worker takes its jobs from a Work stream and settles them on it: the
// server answers no Dequeue, Ack or Nack RPC.
TEST_F(WorkerTest, JobsComeFromTheWorkStreamAndAreSettledOnIt) {
  WorkerOptions options = Options(4);
  options.failure_retry_after = absl::ZeroDuration();
  Worker worker(client_.get(), options);
  ASSERT_TRUE(worker
                  .Register("t",
                            [](const JobContext& job) -> absl::Status {
                              if (job.attempt() == 1 &&
                                  absl::EndsWith(job.payload(), "#0")) {
                                return absl::InternalError("first try fails");
                              }
                              return absl::OkStatus();
                            })
                  .ok());
  const std::vector<std::string> ids = EnqueueJobs("t", 20);
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.acked == 20; }, kGuard));
  worker.Stop();
  const WorkerStats stats = worker.stats();
  EXPECT_EQ(stats.nacked, 1);
  EXPECT_EQ(stats.lost, 0);
  EXPECT_GE(stats.streams, 1);
  EXPECT_FALSE(stats.polling);
  for (const std::string& id : ids) {
    EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_SUCCEEDED);
  }
  const std::string metrics = server_->metrics()->registry()->Render();
  EXPECT_THAT(metrics, HasSubstr("adjutant_jobs_acked_total{queue=\"q\"} 20"));
  EXPECT_THAT(metrics, HasSubstr("adjutant_jobs_nacked_total{queue=\"q\"} 1"));
  EXPECT_THAT(metrics,
              HasSubstr("adjutant_rpcs_total{method=\"adjutant.v1.JobQueue/"
                        "Work\",code=\"OK\"}"));
  for (const char* rpc : {"Dequeue", "Ack\"", "Nack"}) {
    EXPECT_THAT(
        metrics,
        Not(HasSubstr(absl::StrCat("method=\"adjutant.v1.JobQueue/", rpc))))
        << rpc;
  }
}

// A daemon older than the Work RPC: the methods the Worker needs besides it,
// forwarded to the real server; Work (like every method not overridden)
// answers UNIMPLEMENTED.
class ServerWithoutWork final : public v1::JobQueue::CallbackService {
 public:
  explicit ServerWithoutWork(std::shared_ptr<grpc::Channel> backend)
      : stub_(v1::JobQueue::NewStub(backend)) {}

#define ADJUTANT_FORWARD(Method, Request, Response)                         \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* context,    \
                                   const v1::Request* request,              \
                                   v1::Response* response) override {       \
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();          \
    /* The deadline and a cancellation of the call reach the backend. */    \
    grpc::ClientContext* client_context =                                   \
        grpc::ClientContext::FromCallbackServerContext(*context).release(); \
    stub_->async()->Method(client_context, request, response,               \
                           [reactor, client_context](grpc::Status status) { \
                             delete client_context;                         \
                             reactor->Finish(status);                       \
                           });                                              \
    return reactor;                                                         \
  }
  ADJUTANT_FORWARD(Dequeue, DequeueRequest, DequeueResponse)
  ADJUTANT_FORWARD(Ack, AckRequest, AckResponse)
  ADJUTANT_FORWARD(Nack, NackRequest, NackResponse)
  ADJUTANT_FORWARD(ExtendLease, ExtendLeaseRequest, ExtendLeaseResponse)
#undef ADJUTANT_FORWARD

 private:
  std::unique_ptr<v1::JobQueue::Stub> stub_;
};

TEST_F(WorkerTest, AServerWithoutWorkIsLongPolledWithDequeue) {
  ServerWithoutWork service(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  grpc::ServerBuilder builder;
  int old_port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &old_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> old_server = builder.BuildAndStart();
  ASSERT_NE(old_server, nullptr);
  ClientOptions client_options;
  client_options.target = absl::StrCat("127.0.0.1:", old_port);
  absl::StatusOr<std::unique_ptr<Client>> old_client =
      Client::Create(client_options);
  ASSERT_TRUE(old_client.ok()) << old_client.status();

  WorkerOptions options = Options(2);
  absl::Mutex mu;
  std::vector<std::string> errors;
  options.on_error = [&](absl::string_view what, const absl::Status& status) {
    absl::MutexLock lock(&mu);
    errors.push_back(absl::StrCat(what, ": ", status.ToString()));
  };
  Worker worker(old_client->get(), options);
  ASSERT_TRUE(worker.Register("t", Ok).ok());
  const std::vector<std::string> ids = EnqueueJobs("t", 5);
  ASSERT_TRUE(worker.Start().ok());
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.acked == 5; }, kGuard));
  worker.Stop();
  old_server->Shutdown();
  const WorkerStats stats = worker.stats();
  EXPECT_TRUE(stats.polling);
  EXPECT_EQ(stats.streams, 1);
  for (const std::string& id : ids) {
    EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_SUCCEEDED);
  }
  absl::MutexLock lock(&mu);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_THAT(errors[0], HasSubstr("UNIMPLEMENTED"));
  const std::string metrics = server_->metrics()->registry()->Render();
  EXPECT_THAT(metrics, HasSubstr("method=\"adjutant.v1.JobQueue/Dequeue\""));
}

}  // namespace
}  // namespace adjutant
