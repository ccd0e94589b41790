#!/usr/bin/env bash
# Builds the plugin component (wasm32-wasip2) and the host with the agros-sync
# binary, both in release mode, in the workspace's one target directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --locked --release -p agros-sync-guest --target wasm32-wasip2
cargo build --locked --release -p agros-sync-host
echo "build.sh: plugin target/wasm32-wasip2/release/agros_sync_guest.wasm, CLI target/release/agros-sync"
