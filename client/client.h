// adjutant::Client: a synchronous C++ client for adjutantd, one method per
// RPC of adjutant.v1.JobQueue and adjutant.v1.Scheduler.
//
// Every method returns the RPC's response or its status as an absl::Status
// (the codes are gRPC's). Each call gets the client's deadline, or the one in
// its CallOptions; Dequeue's deadline is extended by its `wait`.
//
// Thread-safe: one Client may be shared by any number of threads.
#ifndef ADJUTANT_CLIENT_CLIENT_H_
#define ADJUTANT_CLIENT_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "adjutant/v1/job_queue.grpc.pb.h"
#include "adjutant/v1/scheduler.grpc.pb.h"

namespace adjutant {

struct ClientOptions {
  // HOST:PORT of adjutantd. Required.
  std::string target;
  // Deadline of each call. Default: 10 s.
  absl::Duration deadline = absl::Seconds(10);
  // Channel credentials. Default (null): insecure, unless a tls_* option
  // below is set. Set both this and a tls_* option: INVALID_ARGUMENT.
  std::shared_ptr<grpc::ChannelCredentials> credentials;

  // Access control (adjutantd --auth-tokens, --tls-*).
  // Sent as "authorization: Bearer TOKEN" metadata on every call. Printable
  // ASCII without spaces; never logged. Default "": no token.
  std::string token;
  // Use TLS. Implied by any tls_* option below; alone, the server's
  // certificate is checked against gRPC's default roots. Default false.
  bool tls = false;
  // PEM CA certificate(s) the server's certificate must chain to. Default
  // "": gRPC's default roots.
  std::string tls_ca_file;
  // PEM client certificate and its private key, for a server that requires
  // one (--tls-client-ca). Both or neither. Default "": none.
  std::string tls_cert_file;
  std::string tls_key_file;
  // The name the server's certificate must carry, when it differs from the
  // target's host. Default "": the target's host.
  std::string tls_server_name;
};

// Ends a call in progress from another thread (a long-polling Dequeue that
// a worker's Stop() must not wait out). Thread-safe. Serves one call at a
// time: give each concurrent call its own canceller.
class CallCanceller {
 public:
  CallCanceller() = default;
  CallCanceller(const CallCanceller&) = delete;
  CallCanceller& operator=(const CallCanceller&) = delete;

  // Ends the call in progress, if any, with CANCELLED, and makes every later
  // call given this canceller fail with CANCELLED at once, until Reset().
  void Cancel();
  // Lets calls given this canceller run again.
  void Reset();
  bool cancelled() const;

 private:
  friend class Client;
  // Attaches the call's context; false (nothing attached) if cancelled.
  bool Attach(grpc::ClientContext* context);
  void Detach();

  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// Per-call settings; the defaults are the client's.
struct CallOptions {
  // This call's deadline instead of ClientOptions::deadline (Dequeue still
  // adds its `wait`). Default: unset, the client's.
  std::optional<absl::Duration> deadline;
  // If set, canceller->Cancel() ends the call with CANCELLED. Not owned;
  // must outlive the call. Default: null, the call cannot be cancelled.
  CallCanceller* canceller = nullptr;
};

// One Work stream (JobQueue.Work): the server pushes leased jobs (up to the
// start's capacity unsettled), the worker settles them with Ack and Nack,
// each answered by a `settled` message. Made by Client::Work.
//
// Thread-safety: Read() is for one thread at a time (the reader); Ack(),
// Nack() and Close() may be called from any threads, also while Read()
// blocks (writes are serialized inside); Cancel() from any thread at any
// time. Finish() once, after Read() returned false. Destroying the stream
// before Read() returned false cancels it.
class WorkStream {
 public:
  ~WorkStream();
  WorkStream(const WorkStream&) = delete;
  WorkStream& operator=(const WorkStream&) = delete;

  // Blocks for the next message (a job, or a settlement's result). False
  // when the stream has ended: then Finish() tells why.
  bool Read(v1::WorkResponse* response);
  // Sends an ack (or nack) for a job this stream pushed; its result comes
  // back through Read() as `settled`. FAILED_PRECONDITION after Close();
  // UNAVAILABLE if the stream is broken (Read() then returns false).
  absl::Status Ack(const v1::AckRequest& ack);
  absl::Status Nack(const v1::NackRequest& nack);
  // Half-closes: the server leases nothing more, answers the settlements
  // already sent, sends what it has queued and ends the stream (OK).
  // Idempotent.
  void Close();
  // Ends the stream now, with CANCELLED. The jobs it pushed stay leased
  // until their leases expire.
  void Cancel();
  // The stream's final status. REQUIRES: Read() returned false; called once.
  absl::Status Finish();

 private:
  friend class Client;
  WorkStream() = default;
  absl::Status Write(const v1::WorkRequest& request);

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkRequest, v1::WorkResponse>>
      stream_;
  absl::Mutex write_mu_;
  bool closed_ ABSL_GUARDED_BY(write_mu_) = false;
  bool broken_ ABSL_GUARDED_BY(write_mu_) = false;
  // Set by the reader when Read() returned false.
  std::atomic<bool> ended_{false};
  bool finished_ = false;  // the reader's
};

class Client {
 public:
  // Makes the channel (it connects lazily, on the first call).
  // INVALID_ARGUMENT naming the option if options.target is empty, a tls_*
  // file cannot be read, only one of tls_cert_file and tls_key_file is
  // set, or the token has a character it cannot carry.
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);

  // JobQueue.
  absl::StatusOr<v1::EnqueueResponse> Enqueue(const v1::EnqueueRequest& r,
                                              const CallOptions& options = {});
  absl::StatusOr<v1::EnqueueBatchResponse> EnqueueBatch(
      const v1::EnqueueBatchRequest& r, const CallOptions& options = {});
  absl::StatusOr<v1::DequeueResponse> Dequeue(const v1::DequeueRequest& r,
                                              const CallOptions& options = {});
  absl::StatusOr<v1::AckResponse> Ack(const v1::AckRequest& r,
                                      const CallOptions& options = {});
  absl::StatusOr<v1::NackResponse> Nack(const v1::NackRequest& r,
                                        const CallOptions& options = {});
  absl::StatusOr<v1::AckBatchResponse> AckBatch(
      const v1::AckBatchRequest& r, const CallOptions& options = {});
  // Opens a Work stream and sends `start`. The stream has no deadline
  // unless options.deadline is set (it then bounds the whole stream);
  // options.canceller is not used (WorkStream::Cancel). A server that
  // refuses the stream (UNIMPLEMENTED for an older daemon, INVALID_ARGUMENT
  // for a bad start, UNAUTHENTICATED...) says so through the first Read()
  // returning false and Finish().
  absl::StatusOr<std::unique_ptr<WorkStream>> Work(
      const v1::WorkStart& start, const CallOptions& options = {});
  absl::StatusOr<v1::ExtendLeaseResponse> ExtendLease(
      const v1::ExtendLeaseRequest& r, const CallOptions& options = {});
  absl::StatusOr<v1::Job> GetJob(const v1::GetJobRequest& r,
                                 const CallOptions& options = {});
  absl::StatusOr<v1::Job> CancelJob(const v1::CancelJobRequest& r,
                                    const CallOptions& options = {});
  absl::StatusOr<v1::Job> RequeueJob(const v1::RequeueJobRequest& r,
                                     const CallOptions& options = {});
  absl::StatusOr<v1::ListJobsResponse> ListJobs(
      const v1::ListJobsRequest& r, const CallOptions& options = {});
  absl::StatusOr<v1::GetStatsResponse> GetStats(
      const v1::GetStatsRequest& r, const CallOptions& options = {});

  // Scheduler.
  absl::StatusOr<v1::Cron> RegisterCron(const v1::RegisterCronRequest& r,
                                        const CallOptions& options = {});
  absl::StatusOr<v1::UnregisterCronResponse> UnregisterCron(
      const v1::UnregisterCronRequest& r, const CallOptions& options = {});
  absl::StatusOr<v1::Cron> GetCron(const v1::GetCronRequest& r,
                                   const CallOptions& options = {});
  absl::StatusOr<v1::ListCronsResponse> ListCrons(
      const v1::ListCronsRequest& r, const CallOptions& options = {});
  absl::StatusOr<v1::PreviewCronResponse> PreviewCron(
      const v1::PreviewCronRequest& r, const CallOptions& options = {});
  absl::StatusOr<v1::Leadership> SetLeadership(
      const v1::SetLeadershipRequest& r, const CallOptions& options = {});
  absl::StatusOr<v1::Leadership> GetLeadership(
      const v1::GetLeadershipRequest& r, const CallOptions& options = {});

 private:
  Client(std::shared_ptr<grpc::Channel> channel, absl::Duration deadline,
         std::string authorization);

  // Runs one unary call with its deadline (options', else deadline_) plus
  // `extra`, and converts its status.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(
      Stub* stub,
      grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                   Response*),
      const Request& request, const CallOptions& options,
      absl::Duration extra = absl::ZeroDuration());

  const absl::Duration deadline_;
  // "Bearer TOKEN", sent with every call; "" for none.
  const std::string authorization_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobQueue::Stub> queue_;
  std::unique_ptr<v1::Scheduler::Stub> scheduler_;
};

}  // namespace adjutant

#endif  // ADJUTANT_CLIENT_CLIENT_H_
