"""Preparing a server (`tako setup`, and the first `deploy`) against test hosts
(hosts.py) that are not plain root-on-this-architecture machines: one that
reports another architecture, one reached as a user with passwordless sudo,
one reached as a user without sudo rights. Each refusal names the server and
the cause, exits 1 and leaves the host as it was.
"""
import json
import os
import platform
import re
import shutil
import tempfile

import pytest

from conftest import WHOAMI, kill_takod_tree
from test_servers import Remote
from hosts import Net

SUDOERS = "deploy ALL=(root) NOPASSWD: ALL"


@pytest.fixture(scope="module")
def net(ssh_keys):
    """Host 0 says it is aarch64; hosts 1 and 2 have a user `deploy`, with and
    without sudo rights. All of it lives in the hosts' own mount namespaces
    (tmpfs /usr/local/bin and /home, private /etc/passwd...), removed with them."""
    n = Net(ssh_keys, 3, "u")
    try:
        # A `uname` before /usr/bin in the PATH of the host's ssh sessions (and
        # in sudo's secure_path): only -m changes.
        script = ('#!/bin/sh\nif [ "$1" = -m ]; then echo aarch64; exit 0; fi\n'
                  'exec /usr/bin/uname "$@"\n')
        r = ssh_keys.ssh(n.hosts[0].ip, "printf '%s' '" + script.replace("'", "'\\''") +
                         "' > /usr/local/bin/uname && chmod 0755 /usr/local/bin/uname && "
                         "uname -m && uname -s")
        assert r.returncode == 0 and r.stdout.split() == ["aarch64", "Linux"], r
        n.hosts[1].add_user("deploy", SUDOERS)
        n.hosts[2].add_user("deploy")
        for h in n.hosts[1:]:
            r = ssh_keys.ssh(h.ip, "id", "-un", user="deploy")
            assert r.stdout.strip() == "deploy", r
        yield n
    finally:
        n.destroy()


def project(ssh_keys, host, user=None):
    home = tempfile.mkdtemp(prefix="tako-home-")
    proj = tempfile.mkdtemp(prefix="tako-setup-proj-")
    with open(os.path.join(proj, "tako.yaml"), "w") as f:
        f.write("project:\n  name: tiny\nservers:\n  prod:\n    host: ${SERVER_HOST}\n"
                "    sshKey: ~/.ssh/id_ed25519\n%s"
                "environments:\n  production:\n    servers: [prod]\n    services:\n"
                "      web:\n        command: [%s]\n        port: 3000\n        replicas: 1\n"
                % ("    user: %s\n" % user if user else "", WHOAMI))
    return Remote(ssh_keys, host, proj, home)


@pytest.fixture
def remote(request, ssh_keys, net):
    idx, user = request.param
    r = project(ssh_keys, net.hosts[idx], user)
    try:
        yield r
    finally:
        kill_takod_tree(r.home)
        shutil.rmtree(r.home, ignore_errors=True)
        shutil.rmtree(r.dir, ignore_errors=True)


def ns_commands(host):
    """The command names of the processes in the host's network namespace."""
    names = []
    for p in host.pids():
        try:
            with open("/proc/%d/comm" % p) as f:
                names.append(f.read().strip())
        except OSError:
            pass  # gone meanwhile
    return names


def assert_untouched(r):
    """Nothing of tako on the host, seen from inside its mount namespace: no
    binary, an empty state directory, and no takod in its network namespace."""
    res = r.host.inside("sh", "-c", "ls -A /usr/local/bin; echo --; ls -A /var/lib/tako")
    assert res.returncode == 0, res
    bins, state = res.stdout.split("--\n")
    assert bins.split() == (["uname"] if r.host.idx == 0 else []), res.stdout
    assert state.split() == [], res.stdout
    assert "tako" not in ns_commands(r.host), ns_commands(r.host)


@pytest.mark.parametrize("remote", [(0, None)], indirect=True)
def test_another_architecture_is_refused_and_nothing_changes(remote):
    mine = platform.machine()
    assert mine != "aarch64"  # the host's fake must differ from this machine
    for cmd in ("setup", "deploy"):
        r = remote.run(cmd, "prod")
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        err = r.stderr.strip()
        assert err.startswith("tako %s: server prod (root@%s:22) cannot run tako:\n  - "
                              % (cmd, remote.host.ip)), err
        assert ("the server's architecture is aarch64 and this tako binary is built for %s"
                "; tako installs its own binary on the server, so deploy to it with a tako "
                "built for aarch64" % mine) in err, err
        assert err.count("\n") == 1, err  # one problem, one message
        assert_untouched(remote)
    assert not os.path.exists(os.path.join(remote.home, "takod.sock"))


@pytest.mark.parametrize("remote", [(2, "deploy")], indirect=True)
def test_user_without_sudo_is_refused_with_what_to_configure(remote):
    for cmd in ("setup", "deploy"):
        r = remote.run(cmd, "prod")
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        err = r.stderr.strip()
        assert err.startswith("tako %s: server prod (deploy@%s:22): user deploy is not root and cannot "
                              "run sudo without a password (sudo: a password is required)"
                              % (cmd, remote.host.ip)), err
        assert "add the line `%s` to /etc/sudoers.d/tako on the server" % SUDOERS in err, err
        assert "servers.prod.user: root" in err, err
        assert_untouched(remote)


@pytest.mark.parametrize("remote", [(1, "deploy")], indirect=True)
def test_user_with_passwordless_sudo_sets_up_and_deploys(remote):
    assert_untouched(remote)
    r = remote.run("setup", "prod", check=0)
    assert "server prod: tako installed at /usr/local/bin/tako" in r.stdout, r.stdout
    assert "takod started" in r.stdout, r.stdout
    # Installed by root, and takod runs as root: it was started through sudo.
    res = remote.keys.ssh(remote.host.ip, "stat -c %U:%a /usr/local/bin/tako /var/lib/tako; "
                          "ps -o user= -p $(cat /var/lib/tako/takod.pid)")
    assert res.stdout.split() == ["root:755", "root:700", "root"], res
    r = remote.run("setup", "prod", check=0)
    assert "nothing changed" in r.stdout, r.stdout
    r = remote.run("deploy", "prod", check=0)
    assert re.search(r"^web\s+1/1\s.*running", r.stdout, re.M), r.stdout
    assert "to server prod (deploy@%s:22)" % remote.host.ip in r.stdout, r.stdout
    # `tako ps` reaches the root takod through `sudo -n ... tako daemon --stdio`.
    js = json.loads(remote.run("ps", "prod", "--output", "json", check=0).stdout)
    reps = [rep for svc in js["services"] for rep in svc["replicas"]]
    assert [(rep["name"], rep["state"]) for rep in reps] == [("tiny-web-1", "running")], js
    # The replica is the server's, started by the root takod.
    pid = reps[0]["pid"]
    assert pid in remote.host.pids(), (pid, remote.host.pids())
    assert os.stat("/proc/%d" % pid).st_uid == 0
    # Nothing ran on this machine.
    assert not os.path.exists(os.path.join(remote.home, "takod.sock"))
