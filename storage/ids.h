// Identifiers the store hands out. Their bytes come from getrandom(2),
// drawn a kilobyte at a time into a pool per thread; each byte is handed out
// once. A child of fork() never reuses its parent's pool.
#ifndef ADJUTANT_STORAGE_IDS_H_
#define ADJUTANT_STORAGE_IDS_H_

#include <string>

namespace adjutant {

// A fresh job id: 32 lowercase hex digits from the OS's random source.
// Thread-safe.
std::string NewJobId();

// A fresh lease token: 256 bits from the OS's random source, as 64 hex
// digits. Unguessable. Thread-safe.
std::string NewLeaseToken();

// A uniform draw in [0, 1), for backoff jitter. Thread-safe.
double RandomUnit();

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_IDS_H_
