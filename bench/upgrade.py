#!/usr/bin/env python3
"""bench/upgrade.py — steady wrk keep-alive load while the control plane or
the proxy process is killed, restarted or replaced, side by side with
HAProxy's seamless reload and nginx's binary upgrade; then how long a killed
and restarted backend takes to get traffic again (tako's defaults vs HAProxy
`inter 1s rise 2`).

A benchmark, not a test: it prints a markdown table (also written to
OUT/upgrade-latest.md) and never fails on a number.

    python3 bench/upgrade.py
    DURATION=12 EVENT_AT=4 CONNS=16 python3 bench/upgrade.py

Per scenario: `wrk -t1 -cCONNS -dDURATION` keep-alive against the proxy, the
event at EVENT_AT seconds. "failed" = wrk's socket errors (connect, read,
write, timeout) plus non-2xx answers; "worst second" = the lowest count of
responses in one whole wall-clock second, as a share of the median second.

Every process started here is in its own session and is stopped by its pid
(or process group) at the end, also on error. Everything listens on
127.0.0.1 only.
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = int(os.environ.get("DURATION", "12"))
EVENT_AT = float(os.environ.get("EVENT_AT", "4"))
CONNS = int(os.environ.get("CONNS", "16"))
TAKO_BIN = os.path.abspath(os.environ.get("TAKO_BIN", os.path.join(ROOT, "tako")))
WHOAMI_BIN = os.path.abspath(os.environ.get("WHOAMI_BIN",
                                            os.path.join(ROOT, "examples/whoami/whoami")))
OUT = os.environ.get("OUT", os.path.join(ROOT, "bench/out"))
BACK_ROUNDS = int(os.environ.get("BACK_ROUNDS", "3"))

LUA = r"""
local cur, n, f = nil, 0, nil
response = function(status, headers, body)
  local s = os.time()
  if s ~= cur then
    if cur then f:write(cur, " ", n, "\n"); f:flush() end
    if not f then f = io.open(os.getenv("WRK_SECONDS"), "w") end
    cur, n = s, 0
  end
  n = n + 1
end
done = function(summary, latency, requests)
end
"""

procs = []  # (Popen, kill by group)
NGINX_MASTERS = []  # daemonized nginx masters, stopped by pid at the end


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def start(argv, log, env=None, cwd=None):
    f = open(log, "ab")
    p = subprocess.Popen(argv, stdout=f, stderr=f, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                         start_new_session=True)
    procs.append(p)
    return p


def kill_pid(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pid, timeout=30):
    end = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.02)


def run_wrk(port, d, event):
    """wrk under load; event() runs at EVENT_AT. Returns (ok, failed, worst%, seconds)."""
    secs = os.path.join(d, "seconds.txt")
    lua = os.path.join(d, "persec.lua")
    open(lua, "w").write(LUA)
    env = dict(os.environ, WRK_SECONDS=secs)
    w = subprocess.Popen(["timeout", str(DURATION + 30), "wrk", "-t1", "-c%d" % CONNS,
                          "-d%ds" % DURATION, "-s", lua, "http://127.0.0.1:%d/api/instance" % port],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    time.sleep(EVENT_AT)
    t0 = time.monotonic()
    note = event() or ""
    took = time.monotonic() - t0
    out, _ = w.communicate()
    open(os.path.join(d, "wrk.txt"), "w").write(out)
    m = re.search(r"(\d+) requests in", out)
    total = int(m.group(1)) if m else 0
    failed = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        failed += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        failed += int(m.group(1))
    counts = {}
    if os.path.exists(secs):
        for line in open(secs):
            s, n = line.split()
            counts[int(s)] = int(n)
    worst = None
    if len(counts) >= 3:
        keys = sorted(counts)
        full = [counts.get(s, 0) for s in range(keys[0] + 1, keys[-1] + 1)]  # first is partial
        med = statistics.median(full)
        worst = 100.0 * min(full) / med if med else 0.0
    return total, failed, worst, took, note


def backends(d, n=3):
    ports = [free_port() for _ in range(n)]
    ps = []
    for i, p in enumerate(ports):
        env = dict(os.environ, PORT=str(p), HOSTNAME="bench-%d" % (i + 1))
        ps.append(start([WHOAMI_BIN], os.path.join(d, "backend%d.log" % i), env=env))
    for p in ports:
        wait_port(p)
    return ports, ps


# ---- tako: takod + data plane ----

TAKO_YAML = """project:
  name: bench
environments:
  local:
    services:
      web:
        command: {whoami}
        port: 3000
        replicas: 3
        proxy:
          port: {port}
"""


class TakoSetup:
    def __init__(self, d):
        self.d = d
        self.home = tempfile.mkdtemp(prefix="tako-bench-")
        self.bin = os.path.join(d, "bin", "tako")
        os.makedirs(os.path.dirname(self.bin), exist_ok=True)
        shutil.copy(TAKO_BIN, self.bin)
        self.env = dict(os.environ, TAKO_HOME=self.home, NO_COLOR="1")
        self.port = free_port()
        self.proj = os.path.join(d, "project")
        os.makedirs(self.proj, exist_ok=True)
        open(os.path.join(self.proj, "tako.yaml"), "w").write(
            TAKO_YAML.format(whoami=WHOAMI_BIN, port=self.port))
        r = subprocess.run([self.bin, "deploy"], cwd=self.proj, env=self.env, capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("tako deploy failed: " + r.stdout + r.stderr)
        wait_port(self.port)

    def pid(self, name):
        try:
            return int(open(os.path.join(self.home, name + ".pid")).read())
        except (OSError, ValueError):
            return 0

    def tako(self, *args):
        return subprocess.run([self.bin] + list(args), cwd=self.proj, env=self.env,
                              capture_output=True, text=True, timeout=60)

    def foreground_takod(self):
        start([self.bin, "daemon", "--foreground"], os.path.join(self.d, "takod-fg.log"),
              env=self.env)

    def close(self):
        subprocess.run([self.bin, "down"], cwd=self.proj, env=self.env, capture_output=True,
                       timeout=60)
        for name in ("takod", "dataplane"):
            p = self.pid(name)
            if p:
                kill_pid(p)
        shutil.rmtree(self.home, ignore_errors=True)


def tako_kill9_takod(t):
    old = t.pid("takod")
    kill_pid(old)
    wait_gone(old)
    time.sleep(1.0)  # a second without any takod
    t.tako("daemon")  # started again (as the CLI's autostart or systemd would)
    return "takod down 1 s, then started again"


def tako_new_binary(t):
    new = t.bin + ".new"
    shutil.copy(TAKO_BIN, new)
    with open(new, "ab") as f:
        f.write(b"\0bench build %d\0" % time.time_ns())
    os.rename(new, t.bin)
    old, olddp = t.pid("takod"), t.pid("dataplane")
    kill_pid(old, signal.SIGTERM)  # systemctl restart tako: KillMode=process
    wait_gone(old)
    t.foreground_takod()
    end = time.monotonic() + 20
    while (t.pid("dataplane") in (0, olddp)) and time.monotonic() < end:
        time.sleep(0.02)
    v = {}
    while "dataplane" not in v and time.monotonic() < end:
        v = json.loads(t.tako("version", "--output", "json").stdout or "{}")
        time.sleep(0.05)
    return "data plane now build %s" % v.get("dataplane", {}).get("build", "?")


def tako_takeover(t):
    old = t.pid("dataplane")
    start([t.bin, "dataplane", "--takeover"], os.path.join(t.d, "takeover.log"), env=t.env)
    end = time.monotonic() + 20
    while t.pid("dataplane") in (0, old) and time.monotonic() < end:
        time.sleep(0.01)
    return "old pid %d → new pid %d" % (old, t.pid("dataplane"))


def tako_kill9_dataplane(t):
    old = t.pid("dataplane")
    t0 = time.monotonic()
    kill_pid(old)
    end = time.monotonic() + 20
    while t.pid("dataplane") in (0, old) and time.monotonic() < end:
        time.sleep(0.005)
    return "back after %.0f ms" % ((time.monotonic() - t0) * 1000)


# ---- HAProxy and nginx ----

def haproxy_cfg(path, port, bports, sock, extra=""):
    srv = "\n".join("    server b%d 127.0.0.1:%d check%s" % (i + 1, p, extra)
                    for i, p in enumerate(bports))
    open(path, "w").write("""global
    nbthread 1
    maxconn 8000
    stats socket {sock} mode 600 level admin expose-fd listeners
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
    option httpchk GET /health
{srv}
""".format(sock=sock, port=port, srv=srv))


def haproxy_reload(d, cfg, sock, holder):
    old = holder[0]
    holder[0] = start(["haproxy", "-f", cfg, "-x", sock, "-sf", str(old.pid)],
                      os.path.join(d, "haproxy2.log"))
    wait_gone(old.pid)
    return "haproxy -x %s -sf %d" % (os.path.basename(sock), old.pid)


def nginx_cfg(path, port, bports, d):
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    ups = "\n".join("        server 127.0.0.1:%d;" % p for p in bports)
    # daemon on: nginx refuses a binary upgrade unless its master's parent
    # is init ("the changing binary signal is ignored").
    open(path, "w").write("""worker_processes 1;
daemon on;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8000; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    upstream be {{
{ups}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""".format(d=d, ups=ups, port=port))


def nginx_upgrade(d):
    """nginx's binary upgrade: USR2 (new master with the inherited sockets),
    WINCH (old workers finish gracefully), QUIT (old master exits)."""
    pidf = os.path.join(d, "nginx.pid")
    old = int(open(pidf).read())
    kill_pid(old, signal.SIGUSR2)
    end = time.monotonic() + 10
    while not os.path.exists(pidf + ".oldbin") and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.2)
    new = int(open(pidf).read())
    NGINX_MASTERS.append(new)
    kill_pid(old, signal.SIGWINCH)
    kill_pid(old, signal.SIGQUIT)
    return "old master %d → new master %d" % (old, new)


# ---- back in rotation after a backend restart ----

def back_after(port, bport, bproc_holder, d, name):
    """Kill backend 3, restart it 5 s later on the same port (long enough for
    both proxies' checks to mark it down: HAProxy needs fall 3 × inter 1s),
    and time until the proxy sends it a request again (fresh connections,
    10 ms apart)."""
    kill_pid(bproc_holder[0].pid)
    wait_gone(bproc_holder[0].pid)
    time.sleep(5.0)
    env = dict(os.environ, PORT=str(bport), HOSTNAME="bench-3")
    bproc_holder[0] = start([WHOAMI_BIN], os.path.join(d, "backend3-again.log"), env=env)
    wait_port(bport)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"GET /api/instance HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                c = s.recv(65536)
                if not c:
                    break
                data += c
            s.close()
            if b"bench-3" in data:
                return (time.monotonic() - t0) * 1000
        except OSError:
            pass
        time.sleep(0.01)
    return None


def main():
    for tool in ("wrk", "haproxy", "nginx"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            print("bench: %s not installed" % tool, file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)
    run = os.path.join(OUT, "upgrade-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    os.makedirs(run)
    rows = []
    try:
        # tako through takod and its data plane
        for name, ev in (("tako (a) kill -9 takod, start it again", tako_kill9_takod),
                         ("tako (b) new binary + systemctl restart sequence", tako_new_binary),
                         ("tako (c) data plane hands its sockets to a new process",
                          tako_takeover),
                         ("tako (d) kill -9 of the data plane (supervised restart)",
                          tako_kill9_dataplane)):
            d = os.path.join(run, "tako-" + name[6])
            os.makedirs(d)
            t = TakoSetup(d)
            try:
                time.sleep(0.5)
                rows.append((name,) + run_wrk(t.port, d, lambda: ev(t)))
            finally:
                t.close()
            print("bench: %s done" % name, file=sys.stderr)
        # HAProxy seamless reload
        d = os.path.join(run, "haproxy")
        os.makedirs(d)
        bports, bps = backends(d)
        port = free_port()
        sock = os.path.join(d, "admin.sock")
        cfg = os.path.join(d, "haproxy.cfg")
        haproxy_cfg(cfg, port, bports, sock)
        holder = [start(["haproxy", "-f", cfg], os.path.join(d, "haproxy.log"))]
        wait_port(port)
        time.sleep(0.5)
        rows.append(("HAProxy seamless reload (-x, -sf)",)
                    + run_wrk(port, d, lambda: haproxy_reload(d, cfg, sock, holder)))
        kill_pid(holder[0].pid)
        # nginx binary upgrade
        d = os.path.join(run, "nginx")
        os.makedirs(d)
        port = free_port()
        cfg = os.path.join(d, "nginx.conf")
        nginx_cfg(cfg, port, bports, d)
        # a full path: the binary upgrade re-executes argv[0]
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        subprocess.run([nginx, "-c", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=30)
        NGINX_MASTERS.append(int(open(os.path.join(d, "nginx.pid")).read()))
        wait_port(port)
        time.sleep(0.5)
        rows.append(("nginx binary upgrade (USR2, WINCH, QUIT)",)
                    + run_wrk(port, d, lambda: nginx_upgrade(d)))
        # back in rotation
        back = []
        d = os.path.join(run, "back")
        os.makedirs(d)
        hold = [bps[2]]
        tport = free_port()
        start([TAKO_BIN, "proxy", "--listen", "127.0.0.1:%d" % tport, "--threads", "1",
               "--health-path", "/health"] + [a for p in bports for a in ("--backend", "127.0.0.1:%d" % p)],
              os.path.join(d, "tako-proxy.log"))
        wait_port(tport)
        hport = free_port()
        hcfg = os.path.join(d, "haproxy.cfg")
        haproxy_cfg(hcfg, hport, bports, os.path.join(d, "admin.sock"),
                    extra=" inter 1s rise 2 fall 3")
        start(["haproxy", "-f", hcfg], os.path.join(d, "haproxy.log"))
        wait_port(hport)
        time.sleep(3)
        for _ in range(BACK_ROUNDS):
            back.append(("tako proxy (defaults: interval 2s, 250 ms while down, rise 2)",
                         back_after(tport, bports[2], hold, d, "tako")))
            time.sleep(3)
            back.append(("HAProxy inter 1s rise 2", back_after(hport, bports[2], hold, d,
                                                               "haproxy")))
            time.sleep(3)
    finally:
        for pid in NGINX_MASTERS:  # fast shutdown: the master stops its workers
            kill_pid(pid, signal.SIGTERM)
        for pid in NGINX_MASTERS:
            wait_gone(pid, 10)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            kill_pid(p.pid)
    lines = ["| scenario | requests | failed | worst second (% of median) | event took | note |",
             "|---|---|---|---|---|---|"]
    for name, total, failed, worst, took, note in rows:
        lines.append("| %s | %d | %d | %s | %.2f s | %s |" % (
            name, total, failed, "%.0f %%" % worst if worst is not None else "n/a", took, note))
    lines += ["", "| back in rotation after a backend restart | runs (ms) |", "|---|---|"]
    for who in sorted(set(n for n, _ in back)):
        vals = [v for n, v in back if n == who]
        lines.append("| %s | %s |" % (who, ", ".join("%.0f" % v if v is not None else "never"
                                                    for v in vals)))
    text = "\n".join(lines) + "\n"
    print(text)
    open(os.path.join(OUT, "upgrade-latest.md"), "w").write(text)
    open(os.path.join(run, "table.md"), "w").write(text)


if __name__ == "__main__":
    main()
