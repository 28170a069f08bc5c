// The scheduler inside the in-process daemon (AdjutantServer) on a SQLite
// file, driven only through the gRPC API, with a SimulatedClock: leadership
// and TTL, the seed scenario across a real restart, long-polls woken by
// fired ticks, and a WAIT schedule reacting to an Ack.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "adjutant/v1/scheduler.grpc.pb.h"
#include "gtest/gtest.h"
#include "scheduler/scheduler.h"
#include "server/convert.h"
#include "server/server.h"
#include "spdlog/spdlog.h"
#include "storage/sqlite_job_store.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {
namespace {

// 2026-01-01 00:00:00 UTC.
const absl::Time kStart = absl::FromUnixSeconds(1767225600);

absl::Time FromTs(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

class SchedulerDaemonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::warn); }

  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-cron-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    StartDaemon();
  }

  void TearDown() override {
    StopDaemon();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // Opens the SQLite file and serves it, as adjutantd does.
  void StartDaemon() {
    SqliteOptions options;
    options.path = dir_ + "/adjutant.db";
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
        SqliteJobStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    AdjutantServerConfig config;
    config.listen_address = "127.0.0.1:0";
    config.executor_threads = 2;
    config.limits.default_max_attempts = 4;
    server_ = std::make_unique<AdjutantServer>(
        config, std::unique_ptr<JobStore>(*std::move(store)), &clock_);
    absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started;
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    queue_ = v1::JobQueue::NewStub(channel_);
    scheduler_ = v1::Scheduler::NewStub(channel_);
    Settle();
  }

  // A clean stop: what SIGTERM does.
  void StopDaemon() {
    queue_.reset();
    scheduler_.reset();
    channel_.reset();
    server_.reset();
  }

  // Lets the scheduler thread handle everything due now.
  void Settle() { server_->scheduler()->WaitForIdleForTest(); }

  void Advance(absl::Duration d) {
    clock_.Advance(d);
    Settle();
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    // Real time: only a guard against a hung test.
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(60));
    return context;
  }

  v1::Cron Register(const std::string& name, const std::string& schedule,
                    const std::string& queue,
                    v1::MisfirePolicy misfire = v1::MISFIRE_POLICY_UNSPECIFIED,
                    v1::OverlapPolicy overlap = v1::OVERLAP_POLICY_UNSPECIFIED,
                    int64_t catchup_seconds = 0) {
    v1::RegisterCronRequest request;
    request.set_name(name);
    request.set_schedule(schedule);
    request.mutable_job()->set_queue(queue);
    request.mutable_job()->set_job_type("tick");
    request.set_misfire_policy(misfire);
    request.set_overlap_policy(overlap);
    if (catchup_seconds > 0) {
      request.mutable_catchup_window()->set_seconds(catchup_seconds);
    }
    v1::Cron cron;
    grpc::Status s = scheduler_->RegisterCron(Context().get(), request, &cron);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return cron;
  }

  v1::Cron GetCron(const std::string& name) {
    v1::GetCronRequest request;
    request.set_name(name);
    v1::Cron cron;
    grpc::Status s = scheduler_->GetCron(Context().get(), request, &cron);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return cron;
  }

  grpc::Status Lead(uint64_t term, int64_t ttl_seconds = 0) {
    v1::SetLeadershipRequest request;
    request.set_leader(true);
    request.set_term(term);
    request.mutable_ttl()->set_seconds(ttl_seconds);
    v1::Leadership leadership;
    grpc::Status s =
        scheduler_->SetLeadership(Context().get(), request, &leadership);
    if (s.ok()) Settle();
    return s;
  }

  bool IsLeader() {
    v1::Leadership leadership;
    grpc::Status s = scheduler_->GetLeadership(
        Context().get(), v1::GetLeadershipRequest(), &leadership);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return leadership.leader();
  }

  std::vector<v1::Job> Jobs(const std::string& queue) {
    std::vector<v1::Job> jobs;
    std::string token;
    do {
      v1::ListJobsRequest request;
      request.set_queue(queue);
      request.set_page_size(1000);
      request.set_page_token(token);
      v1::ListJobsResponse response;
      grpc::Status s = queue_->ListJobs(Context().get(), request, &response);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      jobs.insert(jobs.end(), response.jobs().begin(), response.jobs().end());
      token = response.next_page_token();
    } while (!token.empty());
    return jobs;
  }

  // A worker parked in a Dequeue of `queue` (waiting up to 5 min of the
  // simulated clock); returns once it is parked. Its answer goes to
  // *response and *status, then *answered becomes true.
  std::thread ParkWorker(const std::string& queue,
                         v1::DequeueResponse* response, grpc::Status* status,
                         std::atomic<bool>* answered) {
    std::thread worker([this, queue, response, status, answered] {
      v1::DequeueRequest request;
      request.set_queue(queue);
      request.mutable_wait()->set_seconds(300);
      *status = queue_->Dequeue(Context().get(), request, response);
      *answered = true;
    });
    server_->long_poll()->AwaitParkedForTest(1);
    return worker;
  }

  std::vector<absl::Time> Ticks(const std::string& queue) {
    std::vector<absl::Time> ticks;
    for (const v1::Job& job : Jobs(queue)) {
      ticks.push_back(FromTs(job.cron_tick_time()));
    }
    return ticks;
  }

  SimulatedClock clock_{kStart};
  std::string dir_;
  std::unique_ptr<AdjutantServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobQueue::Stub> queue_;
  std::unique_ptr<v1::Scheduler::Stub> scheduler_;
};

TEST_F(SchedulerDaemonTest, PerSecondScheduleFiresOnlyWhileLeaderUntilTheTtl) {
  Register("every-second", "* * * * * *", "lead");
  for (int i = 0; i < 3; ++i) Advance(absl::Seconds(1));
  EXPECT_TRUE(Jobs("lead").empty()) << "fired while not leader";

  const absl::Time led_at = clock_.Now();
  ASSERT_TRUE(Lead(10, /*ttl_seconds=*/5).ok());
  for (int i = 0; i < 8; ++i) Advance(absl::Seconds(1));
  // The tick found at the election, then one per second until the TTL
  // lapsed at led_at + 5 s.
  std::vector<absl::Time> ticks = Ticks("lead");
  ASSERT_EQ(ticks.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ticks[i], led_at + absl::Seconds(i));
  EXPECT_FALSE(IsLeader());
  EXPECT_EQ(Jobs("lead")[0].max_attempts(), 4);  // --default-max-attempts

  // A lower term is refused and changes nothing.
  EXPECT_EQ(Lead(9).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  Advance(absl::Seconds(2));
  EXPECT_EQ(Ticks("lead").size(), 5u);
  EXPECT_FALSE(IsLeader());
}

// The seed scenario: a schedule due at T; the daemon down from before T
// until after T; restarted on the same file and told it is leader.
TEST_F(SchedulerDaemonTest, SeedScenarioAcrossARestart) {
  clock_.SetNow(kStart + absl::Minutes(13));
  const absl::Time t = kStart + absl::Hours(1);
  EXPECT_EQ(
      FromTs(Register("once", "0 * * * *", "once", v1::MISFIRE_POLICY_FIRE_ONCE)
                 .next_fire_time()),
      t);
  Register("skip", "0 * * * *", "skip", v1::MISFIRE_POLICY_SKIP);
  Register("all", "*/10 * * * *", "all", v1::MISFIRE_POLICY_FIRE_ALL,
           v1::OVERLAP_POLICY_UNSPECIFIED, /*catchup_seconds=*/7200);
  ASSERT_TRUE(Lead(1).ok());
  StopDaemon();  // down from 00:13, before the first tick (00:20)

  clock_.SetNow(t + absl::Minutes(35));
  StartDaemon();
  EXPECT_FALSE(IsLeader()) << "a restarted daemon must be a follower";
  EXPECT_TRUE(Jobs("once").empty());
  ASSERT_TRUE(Lead(1).ok());

  std::vector<v1::Job> once = Jobs("once");
  ASSERT_EQ(once.size(), 1u);
  EXPECT_EQ(FromTs(once[0].cron_tick_time()), t);
  EXPECT_EQ(once[0].cron_name(), "once");
  EXPECT_TRUE(Jobs("skip").empty());
  v1::Cron skip = GetCron("skip");
  EXPECT_EQ(skip.missed_count(), 1);
  EXPECT_EQ(skip.fired_count(), 0);
  std::vector<absl::Time> expected;
  for (absl::Time x = kStart + absl::Minutes(20); x <= t + absl::Minutes(30);
       x += absl::Minutes(10)) {
    expected.push_back(x);
  }
  EXPECT_EQ(Ticks("all"), expected);

  // And another restart fires none of them again.
  StopDaemon();
  StartDaemon();
  ASSERT_TRUE(Lead(2).ok());
  EXPECT_EQ(Jobs("once").size(), 1u);
  EXPECT_EQ(Ticks("all"), expected);
  EXPECT_TRUE(Jobs("skip").empty());
}

TEST_F(SchedulerDaemonTest, AFiredTickWakesALongPollingWorker) {
  Register("minutely", "0 * * * * *", "work");
  ASSERT_TRUE(Lead(1).ok());
  v1::DequeueResponse response;
  grpc::Status status;
  std::atomic<bool> answered{false};
  std::thread worker = ParkWorker("work", &response, &status, &answered);
  // The tick at 00:01:00 is the only thing that can end the wait early: the
  // simulated clock is still 4 min short of its deadline.
  Advance(absl::Minutes(1));
  worker.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.jobs_size(), 1);
  EXPECT_EQ(response.jobs(0).job().cron_name(), "minutely");
  EXPECT_EQ(FromTs(response.jobs(0).job().cron_tick_time()),
            kStart + absl::Minutes(1));
}

// The daemon fires an ALLOW tick ahead (AdjutantServerConfig's default
// fire_ahead): the job is stored before the tick, no worker can take it
// before then, and the parked worker gets it at the tick itself.
TEST_F(SchedulerDaemonTest, ATickFiredAheadReachesAParkedWorkerAtItsInstant) {
  const absl::Duration ahead = AdjutantServerConfig().scheduler.fire_ahead;
  ASSERT_GT(ahead, absl::ZeroDuration());
  Register("minutely", "0 * * * * *", "work");
  ASSERT_TRUE(Lead(1).ok());
  const absl::Time tick = kStart + absl::Minutes(1);
  v1::DequeueResponse response;
  grpc::Status status;
  std::atomic<bool> answered{false};
  std::thread worker = ParkWorker("work", &response, &status, &answered);

  Advance(absl::Minutes(1) - ahead);
  std::vector<v1::Job> jobs = Jobs("work");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(FromTs(jobs[0].run_at()), tick);
  EXPECT_EQ(FromTs(jobs[0].created_at()), tick - ahead);
  EXPECT_EQ(FromTs(GetCron("minutely").last_fire_time()), tick);
  v1::DequeueRequest now;
  now.set_queue("work");
  v1::DequeueResponse none;
  ASSERT_TRUE(queue_->Dequeue(Context().get(), now, &none).ok());
  EXPECT_EQ(none.jobs_size(), 0) << "a worker got the job before its tick";
  EXPECT_FALSE(answered.load());

  clock_.Advance(ahead);
  worker.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.jobs_size(), 1);
  EXPECT_EQ(response.jobs(0).job().job_id(), jobs[0].job_id());
  EXPECT_EQ(FromTs(response.jobs(0).job().cron_tick_time()), tick);
}

TEST_F(SchedulerDaemonTest, WaitScheduleFiresItsHeldTickWhenTheJobIsAcked) {
  Register("exclusive", "0 * * * * *", "wait", v1::MISFIRE_POLICY_UNSPECIFIED,
           v1::OVERLAP_POLICY_WAIT);
  ASSERT_TRUE(Lead(1).ok());
  Advance(absl::Minutes(1));  // 00:01 fires
  v1::DequeueRequest dequeue;
  dequeue.set_queue("wait");
  dequeue.mutable_lease_duration()->set_seconds(3600);  // outlives the test
  v1::DequeueResponse leased;
  ASSERT_TRUE(queue_->Dequeue(Context().get(), dequeue, &leased).ok());
  ASSERT_EQ(leased.jobs_size(), 1);
  Advance(absl::Minutes(1));  // 00:02 is held: 00:01's job still runs
  Advance(absl::Minutes(1));  // 00:03 is skipped
  EXPECT_EQ(Jobs("wait").size(), 1u);
  EXPECT_EQ(FromTs(GetCron("exclusive").waiting_tick_time()),
            kStart + absl::Minutes(2));

  // The Ack reaches the scheduler through the JobQueue's hook: the held tick
  // fires without any time passing.
  v1::AckRequest ack;
  ack.set_job_id(leased.jobs(0).job().job_id());
  ack.set_lease_token(leased.jobs(0).lease_token());
  v1::AckResponse acked;
  ASSERT_TRUE(queue_->Ack(Context().get(), ack, &acked).ok());
  Settle();
  EXPECT_EQ(Ticks("wait"),
            (std::vector<absl::Time>{kStart + absl::Minutes(1),
                                     kStart + absl::Minutes(2)}));
  v1::Cron cron = GetCron("exclusive");
  EXPECT_FALSE(cron.has_waiting_tick_time());
  EXPECT_EQ(cron.overlap_skipped_count(), 1);
}

}  // namespace
}  // namespace adjutant
