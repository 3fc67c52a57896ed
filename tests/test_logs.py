"""
wsmux's logger drops events below the configured level at the call.
"""

from __future__ import annotations

from twisted.logger import LogPublisher

from wsmux import logs


def test_events_below_the_level_never_reach_observers(monkeypatch):
    publisher = LogPublisher()
    seen: list[dict] = []
    publisher.addObserver(seen.append)
    log = logs.LevelLogger(namespace="wsmux", observer=publisher)
    monkeypatch.setattr(logs, "_dropped", frozenset())
    monkeypatch.setattr(logs.txaio, "set_global_log_level", lambda level: None)
    logs.filter_log_level("warn", publisher)
    log.info("open route={route}", route="/echo")
    log.debug("noise")
    log.warn("slow consumer {n}", n=1)
    log.error("broken")
    assert [e["log_format"] for e in seen] == ["slow consumer {n}", "broken"]
    fresh = LogPublisher()
    fresh.addObserver(seen.append)
    logs.filter_log_level("debug", fresh)
    logs.LevelLogger(namespace="wsmux", observer=fresh).debug("now shown")
    assert seen[-1]["log_format"] == "now shown"
