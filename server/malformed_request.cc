#include "server/malformed_request.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "server/grpc_handoff.h"

namespace adjutant {
namespace {

using grpc::experimental::InterceptionHookPoints;

class MalformedRequestInterceptor final
    : public grpc::experimental::Interceptor {
 public:
  explicit MalformedRequestInterceptor(std::string method)
      : method_(std::move(method)) {
    HandCallToGrpc(this);
  }

  // gRPC creates, runs and destroys a call's interceptor on whichever thread
  // the call is on at the time (server/grpc_handoff.h).
  ~MalformedRequestInterceptor() override { TakeCallFromGrpc(this); }

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    TakeCallFromGrpc(this);
    // gRPC parses the request before this hook; a null message is a parse
    // that failed.
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() == nullptr) {
      unparsed_ = true;
    }
    if (unparsed_ && methods->QueryInterceptionHookPoint(
                         InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        methods->ModifySendStatus(MalformedRequestStatus(method_));
      }
    }
    HandCallToGrpc(this);
    methods->Proceed();
  }

 private:
  const std::string method_;
  // gRPC runs one call's interceptions one at a time.
  bool unparsed_ = false;
};

}  // namespace

grpc::Status MalformedRequestStatus(const std::string& method) {
  // "/adjutant.v1.JobQueue/Enqueue" -> "adjutant.v1.JobQueue.Enqueue".
  absl::string_view name = method;
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  const google::protobuf::MethodDescriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
          absl::StrReplaceAll(name, {{"/", "."}}));
  const std::string type = descriptor != nullptr
                               ? descriptor->input_type()->full_name()
                               : std::string("request message");
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat("request: not a valid ", type,
                   " (every string field must be valid UTF-8; bytes fields "
                   "take anything)"));
}

grpc::experimental::Interceptor*
MalformedRequestInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  // Client-streaming and bidi calls read their messages in the handler,
  // which sees a failed read itself.
  if (info->type() != grpc::experimental::ServerRpcInfo::Type::UNARY &&
      info->type() !=
          grpc::experimental::ServerRpcInfo::Type::SERVER_STREAMING) {
    return nullptr;
  }
  return new MalformedRequestInterceptor(
      info->method() == nullptr ? "" : info->method());
}

}  // namespace adjutant
