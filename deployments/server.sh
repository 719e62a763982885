#!/usr/bin/env bash
# A local Prefect server (SQLite under $PREFECT_HOME) and one process worker per work pool, in
# the background; logs and pids under .run/. `deployments/server.sh stop` stops them.
# For production, point the server at PostgreSQL first:
#   export PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://user:pass@host:5432/prefect
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT="${PREFECT:-.venv/bin/prefect}"
PORT="${PREFECT_PORT:-4200}"
mkdir -p .run
if [[ "${1:-start}" == stop ]]; then
  for f in .run/*.pid; do [[ -e "$f" ]] && kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done
  echo "stopped"; exit 0
fi
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_UI_API_URL="$PREFECT_API_URL"  # the UI must call this server's API, whatever the port
export PREFECT_SERVER_ANALYTICS_ENABLED=false
if ! curl -fs "$PREFECT_API_URL/health" >/dev/null; then
  nohup "$PREFECT" server start --host 127.0.0.1 --port "$PORT" > .run/server.log 2>&1 &
  echo $! > .run/server.pid
  for _ in $(seq 120); do curl -fs "$PREFECT_API_URL/health" >/dev/null && break; sleep 1; done
  curl -fs "$PREFECT_API_URL/health" >/dev/null || { echo "server did not start: see .run/server.log"; exit 1; }
fi
for pool in cpu gpu; do
  "$PREFECT" work-pool inspect "$pool" >/dev/null 2>&1 || "$PREFECT" work-pool create "$pool" --type process >/dev/null
  if [[ ! -e ".run/worker-$pool.pid" ]] || ! kill -0 "$(cat ".run/worker-$pool.pid")" 2>/dev/null; then
    GECKO_FACTORY_DIR="$PWD" nohup "$PREFECT" worker start --pool "$pool" > ".run/worker-$pool.log" 2>&1 &
    echo $! > ".run/worker-$pool.pid"
  fi
done
echo "Prefect UI: http://127.0.0.1:$PORT   (API $PREFECT_API_URL; workers for pools cpu and gpu)"
echo "next: make deploy, then: PREFECT_API_URL=$PREFECT_API_URL .venv/bin/prefect deployment run fret-refresh/fret-refresh"
