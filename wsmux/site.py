"""
The HTTP side: a C{Site} whose channels cap the request head and give
clients a deadline to send it.

C{twisted.web} alone lets a client take twelve hours over a request head
(its idle timeout restarts with every byte) and answers oversized heads
with a bare 400.  wsmux's channel counts from the first byte: the request
line and headers must arrive within the open-handshake timeout, the request
line within C{max_request_line} bytes (else 414) and the headers within
C{max_headers} lines and C{max_header_bytes} bytes (else 431).

A request head that arrives whole in the connection's first read (most
WebSocket upgrades) is read in one pass instead of line by line; anything
unusual takes C{twisted.web}'s own line parser (L{GuardedHTTPChannel}).
"""

from __future__ import annotations

import time
from http import HTTPStatus
from io import BytesIO
from typing import Any, Optional
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import INegotiated
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel, datetimeToString, unquote
from twisted.web.server import Request, Site

from wsmux._compat_http2 import HTTP2, take_http2
from wsmux._compat_twisted import (
    parse_whole_head,
    parsed_headers,
    printable_ascii,
    speed_up_log_context,
    start_parsed_request,
)
from wsmux._upgrades import DirectUpgrade
from wsmux.limits import ServerLimits, client_address
from wsmux.logs import log
from wsmux.routing import RouteTree, is_upgrade

# How long a kept-alive HTTP connection may sit idle between requests.
KEEPALIVE_IDLE = 60

# Bytes after an upgrade's head read while its route decides, before
# reading stops (twisted.web's own figure for pipelined requests).
_UPGRADE_REST_MAX = 16384

# Capped bodies up to this size are read into memory, not a temporary file.
_IN_MEMORY_BODY = 1024 * 1024


class HeadDeadlines:
    """
    The deadlines of the request heads on one site, on one reactor timer.

    Every channel gets the same time, so deadlines fall due in the order
    they were set: a dict keeps them in that order, setting and clearing
    one is a dict insert and delete, and one timer, set for the earliest,
    serves them all (a reactor timer per connection costs a heap push and
    a cancellation each, several per cent of a WebSocket handshake).

    @ivar timeout: seconds a channel has from L{arm} to L{disarm}.
    """

    def __init__(self, timeout: float, clock: Any) -> None:
        self.timeout = timeout
        self._clock = clock
        self._due: dict[GuardedHTTPChannel, float] = {}
        self._call: Any = None

    def arm(self, channel: GuardedHTTPChannel) -> None:
        """
        Give C{channel} C{timeout} seconds from now, then call its
        C{_head_too_slow}.
        """
        due = self._clock.seconds() + self.timeout
        self._due.pop(channel, None)  # again: to the end, in due order
        self._due[channel] = due
        if self._call is None:
            self._call = self._clock.callLater(self.timeout, self._expire)

    def disarm(self, channel: GuardedHTTPChannel) -> None:
        """
        Forget C{channel}'s deadline, if it has one.
        """
        self._due.pop(channel, None)

    def armed(self, channel: GuardedHTTPChannel) -> bool:
        """
        Whether C{channel} has a deadline.
        """
        return channel in self._due

    def _expire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        late = []
        for channel, due in self._due.items():
            if due > now:
                break
            late.append(channel)
        for channel in late:
            del self._due[channel]
        if self._due:
            first = next(iter(self._due.values()))
            self._call = self._clock.callLater(max(0.0, first - now), self._expire)
        for channel in late:
            channel._head_too_slow()


class GuardedHTTPChannel(HTTPChannel):
    """
    An C{HTTPChannel} with caps on the request head and a deadline for it.

    While the deadline runs, Twisted's idle timeout is not needed (the
    deadline is the shorter of the two, and a client sending bytes does
    not reset it): it starts only when a head leaves a body to read, and
    after a request when Twisted restores it.
    """

    site: WebSocketSite
    _in_head = False
    _head_lines = 0
    _head_bytes = 0
    _http10 = False  # the head being read is an HTTP/1.0 request's
    _idle_timeout: Optional[int] = None
    _body_place: Any = None
    _refused_abort: Any = None
    # Bytes a client sent after an upgrade request's head, kept for the
    # WebSocket protocol while a route decides (None: not an upgrade).
    _upgrade_rest: Optional[list[bytes]] = None
    _upgrade_rest_size = 0
    # Requests answered on this connection so far.
    _served = 0
    # Whether the TLS connection's ALPN choice is still to be looked at.
    _alpn_unread = False

    def connectionMade(self) -> None:
        site = self.site
        site.open_channels.add(self)
        limits = site.limits
        # Twisted's own, coarser caps must not fire before ours.
        self.MAX_LENGTH = max(limits.max_request_line, limits.max_header_bytes) + 2
        self.totalHeadersSize = limits.max_request_line + limits.max_header_bytes + 2
        self.maxHeaders = limits.max_headers + 1
        if site.head_deadlines is not None and self.timeOut:
            if site.head_deadlines.timeout <= self.timeOut:
                self._idle_timeout, self.timeOut = self.timeOut, None
        super().connectionMade()
        self._arm_deadline()
        if HTTP2 and INegotiated.providedBy(self.transport):
            self._alpn_unread = True

    def dataReceived(self, data: bytes) -> None:
        if self._alpn_unread:
            # The first bytes over TLS: the handshake, ALPN included, is
            # done.  A client that chose h2 continues on HTTP/2.
            self._alpn_unread = False
            if take_http2(self, data):
                self.site.channel_gone(self)
                self._disarm_deadline()
                return
        if not self._whole_head(data):
            super().dataReceived(data)

    def _whole_head(self, data: bytes) -> bool:
        """
        Take a request head that arrived whole, and alone, in one pass.

        The result is what C{twisted.web}'s line parser makes of it (the
        same request-line and header checks, the same request object, then
        its own C{allHeadersReceived} and C{allContentReceived}), without a
        call per line through three layers.  Only a plain case qualifies
        (L{wsmux._compat_twisted.parse_whole_head}); anything else returns
        C{False} having changed nothing, for the line parser to read (and
        refuse, when it must).
        """
        if self._in_head:
            return False
        parsed = parse_whole_head(self, data, self.site.limits)
        if parsed is None:
            return False
        command, path, version, headers, end = parsed
        if version == b"HTTP/1.1" and self._upgrade_directly(data, end, path, headers):
            return True
        # From here on, what HTTPChannel.dataReceived and lineReceived do
        # for these lines.
        self.resetTimeout()
        self._disarm_deadline()
        start_parsed_request(self, data, end, command, path, version, headers)
        return True

    def _upgrade_directly(
        self, data: bytes, end: int, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bool:
        """
        Hand an upgrade read in one pass to its route without making a
        C{twisted.web} request, when the route takes it as it is: a path
        the site's route tree leads to a route of one handler without
        C{accepts} (L{RouteTree.endpoint_at},
        L{WebSocketEndpoint.take_directly}).  The request's header steps,
        C{process}, traversal and C{render} are a sixth of a handshake and
        decide nothing for it.

        @return: whether the route took the connection; if not, nothing
            has changed, and the head takes C{twisted.web}'s request (which
            refuses it, runs user code, or serves it otherwise).
        """
        site = self.site
        tree = site.resource
        if (
            not isinstance(tree, RouteTree)
            or site.requestFactory is not WebSocketRequest
            or type(site).getResourceFor is not Site.getResourceFor
        ):
            return False  # a request of the site's own, or its own traversal
        path = target.partition(b"?")[0]
        found = tree.endpoint_at(path)
        if found is None:
            return False
        for name, _ in headers:
            if name == b"Expect":  # twisted.web answers 100 Continue first
                return False
        request = DirectUpgrade(self, target, path, parsed_headers(headers), data[: end + 4])
        if not is_upgrade(request):  # type: ignore[arg-type]
            return False
        # What follows the head goes to the WebSocket protocol.
        self._upgrade_rest = [data[end + 4 :]]
        try:
            taken = found[0].take_directly(request, found[1])
        except Exception:
            # Logged and answered 500, as a render that raises is (here with
            # a bare answer, and the connection closed: it is half given away).
            log.failure("the upgrade to {path} failed", path=path.decode("ascii", "replace"))
            if self.transport is not None:
                self._refuse(500, b"Internal Server Error", "the upgrade failed")
            return True
        if not taken:
            self._upgrade_rest = None
        return taken

    def _arm_deadline(self) -> None:
        deadlines = self.site.head_deadlines
        if deadlines is not None:
            deadlines.arm(self)

    def _disarm_deadline(self) -> None:
        deadlines = self.site.head_deadlines
        if deadlines is not None:
            deadlines.disarm(self)

    def _start_idle_timeout(self) -> None:
        # A body to read: Twisted's idle timeout watches it from here on.
        if self._idle_timeout is not None:
            self.timeOut, self._idle_timeout = self._idle_timeout, None
            self.setTimeout(self.timeOut)

    def lineReceived(self, line: bytes) -> None:
        limits = self.site.limits
        if not self._in_head:
            if line:
                self._in_head = True
                self._head_lines = 0
                self._head_bytes = 0
                self._http10 = line.endswith(b" HTTP/1.0")
                if len(line) > limits.max_request_line:
                    self._refuse(
                        414, b"URI Too Long", f"request line over {limits.max_request_line} bytes"
                    )
                    return
                if not printable_ascii(line):
                    self._refuse(
                        400, b"Bad Request", "a request line with bytes past printable ASCII"
                    )
                    return
        elif line:
            self._head_lines += 1
            self._head_bytes += len(line) + 2
            if self._head_lines > limits.max_headers:
                self._refuse(
                    431,
                    b"Request Header Fields Too Large",
                    f"more than {limits.max_headers} headers",
                )
                return
            if self._head_bytes > limits.max_header_bytes:
                self._refuse(
                    431,
                    b"Request Header Fields Too Large",
                    f"headers over {limits.max_header_bytes} bytes",
                )
                return
            # A line folded onto the one before (RFC 9112 5.2 lets a server
            # refuse it): twisted.web would join it, which a front proxy may
            # not do, and so read another body length than that proxy's.
            if line[:1] in b" \t":
                self._refuse(400, b"Bad Request", "a folded header line")
                return
            colon = line.find(b":")
            if colon < 0:
                self._refuse(400, b"Bad Request", "a header line without a colon")
                return
            # twisted.web keeps every header name it has seen (up to ten
            # thousand of them) for good: a long unique name per request
            # would hold its bytes for the life of the process.
            if colon > limits.max_header_name:
                self._refuse(
                    431,
                    b"Request Header Fields Too Large",
                    f"a header name over {limits.max_header_name} bytes",
                )
                return
            # twisted.web takes "identity" as no coding at all and goes on;
            # RFC 9112 6.3 has a server refuse any coding but chunked last,
            # which is the only one it reads, and 6.1 an HTTP/1.0 request
            # with a Transfer-Encoding at all (twisted.web reads it chunked).
            if colon == 17 and line[:17].lower() == b"transfer-encoding":
                if self._http10:
                    self._refuse(400, b"Bad Request", "a Transfer-Encoding in an HTTP/1.0 request")
                    return
                if line[18:].strip(b" \t").lower() != b"chunked":
                    self._refuse(400, b"Bad Request", "a Transfer-Encoding other than chunked")
                    return
        else:
            # The end of the head.  The deadline runs on until the request
            # is complete: a body has to arrive within it too.
            self._in_head = False
            super().lineReceived(line)
            transport: Any = self.transport
            if self.length != 0 and transport is not None and not transport.disconnecting:
                self._start_idle_timeout()
            return
        super().lineReceived(line)

    def allHeadersReceived(self) -> None:
        # The head is complete and no byte of a body has been read: refuse
        # here what must not be read at all.
        request = self.requests[-1]
        if self.length != 0:  # a Content-Length, or chunked (None)
            limits = self.site.limits
            if is_upgrade(request):
                self._refuse(400, b"Bad Request", "a WebSocket upgrade with a request body")
                return
            cap = limits.max_body_size
            if self.length is not None and cap and self.length > cap:
                self._refuse(
                    413,
                    b"Content Too Large",
                    f"a request body of {self.length} bytes (max_body_size is {cap})",
                )
                return
            registry = self.site.registry
            if registry is not None:
                place, refusal = registry.hold(client_address(request, limits))
                if refusal is not None:
                    code, reason = refusal
                    self._refuse(code, HTTPStatus(code).phrase.encode(), reason)
                    return
                self._body_place = place
            request.wsmux_body_cap = cap
            if cap and cap <= _IN_MEMORY_BODY:
                # A capped body is held in memory, not spooled to a
                # temporary file that would stay open (deleted) until the
                # garbage collector found the request.
                request.gotLength = lambda length: _in_memory(request)  # type: ignore[method-assign]
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        # The whole request is here: its deadline is met, and a body no
        # longer holds a place in the caps.
        self._disarm_deadline()
        self._release_body_place()
        request = self.requests[-1]
        if is_upgrade(request):
            request.wsmux_upgrade = True
            self.expect_upgrade()
        super().allContentReceived()

    def rawDataReceived(self, data: bytes) -> None:
        rest = self._upgrade_rest
        if rest is None:
            super().rawDataReceived(data)
            return
        # An upgrade waits for its route: keep what follows its head for
        # the WebSocket protocol, and stop reading past a little of it (as
        # twisted.web does for pipelined requests).
        rest.append(data)
        self._upgrade_rest_size += len(data)
        transport: Any = self.transport
        if self._upgrade_rest_size > _UPGRADE_REST_MAX and transport is not None:
            transport.pauseProducing()

    def expect_upgrade(self) -> None:
        """
        The request being handled is an upgrade: keep what follows its head
        (once twisted.web reads past the head in raw mode) for the
        WebSocket protocol, until a route takes it (L{take_upgrade_rest}).
        """
        self._upgrade_rest = []
        self._upgrade_rest_size = 0

    def take_upgrade_rest(self) -> bytes:
        """
        Take the bytes the client sent after its upgrade request's head
        (the route taking the connection over calls this once).
        """
        rest, self._upgrade_rest = self._upgrade_rest, None
        return b"".join(rest) if rest else b""

    def body_too_large(self) -> None:
        """
        A body without a length (chunked) grew past C{max_body_size}.
        """
        self._refuse(
            413,
            b"Content Too Large",
            f"a chunked request body over {self.site.limits.max_body_size} bytes",
        )

    def _release_body_place(self) -> None:
        place, self._body_place = self._body_place, None
        if place is not None:
            place.release()

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._in_head:
            self._refuse(431, b"Request Header Fields Too Large", "a header line too long")
        else:
            self._refuse(414, b"URI Too Long", "request line too long")

    def requestDone(self, request: Any) -> None:
        self._served += 1
        if self.site.quiescing:
            # Shutting down: this answer is the connection's last.
            self.persistent = False
        # An upgrade answered over HTTP (refused) on a connection kept
        # alive: what followed its head is the next request's.
        rest = self.take_upgrade_rest()
        # The next request's deadline starts now; twisted.web may go on to
        # read a pipelined request in requestDone, which disarms it again.
        if self.transport is not None and self.persistent:
            self._arm_deadline()
        super().requestDone(request)
        if rest and self.transport is not None and self.persistent:
            self.dataReceived(rest)

    def handed_off(self) -> None:
        """
        A WebSocket protocol has taken the connection over: it is no longer
        this channel's (nor the site's to wait for).
        """
        self._disarm_deadline()
        if self.timeOut:  # no head deadline: twisted.web's idle timeout ran
            self.setTimeout(None)
        self.site.channel_gone(self)

    @property
    def idle(self) -> bool:
        """
        Whether the connection sits between requests: it has answered one
        and nothing of the next has arrived.
        """
        return bool(self._served) and not self.requests and not self._in_head

    def connectionLost(self, reason: Any = None) -> None:
        self.site.channel_gone(self)
        self._disarm_deadline()
        self._release_body_place()
        abort, self._refused_abort = self._refused_abort, None
        if abort is not None and abort.active():
            abort.cancel()
        super().connectionLost(reason)

    def _head_too_slow(self) -> None:
        if self.transport is None:
            return
        self._refuse(
            408, b"Request Timeout", f"request not complete within {self.site.head_timeout}s"
        )

    def _refuse(self, code: int, phrase: bytes, why: str) -> None:
        peer = self.transport.getPeer() if self.transport is not None else None
        log.info(
            "refused request peer={peer} status={status} reason={reason!r}",
            peer=getattr(peer, "host", peer),
            status=code,
            reason=why,
        )
        self._disarm_deadline()
        self._release_body_place()
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" % (code, phrase)
            )
        # Ignore whatever else the client sends (and whatever twisted.web's
        # parser would still do with the request), and do not wait long for
        # a peer that does not take the answer (or never finished TLS).
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        self.lineReceived = lambda line: None  # type: ignore[method-assign]
        self.rawDataReceived = lambda data: None  # type: ignore[method-assign]
        self.allContentReceived = lambda: None  # type: ignore[method-assign]
        self.persistent = False
        self.loseConnection()
        self._refused_abort = self.callLater(1, self._abort_refused)

    def _abort_refused(self) -> None:
        self._refused_abort = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


def origin_form(request: Any, path: bytes) -> bytes:
    """
    The path of an absolute-form target (C{GET http://host/path
    HTTP/1.1}), which RFC 7230 5.3.2 says a server must accept: the path is
    what routes, and the URI's authority replaces C{Host} (5.4).  Any other
    target is returned as it is.
    """
    if b"://" not in path[:8]:
        return path
    parts = urlsplit(path.decode("latin-1"))
    if parts.scheme.lower() not in ("http", "https", "ws", "wss") or not parts.netloc:
        return path
    authority = parts.netloc.rpartition("@")[2]
    request.requestHeaders.setRawHeaders(b"host", [authority.encode("latin-1")])
    request.raw_head = None  # the head Autobahn sees is written out again
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return target.encode("latin-1")


def _in_memory(request: Any) -> None:
    # Request.gotLength for a capped body.
    request.content = BytesIO()


# The Server header Request.process sets.
_TWISTED_BANNER = [server.version]

_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """
    The C{Date} header value for now, formatted once a second.
    """
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, datetimeToString(now))
    return _date[1]


class WebSocketRequest(Request):
    """
    C{twisted.web}'s request with a capped body, an absolute-form target
    routed by its path, and C{Server: wsmux} (no version) on responses.

    @ivar raw_head: the request head as the client sent it (request line,
        headers and the empty line), when it was read in one pass; L{None}
        when C{twisted.web}'s line parser read it.
    """

    raw_head: Optional[bytes] = None
    # Whether the request is a WebSocket upgrade, as wsmux's channel found
    # when the request was complete (None: not found by it).
    wsmux_upgrade: Optional[bool] = None
    wsmux_body_cap: int = 0
    _body_read = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._body_read += len(data)
        cap = self.wsmux_body_cap
        if cap and self._body_read > cap:
            if self._body_read - len(data) <= cap:
                self.channel.body_too_large()  # type: ignore[attr-defined]
            return
        super().handleContentChunk(data)

    def _close_content(self) -> None:
        content = self.content
        if content is not None:
            try:
                content.close()
            except Exception:  # pragma: no cover - a resource's own file object
                pass

    def finish(self) -> None:
        super().finish()
        self._close_content()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self._close_content()

    def process(self) -> None:
        upgrade = self.wsmux_upgrade
        if upgrade is None:  # not read by wsmux's channel
            upgrade = is_upgrade(self)
        if upgrade and self.method == b"GET" and self.path != b"*":
            # An upgrade: the route answers it (a 101 from Autobahn, or a
            # refusal through write below), so the Server and Date headers
            # twisted.web's process sets on every request would only be
            # made to be thrown away (a fifth of a handshake's own work).
            # The rest is process's own public steps.
            self.site = self.channel.site  # type: ignore[attr-defined]
            self.prepath = []
            self.postpath = list(map(unquote, self.path[1:].split(b"/")))
            try:
                self.render(self.site.getResourceFor(self))
            except BaseException:
                self.processingFailed(Failure())
            return
        super().process()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if path[:1] != b"/":
            path = origin_form(self, path)
        super().requestReceived(command, path, version)

    def write(self, data: bytes) -> None:
        # The first write sends the response head: every response, even an
        # empty one (finish writes b""), passes here first.
        if not self.startedWriting:
            headers = self.responseHeaders
            # Request.process names twisted.web and its version; a
            # resource's own Server header stays.
            server_header = headers.getRawHeaders(b"server")
            if server_header is None or server_header == _TWISTED_BANNER:
                headers.setRawHeaders(b"server", [b"wsmux"])
            if not headers.hasHeader(b"date"):  # a refused upgrade
                headers.setRawHeaders(b"date", [http_date()])
        super().write(data)


class WebSocketSite(Site):
    """
    A C{Site} for a route tree: guarded channels, no version banner, no
    tracebacks to clients.

    @ivar limits: the request-head caps.
    @ivar head_timeout: seconds a client has to send a complete request head.
    @ivar head_deadlines: the channels' L{HeadDeadlines}, or L{None} when
        C{head_timeout} is 0 (no deadline).
    """

    protocol = GuardedHTTPChannel  # type: ignore[assignment]
    requestFactory = WebSocketRequest

    def __init__(
        self,
        resource: Any,
        limits: Optional[ServerLimits] = None,
        head_timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("timeout", KEEPALIVE_IDLE)
        super().__init__(resource, **kwargs)
        self.limits = limits or getattr(resource, "limits", None) or ServerLimits()
        # Where requests with a body hold their place in the connection
        # caps: the route tree's registry, when the resource is one.
        self.registry = getattr(resource, "registry", None)
        self.head_timeout = head_timeout
        self.head_deadlines = HeadDeadlines(head_timeout, self.reactor) if head_timeout else None
        self.displayTracebacks = False
        # HTTP connections open now (not yet handed to a WebSocket), and
        # whether the site is shutting down (see quiesce).
        self.open_channels: set[GuardedHTTPChannel] = set()
        # HTTP/2 connections open now (wsmux._compat_http2).
        self.http2_connections: set[Any] = set()
        self.quiescing = False
        self._quiet: list[Deferred[None]] = []

    def startFactory(self) -> None:
        # The reactor's calls around each read and write, made cheaper
        # (the seam's twisted.log_context) once a site serves.
        speed_up_log_context()
        super().startFactory()

    def acceptableProtocols(self) -> list[bytes]:
        """
        What C{twisted.web} would add to every TLS port's ALPN list (C{h2}
        whenever the h2 library is installed): nothing.  The TLS settings
        choose (L{wsmux.tls.load_certificate_options}), and a site that is
        not wsmux's HTTP/2 must not be offered it.
        """
        return []

    def quiesce(self) -> Deferred[None]:
        """
        Stop keeping HTTP connections alive, for a shutdown: from now on
        each answer is its connection's last (an upgrade is answered 503
        while the tree drains), and each HTTP/2 connection is told GOAWAY,
        closing once its last stream ends.

        @return: a Deferred that fires when no HTTP connection has a
            request under way or still to come (one accepted but not yet
            read), and every HTTP/2 connection has closed.  Idle keep-alive
            HTTP/1.1 connections are not waited for; they are served
            (health answers 503) until the process exits.
        """
        self.quiescing = True
        for connection in list(self.http2_connections):
            connection.going_away()
        if self._settled():
            return succeed(None)
        quiet: Deferred[None] = Deferred()
        self._quiet.append(quiet)
        return quiet

    def _settled(self) -> bool:
        return not self.http2_connections and all(channel.idle for channel in self.open_channels)

    def channel_gone(self, channel: GuardedHTTPChannel) -> None:
        """
        C{channel} closed or was handed to a WebSocket protocol.
        """
        self.open_channels.discard(channel)
        self._settle()

    def http2_gone(self, connection: Any) -> None:
        """
        HTTP/2 C{connection} closed.
        """
        self.http2_connections.discard(connection)
        self._settle()

    def _settle(self) -> None:
        if self._quiet and self._settled():
            waiting, self._quiet = self._quiet, []
            for quiet in waiting:
                quiet.callback(None)

    def abort_channels(self) -> None:
        """
        Drop every HTTP connection that is not idle, and every HTTP/2
        connection (a shutdown's time is up).
        """
        for channel in list(self.open_channels):
            transport: Any = channel.transport
            if transport is not None and not channel.idle:
                transport.abortConnection()
        for connection in list(self.http2_connections):
            if connection.transport is not None:
                connection.transport.abortConnection()
