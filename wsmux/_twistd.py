"""
What twistd's wsmux plugin loads: L{wsmux.tap}'s options and service, with
a usage error that exits with status 1 on every supported Twisted.

twistd before 26.10 prints a usage error and exits 0, so a service manager
would take a bad command line for a clean stop.  These options print the
error as twistd does (the options' usage, then the command and the error)
and exit 1 themselves.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from wsmux import tap
from wsmux.tap import makeService

__all__ = ["Options", "makeService"]


class Options(tap.Options):
    def parseOptions(self, options: Any = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            print(self)
            print(f"{' '.join(sys.argv[0:2])}: {error}")
            raise SystemExit(1) from None
