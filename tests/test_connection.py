"""
The connection object (C{self.wsmux}) and the route class around a handler:
what wsmux gives a handler lives under one attribute, and the names wsmux
adds to a handler class never hide the handler's own.
"""

import json

from autobahn.twisted.websocket import WebSocketServerProtocol

from wsmux import EchoHandler, Route, RouteTree
from wsmux._compat_autobahn import SlottedLeanServerProtocol
from wsmux.connection import Connection, RoutePolicy
from wsmux.protocol import ConnectionNames, RouteProtocolMixin
from wsmux.testing import connect


class Reporter(WebSocketServerProtocol):
    def onMessage(self, payload, isBinary):
        conn = self.wsmux
        self.sendMessage(
            json.dumps(
                {
                    "route": conn.route,
                    "params": dict(conn.path_params),
                    "client": conn.client_address,
                    "channels": conn.channels is not None,
                    "paused": conn.paused,
                }
            ).encode()
        )


def test_a_handler_finds_what_wsmux_gives_it_under_self_wsmux():
    tree = RouteTree([Route("/rooms/{room}", Reporter)])
    conn = connect(tree, "/rooms/lobby")
    assert isinstance(conn.server.wsmux, Connection)
    assert isinstance(conn.server.wsmux.policy, RoutePolicy)
    conn.client.sendMessage(b"?")
    conn.flush()
    assert json.loads(conn.client.messages[0][0]) == {
        "route": "/rooms/{room}",
        "params": {"room": "lobby"},
        "client": "127.0.0.1",
        "channels": True,
        "paused": False,
    }
    # The older spellings read the same connection.
    assert conn.server.path_params == {"room": "lobby"}
    assert conn.server.route_path == "/rooms/{room}"
    assert conn.server.channels is conn.server.wsmux.channels


class OwnNames(WebSocketServerProtocol):
    # Names a handler may well have of its own: wsmux must not shadow them.
    channels = "mine"
    registry = "mine"
    _paused = "mine"
    _idle_call = "mine"
    _writes = "mine"

    def writable(self):
        return "mine"

    def onOpen(self):
        self.path_params = "mine"  # set on the instance
        self.client_address = "mine"

    def onMessage(self, payload, isBinary):
        names = ("channels", "registry", "_paused", "_idle_call", "_writes")
        values = [getattr(self, name) for name in names]
        values += [self.writable(), self.path_params, self.client_address]
        self.sendMessage(json.dumps(values).encode())


def test_a_handlers_own_attributes_are_never_shadowed():
    tree = RouteTree(
        [Route("/own/{x}", OwnNames, {"idle_timeout": 30, "send_delay": 0.0, "max_fragments": 4})]
    )
    conn = connect(tree, "/own/1")
    conn.client.sendMessage(b"?")
    conn.flush()
    assert json.loads(conn.client.messages[0][0]) == ["mine"] * 8
    # wsmux's own are still there, under self.wsmux.
    assert conn.server.wsmux.path_params == {"x": "1"}
    assert conn.server.wsmux.client_address == "127.0.0.1"


def test_the_route_class_adds_only_autobahns_names_and_its_own_prefix():
    options = {"idle_timeout": 30, "send_delay": 0.01, "max_fragments": 4}
    tree = RouteTree([Route("/all", EchoHandler, {**options, "deflate": "inflate-only"})])
    conn = connect(tree, "/all")
    cls = type(conn.server)
    autobahn = set()
    for k in WebSocketServerProtocol.__mro__:
        autobahn.update(vars(k))
    allowed = autobahn | set(WebSocketServerProtocol.CONFIG_ATTRS) | {"wsmux", "CONFIG_ATTRS"}
    # The attributes Autobahn sets on each connection, where wsmux keeps them
    # in slots (autobahn.connection_slots).
    allowed |= set(SlottedLeanServerProtocol.__slots__)
    parts = [
        k
        for k in cls.__mro__
        if k is cls or (k.__module__.startswith("wsmux.") and k is not ConnectionNames)
    ]
    assert RouteProtocolMixin in parts and len(parts) >= 6
    # The older spellings are the only other names, and they sit behind the
    # handler: its own names come first in the MRO.
    mro = cls.__mro__
    assert mro.index(ConnectionNames) > mro.index(EchoHandler)
    older = {n for n in vars(ConnectionNames) if not n.startswith("__")} - {"wsmux"}
    assert older == {
        "path_params",
        "channels",
        "client_address",
        "route_path",
        "dropped_messages",
        "writable",
    }
    foreign = [
        f"{part.__name__}.{name}"
        for part in parts
        for name in vars(part)
        if not name.startswith(("__", "_wsmux")) and name not in allowed
    ]
    assert not foreign
    conn.client.sendClose(1000)
    conn.flush()


def test_connection_state_lives_on_the_connection_not_the_handler():
    conn = connect(RouteTree([Route("/echo", EchoHandler, {"idle_timeout": 5})]), "/echo")
    state = set(vars(conn.server))
    # None of wsmux's per-connection state in the handler's own dictionary.
    for name in ("_paused", "_idle_call", "_producers", "registry", "path_params", "_ended"):
        assert name not in state
    assert conn.server.wsmux._idle_call is not None
    assert conn.server_transport.producer is conn.server.wsmux
