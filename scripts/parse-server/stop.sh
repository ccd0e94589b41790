#!/usr/bin/env bash
# Stops the two test Parse Server apps and the private PostgreSQL cluster
# that start.sh started. Exits 0 when nothing is running. The cluster's data
# directory is kept, and start.sh recreates the databases.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=env.sh
. "$script_dir/env.sh"

pg_bin=/usr/lib/postgresql/15/bin
pg_data="$AGROS_STATE_DIR/pg-data"
stop_timeout_seconds=10

# Stops the process in a pid file only if it still runs this directory's
# server.js, so a pid reused by an unrelated process is left alone.
stop_parse_app() {
  local app="$1"
  local pid_file="$AGROS_STATE_DIR/parse-$app.pid"
  local pid cmdline cwd waited=0

  [ -f "$pid_file" ] || return 0
  pid="$(cat "$pid_file")"
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
  cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
  if [[ "$cmdline" != *"server.js $app"* || "$cwd" != "$script_dir" ]]; then
    rm -f "$pid_file"
    return 0
  fi

  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((stop_timeout_seconds * 10)) ]; then
      echo "stop.sh: Parse Server app $app (pid $pid) did not exit within ${stop_timeout_seconds} s of SIGTERM, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$pid_file"
  echo "stop.sh: stopped Parse Server app $app (pid $pid)"
}

stop_parse_app a
stop_parse_app b

# pg_ctl exits with an error when run as root, like postgres itself.
if [ -f "$pg_data/postmaster.pid" ]; then
  pg_owner="$(stat -c %U "$pg_data")"
  if [ "$(id -u)" -eq 0 ]; then
    pg_ctl=(runuser -u "$pg_owner" -- "$pg_bin/pg_ctl")
  else
    pg_ctl=("$pg_bin/pg_ctl")
  fi
  # pg_ctl status exits 3 when no server runs on this data directory, which
  # also covers a postmaster.pid left behind by a crash.
  if (cd "$AGROS_STATE_DIR" && "${pg_ctl[@]}" status --pgdata="$pg_data" >/dev/null 2>&1); then
    (cd "$AGROS_STATE_DIR" && "${pg_ctl[@]}" stop --pgdata="$pg_data" --mode=fast --wait --timeout=60 >/dev/null)
    echo "stop.sh: stopped PostgreSQL ($pg_data)"
  fi
fi
