"""
Property-based tests: random and mutated handshakes and frames fed to the
server in memory.  Only documented outcomes may happen: an HTTP status from
the documented set, a close code from the documented set, or a dropped
connection; never an exception, never an unbounded buffer.
"""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from wsmux import EchoHandler, Route, RouteTree
from wsmux.testing import masked_frame, raw_connect, upgrade_request

STATUSES = {101, 400, 403, 404, 405, 408, 414, 426, 429, 431, 500, 503, 505}
CLOSE_CODES = {1000, 1002, 1007, 1008, 1009, 1011}
MAX = 4096


def tree():
    return RouteTree(
        [
            Route(
                "/echo",
                (EchoHandler,),
                {"max_message_size": MAX, "max_frame_size": MAX, "max_fragments": 16},
            )
        ]
    )


@pytest.fixture
def failures():
    seen = []

    def observer(event):
        if event.get("log_failure") is not None or event.get("isError"):
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def status_of(received):
    line = received.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 "), received[:100]
    return int(line.split(b" ")[1])


VALID = upgrade_request("/echo")


@st.composite
def mutated_handshakes(draw):
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=20))
        elif op == "delete" and len(data) > 10:
            del data[i : i + draw(st.integers(1, 10))]
        else:
            j = draw(st.integers(i, min(len(data), i + 40)))
            data[i:i] = data[i:j]
    return bytes(data)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.one_of(mutated_handshakes(), st.binary(max_size=300)))
def test_random_handshakes_have_documented_outcomes(failures, data):
    conn = raw_connect(tree())
    conn.send(data)
    conn.clock.advance(30)  # every timeout fires
    conn.pump.flush()
    if conn.received:
        assert status_of(conn.received) in STATUSES
    assert not failures


@st.composite
def frames(draw):
    opcode = draw(st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11, 15]))
    payload = draw(st.binary(max_size=200))
    if opcode == 8 and draw(st.booleans()):
        payload = struct.pack(">H", draw(st.integers(0, 65535))) + payload[:20]
    frame = bytearray(masked_frame(payload, opcode=opcode, fin=draw(st.booleans())))
    frame[0] |= draw(st.integers(0, 7)) << 4  # RSV bits
    if draw(st.integers(0, 9)) == 0:  # sometimes lie about the length
        frame[1] = 0x80 | 127
        frame[2:2] = struct.pack(">Q", draw(st.integers(0, 2**64 - 1)))
    return bytes(frame)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=st.lists(st.one_of(frames(), st.binary(max_size=50)), max_size=12))
def test_random_frames_have_documented_outcomes(failures, sequence):
    conn = raw_connect(tree())
    conn.send(VALID)
    assert status_of(conn.received) == 101
    head_end = conn.received.index(b"\r\n\r\n") + 4
    server = conn.server
    for data in sequence:
        conn.send(data)
        # Never more buffered than one frame header plus the frame limit.
        assert len(getattr(server, "data", b"")) <= MAX + 14
    conn.clock.advance(30)
    conn.pump.flush()
    codes = close_codes(conn.received[head_end:])
    assert set(codes) <= CLOSE_CODES, codes
    assert not failures


def close_codes(stream):
    """
    The close codes of the server frames in C{stream}.
    """
    codes, i = [], 0
    while i + 2 <= len(stream):
        opcode, n = stream[i] & 0x0F, stream[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack(">H", stream[i : i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack(">Q", stream[i : i + 8])[0], i + 8
        payload = stream[i : i + n]
        i += n
        if opcode == 8 and len(payload) >= 2:
            codes.append(struct.unpack(">H", payload[:2])[0])
    return codes
