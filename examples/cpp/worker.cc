// An example worker: squares the numbers that examples/cpp/producer.cc
// enqueues, with adjutant::Worker doing the leasing, lease extension, acks
// and nacks.
//
//   adjutant_example_worker --server 127.0.0.1:50051 --queue squares
//       --concurrency 4 --max-jobs 10
//
// Handles job_type "square" (payload {"n": <integer>}). A payload that does
// not parse is a handler error: the job is nacked with the error text and
// retried until its attempts are used up. Prints one line per job
// ("squared <job_id> attempt <k> n=<n> result=<n*n>"; the Worker then acks
// it). Runs until --max-jobs jobs were handled (0: no limit) or SIGINT /
// SIGTERM, then stops the Worker: it finishes the jobs in hand and hands back
// the ones it has not started. A bad flag exits 2.
#include "client/worker.h"

#include <signal.h>

#include <cstdint>
#include <ctime>
#include <iostream>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"

namespace {

// Reads n from a payload {"n": <integer>}: a tiny parser for this one shape,
// to keep the example free of a JSON library.
absl::Status ParseN(absl::string_view payload, int64_t* n) {
  const size_t key = payload.find("\"n\"");
  const size_t colon = payload.find(':', key == payload.npos ? 0 : key);
  const size_t end = payload.rfind('}');
  if (key == payload.npos || colon == payload.npos || end == payload.npos ||
      end < colon) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload: expected {\"n\": <integer>}, got ", payload));
  }
  absl::string_view digits =
      absl::StripAsciiWhitespace(payload.substr(colon + 1, end - colon - 1));
  if (!absl::SimpleAtoi(digits, n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload: \"n\" is not an integer: ", digits));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  std::string server = "127.0.0.1:50051";
  adjutant::WorkerOptions options;
  options.queue = "squares";
  options.concurrency = 4;
  int64_t max_jobs = 0;

  CLI::App app{"Square the numbers of \"square\" jobs with adjutant::Worker."};
  app.add_option("--server", server, "adjutantd's HOST:PORT")
      ->capture_default_str();
  app.add_option("--queue", options.queue, "the queue to work")
      ->capture_default_str();
  app.add_option("--concurrency", options.concurrency,
                 "handlers running at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--max-jobs", max_jobs,
                 "exit after handling this many jobs (0: run until signalled)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  // Block the stop signals in every thread (the Worker's threads inherit
  // the mask), so that main() alone receives them with sigtimedwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  adjutant::ClientOptions client_options;
  client_options.target = server;
  absl::StatusOr<std::unique_ptr<adjutant::Client>> client =
      adjutant::Client::Create(client_options);
  if (!client.ok()) {
    std::cerr << "worker: " << client.status() << "\n";
    return 2;
  }

  // Handlers run on up to --concurrency threads at once: printing is
  // serialized.
  absl::Mutex out_mu;
  adjutant::Worker worker(client->get(), options);
  absl::Status registered = worker.Register(
      "square", [&out_mu](const adjutant::JobContext& job) -> absl::Status {
        int64_t n = 0;
        if (absl::Status s = ParseN(job.payload(), &n); !s.ok()) return s;
        absl::MutexLock lock(&out_mu);
        std::cout << "squared " << job.job().job_id() << " attempt "
                  << job.attempt() << " n=" << n << " result=" << n * n
                  << std::endl;
        return absl::OkStatus();  // the Worker acks it after this
      });
  if (!registered.ok()) {
    std::cerr << "worker: " << registered << "\n";
    return 1;
  }
  if (absl::Status started = worker.Start(); !started.ok()) {
    std::cerr << "worker: " << started << "\n";
    return 2;
  }

  // Wait for a stop signal, checking now and then whether --max-jobs jobs
  // were handled.
  for (;;) {
    const timespec tick = {0, 200 * 1000 * 1000};
    if (sigtimedwait(&stop_signals, nullptr, &tick) > 0) break;
    const adjutant::WorkerStats stats = worker.stats();
    if (max_jobs > 0 && stats.acked + stats.nacked >= max_jobs) break;
  }
  worker.Stop();
  const adjutant::WorkerStats stats = worker.stats();
  std::cout << "worker: " << stats.acked << " acked, " << stats.nacked
            << " nacked, " << stats.returned << " handed back" << std::endl;
  return 0;
}
