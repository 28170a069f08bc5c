// Cron expressions: parsing and "when is the next tick".
//
// Syntax (see README "Schedules"): 5 fields (minute hour day-of-month month
// day-of-week) or 6 (a leading seconds field); `*`, `?` (as `*`), lists,
// ranges, steps (`*/5`, `10-40/10`, `5/15`), month and weekday names
// (case-insensitive), weekday 0-7 (0 and 7 are Sunday); when both day fields
// are restricted (anything but a lone `*` or `?`) a day matches if either
// matches (the Vixie rule), otherwise if both do; the macros @yearly
// @annually @monthly @weekly @daily @midnight @hourly; `@every <duration>`
// (e.g. `@every 90s`, `@every 1h30m`; h, m, s, ms; at least 1s), ticking at
// anchor + k * duration for every integer k; and the Quartz extensions `L`
// (day-of-month: last day; `L-3`: third to last; day-of-week `5L`: last
// Friday), `W` (`15W`: the weekday nearest the 15th, within the month; `LW`),
// and `#` (`1#2`: the second Monday).
//
// Time zones come from absl::TimeZone (the system zoneinfo). Daylight
// saving, one rule:
//  * A schedule whose hour field is a single fixed value or list (not `*`
//    and not a step or range) names wall-clock times. A local time skipped
//    by a spring-forward gap fires once, at the first instant after the gap;
//    a local time that occurs twice in a fall-back fires once, at its first
//    occurrence.
//  * A schedule whose hour field is `*`, a step or a range fires at every
//    real instant whose local time matches, and skips local times that do
//    not exist.
//  * `@every` ignores zones: it counts real elapsed time.
#ifndef ADJUTANT_SCHEDULER_CRON_EXPRESSION_H_
#define ADJUTANT_SCHEDULER_CRON_EXPRESSION_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace adjutant {

// An immutable parsed expression bound to a time zone. Cheap to copy;
// thread-safe.
class CronExpression {
 public:
  // Parses `expression` read in `timezone` (an IANA name; empty means
  // "UTC"). `anchor` is the instant @every counts from (a schedule's
  // creation); other expressions ignore it. INVALID_ARGUMENT on a bad
  // expression, naming the field and why ("schedule: day-of-month field
  // '32': value 32 out of range 1-31"), or on an unknown zone ("timezone:
  // unknown time zone 'Mars/Olympus'").
  static absl::StatusOr<CronExpression> Parse(absl::string_view expression,
                                              absl::string_view timezone,
                                              absl::Time anchor);

  // The first tick strictly after `after`; absl::InfiniteFuture() if there
  // is none (e.g. "0 0 30 2 *" never comes). Calendar ticks are whole
  // seconds; @every ticks are anchor + k * interval. Bounded time for every
  // expression: it searches at most 400 years ahead (one Gregorian cycle, so
  // rare dates such as Feb 29 or "the fifth Monday of February" are found),
  // jumping a field at a time; a simple expression takes about a
  // microsecond. `after` is clamped to the years 1-9999.
  absl::Time Next(absl::Time after) const;

  // Whether the hour field names fixed wall-clock hours (see the DST rule).
  bool HasFixedHours() const;

  const std::string& expression() const;
  const std::string& timezone() const;

 private:
  struct Impl;
  explicit CronExpression(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

}  // namespace adjutant

#endif  // ADJUTANT_SCHEDULER_CRON_EXPRESSION_H_
