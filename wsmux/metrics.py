"""
What operators can see: Prometheus metrics and a health check.

Counting costs nothing per message: Autobahn already keeps traffic counts
on every connection, and the collector adds them up when Prometheus
scrapes.  Connection events (open, close, refusal, slow consumer) are
counted as they happen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.web.resource import Resource


@dataclass
class RouteStats:
    """
    Connection events per route, and the traffic of closed connections.
    """

    handshakes: Counter[tuple[str, str]] = field(default_factory=Counter)
    closes: Counter[tuple[str, str]] = field(default_factory=Counter)
    slow_closed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    handler_errors: Counter[str] = field(default_factory=Counter)
    traffic: Counter[tuple[str, str]] = field(default_factory=Counter)
    http2_websockets: Counter[str] = field(default_factory=Counter)
    http2_connections: int = 0

    def listen(self, events: Any) -> None:
        """
        Count from a route tree's L{wsmux.events.Events}.
        """
        events.on("opened", self._opened)
        events.on("refused", self._refused)
        events.on("closed", self._closed)

    # The observers, one call each per connection.

    def _opened(self, connection: Any) -> None:
        self.handshakes[(connection.policy.route, "accepted")] += 1
        if connection.http2:
            self.http2_websockets[connection.policy.route] += 1

    def _refused(self, route: str, status: int, reason: str, peer: Any) -> None:
        self.handshakes[(route, str(status))] += 1

    def _closed(self, connection: Any, code: Optional[int], reason: Any, clean: bool) -> None:
        self.closed(connection.protocol, code)

    def closed(self, protocol: Any, code: Optional[int]) -> None:
        route = protocol.wsmux.policy.route
        label = _CODE_LABELS.get(code) or close_code_label(code)
        key = (route, label)
        self.closes[key] = self.closes.get(key, 0) + 1
        for kind, value in traffic_of(protocol).items():
            self.traffic[(route, kind)] += value


def close_code_label(code: Optional[int]) -> str:
    """
    The C{code} label of a close: the code itself for the codes RFC 6455
    defines (1000-1015), C{3xxx} or C{4xxx} for the registered and private
    ranges a client may fill at will, C{other} for anything else; no close
    frame counts as 1006.  One route has at most twenty label values.
    """
    if code is None:
        return "1006"
    if 1000 <= code <= 1015:
        return str(code)
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"


_CODE_LABELS: dict[Any, str] = {code: str(code) for code in range(1000, 1016)}


def traffic_of(protocol: Any) -> dict[str, int]:
    """
    Messages and bytes a connection has received and sent so far.
    """
    stats = getattr(protocol, "trafficStats", None)
    if stats is None:
        return {}
    return {
        "messages_in": stats.incomingWebSocketMessages,
        "messages_out": stats.outgoingWebSocketMessages + protocol.wsmux.prepared_sent,
        "bytes_in": stats.incomingOctetsWireLevel,
        "bytes_out": stats.outgoingOctetsWireLevel,
    }


class WsmuxCollector:
    """
    A Prometheus collector for one route tree (and its TLS contexts).
    """

    def __init__(self, tree: Any, contexts: Any = None, worker_pid: Optional[int] = None) -> None:
        self.tree = tree
        self.contexts = contexts
        self.worker_pid = worker_pid

    def collect(self) -> Iterator[Any]:
        registry = self.tree.registry
        stats: RouteStats = registry.stats
        open_ = GaugeMetricFamily(
            "wsmux_connections_open", "WebSocket connections open now", labels=["route"]
        )
        live: Counter[str] = Counter()
        traffic: Counter[tuple[str, str]] = Counter(stats.traffic)
        for protocol in list(registry.connections):
            route = protocol.wsmux.policy.route
            if getattr(protocol, "http_response_data", None) is not None:
                live[route] += 1
            for kind, value in traffic_of(protocol).items():
                traffic[(route, kind)] += value
        for endpoint in self.tree.endpoints.values():
            live.setdefault(endpoint.route.path, 0)
        for route, n in sorted(live.items()):
            open_.add_metric([route], n)
        yield open_

        handshakes = CounterMetricFamily(
            "wsmux_handshakes",
            "Opening handshakes by route and outcome (accepted, or the HTTP status)",
            labels=["route", "outcome"],
        )
        for (route, outcome), n in sorted(stats.handshakes.items()):
            handshakes.add_metric([route, outcome], n)
        yield handshakes
        http2 = CounterMetricFamily(
            "wsmux_http2_websockets",
            "WebSockets opened on HTTP/2 streams (RFC 8441), by route",
            labels=["route"],
        )
        for route, n in sorted(stats.http2_websockets.items()):
            http2.add_metric([route], n)
        yield http2
        yield CounterMetricFamily(
            "wsmux_http2_connections",
            "HTTP/2 connections accepted (TLS clients that chose h2)",
            value=stats.http2_connections,
        )

        for kind, help_text in (
            ("messages_in", "Messages received"),
            ("messages_out", "Messages sent"),
            ("bytes_in", "Bytes received on the wire"),
            ("bytes_out", "Bytes sent on the wire"),
        ):
            family = CounterMetricFamily(f"wsmux_{kind}", help_text, labels=["route"])
            for (route, k), n in sorted(traffic.items()):
                if k == kind:
                    family.add_metric([route], n)
            yield family

        closes = CounterMetricFamily(
            "wsmux_closes",
            "Closed connections by close code (application codes as 3xxx and 4xxx)",
            labels=["route", "code"],
        )
        for (route, code), n in sorted(stats.closes.items()):
            closes.add_metric([route, code], n)
        yield closes

        slow = CounterMetricFamily(
            "wsmux_slow_consumer_closes", "Connections closed as slow consumers", labels=["route"]
        )
        for route, n in sorted(stats.slow_closed.items()):
            slow.add_metric([route], n)
        yield slow

        dropped = CounterMetricFamily(
            "wsmux_slow_consumer_dropped_messages",
            "Messages dropped for slow consumers",
            labels=["route"],
        )
        for route, n in sorted(stats.dropped.items()):
            dropped.add_metric([route], n)
        yield dropped

        errors = CounterMetricFamily(
            "wsmux_handler_errors",
            "Exceptions from handlers after the handshake (each closed its connection with 1011)",
            labels=["route"],
        )
        for route, n in sorted(stats.handler_errors.items()):
            errors.add_metric([route], n)
        yield errors

        if self.contexts is not None:
            tls = CounterMetricFamily(
                "wsmux_tls_handshakes", "TLS handshakes by SNI host served", labels=["host"]
            )
            for host, n in sorted(self.contexts.handshakes.items()):
                tls.add_metric([host], n)
            yield tls

        redis = getattr(registry.channels, "remote", None)
        if redis is not None:
            connected = GaugeMetricFamily(
                "wsmux_redis_connected", "1 while the Redis subscription is live, else 0"
            )
            connected.add_metric([], 1 if redis.connected else 0)
            yield connected
            failures = CounterMetricFamily(
                "wsmux_redis_publish_failures", "Publishes that could not reach Redis"
            )
            failures.add_metric([], redis.publish_failures)
            yield failures
            pending = GaugeMetricFamily(
                "wsmux_redis_pending_bytes", "Bytes of publishes waiting for Redis to take them"
            )
            pending.add_metric([], redis.pending_bytes)
            yield pending
            dropped_in = CounterMetricFamily(
                "wsmux_redis_dropped",
                "Messages from Redis dropped (malformed, too large, or invalid UTF-8 text)",
            )
            dropped_in.add_metric([], redis.dropped)
            yield dropped_in

        if self.worker_pid is not None:
            worker = GaugeMetricFamily(
                "wsmux_worker", "The worker process that answered this scrape", labels=["pid"]
            )
            worker.add_metric([str(self.worker_pid)], 1)
            yield worker

        draining = GaugeMetricFamily(
            "wsmux_draining", "1 while the server is shutting down, else 0"
        )
        draining.add_metric([], 1 if registry.draining else 0)
        yield draining


def metrics_registry(
    tree: Any, contexts: Any = None, worker_pid: Optional[int] = None
) -> CollectorRegistry:
    """
    A Prometheus registry with wsmux's collector for C{tree}.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WsmuxCollector(tree, contexts, worker_pid))  # type: ignore[arg-type]
    return registry


class MetricsResource(Resource):
    """
    The Prometheus text exposition of a registry.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class HealthResource(Resource):
    """
    200 while serving, 503 while draining (shutting down).
    """

    isLeaf = True

    def __init__(self, tree: Any) -> None:
        super().__init__()
        self.tree = tree

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self.tree.registry.draining:
            request.setResponseCode(503)
            return b"draining\n"
        return b"ok\n"
