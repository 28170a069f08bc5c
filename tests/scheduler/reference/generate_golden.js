#!/usr/bin/env node
// Generates cron_parser_golden.tsv: the fire times that a widely used cron
// implementation computes for standard expressions in several zones, from
// starting instants that include the daylight-saving transitions of 2026 in
// America/New_York, Europe/London and Australia/Sydney. The C++ test
// (tests/scheduler/cron_expression_test.cc, ReferenceTest) compares our
// CronExpression::Next() sequence with it; it needs only the committed file.
//
// Reference implementation: the npm package cron-parser 5.10.6 (time zones
// through luxon and Node's ICU zone data), run on Node.js v20.20.2 (ICU 78.2,
// tz data 2025c). The '#' lines at the top of the output record the versions
// of the run that produced it.
//
// Regenerate (only when the expression list below changes):
//   dir=$(mktemp -d) && (cd "$dir" && npm install --silent cron-parser@5.10.6)
//   (cd "$dir" && node /path/to/tests/scheduler/reference/generate_golden.js) \
//       > tests/scheduler/reference/cron_parser_golden.tsv
//
// Output: '#' comment lines, then one line per case, tab-separated:
//   expression, zone, start (unix seconds), the next kCount fire times
//   strictly after start (unix seconds, space-separated).
'use strict';

const path = require('path');
const cronParserDir = path.dirname(
    require.resolve('cron-parser/package.json', {paths: [process.cwd()]}));
const {CronExpressionParser} = require(cronParserDir);
const cronParserVersion = require(path.join(cronParserDir, 'package.json')).version;

const kCount = 10;

// Standard expressions (5 and 6 fields, names, lists, ranges, steps, macros,
// and the Quartz L and # that the reference supports).
const kExpressions = [
  '* * * * *',
  '*/5 * * * *',
  '*/15 * * * *',
  '10-40/10 * * * *',
  '5/15 * * * *',
  '0 * * * *',
  '30 * * * *',
  '0 */2 * * *',
  '0 */6 * * *',
  '0 9-17 * * MON-FRI',
  '0 0 * * *',
  '0 2 * * *',
  '30 2 * * *',
  '30 1 * * *',
  '15 9 * * 1-5',
  '0 12 * * *',
  '45 23 * * 6',
  '0 0,12 * * *',
  '0 6,18 * * SAT,SUN',
  '0 22 * * 1-5',
  '7 3 * * 2',
  '0 0 * * 0',
  '0 0 * * 7',
  '0 0 1 * *',
  '0 0 1 1 *',
  '0 0 1,15 * *',
  '0 0 13 * 5',
  '0 0 1-7 * 1',
  '30 4 1,15 * 5',
  '0 0 29 2 *',
  '0 0 31 * *',
  '0 8 * jan,jul *',
  '0 0 1 */3 *',
  '59 23 31 12 *',
  '0 0 L * *',
  '0 12 * * 5L',
  '0 0 * * 1#2',
  '@hourly',
  '@daily',
  '@weekly',
  '@monthly',
  '@yearly',
  '*/20 * * * * *',
  '30 0 12 * * *',
];

// Daylight-saving transitions of 2026 (UTC instants).
const kTransitions = {
  'America/New_York': ['2026-03-08T07:00:00Z', '2026-11-01T06:00:00Z'],
  'Europe/London': ['2026-03-29T01:00:00Z', '2026-10-25T01:00:00Z'],
  'Australia/Sydney': ['2026-10-03T16:00:00Z', '2026-04-04T16:00:00Z'],
};

const kZones = ['UTC', 'America/New_York', 'Europe/London', 'Asia/Kolkata',
                'Australia/Sydney'];

const kCommonStarts = ['2026-01-15T10:17:23Z', '2026-06-30T23:59:59Z',
                       '2027-12-31T23:00:00Z', '2028-02-28T12:00:00Z'];

// Around each transition T: a day before (daily schedules), 30 minutes
// before (hourly ones; in a fall-back, inside the first occurrence of the
// repeated hour), exactly at T, and 10 minutes after (in a fall-back, inside
// the second occurrence).
const kAroundTransition = [-26 * 3600, -30 * 60, 0, 10 * 60];

function startsFor(zone) {
  const starts = kCommonStarts.map((iso) => Date.parse(iso) / 1000);
  for (const iso of kTransitions[zone] || []) {
    const t = Date.parse(iso) / 1000;
    for (const delta of kAroundTransition) starts.push(t + delta);
  }
  return starts;
}

const lines = [];
lines.push(`# generator: tests/scheduler/reference/generate_golden.js`);
lines.push(`# reference: npm cron-parser ${cronParserVersion}`);
lines.push(`# runtime: node ${process.version}, ICU ${process.versions.icu}, ` +
           `tz data ${process.versions.tz}`);
lines.push('# columns: expression<TAB>zone<TAB>start unix seconds<TAB>' +
           `next ${kCount} fire times, unix seconds`);
for (const zone of kZones) {
  for (const start of startsFor(zone)) {
    for (const expression of kExpressions) {
      const it = CronExpressionParser.parse(
          expression, {currentDate: new Date(start * 1000), tz: zone});
      const fires = [];
      for (let i = 0; i < kCount; ++i) {
        fires.push(it.next().toDate().getTime() / 1000);
      }
      lines.push([expression, zone, start, fires.join(' ')].join('\t'));
    }
  }
}
process.stdout.write(lines.join('\n') + '\n');
