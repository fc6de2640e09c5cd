"""HTTPS in tako's own balancer: a service with proxy.domain + proxy.email
gets a certificate from Debian's Pebble ACME server (HTTP-01 answered by
tako's HTTP listener), is served over TLS in round robin, redirects HTTP to
HTTPS, renews under load without a failed request, and shows the
certificate's state in `tako certs` and `tako ps`. Pebble and its DNS
(pebble-challtestsrv, every name → 127.0.0.1) run on loopback per test."""
import json
import os
import re
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
