// adjutant::Client: a synchronous C++ client for adjutantd, one method per
// RPC of adjutant.v1.JobQueue and adjutant.v1.Scheduler.
//
// Every method returns the RPC's response or its status as an absl::Status
// (the codes are gRPC's). Each call gets the client's deadline; Dequeue's
// deadline is extended by its `wait`.
//
// Thread-safe: one Client may be shared by any number of threads.
#ifndef ADJUTANT_CLIENT_CLIENT_H_
#define ADJUTANT_CLIENT_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "adjutant/v1/scheduler.grpc.pb.h"

namespace adjutant {

struct ClientOptions {
  // HOST:PORT of adjutantd. Required.
  std::string target;
  // Deadline of each call. Default: 10 s.
  absl::Duration deadline = absl::Seconds(10);
  // Channel credentials. Default (null): insecure.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

class Client {
 public:
  // Makes the channel (it connects lazily, on the first call).
  // INVALID_ARGUMENT if options.target is empty.
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);

  // JobQueue.
  absl::StatusOr<v1::EnqueueResponse> Enqueue(const v1::EnqueueRequest& r);
  absl::StatusOr<v1::EnqueueBatchResponse> EnqueueBatch(
      const v1::EnqueueBatchRequest& r);
  absl::StatusOr<v1::DequeueResponse> Dequeue(const v1::DequeueRequest& r);
  absl::StatusOr<v1::AckResponse> Ack(const v1::AckRequest& r);
  absl::StatusOr<v1::NackResponse> Nack(const v1::NackRequest& r);
  absl::StatusOr<v1::ExtendLeaseResponse> ExtendLease(
      const v1::ExtendLeaseRequest& r);
  absl::StatusOr<v1::Job> GetJob(const v1::GetJobRequest& r);
  absl::StatusOr<v1::Job> CancelJob(const v1::CancelJobRequest& r);
  absl::StatusOr<v1::Job> RequeueJob(const v1::RequeueJobRequest& r);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& r);

  // Scheduler.
  absl::StatusOr<v1::Cron> RegisterCron(const v1::RegisterCronRequest& r);
  absl::StatusOr<v1::UnregisterCronResponse> UnregisterCron(
      const v1::UnregisterCronRequest& r);
  absl::StatusOr<v1::Cron> GetCron(const v1::GetCronRequest& r);
  absl::StatusOr<v1::ListCronsResponse> ListCrons(
      const v1::ListCronsRequest& r);
  absl::StatusOr<v1::PreviewCronResponse> PreviewCron(
      const v1::PreviewCronRequest& r);
  absl::StatusOr<v1::Leadership> SetLeadership(
      const v1::SetLeadershipRequest& r);
  absl::StatusOr<v1::Leadership> GetLeadership(
      const v1::GetLeadershipRequest& r);

 private:
  Client(std::shared_ptr<grpc::Channel> channel, absl::Duration deadline);

  // Runs one unary call with `deadline_ + extra` and converts its status.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(
      Stub* stub,
      grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                   Response*),
      const Request& request, absl::Duration extra = absl::ZeroDuration());

  const absl::Duration deadline_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobQueue::Stub> queue_;
  std::unique_ptr<v1::Scheduler::Stub> scheduler_;
};

}  // namespace adjutant

#endif  // ADJUTANT_CLIENT_CLIENT_H_
