#include "tests/server/server_test_util.h"

#include <cstdlib>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/convert.h"
#include "storage/memory_job_store.h"
#include "storage/sqlite_job_store.h"

namespace adjutant {

std::vector<StoreBackend> AllStoreBackends() {
  return {
      {"Memory",
       [](const std::string&) -> absl::StatusOr<std::unique_ptr<JobStore>> {
         return std::make_unique<MemoryJobStore>(BackoffPolicy());
       }},
      {"Sqlite",
       [](const std::string& dir) -> absl::StatusOr<std::unique_ptr<JobStore>> {
         SqliteOptions options;
         options.path = dir + "/adjutant.db";
         absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
             SqliteJobStore::Open(options);
         if (!store.ok()) return store.status();
         return std::unique_ptr<JobStore>(*std::move(store));
       }},
  };
}

void ServerTest::SetUp() {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "adjutant-server-XXXXXX")
          .string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  dir_ = tmpl;
  absl::StatusOr<std::unique_ptr<JobStore>> store = GetParam().make(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = store->get();

  AdjutantServerConfig config;
  config.listen_address = "127.0.0.1:0";
  config.executor_threads = 2;
  config.limits.max_payload_bytes = kMaxPayloadBytes;
  config.limits.default_max_attempts = kDefaultMaxAttempts;
  config.on_cron_job_finished = [this](const Job& job) {
    absl::MutexLock l(&finished_mu_);
    finished_.push_back(job);
  };
  server_ =
      std::make_unique<AdjutantServer>(config, *std::move(store), &clock_);
  absl::Status started = server_->Start();
  ASSERT_TRUE(started.ok()) << started;
  ASSERT_GT(server_->port(), 0);
  channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                 grpc::InsecureChannelCredentials());
  stub_ = v1::JobQueue::NewStub(channel_);
  // The first reaper round has run: the timer is asleep.
  SettleTimer();
}

void ServerTest::TearDown() {
  stub_.reset();
  channel_.reset();
  server_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::unique_ptr<grpc::ClientContext> ServerTest::Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  // Real time: only a guard against a hung test.
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(60));
  return context;
}

std::string ServerTest::Enqueue(v1::EnqueueRequest request) {
  if (request.job_type().empty()) request.set_job_type("t");
  v1::EnqueueResponse response;
  grpc::Status status = stub_->Enqueue(Context().get(), request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.job_id().empty());
  return response.job_id();
}

std::string ServerTest::Enqueue(const std::string& queue, int32_t priority) {
  v1::EnqueueRequest request;
  request.set_queue(queue);
  request.set_priority(priority);
  return Enqueue(request);
}

std::vector<v1::LeasedJob> ServerTest::Lease(const std::string& queue,
                                             absl::Duration lease_duration,
                                             int max_jobs) {
  v1::DequeueRequest request;
  request.set_queue(queue);
  request.set_max_jobs(max_jobs);
  ToProto(lease_duration, request.mutable_lease_duration());
  v1::DequeueResponse response;
  grpc::Status status = stub_->Dequeue(Context().get(), request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return {response.jobs().begin(), response.jobs().end()};
}

v1::Job ServerTest::GetJob(const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  grpc::Status status = stub_->GetJob(Context().get(), request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

grpc::Status ServerTest::Ack(const std::string& job_id,
                             const std::string& token) {
  v1::AckRequest request;
  request.set_job_id(job_id);
  request.set_lease_token(token);
  v1::AckResponse response;
  return stub_->Ack(Context().get(), request, &response);
}

grpc::Status ServerTest::ExtendLease(const std::string& job_id,
                                     const std::string& token,
                                     absl::Duration lease_duration) {
  v1::ExtendLeaseRequest request;
  request.set_job_id(job_id);
  request.set_lease_token(token);
  ToProto(lease_duration, request.mutable_lease_duration());
  v1::ExtendLeaseResponse response;
  return stub_->ExtendLease(Context().get(), request, &response);
}

std::string ServerTest::StoreSnapshot() {
  std::string out;
  std::string token;
  do {
    absl::StatusOr<JobPage> page =
        store_->ListJobs("", JobState::kUnspecified, 1000, token);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    for (const Job& j : page->jobs) {
      absl::StrAppend(
          &out, j.id, "|", j.queue, "|", j.type, "|", j.payload, "|",
          j.priority, "|", JobStateName(j.state), "|", j.attempts, "|",
          j.max_attempts, "|", absl::FormatTime(j.run_at), "|",
          absl::FormatTime(j.created_at), "|", absl::FormatTime(j.updated_at),
          "|", j.last_error, "|", j.idempotency_key, "|",
          absl::FormatTime(j.lease_expires_at), "|", j.lease_token, "|",
          j.worker_id, "|", j.cron_name, "|",
          absl::FormatTime(j.cron_tick_time), "|", j.seq, "\n");
    }
    token = page->next_page_token;
  } while (!token.empty());
  return out;
}

void ServerTest::SettleTimer() {
  server_->long_poll()->AwaitTimerIdleForTest();
}

}  // namespace adjutant
