"""
A real redis-server on a free loopback port, for the channel tests.
"""

import shutil
import socket
import subprocess
import time


def redis_binary():
    found = shutil.which("redis-server")
    assert found, "redis-server is missing: run .ci/system-deps"
    return found


class RedisServer:
    """
    redis-server without persistence; C{stop} and C{start} keep the port.
    """

    def __init__(self, port):
        self.port = port
        self.process = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
