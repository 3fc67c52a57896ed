"""
Text that user code hands wsmux for an HTTP response (a refusal's reason, a
header value), made safe to write into one.

A status reason or header value goes into the response head as it is, so a
CR or LF in it would end the line and let whoever chose the text write
headers or a body of their own (response splitting): a hook that puts part
of the request path into its reason hands that choice to any client.  Every
such text passes through here first.
"""

from __future__ import annotations

import re

# The longest reason phrase wsmux writes; the full text stays in the log.
MAX_REASON = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def status_reason(reason: object, default: str = "Error") -> str:
    """
    A reason phrase that is safe in a status line: control characters
    (CR and LF among them) become spaces, anything outside ASCII becomes
    C{?}, and it is at most L{MAX_REASON} characters.

    @param reason: the text user code gave (anything: it is made a string).
    @param default: what to use when nothing printable is left.
    """
    text = _CONTROL.sub(" ", str(reason)).strip()
    text = text.encode("ascii", "replace").decode("ascii")[:MAX_REASON].strip()
    return text or default


def header_value(value: object) -> bytes:
    """
    A header value that is safe in a response head: control characters
    (CR and LF among them) become spaces.

    @param value: C{bytes} (kept byte for byte otherwise) or text (UTF-8).
    """
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return bytes(32 if (b < 32 and b != 9) or b == 127 else b for b in raw).strip()
