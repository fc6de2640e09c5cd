"""rt_measure.py — measurements of the process runtime through rt_driver
(not a test: it prints numbers). Run from the repository root after `make`:

    /usr/bin/python3 tests/drivers/rt_measure.py [N_REPLICAS] [N_LINES]

Every process it starts is stopped through the runtime before it exits.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(ROOT, "build", "rel", "tests", "rt_driver")
TAKO = os.path.join(ROOT, "tako")
WHOAMI = os.path.join(ROOT, "examples", "whoami", "whoami")


class Driver:
    def __init__(self, home):
        self.p = subprocess.Popen([DRIVER, home], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1, env=dict(os.environ, RT_SHIM_EXE=TAKO))
        self.events = []

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        while True:
            m = json.loads(self.p.stdout.readline())
            if m["type"] == "reply":
                return m
            self.events.append(m)

    def wait(self, pred):
        while not pred():
            self.events.append(json.loads(self.p.stdout.readline()))

    def count(self, key, value):
        return sum(1 for e in self.events if e.get(key) == value)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 1000000
    home = tempfile.mkdtemp(prefix="tako-rt-measure-")
    d = Driver(home)
    t0 = time.monotonic()
    for i in range(n):
        spec = {"project": "m", "service": "w", "index": i + 1, "argv": [WHOAMI],
                "port": free_port()}
        assert d.cmd("start " + json.dumps(spec))["ok"]
    t1 = time.monotonic()
    d.wait(lambda: d.count("new", "running") == n)
    t2 = time.monotonic()
    print("rt_start x%d: %.2f ms per call; all running after %.1f ms"
          % (n, (t1 - t0) * 1000 / n, (t2 - t0) * 1000))
    shims = [x["supervisor_pid"] for x in d.cmd("list")["replicas"]]
    rss = []
    for pid in shims:
        with open("/proc/%d/status" % pid) as f:
            rss += [int(l.split()[1]) for l in f if l.startswith("VmRSS")]
    print("tako shim RSS: %d..%d kB" % (min(rss), max(rss)))
    t0 = time.monotonic()
    for i in range(n):
        d.cmd("stop m-w-%d" % (i + 1))
    d.wait(lambda: d.count("type", "stopped") == n)
    print("rt_stop x%d: all done after %.1f ms" % (n, (time.monotonic() - t0) * 1000))

    text = "hello world 0123456789 abcdefghijklmnopqrstuvwxyz 0123456789"
    spec = {"project": "m", "service": "flood", "index": 1, "log_max": 64 << 20,
            "argv": ["/bin/sh", "-c", "yes '%s' | head -n %d; echo END >&2; sleep 600"
                     % (text, lines)]}
    path = os.path.join(home, "replicas", "m-flood-1", "output.log")
    t0 = time.monotonic()
    assert d.cmd("start " + json.dumps(spec))["ok"]
    deadline = t0 + 120
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 200))
                if b"stderr END" in f.read():
                    break
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    t = time.monotonic() - t0
    print("log capture: %d lines of %d bytes in %.2f s = %.0f lines/s"
          % (lines, len(text), t, lines / t))
    # Tail of a large log (the flood above: tens of MiB): 10 lines, then all.
    for count in (10, 0):
        t0 = time.monotonic()
        reps = 20 if count else 1
        for _ in range(reps):
            r = d.cmd("logs m-flood-1 %d 0" % count)
        print("rt_logs_tail(%s) over %.0f MB of logs: %.1f ms (%d lines)"
              % (count or "all", sum(os.path.getsize(os.path.join(os.path.dirname(path), f))
                                    for f in os.listdir(os.path.dirname(path))
                                    if f.startswith("output.log")) / 1e6,
                 (time.monotonic() - t0) * 1000 / reps, len(r["lines"])))
    d.cmd("stop m-flood-1")
    d.wait(lambda: d.count("type", "stopped") == n + 1)
    d.cmd("quit")
    d.p.wait(10)
    subprocess.run(["rm", "-rf", home])


if __name__ == "__main__":
    main()
