"""tako proxy forwards exactly what it understood (issue: smuggling and
close handling): every test sends the exact bytes of a defect found by
probing the proxy as an attacker would, and asserts what the backend and the
client get."""
import socket
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
