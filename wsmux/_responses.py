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
from http import HTTPStatus
from typing import Any, Mapping

from wsmux.logs import log

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


def http_phrase(code: int, default: str = "Error") -> str:
    """
    The standard reason phrase of an HTTP status (C{default} for a status
    without one).
    """
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return default


def header_value(value: object) -> bytes:
    """
    A header value that is safe in a response head: control characters
    (CR and LF among them) become spaces.

    @param value: C{bytes} (kept byte for byte otherwise) or text (UTF-8).
    """
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return bytes(32 if (b < 32 and b != 9) or b == 127 else b for b in raw).strip()


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


# Headers that frame the response: only wsmux (and Autobahn) set them.
_FRAMING = frozenset(
    ("content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer")
)


def safe_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """
    Headers from user code, fit for a response head: names that are HTTP
    tokens and do not frame the response (others dropped, with a log
    line), values without control characters.
    """
    safe: dict[str, Any] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not name or not _TOKEN.issuperset(name):
            log.error(
                "a handler or hook gave a header name that is not a token: {name!r}; dropped",
                name=name,
            )
            continue
        if name.lower() in _FRAMING:
            log.error(
                "a handler or hook gave the {name} header, which wsmux writes itself; dropped",
                name=name,
            )
            continue
        if isinstance(value, (str, bytes)):
            values = [value]
        else:
            try:
                values = list(value)
            except TypeError:  # a number, say: Autobahn writes it as text
                values = [value]
        # Autobahn writes the head as UTF-8 text; the hook's answer is
        # written the same way (header_pairs).
        safe[name] = [header_value(v).decode("utf-8", "replace") for v in values]
    return safe


def header_pairs(headers: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """
    Headers from user code as C{(name, value)} pairs for a response, made
    safe (see L{safe_headers}); a list of values gives one header each.
    """
    return [
        (name.encode("ascii"), value.encode("utf-8"))
        for name, values in safe_headers(headers).items()
        for value in values
    ]


def safe_accept(result: Any) -> Any:
    """
    What C{onConnect} returned, with the headers it adds to the 101 made
    safe: a value built from the request (a room name, say) must not carry
    a line break into the response head.
    """
    if isinstance(result, tuple) and len(result) > 1 and result[1]:
        return (result[0], safe_headers(result[1])) + tuple(result[2:])
    return result
