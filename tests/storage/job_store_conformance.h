// The conformance suite every JobStore backend passes. The cases live in
// job_store_conformance_test.cc; each backend instantiates them with its own
// factory:
//
//   INSTANTIATE_TEST_SUITE_P(Sqlite, JobStoreConformance,
//                            ::testing::Values(SqliteFactory()),
//                            JobStoreConformance::Name);
#ifndef ADJUTANT_TESTS_STORAGE_JOB_STORE_CONFORMANCE_H_
#define ADJUTANT_TESTS_STORAGE_JOB_STORE_CONFORMANCE_H_

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "storage/job_store.h"

namespace adjutant {

struct StoreFactory {
  std::string name;
  // Makes a fresh, empty store keeping its files (if any) under `dir`, an
  // empty directory that the fixture removes afterwards. The store uses the
  // default BackoffPolicy (the cases check Nack's delay against it).
  std::function<absl::StatusOr<std::unique_ptr<JobStore>>(
      const std::string& dir)>
      make;
  // Optional, for durable backends: opens the store that `make` created in
  // `dir` again, after the previous instance was destroyed. Unset (the
  // memory store): the cases about surviving a restart are skipped.
  std::function<absl::StatusOr<std::unique_ptr<JobStore>>(
      const std::string& dir)>
      reopen = nullptr;
  // Makes a fresh, empty store under `dir` (as `make`) whose Enqueue
  // refuses to take a queue past `max_pending_per_queue` pending jobs.
  std::function<absl::StatusOr<std::unique_ptr<JobStore>>(
      const std::string& dir, int64_t max_pending_per_queue)>
      make_limited = nullptr;
};

// Prints JobState values by name in test failure messages.
inline void PrintTo(JobState state, std::ostream* os) {
  *os << JobStateName(state);
}

// Names the backend, not its bytes, in test failure messages.
inline void PrintTo(const StoreFactory& factory, std::ostream* os) {
  *os << factory.name;
}

class JobStoreConformance : public ::testing::TestWithParam<StoreFactory> {
 public:
  static std::string Name(const ::testing::TestParamInfo<StoreFactory>& info) {
    return info.param.name;
  }

 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-store-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto store = GetParam().make(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  // Destroys store_ and opens it again with GetParam().reopen.
  // REQUIRES: GetParam().reopen is set.
  void Reopen() {
    store_.reset();
    auto store = GetParam().reopen(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  void TearDown() override {
    store_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string dir_;
  std::unique_ptr<JobStore> store_;
  // The wall time the cases pass as `now`; they move it by hand.
  absl::Time now_ = absl::FromUnixSeconds(1767225600);  // 2026-01-01 UTC
};

// The per-queue pending limit (StoreFactory::make_limited); a backend
// instantiates it next to JobStoreConformance, with the same factory.
class PendingLimit : public JobStoreConformance {
 protected:
  static constexpr int64_t kLimit = 3;

  // A store under its own subdirectory whose queues hold at most kLimit
  // pending jobs. Skips the case for a backend without one.
  std::unique_ptr<JobStore> Limited() {
    if (!GetParam().make_limited) return nullptr;
    const std::string dir = dir_ + "/limited";
    std::filesystem::create_directory(dir);
    auto store = GetParam().make_limited(dir, kLimit);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  int64_t Pending(JobStore& store, const std::string& queue) {
    absl::StatusOr<std::vector<QueueStats>> stats = store.QueueStatistics(now_);
    EXPECT_TRUE(stats.ok()) << stats.status();
    if (!stats.ok()) return -1;
    for (const QueueStats& q : *stats) {
      if (q.queue == queue) return q.pending + q.leased;
    }
    return 0;
  }
};

}  // namespace adjutant

#endif  // ADJUTANT_TESTS_STORAGE_JOB_STORE_CONFORMANCE_H_
