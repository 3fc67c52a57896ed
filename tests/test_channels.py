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


def test_channels_reach_every_subscriber_across_routes():
    tree = RouteTree([Route("/a", NewsHandler), Route("/b", NewsHandler)])
    a, b = connect(tree, "/a?channel=news"), connect(tree, "/b?channel=news")
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
    assert tree.registry.channels.subscribers("news") == 1
    a.client.sendClose(1000)
    a.flush()
    assert tree.registry.channels.subscribers("news") == 0


def test_a_publish_respects_each_subscribers_policy():
    tree = RouteTree([Route("/a", NewsHandler, {"max_send_queue": 500, "slow_consumer": "drop"})])
    slow, fast = connect(tree, "/a"), connect(tree, "/a")
    slow.server.pauseProducing()
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
        ({"action": "subscribe", "channel": "x" * 201}, "at most 200 characters"),
        ({"action": "publish", "channel": "x"}, "publish needs data"),
    ],
)
def test_pubsub_errors_answer_and_keep_the_connection(request_, error):
    conn = pubsub(RouteTree([Route("/ps", PubSubHandler)]))
    answer = send(conn, request_)
    assert error in answer["error"]
    assert conn.client.close is None
    assert send(conn, {"action": "subscribe", "channel": "ok"})["ok"] == "subscribe"


def test_pubsub_channel_cap():
    conn = pubsub(RouteTree([Route("/ps", PubSubHandler)]))
    for i in range(PubSubHandler.max_channels):
        send(conn, {"action": "subscribe", "channel": f"c{i}"})
    assert (
        "at most 100 channels"
        in send(conn, {"action": "subscribe", "channel": "one-more"})["error"]
    )


def test_channel_names():
    assert check_channel_name("news") == "news"
    for bad in ("", None, 5, "x" * 201):
        with pytest.raises(ChannelError):
            check_channel_name(bad)
