#!/usr/bin/env bash
# Runs every check: format, lint, types, the dependency contracts, and the test suite
# (unit tests without I/O; integration and end-to-end tests against real servers that
# the fixtures start from their binaries). Installs what is missing first.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash scripts/bootstrap.sh
bin=.venv/bin
echo "== ruff format --check"; "$bin/ruff" format --check .
echo "== ruff check"; "$bin/ruff" check .
echo "== mypy --strict"; "$bin/mypy"
echo "== import-linter"; "$bin/lint-imports"
echo "== pytest"; "$bin/python" -m pytest "$@"
