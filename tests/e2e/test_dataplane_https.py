"""HTTPS across the data-plane boundary (protocol 2): the data plane serves
TLS on its own while takod is killed, keeps its certificates, redirect and
HSTS through a handover to a new build, gets them back from takod when it
is itself killed and restarted, and an older data plane (protocol 1) is
refused HTTPS cleanly while plain HTTP keeps serving. Each load is bounded
in requests and time and counts failed requests."""
import http.client as http_client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

from conftest import TAKO, free_port, http, wait_for
from test_dataplane import DpClient, _start_foreground_takod, _systemctl_restart, dp_pid, events
from test_deploy import alive
from test_https import config, make_cert

NAME = "own.test"


class HttpsLoad:
    """N keep-alive HTTPS clients naming NAME (SNI, verification against the
    certificate itself); each reconnects every `reconnect` requests so new
    handshakes keep happening. Bounded by max_seconds and max_requests."""

    def __init__(self, port, cafile, clients=8, reconnect=20, max_seconds=90,
                 max_requests=500_000):
        self.port, self.clients, self.reconnect = port, clients, reconnect
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.ok = self.failed = 0
        self.errors = []
        self.certs = set()
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _conn(self):
        c = http_client.HTTPSConnection(NAME, self.port, context=self.ctx, timeout=20)
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        c.sock = self.ctx.wrap_socket(sock, server_hostname=NAME)
        with self.lock:
            self.certs.add(c.sock.getpeercert(binary_form=True))
        return c

    def _run(self):
        conn, n = None, 0
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if self.ok + self.failed >= self.max_requests:
                    break
            try:
                if conn is None:
                    conn = self._conn()
                conn.request("GET", "/api/instance")
                r = conn.getresponse()
                r.read()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failed += 1
                        self.errors.append("status %d" % r.status)
                n += 1
                if n % self.reconnect == 0 or r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failed += 1
                    self.errors.append("%s %.3f %s" % (threading.current_thread().name,
                                                       time.monotonic(), repr(e)))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(60)
        return self.ok, self.failed

    def progress(self, n):
        start = self.ok
        wait_for(lambda: self.ok >= start + n, timeout=60, what="%d more HTTPS requests" % n)


def site(tako, replicas=3):
    http_port, https_port = free_port(), free_port()
    cert, _ = make_cert(tako.dir, NAME)
    tako.write("tako.yaml", config(http_port, https_port, domains=(NAME,), email=None,
                                   replicas=replicas,
                                   extra_proxy="          hsts: true\n          tls:\n"
                                   "            cert: %s.crt\n            key: %s.key\n"
                                   % (NAME, NAME)))
    return http_port, https_port, cert


def served(https_port, cert):
    """(certificate DER, status, Strict-Transport-Security) on a new connection."""
    ctx = ssl.create_default_context(cafile=cert)
    c = http_client.HTTPSConnection(NAME, https_port, context=ctx, timeout=10)
    sock = socket.create_connection(("127.0.0.1", https_port), timeout=10)
    c.sock = ctx.wrap_socket(sock, server_hostname=NAME)
    try:
        der = c.sock.getpeercert(binary_form=True)
        c.request("GET", "/api/instance")
        r = c.getresponse()
        r.read()
        return der, r.status, r.getheader("strict-transport-security")
    finally:
        c.close()


def try_served(https_port, cert):
    try:
        return served(https_port, cert)
    except (OSError, ssl.SSLError):
        return None


def redirect(http_port):
    st, hdrs, _ = http(http_port, "/api/instance?x=1", headers={"Host": NAME})
    return st, hdrs.get("location")


def deploy_https(tako):
    http_port, https_port, cert = site(tako)
    r = tako.run("deploy", "production", check=0)
    assert r.returncode == 0, r.stdout + r.stderr
    first = wait_for(lambda: try_served(https_port, cert), timeout=20, what="HTTPS served")
    assert first[1] == 200 and first[2] and "max-age=" in first[2], first
    return http_port, https_port, cert, first[0]


def no_key_in_logs(tako):
    for name in ("takod.log", "dataplane.log"):
        p = os.path.join(tako.home, name)
        if os.path.exists(p):
            assert "PRIVATE KEY" not in open(p, errors="replace").read(), name


def test_takod_kill9_under_https_load_zero_failed(tako):
    http_port, https_port, cert, der = deploy_https(tako)
    dp = dp_pid(tako)
    with HttpsLoad(https_port, cert) as load:
        load.progress(200)
        old = tako.takod_pid()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: not alive(old), timeout=10, what="takod gone")
        # nobody restarts takod: the data plane keeps handshaking with the
        # last certificate, redirecting and sending HSTS on its own
        load.progress(300)
        assert redirect(http_port) == (308, "https://%s:%d/api/instance?x=1" % (NAME, https_port))
        again = served(https_port, cert)
        assert again[0] == der and again[1] == 200 and again[2], again
        # takod comes back (CLI autostart), re-attaches, installs the same
        # certificate again: nothing changes for clients
        out = tako.run("ps", check=0).stdout
        assert re.search(r"^web\s+3/3\s", out, re.M), out
        assert tako.takod_pid() != old and dp_pid(tako) == dp
        load.progress(200)
        ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    assert load.certs == {der}
    out = tako.run("certs", "--project", "scaling", check=0).stdout
    assert re.search(r"own\.test\s+web\s+file\s+valid", out), out
    print("takod kill -9 under HTTPS load: %d requests, %d failed" % (ok, failed))
    no_key_in_logs(tako)


def test_dataplane_handover_to_new_build_keeps_https(tako, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    binary = str(bindir / "tako")
    shutil.copy(TAKO, binary)
    log = os.path.join(tako.home, "foreground.log")
    _start_foreground_takod(binary, tako.home, log)
    http_port, https_port, cert = site(tako)
    r = subprocess.run([binary, "deploy", "production"], cwd=tako.dir,
                       env=dict(os.environ, **tako.env), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    first = wait_for(lambda: try_served(https_port, cert), timeout=20, what="HTTPS served")
    dp1 = dp_pid(tako)
    with HttpsLoad(https_port, cert) as load:
        load.progress(200)
        # a new build replaces the file, then `systemctl restart tako`
        newbin = str(bindir / "tako.new")
        shutil.copy(TAKO, newbin)
        with open(newbin, "ab") as f:
            f.write(b"\0another build\0")
        os.rename(newbin, binary)
        _systemctl_restart(binary, tako.home, log)
        wait_for(lambda: dp_pid(tako) != dp1, timeout=20, what="new data plane")
        wait_for(lambda: not alive(dp1), timeout=30, what="old data plane drained and gone")
        load.progress(300)
        ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    # the successor serves the same certificate, HSTS and redirect
    after = served(https_port, cert)
    assert after[0] == first[0] and after[1] == 200 and after[2] == first[2], after
    assert redirect(http_port)[0] == 308
    v = json.loads(subprocess.run([binary, "version", "--output", "json"], capture_output=True,
                                  text=True, env=dict(os.environ, **tako.env)).stdout)
    assert v["dataplane"]["pid"] == dp_pid(tako) and v["dataplane"]["build"] == v["build"]
    print("data-plane handover under HTTPS load: %d requests, %d failed" % (ok, failed))
    no_key_in_logs(tako)


def test_dataplane_kill9_gets_https_back_from_takod(tako):
    http_port, https_port, cert, der = deploy_https(tako)
    clients = 8
    with HttpsLoad(https_port, cert, clients=clients) as load:
        load.progress(200)
        old = dp_pid(tako)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: dp_pid(tako) != old, timeout=20, what="data plane restarted")
        load.progress(300)
        ok, failed = load.stop()
    # only what was in flight on the killed process (one per connection)
    assert failed <= clients, "\n".join(load.errors)
    after = served(https_port, cert)
    assert after[0] == der and after[1] == 200 and after[2], after
    assert redirect(http_port)[0] == 308
    assert "dataplane-restarted" in events(tako)
    # the TLS counters of the new process, as takod reads them
    c = DpClient(tako.home)
    try:
        assert c.call(op="hello", proto=2, min_proto=1, role="observer")["proto"] == 2
        st = c.call(op="tls_stats")
        assert st["ok"] and st["certificates"] == 1 and st["handshakes"] >= 1, st
        text = c.call(op="metrics")["text"]
        assert re.search(r'^tako_proxy_tls_handshakes_total\{result="ok"\} [1-9]', text, re.M)
        assert "tako_proxy_tls_certificates 1" in text
    finally:
        c.close()
    print("data plane kill -9 under HTTPS load: %d of %d failed" % (failed, ok + failed))


def test_protocol2_https_ops_and_successor_without_https_refused(tako):
    http_port, https_port, cert, der = deploy_https(tako)
    c = DpClient(tako.home)
    try:
        r = c.call(op="hello", proto=2, min_proto=1, role="observer", pid=os.getpid())
        assert r["ok"] and r["proto"] == 2
        # only the driver installs certificates or challenge answers
        r = c.call(op="cert_set", cert_id="x", cert="a", key="b")
        assert not r["ok"] and r["errno"] == 1  # EPERM
        r = c.call(op="challenge_set", token="t", keyauth="k")
        assert not r["ok"] and r["errno"] == 1
        # a successor that speaks only protocol 1 would serve the TLS
        # sockets as plain HTTP and lose the certificates: refused
        s = DpClient(tako.home)
        try:
            r = s.call(op="hello", proto=1, min_proto=1, role="successor", pid=os.getpid())
            assert r["ok"] and r["proto"] == 1
            r = s.call(op="handover")
            assert not r["ok"] and r["errno"] == 93, r  # EPROTONOSUPPORT
            assert "cannot serve HTTPS" in r["error"]
        finally:
            s.close()
    finally:
        c.close()
    # nothing was disturbed: same process, same certificate, takod drives
    assert served(https_port, cert)[0] == der
    ps = tako.ps_json()
    assert ps["dataplane"]["state"] == "running"
    r = tako.run("scale", "web=2", "production", check=None)
    assert r.returncode == 0, r.stdout + r.stderr


def test_older_dataplane_refuses_https_cleanly_plain_http_serves(tako):
    """A data plane that speaks only protocol 1 (as an older tako would; this
    build stands in for it with TAKO_DATAPLANE_PROTO_MAX=1): takod does not
    send it TLS listeners it would serve in plain, says why, and the plain
    HTTP entrypoint keeps serving."""
    tako.env["TAKO_DATAPLANE_PROTO_MAX"] = "1"
    http_port, https_port, cert = site(tako)
    r = tako.run("deploy", "production", check=None)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "cannot listen on port %d" % https_port in out, out
    ev = events(tako)
    assert "speaks protocol 1" in ev and "needs protocol 2" in ev, ev
    # nothing listens on the HTTPS port; plain HTTP answers (no redirect:
    # there is no HTTPS to send anyone to)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", https_port)) != 0
    st, hdrs, body = wait_for(lambda: (lambda x: x[0] == 200 and x)(
        http(http_port, "/api/instance", headers={"Host": NAME})), timeout=20,
        what="plain HTTP served")
    assert json.loads(body)["hostname"]
