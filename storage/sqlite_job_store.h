// A JobStore on one SQLite file: the default backend.
#ifndef ADJUTANT_STORAGE_SQLITE_JOB_STORE_H_
#define ADJUTANT_STORAGE_SQLITE_JOB_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "storage/job_store.h"

namespace adjutant {

struct SqliteOptions {
  // The database file; created if missing.
  std::string path;
  // PRAGMA synchronous. FULL (the default): a call returns only once its
  // transaction is on disk. NORMAL: in WAL mode, a power loss may undo the
  // last transactions (a process crash does not).
  enum class Synchronous { kFull, kNormal };
  Synchronous synchronous = Synchronous::kFull;
  // How long a write waits for another process holding the file's write
  // lock before failing with UNAVAILABLE.
  absl::Duration busy_timeout = absl::Seconds(5);
  BackoffPolicy backoff;
};

class SqliteJobStore final : public JobStore {
 public:
  // Opens (creating or migrating) the database. Fails without touching the
  // file if it is not an Adjutant database, is corrupt, or has a schema
  // newer than this build knows (FAILED_PRECONDITION, saying which).
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(
      const SqliteOptions& options);
  ~SqliteJobStore() override;
  // (JobStore methods; see job_store.h for their contracts.)
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_SQLITE_JOB_STORE_H_
