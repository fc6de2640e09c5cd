"""The ACME client (src/acme) against Debian's Pebble: an order answered over
HTTP-01 gives a chain for the domain issued by Pebble's CA; badNonce answers
are retried; the CA's own error text comes back for a domain it cannot
validate and for an ACME server that is down."""
import os
import subprocess

import pytest

from conftest import ROOT, free_port
from pebble import Pebble, have_pebble

BUILD = "build/san" if "build/san" in os.environ.get("TAKO_BIN", "") else "build/rel"
DRIVER = os.environ.get("ACME_DRIVER_BIN", os.path.join(ROOT, BUILD, "tests", "acme_driver"))

pytestmark = pytest.mark.skipif(not have_pebble(), reason="pebble not installed")


def drive(pebble, key, port, *domains, email="ops@scaling.test", directory=None):
    r = subprocess.run([DRIVER, directory or pebble.directory, pebble.ca, key, str(port), email]
                       + list(domains), capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout.strip(), r.stderr


def test_order_over_http01_gives_chain_from_pebble(procs, tmp_path):
    port = free_port()
    pb = Pebble(procs, str(tmp_path / "pebble"), port)
    key = str(tmp_path / "account.key")
    rc, out, err = drive(pb, key, port, "scaling.test", "www.scaling.test")
    assert rc == 0, out + err
    words = out.split(" ", 3)
    assert words[0] == "ok"
    assert words[2] == "scaling.test,www.scaling.test"
    assert "Pebble" in words[3]
    assert os.stat(key).st_mode & 0o777 == 0o600
    # the same account key is reused for a second order
    before = open(key).read()
    rc, out, _ = drive(pb, key, port, "other.test")
    assert rc == 0 and out.startswith("ok ")
    assert open(key).read() == before


def test_bad_nonces_are_retried(procs, tmp_path):
    port = free_port()
    pb = Pebble(procs, str(tmp_path / "pebble"), port, nonce_reject=15)
    rc, out, err = drive(pb, str(tmp_path / "a.key"), port, "nonce.test")
    assert rc == 0, out + err


def test_unreachable_challenge_reports_the_cas_error(procs, tmp_path):
    """Pebble validates on a port where nobody answers: the domain does not
    point at this host."""
    port = free_port()
    pb = Pebble(procs, str(tmp_path / "pebble"), free_port())
    rc, out, _ = drive(pb, str(tmp_path / "a.key"), port, "elsewhere.test")
    assert rc == 1
    assert out.startswith("error elsewhere.test: validation invalid:"), out
    assert "urn:ietf:params:acme:error:connection" in out, out


def test_ca_down_and_not_a_directory(procs, tmp_path):
    port = free_port()
    pb = Pebble(procs, str(tmp_path / "pebble"), port)
    dead = "https://127.0.0.1:%d/dir" % free_port()
    rc, out, _ = drive(pb, str(tmp_path / "a.key"), port, "x.test", directory=dead)
    assert rc == 1 and out.startswith("error cannot reach the ACME server at " + dead), out
    notdir = "https://127.0.0.1:%d/nope" % pb.port
    rc, out, _ = drive(pb, str(tmp_path / "a.key"), port, "x.test", directory=notdir)
    assert rc == 1 and "is not an ACME directory (HTTP 404)" in out, out
    # a contact Pebble refuses: the CA's own words come back
    rc, out, _ = drive(pb, str(tmp_path / "b.key"), port, "x.test", email="not-an-email@")
    assert rc == 1 and out.startswith("error account registration: the CA answered 400"), out
