#!/usr/bin/env bash
# Stops the Asterisk started by run.sh in ROOT: "core stop now", then SIGTERM, then SIGKILL,
# each after a bounded wait. Quiet when nothing runs. Needs root.
# Usage: bash scripts/asterisk/stop.sh ROOT
set -euo pipefail
ROOT="${1:?usage: stop.sh ROOT}"
PIDFILE="$ROOT/tmp/transfer-bridge-asterisk.pid"
pid=""
[ -f "$PIDFILE" ] && pid=$(cat "$PIDFILE")
if [ -z "$pid" ] && [ -r "$ROOT/var/run/asterisk/asterisk.pid" ]; then
    pid=$(cat "$ROOT/var/run/asterisk/asterisk.pid")
fi
alive() { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
wait_gone() { # wait_gone SECONDS
    local end=$((SECONDS + $1))
    while alive && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
    ! alive
}
timeout 10 chroot --userspec=asterisk:asterisk "$ROOT" asterisk -rx "core stop now" \
    >/dev/null 2>&1 || true
if [ -n "$pid" ] && ! wait_gone 10; then
    echo "scripts/asterisk/stop.sh: 'core stop now' did not stop pid $pid; sending SIGTERM" >&2
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone 5; then
        echo "scripts/asterisk/stop.sh: sending SIGKILL to pid $pid" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone 5 || { echo "scripts/asterisk/stop.sh: pid $pid survives" >&2; exit 1; }
    fi
fi
rm -f "$PIDFILE"
