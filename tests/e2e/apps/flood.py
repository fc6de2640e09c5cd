"""Test app: writes argv[1] numbered lines of argv[2] bytes to stdout as fast
as it can, then says "flood: done" on stderr and waits to be stopped."""
import sys
import time

n = int(sys.argv[1])
size = int(sys.argv[2])
pad = "x" * max(0, size - 20)
out = sys.stdout
for i in range(n):
    out.write("line %09d %s\n" % (i, pad))
out.flush()
print("flood: done", file=sys.stderr, flush=True)
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    time.sleep(0.05)
