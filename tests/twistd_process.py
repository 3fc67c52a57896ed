"""
A real twistd wsmux process on a free loopback port.
"""

import os
import re
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


def python_process(code, env, cwd=None, timeout=60):
    """
    Run C{code} in a Python process of its own, with the environment
    C{env}; its C{CompletedProcess} (output as text).
    """
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def environ_without(*names):
    """
    This process's environment without the variables C{names}.
    """
    return {k: v for k, v in os.environ.items() if k not in names}


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


def eventually(predicate, timeout=10.0, interval=0.05):
    """
    Whether C{predicate()} became true within C{timeout} seconds (polled).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The line twisted.web's Site logs once it listens (the port it got).
_LISTENING = re.compile(r"WebSocketSite starting on (\d+)")


class Server:
    """
    A running twistd process and where to reach it.
    """

    def __init__(self, args, port, log_path, cwd=ROOT, port_file=None):
        """
        @param port: the port C{args} listen on, or 0 when they listen on
            port 0: the port the kernel chose is read from C{port_file}
            (C{--port-file}: its first plain port), or else from the log.
        """
        self.port_file = port_file
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
            if not self.port:
                found = self._chosen_port()
                if found is None:
                    time.sleep(0.05)
                    continue
                self.port = port = found
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"twistd did not listen on {port}:\n{self.log()}")

    def _chosen_port(self):
        if self.port_file is not None:
            try:
                lines = Path(self.port_file).read_text().splitlines()
            except OSError:
                return None
            plain = [line.split() for line in lines if line.startswith("plain ")]
            return int(plain[0][2]) if plain else None
        found = _LISTENING.search(self.log())
        return int(found.group(1)) if found else None

    def ports(self):
        """
        What --port-file says: (kind, host, port) per port.
        """
        lines = Path(self.port_file).read_text().splitlines()
        return [(kind, host, int(port)) for kind, host, port in (line.split() for line in lines)]

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
