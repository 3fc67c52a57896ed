"""
Server-wide limits: connection caps, request-head caps, trusted proxies,
and the registry of open WebSocket connections they are checked against.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.web.iweb import IRequest

from wsmux.channels import ChannelHub
from wsmux.events import Events
from wsmux.metrics import RouteStats

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def _limit(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


FORWARDED_HEADERS = ("x-forwarded-for", "forwarded", "both")


@dataclass(frozen=True)
class ServerLimits:
    """
    Limits that apply to the whole server rather than to one route.
    """

    max_connections: int = _limit(
        10000,
        "Most connections holding a place on the server at once: open WebSockets, "
        "upgrades waiting for a handler or hook to decide, and requests sending a "
        "body; more get 503. 0: no limit.",
    )
    max_connections_per_ip: int = _limit(
        1000,
        "The same, from one client address (an IPv6 client counts by its /64 "
        "network); more get 429. 0: no limit.",
    )
    max_request_line: int = _limit(8192, "Longest HTTP request line, in bytes; longer gets 414.")
    max_headers: int = _limit(128, "Most HTTP request header lines; more get 431.")
    max_header_bytes: int = _limit(
        32768, "Most bytes of HTTP request headers in all; more get 431."
    )
    max_header_name: int = _limit(
        256, "Longest HTTP request header name, in bytes; longer gets 431."
    )
    max_http2_streams: int = _limit(
        100,
        "Most streams open at once on one HTTP/2 connection (WebSockets and requests), "
        "1 to 1000: the client is told so in its SETTINGS, and one that opens more "
        "breaks the protocol (h2 ends its connection with GOAWAY). Each WebSocket "
        "stream also counts as a connection in the caps above.",
    )
    max_body_size: int = _limit(
        65536,
        "Largest HTTP request body, in bytes, for the plain-HTTP resources; larger gets 413 "
        "before it is read. (A WebSocket upgrade that carries any body gets 400.)",
    )
    trusted_proxies: int = _limit(
        0,
        "How many proxies in front of wsmux to trust, counted back from the end of the "
        "forwarded_header chain (the client is that many hops back). Use it only when "
        "nothing can reach wsmux but through those proxies; trusted_proxy_networks is "
        "the safer choice. 0 (and no networks) ignores the forwarding headers.",
    )
    trusted_proxy_networks: tuple[str, ...] = _limit(
        (),
        "Addresses or networks of the proxies to believe (such as 127.0.0.1 or "
        "10.0.0.0/8): when the connection comes from one of them, the chain in "
        "forwarded_header is walked back past every trusted address, and the first "
        "other one is the client. A connection from anywhere else is its own client.",
    )
    forwarded_header: str = _limit(
        "x-forwarded-for",
        "The header the trusted proxies write: x-forwarded-for, forwarded (RFC 7239) or "
        "both (Forwarded read when present: only for proxies that write both, or a client "
        "could send its own Forwarded). A header not named is never believed.",
    )
    redis_max_message: int = _limit(
        1048576,
        "Largest message taken from Redis, in bytes; larger ones are dropped and counted "
        "(wsmux_redis_dropped_total), and nobody is disconnected for them.",
    )
    redis_max_pending: int = _limit(
        16777216,
        "Most bytes of publishes waiting for Redis to take them, each counted with what "
        "it holds meanwhile (its channel and message and about 3 KiB of bookkeeping); past "
        "this (Redis hung or too slow) a publish reaches this process's subscribers only "
        "and counts as a failure (wsmux_redis_publish_failures_total).",
    )
    drain_timeout: float = _limit(
        10.0,
        "On shutdown (SIGTERM), seconds to wait for clients to answer the 1001 close "
        "before their connections are dropped.",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "trusted_proxy_networks":
                if isinstance(value, str) or not isinstance(value, (list, tuple)):
                    raise ValueError(f"{f.name} must be a list of addresses or networks")
                value = tuple(value)
                object.__setattr__(self, f.name, value)
                for item in value:
                    if not isinstance(item, str):
                        raise ValueError(f"{f.name}: {item!r} is not an address or network")
                    try:
                        ipaddress.ip_network(item, strict=False)
                    except ValueError:
                        raise ValueError(
                            f"{f.name}: {item!r} is not an address or network such as 10.0.0.0/8"
                        ) from None
                continue
            if f.name == "forwarded_header":
                if value not in FORWARDED_HEADERS:
                    raise ValueError(
                        f"{f.name} must be one of {', '.join(FORWARDED_HEADERS)}, got {value!r}"
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if f.type in ("int", int) and not isinstance(value, int):
                raise ValueError(f"{f.name} must be a whole number, got {value!r}")
            if value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value!r}")
        if self.trusted_proxies and self.trusted_proxy_networks:
            raise ValueError(
                "trusted_proxies (a hop count) and trusted_proxy_networks do not go "
                "together: choose one (the networks are the safer choice)"
            )

    def merged(self, overrides: dict[str, Any]) -> ServerLimits:
        """
        A copy with C{overrides} applied.

        @raise ValueError: for an unknown name or a bad value.
        """
        unknown = set(overrides) - LIMIT_NAMES
        if unknown:
            raise ValueError(f"unknown limit {sorted(unknown)[0]!r}")
        return dataclasses.replace(self, **overrides)


LIMIT_NAMES = frozenset(f.name for f in dataclasses.fields(ServerLimits))


def limit_reference() -> list[tuple[str, str, Any, str]]:
    """
    Describe every server limit, for the configuration reference.
    """
    words = {"trusted_proxy_networks": "list of strings", "forwarded_header": "a string"}
    return [
        (
            f.name,
            words.get(f.name) or ("a whole number" if f.type in ("int", int) else "a number"),
            f.default,
            f.metadata["help"],
        )
        for f in dataclasses.fields(ServerLimits)
    ]


# The longest forwarded address believed (an IPv6 address with a zone is
# well under this); anything longer is not an address.
_MAX_HOP = 64


def _host_of(peer: Any) -> str:
    return str(getattr(peer, "host", None) or getattr(peer, "name", None) or "unix")


def _ip(text: str) -> Optional[IPAddress]:
    """
    The address in one forwarded hop (C{192.0.2.1}, C{192.0.2.1:4711},
    C{[2001:db8::1]:4711}, quoted or not), IPv4-mapped IPv6 as IPv4; L{None}
    for anything else (C{unknown}, an obfuscated name, junk).
    """
    text = text.strip().strip('"')
    if not text or len(text) > _MAX_HOP:
        return None
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:  # type: ignore[union-attr]
        return ip.ipv4_mapped  # type: ignore[union-attr]
    return ip


@functools.lru_cache(maxsize=16)
def _networks(items: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def client_address(request: IRequest, limits: ServerLimits) -> str:
    """
    The address of the client, believing forwarding headers only as far as
    C{limits} says.

    With C{trusted_proxy_networks}, and only when the connection comes from
    one of them, the chain in C{forwarded_header} is walked back from its
    end past every trusted address; the first address that is not trusted
    is the client (nginx's C{real_ip_recursive}, uvicorn's
    C{forwarded_allow_ips}).  With a hop count (C{trusted_proxies}), the
    client is that many hops back.  A hop that is not an address stops the
    walk at the last address believed.  Only the configured header is read:
    a client that adds the other one is ignored.

    @return: the address, normalized (IPv4-mapped IPv6 as IPv4).
    """
    return address_chain(request, limits)[0]


# The most addresses a chain of trusted proxies is believed for.
MAX_CHAIN = 32


def address_chain(request: IRequest, limits: ServerLimits) -> tuple[str, ...]:
    """
    The addresses the trusted proxies vouch for, the client first and the
    peer that connected last (WebSocket-Node's C{remoteAddresses}): one
    address without trusted proxies.  See L{client_address}.
    """
    peer = request.getClientAddress()
    direct = getattr(peer, "host", None) or _host_of(peer)
    networks = limits.trusted_proxy_networks
    hops = limits.trusted_proxies
    if not networks and hops <= 0:
        if direct.startswith("::ffff:"):
            # An IPv4 client on a dual-stack socket (the default port): it is
            # that IPv4 address, not a member of the IPv6 network ::/64.
            mapped = _ip(direct)
            return (str(mapped) if mapped is not None else direct,)
        return (direct,)
    direct_ip = _ip(direct)
    believed = [str(direct_ip) if direct_ip is not None else direct]
    if networks:
        # A chain of trusted addresses longer than MAX_CHAIN is not a real
        # deployment: the walk stops there (and the connection keeps at most
        # that many addresses).
        trusted = _networks(networks)
        if direct_ip is None or not any(direct_ip in net for net in trusted):
            return tuple(believed)
        for hop in reversed(_forwarded_chain(request, limits.forwarded_header)):
            ip = _ip(hop)
            if ip is None or len(believed) >= MAX_CHAIN:
                break
            believed.append(str(ip))
            if not any(ip in net for net in trusted):
                break
        return tuple(reversed(believed))
    chain = _forwarded_chain(request, limits.forwarded_header)
    for hop in reversed(chain[max(0, len(chain) - hops) :]):
        ip = _ip(hop)
        if ip is None:
            break
        believed.append(str(ip))
    return tuple(reversed(believed))


def _forwarded_chain(request: IRequest, header: str) -> list[str]:
    """
    The addresses the configured forwarding header lists, first to last.
    """
    headers = request.requestHeaders
    if header in ("forwarded", "both"):
        forwarded = headers.getRawHeaders(b"forwarded")
        if forwarded:
            hops = []
            for value in forwarded:
                for element in value.decode("latin-1").split(","):
                    for pair in element.split(";"):
                        name, _, text = pair.strip().partition("=")
                        if name.lower() == "for":
                            hops.append(text)
            return hops
        if header == "forwarded":
            return []
    xff = headers.getRawHeaders(b"x-forwarded-for")
    if not xff:
        return []
    # An empty element is a hop too (and not an address).
    return [part for value in xff for part in value.decode("latin-1").split(",")]


def address_key(address: str) -> str:
    """
    What C{max_connections_per_ip} counts an address under: the address,
    or for IPv6 its /64 network (one subscriber's usual allocation, which
    a client can rotate through at will).
    """
    if ":" not in address:
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


class Place:
    """
    One connection's place in the caps, from the moment it is admitted
    until it ends, whatever it is waiting for (a handler's C{accepts}, the
    unhandled hook, C{onConnect}, a request body, or an open WebSocket).

    @ivar address: the client address it counts against.
    @ivar route: the route it counts against (for a route's own cap).
    """

    __slots__ = ("registry", "key", "route", "address", "released")

    def __init__(self, registry: ConnectionRegistry, address: str, route: Any, key: str) -> None:
        self.registry = registry
        self.address = address
        self.key = key
        self.route = route
        self.released = False

    def release(self) -> None:
        """
        Give the place back (once; later calls do nothing).
        """
        if self.released:
            return
        self.released = True
        registry = self.registry
        registry.held -= 1
        counts = registry.per_address
        left = counts.get(self.key, 0) - 1
        if left > 0:
            counts[self.key] = left
        else:
            counts.pop(self.key, None)
        route = self.route
        if route is not None:
            counts = registry.per_route
            left = counts.get(route, 0) - 1
            if left > 0:
                counts[route] = left
            else:
                counts.pop(route, None)


@dataclass
class ConnectionRegistry:
    """
    The connections holding a place on one route tree, and the open
    WebSocket connections among them.

    @ivar limits: the caps checked by L{hold}.
    @ivar connections: every open (or opening) protocol.
    @ivar by_route: the same, by route path pattern.
    @ivar held: how many places are held (every connection L{hold}
        admitted and that has not ended).
    @ivar per_address: places held by client address (L{address_key}).
    @ivar per_route: places held by route.
    @ivar draining: set on shutdown; new upgrades are refused with 503.
    @ivar stats: connection events and traffic, for metrics.
    @ivar channels: the named channels handlers publish to.
    @ivar events: the connection events (L{wsmux.events}); C{stats}
        counts from them.
    """

    limits: ServerLimits = field(default_factory=ServerLimits)
    connections: set[Any] = field(default_factory=set)
    by_route: dict[str, set[Any]] = field(default_factory=dict)
    held: int = 0
    per_address: Counter[str] = field(default_factory=Counter)
    per_route: Counter[Any] = field(default_factory=Counter)
    draining: bool = False
    stats: RouteStats = field(default_factory=RouteStats)
    channels: ChannelHub = field(default_factory=ChannelHub)
    events: Events = field(default_factory=Events)

    def __post_init__(self) -> None:
        self.stats.listen(self.events)

    def admit(
        self, address: str, route: Any = None, route_cap: int = 0
    ) -> Optional[tuple[int, str]]:
        """
        Whether one more connection from C{address} (to C{route}, whose
        own cap is C{route_cap}) is allowed.

        @return: L{None}, or the status and reason to refuse it with.
        """
        if self.draining:
            return (503, "Server shutting down")
        cap = self.limits.max_connections
        if cap and self.held >= cap:
            return (503, "Server connection limit reached")
        if route_cap and route is not None and self.per_route[route] >= route_cap:
            return (503, "Route connection limit reached")
        cap = self.limits.max_connections_per_ip
        if cap:
            key = address_key(address) if ":" in address else address
            if self.per_address.get(key, 0) >= cap:
                return (429, "Too many connections from your address")
        return None

    def hold(
        self, address: str, route: Any = None, route_cap: int = 0
    ) -> tuple[Optional[Place], Optional[tuple[int, str]]]:
        """
        Take a place for one more connection, if the caps allow.

        @return: the place (give it back with L{Place.release}, or hand it
            to the protocol that takes the connection over) and L{None};
            or L{None} and the status and reason to refuse with.
        """
        # admit's checks, written out: this runs for every upgrade.
        if self.draining or (
            self.limits.max_connections and self.held >= self.limits.max_connections
        ):
            return None, self.admit(address, route, route_cap)
        if route_cap and route is not None and self.per_route.get(route, 0) >= route_cap:
            return None, self.admit(address, route, route_cap)
        cap = self.limits.max_connections_per_ip
        key = address_key(address) if ":" in address else address
        if cap and self.per_address.get(key, 0) >= cap:
            return None, self.admit(address, route, route_cap)
        return self._take(address, route, key), None

    def _take(self, address: str, route: Any, key: Optional[str] = None) -> Place:
        # Counted with dict methods: Counter's own += and del run in Python,
        # and these run twice per connection.
        place = Place(self, address, route, key if key is not None else address_key(address))
        self.held += 1
        counts = self.per_address
        counts[place.key] = counts.get(place.key, 0) + 1
        if route is not None:
            counts = self.per_route
            counts[route] = counts.get(route, 0) + 1
        return place

    def add(
        self, protocol: Any, address: str, place: Optional[Place] = None, route: str = ""
    ) -> Place:
        """
        Register an open (or opening) WebSocket connection of C{route} (its
        path pattern), which keeps C{place} (a new one, uncapped, when it
        has none) until L{remove}.

        @return: the place the connection holds (to give to L{remove}).
        """
        if place is None or place.released:
            place = self._take(address, None)
        self.connections.add(protocol)
        self.by_route.setdefault(route, set()).add(protocol)
        return place

    def remove(self, protocol: Any, place: Optional[Place] = None, route: str = "") -> None:
        """
        Forget a connection that ended, and give back its C{place}.
        """
        if protocol in self.connections:
            self.connections.discard(protocol)
            others = self.by_route.get(route)
            if others is not None:
                others.discard(protocol)
                if not others:
                    del self.by_route[route]
            if place is not None:
                place.release()

    def open_connections(self, route: Optional[str] = None) -> frozenset[Any]:
        """
        The open WebSocket connections (past the opening handshake, not yet
        closing), of the whole tree or of one route (its path pattern).
        """
        among = self.connections if route is None else self.by_route.get(route, ())
        return frozenset(p for p in among if p.state == _OPEN)


_OPEN = WebSocketProtocol.STATE_OPEN
