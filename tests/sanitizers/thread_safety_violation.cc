// Must not compile under clang's -Wthread-safety -Werror=thread-safety: the
// ctest thread_safety_analysis checks that the analysis is on and sees
// abseil's annotations, so that a clean build of our code means something.
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace adjutant {

class Counter {
 public:
  void Increment() { ++count_; }  // Not holding mutex_: an error.

 private:
  absl::Mutex mutex_;
  int count_ ABSL_GUARDED_BY(mutex_) = 0;
};

void Use() { Counter().Increment(); }

}  // namespace adjutant
