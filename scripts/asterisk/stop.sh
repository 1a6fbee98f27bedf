#!/usr/bin/env bash
# Stops the Asterisk started by run.sh in ROOT, in under 2 s: "core stop now" (a clean stop takes
# 0.5-0.8 s here), then SIGKILL if it is still there after STOP_GRACE seconds (default 1.2). The
# configuration is thrown away with every run, so a killed Asterisk loses nothing; SIGKILL also
# ends a wedged Asterisk (a deadlocked one ignores "core stop now" and SIGTERM).
# Why the old version took ~15 s: an Asterisk that has exited stays a zombie until this machine's
# init (PID 1, not a real init) reaps it, and "kill -0" succeeds on a zombie, so the script waited
# out its 10 s and 5 s grace periods on a process that was already gone. "Alive" here means
# running and not a zombie.
# Quiet when nothing runs. Needs root.
# Usage: bash scripts/asterisk/stop.sh ROOT
set -euo pipefail
ROOT="${1:?usage: stop.sh ROOT}"
GRACE="${STOP_GRACE:-1.2}"
PIDFILE="$ROOT/tmp/transfer-bridge-asterisk.pid"
pid=""
[ -f "$PIDFILE" ] && pid=$(cat "$PIDFILE")
# An Asterisk not started by run.sh (or whose pid file is gone): find it by its root.
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    pid=""
    for p in $(pgrep -x asterisk || true); do
        if [ "$(readlink "/proc/$p/root" 2>/dev/null)" = "$(readlink -f "$ROOT")" ]; then
            pid=$p
            break
        fi
    done
fi
alive() { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; }
wait_gone() { # wait_gone SECONDS (fractions allowed)
    local deadline_ns=$(( $(date +%s%N) + $(awk -v s="$1" 'BEGIN { printf "%d", s * 1e9 }') ))
    while alive && [ "$(date +%s%N)" -lt "$deadline_ns" ]; do sleep 0.05; done
    ! alive
}
if alive; then
    timeout 1 chroot --userspec=asterisk:asterisk "$ROOT" asterisk -rx "core stop now" \
        >/dev/null 2>&1 || true
    if ! wait_gone "$GRACE"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone 3 || { echo "scripts/asterisk/stop.sh: pid $pid survives SIGKILL" >&2; exit 1; }
    fi
fi
rm -f "$PIDFILE"
