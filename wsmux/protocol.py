"""
What wsmux adds to a user's handler class on a route.

A handler stays a plain Autobahn C{WebSocketServerProtocol} subclass.  For
each route wsmux derives one subclass with L{RouteProtocolMixin} (and the
optional mixins the route's options ask for) in front of it, built once at
start-up, so a feature a route does not use costs nothing per message.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Any, Mapping, Optional

import txaio
from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from wsmux._compat_autobahn import (
    LEAN_PROTOCOL,
    DirectHandshakeMixin,
    FastReceiveMixin,
    FastSendMixin,
    GuardedHandshakeMixin,
    LeanServerProtocol,
    compressing,
    direct_handshake_ok,
    fail_connection,
    fast_path_ok,
)
from wsmux._writes import scheduler_for
from wsmux.factory import ProtocolOptions
from wsmux.logs import log
from wsmux.responses import safe_headers, status_reason

_EMPTY: Mapping[str, str] = {}
_MISSING = object()
_OPEN = WebSocketProtocol.STATE_OPEN

# Bytes past max_send_queue that control frames (pongs, the close frame) may
# still add before a client that does not read is dropped outright.
_CONTROL_SLACK = 64 * 1024


class SendQueue(list):  # type: ignore[type-arg]
    """
    Autobahn's send queue (appended to, popped from the left), as a list:
    it is nearly always empty, and an empty list is a tenth of the size of
    an empty deque.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


@implementer(IPushProducer)
class RouteProtocolMixin:
    """
    Per-route behaviour placed in front of a handler class.

    It registers the connection, logs its open and close, selects the
    default subprotocol, and applies backpressure: when the client stops
    reading, wsmux stops reading from it (and pauses producers registered
    through C{registerProducer}); messages sent meanwhile count against
    C{max_send_queue}, past which the route's C{slow_consumer} policy
    applies.

    @ivar path_params: the values of the route's named path parameters, for
        example C{{"room": "lobby"}} for C{/rooms/{room}} and C{/rooms/lobby}.
    @ivar route_path: the route's path pattern, such as C{/rooms/{room}}.
    @ivar client_address: the client's address (behind trusted proxies).
    @ivar dropped_messages: messages not sent because the client was too
        slow (with the C{drop} policy).
    @ivar channels: the route's channels (a L{wsmux.channels.RouteChannels}).
    """

    transport: Any
    path_params: Mapping[str, str] = _EMPTY
    route_path: str = ""
    selected_subprotocol: Optional[str] = None
    client_address: str = ""
    registry: Any = None
    _channel_namespace: str = ""
    _lost: bool = False
    dropped_messages: int = 0
    prepared_sent: int = 0
    _paused: bool = False
    _backlog: int = 0
    _producers: tuple[Any, ...] = ()
    _writable_waiters: tuple[Any, ...] = ()
    _send_cap: int = 0
    _drop_slow: bool = False
    _on_transport: bool = False
    _ended: bool = False
    _linger_call: Any = None
    wsmux_place: Any = None
    _inflate_only: bool = False
    _queued_after_message: Optional[tuple[Any, ...]] = None

    @property
    def channels(self) -> Any:
        """
        The route's channels, made on first use (most connections never
        touch a channel).
        """
        view = self.__dict__.get("_channels")
        if view is None and self.registry is not None:
            view = self.registry.channels.namespace(self._channel_namespace or self.route_path)
            self.__dict__["_channels"] = view
        return view

    @channels.setter
    def channels(self, value: Any) -> None:
        self.__dict__["_channels"] = value

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[misc]
        # Autobahn's empty deque takes 760 bytes per connection; the queue
        # is only used for sync or chopped sends.
        self.send_queue = SendQueue()
        if self.registry is not None:
            self.registry.add(self, self.client_address, self.wsmux_place)
            self.wsmux_place = None
        options = self.factory.options  # type: ignore[attr-defined]
        self._send_cap = options.max_send_queue
        self._drop_slow = options.slow_consumer == "drop"
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._on_transport = True

    # The end of a connection.  However it ends (a closing handshake, a
    # timeout, a slow-consumer drop, the drain, the client going away), one
    # of these runs first and _ending does the connection's part once:
    # dropConnection (wsmux or Autobahn decided to close), stopProducing
    # (the transport is going away under us), connectionLost (it is gone).

    def dropConnection(self, abort: bool = False) -> None:
        self._ending()
        super().dropConnection(abort)  # type: ignore[misc]
        if not (abort or self._lost) and self._linger_call is None and self.transport is not None:
            # Closing politely waits for what is still to be sent and, over
            # TLS, for the peer's close_notify: a peer that never reads or
            # never answers must not hold the connection for ever.  (Plain
            # TCP with nothing left to send has closed already: no timer.)
            self._linger_call = _clock().callLater(
                max(1.0, self.closeHandshakeTimeout or 0.0),  # type: ignore[attr-defined]
                self._linger_expired,
            )

    def _linger_expired(self) -> None:
        self._linger_call = None
        transport: Any = self.transport
        if transport is not None:
            getattr(transport, "abortConnection", transport.loseConnection)()

    def stopProducing(self) -> None:
        # The transport calls this when the connection is lost.
        self._ending()

    def connectionLost(self, reason: Any = None) -> None:
        if not self._ended:
            self._ending()
        if self._linger_call is not None:
            if self._linger_call.active():
                self._linger_call.cancel()
            self._linger_call = None
        self._lost = True
        registry = self.registry
        if registry is not None:
            registry.remove(self, self.client_address)
            # Every channel it joined, in any namespace (a handler may reach
            # past its route's through the hub).
            registry.channels.unsubscribe(self)
        super().connectionLost(reason)  # type: ignore[misc]

    def _ending(self) -> None:
        """
        Let go of the transport and stop every producer, once.

        The connection stops being the transport's producer (Twisted's TLS
        transport will not close while a producer is registered), reading
        resumes if backpressure had paused it (a TLS close needs the peer's
        close_notify), writers waiting for room are told the connection
        closed, and each handler producer is stopped exactly once.
        """
        if self._ended:
            return
        self._ended = True
        transport: Any = self.transport
        # Twisted's plain TCP transport closes with a producer registered
        # (and stops it when the connection is lost): only the others (TLS
        # above all) need letting go of.
        if self._on_transport and transport is not None and transport.__class__ is not tcp.Server:
            self._on_transport = False
            transport.unregisterProducer()
            if self._paused:
                self._paused = False
                transport.resumeProducing()
        waiters, self._writable_waiters = self._writable_waiters, ()
        for waiter in waiters:
            waiter.errback(ConnectionDone("the connection closed"))
        producers, self._producers = self._producers, ()
        for producer in producers:
            try:
                producer.stopProducing()
            except Exception:
                log.failure("route {route}: a producer failed to stop", route=self.route_path)

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

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        # Autobahn's own handshake checks (bad key, version, route full...)
        # and refusals from onConnect.  The reason goes into the status line:
        # it must not carry a line break (user code may have built it from
        # the request), nor the text of an exception.
        if not 400 <= code <= 599:
            # A refusal is a 4xx or 5xx: anything else from user code (a
            # ConnectionDeny(200)) would tell the client something untrue.
            log.error(
                "route {route}: a refusal with status {code} (not 4xx or 5xx); answering 500",
                route=self.route_path,
                code=code,
            )
            code = 500
        if self.registry is not None:
            self.registry.stats.rejected(self.route_path, code)
        if code == 500:
            reason = "Internal Server Error"
        headers = [
            (name, value)
            for name, values in safe_headers(dict(responseHeaders or ())).items()
            for value in values
        ]
        super().failHandshake(  # type: ignore[misc]
            status_reason(reason, "Refused"), code, headers or None
        )

    def onOpen(self) -> None:
        if self.registry is not None:
            self.registry.stats.accepted(self.route_path)
        log.info(
            "open route={route} peer={peer} path={path}",
            route=self.route_path,
            peer=self.peer,  # type: ignore[attr-defined]
            path=self.http_request_path,  # type: ignore[attr-defined]
        )
        try:
            result = super().onOpen()  # type: ignore[misc]
        except Exception:
            self.handler_failed("onOpen")
        else:
            if result is not None:
                self.watch(result, "onOpen")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if getattr(self, "http_response_data", None) is not None:  # it was open
            if self.registry is not None:
                self.registry.stats.closed(self, code)
            log.info(
                "close route={route} peer={peer} code={code} reason={reason!r}",
                route=self.route_path,
                peer=self.peer,  # type: ignore[attr-defined]
                code=code,
                reason=reason or "",
            )
        try:
            super().onClose(wasClean, code, reason)  # type: ignore[misc]
        except Exception:
            self.handler_failed("onClose")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # The handler's; a Deferred it returns is watched for failure.
        result = super().onMessage(payload, isBinary)  # type: ignore[misc]
        if result is not None:
            self.watch(result, "onMessage")

    def watch(self, result: Any, where: str) -> None:
        """
        A handler callback returned a Deferred (an C{inlineCallbacks}
        handler, say): if it fails, that is the handler failing there.
        """
        if isinstance(result, Deferred):
            result.addErrback(lambda failure: self.handler_failed(where, failure))

    def handler_failed(self, where: str, failure: Optional[Failure] = None) -> None:
        """
        The handler raised after the point of no return: log it once, with
        the traceback, and end the connection the way the protocol allows
        at this point.

        Before the 101 the client gets 500; after it only frames may follow
        (RFC 6455 4.2.2), so an open connection is closed with 1011
        (internal error), and one already closing is dropped.  No other
        connection is affected, and nothing reaches the client but the
        close code.

        @param where: the callback that raised, for the log line.
        @param failure: the failure (the exception being handled when not
            given).
        """
        failure = failure if failure is not None else Failure()
        state = self.state  # type: ignore[attr-defined]
        log.failure(
            "route {route} peer={peer}: the handler raised in {where}; {action}",
            failure,
            route=self.route_path,
            peer=getattr(self, "peer", "?"),
            where=where,
            action=(
                "closing with 1011"
                if state == self.STATE_OPEN  # type: ignore[attr-defined]
                else "answering 500"
                if getattr(self, "http_response_data", None) is None
                else "dropping the connection"
            ),
        )
        if self.registry is not None:
            self.registry.stats.handler_errors[self.route_path] += 1
        if state == self.STATE_OPEN:  # type: ignore[attr-defined]
            close_with(self, 1011, "internal error")
        elif state == self.STATE_CONNECTING and getattr(self, "http_response_data", None) is None:  # type: ignore[attr-defined]
            self.failHandshake("Internal Server Error", 500)
        elif state != self.STATE_CLOSED:  # type: ignore[attr-defined]
            self.dropConnection(abort=True)  # type: ignore[attr-defined]

    def sendCloseFrame(
        self, code: Optional[int] = None, reasonUtf8: Optional[bytes] = None, isReply: bool = False
    ) -> None:
        super().sendCloseFrame(code, reasonUtf8, isReply)  # type: ignore[misc]
        if self.failedByMe and not isReply and self.state == self.STATE_CLOSING:  # type: ignore[attr-defined]
            # Autobahn failed the connection (a protocol violation or a
            # limit: 1002, 1007, 1009...); say which, where and for whom.
            log.info(
                "failing connection route={route} peer={peer} code={code} reason={reason!r}",
                route=self.route_path,
                peer=self.peer,  # type: ignore[attr-defined]
                code=code,
                reason=(reasonUtf8 or b"").decode("utf-8", "replace"),
            )
            # RFC 6455 7.1.7: to fail the connection is to send a close
            # frame saying why and then close it, not to wait for the
            # peer's answer (a peer that broke the protocol held its
            # connection for the whole close timeout).  The close frame is
            # sent before TCP closes.
            self.dropConnection(abort=False)  # type: ignore[attr-defined]

    # Backpressure.  The transport calls these when its send buffer fills
    # up and when it has drained.

    def pauseProducing(self) -> None:
        # Twisted calls this after every write while its buffer is full.
        if self._paused:
            return
        self._paused = True
        self._backlog = 0
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        for producer in self._producers:
            producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._backlog = 0
        self.transport.resumeProducing()  # type: ignore[attr-defined]
        for producer in self._producers:
            producer.resumeProducing()
        waiters, self._writable_waiters = self._writable_waiters, ()
        for waiter in waiters:
            waiter.callback(None)

    def writable(self) -> Deferred[None]:
        """
        A Deferred that fires once the client is taking data: at once
        unless wsmux has paused this connection because the client is not
        reading.  Producers of data await it between chunks.
        """
        if self._ended:
            return fail(ConnectionDone("the connection closed"))
        if not self._paused:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._writable_waiters += (waiter,)
        return waiter

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register a push producer that writes to this connection; wsmux
        pauses it while the client is not reading.

        @raise ValueError: for a pull producer (C{streaming} false).
        """
        if not streaming:
            raise ValueError("wsmux handlers take push producers (streaming=True) only")
        if self._ended:
            # Too late: the connection has ended, so the producer stops now
            # rather than run for ever with nobody to stop it.
            producer.stopProducing()
            return
        self._producers = self._producers + (producer,)
        if self._paused:
            producer.pauseProducing()

    def unregisterProducer(self, producer: Any = None) -> None:
        """
        Forget a producer without stopping it (the last registered one
        when none is named).  Producers still registered when the
        connection ends are stopped then, once each.

        (Autobahn's C{dropConnection} calls this with no argument to let go
        of the transport; by then wsmux has let go and stopped every
        producer already, so there is nothing left to forget.)
        """
        if not self._producers:
            return
        if producer is None:
            producer = self._producers[-1]
        self._producers = tuple(p for p in self._producers if p is not producer)

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: Optional[int] = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        if self.state != _OPEN:  # type: ignore[attr-defined]
            # Closing or closed: a reply to a message that crossed our close
            # frame has nowhere to go (Autobahn would raise Disconnected).
            return
        if self._paused and not self._room_for(len(payload)):
            return
        limit = self.maxMessagePayloadSize  # type: ignore[attr-defined]
        # Near the limit (compressing can make a message slightly larger:
        # incompressible data, about 5 bytes per 16 KiB block, plus a few).
        if limit and len(payload) >= limit - (limit >> 9) - 64:
            self._send_past_incoming_limit(payload, isBinary, fragmentSize, sync, doNotCompress)
            return
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)  # type: ignore[misc]

    def _send_past_incoming_limit(
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
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)  # type: ignore[misc]
        finally:
            if own is _MISSING:
                del self.maxMessagePayloadSize
            else:
                self.maxMessagePayloadSize = own

    def sendPreparedMessage(self, preparedMsg: PreparedMessage) -> None:
        if self.state != _OPEN:  # type: ignore[attr-defined]
            return
        if self.send_state:  # type: ignore[attr-defined]
            # In the middle of a message being streamed to this client: a
            # whole message in between would break it (RFC 6455 5.4).  It
            # goes out after the stream's last frame.
            self._after_message(preparedMsg)
            return
        if self._paused and not self._room_for(len(preparedMsg.payloadHybi)):
            return
        if compressing(self) and not preparedMsg.doNotCompress and not self._inflate_only:
            # Compressed for this connection: Autobahn sends (and counts)
            # it as an ordinary message.  Past the pacing, which this
            # prepared message has been through already.
            RouteProtocolMixin.sendMessage(self, preparedMsg.payload, preparedMsg.binary)
            return
        # Autobahn counts messages sent with sendMessage only.
        self.prepared_sent += 1
        super().sendPreparedMessage(preparedMsg)  # type: ignore[misc]

    def _after_message(self, preparedMsg: PreparedMessage) -> None:
        queued = self._queued_after_message
        waiting = sum(len(p.payloadHybi) for p in queued) if queued else 0
        if not self._room_for(len(preparedMsg.payloadHybi), waiting):
            return
        self._queued_after_message = (queued or ()) + (preparedMsg,)

    def endMessage(self) -> None:
        super().endMessage()  # type: ignore[misc]
        queued, self._queued_after_message = self._queued_after_message, None
        for prepared in queued or ():
            self.sendPreparedMessage(prepared)

    def sendData(self, data: bytes, sync: bool = False, chopsize: Optional[int] = None) -> None:
        if self._paused:
            self._backlog += len(data)
            if self._send_cap and self._backlog > self._send_cap + _CONTROL_SLACK:
                self._drop_slow_consumer()
                return
        super().sendData(data, sync, chopsize)  # type: ignore[misc]

    def _room_for(self, size: int, waiting: Optional[int] = None) -> bool:
        """
        Whether a message of C{size} bytes may be queued, given C{waiting}
        bytes already waiting (the backlog while paused, by default); if
        not, apply the route's slow-consumer policy.
        """
        if self.state != self.STATE_OPEN:  # type: ignore[attr-defined]
            return False  # closing: nothing more is worth queueing
        if waiting is None:
            waiting = self._backlog
        if not self._send_cap or waiting + size <= self._send_cap:
            return True
        if self._drop_slow:
            self.dropped_messages += 1
            if self.registry is not None:
                self.registry.stats.dropped[self.route_path] += 1
            if self.dropped_messages == 1 or self.dropped_messages % 1000 == 0:
                log.info(
                    "slow consumer route={route} peer={peer}: dropped {n} message(s) "
                    "(more than {cap} bytes waiting)",
                    route=self.route_path,
                    peer=self.peer,  # type: ignore[attr-defined]
                    n=self.dropped_messages,
                    cap=self._send_cap,
                )
            return False
        log.info(
            "slow consumer route={route} peer={peer}: closing with 1008 "
            "(more than {cap} bytes waiting)",
            route=self.route_path,
            peer=self.peer,  # type: ignore[attr-defined]
            cap=self._send_cap,
        )
        if self.registry is not None:
            self.registry.stats.slow_closed[self.route_path] += 1
        close_with(self, 1008, "slow consumer: too much data waiting")
        return False

    def _drop_slow_consumer(self) -> None:
        log.info(
            "slow consumer route={route} peer={peer}: dropped the connection "
            "(not reading, {n} bytes waiting)",
            route=self.route_path,
            peer=self.peer,  # type: ignore[attr-defined]
            n=self._backlog,
        )
        self._send_cap = 0
        self.dropConnection(abort=True)  # type: ignore[attr-defined]


def close_with(protocol: Any, code: int, reason: str) -> None:
    """
    Start the closing handshake with any valid close code.

    Autobahn's C{sendClose} accepts only 1000 and 3000-4999 from
    applications; the server itself may send 1001 (going away) or 1008
    (policy violation) too.
    """
    if protocol.state == protocol.STATE_OPEN:
        protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)


class ReceiveGuardMixin:
    """
    For a handler that keeps Autobahn's receive path: an exception from
    its callbacks ends its own connection with 1011 (see
    L{RouteProtocolMixin.handler_failed}) instead of escaping into the
    reactor.  (The fast path has the same guard built in.)
    """

    def dataReceived(self, data: bytes) -> None:
        try:
            super().dataReceived(data)  # type: ignore[misc]
        except Exception:
            self.handler_failed("a message callback")  # type: ignore[attr-defined]


class FragmentCapMixin:
    """
    Fail a message that arrives in more frames than the route allows.
    """

    _max_fragments: int = 0
    _fragments: int = 0

    def onMessageBegin(self, isBinary: bool) -> None:
        self._fragments = 0
        super().onMessageBegin(isBinary)  # type: ignore[misc]

    def onMessageFrameBegin(self, length: int) -> None:
        self._fragments += 1
        if self._fragments > self._max_fragments:
            if not self.failedByMe:  # type: ignore[attr-defined]
                fail_connection(
                    self, 1009, f"message split into more than {self._max_fragments} frames"
                )
            return
        super().onMessageFrameBegin(length)  # type: ignore[misc]


class IdleTimeoutMixin:
    """
    Close a connection that has received no message for C{idle_timeout}.
    """

    _idle_timeout: float = 0.0
    _idle_call: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[misc]
        # txaio's loop, as Autobahn's own timers use.
        self._idle_call = txaio.call_later(  # type: ignore[attr-defined]
            self._idle_timeout, self._idle_expired
        )

    def onMessageBegin(self, isBinary: bool) -> None:
        # Messages count as activity; keepalive pings and pongs do not.
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self._idle_timeout)
        super().onMessageBegin(isBinary)  # type: ignore[misc]

    def connectionLost(self, reason: Any = None) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        super().connectionLost(reason)  # type: ignore[misc]

    def _idle_expired(self) -> None:
        log.info(
            "idle timeout route={route} peer={peer} after {t}s",
            route=getattr(self, "route_path", ""),
            peer=getattr(self, "peer", ""),
            t=self._idle_timeout,
        )
        if self.state == self.STATE_OPEN:  # type: ignore[attr-defined]
            close_with(self, 1000, "idle timeout")
        else:
            self.dropConnection(abort=True)  # type: ignore[attr-defined]


def _clock() -> Any:
    # txaio's loop, as Autobahn's timers use (a test's clock in tests).
    loop = txaio.config.loop  # type: ignore[attr-defined]
    if loop is None:
        from twisted.internet import reactor as loop
    return loop


class PacingMixin:
    """
    Keep at least C{send_delay} seconds between messages sent to one
    client, without blocking the reactor and without reordering: a message
    sent too soon waits in a queue, which counts against C{max_send_queue}.

    It sits in front of L{RouteProtocolMixin}, so each message passes the
    backpressure checks when it is really sent.
    """

    _send_delay: float = 0.0
    _pace_queue: Any = None
    _pace_bytes: int = 0
    _pace_next: float = 0.0
    _pace_call: Any = None

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: Optional[int] = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        send = super().sendMessage  # type: ignore[misc]
        self._pace(lambda: send(payload, isBinary, fragmentSize, sync, doNotCompress), len(payload))

    def sendPreparedMessage(self, preparedMsg: PreparedMessage) -> None:
        send = super().sendPreparedMessage  # type: ignore[misc]
        self._pace(lambda: send(preparedMsg), len(preparedMsg.payloadHybi))

    def _pace(self, send: Any, size: int) -> None:
        clock = _clock()
        now = clock.seconds()
        if self._pace_queue is None:
            self._pace_queue = deque()
        if not self._pace_queue and now >= self._pace_next:
            self._pace_next = now + self._send_delay
            send()
            return
        if not self._room_for(size, self._pace_bytes):  # type: ignore[attr-defined]
            return
        self._pace_queue.append((send, size))
        self._pace_bytes += size
        if self._pace_call is None:
            self._pace_call = clock.callLater(max(0.0, self._pace_next - now), self._release)

    def _release(self) -> None:
        self._pace_call = None
        if not self._pace_queue or self.state != self.STATE_OPEN:  # type: ignore[attr-defined]
            self._pace_queue = deque()
            self._pace_bytes = 0
            return
        send, size = self._pace_queue.popleft()
        self._pace_bytes -= size
        clock = _clock()
        self._pace_next = clock.seconds() + self._send_delay
        send()
        if self._pace_queue:
            self._pace_call = clock.callLater(self._send_delay, self._release)

    def connectionLost(self, reason: Any = None) -> None:
        if self._pace_call is not None and self._pace_call.active():
            self._pace_call.cancel()
        self._pace_queue = None
        super().connectionLost(reason)  # type: ignore[misc]


class InflateOnlyMixin:
    """
    Accept compressed messages from the client but never compress ours.

    permessage-deflate lets each message choose: leaving RSV1 clear sends a
    message uncompressed on a connection where the extension is in use.
    """

    _inflate_only = True

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


@functools.cache
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
    @return: a subclass of C{handler}.
    """
    bases: tuple[type, ...] = (RouteProtocolMixin,)
    if options.send_delay:
        bases = (PacingMixin,) + bases
    namespace: dict[str, Any] = {
        "route_path": route_path,
        "__module__": handler.__module__,
        "__qualname__": handler.__qualname__,
        "_send_delay": options.send_delay,
        "_channel_namespace": channel_namespace or options.channel_namespace or route_path,
    }
    if options.max_fragments:
        bases += (FragmentCapMixin,)
        namespace["_max_fragments"] = options.max_fragments
    if options.idle_timeout:
        bases += (IdleTimeoutMixin,)
        namespace["_idle_timeout"] = options.idle_timeout
    if options.deflate == "inflate-only":
        bases += (InflateOnlyMixin,)
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
        namespace["_writes"] = scheduler_for(getattr(factory, "reactor", None))
        namespace["_factory_options"] = shared
        namespace.update((name, getattr(factory, name)) for name in shared)
        # Every option is now on the class: nothing is left for Autobahn's
        # per-connection copy loop, which also pretty-prints the options
        # for a debug log line that is formatted whether or not anyone
        # reads it (a third of the cost of a handshake, measured).
        namespace["CONFIG_ATTRS"] = ()
    try:
        # LeanServerProtocol goes right above Autobahn, below the handler.
        lean = (LeanServerProtocol,) if LEAN_PROTOCOL else ()
        cls = type(handler.__name__, bases + (handler, *lean), namespace)
    except TypeError:  # a handler whose bases admit no such order
        bases = tuple(b for b in bases if b is not DirectHandshakeMixin)
        cls = type(handler.__name__, bases + (handler,), namespace)
    # What the fast path calls for a message: the onMessage behind wsmux's
    # watching wrapper (it watches a returned Deferred itself).
    mro = cls.__mro__
    behind = mro[mro.index(RouteProtocolMixin) + 1 :]
    cls._handler_on_message = next(  # type: ignore[attr-defined]
        k.__dict__["onMessage"] for k in behind if "onMessage" in k.__dict__
    )
    if factory is not None:
        factory.route_classes.append(cls)
    return cls
