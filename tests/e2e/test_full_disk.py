"""A full disk is a clear, harmless failure wherever tako writes, proved on
real small file systems (tmpfs) that the tests size and fill themselves:

- a server whose /var/lib/tako fills up while a deploy ships the app (the
  host's own tmpfs, in its private mount namespace, resized by the test);
- a local TAKO_HOME on a tmpfs of a few MiB mounted in a private mount
  namespace that only the test's tako commands (and the takod they start)
  live in;
- a dockerd whose --data-root is on a small tmpfs.

Each case: the command fails with a message naming the server or path and
"no space left", what was running keeps serving, nothing half-written stays
behind, and the next command after space is freed works.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import ROOT, Load, http, wait_for
from hosts import Net
from test_servers import Remote

WHOAMI = os.path.join(ROOT, "examples", "whoami", "whoami")
MIB = 1024 * 1024


# ---- a server whose state disk is full ----

@pytest.fixture(scope="module")
def server(ssh_keys):
    """One test host and a one-replica project deployed to it."""
    n = Net(ssh_keys, 1, "d")
    home = tempfile.mkdtemp(prefix="tako-home-")
    proj = tempfile.mkdtemp(prefix="tako-fulldisk-proj-")
    with open(os.path.join(proj, "tako.yaml"), "w") as f:
        f.write("project:\n  name: tiny\nservers:\n  prod:\n    host: ${SERVER_HOST}\n"
                "    sshKey: ~/.ssh/id_ed25519\n"
                "environments:\n  production:\n    servers: [prod]\n    services:\n      web:\n"
                "        command: [%s]\n        port: 3000\n        replicas: 1\n" % WHOAMI)
    r = Remote(ssh_keys, n.hosts[0], proj, home)
    try:
        r.run("deploy", "prod", check=0)
        yield r
    finally:
        n.destroy()  # kills every process of the host: its tmpfs goes with its namespace
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(proj, ignore_errors=True)


def rsh(r, script):
    """A shell command on the test host, which must succeed; its stdout."""
    p = r.keys.ssh(r.host.ip, "sh", "-c", "'%s'" % script)
    assert p.returncode == 0, (script, p.stdout, p.stderr)
    return p.stdout


def state_df(r):
    """(used, available) KiB of the host's /var/lib/tako."""
    used, avail = rsh(r, "df -Pk /var/lib/tako | tail -1").split()[2:4]
    return int(used), int(avail)


def resize_state(r, free_kib):
    """Resize the host's /var/lib/tako tmpfs so that about FREE_KIB stay free."""
    used, _ = state_df(r)
    rsh(r, "mount -o remount,size=%dk /var/lib/tako" % (used + free_kib))


def revision(r):
    js = json.loads(r.run("ps", "prod", "--output", "json", check=0).stdout)
    return js["services"][0]["revision"]


def serves(r, n=5):
    """N requests to the host's balancer: how many were answered 200."""
    ok = 0
    for _ in range(n):
        st, _body, _h = http(80, "/", host=r.host.ip)
        ok += st == 200
    return ok


def leftovers(r):
    """Temporary files of shipping anywhere under the state directory."""
    return rsh(r, "find /var/lib/tako/apps /var/lib/tako/blobs -name \".tmp*\"").split()


def big_file(r, name, size):
    with open(os.path.join(r.dir, name), "wb") as f:
        f.write(os.urandom(size))


def test_server_setup_check_refuses_a_full_state_disk(server):
    rev = revision(server)
    resize_state(server, 40 * 1024)  # under the 64 MiB setup asks for
    try:
        r = server.run("deploy", "prod")
        assert r.returncode == 1, r.stdout + r.stderr
        err = r.stderr
        assert "server prod (root@%s:22) cannot run tako:" % server.host.ip in err, err
        assert re.search(r"no space left on device: only \d+ KB free in /var/lib/tako; "
                         r"tako needs at least 65536 KB", err), err
        assert err.count("no space left") == 1, err  # one message
        # Nothing changed: the same revision serves, nothing was sent.
        assert "sent" not in r.stdout, r.stdout
        assert revision(server) == rev
        assert serves(server) == 5
    finally:
        resize_state(server, 256 * 1024)


@pytest.mark.parametrize("size_mib,where", [
    (80, "/var/lib/tako/blobs/"),          # the contents themselves do not fit
    (40, "/var/lib/tako/apps/tiny/web/.tmp-"),  # they fit, the revision's tree does not
])
def test_server_disk_full_while_shipping(server, size_mib, where):
    rev = revision(server)
    resize_state(server, 70 * 1024)  # passes setup's check (64 MiB), not the app
    used0, _ = state_df(server)
    big_file(server, "big.bin", size_mib * MIB)
    try:
        with Load(80, path="/", host=server.host.ip, clients=2, max_seconds=60,
                  max_requests=20000) as load:
            r = server.run("deploy", "prod")
        assert r.returncode == 1, r.stdout + r.stderr
        err = r.stderr
        assert "server prod (root@%s:22): cannot store the files" % server.host.ip in err, err
        assert "no space left on device: writing %s" % where in err, err
        assert "free some space on the server and deploy again" in err, err
        # The running revision kept serving during the attempt and after it.
        assert load.ok > 0 and load.failed == 0, (load.ok, load.failed)
        assert revision(server) == rev
        assert serves(server) == 5
        # Nothing half-written stays: no temporary tree or blob, and the
        # contents this deploy stored are gone again.
        assert leftovers(server) == []
        used1, _ = state_df(server)
        assert used1 < used0 + 1024, (used0, used1)
    finally:
        os.unlink(os.path.join(server.dir, "big.bin"))


def test_server_deploy_works_once_space_is_freed(server):
    rev = revision(server)
    big_file(server, "big.bin", 40 * MIB)
    try:
        resize_state(server, 70 * 1024)
        assert server.run("deploy", "prod").returncode == 1
        resize_state(server, 200 * 1024)  # the operator freed space
        r = server.run("deploy", "prod", check=0)
        assert re.search(r"web: sent 1 of 2 files", r.stdout), r.stdout
        assert revision(server) != rev
        assert serves(server) == 5
        assert rsh(server, "ls /var/lib/tako/apps/tiny/web/*/big.bin").strip()
        assert leftovers(server) == []
    finally:
        os.unlink(os.path.join(server.dir, "big.bin"))
