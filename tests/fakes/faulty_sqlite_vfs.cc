#include "tests/fakes/faulty_sqlite_vfs.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

namespace adjutant {
namespace {

// What the wrapper allocates per open file: our header, then the default
// VFS's own file object right after it (szOsFile covers both).
struct FaultyFile {
  sqlite3_file base;
  sqlite3_file* real;
  bool main_db;  // opened with SQLITE_OPEN_MAIN_DB
};

sqlite3_vfs* RealVfs() {
  static sqlite3_vfs* const real = sqlite3_vfs_find(nullptr);
  return real;
}

sqlite3_file* Real(sqlite3_file* file) {
  return reinterpret_cast<FaultyFile*>(file)->real;
}

int WriteFault() {
  switch (FaultySqliteVfs::Get().NextWrite()) {
    case FaultySqliteVfs::Fault::kIoError:
      return SQLITE_IOERR_WRITE;
    case FaultySqliteVfs::Fault::kDiskFull:
      return SQLITE_FULL;
    case FaultySqliteVfs::Fault::kNone:
      break;
  }
  return SQLITE_OK;
}

// ---- File methods: pass through, except writes while a fault is set -------

int Close(sqlite3_file* f) { return Real(f)->pMethods->xClose(Real(f)); }
int Read(sqlite3_file* f, void* buf, int n, sqlite3_int64 offset) {
  if (reinterpret_cast<FaultyFile*>(f)->main_db) {
    FaultySqliteVfs::Get().BeforeMainDbRead();
  }
  return Real(f)->pMethods->xRead(Real(f), buf, n, offset);
}
int Write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 offset) {
  if (int rc = WriteFault(); rc != SQLITE_OK) return rc;
  return Real(f)->pMethods->xWrite(Real(f), buf, n, offset);
}
int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  if (int rc = WriteFault(); rc != SQLITE_OK) {
    return rc == SQLITE_IOERR_WRITE ? SQLITE_IOERR_TRUNCATE : rc;
  }
  return Real(f)->pMethods->xTruncate(Real(f), size);
}
int Sync(sqlite3_file* f, int flags) {
  if (FaultySqliteVfs::Get().NextSync() == FaultySqliteVfs::Fault::kIoError) {
    return SQLITE_IOERR_FSYNC;
  }
  return Real(f)->pMethods->xSync(Real(f), flags);
}
int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  return Real(f)->pMethods->xFileSize(Real(f), size);
}
int Lock(sqlite3_file* f, int level) {
  return Real(f)->pMethods->xLock(Real(f), level);
}
int Unlock(sqlite3_file* f, int level) {
  return Real(f)->pMethods->xUnlock(Real(f), level);
}
int CheckReservedLock(sqlite3_file* f, int* out) {
  return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
}
int FileControl(sqlite3_file* f, int op, void* arg) {
  return Real(f)->pMethods->xFileControl(Real(f), op, arg);
}
int SectorSize(sqlite3_file* f) {
  return Real(f)->pMethods->xSectorSize(Real(f));
}
int DeviceCharacteristics(sqlite3_file* f) {
  return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
}
int ShmMap(sqlite3_file* f, int region, int size, int extend,
           void volatile** out) {
  return Real(f)->pMethods->xShmMap(Real(f), region, size, extend, out);
}
int ShmLock(sqlite3_file* f, int offset, int n, int flags) {
  return Real(f)->pMethods->xShmLock(Real(f), offset, n, flags);
}
void ShmBarrier(sqlite3_file* f) { Real(f)->pMethods->xShmBarrier(Real(f)); }
int ShmUnmap(sqlite3_file* f, int delete_flag) {
  return Real(f)->pMethods->xShmUnmap(Real(f), delete_flag);
}
int Fetch(sqlite3_file* f, sqlite3_int64 offset, int n, void** out) {
  return Real(f)->pMethods->xFetch(Real(f), offset, n, out);
}
int Unfetch(sqlite3_file* f, sqlite3_int64 offset, void* p) {
  return Real(f)->pMethods->xUnfetch(Real(f), offset, p);
}

const sqlite3_io_methods kFileMethods = {
    3,
    Close,
    Read,
    Write,
    Truncate,
    Sync,
    FileSize,
    Lock,
    Unlock,
    CheckReservedLock,
    FileControl,
    SectorSize,
    DeviceCharacteristics,
    ShmMap,
    ShmLock,
    ShmBarrier,
    ShmUnmap,
    Fetch,
    Unfetch,
};

// ---- VFS methods: the default VFS's, with our files ------------------------

int Open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags,
         int* out_flags) {
  auto* faulty = reinterpret_cast<FaultyFile*>(file);
  faulty->real = reinterpret_cast<sqlite3_file*>(faulty + 1);
  faulty->main_db = (flags & SQLITE_OPEN_MAIN_DB) != 0;
  int rc = RealVfs()->xOpen(RealVfs(), name, faulty->real, flags, out_flags);
  // SQLite calls xClose only when pMethods is set.
  file->pMethods = faulty->real->pMethods != nullptr ? &kFileMethods : nullptr;
  return rc;
}
int Delete(sqlite3_vfs*, const char* name, int sync_dir) {
  return RealVfs()->xDelete(RealVfs(), name, sync_dir);
}
int Access(sqlite3_vfs*, const char* name, int flags, int* out) {
  return RealVfs()->xAccess(RealVfs(), name, flags, out);
}
int FullPathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return RealVfs()->xFullPathname(RealVfs(), name, n, out);
}
void* DlOpen(sqlite3_vfs*, const char* name) {
  return RealVfs()->xDlOpen(RealVfs(), name);
}
void DlError(sqlite3_vfs*, int n, char* out) {
  RealVfs()->xDlError(RealVfs(), n, out);
}
void (*DlSym(sqlite3_vfs*, void* handle, const char* symbol))(void) {
  return RealVfs()->xDlSym(RealVfs(), handle, symbol);
}
void DlClose(sqlite3_vfs*, void* handle) {
  RealVfs()->xDlClose(RealVfs(), handle);
}
int Randomness(sqlite3_vfs*, int n, char* out) {
  return RealVfs()->xRandomness(RealVfs(), n, out);
}
int Sleep(sqlite3_vfs*, int microseconds) {
  return RealVfs()->xSleep(RealVfs(), microseconds);
}
int CurrentTime(sqlite3_vfs*, double* out) {
  return RealVfs()->xCurrentTime(RealVfs(), out);
}
int GetLastError(sqlite3_vfs*, int n, char* out) {
  return RealVfs()->xGetLastError(RealVfs(), n, out);
}
int CurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* out) {
  return RealVfs()->xCurrentTimeInt64(RealVfs(), out);
}

sqlite3_vfs* MakeVfs() {
  // Version 2 of the VFS interface: the version 3 system-call members stay
  // null.
  static sqlite3_vfs vfs = [] {
    sqlite3_vfs v{};
    v.iVersion = 2;
    v.szOsFile = static_cast<int>(sizeof(FaultyFile)) + RealVfs()->szOsFile;
    v.mxPathname = RealVfs()->mxPathname;
    v.zName = FaultySqliteVfs::kName;
    v.xOpen = Open;
    v.xDelete = Delete;
    v.xAccess = Access;
    v.xFullPathname = FullPathname;
    v.xDlOpen = DlOpen;
    v.xDlError = DlError;
    v.xDlSym = DlSym;
    v.xDlClose = DlClose;
    v.xRandomness = Randomness;
    v.xSleep = Sleep;
    v.xCurrentTime = CurrentTime;
    v.xGetLastError = GetLastError;
    v.xCurrentTimeInt64 = CurrentTimeInt64;
    return v;
  }();
  return &vfs;
}

}  // namespace

FaultySqliteVfs& FaultySqliteVfs::Get() {
  static FaultySqliteVfs* const instance = [] {
    if (sqlite3_vfs_register(MakeVfs(), /*makeDflt=*/0) != SQLITE_OK) {
      std::abort();  // a broken test setup, not a test outcome
    }
    return new FaultySqliteVfs();
  }();
  return *instance;
}

void FaultySqliteVfs::SetFault(Fault fault) { SetFaultAfterWrites(0, fault); }

void FaultySqliteVfs::SetFaultAfterWrites(int64_t n, Fault fault) {
  fault_.store(static_cast<int>(fault));
  writes_before_fault_.store(n > 0 ? n : -1);
}

void FaultySqliteVfs::RunBeforeRead(int64_t n, std::function<void()> hook) {
  absl::MutexLock lock(&hook_mu_);
  hook_at_read_ = main_db_reads_.load() + std::max<int64_t>(n, 1);
  hook_ = std::move(hook);
}

void FaultySqliteVfs::BeforeMainDbRead() {
  const int64_t read = main_db_reads_.fetch_add(1) + 1;
  std::function<void()> hook;
  {
    absl::MutexLock lock(&hook_mu_);
    if (hook_at_read_ == 0 || read < hook_at_read_) return;
    hook_at_read_ = 0;
    hook = std::move(hook_);
    hook_ = nullptr;
  }
  if (hook) hook();
}

FaultySqliteVfs::Fault FaultySqliteVfs::NextWrite() {
  const auto fault = static_cast<Fault>(fault_.load());
  if (fault != Fault::kNone) {
    // One of the allowed writes before the fault, if any are left.
    int64_t left = writes_before_fault_.load();
    while (left > 0 &&
           !writes_before_fault_.compare_exchange_weak(left, left - 1)) {
    }
    if (left <= 0) {
      refused_.fetch_add(1);
      return fault;
    }
  }
  writes_.fetch_add(1);
  return Fault::kNone;
}

FaultySqliteVfs::Fault FaultySqliteVfs::NextSync() {
  const auto fault = static_cast<Fault>(fault_.load());
  // A full disk still syncs what it holds; and syncs before the first
  // refused write go through.
  if (fault != Fault::kIoError || writes_before_fault_.load() > 0) {
    syncs_.fetch_add(1);
    return Fault::kNone;
  }
  return fault;
}

}  // namespace adjutant
