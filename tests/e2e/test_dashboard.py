"""The dashboard in a real browser: Debian's chromium, headless, steered by
playwright-core (tests/e2e/browser/drive.mjs). The page is open while the
test sends requests, scales and kills a replica, and must follow without a
reload; `tako dashboard` shows takod unreachable and recovers.
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib

import pytest

from conftest import ARTIFACTS, ROOT, WHOAMI, free_port, http, wait_for, wait_port

BROWSER_DIR = os.path.join(ROOT, "tests", "e2e", "browser")


def config(http_port, metrics_port, replicas=3):
    return f"""project:
  name: scaling
environments:
  local:
    http: {http_port}
    metrics: 127.0.0.1:{metrics_port}
    services:
      web:
        command: {WHOAMI}
        port: 3000
        replicas: {replicas}
        loadBalancer:
          strategy: round_robin
        healthCheck:
          path: /health
          interval: 300ms
          timeout: 300ms
          unhealthyThreshold: 1
          startPeriod: 2s
"""


@pytest.fixture(scope="module")
def playwright_ready():
    """playwright-core from npm, exactly as package-lock.json pins it (no
    browser download: it drives /usr/bin/chromium)."""
    assert shutil.which("chromium"), "chromium is a test dependency (scripts/deps.sh test)"
    assert shutil.which("npm"), "npm is a test dependency (scripts/deps.sh test)"
    mod = os.path.join(BROWSER_DIR, "node_modules", "playwright-core", "package.json")
    want = json.load(open(os.path.join(BROWSER_DIR, "package-lock.json")))["packages"][
        "node_modules/playwright-core"]["version"]
    if not os.path.exists(mod) or json.load(open(mod))["version"] != want:
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=BROWSER_DIR, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1"))
        assert r.returncode == 0, r.stdout + r.stderr


class Browser:
    def __init__(self, tmp):
        self.log = open(os.path.join(tmp, "browser.log"), "wb")
        self.p = subprocess.Popen(["node", os.path.join(BROWSER_DIR, "drive.mjs")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.log, start_new_session=True, text=True,
                                  env=dict(os.environ, HOME=tmp))
        assert self._read().get("ready")

    def _read(self):
        line = self.p.stdout.readline()
        assert line, "the browser driver exited (see browser.log)"
        return json.loads(line)

    def cmd(self, **c):
        self.p.stdin.write(json.dumps(c) + "\n")
        self.p.stdin.flush()
        r = self._read()
        assert r.get("ok"), r
        return r

    def eval(self, js):
        return self.cmd(op="eval", js=js).get("value")

    def close(self):
        try:
            if self.p.poll() is None:
                self.p.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.p.stdin.flush()
                # node ends once its stdin is closed too (not on "quit" alone:
                # the open stdin keeps it running until the wait times out)
                self.p.stdin.close()
                self.p.wait(10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        finally:
            # chromium's processes are in the driver's session: end them by it
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.p.wait()
            self.log.close()


@pytest.fixture
def browser(tmp_path, playwright_ready):
    b = Browser(str(tmp_path))
    yield b
    b.close()


ROWS = """Array.from(document.querySelectorAll('tr[data-replica]')).map(r => ({
  name: r.dataset.replica, health: r.dataset.health,
  req1m: Number(r.dataset.requestsMinute),
  share: r.querySelector('[data-field=share]').textContent,
  restarts: r.querySelector('[data-field=restarts]').textContent,
  server: r.querySelector('[data-field=server]').textContent}))"""


def rows(b):
    return b.eval(ROWS)


def png_is_not_blank(path):
    """Decode the PNG's pixel rows and count distinct pixels (a blank page
    has one or two)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    color = bpp = None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            bpp = {2: 3, 6: 4}[color]
        elif typ == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    pixels = set()
    for y in range(len(raw) // (stride + 1)):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 8 == 0:
            for x in range(0, stride, bpp * 4):
                pixels.add(bytes(line[x:x + bpp]))
        prev = line
    return len(pixels)


# slow: long waits on remote/browser state; the code it drives also runs
# under the sanitizers in the other tests of this file
@pytest.mark.slow
def test_page_follows_requests_scale_and_a_killed_replica(tako, browser):
    hp, mp = free_port(), free_port()
    tako.write("tako.yaml", config(hp, mp))
    tako.run("deploy", check=0)
    r = browser.cmd(op="goto", url="http://127.0.0.1:%d/" % mp)
    assert r["status"] == 200
    wait_for(lambda: [x["health"] for x in rows(browser)] == ["healthy"] * 3, timeout=30,
             what="three healthy rows")
    names = [x["name"] for x in rows(browser)]
    assert names == ["scaling-web-1", "scaling-web-2", "scaling-web-3"]
    assert all(x["server"] for x in rows(browser))
    browser.eval("window.__notReloaded = 42")

    # Requests the test sends: the shares are exactly what round robin did.
    seen = {}
    for _ in range(30):
        st, _, body = http(hp, "/api/instance")
        assert st == 200
        h = json.loads(body)["hostname"]
        seen[h] = seen.get(h, 0) + 1
    assert seen == {"scaling-web-1": 10, "scaling-web-2": 10, "scaling-web-3": 10}
    wait_for(lambda: {x["name"]: x["req1m"] for x in rows(browser)} == seen, timeout=30,
             what="the page's per-replica requests equal to those sent")
    assert [x["share"] for x in rows(browser)] == ["10 (33.3%)"] * 3

    # `tako scale web=5` shows without a reload.
    tako.run("scale", "web=5", check=0)
    wait_for(lambda: len(rows(browser)) == 5 and
             all(x["health"] == "healthy" for x in rows(browser)), timeout=30,
             what="five healthy rows")
    assert browser.eval("window.__notReloaded") == 42

    # A killed replica: unhealthy, then healthy again (restarted), as seen
    # by the page over time.
    browser.eval("""(() => { window.__health = []; let last = null;
      setInterval(() => { const r = document.querySelector('tr[data-replica="scaling-web-2"]');
        const h = r ? r.dataset.health : 'gone';
        if (h !== last) { window.__health.push(h); last = h; } }, 50); })()""")
    pid = [x["pid"] for s in tako.ps_json()["services"] for x in s["replicas"]
           if x["name"] == "scaling-web-2"][0]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "unhealthy" in (browser.eval("window.__health") or []), timeout=30,
             what="scaling-web-2 shown unhealthy")
    wait_for(lambda: browser.eval("window.__health").index("unhealthy") <
             len(browser.eval("window.__health")) - 1 and
             browser.eval("window.__health")[-1] == "healthy", timeout=30,
             what="scaling-web-2 shown healthy again")
    wait_for(lambda: [x["restarts"] for x in rows(browser) if x["name"] == "scaling-web-2"] ==
             ["1"], timeout=10, what="its restart counted")
    assert browser.eval("window.__notReloaded") == 42
    # The timeline tells the story.
    kinds = browser.eval("Array.from(document.querySelectorAll('#timeline li'))"
                         ".map(l => l.dataset.kind + ' ' + l.textContent)")
    assert any(k.startswith("scale ") and "from 3 to 5" in k for k in kinds), kinds
    assert any(k.startswith("health ") and "scaling-web-2 is unhealthy" in k for k in kinds), kinds
    assert any(k.startswith("health ") and "scaling-web-2 is healthy" in k for k in kinds), kinds
    assert any(k.startswith("deploy ") for k in kinds), kinds

    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "dashboard.png")
    browser.cmd(op="shot", path=shot)
    assert png_is_not_blank(shot) > 20


def test_tako_dashboard_shows_takod_unreachable_and_recovers(tako, browser, procs):
    hp, mp = free_port(), free_port()
    tako.write("tako.yaml", config(hp, mp, replicas=2))
    tako.run("deploy", check=0)
    out = os.path.join(tako.home, "dashboard.out")
    with open(out, "wb") as f:
        procs.start([os.environ.get("TAKO_BIN", os.path.join(ROOT, "tako")), "dashboard",
                     "--no-open"], env=tako.env, stdout=f, name="dashboard")
    url = wait_for(lambda: re.search(r"http://127\.0\.0\.1:\d+/\?token=[0-9a-f]{32}",
                                     open(out).read()), timeout=10, what="the URL").group(0)
    base = url.split("?")[0]
    # Without the token the page's data is refused.
    st, _, _ = http(int(base.rsplit(":", 1)[1].strip("/")), "/api/state")
    assert st == 401
    r = browser.cmd(op="goto", url=url)
    assert r["status"] == 200 and r["url"] == base  # the token left the address bar
    wait_for(lambda: len(rows(browser)) == 2, timeout=30, what="two rows")
    browser.eval("window.__notReloaded = 7")
    assert browser.eval("document.getElementById('status').dataset.state") == "live"

    tako.run("daemon", "--stop", check=0)
    wait_for(lambda: browser.eval("document.getElementById('status').dataset.state") ==
             "unreachable", timeout=30, what="takod unreachable shown")
    assert browser.eval("document.getElementById('unreachable').hidden") is False
    assert "takod unreachable" in browser.eval("document.body.innerText")

    wait_for(lambda: tako.run("ps").returncode == 0, timeout=30, what="takod back")
    wait_for(lambda: browser.eval("document.getElementById('status').dataset.state") == "live",
             timeout=30, what="live again")
    assert browser.eval("document.getElementById('unreachable').hidden") is True
    assert len(rows(browser)) == 2
    assert browser.eval("window.__notReloaded") == 7
