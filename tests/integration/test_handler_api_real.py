"""
The handler API of self.wsmux against a real twistd wsmux, with the
websockets client.
"""

import os

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

HANDLER = "/api=tests.handlers_for_tests.HandlerApi"


def test_close_codes_drop_and_refusal_headers_reach_a_real_client(start_server):
    server = start_server("--route", HANDLER)
    for code, reason in ((1001, "going away"), (1008, "policy"), (1014, "bad gateway")):
        with connect(server.url("/api")) as ws:
            ws.send(f"close {code} {reason}")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            assert (ws.close_code, ws.close_reason) == (code, reason)
    with connect(server.url("/api")) as ws:
        ws.send("drop")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1006
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url("/api?deny=1"))
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="t"'


def test_broadcast_without_the_sender_to_real_clients(start_server):
    server = start_server("--route", "/chorus=tests.handlers_for_tests.Chorus")
    with connect(server.url("/chorus")) as a, connect(server.url("/chorus")) as b:
        a.send("count")
        assert a.recv(timeout=5) == "2"
        a.send("hello")
        assert b.recv(timeout=5) == "hello"
        with pytest.raises(TimeoutError):
            a.recv(timeout=0.3)  # the sender is left out


def test_port_file_names_every_port_the_server_got(start_server, tmp_path):
    import urllib.request

    server = start_server("--metrics-port", "tcp:0:interface=127.0.0.1")
    ports = server.ports()
    assert [kind for kind, _, _ in ports] == ["plain", "metrics"]
    assert all(host == "127.0.0.1" and port > 0 for _, host, port in ports)
    metrics_port = ports[1][2]
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        assert b"wsmux_connections_open" in r.read()
    with connect(server.url("/echo")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    server.stop()
    assert not server.port_file.exists()  # removed on the way out


def test_port_file_in_a_missing_directory_is_a_usage_error(tmp_path):
    from tests.twistd_process import run_twistd

    done = run_twistd(
        "wsmux", "--port", "tcp:0:interface=127.0.0.1", "--port-file", str(tmp_path / "no" / "f")
    )
    assert done.returncode == 1
    assert "--port-file" in done.stdout + done.stderr and "no such directory" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    done = run_twistd("wsmux", "--port", "tcp:0:interface=127.0.0.1", "--port-file", str(tmp_path))
    assert done.returncode == 1 and "is a directory" in done.stdout


def test_what_a_handler_knows_over_real_wss(start_server, tmp_path):
    import json
    import time

    from tests.pki import make_pki, sync_client_context

    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    chain, key = pki.files["default.test"]
    server = start_server(
        "--cert", chain, "--key", key, "--tls-port", "tcp:0:interface=127.0.0.1",
        "--route", "/knows=tests.handlers_for_tests.Knows", "--ping-interval", "0.2",
    )  # fmt: skip
    tls_port = next(port for kind, _, port in server.ports() if kind == "tls")
    context = sync_client_context(pki.ca_file)
    with connect(
        f"wss://127.0.0.1:{tls_port}/knows",
        ssl=context,
        server_hostname="default.test",
        additional_headers={"Cookie": "sid=abc; theme=dark"},
    ) as ws:
        deadline = time.monotonic() + 5
        while True:
            ws.send("?")
            known = json.loads(ws.recv(timeout=5))
            if known["latency"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert known["tls"] is True and known["server_name"] == "default.test"
    assert known["cookies"] == {"sid": "abc", "theme": "dark"}
    assert known["chain"] == ["127.0.0.1"]
    assert 0 <= known["latency"] < 5
    assert f"conn={known['id']}" in server.log()


def test_connection_events_with_real_clients(start_server):
    import time
    from pathlib import Path

    tac = Path(__file__).with_name("events.tac")
    server = start_server("-y", str(tac), plugin=None)
    with connect(server.url("/echo")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    with pytest.raises(InvalidStatus):
        connect(server.url("/nowhere"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "event refused status=404" not in server.log():
        time.sleep(0.05)
    log = server.log()
    assert "event opened conn=" in log and "code=1000" in log
    assert "event refused status=404" in log


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a port below 1024 needs root")
def test_a_privileged_port_is_bound_before_twistd_drops_privileges(tmp_path):
    import socket

    from tests.twistd_process import Server

    for port in range(900, 1000):  # a free port below 1024
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
    args = [
        "--uid",
        "65534",
        "--gid",
        "65534",
        "wsmux",
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
    ]
    server = Server(args, port, tmp_path / "privileged.log")
    try:
        with connect(server.url("/echo")) as ws:
            ws.send("as nobody")
            assert ws.recv(timeout=5) == "as nobody"
    finally:
        server.stop()


def test_workers_with_a_port_file_they_cannot_write_say_so(tmp_path):
    import time

    from tests.twistd_process import Server, free_port

    port = free_port()
    args = ["wsmux", "--workers", "2", "--port", f"tcp:{port}:interface=127.0.0.1"]
    args += ["--port-file", "/proc/wsmux.ports"]  # a directory nobody may write in
    server = Server(args, port, tmp_path / "workers.log")
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "cannot write the port file" not in server.log():
            time.sleep(0.05)
        assert "cannot write the port file /proc/wsmux.ports" in server.log()
        assert "Traceback" not in server.log()
        with connect(server.url("/echo")) as ws:
            ws.send("still serving")
            assert ws.recv(timeout=5) == "still serving"
    finally:
        server.stop()


def test_deflate_knobs_reach_real_clients(start_server):
    import zlib

    from tests.hostile.rawws import Peer, frame, request

    server = start_server(
        "--deflate",
        "--deflate-level", "9",
        "--deflate-mem-level", "1",
        "--deflate-server-max-window-bits", "10",
        "--deflate-client-max-window-bits", "9",
        "--deflate-server-no-context-takeover",
        "--deflate-threshold", "64",
    )  # fmt: skip
    # The websockets client offers client_max_window_bits, and takes the limit.
    with connect(server.url("/echo")) as ws:
        answer = ws.response.headers["Sec-WebSocket-Extensions"]
        assert answer == (
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9"
        )
        for message in ("short", "long and repeated " * 400):
            ws.send(message)
            assert ws.recv(timeout=5) == message
    # A raw client sees short messages plain and long ones compressed, each
    # on its own (no context between them), with a 10-bit window.
    peer = Peer(server.port)
    offer = "permessage-deflate; server_max_window_bits=12; client_max_window_bits"
    peer.send(request("/echo", f"Sec-WebSocket-Extensions: {offer}\r\n"))
    head = peer.response()
    assert "server_max_window_bits=10" in head
    for payload, compressed in ((b"x" * 63, False), (b"y" * 64, True), (b"y" * 64, True)):
        peer.send(frame(payload))
        opcode, data, rsv1 = peer.read_frame()
        assert rsv1 == compressed
        if rsv1:
            data = zlib.decompressobj(-10).decompress(data + b"\x00\x00\xff\xff")
        assert (opcode, data) == (1, payload)
    peer.close()
    # A client that cannot limit its window gets no compression, not a refusal.
    peer = Peer(server.port)
    peer.send(request("/echo", "Sec-WebSocket-Extensions: permessage-deflate\r\n"))
    head = peer.response()
    assert head.startswith("HTTP/1.1 101") and "permessage-deflate" not in head
    peer.close()


def test_async_handlers_with_real_clients(start_server):
    server = start_server(
        "--route", "/a=echo-async",
        "--route", "/fails=tests.handlers_for_tests.fails_later",
    )  # fmt: skip
    with connect(server.url("/a")) as ws:
        ws.send("text")
        assert ws.recv(timeout=5) == "text"
        ws.send(b"\x00bin")
        assert ws.recv(timeout=5) == b"\x00bin"
    with connect(server.url("/fails")) as ws:
        ws.send("one")
        assert ws.recv(timeout=5) == "one"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1011
    assert "the async handler failed" in server.log()


def test_async_handler_awaits_asyncio_under_the_asyncio_reactor(start_server, monkeypatch):
    from tests import twistd_process

    monkeypatch.setattr(twistd_process, "REACTOR", "asyncio")
    server = start_server("--route", "/aio=tests.handlers_for_tests.asyncio_user")
    with connect(server.url("/aio")) as ws:
        for word in ("one", "two"):
            ws.send(word)
            assert ws.recv(timeout=5) == word.upper()


def test_async_send_waits_for_a_client_that_does_not_read(start_server):
    import time

    from tests.hostile.rawws import Peer, frame, rss_kib

    server = start_server(
        "--route", "/hose=tests.handlers_for_tests.firehose", "--route", "/echo=echo",
        "--ping-interval", "0",
    )  # fmt: skip
    peer = Peer(server.port, rcvbuf=4096)
    peer.open("/hose")
    before = rss_kib(server.process.pid)
    peer.send(frame(b"x"))
    time.sleep(1)  # unbounded, the handler would send gigabytes in this time
    grown = rss_kib(server.process.pid) - before
    assert grown < 16 * 1024, f"server grew {grown} KiB"
    # Still open, and it goes on when read: past the route's 1 MiB
    # max_send_queue, where a sender that did not wait would have been
    # closed as a slow consumer (1008).
    for _ in range(200):  # 12.5 MiB: a sender that did not wait was closed long before
        opcode, payload, _ = peer.read_frame()
        assert opcode == 2 and payload == b"x" * 65536
    peer.close()
    with connect(server.url("/echo")) as ws:
        ws.send("still fine")
        assert ws.recv(timeout=5) == "still fine"


def ws_and_wss(start_server, tmp_path, *routes):
    """
    A server with C{routes} on a plain and a TLS port; the server, and a
    function giving the ws and wss URLs of a path with the client options
    for each.
    """
    from tests.pki import make_pki, sync_client_context

    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    chain, key = pki.files["default.test"]
    routes = [arg for route in routes for arg in ("--route", route)]
    server = start_server(
        "--cert", chain, "--key", key, "--tls-port", "tcp:0:interface=127.0.0.1", *routes
    )  # fmt: skip
    tls_port = next(port for kind, _, port in server.ports() if kind == "tls")
    wss = {"ssl": sync_client_context(pki.ca_file), "server_hostname": "default.test"}

    def urls(path):
        return [(server.url(path), {}), (f"wss://127.0.0.1:{tls_port}{path}", wss)]

    return server, urls


def test_legacy_log_lines_from_a_handler_name_its_connection(start_server, tmp_path):
    # Twisted's legacy log.msg takes its system from the context the
    # reactor sets around each read (the seam's twisted.log_context, or
    # Twisted's own): the connection, over ws and wss alike.
    import re

    from wsmux import _compat

    server, urls = ws_and_wss(
        start_server, tmp_path, "/legacy=tests.handlers_for_tests.LegacyLogger"
    )
    expected = "wsmux._compat_twisted" if _compat.enabled("twisted.log_context") else None
    for url, options in urls("/legacy"):
        with connect(url, **options) as ws:
            ws.send(f"over {url[:3]}")
            module = ws.recv(timeout=5)
        assert module == (expected or "twisted.python.log")
    log = server.log()
    for scheme in ("ws:", "wss"):
        line = next(line for line in log.splitlines() if f"legacy says over {scheme}" in line)
        assert re.search(r" \[GuardedHTTPChannel(?: \(\w+\))?,\d+,127\.0\.0\.1\] legacy", line), (
            line
        )


def test_a_handler_raising_in_connection_lost_is_logged_as_such(start_server, tmp_path):
    # Over ws a clean close ends the connection inside the read that
    # brought the client's close; over wss the reactor ends it.  Either way
    # the handler's error is logged once, naming connectionLost, with no
    # action on the connection (gone), and the server serves on; also when
    # the handler raises before Autobahn's own connectionLost has run.
    from tests.twistd_process import eventually

    server, urls = ws_and_wss(
        start_server,
        tmp_path,
        "/after=tests.handlers_for_tests.FailsInLost",
        "/before=tests.handlers_for_tests.FailsInLostFirst",
    )
    for path in ("/after", "/before"):
        for url, options in urls(path):
            with connect(url, **options) as ws:
                ws.send("hi")
                assert ws.recv(timeout=5) == "hi"
    assert eventually(lambda: server.log().count("the handler raised in connectionLost") == 4)
    log = server.log()
    assert log.count("the connection is closed already") == 4
    assert "Unhandled" not in log and "message callback" not in log and "1011" not in log
    with connect(server.url("/after")) as ws:
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"


def test_header_values_reach_a_handler_as_the_client_sent_them(start_server):
    # Bytes Python's str.splitlines takes for line ends (0x85, 0x0b, 0x1c)
    # and str.strip for spaces (0xa0, the last byte of UTF-8 "à"), inside
    # and at the end of values: Autobahn's own handshake (the public path)
    # cut the first at 0x85, and both cut the 0xa0.  Where its parser would
    # read a header of its own after one, the request is refused: before,
    # a keep-alive GET got a 101 from a "connection: upgrade" hidden so.
    import json
    import socket

    from wsmux.testing import upgrade_request

    def send(request):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            client.sendall(request)
            answer = b""
            while not answer.endswith((b"}", b"\r\n\r\n")):
                data = client.recv(4096)
                if not data:
                    break
                answer += data
        return answer

    server = start_server("--route", "/show=tests.handlers_for_tests.ShowsHeaders")
    extra = "X-Note: a\x85b\r\nX-Name: caf\xc3\xa0\r\nX-Other: v\x0bw\x1cx\r\n"
    answer = send(upgrade_request("/show", extra))
    assert answer.startswith(b"HTTP/1.1 101 "), answer
    seen = json.loads(answer[answer.index(b"{") :])
    assert seen["x-note"] == "a\x85b"
    assert seen["x-name"] == "caf\xc3\xa0"
    assert seen["x-other"] == "v\x0bw\x1cx"
    hidden = upgrade_request("/show", "X-Note: a\x85x-user: admin\r\n")
    keep_alive = upgrade_request("/show").replace(
        b"Connection: Upgrade\r\n", b"Connection: keep-alive\r\nX-A: a\x85connection: upgrade\r\n"
    )
    for request in (hidden, keep_alive):
        assert send(request).startswith(b"HTTP/1.1 400 Bad Request: byte 0x85 in the x-")
    with connect(server.url("/show")) as ws:
        assert json.loads(ws.recv(timeout=5))["upgrade"] == "websocket"
