// A SQLite VFS that wraps the default one and fails writes on demand: the
// disk full and I/O errors of a real disk, for tests of what the store and
// the server do with them (leveldb's SpecialEnv, at the SQLite layer).
#ifndef ADJUTANT_TESTS_FAKES_FAULTY_SQLITE_VFS_H_
#define ADJUTANT_TESTS_FAKES_FAULTY_SQLITE_VFS_H_

#include <atomic>
#include <cstdint>
#include <string>

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
};

}  // namespace adjutant

#endif  // ADJUTANT_TESTS_FAKES_FAULTY_SQLITE_VFS_H_
