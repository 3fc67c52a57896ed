"""
The seam's C{twisted.log_context}: wsmux's C{call_with_logger} does what
Twisted's C{log.callWithLogger} does around every reactor event (the
legacy log context's C{system}, errors logged, contexts restored), in one
call; C{speed_up_log_context} puts it in place for the reactors.

Each case runs through both and compares what the called function saw,
what it returned and what was logged.
"""

from __future__ import annotations

import threading

import pytest
from twisted.python import context, log
from twisted.python.log import ILogContext

from wsmux import _compat_twisted as seam
from wsmux._compat_twisted import _TWISTED_CALL_WITH_LOGGER, call_with_logger


class Selectable:
    def __init__(self, prefix="Proto,7,127.0.0.1"):
        self.prefix = prefix

    def logPrefix(self):
        if isinstance(self.prefix, Exception):
            raise self.prefix
        return self.prefix


def seen_inside():
    """
    What a function called by callWithLogger sees of the context, and a
    legacy log line from inside it.
    """
    log.msg("inside")
    return (dict(context.get(ILogContext)), context.get("other"))


def observe(how, case):
    """
    Run C{case(how)}; return what it returned (or raised), what was logged
    (message, system, whether an error) and the context stack's depth
    before and after.
    """
    events = []
    log.addObserver(events.append)
    depth = len(context.theContextTracker.currentContext().contexts)
    try:
        try:
            result = ("returned", case(how))
        except BaseException as e:  # noqa: B036 - KeyboardInterrupt is a case
            result = ("raised", type(e).__name__)
    finally:
        log.removeObserver(events.append)
        for event in events:
            if event.get("isError") and "failure" in event:
                event["failure"].cleanFailure()
    after = len(context.theContextTracker.currentContext().contexts)
    logged = [
        (
            event.get("message"),
            event.get("system"),
            bool(event.get("isError")),
            event["failure"].type.__name__ if "failure" in event else None,
        )
        for event in events
    ]
    return result, logged, (depth, after)


def plain(how):
    return how(Selectable(), seen_inside)


def with_arguments(how):
    return how(Selectable(), lambda a, b=0: (a, b, seen_inside()), 1, b=2)


def inside_a_log_context(how):
    return log.callWithContext({"system": "outer", "extra": 1}, how, Selectable(), seen_inside)


def under_another_key(how):
    # The nearest context holds another key only: the log context comes
    # from below it, and the other key stays visible.
    return log.callWithContext(
        {"system": "outer"}, context.call, {"other": 2}, how, Selectable(), seen_inside
    )


def nested(how):
    return how(Selectable("outer,1"), how, Selectable("inner,2"), seen_inside)


def fails(how):
    def broken():
        log.msg("before")
        raise ValueError("in a read")

    return how(Selectable(), broken)


def buggy_prefix(how):
    return how(Selectable(RuntimeError("no prefix")), seen_inside)


def interrupted(how):
    def stop():
        raise KeyboardInterrupt()

    return how(Selectable(), stop)


def in_a_new_thread(how):
    out = []
    thread = threading.Thread(target=lambda: out.append(how(Selectable(), seen_inside)))
    thread.start()
    thread.join(10)
    return out


CASES = [
    plain,
    with_arguments,
    inside_a_log_context,
    under_another_key,
    nested,
    fails,
    buggy_prefix,
    interrupted,
    in_a_new_thread,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_wsmux_call_with_logger_does_what_twisteds_does(case):
    twisteds = observe(_TWISTED_CALL_WITH_LOGGER, case)
    assert observe(call_with_logger, case) == twisteds
    assert twisteds[2][0] == twisteds[2][1]  # the stack is as it was


def test_what_the_cases_see():
    # The comparison above compares something: the contexts are the
    # connection's, errors are logged with its system.
    assert observe(call_with_logger, plain)[0] == (
        "returned",
        ({"system": "Proto,7,127.0.0.1"}, None),
    )
    assert observe(call_with_logger, inside_a_log_context)[0][1][0] == {
        "system": "Proto,7,127.0.0.1",
        "extra": 1,
    }
    assert observe(call_with_logger, under_another_key)[0][1][1] == 2
    result, logged, _ = observe(call_with_logger, fails)
    assert result == ("returned", None)
    assert logged == [
        (("before",), "Proto,7,127.0.0.1", False, None),
        ((), "Proto,7,127.0.0.1", True, "ValueError"),
    ]
    assert observe(call_with_logger, buggy_prefix)[1][0][1:] == (
        "(buggy logPrefix method)",
        True,
        "RuntimeError",
    )
    assert observe(call_with_logger, interrupted)[0] == ("raised", "KeyboardInterrupt")


def test_another_context_tracker_is_served_through_twisteds_path(monkeypatch):
    class Tracker(context.ContextTracker):
        pass

    tracker = Tracker()
    monkeypatch.setattr(context, "theContextTracker", tracker)
    monkeypatch.setattr(context, "call", tracker.callWithContext)
    monkeypatch.setattr(context, "get", tracker.getContext)
    assert call_with_logger(Selectable(), lambda: dict(context.get(ILogContext))) == {
        "system": "Proto,7,127.0.0.1"
    }
    assert tracker.contexts == [context.defaultContextDict]


@pytest.mark.uses_internal("twisted.log_context")
def test_a_site_starting_puts_it_in_place_unless_replaced_already(monkeypatch):
    from wsmux import EchoHandler, Route, RouteTree
    from wsmux.site import WebSocketSite

    monkeypatch.setattr(log, "callWithLogger", _TWISTED_CALL_WITH_LOGGER)
    site = WebSocketSite(RouteTree([Route("/echo", EchoHandler)]))
    site.doStart()
    try:
        assert log.callWithLogger is call_with_logger
    finally:
        site.doStop()
    theirs = lambda *a, **kw: None  # noqa: E731 - someone else's replacement
    monkeypatch.setattr(log, "callWithLogger", theirs)
    seam.speed_up_log_context()
    assert log.callWithLogger is theirs


def test_without_the_internal_twisteds_stays(monkeypatch):
    monkeypatch.setattr(log, "callWithLogger", _TWISTED_CALL_WITH_LOGGER)
    monkeypatch.setattr(seam, "LOG_CONTEXT", False)
    seam.speed_up_log_context()
    assert log.callWithLogger is _TWISTED_CALL_WITH_LOGGER


@pytest.mark.uses_internal("twisted.log_context")
def test_the_asyncio_reactors_copy_is_replaced_too(monkeypatch):
    # twisted.internet.asyncioreactor imports callWithLogger by name and
    # hands it to asyncio for every reader and writer.
    import sys
    import types

    module = types.ModuleType("twisted.internet.asyncioreactor")
    module.callWithLogger = _TWISTED_CALL_WITH_LOGGER
    monkeypatch.setitem(sys.modules, "twisted.internet.asyncioreactor", module)
    monkeypatch.setattr(log, "callWithLogger", _TWISTED_CALL_WITH_LOGGER)
    seam.speed_up_log_context()
    assert module.callWithLogger is call_with_logger
    assert log.callWithLogger is call_with_logger


def test_a_callwithlogger_replaced_before_wsmux_is_left_alone():
    # The check runs at import: in a process where something replaced
    # Twisted's first, wsmux does not take that for Twisted's.
    from tests.twistd_process import environ_without, python_process

    code = (
        "from twisted.python import log\n"
        "log.callWithLogger = lambda *a, **kw: None\n"
        "from wsmux import _compat, _compat_twisted\n"
        "print(_compat.INTERNALS['twisted.log_context'].problem)\n"
    )
    out = python_process(code, environ_without("WSMUX_PUBLIC_PATH"))
    assert out.returncode == 0, out.stderr
    assert "replaced before wsmux was imported" in out.stdout
