// adjutantd: parses flags, opens the store, runs an AdjutantServer until
// SIGTERM or SIGINT. Everything worth testing lives in the libraries.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "server/auth.h"
#include "server/daemon_config.h"
#include "server/server.h"
#include "server/service_notifier.h"
#include "server/store_notifier.h"
#include "server/tls.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"
#include "storage/memory_job_store.h"
#include "storage/postgres_job_store.h"
#include "storage/sqlite_job_store.h"

namespace {

// Writes "<port>\n" to `path` through a rename, so that a reader never sees
// a partial file.
bool WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.flush()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian 12 builds abseil without NDEBUG, which leaves absl::Mutex's
  // lock-order check on: every Lock then takes one process-wide lock to
  // update a graph of held mutexes. The test binaries keep the check; the
  // daemon does not pay for it on every call.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  adjutant::DaemonConfig flags;
  if (int exit_code = adjutant::ParseDaemonConfig(argc, argv, &flags);
      exit_code >= 0) {
    return exit_code;
  }
  if (absl::Status valid = adjutant::ValidateDaemonConfig(flags); !valid.ok()) {
    std::fprintf(stderr, "adjutantd: %s\n",
                 std::string(valid.message()).c_str());
    return 2;
  }
  if (flags.check_config) {
    if (!flags.auth_tokens.empty()) {
      if (auto warning =
              adjutant::TokenFilePermissionWarning(flags.auth_tokens)) {
        std::fprintf(stderr, "adjutantd: warning: %s\n", warning->c_str());
      }
    }
    std::printf("configuration OK\n");
    return 0;
  }
  adjutant::AdjutantServerConfig config;
  config.listen_address = flags.listen;
  config.executor_threads = flags.executor_threads;
  // Validated above (ValidateDaemonConfig): these are consistent.
  config.limits = *adjutant::RequestLimitsFromConfig(flags);
  config.metrics_listen = flags.metrics_listen;
  const std::string& db = flags.db;
  const std::string& synchronous = flags.sqlite_synchronous;
  const std::string& port_file = flags.port_file;
  const std::string& clock_offset = flags.clock_offset_for_test;
  // Validated above: these parse.
  config.retention.finished =
      *adjutant::ParseDurationFlag("--retention", flags.retention);
  config.retention.dead =
      *adjutant::ParseDurationFlag("--dead-retention", flags.dead_retention);
  config.retention.batch_size = flags.retention_batch_size;
  config.scheduler.cron_parallelism = flags.cron_parallelism;
  config.scheduler.fire_ahead =
      *adjutant::ParseDurationFlag("--cron-fire-ahead", flags.cron_fire_ahead);
  config.shutdown_grace = *adjutant::ParseDurationFlag("--shutdown-timeout",
                                                       flags.shutdown_timeout);
  adjutant::PostgresOptions postgres;
  postgres.pool_size = flags.pg_pool_size;
  postgres.schema = flags.pg_schema;
  postgres.max_pending_per_queue = flags.max_pending_per_queue;

  // Block the stop signals before any thread exists, so that every thread
  // inherits the mask and only sigwait() below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  if (flags.log_format == "json") {
    // No colors: one JSON object per line, for journald and log shippers.
    spdlog::set_default_logger(spdlog::stderr_logger_mt("adjutantd"));
    spdlog::set_formatter(adjutant::NewJsonLogFormatter());
  } else {
    spdlog::set_default_logger(spdlog::stderr_color_mt("adjutantd"));
  }
  spdlog::set_level(spdlog::level::from_str(flags.log_level));
  spdlog::info("adjutantd {} starting (pid {}): gRPC on {}{}", ADJUTANT_VERSION,
               getpid(), flags.listen,
               flags.metrics_listen.empty()
                   ? std::string()
                   : ", metrics on " + flags.metrics_listen);

  // Access control: TLS credentials and the token file (both checked by
  // ValidateDaemonConfig; checked again here, as they are read).
  {
    auto credentials = adjutant::MakeServerCredentials(
        {flags.tls_cert, flags.tls_key, flags.tls_client_ca});
    if (!credentials.ok()) {
      spdlog::critical("{}", std::string(credentials.status().message()));
      return 2;
    }
    config.credentials = *std::move(credentials);
    if (!flags.tls_cert.empty()) {
      spdlog::info("TLS with {}{}", flags.tls_cert,
                   flags.tls_client_ca.empty()
                       ? ""
                       : "; client certificates required (--tls-client-ca)");
    }
    if (!flags.auth_tokens.empty()) {
      auto authorizer = adjutant::Authorizer::FromFile(flags.auth_tokens);
      if (!authorizer.ok()) {
        spdlog::critical("--auth-tokens: {}",
                         std::string(authorizer.status().message()));
        return 2;
      }
      if (auto warning =
              adjutant::TokenFilePermissionWarning(flags.auth_tokens)) {
        spdlog::warn("{}", *warning);
      }
      spdlog::info("tokens checked: {}",
                   absl::StrJoin((*authorizer)->names(), ", "));
      if (flags.tls_cert.empty() &&
          !adjutant::IsLoopbackListenAddress(flags.listen)) {
        spdlog::warn(
            "bearer tokens cross the network in clear text: serve TLS with "
            "--tls-cert and --tls-key");
      }
      config.authorizer = *std::move(authorizer);
    } else if (flags.insecure &&
               !adjutant::IsLoopbackListenAddress(flags.listen) &&
               flags.tls_client_ca.empty()) {
      spdlog::warn("--insecure: serving {} to anyone who connects",
                   flags.listen);
    }
  }

  adjutant::Clock* clock = adjutant::RealClock();
  std::unique_ptr<adjutant::Clock> offset_clock;
  if (!clock_offset.empty()) {
    absl::Duration offset;
    if (!absl::ParseDuration(clock_offset, &offset)) {
      spdlog::critical(
          "--clock-offset-for-test: '{}' is not a duration (e.g. 120s)",
          clock_offset);
      return 2;
    }
    offset_clock = adjutant::NewOffsetClock(clock, offset);
    clock = offset_clock.get();
    spdlog::warn("wall clock shifted by {} (--clock-offset-for-test)",
                 absl::FormatDuration(offset));
  }

  // systemd (Type=notify, deploy/adjutantd.service): READY=1 once serving,
  // WATCHDOG=1 after each store check that passed, STOPPING=1 on the way
  // out. Without $NOTIFY_SOCKET nothing is sent. Outlives `server`.
  std::unique_ptr<adjutant::ServiceNotifier> service_notifier =
      adjutant::NewSystemdNotifier();
  auto watchdog = adjutant::SystemdWatchdogInterval();
  if (!watchdog.ok()) {
    spdlog::critical("{}", std::string(watchdog.status().message()));
    return 2;
  }
  adjutant::StoreWatchdog store_watchdog(service_notifier.get(),
                                         watchdog->has_value());
  config.health_check_interval =
      adjutant::HealthCheckIntervalFor(config.health_check_interval, *watchdog);
  config.on_health_check = [&store_watchdog](const absl::Status& status) {
    store_watchdog.OnHealthCheck(status);
  };
  if (watchdog->has_value()) {
    spdlog::info("watchdog: {}; the store is checked every {}",
                 absl::FormatDuration(**watchdog),
                 absl::FormatDuration(config.health_check_interval));
  }
  service_notifier->Status("opening the store");

  std::unique_ptr<adjutant::JobStore> store;
  // PostgreSQL only: tells the other daemons on the database about our
  // writes and wakes our long-polls for theirs. Outlives `store`.
  std::unique_ptr<adjutant::PgNotifier> notifier;
  if (adjutant::IsPostgresUri(db)) {
    postgres.conninfo = db;
    auto opened = adjutant::PostgresJobStore::Open(postgres);
    if (!opened.ok()) {
      // The URI may carry a password: name the schema, not the URI.
      spdlog::critical("cannot open the PostgreSQL store (schema {}): {}",
                       postgres.schema, opened.status().ToString());
      return 1;
    }
    adjutant::PgNotifierConfig notifier_config;
    notifier_config.conninfo = db;
    notifier = std::make_unique<adjutant::PgNotifier>(notifier_config);
    store = std::make_unique<adjutant::NotifyingJobStore>(*std::move(opened),
                                                          notifier.get());
    spdlog::info("store: PostgreSQL (schema {}, pool of {})", postgres.schema,
                 postgres.pool_size);
  } else if (db == ":memory:") {
    store = std::make_unique<adjutant::MemoryJobStore>(
        adjutant::BackoffPolicy(), flags.max_pending_per_queue);
    spdlog::info("store: in memory (jobs are lost on exit)");
  } else {
    adjutant::SqliteOptions options;
    options.path = db;
    options.max_pending_per_queue = flags.max_pending_per_queue;
    options.synchronous = synchronous == "normal"
                              ? adjutant::SqliteOptions::Synchronous::kNormal
                              : adjutant::SqliteOptions::Synchronous::kFull;
    auto opened = adjutant::SqliteJobStore::Open(options);
    if (!opened.ok()) {
      spdlog::critical("cannot open the store {}: {}", db,
                       opened.status().ToString());
      return 1;
    }
    store = *std::move(opened);
    spdlog::info("store: SQLite {} (synchronous={})", db, synchronous);
  }

  auto server = std::make_unique<adjutant::AdjutantServer>(
      config, std::move(store), clock);
  if (absl::Status started = server->Start(); !started.ok()) {
    spdlog::critical("{}", started.ToString());
    return 1;
  }
  if (notifier != nullptr) {
    adjutant::LongPollRegistry* long_poll = server->long_poll();
    adjutant::PgNotifierTargets targets;
    targets.on_available = [long_poll](const std::string& queue) {
      long_poll->Wake(queue);
    };
    targets.on_later = [long_poll](absl::Time at) {
      long_poll->NoteNextAvailable(at);
    };
    // A reaper round now re-checks every waiting queue against the store.
    targets.on_resync = [long_poll] {
      long_poll->NoteNextAvailable(absl::InfinitePast());
    };
    if (absl::Status started = notifier->Start(std::move(targets));
        !started.ok()) {
      spdlog::critical("{}", started.ToString());
      return 1;
    }
  }
  // Before --port-file, which tells a waiting test or script that we are up.
  if (!flags.metrics_port_file.empty() &&
      !WritePortFile(flags.metrics_port_file, server->metrics_port())) {
    spdlog::critical("cannot write --metrics-port-file {}: {}",
                     flags.metrics_port_file, std::strerror(errno));
    return 1;
  }
  if (!port_file.empty() && !WritePortFile(port_file, server->port())) {
    spdlog::critical("cannot write --port-file {}: {}", port_file,
                     std::strerror(errno));
    return 1;
  }
  {
    const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
    const std::string serving =
        absl::StrCat("serving on ", host, ":", server->port());
    store_watchdog.SetServingStatus(serving);
    service_notifier->Ready(serving);
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  spdlog::info("received {}: stopping", strsignal(signal_number));
  service_notifier->Stopping("stopping");
  server->Shutdown();
  if (notifier != nullptr) notifier->Stop();
  server.reset();  // closes the store
  spdlog::info("store closed; exiting");
  return 0;
}
