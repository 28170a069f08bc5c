#!/usr/bin/env bash
# Installs the Debian 12 packages Adjutant needs to build, test and run, and
# only those that are missing. Safe to run again.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config git ca-certificates
  # libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libsqlite3-dev libspdlog-dev libcli11-dev libabsl-dev
  # the Prometheus /metrics endpoint: cpp-httplib, and what its header
  # includes (it was built with TLS, zlib and brotli support)
  libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev
  # the PostgreSQL backend (libpq) and the throwaway server its tests start
  libpq-dev postgresql
  # tests
  libgtest-dev libgmock-dev python3 python3-grpcio python3-protobuf
  # the Node.js example (examples/node) and its test
  nodejs npm
  # time zones for cron schedules
  tzdata
  # systemd's notify protocol (sd_notify), the .deb (dpkg-shlibdeps needs
  # dpkg-dev and file) and the PostgreSQL leader-election sidecar
  libsystemd-dev dpkg-dev file python3-psycopg2
  # the throwaway certificates the TLS tests make (libssl-dev, listed with
  # cpp-httplib above, also serves TLS and the token digests)
  openssl
  # the sanitizer and fuzz builds (scripts/sanitize.sh): clang 14, its
  # sanitizer runtimes and libFuzzer
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  # A Node.js installed from elsewhere will do: its nodejs package may bundle
  # npm and conflict with Debian's npm package.
  if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
