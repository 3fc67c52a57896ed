"""
Process-bridge routes (C{handler = "exec"}): one child process per
connection, its standard output to the client and the client's messages to
its standard input, as websocketd does.

    [[routes]]
    path = "/tail/{file}"
    handler = "exec"
    command = ["/usr/bin/python3", "-u", "tail.py"]   # an argv list: never a shell
    mode = "lines"                                    # or "binary"
    max_processes = 16

What caps it: C{max_processes} per route (503 past it); a line is at most
the route's C{max_message_size} (1009 past it); stderr is logged a line at a
time, each cut at 4 KiB.  Whom it trusts: the command is the operator's;
everything from the client reaches the child only as data (its stdin, and
environment variables that cannot hold a NUL).  What ends it: the child
exiting closes the connection (1000 for status 0, 1011 otherwise); the
connection ending closes the child's stdin and sends SIGTERM to its process
group, then SIGKILL after C{kill_grace} seconds; stopping wsmux does the same
for every child and waits for them.  Each child leads a session of its own
(C{setsid}), so the signals reach whatever it started too (unless that
starts a session of its own, as a daemon does).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import Any, Optional

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from wsmux.connection import cookie_header
from wsmux.logs import log

EXEC_KEYS = frozenset({"command", "mode", "max_processes", "cwd", "env", "pass_env", "kill_grace"})
MODES = ("lines", "binary")
STDERR_LINE = 4096


@dataclass(frozen=True)
class ExecSpec:
    """
    What an exec route runs.

    @ivar command: the argv list (the first item is the program).
    @ivar mode: C{lines} (a line of output is a text message; a message is
        a line of input) or C{binary} (chunks both ways as binary messages).
    @ivar max_processes: children this route may run at once (0: no cap).
    @ivar cwd: the children's working directory (wsmux's when empty).
    @ivar env: variables set for the children.
    @ivar pass_env: names of wsmux's own variables passed through.
    @ivar kill_grace: seconds between SIGTERM and SIGKILL.
    """

    command: tuple[str, ...]
    mode: str = "lines"
    max_processes: int = 16
    cwd: str = ""
    env: tuple[tuple[str, str], ...] = ()
    pass_env: tuple[str, ...] = ("PATH", "LANG", "TZ")
    kill_grace: float = 5.0

    @classmethod
    def from_table(cls, table: dict[str, Any], base: str = "") -> ExecSpec:
        """
        Check the exec keys of a route.

        @param base: the directory a relative C{cwd} is taken from.
        @raise ValueError: naming the key and what it must be.
        """
        unknown = set(table) - EXEC_KEYS
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} for an exec route")
        command = table.get("command")
        if isinstance(command, str):
            raise ValueError("command must be a list of strings (an argv list; no shell is used)")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) and a and "\0" not in a for a in command)
        ):
            raise ValueError("command is required: a non-empty list of strings")
        mode = table.get("mode", "lines")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        max_processes = table.get("max_processes", 16)
        if (
            not isinstance(max_processes, int)
            or isinstance(max_processes, bool)
            or max_processes < 0
        ):
            raise ValueError(f"max_processes must be a whole number, got {max_processes!r}")
        cwd = table.get("cwd", "")
        if not isinstance(cwd, str):
            raise ValueError("cwd must be a directory name")
        if cwd and base and not os.path.isabs(cwd):
            cwd = os.path.join(base, cwd)
        if cwd and not os.path.isdir(cwd):
            raise ValueError(f"cwd {cwd!r} is not a directory")
        env = table.get("env", {})
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and k and "=" not in k and "\0" not in k
            and isinstance(v, str) and "\0" not in v
            for k, v in env.items()
        ):  # fmt: skip
            raise ValueError('env must be a table of strings (NAME = "value")')
        pass_env = table.get("pass_env", list(cls.pass_env))
        if not isinstance(pass_env, list) or not all(isinstance(n, str) for n in pass_env):
            raise ValueError("pass_env must be a list of variable names")
        grace = table.get("kill_grace", 5.0)
        if not isinstance(grace, (int, float)) or isinstance(grace, bool) or not 0 <= grace <= 300:
            raise ValueError(f"kill_grace must be 0 to 300 seconds, got {grace!r}")
        program = command[0]
        where = cwd or os.getcwd()
        found = os.path.join(where, program) if os.sep in program else shutil.which(program)
        if not found or not os.access(found, os.X_OK) or os.path.isdir(found):
            raise ValueError(f"command {program!r} is not an executable program")
        return cls(
            command=tuple(command),
            mode=mode,
            max_processes=max_processes,
            cwd=cwd,
            env=tuple(sorted(env.items())),
            pass_env=tuple(pass_env),
            kill_grace=float(grace),
        )

    @classmethod
    def from_arg(cls, text: str) -> ExecSpec:
        """
        C{--route PATH=exec:COMMAND ARGS}: the command split as a shell
        would split words (no shell runs it).

        @raise ValueError: saying what is wrong.
        """
        try:
            argv = shlex.split(text)
        except ValueError as e:
            raise ValueError(f"exec command {text!r}: {e}") from None
        return cls.from_table({"command": argv})


# -- the running children, for stopping them all ---------------------------------

_children: set[_Child] = set()


class ChildrenService(Service):
    """
    On stop, end every exec child (SIGTERM, then SIGKILL after its grace)
    and wait until they have all exited.
    """

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        waits = [child.terminate() for child in list(_children)]
        if not waits:
            return succeed(None)
        return DeferredList(waits)  # type: ignore[return-value]


# -- the bridge ---------------------------------------------------------------------


@implementer(IPushProducer)
class _Child(ProcessProtocol):
    # The child of one connection.

    def __init__(self, handler: ExecHandler, spec: ExecSpec, reactor: Any) -> None:
        self.handler = handler
        self.spec = spec
        self.reactor = reactor
        self.pending = b""  # a line not ended yet
        self.errors = b""
        self.waiters: list[Deferred[None]] = []
        self.done = False
        self.kill_call: Any = None
        self.pgid: Optional[int] = None
        self.status: Optional[str] = None
        self.reading: Optional[_ClientReading] = None

    # process events

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.pgid = transport.pid if _SETSID else None
        # The client's messages go to stdin: a child that does not read
        # pauses reading from the client.
        self.reading = _ClientReading(self.handler)
        transport.registerProducer(self.reading, True)

    def outReceived(self, data: bytes) -> None:
        handler: Any = self.handler
        if handler.state != WebSocketServerProtocol.STATE_OPEN or self.kill_call is not None:
            return
        if self.spec.mode == "binary":
            handler.sendMessage(data, True)
            return
        data = self.pending + data
        lines = data.split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            handler.sendMessage(_text(line), False)
        limit = handler.maxMessagePayloadSize or 1024 * 1024
        if len(self.pending) > limit:
            self.pending = b""
            handler.wsmux.close(1009, f"the program wrote a line over {limit} bytes")

    def errReceived(self, data: bytes) -> None:
        data = self.errors + data
        lines = data.split(b"\n")
        self.errors = lines.pop()
        if len(self.errors) > STDERR_LINE:
            lines.append(self.errors)
            self.errors = b""
        for line in lines:
            self._log_stderr(line)

    def _log_stderr(self, line: bytes) -> None:
        connection = self.handler.wsmux
        log.info(
            "route {route} conn={conn} stderr: {line}",
            route=connection.policy.route,
            conn=connection.id,
            line=line[:STDERR_LINE].decode("utf-8", "replace").rstrip("\r"),
        )

    def processEnded(self, reason: Failure) -> None:
        self.done = True
        _children.discard(self)
        if self.kill_call is not None and self.kill_call.active():
            self.kill_call.cancel()
        self._kill_group(signal.SIGKILL)  # whatever it left behind
        if self.errors:
            self._log_stderr(self.errors)
            self.errors = b""
        handler = self.handler
        value: Any = reason.value
        if isinstance(value, ProcessDone):
            code, status = 1000, "the program exited"
        elif getattr(value, "signal", None) is not None:
            code, status = 1011, f"the program was killed by signal {value.signal}"
        else:
            code, status = 1011, f"the program exited with status {getattr(value, 'exitCode', '?')}"
        self.status = status
        connection = handler.wsmux
        if self.reading is not None:
            connection.release_reading(self.reading)  # to read the client's close
        log.info(
            "route {route} conn={conn}: {status}",
            route=connection.policy.route,
            conn=connection.id,
            status=status,
        )
        if handler.state == WebSocketServerProtocol.STATE_OPEN:
            if self.pending and self.spec.mode == "lines":
                handler.sendMessage(_text(self.pending), False)  # the last line, unended
            self.pending = b""
            connection.close(code, status)
        handler._wsmux_child_ended()
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # ending it

    def terminate(self) -> Deferred[None]:
        """
        Close stdin, SIGTERM, and SIGKILL after the grace; fires once the
        child has exited.
        """
        if self.done:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self.waiters.append(waiter)
        if self.kill_call is None:
            transport: Any = self.transport
            try:
                transport.closeStdin()
                # Read its output again (and drop it): Twisted reports the
                # end only once it has read the end of every pipe.
                transport.resumeProducing()
            except Exception:
                pass
            self._signal(signal.SIGTERM)
            self.kill_call = self.reactor.callLater(
                self.spec.kill_grace, self._signal, signal.SIGKILL
            )
        return waiter

    def _signal(self, number: int) -> None:
        if self.done:
            return
        if not self._kill_group(number):
            try:
                self.transport.signalProcess(number)  # type: ignore[union-attr]
            except Exception:
                pass

    def _kill_group(self, number: int) -> bool:
        if self.pgid is None:
            return False
        try:
            os.killpg(self.pgid, number)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    # IPushProducer, for the connection: a client that does not read
    # pauses reading the child's output.

    def pauseProducing(self) -> None:
        if not self.done:
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        if not self.done:
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self.terminate()


@implementer(IPushProducer)
class _ClientReading:
    # The client's side as the producer of the child's stdin.

    def __init__(self, handler: ExecHandler) -> None:
        self.handler = handler

    def pauseProducing(self) -> None:
        self.handler.wsmux.hold_reading(self)

    def resumeProducing(self) -> None:
        self.handler.wsmux.release_reading(self)

    def stopProducing(self) -> None:
        self.handler.wsmux.release_reading(self)


def _text(line: bytes) -> bytes:
    # A line as a text message: without its CR, and valid UTF-8 whatever
    # the program wrote.
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        line = line.decode("utf-8", "replace").encode("utf-8")
    return line


_SETSID = shutil.which("setsid")
# Without the setsid program: a Python that starts a session and becomes
# the command.
_TRAMPOLINE = (
    sys.executable,
    "-c",
    "import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])",
)


class ExecHandler(WebSocketServerProtocol):
    """
    The handler of an exec route (see the module docstring).  A route's
    class is made by L{exec_handler}.
    """

    spec: ExecSpec
    # Children running (or about to) for this route.
    running: list[int]
    wsmux: Any  # the connection object, set by wsmux on every handler

    _wsmux_child: Optional[_Child] = None
    _wsmux_counted = False

    def onConnect(self, request: Any) -> Any:
        cap = self.spec.max_processes
        if cap and self.running[0] >= cap:
            raise ConnectionDeny(503, f"this route runs at most {cap} programs at once")
        self.running[0] += 1
        self._wsmux_counted = True
        return None

    def onOpen(self) -> None:
        from twisted.internet import reactor

        child = _Child(self, self.spec, reactor)
        argv = list(self.spec.command)
        if _SETSID:
            program, argv = _SETSID, [_SETSID, *argv]
        else:
            program, argv = _TRAMPOLINE[0], [*_TRAMPOLINE, *argv]
        try:
            reactor.spawnProcess(  # type: ignore[attr-defined]
                child, program, argv, env=self._wsmux_environment(), path=self.spec.cwd or None
            )
        except Exception:
            self.wsmux.handler_failed("starting the program")
            return
        self._wsmux_child = child
        _children.add(child)
        self.wsmux.register_producer(child)

    def _wsmux_environment(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in self.spec.pass_env if name in os.environ}
        env.update(self.spec.env)
        connection = self.wsmux
        request = self.http_request_uri or ""
        path, _, query = request.partition("?")
        host = self.http_headers.get("host", "")
        peer = self.transport.getPeer() if self.transport is not None else None
        local = self.transport.getHost() if self.transport is not None else None
        cgi = {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": "wsmux",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": "GET",
            "REQUEST_URI": request,
            "SCRIPT_NAME": path,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_ADDR": connection.client_address or "",
            "REMOTE_PORT": str(getattr(peer, "port", "")),
            "SERVER_NAME": host.rsplit(":", 1)[0] if not host.endswith("]") else host,
            "SERVER_PORT": str(getattr(local, "port", "")),
            "HTTPS": "on" if connection.tls else "off",
            "UNIQUE_ID": str(connection.id),
        }
        for name, value in self.http_headers.items():
            # Letters, digits and dashes only: a name with an underscore
            # would stand in for the dashed one a front proxy sets.  Never
            # Proxy (as HTTP_PROXY it would redirect the program's own HTTP
            # client: "httpoxy").
            if not name.replace("-", "").isalnum() or name.lower() == "proxy":
                continue
            cgi["HTTP_" + name.upper().replace("-", "_")] = value
        if "HTTP_COOKIE" in cgi:
            cgi["HTTP_COOKIE"] = cookie_header(self)
        for name, value in connection.path_params.items():
            cgi["PARAM_" + name.upper()] = value
        env.update(cgi)
        return {k: v for k, v in env.items() if "\0" not in k + v}

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        child = self._wsmux_child
        if child is None or child.done:
            return
        if self.spec.mode == "lines":
            if isBinary:
                self.wsmux.close(1003, "this route takes text messages, one line each")
                return
            if b"\n" in payload:
                self.wsmux.close(1008, "a message may not contain a newline on this route")
                return
            payload += b"\n"
        child.transport.write(payload)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        child = self._wsmux_child
        if child is not None and not child.done:
            child.terminate()
        elif child is None:
            self._wsmux_child_ended()

    def _wsmux_child_ended(self) -> None:
        if self._wsmux_counted:
            self._wsmux_counted = False
            self.running[0] -= 1


def exec_handler(spec: ExecSpec, route: str) -> type:
    """
    The handler class of one exec route.
    """
    return type(
        "ExecHandler",
        (ExecHandler,),
        {"spec": spec, "running": [0], "__qualname__": f"ExecHandler[{route}]"},
    )


__all__ = ["ChildrenService", "ExecHandler", "ExecSpec", "exec_handler"]
