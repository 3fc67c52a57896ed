"""
wsmux: a Twisted-native WebSocket server.

One port, many WebSocket endpoints chosen by URL path; Autobahn does the
framing.  Run it with C{twistd -n wsmux}, or build the pieces yourself::

    from wsmux import Route, RouteTree, EchoHandler
    tree = RouteTree([Route("/echo", (EchoHandler,))])
    site = Site(tree)

Importing wsmux installs no reactor and imports neither the TLS code, Redis
client nor twistd's options: the configuration names (C{Settings},
C{build_settings}, C{load_file}...) and C{build_tree}/C{make_service} are
loaded on first use.
"""

from typing import Any

from wsmux.channels import ChannelHub
from wsmux.connection import Connection, Deny, RoutePolicy
from wsmux.factory import ProtocolOptions, RouteFactory
from wsmux.handlers import BroadcastHandler, EchoHandler, PubSubHandler
from wsmux.limits import ServerLimits
from wsmux.protocol import RouteProtocolMixin
from wsmux.routing import (
    Adopt,
    Reject,
    Route,
    RouteError,
    RouteTree,
    WebSocketEndpoint,
    path_params,
)
from wsmux.site import WebSocketSite
from wsmux.streaming import MessageConsumer, StreamingReceiver, stream_message

__all__ = [
    "Adopt",
    "BroadcastHandler",
    "ChannelHub",
    "ConfigError",
    "Connection",
    "Deny",
    "EchoHandler",
    "MessageConsumer",
    "ProtocolOptions",
    "PubSubHandler",
    "Reject",
    "Route",
    "RouteError",
    "RouteFactory",
    "RoutePolicy",
    "RouteProtocolMixin",
    "RouteSpec",
    "RouteTree",
    "ServerLimits",
    "Settings",
    "StreamingReceiver",
    "WebSocketEndpoint",
    "WebSocketSite",
    "build_settings",
    "build_tree",
    "load_file",
    "make_service",
    "path_params",
    "stream_message",
    "testing",
]

# Names loaded on first use (see the module docstring), and where from.
_LAZY = {
    "ConfigError": "wsmux.config",
    "RouteSpec": "wsmux.config",
    "Settings": "wsmux.config",
    "build_settings": "wsmux.config",
    "load_file": "wsmux.config",
    "build_tree": "wsmux.service",
    "make_service": "wsmux.service",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "testing":  # in-memory test helpers (wsmux.testing)
        value = importlib.import_module("wsmux.testing")
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wsmux' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
