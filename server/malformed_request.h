// A request gRPC could not parse (a proto3 `string` field holding bytes that
// are not UTF-8, or bytes that are not the message at all) never reaches a
// handler: gRPC 1.51's callback API answers it UNIMPLEMENTED with an empty
// message, as if the RPC did not exist. This interceptor turns that answer
// into INVALID_ARGUMENT naming the request type, so that the client learns
// what is wrong with its request (docs/ERRORS.md).
#ifndef ADJUTANT_SERVER_MALFORMED_REQUEST_H_
#define ADJUTANT_SERVER_MALFORMED_REQUEST_H_

#include <grpcpp/support/server_interceptor.h>

#include <string>

namespace adjutant {

// The status a call whose request could not be parsed gets: INVALID_ARGUMENT
// "request: not a valid <request type> (...)". `method` is gRPC's
// "/package.Service/Method".
grpc::Status MalformedRequestStatus(const std::string& method);

// Thread-safe (gRPC calls it from many threads). Rewrites the status of a
// unary or server-streaming call whose request gRPC failed to parse, and
// only that one: the UNIMPLEMENTED of an RPC the server does not implement
// passes unchanged.
class MalformedRequestInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_MALFORMED_REQUEST_H_
