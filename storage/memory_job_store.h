// A JobStore that keeps everything in memory: for tests, for `--db :memory:`,
// and as the model the other backends are checked against. Nothing survives
// the process.
#ifndef ADJUTANT_STORAGE_MEMORY_JOB_STORE_H_
#define ADJUTANT_STORAGE_MEMORY_JOB_STORE_H_

#include "storage/job_store.h"

namespace adjutant {

// Thread-safe: one mutex guards all state; no call blocks on I/O.
class MemoryJobStore final : public JobStore {
 public:
  explicit MemoryJobStore(BackoffPolicy backoff = BackoffPolicy());
  ~MemoryJobStore() override;
  // (JobStore methods; see job_store.h for their contracts.)
};

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_MEMORY_JOB_STORE_H_
