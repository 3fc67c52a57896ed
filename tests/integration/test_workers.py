"""
twistd wsmux --workers 2 on loopback, with a real redis-server: connections
land on both workers, a publish on one worker reaches the other and a second
instance, a killed worker is replaced, SIGTERM stops everything cleanly.
"""

import json
import os
import signal
import socket
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
    server = start_server(
        "--workers", "2", "--tls-port", "tcp:0:interface=127.0.0.1",
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


def wait_count(server, text, count, timeout=15):
    deadline = time.monotonic() + timeout
    while server.log().count(text) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.log().count(text) >= count


def leftover_processes(port):
    """
    Processes still running with this port on their command line.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if f"tcp:{port}:".encode() in cmdline and b"wsmux" in cmdline:
            found.append(int(entry))
    return found


def test_sighup_never_stops_the_server(start_server):
    # Started as systemd starts it: SIGHUP at its default disposition
    # (tests/twistd_process.py), which would end the process unhandled.
    server = start_server()
    with connect(server.url("/echo")) as ws:
        server.process.send_signal(signal.SIGHUP)
        assert wait_for(server, "SIGHUP: no TLS certificates to reload")
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"
    assert server.process.poll() is None


def test_sighup_reaches_workers_without_stopping_them(start_server):
    server = start_server("--workers", "2")
    assert wait_count(server, "serving 1 socket", 2)
    clients = [connect(server.url("/echo")) for _ in range(6)]
    pids = {int(worker_of(ws)) for ws in clients}
    server.process.send_signal(signal.SIGHUP)
    assert wait_count(server, "SIGHUP: no TLS certificates to reload", 2)
    for ws in clients:
        ws.send("after the reload")
        assert ws.recv(timeout=5) == "after the reload"
        ws.close()
    for pid in pids:
        os.kill(pid, 0)  # still the same processes
    assert "exited" not in server.log()


def test_no_worker_outlives_the_supervisor(start_server):
    server = start_server("--workers", "2")
    assert wait_count(server, "serving 1 socket", 2)
    with connect(server.url("/echo")) as ws:
        victim = int(worker_of(ws))
    os.kill(victim, signal.SIGKILL)
    assert wait_for(server, "starting a new one")
    # Within the restart delay: the restart must not happen.
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=15) == 0
    time.sleep(1.5)  # past the restart delay
    assert leftover_processes(server.port) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_a_worker_failing_at_start_up_is_restarted_ever_later_then_given_up(start_server):
    server = start_server("--workers", "2", "--route", "/x=tests.worker_breaker.Handler")
    # 0.5, 1, 2 and 4 seconds between the five quick failures of each slot.
    assert wait_count(server, "starting a new one in 4.0s", 2, timeout=30)
    assert wait_count(server, "not restarting it", 2, timeout=30)
    assert server.process.wait(timeout=15) == 1
    assert server.log().count("starting a new one in 0.5s") == 2
    assert leftover_processes(server.port) == []


def test_workers_keep_the_configuration_until_sighup_applies_a_new_one(start_server, tmp_path):
    from websockets.exceptions import InvalidStatus

    config = tmp_path / "wsmux.toml"
    routes = '[[routes]]\npath = "/echo"\nhandler = "echo"\n'
    config.write_text(routes)
    server = start_server("--workers", "2", "--config", str(config))
    assert wait_count(server, "serving 1 socket", 2)
    before = []
    while len({worker_of(ws) for ws in before}) < 2 and len(before) < 40:
        before.append(connect(server.url("/echo")))
    # An edit nobody applied, broken at that: a replaced worker ignores it.
    config.write_text("this is not TOML")
    killed = worker_of(before[0])
    os.kill(int(killed), signal.SIGKILL)
    assert wait_count(server, "serving 1 socket", 3)
    assert "Usage:" not in server.log()
    server.process.send_signal(signal.SIGHUP)
    assert wait_for(server, "not usable, the workers keep the running configuration")
    # A good change, applied on SIGHUP by replacing every worker.
    config.write_text(routes + '[[routes]]\npath = "/echo2"\nhandler = "echo"\n')
    server.process.send_signal(signal.SIGHUP)
    assert wait_for(server, "changed; replacing 2 worker(s)")
    assert wait_count(server, "serving 1 socket", 5)
    survivors = [ws for ws in before if worker_of(ws) != killed]
    assert survivors
    for ws in survivors:
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=10)
        assert ws.close_code == 1001  # the old workers drained
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with connect(server.url("/echo2")) as ws:
                ws.send("new route")
                assert ws.recv(timeout=5) == "new route"
                break
        except InvalidStatus:
            time.sleep(0.1)  # an old worker still finishing its drain
    else:
        pytest.fail("the new configuration never served /echo2")
