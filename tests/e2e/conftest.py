"""Shared fixtures for end-to-end tests: they drive the real binaries.

Binaries come from $TAKO_BIN / $WHOAMI_BIN (the sanitizer run points them at
build/san), defaulting to the release build at the repository root. Every
process a test starts goes through `procs.start()`, which puts it in its own
process group and stops that group by PID when the test ends, pass or fail.
"""
import http.client
import http.client as http_client  # the helper named http() below shadows the package
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAKO = os.environ.get("TAKO_BIN", os.path.join(ROOT, "tako"))
WHOAMI = os.environ.get("WHOAMI_BIN", os.path.join(ROOT, "examples", "whoami", "whoami"))
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")


_handed_out = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_band_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def _worker_slice(base, span):
    """Under pytest -n, this test process's own part of a port band."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if workers > 1 and worker[2:].isdigit():
        span //= workers
        base += int(worker[2:]) % workers * span
    return base, span


# takod gives its replicas ports from the 10,000 under the ephemeral range;
# the takods of two test processes picking the same port in the same instant
# made a replica fail with "Address already in use". Each test process's
# takods get their own part of that band (TAKO_REPLICA_PORTS).
if _ephemeral_low() > 21024 and "TAKO_REPLICA_PORTS" not in os.environ:
    _b, _s = _worker_slice(_ephemeral_low() - 10000, 10000)
    os.environ["TAKO_REPLICA_PORTS"] = "%d-%d" % (_b, _b + _s - 1)


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago, and not handed out before in
    this run: the kernel may offer the same ephemeral port to two calls in a
    row, and a test that asks twice needs two different ports. Taken below
    the kernel's ephemeral range, where no outgoing connection can take it
    before the test's process binds it, and below the band takod gives its
    replicas (the 10,000 ports under the ephemeral range)."""
    lo = _ephemeral_low()
    if lo > 21024:
        # Under pytest -n each test process has its own slice of the band.
        base, span = _worker_slice(lo - 20000, 10000)
        start = _band_rng.randrange(span)
        for i in range(200):
            port = base + (start + i * 7919) % span
            if port in _handed_out:
                continue
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                continue
            finally:
                s.close()
            _handed_out.add(port)
            return port
    while True:
        s = socket.socket()
        s.bind((host, 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None):
    """Wait until something accepts on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing listening on %s:%d after %.1fs" % (host, port, timeout))


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    """Poll pred() until truthy; returns its value or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out waiting for " + what)
        time.sleep(interval)


def http(port, path="/", method="GET", host="127.0.0.1", headers=None, body=None, timeout=10.0,
         source=None):
    """One request on a fresh connection: (status, headers dict lower-cased, body bytes)."""
    conn = http_client.HTTPConnection(host, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def http_json(port, path="/", **kw):
    status, _, body = http(port, path, **kw)
    return status, json.loads(body) if body else None


def raw(port, data, host="127.0.0.1", timeout=5.0, read_all=True):
    """Send raw bytes, return every byte answered until the peer closes (or timeout)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not read_all:
                break
        return out
    finally:
        s.close()


class Procs:
    """Starts processes in their own process groups; stops them all at teardown."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, argv, env=None, name=None, cwd=None, stdout=None):
        name = name or os.path.basename(argv[0])
        log = open(os.path.join(self.tmp, "%s-%d.log" % (name, len(self.procs))), "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = subprocess.Popen(argv, env=full_env, cwd=cwd, stdout=stdout or log, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        p.log_path = log.name
        log.close()
        self.procs.append(p)
        return p

    def whoami(self, hostname, port=None):
        port = port or free_port()
        p = self.start([WHOAMI], env={"PORT": str(port), "HOSTNAME": hostname}, name=hostname)
        wait_port(port, proc=p)
        p.port = port
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=10.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return p.returncode

    def stop_all(self):
        for p in reversed(self.procs):
            try:
                self.stop(p, timeout=5.0)
            except Exception:
                pass
            # The group may hold children that outlived the leader.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def log(self, p):
        with open(p.log_path, "rb") as f:
            return f.read().decode(errors="replace")


@pytest.fixture
def procs(tmp_path):
    ps = Procs(str(tmp_path))
    yield ps
    ps.stop_all()


@pytest.fixture
def tako_home(tmp_path):
    """A private TAKO_HOME for the test (kept short: unix socket paths are limited)."""
    d = tempfile.mkdtemp(prefix="tako-home-")
    yield d
    for name in ("takod.pid", "dataplane.pid"):
        pidf = os.path.join(d, name)
        if os.path.exists(pidf):
            try:
                pid = int(open(pidf).read().strip())
                os.kill(pid, signal.SIGKILL)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
    subprocess.run(["rm", "-rf", d])


def run_tako(args, env=None, cwd=None, timeout=120, input=None):
    """Run `tako ARGS` to completion: CompletedProcess with text output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([TAKO] + list(args), env=full_env, cwd=cwd, timeout=timeout,
                          capture_output=True, text=True, input=input)


def pytest_configure(config):
    # `make test` runs the e2e suite twice: on the release build, then on the
    # ASan/UBSan build with -m "not slow and not release_only" (see
    # scripts/test.sh).
    config.addinivalue_line(
        "markers", "slow: long-running test (load, long timers); left out of the sanitizer run")
    # A test whose only additions to the rest of the suite are third-party
    # programs (a browser, Node packages, Redis, ab): the tako code on its
    # path runs under the sanitizers in the tests its module names. Give
    # those names where the marker is set.
    config.addinivalue_line(
        "markers", "release_only: adds no tako code path over the sanitizer run's other "
        "tests (the module says which); left out of the sanitizer run")


# ---- takod fixtures (deploy workflow) ----

def _kill_pid(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_takod_tree(home):
    """Stop takod, its data plane and every replica it started under HOME, by
    the PIDs in their files (takod first: it would restart the data plane)."""
    for name in ("takod.pid", "dataplane.pid"):
        pidf = os.path.join(home, name)
        if os.path.exists(pidf):
            try:
                _kill_pid(int(open(pidf).read().strip()))
            except ValueError:
                pass
    rdir = os.path.join(home, "replicas")
    if not os.path.isdir(rdir):
        return
    states = []
    for name in os.listdir(rdir):
        st = os.path.join(rdir, name, "state")
        if not os.path.exists(st):
            continue
        kv = dict(line.split("=", 1) for line in open(st).read().splitlines() if "=" in line)
        pids = []
        for key in ("shim_pid", "app_pid"):
            try:
                pids.append(int(kv.get(key, "0")))
            except ValueError:
                pids.append(0)
        states.append(pids)
    # SIGTERM to each supervisor first: it ends its whole tree, daemonized
    # children included; then SIGKILL whatever is left, by the same PIDs.
    for shim, _ in states:
        if shim > 1:
            _kill_pid(shim, signal.SIGTERM)
    def running(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(shim > 1 and running(shim) for shim, _ in states):
        time.sleep(0.05)
    for shim, app in states:
        for pid in (app, shim):
            if pid > 1:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                _kill_pid(pid)


class Tako:
    """A private TAKO_HOME plus helpers to run the CLI against it."""

    def __init__(self, home, workdir):
        self.home = home
        self.dir = workdir
        self.env = {"TAKO_HOME": home, "NO_COLOR": "1"}

    def run(self, *args, timeout=180, check=None, cwd=None, env=None):
        e = dict(self.env)
        e.update(env or {})
        r = run_tako(list(args), env=e, cwd=cwd or self.dir, timeout=timeout)
        if check is not None and r.returncode != check:
            raise AssertionError("tako %s exited %d (wanted %d)\nstdout:\n%s\nstderr:\n%s" % (
                " ".join(args), r.returncode, check, r.stdout, r.stderr))
        return r

    def ps_json(self, *extra):
        r = self.run("ps", "--output", "json", *extra, check=0)
        return json.loads(r.stdout)

    def write(self, name, text):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(text)

    def takod_pid(self):
        return int(open(os.path.join(self.home, "takod.pid")).read().strip())


@pytest.fixture
def tako(tmp_path):
    home = tempfile.mkdtemp(prefix="tako-home-")
    work = tmp_path / "project"
    work.mkdir()
    t = Tako(home, str(work))
    if os.environ.get("TAKO_TEST_KEEP"):
        t.env["TAKO_ACCESS_LOG"] = os.path.join(home, "access.log")
    yield t
    kill_takod_tree(home)
    keep = os.environ.get("TAKO_TEST_KEEP")  # a directory: keep each test's TAKO_HOME there
    if keep:
        os.makedirs(keep, exist_ok=True)
        subprocess.run(["cp", "-a", home, os.path.join(keep, os.path.basename(home))])
    subprocess.run(["rm", "-rf", home])


class Load:
    """Steady, bounded load: N keep-alive clients in threads, counting failures."""

    def __init__(self, port, path="/api/instance", clients=50, max_seconds=120.0,
                 max_requests=1_000_000, host="127.0.0.1", headers=None):
        import threading
        self.port, self.path, self.host = port, path, host
        self.headers = headers or {}
        self.clients = clients
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.errors = []
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self):
        conn = None
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if self.ok + self.failed >= self.max_requests:
                    return
            try:
                if conn is None:
                    conn = http_client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("GET", self.path, headers=self.headers)
                r = conn.getresponse()
                r.read()
                good = r.status == 200
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                with self.lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failed += 1
                        self.errors.append("status %d" % r.status)
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failed += 1
                    self.errors.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(60)
        return self.ok, self.failed


# ---- test hosts (network namespaces running sshd; see hosts.py) ----

@pytest.fixture(scope="session")
def ssh_keys():
    """Client and host keys, generated once per session."""
    from hosts import Keys
    k = Keys()
    yield k
    k.close()
