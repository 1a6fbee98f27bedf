#!/usr/bin/env bash
# Installs what is needed, then runs the bridge: HTTP on 127.0.0.1:8080, SQLite in ./var/.
# Extra arguments go to `transfer-bridge serve` (e.g. --config bridge.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/transfer-bridge serve "$@"
