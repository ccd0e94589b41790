#!/usr/bin/env bash
# Runs the whole test suite: installs what it needs, builds the plugin and the
# host, starts a fresh local Parse Server (PostgreSQL 15 + PostGIS, loopback
# only), runs every unit and integration test, and stops the server again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
scripts/build.sh

scripts/parse-server/start.sh
trap 'scripts/parse-server/stop.sh' EXIT
# shellcheck source=parse-server/env.sh
. scripts/parse-server/env.sh

# Host unit tests and the integration tests against the server.
cargo test --locked --release -p agros-sync-host -p agros-sync-tests
# The plugin's unit tests run natively: they cover its pure logic.
cargo test --locked -p agros-sync-guest
echo "test.sh: all tests passed"
