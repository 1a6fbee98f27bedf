#!/usr/bin/env bash
# Builds (or reuses) a Debian sid root file system holding Asterisk 22 (packages asterisk and
# asterisk-modules) for running Asterisk natively with chroot, where there is no Docker engine.
# Idempotent: a finished root (marked by .transfer-bridge-ready) is reused as it is; the only
# work on reuse is mounting /proc when it is not mounted and recreating/chowning the run-time
# folders. Quiet on success (prints only the root's path), loud on failure.
#
# Env:
#   ASTERISK_VERSION_TAG  major version expected in sid (default 22); part of the cache key
#   ASTERISK_ROOT         where the root lives (default
#                         /var/cache/transfer-bridge/asterisk-root-$ASTERISK_VERSION_TAG)
# Needs root. Usage: ROOT=$(bash scripts/asterisk/build-root.sh)
set -euo pipefail

TAG="${ASTERISK_VERSION_TAG:-22}"
ROOT="${ASTERISK_ROOT:-/var/cache/transfer-bridge/asterisk-root-$TAG}"
STAMP="$ROOT/.transfer-bridge-ready"
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false -q)

fail() { echo "scripts/asterisk/build-root.sh: $*" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# run CMD...: runs quietly, shows the output and fails loudly if it fails.
run() {
    if ! "$@" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        fail "failed: $*"
    fi
}

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot, mount)"

mount_proc() {
    if ! mountpoint -q "$ROOT/proc"; then
        mkdir -p "$ROOT/proc"
        run mount -t proc proc "$ROOT/proc"
    fi
}

if [ ! -f "$STAMP" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        run apt-get update -qq
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    fi
    # Build in a side folder and move it into place only when complete, so that an interrupted
    # build never looks like a usable root.
    parent=$(dirname "$ROOT")
    mkdir -p "$parent"
    work="$ROOT.building"
    if [ -d "$work" ]; then
        mountpoint -q "$work/proc" && umount "$work/proc"
        rm -rf "$work"
    fi
    # No mirror argument: debootstrap's default mirror (never write a host name here).
    run debootstrap --variant=minbase --include=ca-certificates sid "$work"
    mkdir -p "$work/proc"
    run mount -t proc proc "$work/proc"
    # Never start services inside the root during the install.
    printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"
    chmod 755 "$work/usr/sbin/policy-rc.d"
    run chroot "$work" apt-get "${APT_OPTS[@]}" update
    run chroot "$work" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y \
        asterisk asterisk-modules
    run chroot "$work" apt-get clean
    version=$(chroot "$work" dpkg-query -W -f '${Version}' asterisk 2>/dev/null) ||
        fail "asterisk not installed in $work"
    # Debian versions look like 1:22.10.1~dfsg+~cs6.15.60671435-1: take the upstream major.
    major=$(printf '%s' "$version" | sed -E 's/^[0-9]+://; s/^([0-9]+).*/\1/')
    if [ "$major" != "$TAG" ]; then
        umount "$work/proc" || true
        fail "sid has asterisk $version, not $TAG.x (set ASTERISK_VERSION_TAG=$major to use it)"
    fi
    echo "$version" >"$work/.asterisk-version"
    umount "$work/proc"
    [ -e "$ROOT" ] && rm -rf "$ROOT"
    mv "$work" "$ROOT"
    date -u +%FT%TZ >"$STAMP"
fi

mount_proc
# Root here cannot read files owned by another user: Asterisk runs as its own user, and its
# folders belong to it. A fresh root has no /var/run/asterisk.
run chroot "$ROOT" mkdir -p /var/run/asterisk /var/log/asterisk /var/spool/asterisk /var/lib/asterisk
run chroot "$ROOT" chown -R asterisk:asterisk /etc/asterisk /var/lib/asterisk /var/log/asterisk \
    /var/spool/asterisk /var/run/asterisk
[ -x "$ROOT/usr/sbin/asterisk" ] || fail "$ROOT/usr/sbin/asterisk missing"
echo "$ROOT"
