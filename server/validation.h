// Request validation for the JobQueue service: pure functions from a
// generated request message to the store's input types.
//
// Every validator is cheap (no I/O, no locks, no clock), so the service runs
// it on the gRPC reaction thread before any store call: a rejected request
// changes nothing. It accepts any message, however malformed (a fuzzer is
// pointed at these functions), and fails with INVALID_ARGUMENT whose message
// starts with the field at fault, then the reason:
//   "jobs[3].job_type: required"
//   "lease_duration: must be between 1s and 24h"
// Thread-safe: no state.
#ifndef ADJUTANT_SERVER_VALIDATION_H_
#define ADJUTANT_SERVER_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.pb.h"
#include "storage/job.h"

namespace adjutant {

// The queue of a request whose `queue` is empty (Enqueue, Dequeue).
inline constexpr absl::string_view kDefaultQueue = "default";

// Fixed limits of the API (the proto comments state them).
inline constexpr size_t kMaxNameBytes = 128;  // queue, job_type, worker_id
inline constexpr size_t kMaxKeyBytes = 256;   // idempotency_key, lease_token
inline constexpr size_t kMaxJobIdBytes = 128;
inline constexpr size_t kMaxErrorBytes = 64 * 1024;  // Nack's error text
inline constexpr size_t kMaxPageTokenBytes = 1024;
inline constexpr int32_t kMaxAttemptsLimit = 1000;
inline constexpr int kDefaultPageSize = 100;
inline constexpr int kMaxPageSize = 1000;
inline constexpr absl::Duration kDefaultLeaseDuration = absl::Seconds(30);
inline constexpr absl::Duration kMinLeaseDuration = absl::Seconds(1);
inline constexpr absl::Duration kMaxLeaseDuration = absl::Hours(24);
inline constexpr absl::Duration kMaxWait = absl::Minutes(5);
inline constexpr absl::Duration kMaxRetryAfter = absl::Hours(24 * 30);
// The latest run_at accepted: 2200-01-01T00:00:00Z. Stores keep instants as
// int64 nanoseconds since 1970, which end in April 2262; a later run_at would
// read back as "never". The margin keeps run_at + backoff in range too.
inline constexpr int64_t kMaxRunAtUnixSeconds = 7258118400;

// The limits that are the server's to choose (adjutantd flags).
struct RequestLimits {
  // The largest payload accepted, in bytes (--max-payload-bytes).
  // Default 1 MiB.
  int64_t max_payload_bytes = 1 << 20;
  // The max_attempts of a job enqueued with 0 (--default-max-attempts).
  // Default 25. REQUIRES: in [1, kMaxAttemptsLimit].
  int32_t default_max_attempts = 25;
  // The most jobs in one EnqueueBatch or AckBatch, the largest Dequeue
  // max_jobs and the largest Work capacity (--max-batch-size). Default 1000.
  int max_batch_size = 1000;

  // ---- Limits against overload (docs/OPERATIONS.md, "Limits") ----
  // The longest lease a Dequeue or ExtendLease (or any other call that
  // takes a lease_duration) may ask for (--max-lease-duration). Longer:
  // INVALID_ARGUMENT naming lease_duration and the flag. A Dequeue without
  // lease_duration gets min(kDefaultLeaseDuration, this). Default 24 h.
  // REQUIRES: in [kMinLeaseDuration, kMaxLeaseDuration].
  absl::Duration max_lease_duration = kMaxLeaseDuration;
  // The most long-polls in progress at once (--max-long-polls): Dequeue
  // calls with a wait, and open Work streams; one more gets
  // RESOURCE_EXHAUSTED naming the flag. A parked call holds no thread, only
  // its gRPC call state (a few KiB).
  // Default 20000. REQUIRES: >= 1.
  int max_long_polls = 20000;
  // The largest request message the server accepts, in bytes
  // (--max-message-bytes): gRPC itself answers a larger one with
  // RESOURCE_EXHAUSTED "Received message larger than max (N vs. LIMIT)"
  // before any handler runs. Default 16 MiB. REQUIRES: at least
  // max_payload_bytes + kMessageOverheadBytes (ValidateRequestLimits).
  int64_t max_message_bytes = int64_t{16} << 20;
};

// What an Enqueue message holds besides its payload, at most: the names,
// key, times and framing (a few hundred bytes), with a wide margin. The
// message limit must leave room for a payload of the largest size plus this.
inline constexpr int64_t kMessageOverheadBytes = 64 * 1024;
// gRPC counts message sizes in an int.
inline constexpr int64_t kMaxMessageBytesLimit = (int64_t{1} << 31) - 1;

// Checks that `limits` hold together: each within its range, and the
// message limit large enough for one Enqueue of the largest payload.
// INVALID_ARGUMENT naming the flag and the reason.
absl::Status ValidateRequestLimits(const RequestLimits& limits);

// A lease_duration field (Dequeue, ExtendLease, and any other call taking
// one): absent (nullptr) means min(kDefaultLeaseDuration,
// limits.max_lease_duration); else in [kMinLeaseDuration,
// limits.max_lease_duration], or INVALID_ARGUMENT naming `field` and
// --max-lease-duration.
absl::StatusOr<absl::Duration> ValidateLeaseDuration(
    const google::protobuf::Duration* lease_duration,
    const RequestLimits& limits, absl::string_view field = "lease_duration");

// Enqueue: returns the job to store. `field_prefix` is prepended to field
// names in errors ("jobs[3]." for a batch element). An empty queue becomes
// kDefaultQueue, max_attempts 0 the default, an absent run_at "now"
// (InfinitePast, which the store replaces with its `now`); a run_at after
// kMaxRunAtUnixSeconds is refused.
absl::StatusOr<NewJob> ValidateEnqueue(const v1::EnqueueRequest& request,
                                       const RequestLimits& limits,
                                       absl::string_view field_prefix = "");

// EnqueueBatch: one NewJob per element, in order. The batch must hold 1 to
// limits.max_batch_size jobs; an element's error names its index.
absl::StatusOr<std::vector<NewJob>> ValidateEnqueueBatch(
    const v1::EnqueueBatchRequest& request, const RequestLimits& limits);

struct DequeueArgs {
  DequeueOptions options;
  // How long to long-poll when nothing is available; zero: return at once.
  absl::Duration wait = absl::ZeroDuration();
};

// Dequeue: max_jobs 0 means 1; lease_duration as ValidateLeaseDuration
// (absent: 30 s; else in [1 s, limits.max_lease_duration]); wait absent
// means 0, else in [0, 5 min].
absl::StatusOr<DequeueArgs> ValidateDequeue(const v1::DequeueRequest& request,
                                            const RequestLimits& limits);

// A job id: required, at most kMaxJobIdBytes, no control characters.
// `field` names it in errors.
absl::Status ValidateJobId(absl::string_view job_id,
                           absl::string_view field = "job_id");

// Ack: job_id and lease_token required. `field_prefix` is prepended to
// field names in errors ("acks[3]." for an AckBatch item, "ack." on a Work
// stream).
absl::Status ValidateAck(const v1::AckRequest& request,
                         absl::string_view field_prefix = "");

// AckBatch: one AckItem per item, in order. The batch must hold 1 to
// limits.max_batch_size items, each valid as for Ack, and no job id twice
// (the second names itself: "acks[4].job_id: ... also at acks[1]").
absl::StatusOr<std::vector<AckItem>> ValidateAckBatch(
    const v1::AckBatchRequest& request, const RequestLimits& limits);

// Nack: job_id and lease_token required; error at most kMaxErrorBytes;
// retry_after absent means the backoff policy, else in [0, 30 days].
// `field_prefix` as for ValidateAck.
absl::StatusOr<NackOptions> ValidateNack(const v1::NackRequest& request,
                                         absl::string_view field_prefix = "");

// ExtendLease: returns the new lease duration (as ValidateLeaseDuration:
// absent: 30 s; else in [1 s, limits.max_lease_duration]).
absl::StatusOr<absl::Duration> ValidateExtendLease(
    const v1::ExtendLeaseRequest& request,
    const RequestLimits& limits = RequestLimits());

// The first message of a Work stream: queue, job_types, lease_duration and
// worker_id as for Dequeue; capacity in [1, limits.max_batch_size]. Fields
// are named "start.<field>" in errors. Returns the options of each lease
// (max_jobs = capacity) and the capacity.
struct WorkStartArgs {
  DequeueOptions options;
  int capacity = 1;
};
absl::StatusOr<WorkStartArgs> ValidateWorkStart(const v1::WorkStart& start,
                                                const RequestLimits& limits);

struct ListJobsArgs {
  std::string queue;                        // empty: every queue
  JobState state = JobState::kUnspecified;  // kUnspecified: any
  int page_size = kDefaultPageSize;
  std::string page_token;
};

// ListJobs: state must be a JobState the API defines; page_size 0 means
// kDefaultPageSize, else in [1, kMaxPageSize].
absl::StatusOr<ListJobsArgs> ValidateListJobs(
    const v1::ListJobsRequest& request);

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_VALIDATION_H_
