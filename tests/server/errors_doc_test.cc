// docs/ERRORS.md, checked row by row. Each row of a driven table
//   | RPC | Given | Request | Code | Message contains |
// runs against its own in-process AdjutantServer on a fresh SQLite file (and
// a simulated clock): the test sets up Given, sends Request (protobuf text
// format) to RPC through a generic stub, and checks the code, the message,
// and that the store (jobs, schedules, terms, leadership) is exactly as
// before. Each row of a backed table
//   | RPC | Condition | Code | Message contains | Backed by |
// names a test (Suite.Name) that must exist under tests/. Every RPC of
// adjutant.v1.JobQueue and adjutant.v1.Scheduler must have a row, unless the
// document lists it under "Rows to come:".
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "adjutant/v1/scheduler.grpc.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "server/auth.h"
#include "server/convert.h"
#include "server/malformed_request.h"
#include "server/server.h"
#include "spdlog/spdlog.h"
#include "storage/sqlite_job_store.h"
#include "tests/fakes/faulty_sqlite_vfs.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {
namespace {

// ---- The document -----------------------------------------------------------

const std::vector<std::string> kDrivenHeader = {"RPC", "Given", "Request",
                                                "Code", "Message contains"};
const std::vector<std::string> kBackedHeader = {
    "RPC", "Condition", "Code", "Message contains", "Backed by"};
// The services whose every RPC needs a row.
const char* const kServices[] = {"adjutant.v1.JobQueue",
                                 "adjutant.v1.Scheduler"};

struct DrivenRow {
  int line = 0;
  std::string rpc;      // "JobQueue.Enqueue"
  std::string given;    // "-" or preconditions joined by " + "
  std::string request;  // text format; "-" for the empty message
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;  // a substring of the answer's message
};

struct BackedRow {
  int line = 0;
  std::string rpc;  // "JobQueue.Dequeue", or "*" for every RPC
  std::string condition;
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;
  std::string backed_by;  // "Suite.Name"
};

struct ErrorsDoc {
  std::vector<DrivenRow> driven;
  std::vector<BackedRow> backed;
  // RPCs whose rows come with their implementation ("Rows to come:").
  std::set<std::string> rows_to_come;
};

absl::StatusOr<grpc::StatusCode> ParseCode(absl::string_view name) {
  static const std::map<std::string, grpc::StatusCode, std::less<>> kCodes = {
      {"CANCELLED", grpc::StatusCode::CANCELLED},
      {"UNKNOWN", grpc::StatusCode::UNKNOWN},
      {"INVALID_ARGUMENT", grpc::StatusCode::INVALID_ARGUMENT},
      {"DEADLINE_EXCEEDED", grpc::StatusCode::DEADLINE_EXCEEDED},
      {"NOT_FOUND", grpc::StatusCode::NOT_FOUND},
      {"ALREADY_EXISTS", grpc::StatusCode::ALREADY_EXISTS},
      {"PERMISSION_DENIED", grpc::StatusCode::PERMISSION_DENIED},
      {"RESOURCE_EXHAUSTED", grpc::StatusCode::RESOURCE_EXHAUSTED},
      {"FAILED_PRECONDITION", grpc::StatusCode::FAILED_PRECONDITION},
      {"ABORTED", grpc::StatusCode::ABORTED},
      {"OUT_OF_RANGE", grpc::StatusCode::OUT_OF_RANGE},
      {"UNIMPLEMENTED", grpc::StatusCode::UNIMPLEMENTED},
      {"INTERNAL", grpc::StatusCode::INTERNAL},
      {"UNAVAILABLE", grpc::StatusCode::UNAVAILABLE},
      {"DATA_LOSS", grpc::StatusCode::DATA_LOSS},
      {"UNAUTHENTICATED", grpc::StatusCode::UNAUTHENTICATED},
  };
  const auto it = kCodes.find(name);
  if (it == kCodes.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", name, "' is not an error code (INVALID_ARGUMENT, NOT_FOUND...)"));
  }
  return it->second;
}

// The cells of a table line: "| a | `b \| c` |" -> {"a", "b | c"}. A cell
// wrapped in backticks loses them; "\|" stands for "|".
std::vector<std::string> SplitCells(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  absl::ConsumePrefix(&line, "|");
  if (absl::EndsWith(line, "|") && !absl::EndsWith(line, "\\|")) {
    line.remove_suffix(1);
  }
  std::vector<std::string> cells;
  std::string cell;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '|') {
      cell.push_back('|');
      ++i;
    } else if (line[i] == '|') {
      cells.push_back(cell);
      cell.clear();
    } else {
      cell.push_back(line[i]);
    }
  }
  cells.push_back(cell);
  for (std::string& c : cells) {
    absl::string_view v = absl::StripAsciiWhitespace(c);
    if (v.size() >= 2 && v.front() == '`' && v.back() == '`') {
      v = v.substr(1, v.size() - 2);
    }
    c = std::string(v);
  }
  return cells;
}

bool IsSeparator(const std::vector<std::string>& cells) {
  for (const std::string& c : cells) {
    if (c.empty() || c.find_first_not_of("-:") != std::string::npos) {
      return false;
    }
  }
  return true;
}

// Parses the whole document; the first malformed line is an error naming
// it.
absl::StatusOr<ErrorsDoc> ParseErrorsDoc(absl::string_view text) {
  ErrorsDoc doc;
  enum class Table { kNone, kDriven, kBacked } table = Table::kNone;
  bool expect_separator = false;
  const std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    const int n = static_cast<int>(i) + 1;
    const absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
    const auto error = [n](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("line ", n, ": ", why));
    };
    if (absl::StartsWith(line, "Rows to come:")) {
      for (absl::string_view name :
           absl::StrSplit(line.substr(13), ',', absl::SkipWhitespace())) {
        name = absl::StripAsciiWhitespace(name);
        absl::ConsumeSuffix(&name, ".");
        absl::ConsumePrefix(&name, "`");
        absl::ConsumeSuffix(&name, "`");
        doc.rows_to_come.insert(std::string(name));
      }
      continue;
    }
    if (!absl::StartsWith(line, "|")) {
      if (expect_separator) return error("a table header without a separator");
      table = Table::kNone;
      continue;
    }
    const std::vector<std::string> cells = SplitCells(line);
    if (table == Table::kNone) {
      if (cells == kDrivenHeader) {
        table = Table::kDriven;
      } else if (cells == kBackedHeader) {
        table = Table::kBacked;
      } else {
        return error(absl::StrCat("a table whose header is neither | ",
                                  absl::StrJoin(kDrivenHeader, " | "),
                                  " | nor | ",
                                  absl::StrJoin(kBackedHeader, " | "), " |"));
      }
      expect_separator = true;
      continue;
    }
    if (expect_separator) {
      if (cells.size() != kDrivenHeader.size() || !IsSeparator(cells)) {
        return error("the line after a table header must be |---|---|...");
      }
      expect_separator = false;
      continue;
    }
    if (cells.size() != kDrivenHeader.size()) {
      return error(absl::StrCat("a row needs ", kDrivenHeader.size(),
                                " cells, has ", cells.size(),
                                " (escape a | inside a cell as \\|)"));
    }
    for (const std::string& c : cells) {
      if (c.empty()) return error("an empty cell (write - for none)");
    }
    if (table == Table::kDriven) {
      DrivenRow row;
      row.line = n;
      row.rpc = cells[0];
      row.given = cells[1];
      row.request = cells[2];
      absl::StatusOr<grpc::StatusCode> code = ParseCode(cells[3]);
      if (!code.ok()) return error(code.status().message());
      row.code = *code;
      row.message = cells[4];
      doc.driven.push_back(std::move(row));
    } else {
      BackedRow row;
      row.line = n;
      row.rpc = cells[0];
      row.condition = cells[1];
      absl::StatusOr<grpc::StatusCode> code = ParseCode(cells[2]);
      if (!code.ok()) return error(code.status().message());
      row.code = *code;
      row.message = cells[3];
      row.backed_by = cells[4];
      doc.backed.push_back(std::move(row));
    }
  }
  if (expect_separator) {
    return absl::InvalidArgumentError("a table header at the end of the file");
  }
  return doc;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string DocPath() { return ADJUTANT_SOURCE_DIR "/docs/ERRORS.md"; }

// The RPC's descriptor: "JobQueue.Enqueue" -> adjutant.v1.JobQueue.Enqueue.
absl::StatusOr<const google::protobuf::MethodDescriptor*> FindRpc(
    absl::string_view rpc) {
  const google::protobuf::MethodDescriptor* method =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
          absl::StrCat("adjutant.v1.", rpc));
  if (method == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown RPC '", rpc, "' (write Service.Method, e.g. JobQueue.Ack)"));
  }
  return method;
}

// ---- Placeholders -----------------------------------------------------------

// Expands, in a Request or Message cell: $(N*TEXT) to TEXT repeated N times
// (TEXT holds no ')'), then each $NAME of `values`. Any other $ is an error.
absl::StatusOr<std::string> Expand(
    absl::string_view text, const std::map<std::string, std::string>& values) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '$') {
      out.push_back(text[i++]);
      continue;
    }
    if (text.substr(i, 2) == "$(") {
      const size_t star = text.find('*', i);
      const size_t close = text.find(')', i);
      int64_t count = 0;
      if (star == absl::string_view::npos || close == absl::string_view::npos ||
          star > close ||
          !absl::SimpleAtoi(text.substr(i + 2, star - i - 2), &count) ||
          count < 0 || count > (16 << 20)) {
        return absl::InvalidArgumentError(
            absl::StrCat("malformed repetition at '", text.substr(i),
                         "'; write $(COUNT*TEXT)"));
      }
      const absl::string_view unit = text.substr(star + 1, close - star - 1);
      for (int64_t k = 0; k < count; ++k) absl::StrAppend(&out, unit);
      i = close + 1;
      continue;
    }
    size_t end = i + 1;
    while (end < text.size() &&
           (absl::ascii_isupper(static_cast<unsigned char>(text[end])) ||
            text[end] == '_')) {
      ++end;
    }
    const std::string name(text.substr(i, end - i));
    const auto it = values.find(name);
    if (it == values.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", name, "' is not set by this row's Given (",
          values.empty() ? "it sets none"
                         : absl::StrJoin(values, ", ",
                                         [](std::string* o, const auto& kv) {
                                           o->append(kv.first);
                                         }),
          ")"));
    }
    out.append(it->second);
    i = end;
  }
  return out;
}

// ---- The server a row runs against ------------------------------------------

// 2026-01-01 00:00:00 UTC.
const absl::Time kStart = absl::FromUnixSeconds(1767225600);

// The token file of a server that checks tokens (Givens "... token").
constexpr char kTokens[] =
    "web      producer  producer-token-0123456789\n"
    "jobs     worker    worker-token-0123456789\n"
    "elector  leader    leader-token-0123456789\n"
    "ops      admin     admin-token-0123456789\n";
// What each token Given sends as `authorization` ("" sends nothing).
const std::map<std::string, std::string>& TokenGivens() {
  static const auto* const kGivens = new std::map<std::string, std::string>{
      {"no token", ""},
      {"a wrong token", "Bearer nobody-token-0123456789"},
      {"a producer token", "Bearer producer-token-0123456789"},
      {"a worker token", "Bearer worker-token-0123456789"},
      {"a leader token", "Bearer leader-token-0123456789"},
  };
  return *kGivens;
}
constexpr char kAdminAuthorization[] = "Bearer admin-token-0123456789";

// The Givens that set up state, in the order a row names them.
const std::set<std::string>& StateGivens() {
  static const auto* const kGivens = new std::set<std::string>{
      "a pending job",    "a leased job",
      "an expired lease", "a re-leased job",
      "an acked job",     "a dead job",
      "a cancelled job",  "a leased job, cancelled",
      "schedule \"s\"",   "term 5 seen",
      "the disk is full", "the disk fails writes",
  };
  return *kGivens;
}

class RowServer {
 public:
  ~RowServer() {
    FaultySqliteVfs::Get().SetFault(FaultySqliteVfs::Fault::kNone);
    queue_.reset();
    scheduler_.reset();
    generic_.reset();
    channel_.reset();
    server_.reset();
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  absl::Status Start(bool check_tokens) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "adjutant-errors-XXXXXX")
            .string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      return absl::InternalError("mkdtemp failed");
    }
    dir_ = tmpl;
    SqliteOptions options;
    options.path = dir_ + "/adjutant.db";
    options.vfs = FaultySqliteVfs::kName;
    FaultySqliteVfs::Get().SetFault(FaultySqliteVfs::Fault::kNone);
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> store =
        SqliteJobStore::Open(options);
    if (!store.ok()) return store.status();
    AdjutantServerConfig config;  // the daemon's default limits
    config.listen_address = "127.0.0.1:0";
    config.executor_threads = 2;
    if (check_tokens) {
      absl::StatusOr<std::unique_ptr<Authorizer>> authorizer =
          Authorizer::Parse(kTokens, "tokens");
      if (!authorizer.ok()) return authorizer.status();
      config.authorizer = *std::move(authorizer);
      setup_authorization_ = kAdminAuthorization;
    }
    server_ = std::make_unique<AdjutantServer>(
        config, std::unique_ptr<JobStore>(*std::move(store)), &clock_);
    if (absl::Status s = server_->Start(); !s.ok()) return s;
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    queue_ = v1::JobQueue::NewStub(channel_);
    scheduler_ = v1::Scheduler::NewStub(channel_);
    generic_ = std::make_unique<grpc::GenericStub>(channel_);
    server_->long_poll()->AwaitTimerIdleForTest();
    return absl::OkStatus();
  }

  // Sets up one state Given; sets $JOB and $TOKEN where it has them.
  absl::Status Apply(absl::string_view given) {
    if (given == "the disk is full") {
      FaultySqliteVfs::Get().SetFault(FaultySqliteVfs::Fault::kDiskFull);
      return absl::OkStatus();
    }
    if (given == "the disk fails writes") {
      FaultySqliteVfs::Get().SetFault(FaultySqliteVfs::Fault::kIoError);
      return absl::OkStatus();
    }
    if (given == "schedule \"s\"") {
      v1::RegisterCronRequest request;
      request.set_name("s");
      request.set_schedule("0 * * * *");
      request.mutable_job()->set_job_type("t");
      v1::Cron out;
      return Check(scheduler_->RegisterCron(Context().get(), request, &out));
    }
    if (given == "term 5 seen") {
      v1::SetLeadershipRequest request;
      request.set_term(5);
      v1::Leadership out;
      return Check(scheduler_->SetLeadership(Context().get(), request, &out));
    }
    // The job Givens: one job of queue "q", type "t".
    {
      v1::EnqueueRequest request;
      request.set_queue("q");
      request.set_job_type("t");
      v1::EnqueueResponse out;
      if (absl::Status s =
              Check(queue_->Enqueue(Context().get(), request, &out));
          !s.ok()) {
        return s;
      }
      values_["$JOB"] = out.job_id();
    }
    if (given == "a pending job") return absl::OkStatus();
    if (given == "a cancelled job") return Cancel();
    if (absl::Status s = Lease(); !s.ok()) return s;
    if (given == "a leased job") return absl::OkStatus();
    if (given == "a leased job, cancelled") return Cancel();
    if (given == "an expired lease" || given == "a re-leased job") {
      // The reaper gives the job back once its lease is over.
      clock_.Advance(absl::Seconds(31));
      server_->long_poll()->AwaitTimerIdleForTest();
      if (given == "an expired lease") return absl::OkStatus();
      const std::string stale = values_["$TOKEN"];
      if (absl::Status s = Lease(); !s.ok()) return s;
      values_["$TOKEN"] = stale;
      return absl::OkStatus();
    }
    if (given == "an acked job") {
      v1::AckRequest request;
      request.set_job_id(values_["$JOB"]);
      request.set_lease_token(values_["$TOKEN"]);
      v1::AckResponse out;
      return Check(queue_->Ack(Context().get(), request, &out));
    }
    if (given == "a dead job") {
      v1::NackRequest request;
      request.set_job_id(values_["$JOB"]);
      request.set_lease_token(values_["$TOKEN"]);
      request.set_dead(true);
      v1::NackResponse out;
      return Check(queue_->Nack(Context().get(), request, &out));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unknown Given '", given, "'"));
  }

  // Sends `request` to `method` with `authorization` (if not empty).
  grpc::Status Call(const google::protobuf::MethodDescriptor* method,
                    const google::protobuf::Message& request,
                    const std::string& authorization) {
    std::string bytes;
    request.SerializeToString(&bytes);
    return CallWithBytes(
        absl::StrCat("/", method->service()->full_name(), "/", method->name()),
        bytes, authorization);
  }

  // Sends `bytes` as the request of `path` ("/package.Service/Method").
  grpc::Status CallWithBytes(const std::string& path, const std::string& bytes,
                             const std::string& authorization = "") {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer buffer(&slice, 1);
    grpc::ByteBuffer response;
    // Not Context(): the row's call carries the row's token only.
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(30));
    if (!authorization.empty()) {
      context->AddMetadata("authorization", authorization);
    }
    absl::Notification done;
    grpc::Status status;
    generic_->UnaryCall(context.get(), path, grpc::StubOptions(), &buffer,
                        &response, [&status, &done](grpc::Status s) {
                          status = std::move(s);
                          done.Notify();
                        });
    done.WaitForNotification();
    return status;
  }

  // Everything a request could change: every job and schedule with every
  // stored field, the highest term, this instance's leadership.
  absl::StatusOr<std::string> Snapshot() {
    JobStore* store = server_->store();
    std::string out;
    std::string token;
    do {
      absl::StatusOr<JobPage> page =
          store->ListJobs("", JobState::kUnspecified, 1000, token);
      if (!page.ok()) return page.status();
      for (const Job& j : page->jobs) {
        absl::StrAppend(
            &out, "job ", j.id, "|", j.queue, "|", j.type, "|", j.payload, "|",
            j.priority, "|", JobStateName(j.state), "|", j.attempts, "|",
            j.max_attempts, "|", absl::FormatTime(j.run_at), "|",
            absl::FormatTime(j.created_at), "|", absl::FormatTime(j.updated_at),
            "|", j.last_error, "|", j.idempotency_key, "|",
            absl::FormatTime(j.lease_expires_at), "|", j.lease_token, "|",
            j.worker_id, "|", j.cron_name, "|",
            absl::FormatTime(j.cron_tick_time), "|", j.seq, "\n");
      }
      token = page->next_page_token;
    } while (!token.empty());
    do {
      absl::StatusOr<CronPage> page = store->ListCrons(1000, token);
      if (!page.ok()) return page.status();
      for (const CronRecord& r : page->crons) {
        const CronDefinition& d = r.definition;
        const CronState& s = r.state;
        absl::StrAppend(&out, "cron ", d.name, "|", d.schedule, "|", d.timezone,
                        "|", d.job.queue, "|", d.job.type, "|", d.job.payload,
                        "|", d.job.priority, "|", d.job.max_attempts, "|",
                        static_cast<int>(d.misfire_policy), "|",
                        absl::FormatDuration(d.catchup_window), "|",
                        static_cast<int>(d.overlap_policy), "|", d.paused, "|",
                        absl::FormatTime(s.next_fire_time), "|",
                        absl::FormatTime(s.last_fire_time), "|", s.last_job_id,
                        "|", s.fired_count, "|", s.missed_count, "|",
                        s.overlap_skipped_count, "|",
                        absl::FormatTime(s.waiting_tick_time), "|",
                        absl::FormatTime(r.created_at), "|",
                        absl::FormatTime(r.updated_at), "|", r.version, "\n");
      }
      token = page->next_page_token;
    } while (!token.empty());
    absl::StatusOr<uint64_t> highest = store->HighestTerm();
    if (!highest.ok()) return highest.status();
    absl::StatusOr<LeadershipState> leadership =
        server_->scheduler()->GetLeadership();
    if (!leadership.ok()) return leadership.status();
    absl::StrAppend(&out, "highest term ", *highest, "; leader ",
                    leadership->leader, " term ", leadership->term, "\n");
    return out;
  }

  const std::map<std::string, std::string>& values() const { return values_; }
  AdjutantServer* server() { return server_.get(); }

 private:
  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    // Real time: only a guard against a hung test.
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(30));
    if (!setup_authorization_.empty()) {
      context->AddMetadata("authorization", setup_authorization_);
    }
    return context;
  }

  static absl::Status Check(const grpc::Status& status) {
    if (status.ok()) return absl::OkStatus();
    return absl::InternalError(
        absl::StrCat("setting up the Given failed: ", status.error_code(), ": ",
                     status.error_message()));
  }

  absl::Status Lease() {
    v1::DequeueRequest request;
    request.set_queue("q");
    v1::DequeueResponse out;
    if (absl::Status s = Check(queue_->Dequeue(Context().get(), request, &out));
        !s.ok()) {
      return s;
    }
    if (out.jobs_size() != 1 || out.jobs(0).job().job_id() != values_["$JOB"]) {
      return absl::InternalError(
          "setting up the Given: the job was not leased");
    }
    values_["$TOKEN"] = out.jobs(0).lease_token();
    return absl::OkStatus();
  }

  absl::Status Cancel() {
    v1::CancelJobRequest request;
    request.set_job_id(values_["$JOB"]);
    v1::Job out;
    return Check(queue_->CancelJob(Context().get(), request, &out));
  }

  SimulatedClock clock_{kStart};
  std::string dir_;
  std::unique_ptr<AdjutantServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobQueue::Stub> queue_;
  std::unique_ptr<v1::Scheduler::Stub> scheduler_;
  std::unique_ptr<grpc::GenericStub> generic_;
  // The admin token for the Givens' own calls, when tokens are checked.
  std::string setup_authorization_;
  std::map<std::string, std::string> values_;  // $JOB, $TOKEN
};

// Runs one row. OK if the server answered as the row says and changed
// nothing; otherwise what differed.
absl::Status CheckRow(const DrivenRow& row) {
  absl::StatusOr<const google::protobuf::MethodDescriptor*> method =
      FindRpc(row.rpc);
  if (!method.ok()) return method.status();
  if ((*method)->client_streaming() || (*method)->server_streaming()) {
    return absl::InvalidArgumentError(
        absl::StrCat(row.rpc,
                     " streams; this test drives unary RPCs only: put its rows "
                     "in a backed table"));
  }
  if (row.code == grpc::StatusCode::OK) {
    return absl::InvalidArgumentError("a row's Code is an error code");
  }
  // The Givens: at most one token Given (the server then checks tokens),
  // state Givens in order.
  std::string authorization;
  bool check_tokens = false;
  std::vector<std::string> state_givens;
  if (row.given != "-") {
    for (absl::string_view part : absl::StrSplit(row.given, " + ")) {
      const std::string given(absl::StripAsciiWhitespace(part));
      if (const auto it = TokenGivens().find(given);
          it != TokenGivens().end()) {
        if (check_tokens) {
          return absl::InvalidArgumentError("more than one token Given");
        }
        check_tokens = true;
        authorization = it->second;
      } else if (StateGivens().count(given) != 0) {
        state_givens.push_back(given);
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "unknown Given '", given, "'; known: -, ",
            absl::StrJoin(StateGivens(), ", "), ", ",
            absl::StrJoin(
                TokenGivens(), ", ",
                [](std::string* o, const auto& kv) { o->append(kv.first); })));
      }
    }
  }

  RowServer server;
  if (absl::Status s = server.Start(check_tokens); !s.ok()) return s;
  for (const std::string& given : state_givens) {
    if (absl::Status s = server.Apply(given); !s.ok()) return s;
  }
  std::unique_ptr<google::protobuf::Message> request(
      google::protobuf::MessageFactory::generated_factory()
          ->GetPrototype((*method)->input_type())
          ->New());
  if (row.request != "-") {
    absl::StatusOr<std::string> text = Expand(row.request, server.values());
    if (!text.ok()) return text.status();
    if (!google::protobuf::TextFormat::ParseFromString(*text, request.get())) {
      return absl::InvalidArgumentError(
          absl::StrCat("Request is not a ", (*method)->input_type()->name(),
                       " in protobuf text format"));
    }
  }
  absl::StatusOr<std::string> expected = Expand(row.message, server.values());
  if (!expected.ok()) return expected.status();

  absl::StatusOr<std::string> before = server.Snapshot();
  if (!before.ok()) return before.status();
  const grpc::Status status = server.Call(*method, *request, authorization);
  FaultySqliteVfs::Get().SetFault(FaultySqliteVfs::Fault::kNone);
  absl::StatusOr<std::string> after = server.Snapshot();
  if (!after.ok()) return after.status();

  std::vector<std::string> problems;
  if (status.error_code() != row.code) {
    problems.push_back(absl::StrCat("answered code ", status.error_code(),
                                    ", the row says ", row.code));
  }
  if (!absl::StrContains(status.error_message(), *expected)) {
    problems.push_back(
        absl::StrCat("the message does not contain '", *expected, "'"));
  }
  if (*before != *after) {
    problems.push_back(absl::StrCat("the store changed:\nbefore:\n", *before,
                                    "after:\n", *after));
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      absl::StrJoin(problems, "; "), " (answer: ", status.error_code(), " \"",
      status.error_message(), "\")"));
}

// Whether a test named "Suite.Name" (TEST, TEST_F or TEST_P) is in `sources`.
bool TestExists(absl::string_view backed_by, const std::string& sources) {
  const std::vector<std::string> parts = absl::StrSplit(backed_by, '.');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) return false;
  const std::regex pattern(absl::StrCat(R"(\bTEST(_F|_P)?\(\s*)", parts[0],
                                        R"(\s*,\s*)", parts[1], R"(\s*\))"));
  return std::regex_search(sources, pattern);
}

// Every C++ source under tests/, concatenated.
std::string TestSources() {
  std::string all;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(
           ADJUTANT_SOURCE_DIR "/tests")) {
    if (entry.is_regular_file() && entry.path().extension() == ".cc") {
      absl::StrAppend(&all, ReadFile(entry.path().string()), "\n");
    }
  }
  return all;
}

class ErrorsDocTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::off); }
  static void TearDownTestSuite() { spdlog::set_level(spdlog::level::info); }

  void SetUp() override {
    const std::string text = ReadFile(DocPath());
    ASSERT_FALSE(text.empty()) << DocPath() << " is missing or empty";
    absl::StatusOr<ErrorsDoc> doc = ParseErrorsDoc(text);
    ASSERT_TRUE(doc.ok()) << DocPath() << ": " << doc.status().message();
    doc_ = *std::move(doc);
  }

  ErrorsDoc doc_;
};

TEST_F(ErrorsDocTest, EveryDrivenRowHolds) {
  ASSERT_FALSE(doc_.driven.empty());
  for (const DrivenRow& row : doc_.driven) {
    absl::Status s = CheckRow(row);
    EXPECT_TRUE(s.ok()) << "docs/ERRORS.md:" << row.line << ": " << row.rpc
                        << " | " << row.given << " | " << row.request << ": "
                        << s.message();
  }
}

TEST_F(ErrorsDocTest, EveryRpcHasARow) {
  std::set<std::string> with_rows;
  for (const DrivenRow& row : doc_.driven) with_rows.insert(row.rpc);
  for (const BackedRow& row : doc_.backed) with_rows.insert(row.rpc);
  for (const std::string& rpc : with_rows) {
    if (rpc == "*") continue;
    EXPECT_TRUE(FindRpc(rpc).ok()) << FindRpc(rpc).status().message();
  }
  for (const char* name : kServices) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
            name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string rpc =
          absl::StrCat(service->name(), ".", service->method(i)->name());
      if (doc_.rows_to_come.count(rpc) != 0) {
        EXPECT_EQ(with_rows.count(rpc), 0u)
            << rpc << " has rows now: take it out of \"Rows to come:\"";
        std::cout << "docs/ERRORS.md: " << rpc << ": rows to come\n";
        continue;
      }
      EXPECT_EQ(with_rows.count(rpc), 1u)
          << rpc << " has no row in docs/ERRORS.md";
    }
  }
  for (const std::string& rpc : doc_.rows_to_come) {
    EXPECT_TRUE(FindRpc(rpc).ok()) << "Rows to come: " << rpc;
  }
}

TEST_F(ErrorsDocTest, EveryBackedRowNamesATestThatExists) {
  const std::string sources = TestSources();
  ASSERT_FALSE(sources.empty());
  for (const BackedRow& row : doc_.backed) {
    EXPECT_TRUE(row.rpc == "*" || FindRpc(row.rpc).ok())
        << "docs/ERRORS.md:" << row.line << ": unknown RPC " << row.rpc;
    EXPECT_TRUE(TestExists(row.backed_by, sources))
        << "docs/ERRORS.md:" << row.line << ": no TEST(" << row.backed_by
        << ") (TEST_F, TEST_P) under tests/; write Suite.Name";
  }
}

// The checks themselves can fail.
TEST_F(ErrorsDocTest, MalformedTablesAreRefused) {
  const std::string header =
      "| RPC | Given | Request | Code | Message contains "
      "|\n|---|---|---|---|---"
      "|\n";
  EXPECT_TRUE(ParseErrorsDoc(header + "| JobQueue.Ack | - | - | "
                                      "INVALID_ARGUMENT | `job_id: required` |")
                  .ok());
  // Unknown header, missing separator, wrong cell count, bad code, empty
  // cell.
  EXPECT_FALSE(ParseErrorsDoc("| RPC | Given | Code |\n|---|---|---|\n").ok());
  EXPECT_FALSE(
      ParseErrorsDoc("| RPC | Given | Request | Code | Message contains |\n"
                     "| JobQueue.Ack | - | - | INVALID_ARGUMENT | x |\n")
          .ok());
  EXPECT_FALSE(ParseErrorsDoc(header + "| JobQueue.Ack | - | - | x |\n").ok());
  EXPECT_FALSE(
      ParseErrorsDoc(header + "| JobQueue.Ack | - | - | NOPE | x |\n").ok());
  EXPECT_FALSE(
      ParseErrorsDoc(header + "| JobQueue.Ack | - | | OK | x |\n").ok());
  // A pipe inside a cell is written \|.
  absl::StatusOr<ErrorsDoc> doc = ParseErrorsDoc(
      header + "| JobQueue.Ack | - | `job_id: \"a\\|b\"` | NOT_FOUND | x |\n");
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ(doc->driven[0].request, "job_id: \"a|b\"");
}

TEST_F(ErrorsDocTest, ARowThatDoesNotHoldFails) {
  DrivenRow row;
  row.rpc = "JobQueue.GetJob";
  row.given = "-";
  row.request = "job_id: \"nope\"";
  row.code = grpc::StatusCode::NOT_FOUND;
  row.message = "job nope not found";
  EXPECT_TRUE(CheckRow(row).ok()) << CheckRow(row).message();
  DrivenRow wrong_code = row;
  wrong_code.code = grpc::StatusCode::INVALID_ARGUMENT;
  EXPECT_FALSE(CheckRow(wrong_code).ok());
  DrivenRow wrong_message = row;
  wrong_message.message = "job_id: required";
  EXPECT_FALSE(CheckRow(wrong_message).ok());
  DrivenRow unknown_rpc = row;
  unknown_rpc.rpc = "JobQueue.GetJobs";
  EXPECT_FALSE(CheckRow(unknown_rpc).ok());
  DrivenRow unknown_given = row;
  unknown_given.given = "a lost job";
  EXPECT_FALSE(CheckRow(unknown_given).ok());
  DrivenRow unset_placeholder = row;
  unset_placeholder.request = "job_id: \"$JOB\"";
  EXPECT_FALSE(CheckRow(unset_placeholder).ok());
  DrivenRow bad_request = row;
  bad_request.request = "job: \"nope\"";
  EXPECT_FALSE(CheckRow(bad_request).ok());
  // A request that changes the store: an accepted Enqueue is caught even
  // when the row's code were right.
  DrivenRow changes = row;
  changes.rpc = "JobQueue.Enqueue";
  changes.request = "job_type: \"t\"";
  EXPECT_FALSE(CheckRow(changes).ok());
  EXPECT_TRUE(
      absl::StrContains(CheckRow(changes).message(), "the store changed"));
}

// Bytes that are no protobuf message (a field number 0, a truncated
// length): INVALID_ARGUMENT naming the request type, on every unary RPC,
// and nothing changes. An RPC the server does not have stays UNIMPLEMENTED.
TEST_F(ErrorsDocTest, UnparsableBytesAreInvalidArgument) {
  RowServer server;
  ASSERT_TRUE(server.Start(/*check_tokens=*/false).ok());
  ASSERT_TRUE(server.Apply("a leased job").ok());
  absl::StatusOr<std::string> before = server.Snapshot();
  ASSERT_TRUE(before.ok()) << before.status();
  int checked = 0;
  for (const char* name : kServices) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
            name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* method = service->method(i);
      if (method->client_streaming() || method->server_streaming()) continue;
      const std::string path =
          absl::StrCat("/", service->full_name(), "/", method->name());
      for (const std::string& garbage :
           {std::string("\x00\x01", 2), std::string("\x0a\x7f", 2)}) {
        const grpc::Status status = server.CallWithBytes(path, garbage);
        const grpc::Status expected = MalformedRequestStatus(path);
        EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
            << path << ": " << status.error_message();
        EXPECT_EQ(status.error_message(), expected.error_message()) << path;
        EXPECT_TRUE(
            absl::StrContains(status.error_message(),
                              absl::StrCat("request: not a valid ",
                                           method->input_type()->full_name())))
            << path;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 30);
  EXPECT_EQ(server.Snapshot().value_or(""), *before);
  // The RPC metrics count the answer the client got.
  const std::string metrics = server.server()->metrics()->registry()->Render();
  EXPECT_TRUE(absl::StrContains(
      metrics,
      "method=\"adjutant.v1.JobQueue/Enqueue\",code=\"INVALID_ARGUMENT\""))
      << metrics;
  EXPECT_FALSE(absl::StrContains(metrics, "code=\"UNIMPLEMENTED\"")) << metrics;
  const grpc::Status unknown =
      server.CallWithBytes("/adjutant.v1.JobQueue/NoSuchRpc", "");
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::UNIMPLEMENTED)
      << unknown.error_message();
}

TEST_F(ErrorsDocTest, BackingTestsAreFoundByName) {
  const std::string sources =
      "TEST_F(ShutdownTest, NewCallsAreRefused) {}\nTEST_P( Stores , X ) {}";
  EXPECT_TRUE(TestExists("ShutdownTest.NewCallsAreRefused", sources));
  EXPECT_TRUE(TestExists("Stores.X", sources));
  EXPECT_FALSE(TestExists("ShutdownTest.NewCalls", sources));
  EXPECT_FALSE(TestExists("ShutdownTest", sources));
}

TEST_F(ErrorsDocTest, RepetitionsAndPlaceholdersExpand) {
  const std::map<std::string, std::string> values = {{"$JOB", "j1"}};
  EXPECT_EQ(*Expand("a$(3*xy)b $JOB", values), "axyxyxyb j1");
  EXPECT_FALSE(Expand("$TOKEN", values).ok());
  EXPECT_FALSE(Expand("$(x*y)", values).ok());
}

}  // namespace
}  // namespace adjutant
