#!/usr/bin/python3
"""Deploying to a server: wall time, bytes sent and TCP connections for
tako deploy vs the plain baseline of `rsync -a` plus one `ssh` command.

Runs against test hosts made like the e2e tests' (tests/e2e/hosts.py): a
network namespace per host running Debian's sshd, reached over a veth pair.
Bytes are the host-side veth's transmit counter (everything this machine sent
to the host: ssh handshakes, file data, control traffic); connections are the
"Connection from" lines of the host's sshd log.

  (a) first deploy to a fresh host (tako: installs itself, sends the app,
      starts 3 replicas and waits for their health checks)
  (b) redeploy with no change
  (c) redeploy after changing one file (index.js + 1 KiB)

Usage (as root, from the repository root, after make and npm install in a
copy of examples/scaling, which this script does itself):
    bench/remote.py [ROUNDS]        # default 3 rounds; prints a markdown table
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import hosts  # noqa: E402

TAKO = os.environ.get("TAKO_BIN", os.path.join(ROOT, "tako"))


def measure(host, fn):
    b0, c0, t0 = host.tx_bytes(), host.ssh_connections(), time.monotonic()
    fn()
    return time.monotonic() - t0, host.tx_bytes() - b0, host.ssh_connections() - c0


def run(argv, env=None, cwd=None):
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s%s" % (argv, r.stdout, r.stderr))
    return r


def one_round(keys, app):
    net = hosts.Net(keys, 2, "b")
    work = tempfile.mkdtemp(prefix="tako-bench-remote-")
    try:
        th, bh = net.hosts
        proj = os.path.join(work, "tako-app")
        shutil.copytree(app, proj, symlinks=True)
        env = dict(os.environ)
        env.update(keys.tako_env())
        env.update({"SERVER_HOST": th.ip, "NO_COLOR": "1",
                    "TAKO_HOME": os.path.join(work, "home")})
        deploy = lambda: run([TAKO, "deploy", "prod"], env=env, cwd=proj)  # noqa: E731
        res = {"tako": [], "rsync+ssh": []}
        res["tako"].append(measure(th, deploy))
        res["tako"].append(measure(th, deploy))
        with open(os.path.join(proj, "index.js"), "a") as f:
            f.write("\n// " + "x" * 1021 + "\n")
        res["tako"].append(measure(th, deploy))

        base = os.path.join(work, "rsync-app")
        shutil.copytree(app, base, symlinks=True)
        ssh = "ssh -F %s -i %s -o BatchMode=yes -o StrictHostKeyChecking=accept-new" % (
            keys.ssh_config, keys.client_key)

        def sync():
            run(["rsync", "-a", "--delete", "-e", ssh, base + "/", "root@%s:/var/lib/tako/app/" % bh.ip])
            run(ssh.split() + ["root@" + bh.ip, "true"])

        res["rsync+ssh"].append(measure(bh, sync))
        res["rsync+ssh"].append(measure(bh, sync))
        with open(os.path.join(base, "index.js"), "a") as f:
            f.write("\n// " + "x" * 1021 + "\n")
        res["rsync+ssh"].append(measure(bh, sync))
        return res
    finally:
        net.destroy()
        shutil.rmtree(work, ignore_errors=True)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    keys = hosts.Keys()
    d = tempfile.mkdtemp(prefix="tako-bench-app-")
    try:
        app = os.path.join(d, "app")
        shutil.copytree(os.path.join(ROOT, "examples", "scaling"), app,
                        ignore=shutil.ignore_patterns("node_modules", ".env"))
        run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=app)
        files = sum(len(f) for _, _, f in os.walk(app))
        size = sum(os.path.getsize(os.path.join(p, n)) for p, _, f in os.walk(app) for n in f)
        all_res = [one_round(keys, app) for _ in range(rounds)]
    finally:
        shutil.rmtree(d, ignore_errors=True)
        keys.close()
    steps = ["(a) first deploy", "(b) no change", "(c) one file changed"]
    print("App: examples/scaling with node_modules: %d files, %d bytes; %d rounds, median "
          "(min–max)\n" % (files, size, rounds))
    print("| step | tool | wall time s | bytes sent | TCP connections |")
    print("|---|---|---|---|---|")
    for i, step in enumerate(steps):
        for tool in ("tako", "rsync+ssh"):
            t = [r[tool][i][0] for r in all_res]
            b = [r[tool][i][1] for r in all_res]
            c = [r[tool][i][2] for r in all_res]
            print("| %s | %s | %.2f (%.2f–%.2f) | %d (%d–%d) | %d |" % (
                step, tool, statistics.median(t), min(t), max(t), statistics.median(b), min(b),
                max(b), statistics.median(c)))


if __name__ == "__main__":
    main()
