"""HTTPS in tako's own balancer: a service with proxy.domain + proxy.email
gets a certificate from Debian's Pebble ACME server (HTTP-01 answered by
tako's HTTP listener), is served over TLS in round robin, redirects HTTP to
HTTPS, renews under load without a failed request, and shows the
certificate's state in `tako certs` and `tako ps`. Pebble and its DNS
(pebble-challtestsrv, every name → 127.0.0.1) run on loopback per test."""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import WHOAMI, Load, free_port, http, wait_for, wait_port
from pebble import Pebble, have_pebble

pytestmark = pytest.mark.skipif(not have_pebble(), reason="pebble not installed")

DOMAIN = "scaling.test"


def config(http_port, https_port, domains=(DOMAIN,), email="ops@scaling.test", replicas=3,
           extra_proxy="", name="web", project="scaling"):
    dl = "\n".join("            - %s" % d for d in domains)
    em = "          email: %s\n" % email if email else ""
    return f"""project:
  name: {project}
environments:
  production:
    http: {http_port}
    https: {https_port}
    services:
      {name}:
        command: {WHOAMI}
        port: 3000
        replicas: {replicas}
        healthCheck:
          path: /health
          interval: 300ms
          timeout: 300ms
        proxy:
          domains:
{dl}
{em}{extra_proxy}"""


class Site:
    def __init__(self, tako, procs, tmp_path, validity=None, **kw):
        self.tako = tako
        self.http_port = free_port()
        self.https_port = free_port()
        self.pebble = Pebble(procs, str(tmp_path / "pebble"), self.http_port, validity=validity)
        self.root = self.pebble.write_root(str(tmp_path / "pebble-root.pem"))
        tako.env["TAKO_ACME_DIRECTORY"] = self.pebble.directory
        tako.env["TAKO_ACME_CA_BUNDLE"] = self.pebble.ca
        tako.env["TAKO_ACME_RETRY_MIN"] = "1s"
        tako.write("tako.yaml", config(self.http_port, self.https_port, **kw))

    def deploy(self):
        r = self.tako.run("deploy", "production", check=0, timeout=300)
        return r

    def certs(self):
        r = self.tako.run("certs", "--output", "json", check=0)
        return json.loads(r.stdout)["certificates"]

    def wait_cert(self, domain=DOMAIN, state="valid", timeout=60):
        def ok():
            for c in self.certs():
                if c["domain"] == domain and c["state"] == state:
                    return c
            return None
        return wait_for(ok, timeout=timeout, interval=0.2, what="certificate %s %s" % (domain, state))

    def ctx(self):
        c = ssl.create_default_context(cafile=self.root)
        return c

    def get(self, path="/api/instance", host=DOMAIN):
        """One HTTPS request on a fresh connection, verified against Pebble's root."""
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", self.https_port, context=self.ctx(),
                                           timeout=10)
        conn._tunnel_host = None
        # SNI and certificate check use the name, the socket goes to 127.0.0.1
        sock = socket.create_connection(("127.0.0.1", self.https_port), timeout=10)
        conn.sock = self.ctx().wrap_socket(sock, server_hostname=host)
        try:
            conn.request("GET", path, headers={"Host": "%s:%d" % (host, self.https_port)})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def peer_cert(self, host=DOMAIN):
        sock = socket.create_connection(("127.0.0.1", self.https_port), timeout=10)
        with self.ctx().wrap_socket(sock, server_hostname=host) as s:
            return s.getpeercert()


def events(tako, kind=None):
    """takod's event log (GET /v1/events), newest first."""
    url = "http://t/v1/events" + ("?kind=" + kind if kind else "")
    out = subprocess.run(["curl", "-s", "--unix-socket", os.path.join(tako.home, "takod.sock"), url],
                         capture_output=True, text=True, timeout=10).stdout
    return json.loads(out)["events"]


def curl(site, path="/api/instance", host=DOMAIN, *extra):
    r = subprocess.run(["curl", "-sS", "--cacert", site.root, "--resolve",
                        "%s:%d:127.0.0.1" % (host, site.https_port),
                        "https://%s:%d%s" % (host, site.https_port, path)] + list(extra),
                       capture_output=True, text=True, timeout=30)
    return r


def test_certificate_from_pebble_round_robin_over_https(tako, procs, tmp_path):
    site = Site(tako, procs, tmp_path)
    r = site.deploy()
    assert r.returncode == 0, r.stdout + r.stderr
    c = site.wait_cert()
    assert c["source"] == "acme" and "Pebble" in c["issuer"], c
    # the seed's curl, verified against Pebble's root, in round robin
    names = []
    for _ in range(6):
        r = curl(site)
        assert r.returncode == 0, r.stderr
        names.append(json.loads(r.stdout)["hostname"])
    start = names.index("scaling-web-1")
    assert (names[start:] + names[:start])[:6] == ["scaling-web-1", "scaling-web-2",
                                                     "scaling-web-3"] * 2, names
    st, _, body = site.get("/api/instance")
    assert st == 200 and json.loads(body)["hostname"].startswith("scaling-web-")
    # key and certificate stored 0600 in the state directory
    d = os.path.join(tako.home, "certs", DOMAIN)
    for f in ("cert.pem", "key.pem"):
        assert os.stat(os.path.join(d, f)).st_mode & 0o777 == 0o600
    assert os.stat(os.path.join(tako.home, "certs", "account.key")).st_mode & 0o777 == 0o600
    # HTTP redirects to HTTPS, except the ACME path
    st, h, _ = http(site.http_port, "/api/instance?x=1", headers={"Host": DOMAIN})
    assert st == 308
    assert h["location"] == "https://%s:%d/api/instance?x=1" % (DOMAIN, site.https_port)
    st, _, _ = http(site.http_port, "/.well-known/acme-challenge/unknown", headers={"Host": DOMAIN})
    assert st != 308
    # tako ps notes the certificate
    ps = tako.run("ps", check=0).stdout
    assert re.search(r"certificate %s: valid until \d{4}-\d\d-\d\d" % re.escape(DOMAIN), ps), ps
    # the event log has the issuance
    ev = tako.run("certs", check=0).stdout
    assert DOMAIN in ev and "valid" in ev
    # takod restarted: the stored certificate is loaded, not ordered again
    serial = site.peer_cert()["serialNumber"]
    tako.run("daemon", "--stop", check=0)
    wait_for(lambda: tako.run("ps", check=None).returncode == 0, timeout=30)
    site.wait_cert()
    assert site.peer_cert()["serialNumber"] == serial


def test_sni_two_services_two_certificates(tako, procs, tmp_path):
    site = Site(tako, procs, tmp_path)
    text = config(site.http_port, site.https_port, domains=("api.test",), name="api",
                  replicas=1)
    web = config(site.http_port, site.https_port, replicas=1).split("    services:\n", 1)[1]
    tako.write("tako.yaml", text + web)
    r = site.deploy()
    assert r.returncode == 0, r.stdout + r.stderr
    site.wait_cert("api.test")
    site.wait_cert(DOMAIN)
    for host, svc in (("api.test", "api"), (DOMAIN, "web")):
        cert = site.peer_cert(host)
        assert ("DNS", host) in cert["subjectAltName"], cert
        st, _, body = site.get("/api/instance", host=host)
        assert st == 200 and json.loads(body)["hostname"] == "scaling-%s-1" % svc
    # each name only ever gets its own certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        sock = socket.create_connection(("127.0.0.1", site.https_port), timeout=10)
        site.ctx().wrap_socket(sock, server_hostname="unknown.test")


def test_domain_not_pointing_here_fails_clearly_and_http_keeps_serving(tako, procs, tmp_path):
    """Pebble validates on a port where tako does not listen (as when DNS
    points elsewhere): the CA's error is shown, plain HTTP keeps serving and
    there is no retry storm."""
    site = Site(tako, procs, tmp_path)
    site.pebble.stop()
    site.pebble = Pebble(procs, str(tmp_path / "pebble2"), free_port())
    tako.env["TAKO_ACME_DIRECTORY"] = site.pebble.directory
    tako.env["TAKO_ACME_CA_BUNDLE"] = site.pebble.ca
    tako.env["TAKO_ACME_RETRY_MIN"] = "1h"
    r = site.deploy()
    assert r.returncode == 0, r.stdout + r.stderr
    c = site.wait_cert(state="failing")
    assert "validation invalid" in c["error"] and "urn:ietf:params:acme:error:connection" in c["error"], c
    assert c["next_attempt"] > time.time() + 3000  # backoff, not a storm
    # no certificate: no redirect, the site answers over HTTP
    st, _, body = http(site.http_port, "/api/instance", headers={"Host": DOMAIN})
    assert st == 200 and json.loads(body)["hostname"].startswith("scaling-web-")
    out = tako.run("certs", check=0).stdout
    assert "failing" in out and "error: %s: validation invalid" % DOMAIN in out, out
    assert "certificate %s: failing: " % DOMAIN in tako.run("ps", check=0).stdout
    ev = wait_for(lambda: events(tako, "cert.failed"), timeout=10, what="cert.failed event")
    assert len(ev) == 1 and "urn:ietf:params:acme:error:connection" in ev[0]["message"], ev


def test_acme_server_down_then_corrupt_stored_certificate(tako, procs, tmp_path):
    site = Site(tako, procs, tmp_path)
    dead = "https://127.0.0.1:%d/dir" % free_port()
    tako.env["TAKO_ACME_DIRECTORY"] = dead
    tako.env["TAKO_ACME_RETRY_MIN"] = "1h"
    assert site.deploy().returncode == 0
    c = site.wait_cert(state="failing")
    assert c["error"].startswith("cannot reach the ACME server at " + dead), c
    st, _, _ = http(site.http_port, "/api/instance", headers={"Host": DOMAIN})
    assert st == 200
    # takod restarted with a corrupt stored certificate and a working CA:
    # the bad file is set aside (and said so) and a new one obtained
    tako.run("daemon", "--stop", check=0)
    d = os.path.join(tako.home, "certs", DOMAIN)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "cert.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    with open(os.path.join(d, "key.pem"), "w") as f:
        f.write("broken\n")
    tako.env["TAKO_ACME_DIRECTORY"] = site.pebble.directory
    assert tako.run("ps", check=0).returncode == 0
    site.wait_cert()
    assert os.path.exists(os.path.join(d, "cert.pem.bad"))
    r = curl(site)
    assert r.returncode == 0 and json.loads(r.stdout)["hostname"].startswith("scaling-web-")
    wait_for(lambda: events(tako, "cert.issued"), timeout=10, what="cert.issued event")
    msgs = [e["kind"] + " " + e["message"] for e in events(tako)]
    assert any("stored certificate unusable" in m for m in msgs), msgs
    assert any(m.startswith("cert.issued %s: issued, valid until" % DOMAIN) for m in msgs), msgs


def make_cert(d, name, days=2):
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key + ".tmp", "-out",
                    cert + ".tmp", "-days", str(days), "-subj", "/CN=%s" % name, "-addext",
                    "subjectAltName=DNS:%s" % name], check=True, capture_output=True)
    os.replace(key + ".tmp", key)
    os.replace(cert + ".tmp", cert)
    return cert, key


def test_own_certificate_files_reload_when_changed(tako, procs, tmp_path):
    http_port, https_port = free_port(), free_port()
    cert, key = make_cert(tako.dir, "own.test")
    tako.write("tako.yaml", config(http_port, https_port, domains=("own.test",), email=None,
                                   replicas=2, extra_proxy="          tls:\n            cert: own.test.crt\n"
                                   "            key: own.test.key\n"))
    r = tako.run("deploy", "production", check=0)
    assert r.returncode == 0, r.stdout + r.stderr

    def serial():
        ctx = ssl.create_default_context(cafile=cert)
        sock = socket.create_connection(("127.0.0.1", https_port), timeout=10)
        with ctx.wrap_socket(sock, server_hostname="own.test") as s:
            return s.getpeercert()["serialNumber"]
    first = wait_for(lambda: _try(serial), timeout=20, what="own certificate served")
    make_cert(tako.dir, "own.test")  # same paths, new certificate
    wait_for(lambda: _try(serial) not in (None, first), timeout=20, what="reloaded certificate")
    out = tako.run("certs", check=0).stdout
    assert re.search(r"own\.test\s+web\s+file\s+valid", out), out
    # a broken file: the loaded certificate stays in use, the error is shown
    # (tako.yaml no longer validates: ask from elsewhere, by project name)
    def served_der():
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = socket.create_connection(("127.0.0.1", https_port), timeout=10)
        with ctx.wrap_socket(sock, server_hostname="own.test") as s:
            return s.getpeercert(binary_form=True)
    before = served_der()
    with open(cert, "w") as f:
        f.write("garbage\n")
    wait_for(lambda: "failing" in tako.run("certs", "--project", "scaling", check=0, cwd=str(tmp_path)).stdout,
             timeout=20, what="failing own certificate")
    out = tako.run("certs", "--project", "scaling", check=0, cwd=str(tmp_path)).stdout
    assert "does not parse as PEM" in out, out
    assert served_der() == before  # the last good certificate is still served
    ev = wait_for(lambda: events(tako, "cert.failed"), timeout=10)
    assert "the loaded certificate stays in use" in ev[0]["message"], ev


def _try(fn):
    try:
        return fn()
    except (OSError, ssl.SSLError):
        return None


def test_config_errors_name_the_key(tako):
    tako.write("tako.yaml", config(8080, 8080, email="ops@x.test", extra_proxy="          acme: nowhere\n          hsts: sometimes\n          tls:\n            cert: missing.pem\n"))
    r = tako.run("validate", check=2)
    err = r.stderr
    assert "tako.yaml:6:12: environments.production.https: http and https must be different ports (both 8080)" in err, err
    assert "services.web.proxy.acme: expected production, staging or an ACME directory URL" in err, err
    assert "services.web.proxy.hsts: expected true, false or a duration" in err, err
    assert "services.web.proxy.tls: give both cert and key" in err, err


class _Conn:
    """An HTTPS keep-alive connection to 127.0.0.1 that names DOMAIN (SNI and
    verification), like curl --resolve."""

    def __init__(self, port, ctx, host=DOMAIN):
        import http.client
        self.c = http.client.HTTPSConnection(host, port, context=ctx, timeout=15)
        sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.c.sock = ctx.wrap_socket(sock, server_hostname=host)
        self.serial = self.c.sock.getpeercert()["serialNumber"]

    def get(self, path):
        self.c.request("GET", path)
        r = self.c.getresponse()
        r.read()
        return r.status

    def close(self):
        self.c.close()


@pytest.mark.slow
def test_renewal_under_load_zero_failed_requests(tako, procs, tmp_path):
    """Pebble issues 30-second certificates: tako renews a third before
    expiry and swaps the certificate while 8 clients keep requesting (each
    reconnecting every 20 requests, so new handshakes meet the new one)."""
    import threading
    site = Site(tako, procs, tmp_path, validity=30)
    assert site.deploy().returncode == 0
    site.wait_cert()
    first = site.peer_cert()["serialNumber"]
    ctx = site.ctx()
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0, "serials": set()}
    errors = []
    stop = threading.Event()
    deadline = time.monotonic() + 60

    def client():
        conn = None
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            with lock:
                if counts["ok"] + counts["failed"] >= 200000:
                    return
            try:
                if conn is None:
                    conn = _Conn(site.https_port, ctx)
                    with lock:
                        counts["serials"].add(conn.serial)
                st = conn.get("/api/instance")
                with lock:
                    counts["ok" if st == 200 else "failed"] += 1
                n += 1
                if n % 20 == 0:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure counts
                with lock:
                    counts["failed"] += 1
                    errors.append(repr(e))
                conn = None
        if conn:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        renewed = wait_for(lambda: events(tako, "cert.renewed"), timeout=45, interval=0.5,
                           what="renewal")
        # keep going until new connections have seen the new certificate
        wait_for(lambda: len(counts["serials"]) >= 2, timeout=10, what="new certificate served")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert "renewed, valid until" in renewed[0]["message"]
    assert site.peer_cert()["serialNumber"] != first
    assert counts["failed"] == 0, errors[:5]
    assert counts["ok"] > 100
    print("renewal under load: %d requests, 0 failed, serials seen %d" % (counts["ok"],
                                                                         len(counts["serials"])))


@pytest.mark.slow
def test_testssl_reports_no_vulnerability_and_no_weak_protocol(tako, procs, tmp_path):
    """Third-party audit of the HTTPS listener with the Pebble certificate:
    testssl.sh --protocols --vulnerable (about 25 s).

    Summary of a run (2026-12-03): SSLv2, SSLv3, TLS 1, TLS 1.1 not offered;
    TLS 1.2 and 1.3 offered; ALPN http/1.1; Heartbleed, CCS, Ticketbleed,
    ROBOT, secure client renegotiation, CRIME, BREACH, POODLE, fallback SCSV,
    SWEET32, FREAK, DROWN, LOGJAM, BEAST, LUCKY13, RC4: not vulnerable (OK)."""
    site = Site(tako, procs, tmp_path, replicas=1)
    assert site.deploy().returncode == 0
    site.wait_cert()
    out = str(tmp_path / "testssl.json")
    r = subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "-p", "-U",
                        "--ip", "127.0.0.1", "--jsonfile", out,
                        "https://%s:%d" % (DOMAIN, site.https_port)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    findings = {e["id"]: e for e in json.load(open(out))}
    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[proto]["finding"] == "not offered", findings[proto]
    assert findings["TLS1_2"]["finding"] == "offered"
    assert findings["TLS1_3"]["finding"].startswith("offered")
    assert findings["ALPN"]["finding"] == "http/1.1"
    vulns = ["heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_client_renego", "CRIME_TLS",
             "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM",
             "BEAST", "LUCKY13", "RC4"]
    for v in vulns:
        assert findings[v]["severity"] == "OK", findings[v]
    bad = [e for e in findings.values() if e["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL")]
    assert bad == [], bad


def test_headless_chromium_loads_the_https_page(tako, procs, tmp_path):
    """Chromium trusts exactly the certificate tako got from Pebble (its SPKI
    pinned on the command line) and shows a replica's hostname."""
    import base64
    import hashlib
    import shutil
    chromium = shutil.which("chromium")
    assert chromium, "chromium is a test dependency (scripts/deps.sh test)"
    site = Site(tako, procs, tmp_path)
    assert site.deploy().returncode == 0
    site.wait_cert()
    pem = open(os.path.join(tako.home, "certs", DOMAIN, "cert.pem")).read()
    leaf = pem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    der = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=leaf, capture_output=True,
                         text=True, check=True).stdout
    spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=der.encode(),
                          capture_output=True, check=True).stdout
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    url = "https://%s:%d/" % (DOMAIN, site.https_port)
    prof = tempfile_dir(tmp_path)
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                          "--no-first-run", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--user-data-dir=" + prof,
                          "--host-resolver-rules=MAP %s 127.0.0.1" % DOMAIN,
                          "--ignore-certificate-errors-spki-list=" + pin, "--dump-dom", url],
                         capture_output=True, text=True, timeout=240).stdout
    m = re.search(r'<h1 id="hostname">([^<]+)</h1>', dom)
    assert m, dom[:500]
    assert m.group(1) in ("scaling-web-1", "scaling-web-2", "scaling-web-3")


def tempfile_dir(tmp_path):
    d = tmp_path / "chromium-profile"
    d.mkdir()
    return str(d)


def test_https_keeps_serving_while_takod_is_down(tako, procs, tmp_path):
    """The balancer is its own process: with takod killed, HTTPS still
    answers with the certificate takod gave it; a new takod takes over
    without a new order."""
    site = Site(tako, procs, tmp_path, replicas=2)
    assert site.deploy().returncode == 0
    site.wait_cert()
    wait_for(lambda: events(tako, "cert.issued"), timeout=10, what="cert.issued event")
    serial = site.peer_cert()["serialNumber"]
    os.kill(tako.takod_pid(), signal.SIGKILL)
    for _ in range(4):
        r = curl(site)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["hostname"].startswith("scaling-web-")
    assert site.peer_cert()["serialNumber"] == serial
    assert tako.run("ps", check=0).returncode == 0  # a new takod
    site.wait_cert()
    assert site.peer_cert()["serialNumber"] == serial
    wait_for(lambda: events(tako, "cert.loaded"), timeout=10, what="cert.loaded event")
    assert len(events(tako, "cert.issued")) == 1  # loaded from the state directory, not ordered


def test_tls_handshakes_are_counted_in_takods_metrics(tako, procs, tmp_path):
    """takod's /metrics counts the data plane's TLS handshakes by result,
    and non-TLS connections to the HTTPS port, in promtool-valid text."""
    http_port, https_port, metrics_port = free_port(), free_port(), free_port()
    cert, _ = make_cert(tako.dir, "own.test")
    text = config(http_port, https_port, domains=("own.test",), email=None, replicas=2,
                  extra_proxy="          tls:\n            cert: own.test.crt\n"
                  "            key: own.test.key\n")
    text = text.replace("    https: %d\n" % https_port,
                        "    https: %d\n    metrics: 127.0.0.1:%d\n" % (https_port, metrics_port))
    tako.write("tako.yaml", text)
    r = tako.run("deploy", "production", check=0)
    assert r.returncode == 0, r.stdout + r.stderr
    ctx = ssl.create_default_context(cafile=cert)

    def one():
        sock = socket.create_connection(("127.0.0.1", https_port), timeout=10)
        with ctx.wrap_socket(sock, server_hostname="own.test") as s:
            s.sendall(b"GET /api/instance HTTP/1.1\r\nHost: own.test\r\nConnection: close\r\n\r\n")
            return s.recv(4096).startswith(b"HTTP/1.1 200")
    wait_for(lambda: _try(one), timeout=20, what="own certificate served")
    for _ in range(5):
        assert one()
    # a plain HTTP request to the HTTPS port, and a failed handshake
    s = socket.create_connection(("127.0.0.1", https_port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: own.test\r\n\r\n")
    s.recv(4096)
    s.close()
    bad = ssl.create_default_context()  # does not trust the certificate
    try:
        with bad.wrap_socket(socket.create_connection(("127.0.0.1", https_port), timeout=10),
                             server_hostname="own.test"):
            pass
    except ssl.SSLError:
        pass

    def sample(text, name):
        m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
        return int(m.group(1)) if m else -1

    def scraped():
        st, _, body = http(metrics_port, "/metrics")
        t = body.decode()
        if st == 200 and sample(t, 'tako_tls_handshakes_total{result="ok"}') >= 6 and \
                sample(t, 'tako_tls_non_tls_connections_total{kind="plain_http"}') >= 1 and \
                sample(t, 'tako_tls_handshakes_total{result="failed"}') >= 1:
            return t
        return None
    t = wait_for(scraped, timeout=20, what="TLS counters in takod's metrics")
    assert sample(t, "tako_tls_certificates") == 1, t
    p = subprocess.run(["promtool", "check", "metrics"], input=t, capture_output=True, text=True)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr
