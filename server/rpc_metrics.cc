#include "server/rpc_metrics.h"

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/grpc_handoff.h"

namespace adjutant {
namespace {

using grpc::experimental::InterceptionHookPoints;

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(ServerMetrics* metrics, Clock* clock,
                        std::string method)
      : metrics_(metrics),
        clock_(clock),
        method_(std::move(method)),
        started_(clock->Monotonic()) {
    HandCallToGrpc(this);
  }

  // gRPC creates, runs and destroys a call's interceptor on whichever thread
  // the call is on at the time (server/grpc_handoff.h).
  ~RpcMetricsInterceptor() override {
    TakeCallFromGrpc(this);
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    TakeCallFromGrpc(this);
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    HandCallToGrpc(this);
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    metrics_->RpcFinished(method_, StatusCodeName(code),
                          clock_->Monotonic() - started_);
  }

  ServerMetrics* const metrics_;
  Clock* const clock_;
  const std::string method_;
  const absl::Duration started_;
  // gRPC runs one call's interceptions one at a time.
  bool recorded_ = false;
};

}  // namespace

std::string StatusCodeName(grpc::StatusCode code) {
  // gRPC's and abseil's canonical codes share their numbers.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

grpc::experimental::Interceptor*
RpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  // "/adjutant.v1.JobQueue/Enqueue" -> "adjutant.v1.JobQueue/Enqueue".
  absl::string_view method = info->method() == nullptr ? "" : info->method();
  if (!method.empty() && method.front() == '/') method.remove_prefix(1);
  return new RpcMetricsInterceptor(metrics_, clock_, std::string(method));
}

}  // namespace adjutant
