"""
A real twistd wsmux process, real clients (the websockets library, urllib).
"""

import json
import socket
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.twistd_process import ROOT, run_twistd
from wsmux.testing import masked_frame, upgrade_request


def test_default_configuration_serves_echo_and_page(start_server):
    server = start_server()
    with connect(server.url("/echo")) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01\x02")
        assert ws.recv(timeout=5) == b"\x00\x01\x02"
    with urllib.request.urlopen(server.url("/", "http"), timeout=5) as page:
        body = page.read().decode()
    assert page.status == 200 and "<title>wsmux</title>" in body and "WebSocket(" in body
    assert "open route=/echo" in server.log() or _wait_for(server, "open route=/echo")


def _wait_for(server, text, timeout=5):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log():
            return True
        time.sleep(0.05)
    return False


def test_a_client_close_is_answered_and_the_server_closes_tcp(start_server):
    # Over plain TCP wsmux closes the socket as soon as its close frame is
    # sent; the client must still get the echo and that frame, then a clean
    # end of stream.
    server = start_server()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(
                upgrade_request("/echo")
                + masked_frame(b"hi")
                + masked_frame(b"\x0f\xa0bye", opcode=8)
            )
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        head, _, frames = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert frames == b"\x81\x02hi\x88\x02\x03\xe8"
    assert _wait_for(server, "code=4000 reason='bye'")


def test_two_routes_with_different_options(start_server, tmp_path):
    config = tmp_path / "two.toml"
    config.write_text("""
[[routes]]
path = "/small"
handler = "echo"
max_message_size = 100

[[routes]]
path = "/big"
handler = "echo"
max_message_size = 100000
""")
    server = start_server("--config", str(config))
    with connect(server.url("/big"), max_size=None) as ws:
        ws.send("x" * 5000)
        assert ws.recv(timeout=5) == "x" * 5000
    with connect(server.url("/small")) as ws:
        ws.send("y" * 50)
        assert ws.recv(timeout=5) == "y" * 50
        ws.send("y" * 5000)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1009
    assert _wait_for(server, "close route=/small")
    assert "code=1009" in server.log()


def test_broadcast_rooms(start_server):
    server = start_server("--route", "/rooms/{room}=broadcast")
    a = [connect(server.url("/rooms/a")) for _ in range(3)]
    b = [connect(server.url("/rooms/b")) for _ in range(2)]
    try:
        a[0].send("to a")
        for ws in a:
            assert ws.recv(timeout=5) == "to a"
        b[1].send(b"\x01to b")
        for ws in b:
            assert ws.recv(timeout=5) == b"\x01to b"
        for ws in a:
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)
    finally:
        for ws in a + b:
            ws.close()


def test_unknown_path_404_and_plain_get_426(start_server):
    server = start_server()
    with pytest.raises(InvalidStatus) as e:
        connect(server.url("/nope"))
    assert e.value.response.status_code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server.url("/echo", "http"), timeout=5)
    assert e.value.code == 426
    assert e.value.headers["Upgrade"].lower() == "websocket"
    assert "Server: wsmux" in str(e.value.headers) and "Autobahn" not in str(e.value.headers)
    assert _wait_for(server, "rejected upgrade path=/nope")


def test_unhandled_hook_adopts_and_rejects(start_server):
    server = start_server("--route", "/echo=echo", "--unhandled", "tests.handlers_for_tests.hook")
    with connect(server.url("/legacy/feed")) as ws:
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"
    with connect(server.url("/deferred/x?q=1")) as ws:
        ws.send("?")
        assert json.loads(ws.recv(timeout=5))["query"] == {"q": ["1"]}
    with pytest.raises(InvalidStatus) as e:
        connect(server.url("/private/x"))
    assert e.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as e:
        connect(server.url("/elsewhere"))
    assert e.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as e:
        connect(server.url("/broken/x"))
    assert e.value.response.status_code == 500
    assert b"hook bug" not in e.value.response.body
    assert _wait_for(server, "unhandled hook failed for /broken/x")


def test_user_handler_sees_path_params_and_cookies(start_server):
    server = start_server("--route", "/t/{tenant}/feed=tests.handlers_for_tests.ParamsHandler")
    with connect(server.url("/t/acme/feed?since=5"), additional_headers={"Cookie": "sid=42"}) as ws:
        ws.send("?")
        seen = json.loads(ws.recv(timeout=5))
    assert seen["params"] == {"tenant": "acme"}
    assert seen["query"] == {"since": ["5"]}
    assert seen["cookie"] == "sid=42"


def test_deflate_negotiated_when_on(start_server):
    on = start_server("--deflate")
    off = start_server()
    with connect(on.url("/echo")) as ws:
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        ws.send("z" * 10000)
        assert ws.recv(timeout=5) == "z" * 10000
    with connect(off.url("/echo")) as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None


def test_log_level_filters(start_server):
    server = start_server("--log-level", "warn")
    with connect(server.url("/echo")) as ws:
        ws.send("x")
        ws.recv(timeout=5)
    with pytest.raises(InvalidStatus):
        connect(server.url("/nope"))
    assert not _wait_for(server, "open route=/echo", timeout=1)
    assert "rejected upgrade" not in server.log()


@pytest.mark.parametrize(
    "toml, expected",
    [
        ("[defaults]\nmax_mesage_size = 5\n", "defaults.max_mesage_size"),
        (
            "[[routes]]\npath = '/a'\nhandler = 'echo'\n[[routes]]\npath = '/a'\nhandler = 'echo'\n",
            "clashes",
        ),
        ("[[routes]]\npath = '/a'\nhandler = 'nosuch'\n", "unknown handler 'nosuch'"),
    ],
)
def test_config_errors_are_usage_errors(tmp_path, toml, expected):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    result = run_twistd("wsmux", "--config", str(config), "--port", "tcp:0:interface=127.0.0.1")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert str(config) in output and expected in output
    assert "Traceback" not in output


def test_tac_example_from_the_docs(start_server):
    server = start_server("-y", str(ROOT / "docs" / "examples" / "wsmux.tac"), plugin=None)
    with connect(server.url("/ws/echo")) as ws:
        ws.send("from a tac")
        assert ws.recv(timeout=5) == "from a tac"
    with urllib.request.urlopen(server.url("/health", "http"), timeout=5) as r:
        assert r.read() == b"ok"
    # The drain service of the .tac: SIGTERM closes WebSockets with 1001.
    import signal

    with connect(server.url("/ws/echo")) as ws:
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1001
    server.process.wait(timeout=10)


def test_bare_port_number_listens_on_every_interface(tmp_path):
    import socket

    from tests.twistd_process import Server

    ports = tmp_path / "ports"
    server = Server(
        ["wsmux", "--port", "0", "--port-file", str(ports)],
        0,
        tmp_path / "bare.log",
        port_file=ports,
    )
    port = server.port
    try:
        with connect(f"ws://127.0.0.1:{port}/echo") as ws:
            ws.send("v4")
            assert ws.recv(timeout=5) == "v4"
        try:
            socket.create_connection(("::1", port), timeout=2).close()
        except OSError:
            ipv6 = False
        else:
            ipv6 = True
        if ipv6:
            with connect(f"ws://[::1]:{port}/echo") as ws:
                ws.send("v6")
                assert ws.recv(timeout=5) == "v6"
    finally:
        server.stop()


def test_json_log_lines(start_server):
    server = start_server("--log-format", "json")
    with connect(server.url("/echo")) as ws:
        ws.send("x")
        ws.recv(timeout=5)
    with pytest.raises(InvalidStatus):
        connect(server.url("/nope"))
    assert _wait_for(server, '"status": 404')
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "namespace", "event"} <= set(line) for line in lines)
    opened = [line for line in lines if line["event"].startswith("open ")]
    assert opened[0]["route"] == "/echo" and opened[0]["peer"].startswith("tcp4:127.0.0.1:")
    closed = [line for line in lines if line["event"].startswith("close ")]
    assert closed[0]["code"] == 1000
    refused = [line for line in lines if line.get("status") == 404]
    assert refused[0]["reason"] == "No WebSocket route at this path"
    assert not [line for line in server.log().splitlines() if line and not line.startswith("{")]


def test_systemd_socket_activation(tmp_path):
    """
    The docs' systemd recipe: a socket handed over as fd 3 (LISTEN_FDS) and
    C{--port systemd:domain=INET:index=0}.
    """
    import os
    import socket
    import subprocess

    from tests.twistd_process import ROOT, TWISTD

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    port = listener.getsockname()[1]
    log = open(tmp_path / "systemd.log", "wb")
    fd = listener.fileno()
    process = subprocess.Popen(
        [
            "sh",
            "-c",
            f'export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=wsmux.socket; exec "{TWISTD}" -n --pidfile= wsmux '
            "--port systemd:domain=INET:index=0",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=log,
        stderr=subprocess.STDOUT,
        close_fds=False,
        preexec_fn=(lambda: os.dup2(fd, 3)) if fd != 3 else None,
    )
    listener.close()
    try:
        with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=15) as ws:
            ws.send("activated")
            assert ws.recv(timeout=5) == "activated"
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


@pytest.mark.parametrize(
    "port, expected",
    [
        (
            "systemd:domain=INET:index=0",
            "--port 'systemd:domain=INET:index=0' is not a usable endpoint",
        ),
        ("bogus:1234", "--port 'bogus:1234' is not a usable endpoint"),
    ],
)
def test_bad_endpoints_are_usage_errors(port, expected):
    result = run_twistd("wsmux", "--port", port)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and expected in output and "Traceback" not in output
