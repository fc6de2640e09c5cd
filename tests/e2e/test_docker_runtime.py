"""`runtime: docker`: replicas as containers of a real, private dockerd
(tests/e2e/dockerd.py), deployed by the real tako. The seed's Monitoring
commands are run verbatim with the `docker` CLI pointed at that daemon.

Images are built FROM scratch out of a static whoami (no registry here);
containers use host networking, each with its own PORT, on loopback.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import Load, free_port, http, http_json, kill_takod_tree, wait_for, wait_port
from dockerd import dk, dockerd  # noqa: F401  (fixtures)


def config(proxy_port, http_port, replicas=3, greeting="one", runtime_at="service", image=None,
           extra="", restart=None, health="/health", project="scaling"):
    svc_rt = "        runtime: docker\n" if runtime_at == "service" else ""
    env_rt = "    runtime: docker\n" if runtime_at == "env" else ""
    img = "        image: %s\n" % image if image else "        build: app\n"
    rs = "        restart: %s\n" % restart if restart else ""
    return f"""project:
  name: {project}
environments:
  production:
    http: {http_port}
{env_rt}    services:
      web:
{svc_rt}{img}{rs}        port: 3000
        replicas: {replicas}
        proxy:
          port: {proxy_port}
        healthCheck:
          path: {health}
          interval: 300ms
          timeout: 300ms
          unhealthyThreshold: 3
        deploy:
          drainTimeout: 3s
          stopGracePeriod: 3s
        env:
          GREETING: {greeting}
{extra}"""


def app(tako, dk, name="app", dockerfile=None):
    """The build directory: a static whoami in an image FROM scratch."""
    d = os.path.join(tako.dir, name)
    os.makedirs(d, exist_ok=True)
    import shutil
    shutil.copy(dk.whoami_static, os.path.join(d, "whoami"))
    with open(os.path.join(d, "Dockerfile"), "w") as f:
        f.write(dockerfile or 'FROM scratch\nCOPY whoami /whoami\nCMD ["/whoami"]\n')
    return d


def sh(dk, cmd, check=True):
    """A shell command line, verbatim, with DOCKER_HOST set to the test daemon."""
    env = dict(os.environ)
    env.update(dk.env)
    r = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r


@pytest.fixture
def dtako(tako, dk):
    tako.env.update(dk.env)
    tako.proxy_port = free_port()
    tako.http_port = free_port()
    yield tako
    # takod first: removing its containers while it runs would have it
    # start them again behind the cleanup's back.
    kill_takod_tree(tako.home)


def deploy(t, dk, check=0, **kw):
    app(t, dk)
    t.write("tako.yaml", config(t.proxy_port, t.http_port, **kw))
    return t.run("deploy", check=check, timeout=300)


def hostnames(port, n):
    out = []
    for _ in range(n):
        st, body = http_json(port, "/api/instance")
        assert st == 200, body
        out.append(body["hostname"])
    return out


def containers(dk, prefix="scaling-web-"):
    return sorted(n for n in dk.container_names() if n.startswith(prefix))


def test_seed_monitoring_commands_and_rotation_over_container_hostnames(dtako, dk):
    r = deploy(dtako, dk)
    assert re.search(r"^web\s+3/3\s.*running", r.stdout, re.M), r.stdout
    # The build's progress streamed into the deploy's output.
    assert re.search(r"scaling-web-\d: Step 1/\d+ : FROM scratch", r.stdout), r.stdout

    # Monitoring Instances, verbatim.
    ps = sh(dk, "docker ps | grep scaling-web").stdout.splitlines()
    assert len(ps) == 3, ps
    assert sorted(l.split()[-1] for l in ps) == ["scaling-web-1", "scaling-web-2", "scaling-web-3"]
    logs = sh(dk, "docker logs scaling-web-1")
    assert re.search(r"^whoami scaling-web-1 listening on port \d+$", logs.stdout, re.M), logs
    follow = sh(dk, "timeout 2 docker logs -f scaling-web-1", check=False)
    assert follow.returncode == 124 and "whoami scaling-web-1 listening" in follow.stdout
    stats = sh(dk, "docker stats --no-stream scaling-web-1 scaling-web-2 scaling-web-3").stdout
    rows = stats.splitlines()
    assert rows[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
    assert sorted(r.split()[1] for r in rows[1:]) == ["scaling-web-1", "scaling-web-2",
                                                      "scaling-web-3"]

    # Round robin over the containers' own hostnames.
    names = hostnames(dtako.proxy_port, 9)
    start = names.index("scaling-web-1")
    assert (names[start:] + names[:start]) == ["scaling-web-1", "scaling-web-2",
                                                 "scaling-web-3"] * 3, names

    # Identity: labels, hostname, host networking, tako owns restarts, image tag.
    c = dk.inspect("scaling-web-2")
    labels = c["Config"]["Labels"]
    rev = labels["tako.revision"]
    assert {k: labels[k] for k in ("tako.project", "tako.env", "tako.service", "tako.slot")} == {
        "tako.project": "scaling", "tako.env": "production", "tako.service": "web",
        "tako.slot": "2"}
    assert c["Config"]["Hostname"] == "scaling-web-2"
    assert c["HostConfig"]["NetworkMode"] == "host"
    assert c["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert c["Config"]["Image"] == "scaling-web:%s" % rev
    assert "GREETING=one" in c["Config"]["Env"]

    # tako's own views come from the engine.
    ps = dtako.ps_json()
    reps = ps["services"][0]["replicas"]
    assert sorted(x["name"] for x in reps) == ["scaling-web-1", "scaling-web-2", "scaling-web-3"]
    def mem_known():
        st = json.loads(dtako.run("stats", "--output", "json", check=0).stdout)
        rows = [x for s in st["services"] for x in s["replicas"]]
        return len(rows) == 3 and all(x["memory"] > 0 for x in rows) and rows
    wait_for(mem_known, timeout=30, interval=1, what="tako stats memory from the engine")
    lg = dtako.run("logs", "--service", "web", check=0).stdout
    assert re.search(r"scaling-web-2.*whoami scaling-web-2 listening", lg), lg

    # tako down removes the containers (and the images with --images).
    dtako.run("down", check=0)
    assert containers(dk) == []
    assert dk.docker("image", "inspect", "scaling-web:%s" % rev, check=False).returncode == 0
    deploy(dtako, dk)
    assert len(containers(dk)) == 3
    r = dtako.run("down", "--images", check=0)
    assert "removed 1 Docker image of scaling" in r.stdout, r.stdout
    assert containers(dk) == []
    assert dk.docker("image", "inspect", "scaling-web:%s" % rev, check=False).returncode != 0
    assert dk.docker("image", "inspect", dk.base_image, check=False).returncode == 0


def ids_of(dk):
    return {n: dk.inspect(n)["Id"] for n in containers(dk)}


def write_app_change(t, text):
    """Change the build directory: a new file in the image → a new revision."""
    with open(os.path.join(t.dir, "app", "version.txt"), "w") as f:
        f.write(text)


@pytest.mark.slow
def test_rolling_deploy_of_a_changed_image_and_docker_kill_lose_nothing(dtako, dk):
    deploy(dtako, dk)
    rev1 = dk.inspect("scaling-web-1")["Config"]["Labels"]["tako.revision"]
    before = ids_of(dk)
    dockerfile = 'FROM scratch\nCOPY whoami /whoami\nCOPY version.txt /version.txt\nCMD ["/whoami"]\n'
    with Load(dtako.proxy_port, clients=20, max_seconds=150, max_requests=200000) as load:
        wait_for(lambda: load.ok > 200, timeout=30, what="load running")
        app(dtako, dk, dockerfile=dockerfile)
        write_app_change(dtako, "two\n")
        r = dtako.run("deploy", check=0, timeout=300)
        assert "draining" in r.stdout
        n = load.ok
        wait_for(lambda: load.ok > n + 200, timeout=30, what="load after deploy")
        mid = ids_of(dk)
        # docker kill of one container: tako (not Docker) starts it again.
        dk.docker("kill", "scaling-web-2")
        def back():
            s = dtako.ps_json()["services"][0]
            r2 = [x for x in s["replicas"] if x["name"] == "scaling-web-2"][0]
            return s["running"] == 3 and r2["restarts"] >= 1 and r2["state"] == "running"
        wait_for(back, timeout=60, interval=0.2, what="scaling-web-2 started again")
        n = load.ok
        wait_for(lambda: load.ok > n + 200, timeout=30, what="more load")
    ok, failed = load.stop()
    assert failed == 0, load.errors[:5]
    after = ids_of(dk)
    assert sorted(after) == ["scaling-web-1", "scaling-web-2", "scaling-web-3"]
    assert not set(mid.values()) & set(before.values()), "every container was replaced"
    assert after["scaling-web-2"] != mid["scaling-web-2"]
    rev2 = dk.inspect("scaling-web-1")["Config"]["Labels"]["tako.revision"]
    assert rev2 != rev1
    assert dk.inspect("scaling-web-1")["Config"]["Image"] == "scaling-web:%s" % rev2
    # The previous revision's image is kept for rollback.
    assert dk.docker("image", "inspect", "scaling-web:%s" % rev1, check=False).returncode == 0


def test_images_of_old_revisions_are_kept_up_to_the_limit(dtako, dk):
    dockerfile = 'FROM scratch\nCOPY whoami /whoami\nCOPY version.txt /version.txt\nCMD ["/whoami"]\n'
    revs = []
    for i in range(6):
        app(dtako, dk, dockerfile=dockerfile)
        write_app_change(dtako, "v%d\n" % i)
        dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, replicas=1))
        dtako.run("deploy", check=0, timeout=300)
        revs.append(dtako.ps_json()["services"][0]["revision"])
    def tags():
        out = dk.docker("images", "--format", "{{.Tag}}", "scaling-web").stdout.split()
        return sorted(out)
    # the running revision and the 3 before it; the 2 oldest are gone
    wait_for(lambda: tags() == sorted(revs[2:]), timeout=30, what="old images pruned")


def test_takod_kill9_adopts_containers_by_label(dtako, dk):
    deploy(dtako, dk)
    ids = ids_of(dk)
    old = dtako.takod_pid()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not os.path.exists("/proc/%d/status" % old) or
             "zombie" in open("/proc/%d/status" % old).read(), timeout=10, what="takod gone")
    def adopted():
        js = dtako.ps_json()
        return js["services"] and js["services"][0]["running"] == 3 and js
    wait_for(adopted, timeout=60, interval=0.3, what="containers adopted")
    assert ids_of(dk) == ids  # the same containers, not new ones
    assert dtako.takod_pid() != old
    assert set(hostnames(dtako.proxy_port, 3)) == {"scaling-web-1", "scaling-web-2",
                                                    "scaling-web-3"}
    # Adopted containers are still watched: a kill is noticed and repaired,
    # and `tako logs --follow` goes on with the new container's lines.
    from conftest import TAKO
    env = dict(os.environ)
    env.update(dtako.env)
    fol = subprocess.Popen([TAKO, "logs", "--follow", "--tail", "0", "scaling-web-1"],
                           cwd=dtako.dir, env=env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)  # the follow is set up before the kill
        dk.docker("kill", "scaling-web-1")
        import select
        deadline = time.monotonic() + 60
        line = ""
        while "listening" not in line and time.monotonic() < deadline:
            if select.select([fol.stdout], [], [], 1.0)[0]:
                line = fol.stdout.readline()
                if not line:
                    break
        assert re.search(r"scaling-web-1 .*whoami scaling-web-1 listening", line), line
    finally:
        fol.kill()
        fol.wait()
    def replaced():
        # one look: the container may go between two
        c = dk.inspect("scaling-web-1")
        return c and c["Id"] != ids["scaling-web-1"] and c["State"]["Running"]
    wait_for(replaced, timeout=60, interval=0.3, what="scaling-web-1 replaced")


def test_failed_build_fails_the_deploy_with_the_builders_last_lines_and_changes_nothing(dtako, dk):
    deploy(dtako, dk)
    ids = ids_of(dk)
    app(dtako, dk, dockerfile="FROM scratch\nCOPY whoami /whoami\nCOPY missing-file /x\n"
                              'CMD ["/whoami"]\n')
    write_app_change(dtako, "broken\n")
    with Load(dtako.proxy_port, clients=10, max_seconds=120, max_requests=100000) as load:
        wait_for(lambda: load.ok > 50, timeout=30, what="load running")
        r = dtako.run("deploy", check=1, timeout=300)
    ok, failed = load.stop()
    out = r.stdout + r.stderr
    assert "missing-file" in out, out
    assert re.search(r"Step 3/\d+ : COPY missing-file /x", out), out
    assert failed == 0, load.errors[:5]
    assert ids_of(dk) == ids  # nothing that ran was touched
    assert set(hostnames(dtako.proxy_port, 3)) == {"scaling-web-1", "scaling-web-2",
                                                    "scaling-web-3"}


def test_image_that_exits_at_once_fails_the_deploy(dtako, dk):
    dk.docker("tag", dk.base_image, "exits-now:1")
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, image="exits-now:1",
                                    replicas=1)
                .replace("        env:\n", "        command: [\"sh\", \"-c\", \"echo bye; exit 3\"]\n        env:\n"))
    r = dtako.run("deploy", check=1, timeout=300)
    out = r.stdout + r.stderr
    assert "exited with status 3" in out, out
    assert "bye" in out, out
    assert containers(dk) == []


def test_container_that_never_listens_fails_the_deploy(dtako, dk):
    dk.docker("tag", dk.base_image, "silent:1")
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, image="silent:1",
                                    replicas=1)
                .replace("        env:\n", "        command: [\"sleep\", \"600\"]\n        env:\n"))
    r = dtako.run("deploy", check=1, timeout=300)
    out = r.stdout + r.stderr
    assert "health checks on /health" in out, out
    assert containers(dk) == []


def test_config_errors_name_the_place(dtako, dk, tmp_path):
    os.makedirs(os.path.join(dtako.dir, "app"))
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port))
    r = dtako.run("validate", check=None)
    assert r.returncode != 0
    assert re.search(r"tako\.yaml:8:18: environments\.production\.services\.web\.runtime: no "
                     r"Dockerfile in \S+/app", r.stdout + r.stderr), r.stdout + r.stderr
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, image="Not_Valid:x"))
    r = dtako.run("validate", check=None)
    assert re.search(r"tako\.yaml:9:16: environments\.production\.services\.web\.image: invalid "
                     r"image name 'Not_Valid'", r.stdout + r.stderr), r.stdout + r.stderr
    # Docker not reachable: the socket tried and how to start Docker, at the key.
    app(dtako, dk)
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, runtime_at="env"))
    sock = str(tmp_path / "no-docker.sock")
    r = dtako.run("deploy", check=2, env={"DOCKER_HOST": "unix://" + sock})
    assert re.search(r"tako\.yaml:6:14: environments\.production\.runtime: Docker is not "
                     r"reachable at unix://%s .*dockerd" % re.escape(sock), r.stderr), r.stderr
    assert containers(dk) == []


def test_dockerd_dying_mid_deploy_fails_it_and_what_served_keeps_serving(dtako, dk):
    deploy(dtako, dk)
    rev1 = dtako.ps_json()["services"][0]["revision"]
    # A build that takes a while (RUN in the busybox base), so the engine
    # can die in the middle of it.
    app(dtako, dk, dockerfile="FROM %s\nCOPY whoami /whoami\nRUN sleep 5\nCMD [\"/whoami\"]\n"
        % dk.base_image)
    write_app_change(dtako, "three\n")
    env = dict(os.environ)
    env.update(dtako.env)
    from conftest import TAKO
    with Load(dtako.proxy_port, clients=10, max_seconds=120, max_requests=100000) as load:
        wait_for(lambda: load.ok > 50, timeout=30, what="load running")
        p = subprocess.Popen([TAKO, "deploy"], cwd=dtako.dir, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        out = []
        try:
            for line in p.stdout:
                out.append(line)
                if re.search(r"Step 3/\d+ : RUN sleep 5", line):
                    dk.kill_daemon()
                    break
            rest, _ = p.communicate(timeout=120)
            out.append(rest)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        n = load.ok
        wait_for(lambda: load.ok > n + 100, timeout=30, what="load after the failed deploy")
    ok, failed = load.stop()
    text = "".join(out)
    assert p.returncode == 1, text
    assert re.search(r"Docker|docker", text.split("Step 3/")[-1]), text
    assert failed == 0, load.errors[:5]
    # The containers that served are the ones still serving.
    assert set(hostnames(dtako.proxy_port, 3)) == {"scaling-web-1", "scaling-web-2",
                                                    "scaling-web-3"}
    ps = dtako.ps_json()["services"][0]
    assert ps["running"] == 3
    assert ps["revision"] == rev1
    # (The engine stays dead: the next test gets a fresh one, and the
    # fixture ends these containers by the PIDs containerd recorded.)


@pytest.mark.slow
def test_seed_node_example_dockerfile_under_the_docker_runtime(dtako, dk):
    """The seed's own example (examples/scaling: Dockerfile FROM node:20-slim,
    RUN npm ci, USER node), built against a local node:20-slim made with
    docker import; npm ci fetches packages from the npm registry."""
    import shutil
    from conftest import ROOT
    dk.import_node_base("node:20-slim")
    shutil.rmtree(dtako.dir)
    shutil.copytree(os.path.join(ROOT, "examples", "scaling"), dtako.dir,
                    ignore=shutil.ignore_patterns("node_modules", ".env"))
    path = os.path.join(dtako.dir, "tako.yaml")
    text = open(path).read()
    # The seed's file but for the shared entrypoint's port and the runtime.
    text = text.replace("  production:\n", "  production:\n    http: %d\n    runtime: docker\n"
                        % dtako.http_port, 1)
    open(path, "w").write(text)
    dtako.env["SERVER_HOST"] = "127.0.0.1"
    dtako.env["CART_STORE"] = "memory"
    r = dtako.run("deploy", "prod", check=0, timeout=900)
    assert re.search(r"^web\s+3/3\s.*running", r.stdout, re.M), r.stdout
    assert "npm ci" in r.stdout
    ps = sh(dk, "docker ps | grep scaling-web").stdout.splitlines()
    assert len(ps) == 3, ps
    domain = "scaling.127.0.0.1.sslip.io"
    names = []
    for _ in range(6):
        st, body = http_json(dtako.http_port, "/api/instance", headers={"Host": domain})
        assert st == 200, body
        names.append(body["os_hostname"])
    start = names.index("scaling-web-1")
    assert (names[start:] + names[:start]) == ["scaling-web-1", "scaling-web-2",
                                                 "scaling-web-3"] * 2, names
    c = dk.inspect("scaling-web-1")
    assert c["Config"]["User"] == "node"


@pytest.fixture(scope="module")
def bridged():
    """A second private engine that has a bridge network (its own bridge
    interface on a private subnet, docker-proxy for published ports)."""
    import dockerd as dm
    d = dm.DockerD(bridge=True)
    try:
        d.start()
        d.build_whoami_static()
        yield d
    finally:
        d.stop()


def test_network_bridge_publishes_each_replica_on_loopback(tako, bridged, dk):
    t = tako
    t.env.update(bridged.env)
    t.proxy_port, t.http_port = free_port(), free_port()
    try:
        app(t, bridged)
        # (startPeriod: docker-proxy accepts before the app listens; its
        # first checks fail on a loaded machine)
        t.write("tako.yaml", config(t.proxy_port, t.http_port).replace(
            "        port: 3000\n", "        port: 3000\n        network: bridge\n").replace(
            "          interval: 300ms\n", "          interval: 300ms\n          startPeriod: 5s\n"))
        r = t.run("deploy", check=0, timeout=300)
        assert re.search(r"^web\s+3/3\s.*running", r.stdout, re.M), r.stdout
        names = hostnames(t.proxy_port, 6)
        assert sorted(set(names)) == ["scaling-web-1", "scaling-web-2", "scaling-web-3"]
        c = bridged.inspect("scaling-web-1")
        assert c["HostConfig"]["NetworkMode"] == "default"
        (binding,) = c["HostConfig"]["PortBindings"]["3000/tcp"]
        assert binding["HostIp"] == "127.0.0.1" and int(binding["HostPort"]) > 0
        assert "PORT=3000" in c["Config"]["Env"]  # the app's own port, inside its network
        ps = sh(bridged, "docker ps | grep scaling-web").stdout
        assert "127.0.0.1:%s->3000/tcp" % binding["HostPort"] in ps, ps
        t.run("down", check=0)
        assert containers(bridged) == []
    finally:
        kill_takod_tree(t.home)
        bridged.remove_containers(containers(bridged))
    # An engine without a bridge network (--bridge=none) says so in the deploy.
    t2_home = t.home
    t.env.update(dk.env)
    app(t, dk)
    r = t.run("deploy", check=1, timeout=300)
    assert "has no bridge network" in (r.stdout + r.stderr), r.stdout + r.stderr
    assert containers(dk) == []
    kill_takod_tree(t2_home)


def cpu_and_restarts(metrics_port, replica):
    """tako_replica_cpu_seconds_total and _restarts_total of one replica."""
    st, _, body = http(metrics_port, "/metrics")
    assert st == 200, body
    lbl = 'project="scaling",env="production",service="web",replica="%s"' % replica
    vals = {}
    for line in body.decode().splitlines():
        for name in ("tako_replica_cpu_seconds_total", "tako_replica_restarts_total"):
            if line.startswith("%s{%s} " % (name, lbl)):
                vals[name] = float(line.rsplit(" ", 1)[1])
    return vals["tako_replica_cpu_seconds_total"], vals["tako_replica_restarts_total"]


def container_port(dk, name):
    env = dk.inspect(name)["Config"]["Env"]
    return int([e for e in env if e.startswith("PORT=")][0][5:])


def burn(dk, name, n, ms=40):
    """n requests that each burn ms of CPU in the container, on its own port.
    Short ones: whoami answers nothing while it burns, and its health checks
    (timeout 300 ms) must keep passing."""
    port = container_port(dk, name)
    for _ in range(n):
        st, body = http_json(port, "/work?ms=%d" % ms, timeout=30)
        assert st == 200 and body["worked_ms"] == ms and body["hostname"] == name, body


def cpu_until(metrics, at_least, what):
    seen = []
    wait_for(lambda: seen.append(cpu_and_restarts(metrics, "scaling-web-1")[0]) or
             seen[-1] >= at_least, timeout=60, interval=0.5, what=what)
    assert seen == sorted(seen), seen  # a counter
    return seen[-1]


def replaced(dk, name, old):
    c = dk.inspect(name)
    return c is not None and c["Id"] != old and c["State"]["Running"]


def test_container_cpu_seconds_grow_with_work_and_survive_restarts(dtako, dk):
    metrics = free_port()
    deploy(dtako, dk, replicas=1, extra="    metrics: %d\n" % metrics)
    cpu0, restarts0 = cpu_and_restarts(metrics, "scaling-web-1")
    assert restarts0 == 0
    burn(dk, "scaling-web-1", 75)  # 3 s of CPU
    # Stats are sampled on demand, one sweep at most every 5 s: scrape until
    # the sample that follows the work shows up.
    before = cpu_until(metrics, cpu0 + 2.5, "container CPU in /metrics")

    # A container that dies (docker kill) and is started again by tako: the
    # counter keeps what the first one used and the restart is counted.
    old = dk.inspect("scaling-web-1")["Id"]
    dk.docker("kill", "scaling-web-1")
    wait_for(lambda: replaced(dk, "scaling-web-1", old), timeout=60, interval=0.3,
             what="scaling-web-1 started again")
    wait_for(lambda: cpu_and_restarts(metrics, "scaling-web-1")[1] == 1, timeout=30,
             interval=0.3, what="the restart counted")
    wait_port(container_port(dk, "scaling-web-1"), timeout=30)
    burn(dk, "scaling-web-1", 25)  # 1 s more
    before = cpu_until(metrics, before + 0.8, "the new container's CPU added")

    # A container tako itself restarts (liveness): sampled as it stops, so
    # work done since the last sweep is kept although nobody scraped.
    old = dk.inspect("scaling-web-1")["Id"]
    burn(dk, "scaling-web-1", 50)  # 2 s, no scrape from here until it is replaced
    st, _, _ = http(container_port(dk, "scaling-web-1"), "/health/toggle", method="POST")
    assert st == 503  # its health as toggled: failing from now on
    wait_for(lambda: replaced(dk, "scaling-web-1", old), timeout=60, interval=0.3,
             what="scaling-web-1 restarted by liveness")
    wait_for(lambda: cpu_and_restarts(metrics, "scaling-web-1")[1] == 2, timeout=30,
             interval=0.3, what="the liveness restart counted")
    cpu_until(metrics, before + 1.8, "the CPU of the container tako stopped")


def test_a_command_that_cannot_apply_fails_at_the_key_or_the_deploy(dtako, dk):
    # known from the file: refused by validation at file:line:col
    app(dtako, dk)
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port,
                                    extra="        workdir: /srv\n"))
    r = dtako.run("validate", check=None)
    assert r.returncode != 0
    assert re.search(r"tako\.yaml:\d+:18: environments\.production\.services\.web\.workdir: "
                     r"workdir is a directory of this machine", r.stdout + r.stderr), r.stderr
    # known when the container starts: the deploy fails naming the program
    # and the image, and what was serving keeps serving
    deploy(dtako, dk, replicas=2)
    ids = ids_of(dk)
    dk.docker("tag", dk.base_image, "cmdcheck:1")  # busybox, no CMD
    cases = [('["nosuch", "-x"]', r'command: cannot run "nosuch" in image cmdcheck:1: '
                                  r'executable file not found in \$PATH'),
             ('["/opt/app/server"]', r'command: cannot run "/opt/app/server" in image '
                                     r'cmdcheck:1: .*no such file or directory'),
             (None, r"image cmdcheck:1 has no CMD or ENTRYPOINT and the service no command")]
    for cmd, want in cases:
        text = config(dtako.proxy_port, dtako.http_port, image="cmdcheck:1", replicas=2)
        if cmd:
            text = text.replace("        env:\n", "        command: %s\n        env:\n" % cmd)
        dtako.write("tako.yaml", text)
        r = dtako.run("deploy", check=1, timeout=300)
        assert re.search(want, r.stdout + r.stderr), r.stdout + r.stderr
        assert ids_of(dk) == ids
    assert set(hostnames(dtako.proxy_port, 4)) == {"scaling-web-1", "scaling-web-2"}
