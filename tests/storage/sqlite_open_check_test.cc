// SqliteJobStore::Open's check of an existing file while another process
// writes it. Open scans the file through an immutable connection (no locks,
// so that a refused file is left without -wal or -shm files); a writer that
// checkpoints into the file during that scan can make a healthy file look
// corrupt. Open must look again before refusing.
//
// Deterministic: FaultySqliteVfs runs the other writer (a second
// SqliteJobStore on the default VFS, as another adjutantd would be) at a
// chosen read of the scan.
#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "storage/job.h"
#include "storage/sqlite_job_store.h"
#include "tests/fakes/faulty_sqlite_vfs.h"

namespace adjutant {
namespace {

constexpr int kJobs = 300;
// The scan's read at which the other process writes: page 1 and the schema
// are read, the jobs table partly.
constexpr int kWriteAtRead = 12;

class SqliteOpenCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-opencheck-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/adjutant.db";
    // A store file at rest: jobs on many pages, the WAL checkpointed into
    // the file and removed by the clean close.
    SqliteOptions options;
    options.path = path_;
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
        SqliteJobStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Enqueue(Jobs("first"), now_).ok());
    store->reset();
    ASSERT_FALSE(std::filesystem::exists(path_ + "-wal"));
  }

  void TearDown() override {
    writer_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  static std::vector<NewJob> Jobs(const std::string& queue) {
    std::vector<NewJob> jobs(kJobs);
    for (NewJob& job : jobs) {
      job.queue = queue;
      job.type = "t";
      job.payload = std::string(400, 'p');
      job.max_attempts = 3;
    }
    return jobs;
  }

  // Another process's store: opens the file (default VFS), enqueues as many
  // jobs again, leases and acks half of the first ones, and checkpoints the
  // WAL into the file, rewriting pages the scan has read and pages it has
  // not. Kept open (its -wal stays) when `stay` is true; closed otherwise.
  void WriteAsAnotherProcess(bool stay) {
    SqliteOptions options;
    options.path = path_;
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
        SqliteJobStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Enqueue(Jobs("second"), now_).ok());
    DequeueOptions lease;
    lease.queue = "first";
    lease.lease_duration = absl::Minutes(1);
    for (int acked = 0; acked < kJobs / 2;) {
      lease.max_jobs = std::min(kJobs / 2 - acked, 50);
      absl::StatusOr<std::vector<Lease>> leases =
          (*store)->Dequeue(lease, now_);
      ASSERT_TRUE(leases.ok()) << leases.status();
      ASSERT_FALSE(leases->empty());
      for (const Lease& l : *leases) {
        ASSERT_TRUE((*store)->Ack(l.job.id, l.token, now_).ok());
        ++acked;
      }
    }
    ASSERT_TRUE((*store)->Checkpoint().ok());
    wrote_ = true;
    if (stay) {
      writer_ = std::move(*store);
      ASSERT_TRUE(std::filesystem::exists(path_ + "-wal"));
    } else {
      store->reset();
      ASSERT_FALSE(std::filesystem::exists(path_ + "-wal"));
    }
  }

  // What a bare immutable scan (the first look of Open) says of the file
  // when the other process writes during it: the race Open must survive.
  std::string ImmutableQuickCheckWithWriter() {
    FaultySqliteVfs& vfs = FaultySqliteVfs::Get();
    sqlite3* db = nullptr;
    std::string uri = absl::StrCat("file:", path_, "?immutable=1");
    EXPECT_EQ(sqlite3_open_v2(uri.c_str(), &db,
                              SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
                              FaultySqliteVfs::kName),
              SQLITE_OK);
    vfs.RunBeforeRead(kWriteAtRead, [this] { WriteAsAnotherProcess(false); });
    std::string verdict;
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &stmt, nullptr);
    while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      absl::StrAppend(
          &verdict, verdict.empty() ? "" : "; ",
          reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)));
      rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE) {
      absl::StrAppend(&verdict, verdict.empty() ? "" : "; ",
                      "error: ", sqlite3_errmsg(db));
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return verdict;
  }

  absl::StatusOr<std::unique_ptr<SqliteJobStore>> OpenThroughShim() {
    SqliteOptions options;
    options.path = path_;
    options.vfs = FaultySqliteVfs::kName;
    return SqliteJobStore::Open(options);
  }

  static int64_t CountJobs(JobStore& store, JobState state) {
    int64_t n = 0;
    std::string token;
    do {
      absl::StatusOr<JobPage> page = store.ListJobs("", state, 500, token);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      n += static_cast<int64_t>(page->jobs.size());
      token = page->next_page_token;
    } while (!token.empty());
    return n;
  }

  void ExpectBothWritersJobs(JobStore& store) {
    EXPECT_EQ(CountJobs(store, JobState::kUnspecified), 2 * kJobs);
    EXPECT_EQ(CountJobs(store, JobState::kSucceeded), kJobs / 2);
  }

  std::string dir_;
  std::string path_;
  absl::Time now_ = absl::FromUnixSeconds(1767225600);  // 2026-01-01 UTC
  bool wrote_ = false;
  std::unique_ptr<SqliteJobStore> writer_;
};

// The scenario is a real race: an immutable scan that another process
// writes under finds the healthy file "corrupt".
TEST_F(SqliteOpenCheckTest, AWriterDuringAnImmutableScanMakesItLookCorrupt) {
  const std::string verdict = ImmutableQuickCheckWithWriter();
  ASSERT_TRUE(wrote_);
  EXPECT_NE(verdict, "ok");
  // At rest again, the file is healthy.
  ASSERT_TRUE(OpenThroughShim().ok());
}

TEST_F(SqliteOpenCheckTest, OpenLooksAgainWhenTheWriterIsStillThere) {
  FaultySqliteVfs::Get().RunBeforeRead(kWriteAtRead,
                                       [this] { WriteAsAnotherProcess(true); });
  absl::StatusOr<std::unique_ptr<SqliteJobStore>> store = OpenThroughShim();
  ASSERT_TRUE(wrote_);
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectBothWritersJobs(**store);
}

TEST_F(SqliteOpenCheckTest, OpenLooksAgainWhenTheWriterHasGone) {
  FaultySqliteVfs::Get().RunBeforeRead(
      kWriteAtRead, [this] { WriteAsAnotherProcess(false); });
  absl::StatusOr<std::unique_ptr<SqliteJobStore>> store = OpenThroughShim();
  ASSERT_TRUE(wrote_);
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectBothWritersJobs(**store);
}

}  // namespace
}  // namespace adjutant
