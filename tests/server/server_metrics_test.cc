// The daemon's metrics end to end: an in-process AdjutantServer with its
// /metrics endpoint on 127.0.0.1:0 and a SimulatedClock, driven through the
// gRPC API, scraped over HTTP; every value checked exactly, on each store
// backend.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "adjutant/v1/scheduler.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/convert.h"
#include "server/server.h"
#include "spdlog/spdlog.h"
#include "storage/memory_job_store.h"
#include "tests/fakes/faulty_job_store.h"
#include "tests/fakes/simulated_clock.h"
#include "tests/server/server_test_util.h"

namespace adjutant {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kEnqueue[] = "adjutant.v1.JobQueue/Enqueue";

class ServerMetricsTest : public ::testing::TestWithParam<StoreBackend> {
 protected:
  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::warn); }

  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-metrics-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    absl::StatusOr<std::unique_ptr<JobStore>> store = GetParam().make(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    AdjutantServerConfig config;
    config.listen_address = "127.0.0.1:0";
    config.metrics_listen = "127.0.0.1:0";
    config.executor_threads = 2;
    server_ =
        std::make_unique<AdjutantServer>(config, *std::move(store), &clock_);
    absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started;
    ASSERT_GT(server_->metrics_port(), 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    queue_ = v1::JobQueue::NewStub(channel_);
    scheduler_ = v1::Scheduler::NewStub(channel_);
    server_->long_poll()->AwaitTimerIdleForTest();
  }

  void TearDown() override {
    queue_.reset();
    scheduler_.reset();
    channel_.reset();
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

  std::string Enqueue(const std::string& queue, int max_attempts = 0,
                      const std::string& key = "") {
    v1::EnqueueRequest request;
    request.set_queue(queue);
    request.set_job_type("t");
    request.set_payload("payload");
    request.set_max_attempts(max_attempts);
    request.set_idempotency_key(key);
    v1::EnqueueResponse response;
    grpc::Status s = queue_->Enqueue(Context().get(), request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.job_id();
  }

  std::vector<v1::LeasedJob> Lease(const std::string& queue, int max_jobs,
                                   absl::Duration lease = absl::Seconds(30)) {
    v1::DequeueRequest request;
    request.set_queue(queue);
    request.set_max_jobs(max_jobs);
    ToProto(lease, request.mutable_lease_duration());
    v1::DequeueResponse response;
    grpc::Status s = queue_->Dequeue(Context().get(), request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {response.jobs().begin(), response.jobs().end()};
  }

  void Advance(absl::Duration d) {
    clock_.Advance(d);
    server_->scheduler()->WaitForIdleForTest();
    server_->long_poll()->AwaitTimerIdleForTest();
  }

  // GET /metrics over HTTP, as Prometheus does.
  std::string Scrape() {
    httplib::Client client("127.0.0.1", server_->metrics_port());
    httplib::Result result = client.Get("/metrics");
    EXPECT_TRUE(result) << httplib::to_string(result.error());
    if (!result) return "";
    EXPECT_EQ(result->status, 200);
    return result->body;
  }

  SimulatedClock clock_;
  std::string dir_;
  std::unique_ptr<AdjutantServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobQueue::Stub> queue_;
  std::unique_ptr<v1::Scheduler::Stub> scheduler_;
};

// `line` as a whole line of `text`.
::testing::Matcher<std::string> HasLine(const std::string& line) {
  return HasSubstr("\n" + line + "\n");
}

TEST_P(ServerMetricsTest, JobCountersStatesAndTheStoreAfterTraffic) {
  const absl::Time start = clock_.Now();
  Enqueue("q", 0, "k1");
  Enqueue("q", 0, "k1");  // a duplicate: not a new job
  Enqueue("q");
  const std::string third = Enqueue("q");
  {  // refused before the store: counted as an RPC, not as a job
    v1::EnqueueRequest bad;
    bad.set_queue("q");  // no job_type
    v1::EnqueueResponse response;
    EXPECT_EQ(queue_->Enqueue(Context().get(), bad, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  std::vector<v1::LeasedJob> leased = Lease("q", 2);
  ASSERT_EQ(leased.size(), 2u);
  {
    v1::AckRequest ack;
    ack.set_job_id(leased[0].job().job_id());
    ack.set_lease_token(leased[0].lease_token());
    v1::AckResponse response;
    ASSERT_TRUE(queue_->Ack(Context().get(), ack, &response).ok());
  }
  {
    v1::NackRequest nack;
    nack.set_job_id(leased[1].job().job_id());
    nack.set_lease_token(leased[1].lease_token());
    nack.set_dead(true);
    nack.set_error("broken");
    v1::NackResponse response;
    ASSERT_TRUE(queue_->Nack(Context().get(), nack, &response).ok());
    ASSERT_EQ(response.job().state(), v1::JOB_STATE_DEAD);
  }
  {
    v1::CancelJobRequest cancel;
    cancel.set_job_id(third);
    v1::Job response;
    ASSERT_TRUE(queue_->CancelJob(Context().get(), cancel, &response).ok());
  }
  // A lease that expires with no attempt left, and one that comes back.
  Enqueue("exp", /*max_attempts=*/1);
  Enqueue("exp", /*max_attempts=*/2);
  ASSERT_EQ(Lease("exp", 2, absl::Seconds(10)).size(), 2u);
  Enqueue("old");
  Advance(absl::Seconds(11));

  const std::string m = Scrape();
  EXPECT_THAT(m, HasLine("# TYPE adjutant_jobs_enqueued_total counter"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_enqueued_total{queue=\"q\"} 3"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_enqueued_total{queue=\"exp\"} 2"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_enqueued_total{queue=\"old\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_leased_total{queue=\"q\"} 2"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_leased_total{queue=\"exp\"} 2"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_acked_total{queue=\"q\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_nacked_total{queue=\"q\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_dead_total{queue=\"q\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_dead_total{queue=\"exp\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_cancelled_total{queue=\"q\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_lease_expirations_total{queue=\"exp\"} 2"));
  EXPECT_THAT(m,
              Not(HasSubstr("adjutant_lease_expirations_total{queue=\"q\"}")));

  // Jobs by state, read from the store at scrape time.
  EXPECT_THAT(m, HasLine("# TYPE adjutant_jobs gauge"));
  EXPECT_THAT(m, HasLine("adjutant_jobs{queue=\"q\",state=\"pending\"} 0"));
  EXPECT_THAT(m, HasLine("adjutant_jobs{queue=\"q\",state=\"leased\"} 0"));
  EXPECT_THAT(m, HasLine("adjutant_jobs{queue=\"q\",state=\"succeeded\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs{queue=\"q\",state=\"dead\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs{queue=\"q\",state=\"cancelled\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs{queue=\"exp\",state=\"pending\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs{queue=\"exp\",state=\"dead\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_runnable{queue=\"old\"} 1"));
  // "old" has waited 11 s; the job back in "exp" since its run_at (start).
  EXPECT_THAT(
      m,
      HasLine("adjutant_queue_oldest_runnable_age_seconds{queue=\"old\"} 11"));
  EXPECT_THAT(
      m, HasLine("adjutant_queue_oldest_runnable_age_seconds{queue=\"exp\"} " +
                 absl::StrCat(absl::ToInt64Seconds(clock_.Now() - start))));
  EXPECT_THAT(
      m, HasLine("adjutant_queue_oldest_runnable_age_seconds{queue=\"q\"} 0"));

  // RPCs by method and code; the simulated clock did not move during any.
  EXPECT_THAT(m, HasLine(absl::StrCat("adjutant_rpcs_total{method=\"", kEnqueue,
                                      "\",code=\"OK\"} 7")));
  EXPECT_THAT(m, HasLine(absl::StrCat("adjutant_rpcs_total{method=\"", kEnqueue,
                                      "\",code=\"INVALID_ARGUMENT\"} 1")));
  EXPECT_THAT(m, HasLine("adjutant_rpcs_total{method=\"adjutant.v1.JobQueue/"
                         "Nack\",code=\"OK\"} 1"));
  EXPECT_THAT(
      m, HasLine(absl::StrCat("adjutant_rpc_duration_seconds_bucket{method=\"",
                              kEnqueue, "\",code=\"OK\",le=\"0.0005\"} 7")));
  EXPECT_THAT(
      m, HasLine(absl::StrCat("adjutant_rpc_duration_seconds_count{method=\"",
                              kEnqueue, "\",code=\"OK\"} 7")));
  EXPECT_THAT(
      m, HasLine(absl::StrCat("adjutant_rpc_duration_seconds_sum{method=\"",
                              kEnqueue, "\",code=\"OK\"} 0")));

  // Store writes: one Ack; jobs per Enqueue (6 stored, the duplicate not),
  // per Dequeue (2 + 2), per reaper round that ended any (2).
  EXPECT_THAT(m, HasLine("adjutant_store_write_duration_seconds_count{op="
                         "\"ack\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_store_write_duration_seconds_count{op="
                         "\"enqueue\"} 7"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_count{op=\"enqueue\"} 6"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_sum{op=\"enqueue\"} 6"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_bucket{op=\"dequeue\","
                         "le=\"1\"} 0"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_bucket{op=\"dequeue\","
                         "le=\"2\"} 2"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_sum{op=\"dequeue\"} 4"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_count{op="
                         "\"expire_leases\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_sum{op="
                         "\"expire_leases\"} 2"));
  EXPECT_THAT(m, HasLine("adjutant_metrics_store_errors_total 0"));
  EXPECT_THAT(m, HasLine("adjutant_long_polls_waiting 0"));
  EXPECT_THAT(m, HasLine("adjutant_is_leader 0"));
}

// The metered store passes AckBatch through whole (the backend's native
// batch runs) and times it as one write, counting the jobs it acked.
TEST_P(ServerMetricsTest, StoreAckBatchIsOneMeteredWrite) {
  Enqueue("b");
  Enqueue("b");
  std::vector<v1::LeasedJob> leased = Lease("b", 2);
  ASSERT_EQ(leased.size(), 2u);
  std::vector<AckItem> items;
  for (const v1::LeasedJob& job : leased) {
    items.push_back({job.job().job_id(), job.lease_token()});
  }
  items.push_back({"no-such-job", "token"});
  absl::StatusOr<std::vector<AckResult>> results =
      server_->store()->AckBatch(items, clock_.Now());
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 3u);
  EXPECT_TRUE((*results)[0].status.ok() && (*results)[1].status.ok());
  EXPECT_EQ((*results)[2].status.code(), absl::StatusCode::kNotFound);

  const std::string m = Scrape();
  EXPECT_THAT(m, HasLine("adjutant_store_write_duration_seconds_count{op="
                         "\"ack_batch\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_sum{op=\"ack_batch\"} 2"));
  EXPECT_THAT(m, HasLine("adjutant_store_write_duration_seconds_count{op="
                         "\"ack\"} 0"))
      << "not acked item by item";
}

// The AckBatch RPC counts each job by its queue once: a retried batch
// (the same tokens again) is answered OK and not counted again.
TEST_P(ServerMetricsTest, AckBatchCountsEachAckedJobOnceByItsQueue) {
  Enqueue("b");
  Enqueue("b");
  std::vector<v1::LeasedJob> leased = Lease("b", 2);
  ASSERT_EQ(leased.size(), 2u);
  v1::AckBatchRequest request;
  for (const v1::LeasedJob& job : leased) {
    v1::AckRequest* item = request.add_acks();
    item->set_job_id(job.job().job_id());
    item->set_lease_token(job.lease_token());
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    v1::AckBatchResponse response;
    ASSERT_TRUE(queue_->AckBatch(Context().get(), request, &response).ok());
    ASSERT_EQ(response.results_size(), 2);
    EXPECT_EQ(response.results(0).code(), 0);
    EXPECT_EQ(response.results(1).code(), 0);
  }
  EXPECT_THAT(Scrape(), HasLine("adjutant_jobs_acked_total{queue=\"b\"} 2"));
}

// So does the Ack RPC: a retried Ack (a lost answer) is answered OK again
// and counted once.
TEST_P(ServerMetricsTest, ARetriedAckIsCountedOnce) {
  Enqueue("r");
  std::vector<v1::LeasedJob> leased = Lease("r", 1);
  ASSERT_EQ(leased.size(), 1u);
  v1::AckRequest request;
  request.set_job_id(leased[0].job().job_id());
  request.set_lease_token(leased[0].lease_token());
  for (int attempt = 0; attempt < 2; ++attempt) {
    v1::AckResponse response;
    ASSERT_TRUE(queue_->Ack(Context().get(), request, &response).ok());
  }
  EXPECT_THAT(Scrape(), HasLine("adjutant_jobs_acked_total{queue=\"r\"} 1"));
}

TEST_P(ServerMetricsTest, EnqueueBatchCountsNewJobsPerQueue) {
  v1::EnqueueBatchRequest request;
  for (const char* queue : {"a", "b", "a"}) {
    v1::EnqueueRequest* job = request.add_jobs();
    job->set_queue(queue);
    job->set_job_type("t");
  }
  request.mutable_jobs(2)->set_idempotency_key("same");
  *request.add_jobs() = request.jobs(2);  // a duplicate within the batch
  v1::EnqueueBatchResponse response;
  ASSERT_TRUE(queue_->EnqueueBatch(Context().get(), request, &response).ok());
  const std::string m = Scrape();
  EXPECT_THAT(m, HasLine("adjutant_jobs_enqueued_total{queue=\"a\"} 2"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_enqueued_total{queue=\"b\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_sum{op=\"enqueue\"} 3"));
  EXPECT_THAT(m, HasLine("adjutant_store_batch_size_bucket{op=\"enqueue\","
                         "le=\"5\"} 1"));
}

TEST_P(ServerMetricsTest, WaitingLongPollsAreCountedWhileTheyWait) {
  v1::DequeueResponse response;
  grpc::Status status;
  std::thread poll([&] {
    v1::DequeueRequest request;
    request.set_queue("idle");
    request.mutable_wait()->set_seconds(300);  // the longest allowed
    status = queue_->Dequeue(Context().get(), request, &response);
  });
  server_->long_poll()->AwaitParkedForTest(1);
  EXPECT_THAT(Scrape(), HasLine("adjutant_long_polls_waiting 1"));
  Enqueue("idle");
  poll.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.jobs_size(), 1);
  const std::string m = Scrape();
  EXPECT_THAT(m, HasLine("adjutant_long_polls_waiting 0"));
  EXPECT_THAT(m, HasLine("adjutant_jobs_leased_total{queue=\"idle\"} 1"));
  EXPECT_THAT(m, HasLine("adjutant_rpcs_total{method=\"adjutant.v1.JobQueue/"
                         "Dequeue\",code=\"OK\"} 1"));
}

TEST_P(ServerMetricsTest, CronFiresMissesAndLeadershipShow) {
  v1::RegisterCronRequest request;
  request.set_name("every-second");
  request.set_schedule("* * * * * *");
  request.mutable_job()->set_queue("cron");
  request.mutable_job()->set_job_type("tick");
  v1::Cron cron;
  ASSERT_TRUE(scheduler_->RegisterCron(Context().get(), request, &cron).ok());
  v1::SetLeadershipRequest lead;
  lead.set_leader(true);
  lead.set_term(7);
  v1::Leadership leadership;
  ASSERT_TRUE(
      scheduler_->SetLeadership(Context().get(), lead, &leadership).ok());
  server_->scheduler()->WaitForIdleForTest();
  for (int i = 0; i < 3; ++i) Advance(absl::Seconds(1));
  // Five ticks at once: late, so the default misfire policy (FIRE_ONCE)
  // fires the last and counts the others as missed.
  Advance(absl::Seconds(5));

  v1::GetCronRequest get;
  get.set_name("every-second");
  ASSERT_TRUE(scheduler_->GetCron(Context().get(), get, &cron).ok());
  ASSERT_EQ(cron.fired_count(), 4);
  ASSERT_EQ(cron.missed_count(), 4);

  const std::string m = Scrape();
  EXPECT_THAT(m, HasLine("adjutant_is_leader 1"));
  EXPECT_THAT(m, HasLine("adjutant_leader_term 7"));
  EXPECT_THAT(m, HasLine("adjutant_highest_term 7"));
  EXPECT_THAT(m, HasLine("# TYPE adjutant_cron_fired_total counter"));
  EXPECT_THAT(
      m, HasLine("adjutant_cron_fired_total{schedule=\"every-second\"} 4"));
  EXPECT_THAT(
      m, HasLine("adjutant_cron_missed_total{schedule=\"every-second\"} 4"));
  EXPECT_THAT(
      m, HasLine("adjutant_cron_skipped_total{schedule=\"every-second\"} 0"));
  // A fired job is an enqueued job.
  EXPECT_THAT(m, HasLine("adjutant_jobs_enqueued_total{queue=\"cron\"} 4"));
  EXPECT_THAT(m, HasLine("adjutant_jobs{queue=\"cron\",state=\"pending\"} 4"));
  EXPECT_THAT(m, HasLine("adjutant_store_write_duration_seconds_count{op="
                         "\"apply_cron_transition\"} 4"));

  // Revoked: the gauges follow.
  lead.set_leader(false);
  ASSERT_TRUE(
      scheduler_->SetLeadership(Context().get(), lead, &leadership).ok());
  EXPECT_THAT(Scrape(), HasLine("adjutant_is_leader 0"));
}

TEST_P(ServerMetricsTest, OnlyMetricsIsServed) {
  httplib::Client client("127.0.0.1", server_->metrics_port());
  httplib::Result result = client.Get("/");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 404);
  result = client.Get("/metrics");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->get_header_value("Content-Type"),
            "text/plain; version=0.0.4; charset=utf-8");
  // Every line is a comment or `name{labels} value`.
  for (absl::string_view line : absl::StrSplit(result->body, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_THAT(std::string(line),
                ::testing::MatchesRegex("[a-z_]+(\\{.*\\})? [-+0-9.eInfNa]+"));
  }
}

TEST_P(ServerMetricsTest, ABusyMetricsPortFailsTheStart) {
  absl::StatusOr<std::unique_ptr<JobStore>> store =
      AllStoreBackends()[0].make(dir_);
  ASSERT_TRUE(store.ok());
  AdjutantServerConfig config;
  config.listen_address = "127.0.0.1:0";
  config.metrics_listen = absl::StrCat("127.0.0.1:", server_->metrics_port());
  AdjutantServer second(config, *std::move(store), &clock_);
  const absl::Status s = second.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("--metrics-listen"));
}

INSTANTIATE_TEST_SUITE_P(Backends, ServerMetricsTest,
                         ::testing::ValuesIn(AllStoreBackends()),
                         [](const auto& info) { return info.param.name; });

// A store that does not answer within the scrape's timeout: the store-backed
// families are left out of that scrape, the error is counted, the rest is
// served; and the read left behind on the executor runs to its end before
// the server's parts go away (it asks the scheduler after the store).
TEST(ServerMetricsStoreTimeoutTest, ASlowStoreIsLeftOutAndCounted) {
  SimulatedClock clock;
  MemoryJobStore base;
  auto store = std::make_unique<FaultyJobStore>(&base);
  absl::Notification entered, release;
  store->on_queue_statistics = [&] {
    if (!entered.HasBeenNotified()) entered.Notify();
    release.WaitForNotification();
  };
  AdjutantServerConfig config;
  config.listen_address = "127.0.0.1:0";
  config.metrics_listen = "127.0.0.1:0";
  config.executor_threads = 2;
  config.metrics_store_timeout = absl::Milliseconds(50);
  auto server =
      std::make_unique<AdjutantServer>(config, std::move(store), &clock);
  ASSERT_TRUE(server->Start().ok());

  httplib::Client client("127.0.0.1", server->metrics_port());
  // The counter is written before the store is read: a timeout shows in the
  // next scrape.
  for (const char* errors_before : {"0", "1"}) {
    httplib::Result result = client.Get("/metrics");
    ASSERT_TRUE(result) << httplib::to_string(result.error());
    const std::string m = result->body;
    EXPECT_TRUE(entered.HasBeenNotified());
    EXPECT_THAT(m, HasLine(absl::StrCat("adjutant_metrics_store_errors_total ",
                                        errors_before)));
    EXPECT_THAT(m, Not(HasSubstr("adjutant_jobs{")));
    EXPECT_THAT(m, Not(HasSubstr("adjutant_is_leader")));
    EXPECT_THAT(m, HasLine("adjutant_long_polls_waiting 0"));
  }

  // Let the stuck read go while the server is being destroyed.
  std::thread releaser([&] { release.Notify(); });
  server.reset();
  releaser.join();
}

}  // namespace
}  // namespace adjutant
