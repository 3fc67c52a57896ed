"""
An upgrade request on the HTTP side: recognising one, reading its path
parameters, and answering one that is refused.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from twisted.web.http import Request
from twisted.web.iweb import IRequest

from wsmux._responses import header_value, http_phrase, status_reason
from wsmux.logs import log

_PARAMS_ATTR = "wsmux_path_params"
NO_ROUTE = "No WebSocket route at this path"


def head_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """
    The header lines of request head C{head} (a request line, header lines
    and an empty line, each ending in CR LF) as the client sent them: each
    line's name in lower case and the bytes after its colon, unstripped.

    A line ends only at CR LF.  Python's C{str.splitlines}, which
    Autobahn's parser uses, also ends one at bytes 0x0b, 0x0c, 0x1c-0x1e
    and 0x85, which a value may hold (0x85 is in many UTF-8 letters).
    """
    fields = []
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name:
            fields.append((name.lower(), value))
    return fields


# The bytes Python's str.splitlines ends a line at besides CR and LF, in
# ISO-8859-1 text: Autobahn's parser does.
LINE_BREAK_BYTES = b"\x0b\x0c\x1c\x1d\x1e\x85"
_LINE_BREAKS = re.compile(b"[" + re.escape(LINE_BREAK_BYTES) + b"]")
_REQUEST_LINE_BREAKS = re.compile(b"[" + re.escape(LINE_BREAK_BYTES) + b"\xa0]")

# The headers Autobahn's opening handshake reads.
_AUTOBAHN_READS = frozenset(
    [
        b"host", b"upgrade", b"connection", b"origin", b"sec-websocket-origin",
        b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-protocol",
        b"sec-websocket-extensions", b"x-forwarded-for",
    ]
)  # fmt: skip


def autobahn_misreads(head: bytes) -> Optional[str]:
    """
    How Autobahn's parser would read request head C{head} otherwise than
    it is (see L{head_fields}), in a way that matters: a request line cut
    short or split, a header its handshake reads cut short, or what follows
    such a byte read as a header of its own (one that no proxy in front
    saw, and that may make a request no proxy took for an upgrade one).
    L{None} when it reads the head as it is, or cuts short only a value it
    never reads (handlers get it whole all the same).
    """
    request_line = head[: head.find(b"\r\n")]
    # Autobahn splits the request line at what str.split takes for space,
    # 0xa0 among them (twisted.web lets 0x7f-0xb0 into a target).
    found = _REQUEST_LINE_BREAKS.search(request_line)
    if found is not None:
        return f"byte 0x{found.group()[0]:02x} in the request line"
    if _LINE_BREAKS.search(head) is None:
        return None
    for name, value in head_fields(head):
        found = _LINE_BREAKS.search(value)
        if found is None:
            continue
        where = f"byte 0x{found.group()[0]:02x} in the {name.decode('iso-8859-1')} header"
        if name in _AUTOBAHN_READS:
            return where
        if any(":" in line for line in value.decode("iso-8859-1").splitlines()[1:]):
            return where + ", before what would read as a header"
    return None


def autobahn_headers(head: bytes) -> dict[str, str]:
    """
    The headers of request head C{head} in Autobahn's form (names in lower
    case, a repeated header's values joined with C{", "}, text decoded as
    ISO-8859-1), each value as the client sent it less the spaces and tabs
    around it (RFC 9110 5.5), as C{twisted.web} reads it.
    """
    headers: dict[str, str] = {}
    for name, value in head_fields(head):
        key = name.decode("iso-8859-1")
        text = value.strip(b" \t").decode("iso-8859-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


class DirectUpgrade:
    """
    An upgrade whose head wsmux's channel read in one pass and whose route
    takes it at once, without a C{twisted.web} request (see
    L{wsmux.site.GuardedHTTPChannel}): the fields the take-over reads, and
    nothing more.

    No user code sees it.  Only a route that decides without user code
    (one handler, no C{accepts}) is taken this way; handlers see what they
    see on every path (Autobahn's C{ConnectionRequest} in C{onConnect},
    C{self.wsmux}).  Anything the route would refuse takes the full path,
    where the refusal is answered and logged.

    @ivar channel: the HTTP channel the head arrived on.
    @ivar transport: its transport.
    @ivar uri: the request target, as sent.
    @ivar path: the target without its query.
    @ivar requestHeaders: the headers, as C{twisted.web} stores them.
    @ivar raw_head: the head as the client sent it, its empty line included.
    """

    __slots__ = ("channel", "transport", "uri", "path", "requestHeaders", "raw_head")
    method = b"GET"
    clientproto = b"HTTP/1.1"
    content = None

    def __init__(
        self, channel: Any, uri: bytes, path: bytes, headers: Any, raw_head: bytes
    ) -> None:
        self.channel = channel
        # Kept: the channel lets go of its transport at the take-over.
        self.transport = channel.transport
        self.uri = uri
        self.path = path
        self.requestHeaders = headers
        self.raw_head = raw_head

    # twisted.web's own: it reads requestHeaders alone.
    getHeader = Request.getHeader

    def getClientAddress(self) -> Any:
        return self.transport.getPeer()

    def isSecure(self) -> bool:
        return bool(self.channel.isSecure())


def is_upgrade(request: IRequest) -> bool:
    """
    Whether C{request} asks to switch to WebSocket.
    """
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and upgrade.lower().find(b"websocket") >= 0


def path_params(request: IRequest) -> dict[str, str]:
    """
    The path parameters matched so far for C{request}.
    """
    return dict(getattr(request, _PARAMS_ATTR, {}))


def _plain(
    request: IRequest,
    code: int,
    reason: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    close: bool = False,
) -> bytes:
    """
    Set a plain-text error response on C{request} and return its body.

    @param close: close the connection after the response (a refused
        upgrade keeps nothing).
    """
    reason = status_reason(reason, http_phrase(code))
    request.setResponseCode(code, reason.encode("ascii"))
    if close:
        request.setHeader(b"connection", b"close")
        channel = getattr(request, "channel", None)
        if channel is not None:
            channel.persistent = False
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    for name, value in headers:
        request.responseHeaders.addRawHeader(name, header_value(value))
    return (reason + "\n").encode("utf-8")


def _peer(request: IRequest) -> str:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


def log_rejection(request: IRequest, code: int, reason: str, route: str = "-") -> None:
    """
    The info line for a refused upgrade: which path, route and peer, why.
    """
    log.info(
        "rejected upgrade path={path} route={route} peer={peer} status={status} reason={reason!r}",
        path=request.path.decode("utf-8", "replace"),
        route=route,
        peer=_peer(request),
        status=code,
        reason=reason,
    )
