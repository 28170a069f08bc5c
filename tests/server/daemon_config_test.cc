// DaemonConfig: flags, ADJUTANT_* environment and the --config TOML file,
// their precedence, validation, and the JSON log formatter.
#include "server/daemon_config.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/scheduler.h"
#include "server/server.h"
#include "spdlog/details/log_msg.h"
#include "storage/postgres_job_store.h"

namespace adjutant {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class DaemonConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-config-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const std::string& name : set_env_) unsetenv(name.c_str());
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void SetEnv(const std::string& name, const std::string& value) {
    setenv(name.c_str(), value.c_str(), 1);
    set_env_.push_back(name);
  }

  std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  // Parses `args` (without the program name); returns ParseDaemonConfig's
  // result.
  int Parse(std::vector<std::string> args, DaemonConfig* config) {
    args.insert(args.begin(), "adjutantd");
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    return ParseDaemonConfig(static_cast<int>(argv.size()), argv.data(),
                             config);
  }

  std::string dir_;
  std::vector<std::string> set_env_;
};

TEST_F(DaemonConfigTest, DefaultsWithoutAnything) {
  DaemonConfig config;
  config.listen = "changed";
  ASSERT_EQ(Parse({}, &config), -1);
  const DaemonConfig defaults;
  EXPECT_EQ(config.listen, defaults.listen);
  EXPECT_EQ(config.db, defaults.db);
  EXPECT_EQ(config.log_format, "text");
  EXPECT_FALSE(config.check_config);
}

// The daemon's defaults are the libraries' defaults.
TEST_F(DaemonConfigTest, DefaultsMatchTheLibraries) {
  const DaemonConfig config;
  const AdjutantServerConfig server;
  const PostgresOptions postgres;
  EXPECT_EQ(config.listen, server.listen_address);
  EXPECT_EQ(config.executor_threads, server.executor_threads);
  EXPECT_EQ(config.max_payload_bytes, server.limits.max_payload_bytes);
  EXPECT_EQ(config.default_max_attempts, server.limits.default_max_attempts);
  EXPECT_EQ(config.pg_pool_size, postgres.pool_size);
  EXPECT_EQ(config.pg_schema, postgres.schema);
  EXPECT_EQ(*ParseDurationFlag("--retention", config.retention),
            server.retention.finished);
  EXPECT_EQ(*ParseDurationFlag("--dead-retention", config.dead_retention),
            server.retention.dead);
  EXPECT_EQ(config.retention_batch_size, server.retention.batch_size);
  EXPECT_EQ(*ParseDurationFlag("--shutdown-timeout", config.shutdown_timeout),
            server.shutdown_grace);
  EXPECT_EQ(config.cron_parallelism, server.scheduler.cron_parallelism);
  EXPECT_EQ(*ParseDurationFlag("--cron-fire-ahead", config.cron_fire_ahead),
            server.scheduler.fire_ahead);
}

TEST_F(DaemonConfigTest, CronParallelismFlag) {
  DaemonConfig config;
  ASSERT_EQ(Parse({}, &config), -1);
  EXPECT_EQ(config.cron_parallelism, 64);
  SetEnv("ADJUTANT_CRON_PARALLELISM", "8");
  ASSERT_EQ(Parse({}, &config), -1);
  EXPECT_EQ(config.cron_parallelism, 8);
  ASSERT_EQ(Parse({"--cron-parallelism", "1"}, &config), -1);
  EXPECT_EQ(config.cron_parallelism, 1);
  config.db = ":memory:";
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());

  EXPECT_GT(Parse({"--cron-parallelism", "0"}, &config), 0);
  EXPECT_GT(Parse({"--cron-parallelism", "1025"}, &config), 0);
  config.cron_parallelism = 0;
  const absl::Status s = ValidateDaemonConfig(config);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "--cron-parallelism")) << s;
}

TEST_F(DaemonConfigTest, CronFireAheadFlag) {
  DaemonConfig config;
  config.db = ":memory:";
  ASSERT_EQ(Parse({}, &config), -1);
  EXPECT_EQ(config.cron_fire_ahead, "250ms");
  SetEnv("ADJUTANT_CRON_FIRE_AHEAD", "0");
  ASSERT_EQ(Parse({}, &config), -1);
  EXPECT_EQ(config.cron_fire_ahead, "0");
  ASSERT_EQ(Parse({"--cron-fire-ahead", "1m"}, &config), -1);
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());
  EXPECT_EQ(*ParseDurationFlag("--cron-fire-ahead", config.cron_fire_ahead),
            kMaxCronFireAhead);

  for (const char* bad : {"61s", "-1s", "soon", "inf"}) {
    SCOPED_TRACE(bad);
    config.cron_fire_ahead = bad;
    const absl::Status s = ValidateDaemonConfig(config);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(s.message(), HasSubstr("--cron-fire-ahead"));
  }
  config.cron_fire_ahead = "61s";
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("is longer than 1m"));
}

TEST_F(DaemonConfigTest, RetentionAndShutdownFlags) {
  DaemonConfig config;
  ASSERT_EQ(Parse({}, &config), -1);
  EXPECT_EQ(config.retention, "24h");
  EXPECT_EQ(config.dead_retention, "168h");
  EXPECT_EQ(config.retention_batch_size, 500);
  EXPECT_EQ(config.shutdown_timeout, "20s");

  const std::string file = WriteFile("r.toml", "dead-retention = \"72h\"\n");
  SetEnv("ADJUTANT_RETENTION", "90m");
  ASSERT_EQ(Parse({"--config", file, "--shutdown-timeout", "5s",
                   "--retention-batch-size", "50"},
                  &config),
            -1);
  EXPECT_EQ(config.retention, "90m");
  EXPECT_EQ(config.dead_retention, "72h");
  EXPECT_EQ(config.shutdown_timeout, "5s");
  EXPECT_EQ(config.retention_batch_size, 50);
  config.db = ":memory:";
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());
  EXPECT_EQ(*ParseDurationFlag("--retention", config.retention),
            absl::Minutes(90));
  // 0 is allowed: keep forever (retention), cancel at once (shutdown).
  EXPECT_EQ(*ParseDurationFlag("--retention", "0"), absl::ZeroDuration());

  EXPECT_GT(Parse({"--retention-batch-size", "0"}, &config), 0);
  EXPECT_GT(Parse({"--retention-batch-size", "100001"}, &config), 0);
}

TEST_F(DaemonConfigTest, ValidateDurationFlags) {
  for (const char* flag :
       {"--retention", "--dead-retention", "--shutdown-timeout"}) {
    SCOPED_TRACE(flag);
    DaemonConfig config;
    config.db = ":memory:";
    std::string* field = std::string(flag) == "--retention" ? &config.retention
                         : std::string(flag) == "--dead-retention"
                             ? &config.dead_retention
                             : &config.shutdown_timeout;
    *field = "a day";
    absl::Status status = ValidateDaemonConfig(config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr(flag));
    EXPECT_THAT(status.message(), HasSubstr("'a day' is not a duration"));
    *field = "-1h";
    EXPECT_THAT(ValidateDaemonConfig(config).message(),
                HasSubstr(absl::StrCat(flag, ": '-1h' is negative")));
    *field = "inf";
    EXPECT_THAT(ValidateDaemonConfig(config).message(),
                HasSubstr("is infinite"));
    *field = "0";
    EXPECT_TRUE(ValidateDaemonConfig(config).ok());
  }
  DaemonConfig config;
  config.db = ":memory:";
  config.retention_batch_size = 0;
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("--retention-batch-size: 0 is outside 1..100000"));
}

TEST_F(DaemonConfigTest, FileThenEnvironmentThenFlag) {
  const std::string file = WriteFile("adjutantd.toml",
                                     "listen = \"127.0.0.1:1111\"\n"
                                     "db = \"/tmp/from-file.db\"\n"
                                     "executor-threads = 7\n"
                                     "log-format = \"json\"\n");
  SetEnv("ADJUTANT_LISTEN", "127.0.0.1:2222");
  SetEnv("ADJUTANT_EXECUTOR_THREADS", "9");
  DaemonConfig config;
  ASSERT_EQ(Parse({"--config", file, "--executor-threads", "11"}, &config), -1);
  EXPECT_EQ(config.config_file, file);
  EXPECT_EQ(config.db, "/tmp/from-file.db");   // file only
  EXPECT_EQ(config.log_format, "json");        // file only
  EXPECT_EQ(config.listen, "127.0.0.1:2222");  // env beats file
  EXPECT_EQ(config.executor_threads, 11);      // flag beats env and file
}

TEST_F(DaemonConfigTest, ConfigFileFromEnvironment) {
  const std::string file = WriteFile("a.toml", "pg-pool-size = 12\n");
  SetEnv("ADJUTANT_CONFIG", file);
  DaemonConfig config;
  ASSERT_EQ(Parse({}, &config), -1);
  EXPECT_EQ(config.pg_pool_size, 12);
}

TEST_F(DaemonConfigTest, BadValuesAreRejected) {
  DaemonConfig config;
  EXPECT_GT(Parse({"--log-format", "xml"}, &config), 0);
  EXPECT_GT(Parse({"--executor-threads", "0"}, &config), 0);
  EXPECT_GT(Parse({"--config", dir_ + "/missing.toml"}, &config), 0);
  SetEnv("ADJUTANT_PG_POOL_SIZE", "lots");
  EXPECT_GT(Parse({}, &config), 0);
}

TEST_F(DaemonConfigTest, BadValueInFileIsRejected) {
  const std::string file = WriteFile("bad.toml", "log-level = \"loud\"\n");
  DaemonConfig config;
  EXPECT_GT(Parse({"--config", file}, &config), 0);
}

TEST_F(DaemonConfigTest, UnknownKeyInFileIsRejected) {
  const std::string file = WriteFile("typo.toml", "lissen = \"x:1\"\n");
  DaemonConfig config;
  EXPECT_GT(Parse({"--config", file}, &config), 0);
}

TEST_F(DaemonConfigTest, ValidateDb) {
  DaemonConfig config;
  config.db = dir_ + "/adjutant.db";
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());
  config.db = ":memory:";
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());
  config.db = "postgresql://localhost/adjutant";
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());

  config.db = "postgresql://";
  EXPECT_THAT(ValidateDaemonConfig(config).message(), HasSubstr("--db"));
  config.db = "mysql://host/x";
  EXPECT_THAT(ValidateDaemonConfig(config).message(), HasSubstr("--db"));
  config.db = dir_;
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("is a directory"));
  config.db = dir_ + "/no/such/dir/a.db";
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("does not exist"));
  config.db = "";
  EXPECT_THAT(ValidateDaemonConfig(config).message(), HasSubstr("--db"));
}

TEST_F(DaemonConfigTest, ValidateOtherFields) {
  DaemonConfig config;
  config.db = ":memory:";
  config.listen = "nocolon";
  EXPECT_THAT(ValidateDaemonConfig(config).message(), HasSubstr("--listen"));
  config.listen = "127.0.0.1:0";
  config.clock_offset_for_test = "soon";
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("--clock-offset-for-test"));
  config.clock_offset_for_test = "";
  config.port_file = dir_ + "/missing/port";
  EXPECT_THAT(ValidateDaemonConfig(config).message(), HasSubstr("--port-file"));
}

TEST_F(DaemonConfigTest, AccessControlFlags) {
  const std::string tokens =
      WriteFile("tokens", "ops admin admin-token-0123456789\n");
  SetEnv("ADJUTANT_AUTH_TOKENS", tokens);
  DaemonConfig config;
  ASSERT_EQ(Parse({"--tls-cert", "c.pem", "--tls-key", "k.pem",
                   "--tls-client-ca", "ca.pem", "--insecure"},
                  &config),
            -1);
  EXPECT_EQ(config.tls_cert, "c.pem");
  EXPECT_EQ(config.tls_key, "k.pem");
  EXPECT_EQ(config.tls_client_ca, "ca.pem");
  EXPECT_EQ(config.auth_tokens, tokens);
  EXPECT_TRUE(config.insecure);
  const DaemonConfig defaults;
  EXPECT_EQ(defaults.tls_cert, "");
  EXPECT_EQ(defaults.auth_tokens, "");
  EXPECT_FALSE(defaults.insecure);
}

TEST_F(DaemonConfigTest, LoopbackAddresses) {
  for (const char* listen :
       {"127.0.0.1:50051", "127.1.2.3:0", "localhost:50051", "LOCALHOST:1",
        "[::1]:50051", "::1:50051", "[::ffff:127.0.0.1]:1", "unix:/run/a.sock",
        "unix-abstract:adjutant"}) {
    EXPECT_TRUE(IsLoopbackListenAddress(listen)) << listen;
  }
  for (const char* listen :
       {"0.0.0.0:50051", "[::]:50051", ":50051", "10.0.0.1:50051",
        "128.0.0.1:1", "example.com:50051", "[::2]:1", "[::ffff:10.0.0.1]:1",
        "localhost.example.com:1", "nocolon"}) {
    EXPECT_FALSE(IsLoopbackListenAddress(listen)) << listen;
  }
}

TEST_F(DaemonConfigTest, APublicAddressNeedsAuthenticationOrInsecure) {
  DaemonConfig config;
  config.db = ":memory:";
  config.listen = "0.0.0.0:0";
  absl::Status status = ValidateDaemonConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr("--listen: '0.0.0.0:0'"),
                    HasSubstr("--auth-tokens"), HasSubstr("--insecure")));
  config.listen = "[::]:50051";
  EXPECT_THAT(ValidateDaemonConfig(config).message(), HasSubstr("--listen"));

  config.insecure = true;
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());
  config.insecure = false;
  config.auth_tokens =
      WriteFile("tokens", "ops admin admin-token-0123456789\n");
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());
  config.listen = "127.0.0.1:0";
  config.auth_tokens = "";
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());
}

TEST_F(DaemonConfigTest, ABadTokenFileIsNamedWithItsLine) {
  DaemonConfig config;
  config.db = ":memory:";
  config.auth_tokens =
      WriteFile("tokens",
                "ops admin admin-token-0123456789\nweb janitor "
                "web-token-0123456789\n");
  absl::Status status = ValidateDaemonConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr(absl::StrCat("--auth-tokens: ", config.auth_tokens,
                                     ":2: unknown role 'janitor'")));
  config.auth_tokens = dir_ + "/missing";
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("--auth-tokens: " + dir_ + "/missing"));
}

TEST_F(DaemonConfigTest, TlsFlagsAreChecked) {
  DaemonConfig config;
  config.db = ":memory:";
  config.tls_cert = dir_ + "/server.crt";
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("--tls-cert: given without --tls-key"));
  config.tls_key = dir_ + "/server.key";
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("--tls-cert: cannot read"));
  config.tls_cert = config.tls_key = "";
  config.tls_client_ca = dir_ + "/ca.crt";
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("--tls-client-ca: requires --tls-cert"));
}

TEST_F(DaemonConfigTest, MetricsFlags) {
  DaemonConfig config;
  ASSERT_EQ(Parse({}, &config), -1);
  EXPECT_EQ(config.metrics_listen, "");  // off by default
  EXPECT_EQ(config.metrics_listen, AdjutantServerConfig().metrics_listen);
  ASSERT_EQ(Parse({"--metrics-listen", "0.0.0.0:9464", "--metrics-port-file",
                   dir_ + "/metrics.port"},
                  &config),
            -1);
  EXPECT_EQ(config.metrics_listen, "0.0.0.0:9464");
  config.db = ":memory:";
  EXPECT_TRUE(ValidateDaemonConfig(config).ok());

  for (const char* bad : {"9464", "host:", ":9464", "host:99999"}) {
    config.metrics_listen = bad;
    const absl::Status s = ValidateDaemonConfig(config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("--metrics-listen")) << bad;
  }
  config.metrics_listen = "127.0.0.1:0";
  config.metrics_port_file = dir_ + "/missing/metrics.port";
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("--metrics-port-file"));
  config.metrics_listen = "";
  config.metrics_port_file = dir_ + "/metrics.port";
  EXPECT_THAT(ValidateDaemonConfig(config).message(),
              HasSubstr("needs --metrics-listen"));
}

TEST_F(DaemonConfigTest, LimitFlagsDefaultsMatchTheLibraries) {
  DaemonConfig config;
  ASSERT_EQ(Parse({}, &config), -1);
  const RequestLimits limits;
  EXPECT_EQ(config.max_batch_size, limits.max_batch_size);
  EXPECT_EQ(config.max_long_polls, limits.max_long_polls);
  EXPECT_EQ(config.max_message_bytes, limits.max_message_bytes);
  EXPECT_EQ(
      *ParseDurationFlag("--max-lease-duration", config.max_lease_duration),
      limits.max_lease_duration);
  EXPECT_EQ(config.max_pending_per_queue, 10'000'000);
  EXPECT_GE(config.max_long_polls, 10000);
  EXPECT_GE(config.max_message_bytes,
            config.max_payload_bytes + kMessageOverheadBytes);
  absl::StatusOr<RequestLimits> from = RequestLimitsFromConfig(config);
  ASSERT_TRUE(from.ok()) << from.status();
  EXPECT_EQ(from->max_payload_bytes, config.max_payload_bytes);
}

TEST_F(DaemonConfigTest, LimitFlagsAreParsedAndChecked) {
  DaemonConfig config;
  ASSERT_EQ(Parse({"--max-batch-size", "50", "--max-pending-per-queue", "0",
                   "--max-long-polls", "7", "--max-message-bytes", "2000000",
                   "--max-lease-duration", "90m"},
                  &config),
            -1);
  config.db = ":memory:";
  ASSERT_TRUE(ValidateDaemonConfig(config).ok());
  absl::StatusOr<RequestLimits> limits = RequestLimitsFromConfig(config);
  ASSERT_TRUE(limits.ok()) << limits.status();
  EXPECT_EQ(limits->max_batch_size, 50);
  EXPECT_EQ(limits->max_long_polls, 7);
  EXPECT_EQ(limits->max_message_bytes, 2000000);
  EXPECT_EQ(limits->max_lease_duration, absl::Minutes(90));
  EXPECT_EQ(config.max_pending_per_queue, 0);

  // Out of range at parse time: CLI11 names the flag.
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--max-long-polls", "0"},
        {"--max-batch-size", "100001"},
        {"--max-pending-per-queue", "-1"},
        {"--max-message-bytes", "2147483648"}}) {
    DaemonConfig c;
    testing::internal::CaptureStderr();
    EXPECT_GT(Parse(bad, &c), 0) << bad[0];
    EXPECT_THAT(testing::internal::GetCapturedStderr(), HasSubstr(bad[0]));
  }
  // Inconsistent or malformed: ValidateDaemonConfig names the flag.
  const auto invalid = [&](DaemonConfig c, const std::string& flag,
                           const std::string& reason) {
    const absl::Status s = ValidateDaemonConfig(c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << flag;
    EXPECT_THAT(s.message(), AllOf(HasSubstr(flag), HasSubstr(reason)));
  };
  DaemonConfig c = config;
  c.max_message_bytes = c.max_payload_bytes;
  invalid(c, "--max-message-bytes", "too small");
  c = config;
  c.max_payload_bytes = 8 << 20;
  c.max_message_bytes = (8 << 20) + kMessageOverheadBytes - 1;
  invalid(c, "--max-message-bytes", "--max-payload-bytes");
  c.max_message_bytes = (8 << 20) + kMessageOverheadBytes;
  EXPECT_TRUE(ValidateDaemonConfig(c).ok());
  c = config;
  c.max_lease_duration = "25h";
  invalid(c, "--max-lease-duration", "outside 1s..24h");
  c.max_lease_duration = "500ms";
  invalid(c, "--max-lease-duration", "outside 1s..24h");
  c.max_lease_duration = "a while";
  invalid(c, "--max-lease-duration", "not a duration");
}

TEST(JsonLogFormatterTest, EscapesTheMessage) {
  auto formatter = NewJsonLogFormatter();
  spdlog::details::log_msg msg("adjutantd", spdlog::level::warn,
                               "say \"hi\"\\\n\tnow\x01");
  spdlog::memory_buf_t out;
  formatter->format(msg, out);
  const std::string line(out.data(), out.size());
  EXPECT_THAT(line, HasSubstr("\"level\":\"warning\""));
  EXPECT_THAT(line, HasSubstr("\"logger\":\"adjutantd\""));
  EXPECT_THAT(line,
              HasSubstr("\"message\":\"say \\\"hi\\\"\\\\\\n\\tnow\\u0001\"}"));
  EXPECT_THAT(line, ::testing::StartsWith("{\"time\":\""));
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
}

}  // namespace
}  // namespace adjutant
