"""`runtime: docker` on a remote server, without a registry: `tako deploy
prod` with SERVER_HOST set ships the service's build directory (its
Dockerfile included) to a test host (hosts.py: a network namespace running
sshd, with its own /var/lib/tako, /run and /etc/default), and the host's
takod builds the image there with the host's own Docker engine and runs the
containers scaling-web-1..3.

The host's engine is a dockerd of its own (dockerd.py), started in the
host's network namespace (so its containers' host network is the host's),
with its data root, exec root and socket under the host's private directory;
the host's takod finds it through DOCKER_HOST in the host's
/etc/default/tako, as a real server with Docker on another socket would.
Images are built FROM scratch out of a static whoami (no registry here).
"""
import os
import re
import shlex
import shutil
import subprocess
import tempfile

import pytest

from conftest import TAKO, Load, http_json, kill_takod_tree, wait_for
from dockerd import DockerD
from hosts import Net

TAKO_YAML = """project:
  name: scaling

servers:
  prod:
    host: ${SERVER_HOST}
    user: root
    sshKey: ~/.ssh/id_ed25519

environments:
  production:
    servers:
      - prod
    services:
      web:
        runtime: docker
        build: app
        port: 3000
        replicas: 3
        proxy:
          domain: scaling.${SERVER_HOST}.sslip.io
        healthCheck:
          path: /health
          interval: 300ms
          timeout: 300ms
          unhealthyThreshold: 3
        deploy:
          drainTimeout: 2s
          stopGracePeriod: 3s
"""

DOCKERFILE = 'FROM scratch\nCOPY whoami /whoami\nCOPY version.txt /version.txt\nCMD ["/whoami"]\n'
NAMES = ["scaling-web-1", "scaling-web-2", "scaling-web-3"]


class Site:
    """The project on this machine, the test host and the host's engine."""

    def __init__(self, keys, host, workdir, home):
        self.keys, self.host, self.dir, self.home = keys, host, workdir, home
        self.env = {"TAKO_HOME": home, "NO_COLOR": "1", "SERVER_HOST": host.ip}
        self.env.update(keys.tako_env())
        self.engine = None

    def run(self, *args, check=None, timeout=300):
        e = dict(os.environ)
        e.update(self.env)
        r = subprocess.run([TAKO] + list(args), env=e, cwd=self.dir, capture_output=True,
                           text=True, timeout=timeout)
        if check is not None and r.returncode != check:
            raise AssertionError("tako %s exited %d (wanted %d)\nstdout:\n%s\nstderr:\n%s" % (
                " ".join(args), r.returncode, check, r.stdout, r.stderr))
        return r

    def headers(self):
        return {"Host": "scaling.%s.sslip.io" % self.host.ip}

    def instance(self):
        st, body = http_json(80, "/api/instance", host=self.host.ip, headers=self.headers())
        assert st == 200, body
        return body["hostname"]

    def containers(self):
        """The engine's scaling-web-* containers, running or not: name -> inspect."""
        names = [n for n in self.engine.container_names() if n.startswith("scaling-web-")]
        return {n: self.engine.inspect(n) for n in sorted(names)}


@pytest.fixture(scope="module")
def site(ssh_keys):
    """A fresh host, its engine not started yet, and the project to deploy."""
    net = Net(ssh_keys, 1, "k")
    home = tempfile.mkdtemp(prefix="tako-home-")
    work = tempfile.mkdtemp(prefix="tako-dkremote-")
    s = Site(ssh_keys, net.hosts[0], work, home)
    try:
        s.engine = DockerD(netns=s.host.ns, parent=s.host.tmp)
        s.engine.build_whoami_static()
        app = os.path.join(work, "app")
        os.makedirs(app)
        shutil.copy(s.engine.whoami_static, os.path.join(app, "whoami"))
        with open(os.path.join(app, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        with open(os.path.join(app, "version.txt"), "w") as f:
            f.write("one\n")
        with open(os.path.join(work, "tako.yaml"), "w") as f:
            f.write(TAKO_YAML)
        yield s
    finally:
        # The engine first (its containers removed by name, dockerd and its
        # containerd stopped by PID), then every process left in the host's
        # namespace (sshd, takod, its data plane) and the namespace itself.
        try:
            s.engine.stop()
        finally:
            net.destroy()
            kill_takod_tree(home)  # nothing should run here; by PID if it did
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(site):
    """The host's Docker engine, and DOCKER_HOST for its takod in the host's
    own /etc/default/tako."""
    site.engine.start()
    with open(os.path.join(site.host.etc_default, "tako"), "w") as f:
        f.write("# takod's environment on this server\nDOCKER_HOST=%s\n" % site.engine.host)
        # A sanitizer build's takod on the host reports where this run looks.
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if os.environ.get(k):
                f.write("%s=%s\n" % (k, shlex.quote(os.environ[k])))
    return site


def test_setup_without_docker_says_how_to_install_it(site):
    r = site.run("setup", "prod", check=1)
    err = r.stderr
    assert "server prod (root@%s:22)" % site.host.ip in err, err
    assert "runtime: docker" in err and "Docker does not answer there" in err, err
    assert "unix:///var/run/docker.sock" in err, err  # the socket tried: the default
    assert "apt-get install docker.io" in err and "/etc/default/tako" in err, err
    # Checked before takod starts: nothing runs there but sshd.
    assert "takod started" not in r.stdout, r.stdout
    assert site.keys.ssh(site.host.ip, "test", "-S", "/var/lib/tako/takod.sock").returncode == 1


def test_first_deploy_builds_on_the_server_and_runs_three_containers(engine):
    s = engine
    r = s.run("deploy", "prod", check=0)
    out = r.stdout
    assert re.search(r"web: sent \d+ of 3 files", out), out
    # The build ran on the server; its progress streamed into this deploy.
    assert re.search(r"scaling-web-\d: Step 1/\d+ : FROM scratch", out), out
    assert re.search(r"scaling-web-\d: Step 3/\d+ : COPY version.txt /version.txt", out), out
    assert re.search(r"^web\s+3/3\s.*running", out, re.M), out
    # The README's curl: round robin over the containers' own hostnames.
    names = [s.instance() for _ in range(9)]
    i = names.index("scaling-web-1")
    assert names[i:] + names[:i] == NAMES * 3, names
    # The seed's `docker ps | grep scaling-web`, against the host's engine.
    env = dict(os.environ)
    env.update(s.engine.env)
    ps = subprocess.run(["bash", "-c", "docker ps | grep scaling-web"], env=env,
                        capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert sorted(line.split()[-1] for line in ps) == NAMES, ps
    cs = s.containers()
    rev = cs["scaling-web-1"]["Config"]["Labels"]["tako.revision"]
    in_ns = set(s.host.pids())
    for n, c in cs.items():
        assert c["State"]["Running"] and c["Config"]["Hostname"] == n
        assert c["Config"]["Image"] == "scaling-web:%s" % rev
        assert c["HostConfig"]["NetworkMode"] == "host"
        # The container runs in the host's namespace: its ports are the host's.
        assert c["State"]["Pid"] in in_ns, (n, c["State"]["Pid"])
    # The image is the server's, built there from the shipped tree.
    img = s.engine.docker("image", "inspect", "--format", "{{index .Config.Labels \"tako.project\"}}",
                          "scaling-web:%s" % rev).stdout.strip()
    assert img == "scaling", img
    # tako's own views, from this machine, come from the server's engine.
    logs = s.run("logs", "-e", "prod", "--tail", "5", check=0).stdout
    assert re.search(r"^scaling-web-2 \| .*whoami scaling-web-2 listening on port \d+", logs,
                     re.M), logs
    # Nothing ran on this machine: no local takod.
    assert not os.path.exists(os.path.join(s.home, "takod.sock"))


def test_redeploy_without_change_sends_nothing_and_does_not_rebuild(engine):
    s = engine
    before = {n: c["Id"] for n, c in s.containers().items()}
    images = s.engine.docker("images", "-q", "scaling-web").stdout.split()
    sent = s.host.tx_bytes()
    r = s.run("deploy", "prod", check=0)
    sent = s.host.tx_bytes() - sent
    # ssh's handshake, the checks, the file hashes and the control API only.
    assert sent < 64 * 1024, sent
    print("no-change redeploy with runtime: docker: %d bytes to the host" % sent)
    assert re.search(r"web: files unchanged on server prod \(3 files, nothing sent\)", r.stdout), \
        r.stdout
    assert "Step 1/" not in r.stdout, r.stdout
    assert {n: c["Id"] for n, c in s.containers().items()} == before
    assert s.engine.docker("images", "-q", "scaling-web").stdout.split() == images


def test_setup_again_changes_nothing(engine):
    r = engine.run("setup", "prod", check=0)
    assert "nothing changed" in r.stdout, r.stdout


def test_takod_started_again_by_a_command_finds_the_engine_and_adopts(engine):
    """takod stopped on the server; the next command starts it through `tako
    daemon --stdio`, with /etc/default/tako too: it reaches the same engine
    and adopts the running containers (the same ones, not new ones)."""
    s = engine
    before = {n: c["Id"] for n, c in s.containers().items()}
    r = s.keys.ssh(s.host.ip, "/usr/local/bin/tako", "daemon", "--stop")
    assert r.returncode == 0 and "takod stopped" in r.stdout, r
    assert s.keys.ssh(s.host.ip, "test", "-S", "/var/lib/tako/takod.sock").returncode == 1
    ps = s.run("ps", "prod", check=0).stdout
    assert re.search(r"^web\s+3/3\s.*running", ps, re.M), ps
    assert {n: c["Id"] for n, c in s.containers().items()} == before
    assert {s.instance() for _ in range(6)} == set(NAMES)


# slow: a rolling deploy under load; the build on the server and the
# deploy's code paths also run under the sanitizers in the other tests here
@pytest.mark.slow
def test_one_line_change_rebuilds_and_rolls_without_a_failed_request(engine):
    s = engine
    old = {n: c["Id"] for n, c in s.containers().items()}
    rev1 = s.containers()["scaling-web-1"]["Config"]["Labels"]["tako.revision"]
    with open(os.path.join(s.dir, "app", "version.txt"), "w") as f:
        f.write("two\n")
    with Load(80, host=s.host.ip, headers=s.headers(), clients=4, max_seconds=120,
              max_requests=100000) as load:
        wait_for(lambda: load.ok > 50, timeout=30, what="traffic")
        r = s.run("deploy", "prod", check=0)
        n = load.ok
        wait_for(lambda: load.ok > n + 50, timeout=30, what="traffic after the deploy")
        ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    assert ok > 100
    assert re.search(r"web: sent 1 of 3 files \(4 B", r.stdout), r.stdout
    assert re.search(r"scaling-web-\d: Step 3/\d+ : COPY version.txt /version.txt", r.stdout), \
        r.stdout
    cs = s.containers()
    assert sorted(cs) == NAMES, sorted(cs)
    rev2 = cs["scaling-web-1"]["Config"]["Labels"]["tako.revision"]
    assert rev2 != rev1
    assert all(c["Config"]["Labels"]["tako.revision"] == rev2 for c in cs.values())
    assert not set(old.values()) & {c["Id"] for c in cs.values()}
    assert {s.instance() for _ in range(6)} == set(NAMES)


def test_a_dockerfile_that_fails_on_the_server_changes_nothing(engine):
    s = engine
    before = {n: c["Id"] for n, c in s.containers().items()}
    path = os.path.join(s.dir, "app", "Dockerfile")
    good = open(path).read()
    with open(path, "w") as f:
        f.write(good.replace("COPY version.txt", "COPY missing.txt"))
    try:
        r = s.run("deploy", "prod")
    finally:
        with open(path, "w") as f:
            f.write(good)
    assert r.returncode != 0, r.stdout
    out = r.stdout + r.stderr
    assert re.search(r"COPY failed: .*missing\.txt", out), out
    # What was serving keeps serving: the same containers, all three.
    assert {n: c["Id"] for n, c in s.containers().items()} == before
    assert all(c["State"]["Running"] for c in s.containers().values())
    names = [s.instance() for _ in range(6)]
    assert sorted(set(names)) == NAMES, names


def test_down_removes_the_containers(engine):
    s = engine
    s.run("down", "prod", check=0)
    assert s.containers() == {}
