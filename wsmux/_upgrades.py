"""
An upgrade request on the HTTP side: recognising one, reading its path
parameters, and answering one that is refused.
"""

from __future__ import annotations

from typing import Sequence

from twisted.web.iweb import IRequest

from wsmux._responses import header_value, http_phrase, status_reason
from wsmux.logs import log

_PARAMS_ATTR = "wsmux_path_params"
NO_ROUTE = "No WebSocket route at this path"


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
