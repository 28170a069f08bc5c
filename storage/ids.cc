#include "storage/ids.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/strings/escaping.h"

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

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  FillRandom(raw.data(), raw.size());
  return absl::BytesToHexString(raw);
}

}  // namespace

std::string NewJobId() { return RandomHex(16); }

std::string NewLeaseToken() { return RandomHex(32); }

double RandomUnit() {
  uint64_t bits;
  FillRandom(&bits, sizeof(bits));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace adjutant
