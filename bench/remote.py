#!/usr/bin/python3
"""Deploying to servers: wall time, bytes sent and TCP connections for
`tako deploy` to 1 host and to 3 hosts (`servers: [a, b, c]`, the same app)
vs the plain baseline of `rsync -a` plus one `ssh` command per host.

Runs against test hosts made like the e2e tests' (tests/e2e/hosts.py): a
network namespace per host running Debian's sshd, reached over a veth pair
on a private bridge. Inside each host's namespace the bench adds an
nftables table with two named counters on the input hook:

  - tohost: every packet from this machine (the bridge's address) to the
    host, IP length (ssh handshakes, file data, control traffic; the hosts'
    traffic to each other, e.g. the peer listeners, is not counted);
  - syn22: TCP SYNs (SYN set, ACK clear) to port 22, i.e. connections
    opened to sshd; cross-checked against the "Connection from" lines of
    the host's sshd log (a mismatch is printed).

Steps, for tako and the baseline alike:
  (a) first deploy to fresh hosts (tako: installs itself, sends the app,
      starts the replicas and waits for their health checks)
  (b) redeploy with no change
  (c) redeploy after changing one file (index.js + 1 KiB)

The baseline per host is `rsync -a --delete` of the same directory then one
`ssh host true`; with 3 hosts the three run in parallel. A last row, the
floor, is one `ssh host true` per host alone: what any ssh-based deploy
pays at least (one connection: key exchange, authentication, one session).
The bench checks tako's output: (b) must say "nothing sent" and "nothing
changed" for every server, (c) "sent 1 of" for every server.

VERBOSE=1 prints tako's output with the seconds since the command started
on each line (where the time of a deploy goes).

Usage (as root, from the repository root, after make; the script copies
examples/scaling and runs npm install in the copy itself):
    bench/remote.py [ROUNDS] [HOSTS ...]   # default: 3 rounds, hosts 1 and 3
Prints a markdown table. Everything it creates (namespaces, sshd, the hosts'
takods and replicas, ssh masters, temporary directories) is removed at the
end, also on an error, Ctrl-C or SIGTERM.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import hosts  # noqa: E402

TAKO = os.environ.get("TAKO_BIN", os.path.join(ROOT, "tako"))
STEPS = ["(a) first deploy", "(b) no change", "(c) one file changed"]
TOOLS = ["tako", "rsync+ssh"]
FLOOR = "ssh host true"  # one connection, one command: what any ssh-based deploy pays at least
NFT_TABLE = "takobench"
VERBOSE = os.environ.get("VERBOSE") == "1"

YAML_MULTI = """# examples/scaling's tako.yaml with three servers
project:
  name: scaling
  version: 1.0.0

servers:
%(servers)s
environments:
  production:
    servers: [%(names)s]
    services:
      web:
        build: .
        command: node index.js
        port: 3000
        replicas: 3
        proxy:
          domain: scaling.${SERVER_HOST}.sslip.io
          email: admin@example.com
        loadBalancer:
          strategy: round_robin
        env:
          NODE_ENV: production
          REDIS_URL: ${REDIS_URL:-}
          CART_STORE: ${CART_STORE:-redis}
"""


def run_verbose(argv, env, cwd, timeout):
    """tako's output on stderr, each line stamped with the seconds since start
    (line-buffered through stdbuf; used only with VERBOSE=1: not in the figures)."""
    t0 = time.monotonic()
    p = subprocess.Popen(["stdbuf", "-oL"] + argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    out = []
    print("$ " + " ".join(argv), file=sys.stderr)
    for line in p.stdout:
        out.append(line)
        print("%6.2f  %s" % (time.monotonic() - t0, line), end="", file=sys.stderr)
    p.wait()
    timer.cancel()
    print("%6.2f  (exit %d)" % (time.monotonic() - t0, p.returncode), file=sys.stderr)
    return subprocess.CompletedProcess(argv, p.returncode, "".join(out), "")


def run(argv, env=None, cwd=None, timeout=600):
    if VERBOSE and argv[0] == TAKO:
        r = run_verbose(argv, env, cwd, timeout)
    else:
        r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (argv, r.returncode, r.stdout, r.stderr))
    return r


def nft_setup(h, bridge_ip):
    rules = ("table inet %(t)s {\n"
             " counter tohost {}\n counter syn22 {}\n"
             " chain input { type filter hook input priority -200; policy accept;\n"
             "  ip saddr %(b)s counter name tohost\n"
             "  tcp dport 22 tcp flags & (syn | ack) == syn counter name syn22\n"
             " }\n}\n" % {"t": NFT_TABLE, "b": bridge_ip})
    r = subprocess.run(["ip", "netns", "exec", h.ns, "nft", "-f", "-"], input=rules,
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("nft in %s: %s" % (h.ns, r.stderr))


def nft_read(h):
    r = h.nsexec("nft", "-j", "list", "counters", "table", "inet", NFT_TABLE)
    if r.returncode != 0:
        raise RuntimeError("nft in %s: %s" % (h.ns, r.stderr))
    out = {}
    for obj in json.loads(r.stdout)["nftables"]:
        c = obj.get("counter")
        if c:
            out[c["name"]] = c
    return out["tohost"]["bytes"], out["syn22"]["packets"]


def snapshot(hs):
    return [nft_read(h) + (h.ssh_connections(),) for h in hs]


def measure(hs, fn):
    """(wall s, bytes to all HS, [SYNs to :22 per host], [sshd-accepted per host])."""
    s0 = snapshot(hs)
    t0 = time.monotonic()
    fn()
    wall = time.monotonic() - t0
    s1 = snapshot(hs)
    nbytes = sum(b[0] - a[0] for a, b in zip(s0, s1))
    syns = [b[1] - a[1] for a, b in zip(s0, s1)]
    accepted = [b[2] - a[2] for a, b in zip(s0, s1)]
    if syns != accepted:
        print("note: SYNs to :22 %s but sshd logged %s connections" % (syns, accepted),
              file=sys.stderr)
    return wall, nbytes, syns, accepted


def kill_ssh_masters(ctl_dir):
    """ssh masters tako left whose ControlPath is under CTL_DIR (ours alone)."""
    needle = ("ControlPath=" + ctl_dir + "/").encode()
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in cmd:
            try:
                os.kill(int(p), signal.SIGKILL)
            except ProcessLookupError:
                pass


def append_change(proj):
    path = os.path.join(proj, "index.js")
    with open(path, "a") as f:
        f.write("\n// " + "x" * 1021 + "\n")
    return os.path.getsize(path)


def one_round(keys, app, n):
    """Fresh hosts: N for tako, N for the baseline. Returns {tool: [step results]}."""
    net = hosts.Net(keys, 2 * n, "b")
    work = tempfile.mkdtemp(prefix="tako-bench-remote-")
    # ssh's ControlPath lives in XDG_RUNTIME_DIR when its path is short.
    ctl = tempfile.mkdtemp(prefix="tkb", dir="/tmp")
    try:
        bridge_ip = "10.213.%d.1" % net.x
        for h in net.hosts:
            nft_setup(h, bridge_ip)
        th, bh = net.hosts[:n], net.hosts[n:]
        proj = os.path.join(work, "tako-app")
        shutil.copytree(app, proj, symlinks=True)
        if n > 1:
            names = "abcdefghij"[:n]
            servers = "".join("  %s: {host: %s, user: root, sshKey: ~/.ssh/id_ed25519}\n"
                              % (name, h.ip) for name, h in zip(names, th))
            with open(os.path.join(proj, "tako.yaml"), "w") as f:
                f.write(YAML_MULTI % {"servers": servers, "names": ", ".join(names)})
        env = dict(os.environ)
        env.update(keys.tako_env())
        env.update({"SERVER_HOST": th[0].ip, "NO_COLOR": "1", "XDG_RUNTIME_DIR": ctl,
                    "TAKO_HOME": os.path.join(work, "home")})
        outs = []
        deploy = lambda: outs.append(  # noqa: E731
            run([TAKO, "deploy", "production"], env=env, cwd=proj).stdout)
        res = {"tako": [], "rsync+ssh": []}
        res["tako"].append(measure(th, deploy))
        res["tako"].append(measure(th, deploy))
        changed = append_change(proj)
        res["tako"].append(measure(th, deploy))
        # What each step did, so a figure never stands for another step.
        if outs[1].count("nothing sent") != n or outs[1].count("nothing changed") != n:
            raise RuntimeError("(b) was not a no-change deploy:\n" + outs[1])
        if outs[2].count("sent 1 of ") != n:
            raise RuntimeError("(c) did not send exactly one file per server:\n" + outs[2])

        base = os.path.join(work, "rsync-app")
        shutil.copytree(app, base, symlinks=True)
        ssh = ["ssh", "-F", keys.ssh_config, "-i", keys.client_key, "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=accept-new"]

        def sync_one(h, errs):
            try:
                run(["rsync", "-a", "--delete", "-e", " ".join(ssh), base + "/",
                     "root@%s:/var/lib/tako/app/" % h.ip])
                run(ssh + ["root@" + h.ip, "true"])
            except Exception as e:  # noqa: BLE001 — reported by sync()
                errs.append(e)

        def sync():
            errs = []
            ts = [threading.Thread(target=sync_one, args=(h, errs)) for h in bh]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            if errs:
                raise errs[0]

        res["rsync+ssh"].append(measure(bh, sync))
        res["rsync+ssh"].append(measure(bh, sync))
        append_change(base)
        res["rsync+ssh"].append(measure(bh, sync))

        def floor():
            ts = [threading.Thread(target=run, args=(ssh + ["root@" + h.ip, "true"],))
                  for h in bh]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        res[FLOOR] = measure(bh, floor)
        res["changed"] = changed
        return res
    finally:
        net.destroy()  # kills every process in the hosts' namespaces: sshd, takod, replicas
        kill_ssh_masters(ctl)
        shutil.rmtree(ctl, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def med(xs):
    return statistics.median(xs)


def fmt_time(xs):
    return "%.2f (%.2f–%.2f)" % (med(xs), min(xs), max(xs))


def fmt_bytes(xs):
    return "{:,} ({:,}–{:,})".format(int(med(xs)), int(min(xs)), int(max(xs)))


def fmt_conns(per_round):
    """Per host, the median over rounds of SYNs to :22; 'x' if rounds differed."""
    n = len(per_round[0])
    cols = []
    for i in range(n):
        vals = sorted({r[i] for r in per_round})
        cols.append(str(vals[0]) if len(vals) == 1 else "%d–%d" % (vals[0], vals[-1]))
    return " / ".join(cols)


def sigterm(_sig, _frm):
    raise SystemExit("terminated")


def main():
    signal.signal(signal.SIGTERM, sigterm)
    args = sys.argv[1:]
    rounds = int(args[0]) if args else 3
    counts = [int(a) for a in args[1:]] or [1, 3]
    load0 = os.getloadavg()
    start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    keys = hosts.Keys()
    d = tempfile.mkdtemp(prefix="tako-bench-app-")
    results = {n: [] for n in counts}
    try:
        app = os.path.join(d, "app")
        shutil.copytree(os.path.join(ROOT, "examples", "scaling"), app,
                        ignore=shutil.ignore_patterns("node_modules", ".env"))
        run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=app)
        files = sum(len(f) for _, _, f in os.walk(app))
        size = sum(os.path.getsize(os.path.join(p, n)) for p, _, f in os.walk(app) for n in f)
        for r in range(rounds):  # interleaved: a burst of outside load hits both sizes
            for n in counts:
                print("round %d, %d host(s)…" % (r + 1, n), file=sys.stderr, flush=True)
                results[n].append(one_round(keys, app, n))
    finally:
        shutil.rmtree(d, ignore_errors=True)
        keys.close()
    load1 = os.getloadavg()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    changed = results[counts[0]][0]["changed"]

    print("%s, tako built from %s; load average at start %.2f %.2f %.2f, at end %.2f %.2f %.2f "
          "(%d CPUs)\n" % ((start, commit) + load0 + load1 + (os.cpu_count(),)))
    print("App: examples/scaling with node_modules: %d files, %d bytes; index.js after the "
          "change: %d bytes. %d rounds, median (min–max); bytes are summed over the hosts; "
          "connections are SYNs to port 22 per host (every round the same unless a range "
          "is shown)\n" % (files, size, changed, rounds))
    head = "| step | tool |"
    rule = "|---|---|"
    for n in counts:
        h = "%d host%s" % (n, "" if n == 1 else "s")
        head += " %s: wall s | %s: bytes sent | %s: TCP conns |" % (h, h, h)
        rule += "---:|---:|:--:|"
    print(head)
    print(rule)
    for i, step in enumerate(STEPS):
        for tool in TOOLS:
            row = "| %s | %s |" % (step, tool)
            for n in counts:
                rs = results[n]
                row += " %s | %s | %s |" % (fmt_time([r[tool][i][0] for r in rs]),
                                            fmt_bytes([r[tool][i][1] for r in rs]),
                                            fmt_conns([r[tool][i][2] for r in rs]))
            print(row)
    row = "| floor | %s |" % FLOOR
    for n in counts:
        rs = results[n]
        row += " %s | %s | %s |" % (fmt_time([r[FLOOR][0] for r in rs]),
                                    fmt_bytes([r[FLOOR][1] for r in rs]),
                                    fmt_conns([r[FLOOR][2] for r in rs]))
    print(row)

    print("\n| goal | hosts | measured (median) | met |")
    print("|---|---:|---|:--:|")
    for n in counts:
        rs = results[n]
        b = med([r["tako"][1][1] for r in rs]) / n
        t = med([r["tako"][1][0] for r in rs])
        c = med([r["tako"][2][1] for r in rs]) / n
        conns = {x for r in rs for step in r["tako"] for x in step[2]}
        print("| (b) under 10 KB sent per server | %d | %s bytes per server | %s |"
              % (n, "{:,}".format(int(b)), "yes" if b < 10000 else "no"))
        # (b) rolls nothing out (checked in one_round): no health checks to add.
        print("| (b) under 1 s plus health checks (none: nothing rolled out) | %d | %.2f s | %s |"
              % (n, t, "yes" if t < 1 else "no"))
        print("| (c) under 2× the changed file (%d B) per server | %d | %s bytes per server "
              "= %.2f× | %s |" % (changed, n, "{:,}".format(int(c)), c / changed,
                                  "yes" if c < 2 * changed else "no"))
        print("| one TCP connection per server per command | %d | %s per server | %s |"
              % (n, "/".join(str(x) for x in sorted(conns)),
                 "yes" if conns == {1} else "no"))


if __name__ == "__main__":
    main()
