"""
Channels: named groups of connections a handler can publish to.

A publish frames the message once (an Autobahn C{PreparedMessage}) and
hands the same bytes to every subscriber; each subscriber's backpressure
policy applies as for any other send.  Channels are local to the process
unless Redis is configured (L{wsmux.redis_channels}).
"""

from __future__ import annotations

from typing import Any, Iterable

from autobahn.websocket.protocol import PreparedMessage

MAX_CHANNEL_NAME = 200


class ChannelError(ValueError):
    """
    A channel name is not acceptable.
    """


def check_channel_name(name: object) -> str:
    """
    Return C{name} if it is a usable channel name.

    @raise ChannelError: saying why not.
    """
    if not isinstance(name, str) or not name:
        raise ChannelError("a channel name must be a non-empty string")
    if len(name) > MAX_CHANNEL_NAME:
        raise ChannelError(f"a channel name must be at most {MAX_CHANNEL_NAME} characters")
    return name


class ChannelHub:
    """
    The channels of one route tree.

    Handlers reach it as C{self.channels}::

        self.channels.subscribe(self, "news")
        self.channels.publish("news", b"hello", isBinary=False)
    """

    def __init__(self) -> None:
        self._members: dict[str, set[Any]] = {}
        self._channels_of: dict[Any, set[str]] = {}
        # Where publishes also go for other processes (wsmux.redis_channels).
        self.remote: Any = None

    def subscribe(self, protocol: Any, channel: str) -> None:
        """
        Add C{protocol} to C{channel}.
        """
        check_channel_name(channel)
        self._members.setdefault(channel, set()).add(protocol)
        self._channels_of.setdefault(protocol, set()).add(channel)

    def unsubscribe(self, protocol: Any, channel: str | None = None) -> None:
        """
        Remove C{protocol} from C{channel}, or from every channel.
        """
        names = self._channels_of.get(protocol, set())
        for name in [channel] if channel is not None else list(names):
            members = self._members.get(name)
            if members is not None:
                members.discard(protocol)
                if not members:
                    del self._members[name]
            names.discard(name)
        if not names:
            self._channels_of.pop(protocol, None)

    def channels_of(self, protocol: Any) -> frozenset[str]:
        """
        The channels C{protocol} is subscribed to.
        """
        return frozenset(self._channels_of.get(protocol, ()))

    def members(self, channel: str) -> frozenset[Any]:
        """
        The connections subscribed to C{channel}.
        """
        return frozenset(self._members.get(channel, ()))

    def subscribers(self, channel: str) -> int:
        """
        How many connections are subscribed to C{channel}.
        """
        return len(self._members.get(channel, ()))

    def publish(self, channel: str, payload: bytes, isBinary: bool = False) -> int:
        """
        Send one message to every subscriber of C{channel}, framed once.

        With Redis configured, the message also goes to every other wsmux
        connected to the same Redis.

        @return: how many local subscribers it was handed to.
        """
        if self.remote is not None:
            self.remote.publish(channel, payload, isBinary)
        members = self._members.get(channel)
        if not members:
            return 0
        return deliver(PreparedMessage(payload, isBinary, False, False), members)


def deliver(prepared: PreparedMessage, members: Iterable[Any]) -> int:
    """
    Hand one prepared message to every open connection in C{members}.

    A member that fails to take it (its handler overrides a send method
    and raises, say) is closed with 1011 and the others still get it.
    """
    sent = 0
    for member in list(members):
        if member.state == member.STATE_OPEN:
            try:
                member.sendPreparedMessage(prepared)
            except Exception:
                failed = getattr(member, "handler_failed", None)
                if failed is None:
                    raise
                failed("a channel delivery")
                continue
            sent += 1
    return sent
