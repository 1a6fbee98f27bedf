#!/usr/bin/env bash
# Installs what the tests need, then runs the whole suite: lint, types, tests.
# Extra arguments go to pytest (e.g. -k long_poll, or -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest"
pytest "$@"
