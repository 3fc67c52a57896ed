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
