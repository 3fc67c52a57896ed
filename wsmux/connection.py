"""
The connection: what wsmux keeps for one WebSocket connection, and what a
handler reaches as C{self.wsmux}.

A handler stays a plain Autobahn C{WebSocketServerProtocol} subclass.  wsmux
adds one attribute to it, C{wsmux}, a L{Connection}: the route's path
parameters, the client's address, the route's channels, backpressure for
producers.  The connection owns what wsmux does for the connection's life
(its producers, its idle, pacing and linger timers, its slow-consumer
policy, its end), following its route's L{RoutePolicy}; the protocol class
in front of the handler only hands Autobahn's events to it.

Every other name wsmux gives a route class either is one of Autobahn's own
(C{onOpen}, C{sendMessage}, ...) or starts with C{_wsmux}, so a handler's
own attributes (C{channels}, C{registry}, C{_paused}...) are never
shadowed.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Callable, Mapping, Optional, Union

import txaio
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from wsmux._compat_twisted import TCP_SERVERS
from wsmux._deflate import deflate_class
from wsmux._responses import http_phrase
from wsmux._upgrades import head_fields
from wsmux._writes import WriteScheduler, scheduler_for
from wsmux.factory import ProtocolOptions
from wsmux.logs import log

# The path parameters of a route that has none (never changed).
NO_PARAMS: Mapping[str, str] = {}
_OPEN = WebSocketProtocol.STATE_OPEN
_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_CLOSING = WebSocketProtocol.STATE_CLOSING
_CLOSED = WebSocketProtocol.STATE_CLOSED

# Bytes past max_send_queue that control frames (pongs, the close frame) may
# still add before a client that does not read is dropped outright.
CONTROL_SLACK = 64 * 1024


class Deny(ConnectionDeny):
    """
    Refuse an upgrade from C{onConnect}, with extra response headers:
    Autobahn's C{ConnectionDeny} plus the headers of WebSocket-Node's
    C{reject(status, reason, extraHeaders)}::

        raise Deny(401, "log in first", {"WWW-Authenticate": 'Bearer realm="chat"'})
        raise Deny(503, "busy", {"Retry-After": "30"})

    The reason is the status phrase (the HTTP phrase of the status when
    none is given); the response has no body.  A header name that is not
    an HTTP token, or one that frames the response (C{Content-Length},
    C{Connection}...), is dropped and logged; values lose control
    characters.

    @ivar headers: name to value (or a list of values, for C{Set-Cookie}).
    """

    def __init__(
        self, code: int, reason: Optional[str] = None, headers: Optional[Mapping[str, Any]] = None
    ) -> None:
        if reason is None:
            reason = http_phrase(code, "Refused")
        super().__init__(code, reason)
        self.headers = dict(headers or {})


class RoutePolicy:
    """
    How a route treats each of its connections, worked out once per route
    from its options.

    @ivar route: the route's path pattern, such as C{/rooms/{room}}.
    @ivar channel_namespace: the namespace of the route's channels.
    @ivar send_cap: bytes that may wait for a client that is not reading
        (C{max_send_queue}; 0 for no cap).
    @ivar drop_slow: past C{send_cap}, drop messages (C{True}) or close
        the connection with 1008 (C{False}).
    @ivar send_delay: seconds kept between two messages to one client.
    @ivar idle_timeout: seconds without a message before a close (0: never).
    @ivar max_fragments: frames one message may arrive in (0: any).
    @ivar inflate_only: take compressed messages, send none.
    @ivar compress_from: the shortest message compressed where deflate is
        in use (C{deflate_threshold}; never, for inflate-only).
    @ivar deflate_class: the class the route's compressors become (see
        L{wsmux._deflate.deflate_class}), or C{None}.
    @ivar writes: the write scheduler of the route's reactor.
    @ivar on_message: the handler's own C{onMessage} function, which the
        fast receive path calls directly.
    @ivar send_message: the C{sendMessage} function behind wsmux's checks
        in the route's class, which they call directly.
    """

    __slots__ = (
        "route",
        "channel_namespace",
        "send_cap",
        "drop_slow",
        "send_delay",
        "idle_timeout",
        "max_fragments",
        "inflate_only",
        "compress_from",
        "deflate_class",
        "writes",
        "on_message",
        "send_message",
    )

    def __init__(
        self,
        options: ProtocolOptions,
        route: str,
        channel_namespace: Optional[str] = None,
        writes: Optional[WriteScheduler] = None,
    ) -> None:
        self.route = route
        self.channel_namespace = channel_namespace or options.channel_namespace or route
        self.send_cap = options.max_send_queue
        self.drop_slow = options.slow_consumer == "drop"
        self.send_delay = options.send_delay
        self.idle_timeout = options.idle_timeout
        self.max_fragments = options.max_fragments
        self.inflate_only = options.deflate == "inflate-only"
        self.compress_from: float = float("inf") if self.inflate_only else options.deflate_threshold
        self.deflate_class = deflate_class(options)
        self.writes = writes if writes is not None else scheduler_for(None)
        self.on_message: Any = None
        self.send_message: Any = None

    def __repr__(self) -> str:
        return f"<RoutePolicy {self.route!r}>"


def clock() -> Any:
    """
    txaio's loop, as Autobahn's own timers use (a test's clock in tests).
    """
    loop = txaio.config.loop  # type: ignore[attr-defined]
    if loop is None:
        from twisted.internet import reactor as loop
    return loop


# The close codes an endpoint may send (RFC 6455 7.4.1 and the IANA
# registry): not 1004-1006 or 1015, which are never sent, nor 1016-2999.
SENDABLE_CLOSE_CODES = frozenset([*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)])


def closed_with(
    protocol: Any, code: Optional[int], reason: Union[str, bytes, None]
) -> tuple[Optional[int], str]:
    """
    The code and reason that closed a connection: the ones this side sent
    when it started the closing handshake, else the peer's (C{code} and
    C{reason}, as Autobahn's C{onClose} has them; the peer's echo of our
    code says nothing new).
    """
    if protocol.closedByMe and protocol.localCloseCode is not None:
        code, reason = protocol.localCloseCode, protocol.localCloseReason
    if isinstance(reason, bytes):  # as Autobahn keeps a reason it sent
        reason = reason.decode("utf-8", "replace")
    return code, reason or ""


def close_reason(reason: Optional[str]) -> bytes:
    """
    A close reason as sent: UTF-8, cut to the 123 bytes a close frame
    holds, never in the middle of a character.
    """
    raw = (reason or "").encode("utf-8")
    if len(raw) <= 123:
        return raw
    return raw[:123].decode("utf-8", "ignore").encode("utf-8")


# The characters of an HTTP token (RFC 9110 5.6.2): what a cookie name is.
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def head_values(protocol: Any, name: bytes) -> list[bytes]:
    """
    The values of header C{name} (lower case) in C{protocol}'s request
    head (C{http_request_data}) as the client sent them, each header's
    bytes after its colon, unstripped; none when there is no head.
    """
    head = getattr(protocol, "http_request_data", None) or b""
    return [value for key, value in head_fields(head) if key == name]


def cookie_header(protocol: Any) -> str:
    """
    The request's C{Cookie} header.  A client that sent several (RFC 6265
    5.4 says one; some clients and proxies send more) has them joined with
    C{"; "}, not with the C{", "} Autobahn joins other repeated headers
    with, which would run one header's last value into the next one's
    first pair.  The separate headers are read from the request's head
    (C{http_request_data}) only when the joined value has a comma.
    """
    value: str = (getattr(protocol, "http_headers", None) or {}).get("cookie") or ""
    if "," in value:
        found = [v.strip(b" \t").decode("iso-8859-1") for v in head_values(protocol, b"cookie")]
        if len(found) > 1:
            value = "; ".join(found)
    return value


def parse_cookies(header: str) -> dict[str, str]:
    """
    The pairs of a C{Cookie} header, name to value (the first of a name
    wins, as browsers send the most specific first).
    """
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name or not _TOKEN.issuperset(name):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies


def close_with(protocol: Any, code: int, reason: Optional[str]) -> None:
    """
    Start the closing handshake with any valid close code.

    Autobahn's C{sendClose} accepts only 1000 and 3000-4999 from
    applications; the server itself may send 1001 (going away) or 1008
    (policy violation) too.
    """
    if protocol.state == _OPEN:
        protocol.sendCloseFrame(code=code, reasonUtf8=close_reason(reason), isReply=False)


# Connection ids: unique in the process, in the order connections came.
_ids = itertools.count(1)

# A connection's phases: made, open (the transport's producer), ended
# (letting go of the transport and its producers), lost (the transport is
# gone).
_MADE, _OPENED, _ENDED, _LOST = range(4)
LOST = _LOST


class _Extra:
    """
    What few connections need, kept apart so that the others do not pay
    for it (an idle connection's memory is one of the things wsmux is
    measured on).
    """

    __slots__ = (
        "waiters",
        "linger_call",
        "dropped_messages",
        "pace_queue",
        "pace_bytes",
        "pace_next",
        "pace_call",
        "after_message",
        "refusal_headers",
        "address_chain",
        "refused",
        "cookies",
        "read_holds",
    )

    def __init__(self) -> None:
        self.waiters: tuple[Deferred[None], ...] = ()
        self.linger_call: Any = None
        self.dropped_messages = 0
        self.pace_queue: Optional[deque[tuple[Callable[[], None], int]]] = None
        self.pace_bytes = 0
        self.pace_next = 0.0
        self.pace_call: Any = None
        self.after_message: Optional[tuple[Any, ...]] = None
        self.refusal_headers: Any = None
        self.address_chain: tuple[str, ...] = ()
        self.refused = False
        self.cookies: Optional[dict[str, str]] = None
        self.read_holds: frozenset[object] = frozenset()


@implementer(IPushProducer)
class Connection:
    """
    One WebSocket connection on a wsmux route, as its handler sees it
    (C{self.wsmux}) and as wsmux runs it.

    The attributes and methods documented here are the handler-facing API;
    those starting with an underscore are wsmux's own.

    @ivar id: a number no other connection of this process has; every log
        line about the connection says it (C{conn=17}).
    @ivar protocol: the handler instance serving the connection.
    @ivar policy: the route's L{RoutePolicy}.
    @ivar path_params: the values of the route's named path parameters, for
        example C{{"room": "lobby"}} for C{/rooms/{room}} and C{/rooms/lobby}.
    @ivar client_address: the client's address (behind trusted proxies: the
        address they vouch for).
    @ivar subprotocol: the route's default subprotocol, chosen when the
        handler's C{onConnect} chooses none; L{None} if it has none.
    @ivar paused: whether wsmux has paused the connection because the
        client is not reading.
    @ivar dropped_messages: messages not sent because the client was too
        slow (with the C{drop} policy).
    @ivar latency: the round trip of the last keepalive ping, in seconds
        (L{None} until a pong has come back; pings are the route's
        C{ping_interval}).
    @ivar prepared_sent: prepared (broadcast) messages sent, which
        Autobahn's own traffic counters leave out.
    """

    __slots__ = (
        "id",
        "protocol",
        "policy",
        "path_params",
        "client_address",
        "subprotocol",
        "paused",
        "prepared_sent",
        "_registry",
        "_place",
        "_channels",
        "_backlog",
        "_producers",
        "_phase",
        "_fragments",
        "_idle_call",
        "_extra",
        "latency",
    )

    def __init__(
        self,
        protocol: Any,
        policy: RoutePolicy,
        path_params: Mapping[str, str] = NO_PARAMS,
        client_address: str = "",
        subprotocol: Optional[str] = None,
        registry: Any = None,
        place: Any = None,
    ) -> None:
        self.id = next(_ids)
        self.protocol = protocol
        self.policy = policy
        self.path_params = path_params
        self.client_address = client_address
        self.subprotocol = subprotocol
        self.paused = False
        self.prepared_sent = 0
        self._registry = registry
        self._place = place
        self._channels: Any = None
        self._backlog = 0
        self._producers: tuple[Any, ...] = ()
        self._phase = _MADE
        self._fragments = 0
        self._idle_call: Any = None
        # What few connections need (see _Extra), made on first use.
        self._extra: Optional[_Extra] = None
        self.latency: Optional[float] = None

    def __repr__(self) -> str:
        return f"<Connection route={self.policy.route!r} client={self.client_address!r}>"

    # -- what a handler uses ---------------------------------------------------

    @property
    def route(self) -> str:
        """
        The route's path pattern, such as C{/rooms/{room}}.
        """
        return self.policy.route

    @property
    def channels(self) -> Any:
        """
        The route's channels (a L{wsmux.channels.RouteChannels}), made on
        first use: most connections never touch a channel.  L{None} for a
        connection that belongs to no route tree.
        """
        view = self._channels
        if view is None and self._registry is not None:
            view = self._channels = self._registry.channels.namespace(self.policy.channel_namespace)
        return view

    @property
    def address_chain(self) -> tuple[str, ...]:
        """
        The addresses the trusted proxies vouch for, the client first and
        the peer that connected last (WebSocket-Node's
        C{remoteAddresses}); just the client's without trusted proxies.
        """
        extra = self._extra
        if extra is not None and extra.address_chain:
            return extra.address_chain
        return (self.client_address,)

    @property
    def cookies(self) -> dict[str, str]:
        """
        The request's cookies, name to value, read once (RFC 6265 5.4's
        C{name=value} pairs; a value in double quotes loses them; a pair
        whose name is not a token, or without an C{=}, is skipped).

        Not the standard library's C{SimpleCookie}: it drops a whole
        header for one bad pair, and its unquoting is quadratic on some
        Pythons (CVE-2024-7592), which a client could use to stall the
        server.  This is one linear pass over a header the head caps
        bound.
        """
        extra = self._extra
        if extra is not None and extra.cookies is not None:
            return extra.cookies
        cookies = parse_cookies(cookie_header(self.protocol))
        self._more().cookies = cookies
        return cookies

    @property
    def tls(self) -> bool:
        """
        Whether the connection came over TLS (wss://).
        """
        transport = self.protocol.transport
        return ISSLTransport.providedBy(transport) or getattr(transport, "wsmux_tls", False)

    @property
    def http2(self) -> bool:
        """
        Whether the WebSocket runs on an HTTP/2 stream (RFC 8441) rather
        than a connection of its own.
        """
        # Asked of the class: a TLS transport would look a missing name up
        # on its TCP transport (ProtocolWrapper.__getattr__), and fail.
        return bool(getattr(type(self.protocol.transport), "wsmux_http2", False))

    @property
    def server_name(self) -> Optional[str]:
        """
        The host name the client asked for in its TLS handshake (SNI), or
        L{None} (no TLS, or no name sent).
        """
        transport = self.protocol.transport
        handle = getattr(transport, "getHandle", None)
        if handle is None or not self.tls:
            return None
        try:
            name = handle().get_servername()
        except Exception:
            return None
        return name.decode("ascii", "replace") if name else None

    @property
    def dropped_messages(self) -> int:
        """
        Messages not sent because the client was too slow (with the
        C{drop} slow-consumer policy).
        """
        extra = self._extra
        return extra.dropped_messages if extra is not None else 0

    @property
    def ended(self) -> bool:
        """
        Whether the connection has ended (or is closing for good).
        """
        return self._phase >= _ENDED

    def route_connections(self) -> frozenset[Any]:
        """
        The open connections of this connection's route (this one among
        them), as handler instances; the whole tree's are
        C{RouteTree.open_connections()}.  Empty outside a route tree.
        """
        registry = self._registry
        return registry.open_connections(self.policy.route) if registry is not None else frozenset()

    def writable(self) -> Deferred[None]:
        """
        A Deferred that fires once the client is taking data: at once
        unless wsmux has paused this connection because the client is not
        reading, and fails with L{ConnectionDone} once the connection has
        ended.  Producers of data await it between chunks.
        """
        if self._phase >= _ENDED:
            return fail(ConnectionDone("the connection closed"))
        if not self.paused:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        extra = self._more()
        extra.waiters += (waiter,)
        return waiter

    def register_producer(self, producer: Any) -> None:
        """
        Register a push producer that writes to this connection: wsmux
        pauses it while the client is not reading and stops it, once, when
        the connection ends.  (The handler's C{registerProducer(producer,
        True)} does the same.)
        """
        if self._phase >= _ENDED:
            # Too late: the connection has ended, so the producer stops now
            # rather than run for ever with nobody to stop it.
            producer.stopProducing()
            return
        if producer in self._producers:
            return  # registered already: it is paused, resumed and stopped once
        self._producers += (producer,)
        if self.paused:
            producer.pauseProducing()

    def unregister_producer(self, producer: Any = None) -> None:
        """
        Forget a producer without stopping it (the last registered one when
        none is named).
        """
        if not self._producers:
            return
        if producer is None:
            producer = self._producers[-1]
        self._producers = tuple(p for p in self._producers if p is not producer)

    def close(self, code: int = 1000, reason: Optional[str] = "") -> None:
        """
        Close the connection with any close code an endpoint may send:
        1000-1003, 1007-1014 (1001 going away, 1008 policy violation, 1011
        internal error, 1012 restart, 1013 try again later...) and
        3000-4999.  (Autobahn's own C{sendClose} takes only 1000 and
        3000-4999.)

        The closing handshake starts now; the connection ends when the
        client answers, or after the route's C{close_handshake_timeout}.
        Before the connection is open it is dropped; once closing, nothing
        happens.

        @param reason: sent with the code, cut to the 123 bytes of UTF-8 a
            close frame holds.
        @raise ValueError: for a code an endpoint may not send.
        """
        if code not in SENDABLE_CLOSE_CODES:
            raise ValueError(
                f"close code {code!r} cannot be sent (use 1000-1003, 1007-1014 or 3000-4999)"
            )
        if self.protocol.state == _CONNECTING:
            self.drop()
        else:
            close_with(self.protocol, code, reason)

    def drop(self) -> None:
        """
        End the connection at once, without the closing handshake (the
        client sees it as 1006, abnormal closure).
        """
        protocol = self.protocol
        if protocol.state != _CLOSED and protocol.transport is not None:
            protocol.wasClean = False
            protocol.dropConnection(abort=True)

    def _more(self) -> _Extra:
        extra = self._extra
        if extra is None:
            extra = self._extra = _Extra()
        return extra

    # -- the connection's life ------------------------------------------------

    def opened(self, transport: Any) -> None:
        """
        The transport is connected: count the connection, watch the
        transport's buffer, arm the idle timer.
        """
        registry = self._registry
        if registry is not None:
            # From now on _place is the place the registry gave it.
            self._place = registry.add(
                self.protocol, self.client_address, self._place, self.policy.route
            )
        transport.registerProducer(self, True)
        self._phase = _OPENED
        if self.policy.idle_timeout:
            # txaio's loop, as Autobahn's own timers use.
            self._idle_call = txaio.call_later(  # type: ignore[attr-defined]
                self.policy.idle_timeout, self._idle_expired
            )

    def transport_closing(self) -> None:
        """
        The transport is being closed some other way than wsmux's and
        Autobahn's (a handler's own C{self.transport.loseConnection()}):
        let go of it and bound the close, as those do.  Twisted's TLS
        transport would otherwise wait for its producer (this connection)
        to go before sending its close_notify: for ever.
        """
        if self._phase < _ENDED:
            # What is held for it goes first (the 101, when a handler
            # closes in onOpen), as before wsmux's own closes.
            self.policy.writes.release(self.protocol.transport)
            self.end()
            self.dropping(False)

    def dropping(self, abort: bool) -> None:
        """
        wsmux or Autobahn decided to close the transport (and L{end} has
        run): bound how long a polite close may linger.
        """
        protocol = self.protocol
        if abort or self._phase == _LOST or not protocol.transport:
            return
        extra = self._more()
        if extra.linger_call is None:
            # Closing politely waits for what is still to be sent and, over
            # TLS, for the peer's close_notify: a peer that never reads or
            # never answers must not hold the connection for ever.  (Plain
            # TCP with nothing left to send has closed already: no timer.)
            extra.linger_call = clock().callLater(
                max(1.0, protocol.closeHandshakeTimeout or 0.0), self._linger_expired
            )

    def _linger_expired(self) -> None:
        if self._extra is not None:
            self._extra.linger_call = None
        transport: Any = self.protocol.transport
        if transport is not None:
            getattr(transport, "abortConnection", transport.loseConnection)()

    def lost(self) -> None:
        """
        The transport is gone: cancel every timer, leave the registry and
        every channel.
        """
        if self._phase < _ENDED:
            self.end()
        call = self._idle_call
        if call is not None:
            self._idle_call = None
            if call.active():
                call.cancel()
        extra = self._extra
        if extra is not None:
            for call in (extra.linger_call, extra.pace_call):
                if call is not None and call.active():
                    call.cancel()
            extra.linger_call = extra.pace_call = extra.pace_queue = None
        self._phase = _LOST
        registry = self._registry
        if registry is not None:
            registry.remove(self.protocol, self._place, self.policy.route)
            # Every channel it joined, in any namespace (a handler may reach
            # past its route's through the hub).
            registry.channels.unsubscribe(self.protocol)

    def end(self) -> None:
        """
        Let go of the transport and stop every producer, once.

        The connection stops being the transport's producer (Twisted's TLS
        transport will not close while a producer is registered), reading
        resumes if backpressure had paused it (a TLS close needs the peer's
        close_notify), writers waiting for room are told the connection
        closed, and each handler producer is stopped exactly once.
        """
        phase = self._phase
        if phase >= _ENDED:
            return
        self._phase = _ENDED
        transport: Any = self.protocol.transport
        # Twisted's plain TCP transport closes with a producer registered
        # (and stops it when the connection is lost): only the others (TLS
        # above all) need letting go of.
        if phase == _OPENED and transport is not None and transport.__class__ not in TCP_SERVERS:
            transport.unregisterProducer()
            if self.paused:
                self.paused = False
                transport.resumeProducing()
        extra = self._extra
        if extra is not None and extra.read_holds:
            # Held by a handler's full consumer: read again, to see the
            # peer's close (and a TLS close_notify) through.
            extra.read_holds = frozenset()
            if transport is not None and not self.paused:
                transport.resumeProducing()
        if extra is not None and extra.waiters:
            waiters, extra.waiters = extra.waiters, ()
            for waiter in waiters:
                waiter.errback(ConnectionDone("the connection closed"))
        producers, self._producers = self._producers, ()
        for producer in producers:
            try:
                producer.stopProducing()
            except Exception:
                log.failure("route {route}: a producer failed to stop", route=self.policy.route)

    # -- backpressure: the transport calls these as its buffer fills and drains

    def pauseProducing(self) -> None:
        # Twisted calls this after every write while its buffer is full.
        if self.paused:
            return
        self.paused = True
        self._backlog = 0
        self.protocol.transport.pauseProducing()
        for producer in self._producers:
            producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self._backlog = 0
        extra = self._extra
        if extra is None or not extra.read_holds:
            self.protocol.transport.resumeProducing()
        for producer in self._producers:
            producer.resumeProducing()
        if extra is not None and extra.waiters:
            waiters, extra.waiters = extra.waiters, ()
            for waiter in waiters:
                waiter.callback(None)

    def stopProducing(self) -> None:
        # The transport calls this when the connection is lost.
        self.end()

    # -- holding reading from the client ----------------------------------------

    def hold_reading(self, holder: object) -> None:
        """
        Stop reading from the client until C{holder} lets go (see
        L{release_reading}): for a handler whose consumer is full (an
        async handler's queue, a program's standard input).  Reading
        resumes only once no holder holds it and the client is taking what
        wsmux sends.
        """
        if self._phase >= _ENDED:
            return
        extra = self._more()
        if holder in extra.read_holds:
            return
        extra.read_holds |= {holder}
        transport: Any = self.protocol.transport
        if transport is not None:
            transport.pauseProducing()

    def release_reading(self, holder: object) -> None:
        """
        Let go of a hold taken with L{hold_reading}.
        """
        extra = self._extra
        if extra is None or holder not in extra.read_holds:
            return
        extra.read_holds -= {holder}
        transport: Any = self.protocol.transport
        if (
            not extra.read_holds
            and not self.paused
            and self._phase < _ENDED
            and transport is not None
        ):
            transport.resumeProducing()

    def room_for(self, size: int, waiting: Optional[int] = None) -> bool:
        """
        Whether a message of C{size} bytes may be queued, given C{waiting}
        bytes already waiting (the backlog while paused, by default); if
        not, apply the route's slow-consumer policy.
        """
        protocol = self.protocol
        if protocol.state != _OPEN:
            return False  # closing: nothing more is worth queueing
        if waiting is None:
            waiting = self._backlog
        cap = self.policy.send_cap
        if not cap or waiting + size <= cap:
            return True
        registry = self._registry
        if self.policy.drop_slow:
            extra = self._more()
            extra.dropped_messages += 1
            dropped = extra.dropped_messages
            if registry is not None:
                registry.stats.dropped[self.policy.route] += 1
            if dropped == 1 or dropped % 1000 == 0:
                log.info(
                    "slow consumer route={route} conn={conn} peer={peer}: dropped {n} message(s) "
                    "(more than {cap} bytes waiting)",
                    conn=self.id,
                    route=self.policy.route,
                    peer=protocol.peer,
                    n=dropped,
                    cap=cap,
                )
            return False
        log.info(
            "slow consumer route={route} conn={conn} peer={peer}: closing with 1008 "
            "(more than {cap} bytes waiting)",
            conn=self.id,
            route=self.policy.route,
            peer=protocol.peer,
            cap=cap,
        )
        if registry is not None:
            registry.stats.slow_closed[self.policy.route] += 1
        close_with(protocol, 1008, "slow consumer: too much data waiting")
        return False

    def sending(self, size: int) -> bool:
        """
        C{size} bytes are about to be written while the client is not
        reading: whether they may be (a client past its cap plus room for
        control frames is dropped).
        """
        if self._phase >= _ENDED:
            return True  # dropped already, or closing: the close frame goes
        self._backlog += size
        cap = self.policy.send_cap
        if cap and self._backlog > cap + CONTROL_SLACK:
            log.info(
                "slow consumer route={route} conn={conn} peer={peer}: dropped the connection "
                "(not reading, {n} bytes waiting)",
                conn=self.id,
                route=self.policy.route,
                peer=self.protocol.peer,
                n=self._backlog,
            )
            self.protocol.dropConnection(abort=True)
            return False
        return True

    def after_message(self, prepared: Any) -> None:
        """
        Keep a whole message for after the one being streamed to this
        client (RFC 6455 5.4 allows no message inside another).
        """
        extra = self._more()
        queued = extra.after_message
        waiting = sum(len(p.payloadHybi) for p in queued) if queued else 0
        if self.room_for(len(prepared.payloadHybi), waiting):
            extra.after_message = (queued or ()) + (prepared,)

    def take_after_message(self) -> tuple[Any, ...]:
        extra = self._extra
        if extra is None or extra.after_message is None:
            return ()
        queued, extra.after_message = extra.after_message, None
        return queued

    # -- policies --------------------------------------------------------------

    def pace(self, send: Callable[[], None], size: int) -> None:
        """
        Send now, or after the route's C{send_delay} since the last message
        (in order; waiting messages count against C{max_send_queue}).
        """
        extra = self._more()
        now = clock().seconds()
        if not extra.pace_queue and now >= extra.pace_next:
            extra.pace_next = now + self.policy.send_delay
            send()
            return
        if not self.room_for(size, extra.pace_bytes):
            return
        if extra.pace_queue is None:
            extra.pace_queue = deque()
        extra.pace_queue.append((send, size))
        extra.pace_bytes += size
        if extra.pace_call is None:
            extra.pace_call = clock().callLater(max(0.0, extra.pace_next - now), self._release)

    def _release(self) -> None:
        extra = self._more()
        extra.pace_call = None
        queue = extra.pace_queue
        if not queue or self.protocol.state != _OPEN:
            extra.pace_queue = None
            extra.pace_bytes = 0
            return
        send, size = queue.popleft()
        extra.pace_bytes -= size
        extra.pace_next = clock().seconds() + self.policy.send_delay
        send()
        if extra.pace_queue:
            extra.pace_call = clock().callLater(self.policy.send_delay, self._release)

    def activity(self) -> None:
        """
        A message arrived: the idle timer starts again.  (Keepalive pings
        and pongs do not count.)
        """
        call = self._idle_call
        if call is not None and call.active():
            call.reset(self.policy.idle_timeout)

    def _idle_expired(self) -> None:
        self._idle_call = None
        protocol = self.protocol
        log.info(
            "idle timeout route={route} conn={conn} peer={peer} after {t}s",
            conn=self.id,
            route=self.policy.route,
            peer=getattr(protocol, "peer", ""),
            t=self.policy.idle_timeout,
        )
        if protocol.state == _OPEN:
            close_with(protocol, 1000, "idle timeout")
        else:
            protocol.dropConnection(abort=True)

    def message_begins(self) -> None:
        self._fragments = 0
        self.activity()

    def fragment_allowed(self) -> bool:
        """
        A frame of the current message begins: whether the route allows
        one more.
        """
        self._fragments += 1
        return self._fragments <= self.policy.max_fragments

    # -- user code failing -----------------------------------------------------

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
        close code.  Once the transport is gone (a handler's
        C{connectionLost} raised) it is only logged.

        @param where: the callback that raised, for the log line.
        @param failure: the failure (the exception being handled when not
            given).
        """
        failure = failure if failure is not None else Failure()
        protocol = self.protocol
        # Gone: Autobahn's state may still say open, when the handler's
        # connectionLost raised before Autobahn's own ran.
        state = _CLOSED if self._phase == _LOST else protocol.state
        answered = getattr(protocol, "http_response_data", None) is not None
        log.failure(
            "route {route} conn={conn} peer={peer}: the handler raised in {where}; {action}",
            failure,
            conn=self.id,
            route=self.policy.route,
            peer=getattr(protocol, "peer", "?"),
            where=where,
            action=(
                "the connection is closed already"
                if state == _CLOSED
                else "closing with 1011"
                if state == _OPEN
                else "answering 500"
                if not answered
                else "dropping the connection"
            ),
        )
        if self._registry is not None:
            self._registry.stats.handler_errors[self.policy.route] += 1
        if state == _OPEN:
            close_with(protocol, 1011, "internal error")
        elif state == _CONNECTING and not answered:
            protocol.failHandshake("Internal Server Error", 500)
        elif state != _CLOSED:
            protocol.dropConnection(abort=True)
