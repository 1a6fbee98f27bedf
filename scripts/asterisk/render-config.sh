#!/usr/bin/env bash
# Copies the Asterisk configuration in SRC (default: docker/asterisk) to DST with every
# @@NAME@@ placeholder replaced by the environment variable NAME:
#   PORT_1001 PORT_1002 PORT_1003 PORT_2000 PORT_2001 PORT_1004
#                                            phones' UDP ports (default 5081 ... 5086)
#   HEP_PORT                                 HEP capture port on 127.0.0.1 (default 9060)
#   HEP_PASSWORD                             HEP capture password (required)
#   AMI_SECRET                               AMI password of user "bridge" (required)
#   WATCHER_PASSWORD                         SIP digest password of endpoint "watcher", the
#                                            bridge's dialog-state (SUBSCRIBE) source (default:
#                                            random, i.e. nobody can subscribe until it is set)
# Fails (and names it) if a placeholder is left unfilled. Only *.conf files are copied.
# Usage: AMI_SECRET=... HEP_PASSWORD=... bash scripts/asterisk/render-config.sh DST [SRC]
set -euo pipefail
fail() { echo "scripts/asterisk/render-config.sh: $*" >&2; exit 1; }
dst="${1:?usage: render-config.sh DST [SRC]}"
src="${2:-$(cd "$(dirname "$0")/../.." && pwd)/docker/asterisk}"
[ -d "$src" ] || fail "no config folder $src"
: "${PORT_1001:=5081}" "${PORT_1002:=5082}" "${PORT_1003:=5083}" "${PORT_2000:=5084}"
: "${PORT_2001:=5085}" "${PORT_1004:=5086}"
: "${HEP_PORT:=9060}"
[ -n "${AMI_SECRET:-}" ] || fail "set AMI_SECRET"
[ -n "${HEP_PASSWORD:-}" ] || fail "set HEP_PASSWORD"
[ -n "${WATCHER_PASSWORD:-}" ] || WATCHER_PASSWORD="unset-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
case "$WATCHER_PASSWORD" in *[!A-Za-z0-9._~+=-]*) fail "WATCHER_PASSWORD: use letters, digits and ._~+=- only" ;; esac
export PORT_1001 PORT_1002 PORT_1003 PORT_2000 PORT_2001 PORT_1004 HEP_PORT HEP_PASSWORD AMI_SECRET
export WATCHER_PASSWORD
mkdir -p "$dst"
for f in "$src"/*.conf; do
    out="$dst/$(basename "$f")"
    # Replace @@NAME@@ with $NAME when NAME is set; leave it for the check below otherwise.
    perl -pe 's/@@([A-Z0-9_]+)@@/exists $ENV{$1} ? $ENV{$1} : "\@\@$1\@\@"/ge' "$f" >"$out"
done
if left=$(grep -o '@@[A-Z0-9_]*@@' "$dst"/*.conf); then
    fail "unfilled placeholders: $(echo "$left" | sort -u | tr '\n' ' ')"
fi
