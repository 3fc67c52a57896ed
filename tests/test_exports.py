"""
The public surface of wsmux is small and pinned.
"""

import wsmux


def test_public_names():
    assert sorted(wsmux.__all__) == [
        "Adopt",
        "BroadcastHandler",
        "ChannelHub",
        "ConfigError",
        "Connection",
        "Deny",
        "EchoHandler",
        "MessageConsumer",
        "ProtocolOptions",
        "PubSubHandler",
        "Reject",
        "Route",
        "RouteError",
        "RouteFactory",
        "RoutePolicy",
        "RouteProtocolMixin",
        "RouteSpec",
        "RouteTree",
        "ServerLimits",
        "Settings",
        "StreamingReceiver",
        "WebSocketEndpoint",
        "WebSocketSite",
        "build_settings",
        "build_tree",
        "load_file",
        "make_service",
        "path_params",
        "stream_message",
        "testing",
    ]
    for name in wsmux.__all__:
        assert getattr(wsmux, name) is not None


def test_the_testing_helpers_are_pinned_too():
    assert sorted(wsmux.testing.__all__) == [
        "MemoryConnection",
        "RawConnection",
        "RecordingClient",
        "connect",
        "masked_frame",
        "raw_connect",
        "upgrade_request",
    ]
    for name in wsmux.testing.__all__:
        assert getattr(wsmux.testing, name) is not None


def test_a_test_connection_gives_txaio_its_loop_back():
    import txaio

    from wsmux import EchoHandler, Route, RouteTree
    from wsmux.testing import connect, raw_connect

    before = txaio.config.loop
    tree = RouteTree([Route("/echo", EchoHandler)])
    with connect(tree, "/echo") as conn:
        assert txaio.config.loop is conn.clock
        conn.client.sendMessage(b"hello")
        conn.flush()
        assert conn.client.messages == [(b"hello", False)]
    assert txaio.config.loop is before
    raw = raw_connect(tree)
    assert txaio.config.loop is raw.clock
    raw.restore_loop()
    assert txaio.config.loop is before


def test_plugin_import_does_not_install_a_reactor():
    import subprocess
    import sys

    code = (
        "import sys; from twisted.plugins import wsmux_plugin; "
        "print('twisted.internet.reactor' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
