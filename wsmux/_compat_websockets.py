"""
The use wsmux makes of the C masker of the C{websockets} package (see
L{wsmux._compat}): its C{speedups} module, which its wheels build, has no
documented API; wsmux calls its C{apply_mask} to unmask what clients send.

Checked against websockets 13.0, 15.0 and 17.4.  Without it (websockets
installed without its C part, a check failing, or C{WSMUX_PUBLIC_PATH} set)
payloads are unmasked in Python (L{wsmux._frames.unmask_in_python}).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from wsmux._compat import declare

try:
    from websockets.speedups import apply_mask as _apply_mask
except Exception:  # without its C part (or broken): the check says so
    _apply_mask = None  # type: ignore[assignment]


def _xor(payload: bytes, mask: bytes) -> bytes:
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def _check() -> Optional[str]:
    if _apply_mask is None:
        return "websockets was installed without its C speedups module"
    # Odd lengths, and every offset of the mask.
    for size in (0, 1, 3, 4, 7, 64, 1031):
        sample = bytes(range(256)) * (size // 256 + 1)
        sample = sample[:size]
        if _apply_mask(sample, b"\x9a\x01\xff\x37") != _xor(sample, b"\x9a\x01\xff\x37"):
            return "websockets.speedups.apply_mask answers otherwise"
    return None


C_MASKER = declare(
    "websockets.c_masker",
    touches=("websockets.speedups.apply_mask (undocumented)",),
    why=(
        "a client's payload is unmasked in C: 85-190 ns up to 4 KiB where Python's "
        "integer XOR takes 0.5-4 us, and 36 us a MiB where Autobahn's masker takes "
        "900 us"
    ),
    checked="websockets 13.0, 15.0, 17.4",
    fallback="payloads are unmasked in Python (an integer XOR, Autobahn's masker past 2 KiB)",
    check=_check,
)

#: websockets' C masker, C{apply_mask(payload, mask) -> bytes}, or L{None}.
apply_mask: Optional[Callable[[Any, bytes], bytes]] = _apply_mask if C_MASKER else None
