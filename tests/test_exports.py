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
        "EchoHandler",
        "MessageConsumer",
        "ProtocolOptions",
        "PubSubHandler",
        "Reject",
        "Route",
        "RouteError",
        "RouteFactory",
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
    ]
    for name in wsmux.__all__:
        assert getattr(wsmux, name) is not None


def test_plugin_import_does_not_install_a_reactor():
    import subprocess
    import sys

    code = (
        "import sys; from twisted.plugins import wsmux_plugin; "
        "print('twisted.internet.reactor' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
