#include "server/retention.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

constexpr absl::Duration kMinInterval = absl::Seconds(1);
constexpr absl::Duration kMaxInterval = absl::Minutes(1);

// The cutoff for a retention: InfinitePast (delete nothing) for zero.
absl::Time Cutoff(absl::Time now, absl::Duration retention) {
  return retention == absl::ZeroDuration() ? absl::InfinitePast()
                                           : now - retention;
}

}  // namespace

absl::Status ValidateRetentionConfig(const RetentionConfig& config) {
  if (config.finished < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--retention: ", absl::FormatDuration(config.finished),
        " is negative; give a duration such as 24h (0 keeps finished jobs "
        "forever)"));
  }
  if (config.dead < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dead-retention: ", absl::FormatDuration(config.dead),
        " is negative; give a duration such as 168h (0 keeps dead jobs "
        "forever)"));
  }
  if (config.batch_size < 1 || config.batch_size > kMaxRetentionBatchSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("--retention-batch-size: ", config.batch_size,
                     " is outside 1..", kMaxRetentionBatchSize));
  }
  return absl::OkStatus();
}

absl::Duration RetentionPruner::Interval(const RetentionConfig& config) {
  absl::Duration shortest = absl::InfiniteDuration();
  for (absl::Duration d : {config.finished, config.dead}) {
    if (d > absl::ZeroDuration()) shortest = std::min(shortest, d);
  }
  if (shortest == absl::InfiniteDuration()) return shortest;
  return std::clamp(shortest / 10, kMinInterval, kMaxInterval);
}

RetentionPruner::RetentionPruner(JobStore* store, Clock* clock,
                                 RetentionConfig config)
    : store_(store), clock_(clock), config_(std::move(config)) {}

RetentionPruner::~RetentionPruner() { Stop(); }

void RetentionPruner::Start() {
  if (Interval(config_) == absl::InfiniteDuration()) {
    spdlog::info("retention: finished jobs are kept forever");
    return;
  }
  thread_ = std::thread([this] { Loop(); });
  pthread_setname_np(thread_.native_handle(), "retention");
}

void RetentionPruner::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool RetentionPruner::Stopping() {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

absl::StatusOr<int64_t> RetentionPruner::PruneRound(absl::Time now) {
  const absl::Time finished_before = Cutoff(now, config_.finished);
  const absl::Time dead_before = Cutoff(now, config_.dead);
  int64_t deleted = 0;
  for (;;) {
    absl::StatusOr<int64_t> batch = store_->PruneFinishedJobs(
        finished_before, dead_before, config_.batch_size);
    if (!batch.ok()) return batch.status();
    deleted += *batch;
    {
      absl::MutexLock lock(&mu_);
      deleted_ += *batch;
    }
    if (*batch < config_.batch_size || Stopping()) return deleted;
    // Each batch is its own transaction: let the calls waiting for the
    // store go first.
    std::this_thread::yield();
  }
}

void RetentionPruner::Loop() {
  const absl::Duration interval = Interval(config_);
  for (;;) {
    const absl::Time now = clock_->Now();
    absl::StatusOr<int64_t> deleted = PruneRound(now);
    if (!deleted.ok()) {
      spdlog::warn("retention: deleting finished jobs failed: {}",
                   deleted.status().ToString());
    } else if (*deleted > 0) {
      spdlog::info(
          "retention: deleted {} finished job(s) (SUCCEEDED/CANCELLED kept "
          "{}, DEAD kept {})",
          *deleted,
          config_.finished == absl::ZeroDuration()
              ? "forever"
              : absl::FormatDuration(config_.finished),
          config_.dead == absl::ZeroDuration()
              ? "forever"
              : absl::FormatDuration(config_.dead));
    }
    absl::MutexLock lock(&mu_);
    ++rounds_;
    clock_->AwaitWithDeadline(&mu_, absl::Condition(&stopping_),
                              now + interval);
    if (stopping_) return;
  }
}

void RetentionPruner::AwaitRoundsForTest(int64_t n) {
  absl::MutexLock lock(&mu_);
  const auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return rounds_ >= n || stopping_;
  };
  mu_.Await(absl::Condition(&reached));
}

int64_t RetentionPruner::RoundsForTest() {
  absl::MutexLock lock(&mu_);
  return rounds_;
}

int64_t RetentionPruner::DeletedCountForTest() {
  absl::MutexLock lock(&mu_);
  return deleted_;
}

}  // namespace adjutant
