"""
The HTTP side: a C{Site} whose channels cap the request head and give
clients a deadline to send it.

C{twisted.web} alone lets a client take twelve hours over a request head
(its idle timeout restarts with every byte) and answers oversized heads
with a bare 400.  wsmux's channel counts from the first byte: the request
line and headers must arrive within the open-handshake timeout, the request
line within C{max_request_line} bytes (else 414) and the headers within
C{max_headers} lines and C{max_header_bytes} bytes (else 431).
"""

from __future__ import annotations

import time
from typing import Any, Optional

from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, datetimeToString, unquote
from twisted.web.resource import _IEncodingResource
from twisted.web.server import Request, Site

from wsmux.limits import ServerLimits
from wsmux.logs import log

# How long a kept-alive HTTP connection may sit idle between requests.
KEEPALIVE_IDLE = 60


class GuardedHTTPChannel(HTTPChannel):
    """
    An C{HTTPChannel} with caps on the request head and a deadline for it.
    """

    site: WebSocketSite
    _deadline: Any = None
    _in_head = False
    _head_lines = 0
    _head_bytes = 0

    def connectionMade(self) -> None:
        limits = self.site.limits
        # Twisted's own, coarser caps must not fire before ours.
        self.MAX_LENGTH = max(limits.max_request_line, limits.max_header_bytes) + 2
        self.totalHeadersSize = limits.max_request_line + limits.max_header_bytes + 2
        self.maxHeaders = limits.max_headers + 1
        super().connectionMade()
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        timeout = self.site.head_timeout
        if timeout:
            self._deadline = self.callLater(timeout, self._head_too_slow)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def lineReceived(self, line: bytes) -> None:
        limits = self.site.limits
        if not self._in_head:
            if line:
                self._in_head = True
                self._head_lines = 0
                self._head_bytes = 0
                if len(line) > limits.max_request_line:
                    self._refuse(
                        414, b"URI Too Long", f"request line over {limits.max_request_line} bytes"
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
        else:
            # The end of the head: the deadline is met.
            self._in_head = False
            self._disarm_deadline()
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._in_head:
            self._refuse(431, b"Request Header Fields Too Large", "a header line too long")
        else:
            self._refuse(414, b"URI Too Long", "request line too long")

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self.transport is not None and self.persistent:
            self._arm_deadline()

    def connectionLost(self, reason: Any = None) -> None:
        self._disarm_deadline()
        super().connectionLost(reason)

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        self._refuse(
            408, b"Request Timeout", f"request head not complete within {self.site.head_timeout}s"
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
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" % (code, phrase)
            )
        # Ignore whatever else the client sends, and do not wait long for a
        # peer that does not take the answer (or never finished TLS).
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        self.lineReceived = lambda line: None  # type: ignore[method-assign]
        self.loseConnection()
        self._abortingCall = self.callLater(1, self.forceAbortClient)


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
    C{twisted.web}'s request, processed the same way with two default
    headers made cheaper: C{Server} says C{wsmux} (no version) and C{Date}
    is formatted once a second rather than per request.  Most requests to
    a WebSocket server are upgrades, which never send these headers.
    """

    def process(self) -> None:
        # Twisted's Request.process, but for the two headers.
        self.site = self.channel.site  # type: ignore[attr-defined]
        self.setHeader(b"server", b"wsmux")
        self.setHeader(b"date", http_date())
        self.prepath = []
        self.postpath = list(map(unquote, self.path[1:].split(b"/")))
        if self.path == b"*":
            self._handleStar()
            return
        try:
            resource = self.site.getResourceFor(self)
            if _IEncodingResource.providedBy(resource):
                encoder = resource.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(resource)
        except BaseException:
            self.processingFailed(Failure())


class WebSocketSite(Site):
    """
    A C{Site} for a route tree: guarded channels, no version banner, no
    tracebacks to clients.

    @ivar limits: the request-head caps.
    @ivar head_timeout: seconds a client has to send a complete request head.
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
        self.head_timeout = head_timeout
        self.displayTracebacks = False
