"""Test app: a child that holds argv[1] MiB of memory and burns CPU, under a
parent that sleeps (stats must include children)."""
import os
import time

mib = int(os.sys.argv[1]) if len(os.sys.argv) > 1 else 64
pid = os.fork()
if pid == 0:
    block = bytearray(mib * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    print("hog: child holds %d MiB" % mib, flush=True)
    deadline = time.monotonic() + 600
    x = 0
    while time.monotonic() < deadline:
        x += 1
    os._exit(0)
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    time.sleep(0.05)
