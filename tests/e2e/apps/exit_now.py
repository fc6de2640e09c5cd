"""Test app: prints a line on each stream, then exits at once with argv[1]."""
import sys

code = int(sys.argv[1]) if len(sys.argv) > 1 else 1
print("exit_now: leaving with %d" % code, flush=True)
print("exit_now: stderr line", file=sys.stderr, flush=True)
sys.exit(code)
