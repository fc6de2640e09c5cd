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

from conftest import Load, free_port, http_json, wait_for
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
    return tako


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
