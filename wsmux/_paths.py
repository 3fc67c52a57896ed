"""
The path grammar and the route declarations: L{Route}, what an unhandled
hook may answer (L{Reject}, L{Adopt}), and the checks that keep a route
table unambiguous.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Union

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from wsmux.aio import async_handler

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
    @ivar headers: extra response headers (C{WWW-Authenticate},
        C{Retry-After}...), name to value or list of values.
    """

    code: int = 404
    reason: str = "Not Found"
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Adopt:
    """
    The unhandled hook's answer that serves an upgrade with a handler.

    @ivar handler: a C{WebSocketServerProtocol} subclass.
    @ivar path_params: values the handler finds in C{self.wsmux.path_params}.
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
        handlers: Any = self.handlers
        if isinstance(handlers, type) or inspect.iscoroutinefunction(handlers):
            handlers = (handlers,)
        # An async def function is a handler too (wsmux.aio).
        object.__setattr__(
            self,
            "handlers",
            tuple(async_handler(h) if inspect.iscoroutinefunction(h) else h for h in handlers),
        )
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
