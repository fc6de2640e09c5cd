#!/usr/bin/env python3
"""bench/docker_runtime.py — the Docker runtime against the process runtime.

    /usr/bin/python3 bench/docker_runtime.py [--idle 50] [--wrk-seconds 5]

Starts a private dockerd (tests/e2e/dockerd.py: own data root, socket,
--bridge=none) and, for each runtime, a private takod; prints a Markdown
table of:

  1. start-to-healthy: wall time of `tako deploy` of 1, 3 and 10 replicas
     (fresh TAKO_HOME, nothing running before, health checks every 250 ms;
     docker: the image exists, so this is create + start + first passing
     health check, not a build);
  2. keep-alive throughput through tako's balancer to 3 replicas
     (wrk -t1 -c32, GET /api/instance), and the docker/process ratio;
  3. takod's CPU time while N replicas sit idle (utime+stime of takod from
     /proc over 20 s; health checks every 2 s run meanwhile).
  Replicas are the static whoami (tests/e2e/dockerd.py builds it) in an
  image FROM scratch, and examples/whoami for processes.

Everything it starts is stopped by PID (takod, replicas by `tako down`,
dockerd by its fixture), also on error. Figures depend on the machine's
load: run it on an otherwise idle host.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import dockerd as dockerd_mod  # noqa: E402

TAKO = os.environ.get("TAKO_BIN", os.path.join(ROOT, "tako"))
WHOAMI = os.environ.get("WHOAMI_BIN", os.path.join(ROOT, "examples", "whoami", "whoami"))


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def yaml(runtime, n, proxy_port, http_port, interval="2s"):
    body = "        runtime: docker\n        image: bench-whoami:1\n" if runtime == "docker" \
        else "        command: %s\n" % WHOAMI
    return f"""project:
  name: bench
environments:
  production:
    http: {http_port}
    services:
      web:
{body}        port: 3000
        replicas: {n}
        proxy:
          port: {proxy_port}
        healthCheck:
          path: /health
          interval: {interval}
          timeout: 200ms
"""


class Tako:
    def __init__(self, env):
        self.home = tempfile.mkdtemp(prefix="tkb-")
        self.dir = tempfile.mkdtemp(prefix="tkbp-")
        self.env = dict(os.environ)
        self.env.update(env)
        self.env["TAKO_HOME"] = self.home
        self.env["NO_COLOR"] = "1"

    def run(self, *args, timeout=600):
        r = subprocess.run([TAKO] + list(args), cwd=self.dir, env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("tako %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r

    def pid(self):
        return int(open(os.path.join(self.home, "takod.pid")).read())

    def close(self):
        try:
            self.run("down", timeout=300)
        except Exception as e:  # noqa: BLE001
            print("down failed:", e, file=sys.stderr)
        try:
            os.kill(self.pid(), 15)
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_ticks(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=50)
    ap.add_argument("--wrk-seconds", type=int, default=5)
    ap.add_argument("--idle-seconds", type=int, default=20)
    a = ap.parse_args()
    d = dockerd_mod.DockerD()
    rows = []
    try:
        d.start()
        d.import_base()
        d.build_whoami_static()
        app = d.app_dir(d.dir)
        d.docker("build", "-t", "bench-whoami:1", app)
        hz = os.sysconf("SC_CLK_TCK")
        results = {}
        for runtime in ("process", "docker"):
            for n in (1, 3, 10):
                t = Tako(d.env)
                try:
                    pp, hp = free_port(), free_port()
                    with open(os.path.join(t.dir, "tako.yaml"), "w") as f:
                        f.write(yaml(runtime, n, pp, hp, interval="250ms"))
                    t.run("ps")  # takod up before timing
                    t0 = time.monotonic()
                    t.run("deploy")
                    results[(runtime, "start", n)] = time.monotonic() - t0
                    if n == 3:
                        w = subprocess.run(["wrk", "-t1", "-c32", "-d%ds" % a.wrk_seconds,
                                            "http://127.0.0.1:%d/api/instance" % pp],
                                           capture_output=True, text=True,
                                           timeout=a.wrk_seconds + 30)
                        m = re.search(r"Requests/sec:\s+([\d.]+)", w.stdout)
                        errs = re.search(r"Non-2xx or 3xx responses: (\d+)", w.stdout)
                        results[(runtime, "rps")] = float(m.group(1)) if m else 0.0
                        results[(runtime, "non2xx")] = int(errs.group(1)) if errs else 0
                finally:
                    t.close()
            t = Tako(d.env)
            try:
                pp, hp = free_port(), free_port()
                with open(os.path.join(t.dir, "tako.yaml"), "w") as f:
                    f.write(yaml(runtime, a.idle, pp, hp))
                t.run("deploy", timeout=900)
                time.sleep(3)  # past the deploy's own work
                pid = t.pid()
                c0, w0 = cpu_ticks(pid), time.monotonic()
                time.sleep(a.idle_seconds)
                c1, w1 = cpu_ticks(pid), time.monotonic()
                results[(runtime, "idle_cpu")] = (c1 - c0) / hz / (w1 - w0) * 100.0
            finally:
                t.close()
        print("| measure | process | docker | docker/process |")
        print("|---|---|---|---|")
        for n in (1, 3, 10):
            p, k = results[("process", "start", n)], results[("docker", "start", n)]
            print("| start-to-healthy, %d replica%s (`tako deploy` wall time) | %.2f s | %.2f s | %.2f |"
                  % (n, "" if n == 1 else "s", p, k, k / p))
        p, k = results[("process", "rps")], results[("docker", "rps")]
        print("| keep-alive req/s through tako to 3 replicas (wrk -t1 -c32 -d%ds) | %.0f | %.0f | %.2f |"
              % (a.wrk_seconds, p, k, k / p if p else 0))
        print("| non-2xx responses in that run | %d | %d | |"
              % (results[("process", "non2xx")], results[("docker", "non2xx")]))
        p, k = results[("process", "idle_cpu")], results[("docker", "idle_cpu")]
        print("| takod CPU with %d idle replicas (%% of one core over %d s) | %.2f %% | %.2f %% | |"
              % (a.idle, a.idle_seconds, p, k))
    finally:
        d.stop()


if __name__ == "__main__":
    main()
