"""
Channels across processes and machines through Redis pub/sub.

With C{--redis redis://HOST:PORT/DB}, a publish is delivered to the local
subscribers at once and sent to Redis (C{PUBLISH} on the channel
L{redis_channel} names: the route's namespace and the channel name); every
wsmux connected to the same Redis receives it (C{PSUBSCRIBE wsmux:*}) and
delivers it to its own subscribers, skipping its own publishes.

What comes from Redis is checked like what comes from a client (a channel
name wsmux would accept, at most C{redis_max_message} bytes, valid UTF-8
for text); anything else is dropped, counted and logged, and nobody is
disconnected for it.  At most C{redis_max_pending} bytes of publishes wait
for a slow or hung Redis.

If Redis goes away, local delivery keeps working; publishes that could not
reach Redis are counted and logged; both Redis connections are retried with
backoff (Twisted's C{ClientService}, through txredisapi), and cross-process
delivery resumes by itself when Redis is back.
"""

from __future__ import annotations

import os
from typing import Any, Optional
from urllib.parse import urlparse

from twisted.application.service import Service
from twisted.internet.endpoints import TCP4ClientEndpoint

from wsmux.channels import ChannelError, ChannelHub, check_channel_name
from wsmux.logs import log

PREFIX = b"wsmux:"

# Bytes one publish waiting for Redis holds besides its channel name and
# message: the command's framing, txredisapi's Deferred for the reply and
# its callbacks, Twisted's write buffer.  Measured as the growth of the
# server's RSS per pending publish of a few bytes with Redis stopped: about
# 2.7 KiB, rounded up.
PUBLISH_OVERHEAD = 3072
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


def _subscriber_class(bridge: RedisChannels) -> type:
    # txredisapi is imported only when Redis is used: it installs the
    # default reactor as it is imported (a .tac or a script that installs
    # the asyncio reactor after importing wsmux must still be able to).
    import txredisapi

    class Subscriber(txredisapi.SubscriberProtocol):
        def connectionMade(self) -> Any:
            d = super().connectionMade()
            d.addCallback(lambda _: self.psubscribe(PREFIX.decode() + "*"))
            d.addCallback(lambda _: bridge._subscribed())
            return d

        def connectionLost(self, why: Any) -> None:
            bridge._lost()
            super().connectionLost(why)

        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            bridge._received(channel, message)

    return Subscriber


class RedisChannels(Service):
    """
    Connects a L{ChannelHub} to Redis pub/sub.

    @ivar publish_failures: publishes that could not reach Redis (not
        connected, an error, or more than C{max_pending} bytes waiting).
    @ivar pending_bytes: bytes handed to Redis and not yet acknowledged.
    @ivar dropped: messages from Redis dropped as malformed, too large or
        not valid UTF-8 (for text).
    @ivar connected: whether the subscription is live.
    """

    def __init__(
        self,
        hub: ChannelHub,
        url: str,
        reactor: Any = None,
        max_message_size: int = 1024 * 1024,
        max_pending: int = 16 * 1024 * 1024,
    ) -> None:
        self.hub = hub
        self.url = url
        self.host, self.port, self.db = parse_redis_url(url)
        self.reactor = reactor
        self.origin = os.urandom(8)
        self.max_message_size = max_message_size or 1 << 62
        self.max_pending = max_pending
        self.pending_bytes = 0
        self.dropped = 0
        self.publish_failures = 0
        self.connected = False
        self._publisher: Any = None
        self._subscriber: Any = None

    def startService(self) -> None:
        super().startService()
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        import txredisapi

        endpoint = TCP4ClientEndpoint(reactor, self.host, self.port, timeout=5)
        self._publisher = txredisapi.RedisFactory(
            None, self.db, 1, isLazy=True, handler=txredisapi.ConnectionHandler, charset=None
        )
        self._publisher.maxDelay = 5
        self._publisher.startConnecting(endpoint)
        self._subscriber = txredisapi.SubscriberFactory(isLazy=True)
        self._subscriber.charset = None
        self._subscriber.maxDelay = 5
        self._subscriber.protocol = _subscriber_class(self)
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

    def publish(self, namespace: str, channel: str, payload: bytes, isBinary: bool) -> None:
        """
        Send a publish to Redis, for the other wsmux processes.

        At most C{max_pending} bytes wait for Redis to take them: past that
        (Redis hung, or the link too slow) the publish is delivered locally
        only, and counted as a failure.
        """
        if self._publisher is None or not self._publisher.size:
            self._failed("Redis is not connected")
            return
        message = self.origin + (_BINARY if isBinary else _TEXT) + payload
        name = redis_channel(namespace, channel)
        # What a publish holds until Redis answers: the command as sent
        # (txredisapi's framing of the name and the message) and the reply
        # it waits for (a Deferred and its callbacks), not just the payload:
        # a flood of empty messages must fill the cap as fast as it fills
        # memory.
        size = len(message) + len(name) + PUBLISH_OVERHEAD
        if self.pending_bytes + size > self.max_pending:
            self._failed(
                f"more than {self.max_pending} bytes already waiting for Redis to take them"
            )
            return
        self.pending_bytes += size
        connection = self._publisher.handler
        d = connection.publish(name, message)

        def taken(result: Any) -> Any:
            self.pending_bytes -= size
            return result

        d.addBoth(taken)
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
        # What arrives from Redis is held to the rules of what arrives from
        # a client: anyone who can publish to this Redis can send it.
        if isinstance(channel, str):
            channel = channel.encode("utf-8", "surrogateescape")
        if isinstance(message, str):
            message = message.encode("utf-8", "surrogateescape")
        if len(message) < 9 or message[:8] == self.origin:
            return
        where = parse_redis_channel(channel)
        if where is None:
            self._dropped("a channel name that is not wsmux's")
            return
        kind, payload = message[8:9], message[9:]
        if kind not in (_TEXT, _BINARY):
            self._dropped("a message without wsmux's header")
            return
        if len(payload) > self.max_message_size:
            self._dropped(f"a message over {self.max_message_size} bytes")
            return
        if kind == _TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                self._dropped("a text message that is not valid UTF-8")
                return
        namespace, name = where
        self.hub.deliver_local(namespace, name, payload, kind == _BINARY)

    def _dropped(self, why: str) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warn(
                "dropped {why} from Redis; {n} dropped so far (nobody was disconnected)",
                why=why,
                n=self.dropped,
            )


def redis_channel(namespace: str, channel: str) -> bytes:
    """
    The Redis channel of a wsmux channel: C{wsmux:}, the namespace's length
    in bytes, C{:}, the namespace, then the name (no separator can be
    forged, whatever the names hold).
    """
    space = namespace.encode("utf-8")
    return PREFIX + str(len(space)).encode("ascii") + b":" + space + channel.encode("utf-8")


def parse_redis_channel(raw: bytes) -> Optional[tuple[str, str]]:
    """
    The namespace and name of a Redis channel L{redis_channel} made; L{None}
    for anything else (or a name wsmux would not accept).
    """
    if not raw.startswith(PREFIX):
        return None
    length, colon, rest = raw[len(PREFIX) :].partition(b":")
    if not colon or not length.isdigit() or len(length) > 6 or int(length) > len(rest):
        return None
    split = int(length)
    try:
        namespace = rest[:split].decode("utf-8")
        name = check_channel_name(rest[split:].decode("utf-8"))
    except (UnicodeDecodeError, ChannelError):
        return None
    return namespace, name
