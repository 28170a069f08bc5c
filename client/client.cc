#include "client/client.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace adjutant {

namespace {

absl::StatusOr<std::string> ReadFile(absl::string_view option,
                                     const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        option, ": cannot read '", path, "': ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("target: required (HOST:PORT)");
  }
  for (char c : options.token) {
    if (c <= ' ' || c >= 0x7f) {
      // Never echo the token.
      return absl::InvalidArgumentError(
          "token: has a character outside printable ASCII or a space");
    }
  }
  const bool tls = options.tls || !options.tls_ca_file.empty() ||
                   !options.tls_cert_file.empty() ||
                   !options.tls_key_file.empty() ||
                   !options.tls_server_name.empty();
  std::shared_ptr<grpc::ChannelCredentials> credentials = options.credentials;
  grpc::ChannelArguments arguments;
  if (tls) {
    if (credentials != nullptr) {
      return absl::InvalidArgumentError(
          "credentials: set together with TLS options; give one or the "
          "other");
    }
    if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
      return absl::InvalidArgumentError(
          options.tls_cert_file.empty()
              ? "tls_key_file: given without tls_cert_file (both or neither)"
              : "tls_cert_file: given without tls_key_file (both or "
                "neither)");
    }
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      absl::StatusOr<std::string> ca =
          ReadFile("tls_ca_file", options.tls_ca_file);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *std::move(ca);
    }
    if (!options.tls_cert_file.empty()) {
      absl::StatusOr<std::string> cert =
          ReadFile("tls_cert_file", options.tls_cert_file);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key =
          ReadFile("tls_key_file", options.tls_key_file);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *std::move(cert);
      ssl.pem_private_key = *std::move(key);
    }
    if (!options.tls_server_name.empty()) {
      arguments.SetSslTargetNameOverride(options.tls_server_name);
    }
    credentials = grpc::SslCredentials(ssl);
  } else if (credentials == nullptr) {
    credentials = grpc::InsecureChannelCredentials();
  }
  std::string authorization =
      options.token.empty() ? "" : absl::StrCat("Bearer ", options.token);
  return std::unique_ptr<Client>(new Client(
      grpc::CreateCustomChannel(options.target, credentials, arguments),
      options.deadline, std::move(authorization)));
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

Client::Client(std::shared_ptr<grpc::Channel> channel, absl::Duration deadline,
               std::string authorization)
    : deadline_(deadline),
      authorization_(std::move(authorization)),
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
  if (!authorization_.empty()) {
    context.AddMetadata("authorization", authorization_);
  }
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
absl::StatusOr<v1::AckBatchResponse> Client::AckBatch(
    const v1::AckBatchRequest& r, const CallOptions& options) {
  return Call(queue_.get(), &v1::JobQueue::Stub::AckBatch, r, options);
}

absl::StatusOr<std::unique_ptr<WorkStream>> Client::Work(
    const v1::WorkStart& start, const CallOptions& options) {
  std::unique_ptr<WorkStream> stream(new WorkStream());
  if (options.deadline.has_value()) {
    stream->context_.set_deadline(
        absl::ToChronoTime(absl::Now() + *options.deadline));
  }
  if (!authorization_.empty()) {
    stream->context_.AddMetadata("authorization", authorization_);
  }
  stream->stream_ = queue_->Work(&stream->context_);
  v1::WorkRequest request;
  *request.mutable_start() = start;
  // A failed write shows as Read() returning false.
  stream->Write(request).IgnoreError();
  return stream;
}

WorkStream::~WorkStream() {
  if (stream_ != nullptr && !finished_) {
    context_.TryCancel();
    v1::WorkResponse ignored;
    while (!ended_.load() && stream_->Read(&ignored)) {
    }
    stream_->Finish().IgnoreError();
  }
}

bool WorkStream::Read(v1::WorkResponse* response) {
  if (ended_.load()) return false;
  if (stream_->Read(response)) return true;
  ended_.store(true);
  return false;
}

absl::Status WorkStream::Write(const v1::WorkRequest& request) {
  absl::MutexLock lock(&write_mu_);
  if (closed_) {
    return absl::FailedPreconditionError("Work stream: closed for writing");
  }
  if (broken_ || !stream_->Write(request)) {
    broken_ = true;
    return absl::UnavailableError("Work stream: broken");
  }
  return absl::OkStatus();
}

absl::Status WorkStream::Ack(const v1::AckRequest& ack) {
  v1::WorkRequest request;
  *request.mutable_ack() = ack;
  return Write(request);
}

absl::Status WorkStream::Nack(const v1::NackRequest& nack) {
  v1::WorkRequest request;
  *request.mutable_nack() = nack;
  return Write(request);
}

void WorkStream::Close() {
  absl::MutexLock lock(&write_mu_);
  if (closed_) return;
  closed_ = true;
  if (!broken_) stream_->WritesDone();
}

void WorkStream::Cancel() { context_.TryCancel(); }

absl::Status WorkStream::Finish() {
  finished_ = true;
  grpc::Status status = stream_->Finish();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
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
