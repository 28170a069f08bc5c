// Identifiers the store hands out. Their random bytes come from getrandom(2),
// drawn a kilobyte at a time into a pool per thread; each byte is handed out
// once. A child of fork() never reuses its parent's pool.
#ifndef ADJUTANT_STORAGE_IDS_H_
#define ADJUTANT_STORAGE_IDS_H_

#include <string>

namespace adjutant {

// A fresh job id: 32 lowercase hex digits. The first 12 are the wall-clock
// time it was made, in milliseconds since the Unix epoch; the other 20 are
// 80 bits from the OS's random source. Ids made in later milliseconds sort
// after earlier ones (within one millisecond, or across a step of the clock
// back, in no particular order), so that the stores' indexes on the id take
// new jobs at their end: a group of inserts changes one or two pages of the
// index rather than one page per job, and jobs enqueued together, which are
// mostly leased and acked together, are found on neighbouring pages.
// Thread-safe.
std::string NewJobId();

// A fresh lease token: 256 bits from the OS's random source, as 64 hex
// digits. Unguessable. Thread-safe.
std::string NewLeaseToken();

// A uniform draw in [0, 1), for backoff jitter. Thread-safe.
double RandomUnit();

}  // namespace adjutant

#endif  // ADJUTANT_STORAGE_IDS_H_
