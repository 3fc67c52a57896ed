"""
permessage-deflate as a route configures it: what the response offers, the
compressor's window, level and memory, the threshold under which messages
go out plain, and the client window a route can require.
"""

import zlib

import pytest
from autobahn.websocket.compress import PerMessageDeflate

from wsmux import BroadcastHandler, EchoHandler, ProtocolOptions, Route, RouteTree
from wsmux._deflate import tuned_deflate
from wsmux.testing import masked_frame, raw_connect, upgrade_request


def open_with(offer, **options):
    tree = RouteTree(
        [
            Route("/echo", EchoHandler, {"deflate": "on", **options}),
            Route("/rooms/{room}", BroadcastHandler, {"deflate": "on", **options}),
        ]
    )
    raw = raw_connect(tree)
    extra = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
    raw.send(upgrade_request("/echo", extra))
    head, _, rest = raw.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert rest == b""
    return raw, extension_answer(head)


def extension_answer(head):
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "sec-websocket-extensions":
            return value.strip()
    return None


def frames(data):
    # (rsv1, opcode, payload) of each whole server frame in data.
    out = []
    while len(data) >= 2:
        n = data[1] & 0x7F
        at = 2
        if n == 126:
            n, at = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, at = int.from_bytes(data[2:10], "big"), 10
        out.append((bool(data[0] & 0x40), data[0] & 0x0F, data[at : at + n]))
        data = data[at + n :]
    return out


def replies(raw, seen):
    # The frames that arrived after the first `seen` bytes of the response.
    body = raw.received.partition(b"\r\n\r\n")[2]
    return frames(body[seen:]), len(body)


def test_the_response_says_what_the_server_does():
    cases = [
        # (offer, options, answer)
        ("permessage-deflate", {}, "permessage-deflate"),
        (
            "permessage-deflate; server_max_window_bits=12",
            {"deflate_server_max_window_bits": 10},
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            {"deflate_server_max_window_bits": 12},
            "permessage-deflate; server_max_window_bits=10",
        ),
        # Unasked, the window is not named (RFC 7692 7.1.2.1), but no
        # context takeover is (7.1.1.1).
        (
            "permessage-deflate",
            {"deflate_server_max_window_bits": 9, "deflate_server_no_context_takeover": True},
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "permessage-deflate; client_max_window_bits",
            {"deflate_client_max_window_bits": 11},
            "permessage-deflate; client_max_window_bits=11",
        ),
        # An offer that cannot take the client limit is declined; the
        # next one that can is taken.
        (
            "permessage-deflate, permessage-deflate; client_max_window_bits",
            {"deflate_client_max_window_bits": 9},
            "permessage-deflate; client_max_window_bits=9",
        ),
        ("permessage-deflate", {"deflate_client_max_window_bits": 9}, None),
        # A client that names its own limit gets the smaller of the two
        # (never more than it offered: RFC 7692 7.1.2.2).
        (
            "permessage-deflate; client_max_window_bits=10",
            {"deflate_client_max_window_bits": 12},
            "permessage-deflate; client_max_window_bits=10",
        ),
        (
            'x-webkit-deflate-frame, permessage-deflate; client_max_window_bits="12"',
            {"deflate_client_max_window_bits": 9},
            "permessage-deflate; client_max_window_bits=9",
        ),
        (None, {"deflate_level": 1}, None),
    ]
    for offer, options, answer in cases:
        raw, got = open_with(offer, **options)
        assert got == answer, (offer, options)
        # Whatever was agreed, an echo comes back whole.
        raw.send(masked_frame(b"hello " * 50))
        [(rsv1, opcode, payload)] = replies(raw, 0)[0]
        if rsv1:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        assert (opcode, payload) == (1, b"hello " * 50), (offer, options)
        assert rsv1 == (answer is not None)


def compressor_of(raw):
    [extension] = raw.server.websocket_extensions_in_use
    return extension


def test_level_and_window_reach_the_compressor():
    message = bytes(range(256)) * 40 + b"abc" * 3000
    sizes = {}
    for level in (1, 9):
        raw, _ = open_with("permessage-deflate", deflate_level=level)
        assert type(compressor_of(raw)) is tuned_deflate(level)
        raw.send(masked_frame(message, opcode=2))
        [(rsv1, _, payload)] = replies(raw, 0)[0]
        assert rsv1
        assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == message
        sizes[level] = len(payload)
    assert sizes[9] < sizes[1]
    # The default level is zlib's, on wsmux's class too (for its checked
    # decompression limit).
    raw, _ = open_with("permessage-deflate")
    assert type(compressor_of(raw)) is tuned_deflate(6)
    assert issubclass(tuned_deflate(6), PerMessageDeflate)
    # A 9-bit window: what comes out inflates through a 9-bit window, even
    # where the message repeats itself 2000 bytes back (which a wider
    # window refers to, and a 9-bit inflater, taking its output a little at
    # a time, then fails on).
    import random

    far = random.Random(7).randbytes(2000) * 3
    for window, fits in ((9, True), (15, False)):
        raw, _ = open_with("permessage-deflate", deflate_server_max_window_bits=window)
        raw.send(masked_frame(far, opcode=2))
        [(_, _, payload)] = replies(raw, 0)[0]
        if fits:
            assert small_window_inflate(payload, 9) == far
        else:
            with pytest.raises(zlib.error, match="too far back"):
                small_window_inflate(payload, 9)


def small_window_inflate(data, bits):
    inflater = zlib.decompressobj(-bits)
    out = inflater.decompress(data, 64)
    while inflater.unconsumed_tail:
        out += inflater.decompress(inflater.unconsumed_tail, 64)
    return out + inflater.decompress(b"\x00\x00\xff\xff")


def test_the_memory_level_reaches_the_compressor():
    # zlib's output depends on its memory level (its hash table): the same
    # message compressed at 1 and at 9 differs.
    import random

    words = [random.Random(3).randbytes(5).hex() for _ in range(400)]
    text = " ".join(random.Random(4).choice(words) for _ in range(6000)).encode()
    outputs = {}
    for level in (1, 9):
        raw, _ = open_with("permessage-deflate", deflate_mem_level=level)
        raw.send(masked_frame(text))
        [(_, _, payload)] = replies(raw, 0)[0]
        assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == text
        outputs[level] = payload
    assert outputs[1] != outputs[9]


def test_no_context_takeover_frees_the_compressor_between_messages():
    raw, _ = open_with("permessage-deflate", deflate_server_no_context_takeover=True)
    extension = compressor_of(raw)
    seen = 0
    for _ in range(3):
        raw.send(masked_frame(b"same words, same words " * 20))
        [(rsv1, _, payload)], seen = replies(raw, seen)
        assert rsv1
        # Each message stands alone: a fresh decompressor reads it.
        assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == (
            b"same words, same words " * 20
        )
        assert extension._wsmux_compressor is None
    # With the context kept, the second message is smaller than the first.
    raw, _ = open_with("permessage-deflate")
    sizes = []
    seen = 0
    for _ in range(2):
        raw.send(masked_frame(b"same words, same words " * 20))
        [(_, _, payload)], seen = replies(raw, seen)
        sizes.append(len(payload))
    assert sizes[1] < sizes[0]


def test_messages_under_the_threshold_go_out_plain():
    raw, _ = open_with("permessage-deflate", deflate_threshold=100)
    seen = 0
    for size, compressed in ((99, False), (100, True), (5000, True), (1, False)):
        raw.send(masked_frame(b"x" * size))
        [(rsv1, _, _)], seen = replies(raw, seen)
        assert rsv1 == compressed, size


def test_broadcasts_under_the_threshold_go_out_plain():
    tree = RouteTree(
        [
            Route(
                "/rooms/{room}",
                BroadcastHandler,
                {"deflate": "on", "deflate_threshold": 100},
            )
        ]
    )
    raw = raw_connect(tree)
    raw.send(upgrade_request("/rooms/a", "Sec-WebSocket-Extensions: permessage-deflate\r\n"))
    seen = 0
    for size, compressed in ((50, False), (500, True)):
        raw.send(masked_frame(b"y" * size))
        [(rsv1, _, _)], seen = replies(raw, seen)
        assert rsv1 == compressed, size


@pytest.mark.parametrize(
    "options, words",
    [
        ({"deflate_level": 10}, "deflate_level must be 0 to 9, got 10"),
        ({"deflate_mem_level": 0}, "deflate_mem_level must be 1 to 9, got 0"),
        ({"deflate_server_max_window_bits": 8}, "deflate_server_max_window_bits must be 9 to 15"),
        ({"deflate_client_max_window_bits": 16}, "must be 9 to 15 (or 0), got 16"),
        ({"deflate_threshold": -1}, "deflate_threshold must not be negative"),
        ({"deflate_server_no_context_takeover": "yes"}, "must be true or false"),
    ],
)
def test_bad_values_are_named(options, words):
    with pytest.raises(ValueError) as caught:
        ProtocolOptions(**options)
    assert words in str(caught.value)


def compressed_frame(data, opcode=1):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = bytearray(masked_frame(body, opcode=opcode))
    frame[0] |= 0x40  # RSV1: compressed
    return bytes(frame)


@pytest.mark.parametrize("deflate", ["on", "inflate-only"])
def test_a_compressed_message_over_the_limit_is_refused_not_cut_short(deflate):
    # zlib holds back output it has not been asked for: a message of
    # highly compressible bytes one over the limit came out cut to the
    # limit, without an error (Autobahn asked zlib for exactly the budget).
    limit = 65536
    tree = RouteTree([Route("/echo", EchoHandler, {"deflate": deflate, "max_message_size": limit})])
    for size, fits in ((limit, True), (limit + 1, False), (limit - 1, True), (limit * 3, False)):
        raw = raw_connect(tree)
        raw.send(upgrade_request("/echo", "Sec-WebSocket-Extensions: permessage-deflate\r\n"))
        head, _, _ = raw.received.partition(b"\r\n\r\n")
        raw.send(compressed_frame(b"\x00" * size, opcode=2))
        [(rsv1, opcode, payload)] = replies(raw, 0)[0][:1]
        if fits:
            if rsv1:
                payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
            assert (opcode, payload) == (2, b"\x00" * size), size
        else:
            assert opcode == 8 and int.from_bytes(payload[:2], "big") == 1009, size
        raw.restore_loop()
