#!/usr/bin/env bash
# Runs each peer for 1 s at concurrency 4 in every scenario and checks the
# JSON line each prints. Not part of ctest: CI does not install the peers
# (bench/peers/install.sh does). Exit status 0 when every line checks out.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
failures=0
for system in beanstalkd bullmq pgboss; do
  for scenario in enqueue lifecycle latency; do
    out="$("$here/$system/run" --scenario "$scenario" --seconds 1 --concurrency 4 \
      --payload-bytes 256 --warmup 0.5 --rate 50)"
    status=$?
    if [[ $status -ne 0 ]]; then
      echo "FAIL $system $scenario: exit status $status" >&2
      failures=$((failures + 1))
      continue
    fi
    if ! /usr/bin/python3 - "$system" "$scenario" "$out" <<'PY'
import json
import sys

system, scenario, out = sys.argv[1:]
lines = out.splitlines()
assert len(lines) == 1, "expected one line, got %d" % len(lines)
line = json.loads(lines[0])
expected = {"system", "scenario", "ops_per_s", "p50_ms", "p99_ms", "durability",
            "concurrency", "payload_bytes", "seconds"}
missing = expected - set(line)
assert not missing, "missing keys %s" % sorted(missing)
assert line["system"] == system, line["system"]
assert line["scenario"] == scenario, line["scenario"]
assert isinstance(line["ops_per_s"], (int, float)) and line["ops_per_s"] > 0, line["ops_per_s"]
assert isinstance(line["durability"], str) and line["durability"], line["durability"]
assert line["payload_bytes"] == 256 and line["seconds"] == 1, line
if scenario == "latency":
    assert line["concurrency"] == 1, line["concurrency"]
    for key in ("p50_ms", "p99_ms"):
        assert isinstance(line[key], (int, float)) and line[key] > 0, (key, line[key])
    assert line["p50_ms"] <= line["p99_ms"], line
else:
    assert line["concurrency"] == 4, line["concurrency"]
    assert line["p50_ms"] is None and line["p99_ms"] is None, line
PY
    then
      echo "FAIL $system $scenario: bad line: $out" >&2
      failures=$((failures + 1))
      continue
    fi
    echo "ok   $system $scenario: $out"
  done
done
if ((failures)); then
  echo "$failures of 9 runs failed" >&2
  exit 1
fi
echo "all 9 runs passed"
