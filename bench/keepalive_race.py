#!/usr/bin/env python3
"""keepalive_race.py — how often a non-idempotent request dies on a pooled
upstream connection that its backend closes for being idle.

A backend closes every keep-alive connection IDLE_MS after its last answer
(as Node.js does after 5 s, gunicorn after 2 s). A client sends N POSTs, one
at a time, each GAP ms after the previous answer, GAP drawn uniformly from
[IDLE_MS - SPREAD, IDLE_MS + SPREAD]: the proxy's pooled connection is then
being closed by the backend just as the next POST is sent on it. Prints the
answers by status. A measurement, not a test.

  TAKO_BIN=./tako N=200 IDLE_MS=200 SPREAD=10 python3 bench/keepalive_race.py [tako proxy flags...]
"""
import collections
import os
import random
import socket
import subprocess
import sys
import threading
import time

TAKO = os.environ.get("TAKO_BIN", "./tako")
N = int(os.environ.get("N", "200"))
IDLE = int(os.environ.get("IDLE_MS", "200")) / 1000.0
SPREAD = int(os.environ.get("SPREAD", "10")) / 1000.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def serve(c):
    buf = b""
    c.settimeout(IDLE)
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                try:
                    d = c.recv(65536)
                except socket.timeout:
                    return  # idle: close, as a keep-alive timeout does
                if not d:
                    return
                buf += d
            head, _, buf = buf.partition(b"\r\n\r\n")
            n = 0
            for ln in head.split(b"\r\n"):
                if ln.lower().startswith(b"content-length:"):
                    n = int(ln.split(b":")[1])
            while len(buf) < n:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            buf = buf[n:]
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except OSError:
        pass
    finally:
        c.close()


def backend(ls):
    while True:
        try:
            c, _ = ls.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def main():
    bport, pport = free_port(), free_port()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", bport))
    ls.listen(64)
    threading.Thread(target=backend, args=(ls,), daemon=True).start()
    p = subprocess.Popen([TAKO, "proxy", "--listen", "127.0.0.1:%d" % pport, "--threads", "1",
                          "--backend", "127.0.0.1:%d" % bport] + sys.argv[1:],
                         stdout=subprocess.DEVNULL, start_new_session=True,
                         stderr=open(os.environ["PROXY_LOG"], "wb") if os.environ.get("PROXY_LOG") else subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", pport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        rnd = random.Random(1)
        counts = collections.Counter()
        for _ in range(N):
            s = socket.create_connection(("127.0.0.1", pport), timeout=10)
            s.sendall(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            out = b""
            while True:
                try:
                    d = s.recv(65536)
                except socket.timeout:
                    break
                if not d:
                    break
                out += d
            s.close()
            counts[out[9:12].decode() or "none"] += 1
            time.sleep(max(0.0, IDLE + rnd.uniform(-SPREAD, SPREAD)))
        print("tako=%s flags=%s N=%d idle=%dms spread=±%dms: %s" % (
            TAKO, " ".join(sys.argv[1:]) or "-", N, IDLE * 1000, SPREAD * 1000,
            ", ".join("%s: %d" % kv for kv in sorted(counts.items()))))
    finally:
        os.killpg(p.pid, 9)
        p.wait()
        ls.close()


if __name__ == "__main__":
    main()
