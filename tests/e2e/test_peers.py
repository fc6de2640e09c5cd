"""Several servers per environment, takod side: three takods on this machine,
each with its own TAKO_HOME and its own peer listener on another loopback
address (127.0.0.2, .3, .4), deployed through their control sockets with the
deploy body the CLI sends for `servers: [a, b, c]` (docs/servers.md, "How
servers reach each other"). Five whoami replicas spread a: -1 -4, b: -2 -5,
c: -3; every takod's balancer reaches all five; the peer listener takes only
the environment's servers and only requests naming a service; a peer that
goes away leaves rotation with no failed request; a takod restart keeps
names and routing; a data plane of protocol 2 is never given a peer
listener."""
import collections
import json
import os
import signal
import socket
import subprocess
import tempfile

import pytest

from conftest import WHOAMI, Load, free_port, http, kill_takod_tree, run_tako, wait_for
from test_dataplane import DpClient

PROJECT = "peers"
SERVERS = ["a", "b", "c"]
IPS = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
REPLICAS = 5
INSTANCE = "/api/instance"


def yaml_for(port):
    return f"""project:
  name: {PROJECT}
environments:
  local:
    services:
      web:
        command: {WHOAMI}
        port: 3000
        replicas: 1
        proxy:
          port: {port}
        healthCheck:
          path: /health
          interval: 500ms
          timeout: 500ms
          unhealthyThreshold: 2
        deploy:
          drainTimeout: 2s
          stopGracePeriod: 2s
"""


def peer_port():
    """One port free on the three peer addresses."""
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
    raise RuntimeError("no port free on all peer addresses")


def api(home, method, path, body=None, timeout=60):
    sock = os.path.join(home, "takod.sock")
    cmd = ["curl", "-s", "--unix-socket", sock, "-X", method]
    if body is not None:
        cmd += ["-d", json.dumps(body)]
    out = subprocess.run(cmd + ["http://takod" + path], capture_output=True, text=True,
                         timeout=timeout, check=True).stdout
    return out


def stream_result(out):
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    return lines[-1] if lines else {}


def ps(home):
    return json.loads(api(home, "GET", "/v1/ps?project=" + PROJECT))["services"][0]


class Server:
    def __init__(self, name, pos, peer_port):
        self.name = name
        self.pos = pos
        self.home = tempfile.mkdtemp(prefix="tako-peer-%s-" % name)
        self.work = tempfile.mkdtemp(prefix="tako-peer-w-")
        self.port = free_port()
        self.listen = "%s:%d" % (IPS[name], peer_port)
        self.env = {"TAKO_HOME": self.home, "NO_COLOR": "1",
                    "TAKO_ACCESS_LOG": os.path.join(self.home, "access.log")}
        with open(os.path.join(self.work, "tako.yaml"), "w") as f:
            f.write(yaml_for(self.port))

    def local_count(self):
        n = len(SERVERS)
        return REPLICAS // n + (1 if self.pos < REPLICAS % n else 0)

    def body(self, others, config, peers_replicas=None):
        n = len(SERVERS)
        cfg = json.loads(json.dumps(config))
        cfg["replicas"] = self.local_count()
        cfg["proxy"]["port"] = self.port
        counts = peers_replicas or {o.name: o.local_count() for o in others}
        return {
            "project": PROJECT, "env": "local", "http_port": 0,
            "services": [{"name": "web", "config": cfg, "revision": "0123456789ab", "source": "",
                          "slot_first": self.pos + 1, "slot_stride": n,
                          "peer_replicas": counts}],
            "peers": {"listen": self.listen,
                      "servers": [{"name": o.name, "address": o.listen} for o in others]},
        }


@pytest.fixture(scope="module")
def cluster():
    pp = peer_port()
    servers = [Server(n, i, pp) for i, n in enumerate(SERVERS)]
    try:
        # The effective configuration, as the CLI would send it.
        r = run_tako(["config", "explain", "local", "-o", "json"], env=servers[0].env,
                     cwd=servers[0].work)
        assert r.returncode == 0, r.stderr
        env = json.loads(r.stdout)
        env = env["environments"][0] if "environments" in env else env
        base = {s["name"]: s for s in env["services"]}["web"]
        for s in servers:
            # any command starts takod in the background
            r = run_tako(["ps"], env=s.env, cwd=s.work)
            assert r.returncode == 0, r.stdout + r.stderr
            others = [o for o in servers if o is not s]
            res = stream_result(api(s.home, "POST", "/v1/deploy", s.body(others, base)))
            assert res.get("ok") is True, res
        yield servers
    finally:
        for s in servers:
            kill_takod_tree(s.home)
            if not os.environ.get("TAKO_TEST_KEEP"):
                subprocess.run(["rm", "-rf", s.home, s.work])


def names_over(port, n):
    c = collections.Counter()
    failed = 0
    for _ in range(n):
        st, _, body = http(port, INSTANCE)
        if st != 200:
            failed += 1
            continue
        c[json.loads(body)["hostname"]] += 1
    return c, failed


def peers_health(s):
    return {p["server"]: p["health"] for p in ps(s.home).get("peers", [])}


def all_peers_healthy(servers):
    return all(set(peers_health(s).values()) == {"healthy"} for s in servers)


def test_names_follow_slots_and_every_balancer_reaches_every_replica(cluster):
    want = {"a": ["peers-web-1", "peers-web-4"], "b": ["peers-web-2", "peers-web-5"],
            "c": ["peers-web-3"]}
    for s in cluster:
        svc = wait_for(lambda: (lambda x: x if x["running"] == s.local_count() else None)(ps(s.home)),
                       timeout=30, what="replicas of %s ready" % s.name)
        assert [r["name"] for r in svc["replicas"]] == want[s.name]
        peers = {p["server"]: p for p in svc["peers"]}
        assert sorted(peers) == sorted(o for o in SERVERS if o != s.name)
        for o in cluster:
            if o is not s:
                assert peers[o.name]["address"] == o.listen
                assert peers[o.name]["replicas"] == o.local_count()
    wait_for(lambda: all_peers_healthy(cluster), timeout=30, what="every peer healthy")
    everyone = sorted("peers-web-%d" % i for i in range(1, REPLICAS + 1))
    for s in cluster:
        # Round robin by weight: a peer backend counts for its replicas, so
        # 50 requests give each of the five replicas 10 (a retry on a closed
        # keep-alive connection may move one request to the next backend).
        c, failed = names_over(s.port, 50)
        assert failed == 0
        assert sorted(c) == everyone, (s.name, c)
        assert all(8 <= v <= 12 for v in c.values()), (s.name, c)
        # Unweighted, a server of two replicas would get a quarter (12 or 13).
        two = [o for o in cluster if o is not s and o.local_count() == 2][0]
        theirs = {"peers-web-%d" % (two.pos + 1), "peers-web-%d" % (two.pos + 4)}
        got = sum(v for k, v in c.items() if k in theirs)
        assert 18 <= got <= 22, (s.name, two.name, c)


def test_peer_listener_admits_only_peers_and_known_services(cluster):
    a, b = cluster[0], cluster[1]
    wait_for(lambda: all_peers_healthy(cluster), timeout=30, what="every peer healthy")
    host, port = a.listen.split(":")
    port = int(port)
    # From an address that is no server of the environment: closed at once.
    for src in ("127.0.0.1", "127.0.0.9"):
        with pytest.raises((ConnectionError, OSError, Exception)):
            http(port, INSTANCE, host=host, source=src,
                 headers={"X-Tako-Service": "%s/local/web" % PROJECT}, timeout=5)
    # From b: a request must name a service of a's; the ones that do not
    # are answered by a's balancer and reach no replica (upstream "-").
    for probe, hdr in (("none", None), ("svc", "%s/local/nope" % PROJECT),
                       ("project", "other/local/web")):
        st, _, _ = http(port, INSTANCE + "?probe=" + probe, host=host, source=IPS["b"],
                        headers={"X-Tako-Service": hdr} if hdr else {})
        assert st == 404, probe
    alog = os.path.join(a.home, "access.log")

    def probes():
        if not os.path.exists(alog):
            return None
        lines = [l.split() for l in open(alog) if "?probe=" in l]
        return lines if len(lines) == 3 else None

    for f in wait_for(probes, timeout=10, what="the probes in a's access log"):
        assert f[4] == "404" and f[6] == "-", f
    # b's and c's health checks of a are answered by a's balancer itself
    checks = [l.split() for l in open(alog) if l.split()[1] in (IPS["b"], IPS["c"])
              and '"GET /health"' in l]
    assert checks and all(f[4] == "200" and f[6] == "-" for f in checks), checks[:3]  # none of those reached a replica
    # Named: only a's own replicas answer, never onward to another server.
    seen = collections.Counter()
    for _ in range(20):
        st, _, body = http(port, INSTANCE, host=host, source=IPS["b"],
                           headers={"X-Tako-Service": "%s/local/web" % PROJECT})
        assert st == 200
        seen[json.loads(body)["hostname"]] += 1
    assert sorted(seen) == ["peers-web-1", "peers-web-4"], seen
    assert sorted(seen.values()) == [10, 10]
    # Counted (both), logged once a minute (the first).
    c = DpClient(a.home)
    try:
        c.call(op="hello", proto=3, min_proto=1, role="observer", pid=os.getpid())
        text = c.call(op="metrics")["text"]
    finally:
        c.close()
    assert 'tako_proxy_peer_refused_total{listener="%s"} 2\n' % a.listen in text
    log = open(os.path.join(a.home, "dataplane.log")).read()
    assert log.count("refused a connection from") == 1, log


def test_two_projects_share_the_peer_listener(cluster):
    """A second project on a and b uses the same peer addresses: one peer
    listener per address routes each project's requests to its own pool."""
    a, b = cluster[0], cluster[1]
    cfgs = {}
    for s in (a, b):
        port = free_port()
        with open(os.path.join(s.work, "tako.yaml"), "w") as f:
            f.write(yaml_for(port).replace("name: " + PROJECT, "name: other"))
        r = run_tako(["config", "explain", "local", "-o", "json"], env=s.env, cwd=s.work)
        env = json.loads(r.stdout)
        env = env["environments"][0] if "environments" in env else env
        cfgs[s.name] = ({x["name"]: x for x in env["services"]}["web"], port)
    for pos, (s, o) in enumerate(((a, b), (b, a))):
        cfg, port = cfgs[s.name]
        body = {"project": "other", "env": "local", "http_port": 0,
                "services": [{"name": "web", "config": dict(cfg, replicas=1), "revision": "ab" * 6,
                              "source": "", "slot_first": pos + 1, "slot_stride": 2,
                              "peer_replicas": {o.name: 1}}],
                "peers": {"listen": s.listen, "servers": [{"name": o.name, "address": o.listen}]}}
        res = stream_result(api(s.home, "POST", "/v1/deploy", body))
        assert res.get("ok") is True, res

    def other_ready():
        svc = json.loads(api(a.home, "GET", "/v1/ps?project=other"))["services"][0]
        return svc["running"] == 1 and [p["health"] for p in svc["peers"]] == ["healthy"]

    wait_for(other_ready, timeout=30, what="project other ready on a with b healthy")
    c = collections.Counter()
    for _ in range(10):
        st, _, body = http(cfgs["a"][1], INSTANCE)
        assert st == 200
        c[json.loads(body)["hostname"]] += 1
    # alternating (a retry on a closed keep-alive connection may shift one)
    assert set(c) == {"other-web-1", "other-web-2"} and min(c.values()) >= 4, c
    host, port = a.listen.split(":")
    for key, want in (("other/local/web", {"other-web-1"}),
                      ("%s/local/web" % PROJECT, {"peers-web-1", "peers-web-4"})):
        got = set()
        for _ in range(4):
            st, _, body = http(int(port), INSTANCE, host=host, source=IPS["b"],
                               headers={"X-Tako-Service": key})
            assert st == 200
            got.add(json.loads(body)["hostname"])
        assert got == want, (key, got)
    for s in (a, b):
        res = stream_result(api(s.home, "POST", "/v1/down", {"project": "other", "env": "local"}))
        assert res.get("ok") is True, res
    # the listener stays for the first project
    st, _, _ = http(int(port), INSTANCE, host=host, source=IPS["b"],
                    headers={"X-Tako-Service": "%s/local/web" % PROJECT})
    assert st == 200


def test_takod_restart_keeps_names_and_routing(cluster):
    """takod stops and starts again on a: its data plane serves on; the new
    takod adopts the replicas under their slot names and the peers from the
    store, and nothing is restarted."""
    a = cluster[0]
    wait_for(lambda: all_peers_healthy(cluster), timeout=30, what="every peer healthy")
    pids = {r["name"]: r["pid"] for r in ps(a.home)["replicas"]}
    with Load(a.port, INSTANCE, clients=2, max_seconds=30, max_requests=20000) as load:
        old = int(open(os.path.join(a.home, "takod.pid")).read().strip())
        os.kill(old, signal.SIGTERM)
        wait_for(lambda: not os.path.exists("/proc/%d" % old), timeout=15, what="takod gone")
        r = run_tako(["ps"], env=a.env, cwd=a.work)
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: set(peers_health(a).values()) == {"healthy"}, timeout=20,
                 what="a's peers healthy again")
    ok, failed = load.stop()
    assert ok > 0 and failed == 0, load.errors[:5]
    svc = ps(a.home)
    assert {r["name"]: r["pid"] for r in svc["replicas"]} == pids
    assert [p["replicas"] for p in svc["peers"]] == [2, 1]
    c, failed = names_over(a.port, 50)
    assert failed == 0 and len(c) == REPLICAS, c


def test_a_data_plane_of_protocol_2_gets_no_peer_listener(tako):
    """A data plane that speaks protocol 2 (an upgrade that failed; here this
    build answering as 2) would open a peer listener to anyone: takod never
    sends it one; the deploy fails naming the address, and an event names
    the data plane's protocol."""
    tako.env["TAKO_DATAPLANE_PROTO_MAX"] = "2"
    port = free_port()
    tako.write("tako.yaml", yaml_for(port))
    r = tako.run("config", "explain", "local", "-o", "json", check=0)
    env = json.loads(r.stdout)
    env = env["environments"][0] if "environments" in env else env
    cfg = {s["name"]: s for s in env["services"]}["web"]
    tako.run("ps", check=0)
    pp = peer_port()
    body = {"project": PROJECT, "env": "local", "http_port": 0,
            "services": [{"name": "web", "config": cfg, "revision": "0123456789ab", "source": "",
                          "slot_first": 1, "slot_stride": 2, "peer_replicas": {"b": 1}}],
            "peers": {"listen": "%s:%d" % (IPS["a"], pp),
                      "servers": [{"name": "b", "address": "%s:%d" % (IPS["b"], pp)}]}}
    res = stream_result(api(tako.home, "POST", "/v1/deploy", body))
    assert res.get("ok") is False, res
    assert "cannot listen for the other servers on %s:%d" % (IPS["a"], pp) in res["message"], res
    ev = api(tako.home, "GET", "/v1/events?kind=dataplane")
    assert "speaks protocol 2 and cannot serve a peer listener" in ev, ev


def test_a_peer_that_goes_away_leaves_rotation(cluster):
    a, b, c = cluster
    wait_for(lambda: all_peers_healthy(cluster), timeout=30, what="every peer healthy")
    # c's replicas stop under load on a: once c has none, its listener
    # answers its own 503 and a tries another backend, so no request fails
    # even before the health checks take c out.
    with Load(a.port, INSTANCE, clients=4, max_seconds=30, max_requests=20000) as load:
        res = stream_result(api(c.home, "POST", "/v1/stop", {"project": PROJECT, "env": "local"}))
        assert res.get("ok") is True, res
        for s in (a, b):
            wait_for(lambda: peers_health(s).get("c") == "unhealthy", timeout=20,
                     what="c unhealthy seen from %s" % s.name)
    ok, failed = load.stop()
    assert ok > 0 and failed == 0, load.errors[:5]
    for s in (a, b):
        got, failed = names_over(s.port, 40)
        assert failed == 0
        assert sorted(got) == ["peers-web-1", "peers-web-2", "peers-web-4", "peers-web-5"], got
    # b's takod and data plane are gone: the host is gone for a.
    for name in ("takod.pid", "dataplane.pid"):
        pid = int(open(os.path.join(b.home, name)).read().strip())
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: peers_health(a).get("b") == "unhealthy", timeout=20, what="b unhealthy")
    got, failed = names_over(a.port, 40)
    assert failed == 0
    assert sorted(got) == ["peers-web-1", "peers-web-4"], got
    assert sorted(got.values()) == [20, 20]
