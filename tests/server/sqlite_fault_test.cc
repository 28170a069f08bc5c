// The server on a SQLite store whose disk fails: writes refused with an I/O
// error or "disk full" by a VFS under SQLite (tests/fakes/faulty_sqlite_vfs.h),
// driven through real gRPC. Each refused call answers UNAVAILABLE (I/O
// error) or RESOURCE_EXHAUSTED (disk full) and stores nothing, health turns
// NOT_SERVING, and once the fault clears the same connection works again.
// Also how a consumer parked in Dequeue gets an enqueued job: its lease
// shares the enqueue's commit (JobQueueService::EnqueueThenWake), and so
// shares its fate when the disk refuses it.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "health.grpc.pb.h"
#include "server/long_poll.h"
#include "server/server.h"
#include "storage/sqlite_job_store.h"
#include "tests/fakes/faulty_sqlite_vfs.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {
namespace {

using ::testing::HasSubstr;
using Fault = FaultySqliteVfs::Fault;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

class SqliteFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-fault-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    vfs_.SetFault(Fault::kNone);
    SqliteOptions options;
    options.path = dir_ + "/adjutant.db";
    options.vfs = FaultySqliteVfs::kName;
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
        SqliteJobStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = store->get();

    AdjutantServerConfig config;
    config.listen_address = "127.0.0.1:0";
    config.executor_threads = 2;
    config.health_check_interval = absl::Seconds(1);
    server_ =
        std::make_unique<AdjutantServer>(config, *std::move(store), &clock_);
    ASSERT_TRUE(server_->Start().ok());
    auto channel =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                            grpc::InsecureChannelCredentials());
    stub_ = v1::JobQueue::NewStub(channel);
    health_ = grpc::health::v1::Health::NewStub(channel);
  }

  void TearDown() override {
    vfs_.SetFault(Fault::kNone);
    server_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    // Real time: only a guard against a hung test.
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(60));
    return context;
  }

  static v1::EnqueueRequest Job(const std::string& payload = "p") {
    v1::EnqueueRequest request;
    request.set_queue("q");
    request.set_job_type("t");
    request.set_payload(payload);
    return request;
  }

  grpc::Status Enqueue(const v1::EnqueueRequest& request,
                       std::string* job_id = nullptr) {
    v1::EnqueueResponse response;
    grpc::Status status = stub_->Enqueue(Context().get(), request, &response);
    if (job_id != nullptr) *job_id = response.job_id();
    return status;
  }

  grpc::Status EnqueueBatch(int n, const std::string& payload) {
    v1::EnqueueBatchRequest request;
    for (int i = 0; i < n; ++i) *request.add_jobs() = Job(payload);
    v1::EnqueueBatchResponse response;
    return stub_->EnqueueBatch(Context().get(), request, &response);
  }

  v1::LeasedJob LeaseOne() {
    v1::DequeueRequest request;
    request.set_queue("q");
    request.set_max_jobs(1);
    request.mutable_lease_duration()->set_seconds(60);
    v1::DequeueResponse response;
    grpc::Status status = stub_->Dequeue(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.jobs_size(), 1);
    return response.jobs_size() == 1 ? response.jobs(0) : v1::LeasedJob();
  }

  grpc::Status Ack(const v1::LeasedJob& leased) {
    v1::AckRequest request;
    request.set_job_id(leased.job().job_id());
    request.set_lease_token(leased.lease_token());
    v1::AckResponse response;
    return stub_->Ack(Context().get(), request, &response);
  }

  // Every stored field of every job, and the meta table but for the health
  // probe's counter: equal strings mean nothing changed.
  std::string Snapshot() {
    absl::StatusOr<std::vector<std::string>> jobs =
        store_->QueryForTest("SELECT * FROM jobs ORDER BY seq");
    EXPECT_TRUE(jobs.ok()) << jobs.status();
    absl::StatusOr<std::vector<std::string>> meta = store_->QueryForTest(
        "SELECT * FROM meta WHERE key <> 'health_probes' ORDER BY key");
    EXPECT_TRUE(meta.ok()) << meta.status();
    if (!jobs.ok() || !meta.ok()) return "";
    return absl::StrCat(absl::StrJoin(*jobs, "\n"), "\n--\n",
                        absl::StrJoin(*meta, "\n"));
  }

  int64_t JobCount() {
    absl::StatusOr<std::vector<std::string>> rows =
        store_->QueryForTest("SELECT count(*) FROM jobs");
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() && rows->size() == 1 ? std::stoll((*rows)[0]) : -1;
  }

  // A Dequeue of "q" that waits up to 30 s (on the simulated clock, which
  // the tests below never move: only a job ends it), answered in the
  // background.
  struct Poll {
    grpc::ClientContext context;
    v1::DequeueRequest request;
    v1::DequeueResponse response;
    grpc::Status status;
    absl::Notification done;
  };
  std::unique_ptr<Poll> StartPoll() {
    auto poll = std::make_unique<Poll>();
    poll->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::seconds(60));
    poll->request.set_queue("q");
    poll->request.set_max_jobs(1);
    poll->request.mutable_lease_duration()->set_seconds(60);
    poll->request.mutable_wait()->set_seconds(30);
    Poll* p = poll.get();
    stub_->async()->Dequeue(&p->context, &p->request, &p->response,
                            [p](grpc::Status status) {
                              p->status = std::move(status);
                              p->done.Notify();
                            });
    return poll;
  }

  // See the tests that use it, below.
  void ExpectTheLeaseSharesTheEnqueuesCommit(
      const std::function<std::string()>& leased);

  HealthStatus::ServingStatus Health() {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("adjutant.v1.JobQueue");
    HealthStatus response;
    grpc::Status status = health_->Check(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  // Moves the clock to the next health check and waits for it to finish.
  // First waits for the health thread to be asleep until the next check:
  // a clock moved before it computed its deadline would never reach it.
  void NextHealthCheck() {
    server_->AwaitHealthChecksForTest(health_checks_);
    clock_.Advance(absl::Seconds(1));
    server_->AwaitHealthChecksForTest(++health_checks_);
  }

  FaultySqliteVfs& vfs_ = FaultySqliteVfs::Get();
  SimulatedClock clock_;
  std::string dir_;
  SqliteJobStore* store_ = nullptr;  // owned by server_
  std::unique_ptr<AdjutantServer> server_;
  std::unique_ptr<v1::JobQueue::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  int64_t health_checks_ = 1;  // the loop counts the one it is waiting for
};

TEST_F(SqliteFaultTest, IoErrorAnswersUnavailableAndStoresNothing) {
  ASSERT_TRUE(Enqueue(Job()).ok());
  const std::string before = Snapshot();
  const int64_t refused = vfs_.refused_writes();

  vfs_.SetFault(Fault::kIoError);
  grpc::Status status = Enqueue(Job());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("I/O error"));
  EXPECT_GT(vfs_.refused_writes(), refused) << "the fault was never hit";
  // Reads go on.
  EXPECT_EQ(JobCount(), 1);

  vfs_.SetFault(Fault::kNone);
  EXPECT_EQ(Snapshot(), before);
  std::string id;
  ASSERT_TRUE(Enqueue(Job(), &id).ok());
  EXPECT_EQ(JobCount(), 2);
}

TEST_F(SqliteFaultTest, DiskFullAnswersResourceExhaustedAndStoresNothing) {
  ASSERT_TRUE(Enqueue(Job()).ok());
  const std::string before = Snapshot();

  vfs_.SetFault(Fault::kDiskFull);
  grpc::Status status = Enqueue(Job());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("full"));
  status = EnqueueBatch(3, "p");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  vfs_.SetFault(Fault::kNone);
  EXPECT_EQ(Snapshot(), before);
  ASSERT_TRUE(Enqueue(Job()).ok());
  ASSERT_TRUE(EnqueueBatch(3, "p").ok());
  EXPECT_EQ(JobCount(), 5);
}

// A batch big enough to span many pages, its commit cut after the first
// few page writes (into the WAL): no job of it is stored, and the WAL's
// uncommitted frames are ignored by every later read and write.
TEST_F(SqliteFaultTest, BatchCutMidCommitStoresNone) {
  ASSERT_TRUE(Enqueue(Job()).ok());
  const std::string before = Snapshot();
  const std::string payload(3000, 'x');
  for (int allowed : {1, 2, 5, 12}) {
    for (Fault fault : {Fault::kIoError, Fault::kDiskFull}) {
      SCOPED_TRACE(absl::StrCat("writes allowed ", allowed, ", fault ",
                                static_cast<int>(fault)));
      const int64_t refused = vfs_.refused_writes();
      vfs_.SetFaultAfterWrites(allowed, fault);
      grpc::Status status = EnqueueBatch(40, payload);
      vfs_.SetFault(Fault::kNone);
      EXPECT_EQ(status.error_code(), fault == Fault::kIoError
                                         ? grpc::StatusCode::UNAVAILABLE
                                         : grpc::StatusCode::RESOURCE_EXHAUSTED)
          << status.error_message();
      EXPECT_GT(vfs_.refused_writes(), refused) << "the fault was never hit";
      EXPECT_EQ(Snapshot(), before);
    }
  }
  ASSERT_TRUE(EnqueueBatch(40, payload).ok());
  EXPECT_EQ(JobCount(), 41);
}

TEST_F(SqliteFaultTest, AckRefusedByTheDiskCanBeRetriedWithItsToken) {
  ASSERT_TRUE(Enqueue(Job()).ok());
  const v1::LeasedJob leased = LeaseOne();
  const std::string before = Snapshot();

  for (Fault fault : {Fault::kIoError, Fault::kDiskFull}) {
    vfs_.SetFault(fault);
    grpc::Status status = Ack(leased);
    EXPECT_EQ(status.error_code(), fault == Fault::kIoError
                                       ? grpc::StatusCode::UNAVAILABLE
                                       : grpc::StatusCode::RESOURCE_EXHAUSTED)
        << status.error_message();
    vfs_.SetFault(Fault::kNone);
    EXPECT_EQ(Snapshot(), before);
  }
  ASSERT_TRUE(Ack(leased).ok());
  v1::GetJobRequest request;
  request.set_job_id(leased.job().job_id());
  v1::Job job;
  ASSERT_TRUE(stub_->GetJob(Context().get(), request, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
}

// Every other writing RPC, under each fault: the fault's code, and the
// store exactly as before.
TEST_F(SqliteFaultTest, EveryWritingCallAnswersTheFaultAndChangesNothing) {
  ASSERT_TRUE(Enqueue(Job()).ok());
  ASSERT_TRUE(Enqueue(Job()).ok());
  const v1::LeasedJob leased = LeaseOne();
  const std::string before = Snapshot();

  for (Fault fault : {Fault::kIoError, Fault::kDiskFull}) {
    const grpc::StatusCode want = fault == Fault::kIoError
                                      ? grpc::StatusCode::UNAVAILABLE
                                      : grpc::StatusCode::RESOURCE_EXHAUSTED;
    vfs_.SetFault(fault);
    {
      v1::DequeueRequest request;
      request.set_queue("q");
      request.mutable_lease_duration()->set_seconds(60);
      v1::DequeueResponse response;
      EXPECT_EQ(
          stub_->Dequeue(Context().get(), request, &response).error_code(),
          want);
    }
    {
      v1::NackRequest request;
      request.set_job_id(leased.job().job_id());
      request.set_lease_token(leased.lease_token());
      v1::NackResponse response;
      EXPECT_EQ(stub_->Nack(Context().get(), request, &response).error_code(),
                want);
    }
    {
      v1::ExtendLeaseRequest request;
      request.set_job_id(leased.job().job_id());
      request.set_lease_token(leased.lease_token());
      request.mutable_lease_duration()->set_seconds(120);
      v1::ExtendLeaseResponse response;
      EXPECT_EQ(
          stub_->ExtendLease(Context().get(), request, &response).error_code(),
          want);
    }
    {
      v1::CancelJobRequest request;
      request.set_job_id(leased.job().job_id());
      v1::Job response;
      EXPECT_EQ(
          stub_->CancelJob(Context().get(), request, &response).error_code(),
          want);
    }
    vfs_.SetFault(Fault::kNone);
    EXPECT_EQ(Snapshot(), before);
  }
  // The lease survived every refused call.
  ASSERT_TRUE(Ack(leased).ok());
}

TEST_F(SqliteFaultTest, HealthIsNotServingWhileWritesFail) {
  EXPECT_EQ(Health(), HealthStatus::SERVING);
  for (Fault fault : {Fault::kIoError, Fault::kDiskFull}) {
    SCOPED_TRACE(static_cast<int>(fault));
    vfs_.SetFault(fault);
    EXPECT_FALSE(Enqueue(Job()).ok());
    NextHealthCheck();
    EXPECT_EQ(Health(), HealthStatus::NOT_SERVING);
    // Still failing at the next check: still NOT_SERVING.
    NextHealthCheck();
    EXPECT_EQ(Health(), HealthStatus::NOT_SERVING);

    vfs_.SetFault(Fault::kNone);
    NextHealthCheck();
    EXPECT_EQ(Health(), HealthStatus::SERVING);
    ASSERT_TRUE(Enqueue(Job()).ok());
  }
  EXPECT_EQ(JobCount(), 2);
}

// A write transaction that changes nothing (a reaper round with no expired
// lease, a retention round with nothing due) commits without touching the
// disk: it must not pass for proof that the disk takes writes again.
TEST_F(SqliteFaultTest, AWriteThatChangesNothingDoesNotClearTheTrouble) {
  vfs_.SetFault(Fault::kIoError);
  EXPECT_FALSE(Enqueue(Job()).ok());
  ASSERT_TRUE(store_->ExpireLeases(clock_.Now()).ok());
  ASSERT_TRUE(store_
                  ->PruneFinishedJobs(clock_.Now() - absl::Hours(1),
                                      clock_.Now() - absl::Hours(1), 10)
                  .ok());
  EXPECT_EQ(store_->Ping().code(), absl::StatusCode::kUnavailable);
  vfs_.SetFault(Fault::kNone);
  EXPECT_TRUE(store_->Ping().ok());
  EXPECT_TRUE(store_->Ping().ok());
}

// Without a failed write the health check only reads (no write per check
// on an idle daemon); a write that fails is what makes it probe.
TEST_F(SqliteFaultTest, HealthChecksWriteOnlyAfterAFailedWrite) {
  const int64_t writes = vfs_.writes();
  NextHealthCheck();
  NextHealthCheck();
  EXPECT_EQ(vfs_.writes(), writes);

  vfs_.SetFault(Fault::kIoError);
  EXPECT_FALSE(Enqueue(Job()).ok());
  vfs_.SetFault(Fault::kNone);
  NextHealthCheck();  // probes with a write, which succeeds
  EXPECT_EQ(Health(), HealthStatus::SERVING);
  const int64_t after_probe = vfs_.writes();
  EXPECT_GT(after_probe, writes);
  NextHealthCheck();
  EXPECT_EQ(vfs_.writes(), after_probe);
}

// A consumer parked in Dequeue (or a Work stream parked for jobs) is woken
// as the Enqueue's write is queued, not after its commit: its lease is
// queued behind the enqueue, sees the job, and shares the enqueue's commit
// and fsync. Before, the lease waited for a commit of its own after the
// enqueue's: two fsyncs between an Enqueue and the consumer.
//
// With a consumer parked on "q", enqueues a job there while the group
// before it is held, and checks that the enqueue and the lease then commit
// as one group; `leased` waits for the consumer's job and returns its id.
// The held group is what makes the check deterministic: it shows the early
// wake-up (woken after the commit, the lease could not queue), not
// WriteTogether, which keeps an idle writer from taking the enqueue alone
// (SqliteGroupCommitTest.WriteTogetherKeepsItsCallsInOneGroup).
void SqliteFaultTest::ExpectTheLeaseSharesTheEnqueuesCommit(
    const std::function<std::string()>& leased) {
  absl::Mutex mu;
  std::vector<int> groups;  // guarded by mu
  absl::Notification held, release;
  store_->SetBeforeCommitHookForTest([&](int size) {
    {
      absl::MutexLock lock(&mu);
      groups.push_back(size);
    }
    if (!held.HasBeenNotified()) {
      held.Notify();
      release.WaitForNotification();
    }
  });
  const int64_t commits = store_->CommitsForTest();
  std::thread holder([&] {
    v1::EnqueueRequest other = Job();
    other.set_queue("other");
    EXPECT_TRUE(Enqueue(other).ok());
  });
  held.WaitForNotification();
  std::string id;
  std::thread producer([&] { EXPECT_TRUE(Enqueue(Job(), &id).ok()); });
  // The enqueue, and the woken consumer's lease behind it. (Woken after
  // the commit instead, the lease could not queue while the group is held.)
  const bool both_queued =
      store_->AwaitQueuedWritesForTest(2, absl::Seconds(10));
  release.Notify();
  holder.join();
  producer.join();
  EXPECT_TRUE(both_queued) << "the consumer's lease did not queue before "
                              "the enqueue's commit";
  EXPECT_EQ(leased(), id);
  store_->SetBeforeCommitHookForTest(nullptr);
  absl::MutexLock lock(&mu);
  EXPECT_THAT(groups, ::testing::ElementsAre(1, 2))
      << "the held group, then the enqueue and the lease together";
  EXPECT_EQ(store_->CommitsForTest() - commits, 2);
}

TEST_F(SqliteFaultTest, AParkedDequeuesLeaseSharesTheEnqueuesCommit) {
  server_->long_poll()->AwaitTimerIdleForTest();  // no lease sweep due
  std::unique_ptr<Poll> poll = StartPoll();
  server_->long_poll()->AwaitParkedForTest(1);
  ExpectTheLeaseSharesTheEnqueuesCommit([&]() -> std::string {
    poll->done.WaitForNotification();
    EXPECT_TRUE(poll->status.ok()) << poll->status.error_message();
    EXPECT_EQ(poll->response.jobs_size(), 1);
    return poll->response.jobs_size() == 1
               ? poll->response.jobs(0).job().job_id()
               : "";
  });
}

TEST_F(SqliteFaultTest, AParkedWorkStreamsLeaseSharesTheEnqueuesCommit) {
  server_->long_poll()->AwaitTimerIdleForTest();
  std::unique_ptr<grpc::ClientContext> context = Context();
  auto stream = stub_->Work(context.get());
  v1::WorkRequest start;
  start.mutable_start()->set_queue("q");
  start.mutable_start()->set_capacity(1);
  start.mutable_start()->mutable_lease_duration()->set_seconds(60);
  ASSERT_TRUE(stream->Write(start));
  server_->long_poll()->AwaitParkedForTest(1);
  ExpectTheLeaseSharesTheEnqueuesCommit([&]() -> std::string {
    v1::WorkResponse pushed;
    EXPECT_TRUE(stream->Read(&pushed));
    EXPECT_TRUE(pushed.has_job());
    return pushed.job().job().job_id();
  });
  context->TryCancel();
  stream->Finish().IgnoreError();
}

// The same consumer when the disk refuses that shared commit: both calls
// answer the fault, nothing is stored, and the next Dequeue waits again.
TEST_F(SqliteFaultTest, AParkedConsumerSharesTheFateOfTheEnqueuesCommit) {
  server_->long_poll()->AwaitTimerIdleForTest();
  std::unique_ptr<Poll> poll = StartPoll();
  server_->long_poll()->AwaitParkedForTest(1);
  const std::string before = Snapshot();

  vfs_.SetFault(Fault::kIoError);
  EXPECT_EQ(Enqueue(Job()).error_code(), grpc::StatusCode::UNAVAILABLE);
  poll->done.WaitForNotification();
  EXPECT_EQ(poll->status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(poll->status.error_message(), HasSubstr("I/O error"));
  vfs_.SetFault(Fault::kNone);
  EXPECT_EQ(Snapshot(), before);
  EXPECT_EQ(server_->long_poll()->ParkedCountForTest(), 0);

  std::unique_ptr<Poll> again = StartPoll();
  server_->long_poll()->AwaitParkedForTest(1);
  std::string id;
  ASSERT_TRUE(Enqueue(Job(), &id).ok());
  again->done.WaitForNotification();
  ASSERT_TRUE(again->status.ok()) << again->status.error_message();
  ASSERT_EQ(again->response.jobs_size(), 1);
  EXPECT_EQ(again->response.jobs(0).job().job_id(), id);
}

}  // namespace
}  // namespace adjutant
