#!/usr/bin/env python3
"""report.py — turn the raw wrk outputs and memory samples of bench/run.sh
into the markdown result table.

  report.py --dir RUN_DIR --targets "tako haproxy nginx caddy direct" \
            --modes "keepalive close"

RUN_DIR holds facts.txt ("key: value" lines), wrk/<mode>/<target>/<round>.txt,
mem/<target>.json (from idle_conns.py) and optional <target>.status files
("not available: why"). Markdown goes to stdout.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

NAMES = {
    "tako": "tako proxy (--threads 1)",
    "haproxy": "HAProxy (nbthread 1)",
    "nginx": "nginx (1 worker)",
    "caddy": "Caddy (GOMAXPROCS=1)",
    "direct": "direct to one backend",
}
MODE_TITLES = {
    "keepalive": "Keep-alive (wrk -t1 -c64)",
    "close": "Connection: close (wrk -t1 -c64 -H 'Connection: close')",
}
UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1000000.0, "m": 60000000.0}


def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not m:
        return None
    return float(m.group(1)) * UNIT_US[m.group(2)]


def parse_wrk(path):
    """The numbers of one wrk --latency run, or None when it has none."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    r = {}
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if not m:
        return None
    r["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M)
        r["p" + pct] = to_us(m.group(1)) if m else None
    m = re.search(r"^\s+(\d+) requests in", text, re.M)
    r["requests"] = int(m.group(1)) if m else 0
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errs += sum(int(x) for x in m.groups())
    r["errors"] = errs
    m = re.search(r"^Server CPU ticks: (\d+) at (\d+) per second", text, re.M)
    r["cpu_us"] = (int(m.group(1)) * 1e6 / int(m.group(2)) / r["requests"]
                   if m and r["requests"] else None)
    return r


def fmt_us(us):
    if us is None:
        return "–"
    if us >= 1000:
        return "%.2f ms" % (us / 1000.0)
    return "%.0f µs" % us


def fmt_k(rps):
    return "%.1fk" % (rps / 1000.0)


def fmt_bytes(n):
    if n is None:
        return "–"
    if abs(n) >= 1024 * 1024:
        return "%.1f MiB" % (n / 1048576.0)
    if abs(n) >= 1024:
        return "%.1f KiB" % (n / 1024.0)
    return "%.0f B" % n


def status_of(d, target):
    p = os.path.join(d, target + ".status")
    if os.path.exists(p):
        with open(p) as f:
            return f.read().strip()
    return None


def mode_stats(d, mode, target):
    runs = []
    for p in sorted(glob.glob(os.path.join(d, "wrk", mode, target, "*.txt"))):
        r = parse_wrk(p)
        if r:
            r["round"] = os.path.basename(p)[:-4]
            runs.append(r)
    if not runs:
        return None
    rps = [r["rps"] for r in runs]
    p50 = [r["p50"] for r in runs if r["p50"] is not None]
    p99 = [r["p99"] for r in runs if r["p99"] is not None]
    cpu = [r["cpu_us"] for r in runs if r["cpu_us"] is not None]
    return {
        "n": len(runs),
        "median": statistics.median(rps),
        "min": min(rps),
        "max": max(rps),
        "p50": statistics.median(p50) if p50 else None,
        "p99": statistics.median(p99) if p99 else None,
        "cpu_us": statistics.median(cpu) if cpu else None,
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "by_round": {r["round"]: r["rps"] for r in runs},
    }


def paired_ratios(a, b):
    """a/b req/s per round, for the rounds both have: they ran minutes apart
    at most, so a burst of outside load hits both."""
    return [a["by_round"][k] / b["by_round"][k] for k in a["by_round"] if k in b["by_round"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--targets", default="tako haproxy nginx caddy direct")
    ap.add_argument("--modes", default="keepalive close")
    a = ap.parse_args()
    targets, modes = a.targets.split(), a.modes.split()
    out = []
    w = out.append

    facts = []
    fp = os.path.join(a.dir, "facts.txt")
    if os.path.exists(fp):
        with open(fp) as f:
            facts = [l.rstrip("\n") for l in f if l.strip()]

    w("# tako bench — proxies side by side")
    w("")
    for l in facts:
        k, _, v = l.partition(":")
        w("- **%s**: %s" % (k.strip(), v.strip()))
    w("")

    summary = {}
    for mode in modes:
        stats = {t: mode_stats(a.dir, mode, t) for t in targets}
        summary[mode] = stats
        ha = stats.get("haproxy")
        w("## " + MODE_TITLES.get(mode, mode))
        w("")
        w("| target | req/s (median) | min – max | p50 | p99 | × HAProxy | server CPU µs/req | HAProxy CPU ÷ this | errors / requests |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            s = stats[t]
            name = NAMES.get(t, t)
            if s is None:
                why = status_of(a.dir, t) or "no result"
                w("| %s | %s | | | | | | | |" % (name, why))
                continue
            ratio = "%.2f×" % (s["median"] / ha["median"]) if ha else "–"
            cpu = "%.1f" % s["cpu_us"] if s["cpu_us"] is not None else "–"
            eff = ("%.2f×" % (ha["cpu_us"] / s["cpu_us"])
                   if t != "direct" and ha and ha["cpu_us"] and s["cpu_us"] else "–")
            w("| %s | %s | %s – %s | %s | %s | %s | %s | %s | %d / %d |" % (
                name, fmt_k(s["median"]), fmt_k(s["min"]), fmt_k(s["max"]),
                fmt_us(s["p50"]), fmt_us(s["p99"]), ratio, cpu, eff, s["errors"], s["requests"]))
        w("")
        rounds = "/".join(sorted({str(s["n"]) for s in stats.values() if s})) or "0"
        w("req/s: median over %s rounds (min – max across rounds); p50/p99: median across "
          "rounds of each round's wrk latency percentile; server CPU µs/req: user + system "
          "CPU time of the proxy's process tree (direct: the backend's) during the run, per "
          "request, median across rounds — less sensitive to other load on the machine "
          "than req/s; HAProxy CPU ÷ this: how many times less CPU per request than "
          "HAProxy." % rounds)
        w("")

    mem = {}
    for t in targets:
        p = os.path.join(a.dir, "mem", t + ".json")
        if os.path.exists(p):
            with open(p) as f:
                try:
                    mem[t] = json.load(f)
                except ValueError:
                    mem[t] = {"error": "unreadable result"}
    if not mem:
        w("Idle-connection memory test: not run (IDLE_CONNS=0).")
        w("")
    else:
        w("## Idle keep-alive client connections: memory")
        w("")
        w("| target | RSS before | RSS after | connections still open | bytes per idle connection | × nginx |")
        w("|---|---:|---:|---:|---:|---:|")
        ng = mem.get("nginx", {}).get("bytes_per_conn")
        for t in targets:
            if t == "direct":
                continue
            m = mem.get(t)
            name = NAMES.get(t, t)
            if not m or "error" in m:
                why = (m or {}).get("error") or status_of(a.dir, t) or "no result"
                w("| %s | %s | | | | |" % (name, why))
                continue
            bpc = m.get("bytes_per_conn")
            ratio = "%.2f×" % (bpc / ng) if (bpc is not None and ng) else "–"
            w("| %s | %s | %s | %d / %d | %s | %s |" % (
                name, fmt_bytes(m["rss_before"]), fmt_bytes(m["rss_after"]),
                m["still_open"], m["conns_wanted"],
                "%.0f B" % bpc if bpc is not None else "–", ratio))
        w("")
        w("RSS is VmRSS summed over the proxy's process tree (nginx: master + worker), "
          "sampled after 100 warm-up requests and again after every connection has "
          "completed one GET and sits idle.")
        w("")

    # The goals of the proxy, checked against this run.
    ka, cl = summary.get("keepalive", {}), summary.get("close", {})
    t_ka, h_ka = ka.get("tako"), ka.get("haproxy")
    t_cl, h_cl = cl.get("tako"), cl.get("haproxy")
    t_m, n_m = mem.get("tako", {}).get("bytes_per_conn"), mem.get("nginx", {}).get("bytes_per_conn")
    checks = []
    def ratio_text(t, h):
        r = t["median"] / h["median"]
        pr = paired_ratios(t, h)
        txt = "%.2f× (per round %.2f – %.2f" % (r, min(pr), max(pr)) if pr else "%.2f× (" % r
        if t["cpu_us"] and h["cpu_us"]:
            txt += "; CPU per request %.2f× less" % (h["cpu_us"] / t["cpu_us"])
        return r, txt + ")"

    if t_ka and h_ka:
        r, txt = ratio_text(t_ka, h_ka)
        checks.append(("keep-alive req/s ≥ 1.25× HAProxy", txt, r >= 1.25))
        if t_ka["p99"] is not None and h_ka["p99"] is not None:
            checks.append(("keep-alive p99 ≤ HAProxy's", "%s vs %s" % (fmt_us(t_ka["p99"]), fmt_us(h_ka["p99"])),
                           t_ka["p99"] <= h_ka["p99"]))
    if t_cl and h_cl:
        r, txt = ratio_text(t_cl, h_cl)
        checks.append(("Connection: close req/s ≥ 1.0× HAProxy", txt, r >= 1.0))
    if t_m is not None and n_m:
        checks.append(("bytes per idle connection ≤ nginx's", "%.0f B vs %.0f B" % (t_m, n_m), t_m <= n_m))
    if checks:
        w("## tako against its goals (this run)")
        w("")
        w("| goal | measured | met |")
        w("|---|---:|:--:|")
        for g, v, ok in checks:
            w("| %s | %s | %s |" % (g, v, "yes" if ok else "**no**"))
        w("")

    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
