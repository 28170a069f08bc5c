// The Prometheus scrape endpoint: GET /metrics over plain HTTP/1.1 answers
// the registry's text exposition; every other path is 404. Served by
// cpp-httplib (Debian's libcpp-httplib-dev) on its own two threads, apart
// from gRPC's.
#ifndef ADJUTANT_SERVER_METRICS_HTTP_H_
#define ADJUTANT_SERVER_METRICS_HTTP_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics.h"

namespace httplib {
class Server;
}

namespace adjutant {

// Splits "HOST:PORT" ("127.0.0.1:9090", "localhost:0", "[::1]:9090") into
// a host (brackets removed) and a port 0..65535. INVALID_ARGUMENT naming
// `flag` and the reason otherwise.
absl::Status ParseHostPort(const std::string& flag, const std::string& address,
                           std::string* host, int* port);

// Start() and Stop() are called by one owner thread; requests are served on
// the server's own threads, each calling registry->Render().
class MetricsHttpServer {
 public:
  // `registry` must outlive the server.
  explicit MetricsHttpServer(MetricsRegistry* registry);
  // Stop().
  ~MetricsHttpServer();

  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Binds `listen` (HOST:PORT; port 0 picks a free one, see port()) and
  // starts serving. INVALID_ARGUMENT for a malformed address (naming
  // --metrics-listen), UNAVAILABLE if it cannot be bound. REQUIRES: called
  // at most once.
  absl::Status Start(const std::string& listen);

  // The bound port. REQUIRES: Start() succeeded.
  int port() const { return port_; }

  // Stops accepting, lets requests in progress finish, joins the threads.
  // Idempotent.
  void Stop();

 private:
  MetricsRegistry* const registry_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;

  absl::Mutex mu_;
  // Set when the serving thread's listen loop has returned.
  bool listen_returned_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_METRICS_HTTP_H_
