// A SQLite VFS that wraps the default one and fails writes on demand: the
// disk full and I/O errors of a real disk, for tests of what the store and
// the server do with them (leveldb's SpecialEnv, at the SQLite layer).
#ifndef ADJUTANT_TESTS_FAKES_FAULTY_SQLITE_VFS_H_
#define ADJUTANT_TESTS_FAKES_FAULTY_SQLITE_VFS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace adjutant {

// Registered under its name for the life of the process (SQLite keeps a
// pointer to it): get it with Get() and open a store with
// SqliteOptions::vfs = kName. Every file it opens passes each call through
// to the default VFS's file, except that while a fault is set, xWrite,
// xTruncate and xSync of any file (database, WAL, journal) fail.
//
// Thread-safe: the switches are atomics, read by whichever thread SQLite
// runs on.
class FaultySqliteVfs {
 public:
  static constexpr char kName[] = "adjutant-faulty";

  enum class Fault {
    kNone,
    // SQLITE_IOERR_WRITE (xWrite, xTruncate) / SQLITE_IOERR_FSYNC (xSync).
    kIoError,
    // SQLITE_FULL on xWrite and xTruncate; xSync succeeds, as on a full disk.
    kDiskFull,
  };

  // The one instance, registered on first use (not as the default VFS).
  static FaultySqliteVfs& Get();

  // From now on, every write fails with `fault` (kNone: none fails).
  void SetFault(Fault fault);
  // The next `n` writes succeed, then every write fails with `fault`: a
  // fault in the middle of a transaction's commit.
  void SetFaultAfterWrites(int64_t n, Fault fault);

  // Writes that reached the disk, and writes refused, since the start.
  int64_t writes() const { return writes_.load(); }
  int64_t refused_writes() const { return refused_.load(); }
  // xSync calls that reached the disk (each an fsync) since the start.
  int64_t syncs() const { return syncs_.load(); }

  // Runs `hook` once, on the reading thread, just before the `n`th read
  // (n >= 1, counted from now) of a main database file that this VFS opened:
  // another program acting in the middle of a reader's scan (e.g. writing
  // the file while SqliteJobStore::Open checks it). The hook runs without
  // any lock of this class held; it may use SQLite on other connections
  // (through the default VFS, so that its reads are not counted). A new
  // call replaces a hook that has not run yet.
  void RunBeforeRead(int64_t n, std::function<void()> hook);
  // Main database reads through this VFS since the start.
  int64_t main_db_reads() const { return main_db_reads_.load(); }

  // Used by the VFS's file methods: counts a read of a main database file
  // and runs the hook set by RunBeforeRead when it is due.
  void BeforeMainDbRead();
  // Used by the VFS's file methods: the fault for the next write, counting
  // it (kNone: it goes through).
  Fault NextWrite();
  // The fault for an xSync: kIoError only (kNone: it goes through,
  // counted).
  Fault NextSync();

 private:
  FaultySqliteVfs() = default;

  std::atomic<int> fault_{static_cast<int>(Fault::kNone)};
  // Writes still allowed before fault_ applies; negative: fault_ applies now.
  std::atomic<int64_t> writes_before_fault_{-1};
  std::atomic<int64_t> writes_{0};
  std::atomic<int64_t> refused_{0};
  std::atomic<int64_t> syncs_{0};
  std::atomic<int64_t> main_db_reads_{0};

  absl::Mutex hook_mu_;
  // The read count at which hook_ runs; 0 when no hook is set.
  int64_t hook_at_read_ ABSL_GUARDED_BY(hook_mu_) = 0;
  std::function<void()> hook_ ABSL_GUARDED_BY(hook_mu_);
};

}  // namespace adjutant

#endif  // ADJUTANT_TESTS_FAKES_FAULTY_SQLITE_VFS_H_
