"""A private Docker engine for the tests: its own dockerd, data root, exec
root and socket, started once per test session and stopped by PID.

    from dockerd import dockerd, dk   # noqa: F401  (pytest fixtures)

`dockerd` (session): starts `dockerd --bridge=none --iptables=false
--ip6tables=false --data-root D --exec-root E -H unix://SOCK --pidfile P`
under a short unique directory, waits for GET /_ping, imports a base image
made from Debian's statically linked busybox (`docker import`, no registry
needed) and builds a static `whoami` for test images made FROM scratch. At
the end it removes every container still there by name, stops dockerd and
its containerd child by PID, unmounts whatever dockerd left mounted under
its directories (E/netns/default always) and removes them.

`dk` (per test): the same engine; every container created while the test
ran is removed by name when it ends, pass or fail.

There is no bridge network (--bridge=none, no iptables): containers use
host networking and listen on 127.0.0.1, so traffic stays on loopback.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUSYBOX = "/bin/busybox"
BASE_IMAGE = "tako-test/busybox:latest"
# Applets the base image links to busybox (the rest run as `busybox NAME`).
APPLETS = ["sh", "echo", "cat", "sleep", "hostname", "httpd", "ls", "env", "true", "false",
           "kill", "wc", "head", "printf", "date"]


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid):
    out = []
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _mounts_under(*dirs):
    """Mount points under any of dirs, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if any(mp == d or mp.startswith(d.rstrip("/") + "/") for d in dirs):
                found.append(mp)
    return sorted(set(found), key=lambda m: (-m.count("/"), m))


class DockerD:
    def __init__(self, bridge=False, netns=None, parent="/tmp"):
        # Short: the socket path must fit sun_path (108 bytes).
        self.dir = tempfile.mkdtemp(prefix="tkd%d-" % os.getpid(), dir=parent)
        # netns: run dockerd (so its containers and their host network) in
        # that `ip netns` network namespace. Through nsenter, not `ip netns
        # exec`: that one remounts /sys, hiding the cgroup mounts dockerd
        # needs. Its mounts stay in this mount namespace and stop() undoes them.
        self.netns = netns
        self.data_root = os.path.join(self.dir, "d")
        self.exec_root = os.path.join(self.dir, "e")
        self.sock = os.path.join(self.dir, "s")
        self.pidfile = os.path.join(self.dir, "p")
        self.log_path = os.path.join(self.dir, "dockerd.log")
        self.host = "unix://" + self.sock
        self.env = {"DOCKER_HOST": self.host}
        self.proc = None
        self.pid = 0
        self.containerd_pids = []
        self.base_image = BASE_IMAGE
        self.whoami_static = None
        # bridge=True: a bridge of its own (unique name and subnet) instead
        # of --bridge=none; published ports go through docker-proxy, so no
        # iptables rule is needed.
        self.bridge = "tkb%d" % (os.getpid() % 100000) if bridge else None
        self.bridge_net = "10.217.%d" % (os.getpid() % 200 + 20)

    # ---- lifecycle ----
    def start(self, timeout=60.0):
        os.makedirs(self.data_root)
        os.makedirs(self.exec_root)
        if self.bridge:
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", self.bridge_net + ".1/24", "dev", self.bridge],
                           check=True)
            subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        self._spawn(timeout)

    def _spawn(self, timeout=60.0):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            (["nsenter", "--net=/run/netns/" + self.netns] if self.netns else []) +
            ["dockerd", "--bridge=" + (self.bridge or "none"), "--iptables=false",
             "--ip6tables=false",
             "--data-root", self.data_root, "--exec-root", self.exec_root,
             "-H", self.host, "--pidfile", self.pidfile],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("dockerd exited with %s:\n%s" % (self.proc.returncode, self.log()))
            if self.ping():
                break
            if time.monotonic() > deadline:
                raise TimeoutError("dockerd did not answer /_ping:\n" + self.log())
            time.sleep(0.05)
        self.containerd_pids = [c for c in _children(self.pid) if _alive(c)]

    def ping(self):
        r = subprocess.run(["curl", "-s", "-m", "2", "--unix-socket", self.sock, "http://d/_ping"],
                           capture_output=True, text=True)
        return r.returncode == 0 and r.stdout == "OK"

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill_daemon(self, sig=signal.SIGKILL):
        """Kill dockerd (and its containerd) by PID, e.g. to test a daemon dying."""
        self.containerd_pids = list(set(self.containerd_pids + [c for c in _children(self.pid)]))
        for pid in [self.pid] + self.containerd_pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.remove_containers(self.container_names())
            except Exception:  # noqa: BLE001 - the daemon may be dead already
                pass
            self.containerd_pids = list(set(self.containerd_pids + _children(self.pid)))
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 10
        for pid in self.containerd_pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Containers that outlived a dockerd killed with -9: end each one's
        # init and its containerd-shim by the PIDs containerd's state names.
        self.kill_orphan_containers()
        for mp in _mounts_under(self.data_root, self.exec_root):
            subprocess.run(["umount", "-l", mp], capture_output=True)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill_orphan_containers(self):
        for top, _, files in os.walk(os.path.join(self.exec_root, "containerd", "daemon")):
            if "shim.pid" in files:
                # A shim outlives its container when dockerd went away before
                # it was told to clean up: end it by the PID containerd wrote.
                try:
                    spid = int(open(os.path.join(top, "shim.pid")).read().strip())
                    if os.path.basename(os.readlink("/proc/%d/exe" % spid)).startswith(
                            "containerd-shim"):
                        os.kill(spid, signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            if "init.pid" not in files:
                continue
            try:
                pid = int(open(os.path.join(top, "init.pid")).read().strip())
                with open("/proc/%d/stat" % pid) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                shim = os.path.basename(os.readlink("/proc/%d/exe" % ppid))
            except (OSError, ValueError, IndexError):
                continue
            for p in [pid] + ([ppid] if shim.startswith("containerd-shim") else []):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ---- helpers ----
    def docker(self, *args, check=True, timeout=120, input=None):
        env = dict(os.environ)
        env.update(self.env)
        r = subprocess.run(["docker"] + list(args), env=env, capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError("docker %s exited %d:\n%s%s" % (" ".join(args), r.returncode,
                                                               r.stdout, r.stderr))
        return r

    def container_names(self):
        r = self.docker("ps", "-a", "--format", "{{.Names}}", check=False, timeout=30)
        return [n for n in r.stdout.split() if n]

    def remove_containers(self, names):
        for n in names:
            self.docker("rm", "-f", n, check=False, timeout=60)

    def inspect(self, name):
        r = self.docker("inspect", name, check=False)
        return json.loads(r.stdout)[0] if r.returncode == 0 else None

    def import_base(self):
        """The base image: busybox-static and its applets, from a tar via `docker import`."""
        rootfs = os.path.join(self.dir, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"))
        os.makedirs(os.path.join(rootfs, "tmp"))
        shutil.copy(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
        for a in APPLETS:
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
        tar = subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True, check=True).stdout
        env = dict(os.environ)
        env.update(self.env)
        r = subprocess.run(["docker", "import", "-c", "ENV PATH=/bin", "-", self.base_image],
                           input=tar, env=env, capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode()
        shutil.rmtree(rootfs)

    def import_node_base(self, name="node:20-slim"):
        """A local stand-in for the seed Dockerfile's base image, made with
        `docker import` from this machine's node and npm (no registry): node
        and its libraries, npm, busybox for RUN's /bin/sh, a `node` user."""
        rootfs = os.path.join(self.dir, "noderoot")
        node = shutil.which("node")
        libs = subprocess.run(["ldd", node], capture_output=True, text=True).stdout
        files = [os.path.realpath(node)]
        for line in libs.splitlines():
            for part in line.split():
                if part.startswith("/"):
                    files.append(part)
        for f in files:
            dst = os.path.join(rootfs, f.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.realpath(f), dst)
        os.makedirs(os.path.join(rootfs, "usr", "local", "bin"), exist_ok=True)
        if os.path.realpath(node) != "/usr/bin/node":
            os.makedirs(os.path.join(rootfs, "usr", "bin"), exist_ok=True)
            os.symlink(os.path.realpath(node), os.path.join(rootfs, "usr", "bin", "node"))
        npm_cli = os.path.realpath(shutil.which("npm"))
        npm_root = npm_cli[:npm_cli.index("/bin/npm-cli.js")]
        shutil.copytree(npm_root, os.path.join(rootfs, npm_root.lstrip("/")), symlinks=True)
        os.symlink(npm_cli, os.path.join(rootfs, "usr", "local", "bin", "npm"))
        os.makedirs(os.path.join(rootfs, "bin"), exist_ok=True)
        shutil.copy(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
        for a in APPLETS:
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
        os.makedirs(os.path.join(rootfs, "usr", "bin"), exist_ok=True)
        os.symlink("/bin/busybox", os.path.join(rootfs, "usr", "bin", "env"))  # npm's #! line
        for d in ("etc", "tmp", "root", "home/node"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
        with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n")
        with open(os.path.join(rootfs, "etc", "group"), "w") as f:
            f.write("root:x:0:\nnode:x:1000:\n")
        os.chown(os.path.join(rootfs, "home", "node"), 1000, 1000)
        # the host's CA bundle (npm ci reaches the registry through it), as
        # the real image carries ca-certificates
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        os.makedirs(os.path.join(rootfs, "etc", "ssl", "certs"), exist_ok=True)
        shutil.copy(bundle, os.path.join(rootfs, bundle.lstrip("/")))
        tar = subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True,
                             check=True).stdout
        env = dict(os.environ)
        env.update(self.env)
        r = subprocess.run(["docker", "import", "-c", "ENV PATH=/usr/local/bin:/usr/bin:/bin",
                            "-c", "ENV NODE_EXTRA_CA_CERTS=" + bundle, "-", name],
                           input=tar, env=env, capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr.decode()
        shutil.rmtree(rootfs)

    def build_whoami_static(self):
        """examples/whoami linked statically, to COPY into images FROM scratch."""
        out = os.path.join(self.dir, "whoami")
        src = [os.path.join(ROOT, "examples", "whoami", "whoami.c")] + sorted(
            os.path.join(ROOT, "src", "core", f) for f in os.listdir(os.path.join(ROOT, "src", "core"))
            if f.endswith(".c"))
        r = subprocess.run(["cc", "-std=gnu11", "-O2", "-static", "-pthread", "-D_GNU_SOURCE",
                            "-DTAKO_VERSION=\"test\"", "-I", os.path.join(ROOT, "src"), "-o", out]
                           + src + ["-lm"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        self.whoami_static = out

    def app_dir(self, parent, body=None, files=None):
        """A build directory: the static whoami and a Dockerfile FROM scratch."""
        d = tempfile.mkdtemp(prefix="app-", dir=parent)
        shutil.copy(self.whoami_static, os.path.join(d, "whoami"))
        with open(os.path.join(d, "Dockerfile"), "w") as f:
            f.write(body or 'FROM scratch\nCOPY whoami /whoami\nCMD ["/whoami"]\n')
        for name, text in (files or {}).items():
            p = os.path.join(d, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        return d


@pytest.fixture(scope="session")
def dockerd():
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.fail("the Docker tests need Debian's docker.io and root (see scripts/deps.sh)")
    d = DockerD()
    try:
        d.start()
        d.import_base()
        d.build_whoami_static()
        yield d
    finally:
        d.stop()


@pytest.fixture
def dk(dockerd):
    """The session's engine; containers made during the test are removed by name after it."""
    if not dockerd.ping():
        # A test that killed the daemon: start a fresh one in the same place.
        dockerd.stop()
        fresh = DockerD()
        dockerd.__dict__.update(fresh.__dict__)
        dockerd.start()
        dockerd.import_base()
        dockerd.build_whoami_static()
    before = set(dockerd.container_names())
    try:
        yield dockerd
    finally:
        if dockerd.ping():
            dockerd.remove_containers([n for n in dockerd.container_names() if n not in before])
