#!/usr/bin/env bash
# Starts the test backend on loopback: a private PostgreSQL 15 cluster with
# fresh PostGIS databases, and two Parse Server apps (A and B, see env.sh).
# Anything this setup already runs is stopped first, so a second call restarts
# it with empty databases. Stop it with stop.sh.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
. "$script_dir/env.sh"

pg_bin=/usr/lib/postgresql/15/bin
pg_data="$AGROS_STATE_DIR/pg-data"
pg_socket_dir="$AGROS_STATE_DIR/pg-socket"
pg_log="$AGROS_STATE_DIR/postgres.log"
health_timeout_seconds=60

fail() {
  echo "start.sh: $*" >&2
  exit 1
}

# postgres and pg_ctl exit with an error when run as root, so root runs the
# cluster as the `postgres` OS user that Debian's postgresql-common creates.
if [ "$(id -u)" -eq 0 ]; then
  pg_os_user=postgres
  getent passwd "$pg_os_user" >/dev/null ||
    fail "OS user '$pg_os_user' not found; run scripts/install-deps.sh first"
  as_pg_user() { runuser -u "$pg_os_user" -- "$@"; }
else
  pg_os_user="$(id -un)"
  as_pg_user() { "$@"; }
fi

[ -x "$pg_bin/initdb" ] || fail "$pg_bin/initdb not found; run scripts/install-deps.sh first"
[ -d "$script_dir/node_modules/parse-server" ] ||
  fail "$script_dir/node_modules/parse-server not found; run scripts/install-deps.sh first"
command -v curl >/dev/null || fail "curl not found; install it with apt-get install curl"

# A listener already on one of the ports would respond to the health checks
# in place of the servers started here.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the last lines of each log file given, for a failed start.
print_log_tails() {
  local file
  for file in "$@"; do
    [ -f "$file" ] || continue
    echo "----- last 40 lines of $file -----" >&2
    tail -n 40 "$file" >&2
  done
}

"$script_dir/stop.sh"

for port in "$AGROS_PG_PORT" "$AGROS_PARSE_PORT_A" "$AGROS_PARSE_PORT_B"; do
  if port_in_use "$port"; then
    fail "port 127.0.0.1:$port is already in use by another process; stop it or set AGROS_PG_PORT, AGROS_PARSE_PORT_A or AGROS_PARSE_PORT_B"
  fi
done

# The socket path must fit in sockaddr_un.sun_path (107 bytes on Linux).
socket_path="$pg_socket_dir/.s.PGSQL.$AGROS_PG_PORT"
if [ "${#socket_path}" -gt 107 ]; then
  fail "PostgreSQL socket path $socket_path is longer than 107 bytes; set AGROS_STATE_DIR to a shorter directory"
fi

mkdir -p "$AGROS_STATE_DIR"
# The postgres OS user may be unable to read the caller's working directory.
cd "$AGROS_STATE_DIR"
if ! as_pg_user test -x "$AGROS_STATE_DIR"; then
  fail "OS user '$pg_os_user' cannot enter $AGROS_STATE_DIR (a parent directory is not searchable); set AGROS_STATE_DIR to a directory such as /tmp/agros-sync-run"
fi

# --- PostgreSQL cluster --------------------------------------------------

mkdir -p "$pg_data" "$pg_socket_dir"
chown "$pg_os_user" "$pg_data" "$pg_socket_dir"
chmod 700 "$pg_data"
touch "$pg_log"
chown "$pg_os_user" "$pg_log"

if [ ! -f "$pg_data/PG_VERSION" ]; then
  echo "start.sh: creating PostgreSQL cluster in $pg_data"
  # Trust authentication is acceptable because the cluster listens on
  # 127.0.0.1 and on a socket inside the state directory only.
  as_pg_user "$pg_bin/initdb" --pgdata="$pg_data" --username="$AGROS_PG_USER" \
    --auth-local=trust --auth-host=trust --encoding=UTF8 --locale=C.UTF-8 \
    >"$AGROS_STATE_DIR/initdb.log" 2>&1 ||
    {
      print_log_tails "$AGROS_STATE_DIR/initdb.log"
      fail "initdb failed for $pg_data"
    }
  echo "include_if_exists = 'agros-sync.conf'" >>"$pg_data/postgresql.conf"
fi

# Rewritten on every start so that changed ports or directories take effect.
# The cluster is thrown away after the tests, so durability is switched off
# for speed.
cat >"$pg_data/agros-sync.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $AGROS_PG_PORT
unix_socket_directories = '$pg_socket_dir'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
chown "$pg_os_user" "$pg_data/agros-sync.conf"

if ! as_pg_user "$pg_bin/pg_ctl" start --pgdata="$pg_data" --log="$pg_log" --wait --timeout=60 >/dev/null; then
  print_log_tails "$pg_log"
  fail "PostgreSQL failed to start on 127.0.0.1:$AGROS_PG_PORT"
fi

run_sql() {
  local database="$1"
  shift
  PGOPTIONS='-c client_min_messages=warning' "$pg_bin/psql" --host=127.0.0.1 --port="$AGROS_PG_PORT" --username="$AGROS_PG_USER" \
    --dbname="$database" --no-psqlrc --quiet --set=ON_ERROR_STOP=1 "$@"
}

for database in "$AGROS_PARSE_DATABASE_A" "$AGROS_PARSE_DATABASE_B"; do
  run_sql postgres --command="DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)"
  run_sql postgres --command="CREATE DATABASE \"$database\""
  run_sql "$database" --command="CREATE EXTENSION postgis"
done

# --- Parse Server apps ---------------------------------------------------

# Each app writes its console output to parse-<app>.log and its log files to
# logs-<app>/. Both start empty.
start_parse_app() {
  local app="$1"
  local out_log="$AGROS_STATE_DIR/parse-$app.log"
  rm -rf "$AGROS_STATE_DIR/logs-$app"
  (
    cd "$script_dir"
    exec node server.js "$app" </dev/null >"$out_log" 2>&1
  ) &
  echo $! >"$AGROS_STATE_DIR/parse-$app.pid"
}

start_parse_app a
start_parse_app b

# Waits until GET <url>/health returns {"status":"ok"}, or fails with the
# server's logs once the deadline passes or the process exits.
wait_for_health() {
  local app="$1" url="$2" deadline="$3"
  local pid body
  pid="$(cat "$AGROS_STATE_DIR/parse-$app.pid")"
  while true; do
    body="$(curl --silent --max-time 2 "$url/health" || true)"
    if [ "$(printf '%s' "$body" | tr -d ' \n')" = '{"status":"ok"}' ]; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      print_log_tails "$AGROS_STATE_DIR/parse-$app.log"
      "$script_dir/stop.sh" >&2
      fail "Parse Server app $app (pid $pid) exited before $url/health returned {\"status\":\"ok\"}"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      print_log_tails "$AGROS_STATE_DIR/parse-$app.log"
      "$script_dir/stop.sh" >&2
      fail "timed out after $health_timeout_seconds s waiting for $url/health to return {\"status\":\"ok\"} (last response: ${body:-none})"
    fi
    sleep 0.5
  done
}

deadline=$((SECONDS + health_timeout_seconds))
wait_for_health a "$AGROS_PARSE_URL_A" "$deadline"
wait_for_health b "$AGROS_PARSE_URL_B" "$deadline"

echo "PostgreSQL 15: 127.0.0.1:$AGROS_PG_PORT, databases $AGROS_PARSE_DATABASE_A and $AGROS_PARSE_DATABASE_B, data in $pg_data"
echo "Parse Server A: $AGROS_PARSE_URL_A appId=$AGROS_PARSE_APP_ID_A pid=$(cat "$AGROS_STATE_DIR/parse-a.pid")"
echo "Parse Server B: $AGROS_PARSE_URL_B appId=$AGROS_PARSE_APP_ID_B pid=$(cat "$AGROS_STATE_DIR/parse-b.pid")"
