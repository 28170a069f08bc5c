// Access control through real gRPC: an in-process AdjutantServer with a
// token file, every RPC of both services called with no token, a wrong
// token and each role's token; health stays open.
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "adjutant/v1/scheduler.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "health.grpc.pb.h"
#include "server/auth.h"
#include "server/convert.h"
#include "server/server.h"
#include "storage/memory_job_store.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {
namespace {

using ::testing::HasSubstr;

constexpr char kTokenFile[] =
    "# NAME ROLES TOKEN\n"
    "web      producer  producer-token-0123456789\n"
    "jobs     worker    worker-token-0123456789\n"
    "elector  leader    leader-token-0123456789\n"
    "ops      admin     admin-token-0123456789\n";

// Who calls: a token (or none) and the role it stands for.
struct Credential {
  std::string label;
  std::string authorization;  // "" sends no metadata
  std::optional<Role> role;   // nullopt: not a valid token
};

std::vector<Credential> Credentials() {
  return {
      {"no token", "", std::nullopt},
      {"unknown token", "Bearer nobody-token-0123456789", std::nullopt},
      {"not bearer", "producer-token-0123456789", std::nullopt},
      {"producer", "Bearer producer-token-0123456789", Role::kProducer},
      {"worker", "Bearer worker-token-0123456789", Role::kWorker},
      {"leader", "Bearer leader-token-0123456789", Role::kLeader},
      {"admin", "Bearer admin-token-0123456789", Role::kAdmin},
  };
}

class AuthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Authorizer>> authorizer =
        Authorizer::Parse(kTokenFile, "tokens");
    ASSERT_TRUE(authorizer.ok()) << authorizer.status();
    AdjutantServerConfig config;
    config.listen_address = "127.0.0.1:0";
    config.executor_threads = 2;
    config.authorizer = *std::move(authorizer);
    auto store = std::make_unique<MemoryJobStore>(BackoffPolicy());
    store_ = store.get();
    server_ =
        std::make_unique<AdjutantServer>(config, std::move(store), &clock_);
    absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started;
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    queue_ = v1::JobQueue::NewStub(channel_);
    scheduler_ = v1::Scheduler::NewStub(channel_);
  }

  void TearDown() override {
    queue_.reset();
    scheduler_.reset();
    channel_.reset();
    server_.reset();
  }

  std::unique_ptr<grpc::ClientContext> Context(
      const std::string& authorization) {
    auto context = std::make_unique<grpc::ClientContext>();
    // Real time: only a guard against a hung test.
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(60));
    if (!authorization.empty()) {
      context->AddMetadata("authorization", authorization);
    }
    return context;
  }

  int64_t JobCount() {
    absl::StatusOr<JobPage> page =
        store_->ListJobs("", JobState::kUnspecified, 1000, "");
    EXPECT_TRUE(page.ok()) << page.status();
    return page.ok() ? static_cast<int64_t>(page->jobs.size()) : -1;
  }

  SimulatedClock clock_;
  JobStore* store_ = nullptr;  // owned by server_
  std::unique_ptr<AdjutantServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobQueue::Stub> queue_;
  std::unique_ptr<v1::Scheduler::Stub> scheduler_;
};

// One row per RPC: the roles that may call it (admin always may) and a
// call with a well-formed request.
struct Rpc {
  std::string name;
  std::vector<Role> roles;  // empty: every valid token
  std::function<grpc::Status(AuthServerTest*, grpc::ClientContext*)> call;
};

std::vector<Rpc> Rpcs(v1::JobQueue::Stub* q, v1::Scheduler::Stub* s) {
  const auto job_id = [](auto* request) {
    request->set_job_id("no-such-job");
    return request;
  };
  return {
      {"Enqueue",
       {Role::kProducer},
       [q](AuthServerTest*, grpc::ClientContext* c) {
         v1::EnqueueRequest r;
         r.set_job_type("t");
         v1::EnqueueResponse out;
         return q->Enqueue(c, r, &out);
       }},
      {"EnqueueBatch",
       {Role::kProducer},
       [q](AuthServerTest*, grpc::ClientContext* c) {
         v1::EnqueueBatchRequest r;
         r.add_jobs()->set_job_type("t");
         v1::EnqueueBatchResponse out;
         return q->EnqueueBatch(c, r, &out);
       }},
      {"Dequeue",
       {Role::kWorker},
       [q](AuthServerTest*, grpc::ClientContext* c) {
         v1::DequeueRequest r;
         r.set_queue("auth-empty");  // nothing to lease, no wait
         v1::DequeueResponse out;
         return q->Dequeue(c, r, &out);
       }},
      {"Ack",
       {Role::kWorker},
       [q, job_id](AuthServerTest*, grpc::ClientContext* c) {
         v1::AckRequest r;
         job_id(&r)->set_lease_token("t");
         v1::AckResponse out;
         return q->Ack(c, r, &out);
       }},
      {"Nack",
       {Role::kWorker},
       [q, job_id](AuthServerTest*, grpc::ClientContext* c) {
         v1::NackRequest r;
         job_id(&r)->set_lease_token("t");
         v1::NackResponse out;
         return q->Nack(c, r, &out);
       }},
      {"AckBatch",
       {Role::kWorker},
       [q](AuthServerTest*, grpc::ClientContext* c) {
         v1::AckBatchRequest r;
         v1::AckRequest* ack = r.add_acks();
         ack->set_job_id("no-such-job");
         ack->set_lease_token("t");
         v1::AckBatchResponse out;
         return q->AckBatch(c, r, &out);
       }},
      {"Work",
       {Role::kWorker},
       [q](AuthServerTest*, grpc::ClientContext* c) {
         auto stream = q->Work(c);
         v1::WorkRequest r;
         r.mutable_start()->set_queue("auth-empty");  // nothing to lease
         r.mutable_start()->set_capacity(1);
         stream->Write(r);
         stream->WritesDone();
         v1::WorkResponse out;
         while (stream->Read(&out)) {
         }
         return stream->Finish();
       }},
      {"ExtendLease",
       {Role::kWorker},
       [q, job_id](AuthServerTest*, grpc::ClientContext* c) {
         v1::ExtendLeaseRequest r;
         job_id(&r)->set_lease_token("t");
         v1::ExtendLeaseResponse out;
         return q->ExtendLease(c, r, &out);
       }},
      {"GetJob",
       {},
       [q, job_id](AuthServerTest*, grpc::ClientContext* c) {
         v1::GetJobRequest r;
         v1::Job out;
         return q->GetJob(c, *job_id(&r), &out);
       }},
      {"CancelJob",
       {Role::kAdmin},
       [q, job_id](AuthServerTest*, grpc::ClientContext* c) {
         v1::CancelJobRequest r;
         v1::Job out;
         return q->CancelJob(c, *job_id(&r), &out);
       }},
      {"RequeueJob",
       {Role::kAdmin},
       [q, job_id](AuthServerTest*, grpc::ClientContext* c) {
         v1::RequeueJobRequest r;
         v1::Job out;
         return q->RequeueJob(c, *job_id(&r), &out);
       }},
      {"ListJobs",
       {},
       [q](AuthServerTest*, grpc::ClientContext* c) {
         v1::ListJobsResponse out;
         return q->ListJobs(c, v1::ListJobsRequest(), &out);
       }},
      {"GetStats",
       {},
       [q](AuthServerTest*, grpc::ClientContext* c) {
         v1::GetStatsResponse out;
         return q->GetStats(c, v1::GetStatsRequest(), &out);
       }},
      {"RegisterCron",
       {Role::kAdmin},
       [s](AuthServerTest*, grpc::ClientContext* c) {
         v1::RegisterCronRequest r;
         r.set_name("nightly");
         r.set_schedule("0 3 * * *");
         r.mutable_job()->set_job_type("t");
         v1::Cron out;
         return s->RegisterCron(c, r, &out);
       }},
      {"UnregisterCron",
       {Role::kAdmin},
       [s](AuthServerTest*, grpc::ClientContext* c) {
         v1::UnregisterCronRequest r;
         r.set_name("no-such-cron");
         v1::UnregisterCronResponse out;
         return s->UnregisterCron(c, r, &out);
       }},
      {"GetCron",
       {},
       [s](AuthServerTest*, grpc::ClientContext* c) {
         v1::GetCronRequest r;
         r.set_name("no-such-cron");
         v1::Cron out;
         return s->GetCron(c, r, &out);
       }},
      {"ListCrons",
       {},
       [s](AuthServerTest*, grpc::ClientContext* c) {
         v1::ListCronsResponse out;
         return s->ListCrons(c, v1::ListCronsRequest(), &out);
       }},
      {"PreviewCron",
       {},
       [s](AuthServerTest*, grpc::ClientContext* c) {
         v1::PreviewCronRequest r;
         r.set_schedule("0 9 * * *");
         v1::PreviewCronResponse out;
         return s->PreviewCron(c, r, &out);
       }},
      {"SetLeadership",
       {Role::kLeader},
       [s](AuthServerTest*, grpc::ClientContext* c) {
         v1::SetLeadershipRequest r;
         r.set_leader(false);
         v1::Leadership out;
         return s->SetLeadership(c, r, &out);
       }},
      {"GetLeadership",
       {},
       [s](AuthServerTest*, grpc::ClientContext* c) {
         v1::Leadership out;
         return s->GetLeadership(c, v1::GetLeadershipRequest(), &out);
       }},
  };
}

// Table-driven: every RPC × every credential.
TEST_F(AuthServerTest, EveryRpcChecksTheTokenAndTheRole) {
  const std::vector<Rpc> rpcs = Rpcs(queue_.get(), scheduler_.get());
  // Every RPC of both services is in the table.
  const auto* job_queue =
      v1::EnqueueRequest::descriptor()->file()->FindServiceByName("JobQueue");
  const auto* scheduler =
      v1::RegisterCronRequest::descriptor()->file()->FindServiceByName(
          "Scheduler");
  ASSERT_NE(job_queue, nullptr);
  ASSERT_NE(scheduler, nullptr);
  EXPECT_EQ(rpcs.size(), static_cast<size_t>(job_queue->method_count() +
                                             scheduler->method_count()));
  for (const Rpc& rpc : rpcs) {
    for (const Credential& credential : Credentials()) {
      SCOPED_TRACE(absl::StrCat(rpc.name, " with ", credential.label));
      const grpc::Status status =
          rpc.call(this, Context(credential.authorization).get());
      if (!credential.role.has_value()) {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
            << status.error_message();
        continue;
      }
      const bool allowed = rpc.roles.empty() ||
                           *credential.role == Role::kAdmin ||
                           std::find(rpc.roles.begin(), rpc.roles.end(),
                                     *credential.role) != rpc.roles.end();
      if (allowed) {
        // The call went through to its handler: OK, or the answer to this
        // request (NOT_FOUND for an unknown job or schedule).
        EXPECT_TRUE(status.ok() ||
                    status.error_code() == grpc::StatusCode::NOT_FOUND)
            << status.error_code() << ": " << status.error_message();
      } else {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
            << status.error_message();
        EXPECT_THAT(status.error_message(), HasSubstr(rpc.name));
      }
    }
  }
}

TEST_F(AuthServerTest, TheTokenIsCheckedBeforeTheRequest) {
  // An invalid request without a token: UNAUTHENTICATED, not
  // INVALID_ARGUMENT; with a producer token, INVALID_ARGUMENT.
  v1::EnqueueRequest invalid;  // no job_type
  v1::EnqueueResponse out;
  EXPECT_EQ(queue_->Enqueue(Context("").get(), invalid, &out).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(queue_
                ->Enqueue(Context("Bearer producer-token-0123456789").get(),
                          invalid, &out)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // A refused valid request changes nothing.
  v1::EnqueueRequest valid;
  valid.set_job_type("t");
  EXPECT_EQ(queue_
                ->Enqueue(Context("Bearer leader-token-0123456789").get(),
                          valid, &out)
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(JobCount(), 0);
  ASSERT_TRUE(queue_
                  ->Enqueue(Context("Bearer producer-token-0123456789").get(),
                            valid, &out)
                  .ok());
  EXPECT_EQ(JobCount(), 1);
}

// The acceptance, in process: no token, a producer claiming
// leadership, the leader.
TEST_F(AuthServerTest, OnlyTheLeaderTokenSetsLeadership) {
  v1::SetLeadershipRequest request;
  request.set_leader(true);
  request.set_term(1);
  v1::Leadership out;
  grpc::Status status =
      scheduler_->SetLeadership(Context("").get(), request, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  status = scheduler_->SetLeadership(
      Context("Bearer producer-token-0123456789").get(), request, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr("'web'"));
  EXPECT_FALSE(server_->scheduler()->GetLeadership()->leader);
  status = scheduler_->SetLeadership(
      Context("Bearer leader-token-0123456789").get(), request, &out);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(out.leader());
  EXPECT_EQ(out.term(), 1);
}

TEST_F(AuthServerTest, HealthNeedsNoToken) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const char* service : {"", "adjutant.v1.JobQueue"}) {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(Context("").get(), request, &response);
    ASSERT_TRUE(status.ok()) << service << ": " << status.error_message();
    EXPECT_EQ(response.status(),
              grpc::health::v1::HealthCheckResponse::SERVING);
  }
}

}  // namespace
}  // namespace adjutant
