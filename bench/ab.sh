#!/usr/bin/env bash
# Two adjutantd builds side by side: for each scenario, each build in turn
# (ROUNDS times), a fresh daemon on a temporary SQLite file, the load
# generator against it, and the daemon's CPU time per operation read from
# /proc/PID/stat (utime + stime) over the measured seconds. On a shared,
# noisy machine the CPU per operation is steadier than the rate, and the
# alternation keeps a slow spell from landing on one build only.
#
# Usage: bench/ab.sh OLD_ADJUTANTD NEW_ADJUTANTD [SCENARIO...]
#   (default scenarios: enqueue lifecycle batched batched_stream)
# Environment: SECONDS_PER_RUN (4), ROUNDS (2), LOADGEN
#   (build/bench/adjutant_bench).
# Prints one line per run: build, scenario, rate, daemon cores, CPU per op.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
old=$1
new=$2
shift 2
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
  scenarios=(enqueue lifecycle batched batched_stream)
fi
seconds=${SECONDS_PER_RUN:-4}
rounds=${ROUNDS:-2}
loadgen=${LOADGEN:-build/bench/adjutant_bench}
ticks=$(getconf CLK_TCK)

run() {  # binary, scenario
  local dir pid start_cpu end_cpu start end
  dir=$(mktemp -d)
  "$1" --listen 127.0.0.1:0 --port-file "$dir/port" --db "$dir/a.db" \
    --log-level warn >"$dir/daemon.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    [ -s "$dir/port" ] && break
    sleep 0.05
  done
  "$loadgen" --target "127.0.0.1:$(cat "$dir/port")" --scenario "$2" \
    --seconds "$seconds" --warmup-seconds 0 >"$dir/out.json" 2>&1 &
  local bench=$!
  sleep 0.5  # past the connection set-up
  start_cpu=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  start=$(date +%s.%N)
  wait "$bench"
  end_cpu=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  end=$(date +%s.%N)
  kill "$pid"
  wait "$pid" || true
  python3 - "$dir/out.json" "$start_cpu" "$end_cpu" "$start" "$end" "$ticks" \
    "$(basename "$1")" <<'EOF'
import json, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[6])
wall = float(sys.argv[5]) - float(sys.argv[4])
rate = result["ops_per_s"]
print("%-16s %-14s %8.0f/s  daemon %.2f cores  %6.1f us CPU/op"
      % (sys.argv[7], result["scenario"], rate, cpu / wall,
         cpu / wall / rate * 1e6))
EOF
  rm -rf "$dir"
}

for scenario in "${scenarios[@]}"; do
  for _ in $(seq "$rounds"); do
    run "$old" "$scenario"
    run "$new" "$scenario"
  done
done
