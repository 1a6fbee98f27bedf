#!/usr/bin/env bash
# Installs what the real-traffic test rig needs (idempotent, quiet, loud on failure):
#   - Debian packages kamailio (HEP source proxy), sip-tester (sipp) and postgresql (the shared
#     store's server; tests start throwaway clusters of it, never the packaged service), as root
#     via apt-get;
#   - Debian packages linphone-cli (linphone-daemon, liblinphone) and baresip (libre): agent
#     phones that are not PJSIP, for tests/rig/linphone.py and tests/rig/baresip.py;
#   - the pjsua2 wheel (pjsua2-python, PJSIP 2.15.1) into the virtualenv given as the first
#     argument (default: .venv), for user agents written with pjsua2.
# Usage: bash scripts/rig/install.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${1:-.venv}"
PJSUA2="pjsua2-python==2.15.1.post1"

fail() { echo "scripts/rig/install.sh: $*" >&2; exit 1; }

have_kamailio() { command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ]; }
have_sipp() { command -v sipp >/dev/null 2>&1; }
have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_linphone() { command -v linphone-daemon >/dev/null 2>&1; }
have_baresip() { command -v baresip >/dev/null 2>&1; }

need=()
have_kamailio || need+=(kamailio)
have_sipp || need+=(sip-tester)
have_postgres || need+=(postgresql)
have_linphone || need+=(linphone-cli)
have_baresip || need+=(baresip)
if [ "${#need[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fail "need root to apt-get install ${need[*]}"
    command -v apt-get >/dev/null || fail "no apt-get: install ${need[*]} by hand"
    log=$(mktemp)
    # Never start a packaged service during the install (no daemon on 5060 behind our back).
    policy=/usr/sbin/policy-rc.d
    made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    rc=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${need[@]}"
    } >"$log" 2>&1 || rc=$?
    [ -n "$made_policy" ] && rm -f "$policy"
    if [ "$rc" != 0 ]; then
        cat "$log" >&2
        rm -f "$log"
        fail "apt-get install ${need[*]} failed (exit $rc)"
    fi
    rm -f "$log"
fi
have_kamailio || fail "kamailio still missing after install"
have_sipp || fail "sipp still missing after install"
have_postgres || fail "postgresql (initdb) still missing after install"
have_linphone || fail "linphone-daemon (linphone-cli) still missing after install"
have_baresip || fail "baresip still missing after install"
kamailio_bin=$(command -v kamailio || echo /usr/sbin/kamailio)
"$kamailio_bin" -v >/dev/null 2>&1 || fail "kamailio -v failed"
sipp -v >/dev/null 2>&1 || [ "$?" = 99 ] || fail "sipp -v failed"

[ -x "$venv/bin/python" ] || fail "no virtualenv at $venv (create it first: bash scripts/setup.sh test)"
if ! "$venv/bin/python" -c 'import pjsua2' >/dev/null 2>&1; then
    log=$(mktemp)
    if ! "$venv/bin/python" -m pip install -q "$PJSUA2" >"$log" 2>&1; then
        grep -v '^WARNING: Location' "$log" >&2 || true
        rm -f "$log"
        fail "pip install $PJSUA2 into $venv failed (the wheel is for CPython 3.11 on x86-64 Linux)"
    fi
    rm -f "$log"
    "$venv/bin/python" -c 'import pjsua2' || fail "pjsua2 installed but does not import"
fi
