"""
Built-in handlers: endpoint behaviour only.

A handler is a plain Autobahn C{WebSocketServerProtocol} subclass; these are
the ones C{--route PATH=NAME} can name.
"""

from __future__ import annotations

from typing import Any, Optional

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.python.reflect import namedAny


class EchoHandler(WebSocketServerProtocol):
    """
    Send every message back as it came: text as text, binary as binary.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


class BroadcastHandler(WebSocketServerProtocol):
    """
    Send every message to every client on the same route and with the same
    path parameters (C{/rooms/a} and C{/rooms/b} are separate rooms).

    The message is framed once and the same bytes go to every member.
    """

    _room: Optional[frozenset[tuple[str, str]]] = None

    def onOpen(self) -> None:
        self._room = frozenset(getattr(self, "path_params", {}).items())
        self.factory.groups.setdefault(self._room, set()).add(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        members = self.factory.groups.get(self._room, ())
        prepared = self.factory.prepareMessage(payload, isBinary)
        for member in members:
            member.sendPreparedMessage(prepared)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self._room is None:
            return
        members = self.factory.groups.get(self._room)
        if members is not None:
            members.discard(self)
            if not members:
                del self.factory.groups[self._room]


BUILTIN_HANDLERS: dict[str, type] = {
    "echo": EchoHandler,
    "broadcast": BroadcastHandler,
}


def resolve_handler(name: str) -> type:
    """
    Find the handler class a route names.

    @param name: a built-in name (C{echo}, C{broadcast}) or the dotted path
        of a C{WebSocketServerProtocol} subclass.
    @raise ValueError: with a sentence saying what is wrong.
    """
    if name in BUILTIN_HANDLERS:
        return BUILTIN_HANDLERS[name]
    if "." not in name:
        raise ValueError(
            f"unknown handler {name!r}: use one of "
            f"{', '.join(sorted(BUILTIN_HANDLERS))} or a dotted path such as "
            "mypackage.handlers.ChatHandler"
        )
    obj = _import(name, "handler")
    if not (isinstance(obj, type) and issubclass(obj, WebSocketServerProtocol)):
        raise ValueError(
            f"handler {name!r} is not a subclass of "
            "autobahn.twisted.websocket.WebSocketServerProtocol"
        )
    return obj


def resolve_callable(name: str, what: str) -> Any:
    """
    Import the callable at a dotted path.

    @raise ValueError: if it cannot be imported or is not callable.
    """
    obj = _import(name, what)
    if not callable(obj):
        raise ValueError(f"{what} {name!r} is not callable")
    return obj


def _import(name: str, what: str) -> Any:
    try:
        return namedAny(name)
    except Exception as e:
        raise ValueError(f"cannot import {what} {name!r}: {e}") from None
