"""`image:` from a registry: the Docker runtime pulls it (POST /images/create)
into the test's own dockerd from a real registry (Debian's docker-registry,
started here on a free 127.0.0.1 port with its own storage, stopped by PID).

127.0.0.0/8 registries are insecure-allowed by dockerd's defaults, so the
test's dockerd pushes and pulls over plain HTTP without any flag; the push
at the start of the module proves it.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import free_port, http_json, kill_takod_tree, wait_for
from dockerd import dk, dockerd  # noqa: F401  (fixtures)

REGISTRY = "/usr/bin/docker-registry"


class Registry:
    """docker-registry serve CONFIG on 127.0.0.1:port, storage in its own dir."""

    def __init__(self, htpasswd=None):
        self.dir = tempfile.mkdtemp(prefix="tkreg%d-" % os.getpid())
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.proc = None
        auth = ""
        if htpasswd:
            path = os.path.join(self.dir, "htpasswd")
            user, password = htpasswd
            r = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True,
                               text=True, check=True)
            with open(path, "w") as f:
                f.write(r.stdout)
            auth = "auth:\n  htpasswd:\n    realm: tako-test\n    path: %s\n" % path
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                    "    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n%s"
                    % (os.path.join(self.dir, "data"), self.addr, auth))

    def start(self):
        log = open(os.path.join(self.dir, "registry.log"), "ab")
        self.proc = subprocess.Popen([REGISTRY, "serve", self.config], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_for(self.ready, timeout=30, interval=0.05, what="docker-registry on " + self.addr)

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("docker-registry exited %s:\n%s" % (self.proc.returncode,
                                                                     self.log()))
        try:
            import urllib.request
            urllib.request.urlopen("http://%s/v2/" % self.addr, timeout=1)
            return True
        except Exception as e:  # noqa: BLE001 - 401 (auth) also means it answers
            return getattr(e, "code", None) == 401

    def log(self):
        try:
            with open(os.path.join(self.dir, "registry.log"), "rb") as f:
                return f.read().decode(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def push_image(dk, ref, greeting, docker_config=None):
    """A busybox-static based image serving whoami, built by the test's dockerd,
    pushed to ref and removed locally (so a deploy must pull it)."""
    d = dk.app_dir(dk.dir, body="FROM %s\nCOPY whoami /whoami\nENV GREETING=%s\n"
                                'CMD ["/whoami"]\n' % (dk.base_image, greeting))
    try:
        dk.docker("build", "-t", ref, d)
        args = ["--config", docker_config] if docker_config else []
        dk.docker(*(args + ["push", ref]))
        dk.docker("rmi", ref)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(dockerd):
    # plain HTTP to 127.0.0.0/8 is allowed by dockerd's defaults (no flag given)
    info = json.loads(dockerd.docker("info", "--format", "{{json .RegistryConfig}}").stdout)
    assert "127.0.0.0/8" in info["InsecureRegistryCIDRs"], info
    reg = Registry()
    try:
        reg.start()
        push_image(dockerd, "%s/scaling-web:1" % reg.addr, "one")
        yield reg
    finally:
        reg.stop()
        for img in dockerd.docker("images", "--format", "{{.Repository}}:{{.Tag}}",
                                  check=False).stdout.split():
            if img.startswith(reg.addr + "/"):
                dockerd.docker("rmi", "-f", img, check=False)


def config(proxy_port, http_port, image, replicas=3, greeting="hi", extra=""):
    return f"""project:
  name: scaling
environments:
  production:
    http: {http_port}
    runtime: docker
    services:
      web:
        image: {image}
        port: 3000
        replicas: {replicas}
        proxy:
          port: {proxy_port}
        healthCheck:
          path: /health
          interval: 300ms
          timeout: 300ms
        deploy:
          drainTimeout: 1s
          stopGracePeriod: 2s
        env:
          LABEL: {greeting}
{extra}"""


@pytest.fixture
def dtako(tako, dk):
    tako.env.update(dk.env)
    # no credentials of the machine's user leak into the tests
    tako.env["DOCKER_CONFIG"] = os.path.join(tako.home, "docker-config")
    tako.proxy_port = free_port()
    tako.http_port = free_port()
    yield tako
    kill_takod_tree(tako.home)


def ids_of(dk):
    return {n: dk.inspect(n)["Id"] for n in dk.container_names() if n.startswith("scaling-web-")}


def hostnames(port, n):
    out = []
    for _ in range(n):
        st, body = http_json(port, "/api/instance")
        assert st == 200, body
        out.append(body["hostname"])
    return out


def has_image(dk, ref):
    return dk.docker("image", "inspect", ref, check=False).returncode == 0


def test_image_is_pulled_from_the_registry_and_replicas_answer(dtako, dk, registry):
    ref = "%s/scaling-web:1" % registry.addr
    assert not has_image(dk, ref)
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, ref))
    r = dtako.run("deploy", check=0, timeout=300)
    out = r.stdout + r.stderr
    # the pull's progress streamed into the deploy's output, layer by layer
    assert re.search(r"scaling-web-\d: Pulling from scaling-web", out), out
    assert re.search(r"scaling-web-\d: [0-9a-f]{12}: Pull complete", out), out
    assert "Downloading" not in out, out  # byte counts are not streamed
    # one pull for the three replicas (they share it)
    assert len(re.findall(r"Pulling from scaling-web", out)) == 1, out
    assert has_image(dk, ref)
    assert sorted(set(hostnames(dtako.proxy_port, 6))) == ["scaling-web-1", "scaling-web-2",
                                                          "scaling-web-3"]
    c = dk.inspect("scaling-web-1")
    assert c["Config"]["Image"] == ref
    assert "GREETING=one" in c["Config"]["Env"]  # the image's own ENV: the pushed image runs

    # A fixed tag that is present is not pulled again (IfNotPresent).
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, ref, greeting="again"))
    r = dtako.run("deploy", check=0, timeout=300)
    assert "Pulling from" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "LABEL=again" in dk.inspect("scaling-web-2")["Config"]["Env"]

    # A missing tag fails the deploy with the registry's answer, naming the
    # image and the registry; what runs is untouched.
    ids = ids_of(dk)
    bad = "%s/scaling-web:nope" % registry.addr
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, bad))
    r = dtako.run("deploy", check=1, timeout=300)
    out = r.stdout + r.stderr
    assert re.search(r"pulling image %s from %s failed: .*manifest unknown"
                     % (re.escape(bad), re.escape(registry.addr)), out), out
    assert ids_of(dk) == ids
    assert sorted(set(hostnames(dtako.proxy_port, 6))) == ["scaling-web-1", "scaling-web-2",
                                                          "scaling-web-3"]


def test_latest_is_pulled_at_every_deploy(dtako, dk, registry):
    ref = "%s/scaling-latest" % registry.addr  # no tag: latest
    push_image(dk, ref, "first")
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, ref, replicas=1))
    r = dtako.run("deploy", check=0, timeout=300)
    assert "Pulling from scaling-latest" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "GREETING=first" in dk.inspect("scaling-web-1")["Config"]["Env"]
    # a new image under the same tag: the next deploy pulls and runs it
    push_image(dk, ref, "second")
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, ref, replicas=1,
                                    greeting="next"))
    r = dtako.run("deploy", check=0, timeout=300)
    out = r.stdout + r.stderr
    assert "Downloaded newer image for %s:latest" % ref in out, out
    assert "GREETING=second" in dk.inspect("scaling-web-1")["Config"]["Env"]


def test_registry_down_fails_the_deploy_naming_image_and_error(dtako, dk, registry):
    ref = "%s/scaling-web:1" % registry.addr
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, ref, replicas=2))
    dtako.run("deploy", check=0, timeout=300)
    ids = ids_of(dk)
    assert len(ids) == 2
    down = "127.0.0.1:%d/scaling-web:2" % free_port()  # nothing listens there
    dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, down, replicas=2))
    r = dtako.run("deploy", check=1, timeout=300)
    out = r.stdout + r.stderr
    assert re.search(r"pulling image %s from %s failed: .*connection refused"
                     % (re.escape(down), re.escape(down.split("/")[0])), out), out
    assert ids_of(dk) == ids
    assert sorted(set(hostnames(dtako.proxy_port, 4))) == ["scaling-web-1", "scaling-web-2"]


def test_private_registry_credentials_from_docker_config(dtako, dk):
    reg = Registry(htpasswd=("tako", "s3cret"))
    cfg = os.path.join(reg.dir, "client")
    try:
        reg.start()
        ref = "%s/private-web:1" % reg.addr
        os.makedirs(cfg)
        dk.docker("--config", cfg, "login", "-u", "tako", "--password-stdin", reg.addr,
                  input="s3cret\n")
        push_image(dk, ref, "private", docker_config=cfg)
        # without credentials the registry refuses: the deploy says so
        dtako.write("tako.yaml", config(dtako.proxy_port, dtako.http_port, ref, replicas=1))
        r = dtako.run("deploy", check=1, timeout=300)
        out = r.stdout + r.stderr
        assert re.search(r"pulling image %s from %s failed: .*(no basic auth credentials|"
                         r"unauthorized)" % (re.escape(ref), re.escape(reg.addr)), out), out
        assert not [n for n in dk.container_names() if n.startswith("scaling-web-")]
        # `docker login`'s config.json, where takod reads it
        os.makedirs(dtako.env["DOCKER_CONFIG"], exist_ok=True)
        shutil.copy(os.path.join(cfg, "config.json"), dtako.env["DOCKER_CONFIG"])
        # read at each pull: no restart of takod needed
        r = dtako.run("deploy", check=0, timeout=300)
        assert "Pulling from private-web" in r.stdout + r.stderr, r.stdout + r.stderr
        assert hostnames(dtako.proxy_port, 1) == ["scaling-web-1"]
    finally:
        kill_takod_tree(dtako.home)
        dk.remove_containers([n for n in dk.container_names() if n.startswith("scaling-web-")])
        dk.docker("rmi", "-f", "%s/private-web:1" % reg.addr, check=False)
        reg.stop()
