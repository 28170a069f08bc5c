// The request validators on their own: defaults filled in, limits at their
// exact edges, and errors that name the field. (The RPC tests check the same
// errors end to end, and that a rejected request changes nothing.)
#include "server/validation.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace adjutant {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Expects INVALID_ARGUMENT whose message starts with "<field>: ".
template <typename T>
void ExpectInvalid(const T& result, const std::string& field) {
  absl::Status status;
  if constexpr (std::is_same_v<T, absl::Status>) {
    status = result;
  } else {
    status = result.status();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), StartsWith(field + ": "));
}

v1::EnqueueRequest ValidEnqueue() {
  v1::EnqueueRequest r;
  r.set_job_type("send");
  return r;
}

TEST(ValidateEnqueueTest, FillsDefaults) {
  RequestLimits limits;
  limits.default_max_attempts = 7;
  absl::StatusOr<NewJob> job = ValidateEnqueue(ValidEnqueue(), limits);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->queue, "default");
  EXPECT_EQ(job->type, "send");
  EXPECT_EQ(job->max_attempts, 7);
  EXPECT_EQ(job->run_at, absl::InfinitePast());
}

TEST(ValidateEnqueueTest, KeepsGivenValues) {
  v1::EnqueueRequest r = ValidEnqueue();
  r.set_queue("emails");
  r.set_payload(std::string("\0\xff", 2));
  r.set_priority(-3);
  r.mutable_run_at()->set_seconds(1767225600);
  r.mutable_run_at()->set_nanos(5);
  r.set_max_attempts(1000);
  r.set_idempotency_key("k\xc3\xa9");  // "ké"
  absl::StatusOr<NewJob> job = ValidateEnqueue(r, RequestLimits());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->queue, "emails");
  EXPECT_EQ(job->payload, std::string("\0\xff", 2));
  EXPECT_EQ(job->priority, -3);
  EXPECT_EQ(job->run_at,
            absl::FromUnixSeconds(1767225600) + absl::Nanoseconds(5));
  EXPECT_EQ(job->max_attempts, 1000);
  EXPECT_EQ(job->idempotency_key, "k\xc3\xa9");
}

TEST(ValidateEnqueueTest, NameLimits) {
  v1::EnqueueRequest r = ValidEnqueue();
  r.set_job_type(std::string(kMaxNameBytes, 'a'));
  EXPECT_TRUE(ValidateEnqueue(r, RequestLimits()).ok());
  r.set_job_type(std::string(kMaxNameBytes + 1, 'a'));
  ExpectInvalid(ValidateEnqueue(r, RequestLimits()), "job_type");

  r = ValidEnqueue();
  r.set_queue(std::string(kMaxNameBytes + 1, 'q'));
  ExpectInvalid(ValidateEnqueue(r, RequestLimits()), "queue");

  r = ValidEnqueue();
  r.set_idempotency_key(std::string(kMaxKeyBytes, 'k'));
  EXPECT_TRUE(ValidateEnqueue(r, RequestLimits()).ok());
  r.set_idempotency_key(std::string(kMaxKeyBytes + 1, 'k'));
  ExpectInvalid(ValidateEnqueue(r, RequestLimits()), "idempotency_key");
}

TEST(ValidateEnqueueTest, RejectsControlCharactersAndBadUtf8) {
  for (const std::string& bad : {std::string("a\nb"), std::string("a\0b", 3),
                                 std::string("\x7f"), std::string("\xc3"),
                                 std::string("\xed\xa0\x80"),  // a surrogate
                                 std::string("\xc0\xaf")}) {   // overlong
    v1::EnqueueRequest r = ValidEnqueue();
    r.set_job_type(bad);
    ExpectInvalid(ValidateEnqueue(r, RequestLimits()), "job_type");
  }
  v1::EnqueueRequest r = ValidEnqueue();
  r.set_queue("tab\there");
  absl::Status s = ValidateEnqueue(r, RequestLimits()).status();
  ExpectInvalid(s, "queue");
  EXPECT_THAT(std::string(s.message()), HasSubstr("control character"));
}

TEST(ValidateEnqueueTest, PayloadLimit) {
  RequestLimits limits;
  limits.max_payload_bytes = 10;
  v1::EnqueueRequest r = ValidEnqueue();
  r.set_payload(std::string(10, 'p'));
  EXPECT_TRUE(ValidateEnqueue(r, limits).ok());
  r.set_payload(std::string(11, 'p'));
  ExpectInvalid(ValidateEnqueue(r, limits), "payload");
}

TEST(ValidateEnqueueTest, MaxAttemptsRange) {
  v1::EnqueueRequest r = ValidEnqueue();
  r.set_max_attempts(-1);
  ExpectInvalid(ValidateEnqueue(r, RequestLimits()), "max_attempts");
  r.set_max_attempts(kMaxAttemptsLimit + 1);
  ExpectInvalid(ValidateEnqueue(r, RequestLimits()), "max_attempts");
}

TEST(ValidateEnqueueTest, RunAtRange) {
  v1::EnqueueRequest r = ValidEnqueue();
  r.mutable_run_at()->set_seconds(int64_t{1} << 50);
  ExpectInvalid(ValidateEnqueue(r, RequestLimits()), "run_at");
  r.mutable_run_at()->set_seconds(0);
  r.mutable_run_at()->set_nanos(-1);
  ExpectInvalid(ValidateEnqueue(r, RequestLimits()), "run_at");
}

// Stores keep int64 nanoseconds, which end in 2262: a later run_at would be
// stored as "never". The limit is 2200-01-01T00:00:00Z, inclusive.
TEST(ValidateEnqueueTest, RunAtAfterTheYear2200IsRefused) {
  const absl::Time limit =
      absl::FromCivil(absl::CivilSecond(2200, 1, 1), absl::UTCTimeZone());
  v1::EnqueueRequest r = ValidEnqueue();
  r.mutable_run_at()->set_seconds(absl::ToUnixSeconds(limit));
  absl::StatusOr<NewJob> job = ValidateEnqueue(r, RequestLimits());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->run_at, limit);

  r.mutable_run_at()->set_nanos(1);
  ExpectInvalid(ValidateEnqueue(r, RequestLimits()), "run_at");
  EXPECT_THAT(
      std::string(ValidateEnqueue(r, RequestLimits()).status().message()),
      HasSubstr("2200-01-01"));

  // 2262-04-12, past the end of int64 nanoseconds, and in a batch element.
  r.mutable_run_at()->set_seconds(9224000000);
  r.mutable_run_at()->set_nanos(0);
  v1::EnqueueBatchRequest batch;
  *batch.add_jobs() = ValidEnqueue();
  *batch.add_jobs() = r;
  ExpectInvalid(ValidateEnqueueBatch(batch, RequestLimits()), "jobs[1].run_at");
}

TEST(ValidateEnqueueBatchTest, SizeAndIndexedErrors) {
  RequestLimits limits;
  limits.max_batch_size = 3;
  v1::EnqueueBatchRequest batch;
  ExpectInvalid(ValidateEnqueueBatch(batch, limits), "jobs");
  for (int i = 0; i < 3; ++i) *batch.add_jobs() = ValidEnqueue();
  absl::StatusOr<std::vector<NewJob>> jobs =
      ValidateEnqueueBatch(batch, limits);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(jobs->size(), 3u);
  *batch.add_jobs() = ValidEnqueue();
  ExpectInvalid(ValidateEnqueueBatch(batch, limits), "jobs");

  batch.mutable_jobs()->RemoveLast();
  batch.mutable_jobs(2)->clear_job_type();
  absl::Status s = ValidateEnqueueBatch(batch, limits).status();
  EXPECT_EQ(s.message(), "jobs[2].job_type: required");
}

TEST(ValidateDequeueTest, FillsDefaults) {
  absl::StatusOr<DequeueArgs> args =
      ValidateDequeue(v1::DequeueRequest(), RequestLimits());
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->options.queue, "default");
  EXPECT_EQ(args->options.max_jobs, 1);
  EXPECT_EQ(args->options.lease_duration, absl::Seconds(30));
  EXPECT_EQ(args->wait, absl::ZeroDuration());
  EXPECT_TRUE(args->options.job_types.empty());
}

TEST(ValidateDequeueTest, DurationEdges) {
  v1::DequeueRequest r;
  r.mutable_lease_duration()->set_seconds(1);
  r.mutable_wait()->set_seconds(300);
  absl::StatusOr<DequeueArgs> args = ValidateDequeue(r, RequestLimits());
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->options.lease_duration, absl::Seconds(1));
  EXPECT_EQ(args->wait, absl::Minutes(5));

  r.mutable_lease_duration()->set_seconds(0);
  r.mutable_lease_duration()->set_nanos(999999999);
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "lease_duration");
  r.mutable_lease_duration()->set_seconds(86400);
  r.mutable_lease_duration()->set_nanos(1);
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "lease_duration");
  r.mutable_lease_duration()->set_seconds(86400);
  r.mutable_lease_duration()->set_nanos(0);
  EXPECT_TRUE(ValidateDequeue(r, RequestLimits()).ok());

  r.mutable_wait()->set_seconds(-1);
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "wait");
  r.mutable_wait()->set_seconds(301);
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "wait");
  r.mutable_wait()->set_seconds(1);
  r.mutable_wait()->set_nanos(-1);  // signs disagree
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "wait");
  r.mutable_wait()->set_seconds(INT64_MAX);
  r.mutable_wait()->set_nanos(0);
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "wait");
}

TEST(ValidateDequeueTest, CountsAndNames) {
  v1::DequeueRequest r;
  r.set_max_jobs(-1);
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "max_jobs");
  r.set_max_jobs(1001);
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "max_jobs");
  r.set_max_jobs(1000);
  EXPECT_TRUE(ValidateDequeue(r, RequestLimits()).ok());

  r.add_job_types("a");
  r.add_job_types("");
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "job_types[1]");
  r.clear_job_types();
  r.set_worker_id(std::string(kMaxNameBytes + 1, 'w'));
  ExpectInvalid(ValidateDequeue(r, RequestLimits()), "worker_id");
}

TEST(ValidateAckNackExtendTest, RequiredFieldsAndRanges) {
  v1::AckRequest ack;
  ExpectInvalid(ValidateAck(ack), "job_id");
  ack.set_job_id("j");
  ExpectInvalid(ValidateAck(ack), "lease_token");
  ack.set_lease_token(std::string(kMaxKeyBytes + 1, 't'));
  ExpectInvalid(ValidateAck(ack), "lease_token");
  ack.set_lease_token("t");
  EXPECT_TRUE(ValidateAck(ack).ok());

  v1::NackRequest nack;
  nack.set_job_id("j");
  nack.set_lease_token("t");
  absl::StatusOr<NackOptions> options = ValidateNack(nack);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FALSE(options->retry_after.has_value());
  nack.mutable_retry_after()->set_seconds(0);
  options = ValidateNack(nack);
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->retry_after, absl::ZeroDuration());
  nack.mutable_retry_after()->set_seconds(-1);
  ExpectInvalid(ValidateNack(nack), "retry_after");
  nack.mutable_retry_after()->set_seconds(30 * 86400 + 1);
  ExpectInvalid(ValidateNack(nack), "retry_after");
  nack.clear_retry_after();
  nack.set_error(std::string(kMaxErrorBytes + 1, 'e'));
  ExpectInvalid(ValidateNack(nack), "error");
  nack.set_error("multi\nline\ttext is fine");
  EXPECT_TRUE(ValidateNack(nack).ok());

  v1::ExtendLeaseRequest extend;
  extend.set_job_id("j");
  extend.set_lease_token("t");
  absl::StatusOr<absl::Duration> d = ValidateExtendLease(extend);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, absl::Seconds(30));
  extend.mutable_lease_duration()->set_seconds(0);
  ExpectInvalid(ValidateExtendLease(extend), "lease_duration");
}

TEST(ValidateListJobsTest, StateAndPageSize) {
  v1::ListJobsRequest r;
  absl::StatusOr<ListJobsArgs> args = ValidateListJobs(r);
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(args->page_size, 100);
  EXPECT_EQ(args->state, JobState::kUnspecified);
  EXPECT_EQ(args->queue, "");  // every queue

  r.set_state(v1::JOB_STATE_CANCELLED);
  args = ValidateListJobs(r);
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(args->state, JobState::kCancelled);
  r.set_state(static_cast<v1::JobState>(6));
  ExpectInvalid(ValidateListJobs(r), "state");
  r.set_state(static_cast<v1::JobState>(-1));
  ExpectInvalid(ValidateListJobs(r), "state");

  r.set_state(v1::JOB_STATE_UNSPECIFIED);
  r.set_page_size(-1);
  ExpectInvalid(ValidateListJobs(r), "page_size");
  r.set_page_size(1001);
  ExpectInvalid(ValidateListJobs(r), "page_size");
  r.set_page_size(1000);
  EXPECT_TRUE(ValidateListJobs(r).ok());
}

TEST(ValidateJobIdTest, RequiredAndBounded) {
  ExpectInvalid(ValidateJobId(""), "job_id");
  ExpectInvalid(ValidateJobId(std::string(kMaxJobIdBytes + 1, 'a')), "job_id");
  ExpectInvalid(ValidateJobId("a\rb"), "job_id");
  EXPECT_TRUE(ValidateJobId("0123abcd").ok());
}

TEST(ValidateLimitsTest, LeaseDurationAboveTheServersLimitNamesTheFlag) {
  RequestLimits limits;
  limits.max_lease_duration = absl::Minutes(10);
  google::protobuf::Duration d;
  d.set_seconds(601);
  absl::StatusOr<absl::Duration> lease =
      ValidateLeaseDuration(&d, limits, "lease_duration");
  ASSERT_EQ(lease.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(lease.status().message()),
              AllOf(StartsWith("lease_duration: "), HasSubstr("10m"),
                    HasSubstr("--max-lease-duration")));
  d.set_seconds(600);
  EXPECT_EQ(*ValidateLeaseDuration(&d, limits), absl::Minutes(10));
  // Absent: the default, capped by the limit.
  EXPECT_EQ(*ValidateLeaseDuration(nullptr, limits), kDefaultLeaseDuration);
  limits.max_lease_duration = absl::Seconds(5);
  EXPECT_EQ(*ValidateLeaseDuration(nullptr, limits), absl::Seconds(5));
  v1::ExtendLeaseRequest extend;
  extend.set_job_id("j");
  extend.set_lease_token("t");
  extend.mutable_lease_duration()->set_seconds(6);
  EXPECT_THAT(
      std::string(ValidateExtendLease(extend, limits).status().message()),
      HasSubstr("--max-lease-duration"));
  v1::DequeueRequest dequeue;
  dequeue.mutable_lease_duration()->set_seconds(6);
  EXPECT_EQ(ValidateDequeue(dequeue, limits).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ValidateLimitsTest, BatchErrorsNameTheFlag) {
  RequestLimits limits;
  limits.max_batch_size = 2;
  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < 3; ++i) {
    batch.add_jobs()->set_job_type("t");
  }
  EXPECT_THAT(
      std::string(ValidateEnqueueBatch(batch, limits).status().message()),
      AllOf(StartsWith("jobs: "), HasSubstr("--max-batch-size")));
  v1::DequeueRequest dequeue;
  dequeue.set_max_jobs(3);
  EXPECT_THAT(std::string(ValidateDequeue(dequeue, limits).status().message()),
              AllOf(StartsWith("max_jobs: "), HasSubstr("--max-batch-size")));
}

TEST(ValidateLimitsTest, RequestLimitsMustHoldTogether) {
  EXPECT_TRUE(ValidateRequestLimits(RequestLimits()).ok());
  RequestLimits limits;
  limits.max_message_bytes = limits.max_payload_bytes;
  EXPECT_THAT(std::string(ValidateRequestLimits(limits).message()),
              StartsWith("--max-message-bytes: "));
  limits = RequestLimits();
  limits.max_long_polls = 0;
  EXPECT_THAT(std::string(ValidateRequestLimits(limits).message()),
              StartsWith("--max-long-polls: "));
  limits = RequestLimits();
  limits.max_lease_duration = absl::Hours(25);
  EXPECT_THAT(std::string(ValidateRequestLimits(limits).message()),
              StartsWith("--max-lease-duration: "));
  limits = RequestLimits();
  limits.max_message_bytes = kMaxMessageBytesLimit + 1;
  EXPECT_THAT(std::string(ValidateRequestLimits(limits).message()),
              StartsWith("--max-message-bytes: "));
}

}  // namespace
}  // namespace adjutant
