"""
The route tree: a C{twisted.web} resource tree that multiplexes WebSocket
endpoints by path.

Literal path segments are ordinary children (C{putChild}); a C{{name}}
segment is a parameter child found through C{getChild}.  Each route ends in
a L{WebSocketEndpoint} leaf that takes the connection over from
C{twisted.web} and hands it to the route's Autobahn protocol.  An upgrade
request that no route serves goes to the I{unhandled hook}.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from wsmux._endpoint import PendingUpgrade, UnhandledUpgrade, WebSocketEndpoint, _UpgradeResource
from wsmux._paths import (
    Adopt,
    HookResult,
    Reject,
    Route,
    RouteClash,
    RouteError,
    UnhandledHook,
    canonical_path,
    check_clashes,
    parse_path,
)
from wsmux._takeover import upgrade
from wsmux._upgrades import _PARAMS_ATTR, NO_ROUTE, _peer, is_upgrade, log_rejection, path_params
from wsmux.connection import SENDABLE_CLOSE_CODES
from wsmux.events import Events
from wsmux.factory import ProtocolOptions, RouteFactory
from wsmux.limits import ConnectionRegistry, Place, ServerLimits, client_address
from wsmux.logs import log
from wsmux.protocol import route_protocol

# The parts live in modules by job (see docs/architecture.rst); these names
# stay importable from here.
__all__ = [
    "NO_ROUTE",
    "Adopt",
    "HookResult",
    "PendingUpgrade",
    "Reject",
    "Route",
    "RouteClash",
    "RouteError",
    "RouteTree",
    "UnhandledUpgrade",
    "WebSocketEndpoint",
    "canonical_path",
    "check_clashes",
    "is_upgrade",
    "log_rejection",
    "parse_path",
    "path_params",
    "upgrade",
]


class _Node(Resource):
    """
    One path segment of the route tree.
    """

    def __init__(self, tree: RouteTree, depth: int) -> None:
        super().__init__()
        self.tree = tree
        self.depth = depth
        self.param: Optional[tuple[str, _Node]] = None
        self.endpoint: Optional[WebSocketEndpoint] = None
        self.http: Optional[IResource] = None
        # A resource for plain requests to this path and below it (static
        # files, a WSGI application...), where nothing deeper serves them.
        self.subtree: Optional[IResource] = None

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        child = self.children.get(path)
        if child is None:
            return self.getChild(path, request)
        if self.param is not None and isinstance(child, _Node):
            # A literal segment and a parameter both match here: the literal
            # wins, unless the rest of the path leads nowhere through it and
            # somewhere through the parameter (with /rooms/lobby and
            # /rooms/{room}/log, /rooms/lobby/log is the parameter route's).
            rest = request.postpath  # type: ignore[attr-defined]
            upgrade = is_upgrade(request)
            if not child.leads_to(rest, upgrade) and self.param[1].leads_to(rest, upgrade):
                return self.getChild(path, request)
        return child

    def leads_to(self, rest: Sequence[bytes], upgrade: bool) -> bool:
        """
        Whether the path segments C{rest}, below this node, end where
        something serves the request (a route, or for a plain request an
        HTTP resource); literal segments tried before parameters.
        """
        if not upgrade and self.subtree is not None:
            return True  # its resource takes whatever is below
        if not rest:
            # A route here, even unmounted: an unmounted path stays
            # unhandled (404, or the hook), as unmount promises, rather
            # than falling to a parameter route beside it.
            if upgrade:
                return self.endpoint is not None
            return self.endpoint is not None or self.http is not None
        segment = rest[0]
        child = self.children.get(segment)
        if child is not None:
            if not isinstance(child, _Node):
                return True  # a resource of the user's own takes it from here
            if child.leads_to(rest[1:], upgrade):
                return True
        return (
            bool(segment) and self.param is not None and self.param[1].leads_to(rest[1:], upgrade)
        )

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"" and self.depth == 0:
            return self.terminal(request)
        if path and self.param is not None:
            name, node = self.param
            try:
                value = path.decode("utf-8")
            except UnicodeDecodeError:
                return self.tree.no_route(request, self.depth)
            params = getattr(request, _PARAMS_ATTR, None)
            if params is None:
                params = {}
                setattr(request, _PARAMS_ATTR, params)
            params[name] = value
            return node
        return self.tree.no_route(request, self.depth)

    def render(self, request: IRequest) -> Any:
        return self.terminal(request).render(request)

    def terminal(self, request: IRequest) -> IResource:
        """
        The resource for a request whose path ends at this node.
        """
        if self.endpoint is not None and self.endpoint.mounted:
            return self.endpoint
        if is_upgrade(request):
            return self.tree.unhandled_resource
        if self.http is not None:
            return self.http
        if self.subtree is not None:
            if self.depth == 0 and request.prepath[-1:] == [b""]:  # type: ignore[attr-defined]
                # GET / : the resource gets the empty segment, as it would
                # at a site's root (a directory's index, a WSGI app's "/").
                request.postpath.insert(0, request.prepath.pop())  # type: ignore[attr-defined]
            return self.subtree
        return self.tree.no_route(request, self.depth, consumed=False)


# The traversal steps of _Node that endpoint_at follows.
_STEPS = ("getChildWithDefault", "getChild", "render", "terminal", "leads_to")


class RouteTree(_Node):
    """
    The root of wsmux's resource tree.

    Serve it with C{twisted.web.server.Site(tree)} or mount it inside an
    existing tree with C{putChild}.  Ordinary resources can be added next to
    the routes with C{putChild} as on any resource.

    @param routes: the initial L{Route}s.
    @param defaults: the protocol options every route inherits.
    @param unhandled: called with the request for an upgrade that no route
        serves; returns (or fires a Deferred with) L{None} for the default 404,
        a L{Reject}, an L{Adopt}, or a handler class to adopt with.
    @param index: the resource answering a plain C{GET /}, if any.
    @param fallback: the resource for non-upgrade requests to paths nothing
        else serves (a 404 page by default); it sees the whole remaining
        path, so a C{twisted.web.static.File} works.
    @param reactor: the reactor the factories use (for timeouts).
    @param limits: server-wide limits (connection caps, trusted proxies).
    @ivar registry: the L{ConnectionRegistry} of open connections.
    """

    def __init__(
        self,
        routes: Iterable[Route] = (),
        defaults: Optional[ProtocolOptions] = None,
        unhandled: Optional[UnhandledHook] = None,
        index: Optional[IResource] = None,
        fallback: Optional[IResource] = None,
        reactor: Any = None,
        limits: Optional[ServerLimits] = None,
    ) -> None:
        super().__init__(self, 0)
        self.limits = limits or ServerLimits()
        self.registry = ConnectionRegistry(self.limits)
        self.defaults = defaults or ProtocolOptions()
        self.unhandled = unhandled
        self.http = index
        self.fallback = fallback
        self.reactor = reactor
        self.unhandled_resource = UnhandledUpgrade(self)
        self.has_subtrees = False
        # Upgrades waiting for a handler chain or the hook to decide.
        self.pending: set[PendingUpgrade] = set()
        self._adopt_factory: Optional[RouteFactory] = None
        self._adopt_classes: dict[type, type] = {}
        self.endpoints: dict[str, WebSocketEndpoint] = {}
        # Whether this tree traverses as _Node does (a subclass may not).
        self._node_steps = all(getattr(type(self), name) is getattr(_Node, name) for name in _STEPS)
        for route in routes:
            self.mount(route)

    def mount(self, route: Route) -> WebSocketEndpoint:
        """
        Add a route.

        @raise RouteError: if another route already serves the same path, or
            a parameter at the same position has another name.
        @raise ValueError: if the route's options are bad.
        """
        options = self.defaults.merged(dict(route.options))
        canonical = canonical_path(route.path)
        existing = self.endpoints.get(canonical)
        if existing is not None:
            raise RouteError(f"route {route.path} clashes with route {existing.route.path}")
        node: _Node = self
        for segment in parse_path(route.path):
            if isinstance(segment, bytes):
                child = node.children.get(segment)
                if child is None:
                    child = _Node(self, node.depth + 1)
                    node.putChild(segment, child)
                elif not isinstance(child, _Node):
                    raise RouteError(
                        f"route {route.path} clashes with a resource put at "
                        f"{segment.decode('utf-8')!r}"
                    )
                node = child
            else:
                if node.param is None:
                    node.param = (segment, _Node(self, node.depth + 1))
                elif node.param[0] != segment:
                    raise RouteError(
                        f"route {route.path} names parameter {{{segment}}} "
                        f"where another route names {{{node.param[0]}}}"
                    )
                node = node.param[1]
        endpoint = WebSocketEndpoint(self, route, options)
        node.endpoint = endpoint
        self.endpoints[canonical] = endpoint
        return endpoint

    def unmount(self, path: str) -> None:
        """
        Stop serving the route at C{path}: new upgrades to it are treated
        as unhandled (404 by default); open connections are left alone.

        @raise KeyError: if no route is mounted at C{path}.
        """
        endpoint = self.endpoints.pop(canonical_path(path))
        endpoint.mounted = False

    def route_for(self, path: str) -> WebSocketEndpoint:
        """
        The endpoint mounted for a route path pattern.
        """
        return self.endpoints[canonical_path(path)]

    def endpoint_at(
        self, path: bytes
    ) -> Optional[tuple[WebSocketEndpoint, Optional[dict[str, str]]]]:
        """
        The mounted route an upgrade to C{path} reaches, found as
        C{twisted.web}'s traversal of this tree finds it (L{_Node}'s steps:
        a literal segment before a parameter, unless the path leads to a
        route only through the parameter).

        @param path: the request's path, without its query.
        @return: the route's endpoint and its path parameters (L{None} for
            none); or L{None} when the traversal would end anywhere else (a
            resource of the user's own, no route or an unmounted one), or
            when the path has a percent-escape or the tree a traversal of
            its own, for C{twisted.web} to take.
        """
        if b"%" in path or path[:1] != b"/" or self.isLeaf or not self._node_steps:
            return None
        node: Any = self
        params: Optional[dict[str, str]] = None
        segments = path[1:].split(b"/")
        for at, segment in enumerate(segments):
            child = node.children.get(segment)
            if child is not None:
                if type(child) is not _Node:
                    return None
                if node.param is None:
                    node = child
                    continue
                rest = segments[at + 1 :]
                if child.leads_to(rest, True) or not node.param[1].leads_to(rest, True):
                    node = child
                    continue
            elif not segment or node.param is None:
                return None
            name, below = node.param
            try:
                value = segment.decode("utf-8")
            except UnicodeDecodeError:
                return None
            if params is None:
                params = {}
            params[name] = value
            node = below
        endpoint = node.endpoint
        if endpoint is None or not endpoint.mounted:
            return None
        return endpoint, params

    def no_route(self, request: IRequest, depth: int, consumed: bool = True) -> IResource:
        """
        The resource for a path that no route or child serves.
        """
        if is_upgrade(request):
            return self.unhandled_resource
        reached = depth + 1 if consumed else depth
        below = self._subtree_above(request.prepath, reached)
        if below is not None:
            # The nearest resource mounted above the path gets the rest of
            # it, as if it had been reached directly.
            at, resource = below
            rewind = reached - at
            if rewind:
                request.postpath[:0] = request.prepath[-rewind:]
                del request.prepath[-rewind:]
            return resource
        if self.fallback is None:
            from twisted.web.pages import notFound

            return notFound()
        # Give the fallback the whole path below the tree.
        rewind = reached
        if rewind:
            request.postpath[:0] = request.prepath[-rewind:]
            del request.prepath[-rewind:]
        return self.fallback

    def _subtree_above(
        self, prepath: Sequence[bytes], reached: int
    ) -> Optional[tuple[int, IResource]]:
        # The deepest subtree resource on the way to the path's first
        # `reached` segments below the tree (literal segments only: a
        # subtree is mounted at a literal path), with its depth.
        if not self.has_subtrees:
            return None
        segments = prepath[len(prepath) - reached :] if reached else []
        node: Any = self
        found = (0, self.subtree) if self.subtree is not None else None
        for depth, segment in enumerate(segments, 1):
            node = node.children.get(segment)
            if not isinstance(node, _Node):
                break
            if node.subtree is not None:
                found = (depth, node.subtree)
        return found

    def mount_subtree(self, path: str, resource: IResource) -> None:
        """
        Serve C{resource} for non-upgrade requests to C{path} and every path
        below it that no route or deeper resource serves: static files
        (C{twisted.web.static.File}), a WSGI application, a redirect.  It
        sees the request as if mounted there (C{prepath} up to C{path},
        C{postpath} the rest).

        @raise RouteError: if the path is malformed, has parameters, or has
            a resource already.
        """
        node = self._literal_node(path)
        if node.subtree is not None:
            raise RouteError(f"{path}: a resource is mounted there already")
        node.subtree = resource
        self.has_subtrees = True

    def _literal_node(self, path: str) -> _Node:
        node: _Node = self
        for segment in parse_path(path):
            if not isinstance(segment, bytes):
                raise RouteError(f"{path}: a resource path cannot have parameters")
            child = node.children.get(segment)
            if child is None:
                child = _Node(self, node.depth + 1)
                node.putChild(segment, child)
            elif not isinstance(child, _Node):
                raise RouteError(f"{path}: clashes with a resource put at {segment!r}")
            node = child
        return node

    def refused(self, request: IRequest, code: int, reason: str, route: str = "-") -> None:
        """
        Log and count a refused upgrade.
        """
        log_rejection(request, code, reason, route)
        self.registry.events.fire("refused", route, code, reason, _peer(request))

    def mount_resource(self, path: str, resource: IResource) -> None:
        """
        Serve C{resource} for non-upgrade requests to exactly C{path}
        (C{/healthz}, C{/ops/metrics}).

        @raise RouteError: if the path is malformed or has parameters.
        """
        self._literal_node(path).http = resource

    def clock(self) -> Any:
        """
        The reactor this tree's timers run on.
        """
        if self.reactor is not None:
            return self.reactor
        from twisted.internet import reactor

        return reactor

    def hold(
        self, request: IRequest, endpoint: Optional[WebSocketEndpoint]
    ) -> tuple[Optional[Place], Optional[tuple[int, str]]]:
        """
        Take a place in the connection caps for the upgrade C{request}
        (to C{endpoint}, whose own cap applies too, if given).

        @return: the place and L{None}, or L{None} and the status and reason
            to refuse the upgrade with.
        """
        cap = endpoint.options.max_connections if endpoint is not None else 0
        return self.registry.hold(client_address(request, self.limits), endpoint, cap)

    def upgrade(
        self,
        request: IRequest,
        factory: RouteFactory,
        cls: type,
        params: Mapping[str, str],
        subprotocol: Optional[str] = None,
        held: Union[Place, PendingUpgrade, None] = None,
    ) -> Optional[WebSocketServerProtocol]:
        """
        L{upgrade} C{request}, counting the connection in this tree's
        registry (in the place it L{hold}s, when given).
        """
        deadline = None
        if isinstance(held, PendingUpgrade):
            place: Optional[Place] = held.place
            deadline = held.deadline
        else:
            place = held
        # The address the place was taken for (worked out once).
        address = place.address if place is not None else client_address(request, self.limits)
        return upgrade(
            request,
            factory,
            cls,
            params,
            subprotocol,
            self.registry,
            address,
            place,
            deadline,
        )

    def render_unhandled(self, request: IRequest) -> Any:
        return self.unhandled_resource.render(request)

    def run_unhandled(
        self, request: IRequest, via: _UpgradeResource, pending: PendingUpgrade
    ) -> None:
        """
        Consult the unhandled hook about C{request} and act on its answer.

        @param pending: the upgrade's place and deadline (the hook's
            decision must come within it).
        """
        path = request.path.decode("utf-8", "replace")
        if self.unhandled is None:
            if pending.waiting:
                pending.refuse(404, NO_ROUTE)
            return

        def act(result: object) -> None:
            if not pending.waiting:
                return
            if isinstance(result, Adopt) or (
                isinstance(result, type) and issubclass(result, WebSocketServerProtocol)
            ):
                adopt = result if isinstance(result, Adopt) else Adopt(result)
                if not pending.proceed():
                    return
                try:
                    cls = self._adopt_class(adopt.handler)
                except Exception:
                    pending.fail(Failure(), f"the unhandled hook's handler {adopt.handler!r}")
                    return
                log.info(
                    "unhandled hook adopted path={path} handler={handler}",
                    path=path,
                    handler=adopt.handler.__qualname__,
                )
                self.upgrade(
                    request,
                    self._adoption_factory(),
                    cls,
                    adopt.path_params,
                    None,
                    pending,
                )
                return
            if result is None:
                pending.refuse(404, NO_ROUTE)
            elif isinstance(result, Reject) and 400 <= result.code <= 599:
                pending.refuse(result.code, result.reason, result.headers)
            else:
                log.error(
                    "unhandled hook returned {result!r} for {path}; expected None, "
                    "Reject (with a 4xx or 5xx code), Adopt or a WebSocketServerProtocol subclass",
                    result=result,
                    path=path,
                )
                pending.refuse(500, "Internal Server Error")

        def failed(failure: Failure) -> None:
            if pending.waiting:
                pending.fail(failure, "the unhandled hook")

        decision = maybeDeferred(self.unhandled, request)
        pending.wait_for(decision)
        decision.addCallbacks(act, failed)

    def open_connections(self, route: Optional[str] = None) -> frozenset[Any]:
        """
        The open WebSocket connections of the tree (C{ws}'s C{wss.clients}),
        or of one route, named by its path pattern (C{"/rooms/{room}"}).
        Each is a handler instance; its C{wsmux} attribute is its
        L{wsmux.connection.Connection}.
        """
        return self.registry.open_connections(route)

    @property
    def events(self) -> Events:
        """
        The tree's connection events: C{tree.events.on("opened", observer)}
        (see L{wsmux.events}).
        """
        return self.registry.events

    def close_all(
        self,
        code: int = 1001,
        reason: str = "going away",
        timeout: float = 10.0,
        route: Optional[str] = None,
        clock: Any = None,
    ) -> Deferred[int]:
        """
        Close every WebSocket connection of the tree (or of one route,
        named by its path pattern) with C{code} and C{reason}: what
        WebSocket-Node's C{closeAllConnections()} and C{ws}'s
        C{wss.clients.forEach(c => c.close(1001))} do.  Connections still
        opening are dropped; those already closing finish their closing
        handshake (within the same timeout).  The drain on SIGTERM uses it.

        @param timeout: seconds to wait for the closing handshakes; the
            connections still open then are dropped.
        @param clock: the reactor for the timeout (the global one by
            default).
        @return: a Deferred that fires, with how many connections had to
            be dropped, once every one has closed.
        @raise ValueError: for a close code a server may not send.
        """
        if code not in SENDABLE_CLOSE_CODES:
            raise ValueError(f"close code {code!r} cannot be sent")
        registry = self.registry
        among = registry.connections if route is None else registry.by_route.get(route, ())
        connections = list(among)
        if not connections:
            return succeed(0)
        for protocol in connections:
            if protocol.state == protocol.STATE_OPEN:
                protocol.wsmux.close(code, reason)
            elif protocol.state == protocol.STATE_CONNECTING:
                protocol.wsmux.drop()
            # (one already closing finishes its own closing handshake)
        dropped = 0

        def give_up() -> None:
            nonlocal dropped
            left = [p for p in connections if p in registry.connections]
            if left:
                log.info("closing: dropping {n} connection(s) that did not close", n=len(left))
            dropped = len(left)
            for protocol in left:
                protocol.wsmux.drop()

        if clock is None:
            from twisted.internet import reactor as clock
        timer = clock.callLater(timeout, give_up)
        done = DeferredList([p.is_closed for p in connections], consumeErrors=True)

        def finished(_: object) -> int:
            if timer.active():
                timer.cancel()
            return dropped

        return done.addBoth(finished)

    def refuse_pending(self, code: int, reason: str) -> None:
        """
        Answer every upgrade still waiting for a decision (the drain).
        """
        for pending in list(self.pending):
            pending.refuse(code, reason)

    def _adoption_factory(self) -> RouteFactory:
        if self._adopt_factory is None:
            self._adopt_factory = RouteFactory(
                WebSocketServerProtocol, self.defaults, "(unhandled)", reactor=self.reactor
            )
        return self._adopt_factory

    def _adopt_class(self, handler: type) -> type:
        cls = self._adopt_classes.get(handler)
        if cls is None:
            # Channels per adopted handler class: a hook that adopts a
            # guarded room here and a pubsub handler there keeps them apart.
            namespace = f"(unhandled) {handler.__module__}.{handler.__qualname__}"
            cls = self._adopt_classes[handler] = route_protocol(
                handler, self.defaults, "(unhandled)", self._adoption_factory(), namespace
            )
        return cls
