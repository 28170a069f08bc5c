// Retention: the RetentionPruner on a store and a SimulatedClock (rounds,
// batches, errors, stopping), and the acceptance scenario through a real
// gRPC server on every backend: old finished jobs go, pending ones stay.
#include "server/retention.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/convert.h"
#include "storage/memory_job_store.h"
#include "tests/fakes/faulty_job_store.h"
#include "tests/fakes/simulated_clock.h"
#include "tests/server/server_test_util.h"

namespace adjutant {
namespace {

using ::testing::HasSubstr;

// ---- Configuration
// ------------------------------------------------------------

TEST(RetentionConfigTest, IntervalIsATenthOfTheShorterRetentionWithinBounds) {
  RetentionConfig config;  // 24 h and 168 h
  EXPECT_EQ(RetentionPruner::Interval(config), absl::Minutes(1));
  config.finished = absl::Minutes(5);
  EXPECT_EQ(RetentionPruner::Interval(config), absl::Seconds(30));
  config.finished = absl::ZeroDuration();  // kept forever: does not count
  config.dead = absl::Minutes(2);
  EXPECT_EQ(RetentionPruner::Interval(config), absl::Seconds(12));
  config.dead = absl::Seconds(3);
  EXPECT_EQ(RetentionPruner::Interval(config), absl::Seconds(1));
  config.dead = absl::ZeroDuration();
  EXPECT_EQ(RetentionPruner::Interval(config), absl::InfiniteDuration());
}

TEST(RetentionConfigTest, ValidateNamesTheFlag) {
  EXPECT_TRUE(ValidateRetentionConfig(RetentionConfig()).ok());
  RetentionConfig config;
  config.finished = -absl::Seconds(1);
  absl::Status status = ValidateRetentionConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("--retention: -1s is negative"));
  config = RetentionConfig();
  config.dead = -absl::Hours(1);
  EXPECT_THAT(ValidateRetentionConfig(config).message(),
              HasSubstr("--dead-retention"));
  config = RetentionConfig();
  config.batch_size = 0;
  EXPECT_THAT(ValidateRetentionConfig(config).message(),
              HasSubstr("--retention-batch-size: 0 is outside 1..100000"));
  config.batch_size = kMaxRetentionBatchSize + 1;
  EXPECT_FALSE(ValidateRetentionConfig(config).ok());
}

// ---- RetentionPruner on a SimulatedClock
// ---------------------------------------

class RetentionPrunerTest : public ::testing::Test {
 protected:
  // A job of queue "q" and type `type` that ends in `state` at `at`.
  std::string Finished(const std::string& type, JobState state, absl::Time at) {
    NewJob job;
    job.queue = "q";
    job.type = type;
    job.max_attempts = 1;
    absl::StatusOr<std::vector<EnqueueResult>> ids =
        base_.Enqueue({job}, at - absl::Seconds(1));
    EXPECT_TRUE(ids.ok()) << ids.status();
    const std::string id = (*ids)[0].job_id;
    if (state == JobState::kCancelled) {
      EXPECT_TRUE(base_.CancelJob(id, at).ok());
      return id;
    }
    DequeueOptions options;
    options.queue = "q";
    options.job_types = {type};
    options.lease_duration = absl::Hours(1);
    absl::StatusOr<std::vector<Lease>> leases =
        base_.Dequeue(options, at - absl::Seconds(1));
    EXPECT_TRUE(leases.ok() && leases->size() == 1);
    if (state == JobState::kSucceeded) {
      EXPECT_TRUE(base_.Ack(id, (*leases)[0].token, at).ok());
    } else {
      NackOptions nack;
      nack.dead = true;
      EXPECT_TRUE(base_.Nack(id, (*leases)[0].token, nack, at).ok());
    }
    return id;
  }

  std::string Pending(const std::string& type, absl::Time at) {
    NewJob job;
    job.queue = "q";
    job.type = type;
    job.max_attempts = 1;
    absl::StatusOr<std::vector<EnqueueResult>> ids = base_.Enqueue({job}, at);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return (*ids)[0].job_id;
  }

  bool Exists(const std::string& id) { return base_.GetJob(id).ok(); }

  // Moves the clock by `d` and waits for the round it causes.
  void AdvanceOneRound(RetentionPruner& pruner, absl::Duration d) {
    const int64_t rounds = pruner.RoundsForTest();
    clock_.Advance(d);
    pruner.AwaitRoundsForTest(rounds + 1);
  }

  SimulatedClock clock_;
  MemoryJobStore base_;
  FaultyJobStore store_{&base_};
};

TEST_F(RetentionPrunerTest, RoundsRunAtStartThenEveryIntervalOnTheClock) {
  RetentionConfig config;
  config.finished = absl::Minutes(5);
  config.dead = absl::Minutes(10);
  ASSERT_EQ(RetentionPruner::Interval(config), absl::Seconds(30));
  const absl::Time t0 = clock_.Now();
  const std::string old_succeeded =
      Finished("a", JobState::kSucceeded, t0 - absl::Minutes(20));
  const std::string old_dead =
      Finished("b", JobState::kDead, t0 - absl::Minutes(20));
  const std::string dying =
      Finished("c", JobState::kDead, t0 - absl::Minutes(8));
  const std::string fresh = Finished("d", JobState::kCancelled,
                                     t0 - absl::Minutes(4) - absl::Seconds(40));
  const std::string pending = Pending("e", t0 - absl::Hours(100));

  RetentionPruner pruner(&store_, &clock_, config);
  pruner.Start();
  pruner.AwaitRoundsForTest(1);  // at once, at t0
  EXPECT_FALSE(Exists(old_succeeded));
  EXPECT_FALSE(Exists(old_dead));
  EXPECT_TRUE(Exists(dying));
  EXPECT_TRUE(Exists(fresh));
  EXPECT_EQ(pruner.DeletedCountForTest(), 2);

  // Not before the interval: the thread sleeps on the clock.
  clock_.Advance(absl::Seconds(29));
  clock_.WaitForWaitersPast(clock_.Now());
  EXPECT_EQ(pruner.RoundsForTest(), 1);
  EXPECT_TRUE(Exists(fresh));

  AdvanceOneRound(pruner, absl::Seconds(1));  // t0 + 30 s
  EXPECT_FALSE(Exists(fresh)) << "finished 5 min 10 s ago, retention 5 min";
  EXPECT_TRUE(Exists(dying)) << "dead 8.5 min ago, dead retention 10 min";

  AdvanceOneRound(pruner, absl::Minutes(2));
  EXPECT_FALSE(Exists(dying));
  EXPECT_TRUE(Exists(pending)) << "pending jobs stay, however old";
  EXPECT_EQ(pruner.DeletedCountForTest(), 4);
  pruner.Stop();
}

TEST_F(RetentionPrunerTest, ABacklogDrainsInBatchesWithinOneRound) {
  for (int i = 0; i < 25; ++i) {
    Finished(absl::StrCat("t", i), JobState::kSucceeded,
             clock_.Now() - absl::Hours(48));
  }
  const std::string pending = Pending("p", clock_.Now() - absl::Hours(48));
  std::atomic<int> calls{0};
  store_.on_prune_finished_jobs = [&calls] { ++calls; };
  RetentionConfig config;
  config.batch_size = 10;
  RetentionPruner pruner(&store_, &clock_, config);
  pruner.Start();
  pruner.AwaitRoundsForTest(1);
  EXPECT_EQ(calls.load(), 3) << "10 + 10 + 5: the short batch ends the round";
  EXPECT_EQ(pruner.DeletedCountForTest(), 25);
  EXPECT_TRUE(Exists(pending));
  // The next round finds nothing: one call.
  AdvanceOneRound(pruner, RetentionPruner::Interval(config));
  EXPECT_EQ(calls.load(), 4);
}

TEST_F(RetentionPrunerTest, AStoreErrorIsRetriedAtTheNextRound) {
  const std::string old =
      Finished("a", JobState::kSucceeded, clock_.Now() - absl::Hours(48));
  store_.prune_finished_jobs.remaining = 1;
  store_.prune_finished_jobs.status = absl::UnavailableError("disk I/O error");
  RetentionPruner pruner(&store_, &clock_, RetentionConfig());
  pruner.Start();
  pruner.AwaitRoundsForTest(1);
  EXPECT_TRUE(Exists(old));
  AdvanceOneRound(pruner, absl::Minutes(1));
  EXPECT_FALSE(Exists(old));
}

TEST_F(RetentionPrunerTest, ZeroRetentionsKeepEverythingAndRunNoThread) {
  const std::string old =
      Finished("a", JobState::kSucceeded, clock_.Now() - absl::Hours(10000));
  RetentionConfig config;
  config.finished = absl::ZeroDuration();
  config.dead = absl::ZeroDuration();
  std::atomic<int> calls{0};
  store_.on_prune_finished_jobs = [&calls] { ++calls; };
  RetentionPruner pruner(&store_, &clock_, config);
  pruner.Start();
  EXPECT_EQ(clock_.WaiterCount(), 0);
  pruner.Stop();
  EXPECT_EQ(calls.load(), 0);
  EXPECT_TRUE(Exists(old));
}

TEST_F(RetentionPrunerTest, ZeroForOneKindKeepsThatKind) {
  const std::string succeeded =
      Finished("a", JobState::kSucceeded, clock_.Now() - absl::Hours(1000));
  const std::string dead =
      Finished("b", JobState::kDead, clock_.Now() - absl::Hours(1000));
  RetentionConfig config;
  config.dead = absl::ZeroDuration();
  RetentionPruner pruner(&store_, &clock_, config);
  pruner.Start();
  pruner.AwaitRoundsForTest(1);
  EXPECT_FALSE(Exists(succeeded));
  EXPECT_TRUE(Exists(dead));
}

TEST_F(RetentionPrunerTest, StopEndsASleepingThreadWithoutTheClockMoving) {
  RetentionPruner pruner(&store_, &clock_, RetentionConfig());
  pruner.Start();
  pruner.AwaitRoundsForTest(1);
  pruner.Stop();  // would hang if it waited for the next round
  EXPECT_EQ(clock_.WaiterCount(), 0);
  pruner.Stop();  // idempotent
}

// ---- Acceptance: through the server, on every backend
// ---------------------------

// Issue 5's acceptance: retention removes old finished jobs and keeps pending
// ones, under a simulated clock, with the daemon's defaults (24 h, 7 days).
class RetentionAcceptanceTest : public ServerTest {
 protected:
  v1::Job Get(const std::string& id, grpc::Status* status) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    *status = stub_->GetJob(Context().get(), request, &job);
    return job;
  }
  bool Gone(const std::string& id) {
    grpc::Status status;
    Get(id, &status);
    EXPECT_TRUE(status.ok() || status.error_code() == grpc::NOT_FOUND)
        << status.error_message();
    return status.error_code() == grpc::NOT_FOUND;
  }
  void Advance(absl::Duration d) {
    RetentionPruner* pruner = server_->retention();
    const int64_t rounds = pruner->RoundsForTest();
    clock_.Advance(d);
    pruner->AwaitRoundsForTest(rounds + 1);
    SettleTimer();
  }
};

TEST_P(RetentionAcceptanceTest, OldFinishedJobsGoPendingOnesStay) {
  server_->retention()->AwaitRoundsForTest(1);

  // One job ends in each finished state; two wait: one runnable, one
  // delayed by 10 days.
  v1::EnqueueRequest keyed;
  keyed.set_queue("q");
  keyed.set_job_type("s");
  keyed.set_idempotency_key("order-1");
  const std::string succeeded = Enqueue(keyed);
  const std::string cancelled = Enqueue("c");
  const std::string dead = Enqueue("d");
  const std::string pending = Enqueue("p");
  v1::EnqueueRequest later;
  later.set_queue("p");
  ToProto(clock_.Now() + absl::Hours(240), later.mutable_run_at());
  const std::string delayed = Enqueue(later);

  std::vector<v1::LeasedJob> leased = Lease("q", absl::Minutes(5));
  ASSERT_EQ(leased.size(), 1u);
  ASSERT_TRUE(Ack(succeeded, leased[0].lease_token()).ok());
  {
    v1::CancelJobRequest request;
    request.set_job_id(cancelled);
    v1::Job job;
    ASSERT_TRUE(stub_->CancelJob(Context().get(), request, &job).ok());
  }
  leased = Lease("d", absl::Minutes(5));
  ASSERT_EQ(leased.size(), 1u);
  {
    v1::NackRequest request;
    request.set_job_id(dead);
    request.set_lease_token(leased[0].lease_token());
    request.set_dead(true);
    v1::NackResponse response;
    ASSERT_TRUE(stub_->Nack(Context().get(), request, &response).ok());
  }

  Advance(absl::Hours(23));
  for (const std::string& id : {succeeded, cancelled, dead, pending, delayed}) {
    EXPECT_FALSE(Gone(id)) << id;
  }
  // Past 24 h, within the minute after: SUCCEEDED and CANCELLED go.
  Advance(absl::Hours(1) + absl::Minutes(1));
  EXPECT_TRUE(Gone(succeeded));
  EXPECT_TRUE(Gone(cancelled));
  EXPECT_FALSE(Gone(dead));
  EXPECT_FALSE(Gone(pending));
  EXPECT_FALSE(Gone(delayed));
  // The idempotency key of the pruned job is free again.
  const std::string again = Enqueue(keyed);
  EXPECT_NE(again, succeeded);

  // Past 7 days: DEAD goes; the waiting jobs, 7 days old, stay.
  Advance(absl::Hours(24 * 6) + absl::Minutes(1));
  EXPECT_TRUE(Gone(dead));
  EXPECT_FALSE(Gone(pending));
  EXPECT_FALSE(Gone(delayed));
  EXPECT_FALSE(Gone(again));
  grpc::Status status;
  EXPECT_EQ(Get(pending, &status).state(), v1::JOB_STATE_PENDING);

  v1::GetStatsRequest stats_request;
  v1::GetStatsResponse stats;
  ASSERT_TRUE(stub_->GetStats(Context().get(), stats_request, &stats).ok());
  int64_t finished = 0;
  for (const v1::QueueStats& q : stats.queues()) {
    finished += q.succeeded() + q.dead() + q.cancelled();
  }
  EXPECT_EQ(finished, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, RetentionAcceptanceTest,
                         ::testing::ValuesIn(AllStoreBackends()),
                         ServerTest::Name);

}  // namespace
}  // namespace adjutant
