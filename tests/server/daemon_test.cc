// The real adjutantd binary (ADJUTANTD_PATH, a compile definition) as a
// process: flags, lifecycle, a restart on the same SQLite file.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

#ifndef ADJUTANTD_PATH
#error "ADJUTANTD_PATH must name the adjutantd binary"
#endif

namespace adjutant {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// One adjutantd process; stdout and stderr go to a log file in `dir`.
class Daemon {
 public:
  Daemon(std::string dir, std::vector<std::string> args)
      : dir_(std::move(dir)), args_(std::move(args)) {
    static int counter = 0;
    log_path_ = absl::StrCat(dir_, "/adjutantd-", ++counter, ".log");
  }
  ~Daemon() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Starts the process without waiting for anything.
  void Spawn() {
    std::vector<std::string> argv_storage = {ADJUTANTD_PATH};
    argv_storage.insert(argv_storage.end(), args_.begin(), args_.end());
    std::vector<char*> argv;
    for (std::string& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(log, 0);
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {  // only async-signal-safe calls from here
      dup2(log, 1);
      dup2(log, 2);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(log);
  }

  // Spawns the daemon with --port-file and waits until it has written the
  // port (real time: this waits for another process, not for time to pass).
  void Start() {
    const std::string port_file = absl::StrCat(log_path_, ".port");
    std::filesystem::remove(port_file);
    args_.push_back("--port-file");
    args_.push_back(port_file);
    ASSERT_NO_FATAL_FAILURE(Spawn());
    const auto give_up =
        std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!std::filesystem::exists(port_file)) {
      int status;
      ASSERT_EQ(waitpid(pid_, &status, WNOHANG), 0)
          << "adjutantd exited early:\n"
          << Log();
      ASSERT_LT(std::chrono::steady_clock::now(), give_up) << Log();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    port_ = std::stoi(ReadFile(port_file));
    ASSERT_GT(port_, 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::JobQueue::NewStub(channel_);
  }

  // Sends `signal` and returns the exit status (-1 if killed by a signal).
  int Stop(int signal) {
    // Hang up first. An idle synchronous C++ client notices the server's
    // GOAWAY only when its backup poller runs (every 5 s), and the server's
    // graceful shutdown waits for it.
    stub_.reset();
    channel_.reset();
    kill(pid_, signal);
    return Wait();
  }

  void Signal(int signal) { kill(pid_, signal); }
  // Drops this object's connection (see Stop()).
  void HangUp() {
    stub_.reset();
    channel_.reset();
  }

  // Waits (in real time: for the other process) until the log holds `text`.
  void AwaitLog(const std::string& text) {
    const auto give_up =
        std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!absl::StrContains(Log(), text)) {
      ASSERT_LT(std::chrono::steady_clock::now(), give_up)
          << "no '" << text << "' in the log:\n"
          << Log();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // Waits for the process to exit and returns its exit status (-1 if a
  // signal ended it).
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string Log() const { return ReadFile(log_path_); }
  int port() const { return port_; }
  v1::JobQueue::Stub* stub() { return stub_.get(); }

 private:
  const std::string dir_;
  std::vector<std::string> args_;
  std::string log_path_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobQueue::Stub> stub_;
};

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return c;
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-daemon-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    db_ = dir_ + "/adjutant.db";
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::vector<std::string> Args(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--db", db_};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  std::string dir_;
  std::string db_;
};

std::string Enqueue(v1::JobQueue::Stub* stub, const std::string& type) {
  v1::EnqueueRequest r;
  r.set_queue("q");
  r.set_job_type(type);
  r.set_max_attempts(5);
  v1::EnqueueResponse out;
  grpc::Status s = stub->Enqueue(Ctx().get(), r, &out);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return out.job_id();
}

v1::LeasedJob LeaseOne(v1::JobQueue::Stub* stub, int lease_seconds) {
  v1::DequeueRequest r;
  r.set_queue("q");
  r.mutable_lease_duration()->set_seconds(lease_seconds);
  v1::DequeueResponse out;
  grpc::Status s = stub->Dequeue(Ctx().get(), r, &out);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.jobs_size(), 1);
  return out.jobs_size() > 0 ? out.jobs(0) : v1::LeasedJob();
}

v1::Job Get(v1::JobQueue::Stub* stub, const std::string& id) {
  v1::GetJobRequest r;
  r.set_job_id(id);
  v1::Job out;
  grpc::Status s = stub->GetJob(Ctx().get(), r, &out);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return out;
}

grpc::Status AckJob(v1::JobQueue::Stub* stub, const std::string& id,
                    const std::string& token) {
  v1::AckRequest r;
  r.set_job_id(id);
  r.set_lease_token(token);
  v1::AckResponse out;
  return stub->Ack(Ctx().get(), r, &out);
}

TEST_F(DaemonTest, SigtermExitsZeroAndARestartKeepsEveryJobInItsState) {
  std::string pending, leased, acked, dead, leased_token;
  {
    Daemon daemon(dir_, Args());
    ASSERT_NO_FATAL_FAILURE(daemon.Start());
    v1::JobQueue::Stub* stub = daemon.stub();
    acked = Enqueue(stub, "a");
    v1::LeasedJob a = LeaseOne(stub, 3600);
    ASSERT_EQ(a.job().job_id(), acked);
    ASSERT_TRUE(AckJob(stub, acked, a.lease_token()).ok());

    dead = Enqueue(stub, "d");
    v1::LeasedJob d = LeaseOne(stub, 3600);
    ASSERT_EQ(d.job().job_id(), dead);
    v1::NackRequest nack;
    nack.set_job_id(dead);
    nack.set_lease_token(d.lease_token());
    nack.set_error("broken");
    nack.set_dead(true);
    v1::NackResponse nacked;
    ASSERT_TRUE(stub->Nack(Ctx().get(), nack, &nacked).ok());

    leased = Enqueue(stub, "l");
    v1::LeasedJob l = LeaseOne(stub, 3600);
    ASSERT_EQ(l.job().job_id(), leased);
    leased_token = l.lease_token();

    pending = Enqueue(stub, "p");
    EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
    const std::string log = daemon.Log();
    EXPECT_THAT(log, HasSubstr("listening on"));
    EXPECT_THAT(log, HasSubstr("store closed"));
    // Never tokens in the logs.
    EXPECT_EQ(log.find(leased_token), std::string::npos);
  }

  Daemon daemon(dir_, Args());
  ASSERT_NO_FATAL_FAILURE(daemon.Start());
  v1::JobQueue::Stub* stub = daemon.stub();
  EXPECT_EQ(Get(stub, acked).state(), v1::JOB_STATE_SUCCEEDED);
  v1::Job d = Get(stub, dead);
  EXPECT_EQ(d.state(), v1::JOB_STATE_DEAD);
  EXPECT_EQ(d.last_error(), "broken");
  v1::Job l = Get(stub, leased);
  EXPECT_EQ(l.state(), v1::JOB_STATE_LEASED);
  EXPECT_EQ(l.attempts(), 1);
  v1::Job p = Get(stub, pending);
  EXPECT_EQ(p.state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(p.job_type(), "p");
  // The lease survived the restart, token and all.
  EXPECT_TRUE(AckJob(stub, leased, leased_token).ok());
  EXPECT_EQ(LeaseOne(stub, 30).job().job_id(), pending);
  EXPECT_EQ(daemon.Stop(SIGINT), 0) << daemon.Log();
}

// SIGTERM with a worker long-polling: the poll ends at once with
// UNAVAILABLE (so the worker reconnects elsewhere), the daemon exits 0 well
// within --shutdown-timeout, the WAL is checkpointed into the database
// file, and a restart sees every job.
TEST_F(DaemonTest, SigtermEndsALongPollWithUnavailableAndCheckpointsTheWal) {
  const std::string wal = db_ + "-wal";
  std::vector<std::string> ids;
  {
    Daemon daemon(dir_,
                  Args({"--shutdown-timeout", "10s", "--log-level", "debug"}));
    ASSERT_NO_FATAL_FAILURE(daemon.Start());
    for (int i = 0; i < 20; ++i) ids.push_back(Enqueue(daemon.stub(), "t"));
    v1::LeasedJob first = LeaseOne(daemon.stub(), 3600);
    ASSERT_EQ(first.job().job_id(), ids[0]);
    ASSERT_TRUE(AckJob(daemon.stub(), ids[0], first.lease_token()).ok());
    ASSERT_TRUE(std::filesystem::exists(wal));
    EXPECT_GT(std::filesystem::file_size(wal), 0u);

    // A worker parks a 30 s long-poll on an empty queue, on its own
    // connection.
    auto channel =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", daemon.port()),
                            grpc::InsecureChannelCredentials());
    auto worker = v1::JobQueue::NewStub(channel);
    grpc::Status poll_status;
    v1::DequeueResponse poll_response;
    std::chrono::steady_clock::time_point poll_returned;
    std::thread poll([&] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(60));
      v1::DequeueRequest request;
      request.set_queue("empty");
      request.mutable_wait()->set_seconds(30);
      poll_status = worker->Dequeue(&context, request, &poll_response);
      poll_returned = std::chrono::steady_clock::now();
    });
    ASSERT_NO_FATAL_FAILURE(
        daemon.AwaitLog("long-poll: a Dequeue waits on queue 'empty'"));

    daemon.HangUp();
    const auto signalled = std::chrono::steady_clock::now();
    daemon.Signal(SIGTERM);
    poll.join();
    EXPECT_EQ(poll_status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << poll_status.error_message();
    EXPECT_THAT(poll_status.error_message(), HasSubstr("shutting down"));
    EXPECT_EQ(poll_response.jobs_size(), 0);
    EXPECT_LT(poll_returned - signalled, std::chrono::seconds(5));
    worker.reset();
    channel.reset();

    EXPECT_EQ(daemon.Wait(), 0) << daemon.Log();
    EXPECT_LT(std::chrono::steady_clock::now() - signalled,
              std::chrono::seconds(10))
        << "not within --shutdown-timeout";
    EXPECT_THAT(daemon.Log(), HasSubstr("store closed"));
  }
  std::error_code ignored;
  EXPECT_TRUE(!std::filesystem::exists(wal) ||
              std::filesystem::file_size(wal, ignored) == 0)
      << "the WAL still holds " << std::filesystem::file_size(wal, ignored)
      << " bytes after a clean stop";

  Daemon daemon(dir_, Args());
  ASSERT_NO_FATAL_FAILURE(daemon.Start());
  EXPECT_EQ(Get(daemon.stub(), ids[0]).state(), v1::JOB_STATE_SUCCEEDED);
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_EQ(Get(daemon.stub(), ids[i]).state(), v1::JOB_STATE_PENDING);
  }
  EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
}

// --retention through the real binary: a restart two hours later (as far
// as the daemon can tell) deletes the job acked before, in its first round,
// and keeps the pending one.
TEST_F(DaemonTest, RetentionDeletesOldFinishedJobsAndKeepsPendingOnes) {
  std::string acked, pending;
  {
    Daemon daemon(dir_, Args({"--retention", "1h"}));
    ASSERT_NO_FATAL_FAILURE(daemon.Start());
    acked = Enqueue(daemon.stub(), "a");
    v1::LeasedJob a = LeaseOne(daemon.stub(), 60);
    ASSERT_EQ(a.job().job_id(), acked);
    ASSERT_TRUE(AckJob(daemon.stub(), acked, a.lease_token()).ok());
    pending = Enqueue(daemon.stub(), "p");
    EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
    EXPECT_THAT(daemon.Log(), ::testing::Not(HasSubstr("retention: deleted")));
  }
  Daemon daemon(dir_,
                Args({"--retention", "1h", "--clock-offset-for-test", "2h"}));
  ASSERT_NO_FATAL_FAILURE(daemon.Start());
  ASSERT_NO_FATAL_FAILURE(
      daemon.AwaitLog("retention: deleted 1 finished job(s)"));
  v1::GetJobRequest request;
  request.set_job_id(acked);
  v1::Job job;
  EXPECT_EQ(daemon.stub()->GetJob(Ctx().get(), request, &job).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Get(daemon.stub(), pending).state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
}

TEST_F(DaemonTest, AfterKillNineLeasesComeBackOnceTheyExpire) {
  std::string id;
  {
    Daemon daemon(dir_, Args());
    ASSERT_NO_FATAL_FAILURE(daemon.Start());
    id = Enqueue(daemon.stub(), "t");
    EXPECT_EQ(LeaseOne(daemon.stub(), 60).job().attempts(), 1);
    EXPECT_EQ(daemon.Stop(SIGKILL), -1);
  }
  // 120 s later, as far as the daemon can tell.
  Daemon daemon(dir_, Args({"--clock-offset-for-test", "120s"}));
  ASSERT_NO_FATAL_FAILURE(daemon.Start());
  v1::LeasedJob again = LeaseOne(daemon.stub(), 60);
  EXPECT_EQ(again.job().job_id(), id);
  EXPECT_EQ(again.job().attempts(), 2);
  EXPECT_EQ(again.job().last_error(), "lease expired");
  EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
}

TEST_F(DaemonTest, MemoryStoreServesToo) {
  Daemon daemon(dir_, {"--listen", "127.0.0.1:0", "--db", ":memory:"});
  ASSERT_NO_FATAL_FAILURE(daemon.Start());
  const std::string id = Enqueue(daemon.stub(), "t");
  EXPECT_EQ(LeaseOne(daemon.stub(), 30).job().job_id(), id);
  EXPECT_FALSE(std::filesystem::exists(db_));
  EXPECT_EQ(daemon.Stop(SIGTERM), 0) << daemon.Log();
}

TEST_F(DaemonTest, AStoreThatCannotOpenIsAClearNonZeroExit) {
  {
    std::ofstream garbage(db_);
    garbage << std::string(4096, 'x');
  }
  Daemon daemon(dir_, Args());
  ASSERT_NO_FATAL_FAILURE(daemon.Spawn());
  EXPECT_NE(daemon.Wait(), 0);
  EXPECT_THAT(daemon.Log(), HasSubstr("cannot open the store"));
  EXPECT_EQ(ReadFile(db_), std::string(4096, 'x'));  // untouched
}

TEST_F(DaemonTest, APortInUseIsAClearNonZeroExit) {
  Daemon first(dir_, {"--listen", "127.0.0.1:0", "--db", ":memory:"});
  ASSERT_NO_FATAL_FAILURE(first.Start());
  Daemon second(dir_, {"--listen", absl::StrCat("127.0.0.1:", first.port()),
                       "--db", ":memory:"});
  ASSERT_NO_FATAL_FAILURE(second.Spawn());
  EXPECT_NE(second.Wait(), 0);
  EXPECT_THAT(second.Log(), HasSubstr("cannot listen on"));
  EXPECT_EQ(first.Stop(SIGTERM), 0);
}

TEST_F(DaemonTest, HelpExplainsEveryFlag) {
  Daemon daemon(dir_, {"--help"});
  ASSERT_NO_FATAL_FAILURE(daemon.Spawn());
  EXPECT_EQ(daemon.Wait(), 0);
  const std::string help = daemon.Log();
  for (const char* flag :
       {"--listen", "--db", "--sqlite-synchronous", "--log-level",
        "--max-payload-bytes", "--default-max-attempts", "--executor-threads",
        "--port-file", "--config", "--check-config", "--log-format",
        "--retention", "--dead-retention", "--retention-batch-size",
        "--shutdown-timeout", "--metrics-listen", "--metrics-port-file",
        "ADJUTANT_LISTEN"}) {
    EXPECT_THAT(help, HasSubstr(flag));
  }
  EXPECT_THAT(help, ::testing::Not(HasSubstr("--clock-offset-for-test")));
}

TEST_F(DaemonTest, BadFlagValuesAreRefused) {
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--sqlite-synchronous", "sometimes"},
        std::vector<std::string>{"--default-max-attempts", "0"},
        std::vector<std::string>{"--log-level", "loud"},
        std::vector<std::string>{"--clock-offset-for-test", "soon"},
        std::vector<std::string>{"--retention", "a day"},
        std::vector<std::string>{"--dead-retention", "-1h"},
        std::vector<std::string>{"--retention-batch-size", "0"},
        std::vector<std::string>{"--shutdown-timeout", "soon"},
        std::vector<std::string>{"--metrics-listen", "9464"},
        std::vector<std::string>{"--metrics-listen", "localhost:http"}}) {
    Daemon daemon(dir_, Args(args));
    ASSERT_NO_FATAL_FAILURE(daemon.Spawn());
    EXPECT_NE(daemon.Wait(), 0) << args[0];
    EXPECT_THAT(daemon.Log(), HasSubstr(args[0].substr(2)));
  }
}

TEST_F(DaemonTest, CheckConfigAcceptsAGoodConfigurationWithoutOpening) {
  const std::string file = dir_ + "/adjutantd.toml";
  std::ofstream(file) << "db = \"" << db_ << "\"\nlog-format = \"json\"\n";
  Daemon daemon(dir_, {"--config", file, "--check-config"});
  ASSERT_NO_FATAL_FAILURE(daemon.Spawn());
  EXPECT_EQ(daemon.Wait(), 0) << daemon.Log();
  EXPECT_THAT(daemon.Log(), HasSubstr("configuration OK"));
  EXPECT_FALSE(std::filesystem::exists(db_));  // the store was not opened
}

TEST_F(DaemonTest, CheckConfigRefusesABadConfiguration) {
  const std::string bad_key = dir_ + "/typo.toml";
  std::ofstream(bad_key) << "lissen = \"127.0.0.1:0\"\n";
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--db", dir_ + "/missing/dir/a.db"},
        std::vector<std::string>{"--log-format", "xml"},
        std::vector<std::string>{"--config", dir_ + "/missing.toml"},
        std::vector<std::string>{"--config", bad_key}}) {
    args.push_back("--check-config");
    Daemon daemon(dir_, args);
    ASSERT_NO_FATAL_FAILURE(daemon.Spawn());
    EXPECT_NE(daemon.Wait(), 0) << args[0] << " " << args[1];
    const std::string log = daemon.Log();
    EXPECT_THAT(log, ::testing::Not(HasSubstr("configuration OK")));
    EXPECT_THAT(log, HasSubstr(args[0])) << log;
  }
}

TEST_F(DaemonTest, JsonLogLinesParseAsJson) {
  Daemon daemon(dir_, Args({"--log-format", "json"}));
  ASSERT_NO_FATAL_FAILURE(daemon.Start());
  EXPECT_EQ(daemon.Stop(SIGTERM), 0);
  std::istringstream log(daemon.Log());
  int lines = 0;
  bool saw_stopping = false;
  for (std::string line; std::getline(log, line);) {
    ++lines;
    google::protobuf::Struct parsed;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, &parsed).ok())
        << line;
    for (const char* field : {"time", "level", "logger", "message"}) {
      ASSERT_TRUE(parsed.fields().contains(field)) << field << " in " << line;
      EXPECT_FALSE(parsed.fields().at(field).string_value().empty()) << line;
    }
    EXPECT_EQ(parsed.fields().at("logger").string_value(), "adjutantd");
    if (absl::StrContains(parsed.fields().at("message").string_value(),
                          "stopping")) {
      saw_stopping = true;
    }
  }
  EXPECT_GE(lines, 2);
  EXPECT_TRUE(saw_stopping) << daemon.Log();
}

// A real daemon at debug level with its metrics endpoint: the lifecycle
// lines are there, a scrape over HTTP after some traffic shows it, and no
// payload or lease token ever reaches the log.
TEST_F(DaemonTest, MetricsOverHttpAndLogsWithoutPayloadsOrTokens) {
  const std::string metrics_port_file = dir_ + "/metrics.port";
  Daemon daemon(dir_,
                Args({"--log-level", "debug", "--metrics-listen", "127.0.0.1:0",
                      "--metrics-port-file", metrics_port_file}));
  ASSERT_NO_FATAL_FAILURE(daemon.Start());
  // Written before --port-file, so it is there now.
  const int metrics_port = std::stoi(ReadFile(metrics_port_file));
  ASSERT_GT(metrics_port, 0);

  const std::string kPayload = "PAYLOAD-5e1f-never-logged";
  std::vector<std::string> tokens;
  for (int i = 0; i < 3; ++i) {
    v1::EnqueueRequest r;
    r.set_queue("q");
    r.set_job_type("t");
    r.set_payload(kPayload);
    v1::EnqueueResponse out;
    ASSERT_TRUE(daemon.stub()->Enqueue(Ctx().get(), r, &out).ok());
  }
  {  // refused: the payload is not echoed in the error either
    v1::EnqueueRequest r;
    r.set_queue("q");
    r.set_payload(kPayload);
    v1::EnqueueResponse out;
    grpc::Status s = daemon.stub()->Enqueue(Ctx().get(), r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr(kPayload)));
  }
  const v1::LeasedJob first = LeaseOne(daemon.stub(), 30);
  const v1::LeasedJob second = LeaseOne(daemon.stub(), 30);
  tokens = {first.lease_token(), second.lease_token()};
  ASSERT_TRUE(
      AckJob(daemon.stub(), first.job().job_id(), first.lease_token()).ok());
  // A stale token: refused, and not logged either.
  EXPECT_FALSE(
      AckJob(daemon.stub(), second.job().job_id(), first.lease_token()).ok());
  {
    v1::NackRequest r;
    r.set_job_id(second.job().job_id());
    r.set_lease_token(second.lease_token());
    r.set_dead(true);
    v1::NackResponse out;
    ASSERT_TRUE(daemon.stub()->Nack(Ctx().get(), r, &out).ok());
  }

  httplib::Client client("127.0.0.1", metrics_port);
  httplib::Result scraped = client.Get("/metrics");
  ASSERT_TRUE(scraped) << httplib::to_string(scraped.error());
  ASSERT_EQ(scraped->status, 200);
  const std::string& m = scraped->body;
  for (const char* line :
       {"adjutant_jobs_enqueued_total{queue=\"q\"} 3",
        "adjutant_jobs_leased_total{queue=\"q\"} 2",
        "adjutant_jobs_acked_total{queue=\"q\"} 1",
        "adjutant_jobs_nacked_total{queue=\"q\"} 1",
        "adjutant_jobs_dead_total{queue=\"q\"} 1",
        "adjutant_jobs{queue=\"q\",state=\"pending\"} 1",
        "adjutant_jobs{queue=\"q\",state=\"succeeded\"} 1",
        "adjutant_jobs{queue=\"q\",state=\"dead\"} 1",
        "adjutant_rpcs_total{method=\"adjutant.v1.JobQueue/Enqueue\","
        "code=\"OK\"} 3",
        "adjutant_rpcs_total{method=\"adjutant.v1.JobQueue/Enqueue\","
        "code=\"INVALID_ARGUMENT\"} 1",
        "adjutant_rpcs_total{method=\"adjutant.v1.JobQueue/Ack\","
        "code=\"FAILED_PRECONDITION\"} 1",
        "adjutant_rpc_duration_seconds_count{method=\"adjutant.v1.JobQueue/"
        "Enqueue\",code=\"OK\"} 3",
        "adjutant_store_write_duration_seconds_count{op=\"enqueue\"} 3",
        "adjutant_is_leader 0", "adjutant_long_polls_waiting 0"}) {
    EXPECT_THAT(m, HasSubstr(absl::StrCat("\n", line, "\n"))) << line;
  }
  // Real time on a real store: latencies are measured, not zero.
  EXPECT_THAT(m, ::testing::Not(HasSubstr(
                     "adjutant_store_write_duration_seconds_sum{op=\"enqueue\"}"
                     " 0\n")));

  EXPECT_EQ(daemon.Stop(SIGTERM), 0);
  const std::string log = daemon.Log();
  EXPECT_THAT(log, HasSubstr("adjutantd " ADJUTANT_VERSION " starting"));
  EXPECT_THAT(log, HasSubstr("store: SQLite"));
  EXPECT_THAT(log, HasSubstr("listening on 127.0.0.1:"));
  EXPECT_THAT(log, HasSubstr(absl::StrCat("metrics: Prometheus /metrics on "
                                          "http://127.0.0.1:",
                                          metrics_port, "/metrics")));
  // The level really was debug: the jobs' ids are there.
  EXPECT_THAT(log, HasSubstr(absl::StrCat("Ack: job ", first.job().job_id())));
  EXPECT_THAT(log,
              HasSubstr(absl::StrCat("Dequeue: job ", second.job().job_id())));
  EXPECT_THAT(log, HasSubstr("stopping"));
  EXPECT_THAT(log, HasSubstr("store closed; exiting"));
  EXPECT_THAT(log, ::testing::Not(HasSubstr(kPayload)));
  for (const std::string& token : tokens) {
    ASSERT_FALSE(token.empty());
    EXPECT_THAT(log, ::testing::Not(HasSubstr(token)));
  }
}

TEST_F(DaemonTest, ABusyMetricsPortIsAClearNonZeroExit) {
  httplib::Server holder;
  const int port = holder.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  Daemon daemon(dir_,
                Args({"--metrics-listen", absl::StrCat("127.0.0.1:", port)}));
  ASSERT_NO_FATAL_FAILURE(daemon.Spawn());
  EXPECT_NE(daemon.Wait(), 0);
  EXPECT_THAT(daemon.Log(), HasSubstr("--metrics-listen: cannot listen on"));
}

}  // namespace
}  // namespace adjutant
