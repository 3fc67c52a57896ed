"""
Whole WebSocket conversations through the route tree, in memory: the real
twisted.web request parsing and the real Autobahn protocols, joined by iosim.
"""

import json

import pytest

from tests import handlers_for_tests as h
from wsmux import Adopt, BroadcastHandler, EchoHandler, Reject, Route, RouteTree
from wsmux.testing import connect, masked_frame, raw_connect, upgrade_request


def echo_tree(**options):
    return RouteTree([Route("/echo", (EchoHandler,), options)])


def test_echo_text_and_binary():
    conn = connect(echo_tree(), "/echo")
    assert conn.client.opened
    conn.client.sendMessage("héllo".encode(), False)
    conn.client.sendMessage(b"\x00\xff", True)
    conn.flush()
    assert conn.client.messages == [("héllo".encode(), False), (b"\x00\xff", True)]


def test_handshake_and_first_frame_in_one_write():
    raw = raw_connect(echo_tree())
    raw.send(upgrade_request("/echo") + masked_frame(b"early"))
    head, _, rest = raw.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert rest == b"\x81\x05early"


def test_handshake_one_byte_per_write():
    raw = raw_connect(echo_tree())
    for byte in upgrade_request("/echo") + masked_frame(b"slow"):
        raw.send(bytes([byte]))
    head, _, rest = raw.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert rest == b"\x81\x04slow"


def test_plain_get_to_a_route_is_426():
    raw = raw_connect(echo_tree())
    raw.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.received.startswith(b"HTTP/1.1 426 Upgrade Required")
    assert b"Upgrade: websocket" in raw.received


def test_unknown_path_is_404_and_closed():
    raw = raw_connect(echo_tree())
    raw.send(upgrade_request("/nope"))
    assert raw.received.startswith(b"HTTP/1.1 404")
    assert raw.lost


def test_post_upgrade_is_400():
    raw = raw_connect(echo_tree())
    raw.send(upgrade_request("/echo").replace(b"GET", b"POST", 1))
    assert raw.received.startswith(b"HTTP/1.1 400")


def test_bad_key_is_refused_by_autobahn():
    raw = raw_connect(echo_tree())
    raw.send(upgrade_request("/echo", key="short"))
    assert raw.received.startswith(b"HTTP/1.1 400")
    assert raw.lost


def test_handlers_see_params_query_cookies_and_subprotocol():
    tree = RouteTree([Route("/rooms/{room}", (h.ParamsHandler,), {"subprotocols": ["chat.v1"]})])
    conn = connect(
        tree,
        "/rooms/l%C3%B6bby?x=1",
        headers={"Cookie": "session=abc"},
        protocols=["other", "chat.v1"],
    )
    assert conn.client.opened
    conn.client.sendMessage(b"?")
    conn.flush()
    seen = json.loads(conn.client.messages[0][0])
    assert seen["params"] == {"room": "löbby"}
    assert seen["query"] == {"x": ["1"]}
    assert seen["cookie"] == "session=abc"
    assert seen["peer"].startswith("tcp4:127.0.0.1:")
    assert seen["subprotocol"] == "chat.v1"
    assert conn.client.response.protocol == "chat.v1"


def test_required_subprotocol_missing_is_400():
    tree = RouteTree(
        [Route("/s", (EchoHandler,), {"subprotocols": ["a"], "require_subprotocol": True})]
    )
    conn = connect(tree, "/s", protocols=["b"])
    assert not conn.client.opened
    raw = raw_connect(tree)
    raw.send(upgrade_request("/s", "Sec-WebSocket-Protocol: b\r\n"))
    assert raw.received.startswith(b"HTTP/1.1 400")


def test_onconnect_choice_and_extra_headers():
    tree = RouteTree([Route("/t", (h.TokenHandler,))])
    conn = connect(tree, "/t", protocols=["token.v1", "token.v2"])
    assert conn.client.opened
    assert conn.client.response.protocol == "token.v2"
    assert conn.client.response.headers["x-token-checked"] == "yes"


def test_async_deny_in_onconnect():
    tree = RouteTree([Route("/d", (h.DenyingHandler,))])
    raw = raw_connect(tree)
    raw.send(upgrade_request("/d"))
    assert raw.received.startswith(b"HTTP/1.1 403 members only")


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("https://app.example.com", True),
        ("https://evil.example.org", False),
        ("null", False),
        (None, False),
    ],
)
def test_origin_allow_list(origin, allowed):
    tree = echo_tree(allowed_origins=["https://*.example.com"])
    raw = raw_connect(tree)
    extra = f"Origin: {origin}\r\n" if origin else ""
    raw.send(upgrade_request("/echo", extra))
    status = raw.received.split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 101" if allowed else b"HTTP/1.1 403")


def test_broadcast_rooms_are_separate_and_framed_once(monkeypatch):
    import wsmux.channels

    tree = RouteTree([Route("/rooms/{room}", (BroadcastHandler,))])
    a1, a2 = connect(tree, "/rooms/a"), connect(tree, "/rooms/a")
    b1 = connect(tree, "/rooms/b")
    prepared = []
    original = wsmux.channels.PreparedMessage
    monkeypatch.setattr(
        wsmux.channels, "PreparedMessage", lambda *a: prepared.append(a) or original(*a)
    )
    a1.client.sendMessage(b"to a")
    for c in (a1, a2, b1):
        c.flush()
    assert a1.client.messages == [(b"to a", False)]
    assert a2.client.messages == [(b"to a", False)]
    assert b1.client.messages == []
    assert len(prepared) == 1
    rooms = tree.registry.channels.namespace("/rooms/{room}")
    assert rooms.subscribers("a") == 2
    a2.client.sendClose(1000)
    for c in (a1, a2, b1):
        c.flush()
    assert rooms.subscribers("a") == 1


def test_handler_chain_first_acceptor_wins_else_unhandled():
    tree = RouteTree(
        [Route("/talk", (h.ShoutHandler, h.WhisperHandler))],
        unhandled=lambda request: Reject(418, "Nobody took it"),
    )
    loud = connect(tree, "/talk?loud=1")
    quiet = connect(tree, "/talk")
    for c in (loud, quiet):
        c.client.sendMessage(b"Hi")
        c.flush()
    assert loud.client.messages == [(b"HI", False)]
    assert quiet.client.messages == [(b"hi", False)]
    raw = raw_connect(tree)
    raw.send(upgrade_request("/talk", "X-Refuse: 1\r\n"))
    assert raw.received.startswith(b"HTTP/1.1 418 Nobody took it")


def test_unhandled_hook_adopts_rejects_and_defaults():
    tree = RouteTree([Route("/echo", (EchoHandler,))], unhandled=h.hook)
    adopted = connect(tree, "/legacy/thing")
    adopted.client.sendMessage(b"old")
    adopted.flush()
    assert adopted.client.messages == [(b"old", False)]

    deferred = connect(tree, "/deferred/x")
    assert deferred.client.opened

    for path, status in [
        ("/private/x", b"403 Private area"),
        ("/other", b"404"),
        ("/broken/x", b"500"),
    ]:
        raw = raw_connect(tree)
        raw.send(upgrade_request(path))
        assert raw.received.startswith(b"HTTP/1.1 " + status), path
        assert b"hook bug" not in raw.received and b"Traceback" not in raw.received
        assert raw.lost


def test_hook_can_adopt_with_path_params():
    def hook(request):
        return Adopt(h.ParamsHandler, {"tenant": "t1"})

    conn = connect(RouteTree(unhandled=hook), "/anything")
    conn.client.sendMessage(b"?")
    conn.flush()
    assert json.loads(conn.client.messages[0][0])["params"] == {"tenant": "t1"}


def test_hook_bad_answer_is_500():
    raw = raw_connect(RouteTree(unhandled=lambda r: "nonsense"))
    raw.send(upgrade_request("/x"))
    assert raw.received.startswith(b"HTTP/1.1 500")


@pytest.mark.parametrize("mode, compressed_reply", [("on", True), ("inflate-only", False)])
def test_deflate_modes(mode, compressed_reply):
    conn = connect(echo_tree(deflate=mode), "/echo", deflate=True)
    assert conn.client.opened
    assert conn.client.response.extensions  # negotiated
    sent = []
    original = conn.client.dataReceived

    def spy(data):
        sent.append(data)
        original(data)

    conn.client.dataReceived = spy
    conn.client.sendMessage(b"a" * 1000)
    conn.flush()
    assert conn.client.messages == [(b"a" * 1000, False)]
    first = b"".join(sent)[0]
    assert bool(first & 0x40) is compressed_reply  # RSV1 marks a compressed message


def test_deflate_off_is_not_negotiated():
    conn = connect(echo_tree(deflate="off"), "/echo", deflate=True)
    assert conn.client.opened
    assert not conn.client.response.extensions


def test_deflate_bomb_is_stopped_at_the_message_limit():
    conn = connect(echo_tree(deflate="on", max_message_size=10_000), "/echo", deflate=True)
    conn.client.sendMessage(b"\x00" * 1_000_000, True)
    conn.flush()
    conn.clock.advance(6)  # the close handshake timeout, should the peer not answer
    conn.flush()
    assert conn.client.messages == []
    assert conn.client.close[1] == 1009
    assert "after decompression" in conn.client.close[2]


def test_message_and_frame_limits_close_with_1009():
    conn = connect(echo_tree(max_message_size=100, max_frame_size=1000), "/echo")
    conn.client.sendMessage(b"x" * 101)
    conn.flush()
    assert conn.client.close[1] == 1009
    conn = connect(echo_tree(max_message_size=0, max_frame_size=50), "/echo")
    conn.client.sendMessage(b"x" * 51)
    conn.flush()
    assert conn.client.close[1] == 1009


def test_per_route_options_inherit_defaults():
    from wsmux import ProtocolOptions

    tree = RouteTree(
        [Route("/a", (EchoHandler,)), Route("/b", (EchoHandler,), {"max_message_size": 5})],
        defaults=ProtocolOptions(max_message_size=50, ping_interval=7),
    )
    a, b = tree.route_for("/a").factory, tree.route_for("/b").factory
    assert (a.maxMessagePayloadSize, a.autoPingInterval) == (50, 7)
    assert (b.maxMessagePayloadSize, b.autoPingInterval) == (5, 7)
    assert a.webStatus is False and a.server is None


def test_keepalive_drops_a_silent_peer():
    conn = connect(echo_tree(ping_interval=5, ping_timeout=3), "/echo")
    server = conn.server
    pings = []
    conn.client._onPing = pings.append  # this client never answers pings
    conn.clock.advance(5.5)
    conn.flush()
    assert len(pings) == 1
    assert conn.client.close is None
    conn.clock.advance(4)
    conn.flush()
    assert server.state == server.STATE_CLOSED
    assert "ping timeout" in server.wasNotCleanReason
    assert conn.client.close is not None and conn.client.close[1] == 1006


def test_keepalive_keeps_an_answering_peer():
    conn = connect(echo_tree(ping_interval=5, ping_timeout=3), "/echo")
    for _ in range(4):
        conn.clock.advance(5.5)
        conn.flush()
    assert conn.client.close is None
    assert conn.server.state == conn.server.STATE_OPEN


def test_upgrade_then_tree_mounted_in_users_site():
    from twisted.web.resource import Resource
    from twisted.web.static import Data

    root = Resource()
    root.putChild(b"health", Data(b"ok", "text/plain"))
    root.putChild(b"ws", RouteTree([Route("/echo", (EchoHandler,))]))
    conn = connect(root, "/ws/echo")
    conn.client.sendMessage(b"nested")
    conn.flush()
    assert conn.client.messages == [(b"nested", False)]
    raw = raw_connect(root)
    raw.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.received.startswith(b"HTTP/1.1 200") and raw.received.endswith(b"ok")


def test_fallback_sees_the_whole_path():
    from twisted.web.resource import Resource

    class Echoes(Resource):
        isLeaf = True

        def render_GET(self, request):
            return b"/".join(request.postpath)

    tree = RouteTree([Route("/a/b", (EchoHandler,))], fallback=Echoes())
    raw = raw_connect(tree)
    raw.send(b"GET /a/x/y HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.received.endswith(b"a/x/y")
