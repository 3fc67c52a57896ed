"""
A handler module that imports in a supervisor but not in a worker: a
worker that fails at start-up, for the restart-backoff test.
"""

import sys

if "--worker-sockets" in sys.argv:
    raise ImportError("this handler cannot start in a worker process")

from wsmux import EchoHandler as Handler  # noqa: E402

__all__ = ["Handler"]
