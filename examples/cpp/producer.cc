// An example producer: enqueues --count "square" jobs, each with the payload
// {"n": <i>}, for examples/cpp/worker.cc (or the Python and Node workers) to
// square.
//
//   adjutant_example_producer --server 127.0.0.1:50051 --queue squares --count
//   10
//
// Prints one line per job ("enqueued <job_id> n=<i>") and exits 0; a bad
// flag exits 2; an RPC error exits 1 with the gRPC code and message on
// stderr.
#include <iostream>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "client/client.h"

int main(int argc, char** argv) {
  std::string server = "127.0.0.1:50051";
  std::string queue = "squares";
  int count = 10;
  int first = 1;

  CLI::App app{"Enqueue \"square\" jobs for the example workers."};
  app.add_option("--server", server, "adjutantd's HOST:PORT")
      ->capture_default_str();
  app.add_option("--queue", queue, "the queue to enqueue into")
      ->capture_default_str();
  app.add_option("--count", count, "how many jobs to enqueue")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--first", first, "the n of the first job (then n+1, ...)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  adjutant::ClientOptions options;
  options.target = server;
  absl::StatusOr<std::unique_ptr<adjutant::Client>> client =
      adjutant::Client::Create(options);
  if (!client.ok()) {
    std::cerr << "producer: " << client.status() << "\n";
    return 2;
  }

  // One transaction for all of them: either every job is stored or none.
  adjutant::v1::EnqueueBatchRequest batch;
  for (int i = 0; i < count; ++i) {
    adjutant::v1::EnqueueRequest* job = batch.add_jobs();
    job->set_queue(queue);
    job->set_job_type("square");
    job->set_payload(absl::StrCat("{\"n\": ", first + i, "}"));
  }
  absl::StatusOr<adjutant::v1::EnqueueBatchResponse> response =
      (*client)->EnqueueBatch(batch);
  if (!response.ok()) {
    std::cerr << "producer: EnqueueBatch: " << response.status() << "\n";
    return 1;
  }
  for (int i = 0; i < response->results_size(); ++i) {
    std::cout << "enqueued " << response->results(i).job_id()
              << " n=" << first + i << "\n";
  }
  return 0;
}
