#!/usr/bin/env bash
# Runs the main job on real data. It starts a fresh local Parse Server and
# imports two data sets from the npm package vega-datasets through the plugin:
# the barley field trials (120 records) and the Seattle and New York daily
# weather 2012-2015 (2,922 rows, `date` as a Parse Date). Then it queries them
# back and prints the status. The servers keep running afterwards, and
# scripts/parse-server/stop.sh stops them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
scripts/build.sh
scripts/parse-server/start.sh
scripts/prepare-data.sh
# shellcheck source=parse-server/env.sh
. scripts/parse-server/env.sh

# The servers start with empty databases, so the local-id map of an earlier
# demo run would point at objects that no longer exist.
state_db="$AGROS_STATE_DIR/demo-state.db"
rm -f "$state_db" "$state_db-wal" "$state_db-shm"
export AGROS_SYNC_STATE_URL="sqlite://$state_db"
export AGROS_SYNC_CONFIG="$PWD/config.example.yaml"
agros_sync="${CARGO_TARGET_DIR:-target}/release/agros-sync"

echo "== import"
"$agros_sync" import farm BarleyTrial data/barley.json --local-id-fields variety,year,site
"$agros_sync" import farm WeatherObservation data/weather.csv --local-id-fields location,date --date-fields date

echo "== query: Manchuria at University Farm, 1931"
"$agros_sync" query farm BarleyTrial --where '{"variety":"Manchuria","site":"University Farm","year":1931}'
echo "== query: count per data set"
barley=$("$agros_sync" --json query farm BarleyTrial --keys objectId | node -p 'JSON.parse(require("fs").readFileSync(0)).length')
seattle=$("$agros_sync" --json query farm WeatherObservation --where '{"location":"Seattle"}' --keys date | node -p 'JSON.parse(require("fs").readFileSync(0)).length')
new_york=$("$agros_sync" --json query farm WeatherObservation --where '{"location":"New York"}' --keys date | node -p 'JSON.parse(require("fs").readFileSync(0)).length')
echo "BarleyTrial: $barley, WeatherObservation: Seattle $seattle, New York $new_york"
echo "== query: the three wettest days"
"$agros_sync" query farm WeatherObservation --order=-precipitation --limit 3 --keys location,date,precipitation

echo "== status"
"$agros_sync" status
"$agros_sync" --json status
echo "== app_config"
"$agros_sync" app-config
