#!/usr/bin/env bash
# Starts Asterisk in the chroot ROOT (made by build-root.sh) with the configuration in
# CONFIG_DIR (rendered: no @@NAME@@ placeholders left; see render-config.sh), as its own user,
# in the background. Waits (bounded) until it is fully booted, then prints its pid.
#   ROOT/etc/asterisk is replaced by CONFIG_DIR's files (the packaged samples are kept once in
#   ROOT/etc/asterisk.sample); Asterisk's stdout/stderr go to $ASTERISK_OUT (default
#   ROOT/tmp/asterisk.out), its own log to ROOT/var/log/asterisk/messages.log.
# Env: ASTERISK_START_TIMEOUT seconds (default 60). Needs root.
# Usage: PID=$(bash scripts/asterisk/run.sh ROOT CONFIG_DIR); stop with stop.sh ROOT
set -euo pipefail
fail() { echo "scripts/asterisk/run.sh: $*" >&2; exit 1; }
ROOT="${1:?usage: run.sh ROOT CONFIG_DIR}"
CONF="${2:?usage: run.sh ROOT CONFIG_DIR}"
TIMEOUT="${ASTERISK_START_TIMEOUT:-60}"
OUT="${ASTERISK_OUT:-$ROOT/tmp/asterisk.out}"
PIDFILE="$ROOT/tmp/transfer-bridge-asterisk.pid"

[ "$(id -u)" = 0 ] || fail "needs root (chroot)"
[ -f "$ROOT/.transfer-bridge-ready" ] || fail "$ROOT is not a finished root: run build-root.sh"
[ -d "$CONF" ] || fail "no config folder $CONF"
compgen -G "$CONF/*.conf" >/dev/null || fail "no *.conf in $CONF"
if left=$(grep -o '@@[A-Z0-9_]*@@' "$CONF"/*.conf); then
    fail "unfilled placeholders in $CONF: $(echo "$left" | sort -u | tr '\n' ' ')"
fi
# as_ast CMD...: runs CMD inside the root as the asterisk user (root here cannot read or
# connect to what belongs to another user).
as_ast() { chroot --userspec=asterisk:asterisk "$ROOT" "$@"; }
# alive PID: running and not a zombie (this machine's init reaps exited orphans late, and
# kill -0 succeeds on a zombie).
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

if [ -f "$PIDFILE" ] && alive "$(cat "$PIDFILE")"; then
    fail "Asterisk already runs in $ROOT (pid $(cat "$PIDFILE")): stop.sh $ROOT first"
fi
if as_ast asterisk -rx "core show version" >/dev/null 2>&1; then
    fail "an Asterisk already answers on $ROOT/var/run/asterisk/asterisk.ctl: stop.sh $ROOT first"
fi

mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc" || fail "cannot mount $ROOT/proc"

# Replace the configuration. Take ownership back first: without it root cannot touch files
# the asterisk user owns.
etc="$ROOT/etc/asterisk"
chown -R root:root "$etc"
if [ ! -e "$ROOT/etc/asterisk.sample" ]; then
    cp -a "$etc" "$ROOT/etc/asterisk.sample"
fi
find "$etc" -mindepth 1 -delete
cp "$CONF"/*.conf "$etc/"
chmod 644 "$etc"/*.conf

for d in /var/run/asterisk /var/log/asterisk /var/spool/asterisk /var/lib/asterisk/keys \
    /var/cache/asterisk; do
    mkdir -p "$ROOT$d"
done
chroot "$ROOT" chown -R asterisk:asterisk /etc/asterisk /var/lib/asterisk /var/log/asterisk \
    /var/spool/asterisk /var/run/asterisk /var/cache/asterisk || fail "chown in $ROOT failed"

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
# Never -c when detached: the console spins and floods its output.
setsid chroot "$ROOT" asterisk -f -U asterisk -G asterisk </dev/null >>"$OUT" 2>&1 &
pid=$!
echo "$pid" >"$PIDFILE"

deadline=$((SECONDS + TIMEOUT))
while :; do
    if ! alive "$pid"; then
        tail -n 40 "$OUT" >&2
        fail "Asterisk exited during start-up (output: $OUT)"
    fi
    if timeout 10 chroot --userspec=asterisk:asterisk "$ROOT" \
        asterisk -rx "core waitfullybooted" >/dev/null 2>&1; then
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        tail -n 40 "$OUT" >&2
        kill "$pid" 2>/dev/null || true
        fail "Asterisk not fully booted within ${TIMEOUT}s (output: $OUT)"
    fi
    sleep 0.2
done
echo "$pid"
