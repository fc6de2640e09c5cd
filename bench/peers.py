#!/usr/bin/env python3
"""What the hop between servers costs: one balancer in front of 5 whoami
replicas, all on its own server, against the same balancer when the 5 are
spread over three servers (2 of them local, 3 through the peer listeners of
two other takods on 127.0.0.3 and .4, as tests/e2e/test_peers.py sets up).

Usage (repository root, after make): /usr/bin/python3 bench/peers.py [SECONDS]
(default 5). wrk with 2 threads and 16 keep-alive connections on
/api/instance; prints requests/s and wrk's latency percentiles for each
setup. Everything started is stopped by the pids in each TAKO_HOME at the
end, also on failure.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import kill_takod_tree, run_tako, wait_for  # noqa: E402
import test_peers as tp  # noqa: E402


def base_config(s):
    import json
    r = run_tako(["config", "explain", "local", "-o", "json"], env=s.env, cwd=s.work)
    env = json.loads(r.stdout)
    env = env["environments"][0] if "environments" in env else env
    return {x["name"]: x for x in env["services"]}["web"]


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t2", "-c16", "-d%ds" % seconds, "--latency",
                          "http://127.0.0.1:%d/api/instance" % port],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return rps, lat, int(errs.group(1)) if errs else 0, sock.group(1) if sock else "none"


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    pp = tp.peer_port()
    servers = [tp.Server(n, i, pp) for i, n in enumerate(tp.SERVERS)]
    try:
        for s in servers:
            r = run_tako(["ps"], env=s.env, cwd=s.work)
            assert r.returncode == 0, r.stderr
        a = servers[0]
        cfg = base_config(a)
        # 1. all five on a, no peers
        one = dict(cfg, replicas=5)
        one["proxy"] = dict(cfg["proxy"], port=a.port)
        body = {"project": tp.PROJECT, "env": "local", "http_port": 0,
                "services": [{"name": "web", "config": one, "revision": "0123456789ab",
                              "source": ""}]}
        res = tp.stream_result(tp.api(a.home, "POST", "/v1/deploy", body))
        assert res.get("ok") is True, res
        wait_for(lambda: tp.ps(a.home)["running"] == 5, timeout=60, what="5 ready")
        local = wrk(a.port, seconds)
        # 2. spread: 2 on a, 2 on b, 1 on c
        for s in servers:
            others = [o for o in servers if o is not s]
            res = tp.stream_result(tp.api(s.home, "POST", "/v1/deploy", s.body(others, cfg)))
            assert res.get("ok") is True, res
        wait_for(lambda: tp.all_peers_healthy(servers), timeout=60, what="peers healthy")
        spread = wrk(a.port, seconds)
        for name, (rps, lat, errs, sock) in (("5 local", local), ("2 local + 3 via peers", spread)):
            print("%-24s %8.0f req/s  p50 %s  p90 %s  p99 %s  non-2xx %d  socket errors %s" % (
                name, rps, lat.get("50"), lat.get("90"), lat.get("99"), errs, sock))
    finally:
        for s in servers:
            kill_takod_tree(s.home)
            subprocess.run(["rm", "-rf", s.home, s.work])


if __name__ == "__main__":
    main()
