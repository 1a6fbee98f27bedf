#!/usr/bin/env bash
# Installs what the tests need, then runs the whole suite: lint, types, tests.
# Extra arguments go to pytest (e.g. -k long_poll, or -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/rig/install.sh .venv          # Kamailio, SIPp and pjsua2 for the real-traffic tests
bash scripts/browser/install.sh            # Debian's Chromium for the desktop page's tests
bash scripts/asterisk/build-root.sh >/dev/null  # Asterisk 22 (sid chroot, built once, cached)
export PATH="$PWD/.venv/bin:$PATH"
export TRANSFER_BRIDGE_RIG_REQUIRED=1      # here a missing rig is a failure, not a skip
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest"
pytest "$@"
