"""
The fast path does what Autobahn's own path does, byte for byte.

Every test feeds the same client bytes to a route whose handler takes the
fast path and to one whose handler opts out of it (by overriding a hook the
fast path skips), and compares what the server sent back, whether it
closed, and Autobahn's traffic counters.
"""

from __future__ import annotations

import contextlib
import functools
import random
import zlib
from typing import Any, Iterator
from unittest import mock

import autobahn.exception
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsmux import (
    BroadcastHandler,
    EchoHandler,
    Route,
    RouteTree,
    _compat_autobahn,
    _frames,
    _writes,
)
from wsmux._compat_autobahn import fast_path_ok
from wsmux._frames import frame_header, unmask
from wsmux._writes import HOLD_MAX
from wsmux.site import GuardedHTTPChannel
from wsmux.testing import masked_frame, raw_connect, upgrade_request


def nothing_held():
    # No reactor's write scheduler holds anything (or keeps a transport).
    schedulers = [_writes._default, *_writes._schedulers.values()]
    return all(s.held is None and not s.held_bytes for s in schedulers)


class AutobahnPath:
    """
    Put before a handler, sends its traffic through Autobahn's general path:
    overriding these hooks (even with the same behaviour) turns the fast
    path off.
    """

    def onMessageFrameData(self, payload: bytes) -> None:
        super().onMessageFrameData(payload)  # type: ignore[misc]

    def sendMessage(self, *args: Any, **kwargs: Any) -> None:
        super().sendMessage(*args, **kwargs)  # type: ignore[misc]


class AutobahnPathEcho(AutobahnPath, EchoHandler):
    pass


STATS = (
    "incomingOctetsWireLevel",
    "incomingOctetsWebSocketLevel",
    "incomingOctetsAppLevel",
    "incomingWebSocketFrames",
    "incomingWebSocketMessages",
    "outgoingOctetsWireLevel",
    "outgoingOctetsWebSocketLevel",
    "outgoingOctetsAppLevel",
    "outgoingWebSocketFrames",
    "outgoingWebSocketMessages",
)


def run(
    handler: type, chunks: list[bytes], ticks: int = 0, extra: str = "", **options: Any
) -> tuple[bytes, bool, dict[str, int]]:
    options.setdefault("ping_interval", 0)
    raw = raw_connect(RouteTree([Route("/echo", (handler,), options)]))
    raw.send(upgrade_request("/echo", extra))
    server = raw.server
    for chunk in chunks:
        raw.send(chunk)
    for _ in range(ticks):  # Autobahn's send queue writes one item a tick
        raw.clock.advance(0.001)
        raw.pump.flush()
    raw.clock.advance(60)  # close handshakes time out, dropped connections go
    raw.pump.flush()
    stats = {name: getattr(server.trafficStats, name) for name in STATS}
    return raw.received, raw.lost, stats


def both(chunks: list[bytes], **options: Any) -> tuple[bytes, bool, dict[str, int]]:
    # The fast path, on each of wsmux's frame paths (its C accelerator,
    # where it is in use, and Python), and Autobahn's.
    fast = run(EchoHandler, chunks, **options)
    with python_frames():
        assert run(EchoHandler, chunks, **options) == fast
    general = run(AutobahnPathEcho, chunks, **options)
    assert fast == general
    return fast


@contextlib.contextmanager
def python_frames() -> Iterator[None]:
    # wsmux's frame path in Python, whether or not its C accelerator is in
    # use.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_compat_autobahn, "cut", None)
        patch.setattr(_compat_autobahn, "frame", _frames.frame_in_python)
        yield


# Whether Autobahn's own path closes a connection whose compressed message
# cannot be inflated with 1007 (26.10 on); before, zlib's error escaped it.
CORRUPT_CLOSES_1007 = hasattr(autobahn.exception, "PayloadCorruptError")

# permessage-deflate negotiated, and every message the server sends compressed.
DEFLATE: dict[str, Any] = {
    "extra": "Sec-WebSocket-Extensions: permessage-deflate\r\n",
    "deflate": "on",
    "deflate_threshold": 0,
}


def deflated(payload: bytes) -> bytes:
    """
    C{payload} compressed as one message (RFC 7692 7.2.1), each with a
    context of its own (which a decompressor that keeps its context reads
    all the same).
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def compressed_frame(payload: bytes, opcode: int = 1, raw: bool = False) -> bytes:
    """
    A whole compressed client message (RSV1 set); with C{raw}, the
    C{payload} bytes as they are (whatever they inflate to).
    """
    frame = bytearray(masked_frame(payload if raw else deflated(payload), opcode=opcode))
    frame[0] |= 0x40
    return bytes(frame)


def inflate_replies(body: bytes) -> list[tuple[int, bytes]]:
    """
    The server's frames in C{body}: each one's first byte and payload, a
    compressed one's inflated (with the context kept, as the server keeps
    it).
    """
    inflater = zlib.decompressobj(-15)
    frames = []
    while len(body) >= 2:
        length, start = body[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(body[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(body[2:10], "big"), 10
        payload = body[start : start + length]
        if body[0] & 0x40:
            payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
        frames.append((body[0], payload))
        body = body[start + length :]
    return frames


@pytest.mark.uses_internal("autobahn.fast_frames")
def test_which_handlers_take_the_fast_path():
    assert fast_path_ok(EchoHandler) == (True, True)
    assert fast_path_ok(AutobahnPathEcho) == (False, False)


class PartialSend(EchoHandler):
    # A sendMessage that is not a plain function: wsmux's send checks reach
    # it through super(), bound as it should be.
    def _tagged_send(
        self, payload, isBinary=False, fragmentSize=None, sync=False, doNotCompress=False, *, tag
    ):
        EchoHandler.sendMessage(self, tag + payload, isBinary, fragmentSize, sync, doNotCompress)

    sendMessage = functools.partialmethod(_tagged_send, tag=b">")


def test_a_handler_whose_send_message_is_not_a_function():
    received, _, _ = run(PartialSend, [masked_frame(b"hi", opcode=2)])
    assert b"\x82\x03>hi" in received


def test_unmask_and_header_agree_with_the_rfc():
    payload = bytes(range(256)) * 20
    mask = b"\x9a\x01\xfe\x10"
    frame = masked_frame(payload, opcode=2, mask=mask)
    assert frame[4:8] == mask  # 2-byte header, 2-byte length, then the mask
    assert unmask(frame[8:], mask) == payload  # (both paths: the next test)
    assert unmask(frame[8:108], mask) == payload[:100]
    assert frame_header(0x81, 5) == b"\x81\x05"
    assert frame_header(0x82, 300) == b"\x82\x7e\x01\x2c"
    assert frame_header(0x82, 70000) == b"\x82\x7f" + (70000).to_bytes(8, "big")


def test_many_messages_in_one_read_come_back_in_order():
    frames = [masked_frame(f"m{i}".encode()) for i in range(50)]
    received, lost, stats = both([b"".join(frames)])
    assert received.split(b"\r\n\r\n", 1)[1] == b"".join(
        b"\x81" + bytes([len(f"m{i}")]) + f"m{i}".encode() for i in range(50)
    )
    assert not lost
    assert stats["incomingWebSocketMessages"] == 50


def test_invalid_utf8_after_good_messages_closes_with_1007_after_them():
    data = masked_frame(b"ok") + masked_frame(b"\xff\xfe") + masked_frame(b"never")
    received, lost, _ = both([data])
    body = received.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"\x81\x02ok\x88")
    assert body[6:8] == (1007).to_bytes(2, "big")
    assert b"never" not in body
    assert lost


def test_a_message_over_the_limit_closes_with_1009():
    data = masked_frame(b"small") + masked_frame(b"x" * 300)
    received, lost, _ = both([data], max_message_size=200)
    body = received.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"\x81\x05small\x88")
    assert body[9:11] == (1009).to_bytes(2, "big")


def test_ping_and_fragments_between_whole_frames():
    data = (
        masked_frame(b"a")
        + masked_frame(b"p", opcode=9)
        + masked_frame(b"fr", fin=False)
        + masked_frame(b"ag", opcode=0)
        + masked_frame(b"\x00\x01", opcode=2)
    )
    received, lost, stats = both([data])
    body = received.split(b"\r\n\r\n", 1)[1]
    assert body == b"\x81\x01a" + b"\x8a\x01p" + b"\x81\x04frag" + b"\x82\x02\x00\x01"
    assert stats["incomingWebSocketMessages"] == 3


def test_bytes_arriving_one_at_a_time():
    data = masked_frame(b"x" * 200) + masked_frame("é".encode())
    received, _, _ = both([bytes([b]) for b in data])
    assert (
        received.split(b"\r\n\r\n", 1)[1] == b"\x81\x7e\x00\xc8" + b"x" * 200 + b"\x81\x02\xc3\xa9"
    )


def test_big_binary_frames_in_pieces():
    big = bytes(range(256)) * 400  # 100 KiB
    data = masked_frame(big, opcode=2) + masked_frame(b"after")
    chunks = [data[i : i + 7000] for i in range(0, len(data), 7000)]
    received, lost, stats = both(chunks, max_message_size=1 << 20)
    body = received.split(b"\r\n\r\n", 1)[1]
    assert body == b"\x82\x7f" + len(big).to_bytes(8, "big") + big + b"\x81\x05after"
    assert not lost
    assert stats["incomingOctetsAppLevel"] == len(big) + 5


def test_a_big_frame_read_whole_leaves_the_read_bytes_alone():
    data = masked_frame(b"\x5a" * 80000, opcode=2)
    before = bytes(bytearray(data))
    received, _, _ = both([data], max_message_size=1 << 20)
    assert data == before  # unmasking in place never touches what was read
    assert received.endswith(b"\x5a" * 80000)


def test_big_frames_over_the_limit_and_big_text():
    too_big = masked_frame(b"\x00" * 70000, opcode=2)
    received, lost, _ = both([too_big[:100], too_big[100:]], max_message_size=65536)
    assert received.split(b"\r\n\r\n", 1)[1][2:4] == (1009).to_bytes(2, "big")
    text = "ü".encode() * 40000
    bad = masked_frame(text[:-1], opcode=1)  # ends inside a character
    received, lost, _ = both([masked_frame(text), bad], max_message_size=1 << 20)
    body = received.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"\x81\x7f" + len(text).to_bytes(8, "big") + text + b"\x88")
    assert lost


class ReentrantEcho(EchoHandler):
    """
    Feeds itself a message from inside onMessage, as a synchronous
    in-memory transport could: it must come after those already read.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload == b"first":
            self.dataReceived(masked_frame(b"injected"))
        self.sendMessage(payload, isBinary)


@pytest.mark.uses_internal("autobahn.fast_frames")
def test_data_fed_from_inside_a_handler_waits_its_turn():
    received, _, _ = run(ReentrantEcho, [masked_frame(b"first") + masked_frame(b"second")])
    body = received.split(b"\r\n\r\n", 1)[1]
    assert body == b"\x81\x05first\x81\x06second\x81\x08injected"


def close_frame(code: Any, reason: bytes) -> bytes:
    if code is None:
        return masked_frame(reason[:1], opcode=8)  # no code, or a lone byte
    return masked_frame(code.to_bytes(2, "big") + reason, opcode=8)


closes = st.builds(
    close_frame,
    st.sampled_from(
        [None, 0, 999, 1000, 1001, 1004, 1005, 1006, 1011, 1016, 2999, 3000, 4999, 5000]
    ),
    st.one_of(st.just(b""), st.text(max_size=20).map(str.encode), st.binary(max_size=6)),
)

frame = st.one_of(
    st.text(max_size=40).map(lambda t: masked_frame(t.encode())),
    st.binary(max_size=300).map(lambda b: masked_frame(b, opcode=2)),
    st.binary(max_size=10).map(lambda b: masked_frame(b, opcode=9)),
    st.binary(min_size=1, max_size=4).map(lambda b: masked_frame(b)),  # often not UTF-8
    st.just(masked_frame(b"ab", fin=False) + masked_frame(b"cd", opcode=0)),
    st.just(masked_frame(b"z" * 130)),  # over max_message_size below
    st.just(masked_frame(b"\x03\xe8", opcode=8)),  # the client closes
    closes,
)


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(frame, max_size=12), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_same_bytes_out_as_autobahns_path(frames, cuts):
    data = b"".join(frames)
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    both(chunks, max_message_size=128)


compressed = st.one_of(
    st.text(max_size=60).map(lambda t: compressed_frame(t.encode())),
    st.binary(max_size=300).map(lambda b: compressed_frame(b, opcode=2)),
    st.binary(min_size=1, max_size=4).map(compressed_frame),  # often not UTF-8
    st.just(compressed_frame(b"a\xe2\x82")),  # ends inside a code point
    st.just(compressed_frame(b"y" * 200)),  # small on the wire, over the limit inflated
    st.just(compressed_frame(b"y" * 129)),  # one byte over the limit inflated
    st.just(compressed_frame(b"y" * 128)),  # at the limit
    st.just(compressed_frame(b"\x00", raw=True)),  # an empty stored block, left open
    st.just(compressed_frame(b"\x03\xe8", opcode=8, raw=True)),  # compressed close: 1002
    *(
        # Corrupt (mostly): Autobahn before 26.10 lets zlib's error escape
        # from its own path, which wsmux then closes with 1011.
        [st.binary(min_size=1, max_size=12).map(lambda b: compressed_frame(b, raw=True))]
        if CORRUPT_CLOSES_1007
        else []
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.one_of(frame, compressed, compressed), max_size=12),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_same_bytes_out_as_autobahns_path_with_deflate(frames, cuts):
    # The server's replies are compressed too, by the same compressor on
    # either path: its bytes must match.
    data = b"".join(frames)
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    both(chunks, max_message_size=128, **DEFLATE)


@pytest.mark.uses_internal("autobahn.fast_frames")
def test_compressed_messages_take_the_fast_path_both_ways():
    texts = [f"message {i} ".encode() * 8 for i in range(20)]
    data = b"".join(compressed_frame(t) for t in texts) + compressed_frame(b"\x00\xff", opcode=2)
    received, lost, stats = both([data], **DEFLATE)
    replies = inflate_replies(received.split(b"\r\n\r\n", 1)[1])
    assert replies == [(0xC1, t) for t in texts] + [(0xC2, b"\x00\xff")]
    assert not lost
    assert stats["incomingWebSocketMessages"] == 21
    assert stats["incomingOctetsAppLevel"] == sum(map(len, texts)) + 2
    assert stats["incomingOctetsWebSocketLevel"] < stats["incomingOctetsAppLevel"]
    # Neither way went through Autobahn's frame machinery on the fast path.
    raw = raw_connect(RouteTree([Route("/echo", (EchoHandler,), {"deflate": "on"})]))
    raw.send(upgrade_request("/echo", DEFLATE["extra"]))
    server = raw.server
    seen: list[str] = []
    cls = type(server)
    for name in ("onFrameBegin", "sendFrame"):
        original = getattr(cls, name)

        def watched(self: Any, *args: Any, _name: str = name, _original: Any = original) -> Any:
            seen.append(_name)
            return _original(self, *args)

        setattr(cls, name, watched)
    try:
        raw.send(compressed_frame(b"hello" * 10))
        raw.clock.advance(0.001)
        raw.pump.flush()
    finally:
        del cls.onFrameBegin, cls.sendFrame
    assert seen == []
    assert inflate_replies(raw.received.split(b"\r\n\r\n", 1)[1]) == [(0xC1, b"hello" * 10)]


def test_compressed_failures_close_as_autobahn_closes_them():
    # Each after a good compressed message, and followed by one never read.
    cases = {
        1009: [compressed_frame(b"y" * 5000)],
        1007: [
            compressed_frame(b"\xff\xfe"),
            compressed_frame(b"ok\xe2\x82"),
            compressed_frame(b"\xff\xff\xff", raw=True),
        ],
    }
    corrupt = cases[1007][-1]
    for code, frames in cases.items():
        for bad in frames:
            data = compressed_frame(b"good") + bad + compressed_frame(b"never")
            if bad is corrupt and not CORRUPT_CLOSES_1007:
                # The fast path only (see CORRUPT_CLOSES_1007).
                received, lost, _ = run(EchoHandler, [data], max_message_size=1000, **DEFLATE)
            else:
                received, lost, _ = both([data], max_message_size=1000, **DEFLATE)
            replies = inflate_replies(received.split(b"\r\n\r\n", 1)[1])
            assert replies[0] == (0xC1, b"good")
            assert replies[1][0] == 0x88
            assert int.from_bytes(replies[1][1][:2], "big") == code, replies
            assert b"never" not in b"".join(p for _, p in replies)
            assert lost


def closing(handler: type, frame: bytes) -> tuple[Any, ...]:
    raw = raw_connect(RouteTree([Route("/echo", (handler,), {"ping_interval": 0})]))
    raw.send(upgrade_request("/echo"))
    server = raw.server
    raw.send(masked_frame(b"before") + frame + masked_frame(b"after"))
    raw.clock.advance(60)
    raw.pump.flush()
    return raw.received, raw.lost, server.remoteCloseCode, server.remoteCloseReason, server.wasClean


def test_close_frames_are_answered_as_autobahn_answers_them():
    reasons = [b"", b"x", b"\xff", b"bye \xe2\x82\xac", b"\xe2\x82"]
    cases = [masked_frame(b"", opcode=8), masked_frame(b"\x03", opcode=8)] + [
        close_frame(code, reason)
        for code in (999, 1000, 1001, 1005, 1016, 3000, 5000)
        for reason in reasons
    ]
    for frame in cases:
        fast = closing(EchoHandler, frame)
        assert fast == closing(AutobahnPathEcho, frame), frame
        assert fast[1]  # the server dropped the connection either way


# Held writes: what a batch of received messages makes handlers write goes
# out once per connection, after the batch, in the order it was written.


def count_writes(transport: Any) -> list[bytes]:
    """
    Record each write C{transport} is given from now on (writeSequence
    on an in-memory transport is one write).
    """
    writes: list[bytes] = []
    write = transport.write

    def recording(data: bytes) -> None:
        writes.append(data)
        write(data)

    transport.write = recording
    return writes


@pytest.mark.uses_internal("autobahn.fast_frames")
def test_a_batch_is_answered_in_one_write():
    raw = raw_connect(RouteTree([Route("/echo", (EchoHandler,), {"ping_interval": 0})]))
    raw.send(upgrade_request("/echo"))
    writes = count_writes(raw.server_transport)
    raw.send(b"".join(masked_frame(f"m{i}".encode()) for i in range(20)))
    assert writes == [b"".join(b"\x81\x02" + f"m{i}".encode() for i in range(10))
                      + b"".join(b"\x81\x03" + f"m{i}".encode() for i in range(10, 20))]  # fmt: skip
    raw.send(masked_frame(b"alone"))
    assert writes[1:] == [b"\x81\x05alone"]
    # Messages Autobahn's own path takes (fragmented ones) are held too.
    fragmented = masked_frame(b"ab", fin=False) + masked_frame(b"cd", opcode=0)
    raw.send(fragmented * 3)
    assert writes[2:] == [b"\x81\x04abcd" * 3]
    # Nothing is held, or counted, once a read is handled (no transport is
    # kept alive by it).
    assert nothing_held()


class Greeter(EchoHandler):
    """
    Sends two messages as it opens.
    """

    def onOpen(self):
        self.sendMessage(b"hello")
        self.sendMessage(b"again")


@pytest.mark.uses_internal("autobahn.direct_handshake")
@pytest.mark.parametrize(
    "request_made",
    [pytest.param(False, marks=pytest.mark.uses_internal("twisted.one_pass_head")), True],
)
def test_the_101_and_what_opening_writes_leave_in_one_write(request_made: bool) -> None:
    # The 101 and what onOpen sends are held, as a read's writes are, and
    # go together.  A frame sent with the request head is answered in the
    # same write when the route takes the head from the channel
    # (GuardedHTTPChannel._upgrade_directly), after it when twisted.web's
    # request ran first (the frame waits in its line buffer).
    with mock.patch.object(
        GuardedHTTPChannel,
        "_upgrade_directly",
        (lambda self, *a: False) if request_made else GuardedHTTPChannel._upgrade_directly,
    ):
        raw = raw_connect(RouteTree([Route("/echo", (Greeter,), {"ping_interval": 0})]))
        writes = count_writes(raw.server_transport)
        raw.send(upgrade_request("/echo") + masked_frame(b"early"))
    head, _, frames = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    if request_made:
        assert frames == b"\x81\x05hello\x81\x05again"
        assert writes[1:] == [b"\x81\x05early"]
    else:
        assert frames == b"\x81\x05hello\x81\x05again\x81\x05early"
        assert writes[1:] == []
    assert nothing_held()
    raw.send(masked_frame(b"later"))
    assert writes[-1:] == [b"\x81\x05later"]


class Chatty(EchoHandler):
    """
    Answers a message with a hundred 1 KiB messages.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        for _ in range(100):
            self.sendMessage(b"x" * 1024, isBinary=True)


@pytest.mark.uses_internal("autobahn.fast_frames")
def test_no_more_than_hold_max_is_held_for_a_connection():
    raw = raw_connect(RouteTree([Route("/echo", (Chatty,), {"ping_interval": 0})]))
    raw.send(upgrade_request("/echo"))
    writes = count_writes(raw.server_transport)
    raw.send(masked_frame(b"go"))
    frame = 4 + 1024
    assert [len(w) for w in writes] == [
        frame * (HOLD_MAX // frame + 1),
        frame * 100 - frame * (HOLD_MAX // frame + 1),
    ]


@pytest.mark.uses_internal("autobahn.fast_frames")
def test_a_batch_of_publishes_reaches_each_member_in_one_write():
    tree = RouteTree([Route("/rooms/{room}", (BroadcastHandler,), {"ping_interval": 0})])
    members = [raw_connect(tree) for _ in range(3)]
    for member in members:
        member.send(upgrade_request("/rooms/lobby"))
    writes = [count_writes(m.server_transport) for m in members]
    members[0].send(b"".join(masked_frame(f"p{i}".encode()) for i in range(5)))
    expected = b"".join(b"\x81\x02" + f"p{i}".encode() for i in range(5))
    assert writes == [[expected]] * 3
    for member in members:
        member.pump.flush()
        assert member.received.endswith(expected)


class MixedSender(EchoHandler):
    """
    Writes through the fast path and Autobahn's own path (a fragmented
    message sent with sync, which Autobahn queues and writes itself) in
    turn, and closes when asked.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state != self.STATE_OPEN:
            return  # closing: Autobahn refuses to send
        self.sendMessage(b"<" + payload)
        self.sendMessage(b"frag", fragmentSize=2, sync=True)
        if payload == b"bye":
            self.sendClose(1000, "done")
            return
        self.sendMessage(payload + b">")


class AutobahnPathMixedSender(AutobahnPath, MixedSender):
    pass


def test_held_writes_keep_their_place_among_autobahns_own_and_the_close():
    chunks = [masked_frame(b"a") + masked_frame(b"b") + masked_frame(b"bye") + masked_frame(b"c")]
    held = run(MixedSender, chunks, ticks=50)
    assert held == run(AutobahnPathMixedSender, chunks, ticks=50)
    body = held[0].split(b"\r\n\r\n", 1)[1]
    frag = b"\x01\x02fr\x00\x02ag\x80\x00"  # Autobahn ends with an empty final frame
    assert body.startswith(b"\x81\x02<a" + frag + b"\x81\x02a>" + b"\x81\x02<b" + frag)
    assert body.index(b"\x81\x04<bye" + frag + b"\x88") > 0
    assert b"<c" not in body
    assert held[1]  # closed


class LastWords(EchoHandler):
    """
    Echoes, and drops the connection (cleanly) after echoing "drop".
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(payload)
            if payload == b"drop":
                self.dropConnection(abort=False)


class AutobahnPathLastWords(AutobahnPath, LastWords):
    pass


def test_held_writes_go_out_before_the_connection_is_dropped():
    chunks = [masked_frame(b"a") + masked_frame(b"drop") + masked_frame(b"c")]
    held = run(LastWords, chunks)
    assert held == run(AutobahnPathLastWords, chunks)
    assert held[0].endswith(b"\r\n\r\n\x81\x01a\x81\x04drop")
    assert held[1]


@pytest.mark.uses_internal("autobahn.fast_frames")
def test_on_tcp_writes_wait_for_the_end_of_the_reactor_turn():
    # Twisted's own TCP transport, on real loopback sockets, driven by hand:
    # what reads make handlers write goes out after the reactor's turn (its
    # zero-delay calls), together, not after each read.
    import socket

    from twisted.internet import tcp
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import MemoryReactorClock

    from wsmux.site import WebSocketSite

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server_socket, address = listener.accept()
    listener.close()
    server_socket.setblocking(False)
    client.settimeout(5)
    clock = MemoryReactorClock()
    try:
        site = WebSocketSite(RouteTree([Route("/echo", (EchoHandler,), {"ping_interval": 0})]))
        channel = site.buildProtocol(IPv4Address("TCP", *address))
        transport = tcp.Server(server_socket, channel, address, None, 1, clock)
        channel.makeConnection(transport)
        channel.dataReceived(upgrade_request("/echo"))
        assert client.recv(4096).startswith(b"HTTP/1.1 101 ")
        websocket = transport.protocol
        websocket.dataReceived(masked_frame(b"one"))
        websocket.dataReceived(masked_frame(b"two") + masked_frame(b"three"))
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(4096)  # nothing yet: the turn is not over
        clock.advance(0)
        client.settimeout(5)
        assert client.recv(4096) == b"\x81\x03one\x81\x03two\x81\x05three"
        assert nothing_held()
    finally:
        client.close()
        server_socket.close()


def test_deflate_growth_at_the_smallest_memory_level_matches_autobahns_path():
    # Data that does not compress grows by up to an eighth at memory level
    # 1: fragments and the limit must come out as on Autobahn's path.
    noise = random.Random(7).randbytes(97000)
    for payload, options in (
        (noise[:9800], {"auto_fragment_size": 10000}),
        (noise, {"max_message_size": 100000}),
    ):
        frame = compressed_frame(payload, opcode=2)
        received, lost, _ = both([frame], deflate_mem_level=1, **options, **DEFLATE)
        body = received.split(b"\r\n\r\n", 1)[1]
        assert not lost and body[0] in (0xC2, 0x42)  # whole, or a first fragment


class FirstOnly(EchoHandler):
    """
    Notes how much of the read was inflated when its first message came.
    """

    inflated: list[int] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        FirstOnly.inflated.append(self.trafficStats.incomingOctetsAppLevel)
        self.dropConnection()


@pytest.mark.uses_internal("autobahn.fast_frames")
def test_a_read_of_compressed_messages_is_not_all_inflated_at_once():
    # Ten messages of 400 KB each (a few hundred bytes on the wire) in one
    # read: no more than about a mebibyte is inflated before delivery.
    FirstOnly.inflated = []
    frames = [compressed_frame(bytes([i]) * 400_000, opcode=2) for i in range(10)]
    run(FirstOnly, [b"".join(frames)], **DEFLATE)
    assert FirstOnly.inflated and FirstOnly.inflated[0] <= 1_300_000


@pytest.mark.parametrize("masker", ["c", "python"])
def test_unmask_in_c_and_in_python_agree(masker):
    # websockets' C masker (the seam's websockets.c_masker) and the Python
    # path: every length around the word sizes and the 2 KiB switch, every
    # mask offset.
    import os

    from wsmux import _frames
    from wsmux._compat_websockets import C_MASKER

    if masker == "c" and not C_MASKER:
        pytest.skip("websockets.c_masker is off in this run")
    if masker == "c":
        from websockets.speedups import apply_mask

        assert _frames.unmask is apply_mask
    unmask = _frames.unmask if masker == "c" else _frames.unmask_in_python
    for size in [*range(0, 70), 2047, 2048, 2049, 4096 + 3, 70001]:
        payload = os.urandom(size)
        mask = os.urandom(4)
        expected = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        assert unmask(payload, mask) == expected
        assert type(unmask(payload, mask)) is bytes
