#!/usr/bin/env python3
"""idle_conns.py — memory cost of idle keep-alive client connections on a proxy.

Sends a few warm-up requests, samples the resident memory of the proxy's
whole process tree (master + workers + threads), then opens N client
connections that each complete one GET and stay idle, samples again and
reports the difference per connection that is still open at that moment.

  idle_conns.py --port 8080 --pid 1234 [--conns 5000] [--path /api/instance] [--tls]

With --tls every connection completes a TLS handshake first (certificate not
verified: the benchmark's own self-signed one) and stays idle over TLS.

Prints one JSON object on stdout. Exit status 0 on a measurement, 1 when
the proxy could not be measured (it died, refused connections, ...).
"""
import argparse
import json
import os
import resource
import socket
import sys
import time

HEAD_MAX = 65536          # a response head larger than this is an error
BODY_MAX = 1 << 20        # a body larger than this is an error
IO_TIMEOUT = 10.0         # seconds per blocking socket operation


def tree_pids(root):
    """root and all its descendants (by /proc/PID/task/TID/children)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    todo.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    return out


def rss_bytes(pid):
    """VmRSS in bytes, or 0 when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(root):
    pids = tree_pids(root)
    return sum(rss_bytes(p) for p in pids), len(pids)


def read_response(s):
    """Read one HTTP/1.1 response (Content-Length or chunked); returns status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_MAX:
            raise ValueError("response head over %d bytes" % HEAD_MAX)
        chunk = s.recv(16384)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    clen, chunked = None, False
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            clen = int(v.strip())
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:
        while not rest.endswith(b"0\r\n\r\n"):
            if len(rest) > BODY_MAX:
                raise ValueError("chunked body over %d bytes" % BODY_MAX)
            chunk = s.recv(16384)
            if not chunk:
                raise ConnectionError("connection closed inside a chunked body")
            rest += chunk
    elif clen is not None:
        if clen > BODY_MAX:
            raise ValueError("body over %d bytes" % BODY_MAX)
        while len(rest) < clen:
            chunk = s.recv(16384)
            if not chunk:
                raise ConnectionError("connection closed inside the body")
            rest += chunk
    return status


def one_request(s, req):
    s.sendall(req)
    return read_response(s)


def still_open(s):
    """True when the peer has not closed the (idle) connection."""
    if hasattr(s, "pending"):  # TLS: peek on the socket under it
        raw = socket.socket(fileno=os.dup(s.fileno()))
        try:
            return still_open(raw)
        finally:
            raw.close()
    s.setblocking(False)
    try:
        data = s.recv(1, socket.MSG_PEEK)
        return len(data) > 0  # unexpected bytes: open, but odd
    except BlockingIOError:
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="root PID of the proxy")
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--path", default="/api/instance")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds before a sample")
    ap.add_argument("--tls", action="store_true", help="connect with TLS")
    a = ap.parse_args()
    connect = socket.create_connection
    if a.tls:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def connect(addr, timeout):
            return ctx.wrap_socket(socket.create_connection(addr, timeout=timeout),
                                   server_hostname="bench.test")

    need = a.conns + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < need:
            print(json.dumps({"error": "RLIMIT_NOFILE %d < %d" % (soft, need)}))
            return 1

    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: tako-bench\r\n\r\n"
           % (a.path, a.port)).encode()
    addr = ("127.0.0.1", a.port)
    res = {"conns_wanted": a.conns}

    # Warm-up on a few connections, so lazy start-up allocations (upstream
    # connections, pools, first-use buffers) are in the "before" sample.
    for _ in range(20):
        s = connect(addr, timeout=IO_TIMEOUT)
        for _ in range(5):
            one_request(s, req)
        s.close()
    time.sleep(a.settle)
    res["rss_before"], res["processes"] = tree_rss(a.pid)
    if res["rss_before"] == 0:
        print(json.dumps({"error": "proxy process %d not found" % a.pid}))
        return 1

    socks, bad = [], 0
    t0 = time.monotonic()
    for _ in range(a.conns):
        try:
            s = connect(addr, timeout=IO_TIMEOUT)
        except OSError:
            bad += 1
            continue
        try:
            if one_request(s, req) != 200:
                bad += 1
        except (OSError, ValueError):
            bad += 1
        socks.append(s)
    res["open_seconds"] = round(time.monotonic() - t0, 2)
    time.sleep(a.settle)
    res["rss_after"], _ = tree_rss(a.pid)
    res["still_open"] = sum(1 for s in socks if still_open(s))
    res["failed_requests"] = bad
    for s in socks:
        s.close()
    if res["still_open"] > 0:
        res["bytes_per_conn"] = round((res["rss_after"] - res["rss_before"]) / res["still_open"], 1)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
