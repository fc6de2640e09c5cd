"""The process runtime, end to end: real replicas started through the
runtime API by tests/drivers/rt_driver (a small program linking libtako),
with real processes, real signals and real files. Assertions are on states,
counts and orders, never on how long something took."""
import json
import os
import queue
import signal
import stat
import subprocess
import threading
import time

import pytest

from conftest import ROOT, TAKO, WHOAMI, free_port, http_json, run_tako, wait_for, wait_port

BUILD = "build/san" if "build/san" in os.environ.get("TAKO_BIN", "") else "build/rel"
RT_DRIVER = os.environ.get("RT_DRIVER_BIN", os.path.join(ROOT, BUILD, "tests", "rt_driver"))
APPS = os.path.join(ROOT, "tests", "e2e", "apps")
PY = "/usr/bin/python3"


def app(name, *args):
    return [PY, os.path.join(APPS, name)] + [str(a) for a in args]


def alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()[0]
        return st not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def read_state(home, name):
    d = {}
    with open(os.path.join(home, "replicas", name, "state")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            d[k] = v
    return d


class Driver:
    """One rt_driver process: commands in, JSON replies and events out."""

    def __init__(self, procs, home, prefix=(), env=None, driver=RT_DRIVER, preexec_fn=None):
        self.home = home
        # A variable of the driver's own that must not reach the replicas.
        env = dict(os.environ, TAKO_RT_LEAK_CHECK="1", **(env or {}))
        self.p = subprocess.Popen(list(prefix) + [driver, home], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=None, start_new_session=True,
                                  text=True, bufsize=1, env=env, preexec_fn=preexec_fn)
        procs.procs.append(self.p)  # stopped by PID at teardown like the others
        self.replies = queue.Queue()
        self.events = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            msg = json.loads(line)
            if msg["type"] == "reply":
                self.replies.put(msg)
            else:
                with self.lock:
                    self.events.append(msg)

    def cmd(self, line, timeout=15):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.replies.get(timeout=timeout)

    def start(self, argv, project="p", service="web", index=1, **kw):
        spec = {"project": project, "service": service, "index": index, "argv": argv,
                "grace_ms": kw.pop("grace_ms", 2000)}
        spec.update(kw)
        return self.cmd("start " + json.dumps(spec))

    def info(self, name):
        r = self.cmd("info " + name)
        assert r["ok"], r
        return r["info"]

    def logs(self, name, n=0, since=0):
        r = self.cmd("logs %s %d %d" % (name, n, since))
        assert r["ok"], r
        return r["lines"]

    def evs(self, name=None, type_="event"):
        with self.lock:
            return [e for e in self.events if e["type"] == type_ and (name is None or e["name"] == name)]

    def wait_state(self, name, state, timeout=20):
        return wait_for(lambda: [e for e in self.evs(name) if e["new"] == state], timeout=timeout,
                        what="%s to become %s" % (name, state))

    def wait_stopped(self, name, timeout=20):
        wait_for(lambda: self.evs(name, "stopped"), timeout=timeout, what=name + " stopped")

    def quit(self):
        self.cmd("quit")
        self.p.wait(10)


def stop_replicas(home):
    """Teardown: stop every replica's supervisor under home by PID (SIGTERM
    runs its stop sequence), then SIGKILL anything left by PID."""
    root = os.path.join(home, "replicas")
    if not os.path.isdir(root):
        return
    sts = []
    for name in os.listdir(root):
        try:
            sts.append(read_state(home, name))
        except OSError:
            continue
    for st in sts:
        if alive(int(st.get("shim_pid", 0) or 0)):
            os.kill(int(st["shim_pid"]), signal.SIGTERM)
    deadline = time.monotonic() + 10
    for st in sts:
        pid = int(st.get("shim_pid", 0) or 0)
        while pid and alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in (pid, int(st.get("app_pid", 0) or 0)):
            if p and alive(p):
                os.kill(p, signal.SIGKILL)


@pytest.fixture
def rt(procs, tako_home):
    d = Driver(procs, tako_home)
    yield d
    stop_replicas(tako_home)


def test_start_env_hostname_cwd_and_logs(rt, tmp_path):
    port = free_port()
    r = rt.start(app("hostname.py"), project="scaling", service="web", index=2, port=port,
                 revision="r7", cwd=str(tmp_path), env={"FOO": "bar", "PORT": "1"})
    assert r == {"type": "reply", "ok": True, "name": "scaling-web-2"}
    rt.wait_state("scaling-web-2", "running")
    wait_for(lambda: any("tick" in l for l in rt.logs("scaling-web-2")))
    lines = rt.logs("scaling-web-2")
    text = "\n".join(lines)
    # Own UTS namespace: gethostname() inside the replica is its name.
    assert " stdout hostname=scaling-web-2" in text
    assert " stdout cwd=%s" % tmp_path in text
    for kv in ("PORT=%d" % port, "HOSTNAME=scaling-web-2", "TAKO_PROJECT=scaling",
               "TAKO_SERVICE=web", "TAKO_REPLICA=2", "TAKO_REVISION=r7", "FOO=bar"):
        assert " stdout env " + kv in text, kv
    # Every line: "<ISO-8601 UTC ms> stdout|stderr <text>".
    for l in lines:
        ts, stream, _ = l.split(" ", 2)
        assert len(ts) == 24 and ts.endswith("Z") and ts[10] == "T", l
        assert stream in ("stdout", "stderr")
    # Only the service env, the runtime's variables and a few basics (PATH…).
    assert "TAKO_RT_LEAK_CHECK" not in text
    assert " stdout env PATH=" in text
    # No fd of the runtime (log, lock, notify pipe, the driver's own pipes)
    # leaks into the app: stdin is /dev/null, stdout/stderr are its pipes.
    fds = {int(l.split()[3]): l.split()[5] for l in lines if " stdout fd " in l}
    assert fds[0] == "/dev/null"
    assert fds[1].startswith("pipe:") and fds[2].startswith("pipe:") and fds[1] != fds[2]
    assert sorted(fds) == [0, 1, 2], fds
    info = rt.info("scaling-web-2")
    assert info["state"] == "running" and info["hostname_shared"] is False
    assert info["port"] == port and info["revision"] == "r7" and alive(info["pid"])
    # Same name twice: refused, nothing duplicated.
    r2 = rt.start(app("hostname.py"), project="scaling", service="web", index=2)
    assert r2["ok"] is False and "already running" in r2["error"]


def test_without_namespace_rights_the_hostname_is_shared_but_env_is_set(procs, tako_home):
    # Drop CAP_SYS_ADMIN: a private UTS namespace is then refused.
    d = Driver(procs, tako_home,
               prefix=["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"])
    try:
        assert d.start(app("hostname.py"), index=4)["ok"]
        d.wait_state("p-web-4", "running")
        wait_for(lambda: any(" stdout env " in l for l in d.logs("p-web-4")))
        text = "\n".join(d.logs("p-web-4"))
        assert " stdout hostname=%s" % os.uname().nodename in text
        assert " stdout env HOSTNAME=p-web-4" in text
        assert d.info("p-web-4")["hostname_shared"] is True
    finally:
        stop_replicas(tako_home)


def test_an_unprivileged_user_gets_its_own_hostname_through_a_user_namespace(procs):
    import shutil
    import tempfile
    home = tempfile.mkdtemp(prefix="tako-home-nobody-")
    # Copies the user can reach whatever the permissions of the checkout.
    driver = shutil.copy(RT_DRIVER, os.path.join(home, "rt_driver"))
    script = shutil.copy(os.path.join(APPS, "hostname.py"), os.path.join(home, "hostname.py"))
    for p in (home, driver, script):
        os.chown(p, 65534, 65534)
    d = Driver(procs, home, prefix=["setpriv", "--reuid=65534", "--regid=65534",
                                    "--clear-groups", "--"], driver=driver)
    try:
        assert d.start([PY, script], index=6)["ok"]
        d.wait_state("p-web-6", "running")
        wait_for(lambda: any(" stdout env " in l for l in d.logs("p-web-6")))
        text = "\n".join(d.logs("p-web-6"))
        assert " stdout hostname=p-web-6" in text
        # Still the same user inside, not a fake root.
        assert " stdout uid=65534 gid=65534" in text
        assert d.info("p-web-6")["hostname_shared"] is False
        d.cmd("stop p-web-6")
        d.wait_stopped("p-web-6")
    finally:
        stop_replicas(home)
        subprocess.run(["rm", "-rf", home])


def test_whoami_replica_serves_with_its_name(rt):
    port = free_port()
    assert rt.start([os.path.abspath(WHOAMI)], port=port, index=3)["ok"]
    rt.wait_state("p-web-3", "running")
    wait_port(port)
    status, body = http_json(port, "/api/instance")
    assert status == 200 and body["hostname"] == "p-web-3" and body["port"] == port
    assert body["pid"] == rt.info("p-web-3")["pid"]
    rt.cmd("stop p-web-3")
    rt.wait_stopped("p-web-3")
    info = rt.info("p-web-3")
    assert info["state"] == "stopped" and info["pid"] == 0


def test_exec_failures_are_reported_with_their_cause(rt, tmp_path):
    r = rt.start(["tako-no-such-command-xyz"], index=1)
    assert r["ok"]
    ev = rt.wait_state("p-web-1", "failed")[0]
    assert "No such file or directory" in ev["last_error"]
    assert "tako-no-such-command-xyz" in ev["last_error"]
    notexec = tmp_path / "notexec"
    notexec.write_text("#!/bin/sh\necho hi\n")
    os.chmod(notexec, stat.S_IRUSR | stat.S_IWUSR)
    assert rt.start([str(notexec)], index=2)["ok"]
    ev = rt.wait_state("p-web-2", "failed")[0]
    assert "Permission denied" in ev["last_error"]
    assert rt.start(["/bin/true"], index=3, cwd=str(tmp_path / "missing-dir"))["ok"]
    ev = rt.wait_state("p-web-3", "failed")[0]
    assert "cannot chdir" in ev["last_error"]
    # Failed replicas are not restarted, and the cause is in their log too.
    for n in ("p-web-1", "p-web-2", "p-web-3"):
        assert rt.info(n)["restarts"] == 0
    assert any("No such file or directory" in l for l in rt.logs("p-web-1"))


def test_bad_specs_are_refused_and_start_nothing(rt, tako_home):
    r = rt.start(["/bin/true"], project="bad/name")
    assert r["ok"] is False and "project name" in r["error"]
    r = rt.start([], index=1)
    assert r["ok"] is False and "empty command" in r["error"]
    r = rt.start(["/bin/true"], env={"A=B": "x"})
    assert r["ok"] is False and "environment variable" in r["error"]
    r = rt.start(["/bin/true"], cwd="relative/dir")
    assert r["ok"] is False and "'relative/dir' is not an absolute path" in r["error"]
    assert not os.path.exists(os.path.join(tako_home, "replicas"))


def test_stop_kills_an_app_that_ignores_sigterm_after_the_grace_period(rt):
    assert rt.start(app("ignore_term.py"), grace_ms=1000)["ok"]
    rt.wait_state("p-web-1", "running")
    wait_for(lambda: any("ready" in l for l in rt.logs("p-web-1")))
    pid = rt.info("p-web-1")["pid"]
    rt.cmd("stop p-web-1")
    rt.wait_stopped("p-web-1")
    assert not alive(pid)
    states = [e["new"] for e in rt.evs("p-web-1")]
    assert states == ["starting", "running", "stopping", "stopped"]
    info = rt.info("p-web-1")
    assert info["last_exit_status"] == signal.SIGKILL  # waitpid form: killed by 9
    lines = rt.logs("p-web-1")
    got = [i for i, l in enumerate(lines) if "got SIGTERM" in l]
    over = [i for i, l in enumerate(lines) if "grace period over" in l]
    assert got and over and got[0] < over[0]
    # One SIGTERM: many apps take a second one as "quit now, skip the
    # graceful part".
    assert len(got) == 1, lines


def test_a_stopped_app_still_gets_its_sigterm(rt):
    # SIGSTOPped apps would sleep through SIGTERM and wait for the SIGKILL.
    assert rt.start(app("hostname.py"), grace_ms=60000)["ok"]
    rt.wait_state("p-web-1", "running")
    pid = rt.info("p-web-1")["pid"]
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] == "T")
    rt.cmd("stop p-web-1")
    rt.wait_stopped("p-web-1")
    assert rt.info("p-web-1")["last_exit_status"] == signal.SIGTERM
    assert not any("grace period over" in l for l in rt.logs("p-web-1"))


def test_no_process_of_a_replica_outlives_it(rt, tmp_path):
    pidfile = str(tmp_path / "pids")
    assert rt.start(app("forker.py", pidfile), grace_ms=1000)["ok"]
    wait_for(lambda: os.path.exists(pidfile))
    pids = [int(p) for p in open(pidfile).read().split()]
    assert len(pids) == 4 and all(alive(p) for p in pids)
    # The daemon left the app's process group and session.
    assert os.getpgid(pids[3]) != os.getpgid(pids[0])
    rt.cmd("stop p-web-1")
    rt.wait_stopped("p-web-1")
    assert [p for p in pids if alive(p)] == []


def test_leftovers_die_with_an_app_that_exits_by_itself(rt, tmp_path):
    pidfile = str(tmp_path / "pids")
    assert rt.start(app("forker.py", pidfile, "exit"), restart="never")["ok"]
    ev = rt.wait_state("p-web-1", "exited")[0]
    assert "exited with status 4" in ev["last_error"]
    pids = [int(p) for p in open(pidfile).read().split()]
    assert [p for p in pids if alive(p)] == []
    assert rt.info("p-web-1")["restarts"] == 0


def test_logs_rotate_by_size_and_tail_reads_across_files(rt, tako_home):
    n, size = 30000, 100
    assert rt.start(app("flood.py", n, size), log_max=256 * 1024, log_files=3)["ok"]
    wait_for(lambda: any("flood: done" in l for l in rt.logs("p-web-1", 5)), timeout=60)
    d = os.path.join(tako_home, "replicas", "p-web-1")
    logs = sorted(f for f in os.listdir(d) if f.startswith("output.log"))
    assert logs == ["output.log", "output.log.1", "output.log.2"]
    for f in logs:
        assert os.path.getsize(os.path.join(d, f)) <= 256 * 1024
    # The newest lines are all there, in order, and the oldest were rotated away.
    everything = rt.logs("p-web-1")
    nums = [int(l.split()[3]) for l in everything if " stdout line " in l]
    assert nums == list(range(nums[0], n))
    assert nums[0] > 0
    tail = rt.logs("p-web-1", 3)
    assert len(tail) == 3 and "flood: done" in tail[-1]
    assert tail[-2].split()[3] == "%09d" % (n - 1)
    # since: nothing is newer than a time in the future.
    assert rt.logs("p-web-1", 0, int(time.time() * 1000) + 3600_000) == []


def test_an_endless_flood_neither_blocks_a_stop_nor_fills_the_disk(rt, tako_home):
    assert rt.start(["/usr/bin/yes", "flood " * 20], log_max=64 * 1024, log_files=2)["ok"]
    rt.wait_state("p-web-1", "running")
    d = os.path.join(tako_home, "replicas", "p-web-1")
    wait_for(lambda: os.path.exists(os.path.join(d, "output.log.1")))
    rt.cmd("stop p-web-1")
    rt.wait_stopped("p-web-1")
    assert sorted(f for f in os.listdir(d) if f.startswith("output.log")) == \
        ["output.log", "output.log.1"]
    for f in ("output.log", "output.log.1"):
        assert os.path.getsize(os.path.join(d, f)) <= 64 * 1024


def test_restart_policy_backoff_doubles_and_crashloop_is_visible(rt):
    assert rt.start(app("exit_now.py", 3), restart="always")["ok"]
    wait_for(lambda: [e for e in rt.evs("p-web-1") if e["new"] == "crashloop"], timeout=30)
    waits = [e for e in rt.evs("p-web-1") if e["new"] in ("backoff", "crashloop")]
    assert [e["new"] for e in waits[:3]] == ["backoff", "backoff", "crashloop"]
    assert [e["backoff_ms"] for e in waits[:3]] == [1000, 2000, 4000]
    assert [e["restarts"] for e in waits[:3]] == [0, 1, 2]
    last = waits[2]
    assert "exited with status 3 (3 in a row)" in last["last_error"]
    # The last output line, without its time and stream.
    assert "; last output: exit_now: " in last["last_error"]
    assert last["last_exit_status"] >> 8 == 3
    # A stop during the backoff wait ends it at once.
    rt.cmd("stop p-web-1")
    rt.wait_stopped("p-web-1")
    assert rt.info("p-web-1")["state"] == "stopped"


def test_restart_policy_on_failure_and_never(rt):
    assert rt.start(app("exit_now.py", 0), restart="on-failure", index=1)["ok"]
    assert rt.start(app("exit_now.py", 2), restart="never", index=2)["ok"]
    assert rt.start(app("exit_now.py", 2), restart="on-failure", index=3)["ok"]
    rt.wait_state("p-web-1", "exited")
    rt.wait_state("p-web-2", "exited")
    rt.wait_state("p-web-3", "backoff")
    assert rt.info("p-web-1")["restarts"] == 0
    assert rt.info("p-web-2")["restarts"] == 0
    assert "exited with status 2" in rt.info("p-web-2")["last_error"]
    wait_for(lambda: rt.info("p-web-3")["restarts"] >= 1)


def test_stats_include_children(rt):
    assert rt.start(app("hog.py", 64))["ok"]
    rt.wait_state("p-web-1", "running")
    wait_for(lambda: any("child holds" in l for l in rt.logs("p-web-1")))
    info = wait_for(lambda: (lambda i: i if i["cpu_percent"] > 0 else None)(rt.info("p-web-1")))
    assert info["rss_bytes"] >= 64 * 1024 * 1024
    assert info["uptime_ms"] > 0 and info["started_at_ms"] > 0


def test_restart_and_liveness(rt):
    assert rt.start(app("hostname.py"))["ok"]
    rt.wait_state("p-web-1", "running")
    pid1 = rt.info("p-web-1")["pid"]
    rt.cmd("restart p-web-1")
    wait_for(lambda: len(rt.wait_state("p-web-1", "running")) == 2)
    info = rt.info("p-web-1")
    assert info["restarts"] == 1 and info["pid"] != pid1 and not alive(pid1)
    # Failures inside the start period do not count.
    for _ in range(5):
        rt.cmd("health p-web-1 fail 3 600000")
    assert rt.info("p-web-1")["restarts"] == 1
    # A success resets the count: fail, fail, ok, fail, fail → no restart.
    for word in ("fail", "fail", "ok", "fail", "fail"):
        rt.cmd("health p-web-1 %s 3 0" % word)
    assert rt.info("p-web-1")["restarts"] == 1
    rt.cmd("health p-web-1 fail 3 0")
    wait_for(lambda: len(rt.wait_state("p-web-1", "running")) == 3)
    info = rt.info("p-web-1")
    assert info["restarts"] == 2
    assert "3 failed health checks" in info["last_error"]


def test_adoption_after_kill_9_of_the_driver(procs, tako_home, rt):
    for i in (1, 2):
        assert rt.start(app("hostname.py"), index=i)["ok"]
        rt.wait_state("p-web-%d" % i, "running")
    before = {n: rt.info(n) for n in ("p-web-1", "p-web-2")}
    os.kill(rt.p.pid, signal.SIGKILL)
    rt.p.wait(10)
    # Replicas and their log capture live on without the driver.
    log1 = os.path.join(tako_home, "replicas", "p-web-1", "output.log")

    def count():
        with open(log1) as f:
            return len(f.readlines())
    n1 = count()
    wait_for(lambda: count() > n1 + 5)
    assert all(alive(i["pid"]) for i in before.values())
    d2 = Driver(procs, tako_home)
    # Not adopted yet: starting the same replica again is refused.
    r = d2.start(app("hostname.py"), index=1)
    assert r["ok"] is False and "already running" in r["error"]
    r = d2.cmd("adopt")
    assert sorted(r["names"]) == ["p-web-1", "p-web-2"]
    for n, old in before.items():
        info = d2.info(n)
        assert info["state"] == "running" and info["pid"] == old["pid"]
        assert info["supervisor_pid"] == old["supervisor_pid"]
    # A second adopt finds nothing new: never duplicated.
    assert d2.cmd("adopt")["names"] == []
    # The adopted replica is fully managed: a crash of its app is seen...
    os.kill(before["p-web-2"]["pid"], signal.SIGKILL)
    d2.wait_state("p-web-2", "backoff")
    # (adoption itself reported the first starting → running)
    wait_for(lambda: len(d2.wait_state("p-web-2", "running")) == 2)
    assert d2.info("p-web-2")["restarts"] == 1
    # ...and a stop stops it.
    d2.cmd("stop p-web-1")
    d2.wait_stopped("p-web-1")
    assert not alive(before["p-web-1"]["pid"])
    assert not alive(before["p-web-1"]["supervisor_pid"])


def test_adoption_cleans_up_after_a_killed_supervisor(procs, tako_home, rt):
    assert rt.start(app("hostname.py"))["ok"]
    rt.wait_state("p-web-1", "running")
    info = rt.info("p-web-1")
    rt.quit()
    os.kill(info["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not alive(info["supervisor_pid"]))
    d2 = Driver(procs, tako_home)
    assert d2.cmd("adopt")["names"] == []
    # Its app is not left orphaned, and the name is free again.
    wait_for(lambda: not alive(info["pid"]))
    assert d2.start(app("hostname.py"))["ok"]
    d2.wait_state("p-web-1", "running")


def test_tako_shim_is_the_supervisor_takod_uses(procs, tako_home):
    # takod runs `tako shim`; the hidden command is not listed in the usage.
    assert "shim" not in run_tako(["--help"]).stdout
    d = Driver(procs, tako_home, env={"RT_SHIM_EXE": TAKO})
    try:
        assert d.start(app("hostname.py"), index=5)["ok"]
        d.wait_state("p-web-5", "running")
        wait_for(lambda: any("hostname=p-web-5" in l for l in d.logs("p-web-5")))
        sup = d.info("p-web-5")["supervisor_pid"]
        with open("/proc/%d/cmdline" % sup, "rb") as f:
            assert f.read().split(b"\0")[1] == b"shim"
        assert os.path.realpath("/proc/%d/exe" % sup) == os.path.realpath(TAKO)
        d.cmd("stop p-web-5")
        d.wait_stopped("p-web-5")
    finally:
        stop_replicas(tako_home)


def test_a_supervisor_that_cannot_run_is_reported(procs, tako_home):
    d = Driver(procs, tako_home, env={"RT_SHIM_EXE": "/nonexistent/tako"})
    assert d.start(app("hostname.py"))["ok"]
    ev = d.wait_state("p-web-1", "failed")[0]
    assert "the supervisor (/nonexistent/tako shim) could not start" in ev["last_error"]
    assert d.info("p-web-1")["restarts"] == 0
    # Nothing holds the replica: once forgotten, it starts again normally.
    d.cmd("forget p-web-1")
    d.quit()
    d2 = Driver(procs, tako_home)
    try:
        assert d2.start(app("hostname.py"))["ok"]
        d2.wait_state("p-web-1", "running")
    finally:
        stop_replicas(tako_home)


def test_a_stop_in_progress_is_finished_after_adoption_not_undone(procs, tako_home, rt):
    assert rt.start(app("ignore_term.py"), grace_ms=3000)["ok"]
    rt.wait_state("p-web-1", "running")
    wait_for(lambda: any("ready" in l for l in rt.logs("p-web-1")))
    info = rt.info("p-web-1")
    rt.cmd("stop p-web-1")
    rt.wait_state("p-web-1", "stopping")
    os.kill(rt.p.pid, signal.SIGKILL)
    rt.p.wait(10)
    d2 = Driver(procs, tako_home)
    # The app ignores SIGTERM, so its supervisor is still in the grace period.
    assert d2.cmd("adopt")["names"] == ["p-web-1"]
    assert d2.info("p-web-1")["state"] == "stopping"
    d2.wait_state("p-web-1", "stopped")
    assert [e["new"] for e in d2.evs("p-web-1")] == ["stopped"]
    assert d2.info("p-web-1")["restarts"] == 0
    wait_for(lambda: not alive(info["pid"]) and not alive(info["supervisor_pid"]))
    assert any("grace period over" in l for l in d2.logs("p-web-1"))


def test_exit_status_survives_a_caller_that_ignores_sigchld(procs, tako_home):
    # An ignored SIGCHLD is inherited across exec and would make the kernel
    # reap the app before its supervisor could read the status.
    d = Driver(procs, tako_home,
               preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
    try:
        assert d.start(app("exit_now.py", 3), restart="never")["ok"]
        ev = d.wait_state("p-web-1", "exited")[0]
        assert ev["last_error"] == "exited with status 3"
        assert ev["last_exit_status"] == 3 << 8
    finally:
        stop_replicas(tako_home)
