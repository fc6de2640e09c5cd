"""tako proxy forwards exactly what it understood (issue: smuggling and
close handling): every test sends the exact bytes of a defect found by
probing the proxy as an attacker would, and asserts what the backend and the
client get."""
import socket
import threading
import time

from conftest import raw
from proxy_helpers import Backend, RawBackend, read_head, start_proxy


def read_until_close(s, timeout=5.0):
    """Every byte until the peer closes; (data, closed) — closed is False
    when the bounded wait ran out first."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return data, True
            data += d
    except socket.timeout:
        return data, False


# ---- 2. a backend's close is never missed ----

def test_close_delimited_answer_reaches_client_with_the_close(procs):
    """A backend answering without a length and closing at once: the FIN comes
    in the same event as the data; the client gets the body and the close."""
    def serve(c):
        _, _ = read_head(c)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody-until-close")
    b = RawBackend(serve)
    _, port = start_proxy(procs, [b])
    hung = 0
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data, closed = read_until_close(s, timeout=3.0)
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data
        assert data.endswith(b"body-until-close"), data
        hung += not closed
    assert hung == 0


def test_truncated_answer_closes_client(procs):
    def serve(c):
        _, _ = read_head(c)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-this")
    b = RawBackend(serve)
    _, port = start_proxy(procs, [b])
    hung = 0
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data, closed = read_until_close(s, timeout=3.0)
        s.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"only-this"), data
        hung += not closed
    assert hung == 0


def test_connection_closed_by_backend_is_never_pooled(procs):
    """The backend answers with a length and closes its keep-alive connection
    silently right after; POSTs sent 50 ms later must each get a fresh
    connection (a pooled dead one would fail them: 502)."""
    def serve(c):
        head, body = read_head(c)
        if head is None:
            return
        n = 0
        for ln in head.split(b"\r\n"):
            if ln.lower().startswith(b"content-length:"):
                n = int(ln.split(b":")[1])
        while len(body) < n:
            d = c.recv(65536)
            if not d:
                return
            body += d
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    b = RawBackend(serve)
    _, port = start_proxy(procs, [b])
    statuses = []
    for _ in range(30):
        out = raw(port, b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
        statuses.append(out[9:12])
        time.sleep(0.05)
    assert statuses.count(b"200") == 30, statuses
    assert b.accepted >= 30  # one connection per request (plus health checks)


def test_client_fin_with_request_is_seen(procs):
    """A client that sends its request and half-closes at once: the proxy
    answers, then closes (it does not wait for the idle timeout)."""
    bk = Backend("b1")
    _, port = start_proxy(procs, [bk])
    hung = 0
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        data, closed = read_until_close(s, timeout=3.0)
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data
        hung += not closed
    assert hung == 0


def echo_target(req, backend):
    """Each answer names the request it answers."""
    return 200, [], ("%s %s %d" % (req.method, req.target, len(req.body))).encode()


def roundtrip(port, data, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(data)
        out, _ = read_until_close(s, timeout=timeout)
        return out
    finally:
        s.close()


# ---- 1. a Connection header never removes framing or end-to-end fields ----

SMUGGLE_CL = (b"POST / HTTP/1.1\r\nHost: test.local\r\nConnection: Content-Length\r\n"
              b"Content-Length: 34\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nX-Ignore: ")


def test_connection_content_length_cannot_smuggle(procs):
    b = Backend("b1", handler=echo_target)
    _, port = start_proxy(procs, [b])
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(SMUGGLE_CL)
    s.settimeout(5)
    first = s.recv(65536)
    # the next user, on its own connection, over the same pooled upstream one
    victim = roundtrip(port, b"GET /victim HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
    s.close()
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"POST / 34"), first
    assert victim.endswith(b"GET /victim 0"), victim
    reqs = [(r.method, r.target, r.body) for r in b.app_requests()]
    assert reqs == [("POST", "/", SMUGGLE_CL[-34:]), ("GET", "/victim", b"")]
    assert b.app_requests()[0].header("Content-Length") == "34"


def test_connection_keepalive_content_length_runs_one_request(procs):
    b = Backend("b1", handler=echo_target)
    _, port = start_proxy(procs, [b])
    inner = b"GET /inner HTTP/1.1\r\nHost: x\r\n\r\n"
    out = roundtrip(port, b"POST / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Content-Length\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(inner), inner)
                    + b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 2, out
    assert [(r.method, r.target, len(r.body)) for r in b.app_requests()] == [
        ("POST", "/", len(inner)), ("GET", "/after", 0)]


def test_connection_cannot_remove_host_or_request_id(procs):
    b = Backend("b1")
    _, port = start_proxy(procs, [b])
    out = roundtrip(port, b"GET /h HTTP/1.1\r\nHost: keep.example\r\nX-Request-Id: rid-1\r\n"
                          b"Connection: close, Host, X-Request-Id, X-Forwarded-For, X-Drop\r\nX-Drop: 1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out
    r = b.app_requests()[0]
    assert r.header("Host") == "keep.example"
    assert r.header("X-Request-Id") == "rid-1"
    assert r.header("X-Forwarded-For") == "127.0.0.1"
    assert r.header("X-Drop") is None  # an ordinary field it names is still hop-by-hop


def test_response_connection_content_length_keeps_framing(procs):
    b = Backend("b1", handler=lambda req, bk: (200, [("Connection", "Content-Length")], b"hello"))
    _, port = start_proxy(procs, [b])
    out = roundtrip(port, b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
                          b"GET /2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    first, _, rest = out.partition(b"\r\n\r\n")
    assert b"\r\nContent-Length: 5" in first, out
    assert rest.startswith(b"hello") and rest.count(b"HTTP/1.1 200") == 1, out
    assert out.endswith(b"hello")


# ---- 3. the authority of an absolute-form target is the host ----

def test_absolute_form_with_other_host_refused(procs):
    b = Backend("b1")
    _, port = start_proxy(procs, [b])
    out = roundtrip(port, b"GET http://evil.example/abs HTTP/1.1\r\nHost: good.example\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out
    out = roundtrip(port, b"GET http://good.example/abs?q HTTP/1.1\r\nHost: good.example\r\n"
                          b"Connection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out
    reqs = b.app_requests()
    assert [(r.target, r.header("Host")) for r in reqs] == [("/abs?q", "good.example")]


# ---- 4. trailers are field lines, without framing fields ----

def test_request_line_in_trailers_refused(procs):
    b = Backend("b1")
    _, port = start_proxy(procs, [b])
    out = roundtrip(port, b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out
    out = roundtrip(port, b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\nContent-Length: 10\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out
    out = roundtrip(port, b"POST /ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                          b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out
    assert [(r.target, r.body) for r in b.app_requests()] == [("/ok", b"abc")]


# ---- 5. identity headers come from this hop or a trusted proxy ----

FORGED = (b"GET /id HTTP/1.1\r\nHost: t.example\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n"
          b"X_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
          b"X-Forwarded-Host: evil\r\nConnection: close\r\n\r\n")


def test_identity_headers_from_untrusted_peer_replaced(procs):
    b = Backend("b1")
    _, port = start_proxy(procs, [b])
    assert roundtrip(port, FORGED).startswith(b"HTTP/1.1 200")
    r = b.app_requests()[0]
    assert r.header_all("Forwarded") == ['for=127.0.0.1;host="t.example";proto=http']
    assert r.header_all("X-Real-IP") == ["127.0.0.1"]
    assert r.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert r.header_all("X-Forwarded-Proto") == ["http"]
    assert r.header_all("X-Forwarded-Host") == ["t.example"]
    assert r.header("X_Forwarded_For") is None


def test_identity_headers_from_trusted_proxy_extended(procs):
    b = Backend("b1")
    _, port = start_proxy(procs, [b], "--trusted-proxy", "127.0.0.1/32")
    assert roundtrip(port, FORGED).startswith(b"HTTP/1.1 200")
    r = b.app_requests()[0]
    assert r.header_all("Forwarded") == ['for=6.6.6.6, for=127.0.0.1;host="t.example";proto=http']
    assert r.header_all("X-Forwarded-For") == ["10.0.0.1, 127.0.0.1"]
    assert r.header_all("X-Real-IP") == ["10.0.0.1"]
    assert r.header_all("X-Forwarded-Proto") == ["https"]
    assert r.header_all("X-Forwarded-Host") == ["evil"]
    assert r.header("X_Forwarded_For") is None


# ---- 6. slow bodies and per-backend limits ----

def test_trickled_body_gets_408(procs):
    """One body byte every 200 ms: after the body timeout (1 s here) plus what
    the minimum rate allows, the client gets 408 and the backend connection
    is let go; the backend never gets a complete request."""
    b = Backend("b1")
    _, port = start_proxy(procs, [b], "--body-timeout", "1s", "--min-body-rate", "1000")
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /slow-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
    s.settimeout(0.2)
    sent, answer = 0, b""
    while sent < 40:  # 8 s at most: far past what the timeout allows
        try:
            s.sendall(b"x")
            sent += 1
        except OSError:
            break
        try:
            d = s.recv(65536)
            answer += d
            if not d or answer:
                break
        except socket.timeout:
            pass
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), (sent, answer)
    assert sent < 40
    assert [r.target for r in b.app_requests()] == []


def test_max_conns_per_backend_queues_then_refuses(procs):
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def handler(req, bk):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.4)
        with lock:
            state["now"] -= 1
        return 200, [], b"done"

    b = Backend("b1", handler=handler)
    _, port = start_proxy(procs, [b], "--max-conns-per-backend", "1", "--max-queue", "2",
                          "--queue-timeout", "10s")
    results = []

    def one(i):
        out = raw(port, b"GET /q%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % i, timeout=10)
        with lock:
            results.append(out[9:12])

    ts = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(15)
    assert sorted(results) == [b"200", b"200", b"200", b"503", b"503"], results
    assert state["max"] == 1
    assert len(b.app_requests()) == 3


def test_backend_keepalive_timeout_is_learned(procs):
    """2(b): a backend closes idle keep-alive connections after 300 ms. Once
    the proxy has seen that, it no longer sends a request on a pooled
    connection idle for most of that time (where a POST would race the
    backend's close), but opens a new one."""
    carried = []  # one entry per upstream connection that carried a request

    def serve(c):
        c.settimeout(0.3)
        buf, counted = b"", False
        while True:
            try:
                head, buf = read_head(c, buf)
            except socket.timeout:
                return  # idle: the backend's keep-alive timeout
            if head is None:
                return
            if not counted and not head.startswith(b"GET /health"):
                carried.append(1)
                counted = True
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    b = RawBackend(serve)
    _, port = start_proxy(procs, [b], "--health-interval", "1m")
    req = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert roundtrip(port, req).startswith(b"HTTP/1.1 200")
    time.sleep(0.45)  # the backend closes the pooled connection: learned
    assert roundtrip(port, req).startswith(b"HTTP/1.1 200")
    time.sleep(0.26)  # idle for most of the backend's timeout: not reused
    assert roundtrip(port, req).startswith(b"HTTP/1.1 200")
    assert len(carried) == 3
