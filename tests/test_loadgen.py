"""
The benchmarks' load generator (bench/loadgen.c) checks what it gets: a
wrong byte in an echo or a broadcast delivery fails the run, a right one
does not; it speaks wss, and its latency scenario reports the round trip.
Built here with cc, zlib and OpenSSL (.ci/system-deps installs them).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory):
    binary = tmp_path_factory.mktemp("loadgen") / "loadgen"
    subprocess.run(
        ["cc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(ROOT / "bench" / "loadgen.c"),
         "-lz", "-lssl", "-lcrypto"],
        check=True,
    )  # fmt: skip
    return binary


def run(loadgen, scenario, port, *flags):
    return subprocess.run(
        [str(loadgen), scenario, str(port), "--seconds", "0.5", "--warmup", "100", *flags],
        capture_output=True,
        text=True,
        timeout=150,
    )


@pytest.fixture
def wrong_server():
    process = subprocess.Popen(
        [sys.executable, "-u", str(ROOT / "tests" / "programs" / "wrong_echo.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert line.startswith("PORT "), line
    yield int(line.split()[1])
    process.kill()
    process.wait(timeout=10)


@pytest.mark.parametrize(
    "scenario, error",
    [
        ("echo", "a wrong echo"),
        ("latency", "a wrong echo"),
        ("broadcast", "a wrong delivery"),
    ],
)
def test_a_wrong_byte_fails_the_run(loadgen, wrong_server, scenario, error):
    result = run(loadgen, scenario, wrong_server)
    assert result.returncode != 0 and error in result.stderr, result.stderr


def test_right_answers_pass_over_ws_and_wss(loadgen, start_server, tmp_path):
    import trustme

    ca = trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "c.pem"))
    server = start_server(
        "--route", "/echo=echo", "--route", "/rooms/{room}=broadcast",
        "--tls-port", "tcp:0:interface=127.0.0.1", "--cert", str(tmp_path / "c.pem"),
        "--max-message-size", "2000000", "--log-level", "warn",
        "--max-connections", "0", "--max-connections-per-ip", "0",
    )  # fmt: skip
    tls_port = next(port for kind, _, port in server.ports() if kind == "tls")
    for scenario, port, flags in [
        ("echo", server.port, ()),
        ("big", server.port, ()),
        ("broadcast", server.port, ()),
        ("latency", server.port, ()),
        ("echo", tls_port, ("--tls",)),
        ("handshakes", tls_port, ("--tls", "--tls-resume")),
    ]:
        result = run(loadgen, scenario, port, *flags)
        assert result.returncode == 0, (scenario, flags, result.stderr)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        if scenario == "handshakes":
            assert figures["handshakes_per_s"] > 0 and figures["failed"] == 0
            assert figures["resumed"] > 0  # wsmux resumes TLS sessions
        else:
            assert figures.get("messages_per_s", figures.get("deliveries_per_s")) > 0
            assert figures.get("p50_ms", figures.get("fanout_p50_ms")) is not None


def test_a_refused_connect_is_counted_not_a_crash(loadgen):
    from tests.twistd_process import free_port

    # Nothing listens: each connect is refused, an event both writable and
    # in error at once. The run reports the failures and ends cleanly.
    result = subprocess.run(
        [str(loadgen), "handshakes", str(free_port()), "--count", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"failed": 5' in result.stdout and "Connection refused" in result.stderr
