"""Helpers for the proxy e2e tests: backends defined by the test (a raw
HTTP/1.1 server in a thread that records what reached it) and a way to
start `tako proxy` in front of them."""
import os
import socket
import threading
import time

from conftest import TAKO, free_port, wait_port


class Request:
    def __init__(self, method, target, version, headers, body, raw_head):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # list of (name, value) as received
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        vals = [v for n, v in self.headers if n.lower() == name.lower()]
        return vals[0] if vals else None

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]


def _read_until(sock, buf, marker):
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    i = buf.index(marker) + len(marker)
    return buf[:i], buf[i:]


def _read_exact(sock, buf, n):
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    return buf[:n], buf[n:]


def _read_chunked(sock, buf):
    body = b""
    while True:
        line, buf = _read_until(sock, buf, b"\r\n")
        if line is None:
            return None, buf
        size = int(line[:-2].split(b";")[0], 16)
        if size == 0:
            # trailers until the empty line
            while True:
                line, buf = _read_until(sock, buf, b"\r\n")
                if line is None or line == b"\r\n":
                    return body, buf
        data, buf = _read_exact(sock, buf, size + 2)
        if data is None:
            return None, buf
        body += data[:-2]


class Backend:
    """A tiny HTTP/1.1 server. `handler(req, backend)` returns
    (status, headers list, body bytes) or None for the default answer, which
    is 200 with the backend's name as the body. Special paths:
      /health     -> 200, or 503 when self.healthy is False
      /slow?ms=N  -> answer after N ms
      /echo       -> the request body back
      /ws         -> 101 and then echo every byte (an Upgrade tunnel)
    """

    def __init__(self, name, port=None, handler=None):
        self.name = name
        self.port = port or free_port()
        self.handler = handler
        self.healthy = True
        self.requests = []
        self.lock = threading.Lock()
        self.stopped = False
        self.conns = []
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(512)
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def count(self, path_prefix="/"):
        with self.lock:
            return sum(1 for r in self.requests if r.target.startswith(path_prefix)
                       and not r.target.startswith("/health"))

    def app_requests(self):
        with self.lock:
            return [r for r in self.requests if not r.target.startswith("/health")]

    def stop(self):
        self.stopped = True
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ls.close()
        for c in list(self.conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while not self.stopped:
                head, buf = _read_until(c, buf, b"\r\n\r\n")
                if head is None:
                    return
                lines = head[:-4].split(b"\r\n")
                method, target, version = lines[0].decode("latin-1").split(" ")
                headers = []
                for ln in lines[1:]:
                    n, v = ln.decode("latin-1").split(":", 1)
                    headers.append((n, v.strip()))
                hmap = {n.lower(): v for n, v in headers}
                expect = hmap.get("expect", "").lower() == "100-continue"
                if expect and method != "GET":
                    c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = b""
                if hmap.get("transfer-encoding", "").lower() == "chunked":
                    body, buf = _read_chunked(c, buf)
                    if body is None:
                        return
                elif "content-length" in hmap:
                    body, buf = _read_exact(c, buf, int(hmap["content-length"]))
                    if body is None:
                        return
                req = Request(method, target, version, headers, body, head)
                with self.lock:
                    self.requests.append(req)
                if target.startswith("/ws"):
                    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\n\r\n")
                    if buf:
                        c.sendall(buf)
                    while True:
                        d = c.recv(65536)
                        if not d:
                            c.shutdown(socket.SHUT_WR)
                            return
                        c.sendall(d)
                resp = self.handler(req, self) if self.handler else None
                if resp is None:
                    resp = self._default(req)
                if resp == "close":
                    c.close()
                    return
                status, rh, rbody = resp
                close = hmap.get("connection", "").lower() == "close"
                out = "HTTP/1.1 %d X\r\n" % status
                names = [n.lower() for n, _ in rh]
                for n, v in rh:
                    out += "%s: %s\r\n" % (n, v)
                if "content-length" not in names and "transfer-encoding" not in names:
                    out += "Content-Length: %d\r\n" % len(rbody)
                out += "X-Backend: %s\r\n" % self.name
                if close:
                    out += "Connection: close\r\n"
                data = out.encode("latin-1") + b"\r\n"
                if method != "HEAD":
                    data += rbody
                c.sendall(data)
                if close:
                    c.close()
                    return
        except (OSError, ValueError):
            return
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _default(self, req):
        t = req.target
        if t.startswith("/health"):
            return (200 if self.healthy else 503), [], b"ok" if self.healthy else b"down"
        if t.startswith("/slow"):
            ms = int(t.split("ms=")[1]) if "ms=" in t else 1000
            time.sleep(ms / 1000.0)
        if t.startswith("/echo"):
            return 200, [], req.body
        return 200, [], self.name.encode()


def start_proxy(procs, backends, *extra, threads=1, listen_port=None, name="proxy"):
    """Start tako proxy on a free port in front of `backends` (Backend objects
    or "id=addr" strings). Returns (process, port)."""
    port = listen_port or free_port()
    argv = [TAKO, "proxy", "--listen", "127.0.0.1:%d" % port, "--threads", str(threads)]
    for b in backends:
        argv += ["--backend", b if isinstance(b, str) else "%s=%s" % (b.name, b.addr)]
    argv += list(extra)
    p = procs.start(argv, name=name)
    wait_port(port, proc=p)
    return p, port


def recv_to_eof(sock):
    """Everything the peer sends until it closes (a timeout of the socket's
    own raises)."""
    data = b""
    while True:
        d = sock.recv(65536)
        if not d:
            return data
        data += d


def get_name(port, path="/", **kw):
    """GET on a fresh connection; returns the answering backend's name."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path).encode())
        data = recv_to_eof(s)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return body.decode(errors="replace"), head.decode(errors="replace")


def write_file(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class RawBackend:
    """A backend whose every connection is served by `serve(sock)` in a
    thread: for answers a real server would not give (no length, a close
    right after the answer, a header naming framing in Connection)."""

    def __init__(self, serve, name="raw"):
        self.name = name
        self.serve = serve
        self.port = free_port()
        self.accepted = 0
        self.stopped = False
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(256)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.serve(c)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopped = True
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ls.close()


def read_head(sock, buf=b""):
    """Read up to the end of a head; returns (head, rest) or (None, buf)."""
    return _read_until(sock, buf, b"\r\n\r\n")
