"""
In-memory helpers for testing handlers and route trees without sockets.

A whole WebSocket conversation runs through the real route tree, the real
C{twisted.web} request parsing and the real Autobahn protocols, connected by
C{twisted.test.iosim} and driven by a L{MemoryReactorClock}::

    tree = RouteTree([Route("/echo", (EchoHandler,))])
    conn = connect(tree, "/echo")
    conn.client.sendMessage(b"hi")
    conn.flush()
    assert conn.client.messages == [(b"hi", False)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.web.resource import IResource
from twisted.web.server import Site

__all__ = [
    "MemoryConnection",
    "RawConnection",
    "RecordingClient",
    "connect",
    "masked_frame",
    "raw_connect",
    "upgrade_request",
]


class RecordingClient(WebSocketClientProtocol):
    """
    A WebSocket client that records what happens to it.

    @ivar messages: C{(payload, isBinary)} per message received.
    @ivar opened: whether the opening handshake succeeded.
    @ivar close: C{(wasClean, code, reason)} once closed.
    @ivar response: Autobahn's C{ConnectionResponse} once open.
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[bytes, bool]] = []
        self.opened = False
        self.close: Optional[tuple[bool, Optional[int], Optional[str]]] = None
        self.response: Any = None

    def onConnect(self, response: Any) -> None:
        self.response = response

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.close = (wasClean, code, reason)


class _LoopRestoring:
    """
    txaio's loop is the connection's clock while it is in use (Autobahn's
    timers and wsmux's run on it); L{restore_loop}, or leaving a C{with}
    block, puts back the loop it replaced.
    """

    previous_loop: Any = None

    def restore_loop(self) -> None:
        """
        Point txaio back at the loop it had before this connection.
        """
        txaio.config.loop = self.previous_loop  # type: ignore[attr-defined]

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.restore_loop()


@dataclass
class MemoryConnection(_LoopRestoring):
    """
    A client connected to a route tree in memory.

    @ivar client: the L{RecordingClient}.
    @ivar pump: the C{iosim.IOPump} moving bytes both ways.
    @ivar clock: the reactor the client and server use for timers.
    """

    client: RecordingClient
    pump: iosim.IOPump
    clock: MemoryReactorClock
    server_transport: Any = field(default=None)

    def flush(self) -> None:
        """
        Move bytes until both sides are quiet.
        """
        self.pump.flush()

    @property
    def server(self) -> Any:
        """
        The server-side protocol currently attached to the connection: the
        HTTP channel before the upgrade, the handler after it.
        """
        return self.server_transport.protocol


def _site(resource: IResource, clock: MemoryReactorClock) -> Site:
    from wsmux.site import WebSocketSite

    return WebSocketSite(resource, reactor=clock)


def connect(
    resource: IResource,
    path: str = "/",
    headers: Optional[dict[str, str]] = None,
    protocols: Sequence[str] = (),
    deflate: bool = False,
    clock: Optional[MemoryReactorClock] = None,
    origin: Optional[str] = None,
    client_class: type = RecordingClient,
) -> MemoryConnection:
    """
    Open a WebSocket connection to C{resource} (a route tree) in memory.

    @param path: the request path, with any query.
    @param headers: extra request headers.
    @param protocols: subprotocols to offer.
    @param deflate: offer permessage-deflate.
    @param clock: the reactor for timers; a new L{MemoryReactorClock} by
        default.  txaio is pointed at it too, until the connection's
        C{restore_loop} (or the end of its C{with} block).
    @param origin: the Origin header to send.
    @return: the connection, already flushed once.
    """
    clock = clock or MemoryReactorClock()
    previous = txaio.config.loop  # type: ignore[attr-defined]
    txaio.config.loop = clock  # type: ignore[attr-defined]
    factory = WebSocketClientFactory(
        f"ws://127.0.0.1:8080{path}",
        protocols=list(protocols) or None,
        headers=headers or {},
        origin=origin,
        reactor=clock,
    )
    factory.protocol = client_class  # type: ignore[assignment]
    if deflate:
        factory.setProtocolOptions(
            perMessageCompressionOffers=[PerMessageDeflateOffer()],
            perMessageCompressionAccept=_accept_deflate_response,
        )
    site = _site(resource, clock)
    server = site.buildProtocol(_CLIENT_ADDRESS)
    client: Any = factory.buildProtocol(_SERVER_ADDRESS)
    server_transport, client_transport = _transports(server, client)
    pump = iosim.connect(
        server, server_transport, client, client_transport, greet=True, clock=clock
    )
    connection = MemoryConnection(client, pump, clock, server_transport)
    connection.previous_loop = previous
    return connection


_SERVER_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8080)
_CLIENT_ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


def _transports(server: Any, client: Any) -> tuple[iosim.FakeTransport, iosim.FakeTransport]:
    return (
        iosim.FakeTransport(
            server, isServer=True, hostAddress=_SERVER_ADDRESS, peerAddress=_CLIENT_ADDRESS
        ),
        iosim.FakeTransport(
            client, isServer=False, hostAddress=_CLIENT_ADDRESS, peerAddress=_SERVER_ADDRESS
        ),
    )


def _accept_deflate_response(response: Any) -> Any:
    if isinstance(response, PerMessageDeflateResponse):
        return PerMessageDeflateResponseAccept(response)
    return None


class _RawClient(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


@dataclass
class RawConnection(_LoopRestoring):
    """
    Raw bytes to and from a resource in memory, for hostile input.

    @ivar received: every byte the server sent so far.
    @ivar lost: whether the server closed the connection.
    """

    _client: _RawClient
    pump: iosim.IOPump
    clock: MemoryReactorClock
    server_transport: Any = None

    def send(self, data: bytes) -> None:
        """
        Send C{data} and move bytes until both sides are quiet.
        """
        assert self._client.transport is not None
        self._client.transport.write(data)
        self.pump.flush()

    @property
    def server(self) -> Any:
        """
        The server-side protocol now attached to the connection.
        """
        return self.server_transport.protocol

    @property
    def received(self) -> bytes:
        return self._client.received

    @property
    def lost(self) -> bool:
        return self._client.lost


def raw_connect(resource: IResource, clock: Optional[MemoryReactorClock] = None) -> RawConnection:
    """
    Connect a client that sends raw bytes to C{resource} in memory.
    """
    clock = clock or MemoryReactorClock()
    previous = txaio.config.loop  # type: ignore[attr-defined]
    txaio.config.loop = clock  # type: ignore[attr-defined]
    site = _site(resource, clock)
    server = site.buildProtocol(_CLIENT_ADDRESS)
    client = _RawClient()
    server_transport, client_transport = _transports(server, client)
    pump = iosim.connect(
        server, server_transport, client, client_transport, greet=True, clock=clock
    )
    connection = RawConnection(client, pump, clock, server_transport)
    connection.previous_loop = previous
    return connection


def upgrade_request(path: str, extra: str = "", key: str = "dGhlIHNhbXBsZSBub25jZQ==") -> bytes:
    """
    The bytes of a valid opening handshake request for C{path}.

    @param extra: more header lines, each ending in CRLF.
    """
    return (
        f"GET {path} HTTP/1.1\r\n"
        "Host: 127.0.0.1:8080\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode("latin-1")


def masked_frame(
    payload: bytes, opcode: int = 1, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04"
) -> bytes:
    """
    One client frame (masked, as clients must send), for raw tests.
    """
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked
