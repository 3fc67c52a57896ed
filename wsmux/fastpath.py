"""
The common case of a WebSocket connection, done in few steps.

Autobahn's frame machinery is general: every frame goes through about a
dozen hooks (frame begin/data/end, message begin/frame/end...), creates an
XOR masker object, formats debug-log arguments and fires an observer event
with a Deferred, whether anyone listens or not.  Most traffic is small,
whole, masked text or binary frames on an open connection, and for those
this mixin does the same work directly:

  - several whole frames in one read are cut out of the buffer at once;
  - unmasking small payloads is one integer XOR;
  - a big whole binary frame is gathered as it arrives, joined once and
    unmasked where it lies (Autobahn copies each chunk three times);
  - text is validated by Python's strict UTF-8 decoder (RFC 3629, the same
    set of byte sequences Autobahn's validator accepts);
  - the handler's C{onMessage} is called as Autobahn would call it;
  - an unfragmented, uncompressed message goes out as one write, sent at
    once when the socket has room (L{write_now}).

A whole close frame is cut out the same way and its code and reason go
to Autobahn's C{onCloseFrame}, which checks them and answers.

Anything else (pings, pongs, fragments, compressed or oversized frames,
invalid UTF-8, frames over the size limits, a connection not open, frame
or octet logging, timings, a send queue) takes Autobahn's own path, which
also does every error and close code; the fast path only stops before the
frame it does not take.  Autobahn's traffic counters are kept the same, so
metrics see no difference.

A route uses the fast path only when its handler class leaves Autobahn's
frame- and message-level hooks alone (L{fast_path_ok}); a handler that
overrides, say, C{onMessageFrameData} to stream gets Autobahn's path as
before.  Handlers stay plain C{WebSocketServerProtocol} subclasses.
"""

from __future__ import annotations

import struct
from typing import Any, Optional, Sequence

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet import tcp

# Payloads up to this size are unmasked with an integer XOR; larger ones
# with Autobahn's C masker (faster past about 2 KiB).
_INT_XOR_MAX = 2048

# Whole binary frames from this size on are gathered into one buffer and
# unmasked in place, in one pass, instead of chunk by chunk.
_BIG = 65536

# Frames the fast path takes: FIN set, no RSV bits, text or binary (and
# a close frame).
_TEXT = 0x81
_BINARY = 0x82
_CLOSE = 0x88

# Receive-side hooks a handler must not override for the fast path.
RECEIVE_HOOKS = (
    "dataReceived",
    "_dataReceived",
    "consumeData",
    "processData",
    "processControlFrame",
    "onFrameBegin",
    "onFrameData",
    "onFrameEnd",
    "_onMessageBegin",
    "_onMessageFrameBegin",
    "_onMessageFrameData",
    "_onMessageFrameEnd",
    "_onMessageFrame",
    "_onMessageEnd",
    "_onMessage",
    "onMessageBegin",
    "onMessageFrameBegin",
    "onMessageFrameData",
    "onMessageFrameEnd",
    "onMessageFrame",
    "onMessageEnd",
)

# Send-side methods a handler must not override for the fast path.
SEND_HOOKS = ("sendMessage", "sendPreparedMessage", "sendFrame", "sendData")


def _overrides(handler: type, names: tuple[str, ...]) -> bool:
    return any(
        getattr(handler, name, None) is not getattr(WebSocketServerProtocol, name) for name in names
    )


def fast_path_ok(handler: type) -> tuple[bool, bool]:
    """
    Whether the receive and the send fast paths keep C{handler}'s
    behaviour: true for each unless C{handler} overrides one of the hooks
    the path skips.
    """
    return not _overrides(handler, RECEIVE_HOOKS), not _overrides(handler, SEND_HOOKS)


def unmask(payload: bytes, mask: bytes) -> bytes:
    """
    XOR C{payload} with the 4-byte C{mask} repeated (RFC 6455, 5.3).
    """
    n = len(payload)
    if n > _INT_XOR_MAX:
        return create_xor_masker(mask, n).process(payload)  # type: ignore[no-any-return]
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _nvx_unmask_in_place() -> Any:
    # Autobahn's C masker (NVX), driven directly so that it can work in
    # place on a bytearray; None when this Autobahn build lacks it, and big
    # frames then take Autobahn's path.
    try:
        from _nvx_xormasker import ffi, lib  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - Autobahn without NVX
        return None

    def unmask_in_place(buffer: bytes, mask: bytes) -> None:
        # Writes into C{buffer}: only for a bytes object just made and not
        # yet seen by anyone else.
        key = ffi.new("uint8_t[4]", mask)
        masker = ffi.gc(lib.nvx_xormask_new(key), lib.nvx_xormask_free)
        lib.nvx_xormask_set_impl(masker, 2)  # SSE2
        lib.nvx_xormask_process(masker, ffi.from_buffer("uint8_t[]", buffer), len(buffer))

    return unmask_in_place


unmask_in_place = _nvx_unmask_in_place()


def frame_header(opcode_byte: int, length: int) -> bytes:
    """
    An unmasked frame header (server to client).
    """
    if length < 126:
        return bytes((opcode_byte, length))
    if length < 65536:
        return bytes((opcode_byte, 126, length >> 8, length & 0xFF))
    return struct.pack("!BBQ", opcode_byte, 127, length)


def idle_tcp(transport: Any) -> bool:
    """
    Whether C{transport} is Twisted's own plain TCP server transport, open,
    with nothing waiting in its send buffers.
    """
    return bool(
        transport.__class__ is tcp.Server
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        # Twisted's buffers, both empty (no public API says so).
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    )


def write_now(transport: Any, pieces: Sequence[bytes]) -> None:
    """
    Write C{pieces} in order, sending at once when nothing is waiting
    before them.

    Twisted's TCP transport never sends from C{write}: it buffers, asks the
    reactor to watch for writability and sends on the next turn, which costs
    two C{epoll_ctl} calls per write; to a thousand subscribers of a
    broadcast that is most of the work.  Like asyncio and uWebSockets, this
    tries the socket first (several pieces in one C{sendmsg}, without
    joining them); whatever does not fit goes to the transport's buffer as
    usual, behind nothing, so order is kept, and Twisted's producer pausing
    and error handling take over from there.  Only for plain TCP transports
    with an empty buffer; anything else (TLS, a closing connection,
    in-memory transports) uses the transport's own C{write}.
    """
    if idle_tcp(transport):
        try:
            if len(pieces) == 1:
                sent = transport.socket.send(pieces[0])
            else:
                sent = transport.socket.sendmsg(pieces)
        except OSError:
            # EAGAIN, too many pieces for one call, or an error Twisted's
            # own write path will meet and report properly.
            sent = 0
        if sent:
            i = 0
            while i < len(pieces) and sent >= len(pieces[i]):
                sent -= len(pieces[i])
                i += 1
            if i == len(pieces):
                return
            pieces = [pieces[i][sent:], *pieces[i + 1 :]]
    if len(pieces) == 1:
        transport.write(pieces[0])
    else:
        transport.writeSequence(pieces)


# Writes held back while reads are handled (FastReceiveMixin.dataReceived):
# each transport's pieces, in order, and how many bytes they make.
#
# What a read brings (several frames, a burst of messages to a channel)
# usually means several writes to the same connections: a reply to each
# message, or each message to every member of a channel.  Sent as they are
# made, that is a system call each; held, it is one per connection, as
# Twisted's buffered writes would be, but without two epoll_ctl calls per
# connection.  uWebSockets calls this corking.  When the connection that
# read is Twisted's plain TCP transport, what is held goes out at the end of
# the reactor's turn (a zero-delay call), after every read the reactor had
# ready, as Twisted's own writes do: sends made together, after the reads,
# cost less than sends between them (measured: a quarter more echoes a
# second, and lower latency, against the end of each read).  Otherwise (TLS,
# in-memory transports) it goes out when the read is handled.
_held: Optional[dict[Any, list[bytes]]] = None
_held_bytes: dict[Any, int] = {}

# Past this many bytes held for one connection, they go out at once: the
# transport's own buffering and producer pausing (and with them the route's
# slow-consumer policy) apply as if nothing were held.
HOLD_MAX = 65536


def send_held() -> None:
    """
    Stop holding writes and send what each connection was given.
    """
    global _held
    held, _held = _held, None
    if held:
        _held_bytes.clear()
        for transport, pieces in held.items():
            write_now(transport, pieces)


def hold(transport: Any, pieces: Sequence[bytes]) -> None:
    """
    Write C{pieces} to C{transport}: at once, or with the others held.
    """
    held = _held
    if held is None:
        write_now(transport, pieces)
        return
    size = _held_bytes.get(transport, 0) + sum(map(len, pieces))
    waiting = held.get(transport)
    if waiting is None:
        held[transport] = list(pieces)
    else:
        waiting.extend(pieces)
    if size > HOLD_MAX:
        release_held(transport)
    else:
        _held_bytes[transport] = size


def release_held(transport: Any) -> None:
    """
    Send what is held for C{transport} now, before anything that writes to
    it another way (Autobahn's own send path, closing the connection).
    """
    if _held is not None:
        _held_bytes.pop(transport, None)
        pieces = _held.pop(transport, None)
        if pieces:
            write_now(transport, pieces)


class FastReceiveMixin:
    """
    Take whole small data frames without Autobahn's per-frame hooks.

    Sits directly in front of the handler class.
    """

    _fast_busy: bool = False
    _fast_again: bool = False
    # A big binary frame being gathered: pieces so far, their size, the
    # frame's length and mask.
    _big: Optional[list[bytes]] = None
    _big_have: int = 0
    _big_length: int = 0
    _big_mask: bytes = b""
    _idle_timeout: float = 0.0
    _idle_call: Any = None

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's adapter formats a debug-log line per read here.  What
        # this read makes anyone write is held (see _held), whichever path
        # (this one or Autobahn's) handles it.  A handler that raises ends
        # its own connection (RouteProtocolMixin.handler_failed), never the
        # read loop of another.
        global _held
        try:
            if _held is not None:  # held already: this turn's, or a read inside a read
                self._dataReceived(data)  # type: ignore[attr-defined]
                return
            _held = {}
            transport: Any = self.transport  # type: ignore[attr-defined]
            if transport.__class__ is tcp.Server:
                transport.reactor.callLater(0, send_held)  # type: ignore[attr-defined]
                self._dataReceived(data)  # type: ignore[attr-defined]
                return
            try:
                self._dataReceived(data)  # type: ignore[attr-defined]
            finally:
                send_held()
        except Exception:
            self.handler_failed("a message callback")  # type: ignore[attr-defined]

    def consumeData(self) -> None:
        if self.state != self.STATE_OPEN and self._big is None:  # type: ignore[attr-defined]
            super().consumeData()  # type: ignore[misc]
            return
        if self._fast_busy:
            # Called again from inside a handler (an in-memory transport can
            # deliver synchronously): the outer loop below takes the new
            # bytes, in order, after the messages it has already cut out.
            self._fast_again = True
            return
        self._fast_busy = True
        try:
            open_ = self.STATE_OPEN  # type: ignore[attr-defined]
            closing = self.STATE_CLOSING  # type: ignore[attr-defined]
            while True:
                self._fast_again = False
                state = self.state  # type: ignore[attr-defined]
                if state != open_ and state != closing:
                    return
                if self._big is not None:
                    if not self._gather_big():
                        return
                    continue
                if state == open_ and self.current_frame is None:  # type: ignore[attr-defined]
                    messages = self._cut_messages()
                    if messages:
                        self._deliver(messages)
                        continue
                    if self._start_big() or self._close_frame():
                        continue
                if not self.processData() and not self._fast_again:  # type: ignore[attr-defined]
                    return
        finally:
            self._fast_busy = False

    def _receive_ok(self) -> bool:
        # Between messages, and nothing asked of Autobahn's path.
        return not (
            self.inside_message  # type: ignore[attr-defined]
            or self.logFrames  # type: ignore[attr-defined]
            or self.trackedTimings  # type: ignore[attr-defined]
            or not self.applyMask  # type: ignore[attr-defined]
        )

    def _cut_messages(self) -> list[tuple[bytes, bool]]:
        """
        Cut the whole fast-path frames at the head of the buffer out of it.
        """
        if not self._receive_ok():
            return []
        data: bytes = self.data  # type: ignore[has-type]
        end = len(data)
        max_message = self.maxMessagePayloadSize  # type: ignore[attr-defined]
        max_frame = self.maxFramePayloadSize  # type: ignore[attr-defined]
        validate = self.utf8validateIncoming  # type: ignore[attr-defined]
        messages: list[tuple[bytes, bool]] = []
        octets = 0
        i = 0
        while end - i >= 6:
            b0 = data[i]
            b1 = data[i + 1]
            if (b0 != _TEXT and b0 != _BINARY) or b1 < 0x80:
                break  # not a whole data frame, or not masked
            length = b1 & 0x7F
            if length < 126:
                start = i + 6
            elif length == 126:
                if end - i < 8:
                    break
                length = (data[i + 2] << 8) | data[i + 3]
                if length < 126:
                    break  # not minimal: Autobahn's path fails it
                start = i + 8
            else:
                break  # 64-bit lengths: big frames gain nothing here
            stop = start + length
            if stop > end:
                break
            if (0 < max_message < length) or (0 < max_frame < length):
                break
            payload = data[start:stop]
            if length:
                payload = unmask(payload, data[start - 4 : start])
            if b0 == _TEXT and validate:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    break  # Autobahn's path closes with 1007 and says where
            messages.append((payload, b0 == _BINARY))
            octets += length
            i = stop
        if messages:
            self.data = data[i:]
            self._received(len(messages), octets)
        return messages

    def _close_frame(self) -> bool:
        """
        Take a whole close frame that begins the buffer and hand its code
        and reason to Autobahn's C{onCloseFrame}, as Autobahn's frame
        machinery would (it checks both and answers).
        """
        data: bytes = self.data  # type: ignore[has-type]
        if len(data) < 6 or data[0] != _CLOSE or not self._receive_ok():
            return False
        b1 = data[1]
        length = b1 & 0x7F
        if b1 < 0x80 or length > 125 or length == 1 or len(data) < 6 + length:
            return False  # unmasked, too long, a lone code byte, or not all here
        payload = unmask(data[6 : 6 + length], data[2:6]) if length else b""
        self.data = data[6 + length :]
        code = (payload[0] << 8) | payload[1] if length else None
        self.onCloseFrame(code, payload[2:] if length > 2 else None)  # type: ignore[attr-defined]
        return True

    def _start_big(self) -> bool:
        """
        Start gathering a big whole binary frame if one begins the buffer.

        Text stays on Autobahn's path, which checks UTF-8 as the bytes
        arrive and fails a bad message before the rest of it comes.
        """
        data: bytes = self.data  # type: ignore[has-type]
        if (
            unmask_in_place is None
            or len(data) < 14
            or data[0] != _BINARY
            or data[1] != 0xFF  # masked, 64-bit length
            or not self._receive_ok()
        ):
            return False
        length = int.from_bytes(data[2:10], "big")
        max_message = self.maxMessagePayloadSize  # type: ignore[attr-defined]
        max_frame = self.maxFramePayloadSize  # type: ignore[attr-defined]
        if length < _BIG or length >> 63 or 0 < max_message < length or 0 < max_frame < length:
            return False
        first = data[14 : 14 + length]
        self._big = [first]
        self._big_have = len(first)
        self._big_length = length
        self._big_mask = data[10:14]
        self.data = data[14 + len(first) :]
        self._activity()
        return True

    def _gather_big(self) -> bool:
        """
        Add buffered bytes to the big frame; deliver it once whole.
        """
        assert self._big is not None
        data: bytes = self.data  # type: ignore[has-type]
        need = self._big_length - self._big_have
        if len(data) <= need:
            self._big.append(data)
            self._big_have += len(data)
            self.data = b""
        else:
            self._big.append(data[:need])
            self._big_have = self._big_length
            self.data = data[need:]
        if self._big_have < self._big_length:
            return False
        # One copy into a new bytes object (the empty piece makes sure join
        # never hands back one of the pieces), unmasked where it lies.
        self._big.append(b"")
        payload, self._big = b"".join(self._big), None
        assert unmask_in_place is not None
        unmask_in_place(payload, self._big_mask)
        self._received(1, self._big_length)
        self._deliver([(payload, True)])
        return True

    def _received(self, messages: int, octets: int) -> None:
        # Autobahn's counters for whole single-frame messages, and activity.
        stats = self.trafficStats  # type: ignore[attr-defined]
        stats.incomingOctetsWebSocketLevel += octets
        stats.incomingOctetsAppLevel += octets
        stats.incomingWebSocketFrames += messages
        stats.incomingWebSocketMessages += messages
        self._activity()

    def _uncount(self, messages: list[tuple[bytes, bool]]) -> None:
        # Take back what _received counted for these messages.
        stats = self.trafficStats  # type: ignore[attr-defined]
        octets = sum(len(payload) for payload, _ in messages)
        stats.incomingOctetsWebSocketLevel -= octets
        stats.incomingOctetsAppLevel -= octets
        stats.incomingWebSocketFrames -= len(messages)
        stats.incomingWebSocketMessages -= len(messages)

    def _activity(self) -> None:
        # What Autobahn and the idle timeout do when a data frame arrives.
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:  # type: ignore[attr-defined]
            self._cancelAutoPingTimeoutCall()  # type: ignore[attr-defined]
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self._idle_timeout)

    def _deliver(self, messages: list[tuple[bytes, bool]]) -> None:
        open_ = self.STATE_OPEN  # type: ignore[attr-defined]
        closed = self.STATE_CLOSED  # type: ignore[attr-defined]
        on_message = self.onMessage  # type: ignore[attr-defined]
        for i, (payload, is_binary) in enumerate(messages):
            state = self.state  # type: ignore[attr-defined]
            if state != open_:
                # The handler closed during the batch.  Autobahn parses a
                # frame only after delivering the one before, and counts it
                # only while open; it parses none once closed.
                if state == closed or self.failedByMe:  # type: ignore[attr-defined]
                    self._uncount(messages[i:])
                    return
                self._uncount(messages[i : i + 1])
            self.message_is_binary = is_binary
            result = on_message(payload, is_binary)
            if result is not None:
                self.watch(result, "onMessage")  # type: ignore[attr-defined]
            # Autobahn's observable "message" event, when anyone listens.
            if self._listeners or self._parent is not None:  # type: ignore[attr-defined]
                self.fire("message", payload, is_binary=is_binary)  # type: ignore[attr-defined]


class FastSendMixin:
    """
    Send an unfragmented, uncompressed message as one write.

    Sits directly in front of the handler class, behind wsmux's
    backpressure checks (which apply only while the client is not reading,
    when this path stands aside).
    """

    _paused: bool = False

    def _write(self, *pieces: bytes) -> None:
        hold(self.transport, pieces)  # type: ignore[attr-defined]

    def _fast_send_ok(self) -> bool:
        return (
            not self._paused
            and self.state == self.STATE_OPEN  # type: ignore[attr-defined]
            and not self.send_queue  # type: ignore[attr-defined]
            and not self.logFrames  # type: ignore[attr-defined]
            and not self.logOctets  # type: ignore[attr-defined]
            and not self.trackedTimings  # type: ignore[attr-defined]
            and not self.maskServerFrames  # type: ignore[attr-defined]
        )

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: Optional[int] = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        length = len(payload)
        if (
            fragmentSize is None
            and not sync
            and type(payload) is bytes
            and (doNotCompress or self._perMessageCompress is None)  # type: ignore[attr-defined]
            and not (0 < self.autoFragmentSize < length)  # type: ignore[attr-defined]
            and self._fast_send_ok()
        ):
            header = frame_header(_BINARY if isBinary else _TEXT, length)
            if length < 65536:
                self._write(header + payload)
            else:
                # The header and a big payload go out together, uncopied.
                self._write(header, payload)
            stats = self.trafficStats  # type: ignore[attr-defined]
            stats.outgoingWebSocketMessages += 1
            stats.outgoingWebSocketFrames += 1
            stats.outgoingOctetsAppLevel += length
            stats.outgoingOctetsWebSocketLevel += length
            stats.outgoingOctetsWireLevel += len(header) + length
            return
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)  # type: ignore[misc]

    def sendData(self, data: bytes, sync: bool = False, chopsize: Optional[int] = None) -> None:
        # Autobahn's own writes (the handshake response, prepared
        # broadcast messages, pongs, close frames, fragments): the same as
        # Autobahn's, without its debug-log
        # formatting, and sent at once when the socket has room.
        state = self.state  # type: ignore[attr-defined]
        if (
            sync
            or chopsize
            or self._paused
            or self.send_queue  # type: ignore[attr-defined]
            or self.logOctets  # type: ignore[attr-defined]
        ):
            # Autobahn writes to the transport itself: what is held for
            # this connection goes first.
            release_held(self.transport)  # type: ignore[attr-defined]
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
            return
        self._write(data)
        if state == self.STATE_OPEN:  # type: ignore[attr-defined]
            self.trafficStats.outgoingOctetsWireLevel += len(data)  # type: ignore[attr-defined]
        elif state == self.STATE_CONNECTING:  # type: ignore[attr-defined]
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)  # type: ignore[attr-defined]
