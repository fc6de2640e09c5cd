#!/usr/bin/env bash
# bench/tls.sh — HTTPS side by side: tako proxy --https, HAProxy and nginx
# terminating TLS with the same certificate (EC P-256, self-signed) in front of
# the same three whoami backends, one worker/thread each.
#
#   ROUNDS=3 DURATION=5 bench/tls.sh
#
# Measures, per proxy:
#   keep-alive   wrk -t1 -cCONNS over https (one handshake per connection);
#                also the proxy's own CPU time (user + system, all its
#                processes) per request wrk completed: a count that the
#                machine's other load slows down but does not change
#   close        wrk -t1 -cCONNS -H "Connection: close": a new connection per
#                request. wrk keeps each connection's SSL object and so
#                offers the previous connection's session: the handshake is
#                resumed (PSK + ECDHE) when the server gave a new ticket, as
#                all three do. Also the proxy's CPU per request, since here
#                wrk's own handshake work on its one core usually limits req/s
#   handshakes   openssl s_time -new: full handshakes + one GET per connection,
#                one client connection at a time, for DURATION seconds
#   resumed      openssl s_time -reuse: the same with session resumption
#   idle memory  bench/idle_conns.py --tls: RSS growth per idle TLS connection
# The rows of each round are interleaved (tako, haproxy, nginx, tako, ...).
# Everything listens on 127.0.0.1; every process runs in its own session and
# is stopped by its process group at the end, also on error or Ctrl-C; each
# client run is capped by timeout(1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
IDLE_CONNS=${IDLE_CONNS:-2000}
TARGETS=${TARGETS:-"tako haproxy nginx"}
CPU_CLIENT=${CPU_CLIENT:-0}
CPU_SERVERS=${CPU_SERVERS:-1}
# The backends' CPU (default: the proxies'). CPU_BACKENDS=0 puts them with
# the client, so the proxy has its core to itself and keep-alive req/s is
# the proxy's own capacity rather than proxy + backend.
CPU_BACKENDS=${CPU_BACKENDS:-$CPU_SERVERS}
TAKO_BIN=${TAKO_BIN:-./tako}
WHOAMI_BIN=${WHOAMI_BIN:-examples/whoami/whoami}
OUT=${OUT:-bench/out}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3

die() { echo "bench-tls: $*" >&2; exit 1; }
log() { echo "bench-tls: $*" >&2; }
for v in ROUNDS DURATION CONNS IDLE_CONNS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
[ "$DURATION" -le 600 ] || die "DURATION must be at most 600 seconds"
command -v wrk >/dev/null || die "wrk not found"
[ -x "$TAKO_BIN" ] || die "$TAKO_BIN not built (run make)"

PIN_C=() PIN_S=() PIN_B=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_C=(taskset -c "$CPU_CLIENT")
    PIN_S=(taskset -c "$CPU_SERVERS")
    PIN_B=(taskset -c "$CPU_BACKENDS")
fi

TMP=$(mktemp -d /tmp/tako-bench-tls.XXXXXX)
declare -a GROUPS_STARTED=()
declare -A PID=()

stop_group() {
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
    for g in "${GROUPS_STARTED[@]}"; do stop_group "$g"; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {  # start NAME CMD...
    local name=$1
    shift
    setsid "${PIN_S[@]}" "$@" >"$TMP/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
    GROUPS_STARTED+=("$!")
}
wait_port() {
    local i
    for i in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
read -r -a P <<<"$("$PY" -c '
import socket
ss=[socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
B=("${P[0]}" "${P[1]}" "${P[2]}")
declare -A PORT=([tako]=${P[3]} [haproxy]=${P[4]} [nginx]=${P[5]})

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/key.pem" \
    -out "$TMP/cert.pem" -days 2 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"

for i in 0 1 2; do
    start "whoami$i" "${PIN_B[@]}" env PORT="${B[$i]}" HOSTNAME="w$i" "$WHOAMI_BIN"
    wait_port "${B[$i]}" || die "whoami $i did not start"
done

CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
    ssl-default-bind-ciphers $CIPHERS
    ssl-default-bind-options ssl-min-ver TLSv1.2
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
    bind 127.0.0.1:${PORT[haproxy]} ssl crt $TMP/haproxy.pem alpn http/1.1
    http-request set-header X-Forwarded-Proto https
    default_backend be
backend be
    balance roundrobin
    server b1 127.0.0.1:${B[0]}
    server b2 127.0.0.1:${B[1]}
    server b3 127.0.0.1:${B[2]}
EOF
mkdir -p "$TMP/nginx/tmp"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8000; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers $CIPHERS;
    ssl_session_tickets on;
    upstream be {
        server 127.0.0.1:${B[0]};
        server 127.0.0.1:${B[1]};
        server 127.0.0.1:${B[2]};
        keepalive 64;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Proto https;
        }
    }
}
EOF

for t in $TARGETS; do
    case $t in
    tako) start tako "$TAKO_BIN" proxy --https "127.0.0.1:${PORT[tako]}" --tls-cert "$TMP/cert.pem" \
              --tls-key "$TMP/key.pem" --backend "127.0.0.1:${B[0]}" --backend "127.0.0.1:${B[1]}" \
              --backend "127.0.0.1:${B[2]}" --threads 1 ;;
    haproxy) start haproxy haproxy -db -f "$TMP/haproxy.cfg" ;;
    nginx) start nginx nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" ;;
    *) die "unknown target $t" ;;
    esac
    wait_port "${PORT[$t]}" || die "$t did not start: $(tail -3 "$TMP/$t.log")"
done
for t in $TARGETS; do  # warm-up, and a check that each answers over TLS
    curl -sk --max-time 5 "https://127.0.0.1:${PORT[$t]}/api/instance" >/dev/null \
        || die "$t does not answer over https"
done

mkdir -p "$OUT"
RAW="$OUT/tls-raw.txt"
: >"$RAW"
declare -A KA CL HS RS CPU CCPU KAR CLR
# group_cpu_ticks PGID: user + system clock ticks of every process of the
# group (nginx: master and worker); fields 5, 14, 15 of /proc/PID/stat.
group_cpu_ticks() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$1" '$5 == g {t += $14 + $15} END {print t + 0}'
}
# us_per_request TICKS_BEFORE TICKS_AFTER WRK_OUTPUT: the proxy's CPU time
# between the two counts per request wrk completed, in µs (0 without any).
us_per_request() {
    local n
    n=$(awk '/requests in/ {print $1}' <<<"$3")
    awk -v a="$1" -v b="$2" -v n="${n:-0}" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print 0}'
}
# ratio A B: A / B to 3 decimals, nothing when B is 0
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.3f", a / b}'; }
# s_time_rate PORT -new|-reuse: connections (handshake + one GET each, one at
# a time) per second of wall time, for DURATION seconds.
s_time_rate() {
    local t0 t1 out n
    t0=$(date +%s.%N)
    out=$(timeout -k 5 $((DURATION + 20)) "${PIN_C[@]}" openssl s_time -connect "127.0.0.1:$1" \
          "$2" -time "$DURATION" -www /api/instance 2>&1 || true)
    t1=$(date +%s.%N)
    n=$(awk '/connections in [0-9]+ real seconds/ {print $1}' <<<"$out" | tail -n 1)
    awk -v n="${n:-0}" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}'
}
for r in $(seq "$ROUNDS"); do
    for t in $TARGETS; do
        port=${PORT[$t]}
        c0=$(group_cpu_ticks "${PID[$t]}")
        out=$(timeout -k 5 $((DURATION + 20)) "${PIN_C[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
              "https://127.0.0.1:$port/api/instance" 2>&1 || true)
        ka=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        echo "round $r $t keepalive $ka" >>"$RAW"
        KA[$t]="${KA[$t]:-} ${ka:-0}"
        KAR[$t,$r]=${ka:-0}
        # the proxy's own CPU per request (all its processes), which other
        # load on the machine slows down but does not change
        us=$(us_per_request "$c0" "$(group_cpu_ticks "${PID[$t]}")" "$out")
        echo "round $r $t keepalive_cpu_us $us" >>"$RAW"
        CPU[$t]="${CPU[$t]:-} ${us:-0}"
        c0=$(group_cpu_ticks "${PID[$t]}")
        out=$(timeout -k 5 $((DURATION + 20)) "${PIN_C[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
              -H "Connection: close" "https://127.0.0.1:$port/api/instance" 2>&1 || true)
        cus=$(us_per_request "$c0" "$(group_cpu_ticks "${PID[$t]}")" "$out")
        cl=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        echo "round $r $t close_cpu_us $cus" >>"$RAW"
        CCPU[$t]="${CCPU[$t]:-} ${cus:-0}"
        echo "round $r $t close $cl" >>"$RAW"
        CL[$t]="${CL[$t]:-} ${cl:-0}"
        CLR[$t,$r]=${cl:-0}
        hs=$(s_time_rate "$port" -new)
        echo "round $r $t handshakes $hs" >>"$RAW"
        HS[$t]="${HS[$t]:-} ${hs:-0}"
        rs=$(s_time_rate "$port" -reuse)
        echo "round $r $t resumed $rs" >>"$RAW"
        RS[$t]="${RS[$t]:-} ${rs:-0}"
        log "round $r $t: keep-alive $ka req/s ($us us of proxy CPU each), close $cl req/s ($cus us each), handshakes $hs/s, resumed $rs/s"
    done
done
declare -A MEM
for t in $TARGETS; do
    m=$(timeout -k 5 180 "$PY" bench/idle_conns.py --tls --port "${PORT[$t]}" --pid "${PID[$t]}" \
        --conns "$IDLE_CONNS" 2>/dev/null || true)
    echo "$t idle $m" >>"$RAW"
    MEM[$t]=$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1] or "{}"); print(int(d["bytes_per_conn"]) if "bytes_per_conn" in d and d.get("failed_requests",1)==0 else "-")' "$m")
    log "$t: ${MEM[$t]} bytes per idle TLS connection"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
{
    echo "| proxy | keep-alive req/s | proxy CPU per keep-alive request, µs | Connection: close req/s (a resumed handshake each) | proxy CPU per close request, µs | full handshakes/s, one at a time | resumed, one at a time | bytes per idle TLS connection |"
    echo "|---|---|---|---|---|---|---|---|"
    for t in $TARGETS; do
        printf "| %s | %.0f | %.1f | %.0f | %.0f | %.0f | %.0f | %s |\n" "$t" "$(median <<<"${KA[$t]}")" \
            "$(median <<<"${CPU[$t]}")" "$(median <<<"${CL[$t]}")" "$(median <<<"${CCPU[$t]}")" \
            "$(median <<<"${HS[$t]}")" "$(median <<<"${RS[$t]}")" "${MEM[$t]}"
    done
    # Each round runs the proxies one after the other within a minute, so
    # the machine's load moves them together: the ratio of a round is
    # steadier than the ratio of medians.
    if [[ " $TARGETS " == *" haproxy "* ]]; then
        echo
        echo "| proxy | keep-alive req/s ÷ HAProxy's | Connection: close req/s ÷ HAProxy's |"
        echo "|---|---|---|"
        for t in $TARGETS; do
            [ "$t" = haproxy ] && continue
            kr="" cr=""
            for r in $(seq "$ROUNDS"); do
                kr="$kr $(ratio "${KAR[$t,$r]}" "${KAR[haproxy,$r]}")"
                cr="$cr $(ratio "${CLR[$t,$r]}" "${CLR[haproxy,$r]}")"
            done
            printf "| %s | %.2f (rounds:%s) | %.2f (rounds:%s) |\n" "$t" "$(median <<<"$kr")" "$kr" \
                "$(median <<<"$cr")" "$cr"
        done
    fi
    echo
    echo "Medians of $ROUNDS interleaved rounds (ratios: the median of each round's ratio); wrk -t1 -c$CONNS -d${DURATION}s, openssl s_time -time $DURATION"
    echo "(one connection at a time), $IDLE_CONNS idle connections; $(nproc) CPUs, client pinned to CPU $CPU_CLIENT,"
    echo "proxies to CPU $CPU_SERVERS, backends to CPU $CPU_BACKENDS. HAProxy $(haproxy -v 2>/dev/null | head -n1 | awk '{print $3}'),"
    echo "nginx $(nginx -v 2>&1 | sed 's|.*nginx/||'), $(openssl version | awk '{print $1, $2}'), $(date -u +%Y-%m-%d)."
} | tee "$OUT/tls-latest.md"
