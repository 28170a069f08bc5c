#include "scheduler/cron_expression.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"

namespace adjutant {
namespace {

// Longer expressions are refused, so that parsing is bounded for any input.
constexpr size_t kMaxExpressionBytes = 1024;

// How far ahead Next() searches for a matching local time: one Gregorian
// cycle, after which calendar and weekdays repeat, so an expression that can
// match at all (even "the fifth Monday of February") is found.
constexpr int kSearchYears = 400;

// A loop guard for Next(): it passes at most one offset change per
// iteration, and zones have a few per year.
constexpr int kMaxSegments = 20 * kSearchYears;

// Next() treats instants outside [0001-01-01, 9999-12-31T23:59:59] UTC as
// these bounds.
constexpr absl::Time kMinTime = absl::FromUnixSeconds(-62135596800);
constexpr absl::Time kMaxTime = absl::FromUnixSeconds(253402300799);

enum class FieldKind {
  kSecond,
  kMinute,
  kHour,
  kDayOfMonth,
  kMonth,
  kDayOfWeek
};

struct FieldSpec {
  const char* name;
  int min;
  int max;
};

const FieldSpec& SpecOf(FieldKind kind) {
  static const FieldSpec kSpecs[] = {
      {"second", 0, 59},       {"minute", 0, 59}, {"hour", 0, 23},
      {"day-of-month", 1, 31}, {"month", 1, 12},  {"day-of-week", 0, 7},
  };
  return kSpecs[static_cast<int>(kind)];
}

constexpr const char* kMonthNames[] = {"JAN", "FEB", "MAR", "APR",
                                       "MAY", "JUN", "JUL", "AUG",
                                       "SEP", "OCT", "NOV", "DEC"};
constexpr const char* kWeekdayNames[] = {"SUN", "MON", "TUE", "WED",
                                         "THU", "FRI", "SAT"};

uint64_t Bit(int i) { return uint64_t{1} << i; }

// The smallest set bit of `mask` at or above `from`, or -1.
int NextBit(uint64_t mask, int from) {
  if (from >= 64) return -1;
  const uint64_t m = mask & (~uint64_t{0} << from);
  return m == 0 ? -1 : __builtin_ctzll(m);
}

bool IsLeapYear(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int DaysInMonth(int64_t y, int m) {
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeapYear(y) ? 29 : kDays[m - 1];
}

// 0 = Sunday ... 6 = Saturday.
int WeekdayOf(absl::CivilDay day) {
  // absl::Weekday counts from Monday = 0.
  return (static_cast<int>(absl::GetWeekday(day)) + 1) % 7;
}

absl::Status FieldError(FieldKind kind, absl::string_view text,
                        absl::string_view reason) {
  return absl::InvalidArgumentError(
      absl::StrCat("schedule: ", SpecOf(kind).name, " field '",
                   absl::CHexEscape(text), "': ", reason));
}

// Parses a run of decimal digits. Returns false if `text` is not one; sets
// `*too_big` if it is, but does not fit the ranges used here.
bool ParseDigits(absl::string_view text, int* value, bool* too_big) {
  *too_big = false;
  if (text.empty()) return false;
  for (char ch : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(ch))) return false;
  }
  if (text.size() > 6) {
    *too_big = true;
    return true;
  }
  return absl::SimpleAtoi(text, value);
}

// The parsed form of a calendar expression. Bit i of a mask stands for
// value i.
struct Fields {
  uint64_t seconds = 0;
  uint64_t minutes = 0;
  uint64_t hours = 0;
  uint64_t days = 0;      // plain days of the month, bits 1-31
  uint64_t months = 0;    // bits 1-12
  uint64_t weekdays = 0;  // bits 0-6, Sunday = 0
  // Vixie rule: a day field is restricted unless it is `*` or `?`.
  bool dom_restricted = false;
  bool dow_restricted = false;
  // Whether the hour field names fixed wall-clock hours (the DST rule).
  bool fixed_hours = false;
  // Quartz day-of-month: bit n for `L-n` (`L` is bit 0); bit d for `dW`;
  // `LW`.
  uint64_t last_day_offsets = 0;
  uint64_t nearest_weekdays = 0;
  bool last_weekday = false;
  // Quartz day-of-week: bit w for `wL`; nth_weekdays[k-1] bit w for `w#k`.
  uint64_t last_weekdays = 0;
  uint64_t nth_weekdays[5] = {0, 0, 0, 0, 0};
  // days_by_first_weekday[w]: bits d (1-31) whose weekday is in `weekdays`
  // in a month that starts on weekday w.
  uint64_t days_by_first_weekday[7] = {0, 0, 0, 0, 0, 0, 0};
};

// Parses one value: digits, or a month or weekday name where allowed.
absl::Status ParseValue(FieldKind kind, absl::string_view field_text,
                        absl::string_view token, int* value) {
  const FieldSpec& spec = SpecOf(kind);
  if (token.empty()) {
    return FieldError(kind, field_text, "missing value");
  }
  bool too_big = false;
  if (ParseDigits(token, value, &too_big)) {
    if (too_big || *value < spec.min || *value > spec.max) {
      return FieldError(kind, field_text,
                        absl::StrCat("value ", token, " out of range ",
                                     spec.min, "-", spec.max));
    }
    return absl::OkStatus();
  }
  const std::string upper = absl::AsciiStrToUpper(token);
  if (kind == FieldKind::kMonth) {
    for (int i = 0; i < 12; ++i) {
      if (upper == kMonthNames[i]) {
        *value = i + 1;
        return absl::OkStatus();
      }
    }
    return FieldError(kind, field_text,
                      absl::StrCat("'", absl::CHexEscape(token),
                                   "' is not a month number (1-12) or name "
                                   "(JAN-DEC)"));
  }
  if (kind == FieldKind::kDayOfWeek) {
    for (int i = 0; i < 7; ++i) {
      if (upper == kWeekdayNames[i]) {
        *value = i;
        return absl::OkStatus();
      }
    }
    return FieldError(kind, field_text,
                      absl::StrCat("'", absl::CHexEscape(token),
                                   "' is not a weekday number (0-7, 0 and 7 "
                                   "are Sunday) or name (SUN-SAT)"));
  }
  return FieldError(
      kind, field_text,
      absl::StrCat("'", absl::CHexEscape(token), "' is not a number"));
}

// Parses a number in [min, max] that is not a field value (a step, an `L-n`
// offset, a `#` occurrence).
absl::Status ParseBounded(FieldKind kind, absl::string_view field_text,
                          absl::string_view what, absl::string_view token,
                          int min, int max, int* value) {
  bool too_big = false;
  if (!ParseDigits(token, value, &too_big)) {
    return FieldError(
        kind, field_text,
        absl::StrCat(what, " '", absl::CHexEscape(token), "' is not a number"));
  }
  if (too_big || *value < min || *value > max) {
    return FieldError(
        kind, field_text,
        absl::StrCat(what, " ", token, " out of range ", min, "-", max));
  }
  return absl::OkStatus();
}

// Parses a Quartz day-of-month element (`L`, `L-n`, `LW`, `nW`). Returns
// true in `*handled` if `upper` was one.
absl::Status ParseDayOfMonthSpecial(absl::string_view field_text,
                                    absl::string_view upper, Fields* f,
                                    bool* handled) {
  constexpr FieldKind kind = FieldKind::kDayOfMonth;
  *handled = true;
  if (upper == "L") {
    f->last_day_offsets |= Bit(0);
    return absl::OkStatus();
  }
  if (upper == "LW") {
    f->last_weekday = true;
    return absl::OkStatus();
  }
  if (absl::StartsWith(upper, "L-")) {
    int n = 0;
    absl::Status s = ParseBounded(kind, field_text, "offset from the last day",
                                  upper.substr(2), 0, 30, &n);
    if (!s.ok()) return s;
    f->last_day_offsets |= Bit(n);
    return absl::OkStatus();
  }
  if (upper.size() > 1 && upper.back() == 'W') {
    int d = 0;
    absl::Status s =
        ParseValue(kind, field_text, upper.substr(0, upper.size() - 1), &d);
    if (!s.ok()) return s;
    f->nearest_weekdays |= Bit(d);
    return absl::OkStatus();
  }
  *handled = false;
  return absl::OkStatus();
}

// Parses a Quartz day-of-week element (`nL`, `n#k`). Returns true in
// `*handled` if `upper` was one.
absl::Status ParseDayOfWeekSpecial(absl::string_view field_text,
                                   absl::string_view upper, Fields* f,
                                   bool* handled) {
  constexpr FieldKind kind = FieldKind::kDayOfWeek;
  *handled = true;
  if (upper == "L") {
    return FieldError(kind, field_text,
                      "'L' needs a weekday before it, e.g. 5L for the last "
                      "Friday of the month");
  }
  const size_t hash = upper.find('#');
  if (hash != absl::string_view::npos) {
    int w = 0;
    int k = 0;
    absl::Status s = ParseValue(kind, field_text, upper.substr(0, hash), &w);
    if (!s.ok()) return s;
    s = ParseBounded(kind, field_text, "occurrence", upper.substr(hash + 1), 1,
                     5, &k);
    if (!s.ok()) return s;
    f->nth_weekdays[k - 1] |= Bit(w % 7);
    return absl::OkStatus();
  }
  if (upper.size() > 1 && upper.back() == 'L' &&
      upper.find_first_of("-/*?") == absl::string_view::npos) {
    int w = 0;
    absl::Status s =
        ParseValue(kind, field_text, upper.substr(0, upper.size() - 1), &w);
    if (!s.ok()) return s;
    f->last_weekdays |= Bit(w % 7);
    return absl::OkStatus();
  }
  *handled = false;
  return absl::OkStatus();
}

// Parses one field: a comma-separated list of `*`, `?`, values, ranges and
// steps, plus the Quartz elements of the day fields. Sets bits in `*mask`.
absl::Status ParseField(FieldKind kind, absl::string_view text, Fields* f,
                        uint64_t* mask) {
  const FieldSpec& spec = SpecOf(kind);
  for (absl::string_view element : absl::StrSplit(text, ',')) {
    if (element.empty()) {
      return FieldError(kind, text, "empty list element");
    }
    const std::string upper = absl::AsciiStrToUpper(element);
    bool handled = false;
    if (kind == FieldKind::kDayOfMonth) {
      absl::Status s = ParseDayOfMonthSpecial(text, upper, f, &handled);
      if (!s.ok()) return s;
    } else if (kind == FieldKind::kDayOfWeek) {
      absl::Status s = ParseDayOfWeekSpecial(text, upper, f, &handled);
      if (!s.ok()) return s;
    }
    if (handled) continue;

    std::vector<absl::string_view> parts = absl::StrSplit(element, '/');
    if (parts.size() > 2) {
      return FieldError(kind, text,
                        absl::StrCat("'", absl::CHexEscape(element),
                                     "' has more than one '/'"));
    }
    const bool has_step = parts.size() == 2;
    const absl::string_view base = parts[0];
    int lo = 0;
    int hi = 0;
    if (base == "*" || base == "?") {
      lo = spec.min;
      // 7 is Sunday again; `*` covers each weekday once.
      hi = kind == FieldKind::kDayOfWeek ? 6 : spec.max;
    } else if (base.find('-') != absl::string_view::npos) {
      std::vector<absl::string_view> ends = absl::StrSplit(base, '-');
      if (ends.size() != 2) {
        return FieldError(kind, text,
                          absl::StrCat("'", absl::CHexEscape(base),
                                       "' is not a range like 10-20"));
      }
      absl::Status s = ParseValue(kind, text, ends[0], &lo);
      if (!s.ok()) return s;
      s = ParseValue(kind, text, ends[1], &hi);
      if (!s.ok()) return s;
      if (lo > hi) {
        return FieldError(kind, text,
                          absl::StrCat("range ", ends[0], "-", ends[1],
                                       " starts after it ends"));
      }
    } else {
      absl::Status s = ParseValue(kind, text, base, &lo);
      if (!s.ok()) return s;
      // `5/15` means 5, 20, 35, ... up to the field's maximum.
      hi = has_step ? spec.max : lo;
    }
    int step = 1;
    if (has_step) {
      absl::Status s = ParseBounded(kind, text, "step", parts[1], 1,
                                    spec.max - spec.min + 1, &step);
      if (!s.ok()) return s;
    }
    for (int v = lo; v <= hi; v += step) {
      *mask |= Bit(kind == FieldKind::kDayOfWeek ? v % 7 : v);
    }
  }
  return absl::OkStatus();
}

// Whether every element of the hour field is a single number (see the DST
// rule in the header).
bool IsFixedHourField(absl::string_view text) {
  for (absl::string_view element : absl::StrSplit(text, ',')) {
    for (char ch : element) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(ch))) return false;
    }
  }
  return true;
}

absl::StatusOr<Fields> ParseFields(const std::vector<absl::string_view>& in) {
  Fields f;
  std::vector<absl::string_view> fields = in;
  if (fields.size() == 5) fields.insert(fields.begin(), "0");
  struct Step {
    FieldKind kind;
    uint64_t* mask;
  };
  const Step steps[] = {
      {FieldKind::kSecond, &f.seconds}, {FieldKind::kMinute, &f.minutes},
      {FieldKind::kHour, &f.hours},     {FieldKind::kDayOfMonth, &f.days},
      {FieldKind::kMonth, &f.months},   {FieldKind::kDayOfWeek, &f.weekdays},
  };
  for (int i = 0; i < 6; ++i) {
    absl::Status s = ParseField(steps[i].kind, fields[i], &f, steps[i].mask);
    if (!s.ok()) return s;
  }
  f.dom_restricted = !(fields[3] == "*" || fields[3] == "?");
  f.dow_restricted = !(fields[5] == "*" || fields[5] == "?");
  f.fixed_hours = IsFixedHourField(fields[2]);
  for (int first = 0; first < 7; ++first) {
    for (int d = 1; d <= 31; ++d) {
      if (f.weekdays & Bit((first + d - 1) % 7)) {
        f.days_by_first_weekday[first] |= Bit(d);
      }
    }
  }
  return f;
}

// The weekday (Monday to Friday) nearest day `d` of a month of `length` days
// starting on weekday `first`, without leaving the month.
int NearestWeekday(int d, int length, int first) {
  const int w = (first + d - 1) % 7;
  if (w == 6) return d == 1 ? d + 2 : d - 1;       // Saturday
  if (w == 0) return d == length ? d - 2 : d + 1;  // Sunday
  return d;
}

// Bits 1-31: the days of month `m` of year `y` that match both day fields.
uint64_t DayMask(const Fields& f, int64_t y, int m) {
  const int length = DaysInMonth(y, m);
  const int first = WeekdayOf(absl::CivilDay(y, m, 1));
  const uint64_t in_month = ((Bit(length) - 1) << 1);

  uint64_t dom = f.days;
  for (uint64_t offs = f.last_day_offsets; offs != 0; offs &= offs - 1) {
    const int d = length - __builtin_ctzll(offs);
    if (d >= 1) dom |= Bit(d);
  }
  for (uint64_t ds = f.nearest_weekdays; ds != 0; ds &= ds - 1) {
    const int d = __builtin_ctzll(ds);
    if (d <= length) dom |= Bit(NearestWeekday(d, length, first));
  }
  if (f.last_weekday) dom |= Bit(NearestWeekday(length, length, first));

  uint64_t dow = f.days_by_first_weekday[first];
  const int last_weekday = (first + length - 1) % 7;
  for (uint64_t ws = f.last_weekdays; ws != 0; ws &= ws - 1) {
    const int w = __builtin_ctzll(ws);
    dow |= Bit(length - (last_weekday - w + 7) % 7);
  }
  for (int k = 0; k < 5; ++k) {
    for (uint64_t ws = f.nth_weekdays[k]; ws != 0; ws &= ws - 1) {
      const int w = __builtin_ctzll(ws);
      const int d = 1 + (w - first + 7) % 7 + 7 * k;
      if (d <= length) dow |= Bit(d);
    }
  }
  // An unrestricted field matches every day, so AND leaves the other alone.
  const uint64_t days =
      f.dom_restricted && f.dow_restricted ? (dom | dow) : (dom & dow);
  return days & in_month;
}

// The first local time at or after `from` matching every field, looking no
// further than the end of `limit_year`. Jumps a field at a time.
bool FindNextCivil(const Fields& f, absl::CivilSecond from, int64_t limit_year,
                   absl::CivilSecond* out) {
  int64_t y = from.year();
  int mo = from.month();
  int d = from.day();
  int h = from.hour();
  int mi = from.minute();
  int s = from.second();
  int64_t mask_year = -1;
  int mask_month = -1;
  uint64_t day_mask = 0;
  for (;;) {
    if (y > limit_year) return false;
    const int mo2 = NextBit(f.months, mo);
    if (mo2 < 0 || mo2 > 12) {
      ++y;
      mo = 1;
      d = 1;
      h = mi = s = 0;
      continue;
    }
    if (mo2 != mo) {
      mo = mo2;
      d = 1;
      h = mi = s = 0;
    }
    if (y != mask_year || mo != mask_month) {
      day_mask = DayMask(f, y, mo);
      mask_year = y;
      mask_month = mo;
    }
    const int d2 = NextBit(day_mask, d);
    if (d2 < 0) {
      ++mo;
      d = 1;
      h = mi = s = 0;
      continue;
    }
    if (d2 != d) {
      d = d2;
      h = mi = s = 0;
    }
    const int h2 = NextBit(f.hours, h);
    if (h2 < 0) {
      ++d;
      h = mi = s = 0;
      continue;
    }
    if (h2 != h) {
      h = h2;
      mi = s = 0;
    }
    const int mi2 = NextBit(f.minutes, mi);
    if (mi2 < 0) {
      ++h;
      mi = s = 0;
      continue;
    }
    if (mi2 != mi) {
      mi = mi2;
      s = 0;
    }
    const int s2 = NextBit(f.seconds, s);
    if (s2 < 0) {
      ++mi;
      s = 0;
      continue;
    }
    *out = absl::CivilSecond(y, mo, d, h, mi, s2);
    return true;
  }
}

// The Gregorian calendar repeats every 400 years, and so do a zone's
// daylight-saving rules: 146097 days.
constexpr absl::Duration kGregorianCycle = absl::Hours(24 * 146097);

// The first offset change of `zone` after `t`, like
// absl::TimeZone::NextTransition, but for any year. absl lists a zone's
// transitions only up to one cycle past its last rule change (about 2437)
// and says nothing after that, while absl::TimeZone::At() maps later
// instants onto that last cycle. This does the same: a transition found one
// or more cycles earlier is moved forward by as many cycles, and kept only
// if At() agrees that the offset changes there (a zone whose offsets stopped
// changing has no transitions to repeat).
bool NextTransition(const absl::TimeZone& zone, absl::Time t,
                    absl::TimeZone::CivilTransition* change) {
  if (zone.NextTransition(t, change)) return true;
  absl::TimeZone::CivilTransition last;
  if (t == absl::InfiniteFuture() || !zone.PrevTransition(t, &last)) {
    return false;
  }
  const absl::Time last_at = zone.At(last.to).trans;
  if (last_at >= t) return false;
  // The fewest cycles that take `t` before the last listed transition.
  const int64_t cycles = (t - last_at) / kGregorianCycle + 1;
  absl::TimeZone::CivilTransition earlier;
  if (!zone.NextTransition(t - cycles * kGregorianCycle, &earlier)) {
    return false;
  }
  const auto shift = [cycles](absl::CivilSecond c) {
    return absl::CivilSecond(c.year() + 400 * cycles, c.month(), c.day(),
                             c.hour(), c.minute(), c.second());
  };
  const absl::CivilSecond from = shift(earlier.from);
  const absl::CivilSecond to = shift(earlier.to);
  // A gap skips `from`; an overlap repeats `to`.
  if (zone.At(from).kind != absl::TimeZone::TimeInfo::SKIPPED &&
      zone.At(to).kind != absl::TimeZone::TimeInfo::REPEATED) {
    return false;
  }
  change->from = from;
  change->to = to;
  return true;
}

// Whether `name` looks like an IANA zone name. absl would also read a file
// path given as a zone name; a schedule must not make the daemon do that.
bool IsZoneName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  if (name.front() == '/' || absl::StrContains(name, "..")) return false;
  // The host's own zone, whatever it is: not a name every server reads alike.
  if (name == "localtime") return false;
  for (char ch : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '/' &&
        ch != '_' && ch != '-' && ch != '+') {
      return false;
    }
  }
  return true;
}

}  // namespace

struct CronExpression::Impl {
  std::string expression;
  std::string timezone;
  absl::TimeZone zone;
  // `@every`: ticks at anchor + k * every for every integer k.
  bool is_every = false;
  absl::Duration every;
  absl::Time anchor;
  // Everything else.
  Fields fields;

  absl::Time NextEvery(absl::Time after) const;
  absl::Time NextCalendar(absl::Time after) const;
};

absl::Time CronExpression::Impl::NextEvery(absl::Time after) const {
  absl::Duration rem;
  int64_t k = absl::IDivDuration(after - anchor, every, &rem);
  if (rem < absl::ZeroDuration()) --k;  // floor, not truncation
  return anchor + (k + 1) * every;
}

// The DST rule, walked over the segments of real time in which the zone's
// UTC offset is constant. Inside a segment local time runs in step with real
// time, so the first matching local time is the first matching instant.
absl::Time CronExpression::Impl::NextCalendar(absl::Time after) const {
  const Fields& f = fields;
  // Ticks are whole seconds: the first candidate is the next whole second.
  absl::Time t =
      absl::FromUnixSeconds(absl::ToUnixSeconds(after)) + absl::Seconds(1);
  const int64_t limit_year = zone.At(t).cs.year() + kSearchYears;
  for (int guard = 0; guard < kMaxSegments; ++guard) {
    const absl::CivilSecond start = zone.At(t).cs;
    if (f.fixed_hours) {
      // Local times skipped by a gap that ends exactly at `t` fire at `t`,
      // the first instant after the gap.
      const absl::CivilSecond gap_from = zone.At(t - absl::Seconds(1)).cs + 1;
      absl::CivilSecond skipped;
      if (gap_from < start &&
          FindNextCivil(f, gap_from, limit_year, &skipped) && skipped < start) {
        return t;
      }
    }
    absl::CivilSecond c;
    if (!FindNextCivil(f, start, limit_year, &c)) {
      return absl::InfiniteFuture();
    }
    // The segment holding `t` ends at the next offset change, whose local
    // time in this segment's offset is `change.from`.
    absl::TimeZone::CivilTransition change;
    const bool has_end =
        NextTransition(zone, t, &change) && change.from > start;
    if (has_end && c >= change.from) {
      // `c` is not in this segment; look again from where the next starts.
      // For fixed hours, a gap there is checked at the top of the loop.
      t += absl::Seconds(change.from - start);
      continue;
    }
    const absl::Time fire = t + absl::Seconds(c - start);
    if (f.fixed_hours) {
      const absl::TimeZone::TimeInfo info = zone.At(c);
      if (info.kind == absl::TimeZone::TimeInfo::REPEATED && fire > info.pre) {
        // The second occurrence of a repeated local time: fixed hours fire
        // only at the first. Resume where the repetition ends.
        t = info.trans + (info.post - info.pre);
        continue;
      }
    }
    return fire;
  }
  return absl::InfiniteFuture();
}

absl::StatusOr<CronExpression> CronExpression::Parse(
    absl::string_view expression, absl::string_view timezone,
    absl::Time anchor) {
  auto impl = std::make_shared<Impl>();
  impl->expression = std::string(expression);
  impl->timezone = timezone.empty() ? "UTC" : std::string(timezone);
  // Clamped, so that NextEvery's arithmetic cannot overflow.
  impl->anchor = std::clamp(anchor, kMinTime, kMaxTime);

  if (!IsZoneName(impl->timezone) ||
      !absl::LoadTimeZone(impl->timezone, &impl->zone)) {
    return absl::InvalidArgumentError(
        absl::StrCat("timezone: unknown time zone '",
                     absl::CHexEscape(impl->timezone), "'"));
  }
  if (expression.size() > kMaxExpressionBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("schedule: longer than ", kMaxExpressionBytes, " bytes"));
  }
  const std::vector<absl::string_view> tokens = absl::StrSplit(
      expression, absl::ByAnyChar(" \t\r\n\f\v"), absl::SkipEmpty());
  if (tokens.empty()) {
    return absl::InvalidArgumentError("schedule: empty expression");
  }

  std::vector<absl::string_view> fields;
  if (tokens[0].front() == '@') {
    const std::string macro = absl::AsciiStrToLower(tokens[0]);
    if (macro == "@every") {
      if (tokens.size() != 2) {
        return absl::InvalidArgumentError(
            "schedule: @every takes one duration, e.g. '@every 90s' or "
            "'@every 1h30m'");
      }
      absl::Duration every;
      if (!absl::ParseDuration(tokens[1], &every) ||
          every == absl::InfiniteDuration()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "schedule: @every duration '", absl::CHexEscape(tokens[1]),
            "': not a duration; use h, m and s, e.g. 90s or 1h30m"));
      }
      if (every < absl::Seconds(1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "schedule: @every duration '", absl::CHexEscape(tokens[1]),
            "': must be at least 1s"));
      }
      impl->is_every = true;
      impl->every = every;
      return CronExpression(std::move(impl));
    }
    static const std::pair<const char*, const char*> kMacros[] = {
        {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
        {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
        {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    };
    const char* expansion = nullptr;
    for (const auto& [name, text] : kMacros) {
      if (macro == name) expansion = text;
    }
    if (expansion == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "schedule: unknown macro '", absl::CHexEscape(tokens[0]),
          "'; expected @yearly, @annually, @monthly, @weekly, @daily, "
          "@midnight, @hourly or @every <duration>"));
    }
    if (tokens.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("schedule: ", macro, " takes no fields after it"));
    }
    fields = absl::StrSplit(expansion, ' ');
  } else if (tokens.size() == 5 || tokens.size() == 6) {
    fields = tokens;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "schedule: expected 5 fields (minute hour day-of-month month "
        "day-of-week) or 6 (a leading second), got ",
        tokens.size()));
  }
  absl::StatusOr<Fields> parsed = ParseFields(fields);
  if (!parsed.ok()) return parsed.status();
  impl->fields = *parsed;
  return CronExpression(std::move(impl));
}

CronExpression::CronExpression(std::shared_ptr<const Impl> impl)
    : impl_(std::move(impl)) {}

absl::Time CronExpression::Next(absl::Time after) const {
  if (after >= kMaxTime) return absl::InfiniteFuture();
  if (after < kMinTime) after = kMinTime;
  const absl::Time next =
      impl_->is_every ? impl_->NextEvery(after) : impl_->NextCalendar(after);
  return next > kMaxTime ? absl::InfiniteFuture() : next;
}

bool CronExpression::HasFixedHours() const {
  return !impl_->is_every && impl_->fields.fixed_hours;
}

const std::string& CronExpression::expression() const {
  return impl_->expression;
}

const std::string& CronExpression::timezone() const { return impl_->timezone; }

}  // namespace adjutant
