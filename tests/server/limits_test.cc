// The limits against overload through a real gRPC server on 127.0.0.1:0
// (a simulated clock, the memory and SQLite stores): the per-queue pending
// limit, the long-poll limit, the lease limit, and clients that vanish or
// never read their answers.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/convert.h"
#include "server/metrics.h"
#include "server/server.h"
#include "storage/memory_job_store.h"
#include "storage/sqlite_job_store.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kMaxPending = 3;
constexpr int kMaxLongPolls = 4;
constexpr int kExecutorThreads = 2;

google::protobuf::Duration D(absl::Duration d) {
  google::protobuf::Duration out;
  ToProto(d, &out);
  return out;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  // Real time: only a guard against a hung test.
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(60));
  return context;
}

v1::DequeueRequest PollRequest(const std::string& queue, absl::Duration wait,
                               absl::Duration lease = absl::Seconds(30)) {
  v1::DequeueRequest request;
  request.set_queue(queue);
  *request.mutable_wait() = D(wait);
  *request.mutable_lease_duration() = D(lease);
  return request;
}

// A Dequeue whose caller is stuck: started on a completion queue that
// nobody reads, so the caller never looks at the answer. The call still
// goes out and is answered at the transport.
class StuckDequeue {
 public:
  StuckDequeue(v1::JobQueue::Stub* stub, const v1::DequeueRequest& request) {
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(60));
    reader_ = stub->AsyncDequeue(&context_, request, &cq_);
    reader_->Finish(&response_, &status_, this);
  }
  ~StuckDequeue() {
    // The test is over: collect the answer so that the queue can close.
    context_.TryCancel();
    void* tag;
    bool ok;
    cq_.Next(&tag, &ok);
    cq_.Shutdown();
    while (cq_.Next(&tag, &ok)) {
    }
  }

 private:
  grpc::ClientContext context_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::DequeueResponse>> reader_;
  v1::DequeueResponse response_;
  grpc::Status status_;
};

// Counts the calls that finished, for a test that waits for whichever of
// several finishes first.
class FinishedCalls {
 public:
  void Add() {
    absl::MutexLock l(&mu_);
    ++n_;
  }
  void AwaitAtLeast(int n) {
    absl::MutexLock l(&mu_);
    auto enough = [this, n]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return n_ >= n; };
    mu_.Await(absl::Condition(&enough));
  }

 private:
  absl::Mutex mu_;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
};

// A Dequeue running on its own thread; counted in `finished` (if given)
// once answered.
class AsyncDequeue {
 public:
  AsyncDequeue(v1::JobQueue::Stub* stub, v1::DequeueRequest request,
               FinishedCalls* finished = nullptr) {
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(60));
    thread_ = std::thread([this, stub, request, finished] {
      status_ = stub->Dequeue(&context_, request, &response_);
      done_.store(true);
      if (finished != nullptr) finished->Add();
    });
  }
  ~AsyncDequeue() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  void Cancel() { context_.TryCancel(); }
  // Answered (then Join returns at once).
  bool done() const { return done_.load(); }
  const grpc::Status& status() const { return status_; }
  const v1::DequeueResponse& response() const { return response_; }

 private:
  grpc::ClientContext context_;
  grpc::Status status_;
  v1::DequeueResponse response_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

class LimitsTest : public ::testing::TestWithParam<std::string> {
 public:
  static std::string Name(const ::testing::TestParamInfo<std::string>& info) {
    return info.param;
  }

 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-limits-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    std::unique_ptr<JobStore> store;
    if (GetParam() == "Memory") {
      store = std::make_unique<MemoryJobStore>(BackoffPolicy(), kMaxPending);
    } else {
      SqliteOptions options;
      options.path = dir_ + "/adjutant.db";
      options.max_pending_per_queue = kMaxPending;
      absl::StatusOr<std::unique_ptr<SqliteJobStore>> opened =
          SqliteJobStore::Open(options);
      ASSERT_TRUE(opened.ok()) << opened.status();
      store = *std::move(opened);
    }
    store_ = store.get();
    AdjutantServerConfig config;
    config.listen_address = "127.0.0.1:0";
    config.executor_threads = kExecutorThreads;
    config.limits.max_long_polls = kMaxLongPolls;
    config.limits.max_lease_duration = absl::Hours(1);
    server_ =
        std::make_unique<AdjutantServer>(config, std::move(store), &clock_);
    absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started;
    channel_ = NewChannel();
    stub_ = v1::JobQueue::NewStub(channel_);
    server_->long_poll()->AwaitTimerIdleForTest();
  }

  void TearDown() override {
    stub_.reset();
    channel_.reset();
    server_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // A channel of its own (a separate connection), as another client has.
  std::shared_ptr<grpc::Channel> NewChannel() {
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    return grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", server_->port()),
        grpc::InsecureChannelCredentials(), args);
  }

  grpc::Status Enqueue(const std::string& queue, std::string* id = nullptr) {
    v1::EnqueueRequest request;
    request.set_queue(queue);
    request.set_job_type("t");
    v1::EnqueueResponse response;
    grpc::Status status = stub_->Enqueue(Context().get(), request, &response);
    if (id != nullptr) *id = response.job_id();
    return status;
  }

  int64_t JobsIn(const std::string& queue) {
    v1::ListJobsRequest request;
    request.set_queue(queue);
    request.set_page_size(1000);
    v1::ListJobsResponse response;
    EXPECT_TRUE(stub_->ListJobs(Context().get(), request, &response).ok());
    return response.jobs_size();
  }

  SimulatedClock clock_;
  std::string dir_;
  JobStore* store_ = nullptr;  // owned by server_
  std::unique_ptr<AdjutantServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobQueue::Stub> stub_;
};

TEST_P(LimitsTest, EnqueuePastThePendingLimitIsResourceExhaustedNamingIt) {
  for (int i = 0; i < kMaxPending; ++i) ASSERT_TRUE(Enqueue("q").ok());
  grpc::Status refused = Enqueue("q");
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(
      refused.error_message(),
      AllOf(HasSubstr("queue \"q\""), HasSubstr("holds 3 pending"),
            HasSubstr("limit of 3"), HasSubstr("--max-pending-per-queue")));
  v1::EnqueueBatchRequest batch;
  batch.add_jobs()->set_queue("q");
  batch.add_jobs()->set_queue("r");
  for (auto& job : *batch.mutable_jobs()) job.set_job_type("t");
  v1::EnqueueBatchResponse response;
  grpc::Status batch_status =
      stub_->EnqueueBatch(Context().get(), batch, &response);
  EXPECT_EQ(batch_status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Nothing stored, not even the batch's job for the other queue.
  EXPECT_EQ(JobsIn("q"), kMaxPending);
  EXPECT_EQ(JobsIn("r"), 0);
  EXPECT_TRUE(Enqueue("r").ok()) << "each queue has its own count";
}

TEST_P(LimitsTest, AMessageOverTheLimitIsRefusedByGrpcAndStoresNothing) {
  // The default --max-message-bytes (16 MiB): a larger request is refused
  // by gRPC before any handler runs.
  v1::EnqueueRequest request;
  request.set_queue("big");
  request.set_job_type("t");
  request.set_payload(std::string(RequestLimits().max_message_bytes + 1, 'x'));
  v1::EnqueueResponse response;
  grpc::Status refused = stub_->Enqueue(Context().get(), request, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              HasSubstr("Received message larger than max"));
  EXPECT_EQ(JobsIn("big"), 0);
}

TEST_P(LimitsTest, LongPollsPastTheLimitAreRefusedButDequeueWithoutWaitWorks) {
  std::vector<std::unique_ptr<AsyncDequeue>> polls;
  for (int i = 0; i < kMaxLongPolls; ++i) {
    polls.push_back(std::make_unique<AsyncDequeue>(
        stub_.get(), PollRequest("q", absl::Minutes(1))));
  }
  server_->long_poll()->AwaitParkedForTest(kMaxLongPolls);
  v1::DequeueResponse response;
  grpc::Status refused = stub_->Dequeue(
      Context().get(), PollRequest("q", absl::Seconds(5)), &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              AllOf(HasSubstr("wait"), HasSubstr("--max-long-polls")));
  // Without a wait, a Dequeue takes no slot.
  v1::DequeueRequest no_wait;
  no_wait.set_queue("q");
  EXPECT_TRUE(stub_->Dequeue(Context().get(), no_wait, &response).ok());
  // A finished long-poll gives its slot back (once gRPC is done with the
  // call, just after the client has its answer: poll for that).
  polls[0]->Cancel();
  polls[0]->Join();
  server_->long_poll()->AwaitParkedForTest(kMaxLongPolls - 1);
  bool accepted = false;
  for (int i = 0; i < 500 && !accepted; ++i) {
    v1::DequeueRequest request = PollRequest("q", absl::Seconds(5));
    auto context = Context();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(200));
    grpc::Status status = stub_->Dequeue(context.get(), request, &response);
    accepted = status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED;
  }
  EXPECT_TRUE(accepted);
  for (auto& poll : polls) poll->Cancel();
}

// A Work stream waits for jobs for as long as it is open: it takes a
// long-poll slot like a Dequeue with a wait, and gives it back when it ends.
TEST_P(LimitsTest, WorkStreamsTakeLongPollSlots) {
  std::vector<std::unique_ptr<AsyncDequeue>> polls;
  for (int i = 0; i < kMaxLongPolls - 1; ++i) {
    polls.push_back(std::make_unique<AsyncDequeue>(
        stub_.get(), PollRequest("q", absl::Minutes(1))));
  }
  v1::WorkRequest start;
  start.mutable_start()->set_queue("q");
  start.mutable_start()->set_capacity(1);
  *start.mutable_start()->mutable_lease_duration() = D(absl::Seconds(30));
  grpc::ClientContext work_context;
  work_context.set_deadline(std::chrono::system_clock::now() +
                            std::chrono::seconds(60));
  auto work = stub_->Work(&work_context);
  ASSERT_TRUE(work->Write(start));
  server_->long_poll()->AwaitParkedForTest(kMaxLongPolls);

  // Every slot is taken: another stream, or a Dequeue with a wait, is
  // refused.
  grpc::ClientContext refused_context;
  refused_context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::seconds(20));
  auto refused = stub_->Work(&refused_context);
  refused->Write(start);  // may fail: the server may have ended it already
  v1::WorkResponse response;
  EXPECT_FALSE(refused->Read(&response));
  grpc::Status status = refused->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(),
              AllOf(HasSubstr("Work streams"), HasSubstr("--max-long-polls")));
  v1::DequeueResponse dequeued;
  status = stub_->Dequeue(Context().get(), PollRequest("q", absl::Seconds(5)),
                          &dequeued);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  // The stream ends: its slot is free again (once gRPC is done with the
  // call, just after the client has its status: poll for that).
  work->WritesDone();
  while (work->Read(&response)) {
  }
  ASSERT_TRUE(work->Finish().ok());
  bool accepted = false;
  for (int i = 0; i < 500 && !accepted; ++i) {
    auto context = Context();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(200));
    status = stub_->Dequeue(context.get(), PollRequest("q", absl::Seconds(5)),
                            &dequeued);
    accepted = status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED;
  }
  EXPECT_TRUE(accepted);
  for (auto& poll : polls) poll->Cancel();
}

TEST_P(LimitsTest, LeaseDurationAboveTheLimitIsInvalidNamingFieldAndFlag) {
  std::string id;
  ASSERT_TRUE(Enqueue("q", &id).ok());
  v1::DequeueRequest request;
  request.set_queue("q");
  *request.mutable_lease_duration() = D(absl::Hours(2));
  v1::DequeueResponse response;
  grpc::Status status = stub_->Dequeue(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              AllOf(HasSubstr("lease_duration"), HasSubstr("1h"),
                    HasSubstr("--max-lease-duration")));
  EXPECT_EQ(store_->GetJob(id)->state, JobState::kPending) << "not leased";
  *request.mutable_lease_duration() = D(absl::Hours(1));
  ASSERT_TRUE(stub_->Dequeue(Context().get(), request, &response).ok());
  ASSERT_EQ(response.jobs_size(), 1);
  v1::ExtendLeaseRequest extend;
  extend.set_job_id(response.jobs(0).job().job_id());
  extend.set_lease_token(response.jobs(0).lease_token());
  *extend.mutable_lease_duration() = D(absl::Hours(1) + absl::Seconds(1));
  v1::ExtendLeaseResponse extended;
  status = stub_->ExtendLease(Context().get(), extend, &extended);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), AllOf(HasSubstr("lease_duration"),
                                            HasSubstr("--max-lease-duration")));
}

// With many calls parked on a queue, one new job costs one store attempt,
// not one per waiter; the longest parked call gets it.
TEST_P(LimitsTest, OneJobWakesOneWaiterTheLongestParked) {
  constexpr int kWaiters = kMaxLongPolls - 1;
  std::vector<std::unique_ptr<AsyncDequeue>> polls;
  for (int i = 0; i < kWaiters; ++i) {
    polls.push_back(std::make_unique<AsyncDequeue>(
        stub_.get(), PollRequest("q", absl::Minutes(1))));
    server_->long_poll()->AwaitParkedForTest(i + 1);
  }
  Histogram* dequeues = server_->metrics()->StoreWriteDuration("dequeue");
  const uint64_t before = dequeues->Read().count;
  std::string id;
  ASSERT_TRUE(Enqueue("q", &id).ok());
  polls[0]->Join();
  ASSERT_TRUE(polls[0]->status().ok());
  ASSERT_EQ(polls[0]->response().jobs_size(), 1);
  EXPECT_EQ(polls[0]->response().jobs(0).job().job_id(), id);
  server_->long_poll()->AwaitParkedForTest(kWaiters - 1);
  EXPECT_EQ(dequeues->Read().count - before, 1u)
      << "the other waiters were woken for nothing";
  // A batch of two wakes the next two.
  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < 2; ++i) {
    v1::EnqueueRequest* job = batch.add_jobs();
    job->set_queue("q");
    job->set_job_type("t");
  }
  v1::EnqueueBatchResponse response;
  ASSERT_TRUE(stub_->EnqueueBatch(Context().get(), batch, &response).ok());
  for (int i = 1; i < kWaiters; ++i) {
    polls[i]->Join();
    ASSERT_TRUE(polls[i]->status().ok());
    EXPECT_EQ(polls[i]->response().jobs_size(), 1);
  }
}

// With a waiter filtered on job types parked on the queue, a job wakes
// every waiter that admits it: a woken call takes the best job its filter
// admits, not necessarily the one it was woken for, so a limited wake-up
// could leave a job that no woken call takes while a parked call could.
TEST_P(LimitsTest, WithTypedWaitersEveryAdmittingWaiterIsWoken) {
  std::vector<std::unique_ptr<AsyncDequeue>> polls;
  FinishedCalls finished;
  v1::DequeueRequest typed = PollRequest("q", absl::Minutes(1));
  typed.add_job_types("b");
  for (const v1::DequeueRequest& request :
       {PollRequest("q", absl::Minutes(1)), typed,
        PollRequest("q", absl::Minutes(1))}) {
    polls.push_back(
        std::make_unique<AsyncDequeue>(stub_.get(), request, &finished));
    server_->long_poll()->AwaitParkedForTest(static_cast<int>(polls.size()));
  }
  Histogram* dequeues = server_->metrics()->StoreWriteDuration("dequeue");
  const uint64_t before = dequeues->Read().count;
  std::string id;
  ASSERT_TRUE(Enqueue("q", &id).ok());  // type "t": the untyped two admit it
  // Both untyped waiters are woken and look: whichever looks first takes
  // the job, the other finds nothing and parks again.
  finished.AwaitAtLeast(1);
  server_->long_poll()->AwaitParkedForTest(2);
  EXPECT_EQ(dequeues->Read().count - before, 2u);
  ASSERT_FALSE(polls[1]->done()) << "the typed waiter does not admit it";
  ASSERT_NE(polls[0]->done(), polls[2]->done());
  const int winner = polls[0]->done() ? 0 : 2;
  polls[winner]->Join();
  ASSERT_TRUE(polls[winner]->status().ok());
  ASSERT_EQ(polls[winner]->response().jobs_size(), 1);
  EXPECT_EQ(polls[winner]->response().jobs(0).job().job_id(), id);
  // Two jobs of type "b" end the other two calls (each admits them).
  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < 2; ++i) {
    v1::EnqueueRequest* job = batch.add_jobs();
    job->set_queue("q");
    job->set_job_type("b");
  }
  v1::EnqueueBatchResponse response;
  ASSERT_TRUE(stub_->EnqueueBatch(Context().get(), batch, &response).ok());
  for (int i : {1, 2 - winner}) {
    polls[i]->Join();
    ASSERT_TRUE(polls[i]->status().ok());
    EXPECT_EQ(polls[i]->response().jobs_size(), 1) << i;
  }
}

// A worker that leased a job and vanished (its connection gone) does not
// keep the job past the lease: the reaper gives it to the next worker, and
// the vanished worker's token no longer acks.
TEST_P(LimitsTest, AVanishedWorkerDoesNotHoldItsJobPastTheLease) {
  std::string id;
  ASSERT_TRUE(Enqueue("q", &id).ok());
  std::string token;
  {
    std::shared_ptr<grpc::Channel> channel = NewChannel();
    auto stub = v1::JobQueue::NewStub(channel);
    v1::DequeueResponse response;
    ASSERT_TRUE(
        stub->Dequeue(Context().get(),
                      PollRequest("q", absl::ZeroDuration(), absl::Seconds(10)),
                      &response)
            .ok());
    ASSERT_EQ(response.jobs_size(), 1);
    token = response.jobs(0).lease_token();
  }  // the worker's channel closes
  // Another worker waits; the lease ends on the clock, not on a socket.
  AsyncDequeue next(stub_.get(), PollRequest("q", absl::Minutes(1)));
  server_->long_poll()->AwaitParkedForTest(1);
  clock_.Advance(absl::Seconds(11));
  next.Join();
  ASSERT_TRUE(next.status().ok()) << next.status().error_message();
  ASSERT_EQ(next.response().jobs_size(), 1);
  EXPECT_EQ(next.response().jobs(0).job().job_id(), id);
  EXPECT_EQ(next.response().jobs(0).job().attempts(), 2);
  v1::AckRequest ack;
  ack.set_job_id(id);
  ack.set_lease_token(token);
  v1::AckResponse acked;
  EXPECT_EQ(stub_->Ack(Context().get(), ack, &acked).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// Callers that never read their answers (more of them than the executor
// has threads) hold no thread: others are served, and the jobs the stuck
// calls leased come back when their leases end.
TEST_P(LimitsTest, StuckCallersBlockNeitherOthersNorTheirJobs) {
  constexpr int kStuck = kMaxLongPolls - 1;  // > kExecutorThreads
  static_assert(kStuck > kExecutorThreads);
  std::shared_ptr<grpc::Channel> stuck_channel = NewChannel();
  auto stuck_stub = v1::JobQueue::NewStub(stuck_channel);
  std::vector<std::unique_ptr<StuckDequeue>> stuck;
  for (int i = 0; i < kStuck; ++i) {
    stuck.push_back(std::make_unique<StuckDequeue>(
        stuck_stub.get(),
        PollRequest("q", absl::Minutes(1), absl::Seconds(10))));
  }
  server_->long_poll()->AwaitParkedForTest(kStuck);
  // The stuck calls take these jobs and their answers go unread.
  std::set<std::string> ids;
  for (int i = 0; i < kMaxPending; ++i) {
    std::string id;
    ASSERT_TRUE(Enqueue("q", &id).ok());
    ids.insert(id);
  }
  server_->long_poll()->AwaitParkedForTest(kStuck - kMaxPending);
  // Others are served at once: another queue, reads, a Dequeue.
  ASSERT_TRUE(Enqueue("other").ok());
  v1::DequeueRequest other;
  other.set_queue("other");
  v1::DequeueResponse response;
  ASSERT_TRUE(stub_->Dequeue(Context().get(), other, &response).ok());
  EXPECT_EQ(response.jobs_size(), 1);
  for (const std::string& id : ids) {
    EXPECT_EQ(store_->GetJob(id)->state, JobState::kLeased);
  }
  // The leases end on the clock; a worker that does read gets every job.
  clock_.Advance(absl::Seconds(11));
  server_->long_poll()->AwaitTimerIdleForTest();
  v1::DequeueRequest all = PollRequest("q", absl::ZeroDuration());
  all.set_max_jobs(10);
  ASSERT_TRUE(stub_->Dequeue(Context().get(), all, &response).ok());
  std::set<std::string> again;
  for (const auto& leased : response.jobs()) {
    again.insert(leased.job().job_id());
    EXPECT_EQ(leased.job().attempts(), 2);
  }
  EXPECT_EQ(again, ids);
}

INSTANTIATE_TEST_SUITE_P(Stores, LimitsTest,
                         ::testing::Values("Memory", "Sqlite"),
                         LimitsTest::Name);

}  // namespace
}  // namespace adjutant
