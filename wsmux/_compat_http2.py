"""
WebSockets over HTTP/2 (RFC 8441), on Twisted's HTTP/2 connection: the
seam's part that touches C{twisted.web._http2} (see L{wsmux._compat}).

Twisted serves HTTP/2 only through its private C{twisted.web._http2}, and
runs a request when its stream ends, which a WebSocket's stream never does.
L{WebSocketH2Connection} is Twisted's connection with three changes:

  - its SETTINGS say C{SETTINGS_ENABLE_CONNECT_PROTOCOL}, and an extended
    CONNECT with C{:protocol = websocket} becomes a L{WebSocketStream}: its
    request is run through the route tree at once, as an HTTP/1.1 upgrade
    request (the same route, hook, handler chain, checks and limits), and a
    route that takes it gets the stream as its transport;
  - every other request's body is capped as over HTTP/1.1, and
    connection-specific headers (which HTTP/2 forbids) are left out of
    responses;
  - the connection's write backpressure reaches every WebSocket on it.

Without Twisted's HTTP/2 (or the C{h2} library: the C{http2} extra), or with
its check failing, TLS ports offer C{http/1.1} only.

Checked against Twisted 24.7.0 and 26.10.0, with h2 4.4.1.
"""

from __future__ import annotations

import base64
import inspect
import os
from collections import deque
from io import BytesIO
from typing import Any, Iterable, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer, ISSLTransport, ITransport
from twisted.python.failure import Failure
from zope.interface import implementer

from wsmux._compat import all_of, code_names, declare, missing_names
from wsmux.limits import client_address
from wsmux.logs import log

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
    import priority
    from hyperframe.frame import GoAwayFrame
    from twisted.web._http2 import _END_STREAM_SENTINEL, H2Connection, H2Stream
except ImportError as e:  # the http2 extra is not installed
    _ABSENT: Optional[str] = f"the http2 extra is not installed ({e})"
    _Connection: Any = object
    _Stream: Any = object
else:
    _ABSENT = None
    _Connection = H2Connection
    _Stream = H2Stream


def _extended_connect_parses() -> Optional[str]:
    # h2 must take an extended CONNECT (RFC 8441) as a request.
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server.initiate_connection()
    client.initiate_connection()
    client.send_headers(
        1,
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/"),
            (":authority", "localhost"),
        ],
    )
    events = server.receive_data(client.data_to_send())
    if not any(isinstance(event, h2.events.RequestReceived) for event in events):
        return "h2 does not take an extended CONNECT request"
    return None


def _check() -> Optional[str]:
    if _ABSENT is not None:
        return _ABSENT
    return all_of(
        missing_names(
            H2Connection,
            (
                "_requestReceived",
                "_requestDataReceived",
                "_requestEnded",
                "_requestAborted",
                "_requestDone",
                "writeHeaders",
                "writeDataToStream",
                "endRequest",
                "abortRequest",
                "openStreamWindow",
                "remainingOutboundWindow",
                "timeoutConnection",
            ),
        ),
        code_names(
            H2Connection._requestReceived,
            ("streams", "_streamCleanupCallbacks", "_outboundStreamQueues", "priority"),
        ),
        code_names(
            H2Connection.dataReceived,
            ("_requestReceived", "_requestDataReceived", "_requestEnded", "_requestAborted"),
        ),
        code_names(H2Connection.__init__, ("_streamCleanupCallbacks", "_outboundStreamQueues")),
        code_names(H2Connection._requestDone, ("_streamCleanupCallbacks",)),
        code_names(H2Connection.pauseProducing, ("_consumerBlocked",)),
        code_names(
            H2Connection._sendPrioritisedData,
            (
                "_stillProducing",
                "_sendingDeferred",
                "_consumerBlocked",
                "_outboundStreamQueues",
                "_requestDone",
                "_END_STREAM_SENTINEL",
                "priority",
            ),
        ),  # fmt: skip
        code_names(H2Connection.__init__, ("_sendPrioritisedData",)),
        missing_names(
            H2Connection, ("_handleWindowUpdate", "_handlePriorityUpdate", "_tryToWriteControlData")
        ),
        code_names(
            H2Stream.__init__, ("_request", "_conn", "_inboundDataBuffer", "_convertHeaders")
        ),
        missing_names(
            H2Stream,
            ("windowUpdated", "flowControlBlocked", "registerProducer", "requestDone"),
        ),
        None
        if list(inspect.signature(H2Stream.__init__).parameters)
        == ["self", "streamID", "connection", "headers", "requestFactory", "site", "factory"]
        else "H2Stream takes other arguments",
        code_names(H2Connection.dataReceived, ("ConnectionTerminated", "connectionLost")),
        None
        if hasattr(h2.settings.SettingCodes, "ENABLE_CONNECT_PROTOCOL")
        else "h2 has no SETTINGS_ENABLE_CONNECT_PROTOCOL",
        _extended_connect_parses(),
    )


HTTP2 = declare(
    "http2.extended_connect",
    touches=(
        "twisted.web._http2.H2Connection / H2Stream",
        "H2Connection._requestReceived / _requestDataReceived / _requestEnded / _requestAborted",
        "H2Connection._requestDone / _streamCleanupCallbacks / _outboundStreamQueues",
        "H2Connection._sendPrioritisedData / _handleWindowUpdate / _handlePriorityUpdate",
        "H2Connection._consumerBlocked / _sendingDeferred / _stillProducing",
        "H2Connection._tryToWriteControlData",
        "twisted.web._http2._END_STREAM_SENTINEL",
        "H2Stream._request / _conn / _inboundDataBuffer / _convertHeaders",
    ),
    why=(
        "HTTP/2, and WebSockets on its streams (RFC 8441): Twisted serves HTTP/2 only "
        "through its private twisted.web._http2, and runs a request when its stream ends, "
        "which a WebSocket's stream never does"
    ),
    checked="Twisted 24.7.0, 26.10.0; h2 4.4.1, hyperframe 6.1.0",
    fallback="no HTTP/2: TLS ports offer http/1.1 only",
    check=_check,
    quiet=_ABSENT is not None,  # an extra not installed is not a fault
)

#: The ALPN protocols a TLS port offers, best first.
ALPN_HTTP2 = [b"h2", b"http/1.1"]

# Headers HTTP/2 forbids (RFC 9113 8.2.2): twisted.web and Autobahn write
# some of them on an HTTP/1.1 response; on a stream they are left out.
_CONNECTION_SPECIFIC = frozenset(
    [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)
# Headers of a 101 that only HTTP/1.1's upgrade needs (RFC 8441 5).
_UPGRADE_ONLY = _CONNECTION_SPECIFIC | {b"sec-websocket-accept"}
# Request headers of a WebSocket stream that the HTTP/1.1 head wsmux makes
# for it writes itself.
_MADE = frozenset([b"host", b"sec-websocket-key", b"content-length"])
# Request bodies capped at this or less are held in memory (wsmux.site's
# rule for HTTP/1.1).
_IN_MEMORY_BODY = 1024 * 1024
# Seconds a connection HTTP/2 gave up on has to finish closing (its TLS
# close_notify answered) before it is cut off.
_CLOSE_GRACE = 2.0
# The most a response head written by the WebSocket side may take.
_HEAD_MAX = 65536
_FORBIDDEN = (b"\r", b"\n", b"\0")
_NOT_IN_A_TARGET = bytes(range(0x21)) + b"\x7f"


def _h2_headers(pairs: Any, drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    return [(name.lower(), value) for name, value in pairs if name.lower() not in drop]


class _Guarded(_Stream):  # type: ignore[misc]
    """
    What wsmux changes in every stream: no connection-specific response
    headers.
    """

    def windowUpdated(self) -> None:
        if self._conn.write_blocked:
            return  # the connection's own buffer is full: not yet
        super().windowUpdated()

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        pairs = [(k, v) for (k, values) in headers.getAllRawHeaders() for v in values]
        self._conn.writeHeaders(
            version, code, reason, _h2_headers(pairs, _CONNECTION_SPECIFIC), self.streamID
        )


class RequestStream(_Guarded):
    """
    A stream carrying an ordinary request.  Its body is treated as over
    HTTP/1.1: capped (C{max_body_size}; larger gets 413), held in memory,
    holding a place in the connection caps while it is read, and due
    within the head deadline (408 after it).
    """

    _place: Any = None
    _deadline: Any = None

    def _convertHeaders(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        request = self._request
        limits = getattr(self.site, "limits", None)
        if limits is not None:
            cap = request.wsmux_body_cap = limits.max_body_size
            if cap and cap <= _IN_MEMORY_BODY:
                # Not a temporary file per stream (twisted.web's choice for
                # a body of unknown length), as over HTTP/1.1.
                request.gotLength = lambda length: setattr(request, "content", BytesIO())
        super()._convertHeaders(headers)

    def hold(self, registry: Any, timeout: float, clock: Any) -> Optional[tuple[int, str]]:
        """
        The request has a body to read: take a place in the caps for it,
        and arm its deadline.

        @return: the refusal when the caps are full, else L{None}.
        """
        place, refusal = registry.hold(client_address(self._request, registry.limits))
        if refusal is not None:
            return refusal  # type: ignore[no-any-return]
        self._place = place
        self._request.notifyFinish().addBoth(self._release)
        if timeout:
            self._deadline = clock.callLater(timeout, self._too_slow, timeout)
        return None

    def requestComplete(self) -> None:
        self._stop_deadline()
        super().requestComplete()

    def _too_slow(self, timeout: float) -> None:
        self._deadline = None
        self._conn.refuse_stream(
            self.streamID, 408, f"Request Timeout: the body took over {timeout:g} s"
        )

    def _stop_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _release(self, result: object) -> None:
        self._stop_deadline()
        place, self._place = self._place, None
        if place is not None:
            place.release()

    def body_too_large(self) -> None:
        self._conn.refuse_stream(self.streamID, 413, "Content Too Large")


class WebSocketStream(_Guarded):
    """
    A stream opened by an extended CONNECT for a WebSocket: the C{channel}
    of its request while the route tree decides, then (through
    L{StreamTransport}) the WebSocket protocol's transport.

    What the client sends before a route takes the stream is kept without
    opening the stream's window: at most the window (64 KiB) waits.
    """

    handed = False
    lost = False
    persistent = False

    def __init__(self, *args: Any) -> None:
        self._before: list[bytes] = []
        self._before_size = 0
        self._client_ended = False
        super().__init__(*args)
        # The hand-off takes the request channel's transport (and sets the
        # attribute to None): the stream keeps its own reference.
        self.socket = StreamTransport(self)
        self.transport: Optional[StreamTransport] = self.socket

    def _convertHeaders(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        # The request is a WebSocket upgrade as HTTP/1.1 would have sent it,
        # for the route tree to decide on and Autobahn to answer: its head
        # is made here, with a key of its own (RFC 8441 5 has none).
        request = self._request
        add = request.requestHeaders.addRawHeader
        path = authority = b""
        lines = []
        cookies = []
        for name, value in headers:
            if name[:1] == b":":
                if name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            if name == b"cookie":
                cookies.append(value)
                continue
            if name in _MADE:
                continue
            add(name, value)
            lines.append(b"%s: %s" % (name, value))
        if cookies:
            # Split into fields over HTTP/2, one header for HTTP/1.1 (RFC
            # 9113 8.2.3).
            cookie = b"; ".join(cookies)
            add(b"cookie", cookie)
            lines.append(b"cookie: " + cookie)
        key = base64.b64encode(os.urandom(16))
        for name, value in (
            (b"host", authority),
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-key", key),
        ):
            add(name, value)
            lines.append(b"%s: %s" % (name, value))
        self.command = b"GET"
        self.path = path
        # h2 checks names and values; the head made from them must not be
        # able to say more than they do, whatever h2 lets through.
        self.bad = (
            path[:1] != b"/"
            # Printable ASCII, as an HTTP/1.1 request line (printable_ascii).
            or not path.isascii()
            or len(path.translate(None, _NOT_IN_A_TARGET)) != len(path)
            or any(c in part for part in (path, authority, *lines) for c in _FORBIDDEN)
        )
        request.raw_head = b"GET %s HTTP/1.1\r\n%s\r\n\r\n" % (path, b"\r\n".join(lines))
        request.wsmux_upgrade = True
        request.gotLength(0)
        request.parseCookies()

    def start(self) -> None:
        """
        Run the request through the route tree (the stream has only begun).
        """
        if self.bad:
            self._conn.refuse_stream(self.streamID, 400, "Bad Request")
            return
        self._request.requestReceived(self.command, self.path, b"HTTP/2")

    # -- the hand-off (wsmux._takeover) ------------------------------------------

    def handed_off(self) -> None:
        self.handed = True

    def take_upgrade_rest(self) -> bytes:
        rest, size = b"".join(self._before), self._before_size
        self._before, self._before_size = [], 0
        if size:
            self._conn.open_window(self.streamID, size)
        if self._client_ended:
            # After what came before it.
            self._conn.reactor_call(0, self._end_of_client)
        return rest

    # -- what H2Connection calls ---------------------------------------------------

    def receiveDataChunk(self, data: bytes, flowControlledLength: int) -> None:
        if self.lost:
            self._conn.open_window(None, flowControlledLength)
        elif not self.handed:
            self._before.append(data)
            self._before_size += flowControlledLength
        elif not self.producing:
            self._inboundDataBuffer.append((data, flowControlledLength))
        else:
            self._deliver(data, flowControlledLength)

    def _deliver(self, data: bytes, size: int) -> None:
        protocol = self.socket.protocol
        if protocol is None:
            return
        protocol.dataReceived(data)
        self._conn.open_window(None if self.lost else self.streamID, size)

    def requestComplete(self) -> None:
        # The client ended its side (END_STREAM): like a TCP FIN, the
        # WebSocket is over (after what is still buffered).
        if not self.handed:
            self._client_ended = True
        elif not self.producing:
            self._inboundDataBuffer.append((None, 0))
        else:
            self._end_of_client()

    def _end_of_client(self) -> None:
        # Our side ends too, after what is queued (as a TCP transport
        # closes when the peer's FIN arrives).
        if not self.socket.disconnecting:
            self.socket.loseConnection()
        self._lose(Failure(ConnectionDone("the client ended the stream")))

    def connectionLost(self, reason: Failure) -> None:
        # A reset stream, or the whole connection gone.
        if self.handed:
            self._lose(reason)
        elif not self.lost:
            self.lost = True
            self._request.connectionLost(reason)

    def going_away(self, error_code: int) -> None:
        """
        The client sent GOAWAY: the WebSocket ends as a 1001 close.
        """
        protocol = self.socket.protocol
        if not self.handed or self.lost or protocol is None:
            return
        protocol.wasClean = True
        protocol.remoteCloseCode = 1001
        protocol.remoteCloseReason = (
            f"the client's HTTP/2 connection went away (GOAWAY {error_code})"
        )

    def finished(self, _: object = None) -> None:
        """
        Twisted let go of the stream (it sent END_STREAM or RST_STREAM):
        the WebSocket's transport is closed.
        """
        if self._before_size:
            # Kept for a route that did not take the stream: the
            # connection's window is given back.
            size, self._before, self._before_size = self._before_size, [], 0
            self._conn.open_window(None, size)
        if not self.handed:
            # Refused, and the answer is complete: the client need send no
            # more (RFC 9113 8.1), and the stream stops counting against
            # its limit.
            self._conn.no_more(self.streamID)
            return
        if self.lost:
            return
        if self.socket.aborted:
            # Inside the protocol's own abortConnection: it hears of it on
            # the next turn, as from a TCP transport.
            self._conn.reactor_call(0, self._lose, Failure(ConnectionAborted()))
        else:
            self._lose(Failure(ConnectionDone("the stream ended")))

    def _lose(self, reason: Failure) -> None:
        if self.lost:
            return
        self.lost = True
        transport = self.socket
        transport.disconnecting = True
        transport.connected = False
        protocol = transport.protocol
        if protocol is not None:
            protocol.connectionLost(reason)

    # -- reading, paused and resumed by the WebSocket side ------------------------

    def resumeProducing(self) -> None:
        self.producing = True
        buffered = self._inboundDataBuffer
        while self.producing and buffered and not self.lost:
            data, size = buffered.popleft()
            if data is None:
                self._end_of_client()
            else:
                self._deliver(data, size)


@implementer(ITransport, IConsumer, IPushProducer)
class StreamTransport:
    """
    The transport a WebSocket protocol gets for a L{WebSocketStream}.

    The protocol writes its HTTP/1.1 answer first: a 101 becomes the
    stream's 200 (with the subprotocol and extension headers), a refusal
    keeps its status, headers and body; everything after it is DATA.
    """

    protocol: Any = None
    disconnecting = False
    connected = True
    aborted = False
    #: wsmux's flag: this WebSocket runs on an HTTP/2 stream.
    wsmux_http2 = True

    def __init__(self, stream: WebSocketStream) -> None:
        self._stream = stream
        self._head: Optional[bytes] = b""
        self._tls = stream._conn.transport
        # Whether the connection is TLS (as it is: h2 is offered there
        # only).  Not ISSLTransport: Autobahn would take the stream for a
        # TLSMemoryBIOProtocol, whose TLS handle it reads.
        self.wsmux_tls = ISSLTransport.providedBy(self._tls)

    def write(self, data: bytes) -> None:
        if self.disconnecting:
            return
        if self._head is not None:
            self._take_head(data)
        elif data:
            self._stream.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def _take_head(self, data: bytes) -> None:
        head = self._head + data  # type: ignore[operator]
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > _HEAD_MAX:
                log.error("an HTTP/2 WebSocket's answer head is over {n} bytes", n=_HEAD_MAX)
                self.abortConnection()
            else:
                self._head = head
            return
        self._head = None
        lines = head[:end].split(b"\r\n")
        status = lines[0].split(b" ", 2)
        code = status[1] if len(status) > 1 and status[1].isdigit() else b"500"
        pairs = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            pairs.append((name.strip(), value.strip()))
        if code == b"101":
            code = b"200"
        self._stream._conn.writeHeaders(
            b"HTTP/2", code, b"", _h2_headers(pairs, _UPGRADE_ONLY), self._stream.streamID
        )
        rest = head[end + 4 :]
        if rest:
            self._stream.write(rest)

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        if self._head is not None:
            # Closed without an answer at all (a deadline): reset.
            self.abortConnection()
            return
        self.disconnecting = True
        stream = self._stream
        if not stream.lost and stream.streamID in stream._conn.streams:
            stream._conn.endRequest(stream.streamID)

    def abortConnection(self) -> None:
        if self.aborted:
            return
        if (
            self._head is None
            and not self.disconnecting
            and getattr(self.protocol, "wasClean", False)
        ):
            # Autobahn drops the connection by aborting once a closing
            # handshake it began is over: the stream ends (END_STREAM).
            # (Once closing already, an abort is an abort: the linger
            # deadline's, for an END_STREAM a shut window holds back.)
            self.loseConnection()
            return
        self.aborted = self.disconnecting = True
        stream = self._stream
        connection = stream._conn
        if not stream.lost and stream.streamID in connection.streams:
            try:
                connection.abortRequest(stream.streamID)
            except h2.exceptions.H2Error:  # h2 has closed it already
                connection._requestDone(stream.streamID)
        else:
            stream.finished()

    def getPeer(self) -> Any:
        return self._stream.getPeer()

    def getHost(self) -> Any:
        return self._stream.getHost()

    def getHandle(self) -> Any:
        return self._tls.getHandle()

    def getPeerCertificate(self) -> Any:
        return self._tls.getPeerCertificate()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._stream.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._stream.unregisterProducer()

    def pauseProducing(self) -> None:
        self._stream.pauseProducing()

    def resumeProducing(self) -> None:
        self._stream.resumeProducing()

    def stopProducing(self) -> None:
        self.abortConnection()


class WebSocketH2Connection(_Connection):  # type: ignore[misc]
    """
    Twisted's HTTP/2 connection, offering extended CONNECT (RFC 8441) for
    WebSockets, with wsmux's caps.

    @ivar goaway: the client's GOAWAY (h2's C{ConnectionTerminated}), once
        it has sent one.
    """

    def __init__(self, site: Any, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        super().__init__(reactor)
        self.clock = reactor
        self.site = site
        self.factory = site
        self.requestFactory = site.requestFactory
        self.timeOut = site.timeOut
        self.callLater = self.clock.callLater
        limits = site.limits
        # h2's priority tree holds 1,000 streams.
        self.max_streams = min(max(1, limits.max_http2_streams), 1000)
        codes = h2.settings.SettingCodes
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: self.max_streams,
                codes.MAX_HEADER_LIST_SIZE: limits.max_request_line + limits.max_header_bytes,
                codes.ENABLE_CONNECT_PROTOCOL: 1,
            },
        )
        self._over = False
        # Shutting down (going_away): the connection closes once its last
        # stream ends.
        self._closing = False
        # The client's GOAWAY, when it sends one (Twisted drops the
        # connection on it, and h2 lets nothing more be sent).
        self.goaway: Any = None
        receive = self.conn.receive_data

        def receive_data(data: bytes) -> Any:
            events = receive(data)
            for event in events:
                if isinstance(event, h2.events.ConnectionTerminated):
                    self.goaway = event
            return events

        self.conn.receive_data = receive_data

    def connectionMade(self) -> None:
        super().connectionMade()
        # Each stream's window bounds what waits for it; the connection's
        # is made room for all of them, so one stream paused (its handler
        # not taking more) never holds up another.
        window = self.conn.local_settings.initial_window_size
        extra = max(0, self.max_streams * window - window)
        if extra:
            self.conn.increment_flow_control_window(extra)
            self._tryToWriteControlData()
        registry = getattr(self.site, "registry", None)
        if registry is not None:
            registry.stats.http2_connections += 1
        connections = getattr(self.site, "http2_connections", None)
        if connections is not None:
            connections.add(self)
            if self.site.quiescing:
                self.going_away()

    # -- streams ---------------------------------------------------------------

    def _requestReceived(self, event: Any) -> None:
        stream_id = event.stream_id
        headers = event.headers
        method = protocol = None
        for name, value in headers:
            if name == b":method":
                method = value
            elif name == b":protocol":
                protocol = value
        # The head's caps, as over HTTP/1.1, before anything is made of it
        # (twisted.web keeps every header name it sees in a cache).
        refusal = _over_caps(headers, self.site.limits)
        websocket = method == b"CONNECT" and protocol is not None
        if refusal is None and method == b"CONNECT" and protocol is None:
            refusal = 501, "Not Implemented: CONNECT is for WebSockets (:protocol) only"
        if refusal is None and websocket and (protocol or b"").lower() != b"websocket":
            refusal = 501, "Not Implemented: only :protocol websocket"
        if refusal is None:
            refusal = _body_refusal(headers, websocket, self.site.limits)
        args = (stream_id, self, [] if refusal else headers, self.requestFactory, self.site,
                self.factory)  # fmt: skip
        stream = WebSocketStream(*args) if websocket and not refusal else RequestStream(*args)
        self.streams[stream_id] = stream
        cleanup: Deferred[int] = Deferred()
        self._streamCleanupCallbacks[stream_id] = cleanup
        self._outboundStreamQueues[stream_id] = deque()
        try:
            self.priority.insert_stream(stream_id)
        except priority.DuplicateStreamError:  # a PRIORITY frame came first
            pass
        else:
            self.priority.block(stream_id)
        if refusal is None and not websocket and event.stream_ended is None:
            registry = getattr(self.site, "registry", None)
            if registry is not None:
                refusal = stream.hold(registry, self.site.head_timeout, self.clock)
        if refusal is not None:
            self.refuse_stream(stream_id, *refusal)
            return
        if not websocket:
            return
        cleanup.addCallback(stream.finished)
        stream.start()

    def _requestDataReceived(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestDataReceived(event)
        else:
            # A stream wsmux is done with: its data still counts against
            # the connection's window, which is given back.
            self.open_window(None, event.flow_controlled_length)

    def _requestEnded(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestEnded(event)

    def _requestAborted(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestAborted(event)

    # -- h2 may have closed a stream before wsmux hears of it ----------------
    #
    # A client can reset a stream in the same read that opened it or sent to
    # it: h2 has closed it by the time the request is answered, and every
    # call on it raises.  Twisted lets that escape (its send loop stops for
    # good, and every other stream of the connection with it); here what is
    # sent to a stream h2 has closed is dropped.

    def writeHeaders(
        self, version: Any, code: Any, reason: Any, headers: Any, streamID: int
    ) -> None:
        try:
            super().writeHeaders(version, code, reason, headers, streamID)
        except h2.exceptions.ProtocolError:
            pass

    def writeDataToStream(self, streamID: int, data: bytes) -> None:
        if streamID not in self._outboundStreamQueues:
            return
        try:
            super().writeDataToStream(streamID, data)
        except h2.exceptions.ProtocolError:
            self._outboundStreamQueues[streamID].clear()

    def remainingOutboundWindow(self, streamID: int) -> int:
        try:
            return int(super().remainingOutboundWindow(streamID))
        except (h2.exceptions.ProtocolError, KeyError):
            return 0

    def openStreamWindow(self, streamID: int, increment: int) -> None:
        self.open_window(streamID, increment)

    def abortRequest(self, streamID: int) -> None:
        # RST_STREAM with CANCEL (Twisted's says NO_ERROR).
        try:
            self.conn.reset_stream(streamID, error_code=h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.ProtocolError:
            pass  # closed already
        if self._tryToWriteControlData() and streamID in self.streams:
            self._requestDone(streamID)

    def _sendPrioritisedData(self, *args: Any) -> None:
        """
        Twisted's send loop, with three changes: a stream h2 has closed
        loses what was queued for it instead of stopping the loop; a stream
        whose window is shut waits (blocked) for its WINDOW_UPDATE instead
        of being tried again every turn; and up to 16 frames go out a turn.
        """
        if not self._stillProducing:
            return
        for _ in range(16):
            try:
                stream = next(self.priority)
            except priority.DeadlockError:
                if self._sendingDeferred is None:  # type: ignore[has-type]
                    waiting: Any = Deferred()
                    waiting.addCallback(self._sendPrioritisedData)
                    self._sendingDeferred = waiting
                return
            if self._consumerBlocked is not None:
                self._consumerBlocked.addCallback(self._sendPrioritisedData)
                return
            self.resetTimeout()
            queue = self._outboundStreamQueues.get(stream)
            if not queue:
                self.priority.block(stream)
                continue
            try:
                self._send_one(stream, queue)
            except h2.exceptions.ProtocolError:
                queue.clear()
                self.priority.block(stream)
        self.clock.callLater(0, self._sendPrioritisedData)

    def _send_one(self, stream: int, queue: Any) -> None:
        frame = queue.popleft()
        if frame is _END_STREAM_SENTINEL:
            self.conn.end_stream(stream)
            self.transport.write(self.conn.data_to_send())
            self._requestDone(stream)
            return
        size = min(self.conn.max_outbound_frame_size, self.conn.local_flow_control_window(stream))
        if size <= 0:
            queue.appendleft(frame)
            self.priority.block(stream)  # until its WINDOW_UPDATE
            return
        if len(frame) > size:
            queue.appendleft(frame[size:])
            frame = frame[:size]
        if frame:
            self.conn.send_data(stream, frame)
            self.transport.write(self.conn.data_to_send())
        if not queue:
            self.priority.block(stream)
        if self.remainingOutboundWindow(stream) <= 0:
            self.streams[stream].flowControlBlocked()

    def _handleWindowUpdate(self, event: Any) -> None:
        super()._handleWindowUpdate(event)
        # Twisted unblocks the stream but leaves a sleeping send loop asleep.
        waiting: Any = self._sendingDeferred
        if waiting is not None:
            self._sendingDeferred = None
            waiting.callback(None)

    def _handlePriorityUpdate(self, event: Any) -> None:
        # A hint, for streams that exist: PRIORITY frames for others would
        # fill Twisted's tree (at 1,000 it raises).
        if event.stream_id in self.streams:
            try:
                super()._handlePriorityUpdate(event)
            except priority.PriorityError:
                pass

    # -- a connection that is over stays over -----------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._over:
            # GOAWAY, a protocol error or the transport gone: what still
            # arrives is not read (h2 would buffer it all).
            return
        super().dataReceived(data)

    def connectionLost(self, reason: Any, _cancelTimeouts: bool = True) -> None:
        first = not self._over
        self._over = True
        if first and self.goaway is not None:
            # The client is going away: each WebSocket's handler hears a
            # 1001 close, though none can be sent back.
            for stream in self.streams.values():
                if isinstance(stream, WebSocketStream):
                    stream.going_away(self.goaway.error_code)
        super().connectionLost(reason, _cancelTimeouts)
        gone = getattr(self.site, "http2_gone", None)
        if gone is not None:
            gone(self)
        if first:
            # Twisted's HTTP/2 gave up on the connection (GOAWAY either
            # way, a protocol error) and asked its transport to close.
            self._let_go()

    def _let_go(self, without_waiting: bool = False) -> None:
        # Close the transport: TLS will not while a producer is registered,
        # so the connection lets go, and a client that does not close
        # either is cut off.  Without waiting: the TCP connection under TLS
        # closes once what is written (close_notify last) has gone, not
        # waiting for the client's close_notify (RFC 8446 6.1 lets the one
        # closing first not wait).
        transport = self.transport
        if transport is not None and getattr(transport, "connected", False):
            transport.unregisterProducer()
            transport.loseConnection()
            tcp = getattr(transport, "transport", None)
            if without_waiting and tcp is not None:
                tcp.loseConnection()
            self.clock.callLater(_CLOSE_GRACE, _abort_if_open, transport)

    def going_away(self) -> None:
        """
        The server is shutting down (RFC 9113 6.8): a GOAWAY (C{NO_ERROR},
        the highest stream ID) tells the client to open no more streams
        here (a browser opens its next WebSocket on a new connection, which
        another server may take), and the streams open go on; once the last
        ends, the final GOAWAY names the last stream served and the
        connection closes.  Without streams, the final one goes at once.
        """
        if self._over or self._closing or self.goaway is not None:
            return
        self._closing = True
        if self.streams:
            # Written beside h2, whose connection would take any GOAWAY as
            # its last frame (python-hyper/h2#1181): the streams go on.
            notice = GoAwayFrame(0, last_stream_id=2**31 - 1, error_code=0)
            self.transport.write(notice.serialize())
        else:
            self._close_cleanly()

    def _close_cleanly(self) -> None:
        # In a turn of its own when a stream's end calls for it: the rest
        # of the read it ended in (a window to give back, another stream's
        # close) still needs h2's connection open.
        if self._over or self.streams:
            return
        self._over = True
        self.conn.close_connection(
            error_code=h2.errors.ErrorCodes.NO_ERROR,
            last_stream_id=self.conn.highest_inbound_stream_id,
        )
        self.transport.write(self.conn.data_to_send())
        # The server is going away: a client slow to close holds up no exit.
        self._let_go(without_waiting=True)

    def _requestDone(self, streamID: int) -> None:
        super()._requestDone(streamID)
        if self._closing and not self._over and not self.streams:
            self.clock.callLater(0, self._close_cleanly)

    def refuse_stream(self, stream_id: int, code: int, reason: str) -> None:
        """
        Answer C{code} on a stream and end it, whatever its request was doing.
        """
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        body = (reason + "\n").encode("utf-8")
        try:
            self.conn.send_headers(
                stream_id,
                [
                    (b":status", b"%d" % code),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"%d" % len(body)),
                ],
            )
            self.conn.send_data(stream_id, body, end_stream=True)
            self.no_more(stream_id)
        except h2.exceptions.ProtocolError:
            # The client reset it already (in the same read, say).
            try:
                self.conn.reset_stream(stream_id)
            except h2.exceptions.ProtocolError:
                pass
        if self._tryToWriteControlData():
            stream.connectionLost(Failure(ConnectionLost(reason)))
            if stream_id in self.streams:
                self._requestDone(stream_id)

    def no_more(self, stream_id: int) -> None:
        """
        The answer on C{stream_id} is complete: RST_STREAM with NO_ERROR
        tells the client to send no more of its request (RFC 9113 8.1), and
        the stream stops counting against its limit.
        """
        try:
            self.conn.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.ProtocolError:
            return  # the client closed its side already
        self._tryToWriteControlData()

    def open_window(self, stream_id: Optional[int], size: int) -> None:
        """
        Give back C{size} bytes of window: the stream's and the
        connection's, or the connection's only (C{stream_id} L{None}, or a
        stream h2 has closed).
        """
        if not size:
            return
        try:
            if stream_id is not None and stream_id in self.streams:
                self.conn.acknowledge_received_data(size, stream_id)
            else:
                self.conn.increment_flow_control_window(size)
        except h2.exceptions.H2Error:
            self.conn.increment_flow_control_window(size)
        self._tryToWriteControlData()

    def reactor_call(self, delay: float, f: Any, *args: Any) -> None:
        self.clock.callLater(delay, f, *args)

    # -- backpressure -------------------------------------------------------------

    @property
    def write_blocked(self) -> bool:
        """
        Whether the connection's transport has asked it to stop producing.
        """
        return self._consumerBlocked is not None

    def pauseProducing(self) -> None:
        super().pauseProducing()
        # What WebSockets write waits here until the transport takes it:
        # they stop, as they would on a full TCP buffer.
        for stream in list(self.streams.values()):
            stream.flowControlBlocked()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        for stream in list(self.streams.values()):
            stream.windowUpdated()

    def timeoutConnection(self) -> None:
        # WebSockets have their own idle timeouts and pings: the connection
        # carrying one is not idle.
        if any(isinstance(s, WebSocketStream) for s in self.streams.values()):
            self.resetTimeout()
            return
        super().timeoutConnection()


def _abort_if_open(transport: Any) -> None:
    if getattr(transport, "connected", False):
        transport.abortConnection()


def _over_caps(headers: Sequence[tuple[bytes, bytes]], limits: Any) -> Optional[tuple[int, str]]:
    """
    The refusal HTTP/1.1 would give a request head this size (414, 431),
    or L{None}.
    """
    if len(headers) > limits.max_headers + 4:  # the pseudo-headers besides
        return 431, "Request Header Fields Too Large: too many header fields"
    total = 0
    for name, value in headers:
        if name == b":path":
            if len(value) > limits.max_request_line:
                return 414, "URI Too Long"
        elif len(name) > limits.max_header_name:
            return 431, "Request Header Fields Too Large: a header name too long"
        total += len(name) + len(value) + 4
    if total > limits.max_header_bytes + limits.max_request_line:
        return 431, "Request Header Fields Too Large"
    return None


def _body_refusal(
    headers: Sequence[tuple[bytes, bytes]], websocket: bool, limits: Any
) -> Optional[tuple[int, str]]:
    """
    What HTTP/1.1 refuses before reading a body: any body on a WebSocket
    upgrade (400), a declared length over C{max_body_size} (413).
    """
    for name, value in headers:
        if name != b"content-length":
            continue
        if websocket:
            return 400, "Bad Request: a WebSocket upgrade with a request body"
        try:
            length = int(value)
        except ValueError:
            return 400, "Bad Request: an unreadable content-length"
        cap = limits.max_body_size
        if cap and length > cap:
            return 413, f"Content Too Large: {length} bytes (max_body_size is {cap})"
    return None


def take_http2(channel: Any, data: bytes) -> bool:
    """
    If C{channel}'s TLS connection chose C{h2} (ALPN), continue it as a
    L{WebSocketH2Connection} and give it C{data}.

    @return: whether it did (else C{channel} goes on with HTTP/1.1).
    """
    transport = channel.transport
    if not HTTP2 or getattr(transport, "negotiatedProtocol", None) != b"h2":
        return False
    from wsmux._takeover import replace_protocol

    transport.unregisterProducer()
    channel.setTimeout(None)
    connection = WebSocketH2Connection(channel.site)
    replace_protocol(transport, connection)
    channel.transport = None
    connection.makeConnection(transport)
    transport.registerProducer(connection, True)
    connection.dataReceived(data)
    return True
