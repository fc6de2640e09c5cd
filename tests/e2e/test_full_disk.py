"""A full disk is a clear, harmless failure wherever tako writes, proved on
real small file systems (tmpfs) that the tests size and fill themselves:

- a server whose /var/lib/tako fills up while a deploy ships the app (the
  host's own tmpfs, in its private mount namespace, resized by the test);
- a local TAKO_HOME on a tmpfs of a few MiB mounted in a private mount
  namespace that only the test's tako commands (and the takod they start)
  live in;
- a dockerd whose --data-root is on a small tmpfs.

Each case: the command fails with a message naming the server or path and
"no space left", what was running keeps serving, nothing half-written stays
behind, and the next command after space is freed works.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import ROOT, TAKO, Load, free_port, http, kill_takod_tree, wait_for
from dockerd import DockerD, _alive, _children
from hosts import Net
from test_servers import Remote

WHOAMI = os.path.join(ROOT, "examples", "whoami", "whoami")
MIB = 1024 * 1024


# ---- a server whose state disk is full ----

@pytest.fixture(scope="module")
def server(ssh_keys):
    """One test host and a one-replica project deployed to it."""
    n = Net(ssh_keys, 1, "d")
    home = tempfile.mkdtemp(prefix="tako-home-")
    proj = tempfile.mkdtemp(prefix="tako-fulldisk-proj-")
    with open(os.path.join(proj, "tako.yaml"), "w") as f:
        f.write("project:\n  name: tiny\nservers:\n  prod:\n    host: ${SERVER_HOST}\n"
                "    sshKey: ~/.ssh/id_ed25519\n"
                "environments:\n  production:\n    servers: [prod]\n    services:\n      web:\n"
                "        command: [%s]\n        port: 3000\n        replicas: 1\n" % WHOAMI)
    r = Remote(ssh_keys, n.hosts[0], proj, home)
    try:
        r.run("deploy", "prod", check=0)
        yield r
    finally:
        n.destroy()  # kills every process of the host: its tmpfs goes with its namespace
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(proj, ignore_errors=True)


def rsh(r, script):
    """A shell command on the test host, which must succeed; its stdout."""
    p = r.keys.ssh(r.host.ip, "sh", "-c", "'%s'" % script)
    assert p.returncode == 0, (script, p.stdout, p.stderr)
    return p.stdout


def state_df(r):
    """(used, available) KiB of the host's /var/lib/tako."""
    used, avail = rsh(r, "df -Pk /var/lib/tako | tail -1").split()[2:4]
    return int(used), int(avail)


def resize_state(r, free_kib):
    """Resize the host's /var/lib/tako tmpfs so that about FREE_KIB stay free."""
    used, _ = state_df(r)
    rsh(r, "mount -o remount,size=%dk /var/lib/tako" % (used + free_kib))


def revision(r):
    js = json.loads(r.run("ps", "prod", "--output", "json", check=0).stdout)
    return js["services"][0]["revision"]


def serves(r, n=5):
    """N requests to the host's balancer: how many were answered 200."""
    ok = 0
    for _ in range(n):
        st, _body, _h = http(80, "/", host=r.host.ip)
        ok += st == 200
    return ok


def leftovers(r):
    """Temporary files of shipping anywhere under the state directory."""
    return rsh(r, "find /var/lib/tako/apps /var/lib/tako/blobs -name \".tmp*\"").split()


def big_file(r, name, size):
    with open(os.path.join(r.dir, name), "wb") as f:
        f.write(os.urandom(size))


def test_server_setup_check_refuses_a_full_state_disk(server):
    rev = revision(server)
    resize_state(server, 40 * 1024)  # under the 64 MiB setup asks for
    try:
        r = server.run("deploy", "prod")
        assert r.returncode == 1, r.stdout + r.stderr
        err = r.stderr
        assert "server prod (root@%s:22) cannot run tako:" % server.host.ip in err, err
        assert re.search(r"no space left on device: only \d+ KB free in /var/lib/tako; "
                         r"tako needs at least 65536 KB", err), err
        assert err.count("no space left") == 1, err  # one message
        # Nothing changed: the same revision serves, nothing was sent.
        assert "sent" not in r.stdout, r.stdout
        assert revision(server) == rev
        assert serves(server) == 5
    finally:
        resize_state(server, 256 * 1024)


def test_server_takod_refuses_scale_on_a_full_disk(server):
    """Commands that skip setup's check (scale, restart) meet takod's own on
    the server: refused whole, naming the server and the directory."""
    rev = revision(server)
    resize_state(server, 0)
    rsh(server, "cat /dev/zero > /var/lib/tako/filler 2>/dev/null; true")
    try:
        r = server.run("scale", "prod", "web=2")
        assert r.returncode == 1, r.stdout + r.stderr
        assert ("server prod (root@%s:22): no space left on device: the state directory "
                "/var/lib/tako has 0 KB free" % server.host.ip) in r.stderr, r.stderr
        assert serves(server) == 5
        assert revision(server) == rev
    finally:
        rsh(server, "rm -f /var/lib/tako/filler")
        resize_state(server, 256 * 1024)
    js = json.loads(server.run("ps", "prod", "--output", "json", check=0).stdout)
    assert len(js["services"][0]["replicas"]) == 1


@pytest.mark.parametrize("size_mib,where", [
    pytest.param(80, "/var/lib/tako/blobs/", marks=pytest.mark.slow),  # the contents do not fit
    (40, "/var/lib/tako/apps/tiny/web/.tmp-"),  # they fit, the revision's tree does not
])
def test_server_disk_full_while_shipping(server, size_mib, where):
    rev = revision(server)
    resize_state(server, 70 * 1024)  # passes setup's check (64 MiB), not the app
    used0, _ = state_df(server)
    big_file(server, "big.bin", size_mib * MIB)
    try:
        with Load(80, path="/", host=server.host.ip, clients=2, max_seconds=60,
                  max_requests=20000) as load:
            r = server.run("deploy", "prod")
        assert r.returncode == 1, r.stdout + r.stderr
        err = r.stderr
        assert "server prod (root@%s:22): cannot store the files" % server.host.ip in err, err
        assert "no space left on device: writing %s" % where in err, err
        assert "free some space on the server and deploy again" in err, err
        # The running revision kept serving during the attempt and after it.
        assert load.ok > 0 and load.failed == 0, (load.ok, load.failed)
        assert revision(server) == rev
        assert serves(server) == 5
        # Nothing half-written stays: no temporary tree or blob, and the
        # contents this deploy stored are gone again.
        assert leftovers(server) == []
        used1, _ = state_df(server)
        assert used1 < used0 + 1024, (used0, used1)
    finally:
        os.unlink(os.path.join(server.dir, "big.bin"))


def test_server_deploy_works_once_space_is_freed(server):
    """The deploy the tests above saw fail (the same 40 MiB file), once the
    operator made room: nothing of the failed attempts stands in its way."""
    rev = revision(server)
    big_file(server, "big.bin", 40 * MIB)
    try:
        resize_state(server, 200 * 1024)
        r = server.run("deploy", "prod", check=0)
        assert re.search(r"web: sent 1 of 2 files", r.stdout), r.stdout
        assert revision(server) != rev
        assert serves(server) == 5
        assert rsh(server, "ls /var/lib/tako/apps/tiny/web/*/big.bin").strip()
        assert leftovers(server) == []
    finally:
        os.unlink(os.path.join(server.dir, "big.bin"))


# ---- a full local state directory ----

APP = r'''
import http.server, os, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%s\n" % socket.gethostname()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):  # one line on stdout per request
        print("request %s %s" % (self.path, "x" * 200), flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


class PrivateMount:
    """A tmpfs of SIZE mounted at a fresh directory inside a private mount
    namespace held by one recorded process: the tako commands of the test
    (and the takod they start) run in it through nsenter, the test reads
    its files through /proc/PID/root. Nothing of it shows on this machine;
    destroy() unmounts it and ends the holder by its PID."""

    def __init__(self, size):
        self.dir = tempfile.mkdtemp(prefix="tako-fd%d-" % os.getpid(), dir="/tmp")
        self.holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep",
                                        "900"], start_new_session=True)
        self.pid = self.holder.pid
        self.mounted = False
        me = os.readlink("/proc/self/ns/mnt")
        wait_for(lambda: os.readlink("/proc/%d/ns/mnt" % self.pid) != me, what="unshare")
        subprocess.run(["nsenter", "-t", str(self.pid), "-m", "mount", "-t", "tmpfs", "-o",
                        "size=%s,mode=0700" % size, "tmpfs", self.dir], check=True)
        self.mounted = True

    def path(self, p):
        """A path inside the namespace, as this process can open it."""
        return "/proc/%d/root%s" % (self.pid, p)

    def run(self, argv, cwd, env, timeout=120):
        e = dict(os.environ)
        e.update(env)
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--wd=" + cwd] + argv,
                              env=e, capture_output=True, text=True, timeout=timeout)

    def fill(self):
        """Fill the file system to the last block."""
        with open(self.path(os.path.join(self.dir, "filler")), "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                assert e.errno == 28, e  # ENOSPC
        st = os.statvfs(self.path(self.dir))
        assert st.f_bavail == 0, st

    def free(self):
        os.unlink(self.path(os.path.join(self.dir, "filler")))

    def destroy(self):
        if self.mounted:
            subprocess.run(["nsenter", "-t", str(self.pid), "-m", "umount", "-l", self.dir])
        self.holder.kill()
        self.holder.wait(10)
        os.rmdir(self.dir)


@pytest.fixture
def local(tmp_path):
    m = PrivateMount("16m")
    home = os.path.join(m.dir, "home")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "app.py").write_text(APP)
    port, mport = free_port(), free_port()
    m.env = {"TAKO_HOME": home, "NO_COLOR": "1"}
    m.home, m.proj, m.port, m.mport = home, str(proj), port, mport

    def yaml(replicas, extra=""):
        (proj / "tako.yaml").write_text(
            "project:\n  name: fd%d\nenvironments:\n  production:\n    http: %d\n"
            "    metrics: 127.0.0.1:%d\n"
            "    services:\n      web:\n        command: [python3, app.py]\n"
            "        port: 3000\n        replicas: %d\n%s"
            % (os.getpid(), port, mport, replicas, extra))
    m.yaml = yaml
    m.tako = lambda *a: m.run([TAKO] + list(a), m.proj, m.env)
    try:
        yield m
    finally:
        kill_takod_tree(m.path(home))
        m.destroy()


def running(m):
    js = json.loads(m.tako("ps", "--output", "json").stdout)
    return {(rep["name"], s["revision"]) for s in js["services"] for rep in s["replicas"]
            if rep.get("state") == "running"}


def replicas(m):
    js = json.loads(m.tako("ps", "--output", "json").stdout)
    return [rep for s in js["services"] for rep in s["replicas"]]


def test_local_state_disk_full(local):
    m = local
    m.yaml(2)
    r = m.tako("deploy")
    assert r.returncode == 0, r.stdout + r.stderr
    before = running(m)
    assert len(before) == 2
    takod = int(open(m.path(os.path.join(m.home, "takod.pid"))).read())
    m.fill()
    # Replicas keep serving while each request's log line meets a full disk.
    with Load(m.port, path="/", clients=2, max_seconds=30, max_requests=400) as load:
        wait_for(lambda: load.ok + load.failed >= 400, timeout=30, what="400 requests")
    assert load.failed == 0 and load.ok >= 400, load.errors[:3]
    # ... and the lines that met it are counted where one can see them now.
    st, _h, body = http(m.mport, "/metrics")
    assert st == 200
    dropped = [float(v) for v in re.findall(
        r"^tako_replica_log_lines_dropped_total\{[^}]*\} (\S+)$", body.decode(), re.M)]
    assert len(dropped) == 2 and sum(dropped) >= 200, dropped
    # deploy and scale are refused before anything changes, naming the path.
    want = "no space left on device: the state directory %s has 0 KB free" % m.home
    r = m.tako("scale", "web=3")
    assert r.returncode == 1, r.stdout + r.stderr
    assert want in r.stderr, r.stderr
    m.yaml(2, "        env:\n          CHANGED: '1'\n")
    r = m.tako("deploy")
    assert r.returncode == 1, r.stdout + r.stderr
    assert want in r.stderr, r.stderr
    r = m.tako("down")  # cannot be recorded either: refused whole
    assert r.returncode == 1, r.stdout + r.stderr
    assert want in r.stderr, r.stderr
    assert running(m) == before
    os.kill(takod, 0)  # takod is alive
    st, body, _ = http(m.port, "/")
    assert st == 200
    # A replica that crashes now cannot be started again (its files need
    # room): it waits, says why, and is retried, not given up on.
    victim = replicas(m)[0]
    os.kill(victim["pid"], signal.SIGKILL)

    def waiting():
        rep = [r for r in replicas(m) if r["name"] == victim["name"]][0]
        return rep if rep["state"] == "backoff" and "No space left on device; trying again" in \
            rep.get("last_error", "") else None
    rep = wait_for(waiting, what="the crashed replica waiting for room")
    assert "cannot write %s/replicas/%s/spec.json" % (m.home, victim["name"]) in rep["last_error"]
    assert http(m.port, "/")[0] == 200  # the other one serves
    # Space again: the store is whole, the dropped lines are told in the
    # log, and the refused commands work.
    m.free()
    wait_for(lambda: len(running(m)) == 2, timeout=30, what="the crashed replica back")
    for _ in range(10):
        assert http(m.port, "/")[0] == 200

    def notes():
        t = m.tako("logs", "--tail", "0").stdout
        return [(name, int(k)) for name, k in re.findall(
            r"^(\S+) \| tako: (\d+) log lines? dropped: No space left on device$", t, re.M)]
    # Each replica tells its count with its next line (health checks write
    # one soon). Most of the 400 lines met the full disk (a few fit in a
    # page's slack); the crashed replica's new supervisor tells what the old
    # one could not.
    def told():
        n = notes()
        return n if (sum(k for _, k in n) >= 200 and
                     max([k for name, k in n if name == victim["name"]] or [0]) > 50) else None
    try:
        wait_for(told, timeout=20, what="the notes")
    except TimeoutError:
        raise AssertionError(notes())
    assert {name for name, _ in notes()} == {name for name, _ in before}
    # (SQLite resolves /proc/PID/root to this namespace's /: ask from inside.)
    chk = m.run(["python3", "-c", "import sqlite3, sys; print(sqlite3.connect(sys.argv[1])"
                 ".execute('PRAGMA integrity_check').fetchone()[0])",
                 os.path.join(m.home, "state.db")], m.proj, {})
    assert chk.stdout.strip() == "ok", chk.stdout + chk.stderr
    r = m.tako("deploy")
    assert r.returncode == 0, r.stdout + r.stderr
    r = m.tako("scale", "web=3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(running(m)) == 3
    assert os.readlink("/proc/%d/exe" % takod)  # the same takod throughout


# ---- a Docker engine whose data root is full ----

class SmallDockerD(DockerD):
    """A private dockerd whose --data-root is a tmpfs of SIZE, mounted in
    dockerd's own private mount namespace (`unshare -m`): the mount, and
    every overlay dockerd makes on it, exist only there and go with it
    when stop() ends dockerd and containerd by PID."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def _spawn(self, timeout=60.0):
        log = open(self.log_path, "ab")
        script = ('set -e; mount -t tmpfs -o size=%s tmpfs "$1"; shift; exec "$@"' % self.size)
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
             self.data_root, "dockerd", "--bridge=none", "--iptables=false",
             "--ip6tables=false", "--data-root", self.data_root, "--exec-root", self.exec_root,
             "-H", self.host, "--pidfile", self.pidfile],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.pid = self.proc.pid  # unshare and sh exec: this is dockerd
        wait_for(lambda: self.proc.poll() is not None or self.ping(), timeout=timeout,
                 what="dockerd")
        assert self.proc.poll() is None, self.log()
        self.containerd_pids = [c for c in _children(self.pid) if _alive(c)]

    def df(self):
        """(used, available) KiB of the data root, seen from dockerd's namespace."""
        st = os.statvfs("/proc/%d/root%s" % (self.pid, self.data_root))
        return ((st.f_blocks - st.f_bfree) * st.f_frsize // 1024,
                st.f_bavail * st.f_frsize // 1024)


@pytest.fixture
def small_docker(tako):
    d = SmallDockerD("48m")
    try:
        d.start()
        d.build_whoami_static()
        yield d
    finally:
        # takod first: it would start its containers again behind the
        # cleanup's back.
        kill_takod_tree(tako.home)
        d.stop()


@pytest.mark.slow
def test_docker_data_root_full_fails_the_build_and_changes_nothing(tako, small_docker):
    dk = small_docker
    tako.env.update(dk.env)
    port = free_port()
    appdir = os.path.join(tako.dir, "app")
    os.makedirs(appdir)
    shutil.copy(dk.whoami_static, os.path.join(appdir, "whoami"))

    def dockerfile(extra):
        with open(os.path.join(appdir, "Dockerfile"), "w") as f:
            f.write("FROM scratch\nCOPY whoami /whoami\n%sCMD [\"/whoami\"]\n" % extra)
    dockerfile("")
    tako.write("tako.yaml", "project:\n  name: fd%d\nenvironments:\n  production:\n"
               "    http: %d\n    services:\n      web:\n        runtime: docker\n"
               "        build: app\n        port: 3000\n        replicas: 1\n"
               % (os.getpid(), port))
    tako.run("deploy", check=0, timeout=300)
    name = "fd%d-web-1" % os.getpid()
    cid = dk.inspect(name)["Id"]
    images = dk.docker("images", "-q").stdout.split()
    assert http(port, "/")[0] == 200
    used0, _ = dk.df()

    # 20 MiB of context and 20 MiB more for the layer it is copied into:
    # more than the data root has left.
    with open(os.path.join(appdir, "big.bin"), "wb") as f:
        f.write(os.urandom(20 * MIB))
    dockerfile("COPY big.bin /big.bin\n")
    with Load(port, path="/", clients=2, max_seconds=120, max_requests=20000) as load:
        r = tako.run("deploy", timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "no space left on device" in out, out  # the builder's own words
    assert re.search(r"Step \d+/\d+ : COPY big.bin /big.bin", out), out  # its last lines
    assert load.ok > 0 and load.failed == 0, load.errors[:3]
    # Nothing changed: the same container serves, no new image stays, and
    # the data root is back to what it held.
    assert dk.inspect(name)["Id"] == cid and dk.inspect(name)["State"]["Running"]
    assert dk.docker("images", "-q").stdout.split() == images
    assert http(port, "/")[0] == 200
    used1, _ = dk.df()
    assert used1 < used0 + 2048, (used0, used1)

    # With a file that fits, the next deploy works.
    with open(os.path.join(appdir, "big.bin"), "wb") as f:
        f.write(os.urandom(1 * MIB))
    tako.run("deploy", check=0, timeout=300)
    assert dk.inspect(name)["Id"] != cid
    assert http(port, "/")[0] == 200
