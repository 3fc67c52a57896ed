"""
HTTP resources declared in the configuration: static files, a WSGI
application, a redirect, or any C{twisted.web} resource.

They sit in the route tree beside the routes (see
L{wsmux.routing.RouteTree.mount_subtree}): a resource at C{/assets} answers
the plain requests for C{/assets} and everything below it that no route or
deeper resource serves.  Upgrades never reach them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.static import File

from wsmux.handlers import import_named

RESOURCE_KINDS: tuple[str, ...] = ("static", "wsgi", "redirect", "resource")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_RANGES = 8
WSGI_THREADS = 10


@dataclass(frozen=True)
class ResourceSpec:
    """
    An HTTP resource as configured.

    @ivar path: where it is mounted (literal segments only); it serves that
        path and everything below it.
    @ivar kind: one of L{RESOURCE_KINDS}.
    @ivar target: the directory (static), C{module:callable} or dotted name
        (wsgi), URL (redirect) or dotted name (resource).
    @ivar options: C{listing} and C{dotfiles} for static, C{status} for
        redirect.
    @ivar origin: where it was configured, for error messages.
    """

    path: str
    kind: str
    target: str
    options: dict[str, Any] = field(default_factory=dict)
    origin: str = "command line"


class StaticFiles(File):
    """
    C{twisted.web.static.File} held to its directory.

    - No directory listings unless C{listing} is set: a directory without
      an index file is a 404.
    - Nothing outside the directory: C{..} and encoded slashes are refused by
      C{FilePath}; a symbolic link that leads outside is refused here.
    - No file or directory whose name begins with a dot (C{.env},
      C{.git}) unless C{dotfiles} is set.
    - Nothing is executed: no C{.rpy} or other processors.

    Content types, C{Last-Modified}/C{If-Modified-Since} and C{Range} are
    Twisted's; a request naming more than L{MAX_RANGES} ranges gets the
    whole file once.
    """

    listing = False
    dotfiles = False
    root = ""
    childNotFound = notFound("Not Found", "No such file.")  # type: ignore[assignment]

    def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        self.processors = {}
        if not self.root:
            self.root = os.path.realpath(path)

    def createSimilarFile(self, path: str) -> File:
        child = super().createSimilarFile(path)
        child.root, child.listing, child.dotfiles = self.root, self.listing, self.dotfiles
        child.processors = {}
        return child

    def getChild(self, path: bytes, request: IRequest) -> Any:
        if not self.dotfiles and path.startswith(b"."):
            return self.childNotFound
        if b"\0" in path:
            return self.childNotFound
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return self.childNotFound  # (Twisted's File would log a traceback)
        child = super().getChild(path, request)
        target = getattr(child, "path", None)
        if isinstance(target, str) and not self._inside(target):
            return self.childNotFound
        return child

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    def render_GET(self, request: Any) -> Any:
        # Many ranges in one request (overlapping ones, above all) would
        # make one response many times the file: past a few, the whole file
        # is sent instead, once.
        ranges = request.getHeader(b"range")
        if ranges is not None and ranges.count(b",") >= MAX_RANGES:
            request.requestHeaders.removeHeader(b"range")
        return super().render_GET(request)

    def directoryListing(self) -> Any:
        if self.listing:
            return super().directoryListing()
        return self.childNotFound


class RedirectTo(Resource):
    """
    Redirect every request (the path and everything below it) to one URL.
    """

    isLeaf = True

    def __init__(self, url: str, status: int = 302) -> None:
        super().__init__()
        self.url = url.encode("utf-8")
        self.status = status

    def render(self, request: IRequest) -> bytes:
        request.setResponseCode(self.status)
        request.setHeader(b"location", self.url)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Moved to " + self.url + b"\n"


def check_spec(spec: ResourceSpec) -> None:
    """
    Check what can be checked before anything is imported.

    @raise ValueError: saying what is wrong.
    """
    if spec.kind not in RESOURCE_KINDS:
        raise ValueError(f"unknown resource kind {spec.kind!r} (use {', '.join(RESOURCE_KINDS)})")
    if not isinstance(spec.target, str) or not spec.target:
        raise ValueError(f"{spec.kind} must be a non-empty string")
    allowed = {"static": {"listing", "dotfiles"}, "redirect": {"status"}}.get(spec.kind, set())
    unknown = set(spec.options) - allowed
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"unknown key {sorted(unknown)[0]!r} for {spec.kind} (known: {known})")
    for key in ("listing", "dotfiles"):
        if key in spec.options and not isinstance(spec.options[key], bool):
            raise ValueError(f"{key} must be true or false")
    if spec.kind == "static" and not os.path.isdir(spec.target):
        raise ValueError(f"static directory {spec.target!r} does not exist")
    if spec.kind == "redirect":
        status = spec.options.get("status", 302)
        if status not in REDIRECT_STATUSES or isinstance(status, bool):
            raise ValueError(
                f"status must be one of {', '.join(map(str, REDIRECT_STATUSES))}, got {status!r}"
            )
        target = spec.target
        if (
            not target.startswith(("http://", "https://", "/"))
            or target.startswith(("//", "/\\"))  # another host, however it is spelled
            or any(ord(c) < 0x21 for c in target)
        ):
            raise ValueError(
                f"redirect must be an http(s) URL or an absolute path, got {spec.target!r}"
            )


def check_imports(spec: ResourceSpec) -> None:
    """
    Import what C{spec} names (a WSGI application, a resource), making
    nothing: a typo is found when options are parsed.

    @raise ValueError: saying what is wrong.
    """
    if spec.kind == "wsgi":
        if not callable(import_named(spec.target.replace(":", "."), "WSGI application")):
            raise ValueError(f"WSGI application {spec.target!r} is not callable")
    elif spec.kind == "resource":
        found = import_named(spec.target, "resource")
        if not (IResource.providedBy(found) or callable(found)):
            raise ValueError(
                f"resource {spec.target!r} is neither a twisted.web resource nor makes one"
            )


def build_resource(spec: ResourceSpec, reactor: Optional[Any] = None) -> IResource:
    """
    Make the resource C{spec} describes.

    @raise ValueError: when the directory, application or resource cannot
        be used, saying why.
    """
    check_spec(spec)
    if spec.kind == "static":
        files = StaticFiles(spec.target)
        files.listing = bool(spec.options.get("listing", False))
        files.dotfiles = bool(spec.options.get("dotfiles", False))
        return files
    if spec.kind == "redirect":
        return RedirectTo(spec.target, spec.options.get("status", 302))
    if spec.kind == "wsgi":
        from twisted.web.wsgi import WSGIResource

        app = import_named(spec.target.replace(":", "."), "WSGI application")
        if not callable(app):
            raise ValueError(f"WSGI application {spec.target!r} is not callable")
        if reactor is None:
            from twisted.internet import reactor as installed

            reactor = installed
        return WSGIResource(reactor, _wsgi_pool(reactor), app)
    found = import_named(spec.target, "resource")
    if isinstance(found, type) or (callable(found) and not IResource.providedBy(found)):
        try:
            found = found()
        except Exception as e:
            raise ValueError(f"resource {spec.target!r} could not be made: {e}") from None
    if not IResource.providedBy(found):
        raise ValueError(f"resource {spec.target!r} is not a twisted.web resource")
    return found  # type: ignore[no-any-return]


def _wsgi_pool(reactor: Any) -> Any:
    # WSGI applications get a thread pool of their own: a hanging one must
    # not take the reactor's, which name lookups (a proxy route's backend
    # host) need.  Started with the reactor, stopped before it stops.
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(minthreads=0, maxthreads=WSGI_THREADS, name="wsmux-wsgi")
    reactor.callWhenRunning(pool.start)
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    return pool
