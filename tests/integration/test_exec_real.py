"""
Exec routes (a process per connection) on a real twistd wsmux, with real
programs: lines and binary modes, exit statuses, signals, caps,
backpressure, and no process left over.
"""

import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"


def processes_with(marker):
    # Live processes whose command line mentions marker.
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


def zombies_of(parent):
    # Children of parent that ended and were never reaped (a zombie's
    # command line is empty: it is found by its state).
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == parent:
            found.append(int(entry))
    return found


def gone(pid):
    return not os.path.exists(f"/proc/{pid}")


def wait_for(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def programs(tmp_path):
    # Copies under this test's own directory: their command lines name it,
    # so the test can find every process it started.
    where = tmp_path / "programs"
    shutil.copytree(PROGRAMS, where)
    return where


def exec_config(tmp_path, programs, **extra):
    py = sys.executable
    lines = [
        "[[routes]]",
        "path = '/count/{name}'",
        "handler = 'exec'",
        f"command = ['{py}', '-u', '{programs / 'count.py'}']",
        "env = { SECRET = 'from the config' }",
        f"cwd = '{tmp_path}'",
        f"max_processes = {extra.get('max_processes', 16)}",
        "",
        "[[routes]]",
        "path = '/stubborn'",
        "handler = 'exec'",
        f"command = ['{py}', '-u', '{programs / 'stubborn.py'}']",
        "kill_grace = 1",
        "",
        "[[routes]]",
        "path = '/noread'",
        "handler = 'exec'",
        f"command = ['{py}', '-u', '{programs / 'noread.py'}']",
        "max_message_size = 65536",
        # While the program does not read, wsmux does not read the client
        # either, and so notices a client gone only when it next writes:
        # the keepalive ping.
        "ping_interval = 1",
        "ping_timeout = 1",
        "",
        "[[routes]]",
        "path = '/cat'",
        "handler = 'exec'",
        "command = ['cat']",
        "mode = 'binary'",
    ]
    config = tmp_path / "wsmux.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def test_lines_environment_exit_statuses_and_stderr(start_server, tmp_path, programs):
    server = start_server("--config", str(exec_config(tmp_path, programs)))
    spoof = {"X-Token": "t0k", "X_Token": "spoofed", "Proxy": "http://attacker.example:8080"}
    with connect(server.url("/count/lobby?q=1"), additional_headers=spoof) as ws:
        assert ws.recv(timeout=10) == "hello lobby from 127.0.0.1"
        ws.send("3")
        assert [ws.recv(timeout=5) for _ in range(3)] == ["1", "2", "3"]
        ws.send("env")
        env = dict(ws.recv(timeout=5).split("=", 1) for _ in range(10))
        # An underscored name does not stand in for the dashed one, and a
        # client's Proxy header never becomes HTTP_PROXY ("httpoxy").
        assert env["HTTP_PROXY"] == ""
        assert env["PATH_INFO"] == "/count/lobby" and env["QUERY_STRING"] == "q=1"
        assert env["HTTP_X_TOKEN"] == "t0k" and env["HTTPS"] == "off"
        assert env["SERVER_PORT"] == str(server.port) and env["UNIQUE_ID"].isdigit()
        assert env["SECRET"] == "from the config"
        assert env["SERVER_NAME"] == "127.0.0.1" and env["CWD"] == str(tmp_path)
        ws.send("err")
        ws.send("1")
        assert ws.recv(timeout=5) == "1"
        ws.send("exit")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1000
    # Tagged with the route and the connection.
    assert wait_for(lambda: re.search(r"route /count/\{name\} conn=\d+ stderr: a line on stderr",
                                      server.log()))  # fmt: skip
    with connect(server.url("/count/x")) as ws:
        ws.recv(timeout=10)
        ws.send("fail")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert (ws.close_code, ws.close_reason) == (1011, "the program exited with status 3")
    # What the route refuses: a newline inside a message, a binary message.
    for send, code in (("two\nlines", 1008), (b"\x00", 1003)):
        with connect(server.url("/count/x")) as ws:
            ws.recv(timeout=10)
            ws.send(send)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            assert ws.close_code == code
    assert wait_for(lambda: not processes_with(str(programs)))


def test_binary_mode_with_cat(start_server, tmp_path, programs):
    server = start_server("--config", str(exec_config(tmp_path, programs)))
    with connect(server.url("/cat")) as ws:
        for payload in (b"\x00\x01\x02", bytes(range(256)) * 100):
            ws.send(payload)
            got = b""
            while len(got) < len(payload):
                got += ws.recv(timeout=5)
            assert got == payload


def test_a_cap_on_processes_and_none_left_after_200_cycles(start_server, tmp_path, programs):
    server = start_server("--config", str(exec_config(tmp_path, programs, max_processes=2)))
    with connect(server.url("/count/a")) as a, connect(server.url("/count/b")) as b:
        a.recv(timeout=10), b.recv(timeout=10)
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url("/count/c"))
        assert refused.value.response.status_code == 503
    # The cap counts programs until they have exited: a cycle may find
    # both places still taken for a moment (and says so with 503).
    busy = 0
    for i in range(200):
        for _ in range(100):
            try:
                ws = connect(server.url(f"/count/{i}"))
                break
            except InvalidStatus as e:
                assert e.response.status_code == 503
                busy += 1
                time.sleep(0.02)
        with ws:
            if i % 20 == 0:
                assert ws.recv(timeout=10) == f"hello {i} from 127.0.0.1"
    assert wait_for(lambda: not processes_with(str(programs)), timeout=20), processes_with(
        str(programs)
    )
    assert wait_for(lambda: not zombies_of(server.process.pid))  # every one reaped
    # The server counts a program out when its pipes have closed too, which
    # the reactor may see a moment after the reaping: the places come free
    # within a few turns.
    for _ in range(100):
        try:
            ws = connect(server.url("/count/after"))
            break
        except InvalidStatus as e:
            assert e.response.status_code == 503
            time.sleep(0.02)
    else:
        pytest.fail("the places never came free")
    with ws:
        assert ws.recv(timeout=10) == "hello after from 127.0.0.1"


def test_signals_reach_the_program_and_what_it_started(start_server, tmp_path, programs):
    server = start_server("--config", str(exec_config(tmp_path, programs)))
    # SIGTERM ignored: SIGKILL after the grace.
    with connect(server.url("/stubborn")) as ws:
        assert ws.recv(timeout=10) == "ready"
        [pid] = processes_with(str(programs / "stubborn.py"))
    started = time.monotonic()
    assert wait_for(lambda: gone(pid), timeout=10)
    assert time.monotonic() - started < 8
    # A process the program started goes with it.
    with connect(server.url("/count/x")) as ws:
        ws.recv(timeout=10)
        ws.send("child")
        grandchild = int(ws.recv(timeout=10).split()[1])
        assert not gone(grandchild)
    assert wait_for(lambda: gone(grandchild), timeout=10)


def test_backpressure_both_ways(start_server, tmp_path, programs):
    from tests.hostile.rawws import Peer, frame, rss_kib

    server = start_server("--config", str(exec_config(tmp_path, programs)))
    pid = server.process.pid
    # A program that floods a client that does not read.
    peer = Peer(server.port, rcvbuf=4096)
    peer.open("/count/flood")
    peer.read_frame()  # hello
    before = rss_kib(pid)
    peer.send(frame(b"flood"))
    time.sleep(1)  # unbounded, the server would buffer hundreds of MB meanwhile
    assert rss_kib(pid) - before < 16 * 1024
    assert peer.read_frame()[1] == b"x" * 1000  # and it is all still flowing
    assert "slow consumer" not in server.log()  # paused, not overflowing
    peer.close()
    # A client that floods a program that does not read.
    peer = Peer(server.port)
    peer.open("/noread")
    peer.read_frame()  # ready
    before = rss_kib(pid)
    message = frame(b"y" * 60000)
    sent = 0
    peer.sock.settimeout(0.5)
    try:
        while sent < 3000:  # 180 MB, were nothing to stop it
            peer.sock.sendall(message)
            sent += 1
    except (TimeoutError, OSError):
        pass
    assert sent < 3000  # TCP pushed back: the server stopped reading
    assert rss_kib(pid) - before < 32 * 1024
    peer.close()
    assert wait_for(lambda: not processes_with(str(programs)))
    # A program whose output was held back still ends with the server
    # (its pipe is read again to see its end).
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=10)


def test_stopping_wsmux_ends_every_program(start_server, tmp_path, programs):
    server = start_server("--config", str(exec_config(tmp_path, programs)))
    clients = [connect(server.url("/stubborn")) for _ in range(3)]
    for ws in clients:
        assert ws.recv(timeout=10) == "ready"
    assert len(processes_with(str(programs))) == 3
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    assert time.monotonic() - started < 15
    assert wait_for(lambda: not processes_with(str(programs)), timeout=5)
    for ws in clients:
        ws.close()
