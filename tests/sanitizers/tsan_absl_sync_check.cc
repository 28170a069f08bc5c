// ThreadSanitizer builds only: checks tests/sanitizers/tsan_absl_sync.cc.
// Two threads increment a counter 1000 times each; the worker always under
// an absl::Mutex, the main thread under it too, or, with the argument
// "unguarded", without it. TSan must stay silent on the first (the wrappers
// show it the mutex) and report the second (they hide no real race): the
// ctest entries tsan_absl_sync.guarded and tsan_absl_sync.unguarded.
#include <cstring>
#include <thread>

#include "absl/synchronization/mutex.h"

namespace {

absl::Mutex mu;
int counter = 0;  // Guarded by mu, except where the test means to race.

}  // namespace

int main(int argc, char** argv) {
  const bool unguarded = argc > 1 && std::strcmp(argv[1], "unguarded") == 0;
  std::thread worker([] {
    for (int i = 0; i < 1000; ++i) {
      absl::MutexLock lock(&mu);
      ++counter;
    }
  });
  for (int i = 0; i < 1000; ++i) {
    if (unguarded) {
      ++counter;
    } else {
      absl::MutexLock lock(&mu);
      ++counter;
    }
  }
  worker.join();
  return 0;
}
