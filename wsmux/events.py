"""
Server-wide connection events of a route tree: what C{ws}'s server
C{connection}, C{close} and C{wsClientError} events and WebSocket-Node's
C{connect}, C{close} and C{upgradeError} give, across every route.

    def opened(connection):
        print("open", connection.id, connection.route, connection.client_address)

    def closed(connection, code, reason, clean):
        print("closed", connection.id, code, reason, clean)

    tree.events.on("opened", opened)
    tree.events.on("closed", closed)

The metrics and the status page count from these events too.
"""

from __future__ import annotations

from typing import Any, Callable

from wsmux.logs import log

# Each event and what its observers are called with.
EVENTS = {
    # A connection is open (its 101 sent): (connection,).
    "opened": ("connection",),
    # An open connection closed: (connection, code, reason, clean); code
    # None means no close frame (1006).
    "closed": ("connection", "code", "reason", "clean"),
    # An upgrade was answered with an HTTP error instead of a 101 (no route,
    # a foreign Origin, a cap, onConnect refusing...): (route, status,
    # reason, peer).
    "refused": ("route", "status", "reason", "peer"),
    # A connection taken over for a WebSocket ended before it was open (the
    # client left, or the opening handshake timed out): (connection, why).
    "handshake_failed": ("connection", "why"),
}


class Events:
    """
    The observers of a route tree's connection events (see L{EVENTS}).

    An observer runs in the reactor, at the event; one that raises is
    logged and the others still run.  Observers should be quick: they run
    for every connection.
    """

    def __init__(self) -> None:
        self._callbacks: dict[str, tuple[Callable[..., Any], ...]] = {name: () for name in EVENTS}

    def on(self, event: str, observer: Callable[..., Any]) -> None:
        """
        Call C{observer} at every C{event}.

        @raise ValueError: for an event that does not exist.
        """
        self._check(event)
        self._callbacks[event] += (observer,)

    def off(self, event: str, observer: Callable[..., Any]) -> None:
        """
        Stop calling C{observer} at C{event}.
        """
        self._check(event)
        self._callbacks[event] = tuple(o for o in self._callbacks[event] if o is not observer)

    def fire(self, event: str, *args: Any) -> None:
        """
        Tell every observer of C{event}.
        """
        for observer in self._callbacks[event]:
            try:
                observer(*args)
            except Exception:
                log.failure("an observer of {event} events failed", event=event)

    def _check(self, event: str) -> None:
        if event not in EVENTS:
            raise ValueError(f"no event {event!r} (events: {', '.join(EVENTS)})")
