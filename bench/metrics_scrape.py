#!/usr/bin/env python3
"""metrics_scrape.py — the cost of one /metrics scrape and one dashboard
state at N replicas: deploys whoami N times over with takod's process
runtime (a private TAKO_HOME), sends requests so every series has data, then
times scrapes from the client side. Usage: bench/metrics_scrape.py [N] [SCRAPES]
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAKO = os.environ.get("TAKO_BIN", os.path.join(ROOT, "tako"))
WHOAMI = os.environ.get("WHOAMI_BIN", os.path.join(ROOT, "examples", "whoami", "whoami"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    scrapes = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    home = tempfile.mkdtemp(prefix="tako-bench-")
    work = tempfile.mkdtemp(prefix="tako-bench-proj-")
    hp, mp = free_port(), free_port()
    with open(os.path.join(work, "tako.yaml"), "w") as f:
        f.write(f"""project:
  name: bench
environments:
  local:
    http: {hp}
    metrics: 127.0.0.1:{mp}
    services:
      web:
        command: {WHOAMI}
        port: 3000
        replicas: {n}
        healthCheck:
          path: /health
          interval: 5s
          timeout: 2s
""")
    env = dict(os.environ, TAKO_HOME=home, NO_COLOR="1")
    try:
        t0 = time.monotonic()
        r = subprocess.run([TAKO, "deploy"], cwd=work, env=env, capture_output=True, text=True,
                           timeout=1800)
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-2000:])
            return 1
        print("deployed %d replicas in %.1f s" % (n, time.monotonic() - t0))
        for _ in range(3 * n):  # every replica answers a few requests
            urllib.request.urlopen("http://127.0.0.1:%d/" % hp, timeout=10).read()
        def cpu_ms(name):
            try:
                pid = int(open(os.path.join(home, name)).read())
                f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
                return (int(f[11]) + int(f[12])) * 1000 // os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError):
                return 0
        c0 = {n: cpu_ms(n) for n in ("takod.pid", "dataplane.pid")}
        time.sleep(10)
        print("idle 10 s: takod %d ms CPU, data plane %d ms CPU" % tuple(
            cpu_ms(n) - c0[n] for n in ("takod.pid", "dataplane.pid")))
        for path, label in (("/metrics", "metrics"), ("/api/state", "state")):
            times, size = [], 0
            for _ in range(scrapes):
                t = time.monotonic()
                body = urllib.request.urlopen("http://127.0.0.1:%d%s" % (mp, path),
                                              timeout=30).read()
                times.append((time.monotonic() - t) * 1000)
                size = len(body)
            times.sort()
            lines = body.count(b"\n") if label == "metrics" else 0
            print("%-8s %d replicas: %d bytes%s; over %d requests: median %.1f ms, p90 %.1f ms, "
                  "max %.1f ms" % (label, n, size, (", %d lines" % lines) if lines else "",
                                   scrapes, times[len(times) // 2], times[int(len(times) * 0.9)],
                                   times[-1]))
    finally:
        try:
            subprocess.run([TAKO, "down"], cwd=work, env=env, capture_output=True, timeout=300)
        except subprocess.TimeoutExpired:
            print("tako down did not finish; stopping takod anyway")
        subprocess.run([TAKO, "daemon", "--stop"], env=env, capture_output=True, timeout=60)
        # the data plane outlives takod by design: stop it by its pid file
        try:
            os.kill(int(open(os.path.join(home, "dataplane.pid")).read()), 15)
        except (OSError, ValueError):
            pass
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
