// AdjutantServer::Shutdown() through real gRPC: a call that comes after
// shutdown began is refused with UNAVAILABLE while an in-flight call still
// finishes; with no time left (shutdown_grace 0) in-flight calls are
// cancelled. Store hooks hold an Enqueue in flight and, to pause Shutdown()
// at a known point, the retention thread's first batch (Shutdown() waits
// for it after it began refusing calls, before gRPC's own shutdown). No
// sleeping: the test decides when each ends.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "storage/memory_job_store.h"
#include "tests/fakes/faulty_job_store.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {
namespace {

using ::testing::HasSubstr;

class ShutdownTest : public ::testing::Test {
 protected:
  void StartServer(absl::Duration shutdown_grace) {
    auto store = std::make_unique<FaultyJobStore>(&base_);
    faulty_ = store.get();
    // The first Enqueue is held until the test releases it.
    faulty_->on_enqueue = [this] {
      if (held_.exchange(true)) return;
      entered_.Notify();
      release_.WaitForNotification();
    };
    faulty_->on_prune_finished_jobs = [this] {
      if (prune_held_.exchange(true)) return;
      release_prune_.WaitForNotification();
    };
    AdjutantServerConfig config;
    config.listen_address = "127.0.0.1:0";
    config.executor_threads = 2;
    config.shutdown_grace = shutdown_grace;
    server_ =
        std::make_unique<AdjutantServer>(config, std::move(store), &clock_);
    absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started;
    stub_ = v1::JobQueue::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                            grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (!release_prune_.HasBeenNotified()) release_prune_.Notify();
    if (!release_.HasBeenNotified()) release_.Notify();
    if (enqueue_.joinable()) enqueue_.join();
    if (shutdown_.joinable()) shutdown_.join();
    server_.reset();
  }

  // Starts an Enqueue on its own thread; returns once the store holds it.
  void StartHeldEnqueue() {
    enqueue_ = std::thread([this] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(60));
      v1::EnqueueRequest request;
      request.set_queue("q");
      request.set_job_type("t");
      enqueue_status_ = stub_->Enqueue(&context, request, &enqueue_response_);
      enqueue_done_.Notify();
    });
    entered_.WaitForNotification();
  }

  // A fresh GetJob: its status.
  grpc::Status Probe() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::GetJobRequest request;
    request.set_job_id("no-such-job");
    v1::Job job;
    return stub_->GetJob(&context, request, &job);
  }

  SimulatedClock clock_;
  MemoryJobStore base_;
  FaultyJobStore* faulty_ = nullptr;  // owned by server_
  std::atomic<bool> held_{false}, prune_held_{false};
  absl::Notification entered_, release_, enqueue_done_, release_prune_;
  std::unique_ptr<AdjutantServer> server_;
  std::unique_ptr<v1::JobQueue::Stub> stub_;
  std::thread enqueue_, shutdown_;
  grpc::Status enqueue_status_;
  v1::EnqueueResponse enqueue_response_;
};

TEST_F(ShutdownTest, NewCallsAreRefusedWhileInFlightCallsFinish) {
  ASSERT_NO_FATAL_FAILURE(StartServer(absl::Seconds(60)));
  EXPECT_EQ(Probe().error_code(), grpc::StatusCode::NOT_FOUND);
  StartHeldEnqueue();

  shutdown_ = std::thread([this] { server_->Shutdown(); });
  // Shutdown() stops at the held retention batch once it refuses new
  // calls, before gRPC's own shutdown: so the first probe that is not
  // answered NOT_FOUND (sent before shutdown began) is a refusal.
  grpc::Status probe;
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  do {
    probe = Probe();
  } while (probe.error_code() == grpc::StatusCode::NOT_FOUND &&
           std::chrono::steady_clock::now() < give_up);
  EXPECT_EQ(probe.error_code(), grpc::StatusCode::UNAVAILABLE)
      << probe.error_message();
  EXPECT_THAT(probe.error_message(), HasSubstr("server shutting down"));
  EXPECT_FALSE(enqueue_done_.HasBeenNotified());

  // gRPC's shutdown goes on; the in-flight call finishes, with its answer,
  // and only then does the shutdown complete.
  release_prune_.Notify();
  release_.Notify();
  enqueue_.join();
  EXPECT_TRUE(enqueue_status_.ok()) << enqueue_status_.error_message();
  shutdown_.join();
  absl::StatusOr<Job> job = base_.GetJob(enqueue_response_.job_id());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, JobState::kPending);
}

TEST_F(ShutdownTest, InFlightCallsAreCancelledWhenTheTimeoutIsUp) {
  ASSERT_NO_FATAL_FAILURE(StartServer(absl::ZeroDuration()));
  release_prune_.Notify();
  StartHeldEnqueue();
  shutdown_ = std::thread([this] { server_->Shutdown(); });
  // The client hears the cancellation while the store still holds the call.
  enqueue_done_.WaitForNotification();
  EXPECT_FALSE(enqueue_status_.ok());
  EXPECT_NE(enqueue_status_.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << "the call was not cancelled by the shutdown";
  release_.Notify();
  shutdown_.join();
}

}  // namespace
}  // namespace adjutant
