// The JobQueue service through real gRPC (generated stubs against an
// in-process AdjutantServer on 127.0.0.1:0), on every store backend, with a
// SimulatedClock: each point of issue 2's "Semantics".
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/convert.h"
#include "server/long_poll.h"
#include "storage/memory_job_store.h"
#include "tests/server/server_test_util.h"

namespace adjutant {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

absl::Time T(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

google::protobuf::Duration D(absl::Duration d) {
  google::protobuf::Duration out;
  ToProto(d, &out);
  return out;
}

// A Dequeue running on its own thread, for long-polls.
class AsyncDequeue {
 public:
  AsyncDequeue(v1::JobQueue::Stub* stub, v1::DequeueRequest request) {
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(60));
    thread_ = std::thread([this, stub, request] {
      status_ = stub->Dequeue(&context_, request, &response_);
      returned_at_ = std::chrono::steady_clock::now();
      done_.store(true);
    });
  }
  ~AsyncDequeue() {
    if (thread_.joinable()) thread_.join();
  }

  // Blocks until the call returns.
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  bool done() const { return done_.load(); }
  void Cancel() { context_.TryCancel(); }
  const grpc::Status& status() const { return status_; }
  const v1::DequeueResponse& response() const { return response_; }
  std::chrono::steady_clock::time_point returned_at() const {
    return returned_at_;
  }

 private:
  grpc::ClientContext context_;
  grpc::Status status_;
  v1::DequeueResponse response_;
  std::chrono::steady_clock::time_point returned_at_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

v1::DequeueRequest PollRequest(const std::string& queue, absl::Duration wait) {
  v1::DequeueRequest request;
  request.set_queue(queue);
  *request.mutable_wait() = D(wait);
  *request.mutable_lease_duration() = D(absl::Seconds(30));
  return request;
}

class JobQueueTest : public ServerTest {
 protected:
  // A job fired by a schedule, stored as the scheduler would store it.
  std::string EnqueueCronJob(const std::string& queue, int32_t max_attempts) {
    NewJob job;
    job.queue = queue;
    job.type = "tick";
    job.max_attempts = max_attempts;
    job.cron_name = "nightly";
    job.cron_tick_time = clock_.Now();
    absl::StatusOr<std::vector<EnqueueResult>> r =
        store_->Enqueue({job}, clock_.Now());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->front().job_id : "";
  }

  std::vector<Job> Finished() {
    absl::MutexLock l(&finished_mu_);
    return finished_;
  }

  grpc::Status Nack(const std::string& job_id, const std::string& token,
                    v1::NackResponse* response, const std::string& error = "",
                    std::optional<absl::Duration> retry_after = std::nullopt,
                    bool dead = false) {
    v1::NackRequest request;
    request.set_job_id(job_id);
    request.set_lease_token(token);
    request.set_error(error);
    if (retry_after) *request.mutable_retry_after() = D(*retry_after);
    request.set_dead(dead);
    return stub_->Nack(Context().get(), request, response);
  }

  grpc::Status Cancel(const std::string& job_id, v1::Job* out) {
    v1::CancelJobRequest request;
    request.set_job_id(job_id);
    return stub_->CancelJob(Context().get(), request, out);
  }

  grpc::Status Requeue(const std::string& job_id, v1::Job* out) {
    v1::RequeueJobRequest request;
    request.set_job_id(job_id);
    return stub_->RequeueJob(Context().get(), request, out);
  }
};

// ---- At-least-once delivery ------------------------------------------------

TEST_P(JobQueueTest, DequeueLeasesTheJobWithAFreshToken) {
  v1::EnqueueRequest request;
  request.set_queue("emails");
  request.set_job_type("send");
  request.set_payload("hello");
  request.set_max_attempts(5);
  const std::string id = Enqueue(request);

  v1::Job pending = GetJob(id);
  EXPECT_EQ(pending.state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(pending.attempts(), 0);
  EXPECT_EQ(pending.max_attempts(), 5);
  EXPECT_EQ(T(pending.run_at()), clock_.Now());
  EXPECT_FALSE(pending.has_lease_expires_at());

  std::vector<v1::LeasedJob> leased = Lease("emails", absl::Seconds(10));
  ASSERT_EQ(leased.size(), 1u);
  EXPECT_EQ(leased[0].job().job_id(), id);
  EXPECT_EQ(leased[0].job().state(), v1::JOB_STATE_LEASED);
  EXPECT_EQ(leased[0].job().attempts(), 1);
  EXPECT_EQ(leased[0].job().payload(), "hello");
  EXPECT_EQ(leased[0].job().job_type(), "send");
  EXPECT_GE(leased[0].lease_token().size(), 32u);
  EXPECT_EQ(T(leased[0].lease_expires_at()), clock_.Now() + absl::Seconds(10));
  EXPECT_EQ(T(GetJob(id).lease_expires_at()), clock_.Now() + absl::Seconds(10));
}

TEST_P(JobQueueTest, EmptyQueueMeansDefaultAndMaxAttemptsZeroTheDefault) {
  const std::string id = Enqueue(v1::EnqueueRequest());
  v1::Job job = GetJob(id);
  EXPECT_EQ(job.queue(), "default");
  EXPECT_EQ(job.max_attempts(), kDefaultMaxAttempts);
  std::vector<v1::LeasedJob> leased = Lease("", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  EXPECT_EQ(leased[0].job().job_id(), id);
}

TEST_P(JobQueueTest, ALeaseIsExclusiveUntilItExpiresAndEachCountsAnAttempt) {
  v1::EnqueueRequest request;
  request.set_queue("q");
  request.set_max_attempts(2);
  const std::string id = Enqueue(request);

  std::vector<v1::LeasedJob> first = Lease("q", absl::Seconds(10));
  ASSERT_EQ(first.size(), 1u);
  EXPECT_THAT(Lease("q", absl::Seconds(10)), IsEmpty());  // one at a time

  clock_.Advance(absl::Seconds(10));
  std::vector<v1::LeasedJob> second = Lease("q", absl::Seconds(10));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].job().job_id(), id);
  EXPECT_EQ(second[0].job().attempts(), 2);
  EXPECT_NE(second[0].lease_token(), first[0].lease_token());

  // Attempts used up: the expired lease makes it DEAD.
  clock_.Advance(absl::Seconds(10));
  SettleTimer();
  v1::Job dead = GetJob(id);
  EXPECT_EQ(dead.state(), v1::JOB_STATE_DEAD);
  EXPECT_EQ(dead.attempts(), 2);
  EXPECT_EQ(dead.last_error(), "lease expired");
  EXPECT_THAT(Lease("q", absl::Seconds(10)), IsEmpty());
}

TEST_P(JobQueueTest, TheReaperReturnsExpiredLeasesToPending) {
  const std::string id = Enqueue("q");
  ASSERT_EQ(Lease("q", absl::Seconds(5)).size(), 1u);
  clock_.Advance(absl::Seconds(5));
  SettleTimer();
  v1::Job job = GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(job.attempts(), 1);
  EXPECT_EQ(job.last_error(), "lease expired");
  EXPECT_FALSE(job.has_lease_expires_at());
}

// ---- Fencing ---------------------------------------------------------------

TEST_P(JobQueueTest, WrongTokenIsRefusedAndChangesNothing) {
  const std::string id = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  const std::string before = StoreSnapshot();

  const std::string wrong(64, 'f');
  EXPECT_EQ(Ack(id, wrong).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(ExtendLease(id, wrong, absl::Minutes(5)).error_code(),
            grpc::FAILED_PRECONDITION);
  v1::NackResponse nacked;
  EXPECT_EQ(Nack(id, wrong, &nacked, "x").error_code(),
            grpc::FAILED_PRECONDITION);
  EXPECT_EQ(StoreSnapshot(), before);
}

TEST_P(JobQueueTest, StaleAndExpiredTokensAreRefused) {
  const std::string id = Enqueue("q");
  std::vector<v1::LeasedJob> first = Lease("q", absl::Seconds(10));
  ASSERT_EQ(first.size(), 1u);
  const std::string stale = first[0].lease_token();

  // Expired (whether or not the reaper got to it first).
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(Ack(id, stale).error_code(), grpc::FAILED_PRECONDITION);
  SettleTimer();
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_PENDING);

  // Stale: someone else holds the job now.
  std::vector<v1::LeasedJob> second = Lease("q", absl::Seconds(10));
  ASSERT_EQ(second.size(), 1u);
  const std::string before = StoreSnapshot();
  EXPECT_EQ(Ack(id, stale).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(ExtendLease(id, stale, absl::Seconds(10)).error_code(),
            grpc::FAILED_PRECONDITION);
  v1::NackResponse nacked;
  EXPECT_EQ(Nack(id, stale, &nacked).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(StoreSnapshot(), before);

  // The holder acks; retrying that Ack is fine, the old token still is not.
  const std::string token = second[0].lease_token();
  grpc::Status ack = Ack(id, token);
  EXPECT_TRUE(ack.ok()) << ack.error_message();
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_SUCCEEDED);
  const std::string acked = StoreSnapshot();
  EXPECT_TRUE(Ack(id, token).ok());
  EXPECT_EQ(Ack(id, stale).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(ExtendLease(id, token, absl::Seconds(10)).error_code(),
            grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Nack(id, token, &nacked).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(StoreSnapshot(), acked);
}

TEST_P(JobQueueTest, ExtendLeaseMovesTheExpiry) {
  const std::string id = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(10));
  ASSERT_EQ(leased.size(), 1u);
  clock_.Advance(absl::Seconds(5));

  v1::ExtendLeaseRequest request;
  request.set_job_id(id);
  request.set_lease_token(leased[0].lease_token());
  *request.mutable_lease_duration() = D(absl::Seconds(20));
  v1::ExtendLeaseResponse response;
  ASSERT_TRUE(stub_->ExtendLease(Context().get(), request, &response).ok());
  EXPECT_EQ(T(response.lease_expires_at()), clock_.Now() + absl::Seconds(20));

  // Past the original expiry: still held.
  clock_.Advance(absl::Seconds(10));
  SettleTimer();
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_LEASED);
  EXPECT_THAT(Lease("q", absl::Seconds(10)), IsEmpty());
  EXPECT_TRUE(Ack(id, leased[0].lease_token()).ok());
}

TEST_P(JobQueueTest, JobMessagesNeverCarryTheLeaseToken) {
  const std::string id = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  const std::string token = leased[0].lease_token();
  EXPECT_EQ(leased[0].job().SerializeAsString().find(token), std::string::npos);
  EXPECT_EQ(GetJob(id).SerializeAsString().find(token), std::string::npos);
  v1::ListJobsResponse list;
  ASSERT_TRUE(
      stub_->ListJobs(Context().get(), v1::ListJobsRequest(), &list).ok());
  EXPECT_EQ(list.SerializeAsString().find(token), std::string::npos);
  v1::Job cancelled;
  ASSERT_TRUE(Cancel(id, &cancelled).ok());
  EXPECT_EQ(cancelled.SerializeAsString().find(token), std::string::npos);
}

// ---- Nack ------------------------------------------------------------------

TEST_P(JobQueueTest, NackRetriesAfterRetryAfter) {
  const std::string id = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  v1::NackResponse nacked;
  ASSERT_TRUE(
      Nack(id, leased[0].lease_token(), &nacked, "boom", absl::Seconds(10))
          .ok());
  EXPECT_EQ(nacked.job().state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(nacked.job().last_error(), "boom");
  EXPECT_EQ(T(nacked.job().run_at()), clock_.Now() + absl::Seconds(10));
  EXPECT_FALSE(nacked.job().has_lease_expires_at());

  EXPECT_THAT(Lease("q", absl::Seconds(30)), IsEmpty());
  clock_.Advance(absl::Seconds(10));
  std::vector<v1::LeasedJob> again = Lease("q", absl::Seconds(30));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].job().attempts(), 2);
  EXPECT_EQ(again[0].job().last_error(), "boom");
}

TEST_P(JobQueueTest, NackWithoutRetryAfterBacksOffExponentially) {
  v1::EnqueueRequest request;
  request.set_queue("q");
  request.set_max_attempts(10);
  const std::string id = Enqueue(request);
  // Default policy: min(1h, 1s * 2^(attempts-1)) * [0.8, 1.2).
  for (int attempt = 1; attempt <= 3; ++attempt) {
    std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
    ASSERT_EQ(leased.size(), 1u);
    ASSERT_EQ(leased[0].job().attempts(), attempt);
    v1::NackResponse nacked;
    ASSERT_TRUE(Nack(id, leased[0].lease_token(), &nacked, "again").ok());
    const absl::Duration nominal = absl::Seconds(1 << (attempt - 1));
    const absl::Duration delay = T(nacked.job().run_at()) - clock_.Now();
    EXPECT_GE(delay, nominal * 0.8) << "attempt " << attempt;
    EXPECT_LT(delay, nominal * 1.2) << "attempt " << attempt;
    // The API shows whole nanoseconds; absl::Time is finer.
    clock_.Advance(delay + absl::Nanoseconds(1));
  }
}

TEST_P(JobQueueTest, NackDeadOrOutOfAttemptsMakesTheJobDead) {
  const std::string a = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  v1::NackResponse nacked;
  ASSERT_TRUE(Nack(a, leased[0].lease_token(), &nacked, "fatal",
                   absl::Seconds(1), /*dead=*/true)
                  .ok());
  EXPECT_EQ(nacked.job().state(), v1::JOB_STATE_DEAD);
  EXPECT_EQ(nacked.job().last_error(), "fatal");

  v1::EnqueueRequest request;
  request.set_queue("q");
  request.set_max_attempts(1);
  const std::string b = Enqueue(request);
  leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  ASSERT_TRUE(Nack(b, leased[0].lease_token(), &nacked, "last try").ok());
  EXPECT_EQ(nacked.job().state(), v1::JOB_STATE_DEAD);
  EXPECT_EQ(nacked.job().attempts(), 1);
  EXPECT_EQ(GetJob(b).last_error(), "last try");
  EXPECT_THAT(Lease("q", absl::Seconds(30)), IsEmpty());
}

// ---- Delayed jobs and order
// --------------------------------------------------

TEST_P(JobQueueTest, DelayedJobsWaitAndOrderIsPriorityThenRunAtThenEnqueue) {
  const absl::Time now = clock_.Now();
  auto enqueue = [&](const std::string& type, int32_t priority,
                     absl::Duration run_in) {
    v1::EnqueueRequest r;
    r.set_queue("q");
    r.set_job_type(type);
    r.set_priority(priority);
    ToProto(now + run_in, r.mutable_run_at());
    return Enqueue(r);
  };
  enqueue("a", 0, absl::ZeroDuration());
  enqueue("b", 5, absl::ZeroDuration());
  enqueue("c", 0, absl::Minutes(1));   // not yet
  enqueue("d", 0, -absl::Minutes(1));  // earlier run_at, enqueued later
  enqueue("e", 0, absl::ZeroDuration());
  enqueue("f", 9, absl::Minutes(2));  // high priority, but not yet

  auto types = [](const std::vector<v1::LeasedJob>& jobs) {
    std::vector<std::string> out;
    for (const auto& j : jobs) out.push_back(j.job().job_type());
    return out;
  };
  EXPECT_THAT(types(Lease("q", absl::Hours(1), 10)),
              ElementsAre("b", "d", "a", "e"));
  clock_.Advance(absl::Minutes(1));
  EXPECT_THAT(types(Lease("q", absl::Hours(1), 10)), ElementsAre("c"));
  clock_.Advance(absl::Minutes(1));
  EXPECT_THAT(types(Lease("q", absl::Hours(1), 10)), ElementsAre("f"));
}

TEST_P(JobQueueTest, DequeueFiltersByJobType) {
  v1::EnqueueRequest r;
  r.set_queue("q");
  r.set_job_type("resize");
  const std::string resize = Enqueue(r);
  r.set_job_type("email");
  const std::string email = Enqueue(r);

  v1::DequeueRequest request;
  request.set_queue("q");
  request.add_job_types("email");
  request.set_max_jobs(10);
  v1::DequeueResponse response;
  ASSERT_TRUE(stub_->Dequeue(Context().get(), request, &response).ok());
  ASSERT_EQ(response.jobs_size(), 1);
  EXPECT_EQ(response.jobs(0).job().job_id(), email);
  EXPECT_EQ(GetJob(resize).state(), v1::JOB_STATE_PENDING);
}

// ---- Idempotency and batches -----------------------------------------------

TEST_P(JobQueueTest, IdempotencyKeyStoresOnlyOnce) {
  v1::EnqueueRequest r;
  r.set_queue("q");
  r.set_job_type("t");
  r.set_idempotency_key("order-17");
  v1::EnqueueResponse first, second, other_queue;
  ASSERT_TRUE(stub_->Enqueue(Context().get(), r, &first).ok());
  EXPECT_FALSE(first.duplicate());
  r.set_payload("different");
  ASSERT_TRUE(stub_->Enqueue(Context().get(), r, &second).ok());
  EXPECT_TRUE(second.duplicate());
  EXPECT_EQ(second.job_id(), first.job_id());
  r.set_queue("q2");
  ASSERT_TRUE(stub_->Enqueue(Context().get(), r, &other_queue).ok());
  EXPECT_FALSE(other_queue.duplicate());
  EXPECT_EQ(GetJob(first.job_id()).payload(), "");
}

TEST_P(JobQueueTest, EnqueueBatchStoresAllInOrder) {
  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < 5; ++i) {
    v1::EnqueueRequest* r = batch.add_jobs();
    r->set_queue("q");
    r->set_job_type(absl::StrCat("t", i));
    if (i == 3) r->set_idempotency_key("k");
    if (i == 4) r->set_idempotency_key("k");  // a duplicate of jobs[3]
  }
  v1::EnqueueBatchResponse response;
  ASSERT_TRUE(stub_->EnqueueBatch(Context().get(), batch, &response).ok());
  ASSERT_EQ(response.results_size(), 5);
  EXPECT_TRUE(response.results(4).duplicate());
  EXPECT_EQ(response.results(4).job_id(), response.results(3).job_id());
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30), 10);
  ASSERT_EQ(leased.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(leased[i].job().job_id(), response.results(i).job_id());
  }
}

// ---- Cancel and requeue
// --------------------------------------------------------

TEST_P(JobQueueTest, CancelPendingLeasedAndFinishedJobs) {
  const std::string pending = Enqueue("q");
  v1::Job job;
  ASSERT_TRUE(Cancel(pending, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(Lease("q", absl::Seconds(30)), IsEmpty());

  const std::string leased_id = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  ASSERT_TRUE(Cancel(leased_id, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(job.has_lease_expires_at());
  // The holder is refused.
  EXPECT_EQ(ExtendLease(leased_id, leased[0].lease_token(), absl::Seconds(30))
                .error_code(),
            grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Ack(leased_id, leased[0].lease_token()).error_code(),
            grpc::FAILED_PRECONDITION);
  EXPECT_EQ(GetJob(leased_id).state(), v1::JOB_STATE_CANCELLED);

  // Finished jobs cannot be cancelled, and stay as they are.
  const std::string done = Enqueue("q");
  leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  ASSERT_TRUE(Ack(done, leased[0].lease_token()).ok());
  const std::string before = StoreSnapshot();
  EXPECT_EQ(Cancel(done, &job).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Cancel(pending, &job).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(StoreSnapshot(), before);
}

TEST_P(JobQueueTest, RequeueRevivesDeadAndCancelledJobsOnly) {
  v1::EnqueueRequest r;
  r.set_queue("q");
  r.set_max_attempts(1);
  const std::string dead = Enqueue(r);
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  v1::NackResponse nacked;
  ASSERT_TRUE(Nack(dead, leased[0].lease_token(), &nacked, "bad").ok());
  ASSERT_EQ(nacked.job().state(), v1::JOB_STATE_DEAD);

  clock_.Advance(absl::Minutes(1));
  v1::Job job;
  ASSERT_TRUE(Requeue(dead, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(job.attempts(), 0);
  EXPECT_EQ(T(job.run_at()), clock_.Now());
  leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  EXPECT_EQ(leased[0].job().job_id(), dead);
  EXPECT_EQ(leased[0].job().attempts(), 1);

  const std::string cancelled = Enqueue("q");
  ASSERT_TRUE(Cancel(cancelled, &job).ok());
  ASSERT_TRUE(Requeue(cancelled, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);

  const std::string before = StoreSnapshot();
  EXPECT_EQ(Requeue(cancelled, &job).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Requeue(dead, &job).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(StoreSnapshot(), before);
}

TEST_P(JobQueueTest, UnknownJobIsNotFound) {
  const std::string unknown(32, 'a');
  v1::Job job;
  v1::GetJobRequest get;
  get.set_job_id(unknown);
  EXPECT_EQ(stub_->GetJob(Context().get(), get, &job).error_code(),
            grpc::NOT_FOUND);
  EXPECT_EQ(Cancel(unknown, &job).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(Requeue(unknown, &job).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(Ack(unknown, "t").error_code(), grpc::NOT_FOUND);
  v1::NackResponse nacked;
  EXPECT_EQ(Nack(unknown, "t", &nacked).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(ExtendLease(unknown, "t", absl::Seconds(5)).error_code(),
            grpc::NOT_FOUND);
}

// ---- ListJobs
// ----------------------------------------------------------------

TEST_P(JobQueueTest, ListJobsPagesThroughEveryJobOldestFirst) {
  std::vector<std::string> ids;
  for (int i = 0; i < 25; ++i) ids.push_back(Enqueue(i % 2 ? "odd" : "even"));
  std::vector<v1::LeasedJob> leased = Lease("odd", absl::Seconds(30), 3);
  ASSERT_EQ(leased.size(), 3u);

  auto list_all = [&](const std::string& queue, v1::JobState state,
                      int page_size, int* pages) {
    std::vector<std::string> out;
    v1::ListJobsRequest request;
    request.set_queue(queue);
    request.set_state(state);
    request.set_page_size(page_size);
    *pages = 0;
    do {
      v1::ListJobsResponse response;
      grpc::Status s = stub_->ListJobs(Context().get(), request, &response);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      ++*pages;
      EXPECT_LE(response.jobs_size(), page_size);
      for (const v1::Job& j : response.jobs()) {
        out.push_back(j.job_id());
        if (!queue.empty()) {
          EXPECT_EQ(j.queue(), queue);
        }
        if (state != v1::JOB_STATE_UNSPECIFIED) {
          EXPECT_EQ(j.state(), state);
        }
      }
      request.set_page_token(response.next_page_token());
    } while (!request.page_token().empty() && *pages < 100);
    return out;
  };

  int pages = 0;
  EXPECT_EQ(list_all("", v1::JOB_STATE_UNSPECIFIED, 10, &pages), ids);
  EXPECT_EQ(pages, 3);
  std::vector<std::string> odd;
  for (int i = 1; i < 25; i += 2) odd.push_back(ids[i]);
  EXPECT_EQ(list_all("odd", v1::JOB_STATE_UNSPECIFIED, 5, &pages), odd);
  EXPECT_EQ(list_all("odd", v1::JOB_STATE_LEASED, 2, &pages),
            std::vector<std::string>(odd.begin(), odd.begin() + 3));
  EXPECT_EQ(list_all("odd", v1::JOB_STATE_PENDING, 100, &pages),
            std::vector<std::string>(odd.begin() + 3, odd.end()));
  EXPECT_THAT(list_all("none", v1::JOB_STATE_UNSPECIFIED, 10, &pages),
              IsEmpty());

  // page_size 0 means 100.
  v1::ListJobsResponse response;
  ASSERT_TRUE(
      stub_->ListJobs(Context().get(), v1::ListJobsRequest(), &response).ok());
  EXPECT_EQ(response.jobs_size(), 25);
  EXPECT_TRUE(response.next_page_token().empty());
}

// ---- Bad input -------------------------------------------------------------

struct BadRequest {
  std::string what;
  std::string field;  // the message starts with "<field>: "
  std::function<grpc::Status(v1::JobQueue::Stub*, grpc::ClientContext*)> call;
};

TEST_P(JobQueueTest, EveryBadRequestIsRejectedNamingTheFieldAndChangesNothing) {
  // Some state for the bad requests to (fail to) change.
  const std::string pending = Enqueue("q");
  const std::string held = Enqueue("q");
  ASSERT_EQ(Lease("q", absl::Seconds(30)).size(), 1u);
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  ASSERT_EQ(leased[0].job().job_id(), held);
  const std::string token = leased[0].lease_token();

  auto enqueue = [](std::function<void(v1::EnqueueRequest*)> edit) {
    return [edit](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
      v1::EnqueueRequest r;
      r.set_queue("q");
      r.set_job_type("t");
      edit(&r);
      v1::EnqueueResponse out;
      return stub->Enqueue(c, r, &out);
    };
  };
  auto batch = [](int size,
                  std::function<void(v1::EnqueueBatchRequest*)> edit) {
    return [size, edit](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
      v1::EnqueueBatchRequest r;
      for (int i = 0; i < size; ++i) {
        r.add_jobs()->set_job_type("t");
        r.mutable_jobs(i)->set_queue("q");
      }
      edit(&r);
      v1::EnqueueBatchResponse out;
      return stub->EnqueueBatch(c, r, &out);
    };
  };
  auto dequeue = [](std::function<void(v1::DequeueRequest*)> edit) {
    return [edit](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
      v1::DequeueRequest r;
      r.set_queue("q");
      edit(&r);
      v1::DequeueResponse out;
      return stub->Dequeue(c, r, &out);
    };
  };
  auto nack = [held, token](std::function<void(v1::NackRequest*)> edit) {
    return [=](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
      v1::NackRequest r;
      r.set_job_id(held);
      r.set_lease_token(token);
      edit(&r);
      v1::NackResponse out;
      return stub->Nack(c, r, &out);
    };
  };
  auto extend = [held,
                 token](std::function<void(v1::ExtendLeaseRequest*)> edit) {
    return [=](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
      v1::ExtendLeaseRequest r;
      r.set_job_id(held);
      r.set_lease_token(token);
      edit(&r);
      v1::ExtendLeaseResponse out;
      return stub->ExtendLease(c, r, &out);
    };
  };
  auto list = [](std::function<void(v1::ListJobsRequest*)> edit) {
    return [edit](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
      v1::ListJobsRequest r;
      edit(&r);
      v1::ListJobsResponse out;
      return stub->ListJobs(c, r, &out);
    };
  };
  auto seconds = [](google::protobuf::Duration* d, int64_t s, int32_t n = 0) {
    d->set_seconds(s);
    d->set_nanos(n);
  };

  const std::vector<BadRequest> cases = {
      {"empty job_type", "job_type",
       enqueue([](auto* r) { r->clear_job_type(); })},
      {"long job_type", "job_type",
       enqueue([](auto* r) { r->set_job_type(std::string(129, 'a')); })},
      {"job_type with newline", "job_type",
       enqueue([](auto* r) { r->set_job_type("a\nb"); })},
      {"long queue", "queue",
       enqueue([](auto* r) { r->set_queue(std::string(129, 'a')); })},
      {"queue with control char", "queue",
       enqueue([](auto* r) { r->set_queue("a\x01"); })},
      {"long idempotency_key", "idempotency_key",
       enqueue([](auto* r) { r->set_idempotency_key(std::string(257, 'k')); })},
      {"payload over the limit", "payload", enqueue([](auto* r) {
         r->set_payload(std::string(kMaxPayloadBytes + 1, 'p'));
       })},
      {"negative max_attempts", "max_attempts",
       enqueue([](auto* r) { r->set_max_attempts(-1); })},
      {"huge max_attempts", "max_attempts",
       enqueue([](auto* r) { r->set_max_attempts(1001); })},
      {"run_at past year 9999", "run_at",
       enqueue([](auto* r) { r->mutable_run_at()->set_seconds(1LL << 40); })},
      {"run_at negative nanos", "run_at",
       enqueue([](auto* r) { r->mutable_run_at()->set_nanos(-1); })},
      {"run_at after 2200 (stored as int64 ns, which end in 2262)", "run_at",
       enqueue([](auto* r) {
         r->mutable_run_at()->set_seconds(kMaxRunAtUnixSeconds + 1);
       })},
      {"empty batch", "jobs", batch(0, [](auto*) {})},
      {"batch over 1000", "jobs", batch(1001, [](auto*) {})},
      {"batch with a bad job", "jobs[3].job_type",
       batch(5, [](auto* r) { r->mutable_jobs(3)->clear_job_type(); })},
      {"batch with a big payload", "jobs[4].payload",
       batch(5,
             [](auto* r) {
               r->mutable_jobs(4)->set_payload(
                   std::string(kMaxPayloadBytes + 1, 'p'));
             })},
      {"negative max_jobs", "max_jobs",
       dequeue([](auto* r) { r->set_max_jobs(-1); })},
      {"max_jobs over 1000", "max_jobs",
       dequeue([](auto* r) { r->set_max_jobs(1001); })},
      {"lease under 1s", "lease_duration", dequeue([&](auto* r) {
         seconds(r->mutable_lease_duration(), 0, 500000000);
       })},
      {"lease over 24h", "lease_duration",
       dequeue([&](auto* r) { seconds(r->mutable_lease_duration(), 86401); })},
      {"negative lease", "lease_duration",
       dequeue([&](auto* r) { seconds(r->mutable_lease_duration(), -5); })},
      {"negative wait", "wait",
       dequeue([&](auto* r) { seconds(r->mutable_wait(), -1); })},
      {"wait over 5 minutes", "wait",
       dequeue([&](auto* r) { seconds(r->mutable_wait(), 301); })},
      {"malformed wait", "wait",
       dequeue([&](auto* r) { seconds(r->mutable_wait(), 1, -1); })},
      {"absurd wait", "wait", dequeue([&](auto* r) {
         seconds(r->mutable_wait(), INT64_MAX, 999999999);
       })},
      {"long worker_id", "worker_id",
       dequeue([](auto* r) { r->set_worker_id(std::string(129, 'w')); })},
      {"empty job type filter", "job_types[1]", dequeue([](auto* r) {
         r->add_job_types("t");
         r->add_job_types("");
       })},
      {"ack without job_id", "job_id",
       [&](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
         v1::AckRequest r;
         r.set_lease_token(token);
         v1::AckResponse out;
         return stub->Ack(c, r, &out);
       }},
      {"ack without token", "lease_token",
       [&](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
         v1::AckRequest r;
         r.set_job_id(held);
         v1::AckResponse out;
         return stub->Ack(c, r, &out);
       }},
      {"nack negative retry_after", "retry_after",
       nack([&](auto* r) { seconds(r->mutable_retry_after(), -1); })},
      {"nack retry_after over 30 days", "retry_after",
       nack([&](auto* r) { seconds(r->mutable_retry_after(), 31 * 86400); })},
      {"nack huge error", "error",
       nack([](auto* r) { r->set_error(std::string(64 * 1024 + 1, 'e')); })},
      {"nack without token", "lease_token",
       nack([](auto* r) { r->clear_lease_token(); })},
      {"extend zero lease", "lease_duration",
       extend([&](auto* r) { seconds(r->mutable_lease_duration(), 0); })},
      {"extend negative lease", "lease_duration",
       extend([&](auto* r) { seconds(r->mutable_lease_duration(), -30); })},
      {"extend without job_id", "job_id",
       extend([](auto* r) { r->clear_job_id(); })},
      {"unknown state", "state",
       list([](auto* r) { r->set_state(static_cast<v1::JobState>(42)); })},
      {"negative page_size", "page_size",
       list([](auto* r) { r->set_page_size(-1); })},
      {"page_size over 1000", "page_size",
       list([](auto* r) { r->set_page_size(1001); })},
      {"foreign page_token", "page_token",
       list([](auto* r) { r->set_page_token("not-a-token"); })},
      {"get without job_id", "job_id",
       [](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
         v1::Job out;
         return stub->GetJob(c, v1::GetJobRequest(), &out);
       }},
      {"cancel with control char id", "job_id",
       [](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
         v1::CancelJobRequest r;
         r.set_job_id("\x1b[2J");
         v1::Job out;
         return stub->CancelJob(c, r, &out);
       }},
      {"requeue without job_id", "job_id",
       [](v1::JobQueue::Stub* stub, grpc::ClientContext* c) {
         v1::Job out;
         return stub->RequeueJob(c, v1::RequeueJobRequest(), &out);
       }},
  };

  const std::string before = StoreSnapshot();
  for (const BadRequest& bad : cases) {
    grpc::Status status = bad.call(stub_.get(), Context().get());
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT) << bad.what;
    EXPECT_THAT(status.error_message(), StartsWith(bad.field + ": "))
        << bad.what;
    EXPECT_EQ(StoreSnapshot(), before) << bad.what;
  }
  // And the jobs are still usable.
  EXPECT_EQ(GetJob(pending).state(), v1::JOB_STATE_LEASED);
  EXPECT_TRUE(Ack(held, token).ok());
}

// ---- Long-poll
// ---------------------------------------------------------------

TEST_P(JobQueueTest, LongPollIsWokenByAnEnqueue) {
  AsyncDequeue poll(stub_.get(), PollRequest("q", absl::Seconds(30)));
  server_->long_poll()->AwaitParkedForTest(1);
  EXPECT_FALSE(poll.done());

  const std::string id = Enqueue("q");
  const auto enqueued = std::chrono::steady_clock::now();
  poll.Join();
  ASSERT_TRUE(poll.status().ok()) << poll.status().error_message();
  ASSERT_EQ(poll.response().jobs_size(), 1);
  EXPECT_EQ(poll.response().jobs(0).job().job_id(), id);
  EXPECT_EQ(poll.response().jobs(0).job().attempts(), 1);
  // Woken, not waiting out its 30 s (which on the simulated clock would
  // never come).
  EXPECT_LT(poll.returned_at() - enqueued, std::chrono::seconds(1));
  EXPECT_EQ(server_->long_poll()->ParkedCountForTest(), 0);
}

TEST_P(JobQueueTest, LongPollIsWokenOnlyByItsQueueAndItsTypes) {
  v1::DequeueRequest request = PollRequest("q", absl::Seconds(30));
  request.add_job_types("wanted");
  AsyncDequeue poll(stub_.get(), request);
  server_->long_poll()->AwaitParkedForTest(1);

  Enqueue("other-queue");
  // An enqueue wakes before it answers: nothing happened to our poll.
  EXPECT_EQ(server_->long_poll()->ParkedCountForTest(), 1);

  v1::EnqueueRequest r;
  r.set_queue("q");
  r.set_job_type("unwanted");
  Enqueue(r);
  // Woken, tried, found nothing of its type, parked again.
  server_->long_poll()->AwaitParkedForTest(1);
  EXPECT_FALSE(poll.done());

  r.set_job_type("wanted");
  const std::string wanted = Enqueue(r);
  poll.Join();
  ASSERT_TRUE(poll.status().ok());
  ASSERT_EQ(poll.response().jobs_size(), 1);
  EXPECT_EQ(poll.response().jobs(0).job().job_id(), wanted);
}

TEST_P(JobQueueTest, ABatchWakesEveryWaiterAndEachGetsAJob) {
  std::vector<std::unique_ptr<AsyncDequeue>> polls;
  for (int i = 0; i < 3; ++i) {
    polls.push_back(std::make_unique<AsyncDequeue>(
        stub_.get(), PollRequest("q", absl::Seconds(30))));
  }
  server_->long_poll()->AwaitParkedForTest(3);
  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < 3; ++i) batch.add_jobs()->set_queue("q");
  for (auto& j : *batch.mutable_jobs()) j.set_job_type("t");
  v1::EnqueueBatchResponse response;
  ASSERT_TRUE(stub_->EnqueueBatch(Context().get(), batch, &response).ok());
  std::set<std::string> got;
  for (auto& poll : polls) {
    poll->Join();
    ASSERT_TRUE(poll->status().ok());
    ASSERT_EQ(poll->response().jobs_size(), 1);
    got.insert(poll->response().jobs(0).job().job_id());
  }
  EXPECT_EQ(got.size(), 3u);
}

TEST_P(JobQueueTest, LongPollEndsEmptyWhenItsWaitElapsesOnTheClock) {
  AsyncDequeue poll(stub_.get(), PollRequest("q", absl::Seconds(30)));
  server_->long_poll()->AwaitParkedForTest(1);
  clock_.Advance(absl::Seconds(29));
  SettleTimer();
  EXPECT_FALSE(poll.done());
  EXPECT_EQ(server_->long_poll()->ParkedCountForTest(), 1);
  clock_.Advance(absl::Seconds(1));
  poll.Join();
  ASSERT_TRUE(poll.status().ok()) << poll.status().error_message();
  EXPECT_EQ(poll.response().jobs_size(), 0);
  EXPECT_EQ(server_->long_poll()->ParkedCountForTest(), 0);
}

// NTP may step the wall clock; `wait` is a timeout, so it runs on the
// monotonic clock: a step back of an hour neither stretches it to an hour
// and 30 s nor ends it early.
TEST_P(JobQueueTest, LongPollWaitIsMeasuredOnTheMonotonicClock) {
  AsyncDequeue poll(stub_.get(), PollRequest("q", absl::Seconds(30)));
  server_->long_poll()->AwaitParkedForTest(1);
  clock_.SetNow(clock_.Now() - absl::Hours(1));
  SettleTimer();
  EXPECT_FALSE(poll.done());
  clock_.Advance(absl::Seconds(29));
  SettleTimer();
  EXPECT_FALSE(poll.done());
  EXPECT_EQ(server_->long_poll()->ParkedCountForTest(), 1);
  clock_.Advance(absl::Seconds(1));
  SettleTimer();
  ASSERT_EQ(server_->long_poll()->ParkedCountForTest(), 0);
  poll.Join();
  ASSERT_TRUE(poll.status().ok()) << poll.status().error_message();
  EXPECT_EQ(poll.response().jobs_size(), 0);
}

TEST_P(JobQueueTest, ATypeFilteredWaiterSleepsThroughOtherTypesAndGetsItsOwn) {
  v1::DequeueRequest request = PollRequest("q", absl::Seconds(30));
  request.add_job_types("a");
  AsyncDequeue poll(stub_.get(), request);
  server_->long_poll()->AwaitParkedForTest(1);

  // A flood of another type into the same queue, one by one and in a batch.
  v1::EnqueueRequest b;
  b.set_queue("q");
  b.set_job_type("b");
  for (int i = 0; i < 20; ++i) Enqueue(b);
  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < 100; ++i) *batch.add_jobs() = b;
  v1::EnqueueBatchResponse batch_response;
  ASSERT_TRUE(
      stub_->EnqueueBatch(Context().get(), batch, &batch_response).ok());
  EXPECT_EQ(server_->long_poll()->ParkedCountForTest(), 1);
  EXPECT_FALSE(poll.done());

  v1::EnqueueRequest a = b;
  a.set_job_type("a");
  const std::string wanted = Enqueue(a);
  poll.Join();
  ASSERT_TRUE(poll.status().ok()) << poll.status().error_message();
  ASSERT_EQ(poll.response().jobs_size(), 1);
  EXPECT_EQ(poll.response().jobs(0).job().job_id(), wanted);
}

// Waiting long-polls end with UNAVAILABLE, not an empty OK: a worker must
// not take a stopping server for an empty queue, but retry elsewhere.
TEST_P(JobQueueTest, ShutdownEndsWaitingCallsWithUnavailable) {
  AsyncDequeue a(stub_.get(), PollRequest("q", absl::Minutes(5)));
  AsyncDequeue b(stub_.get(), PollRequest("r", absl::Minutes(5)));
  server_->long_poll()->AwaitParkedForTest(2);
  server_->Shutdown();
  a.Join();
  b.Join();
  for (AsyncDequeue* poll : {&a, &b}) {
    EXPECT_EQ(poll->status().error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(poll->status().error_message(),
                HasSubstr("server shutting down"));
    EXPECT_EQ(poll->response().jobs_size(), 0);
  }
}

TEST_P(JobQueueTest, ADelayedJobWakesAWaiterWhenItsRunAtComes) {
  v1::EnqueueRequest r;
  r.set_queue("q");
  r.set_job_type("t");
  ToProto(clock_.Now() + absl::Seconds(10), r.mutable_run_at());
  const std::string id = Enqueue(r);

  AsyncDequeue poll(stub_.get(), PollRequest("q", absl::Seconds(60)));
  server_->long_poll()->AwaitParkedForTest(1);
  clock_.Advance(absl::Seconds(9));
  SettleTimer();
  EXPECT_FALSE(poll.done());
  clock_.Advance(absl::Seconds(1));
  poll.Join();
  ASSERT_TRUE(poll.status().ok());
  ASSERT_EQ(poll.response().jobs_size(), 1);
  EXPECT_EQ(poll.response().jobs(0).job().job_id(), id);
}

TEST_P(JobQueueTest, AnExpiredLeaseWakesAWaiter) {
  const std::string id = Enqueue("q");
  ASSERT_EQ(Lease("q", absl::Seconds(5)).size(), 1u);

  AsyncDequeue poll(stub_.get(), PollRequest("q", absl::Seconds(60)));
  server_->long_poll()->AwaitParkedForTest(1);
  clock_.Advance(absl::Seconds(5));
  poll.Join();
  ASSERT_TRUE(poll.status().ok());
  ASSERT_EQ(poll.response().jobs_size(), 1);
  EXPECT_EQ(poll.response().jobs(0).job().job_id(), id);
  EXPECT_EQ(poll.response().jobs(0).job().attempts(), 2);
}

TEST_P(JobQueueTest, NackAndRequeueWakeWaiters) {
  const std::string id = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);

  AsyncDequeue first(stub_.get(), PollRequest("q", absl::Seconds(60)));
  server_->long_poll()->AwaitParkedForTest(1);
  v1::NackResponse nacked;
  ASSERT_TRUE(
      Nack(id, leased[0].lease_token(), &nacked, "", absl::ZeroDuration())
          .ok());
  first.Join();
  ASSERT_EQ(first.response().jobs_size(), 1);
  EXPECT_EQ(first.response().jobs(0).job().attempts(), 2);

  v1::Job job;
  ASSERT_TRUE(Cancel(id, &job).ok());
  AsyncDequeue second(stub_.get(), PollRequest("q", absl::Seconds(60)));
  server_->long_poll()->AwaitParkedForTest(1);
  ASSERT_TRUE(Requeue(id, &job).ok());
  second.Join();
  ASSERT_EQ(second.response().jobs_size(), 1);
  EXPECT_EQ(second.response().jobs(0).job().job_id(), id);
}

TEST_P(JobQueueTest, AClientThatGoesAwayIsRemoved) {
  AsyncDequeue poll(stub_.get(), PollRequest("q", absl::Seconds(60)));
  server_->long_poll()->AwaitParkedForTest(1);
  poll.Cancel();
  poll.Join();
  EXPECT_EQ(poll.status().error_code(), grpc::CANCELLED);
  server_->long_poll()->AwaitParkedForTest(0);
  // The job it would have taken stays for the next worker.
  const std::string id = Enqueue("q");
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_PENDING);
}

TEST_P(JobQueueTest, WaitZeroReturnsAtOnce) {
  AsyncDequeue poll(stub_.get(), PollRequest("q", absl::ZeroDuration()));
  poll.Join();
  EXPECT_TRUE(poll.status().ok());
  EXPECT_EQ(poll.response().jobs_size(), 0);
}

// ---- The cron hook
// -------------------------------------------------------------

TEST_P(JobQueueTest, TheHookHearsOfFinishedCronJobsOnly) {
  // A plain job finishing: not reported.
  const std::string plain = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  ASSERT_TRUE(Ack(plain, leased[0].lease_token()).ok());
  EXPECT_THAT(Finished(), IsEmpty());

  // Ack -> SUCCEEDED.
  const std::string acked = EnqueueCronJob("cron", 3);
  leased = Lease("cron", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  EXPECT_EQ(leased[0].job().cron_name(), "nightly");
  EXPECT_EQ(T(leased[0].job().cron_tick_time()), clock_.Now());
  ASSERT_TRUE(Ack(acked, leased[0].lease_token()).ok());
  std::vector<Job> finished = Finished();
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].id, acked);
  EXPECT_EQ(finished[0].state, JobState::kSucceeded);
  EXPECT_EQ(finished[0].cron_name, "nightly");

  // Nack with retries left -> PENDING: not reported; dead -> DEAD.
  const std::string nacked_id = EnqueueCronJob("cron", 3);
  leased = Lease("cron", absl::Seconds(30));
  v1::NackResponse nacked;
  ASSERT_TRUE(Nack(nacked_id, leased[0].lease_token(), &nacked, "x",
                   absl::ZeroDuration())
                  .ok());
  EXPECT_EQ(Finished().size(), 1u);
  leased = Lease("cron", absl::Seconds(30));
  ASSERT_TRUE(Nack(nacked_id, leased[0].lease_token(), &nacked, "x",
                   std::nullopt, /*dead=*/true)
                  .ok());
  finished = Finished();
  ASSERT_EQ(finished.size(), 2u);
  EXPECT_EQ(finished[1].id, nacked_id);
  EXPECT_EQ(finished[1].state, JobState::kDead);

  // Cancel -> CANCELLED.
  const std::string cancelled = EnqueueCronJob("cron", 3);
  v1::Job job;
  ASSERT_TRUE(Cancel(cancelled, &job).ok());
  finished = Finished();
  ASSERT_EQ(finished.size(), 3u);
  EXPECT_EQ(finished[2].id, cancelled);
  EXPECT_EQ(finished[2].state, JobState::kCancelled);

  // The reaper: a lease expiring with no attempts left -> DEAD.
  const std::string expired = EnqueueCronJob("cron", 1);
  ASSERT_EQ(Lease("cron", absl::Seconds(10)).size(), 1u);
  clock_.Advance(absl::Seconds(10));
  SettleTimer();
  finished = Finished();
  ASSERT_EQ(finished.size(), 4u);
  EXPECT_EQ(finished[3].id, expired);
  EXPECT_EQ(finished[3].state, JobState::kDead);
  EXPECT_EQ(finished[3].last_error, "lease expired");
}

TEST_P(JobQueueTest, TheHookHearsOnceWhenADequeueRacesTheReaper) {
  const std::string id = EnqueueCronJob("cron", 1);
  ASSERT_EQ(Lease("cron", absl::Seconds(10)).size(), 1u);
  clock_.Advance(absl::Seconds(10));
  // Whoever gets there first — this Dequeue or the timer — reaps the lease
  // and reports it; the other finds nothing to do.
  EXPECT_THAT(Lease("cron", absl::Seconds(10)), IsEmpty());
  SettleTimer();
  std::vector<Job> finished = Finished();
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].id, id);
  EXPECT_EQ(finished[0].state, JobState::kDead);
}

INSTANTIATE_TEST_SUITE_P(Stores, JobQueueTest,
                         ::testing::ValuesIn(AllStoreBackends()),
                         ServerTest::Name);

// ---- The long-poll registry on its own
// --------------------------------------------------------------

// A SimulatedClock whose wall time can also jump on its own, without
// monotonic time moving: what an NTP step does (SimulatedClock::SetNow moves
// monotonic time along with any forward step).
class WallSteppingClock final : public Clock {
 public:
  absl::Time Now() override {
    return base_.Now() + absl::Nanoseconds(offset_ns_.load());
  }
  absl::Duration Monotonic() override { return base_.Monotonic(); }
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    struct Args {
      const absl::Condition* cond;
      WallSteppingClock* clock;
      absl::Time deadline;
    } args{&cond, this, deadline};
    // The base clock re-evaluates this on every move of either face.
    base_.AwaitWithDeadline(mu,
                            absl::Condition(
                                +[](Args* a) {
                                  return a->cond->Eval() ||
                                         a->clock->Now() >= a->deadline;
                                },
                                &args),
                            absl::InfiniteFuture());
    return cond.Eval();
  }

  // Both faces move forward by `d`.
  void Advance(absl::Duration d) { base_.Advance(d); }
  // Wall time alone moves by `d` (either way).
  void StepWall(absl::Duration d) {
    offset_ns_ += absl::ToInt64Nanoseconds(d);
    base_.Advance(absl::ZeroDuration());  // wakes the waiters to look
  }

 private:
  SimulatedClock base_;
  std::atomic<int64_t> offset_ns_{0};
};

class FakeWaiter final : public LongPollWaiter {
 public:
  bool IsCancelled() const override { return false; }
  void Wake() override { ++woken_; }
  void Expire() override { ++expired_; }
  void ShutDown() override { ++shut_down_; }

  int woken() const { return woken_.load(); }
  int expired() const { return expired_.load(); }
  int shut_down() const { return shut_down_.load(); }

 private:
  std::atomic<int> woken_{0};
  std::atomic<int> expired_{0};
  std::atomic<int> shut_down_{0};
};

class LongPollRegistryTest : public ::testing::Test {
 protected:
  LongPollRegistry::ParkResult Park(FakeWaiter* waiter,
                                    const std::vector<std::string>& types,
                                    absl::Duration wait) {
    return registry_.Park(waiter, "q", types, registry_.Generation("q", types),
                          clock_.Now(), clock_.Monotonic() + wait);
  }

  WallSteppingClock clock_;
  MemoryJobStore store_;
  // Declared before the registry, which may still hold them when a failed
  // assertion ends a test.
  FakeWaiter waiter_, other_waiter_, third_waiter_;
  const std::vector<std::string> any_type_{};
  LongPollRegistry registry_{&store_, &clock_, nullptr};
};

TEST_F(LongPollRegistryTest, WallClockStepsNeitherEndNorStretchAWait) {
  registry_.Start();
  registry_.AwaitTimerIdleForTest();
  FakeWaiter& waiter = waiter_;
  ASSERT_EQ(Park(&waiter, any_type_, absl::Seconds(30)),
            LongPollRegistry::ParkResult::kParked);

  clock_.StepWall(absl::Hours(1));  // forward, past the wall-time deadline
  registry_.AwaitTimerIdleForTest();
  EXPECT_EQ(waiter.expired(), 0);
  EXPECT_EQ(registry_.ParkedCountForTest(), 1);

  clock_.StepWall(-absl::Hours(2));  // and back
  registry_.AwaitTimerIdleForTest();
  clock_.Advance(absl::Seconds(29));
  registry_.AwaitTimerIdleForTest();
  EXPECT_EQ(waiter.expired(), 0);
  EXPECT_EQ(registry_.ParkedCountForTest(), 1);

  clock_.Advance(absl::Seconds(1));
  // Back asleep after it unparked the waiter and called Expire().
  registry_.AwaitTimerIdleForTest();
  EXPECT_EQ(registry_.ParkedCountForTest(), 0);
  EXPECT_EQ(waiter.expired(), 1);
  EXPECT_EQ(waiter.woken(), 0);
}

TEST_F(LongPollRegistryTest, ShutdownEndsParkedWaitersAsShutDownNotExpired) {
  registry_.Start();
  registry_.AwaitTimerIdleForTest();
  ASSERT_EQ(Park(&waiter_, any_type_, absl::Seconds(30)),
            LongPollRegistry::ParkResult::kParked);
  registry_.Shutdown();
  EXPECT_EQ(waiter_.shut_down(), 1);
  EXPECT_EQ(waiter_.expired(), 0);
  EXPECT_EQ(registry_.ParkedCountForTest(), 0);
  // A call that comes to park afterwards is told to finish the same way.
  EXPECT_EQ(Park(&other_waiter_, any_type_, absl::Seconds(30)),
            LongPollRegistry::ParkResult::kShuttingDown);
  EXPECT_EQ(other_waiter_.shut_down(), 0);
}

TEST_F(LongPollRegistryTest, WakeUpsReachOnlyWaitersOfThatType) {
  FakeWaiter& typed = waiter_;
  FakeWaiter& untyped = other_waiter_;
  const std::vector<std::string> a_or_c = {"a", "c"};
  ASSERT_EQ(Park(&typed, a_or_c, absl::Seconds(30)),
            LongPollRegistry::ParkResult::kParked);
  ASSERT_EQ(Park(&untyped, any_type_, absl::Seconds(30)),
            LongPollRegistry::ParkResult::kParked);

  const uint64_t typed_generation = registry_.Generation("q", a_or_c);
  registry_.Wake("other", "a");
  for (int i = 0; i < 100; ++i) registry_.Wake("q", "b");
  EXPECT_EQ(typed.woken(), 0);
  EXPECT_EQ(untyped.woken(), 1);  // any type is its type
  EXPECT_EQ(registry_.ParkedCountForTest(), 1);

  registry_.Wake("q", "c");
  EXPECT_EQ(typed.woken(), 1);
  EXPECT_NE(registry_.Generation("q", a_or_c), typed_generation);

  // A wake-up that cannot tell the type (a delayed job's run_at came)
  // reaches typed waiters too.
  ASSERT_EQ(Park(&typed, a_or_c, absl::Seconds(30)),
            LongPollRegistry::ParkResult::kParked);
  registry_.Wake("q");
  EXPECT_EQ(typed.woken(), 2);
  EXPECT_EQ(registry_.ParkedCountForTest(), 0);
}

// A wake-up handed on by a waiter that could not use it wakes one other
// untyped waiter, not the whole queue; with a typed waiter parked, every
// waiter (it cannot tell which of them the job's type admits).
TEST_F(LongPollRegistryTest, APassedOnWakeUpWakesOneWaiterUnlessTypedOnesWait) {
  FakeWaiter& third = third_waiter_;
  ASSERT_EQ(Park(&waiter_, any_type_, absl::Seconds(30)),
            LongPollRegistry::ParkResult::kParked);
  ASSERT_EQ(Park(&other_waiter_, any_type_, absl::Seconds(30)),
            LongPollRegistry::ParkResult::kParked);
  const uint64_t generation = registry_.Generation("q", any_type_);
  registry_.PassWakeUpOn("q");
  EXPECT_EQ(waiter_.woken() + other_waiter_.woken(), 1);
  EXPECT_EQ(waiter_.woken(), 1) << "the longest parked";
  EXPECT_EQ(registry_.ParkedCountForTest(), 1);
  EXPECT_NE(registry_.Generation("q", any_type_), generation)
      << "attempts in flight try again";

  const std::vector<std::string> a = {"a"};
  ASSERT_EQ(Park(&third, a, absl::Seconds(30)),
            LongPollRegistry::ParkResult::kParked);
  registry_.PassWakeUpOn("q");
  EXPECT_EQ(other_waiter_.woken(), 1);
  EXPECT_EQ(third.woken(), 1);
  EXPECT_EQ(registry_.ParkedCountForTest(), 0);
}

TEST_F(LongPollRegistryTest, AParkMissesNoWakeUpOfItsType) {
  FakeWaiter& waiter = waiter_;
  const std::vector<std::string> a = {"a"};
  const uint64_t generation = registry_.Generation("q", a);
  registry_.Wake("q", "a");  // lands while the attempt runs
  EXPECT_EQ(registry_.Park(&waiter, "q", a, generation, clock_.Now(),
                           clock_.Monotonic() + absl::Seconds(30)),
            LongPollRegistry::ParkResult::kRetry);
  const uint64_t untyped_generation = registry_.Generation("q", any_type_);
  registry_.Wake("q", "b");
  EXPECT_EQ(
      registry_.Park(&waiter, "q", any_type_, untyped_generation, clock_.Now(),
                     clock_.Monotonic() + absl::Seconds(30)),
      LongPollRegistry::ParkResult::kRetry);
}

// Without the timer (not started), only the Dequeue attempts sweep: one
// sweep per instant a lease may expire, not one per attempt.
TEST_F(LongPollRegistryTest, AttemptsSweepExpiredLeasesOncePerExpiry) {
  registry_.ExpireLeasesIfDue(clock_.Now());  // leases from before a restart
  EXPECT_EQ(registry_.SweepCountForTest(), 1);
  for (int i = 0; i < 5; ++i) registry_.ExpireLeasesIfDue(clock_.Now());
  EXPECT_EQ(registry_.SweepCountForTest(), 1);

  NewJob job;
  job.queue = "q";
  job.type = "t";
  job.max_attempts = 3;
  ASSERT_TRUE(store_.Enqueue({job}, clock_.Now()).ok());
  DequeueOptions options;
  options.queue = "q";
  options.lease_duration = absl::Seconds(10);
  absl::StatusOr<std::vector<Lease>> leases =
      store_.Dequeue(options, clock_.Now());
  ASSERT_TRUE(leases.ok()) << leases.status();
  ASSERT_EQ(leases->size(), 1u);
  registry_.NoteNextAvailable(leases->front().expires_at);

  clock_.Advance(absl::Seconds(9));
  registry_.ExpireLeasesIfDue(clock_.Now());
  EXPECT_EQ(registry_.SweepCountForTest(), 1);

  clock_.Advance(absl::Seconds(1));
  for (int i = 0; i < 5; ++i) registry_.ExpireLeasesIfDue(clock_.Now());
  EXPECT_EQ(registry_.SweepCountForTest(), 2);
  absl::StatusOr<Job> after = store_.GetJob(leases->front().job.id);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->state, JobState::kPending);
  EXPECT_EQ(after->last_error, "lease expired");

  clock_.Advance(absl::Hours(1));
  registry_.ExpireLeasesIfDue(clock_.Now());
  EXPECT_EQ(registry_.SweepCountForTest(), 2);
}

}  // namespace
}  // namespace adjutant
