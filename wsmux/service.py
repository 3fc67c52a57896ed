"""
Settings to services: the API a C{.tac} file or another application uses.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.web.server import Site

from wsmux.config import Settings, port_description
from wsmux.handlers import resolve_callable, resolve_handler
from wsmux.page import demo_page
from wsmux.routing import Route, RouteTree


class WebSocketSite(Site):
    """
    A C{Site} for a route tree, with no server-version banner.
    """

    def __init__(self, resource: Any, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.displayTracebacks = False

    def getResourceFor(self, request: Any) -> Any:
        request.setHeader(b"server", b"wsmux")
        return super().getResourceFor(request)


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
            tuple(resolve_handler(h) for h in spec.handlers),
            spec.options,
        )
        for spec in settings.routes
    ]
    return RouteTree(
        routes,
        defaults=settings.defaults,
        unhandled=unhandled,
        index=demo_page() if settings.index else None,
        reactor=reactor,
    )


def make_service(
    settings: Settings,
    tree: Optional[RouteTree] = None,
    reactor: Any = None,
) -> MultiService:
    """
    A C{MultiService} with one listening child per port in C{settings},
    all serving the same route tree.

    @param tree: the tree to serve; built from C{settings} when not given.
    @return: the service; its C{tree} attribute is the route tree.
    """
    if tree is None:
        tree = build_tree(settings, reactor=reactor)
    site = WebSocketSite(tree)
    top = MultiService()
    top.tree = tree  # type: ignore[attr-defined]
    top.site = site  # type: ignore[attr-defined]
    for port in settings.ports:
        strports.service(port_description(port), site, reactor=reactor).setServiceParent(top)
    return top
