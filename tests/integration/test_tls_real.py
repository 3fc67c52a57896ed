"""
TLS against a real twistd wsmux: openssl s_client, the websockets client
over wss://, old protocol versions, a shared TLS+plain port, SIGHUP reload.
"""

import signal
import socket
import ssl
import subprocess
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.pki import make_pki, sync_client_context
from wsmux import _compat_http2


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_server(start_server, pki, tmp_path):
    config = tmp_path / "tls.toml"
    a_chain, a_key = pki.files["a.test"]
    # a.test's files are copied so the reload test can replace them.
    (tmp_path / "a.crt").write_bytes(open(a_chain, "rb").read())
    (tmp_path / "a.key").write_bytes(open(a_key, "rb").read())
    config.write_text(f"""
[tls]
cert = "{pki.files["default.test"][0]}"
key = "{pki.files["default.test"][1]}"
ports = ["tcp:0:interface=127.0.0.1"]
shared_ports = ["tcp:0:interface=127.0.0.1"]

[[tls.hosts]]
name = "a.test"
cert = "a.crt"
key = "a.key"

[[tls.hosts]]
name = "b.test"
cert = "{pki.files["b.test"][0]}"
key = "{pki.files["b.test"][1]}"

[[tls.hosts]]
name = "*.wild.test"
cert = "{pki.files["*.wild.test"][0]}"
key = "{pki.files["*.wild.test"][1]}"

[defaults]
open_handshake_timeout = 2.0

[[routes]]
path = "/echo"
handler = "echo"

[[routes]]
path = "/secure"
handler = "echo"
require_tls = true

[[routes]]
path = "/idle"
handler = "echo"
idle_timeout = 0.5

[[routes]]
path = "/ping"
handler = "echo"
ping_interval = 0.5
ping_timeout = 0.5
""")
    server = start_server("--config", str(config))
    # Port 0 everywhere: the ports the system chose, from --port-file.
    got = {kind: port for kind, _, port in server.ports()}
    server.tls_port, server.shared_port, server.dir = got["tls"], got["shared"], tmp_path
    return server


def tls_port_of(server):
    # The TLS port the system chose (--port-file).
    return next(port for kind, _, port in server.ports() if kind == "tls")


def s_client(port, *args):
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def subject(output):
    for line in output.splitlines():
        if line.startswith("subject="):
            return line
    return None


@pytest.mark.parametrize(
    "name, common_name",
    [
        ("a.test", "a.test"),
        ("b.test", "b.test"),
        ("x.wild.test", "*.wild.test"),
        ("nobody.test", "default.test"),
    ],
)
def test_s_client_sees_each_hosts_certificate(tls_server, name, common_name):
    _, output = s_client(tls_server.tls_port, "-servername", name)
    assert subject(output) is not None and f"CN = {common_name}" in subject(output), output[-2000:]


def test_s_client_without_sni_gets_the_default(tls_server):
    _, output = s_client(tls_server.tls_port, "-noservername")
    assert "CN = default.test" in subject(output)


def test_alpn_and_versions(tls_server):
    # h2 exactly when wsmux serves it (not on the public path, nor
    # without the http2 extra: tests/integration/test_http2_real.py).
    _, output = s_client(tls_server.tls_port, "-servername", "a.test", "-alpn", "h2,http/1.1")
    assert f"ALPN protocol: {'h2' if _compat_http2.HTTP2 else 'http/1.1'}" in output
    _, output = s_client(tls_server.tls_port, "-servername", "a.test", "-alpn", "http/1.1")
    assert "ALPN protocol: http/1.1" in output
    assert "Compression: NONE" in output
    for old in ("-tls1", "-tls1_1"):
        code, output = s_client(
            tls_server.tls_port, "-servername", "a.test", old, "-cipher", "DEFAULT:@SECLEVEL=0"
        )
        assert code != 0
        assert (
            "protocol version" in output or "no protocols available" in output or "alert" in output
        ), output[-1500:]
    assert subject(output) is None


def test_old_versions_refused_by_the_server(tls_server):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            with context.wrap_socket(raw, server_hostname="a.test"):
                pass


def wss_context(pki):
    context = ssl.create_default_context(cafile=pki.ca_file)
    return context


@pytest.mark.parametrize("host", ["a.test", "b.test", "q.wild.test"])
def test_wss_echo_per_host(tls_server, pki, host):
    with connect(
        f"wss://127.0.0.1:{tls_server.tls_port}/echo",
        ssl=sync_client_context(pki.ca_file),
        server_hostname=host,
    ) as ws:
        ws.send(f"hello {host}")
        assert ws.recv(timeout=5) == f"hello {host}"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_tls_session_is_resumed(tls_server, pki, version):
    # A client that kept its session resumes it: no certificate and no key
    # exchange signed again (wsmux's cache, not session tickets).
    context = wss_context(pki)
    context.minimum_version = context.maximum_version = version

    def upgrade(session=None):
        raw = socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=10)
        conn = context.wrap_socket(raw, server_hostname="a.test", session=session)
        conn.sendall(
            b"GET /echo HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)  # TLS 1.3's session arrives before the 101
        assert head.startswith(b"HTTP/1.1 101"), head
        return conn

    def close(conn):
        # A clean TLS close: OpenSSL forgets a session whose connection
        # ended without one.
        conn.unwrap().close()

    first = upgrade()
    session, reused = first.session, first.session_reused
    close(first)
    assert session is not None and not reused
    second = upgrade(session)
    assert second.session_reused
    close(second)


def test_shared_port_takes_ws_and_wss(tls_server, pki):
    port = tls_server.shared_port
    with connect(
        f"wss://127.0.0.1:{port}/secure",
        ssl=sync_client_context(pki.ca_file),
        server_hostname="a.test",
    ) as ws:
        ws.send("secure")
        assert ws.recv(timeout=5) == "secure"
    with connect(f"ws://127.0.0.1:{port}/echo") as ws:
        ws.send("plain")
        assert ws.recv(timeout=5) == "plain"
    # A route that requires TLS refuses the plain upgrade, and says why.
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{port}/secure")
    assert e.value.response.status_code == 403
    deadline = time.monotonic() + 5
    while "requires TLS" not in tls_server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "This route requires TLS" in tls_server.log()


def test_tls_handshake_timeout(tls_server):
    for port in (tls_server.tls_port, tls_server.shared_port):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            if port == tls_server.tls_port:
                raw.sendall(b"\x16\x03\x01")  # a ClientHello that never finishes
            try:
                assert raw.recv(100) == b""
            except ConnectionResetError:
                pass  # dropped: that is the point
        # open_handshake_timeout is 2 s here
        assert time.monotonic() - started < 2 + 3


def test_sighup_reload(tls_server, pki):
    context = sync_client_context(pki.ca_file)
    before = connect(
        f"wss://127.0.0.1:{tls_server.tls_port}/echo", ssl=context, server_hostname="a.test"
    )
    chain, key = pki.issue("a.test", common_name="a.test renewed")
    (tls_server.dir / "a.crt").write_bytes(chain)
    (tls_server.dir / "a.key").write_bytes(key)
    tls_server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, output = s_client(tls_server.tls_port, "-servername", "a.test")
        if "CN = a.test renewed" in (subject(output) or ""):
            break
        time.sleep(0.2)
    assert "CN = a.test renewed" in subject(output)
    before.send("opened before the reload")
    assert before.recv(timeout=5) == "opened before the reload"
    before.close()
    # A broken certificate keeps the current one and names the file.
    (tls_server.dir / "a.crt").write_bytes(b"garbage")
    tls_server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS reload failed" not in tls_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "a.crt" in tls_server.log().split("TLS reload failed")[-1].splitlines()[0]
    _, output = s_client(tls_server.tls_port, "-servername", "a.test")
    assert "CN = a.test renewed" in subject(output)
    # So does a key the crypto library cannot load: one line, no traceback.
    from tests.pki import UNSUPPORTED_CURVE_KEY

    (tls_server.dir / "a.crt").write_bytes(chain)
    (tls_server.dir / "a.key").write_bytes(UNSUPPORTED_CURVE_KEY)
    tls_server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while tls_server.log().count("TLS reload failed") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    last = tls_server.log().split("TLS reload failed")[-1].splitlines()[0]
    assert "a.key: no usable PEM private key" in last
    assert "Traceback" not in tls_server.log()
    _, output = s_client(tls_server.tls_port, "-servername", "a.test")
    assert "CN = a.test renewed" in subject(output)


def test_strict_mode_alert(start_server, pki):
    server = start_server(
        "--tls-port", "tcp:0:interface=127.0.0.1", "--certs", str(pki.directory), "--tls-strict"
    )  # fmt: skip
    port = tls_port_of(server)
    code, output = s_client(port, "-servername", "unknown.test")
    assert code != 0 and "unrecognized name" in output
    _, output = s_client(port, "-servername", "a.test")
    assert "CN = a.test" in subject(output)


def test_missing_certificates_are_a_usage_error(tmp_path):
    from tests.twistd_process import run_twistd

    result = run_twistd(
        "wsmux", "--tls-port", "tcp:0:interface=127.0.0.1", "--cert", str(tmp_path / "nope.pem")
    )
    output = result.stdout + result.stderr
    assert (
        result.returncode != 0 and "nope.pem: cannot read" in output and "Traceback" not in output
    )
    result = run_twistd("wsmux", "--tls-port", "tcp:0:interface=127.0.0.1")
    assert result.returncode != 0 and "needs certificates" in result.stdout + result.stderr


def test_a_key_the_crypto_library_cannot_load_is_a_usage_error(pki, tmp_path):
    from tests.pki import UNSUPPORTED_CURVE_KEY
    from tests.twistd_process import run_twistd

    (tmp_path / "weird.key").write_bytes(UNSUPPORTED_CURVE_KEY)
    result = run_twistd(
        "wsmux", "--tls-port", "tcp:0:interface=127.0.0.1",
        "--cert", pki.files["a.test"][0], "--key", str(tmp_path / "weird.key"),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "weird.key: no usable PEM private key" in output and "Traceback" not in output


# A wss close must take as long as a ws close: milliseconds on loopback.
# The clients wait up to 30 s for the server to close TCP, so a close
# that waits for the client to give up shows as 30 s, not as a failure
# somewhere else.
CLOSE_BOUND = 3


def test_wss_client_close_completes_at_once(tls_server, pki):
    url = f"wss://127.0.0.1:{tls_server.tls_port}/echo"
    for _ in range(3):
        ws = connect(
            url, ssl=sync_client_context(pki.ca_file), server_hostname="a.test", close_timeout=30
        )
        ws.send("bye")
        assert ws.recv(timeout=5) == "bye"
        started = time.monotonic()
        ws.close()
        assert time.monotonic() - started < CLOSE_BOUND


def test_wss_server_close_completes_at_once(tls_server, pki):
    from websockets.exceptions import ConnectionClosedOK

    url = f"wss://127.0.0.1:{tls_server.tls_port}/idle"
    started = time.monotonic()
    with connect(
        url, ssl=sync_client_context(pki.ca_file), server_hostname="a.test", close_timeout=30
    ) as ws:
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=20)
        assert ws.close_code == 1000 and ws.close_reason == "idle timeout"
    # idle_timeout is 0.5 s: the close handshake and the TCP close follow it.
    assert time.monotonic() - started < 0.5 + CLOSE_BOUND


def test_wss_ping_timeout_drops_at_once(tls_server, pki):
    with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=10) as raw:
        with wss_context(pki).wrap_socket(raw, server_hostname="a.test") as tls:
            tls.sendall(
                b"GET /ping HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            started = time.monotonic()
            # Read (the 101, then pings) but never answer a ping.
            try:
                while tls.recv(4096):
                    pass
            except (ConnectionResetError, ssl.SSLError):
                pass
            # interval 0.5 s + timeout 0.5 s, then the drop itself.
            assert time.monotonic() - started < 1 + CLOSE_BOUND


def test_sigterm_drains_wss_clients_at_once(start_server, pki, tmp_path):
    from websockets.exceptions import ConnectionClosedOK

    server = start_server(
        "--tls-port", "tcp:0:interface=127.0.0.1",
        "--certs", str(pki.directory),
        "--drain-timeout", "30",
    )  # fmt: skip
    port = tls_port_of(server)
    url = f"wss://127.0.0.1:{port}/echo"
    clients = [
        connect(
            url, ssl=sync_client_context(pki.ca_file), server_hostname="a.test", close_timeout=30
        )
        for _ in range(5)
    ]
    for ws in clients:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    for ws in clients:
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=10)
        assert ws.close_code == 1001
    # Every client answered the 1001 at once: the drain ends long before
    # its 30 s timeout, and the process exits cleanly.
    assert server.process.wait(timeout=30) == 0
    assert time.monotonic() - started < CLOSE_BOUND + 2
