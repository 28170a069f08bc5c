#include "storage/job.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace adjutant {

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kUnspecified:
      return "UNSPECIFIED";
    case JobState::kPending:
      return "PENDING";
    case JobState::kLeased:
      return "LEASED";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kDead:
      return "DEAD";
    case JobState::kCancelled:
      return "CANCELLED";
  }
  return "UNKNOWN";
}

absl::Duration BackoffPolicy::Delay(int attempts, double u) const {
  // Doubling past 2^40 overflows nothing but means nothing either: cap the
  // exponent, then the delay.
  int exponent = std::clamp(attempts - 1, 0, 40);
  absl::Duration delay = std::min(max_delay, base * std::ldexp(1.0, exponent));
  double factor = 1.0 - jitter + 2.0 * jitter * std::clamp(u, 0.0, 1.0);
  return delay * factor;
}

namespace {
constexpr char kQueueFullPayload[] = "adjutant.dev/queue-full";
}  // namespace

absl::Status QueueFullError(const std::string& queue, int64_t pending,
                            int64_t added, int64_t limit) {
  absl::Status status = absl::ResourceExhaustedError(absl::StrCat(
      "queue \"", queue, "\" holds ", pending, " pending jobs; ", added,
      " more would pass the limit of ", limit, " (--max-pending-per-queue)"));
  status.SetPayload(kQueueFullPayload, absl::Cord(queue));
  return status;
}

bool IsQueueFullError(const absl::Status& status) {
  return status.code() == absl::StatusCode::kResourceExhausted &&
         status.GetPayload(kQueueFullPayload).has_value();
}

bool JobTemplate::operator==(const JobTemplate& o) const {
  return queue == o.queue && type == o.type && payload == o.payload &&
         priority == o.priority && max_attempts == o.max_attempts;
}

bool CronDefinition::operator==(const CronDefinition& o) const {
  return name == o.name && schedule == o.schedule && timezone == o.timezone &&
         job == o.job && misfire_policy == o.misfire_policy &&
         catchup_window == o.catchup_window &&
         overlap_policy == o.overlap_policy && paused == o.paused;
}

}  // namespace adjutant
