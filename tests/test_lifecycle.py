"""
How a connection ends, in memory: every producer stopped exactly once
whichever way it ends, handler errors after the 101 closed with 1011 on
their own connection only, sends while closing dropped quietly, and what
the server sends not bound by what it accepts.
"""

import os

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from wsmux import BroadcastHandler, EchoHandler, Route, RouteTree
from wsmux.protocol import close_with
from wsmux.testing import connect, masked_frame, raw_connect, upgrade_request


@implementer(IPushProducer)
class CountingProducer:
    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


class Ticker(EchoHandler):
    """
    Registers a push producer (a ticker) when it opens.
    """

    producers: list = []

    def onOpen(self):
        producer = CountingProducer()
        Ticker.producers.append(producer)
        self.registerProducer(producer, True)


@pytest.fixture
def ticker_tree():
    Ticker.producers = []
    return RouteTree([Route("/t", Ticker, {"idle_timeout": 5, "max_send_queue": 100})])


def ended(conn):
    conn.flush()
    conn.clock.advance(30)
    conn.flush()
    (producer,) = Ticker.producers
    return producer.calls


def test_client_close_stops_the_producer_once(ticker_tree):
    conn = connect(ticker_tree, "/t")
    conn.client.sendClose(1000)
    assert ended(conn).count("stop") == 1


def test_server_close_stops_the_producer_once(ticker_tree):
    conn = connect(ticker_tree, "/t")
    close_with(conn.server, 1001, "going away")
    assert ended(conn).count("stop") == 1


def test_idle_timeout_stops_the_producer_once(ticker_tree):
    conn = connect(ticker_tree, "/t")
    conn.clock.advance(6)
    assert ended(conn).count("stop") == 1
    assert conn.client.close[1:] == (1000, "idle timeout")


def test_a_dropped_tcp_connection_stops_the_producer_once(ticker_tree):
    conn = connect(ticker_tree, "/t")
    # What Twisted's TCP transport does when the peer goes: stop its
    # producer (the connection), then tell the protocol.
    conn.server_transport.producer.stopProducing()
    conn.client.transport.abortConnection()
    assert ended(conn).count("stop") == 1


def test_a_paused_producer_is_stopped_when_the_slow_consumer_is_dropped(ticker_tree):
    conn = connect(ticker_tree, "/t")
    server = conn.server
    server.wsmux.pauseProducing()  # the client stopped reading
    for _ in range(20):
        server.sendData(b"x" * 65536)  # far past max_send_queue and the slack
    calls = ended(conn)
    assert calls.count("pause") == 1 and calls.count("stop") == 1
    assert calls[-1] == "stop"


def test_a_producer_registered_after_the_end_is_stopped_at_once(ticker_tree):
    conn = connect(ticker_tree, "/t")
    server = conn.server
    conn.client.sendClose(1000)
    ended(conn)
    late = CountingProducer()
    server.registerProducer(late, True)
    assert late.calls == ["stop"]


def test_the_transport_is_let_go_before_it_is_closed(ticker_tree):
    # Twisted's TLS transport will not close while a producer is registered:
    # whatever ends the connection must unregister it first.
    conn = connect(ticker_tree, "/t")
    transport = conn.server_transport
    assert transport.producer is conn.server.wsmux
    conn.client.sendClose(1000)
    conn.flush()
    assert transport.producer is None


class FailsOnOpen(WebSocketServerProtocol):
    def onOpen(self):
        raise RuntimeError("a bug in onOpen")


class FailsOnMessage(EchoHandler):
    def onMessage(self, payload, isBinary):
        if payload == b"boom":
            raise RuntimeError("a bug in onMessage")
        super().onMessage(payload, isBinary)


class FailsOnMessageSlowPath(FailsOnMessage):
    # Overrides a frame hook: Autobahn's own receive path, not the fast one.
    def onMessageFrameBegin(self, length):
        super().onMessageFrameBegin(length)


def test_an_exception_in_onopen_closes_with_1011_after_the_101():
    tree = RouteTree([Route("/f", FailsOnOpen)])
    conn = raw_connect(tree)
    conn.send(upgrade_request("/f"))
    head, _, rest = conn.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    # Only frames after the 101: a close frame with 1011, no HTTP 500.
    assert b"HTTP/1.1" not in rest
    assert rest[:1] == b"\x88" and rest[2:4] == (1011).to_bytes(2, "big")
    stats = tree.registry.stats.handshakes
    assert stats[("/f", "accepted")] == 1 and ("/f", "500") not in stats
    assert tree.registry.stats.handler_errors["/f"] == 1


@pytest.mark.parametrize("handler", [FailsOnMessage, FailsOnMessageSlowPath])
def test_an_exception_in_onmessage_closes_that_connection_with_1011(handler):
    tree = RouteTree([Route("/f", handler)])
    bad, good = connect(tree, "/f"), connect(tree, "/f")
    bad.client.sendMessage(b"boom")
    bad.flush()
    assert bad.client.close[1] == 1011
    good.client.sendMessage(b"fine")
    good.flush()
    assert good.client.messages == [(b"fine", False)]


def test_sends_while_closing_are_dropped_quietly():
    tree = RouteTree([Route("/e", EchoHandler)])
    conn = connect(tree, "/e")
    server = conn.server
    close_with(server, 1001, "server shutting down")
    # A message that crossed the close frame: its reply has nowhere to go.
    server.onMessage(b"late", False)
    server.sendMessage(b"late too")
    conn.flush()
    assert conn.client.close[1] == 1001
    assert conn.client.messages == []


def test_what_the_server_sends_is_not_bound_by_the_incoming_limit():
    # Random bytes compress to slightly more than they were: the echo of a
    # legal 64 KiB message (sent uncompressed, as permessage-deflate lets a
    # client choose per message) is larger than a 64 KiB max_message_size.
    limit = 65536
    tree = RouteTree([Route("/e", EchoHandler, {"deflate": "on", "max_message_size": limit})])
    conn = connect(tree, "/e", deflate=True)
    payload = os.urandom(limit)
    conn.client.sendMessage(payload, isBinary=True, doNotCompress=True)
    conn.flush()
    assert conn.client.messages == [(payload, True)]
    conn.server.sendMessage(os.urandom(4 * limit), isBinary=True)
    conn.flush()
    assert len(conn.client.messages[-1][0]) == 4 * limit
    assert conn.client.close is None


def test_one_failing_member_does_not_stop_a_broadcast():
    tree = RouteTree([Route("/b", BroadcastHandler, {"deflate": "on"})])
    members = [connect(tree, "/b", deflate=i % 2 == 0) for i in range(4)]
    broken = members[1].server

    def fail(*args, **kwargs):
        raise RuntimeError("a member that cannot send")

    broken.sendPreparedMessage = fail
    members[0].client.sendMessage(b"to all")
    for member in members:
        member.flush()
    for i, member in enumerate(members):
        if i == 1:
            assert member.client.close[1] == 1011
        else:
            assert member.client.messages == [(b"to all", False)], i


def response_head(handler, target):
    """
    The response head a route of C{handler} answers an upgrade to C{target} with.
    """
    path = target.split("?")[0]
    conn = raw_connect(RouteTree([Route(path, handler)]))
    conn.send(upgrade_request(target))
    return conn.received.split(b"\r\n\r\n")[0]


class DeniesWithNonsense(WebSocketServerProtocol):
    def onConnect(self, request):
        from autobahn.websocket.types import ConnectionDeny

        raise ConnectionDeny(200, "all good\r\nSet-Cookie: x=1")


def test_a_refusal_is_always_a_4xx_or_5xx_with_a_one_line_reason():
    head = response_head(DeniesWithNonsense, "/d")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error")
    assert b"Set-Cookie" not in head


class EchoesARoomHeader(EchoHandler):
    def onConnect(self, request):
        return (None, {"X-Room": request.params["room"][0], "Bad Name\r\nX": "v"})


def test_headers_from_onconnect_cannot_split_the_101():
    head = response_head(EchoesARoomHeader, "/r?room=a%0d%0aSet-Cookie:%20pwn=1")
    assert head.startswith(b"HTTP/1.1 101 ")
    lines = head.split(b"\r\n")
    assert b"X-Room: a  Set-Cookie: pwn=1" in lines
    assert not any(line.lower().startswith(b"set-cookie") for line in lines)
    assert not any(line.startswith(b"Bad Name") for line in lines)


class Later(EchoHandler):
    """
    Takes a request once a test says so.
    """

    decisions: list = []

    @classmethod
    def accepts(cls, request):
        from twisted.internet.defer import Deferred

        decision = Deferred()
        cls.decisions.append(decision)
        return decision


@pytest.mark.parametrize("one_read", [True, False])
def test_frames_sent_with_an_upgrade_that_waits_for_its_decision_arrive(one_read):
    # The client sends frames right behind its request head (on one read,
    # which the one-pass reader takes, or byte by byte, which the line
    # parser takes); the route decides later; the frames are not lost.
    Later.decisions = []
    tree = RouteTree([Route("/later", Later)])
    conn = raw_connect(tree)
    data = upgrade_request("/later") + masked_frame(b"early") + masked_frame(b"bird")
    if one_read:
        conn.send(data)
    else:
        for i in range(len(data)):
            conn.send(data[i : i + 1])
    assert conn.received == b""
    Later.decisions[0].callback(True)
    conn.pump.flush()
    head, _, rest = conn.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert rest == b"\x81\x05early\x81\x04bird"


def test_the_drain_answers_upgrades_still_waiting_for_a_decision():
    from wsmux.service import DrainService

    Later.decisions = []
    tree = RouteTree([Route("/later", Later)])
    conn = raw_connect(tree)
    conn.send(upgrade_request("/later"))
    assert conn.received == b"" and tree.registry.held == 1
    DrainService(tree, 5, conn.clock).stopService()
    conn.pump.flush()
    assert conn.received.startswith(b"HTTP/1.1 503 ")
    assert tree.registry.held == 0
    assert Later.decisions[0].called  # cancelled: nobody waits for it now


def test_the_drain_answers_a_request_accepted_before_the_ports_closed():
    # A connection accepted just before the ports stopped, its request not
    # yet read: the drain waits for it (and answers), instead of the process
    # exiting under it (a client saw the connection end without a response).
    from wsmux.service import DrainService

    tree = RouteTree([Route("/echo", EchoHandler)])
    conn = raw_connect(tree)
    site = conn.server.site
    stopped = DrainService(tree, 5, conn.clock, site).stopService()
    assert not stopped.called and not conn.lost
    conn.send(upgrade_request("/echo"))
    assert conn.received.startswith(b"HTTP/1.1 503 ")
    conn.pump.flush()
    assert conn.lost and stopped.called
    assert not site.open_channels


def test_the_drain_leaves_idle_http_connections_and_drops_the_rest_in_time():
    from wsmux.service import DrainService

    tree = RouteTree([Route("/echo", EchoHandler)])
    idle = raw_connect(tree)
    idle.send(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.received.startswith(b"HTTP/1.1 404 ") and not idle.lost
    stopped = DrainService(tree, 5, idle.clock, idle.server.site).stopService()
    idle.pump.flush()
    # Kept alive with nothing under way: not waited for, and still served
    # (a load balancer's health check), once, with the connection closed after.
    assert stopped.called and not idle.lost
    idle.send(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.received.count(b"HTTP/1.1 404 ") == 2 and idle.lost

    silent = raw_connect(tree)
    site = silent.server.site
    stopped = DrainService(tree, 5, silent.clock, site).stopService()
    silent.send(b"GET /nothing HTTP/1.1\r\n")  # half a head, then nothing
    silent.clock.advance(5)
    silent.pump.flush()
    assert silent.lost and stopped.called and not site.open_channels


def test_an_upgraded_connection_is_no_longer_the_sites_to_wait_for():
    conn = raw_connect(RouteTree([Route("/echo", EchoHandler)]))
    site = conn.server.site
    assert len(site.open_channels) == 1
    conn.send(upgrade_request("/echo"))
    assert conn.received.startswith(b"HTTP/1.1 101 ")
    assert not site.open_channels


def test_a_decision_that_arrives_during_the_drain_is_not_opened():
    Later.decisions = []
    tree = RouteTree([Route("/later", Later)])
    conn = raw_connect(tree)
    conn.send(upgrade_request("/later"))
    tree.registry.draining = True  # the drain began, and this one was missed
    Later.decisions[0].callback(True)
    conn.pump.flush()
    assert conn.received.startswith(b"HTTP/1.1 503 ")
    assert tree.registry.held == 0 and not tree.registry.connections


class CannotBeDerived(EchoHandler):
    def __init_subclass__(cls, **kwargs):
        raise TypeError("no subclasses of this one")


def test_a_handler_class_that_fails_on_first_use_keeps_no_place():
    tree = RouteTree([Route("/x", CannotBeDerived)])
    for _ in range(3):
        conn = raw_connect(tree)
        conn.send(upgrade_request("/x"))
        assert conn.received.startswith(b"HTTP/1.1 500 ")
    assert tree.registry.held == 0


class FailsLater(EchoHandler):
    def onMessage(self, payload, isBinary):
        from twisted.internet.defer import fail

        return fail(RuntimeError("a bug in an inlineCallbacks onMessage"))


class FailsLaterSlowPath(FailsLater):
    def onMessageFrameBegin(self, length):
        super().onMessageFrameBegin(length)


@pytest.mark.parametrize("handler", [FailsLater, FailsLaterSlowPath])
def test_a_failing_deferred_from_a_handler_closes_with_1011(handler):
    tree = RouteTree([Route("/f", handler)])
    conn = connect(tree, "/f")
    conn.client.sendMessage(b"boom")
    conn.flush()
    assert conn.client.close[1] == 1011
    assert tree.registry.stats.handler_errors["/f"] == 1


def test_one_failing_member_does_not_stop_a_channel_stream():
    from wsmux.streaming import stream_to_channel

    tree = RouteTree([Route("/b", BroadcastHandler)])
    members = [connect(tree, "/b") for _ in range(3)]
    broken = members[1].server

    def fail(*args, **kwargs):
        raise RuntimeError("a member that cannot stream")

    broken.beginMessage = fail
    done = stream_to_channel(members[0].server.channels, "/b", [b"one ", b"two"], isBinary=False)
    for member in members:
        member.flush()
    assert done.called
    assert members[1].client.close[1] == 1011
    for i in (0, 2):
        assert members[i].client.messages == [(b"one two", False)]


def test_a_member_outside_a_route_that_fails_does_not_stop_a_delivery():
    from autobahn.websocket.protocol import PreparedMessage

    from wsmux.channels import deliver

    class Member:
        STATE_OPEN = 3
        state = 3

        def __init__(self, fails):
            self.fails, self.got = fails, []

        def sendPreparedMessage(self, prepared):
            if self.fails:
                raise RuntimeError("no")
            self.got.append(prepared)

    members = [Member(False), Member(True), Member(False)]
    assert deliver(PreparedMessage(b"x", False, False, False), members) == 2
    assert members[0].got and members[2].got


class CountsInAHeader(EchoHandler):
    def onConnect(self, request):
        return (None, {"X-Count": 5, "X-Many": ["a", "b"]})


def test_header_values_that_are_not_text_are_written_as_autobahn_writes_them():
    head = response_head(CountsInAHeader, "/c")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nX-Count: 5" in head and b"\r\nX-Many: a\r\nX-Many: b" in head


class ChoosesAnUnofferedSubprotocol(EchoHandler):
    def processHandshake(self):  # Autobahn's own handshake path
        super().processHandshake()

    def onConnect(self, request):
        return "never.offered"


def test_a_failing_handshake_on_autobahns_path_is_a_500_not_a_hang():
    tree = RouteTree([Route("/s", ChoosesAnUnofferedSubprotocol)])
    conn = raw_connect(tree)
    conn.send(upgrade_request("/s"))
    assert conn.received.startswith(b"HTTP/1.1 500 ")
    assert tree.registry.stats.handler_errors["/s"] == 1


def room_streaming(members, first, last):
    """
    A broadcast room of C{members} connections and a channel stream to it
    that has sent C{first} and waits to send C{last}; the stream's Deferred,
    the room's channels and the Deferred that lets it finish.
    """
    from twisted.internet.defer import Deferred

    from wsmux.streaming import stream_to_channel

    tree = RouteTree([Route("/b", BroadcastHandler)])
    conns = [connect(tree, "/b") for _ in range(members)]
    hub = conns[0].server.channels
    gate: Deferred = Deferred()

    async def slow():
        yield first
        await gate
        yield last

    return conns, stream_to_channel(hub, "/b", slow(), isBinary=False), hub, gate


def test_concurrent_channel_streams_leave_busy_members_out_and_close_nobody():
    from wsmux.streaming import stream_to_channel

    members, first, hub, gate = room_streaming(3, b"first ", b"stream")
    second = stream_to_channel(hub, "/b", [b"second"], isBinary=False)
    gate.callback(None)
    for member in members:
        member.flush()
    assert first.called and second.called
    for member in members:
        assert member.client.close is None
        assert member.client.messages == [(b"first stream", False)]


def test_a_publish_during_a_stream_goes_out_after_it():
    members, _, hub, gate = room_streaming(2, b"streamed ", b"whole")
    hub.publish("/b", b"published", isBinary=False)
    gate.callback(None)
    for member in members:
        member.flush()
    for member in members:
        assert member.client.close is None
        assert member.client.messages == [(b"streamed whole", False), (b"published", False)]


def test_a_pull_producer_is_stopped_when_the_connection_ends(tmp_path):
    from twisted.protocols.basic import FileSender

    from wsmux.streaming import MessageConsumer

    tree = RouteTree([Route("/e", EchoHandler)])
    conn = connect(tree, "/e")
    server = conn.server
    big = tmp_path / "big"
    big.write_bytes(b"x" * (1 << 20))
    source = open(big, "rb")
    server.wsmux.pauseProducing()  # the client stopped reading
    consumer = MessageConsumer(server)
    sender = FileSender()
    sent = sender.beginFileTransfer(source, consumer)
    sent.addErrback(lambda failure: None)
    outcome = []
    consumer.done.addBoth(outcome.append)
    conn.client.transport.abortConnection()
    conn.flush()
    assert sender.deferred is None  # stopped: FileSender let go of the file
    assert outcome and outcome[0].check(Exception)
