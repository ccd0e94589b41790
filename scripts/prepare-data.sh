#!/usr/bin/env bash
# Copies the test data sets from the vega-datasets 3.2.1 npm package into
# data/ after checking their contents:
#   data/barley.json  barley yields, 120 records (variety, site, year, yield)
#   data/weather.csv  daily weather for Seattle and New York, 2012-01-01 to
#                     2015-12-31, 2,922 rows (1,461 per location)
# data/ is not committed; run scripts/install-deps.sh first to get the package.
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
package_dir="$repo_dir/scripts/parse-server/node_modules/vega-datasets"
source_dir="$package_dir/data"
target_dir="$repo_dir/data"

fail() {
  echo "prepare-data.sh: $*" >&2
  exit 1
}

[ -d "$source_dir" ] || fail "$source_dir not found; run scripts/install-deps.sh first"

package_version="$(node -p 'require(process.argv[1]).version' "$package_dir/package.json")"
[ "$package_version" = 3.2.1 ] ||
  fail "vega-datasets $package_version found in $package_dir, expected 3.2.1; run scripts/install-deps.sh"

# barley.json: 120 records, one of them the Manchuria yield at University Farm
# in 1931.
node - "$source_dir/barley.json" <<'EOF' || fail "invalid $source_dir/barley.json"
const records = require(process.argv[2]);
const errors = [];
if (!Array.isArray(records) || records.length !== 120) {
  errors.push(`expected 120 records, found ${Array.isArray(records) ? records.length : typeof records}`);
}
const known = records.find(r =>
  r.variety === 'Manchuria' && r.site === 'University Farm' && r.year === 1931 && r.yield === 27);
if (!known) {
  errors.push('record {variety: "Manchuria", site: "University Farm", year: 1931, yield: 27} not found');
}
for (const error of errors) console.error(`barley.json: ${error}`);
process.exit(errors.length === 0 ? 0 : 1);
EOF

# weather.csv: the expected header, then 1,461 days (2012-01-01 to
# 2015-12-31) for each of the two locations.
awk -F, '
  NR == 1 {
    if ($0 != "location,date,precipitation,temp_max,temp_min,wind,weather") {
      print "weather.csv: unexpected header: " $0 > "/dev/stderr"; bad = 1
    }
    next
  }
  {
    rows++; per_location[$1]++
    if (min_date == "" || $2 < min_date) min_date = $2
    if ($2 > max_date) max_date = $2
  }
  END {
    if (rows != 2922) { print "weather.csv: expected 2922 data rows, found " rows > "/dev/stderr"; bad = 1 }
    if (per_location["Seattle"] != 1461 || per_location["New York"] != 1461) {
      print "weather.csv: expected 1461 rows each for Seattle and New York, found " \
        per_location["Seattle"] + 0 " and " per_location["New York"] + 0 > "/dev/stderr"; bad = 1
    }
    if (min_date != "2012-01-01" || max_date != "2015-12-31") {
      print "weather.csv: expected dates 2012-01-01 to 2015-12-31, found " min_date " to " max_date > "/dev/stderr"; bad = 1
    }
    exit bad
  }
' "$source_dir/weather.csv" || fail "invalid $source_dir/weather.csv"

mkdir -p "$target_dir"
cp "$source_dir/barley.json" "$target_dir/barley.json"
cp "$source_dir/weather.csv" "$target_dir/weather.csv"
echo "prepare-data.sh: wrote data/barley.json (120 records) and data/weather.csv (2,922 rows) from vega-datasets $package_version"
