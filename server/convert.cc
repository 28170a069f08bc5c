#include "server/convert.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace adjutant {
namespace {

// google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31.
constexpr int64_t kMinTimestampSeconds = -62135596800;
constexpr int64_t kMaxTimestampSeconds = 253402300799;

}  // namespace

absl::Status ShuttingDownError() {
  return absl::UnavailableError(
      "server shutting down; retry (on another server, or on this one once "
      "it is back)");
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) {
    out->Clear();
    return;
  }
  const int64_t seconds = absl::ToUnixSeconds(t);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(
      absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(seconds))));
}

void ToProto(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

absl::StatusOr<absl::Time> FromProto(const google::protobuf::Timestamp& ts,
                                     absl::string_view field) {
  if (ts.seconds() < kMinTimestampSeconds ||
      ts.seconds() > kMaxTimestampSeconds) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": timestamp out of range (years 1 to 9999)"));
  }
  if (ts.nanos() < 0 || ts.nanos() >= 1000000000) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": nanos must be in [0, 999999999]"));
  }
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

absl::StatusOr<absl::Duration> FromProto(const google::protobuf::Duration& d,
                                         absl::string_view field,
                                         absl::Duration min,
                                         absl::Duration max) {
  if (d.nanos() <= -1000000000 || d.nanos() >= 1000000000 ||
      (d.seconds() > 0 && d.nanos() < 0) ||
      (d.seconds() < 0 && d.nanos() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field,
                     ": malformed duration (seconds and nanos must "
                     "share a sign, |nanos| < 1e9)"));
  }
  // Clamp before converting so that absurd values cannot overflow.
  if (d.seconds() > absl::ToInt64Seconds(max) + 1 ||
      d.seconds() < absl::ToInt64Seconds(min) - 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be between ", absl::FormatDuration(min),
                     " and ", absl::FormatDuration(max)));
  }
  absl::Duration out =
      absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  if (out < min || out > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be between ", absl::FormatDuration(min),
                     " and ", absl::FormatDuration(max)));
  }
  return out;
}

}  // namespace adjutant
