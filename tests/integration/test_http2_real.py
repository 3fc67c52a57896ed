"""
WebSockets over HTTP/2 (RFC 8441) against a real twistd wsmux: several
WebSockets as streams of one TLS connection (an h2 client of the tests'
own), the route tree's checks over a stream, the hostile cases, a
differential run of the same frames over HTTP/1.1 and over HTTP/2, and
ordinary requests over HTTP/2.
"""

import json
import os
import signal
import socket
import ssl
import struct
import time
import urllib.request
from pathlib import Path

import h2.settings
import pytest

from tests.h2client import H2Peer, Stream
from tests.hostile.rawws import Peer, close_frame, deflate, frame, rss_kib
from tests.pki import make_pki
from tests.twistd_process import eventually
from wsmux import _compat_http2

pytestmark = pytest.mark.skipif(
    not _compat_http2.HTTP2,
    reason="HTTP/2 is off here (the public path, or no h2): "
    "test_tls_real.py::test_alpn_and_versions checks that only http/1.1 is offered",
)

CONFIG = """
metrics_path = "/metrics"
status_path = "/status"
log_level = "info"
unhandled = "tests.handlers_for_tests.hook"

[limits]
max_connections_per_ip = 12
max_http2_streams = 16
max_body_size = 1024
drain_timeout = 5

[tls]
cert = "{cert}"
key = "{key}"
ports = ["tcp:0:interface=127.0.0.1"]
{tls_extra}

[defaults]
open_handshake_timeout = 2.0
close_handshake_timeout = 1.0
ping_interval = 0
max_message_size = 65536

[[routes]]
path = "/echo"
handler = "echo"

[[routes]]
path = "/deflate"
handler = "echo"
deflate = "on"

[[routes]]
path = "/guarded"
handler = "echo"
allowed_origins = ["https://app.example.com"]

[[routes]]
path = "/chat"
handler = "echo"
subprotocols = ["chat.v2", "chat.v1"]
require_subprotocol = true

[[routes]]
path = "/rooms/{{room}}"
handler = "broadcast"

[[routes]]
path = "/idle"
handler = "echo"
idle_timeout = 0.3

[[routes]]
path = "/chain"
handler = ["tests.handlers_for_tests.ShoutHandler", "tests.handlers_for_tests.WhisperHandler"]

[[routes]]
path = "/slowaccepts"
handler = "tests.handlers_for_tests.SlowAccepts"

[[routes]]
path = "/deny"
handler = "tests.handlers_for_tests.DenyingHandler"

[[routes]]
path = "/token"
handler = "tests.handlers_for_tests.TokenHandler"

[[routes]]
path = "/params/{{name}}"
handler = "tests.handlers_for_tests.ParamsHandler"

[[routes]]
path = "/bye"
handler = "tests.handlers_for_tests.ByeOnOpen"

[[routes]]
path = "/slowroom/{{room}}"
handler = "broadcast"
max_send_queue = 262144
slow_consumer = "close"
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def start(start_server, pki, tmp_path, tls_extra="", *args):
    config = tmp_path / "h2.toml"
    cert, key = pki.files["default.test"]
    config.write_text(CONFIG.format(cert=cert, key=key, tls_extra=tls_extra))
    server = start_server("--config", str(config), *args)
    server.tls_port = next(port for kind, _, port in server.ports() if kind == "tls")
    return server


@pytest.fixture
def server(start_server, pki, tmp_path):
    return start(start_server, pki, tmp_path)


def connect(server, pki):
    peer = H2Peer(server.tls_port, pki.ca_file)
    # A browser's connection window (Chromium's is 15 MB): the tests'
    # streams that do not read hold none of the others' up.
    peer.conn.increment_flow_control_window(1 << 24)
    peer.flush()
    return peer


def opened(peer, path="/echo", headers=(), **kw):
    stream = peer.open(path, headers, **kw)
    assert stream.status() == 200
    return stream


def echo(stream, text):
    stream.send(frame(text.encode()))
    assert stream.read_frame() == (1, text.encode(), False)


def open_sockets(server):
    found = 0
    for fd in Path(f"/proc/{server.process.pid}/fd").iterdir():
        try:
            found += os.readlink(fd).startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return found


def server_cpu(server):
    fields = open(f"/proc/{server.process.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(server, name):
    body = urllib.request.urlopen(server.url("/metrics", "http"), timeout=5).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_several_websockets_share_one_connection(server, pki):
    peer = connect(server, pki)
    assert peer.alpn == "h2"
    settings = peer.wait_settings()
    assert settings[8] == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
    assert settings[3] == 16  # max_http2_streams
    streams = [opened(peer) for _ in range(4)]
    for i, stream in enumerate(streams):
        echo(stream, f"hello {i}")
    # One closes politely: the server answers 1000 and ends the stream.
    streams[0].send(close_frame(1000))
    assert streams[0].close_code() == 1000
    assert streams[0].wait_ended() is None
    # One is reset by the client.
    streams[1].reset()
    # The others go on, interleaved.
    for _ in range(3):
        echo(streams[2], "still here")
        echo(streams[3], "me too")
    big = os.urandom(60000)
    streams[2].send(frame(big, opcode=2))
    assert streams[2].read_frame() == (2, big, False)
    log = server.log()
    assert eventually(lambda: "code=1006" in server.log())  # the reset one
    assert log.count("open route=/echo") == 4
    assert metric(server, "wsmux_http2_websockets_total") == 4
    assert metric(server, "wsmux_http2_connections_total") == 1
    peer.close()


def test_a_close_the_server_begins_ends_the_stream_cleanly(server, pki):
    peer = connect(server, pki)
    idle = opened(peer, "/idle")
    assert idle.close_code() is not None  # the idle timeout's close
    idle.send(close_frame(1000))
    assert idle.wait_ended() is None  # END_STREAM, not RST_STREAM
    echo(opened(peer), "the connection goes on")


def test_the_clients_goaway_ends_its_websockets_with_1001(server, pki):
    peer = connect(server, pki)
    for _ in range(2):
        opened(peer)
    peer.conn.close_connection()
    peer.flush()
    # Its handlers hear 1001 (no close frame can go back after a GOAWAY).
    assert eventually(lambda: server.log().count("code=1001") == 2)
    assert "went away (GOAWAY 0)" in server.log()
    assert metric(server, 'wsmux_closes_total{code="1001"') == 2


def test_data_sent_with_the_request_reaches_the_handler(server, pki):
    peer = connect(server, pki)
    stream = peer.open("/echo")
    # Before any answer: kept while the route decides, then delivered.
    stream.send(frame(b"early"))
    assert stream.status() == 200
    assert stream.read_frame() == (1, b"early", False)


def test_a_handler_closing_its_stream_as_it_opens_answers_first(server, pki):
    # The 200, the message onOpen sent, then END_STREAM: not a reset.
    peer = connect(server, pki)
    stream = peer.open("/bye")
    assert stream.status() == 200
    assert stream.read_frame() == (1, b"bye", False)
    assert stream.wait_ended() is None
    echo(opened(peer), "the connection goes on")


def test_the_route_tree_decides_over_http2(server, pki):
    peer = connect(server, pki)
    assert peer.open("/nowhere").status() == 404
    assert peer.open("/guarded", [("origin", "https://evil.example.com")]).status() == 403
    good = opened(peer, "/guarded", [("origin", "https://app.example.com")])
    echo(good, "origin ok")
    assert peer.open("/chat").status() == 400
    chat = opened(peer, "/chat", [("sec-websocket-protocol", "chat.v1, chat.v2")])
    assert chat.headers[b"sec-websocket-protocol"] == b"chat.v2"
    # Autobahn's own refusal of a bad handshake keeps its status.
    assert peer.open("/echo", [("sec-websocket-version", "8")]).status() == 400
    assert peer.open("/echo", protocol="webtransport").status() == 501
    # Path parameters and channels: two room members on one connection.
    a = opened(peer, "/rooms/blue")
    b = opened(peer, "/rooms/blue")
    a.send(frame(b"to the room"))
    assert b.read_frame() == (1, b"to the room", False)
    # No connection-specific header reached the client (h2 would have
    # refused the frame), and the connection is still good.
    echo(good, "still good")


def test_hook_chain_and_handlers_decide_over_http2(server, pki):
    peer = connect(server, pki)
    # The unhandled hook: adopts, rejects, and leaves the default 404.
    echo(opened(peer, "/legacy/x"), "adopted")
    assert peer.open("/private/x").status() == 403
    assert peer.open("/elsewhere").status() == 404
    # The handler chain: the first that accepts takes the stream.
    loud = opened(peer, "/chain?loud=1")
    loud.send(frame(b"Hi"))
    assert loud.read_frame() == (1, b"HI", False)
    quiet = opened(peer, "/chain")
    quiet.send(frame(b"Hi"))
    assert quiet.read_frame() == (1, b"hi", False)
    assert peer.open("/chain", [("x-refuse", "1")]).status() == 404
    # onConnect: a refusal keeps its status; an accept its subprotocol and
    # headers.
    assert peer.open("/deny").status() == 403
    token = opened(peer, "/token", [("sec-websocket-protocol", "token.v2")])
    assert token.headers[b"sec-websocket-protocol"] == b"token.v2"
    assert token.headers[b"x-token-checked"] == b"yes"
    # Path parameters, the query and cookies (two cookie fields, as HTTP/2
    # clients may send them) reach the handler.
    params = opened(peer, "/params/ada?x=1", [("cookie", "a=1"), ("cookie", "b=2")])
    params.send(frame(b"?"))
    seen = json.loads(params.read_frame()[1])
    assert seen["params"] == {"name": "ada"} and seen["query"] == {"x": ["1"]}
    assert seen["cookie"] == "a=1; b=2"
    assert seen["peer"].startswith("tcp4:127.0.0.1:")


def test_permessage_deflate_over_a_stream(server, pki):
    peer = connect(server, pki)
    stream = opened(peer, "/deflate", [("sec-websocket-extensions", "permessage-deflate")])
    assert b"permessage-deflate" in stream.headers[b"sec-websocket-extensions"]
    text = b"compress me " * 100
    stream.send(frame(deflate(text), rsv=4))
    opcode, payload, rsv1 = stream.read_frame()
    import zlib

    assert opcode == 1 and rsv1
    assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == text


def test_streams_count_against_the_per_address_cap(server, pki):
    peer = connect(server, pki)
    streams = [opened(peer) for _ in range(12)]
    assert peer.open("/echo").status() == 429
    streams[0].send(close_frame(1000))
    assert streams[0].close_code() == 1000
    assert eventually(lambda: peer.open("/echo").status() == 200, timeout=5)


def test_streams_up_to_the_cap_are_served_at_once(server, pki):
    peer = connect(server, pki)
    assert peer.wait_settings()[3] == 16
    streams = [peer.open("/echo") for _ in range(12)]  # the per-address cap
    assert [stream.status() for stream in streams] == [200] * 12
    for stream in streams[4:]:
        stream.send(close_frame(1000))
        assert stream.close_code() == 1000
        stream.end()  # as a browser does after the closing handshake
    # Refusals end their streams (RST_STREAM NO_ERROR after the answer),
    # which stop counting against the stream cap.
    for _ in range(20):
        assert peer.open("/nowhere").status() == 404
    echo(streams[0], "all served")


def test_a_close_held_back_by_a_shut_window_is_cut_off(server, pki):
    # The client closes while its window is shut: the answering close and
    # END_STREAM cannot go out, and the linger deadline (the close timeout,
    # 1 s) resets the stream, giving its place back.
    peer = connect(server, pki)
    stuck = opened(peer, reads_window=False)
    # Echoes that overfill the window, and the close, in one read.
    stuck.send(b"".join([frame(os.urandom(40000), opcode=2), frame(os.urandom(30000), opcode=2),
                         close_frame(1000)]))  # fmt: skip
    assert stuck.wait_ended(timeout=5) == 8  # CANCEL
    assert eventually(lambda: "close route=/echo" in server.log())


@pytest.mark.parametrize(
    "sent, code",
    [
        (frame(b"x" * 70000), 1009),  # over max_message_size
        (frame(b"\xff\xfe"), 1007),  # invalid UTF-8
        (frame(b"x", masked=False), 1002),  # unmasked
        (frame(b"x", opcode=3), 1002),  # reserved opcode
    ],
    ids=["oversized", "bad-utf8", "unmasked", "reserved-opcode"],
)
def test_hostile_frames_end_only_their_stream(server, pki, sent, code):
    peer = connect(server, pki)
    victim, bystander = opened(peer), opened(peer)
    victim.send(sent)
    assert victim.close_code() == code
    victim.wait_ended()
    echo(bystander, "unaffected")


def test_a_stream_that_never_reads_stalls_no_other(server, pki):
    peer = connect(server, pki)
    stuck = opened(peer, "/echo", reads_window=False)
    other = opened(peer)
    chunk = frame(os.urandom(32768), opcode=2)
    # Echoes into a window that never opens: the server stops reading
    # this stream (its window closes too), as it stops reading a TCP
    # connection whose buffer is full.
    with pytest.raises(TimeoutError):
        for _ in range(64):
            stuck.send(chunk, timeout=2)
    echo(other, "not stalled")
    for _ in range(8):  # more than a window's worth
        big = os.urandom(60000)
        other.send(frame(big, opcode=2))
        assert other.read_frame() == (2, big, False)


def test_a_slow_room_member_on_a_stream_is_closed_not_buffered(server, pki):
    # The route's slow-consumer policy applies to a stream whose window
    # stays shut as to a TCP connection that does not read: past
    # max_send_queue (256 KiB) it is closed; its neighbours go on.
    peer = connect(server, pki)
    stuck = opened(peer, "/slowroom/a", reads_window=False)
    speaker = opened(peer, "/slowroom/a")
    listener = opened(peer, "/slowroom/a")
    before = rss_kib(server.process.pid)
    message = os.urandom(32768)
    for _ in range(48):  # 1.5 MiB to the room
        speaker.send(frame(message, opcode=2))
        assert speaker.read_frame() == (2, message, False)
        assert listener.read_frame() == (2, message, False)
    stuck.wait_ended(timeout=10)
    assert eventually(lambda: "slow consumer route=/slowroom/{room} conn=1" in server.log())
    assert rss_kib(server.process.pid) - before < 16 * 1024
    echo(listener, "still here")


def test_sigterm_closes_every_stream_with_1001(server, pki):
    peer = connect(server, pki)
    streams = [opened(peer) for _ in range(3)]
    server.process.send_signal(signal.SIGTERM)
    assert [stream.close_code() for stream in streams] == [1001] * 3
    try:
        for stream in streams:
            stream.send(close_frame(1001))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            peer.pump(deadline)
    except (OSError, EOFError):
        pass  # the server closed, or gave up waiting for the answers already
    assert server.process.wait(timeout=15) == 0
    assert "Traceback" not in server.log() and "Unhandled" not in server.log()


def test_sigterm_tells_each_connection_goaway_before_the_1001s(server, pki):
    busy, idle = connect(server, pki), connect(server, pki)
    streams = [opened(busy) for _ in range(2)]
    idle.wait_settings()
    server.process.send_signal(signal.SIGTERM)
    # The notice first: no more streams here, those open go on.
    assert [stream.close_code() for stream in streams] == [1001] * 2
    assert busy.goaways == [(0, 2**31 - 1)] and not busy.gone
    for stream in streams:
        stream.send(close_frame(1001))
    # Once the last has ended, the final GOAWAY names the last stream served.
    deadline = time.monotonic() + 10
    with pytest.raises(EOFError):
        while time.monotonic() < deadline:
            busy.pump(deadline)
    assert busy.goaways == [(0, 2**31 - 1), (0, streams[-1].sid)]
    # A connection without streams is told at once.
    with pytest.raises(EOFError):
        while time.monotonic() < deadline:
            idle.pump(deadline)
    assert idle.goaways == [(0, 0)]
    assert server.process.wait(timeout=15) == 0
    assert "Traceback" not in server.log() and "Unhandled" not in server.log()


def test_ordinary_requests_over_http2(server, pki):
    peer = connect(server, pki)
    status, headers, body = peer.get("/status")
    assert status == 200 and b"<html" in body.lower()
    assert peer.get("/healthz")[0] == 200
    status, _, body = peer.get("/metrics")
    assert status == 200 and b"wsmux_http2_connections_total" in body
    # A route's path without the extended CONNECT: 426, as over HTTP/1.1,
    # without the Connection and Upgrade headers HTTP/2 forbids.
    status, headers, _ = peer.get("/echo")
    assert status == 426 and b"connection" not in headers and b"upgrade" not in headers
    # A body over max_body_size: 413, and the connection goes on.
    post = peer.open("/healthz", protocol=None, method="POST")
    post.send(b"x" * 5000, end=True)
    assert post.status() == 413
    assert peer.get("/healthz")[0] == 200


# The same frames over HTTP/1.1 and over an HTTP/2 stream: the same replies.
SEQUENCES = {
    "text": [frame(b"hi")],
    "binary": [frame(bytes(range(256)), opcode=2)],
    "ping": [frame(b"p", opcode=9)],
    "fragments": [
        frame(b"ab", fin=False),
        frame(b"cd", opcode=0, fin=False),
        frame(b"e", opcode=0),
    ],
    "ping-between-fragments": [
        frame(b"ab", fin=False),
        frame(b"", opcode=9),
        frame(b"c", opcode=0),
    ],
    "close": [close_frame(1000, b"bye")],
    "close-4000": [close_frame(4000)],
    "bad-close-code": [close_frame(999)],
    "bad-utf8-across-fragments": [frame(b"\xe2", fin=False), frame(b"\x28\xa1", opcode=0)],
    "oversized": [frame(b"y" * 70000)],
    "rsv-bits": [frame(b"x", rsv=2)],
    "unmasked": [frame(b"x", masked=False)],
    "continuation-first": [frame(b"x", opcode=0)],
    "long-control": [frame(b"p" * 126, opcode=9)],
}


# Sent after every sequence: its pong ends the replies (or the close
# before it does).
MARKER = frame(b"end of sequence", opcode=9)


def replies(reader):
    got = []
    while True:
        try:
            opcode, payload, _ = reader.read_frame(timeout=5)
        except (EOFError, ConnectionResetError):
            got.append("end")
            return got
        if opcode == 10 and payload == b"end of sequence":
            return got
        if opcode == 8:
            got.append(("close", struct.unpack(">H", payload[:2])[0] if payload else 1005))
            return got
        got.append((opcode, payload))


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_http1_and_http2_answer_the_same(server, pki, name):
    sequence = SEQUENCES[name]
    plain = socket.create_connection(("127.0.0.1", server.tls_port))
    context = ssl.create_default_context(cafile=pki.ca_file)
    raw = Peer.__new__(Peer)
    raw.sock = context.wrap_socket(plain, server_hostname="default.test")
    raw.sock.settimeout(10)
    raw.buffer = b""
    raw.open("/echo")
    for data in sequence:
        raw.send(data)
    raw.send(MARKER)
    over_http1 = replies(raw)
    peer = connect(server, pki)
    stream = opened(peer)
    for data in sequence:
        stream.send(data)
    stream.send(MARKER)
    over_http2 = replies(stream)
    assert over_http1 == over_http2
    assert over_http1  # something was answered


def test_no_http2_offers_http1_only(start_server, pki, tmp_path):
    server = start(start_server, pki, tmp_path, "http2 = false")
    peer = H2Peer(server.tls_port, pki.ca_file)
    assert peer.alpn == "http/1.1"
    peer.close()
    flag = start(start_server, pki, tmp_path, "", "--no-http2")
    assert H2Peer(flag.tls_port, pki.ca_file).alpn == "http/1.1"


def test_a_stream_reset_before_the_route_decides_gives_its_place_back(server, pki):
    peer = connect(server, pki)
    for _ in range(30):
        stream = peer.open("/slowaccepts")  # decides after half a second
        stream.reset()
    # Every place came back: the cap (12) still admits 12.
    time.sleep(0.3)
    streams = [opened(peer) for _ in range(12)]
    echo(streams[-1], "room for all")


# What a hostile review found (each failed before its fix).


def test_a_reset_in_the_same_read_leaves_the_connection_working(server, pki):
    # A page that sends and leaves: a message and RST_STREAM in one write,
    # and streams opened and reset in one write (refused or not).  h2 has
    # closed each by the time it is answered; the others go on.
    peer = connect(server, pki)
    bystander = opened(peer)
    victim = opened(peer)
    peer.conn.send_data(victim.sid, frame(b"bye"))
    peer.conn.reset_stream(victim.sid, 8)
    peer.flush()
    for path, protocol in [("/echo", "websocket"), ("/nowhere", "websocket"),
                           ("/echo", "chat"), ("/healthz", None)]:  # fmt: skip
        sid = peer.conn.get_next_available_stream_id()
        pseudo = [(":method", "CONNECT" if protocol else "GET"), (":scheme", "https"),
                  (":path", path), (":authority", "localhost")]  # fmt: skip
        if protocol:
            pseudo.insert(1, (":protocol", protocol))
        peer.conn.send_headers(sid, pseudo + [("sec-websocket-version", "13")])
        peer.conn.reset_stream(sid, 8)
        peer.flush()
    for i in range(3):
        echo(bystander, f"still here {i}")
    echo(opened(peer), "and a new one")
    assert "Unhandled" not in server.log() and "Traceback" not in server.log()


def test_a_shut_window_waits_for_its_update(server, pki):
    # A client whose streams start with no window: the echo waits, without
    # the server spinning, and goes out on the WINDOW_UPDATE.
    peer = connect(server, pki)
    peer.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    peer.flush()
    stream = opened(peer)
    stream.send(frame(b"wait for it"))
    cpu = server_cpu(server)
    with pytest.raises(TimeoutError):
        stream.read_frame(timeout=1)
    assert server_cpu(server) - cpu < 0.3  # seconds of CPU in that second
    peer.conn.increment_flow_control_window(65535, stream.sid)
    peer.flush()
    assert stream.read_frame() == (1, b"wait for it", False)


def test_a_connection_h2_gave_up_on_is_closed(server, pki):
    # The client's GOAWAY, or a protocol error: the connection closes at
    # once, and what the client goes on sending is not kept.
    idle = open_sockets(server)  # the ports (and the reactor's own)
    for how in ("goaway", "protocol error"):
        peer = connect(server, pki)
        opened(peer)  # a WebSocket on it, to be ended too
        before = rss_kib(server.process.pid)
        if how == "goaway":
            peer.conn.close_connection()
            peer.flush()
        else:  # a WINDOW_UPDATE of 0 on the connection
            peer.sock.sendall(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + b"\x00" * 4)
        started = time.monotonic()
        while time.monotonic() - started < 10:
            try:
                # A DATA frame announcing 16 MiB, and its first bytes.
                peer.sock.sendall(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + b"\x00" * 65536)
                peer.pump(time.monotonic() + 0.05)
            except (EOFError, OSError):
                break
            except TimeoutError:
                pass
        assert time.monotonic() - started < 5, how
        peer.close()
        assert rss_kib(server.process.pid) - before < 8 * 1024, how
    # Every connection is gone from the server.
    assert eventually(lambda: open_sockets(server) <= idle, timeout=5)
    echo(opened(connect(server, pki)), "others are served")


@pytest.mark.parametrize(
    "headers, path, status",
    [
        ([("x-" + "n" * 5000, "1")], "/echo", 431),
        ([(f"x-h{i}", "1") for i in range(200)], "/echo", 431),
        ([], "/echo?" + "q" * 20000, 414),
    ],
    ids=["long-name", "many-headers", "long-path"],
)
def test_the_head_caps_hold_over_http2(server, pki, headers, path, status):
    peer = connect(server, pki)
    assert peer.open(path, headers).status() == status
    status, _, _ = peer.get("/healthz")
    assert status == 200


def test_plain_connect_and_bodies_are_refused_as_over_http1(server, pki):
    peer = connect(server, pki)
    sid = peer.conn.get_next_available_stream_id()  # a tunnel: CONNECT host:port
    peer.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "example.com:443")])
    peer.flush()
    plain = peer.streams[sid] = Stream(peer, sid, True)
    assert plain.status() == 501
    assert peer.open("/echo", [("content-length", "5")]).status() == 400
    # A path past printable ASCII, as an HTTP/1.1 target.
    for path in (b"/echo?\xa0HTTP/1.1\x85sec-websocket-protocol:x\x85y:", b"/echo?\x1f"):
        assert peer.open(path.decode("latin-1")).status() == 400
    big = peer.open("/healthz", [("content-length", "99999999999999999999")], protocol=None,
                    method="POST")  # fmt: skip
    assert big.status() == 413
    echo(opened(peer), "connection fine")


def test_an_unfinished_body_holds_a_place_and_times_out(server, pki):
    # As over HTTP/1.1: the body is due within the head deadline (the
    # open_handshake_timeout, 2 s here).
    peer = connect(server, pki)
    posts = [peer.open("/healthz", protocol=None, method="POST") for _ in range(12)]
    for post in posts:
        post.send(b"x" * 10)  # and never ended
    # The twelve bodies hold every place this address has.
    assert peer.open("/echo").status() == 429
    for post in posts:
        assert post.status(timeout=5) == 408
    assert eventually(lambda: peer.open("/echo").status() == 200, timeout=5)
