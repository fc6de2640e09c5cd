"""Test app: forks children in its group and one daemon that leaves the
group and session (double fork + setsid) and ignores SIGTERM; writes every
pid to argv[1]. With argv[2] == "exit" the parent exits after forking."""
import os
import signal
import sys
import time

pidfile = sys.argv[1]
mode = sys.argv[2] if len(sys.argv) > 2 else "stay"


def linger():
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(0)


pids = [os.getpid()]
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        linger()
    pids.append(pid)

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setsid()
    grand = os.fork()
    if grand == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(w, b"%d\n" % os.getpid())
        linger()
    os._exit(0)
os.waitpid(pid, 0)
daemon = int(os.read(r, 64).split()[0])
pids.append(daemon)

with open(pidfile + ".tmp", "w") as f:
    f.write(" ".join(str(p) for p in pids))
os.rename(pidfile + ".tmp", pidfile)
print("forker: pids %s" % " ".join(str(p) for p in pids), flush=True)
if mode == "exit":
    sys.exit(4)
linger()
