"""
What each connection carries: route options live on the route's class, not
in every connection's attribute dictionary, and still follow the factory.
"""

from __future__ import annotations

import copy

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol

from wsmux import EchoHandler, Route, RouteTree, _compat
from wsmux._compat_autobahn import LeanServerProtocol, SlottedLeanServerProtocol
from wsmux._compat_twisted import slotted
from wsmux.testing import connect


class TunedEcho(EchoHandler):
    # A handler's own option values win over the route's, as in Autobahn.
    autoFragmentSize = 3


def test_options_are_class_attributes_not_per_connection():
    tree = RouteTree([Route("/echo", (EchoHandler,), {"max_message_size": 1234})])
    conn = connect(tree, "/echo")
    server = conn.server
    assert server.maxMessagePayloadSize == 1234
    assert not set(type(server).CONFIG_ATTRS) & set(vars(server))
    assert len(vars(server)) <= 85  # a dictionary of 1.5 KiB rather than 3.3 KiB


def test_options_changed_on_the_factory_reach_new_connections():
    tree = RouteTree([Route("/echo", (EchoHandler,), {})])
    conn = connect(tree, "/echo")
    conn.server.factory.setProtocolOptions(maxMessagePayloadSize=10)
    later = connect(tree, "/echo")
    later.client.sendMessage(b"x" * 11)
    later.flush()
    assert later.client.close is not None and later.client.close[1] == 1009


def test_a_handlers_own_option_wins():
    conn = connect(RouteTree([Route("/echo", (TunedEcho,), {})]), "/echo")
    conn.client.sendMessage(b"abcdefg")
    conn.flush()
    assert conn.client.messages == [(b"abcdefg", False)]
    assert conn.server.trafficStats.outgoingWebSocketFrames == 3


def test_send_queue_keeps_order_for_sync_sends():
    conn = connect(RouteTree([Route("/echo", (EchoHandler,), {})]), "/echo")
    for i in range(5):
        conn.server.sendMessage(str(i).encode(), sync=True)
    conn.server.sendMessage(b"last")
    for _ in range(10):
        conn.clock.advance(0.1)
        conn.flush()
    assert [m for m, _ in conn.client.messages] == [b"0", b"1", b"2", b"3", b"4", b"last"]


# -- what stays in slots: Autobahn's per-connection state, Twisted's transports --

# Names each keeps per connection (a sample of each).
AUTOBAHN_STATE = {"state", "trafficStats", "http_headers", "websocket_version", "wsmux"}
TCP_STATE = {"socket", "protocol", "dataBuffer", "offset", "connected"}
TLS_STATE = {"_tlsConnection", "_appSendBuffer", "wrappedProtocol", "connected"}


def test_connection_state_lives_in_slots():
    conn = connect(RouteTree([Route("/echo", (EchoHandler,), {})]), "/echo")
    server = conn.server
    in_slots = _compat.enabled("autobahn.connection_slots")
    assert bool(AUTOBAHN_STATE & set(vars(server))) is not in_slots
    if in_slots:
        assert len(vars(server)) <= 10
    # Read, written and deleted as before.
    assert server.http_headers["host"] and server.wsmux is not None
    conn.client.sendMessage(b"hello")
    conn.flush()
    assert conn.client.messages == [(b"hello", False)]
    assert server.trafficStats.incomingWebSocketMessages == 1
    conn.client.sendClose(1000)
    conn.flush()
    assert server.wasClean and server.remoteCloseCode == 1000


class OwnSlots(EchoHandler):
    # A handler with slots of its own cannot share a layout with wsmux's:
    # its connections keep a dict, and are served the same.
    __slots__ = ("mine",)


class ShadowsState(EchoHandler):
    # A handler's class attribute of a slot's name wins, as it would
    # over Autobahn's instance attribute.
    websocket_origin = "from the class"


class Defaults:
    # A mixin listed after Autobahn's class: it lands below wsmux's lean
    # class in the route class, where a slot would hide what it gives.
    http_request_path = "/unknown"

    @property
    def state(self):
        return self.__dict__["state"]

    @state.setter
    def state(self, value):
        self.__dict__["state"] = value
        self.__dict__.setdefault("states", []).append(value)


class AfterAutobahn(WebSocketServerProtocol, Defaults):
    def __init__(self):
        super().__init__()
        self.seen_path = self.http_request_path

    def onMessage(self, payload, isBinary):
        self.sendMessage(self.seen_path.encode())


def test_handlers_with_slots_or_shadowing_attributes_still_work():
    lean = _compat.enabled("autobahn.lean_protocol")
    for handler in (OwnSlots, ShadowsState, AfterAutobahn):
        conn = connect(RouteTree([Route("/echo", (handler,), {})]), "/echo")
        server = conn.server
        # Each keeps wsmux's lean class (its state in the dict, not slots).
        assert (LeanServerProtocol in type(server).__mro__) is lean, handler
        assert not isinstance(server, SlottedLeanServerProtocol)
        conn.client.sendMessage(b"x")
        conn.flush()
        expected = b"/unknown" if handler is AfterAutobahn else b"x"
        assert conn.client.messages == [(expected, False)], handler
    assert server.states[:2] == [WebSocketProtocol.STATE_CONNECTING, WebSocketProtocol.STATE_OPEN]
    assert server.http_request_path == "/echo"


class Base:
    connected = 0
    label = "class"

    def __init__(self, value):
        self.value = value
        self.fileno = lambda: 7  # set over a method, as tcp.Server does

    def fileno(self):
        return -1


def test_slotted_keeps_class_defaults_and_methods():
    cls = slotted(Base, ("connected", "value", "fileno", "missing"))
    assert cls.__slots__ == ("connected", "value", "missing")  # not over the method
    one = cls(5)
    assert (one.connected, one.value, one.fileno(), one.label) == (0, 5, 7, "class")
    assert set(vars(one)) == {"fileno"}
    one.connected = 1
    assert one.connected == 1 and cls(6).connected == 0
    del one.value
    assert not hasattr(one, "value")
    assert isinstance(one, Base) and cls.__name__ == "Base"
    # Made without __init__ (as copy and pickle make them): defaults too.
    bare = cls.__new__(cls)
    assert bare.connected == 0 and not hasattr(bare, "value")
    copied = copy.copy(one)
    assert (copied.connected, copied.fileno()) == (1, 7)


def test_slots_hold_says_which_name_went_to_the_dict():
    from wsmux._compat import slots_hold

    cls = slotted(Base, ("connected", "value"))
    assert slots_hold(cls, ("connected", "value")) is None
    # A name the class has no slot for lands in the dict: the check says so.
    assert slots_hold(cls, ("connected", "label")) == "Base: a slot does not hold label"


def test_a_bare_tls_transport_reads_its_defaults():
    # Twisted's ProtocolWrapper.__getattr__ reads self.transport: with the
    # slot empty that would recurse.
    from wsmux._compat_twisted import TLS_TRANSPORT

    bare = TLS_TRANSPORT.__new__(TLS_TRANSPORT)
    assert bare.transport is None and not hasattr(bare, "anything")


def test_a_real_servers_connections_keep_little_in_dicts(start_server, tmp_path):
    import json
    import ssl

    import trustme
    from websockets.sync.client import connect as ws_connect

    ca = trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "c.pem"))
    server = start_server(
        "--route", "/footprint=tests.handlers_for_tests.Footprint",
        "--tls-port", "tcp:0:interface=127.0.0.1", "--cert", str(tmp_path / "c.pem"),
    )  # fmt: skip
    tls_port = next(port for kind, _, port in server.ports() if kind == "tls")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # tests.pki.sync_client_context says why
    seen = {}
    for scheme, port, options in [
        ("ws", server.port, {}),
        ("wss", tls_port, {"ssl": context}),
    ]:
        url = f"{scheme}://localhost:{port}/footprint"
        with ws_connect(url, open_timeout=10, **options) as ws:
            ws.send("?")
            seen[scheme] = json.loads(ws.recv(timeout=10))
    slots = _compat.enabled("autobahn.connection_slots")
    slotted_transports = _compat.enabled("twisted.slotted_transports")
    for scheme in ("ws", "wss"):
        assert bool(AUTOBAHN_STATE & set(seen[scheme]["own"])) is not slots
    ((name, tcp_names),) = seen["ws"]["transports"]
    assert name == "Server"
    ((tls_name, tls_names), (_, wss_tcp_names)) = seen["wss"]["transports"]
    for names, state in [
        (tcp_names, TCP_STATE),
        (wss_tcp_names, TCP_STATE),
        (tls_names, TLS_STATE),
    ]:
        assert bool(state & set(names)) is not slotted_transports, names
    if slotted_transports:
        assert set(tcp_names) == set(wss_tcp_names) == {"fileno"}
        assert set(tls_names) <= {"write", "__provides__"}
