#!/usr/bin/env bash
# Installs what the peer job servers in bench/peers need, from Debian 12's
# packages and the npm registry: beanstalkd, redis-server (Redis 7),
# PostgreSQL 15, Node.js and npm, and the Node drivers' pinned packages
# (bench/peers/node/package-lock.json). Run as root, or with sudo available.
# Not part of CI: scripts/install-deps.sh does not install any of this.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  sudo="sudo"
fi

packages=(beanstalkd redis-server postgresql-15 nodejs)
# Debian's npm package; a Node.js that brings its own npm (e.g. one already
# installed from another source) needs none.
if ! command -v npm >/dev/null 2>&1; then
  packages+=(npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  $sudo apt-get update
  # The packages' own services, where the init system starts them, are left
  # alone: each run starts its own server in a temp dir on a free port.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

cd "$here/node"
npm ci --no-audit --no-fund
