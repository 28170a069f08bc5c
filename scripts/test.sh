#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test; then the sanitizer
# and fuzz stages (scripts/sanitize.sh: ASan + UBSan with the thread-safety
# check, TSan, libFuzzer), unless ADJUTANT_QUICK=1 (a quicker local run; CI
# always runs them). Prints each stage's wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
./scripts/install-deps.sh
./scripts/build.sh
echo "test: build done after $(($(date +%s) - start)) s" >&2
ctest --test-dir build --output-on-failure -j 2 --timeout 600
echo "test: test suite done after $(($(date +%s) - start)) s" >&2
if [ "${ADJUTANT_QUICK:-0}" != 1 ]; then
  ./scripts/sanitize.sh
  echo "test: sanitizer and fuzz stages done after $(($(date +%s) - start)) s" >&2
fi
