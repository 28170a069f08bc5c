#!/usr/bin/env bash
# Configures (once) and builds Adjutant into ./build with Ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
# Two cores: more jobs only thrash.
cmake --build build -j "${ADJUTANT_BUILD_JOBS:-2}"
