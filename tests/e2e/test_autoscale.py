"""Autoscaling through the real binary: CPU and request-rate targets drive a
service up to max and back to min, through the zero-downtime path; the
decisions are recorded as events, asserted by count and order (never by
wall-clock thresholds)."""
import json
import re

from conftest import WHOAMI, Load, free_port, http_json, wait_for


def config(port, target):
    return f"""project:
  name: auto
environments:
  local:
    http: {free_port()}
    services:
      web:
        command: {WHOAMI}
        port: 3000
        replicas:
          min: 1
          max: 3
          {target}
          interval: 500ms
          scaleDownStabilization: 3s
        proxy:
          port: {port}
        healthCheck:
          interval: 200ms
          timeout: 200ms
        deploy:
          drainTimeout: 5s
"""


def autoscale_json(tako):
    return json.loads(tako.run("autoscale", "--output", "json", check=0).stdout)["services"][0]


def running(tako):
    s = tako.ps_json()["services"][0]
    return s["running"], s["desired"]


def moves(tako):
    """Changes newest first → oldest first as (from, to)."""
    evs = autoscale_json(tako)["events"]
    out = []
    for e in reversed(evs):
        m = re.match(r"(\d+) → (\d+) replicas", e["message"])
        assert m, e
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def drive(tako, port, path):
    tako.run("deploy", check=0)
    assert running(tako) == (1, 1)
    ps = tako.run("ps", check=0).stdout
    assert re.search(r"^web\s+1/1 \(1–3\)\s.*running", ps, re.M), ps
    with Load(port, path=path, clients=6, max_seconds=120) as load:
        wait_for(lambda: running(tako) == (3, 3), timeout=60, interval=0.3, what="scaled to 3")
        peak_ok = load.ok
    ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    assert ok >= peak_ok > 0
    # Without load it returns to min after the stabilization window.
    wait_for(lambda: running(tako) == (1, 1), timeout=60, interval=0.3, what="back to min")
    m = moves(tako)
    ups = [x for x in m if x[1] > x[0]]
    downs = [x for x in m if x[1] < x[0]]
    assert ups and downs
    assert m.index(ups[-1]) < m.index(downs[0]), m   # every up before the first down
    assert ups[0][0] == 1 and ups[-1][1] == 3
    assert downs[-1][1] == 1
    for a, b in zip(m, m[1:]):
        assert a[1] == b[0], m                       # a chain: each starts where the last ended
    for a, b in downs:
        assert b >= (a + 1) // 2, m                  # at most -50% per step
    last = autoscale_json(tako)["last"]
    assert last["desired"] == 1 and "rule" in last and "inputs" in last
    return m


def test_cpu_target_scales_up_and_back(tako):
    port = free_port()
    tako.write("tako.yaml", config(port, "cpu: 30%"))
    m = drive(tako, port, "/work?ms=20")
    out = tako.run("autoscale", check=0).stdout
    assert "cpu 30%" in out and "changes (newest first)" in out


def test_request_rate_target_scales_up_and_back(tako):
    port = free_port()
    tako.write("tako.yaml", config(port, "requests: 20"))
    drive(tako, port, "/api/instance")
    ev = autoscale_json(tako)["events"]
    assert any("requests" in e["message"] for e in ev)


def test_manual_scale_of_autoscaled_service_is_refused(tako):
    port = free_port()
    tako.write("tako.yaml", config(port, "cpu: 50%"))
    tako.run("deploy", check=0)
    r = tako.run("scale", "web=3")
    assert r.returncode == 2
    assert "autoscaled" in r.stderr and "min" in r.stderr
    st, body = http_json(port, "/api/instance")
    assert st == 200 and body["hostname"] == "auto-web-1"
