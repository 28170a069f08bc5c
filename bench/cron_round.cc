// cron_round: how long one scheduler round takes with many schedules due at
// once, on a real SQLite file (synchronous=FULL) in a fresh temp directory.
//
//   cron_round [--schedules N] [--rounds R] [--parallelism P]
//
// Registers N per-second schedules, leads, then R times moves a manual wall
// clock one second on and times Scheduler::RunPassForTest (every schedule
// fires one tick per round). Prints the round times and the jobs fired. The
// wall clock is the program's own (no sleeping), so the figure is the cost
// of a round, not of waiting for it.
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "spdlog/spdlog.h"
#include "storage/sqlite_job_store.h"

namespace {

// Wall time set by the program; monotonic time is real.
class ManualWallClock final : public adjutant::Clock {
 public:
  explicit ManualWallClock(absl::Time now) : now_(now) {}
  absl::Time Now() override {
    absl::MutexLock l(&mu_);
    return now_;
  }
  absl::Duration Monotonic() override {
    return absl::Nanoseconds(
        std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now().time_since_epoch())
            .count());
  }
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) override {
    (void)deadline;  // RunPassForTest never sleeps
    return cond.Eval();
  }
  void Advance(absl::Duration d) {
    absl::MutexLock l(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

int main(int argc, char** argv) {
  int schedules = 1000;
  int rounds = 5;
  int parallelism = adjutant::SchedulerConfig().cron_parallelism;
  CLI::App app{"cron_round: time scheduler rounds on a real SQLite file"};
  app.add_option("--schedules", schedules, "per-second schedules")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--rounds", rounds, "rounds timed")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--parallelism", parallelism,
                 "SchedulerConfig::cron_parallelism")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  std::string dir_template =
      (std::filesystem::temp_directory_path() / "cron_round.XXXXXX").string();
  if (mkdtemp(dir_template.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::filesystem::path dir(dir_template);
  int exit_code = 0;
  {
    adjutant::SqliteOptions options;
    options.path = (dir / "adjutant.db").string();
    options.synchronous = adjutant::SqliteOptions::Synchronous::kFull;
    auto store = adjutant::SqliteJobStore::Open(options);
    if (!store.ok()) {
      std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
      return 1;
    }
    ManualWallClock clock(absl::FromUnixSeconds(1800000000));
    adjutant::SchedulerConfig config;
    config.cron_parallelism = parallelism;
    adjutant::Scheduler scheduler(store->get(), &clock, config);
    for (int i = 0; i < schedules; ++i) {
      adjutant::CronDefinition d;
      d.name = "s" + std::to_string(i);
      d.schedule = "* * * * * *";
      d.job.queue = "q";
      d.job.type = "tick";
      if (auto r = scheduler.Register(d); !r.ok()) {
        std::fprintf(stderr, "register: %s\n", r.status().ToString().c_str());
        return 1;
      }
    }
    if (auto l = scheduler.SetLeadership(true, 1, absl::ZeroDuration());
        !l.ok() || !l->leader) {
      std::fprintf(stderr, "leadership refused\n");
      return 1;
    }
    std::vector<double> ms;
    for (int r = 0; r < rounds; ++r) {
      clock.Advance(absl::Seconds(1));
      const auto start = std::chrono::steady_clock::now();
      scheduler.RunPassForTest();
      ms.push_back(std::chrono::duration<double, std::milli>(
                       std::chrono::steady_clock::now() - start)
                       .count());
    }
    auto stats = (*store)->QueueStatistics(clock.Now());
    int64_t pending = 0;
    if (stats.ok()) {
      for (const auto& q : *stats) pending += q.pending;
    }
    std::printf(
        "schedules %d parallelism %d rounds %d fired %lld (expected %lld)\n",
        schedules, parallelism, rounds, static_cast<long long>(pending),
        static_cast<long long>(schedules) * rounds);
    std::sort(ms.begin(), ms.end());
    std::printf("round ms: min %.1f median %.1f max %.1f\n", ms.front(),
                ms[ms.size() / 2], ms.back());
    if (pending != static_cast<int64_t>(schedules) * rounds) exit_code = 2;
  }
  std::filesystem::remove_all(dir);
  return exit_code;
}
