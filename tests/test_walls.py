"""
Walls between wsmux's parts: what importing wsmux does (and does not do),
which modules may import which, and a route served on the asyncio reactor
installed after wsmux was imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WSMUX = ROOT / "wsmux"

# The connection machinery: none of it reaches for the process's set-up.
CORE = ["routing", "factory", "connection", "events", "protocol", "handlers", "site", "channels", "streaming", "limits",
        "_paths", "_upgrades", "_endpoint", "_takeover", "_writes", "_frames", "_responses",
        "_compat", "_compat_twisted", "_compat_pyopenssl", "_compat_autobahn", "_compat_websockets"]  # fmt: skip
SET_UP = [
    "wsmux._twistd",
    "wsmux.tap",
    "wsmux.config",
    "wsmux.service",
    "wsmux.tls",
    "wsmux.workers",
]


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_importing_wsmux_installs_no_reactor_and_loads_no_set_up():
    modules = ", ".join(f"wsmux.{name}" for name in CORE)
    out = run(
        f"import sys, wsmux, wsmux.testing, {modules}\n"
        "unwanted = ['twisted.internet.reactor', 'txredisapi', 'twisted.scripts.twistd',\n"
        f"            'twisted.application.app', *{SET_UP!r}]\n"
        "print([name for name in unwanted if name in sys.modules])"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_module_of_wsmux_installs_a_reactor_or_loads_redis():
    # Every module, the set-up ones too: a .tac or a script may import
    # wsmux.service before it installs the asyncio reactor.
    names = sorted(f"wsmux.{path.stem}" for path in WSMUX.glob("*.py") if path.stem != "__init__")
    out = run(
        f"import sys, {', '.join(names)}\n"
        "print([n for n in ('twisted.internet.reactor', 'txredisapi') if n in sys.modules])"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_lazy_names_are_the_public_ones():
    out = run("import wsmux; print(wsmux.Settings.__module__, wsmux.make_service.__module__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["wsmux.config", "wsmux.service"]


def imports_of(path: Path) -> set[str]:
    # Every wsmux module a module imports, at its top level or inside
    # functions (not those for type checking only: they never run).
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wsmux"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("wsmux"))
    return found


def test_the_core_never_imports_the_set_up():
    for name in CORE:
        reached = imports_of(WSMUX / f"{name}.py") & set(SET_UP)
        assert not reached, f"wsmux.{name} imports {sorted(reached)}"


def test_only_the_service_and_the_supervisor_build_tls_contexts():
    for path in WSMUX.glob("*.py"):
        if path.stem in ("service", "workers", "tls"):
            continue
        text = path.read_text()
        assert "SniContextMap(" not in text and "tls_factory(" not in text, path.name


def test_no_import_cycle_between_modules():
    graph = {
        f"wsmux.{path.stem}": imports_of(path) - {f"wsmux.{path.stem}"}
        for path in WSMUX.glob("*.py")
        if path.stem != "__init__"
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                if reaches(nxt, goal, seen):
                    return True
        return False

    cycles = sorted(name for name in graph if reaches(name, name, set()))
    assert not cycles, f"modules in an import cycle: {cycles}"


def test_a_route_serves_on_the_asyncio_reactor_installed_after_import():
    out = run(
        """
import threading
import wsmux
from wsmux import EchoHandler, Route, RouteTree, WebSocketSite
from twisted.internet import asyncioreactor
asyncioreactor.install()
from twisted.internet import reactor
from websockets.sync.client import connect

site = WebSocketSite(RouteTree([Route("/echo", EchoHandler)]))
port = reactor.listenTCP(0, site, interface="127.0.0.1")
answers = []

def client():
    try:
        with connect(f"ws://127.0.0.1:{port.getHost().port}/echo", open_timeout=10) as ws:
            ws.send("over asyncio")
            answers.append(ws.recv(timeout=10))
    finally:
        reactor.callFromThread(reactor.stop)

reactor.callWhenRunning(threading.Thread(target=client, daemon=True).start)
reactor.callLater(30, reactor.stop)
reactor.run()
print(type(reactor).__name__, answers)
"""
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "AsyncioSelectorReactor ['over asyncio']"
