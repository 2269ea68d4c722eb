#!/usr/bin/env bash
# Runs the whole system locally: PostgreSQL with TimescaleDB, Mosquitto, `monitor serve`
# (API, websockets, dashboard) and a simulated fleet. Installs what is missing first.
# Ctrl-C stops everything. Data is kept under .local/run for the next start.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$here/scripts/bootstrap.sh"
exec "$here/.venv/bin/python" "$here/scripts/run_local.py" "$@"
