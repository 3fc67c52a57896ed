"""
The handler API of self.wsmux (in memory): closing with any code a server
may send, dropping, refusing with headers.
"""

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import succeed

from tests.handlers_for_tests import Chorus, Knows
from wsmux import Deny, Reject, Route, RouteTree
from wsmux.connection import SENDABLE_CLOSE_CODES, close_reason
from wsmux.testing import connect, masked_frame, raw_connect, upgrade_request


class Closer(WebSocketServerProtocol):
    # "CODE reason" closes with CODE; "drop" drops.
    def onMessage(self, payload, isBinary):
        text = payload.decode()
        if text == "drop":
            self.wsmux.drop()
            return
        code, _, reason = text.partition(" ")
        try:
            self.wsmux.close(int(code), reason)
        except ValueError as e:
            self.sendMessage(str(e).encode())


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1008, 1011, 1012, 1013, 3000, 4999])
def test_a_handler_closes_with_any_code_a_server_may_send(code):
    conn = connect(RouteTree([Route("/c", Closer)]), "/c")
    conn.client.sendMessage(f"{code} bye".encode())
    conn.flush()
    assert conn.client.close[1:3] == (code, "bye")


def test_1014_goes_out_as_it_is():
    # Autobahn's own client counts 1014 (bad gateway) as invalid; the
    # websockets and ws clients take it: the frame itself is checked here.
    raw = raw_connect(RouteTree([Route("/c", Closer)]))
    raw.send(upgrade_request("/c") + masked_frame(b"1014 bad gateway"))
    frames = raw.received.split(b"\r\n\r\n", 1)[1]
    assert frames == b"\x88\x0d\x03\xf6bad gateway"


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_codes_no_endpoint_may_send_are_refused_to_the_handler(code):
    conn = connect(RouteTree([Route("/c", Closer)]), "/c")
    conn.client.sendMessage(f"{code} nope".encode())
    conn.flush()
    assert conn.client.messages[0][0].startswith(b"close code %d cannot be sent" % code)
    assert conn.server.state == conn.server.STATE_OPEN


def test_sendable_codes_and_reasons_cut_at_a_character():
    assert 1001 in SENDABLE_CLOSE_CODES and 1005 not in SENDABLE_CLOSE_CODES
    reason = close_reason("é" * 100)  # 200 bytes of UTF-8
    assert len(reason) == 122 and reason.decode("utf-8") == "é" * 61


def test_drop_ends_the_connection_without_a_close_frame():
    conn = connect(RouteTree([Route("/c", Closer)]), "/c")
    conn.client.sendMessage(b"drop")
    conn.flush()
    assert conn.client.close is not None
    was_clean, code, _ = conn.client.close
    assert not was_clean and code == 1006


class Guarded(WebSocketServerProtocol):
    def onConnect(self, request):
        where = request.path
        if where == "/later":
            return succeed(None).addCallback(lambda _: self._refuse())
        if where == "/async":
            return self._refuse_async()
        self._refuse()

    def _refuse(self):
        raise Deny(
            401,
            "log in first",
            {"WWW-Authenticate": 'Bearer realm="chat"', "Set-Cookie": ["a=1", "b=2"]},
        )

    async def _refuse_async(self):
        self._refuse()


@pytest.mark.parametrize("path", ["/now", "/later", "/async"])
def test_a_refusal_carries_its_headers_on_every_path(path):
    raw = raw_connect(RouteTree([Route("/{any}", Guarded)]))
    raw.send(upgrade_request(path))
    head = raw.received.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b'WWW-Authenticate: Bearer realm="chat"' in head
    assert b"Set-Cookie: a=1" in head and b"Set-Cookie: b=2" in head


class BadHeaders(WebSocketServerProtocol):
    def onConnect(self, request):
        raise Deny(403, "no", {"X-Ok": "fine\r\nInjected: yes", "Bad Name": "x"})


def test_a_refusals_headers_are_made_safe():
    raw = raw_connect(RouteTree([Route("/b", BadHeaders)]))
    raw.send(upgrade_request("/b"))
    head = raw.received.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"\r\nInjected:" not in head and b"Bad Name" not in head
    assert b"X-Ok: fine" in head


def test_the_unhandled_hooks_rejection_carries_headers():
    def hook(request):
        return Reject(429, "slow down", {"Retry-After": "30"})

    raw = raw_connect(RouteTree([], unhandled=hook))
    raw.send(upgrade_request("/anything"))
    head = raw.received.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 429 ")
    assert b"Retry-After: 30" in head


def test_broadcast_without_the_sender_and_the_routes_connections():
    tree = RouteTree([Route("/a", Chorus), Route("/b", Chorus)])
    a1, a2, a3 = (connect(tree, "/a") for _ in range(3))
    b1 = connect(tree, "/b")
    a1.client.sendMessage(b"hi")
    for c in (a1, a2, a3, b1):
        c.flush()
    assert a1.client.messages == []
    assert a2.client.messages == a3.client.messages == [(b"hi", False)]
    assert b1.client.messages == []
    a2.client.sendMessage(b"count")
    a2.flush()
    assert a2.client.messages[-1] == (b"3", False)
    assert len(tree.open_connections()) == 4
    assert tree.open_connections("/a") == {a1.server, a2.server, a3.server}
    a3.client.sendClose(1000)
    a3.flush()
    assert tree.open_connections("/a") == {a1.server, a2.server}
    assert tree.open_connections("/nowhere") == frozenset()


def test_exclude_takes_several_connections():
    tree = RouteTree([Route("/a", Chorus)])
    members = [connect(tree, "/a") for _ in range(4)]
    hub = members[0].server.wsmux.channels
    assert hub.publish("all", b"x", exclude={members[0].server, members[1].server}) == 2
    for m in members:
        m.flush()
    assert [len(m.client.messages) for m in members] == [0, 0, 1, 1]


def test_a_service_says_where_it_listens(tmp_path):
    from wsmux import build_settings, make_service
    from wsmux.service import bound_addresses

    settings = build_settings(
        ports=("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
        port_file=str(tmp_path / "ports"),
    )
    service = make_service(settings)
    service.startService()
    try:
        bound = bound_addresses(service)
        assert [kind for kind, _ in bound] == ["plain", "plain"]
        assert all(a.host == "127.0.0.1" and a.port > 0 for _, a in bound)
        lines = (tmp_path / "ports").read_text().splitlines()
        assert lines == [f"plain 127.0.0.1 {a.port}" for _, a in bound]
    finally:
        service.stopService()
    assert not (tmp_path / "ports").exists()


def ask(conn):
    import json

    conn.client.sendMessage(b"?")
    conn.flush()
    return json.loads(conn.client.messages[-1][0])


def test_what_a_handler_knows_about_its_client():
    tree = RouteTree([Route("/k", Knows)])
    one = connect(tree, "/k", headers={"Cookie": 'sid=abc; theme="dark"; bad cookie=1'})
    two = connect(tree, "/k")
    seen = ask(one)
    assert seen["cookies"]["sid"] == "abc" and seen["cookies"]["theme"] == "dark"
    assert seen["chain"] == [seen["client"]] == ["127.0.0.1"]
    assert (seen["tls"], seen["server_name"], seen["latency"]) == (False, None, None)
    assert ask(two)["id"] == seen["id"] + 1  # unique and in order
    assert ask(two)["cookies"] == {}


def test_the_address_chain_trusted_proxies_vouch_for():
    from wsmux import ServerLimits

    limits = ServerLimits(trusted_proxy_networks=("127.0.0.0/8", "10.0.0.0/8"))
    tree = RouteTree([Route("/k", Knows)], limits=limits)
    conn = connect(tree, "/k", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.1.2.3"})
    seen = ask(conn)
    # 6.6.6.6 is the client's own claim, behind an untrusted hop: not believed.
    assert seen["chain"] == ["203.0.113.9", "10.1.2.3", "127.0.0.1"]
    assert seen["client"] == "203.0.113.9"


def test_latency_is_the_last_keepalive_round_trip():
    conn = connect(RouteTree([Route("/k", Knows, {"ping_interval": 1, "ping_timeout": 5})]), "/k")
    conn.clock.advance(1)
    conn.flush()
    latency = ask(conn)["latency"]
    assert latency is not None and latency >= 0


def test_every_log_line_about_a_connection_names_it():
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        conn = connect(RouteTree([Route("/c", Closer)]), "/c")
        conn.client.sendMessage(b"1000 bye")
        conn.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    ours = [e for e in events if e.get("log_format", "").startswith(("open ", "close "))]
    assert len(ours) == 2
    assert {e["conn"] for e in ours} == {conn.server.wsmux.id}


def test_close_all_closes_a_route_or_the_tree_and_drops_who_does_not_answer():
    from twisted.internet.task import Clock

    from wsmux import EchoHandler

    tree = RouteTree([Route("/a", EchoHandler), Route("/b", EchoHandler)])
    a1, a2, b1 = connect(tree, "/a"), connect(tree, "/a"), connect(tree, "/b")
    with pytest.raises(ValueError):
        tree.close_all(1005)
    clock = Clock()
    done = tree.close_all(4000, "route going", timeout=3, route="/a", clock=clock)
    for c in (a1, a2, b1):
        c.flush()
    assert done.called and done.result == 0
    assert a1.client.close[1:] == (4000, "route going") and a2.client.close[1:] == (
        4000,
        "route going",
    )
    assert b1.client.close is None
    # A client that never answers the close is dropped when the time is up.
    b1.client.onCloseFrame = lambda *args: None  # it ignores the close frame
    done = tree.close_all(clock=clock, timeout=3)
    b1.flush()
    assert not done.called
    clock.advance(3)
    b1.flush()
    assert done.called and done.result == 1 and b1.client.close is not None


def test_server_wide_events_across_routes():
    from wsmux import EchoHandler

    tree = RouteTree(
        [Route("/a", EchoHandler), Route("/b", EchoHandler, {"allowed_origins": ["https://ok"]})]
    )
    seen = []
    tree.events.on("opened", lambda c: seen.append(("opened", c.route, c.id)))
    tree.events.on(
        "closed", lambda c, code, reason, clean: seen.append(("closed", c.id, code, clean))
    )
    tree.events.on(
        "refused", lambda route, status, reason, peer: seen.append(("refused", route, status))
    )
    tree.events.on("handshake_failed", lambda c, why: seen.append(("failed", c.route)))

    def broken(*args):
        raise RuntimeError("an observer that fails")

    tree.events.on("opened", broken)  # logged; the others still run
    a = connect(tree, "/a")
    a.client.sendClose(1000, "bye")
    a.flush()
    connect(tree, "/b", origin="https://evil")  # 403
    raw_connect(tree).send(upgrade_request("/nowhere"))  # 404
    slow = raw_connect(tree)
    slow.send(upgrade_request("/a")[:-2] + b"Sec-WebSocket-Version: 8\r\n\r\n")  # 426 or 400
    opened_id = seen[0][2]
    assert seen[:2] == [("opened", "/a", opened_id), ("closed", opened_id, 1000, True)]
    assert ("refused", "/b", 403) in seen
    assert any(e[0] == "refused" and e[2] == 404 for e in seen)
    stats = tree.registry.stats  # the metrics count from the same events
    assert stats.handshakes[("/a", "accepted")] == 1 and stats.handshakes[("/b", "403")] == 1
    tree.events.off("opened", broken)
    with pytest.raises(ValueError):
        tree.events.on("nonsense", print)
    # Closed by the server: its code, not the client's echo of it.
    b = connect(tree, "/a")
    b.server.wsmux.close(4001, "server says")
    b.flush()
    assert b.client.close[1] in (1000, 4001)  # what Autobahn's client echoes
    assert seen[-1][1:] == (b.server.wsmux.id, 4001, True)


def test_a_connection_that_leaves_before_its_handshake_is_a_failed_handshake():
    from wsmux import EchoHandler

    class Slow(EchoHandler):
        def onConnect(self, request):
            from twisted.internet.defer import Deferred

            return Deferred()  # never decides

    tree = RouteTree([Route("/s", Slow, {"open_handshake_timeout": 2})])
    failed = []
    tree.events.on("handshake_failed", lambda c, why: failed.append((c.route, why)))
    raw = raw_connect(tree)
    raw.send(upgrade_request("/s"))
    raw.clock.advance(3)
    raw.pump.flush()
    assert failed and failed[0][0] == "/s"


def test_cookies_are_read_in_one_linear_pass():
    import time

    from wsmux.connection import parse_cookies

    assert parse_cookies('a=1; b="two"; bad name=3; =4; c; a=5; d=x=y') == {
        "a": "1",
        "b": "two",
        "d": "x=y",
    }
    # What makes the standard library's unquoting quadratic (CVE-2024-7592).
    hostile = 'a="' + "\\0" * 15000 + '"'
    started = time.process_time()
    parse_cookies(hostile)
    assert time.process_time() - started < 0.5


def test_several_cookie_headers_are_one_list_of_pairs():
    from types import SimpleNamespace

    from wsmux.connection import cookie_header, parse_cookies

    # Autobahn joins a repeated header with ", ": for Cookie that would run
    # one header's last value into the next header's first pair.
    head = b"GET / HTTP/1.1\r\nCookie: a=1\r\nHost: h\r\ncookie: b=2, c\r\n\r\n"
    two = SimpleNamespace(http_headers={"cookie": "a=1, b=2, c"}, http_request_data=head)
    assert cookie_header(two) == "a=1; b=2, c"
    assert parse_cookies(cookie_header(two)) == {"a": "1", "b": "2, c"}
    one = b"GET / HTTP/1.1\r\nCookie: a=1, b=2\r\n\r\n"
    one_header = SimpleNamespace(http_headers={"cookie": "a=1, b=2"}, http_request_data=one)
    assert cookie_header(one_header) == "a=1, b=2"  # one header: as the client sent it
    assert cookie_header(SimpleNamespace()) == ""


class ClosesInOnConnect(WebSocketServerProtocol):
    def onConnect(self, request):
        if "drop" in request.params:
            self.wsmux.drop()
        else:
            self.wsmux.close(1008, "no")

    def onOpen(self):
        raise AssertionError("opened after closing in onConnect")


@pytest.mark.parametrize("how", ["close", "drop"])
def test_closing_in_onconnect_sends_no_101_on_either_path(how):
    tree = RouteTree([Route("/x", ClosesInOnConnect)])
    seen = []
    for event in ("opened", "closed", "handshake_failed"):
        tree.events.on(event, lambda *args, event=event: seen.append(event))
    raw = raw_connect(tree)
    raw.send(upgrade_request("/x?drop=1" if how == "drop" else "/x"))
    raw.pump.flush()
    assert b"101" not in raw.received and raw.lost
    assert seen == ["handshake_failed"]


def test_off_before_on_leaves_messages_flowing():
    class Off(WebSocketServerProtocol):
        def onOpen(self):
            self.off()

        def onMessage(self, payload, isBinary):
            self.sendMessage(payload, isBinary)

    conn = connect(RouteTree([Route("/o", Off)]), "/o")
    conn.client.sendMessage(b"one")
    conn.client.beginMessage()  # a fragmented message: Autobahn's own path
    conn.client.beginMessageFrame(3)
    conn.client.sendMessageFrameData(b"two")
    conn.client.endMessage()
    conn.flush()
    assert conn.client.messages == [(b"one", False), (b"two", False)]


class Framing(WebSocketServerProtocol):
    def onConnect(self, request):
        raise Deny(
            403,
            None,
            {"Content-Length": "0", "Connection": "keep-alive", "X-Name": "café"},
        )


def test_a_refusal_cannot_frame_the_response_and_keeps_its_text():
    raw = raw_connect(RouteTree([Route("/f", Framing)]))
    raw.send(upgrade_request("/f"))
    head = raw.received.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")  # the phrase, not "None"
    assert b"Content-Length: 0" not in head and b"keep-alive" not in head
    assert "X-Name: café".encode() in head  # UTF-8, once

    def hook(request):
        return Reject(403, "nope", {"Content-Length": "0", "X-Name": "café"})

    raw = raw_connect(RouteTree([], unhandled=hook))
    raw.send(upgrade_request("/any"))
    head, _, body = raw.received.partition(b"\r\n\r\n")
    assert b"Content-Length: 0\r\n" not in head + b"\r\n" and b"nope\n" in body
    assert "X-Name: café".encode() in head


def test_the_address_chain_is_capped():
    from wsmux import ServerLimits
    from wsmux.limits import MAX_CHAIN

    limits = ServerLimits(trusted_proxy_networks=("10.0.0.0/8", "127.0.0.0/8"))
    tree = RouteTree([Route("/k", Knows)], limits=limits)
    hops = ", ".join(f"10.0.{i // 250}.{i % 250 + 1}" for i in range(2000))
    seen = ask(connect(tree, "/k", headers={"X-Forwarded-For": hops}))
    assert len(seen["chain"]) == MAX_CHAIN


def test_close_takes_no_reason_and_a_producer_registered_twice_stops_once():
    conn = connect(RouteTree([Route("/c", Closer)]), "/c")

    class Counting:
        stops = 0

        def pauseProducing(self):
            pass

        def resumeProducing(self):
            pass

        def stopProducing(self):
            self.stops += 1

    producer = Counting()
    conn.server.registerProducer(producer, True)
    conn.server.wsmux.register_producer(producer)
    conn.server.wsmux.close(1000, None)
    conn.flush()
    assert conn.client.close[1] == 1000
    assert producer.stops == 1
