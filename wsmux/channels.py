"""
Channels: named groups of connections a handler can publish to.

A publish frames the message once (an Autobahn C{PreparedMessage}) and
hands the same bytes to every subscriber; each subscriber's backpressure
policy applies as for any other send.  Channels are local to the process
unless Redis is configured (L{wsmux.redis_channels}).

Each route has channels of its own: its handlers see a L{RouteChannels}
bound to the route's I{namespace} (the route's path pattern unless its
C{channel_namespace} option names another), so a client of one route can
never subscribe to, or publish into, the channels of a route whose checks
(allowed origins, TLS, C{onConnect}) it did not pass.  Routes share
channels only when their settings say so, by naming the same namespace.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from autobahn.websocket.protocol import PreparedMessage

from wsmux.logs import log

# The longest channel name, in UTF-8 bytes (a room name made of a path
# parameter fits well within it).
MAX_CHANNEL_NAME = 1024


class ChannelError(ValueError):
    """
    A channel name is not acceptable.
    """


def check_channel_name(name: object) -> str:
    """
    Return C{name} if it is a usable channel name: a non-empty string of at
    most L{MAX_CHANNEL_NAME} bytes of UTF-8, with no control characters.

    @raise ChannelError: saying why not.
    """
    if not isinstance(name, str) or not name:
        raise ChannelError("a channel name must be a non-empty string")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate, which JSON's \ud800 escape can carry.
        raise ChannelError("a channel name must be valid Unicode text") from None
    if len(encoded) > MAX_CHANNEL_NAME:
        raise ChannelError(f"a channel name must be at most {MAX_CHANNEL_NAME} bytes of UTF-8")
    if not name.isprintable():
        raise ChannelError("a channel name must not contain control characters")
    return name


Key = tuple[str, str]


class ChannelHub:
    """
    The channels of one route tree, in namespaces (one per route, unless
    routes share one).

    Handlers reach their route's channels as C{self.wsmux.channels} (a
    L{RouteChannels})::

        self.wsmux.channels.subscribe(self, "news")
        self.wsmux.channels.publish("news", b"hello", isBinary=False)
    """

    def __init__(self) -> None:
        self._members: dict[Key, set[Any]] = {}
        self._channels_of: dict[Any, set[Key]] = {}
        self._views: dict[str, RouteChannels] = {}
        # Where publishes also go for other processes (wsmux.redis_channels).
        self.remote: Any = None

    def namespace(self, name: str) -> RouteChannels:
        """
        The channels of namespace C{name}, as the routes that use it see them.
        """
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = RouteChannels(self, name)
        return view

    def subscribe(self, protocol: Any, channel: str, namespace: str = "") -> None:
        """
        Add C{protocol} to C{channel} of C{namespace}.

        @raise ChannelError: if the name is not acceptable.
        """
        key = (namespace, check_channel_name(channel))
        self._members.setdefault(key, set()).add(protocol)
        self._channels_of.setdefault(protocol, set()).add(key)

    def unsubscribe(
        self, protocol: Any, channel: Optional[str] = None, namespace: Optional[str] = None
    ) -> None:
        """
        Remove C{protocol} from C{channel} of C{namespace}, from every channel
        of C{namespace} (no channel named), or from every channel it is in
        (neither named).
        """
        keys = self._channels_of.get(protocol)
        if not keys:
            return
        if channel is not None:
            chosen: Iterable[Key] = [(namespace or "", channel)]
        elif namespace is not None:
            chosen = [key for key in keys if key[0] == namespace]
        else:
            chosen = list(keys)
        for key in chosen:
            members = self._members.get(key)
            if members is not None:
                members.discard(protocol)
                if not members:
                    del self._members[key]
            keys.discard(key)
        if not keys:
            self._channels_of.pop(protocol, None)

    def channels_of(self, protocol: Any, namespace: str = "") -> frozenset[str]:
        """
        The channels of C{namespace} that C{protocol} is subscribed to.
        """
        return frozenset(
            name for space, name in self._channels_of.get(protocol, ()) if space == namespace
        )

    def members(self, channel: str, namespace: str = "") -> frozenset[Any]:
        """
        The connections subscribed to C{channel} of C{namespace}.
        """
        return frozenset(self._members.get((namespace, channel), ()))

    def subscribers(self, channel: str, namespace: str = "") -> int:
        """
        How many connections are subscribed to C{channel} of C{namespace}.
        """
        return len(self._members.get((namespace, channel), ()))

    def publish(
        self,
        channel: str,
        payload: bytes,
        isBinary: bool = False,
        namespace: str = "",
        exclude: Any = None,
    ) -> int:
        """
        Send one message to every subscriber of C{channel} of C{namespace},
        framed once.

        With Redis configured, the message also goes to every other wsmux
        connected to the same Redis.

        @param exclude: a connection (the sender, usually) that does not get
            it, or a collection of them.
        @return: how many local subscribers it was handed to.
        @raise ChannelError: if the name is not acceptable.
        """
        check_channel_name(channel)
        if self.remote is not None:
            self.remote.publish(namespace, channel, payload, isBinary)
        return self.deliver_local(namespace, channel, payload, isBinary, exclude)

    def deliver_local(
        self, namespace: str, channel: str, payload: bytes, isBinary: bool, exclude: Any = None
    ) -> int:
        """
        Hand a message to this process's subscribers only (what arrives
        from Redis).

        @return: how many subscribers it was handed to.
        """
        members: Any = self._members.get((namespace, channel))
        if not members:
            return 0
        if exclude is not None:
            left = (exclude,) if not isinstance(exclude, (set, frozenset, list, tuple)) else exclude
            members = [m for m in members if m not in left]
        return deliver(PreparedMessage(payload, isBinary, False, False), members)


class RouteChannels:
    """
    The channels of one namespace: what a route's handlers see as
    C{self.wsmux.channels}.  The same methods as L{ChannelHub}, without the
    namespace argument.

    @ivar name: the namespace.
    @ivar hub: the tree's L{ChannelHub}.
    """

    def __init__(self, hub: ChannelHub, name: str) -> None:
        self.hub = hub
        self.name = name

    def subscribe(self, protocol: Any, channel: str) -> None:
        """
        Add C{protocol} to C{channel}.

        @raise ChannelError: if the name is not acceptable.
        """
        self.hub.subscribe(protocol, channel, self.name)

    def unsubscribe(self, protocol: Any, channel: Optional[str] = None) -> None:
        """
        Remove C{protocol} from C{channel}, or from every channel here.
        """
        self.hub.unsubscribe(protocol, channel, self.name)

    def channels_of(self, protocol: Any) -> frozenset[str]:
        """
        The channels here that C{protocol} is subscribed to.
        """
        return self.hub.channels_of(protocol, self.name)

    def members(self, channel: str) -> frozenset[Any]:
        """
        The connections subscribed to C{channel}.
        """
        return self.hub.members(channel, self.name)

    def subscribers(self, channel: str) -> int:
        """
        How many connections are subscribed to C{channel}.
        """
        return self.hub.subscribers(channel, self.name)

    def publish(
        self, channel: str, payload: bytes, isBinary: bool = False, exclude: Any = None
    ) -> int:
        """
        Send one message to every subscriber of C{channel}, framed once
        (and through Redis to other processes, when configured).

        @param exclude: a connection that does not get it (the sender:
            C{exclude=self}), or a collection of them.
        @return: how many local subscribers it was handed to.
        @raise ChannelError: if the name is not acceptable.
        """
        return self.hub.publish(channel, payload, isBinary, self.name, exclude)


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
                member_failed(member, "a channel delivery")
                continue
            sent += 1
    return sent


def member_failed(member: Any, where: str) -> None:
    """
    One member of a channel raised while taking a message (in C{where}):
    its connection alone is closed with 1011 and logged; a protocol outside
    a wsmux route is only logged.  Call it from the C{except} block.
    """
    connection = getattr(member, "wsmux", None)
    if connection is not None:
        connection.handler_failed(where)
    else:
        log.failure("{where} failed for one member", where=where)
