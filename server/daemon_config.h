// The daemon's configuration: flags, ADJUTANT_<FLAG> environment variables
// and a TOML file (--config), parsed into a DaemonConfig without starting
// anything, so that it can be tested and checked (--check-config) on its own.
//
// Precedence, highest first: a flag on the command line, then its
// environment variable (e.g. ADJUTANT_LISTEN for --listen), then the
// --config file, then the default written next to each field below.
#ifndef ADJUTANT_SERVER_DAEMON_CONFIG_H_
#define ADJUTANT_SERVER_DAEMON_CONFIG_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/validation.h"
#include "spdlog/formatter.h"

namespace adjutant {

// Everything adjutantd can be told. A plain value: no invariants beyond what
// ValidateDaemonConfig() checks.
struct DaemonConfig {
  // --config: a TOML file of `flag-name = value` lines (flag names without
  // the leading dashes). Default "": no file.
  std::string config_file;
  // --listen: HOST:PORT to serve gRPC on; port 0 picks a free port.
  // Default "127.0.0.1:50051".
  std::string listen = "127.0.0.1:50051";
  // --db: a SQLite file (created if missing), ":memory:", or a
  // postgresql://... / postgres://... URI. Default "./adjutant.db".
  std::string db = "./adjutant.db";
  // --sqlite-synchronous: "full" or "normal". Default "full".
  std::string sqlite_synchronous = "full";
  // --pg-pool-size: PostgreSQL connections in the pool, 1..1000. Default 4.
  int pg_pool_size = 4;
  // --pg-schema: PostgreSQL schema holding the tables. Default "adjutant".
  std::string pg_schema = "adjutant";
  // --log-level: trace, debug, info, warn, error, critical or off.
  // Default "info".
  std::string log_level = "info";
  // --log-format: "text" (readable lines) or "json" (one JSON object per
  // line: time, level, logger, message). Logs go to stderr. Default "text".
  std::string log_format = "text";
  // --max-payload-bytes: largest job payload accepted, 0..256 MiB.
  // Default 1 MiB (1048576).
  int64_t max_payload_bytes = int64_t{1} << 20;
  // --default-max-attempts: max_attempts of a job enqueued without one,
  // 1..kMaxAttemptsLimit. Default 25.
  int default_max_attempts = 25;
  // --executor-threads: threads running store calls, 1..256. Default 64:
  // a thread waiting on a store call only sleeps, and on SQLite the writes
  // waiting while a commit is in flight share the next one (group commit),
  // so more waiting threads make bigger groups (bench/store_bench.cc).
  int executor_threads = 64;
  // --port-file: once listening, write the bound port here. Default "".
  std::string port_file;
  // --check-config: validate, print "configuration OK" and exit without
  // opening the store or binding the port. Default false.
  bool check_config = false;
  // --clock-offset-for-test (hidden): shift the wall clock, e.g. "120s".
  // Default "": no shift.
  std::string clock_offset_for_test;

  // ---- Access control (server/auth.h, server/tls.h).
  // --tls-cert: PEM certificate chain to serve TLS with. Default "":
  // plaintext.
  std::string tls_cert;
  // --tls-key: PEM private key of --tls-cert. Default "".
  std::string tls_key;
  // --tls-client-ca: PEM CA certificate(s); clients must present a
  // certificate it signed (mutual TLS). Requires --tls-cert. Default "":
  // no client certificate asked.
  std::string tls_client_ca;
  // --auth-tokens: token file (NAME ROLE[,ROLE...] TOKEN lines, see
  // server/auth.h); every adjutant.v1 call must then carry
  // "authorization: Bearer TOKEN" with a role allowed to call it. Read once
  // at start. Default "": tokens not checked.
  std::string auth_tokens;
  // --insecure: allow listening on a non-loopback address without
  // authentication (neither --auth-tokens nor --tls-client-ca). Default
  // false: such a configuration is refused.
  bool insecure = false;

  // Retention and shutdown. Durations are absl::ParseDuration strings
  // ("24h", "90m", "1.5h", "30s").
  // --retention: how long SUCCEEDED and CANCELLED jobs are kept after they
  // finished; "0" keeps them forever. Default "24h".
  std::string retention = "24h";
  // --dead-retention: how long DEAD jobs are kept after they died; "0"
  // keeps them forever. Default "168h" (7 days).
  std::string dead_retention = "168h";
  // --retention-batch-size: finished jobs deleted per store transaction,
  // 1..100000. Default 500.
  int retention_batch_size = 500;
  // --shutdown-timeout: on SIGTERM, how long in-flight calls may take to
  // finish before they are cancelled; "0" cancels them at once. Default
  // "20s".
  std::string shutdown_timeout = "20s";

  // ---- Scheduler ----
  // --cron-parallelism: due schedules the scheduler processes at once in a
  // round (its firing threads; their transitions share the SQLite store's
  // group commits, or use several PostgreSQL connections: see
  // --pg-pool-size), 1..1024; 1 fires them one after another. Default 64
  // (SchedulerConfig::cron_parallelism).
  int cron_parallelism = 64;
  // --cron-fire-ahead: how long before its instant a tick of an ALLOW
  // schedule may fire, its job stored to become runnable at the tick
  // (SchedulerConfig::fire_ahead); at most 1m; "0" fires every tick at its
  // instant. Default "250ms".
  std::string cron_fire_ahead = "250ms";

  // ---- Metrics (docs/METRICS.md) ----
  // --metrics-listen: HOST:PORT to serve Prometheus metrics on, at
  // http://HOST:PORT/metrics; port 0 picks a free port (see
  // --metrics-port-file). Default "": no metrics endpoint.
  std::string metrics_listen;
  // --metrics-port-file: once the metrics endpoint listens, write its bound
  // port here. Default "".
  std::string metrics_port_file;

  // ---- Limits against overload (docs/OPERATIONS.md, "Limits") ----
  // --max-batch-size: the most jobs in one EnqueueBatch, and the largest
  // Dequeue max_jobs, 1..100000. More: INVALID_ARGUMENT naming the field
  // and the flag. Default 1000.
  int max_batch_size = 1000;
  // --max-pending-per-queue: the most pending (PENDING or LEASED) jobs one
  // queue may hold; an Enqueue or EnqueueBatch that would pass it gets
  // RESOURCE_EXHAUSTED naming the queue, its count and the flag, and stores
  // nothing. Fired cron ticks and RequeueJob are counted but never refused
  // (a tick is never lost). 0: no limit. Exact on SQLite and in memory; on
  // PostgreSQL concurrent Enqueues may pass it by what they insert at once
  // (docs/POSTGRES.md). Default 10000000.
  int64_t max_pending_per_queue = 10'000'000;
  // --max-long-polls: the most long-polls in progress at once (Dequeue
  // calls with a wait, and open Work streams), 1..1000000; one more gets
  // RESOURCE_EXHAUSTED naming the flag (a Dequeue without a wait still
  // works). Default 20000.
  int max_long_polls = 20000;
  // --max-message-bytes: the largest request message gRPC accepts; larger
  // ones get RESOURCE_EXHAUSTED from gRPC ("Received message larger than
  // max (N vs. LIMIT)"). At least --max-payload-bytes + 65536 (one Enqueue
  // of the largest payload), at most 2147483647. Default 16 MiB (16777216).
  int64_t max_message_bytes = int64_t{16} << 20;
  // --max-lease-duration: the longest lease_duration a Dequeue or
  // ExtendLease may ask for, 1s..24h; longer gets INVALID_ARGUMENT naming
  // lease_duration and the flag. A worker holding a job longer extends its
  // lease. Default "24h".
  std::string max_lease_duration = "24h";
};

// Parses argv (argv[0] is the program name), the ADJUTANT_* environment and
// the --config file into *config. Returns -1 when the daemon should go on;
// otherwise CLI11 has printed help or an error naming the option and the
// reason, and the return value is the exit code (0 for --help).
int ParseDaemonConfig(int argc, const char* const* argv, DaemonConfig* config);

// Checks what parsing alone cannot: that --db is a valid target (a
// PostgreSQL URI with something after the scheme, ":memory:", or a file
// path whose directory exists and which is not itself a directory), that
// --port-file's directory exists, that --clock-offset-for-test is a
// duration, and that --retention, --dead-retention and --shutdown-timeout
// are non-negative durations, and --cron-parallelism is in 1..1024. Opens
// nothing and binds nothing.
// INVALID_ARGUMENT names the flag and the reason. --metrics-listen is
// HOST:PORT when set, and --metrics-port-file's directory exists and needs
// --metrics-listen.
// Limits: each within its range, and --max-message-bytes at least
// --max-payload-bytes + 65536 (ValidateRequestLimits in server/validation.h).
// Access control: the TLS files (CheckTlsFiles in server/tls.h), the token
// file (parsed: a bad line is named with its number), and that a
// non-loopback --listen has authentication (--auth-tokens or
// --tls-client-ca) unless --insecure.
absl::Status ValidateDaemonConfig(const DaemonConfig& config);

// Whether `listen` (HOST:PORT) only accepts local connections: a host in
// 127.0.0.0/8, ::1 (also [::1]), "localhost", or a unix: socket. An empty
// host, 0.0.0.0, [::] and any other name are not.
bool IsLoopbackListenAddress(const std::string& listen);

// Whether `db` names a PostgreSQL database (a libpq URI) rather than a file.
bool IsPostgresUri(const std::string& db);

// `value` of the duration flag `flag` (e.g. "--retention"), or
// INVALID_ARGUMENT naming the flag and the reason: not a duration, negative,
// or infinite.
absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& flag,
                                                 const std::string& value);

// The request limits `config` sets (--max-payload-bytes,
// --default-max-attempts, --max-batch-size, --max-lease-duration,
// --max-long-polls, --max-message-bytes), checked by
// ValidateRequestLimits: INVALID_ARGUMENT naming the flag.
absl::StatusOr<RequestLimits> RequestLimitsFromConfig(
    const DaemonConfig& config);

// A spdlog formatter writing each record as one JSON object on one line:
// {"time":"2026-11-27T05:00:00.123456Z","level":"info","logger":"adjutantd",
//  "message":"..."} with the message escaped per RFC 8259.
std::unique_ptr<spdlog::formatter> NewJsonLogFormatter();

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_DAEMON_CONFIG_H_
