// The systemd watchdog: pinged after each store check that passed, never
// after one that failed, at the interval the service manager asked for.
#include "server/service_notifier.h"

#include <stdlib.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "server/store_notifier.h"
#include "storage/memory_job_store.h"
#include "tests/fakes/faulty_job_store.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Records each message as a line: "READY <status>", "STATUS <status>",
// "STOPPING <status>", "WATCHDOG".
class RecordingNotifier final : public ServiceNotifier {
 public:
  void Ready(const std::string& status) override { Add("READY " + status); }
  void Status(const std::string& status) override { Add("STATUS " + status); }
  void Stopping(const std::string& status) override {
    Add("STOPPING " + status);
  }
  void WatchdogPing() override { Add("WATCHDOG"); }

  // Returns the messages recorded since the last call.
  std::vector<std::string> Take() {
    absl::MutexLock lock(&mu_);
    return std::exchange(messages_, {});
  }

 private:
  void Add(std::string message) {
    absl::MutexLock lock(&mu_);
    messages_.push_back(std::move(message));
  }

  absl::Mutex mu_;
  std::vector<std::string> messages_ ABSL_GUARDED_BY(mu_);
};

TEST(HealthCheckIntervalForTest, HalfTheWatchdogWhenThatIsSooner) {
  EXPECT_EQ(HealthCheckIntervalFor(absl::Seconds(5), std::nullopt),
            absl::Seconds(5));
  EXPECT_EQ(HealthCheckIntervalFor(absl::Seconds(5), absl::Seconds(30)),
            absl::Seconds(5));
  EXPECT_EQ(HealthCheckIntervalFor(absl::Seconds(5), absl::Milliseconds(400)),
            absl::Milliseconds(200));
}

TEST(StoreWatchdogTest, PingsOnlyWhileTheStoreAnswers) {
  RecordingNotifier notifier;
  StoreWatchdog watchdog(&notifier, /*ping_watchdog=*/true);
  watchdog.SetServingStatus("serving on 127.0.0.1:50051");

  watchdog.OnHealthCheck(absl::OkStatus());
  EXPECT_THAT(notifier.Take(), ElementsAre("WATCHDOG"));

  watchdog.OnHealthCheck(absl::UnavailableError("disk I/O error"));
  std::vector<std::string> failed = notifier.Take();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_THAT(failed[0], HasSubstr("STATUS the store does not answer"));
  EXPECT_THAT(failed[0], HasSubstr("disk I/O error"));

  // Still failing: no ping, and the status line is not repeated.
  watchdog.OnHealthCheck(absl::UnavailableError("disk I/O error"));
  EXPECT_THAT(notifier.Take(), IsEmpty());

  watchdog.OnHealthCheck(absl::OkStatus());
  EXPECT_THAT(notifier.Take(),
              ElementsAre("STATUS serving on 127.0.0.1:50051", "WATCHDOG"));
}

TEST(StoreWatchdogTest, WithoutAWatchdogOnlyTheStatusLines) {
  RecordingNotifier notifier;
  StoreWatchdog watchdog(&notifier, /*ping_watchdog=*/false);
  watchdog.OnHealthCheck(absl::OkStatus());
  EXPECT_THAT(notifier.Take(), IsEmpty());
  watchdog.OnHealthCheck(absl::UnavailableError("disk I/O error"));
  EXPECT_THAT(notifier.Take(),
              ElementsAre(HasSubstr("STATUS the store does not answer")));
  watchdog.OnHealthCheck(absl::OkStatus());
  EXPECT_THAT(notifier.Take(), ElementsAre("STATUS serving"));
}

// The whole loop: the server's health thread on a simulated clock, its
// store made to stop answering and to come back.
TEST(StoreWatchdogTest, FedByTheServersHealthChecks) {
  SimulatedClock clock;
  MemoryJobStore base;
  auto owned = std::make_unique<FaultyJobStore>(&base);
  FaultyJobStore* store = owned.get();
  RecordingNotifier notifier;
  StoreWatchdog watchdog(&notifier, /*ping_watchdog=*/true);

  AdjutantServerConfig config;
  config.listen_address = "127.0.0.1:0";
  config.health_check_interval =
      HealthCheckIntervalFor(absl::Seconds(5), absl::Seconds(2));
  ASSERT_EQ(config.health_check_interval, absl::Seconds(1));
  config.on_health_check = [&watchdog](const absl::Status& status) {
    watchdog.OnHealthCheck(status);
  };
  AdjutantServer server(config, std::move(owned), &clock);
  ASSERT_TRUE(server.Start().ok());
  // The check inside Start() already pinged.
  server.AwaitHealthChecksForTest(1);
  EXPECT_THAT(notifier.Take(), ElementsAre("WATCHDOG"));

  // Nothing before the interval is up, one ping when it is.
  clock.Advance(absl::Milliseconds(999));
  EXPECT_THAT(notifier.Take(), IsEmpty());
  clock.Advance(absl::Milliseconds(1));
  server.AwaitHealthChecksForTest(2);
  EXPECT_THAT(notifier.Take(), ElementsAre("WATCHDOG"));

  // The store stops answering: the checks go on, the pings stop, so that
  // systemd would restart the daemon.
  store->ping_unavailable = true;
  for (int check = 3; check <= 6; ++check) {
    clock.Advance(absl::Seconds(1));
    server.AwaitHealthChecksForTest(check);
  }
  std::vector<std::string> failing = notifier.Take();
  ASSERT_EQ(failing.size(), 1u) << ::testing::PrintToString(failing);
  EXPECT_THAT(failing[0], HasSubstr("STATUS the store does not answer"));

  store->ping_unavailable = false;
  clock.Advance(absl::Seconds(1));
  server.AwaitHealthChecksForTest(7);
  EXPECT_THAT(notifier.Take(), ElementsAre("STATUS serving", "WATCHDOG"));

  // No message once shutdown has begun.
  server.Shutdown();
  clock.Advance(absl::Seconds(10));
  EXPECT_THAT(notifier.Take(), IsEmpty());
}

// Sets or unsets environment variables for one test, restoring them after.
class ScopedEnv {
 public:
  void Set(const char* name, const std::optional<std::string>& value) {
    const char* old = getenv(name);
    saved_.push_back({name, old == nullptr ? std::nullopt
                                           : std::optional<std::string>(old)});
    Apply(name, value);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      Apply(it->first, it->second);
    }
  }

 private:
  static void Apply(const char* name, const std::optional<std::string>& v) {
    if (v.has_value()) {
      setenv(name, v->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

TEST(SystemdWatchdogIntervalTest, ReadsTheEnvironment) {
  {
    ScopedEnv env;
    env.Set("WATCHDOG_USEC", std::nullopt);
    env.Set("WATCHDOG_PID", std::nullopt);
    auto interval = SystemdWatchdogInterval();
    ASSERT_TRUE(interval.ok()) << interval.status();
    EXPECT_EQ(*interval, std::nullopt);
  }
  {
    ScopedEnv env;
    env.Set("WATCHDOG_USEC", "400000");
    env.Set("WATCHDOG_PID", std::nullopt);
    auto interval = SystemdWatchdogInterval();
    ASSERT_TRUE(interval.ok()) << interval.status();
    EXPECT_EQ(*interval, absl::Milliseconds(400));
  }
  {
    ScopedEnv env;
    env.Set("WATCHDOG_USEC", "400000");
    env.Set("WATCHDOG_PID", absl::StrCat(getpid()));
    auto interval = SystemdWatchdogInterval();
    ASSERT_TRUE(interval.ok()) << interval.status();
    EXPECT_EQ(*interval, absl::Milliseconds(400));
  }
  {
    // Meant for another process (the variables were inherited).
    ScopedEnv env;
    env.Set("WATCHDOG_USEC", "400000");
    env.Set("WATCHDOG_PID", absl::StrCat(getpid() + 1));
    auto interval = SystemdWatchdogInterval();
    ASSERT_TRUE(interval.ok()) << interval.status();
    EXPECT_EQ(*interval, std::nullopt);
  }
  {
    ScopedEnv env;
    env.Set("WATCHDOG_USEC", "soon");
    env.Set("WATCHDOG_PID", std::nullopt);
    auto interval = SystemdWatchdogInterval();
    EXPECT_EQ(interval.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(interval.status().message(), HasSubstr("WATCHDOG_USEC"));
  }
}

// The PostgreSQL daemon's store wrapper passes AckBatch to the store it
// wraps (one transaction there, and what each acked job was), rather than
// JobStore's default of one Ack and one read per item, which cannot tell a
// retried ack from the first.
TEST(NotifyingJobStoreTest, AckBatchIsTheInnerStores) {
  PgNotifierConfig config;
  config.conninfo = "postgresql://unused";  // never started: AckBatch
  PgNotifier notifier(config);              // publishes nothing
  NotifyingJobStore store(std::make_unique<MemoryJobStore>(), &notifier);
  const absl::Time now = absl::FromUnixSeconds(1767225600);
  NewJob job;
  job.queue = "q";
  job.type = "t";
  job.max_attempts = 3;
  job.cron_name = "nightly";
  ASSERT_TRUE(store.Enqueue({job}, now).ok());
  DequeueOptions options;
  options.queue = "q";
  options.lease_duration = absl::Minutes(1);
  absl::StatusOr<std::vector<Lease>> leases = store.Dequeue(options, now);
  ASSERT_TRUE(leases.ok() && leases->size() == 1);
  const std::vector<AckItem> items = {
      {(*leases)[0].job.id, (*leases)[0].token}};
  for (bool retried : {false, true}) {
    absl::StatusOr<std::vector<AckResult>> results = store.AckBatch(items, now);
    ASSERT_TRUE(results.ok()) << results.status();
    ASSERT_EQ(results->size(), 1u);
    EXPECT_TRUE((*results)[0].status.ok()) << (*results)[0].status;
    EXPECT_EQ((*results)[0].queue, "q");
    EXPECT_EQ((*results)[0].cron_name, "nightly");
    EXPECT_EQ((*results)[0].already_acked, retried);
  }
}

}  // namespace
}  // namespace adjutant
