"""
The direct opening handshake does what Autobahn's own handshake does.

Each test sends the same request to a route whose handler opens from the
parsed request and to one whose handler opts out (by overriding
C{processHandshake}, so the request head is replayed into Autobahn), and
compares the bytes sent back, whether the connection was dropped, what
C{onConnect} saw and the request attributes Autobahn sets on the protocol.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from autobahn.websocket.types import ConnectionDeny
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed

from wsmux import EchoHandler, Route, RouteTree
from wsmux._compat_autobahn import (
    DIRECT_HANDSHAKE,
    DirectHandshakeMixin,
    GuardedHandshakeMixin,
    direct_handshake_ok,
)
from wsmux._upgrades import autobahn_misreads
from wsmux.testing import masked_frame, raw_connect

ATTRS = (
    "http_request_data",
    "http_status_line",
    "http_headers",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "websocket_version",
    "websocket_protocols",
    "websocket_origin",
    "websocket_extensions",
    "websocket_protocol_in_use",
    "http_response_data",
    "state",
    "wasNotCleanReason",
)


REQUEST_FIELDS = (
    "peer",
    "headers",
    "host",
    "path",
    "params",
    "version",
    "origin",
    "protocols",
    "extensions",
)


class Recording(EchoHandler):
    """
    Echo, remembering what onConnect was given.
    """

    def onConnect(self, request: Any) -> Any:
        self.seen = {name: getattr(request, name) for name in REQUEST_FIELDS}
        return super().onConnect(request)


class Replayed(Recording):
    def processHandshake(self) -> None:
        super().processHandshake()


def exchange(handler: type, request: bytes, after: bytes = b"", **options: Any) -> tuple[Any, ...]:
    options.setdefault("ping_interval", 0)
    routes = [Route("/echo", (handler,), options), Route("/rooms/{room}", (handler,), options)]
    raw = raw_connect(RouteTree(routes))
    raw.send(request + after)
    server = raw.server
    attrs = {} if server is None else {a: getattr(server, a, None) for a in ATTRS}
    seen = getattr(server, "seen", None)
    raw.clock.advance(60)
    raw.pump.flush()
    # The Date header is the wall clock's: two exchanges may straddle a second.
    received = re.sub(rb"(?im)^date: [^\r\n]*\r\n", b"Date: (now)\r\n", raw.received)
    return received, raw.lost, attrs, seen


def same(request: bytes, after: bytes = b"", **options: Any) -> tuple[Any, ...]:
    direct = exchange(Recording, request, after, **options)
    replayed = exchange(Replayed, request, after, **options)
    assert direct == replayed
    return direct


def head(
    lines: list[str], target: str = "/echo", method: str = "GET", version: str = "1.1"
) -> bytes:
    return (
        f"{method} {target} HTTP/{version}\r\n" + "".join(f"{x}\r\n" for x in lines) + "\r\n"
    ).encode("latin-1")


GOOD = [
    "Host: 127.0.0.1:8080",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
]


@pytest.mark.uses_internal("autobahn.direct_handshake")
def test_which_handlers_open_directly():
    assert direct_handshake_ok(Recording)
    assert not direct_handshake_ok(Replayed)
    raw = raw_connect(RouteTree([Route("/echo", Recording)]))
    raw.send(head(GOOD))
    assert isinstance(raw.server, DirectHandshakeMixin)


def test_a_plain_upgrade_opens_the_same_way():
    received, lost, attrs, seen = same(head(GOOD), masked_frame(b"hello"))
    assert received.startswith(b"HTTP/1.1 101 ")
    assert received.endswith(b"\x81\x05hello")  # the frame sent with the request
    assert not lost
    assert seen["path"] == "/echo" and seen["host"] == "127.0.0.1"


def test_path_parameters_in_a_segment_the_same_way():
    _, _, attrs, seen = same(head(GOOD, "/rooms/a;b=c?d"))
    assert seen["path"] == "/rooms/a"  # Autobahn's urlparse drops ;params
    assert attrs["http_request_uri"] == "/rooms/a;b=c?d"


def test_query_subprotocols_origin_and_extensions_the_same_way():
    lines = GOOD + [
        "Origin: https://app.example.com",
        "Sec-WebSocket-Protocol: chat, superchat",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        "Cookie: a=1",
        "Cookie: b=2",
        "X-Thing:   spaced out  ",
    ]
    _, _, attrs, seen = same(
        head(lines, "/echo?room=a&room=b&x=%20y"),
        subprotocols=["superchat"],
        deflate="on",
    )
    assert attrs["websocket_protocol_in_use"] == "superchat"
    assert seen["params"] == {"room": ["a", "b"], "x": [" y"]}
    assert seen["headers"]["cookie"] == "a=1, b=2"
    assert seen["origin"] == "https://app.example.com"


def test_header_values_reach_the_handler_as_sent():
    # Bytes str.strip takes for spaces (0xa0, the last byte of UTF-8 "à"):
    # both handshakes cut them from the end of a value.  (This head takes
    # the direct path; one with a byte str.splitlines ends a line at takes
    # Autobahn's, below.)
    lines = GOOD + [
        "X-Name: caf\xc3\xa0",
        "X-Other: v\x1f\xa0",
        "Origin: http://127.0.0.1:8080\xa0",
    ]
    _, lost, attrs, seen = same(head(lines))
    assert not lost
    # (Unless the direct path is off: WSMUX_PUBLIC_PATH.)
    assert autobahns_path_takes(head(lines)) == (not DIRECT_HANDSHAKE, b"HTTP/1.1 101 ")
    assert seen["headers"]["x-name"] == "caf\xc3\xa0"
    assert seen["headers"]["x-other"] == "v\x1f\xa0"
    assert seen["headers"]["origin"] == "http://127.0.0.1:8080\xa0"
    assert seen["origin"] == "http://127.0.0.1:8080"
    # Autobahn's own parser cut a value at 0x85 too.
    lines = GOOD + [
        "X-Note: a\x85b",
        "X-Name: café \t",
        "X-Name: caf\xc3\xa0",
        "X-Other: v\x0bw\x1cx\x0c",
        "Origin: http://127.0.0.1:8080\xa0",
    ]
    _, lost, attrs, seen = same(head(lines))
    assert not lost
    assert seen["headers"] is attrs["http_headers"]
    assert seen["headers"]["x-note"] == "a\x85b"
    assert seen["headers"]["x-name"] == "café, caf\xc3\xa0"
    assert seen["headers"]["x-other"] == "v\x0bw\x1cx\x0c"
    # What Autobahn takes from a header, it strips, on both paths.
    assert seen["headers"]["origin"] == "http://127.0.0.1:8080\xa0"
    assert seen["origin"] == "http://127.0.0.1:8080"


def test_a_head_autobahns_parser_would_misread_is_refused():
    # Where Autobahn's parser would read another head than the one sent (a
    # header of its own after 0x85, or a header its handshake reads cut
    # short): a request no proxy took for an upgrade must not become one.
    bad = {
        "hidden upgrade": GOOD[:2] + ["Connection: keep-alive", "X-A: a\x85connection: upgrade"],
        "hidden header": GOOD + ["X-Note: a\x85x-user: admin"],
        "hidden subprotocol": GOOD + ["X-A: a\x0bsec-websocket-protocol: admin"],
        "cut upgrade": ["Upgrade: \x85websocket", *GOOD[2:], GOOD[0]],
        "cut key": GOOD[:3] + ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\x1c", GOOD[4]],
    }
    for why, lines in bad.items():
        received, lost, _, seen = same(head(lines))
        assert received.startswith(b"HTTP/1.1 400 Bad Request: byte 0x"), why
        assert lost and seen is None, why
    # wsmux's site refuses a request line past printable ASCII; a user's own
    # twisted.web site lets 0x7f-0xb0 through, which Autobahn's path checks.
    hidden = head(GOOD).replace(b"/echo ", b"/echo?\xa0HTTP/1.1\x85connection:upgrade ", 1)
    assert autobahn_misreads(hidden) == "byte 0xa0 in the request line"
    assert autobahn_misreads(head(GOOD).replace(b"/echo ", b"/echo?\xa0 ", 1))
    assert autobahn_misreads(head(GOOD + ["X-Name: \xc3\x85sa"])) is None


def test_in_a_users_own_site_a_target_past_ascii_takes_autobahns_path(monkeypatch):
    # twisted.web's own site lets bytes 0x7f-0xb0 into a target; the direct
    # path leaves such a head to Autobahn's, where 0xa0 and 0x85 are 400.
    from twisted.web.server import Site

    from wsmux import testing

    monkeypatch.setattr(testing, "_site", lambda resource, clock: Site(resource, reactor=clock))
    for target, answer in ((b"/echo?\x80", b"HTTP/1.1 101 "), (b"/echo?\xa0", b"HTTP/1.1 400 ")):
        request = head(GOOD).replace(b"/echo ", target + b" ", 1)
        assert autobahns_path_takes(request) == (True, answer), target
    assert autobahns_path_takes(head(GOOD)) == (not DIRECT_HANDSHAKE, b"HTTP/1.1 101 ")


def autobahns_path_takes(request: bytes) -> tuple[bool, bytes]:
    # Whether C{request} took Autobahn's path (processHandshake, which the
    # direct path never calls), and the answer's status line.
    taken = []
    original = GuardedHandshakeMixin.processHandshake

    def spy(self: Any) -> None:
        taken.append(True)
        original(self)

    GuardedHandshakeMixin.processHandshake = spy  # type: ignore[method-assign]
    try:
        raw = raw_connect(RouteTree([Route("/echo", Recording)]))
        raw.send(request)
    finally:
        GuardedHandshakeMixin.processHandshake = original  # type: ignore[method-assign]
    return bool(taken), raw.received[:13]


def test_refusals_keep_autobahns_status_and_reason():
    bad = {
        "no key": [x for x in GOOD if "Key" not in x],
        "short key": GOOD[:3] + ["Sec-WebSocket-Key: abc==", GOOD[4]],
        "two keys": GOOD + ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="],
        "version 8": GOOD[:4] + ["Sec-WebSocket-Version: 8"],
        "no version": GOOD[:4],
        "two hosts": GOOD + ["Host: other"],
        "bad key character": GOOD[:3] + ["Sec-WebSocket-Key: *GhlIHNhbXBsZSBub25jZQ==", GOOD[4]],
        "two origins": GOOD + ["Origin: http://a.example", "Origin: http://b.example"],
        "bad port": ["Host: example.com:http"] + GOOD[1:],
        "no connection upgrade": GOOD[:2] + ["Connection: keep-alive"] + GOOD[3:],
        "repeated subprotocol": GOOD + ["Sec-WebSocket-Protocol: a, a"],
        "bad origin": GOOD + ["Origin: nothing"],
        "two extension headers": GOOD
        + ["Sec-WebSocket-Extensions: x", "Sec-WebSocket-Extensions: y"],
        "bad deflate offer": GOOD + ["Sec-WebSocket-Extensions: permessage-deflate; bogus=1"],
    }
    for why, lines in bad.items():
        received, lost, attrs, _ = same(head(lines), deflate="on")
        assert not received.startswith(b"HTTP/1.1 101 "), why
        assert lost, why


class Denying(Recording):
    def onConnect(self, request: Any) -> Any:
        super().onConnect(request)
        raise ConnectionDeny(451, "go away")


class DenyingReplayed(Denying):
    def processHandshake(self) -> None:
        super().processHandshake()


class Later(Recording):
    def onConnect(self, request: Any) -> Any:
        super().onConnect(request)
        self.answer: Deferred[Any] = Deferred()
        return self.answer


class Coroutine(Recording):
    async def onConnect(self, request: Any) -> Any:  # type: ignore[override]
        Recording.onConnect(self, request)
        return await succeed("chat")


def test_on_connect_denial_and_errors_match():
    direct = exchange(Denying, head(GOOD))
    replayed = exchange(DenyingReplayed, head(GOOD))
    assert direct == replayed
    assert direct[0].startswith(b"HTTP/1.1 451 go away")


def test_on_connect_answering_later_arms_the_open_handshake_timeout():
    raw = raw_connect(RouteTree([Route("/echo", Later, {"open_handshake_timeout": 5})]))
    raw.send(head(GOOD))
    server = raw.server
    assert server.openHandshakeTimeoutCall is not None
    assert raw.received == b""
    server.answer.callback(None)
    raw.pump.flush()
    assert raw.received.startswith(b"HTTP/1.1 101 ")
    assert server.openHandshakeTimeoutCall is None

    raw = raw_connect(RouteTree([Route("/echo", Later, {"open_handshake_timeout": 5})]))
    raw.send(head(GOOD))
    raw.clock.advance(6)
    raw.pump.flush()
    assert raw.lost and raw.received == b""
    assert raw.server.wasOpenHandshakeTimeout


def test_a_coroutine_on_connect_opens():
    raw = raw_connect(RouteTree([Route("/echo", Coroutine)]))
    raw.send(head(GOOD + ["Sec-WebSocket-Protocol: chat"]))
    assert raw.received.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Protocol: chat\r\n" in raw.received


def test_a_synchronous_open_leaves_no_open_handshake_timer():
    raw = raw_connect(RouteTree([Route("/echo", Recording, {"open_handshake_timeout": 5})]))
    raw.send(head(GOOD))
    assert raw.server.openHandshakeTimeoutCall is None
    assert raw.server.openHandshakeTimeout == 5


# A good request has each of these once, with the first value; a drawn
# request changes a few of them (absent, repeated, another value).
HEADERS = {
    "Host": ["127.0.0.1:8080", "example.com", "[::1]:80", "h:x", "[::1]"],
    "Upgrade": ["websocket", "WebSocket", "h2c, websocket", "h2c"],
    "Connection": ["Upgrade", "keep-alive, upgrade", "close"],
    "Sec-WebSocket-Key": [
        "dGhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZQ",
        "*GhlIHNhbXBsZSBub25jZQ==",
    ],
    "Sec-WebSocket-Version": ["13", "8", "x"],
    "Sec-WebSocket-Protocol": ["chat", "a, b", "b, b"],
    "Origin": ["http://a.example", "null", "file:///x", "nonsense", "http://a.example:99999"],
    "Sec-WebSocket-Extensions": [
        "permessage-deflate",
        "permessage-deflate; server_max_window_bits=99",
        "x-foo",
    ],
}
changes = st.dictionaries(
    st.sampled_from(sorted(HEADERS)),
    st.integers(0, 4).flatmap(
        lambda n: st.lists(st.integers(0, 4), min_size=min(n, 2), max_size=min(n, 2))
    ),
    max_size=3,
)
targets = st.sampled_from(
    ["/echo", "/echo?a=1&a=2&b", "/rooms/a;p=1", "/echo?q=%41", "/rooms/x?y#z"]
)


@settings(max_examples=300, deadline=None)
@given(changed=changes, target=targets, order=st.randoms(use_true_random=False))
def test_random_requests_get_the_same_answer(changed, target, order):
    lines = []
    for name, values in HEADERS.items():
        picks = changed.get(name, [0])
        lines += [f"{name}: {values[i % len(values)]}" for i in picks]
    order.shuffle(lines)
    direct = exchange(Recording, head(lines, target), masked_frame(b"x"), **OPTIONS)
    replayed = exchange(Replayed, head(lines, target), masked_frame(b"x"), **OPTIONS)
    assert direct == replayed


OPTIONS: dict[str, Any] = {"deflate": "on", "subprotocols": ["b", "chat"]}


class BrokenStart(Recording):
    def connectionMade(self) -> None:
        super().connectionMade()
        raise RuntimeError("handler bug")


class BadSubprotocol(Recording):
    def onConnect(self, request: Any) -> Any:
        super().onConnect(request)
        return "never-offered"


def test_a_handler_failing_at_the_start_drops_only_its_connection():
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        raw = raw_connect(RouteTree([Route("/echo", BrokenStart)]))
        raw.send(head(GOOD))
        raw.pump.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert raw.lost
    assert b"500" not in raw.received and not raw.received.startswith(b"HTTP/1.1 101")
    assert any(
        "failed while taking the connection over" in str(e.get("log_format")) for e in events
    )
    for event in events:
        if "log_failure" in event and "handler bug" not in str(event["log_failure"].value):
            raise AssertionError(f"unexpected failure logged: {event['log_failure']}")


def test_an_onconnect_answer_autobahn_refuses_gets_a_500():
    raw = raw_connect(RouteTree([Route("/echo", BadSubprotocol)]))
    raw.send(head(GOOD + ["Sec-WebSocket-Protocol: chat"]))
    raw.pump.flush()
    assert raw.received.startswith(b"HTTP/1.1 500 ")
    assert raw.lost


def test_transport_details_are_autobahns():
    import socket

    from autobahn.twisted.util import create_transport_details
    from autobahn.wamp.types import TransportDetails
    from twisted.internet import tcp
    from twisted.internet.protocol import Protocol
    from twisted.internet.testing import MemoryReactor

    from wsmux._compat_autobahn import transport_details

    one, other = socket.socketpair()
    try:
        for client in [("127.0.0.1", 40000), ("::ffff:127.0.0.1", 40001, 0, 0)]:
            transport = tcp.Server(one, Protocol(), client, None, 1, MemoryReactor())
            theirs = create_transport_details(transport, True)
            theirs.channel_framing = TransportDetails.CHANNEL_FRAMING_WEBSOCKET
            assert transport_details(transport, True).marshal() == theirs.marshal()
    finally:
        one.close()
        other.close()


class KeyedAttributes(EchoHandler):
    """
    A handler whose __getattr__ raises KeyError for a name it does not
    know (as a dict-backed attribute bag might).
    """

    def __getattr__(self, name: str) -> Any:
        raise KeyError(name)


def test_a_handler_whose_getattr_raises_keyerror_still_opens():
    # Whichever path the seam takes: wsmux asks the handler's class, not the
    # instance, whether it opens from the parsed request.
    raw = raw_connect(RouteTree([Route("/echo", KeyedAttributes, {"ping_interval": 0})]))
    raw.send(head(GOOD) + masked_frame(b"hi"))
    raw.pump.flush()
    assert raw.received.startswith(b"HTTP/1.1 101 "), raw.received[:60]
    assert raw.received.endswith(b"\x81\x02hi")
    assert not raw.lost
