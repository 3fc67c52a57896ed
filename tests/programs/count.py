"""Counts to the number given on stdin, a line at a time; then waits for more."""

import os
import sys

print(
    f"hello {os.environ.get('PARAM_NAME', '-')} from {os.environ.get('REMOTE_ADDR', '-')}",
    flush=True,
)
for line in sys.stdin:
    line = line.rstrip("\n")
    if line == "env":
        for key in (
            "PATH_INFO",
            "QUERY_STRING",
            "HTTP_X_TOKEN",
            "SERVER_PORT",
            "HTTPS",
            "UNIQUE_ID",
            "SECRET",
            "HTTP_PROXY",
            "SERVER_NAME",
        ):
            print(f"{key}={os.environ.get(key, '')}", flush=True)
        print(f"CWD={os.getcwd()}", flush=True)
        continue
    if line == "exit":
        sys.exit(0)
    if line.startswith("fail"):
        sys.exit(3)
    if line == "err":
        print("a line on stderr", file=sys.stderr, flush=True)
        continue
    if line == "flood":
        chunk = "x" * 1000
        while True:
            print(chunk, flush=True)
    if line == "child":
        import subprocess

        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print(f"child {p.pid}", flush=True)
        continue
    for i in range(1, int(line) + 1):
        print(i, flush=True)
