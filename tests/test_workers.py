"""
The worker supervisor's decisions, on a fake reactor: restart delays,
giving up, no restarts once stopping, configuration snapshots and SIGHUP.
"""

import signal

import pytest
from twisted.internet.error import ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from wsmux import workers
from wsmux.workers import MAX_QUICK_FAILURES, WorkerSupervisor, restart_delay


class FakeProcess:
    def __init__(self, reactor, protocol, args, child_fds):
        self.reactor = reactor
        self.protocol = protocol
        self.args = args
        self.child_fds = child_fds
        self.pid = 1000 + len(reactor.processes)
        self.signals = []

    def signalProcess(self, signum):
        self.signals.append(signum)

    def exit(self, code=1):
        self.protocol.processEnded(Failure(ProcessTerminated(exitCode=code)))


class ProcessReactor(MemoryReactorClock):
    def __init__(self):
        super().__init__()
        self.processes = []
        self.stopped = False

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None):
        process = FakeProcess(self, protocol, args, childFDs)
        self.processes.append(process)
        return process

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)

    def stop(self):
        self.stopped = True


def snapshot_of(process):
    """
    The settings a worker would read: its --config-snapshot, a descriptor
    it inherits (read here through the supervisor's end of it).
    """
    where = process.args[process.args.index("--config-snapshot") + 1]
    child_fd = int(where.rsplit("/", 1)[1])
    with open(f"/proc/self/fd/{process.child_fds[child_fd]}", "rb") as f:
        return f.read()


@pytest.fixture
def supervise(monkeypatch):
    started = []
    exits = []
    monkeypatch.setattr(workers, "exit_status_after_stop", exits.append)

    def start(count=2, config=None, check=None):
        reactor = ProcessReactor()
        supervisor = WorkerSupervisor(
            count,
            [("plain", "tcp:0:interface=127.0.0.1")],
            ["-n", "wsmux", "--config", "x.toml"],
            drain_timeout=1,
            reactor=reactor,
            config=config,
            check=check,
        )
        supervisor.startService()
        started.append(supervisor)
        supervisor.exits = exits
        return supervisor, reactor

    yield start
    for supervisor in started:
        if supervisor.running:
            supervisor.stopService()


def test_restart_delays_double_and_stop_growing():
    assert [restart_delay(n) for n in range(0, 9)] == [
        0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0,
    ]  # fmt: skip


def test_a_worker_that_keeps_failing_at_start_up_is_given_up(supervise):
    supervisor, reactor = supervise(count=1)
    delays = []
    for _ in range(MAX_QUICK_FAILURES - 1):
        reactor.advance(1)
        reactor.processes[-1].exit(1)  # a second after it started: a quick failure
        (call,) = reactor.getDelayedCalls()
        delays.append(call.getTime() - reactor.seconds())
        reactor.advance(delays[-1])
    assert delays == [0.5, 1.0, 2.0, 4.0]
    reactor.advance(1)
    reactor.processes[-1].exit(1)
    assert reactor.getDelayedCalls() == []  # given up: no restart pending
    assert len(reactor.processes) == MAX_QUICK_FAILURES
    # No worker left: the supervisor stops, and will exit with status 1.
    assert reactor.stopped and supervisor.exits == [1]


def test_a_worker_that_ran_a_while_is_restarted_at_once(supervise):
    supervisor, reactor = supervise(count=1)
    for _ in range(10):
        reactor.advance(60)
        reactor.processes[-1].exit(1)
        (call,) = reactor.getDelayedCalls()
        assert call.getTime() - reactor.seconds() == 0.5
        reactor.advance(0.5)
    assert not reactor.stopped


def test_nothing_is_restarted_once_stopping_has_begun(supervise):
    supervisor, reactor = supervise(count=2)
    first, second = reactor.processes
    first.exit(-9)  # killed; its restart is due in 0.5 s
    stopped = supervisor.stopService()
    assert second.signals == [signal.SIGTERM]
    reactor.advance(1)
    assert len(reactor.processes) == 2  # the restart was cancelled
    done = []
    stopped.addCallback(done.append)
    assert not done  # the second worker has not ended yet
    second.exit(0)
    assert done


def test_workers_run_the_snapshot_the_supervisor_parsed(supervise, tmp_path):
    config = tmp_path / "wsmux.toml"
    config.write_bytes(b"log_level = 'info'\n")
    checked = []

    def check(argv):
        checked.append(argv)
        return ("ports", 2)

    supervisor, reactor = supervise(config=(str(config), config.read_bytes()), check=check)
    assert snapshot_of(reactor.processes[0]) == b"log_level = 'info'\n"
    # An edit nobody applied: a replaced worker still gets the snapshot.
    config.write_bytes(b"log_level = 'debug'\n")
    reactor.advance(60)
    reactor.processes[0].exit(1)
    reactor.advance(1)
    assert snapshot_of(reactor.processes[-1]) == b"log_level = 'info'\n"


def test_sighup_replaces_workers_with_a_changed_configuration(supervise, tmp_path):
    config = tmp_path / "wsmux.toml"
    config.write_bytes(b"log_level = 'info'\n")
    shapes = {"ok": ("ports", 2)}

    def check(argv):
        with open(argv[argv.index("--config-snapshot") + 1], "rb") as f:
            data = f.read()
        if b"broken" in data:
            raise ValueError("broken.toml: not valid TOML")
        if b"8081" in data:
            return ("other ports", 2)
        return shapes["ok"]

    supervisor, reactor = supervise(config=(str(config), config.read_bytes()), check=check)
    old = list(reactor.processes)
    supervisor.hangup()  # workers that have just started get it a little later
    assert [p.signals for p in old] == [[], []]
    reactor.advance(workers.FRESH)
    assert [p.signals for p in old] == [[signal.SIGHUP]] * 2
    supervisor.hangup()  # unchanged: the workers reload their certificates
    assert [p.signals for p in old] == [[signal.SIGHUP] * 2] * 2 and len(reactor.processes) == 2
    config.write_bytes(b"broken")
    supervisor.hangup()  # broken: kept
    config.write_bytes(b"port = 8081\n")
    supervisor.hangup()  # new ports: a restart's job, kept
    assert len(reactor.processes) == 2
    config.write_bytes(b"log_level = 'debug'\n")
    supervisor.hangup()  # changed and good: every worker replaced
    assert len(reactor.processes) == 4
    new = reactor.processes[2:]
    assert snapshot_of(new[0]) == b"log_level = 'debug'\n"
    # The old ones go on accepting while the new ones start, then drain.
    assert [p.signals[-1] for p in old] == [signal.SIGHUP] * 2
    reactor.advance(workers.RETIRE_DELAY)
    assert [p.signals[-1] for p in old] == [signal.SIGTERM] * 2
    supervisor.hangup()  # unchanged now: only the current workers reload
    assert [p.signals[-1] for p in old] == [signal.SIGTERM] * 2
    assert [p.signals for p in new] == [[signal.SIGHUP]] * 2  # they are FRESH seconds old
    supervisor.stopService()  # the old ones, told already, are not told again
    assert [p.signals.count(signal.SIGTERM) for p in old + new] == [1, 1, 1, 1]
    for process in old:  # the old ones end: nothing restarts them
        process.exit(0)
    reactor.advance(5)
    assert len(reactor.processes) == 4


def test_a_reload_during_a_restart_delay_starts_one_worker_for_the_slot(supervise, tmp_path):
    config = tmp_path / "wsmux.toml"
    config.write_bytes(b"log_level = 'info'\n")
    supervisor, reactor = supervise(
        count=1, config=(str(config), config.read_bytes()), check=lambda argv: ("ports", 1)
    )
    reactor.advance(1)
    reactor.processes[0].exit(1)  # a quick failure: restart due in 0.5 s
    config.write_bytes(b"log_level = 'debug'\n")
    supervisor.hangup()  # the slot starts now, with the new settings...
    assert len(reactor.processes) == 2
    reactor.advance(10)
    assert len(reactor.processes) == 2  # ...and not a second time


def test_a_reload_revives_a_slot_that_was_given_up(supervise, tmp_path):
    config = tmp_path / "wsmux.toml"
    config.write_bytes(b"broken = 1\n")
    supervisor, reactor = supervise(
        count=2, config=(str(config), config.read_bytes()), check=lambda argv: ("ports", 2)
    )
    for _ in range(MAX_QUICK_FAILURES):
        reactor.advance(1)
        supervisor.transports[supervisor.workers[0]].exit(1)
        reactor.advance(30)
    assert supervisor.given_up == {0}
    config.write_bytes(b"fixed = 1\n")
    supervisor.hangup()
    assert supervisor.given_up == set() and 0 in supervisor.workers
    assert snapshot_of(supervisor.transports[supervisor.workers[0]]) == b"fixed = 1\n"


def test_sighup_is_ignored_once_stopping_has_begun(supervise):
    supervisor, reactor = supervise(count=1)
    supervisor.stopService()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_a_worker_retiring_when_the_supervisor_stops_is_told_once(supervise, tmp_path):
    config = tmp_path / "wsmux.toml"
    config.write_bytes(b"log_level = 'info'\n")
    supervisor, reactor = supervise(
        count=1, config=(str(config), config.read_bytes()), check=lambda argv: ("ports", 1)
    )
    config.write_bytes(b"log_level = 'debug'\n")
    supervisor.hangup()  # the old worker retires in RETIRE_DELAY...
    supervisor.stopService()  # ...but the stop comes first
    reactor.advance(workers.RETIRE_DELAY + 1)
    assert [p.signals for p in reactor.processes] == [[signal.SIGTERM], [signal.SIGTERM]]
