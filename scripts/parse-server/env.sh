# Exports the ports, app ids, keys, URLs and state directory of the test
# Parse Server setup. Source it from bash: `. scripts/parse-server/env.sh`.
# Every value below can be overridden by setting the variable before sourcing.

AGROS_REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export AGROS_REPO_DIR

# PID files, logs and the PostgreSQL cluster live here. PostgreSQL runs as the
# `postgres` OS user, which must be able to enter this directory. A checkout
# under a private home directory (/root in CI) is not enterable, so the default
# moves to /tmp there.
if [ -z "${AGROS_STATE_DIR:-}" ]; then
  AGROS_STATE_DIR="$AGROS_REPO_DIR/.run"
  if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 \
    && ! runuser -u postgres -- test -x "$AGROS_REPO_DIR" 2>/dev/null; then
    AGROS_STATE_DIR="/tmp/agros-sync-run"
  fi
fi
export AGROS_STATE_DIR
case "$AGROS_STATE_DIR" in
  /*) ;;
  *) AGROS_STATE_DIR="$PWD/$AGROS_STATE_DIR" ;;
esac

# PostgreSQL 15 cluster, reachable on 127.0.0.1 only. Superuser `postgres`
# with trust authentication.
# Below Linux's ephemeral range (32768-60999), so an outgoing connection's
# socket in TIME-WAIT cannot hold the port when the cluster restarts.
export AGROS_PG_PORT="${AGROS_PG_PORT:-25432}"
export AGROS_PG_USER="${AGROS_PG_USER:-postgres}"

# App A: custom objectIds allowed.
export AGROS_PARSE_PORT_A="${AGROS_PARSE_PORT_A:-1337}"
export AGROS_PARSE_APP_ID_A="${AGROS_PARSE_APP_ID_A:-agros-a}"
export AGROS_PARSE_MASTER_KEY_A="${AGROS_PARSE_MASTER_KEY_A:-test-master-key-a}"
export AGROS_PARSE_REST_KEY_A="${AGROS_PARSE_REST_KEY_A:-test-rest-key-a}"
export AGROS_PARSE_MAINTENANCE_KEY_A="${AGROS_PARSE_MAINTENANCE_KEY_A:-test-maintenance-key-a}"
export AGROS_PARSE_DATABASE_A="${AGROS_PARSE_DATABASE_A:-agros_a}"
export AGROS_PARSE_URL_A="http://127.0.0.1:$AGROS_PARSE_PORT_A/parse"

# App B: rejects custom objectIds, so the server generates them.
export AGROS_PARSE_PORT_B="${AGROS_PARSE_PORT_B:-1338}"
export AGROS_PARSE_APP_ID_B="${AGROS_PARSE_APP_ID_B:-agros-b}"
export AGROS_PARSE_MASTER_KEY_B="${AGROS_PARSE_MASTER_KEY_B:-test-master-key-b}"
export AGROS_PARSE_REST_KEY_B="${AGROS_PARSE_REST_KEY_B:-test-rest-key-b}"
export AGROS_PARSE_MAINTENANCE_KEY_B="${AGROS_PARSE_MAINTENANCE_KEY_B:-test-maintenance-key-b}"
export AGROS_PARSE_DATABASE_B="${AGROS_PARSE_DATABASE_B:-agros_b}"
export AGROS_PARSE_URL_B="http://127.0.0.1:$AGROS_PARSE_PORT_B/parse"
