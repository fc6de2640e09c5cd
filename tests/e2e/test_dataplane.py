"""The data plane outlives takod: kill -9 and restarts of takod, an upgrade
of the tako binary (the contrib/tako.service sequence), kill -9 of the data
plane itself and its crash loop, and the control protocol's fencing and
versioning. Each under steady keep-alive load that counts failed requests."""
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import ROOT, TAKO, Load, free_port, http, wait_for
from test_deploy import alive, config, pids_of


def dp_pid(tako):
    return int(open(os.path.join(tako.home, "dataplane.pid")).read().strip())


def deploy(tako, port, **kw):
    tako.write("tako.yaml", config(port, free_port(), **kw))
    r = tako.run("deploy", check=0)
    return r


def ps_line(tako):
    return tako.run("ps", check=0).stdout


def events(tako):
    r = subprocess.run(["curl", "-s", "--unix-socket", os.path.join(tako.home, "takod.sock"),
                        "http://takod/v1/events"], capture_output=True, text=True)
    return " ".join(e["kind"] + ": " + e["message"] for e in json.loads(r.stdout)["events"])


def load_progress(load, n):
    """Wait until the load made n more requests (it runs meanwhile)."""
    start = load.ok
    wait_for(lambda: load.ok >= start + n, timeout=60, what="%d more requests" % n)


class DpClient:
    """A raw client of $TAKO_HOME/dataplane.sock speaking the protocol."""

    def __init__(self, home):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(os.path.join(home, "dataplane.sock"))
        self.s.settimeout(10)
        self.buf = b""
        self.seq = 0

    def call(self, **msg):
        self.seq += 1
        msg["id"] = self.seq
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            assert d, "data plane closed the connection"
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        r = json.loads(line)
        assert r["id"] == self.seq
        return r

    def close(self):
        self.s.close()


def test_takod_kill9_under_load_then_back_with_health_kept(tako):
    port = free_port()
    deploy(tako, port)
    pids = pids_of(tako)
    dp = dp_pid(tako)
    with Load(port, clients=8, max_seconds=90) as load:
        load_progress(load, 200)
        old = tako.takod_pid()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not alive(old), timeout=10, what="takod gone")
        # Nobody restarts takod here: the data plane serves on its own.
        load_progress(load, 500)
        assert not os.path.exists("/proc/%d" % tako.takod_pid()) or tako.takod_pid() == old
        # The next command starts takod; it re-attaches and keeps health:
        # its very first answer shows 3/3.
        out = ps_line(tako)
        assert re.search(r"^web\s+3/3\s.*running", out, re.M), out
        assert tako.takod_pid() != old and dp_pid(tako) == dp
        assert pids_of(tako) == pids
        # A deploy right after works (rolling, under the same load).
        tako.write("tako.yaml", open(os.path.join(tako.dir, "tako.yaml")).read()
                   .replace("GREETING: one", "GREETING: two"))
        r = tako.run("deploy", check=0)
        assert "3/3" in r.stdout or "healthy" in r.stdout, r.stdout
        load_progress(load, 200)
        ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    assert ok > 900


def _start_foreground_takod(binary, home, log):
    env = dict(os.environ, TAKO_HOME=home)
    with open(log, "ab") as f:
        p = subprocess.Popen([binary, "daemon", "--foreground"], env=env, stdout=f, stderr=f,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: os.path.exists(os.path.join(home, "takod.pid"))
             and int(open(os.path.join(home, "takod.pid")).read()) == p.pid
             and os.path.exists(os.path.join(home, "takod.sock")), timeout=20,
             what="takod up")
    return p


def _systemctl_restart(binary, home, log):
    """What `systemctl restart tako` does with contrib/tako.service:
    SIGTERM to the main process only (KillMode=process), wait, start
    ExecStart again."""
    pid = int(open(os.path.join(home, "takod.pid")).read())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), timeout=20, what="takod stopped")
    return _start_foreground_takod(binary, home, log)


def test_systemctl_restart_and_binary_upgrade_lose_nothing(tako, tmp_path):
    # tako installed as a file we can replace, like /usr/local/bin/tako.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    binary = str(bindir / "tako")
    shutil.copy(TAKO, binary)
    unit = open(os.path.join(ROOT, "contrib", "tako.service")).read()
    assert "KillMode=process" in unit and "daemon --foreground" in unit
    log = os.path.join(tako.home, "foreground.log")
    _start_foreground_takod(binary, tako.home, log)
    port = free_port()
    tako.write("tako.yaml", config(port, free_port()))
    r = subprocess.run([binary, "deploy"], cwd=tako.dir, env=dict(os.environ, **tako.env),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    dp1 = dp_pid(tako)
    v1 = json.loads(subprocess.run([binary, "version", "--output", "json"], capture_output=True,
                                   text=True, env=dict(os.environ, **tako.env)).stdout)
    with Load(port, clients=8, max_seconds=120) as load:
        load_progress(load, 300)
        # 1. Restart with the same binary: the data plane is untouched.
        _systemctl_restart(binary, tako.home, log)
        load_progress(load, 300)
        assert dp_pid(tako) == dp1
        out = ps_line(tako)
        assert re.search(r"^web\s+3/3\s.*running", out, re.M), out
        # 2. A new build of tako replaces the file (atomically, as a package
        # manager does), then the same restart: the data plane is upgraded
        # in place by handing its sockets to a new process.
        newbin = str(bindir / "tako.new")
        shutil.copy(TAKO, newbin)
        with open(newbin, "ab") as f:
            f.write(b"\0another build\0")
        os.rename(newbin, binary)
        _systemctl_restart(binary, tako.home, log)
        wait_for(lambda: dp_pid(tako) != dp1, timeout=20, what="new data plane")
        wait_for(lambda: not alive(dp1), timeout=30, what="old data plane drained and gone")
        load_progress(load, 300)
        ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    v2 = json.loads(subprocess.run([binary, "version", "--output", "json"], capture_output=True,
                                   text=True, env=dict(os.environ, **tako.env)).stdout)
    assert v2["dataplane"]["pid"] == dp_pid(tako) != v1["dataplane"]["pid"]
    assert v2["dataplane"]["build"] == v2["build"] != v1["dataplane"]["build"]
    text = subprocess.run([binary, "version"], capture_output=True, text=True,
                          env=dict(os.environ, **tako.env)).stdout
    assert "data plane %s (build %s, pid %d)" % (v2["version"], v2["build"], dp_pid(tako)) in text
    ev = subprocess.run([binary, "history"], cwd=tako.dir, capture_output=True,
                        text=True, env=dict(os.environ, **tako.env))
    assert ev.returncode == 0
    r = subprocess.run(["curl", "-s", "--unix-socket", os.path.join(tako.home, "takod.sock"),
                        "http://takod/v1/events?kind=dataplane-upgraded"], capture_output=True,
                       text=True)
    assert "data plane upgraded in place" in r.stdout, r.stdout


def test_dataplane_kill9_is_restarted_and_only_in_flight_fail(tako):
    port = free_port()
    deploy(tako, port)
    clients = 8
    with Load(port, clients=clients, max_seconds=90) as load:
        load_progress(load, 300)
        old = dp_pid(tako)
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda: dp_pid(tako) != old, timeout=20, what="data plane restarted")
        back_ms = (time.monotonic() - t0) * 1000
        load_progress(load, 300)
        ok, failed = load.stop()
    print("data plane back after %.0f ms; %d of %d requests failed" % (back_ms, failed, ok + failed))
    # Only the requests in flight on the killed process may fail: at most
    # one per client connection. New connections queued meanwhile (takod
    # holds the listening sockets) are served by the new process.
    assert failed <= clients, load.errors
    ps = tako.ps_json()
    assert ps["dataplane"]["state"] == "running" and ps["dataplane"]["restarts"] == 1
    assert ps["services"][0]["running"] == 3
    assert "dataplane-restarted" in events(tako)


def test_dataplane_crash_loop_is_reported_not_retried_forever(tako):
    port = free_port()
    deploy(tako, port)
    killed = set()

    def settled():
        st = tako.ps_json()["dataplane"]["state"]
        return st == "crashloop" or (st == "running" and dp_pid(tako) not in killed)

    # Five restarts are allowed within a minute; the sixth death is a loop.
    for _ in range(6):
        pid = dp_pid(tako)
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
        wait_for(settled, timeout=20, what="restarted or given up")
    js = wait_for(lambda: (lambda j: j["dataplane"]["state"] == "crashloop" and j)(tako.ps_json()),
                  timeout=20, what="crash loop reported")
    assert js["dataplane"]["restarts"] == 5
    assert not alive(dp_pid(tako))  # the last one stays down
    out = ps_line(tako)
    assert "data plane: crash loop" in out, out
    assert "dataplane-crashloop" in events(tako)


def test_protocol_socket_mode_versions_and_single_driver(tako):
    port = free_port()
    deploy(tako, port)
    sock = os.path.join(tako.home, "dataplane.sock")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    c = DpClient(tako.home)
    try:
        # A newer peer (speaks up to 4) and this data plane agree on 3; an
        # older one (1: no HTTPS) on 1.
        r = c.call(op="hello", proto=4, min_proto=1, role="observer", pid=os.getpid(),
                   future_field={"x": 1})
        assert r["ok"] and r["proto"] == 3 and r["driver_pid"] == tako.takod_pid()
        r = c.call(op="hello", proto=1, min_proto=1, role="observer", pid=os.getpid())
        assert r["ok"] and r["proto"] == 1
        r = c.call(op="hello", proto=5, min_proto=5, role="observer")
        assert not r["ok"] and "no common protocol version" in r["error"]
        r = c.call(op="some_future_op")
        assert not r["ok"] and r["errno"] == 38  # ENOSYS: the connection stays usable
        # Only the driver changes anything; a second driver is refused.
        r = c.call(op="pool_set", pool=1, backends=[])
        assert not r["ok"] and r["errno"] == 1  # EPERM
        r = c.call(op="hello", proto=1, role="driver", epoch=99, pid=os.getpid())
        assert not r["ok"] and r["errno"] == 16 and "already driven" in r["error"]  # EBUSY
        epoch = c.call(op="status")["epoch"]
    finally:
        c.close()
    # takod gone: a stale driver (older epoch) cannot take over.
    old = tako.takod_pid()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), timeout=10, what="takod gone")
    c = DpClient(tako.home)
    try:
        # The data plane has seen its driver's end close (a separate event
        # from the process's exit, handled on its own loop).
        wait_for(lambda: c.call(op="status")["driver_pid"] == 0, timeout=10,
                 what="the data plane to see takod gone")
        r = c.call(op="hello", proto=1, role="driver", epoch=epoch - 1, pid=os.getpid())
        assert epoch > 1 or not r["ok"]
        if epoch > 1:
            assert r["errno"] == 116  # ESTALE
        # A driver with a newer epoch holds it: a takod starting now is
        # refused rather than driving the same data plane twice.
        r = c.call(op="hello", proto=1, role="driver", epoch=epoch + 1, pid=os.getpid())
        assert r["ok"], r
        r = tako.run("daemon", "--foreground", check=None, timeout=30)
        assert r.returncode != 0 and "already driven" in r.stderr, r.stderr
    finally:
        c.close()
    # Released: takod attaches again, traffic was never interrupted.
    out = ps_line(tako)
    assert re.search(r"^web\s+3/3\s.*running", out, re.M), out


def test_https_survives_handover_and_data_plane_restart(tako, procs, tmp_path):
    """Certificates, the TLS listener and the HTTP→HTTPS redirect cross to a
    successor process and into a restarted data plane: the same certificate
    is served after each, with no new issuance."""
    from test_https import Site
    site = Site(tako, procs, tmp_path)
    r = site.deploy()
    assert r.returncode == 0, r.stdout + r.stderr
    site.wait_cert()
    serial = site.peer_cert()["serialNumber"]
    assert site.get()[0] == 200
    # 1. handover to a new process (what an upgrade does)
    old = dp_pid(tako)
    p = procs.start([TAKO, "dataplane", "--takeover"], name="successor",
                    env=dict(os.environ, **tako.env))
    wait_for(lambda: dp_pid(tako) == p.pid, timeout=20, what="successor serves")
    wait_for(lambda: not alive(old), timeout=30, what="old data plane gone")
    assert site.get()[0] == 200 and site.peer_cert()["serialNumber"] == serial
    st, hdrs, _ = http(site.http_port, "/api/instance", headers={"Host": "scaling.test"})
    assert st == 308 and hdrs.get("location", "").startswith("https://scaling.test")
    # 2. kill -9: takod replays the certificate into the new data plane
    os.kill(p.pid, signal.SIGKILL)
    wait_for(lambda: dp_pid(tako) not in (0, p.pid) and tako.ps_json()["dataplane"]["state"]
             == "running", timeout=20, what="data plane restarted")
    assert site.get()[0] == 200 and site.peer_cert()["serialNumber"] == serial
    assert len([c for c in site.certs() if c["state"] == "valid"]) == 1
