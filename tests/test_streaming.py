"""
Pacing and streaming, in memory, on a MemoryReactorClock.
"""

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.protocols.basic import FileSender

from wsmux import Route, RouteTree
from wsmux.streaming import MessageConsumer, StreamingReceiver, chunks_of, stream_message
from wsmux.testing import connect


class Burst(WebSocketServerProtocol):
    """
    Sends five numbered messages at once when asked.
    """

    def onMessage(self, payload, isBinary):
        for i in range(5):
            self.sendMessage(str(i).encode())


def test_pacing_keeps_the_delay_and_the_order():
    conn = connect(RouteTree([Route("/b", Burst, {"send_delay": 0.5})]), "/b")
    conn.client.sendMessage(b"go")
    conn.flush()
    assert [m for m, _ in conn.client.messages] == [b"0"]
    for expected in ([b"0", b"1"], [b"0", b"1", b"2"]):
        conn.clock.advance(0.5)
        conn.flush()
        assert [m for m, _ in conn.client.messages] == expected
    conn.clock.advance(0.25)
    conn.flush()
    assert len(conn.client.messages) == 3  # not before the delay
    conn.clock.advance(0.25)
    conn.clock.advance(0.5)
    conn.flush()
    assert [m for m, _ in conn.client.messages] == [b"0", b"1", b"2", b"3", b"4"]


def test_pacing_queue_is_bounded():
    tree = RouteTree(
        [Route("/b", Burst, {"send_delay": 10, "max_send_queue": 2, "slow_consumer": "drop"})]
    )
    conn = connect(tree, "/b")
    conn.client.sendMessage(b"go")
    conn.flush()
    # "0" goes at once, "1" and "2" wait (2 bytes), "3" and "4" are dropped.
    assert conn.server.dropped_messages == 2
    conn.clock.advance(10)
    conn.clock.advance(10)
    conn.flush()
    assert [m for m, _ in conn.client.messages] == [b"0", b"1", b"2"]


class Streamer(WebSocketServerProtocol):
    """
    Streams a message of 64 chunks of 1 KiB when asked.
    """

    def onMessage(self, payload, isBinary):
        self.result = stream_message(self, chunks_of(b"z" * 65536, 1024))


def test_stream_message_is_one_message_of_many_frames():
    conn = connect(RouteTree([Route("/s", Streamer)]), "/s")
    frames = []
    original = conn.client.onMessageFrameBegin
    conn.client.onMessageFrameBegin = lambda length: (frames.append(length), original(length))
    conn.client.sendMessage(b"go")
    conn.flush()
    assert conn.client.messages == [(b"z" * 65536, True)]
    assert len(frames) == 65  # 64 chunks and the final empty frame
    assert conn.server.result.result == 65536


def test_stream_waits_while_the_client_is_not_reading():
    conn = connect(RouteTree([Route("/s", Streamer)]), "/s")
    conn.server.wsmux.pauseProducing()  # the transport's buffer is full
    conn.client.sendMessage(b"go")
    conn.flush()
    assert conn.client.messages == []
    sent = conn.server.trafficStats.outgoingOctetsWireLevel
    conn.flush()
    assert conn.server.trafficStats.outgoingOctetsWireLevel - sent < 2048  # at most a chunk
    conn.server.wsmux.resumeProducing()
    conn.flush()
    assert conn.client.messages == [(b"z" * 65536, True)]


class FileStreamer(WebSocketServerProtocol):
    def onMessage(self, payload, isBinary):
        import io

        consumer = MessageConsumer(self)
        FileSender().beginFileTransfer(io.BytesIO(b"f" * 100_000), consumer)
        self.done = consumer.done


def test_a_twisted_pull_producer_streams_a_message():
    conn = connect(RouteTree([Route("/f", FileStreamer)]), "/f")
    conn.client.sendMessage(b"go")
    conn.flush()  # the pump advances the clock, so each pull happens
    assert conn.client.messages == [(b"f" * 100_000, True)]
    assert conn.server.done.result == 100_000


class Upload(StreamingReceiver, WebSocketServerProtocol):
    max_stream_size = 10_000_000

    def onStreamBegin(self, isBinary):
        self.chunks = []

    def onStreamData(self, data):
        self.chunks.append(len(data))

    def onStreamEnd(self):
        self.sendMessage(str(sum(self.chunks)).encode())


def test_streaming_receiver_gets_chunks_not_messages():
    tree = RouteTree([Route("/u", Upload, {"max_message_size": 1000, "max_fragments": 0})])
    conn = connect(tree, "/u")
    conn.client.beginMessage(isBinary=True)
    for _ in range(100):
        conn.client.sendMessageFrame(b"u" * 5000)
    conn.client.endMessage()
    conn.flush()
    # 500,000 bytes through a route whose message limit is 1,000: nothing was held.
    assert conn.client.messages == [(b"500000", False)]
    assert max(conn.server.chunks) <= 5000
    assert not hasattr(conn.server, "message_data") or not conn.server.message_data


def test_streaming_receiver_limit_is_1009():
    conn = connect(RouteTree([Route("/u", Upload, {"max_fragments": 0})]), "/u")
    conn.server.max_stream_size = 10_000
    conn.client.beginMessage(isBinary=True)
    for _ in range(5):
        conn.client.sendMessageFrame(b"u" * 5000)
    conn.client.endMessage()
    conn.flush()
    conn.clock.advance(10)
    conn.flush()
    assert conn.client.close[1] == 1009


def test_stream_fails_when_the_connection_closes():
    from twisted.internet.error import ConnectionDone

    conn = connect(RouteTree([Route("/s", Streamer)]), "/s")
    server = conn.server
    server.wsmux.pauseProducing()
    conn.client.sendMessage(b"go")
    conn.flush()
    failures = []
    server.result.addErrback(failures.append)
    assert failures == []  # waiting for the client
    conn.client.dropConnection(abort=True)
    conn.flush()
    assert len(failures) == 1 and failures[0].check(ConnectionDone)


class ChannelStreamer(WebSocketServerProtocol):
    """
    Subscribes to "live"; "go" streams 32 chunks of 1 KiB to the channel.
    """

    def onOpen(self):
        self.channels.subscribe(self, "live")

    def onMessage(self, payload, isBinary):
        from wsmux.streaming import stream_to_channel

        self.result = stream_to_channel(self.channels, "live", chunks_of(b"c" * 32768, 1024))


def test_streaming_to_a_channel_reaches_every_subscriber():
    tree = RouteTree([Route("/c", ChannelStreamer, {"max_send_queue": 4096})])
    a, b, slow = connect(tree, "/c"), connect(tree, "/c"), connect(tree, "/c")
    slow.server.wsmux.pauseProducing()  # this one stops reading
    a.client.sendMessage(b"go")
    for c in (a, b, slow):
        c.flush()
    assert a.client.messages == b.client.messages == [(b"c" * 32768, True)]
    assert a.server.result.result == 32768
    # The slow subscriber got its policy (1008) once 4 KiB were waiting.
    slow.server.wsmux.resumeProducing()
    slow.flush()
    slow.clock.advance(10)
    slow.flush()
    assert slow.client.close is not None and slow.client.close[1] == 1008


def frames_sent(raw):
    body = raw.received.split(b"\r\n\r\n", 1)[1]
    frames = []
    while body:
        n, start = body[1] & 0x7F, 2
        if n == 126:
            n, start = int.from_bytes(body[2:4], "big"), 4
        frames.append((body[0], body[start : start + n]))
        body = body[start + n :]
    return frames


def raw_route(handler, options, *messages, deflate=True):
    from wsmux.testing import masked_frame, raw_connect, upgrade_request

    raw = raw_connect(RouteTree([Route("/s", (handler,), {"ping_interval": 0, **options})]))
    extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
    raw.send(upgrade_request("/s", extra))
    for message in messages:
        raw.send(masked_frame(message))
    raw.clock.advance(0.01)
    raw.pump.flush()
    return raw


DEFLATING = {"deflate": "on", "deflate_threshold": 0}


def gated_stream(gate, reply=b""):
    """
    A handler that streams "s1", then "s2" once C{gate} fires, when sent
    "stream"; it answers anything else with C{reply} and the message.
    """

    class Streaming(WebSocketServerProtocol):
        def onMessage(self, payload, isBinary):
            if payload == b"stream":

                async def chunks():
                    yield b"s1"
                    await gate
                    yield b"s2"

                stream_message(self, chunks())
            else:
                self.sendMessage(reply + payload)

    return Streaming


def test_a_stream_on_a_deflating_connection_is_whole_and_uncompressed():
    # Autobahn's frame-by-frame sending marks a stream's first frame
    # compressed and sends its chunks as they are: the stream goes
    # uncompressed, and a whole message sent meanwhile waits for its end.
    import zlib

    gate = Deferred()
    raw = raw_route(gated_stream(gate, b"whole:"), DEFLATING, b"stream", b"meanwhile")
    gate.callback(None)
    raw.clock.advance(0.01)
    raw.pump.flush()
    frames = frames_sent(raw)
    assert frames[:3] == [(0x02, b"s1"), (0x00, b"s2"), (0x80, b"")]
    (first, payload), *rest = frames[3:]
    assert first == 0xC1 and not rest
    assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == b"whole:meanwhile"


def test_consumer_and_channel_streams_on_a_deflating_connection_are_uncompressed():
    from wsmux.streaming import stream_to_channel

    class Consumer(WebSocketServerProtocol):
        def onMessage(self, payload, isBinary):
            consumer = MessageConsumer(self)
            consumer.write(b"chunk-one ")
            consumer.write(b"chunk-two")
            consumer.unregisterProducer()

    class Channel(WebSocketServerProtocol):
        def onOpen(self):
            self.channels.subscribe(self, "live")

        def onMessage(self, payload, isBinary):
            stream_to_channel(self.channels, "live", [b"chunk-one ", b"chunk-two"])

    for handler in (Consumer, Channel):
        frames = frames_sent(raw_route(handler, DEFLATING, b"go"))
        assert frames == [(0x02, b"chunk-one "), (0x00, b"chunk-two"), (0x80, b"")], handler


def test_a_paced_message_held_behind_a_stream_keeps_its_place():
    from wsmux.testing import masked_frame

    gate = Deferred()
    raw = raw_route(gated_stream(gate), {"send_delay": 1.0}, b"stream", b"A", deflate=False)
    raw.send(masked_frame(b"B"))  # paced: waits its turn behind A
    raw.clock.advance(0.01)
    raw.pump.flush()
    gate.callback(None)
    for _ in range(5):
        raw.clock.advance(1.0)
        raw.pump.flush()
    payloads = [payload for _, payload in frames_sent(raw)]
    assert payloads == [b"s1", b"s2", b"", b"A", b"B"]


def test_a_stream_whose_source_fails_closes_with_1011():
    failed = []

    class Broken(WebSocketServerProtocol):
        def onMessage(self, payload, isBinary):
            if payload == b"stream":

                def chunks():
                    yield b"s1"
                    raise RuntimeError("the source failed")

                stream_message(self, chunks()).addErrback(failed.append)
            else:
                self.sendMessage(b"reply:" + payload)

    raw = raw_route(Broken, {}, b"stream", b"hello", deflate=False)
    frames = frames_sent(raw)
    assert frames[0] == (0x02, b"s1")
    assert frames[1][0] == 0x88 and int.from_bytes(frames[1][1][:2], "big") == 1011
    assert b"reply:hello" not in b"".join(p for _, p in frames)
    assert failed and failed[0].check(RuntimeError)
