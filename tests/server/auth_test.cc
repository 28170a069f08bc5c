// The token file parser, the role table and the metadata check
// (server/auth.h), without a server.
#include "server/auth.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "adjutant/v1/scheduler.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"

namespace adjutant {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kProducerToken[] = "producer-token-0123456789";
constexpr char kWorkerToken[] = "worker-token-0123456789";
constexpr char kAdminToken[] = "admin-token-0123456789";

std::unique_ptr<Authorizer> MustParse(const std::string& text) {
  absl::StatusOr<std::unique_ptr<Authorizer>> parsed =
      Authorizer::Parse(text, "tokens.txt");
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *std::move(parsed) : nullptr;
}

absl::Status ParseError(const std::string& text) {
  return Authorizer::Parse(text, "tokens.txt").status();
}

TEST(RoleTest, NamesRoundTrip) {
  for (Role role :
       {Role::kProducer, Role::kWorker, Role::kLeader, Role::kAdmin}) {
    EXPECT_EQ(ParseRole(RoleName(role)), role);
  }
  EXPECT_EQ(ParseRole("Admin"), std::nullopt);
  EXPECT_EQ(ParseRole(""), std::nullopt);
  EXPECT_EQ((RoleSet{Role::kAdmin, Role::kProducer}).ToString(),
            "producer,admin");
  EXPECT_EQ(RoleSet().ToString(), "");
  EXPECT_TRUE(RoleSet().empty());
}

TEST(TokenFileTest, ParsesNamesRolesCommentsAndBlankLines) {
  std::unique_ptr<Authorizer> auth =
      MustParse(absl::StrCat("# who may call adjutantd\n"
                             "\n"
                             "web   producer          ",
                             kProducerToken,
                             "   # the web tier\n"
                             "\tjobs\tworker,producer\t",
                             kWorkerToken,
                             "\r\n"
                             "ops admin ",
                             kAdminToken, "\n"));
  ASSERT_NE(auth, nullptr);
  EXPECT_THAT(auth->names(), ElementsAre("web", "jobs", "ops"));
}

TEST(TokenFileTest, BadLinesNameTheFileTheLineAndTheReason) {
  const std::string good = absl::StrCat("ok admin ", kAdminToken, "\n");
  struct Case {
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {good + "lonely\n", "tokens.txt:2: missing fields"},
      {good + "web producer\n", "tokens.txt:2: missing fields"},
      {good + "web producer abc def0123456789012345\n",
       "tokens.txt:2: too many fields"},
      {good + "web janitor 0123456789abcdef0\n",
       "tokens.txt:2: unknown role 'janitor'"},
      {good + "web producer,,worker 0123456789abcdef0\n",
       "tokens.txt:2: empty role"},
      {good + "web producer, 0123456789abcdef0\n", "tokens.txt:2: empty role"},
      {good + "w@b producer 0123456789abcdef0\n",
       "tokens.txt:2: name 'w@b' has a character"},
      {good + "web producer short\n",
       "tokens.txt:2: the token of 'web' is shorter than 16"},
      {good + "web producer 0123456789abcdef\x01zz\n",
       "tokens.txt:2: the token of 'web' has a character outside"},
      {good + "\n\nok producer 0123456789abcdef0\n",
       "tokens.txt:4: duplicate name 'ok' (first on line 1)"},
      {good + "web producer " + kAdminToken + "\n",
       "tokens.txt:2: the token of 'web' is also the token of 'ok' (line 1)"},
      {"", "tokens.txt: no tokens"},
      {"# only a comment\n   \n", "tokens.txt: no tokens"},
  };
  for (const Case& c : cases) {
    const absl::Status status = ParseError(c.text);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(status.message(), HasSubstr(c.expected)) << c.text;
    // The token of the good line is never quoted.
    EXPECT_THAT(status.message(), Not(HasSubstr(kAdminToken))) << c.text;
  }
}

TEST(TokenFileTest, AWhitespaceOnlyTokenIsAMissingField) {
  EXPECT_THAT(ParseError("web producer    \t \n").message(),
              HasSubstr("tokens.txt:1: missing fields"));
}

TEST(TokenFileTest, FromFileNamesAnUnreadableFile) {
  const absl::Status status =
      Authorizer::FromFile("/nonexistent/tokens.txt").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("/nonexistent/tokens.txt"));
}

TEST(TokenFileTest, WarnsWhenEveryoneCanReadIt) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            absl::StrCat("adjutant-tokens-", getpid(), ".txt"))
                               .string();
  std::ofstream(path) << "ok admin " << kAdminToken << "\n";
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  std::optional<std::string> warning = TokenFilePermissionWarning(path);
  ASSERT_TRUE(warning.has_value());
  EXPECT_THAT(*warning, AllOf(HasSubstr(path), HasSubstr("every local user")));
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  EXPECT_EQ(TokenFilePermissionWarning(path), std::nullopt);
  ASSERT_TRUE(Authorizer::FromFile(path).ok());
  std::filesystem::remove(path);
}

// Every RPC of both services has an entry, so that a new RPC is never
// silently admin-only; and the entries are the documented ones.
TEST(RoleTableTest, EveryRpcHasTheDocumentedRoles) {
  const RoleSet any = RoleSet::All();
  const RoleSet producer = {Role::kProducer, Role::kAdmin};
  const RoleSet worker = {Role::kWorker, Role::kAdmin};
  const RoleSet leader = {Role::kLeader, Role::kAdmin};
  const RoleSet admin = {Role::kAdmin};
  const std::map<std::string, RoleSet> expected = {
      {"adjutant.v1.JobQueue.Enqueue", producer},
      {"adjutant.v1.JobQueue.EnqueueBatch", producer},
      {"adjutant.v1.JobQueue.Dequeue", worker},
      {"adjutant.v1.JobQueue.Ack", worker},
      {"adjutant.v1.JobQueue.Nack", worker},
      {"adjutant.v1.JobQueue.AckBatch", worker},
      {"adjutant.v1.JobQueue.Work", worker},
      {"adjutant.v1.JobQueue.ExtendLease", worker},
      {"adjutant.v1.JobQueue.GetJob", any},
      {"adjutant.v1.JobQueue.CancelJob", admin},
      {"adjutant.v1.JobQueue.RequeueJob", admin},
      {"adjutant.v1.JobQueue.ListJobs", any},
      {"adjutant.v1.JobQueue.GetStats", any},
      {"adjutant.v1.Scheduler.RegisterCron", admin},
      {"adjutant.v1.Scheduler.UnregisterCron", admin},
      {"adjutant.v1.Scheduler.GetCron", any},
      {"adjutant.v1.Scheduler.ListCrons", any},
      {"adjutant.v1.Scheduler.PreviewCron", any},
      {"adjutant.v1.Scheduler.SetLeadership", leader},
      {"adjutant.v1.Scheduler.GetLeadership", any},
  };
  size_t methods = 0;
  for (const google::protobuf::ServiceDescriptor* service :
       {v1::EnqueueRequest::descriptor()->file()->FindServiceByName("JobQueue"),
        v1::RegisterCronRequest::descriptor()->file()->FindServiceByName(
            "Scheduler")}) {
    ASSERT_NE(service, nullptr);
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string name = service->method(i)->full_name();
      ++methods;
      const auto it = expected.find(name);
      ASSERT_NE(it, expected.end()) << name << " is not in this test's table";
      EXPECT_EQ(RolesAllowed(name), it->second)
          << name << ": " << RolesAllowed(name).ToString();
    }
  }
  EXPECT_EQ(methods, expected.size());
  EXPECT_EQ(RolesAllowed("adjutant.v1.JobQueue.SomethingNew"), admin);
}

class AuthorizeMetadataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auth_ = std::make_unique<Authorizer>(std::vector<Authorizer::Token>{
        {"web", {Role::kProducer}, kProducerToken},
        {"jobs", {Role::kWorker}, kWorkerToken},
        {"ops", {Role::kAdmin}, kAdminToken},
    });
  }

  // Authorizes `method` with these "authorization" values.
  absl::StatusOr<Caller> Check(const std::vector<std::string>& values,
                               const std::string& method) {
    values_ = values;
    std::multimap<grpc::string_ref, grpc::string_ref> metadata;
    metadata.emplace("user-agent", "test");
    for (const std::string& v : values_) metadata.emplace("authorization", v);
    return auth_->AuthorizeMetadata(metadata, method);
  }

  std::unique_ptr<Authorizer> auth_;
  std::vector<std::string> values_;
};

TEST_F(AuthorizeMetadataTest, ValidTokenWithTheRole) {
  absl::StatusOr<Caller> caller =
      Check({absl::StrCat("Bearer ", kProducerToken)},
            "adjutant.v1.JobQueue.Enqueue");
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_EQ(caller->name, "web");
  EXPECT_EQ(caller->roles, RoleSet{Role::kProducer});
  // The scheme is case-insensitive; reads are open to every role.
  caller = Check({absl::StrCat("bearer  ", kWorkerToken)},
                 "adjutant.v1.Scheduler.GetLeadership");
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_EQ(caller->name, "jobs");
  // Admin may call everything.
  for (const char* method :
       {"adjutant.v1.JobQueue.Enqueue", "adjutant.v1.JobQueue.CancelJob",
        "adjutant.v1.Scheduler.SetLeadership", "adjutant.v1.Unknown.Method"}) {
    EXPECT_TRUE(Check({absl::StrCat("Bearer ", kAdminToken)}, method).ok())
        << method;
  }
}

TEST_F(AuthorizeMetadataTest, ValidTokenWithoutTheRoleIsPermissionDenied) {
  const absl::Status status = Check({absl::StrCat("Bearer ", kProducerToken)},
                                    "adjutant.v1.Scheduler.SetLeadership")
                                  .status();
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr("'web'"), HasSubstr("producer"),
                    HasSubstr("SetLeadership"), HasSubstr("leader,admin"),
                    Not(HasSubstr(kProducerToken))));
}

TEST_F(AuthorizeMetadataTest, AnythingElseIsUnauthenticated) {
  const std::string method = "adjutant.v1.JobQueue.GetJob";
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"Bearer not-a-known-token-at-all"},
      {absl::StrCat("Bearer ", kProducerToken, "x")},
      {absl::StrCat("Bearer ", std::string(kProducerToken).substr(1))},
      {kProducerToken},
      {absl::StrCat("Basic ", kProducerToken)},
      {absl::StrCat("Bearer", kProducerToken)},
      {"Bearer "},
      {"Bearer"},
      {absl::StrCat("Bearer ", kProducerToken),
       absl::StrCat("Bearer ", kProducerToken)},
  };
  for (const std::vector<std::string>& values : bad) {
    const absl::Status status = Check(values, method).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated)
        << (values.empty() ? "(none)" : values.front());
    EXPECT_THAT(status.message(), Not(HasSubstr(kProducerToken)));
  }
}

}  // namespace
}  // namespace adjutant
