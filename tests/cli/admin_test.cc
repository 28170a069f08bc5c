// GetStats and the standard health service, through gRPC against an
// in-process AdjutantServer on each store (tests/server/server_test_util.h).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "adjutant/v1/scheduler.grpc.pb.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "health.grpc.pb.h"
#include "server/server.h"
#include "storage/memory_job_store.h"
#include "tests/fakes/simulated_clock.h"
#include "tests/server/server_test_util.h"

namespace adjutant {
namespace {

using HealthStatus = grpc::health::v1::HealthCheckResponse;

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

class AdminTest : public ServerTest {
 protected:
  std::unique_ptr<Client> MakeClient() {
    ClientOptions options;
    options.target = absl::StrCat("127.0.0.1:", server_->port());
    auto client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  HealthStatus::ServingStatus Check(const std::string& service) {
    auto stub = grpc::health::v1::Health::NewStub(channel_);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    HealthStatus response;
    grpc::Status status = stub->Check(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }
};

TEST_P(AdminTest, GetStatsCountsEachStatePerQueue) {
  std::unique_ptr<Client> client = MakeClient();
  ASSERT_NE(client, nullptr);

  // An empty store: no queue, no schedule, not leader.
  auto empty = client->GetStats(v1::GetStatsRequest());
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->queues_size(), 0);
  EXPECT_EQ(empty->schedules(), 0);
  EXPECT_FALSE(empty->leadership().leader());

  const std::string first = Enqueue("mail");
  clock_.Advance(absl::Seconds(40));
  Enqueue("mail");
  Enqueue("mail");
  v1::EnqueueRequest delayed;
  delayed.set_queue("mail");
  delayed.set_job_type("t");
  delayed.mutable_run_at()->set_seconds(
      absl::ToUnixSeconds(clock_.Now() + absl::Hours(1)));
  Enqueue(delayed);
  Enqueue("billing");
  // Lease the two oldest of "mail": the oldest runnable is now the third.
  std::vector<v1::LeasedJob> leased = Lease("mail", absl::Seconds(30), 2);
  ASSERT_EQ(leased.size(), 2u);
  ASSERT_TRUE(Ack(leased[0].job().job_id(), leased[0].lease_token()).ok());
  clock_.Advance(absl::Seconds(5));

  v1::RegisterCronRequest cron;
  cron.set_name("nightly");
  cron.set_schedule("0 3 * * *");
  cron.mutable_job()->set_job_type("report");
  ASSERT_TRUE(client->RegisterCron(cron).ok());
  v1::SetLeadershipRequest leader;
  leader.set_leader(true);
  leader.set_term(7);
  ASSERT_TRUE(client->SetLeadership(leader).ok());

  auto stats = client->GetStats(v1::GetStatsRequest());
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->queues_size(), 2);
  const v1::QueueStats& billing = stats->queues(0);
  const v1::QueueStats& mail = stats->queues(1);
  EXPECT_EQ(billing.queue(), "billing");
  EXPECT_EQ(billing.pending(), 1);
  EXPECT_EQ(billing.runnable(), 1);
  EXPECT_EQ(FromProto(billing.oldest_runnable_age()), absl::Seconds(5));
  EXPECT_EQ(mail.queue(), "mail");
  EXPECT_EQ(mail.pending(), 2) << "one runnable, one delayed";
  EXPECT_EQ(mail.runnable(), 1);
  EXPECT_EQ(mail.leased(), 1);
  EXPECT_EQ(mail.succeeded(), 1);
  EXPECT_EQ(mail.dead(), 0);
  EXPECT_EQ(mail.cancelled(), 0);
  EXPECT_EQ(FromProto(mail.oldest_runnable_age()), absl::Seconds(5))
      << "the third job, enqueued 5 s ago";
  EXPECT_EQ(stats->schedules(), 1);
  EXPECT_TRUE(stats->leadership().leader());
  EXPECT_EQ(stats->leadership().term(), 7u);
  EXPECT_EQ(stats->as_of().seconds(), absl::ToUnixSeconds(clock_.Now()));

  // Cancelling the last runnable job of "mail" leaves no age to report.
  v1::ListJobsRequest list;
  list.set_queue("mail");
  list.set_state(v1::JOB_STATE_PENDING);
  auto pending = client->ListJobs(list);
  ASSERT_TRUE(pending.ok());
  for (const v1::Job& job : pending->jobs()) {
    if (job.run_at().seconds() <= absl::ToUnixSeconds(clock_.Now())) {
      v1::CancelJobRequest cancel;
      cancel.set_job_id(job.job_id());
      ASSERT_TRUE(client->CancelJob(cancel).ok());
    }
  }
  stats = client->GetStats(v1::GetStatsRequest());
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->queues(1).runnable(), 0);
  EXPECT_EQ(stats->queues(1).cancelled(), 1);
  EXPECT_FALSE(stats->queues(1).has_oldest_runnable_age());
  EXPECT_NE(first, "");
}

TEST_P(AdminTest, HealthIsServingForTheServerAndEachService) {
  EXPECT_EQ(Check(""), HealthStatus::SERVING);
  EXPECT_EQ(Check("adjutant.v1.JobQueue"), HealthStatus::SERVING);
  EXPECT_EQ(Check("adjutant.v1.Scheduler"), HealthStatus::SERVING);
}

TEST_P(AdminTest, HealthTurnsNotServingWhenShutdownBegins) {
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
  grpc::health::v1::HealthCheckRequest request;
  auto watch = stub->Watch(&context, request);
  HealthStatus response;
  ASSERT_TRUE(watch->Read(&response));
  ASSERT_EQ(response.status(), HealthStatus::SERVING);

  std::thread shutdown([this] { server_->Shutdown(); });
  // A watch may repeat a status; it must move on to the new one.
  do {
    ASSERT_TRUE(watch->Read(&response));
  } while (response.status() == HealthStatus::SERVING);
  EXPECT_EQ(response.status(), HealthStatus::NOT_SERVING);
  // A watch is a stream: end it, or the server would wait out its grace.
  context.TryCancel();
  watch->Finish().IgnoreError();
  shutdown.join();
}

INSTANTIATE_TEST_SUITE_P(Stores, AdminTest,
                         ::testing::ValuesIn(AllStoreBackends()),
                         AdminTest::Name);

// A store whose Ping answers what the test says; everything else is a
// MemoryJobStore's.
class PingSwitchStore final : public JobStore {
 public:
  std::atomic<bool> ping_ok{true};

  absl::Status Ping() override {
    return ping_ok ? absl::OkStatus()
                   : absl::UnavailableError("disk went away");
  }
  absl::StatusOr<std::vector<QueueStats>> QueueStatistics(
      absl::Time now) override {
    return base_.QueueStatistics(now);
  }
  absl::StatusOr<int64_t> PruneFinishedJobs(absl::Time finished_before,
                                            absl::Time dead_before,
                                            int limit) override {
    return base_.PruneFinishedJobs(finished_before, dead_before, limit);
  }
  absl::StatusOr<std::vector<EnqueueResult>> Enqueue(
      const std::vector<NewJob>& jobs, absl::Time now) override {
    return base_.Enqueue(jobs, now);
  }
  absl::StatusOr<std::vector<Lease>> Dequeue(const DequeueOptions& options,
                                             absl::Time now) override {
    return base_.Dequeue(options, now);
  }
  absl::Status Ack(const std::string& id, const std::string& token,
                   absl::Time now) override {
    return base_.Ack(id, token, now);
  }
  absl::StatusOr<Job> Nack(const std::string& id, const std::string& token,
                           const NackOptions& options,
                           absl::Time now) override {
    return base_.Nack(id, token, options, now);
  }
  absl::StatusOr<absl::Time> ExtendLease(const std::string& id,
                                         const std::string& token,
                                         absl::Duration d,
                                         absl::Time now) override {
    return base_.ExtendLease(id, token, d, now);
  }
  absl::StatusOr<Job> GetJob(const std::string& id) override {
    return base_.GetJob(id);
  }
  absl::StatusOr<Job> CancelJob(const std::string& id,
                                absl::Time now) override {
    return base_.CancelJob(id, now);
  }
  absl::StatusOr<Job> RequeueJob(const std::string& id,
                                 absl::Time now) override {
    return base_.RequeueJob(id, now);
  }
  absl::StatusOr<JobPage> ListJobs(const std::string& queue, JobState state,
                                   int page_size,
                                   const std::string& token) override {
    return base_.ListJobs(queue, state, page_size, token);
  }
  absl::StatusOr<std::vector<Job>> ExpireLeases(absl::Time now) override {
    return base_.ExpireLeases(now);
  }
  absl::StatusOr<std::vector<Job>> ReleaseLeases(
      const std::vector<AckItem>& items, absl::Time now) override {
    return base_.ReleaseLeases(items, now);
  }
  absl::StatusOr<absl::Time> NextAvailableTime(const std::string& queue,
                                               absl::Time now) override {
    return base_.NextAvailableTime(queue, now);
  }
  absl::StatusOr<uint64_t> ObserveTerm(uint64_t term) override {
    return base_.ObserveTerm(term);
  }
  absl::StatusOr<uint64_t> HighestTerm() override {
    return base_.HighestTerm();
  }
  absl::StatusOr<CronRecord> GetCron(const std::string& name) override {
    return base_.GetCron(name);
  }
  absl::StatusOr<CronRecord> PutCron(const CronDefinition& definition,
                                     const CronState& state,
                                     int64_t expected_version,
                                     absl::Time now) override {
    return base_.PutCron(definition, state, expected_version, now);
  }
  absl::Status DeleteCron(const std::string& name, absl::Time now) override {
    return base_.DeleteCron(name, now);
  }
  absl::StatusOr<CronPage> ListCrons(int page_size,
                                     const std::string& token) override {
    return base_.ListCrons(page_size, token);
  }
  absl::StatusOr<std::vector<CronRecord>> DueCrons(absl::Time now,
                                                   int limit) override {
    return base_.DueCrons(now, limit);
  }
  absl::StatusOr<absl::Time> NextCronFireTime(absl::Time after) override {
    return base_.NextCronFireTime(after);
  }
  absl::StatusOr<CronRecord> ApplyCronTransition(const CronTransition& t,
                                                 absl::Time now) override {
    return base_.ApplyCronTransition(t, now);
  }

 private:
  MemoryJobStore base_;
};

TEST(HealthTest, FollowsTheStoresPingOnTheCheckInterval) {
  SimulatedClock clock;
  auto owned = std::make_unique<PingSwitchStore>();
  PingSwitchStore* store = owned.get();
  AdjutantServerConfig config;
  config.listen_address = "127.0.0.1:0";
  config.health_check_interval = absl::Seconds(5);
  AdjutantServer server(config, std::move(owned), &clock);
  ASSERT_TRUE(server.Start().ok());
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server.port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("adjutant.v1.JobQueue");
  auto watch = stub->Watch(&context, request);
  server.AwaitHealthChecksForTest(1);
  HealthStatus response;
  ASSERT_TRUE(watch->Read(&response));
  ASSERT_EQ(response.status(), HealthStatus::SERVING);

  // The health thread sleeps until the next check: the failure shows then
  // (moving the clock is the only way it learns of it).
  store->ping_ok = false;
  clock.Advance(absl::Seconds(4));
  {
    grpc::ClientContext check_context;
    HealthStatus checked;
    ASSERT_TRUE(stub->Check(&check_context, request, &checked).ok());
    EXPECT_EQ(checked.status(), HealthStatus::SERVING)
        << "no check before the interval is up: no busy polling";
  }
  clock.Advance(absl::Seconds(1));
  server.AwaitHealthChecksForTest(2);
  // A watch may repeat a status; it must move on to the new one.
  do {
    ASSERT_TRUE(watch->Read(&response));
  } while (response.status() == HealthStatus::SERVING);
  EXPECT_EQ(response.status(), HealthStatus::NOT_SERVING);

  store->ping_ok = true;
  clock.Advance(absl::Seconds(5));
  server.AwaitHealthChecksForTest(3);
  do {
    ASSERT_TRUE(watch->Read(&response));
  } while (response.status() == HealthStatus::NOT_SERVING);
  EXPECT_EQ(response.status(), HealthStatus::SERVING);

  context.TryCancel();
  watch->Finish().IgnoreError();
  server.Shutdown();
}

}  // namespace
}  // namespace adjutant
