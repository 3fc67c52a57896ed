"""
Proxy routes on a real twistd wsmux, relaying to a real backend (a Python
websockets server and a Node ws server, each test against both): what
passes through, refusals, closes mirrored both ways, a backend that dies,
and backpressure both ways.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"
BENCH = Path(__file__).resolve().parents[2] / "bench"
KINDS = ("websockets", "node-ws")


def node_modules() -> Path:
    """
    bench/node_modules, with Node's ws in it: installed from bench's
    package-lock.json when it is not there yet.
    """
    modules = BENCH / "node_modules"
    if not (modules / "ws" / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            pytest.fail("Node.js and npm are needed for the Node ws backend: .ci/system-deps")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True,
                       timeout=600, stdout=subprocess.DEVNULL)  # fmt: skip
    return modules


class Backend:
    def __init__(self, kind, *tls):
        if kind == "node-ws":
            command = ["node", str(PROGRAMS / "ws_backend.cjs")]
            env = dict(os.environ, NODE_PATH=str(node_modules()))
        else:
            command = [sys.executable, "-u", str(PROGRAMS / "ws_backend.py")]
            env = None
        self.process = subprocess.Popen(
            [*command, *map(str, tls)], stdout=subprocess.PIPE, text=True, env=env
        )
        line = self.process.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture(params=KINDS)
def backend(request):
    started = Backend(request.param)
    yield started
    started.stop()


def proxy_server(start_server, backend, *extra):
    base = f"ws://127.0.0.1:{backend.port}"
    return start_server(
        "--route", f"/svc/{{name}}=proxy:{base}/{{name}}",
        "--route", f"/deep/{{name}}=proxy:{base}/info/{{name}}",
        "--route", "/echo=echo",
        "--trusted-proxy-networks", "127.0.0.0/8",
        *extra,
    )  # fmt: skip


def test_what_passes_through_and_back(start_server, backend):
    server = proxy_server(start_server, backend)
    with connect(
        server.url("/svc/info?room=a%20b"),
        subprotocols=["superchat", "chat"],
        origin="https://app.example",
        additional_headers=[
            ("Cookie", "s=1"),
            ("Cookie", "t=2"),  # two headers: one list of pairs to the backend
            ("Authorization", "Bearer t"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    ) as ws:
        info = json.loads(ws.recv(timeout=10))
        assert ws.subprotocol == info["subprotocol"] in ("chat", "superchat")
        assert info["path"] == "/info" and info["query"] == "room=a%20b"
        headers = info["headers"]
        assert headers["origin"] == "https://app.example"
        assert headers["cookie"] == "s=1; t=2" and headers["authorization"] == "Bearer t"
        # The trusted proxy's word, then the address wsmux saw.
        assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
        assert headers["forwarded"] == "for=203.0.113.9, for=127.0.0.1;proto=http"
        assert headers["x-forwarded-proto"] == "http"
        ws.send("text stays text")
        assert ws.recv(timeout=5) == "text stays text"
        ws.send(b"\x00binary")
        assert ws.recv(timeout=5) == b"\x00binary"
    # A path parameter is one segment of the backend's path, never a dot
    # segment that would move up it.
    for name, arrives in (("%2e%2e", "/info/%2E%2E"), ("a%2Fb", "/info/a%2Fb"), (".x", "/info/.x")):
        with connect(server.url(f"/deep/{name}"), subprotocols=["chat"]) as ws:
            assert json.loads(ws.recv(timeout=10))["path"] == arrives, name
    with connect(server.url("/svc/greet"), subprotocols=["chat"]) as ws:
        assert ws.recv(timeout=10) == "hello first"  # sent by the backend before our 101


def test_refusals_and_unreachable_backends(start_server, backend, tmp_path):
    server = proxy_server(start_server, backend)
    for name, status in (("refuse", 403), ("busy", 503)):  # the backend's own status
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url(f"/svc/{name}"), subprotocols=["chat"])
        assert refused.value.response.status_code == status
    # This backend insists on a subprotocol: its 400 is the client's.
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url("/svc/echo"))
    assert refused.value.response.status_code == 400
    backend.stop()
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as unreachable:
        connect(server.url("/svc/echo"), subprotocols=["chat"])
    assert unreachable.value.response.status_code == 502
    assert time.monotonic() - started < 10
    assert "no backend took the connection" in server.log()


def test_closes_are_mirrored_both_ways(start_server, backend):
    server = proxy_server(start_server, backend)
    with connect(server.url("/svc/close"), subprotocols=["chat"]) as ws:
        ws.send("close 4123 backend says bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert (ws.close_code, ws.close_reason) == (4123, "backend says bye")
    with connect(server.url("/svc/echo"), subprotocols=["chat"]) as ws:
        ws.send("x")
        ws.recv(timeout=5)
        ws.close(4321, "client says bye")
    # A backend that dies mid-stream: the client gets 1014.
    with connect(server.url("/svc/die"), subprotocols=["chat"]) as ws:
        ws.send("die now")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1014
    with connect(server.url("/echo")) as ws:  # the server is fine
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"


def test_backpressure_both_ways(start_server, backend):
    from tests.hostile.rawws import Peer, frame, rss_kib

    server = proxy_server(start_server, backend)
    pid = server.process.pid
    # A backend that floods a client that does not read.
    peer = Peer(server.port, rcvbuf=4096)
    peer.open("/svc/flood", "Sec-WebSocket-Protocol: chat\r\n")
    before = rss_kib(pid)
    time.sleep(1)
    assert rss_kib(pid) - before < 16 * 1024
    for _ in range(50):  # and it still flows, past the 1 MiB send queue
        opcode, payload, _ = peer.read_frame()
        assert opcode == 2 and payload == b"z" * 65536
    assert "slow consumer" not in server.log()  # paused, not overflowing
    peer.close()
    # A client that floods a backend that does not read.
    peer = Peer(server.port)
    peer.open("/svc/noread", "Sec-WebSocket-Protocol: chat\r\n")
    before = rss_kib(pid)
    message = frame(b"y" * 60000)
    sent = 0
    peer.sock.settimeout(0.5)
    try:
        while sent < 3000:
            peer.sock.sendall(message)
            sent += 1
    except (TimeoutError, OSError):
        pass
    assert sent < 3000  # TCP pushed back
    assert rss_kib(pid) - before < 32 * 1024
    peer.close()
    with connect(server.url("/echo")) as ws:
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"


@pytest.mark.parametrize("kind", KINDS)
def test_wss_backends_are_verified_against_the_ca(start_server, tmp_path, kind):
    import trustme

    ca, stranger = trustme.CA(), trustme.CA()
    # A bundle: the CA that signed the backend is not the first in it.
    (tmp_path / "ca.pem").write_bytes(trustme.CA().cert_pem.bytes() + ca.cert_pem.bytes())
    for name, issuer in (("good", ca), ("bad", stranger)):
        cert = issuer.issue_cert("127.0.0.1")
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / f"{name}.pem"))
    good = Backend(kind, tmp_path / "good.pem", tmp_path / "good.pem")
    bad = Backend(kind, tmp_path / "bad.pem", tmp_path / "bad.pem")
    try:
        config = tmp_path / "wsmux.toml"
        config.write_text(
            "[[routes]]\npath = '/good/{name}'\nhandler = 'proxy'\n"
            f"backend = 'wss://127.0.0.1:{good.port}/{{name}}'\nca = 'ca.pem'\n\n"
            "[[routes]]\npath = '/bad/{name}'\nhandler = 'proxy'\n"
            f"backend = 'wss://127.0.0.1:{bad.port}/{{name}}'\nca = 'ca.pem'\n"
        )
        server = start_server("--config", str(config))
        with connect(server.url("/good/echo"), subprotocols=["chat"]) as ws:
            ws.send("over wss")
            assert ws.recv(timeout=10) == "over wss"
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url("/bad/echo"), subprotocols=["chat"])
        assert refused.value.response.status_code == 502
    finally:
        good.stop()
        bad.stop()


class RawBackend:
    """
    A backend on a raw socket: it answers one opening handshake with a
    101, then sends and reads exactly the bytes a test asks for.
    """

    def __init__(self):
        import socket

        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.conn = None

    def accept(self):
        import base64
        import hashlib

        conn, _ = self.listener.accept()
        conn.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.conn = conn
        return conn

    def serve_in_thread(self, then):
        import threading

        def run():
            then(self.accept())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def test_a_backend_close_goes_on_at_once_even_if_it_keeps_tcp_open(start_server):
    # A backend that sends its close frame and then keeps the connection
    # open (it should close TCP, RFC 6455 7.1.1; some do not).
    import struct

    from tests.hostile.rawws import frame

    backend = RawBackend()
    body = struct.pack(">H", 4000) + b"keep"
    backend.serve_in_thread(lambda conn: conn.sendall(frame(body, opcode=8, masked=False)))
    server = start_server("--route", f"/k=proxy:ws://127.0.0.1:{backend.port}/")
    started = time.monotonic()
    try:
        with connect(server.url("/k")) as ws:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert (ws.close_code, ws.close_reason) == (4000, "keep")
        assert time.monotonic() - started < 5  # not when the backend's TCP ends
    finally:
        backend.close()


@pytest.mark.parametrize("how", ["close", "drop"])
def test_the_clients_close_reaches_the_backend(start_server, how):
    # A client's close goes on with its code and reason; a client that
    # vanishes is 1001 to the backend.
    import socket
    import struct

    from tests.hostile.rawws import Peer, close_frame

    backend = RawBackend()
    accepted = []
    backend.serve_in_thread(accepted.append)
    server = start_server("--route", f"/c=proxy:ws://127.0.0.1:{backend.port}/")
    try:
        peer = Peer(server.port).open("/c")
        deadline = time.monotonic() + 10
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.02)
        if how == "close":
            peer.send(close_frame(4321, b"client says bye"))
        else:
            peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
        opcode, payload, _ = read_masked(backend.conn)
        code, reason = struct.unpack(">H", payload[:2])[0], payload[2:]
        assert opcode == 8
        if how == "close":
            assert (code, reason) == (4321, b"client says bye")
        else:
            assert (code, reason) == (1001, b"the client went away")
    finally:
        backend.close()


def test_a_silent_backend_times_out_and_a_list_fails_over(start_server, tmp_path):
    # A backend that takes the TCP connection and never answers: 504 once
    # connect_timeout has run, not later; with a list, the next backend
    # serves the client.
    import socket

    from tests.twistd_process import free_port

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    good = Backend("websockets")
    dead = free_port()  # nothing listens there
    try:
        config = tmp_path / "wsmux.toml"
        config.write_text(
            "[[routes]]\npath = '/silent'\nhandler = 'proxy'\n"
            f"backend = 'ws://127.0.0.1:{silent.getsockname()[1]}/echo'\nconnect_timeout = 1\n\n"
            "[[routes]]\npath = '/list/{name}'\nhandler = 'proxy'\n"
            f"backend = ['ws://127.0.0.1:{dead}/{{name}}', "
            f"'ws://127.0.0.1:{good.port}/info/{{name}}?from=wsmux&{{query}}']\n"
        )
        server = start_server("--config", str(config))
        started = time.monotonic()
        with pytest.raises(InvalidStatus) as unreachable:
            connect(server.url("/silent"), open_timeout=20)
        assert unreachable.value.response.status_code == 504
        assert 0.9 < time.monotonic() - started < 8
        assert "no answer in 1 s" in server.log()
        for _ in range(2):  # round-robin: each turn starts at another; both succeed
            with connect(server.url("/list/x?q=1"), subprotocols=["chat"]) as ws:
                info = json.loads(ws.recv(timeout=10))
                assert info["path"] == "/info/x" and info["query"] == "from=wsmux&q=1"
        assert f"127.0.0.1:{dead}" in server.log()  # the failed one, named
    finally:
        silent.close()
        good.stop()


def test_the_backends_share_the_clients_handshake_time(start_server, tmp_path):
    # connect_timeout (10 s by default) longer than the client's opening-
    # handshake timeout: the backends share what that timeout leaves, so
    # a silent first backend still leaves time for the next, and a client
    # whose backends all stay silent gets a 504 before its timer drops it.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    quiet = f"ws://127.0.0.1:{silent.getsockname()[1]}"
    good = Backend("websockets")
    try:
        config = tmp_path / "wsmux.toml"
        config.write_text(
            "[[routes]]\npath = '/list/{name}'\nhandler = 'proxy'\nopen_handshake_timeout = 4\n"
            f"backend = ['{quiet}/{{name}}', 'ws://127.0.0.1:{good.port}/info/{{name}}']\n\n"
            "[[routes]]\npath = '/silent'\nhandler = 'proxy'\nopen_handshake_timeout = 3\n"
            f"backend = '{quiet}/echo'\n"
        )
        server = start_server("--config", str(config))
        for _ in range(2):  # round-robin: one of the two starts at the silent one
            started = time.monotonic()
            with connect(server.url("/list/x"), subprotocols=["chat"], open_timeout=20) as ws:
                assert json.loads(ws.recv(timeout=10))["path"] == "/info/x"
            assert time.monotonic() - started < 3.5
        assert "no answer in 1.25 s" in server.log()
        started = time.monotonic()
        with pytest.raises(InvalidStatus) as late:
            connect(server.url("/silent"), open_timeout=20)
        assert late.value.response.status_code == 504
        assert 1.4 < time.monotonic() - started < 2.9
    finally:
        silent.close()
        good.stop()


def test_header_bytes_reach_the_backend_as_the_client_sent_them(start_server):
    # A backend that records the head it gets and refuses (403).  UTF-8
    # header values arrive byte for byte (they were decoded as ISO-8859-1
    # and written back as UTF-8: twice encoded); values with control
    # characters, or bytes that are not UTF-8, are not passed on at all.
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    heads = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            heads.append(head)
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        server = start_server(
            "--route", f"/svc=proxy:ws://127.0.0.1:{listener.getsockname()[1]}/x"
        )  # fmt: skip
        request = (
            b"GET /svc HTTP/1.1\r\nHost: h\xc3\xa9.t\xc3\xa0:8080\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nCookie: n=\xc3\xa9; bad=\xff\r\nAuthorization: \xff\r\n"
            b"Cookie: a=\xc3\xa0\r\nUser-Agent: ua\x01\x7f\r\nAccept-Language: fr\tde \xc3\xa0\r\n"
            b"Sec-WebSocket-Protocol: chat, b\xc3\xa9\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            client.sendall(request)
            answer = client.recv(4096)
        assert answer.startswith(b"HTTP/1.1 403"), answer
        thread.join(timeout=10)
        head = heads[0].lower()  # (bytes past ASCII stay as they are)
        # Pairs that can be relayed, from both Cookie headers; the one that
        # cannot is left out alone.  (0xa0 ends a value: not whitespace.)
        assert b"\r\ncookie: n=\xc3\xa9; a=\xc3\xa0\r\n" in head
        assert b"\r\nx-forwarded-host: h\xc3\xa9.t\xc3\xa0\r\n" in head
        assert b"\r\naccept-language: fr\tde \xc3\xa0\r\n" in head
        assert b"authorization" not in head and b"ua\x01" not in head
        assert b"\r\nsec-websocket-protocol: chat\r\n" in head
    finally:
        listener.close()


def test_every_frame_shape_a_backend_may_send(start_server):
    # Whole frames of each length encoding, several in one write, a
    # fragmented message and a ping between its fragments: each relayed
    # as the message it is.  Then the client's messages reach the backend
    # masked, each with a mask of its own.
    from tests.hostile.rawws import frame

    backend = RawBackend()
    big = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length
    sent = [
        frame(b"", masked=False),
        frame("é".encode() * 62 + b"x", masked=False),  # 125 bytes
        frame(b"b" * 126, opcode=2, masked=False),  # the smallest 16-bit length
        frame(b"c" * 65535, opcode=2, masked=False),  # the largest
        frame(big, opcode=2, masked=False),
        frame(b"frag", fin=False, masked=False)
        + frame(b"p", opcode=9, masked=False)
        + frame(b"ment", opcode=0, masked=False),
    ]
    backend.serve_in_thread(lambda conn: conn.sendall(b"".join(sent)))
    server = start_server("--route", f"/f=proxy:ws://127.0.0.1:{backend.port}/")
    try:
        with connect(server.url("/f"), max_size=2**20) as ws:
            got = [ws.recv(timeout=10) for _ in range(6)]
            assert got == ["", "é" * 62 + "x", b"b" * 126, b"c" * 65535, big, "fragment"]
            opcode, payload, _ = read_masked(backend.conn)
            assert (opcode, payload) == (10, b"p")  # the backend leg answered its ping
            masks = set()
            for message in ("one", b"\x00two", "three" * 30000):
                ws.send(message)
                opcode, payload, mask = read_masked(backend.conn)
                expected = message.encode() if isinstance(message, str) else message
                assert (opcode, payload) == (1 if isinstance(message, str) else 2, expected)
                masks.add(mask)
            assert len(masks) == 3
    finally:
        backend.close()


def read_masked(conn):
    """
    One frame a client sends (masked, RFC 6455 5.3): its opcode, payload
    unmasked, and mask; an unmasked frame fails the test.
    """
    import struct

    def take(n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            assert chunk, "the connection ended"
            data += chunk
        return data

    b0, b1 = take(2)
    assert b1 & 0x80, "a client frame must be masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", take(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", take(8))[0]
    mask = take(4)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(take(n)))
    return b0 & 0x0F, payload, mask


@pytest.mark.parametrize(
    "bad, why",
    [
        (b"\x81\x02\xc3\x28", "invalid UTF-8"),
        (b"\x82\x81abcdx", "a masked frame from a server"),
        (b"\x82\x7e\x00\x05hello", "a length not in its shortest form"),
    ],
)
def test_a_backend_that_breaks_the_protocol_ends_the_client_with_1014(start_server, bad, why):
    backend = RawBackend()
    backend.serve_in_thread(lambda conn: conn.sendall(b"\x81\x02ok" + bad))
    server = start_server("--route", f"/x=proxy:ws://127.0.0.1:{backend.port}/")
    try:
        with connect(server.url("/x")) as ws:
            assert ws.recv(timeout=10) == "ok"
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1014, why
    finally:
        backend.close()
    assert "Traceback" not in server.log()


def test_a_backend_message_over_the_limit_ends_the_client_at_once(start_server, backend, tmp_path):
    # The route's limit holds for the backend's messages too; the client
    # hears of it when the backend leg fails, not after the close timeout.
    config = tmp_path / "wsmux.toml"
    config.write_text(
        "[[routes]]\npath = '/svc/{name}'\nhandler = 'proxy'\n"
        f"backend = 'ws://127.0.0.1:{backend.port}/{{name}}'\n"
        "max_message_size = 1000\nclose_handshake_timeout = 30\n"
    )
    server = start_server("--config", str(config))
    with connect(server.url("/svc/big"), subprotocols=["chat"]) as ws:
        ws.send("1000")
        assert ws.recv(timeout=5) == "x" * 1000  # at the limit: relayed
        started = time.monotonic()
        ws.send("1001")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
        assert (ws.close_code, ws.close_reason) == (
            1014,
            "the backend's message was over the limit",
        )
        assert time.monotonic() - started < 15  # not the 30 s close timeout


def test_a_client_gone_before_the_backend_answers_leaves_no_backend_connection(
    start_server, tmp_path
):
    # Clients that send the upgrade and reset at once, before a slow
    # backend's 101: every backend connection wsmux opened for them is
    # closed, and wsmux holds no socket for them (a hostile review left 300
    # such connections open, past every connection cap).
    import base64
    import hashlib
    import os
    import socket
    import struct
    import threading

    from tests.hostile.rawws import request

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(10)
    ended = []

    def slow_backend(conn):
        conn.settimeout(10)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            time.sleep(0.5)  # the 101 comes now: wsmux has given up already
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(
                hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            while conn.recv(4096):
                pass
            ended.append(True)
        except OSError:
            ended.append(True)
        finally:
            conn.close()

    def accept():
        try:
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=slow_backend, args=(conn,), daemon=True).start()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    config = tmp_path / "wsmux.toml"
    config.write_text(
        "[limits]\nmax_connections_per_ip = 5\n\n[[routes]]\npath = '/p'\nhandler = 'proxy'\n"
        f"backend = 'ws://127.0.0.1:{port}/'\nconnect_timeout = 60\n"
    )
    server = start_server("--config", str(config))
    fds = lambda: len(os.listdir(f"/proc/{server.process.pid}/fd"))  # noqa: E731
    before = fds()
    try:
        for _ in range(20):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            client.sendall(request("/p"))
            time.sleep(0.05)  # wsmux has read the request and is connecting
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        deadline = time.monotonic() + 5  # the backend wait is 8.5 s (open_handshake_timeout 10)
        while (len(ended) < 20 or fds() > before) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(ended) == 20 and fds() <= before
    finally:
        listener.close()
    assert "Traceback" not in server.log()
