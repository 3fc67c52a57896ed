"""
Leveled logging: C{--log-level} for twistd, through C{twisted.logger}.
"""

from __future__ import annotations

from typing import Any

import txaio
from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogPublisher,
    PredicateResult,
    globalLogPublisher,
)

_TWISTED_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}


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
    txaio.set_global_log_level(level)  # type: ignore[attr-defined]
    predicate = level_predicate(level)
    # LogPublisher has no public way to list its observers; twistd has
    # added its own by the time services start, so wrap each of them.
    for observer in list(getattr(publisher, "_observers", ())):
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
