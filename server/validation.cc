#include "server/validation.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/convert.h"

namespace adjutant {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

// The length of the well-formed UTF-8 sequence at the start of `s`, or 0 if
// it is malformed (overlong forms, surrogates and code points past U+10FFFF
// included).
size_t Utf8SequenceLength(absl::string_view s) {
  const auto byte = [&s](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = byte(0);
  if (b0 < 0x80) return 1;
  size_t length;
  unsigned char min1 = 0x80, max1 = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) min1 = 0xA0;  // overlong
    if (b0 == 0xED) max1 = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) min1 = 0x90;  // overlong
    if (b0 == 0xF4) max1 = 0x8F;  // past U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < length) return 0;
  if (byte(1) < min1 || byte(1) > max1) return 0;
  for (size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xBF) return 0;
  }
  return length;
}

// A name, key or id: at most `max_bytes`, valid UTF-8, no control
// characters (C0, DEL; they break logs and terminals). Empty passes unless
// `required`.
absl::Status ValidateText(absl::string_view value, absl::string_view field,
                          size_t max_bytes, bool required) {
  if (value.empty()) {
    return required ? Invalid(field, "required") : absl::OkStatus();
  }
  if (value.size() > max_bytes) {
    return Invalid(field, absl::StrCat("must be at most ", max_bytes,
                                       " bytes (got ", value.size(), ")"));
  }
  for (size_t i = 0; i < value.size();) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 || c == 0x7F) {
      return Invalid(field,
                     absl::StrCat("contains a control character at byte ", i));
    }
    const size_t n = Utf8SequenceLength(value.substr(i));
    if (n == 0) {
      return Invalid(field, absl::StrCat("is not valid UTF-8 at byte ", i));
    }
    i += n;
  }
  return absl::OkStatus();
}

absl::Status ValidateLeaseToken(absl::string_view token,
                                absl::string_view field = "lease_token") {
  return ValidateText(token, field, kMaxKeyBytes, /*required=*/true);
}

}  // namespace

absl::StatusOr<NewJob> ValidateEnqueue(const v1::EnqueueRequest& request,
                                       const RequestLimits& limits,
                                       absl::string_view field_prefix) {
  const auto field = [field_prefix](absl::string_view name) {
    return absl::StrCat(field_prefix, name);
  };
  NewJob job;
  if (absl::Status s = ValidateText(request.queue(), field("queue"),
                                    kMaxNameBytes, /*required=*/false);
      !s.ok()) {
    return s;
  }
  job.queue =
      request.queue().empty() ? std::string(kDefaultQueue) : request.queue();
  if (absl::Status s = ValidateText(request.job_type(), field("job_type"),
                                    kMaxNameBytes, /*required=*/true);
      !s.ok()) {
    return s;
  }
  job.type = request.job_type();
  if (static_cast<int64_t>(request.payload().size()) >
      limits.max_payload_bytes) {
    return Invalid(field("payload"),
                   absl::StrCat("must be at most ", limits.max_payload_bytes,
                                " bytes (got ", request.payload().size(),
                                "; see --max-payload-bytes)"));
  }
  job.payload = request.payload();
  job.priority = request.priority();
  if (request.has_run_at()) {
    absl::StatusOr<absl::Time> run_at =
        FromProto(request.run_at(), field("run_at"));
    if (!run_at.ok()) return run_at.status();
    if (*run_at > absl::FromUnixSeconds(kMaxRunAtUnixSeconds)) {
      return Invalid(
          field("run_at"),
          absl::StrCat(
              "must be at most ",
              absl::FormatTime(absl::RFC3339_full,
                               absl::FromUnixSeconds(kMaxRunAtUnixSeconds),
                               absl::UTCTimeZone()),
              " (got ",
              absl::FormatTime(absl::RFC3339_full, *run_at,
                               absl::UTCTimeZone()),
              ")"));
    }
    job.run_at = *run_at;
  }
  if (request.max_attempts() < 0 ||
      request.max_attempts() > kMaxAttemptsLimit) {
    return Invalid(
        field("max_attempts"),
        absl::StrCat("must be between 0 (the server default) and ",
                     kMaxAttemptsLimit, " (got ", request.max_attempts(), ")"));
  }
  job.max_attempts = request.max_attempts() == 0 ? limits.default_max_attempts
                                                 : request.max_attempts();
  if (absl::Status s =
          ValidateText(request.idempotency_key(), field("idempotency_key"),
                       kMaxKeyBytes, /*required=*/false);
      !s.ok()) {
    return s;
  }
  job.idempotency_key = request.idempotency_key();
  return job;
}

absl::StatusOr<std::vector<NewJob>> ValidateEnqueueBatch(
    const v1::EnqueueBatchRequest& request, const RequestLimits& limits) {
  if (request.jobs_size() == 0 || request.jobs_size() > limits.max_batch_size) {
    return Invalid(
        "jobs",
        absl::StrCat("must hold 1 to ", limits.max_batch_size, " jobs (got ",
                     request.jobs_size(), "; see --max-batch-size)"));
  }
  std::vector<NewJob> jobs;
  jobs.reserve(request.jobs_size());
  for (int i = 0; i < request.jobs_size(); ++i) {
    absl::StatusOr<NewJob> job = ValidateEnqueue(
        request.jobs(i), limits, absl::StrCat("jobs[", i, "]."));
    if (!job.ok()) return job.status();
    jobs.push_back(*std::move(job));
  }
  return jobs;
}

namespace {

// The fields Dequeue and WorkStart share, named `field_prefix` + name in
// errors: queue, job_types, lease_duration, worker_id.
template <typename Message>
absl::Status ValidateLeaseRequest(const Message& request,
                                  const RequestLimits& limits,
                                  absl::string_view field_prefix,
                                  DequeueOptions* options) {
  const auto field = [field_prefix](absl::string_view name) {
    return absl::StrCat(field_prefix, name);
  };
  if (absl::Status s = ValidateText(request.queue(), field("queue"),
                                    kMaxNameBytes, /*required=*/false);
      !s.ok()) {
    return s;
  }
  options->queue =
      request.queue().empty() ? std::string(kDefaultQueue) : request.queue();
  if (request.job_types_size() > limits.max_batch_size) {
    return Invalid(field("job_types"),
                   absl::StrCat("must hold at most ", limits.max_batch_size,
                                " types (got ", request.job_types_size(),
                                "; see --max-batch-size)"));
  }
  for (int i = 0; i < request.job_types_size(); ++i) {
    if (absl::Status s = ValidateText(request.job_types(i),
                                      field(absl::StrCat("job_types[", i, "]")),
                                      kMaxNameBytes, /*required=*/true);
        !s.ok()) {
      return s;
    }
    options->job_types.push_back(request.job_types(i));
  }
  absl::StatusOr<absl::Duration> lease = ValidateLeaseDuration(
      request.has_lease_duration() ? &request.lease_duration() : nullptr,
      limits, field("lease_duration"));
  if (!lease.ok()) return lease.status();
  options->lease_duration = *lease;
  if (absl::Status s = ValidateText(request.worker_id(), field("worker_id"),
                                    kMaxNameBytes, /*required=*/false);
      !s.ok()) {
    return s;
  }
  options->worker_id = request.worker_id();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<WorkStartArgs> ValidateWorkStart(const v1::WorkStart& start,
                                                const RequestLimits& limits) {
  WorkStartArgs args;
  if (absl::Status s =
          ValidateLeaseRequest(start, limits, "start.", &args.options);
      !s.ok()) {
    return s;
  }
  if (start.capacity() < 1 || start.capacity() > limits.max_batch_size) {
    return Invalid(
        "start.capacity",
        absl::StrCat("must be between 1 and ", limits.max_batch_size, " (got ",
                     start.capacity(), "; see --max-batch-size)"));
  }
  args.capacity = start.capacity();
  args.options.max_jobs = args.capacity;
  return args;
}

absl::StatusOr<DequeueArgs> ValidateDequeue(const v1::DequeueRequest& request,
                                            const RequestLimits& limits) {
  DequeueArgs args;
  if (absl::Status s = ValidateText(request.queue(), "queue", kMaxNameBytes,
                                    /*required=*/false);
      !s.ok()) {
    return s;
  }
  args.options.queue =
      request.queue().empty() ? std::string(kDefaultQueue) : request.queue();
  if (request.job_types_size() > limits.max_batch_size) {
    return Invalid("job_types",
                   absl::StrCat("must hold at most ", limits.max_batch_size,
                                " types (got ", request.job_types_size(),
                                "; see --max-batch-size)"));
  }
  for (int i = 0; i < request.job_types_size(); ++i) {
    if (absl::Status s = ValidateText(request.job_types(i),
                                      absl::StrCat("job_types[", i, "]"),
                                      kMaxNameBytes, /*required=*/true);
        !s.ok()) {
      return s;
    }
    args.options.job_types.push_back(request.job_types(i));
  }
  if (request.max_jobs() < 0 || request.max_jobs() > limits.max_batch_size) {
    return Invalid("max_jobs",
                   absl::StrCat("must be between 0 (meaning 1) and ",
                                limits.max_batch_size, " (got ",
                                request.max_jobs(), "; see --max-batch-size)"));
  }
  args.options.max_jobs = request.max_jobs() == 0 ? 1 : request.max_jobs();
  absl::StatusOr<absl::Duration> lease = ValidateLeaseDuration(
      request.has_lease_duration() ? &request.lease_duration() : nullptr,
      limits);
  if (!lease.ok()) return lease.status();
  args.options.lease_duration = *lease;
  if (request.has_wait()) {
    absl::StatusOr<absl::Duration> d =
        FromProto(request.wait(), "wait", absl::ZeroDuration(), kMaxWait);
    if (!d.ok()) return d.status();
    args.wait = *d;
  }
  if (absl::Status s = ValidateText(request.worker_id(), "worker_id",
                                    kMaxNameBytes, /*required=*/false);
      !s.ok()) {
    return s;
  }
  args.options.worker_id = request.worker_id();
  return args;
}

absl::Status ValidateJobId(absl::string_view job_id, absl::string_view field) {
  return ValidateText(job_id, field, kMaxJobIdBytes, /*required=*/true);
}

absl::Status ValidateAck(const v1::AckRequest& request,
                         absl::string_view field_prefix) {
  if (absl::Status s =
          ValidateJobId(request.job_id(), absl::StrCat(field_prefix, "job_id"));
      !s.ok()) {
    return s;
  }
  return ValidateLeaseToken(request.lease_token(),
                            absl::StrCat(field_prefix, "lease_token"));
}

absl::StatusOr<std::vector<AckItem>> ValidateAckBatch(
    const v1::AckBatchRequest& request, const RequestLimits& limits) {
  if (request.acks_size() == 0 || request.acks_size() > limits.max_batch_size) {
    return Invalid(
        "acks",
        absl::StrCat("must hold 1 to ", limits.max_batch_size, " items (got ",
                     request.acks_size(), "; see --max-batch-size)"));
  }
  std::vector<AckItem> items;
  items.reserve(request.acks_size());
  // Job id -> the index of its first item.
  std::map<absl::string_view, int> seen;
  for (int i = 0; i < request.acks_size(); ++i) {
    const v1::AckRequest& ack = request.acks(i);
    if (absl::Status s = ValidateAck(ack, absl::StrCat("acks[", i, "]."));
        !s.ok()) {
      return s;
    }
    auto [it, inserted] = seen.emplace(ack.job_id(), i);
    if (!inserted) {
      return Invalid(absl::StrCat("acks[", i, "].job_id"),
                     absl::StrCat("the job is already in the batch at acks[",
                                  it->second, "]"));
    }
    items.push_back(AckItem{ack.job_id(), ack.lease_token()});
  }
  return items;
}

absl::StatusOr<NackOptions> ValidateNack(const v1::NackRequest& request,
                                         absl::string_view field_prefix) {
  const auto field = [field_prefix](absl::string_view name) {
    return absl::StrCat(field_prefix, name);
  };
  if (absl::Status s = ValidateJobId(request.job_id(), field("job_id"));
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          ValidateLeaseToken(request.lease_token(), field("lease_token"));
      !s.ok()) {
    return s;
  }
  NackOptions options;
  // Free text (a stack trace may span lines), so only its size is limited.
  if (request.error().size() > kMaxErrorBytes) {
    return Invalid(field("error"),
                   absl::StrCat("must be at most ", kMaxErrorBytes,
                                " bytes (got ", request.error().size(), ")"));
  }
  options.error = request.error();
  if (request.has_retry_after()) {
    absl::StatusOr<absl::Duration> d =
        FromProto(request.retry_after(), field("retry_after"),
                  absl::ZeroDuration(), kMaxRetryAfter);
    if (!d.ok()) return d.status();
    options.retry_after = *d;
  }
  options.dead = request.dead();
  return options;
}

absl::StatusOr<absl::Duration> ValidateExtendLease(
    const v1::ExtendLeaseRequest& request, const RequestLimits& limits) {
  if (absl::Status s = ValidateJobId(request.job_id()); !s.ok()) return s;
  if (absl::Status s = ValidateLeaseToken(request.lease_token()); !s.ok()) {
    return s;
  }
  return ValidateLeaseDuration(
      request.has_lease_duration() ? &request.lease_duration() : nullptr,
      limits);
}

absl::StatusOr<absl::Duration> ValidateLeaseDuration(
    const google::protobuf::Duration* lease_duration,
    const RequestLimits& limits, absl::string_view field) {
  // Clamped so that a limit outside the documented range cannot widen it.
  const absl::Duration max = std::clamp(limits.max_lease_duration,
                                        kMinLeaseDuration, kMaxLeaseDuration);
  if (lease_duration == nullptr) return std::min(kDefaultLeaseDuration, max);
  absl::StatusOr<absl::Duration> d =
      FromProto(*lease_duration, field, kMinLeaseDuration, max);
  if (!d.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        d.status().message(), " (the upper bound is the server's ",
        "--max-lease-duration; extend a lease to hold a job ", "longer)"));
  }
  return d;
}

absl::Status ValidateRequestLimits(const RequestLimits& limits) {
  const auto invalid = [](absl::string_view flag, absl::string_view reason) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", reason));
  };
  if (limits.max_payload_bytes < 0) {
    return invalid("--max-payload-bytes", "must not be negative");
  }
  if (limits.default_max_attempts < 1 ||
      limits.default_max_attempts > kMaxAttemptsLimit) {
    return invalid("--default-max-attempts",
                   absl::StrCat("must be between 1 and ", kMaxAttemptsLimit));
  }
  if (limits.max_batch_size < 1) {
    return invalid("--max-batch-size", "must be at least 1");
  }
  if (limits.max_lease_duration < kMinLeaseDuration ||
      limits.max_lease_duration > kMaxLeaseDuration) {
    return invalid(
        "--max-lease-duration",
        absl::StrCat(absl::FormatDuration(limits.max_lease_duration),
                     " is outside ", absl::FormatDuration(kMinLeaseDuration),
                     "..", absl::FormatDuration(kMaxLeaseDuration)));
  }
  if (limits.max_long_polls < 1) {
    return invalid("--max-long-polls", "must be at least 1");
  }
  if (limits.max_message_bytes > kMaxMessageBytesLimit) {
    return invalid("--max-message-bytes",
                   absl::StrCat(limits.max_message_bytes, " is more than ",
                                kMaxMessageBytesLimit, " (gRPC's largest)"));
  }
  if (limits.max_message_bytes <
      limits.max_payload_bytes + kMessageOverheadBytes) {
    return invalid(
        "--max-message-bytes",
        absl::StrCat(limits.max_message_bytes,
                     " is too small for an Enqueue of the largest payload: "
                     "it must be at least --max-payload-bytes (",
                     limits.max_payload_bytes, ") + ", kMessageOverheadBytes,
                     " = ", limits.max_payload_bytes + kMessageOverheadBytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<ListJobsArgs> ValidateListJobs(
    const v1::ListJobsRequest& request) {
  ListJobsArgs args;
  if (absl::Status s = ValidateText(request.queue(), "queue", kMaxNameBytes,
                                    /*required=*/false);
      !s.ok()) {
    return s;
  }
  args.queue = request.queue();
  // proto3 enums are open: the wire may carry any number.
  if (!v1::JobState_IsValid(request.state())) {
    return Invalid("state",
                   absl::StrCat("unknown job state ", request.state()));
  }
  args.state = static_cast<JobState>(request.state());
  if (request.page_size() < 0 || request.page_size() > kMaxPageSize) {
    return Invalid(
        "page_size",
        absl::StrCat("must be between 0 (meaning ", kDefaultPageSize, ") and ",
                     kMaxPageSize, " (got ", request.page_size(), ")"));
  }
  args.page_size =
      request.page_size() == 0 ? kDefaultPageSize : request.page_size();
  if (request.page_token().size() > kMaxPageTokenBytes) {
    return Invalid("page_token", "not a token this server made");
  }
  args.page_token = request.page_token();
  return args;
}

}  // namespace adjutant
