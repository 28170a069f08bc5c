// A fixed pool of threads for blocking work (store calls), so that gRPC
// reaction threads never block.
#ifndef ADJUTANT_SERVER_EXECUTOR_H_
#define ADJUTANT_SERVER_EXECUTOR_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace adjutant {

// Thread-safe. Tasks run in FIFO order on `threads` threads. The destructor
// runs every task already scheduled, then joins the threads.
class Executor {
 public:
  explicit Executor(int threads);
  ~Executor();

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `task`. REQUIRES: the destructor has not started.
  void Schedule(std::function<void()> task);

 private:
  void Loop();

  absl::Mutex mu_;
  // State below is protected by mu_.
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;

  std::vector<std::thread> threads_;
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_EXECUTOR_H_
