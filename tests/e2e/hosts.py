"""Test hosts: network namespaces on a private bridge, each running Debian's
real OpenSSH server on its own address with its own state.

A host is `ip netns` NS with a veth pair to a bridge whose host side holds
10.213.X.1/24 (X chosen free per run); the host answers at 10.213.X.N. Its
sshd runs under `unshare -m --propagation private` with fresh tmpfs mounts
over /var/lib/tako (takod's state), /usr/local/bin (where tako installs
itself), /run (no systemd, like a minimal server) and /root (Debian's own
root dot files, as on a fresh server: this machine's would run its shell
start-up in every ssh session), and a private copy of /etc/default
(Host.etc_default), so hosts share nothing with this machine or each other
but the rest of the read-only-ish file system.

Every process of a host is in its namespace: teardown kills the PIDs that
`ip netns pids NS` lists (the namespace name is recorded at creation), then
deletes the namespace and the bridge, pass or fail.

Keys: one client key and a few host keys per pytest session. Nothing reads
or writes /root/.ssh: tests point tako at `Keys.ssh_config` (TAKO_SSH_CONFIG),
which names its own known_hosts file, and give the client key through
`sshKey` with HOME set to `Keys.home`.
"""
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

RUN_ID = os.getpid()
_NETS = [0]  # nets created by this run: a namespace's veth may outlive its deletion briefly


def sh(*argv, check=True, **kw):
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, **kw)


class Keys:
    """Client key, host keys, a HOME with ~/.ssh/id_ed25519 and an ssh_config."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tako-keys-")
        os.chmod(self.dir, 0o700)
        self.home = os.path.join(self.dir, "home")
        os.makedirs(os.path.join(self.home, ".ssh"), mode=0o700)
        self.client_key = os.path.join(self.home, ".ssh", "id_ed25519")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tako-test-client", "-f",
           self.client_key)
        self.authorized_keys = os.path.join(self.dir, "authorized_keys")
        shutil.copy(self.client_key + ".pub", self.authorized_keys)
        self.host_keys = []
        for i in range(3):
            p = os.path.join(self.dir, "host_key_%d" % i)
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tako-test-host", "-f", p)
            self.host_keys.append(p)
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        open(self.known_hosts, "w").close()
        self.ssh_config = os.path.join(self.dir, "ssh_config")
        with open(self.ssh_config, "w") as f:
            f.write("Host *\n"
                    "  UserKnownHostsFile %s\n"
                    "  GlobalKnownHostsFile /dev/null\n"
                    "  IdentitiesOnly yes\n"
                    "  ConnectTimeout 5\n" % self.known_hosts)

    def fingerprint(self, idx):
        out = sh("ssh-keygen", "-l", "-f", self.host_keys[idx] + ".pub").stdout
        return out.split()[1]

    def tako_env(self):
        """Environment for the tako CLI: ssh options and HOME for sshKey: ~/.ssh/..."""
        return {"TAKO_SSH_CONFIG": self.ssh_config, "HOME": self.home}

    def ssh(self, ip, *cmd, timeout=30, user="root"):
        """Run a command on a host directly (test-side checks)."""
        return subprocess.run(["ssh", "-F", self.ssh_config, "-i", self.client_key, "-o",
                               "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                               user + "@" + ip, "--"] + list(cmd),
                              capture_output=True, text=True, timeout=timeout)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def _pick_subnet():
    used = sh("ip", "-4", "-o", "addr").stdout
    start = RUN_ID % 200
    for k in range(250):
        x = (start + k) % 250 + 1
        if (" 10.213.%d." % x) not in used:
            return x
    raise RuntimeError("no free 10.213.X.0/24 subnet")


class Host:
    def __init__(self, net, idx, ip, ns, veth):
        self.net, self.idx, self.ip, self.ns, self.veth = net, idx, ip, ns, veth
        self.sshd = None
        self.tmp = tempfile.mkdtemp(prefix="tako-host-")
        self.host_key = None
        self.users = []  # (name, uid): add_user()

    def start_sshd(self, host_key):
        """(Re)start sshd with HOST_KEY in a fresh private mount namespace."""
        self.stop_all()
        self.host_key = host_key
        conf = os.path.join(self.tmp, "sshd_config")
        with open(conf, "w") as f:
            f.write("Port 22\nListenAddress %s\nHostKey %s\nPidFile %s\n"
                    "AuthorizedKeysFile %s\nPermitRootLogin prohibit-password\nUsePAM no\n"
                    "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "PrintMotd no\nMaxStartups 100\nLogLevel VERBOSE\n"
                    % (self.ip, host_key, os.path.join(self.tmp, "sshd.pid"),
                       self.net.keys.authorized_keys))
        # /etc/default: a private copy (the host's own /etc/default/tako,
        # `etc_default` on this side), so a test can give the host's takod
        # its environment without touching this machine's /etc.
        self.etc_default = os.path.join(self.tmp, "etc-default")
        if not os.path.isdir(self.etc_default):
            shutil.copytree("/etc/default", self.etc_default, symlinks=True)
        # /root too: a fresh server's root home (Debian's own dot files), not
        # this machine's, whose shell start-up every ssh session would run.
        script = ("set -e; for d in /var/lib/tako /usr/local/bin /run; do "
                  "mount -t tmpfs -o mode=0755 tmpfs $d; done; mkdir -p /run/sshd; "
                  "mount -t tmpfs -o mode=0700 tmpfs /root; "
                  "cp /usr/share/base-files/dot.bashrc /root/.bashrc; "
                  "cp /usr/share/base-files/dot.profile /root/.profile; "
                  "mount --bind %s /etc/default; %s"
                  "exec /usr/sbin/sshd -D -e -f %s" % (self.etc_default, self._users_script(conf),
                                                        conf))
        self.log_path = os.path.join(self.tmp, "sshd.log")
        log = open(self.log_path, "ab")
        self.sshd = subprocess.Popen(["ip", "netns", "exec", self.ns, "unshare", "-m",
                                      "--propagation", "private", "sh", "-c", script],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            if self.sshd.poll() is not None:
                raise RuntimeError("sshd in %s exited: %s" % (self.ns, open(self.log_path).read()))
            try:
                socket.create_connection((self.ip, 22), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def add_user(self, name, sudoers=None):
        """A login user of this host only, with its own home under a private
        /home, the client key in its authorized_keys and SUDOERS (a sudoers
        line, or None for no sudo rights) in a private /etc/sudoers.d. The
        host's /etc/passwd, /etc/shadow and /etc/group are private copies
        bind-mounted in its mount namespace: this machine's files stay as
        they are. Restarts the host's sshd (a fresh mount namespace)."""
        uid = 4200 + len(self.users) + 1
        while any(l.split(":")[2] == str(uid) for l in open("/etc/passwd")):
            uid += 1
        self.users.append((name, uid))
        etc = os.path.join(self.tmp, "etc")
        os.makedirs(etc, exist_ok=True)
        for f in ("passwd", "shadow", "group"):
            dst = os.path.join(etc, f)
            if not os.path.exists(dst):
                shutil.copy2("/etc/" + f, dst)
        with open(os.path.join(etc, "passwd"), "a") as f:
            f.write("%s:x:%d:%d::/home/%s:/bin/sh\n" % (name, uid, uid, name))
        with open(os.path.join(etc, "shadow"), "a") as f:
            f.write("%s:*:19000:0:99999:7:::\n" % name)  # no password, not locked
        with open(os.path.join(etc, "group"), "a") as f:
            f.write("%s:x:%d:\n" % (name, uid))
        sd = os.path.join(etc, "sudoers.d")
        if not os.path.isdir(sd):
            shutil.copytree("/etc/sudoers.d", sd, symlinks=True)
            os.chmod(sd, 0o750)
        if sudoers:
            p = os.path.join(sd, "tako-test-" + name)
            with open(p, "w") as f:
                f.write(sudoers + "\n")
            os.chmod(p, 0o440)
        self.start_sshd(self.host_key)

    def _users_script(self, conf):
        """Shell lines for start_sshd: the private user files and homes."""
        if not self.users:
            return ""
        etc = os.path.join(self.tmp, "etc")
        out = ["for f in passwd shadow group sudoers.d; do mount --bind %s/$f /etc/$f; done"
               % etc, "mount -t tmpfs -o mode=0755 tmpfs /home"]
        with open(conf, "a") as f:
            for name, uid in self.users:
                f.write("Match User %s\n  AuthorizedKeysFile /home/%s/.ssh/authorized_keys\n"
                        % (name, name))
        for name, uid in self.users:
            out.append("mkdir -p -m 0700 /home/%s/.ssh; cp %s /home/%s/.ssh/authorized_keys; "
                       "chown -R %d:%d /home/%s" % (name, self.net.keys.authorized_keys, name,
                                                    uid, uid, name))
        return "; ".join(out) + "; "

    def pids(self):
        r = sh("ip", "netns", "pids", self.ns, check=False)
        return [int(p) for p in r.stdout.split()]

    def stop_all(self):
        """Kill every process in the namespace (sshd, takod, replicas)."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        if self.sshd is not None:
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.sshd = None

    def cut(self):
        """The host goes away: its link to the bridge goes down."""
        sh("ip", "link", "set", self.veth, "down")

    def restore(self):
        sh("ip", "link", "set", self.veth, "up")

    def tx_bytes(self):
        """Bytes this machine sent to the host (the bridge side's transmit counter)."""
        with open("/sys/class/net/%s/statistics/tx_bytes" % self.veth) as f:
            return int(f.read())

    def ssh_connections(self):
        """TCP connections sshd accepted so far (its log says one line each)."""
        with open(self.log_path, errors="replace") as f:
            return sum(1 for line in f if line.startswith("Connection from "))

    def inside(self, *argv, timeout=30):
        """Run a command in the host's network and mount namespaces (those of
        its sshd: `ip netns exec`, unshare and sh all exec, so the recorded
        PID is sshd's): what the host's own files look like, without ssh."""
        return subprocess.run(["nsenter", "-t", str(self.sshd.pid), "-m", "-n", "--"] +
                              list(argv), capture_output=True, text=True, timeout=timeout)

    def nsexec(self, *argv, timeout=30):
        return subprocess.run(["ip", "netns", "exec", self.ns] + list(argv), capture_output=True,
                              text=True, timeout=timeout)

    def destroy(self):
        self.stop_all()
        sh("ip", "link", "del", self.veth, check=False)  # the pair goes at once
        sh("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Net:
    """A bridge and N hosts; destroy() removes all of it by recorded names."""

    def __init__(self, keys, n, tag):
        self.keys = keys
        _NETS[0] += 1
        # Interface names: at most 15 bytes ("tk" + tag + "h" + index).
        self.tag = "%d%s%d" % (RUN_ID % 100000, tag, _NETS[0] % 100)
        self.bridge = "tk%sb" % self.tag
        self.hosts = []
        self.x = None
        os.makedirs("/var/lib/tako", exist_ok=True)  # mount points of the hosts' tmpfs
        try:
            self._create(n)
        except BaseException:
            self.destroy()
            raise

    def _create(self, n):
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        # Two test processes (pytest -n) pick and take a subnet one at a time
        # (the lock: this file, which every one of them has and none writes).
        with open(__file__) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.x = _pick_subnet()
            sh("ip", "addr", "add", "10.213.%d.1/24" % self.x, "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(n):
            self.add_host(i)

    def add_host(self, i):
        ns = "tako-%s-%d" % (self.tag, i)
        veth = "tk%sh%d" % (self.tag, i)
        ip = "10.213.%d.%d" % (self.x, i + 2)
        sh("ip", "netns", "add", ns)
        h = Host(self, i, ip, ns, veth)
        self.hosts.append(h)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        h.nsexec("ip", "link", "set", "lo", "up")
        h.nsexec("ip", "addr", "add", ip + "/24", "dev", "eth0")
        h.nsexec("ip", "link", "set", "eth0", "up")
        h.nsexec("ip", "route", "add", "default", "via", "10.213.%d.1" % self.x)
        h.start_sshd(self.keys.host_keys[i % len(self.keys.host_keys)])
        return h

    def unused_ip(self):
        """An address on the bridge's subnet where no host answers."""
        return "10.213.%d.250" % self.x

    def destroy(self):
        for h in self.hosts:
            try:
                h.destroy()
            except Exception:
                pass
        sh("ip", "link", "del", self.bridge, check=False)
