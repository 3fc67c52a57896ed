"""
Settings from TOML files and the twistd command line.
"""

import pytest
from twisted.python import usage

from wsmux.config import ConfigError, load_file, port_description
from wsmux.tap import Options


def options(*argv):
    o = Options()
    o.parseOptions(list(argv))
    return o.settings


def write(tmp_path, text):
    path = tmp_path / "wsmux.toml"
    path.write_text(text)
    return str(path)


def test_defaults_serve_echo_and_the_page():
    s = options()
    assert s.ports == ("8080",)
    assert [(r.path, r.handlers) for r in s.routes] == [
        ("/echo", ("echo",)),
        ("/rooms/{room}", ("broadcast",)),
    ]
    assert s.index is True
    assert s.defaults.max_message_size == 1024 * 1024
    assert s.defaults.deflate == "off"


def test_default_routes_apply_whatever_other_flags():
    s = options("--port", "9000", "--deflate", "--max-message-size", "10", "--log-level", "debug")
    assert [r.path for r in s.routes] == ["/echo", "/rooms/{room}"]
    assert s.defaults.deflate == "on" and s.defaults.max_message_size == 10
    assert s.log_level == "debug" and s.ports == ("9000",)


def test_routes_ports_and_chains_from_the_command_line():
    s = options(
        "--port",
        "8081",
        "--port",
        "unix:/tmp/x.sock",
        "--route",
        "/chat=broadcast",
        "--route",
        "/rooms/{room}=tests.handlers_for_tests.ShoutHandler,echo",
    )
    assert s.ports == ("8081", "unix:/tmp/x.sock")
    assert [(r.path, r.handlers) for r in s.routes] == [
        ("/chat", ("broadcast",)),
        ("/rooms/{room}", ("tests.handlers_for_tests.ShoutHandler", "echo")),
    ]
    assert s.index is False


def test_file_settings_and_cli_overrides(tmp_path):
    path = write(
        tmp_path,
        """
port = [9001, "tcp:9002:interface=127.0.0.1"]
log_level = "warn"
unhandled = "tests.handlers_for_tests.hook"
index = true

[defaults]
max_message_size = 2048
deflate = "inflate-only"

[[routes]]
path = "/a"
handler = "echo"
max_message_size = 16

[[routes]]
path = "/b"
handler = ["tests.handlers_for_tests.ShoutHandler", "echo"]
""",
    )
    s = options("--config", path)
    assert s.ports == ("9001", "tcp:9002:interface=127.0.0.1")
    assert s.log_level == "warn" and s.index is True
    assert s.unhandled == "tests.handlers_for_tests.hook"
    assert s.defaults.max_message_size == 2048 and s.defaults.deflate == "inflate-only"
    assert [(r.path, r.options) for r in s.routes] == [("/a", {"max_message_size": 16}), ("/b", {})]

    s = options(
        "--config",
        path,
        "--port",
        "7000",
        "--max-message-size",
        "99",
        "--no-deflate",
        "--log-level",
        "error",
        "--route",
        "/a=broadcast",
    )
    assert s.ports == ("7000",)
    assert s.defaults.max_message_size == 99 and s.defaults.deflate == "off"
    assert s.log_level == "error"
    assert {r.path: r.handlers for r in s.routes} == {
        "/a": ("broadcast",),
        "/b": ("tests.handlers_for_tests.ShoutHandler", "echo"),
    }


@pytest.mark.parametrize(
    "text, key",
    [
        ("bogus = 1", "bogus"),
        ("[defaults]\nmax_mesage_size = 1", "defaults.max_mesage_size"),
        ("[defaults]\nmax_message_size = -1", "defaults.max_message_size"),
        ("[defaults]\nmax_message_size = 'big'", "defaults.max_message_size"),
        ("[defaults]\ndeflate = 'maybe'", "defaults.deflate"),
        ("log_level = 'loud'", "log_level"),
        ("port = true", "port"),
        ("[[routes]]\nhandler = 'echo'", "routes[0].path"),
        ("[[routes]]\npath = '/x'", "routes[0].handler"),
        ("[[routes]]\npath = 'x'\nhandler = 'echo'", "routes[0].path"),
        ("[[routes]]\npath = '/x'\nhandler = 'echo'\ncolour = 1", "routes[0].colour"),
        (
            "[[routes]]\npath = '/x'\nhandler = 'echo'\nping_interval = 'soon'",
            "routes[0].ping_interval",
        ),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_file_errors_name_the_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(usage.UsageError) as e:
        options("--config", path)
    assert path in str(e.value) and key in str(e.value)


def test_route_clash_in_file_is_a_usage_error(tmp_path):
    path = write(
        tmp_path,
        """
[[routes]]
path = "/rooms/{a}"
handler = "echo"
[[routes]]
path = "/rooms/{b}"
handler = "echo"
""",
    )
    with pytest.raises(usage.UsageError, match=r"names parameter \{b\}"):
        options("--config", path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--route", "/chat"], "expected PATH=HANDLER"),
        (["--route", "chat=echo"], "must start with '/'"),
        (["--route", "/x=nosuch"], "unknown handler 'nosuch'"),
        (["--route", "/x=no.such.Module"], "cannot import handler"),
        (["--route", "/x=tests.handlers_for_tests.hook"], "not a subclass"),
        (["--unhandled", "no.such.hook"], "cannot import unhandled hook"),
        (["--max-message-size", "lots"], "not a number of bytes"),
        (["--log-level", "chatty"], "--log-level: must be one of"),
        (["--log-format", "xml"], "--log-format: must be one of text, json"),
        (["--workers", "many"], "--workers: must be a number of processes or auto"),
        (["--status-allow", "10.0.0.0/8,nope"], "--status-allow: 'nope' is not an address"),
        (["--health-path", "healthz"], "--health-path: must be a path"),
        (["--tls-min-version", "1.1"], "--tls-min-version: must be one of 1.2, 1.3"),
        (["--key", "k.pem"], "--key needs --cert next to it"),
        (["--trusted-proxy-networks", "10.0.0.0/8,nope"], "'nope' is not an address"),
        (["--route", "/x=echo", "--route", "/x=echo"], "clashes"),
        (["--config", "/nonexistent/wsmux.toml"], "cannot read"),
    ],
)
def test_command_line_errors(argv, message):
    with pytest.raises(usage.UsageError, match=message):
        options(*argv)


def test_bare_port_means_all_interfaces():
    description = port_description("8080")
    assert description in ("tcp6:8080:interface=\\:\\:", "tcp:8080")
    assert port_description("tcp:1:interface=127.0.0.1") == "tcp:1:interface=127.0.0.1"


def test_load_file_missing(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(str(tmp_path / "missing.toml"))


def test_documented_example_files_load():
    from pathlib import Path

    for example in sorted(
        (Path(__file__).resolve().parents[1] / "docs" / "examples").glob("*.toml")
    ):
        settings = options("--config", str(example))
        assert settings.routes, example


def test_limit_and_liveness_flags():
    s = options(
        "--ping-interval", "5", "--ping-timeout", "2.5", "--idle-timeout", "30",
        "--handshake-timeout", "3", "--max-send-queue", "4096", "--slow-consumer", "drop",
        "--max-connections", "7", "--max-connections-per-ip", "3", "--trusted-proxies", "1",
        "--drain-timeout", "4",
    )  # fmt: skip
    d, lim = s.defaults, s.limits
    assert (d.ping_interval, d.ping_timeout, d.idle_timeout, d.open_handshake_timeout) == (
        5,
        2.5,
        30,
        3,
    )
    assert (d.max_send_queue, d.slow_consumer) == (4096, "drop")
    assert (lim.max_connections, lim.max_connections_per_ip, lim.trusted_proxies, lim.drain_timeout) == (
        7, 3, 1, 4,
    )  # fmt: skip


def test_limits_table_in_file(tmp_path):
    path = write(tmp_path, "[limits]\nmax_headers = 50\nmax_request_line = 1000\n")
    s = options("--config", path)
    assert (s.limits.max_headers, s.limits.max_request_line) == (50, 1000)
    bad = write(tmp_path, "[limits]\nmax_headerz = 50\n")
    with pytest.raises(usage.UsageError, match="limits.max_headerz"):
        options("--config", bad)


def test_bad_policy_is_a_usage_error():
    with pytest.raises(usage.UsageError, match="slow_consumer must be one of close, drop"):
        options("--slow-consumer", "panic")


def test_channel_namespace_is_per_route_not_a_default():
    from wsmux.config import ConfigError, build_settings

    with pytest.raises(ConfigError, match="channel_namespace is set per route"):
        build_settings({"defaults": {"channel_namespace": "all"}})


def test_every_setting_is_declared_once_and_reaches_flag_file_and_python(tmp_path):
    import dataclasses

    from wsmux.config import SETTINGS, Settings, build_settings
    from wsmux.tap import Options

    structural = {
        "ports",
        "routes",
        "defaults",
        "limits",
        "tls",
        "tls_ports",
        "shared_ports",
        "resources",
    }
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {s.name for s in SETTINGS} == fields - structural
    flags = {row[0] for row in Options.optParameters}
    for setting in SETTINGS:
        if setting.flag:
            assert setting.flag in flags, setting.flag
    # One check for the three ways in: the same bad value, the same words.
    path = write(tmp_path, "log_format = 'xml'\n")
    for attempt in (
        lambda: options("--config", path),
        lambda: options("--log-format", "xml"),
        lambda: build_settings({}, log_format="xml"),
    ):
        with pytest.raises((usage.UsageError, ConfigError), match="must be one of text, json"):
            attempt()
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        build_settings({}, colour="blue")


@pytest.mark.parametrize("name", ["bad name", "b\u00fccher.test", "a/b", "", "*.", "x" * 300])
def test_a_host_name_no_client_could_ask_for_is_a_usage_error(tmp_path, name):
    (tmp_path / "c.pem").write_text("")
    path = write(tmp_path, f"[[tls.hosts]]\nname = {name!r}\ncert = 'c.pem'\n")
    with pytest.raises(usage.UsageError, match=r"tls.hosts\[0\].name: must be a host name") as e:
        options("--config", path)
    assert repr(name[:64] + "..." if len(name) > 64 else name) in str(e.value)


def test_host_names_with_underscores_and_wildcards_are_taken(tmp_path):
    (tmp_path / "c.pem").write_text("")
    path = write(
        tmp_path,
        "[[tls.hosts]]\nname = 'My_Host.internal.'\ncert = 'c.pem'\n"
        "[[tls.hosts]]\nname = '*.xn--bcher-kva.test'\ncert = 'c.pem'\n"
        "[[tls.hosts]]\nname = '::1'\ncert = 'c.pem'\n",
    )
    hosts = options("--config", path).tls.hosts
    assert [h.name for h in hosts] == ["My_Host.internal.", "*.xn--bcher-kva.test", "::1"]


def test_a_key_without_its_certificate_in_the_file(tmp_path):
    path = write(tmp_path, "[tls]\nkey = 'k.pem'\n")
    with pytest.raises(usage.UsageError, match="tls.key: needs tls.cert next to it"):
        options("--config", path)
