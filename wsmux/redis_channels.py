"""
Channels across processes and machines through Redis pub/sub.

With C{--redis redis://HOST:PORT/DB}, a publish is delivered to the local
subscribers at once and sent to Redis (C{PUBLISH wsmux:<channel>}); every
wsmux connected to the same Redis receives it (C{PSUBSCRIBE wsmux:*}) and
delivers it to its own subscribers, skipping its own publishes.

If Redis goes away, local delivery keeps working; publishes that could not
reach Redis are counted and logged; both Redis connections are retried with
backoff (Twisted's C{ClientService}, through txredisapi), and cross-process
delivery resumes by itself when Redis is back.
"""

from __future__ import annotations

import os
from typing import Any, Optional
from urllib.parse import urlparse

import txredisapi
from autobahn.websocket.protocol import PreparedMessage
from twisted.application.service import Service
from twisted.internet.endpoints import TCP4ClientEndpoint

from wsmux.channels import ChannelHub, deliver
from wsmux.logs import log

PREFIX = b"wsmux:"
_BINARY, _TEXT = b"b", b"t"


def parse_redis_url(url: str) -> tuple[str, int, Optional[int]]:
    """
    Host, port and database of a C{redis://HOST:PORT/DB} URL.

    @raise ValueError: saying what is wrong.
    """
    parsed = urlparse(url)
    if parsed.scheme != "redis" or not parsed.hostname:
        raise ValueError(f"{url!r} is not a redis://HOST:PORT/DB URL")
    try:
        port = parsed.port or 6379
    except ValueError:
        raise ValueError(f"{url!r} has a bad port") from None
    db = parsed.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"{url!r}: the database must be a number")
    return parsed.hostname, port, int(db) if db else None


class _Subscriber(txredisapi.SubscriberProtocol):
    bridge: RedisChannels

    def connectionMade(self) -> Any:
        d = super().connectionMade()
        d.addCallback(lambda _: self.psubscribe(PREFIX.decode() + "*"))
        d.addCallback(lambda _: self.bridge._subscribed())
        return d

    def connectionLost(self, why: Any) -> None:
        self.bridge._lost()
        super().connectionLost(why)

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.bridge._received(channel, message)


class RedisChannels(Service):
    """
    Connects a L{ChannelHub} to Redis pub/sub.

    @ivar publish_failures: publishes that could not reach Redis.
    @ivar connected: whether the subscription is live.
    """

    def __init__(self, hub: ChannelHub, url: str, reactor: Any = None) -> None:
        self.hub = hub
        self.url = url
        self.host, self.port, self.db = parse_redis_url(url)
        self.reactor = reactor
        self.origin = os.urandom(8)
        self.publish_failures = 0
        self.connected = False
        self._publisher: Any = None
        self._subscriber: Any = None

    def startService(self) -> None:
        super().startService()
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        endpoint = TCP4ClientEndpoint(reactor, self.host, self.port, timeout=5)
        self._publisher = txredisapi.RedisFactory(
            None, self.db, 1, isLazy=True, handler=txredisapi.ConnectionHandler, charset=None
        )
        self._publisher.maxDelay = 5
        self._publisher.startConnecting(endpoint)
        self._subscriber = txredisapi.SubscriberFactory(isLazy=True)
        self._subscriber.charset = None
        self._subscriber.maxDelay = 5
        self._subscriber.protocol = type("Subscriber", (_Subscriber,), {"bridge": self})
        self._subscriber.startConnecting(endpoint)
        self.hub.remote = self
        log.info("channels go through Redis at {url}", url=self.url)

    def stopService(self) -> Any:
        super().stopService()
        self.hub.remote = None
        from twisted.internet.defer import gatherResults

        return gatherResults(
            [f.disconnect() for f in (self._publisher, self._subscriber) if f is not None],
            consumeErrors=True,
        )

    def publish(self, channel: str, payload: bytes, isBinary: bool) -> None:
        """
        Send a publish to Redis, for the other wsmux processes.
        """
        if self._publisher is None or not self._publisher.size:
            self._failed("Redis is not connected")
            return
        message = self.origin + (_BINARY if isBinary else _TEXT) + payload
        connection = self._publisher.handler
        d = connection.publish(PREFIX + channel.encode("utf-8"), message)
        d.addErrback(lambda f: self._failed(f.getErrorMessage()))

    def _failed(self, why: str) -> None:
        self.publish_failures += 1
        if self.publish_failures == 1 or self.publish_failures % 1000 == 0:
            log.warn(
                "could not publish to Redis ({why}); {n} publish(es) delivered locally only so far",
                why=why,
                n=self.publish_failures,
            )

    def _subscribed(self) -> None:
        self.connected = True
        log.info("subscribed to Redis channels at {url}", url=self.url)

    def _lost(self) -> None:
        if self.connected:
            log.warn("lost the Redis connection at {url}; retrying", url=self.url)
        self.connected = False

    def _received(self, channel: Any, message: Any) -> None:
        if isinstance(channel, str):
            channel = channel.encode("utf-8")
        if isinstance(message, str):
            message = message.encode("utf-8")
        if not channel.startswith(PREFIX) or len(message) < 9 or message[:8] == self.origin:
            return
        members = self.hub.members(channel[len(PREFIX) :].decode("utf-8", "replace"))
        if members:
            deliver(PreparedMessage(message[9:], message[8:9] == _BINARY, False, False), members)
