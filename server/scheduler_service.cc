#include "server/scheduler_service.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "adjutant/v1/job_queue.pb.h"
#include "scheduler/cron_expression.h"
#include "server/convert.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// Codes that mean the server (not the request) has a problem: worth a log
// line. The others are the client's business.
bool IsServerError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

bool IsSet(absl::Time t) {
  return t != absl::InfinitePast() && t != absl::InfiniteFuture();
}

bool IsCronNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
         c == ':' || c == '/';
}

// IANA names are letters, digits and / _ + - (no dots: no path tricks).
bool IsZoneNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '/' || c == '_' || c == '+' || c == '-';
}

absl::Status ValidateSchedule(absl::string_view schedule) {
  if (schedule.empty()) return Invalid("schedule", "required");
  if (schedule.size() > kMaxScheduleBytes) {
    return Invalid("schedule",
                   absl::StrCat("must be at most ", kMaxScheduleBytes,
                                " bytes (got ", schedule.size(), ")"));
  }
  return absl::OkStatus();
}

// Returns the zone name to use ("UTC" for empty).
absl::StatusOr<std::string> ValidateTimezone(absl::string_view zone) {
  if (zone.empty()) return std::string("UTC");
  // The time zone library reads "localtime" as the host's own zone: two
  // daemons on one store could fire the schedule at different instants.
  if (zone == "localtime") {
    return Invalid("timezone",
                   "'localtime' is each server's own zone, not an IANA time "
                   "zone name; name the zone (e.g. Europe/Paris)");
  }
  if (zone.size() > kMaxTimezoneBytes) {
    return Invalid("timezone",
                   absl::StrCat("must be at most ", kMaxTimezoneBytes,
                                " bytes (got ", zone.size(), ")"));
  }
  for (char c : zone) {
    if (!IsZoneNameChar(c)) {
      return Invalid("timezone",
                     absl::StrCat("'", zone,
                                  "' is not an IANA time zone name (letters, "
                                  "digits and / _ + - only)"));
    }
  }
  return std::string(zone);
}

}  // namespace

// ---- Validation ---------------------------------------------------------

absl::Status ValidateCronName(absl::string_view name, absl::string_view field) {
  if (name.empty()) return Invalid(field, "required");
  if (name.size() > kMaxCronNameBytes) {
    return Invalid(field, absl::StrCat("must be at most ", kMaxCronNameBytes,
                                       " bytes (got ", name.size(), ")"));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsCronNameChar(name[i])) {
      return Invalid(
          field,
          absl::StrCat("byte ", i, " is not one of A-Z a-z 0-9 . _ - : /"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CronDefinition> ValidateRegisterCron(
    const v1::RegisterCronRequest& request, const RequestLimits& limits) {
  CronDefinition d;
  if (absl::Status s = ValidateCronName(request.name()); !s.ok()) return s;
  d.name = request.name();
  if (absl::Status s = ValidateSchedule(request.schedule()); !s.ok()) return s;
  d.schedule = request.schedule();
  absl::StatusOr<std::string> zone = ValidateTimezone(request.timezone());
  if (!zone.ok()) return zone.status();
  d.timezone = *std::move(zone);

  if (!request.has_job()) return Invalid("job", "required");
  const v1::JobTemplate& job = request.job();
  // The job must be one Enqueue would take: check it with the JobQueue's own
  // rules, keeping max_attempts 0 as "the default at fire time".
  v1::EnqueueRequest as_enqueue;
  as_enqueue.set_queue(job.queue());
  as_enqueue.set_job_type(job.job_type());
  as_enqueue.set_payload(job.payload());
  as_enqueue.set_priority(job.priority());
  as_enqueue.set_max_attempts(job.max_attempts());
  absl::StatusOr<NewJob> checked = ValidateEnqueue(as_enqueue, limits, "job.");
  if (!checked.ok()) return checked.status();
  d.job.queue = checked->queue;
  d.job.type = job.job_type();
  d.job.payload = job.payload();
  d.job.priority = job.priority();
  d.job.max_attempts = job.max_attempts();

  if (!v1::MisfirePolicy_IsValid(request.misfire_policy())) {
    return Invalid("misfire_policy",
                   absl::StrCat("unknown value ", request.misfire_policy()));
  }
  d.misfire_policy = request.misfire_policy() == v1::MISFIRE_POLICY_UNSPECIFIED
                         ? MisfirePolicy::kFireOnce
                         : static_cast<MisfirePolicy>(request.misfire_policy());
  if (!v1::OverlapPolicy_IsValid(request.overlap_policy())) {
    return Invalid("overlap_policy",
                   absl::StrCat("unknown value ", request.overlap_policy()));
  }
  d.overlap_policy = request.overlap_policy() == v1::OVERLAP_POLICY_UNSPECIFIED
                         ? OverlapPolicy::kAllow
                         : static_cast<OverlapPolicy>(request.overlap_policy());

  d.catchup_window = kDefaultCatchupWindow;
  if (request.has_catchup_window()) {
    absl::StatusOr<absl::Duration> window =
        FromProto(request.catchup_window(), "catchup_window", kMinCatchupWindow,
                  kMaxCatchupWindow);
    if (!window.ok()) return window.status();
    d.catchup_window = *window;
  }
  d.paused = request.paused();
  return d;
}

absl::StatusOr<PreviewArgs> ValidatePreviewCron(
    const v1::PreviewCronRequest& request) {
  PreviewArgs args;
  if (absl::Status s = ValidateSchedule(request.schedule()); !s.ok()) return s;
  args.schedule = request.schedule();
  absl::StatusOr<std::string> zone = ValidateTimezone(request.timezone());
  if (!zone.ok()) return zone.status();
  args.timezone = *std::move(zone);
  if (request.has_after()) {
    absl::StatusOr<absl::Time> after = FromProto(request.after(), "after");
    if (!after.ok()) return after.status();
    args.after = *after;
  }
  if (request.count() < 0 || request.count() > kMaxPreviewCount) {
    return Invalid(
        "count", absl::StrCat("must be between 0 (meaning ",
                              kDefaultPreviewCount, ") and ", kMaxPreviewCount,
                              " (got ", request.count(), ")"));
  }
  args.count = request.count() == 0 ? kDefaultPreviewCount : request.count();
  return args;
}

absl::StatusOr<absl::Duration> ValidateSetLeadership(
    const v1::SetLeadershipRequest& request) {
  if (!request.has_ttl()) return absl::ZeroDuration();
  return FromProto(request.ttl(), "ttl", absl::ZeroDuration(),
                   kMaxLeadershipTtl);
}

absl::StatusOr<int> ValidateListCrons(const v1::ListCronsRequest& request) {
  if (request.page_size() < 0 || request.page_size() > kMaxPageSize) {
    return Invalid(
        "page_size",
        absl::StrCat("must be between 0 (meaning ", kDefaultPageSize, ") and ",
                     kMaxPageSize, " (got ", request.page_size(), ")"));
  }
  if (request.page_token().size() > kMaxPageTokenBytes) {
    return Invalid("page_token", "not a token this server made");
  }
  return request.page_size() == 0 ? kDefaultPageSize : request.page_size();
}

// ---- Conversions ----------------------------------------------------------

void ToProto(const CronRecord& record, v1::Cron* out) {
  const CronDefinition& d = record.definition;
  out->set_name(d.name);
  out->set_schedule(d.schedule);
  out->set_timezone(d.timezone);
  v1::JobTemplate* job = out->mutable_job();
  job->set_queue(d.job.queue);
  job->set_job_type(d.job.type);
  job->set_payload(d.job.payload);
  job->set_priority(d.job.priority);
  job->set_max_attempts(d.job.max_attempts);
  out->set_misfire_policy(static_cast<v1::MisfirePolicy>(d.misfire_policy));
  ToProto(d.catchup_window, out->mutable_catchup_window());
  out->set_overlap_policy(static_cast<v1::OverlapPolicy>(d.overlap_policy));
  out->set_paused(d.paused);

  // Unset times (InfinitePast, or InfiniteFuture for "never") stay absent.
  const auto set_time = [](absl::Time t, auto mutable_field) {
    if (IsSet(t)) ToProto(t, mutable_field());
  };
  const CronState& s = record.state;
  set_time(s.next_fire_time, [out] { return out->mutable_next_fire_time(); });
  set_time(s.last_fire_time, [out] { return out->mutable_last_fire_time(); });
  out->set_last_job_id(s.last_job_id);
  out->set_fired_count(s.fired_count);
  out->set_missed_count(s.missed_count);
  out->set_overlap_skipped_count(s.overlap_skipped_count);
  set_time(record.created_at, [out] { return out->mutable_created_at(); });
  set_time(record.updated_at, [out] { return out->mutable_updated_at(); });
  set_time(s.waiting_tick_time,
           [out] { return out->mutable_waiting_tick_time(); });
}

void ToProto(const LeadershipState& leadership, v1::Leadership* out) {
  out->set_leader(leadership.leader);
  out->set_term(leadership.term);
  if (leadership.leader && IsSet(leadership.expires_at)) {
    ToProto(leadership.expires_at, out->mutable_expires_at());
  }
  out->set_highest_term(leadership.highest_term);
}

// ---- The service ------------------------------------------------------------

SchedulerService::SchedulerService(Scheduler* scheduler, Clock* clock,
                                   Executor* executor, RequestLimits limits)
    : scheduler_(scheduler),
      clock_(clock),
      executor_(executor),
      limits_(limits) {}

grpc::ServerUnaryReactor* SchedulerService::Reject(
    grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::RunOnExecutor(
    grpc::CallbackServerContext* context, const char* method,
    std::function<absl::Status()> work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executor_->Schedule([reactor, method, work = std::move(work)] {
    absl::Status status = work();
    if (IsServerError(status))
      spdlog::warn("{}: {}", method, status.ToString());
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::RegisterCron(
    grpc::CallbackServerContext* context,
    const v1::RegisterCronRequest* request, v1::Cron* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller = AuthorizeCall(
      authorizer_, *context, "adjutant.v1.Scheduler.RegisterCron");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<CronDefinition> definition =
      ValidateRegisterCron(*request, limits_);
  if (!definition.ok()) return Reject(context, definition.status());
  return RunOnExecutor(context, "RegisterCron",
                       [this, definition = *std::move(definition),
                        response]() mutable -> absl::Status {
                         absl::StatusOr<CronRecord> record =
                             scheduler_->Register(std::move(definition));
                         if (!record.ok()) return record.status();
                         ToProto(*record, response);
                         return absl::OkStatus();
                       });
}

grpc::ServerUnaryReactor* SchedulerService::UnregisterCron(
    grpc::CallbackServerContext* context,
    const v1::UnregisterCronRequest* request,
    v1::UnregisterCronResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller = AuthorizeCall(
      authorizer_, *context, "adjutant.v1.Scheduler.UnregisterCron");
  if (!caller.ok()) return Reject(context, caller.status());
  if (absl::Status s = ValidateCronName(request->name()); !s.ok()) {
    return Reject(context, s);
  }
  return RunOnExecutor(context, "UnregisterCron", [this, request] {
    return scheduler_->Unregister(request->name());
  });
}

grpc::ServerUnaryReactor* SchedulerService::GetCron(
    grpc::CallbackServerContext* context, const v1::GetCronRequest* request,
    v1::Cron* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.Scheduler.GetCron");
  if (!caller.ok()) return Reject(context, caller.status());
  if (absl::Status s = ValidateCronName(request->name()); !s.ok()) {
    return Reject(context, s);
  }
  return RunOnExecutor(
      context, "GetCron", [this, request, response]() -> absl::Status {
        absl::StatusOr<CronRecord> record = scheduler_->Get(request->name());
        if (!record.ok()) return record.status();
        ToProto(*record, response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SchedulerService::ListCrons(
    grpc::CallbackServerContext* context, const v1::ListCronsRequest* request,
    v1::ListCronsResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.Scheduler.ListCrons");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<int> page_size = ValidateListCrons(*request);
  if (!page_size.ok()) return Reject(context, page_size.status());
  return RunOnExecutor(
      context, "ListCrons",
      [this, request, response, page_size = *page_size]() -> absl::Status {
        absl::StatusOr<CronPage> page =
            scheduler_->List(page_size, request->page_token());
        if (!page.ok()) return page.status();
        for (const CronRecord& record : page->crons) {
          ToProto(record, response->add_crons());
        }
        response->set_next_page_token(page->next_page_token);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SchedulerService::PreviewCron(
    grpc::CallbackServerContext* context, const v1::PreviewCronRequest* request,
    v1::PreviewCronResponse* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller =
      AuthorizeCall(authorizer_, *context, "adjutant.v1.Scheduler.PreviewCron");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<PreviewArgs> args = ValidatePreviewCron(*request);
  if (!args.ok()) return Reject(context, args.status());
  return RunOnExecutor(
      context, "PreviewCron",
      [this, args = *std::move(args), response]() -> absl::Status {
        const absl::Time after = args.after.value_or(clock_->Now());
        absl::StatusOr<CronExpression> expression =
            CronExpression::Parse(args.schedule, args.timezone, after);
        if (!expression.ok()) return expression.status();
        absl::Time t = after;
        for (int i = 0; i < args.count; ++i) {
          t = expression->Next(t);
          if (t == absl::InfiniteFuture()) break;
          ToProto(t, response->add_fire_times());
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SchedulerService::SetLeadership(
    grpc::CallbackServerContext* context,
    const v1::SetLeadershipRequest* request, v1::Leadership* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller = AuthorizeCall(
      authorizer_, *context, "adjutant.v1.Scheduler.SetLeadership");
  if (!caller.ok()) return Reject(context, caller.status());
  absl::StatusOr<absl::Duration> ttl = ValidateSetLeadership(*request);
  if (!ttl.ok()) return Reject(context, ttl.status());
  // The TTL counts from now, the grant's arrival: the executor's queue, the
  // store's synced write and a transition in flight all eat into it.
  const absl::Duration granted_at = clock_->Monotonic();
  return RunOnExecutor(
      context, "SetLeadership",
      [this, leader = request->leader(), term = request->term(), ttl = *ttl,
       granted_at, response, by = caller->name]() -> absl::Status {
        absl::StatusOr<LeadershipState> state =
            scheduler_->SetLeadership(leader, term, ttl, granted_at);
        if (!state.ok()) return state.status();
        // With tokens checked, say who: the scheduler's own line says what.
        if (!by.empty()) {
          spdlog::info("leadership set by {}: leader={} term={}", by, leader,
                       term);
        }
        ToProto(*state, response);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SchedulerService::GetLeadership(
    grpc::CallbackServerContext* context,
    const v1::GetLeadershipRequest* request, v1::Leadership* response) {
  if (refusing_new_calls_.load()) return Reject(context, ShuttingDownError());
  absl::StatusOr<Caller> caller = AuthorizeCall(
      authorizer_, *context, "adjutant.v1.Scheduler.GetLeadership");
  if (!caller.ok()) return Reject(context, caller.status());
  return RunOnExecutor(
      context, "GetLeadership", [this, response]() -> absl::Status {
        absl::StatusOr<LeadershipState> state = scheduler_->GetLeadership();
        if (!state.ok()) return state.status();
        ToProto(*state, response);
        return absl::OkStatus();
      });
}

}  // namespace adjutant
