"""
Built-in handlers: endpoint behaviour only.

A handler is a plain Autobahn C{WebSocketServerProtocol} subclass; these are
the ones C{--route PATH=NAME} can name.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import math
from typing import Any, Mapping, Optional
from urllib.parse import urlencode

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.python.reflect import namedAny

from wsmux.aio import AsyncEchoHandler, async_handler
from wsmux.channels import ChannelError, ChannelHub, check_channel_name


class EchoHandler(WebSocketServerProtocol):
    """
    Send every message back as it came: text as text, binary as binary.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


def _hub(protocol: Any) -> Any:
    # The route's channels; a handler used outside a route tree (a plain
    # Autobahn factory) gets channels of its own factory.
    connection = getattr(protocol, "wsmux", None)
    hub = connection.channels if connection is not None else None
    if hub is None:
        hub = protocol.factory.__dict__.setdefault("channels", ChannelHub().namespace(""))
    return hub


def room_name(params: Mapping[str, str]) -> str:
    """
    The channel of a broadcast room: its path parameters (the route's own
    channels hold no other rooms).
    """
    if len(params) == 1:
        return next(iter(params.values()))
    return urlencode(sorted(params.items())) or "/"


def _brief(value: object, limit: int = 40) -> str:
    # A value from a request, shown in a reply: never the whole of it.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BroadcastHandler(WebSocketServerProtocol):
    """
    Send every message to every client on the same route and with the same
    path parameters (C{/rooms/a} and C{/rooms/b} are separate rooms).

    Each room is a channel of the route; a message is framed once and the
    same bytes go to every member.  A room name longer than a channel name
    may be is refused at the handshake (414).
    """

    room: Optional[str] = None

    def onConnect(self, request: Any) -> Any:
        connection = getattr(self, "wsmux", None)
        params = connection.path_params if connection is not None else None
        room = room_name(params) if params else self.http_request_path
        try:
            check_channel_name(room)
        except ChannelError as e:
            raise ConnectionDeny(414, f"Room name not usable: {e}") from None
        self._room = room
        return super().onConnect(request)

    def onOpen(self) -> None:
        self.room = self._room
        _hub(self).subscribe(self, self.room)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        assert self.room is not None
        _hub(self).publish(self.room, payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self.room is not None:
            _hub(self).unsubscribe(self, self.room)


class PubSubHandler(WebSocketServerProtocol):
    """
    Subscribe to and publish on channels over one connection, in JSON.

    Requests (text messages)::

        {"action": "subscribe", "channel": "news"}
        {"action": "unsubscribe", "channel": "news"}
        {"action": "publish", "channel": "news", "data": <any JSON>}

    Each request is answered with C{{"ok": <action>, "channel": ...}} or
    C{{"error": "<why>"}}; subscribers receive
    C{{"channel": "news", "data": ...}}.  A bad request never closes the
    connection.  The channels are the route's own; its
    C{allowed_channels} option (shell-style patterns) limits which names
    may be used.
    """

    max_channels = 100

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            request = (
                json.loads(
                    payload.decode("utf-8"),
                    parse_constant=_no_constant,
                    parse_float=_finite,
                    parse_int=_within_a_double,
                )
                if not isBinary
                else None
            )
        except _NotJSON as e:
            return self._reply({"error": str(e)})
        except (UnicodeDecodeError, ValueError, RecursionError):
            request = None
        if not isinstance(request, dict):
            return self._reply(
                {
                    "error": "expected a JSON object such as "
                    '{"action": "subscribe", "channel": "news"}'
                }
            )
        action = request.get("action")
        if action not in ("subscribe", "unsubscribe", "publish"):
            return self._reply(
                {"error": f"unknown action {_brief(action)}: use subscribe, unsubscribe or publish"}
            )
        try:
            channel = check_channel_name(request.get("channel"))
        except ChannelError as e:
            return self._reply({"error": str(e)})
        allowed = _allowed_channels(self)
        if allowed and not any(fnmatch.fnmatchcase(channel, p) for p in allowed):
            return self._reply({"error": f"channel {_brief(channel)} is not allowed here"})
        hub = _hub(self)
        if action == "subscribe":
            if (
                channel not in hub.channels_of(self)
                and len(hub.channels_of(self)) >= self.max_channels
            ):
                return self._reply(
                    {"error": f"at most {self.max_channels} channels per connection"}
                )
            hub.subscribe(self, channel)
        elif action == "unsubscribe":
            hub.unsubscribe(self, channel)
        else:
            if "data" not in request:
                return self._reply({"error": "publish needs data"})
            message = json.dumps({"channel": channel, "data": request["data"]}).encode("utf-8")
            hub.publish(channel, message)
        self._reply({"ok": action, "channel": channel})

    def _reply(self, answer: dict[str, Any]) -> None:
        self.sendMessage(json.dumps(answer).encode("utf-8"))


class _NotJSON(ValueError):
    """
    What Python's json module takes and a browser's JSON.parse would not
    read back: NaN and Infinity (Python writes them back as such, which
    JSON.parse refuses) and numbers past a double's range (Python writes a
    float's back as Infinity; JSON.parse reads an integer's as Infinity).
    """


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"{_brief(text)} is too big for a JSON number")
    return value


def _within_a_double(text: str) -> int:
    # An integer past a double's range: JavaScript reads it as Infinity.
    value = int(text)
    if len(text) > 308:  # (10**308 is within it: shorter ones are)
        try:
            float(value)
        except OverflowError:
            raise _NotJSON(f"{_brief(text)} is too big for a JSON number") from None
    return value


def _allowed_channels(protocol: Any) -> tuple[str, ...]:
    options = getattr(protocol.factory, "options", None)
    return tuple(getattr(options, "allowed_channels", ()))


BUILTIN_HANDLERS: dict[str, type] = {
    "echo": EchoHandler,
    "echo-async": AsyncEchoHandler,
    "broadcast": BroadcastHandler,
    "pubsub": PubSubHandler,
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
    obj = import_named(name, "handler")
    if inspect.iscoroutinefunction(obj):
        return async_handler(obj)
    if not (isinstance(obj, type) and issubclass(obj, WebSocketServerProtocol)):
        raise ValueError(
            f"handler {name!r} is not a subclass of "
            "autobahn.twisted.websocket.WebSocketServerProtocol nor an async def function"
        )
    return obj


def resolve_callable(name: str, what: str) -> Any:
    """
    Import the callable at a dotted path.

    @raise ValueError: if it cannot be imported or is not callable.
    """
    obj = import_named(name, what)
    if not callable(obj):
        raise ValueError(f"{what} {name!r} is not callable")
    return obj


def import_named(name: str, what: str) -> Any:
    """
    Import the object at a dotted path.

    @param what: what it is meant to be, for the error.
    @raise ValueError: saying why it cannot be imported.
    """
    try:
        return namedAny(name)
    except Exception as e:
        raise ValueError(f"cannot import {what} {name!r}: {e}") from None
