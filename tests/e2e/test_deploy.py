"""takod and the deploy workflow, end to end through the real binary.

Each test has its own TAKO_HOME and project directory; whoami replicas are
run by takod's process runtime behind takod's embedded proxy. Zero-downtime
claims are asserted as counts of failed requests under a steady, bounded load.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import WHOAMI, Load, free_port, http, http_json, wait_for, wait_port


def config(port, http_port, replicas=3, greeting="one", extra_env="", command=None,
           strategy="round_robin", health_path="/health", project="scaling"):
    cmd = command or WHOAMI
    return f"""project:
  name: {project}
environments:
  local:
    http: {http_port}
    services:
      web:
        command: {cmd}
        port: 3000
        replicas: {replicas}
        proxy:
          port: {port}
        loadBalancer:
          strategy: {strategy}
        healthCheck:
          path: {health_path}
          interval: 300ms
          timeout: 300ms
          unhealthyThreshold: 3
        deploy:
          drainTimeout: 5s
          stopGracePeriod: 5s
        env:
          GREETING: {greeting}
{extra_env}"""


def hostnames(port, n):
    out = []
    for _ in range(n):
        st, body = http_json(port, "/api/instance")
        assert st == 200
        out.append(body["hostname"])
    return out


def deployed(tako, port, replicas=3, **kw):
    http_port = free_port()
    tako.write("tako.yaml", config(port, http_port, replicas=replicas, **kw))
    r = tako.run("deploy", check=0)
    return r


def pids_of(tako):
    ps = tako.ps_json()
    return {r["name"]: r["pid"] for s in ps["services"] for r in s["replicas"]}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_deploy_three_replicas_round_robin_and_ps(tako):
    port = free_port()
    r = deployed(tako, port)
    assert "scaling-web-1" in r.stdout
    ps = tako.run("ps", check=0).stdout
    assert re.search(r"^web\s+3/3\s.*running", ps, re.M), ps
    # Exact round robin over the replicas' own hostnames.
    names = hostnames(port, 9)
    assert set(names) == {"scaling-web-1", "scaling-web-2", "scaling-web-3"}
    for i in range(3, 9):
        assert names[i] == names[i - 3], names
    start = names.index("scaling-web-1")
    assert names[start:start + 3] == ["scaling-web-1", "scaling-web-2", "scaling-web-3"], names
    # JSON view: numbers are numbers.
    js = tako.ps_json()
    svc = js["services"][0]
    assert svc["service"] == "web" and svc["running"] == 3 and svc["desired"] == 3
    reps = svc["replicas"]
    assert [x["name"] for x in reps] == ["scaling-web-1", "scaling-web-2", "scaling-web-3"]
    for x in reps:
        for key in ("pid", "port", "restarts", "uptime", "memory"):
            assert isinstance(x[key], int), (key, x)
        assert isinstance(x["cpu"], (int, float))
        assert x["health"] == "healthy"
    inst = tako.run("ps", "--instances", check=0).stdout
    assert "scaling-web-2" in inst and "healthy" in inst


def test_deploy_unchanged_says_so(tako):
    port = free_port()
    deployed(tako, port)
    pids = pids_of(tako)
    r = tako.run("deploy", check=0)
    assert "nothing changed" in r.stdout.lower()
    assert pids_of(tako) == pids


def test_rolling_deploy_of_changed_env_loses_nothing(tako):
    port = free_port()
    deployed(tako, port)
    http_port = free_port()
    before = pids_of(tako)
    with Load(port, clients=50, max_seconds=120) as load:
        wait_for(lambda: load.ok > 200, timeout=30, what="load running")
        tako.write("tako.yaml", config(port, http_port, greeting="two"))
        r = tako.run("deploy", check=0)
        wait_for(lambda: load.ok > 400, timeout=30, what="load after deploy")
    ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    assert ok > 400
    after = pids_of(tako)
    assert set(after) == {"scaling-web-1", "scaling-web-2", "scaling-web-3"}
    assert not set(after.values()) & set(before.values()), "every replica was replaced"
    assert "draining" in r.stdout


def test_scale_up_and_down_loses_nothing(tako):
    port = free_port()
    deployed(tako, port)
    with Load(port, clients=50, max_seconds=150) as load:
        wait_for(lambda: load.ok > 200, timeout=30, what="load running")
        tako.run("scale", "web=5", check=0)
        ps = tako.run("ps", check=0).stdout
        assert re.search(r"^web\s+5/5\s.*running", ps, re.M), ps
        assert "scaled by 'tako scale'" in ps
        # The load shares the round-robin cursor: sample enough to see all five.
        names = set(hostnames(port, 100))
        assert names == {"scaling-web-%d" % i for i in range(1, 6)}
        tako.run("scale", "web=1", check=0)
        n = load.ok
        wait_for(lambda: load.ok > n + 200, timeout=30, what="load after scale down")
    ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    ps = tako.ps_json()["services"][0]
    assert [r["name"] for r in ps["replicas"]] == ["scaling-web-1"]
    assert set(hostnames(port, 3)) == {"scaling-web-1"}


def test_restart_and_kill9_of_a_replica_lose_nothing(tako):
    port = free_port()
    deployed(tako, port)
    before = pids_of(tako)
    with Load(port, clients=50, max_seconds=150) as load:
        wait_for(lambda: load.ok > 200, timeout=30, what="load running")
        tako.run("restart", "web", check=0)
        mid = pids_of(tako)
        assert not set(mid.values()) & set(before.values())
        # kill -9 one replica: retries hide it, the runtime restarts it.
        victim = mid["scaling-web-2"]
        os.kill(victim, signal.SIGKILL)
        def back():
            s = tako.ps_json()["services"][0]
            r2 = [r for r in s["replicas"] if r["name"] == "scaling-web-2"][0]
            return s["running"] == 3 and r2["pid"] != victim and r2["restarts"] >= 1
        wait_for(back, timeout=60, interval=0.2, what="scaling-web-2 restarted")
        n = load.ok
        wait_for(lambda: load.ok > n + 200, timeout=30, what="more load")
    ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    ps = tako.run("ps", check=0).stdout
    assert re.search(r"^web\s+3/3\s.*running", ps, re.M), ps


def test_failed_deploy_rolls_back_and_old_keeps_serving(tako):
    port = free_port()
    http_port = free_port()
    tako.write("tako.yaml", config(port, http_port))
    tako.run("deploy", check=0)
    before = pids_of(tako)
    # The new revision answers 404 on its health path: it never becomes healthy.
    tako.write("tako.yaml", config(port, http_port, health_path="/nope"))
    with Load(port, clients=20, max_seconds=120) as load:
        r = tako.run("deploy", check=1)
    ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    assert ok > 0
    assert "rolled back" in (r.stdout + r.stderr)
    assert pids_of(tako) == before
    assert set(hostnames(port, 3)) == {"scaling-web-1", "scaling-web-2", "scaling-web-3"}
    hist = json.loads(tako.run("history", "--output", "json", check=0).stdout)["history"]
    assert hist[0]["status"] == "rolled-back"


def test_crashing_revision_shows_its_last_lines(tako):
    port = free_port()
    http_port = free_port()
    tako.write("tako.yaml", config(port, http_port))
    tako.run("deploy", check=0)
    # whoami refuses an invalid --port at once: the replica exits during startup.
    tako.write("tako.yaml", config(port, http_port, command=WHOAMI + " --port notaport"))
    r = tako.run("deploy", check=1)
    out = r.stdout + r.stderr
    assert "invalid port" in out
    assert "rolled back" in out
    assert tako.ps_json()["services"][0]["running"] == 3


def test_second_deploy_at_once_is_refused(tako):
    port = free_port()
    http_port = free_port()
    tako.write("tako.yaml", config(port, http_port, replicas=2))
    tako.run("deploy", check=0)
    tako.write("tako.yaml", config(port, http_port, replicas=2, greeting="slow"))
    env = dict(os.environ)
    env.update(tako.env)
    from conftest import TAKO
    first = subprocess.Popen([TAKO, "deploy"], cwd=tako.dir, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # Wait until the first deploy is visibly running, then try a second one.
        wait_for(lambda: any(h["status"] == "running" for h in json.loads(
            tako.run("history", "--output", "json", check=0).stdout)["history"]),
            timeout=30, interval=0.05, what="first deploy running")
        r = tako.run("deploy", "--force")
        assert r.returncode == 4, (r.stdout, r.stderr)
        assert "in progress" in r.stderr + r.stdout
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err


def test_logs_stats_history_and_down_leave_nothing(tako):
    port = free_port()
    deployed(tako, port)
    hostnames(port, 30)
    logs = tako.run("logs", check=0).stdout
    for i in (1, 2, 3):
        assert re.search(r"^scaling-web-%d\s+\| whoami scaling-web-%d listening" % (i, i), logs, re.M), logs
    one = tako.run("logs", "scaling-web-2", "--tail", "1", check=0).stdout.strip().splitlines()
    assert len(one) == 1 and one[0].startswith("scaling-web-2")
    stats = tako.run("stats", check=0).stdout
    counts = {}
    for line in stats.splitlines()[1:]:
        f = line.split()
        counts[f[0]] = int(f[3])
    assert sum(counts.values()) >= 30
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    hist = tako.run("history", check=0).stdout
    assert "deploy" in hist and "ok" in hist
    pids = pids_of(tako)
    tako.run("down", check=0)
    for pid in pids.values():
        wait_for(lambda: not alive(pid), timeout=30, what="replica %d gone" % pid)
    assert tako.ps_json()["services"] == []
    with pytest.raises(OSError):
        http(port, "/", timeout=2)


def test_takod_kill9_adopts_replicas(tako):
    port = free_port()
    deployed(tako, port)
    pids = pids_of(tako)
    old = tako.takod_pid()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), timeout=10, what="takod gone")
    # The next command starts takod again; it adopts the replicas.
    def adopted():
        js = tako.ps_json()
        return js["services"] and js["services"][0]["running"] == 3 and js
    js = wait_for(adopted, timeout=60, interval=0.3, what="replicas adopted")
    assert pids_of(tako) == pids
    assert tako.takod_pid() != old
    assert set(hostnames(port, 3)) == {"scaling-web-1", "scaling-web-2", "scaling-web-3"}


def test_rollback_to_previous_revision(tako):
    # One replica: what is under test is which revision each step goes to
    # (a rolling update of three is test_rolling_deploy_of_changed_env_...).
    port = free_port()
    http_port = free_port()

    def revisions():
        s = tako.ps_json()["services"][0]
        return s["revision"], [r["revision"] for r in s["replicas"]]
    tako.write("tako.yaml", config(port, http_port, replicas=1, greeting="one"))
    tako.run("deploy", check=0)
    rev1 = revisions()[0]
    tako.write("tako.yaml", config(port, http_port, replicas=1, greeting="two"))
    tako.run("deploy", check=0)
    rev2 = revisions()[0]
    assert rev1 != rev2
    assert revisions() == (rev2, [rev2])
    tako.run("rollback", check=0)
    assert revisions() == (rev1, [rev1])
    tako.run("rollback", rev2, check=0)
    assert revisions() == (rev2, [rev2])


def test_stop_start_and_errors(tako):
    port = free_port()
    deployed(tako, port, replicas=2)
    tako.run("stop", "web", check=0)
    ps = tako.run("ps", check=0).stdout
    assert re.search(r"^web\s+0/0\s.*stopped", ps, re.M), ps
    tako.run("start", "web", check=0)
    assert re.search(r"^web\s+2/2\s.*running", tako.run("ps", check=0).stdout, re.M)
    r = tako.run("scale", "nope=3")
    assert r.returncode == 2 and "no deployed service nope" in r.stderr
    r = tako.run("scale", "web=x")
    assert r.returncode == 2 and "invalid count" in r.stderr
    r = tako.run("frobnicate")
    assert r.returncode == 2


def test_domain_routing_on_entrypoint(tako):
    port = free_port()
    http_port = free_port()
    text = config(port, http_port).replace(
        "        proxy:\n          port: %d\n" % port,
        "        proxy:\n          domain: scaling.127.0.0.1.sslip.io\n")
    tako.write("tako.yaml", text)
    tako.run("deploy", check=0)
    names = []
    for _ in range(6):
        st, body = http_json(http_port, "/api/instance",
                             headers={"Host": "scaling.127.0.0.1.sslip.io"})
        assert st == 200
        names.append(body["hostname"])
    assert set(names) == {"scaling-web-1", "scaling-web-2", "scaling-web-3"}
    st, _, body = http(http_port, "/", headers={"Host": "unknown.example"})
    assert st == 404


def test_control_api_with_curl_and_socket_mode(tako):
    port = free_port()
    deployed(tako, port, replicas=1)
    sock = os.path.join(tako.home, "takod.sock")
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    assert tako.takod_pid() > 1
    out = subprocess.run(["curl", "-s", "--unix-socket", sock, "http://takod/v1/ps?project=scaling"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    js = json.loads(out)
    assert js["services"][0]["replicas"][0]["name"] == "scaling-web-1"
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "--unix-socket", sock, "http://takod/v1/nope"],
                         capture_output=True, text=True, timeout=30).stdout
    body, code = out.rsplit("\n", 1)
    assert code == "404" and "no such endpoint" in json.loads(body)["error"]
    # A scale through the API streams progress lines and a result.
    out = subprocess.run(["curl", "-s", "--unix-socket", sock, "-X", "POST", "-d",
                          '{"project":"scaling","counts":{"web":2}}', "http://takod/v1/scale"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[-1]["type"] == "result" and lines[-1]["ok"] is True
    assert any("scaling-web-2" in x.get("message", "") for x in lines)


def test_quick_start_init_then_deploy(tako):
    """The README's quick start: tako init, tako deploy, three balanced replicas."""
    tako.run("init", "demo", check=0)
    port = free_port()
    path = os.path.join(tako.dir, "tako.yaml")
    text = open(path).read()
    assert "# http: 8080" in text
    open(path, "w").write(text.replace("# http: 8080", "http: %d" % port, 1))
    r = tako.run("deploy", check=0)
    assert re.search(r"^web\s+3/3\s.*running", r.stdout, re.M), r.stdout
    for _ in range(6):
        st, _, _ = http(port, "/", headers={"Host": "demo.localhost"})
        assert st == 200
    names = [x["name"] for x in tako.ps_json()["services"][0]["replicas"]]
    assert names == ["demo-web-1", "demo-web-2", "demo-web-3"]
    counts = {r["name"]: r["requests"] for r in tako.ps_json()["services"][0]["replicas"]}
    assert sorted(counts.values()) == [2, 2, 2], counts


def test_scale_override_kept_and_warned_until_yaml_changes(tako):
    port = free_port()
    http_port = free_port()
    tako.write("tako.yaml", config(port, http_port, replicas=2))
    tako.run("deploy", check=0)
    tako.run("scale", "web=3", check=0)
    r = tako.run("deploy", check=0)
    assert "scaled to 3 by 'tako scale' but tako.yaml says 2" in r.stdout, r.stdout
    assert tako.ps_json()["services"][0]["desired"] == 3
    # Editing replicas in tako.yaml: the file wins, the override is dropped.
    tako.write("tako.yaml", config(port, http_port, replicas=1))
    r = tako.run("deploy", check=0)
    assert "dropping the scale override" in r.stdout, r.stdout
    s = tako.ps_json()["services"][0]
    assert s["desired"] == 1 and "scale_override" not in s


def test_logs_follow_sees_new_replicas(tako):
    port = free_port()
    deployed(tako, port, replicas=1)
    env = dict(os.environ)
    env.update(tako.env)
    from conftest import TAKO
    f = subprocess.Popen([TAKO, "logs", "-F", "--tail", "1"], cwd=tako.dir, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(f.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("scaling-web-1" in x for x in lines), timeout=20, what="tail line")
        tako.run("scale", "web=2", check=0)
        wait_for(lambda: any(x.startswith("scaling-web-2") and "listening" in x for x in lines),
                 timeout=30, what="the new replica's first line")
    finally:
        os.killpg(f.pid, signal.SIGTERM)
        f.wait(10)


def test_strategy_change_swaps_the_pool_without_loss(tako):
    """A new strategy needs a new pool: ready replicas take traffic in it at
    once, the old pool drains; nothing fails under load."""
    port = free_port()
    http_port = free_port()
    tako.write("tako.yaml", config(port, http_port))
    tako.run("deploy", check=0)
    with Load(port, clients=20, max_seconds=120) as load:
        wait_for(lambda: load.ok > 200, timeout=30, what="load running")
        tako.write("tako.yaml", config(port, http_port, strategy="least_connections"))
        tako.run("deploy", check=0)
        n = load.ok
        wait_for(lambda: load.ok > n + 200, timeout=30, what="load after the swap")
    ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    svc = tako.ps_json()["services"][0]
    assert svc["strategy"] == "least_connections" and svc["running"] == 3


def test_logs_tail_of_more_than_the_api_buffer_arrives_whole(tako):
    """`tako logs --tail 0` streams every line, at the pace the CLI reads,
    even when they are more than takod keeps for a client (16 MiB)."""
    n = 300000
    tako.write("tako.yaml", f"""project:
  name: chatty
environments:
  local:
    http: {free_port()}
    services:
      worker:
        command: ["/bin/sh", "-c", "seq 1 {n}; exec sleep 600"]
        replicas: 1
""")
    tako.run("deploy", check=0)
    wait_for(lambda: tako.run("logs", "--tail", "1", check=0).stdout.strip().endswith("| %d" % n),
             timeout=60, what="the last line logged")
    # A reader that stalls: the CLI blocks on its full stdout pipe and stops
    # reading the socket, while takod has 20+ MiB of lines for it.
    env = dict(os.environ)
    env.update(tako.env)
    from conftest import TAKO
    f = subprocess.Popen([TAKO, "logs", "--tail", "0"], cwd=tako.dir, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        def blocked():
            with open("/proc/%d/wchan" % f.pid) as w:
                return "pipe_write" in w.read()
        wait_for(blocked, timeout=30, what="the CLI blocked on its output")
        # Give takod the time to push all it would push to a reader that
        # does not read (without pacing it drops the reader at 16 MiB).
        time.sleep(3)
        out, err = f.communicate(timeout=120)
    finally:
        if f.poll() is None:
            os.killpg(f.pid, signal.SIGKILL)
            f.wait(10)
    lines = out.decode().splitlines()
    assert f.returncode == 0, err[-500:]
    assert len(lines) == n, (len(lines), lines[:2], lines[-2:], err[-500:])
    assert [int(x.rsplit("| ", 1)[1]) for x in lines] == list(range(1, n + 1))


def test_rollback_target_failing_too_stays_in_crashloop_without_flipping(tako, tmp_path):
    """A deploy fails, and so does the revision it rolls back to (its command
    needs a file removed since it was deployed): the deploy fails saying so,
    the service stays on the revision that served before, crash-looping with
    its last output in `tako ps -a`, no revision is started again, and a
    good revision deploys over it."""
    import sqlite3
    port, http_port = free_port(), free_port()
    flag = tmp_path / "needed-file"
    flag.write_text("x\n")
    needs = json.dumps(["/bin/sh", "-c",
                        "test -f %s || { echo \"missing %s\" >&2; exit 1; }; exec %s" % (
                            flag, flag, WHOAMI)])

    def cfg(greeting, command=needs):
        # recreate: the old replica is stopped first, so the rollback has to
        # start the old revision again.
        return config(port, http_port, replicas=1, greeting=greeting, command=command).replace(
            "        deploy:\n", "        deploy:\n          strategy: recreate\n")

    tako.write("tako.yaml", cfg("one"))
    tako.run("deploy", check=0)
    rev_a = tako.ps_json()["services"][0]["revision"]
    flag.unlink()
    tako.write("tako.yaml", cfg("two"))
    r = tako.run("deploy", check=1)
    out = r.stdout + r.stderr
    assert "rolled back to revision %s, but the previous revision fails too" % rev_a in out, out
    assert "rolled back to the previous revision" not in out, out
    assert "missing %s" % flag in out, out

    def crashlooping():
        s = tako.ps_json()["services"][0]
        return s["status"] == "crashloop" and s
    s = wait_for(crashlooping, timeout=30, interval=0.2, what="crashloop in ps")
    assert s["revision"] == rev_a
    assert [(x["name"], x["revision"]) for x in s["replicas"]] == [("scaling-web-1", rev_a)]
    ps = tako.run("ps", check=0).stdout
    assert re.search(r"^web\s+0/1\s.*crashloop", ps, re.M), ps
    inst = tako.run("ps", "--instances", check=0).stdout
    assert re.search(r"last: exited with status 1 \(\d+ in a row\); last output: .*missing %s"
                     % re.escape(str(flag)), inst), inst
    hist = json.loads(tako.run("history", "--output", "json", check=0).stdout)["history"]
    assert hist[0]["status"] == "failed", hist[0]

    # No further swaps: one rollback, one start of each revision, while the
    # runtime keeps restarting the replica (at least 3 quick exits by now).
    db = sqlite3.connect("file:%s/state.db?mode=ro" % tako.home, uri=True)
    try:
        kinds = [k for (k,) in db.execute("SELECT kind FROM events WHERE service = 'web'")]
        starts = [m for (m,) in db.execute(
            "SELECT message FROM events WHERE service = 'web' AND kind = 'starting'")]
    finally:
        db.close()
    assert kinds.count("rollback") == 1, kinds
    assert len(starts) == 3, starts  # the first deploy, the new revision, the rollback
    assert rev_a in starts[2], starts
    assert tako.ps_json()["services"][0]["revision"] == rev_a

    # A good revision deploys over it.
    tako.write("tako.yaml", cfg("three", command=WHOAMI))
    tako.run("deploy", check=0)
    s = tako.ps_json()["services"][0]
    assert s["status"] == "running" and s["running"] == 1, s
    assert hostnames(port, 2) == ["scaling-web-1", "scaling-web-1"]


def test_replica_ports_come_from_the_band_takod_is_given(tako):
    port, http_port, low = free_port(), free_port(), free_port()
    tako.write("tako.yaml", config(port, http_port))
    # A bad band stops takod from starting, with the variable named.
    r = tako.run("deploy", env={"TAKO_REPLICA_PORTS": "%d-%d" % (low + 9, low)})
    assert r.returncode != 0
    assert "TAKO_REPLICA_PORTS: '%d-%d': the low port is above the high one" % (low + 9, low) \
        in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(tako.home, "takod.pid"))
    r = tako.run("deploy", env={"TAKO_REPLICA_PORTS": "%d-%d" % (low, low + 19)})
    assert r.returncode == 0, r.stdout + r.stderr
    ports = [x["port"] for x in tako.ps_json()["services"][0]["replicas"]]
    assert len(ports) == 3 and len(set(ports)) == 3, ports
    assert all(low <= p <= low + 19 for p in ports), (low, ports)
    assert set(hostnames(port, 3)) == {"scaling-web-1", "scaling-web-2", "scaling-web-3"}


def test_a_band_without_a_free_port_fails_the_start_and_says_why(tako):
    port, http_port, low = free_port(), free_port(), free_port()
    tako.write("tako.yaml", config(port, http_port, replicas=2))
    band = "%d-%d" % (low, low)  # one port for two replicas
    r = tako.run("deploy", env={"TAKO_REPLICA_PORTS": band})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cannot start: no free port in TAKO_REPLICA_PORTS %s" % band in r.stderr, r.stderr
    # Nothing is left running of the failed first deploy.
    assert all(s["running"] == 0 for s in tako.ps_json()["services"])
