"""Test app: prints its hostname, working directory, open fds and environment, then
prints a numbered tick every 50 ms (so log capture can be observed) until stopped."""
import os
import socket
import sys
import time

print("hostname=%s" % socket.gethostname())
print("cwd=%s" % os.getcwd())
print("uid=%d gid=%d" % (os.getuid(), os.getgid()))
for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
    try:
        print("fd %d -> %s" % (fd, os.readlink("/proc/self/fd/%d" % fd)))
    except OSError:
        pass  # the directory listing's own fd, closed by now
for k in sorted(os.environ):
    print("env %s=%s" % (k, os.environ[k]))
sys.stdout.flush()
deadline = time.monotonic() + 600
i = 0
while time.monotonic() < deadline:
    print("tick %d" % i, flush=True)
    i += 1
    time.sleep(0.05)
