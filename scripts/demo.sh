#!/usr/bin/env bash
# demo.sh — `make demo`: deploy examples/whoami with tako — three replicas of
# the C whoami service behind tako's round-robin load balancer on
# http://127.0.0.1:8080 — then show `tako ps` and six answers naming
# scaling-web-1, -2, -3, -1, ... It is left running.
#
#   scripts/demo.sh          deploy (again: "nothing changed" when it runs)
#   scripts/demo.sh stop     tako down: drain and stop every replica
#
# takod keeps its state in $TAKO_HOME (default /var/lib/tako as root,
# ~/.local/state/tako otherwise) and is started in the background by tako.
# HTTP_PORT (default 8080) moves the load balancer to another port.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TAKO=${TAKO_BIN:-$ROOT/tako}
EXAMPLE=$ROOT/examples/whoami
PORT=${HTTP_PORT:-8080} # examples/whoami/tako.yaml reads HTTP_PORT too

if [ ! -x "$TAKO" ] || [ ! -x "$EXAMPLE/whoami" ]; then
    echo "demo.sh: build first (make)" >&2
    exit 1
fi

if [ "${1:-}" = stop ]; then
    cd "$EXAMPLE"
    exec "$TAKO" down
elif [ $# -gt 0 ]; then
    echo "Usage: scripts/demo.sh [stop]" >&2
    exit 2
fi

# GET /api/instance with bash alone (no curl needed for the demo): the hostname.
hostname_at() {
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /api/instance HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
        resp=$(cat <&3) || exit 1
        case "$resp" in "HTTP/1.1 200 "*) ;; *) exit 1 ;; esac
        body=${resp#*$'"'"'\r\n\r\n'"'"'}
        h=${body#*\"hostname\":\"}
        printf "%s\n" "${h%%\"*}"
    ' get "$1" 2>/dev/null
}

cd "$EXAMPLE"
echo "== tako deploy   (examples/whoami/tako.yaml: 3 replicas, round_robin, port $PORT)"
"$TAKO" deploy   # ends with the `tako ps` table
echo
echo "== six requests to http://127.0.0.1:$PORT/api/instance"
for i in 1 2 3 4 5 6; do
    h=$(hostname_at "$PORT") || {
        echo "demo.sh: no answer on port $PORT" >&2
        exit 1
    }
    echo "  request $i → $h"
done
echo
echo "It keeps running. Try: curl -s http://127.0.0.1:$PORT/ | grep hostname,"
echo "(cd examples/whoami && ../../tako scale web=5), ../../tako logs, ../../tako stats."
echo "Stop it with: cd examples/whoami && ../../tako down   (or: scripts/demo.sh stop)"
