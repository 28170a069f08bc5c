#include "server/daemon_config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "scheduler/scheduler.h"
#include "server/auth.h"
#include "server/metrics_http.h"
#include "server/retention.h"
#include "server/tls.h"
#include "server/validation.h"
#include "spdlog/details/log_msg.h"

namespace adjutant {
namespace {

// The upper ends of --max-batch-size and --max-long-polls.
constexpr int kMaxBatchSizeFlag = 100000;
constexpr int kMaxLongPollsFlag = 1000000;

// "--pg-pool-size" -> "ADJUTANT_PG_POOL_SIZE".
std::string EnvName(const std::string& long_name) {
  return absl::StrCat("ADJUTANT_", absl::AsciiStrToUpper(absl::StrReplaceAll(
                                       long_name, {{"-", "_"}})));
}

// Whether --`name` appears among the command-line arguments, as "--name" or
// "--name=value".
bool OnCommandLine(const std::vector<std::string>& args,
                   const std::string& name) {
  const std::string flag = "--" + name;
  for (const std::string& arg : args) {
    if (arg == "--") break;
    if (arg == flag || absl::StartsWith(arg, flag + "=")) return true;
  }
  return false;
}

void AddOptions(CLI::App& app, DaemonConfig* c) {
  app.add_option("--listen", c->listen,
                 "HOST:PORT to serve gRPC on; port 0 picks a free port (see "
                 "--port-file)")
      ->capture_default_str();
  app.add_option("--db", c->db,
                 "SQLite database file, created if missing; \":memory:\" "
                 "keeps jobs in memory only (lost on exit); a "
                 "postgresql://... or postgres://... URI selects PostgreSQL "
                 "(several daemons may share it; see docs/POSTGRES.md)")
      ->capture_default_str();
  app.add_option("--sqlite-synchronous", c->sqlite_synchronous,
                 "full: an answered write is on disk; normal: faster, but a "
                 "power loss may undo the last writes (a crash does not)")
      ->check(CLI::IsMember({"full", "normal"}))
      ->capture_default_str();
  app.add_option("--pg-pool-size", c->pg_pool_size,
                 "PostgreSQL only: connections in the store's pool, i.e. "
                 "store calls that run at once (plus one for LISTEN/NOTIFY)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--pg-schema", c->pg_schema,
                 "PostgreSQL only: the schema holding Adjutant's tables "
                 "(created if missing); daemons sharing a queue use the same")
      ->capture_default_str();
  app.add_option("--log-level", c->log_level,
                 "trace, debug, info, warn, error, critical or off; logs go "
                 "to stderr")
      ->check(CLI::IsMember(
          {"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_option("--log-format", c->log_format,
                 "text: readable lines; json: one JSON object per line "
                 "(time, level, logger, message) for journald and log "
                 "shippers")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--max-payload-bytes", c->max_payload_bytes,
                 "largest job payload accepted; larger ones get "
                 "INVALID_ARGUMENT")
      ->check(CLI::Range(int64_t{0}, int64_t{256} << 20))
      ->capture_default_str();
  app.add_option("--default-max-attempts", c->default_max_attempts,
                 "max_attempts of a job enqueued without one: leases allowed "
                 "before it goes DEAD")
      ->check(CLI::Range(1, kMaxAttemptsLimit))
      ->capture_default_str();
  app.add_option("--executor-threads", c->executor_threads,
                 "threads that run store calls off the gRPC threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--port-file", c->port_file,
                 "once listening, write the bound port to this file (for "
                 "--listen HOST:0)");
  app.add_flag("--check-config", c->check_config,
               "validate the configuration, print \"configuration OK\" and "
               "exit, without opening the store or binding the port");
  // Access control.
  app.add_option("--tls-cert", c->tls_cert,
                 "PEM certificate (chain) to serve TLS with; with --tls-key. "
                 "Default: plaintext");
  app.add_option("--tls-key", c->tls_key,
                 "PEM private key of --tls-cert (unencrypted)");
  app.add_option("--tls-client-ca", c->tls_client_ca,
                 "PEM CA certificate(s): clients must present a certificate "
                 "it signed (mutual TLS); needs --tls-cert");
  app.add_option("--auth-tokens", c->auth_tokens,
                 "file of 'NAME ROLE[,ROLE...] TOKEN' lines (roles: "
                 "producer, worker, leader, admin); every call must then "
                 "carry 'authorization: Bearer TOKEN' (health and reflection "
                 "stay open). Read at start. Default: no tokens checked");
  app.add_flag("--insecure", c->insecure,
               "allow a non-loopback --listen without --auth-tokens or "
               "--tls-client-ca (refused otherwise)");
  app.add_option("--retention", c->retention,
                 "how long SUCCEEDED and CANCELLED jobs are kept after they "
                 "finished (e.g. 24h, 90m); 0 keeps them forever")
      ->capture_default_str();
  app.add_option("--dead-retention", c->dead_retention,
                 "how long DEAD jobs are kept after they died (e.g. 168h); 0 "
                 "keeps them forever")
      ->capture_default_str();
  app.add_option("--retention-batch-size", c->retention_batch_size,
                 "finished jobs deleted per store transaction (small batches "
                 "never hold the queue up)")
      ->check(CLI::Range(1, kMaxRetentionBatchSize))
      ->capture_default_str();
  app.add_option("--shutdown-timeout", c->shutdown_timeout,
                 "on SIGTERM, how long in-flight calls may take to finish "
                 "before they are cancelled (e.g. 20s); waiting long-polls "
                 "end at once with UNAVAILABLE")
      ->capture_default_str();
  // Scheduler.
  app.add_option("--cron-parallelism", c->cron_parallelism,
                 "due schedules the scheduler processes at once in a round "
                 "(their store writes share commits); 1 fires them one after "
                 "another")
      ->check(CLI::Range(1, kMaxCronParallelism))
      ->capture_default_str();
  app.add_option("--cron-fire-ahead", c->cron_fire_ahead,
                 "how long before its instant a tick of a schedule with "
                 "overlap policy ALLOW may fire: its job is stored then and "
                 "becomes runnable at the tick, so a thousand schedules due "
                 "at once are not late; a pause or change within it applies "
                 "from the next tick (at most 1m; 0: fire at the tick)")
      ->capture_default_str();
  // Hidden (empty group): test-only.
  app.add_option("--clock-offset-for-test", c->clock_offset_for_test,
                 "shift the wall clock by this duration (e.g. 120s)")
      ->group("");
  // Metrics (docs/METRICS.md).
  app.add_option("--metrics-listen", c->metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on, at "
                 "http://HOST:PORT/metrics; port 0 picks a free port (see "
                 "--metrics-port-file); empty: no metrics endpoint")
      ->capture_default_str();
  app.add_option("--metrics-port-file", c->metrics_port_file,
                 "once the metrics endpoint listens, write its bound port to "
                 "this file (for --metrics-listen HOST:0)");
  // Limits against overload (docs/OPERATIONS.md, "Limits").
  app.add_option("--max-batch-size", c->max_batch_size,
                 "the most jobs in one EnqueueBatch, and the largest Dequeue "
                 "max_jobs; more gets INVALID_ARGUMENT")
      ->check(CLI::Range(1, kMaxBatchSizeFlag))
      ->capture_default_str();
  app.add_option("--max-pending-per-queue", c->max_pending_per_queue,
                 "the most pending (PENDING or LEASED) jobs one queue may "
                 "hold; an Enqueue past it gets RESOURCE_EXHAUSTED and stores "
                 "nothing (fired cron ticks are never refused); 0: no limit")
      ->check(CLI::Range(int64_t{0}, std::numeric_limits<int64_t>::max()))
      ->capture_default_str();
  app.add_option("--max-long-polls", c->max_long_polls,
                 "the most long-polls in progress at once (Dequeue calls "
                 "with a wait, and open Work streams); one more gets "
                 "RESOURCE_EXHAUSTED (a Dequeue without a wait still works)")
      ->check(CLI::Range(1, kMaxLongPollsFlag))
      ->capture_default_str();
  app.add_option("--max-message-bytes", c->max_message_bytes,
                 "the largest request message accepted; gRPC answers a larger "
                 "one RESOURCE_EXHAUSTED. At least --max-payload-bytes + "
                 "65536")
      ->check(CLI::Range(int64_t{1}, kMaxMessageBytesLimit))
      ->capture_default_str();
  app.add_option("--max-lease-duration", c->max_lease_duration,
                 "the longest lease_duration a Dequeue or ExtendLease may ask "
                 "for (1s..24h); longer gets INVALID_ARGUMENT. A worker "
                 "holding a job longer extends its lease")
      ->capture_default_str();
}

}  // namespace

absl::StatusOr<RequestLimits> RequestLimitsFromConfig(
    const DaemonConfig& config) {
  RequestLimits limits;
  limits.max_payload_bytes = config.max_payload_bytes;
  limits.default_max_attempts = config.default_max_attempts;
  limits.max_batch_size = config.max_batch_size;
  limits.max_long_polls = config.max_long_polls;
  limits.max_message_bytes = config.max_message_bytes;
  absl::StatusOr<absl::Duration> lease =
      ParseDurationFlag("--max-lease-duration", config.max_lease_duration);
  if (!lease.ok()) return lease.status();
  limits.max_lease_duration = *lease;
  if (config.max_batch_size > kMaxBatchSizeFlag) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-batch-size: ", config.max_batch_size,
                     " is outside 1..", kMaxBatchSizeFlag));
  }
  if (config.max_long_polls > kMaxLongPollsFlag) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-long-polls: ", config.max_long_polls,
                     " is outside 1..", kMaxLongPollsFlag));
  }
  if (config.max_pending_per_queue < 0) {
    return absl::InvalidArgumentError(
        "--max-pending-per-queue: must not be negative (0: no limit)");
  }
  if (absl::Status s = ValidateRequestLimits(limits); !s.ok()) return s;
  return limits;
}

bool IsPostgresUri(const std::string& db) {
  return absl::StartsWith(db, "postgresql://") ||
         absl::StartsWith(db, "postgres://");
}

absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& flag,
                                                 const std::string& value) {
  absl::Duration d;
  if (!absl::ParseDuration(value, &d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": '", value, "' is not a duration (e.g. 24h, 90m, 30s, or 0)"));
  }
  if (d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", value, "' is negative"));
  }
  if (d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": '", value, "' is infinite; give a finite duration"));
  }
  return d;
}

int ParseDaemonConfig(int argc, const char* const* argv, DaemonConfig* config) {
  *config = DaemonConfig();
  CLI::App app{
      "adjutantd: the Adjutant durable job queue and cron scheduler, "
      "serving adjutant.v1.JobQueue over gRPC.\n"
      "Every flag may also come from the environment (ADJUTANT_<FLAG>, e.g. "
      "ADJUTANT_LISTEN) or from the --config TOML file (flag names without "
      "dashes); a flag beats the environment, which beats the file."};
  app.set_config("--config", "",
                 "read options from this TOML file (`db = \"/var/lib/x.db\"`)")
      ->envname("ADJUTANT_CONFIG");
  // A misspelled key in the file is an error, not silently ignored.
  app.allow_config_extras(CLI::config_extras_mode::error);
  AddOptions(app, config);

  std::vector<std::string> user_args;
  for (int i = 1; i < argc; ++i) user_args.emplace_back(argv[i]);
  // CLI11 lets the file win over the environment; we want the reverse, so a
  // set ADJUTANT_<FLAG> becomes a command-line argument unless the flag is
  // given there already. The file then fills only what is still unset.
  std::vector<std::string> env_args;
  for (const CLI::Option* opt : app.get_options()) {
    const std::string name = opt->get_single_name();
    if (name.empty() || name == "help") continue;
    const char* value = std::getenv(EnvName(name).c_str());
    if (value == nullptr || *value == '\0') continue;
    if (OnCommandLine(user_args, name)) continue;
    env_args.push_back(absl::StrCat("--", name, "=", value));
  }
  std::vector<std::string> args = env_args;
  args.insert(args.end(), user_args.begin(), user_args.end());
  // CLI11's vector overload wants the arguments in reverse order.
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(std::move(reversed));
  } catch (const CLI::FileError& e) {
    // CLI11's text names the file but not the option it came from.
    std::fprintf(stderr, "--config: %s\n", e.what());
    return e.get_exit_code();
  } catch (const CLI::ConfigError& e) {
    // E.g. a misspelled key: "INI was not able to parse lissen".
    std::fprintf(stderr, "--config %s: unknown key or bad entry (%s)\n",
                 app.get_config_ptr()->as<std::string>().c_str(), e.what());
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  config->config_file = app.get_config_ptr()->as<std::string>();
  return -1;
}

absl::Status ValidateDaemonConfig(const DaemonConfig& config) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (config.listen.empty() || config.listen.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen: '", config.listen, "' is not of the form HOST:PORT"));
  }
  if (IsPostgresUri(config.db)) {
    const std::string rest = config.db.substr(config.db.find("://") + 3);
    if (rest.empty()) {
      return absl::InvalidArgumentError(
          "--db: a PostgreSQL URI needs a host or database after '://'");
    }
  } else if (config.db != ":memory:") {
    if (config.db.empty()) {
      return absl::InvalidArgumentError(
          "--db: empty; give a SQLite file, \":memory:\" or a "
          "postgresql:// URI");
    }
    if (absl::StrContains(config.db, "://")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--db: '", config.db,
                       "' is a URI but only postgresql:// and postgres:// "
                       "are supported"));
    }
    const fs::path path(config.db);
    if (fs::is_directory(path, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--db: '", config.db, "' is a directory, not a database file"));
    }
    fs::path dir = path.parent_path();
    if (dir.empty()) dir = ".";
    if (!fs::is_directory(dir, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--db: the directory '", dir.string(), "' does not exist"));
    }
  }
  if (!config.port_file.empty()) {
    fs::path dir = fs::path(config.port_file).parent_path();
    if (dir.empty()) dir = ".";
    if (!fs::is_directory(dir, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--port-file: the directory '", dir.string(), "' does not exist"));
    }
  }
  for (const auto& [flag, value] :
       {std::pair<std::string, std::string>{"--retention", config.retention},
        {"--dead-retention", config.dead_retention},
        {"--shutdown-timeout", config.shutdown_timeout},
        {"--cron-fire-ahead", config.cron_fire_ahead}}) {
    if (absl::StatusOr<absl::Duration> d = ParseDurationFlag(flag, value);
        !d.ok()) {
      return d.status();
    }
  }
  if (*ParseDurationFlag("--cron-fire-ahead", config.cron_fire_ahead) >
      kMaxCronFireAhead) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cron-fire-ahead: '", config.cron_fire_ahead, "' is longer than ",
        absl::FormatDuration(kMaxCronFireAhead)));
  }
  if (absl::StatusOr<RequestLimits> limits = RequestLimitsFromConfig(config);
      !limits.ok()) {
    return limits.status();
  }
  if (config.retention_batch_size < 1 ||
      config.retention_batch_size > kMaxRetentionBatchSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("--retention-batch-size: ", config.retention_batch_size,
                     " is outside 1..", kMaxRetentionBatchSize));
  }
  if (config.cron_parallelism < 1 ||
      config.cron_parallelism > kMaxCronParallelism) {
    return absl::InvalidArgumentError(
        absl::StrCat("--cron-parallelism: ", config.cron_parallelism,
                     " is outside 1..", kMaxCronParallelism));
  }
  if (!config.metrics_listen.empty()) {
    std::string host;
    int port = 0;
    if (absl::Status s = ParseHostPort("--metrics-listen",
                                       config.metrics_listen, &host, &port);
        !s.ok()) {
      return s;
    }
  }
  if (!config.metrics_port_file.empty()) {
    if (config.metrics_listen.empty()) {
      return absl::InvalidArgumentError(
          "--metrics-port-file: needs --metrics-listen (no metrics endpoint "
          "is served without it)");
    }
    fs::path dir = fs::path(config.metrics_port_file).parent_path();
    if (dir.empty()) dir = ".";
    if (!fs::is_directory(dir, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metrics-port-file: the directory '", dir.string(),
                       "' does not exist"));
    }
  }
  if (!config.clock_offset_for_test.empty()) {
    absl::Duration offset;
    if (!absl::ParseDuration(config.clock_offset_for_test, &offset)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--clock-offset-for-test: '", config.clock_offset_for_test,
          "' is not a duration (e.g. 120s)"));
    }
  }
  if (absl::Status tls = CheckTlsFiles(
          {config.tls_cert, config.tls_key, config.tls_client_ca});
      !tls.ok()) {
    return tls;
  }
  if (!config.auth_tokens.empty()) {
    absl::StatusOr<std::unique_ptr<Authorizer>> tokens =
        Authorizer::FromFile(config.auth_tokens);
    if (!tokens.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-tokens: ", tokens.status().message()));
    }
  }
  if (!config.insecure && config.auth_tokens.empty() &&
      config.tls_client_ca.empty() && !IsLoopbackListenAddress(config.listen)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen: '", config.listen,
        "' accepts connections from other machines, but no authentication is "
        "configured; give --auth-tokens (and --tls-cert/--tls-key), or "
        "--tls-client-ca, or --insecure to serve anyone who connects"));
  }
  return absl::OkStatus();
}

bool IsLoopbackListenAddress(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:") ||
      absl::StartsWith(listen, "unix-abstract:")) {
    return true;
  }
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    // ::ffff:127.x.y.z
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

namespace {

// Appends `s` as a JSON string literal (quotes included).
void AppendJsonString(spdlog::string_view_t s, spdlog::memory_buf_t& out) {
  out.push_back('"');
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out.append(std::string_view("\\\""));
        break;
      case '\\':
        out.append(std::string_view("\\\\"));
        break;
      case '\n':
        out.append(std::string_view("\\n"));
        break;
      case '\r':
        out.append(std::string_view("\\r"));
        break;
      case '\t':
        out.append(std::string_view("\\t"));
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out.append(std::string_view(buf));
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    const absl::Time time = absl::FromChrono(msg.time);
    const std::string when =
        absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", time, absl::UTCTimeZone());
    const auto level = spdlog::level::to_string_view(msg.level);
    dest.append(std::string_view("{\"time\":"));
    AppendJsonString(when, dest);
    dest.append(std::string_view(",\"level\":"));
    AppendJsonString(level, dest);
    dest.append(std::string_view(",\"logger\":"));
    AppendJsonString(msg.logger_name, dest);
    dest.append(std::string_view(",\"message\":"));
    AppendJsonString(msg.payload, dest);
    dest.append(std::string_view("}\n"));
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

std::unique_ptr<spdlog::formatter> NewJsonLogFormatter() {
  return std::make_unique<JsonFormatter>();
}

}  // namespace adjutant
