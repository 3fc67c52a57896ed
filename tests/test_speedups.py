"""
wsmux's C accelerator (wsmux/_speedups.c) does what the Python path does:
the same messages cut from the same bytes, stopping at the same place, and
the same frames made.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.twistd_process import python_process
from wsmux import _frames
from wsmux._frames import _BINARY, _TEXT, cut_in_python, frame_in_python
from wsmux.testing import masked_frame

try:
    from wsmux import _speedups as speedups
except ImportError:  # not built here: test_built_where_it_can_be says whether it should be
    speedups = None

# The comparisons call the C functions directly: they need them built, not
# in use (tox's oldest environment runs them with WSMUX_PURE_PYTHON set).
built = pytest.mark.skipif(speedups is None, reason="the C accelerator was not built here")


def test_built_where_it_can_be():
    # Where the install had a C compiler and Python's headers (as in CI),
    # the accelerator must have been built: its optional build must not
    # fail unnoticed.
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if shutil.which(compiler) is None or not headers.exists():
        pytest.skip(f"no {compiler} or no {headers} here: the accelerator cannot be built")
    assert speedups is not None, "wsmux's C accelerator was not built, though it could be"


def masked(first: int, payload: bytes, mask: bytes = b"\x37\xfa\x21\x3d", length=None) -> bytes:
    # A client's frame with this first byte (RSV bits too); length=126 with
    # a short payload makes a non-minimal 16-bit length.
    frame = bytes((first,)) + masked_frame(payload, mask=mask)[1:]
    if length == 126:
        frame = bytes((first, 0x80 | 126)) + len(payload).to_bytes(2, "big") + frame[2:]
    return frame


def both(data: bytes, max_message: int = 0, max_frame: int = 0, validate: bool = True):
    in_c = speedups.cut(data, max_message, max_frame, validate)
    messages, end, octets, grown = cut_in_python(data, 0, max_message, max_frame, validate)
    assert grown == 0
    assert in_c == (messages, end, octets)
    for payload, is_binary, length in in_c[0]:
        assert type(payload) is bytes and type(is_binary) is bool and type(length) is int
    return in_c


@pytest.mark.skipif(
    not _frames.SPEEDUPS,
    reason="the C accelerator is not in use here (not built, or WSMUX_PURE_PYTHON is set)",
)
def test_the_c_path_is_the_one_in_use():
    assert _frames.cut is speedups.cut
    assert _frames.frame is speedups.frame


@built
def test_messages_of_every_small_length_and_around_the_16_bit_switch():
    sizes = [*range(0, 140), 1000, 4093, 4096, 65535]
    data = b"".join(masked(_BINARY if n % 2 else _TEXT, b"a" * n) for n in sizes)
    messages, end, octets = both(data)
    assert end == len(data)
    assert [len(p) for p, _, _ in messages] == sizes
    assert octets == sum(sizes)
    assert [b for _, b, _ in messages] == [bool(n % 2) for n in sizes]


@pytest.mark.parametrize(
    "tail, why",
    [
        (bytes((0x82, 0x05)) + b"hello", "not masked"),
        (masked(0x02, b"frag"), "a fragment"),
        (masked(0x89, b"ping"), "a control frame"),
        (masked(0x88, b"\x03\xe8"), "a close frame"),
        (masked(0xC1, b"compressed"), "compressed"),
        (masked(0x92, b"rsv"), "an RSV bit"),
        (masked(0x82, b"x" * 10, length=126), "a 16-bit length that is not minimal"),
        (masked(0x82, b"x" * 70000), "a 64-bit length"),
        (masked(0x82, b"x" * 300)[:-1], "not all here"),
        (masked(0x82, b"x" * 300)[:7], "a 16-bit length not all here"),
        (masked(0x82, b"")[:5], "a header not all here"),
        (masked(0x81, b"caf\xc3"), "text cut inside a code point"),
        (masked(0x81, b"\xed\xa0\x80"), "a surrogate"),
    ],
)
@built
def test_the_cut_stops_where_the_python_path_stops(tail, why):
    head = masked(_TEXT, b"first") + masked(_BINARY, b"second")
    # A frame not all here ends what came; after any other, more follows.
    after = b"" if "not all here" in why else masked(_TEXT, b"after")
    messages, end, _ = both(head + tail + after)
    assert [p for p, _, _ in messages] == [b"first", b"second"], why
    assert end == len(head), why


@built
def test_limits_stop_the_cut_and_zero_or_less_is_none():
    data = masked(_TEXT, b"a" * 10) + masked(_TEXT, b"b" * 20)
    assert len(both(data, max_message=15)[0]) == 1
    # A handler may set a limit as a float: taken as Python compares it.
    assert len(both(data, max_message=15.5)[0]) == 1
    assert len(both(data, max_message=20.0, max_frame=10.0)[0]) == 1
    assert len(both(data, max_message=0.0, max_frame=-2.5)[0]) == 2
    assert len(both(data, max_message=float("inf"), max_frame=float("nan"))[0]) == 2
    assert len(both(data, max_message=1e300)[0]) == 2
    assert len(both(data, max_frame=15)[0]) == 1
    assert len(both(data, max_message=20, max_frame=20)[0]) == 2
    assert len(both(data, max_message=-1, max_frame=0)[0]) == 2
    assert len(both(data, max_message=2**70, max_frame=2**64)[0]) == 2


@built
def test_text_is_not_checked_unless_asked():
    messages, _, _ = both(masked(_TEXT, b"\xff\xfe"), validate=False)
    assert messages == [(b"\xff\xfe", False, 2)]


# Bytes near UTF-8: every lead byte, continuation bytes, and the edges of
# the ranges the RFC excludes (overlong forms, surrogates, past U+10FFFF).
near_utf8 = st.lists(
    st.one_of(
        st.integers(0, 255),
        st.sampled_from([0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0]),
        st.sampled_from([0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF]),
    ),
    max_size=24,
).map(bytes)


@built
@settings(max_examples=3000, deadline=None)
@given(st.one_of(near_utf8, st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass"))))
@example(b"\xed\xa0\x80")
@example(b"\xf4\x90\x80\x80")
@example(b"\xf0\x8f\xbf\xbf")
@example(b"\xe0\x9f\xbf")
@example(b"\xc1\xbf")
@example(b"abcdefg\xc3\xa9")
@example(b"abcdefgh\xf0\x9f\x98")
def test_text_is_accepted_exactly_when_python_decodes_it(payload):
    try:
        payload.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    # Behind ASCII of every length, so that the 8-byte steps meet it at
    # every offset.
    for pad in range(9):
        messages, _, _ = both(masked(_TEXT, b"p" * pad + payload))
        assert len(messages) == (1 if valid else 0)


frames = st.lists(
    st.tuples(
        st.sampled_from([0x81, 0x82, 0x01, 0x89, 0xC2]),
        st.binary(max_size=300),
        st.binary(min_size=4, max_size=4),
    ),
    max_size=8,
)


@built
@settings(max_examples=500, deadline=None)
@given(frames, st.integers(0, 2000), st.integers(-1, 400), st.integers(-1, 400), st.booleans())
def test_any_stream_is_cut_alike(parts, cut_at, max_message, max_frame, validate):
    data = b"".join(masked(first, payload, mask) for first, payload, mask in parts)
    both(data[:cut_at], max_message, max_frame, validate)
    both(data, max_message, max_frame, validate)


@built
def test_a_bytearray_or_memoryview_is_cut_as_bytes():
    data = masked(_TEXT, b"hello") + masked(_BINARY, b"\x00\x01")
    for view in (bytearray(data), memoryview(data)):
        assert speedups.cut(view, 0, 0, True) == speedups.cut(data, 0, 0, True)


@built
@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("first", [0x81, 0x82, 0xC1, 0xC2])
def test_frames_are_made_alike(first, length):
    payload = os.urandom(length)
    assert speedups.frame(first, payload) == frame_in_python(first, payload)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: speedups.cut(b""), TypeError),
        (lambda: speedups.cut("text", 0, 0, True), TypeError),
        (lambda: speedups.cut(b"", "0", 0, True), TypeError),
        (lambda: speedups.cut(b"", 0, None, True), TypeError),
        (lambda: speedups.frame(256, b""), ValueError),
        (lambda: speedups.frame(-1, b""), ValueError),
        (lambda: speedups.frame(0x81, "text"), TypeError),
        (lambda: speedups.frame(0x81), TypeError),
    ],
)
@built
def test_wrong_arguments_raise(call, error):
    with pytest.raises(error):
        call()


@built
def test_wsmux_pure_python_leaves_it_unused():
    code = (
        "from wsmux import _frames; "
        "print(_frames.SPEEDUPS, _frames.cut, _frames.frame is _frames.frame_in_python)"
    )
    out = python_process(code, {**os.environ, "WSMUX_PURE_PYTHON": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "None", "True"]


def test_a_servers_frames_are_cut_unmasked_64_bit_lengths_too():
    # cut_in_python(masked=False): what a proxy route's backend leg takes.
    def server_frame(first: int, payload: bytes, header: bytes = b"") -> bytes:
        n = len(payload)
        if header:
            return bytes((first,)) + header + payload
        if n < 126:
            return bytes((first, n)) + payload
        if n < 65536:
            return bytes((first, 126)) + n.to_bytes(2, "big") + payload
        return bytes((first, 127)) + n.to_bytes(8, "big") + payload

    good = [b"", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 70000]
    data = b"".join(server_frame(_BINARY, p) for p in good) + server_frame(_TEXT, "é".encode())
    messages, end, octets, grown = cut_in_python(data, 0, 0, 0, True, masked=False)
    assert [p for p, _, _ in messages] == [*good, "é".encode()]
    assert end == len(data) and octets == sum(map(len, good)) + 2 and grown == 0
    stops = [
        masked_frame(b"masked", opcode=2),
        server_frame(_BINARY, b"x" * 1000, header=b"\x7f" + (1000).to_bytes(8, "big")),
        server_frame(_BINARY, b"", header=b"\x7f" + (1 << 63 | 70000).to_bytes(8, "big")),
        server_frame(_TEXT, b"\xff"),
        server_frame(_BINARY, b"y" * 70000)[:-1],
        server_frame(0x89, b"ping"),
    ]
    for stop in stops:
        head = server_frame(_TEXT, b"first")
        messages, end, _, _ = cut_in_python(head + stop, 0, 0, 0, True, masked=False)
        assert [p for p, _, _ in messages] == [b"first"] and end == len(head)
    # Limits, as for a client's frames.
    data = server_frame(_BINARY, b"z" * 70000)
    assert cut_in_python(data, 0, 69999, 0, True, masked=False)[0] == []
    assert cut_in_python(data, 0, 0, 69999, True, masked=False)[0] == []
