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
stop() {  # $1: a pid file; INT (what Ctrl-C sends, which prefect handles), KILL after 15 s
  [[ -e "$1" ]] || return 0
  local pid; pid="$(cat "$1")"
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}
if [[ "${1:-start}" == stop ]]; then
  # workers first: a worker whose server is already gone retries instead of exiting
  stop .run/worker-cpu.pid & stop .run/worker-gpu.pid & wait
  stop .run/server.pid
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
