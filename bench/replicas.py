#!/usr/bin/env python3
"""Deploy time and takod CPU at N replicas of one whoami service.

Usage (repository root, after make): /usr/bin/python3 bench/replicas.py [N ...]
(default: 10 100 1000). For each N: a private TAKO_HOME, `tako deploy` of N
whoami replicas (health check every 2 s), then N requests through the
balancer (round robin: each replica must answer exactly once), then takod's
CPU while idle for 10 s. Prints one line per N. Everything started is
stopped by the pids in TAKO_HOME at the end, also on failure.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import TAKO, WHOAMI, free_port, http_json, kill_takod_tree  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def run(home, work, *args, timeout=900):
    env = dict(os.environ, TAKO_HOME=home, NO_COLOR="1")
    return subprocess.run([TAKO] + list(args), cwd=work, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one(n):
    home = tempfile.mkdtemp(prefix="tako-bench-home-")
    work = tempfile.mkdtemp(prefix="tako-bench-work-")
    port, http_port = free_port(), free_port()
    with open(os.path.join(work, "tako.yaml"), "w") as f:
        f.write(f"""project:
  name: bench
environments:
  local:
    http: {http_port}
    services:
      web:
        command: {WHOAMI}
        port: 3000
        replicas: {n}
        proxy:
          port: {port}
        healthCheck:
          path: /health
          interval: 2s
          timeout: 1s
""")
    try:
        r = run(home, work, "daemon", "--status")  # starts nothing; just warms the binary
        r = run(home, work, "ps")
        pid = int(open(os.path.join(home, "takod.pid")).read())
        # The balancer runs as its own process (the data plane), when it does.
        dpf = os.path.join(home, "dataplane.pid")
        dp = int(open(dpf).read()) if os.path.exists(dpf) else 0
        dcpu = (lambda: cpu_s(dp)) if dp else (lambda: 0.0)
        c0, t0, d0 = cpu_s(pid), time.monotonic(), dcpu()
        r = run(home, work, "deploy")
        t1, c1, d1 = time.monotonic(), cpu_s(pid), dcpu()
        if r.returncode != 0:
            print("N=%d deploy failed: %s %s" % (n, r.stdout[-2000:], r.stderr[-2000:]))
            return
        seen = {}
        for _ in range(n):
            st, body = http_json(port, "/api/instance")
            assert st == 200, st
            seen[body["hostname"]] = seen.get(body["hostname"], 0) + 1
        answered = len(seen)
        exact = all(v == 1 for v in seen.values())
        c2, t2, d2 = cpu_s(pid), time.monotonic(), dcpu()
        time.sleep(10)
        c3, t3, d3 = cpu_s(pid), time.monotonic(), dcpu()
        print("N=%-5d deploy %.1f s, takod CPU during deploy %.1f s (%.0f%% of one core), "
              "data plane %.1f s; %d of %d replicas answered %s; idle: takod %.1f%%, "
              "data plane %.1f%% of one core" % (
                  n, t1 - t0, c1 - c0, 100 * (c1 - c0) / (t1 - t0), d1 - d0, answered, n,
                  "once each" if exact else "(not exactly once each)",
                  100 * (c3 - c2) / (t3 - t2), 100 * (d3 - d2) / (t3 - t2)))
        sys.stdout.flush()
    finally:
        kill_takod_tree(home)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for a in sys.argv[1:] or ["10", "100", "1000"]:
        one(int(a))
