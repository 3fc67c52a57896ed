"""
A real twistd wsmux process on a free loopback port.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TWISTD = str(Path(sys.executable).with_name("twistd"))

# The reactor every twistd of the suite runs on (WSMUX_TEST_REACTOR, e.g.
# "asyncio"; twistd's default, epoll here, when unset).
REACTOR = os.environ.get("WSMUX_TEST_REACTOR", "")


def reactor_args():
    return ["-r", REACTOR] if REACTOR else []


def default_signals():
    """
    In the child, before twistd starts: SIGHUP, SIGINT and SIGTERM at their
    default dispositions, as systemd starts a service (whatever this test
    process inherited, nohup's ignored SIGHUP say).
    """
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def wait_port(port, timeout=20):
    """
    Wait until something accepts connections on a loopback C{port}.

    @raise RuntimeError: if nothing does within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """
    A running twistd process and where to reach it.
    """

    def __init__(self, args, port, log_path, cwd=ROOT):
        self.port = port
        self.log_path = log_path
        env = dict(os.environ, PYTHONPATH=str(ROOT), WSMUX_PORT=str(port))
        self.log_file = open(log_path, "wb")
        self.process = subprocess.Popen(
            [TWISTD, *reactor_args(), "-n", "--pidfile=", *args],
            cwd=cwd,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=default_signals,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited early:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"twistd did not listen on {port}:\n{self.log()}")

    def url(self, path, scheme="ws"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def run_twistd(*args, timeout=30):
    """
    Run twistd to completion (for usage errors); returns the finished process.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [TWISTD, *reactor_args(), "-n", "--pidfile=", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
