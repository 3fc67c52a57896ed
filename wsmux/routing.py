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

import fnmatch
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import ITCPTransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from wsmux._compat_twisted import take_http_buffer
from wsmux.factory import ProtocolOptions, RouteFactory
from wsmux.limits import ConnectionRegistry, Place, ServerLimits, client_address
from wsmux.logs import log
from wsmux.protocol import route_protocol
from wsmux.responses import header_value, status_reason

_PARAMS_ATTR = "wsmux_path_params"
NO_ROUTE = "No WebSocket route at this path"
_PARAM_RE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class RouteError(ValueError):
    """
    A route path is malformed or clashes with another route.
    """


@dataclass(frozen=True)
class Reject:
    """
    The unhandled hook's answer that refuses an upgrade.

    @ivar code: the HTTP status to answer with (4xx or 5xx).
    @ivar reason: a short reason, sent as the status phrase and logged.
    """

    code: int = 404
    reason: str = "Not Found"


@dataclass(frozen=True)
class Adopt:
    """
    The unhandled hook's answer that serves an upgrade with a handler.

    @ivar handler: a C{WebSocketServerProtocol} subclass.
    @ivar path_params: values the handler finds in C{self.path_params}.
    """

    handler: type
    path_params: Mapping[str, str] = field(default_factory=dict)


HookResult = Union[None, Reject, Adopt, type]
UnhandledHook = Callable[[IRequest], Union[HookResult, "Deferred[HookResult]"]]


@dataclass(frozen=True)
class Route:
    """
    One WebSocket endpoint.

    @ivar path: the path pattern: C{/chat}, C{/a/b}, C{/rooms/{room}}.
    @ivar handlers: handler classes tried in order; the first whose optional
        C{accepts(request)} class method returns true (or that has none)
        serves the connection.
    @ivar options: per-route option overrides (field name to value); they
        are merged over the tree's defaults.
    """

    path: str
    handlers: tuple[type, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.handlers, type):
            object.__setattr__(self, "handlers", (self.handlers,))
        else:
            object.__setattr__(self, "handlers", tuple(self.handlers))
        if not self.handlers:
            raise RouteError(f"route {self.path}: at least one handler is needed")
        for handler in self.handlers:
            if not (isinstance(handler, type) and issubclass(handler, WebSocketServerProtocol)):
                raise RouteError(
                    f"route {self.path}: {handler!r} is not a WebSocketServerProtocol subclass"
                )
        parse_path(self.path)


def parse_path(path: str) -> list[Union[bytes, str]]:
    """
    Split a route path into segments.

    @param path: a pattern such as C{/rooms/{room}/log}.
    @return: one entry per segment: C{bytes} for a literal segment, C{str}
        (the parameter name) for a C{{name}} segment.
    @raise RouteError: if the path is malformed.
    """
    if not path.startswith("/"):
        raise RouteError(f"route path {path!r} must start with '/'")
    if path == "/":
        return []
    parts = path[1:].split("/")
    segments: list[Union[bytes, str]] = []
    names: set[str] = set()
    for part in parts:
        if not part:
            raise RouteError(f"route path {path!r} has an empty segment")
        match = _PARAM_RE.match(part)
        if match:
            name = match.group(1)
            if name in names:
                raise RouteError(f"route path {path!r} repeats parameter {name!r}")
            names.add(name)
            segments.append(name)
        elif "{" in part or "}" in part:
            raise RouteError(
                f"route path {path!r}: a parameter must be a whole segment, like /rooms/{{room}}"
            )
        else:
            segments.append(part.encode("utf-8"))
    return segments


def canonical_path(path: str) -> str:
    """
    The key two route paths share when they serve the same URLs:
    parameters become C{{}}, so C{/rooms/{a}} and C{/rooms/{b}} clash.
    """
    segments = parse_path(path)
    return "/" + "/".join(s.decode("utf-8") if isinstance(s, bytes) else "{}" for s in segments)


class RouteClash(RouteError):
    """
    Two routes serve the same URLs.

    @ivar index: the position of the second of them in the paths checked.
    """

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def check_clashes(paths: Iterable[str]) -> None:
    """
    Check that route paths can live in one tree, in one pass.

    @raise RouteClash: naming the two paths, when two serve the same URLs
        or name a parameter at the same position differently.
    """
    seen: dict[str, str] = {}
    names: dict[str, tuple[str, str]] = {}
    for index, path in enumerate(paths):
        prefix = ""
        for segment in parse_path(path):
            if isinstance(segment, str):
                name, other = names.setdefault(prefix, (segment, path))
                if name != segment:
                    raise RouteClash(
                        f"route {path} names parameter {{{segment}}} where "
                        f"route {other} names {{{name}}}",
                        index,
                    )
                prefix += "/{}"
            else:
                prefix += "/" + segment.decode("utf-8")
        key = prefix or "/"
        if key in seen:
            raise RouteClash(f"route {path} clashes with route {seen[key]}", index)
        seen[key] = path


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
    reason = status_reason(reason, _phrase(code))
    request.setResponseCode(code, reason.encode("ascii"))
    if close:
        request.setHeader(b"connection", b"close")
        channel = getattr(request, "channel", None)
        if channel is not None:
            channel.persistent = False
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    for name, value in headers:
        request.setHeader(name, header_value(value))
    return (reason + "\n").encode("utf-8")


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def _peer(request: IRequest) -> str:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


class _UpgradeResource(Resource):
    """
    Common ground of the resources that answer upgrade requests.
    """

    isLeaf = True

    def __init__(self, tree: RouteTree) -> None:
        super().__init__()
        self.tree = tree

    def respond(
        self, request: IRequest, code: int, reason: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """
        Finish a deferred request with an error status, unless the client
        went away meanwhile.
        """
        if getattr(request, "_disconnected", False) or getattr(request, "finished", False):
            return
        body = _plain(request, code, reason, headers, close=True)
        request.write(body)
        request.finish()

    def reject(self, request: IRequest, code: int, reason: str, route: str = "-") -> bytes:
        """
        Log a refused upgrade and return the body of its error response.
        """
        self.tree.refused(request, code, reason, route)
        return _plain(request, code, reason, close=True)


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


class WebSocketEndpoint(_UpgradeResource):
    """
    The leaf resource of one route.

    A non-upgrade request gets 426 Upgrade Required; an upgrade request
    passes the route's origin and subprotocol checks, picks the first
    handler that accepts it and continues as a WebSocket connection.

    @ivar factory: the route's L{RouteFactory}.
    """

    _factory: Optional[RouteFactory] = None
    _classes: Optional[dict[type, type]] = None
    _single: Optional[type] = None

    def __init__(self, tree: RouteTree, route: Route, options: ProtocolOptions) -> None:
        super().__init__(tree)
        self.route = route
        self.options = options
        self._choosy = any(hasattr(h, "accepts") for h in route.handlers)
        self._origins = tuple(options.allowed_origins)
        self.mounted = True

    # The factory and the route's classes are made when the route is first
    # used (or asked for): a tree of ten thousand routes starts in a second.

    @property
    def factory(self) -> RouteFactory:
        """
        The route's Autobahn factory.
        """
        if self._factory is None:
            route = self.route
            self._factory = RouteFactory(
                route.handlers[0], self.options, route.path, reactor=self.tree.reactor
            )
        return self._factory

    def protocol_class(self, handler: type) -> type:
        """
        The class wsmux instantiates for C{handler} on this route.
        """
        if self._classes is None:
            factory = self.factory
            self._classes = {
                h: route_protocol(h, self.options, self.route.path, factory)
                for h in self.route.handlers
            }
        return self._classes[handler]

    def render(self, request: IRequest) -> Any:
        if not self.mounted:
            return self.tree.render_unhandled(request)
        if not is_upgrade(request):
            return _plain(
                request,
                426,
                "Upgrade Required",
                [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")],
            )
        if request.method != b"GET":
            return self.reject(request, 400, "WebSocket upgrade requires GET", self.route.path)
        if self.options.require_tls and not request.isSecure():
            return self.reject(request, 403, "This route requires TLS (wss://)", self.route.path)
        if self._origins:
            origin = (request.getHeader(b"origin") or b"").decode("latin-1")
            if not any(fnmatch.fnmatchcase(origin, p) for p in self._origins):
                return self.reject(
                    request, 403, f"Origin {origin or '(none)'} not allowed", self.route.path
                )
        subprotocol = None
        if self.options.subprotocols:
            offered = [
                p.strip()
                for p in (request.getHeader(b"sec-websocket-protocol") or b"")
                .decode("latin-1")
                .split(",")
                if p.strip()
            ]
            subprotocol = next((p for p in self.options.subprotocols if p in offered), None)
            if subprotocol is None and self.options.require_subprotocol:
                return self.reject(
                    request,
                    400,
                    "No supported subprotocol (server speaks "
                    + ", ".join(self.options.subprotocols)
                    + ")",
                    self.route.path,
                )
        tree = self.tree
        place, refusal = tree.registry.hold(
            client_address(request, tree.limits), self, self.options.max_connections
        )
        if refusal is not None:
            return self.reject(request, *refusal, route=self.route.path)
        assert place is not None
        params = getattr(request, _PARAMS_ATTR, {})
        if not self._choosy:
            cls = self._single
            if cls is None:
                try:
                    cls = self._single = self.protocol_class(self.route.handlers[0])
                except Exception:
                    # Made on first use: a handler class that cannot be
                    # derived fails here, per request, and keeps no place.
                    place.release()
                    log.failure(
                        "route {route}: cannot make the handler's class", route=self.route.path
                    )
                    return self.reject(request, 500, "Internal Server Error", self.route.path)
            # protocol_class made the factory.
            tree.upgrade(request, self._factory, cls, params, subprotocol, place)  # type: ignore[arg-type]
            return NOT_DONE_YET
        pending = PendingUpgrade(
            self.tree,
            request,
            self,
            place,
            self.options.open_handshake_timeout,
            f"the handler chain of route {self.route.path}",
        )
        self._choose(request, list(self.route.handlers), params, subprotocol, pending)
        return NOT_DONE_YET

    def _choose(
        self,
        request: IRequest,
        candidates: list[type],
        params: Mapping[str, str],
        subprotocol: Optional[str],
        pending: PendingUpgrade,
    ) -> None:
        """
        Ask each handler in turn whether it takes the request.
        """
        if not pending.waiting:
            return  # the deadline passed, or the client left
        if not candidates:
            self.tree.run_unhandled(request, self, pending)
            return
        handler = candidates.pop(0)
        accepts = getattr(handler, "accepts", None)

        def take() -> None:
            if not pending.proceed():
                return
            try:
                cls = self.protocol_class(handler)
            except Exception:
                pending.fail(Failure(), f"route {self.route.path}: making the handler's class")
                return
            self.tree.upgrade(request, self.factory, cls, params, subprotocol, pending)

        if accepts is None:
            take()
            return

        def decided(ok: object) -> None:
            if ok:
                take()
            else:
                self._choose(request, candidates, params, subprotocol, pending)

        def failed(failure: Failure) -> None:
            if pending.waiting:
                pending.fail(failure, f"handler {handler.__qualname__}.accepts")

        decision = maybeDeferred(accepts, request)
        pending.wait_for(decision)  # before it may decide (and move on) at once
        decision.addCallbacks(decided, failed)


class PendingUpgrade:
    """
    An upgrade waiting for user code to decide (a handler's C{accepts},
    the unhandled hook): it holds its place in the connection caps, and a
    deadline (the route's handshake timeout) covers the whole decision and
    the opening handshake after it.  A client that leaves, or a decision
    that comes too late, gives the place back; too late is answered 503.

    @ivar place: the connection's L{wsmux.limits.Place}.
    @ivar deadline: when the opening handshake must be over (reactor time),
        or L{None} for no deadline.
    @ivar waiting: whether the decision is still awaited.
    """

    def __init__(
        self,
        tree: RouteTree,
        request: IRequest,
        via: _UpgradeResource,
        place: Place,
        timeout: float,
        what: str,
    ) -> None:
        self.tree = tree
        self.request = request
        self.via = via
        self.place = place
        self.what = what
        self.waiting = True
        self.deadline: Optional[float] = None
        self._timer: Any = None
        self._decision: Optional[Deferred[Any]] = None
        clock = tree.clock()
        if timeout:
            self.deadline = clock.seconds() + timeout
            self._timer = clock.callLater(timeout, self._too_late, timeout)
        tree.pending.add(self)
        request.notifyFinish().addErrback(self._gone)  # type: ignore[attr-defined]

    def wait_for(self, decision: Deferred[Any]) -> None:
        """
        Remember the Deferred the decision arrives on (cancelled if the
        deadline passes or the client leaves first).
        """
        if self.waiting:
            self._decision = decision

    def settle(self) -> bool:
        """
        The decision is here: stop the deadline.

        @return: whether it came in time (if not, it must be ignored).
        """
        if not self.waiting:
            return False
        self.waiting = False
        self._decision = None
        self.tree.pending.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        return True

    def proceed(self) -> bool:
        """
        The decision is to take the connection: whether it still may (in
        time, and the server not shutting down meanwhile: then 503).
        """
        if not self.settle():
            return False
        if self.tree.registry.draining:
            self.refuse(503, "Server shutting down")
            return False
        return True

    def refuse(self, code: int, reason: str) -> None:
        """
        Answer with a refusal, giving the place back.
        """
        self._withdraw()
        self.tree.refused(self.request, code, reason)
        self.via.respond(self.request, code, reason)

    def _withdraw(self) -> None:
        # Nobody waits for the decision any more: stop the deadline, give
        # the place back, and cancel what user code may still be doing.
        decision = self._decision
        self.settle()
        self.place.release()
        if decision is not None:
            decision.cancel()

    def fail(self, failure: Failure, what: str) -> None:
        """
        User code failed while deciding: log it once, answer 500.
        """
        log.failure(
            "{what} failed for {path}",
            failure,
            what=what,
            path=self.request.path.decode("utf-8", "replace"),
        )
        self.refuse(500, "Internal Server Error")

    def _gone(self, failure: Failure) -> None:
        if self.waiting:
            self._withdraw()

    def _too_late(self, timeout: float) -> None:
        self._timer = None
        if not self.waiting:
            return
        log.warn(
            "{what} did not decide within {t}s for path={path} peer={peer}; answering 503",
            what=self.what,
            t=timeout,
            path=self.request.path.decode("utf-8", "replace"),
            peer=_peer(self.request),
        )
        self.refuse(503, "Service Unavailable: the server did not decide in time")


class UnhandledUpgrade(_UpgradeResource):
    """
    The leaf for an upgrade request that no route serves: it consults the
    tree's unhandled hook.
    """

    def render(self, request: IRequest) -> Any:
        if self.tree.unhandled is None:
            return self.reject(request, 404, NO_ROUTE)
        place, refusal = self.tree.hold(request, None)
        if refusal is not None:
            return self.reject(request, *refusal)
        assert place is not None
        pending = PendingUpgrade(
            self.tree,
            request,
            self,
            place,
            self.tree.defaults.open_handshake_timeout,
            "the unhandled hook",
        )
        self.tree.run_unhandled(request, self, pending)
        return NOT_DONE_YET


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
        log.failure(
            "route {route}: the handler could not be made",
            route=getattr(factory, "route_path", "?"),
        )
        if registry is not None:
            registry.stats.rejected(getattr(factory, "route_path", "-"), 500)
        request.write(_plain(request, 500, "Internal Server Error", close=True))
        request.finish()
        return None
    protocol.factory = factory
    protocol.wsmux_place = place
    if deadline is not None and protocol.openHandshakeTimeout > 0:
        protocol.openHandshakeTimeout = max(0.001, deadline - factory.reactor.seconds())
    open_direct = getattr(protocol, "handshake_from", None)
    if open_direct is not None:
        protocol.wsmux_direct_open = True
    if ITCPTransport.providedBy(transport):
        protocol.wsmux_tcp_nodelay = True  # set by twisted.web's HTTPChannel
    if params:
        protocol.path_params = dict(params)
    protocol.selected_subprotocol = subprotocol
    protocol.registry = registry
    direct = getattr(request.getClientAddress(), "host", None)
    protocol.client_address = address or str(direct)

    channel.transport = None
    # The channel registered itself as the transport's producer; the
    # WebSocket protocol owns the connection from now on.
    try:
        transport.unregisterProducer()
    except Exception:  # pragma: no cover - transports without producers
        pass
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    try:
        _start(protocol, transport, request, channel, address, direct, open_direct)
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


def _start(
    protocol: Any,
    transport: Any,
    request: IRequest,
    channel: Any,
    address: Optional[str],
    direct: Optional[str],
    open_direct: Any,
) -> None:
    # The second half of upgrade: the protocol starts on the transport and
    # gets the handshake, directly or replayed, and what followed it.
    protocol.makeConnection(transport)
    if address is not None and address != direct:
        protocol.peer = address
    transport.resumeProducing()

    raw = getattr(request, "raw_head", None) or _head_of(request)
    content = request.content.read() if request.content is not None else b""
    # Bytes twisted.web read past the request head: already buffered ones,
    # and those still in the line parser, which it hands to rawDataReceived.
    take = getattr(channel, "take_upgrade_rest", None)  # wsmux's own channel
    buffered = take() if take is not None else take_http_buffer(channel)
    channel.rawDataReceived = protocol.dataReceived
    if open_direct is not None and open_direct(request, raw, content + buffered):
        return
    protocol.dataReceived(raw + content)
    if buffered:
        protocol.dataReceived(buffered)


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
        return self.tree.no_route(request, self.depth, consumed=False)


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
        # Upgrades waiting for a handler chain or the hook to decide.
        self.pending: set[PendingUpgrade] = set()
        self._adopt_factory: Optional[RouteFactory] = None
        self._adopt_classes: dict[type, type] = {}
        self.endpoints: dict[str, WebSocketEndpoint] = {}
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

    def no_route(self, request: IRequest, depth: int, consumed: bool = True) -> IResource:
        """
        The resource for a path that no route or child serves.
        """
        if is_upgrade(request):
            return self.unhandled_resource
        if self.fallback is None:
            from twisted.web.pages import notFound

            return notFound()
        # Give the fallback the whole path below the tree.
        rewind = depth + 1 if consumed else depth
        if rewind:
            request.postpath[:0] = request.prepath[-rewind:]
            del request.prepath[-rewind:]
        return self.fallback

    def refused(self, request: IRequest, code: int, reason: str, route: str = "-") -> None:
        """
        Log and count a refused upgrade.
        """
        log_rejection(request, code, reason, route)
        self.registry.stats.rejected(route, code)

    def mount_resource(self, path: str, resource: IResource) -> None:
        """
        Serve C{resource} for non-upgrade requests to exactly C{path}
        (C{/healthz}, C{/ops/metrics}).

        @raise RouteError: if the path is malformed or has parameters.
        """
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
        node.http = resource

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
                pending.refuse(result.code, result.reason)
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
