#!/usr/bin/env bash
# Installs what is missing, builds, and runs adjutantd in the foreground on
# the SQLite file ./adjutant.db, listening on 127.0.0.1:50051. Extra
# arguments go to adjutantd (see ./build/server/adjutantd --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
exec ./build/server/adjutantd --listen 127.0.0.1:50051 --db ./adjutant.db "$@"
