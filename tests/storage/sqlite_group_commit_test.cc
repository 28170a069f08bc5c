// Group commit in SqliteJobStore, shown deterministically: the store's test
// hook holds a group before its COMMIT while more writers queue behind it
// (SqliteJobStore::AwaitQueuedWritesForTest says when they have), then lets
// it go. What the next group did is counted, not timed: transactions
// committed (sqlite3_commit_hook) and fsyncs (the xSync calls of
// tests/fakes/faulty_sqlite_vfs.h, which also fails the COMMIT on demand).
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/job.h"
#include "storage/sqlite_job_store.h"
#include "tests/fakes/faulty_sqlite_vfs.h"

namespace adjutant {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using Fault = FaultySqliteVfs::Fault;

NewJob MakeJob(const std::string& payload) {
  NewJob job;
  job.queue = "q";
  job.type = "t";
  job.payload = payload;
  job.max_attempts = 3;
  return job;
}

// The store's groups, as its before-commit hook sees them: the first one
// is held until Release(); `on_group` (if set) runs for each later one.
class GroupGate {
 public:
  void Install(SqliteJobStore& store) {
    store.SetBeforeCommitHookForTest([this](int size) { OnGroup(size); });
  }
  void AwaitFirstHeld() { first_held_.WaitForNotification(); }
  void Release() { release_.Notify(); }
  std::vector<int> sizes() {
    absl::MutexLock lock(&mu_);
    return sizes_;
  }
  std::function<void(int group)> on_group;  // set before Install

 private:
  void OnGroup(int size) {
    int group;
    {
      absl::MutexLock lock(&mu_);
      group = static_cast<int>(sizes_.size());
      sizes_.push_back(size);
    }
    if (group == 0) {
      first_held_.Notify();
      release_.WaitForNotification();
    } else if (on_group) {
      on_group(group);
    }
  }

  absl::Notification first_held_;
  absl::Notification release_;
  absl::Mutex mu_;
  std::vector<int> sizes_ ABSL_GUARDED_BY(mu_);
};

class SqliteGroupCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-group-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    vfs_.SetFault(Fault::kNone);
    Open(SqliteOptions().max_group_size);
  }

  void Open(int max_group_size, int64_t max_pending_per_queue = 0,
            absl::Duration max_write_together_wait =
                SqliteOptions().max_write_together_wait) {
    store_.reset();
    SqliteOptions options;
    options.path = dir_ + "/adjutant.db";
    options.vfs = FaultySqliteVfs::kName;
    options.max_group_size = max_group_size;
    options.max_pending_per_queue = max_pending_per_queue;
    options.max_write_together_wait = max_write_together_wait;
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
        SqliteJobStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  void TearDown() override {
    vfs_.SetFault(Fault::kNone);
    store_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // A job leased twice: `stale` is the token of its expired first lease,
  // `current` that of the second.
  struct TwiceLeased {
    std::string id;
    std::string stale;
    std::string current;
  };
  TwiceLeased LeaseTwice() {
    TwiceLeased job;
    absl::StatusOr<std::vector<EnqueueResult>> ids =
        store_->Enqueue({MakeJob("leased")}, now_);
    EXPECT_TRUE(ids.ok()) << ids.status();
    if (!ids.ok()) return job;
    job.id = (*ids)[0].job_id;
    DequeueOptions options;
    options.queue = "q";
    options.lease_duration = absl::Seconds(10);
    absl::StatusOr<std::vector<Lease>> first = store_->Dequeue(options, now_);
    options.lease_duration = absl::Hours(1);
    absl::StatusOr<std::vector<Lease>> second =
        store_->Dequeue(options, now_ + absl::Seconds(11));
    EXPECT_TRUE(first.ok() && second.ok());
    if (!first.ok() || !second.ok() || first->size() != 1 ||
        second->size() != 1) {
      ADD_FAILURE() << "expected two leases of one job";
      return job;
    }
    job.stale = (*first)[0].token;
    job.current = (*second)[0].token;
    now_ += absl::Seconds(12);
    return job;
  }

  int64_t Count(const std::string& sql) {
    absl::StatusOr<std::vector<std::string>> rows = store_->QueryForTest(sql);
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() && rows->size() == 1 ? std::stoll((*rows)[0]) : -1;
  }

  FaultySqliteVfs& vfs_ = FaultySqliteVfs::Get();
  std::string dir_;
  std::unique_ptr<SqliteJobStore> store_;
  absl::Time now_ = absl::FromUnixSeconds(1767225600);  // 2026-01-01 UTC
};

// The writes that queue while a commit is in flight.
constexpr int kEnqueues = 6;
constexpr int kQueued = kEnqueues + 2;  // and a stale and a good Ack

TEST_F(SqliteGroupCommitTest, QueuedWritesShareOneTransactionAndOneSync) {
  const TwiceLeased leased = LeaseTwice();
  GroupGate gate;
  gate.Install(*store_);
  const int64_t commits = store_->CommitsForTest();
  const int64_t syncs = vfs_.syncs();

  // The first write is a group of one, held before its COMMIT.
  absl::Status first;
  std::thread leader(
      [&] { first = store_->Enqueue({MakeJob("first")}, now_).status(); });
  gate.AwaitFirstHeld();

  std::vector<absl::StatusOr<std::vector<EnqueueResult>>> enqueued(
      kEnqueues, absl::UnknownError("not run"));
  absl::Status stale_ack = absl::UnknownError("not run");
  absl::Status good_ack = absl::UnknownError("not run");
  std::vector<std::thread> writers;
  for (int i = 0; i < kEnqueues; ++i) {
    writers.emplace_back([&, i] {
      enqueued[i] = store_->Enqueue({MakeJob(absl::StrCat("job-", i))}, now_);
    });
  }
  writers.emplace_back(
      [&] { stale_ack = store_->Ack(leased.id, leased.stale, now_); });
  writers.emplace_back(
      [&] { good_ack = store_->Ack(leased.id, leased.current, now_); });
  store_->AwaitQueuedWritesForTest(kQueued);
  // Nothing of them is answered before its commit.
  EXPECT_TRUE(absl::IsUnknown(good_ack));
  gate.Release();
  leader.join();
  for (std::thread& writer : writers) writer.join();

  EXPECT_THAT(gate.sizes(), ElementsAre(1, kQueued));
  EXPECT_EQ(store_->CommitsForTest() - commits, 2)
      << "9 write calls, 2 transactions";
  EXPECT_EQ(vfs_.syncs() - syncs, 2) << "one fsync per commit";

  // Each caller got its own answer.
  ASSERT_TRUE(first.ok()) << first;
  for (const auto& result : enqueued) {
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_THAT(*result, SizeIs(1));
    absl::StatusOr<Job> job = store_->GetJob((*result)[0].job_id);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state, JobState::kPending);
  }
  EXPECT_EQ(stale_ack.code(), absl::StatusCode::kFailedPrecondition)
      << stale_ack;
  EXPECT_TRUE(good_ack.ok()) << good_ack;
  absl::StatusOr<Job> job = store_->GetJob(leased.id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, JobState::kSucceeded);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1 + 1 + kEnqueues);
}

// Asynchronous calls never run on their caller's thread and never make it
// wait: made while a group is in flight, they queue, share the next group
// with a synchronous call, and each `done` runs on the store's thread once
// that group's COMMIT returned.
TEST_F(SqliteGroupCommitTest, AsynchronousCallsAreAnsweredAfterTheirCommit) {
  const TwiceLeased leased = LeaseTwice();
  GroupGate gate;
  gate.Install(*store_);
  const int64_t commits = store_->CommitsForTest();

  absl::Status first;
  std::thread leader(
      [&] { first = store_->Enqueue({MakeJob("first")}, now_).status(); });
  gate.AwaitFirstHeld();

  // What each `done` saw: the outcome, the commits by then, and whether it
  // ran on this thread.
  absl::Mutex mu;
  std::vector<int64_t> commits_seen;
  bool on_this_thread = false;
  absl::StatusOr<std::vector<EnqueueResult>> enqueued =
      absl::UnknownError("not answered");
  absl::StatusOr<AckResult> acked = absl::UnknownError("not answered");
  absl::StatusOr<std::vector<AckResult>> batch =
      absl::UnknownError("not answered");
  const std::thread::id test_thread = std::this_thread::get_id();
  auto answered = [&](auto* outcome) {
    return [&, outcome](auto result) {
      absl::MutexLock lock(&mu);
      *outcome = std::move(result);
      commits_seen.push_back(store_->CommitsForTest() - commits);
      on_this_thread |= std::this_thread::get_id() == test_thread;
    };
  };
  store_->EnqueueAsync({MakeJob("a"), MakeJob("b")}, now_, answered(&enqueued));
  store_->AckAsync({leased.id, leased.current}, now_, answered(&acked));
  store_->AckBatchAsync({{leased.id, leased.stale}}, now_, answered(&batch));
  absl::Status sync_enqueue = absl::UnknownError("not run");
  std::thread sync_writer([&] {
    sync_enqueue = store_->Enqueue({MakeJob("sync")}, now_).status();
  });
  store_->AwaitQueuedWritesForTest(4);
  {
    absl::MutexLock lock(&mu);
    EXPECT_THAT(commits_seen, SizeIs(0)) << "answered before the commit";
  }
  gate.Release();
  leader.join();
  sync_writer.join();
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](std::vector<int64_t>* seen) { return seen->size() == 3; },
        &commits_seen));
  }

  EXPECT_THAT(gate.sizes(), ElementsAre(1, 4));
  EXPECT_THAT(commits_seen, ElementsAre(2, 2, 2))
      << "each answered after the second group's COMMIT";
  EXPECT_FALSE(on_this_thread);
  ASSERT_TRUE(first.ok()) << first;
  ASSERT_TRUE(sync_enqueue.ok()) << sync_enqueue;
  ASSERT_TRUE(enqueued.ok()) << enqueued.status();
  ASSERT_THAT(*enqueued, SizeIs(2));
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(acked->queue, "q");
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_THAT(*batch, SizeIs(1));
  EXPECT_EQ((*batch)[0].status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1 + 1 + 2 + 1);
  absl::StatusOr<Job> job = store_->GetJob(leased.id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, JobState::kSucceeded);
}

// The store's groups, as its before-commit hook sees them, none held;
// `started` is notified as the first is about to commit.
class GroupRecorder {
 public:
  explicit GroupRecorder(SqliteJobStore& store) : store_(store) {
    store_.SetBeforeCommitHookForTest([this](int size) {
      absl::MutexLock lock(&mu_);
      sizes_.push_back(size);
      if (!started.HasBeenNotified()) started.Notify();
    });
  }
  ~GroupRecorder() { store_.SetBeforeCommitHookForTest(nullptr); }
  std::vector<int> sizes() {
    absl::MutexLock lock(&mu_);
    return sizes_;
  }
  absl::Notification started;

 private:
  SqliteJobStore& store_;
  absl::Mutex mu_;
  std::vector<int> sizes_ ABSL_GUARDED_BY(mu_);
};

// An EnqueueAsync of one job of "q", then a DequeueAsync of one job of
// "q" (the lease of a consumer woken for it), and their answers.
struct EnqueueThenLease {
  void StartEnqueue(SqliteJobStore& store, absl::Time now) {
    store.EnqueueAsync({MakeJob("a")}, now,
                       [this](absl::StatusOr<std::vector<EnqueueResult>> r) {
                         enqueued_ids = std::move(r);
                         enqueued.Notify();
                       });
  }
  void StartLease(SqliteJobStore& store, absl::Time now) {
    DequeueOptions options;
    options.queue = "q";
    options.max_jobs = 1;
    options.lease_duration = absl::Minutes(1);
    store.DequeueAsync(options, now,
                       [this](absl::StatusOr<std::vector<Lease>> r) {
                         leases = std::move(r);
                         leased.Notify();
                       });
  }
  // Waits for both answers: the lease took the job enqueued before it.
  void ExpectTheLeaseTookTheJob() {
    enqueued.WaitForNotification();
    leased.WaitForNotification();
    ASSERT_TRUE(enqueued_ids.ok()) << enqueued_ids.status();
    ASSERT_TRUE(leases.ok()) << leases.status();
    ASSERT_THAT(*leases, SizeIs(1));
    EXPECT_EQ((*leases)[0].job.id, (*enqueued_ids)[0].job_id);
  }

  absl::Notification enqueued, leased;
  absl::StatusOr<std::vector<EnqueueResult>> enqueued_ids =
      absl::UnknownError("not answered");
  absl::StatusOr<std::vector<Lease>> leases =
      absl::UnknownError("not answered");
};

// While WriteTogether runs, the writer thread starts no group (here for as
// long as it runs: the bound is set far away): the calls made in it share
// one commit (the server's enqueue and the lease of the consumer it wakes).
// Once it returns, they commit.
TEST_F(SqliteGroupCommitTest, WriteTogetherKeepsItsCallsInOneGroup) {
  Open(SqliteOptions().max_group_size, 0, absl::Hours(1));
  GroupRecorder groups(*store_);
  const int64_t commits = store_->CommitsForTest();
  EnqueueThenLease calls;
  store_->WriteTogether([&] {
    calls.StartEnqueue(*store_, now_);
    // Real time, as a chance for the writer thread to start a group that
    // it must not start: it is woken by the queued call.
    EXPECT_FALSE(
        groups.started.WaitForNotificationWithTimeout(absl::Milliseconds(100)))
        << "a group started inside WriteTogether";
    calls.StartLease(*store_, now_);
  });
  calls.ExpectTheLeaseTookTheJob();
  EXPECT_THAT(groups.sizes(), ElementsAre(2));
  EXPECT_EQ(store_->CommitsForTest() - commits, 1);
}

// The writer thread waits for a WriteTogether only so long
// (SqliteOptions::max_write_together_wait): holds that never end, or that
// overlap without a gap, cannot keep the calls queued meanwhile waiting.
// The calls made after the bound go to the next group, still in order.
TEST_F(SqliteGroupCommitTest, WriteTogetherHoldsTheWriterOnlySoLong) {
  Open(SqliteOptions().max_group_size, 0, absl::Milliseconds(1));
  GroupRecorder groups(*store_);
  EnqueueThenLease calls;
  store_->WriteTogether([&] {
    calls.StartEnqueue(*store_, now_);
    // Real time: only a guard against a hung test.
    EXPECT_TRUE(
        calls.enqueued.WaitForNotificationWithTimeout(absl::Seconds(60)))
        << "the enqueue was not answered while the hold lasted";
    calls.StartLease(*store_, now_);
  });
  calls.ExpectTheLeaseTookTheJob();
  EXPECT_THAT(groups.sizes(), ElementsAre(1, 1));
}

// A failed COMMIT fails the asynchronous calls of its group too, and the
// store takes writes again once the disk is back.
TEST_F(SqliteGroupCommitTest, AFailedCommitFailsItsAsynchronousCalls) {
  GroupGate gate;
  gate.on_group = [this](int group) {
    if (group == 1) vfs_.SetFault(Fault::kIoError);
  };
  gate.Install(*store_);
  absl::Status first;
  std::thread leader(
      [&] { first = store_->Enqueue({MakeJob("first")}, now_).status(); });
  gate.AwaitFirstHeld();
  absl::Notification answered;
  absl::Status enqueued = absl::UnknownError("not answered");
  store_->EnqueueAsync({MakeJob("lost")}, now_,
                       [&](absl::StatusOr<std::vector<EnqueueResult>> result) {
                         enqueued = result.status();
                         answered.Notify();
                       });
  store_->AwaitQueuedWritesForTest(1);
  gate.Release();
  leader.join();
  answered.WaitForNotification();
  vfs_.SetFault(Fault::kNone);

  ASSERT_TRUE(first.ok()) << first;
  EXPECT_EQ(enqueued.code(), absl::StatusCode::kUnavailable) << enqueued;
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);
  EXPECT_TRUE(store_->Enqueue({MakeJob("later")}, now_).ok());
}

// A `done` the answer thread runs while the store closes may make another
// asynchronous call: once the writer thread has ended, that call is
// answered UNAVAILABLE at once, never left unanswered.
TEST_F(SqliteGroupCommitTest, ACallMadeAsTheStoreClosesIsAnswered) {
  absl::Notification first_answered;
  absl::Notification go_on;
  absl::Notification second_answered;
  absl::Status second = absl::UnknownError("not answered");
  SqliteJobStore* const store = store_.get();
  store->EnqueueAsync(
      {MakeJob("first")}, now_,
      [&, store](absl::StatusOr<std::vector<EnqueueResult>> result) {
        EXPECT_TRUE(result.ok()) << result.status();
        first_answered.Notify();
        go_on.WaitForNotification();
        store->EnqueueAsync(
            {MakeJob("second")}, now_,
            [&](absl::StatusOr<std::vector<EnqueueResult>> result) {
              second = result.status();
              second_answered.Notify();
            });
      });
  first_answered.WaitForNotification();
  std::thread closing([this] { store_.reset(); });
  store->AwaitWriterEndedForTest();
  go_on.Notify();
  second_answered.WaitForNotification();
  closing.join();
  EXPECT_EQ(second.code(), absl::StatusCode::kUnavailable) << second;
  EXPECT_THAT(std::string(second.message()), HasSubstr("closing"));
  // The first job is stored, the second is not.
  Open(SqliteOptions().max_group_size);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 1);
}

TEST_F(SqliteGroupCommitTest, AFailedCommitFailsEveryCallOfItsGroup) {
  const TwiceLeased leased = LeaseTwice();
  GroupGate gate;
  // The second group's bodies ran; its COMMIT meets a disk that fails.
  gate.on_group = [this](int group) {
    if (group == 1) vfs_.SetFault(Fault::kIoError);
  };
  gate.Install(*store_);
  const int64_t commits = store_->CommitsForTest();

  absl::Status first;
  std::thread leader(
      [&] { first = store_->Enqueue({MakeJob("first")}, now_).status(); });
  gate.AwaitFirstHeld();
  std::vector<absl::Status> results(kQueued, absl::UnknownError("not run"));
  std::vector<std::thread> writers;
  for (int i = 0; i < kEnqueues; ++i) {
    writers.emplace_back([&, i] {
      results[i] =
          store_->Enqueue({MakeJob(absl::StrCat("job-", i))}, now_).status();
    });
  }
  writers.emplace_back(
      [&] { results[kEnqueues] = store_->Ack(leased.id, leased.stale, now_); });
  writers.emplace_back([&] {
    results[kEnqueues + 1] = store_->Ack(leased.id, leased.current, now_);
  });
  store_->AwaitQueuedWritesForTest(kQueued);
  gate.Release();
  leader.join();
  for (std::thread& writer : writers) writer.join();
  vfs_.SetFault(Fault::kNone);

  EXPECT_THAT(gate.sizes(), ElementsAre(1, kQueued));
  EXPECT_EQ(store_->CommitsForTest() - commits, 2) << "one COMMIT per group";
  ASSERT_TRUE(first.ok()) << first;
  for (const absl::Status& status : results) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("I/O error"));
  }
  // None of the group's changes is stored: the first job and the leased one.
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 2);
  absl::StatusOr<Job> job = store_->GetJob(leased.id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, JobState::kLeased);
  // The disk is back: the lease still works, and health clears after a
  // probe write.
  EXPECT_TRUE(store_->Ack(leased.id, leased.current, now_).ok());
  EXPECT_TRUE(store_->Ping().ok());
}

// A call that fails after it changed rows (here a transition that first
// records a higher term, then loses its compare-and-set) has its own
// changes rolled back, and only those.
TEST_F(SqliteGroupCommitTest, AFailingCallRollsBackOnlyItsOwnChanges) {
  CronDefinition definition;
  definition.name = "nightly";
  definition.schedule = "0 3 * * *";
  definition.timezone = "UTC";
  definition.job.queue = "q";
  definition.job.type = "t";
  CronState state;
  state.next_fire_time = now_ + absl::Hours(3);
  absl::StatusOr<CronRecord> cron = store_->PutCron(definition, state, 0, now_);
  ASSERT_TRUE(cron.ok()) << cron.status();
  ASSERT_TRUE(store_->ObserveTerm(3).ok());

  GroupGate gate;
  gate.Install(*store_);
  absl::Status first;
  std::thread leader(
      [&] { first = store_->Enqueue({MakeJob("first")}, now_).status(); });
  gate.AwaitFirstHeld();
  absl::Status transition = absl::UnknownError("not run");
  absl::Status enqueue = absl::UnknownError("not run");
  std::thread failing([&] {
    CronTransition t;
    t.name = "nightly";
    t.term = 9;  // recorded first, then undone
    t.expected_version = cron->version + 5;
    t.new_state = state;
    transition = store_->ApplyCronTransition(t, now_).status();
  });
  store_->AwaitQueuedWritesForTest(1);
  std::thread succeeding(
      [&] { enqueue = store_->Enqueue({MakeJob("second")}, now_).status(); });
  store_->AwaitQueuedWritesForTest(2);
  gate.Release();
  leader.join();
  failing.join();
  succeeding.join();

  EXPECT_THAT(gate.sizes(), ElementsAre(1, 2));
  EXPECT_EQ(transition.code(), absl::StatusCode::kAborted) << transition;
  EXPECT_TRUE(enqueue.ok()) << enqueue;
  absl::StatusOr<uint64_t> term = store_->HighestTerm();
  ASSERT_TRUE(term.ok()) << term.status();
  EXPECT_EQ(*term, 3u) << "the failed call's term was rolled back";
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 2);
}

// The same when the failed call's rows were written by statements that say
// OR FAIL (no statement journal): an Enqueue refused by the pending limit
// after it inserted its rows, and the triggers counted them, leaves neither
// a row nor a count, and its group-mate commits.
TEST_F(SqliteGroupCommitTest, ARefusedEnqueueLeavesNoRowAndNoCount) {
  Open(SqliteOptions().max_group_size, /*max_pending_per_queue=*/3);
  GroupGate gate;
  gate.Install(*store_);
  absl::Status first;
  std::thread leader(
      [&] { first = store_->Enqueue({MakeJob("first")}, now_).status(); });
  gate.AwaitFirstHeld();
  absl::Status refused = absl::UnknownError("not run");
  absl::Status other = absl::UnknownError("not run");
  std::thread too_many([&] {
    std::vector<NewJob> jobs;
    for (int i = 0; i < 4; ++i) jobs.push_back(MakeJob("full"));
    for (NewJob& job : jobs) job.queue = "full";
    refused = store_->Enqueue(jobs, now_).status();
  });
  store_->AwaitQueuedWritesForTest(1);
  std::thread fits([&] {
    NewJob job = MakeJob("fits");
    job.queue = "other";
    other = store_->Enqueue({job}, now_).status();
  });
  store_->AwaitQueuedWritesForTest(2);
  gate.Release();
  leader.join();
  too_many.join();
  fits.join();

  EXPECT_THAT(gate.sizes(), ElementsAre(1, 2));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_TRUE(other.ok()) << other;
  EXPECT_EQ(Count("SELECT count(*) FROM jobs WHERE queue = 'full'"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM queue_counts WHERE queue = 'full'"), 0);
  EXPECT_EQ(Count("SELECT pending FROM queue_counts WHERE queue = 'other'"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 2);
}

TEST_F(SqliteGroupCommitTest, GroupsAreBoundedByMaxGroupSize) {
  Open(/*max_group_size=*/3);
  GroupGate gate;
  gate.Install(*store_);
  std::thread leader(
      [&] { EXPECT_TRUE(store_->Enqueue({MakeJob("first")}, now_).ok()); });
  gate.AwaitFirstHeld();
  std::vector<std::thread> writers;
  for (int i = 0; i < 7; ++i) {
    writers.emplace_back([&, i] {
      EXPECT_TRUE(
          store_->Enqueue({MakeJob(absl::StrCat("job-", i))}, now_).ok());
    });
  }
  store_->AwaitQueuedWritesForTest(7);
  gate.Release();
  leader.join();
  for (std::thread& writer : writers) writer.join();
  EXPECT_THAT(gate.sizes(), ElementsAre(1, 3, 3, 1));
  EXPECT_EQ(Count("SELECT count(*) FROM jobs"), 8);
}

// Reads run on their own connection: one made while a group is held before
// its COMMIT (holding the write connection) returns, and sees the last
// committed state.
TEST_F(SqliteGroupCommitTest, ReadsDoNotWaitForACommitInFlight) {
  absl::StatusOr<std::vector<EnqueueResult>> before =
      store_->Enqueue({MakeJob("before")}, now_);
  ASSERT_TRUE(before.ok()) << before.status();
  GroupGate gate;
  gate.Install(*store_);
  std::thread leader(
      [&] { EXPECT_TRUE(store_->Enqueue({MakeJob("held")}, now_).ok()); });
  gate.AwaitFirstHeld();

  absl::StatusOr<JobPage> page =
      store_->ListJobs("q", JobState::kUnspecified, 10, "");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_THAT(page->jobs, SizeIs(1)) << "the held job is not committed yet";
  EXPECT_EQ(page->jobs[0].id, (*before)[0].job_id);
  EXPECT_TRUE(store_->GetJob((*before)[0].job_id).ok());
  absl::StatusOr<std::vector<QueueStats>> stats = store_->QueueStatistics(now_);
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_THAT(*stats, SizeIs(1));
  EXPECT_EQ((*stats)[0].pending, 1);

  gate.Release();
  leader.join();
  page = store_->ListJobs("q", JobState::kUnspecified, 10, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(page->jobs, SizeIs(2)) << "a read after the write sees it";
}

// The health check neither: a load balancer's probe must not time out
// behind a busy disk's fsync.
TEST_F(SqliteGroupCommitTest, PingDoesNotWaitForACommitInFlight) {
  GroupGate gate;
  gate.Install(*store_);
  std::thread leader(
      [&] { EXPECT_TRUE(store_->Enqueue({MakeJob("held")}, now_).ok()); });
  gate.AwaitFirstHeld();
  EXPECT_TRUE(store_->Ping().ok());
  gate.Release();
  leader.join();
}

// A sweep that finds no expired lease asks the reader and writes nothing: the
// long-poll timer sweeps whenever a delayed job comes due. One that finds
// some ends them in one commit.
TEST_F(SqliteGroupCommitTest, ASweepWithNothingExpiredWritesNothing) {
  ASSERT_TRUE(store_->Enqueue({MakeJob("p")}, now_).ok());
  DequeueOptions options;
  options.queue = "q";
  options.lease_duration = absl::Minutes(1);
  absl::StatusOr<std::vector<Lease>> leases = store_->Dequeue(options, now_);
  ASSERT_TRUE(leases.ok()) << leases.status();
  ASSERT_THAT(*leases, SizeIs(1));

  const int64_t commits = store_->CommitsForTest();
  const int64_t syncs = vfs_.syncs();
  absl::StatusOr<std::vector<Job>> none = store_->ExpireLeases(now_);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_THAT(*none, IsEmpty());
  EXPECT_EQ(store_->CommitsForTest(), commits);
  EXPECT_EQ(vfs_.syncs(), syncs);

  absl::StatusOr<std::vector<Job>> expired =
      store_->ExpireLeases(now_ + absl::Minutes(2));
  ASSERT_TRUE(expired.ok()) << expired.status();
  ASSERT_THAT(*expired, SizeIs(1));
  EXPECT_EQ((*expired)[0].id, (*leases)[0].job.id);
  EXPECT_EQ((*expired)[0].state, JobState::kPending);
  EXPECT_EQ(store_->CommitsForTest() - commits, 1);
}

// AckBatch is one call of a group: the whole batch costs one commit.
TEST_F(SqliteGroupCommitTest, AckBatchIsOneCommit) {
  constexpr int kJobs = 20;
  std::vector<NewJob> jobs(kJobs, MakeJob("p"));
  ASSERT_TRUE(store_->Enqueue(jobs, now_).ok());
  DequeueOptions options;
  options.queue = "q";
  options.max_jobs = kJobs;
  options.lease_duration = absl::Minutes(1);
  absl::StatusOr<std::vector<Lease>> leases = store_->Dequeue(options, now_);
  ASSERT_TRUE(leases.ok()) << leases.status();
  std::vector<AckItem> items;
  for (const Lease& lease : *leases)
    items.push_back({lease.job.id, lease.token});
  items.push_back({"no-such-job", "t"});
  const int64_t commits = store_->CommitsForTest();
  const int64_t syncs = vfs_.syncs();
  absl::StatusOr<std::vector<AckResult>> results =
      store_->AckBatch(items, now_);
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_EQ(store_->CommitsForTest() - commits, 1);
  EXPECT_EQ(vfs_.syncs() - syncs, 1);
  ASSERT_THAT(*results, SizeIs(kJobs + 1));
  for (int i = 0; i < kJobs; ++i) EXPECT_TRUE((*results)[i].status.ok());
  EXPECT_EQ((*results)[kJobs].status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Count("SELECT count(*) FROM jobs WHERE state = 3"), kJobs);

  // A disk that refuses the batch's commit fails the whole call, and no
  // item is acked.
  ASSERT_TRUE(store_->Enqueue({MakeJob("last")}, now_).ok());
  absl::StatusOr<std::vector<Lease>> last = store_->Dequeue(options, now_);
  ASSERT_TRUE(last.ok() && last->size() == 1);
  vfs_.SetFault(Fault::kDiskFull);
  results = store_->AckBatch({{(*last)[0].job.id, (*last)[0].token}}, now_);
  vfs_.SetFault(Fault::kNone);
  EXPECT_EQ(results.status().code(), absl::StatusCode::kResourceExhausted)
      << results.status();
  EXPECT_EQ(Count("SELECT count(*) FROM jobs WHERE state = 2"), 1);
}

}  // namespace
}  // namespace adjutant
