#!/usr/bin/env python3
"""How long until every container replica has a stats sample (CPU seconds,
memory) after the first /metrics scrape, for N replicas of the Docker runtime.

Usage (repository root, after make; root, Debian's docker.io):
    /usr/bin/python3 bench/docker_stats_sweep.py [N]      (default 20)

A private dockerd (tests/e2e/dockerd.py) and TAKO_HOME, N whoami replicas
built FROM scratch, then /metrics scraped every 0.1 s until every
tako_replica_memory_bytes is non-zero. Prints one line. Everything started
is stopped by PID at the end, also on failure.
"""
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import Tako, free_port, http, kill_takod_tree  # noqa: E402
from dockerd import DockerD  # noqa: E402
import test_docker_runtime as tdr  # noqa: E402


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    d = DockerD()
    home = tempfile.mkdtemp(prefix="tako-home-")
    work = tempfile.mkdtemp(prefix="tako-bench-")
    t = Tako(home, work)
    try:
        d.start()
        d.import_base()
        d.build_whoami_static()
        t.env.update(d.env)
        t.proxy_port, t.http_port, metrics = free_port(), free_port(), free_port()
        tdr.app(t, d)
        t.write("tako.yaml", tdr.config(t.proxy_port, t.http_port, replicas=n,
                                        extra="    metrics: %d\n" % metrics))
        r = t.run("deploy", timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        t0 = time.monotonic()
        while True:
            _, _, body = http(metrics, "/metrics")
            rows = [l for l in body.decode().splitlines()
                    if l.startswith("tako_replica_memory_bytes{")]
            if len(rows) == n and all(float(l.rsplit(" ", 1)[1]) > 0 for l in rows):
                break
            assert time.monotonic() - t0 < 120, "not every replica sampled in 120 s"
            time.sleep(0.1)
        print("N=%d: every replica sampled %.2f s after the first scrape"
              % (n, time.monotonic() - t0))
    finally:
        kill_takod_tree(home)
        d.stop()
        subprocess.run(["rm", "-rf", home, work])


if __name__ == "__main__":
    main()
