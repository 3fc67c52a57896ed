"""
Shared test plumbing: real twistd processes, and lines a test wants shown
in the final summary.
"""

import pytest

from tests.twistd_process import ROOT, Server, free_port

SUMMARY_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if SUMMARY_LINES:
        terminalreporter.section("wsmux")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)


@pytest.fixture
def start_server(tmp_path):
    """
    Start C{twistd -n wsmux} with extra arguments; stopped at teardown.
    """
    servers = []

    def start(*args, cwd=ROOT, plugin="wsmux"):
        port = free_port()
        n = len(servers)
        head = [plugin, "--port", f"tcp:{port}:interface=127.0.0.1"] if plugin else []
        server = Server([*head, *args], port, tmp_path / f"twistd{n}.log", cwd=cwd)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
