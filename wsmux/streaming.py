"""
Streaming: send a message while it is being produced, receive one as it
arrives.

Sending: L{stream_message} takes an iterable or async iterable of chunks,
L{MessageConsumer} takes a Twisted producer; either way the chunks become
the frames of one WebSocket message, and a client that does not read pauses
the production instead of growing a buffer.

Receiving: a handler that inherits L{StreamingReceiver} gets each chunk of
each message as it arrives (C{onStreamData}) and never holds a message
whole, so a 1 GiB upload never sits in memory.
"""

from __future__ import annotations

from typing import Any, AsyncIterable, Iterable, Union

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from wsmux._compat_autobahn import fail_connection
from wsmux.channels import member_failed
from wsmux.connection import clock
from wsmux.logs import log

Chunks = Union[Iterable[bytes], AsyncIterable[bytes]]


def stream_message(protocol: Any, chunks: Chunks, isBinary: bool = True) -> Deferred[int]:
    """
    Send one message made of C{chunks}, each as one frame, waiting while the
    client is not reading.

    @param protocol: a connection on a wsmux route.
    @param chunks: an iterable, or an async iterable whose awaits are
        Twisted Deferreds, of C{bytes}.
    @return: a Deferred firing with the number of bytes sent, or failing
        with L{ConnectionDone} if the connection closed first.
    """
    return ensureDeferred(_stream(protocol, chunks, isBinary))


def _begin(protocol: Any, isBinary: bool) -> None:
    # Uncompressed where the connection deflates (RFC 7692 lets any message
    # go so): Autobahn's frame-by-frame sending marks the first frame
    # compressed but sends each chunk as it is.
    protocol.beginMessage(isBinary=isBinary, doNotCompress=True)


async def _stream(protocol: Any, chunks: Chunks, isBinary: bool) -> int:
    sent = 0
    _begin(protocol, isBinary)
    try:
        if hasattr(chunks, "__aiter__"):
            async for chunk in chunks:  # type: ignore[union-attr]
                sent += await _frame(protocol, chunk)
        else:
            for chunk in chunks:  # type: ignore[union-attr]
                sent += await _frame(protocol, chunk)
    except ConnectionDone:
        raise
    except Exception:
        # The source failed mid-message, which cannot be finished: the
        # connection ends with 1011, rather than hold every later message
        # behind it.
        member_failed(protocol, "a streamed message's source")
        raise
    _check_open(protocol)
    protocol.endMessage()
    return sent


async def _frame(protocol: Any, chunk: bytes) -> int:
    if not chunk:
        return 0
    await protocol.wsmux.writable()
    _check_open(protocol)
    protocol.beginMessageFrame(len(chunk))
    protocol.sendMessageFrameData(chunk)
    return len(chunk)


def _check_open(protocol: Any) -> None:
    if protocol.state != protocol.STATE_OPEN:
        raise ConnectionDone("the connection closed while a message was streaming")


def stream_to_channel(
    hub: Any, channel: str, chunks: Chunks, isBinary: bool = True
) -> Deferred[int]:
    """
    Stream one message to every subscriber of C{channel} on this process.

    Each chunk is framed for every subscriber as it is produced.  The
    stream never waits for one subscriber: a subscriber that falls more
    than its C{max_send_queue} behind gets its route's slow-consumer policy
    (closed with 1008), and a subscriber that leaves or closes is skipped.

    @return: a Deferred firing with the number of payload bytes produced.
    """
    return ensureDeferred(_stream_to_channel(hub, channel, chunks, isBinary))


async def _stream_to_channel(hub: Any, channel: str, chunks: Chunks, isBinary: bool) -> int:
    members = []
    busy = 0
    for member in hub.members(channel):
        if member.state != member.STATE_OPEN:
            continue
        if member.send_state != member.SEND_STATE_GROUND:
            # Sending a message of its own (or another stream): a second
            # message cannot begin inside it, and being busy is no failure.
            busy += 1
            continue
        if _each(member, _begin, member, isBinary):
            members.append(member)
    if busy:
        log.info(
            "channel stream on {channel!r}: {n} member(s) busy sending another message "
            "were left out",
            channel=channel,
            n=busy,
        )
    produced = 0

    def frame(chunk: bytes) -> None:
        for member in members:
            if member.state != member.STATE_OPEN:
                continue
            if member.wsmux.paused and not member.wsmux.room_for(len(chunk)):
                continue
            _each(member, _send_frame, member, chunk)

    try:
        if hasattr(chunks, "__aiter__"):
            async for chunk in chunks:  # type: ignore[union-attr]
                if chunk:
                    frame(chunk)
                    produced += len(chunk)
        else:
            for chunk in chunks:  # type: ignore[union-attr]
                if chunk:
                    frame(chunk)
                    produced += len(chunk)
    except Exception:
        # The source failed: no member's message can be finished (see _stream).
        for member in members:
            if member.state == member.STATE_OPEN:
                member_failed(member, "a channel stream's source")
        raise
    for member in members:
        if member.state == member.STATE_OPEN:
            _each(member, member.endMessage)
    return produced


def _send_frame(member: Any, chunk: bytes) -> None:
    member.beginMessageFrame(len(chunk))
    member.sendMessageFrameData(chunk)


def _each(member: Any, call: Any, *args: Any, **kwargs: Any) -> bool:
    # One member's failure (already streaming another message, a handler
    # that raises in an override) closes that member with 1011 and leaves
    # the others' stream alone.
    try:
        call(*args, **kwargs)
    except Exception:
        member_failed(member, "a channel stream")
        return False
    return True


@implementer(IConsumer)
class MessageConsumer:
    """
    A Twisted consumer that sends what a producer writes as one WebSocket
    message (one frame per write)::

        consumer = MessageConsumer(self)
        FileSender().beginFileTransfer(open(path, "rb"), consumer)
        consumer.done.addCallback(lambda size: ...)

    Push producers are paused while the client is not reading; pull
    producers are asked for more only when it is.

    @ivar done: fires with the bytes sent when the producer unregisters.
    """

    def __init__(self, protocol: Any, isBinary: bool = True) -> None:
        self.protocol = protocol
        self.isBinary = isBinary
        self.done: Deferred[int] = Deferred()
        self.sent = 0
        self._source: Any = None
        self._streaming = True
        self._started = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._source, self._streaming = producer, streaming
        if streaming:
            self.protocol.registerProducer(producer, True)
        else:
            self._pull()

    def _pull(self) -> None:
        def more(_: object) -> None:
            if self._source is None:
                return
            if self.protocol.state != self.protocol.STATE_OPEN:
                self._connection_ended()
                return
            # On the next turn: the producer is still inside write().
            clock().callLater(0, self._resume)

        self.protocol.wsmux.writable().addCallbacks(more, lambda _: self._connection_ended())

    def _connection_ended(self) -> None:
        # A pull producer waits to be asked for more: asked never again, it
        # is stopped (a FileSender closes its file), and done fails.
        producer, self._source = self._source, None
        if producer is not None and not self._streaming:
            producer.stopProducing()
        if not self.done.called:
            self.done.errback(ConnectionDone("the connection closed while a message was streaming"))

    def _resume(self) -> None:
        if self._source is not None:
            self._source.resumeProducing()

    def unregisterProducer(self) -> None:
        if self._streaming and self._source is not None:
            self.protocol.unregisterProducer(self._source)
        self._source = None
        if self.done.called:
            return
        if self.protocol.state != self.protocol.STATE_OPEN:
            self.done.errback(ConnectionDone("the connection closed while a message was streaming"))
            return
        if not self._started:
            _begin(self.protocol, self.isBinary)
        self.protocol.endMessage()
        self.done.callback(self.sent)

    def write(self, data: bytes) -> None:
        if self.protocol.state != self.protocol.STATE_OPEN:
            if self._source is not None:
                self._source.stopProducing()
            return
        if not self._started:
            self._started = True
            _begin(self.protocol, self.isBinary)
        if data:
            self.protocol.beginMessageFrame(len(data))
            self.protocol.sendMessageFrameData(data)
            self.sent += len(data)
        if not self._streaming:
            self._pull()


class StreamingReceiver:
    """
    A handler mixin that receives messages chunk by chunk::

        class Upload(StreamingReceiver, WebSocketServerProtocol):
            def onStreamData(self, data):
                self.file.write(data)

    The route's C{max_message_size} does not apply (nothing is held);
    C{max_stream_size} (bytes, 0 for no limit) closes with 1009 past it.
    Set C{max_fragments = 0} on routes that take long streams.
    """

    max_stream_size: int = 0
    stream_size: int = 0

    def onStreamBegin(self, isBinary: bool) -> None:
        """
        A message begins.
        """

    def onStreamData(self, data: bytes) -> None:
        """
        The next chunk of the current message.
        """

    def onStreamEnd(self) -> None:
        """
        The current message is complete.
        """

    # Autobahn's frame-level API, without its buffering.

    def onMessageBegin(self, isBinary: bool) -> None:
        self.stream_size = 0
        self.onStreamBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        self.stream_size += length
        if 0 < self.max_stream_size < self.stream_size:
            fail_connection(self, 1009, f"message over {self.max_stream_size} bytes")

    def onMessageFrameData(self, payload: bytes) -> None:
        if not self.failedByMe:  # type: ignore[attr-defined]
            self.onStreamData(payload)

    def onMessageFrameEnd(self) -> None:
        pass

    def onMessageEnd(self) -> None:
        if not self.failedByMe:  # type: ignore[attr-defined]
            self.onStreamEnd()


def chunks_of(data: bytes, size: int) -> Iterable[bytes]:
    """
    C{data} in pieces of at most C{size} bytes.
    """
    for i in range(0, len(data), size):
        yield data[i : i + size]


__all__ = [
    "MessageConsumer",
    "stream_to_channel",
    "StreamingReceiver",
    "chunks_of",
    "stream_message",
]
