"""
Writes held to the end of a read, and sent together: one scheduler per
reactor.

What a read brings (several frames, a burst of messages to a channel)
usually means several writes to the same connections: a reply to each
message, or each message to every member of a channel.  Sent as they are
made, that is a system call each; held, it is one per connection, as
Twisted's buffered writes would be, but without two epoll_ctl calls per
connection.  uWebSockets calls this corking.

When the connection that read is Twisted's plain TCP transport, or a TLS
connection over it whose writes wsmux encrypts and sends itself
(C{twisted.tls_direct_write}), what is held goes out at the end of the
reactor's turn (a zero-delay call), after every read the reactor had
ready, as Twisted's own writes do: sends made together, after the reads,
cost less than sends between them (measured: a quarter more echoes a
second, and lower latency, against the end of each read; over TLS, where
each record of a read arrives as a read of its own, a tenth more again).
Otherwise (in-memory transports, Twisted's own TLS path) it goes out when
the read is handled.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional, Sequence

from wsmux._compat_twisted import write_now

# Past this many bytes held for one connection, they go out at once: the
# transport's own buffering and producer pausing (and with them the route's
# slow-consumer policy) apply as if nothing were held.
HOLD_MAX = 65536


class WriteScheduler:
    """
    The writes held on one reactor.

    @ivar held: each transport's pieces, in order, while writes are held;
        L{None} while they are not.
    @ivar held_bytes: how many bytes each transport's pieces make.
    """

    def __init__(self) -> None:
        self.held: Optional[dict[Any, list[bytes]]] = None
        self.held_bytes: dict[Any, int] = {}

    def start(self) -> None:
        """
        Hold writes until L{send_held}.
        """
        self.held = {}

    def send_held(self) -> None:
        """
        Stop holding writes and send what each connection was given.
        """
        held, self.held = self.held, None
        if held:
            self.held_bytes.clear()
            for transport, pieces in held.items():
                write_now(transport, pieces)

    def hold(self, transport: Any, pieces: Sequence[bytes], size: int) -> None:
        """
        Write C{pieces} to C{transport}: at once, or with the others held.

        @param size: how many bytes C{pieces} make.
        """
        held = self.held
        if held is None:
            write_now(transport, pieces, tls_now=False)
            return
        waiting = held.get(transport)
        if waiting is None:
            held[transport] = list(pieces)
        else:
            waiting.extend(pieces)
            size += self.held_bytes.get(transport, 0)
        if size > HOLD_MAX:
            self.release(transport)
        else:
            self.held_bytes[transport] = size

    def take(self, transport: Any) -> Optional[list[bytes]]:
        """
        What is held for C{transport}, no longer held (for the caller to
        send before anything else it writes); L{None} when nothing is.
        """
        held = self.held
        if held is None:
            return None
        self.held_bytes.pop(transport, None)
        return held.pop(transport, None)

    def release(self, transport: Any) -> None:
        """
        Send what is held for C{transport} now, before anything that writes
        to it another way (Autobahn's own send path, closing the
        connection).
        """
        pieces = self.take(transport)
        if pieces:
            write_now(transport, pieces)


_schedulers: weakref.WeakKeyDictionary[Any, WriteScheduler] = weakref.WeakKeyDictionary()


_default = WriteScheduler()


def scheduler_for(reactor: Any) -> WriteScheduler:
    """
    The L{WriteScheduler} of C{reactor} (L{None}: of whichever reactor the
    connections without a route factory run on).
    """
    if reactor is None:
        return _default
    scheduler = _schedulers.get(reactor)
    if scheduler is None:
        scheduler = _schedulers[reactor] = WriteScheduler()
    return scheduler
