"""
The request head read in one pass is read as twisted.web's line parser
reads it.

Each test sends the same bytes to a site whose channel may take a whole
head in one pass and to one whose channel always leaves it to
twisted.web's line parser, and compares the bytes sent back, whether the
connection was closed, and what the resources saw of each request.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource

from wsmux import EchoHandler, Route, RouteTree
from wsmux.limits import ServerLimits
from wsmux.site import GuardedHTTPChannel, HeadDeadlines, WebSocketSite
from wsmux.testing import masked_frame, raw_connect

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class Seen(Resource):
    """
    Answers with what it saw of the request, and remembers it.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[Any, ...]] = []

    def render(self, request: Any) -> bytes:
        headers = sorted(request.requestHeaders.getAllRawHeaders())
        body = request.content.read()
        self.requests.append((request.method, request.uri, request.clientproto, headers, body))
        return repr(self.requests[-1]).encode()


@contextmanager
def reading(one_pass: bool) -> Iterator[None]:
    """
    Let channels read a whole head in one pass, or make them leave every
    head to twisted.web's line parser.
    """
    if one_pass:
        yield
        return
    with mock.patch.object(GuardedHTTPChannel, "_whole_head", lambda self, data: False):
        yield


def exchange(chunks: list[bytes], one_pass: bool) -> tuple[Any, ...]:
    seen = Seen()
    limits = ServerLimits(max_request_line=200, max_headers=12, max_header_bytes=600)
    tree = RouteTree([Route("/echo", (EchoHandler,), {"ping_interval": 0})], limits=limits)
    tree.mount_resource("/info", seen)
    with reading(one_pass):
        raw = raw_connect(tree)
        for chunk in chunks:
            raw.send(chunk)
        raw.clock.advance(60)
        raw.pump.flush()
    received = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", raw.received)
    return received, raw.lost, seen.requests


def same(chunks: list[bytes]) -> tuple[Any, ...]:
    one_pass = exchange(chunks, True)
    assert one_pass == exchange(chunks, False)
    return one_pass


def head(request_line: str, lines: list[str]) -> bytes:
    return (request_line + "\r\n" + "".join(f"{x}\r\n" for x in lines) + "\r\n").encode("latin-1")


UPGRADE = [
    "Host: 127.0.0.1:8080",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
]


def test_an_upgrade_and_the_frame_sent_with_it():
    received, lost, _ = same([head("GET /echo HTTP/1.1", UPGRADE) + masked_frame(b"hi")])
    assert received.startswith(b"HTTP/1.1 101 ")
    assert received.endswith(b"\x81\x02hi")
    assert not lost


@pytest.mark.uses_internal("twisted.one_pass_head")
def test_the_one_pass_read_is_the_one_taken():
    # The patch in exchange() must change which parser runs, or the
    # comparisons above prove nothing.
    calls = []
    original = GuardedHTTPChannel._whole_head

    def counting(self: Any, data: bytes) -> bool:
        taken = original(self, data)
        calls.append(taken)
        return taken

    with mock.patch.object(GuardedHTTPChannel, "_whole_head", counting):
        exchange([head("GET /info HTTP/1.1", ["Host: a"])], True)
    assert calls == [True]


def test_pipelined_requests_and_a_body():
    first = head("GET /info?x=1 HTTP/1.1", ["Host: a", "X-A: 1", "x-a: 2"])
    second = head("POST /info HTTP/1.1", ["Host: a", "Content-Length: 3"]) + b"abc"
    received, _, requests = same([first + second])
    assert [r[:2] for r in requests] == [(b"GET", b"/info?x=1"), (b"POST", b"/info")]
    assert requests[0][3] == [(b"Host", [b"a"]), (b"X-A", [b"1", b"2"])]
    assert requests[1][4] == b"abc"
    assert received.count(b"HTTP/1.1 200 ") == 2


def test_heads_over_the_caps_are_refused_the_same_way():
    too_long = head("GET /info?" + "x" * 300 + " HTTP/1.1", ["Host: a"])
    too_many = head("GET /info HTTP/1.1", [f"X-{i}: {i}" for i in range(20)])
    too_big = head("GET /info HTTP/1.1", ["X-Big: " + "y" * 700])
    assert same([too_long])[0].startswith(b"HTTP/1.1 414 ")
    assert same([too_many])[0].startswith(b"HTTP/1.1 431 ")
    assert same([too_big])[0].startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize(
    "line",
    [
        "X-Lf: a\nb",  # a bare LF inside a line: 400 from the line parser
        "X-Nul: a\x00b",
        "X-Cr: a\rb",
        "X-Tabs:\t v \t",  # tabs and spaces around a value are dropped
        " X-Folded: onto the line before",
        "\tX-Folded: with a tab",
        "Bad Name: v",
        ": no name",
        "No colon",
        "NoColonAtAll",
        "Content-Length: 0",
        "Transfer-Encoding: chunked",
        "X-A: 1",
    ],
)
def test_each_header_rule(line):
    # Alone after a good request line, so that nothing else decides.
    same([head("GET /info HTTP/1.1", ["Host: a", line])])


request_lines = st.sampled_from(
    [
        "GET /info HTTP/1.1",
        "GET /info?a=b&c HTTP/1.1",
        "GET /echo HTTP/1.1",
        "GET /nowhere HTTP/1.1",
        "GET /info HTTP/1.0",
        "GET /info HTTP/2.0",
        "GET /info http/1.1",
        "GET  /info HTTP/1.1",
        "GET /in fo HTTP/1.1",
        "GET /info",
        "POST /info HTTP/1.1",
        "GET http://a/info HTTP/1.1",
        "GET /info\x7f HTTP/1.1",
        "GET /info?" + "q" * 250 + " HTTP/1.1",
    ]
)
header_lines = st.one_of(
    st.sampled_from(
        UPGRADE
        + [
            "Host: a",
            "X-Empty:",
            "X-Spaces:   padded \t ",
            "x-mixed-CASE: v",
            "Cookie: a=1; b=2",
            "Connection: close",
            "Connection: keep-alive",
            "Expect: 100-continue",
            "Content-Length: 2",
            "Content-Length: x",
            "Transfer-Encoding: chunked",
            " folded onto the line before",
            "\tfolded with a tab",
            "No colon here",
            "Bad Name: v",
            ": no name",
            "X-Nul: a\x00b",
            "X-Lf: a\nb",
            "X-Cr: a\rb",
            "X-Latin: caf\xe9",
            "X-Controls: a\x0bb\x0cc\x1cd\x85e\x7f",
            "X-Long: " + "z" * 400,
            "Sec-WebSocket-Version: 8",
            "Origin: http://example.com",
        ]
    ),
    st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}: [ -~]{0,20}", fullmatch=True),
)
afters = st.sampled_from(
    [
        b"",
        b"ab",
        masked_frame(b"after"),
        b"GET /info HTTP/1.1\r\nHost: b\r\n\r\n",
        b"\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    request_line=request_lines,
    lines=st.lists(header_lines, max_size=14),
    after=afters,
    cut=st.one_of(st.none(), st.integers(1, 400)),
)
def test_drawn_requests_read_the_same_both_ways(request_line, lines, after, cut):
    data = head(request_line, lines) + after
    chunks = [data] if cut is None or cut >= len(data) else [data[:cut], data[cut:]]
    same(chunks)


class OwnServerHeader(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"server", b"mine")
        return b""


def test_responses_say_server_and_date_unless_a_resource_says_otherwise():
    tree = RouteTree([Route("/echo", (EchoHandler,), {"ping_interval": 0})])
    tree.mount_resource("/own", OwnServerHeader())
    plain = raw_connect(tree)
    plain.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")  # 426, written by wsmux
    head = plain.received.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 426 ")
    assert b"\r\nServer: wsmux\r\n" in head
    assert re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", head)
    own = raw_connect(tree)
    own.send(b"GET /own HTTP/1.1\r\nHost: a\r\n\r\n")
    head = own.received.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"Server:") == 1 and b"\r\nServer: mine\r\n" in head
    assert b"\r\nDate: " in head


def one_site(tree: RouteTree, clock: MemoryReactorClock, **kwargs: Any) -> Any:
    """
    Make raw_connect connect every client to the same site.
    """
    site = WebSocketSite(tree, reactor=clock, **kwargs)
    return mock.patch("wsmux.testing._site", lambda resource, clock: site)


def test_each_head_has_its_own_deadline():
    # Heads on one site share one timer: each must still fall due at its own
    # time, whoever finished or left before it.
    tree = RouteTree([Route("/echo", (EchoHandler,), {"ping_interval": 0})])
    tree.mount_resource("/info", Seen())
    clock = MemoryReactorClock()
    with one_site(tree, clock):
        silent = raw_connect(tree, clock)  # t=0, sends nothing
        clock.advance(3)
        partial = raw_connect(tree, clock)  # t=3
        partial.send(b"GET /info HTTP/1.1\r\nHost: a\r\n")
        clock.advance(1)
        done = raw_connect(tree, clock)  # t=4, finishes at once and stays
    done.send(b"GET /info HTTP/1.1\r\nHost: a\r\n\r\n")
    assert done.received.startswith(b"HTTP/1.1 200 ")
    clock.advance(5.9)  # t=9.9
    assert not (silent.lost or partial.lost or done.lost)
    clock.advance(0.2)  # t=10.1: the silent one is due
    silent.pump.flush()
    assert silent.lost and silent.received.startswith(b"HTTP/1.1 408 ")
    assert not partial.lost
    clock.advance(2.8)  # t=12.9
    assert not partial.lost
    clock.advance(0.2)  # t=13.1
    partial.pump.flush()
    assert partial.lost and partial.received.startswith(b"HTTP/1.1 408 ")
    # The kept-alive one got a new deadline when its request was done (t=4).
    clock.advance(0.8)  # t=13.9
    assert not done.lost
    clock.advance(0.2)  # t=14.1
    done.pump.flush()
    assert done.lost and done.received.count(b"HTTP/1.1 408 ") == 1


def test_the_deadline_runs_until_the_body_is_complete():
    tree = RouteTree([Route("/echo", (EchoHandler,), {"ping_interval": 0})])
    seen = Seen()
    tree.mount_resource("/info", seen)
    clock = MemoryReactorClock()
    upload = raw_connect(tree, clock)
    upload.send(b"POST /info HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\nab")
    for _ in range(5):  # a body in time: a byte a second
        clock.advance(1)
        upload.send(b"c")
    upload.send(b"d")
    assert seen.requests[-1][4] == b"abcccccd"
    slow = raw_connect(tree, clock)
    slow.send(b"POST /info HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\nab")
    for _ in range(4):  # a byte every 3 s: still going at the 10 s deadline
        clock.advance(3)
        slow.send(b"c")
    slow.pump.flush()
    assert slow.received.startswith(b"HTTP/1.1 408 ") and slow.lost
    assert len(seen.requests) == 1
    # While it was being read, it held a place in the connection caps.
    assert tree.registry.held == 0


def test_a_head_deadline_longer_than_the_idle_timeout_leaves_it_running():
    tree = RouteTree([Route("/echo", (EchoHandler,), {"ping_interval": 0})])
    clock = MemoryReactorClock()
    with one_site(tree, clock, head_timeout=100, timeout=30):
        silent = raw_connect(tree, clock)
    clock.advance(29)
    assert not silent.lost
    clock.advance(2)
    silent.pump.flush()
    assert silent.lost


def test_head_deadlines_fall_due_in_order_however_they_were_set():
    clock = MemoryReactorClock()
    deadlines = HeadDeadlines(10, clock)
    late: list[str] = []
    channels = {
        name: mock.Mock(_head_too_slow=lambda name=name: late.append(name)) for name in "abc"
    }
    deadlines.arm(channels["a"])  # due 10
    clock.advance(2)
    deadlines.arm(channels["b"])  # due 12
    clock.advance(2)
    deadlines.arm(channels["a"])  # again: due 14, after b
    deadlines.arm(channels["c"])  # due 14
    deadlines.disarm(channels["c"])
    clock.advance(6)  # t=10
    assert late == []
    clock.advance(2)  # t=12
    assert late == ["b"]
    assert deadlines.armed(channels["a"]) and not deadlines.armed(channels["c"])
    clock.advance(2)  # t=14
    assert late == ["b", "a"]
    assert not clock.getDelayedCalls()  # nothing left, no timer left


# Bodies, header names and request targets: every byte a client can make
# the server hold has a cap, and nothing is read that will be refused.


def body_tree(**limits: Any) -> tuple[RouteTree, Seen]:
    seen = Seen()
    tree = RouteTree(
        [Route("/echo", (EchoHandler,), {"ping_interval": 0})], limits=ServerLimits(**limits)
    )
    tree.mount_resource("/info", seen)
    return tree, seen


@pytest.mark.parametrize(
    "body_headers",
    [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"],
    ids=["content-length", "chunked"],
)
def test_an_upgrade_that_carries_a_body_is_400_before_the_body_is_read(body_headers):
    tree, _ = body_tree()
    raw = raw_connect(tree)
    head = upgrade_head("/echo").replace(b"\r\n\r\n", b"\r\n" + body_headers + b"\r\n")
    raw.send(head)
    assert raw.received.startswith(b"HTTP/1.1 400 ") and raw.lost
    assert b"101" not in raw.received.split(b"\r\n")[0]
    assert tree.registry.held == 0


def test_an_upgrade_with_an_empty_body_is_fine():
    tree, _ = body_tree()
    raw = raw_connect(tree)
    raw.send(upgrade_head("/echo").replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n"))
    assert raw.received.startswith(b"HTTP/1.1 101 ")


def test_a_declared_body_over_the_cap_is_413_unread():
    tree, seen = body_tree(max_body_size=1000)
    raw = raw_connect(tree)
    raw.send(b"POST /info HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n")
    assert raw.received.startswith(b"HTTP/1.1 413 ") and raw.lost
    raw = raw_connect(tree)
    raw.send(b"POST /info HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
    assert raw.received.startswith(b"HTTP/1.1 200 ") and seen.requests[-1][4] == b"x" * 1000


def test_a_chunked_body_is_413_once_it_passes_the_cap():
    tree, seen = body_tree(max_body_size=1000)
    raw = raw_connect(tree)
    raw.send(b"POST /info HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        raw.send(b"200\r\n" + b"y" * 512 + b"\r\n")
    assert raw.received.startswith(b"HTTP/1.1 413 ") and raw.lost
    assert not seen.requests
    assert tree.registry.held == 0


def test_bodies_are_held_in_memory_and_closed_when_done():
    tree, seen = body_tree()
    files = []
    real_render = seen.render

    def render(request: Any) -> bytes:
        files.append(request.content)
        return real_render(request)

    seen.render = render  # type: ignore[method-assign]
    raw = raw_connect(tree)
    raw.send(
        b"POST /info HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert raw.received.startswith(b"HTTP/1.1 200 ")
    (content,) = files
    assert type(content).__name__ == "BytesIO" and content.closed


def test_requests_with_a_body_hold_a_place_in_the_caps():
    tree, _ = body_tree(max_connections_per_ip=2)
    slow = [raw_connect(tree) for _ in range(2)]
    for raw in slow:
        raw.send(b"POST /info HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
    assert tree.registry.held == 2
    third = raw_connect(tree)
    third.send(b"POST /info HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
    assert third.received.startswith(b"HTTP/1.1 429 ") and third.lost
    upgrade = raw_connect(tree)
    upgrade.send(upgrade_head("/echo"))
    assert upgrade.received.startswith(b"HTTP/1.1 429 ")
    slow[0].send(b"c" * 8)
    assert slow[0].received.startswith(b"HTTP/1.1 200 ")
    assert tree.registry.held == 1


@pytest.mark.parametrize(
    "request_line, line",
    [
        ("GET /info HTTP/1.1", " X-Folded: onto the line before"),
        ("GET /info HTTP/1.1", "\tX-Folded: with a tab"),
        ("GET /info HTTP/1.1", "No colon"),
        ("POST /info HTTP/1.1", "Transfer-Encoding: identity"),
        ("POST /info HTTP/1.0", "Transfer-Encoding: chunked"),
        # (these three twisted.web refused already)
        ("POST /info HTTP/1.1", "Transfer-Encoding: chunked, identity"),
        ("POST /info HTTP/1.1", "Transfer-Encoding: identity, chunked"),
        ("POST /info HTTP/1.1", "Transfer-Encoding:"),
    ],
)
@pytest.mark.parametrize("one_pass", [True, False])
def test_lines_a_front_proxy_may_read_another_way_are_400(request_line, line, one_pass):
    # twisted.web joins a folded line to the one before, takes "identity"
    # as no coding at all, and reads an HTTP/1.0 body as chunked; a proxy
    # in front may do none of these, and then frame the body differently
    # (request smuggling).  (A GET head comes whole: the one-pass reader
    # sees it first.)
    tree, seen = body_tree()
    with reading(one_pass):
        raw = raw_connect(tree)
        raw.send(head(request_line, ["Host: a", line]) + b"0\r\n\r\n")
        assert raw.received.startswith(b"HTTP/1.1 400 ") and raw.lost
        assert not seen.requests
        raw = raw_connect(tree)  # what chunked is, in any case, is read
        raw.send(head("POST /info HTTP/1.1", ["Host: a", "Transfer-Encoding: Chunked"]))
        raw.send(b"2\r\nab\r\n0\r\n\r\n")
        assert raw.received.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("target", [b"/echo?\xa0HTTP/1.1\x85connection:upgrade\x85x:", b"/e\x7f"])
@pytest.mark.parametrize("one_pass", [True, False])
def test_a_request_line_past_printable_ascii_is_400(target, one_pass):
    # twisted.web lets bytes 0x7f-0xb0 into a target (its check says 176
    # for 126), which Autobahn's parser splits the line at: a header could
    # hide in the target.
    tree, seen = body_tree()
    with reading(one_pass):
        raw = raw_connect(tree)
        raw.send(upgrade_head("/echo").replace(b"/echo", target, 1))
        assert raw.received.startswith(b"HTTP/1.1 400 ") and raw.lost
        raw = raw_connect(tree)
        raw.send(b"GET /info?caf\xc3\xa0 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert raw.received.startswith(b"HTTP/1.1 400 ") and raw.lost
    assert not seen.requests


@pytest.mark.parametrize("one_pass", [True, False])
def test_a_header_name_over_the_cap_is_431(one_pass):
    tree, seen = body_tree(max_header_name=64)
    with reading(one_pass):
        raw = raw_connect(tree)
        raw.send(b"GET /info HTTP/1.1\r\nHost: a\r\n" + b"X" * 65 + b": v\r\n\r\n")
        assert raw.received.startswith(b"HTTP/1.1 431 ") and raw.lost
        raw = raw_connect(tree)
        raw.send(b"GET /info HTTP/1.1\r\nHost: a\r\n" + b"X" * 64 + b": v\r\n\r\n")
        assert raw.received.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("scheme", ["http", "ws", "HTTP"])
def test_absolute_form_targets_are_routed_by_their_path(scheme):
    tree, seen = body_tree()
    raw = raw_connect(tree)
    raw.send(upgrade_head(f"{scheme}://127.0.0.1:8080/echo?x=1") + masked_frame(b"hi"))
    assert raw.received.startswith(b"HTTP/1.1 101 ")
    assert raw.received.endswith(b"\x81\x02hi")
    raw = raw_connect(tree)
    raw.send(f"GET {scheme}://example.com/info?a=b HTTP/1.1\r\nHost: other\r\n\r\n".encode())
    assert raw.received.startswith(b"HTTP/1.1 200 ")
    method, uri, _, headers, _ = seen.requests[-1]
    assert uri == b"/info?a=b" and (b"Host", [b"example.com"]) in headers


def upgrade_head(target: str) -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class Slow(Resource):
    """
    Answers each request when the test says so.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list = []

    def render_GET(self, request: Any) -> Any:
        from twisted.web.server import NOT_DONE_YET

        self.waiting.append(request)
        return NOT_DONE_YET


def test_a_pipelined_request_in_progress_gets_no_head_deadline():
    # The second request's head is whole; while a slow resource answers it,
    # the head deadline must not fire in the middle of its response.
    slow = Slow()
    tree = RouteTree([Route("/echo", EchoHandler)])
    tree.mount_resource("/slow", slow)
    raw = raw_connect(tree)
    one = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
    raw.send(one + one)
    slow.waiting[0].write(b"first")
    slow.waiting[0].finish()
    raw.pump.flush()
    raw.clock.advance(11)  # past the 10 s head deadline
    raw.pump.flush()
    assert b" 408 " not in raw.received
    slow.waiting[1].write(b"second")
    slow.waiting[1].finish()
    raw.pump.flush()
    assert raw.received.count(b"HTTP/1.1 200 ") == 2
    assert raw.received.endswith(b"6\r\nsecond\r\n0\r\n\r\n")


def test_an_upgrade_to_the_star_target_is_not_routed():
    tree = RouteTree([Route("/", EchoHandler)])
    raw = raw_connect(tree)
    raw.send(
        b"GET * HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert raw.received.startswith(b"HTTP/1.1 4")


def test_frames_behind_an_upgrade_survive_a_plain_request_class():
    # A site made with twisted.web's own Request class: the channel, not the
    # request, keeps what follows the head while the route decides.
    from twisted.internet.address import IPv4Address
    from twisted.internet.defer import Deferred
    from twisted.test import iosim
    from twisted.web.server import Request

    from wsmux.testing import _RawClient, upgrade_request

    decisions: list = []
    tree = RouteTree(
        [Route("/echo", EchoHandler)],
        unhandled=lambda request: decisions.append(Deferred()) or decisions[-1],
    )
    clock = MemoryReactorClock()
    site = WebSocketSite(tree, reactor=clock, requestFactory=Request)
    server = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    client = _RawClient()
    server_transport = iosim.FakeTransport(server, isServer=True)
    client_transport = iosim.FakeTransport(client, isServer=False)
    pump = iosim.connect(
        server, server_transport, client, client_transport, greet=True, clock=clock
    )
    client.transport.write(
        upgrade_request("/other") + masked_frame(b"early") + masked_frame(b"bird")
    )
    pump.flush()
    assert decisions and client.received == b""
    decisions[0].callback(EchoHandler)
    pump.flush()
    head, _, rest = client.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert rest == b"\x81\x05early\x81\x04bird"
