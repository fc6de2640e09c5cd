"""Remote servers over SSH, against test hosts of our own making (hosts.py):
network namespaces running Debian's sshd, each with fresh /var/lib/tako and
/usr/local/bin. The seed's walkthrough (`export SERVER_HOST=...; tako deploy
prod`), shipping without a registry, the day-two commands on the server, the
deploy lock, and every connection failure with its message.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest

from conftest import ROOT, TAKO, Load, http_json, kill_takod_tree, wait_for
from hosts import Net

EXAMPLE = os.path.join(ROOT, "examples", "scaling")


def domain(ip):
    return "scaling.%s.sslip.io" % ip


class Remote:
    """The CLI on this machine, pointed at a test host by SERVER_HOST."""

    def __init__(self, keys, host, workdir, home):
        self.keys, self.host, self.dir, self.home = keys, host, workdir, home
        self.env = {"TAKO_HOME": home, "NO_COLOR": "1", "SERVER_HOST": host.ip}
        self.env.update(keys.tako_env())

    def run(self, *args, check=None, timeout=240, env=None, binary=TAKO):
        e = dict(os.environ)
        e.update(self.env)
        e.update(env or {})
        r = subprocess.run([binary] + list(args), env=e, cwd=self.dir, capture_output=True,
                           text=True, timeout=timeout)
        if check is not None and r.returncode != check:
            raise AssertionError("tako %s exited %d (wanted %d)\nstdout:\n%s\nstderr:\n%s" % (
                " ".join(args), r.returncode, check, r.stdout, r.stderr))
        return r

    def instance(self):
        st, body = http_json(80, "/api/instance", host=self.host.ip,
                             headers={"Host": domain(self.host.ip)})
        assert st == 200, body
        return body["hostname"]


@pytest.fixture(scope="module")
def app_dir():
    """The seed's example with its node_modules, installed once per module."""
    d = tempfile.mkdtemp(prefix="tako-remote-app-")
    app = os.path.join(d, "app")
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("node_modules", ".env"))
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=app, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    yield app
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def net(ssh_keys):
    n = Net(ssh_keys, 1, "s")
    try:
        yield n
    finally:
        n.destroy()


@pytest.fixture(scope="module")
def seed(ssh_keys, net, app_dir):
    """One host for the walkthrough tests of this module, which run in order."""
    home = tempfile.mkdtemp(prefix="tako-home-")
    work = tempfile.mkdtemp(prefix="tako-remote-proj-")
    proj = os.path.join(work, "app")
    shutil.copytree(app_dir, proj, symlinks=True)
    r = Remote(ssh_keys, net.hosts[0], proj, home)
    # Where tako makes its private ssh control directories (short: a socket
    # path goes in it), so the tests can see that none is left behind.
    r.runtime_dir = tempfile.mkdtemp(prefix="tako-rt-", dir="/tmp")
    r.env["XDG_RUNTIME_DIR"] = r.runtime_dir
    try:
        yield r
    finally:
        kill_takod_tree(home)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(r.runtime_dir, ignore_errors=True)


def replica_pids(r):
    js = json.loads(r.run("ps", "prod", "--output", "json", check=0).stdout)
    return {rep["name"]: rep["pid"] for s in js["services"] for rep in s["replicas"]
            if rep.get("state") == "running"}


def test_seed_walkthrough_first_deploy_prepares_the_host(seed):
    assert seed.host.inside("test", "-e", "/usr/local/bin/tako").returncode == 1
    r = seed.run("deploy", "prod", check=0)
    out = r.stdout
    assert "server prod: tako installed at /usr/local/bin/tako" in out, out
    assert "takod started (no systemd" in out, out
    m = re.search(r"web: sent (\d+) of (\d+) files", out)
    # Every distinct content once (identical files travel once).
    assert m and 0 < int(m.group(1)) <= int(m.group(2)), out
    assert "to server prod (root@%s:22)" % seed.host.ip in out
    assert re.search(r"^web\s+3/3\s.*running", out, re.M), out
    # The curl of the README, from this machine to the host's address.
    names = [seed.instance() for _ in range(9)]
    i = names.index("scaling-web-1")
    assert (names[i:] + names[:i]) == ["scaling-web-1", "scaling-web-2", "scaling-web-3"] * 3
    # The answers come from processes in the host's namespace, and nothing
    # ran on this machine: no local takod was started.
    pids = replica_pids(seed)
    assert len(pids) == 3
    in_ns = set(seed.host.pids())
    assert set(pids.values()) <= in_ns, (pids, in_ns)
    assert not os.path.exists(os.path.join(seed.home, "takod.sock"))
    # The state lives on the server, in the host's own /var/lib/tako.
    assert not os.path.exists("/var/lib/tako/state.db")  # this machine's is untouched
    st = seed.keys.ssh(seed.host.ip, "stat", "-c", "%a", "/var/lib/tako")
    assert st.stdout.strip() == "700", st


def test_setup_again_changes_nothing(seed):
    r = seed.run("setup", "prod", check=0)
    assert "nothing changed" in r.stdout, r.stdout
    assert "installed" not in r.stdout.replace("is installed", "")


def test_redeploy_without_change_sends_no_app_bytes(seed):
    before = seed.host.tx_bytes()
    conns = seed.host.ssh_connections()
    r = seed.run("deploy", "prod", check=0)
    sent = seed.host.tx_bytes() - before
    # setup's checks, the lock, the file comparison, the deploy and the ps
    # that follows: all over one TCP connection.
    assert seed.host.ssh_connections() - conns == 1
    assert re.search(r"web: files unchanged on server prod \(\d+ files, nothing sent\)", r.stdout)
    assert "nothing changed" in r.stdout.lower() or "unchanged" in r.stdout.lower(), r.stdout
    # Everything this machine sent to the host during the command: ssh's
    # handshake, the hashes of the files and the control API.
    assert sent < 64 * 1024, sent
    print("no-change redeploy: %d bytes to the host" % sent)


def test_one_changed_file_sends_about_that_file(seed):
    path = os.path.join(seed.dir, "index.js")
    with open(path, "a") as f:
        f.write("\n// %s\n" % ("x" * 40000))
    size = os.path.getsize(path)
    before = seed.host.tx_bytes()
    r = seed.run("deploy", "prod", check=0)
    sent = seed.host.tx_bytes() - before
    m = re.search(r"web: sent 1 of \d+ files \(([\d.]+) (B|KiB|MiB)", r.stdout)
    assert m, r.stdout
    assert sent < 2 * size + 64 * 1024, (sent, size)
    print("one-file redeploy: file %d bytes, %d bytes to the host" % (size, sent))
    assert re.search(r"^web\s+3/3\s.*running", r.stdout, re.M), r.stdout
    names = {seed.instance() for _ in range(6)}
    assert names == {"scaling-web-1", "scaling-web-2", "scaling-web-3"}


def test_ignore_files_and_secrets_mode(seed):
    with open(os.path.join(seed.dir, ".takoignore"), "w") as f:
        f.write("# not for the server\nnotes/\n*.log\n!keep.log\n")
    os.makedirs(os.path.join(seed.dir, "notes"), exist_ok=True)
    for name, text in (("notes/todo.txt", "private\n"), ("debug.log", "x\n"),
                       ("keep.log", "kept\n"), (".env", "API_TOKEN=s3cret-value\n")):
        with open(os.path.join(seed.dir, name), "w") as f:
            f.write(text)
    os.chmod(os.path.join(seed.dir, ".env"), 0o644)
    r = seed.run("deploy", "prod", check=0)
    assert "s3cret-value" not in r.stdout + r.stderr
    tree = seed.keys.ssh(seed.host.ip, "sh", "-c",
                         "'ls -t /var/lib/tako/apps/scaling/web/*.manifest | head -1'")
    d = tree.stdout.strip()[:-len(".manifest")]
    ls = seed.keys.ssh(seed.host.ip, "sh", "-c", "'cd %s && ls -a && stat -c %%a .env'" % d)
    names = ls.stdout.split()
    assert "index.js" in names and "keep.log" in names and ".env" in names, names
    assert "notes" not in names and "debug.log" not in names and ".takoignore" in names
    assert names[-1] == "600", ls.stdout


def test_one_connection_per_command(seed):
    for args in (["ps", "prod", "--instances"], ["stats", "prod"], ["history", "prod"]):
        conns = seed.host.ssh_connections()
        seed.run(*args, check=0)
        assert seed.host.ssh_connections() - conns == 1, args


@pytest.mark.slow
def test_scale_and_restart_under_load_lose_nothing(seed):
    with Load(80, host=seed.host.ip, headers={"Host": domain(seed.host.ip)}, clients=8,
              max_seconds=180, max_requests=200000) as load:
        wait_for(lambda: load.ok > 50, timeout=30, what="traffic")
        seed.run("scale", "prod", "web=5", check=0)
        seed.run("scale", "prod", "web=1", check=0)
        seed.run("scale", "prod", "web=3", check=0)
        seed.run("restart", "prod", check=0)
        ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    assert ok > 100


# slow: long waits on remote/browser state; the code it drives also runs
# under the sanitizers in the other tests of this file
@pytest.mark.slow
def test_day_two_commands_on_the_server(seed):
    # A revision of its own to roll back from, whichever tests ran before.
    with open(os.path.join(seed.dir, "index.js"), "a") as f:
        f.write("\n// day two\n")
    seed.run("deploy", "prod", check=0)
    assert len(replica_pids(seed)) == 3
    ps = seed.run("ps", "prod", "--instances", check=0).stdout
    assert "scaling-web-3" in ps
    st = seed.run("stats", "prod", check=0).stdout
    assert "scaling-web-1" in st
    logs = seed.run("logs", "-e", "prod", "--tail", "5", check=0).stdout
    assert re.search(r"^scaling-web-\d+ \| ", logs, re.M), logs
    # The README's `tako logs prod -f`: follows until interrupted.
    e = dict(os.environ)
    e.update(seed.env)
    f = subprocess.Popen([TAKO, "logs", "prod", "-f", "--tail", "1"], env=e, cwd=seed.dir,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = f.stdout.readline()
        assert re.match(r"scaling-web-\d+ \| ", first), first
        f.send_signal(signal.SIGINT)
        f.wait(30)
    finally:
        if f.poll() is None:
            f.kill()
            f.wait()
    seed.run("scale", "prod", "web=5", check=0)
    assert {seed.instance() for _ in range(10)} == {"scaling-web-%d" % i for i in range(1, 6)}
    seed.run("scale", "prod", "web=1", check=0)
    assert {seed.instance() for _ in range(4)} == {"scaling-web-1"}
    seed.run("scale", "prod", "web=3", check=0)
    old = replica_pids(seed)
    seed.run("restart", "prod", check=0)
    new = replica_pids(seed)
    assert set(new) == set(old) and not set(new.values()) & set(old.values())
    hist = seed.run("history", "prod", check=0).stdout
    revs = re.findall(r"\b[0-9a-f]{12}\b", hist)
    assert len(set(revs)) >= 2, hist
    seed.run("rollback", "prod", check=0)
    assert {seed.instance() for _ in range(6)} == {"scaling-web-1", "scaling-web-2",
                                                   "scaling-web-3"}
    seed.run("down", "prod", check=0)
    assert replica_pids(seed) == {}


def test_deploy_lock_shows_the_holder_and_waits(seed):
    # Someone else holds the lock of production on the server.
    holder = subprocess.Popen(
        ["ssh", "-F", seed.keys.ssh_config, "-i", seed.keys.client_key, "-o", "BatchMode=yes",
         "root@" + seed.host.ip, "/usr/local/bin/tako", "remote", "lock", "scaling",
         "production", "0", "'alice@laptop_(tako_deploy,_pid_42)'"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = seed.run("deploy", "prod")
        assert r.returncode == 4, r.stdout + r.stderr
        assert "locked by another deploy: alice@laptop (tako deploy, pid 42)" in r.stderr, r.stderr
        # --lock-wait: the holder finishes after a moment, the deploy goes on.
        t = threading.Timer(1.0, holder.stdin.close)
        t.start()
        r = seed.run("deploy", "prod", "--lock-wait", "30s", check=0)
        t.join()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


# slow: long waits on remote/browser state; the code it drives also runs
# under the sanitizers in the other tests of this file
@pytest.mark.slow
def test_ctrl_c_during_a_deploy_leaves_the_server_converging(seed):
    with open(os.path.join(seed.dir, "index.js"), "a") as f:
        f.write("\n// interrupted deploy\n")
    e = dict(os.environ)
    e.update(seed.env)
    p = subprocess.Popen([TAKO, "deploy", "prod"], env=e, cwd=seed.dir, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    rev = None
    try:
        for line in p.stdout:
            m = re.search(r"deploying revision ([0-9a-f]{12})", line)
            if m:
                rev = m.group(1)
            if rev and "starting scaling-web" in line:
                p.send_signal(signal.SIGINT)
                break
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rev and p.returncode != 0
    # takod on the server finishes the rollout it was given: one revision.

    def converged():
        js = json.loads(seed.run("ps", "prod", "--output", "json", check=0).stdout)
        reps = [r for s in js["services"] for r in s["replicas"]]
        return len(reps) == 3 and {r["revision"] for r in reps} == {rev} and \
            all(r.get("state") == "running" for r in reps)
    wait_for(converged, timeout=120, interval=0.5, what="the server to converge on " + rev)
    # The interrupted deploy's lock went with its ssh session; takod may still
    # be finishing the rollout it was given (draining the old replicas), and
    # --lock-wait waits for that too.
    r = seed.run("deploy", "prod", "--lock-wait", "2m", check=0)
    assert "files unchanged" in r.stdout


def test_no_ssh_control_directory_is_left_behind(seed):
    # Every command of this module, Ctrl-C'd ones included, closed its
    # connection and removed its private directory.
    seed.run("ps", "prod", check=0)
    assert os.listdir(seed.runtime_dir) == []


@pytest.mark.slow
def test_upgrading_tako_on_the_server_drops_no_request(seed, tmp_path):
    # Another build of tako: the same program with other bytes (an ELF file
    # ignores what follows its sections), so its sha256 differs.
    newer = str(tmp_path / "tako")
    shutil.copy(TAKO, newer)
    with open(newer, "ab") as f:
        f.write(b"\0" * 64 + b"another build of tako")
    os.chmod(newer, 0o755)
    seed.run("deploy", "prod", check=0)
    with Load(80, host=seed.host.ip, headers={"Host": domain(seed.host.ip)}, clients=8,
              max_seconds=120, max_requests=200000) as load:
        wait_for(lambda: load.ok > 50, timeout=30, what="traffic")
        r = seed.run("setup", "prod", check=0, binary=newer)
        assert "server prod: tako updated at /usr/local/bin/tako" in r.stdout, r.stdout
        assert "takod restarted" in r.stdout, r.stdout
        after = load.ok
        wait_for(lambda: load.ok > after + 200, timeout=30, what="traffic after the upgrade")
        ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    assert len(replica_pids(seed)) == 3
    # The new takod runs the new file, and the replicas kept serving throughout.
    r = seed.run("setup", "prod", check=0, binary=newer)
    assert "nothing changed" in r.stdout, r.stdout
def test_dashboard_reads_the_servers_takod_over_ssh(seed):
    """`tako dashboard prod` serves the page here and its data comes from the
    server's takod over SSH; nothing listens on the server for it."""
    e = dict(os.environ)
    e.update(seed.env)
    p = subprocess.Popen([TAKO, "dashboard", "prod", "--no-open"], cwd=seed.dir, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        url = p.stdout.readline().split()[-1]
        m = re.match(r"http://127\.0\.0\.1:(\d+)/\?token=([0-9a-f]{32})$", url)
        assert m, url
        port, token = int(m.group(1)), m.group(2)
        cookie = {"Cookie": "tako_dashboard=" + token}

        def web_replicas():
            st, body = http_json(port, "/api/state", headers=cookie)
            if st != 200:
                return None
            svcs = [s for s in body["services"] if s["name"] == "web"]
            return svcs and sorted(r["name"] for r in svcs[0]["replicas"])

        assert wait_for(web_replicas, timeout=30, what="the server's replicas") == [
            "scaling-web-1", "scaling-web-2", "scaling-web-3"]
        # The numbers are the server's: no takod was started on this machine.
        assert not os.path.exists(os.path.join(seed.home, "takod.sock"))
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 15)
        p.wait(10)


# ---- failures: each names the server and changes nothing ----

@pytest.fixture
def fresh(ssh_keys, tmp_path):
    """A fresh host and a tiny project for failure cases."""
    n = Net(ssh_keys, 1, "f")
    home = tempfile.mkdtemp(prefix="tako-home-")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "tako.yaml").write_text(
        "project:\n  name: tiny\nservers:\n  prod:\n    host: ${SERVER_HOST}\n"
        "    sshKey: ~/.ssh/id_ed25519\n"
        "environments:\n  production:\n    servers: [prod]\n    services:\n      web:\n"
        "        command: [%s]\n        port: 3000\n        replicas: 1\n"
        % os.path.join(ROOT, "examples", "whoami", "whoami"))
    r = Remote(ssh_keys, n.hosts[0], str(proj), home)
    try:
        yield r
    finally:
        n.destroy()
        shutil.rmtree(home, ignore_errors=True)


def nothing_installed(r):
    """No tako binary in the host's own /usr/local/bin (its mount namespace)."""
    return r.host.inside("test", "-e", "/usr/local/bin/tako").returncode == 1


def test_unreachable_server_is_named(fresh):
    fresh.host.cut()
    r = fresh.run("deploy", "prod", env={"TAKO_SSH_CONFIG": fresh.keys.ssh_config})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "server prod (root@%s:22) is unreachable" % fresh.host.ip in r.stderr, r.stderr
    fresh.host.restore()
    assert nothing_installed(fresh)


def test_refused_key_is_named(fresh, tmp_path):
    other = tmp_path / "home" / ".ssh"
    other.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(other / "id_ed25519")], check=True)
    r = fresh.run("ps", "prod", env={"HOME": str(tmp_path / "home")})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "server prod (root@%s:22): the server refused our key" % fresh.host.ip in r.stderr


def test_changed_host_key_is_refused_with_its_fingerprint(fresh):
    fresh.run("setup", "prod", check=0)  # the key is trusted on first use
    fresh.host.start_sshd(fresh.keys.host_keys[2])  # the "server" was replaced
    r = fresh.run("deploy", "prod")
    assert r.returncode == 3, r.stdout + r.stderr
    fp = fresh.keys.fingerprint(2)
    assert "server prod (root@%s:22): its host key changed" % fresh.host.ip in r.stderr, r.stderr
    assert fp in r.stderr, (fp, r.stderr)
    # The fresh mount namespace of the new sshd shows nothing was installed.
    assert nothing_installed(fresh)


def test_strict_host_keys_refuse_an_unknown_host(fresh, tmp_path):
    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host *\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n"
                   "  IdentitiesOnly yes\n" % kh)
    y = os.path.join(fresh.dir, "tako.yaml")
    plain = open(y).read()
    open(y, "w").write(plain.replace("id_ed25519\n", "id_ed25519\n    hostKeys: strict\n", 1))
    r = fresh.run("setup", "prod", env={"TAKO_SSH_CONFIG": str(cfg)})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "its host key is not in known_hosts and host keys are strict" in r.stderr, r.stderr
    assert kh.read_text() == ""
    assert nothing_installed(fresh)
    # The default (accept-new) trusts it on first use and records it.
    open(y, "w").write(plain)
    r = fresh.run("setup", "prod", env={"TAKO_SSH_CONFIG": str(cfg)}, check=0)
    assert fresh.host.ip in kh.read_text()


def test_port_in_use_is_reported_before_anything_changes(fresh, procs):
    squatter = procs.start(["ip", "netns", "exec", fresh.host.ns, "python3", "-c",
                            "import socket,time\ns=socket.socket()\n"
                            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                            "s.bind(('0.0.0.0', 80)); s.listen(); print('up', flush=True)\n"
                            "time.sleep(120)"], name="squatter", stdout=subprocess.PIPE)
    assert squatter.stdout.readline().strip() == b"up"
    r = fresh.run("deploy", "prod")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "server prod (root@%s:22) cannot run tako:" % fresh.host.ip in r.stderr
    assert re.search(r"port 80 is in use by another program \(.*python3", r.stderr), r.stderr
    assert nothing_installed(fresh)


def test_config_errors_name_the_key(tmp_path):
    (tmp_path / "tako.yaml").write_text(
        "project:\n  name: tiny\nservers:\n  prod:\n    host: 192.0.2.10\n"
        "    hostKeys: sometimes\nenvironments:\n  production:\n    servers: [prod]\n"
        "    services:\n      web:\n        command: [sleep, '100']\n")
    r = subprocess.run([TAKO, "validate"], cwd=str(tmp_path), capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    assert re.search(r"tako\.yaml:6:\d+: servers\.prod\.hostKeys: invalid value \"sometimes\" "
                     r"\(expected accept-new or strict\)", r.stderr + r.stdout), r.stderr


def test_missing_ssh_key_file_is_named(tmp_path):
    (tmp_path / "tako.yaml").write_text(
        "project:\n  name: tiny\nservers:\n  prod:\n    host: 192.0.2.10\n"
        "    sshKey: ~/.ssh/nope\nenvironments:\n  production:\n    servers: [prod]\n"
        "    services:\n      web:\n        command: [sleep, '100']\n")
    env = dict(os.environ, HOME=str(tmp_path), TAKO_HOME=str(tmp_path / "home"))
    r = subprocess.run([TAKO, "deploy", "prod"], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "server prod: sshKey %s/.ssh/nope: No such file or directory" % tmp_path in r.stderr
