// DaemonConfig: flags, ADJUTANT_* environment and the --config TOML file,
// their precedence, validation, and the JSON log formatter.
#include "server/daemon_config.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "spdlog/details/log_msg.h"
#include "storage/postgres_job_store.h"

namespace adjutant {
namespace {

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
