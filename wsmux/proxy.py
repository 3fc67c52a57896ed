"""
Proxy routes (C{handler = "proxy"}): each client connection relayed to a
WebSocket backend, message by message.

    [[routes]]
    path = "/svc/{name}"
    handler = "proxy"
    backend = "ws://127.0.0.1:9000/{name}"   # or a list: round-robin, the next on failure
    connect_timeout = 10
    ca = "backend-ca.pem"                   # wss:// backends: the CA to verify them with

The backend is connected to (TCP, TLS and its opening handshake, within
C{connect_timeout}, and the backends of a list within the client's own
opening-handshake time) before the client gets its 101, so the client's
answer is the backend's: its subprotocol, or its refusal's status (a 4xx),
or 502 when no backend could be reached (504 when the last did not answer
in time).  Offered subprotocols, C{Origin},
cookies, C{Authorization} and C{User-Agent} pass through;
C{X-Forwarded-For} (the addresses wsmux's trusted proxies vouch for, then
the client's), C{X-Forwarded-Proto}, C{X-Forwarded-Host} and C{Forwarded}
are set.  C{{name}} in the backend URL is the path parameter (URL-quoted),
C{{query}} the client's query string, which is otherwise appended.

Messages are relayed whole, text as text; each leg answers its own pings.
A close is mirrored: code and reason, either way.  A leg that ends without
one ends the other: the client gets 1014 (bad gateway) when the backend
vanished, the backend 1001 (going away) when the client did.  Backpressure
runs both ways: a client that does not read pauses reading from the
backend, a backend that does not read pauses reading from the client.  The
route's limits (message and frame sizes, idle timeout, connection caps)
apply to the client leg, and its message and frame sizes to what the
backend sends too.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import quote, urlsplit

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerProtocol,
    connectWS,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from wsmux._compat_autobahn import RelayClientProtocol
from wsmux.connection import SENDABLE_CLOSE_CODES, close_with, head_values
from wsmux.logs import log

PROXY_KEYS = frozenset({"backend", "connect_timeout", "ca"})
# Request headers that go through to the backend as they came.
PASSED_HEADERS = ("cookie", "authorization", "accept-language")


@dataclass(frozen=True)
class ProxySpec:
    """
    Where a proxy route relays to.

    @ivar backends: backend URL templates (C{ws://} or C{wss://}), tried
        round-robin; a backend that cannot be reached passes the
        connection to the next.
    @ivar connect_timeout: seconds to connect and finish the opening
        handshake with a backend.
    @ivar ca: a PEM file of the CA certificates C{wss://} backends are
        verified against (the system's when empty).
    """

    backends: tuple[str, ...]
    connect_timeout: float = 10.0
    ca: str = ""

    @classmethod
    def from_table(cls, table: dict[str, Any], base: str = "") -> ProxySpec:
        """
        Check the proxy keys of a route.

        @raise ValueError: naming the key and what it must be.
        """
        unknown = set(table) - PROXY_KEYS
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} for a proxy route")
        backend = table.get("backend")
        backends: list[Any] = backend if isinstance(backend, list) else [backend]
        if not backends or not all(isinstance(b, str) and b for b in backends):
            raise ValueError("backend is required: a ws:// or wss:// URL, or a list of them")
        for url in backends:
            _check_url(url)
        timeout = table.get("connect_timeout", 10.0)
        if (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not 0 < timeout <= 300
        ):
            raise ValueError(
                f"connect_timeout must be more than 0 and at most 300, got {timeout!r}"
            )
        ca = table.get("ca", "")
        if not isinstance(ca, str):
            raise ValueError("ca must be a file name")
        if ca and base and not os.path.isabs(ca):
            ca = os.path.join(base, ca)
        if ca:
            _load_ca(ca)  # a bad file is an error now, not at the first connection
        return cls(tuple(backends), float(timeout), ca)

    @classmethod
    def from_arg(cls, text: str) -> ProxySpec:
        """
        C{--route PATH=proxy:URL[,URL...]}.
        """
        return cls.from_table({"backend": [u.strip() for u in text.split(",")]})


def _check_url(url: str) -> None:
    parts = urlsplit(url.replace("{", "").replace("}", ""))
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"backend {url!r} must be a ws:// or wss:// URL with a host")
    if any(ord(c) < 0x21 for c in url):
        raise ValueError(f"backend {url!r} has a space or a control character")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"backend {url!r} has a bad port") from None
    if "{query}" in url and "?" not in url.partition("{query}")[0]:
        raise ValueError(f"backend {url!r}: {{query}} belongs after the '?'")


def _load_ca(path: str) -> Any:
    # Every certificate of a PEM bundle, as one trust root.
    from twisted.internet.ssl import Certificate, trustRootFromCertificates

    end = b"-----END CERTIFICATE-----"
    try:
        with open(path, "rb") as f:
            data = f.read()
        blocks = [
            block + end for block in data.split(end) if b"-----BEGIN CERTIFICATE-----" in block
        ]
        if not blocks:
            raise ValueError("no certificate in it")
        return trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])
    except OSError as e:
        raise ValueError(f"ca {path!r} cannot be read: {e.strerror}") from None
    except Exception as e:
        raise ValueError(f"ca {path!r} is not a PEM certificate bundle: {e}") from None


# -- the backend leg -------------------------------------------------------------------


class _Backend(RelayClientProtocol):
    front: Any = None  # the ProxyHandler this leg belongs to
    ready: Optional[Deferred[Any]] = None  # fires once open, fails if it never is
    # Messages that came before the client's 101 went out (reading is
    # paused from the backend's open to the client's: at most one read).
    early: Optional[list[tuple[bytes, bool]]] = None

    def dataReceived(self, data: bytes) -> None:
        # What one read from the backend makes the client leg send goes
        # out as one write, as the client leg's own reads do.
        front = self.front
        writes = front.wsmux.policy.writes if front is not None else None
        if writes is None or writes.held is not None:
            super().dataReceived(data)
            return
        writes.start()
        try:
            super().dataReceived(data)
        finally:
            writes.send_held()

    def onOpen(self) -> None:
        ready, self.ready = self.ready, None
        if ready is not None and not ready.called:  # called: the client left first
            self.early = []
            transport: Any = self.transport
            transport.pauseProducing()  # until the client is open too
            ready.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        front = self.front
        if front is not None and front.state == WebSocketServerProtocol.STATE_OPEN:
            front.sendMessage(payload, isBinary)
        elif self.early is not None:
            self.early.append((payload, isBinary))

    def onCloseFrame(self, code: Any, reasonRaw: Any) -> Any:
        # The backend's close goes on to the client at once, not when its
        # TCP connection is over (a backend may keep it open).
        was_open = self.state == WebSocketClientProtocol.STATE_OPEN
        result = super().onCloseFrame(code, reasonRaw)
        front = self.front
        if was_open and front is not None and not self.failedByMe:
            self.front = None
            front._wsmux_backend_closed(True, self.remoteCloseCode, self.remoteCloseReason)
        return result

    def sendCloseFrame(
        self, code: Optional[int] = None, reasonUtf8: Optional[bytes] = None, isReply: bool = False
    ) -> None:
        super().sendCloseFrame(code, reasonUtf8, isReply)
        # This leg failed the backend (a message over the route's limit, a
        # protocol error): the client hears of it now, not when the
        # backend has answered the close or the close timeout has run.
        front = self.front
        if self.failedByMe and not isReply and front is not None:
            self.front = None
            why = "the backend's message was over the limit" if code == 1009 else None
            front._wsmux_backend_closed(False, code, None, why or "the backend broke the protocol")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        ready, self.ready = self.ready, None
        if ready is not None:
            if not ready.called:
                ready.errback(_Refused(_status_of(self), reason or self.wasNotCleanReason or ""))
            return
        front, self.front = self.front, None
        if front is not None:
            front._wsmux_backend_closed(wasClean, code, reason)


class _Refused(Exception):
    def __init__(self, status: Optional[int], why: str, late: bool = False) -> None:
        super().__init__(why)
        self.status = status
        self.late = late  # the backend did not answer in the time it had


# What the backends together leave of the client's opening-handshake time:
# Autobahn's timer for it goes off up to a second early (its timers are kept
# in whole seconds), and the answer needs time to leave.
_ANSWER_MARGIN = 1.5


def _status_of(protocol: Any) -> Optional[int]:
    # The status of a backend's refusal (its response was not a 101).
    line = getattr(protocol, "http_status_line", None)
    try:
        return int(line.split()[1]) if line else None
    except (IndexError, ValueError):
        return None


class _BackendFactory(WebSocketClientFactory):
    protocol = _Backend
    ready: Deferred[Any]

    def buildProtocol(self, addr: Any) -> Any:
        protocol: Any = super().buildProtocol(addr)
        protocol.ready = self.ready
        return protocol

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.ready.called:
            # A connect that timed out (a backend dropping SYNs) is a backend
            # that did not answer in time, as a silent one is.
            late = reason.check(error.TimeoutError, error.TCPTimedOutError) is not None
            self.ready.errback(_Refused(None, reason.getErrorMessage(), late=late))


@implementer(IPushProducer)
class _Reading:
    # One leg's reading, as the producer of what the other leg writes: a
    # leg that does not take what it is sent pauses reading the other.

    def __init__(self, hold: Any, release: Any, stop: Any) -> None:
        self.pauseProducing = hold
        self.resumeProducing = release
        self.stopProducing = stop


# -- the client leg --------------------------------------------------------------------


class ProxyHandler(WebSocketServerProtocol):
    """
    The handler of a proxy route (see the module docstring); a route's
    class is made by L{proxy_handler}.
    """

    spec: ProxySpec
    turns: Any  # the round-robin counter of the route
    wsmux: Any  # the connection object, set by wsmux on every handler

    _wsmux_backend: Optional[_Backend] = None
    # The backend being connected (fires with it, or fails) before the 101.
    _wsmux_pending: Optional[Deferred[Any]] = None
    _wsmux_gone = False  # the client left before the backend answered

    async def onConnect(self, request: Any) -> Any:  # type: ignore[override]
        urls = self._wsmux_backend_urls(request)
        start = next(self.turns) % len(urls)
        failures = []
        refused = None
        late = False
        # The backends share what the client's opening-handshake timeout
        # leaves, so that the client gets an answer (the next backend's
        # 101, or a 504) before that timer drops it.
        clock: Any = self.factory.reactor
        limit = float(getattr(self, "openHandshakeTimeout", 0) or 0)
        until = clock.seconds() + max(limit - _ANSWER_MARGIN, limit / 2) if limit > 0 else None
        order = urls[start:] + urls[:start]
        for index, url in enumerate(order):
            timeout = self.spec.connect_timeout
            if until is not None:
                timeout = min(timeout, (until - clock.seconds()) / (len(order) - index))
                if timeout <= 0:
                    late = True
                    failures += [f"{_redacted(u)}: not tried, no time left" for u in order[index:]]
                    break
            try:
                backend = await self._wsmux_connect(url, request, timeout)
            except _Refused as e:
                if self._wsmux_gone:
                    raise ConnectionDeny(502, "The client went away") from None
                failures.append(f"{_redacted(url)}: {e}")
                late = e.late
                if e.status is not None:
                    refused = e.status
                    break  # the backend answered: its answer is the answer
                continue
            finally:
                self._wsmux_pending = None
            if failures:  # a backend is down: said, though another took over
                log.warn(
                    "route {route}: backend failed ({why}); {url} took the connection",
                    route=self.wsmux.policy.route,
                    why="; ".join(failures),
                    url=_redacted(url),
                )
            self._wsmux_backend = backend
            backend.front = self
            return backend.websocket_protocol_in_use
        log.warn(
            "route {route}: no backend took the connection ({why})",
            route=self.wsmux.policy.route,
            why="; ".join(failures),
        )
        if refused is not None and 400 <= refused < 600:
            raise ConnectionDeny(refused, "Refused by the backend")
        if late:
            raise ConnectionDeny(504, "Gateway Timeout: no backend answered in time")
        raise ConnectionDeny(502, "Bad Gateway: the backend could not be reached")

    def _wsmux_backend_urls(self, request: Any) -> list[str]:
        params = {k: _segment(v) for k, v in self.wsmux.path_params.items()}
        query = self.http_request_uri.partition("?")[2] if self.http_request_uri else ""
        urls = []
        for template in self.spec.backends:
            url = template
            for name, value in params.items():
                url = url.replace("{" + name + "}", value)
            if "{query}" in url:
                url = url.replace("{query}", query)
            elif query:
                url += ("&" if "?" in url else "?") + query
            urls.append(url)
        return urls

    def _wsmux_connect(self, url: str, request: Any, timeout: float) -> Deferred[Any]:
        options = self.factory.options
        connection = self.wsmux
        headers = {}
        for name in PASSED_HEADERS:
            relayed = _relayed_header(self, name)
            if relayed is not None:
                headers[name] = relayed
        chain = [a for a in connection.address_chain if a]
        headers["X-Forwarded-For"] = ", ".join(chain)
        proto = "https" if connection.tls else "http"
        headers["X-Forwarded-Proto"] = proto
        host = _relayed_header(self, "host") or ""
        if ":" in host and not host.endswith("]"):
            host = host.rsplit(":", 1)[0]  # its port, as request.host has none
        if host:
            headers["X-Forwarded-Host"] = host
        headers["Forwarded"] = ", ".join(_forwarded(a) for a in chain) + f";proto={proto}"
        factory = _BackendFactory(
            url,
            origin=_relayed_header(self, "origin"),
            # Offered subprotocols Autobahn's client (writing UTF-8) writes
            # back as the client's bytes: ASCII, no control character.
            protocols=[
                p for p in request.protocols if p.isascii() and not _CONTROL.search(p.encode())
            ]
            or None,
            useragent=_relayed_header(self, "user-agent"),
            headers=headers,
        )
        ready: Deferred[Any] = Deferred()
        factory.ready = ready
        self._wsmux_pending = ready
        factory.setProtocolOptions(
            # The deadline below covers the handshake: Autobahn's own timer
            # rounds to whole seconds and may fire at once.
            openHandshakeTimeout=0,
            closeHandshakeTimeout=options.close_handshake_timeout,
            maxMessagePayloadSize=options.max_message_size,
            maxFramePayloadSize=options.max_frame_size,
            autoPingInterval=options.ping_interval,
            autoPingTimeout=options.ping_timeout,
            failByDrop=False,
        )
        context = None
        if factory.isSecure:
            from twisted.internet.ssl import optionsForClientTLS, platformTrust

            trust = _load_ca(self.spec.ca) if self.spec.ca else platformTrust()
            context = optionsForClientTLS(factory.host, trustRoot=trust)
        connector = connectWS(factory, context, timeout=timeout)
        clock: Any = self.factory.reactor

        def too_slow() -> None:
            if not ready.called:
                ready.errback(_Refused(None, f"no answer in {timeout:.3g} s", late=True))

        deadline = clock.callLater(timeout, too_slow)

        def done(result: Any) -> Any:
            if deadline.active():
                deadline.cancel()
            return result

        def failed(failure: Any) -> Any:
            connector.disconnect()
            return failure

        ready.addBoth(done)
        ready.addErrback(failed)
        return ready

    def onOpen(self) -> None:
        backend = self._wsmux_backend
        if backend is None or backend.transport is None:
            self.wsmux.close(1014, "the backend went away")
            return
        connection = self.wsmux
        early, backend.early = backend.early or [], None
        for payload, binary in early:
            self.sendMessage(payload, binary)
        backend_transport: Any = backend.transport
        backend_transport.resumeProducing()
        # A client that does not read pauses reading from the backend ...
        connection.register_producer(
            _Reading(
                backend_transport.pauseProducing,
                backend_transport.resumeProducing,
                lambda: None,
            )
        )
        # ... and a backend that does not read pauses reading from the client.
        backend_transport.registerProducer(
            _Reading(
                lambda: connection.hold_reading(backend),
                lambda: connection.release_reading(backend),
                lambda: connection.release_reading(backend),
            ),
            True,
        )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        backend = self._wsmux_backend
        if backend is not None and backend.state == WebSocketClientProtocol.STATE_OPEN:
            backend.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        backend, self._wsmux_backend = self._wsmux_backend, None
        if backend is None:
            return
        backend.front = None
        if backend.state != WebSocketClientProtocol.STATE_OPEN:
            return
        if wasClean and code in SENDABLE_CLOSE_CODES:
            close_with(backend, code, reason)  # type: ignore[arg-type]
        elif wasClean:
            close_with(backend, 1000, reason)
        else:
            close_with(backend, 1001, "the client went away")

    def _wsmux_backend_closed(
        self,
        wasClean: bool,
        code: Optional[int],
        reason: Optional[str],
        why: str = "the backend went away",
    ) -> None:
        self._wsmux_backend = None
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        if wasClean and code in SENDABLE_CLOSE_CODES:
            self.wsmux.close(code, reason or "")
        elif wasClean:
            self.wsmux.close(1000, reason or "")
        else:
            self.wsmux.close(1014, why)

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        self._wsmux_gone = True
        pending, self._wsmux_pending = self._wsmux_pending, None
        if pending is not None and not pending.called:
            # Gone before the backend answered: its connection is given up
            # (the errback disconnects it), and no other backend is tried.
            pending.errback(_Refused(None, "the client went away"))
        backend, self._wsmux_backend = self._wsmux_backend, None
        if backend is not None:
            backend.front = None
            if backend.transport is not None:
                if backend.state == WebSocketClientProtocol.STATE_OPEN:
                    close_with(backend, 1001, "the client went away")
                else:
                    backend.dropConnection(abort=True)


def _segment(value: str) -> str:
    # A path parameter as one segment of the backend's path: quoted, and
    # never a dot segment ("." and ".." would move up the backend's path).
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _relayed_header(protocol: Any, name: str) -> Optional[str]:
    """
    Header C{name} (lower case) as the client sent it, its values read from
    the request head's bytes (joined with commas; a Cookie's pairs, from
    every Cookie header, with semicolons), for Autobahn's client to write:
    what cannot be relayed byte for byte (L{_relayed_bytes}) is left out,
    a Cookie pair at a time.  L{None} when nothing is left.
    """
    values = [value.strip(b" \t") for value in head_values(protocol, name.encode("ascii"))]
    if name == "cookie":
        pairs = (pair.strip(b" \t") for value in values for pair in value.split(b";"))
        kept = [text for pair in pairs if pair and (text := _relayed_bytes(pair)) is not None]
        return "; ".join(kept) or None
    return _relayed_bytes(b", ".join(values)) if values else None


def _relayed_bytes(raw: bytes) -> Optional[str]:
    # Bytes Autobahn's client (which writes headers as UTF-8) writes back
    # as they are: no control character (a line break would end the
    # header), and UTF-8.
    if _CONTROL.search(raw):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


# Bytes no relayed header value may hold: C0 controls but tab, and DEL.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _forwarded(address: str) -> str:
    # RFC 7239: an IPv6 address is quoted and bracketed.
    return f'for="[{address}]"' if ":" in address else f"for={address}"


def _redacted(url: str) -> str:
    # A URL as logged: without a password.
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def proxy_handler(spec: ProxySpec, route: str) -> type:
    """
    The handler class of one proxy route.
    """
    return type(
        "ProxyHandler",
        (ProxyHandler,),
        {"spec": spec, "turns": itertools.count(), "__qualname__": f"ProxyHandler[{route}]"},
    )


__all__ = ["ProxyHandler", "ProxySpec", "proxy_handler"]
