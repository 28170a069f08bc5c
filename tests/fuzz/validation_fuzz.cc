// libFuzzer target: every request validator (server/validation.h and the
// Scheduler's in server/scheduler_service.h), on requests parsed from the
// fuzz input as the server would parse them off the wire.
//
// Input: byte 0 picks the request type (its value modulo kNumKinds) and,
// with its top bit, tight limits instead of the defaults; the rest is the
// serialized request. tests/fuzz/make_corpus.py writes seeds in this form.
//
// Invariants checked (a failure aborts, which libFuzzer reports as a crash):
//  * a rejected request fails with INVALID_ARGUMENT whose message starts
//    with a field name and ": ";
//  * an accepted request respects every documented limit: sizes, ranges,
//    defaults filled in.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.pb.h"
#include "adjutant/v1/scheduler.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "server/scheduler_service.h"
#include "server/validation.h"

namespace adjutant {
namespace {

enum Kind {
  kEnqueue,
  kEnqueueBatch,
  kDequeue,
  kAck,
  kNack,
  kExtendLease,
  kJobId,  // GetJob, CancelJob, RequeueJob
  kListJobs,
  kRegisterCron,
  kCronName,  // GetCron, UnregisterCron
  kPreviewCron,
  kSetLeadership,
  kListCrons,
  kAckBatch,
  kWorkStart,
  kNumKinds,
};

[[noreturn]] void Fail(const std::string& what,
                       const google::protobuf::Message& request) {
  std::fprintf(stderr, "validation_fuzz: %s\n  request %s: %s\n", what.c_str(),
               request.GetTypeName().c_str(),
               request.ShortDebugString().c_str());
  std::abort();
}

void Check(bool condition, const char* what,
           const google::protobuf::Message& request) {
  if (!condition) Fail(what, request);
}

// A field name: lowercase letters, digits, '_', '.', '[' and ']'.
bool IsFieldName(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '[' || c == ']')) {
      return false;
    }
  }
  return true;
}

void CheckRejection(const absl::Status& status,
                    const google::protobuf::Message& request) {
  if (status.ok()) return;
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    Fail("not INVALID_ARGUMENT: " + status.ToString(), request);
  }
  const size_t colon = status.message().find(": ");
  if (colon == absl::string_view::npos ||
      !IsFieldName(status.message().substr(0, colon))) {
    Fail("the error does not start with a field: " + status.ToString(),
         request);
  }
}

// The text limits every accepted name, key or id obeys.
bool IsCleanText(absl::string_view s, size_t max_bytes) {
  if (s.size() > max_bytes) return false;
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return false;
  }
  return true;
}

void CheckNewJob(const NewJob& job, const RequestLimits& limits,
                 const google::protobuf::Message& request) {
  Check(!job.queue.empty() && IsCleanText(job.queue, kMaxNameBytes),
        "queue out of limits", request);
  Check(!job.type.empty() && IsCleanText(job.type, kMaxNameBytes),
        "job_type out of limits", request);
  Check(static_cast<int64_t>(job.payload.size()) <= limits.max_payload_bytes,
        "payload over the limit", request);
  Check(job.max_attempts >= 1 && job.max_attempts <= kMaxAttemptsLimit,
        "max_attempts out of range", request);
  Check(job.run_at == absl::InfinitePast() ||
            job.run_at <= absl::FromUnixSeconds(kMaxRunAtUnixSeconds),
        "run_at past the latest accepted", request);
  Check(IsCleanText(job.idempotency_key, kMaxKeyBytes),
        "idempotency_key out of limits", request);
}

template <typename T>
bool Parse(const uint8_t* data, size_t size, T* message) {
  return message->ParseFromArray(data, static_cast<int>(size));
}

void Run(Kind kind, const RequestLimits& limits, const uint8_t* data,
         size_t size) {
  switch (kind) {
    case kEnqueue: {
      v1::EnqueueRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<NewJob> job = ValidateEnqueue(r, limits);
      CheckRejection(job.status(), r);
      if (job.ok()) CheckNewJob(*job, limits, r);
      return;
    }
    case kEnqueueBatch: {
      v1::EnqueueBatchRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<std::vector<NewJob>> jobs =
          ValidateEnqueueBatch(r, limits);
      CheckRejection(jobs.status(), r);
      if (!jobs.ok()) return;
      Check(!jobs->empty() &&
                static_cast<int>(jobs->size()) <= limits.max_batch_size &&
                static_cast<int>(jobs->size()) == r.jobs_size(),
            "batch size out of limits", r);
      for (const NewJob& job : *jobs) CheckNewJob(job, limits, r);
      return;
    }
    case kDequeue: {
      v1::DequeueRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<DequeueArgs> args = ValidateDequeue(r, limits);
      CheckRejection(args.status(), r);
      if (!args.ok()) return;
      const DequeueOptions& o = args->options;
      Check(!o.queue.empty() && IsCleanText(o.queue, kMaxNameBytes),
            "queue out of limits", r);
      Check(static_cast<int>(o.job_types.size()) <= limits.max_batch_size,
            "too many job_types", r);
      for (const std::string& type : o.job_types) {
        Check(!type.empty() && IsCleanText(type, kMaxNameBytes),
              "job_types element out of limits", r);
      }
      Check(o.max_jobs >= 1 && o.max_jobs <= limits.max_batch_size,
            "max_jobs out of range", r);
      Check(o.lease_duration >= kMinLeaseDuration &&
                o.lease_duration <= kMaxLeaseDuration,
            "lease_duration out of range", r);
      Check(args->wait >= absl::ZeroDuration() && args->wait <= kMaxWait,
            "wait out of range", r);
      Check(IsCleanText(o.worker_id, kMaxNameBytes), "worker_id out of limits",
            r);
      return;
    }
    case kAck: {
      v1::AckRequest r;
      if (!Parse(data, size, &r)) return;
      absl::Status s = ValidateAck(r);
      CheckRejection(s, r);
      if (!s.ok()) return;
      Check(!r.job_id().empty() && IsCleanText(r.job_id(), kMaxJobIdBytes),
            "job_id out of limits", r);
      Check(!r.lease_token().empty() &&
                IsCleanText(r.lease_token(), kMaxKeyBytes),
            "lease_token out of limits", r);
      return;
    }
    case kNack: {
      v1::NackRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<NackOptions> o = ValidateNack(r);
      CheckRejection(o.status(), r);
      if (!o.ok()) return;
      Check(!r.job_id().empty() && IsCleanText(r.job_id(), kMaxJobIdBytes),
            "job_id out of limits", r);
      Check(o->error.size() <= kMaxErrorBytes, "error over the limit", r);
      Check(!o->retry_after.has_value() ||
                (*o->retry_after >= absl::ZeroDuration() &&
                 *o->retry_after <= kMaxRetryAfter),
            "retry_after out of range", r);
      Check(o->retry_after.has_value() == r.has_retry_after(),
            "retry_after presence changed", r);
      return;
    }
    case kExtendLease: {
      v1::ExtendLeaseRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<absl::Duration> d = ValidateExtendLease(r);
      CheckRejection(d.status(), r);
      if (!d.ok()) return;
      Check(*d >= kMinLeaseDuration && *d <= kMaxLeaseDuration,
            "lease_duration out of range", r);
      return;
    }
    case kJobId: {
      v1::GetJobRequest r;
      if (!Parse(data, size, &r)) return;
      absl::Status s = ValidateJobId(r.job_id());
      CheckRejection(s, r);
      if (s.ok()) {
        Check(!r.job_id().empty() && IsCleanText(r.job_id(), kMaxJobIdBytes),
              "job_id out of limits", r);
      }
      return;
    }
    case kListJobs: {
      v1::ListJobsRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<ListJobsArgs> args = ValidateListJobs(r);
      CheckRejection(args.status(), r);
      if (!args.ok()) return;
      Check(args->page_size >= 1 && args->page_size <= kMaxPageSize,
            "page_size out of range", r);
      Check(args->page_token.size() <= kMaxPageTokenBytes,
            "page_token over the limit", r);
      Check(IsCleanText(args->queue, kMaxNameBytes), "queue out of limits", r);
      return;
    }
    case kRegisterCron: {
      v1::RegisterCronRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<CronDefinition> d = ValidateRegisterCron(r, limits);
      CheckRejection(d.status(), r);
      if (!d.ok()) return;
      Check(ValidateCronName(d->name).ok(), "name out of limits", r);
      Check(!d->schedule.empty() && d->schedule.size() <= kMaxScheduleBytes,
            "schedule out of limits", r);
      Check(!d->timezone.empty() && d->timezone.size() <= kMaxTimezoneBytes,
            "timezone out of limits", r);
      Check(!d->job.queue.empty() && IsCleanText(d->job.queue, kMaxNameBytes),
            "job.queue out of limits", r);
      Check(!d->job.type.empty() && IsCleanText(d->job.type, kMaxNameBytes),
            "job.job_type out of limits", r);
      Check(static_cast<int64_t>(d->job.payload.size()) <=
                limits.max_payload_bytes,
            "job.payload over the limit", r);
      Check(
          d->job.max_attempts >= 0 && d->job.max_attempts <= kMaxAttemptsLimit,
          "job.max_attempts out of range", r);
      Check(d->catchup_window >= kMinCatchupWindow &&
                d->catchup_window <= kMaxCatchupWindow,
            "catchup_window out of range", r);
      return;
    }
    case kCronName: {
      v1::GetCronRequest r;
      if (!Parse(data, size, &r)) return;
      absl::Status s = ValidateCronName(r.name());
      CheckRejection(s, r);
      if (s.ok()) {
        Check(!r.name().empty() && r.name().size() <= kMaxCronNameBytes,
              "name out of limits", r);
      }
      return;
    }
    case kPreviewCron: {
      v1::PreviewCronRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<PreviewArgs> args = ValidatePreviewCron(r);
      CheckRejection(args.status(), r);
      if (!args.ok()) return;
      Check(
          !args->schedule.empty() && args->schedule.size() <= kMaxScheduleBytes,
          "schedule out of limits", r);
      Check(
          !args->timezone.empty() && args->timezone.size() <= kMaxTimezoneBytes,
          "timezone out of limits", r);
      Check(args->count >= 1 && args->count <= kMaxPreviewCount,
            "count out of range", r);
      Check(args->after.has_value() == r.has_after(), "after presence changed",
            r);
      return;
    }
    case kSetLeadership: {
      v1::SetLeadershipRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<absl::Duration> ttl = ValidateSetLeadership(r);
      CheckRejection(ttl.status(), r);
      if (!ttl.ok()) return;
      Check(*ttl >= absl::ZeroDuration() && *ttl <= kMaxLeadershipTtl,
            "ttl out of range", r);
      return;
    }
    case kListCrons: {
      v1::ListCronsRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<int> page_size = ValidateListCrons(r);
      CheckRejection(page_size.status(), r);
      if (!page_size.ok()) return;
      Check(*page_size >= 1 && *page_size <= kMaxPageSize,
            "page_size out of range", r);
      Check(r.page_token().size() <= kMaxPageTokenBytes,
            "page_token over the limit", r);
      return;
    }
    case kAckBatch: {
      v1::AckBatchRequest r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<std::vector<AckItem>> items = ValidateAckBatch(r, limits);
      CheckRejection(items.status(), r);
      if (!items.ok()) return;
      Check(!items->empty() &&
                static_cast<int>(items->size()) <= limits.max_batch_size &&
                static_cast<int>(items->size()) == r.acks_size(),
            "batch size out of limits", r);
      std::set<std::string> ids;
      for (const AckItem& item : *items) {
        Check(!item.job_id.empty() && IsCleanText(item.job_id, kMaxJobIdBytes),
              "job_id out of limits", r);
        Check(!item.token.empty() && IsCleanText(item.token, kMaxKeyBytes),
              "lease_token out of limits", r);
        Check(ids.insert(item.job_id).second, "a job id twice", r);
      }
      return;
    }
    case kWorkStart: {
      v1::WorkStart r;
      if (!Parse(data, size, &r)) return;
      absl::StatusOr<WorkStartArgs> args = ValidateWorkStart(r, limits);
      CheckRejection(args.status(), r);
      if (!args.ok()) return;
      const DequeueOptions& o = args->options;
      Check(!o.queue.empty() && IsCleanText(o.queue, kMaxNameBytes),
            "queue out of limits", r);
      Check(static_cast<int>(o.job_types.size()) <= limits.max_batch_size,
            "too many job_types", r);
      for (const std::string& type : o.job_types) {
        Check(!type.empty() && IsCleanText(type, kMaxNameBytes),
              "job_types element out of limits", r);
      }
      Check(args->capacity >= 1 && args->capacity <= limits.max_batch_size &&
                o.max_jobs == args->capacity,
            "capacity out of range", r);
      Check(o.lease_duration >= kMinLeaseDuration &&
                o.lease_duration <= kMaxLeaseDuration,
            "lease_duration out of range", r);
      Check(IsCleanText(o.worker_id, kMaxNameBytes), "worker_id out of limits",
            r);
      return;
    }
    case kNumKinds:
      return;
  }
}

}  // namespace
}  // namespace adjutant

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // Malformed input is the normal case here: keep protobuf's parse errors
  // (one log line each) out of the fuzzer's output.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace adjutant;  // NOLINT(build/namespaces)
  if (size < 1) return 0;
  const Kind kind = static_cast<Kind>((data[0] & 0x7F) % kNumKinds);
  RequestLimits limits;
  if (data[0] & 0x80) {
    // Tight limits, so that short inputs reach the boundaries.
    limits.max_payload_bytes = 16;
    limits.default_max_attempts = 3;
    limits.max_batch_size = 4;
  }
  Run(kind, limits, data + 1, size - 1);
  return 0;
}
