"""The seed's scaling example (examples/scaling, Node + Express) deployed by
the real tako, and the three ways the seed shows load balancing: a browser,
curl in a loop, Apache Bench with `tako stats`. Plus stateless carts in Redis.

The example is copied to a temporary directory and `npm install`ed there
(packages from the npm registry), so the repository stays untouched.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import ARTIFACTS, ROOT, free_port, http, http_json, wait_for, wait_port

# Release run only (scripts/test.sh): what this module adds to the rest of
# the suite is the seed's programs (npm install of the Node app, chromium,
# curl | jq, ab, Redis). The tako code they drive runs under the sanitizers
# elsewhere: deploy of three replicas, ps and stats (test_deploy.py),
# routing by Host with 404 for an unknown one
# (test_deploy.py::test_domain_routing_on_entrypoint), round robin and
# request bodies through the proxy (test_proxy_lb.py, test_proxy_http.py),
# each replica's own UTS hostname (test_runtime.py), and this same Node app
# deployed with this tako.yaml as `prod` (test_servers.py, on a test server).
pytestmark = pytest.mark.release_only

EXAMPLE = os.path.join(ROOT, "examples", "scaling")
DOMAIN = "scaling.127.0.0.1.sslip.io"


@pytest.fixture(scope="module")
def npm_ready():
    """One npm install for the module, reused by every test's copy."""
    d = tempfile.mkdtemp(prefix="tako-example-")
    app = os.path.join(d, "app")
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("node_modules", ".env"))
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=app, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    yield app
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def example(tako, npm_ready):
    """The example in the test's project dir, its entrypoint on a free port."""
    shutil.rmtree(tako.dir)
    shutil.copytree(npm_ready, tako.dir, symlinks=True)
    port = free_port()
    path = os.path.join(tako.dir, "tako.yaml")
    text = open(path).read()
    # The seed's file, unchanged but for where the shared entrypoint listens.
    text = text.replace("  production:\n", "  production:\n    http: %d\n" % port, 1)
    open(path, "w").write(text)
    tako.http_port = port
    tako.env["SERVER_HOST"] = "127.0.0.1"
    return tako


def instance(port):
    st, body = http_json(port, "/api/instance", headers={"Host": DOMAIN})
    assert st == 200, body
    return body


def deploy(tako, *extra):
    r = tako.run("deploy", "prod", *extra, check=0, timeout=300)
    assert re.search(r"^web\s+3/3\s.*running", r.stdout, re.M), r.stdout
    return r


def test_seed_flow_round_robin_by_os_hostname(example):
    r = deploy(example)
    assert "production" in r.stdout
    seen = [instance(example.http_port) for _ in range(9)]
    # os.hostname() inside each replica is its own name: a UTS namespace each.
    names = [b["os_hostname"] for b in seen]
    assert [b["hostname"] for b in seen] == names
    start = names.index("scaling-web-1")
    order = (names[start:] + names[:start])[:9]
    assert order == ["scaling-web-1", "scaling-web-2", "scaling-web-3"] * 3, names
    for b in seen:
        assert set(b) >= {"hostname", "uptime", "requests", "memory", "timestamp"}
    st, body = http_json(example.http_port, "/health", headers={"Host": DOMAIN})
    assert st == 200 and body["status"] == "healthy"
    assert set(body) == {"status", "hostname", "uptime", "requests", "timestamp"}
    # Unknown hosts are not routed anywhere.
    st, _, _ = http(example.http_port, "/", headers={"Host": "nope.example"})
    assert st == 404


def test_curl_jq_loop(example):
    deploy(example)
    out = subprocess.run(
        ["bash", "-c",
         "for i in $(seq 10); do curl -s -H 'Host: %s' http://127.0.0.1:%d/api/instance | jq -r .hostname; done"
         % (DOMAIN, example.http_port)],
        capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert len(out) == 10
    i = out.index("scaling-web-1")
    for k in range(10):
        assert out[k] == "scaling-web-%d" % ((k - i) % 3 + 1), out


def stats_requests(tako):
    js = json.loads(tako.run("stats", "--output", "json", check=0).stdout)
    return {r["name"]: r["requests"] for s in js["services"] for r in s["replicas"]}


def test_ab_spreads_evenly_and_stats_show_it(example):
    deploy(example)
    before = stats_requests(example)
    r = subprocess.run(["ab", "-n", "100", "-c", "10", "-H", "Host: " + DOMAIN,
                        "http://127.0.0.1:%d/" % example.http_port],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"Complete requests:\s+100", r.stdout)
    # ab counts answers whose length differs from the first as "Length"
    # failures; pages naming different replicas differ in length by design.
    m = re.search(r"Failed requests:\s+(\d+)(?:\s+\(Connect: (\d+), Receive: (\d+), Length: (\d+), "
                  r"Exceptions: (\d+)\))?", r.stdout)
    assert m, r.stdout
    if m.group(2) is not None:
        assert (m.group(2), m.group(3), m.group(5)) == ("0", "0", "0"), m.group(0)
    else:
        assert m.group(1) == "0"
    assert "Non-2xx" not in r.stdout
    after = stats_requests(example)
    delta = sorted(after[k] - before.get(k, 0) for k in after)
    assert delta == [33, 33, 34], (before, after)
    text = example.run("stats", check=0).stdout
    assert "scaling-web-3" in text


def test_browser_sees_three_hostnames(example):
    chromium = shutil.which("chromium")
    assert chromium, "chromium is a test dependency (scripts/deps.sh test)"
    deploy(example)
    os.makedirs(ARTIFACTS, exist_ok=True)
    seen = []
    url = "http://%s:%d/" % (DOMAIN, example.http_port)

    def chromium_args(prof):
        return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--user-data-dir=" + prof,
                "--host-resolver-rules=MAP %s 127.0.0.1" % DOMAIN]

    # Six page loads in a row (the page declares no favicon to fetch, so each
    # load is one request and the round robin shows in the hostnames).
    for i in range(6):
        prof = tempfile.mkdtemp(prefix="tako-chromium-")
        try:
            dom = subprocess.run(chromium_args(prof) + ["--dump-dom", url], capture_output=True,
                                 text=True, timeout=60).stdout
            m = re.search(r'<h1 id="hostname">([^<]+)</h1>', dom)
            assert m, dom[:500]
            seen.append(m.group(1))
        finally:
            shutil.rmtree(prof, ignore_errors=True)
    assert set(seen) == {"scaling-web-1", "scaling-web-2", "scaling-web-3"}, seen
    assert seen[:3] == seen[3:], seen
    prof = tempfile.mkdtemp(prefix="tako-chromium-")
    try:
        shot = os.path.join(ARTIFACTS, "scaling-example.png")
        subprocess.run(chromium_args(prof) + ["--screenshot=" + shot, "--window-size=1000,700",
                                              url], capture_output=True, timeout=60)
        assert os.path.getsize(shot) > 1000
    finally:
        shutil.rmtree(prof, ignore_errors=True)


def test_carts_survive_round_robin_with_redis_not_in_memory(example, procs):
    rport = free_port()
    rd = procs.start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no"], name="redis")
    wait_port(rport, proc=rd)
    # Stateless: carts in Redis, every replica sees them.
    example.env["REDIS_URL"] = "redis://127.0.0.1:%d" % rport
    deploy(example)
    h = {"Host": DOMAIN, "Content-Type": "application/json"}
    served = set()
    for item in ("apple", "pear", "plum"):
        st, _, body = http(example.http_port, "/cart/items?user=ann", method="POST", headers=h,
                           body=json.dumps({"item": item}))
        assert st == 201, body
        served.add(json.loads(body)["hostname"])
    for _ in range(3):
        st, body = http_json(example.http_port, "/cart?user=ann", headers={"Host": DOMAIN})
        assert st == 200 and body["items"] == ["apple", "pear", "plum"] and body["store"] == "redis"
        served.add(body["hostname"])
    assert served == {"scaling-web-1", "scaling-web-2", "scaling-web-3"}
    # Stateful (in memory): the same steps lose items across replicas.
    example.env["CART_STORE"] = "memory"
    deploy(example)
    for item in ("apple", "pear", "plum"):
        st, _, _ = http(example.http_port, "/cart/items?user=bob", method="POST", headers=h,
                        body=json.dumps({"item": item}))
        assert st == 201
    carts = [http_json(example.http_port, "/cart?user=bob", headers={"Host": DOMAIN})[1]
             for _ in range(3)]
    assert all(c["store"] == "memory" for c in carts)
    assert all(len(c["items"]) == 1 for c in carts), carts
