"""
wsmux: a Twisted-native WebSocket server.

One port, many WebSocket endpoints chosen by URL path; Autobahn does the
framing.  Run it with C{twistd -n wsmux}, or build the pieces yourself::

    from wsmux import Route, RouteTree, EchoHandler
    tree = RouteTree([Route("/echo", (EchoHandler,))])
    site = Site(tree)
"""

from wsmux.channels import ChannelHub
from wsmux.config import ConfigError, RouteSpec, Settings, build_settings, load_file
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
from wsmux.service import build_tree, make_service
from wsmux.site import WebSocketSite
from wsmux.streaming import MessageConsumer, StreamingReceiver, stream_message

__all__ = [
    "Adopt",
    "BroadcastHandler",
    "ChannelHub",
    "ConfigError",
    "EchoHandler",
    "MessageConsumer",
    "ProtocolOptions",
    "PubSubHandler",
    "Reject",
    "Route",
    "RouteError",
    "RouteFactory",
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
]
