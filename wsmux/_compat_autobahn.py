"""
Every use wsmux makes of Autobahn's and txaio's private names (see
L{wsmux._compat}).

Checked against Autobahn 26.7.1 and 26.10.2 (txaio 25.x and 26.x).  Each
internal below is used only while its check passes and
C{WSMUX_PUBLIC_PATH} is unset; otherwise wsmux takes Autobahn's own path.

  - L{DirectHandshakeMixin}: the opening handshake from the request
    C{twisted.web} already parsed (else Autobahn parses it again);
  - C{LAZY_PFORMAT}: Autobahn's per-connection debug line formats its
    option list only when it is written (else on every connection);
  - L{LeanServerProtocol}: Autobahn's connection entry points without
    their debug-log formatting, and a clean close without a reactor turn
    (else Autobahn's own);
  - L{FastReceiveMixin} and L{FastSendMixin}: whole small frames without
    Autobahn's per-frame hooks (else Autobahn's frame path);
  - L{RelayClientProtocol}: a proxy route's backend leg starts without
    Autobahn's debug-line formatting and takes and sends whole small
    frames without its per-frame hooks (else Autobahn's client protocol);
  - L{fail_connection}: a route fails a connection as Autobahn does (else
    by sending the close frame itself);
  - L{compressing}: whether a connection deflates (else read from the
    public C{websocket_extensions_in_use}).
"""

from __future__ import annotations

import os
import pprint
import threading
from typing import TYPE_CHECKING, Any, Optional
from urllib import parse

import txaio
from autobahn.exception import PayloadExceededError
from autobahn.twisted.util import create_transport_details
from autobahn.twisted.websocket import WebSocketClientProtocol, WebSocketServerProtocol
from autobahn.util import ObservableMixin
from autobahn.wamp.types import TransportDetails
from autobahn.websocket import protocol as _ws
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from wsmux._compat import all_of, code_names, declare, missing_names, slots_hold
from wsmux._compat_twisted import (
    CLOSED_CLEANLY,
    TCP_SERVERS,
    close_idle_tcp,
    tls_flush_sealed,
    tls_seal,
    tls_turn_reactor,
    write_now,
)
from wsmux._deflate import deflate_bound
from wsmux._frames import (
    _BIG,
    _BINARY,
    _BINARY_DEFLATED,
    _CLOSE,
    _TEXT,
    _TEXT_DEFLATED,
    Message,
    cut,
    cut_in_python,
    frame,
    frame_header,
    unmask,
)
from wsmux._responses import safe_accept
from wsmux._upgrades import LINE_BREAK_BYTES, autobahn_headers, autobahn_misreads

if TYPE_CHECKING:
    from wsmux.connection import Connection

    class Hooked(WebSocketServerProtocol):
        """
        For the type checker, what each of wsmux's hooks will be part of: an
        Autobahn server protocol, with the connection attached and with the
        options Autobahn copies onto every connection (its C{CONFIG_ATTRS},
        which Autobahn does not declare).
        """

        wsmux: Connection
        logFrames: bool
        logOctets: bool
        applyMask: bool
        maskServerFrames: bool
        utf8validateIncoming: bool
        maxFramePayloadSize: int
        maxMessagePayloadSize: int
        autoFragmentSize: int
        openHandshakeTimeout: float
        closeHandshakeTimeout: float
        tcpNoDelay: bool
        versions: list[int]
        trustXForwardedFor: int
        maxConnections: int
        allowedOriginsPatterns: list[Any]
        autoPingRestartOnAnyTraffic: bool

    _Hooked = Hooked
else:
    _Hooked = object

try:
    from autobahn.util import _is_tls_error, _maybe_tls_reason
except ImportError:  # pragma: no cover - another Autobahn: the check says so
    _is_tls_error = _maybe_tls_reason = None  # type: ignore[assignment]

_P = WebSocketServerProtocol


# -- the connection's entry points ---------------------------------------------

LEAN_PROTOCOL = declare(
    "autobahn.lean_protocol",
    touches=(
        "WebSocketProtocol._connectionMade / _connectionLost / _closeConnection",
        "WebSocketAdapterProtocol._transport_details",
        "autobahn.util._is_tls_error / _maybe_tls_reason",
        "factory._batched_timer",
    ),
    why=(
        "the connection starts and ends without Autobahn's eager debug-log "
        "formatting (qualified names, peer addresses) and without building an "
        "address object per connection; a clean close closes at once"
    ),
    checked="Autobahn 26.7.1, 26.10.2",
    fallback="connections start and end through Autobahn's own entry points",
    check=lambda: all_of(
        missing_names(WebSocketProtocol, ("_connectionMade", "_connectionLost")),
        missing_names(_P, ("_closeConnection",)),
        code_names(_P.connectionMade, ("_transport_details", "_connectionMade", "tcpNoDelay")),
        code_names(_P.connectionLost, ("_is_tls_error", "_maybe_tls_reason", "_connectionLost")),
        code_names(_ws.WebSocketServerProtocol._connectionMade, ("countConnections",)),
        code_names(_ws.WebSocketServerProtocol._connectionLost, ("countConnections",)),
        code_names(WebSocketProtocol._connectionMade, ("openHandshakeTimeout",)),
        None if _is_tls_error is not None else "autobahn.util has no _is_tls_error",
        missing_names(_ws.WebSocketServerFactory(), ("_batched_timer",)),
    ),
)

DIRECT_HANDSHAKE = declare(
    "autobahn.direct_handshake",
    touches=(
        "autobahn.websocket.protocol._url_to_origin / _is_same_origin",
        "WebSocketProtocol._parseExtensionsHeader",
        "WebSocketServerProtocol._wskey and the http_* / websocket_* attributes "
        "processHandshake sets",
    ),
    why=(
        "the opening handshake is checked on the request twisted.web already "
        "parsed, instead of written out again and parsed a second time"
    ),
    checked="Autobahn 26.7.1, 26.10.2",
    fallback="every opening handshake takes Autobahn's own processHandshake",
    needs=("autobahn.lean_protocol",),
    check=lambda: all_of(
        missing_names(_ws, ("_url_to_origin", "_is_same_origin")),
        missing_names(_P, ("_parseExtensionsHeader", "succeedHandshake", "failHandshake")),
        code_names(
            _P.processHandshake,
            (
                "_wskey",
                "_parseExtensionsHeader",
                "_url_to_origin",
                "_is_same_origin",
                "http_request_uri",
                "http_request_path",
                "http_request_params",
                "http_request_host",
                "websocket_version",
                "websocket_protocols",
                "websocket_origin",
                "websocket_extensions",
            ),
        ),
        code_names(_P.succeedHandshake, ("_wskey",)),
    ),
)

# Methods a handler must not override for the direct handshake: they see
# (or parse) the request bytes that the direct handshake never replays.
HANDSHAKE_HOOKS = ("processHandshake", "dataReceived", "_dataReceived", "consumeData")

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")


def direct_handshake_ok(handler: type) -> bool:
    """
    Whether C{handler} leaves every hook the direct handshake skips alone.
    """
    return DIRECT_HANDSHAKE and all(
        getattr(handler, name, None) is getattr(WebSocketServerProtocol, name)
        for name in HANDSHAKE_HOOKS
    )


def _has_token(value: str, token: str) -> bool:
    # Whether the comma-separated header value lists token (any case).
    if value.lower() == token:
        return True
    return any(part.strip().lower() == token for part in value.split(","))


class GuardedHandshakeMixin(_Hooked):
    """
    For a handler on Autobahn's own handshake path: C{succeedHandshake}
    runs in a Deferred's callback there, where an exception would be an
    unhandled error and the client left waiting; before the 101 it is a
    500, after it a 1011.  (The direct handshake does the same in
    L{DirectHandshakeMixin}.)
    """

    wsmux: Connection

    def processHandshake(self) -> None:
        # Autobahn's parser ends a header line at more bytes than CR LF
        # (see wsmux._upgrades.head_fields).  Where that would change what
        # its handshake reads, the request is refused; elsewhere only a
        # value it never reads is cut short, which onConnect mends.
        me: Any = self
        data = me.data
        end = data.find(b"\r\n\r\n")
        if end >= 0 and me.state == me.STATE_CONNECTING:
            why = autobahn_misreads(data[: end + 4])
            if why is not None:
                me.failHandshake(f"Bad Request: {why}", 400)
                return
        super().processHandshake()  # type: ignore[misc]

    def onConnect(self, request: ConnectionRequest) -> Any:
        # The handler gets the head read line by line (the direct handshake
        # reads twisted.web's, which agrees), in the same dict, which is the
        # request's too.
        me: Any = self
        head = getattr(me, "http_request_data", None)
        if head:
            headers = me.http_headers
            headers.clear()
            headers.update(autobahn_headers(head))
        return super().onConnect(request)  # type: ignore[misc]

    def succeedHandshake(self, res: Any) -> None:
        if self.state != self.STATE_CONNECTING:
            # The handler closed or dropped it in onConnect, or the client
            # left while onConnect thought: no 101 for it.
            return
        try:
            super().succeedHandshake(safe_accept(res))
        except Exception:
            self.wsmux.handler_failed("the opening handshake")


_UPGRADE_VERSIONS = (b"HTTP/1.1", b"HTTP/2")


class DirectHandshakeMixin(_Hooked):
    """
    Open a connection from the request C{twisted.web} already parsed.
    """

    # Bytes the client sent with the head (handed over with it).
    _wsmux_early = 0

    def _wsmux_handshake_from(self, request: Any, head: bytes, rest: bytes) -> bool:
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
        # A head Autobahn's parser could misread takes Autobahn's path, where
        # GuardedHandshakeMixin.processHandshake decides (a target past
        # ASCII too: 0xa0 is a space to Autobahn).
        checked = (
            self._wsmux_check(request)
            if request.uri.isascii() and len(head.translate(None, LINE_BREAK_BYTES)) == len(head)
            else None
        )
        if checked is None:
            me._wsmux_arm_open_timeout()
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
        if rest:
            self._wsmux_early = len(rest)
        me._wskey = key
        connection = ConnectionRequest(
            me.peer, headers, host, path, params, version, origin, protocols, extensions
        )
        # Autobahn runs onConnect through txaio.as_future and a Deferred
        # even when it answers at once, as most handlers do.  (Past the
        # route class's guard, which is for Autobahn's path.)
        try:
            result = super(GuardedHandshakeMixin, me).onConnect(connection)  # type: ignore[misc]
        except Exception:
            self._wsmux_connect_failed(Failure())
            return True
        if result is None or type(result) in (str, tuple):
            self._wsmux_connect_answered(result)
        else:
            me._wsmux_arm_open_timeout()
            deferred = result if isinstance(result, Deferred) else ensureDeferred(result)
            deferred.addCallbacks(self._wsmux_connect_answered, self._wsmux_connect_failed)
        return True

    def _wsmux_check(
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
        # HTTP/2: a WebSocket stream's request, made an HTTP/1.1 upgrade
        # (wsmux._compat_http2.WebSocketStream); h2 lets no other carry
        # the upgrade headers.
        if request.clientproto not in _UPGRADE_VERSIONS or request.method != b"GET":
            return None
        uri = request.uri.decode("iso-8859-1")
        if uri[:1] != "/" or uri[:2] == "//" or "#" in uri:
            return None
        headers: dict[str, str] = {}
        counts: dict[str, int] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            key = name.decode("iso-8859-1").lower()
            # As twisted.web read them: without the spaces and tabs around
            # them, every other byte kept.
            if len(values) == 1:
                headers[key] = values[0].decode("iso-8859-1")
            else:
                headers[key] = ", ".join(v.decode("iso-8859-1") for v in values)
            counts[key] = len(values)

        if counts.get("host") != 1:
            return None
        # The values Autobahn takes from the headers, it strips (str.strip).
        host = headers["host"].strip()
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
            origin = headers["origin"].strip()
            try:
                origin_tuple = _ws._url_to_origin(origin)
            except ValueError:
                return None
            if not (origin_tuple == "null" and me.factory.allowNullOrigin) and not (
                _ws._is_same_origin(
                    origin_tuple,
                    "https" if me.factory.isSecure else "http",
                    me.factory.externalPort or me.factory.port,
                    me.allowedOriginsPatterns,
                )
            ):
                return None
        if counts.get("sec-websocket-key") != 1:
            return None
        key = headers["sec-websocket-key"].strip()
        if len(key) != 24 or key[-2:] != "==" or not _KEY_CHARS.issuperset(key[:-2]):
            return None
        if counts.get("sec-websocket-extensions", 0) > 1:
            return None
        if me.maxConnections > 0 and me.factory.countConnections > me.maxConnections:
            return None
        return uri, headers, host, version, protocols, origin, key

    def _wsmux_connect_answered(self, result: Any) -> None:
        me: Any = self
        if me.state != me.STATE_CONNECTING:
            return  # the client left (or timed out) while onConnect thought
        # Bytes that came with the head: frames, read once the connection
        # is open, which Autobahn counts as they arrive (they were handed
        # over with the head instead; what arrives while onConnect thinks,
        # Autobahn counts itself, as bytes before the open).
        early = self._wsmux_early
        try:
            # Past the route class's guard, which is for Autobahn's path.
            if type(result) is tuple:
                result = safe_accept(result)
            super(GuardedHandshakeMixin, me).succeedHandshake(result)  # type: ignore[misc]
            if early and me.state != me.STATE_CONNECTING:
                me.trafficStats.incomingOctetsWireLevel += early
        except Exception:
            # Autobahn leaves this in a Deferred nobody reads (and the
            # client waiting for the open-handshake timeout).  Before the
            # 101 the client gets 500; after it, a close with 1011.
            me.wsmux.handler_failed("the opening handshake")

    def _wsmux_connect_failed(self, failure: Failure) -> Optional[Failure]:
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
    if transport.__class__ not in TCP_SERVERS:
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


SHARED_EVENTS = declare(
    "autobahn.shared_events",
    touches=("autobahn.util.ObservableMixin._valid_events / _results (set per connection)",),
    why=(
        "every connection gets its own list of event names and a dict with a None per "
        "event (about 250 bytes) though nearly none ever has a listener: connections "
        "share one tuple of the names, and the dict is made when a listener is added"
    ),
    checked="Autobahn 26.7.1, 26.10.2",
    fallback="each connection keeps the list and the dict Autobahn made for it",
    check=lambda: all_of(
        missing_names(ObservableMixin, ("set_valid_events", "on", "off", "fire", "_check_event")),
        code_names(ObservableMixin.set_valid_events, ("_valid_events", "_results")),
        code_names(ObservableMixin.fire, ("_listeners", "_results")),
        code_names(ObservableMixin._check_event, ("_valid_events",)),
    ),
)

# The event names connections share (by their names, in Autobahn's order).
_EVENT_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _share_events(protocol: Any) -> None:
    # What set_valid_events made, while nothing listens: one tuple for
    # every connection, and no dict of results until a listener is added
    # (fire writes to it only when there are listeners).
    own = protocol.__dict__
    events = own.get("_valid_events")
    if type(events) is not list or own.get("_listeners") is not None:
        return
    names = tuple(events)
    own["_valid_events"] = _EVENT_NAMES.setdefault(names, names)
    own.pop("_results", None)


# What Autobahn (and wsmux) keep on every server connection, by name: its
# state from the opening handshake to the close, and the message and frame
# being read or sent.
_CONNECTION_STATE = (
    "_isMessageCompressed", "_perMessageCompress", "_transport_details", "_wskey",
    "autoPingPending", "autoPingPendingCall", "autoPingPendingSent", "autoPingPendingSeq",
    "autoPingTimeoutCall", "closeHandshakeTimeoutCall", "closedByMe", "control_frame_data",
    "current_frame", "current_frame_masker", "data", "droppedByMe", "failedByMe", "frame_data",
    "http_headers", "http_request_data", "http_request_host", "http_request_params",
    "http_request_path", "http_request_uri", "http_response_data", "http_status_line",
    "inside_message", "is_closed", "is_open", "localCloseCode", "localCloseReason",
    "message_data", "message_data_total_length", "message_is_binary",
    "openHandshakeTimeoutCall", "remoteCloseCode", "remoteCloseReason", "send_compressed",
    "send_message_frame_length", "send_message_frame_mask", "send_message_frame_masker",
    "send_message_opcode", "send_queue", "send_state", "serverConnectionDropTimeoutCall",
    "state", "trackedTimings", "trafficStats", "triggered", "utf8validateIncomingCurrentMessage",
    "utf8validateLast", "utf8validator", "wasClean", "wasCloseHandshakeTimeout",
    "wasMaxFramePayloadSizeExceeded", "wasMaxMessagePayloadSizeExceeded", "wasNotCleanReason",
    "wasOpenHandshakeTimeout", "wasServerConnectionDropTimeout",
    "wasServingFlashSocketPolicyFile", "websocket_extensions", "websocket_extensions_in_use",
    "websocket_origin", "websocket_protocol_in_use", "websocket_protocols",
    "websocket_version", "wsmux",
)  # fmt: skip


def _connection_slots() -> tuple[str, ...]:
    # A name some class of Autobahn's (or Twisted's, txaio's) gives a value
    # (peer, factory, transport...) stays in the connection's dict: a slot
    # would hide that value until the connection sets its own.
    defined = set().union(*(vars(k) for k in _P.__mro__))
    return tuple(name for name in _CONNECTION_STATE if name not in defined)


_CONNECTION_SLOTS = _connection_slots()


def _slots_check() -> Optional[str]:
    probe = type("Probe", (_P,), {"__slots__": _CONNECTION_SLOTS})
    return all_of(
        None if "__dict__" in dir(probe) else "Autobahn's server protocol has no __dict__",
        slots_hold(probe, ("wsmux", "state")),
        code_names(
            WebSocketProtocol._connectionMade,
            ("trafficStats", "utf8validator", "send_state", "state", "wasClean"),
        ),
    )


CONNECTION_SLOTS = declare(
    "autobahn.connection_slots",
    touches=(
        "the attributes Autobahn's WebSocketProtocol sets on every connection "
        "(state, trafficStats, http_headers, websocket_*, was*...), by name",
    ),
    why=(
        "each connection of Autobahn's keeps some 60 attributes in a dict of its own "
        "(about 1.6 KiB, too many for Python's shared-key dicts): as slots of the "
        "connection's class they take 8 bytes each"
    ),
    checked="Autobahn 26.7.1, 26.10.2",
    fallback="each connection keeps its attributes in its own dict",
    check=_slots_check,
    needs=("autobahn.lean_protocol",),
)


class LeanServerProtocol(WebSocketServerProtocol):
    """
    Autobahn's connection entry points, minus eager debug-log formatting.

    Autobahn's own versions format their debug arguments (qualified
    function names, the close reason's text, a pretty-printed option list)
    before the logger decides to drop them, on every connection.  These do
    the same work and log what Autobahn logs above debug level.  wsmux puts this class right above
    Autobahn in every route class, so a handler's own overrides (and their
    C{super()} calls) run as before.

    @ivar _wsmux_direct_open: set by wsmux before the connection starts when
        L{DirectHandshakeMixin} will open it; the open-handshake timer is
        then armed only if the handshake does not finish at once.
    @ivar _wsmux_tcp_nodelay: what the transport's C{TCP_NODELAY} already
        is, when known (C{twisted.web} turns it on); L{None} otherwise.
    """

    _wsmux_direct_open = False
    _wsmux_tcp_nodelay: Optional[bool] = None
    wsmux: Connection

    def connectionMade(self) -> None:
        if SHARED_EVENTS:
            _share_events(self)
        transport: Any = self.transport
        details = transport_details(transport, bool(self.is_server))
        self._transport_details = details
        self.peer = details.peer
        # twisted.web has already turned Nagle off on a connection it hands
        # over (_wsmux_tcp_nodelay says so): one system call fewer.  (tcpNoDelay
        # is an option Autobahn copies onto connections, undeclared.)
        nodelay = self.tcpNoDelay  # type: ignore[attr-defined]
        if self._wsmux_tcp_nodelay is None or self._wsmux_tcp_nodelay != nodelay:
            try:
                transport.setTcpNoDelay(nodelay)
            except Exception:  # Unix sockets and other transports without it
                pass
        self._connectionMade()

    def _connectionMade(self) -> None:
        if not self._wsmux_direct_open:
            _connection_made(self)
        else:
            saved = self.__dict__.get("openHandshakeTimeout", _MISSING)
            self.openHandshakeTimeout = 0
            _connection_made(self)
            if saved is _MISSING:
                del self.openHandshakeTimeout
            else:
                self.openHandshakeTimeout = saved
        self.factory.countConnections += 1

    def _wsmux_arm_open_timeout(self) -> None:
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
        # Writes held for this connection go out before it closes: over TLS,
        # when they fit in a record (the close frame, usually), in one send
        # with the close_notify.
        pieces = self.wsmux.policy.writes.take(transport)
        sealed = False
        if pieces:
            sealed = not abort and tls_seal(transport, pieces)
            if not sealed:
                write_now(transport, pieces)
        # The closing handshake is over and everything is sent: close now.
        if not abort and self.wasClean and close_idle_tcp(transport, CLOSED_CLEANLY):
            return
        super()._closeConnection(abort)
        if sealed:
            tls_flush_sealed(transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if _is_tls_error(reason.value):
            self.log.error(_maybe_tls_reason(reason.value))
        self._connectionLost(reason)

    def _connectionLost(self, reason: Any) -> None:
        WebSocketProtocol._connectionLost(self, reason)
        self.factory.countConnections -= 1

    def onConnect(self, request: ConnectionRequest) -> Any:
        return None

    def on(self, event: str, handler: Any) -> None:
        self._wsmux_own_results()
        super().on(event, handler)

    def off(self, event: Optional[str] = None, handler: Any = None) -> None:
        # Autobahn's off() makes the listeners dict too, after which fire()
        # writes to the results.
        self._wsmux_own_results()
        super().off(event, handler)

    def _wsmux_own_results(self) -> None:
        if self.__dict__.get("_results") is None and self._valid_events is not None:
            # What set_valid_events would have made (see _share_events).
            self._results = {name: None for name in self._valid_events}


class SlottedLeanServerProtocol(LeanServerProtocol):
    """
    L{LeanServerProtocol}, with Autobahn's per-connection attributes (and
    wsmux's connection) as slots (L{CONNECTION_SLOTS}); anything else a
    connection sets goes to its dict as before.
    """

    __slots__ = _CONNECTION_SLOTS if CONNECTION_SLOTS else ()


# Autobahn's classes (and Twisted's, txaio's) below the lean class.
_BELOW_LEAN = frozenset(_P.__mro__)


def lean_protocol_for(handler: type) -> type:
    """
    The class to put right above Autobahn under C{handler}'s route class:
    L{SlottedLeanServerProtocol}, unless one of the handler's own classes
    has slots of its own (the layouts could not be combined) or gives a
    value to a name wsmux keeps in a slot (a default, a property: wherever
    that class lands in the route class's order, a slot above it would hide
    it); then L{LeanServerProtocol}, which keeps everything in the dict.
    """
    slots = SlottedLeanServerProtocol.__slots__
    if not slots:
        return LeanServerProtocol
    for klass in handler.__mro__:
        if klass in _BELOW_LEAN:
            continue
        own = vars(klass)
        if own.get("__slots__") or any(name in own for name in slots):
            return LeanServerProtocol
    return SlottedLeanServerProtocol


# -- Autobahn's debug line at every connection ---------------------------------


class _Pformat:
    """
    C{pprint.pformat}'s result, made only if someone formats it.
    """

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    __repr__ = __str__


LAZY_PFORMAT = declare(
    "autobahn.lazy_pformat",
    touches=(
        "autobahn.websocket.protocol.pformat (the module's global, replaced while "
        "WebSocketProtocol._connectionMade runs)",
    ),
    why=(
        "WebSocketProtocol._connectionMade pretty-prints the connection's options for "
        "a debug line on every connection, logged or not (a tenth of a handshake); "
        "the debug line formats them itself when it is written"
    ),
    checked="Autobahn 26.7.1, 26.10.2",
    fallback="every connection pretty-prints its options for the debug line",
    check=lambda: all_of(
        code_names(WebSocketProtocol._connectionMade, ("pformat",)),
        None
        if getattr(_ws, "pformat", None) is pprint.pformat
        else "autobahn.websocket.protocol.pformat is not pprint.pformat",
    ),
)


def _connection_made(protocol: Any) -> None:
    # Autobahn's own set-up of a connection, with its debug line's option
    # list formatted only if the line is written.
    _lazily_formatted(WebSocketProtocol._connectionMade, protocol)


def _lazily_formatted(method: Any, protocol: Any) -> None:
    # Call one of Autobahn's methods whose debug lines pretty-print their
    # arguments, with the printing done only if a line is written.  The
    # module's pformat is put back at once: Autobahn's other users of it
    # (Timings) need a str.
    if not LAZY_PFORMAT:
        method(protocol)
        return
    _ws.pformat = _Pformat  # type: ignore[assignment]
    try:
        method(protocol)
    finally:
        _ws.pformat = pprint.pformat


# -- whole small frames --------------------------------------------------------

FAST_FRAMES = declare(
    "autobahn.fast_frames",
    touches=(
        "WebSocketProtocol._dataReceived / processData / data / current_frame / inside_message",
        "WebSocketProtocol.failedByMe / wasMaxMessagePayloadSizeExceeded (set as Autobahn "
        "sets them when it fails a compressed message), and its failure reasons' text",
        "WebSocketProtocol._perMessageCompress / send_queue / trafficStats",
        "WebSocketProtocol._cancelAutoPingTimeoutCall",
        "txaio ObservableMixin._listeners / _parent",
    ),
    why=(
        "whole small masked frames are cut out of the buffer and delivered, and "
        "whole messages sent, without a dozen hooks per frame (the most of an echo); "
        "compressed ones too, through the negotiated permessage-deflate's own "
        "methods, with Autobahn's checks in Autobahn's order"
    ),
    checked="Autobahn 26.7.1, 26.10.2; txaio 25.x, 26.x",
    fallback="every frame takes Autobahn's own frame path",
    needs=("autobahn.lean_protocol",),
    check=lambda: all_of(
        missing_names(
            _P, ("_dataReceived", "processData", "onCloseFrame", "_cancelAutoPingTimeoutCall")
        ),
        code_names(_P._dataReceived, ("data", "consumeData")),
        code_names(_P.consumeData, ("processData",)),
        code_names(_P.processData, ("current_frame", "data", "inside_message", "onFrameBegin")),
        code_names(
            WebSocketProtocol._connectionMade,
            ("_perMessageCompress", "trafficStats", "send_queue", "data"),
        ),
        code_names(_P.sendMessage, ("_perMessageCompress", "autoFragmentSize")),
        code_names(_P.onFrameBegin, ("start_decompress_message",)),
        code_names(
            _P.onFrameData,
            (
                "decompress_message_data",
                "PayloadExceededError",
                "failedByMe",
                "wasMaxMessagePayloadSizeExceeded",
                "_max_message_size_exceeded",
                "_invalid_payload",
            ),
        ),
        code_names(_P.onFrameEnd, ("end_decompress_message",)),
        code_names(_P.sendData, ("send_queue",)),
        code_names(_P.fire, ("_listeners", "_parent")),
    ),
)

# Receive-side hooks a handler must not override for the fast path.
RECEIVE_HOOKS = (
    "dataReceived",
    "_dataReceived",
    "consumeData",
    "processData",
    "processControlFrame",
    "onFrameBegin",
    "onFrameData",
    "onFrameEnd",
    "_onMessageBegin",
    "_onMessageFrameBegin",
    "_onMessageFrameData",
    "_onMessageFrameEnd",
    "_onMessageFrame",
    "_onMessageEnd",
    "_onMessage",
    "onMessageBegin",
    "onMessageFrameBegin",
    "onMessageFrameData",
    "onMessageFrameEnd",
    "onMessageFrame",
    "onMessageEnd",
)

# Send-side methods a handler must not override for the fast path.
SEND_HOOKS = ("sendMessage", "sendPreparedMessage", "sendFrame", "sendData")


def _overrides(handler: type, names: tuple[str, ...]) -> bool:
    return any(
        getattr(handler, name, None) is not getattr(WebSocketServerProtocol, name) for name in names
    )


def fast_path_ok(handler: type) -> tuple[bool, bool]:
    """
    Whether the receive and the send fast paths keep C{handler}'s
    behaviour: true for each unless C{handler} overrides one of the hooks
    the path skips.
    """
    if not FAST_FRAMES:
        return False, False
    return not _overrides(handler, RECEIVE_HOOKS), not _overrides(handler, SEND_HOOKS)


def _nvx_unmask_in_place() -> Any:
    # Autobahn's C masker (NVX), driven directly so that it can work in
    # place on a bytearray; None when this Autobahn build lacks it, and big
    # frames then take Autobahn's path.
    try:
        from _nvx_xormasker import ffi, lib
    except ImportError:  # pragma: no cover - Autobahn without NVX
        return None

    def unmask_in_place(buffer: bytes, mask: bytes) -> None:
        # Writes into C{buffer}: only for a bytes object just made and not
        # yet seen by anyone else.
        key = ffi.new("uint8_t[4]", mask)
        masker = ffi.gc(lib.nvx_xormask_new(key), lib.nvx_xormask_free)
        lib.nvx_xormask_set_impl(masker, 2)  # SSE2
        lib.nvx_xormask_process(masker, ffi.from_buffer("uint8_t[]", buffer), len(buffer))

    return unmask_in_place


NVX_MASKER = declare(
    "autobahn.nvx_masker",
    touches=("_nvx_xormasker (Autobahn's C XOR masker, driven in place)",),
    why="a big binary frame is unmasked where it lies, in one pass, without copies",
    checked="Autobahn 26.7.1, 26.10.2",
    fallback="big binary frames take Autobahn's own frame path",
    needs=("autobahn.fast_frames",),
    check=lambda: all_of(
        None if _nvx_unmask_in_place() is not None else "no _nvx_xormasker module",
    ),
)

unmask_in_place = _nvx_unmask_in_place() if NVX_MASKER else None


class FastReceiveMixin(_Hooked):
    """
    Take whole small data frames without Autobahn's per-frame hooks.

    Sits directly in front of the handler class.
    """

    _wsmux_busy: bool = False
    _wsmux_again: bool = False
    # A big binary frame being gathered: pieces so far, their size, the
    # frame's length and mask.
    _wsmux_big: Optional[list[bytes]] = None
    _wsmux_big_have: int = 0
    _wsmux_big_length: int = 0
    _wsmux_big_mask: bytes = b""
    wsmux: Connection

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's adapter formats a debug-log line per read here.  What
        # this read makes anyone write is held (see _held), whichever path
        # (this one or Autobahn's) handles it.  A handler that raises ends
        # its own connection (Connection.handler_failed), never the
        # read loop of another.
        writes = self.wsmux.policy.writes
        try:
            if writes.held is not None:  # held already: this turn's, or a read inside a read
                self._dataReceived(data)
                return
            writes.start()
            transport: Any = self.transport
            if transport.__class__ in TCP_SERVERS:
                transport.reactor.callLater(0, writes.send_held)  # type: ignore[attr-defined]
                self._dataReceived(data)
                return
            reactor = tls_turn_reactor(transport)
            if reactor is not None:
                reactor.callLater(0, writes.send_held)
                self._dataReceived(data)
                return
            try:
                self._dataReceived(data)
            finally:
                writes.send_held()
        except Exception:
            self.wsmux.handler_failed("a message callback")

    def consumeData(self) -> None:
        if self.state != self.STATE_OPEN and self._wsmux_big is None:
            super().consumeData()
            return
        if self._wsmux_busy:
            # Called again from inside a handler (an in-memory transport can
            # deliver synchronously): the outer loop below takes the new
            # bytes, in order, after the messages it has already cut out.
            self._wsmux_again = True
            return
        self._wsmux_busy = True
        try:
            open_ = self.STATE_OPEN
            closing = self.STATE_CLOSING
            while True:
                self._wsmux_again = False
                state = self.state
                if state != open_ and state != closing:
                    return
                if self._wsmux_big is not None:
                    if not self._wsmux_gather_big():
                        return
                    continue
                if state == open_ and self.current_frame is None:
                    messages = self._wsmux_cut_messages()
                    if messages:
                        self._wsmux_deliver(messages)
                    if self._wsmux_failure is not None:
                        self._wsmux_fail_message()
                        continue
                    if messages:
                        continue
                    if self._wsmux_start_big() or self._wsmux_close_frame():
                        continue
                if not self.processData() and not self._wsmux_again:
                    return
        finally:
            self._wsmux_busy = False

    def _wsmux_receive_ok(self) -> bool:
        # Between messages, and nothing asked of Autobahn's path.
        return not (
            self.inside_message or self.logFrames or self.trackedTimings or not self.applyMask
        )

    def _wsmux_cut_messages(self) -> list[Message]:
        """
        Cut the whole fast-path frames at the head of the buffer out of it
        (L{wsmux._frames.cut_in_python} says which).

        @return: each message's payload, whether it is binary, and its
            length on the wire (compressed, for a compressed message).  A
            compressed message that fails (too big, corrupt, bad UTF-8) is
            cut out too and ends the batch, with L{_wsmux_failure} set:
            its decompression has moved the connection's inflater on, so
            Autobahn's path could not take it again.
        """
        if not self._wsmux_receive_ok():
            return []
        data: bytes = self.data
        max_message = self.maxMessagePayloadSize
        max_frame = self.maxFramePayloadSize
        validate = self.utf8validateIncoming
        inflate = self._wsmux_inflate if self._perMessageCompress is not None else None
        if cut is not None:
            # In C, up to the first compressed frame; Python takes those.
            messages, i, wire = cut(data, max_message, max_frame, validate)
            grown = 0
            if inflate is not None:
                more, i, more_wire, grown = cut_in_python(
                    data, i, max_message, max_frame, validate, inflate
                )
                messages += more
                wire += more_wire
        else:
            messages, i, wire, grown = cut_in_python(
                data, 0, max_message, max_frame, validate, inflate
            )
        if i:
            self.data = data[i:]
            if messages:
                self._wsmux_received(len(messages), wire + grown, wire)
        return messages

    # A compressed message that failed, for after the messages before it:
    # the close code, the reason, whether it was too big, and what
    # Autobahn would have counted of it (octets on the WebSocket and the
    # application level, frames).
    _wsmux_failure: Optional[tuple[int, str, bool, int, int, int]] = None

    def _wsmux_inflate(self, payload: bytes, text: bool) -> Optional[bytes]:
        """
        Decompress a whole compressed message as Autobahn's frame path does,
        with its checks in its order; L{None} (and L{_wsmux_failure} set)
        where Autobahn would fail the connection.
        """
        deflate: Any = self._perMessageCompress
        limit = self.maxMessagePayloadSize
        size = len(payload)
        deflate.start_decompress_message()
        try:
            out: bytes = deflate.decompress_message_data(payload, limit if limit > 0 else None)
        except PayloadExceededError:
            reason = (
                f"received WebSocket message exceeds payload limit of {limit} octets "
                "after decompression"
            )
            self._wsmux_failure = (1009, reason, True, 0, 0, 0)
            return None
        except Exception as e:  # corrupt (PayloadCorruptError; zlib.error before it)
            reason = f"received WebSocket message cannot be decompressed: {e}"
            self._wsmux_failure = (1007, reason, False, 0, 0, 0)
            return None
        inflated = len(out)
        if 0 < limit < inflated:
            reason = (
                f"received WebSocket message size {inflated} exceeds payload limit of "
                f"{limit} octets"
            )
            self._wsmux_failure = (1009, reason, True, size, inflated, 0)
            return None
        ended_within = -1
        if text:
            try:
                out.decode("utf-8")
            except UnicodeDecodeError:
                valid, ended, _, index = Utf8Validator().validate(out)
                if not valid:
                    reason = (
                        "encountered invalid UTF-8 while processing text message at "
                        f"payload octet index {index}"
                    )
                    self._wsmux_failure = (1007, reason, False, size, inflated, 0)
                    return None
                ended_within = index
        try:
            deflate.end_decompress_message()
        except Exception as e:
            reason = f"received WebSocket message cannot be decompressed: {e}"
            self._wsmux_failure = (1007, reason, False, size, inflated, 1)
            return None
        if ended_within >= 0:
            reason = (
                "UTF-8 text message payload ended within Unicode code point at payload "
                f"octet index {ended_within}"
            )
            self._wsmux_failure = (1007, reason, False, size, inflated, 1)
            return None
        return out

    def _wsmux_fail_message(self) -> None:
        """
        Fail the connection for the compressed message L{_wsmux_inflate}
        refused, as Autobahn's frame path would have (unless the messages
        before it closed the connection).
        """
        assert self._wsmux_failure is not None
        code, reason, too_big, octets, inflated, frames = self._wsmux_failure
        self._wsmux_failure = None
        if self.state == self.STATE_OPEN:
            stats = self.trafficStats
            stats.incomingOctetsWebSocketLevel += octets
            stats.incomingOctetsAppLevel += inflated
            stats.incomingWebSocketFrames += frames
        elif self.state == self.STATE_CLOSED:
            return
        if self.failedByMe:
            return
        if too_big:
            self.wasMaxMessagePayloadSizeExceeded = True
        fail_connection(self, code, reason)

    def _wsmux_close_frame(self) -> bool:
        """
        Take a whole close frame that begins the buffer and hand its code
        and reason to Autobahn's C{onCloseFrame}, as Autobahn's frame
        machinery would (it checks both and answers).
        """
        data: bytes = self.data
        if len(data) < 6 or data[0] != _CLOSE or not self._wsmux_receive_ok():
            return False
        b1 = data[1]
        length = b1 & 0x7F
        if b1 < 0x80 or length > 125 or length == 1 or len(data) < 6 + length:
            return False  # unmasked, too long, a lone code byte, or not all here
        payload = unmask(data[6 : 6 + length], data[2:6]) if length else b""
        self.data = data[6 + length :]
        code = (payload[0] << 8) | payload[1] if length else None
        self.onCloseFrame(code, payload[2:] if length > 2 else None)  # type: ignore[arg-type]
        return True

    def _wsmux_start_big(self) -> bool:
        """
        Start gathering a big whole binary frame if one begins the buffer.

        Text stays on Autobahn's path, which checks UTF-8 as the bytes
        arrive and fails a bad message before the rest of it comes.
        """
        data: bytes = self.data
        if (
            unmask_in_place is None
            or len(data) < 14
            or data[0] != _BINARY
            or data[1] != 0xFF  # masked, 64-bit length
            or not self._wsmux_receive_ok()
        ):
            return False
        length = int.from_bytes(data[2:10], "big")
        max_message = self.maxMessagePayloadSize
        max_frame = self.maxFramePayloadSize
        if length < _BIG or length >> 63 or 0 < max_message < length or 0 < max_frame < length:
            return False
        first = data[14 : 14 + length]
        self._wsmux_big = [first]
        self._wsmux_big_have = len(first)
        self._wsmux_big_length = length
        self._wsmux_big_mask = data[10:14]
        self.data = data[14 + len(first) :]
        self._wsmux_activity()
        return True

    def _wsmux_gather_big(self) -> bool:
        """
        Add buffered bytes to the big frame; deliver it once whole.
        """
        assert self._wsmux_big is not None
        data: bytes = self.data
        need = self._wsmux_big_length - self._wsmux_big_have
        if len(data) <= need:
            self._wsmux_big.append(data)
            self._wsmux_big_have += len(data)
            self.data = b""
        else:
            self._wsmux_big.append(data[:need])
            self._wsmux_big_have = self._wsmux_big_length
            self.data = data[need:]
        if self._wsmux_big_have < self._wsmux_big_length:
            return False
        # One copy into a new bytes object (the empty piece makes sure join
        # never hands back one of the pieces), unmasked where it lies.
        self._wsmux_big.append(b"")
        payload, self._wsmux_big = b"".join(self._wsmux_big), None
        assert unmask_in_place is not None
        unmask_in_place(payload, self._wsmux_big_mask)
        self._wsmux_received(1, self._wsmux_big_length, self._wsmux_big_length)
        self._wsmux_deliver([(payload, True, self._wsmux_big_length)])
        return True

    def _wsmux_received(self, messages: int, octets: int, wire: int) -> None:
        # Autobahn's counters for whole single-frame messages (octets once
        # inflated, and as they came), and activity.
        stats = self.trafficStats
        stats.incomingOctetsWebSocketLevel += wire
        stats.incomingOctetsAppLevel += octets
        stats.incomingWebSocketFrames += messages
        stats.incomingWebSocketMessages += messages
        self._wsmux_activity()

    def _wsmux_uncount(self, messages: list[Message]) -> None:
        # Take back what _wsmux_received counted for these messages.
        stats = self.trafficStats
        stats.incomingOctetsWebSocketLevel -= sum(wire for _, _, wire in messages)
        stats.incomingOctetsAppLevel -= sum(len(payload) for payload, _, _ in messages)
        stats.incomingWebSocketFrames -= len(messages)
        stats.incomingWebSocketMessages -= len(messages)

    def _wsmux_activity(self) -> None:
        # What Autobahn and the idle timeout do when a data frame arrives.
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
            self._cancelAutoPingTimeoutCall()
        conn = self.wsmux
        if conn._idle_call is not None:  # the route has an idle timeout
            conn.activity()

    def _wsmux_deliver(self, messages: list[Message]) -> None:
        open_ = self.STATE_OPEN
        closed = self.STATE_CLOSED
        # The handler's own onMessage, called directly (wsmux's watching
        # wrapper in front of it is done here, without a call per message).
        conn = self.wsmux
        on_message = conn.policy.on_message
        for i, (payload, is_binary, _) in enumerate(messages):
            state = self.state
            if state != open_:
                # The handler closed during the batch.  Autobahn parses a
                # frame only after delivering the one before, and counts it
                # only while open; it parses none once closed.
                if state == closed or self.failedByMe:
                    self._wsmux_uncount(messages[i:])
                    return
                self._wsmux_uncount(messages[i : i + 1])
            self.message_is_binary = is_binary
            result = on_message(self, payload, is_binary)
            if result is not None:
                conn.watch(result, "onMessage")
            # Autobahn's observable "message" event, when anyone listens.
            if self._listeners or self._parent is not None:
                self.fire("message", payload, is_binary=is_binary)


class FastSendMixin(_Hooked):
    """
    Send an unfragmented message (compressed, where the connection
    deflates) as one write.

    Sits directly in front of the handler class, behind wsmux's
    backpressure checks (which apply only while the client is not reading,
    when this path stands aside).
    """

    wsmux: Connection

    def _wsmux_write(self, pieces: tuple[bytes, ...], size: int) -> None:
        # The pieces of one frame, and how many bytes they make.
        self.wsmux.policy.writes.hold(self.transport, pieces, size)

    def _wsmux_fast_send_ok(self) -> bool:
        return (
            not self.wsmux.paused
            and self.state == self.STATE_OPEN
            and not self.send_queue
            and not self.logFrames
            and not self.logOctets
            and not self.trackedTimings
            and not self.maskServerFrames
        )

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: Optional[int] = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        length = len(payload)
        if fragmentSize is None and not sync and type(payload) is bytes:
            deflate: Any = self._perMessageCompress
            if deflate is None or doNotCompress:
                if not (0 < self.autoFragmentSize < length) and self._wsmux_fast_send_ok():
                    if length < 65536:
                        data = frame(_BINARY if isBinary else _TEXT, payload)
                        wire = len(data)
                        self._wsmux_write((data,), wire)
                    else:
                        # The header and a big payload go out together, uncopied.
                        header = frame_header(_BINARY if isBinary else _TEXT, length)
                        wire = len(header) + length
                        self._wsmux_write((header, payload), wire)
                    stats = self.trafficStats
                    stats.outgoingWebSocketMessages += 1
                    stats.outgoingWebSocketFrames += 1
                    stats.outgoingOctetsAppLevel += length
                    stats.outgoingOctetsWebSocketLevel += length
                    stats.outgoingOctetsWireLevel += wire
                    return
            else:
                # Deflate can make a message longer (zlib's deflateBound
                # for any window and memory level): a message that might
                # then need fragments, or pass the limit, goes Autobahn's way.
                bound = deflate_bound(length)
                if (
                    not (0 < self.autoFragmentSize < bound)
                    and not (0 < self.maxMessagePayloadSize < bound)
                    and self._wsmux_fast_send_ok()
                ):
                    self._wsmux_send_deflated(deflate, payload, isBinary)
                    return
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)

    def _wsmux_send_deflated(self, deflate: Any, payload: bytes, is_binary: bool) -> None:
        # A whole message compressed, as one frame, as Autobahn sends (and
        # counts) it.
        deflate.start_compress_message()
        data = deflate.compress_message_data(payload) + deflate.end_compress_message()
        size = len(data)
        first = _BINARY_DEFLATED if is_binary else _TEXT_DEFLATED
        if size < 65536:
            data = frame(first, data)
            wire = len(data)
            self._wsmux_write((data,), wire)
        else:
            header = frame_header(first, size)
            wire = len(header) + size
            self._wsmux_write((header, data), wire)
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingWebSocketFrames += 1
        stats.outgoingOctetsAppLevel += len(payload)
        stats.outgoingOctetsWebSocketLevel += size
        stats.outgoingOctetsWireLevel += wire

    def sendData(self, data: bytes, sync: bool = False, chopsize: Optional[int] = None) -> None:
        # Autobahn's own writes (the handshake response, prepared
        # broadcast messages, pongs, close frames, fragments): the same as
        # Autobahn's, without its debug-log
        # formatting, and sent at once when the socket has room.
        state = self.state
        if sync or chopsize or self.wsmux.paused or self.send_queue or self.logOctets:
            # Autobahn writes to the transport itself: what is held for
            # this connection goes first.
            self.wsmux.policy.writes.release(self.transport)
            super().sendData(data, sync, chopsize)
            return
        self._wsmux_write((data,), len(data))
        if state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif state == self.STATE_CONNECTING:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)


# -- a proxy route's backend leg -----------------------------------------------

RELAY_CLIENT = declare(
    "autobahn.relay_client",
    touches=(
        "WebSocketClientProtocol._connectionMade (replaced: what it does, without its debug line)",
        "WebSocketProtocol data / current_frame / inside_message / processData / "
        "_perMessageCompress / send_queue / trafficStats (as autobahn.fast_frames)",
    ),
    why=(
        "a proxy route's backend leg is opened for every client and relays every "
        "message: Autobahn's client pretty-prints its options for a debug line on "
        "each connection (a fifth of a proxied handshake) and takes each frame "
        "through a dozen hooks and a masker object per message"
    ),
    checked="Autobahn 26.7.1, 26.10.2",
    fallback="the backend leg is Autobahn's own client protocol",
    needs=("autobahn.fast_frames", "autobahn.lazy_pformat"),
    check=lambda: all_of(
        missing_names(WebSocketClientProtocol, ("_connectionMade", "startHandshake")),
        code_names(
            _ws.WebSocketClientProtocol._connectionMade,
            ("_connectionMade", "proxy", "startProxyConnect", "startHandshake"),
        ),
        code_names(WebSocketClientProtocol.consumeData, ("processData",)),
        code_names(WebSocketClientProtocol.startHandshake, ("pformat",)),
    ),
)


class RelayClientProtocol(WebSocketClientProtocol):
    """
    A client protocol for relaying: Autobahn's, started without its eager
    debug-line formatting, and with whole unmasked data frames taken and
    whole messages sent (masked) in one step each.

    Everything else (pings, closes, fragments, frames not whole in the
    buffer, compression, options that log or time frames) takes
    Autobahn's own path.
    """

    def _connectionMade(self) -> None:
        if not RELAY_CLIENT:
            super()._connectionMade()
            return
        # WebSocketClientProtocol._connectionMade, without its debug line.
        _connection_made(self)
        if self.factory.proxy is not None:
            self.startProxyConnect()
        else:
            # Its first debug line pretty-prints the transport's details.
            _lazily_formatted(WebSocketClientProtocol.startHandshake, self)

    def consumeData(self) -> None:
        if not RELAY_CLIENT or self.state != self.STATE_OPEN:
            super().consumeData()  # the handshake, a closing connection
            return
        open_, closing = self.STATE_OPEN, self.STATE_CLOSING
        while True:
            state = self.state
            if state != open_ and state != closing:
                return
            if state == open_ and self._wsmux_take_messages():
                continue
            if not self.processData():
                return

    def _wsmux_take_messages(self) -> bool:
        """
        Cut the whole unmasked data frames at the head of the buffer out of
        it and hand each to C{onMessage}; whether any was.
        """
        if (
            self.current_frame is not None
            or self.inside_message
            or self.logFrames  # type: ignore[attr-defined]
            or self.trackedTimings
        ):
            return False
        data: bytes = self.data
        messages, i, octets, _ = cut_in_python(
            data,
            0,
            self.maxMessagePayloadSize,  # type: ignore[attr-defined]
            self.maxFramePayloadSize,  # type: ignore[attr-defined]
            self.utf8validateIncoming,  # type: ignore[attr-defined]
            masked=False,
        )
        if not messages:
            return False
        self.data = data[i:]
        stats = self.trafficStats
        stats.incomingOctetsWebSocketLevel += octets
        stats.incomingOctetsAppLevel += octets
        stats.incomingWebSocketFrames += len(messages)
        stats.incomingWebSocketMessages += len(messages)
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:  # type: ignore[attr-defined]
            self._cancelAutoPingTimeoutCall()
        for payload, is_binary, _ in messages:
            if self.state != self.STATE_OPEN:
                break  # closed by a message before: the rest is not delivered
            self.onMessage(payload, is_binary)
        return True

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: Optional[int] = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        length = len(payload)
        if (
            RELAY_CLIENT
            and fragmentSize is None
            and not sync
            and type(payload) is bytes
            and self.state == self.STATE_OPEN
            and self._perMessageCompress is None
            and not self.send_queue
            and not (0 < self.autoFragmentSize < length)  # type: ignore[attr-defined]
            and not self.logFrames  # type: ignore[attr-defined]
            and not self.logOctets  # type: ignore[attr-defined]
            and not self.trackedTimings
        ):
            mask = os.urandom(4)  # RFC 6455 5.3: a fresh, unpredictable mask
            header = bytearray(frame_header(_BINARY if isBinary else _TEXT, length))
            header[1] |= 0x80
            data = bytes(header) + mask + (unmask(payload, mask) if length else b"")
            transport: Any = self.transport
            transport.write(data)
            stats = self.trafficStats
            stats.outgoingWebSocketMessages += 1
            stats.outgoingWebSocketFrames += 1
            stats.outgoingOctetsAppLevel += length
            stats.outgoingOctetsWebSocketLevel += length
            stats.outgoingOctetsWireLevel += len(data)
            return
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)


# -- failing a connection ------------------------------------------------------

FAIL_CONNECTION = declare(
    "autobahn.fail_connection",
    touches=("WebSocketProtocol._fail_connection (called)",),
    why=(
        "a route fails a connection (1009 for too many fragments or too big a "
        "stream) exactly as Autobahn fails one for a protocol violation"
    ),
    checked="Autobahn 26.7.1, 26.10.2",
    fallback="the route marks the connection failed and sends the close frame itself",
    check=lambda: all_of(
        missing_names(WebSocketProtocol, ("_fail_connection",)),
        code_names(WebSocketProtocol._fail_connection, ("failedByMe", "sendCloseFrame")),
    ),
)


def fail_connection(protocol: Any, code: int, reason: str) -> None:
    """
    Fail C{protocol}'s connection with C{code}, as Autobahn fails one for a
    protocol violation.
    """
    if FAIL_CONNECTION:
        protocol._fail_connection(code, reason)
    elif protocol.state == protocol.STATE_OPEN:
        protocol.failedByMe = True
        protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)


# -- whether a connection deflates ---------------------------------------------

PER_MESSAGE_COMPRESS = declare(
    "autobahn.per_message_compress",
    touches=("WebSocketProtocol._perMessageCompress",),
    why="one attribute read says whether a connection deflates its messages",
    checked="Autobahn 26.7.1, 26.10.2",
    fallback="read from the public websocket_extensions_in_use list",
    check=lambda: code_names(WebSocketProtocol._connectionMade, ("_perMessageCompress",)),
)


def compressing(protocol: Any) -> bool:
    """
    Whether C{protocol}'s connection compresses messages (permessage-deflate).
    """
    if PER_MESSAGE_COMPRESS:
        return protocol._perMessageCompress is not None
    return bool(getattr(protocol, "websocket_extensions_in_use", None))
