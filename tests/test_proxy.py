"""
Proxy routes as configured: every key checked, with words a person
understands, before any connection is relayed.
"""

import pytest

from wsmux.config import ConfigError, load_file, parse_route_arg
from wsmux.proxy import ProxySpec


def test_a_route_from_the_file_and_from_the_command_line(tmp_path):
    import trustme

    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    config = tmp_path / "wsmux.toml"
    config.write_text(
        "[[routes]]\npath = '/svc/{name}'\nhandler = 'proxy'\n"
        "backend = ['ws://10.0.0.1:9000/{name}', 'wss://b.example/{name}?{query}']\n"
        f"connect_timeout = 3\nca = '{ca.name}'\nmax_message_size = 1000\n"
    )
    [route] = load_file(str(config))["routes"]
    assert route.handlers == ("proxy",) and route.options == {"max_message_size": 1000}
    assert route.proxy.backends == ("ws://10.0.0.1:9000/{name}", "wss://b.example/{name}?{query}")
    assert route.proxy.connect_timeout == 3 and route.proxy.ca == str(ca)
    route = parse_route_arg("/x=proxy:ws://127.0.0.1:9000/a, ws://127.0.0.1:9001/a")
    assert route.proxy.backends == ("ws://127.0.0.1:9000/a", "ws://127.0.0.1:9001/a")


@pytest.mark.parametrize(
    "table, words",
    [
        ({}, "backend is required"),
        ({"backend": []}, "backend is required"),
        ({"backend": "http://x/"}, "must be a ws:// or wss:// URL"),
        ({"backend": "ws:///nohost"}, "must be a ws:// or wss:// URL with a host"),
        ({"backend": "ws://x:99999/"}, "has a bad port"),
        ({"backend": "ws://x/a b"}, "space or a control character"),
        ({"backend": "ws://x/", "connect_timeout": 0}, "connect_timeout must be more than 0"),
        ({"backend": "ws://x/", "ca": "/no/such/ca.pem"}, "cannot be read"),
        ({"backend": "ws://x/", "retries": 3}, "unknown key 'retries'"),
    ],
)
def test_bad_proxy_routes_are_named(table, words):
    with pytest.raises(ValueError) as caught:
        ProxySpec.from_table(table)
    assert words in str(caught.value)


def test_bad_proxy_routes_in_the_file_and_on_the_command_line(tmp_path):
    config = tmp_path / "wsmux.toml"
    config.write_text("[[routes]]\npath = '/x'\nhandler = 'proxy'\nbackend = 'tcp://x'\n")
    with pytest.raises(ConfigError, match=r"routes\[0\]: backend 'tcp://x' must be"):
        load_file(str(config))
    with pytest.raises(ConfigError, match="must be a ws:// or wss:// URL"):
        parse_route_arg("/x=proxy:localhost:9000")


def test_a_connect_that_timed_out_is_a_backend_that_did_not_answer_in_time():
    # A backend dropping SYNs: Twisted's connect timeout, not the
    # handshake's, goes off; the client gets 504 for it all the same.
    from twisted.internet import error
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from wsmux.proxy import _BackendFactory

    for reason, late in (
        (error.TimeoutError(), True),
        (error.TCPTimedOutError(), True),
        (error.ConnectionRefusedError(), False),
    ):
        factory = _BackendFactory("ws://127.0.0.1:9/")
        factory.ready = Deferred()
        got: list = []
        factory.ready.addErrback(got.append)
        factory.clientConnectionFailed(None, Failure(reason))
        assert got[0].value.late is late and got[0].value.status is None
