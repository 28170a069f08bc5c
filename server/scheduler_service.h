// The adjutant.v1.Scheduler gRPC service (callback API): cron schedules and
// this instance's leadership, over the Scheduler (scheduler/scheduler.h).
//
// Each handler first checks the caller's token and role when the server
// checks tokens (SetAuthorizer, server/auth.h): UNAUTHENTICATED or
// PERMISSION_DENIED before anything else. Then it validates its request on
// the reaction thread (cheap, no I/O) and rejects bad input at once with
// INVALID_ARGUMENT naming the field, so a rejected request changes nothing.
// Everything that touches the store (and PreviewCron's arithmetic, which may be
// long for count = 1000) runs on the Executor, which finishes the call: no
// handler blocks a gRPC thread.
#ifndef ADJUTANT_SERVER_SCHEDULER_SERVICE_H_
#define ADJUTANT_SERVER_SCHEDULER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "adjutant/v1/scheduler.grpc.pb.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "server/auth.h"
#include "server/executor.h"
#include "server/validation.h"
#include "storage/job.h"

namespace adjutant {

// Limits of the Scheduler API (the proto comments state them).
inline constexpr size_t kMaxCronNameBytes = 200;
inline constexpr size_t kMaxScheduleBytes = 1024;
inline constexpr size_t kMaxTimezoneBytes = 64;
inline constexpr absl::Duration kDefaultCatchupWindow = absl::Hours(1);
inline constexpr absl::Duration kMinCatchupWindow = absl::Seconds(1);
inline constexpr absl::Duration kMaxCatchupWindow = absl::Hours(24 * 7);
inline constexpr absl::Duration kMaxLeadershipTtl = absl::Hours(1);
inline constexpr int kDefaultPreviewCount = 10;
inline constexpr int kMaxPreviewCount = 1000;

// ---- Validation: pure functions, thread-safe, for any message however
// malformed. Errors are INVALID_ARGUMENT whose message starts with the field.

// A schedule name: 1 to kMaxCronNameBytes bytes of [A-Za-z0-9._:/-].
absl::Status ValidateCronName(absl::string_view name,
                              absl::string_view field = "name");

// RegisterCron: the definition to register. An empty timezone becomes "UTC",
// an empty job.queue "default", UNSPECIFIED policies FIRE_ONCE / ALLOW, an
// absent catchup_window 1 h; job.max_attempts 0 stays 0 (the scheduler's
// default at each fire). The job's queue, type, payload and max_attempts
// obey the JobQueue's Enqueue limits (`limits`). The expression itself is
// checked by the Scheduler (CronExpression names the field).
absl::StatusOr<CronDefinition> ValidateRegisterCron(
    const v1::RegisterCronRequest& request, const RequestLimits& limits);

struct PreviewArgs {
  std::string schedule;
  std::string timezone;  // never empty
  // Fire times strictly after this; also the @every anchor. nullopt: now.
  std::optional<absl::Time> after;
  int count = kDefaultPreviewCount;
};
// PreviewCron: schedule required; count 0 means kDefaultPreviewCount, else
// in [1, kMaxPreviewCount].
absl::StatusOr<PreviewArgs> ValidatePreviewCron(
    const v1::PreviewCronRequest& request);

// SetLeadership: returns the ttl (absent: 0, until revoked; else in
// [0, kMaxLeadershipTtl]).
absl::StatusOr<absl::Duration> ValidateSetLeadership(
    const v1::SetLeadershipRequest& request);

// ListCrons: returns the page size (0: kDefaultPageSize; else in
// [1, kMaxPageSize]); page_token at most kMaxPageTokenBytes.
absl::StatusOr<int> ValidateListCrons(const v1::ListCronsRequest& request);

// ---- Conversions.

void ToProto(const CronRecord& record, v1::Cron* out);
void ToProto(const LeadershipState& leadership, v1::Leadership* out);

// Thread-safe (gRPC calls the handlers from many threads).
class SchedulerService final : public v1::Scheduler::CallbackService {
 public:
  // Every pointer must outlive the service and every call it serves (the
  // server's shutdown finishes the calls first). `limits` bounds the job
  // templates as Enqueue bounds jobs.
  SchedulerService(Scheduler* scheduler, Clock* clock, Executor* executor,
                   RequestLimits limits);

  grpc::ServerUnaryReactor* RegisterCron(grpc::CallbackServerContext* context,
                                         const v1::RegisterCronRequest* request,
                                         v1::Cron* response) override;
  grpc::ServerUnaryReactor* UnregisterCron(
      grpc::CallbackServerContext* context,
      const v1::UnregisterCronRequest* request,
      v1::UnregisterCronResponse* response) override;
  grpc::ServerUnaryReactor* GetCron(grpc::CallbackServerContext* context,
                                    const v1::GetCronRequest* request,
                                    v1::Cron* response) override;
  grpc::ServerUnaryReactor* ListCrons(grpc::CallbackServerContext* context,
                                      const v1::ListCronsRequest* request,
                                      v1::ListCronsResponse* response) override;
  grpc::ServerUnaryReactor* PreviewCron(
      grpc::CallbackServerContext* context,
      const v1::PreviewCronRequest* request,
      v1::PreviewCronResponse* response) override;
  grpc::ServerUnaryReactor* SetLeadership(
      grpc::CallbackServerContext* context,
      const v1::SetLeadershipRequest* request,
      v1::Leadership* response) override;
  grpc::ServerUnaryReactor* GetLeadership(
      grpc::CallbackServerContext* context,
      const v1::GetLeadershipRequest* request,
      v1::Leadership* response) override;

  // Makes every call carry a token allowed to call its RPC (server/auth.h),
  // checked before anything else. Not owned; must outlive the service; null
  // (the default) allows every call. REQUIRES: called before the service
  // serves any call.
  void SetAuthorizer(const Authorizer* authorizer) { authorizer_ = authorizer; }

  // From now on every new call is answered UNAVAILABLE (ShuttingDownError)
  // at once, without touching the store; calls already running finish.
  // AdjutantServer::Shutdown() calls it before gRPC's own shutdown, which
  // then refuses calls at the transport. Thread-safe; cannot be undone.
  void RefuseNewCalls() { refusing_new_calls_.store(true); }

 private:
  // Finishes the call at once with `status` (a validation failure).
  grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* context,
                                   const absl::Status& status);
  // Runs `work` on the executor, then finishes the call with its status.
  // `method` names the RPC in logs (server-side errors only).
  grpc::ServerUnaryReactor* RunOnExecutor(grpc::CallbackServerContext* context,
                                          const char* method,
                                          std::function<absl::Status()> work);

  Scheduler* const scheduler_;
  Clock* const clock_;
  Executor* const executor_;
  const RequestLimits limits_;
  // Set once before serving (SetAuthorizer), read-only after.
  const Authorizer* authorizer_ = nullptr;
  // Set by RefuseNewCalls().
  std::atomic<bool> refusing_new_calls_{false};
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_SCHEDULER_SERVICE_H_
