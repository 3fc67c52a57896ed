"""
Shared test plumbing: real twistd processes, and lines a test wants shown
in the final summary.
"""

import pytest

from tests.twistd_process import ROOT, Server, free_port

SUMMARY_LINES: list[str] = []


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "uses_internal(name): tests wsmux's use of another package's internal "
        "(wsmux._compat); skipped in a run where that internal is switched off",
    )


def pytest_collection_modifyitems(config, items):
    from wsmux import _compat

    _compat.declare_all()

    for item in items:
        for marker in item.iter_markers("uses_internal"):
            internal = _compat.INTERNALS[marker.args[0]]
            if not internal.enabled:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"{internal.name} is off in this run ({internal.problem}); "
                        f"its public path is what runs: {internal.fallback}"
                    )
                )


def pytest_terminal_summary(terminalreporter):
    if SUMMARY_LINES:
        terminalreporter.section("wsmux")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def txaio_loop_restored():
    """
    txaio's loop after each test is what it was before (wsmux.testing's
    helpers point it at a test's clock).
    """
    import txaio

    before = txaio.config.loop
    yield
    txaio.config.loop = before


@pytest.fixture
def start_server(tmp_path):
    """
    Start C{twistd -n wsmux} with extra arguments; stopped at teardown.
    """
    servers = []

    def start(*args, cwd=ROOT, plugin="wsmux"):
        # Port 0, the kernel's choice read back from --port-file, for
        # twistd wsmux (workers too); a .tac gets a free port.
        n = len(servers)
        port_file = None
        if plugin == "wsmux":
            port = 0
            port_file = tmp_path / f"ports{n}"
            head = [plugin, "--port", "tcp:0:interface=127.0.0.1", "--port-file", str(port_file)]
        else:
            port = free_port()
            head = [plugin, "--port", f"tcp:{port}:interface=127.0.0.1"] if plugin else []
        server = Server(
            [*head, *args], port, tmp_path / f"twistd{n}.log", cwd=cwd, port_file=port_file
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
