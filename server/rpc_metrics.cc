#include "server/rpc_metrics.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "server/grpc_handoff.h"

namespace adjutant {
namespace {

using grpc::experimental::InterceptionHookPoints;

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(ServerMetrics::RpcMethod* method, Clock* clock)
      : method_(method), clock_(clock), started_(clock->Monotonic()) {
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
    method_->Finished(static_cast<int>(code), clock_->Monotonic() - started_);
  }

  ServerMetrics::RpcMethod* const method_;
  Clock* const clock_;
  const absl::Duration started_;
  // gRPC runs one call's interceptions one at a time.
  bool recorded_ = false;
};

}  // namespace

std::string StatusCodeName(grpc::StatusCode code) {
  // gRPC's and abseil's canonical codes share their numbers.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

RpcMetricsInterceptorFactory::RpcMetricsInterceptorFactory(
    ServerMetrics* metrics, Clock* clock)
    : metrics_(metrics), clock_(clock) {
  const google::protobuf::DescriptorPool* pool =
      google::protobuf::DescriptorPool::generated_pool();
  for (const char* name : {"adjutant.v1.JobQueue", "adjutant.v1.Scheduler",
                           "grpc.health.v1.Health"}) {
    const google::protobuf::ServiceDescriptor* service =
        pool->FindServiceByName(name);
    if (service == nullptr) continue;  // not linked in
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string method =
          absl::StrCat(service->full_name(), "/", service->method(i)->name());
      known_.emplace(absl::StrCat("/", method),
                     metrics_->ResolveRpcMethod(method));
    }
  }
}

grpc::experimental::Interceptor*
RpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  absl::string_view path = info->method() == nullptr ? "" : info->method();
  auto it = known_.find(path);
  if (it != known_.end()) return new RpcMetricsInterceptor(it->second, clock_);
  // "/adjutant.v1.JobQueue/Enqueue" -> "adjutant.v1.JobQueue/Enqueue".
  absl::string_view method = path;
  if (!method.empty() && method.front() == '/') method.remove_prefix(1);
  return new RpcMetricsInterceptor(
      metrics_->ResolveRpcMethod(std::string(method)), clock_);
}

}  // namespace adjutant
