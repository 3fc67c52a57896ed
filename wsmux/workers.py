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

import atexit
import dataclasses
import os
import re
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import ProcessProtocol

from wsmux._compat_twisted import slot_port
from wsmux._portfile import port_line, remove_port_file, write_port_file
from wsmux.config import port_description
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


def on_hangup(callback: Callable[[], Any], reactor: Any) -> bool:
    """
    Call C{callback} in the reactor on every SIGHUP.

    @return: whether the handler is installed (not outside the main
        thread, where a test may run a service).
    """
    try:
        signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(callback))
    except ValueError:
        return False
    return True


class StopOnTerm(Service):
    """
    SIGTERM stops the reactor, and twistd then exits 0: a SIGTERM is the
    ordinary way to stop wsmux (systemd, Kubernetes), and its graceful
    drain is a clean stop.

    Twisted's own SIGTERM handler makes twistd re-raise the signal once the
    reactor has stopped (exit status 143); this handler, installed once the
    reactor runs (after Twisted's own), stops the reactor the same way
    without noting the signal.  SIGINT keeps Twisted's handler.
    """

    def __init__(self, reactor: Any = None) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        reactor.callWhenRunning(self._install, reactor)

    def _install(self, reactor: Any) -> None:
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            if stopping:
                # Twisted's reactor.stop would raise ReactorNotRunning (a
                # critical traceback in the log); the drain goes on, bounded
                # by its timeout.
                log.info("Received SIGTERM again: still shutting down.")
                return
            stopping = True
            log.info("Received SIGTERM, shutting down.")
            reactor.callFromThread(_stop_once, reactor)

        try:
            signal.signal(signal.SIGTERM, stop)
        except ValueError:  # not the main thread (a test running the service)
            pass


def _stop_once(reactor: Any) -> None:
    # Stopping already (SIGINT came first, or the application stopped it).
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def ignore_hangup(only_default: bool = False) -> None:
    """
    Ignore SIGHUP (C{systemctl reload}) from now on: when a service stops,
    rather than put back a default disposition that ends the process (a
    reload during the drain must not cut it short), and before the services
    start (C{only_default}: unless someone installed a handler already).
    """
    try:
        if not only_default or signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


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
    def __init__(self, supervisor: WorkerSupervisor, index: int, started: float) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = started
        self.retired = False
        self.terminated = False
        self.retire_call: Any = None
        self.pid: Optional[int] = None
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.supervisor._ended(self, reason)


# A worker that exits within this many seconds of starting failed quickly;
# its slot is restarted after a delay that doubles with each quick failure
# in a row (from RESTART_DELAY up to MAX_RESTART_DELAY), and given up after
# MAX_QUICK_FAILURES of them.
QUICK_FAILURE = 10.0
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
MAX_QUICK_FAILURES = 5


def restart_delay(quick_failures: int) -> float:
    """
    How long to wait before restarting a worker that failed quickly for
    the C{quick_failures}-th time in a row (0: it ran a while).
    """
    if quick_failures <= 0:
        return RESTART_DELAY
    return float(min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** (quick_failures - 1)))


def exit_status_after_stop(code: int) -> None:
    """
    Make the process exit with C{code} once twistd has finished stopping.

    twistd has no way to exit with a status of its own choosing; this
    runs last, after its clean-up (the pid file), as the interpreter exits.
    """

    def leave() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)

    atexit.register(leave)


class ConfigSnapshot:
    """
    The bytes of a settings file as the supervisor parsed them, for its
    workers to read: an anonymous in-memory file (C{memfd}) each worker
    inherits, or where there is none a private temporary file.  Nothing a
    temporary-file cleaner or an edit of the real file does can change what
    a worker is given.
    """

    def __init__(self, data: bytes) -> None:
        self.fd: Optional[int] = None
        self.path: Optional[str] = None
        memfd_create = getattr(os, "memfd_create", None)
        if memfd_create is not None:
            self.fd = memfd_create("wsmux-config", 0)
            os.write(self.fd, data)
        else:  # pragma: no cover - systems without memfd
            handle, self.path = tempfile.mkstemp(prefix="wsmux-config-", suffix=".toml")
            with os.fdopen(handle, "wb") as f:
                f.write(data)

    def here(self) -> str:
        """
        Where this process reads it.
        """
        return f"/proc/self/fd/{self.fd}" if self.fd is not None else str(self.path)

    def in_child(self, child_fd: int) -> str:
        """
        Where a child that inherits it as C{child_fd} reads it.
        """
        return f"/proc/self/fd/{child_fd}" if self.fd is not None else str(self.path)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        elif self.path is not None:  # pragma: no cover - systems without memfd
            _remove(self.path)
            self.path = None


# Seconds an old worker keeps accepting beside its replacement, on a reload,
# while the new one starts (both accept from the same socket).
RETIRE_DELAY = 2.0

# Seconds after its start before a worker is sent SIGHUP (one sent sooner
# waits until then).
FRESH = 2.0


class WorkerSupervisor(Service):
    """
    Starts, watches and stops the worker processes.

    Workers run the supervisor's configuration: the settings file is read
    once and each worker is given that copy (a snapshot), so a worker that
    is replaced never picks up an edit nobody asked for.  SIGHUP is how a
    new configuration is applied: the file is read again and checked; if
    it changed and is good, every worker is replaced by one running it (each
    old worker drains its clients with 1001); if it is unchanged, the
    workers reload their TLS certificates; if it is broken, the workers keep
    what they run and the supervisor says why.

    A worker that dies is restarted; one that keeps failing soon after it
    starts is restarted less and less often, and given up after
    L{MAX_QUICK_FAILURES} quick failures in a row.  Once stopping has begun
    nothing is restarted, and the supervisor stops only after every
    process it started has ended.

    @param count: how many workers.
    @param ports: C{(kind, --port value)} pairs, kind one of L{KINDS}.
    @param argv: the worker command line after the interpreter.
    @param drain_timeout: how long workers may take to drain on SIGTERM.
    @param config: the settings file's path and the bytes the supervisor
        parsed, if there is a settings file.
    @param check: called with a worker command line to check a new
        configuration; returns a description of its listening ports and
        worker count (to compare with the running one) or raises
        C{usage.UsageError} saying what is wrong.
    """

    def __init__(
        self,
        count: int,
        ports: list[tuple[str, str]],
        argv: list[str],
        drain_timeout: float = 10.0,
        reactor: Any = None,
        config: Optional[tuple[str, bytes]] = None,
        check: Optional[Callable[[list[str]], Any]] = None,
        port_file: Optional[str] = None,
    ) -> None:
        self.count = count
        self.port_file = port_file
        self.ports = ports
        self.argv = argv
        self.drain_timeout = drain_timeout
        self.reactor = reactor
        self.config = config
        self.check = check
        self.sockets: list[list[tuple[str, socket.socket]]] = []
        self.workers: dict[int, _Worker] = {}
        self.transports: dict[_Worker, Any] = {}
        self.quick_failures: dict[int, int] = {}
        self.given_up: set[int] = set()
        self.stopping = False
        self._restarts: dict[int, Any] = {}
        self._hup_installed = False
        self._snapshot: Optional[ConfigSnapshot] = None
        self._running_shape: Any = None

    def _reactor(self) -> Any:
        if self.reactor is None:
            from twisted.internet import reactor

            return reactor
        return self.reactor

    def startService(self) -> None:
        super().startService()
        addresses = [(kind, tcp_address(port)) for kind, port in self.ports]
        first = [(kind, open_socket(address)) for kind, address in addresses]
        # A port 0 is chosen by the system for the first worker's socket;
        # the others share the port it got.
        addresses = [
            (kind, dataclasses.replace(address, port=sock.getsockname()[1]))
            for (kind, address), (_, sock) in zip(addresses, first, strict=True)
        ]
        self.sockets = [first] + [
            [(kind, open_socket(address)) for kind, address in addresses]
            for _ in range(self.count - 1)
        ]
        if self.port_file:
            try:
                write_port_file(
                    self.port_file,
                    [port_line(kind, a.host, a.port) for kind, a in addresses],
                )
            except OSError as e:
                log.error(
                    "cannot write the port file {path}: {why}", path=self.port_file, why=e.strerror
                )
        if self.config is not None:
            self._snapshot = ConfigSnapshot(self.config[1])
            if self.check is not None:
                self._running_shape = self.check(self._worker_args(self._snapshot.here()))
        log.info(
            "supervisor pid {pid}: starting {n} worker(s) on {ports}",
            pid=os.getpid(),
            n=self.count,
            ports=", ".join(f"{k} {p}" for k, p in self.ports),
        )
        for index in range(self.count):
            self._spawn(index)
        self._hup_installed = on_hangup(self.hangup, self._reactor())

    def _worker_args(self, snapshot: Optional[str]) -> list[str]:
        args = list(self.argv)
        if snapshot is not None:
            args += ["--config-snapshot", snapshot]
        return args

    def _spawn(self, index: int) -> None:
        call = self._restarts.pop(index, None)
        if call is not None and call.active():
            call.cancel()  # started now (a reload): not a second time later
        if self.stopping:
            return
        self.given_up.discard(index)
        fds: dict[int, Any] = {0: 0, 1: 1, 2: 2}
        described = []
        for offset, (kind, sock) in enumerate(self.sockets[index]):
            child_fd = 3 + offset
            fds[child_fd] = sock.fileno()
            described.append(f"{kind}:{child_fd}")
        snapshot = None
        if self._snapshot is not None and self._snapshot.fd is not None:
            child_fd = 3 + len(described)
            fds[child_fd] = self._snapshot.fd
            snapshot = self._snapshot.in_child(child_fd)
        elif self._snapshot is not None:  # pragma: no cover - systems without memfd
            snapshot = self._snapshot.here()
        args = [
            sys.executable,
            "-c",
            # A SIGHUP forwarded before the worker's own handler is in place
            # must not end it.
            "import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
            "from twisted.scripts.twistd import run; run()",
            *self._worker_args(snapshot),
            "--worker-sockets",
            ",".join(described),
        ]
        reactor = self._reactor()
        worker = _Worker(self, index, reactor.seconds())
        transport = reactor.spawnProcess(
            worker, sys.executable, args, env=os.environ.copy(), childFDs=fds
        )
        worker.pid = transport.pid
        self.workers[index] = worker
        self.transports[worker] = transport
        log.info("started worker {i} (pid {pid})", i=index, pid=transport.pid)

    def _ended(self, worker: _Worker, reason: Any) -> None:
        self.transports.pop(worker, None)
        if self.stopping or worker.retired or self.workers.get(worker.index) is not worker:
            return
        code = getattr(reason.value, "exitCode", None)
        why = f"exit code {code}" if code is not None else reason.getErrorMessage()
        reactor = self._reactor()
        index = worker.index
        if reactor.seconds() - worker.started < QUICK_FAILURE:
            failures = self.quick_failures[index] = self.quick_failures.get(index, 0) + 1
        else:
            failures = self.quick_failures[index] = 0
        if failures >= MAX_QUICK_FAILURES:
            del self.workers[index]
            self.given_up.add(index)
            log.critical(
                "worker {i} failed {n} times in a row within {t:.0f}s of starting "
                "(last: {why}); not restarting it",
                i=index,
                n=failures,
                t=QUICK_FAILURE,
                why=why,
            )
            if not self.workers:
                log.critical("no worker is left: the supervisor stops")
                exit_status_after_stop(1)
                reactor.stop()
            return
        delay = restart_delay(failures)
        log.warn(
            "worker {i} exited ({why}); starting a new one in {d}s",
            i=index,
            why=why,
            d=delay,
        )
        self._restarts[index] = reactor.callLater(delay, self._spawn, index)

    def hangup(self) -> None:
        """
        SIGHUP: apply a changed configuration, or reload certificates.
        """
        if self.config is None or self.check is None:
            log.info("SIGHUP: asking the workers to reload their TLS certificates")
            self._signal_all(signal.SIGHUP, retiring=False)
            return
        path = self.config[0]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            log.error(
                "SIGHUP: cannot read {path} ({why}); the workers keep the running configuration",
                path=path,
                why=e.strerror,
            )
            return
        if data == self.config[1]:
            log.info(
                "SIGHUP: {path} is unchanged; asking the workers to reload their TLS certificates",
                path=path,
            )
            self._signal_all(signal.SIGHUP, retiring=False)
            return
        candidate = ConfigSnapshot(data)
        try:
            shape = self.check(self._worker_args(candidate.here()))
        except Exception as e:
            candidate.close()
            log.error(
                "SIGHUP: {path} is not usable, the workers keep the running configuration: {why}",
                path=path,
                why=str(e),
            )
            return
        if self._running_shape is not None and shape != self._running_shape:
            candidate.close()
            log.error(
                "SIGHUP: {path} changes the listening ports or the number of workers, "
                "which takes a restart; the workers keep the running configuration",
                path=path,
            )
            return
        self.config = (path, data)
        if self._snapshot is not None:
            # Workers started from it have their own copy of the descriptor.
            self._snapshot.close()
        self._snapshot = candidate
        slots = sorted(set(self.workers) | self.given_up | set(self._restarts))
        log.info(
            "SIGHUP: {path} changed; replacing {n} worker(s), each old one drains its clients",
            path=path,
            n=len(slots),
        )
        reactor = self._reactor()
        for index in slots:
            self.quick_failures[index] = 0
            old = self.workers.get(index)
            self._spawn(index)
            if old is not None and old in self.transports:
                old.retired = True
                old.retire_call = reactor.callLater(RETIRE_DELAY, self._terminate, old)

    def _terminate(self, worker: _Worker) -> None:
        # SIGTERM once per worker (a second one would only be logged).
        worker.retire_call = None
        transport = self.transports.get(worker)
        if transport is not None and not worker.terminated:
            worker.terminated = True
            _signal(transport, signal.SIGTERM)

    def _signal_all(self, signum: int, retiring: bool = True) -> None:
        now = self._reactor().seconds()
        for worker, transport in list(self.transports.items()):
            if not retiring and worker.retired:
                continue
            age = now - worker.started
            if signum == signal.SIGHUP and age < FRESH:
                # Started a moment ago and perhaps not yet ignoring SIGHUP
                # (a new process starts with it at its default action, which
                # ends it): it gets the signal once it is FRESH seconds old.
                self._reactor().callLater(FRESH - age, self._hup_later, worker)
                continue
            _signal(transport, signum)

    def _hup_later(self, worker: _Worker) -> None:
        transport = self.transports.get(worker)
        if transport is not None and not self.stopping and not worker.retired:
            _signal(transport, signal.SIGHUP)

    def stopService(self) -> Any:
        super().stopService()
        self.stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        if self._hup_installed:
            ignore_hangup()
        # Every process started and not yet ended: workers, and old ones
        # still draining after a reload (each told once).
        ended = [worker.ended for worker in self.transports]
        for worker in list(self.transports):
            if worker.retire_call is not None and worker.retire_call.active():
                worker.retire_call.cancel()
            self._terminate(worker)
        reactor = self._reactor()
        kill = reactor.callLater(self.drain_timeout + 5, self._signal_all, signal.SIGKILL)
        done = defer.DeferredList(ended, consumeErrors=True)

        def finished(_: object) -> None:
            if kill.active():
                kill.cancel()
            for row in self.sockets:
                for _, sock in row:
                    sock.close()
            if self._snapshot is not None:
                self._snapshot.close()
            if self.port_file:
                remove_port_file(self.port_file)
            log.info("all workers stopped")

        return done.addBoth(finished)


def _signal(transport: Any, signum: int) -> None:
    try:
        transport.signalProcess(signum)
    except Exception:  # already gone
        pass


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
        slot_port(self.port)
        os.close(self.fd)  # the port holds its own duplicate

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()
        return None
