"""
twistd wsmux --workers 2 on loopback, with a real redis-server: connections
land on both workers, a publish on one worker reaches the other and a second
instance, a killed worker is replaced, SIGTERM stops everything cleanly.
"""

import json
import os
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from tests.integration.test_redis import next_data, publish, subscribe, wait_for
from tests.redis_process import RedisServer
from tests.twistd_process import free_port


@pytest.fixture
def redis():
    server = RedisServer(free_port())
    yield server
    server.stop()


def worker_of(ws):
    return ws.response.headers["X-Wsmux-Worker"]


def connections_by_worker(server, count=20):
    by_worker = {}
    opened = []
    for _ in range(count):
        ws = connect(server.url("/ps"))
        opened.append(ws)
        by_worker.setdefault(worker_of(ws), []).append(ws)
    return by_worker, opened


def test_workers_share_ports_and_channels(start_server, redis):
    server = start_server("--workers", "2", "--route", "/ps=pubsub", "--redis", redis.url)
    other = start_server("--route", "/ps=pubsub", "--redis", redis.url)
    assert wait_for(server, "worker pid") and wait_for(other, "subscribed to Redis")
    deadline = time.monotonic() + 15
    while server.log().count("subscribed to Redis") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    by_worker, opened = connections_by_worker(server)
    assert len(by_worker) == 2, {pid: len(c) for pid, c in by_worker.items()}
    (pid_a, on_a), (pid_b, on_b) = by_worker.items()
    assert f"worker pid {pid_a}" in server.log() and f"worker pid {pid_b}" in server.log()

    listener_a = on_a[0]
    listener_a.send(json.dumps({"action": "subscribe", "channel": "all"}))
    assert json.loads(listener_a.recv(timeout=5))["ok"] == "subscribe"
    listener_other = subscribe(other.url("/ps"), "all")
    publish(on_b[0], "all", "from worker b")
    assert next_data(listener_a) == "from worker b"
    assert next_data(listener_other) == "from worker b"
    for ws in opened + [listener_other]:
        ws.close()


def test_a_killed_worker_is_replaced(start_server):
    server = start_server("--workers", "2")
    assert wait_for(server, "serving 1 socket")
    deadline = time.monotonic() + 15
    while server.log().count("serving 1 socket") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    with connect(server.url("/echo")) as ws:
        victim = int(worker_of(ws))
    os.kill(victim, signal.SIGKILL)
    assert wait_for(server, "starting a new one")
    deadline = time.monotonic() + 15
    while server.log().count("serving 1 socket") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = set()
    for _ in range(20):
        with connect(server.url("/echo")) as ws:
            seen.add(int(worker_of(ws)))
            ws.send("after")
            assert ws.recv(timeout=5) == "after"
    assert victim not in seen and len(seen) == 2


def test_sigterm_stops_every_worker_cleanly(start_server):
    server = start_server("--workers", "2", "--drain-timeout", "3")
    deadline = time.monotonic() + 15
    while server.log().count("serving 1 socket") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    clients = [connect(server.url("/echo")) for _ in range(10)]
    workers = {int(worker_of(ws)) for ws in clients}
    server.process.send_signal(signal.SIGTERM)
    for ws in clients:
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=10)
        assert ws.close_code == 1001
    assert server.process.wait(timeout=15) == 0
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sighup_and_metrics_reach_the_workers(start_server, tmp_path):
    from tests.integration.test_metrics import scrape
    from tests.pki import make_pki

    pki = make_pki(tmp_path)
    tls_port = free_port()
    server = start_server(
        "--workers", "2", "--tls-port", f"tcp:{tls_port}:interface=127.0.0.1",
        "--certs", str(pki.directory), "--metrics-path", "/metrics",
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while server.log().count("serving 2 socket") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = {
        dict(labels)["pid"]
        for _ in range(10)
        for (name, labels), v in scrape(server.url("/metrics", "http")).items()
        if name == "wsmux_worker"
    }
    assert len(pids) >= 1
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (
        server.log().count("SIGHUP: reloading TLS certificates") < 2 and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert server.log().count("SIGHUP: reloading TLS certificates") == 2
