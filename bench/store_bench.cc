// adjutant_store_bench: durable write throughput of SqliteJobStore under
// concurrent callers, with group commit (the default max_group_size) and
// without (max_group_size 1: every call its own transaction and fsync, as
// the store worked before group commit), side by side in one run.
//
// Each configuration gets a fresh database in a temporary directory, with
// synchronous=FULL, and runs two phases for --seconds each:
//   enqueue:   every thread enqueues one job per call;
//   lease+ack: every thread leases one job (Dequeue, max_jobs 1) and acks
//              it, on a queue filled beforehand.
// It prints calls per second (jobs/s for enqueue, cycles/s for lease+ack)
// and the COMMITs per second the store ran. Wall-clock figures: this is a
// measurement, not a test; run it on an otherwise idle machine.
//
//   adjutant_store_bench [--threads=64,4] [--group-sizes=256,1]
//                        [--seconds=3] [--dir=/tmp]
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "storage/job.h"
#include "storage/sqlite_job_store.h"

namespace adjutant {
namespace {

struct BenchFlags {
  std::vector<int> threads = {64, 4};
  std::vector<int> group_sizes = {SqliteOptions().max_group_size, 1};
  double seconds = 3;
  std::string dir = std::filesystem::temp_directory_path().string();
};

bool ParseInts(absl::string_view text, std::vector<int>* out) {
  out->clear();
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int value = 0;
    if (!absl::SimpleAtoi(part, &value) || value < 1) return false;
    out->push_back(value);
  }
  return !out->empty();
}

bool ParseFlags(int argc, char** argv, BenchFlags* flags) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    bool ok = false;
    if (absl::ConsumePrefix(&arg, "--threads=")) {
      ok = ParseInts(arg, &flags->threads);
    } else if (absl::ConsumePrefix(&arg, "--group-sizes=")) {
      ok = ParseInts(arg, &flags->group_sizes);
    } else if (absl::ConsumePrefix(&arg, "--seconds=")) {
      ok = absl::SimpleAtod(arg, &flags->seconds) && flags->seconds > 0;
    } else if (absl::ConsumePrefix(&arg, "--dir=")) {
      flags->dir = std::string(arg);
      ok = !flags->dir.empty();
    }
    if (!ok) {
      std::fprintf(stderr,
                   "adjutant_store_bench: bad argument %s\nusage: "
                   "adjutant_store_bench [--threads=64,4] "
                   "[--group-sizes=256,1] [--seconds=3] [--dir=/tmp]\n",
                   argv[i]);
      return false;
    }
  }
  return true;
}

NewJob MakeJob() {
  NewJob job;
  job.queue = "bench";
  job.type = "t";
  job.payload = std::string(100, 'p');
  job.max_attempts = 3;
  return job;
}

struct PhaseResult {
  double calls_per_second = 0;
  double commits_per_second = 0;
  int64_t errors = 0;
};

// Runs `call` on `threads` threads until `seconds` pass or a call says it
// has nothing left to do (returns false).
template <typename Call>
PhaseResult RunPhase(SqliteJobStore& store, int threads, double seconds,
                     Call call) {
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> errors{0};
  std::atomic<bool> stop{false};
  const int64_t commits_before = store.CommitsForTest();
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(seconds);
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed) && absl::Now() < deadline) {
        absl::StatusOr<bool> more = call();
        if (!more.ok()) {
          errors.fetch_add(1);
          continue;
        }
        if (!*more) {
          stop.store(true);
          break;
        }
        calls.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  PhaseResult result;
  result.calls_per_second = calls.load() / elapsed;
  result.commits_per_second =
      (store.CommitsForTest() - commits_before) / elapsed;
  result.errors = errors.load();
  return result;
}

int Run(const BenchFlags& flags) {
  std::printf("%-8s %-6s %14s %10s %14s %10s\n", "threads", "group",
              "enqueue/s", "commits/s", "lease+ack/s", "commits/s");
  for (int threads : flags.threads) {
    for (int group_size : flags.group_sizes) {
      std::string dir = absl::StrCat(flags.dir, "/adjutant-store-bench-XXXXXX");
      if (mkdtemp(dir.data()) == nullptr) {
        std::perror("mkdtemp");
        return 1;
      }
      PhaseResult enqueue, cycle;
      {
        SqliteOptions options;
        options.path = dir + "/bench.db";
        options.max_group_size = group_size;
        absl::StatusOr<std::unique_ptr<SqliteJobStore>> opened =
            SqliteJobStore::Open(options);
        if (!opened.ok()) {
          std::fprintf(stderr, "%s\n", opened.status().ToString().c_str());
          return 1;
        }
        SqliteJobStore& store = **opened;
        const std::vector<NewJob> one = {MakeJob()};
        enqueue = RunPhase(store, threads, flags.seconds,
                           [&]() -> absl::StatusOr<bool> {
                             absl::StatusOr<std::vector<EnqueueResult>> r =
                                 store.Enqueue(one, absl::Now());
                             if (!r.ok()) return r.status();
                             return true;
                           });
        // Enough jobs for the cycles (whatever the enqueue phase left, plus
        // big batches: one transaction each).
        const std::vector<NewJob> batch(1000, MakeJob());
        for (int i = 0; i < 100; ++i) {
          if (!store.Enqueue(batch, absl::Now()).ok()) return 1;
        }
        DequeueOptions lease;
        lease.queue = "bench";
        lease.max_jobs = 1;
        lease.lease_duration = absl::Minutes(5);
        lease.worker_id = "bench";
        cycle = RunPhase(
            store, threads, flags.seconds, [&]() -> absl::StatusOr<bool> {
              absl::StatusOr<std::vector<Lease>> leases =
                  store.Dequeue(lease, absl::Now());
              if (!leases.ok()) return leases.status();
              if (leases->empty()) return false;
              const Lease& l = (*leases)[0];
              absl::Status acked = store.Ack(l.job.id, l.token, absl::Now());
              if (!acked.ok()) return acked;
              return true;
            });
      }
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
      std::printf("%-8d %-6d %14.0f %10.0f %14.0f %10.0f\n", threads,
                  group_size, enqueue.calls_per_second,
                  enqueue.commits_per_second, cycle.calls_per_second,
                  cycle.commits_per_second);
      if (enqueue.errors + cycle.errors > 0) {
        std::printf("  (%lld calls failed)\n",
                    static_cast<long long>(enqueue.errors + cycle.errors));
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace adjutant

int main(int argc, char** argv) {
  adjutant::BenchFlags flags;
  if (!adjutant::ParseFlags(argc, argv, &flags)) return 2;
  return adjutant::Run(flags);
}
