#include "server/metrics_http.h"

#include <httplib.h>
#include <pthread.h>
#include <sys/socket.h>

#include <chrono>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace adjutant {
namespace {

// Threads answering requests: a scrape at a time is the norm; a second lets
// a curl in while Prometheus holds a keep-alive connection.
constexpr size_t kHttpThreads = 2;
// Bounds on a slow or stuck client.
constexpr int kHttpTimeoutSeconds = 10;

}  // namespace

absl::Status ParseHostPort(const std::string& flag, const std::string& address,
                           std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", address, "' is not of the form HOST:PORT"));
  }
  std::string h = address.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
    h = h.substr(1, h.size() - 2);
  }
  if (h.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", address,
                     "' has no host (e.g. 127.0.0.1:9090, or 0.0.0.0:9090 "
                     "for every interface)"));
  }
  int p = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &p) || p < 0 || p > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", address, "' has no port in 0..65535"));
  }
  *host = std::move(h);
  *port = p;
  return absl::OkStatus();
}

MetricsHttpServer::MetricsHttpServer(MetricsRegistry* registry)
    : registry_(registry) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

absl::Status MetricsHttpServer::Start(const std::string& listen) {
  std::string host;
  int port = 0;
  if (absl::Status s = ParseHostPort("--metrics-listen", listen, &host, &port);
      !s.ok()) {
    return s;
  }
  http_ = std::make_unique<httplib::Server>();
  http_->new_task_queue = [] { return new httplib::ThreadPool(kHttpThreads); };
  // httplib's default sets SO_REUSEPORT, which lets a second daemon bind
  // the same port and take half the scrapes; we want a clear failure
  // instead. SO_REUSEADDR alone still allows a quick restart.
  http_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  http_->set_read_timeout(kHttpTimeoutSeconds, 0);
  http_->set_write_timeout(kHttpTimeoutSeconds, 0);
  // Unmatched paths get httplib's 404.
  http_->Get(
      "/metrics", [this](const httplib::Request&, httplib::Response& response) {
        response.set_content(registry_->Render(), kPrometheusContentType);
      });
  const int bound = port == 0 ? http_->bind_to_any_port(host)
                              : (http_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    http_.reset();
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen: cannot listen on ", listen,
                     " (address in use or not valid for this host)"));
  }
  port_ = bound;
  thread_ = std::thread([this] {
    // Named by itself before it starts httplib's connection threads, which
    // take their creator's name.
    pthread_setname_np(pthread_self(), "metrics-http");
    http_->listen_after_bind();
    absl::MutexLock l(&mu_);
    listen_returned_ = true;
  });
  // httplib's stop() does nothing until the loop runs: wait for it, so that
  // a Stop() right after Start() cannot miss it. (A brief wait at startup.)
  for (;;) {
    if (http_->is_running()) break;
    {
      absl::MutexLock l(&mu_);
      if (listen_returned_) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return absl::OkStatus();
}

void MetricsHttpServer::Stop() {
  if (!thread_.joinable()) return;
  http_->stop();
  thread_.join();
}

}  // namespace adjutant
