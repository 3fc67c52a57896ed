"""Ignores SIGTERM, and echoes lines."""

import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
for line in sys.stdin:
    print(line.rstrip("\n"), flush=True)
time.sleep(300)
