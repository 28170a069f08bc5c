#!/usr/bin/env bash
# The clang stages of the test suite, each in its own build directory:
#
#   asan  build-asan: everything, with AddressSanitizer + UndefinedBehavior-
#         Sanitizer, clang's -Wthread-safety as an error (the lock
#         annotations), and libFuzzer coverage; then the full ctest suite,
#         which also replays the fuzz corpora (tests/fuzz/corpus/).
#   tsan  build-tsan: the server, scheduler and storage tests and adjutantd,
#         with ThreadSanitizer; then those tests, but for the server tests
#         that run a gRPC server (see tsan_grpc_tests), and a check that
#         TSan sees through the absl::Mutex wrappers and past them.
#   fuzz  each libFuzzer target of build-asan for ADJUTANT_FUZZ_SECONDS
#         (default 20), the two side by side, from the seed corpus; a crash
#         leaves its input in build-asan/fuzz/artifacts/ and fails the stage.
#
# Usage: scripts/sanitize.sh [asan|tsan|fuzz]...   (default: all three, in
# that order; fuzz needs build-asan). Only our code is instrumented: Debian's
# gRPC, protobuf, abseil and libstdc++ are not (docs/ARCHITECTURE.md,
# "Sanitizers and fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${ADJUTANT_BUILD_JOBS:-2}
stages=("$@")
if [ ${#stages[@]} -eq 0 ]; then stages=(asan tsan fuzz); fi

# Sanitized code runs a few times slower: the tests' real-time waits
# (a daemon starting, a process exiting) scale by this factor.
export ADJUTANT_TEST_TIMEOUT_MULTIPLIER=${ADJUTANT_TEST_TIMEOUT_MULTIPLIER:-4}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-suppressions=$root/tests/sanitizers/tsan.supp:halt_on_error=1:second_deadlock_stack=1:print_suppressions=0}

# Debug (assertions on) at -O1: fast to build, fast enough to run.
configure() {  # dir, extra cmake args...
  local dir=$1
  shift
  if [ ! -f "$dir/build.ninja" ]; then
    cmake -S . -B "$dir" -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
      -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" "$@" >/dev/null
  fi
}

stage_start=0
begin() {
  stage_start=$(date +%s)
  echo "sanitize: $1" >&2
}
end() {
  echo "sanitize: $1 took $(($(date +%s) - stage_start)) s" >&2
}

run_asan() {
  begin "asan: build (ASan + UBSan, -Wthread-safety, fuzz targets)"
  configure build-asan -DADJUTANT_SANITIZE=address,undefined -DADJUTANT_FUZZ=ON
  cmake --build build-asan -j "$jobs"
  end "asan build"
  begin "asan: ctest (the full suite)"
  ctest --test-dir build-asan --output-on-failure -j 2 --timeout 900
  end "asan ctest"
}

tsan_grpc_tests='^(AuthServerTest|Backends/RetentionAcceptanceTest|Backends/ServerMetricsTest|DaemonTest|SchedulerDaemonTest|SchedulerServiceTest|ShutdownTest|SqliteFaultTest|Stores/JobQueueTest|Stores/WorkStreamTest)\.|^StoreWatchdogTest\.FedByTheServersHealthChecks$'
run_tsan() {
  begin "tsan: build (server, scheduler, storage tests)"
  configure build-tsan -DADJUTANT_SANITIZE=thread
  cmake --build build-tsan -j "$jobs" \
    --target server_test scheduler_test storage_test adjutantd \
    tsan_absl_sync_check
  end "tsan build"
  begin "tsan: ctest"
  # Not the tests that run a gRPC server: Debian's gRPC is not instrumented,
  # so TSan cannot see how it hands a call from our executor thread to its
  # own (ServerUnaryReactor::Finish, then OnDone), and reports our objects
  # on both sides. A suppression would have to name our own frames.
  ctest --test-dir build-tsan --output-on-failure -j 2 --timeout 900 \
    -L '^(server|scheduler|storage|sanitizers)$' -E "$tsan_grpc_tests"
  end "tsan ctest"
}

run_fuzz() {
  local seconds=${ADJUTANT_FUZZ_SECONDS:-20}
  begin "fuzz: ${seconds} s per target"
  local work=build-asan/fuzz
  mkdir -p "$work/artifacts"
  local pids=() targets=(cron_expression_fuzz validation_fuzz)
  for target in "${targets[@]}"; do
    # New inputs go to $work/<target>; the seed corpus stays as committed.
    mkdir -p "$work/$target"
    "build-asan/tests/fuzz/$target" -max_total_time="$seconds" \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/$target-" \
      "$work/$target" "tests/fuzz/corpus/$target" \
      >"$work/$target.log" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for i in "${!targets[@]}"; do
    if ! wait "${pids[$i]}"; then
      failed=1
      echo "sanitize: ${targets[$i]} failed; its log:" >&2
      tail -n 60 "$work/${targets[$i]}.log" >&2
    else
      grep -E '^stat::number_of_executed_units' "$work/${targets[$i]}.log" |
        sed "s/^/sanitize: ${targets[$i]}: /" >&2 || true
    fi
  done
  end "fuzz"
  if [ "$failed" -ne 0 ]; then
    echo "sanitize: crashing inputs are in $work/artifacts/; add them to" \
      "tests/fuzz/corpus/<target>/ as crash-* with a regression test" >&2
    return 1
  fi
}

for stage in "${stages[@]}"; do
  case "$stage" in
    asan) run_asan ;;
    tsan) run_tsan ;;
    fuzz) run_fuzz ;;
    *)
      echo "sanitize: unknown stage '$stage' (asan, tsan or fuzz)" >&2
      exit 2
      ;;
  esac
done
