"""`tako proxy --https`: TLS termination in front of test backends — the
backend sees X-Forwarded-Proto: https, SNI picks the certificate of each
name, HTTP redirects with 308, HSTS, a certificate re-read on SIGHUP while a
connection stays open, and the faults of a public TLS port: plain HTTP and
garbage, a handshake that never finishes, many half-open connections (their
cost is bounded and they are closed by the header timeout), while normal
clients keep being served."""
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import TAKO, free_port, wait_for, wait_port
from proxy_helpers import Backend, recv_to_eof


def make_cert(d, name, cn=None):
    """Self-signed EC certificate for name (CN and SAN); returns (cert, key)."""
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=%s" % (cn or name), "-addext", "subjectAltName=DNS:%s" % name],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def backends():
    bs = [Backend("b1"), Backend("b2")]
    yield bs
    for b in bs:
        b.stop()


def start(procs, bs, certs, *extra):
    http_port, https_port = free_port(), free_port()
    argv = [TAKO, "proxy", "--listen", "127.0.0.1:%d" % http_port, "--https",
            "127.0.0.1:%d" % https_port, "--threads", "1"]
    for b in bs:
        argv += ["--backend", "%s=%s" % (b.name, b.addr)]
    for c, k in certs:
        argv += ["--tls-cert", c, "--tls-key", k]
    p = procs.start(argv + list(extra), name="proxy")
    wait_port(https_port, proc=p)
    wait_port(http_port, proc=p)
    return p, http_port, https_port


def tls_get(port, host, cafile, path="/", sock=None):
    ctx = ssl.create_default_context(cafile=cafile)
    s = ctx.wrap_socket(sock or socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname=host)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
    data = recv_to_eof(s)
    cert = s.getpeercert()
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body, cert


def test_forwarded_proto_sni_redirect_hsts(procs, tmp_path, backends):
    a = make_cert(str(tmp_path), "a.test")
    b = make_cert(str(tmp_path), "b.test")
    _, http_port, https_port = start(procs, backends, [a, b], "--redirect-https", "--hsts", "1h")
    head, body, cert = tls_get(https_port, "a.test", a[0])
    assert head.startswith("HTTP/1.1 200") and body in (b"b1", b"b2")
    assert "Strict-Transport-Security: max-age=3600" in head
    assert dict(x[0] for x in cert["subject"])["commonName"] == "a.test"
    _, _, cert = tls_get(https_port, "b.test", b[0])
    assert dict(x[0] for x in cert["subject"])["commonName"] == "b.test"
    reqs = backends[0].app_requests() + backends[1].app_requests()
    assert len(reqs) == 2
    for r in reqs:
        assert r.header("x-forwarded-proto") == "https"
        assert r.header("x-forwarded-for") == "127.0.0.1"
    # plain HTTP for a host with a certificate: 308 to https, path kept
    s = socket.create_connection(("127.0.0.1", http_port), timeout=5)
    s.sendall(b"GET /x?y=1 HTTP/1.1\r\nHost: b.test:80\r\n\r\n")
    resp = s.recv(4096).decode()
    s.close()
    assert resp.startswith("HTTP/1.1 308 Permanent Redirect\r\n"), resp
    assert "Location: https://b.test:%d/x?y=1\r\n" % https_port in resp
    # a host without one is proxied over plain HTTP as before
    s = socket.create_connection(("127.0.0.1", http_port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
    resp = s.recv(4096).decode()
    s.close()
    assert resp.startswith("HTTP/1.1 200"), resp
    assert len(backends[0].app_requests() + backends[1].app_requests()) == 3


def test_sighup_swaps_certificate_keeping_open_connection(procs, tmp_path, backends):
    c, k = make_cert(str(tmp_path), "a.test")
    p, _, https_port = start(procs, backends, [(c, k)])
    ctx = ssl.create_default_context(cafile=c)
    old = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https_port), timeout=10),
                          server_hostname="a.test")
    old.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert old.recv(4096).startswith(b"HTTP/1.1 200")
    serial1 = old.getpeercert()["serialNumber"]
    d2 = tmp_path / "new"
    d2.mkdir()
    c2, k2 = make_cert(str(d2), "a.test")
    os.replace(c2, c)
    os.replace(k2, k)
    os.kill(p.pid, signal.SIGHUP)
    wait_for(lambda: "certificates re-read" in procs.log(p), timeout=10)
    _, _, cert = tls_get(https_port, "a.test", c)
    assert cert["serialNumber"] != serial1
    # the connection made before the swap still works on the old certificate
    old.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert old.recv(4096).startswith(b"HTTP/1.1 200")
    old.close()
    # a broken file on the next SIGHUP: the loaded certificate stays
    serial2 = cert["serialNumber"]
    with open(c + ".new", "w") as f:
        f.write("not a certificate\n")
    good = open(c).read()
    os.replace(c + ".new", c)
    os.kill(p.pid, signal.SIGHUP)
    wait_for(lambda: "keeping the certificate in use" in procs.log(p), timeout=10)
    with open(c, "w") as f:
        f.write(good)
    _, _, cert = tls_get(https_port, "a.test", c)
    assert cert["serialNumber"] == serial2


def test_bad_flags_named(procs, tmp_path):
    c, k = make_cert(str(tmp_path), "a.test")
    r = subprocess.run([TAKO, "proxy", "--https", "127.0.0.1:%d" % free_port(), "--backend",
                        "127.0.0.1:1"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--https needs a certificate" in r.stderr
    r = subprocess.run([TAKO, "proxy", "--https", "127.0.0.1:%d" % free_port(), "--backend",
                        "127.0.0.1:1", "--tls-cert", c], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "come in pairs" in r.stderr
    other = make_cert(str(tmp_path), "b.test")
    r = subprocess.run([TAKO, "proxy", "--https", "127.0.0.1:%d" % free_port(), "--backend",
                        "127.0.0.1:1", "--tls-cert", c, "--tls-key", other[1]],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "--tls-cert %s: %s: the private key does not match the certificate" % (c, c) in r.stderr


def accepted_on(pid, port):
    """Connections to port that process pid has accepted (holds as an fd):
    exact, where a count of its fds also sees a health check or the
    readiness probe's connection still being closed."""
    r = subprocess.run(["ss", "-tnpH", "state", "established", "( sport = :%d )" % port],
                       capture_output=True, text=True, timeout=60, check=True)
    return sum(1 for line in r.stdout.splitlines() if "pid=%d," % pid in line)


def stuck_proxy_report(pid, port):
    """What a proxy that stopped accepting was doing: the listening socket's
    accept queue (ss: Recv-Q), its threads' states and stacks (gdb)."""
    out = []
    for argv in (["ss", "-ltnH", "sport = :%d" % port],
                 ["sh", "-c", "cat /proc/%d/task/*/stat | cut -d' ' -f1-3" % pid],
                 ["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"]):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            out.append("$ %s\n%s%s" % (" ".join(argv), r.stdout[-3000:], r.stderr[-500:]))
        except (OSError, subprocess.TimeoutExpired) as e:
            out.append("$ %s: %s" % (" ".join(argv), e))
    return "\n".join(out)


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_plain_http_garbage_stalled_and_half_open_connections(procs, tmp_path, backends):
    c, k = make_cert(str(tmp_path), "a.test")
    p, _, https_port = start(procs, backends, [(c, k)], "--header-timeout", "1s")
    # plain HTTP on the HTTPS port: one clear line, then close
    s = socket.create_connection(("127.0.0.1", https_port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    data = recv_to_eof(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert data.endswith(b"This port speaks HTTPS; use https:// instead\n")
    # garbage: closed (or reset) without an answer
    s = socket.create_connection(("127.0.0.1", https_port), timeout=5)
    s.sendall(b"\x00\xff\x13garbage")
    try:
        assert s.recv(4096) == b""
    except ConnectionResetError:
        pass
    s.close()
    # a handshake that never finishes: half a ClientHello, then silence
    base_rss = rss_kib(p.pid)
    stalled = []
    for i in range(1000):
        s = socket.create_connection(("127.0.0.1", https_port), timeout=5)
        if i % 2:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # truncated ClientHello
        stalled.append(s)
    # and complete ClientHellos whose sender never finishes the handshake
    ctx = ssl.create_default_context()
    for _ in range(50):
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="a.test")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        s = socket.create_connection(("127.0.0.1", https_port), timeout=5)
        s.sendall(out.read())
        stalled.append(s)
    wait_for(lambda: accepted_on(p.pid, https_port) == 1050, timeout=10, what="1050 accepted")
    grown = rss_kib(p.pid) - base_rss
    # a normal client is served meanwhile
    head, body, _ = tls_get(https_port, "a.test", c)
    assert head.startswith("HTTP/1.1 200")
    # cost: bounded — no SSL object before the whole ClientHello is here, so
    # the 1000 half-sent ones cost a few hundred bytes each; the 50 that
    # started a handshake hold OpenSSL's state until the timeout
    print("RSS growth for 1050 stalled connections: %d KiB" % grown)
    # (ASan's redzones and quarantine make every allocation several times larger)
    assert grown < 8 * 1000 * (4 if "build/san" in TAKO else 1), grown
    # every stalled connection is closed by the header timeout
    wait_for(lambda: accepted_on(p.pid, https_port) == 0, timeout=15,
             what="stalled connections closed")
    closed = 0
    for s in stalled:
        s.settimeout(5)
        try:
            while s.recv(65536):  # the server's handshake messages, then EOF
                pass
            closed += 1
        except ConnectionResetError:
            closed += 1
        s.close()
    assert closed == 1050


def tls_conn(port, cafile, host="a.test"):
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                           server_hostname=host)


def read_response(s):
    """One response with Content-Length from s: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(65536)
        assert d, data
        data += d
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    while len(body) < n:
        d = s.recv(65536)
        assert d
        body += d
    return head.decode(), body


def test_large_bodies_keepalive_and_tunnel_over_tls(procs, tmp_path, backends):
    """What the transport contract asks of a new transport: bodies larger
    than every buffer both ways on one keep-alive connection, then an Upgrade
    tunnel, all over TLS."""
    c, k = make_cert(str(tmp_path), "a.test")
    _, _, https_port = start(procs, backends, [(c, k)])
    s = tls_conn(https_port, c)
    big = os.urandom(3 * 1024 * 1024 + 17)
    for _ in range(2):  # twice on the same connection
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % len(big)
                  + big)
        head, body = read_response(s)
        assert head.startswith("HTTP/1.1 200") and body == big
    s.close()
    s = tls_conn(https_port, c)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    assert data.startswith(b"HTTP/1.1 101")
    rest = data.partition(b"\r\n\r\n")[2]
    payload = os.urandom(200000)
    s.sendall(payload)
    got = rest
    while len(got) < len(payload):
        d = s.recv(65536)
        assert d
        got += d
    assert got == payload
    s.close()


@pytest.mark.slow
def test_ten_thousand_half_open_tls_connections_bounded(procs, tmp_path, backends):
    """10,000 connections that send the start of a ClientHello and stall:
    the balancer holds them at a few hundred bytes each, keeps serving a
    normal client, and closes every one at the header timeout."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 10000 + 500  # per process: our ends here, the proxy's there
    if hard < need:
        pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the proxy
    try:
        c, k = make_cert(str(tmp_path), "a.test")
        # The header timeout must outlast opening the 10,000 (seconds on a
        # slow machine), or the first ones close before the last are open.
        p, _, https_port = start(procs, backends, [(c, k)], "--header-timeout", "20s",
                                 "--max-conns", "12000")
        base_rss = rss_kib(p.pid)
        stalled = []
        t0 = time.monotonic()
        for _ in range(10000):
            s = socket.create_connection(("127.0.0.1", https_port), timeout=5)
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            stalled.append(s)
        opened_in = time.monotonic() - t0
        try:
            wait_for(lambda: accepted_on(p.pid, https_port) == 10000, timeout=30,
                     what="10000 accepted")
        except TimeoutError:
            raise AssertionError("accepted %d of %d (opened in %.1fs); log: %s\n%s" % (
                accepted_on(p.pid, https_port), 10000, opened_in, procs.log(p)[-2000:],
                stuck_proxy_report(p.pid, https_port)))
        grown = rss_kib(p.pid) - base_rss
        head, _, _ = tls_get(https_port, "a.test", c)
        assert head.startswith("HTTP/1.1 200")
        print("RSS growth for 10000 half-open TLS connections: %d KiB" % grown)
        assert grown < 10000 * (4 if "build/san" in TAKO else 1), grown  # < 1 KiB each
        wait_for(lambda: accepted_on(p.pid, https_port) == 0, timeout=60, what="all closed")
        for s in stalled:
            s.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_tls13_every_resumed_connection_gets_a_new_ticket(procs, tmp_path, backends):
    """TLS 1.3 tickets are for one use: a client that uses each ticket once
    (browsers, OpenSSL's clients, wrk) resumes every connection only when
    each resumed connection brings a new ticket."""
    cert, key = make_cert(str(tmp_path), "a.test")
    _, _, https_port = start(procs, backends, [(cert, key)])
    ctx = ssl.create_default_context(cafile=cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    sess, reused, ids = None, [], []
    for _ in range(4):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https_port), timeout=10),
                            server_hostname="a.test", session=sess)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = recv_to_eof(s)
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        reused.append(s.session_reused)
        sess = s.session  # the ticket this connection brought (read with the response)
        assert sess is not None and sess.has_ticket
        ids.append(sess.id)
        s.close()
    assert reused == [False, True, True, True]
    assert len(set(ids)) == 4, "a resumed connection brought no new ticket"
