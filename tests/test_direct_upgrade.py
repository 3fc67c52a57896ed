"""
An upgrade whose head arrives whole goes to its route without a
C{twisted.web} request when no user code decides it; everything else takes
the request, and gets the same answer either way.

Each case sends the same bytes with the direct path on and off (off: the
channel never tries it) and compares the bytes sent back and whether the
connection was closed; it also counts the C{twisted.web} requests made.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator
from unittest import mock

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource

from wsmux import EchoHandler, Route, RouteTree
from wsmux.limits import ServerLimits
from wsmux.site import GuardedHTTPChannel, WebSocketRequest, WebSocketSite
from wsmux.testing import masked_frame, raw_connect, upgrade_request

pytestmark = pytest.mark.uses_internal("twisted.one_pass_head")

NO_PING = {"ping_interval": 0}


@contextmanager
def counting_requests() -> Iterator[list[Any]]:
    made: list[Any] = []
    original = WebSocketRequest.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    with mock.patch.object(WebSocketRequest, "__init__", counting):
        yield made


@contextmanager
def direct(on: bool) -> Iterator[None]:
    if on:
        yield
        return
    with mock.patch.object(GuardedHTTPChannel, "_upgrade_directly", lambda self, *a: False):
        yield


def run(
    make_tree: Callable[[], RouteTree], data: bytes, on: bool, **site_options: Any
) -> tuple[bytes, bool, int, tuple[int, int, int]]:
    """
    Send C{data} on a new connection to a new tree.

    @return: what came back (its Date blanked), whether the connection was
        closed, how many C{twisted.web} requests it made, and what is left
        held: places in the connection caps, the site's open HTTP channels
        and armed head deadlines.
    """
    tree = make_tree()
    sites: list[WebSocketSite] = []

    def site(resource: Any, clock: Any) -> WebSocketSite:
        sites.append(WebSocketSite(resource, reactor=clock, **site_options))
        return sites[-1]

    with direct(on), mock.patch("wsmux.testing._site", site):
        with counting_requests() as made:
            raw = raw_connect(tree)
            raw.send(data)
            raw.clock.advance(1)
            raw.pump.flush()
    received = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", raw.received)
    deadlines = sites[0].head_deadlines
    held = (
        tree.registry.held,
        len(sites[0].open_channels),
        len(deadlines._due) if deadlines is not None else 0,
    )
    return received, raw.lost, len(made), held


def echo_tree(**options: Any) -> Callable[[], RouteTree]:
    return lambda: RouteTree([Route("/echo", (EchoHandler,), {**NO_PING, **options})])


def test_a_plain_route_is_taken_without_a_request() -> None:
    data = upgrade_request("/echo?room=1") + masked_frame(b"hi")
    received, lost, made, held = run(echo_tree(), data, True)
    assert received.startswith(b"HTTP/1.1 101 ")
    assert received.endswith(b"\x81\x02hi")
    assert not lost
    assert made == 0
    assert held == (1, 0, 0)
    assert run(echo_tree(), data, False)[:2] + run(echo_tree(), data, False)[3:] == (
        received,
        lost,
        held,
    )


class Choosy(EchoHandler):
    seen: list[Any] = []

    @classmethod
    def accepts(cls, request: Any) -> bool:
        cls.seen.append(request)
        return True


class Room(EchoHandler):
    name = "Room"

    def onOpen(self) -> None:
        # Says which route and parameters it got.
        self.sendMessage(repr((self.name, self.wsmux.path_params)).encode())


class RoomLog(Room):
    name = "RoomLog"


def rooms() -> RouteTree:
    return RouteTree(
        [
            Route("/echo", (EchoHandler,), NO_PING),
            Route("/rooms/{room}", (Room,), NO_PING),
            Route("/rooms/lobby", (EchoHandler,), NO_PING),
            Route("/rooms/{room}/log", (RoomLog,), NO_PING),
            Route("/a/{x}/b/{y}", (Room,), NO_PING),
        ]
    )


@pytest.mark.parametrize(
    "path, said",
    [
        ("/rooms/kitchen", b"('Room', {'room': 'kitchen'})"),
        ("/rooms/k%C3%BCche", None),  # a percent-escape: twisted.web's path
        ("/rooms/lobby", b""),  # the literal route: the echo says nothing
        ("/rooms/lobby/log", b"('RoomLog', {'room': 'lobby'})"),
        ("/rooms/kitchen/log", b"('RoomLog', {'room': 'kitchen'})"),
        ("/a/1/b/2", b"('Room', {'x': '1', 'y': '2'})"),
    ],
)
def test_routes_with_parameters_are_taken_as_twisted_web_finds_them(
    path: str, said: bytes | None
) -> None:
    data = upgrade_request(path)
    received, lost, made, held = run(rooms, data, True)
    assert received.startswith(b"HTTP/1.1 101 ")
    assert made == (1 if said is None else 0)
    if said:
        assert said in received
    off = run(rooms, data, False)
    assert (off[0], off[1], off[3]) == (received, lost, held)


def with_resource() -> RouteTree:
    tree = echo_tree()()
    leaf = Resource()
    leaf.isLeaf = True
    leaf.render = lambda request: b"mine"  # type: ignore[method-assign]
    tree.putChild(b"mine", leaf)
    return tree


def unmounted() -> RouteTree:
    tree = RouteTree([Route("/echo", (EchoHandler,), NO_PING), Route("/gone", (EchoHandler,))])
    tree.unmount("/gone")
    return tree


def draining() -> RouteTree:
    tree = echo_tree()()
    tree.registry.draining = True
    return tree


def full() -> RouteTree:
    tree = echo_tree(max_connections=1)()
    tree.registry.hold("192.0.2.1", tree.route_for("/echo"), 1)
    return tree


class Guard(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(403)
        return b"guarded"


class GuardedTree(RouteTree):
    def getChild(self, path: bytes, request: Any) -> Any:
        return Guard() if path == b"admin" else super().getChild(path, request)


def guarded() -> RouteTree:
    return GuardedTree([Route("/{room}", (EchoHandler,), NO_PING)])


class Unmakeable(WebSocketServerProtocol):
    def __init__(self) -> None:
        raise RuntimeError("cannot be made")


CASES = {
    "accepts": (
        lambda: RouteTree([Route("/echo", (Choosy,), NO_PING)]),
        upgrade_request("/echo"),
        b"HTTP/1.1 101 ",
    ),
    "an empty parameter": (rooms, upgrade_request("/rooms//log"), b"HTTP/1.1 404 "),
    "a percent-escape": (echo_tree(), upgrade_request("/ec%68o"), b"HTTP/1.1 101 "),
    "a trailing slash": (echo_tree(), upgrade_request("/echo/"), b"HTTP/1.1 404 "),
    "an empty segment": (echo_tree(), upgrade_request("//echo"), b"HTTP/1.1 404 "),
    "an unmounted route": (unmounted, upgrade_request("/gone"), b"HTTP/1.1 404 "),
    "a resource of the user's": (with_resource, upgrade_request("/mine"), b"HTTP/1.1 200 "),
    "an origin not allowed": (
        echo_tree(allowed_origins=("https://good.example",)),
        upgrade_request("/echo", "Origin: https://evil.example\r\n"),
        b"HTTP/1.1 403 ",
    ),
    "no subprotocol": (
        echo_tree(subprotocols=("chat",), require_subprotocol=True),
        upgrade_request("/echo"),
        b"HTTP/1.1 400 ",
    ),
    "TLS required": (echo_tree(require_tls=True), upgrade_request("/echo"), b"HTTP/1.1 403 "),
    "the route's cap": (full, upgrade_request("/echo"), b"HTTP/1.1 503 "),
    "draining": (draining, upgrade_request("/echo"), b"HTTP/1.1 503 "),
    "HTTP/1.0": (
        echo_tree(),
        upgrade_request("/echo").replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        b"HTTP/1.1 505 ",
    ),
    "Expect: 100-continue": (
        echo_tree(),
        upgrade_request("/echo", "Expect: 100-continue\r\n"),
        b"HTTP/1.1 100 ",
    ),
    "a tree with its own traversal": (guarded, upgrade_request("/admin"), b"HTTP/1.1 403 "),
    "a handler that cannot be made": (
        lambda: RouteTree([Route("/echo", (Unmakeable,), NO_PING)]),
        upgrade_request("/echo"),
        b"HTTP/1.1 500 ",
    ),
    "no Upgrade header": (
        echo_tree(),
        upgrade_request("/echo").replace(b"Upgrade: websocket\r\n", b""),
        b"HTTP/1.1 426 ",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_user_code_or_a_refusal_decides_takes_the_request(case: str) -> None:
    make_tree, data, status = CASES[case]
    on = run(make_tree, data, True)
    assert on[0].startswith(status), on[0][:200]
    assert on[2] == 1  # the request was made
    off = run(make_tree, data, False)
    assert (on[0], on[1], on[3]) == (off[0], off[1], off[3])


def test_the_accepts_hook_sees_a_twisted_web_request() -> None:
    Choosy.seen.clear()
    run(CASES["accepts"][0], upgrade_request("/echo"), True)
    assert [type(r) for r in Choosy.seen] == [WebSocketRequest]


def test_the_subprotocol_is_chosen_on_the_direct_path() -> None:
    data = upgrade_request("/echo", "Sec-WebSocket-Protocol: other, chat\r\n")
    received, _, made, _ = run(echo_tree(subprotocols=("chat",)), data, True)
    assert made == 0
    assert b"\r\nSec-WebSocket-Protocol: chat\r\n" in received


def test_the_address_behind_a_trusted_proxy() -> None:
    limits = ServerLimits(trusted_proxies=1)
    tree = RouteTree([Route("/echo", (EchoHandler,), NO_PING)], limits=limits)
    with counting_requests() as made:
        raw = raw_connect(tree)
        raw.send(upgrade_request("/echo", "X-Forwarded-For: 203.0.113.9\r\n"))
    assert made == []
    assert raw.server.wsmux.client_address == "203.0.113.9"
    assert raw.server.wsmux.address_chain[0] == "203.0.113.9"


def test_a_site_with_a_request_of_its_own_makes_it() -> None:
    class Mine(WebSocketRequest):
        pass

    received, _, made, _ = run(echo_tree(), upgrade_request("/echo"), True, requestFactory=Mine)
    assert received.startswith(b"HTTP/1.1 101 ")
    assert made == 1


def test_a_route_that_requires_tls_is_taken_directly_over_tls() -> None:
    with mock.patch.object(GuardedHTTPChannel, "isSecure", lambda self: True):
        received, _, made, _ = run(echo_tree(require_tls=True), upgrade_request("/echo"), True)
    assert received.startswith(b"HTTP/1.1 101 ")
    assert made == 0


@pytest.mark.parametrize("on", [True, False])
def test_a_frame_sent_with_the_head_counts_as_received(on: bool) -> None:
    tree = echo_tree()()
    frame = masked_frame(b"hi")
    with direct(on), counting_requests() as made:
        raw = raw_connect(tree)
        raw.send(upgrade_request("/echo") + frame)
    assert len(made) == (0 if on else 1)
    assert raw.received.endswith(b"\x81\x02hi")
    assert raw.server.trafficStats.incomingOctetsWireLevel == len(frame)


class Thinking(EchoHandler):
    answers: list[Deferred[None]] = []

    def onConnect(self, request: Any) -> Deferred[None]:
        self.answers.append(Deferred())
        return self.answers[-1]


def test_frames_sent_while_on_connect_thinks_count_once() -> None:
    # The frame sent with the head counts as received once open; one sent
    # while onConnect thinks, as Autobahn counts it (before the open).
    tree = RouteTree([Route("/echo", (Thinking,), NO_PING)])
    first, second = masked_frame(b"one"), masked_frame(b"two!")
    with counting_requests() as made:
        raw = raw_connect(tree)
        raw.send(upgrade_request("/echo") + first)
        raw.send(second)
        Thinking.answers.pop().callback(None)
        raw.pump.flush()
    assert made == []
    assert raw.received.endswith(b"\x81\x03one\x81\x04two!")
    stats = raw.server.trafficStats
    assert stats.incomingOctetsWireLevel == len(first)
    assert stats.preopenIncomingOctetsWireLevel == len(second)


def test_an_upgrade_that_fails_gets_a_500_and_a_log_line(caplog: Any) -> None:
    tree = echo_tree()()
    failures: list[Any] = []
    with (
        mock.patch.object(tree, "upgrade", side_effect=RuntimeError("boom")),
        mock.patch("wsmux.site.log.failure", lambda *a, **k: failures.append(a)),
    ):
        raw = raw_connect(tree)
        raw.send(upgrade_request("/echo"))
    assert raw.received.startswith(b"HTTP/1.1 500 ")
    assert raw.lost
    assert failures
    assert tree.registry.held == 0  # its place in the caps given back


def test_no_idle_timeout_fires_after_the_upgrade() -> None:
    # Without a head deadline, twisted.web's idle timeout watches the
    # channel; a connection taken over must not be closed by it.
    tree = echo_tree()()
    clock = MemoryReactorClock()
    with mock.patch(
        "wsmux.testing._site",
        lambda resource, clock: WebSocketSite(resource, head_timeout=0, reactor=clock),
    ):
        with counting_requests() as made:
            raw = raw_connect(tree, clock)
            raw.send(upgrade_request("/echo"))
    assert made == []
    clock.advance(120)
    raw.pump.flush()
    assert not raw.lost
    raw.send(masked_frame(b"still"))
    assert raw.received.endswith(b"\x81\x05still")
