#!/usr/bin/env bash
# Installs what transfer-bridge needs into ./.venv (idempotent). On a fresh Debian machine run as
# root it first installs Python's venv support from Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "transfer-bridge needs Python 3.11 or newer as $PY" >&2
    exit 1
fi
make_venv() { [ -x .venv/bin/python ] || "$PY" -m venv .venv 2>/dev/null; }
if ! make_venv; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
        make_venv
    else
        echo "could not create .venv: install Python's venv support (python3-venv)" >&2
        exit 1
    fi
fi
stamp=".venv/.installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    target="."
    [ -n "$extras" ] && target=".[$extras]"
    log=$(mktemp)
    if ! .venv/bin/python -m pip install -q -e "$target" >"$log" 2>&1; then
        grep -v '^WARNING: Location' "$log" >&2
        rm -f "$log"
        echo "installing the Python packages failed (see above)" >&2
        exit 1
    fi
    rm -f "$log"
    .venv/bin/python -c 'import desktop_api.app' # fail here, not later, if the install broke
    touch "$stamp"
fi
