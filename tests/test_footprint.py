"""
What each connection carries: route options live on the route's class, not
in every connection's attribute dictionary, and still follow the factory.
"""

from __future__ import annotations

from wsmux import EchoHandler, Route, RouteTree
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
