#include "storage/ids.h"

#include <pthread.h>
#include <sys/random.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace adjutant {
namespace {

// Fills `buf` from getrandom(2). The kernel's pool never runs dry once
// initialised; a failure here means a broken system, so crash loudly.
void FillRandom(void* buf, size_t len) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::abort();
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
}

// Bumped in a child after fork(), whose copies of the threads' pools hold
// the parent's bytes: a pool drawn before the fork is dropped, never reused.
std::atomic<uint64_t> fork_generation{0};

void AfterForkInChild() {
  fork_generation.fetch_add(1, std::memory_order_relaxed);
}

// A thread's bytes from getrandom(2), fetched a kilobyte at a time: a Dequeue
// of a thousand jobs needs a thousand tokens, and one system call each was
// a tenth of the lease's cost. Each byte is handed out once and then zeroed,
// so no id or token handed out stays in the pool.
struct RandomPool {
  static constexpr size_t kSize = 1024;
  uint8_t bytes[kSize];
  size_t used = kSize;  // empty until first drawn
  uint64_t generation = 0;
};

void DrawRandom(void* out, size_t len) {
  static const bool registered =
      pthread_atfork(nullptr, nullptr, &AfterForkInChild) == 0;
  (void)registered;  // without the handler, fork() is not supported
  thread_local RandomPool pool;
  if (len > RandomPool::kSize) {
    FillRandom(out, len);
    return;
  }
  const uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (pool.generation != generation) {
    std::memset(pool.bytes, 0, sizeof(pool.bytes));
    pool.used = RandomPool::kSize;
    pool.generation = generation;
  }
  if (RandomPool::kSize - pool.used < len) {
    FillRandom(pool.bytes, RandomPool::kSize);
    pool.used = 0;
  }
  std::memcpy(out, pool.bytes + pool.used, len);
  std::memset(pool.bytes + pool.used, 0, len);
  pool.used += len;
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  DrawRandom(raw.data(), raw.size());
  return absl::BytesToHexString(raw);
}

}  // namespace

std::string NewJobId() {
  // 6 bytes of milliseconds (big-endian, so that the hex sorts as the
  // number does), then 10 random bytes.
  const uint64_t ms = static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));
  char raw[16];
  for (int i = 0; i < 6; ++i) {
    raw[i] = static_cast<char>(static_cast<uint8_t>(ms >> (8 * (5 - i))));
  }
  DrawRandom(raw + 6, sizeof(raw) - 6);
  return absl::BytesToHexString(absl::string_view(raw, sizeof(raw)));
}

std::string NewLeaseToken() { return RandomHex(32); }

double RandomUnit() {
  uint64_t bits;
  DrawRandom(&bits, sizeof(bits));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace adjutant
