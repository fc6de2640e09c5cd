"""Several servers per environment, against three test hosts (hosts.py):
replicas spread over the hosts with names unique across the environment,
`tako ps` with a SERVER column, each host's balancer, scale, logs merged
from every host, and a deploy that cannot reach every host changing nothing
(unless the user skips that host explicitly).

The hosts are set up and deployed to once for the module; the tests run in
order and each leaves the environment at five replicas for the next.
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

from conftest import TAKO, Load, http_json, kill_takod_tree, wait_for
from hosts import Net

APP = r'''
import http.server, json, os, sys
NAME = os.environ["HOSTNAME"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"hostname": NAME}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path != "/health":
            print("served %s as %s" % (self.path, NAME), flush=True)
    def log_message(self, *a):
        pass
print("listening on %s as %s" % (os.environ["PORT"], NAME), flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''

YAML = """project:
  name: scaling
servers:
  a: {host: %(a)s, sshKey: ~/.ssh/id_ed25519}
  b: {host: %(b)s, sshKey: ~/.ssh/id_ed25519}
  c: {host: %(c)s, sshKey: ~/.ssh/id_ed25519}
environments:
  production:
    servers: [a, b, c]
    peerPort: %(peer)d
    services:
      web:
        command: python3 app.py
        port: 3000
        replicas: 5
        healthCheck: {path: /health, interval: 500ms, startPeriod: 20s}
        deploy: {drainTimeout: 1s}
"""

# The spread of the contract: 5 over [a, b, c] is a: 1, 4; b: 2, 5; c: 3.
SPREAD = {"a": ["scaling-web-1", "scaling-web-4"], "b": ["scaling-web-2", "scaling-web-5"],
          "c": ["scaling-web-3"]}
ALL = {n for names in SPREAD.values() for n in names}


class Cluster:
    def __init__(self, keys, net, work, home):
        self.keys, self.net, self.dir, self.home = keys, net, work, home
        self.hosts = dict(zip("abc", net.hosts))
        self.env = dict(os.environ)
        self.env.update({"TAKO_HOME": home, "NO_COLOR": "1"})
        self.env.update(keys.tako_env())

    def run(self, *args, check=None, timeout=240):
        r = subprocess.run([TAKO] + list(args), env=self.env, cwd=self.dir, capture_output=True,
                           text=True, timeout=timeout)
        if check is not None and r.returncode != check:
            raise AssertionError("tako %s exited %d (wanted %d)\nstdout:\n%s\nstderr:\n%s" % (
                " ".join(args), r.returncode, check, r.stdout, r.stderr))
        return r

    def ps(self, rc=0):
        """`tako ps --output json`: exit 3 when a server cannot be reached."""
        return json.loads(self.run("ps", "production", "--output", "json", check=rc).stdout)

    def names_by_server(self):
        """{server: sorted running replica names} from `tako ps --output json`."""
        out = {}
        for s in self.ps()["services"]:
            out.setdefault(s["server"], [])
            out[s["server"]] += [r["name"] for r in s["replicas"] if r.get("state") == "running"]
        return {k: sorted(v, key=lambda n: int(n.rsplit("-", 1)[1])) for k, v in out.items()}

    def host_processes(self, h):
        """HOSTNAME of every replica process running in host H's namespace."""
        names = []
        for pid in h.pids():
            try:
                with open("/proc/%d/environ" % pid, "rb") as f:
                    env = f.read().split(b"\0")
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if b"app.py" not in cmd:
                continue
            for kv in env:
                if kv.startswith(b"HOSTNAME="):
                    names.append(kv[9:].decode())
        return sorted(names, key=lambda n: int(n.rsplit("-", 1)[1]))

    def answer(self, h):
        st, body = http_json(80, "/api/instance", host=h.ip)
        assert st == 200, body
        return body["hostname"]


@pytest.fixture(scope="module")
def cluster(ssh_keys):
    net = Net(ssh_keys, 3, "m")
    home = tempfile.mkdtemp(prefix="tako-home-")
    work = tempfile.mkdtemp(prefix="tako-multi-proj-")
    try:
        from conftest import free_port
        with open(os.path.join(work, "app.py"), "w") as f:
            f.write(APP)
        with open(os.path.join(work, "tako.yaml"), "w") as f:
            f.write(YAML % {"a": net.hosts[0].ip, "b": net.hosts[1].ip, "c": net.hosts[2].ip,
                            "peer": free_port()})
        c = Cluster(ssh_keys, net, work, home)
        c.first = c.run("deploy", "production")
        yield c
    finally:
        kill_takod_tree(home)
        net.destroy()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def test_five_replicas_spread_over_three_hosts(cluster):
    r = cluster.first
    assert r.returncode == 0, r.stdout + r.stderr
    # Every host was prepared and sent the app before any rollout began.
    out = r.stdout
    for name in "abc":
        assert "to server %s (root@%s:22)" % (name, cluster.hosts[name].ip) in out, out
    assert out.index("web: sent") < out.index("Deploying scaling (production) to server a")
    # The SERVER column of `tako ps -a`.
    ps = cluster.run("ps", "production", "-a", check=0).stdout
    assert ps.split("\n")[0].split()[:2] == ["SERVER", "NAME"], ps
    rows = [line.split()[:2] for line in ps.splitlines()[1:] if line.strip()]
    by = {}
    for server, name in rows:
        if name.startswith("scaling-web-"):  # not the peers lines
            by.setdefault(server, []).append(name)
    # The names come from takod's slot naming (slot_first/slot_stride in the
    # deploy body): without it each server would name its replicas -1, -2.
    assert by == SPREAD, ps
    assert cluster.names_by_server() == SPREAD
    # And as processes inside each host's namespace, not on this machine.
    for name, h in cluster.hosts.items():
        assert cluster.host_processes(h) == SPREAD[name]


def test_every_hosts_balancer_reaches_all_five(cluster):
    """Each host's balancer spreads over its own replicas and, through their
    peer listeners, the other hosts' replicas."""
    for name, h in cluster.hosts.items():
        seen = set()

        def all_five():
            seen.update(cluster.answer(h) for _ in range(10))  # every answer a 200
            return seen == ALL
        wait_for(all_five, timeout=30, interval=0.1, what="all five replicas from host " + name)
    # Each server's view of its peers, as `tako ps` shows it.
    views = {s["server"]: {p["server"]: (p["replicas"], p["health"]) for p in s["peers"]}
             for s in cluster.ps()["services"]}
    assert views["a"] == {"b": (2, "healthy"), "c": (1, "healthy")}, views
    assert views["c"] == {"a": (2, "healthy"), "b": (2, "healthy")}, views
    ps = cluster.run("ps", "production", check=0).stdout
    assert re.search(r"^a\s+web\s.*\n\s+peers: b \S+ \(2 replicas, healthy\), c \S+ "
                     r"\(1 replica, healthy\)$", ps, re.M), ps


# slow: tens of seconds of waits on ssh and health checks; the sanitizer stage
# runs the same fan-out and peer code in this file's other tests
@pytest.mark.slow
def test_host_whose_link_is_cut_is_reported_and_out_of_rotation(cluster):
    a, b, c = (cluster.hosts[k] for k in "abc")
    c.cut()
    try:
        ps = cluster.run("ps", "production")
        assert ps.returncode == 3, ps.stdout + ps.stderr
        assert re.search(r"^c\s+unreachable: server c \(root@%s:22\) is unreachable"
                         % re.escape(c.ip), ps.stdout, re.M), ps.stdout
        assert {l.split()[0] for l in ps.stdout.splitlines()[1:]
                if l.strip() and not l.startswith(" ")} == {"a", "b", "c"}

        def c_down_on_a_and_b():
            views = {s["server"]: {p["server"]: p["health"] for p in s["peers"]}
                     for s in cluster.ps(3)["services"]}
            return views["a"]["c"] == "unhealthy" and views["b"]["c"] == "unhealthy"
        wait_for(c_down_on_a_and_b, timeout=40, interval=0.2, what="c out of rotation")
        # From now on a and b answer every request, never from c's replica.
        for h in (a, b):
            names = [cluster.answer(h) for _ in range(20)]
            assert set(names) == ALL - {"scaling-web-3"}, names
    finally:
        c.restore()
    wait_for(lambda: "scaling-web-3" in {cluster.answer(a) for _ in range(10)}, timeout=30,
             interval=0.2, what="c back in rotation on a")


# slow: tens of seconds of waits on ssh and health checks; the sanitizer stage
# runs the same fan-out and peer code in this file's other tests
@pytest.mark.slow
def test_scale_five_two_five(cluster):
    with Load(80, host=cluster.hosts["b"].ip, clients=4, max_seconds=120,
              max_requests=100000) as load:
        wait_for(lambda: load.ok > 20, timeout=30, what="traffic")
        scale_five_two_five(cluster)
        ok, failed = load.stop()
    # b's balancer kept answering while replicas came and went on every host.
    assert failed == 0, load.errors[:5]
    assert ok > 20


def scale_five_two_five(cluster):
    r = cluster.run("scale", "production", "web=2", check=0)
    for name in "abc":
        assert "server %s (" % name in r.stdout
    assert cluster.names_by_server() == {"a": ["scaling-web-1"], "b": ["scaling-web-2"], "c": []}
    wait_for(lambda: cluster.host_processes(cluster.hosts["c"]) == [], what="c's replica gone")
    assert cluster.host_processes(cluster.hosts["a"]) == ["scaling-web-1"]
    # c runs none but still has the service: its balancer sends to a and b.
    assert {cluster.answer(cluster.hosts["c"]) for _ in range(6)} == {"scaling-web-1",
                                                                      "scaling-web-2"}
    r = cluster.run("scale", "production", "web=5", "--output", "json", check=0)
    results = [json.loads(l) for l in r.stdout.splitlines() if '"type":"result"' in l]
    assert [(x["server"], x["ok"]) for x in results] == [("a", True), ("b", True), ("c", True)]
    assert cluster.names_by_server() == SPREAD
    for name, h in cluster.hosts.items():
        assert cluster.host_processes(h) == SPREAD[name]


def test_logs_merged_by_time(cluster):
    r = cluster.run("logs", "production", "-t", "--tail", "0", check=0)
    lines = [l for l in r.stdout.splitlines() if " | " in l]
    started = {l.split(" | ")[0].strip() for l in lines if "listening on" in l}
    assert started >= {n for names in SPREAD.values() for n in names}, r.stdout
    stamps = [l.split(" | ", 1)[1].split(" ", 1)[0] for l in lines]
    assert stamps == sorted(stamps), r.stdout


def test_logs_of_one_instance_come_from_its_server_and_an_unknown_one_is_an_error(cluster):
    # scaling-web-4 runs on a only; its lines come through the merge alone
    r = cluster.run("logs", "production", "scaling-web-4", "--tail", "0", check=0)
    lines = [l for l in r.stdout.splitlines() if " | " in l]
    assert r.returncode == 0 and lines, r.stdout + r.stderr
    assert {l.split(" | ")[0].strip() for l in lines} == {"scaling-web-4"}, r.stdout
    r = cluster.run("logs", "production", "scaling-web-9", check=2)
    assert ("no logs for instance scaling-web-9 on any server of environment production"
            in r.stderr), r.stderr


def test_logs_follow_interleaves_all_hosts(cluster):
    p = subprocess.Popen([TAKO, "logs", "production", "-f", "--tail", "1"], env=cluster.env,
                         cwd=cluster.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    got = []
    reader = threading.Thread(target=lambda: got.extend(iter(p.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        def served_everywhere():
            # Requests to every host's balancer; each replica logs what it served.
            for h in cluster.hosts.values():
                cluster.answer(h)
            seen = set(re.findall(r"^(scaling-web-\d) +\| served /api/instance as \1$",
                                  "".join(got), re.M))
            return {s for s, names in SPREAD.items() if set(names) & seen} == {"a", "b", "c"}
        # Lines from replicas of all three hosts arrive on the one stream.
        wait_for(served_everywhere, timeout=30, interval=0.2, what="lines from every host")
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    assert p.returncode == 0, p.stderr.read()


def test_setup_again_changes_nothing_on_any_server(cluster):
    r = cluster.run("setup", "production", check=0)
    for name, h in cluster.hosts.items():
        assert ("server %s (root@%s:22): nothing changed; tako" % (name, h.ip)) in r.stdout, \
            r.stdout


def test_restart_history_and_stats_cover_every_server(cluster):
    before = {s["server"]: sorted(r["pid"] for r in s["replicas"])
              for s in cluster.ps()["services"]}
    r = cluster.run("restart", "production", check=0)
    assert [l.split()[1] for l in r.stdout.splitlines() if l.startswith("server ")] == [
        "a", "b", "c"], r.stdout
    after = {s["server"]: sorted(r["pid"] for r in s["replicas"])
             for s in cluster.ps()["services"]}
    for name in "abc":  # every replica replaced, on every server
        assert len(after[name]) == len(SPREAD[name]) and not set(after[name]) & set(before[name])
    assert cluster.names_by_server() == SPREAD
    h = cluster.run("history", "production", check=0).stdout
    assert h.split("\n")[0].split()[:2] == ["SERVER", "ID"], h
    rows = [line.split() for line in h.splitlines()[1:] if line.strip()]
    assert {row[0] for row in rows} == {"a", "b", "c"}
    # newest first: the restart of each server leads
    assert sorted(row[0] for row in rows[:3]) == ["a", "b", "c"], h
    assert all(row[4] == "restart" for row in rows[:3]), h
    st = cluster.run("stats", "production", check=0).stdout
    names = {line.split()[1] for line in st.splitlines()[1:] if line.strip()}
    assert names == {n for v in SPREAD.values() for n in v}, st


def one_revision(cluster):
    """{server: revision} when every replica of every server runs its
    service's revision (asserted), from `tako ps --output json`."""
    out = {}
    for s in cluster.ps()["services"]:
        assert {r["revision"] for r in s["replicas"]} <= {s["revision"]}, s
        out[s["server"]] = s["revision"]
    return out


# The revision of test_rollout_failing_on_one_host_...: every replica of c's
# series (3, 6, 9: slot_first 3, stride 3) exits at start; a and b's start.
FAILS_ON_C = APP.replace(
    'NAME = os.environ["HOSTNAME"]\n',
    'NAME = os.environ["HOSTNAME"]\n'
    'if int(NAME.rsplit("-", 1)[1]) % 3 == 0:\n'
    '    sys.exit("this revision cannot start on server c")\n')


# slow: a and b roll out and back, c's replica must fail its start first
@pytest.mark.slow
def test_rollout_failing_on_one_host_rolls_the_others_back(cluster):
    before = one_revision(cluster)
    assert len(set(before.values())) == 1, before
    old = before["a"]
    path = os.path.join(cluster.dir, "app.py")
    try:
        with open(path, "w") as f:
            f.write(FAILS_ON_C)
        with Load(80, host=cluster.hosts["a"].ip, clients=2, max_seconds=200,
                  max_requests=100000) as load:
            wait_for(lambda: load.ok > 20, timeout=30, what="traffic")
            r = cluster.run("deploy", "production", check=1)
            ok, failed = load.stop()
    finally:
        with open(path, "w") as f:
            f.write(APP)
    # a and b ran the new revision before c failed it; they went back.
    out = r.stdout
    assert out.index("to server c") < out.index("Rolling back web on server a"), out
    assert re.search(r"Rolling back web on server b from \w+ to %s" % old, out), out
    err = r.stderr
    assert "the rollout failed on server c" in err, err
    assert "brought every server of environment production to the revision it ran before" \
        in err, err
    for name in "ab":
        assert "server %s: web back on %s" % (name, old) in err, err
    assert "server c: unchanged" in err, err  # its takod rolled it back itself
    assert one_revision(cluster) == before
    assert cluster.names_by_server() == SPREAD
    for name, h in cluster.hosts.items():
        assert cluster.host_processes(h) == SPREAD[name]
    # Going there and back lost no request on a's balancer.
    assert failed == 0, load.errors[:5]
    assert ok > 20


# slow: a rolls out and back under load
@pytest.mark.slow
def test_interrupted_deploy_ends_on_one_revision(cluster):
    before = one_revision(cluster)
    assert len(set(before.values())) == 1, before
    path = os.path.join(cluster.dir, "app.py")
    lines = []
    try:
        with open(path, "a") as f:
            f.write("# an interrupted change\n")
        with Load(80, host=cluster.hosts["a"].ip, clients=2, max_seconds=200,
                  max_requests=100000) as load:
            wait_for(lambda: load.ok > 20, timeout=30, what="traffic")
            # Its own process group, as in a terminal: Ctrl-C reaches the CLI
            # and its ssh processes alike.
            p = subprocess.Popen([TAKO, "deploy", "production"], env=cluster.env,
                                 cwd=cluster.dir, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                for line in iter(p.stdout.readline, ""):
                    lines.append(line)
                    if line.startswith("Deploying scaling (production) to server a"):
                        os.killpg(p.pid, signal.SIGINT)  # a is rolling now
                        break
                out, err = p.communicate(timeout=200)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            ok, failed = load.stop()
    finally:
        with open(path, "w") as f:
            f.write(APP)
    out = "".join(lines) + out
    assert p.returncode == 128 + signal.SIGINT, out + err
    assert "tako deploy: interrupted: no further server is started" in err, err
    # a finished its rollout, then went back; b and c never started.
    assert "Deploying scaling (production) to server b" not in out, out
    assert "Rolling back web on server a" in out, out
    assert "server a: web back on %s" % before["a"] in err, err
    for name in "bc":
        assert "server %s: not started, unchanged" % name in err, err
    assert one_revision(cluster) == before
    assert cluster.names_by_server() == SPREAD
    assert failed == 0, load.errors[:5]
    assert ok > 20


# slow: a rolls out, then the module's revision is deployed back
@pytest.mark.slow
def test_second_interrupt_leaves_at_once_and_says_where_each_server_is(cluster):
    before = one_revision(cluster)
    path = os.path.join(cluster.dir, "app.py")
    out, err = [], []
    try:
        with open(path, "a") as f:
            f.write("# a change left half-way\n")
        p = subprocess.Popen([TAKO, "deploy", "production"], env=cluster.env,
                             cwd=cluster.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        readers = [threading.Thread(target=lambda f=f, g=g: g.extend(iter(f.readline, "")),
                                    daemon=True) for f, g in ((p.stdout, out), (p.stderr, err))]
        for t in readers:
            t.start()
        try:
            wait_for(lambda: any(l.startswith("Deploying scaling (production) to server a")
                                 for l in out), timeout=120, interval=0.05, what="a rolling")
            os.killpg(p.pid, signal.SIGINT)
            wait_for(lambda: any("interrupted: no further server" in l for l in err),
                     timeout=30, interval=0.05, what="the first interrupt taken")
            os.killpg(p.pid, signal.SIGINT)
            p.wait(60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            for t in readers:
                t.join(10)
        text = "".join(err)
        assert p.returncode == -signal.SIGINT, "".join(out) + text
        assert "tako deploy: left at once; the servers of environment production may run " \
               "different revisions now" in text, text
        assert ("server a is rolling out the new revision: its takod finishes it (or rolls it "
                "back) on its own") in text, text
        for name in "bc":
            assert "server %s runs the revision it ran before (not started)" % name in text, text
        # a's takod finishes (or rolls back) what it was given on its own; b and c
        # were not touched.
        def a_settled():
            for s in cluster.ps()["services"]:
                if s["server"] == "a":
                    up = [r for r in s["replicas"] if r.get("state") == "running"]
                    return s["status"] == "running" and len(up) == 2 and \
                        {r["revision"] for r in up} == {s["revision"]}
        wait_for(a_settled, timeout=120, interval=0.5, what="a settled on one revision")
        now = {s["server"]: s["revision"] for s in cluster.ps()["services"]}
        assert (now["b"], now["c"]) == (before["b"], before["c"]), now
    finally:
        with open(path, "w") as f:
            f.write(APP)
    # The next deploy brings them to one revision (the module's own, back on a).
    cluster.run("deploy", "production", "--lock-wait", "2m", check=0)
    assert one_revision(cluster) == before
    assert cluster.names_by_server() == SPREAD


def revisions(cluster, hosts, rc=0):
    ps = cluster.ps(rc)
    return {s["server"]: (s["revision"], sorted(r["pid"] for r in s["replicas"]))
            for s in ps["services"] if s["server"] in hosts}


# slow: tens of seconds of waits on ssh and health checks; the sanitizer stage
# runs the same fan-out and peer code in this file's other tests
@pytest.mark.slow
def test_unreachable_host_changes_nothing_then_skip(cluster):
    c = cluster.hosts["c"]
    before = revisions(cluster, "ab")
    with open(os.path.join(cluster.dir, "app.py"), "a") as f:
        f.write("# a change: a new revision\n")
    # sshd of host c stops (by its recorded pid); its takod and replicas keep running.
    c.sshd.send_signal(signal.SIGKILL)
    c.sshd.wait(10)
    c.sshd = None
    r = cluster.run("deploy", "production", check=3)
    assert "server c (root@%s:22) is unreachable" % c.ip in r.stderr, r.stderr
    assert "nothing was changed on any server" in r.stderr, r.stderr
    assert "--skip c" in r.stderr
    assert revisions(cluster, "ab", 3) == before
    # So do the other commands that change something.
    r = cluster.run("restart", "production", check=3)
    assert "nothing was changed on any server" in r.stderr, r.stderr
    assert revisions(cluster, "ab", 3) == before
    # ps: c is a line saying so; a and b are still shown.
    ps = cluster.run("ps", "production", "-a")
    assert ps.returncode == 3
    assert re.search(r"^c\s+unreachable", ps.stdout, re.M), ps.stdout
    assert {l.split()[0] for l in ps.stdout.splitlines()[1:] if l.strip()} == {"a", "b", "c"}
    # --skip c deploys to a and b only.
    with Load(80, host=cluster.hosts["a"].ip, clients=4, max_seconds=120,
              max_requests=100000) as load:
        wait_for(lambda: load.ok > 20, timeout=30, what="traffic")
        r = cluster.run("deploy", "production", "--skip", "c", check=0)
        ok, failed = load.stop()
    # A rolling deploy over a and b, server by server, loses no request.
    assert failed == 0, load.errors[:5]
    assert "server c skipped" in r.stdout
    after = revisions(cluster, "ab", 3)
    assert after["a"][0] != before["a"][0] and after["b"][0] == after["a"][0]
    # c was not touched: its replica still runs from before.
    assert cluster.host_processes(c) == SPREAD["c"]
    # An unknown name is refused before anything happens.
    r = cluster.run("deploy", "production", "--skip", "z", check=2)
    assert "environment production has no server z" in r.stderr


def test_two_servers_that_are_this_machine_refused(tmp_path):
    (tmp_path / "tako.yaml").write_text(
        "project: {name: twice}\n"
        "servers:\n  a: {host: localhost}\n  b: {host: 127.0.0.2}\n"
        "environments:\n  production:\n    servers: [a, b]\n"
        "    services: {web: {command: 'python3 -m http.server', port: 3000}}\n")
    env = dict(os.environ, TAKO_HOME=str(tmp_path / "home"), NO_COLOR="1")
    r = subprocess.run([TAKO, "deploy", "production"], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "servers a and b of environment production are both this machine" in r.stderr
    assert not os.path.exists(str(tmp_path / "home" / "takod.pid"))


# slow: tens of seconds of waits on ssh and health checks; the sanitizer stage
# runs the same fan-out and peer code in this file's other tests
@pytest.mark.slow
def test_a_host_that_cannot_run_tako_changes_nothing(cluster):
    """Runs after the unreachable test: c comes back as a fresh host whose
    port 80 another program holds, so preparing it fails."""
    import socket
    c = cluster.hosts["c"]
    c.start_sshd(c.host_key)  # fresh /usr/local/bin and /var/lib/tako
    before = revisions(cluster, "ab", 3)  # c answers ssh but has no takod yet
    with open(os.path.join(cluster.dir, "app.py"), "a") as f:
        f.write("# another change\n")
    squatter = subprocess.Popen(["ip", "netns", "exec", c.ns, "python3", "-m", "http.server",
                                 "--bind", c.ip, "80"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, cwd=c.tmp)
    try:
        def listening():
            try:
                socket.create_connection((c.ip, 80), timeout=0.5).close()
                return True
            except OSError:
                return False
        try:
            wait_for(lambda: listening() or squatter.poll() is not None, timeout=20,
                     what="a program on c's port 80")
        finally:
            assert squatter.poll() is None, squatter.stderr.read()
        r = cluster.run("deploy", "production", check=1)
        assert "server c (root@%s:22) cannot run tako" % c.ip in r.stderr, r.stderr
        assert "port 80 is in use" in r.stderr, r.stderr
        assert ("preparing the server failed on server c; nothing was rolled out on any server"
                in r.stderr), r.stderr
        assert "Deploying" not in r.stdout, r.stdout
        assert revisions(cluster, "ab", 3) == before
        assert c.nsexec("test", "-e", "/usr/local/bin/tako").returncode == 1
    finally:
        squatter.kill()
        squatter.wait()
