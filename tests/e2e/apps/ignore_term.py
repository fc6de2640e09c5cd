"""Test app: notes SIGTERM in its output but keeps running (until SIGKILL)."""
import signal
import sys
import time


def on_term(signo, frame):
    print("ignore_term: got SIGTERM, ignoring it", flush=True)


signal.signal(signal.SIGTERM, on_term)
print("ignore_term: ready", flush=True)
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(0)
