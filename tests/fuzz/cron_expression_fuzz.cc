// libFuzzer target: CronExpression::Parse and Next(), with the time-zone and
// daylight-saving computation (scheduler/ has no other zone code).
//
// Input: byte 0 picks the zone (kZones, or, past them, a zone name read
// from the input up to the first '\n'); byte 1 picks where the search
// starts (see StartFrom); bytes 2-5 are a little-endian offset; the rest is
// the expression. tests/fuzz/make_corpus.py writes seeds in this form.
//
// Invariants checked (a failure aborts, which libFuzzer reports as a crash):
//  * Parse() accepts, or fails with INVALID_ARGUMENT naming "schedule:" or
//    "timezone:";
//  * an accepted expression keeps its text and zone;
//  * Next(t) is InfiniteFuture or a later instant, no later than
//    9999-12-31T23:59:59Z; calendar ticks are whole seconds; successive
//    @every ticks are one interval apart;
//  * Next() skips no tick: from any instant between t and Next(t) the next
//    tick is still Next(t);
//  * successive ticks strictly increase (follows from the above).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "scheduler/cron_expression.h"

namespace adjutant {
namespace {

// Zones with every kind of offset change: none (UTC), the usual one-hour
// DST (northern and southern hemisphere), half-hour DST (Lord_Howe), a
// 45-minute offset (Chatham), DST at midnight (Santiago, Havana), a zone
// that changed its standard offset (Pyongyang) and one that skipped a whole
// day (Apia, 2011-12-30).
constexpr const char* kZones[] = {
    "UTC",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "America/Havana",
    "Asia/Pyongyang",
    "Pacific/Apia",
    "Asia/Kolkata",
};
constexpr size_t kNumZones = sizeof(kZones) / sizeof(kZones[0]);

constexpr absl::Time kMinTime = absl::FromUnixSeconds(-62135596800);  // 0001
constexpr absl::Time kMaxTime = absl::FromUnixSeconds(253402300799);  // 9999

// How many successive ticks to follow from the start.
constexpr int kTicks = 4;

[[noreturn]] void Fail(const std::string& what, absl::string_view expression,
                       absl::string_view zone) {
  std::fprintf(
      stderr, "cron_expression_fuzz: %s\n  expression: '%s'\n  zone: '%s'\n",
      what.c_str(), std::string(expression).c_str(), std::string(zone).c_str());
  std::abort();
}

std::string Show(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
}

// Where Next() starts: around 2000-2136 (mode 0, 1), near the top of the
// range (2), near its bottom (3), or outside it (4).
absl::Time StartFrom(uint8_t mode, uint32_t offset) {
  switch (mode % 5) {
    case 0:
    case 1:
      return absl::FromUnixSeconds(946684800 + int64_t{offset});
    case 2:
      return kMaxTime - absl::Seconds(offset);
    case 3:
      return kMinTime + absl::Seconds(offset);
    default:
      return offset % 2 == 0 ? absl::InfinitePast()
                             : kMaxTime + absl::Seconds(offset);
  }
}

void CheckExpression(const CronExpression& cron, absl::string_view expression,
                     absl::string_view zone, absl::Time start) {
  const bool every = absl::StartsWithIgnoreCase(
      absl::StripLeadingAsciiWhitespace(expression), "@every");
  absl::Time t = start;
  absl::Duration interval = absl::ZeroDuration();  // @every: the last gap
  for (int i = 0; i < kTicks; ++i) {
    const absl::Time next = cron.Next(t);
    if (next == absl::InfiniteFuture()) return;
    if (next <= t) {
      Fail("Next(" + Show(t) + ") = " + Show(next) + " is not later",
           expression, zone);
    }
    if (next > kMaxTime) {
      Fail("Next(" + Show(t) + ") = " + Show(next) + " is past year 9999",
           expression, zone);
    }
    if (!every && absl::Trunc(next - absl::UnixEpoch(), absl::Seconds(1)) !=
                      next - absl::UnixEpoch()) {
      Fail("calendar tick " + Show(next) + " is not a whole second", expression,
           zone);
    }
    // No tick in (t, next): the next tick after a point inside is `next`.
    // t may be InfinitePast; Next() starts at year 1 then.
    const absl::Time from = t < kMinTime ? kMinTime : t;
    const absl::Time mid = from + (next - from) / 2;
    if (mid > from && mid < next && cron.Next(mid) != next) {
      Fail("Next(" + Show(t) + ") = " + Show(next) + " but Next(" + Show(mid) +
               ") = " + Show(cron.Next(mid)),
           expression, zone);
    }
    if (next - absl::Seconds(1) > from &&
        cron.Next(next - absl::Seconds(1)) != next) {
      Fail("Next(" + Show(t) + ") = " + Show(next) +
               " but one second before it, " +
               Show(cron.Next(next - absl::Seconds(1))),
           expression, zone);
    }
    if (every && i >= 1 && t > start) {
      if (interval != absl::ZeroDuration() && next - t != interval) {
        Fail("@every ticks " + Show(t) + " and " + Show(next) +
                 " are not one interval apart",
             expression, zone);
      }
      interval = next - t;
    }
    t = next;
  }
}

}  // namespace
}  // namespace adjutant

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace adjutant;  // NOLINT(build/namespaces)
  if (size < 6) return 0;
  const uint8_t zone_byte = data[0];
  const uint8_t mode = data[1];
  const uint32_t offset = uint32_t{data[2]} | uint32_t{data[3]} << 8 |
                          uint32_t{data[4]} << 16 | uint32_t{data[5]} << 24;
  absl::string_view rest(reinterpret_cast<const char*>(data) + 6, size - 6);
  std::string zone;
  if (zone_byte < kNumZones * 16) {
    zone = kZones[zone_byte % kNumZones];
  } else {
    const size_t newline = rest.find('\n');
    if (newline == absl::string_view::npos) return 0;
    zone = std::string(rest.substr(0, newline));
    rest.remove_prefix(newline + 1);
  }
  const absl::Time start = StartFrom(mode, offset);
  // The @every anchor: a whole second near the start (as a creation time
  // is), or the start itself.
  const absl::Time anchor =
      mode & 0x80 ? start : absl::FromUnixSeconds(1700000000);

  absl::StatusOr<CronExpression> cron =
      CronExpression::Parse(rest, zone, anchor);
  if (!cron.ok()) {
    const absl::Status& s = cron.status();
    if (s.code() != absl::StatusCode::kInvalidArgument ||
        !(absl::StartsWith(s.message(), "schedule: ") ||
          absl::StartsWith(s.message(), "timezone: "))) {
      Fail("bad error: " + s.ToString(), rest, zone);
    }
    return 0;
  }
  if (cron->expression() != rest) Fail("expression() changed", rest, zone);
  if (cron->timezone() != (zone.empty() ? "UTC" : zone)) {
    Fail("timezone() changed to " + cron->timezone(), rest, zone);
  }
  CheckExpression(*cron, rest, zone, start);
  return 0;
}
