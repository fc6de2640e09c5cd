"""`make demo` (scripts/demo.sh): three whoami instances, each answering as
scaling-web-N; a second run replaces them; `stop` stops them; a busy port
starts nothing. Ports and the pid directory are private to each test.
"""
import os
import signal
import socket
import subprocess

import pytest

from conftest import ROOT, WHOAMI, free_port, http_json, wait_for

DEMO = os.path.join(ROOT, "scripts", "demo.sh")


def alive(pid):
    """Running (not gone, not a zombie): /proc/PID/exe is readable."""
    try:
        os.readlink("/proc/%d/exe" % pid)
        return True
    except OSError:
        return False


@pytest.fixture
def demo(tmp_path):
    ports = []
    while len(ports) < 3:
        p = free_port()
        if p not in ports:
            ports.append(p)
    d = str(tmp_path / "demo")
    env = dict(os.environ, DEMO_DIR=d, DEMO_PORTS=" ".join(map(str, ports)), WHOAMI_BIN=WHOAMI)

    def run(*args):
        return subprocess.run([DEMO] + list(args), env=env, capture_output=True, text=True,
                              timeout=60)

    def pids():
        try:
            with open(os.path.join(d, "pids")) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    run.ports, run.pids, run.dir = ports, pids, d
    started = []
    run.started = started
    yield run
    # Whatever a failed test left running: stopped by the pids it recorded.
    for pid in set(pids()) | set(started):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_demo_starts_three_named_instances_and_stops_them(demo):
    r = demo()
    assert r.returncode == 0, r.stderr
    pids = demo.pids()
    demo.started.extend(pids)
    assert len(pids) == 3
    for i, port in enumerate(demo.ports, 1):
        status, doc = http_json(port, "/api/instance")
        assert status == 200
        assert doc["hostname"] == "scaling-web-%d" % i
        assert doc["port"] == port
        assert doc["pid"] == pids[i - 1]
        assert '"hostname":"scaling-web-%d"' % i in r.stdout
        assert "http://127.0.0.1:%d/" % port in r.stdout
    assert "scripts/demo.sh stop" in r.stdout

    # A second run replaces the earlier instances (and only those).
    r = demo()
    assert r.returncode == 0, r.stderr
    new = demo.pids()
    demo.started.extend(new)
    assert len(new) == 3 and not set(new) & set(pids)
    wait_for(lambda: not any(alive(p) for p in pids), what="earlier instances gone")
    assert [http_json(p, "/api/instance")[1]["pid"] for p in demo.ports] == new

    r = demo("stop")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not any(alive(p) for p in new), what="instances stopped")
    assert demo.pids() == []
    for port in demo.ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_demo_busy_port_starts_nothing(demo):
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", demo.ports[2]))
    busy.listen(1)
    try:
        r = demo()
        assert r.returncode == 1
        assert "port %d is already in use" % demo.ports[2] in r.stderr
        assert demo.pids() == []
        for port in demo.ports[:2]:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        busy.close()


def test_demo_usage_errors(demo):
    r = demo("bogus")
    assert r.returncode == 2 and "Usage" in r.stderr
    env = dict(os.environ, DEMO_PORTS="3001 3002", DEMO_DIR=demo.dir)
    r = subprocess.run([DEMO], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "three ports" in r.stderr
