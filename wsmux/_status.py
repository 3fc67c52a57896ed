"""
The status page: routes, live connection counts and message rates, as HTML
and JSON, refreshed live over a WebSocket route of its own.

Off by default.  When on, it is protected: a client must come from an
allowed address (loopback only, unless configured) or present the token
(C{?token=...} or C{Authorization: Bearer ...}).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from collections import Counter
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource

from wsmux.limits import client_address
from wsmux.metrics import traffic_of
from wsmux.routing import Route, RouteTree

LOOPBACK = ("127.0.0.0/8", "::1/128")


class StatusGuard:
    """
    Who may see the status: addresses in C{allow}, or whoever has the token.
    """

    def __init__(self, token: Optional[str] = None, allow: Sequence[str] = ()) -> None:
        self.token = token
        # Loopback only (the default): the request must also name a
        # loopback host, or a web page whose domain was re-pointed at
        # 127.0.0.1 (DNS rebinding) would be "same origin" and local.
        self.loopback_only = not allow and not token
        self.networks = [
            ipaddress.ip_network(a, strict=False) for a in (allow or (() if token else LOOPBACK))
        ]

    def host_ok(self, host: Optional[str]) -> bool:
        """
        Whether the C{Host} a request names is acceptable: anything, unless
        the status is open to loopback clients only, when it must be a
        loopback address or C{localhost}.
        """
        if not self.loopback_only:
            return True
        try:
            name = urlsplit("//" + (host or "")).hostname or ""
        except ValueError:
            return False
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def permits(self, address: str, token: Optional[str]) -> bool:
        """
        Whether a client at C{address}, presenting C{token} (or none), may
        see the status.
        """
        # Compared as bytes: compare_digest refuses text that is not ASCII,
        # and whatever a client sends must be a plain "no".
        if (
            self.token
            and token
            and hmac.compare_digest(
                self.token.encode("utf-8"), token.encode("utf-8", "surrogateescape")
            )
        ):
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


def _bearer(header: Optional[str]) -> Optional[str]:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


class StatusSource:
    """
    Snapshots of a route tree: per route, open connections, totals and
    message rates since the previous snapshot.
    """

    def __init__(self, tree: RouteTree, clock: Any = time.monotonic) -> None:
        self.tree = tree
        self.clock = clock
        self._last: Optional[tuple[float, Counter[tuple[str, str]]]] = None
        self._rates: dict[tuple[str, str], float] = {}

    def snapshot(self) -> dict[str, Any]:
        registry = self.tree.registry
        totals: Counter[tuple[str, str]] = Counter(registry.stats.traffic)
        open_: Counter[str] = Counter()
        for protocol in list(registry.connections):
            if getattr(protocol, "http_response_data", None) is not None:
                open_[protocol.wsmux.route] += 1
            for kind, value in traffic_of(protocol).items():
                totals[(protocol.wsmux.route, kind)] += value
        now = self.clock()
        if self._last is not None and now - self._last[0] >= 0.5:
            dt = now - self._last[0]
            self._rates = {key: max(0.0, (totals[key] - self._last[1][key]) / dt) for key in totals}
            self._last = (now, totals)
        elif self._last is None:
            self._last = (now, totals)
        routes = []
        paths = sorted({e.route.path for e in self.tree.endpoints.values()} | set(open_))
        for path in paths:
            routes.append(
                {
                    "path": path,
                    "open": open_[path],
                    "messages_in": totals[(path, "messages_in")],
                    "messages_out": totals[(path, "messages_out")],
                    "messages_in_per_s": round(self._rates.get((path, "messages_in"), 0.0), 1),
                    "messages_out_per_s": round(self._rates.get((path, "messages_out"), 0.0), 1),
                }
            )
        return {
            "routes": routes,
            "connections": sum(open_.values()),
            "draining": registry.draining,
        }


class _Guarded(Resource):
    isLeaf = True

    def __init__(self, guard: StatusGuard, source: StatusSource, tree: RouteTree) -> None:
        super().__init__()
        self.guard, self.source, self.tree = guard, source, tree

    def allowed(self, request: Any) -> bool:
        token = request.args.get(b"token", [b""])[0].decode("utf-8", "replace") or _bearer(
            (request.getHeader(b"authorization") or b"").decode("latin-1")
        )
        address = client_address(request, self.tree.limits)
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        if self.guard.host_ok(host) and self.guard.permits(address, token):
            return True
        request.setResponseCode(403)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return False


class StatusJson(_Guarded):
    """
    The status as JSON.
    """

    def render_GET(self, request: Any) -> bytes:
        if not self.allowed(request):
            return b"Forbidden: the status needs an allowed address or the token\n"
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self.source.snapshot()).encode("utf-8")


class StatusPage(_Guarded):
    """
    The status as an HTML page that updates itself over the live route.
    """

    def render_GET(self, request: Any) -> bytes:
        if not self.allowed(request):
            return b"Forbidden: the status needs an allowed address or the token\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return STATUS_HTML.encode("utf-8")


def same_origin(origin: Optional[str], host: Optional[str]) -> bool:
    """
    Whether a browser's C{Origin} names the site the request went to
    (C{Host}), default ports aside.  No C{Origin} (not a browser, or not
    a cross-site request) counts as the same origin.
    """
    if not origin:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or not host:
        return False
    default = 443 if parts.scheme == "https" else 80
    try:
        origin_port = parts.port or default
        ours = urlsplit("//" + host)
        host_port = ours.port or default
    except ValueError:
        return False
    return (parts.hostname, origin_port) == ((ours.hostname or "").lower(), host_port)


class StatusLiveHandler(WebSocketServerProtocol):
    """
    Sends a status snapshot as JSON every C{interval} seconds.

    Only to pages of the same origin: a WebSocket is not bound by the
    same-origin policy, so without this check any page an operator opens
    could read the live status through the operator's own browser (and
    from an allowed address).
    """

    guard: StatusGuard
    source: StatusSource
    interval: float = 1.0
    _loop: Any = None

    def onConnect(self, request: Any) -> None:
        token = (request.params.get("token") or [None])[0] or _bearer(
            request.headers.get("authorization")
        )
        address = getattr(self, "client_address", "") or ""
        if not same_origin(request.origin, request.headers.get("host")):
            raise ConnectionDeny(403, "the live status is served to pages of its own origin only")
        if not self.guard.host_ok(request.headers.get("host")):
            raise ConnectionDeny(403, "the status answers to a loopback host name only")
        if not self.guard.permits(address, token):
            raise ConnectionDeny(403, "the status needs an allowed address or the token")

    def onOpen(self) -> None:
        self._loop = LoopingCall(self._push)
        self._loop.clock = self.factory.reactor
        self._loop.start(self.interval, now=True)

    def _push(self) -> None:
        self.sendMessage(json.dumps(self.source.snapshot()).encode("utf-8"))

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()


def mount_status(
    tree: RouteTree,
    path: str,
    token: Optional[str] = None,
    allow: Sequence[str] = (),
    interval: float = 1.0,
) -> None:
    """
    Serve the status page at C{path}, its JSON at C{path/json} and its live
    WebSocket at C{path/live}.
    """
    guard = StatusGuard(token, allow)
    source = StatusSource(tree)
    tree.mount_resource(path, StatusPage(guard, source, tree))
    tree.mount_resource(path.rstrip("/") + "/json", StatusJson(guard, source, tree))
    live = type(
        "StatusLive",
        (StatusLiveHandler,),
        {"guard": guard, "source": source, "interval": interval},
    )
    tree.mount(Route(path.rstrip("/") + "/live", (live,), {"ping_interval": 0}))


STATUS_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wsmux status</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
 table { border-collapse: collapse; width: 100%; }
 th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; }
 td.n { text-align: right; font-variant-numeric: tabular-nums; }
 #state { font-weight: bold; }
</style>
</head>
<body>
<h1>wsmux status</h1>
<p>Live: <span id="state">connecting</span> &middot; open connections: <span id="total">-</span></p>
<table>
 <thead><tr><th>route</th><th>open</th><th>messages in</th><th>in/s</th><th>messages out</th><th>out/s</th></tr></thead>
 <tbody id="routes"></tbody>
</table>
<script>
(function () {
  "use strict";
  var token = new URLSearchParams(location.search).get("token");
  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host
    + location.pathname.replace(/\\/$/, "") + "/live" + (token ? "?token=" + encodeURIComponent(token) : "");
  function cell(row, text, numeric) {
    var td = document.createElement("td");
    td.textContent = text;
    if (numeric) { td.className = "n"; }
    row.appendChild(td);
  }
  function show(status) {
    document.getElementById("total").textContent = status.connections;
    var body = document.getElementById("routes");
    body.textContent = "";
    status.routes.forEach(function (r) {
      var row = document.createElement("tr");
      row.setAttribute("data-route", r.path);
      cell(row, r.path); cell(row, r.open, true);
      cell(row, r.messages_in, true); cell(row, r.messages_in_per_s, true);
      cell(row, r.messages_out, true); cell(row, r.messages_out_per_s, true);
      body.appendChild(row);
    });
  }
  function connect() {
    var ws = new WebSocket(url);
    ws.onopen = function () { document.getElementById("state").textContent = "connected"; };
    ws.onmessage = function (ev) { show(JSON.parse(ev.data)); };
    ws.onclose = function (ev) {
      document.getElementById("state").textContent = "disconnected (code " + ev.code + "), retrying";
      setTimeout(connect, 2000);
    };
  }
  connect();
})();
</script>
</body>
</html>
"""
