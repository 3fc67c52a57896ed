"""
WebSocket frame bits wsmux needs outside Autobahn's frame machinery: frame
headers and unmasking (RFC 6455, 5.2 and 5.3).
"""

from __future__ import annotations

import struct
from typing import Callable

from autobahn.websocket.xormasker import create_xor_masker

from wsmux._compat_websockets import apply_mask

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
