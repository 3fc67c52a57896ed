"""
What wsmux adds to a user's handler class on a route.

A handler stays a plain Autobahn C{WebSocketServerProtocol} subclass.  For
each route wsmux derives one subclass with L{RouteProtocolMixin} in front of
it, built once at start-up, so the per-route behaviour (default
subprotocol, inflate-only sending, connection log lines) costs nothing per
message unless the route asks for it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from wsmux.factory import ProtocolOptions

log = Logger(namespace="wsmux")

_EMPTY: Mapping[str, str] = {}


class RouteProtocolMixin:
    """
    Per-route behaviour placed in front of a handler class.

    @ivar path_params: the values of the route's named path parameters, for
        example C{{"room": "lobby"}} for C{/rooms/{room}} and C{/rooms/lobby}.
    @ivar route_path: the route's path pattern, such as C{/rooms/{room}}.
    @ivar selected_subprotocol: the subprotocol wsmux selected from the
        route's list, used when the handler's C{onConnect} returns none.
    """

    path_params: Mapping[str, str] = _EMPTY
    route_path: str = ""
    selected_subprotocol: Optional[str] = None

    def onConnect(self, request: ConnectionRequest) -> Any:
        result = super().onConnect(request)  # type: ignore[misc]
        if self.selected_subprotocol is None:
            return result
        if isinstance(result, Deferred):
            return result.addCallback(self._default_subprotocol)
        return self._default_subprotocol(result)

    def _default_subprotocol(self, result: Any) -> Any:
        if result is None:
            return self.selected_subprotocol
        if isinstance(result, tuple) and result and result[0] is None:
            return (self.selected_subprotocol,) + result[1:]
        return result

    def onOpen(self) -> None:
        log.info(
            "open route={route} peer={peer} path={path}",
            route=self.route_path,
            peer=self.peer,  # type: ignore[attr-defined]
            path=self.http_request_path,  # type: ignore[attr-defined]
        )
        super().onOpen()  # type: ignore[misc]

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self.state_was_open():
            log.info(
                "close route={route} peer={peer} code={code} reason={reason!r}",
                route=self.route_path,
                peer=self.peer,  # type: ignore[attr-defined]
                code=code,
                reason=reason or "",
            )
        super().onClose(wasClean, code, reason)  # type: ignore[misc]

    def state_was_open(self) -> bool:
        # Autobahn sets http_response_data once it sent the 101 response.
        return getattr(self, "http_response_data", None) is not None


class InflateOnlyMixin:
    """
    Accept compressed messages from the client but never compress ours.

    permessage-deflate lets each message choose: leaving RSV1 clear sends a
    message uncompressed on a connection where the extension is in use.
    """

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: Optional[int] = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        super().sendMessage(  # type: ignore[misc]
            payload, isBinary, fragmentSize, sync, doNotCompress=True
        )

    def sendPreparedMessage(self, preparedMsg: PreparedMessage) -> None:
        self.sendData(preparedMsg.payloadHybi)  # type: ignore[attr-defined]


def route_protocol(handler: type, options: ProtocolOptions, route_path: str) -> type:
    """
    Derive the class wsmux instantiates for C{handler} on one route.

    @param handler: the user's C{WebSocketServerProtocol} subclass.
    @param options: the route's options.
    @param route_path: the route's path pattern, for logs.
    @return: a subclass of C{handler}.
    """
    bases: tuple[type, ...] = (RouteProtocolMixin,)
    if options.deflate == "inflate-only":
        bases += (InflateOnlyMixin,)
    return type(
        handler.__name__,
        bases + (handler,),
        {
            "route_path": route_path,
            "__module__": handler.__module__,
            "__qualname__": handler.__qualname__,
        },
    )
