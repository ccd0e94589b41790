#!/usr/bin/env bash
# Installs what the agros-sync integration tests need on a Debian 12 machine:
# PostgreSQL 15 with PostGIS 3 (apt), the wasm32-wasip2 Rust target (rustup)
# and the npm packages in scripts/parse-server (npm ci). Each step is skipped
# when its result is already in place. apt needs root; Node.js 20 and npm must
# already be installed.
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
parse_server_dir="$repo_dir/scripts/parse-server"

apt_packages=(postgresql-15 postgresql-15-postgis-3 curl)

fail() {
  echo "install-deps.sh: $*" >&2
  exit 1
}

# --- Node.js -------------------------------------------------------------

command -v node >/dev/null || fail "node not found; install Node.js 20 (20.19 or later)"
command -v npm >/dev/null || fail "npm not found; install the npm that comes with Node.js 20"
node_version="$(node --version)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
node_minor="$(node -p 'process.versions.node.split(".")[1]')"
# parse-server 9.10.0 declares "node": ">=20.19.0 <21.0.0 || ..." in its
# package.json, and the tests are run on Node.js 20 only.
if [ "$node_major" -ne 20 ] || [ "$node_minor" -lt 19 ]; then
  fail "Node.js $node_version found, but 20.19 or a later 20.x is required"
fi

# --- Debian packages -----------------------------------------------------

missing_packages=()
for package in "${apt_packages[@]}"; do
  status="$(dpkg-query --show --showformat='${db:Status-Status}' "$package" 2>/dev/null || true)"
  if [ "$status" != installed ]; then
    missing_packages+=("$package")
  fi
done

if [ "${#missing_packages[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] ||
    fail "Debian packages missing: ${missing_packages[*]}; run this script as root to install them"
  echo "install-deps.sh: installing ${missing_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing_packages[@]}"
else
  echo "install-deps.sh: Debian packages already installed: ${apt_packages[*]}"
fi

# --- Rust target ---------------------------------------------------------

command -v rustup >/dev/null || fail "rustup not found; install the Rust toolchain with rustup"
if rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "install-deps.sh: Rust target wasm32-wasip2 already installed"
else
  rustup target add wasm32-wasip2
fi

# --- npm packages (Parse Server, vega-datasets) --------------------------

# npm ci deletes node_modules and installs it again, which takes about half a
# minute, so it is skipped while node_modules was installed from the current
# package-lock.json.
install_stamp="$parse_server_dir/node_modules/.agros-sync-installed-lock.json"
if [ ! -f "$parse_server_dir/package-lock.json" ]; then
  echo "install-deps.sh: scripts/parse-server/package-lock.json missing; running npm install to create it" >&2
  (cd "$parse_server_dir" && npm install --no-audit --no-fund)
elif [ -f "$install_stamp" ] && cmp -s "$install_stamp" "$parse_server_dir/package-lock.json"; then
  echo "install-deps.sh: npm packages already installed from scripts/parse-server/package-lock.json"
else
  (cd "$parse_server_dir" && npm ci --no-audit --no-fund)
fi
cp "$parse_server_dir/package-lock.json" "$install_stamp"

# With router 2.3.0, every /batch request to parse-server 9.10.0 returns 500,
# so parse-server's express must resolve the router 2.2.0 that package.json
# pins.
router_version="$(cd "$parse_server_dir" && node -p '
  const path = require("node:path");
  const parseServerDir = path.dirname(require.resolve("parse-server/package.json"));
  const expressDir = path.dirname(require.resolve("express/package.json", { paths: [parseServerDir] }));
  require(require.resolve("router/package.json", { paths: [expressDir] })).version
')"
if [ "$router_version" != 2.2.0 ]; then
  fail "parse-server's express resolves router $router_version instead of 2.2.0; run 'npm ls router' in scripts/parse-server"
fi
echo "install-deps.sh: done (Node.js $node_version, router $router_version for parse-server)"
