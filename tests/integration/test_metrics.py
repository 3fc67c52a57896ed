"""
Metrics and health of a real twistd wsmux after real traffic.
"""

import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.twistd_process import eventually


def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_metrics_move_with_traffic(start_server):
    server = start_server(
        "--route", "/echo=echo", "--route", "/rooms/{room}=broadcast",
        "--metrics-path", "/metrics", "--metrics-port", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    url = server.url("/metrics", "http")
    metrics_port = next(port for kind, _, port in server.ports() if kind == "metrics")
    before = scrape(url)
    with connect(server.url("/echo")) as ws:
        for text in ("one", "two", "three"):
            ws.send(text)
            assert ws.recv(timeout=5) == text
        during = scrape(url)
        assert value(during, "wsmux_connections_open", route="/echo") == 1
    a, b = connect(server.url("/rooms/x")), connect(server.url("/rooms/x"))
    a.send("hi all")
    assert b.recv(timeout=5) == "hi all" and a.recv(timeout=5) == "hi all"
    a.close()
    b.close()
    with pytest.raises(InvalidStatus):
        connect(server.url("/nope"))
    # The closes and the refusal are counted once the server has seen them.
    assert eventually(
        lambda: (
            value(scrape(url), "wsmux_connections_open", route="/rooms/{room}") == 0
            and value(scrape(url), "wsmux_handshakes_total", route="-", outcome="404") == 1
        )
    )
    after = scrape(url)
    assert value(after, "wsmux_messages_in_total", route="/echo") == 3
    assert value(after, "wsmux_messages_out_total", route="/echo") == 3
    assert value(after, "wsmux_bytes_in_total", route="/echo") > value(
        before, "wsmux_bytes_in_total", route="/echo"
    )
    assert value(after, "wsmux_messages_in_total", route="/rooms/{room}") == 1
    assert (
        value(after, "wsmux_messages_out_total", route="/rooms/{room}") == 2
    )  # framed once, sent twice
    assert value(after, "wsmux_handshakes_total", route="/echo", outcome="accepted") == 1
    assert value(after, "wsmux_handshakes_total", route="/rooms/{room}", outcome="accepted") == 2
    assert value(after, "wsmux_handshakes_total", route="-", outcome="404") == 1
    assert value(after, "wsmux_closes_total", route="/echo", code="1000") == 1
    assert value(after, "wsmux_connections_open", route="/echo") == 0
    # The same numbers on the metrics port of their own.
    own = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    assert value(own, "wsmux_messages_in_total", route="/echo") == 3


def test_health(start_server):
    server = start_server()
    with urllib.request.urlopen(server.url("/healthz", "http"), timeout=5) as response:
        assert response.status == 200 and response.read() == b"ok\n"


def test_status_page_json_and_live_route_are_protected(start_server):
    import json

    server = start_server(
        "--status-path", "/status", "--status-allow", "10.0.0.0/8", "--status-token", "s3cret"
    )
    for path in ("/status", "/status/json"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url(path, "http"), timeout=5)
        assert e.value.code == 403
    with pytest.raises(InvalidStatus) as e:
        connect(server.url("/status/live"))
    assert e.value.response.status_code == 403
    with urllib.request.urlopen(server.url("/status?token=s3cret", "http"), timeout=5) as page:
        assert b"wsmux status" in page.read()
    request = urllib.request.Request(
        server.url("/status/json", "http"), headers={"Authorization": "Bearer s3cret"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        status = json.loads(response.read())
    assert {r["path"] for r in status["routes"]} >= {"/echo", "/rooms/{room}"}
    with connect(server.url("/status/live?token=s3cret")) as live:
        first = json.loads(live.recv(timeout=5))
        assert first["connections"] == 1  # the live connection itself
        with connect(server.url("/echo")) as ws:
            ws.send("x")
            ws.recv(timeout=5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                update = json.loads(live.recv(timeout=5))
                echo = next(r for r in update["routes"] if r["path"] == "/echo")
                if echo["open"] == 1 and echo["messages_in"] == 1:
                    break
            assert echo["open"] == 1 and echo["messages_in"] == 1


def test_status_is_loopback_only_by_default(start_server):
    server = start_server("--status-path", "/ops/status")
    with urllib.request.urlopen(server.url("/ops/status/json", "http"), timeout=5) as response:
        assert response.status == 200


def test_health_is_503_while_draining(start_server):
    import http.client
    import signal

    from tests.hostile.rawws import Peer

    server = start_server("--drain-timeout", "4")
    keepalive = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    keepalive.request("GET", "/healthz")
    first = keepalive.getresponse()
    assert (first.status, first.read()) == (200, b"ok\n")
    # A client that will not answer the close keeps the drain going.
    stubborn = Peer(server.port).open("/echo")
    server.process.send_signal(signal.SIGTERM)
    assert stubborn.close_code() == 1001
    keepalive.request("GET", "/healthz")
    during = keepalive.getresponse()
    assert (during.status, during.read()) == (503, b"draining\n")
    assert server.process.wait(timeout=10) == 0


def test_a_second_sigterm_while_draining_is_no_error(start_server):
    import signal

    from tests.hostile.rawws import Peer, close_frame
    from tests.twistd_process import eventually

    server = start_server("--drain-timeout", "20")
    stubborn = Peer(server.port).open("/echo")
    server.process.send_signal(signal.SIGTERM)
    assert stubborn.close_code() == 1001
    server.process.send_signal(signal.SIGTERM)
    assert eventually(lambda: "Received SIGTERM again: still shutting down." in server.log())
    stubborn.send(close_frame(1001))  # the drain ends with the last close
    assert server.process.wait(timeout=10) == 0
    assert "Traceback" not in server.log() and "ReactorNotRunning" not in server.log()


def test_status_refuses_bad_tokens_and_foreign_pages_plainly(start_server):
    from tests.hostile.rawws import Peer, request

    server = start_server("--status-path", "/status", "--status-token", "s3cret")
    # Tokens that are not ASCII are a plain 403, not a 500 with a traceback.
    for path, extra in (
        ("/status/json?token=%C3%A9", ""),
        ("/status/json", "Authorization: Bearer \u00e9\r\n"),
    ):
        p = Peer(server.port)
        p.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        assert p.status() == 403
    p = Peer(server.port)
    p.send(request("/status/live?token=%C3%A9"))
    head = p.response()
    assert head.startswith("HTTP/1.1 403 ") and "Error" not in head.splitlines()[0]
    # Even with the token, the live status goes to a page of its own origin,
    # never to another site's page open in the operator's browser.
    p = Peer(server.port)
    p.send(request("/status/live?token=s3cret", "Origin: https://evil.example\r\n"))
    assert p.status() == 403
    p = Peer(server.port)
    same = request("/status/live?token=s3cret", f"Origin: http://127.0.0.1:{server.port}\r\n")
    p.send(same.replace(b"Host: 127.0.0.1\r\n", f"Host: 127.0.0.1:{server.port}\r\n".encode()))
    assert p.status() == 101
    with connect(server.url("/status/live?token=s3cret")) as live:  # no Origin: not a browser
        assert "connections" in live.recv(timeout=5)
    assert "Traceback" not in server.log() and "critical" not in server.log()


def test_the_loopback_only_status_answers_loopback_host_names_only(start_server):
    # DNS rebinding: a page on evil.example whose name now points at
    # 127.0.0.1 is same-origin with itself and comes from loopback.
    from tests.hostile.rawws import Peer, request

    server = start_server("--status-path", "/status")
    for host, status in (
        ("evil.example", 403),
        (f"evil.example:{server.port}", 403),
        (f"127.0.0.1:{server.port}", 200),
        (f"localhost:{server.port}", 200),
        (f"[::1]:{server.port}", 200),
    ):
        p = Peer(server.port)
        p.send(f"GET /status/json HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert p.status() == status, host
    p = Peer(server.port)
    live = request("/status/live", f"Origin: http://evil.example:{server.port}\r\n")
    p.send(live.replace(b"Host: 127.0.0.1", f"Host: evil.example:{server.port}".encode()))
    assert p.status() == 403
