#!/usr/bin/env bash
# Create the work pools and the deployments of deployments/prefect.yaml on the server in
# PREFECT_API_URL (default: the local one `make server` starts). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:4200/api}"
export GECKO_FACTORY_DIR="${GECKO_FACTORY_DIR:-$PWD}"
PREFECT="${PREFECT:-.venv/bin/prefect}"
for pool in cpu gpu; do
  "$PREFECT" work-pool inspect "$pool" >/dev/null 2>&1 || "$PREFECT" work-pool create "$pool" --type process
done
"$PREFECT" --no-prompt deploy --all --prefect-file deployments/prefect.yaml
echo "deployments on ${PREFECT_API_URL%/api}: fret-refresh (daily 03:00 UTC, pool cpu), train (pool gpu)"
