"""
Channels and the pubsub handler, in memory.
"""

import json

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol

from wsmux import Route, RouteTree
from wsmux.channels import ChannelError, check_channel_name
from wsmux.handlers import PubSubHandler
from wsmux.testing import connect


class NewsHandler(WebSocketServerProtocol):
    """
    Subscribes to the channel named in the query; "!text" publishes text.
    """

    def onConnect(self, request):
        self.wanted = request.params.get("channel", ["news"])[0]

    def onOpen(self):
        self.channels.subscribe(self, self.wanted)

    def onMessage(self, payload, isBinary):
        if payload.startswith(b"!"):
            self.channels.publish(self.wanted, payload[1:], isBinary)
        elif payload == b"leave":
            self.channels.unsubscribe(self, self.wanted)


def test_channels_reach_every_subscriber_of_the_route():
    tree = RouteTree([Route("/a", NewsHandler)])
    a, b = connect(tree, "/a?channel=news"), connect(tree, "/a?channel=news")
    other = connect(tree, "/a?channel=sport")
    a.client.sendMessage(b"!headline")
    for c in (a, b, other):
        c.flush()
    assert a.client.messages == b.client.messages == [(b"headline", False)]
    assert other.client.messages == []
    b.client.sendMessage(b"leave")
    b.flush()
    a.client.sendMessage(b"!second")
    for c in (a, b):
        c.flush()
    assert b.client.messages == [(b"headline", False)]
    channels = tree.registry.channels.namespace("/a")
    assert channels.subscribers("news") == 1
    a.client.sendClose(1000)
    a.flush()
    assert channels.subscribers("news") == 0


def test_each_route_has_its_own_channels_unless_they_share_a_namespace():
    tree = RouteTree(
        [
            Route("/a", NewsHandler),
            Route("/b", NewsHandler),
            Route("/c", NewsHandler, {"channel_namespace": "shared"}),
            Route("/d", NewsHandler, {"channel_namespace": "shared"}),
        ]
    )
    conns = {path: connect(tree, f"{path}?channel=news") for path in "/a /b /c /d".split()}
    conns["/a"].client.sendMessage(b"!from a")
    conns["/c"].client.sendMessage(b"!from c")
    for c in conns.values():
        c.flush()
    assert conns["/a"].client.messages == [(b"from a", False)]
    assert conns["/b"].client.messages == []
    assert conns["/c"].client.messages == conns["/d"].client.messages == [(b"from c", False)]


def spy_learns_nothing(member, spy, names, publish=False):
    """
    A pubsub C{spy} subscribes to (and, if C{publish}, publishes into) every
    one of C{names}; then C{member} talks in its room: the member hears only
    itself, and the spy hears nothing of it.
    """
    for name in names:
        send(spy, {"action": "subscribe", "channel": name})
        if publish:
            send(spy, {"action": "publish", "channel": name, "data": "injected"})
    member.client.sendMessage(b"for members only")
    member.flush()
    spy.flush()
    assert member.client.messages == [(b"for members only", False)]
    assert all(b"for members only" not in payload for payload, _ in spy.client.messages)


def test_a_pubsub_client_cannot_reach_a_guarded_rooms_channels():
    # The deployment docs' pair of routes: broadcast rooms that admit one
    # origin, and a pubsub route. Whatever a pubsub client subscribes to,
    # it reads nothing of the rooms and publishes nothing into them.
    from wsmux import BroadcastHandler

    tree = RouteTree(
        [
            Route("/rooms/{room}", BroadcastHandler, {"allowed_origins": ["https://app.example"]}),
            Route("/ps", PubSubHandler),
        ]
    )
    member = connect(tree, "/rooms/staff", origin="https://app.example")
    assert member.client.opened
    spy_learns_nothing(
        member, pubsub(tree), ("staff", "/rooms/{room}?room=staff", "room=staff"), publish=True
    )


def test_a_room_name_too_long_is_refused_at_the_handshake():
    from wsmux import BroadcastHandler

    tree = RouteTree([Route("/rooms/{room}", BroadcastHandler)])
    ok = connect(tree, "/rooms/" + "%C3%A9" * 190)  # 190 non-ASCII characters
    assert ok.client.opened
    long = connect(tree, "/rooms/" + "r" * 1100)
    assert not long.client.opened
    assert tree.registry.stats.handshakes[("/rooms/{room}", "414")] == 1
    assert tree.registry.stats.handler_errors == {}


def test_a_publish_respects_each_subscribers_policy():
    tree = RouteTree([Route("/a", NewsHandler, {"max_send_queue": 500, "slow_consumer": "drop"})])
    slow, fast = connect(tree, "/a"), connect(tree, "/a")
    slow.server.wsmux.pauseProducing()
    for _ in range(5):
        fast.client.sendMessage(b"!" + b"x" * 200)
        fast.flush()
    assert len(fast.client.messages) == 5
    assert slow.server.dropped_messages == 3  # 2 x 202 bytes fit under 500


def pubsub(tree, path="/ps"):
    conn = connect(tree, path)
    return conn


def send(conn, obj):
    conn.client.sendMessage(json.dumps(obj).encode() if not isinstance(obj, bytes) else obj)
    conn.flush()
    return json.loads(conn.client.messages[-1][0])


def test_pubsub_protocol():
    tree = RouteTree([Route("/ps", PubSubHandler)])
    alice, bob = pubsub(tree), pubsub(tree)
    assert send(bob, {"action": "subscribe", "channel": "chat"}) == {
        "ok": "subscribe",
        "channel": "chat",
    }
    assert (
        send(alice, {"action": "publish", "channel": "chat", "data": {"text": "hi"}})["ok"]
        == "publish"
    )
    bob.flush()
    assert json.loads(bob.client.messages[-1][0]) == {"channel": "chat", "data": {"text": "hi"}}
    assert send(bob, {"action": "unsubscribe", "channel": "chat"})["ok"] == "unsubscribe"
    send(alice, {"action": "publish", "channel": "chat", "data": 2})
    bob.flush()
    assert json.loads(bob.client.messages[-1][0]) == {"ok": "unsubscribe", "channel": "chat"}


@pytest.mark.parametrize(
    "request_, error",
    [
        (b"not json", "expected a JSON object"),
        ([1, 2], "expected a JSON object"),
        ({"action": "shout", "channel": "x"}, "unknown action 'shout'"),
        ({"action": "subscribe"}, "non-empty string"),
        ({"action": "subscribe", "channel": "x" * 1025}, "at most 1024 bytes"),
        ({"action": "subscribe", "channel": "\ud800"}, "valid Unicode"),
        ({"action": "subscribe", "channel": "a\nb"}, "control characters"),
        ({"action": "x" * 900_000, "channel": "c"}, "unknown action 'xxxxxxxx"),
        ({"action": "publish", "channel": "x"}, "publish needs data"),
        (b'{"action": "publish", "channel": "x", "data": NaN}', "NaN is not a JSON value"),
        (b'{"action": "publish", "channel": "x", "data": [-Infinity]}', "-Infinity is not a"),
        (b'{"action": "publish", "channel": "x", "data": 1e999}', "'1e999' is too big"),
        (b'{"action": "publish", "channel": "x", "data": -' + b"9" * 309 + b"}", "is too big"),
    ],
)
def test_pubsub_errors_answer_and_keep_the_connection(request_, error):
    conn = pubsub(RouteTree([Route("/ps", PubSubHandler)]))
    answer = send(conn, request_)
    assert error in answer["error"]
    assert len(answer["error"]) < 200  # never the whole request back
    assert conn.client.close is None
    assert send(conn, {"action": "subscribe", "channel": "ok"})["ok"] == "subscribe"


def test_subscribers_get_only_json_a_browser_parses():
    # Python's json takes NaN, Infinity and 1e999 (a float's infinity) and
    # writes them back as NaN and Infinity, which JSON.parse refuses: one
    # publisher would break every subscriber's handler.
    tree = RouteTree([Route("/ps", PubSubHandler)])
    alice, bob = pubsub(tree), pubsub(tree)
    send(bob, {"action": "subscribe", "channel": "chat"})
    for data in (b"NaN", b"Infinity", b"-1e999", b'[1, {"a": NaN}]'):
        publish = b'{"action": "publish", "channel": "chat", "data": ' + data + b"}"
        assert "error" in send(alice, publish)
    assert send(alice, {"action": "publish", "channel": "chat", "data": 1e300})["ok"] == "publish"
    big = b"1" + b"0" * 308  # 1e308, under a double's largest (1.79e308)
    assert "ok" in send(alice, b'{"action": "publish", "channel": "chat", "data": ' + big + b"}")
    bob.flush()
    received = [m for m, _ in bob.client.messages if b'"data"' in m]
    assert received == [
        b'{"channel": "chat", "data": 1e+300}',
        b'{"channel": "chat", "data": ' + big + b"}",
    ]


def test_pubsub_channel_cap():
    conn = pubsub(RouteTree([Route("/ps", PubSubHandler)]))
    for i in range(PubSubHandler.max_channels):
        send(conn, {"action": "subscribe", "channel": f"c{i}"})
    assert (
        "at most 100 channels"
        in send(conn, {"action": "subscribe", "channel": "one-more"})["error"]
    )


def test_pubsub_allowed_channels():
    tree = RouteTree([Route("/ps", PubSubHandler, {"allowed_channels": ["news.*", "chat"]})])
    conn = pubsub(tree)
    assert send(conn, {"action": "subscribe", "channel": "news.eu"})["ok"] == "subscribe"
    assert send(conn, {"action": "subscribe", "channel": "chat"})["ok"] == "subscribe"
    assert (
        "not allowed" in send(conn, {"action": "publish", "channel": "admin", "data": 1})["error"]
    )


def test_channel_names():
    assert check_channel_name("news") == "news"
    assert check_channel_name("é" * 512) == "é" * 512
    for bad in ("", None, 5, "x" * 1025, "é" * 513, "\ud800", "tab\there", "\x7f"):
        with pytest.raises(ChannelError):
            check_channel_name(bad)


def test_connections_the_hook_adopts_get_channels_per_handler():
    from wsmux import Adopt, BroadcastHandler

    def hook(request):
        if request.path.startswith(b"/private/"):
            return Adopt(BroadcastHandler, {"room": "secret"})
        return Adopt(PubSubHandler)

    tree = RouteTree([], unhandled=hook)
    member = connect(tree, "/private/x")
    spy_learns_nothing(member, connect(tree, "/anything"), ("secret", "/private/x", "room=secret"))


def test_a_connection_leaves_every_channel_it_joined_when_it_closes():
    tree = RouteTree([Route("/a", NewsHandler)])
    conn = connect(tree, "/a?channel=news")
    hub = tree.registry.channels
    hub.subscribe(conn.server, "elsewhere", "another namespace")
    conn.client.sendClose(1000)
    conn.flush()
    assert hub.subscribers("elsewhere", "another namespace") == 0
    assert hub.namespace("/a").subscribers("news") == 0
