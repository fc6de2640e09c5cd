"""One replica limit per service (CFG_MAX_REPLICAS = 1000), honoured by
validation, the reconciler's pool, `tako scale` and change detection.

The deploy at the limit starts 1,000 real whoami processes (each under its
own supervisor) and checks that every one of them answers through the
balancer; it is marked slow. Its measured cost is in bench/replicas.py.
"""
import os
import re

import pytest

from conftest import WHOAMI, free_port, http_json, wait_for

LIMIT = 1000


def config(port, replicas):
    # Health checks every 2 s: 1,000 backends checked every 300 ms would be
    # 3,300 checks a second on a shared machine.
    return f"""project:
  name: big
environments:
  local:
    http: {free_port()}
    services:
      web:
        command: {WHOAMI}
        port: 3000
        replicas: {replicas}
        proxy:
          port: {port}
        healthCheck:
          path: /health
          interval: 2s
          timeout: 1s
"""


def test_one_more_than_the_limit_is_refused_at_file_line_col(tako):
    tako.write("tako.yaml", config(free_port(), LIMIT + 1))
    for cmd in ("validate", "deploy"):
        r = tako.run(cmd)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        out = r.stdout + r.stderr
        # replicas: is on line 10, its value at column 19.
        assert re.search(r"tako\.yaml:10:19: environments\.local\.services\.web\.replicas: "
                         r"expected an integer from 0 to 1000, got \"1001\"", out), out
    # Nothing was started.
    assert not os.path.exists(os.path.join(tako.home, "replicas"))


@pytest.mark.slow
def test_deploy_at_the_limit_every_replica_answers_and_scale_stays_within_it(tako):
    port = free_port()
    tako.write("tako.yaml", config(port, LIMIT))
    r = tako.run("deploy", timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    svc = tako.ps_json()["services"][0]
    assert svc["running"] == LIMIT and svc["desired"] == LIMIT

    # Round robin over 1,000 backends: 1,000 requests reach each exactly once.
    seen = {}
    for _ in range(LIMIT):
        st, body = http_json(port, "/api/instance")
        assert st == 200
        seen[body["hostname"]] = seen.get(body["hostname"], 0) + 1
    assert sorted(seen) == sorted("big-web-%d" % i for i in range(1, LIMIT + 1))
    assert set(seen.values()) == {1}

    # Just under the limit converges: the highest-numbered replica goes.
    r = tako.run("scale", "web=%d" % (LIMIT - 1), timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    svc = tako.ps_json()["services"][0]
    names = {x["name"] for x in svc["replicas"]}
    assert svc["running"] == LIMIT - 1 and svc["desired"] == LIMIT - 1
    assert "big-web-%d" % LIMIT not in names and "big-web-%d" % (LIMIT - 1) in names

    # One more than the limit is refused by takod, naming the limit, and
    # changes nothing.
    r = tako.run("scale", "web=%d" % (LIMIT + 1))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "web: replicas must be an integer from 0 to 1000 (the limit per service)" in (
        r.stdout + r.stderr)
    svc = tako.ps_json()["services"][0]
    assert svc["desired"] == LIMIT - 1 and svc["running"] == LIMIT - 1

    # And back to the limit: scale honours it as the pool does.
    r = tako.run("scale", "web=%d" % LIMIT, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    wait_for(lambda: tako.ps_json()["services"][0]["running"] == LIMIT, timeout=60,
             what="back at the limit")
