"""
Worker processes: one supervising process opens the listening sockets and
starts N workers that serve connections from them.

Each TCP port is opened once per worker with C{SO_REUSEPORT}, so the kernel
spreads new connections evenly over the workers (one shared socket would
let whichever worker wakes first take a whole burst).  The supervisor keeps
every socket open, hands worker I its sockets as inherited descriptors
(adopted with C{reactor.adoptStreamPort}), replaces a worker that dies, and
passes SIGTERM (graceful drain) and SIGHUP (certificate reload) on to all of
them.  Channels are local to each worker unless Redis is configured.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol

from wsmux.logs import log

# The kinds of port a worker serves, in the order of --worker-sockets.
KINDS = ("plain", "tls", "shared")
_SPLIT = re.compile(r"(?<!\\):")


@dataclass(frozen=True)
class TcpAddress:
    """
    Where a TCP port listens.
    """

    host: str
    port: int
    backlog: int = 50

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


def tcp_address(description: str) -> TcpAddress:
    """
    The address of a C{--port} value that workers can share: a port number,
    or a C{tcp:} / C{tcp6:} endpoint description.

    @raise ValueError: for any other kind of endpoint.
    """
    from wsmux.config import port_description

    parts = [p.replace("\\:", ":") for p in _SPLIT.split(port_description(description))]
    kind, rest = parts[0], parts[1:]
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"{description!r}: worker processes share TCP ports only")
    positional = [p for p in rest if "=" not in p]
    named = dict(p.split("=", 1) for p in rest if "=" in p)
    port = int(named.get("port") or positional[0])
    host = named.get("interface") or ("::" if kind == "tcp6" else "0.0.0.0")
    return TcpAddress(host, port, int(named.get("backlog", 50)))


def open_socket(address: TcpAddress) -> socket.socket:
    """
    A listening socket for C{address} that other sockets may share
    (C{SO_REUSEPORT}).
    """
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if address.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address.host, address.port))
    sock.listen(address.backlog)
    sock.set_inheritable(True)
    sock.setblocking(False)  # adoptStreamPort accepts until EAGAIN
    return sock


def clean_exit_after_sigterm(reactor: Any) -> None:
    """
    Let twistd exit 0 after a SIGTERM whose graceful shutdown completed.

    twistd re-raises the signal that stopped it, so a SIGTERM stop exits
    with status 143; a drain that ran to its end is a clean stop.
    (C{_exitSignal} is how twistd learns the signal; there is no public API.)
    """
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None


def resolve_workers(value: str) -> int:
    """
    C{--workers}: a count, or C{auto} for one per core.

    @raise ValueError: for anything else.
    """
    if value == "auto":
        return os.cpu_count() or 1
    count = int(value)
    if count < 1:
        raise ValueError("--workers must be at least 1 (or auto)")
    return count


def worker_argv(argv: list[str]) -> list[str]:
    """
    The twistd command line of a worker: the supervisor's, in the
    foreground, without C{--workers} and without a pid file.
    """
    try:
        at = argv.index("wsmux")
    except ValueError:
        raise ValueError("cannot find the wsmux subcommand in the command line") from None
    twistd_args = [a for a in argv[1:at] if a not in ("-n", "--nodaemon")]
    twistd_args = [a for a in twistd_args if not a.startswith("--pidfile")]
    ours: list[str] = []
    skip = False
    for arg in argv[at + 1 :]:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        ours.append(arg)
    return ["-n", "--pidfile=", *twistd_args, "wsmux", *ours]


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.supervisor._ended(self, reason)


class WorkerSupervisor(Service):
    """
    Starts, watches and stops the worker processes.

    @param count: how many workers.
    @param ports: C{(kind, --port value)} pairs, kind one of L{KINDS}.
    @param argv: the worker command line after the interpreter.
    @param drain_timeout: how long workers may take to drain on SIGTERM.
    """

    def __init__(
        self,
        count: int,
        ports: list[tuple[str, str]],
        argv: list[str],
        drain_timeout: float = 10.0,
        reactor: Any = None,
    ) -> None:
        self.count = count
        self.ports = ports
        self.argv = argv
        self.drain_timeout = drain_timeout
        self.reactor = reactor
        self.sockets: list[list[tuple[str, socket.socket]]] = []
        self.workers: dict[int, Any] = {}
        self.stopping = False
        self._previous_hup: Any = None

    def _reactor(self) -> Any:
        if self.reactor is None:
            from twisted.internet import reactor

            return reactor
        return self.reactor

    def startService(self) -> None:
        super().startService()
        addresses = [(kind, tcp_address(port)) for kind, port in self.ports]
        self.sockets = [
            [(kind, open_socket(address)) for kind, address in addresses] for _ in range(self.count)
        ]
        log.info(
            "supervisor pid {pid}: starting {n} worker(s) on {ports}",
            pid=os.getpid(),
            n=self.count,
            ports=", ".join(f"{k} {p}" for k, p in self.ports),
        )
        for index in range(self.count):
            self._spawn(index)
        try:
            self._previous_hup = signal.signal(
                signal.SIGHUP,
                lambda *_: self._reactor().callFromThread(self._signal_all, signal.SIGHUP),
            )
        except ValueError:  # not the main thread
            self._previous_hup = None

    def _spawn(self, index: int) -> None:
        fds: dict[int, Any] = {0: 0, 1: 1, 2: 2}
        described = []
        for offset, (kind, sock) in enumerate(self.sockets[index]):
            child_fd = 3 + offset
            fds[child_fd] = sock.fileno()
            described.append(f"{kind}:{child_fd}")
        args = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            *self.argv,
            "--worker-sockets",
            ",".join(described),
        ]
        worker = _Worker(self, index)
        transport = self._reactor().spawnProcess(
            worker, sys.executable, args, env=os.environ.copy(), childFDs=fds
        )
        self.workers[index] = (worker, transport)
        log.info("started worker {i} (pid {pid})", i=index, pid=transport.pid)

    def _ended(self, worker: _Worker, reason: Any) -> None:
        if self.stopping:
            return
        code = getattr(reason.value, "exitCode", None)
        log.warn(
            "worker {i} exited ({why}); starting a new one",
            i=worker.index,
            why=f"exit code {code}" if code is not None else reason.getErrorMessage(),
        )
        self._reactor().callLater(0.5, self._spawn, worker.index)

    def _signal_all(self, signum: int) -> None:
        for _, transport in self.workers.values():
            try:
                transport.signalProcess(signum)
            except Exception:  # already gone
                pass

    def stopService(self) -> Any:
        super().stopService()
        self.stopping = True
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
        ended = [worker.ended for worker, _ in self.workers.values()]
        self._signal_all(signal.SIGTERM)
        reactor = self._reactor()
        kill = reactor.callLater(self.drain_timeout + 5, self._signal_all, signal.SIGKILL)
        done = defer.DeferredList(ended, consumeErrors=True)

        def finished(_: object) -> None:
            if kill.active():
                kill.cancel()
            for row in self.sockets:
                for _, sock in row:
                    sock.close()
            log.info("all workers stopped")
            clean_exit_after_sigterm(reactor)

        return done.addBoth(finished)


def parse_worker_sockets(value: str) -> list[tuple[str, int]]:
    """
    C{--worker-sockets plain:3,tls:4}: the sockets a worker adopts.
    """
    out = []
    for item in value.split(","):
        kind, _, fd = item.partition(":")
        if kind not in KINDS or not fd.isdigit():
            raise ValueError(f"bad --worker-sockets item {item!r}")
        out.append((kind, int(fd)))
    return out


class AdoptedPort(Service):
    """
    Serves C{factory} on an inherited listening socket.
    """

    def __init__(self, fd: int, factory: Any, reactor: Any = None) -> None:
        self.fd = fd
        self.factory = factory
        self.reactor = reactor
        self.port: Optional[Any] = None

    def startService(self) -> None:
        super().startService()
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        sock = socket.socket(fileno=self.fd)
        family = sock.family
        sock.detach()
        self.port = reactor.adoptStreamPort(self.fd, family, self.factory)
        os.close(self.fd)  # the port holds its own duplicate

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()
        return None
