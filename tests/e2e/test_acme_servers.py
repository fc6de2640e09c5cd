"""Certificates with several servers per environment (docs/https.md, "Several
servers"): two takods on this machine, a on 127.0.0.2 and b on 127.0.0.3
(peer listeners), deployed through their control sockets with the deploy
body the CLI sends for `servers: [a, b]`. Both order a certificate for the
same domain, and Pebble validates every order on b's HTTP port (as when DNS
gives the CA b's address): b answers its own tokens, and for a's asks a
through a's peer listener, so a gets its certificate too. A token nobody
knows gets 404 after each peer was asked once (a peer that is gone costs a
refused connection); a request that came from a peer is answered from the
server's own tokens only, never asked further."""
import json
import os
import socket
import ssl
import subprocess
import tempfile

import pytest

from conftest import WHOAMI, free_port, http, kill_takod_tree, run_tako, wait_for
from pebble import Pebble, have_pebble

pytestmark = pytest.mark.skipif(not have_pebble(), reason="pebble not installed")

PROJECT = "acmesrv"
DOMAIN = "scaling.test"
SERVERS = ["a", "b"]
IPS = {"a": "127.0.0.2", "b": "127.0.0.3"}
GONE_IP = "127.0.0.4"
CHALLENGE = "/.well-known/acme-challenge/"


def yaml_for(http_port, https_port):
    return f"""project:
  name: {PROJECT}
environments:
  local:
    http: {http_port}
    https: {https_port}
    services:
      web:
        command: {WHOAMI}
        port: 3000
        replicas: 1
        healthCheck:
          path: /health
          interval: 300ms
          timeout: 300ms
        proxy:
          domain: {DOMAIN}
          email: ops@scaling.test
"""


def peer_port():
    for _ in range(50):
        p = free_port(IPS["a"])
        ok = True
        for ip in IPS.values():
            s = socket.socket()
            try:
                s.bind((ip, p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return p
    raise RuntimeError("no port free on both peer addresses")


def api(home, method, path, body=None, timeout=60):
    cmd = ["curl", "-s", "--unix-socket", os.path.join(home, "takod.sock"), "-X", method]
    if body is not None:
        cmd += ["-d", json.dumps(body)]
    return subprocess.run(cmd + ["http://takod" + path], capture_output=True, text=True,
                          timeout=timeout, check=True).stdout


class Server:
    def __init__(self, name, pos, pport, pebble):
        self.name, self.pos = name, pos
        self.home = tempfile.mkdtemp(prefix="tako-acmesrv-%s-" % name)
        self.work = tempfile.mkdtemp(prefix="tako-acmesrv-w-")
        self.listen = "%s:%d" % (IPS[name], pport)
        self.alog = os.path.join(self.home, "access.log")
        self.env = {"TAKO_HOME": self.home, "NO_COLOR": "1", "TAKO_ACCESS_LOG": self.alog,
                    "TAKO_ACME_DIRECTORY": pebble.directory, "TAKO_ACME_CA_BUNDLE": pebble.ca,
                    "TAKO_ACME_RETRY_MIN": "1s"}

    def write_config(self, http_port, https_port):
        self.http_port, self.https_port = http_port, https_port
        with open(os.path.join(self.work, "tako.yaml"), "w") as f:
            f.write(yaml_for(http_port, https_port))

    def effective(self):
        r = run_tako(["config", "explain", "local", "-o", "json"], env=self.env, cwd=self.work)
        assert r.returncode == 0, r.stderr
        env = json.loads(r.stdout)
        env = env["environments"][0] if "environments" in env else env
        return env, {s["name"]: s for s in env["services"]}["web"]

    def body(self, others, gone=()):
        env, cfg = self.effective()
        peers = [{"name": o.name, "address": o.listen} for o in others] + list(gone)
        return {
            "project": PROJECT, "env": "local", "http_port": env.get("http", self.http_port),
            "services": [{"name": "web", "config": cfg, "revision": "0123456789ab", "source": "",
                          "slot_first": self.pos + 1, "slot_stride": len(SERVERS),
                          "peer_replicas": {p["name"]: 1 for p in peers}}],
            "peers": {"listen": self.listen, "servers": peers},
        }

    def log_lines(self, needle):
        if not os.path.exists(self.alog):
            return []
        with open(self.alog) as f:
            return [line for line in f if needle in line]

    def certs(self):
        r = run_tako(["certs", "--output", "json"], env=self.env, cwd=self.work)
        return json.loads(r.stdout)["certificates"] if r.returncode == 0 else []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from conftest import Procs
    procs = Procs(str(tmp_path_factory.mktemp("acmesrv-procs")))
    servers = []
    try:
        ports = {n: (free_port(), free_port()) for n in SERVERS}
        # The CA validates on b's HTTP port: DNS "points at b".
        pebble = Pebble(procs, str(tmp_path_factory.mktemp("pebble")), ports["b"][0])
        pp = peer_port()
        servers = [Server(n, i, pp, pebble) for i, n in enumerate(SERVERS)]
        for s in servers:
            s.write_config(*ports[s.name])
        # b first: its balancer must know a before a's order is validated.
        for s in reversed(servers):
            r = run_tako(["ps"], env=s.env, cwd=s.work)  # starts takod
            assert r.returncode == 0, r.stdout + r.stderr
            others = [o for o in servers if o is not s]
            # b also has a server c that is gone (nobody listens at its
            # address): asking it must cost nothing but a refused connect.
            gone = [{"name": "c", "address": "%s:%d" % (GONE_IP, pp)}] if s.name == "b" else []
            out = api(s.home, "POST", "/v1/deploy", s.body(others, gone))
            res = [json.loads(x) for x in out.splitlines() if x.strip()][-1]
            assert res.get("ok") is True, res
        yield {"a": servers[0], "b": servers[1], "pebble": pebble,
               "root": pebble.write_root(str(tmp_path_factory.mktemp("root") / "root.pem"))}
    finally:
        for s in servers:
            kill_takod_tree(s.home)
            if not os.environ.get("TAKO_TEST_KEEP"):
                subprocess.run(["rm", "-rf", s.home, s.work])
        procs.stop_all()


def valid_cert(s):
    for c in s.certs():
        if c["domain"] == DOMAIN and c["state"] == "valid":
            return c
    return None


def served_cert(s, root):
    """The certificate s serves for DOMAIN, verified against Pebble's root."""
    ctx = ssl.create_default_context(cafile=root)
    with socket.create_connection(("127.0.0.1", s.https_port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=DOMAIN) as t:
            return t.getpeercert()


def asked(lines):
    """(path, request id) of access-log lines: b passes its X-Request-Id on
    with the question, so a's line and b's line of one question match."""
    return sorted((line.split('"')[1].split()[1], line.split()[-2]) for line in lines)


def test_each_server_gets_its_own_certificate_though_the_ca_reaches_only_b(cluster):
    a, b = cluster["a"], cluster["b"]
    wait_for(lambda: valid_cert(a) and valid_cert(b), timeout=20, interval=0.2,
             what="both certificates valid")
    at_b = b.log_lines(CHALLENGE)
    assert at_b and all(" 200 " in line for line in at_b), at_b
    # b answered its own tokens itself (no upstream) and a's by asking a
    own = [line for line in at_b if '" 200 ' in line and line.split()[6] == "-"]
    via_a = [line for line in at_b if " %s " % a.listen in line]
    assert own and via_a and len(own) + len(via_a) == len(at_b), at_b
    # a saw exactly b's questions, on its peer listener (no request of the
    # CA reached a's public port: Pebble only knows b's), and knew each token
    at_a = a.log_lines(CHALLENGE)
    assert asked(at_a) == asked(via_a)
    assert all(" 200 " in line for line in at_a), at_a
    # two certificates for the same name, each server its own
    ca, cb = served_cert(a, cluster["root"]), served_cert(b, cluster["root"])
    for c in (ca, cb):
        assert [v for k, v in c["subjectAltName"] if k == "DNS"] == [DOMAIN]
    assert ca["serialNumber"] != cb["serialNumber"]


def test_token_nobody_knows_is_404_after_one_question_per_peer(cluster):
    a, b = cluster["a"], cluster["b"]
    path = CHALLENGE + "nobody-knows-%d" % os.getpid()
    st, hdr, _ = http(b.http_port, path, headers={"Host": DOMAIN}, timeout=5)
    assert st == 404
    assert "x-tako-peer" not in hdr  # the public answer does not leak peer markers
    wait_for(lambda: b.log_lines(path) and a.log_lines(path), timeout=5,
             what="both access logs flushed")
    assert len(b.log_lines(path)) == 1
    assert len(a.log_lines(path)) == 1 and " 404 " in a.log_lines(path)[0]
    # a (healthy) was asked first, then c (gone: refused), the last one tried
    assert " %s:" % GONE_IP in b.log_lines(path)[0], b.log_lines(path)
    # HEAD is asked the same way
    path2 = CHALLENGE + "head-%d" % os.getpid()
    st, _, _ = http(b.http_port, path2, method="HEAD", headers={"Host": DOMAIN}, timeout=5)
    assert st == 404
    wait_for(lambda: a.log_lines(path2) and b.log_lines(path2), timeout=5,
             what="both access logs flushed")
    assert len(a.log_lines(path2)) == 1 and len(b.log_lines(path2)) == 1


def test_a_question_from_a_peer_is_never_asked_further(cluster):
    """A request on a's peer listener (from b's address, as b asks) for a
    token a does not know is answered 404 by a itself: a never turns to b,
    even though b is a's peer, so two servers cannot ask each other in a
    loop."""
    a, b = cluster["a"], cluster["b"]
    for svc in ("%s/local/web" % PROJECT, None):
        path = CHALLENGE + "loop-%s-%d" % ("svc" if svc else "bare", os.getpid())
        host, port = a.listen.split(":")
        headers = {"Host": DOMAIN}
        if svc:
            headers["X-Tako-Service"] = svc
        st, hdr, body = http(int(port), path, host=host, headers=headers, source=IPS["b"],
                             timeout=5)
        assert st == 404, body
        assert hdr.get("x-tako-peer") == "no-token"
        wait_for(lambda: a.log_lines(path), timeout=5, what="a's access log flushed")
        assert len(a.log_lines(path)) == 1
        assert b.log_lines(path) == []
