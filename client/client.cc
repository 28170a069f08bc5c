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
    const Request& request, absl::Duration extra) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_ + extra));
  Response response;
  grpc::Status status = (stub->*method)(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return response;
}

absl::StatusOr<v1::EnqueueResponse> Client::Enqueue(
    const v1::EnqueueRequest& r) {
  return Call(queue_.get(), &v1::JobQueue::Stub::Enqueue, r);
}
absl::StatusOr<v1::EnqueueBatchResponse> Client::EnqueueBatch(
    const v1::EnqueueBatchRequest& r) {
  return Call(queue_.get(), &v1::JobQueue::Stub::EnqueueBatch, r);
}
absl::StatusOr<v1::DequeueResponse> Client::Dequeue(
    const v1::DequeueRequest& r) {
  absl::Duration wait =
      absl::Seconds(r.wait().seconds()) + absl::Nanoseconds(r.wait().nanos());
  return Call(queue_.get(), &v1::JobQueue::Stub::Dequeue, r,
              std::max(wait, absl::ZeroDuration()));
}
absl::StatusOr<v1::AckResponse> Client::Ack(const v1::AckRequest& r) {
  return Call(queue_.get(), &v1::JobQueue::Stub::Ack, r);
}
absl::StatusOr<v1::NackResponse> Client::Nack(const v1::NackRequest& r) {
  return Call(queue_.get(), &v1::JobQueue::Stub::Nack, r);
}
absl::StatusOr<v1::ExtendLeaseResponse> Client::ExtendLease(
    const v1::ExtendLeaseRequest& r) {
  return Call(queue_.get(), &v1::JobQueue::Stub::ExtendLease, r);
}
absl::StatusOr<v1::Job> Client::GetJob(const v1::GetJobRequest& r) {
  return Call(queue_.get(), &v1::JobQueue::Stub::GetJob, r);
}
absl::StatusOr<v1::Job> Client::CancelJob(const v1::CancelJobRequest& r) {
  return Call(queue_.get(), &v1::JobQueue::Stub::CancelJob, r);
}
absl::StatusOr<v1::Job> Client::RequeueJob(const v1::RequeueJobRequest& r) {
  return Call(queue_.get(), &v1::JobQueue::Stub::RequeueJob, r);
}
absl::StatusOr<v1::ListJobsResponse> Client::ListJobs(
    const v1::ListJobsRequest& r) {
  return Call(queue_.get(), &v1::JobQueue::Stub::ListJobs, r);
}

absl::StatusOr<v1::Cron> Client::RegisterCron(
    const v1::RegisterCronRequest& r) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::RegisterCron, r);
}
absl::StatusOr<v1::UnregisterCronResponse> Client::UnregisterCron(
    const v1::UnregisterCronRequest& r) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::UnregisterCron, r);
}
absl::StatusOr<v1::Cron> Client::GetCron(const v1::GetCronRequest& r) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::GetCron, r);
}
absl::StatusOr<v1::ListCronsResponse> Client::ListCrons(
    const v1::ListCronsRequest& r) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::ListCrons, r);
}
absl::StatusOr<v1::PreviewCronResponse> Client::PreviewCron(
    const v1::PreviewCronRequest& r) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::PreviewCron, r);
}
absl::StatusOr<v1::Leadership> Client::SetLeadership(
    const v1::SetLeadershipRequest& r) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::SetLeadership, r);
}
absl::StatusOr<v1::Leadership> Client::GetLeadership(
    const v1::GetLeadershipRequest& r) {
  return Call(scheduler_.get(), &v1::Scheduler::Stub::GetLeadership, r);
}

}  // namespace adjutant
