"""The desync oracle, end to end: streams of valid, pipelined and mutated
requests (the smuggling vectors of the framing issue and random damage) go
through a running `tako proxy` to a strict recording backend. Checked:

- every request the backend received was parsed and forwarded by the proxy
  (it is in the access log, same method and target, upstream set), and the
  proxy forwarded nothing the backend did not get (same count);
- the backend never saw bytes it could not parse strictly (one Host, one
  framing, a field line per header);
- a request sent after only unmutated ones on its connection reaches the
  backend as it was sent (method, target, body length);
- every response a client gets answers a request of its own connection
  (the backend names the request in its answer), in the order sent, the
  k-th answering the k-th request while nothing before was mutated; the
  proxy's own refusal comes after them, then the close.

Seeded (ORACLE_SEED, default 13) and bounded (ORACLE_CONNS connections)."""
import json
import os
import random
import socket
import threading

from conftest import free_port, wait_for
from proxy_helpers import start_proxy

SEED = int(os.environ.get("ORACLE_SEED", "13"))
CONNS = int(os.environ.get("ORACLE_CONNS", "150"))


class StrictBackend:
    """Parses with no tolerance; records (method, target, body length) and
    any violation; answers each request with 'ECHO <method> <target> <len>'."""

    def __init__(self):
        self.name = "strict"
        self.port = free_port()
        self.got = []
        self.violations = []
        self.truncated = 0  # requests cut by the proxy (it closed mid-message)
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(256)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _violation(self, what, data, eof=False):
        with self.lock:
            if eof:
                self.truncated += 1
            else:
                self.violations.append((what, data[:200]))

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline(65536)
                if not line:
                    return
                if not line.endswith(b"\r\n") or b"\r" in line[:-2] or b"\n" in line[:-2]:
                    return self._violation("request line", line)
                parts = line[:-2].split(b" ")
                if len(parts) != 3 or parts[2] != b"HTTP/1.1":
                    return self._violation("request line", line)
                method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
                cl, te, hosts = [], [], 0
                while True:
                    h = f.readline(65536)
                    if not h.endswith(b"\r\n") and len(h) < 65536:
                        return self._violation("header line", h, eof=True)
                    if not h.endswith(b"\r\n") or b"\r" in h[:-2] or b"\n" in h[:-2] or b"\0" in h:
                        return self._violation("header line", h)
                    if h == b"\r\n":
                        break
                    name, sep, value = h[:-2].partition(b":")
                    if not sep or not name or any(ch in b" \t" for ch in name):
                        return self._violation("field line", h)
                    n, v = name.lower(), value.strip()
                    if n == b"content-length":
                        cl.append(v)
                    elif n == b"transfer-encoding":
                        te.append(v)
                    elif n == b"host":
                        hosts += 1
                if hosts != 1 or len(cl) + len(te) > 1 or (te and te != [b"chunked"]) or \
                        (cl and not cl[0].isdigit()):
                    return self._violation("framing", line + b" cl=%r te=%r hosts=%d" % (cl, te, hosts))
                body = 0
                if cl:
                    n = int(cl[0])
                    if len(f.read(n)) != n:
                        return self._violation("short body", line, eof=True)
                    body = n
                elif te:
                    while True:
                        sl = f.readline(65536)
                        if not sl.endswith(b"\r\n") and len(sl) < 65536:
                            return self._violation("chunk size", sl, eof=True)
                        size = sl[:-2].split(b";")[0]
                        if not sl.endswith(b"\r\n") or not size or \
                                any(ch not in b"0123456789abcdefABCDEF" for ch in size):
                            return self._violation("chunk size", sl)
                        k = int(size, 16)
                        if k == 0:
                            break
                        data = f.read(k + 2)
                        if len(data) != k + 2:
                            return self._violation("chunk data", sl, eof=True)
                        if data[-2:] != b"\r\n":
                            return self._violation("chunk data", sl)
                        body += k
                    while True:
                        t = f.readline(65536)
                        if t == b"\r\n":
                            break
                        if not t.endswith(b"\r\n") and len(t) < 65536:
                            return self._violation("trailer", t, eof=True)
                        if not t.endswith(b"\r\n") or b":" not in t or \
                                t.split(b":")[0].lower() in (b"content-length", b"transfer-encoding", b"host"):
                            return self._violation("trailer", t)
                with self.lock:
                    self.got.append((method, target, body))
                echo = ("ECHO %s %s %d" % (method, target, body)).encode("latin-1")
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(echo), echo))
        except OSError:
            return
        finally:
            c.close()


def valid_request(rnd, target):
    """(bytes, method, body length): a request every HTTP/1.1 server agrees on."""
    kind = rnd.randrange(6)
    host = b"Host: o.test\r\n"
    if kind == 0:
        return b"GET %s HTTP/1.1\r\n%s\r\n" % (target, host), "GET", 0
    if kind == 1:
        body = bytes(rnd.randrange(97, 123) for _ in range(rnd.randrange(0, 300)))
        return (b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (target, host, len(body), body),
                "POST", len(body))
    if kind == 2:
        sizes = [rnd.randrange(1, 40) for _ in range(rnd.randrange(0, 4))]
        chunks = b"".join(b"%x%s\r\n%s\r\n" % (n, b";ext=1" if rnd.random() < 0.3 else b"", b"z" * n)
                          for n in sizes)
        trailer = b"X-Sum: 1\r\n" if rnd.random() < 0.3 else b""
        return (b"PUT %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n%s0\r\n%s\r\n" % (
            target, host, chunks, trailer), "PUT", sum(sizes))
    if kind == 3:
        return (b"DELETE http://o.test%s HTTP/1.1\r\nHost: o.test\r\n\r\n" % target, "DELETE", 0)
    if kind == 4:
        return (b"GET %s HTTP/1.1\r\n%sConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n" % (target, host),
                "GET", 0)
    return (b"OPTIONS %s HTTP/1.1\r\n%sContent-Length: 0\r\n\r\n" % (target, host), "OPTIONS", 0)


MUTATIONS = [
    lambda r, rnd: r.replace(b"\r\n\r\n", b"\r\nConnection: Content-Length\r\n\r\n", 1),
    lambda r, rnd: r.replace(b"\r\n\r\n", b"\r\nConnection: Host, Transfer-Encoding\r\n\r\n", 1),
    lambda r, rnd: r.replace(b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\n", 1),
    lambda r, rnd: r.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n", 1),
    lambda r, rnd: r.replace(b"Transfer-Encoding: chunked",
                             rnd.choice([b"Transfer-Encoding: chunked, identity", b"Transfer-Encoding:\tchunked ",
                                         b"Transfer-Encoding: xchunked", b"Transfer-Encoding : chunked",
                                         b"Transfer-encoding: Chunked"]), 1),
    lambda r, rnd: r.replace(b"Host: o.test", b"Host: o.test\r\nHost: p.test", 1),
    lambda r, rnd: r.replace(b"\r\n", b"\n", 1),
    lambda r, rnd: r.replace(b"\r\n\r\n", b"\r\nX-Fold: a\r\n b\r\n\r\n", 1),
    lambda r, rnd: r.replace(b"\r\n\r\n", b"\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n", 1),
    lambda r, rnd: r.replace(b"0\r\n\r\n", b"0\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n", 1),
    lambda r, rnd: r.replace(b"0\r\n\r\n", b"0\r\nContent-Length: 7\r\n\r\n", 1),
    lambda r, rnd: r.replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\nX: \x00\r\n", 1),
    lambda r, rnd: r.replace(b"/o/", b"http://evil.test/o/", 1),
    lambda r, rnd: r.replace(b"Content-Length: ", b"Content-Length: +", 1),
    lambda r, rnd: r[:rnd.randrange(len(r))] + bytes([rnd.randrange(256)]) + r[rnd.randrange(len(r)):],
    lambda r, rnd: r + b"GET /SMUGGLED HTTP/1.1\r\nHost: o.test\r\n\r\n"[:rnd.randrange(10, 30)],
]


def exchange(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    out = b""
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except OSError:
        pass
    finally:
        s.close()
    return out


def parse_responses(out):
    """(status, echo body or None) for each response, in order."""
    res = []
    while out:
        head, sep, rest = out.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        cl = 0
        for ln in lines[1:]:
            n, _, v = ln.partition(b":")
            if n.lower() == b"content-length":
                cl = int(v)
        res.append((status, rest[:cl]))
        out = rest[cl:]
    return res


def test_desync_oracle(procs, tmp_path):
    b = StrictBackend()
    log = str(tmp_path / "access.json")
    _, port = start_proxy(procs, [b], "--access-log", log, "--access-log-format", "json")
    rnd = random.Random(SEED)
    sent = {}  # target -> (method, body length) while its connection was clean, else None
    for ci in range(CONNS):
        reqs, data, clean = [], b"", True
        for ri in range(rnd.randrange(1, 5)):
            target = b"/o/%d/%d" % (ci, ri)
            raw, method, blen = valid_request(rnd, target)
            if rnd.random() < 0.35:
                raw = rnd.choice(MUTATIONS)(raw, rnd)
                clean = False
            reqs.append((target.decode(), method, blen, clean))
            sent[target.decode()] = (method, blen) if clean else None
            data += raw
        responses = parse_responses(exchange(port, data))
        last = -1
        for k, (status, body) in enumerate(responses):
            if not body.startswith(b"ECHO "):
                assert status >= 400, (ci, status, body)  # the proxy's own refusal
                continue
            method, target, blen = body.decode("latin-1").split(" ")[1:4]
            # its own connection's request, in order: never another user's answer
            assert target.startswith("/o/%d/" % ci), (ci, body, data)
            idx = int(target.split("/")[3])
            assert idx > last, (ci, body, data)
            last = idx
            if k < len(reqs) and reqs[k][3]:
                assert (target, method, int(blen)) == reqs[k][:3], (ci, k, body, data)
        # after a refusal, nothing more was answered
        echoes = [i for i, (_, bd) in enumerate(responses) if bd.startswith(b"ECHO ")]
        assert echoes == list(range(len(echoes))), (ci, responses)

    def logged():
        try:
            with open(log) as f:
                return [json.loads(ln) for ln in f if ln.strip()]
        except (OSError, ValueError):
            return []
    forwarded = lambda: [e for e in logged() if e["upstream"] != "-"]
    wait_for(lambda: len(forwarded()) >= len(b.got), timeout=10, what="access log lines")
    assert b.violations == []
    fw = [(e["method"], e["path"].replace("http://o.test", ""), e["status"]) for e in forwarded()]
    # answered by the backend (it always says 200): exactly what it received
    answered = sorted(e[:2] for e in fw if e[2] == 200)
    assert answered == sorted((m, t) for m, t, _ in b.got)
    # cut by the proxy after forwarding began (a bad chunk, a client gone
    # mid-body): never complete at the backend
    cut = [e for e in fw if e[2] != 200]
    assert all(e[2] in (400, 408, 499, 502) for e in cut), cut
    assert not set(e[:2] for e in cut) & set(answered)
    for method, target, body in b.got:
        assert target in sent, target  # nothing the client did not send as a request
        if sent[target] is not None:
            assert (method, body) == sent[target], (target, method, body)
    # the run exercised both sides: most requests forwarded, many refused
    assert len(b.got) > CONNS and len(logged()) > len(b.got)
