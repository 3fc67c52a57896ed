"""
The canary for the seam (L{wsmux._compat}): every internal of Twisted,
Autobahn and txaio that wsmux touches still looks as wsmux expects on the
installed versions, and no module outside the seam touches one.

When a test here fails after an upgrade, wsmux still works (it takes the
public path for that internal and logs a line saying so); the message
says which internal changed and where to look.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import twisted

from tests.twistd_process import environ_without, python_process
from wsmux import _compat

_compat.declare_all()

ROOT = Path(__file__).resolve().parent.parent
SEAM = {"_compat.py", *(f"{name.split('.')[1]}.py" for name in _compat.MODULES)}

# Every internal, by the name the seam gives it.
EXPECTED = [
    "pyopenssl.direct_calls",
    "twisted.one_pass_head",
    "twisted.direct_send",
    "twisted.tls_direct_write",
    "twisted.tls_whole_reads",
    "twisted.tls_make_connection",
    "twisted.slotted_transports",
    "twisted.log_observers",
    "twisted.log_context",
    "twisted.http_buffer",
    "websockets.c_masker",
    "autobahn.lean_protocol",
    "autobahn.direct_handshake",
    "autobahn.shared_events",
    "autobahn.connection_slots",
    "autobahn.lazy_pformat",
    "autobahn.fast_frames",
    "autobahn.nvx_masker",
    "autobahn.relay_client",
    "autobahn.fail_connection",
    "autobahn.per_message_compress",
    "http2.extended_connect",
]


def test_the_seam_lists_every_internal():
    assert list(_compat.INTERNALS) == EXPECTED
    for internal in _compat.INTERNALS.values():
        assert internal.touches and internal.why and internal.checked and internal.fallback


# Internals an older supported version lacks: the release that brought them.
SINCE = {"twisted.one_pass_head": (twisted, (24, 10))}


def version_of(module) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", module.__version__)[:2])


@pytest.mark.parametrize("name", EXPECTED)
def test_each_internal_still_looks_as_expected(name):
    # The check itself, whatever WSMUX_PUBLIC_PATH says for this run.
    internal = _compat.INTERNALS[name]
    problem = internal.check()
    if name in SINCE and version_of(SINCE[name][0]) < SINCE[name][1]:
        # Not there yet in this release: the check must say so, and wsmux
        # takes the public path.
        assert problem is not None and not internal.enabled
        return
    assert problem is None, (
        f"{name} changed in the installed version ({problem}). wsmux now takes its "
        f"public path ({internal.fallback}); see what it touches ({internal.touches}) "
        f"in wsmux/_compat_{name.split('.')[0]}.py"
    )


def private_tokens() -> set[str]:
    tokens: set[str] = set()
    for internal in _compat.INTERNALS.values():
        for text in internal.touches:
            tokens.update(re.findall(r"\b_[A-Za-z]\w+", text))
    return tokens


def test_no_module_outside_the_seam_touches_an_internal():
    tokens = private_tokens()
    assert {"_dataBuffer", "_tempDataLen", "_perMessageCompress", "_fail_connection"} <= tokens
    leaks = []
    for path in sorted((ROOT / "wsmux").glob("*.py")):
        if path.name in SEAM:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for token in tokens:
                if re.search(rf"[.\s]{token}\b", line):
                    leaks.append(f"wsmux/{path.name}:{number}: {token}")
    assert not leaks, "private names outside the seam:\n" + "\n".join(leaks)


def test_a_failed_check_takes_the_public_path_and_says_so():
    # A fresh interpreter where one internal is gone: wsmux logs one line
    # naming it and serves without it.
    code = """
import sys
from twisted.logger import globalLogPublisher
lines = []
globalLogPublisher.addObserver(lambda e: lines.append(e))
from twisted.internet import abstract
del abstract.FileDescriptor.dataBuffer
from twisted.logger import formatEvent
from wsmux import _compat
_compat.declare_all()
assert not _compat.enabled("twisted.direct_send")
assert _compat.enabled("autobahn.lean_protocol")
said = [formatEvent(e) for e in lines if "direct_send" in formatEvent(e)]
print(said[0])
"""
    out = python_process(code, environ_without("WSMUX_PUBLIC_PATH"), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert "not using twisted.direct_send" in line
    assert "FileDescriptor has no dataBuffer" in line
    assert "writes go through the transport's write" in line


def wsmux_private_names() -> set[str]:
    # Every underscore name wsmux itself defines: attributes it sets, class
    # attributes, functions and methods.
    names: set[str] = set()
    for path in (ROOT / "wsmux").glob("*.py"):
        text = path.read_text()
        names.update(re.findall(r"\.(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=[^=]", text))
        names.update(re.findall(r"^\s*(_[A-Za-z]\w*)\s*[:=]", text, re.M))
        names.update(re.findall(r"def (_[A-Za-z]\w*)", text))
        names.update(re.findall(r"class (_[A-Za-z]\w*)", text))
        names.update(re.findall(r"\[[\"'](_[A-Za-z]\w*)[\"']\]\s*=", text))
        names.add(path.stem)  # its private modules
    return names


# The standard library's documented underscore names wsmux uses.
DOCUMENTED = {"_exit"}  # os._exit


def test_outside_the_seam_every_private_name_read_is_wsmux_own():
    # A private name wsmux reads outside the seam, by attribute or by
    # getattr, is one wsmux defines itself (else it is another package's,
    # and belongs in the seam).
    own = wsmux_private_names() | DOCUMENTED
    foreign = []
    for path in sorted((ROOT / "wsmux").glob("*.py")):
        if path.name in SEAM:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            used = re.findall(r"\.(_[A-Za-z]\w*)", code)
            used += re.findall(r"getattr\([^,]+,\s*[\"'](_[A-Za-z]\w*)", code)
            foreign += [f"wsmux/{path.name}:{number}: {name}" for name in used if name not in own]
    assert not foreign, "private names of other packages outside the seam:\n" + "\n".join(foreign)


def test_the_environment_switches_every_internal_off():
    code = "from wsmux import _compat\n" \
        "print(sorted(n for n, i in _compat.declare_all().items() if i.enabled))"  # fmt: skip
    out = python_process(code, {"WSMUX_PUBLIC_PATH": "1", "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_versions_checked_are_said():
    # The seam's modules name the versions they were checked against; the
    # installed Twisted is one a matrix run covers (tox.ini).
    for name in _compat.MODULES:
        assert "Checked against" in (sys.modules[name].__doc__ or "")
    assert twisted.__version__


def test_every_seam_module_is_listed():
    # A new wsmux/_compat_*.py is one declare_all imports (and the checks
    # above read as the seam).
    found = {path.name for path in (ROOT / "wsmux").glob("_compat*.py")}
    assert found == SEAM


def test_autobahn_timings_still_format_after_connections():
    # autobahn.lazy_pformat replaces Autobahn's pformat only while a
    # connection is set up; its other users (Timings) get a str as before.
    import pprint

    from autobahn.websocket import protocol as ws
    from autobahn.websocket.protocol import Timings

    from wsmux import EchoHandler, Route, RouteTree
    from wsmux.testing import connect

    with connect(RouteTree([Route("/echo", EchoHandler)]), "/echo") as conn:
        assert conn.client.opened
    assert ws.pformat is pprint.pformat
    timings = Timings()
    timings.track("opened")
    assert "opened" in str(timings)


@pytest.mark.uses_internal("autobahn.shared_events")
def test_connections_share_their_event_names_until_one_listens():
    from wsmux import EchoHandler, Route, RouteTree
    from wsmux.testing import connect

    tree = RouteTree([Route("/echo", EchoHandler)])
    one, two = connect(tree, "/echo"), connect(tree, "/echo")
    assert one.server._valid_events is two.server._valid_events
    assert "_results" not in vars(one.server)


def test_a_listener_added_to_a_connection_hears_its_messages():
    # Autobahn's observable events (ObservableMixin.on) on either path.
    from wsmux import EchoHandler, Route, RouteTree
    from wsmux.testing import connect

    tree = RouteTree([Route("/echo", EchoHandler)])
    conn = connect(tree, "/echo")
    heard = []
    conn.server.on("message", lambda payload, is_binary: heard.append((payload, is_binary)))
    conn.client.sendMessage(b"hello")
    conn.flush()
    assert heard == [(b"hello", False)]
    assert conn.client.messages == [(b"hello", False)]
    with pytest.raises(RuntimeError):  # not one of the events: Autobahn's own check
        conn.server.on("nonsense", lambda: None)
