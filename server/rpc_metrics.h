// Counts every RPC and times it, by method and status code, in one place: a
// gRPC server interceptor (it sees calls of every service, the callback API
// included, and calls rejected before any handler code ran a store call).
#ifndef ADJUTANT_SERVER_RPC_METRICS_H_
#define ADJUTANT_SERVER_RPC_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include <string>

#include "absl/container/flat_hash_map.h"
#include "scheduler/clock.h"
#include "server/server_metrics.h"

namespace adjutant {

// Thread-safe (gRPC calls it from many threads). Records into
// ServerMetrics::RpcFinished when a call sends its status; a call that ends
// without sending one (the client went away first) counts as CANCELLED. The
// latency is monotonic: from the call's arrival (when gRPC creates its
// interceptors) to its status. `metrics` and `clock` must outlive the
// grpc::Server. The instruments of every method of the services this
// daemon serves (and of gRPC health) are resolved when the factory is made,
// into a map that is read-only afterwards: a call's accounting takes no
// shared mutex but its histogram child's. A call to another method (gRPC
// reflection) resolves its method under ServerMetrics' mutex.
class RpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  RpcMetricsInterceptorFactory(ServerMetrics* metrics, Clock* clock);

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  ServerMetrics* const metrics_;
  Clock* const clock_;
  // By gRPC's method path ("/adjutant.v1.JobQueue/Enqueue"). Read-only
  // after construction.
  absl::flat_hash_map<std::string, ServerMetrics::RpcMethod*> known_;
};

// "INVALID_ARGUMENT" for grpc::StatusCode::INVALID_ARGUMENT, and so on.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_RPC_METRICS_H_
