"""takod's /metrics on the opt-in `metrics:` address, scraped like Prometheus
does: checked by promtool, counted against the requests the test sent, and
followed across a rolling deploy and takod restarts (clean and SIGKILL).
Plus the listener's refusals: address in use, token, hostile requests.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import WHOAMI, free_port, http, wait_for, wait_port

PROMTOOL = shutil.which("promtool")


def config(http_port, metrics, replicas=3, greeting="one", strategy="round_robin",
           health_interval="300ms"):
    m = "    metrics: %s\n" % metrics if metrics else ""
    return f"""project:
  name: scaling
environments:
  local:
    http: {http_port}
{m}    services:
      web:
        command: {WHOAMI}
        port: 3000
        replicas: {replicas}
        loadBalancer:
          strategy: {strategy}
        healthCheck:
          path: /health
          interval: {health_interval}
          timeout: 300ms
        deploy:
          drainTimeout: 5s
          stopGracePeriod: 5s
        env:
          GREETING: {greeting}
"""


def scrape(port, accept=None, headers=None):
    h = dict(headers or {})
    if accept:
        h["Accept"] = accept
    st, hdrs, body = http(port, "/metrics", headers=h)
    assert st == 200, body
    return hdrs, body.decode()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse(text):
    """{(name, labels): value} of every sample line; asserts no series twice."""
    out = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        key = (m.group(1), m.group(2) or "")
        assert key not in out, "duplicate series %s%s" % key
        out[key] = float(m.group(3))
    return out, types


def promtool_check(text):
    assert PROMTOOL, "promtool is a test dependency (Debian prometheus; scripts/deps.sh test)"
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    # promtool exits 1 for lint problems too (e.g. a counter without _total):
    # none is acceptable.
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        "promtool:\n" + r.stdout + r.stderr


def counters(series, types):
    """Every sample of a counter or histogram (cumulative) family."""
    out = {}
    for (name, labels), v in series.items():
        fam = re.sub(r"_(bucket|sum|count)$", "", name)
        if types.get(name) == "counter" or types.get(fam) == "histogram":
            out[(name, labels)] = v
    return out


def assert_monotonic(before, after, what):
    for key, v in before.items():
        if key in after:
            assert after[key] >= v, "%s: %s%s went from %s to %s" % (what, key[0], key[1], v,
                                                                      after[key])


def replica_2xx(series):
    out = {}
    for (name, labels), v in series.items():
        if name == "tako_replica_requests_total" and 'code="2xx"' in labels:
            out[re.search(r'replica="([^"]+)"', labels).group(1)] = int(v)
    return out


def settled(port):
    """A scrape once the counters stopped moving (they lag the proxy by up to
    one reconciler tick)."""
    prev = None
    for _ in range(50):
        cur = parse(scrape(port)[1])[0]
        if prev is not None and replica_2xx(cur) == replica_2xx(prev):
            return cur
        prev = cur
        time.sleep(0.3)
    raise TimeoutError("counters still moving")


def send(port, n):
    """n requests; how many each replica answered (by the hostname it reports)."""
    seen = {}
    for _ in range(n):
        st, _, body = http(port, "/api/instance")
        assert st == 200
        h = json.loads(body)["hostname"]
        seen[h] = seen.get(h, 0) + 1
    return seen


@pytest.fixture
def deployed(tako):
    hp, mp = free_port(), free_port()
    tako.write("tako.yaml", config(hp, "127.0.0.1:%d" % mp))
    r = tako.run("deploy", check=0)
    assert "metrics and dashboard on http://127.0.0.1:%d/" % mp in r.stdout, r.stdout
    tako.http_port, tako.metrics_port = hp, mp
    return tako


def test_scrape_passes_promtool_and_counts_what_was_sent(deployed):
    t = deployed
    seen = send(t.http_port, 30)
    assert seen == {"scaling-web-1": 10, "scaling-web-2": 10, "scaling-web-3": 10}
    # The counters come from the reconciler's per-tick copy of the pool's.
    wait_for(lambda: replica_2xx(parse(scrape(t.metrics_port)[1])[0]) == seen, timeout=5,
             what="per-replica 2xx counters equal to the requests sent")
    hdrs, text = scrape(t.metrics_port)
    assert hdrs["content-type"].startswith("text/plain; version=0.0.4")
    promtool_check(text)
    series, types = parse(text)
    lbl = 'project="scaling",env="local",service="web",replica="scaling-web-2"'
    assert series[("tako_replica_requests_total", "{%s,code=\"5xx\"}" % lbl)] == 0
    assert series[("tako_replica_request_duration_seconds_count", "{%s}" % lbl)] == 10
    assert series[("tako_replica_request_duration_seconds_bucket",
                   "{%s,le=\"+Inf\"}" % lbl)] == 10
    assert series[("tako_replica_up", "{%s}" % lbl)] == 1
    assert series[("tako_replica_health", "{%s,state=\"healthy\"}" % lbl)] == 1
    assert series[("tako_replica_memory_bytes", "{%s}" % lbl)] > 0
    assert ("tako_replica_cpu_seconds_total", "{%s}" % lbl) in series
    assert series[("tako_replica_restarts_total", "{%s}" % lbl)] == 0
    assert series[("tako_replica_requests_in_flight", "{%s}" % lbl)] == 0
    svc = '{project="scaling",env="local",service="web"}'
    assert series[("tako_service_desired_replicas", svc)] == 3
    assert series[("tako_service_ready_replicas", svc)] == 3
    assert series[("tako_service_deploys_total", svc)] == 1
    assert series[("tako_service_rollbacks_total", svc)] == 0
    lis = '{listener="0.0.0.0:%d"}' % t.http_port
    assert series[("tako_listener_connections_total", lis)] == 30
    assert ("tako_listener_open_connections", lis) in series
    for name, typ in types.items():
        if typ == "counter":
            assert name.endswith("_total"), name

    # OpenMetrics when the scrape asks for it (as Prometheus does).
    hdrs, om = scrape(t.metrics_port, accept="application/openmetrics-text;version=1.0.0,"
                                             "text/plain;version=0.0.4;q=0.5")
    assert hdrs["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert om.endswith("# EOF\n")
    assert "# TYPE tako_replica_requests counter\n" in om
    assert 'tako_replica_requests_total{%s,code="2xx"} 10\n' % lbl in om
    # The same numbers on takod's control socket.
    r = subprocess.run(["curl", "-s", "--unix-socket", os.path.join(t.home, "takod.sock"),
                        "http://takod/v1/metrics"], capture_output=True, text=True, timeout=30)
    assert replica_2xx(parse(r.stdout)[0]) == seen


def test_counters_only_grow_across_a_deploy_and_takod_restarts(deployed):
    t = deployed
    send(t.http_port, 12)
    wait_for(lambda: sum(replica_2xx(parse(scrape(t.metrics_port)[1])[0]).values()) == 12,
             timeout=5, what="12 requests counted")
    s0, types = parse(scrape(t.metrics_port)[1])
    c0 = counters(s0, types)

    # A rolling deploy: every replica is replaced by a new process with the
    # same name; its series continue from where they were.
    t.write("tako.yaml", config(t.http_port, "127.0.0.1:%d" % t.metrics_port, greeting="two"))
    stop = threading.Event()
    sent = [0]

    def load():
        while not stop.is_set() and sent[0] < 2000:
            st, _, _ = http(t.http_port, "/api/instance")
            assert st == 200
            sent[0] += 1

    th = threading.Thread(target=load)
    th.start()
    scrapes = []
    try:
        r = t.run("deploy", check=0)
        assert "two" not in r.stderr
        while len(scrapes) < 5:
            scrapes.append(parse(scrape(t.metrics_port)[1])[0])
    finally:
        stop.set()
        th.join()
    prev = c0
    for s in scrapes:
        assert_monotonic(prev, s, "during the deploy")
        prev = counters(s, types)
    total = 12 + sent[0]
    s1 = settled(t.metrics_port)
    assert_monotonic(prev, s1, "after the deploy")
    # Nothing is counted twice: the replicas' counters (the surge replica
    # scaling-web-4 of the rolling deploy included, as last seen) add up to
    # at most the requests sent.
    last = {}
    for s in [s0] + scrapes + [s1]:
        last.update(replica_2xx(s))
    assert set(last) >= {"scaling-web-1", "scaling-web-2", "scaling-web-3"}
    assert sum(last.values()) <= total
    assert s1[("tako_service_deploys_total", '{project="scaling",env="local",service="web"}')] == 2
    promtool_check(scrape(t.metrics_port)[1])

    # A clean stop and start of takod: the proxy starts again from zero, the
    # series do not.
    t.run("daemon", "--stop", check=0)
    wait_for(lambda: not os.path.exists(os.path.join(t.home, "takod.sock")), timeout=20,
             what="takod gone")
    wait_for(lambda: t.run("ps").returncode == 0, timeout=20, what="takod back")
    wait_port(t.metrics_port)
    s2 = parse(scrape(t.metrics_port)[1])[0]
    assert_monotonic(counters(s1, types), s2, "across a takod restart")
    assert replica_2xx(s2) == replica_2xx(s1)
    send(t.http_port, 3)
    wait_for(lambda: sum(replica_2xx(parse(scrape(t.metrics_port)[1])[0]).values()) ==
             sum(replica_2xx(s1).values()) + 3, timeout=5, what="3 more requests counted")
    s3 = parse(scrape(t.metrics_port)[1])[0]

    # SIGKILL: whatever a scrape showed was saved before it was answered.
    os.kill(t.takod_pid(), signal.SIGKILL)
    wait_for(lambda: t.run("ps").returncode == 0, timeout=20, what="takod back after SIGKILL")
    wait_port(t.metrics_port)
    s4 = parse(scrape(t.metrics_port)[1])[0]
    assert_monotonic(counters(s3, types), s4, "across a SIGKILL of takod")
    assert replica_2xx(s4) == replica_2xx(s3)


def test_address_in_use_refuses_the_deploy_naming_the_key(tako):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        hp = free_port()
        tako.write("tako.yaml", config(hp, "127.0.0.1:%d" % port))
        r = tako.run("deploy")
        assert r.returncode != 0
        yaml = os.path.join(tako.dir, "tako.yaml")
        assert "%s:6:14: environments.local.metrics: cannot serve metrics on 127.0.0.1:%d: " \
               "the address is already in use" % (yaml, port) in r.stdout + r.stderr, \
            r.stdout + r.stderr
        # Nothing was started.
        assert tako.ps_json()["services"] == []
    finally:
        busy.close()


def test_non_loopback_needs_a_token_and_a_token_is_enforced(tako):
    hp, mp = free_port(), free_port()
    tako.write("tako.yaml", config(hp, "0.0.0.0:%d" % mp))
    r = tako.run("validate")
    assert r.returncode == 2
    assert "tako.yaml:6:14: environments.local.metrics: 0.0.0.0:%d is reachable from other " \
           "machines: set metrics.token too" % mp in r.stderr, r.stderr
    tako.write("tako.yaml", config(hp, "{address: 127.0.0.1:%d, token: short}" % mp))
    r = tako.run("validate")
    assert r.returncode == 2 and "metrics.token: a token of at least 16 characters" in r.stderr

    token = "s3cret-token-0123456789"
    tako.write("tako.yaml", config(hp, "{address: 127.0.0.1:%d, token: %s}" % (mp, token),
                                   replicas=1))
    tako.run("deploy", check=0)
    st, _, body = http(mp, "/metrics")
    assert st == 401 and b"token" in body
    st, _, _ = http(mp, "/api/state")
    assert st == 401
    st, _, _ = http(mp, "/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert st == 401
    st, _, body = http(mp, "/metrics", headers={"Authorization": "Bearer " + token})
    assert st == 200 and b"tako_replica_up" in body
    # The page: the token in the URL becomes an HttpOnly cookie.
    st, hdrs, _ = http(mp, "/?token=" + token)
    assert st == 303 and hdrs["location"] == "/"
    cookie = hdrs["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    st, _, body = http(mp, "/api/state", headers={"Cookie": cookie.split(";")[0]})
    assert st == 200 and json.loads(body)["services"][0]["name"] == "web"
    # The config explained does not show it.
    r = tako.run("config", "explain", check=0)
    assert token not in r.stdout and "******" in r.stdout


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_hostile_requests_and_many_clients_cost_bounded_memory(deployed):
    t = deployed
    mp = t.metrics_port
    pid = t.takod_pid()
    # warm up: one scrape and one state build of each kind
    scrape(mp)
    http(mp, "/api/state")
    before = rss_kb(pid)
    # A request line far beyond the limit is refused; so are huge headers.
    for _ in range(50):
        try:
            s = socket.create_connection(("127.0.0.1", mp), timeout=5)
            s.sendall(b"GET /api/state?" + b"a=%00%ff&" * 20000 + b" HTTP/1.1\r\n\r\n")
            data = s.recv(200)
            s.close()
            assert data == b"" or data.startswith(b"HTTP/1.1 431") or \
                data.startswith(b"HTTP/1.1 414"), data
        except (ConnectionResetError, BrokenPipeError):
            pass
    st, _, _ = http(mp, "/api/state?" + "x=%2e%2e/" * 500)
    assert st in (200, 414, 431)
    st, _, _ = http(mp, "/../../etc/passwd")
    assert st == 404
    st, _, _ = http(mp, "/metrics", method="POST", body=b"x")
    assert st == 405
    # A page elsewhere reaching the loopback address through a name (DNS
    # rebinding) is refused; the address itself and localhost are fine.
    st, _, _ = http(mp, "/api/state", headers={"Host": "evil.example:%d" % mp})
    assert st == 421
    assert http(mp, "/api/state", headers={"Host": "localhost:%d" % mp})[0] == 200
    # Many clients at once: 400 idle connections plus 200 polling ones.
    idle = []
    try:
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", mp), timeout=5))
        ok = [0]

        def poll():
            for _ in range(10):
                try:
                    st2, _, _ = http(mp, "/api/state", timeout=10)
                    if st2 == 200:
                        ok[0] += 1
                except OSError:
                    pass

        ths = [threading.Thread(target=poll) for _ in range(20)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
    finally:
        for s in idle:
            s.close()
    # With the idle ones gone, every client is served again.
    def served():
        try:
            return http(mp, "/api/state")[0] == 200
        except OSError:  # closed at accept while the old ones are still counted
            return False

    wait_for(served, timeout=15, what="state served again")
    assert http(mp, "/metrics")[0] == 200
    grown = rss_kb(pid) - before
    assert grown < 32 * 1024, "takod grew by %d KiB" % grown
