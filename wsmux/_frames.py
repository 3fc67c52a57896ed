"""
WebSocket frame bits wsmux needs outside Autobahn's frame machinery:
cutting whole frames out of what a client sent, unmasking, frame headers
(RFC 6455, 5.2 and 5.3).

The steps every small message takes (L{cut}, L{frame}) are done in C by
wsmux's optional accelerator (C{wsmux/_speedups.c}) where it was built and
C{WSMUX_PURE_PYTHON} is unset (L{SPEEDUPS} says which); otherwise in
Python (L{cut_in_python}, L{frame_in_python}).  Both do the same, and the
tests check that they agree.
"""

from __future__ import annotations

import importlib
import struct
from typing import Any, Callable, Optional

from autobahn.websocket.xormasker import create_xor_masker
from twisted.logger import Logger

from wsmux._compat import env_flag
from wsmux._compat_websockets import apply_mask

_speedups: Any
try:
    _speedups = importlib.import_module("wsmux._speedups")
except ImportError:  # not built (no C compiler where it was installed)
    _speedups = None

# Without websockets' C masker, payloads up to this size are unmasked with
# an integer XOR; larger ones with Autobahn's masker (faster past about
# 2 KiB).
_INT_XOR_MAX = 2048

# Whole binary frames from this size on are gathered into one buffer and
# unmasked in place, in one pass, instead of chunk by chunk.
_BIG = 65536

# Frames the fast path takes: FIN set, no RSV bits, text or binary (and
# a close frame); with permessage-deflate, RSV1 set as well (a whole
# compressed message, RFC 7692 6).
_TEXT = 0x81
_BINARY = 0x82
_CLOSE = 0x88
_TEXT_DEFLATED = 0xC1
_BINARY_DEFLATED = 0xC2

# What the whole compressed messages of one cut may grow to by inflating
# before they are delivered (and the rest of the read inflated): a read of
# small compressed messages holds about this much, and one message,
# inflated at a time.
_INFLATED_MAX = 1 << 20

#: A message cut out: its payload (inflated), whether it is binary, and its
#: length on the wire (compressed, for a compressed message).
Message = tuple[bytes, bool, int]


def unmask_in_python(payload: bytes, mask: bytes) -> bytes:
    """
    XOR C{payload} with the 4-byte C{mask} repeated (RFC 6455, 5.3), in
    Python.
    """
    n = len(payload)
    if n > _INT_XOR_MAX:
        return create_xor_masker(mask, n).process(payload)  # type: ignore[no-any-return]
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


#: C{unmask(payload, mask)}: websockets' C masker (the seam's
#: C{websockets.c_masker}) where it is in use, else L{unmask_in_python}.
unmask: Callable[[bytes, bytes], bytes] = apply_mask if apply_mask is not None else unmask_in_python


def frame_header(opcode_byte: int, length: int) -> bytes:
    """
    An unmasked frame header (server to client).
    """
    if length < 126:
        return bytes((opcode_byte, length))
    if length < 65536:
        return bytes((opcode_byte, 126, length >> 8, length & 0xFF))
    return struct.pack("!BBQ", opcode_byte, 127, length)


def frame_in_python(opcode_byte: int, payload: bytes) -> bytes:
    """
    An unmasked frame (server to client): its header and payload.
    """
    return frame_header(opcode_byte, len(payload)) + payload


def cut_in_python(
    data: bytes,
    i: int,
    max_message: int,
    max_frame: int,
    validate: bool,
    inflate: Optional[Callable[[bytes, bool], Optional[bytes]]] = None,
    masked: bool = True,
) -> tuple[list[Message], int, int, int]:
    """
    Cut the whole, masked, unfragmented text and binary frames that begin
    at C{data[i]}, unmasked; with C{inflate}, compressed ones too.

    It stops at the first frame it does not take whole: not masked, a
    fragment or a control frame, a 64-bit length or a 16-bit one that is
    not minimal, a frame not all in C{data} yet, one past C{max_message} or
    C{max_frame} (when those are above 0), or a text message that is not
    UTF-8 (when C{validate}).  Autobahn's frame path takes it from there
    and fails what needs failing, with its own words.

    @param inflate: decompresses a whole compressed message (and checks a
        text one's UTF-8 when its second argument is true), or returns
        L{None} where the connection is to fail: that message is cut out,
        and ends the cut.
    @param masked: C{False} to cut a server's frames instead (as a client):
        unmasked, and 64-bit lengths taken too.
    @return: the messages, where the cut stopped, their octets on the wire,
        and what inflating added to them.  Past L{_INFLATED_MAX} added, the
        cut stops after the message that passed it.
    """
    end = len(data)
    messages: list[Message] = []
    wire = 0  # octets as they came
    grown = 0  # and what inflating added
    head = 6 if masked else 2  # a 7-bit length's header, with the mask
    while end - i >= head:
        b0 = data[i]
        b1 = data[i + 1]
        if (b1 >= 0x80) is not masked:
            break  # not masked as a client's frame must be, or masked as a server's must not
        if b0 != _TEXT and b0 != _BINARY:
            if inflate is None or (b0 != _TEXT_DEFLATED and b0 != _BINARY_DEFLATED):
                break  # not a whole data frame
        length = b1 & 0x7F
        if length < 126:
            start = i + head
        elif length == 126:
            if end - i < head + 2:
                break
            length = (data[i + 2] << 8) | data[i + 3]
            if length < 126:
                break  # not minimal: Autobahn's path fails it
            start = i + head + 2
        elif masked:
            break  # 64-bit lengths: big frames take another path
        else:
            if end - i < 10:
                break
            length = int.from_bytes(data[i + 2 : i + 10], "big")
            if length < 65536 or length >> 63:
                break  # not minimal, or the top bit set: Autobahn's path fails it
            start = i + 10
        stop = start + length
        if stop > end:
            break
        if (0 < max_message < length) or (0 < max_frame < length):
            break
        payload = data[start:stop]
        if masked and length:
            payload = unmask(payload, data[start - 4 : start])
        if b0 & 0x40:
            assert inflate is not None
            inflated = inflate(payload, b0 == _TEXT_DEFLATED and validate)
            if inflated is None:
                i = stop
                break
            payload = inflated
            grown += len(payload) - length
            if grown > _INFLATED_MAX:
                # Delivered before more is inflated: a read of small
                # compressed messages holds no more than this (and one
                # message) inflated at a time.
                messages.append((payload, (b0 & 0x0F) == 2, length))
                wire += length
                i = stop
                break
        elif b0 == _TEXT and validate:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                break  # Autobahn's path closes with 1007 and says where
        messages.append((payload, (b0 & 0x0F) == 2, length))
        wire += length
        i = stop
    return messages, i, wire, grown


#: Whether wsmux's C accelerator does L{cut} and L{frame}.
SPEEDUPS = _speedups is not None and not env_flag("WSMUX_PURE_PYTHON")

if not SPEEDUPS:
    Logger().info(
        "wsmux: frames are cut and made in Python ({why})",
        why=(
            "WSMUX_PURE_PYTHON is set"
            if _speedups is not None
            else "its C accelerator was not built where it was installed"
        ),
    )

#: C{cut(data, max_message, max_frame, validate) -> (messages, end, octets)}:
#: L{cut_in_python} from the start of C{data}, without compressed frames.
cut: Optional[Callable[[bytes, int, int, bool], tuple[list[Message], int, int]]] = (
    _speedups.cut if SPEEDUPS else None
)

#: C{frame(first_byte, payload) -> bytes}: an unmasked frame.
frame: Callable[[int, bytes], bytes] = _speedups.frame if SPEEDUPS else frame_in_python
