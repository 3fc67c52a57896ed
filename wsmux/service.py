"""
Settings to services: the API a C{.tac} file or another application uses.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Site

from wsmux._compat_twisted import slot_port
from wsmux._page import demo_page
from wsmux._portfile import port_line, remove_port_file, write_port_file
from wsmux._status import mount_status
from wsmux.bridge import ChildrenService, exec_handler
from wsmux.config import Settings, port_description
from wsmux.handlers import resolve_callable, resolve_handler
from wsmux.logs import log
from wsmux.metrics import HealthResource, MetricsResource, metrics_registry
from wsmux.proxy import proxy_handler
from wsmux.resources import build_resource
from wsmux.routing import Route, RouteError, RouteTree
from wsmux.site import WebSocketSite
from wsmux.tls import SniContextMap, SniffingFactory, tls_factory
from wsmux.workers import AdoptedPort, ignore_hangup, on_hangup


def build_tree(settings: Settings, reactor: Any = None) -> RouteTree:
    """
    Build the route tree that C{settings} describe.

    @raise ValueError: if a handler or the unhandled hook cannot be
        imported, or a route is bad.
    """
    unhandled = (
        resolve_callable(settings.unhandled, "unhandled hook") if settings.unhandled else None
    )
    routes = [
        Route(
            spec.path,
            (exec_handler(spec.exec, spec.path),)
            if spec.exec is not None
            else (proxy_handler(spec.proxy, spec.path),)
            if spec.proxy is not None
            else tuple(resolve_handler(h) for h in spec.handlers),
            spec.options,
        )
        for spec in settings.routes
    ]
    tree = RouteTree(
        routes,
        defaults=settings.defaults,
        unhandled=unhandled,
        index=demo_page() if settings.index else None,
        reactor=reactor,
        limits=settings.limits,
    )
    for spec in settings.resources:
        try:
            tree.mount_subtree(spec.path, build_resource(spec, reactor))
        except (ValueError, RouteError) as e:
            raise ValueError(f"{spec.origin}: {e}") from None
    return tree


def make_service(
    settings: Settings,
    tree: Optional[RouteTree] = None,
    reactor: Any = None,
    contexts: Optional[SniContextMap] = None,
    adopted: Optional[list[tuple[str, int]]] = None,
) -> MultiService:
    """
    A C{MultiService} with one listening child per port in C{settings},
    all serving the same route tree: plain ports, TLS ports and ports that
    take both.

    @param tree: the tree to serve; built from C{settings} when not given.
    @param contexts: the TLS contexts; loaded from C{settings.tls} when TLS
        ports are configured and none are given.
    @return: the service; its C{tree} attribute is the route tree and its
        C{contexts} attribute the L{SniContextMap} (or L{None}).
    @param adopted: in a worker process, the C{(kind, fd)} listening
        sockets inherited from the supervisor, served instead of the ports.
    @raise wsmux.tls.CertificateError: if a certificate cannot be used.
    """
    if tree is None:
        tree = build_tree(settings, reactor=reactor)
    site = WebSocketSite(
        tree,
        limits=settings.limits,
        head_timeout=settings.defaults.open_handshake_timeout,
        **({"reactor": reactor} if reactor is not None else {}),
    )
    top = MultiService()
    top.tree = tree  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    DrainService(tree, settings.limits.drain_timeout, reactor, site).setServiceParent(top)
    if any(spec.exec is not None for spec in settings.routes):
        # Stopped before the drain (services stop in reverse order): every
        # child gets SIGTERM as its connection gets 1001, and wsmux waits
        # for them to exit.
        ChildrenService().setServiceParent(top)
    factories: dict[str, Any] = {"plain": site}
    if settings.tls_ports or settings.shared_ports:
        if contexts is None:
            contexts = SniContextMap(settings.tls)
        factories["tls"] = tls_factory(contexts, site)
        factories["shared"] = SniffingFactory(
            factories["tls"], site, timeout=settings.defaults.open_handshake_timeout, clock=reactor
        )
    # Always: SIGHUP's default action ends the process, and systemd's
    # ExecReload sends it.
    ReloadOnHangup(contexts.reload if contexts is not None else None, reactor).setServiceParent(top)
    top.contexts = contexts  # type: ignore[attr-defined]
    _mount_operations(settings, tree, contexts, top, reactor, worker=adopted is not None)
    if adopted is not None:
        # A worker process: serve the sockets the supervisor handed over.
        for kind, fd in adopted:
            AdoptedPort(fd, factories[kind], reactor).setServiceParent(top)
        for endpoint in tree.endpoints.values():
            endpoint.factory.headers["X-Wsmux-Worker"] = str(os.getpid())
        log.info("worker pid {pid} serving {n} socket(s)", pid=os.getpid(), n=len(adopted))
    else:
        for kind, ports in (
            ("plain", settings.ports),
            ("tls", settings.tls_ports),
            ("shared", settings.shared_ports),
        ):
            for port in ports:
                ListeningService(
                    kind, port_description(port), factories[kind], reactor
                ).setServiceParent(top)
        if settings.port_file:
            PortFile(settings.port_file, listeners(top)).setServiceParent(top)
    return top


def load_certificates(settings: Settings) -> Optional[SniContextMap]:
    """
    The TLS contexts C{settings} serve with, read from their files; L{None}
    without TLS ports.

    @raise wsmux.tls.CertificateError: naming the file that cannot be used.
    """
    if settings.tls_ports or settings.shared_ports:
        return SniContextMap(settings.tls)
    return None


class ListeningService(Service):
    """
    Listen on one endpoint while running.

    Like Twisted's C{strports.service}, with the port it got there for
    anyone to read: with C{--port 0} the system picks the port number.

    @ivar kind: C{plain}, C{tls} or C{shared}.
    @ivar description: the Twisted endpoint description.
    @ivar port: the listening port (an C{IListeningPort}) while listening.
    """

    def __init__(self, kind: str, description: str, factory: Any, reactor: Any = None) -> None:
        self.kind = kind
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.port: Any = None
        self._waiting: list[Deferred[Any]] = []
        self._listening_deferred: Optional[Deferred[Any]] = None

    def privilegedStartService(self) -> None:
        # Before twistd drops privileges (--uid/--gid): a port below 1024
        # is bound as root, as strports.service does.
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._listening_deferred is None:  # started without the privileged step
            self._listen()

    def _listen(self) -> None:
        from twisted.internet import endpoints

        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        endpoint = endpoints.serverFromString(reactor, self.description)
        failed: list[Any] = []
        listening = self._listening_deferred = endpoint.listen(self.factory)
        listening.addCallbacks(self._listening, failed.append)
        if failed:
            # At start-up, as strports.service does: twistd reports it and
            # exits (a port in use, say).
            failed[0].raiseException()
        listening.addErrback(lambda f: log.failure("cannot listen on {d}", f, d=self.description))

    def _listening(self, port: Any) -> None:
        slot_port(port)
        self.port = port
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(port)

    def when_listening(self) -> Deferred[Any]:
        """
        A Deferred that fires with the listening port.
        """
        if self.port is not None:
            return succeed(self.port)
        waiter: Deferred[Any] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def stopService(self) -> Any:
        super().stopService()
        self._listening_deferred = None
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


_KINDS = ("plain", "tls", "shared", "metrics")


def listeners(service: Any) -> list[ListeningService]:
    """
    The listening services of a service made by L{make_service}: plain
    ports, TLS ports, shared ports (each in the order of the settings),
    then the metrics port.
    """
    found = [child for child in service if isinstance(child, ListeningService)]
    return sorted(found, key=lambda child: _KINDS.index(child.kind))


def bound_addresses(service: Any) -> list[tuple[str, Any]]:
    """
    Where a running service made by L{make_service} listens: C{(kind,
    address)} per port, the address an C{IAddress} (C{host}, C{port}).
    """
    return [(child.kind, child.port.getHost()) for child in listeners(service) if child.port]


class PortFile(Service):
    """
    Once every port listens, write where, one line per port
    (C{KIND HOST PORT}: C{plain 127.0.0.1 43121}), to a file; remove it
    when the service stops.  For test harnesses and supervisors started
    with C{--port 0}.
    """

    def __init__(self, path: str, ports: list[ListeningService]) -> None:
        self.path = path
        self.ports = ports
        self._written = False

    def startService(self) -> None:
        super().startService()
        DeferredList([p.when_listening() for p in self.ports], fireOnOneErrback=True).addCallback(
            self._write_port_file
        )

    def _write_port_file(self, _: object) -> None:
        lines = []
        for listener in self.ports:
            host = listener.port.getHost()
            lines.append(port_line(listener.kind, host.host, host.port))
        try:
            write_port_file(self.path, lines)
        except OSError as e:
            log.error("cannot write the port file {path}: {why}", path=self.path, why=e.strerror)
            return
        self._written = True

    def stopService(self) -> None:
        super().stopService()
        if self._written:
            remove_port_file(self.path)


def _mount_operations(
    settings: Settings,
    tree: RouteTree,
    contexts: Any,
    top: MultiService,
    reactor: Any,
    worker: bool = False,
) -> None:
    # The health check and the metrics, where the settings ask for them.
    if settings.health_path:
        tree.mount_resource(settings.health_path, HealthResource(tree))
    if settings.status_path:
        mount_status(tree, settings.status_path, settings.status_token, settings.status_allow)
    if settings.redis:
        from wsmux.redis_channels import RedisChannels  # txredisapi only with Redis

        RedisChannels(
            tree.registry.channels,
            settings.redis,
            reactor,
            max_message_size=settings.limits.redis_max_message,
            max_pending=settings.limits.redis_max_pending,
        ).setServiceParent(top)
    if settings.metrics_path or settings.metrics_port:
        metrics = MetricsResource(metrics_registry(tree, contexts, os.getpid() if worker else None))
        if settings.metrics_path:
            tree.mount_resource(settings.metrics_path, metrics)
        if settings.metrics_port:
            root = Resource()
            root.putChild(b"metrics", metrics)
            root.putChild(b"", metrics)
            ListeningService(
                "metrics", port_description(settings.metrics_port), Site(root), reactor
            ).setServiceParent(top)


class FreezeHeapService(Service):
    """
    Once the reactor runs, move everything made at start-up (modules,
    classes, the route tree) out of the garbage collector's sight
    (C{gc.freeze}): its full collections then walk only what connections
    create, not the whole program each time.
    """

    def __init__(self, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._freeze)

    def _freeze(self) -> None:
        gc.collect()
        gc.freeze()

    def stopService(self) -> Any:
        gc.unfreeze()
        return super().stopService()


class ReloadOnHangup(Service):
    """
    Handles SIGHUP (what C{systemctl reload} sends): reloads what can be
    reloaded in a running process, the TLS certificates (C{reload}), says
    what it did, and never exits.  Other settings take effect when the
    process starts (with C{--workers}, the supervisor applies a changed
    settings file by replacing its workers).

    @param reload: the TLS certificates' reload, or L{None} when no TLS
        port is configured.
    """

    def __init__(self, reload: Any, reactor: Any = None) -> None:
        self.reload = reload
        self.reactor = reactor
        self._installed = False

    def startService(self) -> None:
        super().startService()
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._installed = on_hangup(self._hangup, reactor)

    def _hangup(self) -> None:
        if self.reload is None:
            log.info("SIGHUP: no TLS certificates to reload; other settings take effect on restart")
            return
        log.info("SIGHUP: reloading TLS certificates")
        self.reload()

    def stopService(self) -> None:
        if self._installed:
            ignore_hangup()
        super().stopService()


class DrainService(Service):
    """
    Closes every WebSocket connection of a tree when the service stops.

    On C{stopService} (SIGTERM for twistd) new upgrades are refused with
    503, every open connection is sent a 1001 close, and the service waits
    up to C{timeout} seconds for the close handshakes before it drops the
    connections that remain.  With the C{site}, HTTP connections are
    waited for too: idle ones close at once, and one whose request is under
    way (accepted just before the ports closed) closes once it is answered;
    an HTTP/2 connection is told GOAWAY and closes once its last stream
    has ended.
    """

    def __init__(
        self, tree: RouteTree, timeout: float, reactor: Any = None, site: Any = None
    ) -> None:
        self.tree = tree
        self.timeout = timeout
        self.reactor = reactor
        self.site = site

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        registry = self.tree.registry
        registry.draining = True
        # Upgrades still waiting for a handler chain or the hook are told
        # now, not opened into a server that is going away.
        self.tree.refuse_pending(503, "Server shutting down")
        site = self.site
        http = site.quiesce() if site is not None else succeed(None)
        if not registry.connections and http.called:
            return succeed(None)
        log.info(
            "shutting down: closing {n} WebSocket connection(s) with 1001, waiting up to {t}s"
            + (" (and for {h} HTTP connection(s) to be answered)" if not http.called else ""),
            n=len(registry.connections),
            t=self.timeout,
            h=sum(not c.idle for c in site.open_channels) + len(site.http2_connections)
            if site is not None
            else 0,
        )
        closed = self.tree.close_all(1001, "server shutting down", self.timeout, clock=reactor)
        # The shutdown goes on in a turn of its own, not inside the read
        # that closed the last WebSocket: Twisted drops every connection
        # still open there and then (an HTTP/2 connection whose streams
        # were those WebSockets, its TLS layer in the middle of a read).
        closed.addBoth(lambda result: deferLater(reactor, 0, lambda: result))
        if http.called:
            return closed

        def give_up() -> None:
            log.info(
                "shutting down: dropping HTTP connections whose request is not answered"
                " and HTTP/2 connections still open"
            )
            site.abort_channels()

        timer = reactor.callLater(self.timeout, give_up)
        done = DeferredList([closed, http], consumeErrors=True)
        done.addBoth(lambda _: timer.cancel() if timer.active() else None)
        return done
