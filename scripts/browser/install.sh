#!/usr/bin/env bash
# Installs what the browser tests need (idempotent, quiet, loud on failure): Debian's Chromium,
# as root via apt-get, when /usr/bin/chromium is missing. Playwright itself comes with the test
# extras (pip install -e .[test]); the tests drive /usr/bin/chromium and never download a
# browser, so `playwright install` is never run.
# Usage: bash scripts/browser/install.sh
set -euo pipefail

fail() { echo "scripts/browser/install.sh: $*" >&2; exit 1; }

if [ ! -x /usr/bin/chromium ]; then
    [ "$(id -u)" = 0 ] || fail "need root to apt-get install chromium"
    command -v apt-get >/dev/null || fail "no apt-get: install Chromium as /usr/bin/chromium by hand"
    log=$(mktemp)
    rc=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                chromium fonts-dejavu-core
    } >"$log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        cat "$log" >&2
        rm -f "$log"
        fail "apt-get install chromium failed (exit $rc)"
    fi
    rm -f "$log"
fi
[ -x /usr/bin/chromium ] || fail "/usr/bin/chromium still missing after install"
/usr/bin/chromium --version 2>/dev/null | grep -q Chromium || fail "/usr/bin/chromium --version failed"
