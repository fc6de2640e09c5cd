#!/usr/bin/env bash
# bench/run.sh — tako proxy side by side with HAProxy, nginx and Caddy over the
# same three whoami backends, plus a direct-to-one-backend row; then the memory
# cost of 5,000 idle keep-alive client connections on each proxy.
#
#   make bench                               (ROUNDS=5 DURATION=10)
#   ROUNDS=3 DURATION=5 bench/run.sh         (shorter)
#
# Environment (all optional):
#   ROUNDS=5 DURATION=10   rounds of the interleaved schedule; seconds per wrk run
#   CONNS=64               wrk connections (wrk -t1 -cCONNS)
#   TARGETS="tako haproxy nginx caddy direct"   MODES="keepalive close"
#   IDLE_CONNS=5000        idle connections for the memory test (0 skips it)
#   BENCH_PATH=/api/instance   the URL path requested
#   CPU_CLIENT=0 CPU_SERVERS=1 cores for wrk, and for every proxy + backends
#   TAKO_BIN=./tako WHOAMI_BIN=examples/whoami/whoami TAKO_ARGS="..."  extra proxy flags
#   OUT=bench/out          where latest.md and the raw outputs go
#   PROFILE="tako ..."     after the rounds, perf-record these targets under load
#
# Everything listens on 127.0.0.1 only. Every process started here runs in its
# own session and is stopped by its process group id at the end, also on
# error or Ctrl-C. Each wrk run is capped by timeout(1), so the total time is
# bounded: about ROUNDS × |MODES| × |TARGETS| × (DURATION + 1) seconds, plus
# warm-up and the memory test (under a minute).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
TARGETS=${TARGETS:-"tako haproxy nginx caddy direct"}
MODES=${MODES:-"keepalive close"}
IDLE_CONNS=${IDLE_CONNS:-5000}
BENCH_PATH=${BENCH_PATH:-/api/instance}
CPU_CLIENT=${CPU_CLIENT:-0}
CPU_SERVERS=${CPU_SERVERS:-1}
CPU_BACKENDS=${CPU_BACKENDS:-$CPU_SERVERS}
TAKO_BIN=${TAKO_BIN:-./tako}
WHOAMI_BIN=${WHOAMI_BIN:-examples/whoami/whoami}
TAKO_ARGS=${TAKO_ARGS:-}
OUT=${OUT:-bench/out}
PROFILE=${PROFILE:-}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for v in ROUNDS DURATION CONNS IDLE_CONNS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
[ "$ROUNDS" -ge 1 ] || die "ROUNDS must be at least 1"
[ "$DURATION" -ge 1 ] || die "DURATION must be at least 1"
[ "$DURATION" -le 600 ] || die "DURATION must be at most 600 seconds"
for t in $TARGETS $PROFILE; do
    case $t in tako|haproxy|nginx|caddy|direct) ;; *) die "unknown target '$t' in TARGETS or PROFILE";; esac
done
for m in $MODES; do
    case $m in keepalive|close) ;; *) die "unknown mode '$m' in MODES";; esac
done
command -v wrk >/dev/null || die "wrk not found (scripts/deps.sh test installs it)"
[ -x "$WHOAMI_BIN" ] || die "$WHOAMI_BIN not built (run make)"

# ---- pinning ----------------------------------------------------------------
# wrk gets one core, every server (the proxy under test and the three backends)
# the other; the same for every target, so each proxy competes with the same
# backend load and the client never steals the proxy's core. With fewer than
# two cores nothing is pinned.
NCPU=$(nproc)
PIN_CLIENT=() PIN_SERVERS=()
if [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_CLIENT=(taskset -c "$CPU_CLIENT")
    PIN_SERVERS=(taskset -c "$CPU_SERVERS")
    PIN_DESC="wrk on CPU $CPU_CLIENT; proxy and all backends on CPU $CPU_SERVERS (taskset)"
else
    PIN_DESC="none ($NCPU CPU)"
fi

# ---- processes ----------------------------------------------------------------
TMP=$(mktemp -d /tmp/tako-bench.XXXXXX)
declare -a GROUPS_STARTED=()
declare -A PID=() PORT=()

stop_group() {  # stop_group PGID: TERM the group, KILL it after 3 s
    local g=$1 i
    kill -TERM -- "-$g" 2>/dev/null || return 0
    for i in $(seq 30); do
        kill -0 -- "-$g" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "-$g" 2>/dev/null || true
}

cleanup() {
    local rc=$? g
    trap - EXIT INT TERM
    for g in "${GROUPS_STARTED[@]}"; do
        stop_group "$g"
    done
    wait 2>/dev/null || true
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: run CMD pinned to the server core in a new session (so
# the whole tree, e.g. nginx's workers, shares one process group id = PID).
start() {
    start_on "$CPU_SERVERS" "$@"
}

# start_on CPU NAME CMD...: the same, pinned to CPU.
start_on() {
    local cpu=$1 name=$2 pin=()
    shift 2
    [ ${#PIN_SERVERS[@]} -gt 0 ] && pin=(taskset -c "$cpu")
    setsid "${pin[@]}" "$@" >"$TMP/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
    GROUPS_STARTED+=("$!")
}

stop() {
    local name=$1 g=${PID[$1]:-}
    [ -n "$g" ] || return 0
    stop_group "$g"
    wait "$g" 2>/dev/null || true
    unset "PID[$name]"
}

alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

# wait_port NAME PORT: up to 10 s for a listener; fails early if NAME died.
wait_port() {
    local name=$1 port=$2 i
    for i in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        alive "$name" || return 1
        sleep 0.05
    done
    return 1
}

# free_ports N: N distinct loopback ports that were free a moment ago.
free_ports() {
    "$PY" - "$1" <<'EOF'
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
}

# ---- configuration of each proxy ----------------------------------------------
write_haproxy() {  # write_haproxy FILE PORT
    cat >"$1" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    maxconn 8000
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$2
    default_backend be
backend be
    balance roundrobin
    server b1 127.0.0.1:${BACKEND_PORTS[0]}
    server b2 127.0.0.1:${BACKEND_PORTS[1]}
    server b3 127.0.0.1:${BACKEND_PORTS[2]}
EOF
}

write_nginx() {  # write_nginx FILE PORT DIR
    mkdir -p "$3/tmp"
    cat >"$1" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $3/nginx.pid;
error_log $3/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8000; }
http {
    access_log off;
    client_body_temp_path $3/tmp/body;
    proxy_temp_path $3/tmp/proxy;
    fastcgi_temp_path $3/tmp/fastcgi;
    uwsgi_temp_path $3/tmp/uwsgi;
    scgi_temp_path $3/tmp/scgi;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    upstream be {
        server 127.0.0.1:${BACKEND_PORTS[0]};
        server 127.0.0.1:${BACKEND_PORTS[1]};
        server 127.0.0.1:${BACKEND_PORTS[2]};
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

write_caddy() {  # write_caddy FILE PORT DIR
    mkdir -p "$3/data"
    cat >"$1" <<EOF
{
	admin off
	auto_https off
	storage file_system {
		root $3/data
	}
	log {
		output discard
	}
}
http://127.0.0.1:$2 {
	reverse_proxy 127.0.0.1:${BACKEND_PORTS[0]} 127.0.0.1:${BACKEND_PORTS[1]} 127.0.0.1:${BACKEND_PORTS[2]} {
		lb_policy round_robin
		transport http {
			keepalive_idle_conns_per_host 64
		}
	}
}
EOF
}

# start_target TARGET PORT: start one proxy listening on PORT; 0 when it answers.
start_target() {
    local t=$1 port=$2 d="$TMP/$1-$2"
    mkdir -p "$d"
    case $t in
    tako)
        [ -x "$TAKO_BIN" ] || { echo "not available: $TAKO_BIN not built" >"$TMP/tako.why"; return 1; }
        # shellcheck disable=SC2086
        start tako "$TAKO_BIN" proxy --listen "127.0.0.1:$port" \
            --backend "127.0.0.1:${BACKEND_PORTS[0]}" --backend "127.0.0.1:${BACKEND_PORTS[1]}" \
            --backend "127.0.0.1:${BACKEND_PORTS[2]}" --threads 1 $TAKO_ARGS ;;
    haproxy)
        write_haproxy "$d/haproxy.cfg" "$port"
        start haproxy haproxy -db -f "$d/haproxy.cfg" ;;
    nginx)
        write_nginx "$d/nginx.conf" "$port" "$d"
        start nginx nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" ;;
    caddy)
        write_caddy "$d/Caddyfile" "$port" "$d"
        start caddy env GOMAXPROCS=1 HOME="$d" XDG_DATA_HOME="$d/data" XDG_CONFIG_HOME="$d/data" \
            caddy run --config "$d/Caddyfile" --adapter caddyfile ;;
    direct)
        return 0 ;;
    esac
    if ! wait_port "$t" "$port"; then
        {
            printf 'not available: did not listen'
            [ -s "$TMP/$t.log" ] && printf ' (%s)' "$(tail -n 1 "$TMP/$t.log" | tr -d '|')"
            echo
        } >"$TMP/$t.why"
        stop "$t"
        return 1
    fi
    # One request through it must succeed, or the row would measure errors.
    if ! curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$port$BENCH_PATH" 2>"$TMP/$t.curl"; then
        echo "not available: first request failed ($(head -c 200 "$TMP/$t.curl" | tr -d '|\n'))" >"$TMP/$t.why"
        stop "$t"
        return 1
    fi
}

# ---- run ----------------------------------------------------------------------
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN="$OUT/run-$STAMP"
mkdir -p "$RUN/wrk" "$RUN/mem"

read -r -a BACKEND_PORTS <<<"$(free_ports 3)"
for i in 0 1 2; do
    start_on "$CPU_BACKENDS" "backend$((i + 1))" env PORT="${BACKEND_PORTS[$i]}" HOSTNAME="bench-$((i + 1))" "$WHOAMI_BIN"
done
for i in 0 1 2; do
    wait_port "backend$((i + 1))" "${BACKEND_PORTS[$i]}" || die "whoami backend $((i + 1)) did not start: $(cat "$TMP/backend$((i + 1)).log")"
done
PORT[direct]=${BACKEND_PORTS[0]}

read -r -a PROXY_PORTS <<<"$(free_ports 4)"
AVAILABLE=()
i=0
for t in $TARGETS; do
    if [ "$t" != direct ]; then
        PORT[$t]=${PROXY_PORTS[$i]}
        i=$((i + 1))
    fi
    if start_target "$t" "${PORT[$t]}"; then
        AVAILABLE+=("$t")
    else
        log "$t: $(cat "$TMP/$t.why")"
        cp "$TMP/$t.why" "$RUN/$t.status"
    fi
done
[ ${#AVAILABLE[@]} -gt 0 ] || die "no target could be started"

version_of() {
    case $1 in
    tako) "$TAKO_BIN" --version 2>/dev/null | head -n 1 || true ;;
    haproxy) haproxy -v 2>/dev/null | head -n 1 | awk '{print $3}' ;;
    nginx) nginx -v 2>&1 | sed 's|.*nginx/||' ;;
    caddy) caddy version 2>/dev/null | awk '{print $1}' ;;
    wrk) wrk -v 2>&1 | head -n 1 | awk '{print $2}' ;;
    esac
}
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command: ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS IDLE_CONNS=$IDLE_CONNS bench/run.sh"
    echo "machine: $NCPU CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    dirty=$(git status --porcelain -- src 2>/dev/null | wc -l)
    echo "tako: $(version_of tako), built from commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$([ "$dirty" -gt 0 ] && echo " plus $dirty uncommitted file(s) under src/")"
    echo "versions: HAProxy $(version_of haproxy), nginx $(version_of nginx), Caddy $(version_of caddy), wrk $(version_of wrk)"
    echo "backends: 3 × examples/whoami (GET $BENCH_PATH, ~130-byte JSON body)"
    echo "pinning: $PIN_DESC"
} >"$RUN/facts.txt"

# CPU time (user + system, in clock ticks) of a process tree: the rate of
# req/s depends on what else runs on this shared machine, the CPU spent per
# request much less.
tree_pids() {
    local c
    echo "$1"
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        tree_pids "$c"
    done
}
cpu_ticks() {
    local p s total=0
    for p in $(tree_pids "$1"); do
        s=$(cat /proc/"$p"/stat 2>/dev/null) || continue
        s=${s##*) }
        # shellcheck disable=SC2086
        set -- $s
        total=$((total + ${12} + ${13}))   # utime, stime
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# run_wrk TARGET MODE FILE SECONDS
run_wrk() {
    local t=$1 mode=$2 file=$3 secs=$4
    local hdr=()
    [ "$mode" = close ] && hdr=(-H "Connection: close")
    if ! alive "$t" && [ "$t" != direct ]; then
        echo "target died" >"$file"
        return 0
    fi
    local pid=${PID[$t]:-${PID[backend1]}} c0 c1
    c0=$(cpu_ticks "$pid")
    timeout --foreground -k 5 $((secs + 30)) "${PIN_CLIENT[@]}" wrk -t1 -c"$CONNS" -d"${secs}s" --latency --timeout 5s \
        "${hdr[@]}" "http://127.0.0.1:${PORT[$t]}$BENCH_PATH" >"$file" 2>&1 || echo "wrk failed: $?" >>"$file"
    c1=$(cpu_ticks "$pid")
    echo "Server CPU ticks: $((c1 - c0)) at $CLK_TCK per second" >>"$file"
}

NT=${#AVAILABLE[@]}
NM=$(wc -w <<<"$MODES")
log "targets: ${AVAILABLE[*]}; $ROUNDS rounds × $NM modes × $NT targets × ${DURATION}s ≈ $(( (ROUNDS * NM * NT * (DURATION + 1) + NM * NT * 3) / 60 + 1 )) min"
log "pinning: $PIN_DESC"

for mode in $MODES; do
    for t in "${AVAILABLE[@]}"; do
        mkdir -p "$RUN/wrk/$mode/$t"
        run_wrk "$t" "$mode" "$TMP/warmup.txt" 2   # warm-up, not recorded
    done
done

for r in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        # Rotate the order each round so no target always runs first.
        for k in $(seq 0 $((NT - 1))); do
            t=${AVAILABLE[$(( (k + r - 1) % NT ))]}
            run_wrk "$t" "$mode" "$RUN/wrk/$mode/$t/$r.txt" "$DURATION"
            rps=$(awk '/^Requests\/sec/ {print $2}' "$RUN/wrk/$mode/$t/$r.txt")
            log "round $r/$ROUNDS $mode $t: ${rps:-no result} req/s"
            sleep 1
        done
    done
done

# ---- optional profiles: PROFILE="tako haproxy" -----------------------------------
# perf samples the target's process tree while wrk runs one more DURATION in
# each mode (after the measured rounds, so they are not disturbed).
for t in $PROFILE; do
    if ! alive "$t" || ! command -v perf >/dev/null; then
        log "profile $t: skipped (not running, or no perf)"
        continue
    fi
    for mode in $MODES; do
        pdata="$RUN/$t-$mode.perf.data"
        timeout -k 5 $((DURATION + 30)) perf record -q -g -p "$(tree_pids "${PID[$t]}" | paste -sd,)" \
            -o "$pdata" -- sleep "$DURATION" >/dev/null 2>"$TMP/perf.err" &
        perf_pid=$!
        run_wrk "$t" "$mode" "$RUN/$t-$mode.perf.wrk.txt" "$DURATION"
        wait "$perf_pid" || true
        perf report -i "$pdata" --no-children --stdio --percent-limit 0.8 -g none --sort sym \
            >"$RUN/$t-$mode.perf.txt" 2>/dev/null || true
        log "profile $t $mode: $RUN/$t-$mode.perf.txt (perf report -i $pdata)"
    done
done

# ---- idle connection memory test: a fresh instance of each proxy ---------------
if [ "$IDLE_CONNS" -gt 0 ]; then
    for t in "${AVAILABLE[@]}"; do
        [ "$t" = direct ] && continue
        stop "$t"
    done
    for t in "${AVAILABLE[@]}"; do
        [ "$t" = direct ] && continue
        port=$(free_ports 1)
        PORT[$t]=$port
        if ! start_target "$t" "$port"; then
            echo "{\"error\": \"$(tr -d '"\\' <"$TMP/$t.why")\"}" >"$RUN/mem/$t.json"
            continue
        fi
        if timeout -k 5 120 "$PY" bench/idle_conns.py --port "$port" --pid "${PID[$t]}" \
            --conns "$IDLE_CONNS" --path "$BENCH_PATH" >"$RUN/mem/$t.json" 2>"$TMP/$t.mem.err"; then
            log "idle memory $t: $(cat "$RUN/mem/$t.json")"
        else
            log "idle memory $t failed: $(tail -n 3 "$TMP/$t.mem.err")"
            [ -s "$RUN/mem/$t.json" ] || echo "{\"error\": \"measurement failed\"}" >"$RUN/mem/$t.json"
        fi
        stop "$t"
    done
fi

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/facts.txt"
"$PY" bench/report.py --dir "$RUN" --targets "$TARGETS" --modes "$MODES" >"$RUN/report.md"
cp "$RUN/report.md" "$OUT/latest.md"
cat "$OUT/latest.md"
log "raw outputs in $RUN; table in $OUT/latest.md"
