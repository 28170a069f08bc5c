// Conversions at the RPC boundary: absl::Status to grpc::Status, and
// absl::Time / absl::Duration to and from the protobuf well-known types.
#ifndef ADJUTANT_SERVER_CONVERT_H_
#define ADJUTANT_SERVER_CONVERT_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace adjutant {

// The codes are the same numbers; the message is kept.
grpc::Status ToGrpcStatus(const absl::Status& status);

// UNAVAILABLE "server shutting down; ...": what a call refused, or a
// long-poll ended, by a server that is stopping gets, so that the client
// retries (on another server, or on this one once it is back).
absl::Status ShuttingDownError();

// Sets `out` to `t`; InfinitePast / InfiniteFuture clear it (unset).
void ToProto(absl::Time t, google::protobuf::Timestamp* out);
void ToProto(absl::Duration d, google::protobuf::Duration* out);

// Reads a Timestamp. INVALID_ARGUMENT, naming `field`, if out of the range
// protobuf allows (years 1 to 9999) or nanos are not in [0, 1e9).
absl::StatusOr<absl::Time> FromProto(const google::protobuf::Timestamp& ts,
                                     absl::string_view field);

// Reads a Duration. INVALID_ARGUMENT, naming `field`, if seconds and nanos
// disagree in sign, nanos are out of range, or it is outside [min, max].
absl::StatusOr<absl::Duration> FromProto(const google::protobuf::Duration& d,
                                         absl::string_view field,
                                         absl::Duration min,
                                         absl::Duration max);

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_CONVERT_H_
