#!/usr/bin/env bash
# demo.sh — `make demo`: three whoami instances on 127.0.0.1:3001-3003
# (HOSTNAME=scaling-web-1..3), each shown answering /api/instance.
#
#   scripts/demo.sh          (re)start the three instances
#   scripts/demo.sh stop     stop them
#
# The instances run detached; their pids are kept in build/demo/pids and
# their output in build/demo/scaling-web-N.log. Starting again first stops the
# instances this script started before (by those pids, nothing else).
# DEMO_DIR (default build/demo), DEMO_PORTS (default "3001 3002 3003") and
# WHOAMI_BIN (default examples/whoami/whoami) change those choices.
set -euo pipefail

cd "$(dirname "$0")/.."
DIR=${DEMO_DIR:-build/demo}
PIDS=$DIR/pids
WHOAMI=${WHOAMI_BIN:-examples/whoami/whoami}
read -r -a PORTS <<<"${DEMO_PORTS:-3001 3002 3003}"
if [ ${#PORTS[@]} -ne 3 ]; then
    echo "demo.sh: DEMO_PORTS must name three ports, not '${DEMO_PORTS:-}'" >&2
    exit 2
fi

stop_earlier() {
    [ -f "$PIDS" ] || return 0
    local pid cmd
    while read -r pid; do
        [ -n "$pid" ] || continue
        # Only a process that is still our whoami: a recycled pid is left alone.
        cmd=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
        if [ -n "$cmd" ] && [ "$(basename "$cmd")" = "$(basename "$WHOAMI")" ]; then
            kill -TERM "$pid" 2>/dev/null || true
            # Gone, or a zombie waiting for its reaper: /proc/PID/exe is unreadable.
            for _ in $(seq 100); do
                readlink "/proc/$pid/exe" >/dev/null 2>&1 || break
                sleep 0.05
            done
        fi
    done <"$PIDS"
    rm -f "$PIDS"
}

# GET /api/instance with bash alone (no curl needed for the demo): the body.
get_instance() {
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /api/instance HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
        resp=$(cat <&3) || exit 1
        case "$resp" in "HTTP/1.1 200 "*) ;; *) exit 1 ;; esac
        printf "%s\n" "${resp#*$'"'"'\r\n\r\n'"'"'}"
    ' get "$1" 2>/dev/null
}

if [ "${1:-}" = stop ]; then
    stop_earlier
    echo "demo stopped"
    exit 0
elif [ $# -gt 0 ]; then
    echo "Usage: scripts/demo.sh [stop]" >&2
    exit 2
fi

if [ ! -x "$WHOAMI" ]; then
    echo "demo.sh: $WHOAMI is not built (run make)" >&2
    exit 1
fi

mkdir -p "$DIR"
stop_earlier

# Every port is checked before anything starts: on a conflict nothing runs.
for port in "${PORTS[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "demo.sh: port $port is already in use by another program; nothing started" >&2
        exit 1
    fi
done
for i in 1 2 3; do
    port=${PORTS[$((i - 1))]}
    PORT=$port HOSTNAME=scaling-web-$i setsid "$WHOAMI" </dev/null >"$DIR/scaling-web-$i.log" 2>&1 &
    echo $! >>"$PIDS"
done

echo "three instances of examples/whoami (pids in $PIDS):"
for i in 1 2 3; do
    port=${PORTS[$((i - 1))]}
    ok=0
    for _ in $(seq 100); do
        if body=$(get_instance "$port") && [ -n "$body" ]; then
            ok=1
            break
        fi
        sleep 0.05
    done
    if [ $ok -ne 1 ]; then
        echo "demo.sh: scaling-web-$i did not answer on port $port; see $DIR/scaling-web-$i.log" >&2
        exit 1
    fi
    echo "  http://127.0.0.1:$port/  $body"
done
echo
echo "Open http://127.0.0.1:${PORTS[0]}/ (and ${PORTS[1]}, ${PORTS[2]}) in a browser: each page names its instance."
echo "Stop them with: scripts/demo.sh stop"
