"""
The route class: a handler class with wsmux's hooks in front of it.

A handler stays a plain Autobahn C{WebSocketServerProtocol} subclass.  For
each route wsmux derives one subclass with L{RouteProtocolMixin} (and the
hooks the route's options ask for) in front of it, built once at start-up,
so a feature a route does not use costs nothing per message.  The hooks
hold no state: each connection's lives in its L{Connection}
(C{self.wsmux}), and the route's settings in its L{RoutePolicy}.
"""

from __future__ import annotations

import functools
import inspect
import types
from typing import TYPE_CHECKING, Any, Optional

from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from wsmux._compat_autobahn import (
    LEAN_PROTOCOL,
    DirectHandshakeMixin,
    FastReceiveMixin,
    FastSendMixin,
    GuardedHandshakeMixin,
    compressing,
    direct_handshake_ok,
    fail_connection,
    fast_path_ok,
    lean_protocol_for,
)
from wsmux._deflate import accept_on_connection, deflate_bound, tune
from wsmux._responses import safe_headers, status_reason
from wsmux._writes import scheduler_for
from wsmux.connection import LOST, Connection, RoutePolicy, close_with, closed_with
from wsmux.factory import ProtocolOptions
from wsmux.logs import log

__all__ = ["RouteProtocolMixin", "close_with", "route_protocol"]

if TYPE_CHECKING:
    # For the type checker, each hook is what it will be part of: a route
    # class, an Autobahn server protocol with the connection attached.
    from wsmux._compat_autobahn import Hooked as _Hooked
else:
    _Hooked = object

_MISSING = object()
_OPEN = WebSocketProtocol.STATE_OPEN


class SendQueue(list):
    """
    Autobahn's send queue (appended to, popped from the left), as a list:
    it is nearly always empty, and an empty list is a tenth of the size of
    an empty deque.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class RouteProtocolMixin(_Hooked):
    """
    The route's part of a handler class: Autobahn's events, handed to the
    connection's L{Connection} (C{self.wsmux}).

    It registers the connection, logs its open and close, selects the
    default subprotocol, watches the handler's callbacks for failure, and
    applies backpressure: when the client stops reading, wsmux stops
    reading from it (and pauses producers registered through
    C{registerProducer}); messages sent meanwhile count against
    C{max_send_queue}, past which the route's C{slow_consumer} policy
    applies.  Every method here is one of Autobahn's.

    @ivar wsmux: the connection (see L{wsmux.connection.Connection}).
    """

    transport: Any
    wsmux: Connection
    _wsmux_policy: RoutePolicy

    def connectionMade(self) -> None:
        if getattr(self, "wsmux", None) is None:
            # Made by hand rather than by a route tree: a connection of its own.
            self.wsmux = Connection(self, self._wsmux_policy)
        super().connectionMade()
        # Autobahn's empty deque takes 760 bytes per connection; the queue
        # is only used for sync or chopped sends (a list, used as a deque).
        self.send_queue = SendQueue()  # type: ignore[assignment]
        self.wsmux.opened(self.transport)

    # The end of a connection.  However it ends (a closing handshake, a
    # timeout, a slow-consumer drop, the drain, the client going away), one
    # of these runs first and the connection does its part once:
    # dropConnection (wsmux or Autobahn decided to close), the transport
    # stopping its producer (it is going away), connectionLost (it is gone).

    def dropConnection(self, abort: bool = False) -> None:
        conn = self.wsmux
        conn.end()
        super().dropConnection(abort)
        if not abort and conn._phase != LOST:
            conn.dropping(abort)

    def connectionLost(self, reason: Any = None) -> None:
        self.wsmux.lost()
        try:
            super().connectionLost(reason)
        except Exception:
            # The handler's own connectionLost raised: logged as any other
            # callback's is, whether a read's clean close or the reactor
            # called it (which would log it as an unhandled error).
            self.wsmux.handler_failed("connectionLost")

    def onConnect(self, request: ConnectionRequest) -> Any:
        try:
            result = super().onConnect(request)
        except ConnectionDeny as refusal:
            self._wsmux_refused(refusal)
            raise
        if result is None:  # most handlers: the route's default subprotocol, if any
            return self.wsmux.subprotocol
        if inspect.iscoroutine(result):
            result = ensureDeferred(result)
        if isinstance(result, Deferred):
            result.addErrback(self._wsmux_refused_later)
            if self.wsmux.subprotocol is not None:
                result.addCallback(self._wsmux_default_subprotocol)
            return result
        if self.wsmux.subprotocol is None:
            return result
        return self._wsmux_default_subprotocol(result)

    def _wsmux_refused(self, refusal: ConnectionDeny) -> None:
        # A refusal's extra headers (wsmux.Deny), for failHandshake.
        headers = getattr(refusal, "headers", None)
        if headers:
            self.wsmux._more().refusal_headers = headers

    def _wsmux_refused_later(self, failure: Failure) -> Failure:
        if isinstance(failure.value, ConnectionDeny):
            self._wsmux_refused(failure.value)
        return failure

    def _wsmux_default_subprotocol(self, result: Any) -> Any:
        if result is None:
            return self.wsmux.subprotocol
        if isinstance(result, tuple) and result and result[0] is None:
            return (self.wsmux.subprotocol,) + result[1:]
        return result

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        # Autobahn's own handshake checks (bad key, version, route full...)
        # and refusals from onConnect.  The reason goes into the status line:
        # it must not carry a line break (user code may have built it from
        # the request), nor the text of an exception.
        route = self.wsmux.policy.route
        if not 400 <= code <= 599:
            # A refusal is a 4xx or 5xx: anything else from user code (a
            # ConnectionDeny(200)) would tell the client something untrue.
            log.error(
                "route {route}: a refusal with status {code} (not 4xx or 5xx); answering 500",
                route=route,
                code=code,
            )
            code = 500
        if code == 500:
            reason = "Internal Server Error"
        conn = self.wsmux
        conn._more().refused = True
        registry = conn._registry
        if registry is not None:
            registry.events.fire("refused", route, code, reason, getattr(self, "peer", "?"))
        if responseHeaders is None and self.wsmux._extra is not None:
            responseHeaders = self.wsmux._extra.refusal_headers
        headers = [
            (name, value)
            for name, values in safe_headers(dict(responseHeaders or ())).items()
            for value in values
        ]
        super().failHandshake(status_reason(reason, "Refused"), code, headers or None)

    def onOpen(self) -> None:
        conn = self.wsmux
        if conn._registry is not None:
            conn._registry.events.fire("opened", conn)
        log.info(
            "open route={route} conn={conn} peer={peer} path={path}",
            conn=conn.id,
            route=conn.policy.route,
            peer=self.peer,
            path=self.http_request_path,
        )
        try:
            result = super().onOpen()
        except Exception:
            conn.handler_failed("onOpen")
        else:
            if result is not None:
                conn.watch(result, "onOpen")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        conn = self.wsmux
        registry = conn._registry
        if getattr(self, "http_response_data", None) is not None:  # it was open
            shown, why = closed_with(self, code, reason)
            if registry is not None:
                registry.events.fire("closed", conn, shown, why, wasClean)
            log.info(
                "close route={route} conn={conn} peer={peer} code={code} reason={reason!r}",
                conn=conn.id,
                route=conn.policy.route,
                peer=self.peer,
                code=shown,
                reason=why,
            )
        elif registry is not None and (conn._extra is None or not conn._extra.refused):
            why = getattr(self, "wasNotCleanReason", None) or "the connection ended first"
            registry.events.fire("handshake_failed", conn, why)
        try:
            super().onClose(wasClean, code, reason)
        except Exception:
            conn.handler_failed("onClose")

    def onAutoPong(
        self, ping_sent: int, ping_seq: int, pong_received: int, pong_rtt: int, payload: bytes
    ) -> None:
        # A keepalive ping came back: its round trip (nanosecond clocks).
        self.wsmux.latency = (pong_received - ping_sent) / 1e9
        super().onAutoPong(ping_sent, ping_seq, pong_received, pong_rtt, payload)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # The handler's; a Deferred it returns is watched for failure.
        result = super().onMessage(payload, isBinary)
        if result is not None:
            self.wsmux.watch(result, "onMessage")

    def sendCloseFrame(
        self, code: Optional[int] = None, reasonUtf8: Optional[bytes] = None, isReply: bool = False
    ) -> None:
        super().sendCloseFrame(code, reasonUtf8, isReply)
        if self.failedByMe and not isReply and self.state == self.STATE_CLOSING:
            # Autobahn failed the connection (a protocol violation or a
            # limit: 1002, 1007, 1009...); say which, where and for whom.
            log.info(
                "failing connection route={route} conn={conn} peer={peer} code={code} "
                "reason={reason!r}",
                conn=self.wsmux.id,
                route=self.wsmux.policy.route,
                peer=self.peer,
                code=code,
                reason=(reasonUtf8 or b"").decode("utf-8", "replace"),
            )
            # RFC 6455 7.1.7: to fail the connection is to send a close
            # frame saying why and then close it, not to wait for the
            # peer's answer (a peer that broke the protocol held its
            # connection for the whole close timeout).  The close frame is
            # sent before TCP closes.
            self.dropConnection(abort=False)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register a push producer that writes to this connection; wsmux
        pauses it while the client is not reading.

        @raise ValueError: for a pull producer (C{streaming} false).
        """
        if not streaming:
            raise ValueError("wsmux handlers take push producers (streaming=True) only")
        self.wsmux.register_producer(producer)

    def unregisterProducer(self, producer: Any = None) -> None:
        """
        Forget a producer without stopping it (the last registered one
        when none is named).  Producers still registered when the
        connection ends are stopped then, once each.

        (Autobahn's C{dropConnection} calls this with no argument to let go
        of the transport; by then wsmux has let go and stopped every
        producer already, so there is nothing left to forget.)
        """
        self.wsmux.unregister_producer(producer)

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: Optional[int] = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        if self.state != _OPEN:
            # Closing or closed: a reply to a message that crossed our close
            # frame has nowhere to go (Autobahn would raise Disconnected).
            return
        conn = self.wsmux
        if self.send_state:
            # In the middle of a message being streamed to this client: a
            # whole message goes out after the stream's last frame (RFC 6455
            # 5.4), as a broadcast's does.
            conn.after_message(self.factory.prepareMessage(payload, isBinary, doNotCompress))
            return
        if conn.paused and not conn.room_for(len(payload)):
            return
        limit = self.maxMessagePayloadSize
        # Near the limit (compressing can make a message larger: by some
        # per cent with the smallest memory levels, on data that does not
        # compress; deflate_bound allows more).
        size = len(payload)
        if self._wsmux_policy.deflate_class is not None:
            size = deflate_bound(size)
        if limit and size >= limit:
            self._wsmux_send_past_limit(payload, isBinary, fragmentSize, sync, doNotCompress)
            return
        self._wsmux_policy.send_message(self, payload, isBinary, fragmentSize, sync, doNotCompress)

    def _wsmux_send_past_limit(
        self,
        payload: bytes,
        isBinary: bool,
        fragmentSize: Optional[int],
        sync: bool,
        doNotCompress: bool,
    ) -> None:
        # max_message_size limits what a client may send.  Autobahn applies
        # the same number to what it sends (raising PayloadExceededError in
        # the handler, or mid-broadcast): what the server sends is the
        # application's choice, so the limit is lifted for this one send.
        own = self.__dict__.get("maxMessagePayloadSize", _MISSING)
        self.maxMessagePayloadSize = 0
        try:
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
        finally:
            if own is _MISSING:
                del self.maxMessagePayloadSize
            else:
                self.maxMessagePayloadSize = own

    def sendPreparedMessage(self, preparedMsg: PreparedMessage) -> None:
        if self.state != _OPEN:
            return
        conn = self.wsmux
        if self.send_state:
            # In the middle of a message being streamed to this client: a
            # whole message in between would break it (RFC 6455 5.4).  It
            # goes out after the stream's last frame.
            conn.after_message(preparedMsg)
            return
        if conn.paused and not conn.room_for(len(preparedMsg.payloadHybi)):
            return
        if (
            compressing(self)
            and not preparedMsg.doNotCompress
            and len(preparedMsg.payload) >= conn.policy.compress_from
        ):
            # Compressed for this connection: Autobahn sends (and counts)
            # it as an ordinary message.  Past the pacing, which this
            # prepared message has been through already.
            RouteProtocolMixin.sendMessage(self, preparedMsg.payload, preparedMsg.binary)
            return
        # Autobahn counts messages sent with sendMessage only.
        conn.prepared_sent += 1
        super().sendPreparedMessage(preparedMsg)

    def endMessage(self) -> None:
        super().endMessage()
        for prepared in self.wsmux.take_after_message():
            # Paced already (PacingMixin sits in front): paced again, it
            # would go behind messages sent after it.
            RouteProtocolMixin.sendPreparedMessage(self, prepared)

    def sendData(self, data: bytes, sync: bool = False, chopsize: Optional[int] = None) -> None:
        conn = self.wsmux
        if conn.paused and not conn.sending(len(data)):
            return
        super().sendData(data, sync, chopsize)


class ReceiveGuardMixin(_Hooked):
    """
    For a handler that keeps Autobahn's receive path: an exception from
    its callbacks ends its own connection with 1011 (see
    L{Connection.handler_failed}) instead of escaping into the reactor.
    (The fast path has the same guard built in.)
    """

    wsmux: Connection

    def dataReceived(self, data: bytes) -> None:
        try:
            super().dataReceived(data)
        except Exception:
            self.wsmux.handler_failed("a message callback")


class MessageHooksMixin(_Hooked):
    """
    For a route with an idle timeout or a fragment cap: a message arriving
    restarts the idle timer, and one that arrives in more frames than the
    route allows fails the connection.
    """

    wsmux: Connection

    def onMessageBegin(self, isBinary: bool) -> None:
        self.wsmux.message_begins()
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        conn = self.wsmux
        if conn.policy.max_fragments and not conn.fragment_allowed():
            if not self.failedByMe:
                fail_connection(
                    self,
                    1009,
                    f"message split into more than {conn.policy.max_fragments} frames",
                )
            return
        super().onMessageFrameBegin(length)


class PacingMixin(_Hooked):
    """
    For a route with a C{send_delay}: keep at least that long between
    messages sent to one client, without blocking the reactor and without
    reordering (see L{Connection.pace}).

    It sits in front of L{RouteProtocolMixin}, so each message passes the
    backpressure checks when it is really sent.
    """

    wsmux: Connection

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: Optional[int] = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        send = super().sendMessage
        self.wsmux.pace(
            lambda: send(payload, isBinary, fragmentSize, sync, doNotCompress), len(payload)
        )

    def sendPreparedMessage(self, preparedMsg: PreparedMessage) -> None:
        send = super().sendPreparedMessage
        self.wsmux.pace(lambda: send(preparedMsg), len(preparedMsg.payloadHybi))


class InflateOnlyMixin(_Hooked):
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
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress=True)

    def sendPreparedMessage(self, preparedMsg: PreparedMessage) -> None:
        self.sendData(preparedMsg.payloadHybi)


class ThresholdMixin(_Hooked):
    """
    For a route with a C{deflate_threshold}: shorter messages go out
    uncompressed (permessage-deflate lets each message choose).
    """

    _wsmux_policy: RoutePolicy

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: Optional[int] = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        if len(payload) < self._wsmux_policy.compress_from:
            doNotCompress = True
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)


class DeflateTuningMixin(_Hooked):
    """
    For a route with permessage-deflate: the negotiated extension takes the
    route's class (see L{wsmux._deflate.tune}: its compression level and
    memory, and a decompression limit that holds to the byte) before the
    handler can send or a message arrives.
    """

    _wsmux_policy: RoutePolicy

    def onOpen(self) -> None:
        tune(self, self._wsmux_policy.deflate_class)  # type: ignore[arg-type]
        super().onOpen()


class _Alias:
    # A name of the connection's, read through the handler: a non-data
    # descriptor, so a handler that sets an attribute of the same name on
    # itself keeps its own.
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.wsmux, self.name)


class ConnectionNames:
    """
    The older spellings of C{self.wsmux}'s attributes on a handler:
    C{self.path_params}, C{self.channels}, C{self.client_address},
    C{self.route_path}, C{self.dropped_messages} and C{self.writable()}.

    wsmux places this class behind the handler class (right above
    Autobahn's), so a handler that has an attribute or method of one of
    these names, or sets one, keeps its own; C{self.wsmux} always has the
    connection's.
    """

    wsmux: Connection

    path_params = _Alias("path_params")
    channels = _Alias("channels")
    client_address = _Alias("client_address")
    route_path = _Alias("route")
    dropped_messages = _Alias("dropped_messages")

    def writable(self) -> Deferred[None]:
        return self.wsmux.writable()


@functools.cache
def _send_through_super(protocol: Any, *args: Any) -> None:
    # The sendMessage behind wsmux's send checks, through super(): for a
    # handler whose sendMessage is not a plain function.
    super(RouteProtocolMixin, protocol).sendMessage(*args)


def _handler_traits(handler: type) -> tuple[bool, bool, bool, tuple[str, ...]]:
    # What route_protocol needs to know of a handler class, worked out once
    # per class however many routes use it (start-up stays linear in routes).
    names = getattr(handler, "CONFIG_ATTRS")  # noqa: B009 - Autobahn's, untyped
    shared = tuple(name for name in names if not hasattr(handler, name))
    receive_ok, send_ok = fast_path_ok(handler)
    return direct_handshake_ok(handler), receive_ok, send_ok, shared


def route_protocol(
    handler: type,
    options: ProtocolOptions,
    route_path: str,
    factory: Any = None,
    channel_namespace: Optional[str] = None,
) -> type:
    """
    Derive the class wsmux instantiates for C{handler} on one route.

    @param handler: the user's C{WebSocketServerProtocol} subclass.
    @param options: the route's options.
    @param route_path: the route's path pattern, for logs.
    @param channel_namespace: the channels its connections reach: by
        default the route's C{channel_namespace} option, or the route's own.
    @param factory: the route's L{wsmux.factory.RouteFactory}.  Autobahn
        copies about thirty options from the factory into every connection
        unless the class already has them; the derived class carries them
        instead (kept current by the factory's C{setProtocolOptions}), which
        keeps each connection's attribute dictionary at half the size.  A
        handler's own class-level option values still win.
    @return: a subclass of C{handler}, whose C{_wsmux_policy} is the
        route's L{RoutePolicy}.
    """
    policy = RoutePolicy(
        options,
        route_path,
        channel_namespace,
        scheduler_for(getattr(factory, "reactor", None)) if factory is not None else None,
    )
    bases: tuple[type, ...] = (RouteProtocolMixin,)
    if options.send_delay:
        bases = (PacingMixin,) + bases
    namespace: dict[str, Any] = {
        "__module__": handler.__module__,
        "__qualname__": handler.__qualname__,
        "_wsmux_policy": policy,
    }
    if options.max_fragments or options.idle_timeout:
        bases += (MessageHooksMixin,)
    if policy.inflate_only:
        bases += (InflateOnlyMixin,)
    elif options.deflate == "on" and options.deflate_threshold:
        bases += (ThresholdMixin,)
    if policy.deflate_class is not None:
        bases = (DeflateTuningMixin,) + bases
    direct, receive_ok, send_ok, shared = _handler_traits(handler)
    # Every class, the direct-handshake ones too: where the bases admit no
    # direct handshake (the TypeError below), Autobahn's path is taken.
    bases = (GuardedHandshakeMixin,) + bases
    if direct:
        bases += (DirectHandshakeMixin,)
    if receive_ok:
        bases += (FastReceiveMixin,)
    else:
        bases = (ReceiveGuardMixin,) + bases
    if send_ok:
        bases += (FastSendMixin,)
    if factory is not None:
        namespace["_wsmux_factory_options"] = shared
        namespace.update((name, getattr(factory, name)) for name in shared)
        # Every option is now on the class: nothing is left for Autobahn's
        # per-connection copy loop, which also pretty-prints the options
        # for a debug log line that is formatted whether or not anyone
        # reads it (a third of the cost of a handshake, measured).
        namespace["CONFIG_ATTRS"] = ()
        if options.deflate_client_max_window_bits and "perMessageCompressionAccept" in shared:
            # The accept must read the client's request (see
            # wsmux._deflate.accept_on_connection): a method of the
            # connection's, not the factory's.
            namespace["_wsmux_factory_options"] = tuple(
                n for n in shared if n != "perMessageCompressionAccept"
            )
            namespace["perMessageCompressionAccept"] = accept_on_connection
    try:
        # The lean class goes right above Autobahn, below the handler.
        lean = (lean_protocol_for(handler),) if LEAN_PROTOCOL else ()
        cls = type(handler.__name__, bases + (handler, ConnectionNames, *lean), namespace)
    except TypeError:  # a handler whose bases admit no such order
        bases = tuple(b for b in bases if b is not DirectHandshakeMixin)
        cls = type(handler.__name__, bases + (handler, ConnectionNames), namespace)
    # What the fast path calls for a message: the onMessage behind wsmux's
    # watching wrapper (it watches a returned Deferred itself).  And what
    # wsmux's send checks call: the sendMessage behind them (as super()
    # would find it, without making a super object per message).
    mro = cls.__mro__
    behind = mro[mro.index(RouteProtocolMixin) + 1 :]
    policy.on_message = next(k.__dict__["onMessage"] for k in behind if "onMessage" in k.__dict__)
    send = next(k.__dict__["sendMessage"] for k in behind if "sendMessage" in k.__dict__)
    # (A staticmethod, a partialmethod or the like would need binding.)
    is_function = isinstance(send, types.FunctionType)
    policy.send_message = send if is_function else _send_through_super
    if factory is not None:
        factory.route_classes.append(cls)
    return cls
