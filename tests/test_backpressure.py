"""
Backpressure, slow-consumer policies, producers, idle timeout, fragment cap
and unmounting, in memory.
"""

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from wsmux import BroadcastHandler, EchoHandler, Route, RouteTree
from wsmux.testing import connect


@implementer(IPushProducer)
class Producer:
    def __init__(self):
        self.state = "producing"

    def pauseProducing(self):
        self.state = "paused"

    def resumeProducing(self):
        self.state = "producing"

    def stopProducing(self):
        self.state = "stopped"


def server_of(conn):
    return conn.server


def test_paused_transport_pauses_handler_producers_and_reading():
    conn = connect(RouteTree([Route("/echo", EchoHandler)]), "/echo")
    server = server_of(conn)
    producer = Producer()
    server.registerProducer(producer, True)
    reading = []
    conn.server_transport.pauseProducing = lambda: reading.append(False)
    conn.server_transport.resumeProducing = lambda: reading.append(True)
    server.wsmux.pauseProducing()  # what the transport does when its buffer fills
    server.wsmux.pauseProducing()  # ...and again after every write while it is full
    assert producer.state == "paused"
    assert reading == [False]  # stopped reading from the client, once
    server.wsmux.resumeProducing()
    assert producer.state == "producing" and reading == [False, True]
    server.unregisterProducer(producer)
    conn.client.sendClose(1000)
    conn.flush()


def test_drop_policy_drops_and_counts():
    tree = RouteTree(
        [Route("/b", BroadcastHandler, {"max_send_queue": 1000, "slow_consumer": "drop"})]
    )
    slow, fast = connect(tree, "/b"), connect(tree, "/b")
    slow_server = server_of(slow)
    slow_server.wsmux.pauseProducing()
    for _ in range(10):
        fast.client.sendMessage(b"x" * 300)
        fast.flush()
    slow_server.wsmux.resumeProducing()
    slow.flush()
    # 300-byte messages: three fit under the 1000-byte cap, seven are dropped.
    assert slow_server.dropped_messages == 7
    assert len(slow.client.messages) == 3
    assert len(fast.client.messages) == 10


def test_close_policy_closes_with_1008():
    tree = RouteTree([Route("/b", BroadcastHandler, {"max_send_queue": 1000})])
    slow, fast = connect(tree, "/b"), connect(tree, "/b")
    slow_server = server_of(slow)
    slow_server.wsmux.pauseProducing()
    for _ in range(5):
        fast.client.sendMessage(b"x" * 300)
        fast.flush()
    slow_server.wsmux.resumeProducing()
    slow.flush()
    slow.clock.advance(10)
    slow.flush()
    assert slow.client.close is not None and slow.client.close[1] == 1008
    assert len(fast.client.messages) == 5


def test_idle_timeout_closes_a_silent_client():
    conn = connect(RouteTree([Route("/e", EchoHandler, {"idle_timeout": 30})]), "/e")
    conn.clock.advance(20)
    conn.client.sendMessage(b"still here")
    conn.flush()
    conn.clock.advance(20)
    conn.flush()
    assert conn.client.close is None
    conn.clock.advance(11)
    conn.flush()
    assert conn.client.close is not None and conn.client.close[1:] == (1000, "idle timeout")


def test_fragment_cap_closes_with_1009():
    conn = connect(RouteTree([Route("/e", EchoHandler, {"max_fragments": 4})]), "/e")
    conn.client.beginMessage()
    for _ in range(6):
        conn.client.sendMessageFrame(b"ab")
    conn.client.endMessage()
    conn.flush()
    conn.clock.advance(10)
    conn.flush()
    assert conn.client.close[1] == 1009
    ok = connect(RouteTree([Route("/e", EchoHandler, {"max_fragments": 4})]), "/e")
    ok.client.beginMessage()
    for _ in range(3):  # endMessage sends the fourth, final frame
        ok.client.sendMessageFrame(b"ab")
    ok.client.endMessage()
    ok.flush()
    assert ok.client.messages == [(b"ababab", False)]


def test_unmount_keeps_open_connections():
    tree = RouteTree([Route("/e", EchoHandler)])
    before = connect(tree, "/e")
    tree.unmount("/e")
    before.client.sendMessage(b"still")
    before.flush()
    assert before.client.messages == [(b"still", False)]
    after = connect(tree, "/e")
    assert not after.client.opened


def test_registry_counts_connections_by_address():
    tree = RouteTree([Route("/e", EchoHandler)])
    a, b = connect(tree, "/e"), connect(tree, "/e")
    assert len(tree.registry.connections) == 2
    assert tree.registry.per_address["127.0.0.1"] == 2
    a.client.sendClose(1000)
    a.flush()
    assert len(tree.registry.connections) == 1
    b.client.sendClose(1000)
    b.flush()
    assert not tree.registry.connections and not tree.registry.per_address


def test_connection_caps():
    from wsmux import ServerLimits

    tree = RouteTree([Route("/e", EchoHandler)], limits=ServerLimits(max_connections_per_ip=1))
    first, second = connect(tree, "/e"), connect(tree, "/e")
    assert first.client.opened and not second.client.opened
    tree = RouteTree([Route("/e", EchoHandler)], limits=ServerLimits(max_connections=1))
    first, second = connect(tree, "/e"), connect(tree, "/e")
    assert first.client.opened and not second.client.opened


def test_health_answers_503_while_draining():
    from twisted.web.test.requesthelper import DummyRequest

    from wsmux.metrics import HealthResource

    tree = RouteTree([Route("/e", EchoHandler)])
    health = HealthResource(tree)
    request = DummyRequest([b""])
    assert health.render_GET(request) == b"ok\n" and request.responseCode in (None, 200)
    tree.registry.draining = True
    request = DummyRequest([b""])
    assert health.render_GET(request) == b"draining\n" and request.responseCode == 503
