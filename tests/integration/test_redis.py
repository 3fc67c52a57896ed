"""
Channels across two real wsmux instances through a real redis-server, and
what happens when Redis goes away and comes back.
"""

import json
import time

import pytest
from websockets.sync.client import connect

from tests.redis_process import RedisServer
from tests.twistd_process import free_port


@pytest.fixture
def redis():
    server = RedisServer(free_port())
    yield server
    server.stop()


def subscribe(url, channel):
    ws = connect(url)
    ws.send(json.dumps({"action": "subscribe", "channel": channel}))
    assert json.loads(ws.recv(timeout=5))["ok"] == "subscribe"
    return ws


def publish(ws, channel, data):
    ws.send(json.dumps({"action": "publish", "channel": channel, "data": data}))


def next_data(ws, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=max(0.05, deadline - time.monotonic())))
        if "data" in message:
            return message["data"]
    raise TimeoutError


def wait_for(server, text, timeout=10):
    deadline = time.monotonic() + timeout
    while text not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    return text in server.log()


def test_publish_reaches_another_instance_and_survives_a_redis_restart(start_server, redis):
    one = start_server("--route", "/ps=pubsub", "--redis", redis.url, "--metrics-path", "/metrics")
    two = start_server("--route", "/ps=pubsub", "--redis", redis.url)
    assert wait_for(one, "subscribed to Redis") and wait_for(two, "subscribed to Redis")
    local = subscribe(one.url("/ps"), "news")
    remote = subscribe(two.url("/ps"), "news")
    publisher = connect(one.url("/ps"))

    publish(publisher, "news", "first")
    assert next_data(local) == "first"
    assert next_data(remote) == "first"

    from tests.integration.test_metrics import scrape, value

    assert value(scrape(one.url("/metrics", "http")), "wsmux_redis_connected") == 1
    redis.stop()
    assert wait_for(one, "lost the Redis connection")
    publish(publisher, "news", "while redis is down")
    assert next_data(local) == "while redis is down"  # local delivery never stops
    assert wait_for(one, "could not publish to Redis")
    down = scrape(one.url("/metrics", "http"))
    assert value(down, "wsmux_redis_connected") == 0
    assert value(down, "wsmux_redis_publish_failures_total") >= 1
    with pytest.raises(TimeoutError):
        next_data(remote, timeout=1)

    redis.start()
    assert wait_for(one, "subscribed to Redis", timeout=20) and wait_for(two, "subscribed to Redis")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the publisher's connection is back too
        publish(publisher, "news", "after the restart")
        assert next_data(local) == "after the restart"
        try:
            assert next_data(remote, timeout=1) == "after the restart"
            break
        except TimeoutError:
            continue
    else:
        pytest.fail("cross-instance delivery did not resume")
    for ws in (local, remote, publisher):
        ws.close()


def redis_publish(port, channel, message):
    """
    PUBLISH straight to Redis, as anything that can reach it could.
    """
    import socket

    command = [b"PUBLISH", channel, message]
    data = b"*%d\r\n" % len(command) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in command
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        assert s.recv(100).startswith(b":")


def room_server(start_server, redis, tmp_path, limits):
    """
    A wsmux with broadcast rooms, Redis, metrics and C{limits} (TOML
    lines for the [limits] table), subscribed to Redis.
    """
    config = tmp_path / "redis.toml"
    config.write_text("[limits]\n" + limits)
    server = start_server(
        "--config", str(config), "--route", "/rooms/{room}=broadcast",
        "--redis", redis.url, "--metrics-path", "/metrics",
    )  # fmt: skip
    assert wait_for(server, "subscribed to Redis")
    return server


def test_bad_messages_from_redis_are_dropped_and_nobody_is_disconnected(
    start_server, redis, tmp_path
):
    import os

    from tests.integration.test_metrics import scrape, value
    from wsmux.redis_channels import redis_channel

    server = room_server(start_server, redis, tmp_path, "redis_max_message = 1000\n")
    members = [connect(server.url("/rooms/lobby")) for _ in range(10)]
    channel = redis_channel("/rooms/{room}", "lobby")
    origin = os.urandom(8)
    redis_publish(redis.port, channel, origin + b"t" + b"caf\xc3 \xff")  # text, not UTF-8
    redis_publish(redis.port, channel, origin + b"b" + b"x" * 1001)  # over redis_max_message
    redis_publish(redis.port, b"wsmux:99:lobby", origin + b"thello")  # a malformed name
    redis_publish(redis.port, channel, origin + b"tstill here")
    for ws in members:
        assert ws.recv(timeout=5) == "still here"
    assert wait_for(server, "from Redis; ")
    metrics = scrape(server.url("/metrics", "http"))
    assert value(metrics, "wsmux_redis_dropped_total") == 3
    for ws in members:
        ws.send("and talking")
    for ws in members:
        assert ws.recv(timeout=5) == "and talking"
        ws.close()


def test_a_hung_redis_holds_a_bounded_amount(start_server, redis, tmp_path):
    import signal

    from tests.hostile.rawws import rss_kib
    from tests.integration.test_metrics import scrape, value

    server = room_server(start_server, redis, tmp_path, "redis_max_pending = 4194304\n")  # 4 MiB
    ws = connect(server.url("/rooms/hung"), max_size=None)
    payload = b"p" * (512 * 1024)
    ws.send(payload)  # warm up the connection before measuring
    assert ws.recv(timeout=5) == payload
    before = rss_kib(server.process.pid)
    redis.process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(200):  # 100 MiB published while Redis takes nothing
            ws.send(payload)
            assert ws.recv(timeout=5) == payload  # local delivery goes on
        grown = rss_kib(server.process.pid) - before
        metrics = scrape(server.url("/metrics", "http"))
        assert value(metrics, "wsmux_redis_pending_bytes") <= 4 * 1024 * 1024
        assert value(metrics, "wsmux_redis_publish_failures_total") >= 150
        # Stated bound: the 4 MiB waiting for Redis and Twisted's copies of it.
        assert grown < 40 * 1024, grown
    finally:
        redis.process.send_signal(signal.SIGCONT)
    ws.close()


def test_many_tiny_publishes_to_a_hung_redis_hold_a_bounded_amount(start_server, redis, tmp_path):
    import signal

    from tests.hostile.rawws import rss_kib
    from tests.integration.test_metrics import scrape, value

    server = room_server(start_server, redis, tmp_path, "redis_max_pending = 1048576\n")  # 1 MiB
    ws = connect(server.url("/rooms/tiny"))
    ws.send("warm up")
    assert ws.recv(timeout=5) == "warm up"
    before = rss_kib(server.process.pid)
    redis.process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(20):  # 20,000 publishes of one byte
            for _ in range(1000):
                ws.send("x")
            for _ in range(1000):
                assert ws.recv(timeout=5) == "x"
        metrics = scrape(server.url("/metrics", "http"))
        # Each waiting publish counts what it holds, framing and reply
        # included, not its one byte: the cap ends the backlog early.
        assert value(metrics, "wsmux_redis_publish_failures_total") >= 19_000
        assert rss_kib(server.process.pid) - before < 10 * 1024
    finally:
        redis.process.send_signal(signal.SIGCONT)
    ws.close()
