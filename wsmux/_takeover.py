"""
The take-over: the route's protocol gets the connection from twisted.web,
with the request head and the bytes that followed it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.interfaces import ITCPTransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.iweb import IRequest

from wsmux._compat_twisted import take_http_buffer
from wsmux._upgrades import DirectUpgrade, _peer, _plain
from wsmux.connection import NO_PARAMS, Connection
from wsmux.factory import RouteFactory
from wsmux.limits import ConnectionRegistry, Place, address_chain
from wsmux.logs import log


class NotMade(Exception):
    """
    The handler of a L{DirectUpgrade} could not be made: the upgrade must
    take C{twisted.web}'s request.
    """


def upgrade(
    request: IRequest,
    factory: RouteFactory,
    cls: type,
    params: Mapping[str, str],
    subprotocol: Optional[str] = None,
    registry: Optional[ConnectionRegistry] = None,
    address: Optional[str] = None,
    place: Optional[Place] = None,
    deadline: Optional[float] = None,
) -> Optional[WebSocketServerProtocol]:
    """
    Take the connection of C{request} away from C{twisted.web} and continue
    it as a WebSocket connection served by an instance of C{cls}.

    A handler class with L{wsmux._compat_autobahn.DirectHandshakeMixin} opens
    from the parsed request; otherwise, and for any request the direct
    handshake leaves to Autobahn, the request head is replayed into the new
    protocol for Autobahn to validate (as the client sent it, when it was
    read in one pass; else written out from what C{twisted.web} parsed),
    followed by any bytes the client sent after it (a first frame that
    arrived in the same packet as the handshake).

    @param registry: where the connection is counted while open.
    @param address: the client's address (behind trusted proxies), when it
        differs from the address that connected.
    @param place: the connection's place in the caps, which the protocol
        keeps until the connection ends.
    @param deadline: when the opening handshake must be over (reactor
        time), when a decision has used part of its time already.
    @return: the new protocol, or L{None} if the client is already gone.
    """
    channel: Any = getattr(request, "channel", None)
    transport = channel.transport if channel is not None else None
    if transport is None:
        if place is not None:
            place.release()
        return None
    try:
        protocol = cls()
    except Exception:
        # Still twisted.web's connection: it answers 500.
        if place is not None:
            place.release()
        if isinstance(request, DirectUpgrade):
            # Nothing has happened yet: twisted.web's request tries again,
            # and answers (and logs) as it does.
            raise NotMade() from None
        log.failure(
            "route {route}: the handler could not be made",
            route=getattr(factory, "route_path", "?"),
        )
        if registry is not None:
            registry.events.fire(
                "refused",
                getattr(factory, "route_path", "-"),
                500,
                "the handler could not be made",
                _peer(request),
            )
        request.write(_plain(request, 500, "Internal Server Error", close=True))
        request.finish()
        return None
    protocol.factory = factory
    direct = getattr(request.getClientAddress(), "host", None)
    protocol.wsmux = Connection(
        protocol,
        cls._wsmux_policy,  # type: ignore[attr-defined]
        dict(params) if params else NO_PARAMS,
        address or str(direct),
        subprotocol,
        registry,
        place,
    )
    if registry is not None and (
        registry.limits.trusted_proxy_networks or registry.limits.trusted_proxies
    ):
        chain = address_chain(request, registry.limits)
        if len(chain) > 1:
            protocol.wsmux._more().address_chain = chain
    if deadline is not None and protocol.openHandshakeTimeout > 0:
        protocol.openHandshakeTimeout = max(0.001, deadline - factory.reactor.seconds())
    # Asked of the class: a handler's own __getattr__ is not consulted (it
    # may raise anything for a name it does not know).
    open_direct = None
    if hasattr(type(protocol), "_wsmux_handshake_from"):
        open_direct = protocol._wsmux_handshake_from
        protocol._wsmux_direct_open = True
    if ITCPTransport.providedBy(transport):
        protocol._wsmux_tcp_nodelay = True  # set by twisted.web's HTTPChannel

    handoff = hand_off(request, transport)
    try:
        _start(protocol, handoff, open_direct, address, direct)
    except Exception:
        # A handler that raises in connectionMade (or on the first frame)
        # must not send twisted.web to answer on a connection it gave away.
        log.failure(
            "route {route}: the handler failed while taking the connection over",
            route=getattr(factory, "route_path", "?"),
        )
        getattr(transport, "abortConnection", transport.loseConnection)()
        if place is not None and (registry is None or protocol not in registry.connections):
            place.release()
        return None
    return protocol


class Handoff:
    """
    What the HTTP side hands the WebSocket protocol taking its connection
    over: the request, its transport (no longer the HTTP channel's), the
    request head and the bytes that followed it.

    @ivar head: the head as the client sent it, when the channel read it in
        one pass; else written out again from what C{twisted.web} parsed.
    @ivar rest: what the client sent after the head (a first frame that
        arrived in the same packet as the handshake), body bytes included.
    """

    __slots__ = ("request", "channel", "transport", "head", "rest")

    def __init__(
        self, request: IRequest, channel: Any, transport: Any, head: bytes, rest: bytes
    ) -> None:
        self.request = request
        self.channel = channel
        self.transport = transport
        self.head = head
        self.rest = rest

    def give_to(self, protocol: Any) -> None:
        """
        Make C{protocol} the transport's protocol; what the client sends
        from now on goes to it.
        """
        replace_protocol(self.transport, protocol)
        # Bytes twisted.web's parser still holds reach rawDataReceived.
        self.channel.rawDataReceived = protocol.dataReceived


def replace_protocol(transport: Any, protocol: Any) -> None:
    """
    Make C{protocol} the one C{transport} delivers to (through the TLS
    layer, or the wrapper that counts connections, when there is one).
    """
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol


def hand_off(request: IRequest, transport: Any) -> Handoff:
    """
    Take C{request}'s connection away from its HTTP channel.

    wsmux's own channel keeps what follows an upgrade's head for this
    (C{take_upgrade_rest}); another C{twisted.web} channel (a tree mounted
    in a user's own C{Site}) is read through the seam's
    C{twisted.http_buffer}.
    """
    channel: Any = request.channel  # type: ignore[attr-defined]
    gone = getattr(channel, "handed_off", None)  # wsmux's own channel
    if gone is not None:
        gone()
    channel.transport = None
    # The channel registered itself as the transport's producer; the
    # WebSocket protocol owns the connection from now on.
    try:
        transport.unregisterProducer()
    except Exception:  # pragma: no cover - transports without producers
        pass
    head = getattr(request, "raw_head", None) or _head_of(request)
    content = request.content.read() if request.content is not None else b""
    take = getattr(channel, "take_upgrade_rest", None)
    buffered = take() if take is not None else take_http_buffer(channel)
    return Handoff(request, channel, transport, head, content + buffered)


def _start(
    protocol: Any,
    handoff: Handoff,
    open_direct: Any,
    address: Optional[str],
    direct: Optional[str],
) -> None:
    # The second half of upgrade: the protocol starts on the transport and
    # gets the handshake, directly or replayed, and what followed it.
    handoff.give_to(protocol)
    transport = handoff.transport
    protocol.makeConnection(transport)
    if address is not None and address != direct:
        protocol.peer = address
    transport.resumeProducing()
    if open_direct is not None and _open_held(protocol, open_direct, handoff):
        return
    protocol.dataReceived(handoff.head)
    if handoff.rest:
        protocol.dataReceived(handoff.rest)


def _open_held(protocol: Any, open_direct: Any, handoff: Handoff) -> bool:
    # The handshake's writes (the 101, and whatever onOpen makes anyone
    # write) are held and sent together at its end, as a read's are: one
    # send, and over TLS one with the session tickets OpenSSL has waiting,
    # instead of a pass through Twisted's TLS write path and a reactor turn
    # for the 101.  Not on an HTTP/2 stream, whose transport takes a close
    # before its answer (onOpen closing) as a refusal.
    writes = protocol.wsmux.policy.writes
    if writes.held is not None or getattr(type(handoff.transport), "wsmux_http2", False):
        # (Held already: sent by whoever started holding them.)
        return bool(open_direct(handoff.request, handoff.head, handoff.rest))
    writes.start()
    try:
        return bool(open_direct(handoff.request, handoff.head, handoff.rest))
    finally:
        writes.send_held()


def _head_of(request: IRequest) -> bytes:
    # The request head written out again from what twisted.web parsed.
    head = [
        request.method,
        b" ",
        request.uri,
        b" ",
        getattr(request, "clientproto", b"HTTP/1.1"),
        b"\r\n",
    ]
    for name, values in request.requestHeaders.getAllRawHeaders():
        for value in values:
            head += [name, b": ", value, b"\r\n"]
    head.append(b"\r\n")
    return b"".join(head)
