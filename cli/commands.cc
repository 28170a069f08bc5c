#include "cli/commands.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "client/client.h"

namespace adjutant {
namespace cli {
namespace {

// A bad argument found after parsing (a value CLI11 cannot check itself)
// is an INVALID_ARGUMENT carrying this payload, so that Run() tells it from
// the server's INVALID_ARGUMENT. Its message names the option at fault.
constexpr char kUsagePayload[] = "adjutant.cli/usage";

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

// ---- Parsing values --------------------------------------------------------

absl::StatusOr<absl::Duration> ParseNonNegativeDuration(
    const std::string& option, const std::string& text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d)) {
    return UsageError(absl::StrCat(
        option, ": '", text, "' is not a duration (e.g. 30s, 1m30s, 2h)"));
  }
  if (d < absl::ZeroDuration()) {
    return UsageError(absl::StrCat(option, ": '", text, "' is negative"));
  }
  return d;
}

absl::StatusOr<absl::Time> ParseRfc3339(const std::string& option,
                                        const std::string& text) {
  absl::Time t;
  std::string why;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &why)) {
    return UsageError(absl::StrCat(
        option, ": '", text,
        "' is not an RFC 3339 time (e.g. 2026-01-02T09:00:00Z): ", why));
  }
  return t;
}

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t seconds = absl::ToUnixSeconds(t);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(
      absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(seconds))));
}

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

// Parses an enum value given as e.g. "fire-once", "FIRE_ONCE" or the full
// proto name, against `names` (the suffixes after `prefix`).
template <typename Enum>
absl::StatusOr<Enum> ParseEnum(
    const std::string& option, const std::string& text,
    const std::string& prefix,
    const std::vector<std::pair<std::string, Enum>>& names) {
  std::string upper = absl::AsciiStrToUpper(text);
  std::replace(upper.begin(), upper.end(), '-', '_');
  if (upper.rfind(prefix, 0) == 0) upper = upper.substr(prefix.size());
  std::vector<std::string> known;
  for (const auto& [name, value] : names) {
    if (upper == name) return value;
    std::string lower = absl::AsciiStrToLower(name);
    std::replace(lower.begin(), lower.end(), '_', '-');
    known.push_back(lower);
  }
  return UsageError(absl::StrCat(option, ": unknown value '", text,
                                 "' (one of ", absl::StrJoin(known, ", "),
                                 ")"));
}

absl::StatusOr<v1::JobState> ParseJobState(const std::string& text) {
  return ParseEnum<v1::JobState>("--state", text, "JOB_STATE_",
                                 {{"PENDING", v1::JOB_STATE_PENDING},
                                  {"LEASED", v1::JOB_STATE_LEASED},
                                  {"SUCCEEDED", v1::JOB_STATE_SUCCEEDED},
                                  {"DEAD", v1::JOB_STATE_DEAD},
                                  {"CANCELLED", v1::JOB_STATE_CANCELLED}});
}

// ---- Output ----------------------------------------------------------------

std::string FormatTime(const google::protobuf::Timestamp& ts) {
  const absl::Time t =
      absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", t, absl::UTCTimeZone());
}

std::string FormatDuration(const google::protobuf::Duration& d) {
  return absl::FormatDuration(absl::Seconds(d.seconds()) +
                              absl::Nanoseconds(d.nanos()));
}

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  if (name.rfind("JOB_STATE_", 0) == 0) name = name.substr(10);
  return name;
}

// Shows a payload as text when it is printable, else by its size.
std::string ShowPayload(const std::string& payload) {
  const bool printable =
      std::all_of(payload.begin(), payload.end(),
                  [](unsigned char c) { return std::isprint(c) || c == '\t'; });
  if (printable) return payload;
  return absl::StrCat("<", payload.size(), " bytes>");
}

// Rows of cells printed as columns separated by two spaces, each as wide as
// its widest cell; the last column is not padded.
void PrintTable(std::ostream& out,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) {
        line.append(widths[i] - row[i].size() + 2, ' ');
      }
    }
    out << line << "\n";
  }
}

void PrintJobRecord(std::ostream& out, const v1::Job& job) {
  std::vector<std::vector<std::string>> rows = {
      {"job_id", job.job_id()},
      {"queue", job.queue()},
      {"job_type", job.job_type()},
      {"state", StateName(job.state())},
      {"priority", absl::StrCat(job.priority())},
      {"attempts", absl::StrCat(job.attempts(), "/", job.max_attempts())},
      {"payload", ShowPayload(job.payload())},
  };
  if (job.has_run_at()) rows.push_back({"run_at", FormatTime(job.run_at())});
  if (job.has_created_at()) {
    rows.push_back({"created_at", FormatTime(job.created_at())});
  }
  if (job.has_updated_at()) {
    rows.push_back({"updated_at", FormatTime(job.updated_at())});
  }
  if (job.has_lease_expires_at()) {
    rows.push_back({"lease_expires_at", FormatTime(job.lease_expires_at())});
  }
  if (!job.worker_id().empty()) rows.push_back({"worker_id", job.worker_id()});
  if (!job.last_error().empty()) {
    rows.push_back({"last_error", job.last_error()});
  }
  if (!job.idempotency_key().empty()) {
    rows.push_back({"idempotency_key", job.idempotency_key()});
  }
  if (!job.cron_name().empty()) rows.push_back({"cron_name", job.cron_name()});
  if (job.has_cron_tick_time()) {
    rows.push_back({"cron_tick_time", FormatTime(job.cron_tick_time())});
  }
  PrintTable(out, rows);
}

void PrintJobTable(std::ostream& out, const std::vector<const v1::Job*>& jobs) {
  std::vector<std::vector<std::string>> rows = {
      {"JOB_ID", "QUEUE", "TYPE", "STATE", "PRIORITY", "ATTEMPTS", "RUN_AT"}};
  for (const v1::Job* job : jobs) {
    rows.push_back({job->job_id(), job->queue(), job->job_type(),
                    StateName(job->state()), absl::StrCat(job->priority()),
                    absl::StrCat(job->attempts(), "/", job->max_attempts()),
                    job->has_run_at() ? FormatTime(job->run_at()) : "-"});
  }
  PrintTable(out, rows);
}

std::string PolicyName(const std::string& full, const std::string& prefix) {
  std::string name =
      full.rfind(prefix, 0) == 0 ? full.substr(prefix.size()) : full;
  return name;
}

void PrintCronRecord(std::ostream& out, const v1::Cron& cron) {
  std::vector<std::vector<std::string>> rows = {
      {"name", cron.name()},
      {"schedule", cron.schedule()},
      {"timezone", cron.timezone()},
      {"queue", cron.job().queue()},
      {"job_type", cron.job().job_type()},
      {"payload", ShowPayload(cron.job().payload())},
      {"priority", absl::StrCat(cron.job().priority())},
      {"max_attempts", absl::StrCat(cron.job().max_attempts())},
      {"misfire_policy",
       PolicyName(v1::MisfirePolicy_Name(cron.misfire_policy()),
                  "MISFIRE_POLICY_")},
      {"catchup_window", FormatDuration(cron.catchup_window())},
      {"overlap_policy",
       PolicyName(v1::OverlapPolicy_Name(cron.overlap_policy()),
                  "OVERLAP_POLICY_")},
      {"paused", cron.paused() ? "yes" : "no"},
      {"next_fire_time",
       cron.has_next_fire_time() ? FormatTime(cron.next_fire_time()) : "-"},
      {"last_fire_time",
       cron.has_last_fire_time() ? FormatTime(cron.last_fire_time()) : "-"},
      {"last_job_id", cron.last_job_id().empty() ? "-" : cron.last_job_id()},
      {"fired_count", absl::StrCat(cron.fired_count())},
      {"missed_count", absl::StrCat(cron.missed_count())},
      {"overlap_skipped_count", absl::StrCat(cron.overlap_skipped_count())},
  };
  if (cron.has_created_at()) {
    rows.push_back({"created_at", FormatTime(cron.created_at())});
  }
  PrintTable(out, rows);
}

void PrintLeadership(std::ostream& out, const v1::Leadership& leadership) {
  PrintTable(out, {{"leader", leadership.leader() ? "yes" : "no"},
                   {"term", absl::StrCat(leadership.term())},
                   {"expires_at", leadership.has_expires_at()
                                      ? FormatTime(leadership.expires_at())
                                      : "-"},
                   {"highest_term", absl::StrCat(leadership.highest_term())}});
}

// ---- The command line
// --------------------------------------------------------

// What every command shares, filled by the top-level options.
struct GlobalOptions {
  std::string server;
  bool json = false;
  std::string timeout = "10s";
  // Access control; empty: from the environment, else none.
  std::string token;
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_server_name;
};

class CommandLine {
 public:
  CommandLine(std::istream& in, std::ostream& out, std::ostream& err)
      : in_(in), out_(out), err_(err) {}

  int Run(const std::vector<std::string>& args, const CliEnvironment& env);

 private:
  using Action = std::function<absl::Status()>;

  void AddEnqueue(CLI::App& app);
  void AddDequeue(CLI::App& app);
  void AddAckNackExtend(CLI::App& app);
  void AddJobs(CLI::App& app);
  void AddCron(CLI::App& app);
  void AddLeader(CLI::App& app);
  void AddStats(CLI::App& app);

  // Registers `action` to run when `command` was chosen.
  void OnChosen(CLI::App* command, Action action) {
    command->callback([this, action] { action_ = action; });
  }

  // Prints `message` as JSON (--json) or calls `human`.
  absl::Status Print(const google::protobuf::Message& message,
                     const std::function<void()>& human);

  // Reads the payload from --payload-file (or "-" meaning stdin), or the
  // positional argument (or "-" meaning stdin).
  absl::StatusOr<std::string> ReadPayload(const std::string& positional,
                                          const std::string& file);

  // Fetches a schedule, flips `paused`, registers it back.
  absl::Status SetPaused(const std::string& name, bool paused);

  std::istream& in_;
  std::ostream& out_;
  std::ostream& err_;
  GlobalOptions global_;
  std::unique_ptr<Client> client_;
  Action action_;

  // Option values, one set per command (only one command runs).
  std::string queue_;
  std::string job_type_;
  std::string payload_;
  std::string payload_file_;
  std::string run_at_;
  std::string delay_;
  int32_t priority_ = 0;
  int32_t max_attempts_ = 0;
  std::string idempotency_key_;
  std::vector<std::string> job_types_;
  int32_t max_jobs_ = 1;
  std::string lease_;
  std::string wait_;
  std::string worker_id_;
  std::string job_id_;
  std::string lease_token_;
  std::string error_text_;
  std::string retry_after_;
  bool dead_ = false;
  std::string state_;
  int32_t page_size_ = 0;
  std::string name_;
  std::string schedule_;
  std::string timezone_;
  std::string misfire_;
  std::string overlap_;
  std::string catchup_window_;
  bool paused_ = false;
  int32_t count_ = 5;
  std::string after_;
  uint64_t term_ = 0;
  std::string ttl_;
  bool revoke_ = false;
};

absl::Status CommandLine::Print(const google::protobuf::Message& message,
                                const std::function<void()>& human) {
  if (!global_.json) {
    human();
    return absl::OkStatus();
  }
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print JSON: ", status.ToString()));
  }
  out_ << json;
  if (json.empty() || json.back() != '\n') out_ << "\n";
  return absl::OkStatus();
}

absl::StatusOr<std::string> CommandLine::ReadPayload(
    const std::string& positional, const std::string& file) {
  if (!positional.empty() && !file.empty()) {
    return UsageError(
        "--payload-file: give the payload either as an argument or as a "
        "file, not both");
  }
  if (positional == "-" || file == "-") {
    return std::string(std::istreambuf_iterator<char>(in_),
                       std::istreambuf_iterator<char>());
  }
  if (!file.empty()) {
    std::ifstream stream(file, std::ios::binary);
    if (!stream) {
      return UsageError(
          absl::StrCat("--payload-file: cannot read '", file, "'"));
    }
    return std::string(std::istreambuf_iterator<char>(stream),
                       std::istreambuf_iterator<char>());
  }
  return positional;
}

void CommandLine::AddEnqueue(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("enqueue", "Store one job");
  cmd->add_option("type", job_type_, "The job's type (workers dispatch on it)")
      ->required();
  cmd->add_option("payload", payload_,
                  "The payload; '-' reads it from stdin (default: empty)");
  cmd->add_option("-q,--queue", queue_, "The queue (default: \"default\")");
  cmd->add_option("--payload-file", payload_file_,
                  "Read the payload from this file ('-': stdin)");
  auto* run_at = cmd->add_option("--run-at", run_at_,
                                 "Not runnable before this RFC 3339 time");
  auto* delay = cmd->add_option(
      "--delay", delay_, "Not runnable before this long from now (e.g. 90s)");
  run_at->excludes(delay);
  cmd->add_option("-p,--priority", priority_, "Higher runs first (default 0)");
  cmd->add_option("--max-attempts", max_attempts_,
                  "Leases allowed before the job goes DEAD (0: the server's "
                  "default)");
  cmd->add_option("-k,--idempotency-key", idempotency_key_,
                  "A second enqueue with this key in the queue stores nothing");
  OnChosen(cmd, [this]() -> absl::Status {
    v1::EnqueueRequest request;
    request.set_queue(queue_);
    request.set_job_type(job_type_);
    absl::StatusOr<std::string> payload = ReadPayload(payload_, payload_file_);
    if (!payload.ok()) return payload.status();
    request.set_payload(*payload);
    request.set_priority(priority_);
    request.set_max_attempts(max_attempts_);
    request.set_idempotency_key(idempotency_key_);
    if (!run_at_.empty()) {
      absl::StatusOr<absl::Time> t = ParseRfc3339("--run-at", run_at_);
      if (!t.ok()) return t.status();
      SetTimestamp(*t, request.mutable_run_at());
    } else if (!delay_.empty()) {
      absl::StatusOr<absl::Duration> d =
          ParseNonNegativeDuration("--delay", delay_);
      if (!d.ok()) return d.status();
      SetTimestamp(absl::Now() + *d, request.mutable_run_at());
    }
    absl::StatusOr<v1::EnqueueResponse> response = client_->Enqueue(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] {
      PrintTable(out_,
                 {{"JOB_ID", "DUPLICATE"},
                  {response->job_id(), response->duplicate() ? "yes" : "no"}});
    });
  });
}

void CommandLine::AddDequeue(CLI::App& app) {
  CLI::App* cmd =
      app.add_subcommand("dequeue", "Lease jobs (prints their lease tokens)");
  cmd->add_option("-q,--queue", queue_, "The queue (default: \"default\")");
  cmd->add_option("-t,--type", job_types_,
                  "Lease only jobs of this type (repeatable)");
  cmd->add_option("-n,--max-jobs", max_jobs_, "How many jobs at most")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--lease", lease_, "Lease duration (default 30s)");
  cmd->add_option("--wait", wait_,
                  "Long-poll this long for a job (default: return at once)");
  cmd->add_option("--worker-id", worker_id_, "Who is asking (for operators)");
  OnChosen(cmd, [this]() -> absl::Status {
    v1::DequeueRequest request;
    request.set_queue(queue_);
    for (const std::string& type : job_types_) request.add_job_types(type);
    request.set_max_jobs(max_jobs_);
    request.set_worker_id(worker_id_);
    if (!lease_.empty()) {
      absl::StatusOr<absl::Duration> d =
          ParseNonNegativeDuration("--lease", lease_);
      if (!d.ok()) return d.status();
      SetDuration(*d, request.mutable_lease_duration());
    }
    if (!wait_.empty()) {
      absl::StatusOr<absl::Duration> d =
          ParseNonNegativeDuration("--wait", wait_);
      if (!d.ok()) return d.status();
      SetDuration(*d, request.mutable_wait());
    }
    absl::StatusOr<v1::DequeueResponse> response = client_->Dequeue(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] {
      std::vector<std::vector<std::string>> rows = {
          {"JOB_ID", "QUEUE", "TYPE", "ATTEMPTS", "LEASE_EXPIRES_AT",
           "LEASE_TOKEN", "PAYLOAD"}};
      for (const v1::LeasedJob& leased : response->jobs()) {
        const v1::Job& job = leased.job();
        rows.push_back({job.job_id(), job.queue(), job.job_type(),
                        absl::StrCat(job.attempts(), "/", job.max_attempts()),
                        FormatTime(leased.lease_expires_at()),
                        leased.lease_token(), ShowPayload(job.payload())});
      }
      if (response->jobs().empty()) {
        out_ << "no job available\n";
      } else {
        PrintTable(out_, rows);
      }
    });
  });
}

void CommandLine::AddAckNackExtend(CLI::App& app) {
  CLI::App* ack = app.add_subcommand("ack", "Mark a leased job SUCCEEDED");
  ack->add_option("job_id", job_id_, "The job")->required();
  ack->add_option("lease_token", lease_token_, "The token of its lease")
      ->required();
  OnChosen(ack, [this]() -> absl::Status {
    v1::AckRequest request;
    request.set_job_id(job_id_);
    request.set_lease_token(lease_token_);
    absl::StatusOr<v1::AckResponse> response = client_->Ack(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] { out_ << "acked " << job_id_ << "\n"; });
  });

  CLI::App* nack = app.add_subcommand(
      "nack", "Give a leased job back: retried later, or DEAD");
  nack->add_option("job_id", job_id_, "The job")->required();
  nack->add_option("lease_token", lease_token_, "The token of its lease")
      ->required();
  nack->add_option("-e,--error", error_text_, "Why the work failed");
  nack->add_option("--retry-after", retry_after_,
                   "Retry no sooner than this (default: the server's backoff)");
  nack->add_flag("--dead", dead_, "No more retries: the job goes DEAD now");
  OnChosen(nack, [this]() -> absl::Status {
    v1::NackRequest request;
    request.set_job_id(job_id_);
    request.set_lease_token(lease_token_);
    request.set_error(error_text_);
    request.set_dead(dead_);
    if (!retry_after_.empty()) {
      absl::StatusOr<absl::Duration> d =
          ParseNonNegativeDuration("--retry-after", retry_after_);
      if (!d.ok()) return d.status();
      SetDuration(*d, request.mutable_retry_after());
    }
    absl::StatusOr<v1::NackResponse> response = client_->Nack(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] { PrintJobRecord(out_, response->job()); });
  });

  CLI::App* extend = app.add_subcommand("extend", "Extend a lease from now on");
  extend->add_option("job_id", job_id_, "The job")->required();
  extend->add_option("lease_token", lease_token_, "The token of its lease")
      ->required();
  extend->add_option("--lease", lease_, "New lease duration (default 30s)");
  OnChosen(extend, [this]() -> absl::Status {
    v1::ExtendLeaseRequest request;
    request.set_job_id(job_id_);
    request.set_lease_token(lease_token_);
    if (!lease_.empty()) {
      absl::StatusOr<absl::Duration> d =
          ParseNonNegativeDuration("--lease", lease_);
      if (!d.ok()) return d.status();
      SetDuration(*d, request.mutable_lease_duration());
    }
    absl::StatusOr<v1::ExtendLeaseResponse> response =
        client_->ExtendLease(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] {
      PrintTable(out_, {{"job_id", job_id_},
                        {"lease_expires_at",
                         FormatTime(response->lease_expires_at())}});
    });
  });
}

void CommandLine::AddJobs(CLI::App& app) {
  CLI::App* jobs = app.add_subcommand("jobs", "List and manage jobs");
  jobs->require_subcommand(0, 1);

  CLI::App* list =
      jobs->add_subcommand("list", "List jobs, oldest first (every page)");
  list->add_option("-q,--queue", queue_, "Only this queue (default: all)");
  list->add_option("-s,--state", state_,
                   "Only this state: pending, leased, succeeded, dead, "
                   "cancelled (default: all)");
  list->add_option("--page-size", page_size_,
                   "Jobs per request while paging (default: the server's)")
      ->check(CLI::Range(0, 1000));
  OnChosen(list, [this]() -> absl::Status {
    v1::ListJobsRequest request;
    request.set_queue(queue_);
    if (!state_.empty()) {
      absl::StatusOr<v1::JobState> state = ParseJobState(state_);
      if (!state.ok()) return state.status();
      request.set_state(*state);
    }
    request.set_page_size(page_size_);
    // Every page, gathered into one response.
    v1::ListJobsResponse all;
    do {
      absl::StatusOr<v1::ListJobsResponse> page = client_->ListJobs(request);
      if (!page.ok()) return page.status();
      for (v1::Job& job : *page->mutable_jobs()) {
        *all.add_jobs() = std::move(job);
      }
      request.set_page_token(page->next_page_token());
    } while (!request.page_token().empty());
    return Print(all, [&] {
      std::vector<const v1::Job*> jobs;
      for (const v1::Job& job : all.jobs()) jobs.push_back(&job);
      PrintJobTable(out_, jobs);
    });
  });

  CLI::App* get = jobs->add_subcommand("get", "Show one job");
  CLI::App* cancel =
      jobs->add_subcommand("cancel", "Cancel a PENDING or LEASED job");
  CLI::App* requeue = jobs->add_subcommand(
      "requeue", "Make a DEAD or CANCELLED job PENDING again");
  for (CLI::App* cmd : {get, cancel, requeue}) {
    cmd->add_option("job_id", job_id_, "The job")->required();
  }
  auto print_job = [this](const absl::StatusOr<v1::Job>& job) -> absl::Status {
    if (!job.ok()) return job.status();
    return Print(*job, [&] { PrintJobRecord(out_, *job); });
  };
  OnChosen(get, [this, print_job] {
    v1::GetJobRequest request;
    request.set_job_id(job_id_);
    return print_job(client_->GetJob(request));
  });
  OnChosen(cancel, [this, print_job] {
    v1::CancelJobRequest request;
    request.set_job_id(job_id_);
    return print_job(client_->CancelJob(request));
  });
  OnChosen(requeue, [this, print_job] {
    v1::RequeueJobRequest request;
    request.set_job_id(job_id_);
    return print_job(client_->RequeueJob(request));
  });
}

absl::Status CommandLine::SetPaused(const std::string& name, bool paused) {
  v1::GetCronRequest get;
  get.set_name(name);
  absl::StatusOr<v1::Cron> cron = client_->GetCron(get);
  if (!cron.ok()) return cron.status();
  v1::RegisterCronRequest request;
  request.set_name(cron->name());
  request.set_schedule(cron->schedule());
  request.set_timezone(cron->timezone());
  *request.mutable_job() = cron->job();
  request.set_misfire_policy(cron->misfire_policy());
  *request.mutable_catchup_window() = cron->catchup_window();
  request.set_overlap_policy(cron->overlap_policy());
  request.set_paused(paused);
  absl::StatusOr<v1::Cron> updated = client_->RegisterCron(request);
  if (!updated.ok()) return updated.status();
  return Print(*updated, [&] { PrintCronRecord(out_, *updated); });
}

void CommandLine::AddCron(CLI::App& app) {
  CLI::App* cron = app.add_subcommand("cron", "Manage cron schedules");
  cron->require_subcommand(0, 1);

  CLI::App* reg = cron->add_subcommand(
      "register", "Create or update a schedule (an upsert by name)");
  reg->add_option("name", name_, "The schedule's unique name")->required();
  reg->add_option("schedule", schedule_,
                  "The cron expression, e.g. '0 9 * * MON-FRI' or '@every 90s'")
      ->required();
  reg->add_option("-t,--type", job_type_, "The type of the jobs it enqueues")
      ->required();
  reg->add_option("-q,--queue", queue_, "Their queue (default: \"default\")");
  reg->add_option("--payload", payload_, "Their payload ('-': stdin)");
  reg->add_option("--payload-file", payload_file_,
                  "Read their payload from this file ('-': stdin)");
  reg->add_option("-p,--priority", priority_, "Their priority (default 0)");
  reg->add_option("--max-attempts", max_attempts_,
                  "Their max attempts (0: the server's default)");
  reg->add_option("-z,--timezone", timezone_, "IANA zone (default UTC)");
  reg->add_option("--misfire", misfire_,
                  "skip, fire-once or fire-all (default fire-once)");
  reg->add_option("--catchup-window", catchup_window_,
                  "How far back fire-all catches up (default 1h)");
  reg->add_option("--overlap", overlap_,
                  "allow, skip, wait or replace (default allow)");
  reg->add_flag("--paused", paused_, "Register it paused");
  OnChosen(reg, [this]() -> absl::Status {
    v1::RegisterCronRequest request;
    request.set_name(name_);
    request.set_schedule(schedule_);
    request.set_timezone(timezone_);
    v1::JobTemplate* job = request.mutable_job();
    job->set_queue(queue_);
    job->set_job_type(job_type_);
    absl::StatusOr<std::string> payload = ReadPayload(payload_, payload_file_);
    if (!payload.ok()) return payload.status();
    job->set_payload(*payload);
    job->set_priority(priority_);
    job->set_max_attempts(max_attempts_);
    if (!misfire_.empty()) {
      absl::StatusOr<v1::MisfirePolicy> policy = ParseEnum<v1::MisfirePolicy>(
          "--misfire", misfire_, "MISFIRE_POLICY_",
          {{"SKIP", v1::MISFIRE_POLICY_SKIP},
           {"FIRE_ONCE", v1::MISFIRE_POLICY_FIRE_ONCE},
           {"FIRE_ALL", v1::MISFIRE_POLICY_FIRE_ALL}});
      if (!policy.ok()) return policy.status();
      request.set_misfire_policy(*policy);
    }
    if (!overlap_.empty()) {
      absl::StatusOr<v1::OverlapPolicy> policy = ParseEnum<v1::OverlapPolicy>(
          "--overlap", overlap_, "OVERLAP_POLICY_",
          {{"ALLOW", v1::OVERLAP_POLICY_ALLOW},
           {"SKIP", v1::OVERLAP_POLICY_SKIP},
           {"WAIT", v1::OVERLAP_POLICY_WAIT},
           {"REPLACE", v1::OVERLAP_POLICY_REPLACE}});
      if (!policy.ok()) return policy.status();
      request.set_overlap_policy(*policy);
    }
    if (!catchup_window_.empty()) {
      absl::StatusOr<absl::Duration> d =
          ParseNonNegativeDuration("--catchup-window", catchup_window_);
      if (!d.ok()) return d.status();
      SetDuration(*d, request.mutable_catchup_window());
    }
    request.set_paused(paused_);
    absl::StatusOr<v1::Cron> response = client_->RegisterCron(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] { PrintCronRecord(out_, *response); });
  });

  CLI::App* list = cron->add_subcommand("list", "List every schedule");
  OnChosen(list, [this]() -> absl::Status {
    v1::ListCronsRequest request;
    v1::ListCronsResponse all;
    do {
      absl::StatusOr<v1::ListCronsResponse> page = client_->ListCrons(request);
      if (!page.ok()) return page.status();
      for (v1::Cron& c : *page->mutable_crons())
        *all.add_crons() = std::move(c);
      request.set_page_token(page->next_page_token());
    } while (!request.page_token().empty());
    return Print(all, [&] {
      std::vector<std::vector<std::string>> rows = {
          {"NAME", "SCHEDULE", "TIMEZONE", "QUEUE", "TYPE", "PAUSED",
           "NEXT_FIRE_TIME", "FIRED"}};
      for (const v1::Cron& c : all.crons()) {
        rows.push_back(
            {c.name(), c.schedule(), c.timezone(), c.job().queue(),
             c.job().job_type(), c.paused() ? "yes" : "no",
             c.has_next_fire_time() ? FormatTime(c.next_fire_time()) : "-",
             absl::StrCat(c.fired_count())});
      }
      PrintTable(out_, rows);
    });
  });

  CLI::App* get = cron->add_subcommand("get", "Show one schedule");
  CLI::App* rm =
      cron->add_subcommand("rm", "Delete a schedule (the jobs it fired stay)");
  CLI::App* pause = cron->add_subcommand("pause", "Pause a schedule");
  CLI::App* resume = cron->add_subcommand(
      "resume", "Resume a schedule (the ticks of the pause are not fired)");
  for (CLI::App* cmd : {get, rm, pause, resume}) {
    cmd->add_option("name", name_, "The schedule")->required();
  }
  OnChosen(get, [this]() -> absl::Status {
    v1::GetCronRequest request;
    request.set_name(name_);
    absl::StatusOr<v1::Cron> response = client_->GetCron(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] { PrintCronRecord(out_, *response); });
  });
  OnChosen(rm, [this]() -> absl::Status {
    v1::UnregisterCronRequest request;
    request.set_name(name_);
    absl::StatusOr<v1::UnregisterCronResponse> response =
        client_->UnregisterCron(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] { out_ << "removed " << name_ << "\n"; });
  });
  OnChosen(pause, [this] { return SetPaused(name_, true); });
  OnChosen(resume, [this] { return SetPaused(name_, false); });

  CLI::App* preview = cron->add_subcommand(
      "preview", "Show an expression's next fire times, registering nothing");
  preview->add_option("schedule", schedule_, "The cron expression")->required();
  preview->add_option("-z,--timezone", timezone_, "IANA zone (default UTC)");
  preview->add_option("-n,--count", count_, "How many fire times (default 5)")
      ->check(CLI::Range(1, 1000));
  preview->add_option("--after", after_,
                      "Start after this RFC 3339 time (default now)");
  OnChosen(preview, [this]() -> absl::Status {
    v1::PreviewCronRequest request;
    request.set_schedule(schedule_);
    request.set_timezone(timezone_);
    request.set_count(count_);
    if (!after_.empty()) {
      absl::StatusOr<absl::Time> t = ParseRfc3339("--after", after_);
      if (!t.ok()) return t.status();
      SetTimestamp(*t, request.mutable_after());
    }
    absl::StatusOr<v1::PreviewCronResponse> response =
        client_->PreviewCron(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] {
      // Each time in UTC and in the schedule's zone.
      absl::TimeZone zone = absl::UTCTimeZone();
      const std::string zone_name = timezone_.empty() ? "UTC" : timezone_;
      absl::LoadTimeZone(zone_name, &zone);
      std::vector<std::vector<std::string>> rows = {
          {"FIRE_TIME_UTC", absl::StrCat("LOCAL (", zone_name, ")")}};
      for (const google::protobuf::Timestamp& ts : response->fire_times()) {
        const absl::Time t =
            absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
        rows.push_back({FormatTime(ts),
                        absl::FormatTime("%Y-%m-%d %H:%M:%S %a %Z", t, zone)});
      }
      PrintTable(out_, rows);
    });
  });
}

void CommandLine::AddLeader(CLI::App& app) {
  CLI::App* leader =
      app.add_subcommand("leader", "This instance's cron leadership");
  leader->require_subcommand(0, 1);
  CLI::App* set = leader->add_subcommand(
      "set", "Tell the instance it is leader (or, with --revoke, not)");
  set->add_option("--term", term_,
                  "The elector's term; never lower than the highest seen")
      ->required();
  set->add_option("--ttl", ttl_,
                  "Leadership lapses this long after the call unless renewed "
                  "(default: until revoked)");
  set->add_flag("--revoke", revoke_, "Not leader: stop firing now");
  OnChosen(set, [this]() -> absl::Status {
    v1::SetLeadershipRequest request;
    request.set_leader(!revoke_);
    request.set_term(term_);
    if (!ttl_.empty()) {
      absl::StatusOr<absl::Duration> d =
          ParseNonNegativeDuration("--ttl", ttl_);
      if (!d.ok()) return d.status();
      SetDuration(*d, request.mutable_ttl());
    }
    absl::StatusOr<v1::Leadership> response = client_->SetLeadership(request);
    if (!response.ok()) return response.status();
    return Print(*response, [&] { PrintLeadership(out_, *response); });
  });
  CLI::App* get = leader->add_subcommand("get", "Show the leadership");
  OnChosen(get, [this]() -> absl::Status {
    absl::StatusOr<v1::Leadership> response =
        client_->GetLeadership(v1::GetLeadershipRequest());
    if (!response.ok()) return response.status();
    return Print(*response, [&] { PrintLeadership(out_, *response); });
  });
}

void CommandLine::AddStats(CLI::App& app) {
  CLI::App* stats = app.add_subcommand(
      "stats", "Jobs per queue and state, schedules, leadership");
  OnChosen(stats, [this]() -> absl::Status {
    absl::StatusOr<v1::GetStatsResponse> response =
        client_->GetStats(v1::GetStatsRequest());
    if (!response.ok()) return response.status();
    return Print(*response, [&] {
      std::vector<std::vector<std::string>> rows = {
          {"QUEUE", "PENDING", "RUNNABLE", "LEASED", "SUCCEEDED", "DEAD",
           "CANCELLED", "OLDEST_RUNNABLE_AGE"}};
      for (const v1::QueueStats& q : response->queues()) {
        rows.push_back({q.queue(), absl::StrCat(q.pending()),
                        absl::StrCat(q.runnable()), absl::StrCat(q.leased()),
                        absl::StrCat(q.succeeded()), absl::StrCat(q.dead()),
                        absl::StrCat(q.cancelled()),
                        q.has_oldest_runnable_age()
                            ? FormatDuration(q.oldest_runnable_age())
                            : "-"});
      }
      PrintTable(out_, rows);
      out_ << "\n";
      const v1::Leadership& l = response->leadership();
      PrintTable(out_,
                 {{"schedules", absl::StrCat(response->schedules())},
                  {"leader", l.leader() ? "yes" : "no"},
                  {"term", absl::StrCat(l.term())},
                  {"leadership_expires_at",
                   l.has_expires_at() ? FormatTime(l.expires_at()) : "-"}});
    });
  });
}

int CommandLine::Run(const std::vector<std::string>& args,
                     const CliEnvironment& env) {
  CLI::App app{
      "adjutant: the command line for adjutantd, the durable job queue and "
      "cron scheduler.",
      "adjutant"};
  // At most one command; Run() names a missing or unknown one itself,
  // which CLI11 would not (it only says that one is required).
  app.require_subcommand(0, 1);
  app.add_option("-s,--server", global_.server,
                 absl::StrCat("adjutantd's HOST:PORT (default: "
                              "$ADJUTANT_SERVER, else ",
                              kDefaultServer, ")"));
  app.add_flag("--json", global_.json,
               "Print one JSON document instead of a table");
  app.add_option("--timeout", global_.timeout,
                 "Deadline of each call (default 10s; dequeue adds --wait)");
  // Access control. The token's value is never printed, not even here.
  app.add_option("--token", global_.token,
                 "Bearer token sent with every call (default: "
                 "$ADJUTANT_TOKEN, which keeps it out of the process list)");
  app.add_flag("--tls", global_.tls,
               "Use TLS, checking the server against gRPC's default roots "
               "(implied by the --tls-* options)");
  app.add_option("--tls-ca", global_.tls_ca,
                 "PEM CA certificate the server's certificate must chain to; "
                 "turns TLS on (default: $ADJUTANT_TLS_CA)");
  app.add_option("--tls-cert", global_.tls_cert,
                 "PEM client certificate, for a server that requires one "
                 "(default: $ADJUTANT_TLS_CERT)");
  app.add_option("--tls-key", global_.tls_key,
                 "PEM private key of --tls-cert (default: $ADJUTANT_TLS_KEY)");
  app.add_option("--tls-server-name", global_.tls_server_name,
                 "Name the server's certificate must carry, if not the "
                 "--server host (default: $ADJUTANT_TLS_SERVER_NAME)");
  AddEnqueue(app);
  AddDequeue(app);
  AddAckNackExtend(app);
  AddJobs(app);
  AddCron(app);
  AddLeader(app);
  AddStats(app);
  app.footer(
      "Exit status: 0 success, 1 the server refused (error: CODE: message), "
      "2 bad arguments.\nRun 'adjutant COMMAND --help' for a command's "
      "options.");

  // Set last, so that the commands do not inherit it: words left over at
  // the top or in a command group are an unknown command (below).
  app.allow_extras();
  for (const char* group : {"jobs", "cron", "leader"}) {
    app.get_subcommand(group)->allow_extras();
  }

  std::vector<std::string> argv_storage = {"adjutant"};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<const char*> argv;
  for (const std::string& arg : argv_storage) argv.push_back(arg.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e, out_, err_);
    return code == 0 ? kExitOk : kExitUsage;
  }

  if (!action_) {
    // The deepest command named, and what followed it.
    CLI::App* at = &app;
    std::string path = "adjutant";
    for (;;) {
      std::vector<CLI::App*> chosen = at->get_subcommands();
      if (chosen.empty()) break;
      at = chosen.front();
      path += " " + at->get_name();
    }
    const std::vector<std::string> rest = at->remaining();
    if (!rest.empty()) {
      err_ << path << ": unknown command '" << rest.front() << "'; see '"
           << path << " --help'\n";
    } else {
      err_ << path << ": a command is required; see '" << path << " --help'\n";
    }
    return kExitUsage;
  }

  absl::StatusOr<absl::Duration> timeout =
      ParseNonNegativeDuration("--timeout", global_.timeout);
  if (!timeout.ok() || *timeout == absl::ZeroDuration()) {
    err_ << "adjutant: --timeout: '" << global_.timeout
         << "' must be a positive duration (e.g. 10s)\n";
    return kExitUsage;
  }
  std::string server = global_.server;
  if (server.empty()) server = env.server.value_or("");
  if (server.empty()) server = kDefaultServer;
  ClientOptions options;
  options.target = server;
  options.deadline = *timeout;
  // An option beats its environment variable.
  const auto either = [](const std::string& option,
                         const std::optional<std::string>& variable) {
    return option.empty() ? variable.value_or("") : option;
  };
  options.token = either(global_.token, env.token);
  options.tls = global_.tls;
  options.tls_ca_file = either(global_.tls_ca, env.tls_ca);
  options.tls_cert_file = either(global_.tls_cert, env.tls_cert);
  options.tls_key_file = either(global_.tls_key, env.tls_key);
  options.tls_server_name =
      either(global_.tls_server_name, env.tls_server_name);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  if (!client.ok()) {
    // The client's messages name its option (target, token, tls_ca_file...):
    // name ours instead, the flag or, when the flag was not given, the
    // environment variable the value came from.
    const std::string message(client.status().message());
    const auto source = [](const std::string& flag_value,
                           const std::optional<std::string>& variable,
                           const char* flag, const char* variable_name) {
      return std::string(
          flag_value.empty() && variable.has_value() ? variable_name : flag);
    };
    const std::pair<const char*, std::string> kOptionNames[] = {
        {"target",
         source(global_.server, env.server, "--server", "$ADJUTANT_SERVER")},
        {"token",
         source(global_.token, env.token, "--token", "$ADJUTANT_TOKEN")},
        {"tls_ca_file",
         source(global_.tls_ca, env.tls_ca, "--tls-ca", "$ADJUTANT_TLS_CA")},
        {"tls_cert_file", source(global_.tls_cert, env.tls_cert, "--tls-cert",
                                 "$ADJUTANT_TLS_CERT")},
        {"tls_key_file", source(global_.tls_key, env.tls_key, "--tls-key",
                                "$ADJUTANT_TLS_KEY")},
        {"tls_server_name",
         source(global_.tls_server_name, env.tls_server_name,
                "--tls-server-name", "$ADJUTANT_TLS_SERVER_NAME")},
    };
    std::string option = kOptionNames[0].second;
    std::string rest = message;
    for (const auto& [field, flag] : kOptionNames) {
      const std::string prefix = absl::StrCat(field, ": ");
      if (message.rfind(prefix, 0) == 0) {
        option = flag;
        rest = message.substr(prefix.size());
        break;
      }
    }
    // The client's "given without tls_key_file" names the other field.
    rest =
        absl::StrReplaceAll(rest, {{"tls_cert_file", kOptionNames[3].second},
                                   {"tls_key_file", kOptionNames[4].second}});
    err_ << "adjutant: " << option << ": " << rest << "\n";
    return kExitUsage;
  }
  client_ = *std::move(client);

  const absl::Status status = action_();
  if (status.ok()) return kExitOk;
  if (status.GetPayload(kUsagePayload).has_value()) {
    err_ << "adjutant: " << status.message() << "\n";
    return kExitUsage;
  }
  err_ << "error: " << absl::StatusCodeToString(status.code()) << ": "
       << status.message() << "\n";
  return kExitRpcError;
}

}  // namespace

int RunCli(const std::vector<std::string>& args,
           const std::optional<std::string>& env_server, std::istream& in,
           std::ostream& out, std::ostream& err) {
  CliEnvironment env;
  env.server = env_server;
  return RunCli(args, env, in, out, err);
}

int RunCli(const std::vector<std::string>& args, const CliEnvironment& env,
           std::istream& in, std::ostream& out, std::ostream& err) {
  CommandLine command_line(in, out, err);
  return command_line.Run(args, env);
}

CliEnvironment CliEnvironmentFromProcess() {
  const auto get = [](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
  CliEnvironment env;
  env.server = get("ADJUTANT_SERVER");
  env.token = get("ADJUTANT_TOKEN");
  env.tls_ca = get("ADJUTANT_TLS_CA");
  env.tls_cert = get("ADJUTANT_TLS_CERT");
  env.tls_key = get("ADJUTANT_TLS_KEY");
  env.tls_server_name = get("ADJUTANT_TLS_SERVER_NAME");
  return env;
}

}  // namespace cli
}  // namespace adjutant
