"""
Server-wide limits: connection caps, request-head caps, trusted proxies,
and the registry of open WebSocket connections they are checked against.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.web.iweb import IRequest

from wsmux.channels import ChannelHub
from wsmux.metrics import RouteStats


def _limit(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerLimits:
    """
    Limits that apply to the whole server rather than to one route.
    """

    max_connections: int = _limit(
        10000, "Most WebSocket connections open at once on the server; more get 503. 0: no limit."
    )
    max_connections_per_ip: int = _limit(
        1000,
        "Most WebSocket connections from one client address; more get 429. 0: no limit.",
    )
    max_request_line: int = _limit(8192, "Longest HTTP request line, in bytes; longer gets 414.")
    max_headers: int = _limit(128, "Most HTTP request header lines; more get 431.")
    max_header_bytes: int = _limit(
        32768, "Most bytes of HTTP request headers in all; more get 431."
    )
    trusted_proxies: int = _limit(
        0,
        "How many proxies in front of wsmux to trust: the client address is taken "
        "that many hops back in X-Forwarded-For / Forwarded. 0 ignores both headers.",
    )
    drain_timeout: float = _limit(
        10.0,
        "On shutdown (SIGTERM), seconds to wait for clients to answer the 1001 close "
        "before their connections are dropped.",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if f.type in ("int", int) and not isinstance(value, int):
                raise ValueError(f"{f.name} must be a whole number, got {value!r}")
            if value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value!r}")

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
    return [
        (
            f.name,
            "a whole number" if f.type in ("int", int) else "a number",
            f.default,
            f.metadata["help"],
        )
        for f in dataclasses.fields(ServerLimits)
    ]


def client_address(request: IRequest, trusted_proxies: int) -> str:
    """
    The address of the client behind C{trusted_proxies} proxies.

    The chain is the addresses listed in C{Forwarded: for=...} (or, when that
    header is absent, C{X-Forwarded-For}) followed by the address that
    connected to us; the client is C{trusted_proxies} hops back from its end,
    so a client cannot spoof its address by sending the header itself.
    """
    peer = request.getClientAddress()
    direct = str(getattr(peer, "host", None) or getattr(peer, "name", None) or "unix")
    if trusted_proxies <= 0:
        return direct
    chain = _forwarded_for(request) + [direct]
    return chain[max(0, len(chain) - 1 - trusted_proxies)]


def _forwarded_for(request: IRequest) -> list[str]:
    forwarded = request.requestHeaders.getRawHeaders(b"forwarded")
    if forwarded:
        hops = []
        for header in forwarded:
            for element in header.decode("latin-1").split(","):
                for pair in element.split(";"):
                    name, _, value = pair.strip().partition("=")
                    if name.lower() == "for" and value:
                        value = value.strip('"')
                        if value.startswith("["):  # [2001:db8::1]:4711
                            value = value[1:].split("]", 1)[0]
                        elif value.count(":") == 1:  # 192.0.2.1:4711
                            value = value.split(":", 1)[0]
                        hops.append(value)
        return hops
    xff = request.requestHeaders.getRawHeaders(b"x-forwarded-for")
    if xff:
        return [
            part.strip()
            for header in xff
            for part in header.decode("latin-1").split(",")
            if part.strip()
        ]
    return []


@dataclass
class ConnectionRegistry:
    """
    The WebSocket connections open on one route tree, by client address.

    @ivar limits: the caps checked by L{admit}.
    @ivar connections: every open (or opening) protocol.
    @ivar draining: set on shutdown; new upgrades are refused with 503.
    @ivar stats: connection events and traffic, for metrics.
    @ivar channels: the named channels handlers publish to.
    """

    limits: ServerLimits = field(default_factory=ServerLimits)
    connections: set[Any] = field(default_factory=set)
    per_address: Counter[str] = field(default_factory=Counter)
    draining: bool = False
    stats: RouteStats = field(default_factory=RouteStats)
    channels: ChannelHub = field(default_factory=ChannelHub)

    def admit(self, address: str) -> Optional[tuple[int, str]]:
        """
        Whether one more connection from C{address} is allowed.

        @return: L{None}, or the status and reason to refuse it with.
        """
        if self.draining:
            return (503, "Server shutting down")
        cap = self.limits.max_connections
        if cap and len(self.connections) >= cap:
            return (503, "Server connection limit reached")
        cap = self.limits.max_connections_per_ip
        if cap and self.per_address[address] >= cap:
            return (429, "Too many connections from your address")
        return None

    def add(self, protocol: Any, address: str) -> None:
        self.connections.add(protocol)
        self.per_address[address] += 1

    def remove(self, protocol: Any, address: str) -> None:
        if protocol in self.connections:
            self.connections.discard(protocol)
            self.per_address[address] -= 1
            if self.per_address[address] <= 0:
                del self.per_address[address]
