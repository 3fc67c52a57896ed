"""
The port file (C{--port-file}): where a server listens, one line per port.
"""

from __future__ import annotations

import os
from typing import Iterable


def port_line(kind: str, host: str, port: int) -> str:
    """
    One port's line: C{KIND HOST PORT}, such as C{plain 127.0.0.1 43121}.
    """
    return f"{kind} {host} {port}\n"


def write_port_file(path: str, lines: Iterable[str]) -> None:
    """
    Write C{lines} to C{path} at once: a reader never sees half of it.
    """
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(temporary, path)


def remove_port_file(path: str) -> None:
    """
    Remove the port file, if it is there.
    """
    try:
        os.unlink(path)
    except OSError:
        pass
