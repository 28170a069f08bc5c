// adjutantd: parses flags, opens the store, runs an AdjutantServer until
// SIGTERM or SIGINT. Everything worth testing lives in the libraries.
#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "server/server.h"
#include "server/store_notifier.h"
#include "spdlog/sinks/stdout_color_sinks.h"
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

// Whether --db names a PostgreSQL database (a libpq URI) rather than a file.
bool IsPostgresUri(const std::string& db) {
  return db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  adjutant::AdjutantServerConfig config;
  std::string db = "./adjutant.db";
  std::string synchronous = "full";
  std::string log_level = "info";
  std::string port_file;
  std::string clock_offset;
  adjutant::PostgresOptions postgres;

  CLI::App app{
      "adjutantd: the Adjutant durable job queue and cron scheduler, "
      "serving adjutant.v1.JobQueue over gRPC."};
  app.add_option("--listen", config.listen_address,
                 "HOST:PORT to serve gRPC on; port 0 picks a free port (see "
                 "--port-file)")
      ->capture_default_str();
  app.add_option("--db", db,
                 "SQLite database file, created if missing; \":memory:\" "
                 "keeps jobs in memory only (lost on exit); a "
                 "postgresql://... or postgres://... URI selects PostgreSQL "
                 "(several daemons may share it; see docs/POSTGRES.md)")
      ->capture_default_str();
  app.add_option("--sqlite-synchronous", synchronous,
                 "full: an answered write is on disk; normal: faster, but a "
                 "power loss may undo the last writes (a crash does not)")
      ->check(CLI::IsMember({"full", "normal"}))
      ->capture_default_str();
  app.add_option("--pg-pool-size", postgres.pool_size,
                 "PostgreSQL only: connections in the store's pool, i.e. "
                 "store calls that run at once (plus one for LISTEN/NOTIFY)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--pg-schema", postgres.schema,
                 "PostgreSQL only: the schema holding Adjutant's tables "
                 "(created if missing); daemons sharing a queue use the same")
      ->capture_default_str();
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error, critical or off; logs go "
                 "to stderr")
      ->check(CLI::IsMember(
          {"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_option("--max-payload-bytes", config.limits.max_payload_bytes,
                 "largest job payload accepted; larger ones get "
                 "INVALID_ARGUMENT")
      ->check(CLI::Range(int64_t{0}, int64_t{256} << 20))
      ->capture_default_str();
  app.add_option("--default-max-attempts", config.limits.default_max_attempts,
                 "max_attempts of a job enqueued without one: leases allowed "
                 "before it goes DEAD")
      ->check(CLI::Range(1, adjutant::kMaxAttemptsLimit))
      ->capture_default_str();
  app.add_option("--executor-threads", config.executor_threads,
                 "threads that run store calls off the gRPC threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--port-file", port_file,
                 "once listening, write the bound port to this file (for "
                 "--listen HOST:0)");
  // Hidden (empty group): test-only.
  app.add_option("--clock-offset-for-test", clock_offset,
                 "shift the wall clock by this duration (e.g. 120s)")
      ->group("");
  CLI11_PARSE(app, argc, argv);

  // Block the stop signals before any thread exists, so that every thread
  // inherits the mask and only sigwait() below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  spdlog::set_default_logger(spdlog::stderr_color_mt("adjutantd"));
  spdlog::set_level(spdlog::level::from_str(log_level));

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

  std::unique_ptr<adjutant::JobStore> store;
  // PostgreSQL only: tells the other daemons on the database about our
  // writes and wakes our long-polls for theirs. Outlives `store`.
  std::unique_ptr<adjutant::PgNotifier> notifier;
  if (IsPostgresUri(db)) {
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
    store = std::make_unique<adjutant::MemoryJobStore>();
    spdlog::info("store: in memory (jobs are lost on exit)");
  } else {
    adjutant::SqliteOptions options;
    options.path = db;
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
  if (!port_file.empty() && !WritePortFile(port_file, server->port())) {
    spdlog::critical("cannot write --port-file {}: {}", port_file,
                     std::strerror(errno));
    return 1;
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  spdlog::info("received {}: stopping", strsignal(signal_number));
  server->Shutdown();
  if (notifier != nullptr) notifier->Stop();
  server.reset();  // closes the store
  spdlog::info("store closed; exiting");
  return 0;
}
