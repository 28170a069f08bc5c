// An in-process AdjutantServer on 127.0.0.1:0 with a SimulatedClock, a
// JobQueue stub connected to it, and helpers; parameterized by the store
// behind it so that every case runs on each backend.
#ifndef ADJUTANT_TESTS_SERVER_SERVER_TEST_UTIL_H_
#define ADJUTANT_TESTS_SERVER_SERVER_TEST_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "storage/job_store.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {

struct StoreBackend {
  std::string name;
  // Makes a fresh, empty store keeping its files (if any) under `dir`.
  std::function<absl::StatusOr<std::unique_ptr<JobStore>>(
      const std::string& dir)>
      make;
};

// The backends every server test runs on: "Memory" and "Sqlite".
std::vector<StoreBackend> AllStoreBackends();

// So that gtest names the backend instead of dumping its bytes.
inline void PrintTo(const StoreBackend& backend, std::ostream* os) {
  *os << backend.name;
}

class ServerTest : public ::testing::TestWithParam<StoreBackend> {
 public:
  static std::string Name(const ::testing::TestParamInfo<StoreBackend>& info) {
    return info.param.name;
  }

 protected:
  // Small enough to test the payload limit cheaply.
  static constexpr int64_t kMaxPayloadBytes = 4096;
  static constexpr int32_t kDefaultMaxAttempts = 3;

  void SetUp() override;
  void TearDown() override;

  // ---- RPC helpers (each asserts the call succeeded) ----------------------

  // Enqueues a job of type "t" (unless the request sets one) and returns its
  // id.
  std::string Enqueue(v1::EnqueueRequest request);
  std::string Enqueue(const std::string& queue, int32_t priority = 0);
  // Leases up to `max_jobs` jobs of `queue` without waiting.
  std::vector<v1::LeasedJob> Lease(const std::string& queue,
                                   absl::Duration lease_duration,
                                   int max_jobs = 1);
  v1::Job GetJob(const std::string& job_id);

  // Any call: returns its status.
  grpc::Status Ack(const std::string& job_id, const std::string& token);
  grpc::Status ExtendLease(const std::string& job_id, const std::string& token,
                           absl::Duration lease_duration);

  // ---- Store helpers ------------------------------------------------------

  // Every job in the store, rendered with every stored field: equal strings
  // mean nothing changed.
  std::string StoreSnapshot();

  // Lets the background timer handle everything due at the clock's current
  // time (it is back asleep, with a later deadline).
  void SettleTimer();

  std::unique_ptr<grpc::ClientContext> Context();

  SimulatedClock clock_;
  std::string dir_;
  JobStore* store_ = nullptr;  // owned by server_
  std::unique_ptr<AdjutantServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobQueue::Stub> stub_;

  absl::Mutex finished_mu_;
  // Jobs the server reported to the cron hook, in order.
  std::vector<Job> finished_ ABSL_GUARDED_BY(finished_mu_);
};

}  // namespace adjutant

#endif  // ADJUTANT_TESTS_SERVER_SERVER_TEST_UTIL_H_
