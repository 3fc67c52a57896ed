"""
The hostile-input suite: raw bytes against a real twistd wsmux on loopback.

Every case asserts the status or close code a client can act on, then that
a well-behaved client on another connection still echoes promptly.  Memory
bounds are read from the server process's RSS and stated as numbers.
"""

import os
import selectors
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.hostile.rawws import Peer, close_frame, deflate, frame, request, rss_kib
from tests.twistd_process import eventually

CONFIG = str(Path(__file__).with_name("hostile.toml"))
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.twistd_process import Server

    where = tmp_path_factory.mktemp("hostile")
    log, ports = where / "twistd.log", where / "ports"
    server = Server(
        [
            "wsmux",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--port-file",
            str(ports),
            "--config",
            CONFIG,
        ],
        0,
        log,
        port_file=ports,
    )
    yield server
    server.stop()


def healthy(server, timeout=3):
    """
    A well-behaved client still gets a prompt echo.
    """
    started = time.monotonic()
    with connect(server.url("/echo"), open_timeout=timeout) as ws:
        ws.send("still there?")
        assert ws.recv(timeout=timeout) == "still there?"
    assert time.monotonic() - started < timeout


def peer(server):
    return Peer(server.port)


def test_oversized_request_line_is_414(server):
    p = peer(server)
    p.send(request("/echo?" + "a" * 10000))
    assert p.status() == 414
    assert p.closed()
    healthy(server)


def test_two_thousand_headers_are_431(server):
    p = peer(server)
    extra = "".join(f"X-H{i}: v\r\n" for i in range(2000))
    try:
        p.send(request("/echo", extra))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before it has read them all
    assert p.status() == 431
    healthy(server)


def test_slowloris_is_dropped_at_the_handshake_timeout(server):
    handshake_timeout = 2.0
    peers = [peer(server) for _ in range(50)]
    data = request("/echo")
    started = time.monotonic()
    alive = list(peers)
    i = 0
    while alive and time.monotonic() - started < handshake_timeout + 3:
        for p in list(alive):
            try:
                p.send(data[i : i + 1])
            except OSError:
                alive.remove(p)
        healthy(server)
        time.sleep(1)
        i += 1
    # Every slow client is gone, and within the timeout (plus scheduling slack).
    assert all(p.closed(timeout=2) for p in peers)
    assert time.monotonic() - started < handshake_timeout + 4
    healthy(server)


@pytest.mark.parametrize(
    "data, status",
    [
        (request("/echo", key=None), 400),
        (request("/echo", version="8"), 400),
        (request("/echo", method="POST"), 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\n\r\n", 426),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 426),
    ],
    ids=["missing-key", "wrong-version", "post-upgrade", "post", "plain-get"],
)
def test_malformed_upgrades(server, data, status):
    p = peer(server)
    p.send(data)
    assert p.status() == status
    healthy(server)


def test_smuggling_headers_are_400(server):
    p = peer(server)
    p.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert p.status() == 400
    healthy(server)


@pytest.mark.parametrize("origin", ["https://evil.example.org", "null"])
def test_foreign_and_null_origin_are_403(server, origin):
    p = peer(server)
    p.send(request("/guarded", f"Origin: {origin}\r\n"))
    assert p.status() == 403
    good = peer(server).open("/guarded", "Origin: https://app.example.com\r\n")
    good.send(frame(b"ok"))
    assert good.read_frame() == (1, b"ok", False)
    healthy(server)


def test_handshake_and_first_frame_in_one_write(server):
    p = peer(server)
    p.send(request("/echo") + frame(b"eager"))
    assert p.status() == 101
    assert p.read_frame() == (1, b"eager", False)


def test_handshake_one_byte_per_write(server):
    p = peer(server)
    p.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in request("/echo") + frame(b"patient"):
        p.send(bytes([byte]))
    assert p.status() == 101
    assert p.read_frame() == (1, b"patient", False)


def test_huge_frame_length_is_closed_before_any_payload(server):
    before = rss_kib(server.process.pid)
    p = peer(server).open()
    p.send(frame(b"", opcode=2, length=2**63 - 1)[:10] + os.urandom(4) + b"x" * 1000)
    assert p.close_code() in (1009, 1002, None)
    assert rss_kib(server.process.pid) - before < 20 * 1024
    healthy(server)


def test_oversized_message_over_fragments_is_1009(server):
    p = peer(server).open()
    chunk = b"x" * 65536
    p.send(frame(chunk, opcode=2, fin=False))
    try:
        for _ in range(30):
            p.send(frame(chunk, opcode=0, fin=False))
        p.send(frame(chunk, opcode=0, fin=True))
    except OSError:
        pass
    assert p.close_code() == 1009
    healthy(server)


def test_hundred_thousand_continuation_frames(server):
    before = rss_kib(server.process.pid)
    p = peer(server).open()
    one = frame(b"a", opcode=0, fin=False)
    try:
        p.send(frame(b"a", opcode=1, fin=False) + one * 100_000)
    except OSError:
        pass
    assert p.close_code() == 1009
    # Stated bound: the attempt costs the server less than 30 MiB.
    assert rss_kib(server.process.pid) - before < 30 * 1024
    healthy(server)


@pytest.mark.parametrize("fragments", [1, 8])
def test_deflate_bomb_is_1009_without_inflating_past_the_limit(server, fragments):
    before = rss_kib(server.process.pid)
    p = peer(server)
    p.send(request("/deflate", "Sec-WebSocket-Extensions: permessage-deflate\r\n"))
    head = p.response()
    assert " 101 " in head and "permessage-deflate" in head.lower()
    bomb = deflate(b"\x00" * (200 * MiB))  # about 200 KiB on the wire
    size = len(bomb) // fragments + 1
    parts = [bomb[i : i + size] for i in range(0, len(bomb), size)]
    data = b""
    for i, part in enumerate(parts):
        data += frame(
            part, opcode=2 if i == 0 else 0, fin=i == len(parts) - 1, rsv=4 if i == 0 else 0
        )
    try:
        p.send(data)
    except OSError:
        pass
    assert p.close_code() == 1009
    # 200 MiB were never inflated: the server grew by far less.
    assert rss_kib(server.process.pid) - before < 30 * 1024
    healthy(server)


def test_invalid_utf8_is_1007(server):
    p = peer(server).open()
    p.send(frame(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", opcode=1))
    assert p.close_code() == 1007
    healthy(server)


def test_invalid_utf8_split_mid_character_is_1007(server):
    p = peer(server).open()
    p.send(frame(b"ok \xe2\x82", opcode=1, fin=False) + frame(b"\x28", opcode=0, fin=True))
    assert p.close_code() == 1007
    good = peer(server).open()
    good.send(frame("€".encode()[:2], opcode=1, fin=False) + frame("€".encode()[2:], opcode=0))
    assert good.read_frame() == (1, "€".encode(), False)
    healthy(server)


@pytest.mark.parametrize(
    "bad",
    [
        frame(b"p" * 126, opcode=9),
        frame(b"x", rsv=2),
        frame(b"x", opcode=3),
        frame(b"x", opcode=11),
        frame(b"x", masked=False),
        close_frame(999),
        close_frame(1004),
        close_frame(5000),
    ],
    ids=[
        "control-over-125",
        "reserved-bit",
        "reserved-opcode-3",
        "reserved-opcode-11",
        "unmasked",
        "close-999",
        "close-1004",
        "close-5000",
    ],
)
def test_protocol_violations_are_1002(server, bad):
    p = peer(server).open()
    p.send(bad)
    assert p.close_code() in (1002, None)  # a close frame saying so, or a drop
    # ...and the connection closed at once (RFC 6455 7.1.7), not after the
    # close timeout spent waiting for a broken peer's answer.
    assert p.closed(timeout=2)
    healthy(server)


def test_ping_flood_from_a_client_that_never_reads(server):
    before = rss_kib(server.process.pid)
    p = peer(server).open()
    p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ping = frame(b"p" * 125, opcode=9)
    p.sock.settimeout(0.2)
    sent = 0
    deadline = time.monotonic() + 8
    while sent < 200_000 and time.monotonic() < deadline:
        try:
            p.sock.send(ping * 100)
            sent += 100
        except TimeoutError:
            pass  # the server stopped reading us: that is the point
        except OSError:
            break
    healthy(server)
    # Stated bound: the flood costs the server less than 20 MiB.
    assert rss_kib(server.process.pid) - before < 20 * 1024
    p.close()
    healthy(server)


class Drainer(threading.Thread):
    """
    Reads every byte the server sends to some peers, counting per peer.
    """

    def __init__(self, peers):
        super().__init__(daemon=True)
        self.received = {p: len(p.buffer) for p in peers}
        self.stop = threading.Event()

    def run(self):
        sel = selectors.DefaultSelector()
        for p in self.received:
            p.sock.setblocking(False)
            sel.register(p.sock, selectors.EVENT_READ, p)
        while not self.stop.is_set() and sel.get_map():
            for key, _ in sel.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                self.received[key.data] += len(data)

    def wait_for(self, peers, want, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.received[p] >= want for p in peers):
                return True
            time.sleep(0.05)
        return False


def publish(server, room, payload, count):
    """
    Open a publisher in C{room} and send C{count} binary messages; it reads
    its own copies too (a publisher that does not read is a slow consumer).
    """
    publisher = Peer(server.port).open(room)
    drainer = Drainer([publisher])
    drainer.start()
    for _ in range(count):
        publisher.send(frame(payload, opcode=2))
    return publisher, drainer


def server_frame_size(payload):
    n = len(payload)
    return n + (2 if n < 126 else 4 if n < 65536 else 10)


def test_broadcast_with_slow_readers(server):
    """
    500 subscribers, 20 of which never read: the 480 readers get every
    message, and the server stays under a stated memory bound.
    """
    before = rss_kib(server.process.pid)
    room = "/rooms/crowd"
    readers, slow = [], []
    for i in range(500):
        p = Peer(server.port, rcvbuf=4096 if i < 20 else None)
        p.send(request(room))
        assert p.status() == 101
        (slow if i < 20 else readers).append(p)
    drainer = Drainer(readers)
    drainer.start()
    payload, count = b"m" * 16384, 100
    publisher, own = publish(server, room, payload, count)
    want = count * server_frame_size(payload)
    assert drainer.wait_for(readers, want, 60), sorted(drainer.received.values())[:3]
    # Stated bound: 500 connections and the fan-out, slow readers included,
    # cost under 150 MiB.
    assert rss_kib(server.process.pid) - before < 150 * 1024
    healthy(server)
    drainer.stop.set()
    own.stop.set()
    for p in readers + slow + [publisher]:
        p.close()


def test_slow_consumer_is_closed_and_readers_keep_flowing(server):
    room = "/rooms/slow"
    slow = Peer(server.port, rcvbuf=4096).open(room)
    reader = Peer(server.port).open(room)
    drainer = Drainer([reader])
    drainer.start()
    payload, count = b"s" * 65536, 100  # 6.4 MiB: past the kernel buffers and the 1 MiB cap
    publisher, own = publish(server, room, payload, count)
    assert drainer.wait_for([reader], count * server_frame_size(payload), 30)
    # Closed with 1008 once the cap was passed, and dropped when it did not
    # answer the close.
    assert slow.closed(timeout=15)
    log = server.log()
    assert "slow consumer route=/rooms/{room}" in log and "closing with 1008" in log
    healthy(server)
    drainer.stop.set()
    own.stop.set()
    publisher.close()
    reader.close()


def test_peer_that_stops_answering_pings_is_dropped(server):
    p = peer(server).open("/ping")
    started = time.monotonic()
    # Never answer: the server's ping gets no pong (we read nothing).
    assert p.closed(timeout=6)
    # interval 1 s + timeout 1 s, plus the batched timer's granularity.
    assert time.monotonic() - started < 4
    healthy(server)


def test_max_connections_plus_one_is_503(server):
    open_ = [peer(server).open("/capped") for _ in range(5)]
    extra = peer(server)
    extra.send(request("/capped"))
    assert extra.status() == 503
    for p in open_:
        p.close()

    def one_more_fits():
        again = peer(server)
        again.send(request("/capped"))
        fits = again.status() == 101
        again.close()
        return fits

    # The server frees the places as it sees the closes.
    assert eventually(one_more_fits)
    healthy(server)


def test_sigterm_closes_every_client_with_1001(tmp_path):
    from tests.twistd_process import Server

    ports = tmp_path / "ports"
    server = Server(
        ["wsmux", "--port", "tcp:0:interface=127.0.0.1", "--port-file", str(ports)]
        + ["--drain-timeout", "5"],
        0,
        tmp_path / "drain.log",
        port_file=ports,
    )
    port = server.port
    try:
        peers = [Peer(port).open("/echo") for _ in range(200)]
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        codes = []
        for p in peers:
            code = p.close_code(timeout=10)
            codes.append(code)
            try:
                p.send(close_frame(1001))
            except OSError:
                pass
        assert codes == [1001] * 200
        assert server.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5 + 3
    finally:
        server.stop()


def test_the_server_says_why(server):
    log = server.log()
    assert "refused request" in log and "status=414" in log
    assert "rejected upgrade" in log and "status=403" in log
    assert "slow consumer" in log
