"""`make demo` (scripts/demo.sh): a real `tako deploy` of examples/whoami —
three replicas behind the load balancer, six answers in round-robin order —
that can run twice, and `stop` (tako down) that leaves no replica behind.
Each test has its own TAKO_HOME and load-balancer port."""
import json
import os
import re
import subprocess

from conftest import ROOT, TAKO, free_port, wait_for

DEMO = os.path.join(ROOT, "scripts", "demo.sh")


def alive(pid):
    """Running (not gone, not a zombie): /proc/PID/exe is readable."""
    try:
        os.readlink("/proc/%d/exe" % pid)
        return True
    except OSError:
        return False


def run_demo(tako, port, *args):
    env = dict(os.environ, TAKO_BIN=TAKO, HTTP_PORT=str(port), **tako.env)
    return subprocess.run([DEMO] + list(args), env=env, capture_output=True, text=True,
                          timeout=180)


def test_demo_deploys_answers_in_order_twice_and_stops(tako):
    port = free_port()
    r = run_demo(tako, port)
    assert r.returncode == 0, r.stdout + r.stderr
    answers = re.findall(r"request \d → (\S+)", r.stdout)
    assert answers == ["scaling-web-%d" % i for i in (1, 2, 3, 1, 2, 3)], r.stdout
    assert re.search(r"^web\s+3/3\s.*running", r.stdout, re.M), r.stdout
    assert "tako down" in r.stdout
    ps = json.loads(tako.run("ps", "--project", "scaling", "--output", "json", check=0).stdout)
    pids = [x["pid"] for x in ps["services"][0]["replicas"]]
    assert len(pids) == 3

    # Again: nothing changed, the same replicas keep serving.
    r = run_demo(tako, port)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing changed" in r.stdout
    assert re.findall(r"request \d → (\S+)", r.stdout)[:3] == [
        "scaling-web-1", "scaling-web-2", "scaling-web-3"]
    ps = json.loads(tako.run("ps", "--project", "scaling", "--output", "json", check=0).stdout)
    assert [x["pid"] for x in ps["services"][0]["replicas"]] == pids

    r = run_demo(tako, port, "stop")
    assert r.returncode == 0, r.stdout + r.stderr
    for pid in pids:
        wait_for(lambda: not alive(pid), timeout=30, what="replica gone")
    assert json.loads(tako.run("ps", "--project", "scaling", "--output", "json",
                               check=0).stdout)["services"] == []


def test_demo_rejects_unknown_arguments(tako):
    r = run_demo(tako, free_port(), "bogus")
    assert r.returncode == 2 and "Usage" in r.stderr
