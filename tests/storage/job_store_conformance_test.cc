// The JobStore conformance suite: one case per clause of storage/job_store.h,
// run against every backend (see job_store_conformance.h). The memory store
// is instantiated at the bottom; other backends instantiate the suite in
// their own test files.
//
// The cases assume nothing about a backend beyond the contract: they read
// the store only through JobStore, pass `now` explicitly (whole seconds, so
// any backend's time resolution holds them exactly), and compare a job with
// itself before and after a refused call to prove that nothing changed.
#include "tests/storage/job_store_conformance.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/job.h"
#include "storage/job_store.h"
#include "storage/memory_job_store.h"

namespace adjutant {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

#define CONFORMANCE_CONCAT_INNER(a, b) a##b
#define CONFORMANCE_CONCAT(a, b) CONFORMANCE_CONCAT_INNER(a, b)
#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const absl::Status assert_ok_status = (expr);           \
    ASSERT_TRUE(assert_ok_status.ok()) << assert_ok_status; \
  } while (0)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(CONFORMANCE_CONCAT(status_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(var, lhs, expr) \
  auto var = (expr);                              \
  ASSERT_TRUE(var.ok()) << var.status();          \
  lhs = std::move(*var)

// The value of `result`, or T() after reporting the error (so that a
// failing backend fails the case instead of crashing the suite).
template <typename T>
T Value(absl::StatusOr<T> result) {
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *std::move(result) : T();
}

// A job of queue "q", type "t", runnable now, with 3 attempts.
NewJob MakeJob(std::string queue = "q", std::string type = "t",
               int32_t priority = 0, absl::Time run_at = absl::InfinitePast(),
               int32_t max_attempts = 3) {
  NewJob job;
  job.queue = std::move(queue);
  job.type = std::move(type);
  job.payload = "payload";
  job.priority = priority;
  job.run_at = run_at;
  job.max_attempts = max_attempts;
  return job;
}

NewJob WithKey(NewJob job, std::string key) {
  job.idempotency_key = std::move(key);
  return job;
}

DequeueOptions Options(std::string queue = "q", int max_jobs = 1,
                       absl::Duration lease = absl::Seconds(30),
                       std::string worker = "worker-1") {
  DequeueOptions options;
  options.queue = std::move(queue);
  options.max_jobs = max_jobs;
  options.lease_duration = lease;
  options.worker_id = std::move(worker);
  return options;
}

// Stores one job and returns its id ("" after reporting a failure).
std::string EnqueueOne(JobStore& store, const NewJob& job, absl::Time now) {
  absl::StatusOr<std::vector<EnqueueResult>> results =
      store.Enqueue({job}, now);
  EXPECT_TRUE(results.ok()) << results.status();
  if (!results.ok() || results->size() != 1) return "";
  EXPECT_FALSE((*results)[0].duplicate);
  return (*results)[0].job_id;
}

// Leases exactly one job of `options.queue` (a default Lease after
// reporting a failure).
Lease LeaseOne(JobStore& store, absl::Time now,
               DequeueOptions options = Options()) {
  options.max_jobs = 1;
  absl::StatusOr<std::vector<Lease>> leases = store.Dequeue(options, now);
  EXPECT_TRUE(leases.ok()) << leases.status();
  if (!leases.ok() || leases->size() != 1) {
    ADD_FAILURE() << "expected one lease from queue " << options.queue;
    return Lease();
  }
  return (*leases)[0];
}

// The ids Dequeue leases, in the order it returns them.
std::vector<std::string> DequeueIds(JobStore& store,
                                    const DequeueOptions& options,
                                    absl::Time now) {
  absl::StatusOr<std::vector<Lease>> leases = store.Dequeue(options, now);
  EXPECT_TRUE(leases.ok()) << leases.status();
  std::vector<std::string> ids;
  if (!leases.ok()) return ids;
  for (const Lease& lease : *leases) ids.push_back(lease.job.id);
  return ids;
}

Job GetOrFail(JobStore& store, const std::string& id) {
  absl::StatusOr<Job> job = store.GetJob(id);
  EXPECT_TRUE(job.ok()) << job.status();
  return job.ok() ? *job : Job();
}

// Every job matching the filter, paging with `page_size`.
std::vector<Job> ListAll(JobStore& store, const std::string& queue = "",
                         JobState state = JobState::kUnspecified,
                         int page_size = 100) {
  std::vector<Job> all;
  std::string token;
  for (int pages = 0; pages < 100000; ++pages) {
    absl::StatusOr<JobPage> page =
        store.ListJobs(queue, state, page_size, token);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    all.insert(all.end(), page->jobs.begin(), page->jobs.end());
    token = page->next_page_token;
    if (token.empty()) break;
  }
  return all;
}

std::vector<std::string> Ids(const std::vector<Job>& jobs) {
  std::vector<std::string> ids;
  for (const Job& job : jobs) ids.push_back(job.id);
  return ids;
}

void ExpectSameJob(const Job& a, const Job& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.queue, b.queue);
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.payload, b.payload);
  EXPECT_EQ(a.priority, b.priority);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.attempts, b.attempts);
  EXPECT_EQ(a.max_attempts, b.max_attempts);
  EXPECT_EQ(a.run_at, b.run_at);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.updated_at, b.updated_at);
  EXPECT_EQ(a.last_error, b.last_error);
  EXPECT_EQ(a.idempotency_key, b.idempotency_key);
  EXPECT_EQ(a.lease_expires_at, b.lease_expires_at);
  EXPECT_EQ(a.lease_token, b.lease_token);
  EXPECT_EQ(a.worker_id, b.worker_id);
  EXPECT_EQ(a.cron_name, b.cron_name);
  EXPECT_EQ(a.cron_tick_time, b.cron_tick_time);
  EXPECT_EQ(a.seq, b.seq);
}

// Checks that a refused call left the job exactly as `before`.
void ExpectUnchanged(JobStore& store, const Job& before) {
  SCOPED_TRACE("job " + before.id + " must be unchanged");
  ExpectSameJob(GetOrFail(store, before.id), before);
}

// ---- Enqueue ----------------------------------------------------------------

TEST_P(JobStoreConformance, PingIsOk) { EXPECT_TRUE(store_->Ping().ok()); }

TEST_P(JobStoreConformance, EnqueueFillsDefaults) {
  NewJob job = MakeJob("q", "email", 7);
  job.payload = std::string("bin\0ary\xff", 8);
  std::string id = EnqueueOne(*store_, job, now_);
  ASSERT_FALSE(id.empty());

  Job stored = GetOrFail(*store_, id);
  EXPECT_EQ(stored.id, id);
  EXPECT_EQ(stored.queue, "q");
  EXPECT_EQ(stored.type, "email");
  EXPECT_EQ(stored.payload, job.payload);
  EXPECT_EQ(stored.priority, 7);
  EXPECT_EQ(stored.state, JobState::kPending);
  EXPECT_EQ(stored.attempts, 0);
  EXPECT_EQ(stored.max_attempts, 3);
  EXPECT_EQ(stored.run_at, now_);  // unset: now
  EXPECT_EQ(stored.created_at, now_);
  EXPECT_EQ(stored.updated_at, now_);
  EXPECT_EQ(stored.last_error, "");
  EXPECT_EQ(stored.idempotency_key, "");
  EXPECT_EQ(stored.lease_expires_at, absl::InfinitePast());
  EXPECT_EQ(stored.lease_token, "");
  EXPECT_EQ(stored.cron_name, "");
  EXPECT_EQ(stored.cron_tick_time, absl::InfinitePast());
}

TEST_P(JobStoreConformance, EnqueueKeepsExplicitFields) {
  NewJob job = MakeJob("q", "t", -4, now_ + absl::Minutes(5), 9);
  job.idempotency_key = "key-1";
  job.cron_name = "nightly";
  job.cron_tick_time = now_ - absl::Hours(1);
  std::string id = EnqueueOne(*store_, job, now_);

  Job stored = GetOrFail(*store_, id);
  EXPECT_EQ(stored.priority, -4);
  EXPECT_EQ(stored.run_at, now_ + absl::Minutes(5));
  EXPECT_EQ(stored.max_attempts, 9);
  EXPECT_EQ(stored.idempotency_key, "key-1");
  EXPECT_EQ(stored.cron_name, "nightly");
  EXPECT_EQ(stored.cron_tick_time, now_ - absl::Hours(1));
}

TEST_P(JobStoreConformance, EnqueueBatchGivesFreshIdsAndIncreasingSeq) {
  std::vector<NewJob> batch;
  for (int i = 0; i < 20; ++i) {
    NewJob job = MakeJob();
    job.payload = absl::StrCat("job-", i);
    batch.push_back(job);
  }
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                       store_->Enqueue(batch, now_));
  ASSERT_THAT(results, SizeIs(20));

  std::set<std::string> ids;
  int64_t last_seq = 0;
  for (int i = 0; i < 20; ++i) {
    EXPECT_FALSE(results[i].duplicate);
    EXPECT_FALSE(results[i].job_id.empty());
    ids.insert(results[i].job_id);
    Job job = GetOrFail(*store_, results[i].job_id);
    EXPECT_EQ(job.payload, absl::StrCat("job-", i)) << "results in order";
    EXPECT_GT(job.seq, last_seq) << "seq increases in batch order";
    last_seq = job.seq;
  }
  EXPECT_THAT(ids, SizeIs(20));

  // A later call continues the sequence.
  Job later = GetOrFail(*store_, EnqueueOne(*store_, MakeJob(), now_));
  EXPECT_GT(later.seq, last_seq);
}

TEST_P(JobStoreConformance, EmptyBatchStoresNothing) {
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                       store_->Enqueue({}, now_));
  EXPECT_THAT(results, IsEmpty());
  EXPECT_THAT(ListAll(*store_), IsEmpty());
}

TEST_P(JobStoreConformance, IdempotencyKeyFindsEarlierJob) {
  std::string first = EnqueueOne(*store_, WithKey(MakeJob(), "k"), now_);
  Job before = GetOrFail(*store_, first);

  NewJob again = WithKey(MakeJob("q", "other-type", 5), "k");
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                       store_->Enqueue({again}, now_ + absl::Seconds(1)));
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_TRUE(results[0].duplicate);
  EXPECT_EQ(results[0].job_id, first);
  EXPECT_THAT(ListAll(*store_), SizeIs(1)) << "nothing new is stored";
  ExpectUnchanged(*store_, before);
}

TEST_P(JobStoreConformance, IdempotencyKeyHoldsAfterJobFinishes) {
  std::string first = EnqueueOne(*store_, WithKey(MakeJob(), "k"), now_);
  Lease lease = LeaseOne(*store_, now_);
  ASSERT_OK(store_->Ack(first, lease.token, now_));

  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                       store_->Enqueue({WithKey(MakeJob(), "k")}, now_));
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_TRUE(results[0].duplicate);
  EXPECT_EQ(results[0].job_id, first);
  EXPECT_THAT(ListAll(*store_), SizeIs(1));
}

TEST_P(JobStoreConformance, IdempotencyDuplicatesWithinOneBatch) {
  std::vector<NewJob> batch = {
      WithKey(MakeJob(), "a"), MakeJob(), WithKey(MakeJob(), "b"),
      WithKey(MakeJob(), "a"), MakeJob(), WithKey(MakeJob(), "b")};
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                       store_->Enqueue(batch, now_));
  ASSERT_THAT(results, SizeIs(6));
  EXPECT_FALSE(results[0].duplicate);
  EXPECT_FALSE(results[1].duplicate);
  EXPECT_FALSE(results[2].duplicate);
  EXPECT_TRUE(results[3].duplicate);
  EXPECT_EQ(results[3].job_id, results[0].job_id);
  EXPECT_FALSE(results[4].duplicate);
  EXPECT_NE(results[4].job_id, results[1].job_id) << "no key: no dedup";
  EXPECT_TRUE(results[5].duplicate);
  EXPECT_EQ(results[5].job_id, results[2].job_id);
  EXPECT_THAT(ListAll(*store_), SizeIs(4));
}

TEST_P(JobStoreConformance, IdempotencyKeyIsPerQueue) {
  std::string in_a = EnqueueOne(*store_, WithKey(MakeJob("a"), "k"), now_);
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> results,
                       store_->Enqueue({WithKey(MakeJob("b"), "k")}, now_));
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_FALSE(results[0].duplicate);
  EXPECT_NE(results[0].job_id, in_a);
  EXPECT_EQ(GetOrFail(*store_, results[0].job_id).queue, "b");
  EXPECT_THAT(ListAll(*store_), SizeIs(2));
}

// A batch is one transaction: a concurrent reader sees all of it or none.
TEST_P(JobStoreConformance, ReadersNeverSeePartOfABatch) {
  constexpr int kBatches = 40;
  constexpr int kBatchSize = 7;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int b = 0; b < kBatches; ++b) {
      std::vector<NewJob> batch(kBatchSize, MakeJob());
      EXPECT_TRUE(store_->Enqueue(batch, now_).ok());
    }
    done = true;
  });
  int reads = 0;
  while (!done.load() || reads == 0) {
    absl::StatusOr<JobPage> page = store_->ListJobs(
        "", JobState::kUnspecified, kBatches * kBatchSize + 1, "");
    if (!page.ok()) {
      ADD_FAILURE() << page.status();
      break;  // not ASSERT: the writer must be joined
    }
    EXPECT_EQ(page->jobs.size() % kBatchSize, 0u)
        << "saw " << page->jobs.size() << " jobs";
    ++reads;
  }
  writer.join();
  EXPECT_THAT(ListAll(*store_), SizeIs(kBatches * kBatchSize));
}

// ---- Dequeue ----------------------------------------------------------------

TEST_P(JobStoreConformance, DequeueOrdersByPriorityThenRunAtThenSeq) {
  absl::Time t = now_;
  // Enqueued out of order, so that seq alone would give another order, and
  // of several types, which an unfiltered Dequeue mixes.
  std::string e =
      EnqueueOne(*store_, MakeJob("q", "t1", -3, t - absl::Seconds(20)), t);
  std::string b =
      EnqueueOne(*store_, MakeJob("q", "t2", 5, t - absl::Seconds(1)), t);
  std::string a =
      EnqueueOne(*store_, MakeJob("q", "t3", 0, t - absl::Seconds(10)), t);
  std::string c =
      EnqueueOne(*store_, MakeJob("q", "t1", 5, t - absl::Seconds(5)), t);
  std::string g =
      EnqueueOne(*store_, MakeJob("q", "t2", 9, t + absl::Seconds(10)), t);
  std::string d =
      EnqueueOne(*store_, MakeJob("q", "t3", 5, t - absl::Seconds(5)), t);
  std::string f =
      EnqueueOne(*store_, MakeJob("q", "t1", 0, t - absl::Seconds(10)), t);

  EXPECT_THAT(DequeueIds(*store_, Options("q", 2), t), ElementsAre(c, d));
  EXPECT_THAT(DequeueIds(*store_, Options("q", 10), t), ElementsAre(b, a, f, e))
      << "g is not due yet";
  EXPECT_THAT(DequeueIds(*store_, Options("q", 10), t), IsEmpty());
  EXPECT_THAT(DequeueIds(*store_, Options("q", 10), t + absl::Seconds(10)),
              ElementsAre(g));
}

TEST_P(JobStoreConformance, DelayedJobIsInvisibleUntilRunAt) {
  std::string id =
      EnqueueOne(*store_, MakeJob("q", "t", 0, now_ + absl::Minutes(1)), now_);
  EXPECT_THAT(DequeueIds(*store_, Options(), now_), IsEmpty());
  EXPECT_THAT(DequeueIds(*store_, Options(), now_ + absl::Seconds(59)),
              IsEmpty());
  EXPECT_EQ(GetOrFail(*store_, id).state, JobState::kPending);
  EXPECT_THAT(DequeueIds(*store_, Options(), now_ + absl::Minutes(1)),
              ElementsAre(id))
      << "available at run_at <= now";
}

TEST_P(JobStoreConformance,
       DequeueNeverReturnsAJobBeforeItsRunAtEvenIfTimeGoesBack) {
  std::string first = EnqueueOne(*store_, MakeJob("q", "t", 9, now_), now_);
  std::string later =
      EnqueueOne(*store_, MakeJob("q", "t", 5, now_ + absl::Minutes(1)), now_);
  std::string ready = EnqueueOne(*store_, MakeJob("q", "t", 0, now_), now_);
  // A call at a later wall time, then the wall clock steps back.
  EXPECT_THAT(DequeueIds(*store_, Options("q", 1), now_ + absl::Minutes(2)),
              ElementsAre(first));
  EXPECT_THAT(DequeueIds(*store_, Options("q", 10, absl::Hours(1)), now_),
              ElementsAre(ready));
  EXPECT_EQ(GetOrFail(*store_, later).state, JobState::kPending);
  EXPECT_THAT(DequeueIds(*store_, Options("q", 10), now_ + absl::Minutes(1)),
              ElementsAre(later));
}

TEST_P(JobStoreConformance, DequeueFiltersByJobTypes) {
  std::string a = EnqueueOne(*store_, MakeJob("q", "alpha"), now_);
  std::string b = EnqueueOne(*store_, MakeJob("q", "beta"), now_);
  std::string c = EnqueueOne(*store_, MakeJob("q", "gamma"), now_);
  std::string b2 = EnqueueOne(*store_, MakeJob("q", "beta", 1), now_);

  DequeueOptions options = Options("q", 10);
  options.job_types = {"beta", "gamma"};
  EXPECT_THAT(DequeueIds(*store_, options, now_), ElementsAre(b2, b, c));
  options.job_types = {"delta"};
  EXPECT_THAT(DequeueIds(*store_, options, now_), IsEmpty());
  options.job_types = {};
  EXPECT_THAT(DequeueIds(*store_, options, now_), ElementsAre(a))
      << "no filter: any type";

  // The filter applies to expired leases too.
  absl::Time t = now_ + absl::Seconds(30);
  options.job_types = {"delta"};
  EXPECT_THAT(DequeueIds(*store_, options, t), IsEmpty());
  options.job_types = {"alpha", "alpha"};
  EXPECT_THAT(DequeueIds(*store_, options, t), ElementsAre(a));
}

TEST_P(JobStoreConformance, DequeueHonoursMaxJobsAndQueue) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(EnqueueOne(*store_, MakeJob("q"), now_));
  std::string other = EnqueueOne(*store_, MakeJob("other"), now_);

  EXPECT_THAT(DequeueIds(*store_, Options("q", 3), now_),
              ElementsAre(ids[0], ids[1], ids[2]));
  EXPECT_THAT(DequeueIds(*store_, Options("q", 3), now_),
              ElementsAre(ids[3], ids[4]));
  EXPECT_THAT(DequeueIds(*store_, Options("q", 3), now_), IsEmpty());
  EXPECT_THAT(DequeueIds(*store_, Options("nowhere", 3), now_), IsEmpty());
  EXPECT_THAT(DequeueIds(*store_, Options("other", 3), now_),
              ElementsAre(other));
}

TEST_P(JobStoreConformance, DequeueLeasesTheJob) {
  std::string id = EnqueueOne(*store_, MakeJob(), now_);
  absl::Time t = now_ + absl::Seconds(3);
  Lease lease = LeaseOne(*store_, t, Options("q", 1, absl::Seconds(45), "w-7"));

  EXPECT_EQ(lease.job.id, id);
  EXPECT_EQ(lease.job.state, JobState::kLeased);
  EXPECT_EQ(lease.job.attempts, 1);
  EXPECT_FALSE(lease.token.empty());
  EXPECT_EQ(lease.job.lease_token, lease.token);
  EXPECT_EQ(lease.expires_at, t + absl::Seconds(45));
  EXPECT_EQ(lease.job.lease_expires_at, lease.expires_at);
  EXPECT_EQ(lease.job.worker_id, "w-7");
  EXPECT_EQ(lease.job.updated_at, t);
  EXPECT_EQ(lease.job.created_at, now_);
  ExpectSameJob(GetOrFail(*store_, id), lease.job);

  // A held lease is not available to anyone else.
  EXPECT_THAT(DequeueIds(*store_, Options("q", 5), t + absl::Seconds(44)),
              IsEmpty());
}

TEST_P(JobStoreConformance, LeaseTokensAreUnique) {
  std::vector<NewJob> batch(50, MakeJob());
  ASSERT_OK(store_->Enqueue(batch, now_).status());
  ASSERT_OK_AND_ASSIGN(
      std::vector<Lease> leases,
      store_->Dequeue(Options("q", 50, absl::Seconds(10)), now_));
  ASSERT_THAT(leases, SizeIs(50));
  std::set<std::string> tokens;
  for (const Lease& lease : leases) {
    EXPECT_GE(lease.token.size(), 16u) << "unguessable tokens are long";
    tokens.insert(lease.token);
  }
  // Leasing the same jobs again after expiry gives new tokens.
  ASSERT_OK_AND_ASSIGN(
      std::vector<Lease> again,
      store_->Dequeue(Options("q", 50), now_ + absl::Seconds(10)));
  ASSERT_THAT(again, SizeIs(50));
  for (const Lease& lease : again) tokens.insert(lease.token);
  EXPECT_THAT(tokens, SizeIs(100));
}

TEST_P(JobStoreConformance, ExpiredLeaseMakesTheJobAvailableAgain) {
  std::string id = EnqueueOne(*store_, MakeJob(), now_);
  Lease first =
      LeaseOne(*store_, now_, Options("q", 1, absl::Seconds(30), "w1"));
  EXPECT_THAT(DequeueIds(*store_, Options(), now_ + absl::Seconds(29)),
              IsEmpty());

  absl::Time t = now_ + absl::Seconds(30);  // lease_expires_at <= now
  Lease second = LeaseOne(*store_, t, Options("q", 1, absl::Seconds(30), "w2"));
  EXPECT_EQ(second.job.id, id);
  EXPECT_EQ(second.job.attempts, 2);
  EXPECT_NE(second.token, first.token);
  EXPECT_EQ(second.expires_at, t + absl::Seconds(30));
  EXPECT_EQ(second.job.worker_id, "w2");
  EXPECT_EQ(second.job.last_error, "lease expired");
  EXPECT_EQ(GetOrFail(*store_, id).last_error, "lease expired");
}

TEST_P(JobStoreConformance, ExpiredLeaseLeasedAgainReplacesTheOldLastError) {
  // Whether Dequeue ends an expired lease before leasing the job again, or
  // leases it straight away, the job shows why its last attempt ended.
  std::string id =
      EnqueueOne(*store_, MakeJob("q", "t", 0, absl::InfinitePast(), 10), now_);
  Lease first = LeaseOne(*store_, now_);
  ASSERT_OK(store_
                ->Nack(id, first.token,
                       NackOptions{"upstream 503", absl::ZeroDuration(), false},
                       now_)
                .status());
  ASSERT_EQ(GetOrFail(*store_, id).last_error, "upstream 503");
  Lease second = LeaseOne(*store_, now_, Options("q", 1, absl::Seconds(30)));
  EXPECT_EQ(second.job.last_error, "upstream 503") << "a lease keeps it";

  absl::Time t = now_ + absl::Seconds(30);
  for (bool filtered : {false, true}) {
    SCOPED_TRACE(filtered ? "with job_types" : "without job_types");
    DequeueOptions options = Options("q", 1, absl::Seconds(30));
    if (filtered) options.job_types = {"t"};
    Lease again = LeaseOne(*store_, t, options);
    EXPECT_EQ(again.job.id, id);
    EXPECT_EQ(again.job.last_error, "lease expired");
    EXPECT_EQ(GetOrFail(*store_, id).last_error, "lease expired");
    // The same again for the next round, from a fresh Nack error.
    ASSERT_OK(store_
                  ->Nack(id, again.token,
                         NackOptions{"timeout", absl::ZeroDuration(), false}, t)
                  .status());
    if (!filtered) {
      Lease next = LeaseOne(*store_, t, Options("q", 1, absl::Seconds(30)));
      EXPECT_EQ(next.job.last_error, "timeout");
      t += absl::Seconds(30);
    }
  }
}

TEST_P(JobStoreConformance, ExpiredLeaseWithAttemptsUsedUpGoesDead) {
  std::string id = EnqueueOne(*store_, MakeJob("q", "t", 0, now_, 1), now_);
  LeaseOne(*store_, now_);
  absl::Time t = now_ + absl::Seconds(30);
  EXPECT_THAT(DequeueIds(*store_, Options(), t), IsEmpty());
  Job job = GetOrFail(*store_, id);
  EXPECT_EQ(job.state, JobState::kDead);
  EXPECT_EQ(job.attempts, 1);
  EXPECT_EQ(job.last_error, "lease expired");
}

TEST_P(JobStoreConformance, ExpiredLeaseKeepsItsPlaceInLine) {
  std::string a =
      EnqueueOne(*store_, MakeJob("q", "t", 0, now_ - absl::Seconds(10)), now_);
  std::string b =
      EnqueueOne(*store_, MakeJob("q", "t", 0, now_ - absl::Seconds(5)), now_);
  Lease lease = LeaseOne(*store_, now_, Options("q", 1, absl::Seconds(10)));
  ASSERT_EQ(lease.job.id, a);

  absl::Time t = now_ + absl::Seconds(10);
  std::string c = EnqueueOne(*store_, MakeJob(), t);
  std::string d = EnqueueOne(*store_, MakeJob("q", "t", 1), t);
  EXPECT_THAT(DequeueIds(*store_, Options("q", 10), t),
              ElementsAre(d, a, b, c));
  EXPECT_EQ(GetOrFail(*store_, a).attempts, 2);
}

// ---- Ack, Nack, ExtendLease: fencing ----------------------------------------

TEST_P(JobStoreConformance, AckMarksTheJobSucceeded) {
  std::string id = EnqueueOne(*store_, MakeJob(), now_);
  Lease lease = LeaseOne(*store_, now_);
  ASSERT_OK(store_->Ack(id, lease.token, now_ + absl::Seconds(5)));

  Job job = GetOrFail(*store_, id);
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.attempts, 1);
  EXPECT_EQ(job.lease_expires_at, absl::InfinitePast());
  EXPECT_THAT(DequeueIds(*store_, Options(), now_ + absl::Hours(1)), IsEmpty())
      << "a succeeded job is never leased again";
}

TEST_P(JobStoreConformance, AckRetriedWithTheSameTokenIsOk) {
  std::string id = EnqueueOne(*store_, MakeJob(), now_);
  Lease lease = LeaseOne(*store_, now_);
  ASSERT_OK(store_->Ack(id, lease.token, now_ + absl::Seconds(1)));
  Job after = GetOrFail(*store_, id);

  // Even after the lease would have expired.
  EXPECT_TRUE(store_->Ack(id, lease.token, now_ + absl::Seconds(2)).ok());
  EXPECT_TRUE(store_->Ack(id, lease.token, now_ + absl::Hours(2)).ok());
  ExpectUnchanged(*store_, after);

  // Another token on the succeeded job is refused.
  EXPECT_EQ(store_->Ack(id, "not-the-token", now_).code(),
            absl::StatusCode::kFailedPrecondition);
  ExpectUnchanged(*store_, after);
}

// ---- AckBatch
// ------------------------------------------------------------------

// Statuses by code, for comparing AckBatch results.
std::vector<absl::StatusCode> Codes(const std::vector<AckResult>& results) {
  std::vector<absl::StatusCode> codes;
  for (const AckResult& result : results) codes.push_back(result.status.code());
  return codes;
}

TEST_P(JobStoreConformance, AckBatchJudgesEachItemOnItsOwnInOrder) {
  const absl::Duration kHour = absl::Hours(1);
  // Each job in a queue of its own, so that each lease is the one wanted.
  const std::string good = EnqueueOne(*store_, MakeJob("good"), now_);
  const Lease good_lease = LeaseOne(*store_, now_, Options("good", 1, kHour));
  // Leased, expired, leased again: the first token is stale.
  const std::string stale = EnqueueOne(*store_, MakeJob("stale"), now_);
  const Lease stale_lease =
      LeaseOne(*store_, now_, Options("stale", 1, absl::Seconds(10)));
  const Lease current_lease =
      LeaseOne(*store_, now_ + absl::Seconds(15), Options("stale", 1, kHour));
  ASSERT_EQ(current_lease.job.id, stale);
  // Its lease runs out before the batch.
  const std::string expired = EnqueueOne(*store_, MakeJob("expired"), now_);
  const Lease expired_lease =
      LeaseOne(*store_, now_, Options("expired", 1, absl::Seconds(5)));
  // Acked already with this token: a retry.
  const std::string retried = EnqueueOne(*store_, MakeJob("retried"), now_);
  const Lease retried_lease =
      LeaseOne(*store_, now_, Options("retried", 1, kHour));
  ASSERT_OK(store_->Ack(retried, retried_lease.token, now_));
  // Never leased.
  const std::string pending = EnqueueOne(*store_, MakeJob("pending"), now_);
  NewJob of_a_schedule = MakeJob("good2");
  of_a_schedule.cron_name = "nightly";
  of_a_schedule.cron_tick_time = now_;
  const std::string good2 = EnqueueOne(*store_, of_a_schedule, now_);
  const Lease good2_lease = LeaseOne(*store_, now_, Options("good2", 1, kHour));

  const Job stale_before = GetOrFail(*store_, stale);
  const Job expired_before = GetOrFail(*store_, expired);
  const Job retried_before = GetOrFail(*store_, retried);
  const Job pending_before = GetOrFail(*store_, pending);
  const std::vector<AckItem> items = {
      {good, good_lease.token},       {stale, stale_lease.token},
      {"no-such-job", "token"},       {expired, expired_lease.token},
      {retried, retried_lease.token}, {pending, "token"},
      {good2, good2_lease.token},
  };
  const absl::Time t = now_ + absl::Seconds(20);
  ASSERT_OK_AND_ASSIGN(std::vector<AckResult> results,
                       store_->AckBatch(items, t));
  using Code = absl::StatusCode;
  const std::vector<Code> kWant = {Code::kOk,       Code::kFailedPrecondition,
                                   Code::kNotFound, Code::kFailedPrecondition,
                                   Code::kOk,       Code::kFailedPrecondition,
                                   Code::kOk};
  EXPECT_EQ(Codes(results), kWant);
  EXPECT_THAT(std::string(results[1].status.message()), HasSubstr(stale));
  EXPECT_THAT(std::string(results[2].status.message()),
              HasSubstr("no-such-job"));
  EXPECT_THAT(std::string(results[3].status.message()), HasSubstr("expired"));
  // What an acked item tells of its job: the queue, the schedule, and
  // whether this ack was a retry.
  EXPECT_EQ(results[0].queue, "good");
  EXPECT_EQ(results[0].cron_name, "");
  EXPECT_FALSE(results[0].already_acked);
  EXPECT_EQ(results[4].queue, "retried");
  EXPECT_TRUE(results[4].already_acked);
  EXPECT_EQ(results[6].queue, "good2");
  EXPECT_EQ(results[6].cron_name, "nightly");
  EXPECT_FALSE(results[6].already_acked);

  for (const std::string& id : {good, good2}) {
    Job job = GetOrFail(*store_, id);
    EXPECT_EQ(job.state, JobState::kSucceeded) << id;
    EXPECT_EQ(job.updated_at, t) << id;
    EXPECT_EQ(job.lease_expires_at, absl::InfinitePast()) << id;
  }
  // An item that failed was not acked, and the retry changed nothing.
  ExpectUnchanged(*store_, stale_before);
  ExpectUnchanged(*store_, expired_before);
  ExpectUnchanged(*store_, retried_before);
  ExpectUnchanged(*store_, pending_before);
  // The current lease of the stale job still works.
  EXPECT_TRUE(store_->Ack(stale, current_lease.token, t).ok());

  // The same batch again: the acked items are retries now.
  const Job good_after = GetOrFail(*store_, good);
  ASSERT_OK_AND_ASSIGN(results, store_->AckBatch(items, t + absl::Seconds(1)));
  EXPECT_EQ(Codes(results), kWant);
  EXPECT_TRUE(results[0].already_acked);
  EXPECT_EQ(results[0].queue, "good");
  EXPECT_TRUE(results[6].already_acked);
  EXPECT_EQ(results[6].cron_name, "nightly");
  ExpectUnchanged(*store_, good_after);
}

// A lease taken back because its job never reached the worker: as if the
// job had not been leased, its attempt given back and its place in line
// kept. Only a current lease is taken back.
TEST_P(JobStoreConformance, ReleaseLeasesUndoesLeasesOfJobsNeverSent) {
  const absl::Duration kHour = absl::Hours(1);
  const std::string a = EnqueueOne(*store_, MakeJob("q"), now_);
  const std::string b = EnqueueOne(*store_, MakeJob("q"), now_);
  const std::string c = EnqueueOne(*store_, MakeJob("q"), now_);
  ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                       store_->Dequeue(Options("q", 3, kHour), now_));
  ASSERT_THAT(leases, SizeIs(3));
  std::map<std::string, std::string> token;
  for (const Lease& lease : leases) token[lease.job.id] = lease.token;
  ASSERT_OK(store_->Ack(c, token[c], now_));
  const Job a_before = GetOrFail(*store_, a);
  const Job b_before = GetOrFail(*store_, b);
  const Job c_before = GetOrFail(*store_, c);

  const absl::Time t = now_ + absl::Seconds(5);
  ASSERT_OK_AND_ASSIGN(std::vector<Job> released,
                       store_->ReleaseLeases({{a, token[a]},
                                              {b, "not-its-token"},
                                              {c, token[c]},
                                              {"no-such-job", "token"}},
                                             t));
  ASSERT_THAT(released, SizeIs(1));
  EXPECT_EQ(released[0].id, a);
  EXPECT_EQ(released[0].state, JobState::kPending);
  const Job job = GetOrFail(*store_, a);
  EXPECT_EQ(job.state, JobState::kPending);
  EXPECT_EQ(job.attempts, a_before.attempts - 1);
  EXPECT_EQ(job.lease_token, "");
  EXPECT_EQ(job.lease_expires_at, absl::InfinitePast());
  EXPECT_EQ(job.run_at, a_before.run_at);
  EXPECT_EQ(job.last_error, a_before.last_error);
  EXPECT_EQ(job.updated_at, t);
  ExpectUnchanged(*store_, b_before);
  ExpectUnchanged(*store_, c_before);
  // The old token no longer acks it, and it is the next to be leased, ahead
  // of a job enqueued after it.
  EXPECT_FALSE(store_->Ack(a, token[a], t).ok());
  EnqueueOne(*store_, MakeJob("q"), t);
  EXPECT_EQ(LeaseOne(*store_, t, Options("q", 1, kHour)).job.id, a);
  ASSERT_OK_AND_ASSIGN(released, store_->ReleaseLeases({}, t));
  EXPECT_THAT(released, IsEmpty());
}

TEST_P(JobStoreConformance, AckBatchOfNothingReturnsNothing) {
  ASSERT_OK_AND_ASSIGN(std::vector<AckResult> results,
                       store_->AckBatch({}, now_));
  EXPECT_THAT(results, IsEmpty());
}

TEST_P(JobStoreConformance, AckBatchAcksManyJobs) {
  constexpr int kJobs = 50;
  std::vector<NewJob> jobs(kJobs, MakeJob());
  ASSERT_OK(store_->Enqueue(jobs, now_).status());
  ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                       store_->Dequeue(Options("q", kJobs), now_));
  ASSERT_THAT(leases, SizeIs(kJobs));
  std::vector<AckItem> items;
  for (const Lease& lease : leases)
    items.push_back({lease.job.id, lease.token});
  ASSERT_OK_AND_ASSIGN(std::vector<AckResult> results,
                       store_->AckBatch(items, now_));
  EXPECT_EQ(Codes(results),
            std::vector<absl::StatusCode>(kJobs, absl::StatusCode::kOk));
  EXPECT_THAT(ListAll(*store_, "q", JobState::kSucceeded, 100), SizeIs(kJobs));
}

// ---- Asynchronous writes
// ------------------------------------------------------------------

// How many times each `done` given by AwaitDone was called; checked once
// the test's later writes are answered, so that a second call of a `done`
// that came late is seen too.
using AnswerCounts = std::vector<std::shared_ptr<std::atomic<int>>>;

// Starts `call` with a `done` that keeps the first outcome, and waits for
// it. The state is shared with `done`, so that a second call (a bug) lands
// in live memory and is counted in `counts`.
template <typename T, typename Call>
absl::StatusOr<T> AwaitDone(AnswerCounts* counts, Call call) {
  struct State {
    absl::Notification answered;
    absl::StatusOr<T> outcome = absl::UnknownError("not answered");
  };
  auto state = std::make_shared<State>();
  auto answers = std::make_shared<std::atomic<int>>(0);
  counts->push_back(answers);
  call([state, answers](absl::StatusOr<T> result) {
    if (answers->fetch_add(1) == 0) {
      state->outcome = std::move(result);
      state->answered.Notify();
    }
  });
  state->answered.WaitForNotification();
  return state->outcome;
}

// A write called after an *Async call returned sees what that call wrote,
// answered or not, and inside WriteTogether as outside it: the server
// wakes a parked consumer as an enqueue is queued on this.
TEST_P(JobStoreConformance, WritesTakeEffectInTheOrderOfTheirCalls) {
  for (const bool together : {false, true}) {
    SCOPED_TRACE(together ? "in WriteTogether" : "alone");
    const std::string queue = together ? "together" : "alone";
    struct Answers {
      absl::Notification enqueued, leased, late;
      absl::StatusOr<std::vector<EnqueueResult>> first, second;
      absl::StatusOr<std::vector<Lease>> leases;
    };
    auto answers = std::make_shared<Answers>();
    auto calls = [&] {
      store_->EnqueueAsync(
          {MakeJob(queue)}, now_,
          [answers](absl::StatusOr<std::vector<EnqueueResult>> result) {
            answers->first = std::move(result);
            answers->enqueued.Notify();
          });
      store_->DequeueAsync(
          Options(queue, 2, absl::Hours(1)), now_,
          [answers](absl::StatusOr<std::vector<Lease>> result) {
            answers->leases = std::move(result);
            answers->leased.Notify();
          });
      store_->EnqueueAsync(
          {MakeJob(queue)}, now_,
          [answers](absl::StatusOr<std::vector<EnqueueResult>> result) {
            answers->second = std::move(result);
            answers->late.Notify();
          });
    };
    if (together) {
      store_->WriteTogether(calls);
    } else {
      calls();
    }
    answers->enqueued.WaitForNotification();
    answers->leased.WaitForNotification();
    answers->late.WaitForNotification();
    ASSERT_OK(answers->first.status());
    ASSERT_OK(answers->second.status());
    ASSERT_OK(answers->leases.status());
    ASSERT_THAT(*answers->leases, SizeIs(1)) << "the job enqueued after it";
    EXPECT_EQ((*answers->leases)[0].job.id, (*answers->first)[0].job_id);
    EXPECT_EQ(GetOrFail(*store_, (*answers->second)[0].job_id).state,
              JobState::kPending);
  }
}

// The *Async writes give what the synchronous calls give, and what they
// wrote is there once `done` has been called.
TEST_P(JobStoreConformance, AsynchronousWritesAnswerAsTheSynchronousOnes) {
  AnswerCounts counts;
  const absl::Duration kHour = absl::Hours(1);
  NewJob of_a_schedule = MakeJob("q");
  of_a_schedule.cron_name = "nightly";
  of_a_schedule.cron_tick_time = now_;
  const std::string earlier =
      EnqueueOne(*store_, WithKey(MakeJob(), "k"), now_);
  ASSERT_OK_AND_ASSIGN(
      std::vector<EnqueueResult> enqueued,
      (AwaitDone<std::vector<EnqueueResult>>(&counts, [&](auto done) {
        store_->EnqueueAsync({of_a_schedule, WithKey(MakeJob(), "k")}, now_,
                             std::move(done));
      })));
  ASSERT_THAT(enqueued, SizeIs(2));
  EXPECT_FALSE(enqueued[0].duplicate);
  EXPECT_TRUE(enqueued[1].duplicate);
  EXPECT_EQ(enqueued[1].job_id, earlier);
  const std::string id = enqueued[0].job_id;
  EXPECT_EQ(GetOrFail(*store_, id).state, JobState::kPending);

  // `earlier` is first in line: lease both.
  ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                       store_->Dequeue(Options("q", 2, kHour), now_));
  ASSERT_THAT(leases, SizeIs(2));
  ASSERT_EQ(leases[0].job.id, earlier);
  ASSERT_EQ(leases[1].job.id, id);
  const Job before = GetOrFail(*store_, id);

  // A wrong token: the verdict is the call's error, and nothing changed.
  absl::StatusOr<AckResult> acked =
      AwaitDone<AckResult>(&counts, [&](auto done) {
        store_->AckAsync({id, "not-the-token"}, now_, std::move(done));
      });
  EXPECT_EQ(acked.status().code(), absl::StatusCode::kFailedPrecondition)
      << acked.status();
  ExpectUnchanged(*store_, before);

  const absl::Time t = now_ + absl::Seconds(3);
  acked = AwaitDone<AckResult>(&counts, [&](auto done) {
    store_->AckAsync({id, leases[1].token}, t, std::move(done));
  });
  ASSERT_OK(acked.status());
  EXPECT_EQ(acked->queue, "q");
  EXPECT_EQ(acked->cron_name, "nightly");
  EXPECT_FALSE(acked->already_acked);
  Job job = GetOrFail(*store_, id);
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.updated_at, t);
  acked = AwaitDone<AckResult>(&counts, [&](auto done) {
    store_->AckAsync({id, leases[1].token}, t, std::move(done));
  });
  ASSERT_OK(acked.status());
  EXPECT_TRUE(acked->already_acked) << "a retried ack";

  ASSERT_OK_AND_ASSIGN(
      std::vector<AckResult> results,
      (AwaitDone<std::vector<AckResult>>(&counts, [&](auto done) {
        store_->AckBatchAsync(
            {{"no-such-job", "token"}, {earlier, leases[0].token}}, t,
            std::move(done));
      })));
  EXPECT_EQ(Codes(results),
            (std::vector<absl::StatusCode>{absl::StatusCode::kNotFound,
                                           absl::StatusCode::kOk}));
  EXPECT_EQ(results[1].queue, "q");
  EXPECT_EQ(GetOrFail(*store_, earlier).state, JobState::kSucceeded);
  for (const auto& answers : counts) {
    EXPECT_EQ(answers->load(), 1) << "each done is called exactly once";
  }
}

// Ack, Nack and ExtendLease share their preconditions: the cases below run
// each of them in turn (names in kFencedCallNames).
std::vector<std::function<absl::Status(JobStore&, const std::string&,
                                       const std::string&, absl::Time)>>
FencedCalls() {
  return {
      [](JobStore& s, const std::string& id, const std::string& token,
         absl::Time now) { return s.Ack(id, token, now); },
      [](JobStore& s, const std::string& id, const std::string& token,
         absl::Time now) {
        NackOptions options;
        options.error = "boom";
        return s.Nack(id, token, options, now).status();
      },
      [](JobStore& s, const std::string& id, const std::string& token,
         absl::Time now) {
        return s.ExtendLease(id, token, absl::Seconds(60), now).status();
      },
  };
}
constexpr const char* kFencedCallNames[] = {"Ack", "Nack", "ExtendLease"};

TEST_P(JobStoreConformance, WrongTokenIsRefusedAndChangesNothing) {
  auto calls = FencedCalls();
  for (size_t i = 0; i < calls.size(); ++i) {
    SCOPED_TRACE(kFencedCallNames[i]);
    std::string id = EnqueueOne(*store_, MakeJob(absl::StrCat("q", i)), now_);
    Lease lease = LeaseOne(*store_, now_, Options(absl::StrCat("q", i), 1));
    Job before = GetOrFail(*store_, id);
    absl::Status status = calls[i](*store_, id, "wrong", now_);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_EQ(status.message().find(lease.token), std::string::npos)
        << "messages never contain tokens";
    EXPECT_EQ(calls[i](*store_, id, "", now_).code(),
              absl::StatusCode::kFailedPrecondition);
    ExpectUnchanged(*store_, before);
  }
}

TEST_P(JobStoreConformance, StaleTokenIsRefusedAndChangesNothing) {
  auto calls = FencedCalls();
  for (size_t i = 0; i < calls.size(); ++i) {
    SCOPED_TRACE(kFencedCallNames[i]);
    std::string queue = absl::StrCat("q", i);
    std::string id = EnqueueOne(*store_, MakeJob(queue), now_);
    Lease stale = LeaseOne(*store_, now_, Options(queue, 1, absl::Seconds(10)));
    absl::Time t = now_ + absl::Seconds(10);
    Lease current = LeaseOne(*store_, t, Options(queue, 1, absl::Seconds(60)));
    ASSERT_EQ(current.job.id, id);

    Job before = GetOrFail(*store_, id);
    EXPECT_EQ(calls[i](*store_, id, stale.token, t + absl::Seconds(1)).code(),
              absl::StatusCode::kFailedPrecondition);
    ExpectUnchanged(*store_, before);
    // The current holder is unaffected.
    EXPECT_TRUE(
        calls[i](*store_, id, current.token, t + absl::Seconds(1)).ok());
  }
}

TEST_P(JobStoreConformance, ExpiredLeaseIsRefusedAndChangesNothing) {
  auto calls = FencedCalls();
  for (size_t i = 0; i < calls.size(); ++i) {
    SCOPED_TRACE(kFencedCallNames[i]);
    std::string queue = absl::StrCat("q", i);
    std::string id = EnqueueOne(*store_, MakeJob(queue), now_);
    Lease lease = LeaseOne(*store_, now_, Options(queue, 1, absl::Seconds(10)));
    Job before = GetOrFail(*store_, id);
    // At the expiry instant exactly, and after it.
    EXPECT_EQ(calls[i](*store_, id, lease.token, lease.expires_at).code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(
        calls[i](*store_, id, lease.token, lease.expires_at + absl::Minutes(5))
            .code(),
        absl::StatusCode::kFailedPrecondition);
    ExpectUnchanged(*store_, before);
    // Just before the expiry the same call works.
    EXPECT_TRUE(
        calls[i](*store_, id, lease.token, lease.expires_at - absl::Seconds(1))
            .ok());
  }
}

TEST_P(JobStoreConformance, FencedCallsOnAPendingJobAreRefused) {
  auto calls = FencedCalls();
  for (size_t i = 0; i < calls.size(); ++i) {
    SCOPED_TRACE(kFencedCallNames[i]);
    std::string id = EnqueueOne(*store_, MakeJob(), now_);
    Job before = GetOrFail(*store_, id);
    EXPECT_EQ(calls[i](*store_, id, "", now_).code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(calls[i](*store_, id, "some-token", now_).code(),
              absl::StatusCode::kFailedPrecondition);
    ExpectUnchanged(*store_, before);
  }
}

TEST_P(JobStoreConformance, NackAndExtendAreNotExemptAfterAck) {
  std::string id = EnqueueOne(*store_, MakeJob(), now_);
  Lease lease = LeaseOne(*store_, now_);
  ASSERT_OK(store_->Ack(id, lease.token, now_));
  Job after = GetOrFail(*store_, id);
  EXPECT_EQ(store_->Nack(id, lease.token, NackOptions(), now_).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->ExtendLease(id, lease.token, absl::Seconds(5), now_)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  ExpectUnchanged(*store_, after);
}

// ---- Nack -------------------------------------------------------------------

TEST_P(JobStoreConformance, NackWithRetryAfter) {
  std::string id = EnqueueOne(*store_, MakeJob(), now_);
  Lease lease = LeaseOne(*store_, now_);
  NackOptions options;
  options.error = "upstream 503";
  options.retry_after = absl::Minutes(2);
  absl::Time t = now_ + absl::Seconds(5);
  ASSERT_OK_AND_ASSIGN(Job job, store_->Nack(id, lease.token, options, t));

  EXPECT_EQ(job.state, JobState::kPending);
  EXPECT_EQ(job.run_at, t + absl::Minutes(2));
  EXPECT_EQ(job.last_error, "upstream 503");
  EXPECT_EQ(job.attempts, 1);
  EXPECT_EQ(job.lease_expires_at, absl::InfinitePast());
  ExpectSameJob(GetOrFail(*store_, id), job);

  // The old token no longer works, and the job waits for its run_at.
  EXPECT_EQ(store_->Ack(id, lease.token, t).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(DequeueIds(*store_, Options(), t + absl::Seconds(119)),
              IsEmpty());
  Lease again = LeaseOne(*store_, t + absl::Minutes(2));
  EXPECT_EQ(again.job.id, id);
  EXPECT_EQ(again.job.attempts, 2);
}

TEST_P(JobStoreConformance, NackWithoutRetryAfterUsesTheBackoffPolicy) {
  const BackoffPolicy policy;  // the factory's stores use the default
  std::string id = EnqueueOne(*store_, MakeJob("q", "t", 0, now_, 5), now_);
  absl::Time t = now_;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    SCOPED_TRACE(absl::StrCat("attempt ", attempt));
    Lease lease = LeaseOne(*store_, t);
    ASSERT_EQ(lease.job.attempts, attempt);
    NackOptions options;
    options.error = absl::StrCat("failure ", attempt);
    ASSERT_OK_AND_ASSIGN(Job job, store_->Nack(id, lease.token, options, t));
    EXPECT_EQ(job.state, JobState::kPending);
    EXPECT_GE(job.run_at, t + policy.Delay(attempt, 0.0));
    EXPECT_LE(job.run_at, t + policy.Delay(attempt, 1.0));
    t = job.run_at;
  }
}

TEST_P(JobStoreConformance, NackWithDeadGoesDeadAtOnce) {
  std::string id = EnqueueOne(*store_, MakeJob("q", "t", 0, now_, 10), now_);
  Lease lease = LeaseOne(*store_, now_);
  NackOptions options;
  options.error = "poison message";
  options.dead = true;
  options.retry_after = absl::Seconds(1);  // ignored: dead wins
  ASSERT_OK_AND_ASSIGN(Job job, store_->Nack(id, lease.token, options, now_));
  EXPECT_EQ(job.state, JobState::kDead);
  EXPECT_EQ(job.last_error, "poison message");
  EXPECT_EQ(job.attempts, 1);
  EXPECT_THAT(DequeueIds(*store_, Options(), now_ + absl::Hours(1)), IsEmpty());
}

TEST_P(JobStoreConformance, NackAtMaxAttemptsGoesDeadKeepingLastError) {
  std::string id = EnqueueOne(*store_, MakeJob("q", "t", 0, now_, 2), now_);
  NackOptions options;
  options.retry_after = absl::Seconds(0);
  options.error = "first";
  Lease first = LeaseOne(*store_, now_);
  ASSERT_OK_AND_ASSIGN(Job job, store_->Nack(id, first.token, options, now_));
  EXPECT_EQ(job.state, JobState::kPending);

  options.error = "second";
  Lease second = LeaseOne(*store_, now_);
  ASSERT_OK_AND_ASSIGN(job, store_->Nack(id, second.token, options, now_));
  EXPECT_EQ(job.state, JobState::kDead);
  EXPECT_EQ(job.attempts, 2);
  EXPECT_EQ(job.last_error, "second");
  ExpectSameJob(GetOrFail(*store_, id), job);
}

// ---- ExtendLease ------------------------------------------------------------

TEST_P(JobStoreConformance, ExtendLeaseMovesTheExpiry) {
  std::string id = EnqueueOne(*store_, MakeJob(), now_);
  Lease lease = LeaseOne(*store_, now_, Options("q", 1, absl::Seconds(10)));
  absl::Time t = now_ + absl::Seconds(8);
  ASSERT_OK_AND_ASSIGN(
      absl::Time expires,
      store_->ExtendLease(id, lease.token, absl::Seconds(60), t));
  EXPECT_EQ(expires, t + absl::Seconds(60));
  Job job = GetOrFail(*store_, id);
  EXPECT_EQ(job.state, JobState::kLeased);
  EXPECT_EQ(job.lease_expires_at, expires);
  EXPECT_EQ(job.lease_token, lease.token);
  EXPECT_EQ(job.attempts, 1);

  // Past the old expiry, the job is still held and the token still works.
  EXPECT_THAT(DequeueIds(*store_, Options(), now_ + absl::Seconds(30)),
              IsEmpty());
  EXPECT_TRUE(store_->Ack(id, lease.token, now_ + absl::Seconds(30)).ok());
}

// ---- CancelJob, RequeueJob --------------------------------------------------

TEST_P(JobStoreConformance, CancelPendingJob) {
  std::string id = EnqueueOne(*store_, MakeJob(), now_);
  absl::Time t = now_ + absl::Seconds(1);
  ASSERT_OK_AND_ASSIGN(Job job, store_->CancelJob(id, t));
  EXPECT_EQ(job.state, JobState::kCancelled);
  EXPECT_EQ(job.updated_at, t);
  ExpectSameJob(GetOrFail(*store_, id), job);
  EXPECT_THAT(DequeueIds(*store_, Options(), t), IsEmpty());
}

TEST_P(JobStoreConformance, CancelLeasedJobFencesItsHolder) {
  std::string id = EnqueueOne(*store_, MakeJob(), now_);
  Lease lease = LeaseOne(*store_, now_);
  ASSERT_OK_AND_ASSIGN(Job job, store_->CancelJob(id, now_));
  EXPECT_EQ(job.state, JobState::kCancelled);
  EXPECT_EQ(job.lease_expires_at, absl::InfinitePast());
  EXPECT_EQ(job.lease_token, "") << "the lease ended";

  EXPECT_EQ(store_->Ack(id, lease.token, now_).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->ExtendLease(id, lease.token, absl::Seconds(5), now_)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Nack(id, lease.token, NackOptions(), now_).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ExpectUnchanged(*store_, job);
  // The lease's end does not bring it back.
  EXPECT_THAT(DequeueIds(*store_, Options(), now_ + absl::Hours(1)), IsEmpty());
}

TEST_P(JobStoreConformance, CancelFinishedJobIsRefused) {
  std::string succeeded = EnqueueOne(*store_, MakeJob("a"), now_);
  ASSERT_OK(store_->Ack(succeeded, LeaseOne(*store_, now_, Options("a")).token,
                        now_));
  std::string dead = EnqueueOne(*store_, MakeJob("b"), now_);
  NackOptions die;
  die.dead = true;
  ASSERT_OK(
      store_->Nack(dead, LeaseOne(*store_, now_, Options("b")).token, die, now_)
          .status());
  std::string cancelled = EnqueueOne(*store_, MakeJob("c"), now_);
  ASSERT_OK(store_->CancelJob(cancelled, now_).status());

  for (const std::string& id : {succeeded, dead, cancelled}) {
    Job before = GetOrFail(*store_, id);
    SCOPED_TRACE(JobStateName(before.state));
    EXPECT_EQ(store_->CancelJob(id, now_ + absl::Seconds(1)).status().code(),
              absl::StatusCode::kFailedPrecondition);
    ExpectUnchanged(*store_, before);
  }
}

TEST_P(JobStoreConformance, RequeueDeadOrCancelledJob) {
  std::string dead = EnqueueOne(*store_, MakeJob("q", "t", 0, now_, 2), now_);
  NackOptions options;
  options.error = "broken";
  options.retry_after = absl::ZeroDuration();
  ASSERT_OK(store_->Nack(dead, LeaseOne(*store_, now_).token, options, now_)
                .status());
  ASSERT_OK(store_->Nack(dead, LeaseOne(*store_, now_).token, options, now_)
                .status());
  ASSERT_EQ(GetOrFail(*store_, dead).state, JobState::kDead);
  std::string cancelled =
      EnqueueOne(*store_, MakeJob("q", "t", 0, now_ + absl::Hours(5)), now_);
  ASSERT_OK(store_->CancelJob(cancelled, now_).status());

  absl::Time t = now_ + absl::Minutes(1);
  ASSERT_OK_AND_ASSIGN(Job revived, store_->RequeueJob(dead, t));
  EXPECT_EQ(revived.state, JobState::kPending);
  EXPECT_EQ(revived.attempts, 0);
  EXPECT_EQ(revived.run_at, t);
  EXPECT_EQ(revived.last_error, "broken") << "last_error is kept";
  ExpectSameJob(GetOrFail(*store_, dead), revived);

  ASSERT_OK_AND_ASSIGN(Job uncancelled, store_->RequeueJob(cancelled, t));
  EXPECT_EQ(uncancelled.state, JobState::kPending);
  EXPECT_EQ(uncancelled.run_at, t) << "runnable now, not at the old run_at";

  EXPECT_THAT(DequeueIds(*store_, Options("q", 5), t),
              ElementsAre(dead, cancelled));
  EXPECT_EQ(GetOrFail(*store_, dead).attempts, 1);
}

TEST_P(JobStoreConformance, RequeueOfOtherStatesIsRefused) {
  std::string pending = EnqueueOne(*store_, MakeJob("a"), now_);
  std::string leased = EnqueueOne(*store_, MakeJob("b"), now_);
  LeaseOne(*store_, now_, Options("b"));
  std::string succeeded = EnqueueOne(*store_, MakeJob("c"), now_);
  ASSERT_OK(store_->Ack(succeeded, LeaseOne(*store_, now_, Options("c")).token,
                        now_));
  for (const std::string& id : {pending, leased, succeeded}) {
    Job before = GetOrFail(*store_, id);
    SCOPED_TRACE(JobStateName(before.state));
    EXPECT_EQ(store_->RequeueJob(id, now_).status().code(),
              absl::StatusCode::kFailedPrecondition);
    ExpectUnchanged(*store_, before);
  }
}

TEST_P(JobStoreConformance, UnknownJobIsNotFound) {
  EnqueueOne(*store_, MakeJob(), now_);
  const std::string unknown = "00000000000000000000000000000000";
  EXPECT_EQ(store_->GetJob(unknown).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Ack(unknown, "t", now_).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Nack(unknown, "t", NackOptions(), now_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(
      store_->ExtendLease(unknown, "t", absl::Seconds(1), now_).status().code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->CancelJob(unknown, now_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->RequeueJob(unknown, now_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(ListAll(*store_), SizeIs(1));
}

// ---- ListJobs ---------------------------------------------------------------

TEST_P(JobStoreConformance, ListJobsFiltersByQueueAndState) {
  std::string a1 = EnqueueOne(*store_, MakeJob("a"), now_);
  std::string b1 = EnqueueOne(*store_, MakeJob("b"), now_);
  std::string a2 = EnqueueOne(*store_, MakeJob("a"), now_);
  std::string b2 = EnqueueOne(*store_, MakeJob("b"), now_);
  std::string a3 = EnqueueOne(*store_, MakeJob("a"), now_);
  LeaseOne(*store_, now_, Options("a"));  // a1
  ASSERT_OK(store_->CancelJob(b2, now_).status());

  EXPECT_THAT(Ids(ListAll(*store_)), ElementsAre(a1, b1, a2, b2, a3));
  EXPECT_THAT(Ids(ListAll(*store_, "a")), ElementsAre(a1, a2, a3));
  EXPECT_THAT(Ids(ListAll(*store_, "", JobState::kPending)),
              ElementsAre(b1, a2, a3));
  EXPECT_THAT(Ids(ListAll(*store_, "a", JobState::kPending)),
              ElementsAre(a2, a3));
  EXPECT_THAT(Ids(ListAll(*store_, "a", JobState::kLeased)), ElementsAre(a1));
  EXPECT_THAT(Ids(ListAll(*store_, "", JobState::kCancelled)), ElementsAre(b2));
  EXPECT_THAT(ListAll(*store_, "b", JobState::kLeased), IsEmpty());
  EXPECT_THAT(ListAll(*store_, "none"), IsEmpty());
  // The same through pages of one.
  EXPECT_THAT(Ids(ListAll(*store_, "", JobState::kUnspecified, 1)),
              ElementsAre(a1, b1, a2, b2, a3));
  EXPECT_THAT(Ids(ListAll(*store_, "a", JobState::kPending, 1)),
              ElementsAre(a2, a3));
}

TEST_P(JobStoreConformance, ListJobsPagesEndWithAnEmptyToken) {
  for (int i = 0; i < 6; ++i) EnqueueOne(*store_, MakeJob(), now_);
  ASSERT_OK_AND_ASSIGN(JobPage first,
                       store_->ListJobs("", JobState::kUnspecified, 4, ""));
  EXPECT_THAT(first.jobs, SizeIs(4));
  ASSERT_FALSE(first.next_page_token.empty());
  ASSERT_OK_AND_ASSIGN(
      JobPage second,
      store_->ListJobs("", JobState::kUnspecified, 4, first.next_page_token));
  EXPECT_THAT(second.jobs, SizeIs(2));
  EXPECT_TRUE(second.next_page_token.empty());

  ASSERT_OK_AND_ASSIGN(JobPage exact,
                       store_->ListJobs("", JobState::kUnspecified, 6, ""));
  EXPECT_THAT(exact.jobs, SizeIs(6));
  if (!exact.next_page_token.empty()) {
    // A backend may not know that the page was the last; the next is empty.
    ASSERT_OK_AND_ASSIGN(
        JobPage rest,
        store_->ListJobs("", JobState::kUnspecified, 6, exact.next_page_token));
    EXPECT_THAT(rest.jobs, IsEmpty());
    EXPECT_TRUE(rest.next_page_token.empty());
  }
}

TEST_P(JobStoreConformance, ListJobsPagesThroughEverythingWhileJobsChange) {
  std::vector<std::string> initial;
  for (int i = 0; i < 10; ++i)
    initial.push_back(EnqueueOne(*store_, MakeJob(), now_));

  std::vector<std::string> seen;
  std::vector<std::string> added;
  std::string token;
  int64_t last_seq = 0;
  for (int page_no = 0; page_no < 100; ++page_no) {
    ASSERT_OK_AND_ASSIGN(
        JobPage page, store_->ListJobs("", JobState::kUnspecified, 3, token));
    for (const Job& job : page.jobs) {
      EXPECT_GT(job.seq, last_seq) << "seq order, nothing twice";
      last_seq = job.seq;
      seen.push_back(job.id);
    }
    // Between pages: add a job, and change the state of an early one.
    if (page_no < 3) {
      added.push_back(EnqueueOne(*store_, MakeJob(), now_));
      ASSERT_OK(store_->CancelJob(initial[page_no], now_).status());
    }
    token = page.next_page_token;
    if (token.empty()) break;
  }
  std::vector<std::string> expected = initial;
  expected.insert(expected.end(), added.begin(), added.end());
  EXPECT_EQ(seen, expected) << "every job once, the added ones at the end";
}

TEST_P(JobStoreConformance, ListJobsRejectsAGarbageToken) {
  EnqueueOne(*store_, MakeJob(), now_);
  for (const std::string& token : {std::string("garbage"), std::string("!!!"),
                                   std::string("\xff\xfe", 2)}) {
    absl::StatusOr<JobPage> page =
        store_->ListJobs("", JobState::kUnspecified, 10, token);
    EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument)
        << "token " << token;
    EXPECT_THAT(page.status().message(), HasSubstr("page_token"));
  }
}

// ---- ExpireLeases, NextAvailableTime ----------------------------------------

TEST_P(JobStoreConformance, ExpireLeasesEndsExpiredLeasesOnly) {
  std::string retry = EnqueueOne(
      *store_, MakeJob("a", "t", 0, now_ - absl::Seconds(3), 3), now_);
  std::string dying = EnqueueOne(*store_, MakeJob("b", "t", 0, now_, 1), now_);
  std::string held = EnqueueOne(*store_, MakeJob("c"), now_);
  std::string pending = EnqueueOne(*store_, MakeJob("d"), now_);
  Lease retry_lease =
      LeaseOne(*store_, now_, Options("a", 1, absl::Seconds(10)));
  LeaseOne(*store_, now_, Options("b", 1, absl::Seconds(10)));
  Lease held_lease =
      LeaseOne(*store_, now_, Options("c", 1, absl::Seconds(60)));
  Job held_before = GetOrFail(*store_, held);
  Job pending_before = GetOrFail(*store_, pending);

  EXPECT_THAT(Value(store_->ExpireLeases(now_ + absl::Seconds(9))), IsEmpty());

  absl::Time t = now_ + absl::Seconds(10);
  ASSERT_OK_AND_ASSIGN(std::vector<Job> changed, store_->ExpireLeases(t));
  ASSERT_THAT(Ids(changed), UnorderedElementsAre(retry, dying));
  for (const Job& job : changed) {
    SCOPED_TRACE(job.id);
    EXPECT_EQ(job.last_error, "lease expired");
    EXPECT_EQ(job.lease_expires_at, absl::InfinitePast());
    EXPECT_EQ(job.lease_token, "");
    ExpectSameJob(GetOrFail(*store_, job.id), job);
    if (job.id == retry) {
      EXPECT_EQ(job.state, JobState::kPending);
      EXPECT_EQ(job.run_at, now_ - absl::Seconds(3)) << "keeps its place";
    } else {
      EXPECT_EQ(job.state, JobState::kDead);
    }
  }
  ExpectUnchanged(*store_, held_before);
  ExpectUnchanged(*store_, pending_before);
  EXPECT_EQ(store_->Ack(retry, retry_lease.token, t).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Value(store_->ExpireLeases(t)), IsEmpty())
      << "nothing left to expire";

  Lease again = LeaseOne(*store_, t, Options("a"));
  EXPECT_EQ(again.job.id, retry);
  EXPECT_EQ(again.job.attempts, 2);
  EXPECT_TRUE(store_->Ack(held, held_lease.token, t).ok());
}

TEST_P(JobStoreConformance, NextAvailableTime) {
  EXPECT_EQ(Value(store_->NextAvailableTime("", now_)), absl::InfiniteFuture());

  std::string ready = EnqueueOne(*store_, MakeJob("q1"), now_);
  EnqueueOne(*store_, MakeJob("q1", "t", 0, now_ + absl::Seconds(30)), now_);
  EnqueueOne(*store_, MakeJob("q2", "t", 0, now_ + absl::Seconds(10)), now_);
  std::string done = EnqueueOne(*store_, MakeJob("q3"), now_);
  ASSERT_OK(store_->CancelJob(done, now_).status());

  EXPECT_EQ(Value(store_->NextAvailableTime("q1", now_)),
            now_ + absl::Seconds(30))
      << "a job ready now is not 'after now'";
  EXPECT_EQ(Value(store_->NextAvailableTime("q2", now_)),
            now_ + absl::Seconds(10));
  EXPECT_EQ(Value(store_->NextAvailableTime("", now_)),
            now_ + absl::Seconds(10));
  EXPECT_EQ(Value(store_->NextAvailableTime("q3", now_)),
            absl::InfiniteFuture());
  EXPECT_EQ(Value(store_->NextAvailableTime("nowhere", now_)),
            absl::InfiniteFuture());

  Lease lease = LeaseOne(*store_, now_, Options("q1", 1, absl::Seconds(20)));
  ASSERT_EQ(lease.job.id, ready);
  EXPECT_EQ(Value(store_->NextAvailableTime("q1", now_)),
            now_ + absl::Seconds(20))
      << "a lease's expiry counts";
  EXPECT_EQ(Value(store_->NextAvailableTime("q1", now_ + absl::Seconds(20))),
            now_ + absl::Seconds(30));
  EXPECT_EQ(Value(store_->NextAvailableTime("", now_ + absl::Seconds(30))),
            absl::InfiniteFuture());
}

// ---- QueueStatistics --------------------------------------------------------

// The statistics a store must report, computed from ListJobs (the model).
std::vector<QueueStats> StatsFromListing(JobStore& store, absl::Time now) {
  std::map<std::string, QueueStats> by_queue;
  for (const Job& job : ListAll(store)) {
    QueueStats& stats = by_queue[job.queue];
    stats.queue = job.queue;
    switch (job.state) {
      case JobState::kPending:
        ++stats.pending;
        if (job.run_at <= now) {
          ++stats.runnable;
          stats.oldest_runnable_run_at =
              std::min(stats.oldest_runnable_run_at, job.run_at);
        }
        break;
      case JobState::kLeased:
        ++stats.leased;
        break;
      case JobState::kSucceeded:
        ++stats.succeeded;
        break;
      case JobState::kDead:
        ++stats.dead;
        break;
      case JobState::kCancelled:
        ++stats.cancelled;
        break;
      case JobState::kUnspecified:
        break;
    }
  }
  std::vector<QueueStats> result;
  for (const auto& [queue, stats] : by_queue) result.push_back(stats);
  return result;
}

TEST_P(JobStoreConformance, QueueStatisticsOnAnEmptyStore) {
  EXPECT_THAT(Value(store_->QueueStatistics(now_)), IsEmpty());
}

TEST_P(JobStoreConformance, QueueStatisticsCountsEachStatePerQueue) {
  // Queue "b": two runnable (one older), one delayed, one leased, one
  // acked, one dead, one cancelled. Queue "a": only a delayed job.
  EnqueueOne(*store_, MakeJob("b"), now_ - absl::Seconds(50));
  EnqueueOne(*store_, MakeJob("b", "t", 0, now_ - absl::Seconds(70)), now_);
  EnqueueOne(*store_, MakeJob("b", "t", 0, now_ + absl::Seconds(5)), now_);
  EnqueueOne(*store_, MakeJob("a", "t", 0, now_ + absl::Seconds(9)), now_);
  for (int i = 0; i < 4; ++i) {
    EnqueueOne(*store_, MakeJob("b", "t", /*priority=*/10), now_);
  }
  std::vector<Lease> leases = Value(store_->Dequeue(Options("b", 4), now_));
  ASSERT_THAT(leases, SizeIs(4)) << "the four of priority 10";
  ASSERT_OK(store_->Ack(leases[0].job.id, leases[0].token, now_));
  NackOptions dead;
  dead.dead = true;
  ASSERT_OK(
      store_->Nack(leases[1].job.id, leases[1].token, dead, now_).status());
  ASSERT_OK(store_->CancelJob(leases[2].job.id, now_).status());
  // leases[3] stays LEASED.

  const std::vector<QueueStats> stats = Value(store_->QueueStatistics(now_));
  ASSERT_THAT(stats, SizeIs(2));
  EXPECT_EQ(stats[0].queue, "a") << "queues come in name order";
  EXPECT_EQ(stats[0].pending, 1);
  EXPECT_EQ(stats[0].runnable, 0);
  EXPECT_EQ(stats[0].oldest_runnable_run_at, absl::InfiniteFuture())
      << "a delayed job is not runnable";
  EXPECT_EQ(stats[1].queue, "b");
  EXPECT_EQ(stats[1].pending, 3);
  EXPECT_EQ(stats[1].runnable, 2);
  EXPECT_EQ(stats[1].leased, 1);
  EXPECT_EQ(stats[1].succeeded, 1);
  EXPECT_EQ(stats[1].dead, 1);
  EXPECT_EQ(stats[1].cancelled, 1);
  EXPECT_EQ(stats[1].oldest_runnable_run_at, now_ - absl::Seconds(70));
  EXPECT_EQ(stats, StatsFromListing(*store_, now_));

  // Time passing makes the delayed jobs runnable; nothing else changes.
  const absl::Time later = now_ + absl::Seconds(10);
  const std::vector<QueueStats> after = Value(store_->QueueStatistics(later));
  ASSERT_THAT(after, SizeIs(2));
  EXPECT_EQ(after[0].runnable, 1);
  EXPECT_EQ(after[0].oldest_runnable_run_at, now_ + absl::Seconds(9));
  EXPECT_EQ(after[1].runnable, 3);
  EXPECT_EQ(after, StatsFromListing(*store_, later));
}

// ---- Leadership terms -------------------------------------------------------

TEST_P(JobStoreConformance, TermsOnlyGoUp) {
  EXPECT_EQ(Value(store_->HighestTerm()), 0u);
  EXPECT_EQ(Value(store_->ObserveTerm(0)), 0u);
  EXPECT_EQ(Value(store_->ObserveTerm(5)), 5u);
  EXPECT_EQ(Value(store_->ObserveTerm(5)), 5u) << "an equal term is fine";
  absl::StatusOr<uint64_t> lower = store_->ObserveTerm(4);
  EXPECT_EQ(lower.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Value(store_->HighestTerm()), 5u);
  EXPECT_EQ(Value(store_->ObserveTerm(9)), 9u);
  EXPECT_EQ(Value(store_->HighestTerm()), 9u);
  EXPECT_EQ(store_->ObserveTerm(5).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// ---- Durability (backends with a reopen) ------------------------------------

TEST_P(JobStoreConformance, EverythingSurvivesReopening) {
  if (!GetParam().reopen) GTEST_SKIP() << "this backend keeps nothing";
  std::string pending = EnqueueOne(*store_, WithKey(MakeJob(), "k"), now_);
  std::string leased = EnqueueOne(*store_, MakeJob("l"), now_);
  Lease lease = LeaseOne(*store_, now_, Options("l"));
  ASSERT_OK(store_->ObserveTerm(7).status());
  CronDefinition definition;
  definition.name = "nightly";
  definition.schedule = "0 3 * * *";
  definition.timezone = "UTC";
  definition.job.queue = "q";
  definition.job.type = "t";
  CronState state;
  state.next_fire_time = now_ + absl::Hours(3);
  ASSERT_OK(store_->PutCron(definition, state, 0, now_).status());
  CronTransition transition;
  transition.name = "nightly";
  transition.expected_version = 1;
  transition.term = 7;
  transition.claim_tick = now_;
  transition.new_state = state;
  ASSERT_OK(store_->ApplyCronTransition(transition, now_).status());
  Job pending_before = GetOrFail(*store_, pending);
  Job leased_before = GetOrFail(*store_, leased);
  ASSERT_OK_AND_ASSIGN(CronRecord cron_before, store_->GetCron("nightly"));

  Reopen();
  ASSERT_NE(store_, nullptr);
  ExpectUnchanged(*store_, pending_before);
  ExpectUnchanged(*store_, leased_before);
  EXPECT_EQ(Value(store_->HighestTerm()), 7u);
  EXPECT_EQ(store_->ObserveTerm(6).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_OK_AND_ASSIGN(CronRecord cron_after, store_->GetCron("nightly"));
  EXPECT_EQ(cron_after.version, cron_before.version);
  EXPECT_TRUE(cron_after.definition == cron_before.definition);
  transition.expected_version = cron_after.version;
  EXPECT_EQ(store_->ApplyCronTransition(transition, now_).status().code(),
            absl::StatusCode::kAlreadyExists)
      << "a claimed tick stays claimed";
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> dup,
                       store_->Enqueue({WithKey(MakeJob(), "k")}, now_));
  ASSERT_THAT(dup, SizeIs(1));
  EXPECT_TRUE(dup[0].duplicate);
  EXPECT_TRUE(store_->Ack(leased, lease.token, now_).ok());
}

// ---- Concurrency ------------------------------------------------------------

TEST_P(JobStoreConformance, ConcurrentWorkersLeaseEachJobExactlyOnce) {
  constexpr int kJobs = 2000;
  constexpr int kThreads = 8;
  std::vector<NewJob> batch;
  for (int i = 0; i < kJobs; ++i) {
    batch.push_back(MakeJob("c", "t", i % 5, now_ - absl::Seconds(i % 7)));
  }
  ASSERT_OK(store_->Enqueue(batch, now_).status());

  std::vector<std::vector<std::string>> leased(kThreads);
  std::atomic<int> acked{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kThreads; ++w) {
    workers.emplace_back([&, w] {
      DequeueOptions options =
          Options("c", 1 + w % 4, absl::Hours(1), absl::StrCat("w", w));
      for (;;) {
        absl::StatusOr<std::vector<Lease>> leases =
            store_->Dequeue(options, now_);
        if (!leases.ok()) {
          ADD_FAILURE() << leases.status();
          return;
        }
        if (leases->empty()) return;  // every job is taken
        for (const Lease& lease : *leases) {
          leased[w].push_back(lease.job.id);
          absl::Status status = store_->Ack(lease.job.id, lease.token, now_);
          if (status.ok()) {
            ++acked;
          } else {
            ADD_FAILURE() << status;
          }
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();

  std::multiset<std::string> all;
  for (const auto& ids : leased) all.insert(ids.begin(), ids.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kJobs)) << "leases handed out";
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(),
            static_cast<size_t>(kJobs))
      << "no job leased twice";
  EXPECT_EQ(acked.load(), kJobs);
  std::vector<Job> succeeded = ListAll(*store_, "c", JobState::kSucceeded, 500);
  EXPECT_THAT(succeeded, SizeIs(kJobs));
  for (const Job& job : succeeded) EXPECT_EQ(job.attempts, 1);
}

// ---- Cron schedules ---------------------------------------------------------

CronDefinition MakeCron(std::string name, bool paused = false) {
  CronDefinition definition;
  definition.name = std::move(name);
  definition.schedule = "*/5 * * * *";
  definition.timezone = "Europe/London";
  definition.job.queue = "cronq";
  definition.job.type = "report";
  definition.job.payload = std::string("p\0q", 3);
  definition.job.priority = 2;
  definition.job.max_attempts = 4;
  definition.misfire_policy = MisfirePolicy::kFireAll;
  definition.catchup_window = absl::Minutes(90);
  definition.overlap_policy = OverlapPolicy::kReplace;
  definition.paused = paused;
  return definition;
}

CronState StateFiringAt(absl::Time next) {
  CronState state;
  state.next_fire_time = next;
  return state;
}

void ExpectSameState(const CronState& a, const CronState& b) {
  EXPECT_EQ(a.next_fire_time, b.next_fire_time);
  EXPECT_EQ(a.last_fire_time, b.last_fire_time);
  EXPECT_EQ(a.last_job_id, b.last_job_id);
  EXPECT_EQ(a.fired_count, b.fired_count);
  EXPECT_EQ(a.missed_count, b.missed_count);
  EXPECT_EQ(a.overlap_skipped_count, b.overlap_skipped_count);
  EXPECT_EQ(a.waiting_tick_time, b.waiting_tick_time);
}

void ExpectSameRecord(const CronRecord& a, const CronRecord& b) {
  EXPECT_TRUE(a.definition == b.definition) << a.definition.name;
  ExpectSameState(a.state, b.state);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.updated_at, b.updated_at);
  EXPECT_EQ(a.version, b.version);
}

std::vector<std::string> Names(const std::vector<CronRecord>& crons) {
  std::vector<std::string> names;
  for (const CronRecord& cron : crons) names.push_back(cron.definition.name);
  return names;
}

TEST_P(JobStoreConformance, PutCronCreatesAndGetCronReads) {
  CronDefinition definition = MakeCron("nightly");
  CronState state = StateFiringAt(now_ + absl::Minutes(5));
  state.last_fire_time = now_ - absl::Minutes(5);
  state.last_job_id = "some-job";
  state.fired_count = 3;
  state.missed_count = 2;
  state.overlap_skipped_count = 1;
  state.waiting_tick_time = now_ - absl::Minutes(1);
  ASSERT_OK_AND_ASSIGN(CronRecord created,
                       store_->PutCron(definition, state, 0, now_));
  EXPECT_TRUE(created.definition == definition);
  ExpectSameState(created.state, state);
  EXPECT_EQ(created.version, 1);
  EXPECT_EQ(created.created_at, now_);
  EXPECT_EQ(created.updated_at, now_);

  ASSERT_OK_AND_ASSIGN(CronRecord read, store_->GetCron("nightly"));
  ExpectSameRecord(read, created);
  EXPECT_EQ(store_->GetCron("daily").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(JobStoreConformance, PutCronIsACompareAndSet) {
  CronDefinition definition = MakeCron("nightly");
  ASSERT_OK_AND_ASSIGN(
      CronRecord v1,
      store_->PutCron(definition, StateFiringAt(now_ + absl::Minutes(5)), 0,
                      now_));

  // Version 0 means "must not exist".
  EXPECT_EQ(store_->PutCron(definition, CronState(), 0, now_).status().code(),
            absl::StatusCode::kAlreadyExists);
  // A stale or future version loses.
  EXPECT_EQ(store_->PutCron(definition, CronState(), 2, now_).status().code(),
            absl::StatusCode::kAborted);
  // An unknown schedule with a version.
  EXPECT_EQ(
      store_->PutCron(MakeCron("other"), CronState(), 1, now_).status().code(),
      absl::StatusCode::kNotFound);
  ASSERT_OK_AND_ASSIGN(CronRecord unchanged, store_->GetCron("nightly"));
  ExpectSameRecord(unchanged, v1);
  EXPECT_EQ(store_->GetCron("other").status().code(),
            absl::StatusCode::kNotFound);

  definition.schedule = "0 * * * *";
  absl::Time t = now_ + absl::Minutes(1);
  ASSERT_OK_AND_ASSIGN(
      CronRecord v2,
      store_->PutCron(definition, StateFiringAt(now_ + absl::Hours(1)), 1, t));
  EXPECT_EQ(v2.version, 2);
  EXPECT_EQ(v2.created_at, now_) << "kept";
  EXPECT_EQ(v2.updated_at, t);
  EXPECT_EQ(v2.definition.schedule, "0 * * * *");
  EXPECT_EQ(v2.state.next_fire_time, now_ + absl::Hours(1));
  ASSERT_OK_AND_ASSIGN(CronRecord read, store_->GetCron("nightly"));
  ExpectSameRecord(read, v2);
  EXPECT_EQ(store_->PutCron(definition, CronState(), 1, t).status().code(),
            absl::StatusCode::kAborted)
      << "version 1 is stale now";
}

TEST_P(JobStoreConformance, DeleteCronRemovesScheduleAndClaimsButNotJobs) {
  ASSERT_OK(
      store_->PutCron(MakeCron("nightly"), CronState(), 0, now_).status());
  CronTransition fire;
  fire.name = "nightly";
  fire.expected_version = 1;
  fire.claim_tick = now_;
  NewJob job = MakeJob("cronq", "report");
  job.cron_name = "nightly";
  job.cron_tick_time = now_;
  fire.job = job;
  ASSERT_OK_AND_ASSIGN(CronRecord fired,
                       store_->ApplyCronTransition(fire, now_));

  ASSERT_OK(store_->DeleteCron("nightly", now_));
  EXPECT_EQ(store_->GetCron("nightly").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteCron("nightly", now_).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(GetOrFail(*store_, fired.state.last_job_id).cron_name, "nightly")
      << "jobs it fired stay";

  // Registered again, the schedule may claim the same tick: the claims went.
  ASSERT_OK(
      store_->PutCron(MakeCron("nightly"), CronState(), 0, now_).status());
  fire.expected_version = 1;
  EXPECT_TRUE(store_->ApplyCronTransition(fire, now_).ok());
}

// A tick fired ahead of its instant is a PENDING job with a run_at still to
// come: deleting its schedule cancels it, in the same transaction, and
// leaves every other job the schedule fired.
TEST_P(JobStoreConformance, DeleteCronCancelsTheJobOfATickFiredAhead) {
  auto fire = [&](const std::string& name, absl::Time tick,
                  absl::Time run_at) -> std::string {
    absl::StatusOr<CronRecord> record = store_->GetCron(name);
    if (!record.ok()) {
      record = store_->PutCron(MakeCron(name), CronState(), 0, now_);
    }
    EXPECT_TRUE(record.ok()) << record.status();
    CronTransition t;
    t.name = name;
    t.expected_version = record->version;
    t.claim_tick = tick;
    NewJob job = MakeJob("cronq", "report", 0, run_at);
    job.cron_name = name;
    job.cron_tick_time = tick;
    t.job = job;
    t.new_state.last_fire_time = tick;
    t.new_state.next_fire_time = tick + absl::Minutes(1);
    absl::StatusOr<CronRecord> after = store_->ApplyCronTransition(t, now_);
    EXPECT_TRUE(after.ok()) << after.status();
    return after.ok() ? after->state.last_job_id : "";
  };
  // "ahead": an earlier tick fired on time, then the next one fired ahead.
  const std::string on_time = fire("ahead", now_, absl::InfinitePast());
  const std::string fired_ahead =
      fire("ahead", now_ + absl::Seconds(1), now_ + absl::Seconds(1));
  // "due": its last tick fired ahead, but its instant has come.
  const std::string due =
      fire("due", now_ + absl::Seconds(1), now_ + absl::Seconds(1));
  // "leased": its last tick's job is already being worked on.
  const std::string leased = fire("leased", now_, absl::InfinitePast());
  // "retry": its last tick's job failed once and waits for its retry.
  const std::string retry = fire("retry", now_, absl::InfinitePast());
  ASSERT_OK_AND_ASSIGN(std::vector<Lease> leases,
                       store_->Dequeue(Options("cronq", 10), now_));
  ASSERT_EQ(leases.size(), 3u) << "the jobs of on_time, leased and retry";
  for (const Lease& lease : leases) {
    if (lease.job.id != retry) continue;
    NackOptions nack;
    nack.retry_after = absl::Minutes(1);
    ASSERT_OK(store_->Nack(retry, lease.token, nack, now_).status());
  }
  ASSERT_EQ(GetOrFail(*store_, retry).state, JobState::kPending);
  ASSERT_GT(GetOrFail(*store_, retry).run_at, now_ + absl::Seconds(1));

  const absl::Time later = now_ + absl::Milliseconds(500);
  ASSERT_OK(store_->DeleteCron("ahead", later));
  EXPECT_EQ(GetOrFail(*store_, fired_ahead).state, JobState::kCancelled);
  EXPECT_EQ(GetOrFail(*store_, fired_ahead).updated_at, later);
  EXPECT_NE(GetOrFail(*store_, on_time).state, JobState::kCancelled);

  ASSERT_OK(store_->DeleteCron("due", now_ + absl::Seconds(1)));
  EXPECT_EQ(GetOrFail(*store_, due).state, JobState::kPending);
  ASSERT_OK(store_->DeleteCron("leased", later));
  EXPECT_EQ(GetOrFail(*store_, leased).state, JobState::kLeased);
  ASSERT_OK(store_->DeleteCron("retry", later));
  EXPECT_EQ(GetOrFail(*store_, retry).state, JobState::kPending)
      << "a retry is no tick fired ahead";
  EXPECT_EQ(store_->DeleteCron("ahead", later).code(),
            absl::StatusCode::kNotFound);
}

TEST_P(JobStoreConformance, ListCronsPagesInNameOrder) {
  for (const char* name : {"delta", "alpha", "gamma", "beta", "omega"}) {
    ASSERT_OK(store_->PutCron(MakeCron(name), CronState(), 0, now_).status());
  }
  ASSERT_OK_AND_ASSIGN(CronPage page1, store_->ListCrons(2, ""));
  EXPECT_THAT(Names(page1.crons), ElementsAre("alpha", "beta"));
  ASSERT_FALSE(page1.next_page_token.empty());

  // Schedules added meanwhile: before the position (not seen) and after it.
  ASSERT_OK(
      store_->PutCron(MakeCron("aardvark"), CronState(), 0, now_).status());
  ASSERT_OK(store_->PutCron(MakeCron("zeta"), CronState(), 0, now_).status());

  ASSERT_OK_AND_ASSIGN(CronPage page2,
                       store_->ListCrons(2, page1.next_page_token));
  EXPECT_THAT(Names(page2.crons), ElementsAre("delta", "gamma"));
  ASSERT_FALSE(page2.next_page_token.empty());
  ASSERT_OK_AND_ASSIGN(CronPage page3,
                       store_->ListCrons(2, page2.next_page_token));
  EXPECT_THAT(Names(page3.crons), ElementsAre("omega", "zeta"));
  if (!page3.next_page_token.empty()) {
    ASSERT_OK_AND_ASSIGN(CronPage page4,
                         store_->ListCrons(2, page3.next_page_token));
    EXPECT_THAT(page4.crons, IsEmpty());
    EXPECT_TRUE(page4.next_page_token.empty());
  }

  ASSERT_OK_AND_ASSIGN(CronPage all, store_->ListCrons(100, ""));
  ASSERT_THAT(Names(all.crons), ElementsAre("aardvark", "alpha", "beta",
                                            "delta", "gamma", "omega", "zeta"));
  EXPECT_TRUE(all.next_page_token.empty());
  ExpectSameRecord(all.crons[1], Value(store_->GetCron("alpha")));

  absl::Status garbage = store_->ListCrons(2, "garbage").status();
  EXPECT_EQ(garbage.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(garbage.message(), HasSubstr("page_token"));
  EXPECT_EQ(store_->ListCrons(2, "!!!").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(JobStoreConformance, ListCronsOnAnEmptyStore) {
  ASSERT_OK_AND_ASSIGN(CronPage page, store_->ListCrons(10, ""));
  EXPECT_THAT(page.crons, IsEmpty());
  EXPECT_TRUE(page.next_page_token.empty());
}

TEST_P(JobStoreConformance, DueCronsAndNextCronFireTime) {
  EXPECT_EQ(Value(store_->NextCronFireTime(absl::InfinitePast())),
            absl::InfiniteFuture());
  EXPECT_THAT(Value(store_->DueCrons(now_, 10)), IsEmpty());

  auto put = [&](const std::string& name, absl::Time next, bool paused,
                 absl::Time waiting = absl::InfinitePast()) {
    CronState state = StateFiringAt(next);
    state.waiting_tick_time = waiting;
    ASSERT_OK(store_->PutCron(MakeCron(name, paused), state, 0, now_).status());
  };
  put("a", now_ - absl::Seconds(10), false);
  put("b", now_ - absl::Seconds(20), false);
  put("c", now_ + absl::Seconds(10), false);
  put("d", now_ - absl::Seconds(30), true);  // paused
  put("e", now_ + absl::Seconds(100), false, now_ - absl::Seconds(50));
  put("f", absl::InfiniteFuture(), true, now_ - absl::Seconds(50));  // paused
  put("g", now_, false);                    // due exactly now
  put("h", absl::InfiniteFuture(), false);  // no more ticks

  EXPECT_THAT(Names(Value(store_->DueCrons(now_, 10))),
              ElementsAre("b", "a", "g", "e"));
  EXPECT_THAT(Names(Value(store_->DueCrons(now_, 2))), ElementsAre("b", "a"));
  EXPECT_THAT(Names(Value(store_->DueCrons(now_ - absl::Seconds(15), 10))),
              ElementsAre("b", "e"));
  EXPECT_THAT(Names(Value(store_->DueCrons(now_ + absl::Seconds(10), 10))),
              ElementsAre("b", "a", "g", "c", "e"));
  EXPECT_EQ(Value(store_->NextCronFireTime(absl::InfinitePast())),
            now_ - absl::Seconds(20))
      << "d is paused";
  // Only fire times later than `after`.
  EXPECT_EQ(Value(store_->NextCronFireTime(now_ - absl::Seconds(20))),
            now_ - absl::Seconds(10));
  EXPECT_EQ(Value(store_->NextCronFireTime(now_ - absl::Seconds(1))), now_);
  EXPECT_EQ(Value(store_->NextCronFireTime(now_)), now_ + absl::Seconds(10));
  EXPECT_EQ(Value(store_->NextCronFireTime(now_ + absl::Seconds(10))),
            now_ + absl::Seconds(100));
  EXPECT_EQ(Value(store_->NextCronFireTime(now_ + absl::Seconds(100))),
            absl::InfiniteFuture())
      << "h has no next tick";

  // Pausing b moves the next fire time to a's.
  ASSERT_OK_AND_ASSIGN(CronRecord b, store_->GetCron("b"));
  ASSERT_OK(
      store_->PutCron(MakeCron("b", true), b.state, b.version, now_).status());
  EXPECT_EQ(Value(store_->NextCronFireTime(absl::InfinitePast())),
            now_ - absl::Seconds(10));
  EXPECT_THAT(Names(Value(store_->DueCrons(now_, 10))),
              ElementsAre("a", "g", "e"));
}

// ---- ApplyCronTransition ----------------------------------------------------

// A schedule "nightly" at version 1 and a transition firing its tick at now_.
struct FiringSetup {
  CronRecord record;
  CronTransition fire;
};

FiringSetup SetUpFiring(JobStore& store, absl::Time now, uint64_t term = 1) {
  FiringSetup setup;
  absl::StatusOr<CronRecord> record =
      store.PutCron(MakeCron("nightly"), StateFiringAt(now), 0, now);
  EXPECT_TRUE(record.ok()) << record.status();
  if (record.ok()) setup.record = *record;
  CronTransition& fire = setup.fire;
  fire.name = "nightly";
  fire.expected_version = setup.record.version;
  fire.term = term;
  fire.claim_tick = now;
  NewJob job = MakeJob("cronq", "report", 2, absl::InfinitePast(), 4);
  job.cron_name = "nightly";
  job.cron_tick_time = now;
  fire.job = job;
  fire.new_state = StateFiringAt(now + absl::Minutes(5));
  fire.new_state.last_fire_time = now;
  fire.new_state.fired_count = 1;
  return setup;
}

TEST_P(JobStoreConformance, CronTransitionFiresAJob) {
  FiringSetup setup = SetUpFiring(*store_, now_, 3);
  absl::Time t = now_ + absl::Seconds(2);
  ASSERT_OK_AND_ASSIGN(CronRecord after,
                       store_->ApplyCronTransition(setup.fire, t));

  EXPECT_EQ(after.version, setup.record.version + 1);
  EXPECT_EQ(after.updated_at, setup.record.updated_at)
      << "definition unchanged";
  EXPECT_EQ(after.created_at, setup.record.created_at);
  EXPECT_TRUE(after.definition == setup.record.definition);
  CronState expected = setup.fire.new_state;
  ASSERT_FALSE(after.state.last_job_id.empty());
  expected.last_job_id = after.state.last_job_id;
  ExpectSameState(after.state, expected);
  ASSERT_OK_AND_ASSIGN(CronRecord read, store_->GetCron("nightly"));
  ExpectSameRecord(read, after);
  EXPECT_EQ(Value(store_->HighestTerm()), 3u) << "the term is recorded";

  Job job = GetOrFail(*store_, after.state.last_job_id);
  EXPECT_EQ(job.state, JobState::kPending);
  EXPECT_EQ(job.queue, "cronq");
  EXPECT_EQ(job.type, "report");
  EXPECT_EQ(job.priority, 2);
  EXPECT_EQ(job.max_attempts, 4);
  EXPECT_EQ(job.cron_name, "nightly");
  EXPECT_EQ(job.cron_tick_time, now_);
  EXPECT_EQ(job.created_at, t);
  EXPECT_EQ(job.run_at, t);
  EXPECT_EQ(job.attempts, 0);
  EXPECT_THAT(ListAll(*store_), SizeIs(1));
}

TEST_P(JobStoreConformance, CronTransitionWithoutJobOrClaimOnlyMovesState) {
  FiringSetup setup = SetUpFiring(*store_, now_);
  CronTransition skip;
  skip.name = "nightly";
  skip.expected_version = setup.record.version;
  skip.term = 1;
  skip.new_state = StateFiringAt(now_ + absl::Minutes(5));
  skip.new_state.missed_count = 1;
  skip.new_state.last_job_id = "kept-as-given";
  ASSERT_OK_AND_ASSIGN(CronRecord after,
                       store_->ApplyCronTransition(skip, now_));
  ExpectSameState(after.state, skip.new_state);
  EXPECT_EQ(after.version, setup.record.version + 1);
  EXPECT_THAT(ListAll(*store_), IsEmpty());

  // The tick was not claimed: the original firing still goes through.
  setup.fire.expected_version = after.version;
  EXPECT_TRUE(store_->ApplyCronTransition(setup.fire, now_).ok());
}

TEST_P(JobStoreConformance, CronTransitionRefusesAClaimedTick) {
  FiringSetup setup = SetUpFiring(*store_, now_);
  ASSERT_OK_AND_ASSIGN(CronRecord fired,
                       store_->ApplyCronTransition(setup.fire, now_));
  Job first_job = GetOrFail(*store_, fired.state.last_job_id);

  // The same tick again, even at the right version, by a later term, and
  // asking to cancel the first job.
  CronTransition again = setup.fire;
  again.expected_version = fired.version;
  again.term = 2;
  again.cancel_job_id = first_job.id;
  absl::StatusOr<CronRecord> refused =
      store_->ApplyCronTransition(again, now_ + absl::Seconds(1));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);

  // Nothing changed: no job, no cancel, no state, no term.
  EXPECT_THAT(ListAll(*store_), SizeIs(1));
  ExpectUnchanged(*store_, first_job);
  ASSERT_OK_AND_ASSIGN(CronRecord read, store_->GetCron("nightly"));
  ExpectSameRecord(read, fired);
  EXPECT_EQ(Value(store_->HighestTerm()), 1u);

  // Another tick is fine; and claims are per schedule.
  again.claim_tick = now_ + absl::Minutes(5);
  again.cancel_job_id.clear();
  EXPECT_TRUE(store_->ApplyCronTransition(again, now_).ok());
  ASSERT_OK(store_->PutCron(MakeCron("other"), CronState(), 0, now_).status());
  CronTransition other = setup.fire;
  other.name = "other";
  other.expected_version = 1;
  other.term = 2;
  EXPECT_TRUE(store_->ApplyCronTransition(other, now_).ok());
}

TEST_P(JobStoreConformance, CronTransitionWithStaleVersionIsAborted) {
  FiringSetup setup = SetUpFiring(*store_, now_);
  std::string victim = EnqueueOne(*store_, MakeJob("cronq"), now_);
  Job victim_before = GetOrFail(*store_, victim);
  // Someone re-registered the schedule meanwhile.
  ASSERT_OK_AND_ASSIGN(
      CronRecord v2,
      store_->PutCron(MakeCron("nightly"), StateFiringAt(now_), 1, now_));

  CronTransition stale = setup.fire;
  stale.term = 4;
  stale.cancel_job_id = victim;
  EXPECT_EQ(store_->ApplyCronTransition(stale, now_).status().code(),
            absl::StatusCode::kAborted);
  stale.expected_version = 99;
  EXPECT_EQ(store_->ApplyCronTransition(stale, now_).status().code(),
            absl::StatusCode::kAborted);

  EXPECT_THAT(ListAll(*store_), SizeIs(1)) << "no job fired";
  ExpectUnchanged(*store_, victim_before);
  ASSERT_OK_AND_ASSIGN(CronRecord read, store_->GetCron("nightly"));
  ExpectSameRecord(read, v2);
  EXPECT_EQ(Value(store_->HighestTerm()), 0u)
      << "a failed step records no term";

  // The tick was not claimed by the failed step.
  stale.expected_version = v2.version;
  EXPECT_TRUE(store_->ApplyCronTransition(stale, now_).ok());
}

TEST_P(JobStoreConformance, CronTransitionOfUnknownScheduleIsNotFound) {
  FiringSetup setup = SetUpFiring(*store_, now_);
  CronTransition unknown = setup.fire;
  unknown.name = "nobody";
  unknown.term = 3;
  EXPECT_EQ(store_->ApplyCronTransition(unknown, now_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(ListAll(*store_), IsEmpty());
  EXPECT_EQ(Value(store_->HighestTerm()), 0u);
}

TEST_P(JobStoreConformance, CronTransitionFromALowerTermIsRefused) {
  FiringSetup setup = SetUpFiring(*store_, now_, 4);
  ASSERT_OK(store_->ObserveTerm(5).status());
  std::string victim = EnqueueOne(*store_, MakeJob("cronq"), now_);
  Job victim_before = GetOrFail(*store_, victim);
  setup.fire.cancel_job_id = victim;

  EXPECT_EQ(store_->ApplyCronTransition(setup.fire, now_).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(ListAll(*store_), SizeIs(1));
  ExpectUnchanged(*store_, victim_before);
  ASSERT_OK_AND_ASSIGN(CronRecord read, store_->GetCron("nightly"));
  ExpectSameRecord(read, setup.record);
  EXPECT_EQ(Value(store_->HighestTerm()), 5u);

  // Term checks come first: even a stale version gets FAILED_PRECONDITION.
  CronTransition stale = setup.fire;
  stale.expected_version = 42;
  EXPECT_EQ(store_->ApplyCronTransition(stale, now_).status().code(),
            absl::StatusCode::kFailedPrecondition);

  // An equal term works, and a higher one is recorded.
  setup.fire.term = 5;
  ASSERT_OK_AND_ASSIGN(CronRecord fired,
                       store_->ApplyCronTransition(setup.fire, now_));
  CronTransition next;
  next.name = "nightly";
  next.expected_version = fired.version;
  next.term = 8;
  next.new_state = fired.state;
  ASSERT_OK(store_->ApplyCronTransition(next, now_).status());
  EXPECT_EQ(Value(store_->HighestTerm()), 8u);
  EXPECT_EQ(store_->ObserveTerm(7).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(JobStoreConformance, CronTransitionReplaceCancelsThePreviousJob) {
  FiringSetup setup = SetUpFiring(*store_, now_);
  ASSERT_OK_AND_ASSIGN(CronRecord first,
                       store_->ApplyCronTransition(setup.fire, now_));
  std::string first_job = first.state.last_job_id;
  Lease lease = LeaseOne(*store_, now_, Options("cronq"));
  ASSERT_EQ(lease.job.id, first_job);

  // The next tick replaces the leased job.
  absl::Time t = now_ + absl::Minutes(5);
  CronTransition replace = setup.fire;
  replace.expected_version = first.version;
  replace.claim_tick = t;
  replace.job->cron_tick_time = t;
  replace.cancel_job_id = first_job;
  replace.new_state.last_fire_time = t;
  ASSERT_OK_AND_ASSIGN(CronRecord second,
                       store_->ApplyCronTransition(replace, t));
  Job cancelled = GetOrFail(*store_, first_job);
  EXPECT_EQ(cancelled.state, JobState::kCancelled);
  EXPECT_EQ(store_->Ack(first_job, lease.token, t).code(),
            absl::StatusCode::kFailedPrecondition)
      << "the holder of the replaced job is fenced off";
  EXPECT_EQ(store_->ExtendLease(first_job, lease.token, absl::Seconds(5), t)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  std::string second_job = second.state.last_job_id;
  EXPECT_NE(second_job, first_job);
  EXPECT_EQ(GetOrFail(*store_, second_job).state, JobState::kPending);

  // A pending previous job is cancelled too.
  absl::Time t2 = t + absl::Minutes(5);
  replace.expected_version = second.version;
  replace.claim_tick = t2;
  replace.cancel_job_id = second_job;
  ASSERT_OK_AND_ASSIGN(CronRecord third,
                       store_->ApplyCronTransition(replace, t2));
  EXPECT_EQ(GetOrFail(*store_, second_job).state, JobState::kCancelled);

  // A finished one is left alone.
  std::string third_job = third.state.last_job_id;
  Lease third_lease = LeaseOne(*store_, t2, Options("cronq"));
  ASSERT_EQ(third_lease.job.id, third_job);
  ASSERT_OK(store_->Ack(third_job, third_lease.token, t2));
  Job third_done = GetOrFail(*store_, third_job);
  absl::Time t3 = t2 + absl::Minutes(5);
  replace.expected_version = third.version;
  replace.claim_tick = t3;
  replace.cancel_job_id = third_job;
  ASSERT_OK(store_->ApplyCronTransition(replace, t3).status());
  ExpectUnchanged(*store_, third_done);
  EXPECT_THAT(ListAll(*store_, "cronq"), SizeIs(4));
}

TEST_P(JobStoreConformance, DueCronsFollowTransitions) {
  FiringSetup setup = SetUpFiring(*store_, now_);
  EXPECT_THAT(Names(Value(store_->DueCrons(now_, 10))), ElementsAre("nightly"));
  EXPECT_EQ(Value(store_->NextCronFireTime(absl::InfinitePast())), now_);
  ASSERT_OK_AND_ASSIGN(CronRecord fired,
                       store_->ApplyCronTransition(setup.fire, now_));
  EXPECT_THAT(Value(store_->DueCrons(now_, 10)), IsEmpty());
  EXPECT_EQ(Value(store_->NextCronFireTime(absl::InfinitePast())),
            now_ + absl::Minutes(5));

  // A waiting tick makes the schedule due whatever its next fire time.
  CronTransition wait;
  wait.name = "nightly";
  wait.expected_version = fired.version;
  wait.term = 1;
  wait.new_state = fired.state;
  wait.new_state.waiting_tick_time = now_ + absl::Minutes(5);
  wait.new_state.next_fire_time = now_ + absl::Minutes(10);
  ASSERT_OK(store_->ApplyCronTransition(wait, now_).status());
  EXPECT_THAT(Names(Value(store_->DueCrons(now_, 10))), ElementsAre("nightly"));
  EXPECT_EQ(Value(store_->NextCronFireTime(absl::InfinitePast())),
            now_ + absl::Minutes(10));
}

// ---- Retention
// ----------------------------------------------------------------

// Stores a job of queue "q" and type `type` (unique per job, so that it can
// be leased alone) that ends in `state` (SUCCEEDED, DEAD or CANCELLED) at
// `at`, and returns its id.
std::string FinishedJob(JobStore& store, const std::string& type,
                        JobState state, absl::Time at,
                        const std::string& key = "") {
  NewJob job = MakeJob("q", type);
  job.idempotency_key = key;
  const std::string id = EnqueueOne(store, job, at - absl::Minutes(1));
  if (state == JobState::kCancelled) {
    EXPECT_TRUE(store.CancelJob(id, at).ok());
    return id;
  }
  DequeueOptions options = Options("q", 1, absl::Hours(1));
  options.job_types = {type};
  Lease lease = LeaseOne(store, at - absl::Seconds(30), options);
  EXPECT_EQ(lease.job.id, id);
  if (state == JobState::kSucceeded) {
    EXPECT_TRUE(store.Ack(id, lease.token, at).ok());
  } else {
    NackOptions nack;
    nack.error = "broken";
    nack.dead = true;
    EXPECT_TRUE(store.Nack(id, lease.token, nack, at).ok());
  }
  EXPECT_EQ(GetOrFail(store, id).state, state);
  return id;
}

bool Exists(JobStore& store, const std::string& id) {
  absl::StatusOr<Job> job = store.GetJob(id);
  EXPECT_TRUE(job.ok() || absl::IsNotFound(job.status())) << job.status();
  return job.ok();
}

TEST_P(JobStoreConformance, PruneDeletesOnlyFinishedJobsOlderThanTheCutoff) {
  const absl::Time old = now_ - absl::Hours(48);
  const absl::Time cutoff = now_ - absl::Hours(24);
  const std::string succeeded =
      FinishedJob(*store_, "s", JobState::kSucceeded, old);
  const std::string cancelled =
      FinishedJob(*store_, "c", JobState::kCancelled, old);
  const std::string dead = FinishedJob(*store_, "d", JobState::kDead, old);
  // Finished, but not before the cutoff (which is exclusive).
  const std::string recent =
      FinishedJob(*store_, "r", JobState::kSucceeded, now_ - absl::Hours(1));
  const std::string at_cutoff =
      FinishedJob(*store_, "x", JobState::kCancelled, cutoff);
  // Not finished, however old: pending (due long ago, or delayed), leased
  // (its lease long expired), and a dead job requeued long ago.
  const std::string pending =
      EnqueueOne(*store_, MakeJob("q", "p"), now_ - absl::Hours(1000));
  const std::string delayed =
      EnqueueOne(*store_, MakeJob("q", "later", 0, now_ + absl::Hours(1)), old);
  const std::string requeued =
      FinishedJob(*store_, "rq", JobState::kDead, now_ - absl::Hours(900));
  ASSERT_OK(store_->RequeueJob(requeued, now_ - absl::Hours(800)).status());
  // Last: a Dequeue may end the expired leases of its queue.
  DequeueOptions lease_l = Options();
  lease_l.job_types = {"l"};
  const std::string leased =
      EnqueueOne(*store_, MakeJob("q", "l"), now_ - absl::Hours(1000));
  ASSERT_EQ(LeaseOne(*store_, now_ - absl::Hours(999), lease_l).job.id, leased);
  const std::vector<std::string> kept = {recent,  at_cutoff, pending,
                                         delayed, leased,    requeued};
  std::map<std::string, Job> before;
  for (const std::string& id : kept) before[id] = GetOrFail(*store_, id);

  EXPECT_EQ(Value(store_->PruneFinishedJobs(cutoff, cutoff, 100)), 3);
  EXPECT_FALSE(Exists(*store_, succeeded));
  EXPECT_FALSE(Exists(*store_, cancelled));
  EXPECT_FALSE(Exists(*store_, dead));
  for (const std::string& id : kept) {
    Job after = GetOrFail(*store_, id);
    EXPECT_EQ(after.state, before[id].state) << id;
    EXPECT_EQ(after.updated_at, before[id].updated_at) << id;
  }
  EXPECT_THAT(ListAll(*store_), SizeIs(kept.size()));
  EXPECT_THAT(ListAll(*store_, "q", JobState::kSucceeded), SizeIs(1));
  EXPECT_THAT(ListAll(*store_, "", JobState::kDead), IsEmpty());
  std::vector<QueueStats> stats = Value(store_->QueueStatistics(now_));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_EQ(stats[0].succeeded, 1);
  EXPECT_EQ(stats[0].cancelled, 1);
  EXPECT_EQ(stats[0].dead, 0);
  EXPECT_EQ(stats[0].pending, 3);
  EXPECT_EQ(stats[0].leased, 1);
  // Nothing more is due.
  EXPECT_EQ(Value(store_->PruneFinishedJobs(cutoff, cutoff, 100)), 0);

  // The pruned jobs stay gone, the others stay, across a restart.
  if (GetParam().reopen) {
    ASSERT_NO_FATAL_FAILURE(Reopen());
    EXPECT_FALSE(Exists(*store_, succeeded));
    EXPECT_THAT(ListAll(*store_), SizeIs(kept.size()));
  }
}

TEST_P(JobStoreConformance, PruneRespectsTheLimitOldestFirst) {
  // Finished in the order 0..4, but stored in another order.
  const int order[] = {3, 0, 4, 1, 2};
  std::map<int, std::string> by_age;
  for (int i : order) {
    by_age[i] = FinishedJob(*store_, absl::StrCat("t", i), JobState::kSucceeded,
                            now_ - absl::Hours(10) + absl::Seconds(i));
  }
  EXPECT_EQ(Value(store_->PruneFinishedJobs(now_, now_, 2)), 2);
  EXPECT_FALSE(Exists(*store_, by_age[0]));
  EXPECT_FALSE(Exists(*store_, by_age[1]));
  EXPECT_TRUE(Exists(*store_, by_age[2]));
  EXPECT_EQ(Value(store_->PruneFinishedJobs(now_, now_, 2)), 2);
  EXPECT_FALSE(Exists(*store_, by_age[3]));
  EXPECT_TRUE(Exists(*store_, by_age[4]));
  EXPECT_EQ(Value(store_->PruneFinishedJobs(now_, now_, 2)), 1);
  EXPECT_EQ(Value(store_->PruneFinishedJobs(now_, now_, 2)), 0);
  EXPECT_THAT(ListAll(*store_), IsEmpty());
}

TEST_P(JobStoreConformance, PruneLimitSpansTheFinishedStates) {
  for (int i = 0; i < 2; ++i) {
    FinishedJob(*store_, absl::StrCat("s", i), JobState::kSucceeded,
                now_ - absl::Hours(2));
    FinishedJob(*store_, absl::StrCat("c", i), JobState::kCancelled,
                now_ - absl::Hours(2));
    FinishedJob(*store_, absl::StrCat("d", i), JobState::kDead,
                now_ - absl::Hours(2));
  }
  EXPECT_EQ(Value(store_->PruneFinishedJobs(now_, now_, 4)), 4);
  EXPECT_THAT(ListAll(*store_), SizeIs(2));
  EXPECT_EQ(Value(store_->PruneFinishedJobs(now_, now_, 4)), 2);
  EXPECT_THAT(ListAll(*store_), IsEmpty());
}

TEST_P(JobStoreConformance, PruneGivesDeadJobsTheirOwnCutoff) {
  const std::string succeeded =
      FinishedJob(*store_, "s", JobState::kSucceeded, now_ - absl::Hours(30));
  const std::string dead =
      FinishedJob(*store_, "d", JobState::kDead, now_ - absl::Hours(30));
  // InfinitePast deletes nothing of its kind.
  EXPECT_EQ(Value(store_->PruneFinishedJobs(absl::InfinitePast(),
                                            absl::InfinitePast(), 10)),
            0);
  // A long dead retention keeps the dead job, a short one for the others
  // does not keep the succeeded one.
  EXPECT_EQ(Value(store_->PruneFinishedJobs(now_ - absl::Hours(24),
                                            now_ - absl::Hours(168), 10)),
            1);
  EXPECT_FALSE(Exists(*store_, succeeded));
  EXPECT_TRUE(Exists(*store_, dead));
  EXPECT_EQ(Value(store_->PruneFinishedJobs(absl::InfinitePast(),
                                            now_ - absl::Hours(24), 10)),
            1);
  EXPECT_FALSE(Exists(*store_, dead));
}

TEST_P(JobStoreConformance, APrunedJobsIdempotencyKeyIsFreeAgain) {
  const absl::Time finished = now_ - absl::Hours(2);
  NewJob keyed = WithKey(MakeJob("q", "k"), "order-42");
  const std::string first = EnqueueOne(*store_, keyed, finished);
  DequeueOptions options = Options();
  options.job_types = {"k"};
  Lease lease = LeaseOne(*store_, finished, options);
  ASSERT_OK(store_->Ack(first, lease.token, finished));
  // Before the prune the key still deduplicates.
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> dup,
                       store_->Enqueue({keyed}, now_));
  EXPECT_TRUE(dup[0].duplicate);

  EXPECT_EQ(Value(store_->PruneFinishedJobs(now_ - absl::Hours(1),
                                            now_ - absl::Hours(1), 10)),
            1);
  // A retried Ack of the pruned job: NOT_FOUND.
  EXPECT_EQ(store_->Ack(first, lease.token, now_).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->RequeueJob(first, now_).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> again,
                       store_->Enqueue({keyed}, now_));
  ASSERT_THAT(again, SizeIs(1));
  EXPECT_FALSE(again[0].duplicate);
  EXPECT_NE(again[0].job_id, first);
  EXPECT_EQ(GetOrFail(*store_, again[0].job_id).idempotency_key, "order-42");
  // And the new job holds the key as usual.
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> dup2,
                       store_->Enqueue({keyed}, now_));
  EXPECT_TRUE(dup2[0].duplicate);
  EXPECT_EQ(dup2[0].job_id, again[0].job_id);
}

TEST_P(JobStoreConformance, AScheduleOutlivesItsPrunedLastJob) {
  FiringSetup setup = SetUpFiring(*store_, now_ - absl::Hours(3));
  ASSERT_OK_AND_ASSIGN(
      CronRecord fired,
      store_->ApplyCronTransition(setup.fire, now_ - absl::Hours(3)));
  const std::string job_id = fired.state.last_job_id;
  ASSERT_OK(store_->CancelJob(job_id, now_ - absl::Hours(3)).status());
  EXPECT_EQ(Value(store_->PruneFinishedJobs(now_ - absl::Hours(1),
                                            now_ - absl::Hours(1), 10)),
            1);
  EXPECT_EQ(store_->GetJob(job_id).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_OK_AND_ASSIGN(CronRecord read, store_->GetCron("nightly"));
  EXPECT_EQ(read.state.last_job_id, job_id);

  // A REPLACE step naming the pruned job fires the next one all the same.
  CronTransition next;
  next.name = "nightly";
  next.expected_version = read.version;
  next.term = 1;
  next.claim_tick = now_;
  next.cancel_job_id = job_id;
  NewJob job = MakeJob("cronq", "report");
  job.cron_name = "nightly";
  job.cron_tick_time = now_;
  next.job = job;
  next.new_state = read.state;
  next.new_state.last_fire_time = now_;
  ASSERT_OK_AND_ASSIGN(CronRecord after,
                       store_->ApplyCronTransition(next, now_));
  EXPECT_NE(after.state.last_job_id, job_id);
  EXPECT_EQ(GetOrFail(*store_, after.state.last_job_id).state,
            JobState::kPending);
}

// ---- The per-queue pending limit
// ---------------------------------------------

TEST_P(PendingLimit, EnqueuePastTheLimitIsRefusedAndStoresNothing) {
  std::unique_ptr<JobStore> store = Limited();
  if (store == nullptr) GTEST_SKIP() << "no limited factory";
  for (int i = 0; i < 2; ++i) EnqueueOne(*store, MakeJob("q"), now_);
  // A batch that would pass it is refused whole.
  absl::StatusOr<std::vector<EnqueueResult>> batch =
      store->Enqueue({MakeJob("q"), MakeJob("q")}, now_);
  ASSERT_EQ(batch.status().code(), absl::StatusCode::kResourceExhausted)
      << batch.status();
  EXPECT_TRUE(IsQueueFullError(batch.status())) << "not a full disk";
  EXPECT_THAT(std::string(batch.status().message()),
              AllOf(HasSubstr("queue \"q\" holds 2 pending jobs"),
                    HasSubstr("2 more would pass the limit of 3"),
                    HasSubstr("--max-pending-per-queue")));
  EXPECT_EQ(Pending(*store, "q"), 2);
  EXPECT_EQ(ListAll(*store, "q").size(), 2u) << "nothing stored";
  // Up to the limit is fine; one more is not.
  EnqueueOne(*store, WithKey(MakeJob("q"), "k"), now_);
  absl::StatusOr<std::vector<EnqueueResult>> one =
      store->Enqueue({MakeJob("q")}, now_);
  EXPECT_EQ(one.status().code(), absl::StatusCode::kResourceExhausted);
  // A duplicate adds nothing, so it is answered, not refused.
  ASSERT_OK_AND_ASSIGN(std::vector<EnqueueResult> dup,
                       store->Enqueue({WithKey(MakeJob("q"), "k")}, now_));
  EXPECT_TRUE(dup[0].duplicate);
  // Another queue has its own count.
  EnqueueOne(*store, MakeJob("other"), now_);
  EXPECT_EQ(Pending(*store, "q"), 3);
}

TEST_P(PendingLimit, LeasedJobsCountUntilTheyFinish) {
  std::unique_ptr<JobStore> store = Limited();
  if (store == nullptr) GTEST_SKIP() << "no limited factory";
  for (int i = 0; i < 3; ++i) EnqueueOne(*store, MakeJob("q"), now_);
  Lease first = LeaseOne(*store, now_);
  Lease second = LeaseOne(*store, now_);
  EXPECT_EQ(store->Enqueue({MakeJob("q")}, now_).status().code(),
            absl::StatusCode::kResourceExhausted)
      << "a leased job comes back if its lease ends: it counts";
  // Finished jobs free their place: an Ack, a Nack that kills, a cancel.
  ASSERT_OK(store->Ack(first.job.id, first.token, now_));
  EnqueueOne(*store, MakeJob("q"), now_);
  NackOptions dead;
  dead.dead = true;
  ASSERT_OK(store->Nack(second.job.id, second.token, dead, now_).status());
  EnqueueOne(*store, MakeJob("q"), now_);
  EXPECT_EQ(store->Enqueue({MakeJob("q")}, now_).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_OK(
      store->CancelJob(ListAll(*store, "q", JobState::kPending)[0].id, now_)
          .status());
  EnqueueOne(*store, MakeJob("q"), now_);
  EXPECT_EQ(Pending(*store, "q"), 3);
  // A lease that expires with its attempts used up ends as DEAD.
  NewJob once = MakeJob("r");
  once.max_attempts = 1;
  EnqueueOne(*store, once, now_);
  EnqueueOne(*store, MakeJob("r"), now_);
  EnqueueOne(*store, MakeJob("r"), now_);
  LeaseOne(*store, now_, Options("r", 1, absl::Seconds(1)));
  ASSERT_OK(store->ExpireLeases(now_ + absl::Seconds(2)).status());
  EnqueueOne(*store, MakeJob("r"), now_ + absl::Seconds(2));
  EXPECT_EQ(Pending(*store, "r"), 3);
}

TEST_P(PendingLimit, FiredTicksAndRequeuesAreCountedButNeverRefused) {
  std::unique_ptr<JobStore> store = Limited();
  if (store == nullptr) GTEST_SKIP() << "no limited factory";
  for (int i = 0; i < 3; ++i) EnqueueOne(*store, MakeJob("q"), now_);
  ASSERT_OK(store->PutCron(MakeCron("nightly"), CronState(), 0, now_).status());
  CronTransition fire;
  fire.name = "nightly";
  fire.expected_version = 1;
  fire.claim_tick = now_;
  NewJob job = MakeJob("q", "report");
  job.cron_name = "nightly";
  job.cron_tick_time = now_;
  fire.job = job;
  fire.new_state.next_fire_time = now_ + absl::Hours(24);
  // A tick is never lost to the limit.
  ASSERT_OK(store->ApplyCronTransition(fire, now_).status());
  EXPECT_EQ(Pending(*store, "q"), 4);
  // Drain to 2, then revive a dead job: counted, not refused.
  Lease lease = LeaseOne(*store, now_);
  NackOptions dead;
  dead.dead = true;
  ASSERT_OK(store->Nack(lease.job.id, lease.token, dead, now_).status());
  Lease other = LeaseOne(*store, now_);
  ASSERT_OK(store->Ack(other.job.id, other.token, now_));
  EXPECT_EQ(Pending(*store, "q"), 2);
  EnqueueOne(*store, MakeJob("q"), now_);
  ASSERT_OK(store->RequeueJob(lease.job.id, now_).status());
  EXPECT_EQ(Pending(*store, "q"), 4);
  EXPECT_EQ(store->Enqueue({MakeJob("q")}, now_).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_P(PendingLimit, PruningFinishedJobsLeavesTheCountAlone) {
  std::unique_ptr<JobStore> store = Limited();
  if (store == nullptr) GTEST_SKIP() << "no limited factory";
  for (int i = 0; i < 3; ++i) EnqueueOne(*store, MakeJob("q"), now_);
  Lease lease = LeaseOne(*store, now_);
  ASSERT_OK(store->Ack(lease.job.id, lease.token, now_));
  ASSERT_OK(
      store
          ->PruneFinishedJobs(now_ + absl::Hours(1), now_ + absl::Hours(1), 100)
          .status());
  EnqueueOne(*store, MakeJob("q"), now_);
  EXPECT_EQ(store->Enqueue({MakeJob("q")}, now_).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Pending(*store, "q"), 3);
}

}  // namespace

StoreFactory MemoryFactory() {
  StoreFactory factory;
  factory.name = "Memory";
  factory.make =
      [](const std::string&) -> absl::StatusOr<std::unique_ptr<JobStore>> {
    return std::make_unique<MemoryJobStore>();
  };
  factory.make_limited = [](const std::string&, int64_t max_pending_per_queue)
      -> absl::StatusOr<std::unique_ptr<JobStore>> {
    return std::make_unique<MemoryJobStore>(BackoffPolicy(),
                                            max_pending_per_queue);
  };
  return factory;
}

INSTANTIATE_TEST_SUITE_P(Memory, JobStoreConformance,
                         ::testing::Values(MemoryFactory()),
                         JobStoreConformance::Name);
INSTANTIATE_TEST_SUITE_P(Memory, PendingLimit,
                         ::testing::Values(MemoryFactory()),
                         JobStoreConformance::Name);

}  // namespace adjutant
