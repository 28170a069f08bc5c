// The `adjutant` command line (cli/commands.h), run in-process against an
// in-process AdjutantServer on each store. JSON output is parsed back into
// the proto messages, so the tests check what a script would read.
#include "cli/commands.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.pb.h"
#include "adjutant/v1/scheduler.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace adjutant {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

class CommandsTest : public ServerTest {
 protected:
  std::string Address() { return absl::StrCat("127.0.0.1:", server_->port()); }

  Result Run(std::vector<std::string> args, const std::string& stdin_text = "",
             bool with_server = true) {
    if (with_server) {
      args.insert(args.begin(), {"--server", Address()});
    }
    std::istringstream in(stdin_text);
    std::ostringstream out, err;
    Result result;
    result.code = cli::RunCli(args, std::nullopt, in, out, err);
    result.out = out.str();
    result.err = err.str();
    return result;
  }

  // Runs with --json, expects success, parses the output into `T`.
  template <typename T>
  T RunJson(std::vector<std::string> args, const std::string& stdin_text = "") {
    args.insert(args.begin(), "--json");
    Result r = Run(args, stdin_text);
    EXPECT_EQ(r.code, 0) << r.err;
    T message;
    auto status = google::protobuf::util::JsonStringToMessage(r.out, &message);
    EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << r.out;
    return message;
  }
};

TEST_P(CommandsTest, EnqueueThenListShowsTheJob) {
  auto enqueued = RunJson<v1::EnqueueResponse>(
      {"enqueue", "--queue", "mail", "send", "hello", "--priority", "4",
       "--max-attempts", "2", "--idempotency-key", "k1"});
  ASSERT_FALSE(enqueued.job_id().empty());
  EXPECT_FALSE(enqueued.duplicate());
  // The same key again: nothing stored, the first id returned.
  auto again = RunJson<v1::EnqueueResponse>(
      {"enqueue", "-q", "mail", "send", "other", "-k", "k1"});
  EXPECT_EQ(again.job_id(), enqueued.job_id());
  EXPECT_TRUE(again.duplicate());

  auto list = RunJson<v1::ListJobsResponse>({"jobs", "list", "-q", "mail"});
  ASSERT_EQ(list.jobs_size(), 1);
  const v1::Job& job = list.jobs(0);
  EXPECT_EQ(job.job_id(), enqueued.job_id());
  EXPECT_EQ(job.queue(), "mail");
  EXPECT_EQ(job.job_type(), "send");
  EXPECT_EQ(job.payload(), "hello");
  EXPECT_EQ(job.priority(), 4);
  EXPECT_EQ(job.max_attempts(), 2);
  EXPECT_EQ(job.idempotency_key(), "k1");
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
}

TEST_P(CommandsTest, PayloadFromStdinOrFile) {
  auto from_stdin =
      RunJson<v1::EnqueueResponse>({"enqueue", "t", "-"}, "from stdin\n");
  EXPECT_EQ(GetJob(from_stdin.job_id()).payload(), "from stdin\n");
  auto from_flag = RunJson<v1::EnqueueResponse>(
      {"enqueue", "t", "--payload-file", "-"}, "flag stdin");
  EXPECT_EQ(GetJob(from_flag.job_id()).payload(), "flag stdin");

  const std::string path = dir_ + "/payload.bin";
  const std::string bytes("\x00\x01\xff binary", 10);
  std::ofstream(path, std::ios::binary) << bytes;
  auto from_file =
      RunJson<v1::EnqueueResponse>({"enqueue", "t", "--payload-file", path});
  EXPECT_EQ(GetJob(from_file.job_id()).payload(), bytes);

  Result both = Run({"enqueue", "t", "inline", "--payload-file", path});
  EXPECT_EQ(both.code, cli::kExitUsage);
  EXPECT_THAT(both.err, HasSubstr("--payload-file"));
  Result missing = Run({"enqueue", "t", "--payload-file", dir_ + "/nope"});
  EXPECT_EQ(missing.code, cli::kExitUsage);
  EXPECT_THAT(missing.err, HasSubstr("cannot read"));
}

TEST_P(CommandsTest, RunAtAndDelay) {
  auto at = RunJson<v1::EnqueueResponse>(
      {"enqueue", "t", "--run-at", "2027-03-04T05:06:07Z"});
  EXPECT_EQ(GetJob(at.job_id()).run_at().seconds(),
            absl::ToUnixSeconds(absl::FromCivil(
                absl::CivilSecond(2027, 3, 4, 5, 6, 7), absl::UTCTimeZone())));

  // --delay counts from the command's own clock (the real one).
  const absl::Time before = absl::Now();
  auto delayed =
      RunJson<v1::EnqueueResponse>({"enqueue", "t", "--delay", "2h"});
  const absl::Time run_at =
      absl::FromUnixSeconds(GetJob(delayed.job_id()).run_at().seconds());
  EXPECT_GE(run_at, before + absl::Hours(2) - absl::Seconds(1));
  EXPECT_LE(run_at, absl::Now() + absl::Hours(2));

  Result both = Run(
      {"enqueue", "t", "--run-at", "2027-03-04T05:06:07Z", "--delay", "1h"});
  EXPECT_EQ(both.code, cli::kExitUsage);
  EXPECT_THAT(both.err, HasSubstr("--delay"));
  Result bad_time = Run({"enqueue", "t", "--run-at", "tomorrow"});
  EXPECT_EQ(bad_time.code, cli::kExitUsage);
  EXPECT_THAT(bad_time.err,
              HasSubstr("--run-at: 'tomorrow' is not an RFC 3339"));
  Result bad_delay = Run({"enqueue", "t", "--delay", "soon"});
  EXPECT_EQ(bad_delay.code, cli::kExitUsage);
  EXPECT_THAT(bad_delay.err, HasSubstr("--delay: 'soon' is not a duration"));
  Result negative = Run({"enqueue", "t", "--delay", "-5s"});
  EXPECT_EQ(negative.code, cli::kExitUsage);
  EXPECT_THAT(negative.err, HasSubstr("negative"));
  EXPECT_EQ(RunJson<v1::ListJobsResponse>({"jobs", "list"}).jobs_size(), 2)
      << "refused commands stored nothing";
}

TEST_P(CommandsTest, DequeueAckNackExtendRequeueCancel) {
  const std::string a = Enqueue("work");
  const std::string b = Enqueue("work");
  auto leased =
      RunJson<v1::DequeueResponse>({"dequeue", "-q", "work", "-n", "2",
                                    "--lease", "1m", "--worker-id", "w1"});
  ASSERT_EQ(leased.jobs_size(), 2);
  EXPECT_EQ(leased.jobs(0).job().job_id(), a);
  EXPECT_EQ(leased.jobs(0).job().worker_id(), "w1");
  const std::string token_a = leased.jobs(0).lease_token();
  const std::string token_b = leased.jobs(1).lease_token();

  Result wrong = Run({"ack", a, "not-the-token"});
  EXPECT_EQ(wrong.code, cli::kExitRpcError);
  EXPECT_THAT(wrong.err, HasSubstr("error: FAILED_PRECONDITION"));

  auto extended =
      RunJson<v1::ExtendLeaseResponse>({"extend", a, token_a, "--lease", "5m"});
  EXPECT_EQ(extended.lease_expires_at().seconds(),
            absl::ToUnixSeconds(clock_.Now() + absl::Minutes(5)));

  Result acked = Run({"ack", a, token_a});
  EXPECT_EQ(acked.code, 0) << acked.err;
  EXPECT_THAT(acked.out, HasSubstr("acked " + a));
  EXPECT_EQ(GetJob(a).state(), v1::JOB_STATE_SUCCEEDED);

  auto nacked = RunJson<v1::NackResponse>(
      {"nack", b, token_b, "--error", "boom", "--dead"});
  EXPECT_EQ(nacked.job().state(), v1::JOB_STATE_DEAD);
  EXPECT_EQ(nacked.job().last_error(), "boom");

  auto requeued = RunJson<v1::Job>({"jobs", "requeue", b});
  EXPECT_EQ(requeued.state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(requeued.attempts(), 0);
  auto cancelled = RunJson<v1::Job>({"jobs", "cancel", b});
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);

  Result empty = Run({"dequeue", "-q", "work"});
  EXPECT_EQ(empty.code, 0);
  EXPECT_THAT(empty.out, HasSubstr("no job available"));

  Result human = Run({"jobs", "get", a});
  EXPECT_EQ(human.code, 0);
  EXPECT_THAT(human.out, HasSubstr("SUCCEEDED"));
  Result unknown = Run({"jobs", "get", "no-such-job"});
  EXPECT_EQ(unknown.code, cli::kExitRpcError);
  EXPECT_THAT(unknown.err, HasSubstr("error: NOT_FOUND"));
}

TEST_P(CommandsTest, JobsListPagesThroughEverythingAndFilters) {
  std::vector<std::string> ids;
  for (int i = 0; i < 23; ++i) ids.push_back(Enqueue(i % 2 ? "odd" : "even"));
  auto all =
      RunJson<v1::ListJobsResponse>({"jobs", "list", "--page-size", "5"});
  ASSERT_EQ(all.jobs_size(), 23);
  for (int i = 0; i < 23; ++i) EXPECT_EQ(all.jobs(i).job_id(), ids[i]);
  EXPECT_TRUE(all.next_page_token().empty());

  EXPECT_EQ(RunJson<v1::ListJobsResponse>(
                {"jobs", "list", "-q", "odd", "--page-size", "4"})
                .jobs_size(),
            11);
  Lease("even", absl::Seconds(30), 3);
  EXPECT_EQ(RunJson<v1::ListJobsResponse>({"jobs", "list", "--state", "leased"})
                .jobs_size(),
            3);
  EXPECT_EQ(RunJson<v1::ListJobsResponse>(
                {"jobs", "list", "-s", "JOB_STATE_PENDING", "-q", "even"})
                .jobs_size(),
            9);

  Result bad = Run({"jobs", "list", "--state", "sleeping"});
  EXPECT_EQ(bad.code, cli::kExitUsage);
  EXPECT_THAT(bad.err, HasSubstr("--state: unknown value 'sleeping' (one of "
                                 "pending, leased, succeeded, dead, "
                                 "cancelled)"));

  // Human output: one aligned row per job under a header.
  Result table = Run({"jobs", "list", "-q", "odd"});
  ASSERT_EQ(table.code, 0) << table.err;
  std::vector<std::string> lines =
      absl::StrSplit(table.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 12u);
  const size_t state_column = lines[0].find("STATE");
  ASSERT_NE(state_column, std::string::npos);
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].substr(state_column, 7), "PENDING") << lines[i];
  }
}

TEST_P(CommandsTest, CronCommands) {
  auto cron =
      RunJson<v1::Cron>({"cron", "register", "morning", "0 9 * * MON-FRI",
                         "--type", "report", "--queue", "reports", "--timezone",
                         "Europe/Paris", "--misfire", "fire-all", "--overlap",
                         "skip", "--catchup-window", "2h", "--payload", "p"});
  EXPECT_EQ(cron.name(), "morning");
  EXPECT_EQ(cron.timezone(), "Europe/Paris");
  EXPECT_EQ(cron.misfire_policy(), v1::MISFIRE_POLICY_FIRE_ALL);
  EXPECT_EQ(cron.overlap_policy(), v1::OVERLAP_POLICY_SKIP);
  EXPECT_EQ(cron.catchup_window().seconds(), 7200);
  EXPECT_EQ(cron.job().payload(), "p");
  EXPECT_TRUE(cron.has_next_fire_time());

  auto paused = RunJson<v1::Cron>({"cron", "pause", "morning"});
  EXPECT_TRUE(paused.paused());
  EXPECT_EQ(paused.misfire_policy(), v1::MISFIRE_POLICY_FIRE_ALL)
      << "pause keeps the rest of the definition";
  EXPECT_EQ(paused.job().queue(), "reports");
  auto resumed = RunJson<v1::Cron>({"cron", "resume", "morning"});
  EXPECT_FALSE(resumed.paused());
  EXPECT_TRUE(resumed.has_next_fire_time());

  RunJson<v1::Cron>({"cron", "register", "hourly", "@hourly", "-t", "x"});
  auto list = RunJson<v1::ListCronsResponse>({"cron", "list"});
  ASSERT_EQ(list.crons_size(), 2);
  EXPECT_EQ(list.crons(0).name(), "hourly");
  EXPECT_EQ(RunJson<v1::Cron>({"cron", "get", "morning"}).schedule(),
            "0 9 * * MON-FRI");

  EXPECT_EQ(Run({"cron", "rm", "hourly"}).code, 0);
  Result gone = Run({"cron", "get", "hourly"});
  EXPECT_EQ(gone.code, cli::kExitRpcError);
  EXPECT_THAT(gone.err, HasSubstr("NOT_FOUND"));

  Result bad_policy = Run(
      {"cron", "register", "x", "@daily", "-t", "x", "--misfire", "sometimes"});
  EXPECT_EQ(bad_policy.code, cli::kExitUsage);
  EXPECT_THAT(bad_policy.err, HasSubstr("--misfire: unknown value"));
  Result bad_expr = Run({"cron", "register", "x", "61 * * * *", "-t", "x"});
  EXPECT_EQ(bad_expr.code, cli::kExitRpcError);
  EXPECT_THAT(bad_expr.err, HasSubstr("INVALID_ARGUMENT"));
}

TEST_P(CommandsTest, CronPreviewInAZone) {
  // Friday 2 January 2026 is in winter time: 09:00 in Paris is 08:00 UTC.
  auto preview = RunJson<v1::PreviewCronResponse>(
      {"cron", "preview", "0 9 * * MON-FRI", "--timezone", "Europe/Paris",
       "--after", "2026-01-02T00:00:00Z", "--count", "3"});
  ASSERT_EQ(preview.fire_times_size(), 3);
  const absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_EQ(preview.fire_times(0).seconds(),
            absl::ToUnixSeconds(
                absl::FromCivil(absl::CivilSecond(2026, 1, 2, 8, 0, 0), utc)));
  EXPECT_EQ(preview.fire_times(1).seconds(),
            absl::ToUnixSeconds(
                absl::FromCivil(absl::CivilSecond(2026, 1, 5, 8, 0, 0), utc)));
  EXPECT_EQ(preview.fire_times(2).seconds(),
            absl::ToUnixSeconds(
                absl::FromCivil(absl::CivilSecond(2026, 1, 6, 8, 0, 0), utc)));

  Result human = Run({"cron", "preview", "0 9 * * MON-FRI", "-z",
                      "Europe/Paris", "--after", "2026-01-02T00:00:00Z"});
  EXPECT_EQ(human.code, 0) << human.err;
  EXPECT_THAT(human.out, HasSubstr("2026-01-02T08:00:00Z"));
  EXPECT_THAT(human.out, HasSubstr("2026-01-02 09:00:00 Fri CET"));

  Result zone = Run({"cron", "preview", "@daily", "-z", "Mars/Olympus"});
  EXPECT_EQ(zone.code, cli::kExitRpcError);
  EXPECT_THAT(zone.err, HasSubstr("INVALID_ARGUMENT"));
}

TEST_P(CommandsTest, LeaderAndStats) {
  auto leadership =
      RunJson<v1::Leadership>({"leader", "set", "--term", "3", "--ttl", "1m"});
  EXPECT_TRUE(leadership.leader());
  EXPECT_EQ(leadership.term(), 3u);
  EXPECT_TRUE(leadership.has_expires_at());
  Result lower = Run({"leader", "set", "--term", "2"});
  EXPECT_EQ(lower.code, cli::kExitRpcError);
  EXPECT_THAT(lower.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_TRUE(RunJson<v1::Leadership>({"leader", "get"}).leader());
  EXPECT_FALSE(
      RunJson<v1::Leadership>({"leader", "set", "--term", "3", "--revoke"})
          .leader());

  Enqueue("alpha");
  Enqueue("alpha");
  Enqueue("beta");
  auto stats = RunJson<v1::GetStatsResponse>({"stats"});
  ASSERT_EQ(stats.queues_size(), 2);
  EXPECT_EQ(stats.queues(0).queue(), "alpha");
  EXPECT_EQ(stats.queues(0).pending(), 2);
  EXPECT_EQ(stats.queues(1).pending(), 1);
  EXPECT_EQ(stats.leadership().term(), 3u);

  Result human = Run({"stats"});
  ASSERT_EQ(human.code, 0) << human.err;
  EXPECT_THAT(human.out, HasSubstr("QUEUE"));
  EXPECT_THAT(human.out, HasSubstr("alpha"));
  EXPECT_THAT(human.out, HasSubstr("schedules"));
}

TEST_P(CommandsTest, ServerFromTheEnvironmentUnlessTheFlagSaysOtherwise) {
  std::istringstream in;
  std::ostringstream out, err;
  EXPECT_EQ(cli::RunCli({"--json", "stats"}, Address(), in, out, err), 0)
      << err.str();
  std::ostringstream out2, err2;
  // --server wins over $ADJUTANT_SERVER (here a port nothing listens on).
  EXPECT_EQ(cli::RunCli({"--server", Address(), "stats"}, "127.0.0.1:1", in,
                        out2, err2),
            0)
      << err2.str();
  std::ostringstream out3, err3;
  EXPECT_EQ(
      cli::RunCli({"--timeout", "2s", "stats"}, "127.0.0.1:1", in, out3, err3),
      cli::kExitRpcError);
  EXPECT_THAT(err3.str(), HasSubstr("error: UNAVAILABLE"));
}

TEST_P(CommandsTest, ABadClientSettingNamesWhereItCameFrom) {
  std::istringstream in;
  // A token with a space: from $ADJUTANT_TOKEN, the error names the
  // variable; from --token, the flag (which wins over the variable).
  cli::CliEnvironment env;
  env.server = Address();
  env.token = "bad token";
  std::ostringstream out, err;
  EXPECT_EQ(cli::RunCli({"stats"}, env, in, out, err), cli::kExitUsage);
  EXPECT_THAT(err.str(), HasSubstr("adjutant: $ADJUTANT_TOKEN: "));
  EXPECT_THAT(err.str(), Not(HasSubstr("--token")));

  std::ostringstream out2, err2;
  EXPECT_EQ(cli::RunCli({"--token", "also bad", "stats"}, env, in, out2, err2),
            cli::kExitUsage);
  EXPECT_THAT(err2.str(), HasSubstr("adjutant: --token: "));

  // A key without its certificate, both from the environment.
  cli::CliEnvironment tls_env;
  tls_env.server = Address();
  tls_env.tls_key = "/nonexistent/key.pem";
  std::ostringstream out3, err3;
  EXPECT_EQ(cli::RunCli({"--tls", "stats"}, tls_env, in, out3, err3),
            cli::kExitUsage);
  EXPECT_THAT(err3.str(), HasSubstr("$ADJUTANT_TLS_KEY"));
  EXPECT_THAT(err3.str(), Not(HasSubstr("tls_key_file")));
}

TEST_P(CommandsTest, HelpAndBadArguments) {
  Result help = Run({"--help"}, "", /*with_server=*/false);
  EXPECT_EQ(help.code, 0);
  for (const char* command :
       {"enqueue", "dequeue", "ack", "nack", "extend", "jobs", "cron", "leader",
        "stats", "--server", "--json"}) {
    EXPECT_THAT(help.out, HasSubstr(command));
  }
  Result cron_help = Run({"cron", "--help"}, "", false);
  EXPECT_EQ(cron_help.code, 0);
  for (const char* command :
       {"register", "list", "get", "rm", "pause", "resume", "preview"}) {
    EXPECT_THAT(cron_help.out, HasSubstr(command));
  }
  Result enqueue_help = Run({"enqueue", "--help"}, "", false);
  EXPECT_EQ(enqueue_help.code, 0);
  for (const char* option :
       {"--queue", "--payload-file", "--run-at", "--delay", "--priority",
        "--max-attempts", "--idempotency-key"}) {
    EXPECT_THAT(enqueue_help.out, HasSubstr(option));
  }

  Result none = Run({}, "", false);
  EXPECT_EQ(none.code, cli::kExitUsage);
  EXPECT_THAT(none.err, HasSubstr("a command is required"));
  Result unknown = Run({"frobnicate"});
  EXPECT_EQ(unknown.code, cli::kExitUsage);
  EXPECT_THAT(unknown.err, HasSubstr("frobnicate"));
  Result no_type = Run({"enqueue"});
  EXPECT_EQ(no_type.code, cli::kExitUsage);
  EXPECT_THAT(no_type.err, HasSubstr("type"));
  Result bad_number = Run({"enqueue", "t", "--priority", "high"});
  EXPECT_EQ(bad_number.code, cli::kExitUsage);
  EXPECT_THAT(bad_number.err, HasSubstr("--priority"));
  Result bad_timeout = Run({"--timeout", "0s", "stats"});
  EXPECT_EQ(bad_timeout.code, cli::kExitUsage);
  EXPECT_THAT(bad_timeout.err, HasSubstr("--timeout"));
  // The server's own INVALID_ARGUMENT: code 1, the field named.
  Result server_refused = Run({"enqueue", "", "x"});
  EXPECT_EQ(server_refused.code, cli::kExitRpcError);
  EXPECT_THAT(server_refused.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(server_refused.err, HasSubstr("job_type"));
  EXPECT_EQ(RunJson<v1::ListJobsResponse>({"jobs", "list"}).jobs_size(), 0);
}

INSTANTIATE_TEST_SUITE_P(Stores, CommandsTest,
                         ::testing::ValuesIn(AllStoreBackends()),
                         CommandsTest::Name);

}  // namespace
}  // namespace adjutant
