// TLS, mutual TLS and bearer tokens end to end: an in-process AdjutantServer
// serving credentials from MakeServerCredentials (server/tls.h) and
// adjutant::Client with its TLS and token options. The certificates are
// made at test time by tests/fakes/make_test_certs.sh (openssl).
#include "server/tls.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/worker.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth.h"
#include "server/server.h"
#include "storage/memory_job_store.h"
#include "tests/fakes/simulated_clock.h"

#ifndef ADJUTANT_MAKE_TEST_CERTS
#error "ADJUTANT_MAKE_TEST_CERTS must name tests/fakes/make_test_certs.sh"
#endif

namespace adjutant {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-tls-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = new std::string(tmpl);
    const std::string command =
        absl::StrCat(ADJUTANT_MAKE_TEST_CERTS, " ", *dir_);
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    std::filesystem::remove_all(*dir_, ignored);
    delete dir_;
  }

  static std::string File(const std::string& name) {
    return absl::StrCat(*dir_, "/", name);
  }

  void TearDown() override { server_.reset(); }

  // Starts a server with TLS (and client certificates required if
  // `mutual`), and the token file `tokens` if not empty.
  void StartServer(bool mutual, const std::string& tokens = "") {
    TlsFiles files;
    files.cert_file = File("server.crt");
    files.key_file = File("server.key");
    if (mutual) files.client_ca_file = File("ca.crt");
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
        MakeServerCredentials(files);
    ASSERT_TRUE(credentials.ok()) << credentials.status();
    AdjutantServerConfig config;
    config.listen_address = "127.0.0.1:0";
    config.executor_threads = 2;
    config.credentials = *credentials;
    if (!tokens.empty()) {
      absl::StatusOr<std::unique_ptr<Authorizer>> authorizer =
          Authorizer::Parse(tokens, "tokens");
      ASSERT_TRUE(authorizer.ok()) << authorizer.status();
      config.authorizer = *std::move(authorizer);
    }
    server_ = std::make_unique<AdjutantServer>(
        config, std::make_unique<MemoryJobStore>(), &clock_);
    absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started;
  }

  ClientOptions Options() {
    ClientOptions options;
    options.target = absl::StrCat("127.0.0.1:", server_->port());
    // Real time: a guard; a refused handshake fails at once.
    options.deadline = absl::Seconds(30);
    return options;
  }

  // GetStats through a client made with `options`: its status.
  absl::Status Call(const ClientOptions& options) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    if (!client.ok()) return client.status();
    return (*client)->GetStats(v1::GetStatsRequest()).status();
  }

  static std::string* dir_;
  SimulatedClock clock_;
  std::unique_ptr<AdjutantServer> server_;
};

std::string* TlsTest::dir_ = nullptr;

TEST_F(TlsTest, AClientWithTheCaConnects) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mutual=*/false));
  ClientOptions options = Options();
  options.tls_ca_file = File("ca.crt");
  EXPECT_TRUE(Call(options).ok()) << Call(options);
  // The certificate's names: IP 127.0.0.1 (above) and localhost.
  options.tls_server_name = "localhost";
  EXPECT_TRUE(Call(options).ok()) << Call(options);
}

TEST_F(TlsTest, AClientWithoutTheCaCannotConnect) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mutual=*/false));
  ClientOptions other_ca = Options();
  other_ca.tls_ca_file = File("other-ca.crt");
  EXPECT_EQ(Call(other_ca).code(), absl::StatusCode::kUnavailable);
  ClientOptions default_roots = Options();
  default_roots.tls = true;
  EXPECT_EQ(Call(default_roots).code(), absl::StatusCode::kUnavailable);
  ClientOptions plaintext = Options();
  EXPECT_EQ(Call(plaintext).code(), absl::StatusCode::kUnavailable);
  // The right CA, but a name the certificate does not carry.
  ClientOptions wrong_name = Options();
  wrong_name.tls_ca_file = File("ca.crt");
  wrong_name.tls_server_name = "adjutant.example.com";
  EXPECT_EQ(Call(wrong_name).code(), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, MutualTlsNeedsAClientCertificateTheCaSigned) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mutual=*/true));
  ClientOptions no_cert = Options();
  no_cert.tls_ca_file = File("ca.crt");
  EXPECT_EQ(Call(no_cert).code(), absl::StatusCode::kUnavailable);
  ClientOptions other_cert = no_cert;
  other_cert.tls_cert_file = File("other-client.crt");
  other_cert.tls_key_file = File("other-client.key");
  EXPECT_EQ(Call(other_cert).code(), absl::StatusCode::kUnavailable);
  ClientOptions with_cert = no_cert;
  with_cert.tls_cert_file = File("client.crt");
  with_cert.tls_key_file = File("client.key");
  EXPECT_TRUE(Call(with_cert).ok()) << Call(with_cert);
}

TEST_F(TlsTest, TokensOverTls) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mutual=*/false,
                                      "web producer producer-token-0123456789\n"
                                      "jobs worker worker-token-0123456789\n"));
  ClientOptions producer = Options();
  producer.tls_ca_file = File("ca.crt");
  producer.token = "producer-token-0123456789";
  ClientOptions worker = producer;
  worker.token = "worker-token-0123456789";
  ClientOptions anonymous = producer;
  anonymous.token = "";
  absl::StatusOr<std::unique_ptr<Client>> p = Client::Create(producer);
  absl::StatusOr<std::unique_ptr<Client>> w = Client::Create(worker);
  absl::StatusOr<std::unique_ptr<Client>> a = Client::Create(anonymous);
  ASSERT_TRUE(p.ok() && w.ok() && a.ok());

  v1::EnqueueRequest enqueue;
  enqueue.set_queue("tls");
  enqueue.set_job_type("t");
  EXPECT_EQ((*a)->Enqueue(enqueue).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*w)->Enqueue(enqueue).status().code(),
            absl::StatusCode::kPermissionDenied);
  absl::StatusOr<v1::EnqueueResponse> enqueued = (*p)->Enqueue(enqueue);
  ASSERT_TRUE(enqueued.ok()) << enqueued.status();

  v1::DequeueRequest dequeue;
  dequeue.set_queue("tls");
  EXPECT_EQ((*p)->Dequeue(dequeue).status().code(),
            absl::StatusCode::kPermissionDenied);
  absl::StatusOr<v1::DequeueResponse> leased = (*w)->Dequeue(dequeue);
  ASSERT_TRUE(leased.ok()) << leased.status();
  ASSERT_EQ(leased->jobs_size(), 1);
  v1::AckRequest ack;
  ack.set_job_id(leased->jobs(0).job().job_id());
  ack.set_lease_token(leased->jobs(0).lease_token());
  EXPECT_TRUE((*w)->Ack(ack).ok());
}

// A Worker uses its client's TLS options and token.
TEST_F(TlsTest, AWorkerInheritsItsClientsTlsAndToken) {
  ASSERT_NO_FATAL_FAILURE(StartServer(/*mutual=*/true,
                                      "web producer producer-token-0123456789\n"
                                      "jobs worker worker-token-0123456789\n"));
  ClientOptions options = Options();
  options.tls_ca_file = File("ca.crt");
  options.tls_cert_file = File("client.crt");
  options.tls_key_file = File("client.key");
  options.token = "producer-token-0123456789";
  absl::StatusOr<std::unique_ptr<Client>> producer = Client::Create(options);
  options.token = "worker-token-0123456789";
  absl::StatusOr<std::unique_ptr<Client>> worker_client =
      Client::Create(options);
  ASSERT_TRUE(producer.ok() && worker_client.ok());

  v1::EnqueueRequest enqueue;
  enqueue.set_queue("tls-worker");
  enqueue.set_job_type("echo");
  absl::StatusOr<v1::EnqueueResponse> enqueued = (*producer)->Enqueue(enqueue);
  ASSERT_TRUE(enqueued.ok()) << enqueued.status();

  WorkerOptions worker_options;
  worker_options.queue = "tls-worker";
  worker_options.poll_wait = absl::Seconds(1);
  Worker worker(worker_client->get(), worker_options);
  ASSERT_TRUE(
      worker
          .Register("echo", [](const JobContext&) { return absl::OkStatus(); })
          .ok());
  ASSERT_TRUE(worker.Start().ok());
  // Real time: a guard while the worker's threads make progress.
  ASSERT_TRUE(worker.AwaitStatsForTest(
      [](const WorkerStats& s) { return s.acked == 1; }, absl::Seconds(30)));
  worker.Stop();

  v1::GetJobRequest get;
  get.set_job_id(enqueued->job_id());
  absl::StatusOr<v1::Job> job = (*producer)->GetJob(get);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(TlsTest, BadClientOptionsNameTheOption) {
  ClientOptions options;
  options.target = "127.0.0.1:1";
  options.tls_cert_file = File("client.crt");
  absl::Status status = Client::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("tls_cert_file"));

  options.tls_cert_file = "";
  options.tls_ca_file = File("missing.crt");
  status = Client::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("tls_ca_file"));

  options.tls_ca_file = "";
  options.token = "secret with-space";
  status = Client::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("token"));
  EXPECT_THAT(status.message(), Not(HasSubstr("secret")));
}

TEST_F(TlsTest, CheckTlsFilesNamesTheFlag) {
  struct Case {
    TlsFiles files;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{File("server.crt"), "", ""}, "--tls-cert: given without --tls-key"},
      {{"", File("server.key"), ""}, "--tls-key: given without --tls-cert"},
      {{"", "", File("ca.crt")}, "--tls-client-ca: requires --tls-cert"},
      {{File("missing.crt"), File("server.key"), ""},
       "--tls-cert: cannot read"},
      {{File("server.crt"), File("missing.key"), ""}, "--tls-key: cannot read"},
      {{File("server.key"), File("server.key"), ""},
       "--tls-cert: '" + File("server.key") + "' holds no PEM certificate"},
      {{File("server.crt"), File("server.crt"), ""},
       "--tls-key: '" + File("server.crt") + "' holds no"},
      {{File("server.crt"), File("client.key"), ""},
       "is not the key of the certificate"},
      {{File("server.crt"), File("server.key"), File("missing.crt")},
       "--tls-client-ca: cannot read"},
      {{File("server.crt"), File("server.key"), File("server.key")},
       "--tls-client-ca: '" + File("server.key") + "' holds no PEM"},
  };
  for (const Case& c : cases) {
    const absl::Status status = CheckTlsFiles(c.files);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_THAT(status.message(), HasSubstr(c.expected));
  }
  EXPECT_TRUE(CheckTlsFiles({}).ok());
  EXPECT_TRUE(
      CheckTlsFiles({File("server.crt"), File("server.key"), File("ca.crt")})
          .ok());
}

}  // namespace
}  // namespace adjutant
