"""tako proxy: the exact behaviour of each balancing strategy, through the
real binary, with backends defined here."""
import http.client
import os
import signal
import socket
import threading
import time

from proxy_helpers import Backend, get_name, recv_to_eof, start_proxy, write_file
from conftest import TAKO, free_port, wait_port, wait_for


def three():
    return [Backend("b1"), Backend("b2"), Backend("b3")]


def test_round_robin_fresh_connections(procs):
    bs = three()
    _, port = start_proxy(procs, bs)
    got = [get_name(port)[0] for _ in range(9)]
    assert got == ["b1", "b2", "b3"] * 3


def test_round_robin_keep_alive(procs):
    bs = three()
    _, port = start_proxy(procs, bs)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    got = []
    for _ in range(9):
        conn.request("GET", "/")
        r = conn.getresponse()
        got.append(r.read().decode())
        assert r.status == 200
    conn.close()
    assert got == ["b1", "b2", "b3"] * 3


def test_round_robin_exact_across_threads(procs):
    bs = three()
    _, port = start_proxy(procs, bs, threads=2)
    got = [get_name(port)[0] for _ in range(30)]
    assert got == ["b1", "b2", "b3"] * 10


def test_round_robin_skips_unhealthy_without_disturbing_order(procs):
    bs = three()
    _, port = start_proxy(procs, bs, "--health-path", "/health", "--health-interval", "100ms",
                          "--fall", "1")
    bs[1].healthy = False
    wait_for(lambda: all(get_name(port)[0] != "b2" for _ in range(3)), timeout=5,
             what="b2 out of rotation")
    got = [get_name(port)[0] for _ in range(6)]
    assert "b2" not in got
    # strictly alternating b1/b3
    assert all(got[i] != got[i + 1] for i in range(5)), got


def test_least_connections_avoids_busy_backend(procs):
    bs = three()
    _, port = start_proxy(procs, bs, "--strategy", "least_connections")
    # b1 gets the first request: make it slow
    done = {}

    def slow():
        done["r"] = get_name(port, "/slow?ms=2000")[0]

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: bs[0].count("/slow") == 1, timeout=5, what="slow request at b1")
    got = [get_name(port)[0] for _ in range(6)]
    t.join()
    assert done["r"] == "b1"
    assert "b1" not in got, got
    assert sorted(got) == ["b2"] * 3 + ["b3"] * 3
    # ties broken round robin: b2 and b3 alternate
    assert all(got[i] != got[i + 1] for i in range(5)), got


def test_random_is_uniform_enough(procs):
    bs = three()
    _, port = start_proxy(procs, bs, "--strategy", "random")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    counts = {}
    for _ in range(300):
        conn.request("GET", "/")
        name = conn.getresponse().read().decode()
        counts[name] = counts.get(name, 0) + 1
    assert set(counts) == {"b1", "b2", "b3"}
    assert all(c > 60 for c in counts.values()), counts


def test_p2c_prefers_less_loaded(procs):
    bs = three()
    _, port = start_proxy(procs, bs, "--strategy", "p2c")
    got = [get_name(port)[0] for _ in range(60)]
    assert set(got) == {"b1", "b2", "b3"}


def source_get(port, src):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = recv_to_eof(s)
    s.close()
    return data.partition(b"\r\n\r\n")[2].decode()


def test_ip_hash_stable_and_consistent(procs, tmp_path):
    bs = three() + [Backend("b4")]
    bfile = str(tmp_path / "backends")
    write_file(bfile, "".join("%s=%s\n" % (b.name, b.addr) for b in bs[:3]))
    p, port = start_proxy(procs, [], "--strategy", "ip_hash", "--backends-file", bfile)
    clients = ["127.0.0.%d" % i for i in range(2, 62)]
    first = {c: source_get(port, c) for c in clients}
    for c in clients:
        assert source_get(port, c) == first[c]
    assert len(set(first.values())) == 3
    # 3 -> 4 backends: about a quarter of the clients move, all to b4
    write_file(bfile, "".join("%s=%s\n" % (b.name, b.addr) for b in bs))
    os.kill(p.pid, signal.SIGHUP)
    # new backends wait for their first check: give it a moment
    wait_for(lambda: any(source_get(port, c) == "b4" for c in clients[:20]), timeout=5,
             what="b4 in rotation")
    second = {c: source_get(port, c) for c in clients}
    moved = [c for c in clients if second[c] != first[c]]
    assert all(second[c] == "b4" for c in moved), "clients moved between old backends"
    assert 4 <= len(moved) <= 27, len(moved)


def test_ip_hash_failover_and_return(procs):
    bs = three()
    _, port = start_proxy(procs, bs, "--strategy", "ip_hash", "--health-path", "/health",
                          "--health-interval", "100ms", "--fall", "1", "--rise", "1")
    home = source_get(port, "127.0.0.9")
    b = next(x for x in bs if x.name == home)
    b.healthy = False
    wait_for(lambda: source_get(port, "127.0.0.9") != home, timeout=5, what="failover")
    other = source_get(port, "127.0.0.9")
    assert other != home and source_get(port, "127.0.0.9") == other
    b.healthy = True
    wait_for(lambda: source_get(port, "127.0.0.9") == home, timeout=5, what="return home")


def test_ip_hash_trusts_xff_only_from_trusted(procs):
    bs = three()
    _, port = start_proxy(procs, bs, "--strategy", "ip_hash", "--trusted-proxy", "127.0.0.1/32")

    def via(xff, src="127.0.0.1"):
        s = socket.socket()
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(("GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: %s\r\nConnection: close\r\n\r\n"
                   % xff).encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        return data.partition(b"\r\n\r\n")[2].decode()

    # from the trusted peer, the client in XFF decides: same as that client directly
    for i in range(2, 12):
        assert via("10.9.8.%d" % i) == via("10.9.8.%d" % i)
    names = {via("10.1.2.%d" % i) for i in range(2, 40)}
    assert len(names) > 1
    # from an untrusted peer, XFF is ignored: one source, one backend
    names = {via("10.1.2.%d" % i, src="127.0.0.5") for i in range(2, 20)}
    assert len(names) == 1


def test_sticky_cookie_pins_and_repins(procs):
    bs = three()
    _, port = start_proxy(procs, bs, "--strategy", "sticky", "--health-path", "/health",
                          "--health-interval", "100ms", "--fall", "1")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    first = r.read().decode()
    cookie = r.getheader("Set-Cookie")
    assert cookie and cookie.startswith("tako_backend=")
    val = cookie.split(";")[0]
    for _ in range(6):
        conn.request("GET", "/", headers={"Cookie": "a=b; " + val})
        r = conn.getresponse()
        assert r.read().decode() == first
        assert r.getheader("Set-Cookie") is None
    # the pinned backend dies: re-pinned elsewhere with a new cookie
    b = next(x for x in bs if x.name == first)
    b.healthy = False
    time.sleep(0.5)
    conn.request("GET", "/", headers={"Cookie": val})
    r = conn.getresponse()
    second = r.read().decode()
    assert second != first
    newc = r.getheader("Set-Cookie")
    assert newc and newc.split(";")[0] != val
    conn.close()
