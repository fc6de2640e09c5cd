"""tako proxy: HTTP/1.1 done right — what goes upstream, what comes back,
bodies streamed both ways, 1xx, Upgrade, HTTP/1.0, and every limit and
smuggling vector refused before it reaches a backend."""
import http.client
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from proxy_helpers import Backend, recv_to_eof, start_proxy
from conftest import raw, wait_for


def one(procs, *extra, handler=None):
    b = Backend("b1", handler=handler)
    _, port = start_proxy(procs, [b], *extra)
    return b, port


def read_response(s, timeout=10):
    """Read one response (Content-Length or close-delimited) from socket s."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(65536)
        if not d:
            return data
        data += d
    head, _, body = data.partition(b"\r\n\r\n")
    cl = None
    for ln in head.split(b"\r\n")[1:]:
        n, _, v = ln.partition(b":")
        if n.strip().lower() == b"content-length":
            cl = int(v.strip())
    if cl is not None:
        while len(body) < cl:
            d = s.recv(65536)
            if not d:
                break
            body += d
    else:
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            body += d
    return head + b"\r\n\r\n" + body


def test_forwarded_headers_and_hop_by_hop(procs, tmp_path):
    log = str(tmp_path / "access.log")
    b, port = one(procs, "--access-log", log)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /p?q=1 HTTP/1.1\r\nHost: Example.com:8080\r\nConnection: keep-alive, X-Drop\r\n"
              b"X-Drop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: x\r\n"
              b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Keep: yes\r\n\r\n")
    resp = read_response(s)
    s.close()
    assert resp.startswith(b"HTTP/1.1 200")
    req = b.app_requests()[0]
    assert req.target == "/p?q=1"
    assert req.version == "HTTP/1.1"
    assert req.header("Host") == "Example.com:8080"
    assert req.header("X-Keep") == "yes"
    for h in ("X-Drop", "Keep-Alive", "TE", "Proxy-Connection", "Connection"):
        assert req.header(h) is None, h
    # the peer is no trusted proxy: its X-Forwarded-For claim is dropped
    assert req.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert req.header("X-Forwarded-Proto") == "http"
    assert req.header("X-Forwarded-Host") == "Example.com:8080"
    rid = req.header("X-Request-Id")
    assert rid and len(rid) == 32
    wait_for(lambda: os.path.exists(log) and rid in open(log).read(), timeout=5, what="log line")
    line = [ln for ln in open(log) if rid in ln][0]
    assert '"GET /p?q=1" 200' in line and b.addr in line


def test_request_id_kept_when_present(procs):
    b, port = one(procs)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/", headers={"X-Request-Id": "abc-123"})
    conn.getresponse().read()
    assert b.app_requests()[0].header_all("X-Request-Id") == ["abc-123"]


def test_response_hop_by_hop_removed(procs):
    def h(req, be):
        return 200, [("Connection", "X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=3"),
                     ("X-Public", "2")], b"hi"
    _, port = one(procs, handler=h)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.read() == b"hi"
    assert r.getheader("X-Public") == "2"
    assert r.getheader("X-Secret") is None and r.getheader("Keep-Alive") is None


def test_upstream_connections_are_reused(procs):
    b, port = one(procs)
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_response(s).startswith(b"HTTP/1.1 200")
        s.close()
    assert b.count() == 20
    assert len(b.conns) <= 2  # one pooled connection served them all


def test_http10_client(procs):
    b, port = one(procs)
    out = raw(port, b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in out
    assert out.endswith(b"b1")
    # HTTP/1.0 keep-alive
    s = socket.create_connection(("127.0.0.1", port))
    for _ in range(3):
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = read_response(s)
        assert b"Connection: keep-alive" in r and r.endswith(b"b1")
    s.close()


def test_chunked_response_to_http10_is_dechunked(procs):
    def h(req, be):
        return 200, [("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    _, port = one(procs, handler=h)
    out = raw(port, b"GET / HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert body == b"hello world"
    # an HTTP/1.1 client gets it chunked, as sent
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.getheader("Transfer-Encoding") == "chunked"
    assert r.read() == b"hello world"


def test_large_bodies_stream_both_ways(procs):
    b, port = one(procs)
    body = os.urandom(3 * 1024 * 1024)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/echo", body=body)
    r = conn.getresponse()
    assert r.status == 200
    assert r.read() == body
    # chunked request body
    def gen():
        for i in range(0, len(body), 100000):
            yield body[i:i + 100000]
    conn.request("PUT", "/echo", body=gen(), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    assert r.read() == body
    reqs = b.app_requests()
    assert reqs[-1].header("Transfer-Encoding") == "chunked"


def test_expect_100_continue(procs):
    b, port = one(procs)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = s.recv(4096)
    assert interim.startswith(b"HTTP/1.1 100")
    s.sendall(b"hello")
    r = read_response(s)
    assert r.startswith(b"HTTP/1.1 200") and r.endswith(b"hello")
    s.close()


def test_upgrade_tunnel_echo(procs):
    b, port = one(procs)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"Upgrade: websocket" in head and b"Connection: upgrade" in head
    for msg in (b"ping", b"x" * 100000, b"pong"):
        s.sendall(msg)
        got = rest
        rest = b""
        while len(got) < len(msg):
            got += s.recv(65536)
        assert got == msg
    req = b.app_requests()[0]
    assert req.header("Upgrade") == "websocket"
    s.shutdown(socket.SHUT_WR)
    assert s.recv(10) == b""
    s.close()


@pytest.mark.parametrize("req", [
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
])
def test_malformed_and_smuggling_refused(procs, req):
    b, port = one(procs)
    out = raw(port, req)
    assert out.startswith(b"HTTP/1.1 400"), out[:80]
    assert b"Connection: close" in out
    time.sleep(0.05)
    assert b.app_requests() == []  # never forwarded


def test_unknown_transfer_coding_501(procs):
    b, port = one(procs)
    out = raw(port, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 501")
    assert b.app_requests() == []


def test_smuggled_second_request_is_not_forwarded(procs):
    b, port = one(procs)
    # a valid request whose chunked body hides a second request, followed by CL+TE
    out = raw(port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: t\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    assert b.app_requests() == []


def test_header_too_large_431(procs):
    b, port = one(procs, "--max-header-size", "4k")
    out = raw(port, b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    many = b"".join(b"X-%d: v\r\n" % i for i in range(120))
    out = raw(port, b"GET / HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    assert b.app_requests() == []


def test_slowloris_gets_408(procs):
    b, port = one(procs, "--header-timeout", "500ms")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
    t0 = time.monotonic()
    for _ in range(20):
        try:
            s.sendall(b"X-A: b\r\n")
        except OSError:
            break
        time.sleep(0.05)
        if time.monotonic() - t0 > 0.4:
            break
    out = recv_to_eof(s)
    assert out.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - t0 < 3
    assert b.app_requests() == []


def test_idle_keepalive_timeout_closes(procs):
    b, port = one(procs, "--idle-timeout", "300ms")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(s).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    assert s.recv(10) == b""  # closed by the proxy
    assert 0.2 < time.monotonic() - t0 < 3


def test_backend_timeout_504(procs):
    b, port = one(procs, "--timeout", "300ms")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/slow?ms=2000")
    r = conn.getresponse()
    assert r.status == 504


def test_all_down_waits_then_503(procs):
    b = Backend("b1")
    b.stop()
    _, port = start_proxy(procs, [b], "--all-down-wait", "400ms")
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.status == 503
    assert r.getheader("Retry-After")
    assert 0.3 < time.monotonic() - t0 < 3


def test_all_down_wait_recovers(procs):
    b = Backend("b1")
    port_b = b.port
    b.stop()
    _, port = start_proxy(procs, ["b1=127.0.0.1:%d" % port_b], "--all-down-wait", "5s",
                          "--health-interval", "100ms", "--rise", "1")
    # first request finds it down (connect refused), waits; it comes back
    import threading
    res = {}

    def go():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        r = conn.getresponse()
        res["s"] = r.status
        res["b"] = r.read()

    t = threading.Thread(target=go)
    t.start()
    time.sleep(0.7)
    Backend("b1", port=port_b)
    t.join(10)
    assert res.get("s") == 200 and res["b"] == b"b1"


def test_max_conns(procs):
    b, port = one(procs, "--max-conns", "3")
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    time.sleep(0.2)
    extra = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    extra.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    with pytest.raises(socket.timeout):
        extra.recv(10)  # left in the backlog, not served
    held[0].close()
    extra.settimeout(5)
    assert read_response(extra).startswith(b"HTTP/1.1 200")
    for s in held[1:] + [extra]:
        s.close()


def test_pipelined_requests(procs):
    b, port = one(procs)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n"
              b"GET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
    assert out.count(b"HTTP/1.1 200") == 3
    assert [r.target for r in b.app_requests()] == ["/1", "/2", "/3"]


def test_head_request_has_no_body(procs):
    b, port = one(procs)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    out = recv_to_eof(s)
    first, _, rest = out.partition(b"\r\n\r\n")
    assert b"Content-Length: 2" in first
    assert rest.startswith(b"HTTP/1.1 200")


@pytest.mark.skipif(not shutil.which("ab"), reason="ab (apache2-utils) not installed")
def test_apache_bench_http10(procs):
    b, port = one(procs)
    r = subprocess.run(["ab", "-n", "1000", "-c", "10", "http://127.0.0.1:%d/" % port],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Complete requests:      1000" in r.stdout
    assert "Failed requests:        0" in r.stdout
    assert "Non-2xx" not in r.stdout
    r = subprocess.run(["ab", "-k", "-n", "1000", "-c", "10", "http://127.0.0.1:%d/" % port],
                       capture_output=True, text=True, timeout=60)
    assert "Failed requests:        0" in r.stdout and "Keep-Alive requests:    1000" in r.stdout


def test_host_routing_unknown_host_404(procs):
    # the CLI routes everything to its one pool; unknown hosts only exist with
    # Host routes (module API), covered by the unit tests
    b, port = one(procs)
    out = raw(port, b"GET / HTTP/1.1\r\nHost: anything.example\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")


def test_json_access_log(procs, tmp_path):
    log = str(tmp_path / "a.json")
    b, port = one(procs, "--access-log", log, "--access-log-format", "json")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/x?\"q\"")
    conn.getresponse().read()
    wait_for(lambda: os.path.exists(log) and open(log).read().strip(), timeout=5, what="log")
    rec = json.loads(open(log).read().splitlines()[0])
    assert rec["method"] == "GET" and rec["path"] == "/x?\"q\"" and rec["status"] == 200
    assert rec["upstream"] == b.addr and len(rec["request_id"]) == 32
    assert rec["duration_ms"] >= 0 and rec["bytes"] > 0


def test_garbage_never_crashes(procs):
    import random
    b, port = one(procs, "--header-timeout", "300ms")
    rnd = random.Random(1234)
    pieces = [b"GET / HTTP/1.1\r\n", b"Host: t\r\n", b"\r\n", b"Transfer-Encoding: chunked\r\n",
              b"Content-Length: 5\r\n", b"0\r\n\r\n", b"\x00", b"\r", b"\n", b" ", b":", b"5\r\nhello\r\n"]
    for _ in range(150):
        data = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 12)))
        if rnd.random() < 0.3:
            data += bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
        try:
            raw(port, data, timeout=1.0)
        except OSError:
            pass
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"b1"
