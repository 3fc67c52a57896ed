"""
Where a route's upgrades arrive: the L{WebSocketEndpoint} leaf of the route
tree, the unhandled hook's resource, and an upgrade waiting for a decision
(L{PendingUpgrade}).
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wsmux._paths import Route
from wsmux._responses import header_pairs
from wsmux._takeover import NO_PARAMS, NotMade
from wsmux._upgrades import _PARAMS_ATTR, NO_ROUTE, DirectUpgrade, _peer, _plain, is_upgrade
from wsmux.factory import ProtocolOptions, RouteFactory
from wsmux.limits import Place, client_address
from wsmux.logs import log
from wsmux.protocol import route_protocol

if TYPE_CHECKING:
    from wsmux.routing import RouteTree


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
        # Twisted's Request forgets its channel once the connection is lost.
        if getattr(request, "channel", None) is None or getattr(request, "finished", False):
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
        refusal, subprotocol = self._admission(request)
        if refusal is not None:
            return self.reject(request, *refusal, route=self.route.path)
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
            try:
                tree.upgrade(request, self._factory, cls, params, subprotocol, place)  # type: ignore[arg-type]
            except BaseException:
                place.release()  # (once: a protocol that took it gives it back too)
                raise
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

    def _admission(self, request: Any) -> tuple[Optional[tuple[int, str]], Optional[str]]:
        """
        The route's own checks of an upgrade request: its method, TLS,
        origin and subprotocol.

        @return: L{None} and the subprotocol chosen (L{None} for none); or
            the status and reason to refuse with, and L{None}.
        """
        if request.method != b"GET":
            return (400, "WebSocket upgrade requires GET"), None
        options = self.options
        if options.require_tls and not request.isSecure():
            return (403, "This route requires TLS (wss://)"), None
        if self._origins:
            origin = (request.getHeader(b"origin") or b"").decode("latin-1")
            if not any(fnmatch.fnmatchcase(origin, p) for p in self._origins):
                return (403, f"Origin {origin or '(none)'} not allowed"), None
        subprotocol = None
        if options.subprotocols:
            offered = [
                p.strip()
                for p in (request.getHeader(b"sec-websocket-protocol") or b"")
                .decode("latin-1")
                .split(",")
                if p.strip()
            ]
            subprotocol = next((p for p in options.subprotocols if p in offered), None)
            if subprotocol is None and options.require_subprotocol:
                return (
                    400,
                    "No supported subprotocol (server speaks "
                    + ", ".join(options.subprotocols)
                    + ")",
                ), None
        return None, subprotocol

    def take_directly(
        self, request: DirectUpgrade, params: Optional[Mapping[str, str]] = None
    ) -> bool:
        """
        Take an upgrade that arrived without a C{twisted.web} request, when
        no user code decides and the route accepts it as it is (what
        L{render} would do for it, without the request).

        @param params: the route's path parameters.
        @return: whether the connection was taken over; if not, nothing has
            changed, and the request must take the full path (which answers
            a refusal, or runs the handler chain).
        """
        if self._choosy or not self.mounted or type(self).render is not WebSocketEndpoint.render:
            return False
        cls = self._single
        if cls is None:
            try:
                cls = self._single = self.protocol_class(self.route.handlers[0])
            except Exception:
                return False  # render logs it and answers 500
        refusal, subprotocol = self._admission(request)
        if refusal is not None:
            return False
        tree = self.tree
        # (The fields of a request these read, it has.)
        as_request: Any = request
        place, refusal = tree.registry.hold(
            client_address(as_request, tree.limits), self, self.options.max_connections
        )
        if place is None:
            return False
        try:
            tree.upgrade(as_request, self._factory, cls, params or NO_PARAMS, subprotocol, place)  # type: ignore[arg-type]
        except NotMade:
            # The handler's constructor raised (and will run again, and
            # raise again, on the full path, which answers and logs it).
            return False
        except BaseException:
            place.release()  # (once: a protocol that took it gives it back too)
            raise
        return True

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

    def refuse(self, code: int, reason: str, headers: Mapping[str, Any] | None = None) -> None:
        """
        Answer with a refusal, giving the place back.

        @param headers: extra response headers (from user code: made safe).
        """
        self._withdraw()
        self.tree.refused(self.request, code, reason)
        self.via.respond(self.request, code, reason, header_pairs(headers or {}))

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
