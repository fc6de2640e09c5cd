"""tako proxy in operation: health checks, kill -9 under load, draining on a
backend-set change, SIGHUP and SIGTERM, metrics."""
import http.client
import os
import signal
import socket
import threading
import time
import urllib.request

from proxy_helpers import Backend, get_name, start_proxy, write_file
from conftest import free_port, wait_for, wait_port


def test_health_removal_and_readmission(procs):
    bs = [Backend("b1"), Backend("b2"), Backend("b3")]
    _, port = start_proxy(procs, bs, "--health-path", "/health", "--health-interval", "100ms",
                          "--fall", "2", "--rise", "2")
    bs[2].healthy = False
    wait_for(lambda: "b3" not in [get_name(port)[0] for _ in range(3)], timeout=5,
             what="b3 removed")
    n3 = bs[2].count()
    got = [get_name(port)[0] for _ in range(10)]
    assert "b3" not in got and bs[2].count() == n3
    bs[2].healthy = True
    wait_for(lambda: "b3" in [get_name(port)[0] for _ in range(3)], timeout=5,
             what="b3 back")
    # the health checks carry the configured path
    assert any(r.target == "/health" for r in bs[2].requests)


class Load:
    """Steady GET load from a few threads; counts failures."""

    def __init__(self, port, threads=4, keepalive=True):
        self.port = port
        self.stop = False
        self.ok = 0
        self.fail = []
        self.lock = threading.Lock()
        self.ts = [threading.Thread(target=self.run, args=(keepalive or i % 2 == 0,))
                   for i in range(threads)]
        for t in self.ts:
            t.start()

    def run(self, keepalive):
        conn = None
        deadline = time.monotonic() + 30
        while not self.stop and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/api/instance")
                r = conn.getresponse()
                r.read()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.fail.append(r.status)
                if not keepalive:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - any failure counts
                with self.lock:
                    self.fail.append(repr(e))
                conn = None

    def finish(self):
        self.stop = True
        for t in self.ts:
            t.join()


def test_kill9_under_load_loses_no_get(procs):
    ws = [procs.whoami("w%d" % i) for i in range(1, 4)]
    _, port = start_proxy(procs, ["w%d=127.0.0.1:%d" % (i + 1, w.port) for i, w in enumerate(ws)],
                          "--health-interval", "200ms", threads=2)
    load = Load(port, threads=4, keepalive=False)
    time.sleep(1.0)
    os.kill(ws[1].pid, signal.SIGKILL)
    time.sleep(1.5)
    load.finish()
    assert load.fail == [], load.fail[:5]
    assert load.ok > 200


def test_drain_on_removal_fails_nothing(procs, tmp_path):
    bs = [Backend("b1"), Backend("b2"), Backend("b3")]
    bfile = str(tmp_path / "backends")
    write_file(bfile, "".join("%s=%s\n" % (b.name, b.addr) for b in bs))
    p, port = start_proxy(procs, [], "--backends-file", bfile, "--health-interval", "100ms")
    # a slow request in flight on b1 while b1 is removed
    res = {}

    def slow():
        res["r"] = get_name(port, "/slow?ms=1500")

    while True:  # make the next pick b1
        if get_name(port)[0] == "b3":
            break
    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: bs[0].count("/slow") == 1, timeout=5, what="slow at b1")
    load = Load(port, threads=2)
    write_file(bfile, "".join("%s=%s\n" % (b.name, b.addr) for b in bs[1:]))
    os.kill(p.pid, signal.SIGHUP)
    time.sleep(0.3)
    n1 = bs[0].count("/api")
    time.sleep(0.7)
    load.finish()
    t.join()
    assert res["r"][0] == "b1"  # the in-flight request finished
    assert load.fail == []
    assert bs[0].count("/api") == n1  # no new request after the swap


def test_sighup_adds_backend_after_health_check(procs, tmp_path):
    bs = [Backend("b1"), Backend("b2")]
    bfile = str(tmp_path / "backends")
    write_file(bfile, "b1=%s\n# a comment\n" % bs[0].addr)
    p, port = start_proxy(procs, [], "--backends-file", bfile, "--health-path", "/health",
                          "--health-interval", "200ms")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # survives the reload
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"b1"
    bs[1].healthy = False
    write_file(bfile, "b1=%s\nb2=%s\n" % (bs[0].addr, bs[1].addr))
    os.kill(p.pid, signal.SIGHUP)
    time.sleep(0.6)
    # not healthy yet: no traffic
    for _ in range(4):
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"b1"
    bs[1].healthy = True
    wait_for(lambda: bs[1].count() > 0 or get_name(port)[0] == "b2", timeout=5, what="b2 in")
    conn.close()


def test_metrics_endpoint(procs):
    bs = [Backend("b1"), Backend("b2")]
    mport = free_port()
    _, port = start_proxy(procs, bs, "--metrics", "127.0.0.1:%d" % mport)
    wait_port(mport)
    for _ in range(4):
        get_name(port)
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5).read().decode()
    for name in ("tako_proxy_backend_up", "tako_proxy_backend_inflight",
                 "tako_proxy_backend_requests_total", "tako_proxy_backend_request_duration_seconds_bucket",
                 "tako_proxy_backend_health_transitions_total", "tako_proxy_listener_open_connections"):
        assert name in text, name
    assert 'tako_proxy_backend_requests_total{pool="default",backend="b1",addr="%s",code="2xx"} 2' % bs[0].addr in text
    assert 'tako_proxy_backend_up{pool="default",backend="b2",addr="%s"} 1' % bs[1].addr in text


def test_sigterm_finishes_in_flight(procs):
    b = Backend("b1")
    p, port = start_proxy(procs, [b])
    res = {}

    def slow():
        res["r"] = get_name(port, "/slow?ms=800")

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: b.count("/slow") == 1, timeout=5, what="in flight")
    os.kill(p.pid, signal.SIGTERM)
    t.join(10)
    assert res["r"][0] == "b1"
    assert p.wait(10) == 0
    # no longer listening
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        assert False, "still listening"
    except OSError:
        pass


def test_cli_errors():
    from conftest import run_tako
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    busy = s.getsockname()[1]
    cases = [
        (["--listen", "127.0.0.1:%d" % busy, "--backend", "127.0.0.1:9"], 1, "cannot listen"),
        (["--listen", "127.0.0.1:0"], 2, "no backend"),
        (["--listen", "127.0.0.1:0", "--backend", "nope"], 2, "invalid backend"),
        (["--listen", "127.0.0.1:0", "--backend", "9", "--strategy", "fastest"], 2, "unknown"),
        (["--listen", "127.0.0.1:0", "--backend", "a=127.0.0.1:5", "--backend", "a=127.0.0.1:6"], 2, "unique"),
        (["--listen", "127.0.0.1:0", "--backend", "9", "--timeout", "soon"], 2, "invalid duration"),
        (["--listen", "127.0.0.1:0", "--backend", "9", "--metrics", "127.0.0.1:%d" % busy], 1, "in use"),
        (["--backend", "9"], 2, "--listen is required"),
    ]
    for args, code, msg in cases:
        r = run_tako(["proxy"] + args, timeout=20)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert msg in r.stderr, (args, r.stderr)
    s.close()
    r = run_tako(["proxy", "--help"])
    assert r.returncode == 0 and "--backends-file" in r.stdout and "--trusted-proxy" in r.stdout


def _health_checks(b):
    with b.lock:
        return sum(1 for r in b.requests if r.target.startswith("/health"))


def test_down_backends_are_checked_fast_healthy_ones_at_the_interval(procs):
    # Defaults: interval 2 s, fast interval 250 ms for down/transitioning ones.
    up, down = Backend("up"), Backend("down")
    down.healthy = False
    _, port = start_proxy(procs, [up, down], "--health-path", "/health", "--rise", "2")
    # Wait for a fixed number of checks of the down backend, then compare
    # how many checks the healthy one got meanwhile: 8 fast checks span
    # ~2 s, the healthy one is checked at most twice in that time.
    wait_for(lambda: _health_checks(down) >= 2, timeout=5, what="down checked")
    u0, d0 = _health_checks(up), _health_checks(down)
    wait_for(lambda: _health_checks(down) >= d0 + 8, timeout=10, what="8 fast checks")
    assert _health_checks(up) - u0 <= 2
    # It comes back after `rise` fast checks: traffic reaches it having
    # been checked exactly twice since it became healthy again.
    down.healthy = True
    d1 = _health_checks(down)
    wait_for(lambda: "down" in [get_name(port)[0] for _ in range(2)], timeout=5,
             what="down back")
    assert _health_checks(down) - d1 <= 3
