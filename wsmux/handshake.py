"""
The opening handshake, validated once.

By the time a route takes an upgrade request over, C{twisted.web} has read
and parsed it: the method, the URI, every header.  Autobahn's own server
handshake starts from bytes, so the plain way to hand the connection over
is to write the request head out again and let Autobahn parse it a second
time (L{wsmux.routing.upgrade} still does, as the fallback).

L{DirectHandshakeMixin} instead checks the parsed request against the
same rules Autobahn's C{processHandshake} applies (Host, Upgrade,
Connection, version, subprotocol list, Origin, key, extensions), sets the
same attributes on the protocol, builds the same C{ConnectionRequest},
calls C{onConnect} and finishes with Autobahn's own C{succeedHandshake}.
A request that fails any rule, or that Autobahn would treat specially
(proxy headers it trusts, the connection cap, an absolute URI, octet
logging...), is not refused here: it goes the fallback way, so every
refusal keeps Autobahn's exact status and wording.

A route uses it only when its handler leaves the handshake hooks alone
(L{direct_handshake_ok}).

L{LeanServerProtocol} sits between every handler and Autobahn: it is
Autobahn's connection entry points (made, lost, the default C{onConnect})
without the arguments of debug-log lines that Autobahn formats on every
call whether or not anyone logs at debug level.
"""

from __future__ import annotations

import os
import threading
import types
from typing import Any, Optional
from urllib import parse

import txaio
from autobahn.twisted.util import create_transport_details
from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.util import _is_tls_error, _maybe_tls_reason
from autobahn.wamp.types import TransportDetails
from autobahn.websocket.protocol import WebSocketProtocol, _is_same_origin, _url_to_origin
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import tcp
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from wsmux.fastpath import idle_tcp, release_held
from wsmux.responses import safe_accept

# Methods a handler must not override for the direct handshake: they see
# (or parse) the request bytes that the direct handshake never replays.
HANDSHAKE_HOOKS = ("processHandshake", "dataReceived", "_dataReceived", "consumeData")

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")


def direct_handshake_ok(handler: type) -> bool:
    """
    Whether C{handler} leaves every hook the direct handshake skips alone.
    """
    return all(
        getattr(handler, name, None) is getattr(WebSocketServerProtocol, name)
        for name in HANDSHAKE_HOOKS
    )


def _has_token(value: str, token: str) -> bool:
    # Whether the comma-separated header value lists token (any case).
    if value.lower() == token:
        return True
    return any(part.strip().lower() == token for part in value.split(","))


class GuardedHandshakeMixin:
    """
    For a handler on Autobahn's own handshake path: C{succeedHandshake}
    runs in a Deferred's callback there, where an exception would be an
    unhandled error and the client left waiting; before the 101 it is a
    500, after it a 1011.  (The direct handshake does the same in
    L{DirectHandshakeMixin}.)
    """

    def succeedHandshake(self, res: Any) -> None:
        try:
            super().succeedHandshake(safe_accept(res))  # type: ignore[misc]
        except Exception:
            self.handler_failed("the opening handshake")  # type: ignore[attr-defined]


class DirectHandshakeMixin:
    """
    Open a connection from the request C{twisted.web} already parsed.
    """

    def handshake_from(self, request: Any, head: bytes, rest: bytes) -> bool:
        """
        Validate C{request} as Autobahn would and, if it passes, carry the
        handshake through to C{onConnect} and the 101 response.

        @param request: the C{twisted.web} request of the upgrade.
        @param head: the request head as bytes (kept as
            C{http_request_data}, as Autobahn keeps it).
        @param rest: bytes the client sent after the request head.
        @return: C{False}, having changed nothing but armed the
            open-handshake timer, when the request must take Autobahn's own
            handshake (replayed from C{head}).
        """
        me: Any = self
        checked = self._check(request)
        if checked is None:
            me.arm_open_timeout()
            return False
        uri, headers, host, version, protocols, origin, key = checked

        # The request passes: from here on, what Autobahn's processHandshake
        # does after its checks.
        path, _, query = uri.partition("?")
        if ";" in path:
            path = parse.urlparse(uri).path
        params = parse.parse_qs(query) if query else {}
        offered = headers.get("sec-websocket-extensions")
        extensions = me._parseExtensionsHeader(offered) if offered is not None else []
        me.http_request_data = head
        me.http_status_line = f"GET {uri} HTTP/1.1"
        me.http_headers = headers
        me.http_request_uri = uri
        me.http_request_path = path
        me.http_request_params = params
        me.http_request_host = host
        me.websocket_version = version
        me.websocket_protocols = protocols
        me.websocket_origin = origin
        me.websocket_extensions = extensions
        me.data = rest
        me._wskey = key
        connection = ConnectionRequest(
            me.peer, headers, host, path, params, version, origin, protocols, extensions
        )
        # Autobahn runs onConnect through txaio.as_future and a Deferred
        # even when it answers at once, as most handlers do.
        try:
            result = me.onConnect(connection)
        except Exception:
            self._connect_failed(Failure())
            return True
        if result is None or type(result) in (str, tuple):
            self._connect_answered(result)
        else:
            me.arm_open_timeout()
            deferred = result if isinstance(result, Deferred) else ensureDeferred(result)
            deferred.addCallbacks(self._connect_answered, self._connect_failed)
        return True

    def _check(
        self, request: Any
    ) -> Optional[tuple[str, dict[str, str], str, int, list[str], str, str]]:
        """
        Autobahn's checks of an opening handshake, on the parsed request.

        @return: the URI, headers (Autobahn's form: lower-case names, repeated
            headers joined with commas), host, version, offered subprotocols,
            origin and key; or L{None} when the request needs Autobahn's own
            handshake (to be refused, or for a case it treats specially).
        """
        me: Any = self
        if me.logOctets or me.trustXForwardedFor or me.state != me.STATE_CONNECTING:
            return None
        if request.clientproto != b"HTTP/1.1" or request.method != b"GET":
            return None
        uri = request.uri.decode("iso-8859-1")
        if uri[:1] != "/" or uri[:2] == "//" or "#" in uri:
            return None
        headers: dict[str, str] = {}
        counts: dict[str, int] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            key = name.decode("iso-8859-1").lower()
            if len(values) == 1:
                headers[key] = values[0].decode("iso-8859-1").strip()
            else:
                headers[key] = ", ".join(v.decode("iso-8859-1").strip() for v in values)
            counts[key] = len(values)

        if counts.get("host") != 1:
            return None
        host = headers["host"]
        if ":" in host and not host.endswith("]"):
            host, port = host.rsplit(":", 1)
            try:
                number = int(port.strip())
            except ValueError:
                return None
            external = me.factory.externalPort
            if external and number != external:
                return None
        if not _has_token(headers.get("upgrade", ""), "websocket"):
            return None
        if not _has_token(headers.get("connection", ""), "upgrade"):
            return None
        if counts.get("sec-websocket-version") != 1:
            return None
        try:
            version = int(headers["sec-websocket-version"])
        except ValueError:
            return None
        if version not in me.versions or version < 13:
            return None
        protocols: list[str] = []
        if "sec-websocket-protocol" in headers:
            protocols = [p.strip() for p in headers["sec-websocket-protocol"].split(",")]
            if len(set(protocols)) != len(protocols):
                return None
        origin = ""
        if "origin" in headers:
            if counts["origin"] > 1:
                return None
            origin = headers["origin"]
            try:
                origin_tuple = _url_to_origin(origin)
            except ValueError:
                return None
            if not (origin_tuple == "null" and me.factory.allowNullOrigin) and not (
                _is_same_origin(
                    origin_tuple,
                    "https" if me.factory.isSecure else "http",
                    me.factory.externalPort or me.factory.port,
                    me.allowedOriginsPatterns,
                )
            ):
                return None
        if counts.get("sec-websocket-key") != 1:
            return None
        key = headers["sec-websocket-key"]
        if len(key) != 24 or key[-2:] != "==" or not _KEY_CHARS.issuperset(key[:-2]):
            return None
        if counts.get("sec-websocket-extensions", 0) > 1:
            return None
        if me.maxConnections > 0 and me.factory.countConnections > me.maxConnections:
            return None
        return uri, headers, host, version, protocols, origin, key

    def _connect_answered(self, result: Any) -> None:
        me: Any = self
        if me.state != me.STATE_CONNECTING:
            return  # the client left (or timed out) while onConnect thought
        try:
            # Past the route class's guard, which is for Autobahn's path.
            if type(result) is tuple:
                result = safe_accept(result)
            super(GuardedHandshakeMixin, me).succeedHandshake(result)  # type: ignore[misc]
        except Exception:
            # Autobahn leaves this in a Deferred nobody reads (and the
            # client waiting for the open-handshake timeout).  Before the
            # 101 the client gets 500; after it, a close with 1011.
            me.handler_failed("the opening handshake")

    def _connect_failed(self, failure: Failure) -> Optional[Failure]:
        me: Any = self
        if isinstance(failure.value, ConnectionDeny):
            me.failHandshake(failure.value.reason, failure.value.code)
            return None
        # What Autobahn does with an unexpected error in onConnect.
        me.log.warn("Unexpected exception in onConnect ['{err.value}']", err=failure)
        me.log.warn("{tb}", tb=txaio.failure_format_traceback(failure))  # type: ignore[attr-defined]
        me.failHandshake("Internal Server Error", ConnectionDeny.INTERNAL_SERVER_ERROR)
        return None


_MISSING = object()


def transport_details(transport: Any, is_server: bool) -> TransportDetails:
    """
    Autobahn's C{create_transport_details}, for the WebSocket framing; for
    Twisted's own TCP server transport, without building an address object
    to describe the peer (C{peer2str} calls C{getPeer}, which makes one and
    checks its fields each time).
    """
    if transport.__class__ is not tcp.Server:
        details = create_transport_details(transport, is_server)
        details.channel_framing = TransportDetails.CHANNEL_FRAMING_WEBSOCKET
        return details
    client = transport.client  # (host, port), or four items for IPv6
    return TransportDetails(
        channel_type=TransportDetails.CHANNEL_TYPE_TCP,
        channel_framing=TransportDetails.CHANNEL_FRAMING_WEBSOCKET,
        peer=f"{'tcp4' if len(client) == 2 else 'tcp6'}:{client[0]}:{client[1]}",
        is_server=is_server,
        own_pid=os.getpid(),
        own_tid=threading.get_native_id(),
        own_fd=-1,
        is_secure=False,
        channel_id={},
        peer_cert=None,
    )


# One failure for every clean close, as Twisted's reactor keeps one.
_CLOSED_CLEANLY = Failure(CONNECTION_DONE)


def _rebound(function: Any, **names: Any) -> Any:
    """
    A copy of C{function} that finds C{names} instead of its module's
    globals of the same names (the module itself is left alone).
    """
    scope = dict(function.__globals__)
    scope.update(names)
    copy = types.FunctionType(
        function.__code__, scope, function.__name__, function.__defaults__, function.__closure__
    )
    copy.__qualname__ = function.__qualname__
    return copy


# Autobahn's per-connection set-up, as it is, except that the argument of
# its debug line about the connection's options is no longer pretty-printed
# up front (several microseconds per connection, for a line nobody reads
# below debug level; the logger formats the list itself if anyone does).
_protocol_connection_made = _rebound(WebSocketProtocol._connectionMade, pformat=lambda value: value)


class LeanServerProtocol(WebSocketServerProtocol):
    """
    Autobahn's connection entry points, minus eager debug-log formatting.

    Autobahn's own versions format their debug arguments (qualified
    function names, the close reason's text, a pretty-printed option list)
    before the logger decides to drop them, on every connection.  These do
    the same work and log what Autobahn logs above debug level.  wsmux puts this class right above
    Autobahn in every route class, so a handler's own overrides (and their
    C{super()} calls) run as before.

    @ivar wsmux_direct_open: set by wsmux before the connection starts when
        L{DirectHandshakeMixin} will open it; the open-handshake timer is
        then armed only if the handshake does not finish at once.
    @ivar wsmux_tcp_nodelay: what the transport's C{TCP_NODELAY} already
        is, when known (C{twisted.web} turns it on); L{None} otherwise.
    """

    wsmux_direct_open = False
    wsmux_tcp_nodelay: Optional[bool] = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        details = transport_details(transport, bool(self.is_server))
        self._transport_details = details
        self.peer = details.peer
        # twisted.web has already turned Nagle off on a connection it hands
        # over (wsmux_tcp_nodelay says so): one system call fewer.
        nodelay = self.tcpNoDelay  # type: ignore[attr-defined]
        if self.wsmux_tcp_nodelay is None or self.wsmux_tcp_nodelay != nodelay:
            try:
                transport.setTcpNoDelay(nodelay)
            except Exception:  # Unix sockets and other transports without it
                pass
        self._connectionMade()

    def _connectionMade(self) -> None:
        if not self.wsmux_direct_open:
            _protocol_connection_made(self)
        else:
            saved = self.__dict__.get("openHandshakeTimeout", _MISSING)
            self.openHandshakeTimeout = 0
            _protocol_connection_made(self)
            if saved is _MISSING:
                del self.openHandshakeTimeout
            else:
                self.openHandshakeTimeout = saved
        self.factory.countConnections += 1

    def arm_open_timeout(self) -> None:
        """
        Arm Autobahn's open-handshake timer, if it is configured and not
        armed yet.
        """
        if self.openHandshakeTimeout > 0 and self.openHandshakeTimeoutCall is None:
            self.openHandshakeTimeoutCall = self.factory._batched_timer.call_later(
                self.openHandshakeTimeout, self.onOpenHandshakeTimeout
            )

    def _closeConnection(self, abort: bool = False) -> None:
        transport: Any = self.transport
        # Writes held for this connection go out before it closes.
        release_held(transport)
        if not abort and self.wasClean and idle_tcp(transport):
            # The closing handshake is over and everything is sent: close
            # now, as Twisted's loseConnection itself does once nothing is
            # left to write, instead of asking the reactor to wait for the
            # socket to be writable first (three system calls and a turn).
            transport.stopReading()
            transport.stopWriting()
            transport.connectionLost(_CLOSED_CLEANLY)
            return
        super()._closeConnection(abort)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if _is_tls_error(reason.value):
            self.log.error(_maybe_tls_reason(reason.value))
        self._connectionLost(reason)

    def _connectionLost(self, reason: Any) -> None:
        WebSocketProtocol._connectionLost(self, reason)
        self.factory.countConnections -= 1

    def onConnect(self, request: ConnectionRequest) -> Any:
        return None
