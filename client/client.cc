#include "client/client.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace adjutant {

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("target: required (HOST:PORT)");
  }
  auto credentials = options.credentials ? options.credentials
                                         : grpc::InsecureChannelCredentials();
  return std::unique_ptr<Client>(new Client(
      grpc::CreateChannel(options.target, credentials), options.deadline));
}

void CallCanceller::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

void CallCanceller::Reset() {
  absl::MutexLock lock(&mu_);
  cancelled_ = false;
}

bool CallCanceller::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool CallCanceller::Attach(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return false;
  context_ = context;
  return true;
}

void CallCanceller::Detach() {
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
}

Client::Client(std::shared_ptr<grpc::Channel> channel, absl::Duration deadline)
    : deadline_(deadline),
      channel_(std::move(channel)),
      queue_(v1::JobQueue::NewStub(channel_)),
      scheduler_(v1::Scheduler::NewStub(channel_)) {}

template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Client::Call(
    Stub* stub,
    grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                 Response*),
    const Request& request, const CallOptions& options, absl::Duration extra) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(
      absl::Now() + options.deadline.value_or(deadline_) + extra));
  if (options.canceller != nullptr && !options.canceller->Attach(&context)) {
    return absl::CancelledError("call cancelled before it started");
  }
  Response response;
  grpc::Status status = (stub->*method)(&context, request, &response);
  if (options.canceller != nullptr) options.canceller->Detach();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return response;
}

absl::StatusOr<v1::EnqueueResponse> Client::Enqueue(
    const v1::EnqueueRequest& r, const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::Enqueue, r, options);
}
absl::StatusOr<v1::EnqueueBatchResponse> Client::EnqueueBatch(
    const v1::EnqueueBatchRequest& r, const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::EnqueueBatch, r, options);
}
absl::StatusOr<v1::DequeueResponse> Client::Dequeue(
    const v1::DequeueRequest& r, const CallOptions& options) {
  absl::Duration wait =
      absl::Seconds(r.wait().seconds()) + absl::Nanoseconds(r.wait().nanos());
  return Call(queue_.get(), &v1::JobQueue::Stub::Dequeue, r, options,
              std::max(wait, absl::ZeroDuration()));
}
absl::StatusOr<v1::AckResponse> Client::Ack(const v1::AckRequest& r,
                                            const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::Ack, r, options);
}
absl::StatusOr<v1::NackResponse> Client::Nack(const v1::NackRequest& r,
                                              const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::Nack, r, options);
}
absl::StatusOr<v1::ExtendLeaseResponse> Client::ExtendLease(
    const v1::ExtendLeaseRequest& r, const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::ExtendLease, r, options);
}
absl::StatusOr<v1::Job> Client::GetJob(const v1::GetJobRequest& r,
                                       const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::GetJob, r, options);
}
absl::StatusOr<v1::Job> Client::CancelJob(const v1::CancelJobRequest& r,
                                          const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::CancelJob, r, options);
}
absl::StatusOr<v1::Job> Client::RequeueJob(const v1::RequeueJobRequest& r,
                                           const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::RequeueJob, r, options);
}
absl::StatusOr<v1::ListJobsResponse> Client::ListJobs(
    const v1::ListJobsRequest& r, const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::ListJobs, r, options);
}
absl::StatusOr<v1::GetStatsResponse> Client::GetStats(
    const v1::GetStatsRequest& r, const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::GetStats, r, options);
}

absl::StatusOr<v1::Cron> Client::RegisterCron(const v1::RegisterCronRequest& r,
                                              const CallOptions& options) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::RegisterCron, r, options);
}
absl::StatusOr<v1::UnregisterCronResponse> Client::UnregisterCron(
    const v1::UnregisterCronRequest& r, const CallOptions& options) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::UnregisterCron, r,
              options);
}
absl::StatusOr<v1::Cron> Client::GetCron(const v1::GetCronRequest& r,
                                         const CallOptions& options) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::GetCron, r, options);
}
absl::StatusOr<v1::ListCronsResponse> Client::ListCrons(
    const v1::ListCronsRequest& r, const CallOptions& options) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::ListCrons, r, options);
}
absl::StatusOr<v1::PreviewCronResponse> Client::PreviewCron(
    const v1::PreviewCronRequest& r, const CallOptions& options) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::PreviewCron, r, options);
}
absl::StatusOr<v1::Leadership> Client::SetLeadership(
    const v1::SetLeadershipRequest& r, const CallOptions& options) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::SetLeadership, r,
              options);
}
absl::StatusOr<v1::Leadership> Client::GetLeadership(
    const v1::GetLeadershipRequest& r, const CallOptions& options) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::GetLeadership, r,
              options);
}

}  // namespace adjutant
