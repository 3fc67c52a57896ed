"""
Logging: C{--log-level} and C{--log-format} for twistd, through
C{twisted.logger}.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any, Optional

import txaio
from twisted.application.service import Service
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    PredicateResult,
    formatEvent,
    globalLogPublisher,
)

from wsmux._compat_twisted import observers_of

_TWISTED_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}

# The level names wsmux's settings take, lowest first.
LOG_LEVELS = tuple(_TWISTED_LEVELS)


# Levels wsmux's own logger drops at the call (set by filter_log_level).
_dropped: frozenset[Any] = frozenset()


class LevelLogger(Logger):
    """
    A C{twisted.logger.Logger} that drops events below the configured
    level before building them: with C{--log-level warn}, the open and
    close lines of every connection cost one set lookup each.
    """

    def emit(self, level: LogLevel, format: Optional[str] = None, **kwargs: Any) -> None:
        if level in _dropped:
            return
        super().emit(level, format, **kwargs)

    # The two levels of per-connection lines, checked before their
    # arguments are passed on a second time.

    def info(self, format: Optional[str] = None, **kwargs: Any) -> None:
        if LogLevel.info not in _dropped:
            super().emit(LogLevel.info, format, **kwargs)

    def debug(self, format: Optional[str] = None, **kwargs: Any) -> None:
        if LogLevel.debug not in _dropped:
            super().emit(LogLevel.debug, format, **kwargs)


log = LevelLogger(namespace="wsmux")


def level_predicate(level: str) -> Any:
    """
    A log filter predicate that drops events below C{level}.

    Events without a level (old-style C{twisted.python.log.msg}) count as
    info.
    """
    threshold = _TWISTED_LEVELS[level]

    def predicate(event: dict[str, Any]) -> PredicateResult:
        event_level = event.get("log_level", LogLevel.info)
        if event_level < threshold:
            return PredicateResult.no
        return PredicateResult.maybe

    return predicate


def filter_log_level(level: str, publisher: LogPublisher = globalLogPublisher) -> None:
    """
    Drop log events below C{level} from every observer of C{publisher}.

    Autobahn logs through txaio, whose loggers turn calls below the level
    into no-ops, so debug logging on the message path costs nothing when
    it is off.

    @param level: C{debug}, C{info}, C{warn} or C{error}.
    """
    global _dropped
    txaio.set_global_log_level(level)  # type: ignore[attr-defined]
    _dropped = frozenset(
        named for named in LogLevel.iterconstants() if named < _TWISTED_LEVELS[level]
    )
    predicate = level_predicate(level)
    # LogPublisher has no public way to list its observers; twistd has
    # added its own by the time services start, so wrap each of them.
    for observer in observers_of(publisher):
        if isinstance(observer, FilteringLogObserver):
            continue
        publisher.removeObserver(observer)
        publisher.addObserver(FilteringLogObserver(observer, [predicate]))


class LogLevelService(Service):
    """
    Applies L{filter_log_level} when the application starts, after twistd
    has set up its log observers.
    """

    def __init__(self, level: str) -> None:
        self.level = level

    def startService(self) -> None:
        filter_log_level(self.level)
        super().startService()


LOG_FORMATS = ("text", "json")

# Keys wsmux's own events carry that log shippers can index on.
_STABLE_KEYS = ("route", "conn", "peer", "path", "code", "status", "reason")


def json_line(event: dict[str, Any]) -> Optional[str]:
    """
    One log event as a JSON line with stable keys: C{time}, C{level},
    C{namespace}, C{event} (the message), and C{route}, C{peer}, C{path},
    C{code}, C{status}, C{reason} when the event has them.
    """
    level = event.get("log_level", LogLevel.info)
    out: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
        "level": level.name,
        "namespace": event.get("log_namespace", ""),
        "event": formatEvent(event),
    }
    for key in _STABLE_KEYS:
        if key in event:
            value = event[key]
            out[key] = (
                value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
            )
    failure = event.get("log_failure")
    if failure is not None:
        out["traceback"] = failure.getTraceback()
    return json.dumps(out) + "\n"


def json_observer(out: IO[str]) -> FileLogObserver:
    """
    A log observer writing L{json_line}s to C{out}.
    """
    return FileLogObserver(out, json_line)


# twistd's own options, recorded by wsmux's when --log-format json is given:
# twistd takes its "logger" option as a dotted name and calls it with no
# arguments, so the options that say where the log goes are left here.
_twistd_options: dict[str, Any] = {}


def use_json_for_twistd(options: Any) -> None:
    """
    Make twistd log JSON lines, unless its own C{--logger} was given.

    @param options: twistd's C{ServerOptions} (the parent of wsmux's).
    """
    if options.get("logger"):
        return
    _twistd_options.clear()
    _twistd_options.update(logfile=options.get("logfile"), nodaemon=options.get("nodaemon"))
    options["logger"] = "wsmux.logs.twistd_json_observer"


def twistd_json_observer() -> FileLogObserver:
    """
    JSON lines to where twistd would write its text log: stdout with C{-n},
    else C{--logfile} or C{twistd.log}.
    """
    name = _twistd_options.get("logfile")
    if name == "-" or (not name and _twistd_options.get("nodaemon")):
        return json_observer(sys.stdout)
    from twisted.python.logfile import LogFile

    return json_observer(LogFile.fromFullPath(name or "twistd.log"))  # type: ignore[arg-type]
