"""
Every use wsmux makes of Twisted's private names (see L{wsmux._compat}).

Checked against Twisted 24.7.0 and 26.10.0.  Each internal below is used
only while its check passes and C{WSMUX_PUBLIC_PATH} is unset; otherwise
the function that wraps it takes Twisted's public path.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Optional, Sequence

from OpenSSL.SSL import Error as TLSError
from OpenSSL.SSL import WantReadError, ZeroReturnError
from twisted.internet import abstract, main, tcp
from twisted.logger import LogPublisher
from twisted.protocols import tls
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import ProtocolWrapper
from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.python.log import ILogContext
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.iweb import INonQueuedRequestFactory
from zope.interface import providedBy
from zope.interface.declarations import Provides

from wsmux._compat import all_of, code_names, declare, missing_names, slots_hold
from wsmux._compat_pyopenssl import tls_bio_read, tls_recv, tls_send

try:
    from twisted.web.http import _nameEncoder, _parseRequestLine
    from twisted.web.http_headers import InvalidHeaderName
except ImportError:  # pragma: no cover - another Twisted: the check says so
    _nameEncoder = _parseRequestLine = InvalidHeaderName = None  # type: ignore[assignment,misc]


# -- twisted.web: a request head read in one pass -----------------------------

ONE_PASS_HEAD = declare(
    "twisted.one_pass_head",
    touches=(
        "twisted.web.http._parseRequestLine",
        "twisted.web.http._nameEncoder",
        "twisted.web.http_headers.InvalidHeaderName",
        "HTTPChannel._HTTPChannel__first_line",
        "HTTPChannel._handlingRequest",
        "HTTPChannel._command / _path / _version",
        "LineReceiver._buffer / _busyReceiving",
        "Headers._rawHeaders (the parsed headers put in directly)",
    ),
    why=(
        "a request head that arrives whole in one read is parsed in one pass, "
        "with twisted.web's own request-line and header-name checks, instead of "
        "a call per line through three layers (a fifth of a handshake)"
    ),
    checked="Twisted 24.7.0, 26.10.0",
    fallback="every request head takes twisted.web's line parser",
    check=lambda: all_of(
        None if _parseRequestLine is not None else "twisted.web.http has no _parseRequestLine",
        missing_names(_nameEncoder, ("encode",)),
        missing_names(HTTPChannel, ("_HTTPChannel__first_line", "_buffer", "_busyReceiving")),
        code_names(HTTPChannel.__init__, ("_handlingRequest",)),
        code_names(
            HTTPChannel.lineReceived,
            ("_HTTPChannel__first_line", "_parseRequestLine", "_command", "_path", "_version"),
        ),
        code_names(HTTPChannel.allContentReceived, ("_command", "_path", "_version")),
        code_names(LineReceiver.dataReceived, ("_busyReceiving", "_buffer", "paused", "line_mode")),
        code_names(
            Headers.addRawHeader, ("_rawHeaders", "_nameEncoder", "_sanitizeLinearWhitespace")
        ),
    ),
)

# Header lines a one-pass read leaves to twisted.web: a body to read.
_BODY_HEADERS = (b"Content-Length", b"Transfer-Encoding")

# Bytes looked for as integers: CPython 3.11 tries a bytes needle as an
# integer first and formats the TypeError it gets before searching (four
# times the cost, measured; nine per cent of a handshake's instructions).
_NUL, _LF, _CR, _DEL = 0, 10, 13, 127


def printable_ascii(line: bytes) -> bool:
    """
    Whether request line C{line} is printable ASCII, as twisted.web means
    to take (its check lets bytes 0x7f-0xb0 through, which Autobahn's
    parser reads as spaces or line ends).
    """
    return line.isascii() and _DEL not in line


def parse_whole_head(
    channel: Any, data: bytes, limits: Any
) -> Optional[tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]], int]]:
    """
    Parse a request head that arrived whole, and alone, in one read.

    Only a plain case qualifies: nothing read yet of this request on
    C{channel}, a C{GET} head within every cap of C{limits}, no folded or
    malformed line, no body.  Anything else gives L{None} having changed
    nothing, for the line parser to read (and refuse, when it must).

    @return: the method, target, version, headers and the offset where the
        head ends (before its empty line).
    """
    if (
        not ONE_PASS_HEAD
        or data[:4] != b"GET "
        or channel._buffer
        or channel._busyReceiving
        or not channel.line_mode
        or channel.paused
        or channel._handlingRequest
        or not channel.persistent
        or channel._HTTPChannel__first_line != 1
    ):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    if (
        not printable_ascii(lines[0])
        or len(lines[0]) > limits.max_request_line
        or len(lines) - 1 > limits.max_headers
        or end - len(lines[0]) > limits.max_header_bytes
    ):
        return None
    try:
        command, path, version = _parseRequestLine(lines[0])
    except ValueError:
        return None
    headers = []
    max_name = limits.max_header_name
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _LF in line or len(name) > max_name:
            return None
        try:
            # Refuses a folded line too (its name starts with a space).
            name = _nameEncoder.encode(name)
        except InvalidHeaderName:
            return None
        value = value.strip(b" \t")
        if _NUL in value or _CR in value or name in _BODY_HEADERS:
            return None
        headers.append((name, value))
    return command, path, version, headers, end


def _store(into: Headers, headers: list[tuple[bytes, bytes]]) -> None:
    # What addRawHeader would store: the names are encoded as it encodes
    # them, and no value has a line break for it to take out.
    stored = into._rawHeaders
    for name, value in headers:
        values = stored.get(name)
        if values is None:
            stored[name] = [value]
        else:
            values.append(value)


def parsed_headers(headers: list[tuple[bytes, bytes]]) -> Headers:
    """
    The C{Headers} C{twisted.web} would make of the header lines of a head
    L{parse_whole_head} accepted.
    """
    made = Headers()
    _store(made, headers)
    return made


def start_parsed_request(
    channel: Any,
    data: bytes,
    end: int,
    command: bytes,
    path: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes]],
) -> Any:
    """
    Make C{channel}'s request from a head L{parse_whole_head} accepted and
    run it, as C{HTTPChannel.dataReceived} and C{lineReceived} would have.

    @return: the request (it has run by the time this returns).
    """
    factory = channel.requestFactory
    if INonQueuedRequestFactory.providedBy(factory):
        request = factory(channel)
    else:
        request = factory(channel, len(channel.requests))
    channel.requests.append(request)
    request.raw_head = data[: end + 4]
    channel._HTTPChannel__first_line = 0
    _store(request.requestHeaders, headers)
    channel._command, channel._path, channel._version = command, path, version
    # What follows the head waits where LineReceiver keeps it, and goes
    # where it would go (the WebSocket protocol, after an upgrade).
    channel._buffer = data[end + 4 :]
    channel._busyReceiving = True
    try:
        # twisted.web's own headers step (this head has no body), then the
        # channel's own end of the request.
        HTTPChannel.allHeadersReceived(channel)
        channel.allContentReceived()
    finally:
        channel._busyReceiving = False
    # LineReceiver stops once the transport is closing, and so do we.
    transport: Any = channel.transport
    if channel._buffer and not (transport is not None and transport.disconnecting):
        LineReceiver.dataReceived(channel, b"")
    return request


# -- twisted.internet: sending at once on a plain TCP transport ---------------

DIRECT_SEND = declare(
    "twisted.direct_send",
    touches=(
        "tcp.Server.socket",
        "FileDescriptor._tempDataLen",
        "FileDescriptor.dataBuffer / offset",
        "tcp.Server._aborting",
        "tcp.Server.connectionLost (called directly for a clean close, and for a TCP "
        "connection Twisted's TLS layer asked to close, with nothing left to send)",
    ),
    why=(
        "a write to a plain TCP connection with nothing buffered goes to the socket at "
        "once (one send, no epoll_ctl pair), and a clean WebSocket close closes at once; "
        "so does a TLS connection once its TLS close is done"
    ),
    checked="Twisted 24.7.0, 26.10.0",
    fallback=(
        "writes go through the transport's write and writeSequence, and closes wait for "
        "the reactor to find the socket writable"
    ),
    check=lambda: all_of(
        missing_names(abstract.FileDescriptor, ("dataBuffer", "offset", "producer")),
        code_names(abstract.FileDescriptor.write, ("_tempDataLen",)),
        code_names(
            abstract.FileDescriptor.doWrite,
            ("dataBuffer", "offset", "_tempDataLen", "disconnecting", "_postLoseConnection"),
        ),
        missing_names(tcp.Server, ("TLS", "connected", "disconnecting", "_aborting")),
        code_names(tcp.Connection.writeSomeData, ("socket",)),
    ),
)


def idle_tcp(transport: Any) -> bool:
    """
    Whether C{transport} is Twisted's own plain TCP server transport, open,
    with nothing waiting in its send buffers (always C{False} without
    L{DIRECT_SEND}).
    """
    return bool(
        DIRECT_SEND
        and transport.__class__ in TCP_SERVERS
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._aborting
        # Twisted's buffers, both empty (no public API says so).
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    )


def write_now(transport: Any, pieces: Sequence[bytes], tls_now: bool = True) -> None:
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
    with an empty buffer; anything else (a closing connection, in-memory
    transports) uses the transport's own C{write}.

    A TLS connection's pieces are encrypted and sent the same way
    (L{tls_write}) when C{tls_now} is true: for the writes of a read, held
    to the end of the reactor's turn already.  Other writes (a timer's, a
    channel's from elsewhere) take Twisted's TLS path, which gathers a
    turn's writes into one record.
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
    elif tls_now and transport.__class__ in _TLS_TRANSPORTS and tls_ready(transport):
        tls_write(transport, pieces)
        return
    if len(pieces) == 1:
        transport.write(pieces[0])
    else:
        transport.writeSequence(pieces)


# -- twisted.protocols.tls: encrypting and sending at once --------------------

TLS_DIRECT_WRITE = declare(
    "twisted.tls_direct_write",
    touches=(
        "TLSMemoryBIOProtocol._tlsConnection / _handshakeDone / _lostTLSConnection / "
        "_appSendBuffer",
        "TLSMemoryBIOProtocol._write / _tlsShutdownFinished (called)",
        "BufferingTLSTransport._aggregator and _AggregateSmallWrites._buffer (flushed first)",
        "TLSMemoryBIOProtocol._flushSendBIO (replaced in wsmux's TLS transport: what it "
        "does, sending at once; called by tls_flush_sealed, and the records tls_seal "
        "leaves go out with the close_notify _shutdownTLS flushes)",
    ),
    why=(
        "a write to a TLS connection whose handshake is done is encrypted and its "
        "records sent at once, as a plain TCP write is (twisted.direct_send): no "
        "reactor turn in Twisted's small-write aggregator (a read's writes are held "
        "together already), no 16 KiB slices copied, no turn in the TCP buffer; and the "
        "records Twisted's TLS path flushes itself (the handshake, session tickets, "
        "alerts) are sent at once too"
    ),
    checked="Twisted 24.7.0, 26.10.0; pyOpenSSL 26.x",
    fallback="writes to TLS connections go through the transport's write",
    needs=("twisted.direct_send",),
    check=lambda: all_of(
        missing_names(
            tls.TLSMemoryBIOProtocol,
            ("_write", "_tlsShutdownFinished", "_handshakeDone", "_lostTLSConnection"),
        ),
        code_names(tls.BufferingTLSTransport.__init__, ("_aggregator",)),
        code_names(tls._AggregateSmallWrites.flush, ("_buffer",)),
        code_names(tls.TLSMemoryBIOProtocol.makeConnection, ("_tlsConnection", "_appSendBuffer")),
        code_names(
            tls.TLSMemoryBIOProtocol._write,
            ("_lostTLSConnection", "_tlsConnection", "send", "_flushSendBIO"),
        ),
        code_names(tls.TLSMemoryBIOProtocol._flushSendBIO, ("bio_read", "transport")),
        code_names(tls.TLSMemoryBIOProtocol.write, ("disconnecting", "_write")),
    ),
)

# What a TLS record adds to what it carries, at most (a CBC suite: header,
# IV, MAC, padding); reading this much more than was written drains the
# send BIO in one call.
_RECORD = 2**14
_RECORD_OVERHEAD = 128
_SLICE = 2**16


def tls_turn_reactor(transport: Any) -> Any:
    """
    The reactor of C{transport}'s TCP connection, if C{transport} is a TLS
    connection whose writes L{tls_write} sends: what a read brings may then
    be held to the end of the reactor's turn, as on plain TCP (a read of
    TCP brings several TLS records, each delivered as a read of its own).
    L{None} otherwise.
    """
    if not TLS_DIRECT_WRITE or transport.__class__ not in _TLS_TRANSPORTS:
        return None
    return getattr(transport.transport, "reactor", None)


def tls_ready(transport: Any) -> bool:
    """
    Whether C{transport}, a TLS connection, can take L{tls_write}: its
    handshake is done, it is open, and nothing waits in Twisted's buffer
    for the handshake or a renegotiation.
    """
    return bool(
        TLS_DIRECT_WRITE
        and transport._handshakeDone
        and not transport._lostTLSConnection
        and not transport.disconnecting
        and not transport._appSendBuffer
    )


def tls_write(transport: Any, pieces: Sequence[bytes]) -> None:
    """
    Encrypt C{pieces} for C{transport} (a TLS connection L{tls_ready} says
    yes to) and send the records on its TCP connection with L{write_now}.

    What Twisted's own C{write} does, less its holding: anything it holds
    for the connection goes first; what OpenSSL will not take now (it
    wants to read first) is left to Twisted's own path, which buffers it;
    an error from OpenSSL ends the connection as Twisted's path does.
    """
    aggregator = transport._aggregator
    if aggregator._buffer:
        aggregator.flush()  # written Twisted's way before: it goes first
    # Small writes are joined into as few records as they fill; a big one
    # is encrypted where it lies, a piece at a time.
    total = sum(map(len, pieces))
    if len(pieces) > 1 and (total <= _SLICE or max(map(len, pieces)) < _RECORD):
        pieces = [b"".join(pieces)]
    connection = transport._tlsConnection
    records: list[bytes] = []
    failure = None
    index = done = 0
    try:
        for index, data in enumerate(pieces):  # noqa: B007 - read after the loop
            done = 0
            size = len(data)
            # A big piece is encrypted a slice at a time (uncopied: OpenSSL
            # takes one record, 16 KiB, a call), each slice's records read
            # out before the next: OpenSSL's buffer stays small.
            view = memoryview(data) if size > _RECORD else None
            while done < size:
                if view is None:
                    piece: Any = data if not done else data[done:]
                else:
                    piece = view[done : done + _SLICE]
                sent = tls_send(connection, piece)
                done += sent
                want = sent + (sent // _RECORD + 1) * _RECORD_OVERHEAD
                while True:
                    chunk = tls_bio_read(connection, want)
                    if chunk is None:
                        break
                    records.append(chunk)
                    if len(chunk) < want:
                        break
        index = len(pieces)
    except WantReadError:
        pass  # the rest, below: Twisted's path holds it until OpenSSL can go on
    except TLSError:
        failure = Failure()
    if records:
        write_now(transport.transport, records)
    if failure is not None:
        transport._tlsShutdownFinished(failure)
    elif index < len(pieces):
        transport._write(b"".join([pieces[index][done:], *pieces[index + 1 :]]))


def tls_seal(transport: Any, pieces: Sequence[bytes]) -> bool:
    """
    Encrypt C{pieces}, a few bytes (one record at most), for C{transport}
    into its send buffer without sending them, when C{transport} is a TLS
    connection L{tls_ready} says yes to with nothing waiting in Twisted's
    buffer: what flushes that buffer next (closing the connection: its
    close_notify) sends them together, in one send.  Call
    L{tls_flush_sealed} once the connection has been told to close.

    @return: whether they were; if not, nothing was done (the caller writes
        them another way).
    """
    if transport.__class__ not in _TLS_TRANSPORTS or not tls_ready(transport):
        return False
    if transport._aggregator._buffer or sum(map(len, pieces)) > _RECORD:
        return False
    data = b"".join(pieces)
    try:
        sent = tls_send(transport._tlsConnection, data)
    except WantReadError:  # nothing was taken: the caller writes it
        return False
    except TLSError:
        # What tls_write does with an error from OpenSSL.
        transport._tlsShutdownFinished(Failure())
        return True
    if sent < len(data):  # (one record is taken whole; should it not be)
        transport._write(data[sent:])
    return True


def tls_flush_sealed(transport: Any) -> None:
    """
    Send what L{tls_seal} left in C{transport}'s send buffer, if closing it
    (Twisted's TLS shutdown, which flushes it with its close_notify) has not
    already: it waits for a producer to finish first.
    """
    if transport._tlsConnection is not None:
        transport._flushSendBIO()


TLS_WHOLE_READS = declare(
    "twisted.tls_whole_reads",
    touches=(
        "TLSMemoryBIOProtocol._flushReceiveBIO (replaced: what it does, delivering once)",
        "TLSMemoryBIOProtocol._tlsConnection / _lostTLSConnection / _aborted",
        "TLSMemoryBIOProtocol._producer and _ProducerMembrane._producer (the producer "
        "registered, told of a close its TLS close would wait for)",
        "TLSMemoryBIOProtocol._shutdownTLS / _tlsShutdownFinished / _flushSendBIO (called)",
    ),
    why=(
        "the application data of every TLS record a TCP read brings is delivered in "
        "one call, as a plain TCP read is, instead of a call (and a pass through the "
        "protocol's read path) per record: a client sending small messages sends a "
        "record each"
    ),
    checked="Twisted 24.7.0, 26.10.0; pyOpenSSL 26.x",
    fallback="Twisted delivers each record's data as it decrypts it",
    check=lambda: all_of(
        missing_names(
            tls.TLSMemoryBIOProtocol,
            ("_flushReceiveBIO", "_shutdownTLS", "_tlsShutdownFinished", "_flushSendBIO"),
        ),
        code_names(
            tls.TLSMemoryBIOProtocol._flushReceiveBIO,
            (
                "_lostTLSConnection",
                "_tlsConnection",
                "recv",
                "_shutdownTLS",
                "_tlsShutdownFinished",
                "_aborted",
                "dataReceived",
                "_flushSendBIO",
            ),
        ),
        code_names(tls.TLSMemoryBIOProtocol.registerProducer, ("_producer", "_ProducerMembrane")),
        code_names(tls._ProducerMembrane.__init__, ("_producer",)),
        code_names(tls.TLSMemoryBIOProtocol.loseConnection, ("_producer", "_shutdownTLS")),
        None
        if tls.TLSMemoryBIOFactory.protocol is tls.BufferingTLSTransport
        else ("TLSMemoryBIOFactory's protocol is not BufferingTLSTransport"),
    ),
)


_NO_CODE = compile("", "", "exec")

# How Twisted's TLS makeConnection makes its OpenSSL connection: the
# factory's _creatorCallable (Twisted 24.10 on) or _createConnection (before).
_CREATE_CONNECTION = next(
    (
        name
        for name in ("_creatorCallable", "_createConnection")
        if name in getattr(tls.TLSMemoryBIOProtocol.makeConnection, "__code__", _NO_CODE).co_names
    ),
    None,
)

TLS_MAKE_CONNECTION = declare(
    "twisted.tls_make_connection",
    touches=(
        "TLSMemoryBIOProtocol.makeConnection (replaced in wsmux's TLS transport: what it "
        "does, less a loop)",
        "TLSMemoryBIOProtocol._tlsConnection / _appSendBuffer / _connectWrapped",
        "TLSMemoryBIOFactory._creatorCallable or _createConnection (called)",
        "TLSMemoryBIOProtocol._checkHandshakeStatus (called)",
    ),
    why=(
        "Twisted's TLS transport gives each new connection every interface its TCP "
        "transport provides one at a time (a directlyProvides call each, each replacing "
        "the one before), then all of them at once in ProtocolWrapper.makeConnection: "
        "nine zope.interface declarations made and dropped per wss handshake (about "
        "15 us); wsmux's transport makes the one that stays"
    ),
    checked="Twisted 24.7.0, 26.10.0",
    fallback="Twisted's own makeConnection",
    needs=("twisted.tls_whole_reads",),
    check=lambda: all_of(
        missing_names(tls.TLSMemoryBIOProtocol, ("_checkHandshakeStatus",)),
        None
        if _CREATE_CONNECTION is not None
        else "TLSMemoryBIOProtocol.makeConnection makes its connection another way",
        code_names(
            tls.TLSMemoryBIOProtocol.makeConnection,
            (
                "_tlsConnection",
                "_appSendBuffer",
                "directlyProvides",
                "registerProtocol",
                "_connectWrapped",
                "_checkHandshakeStatus",
            ),
        ),
        code_names(
            ProtocolWrapper.makeConnection,
            ("directlyProvides", "registerProtocol", "wrappedProtocol"),
        ),
        None
        if not any(
            "connectionMade" in vars(cls)
            for cls in (tls.TLSMemoryBIOProtocol, tls.BufferingTLSTransport, ProtocolWrapper)
        )
        and "makeConnection" not in vars(tls.BufferingTLSTransport)
        else "Twisted's TLS transport has a connectionMade or makeConnection of its own",
    ),
)


# zope.interface keeps a declaration of what an object provides only while
# some object uses it, and each connection's is built again, resolution
# order and all, when none does.  What a TLS transport is given in
# makeConnection is held here per TLS transport class and what its TCP
# transports provide (a few in all; bounded): the whole declaration, and,
# when Twisted's own makeConnection runs, the one-interface ones its loop
# makes (together about 4% of a wss handshake's instructions).
_HELD_PROVIDES: dict[tuple[type, Any], tuple[Any, ...]] = {}


def _hold_provides(cls: type, transport: Any) -> None:
    provided = providedBy(transport)
    key = (cls, provided)
    if key not in _HELD_PROVIDES and len(_HELD_PROVIDES) < 64:
        one_at_a_time = (
            () if TLS_MAKE_CONNECTION else tuple(Provides(cls, interface) for interface in provided)
        )
        _HELD_PROVIDES[key] = (*one_at_a_time, Provides(cls, provided))


class WholeReadsTLSTransport(tls.BufferingTLSTransport):
    """
    Twisted's TLS transport, delivering what one read decrypts to in one
    call (L{TLS_WHOLE_READS}); Twisted's own without it.
    """

    def makeConnection(self, transport: Any) -> None:
        _hold_provides(self.__class__, transport)
        if not TLS_MAKE_CONNECTION or not self._connectWrapped:
            super().makeConnection(transport)
            return
        # TLSMemoryBIOProtocol.makeConnection, less its loop giving this
        # connection its transport's interfaces one at a time (each call
        # replacing the one before): ProtocolWrapper.makeConnection gives
        # them all at once (and makes the connection and registers it, which
        # Twisted's does twice).
        self._tlsConnection = getattr(self.factory, _CREATE_CONNECTION)(self)  # type: ignore[arg-type]
        self._appSendBuffer = []
        ProtocolWrapper.makeConnection(self, transport)
        self._checkHandshakeStatus()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        # Once the TLS connection is over (both sides' close_notify, or an
        # error and its alert), Twisted asks the TCP connection to close,
        # which waits a turn for the socket to be writable; with nothing left
        # to send it closes here, after the TLS layer has finished with the
        # read (its connectionLost must not run inside its dataReceived).
        if self._lostTLSConnection and TLS_WHOLE_READS and self.transport is not None:
            close_drained_tcp(self.transport, CLOSED_CLEANLY)

    def loseConnection(self) -> None:
        # Twisted's TLS close waits for a registered producer to go; a
        # wsmux connection registered to watch this transport's buffer lets
        # go when it closes the connection itself, and here when someone
        # else does (a handler's self.transport.loseConnection()).
        membrane = self._producer if TLS_WHOLE_READS else None
        if membrane is not None:
            closing = getattr(membrane._producer, "transport_closing", None)
            if closing is not None:
                closing()
        super().loseConnection()

    def _flushReceiveBIO(self) -> None:
        if not TLS_WHOLE_READS:
            super()._flushReceiveBIO()
            return
        # Twisted's loop, with the records' data gathered and delivered
        # before anything that ends the connection, and at the end.
        received: list[bytes] = []
        while not self._lostTLSConnection:
            try:
                data = tls_recv(self._tlsConnection)
            except ZeroReturnError:
                self._wsmux_deliver(received)
                self._shutdownTLS()
                self._tlsShutdownFinished(None)
                continue
            except TLSError:
                failure = Failure()
                self._wsmux_deliver(received)
                self._tlsShutdownFinished(failure)
                continue
            if data is None:
                break
            received.append(data)
        self._wsmux_deliver(received)
        self._flushSendBIO()

    def _flushSendBIO(self) -> None:
        if not TLS_DIRECT_WRITE:
            super()._flushSendBIO()
            return
        # Twisted's, with the records sent at once when nothing waits
        # before them on the TCP connection (write_now): the handshake's
        # flights, the session tickets, alerts and the writes Twisted's own
        # path makes go out without a reactor turn and the two epoll_ctl
        # calls around it.
        data = tls_bio_read(self._tlsConnection, 2**15)
        if data is not None:
            write_now(self.transport, (data,), tls_now=False)

    def _wsmux_deliver(self, received: list[bytes]) -> None:
        if received:
            data = received[0] if len(received) == 1 else b"".join(received)
            del received[:]
            if not self._aborted:
                ProtocolWrapper.dataReceived(self, data)


def slotted(base: type, names: tuple[str, ...]) -> type:
    """
    A subclass of C{base} whose instances keep the attributes C{names} in
    slots rather than in a dict of their own.

    A name C{base} gives a plain value (a default such as C{connected = 0})
    starts out with that value; a name C{base} gives a method or any other
    descriptor stays in the dict (Twisted sets C{fileno} and C{write} over
    its own methods).
    """
    defaults: dict[str, Any] = {}
    slots = []
    for name in names:
        owner = next((k for k in base.__mro__ if name in vars(k)), None)
        if owner is not None:
            value = vars(owner)[name]
            if callable(value) or hasattr(value, "__get__"):
                continue
            defaults[name] = value
        slots.append(name)
    start = tuple(defaults.items())

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        # In __new__, not __init__: an instance made without __init__ (by
        # copy or pickle) has its defaults too.
        self = base.__new__(cls)  # type: ignore[call-overload]
        for name, value in start:
            setattr(self, name, value)
        return self

    namespace = {"__slots__": tuple(slots), "__new__": __new__, "__module__": base.__module__}
    return type(base.__name__, (base,), namespace)


# What Twisted's TCP server transport and its TLS transport set on each
# connection (and the defaults their classes give some of them).
_TCP_STATE = (
    "reactor", "socket", "protocol", "server", "client", "sessionno", "hostname", "logstr",
    "repstr", "connected", "disconnected", "disconnecting", "producer", "producerPaused",
    "streamingProducer", "dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen",
    "_writeDisconnected", "_writeDisconnecting", "_aborting", "_shouldShutdown",
)  # fmt: skip
_TLS_STATE = (
    "wrappedProtocol", "factory", "transport", "connected", "disconnecting", "_connectWrapped",
    "_aggregator", "_tlsConnection", "_appSendBuffer", "_producer", "_producerPaused",
    "_handshakeDone", "_aborted", "_lostTLSConnection", "_reason",
)  # fmt: skip


@functools.cache
def _slotted_transports() -> tuple[type, type]:
    # Made once: by the check (where a changed layout fails it) and for use.
    return slotted(tcp.Server, _TCP_STATE), slotted(WholeReadsTLSTransport, _TLS_STATE)


def _slots_check() -> Optional[str]:
    tcp_server, tls_transport = _slotted_transports()
    return all_of(
        slots_hold(tcp_server, ("connected", "socket")),
        slots_hold(tls_transport, ("connected", "transport")),
        None if tcp.Port.transport is tcp.Server else "tcp.Port.transport is not tcp.Server",
        code_names(tcp.Port.doRead, ("transport",)),
        code_names(tcp.Server.__init__, ("sessionno", "hostname", "repstr")),
        code_names(tcp.Connection.__init__, ("socket", "fileno")),
        code_names(tls.TLSMemoryBIOProtocol.__init__, ("_connectWrapped",)),
        code_names(tls.TLSMemoryBIOProtocol.makeConnection, ("_appSendBuffer", "_tlsConnection")),
        code_names(tls.BufferingTLSTransport.__init__, ("_aggregator",)),
    )


SLOTTED_TRANSPORTS = declare(
    "twisted.slotted_transports",
    touches=(
        "tcp.Port.transport (the class of a port's connections)",
        "the attributes tcp.Server and TLSMemoryBIOProtocol set on every connection, by name",
    ),
    why=(
        "Twisted's TCP and TLS transports each keep some 15-25 attributes in a dict of their "
        "own (about 830 bytes each per connection, the order they are set in varying too much "
        "for Python's shared-key dicts): subclasses keep them in slots, 8 bytes each"
    ),
    checked="Twisted 24.7.0, 26.10.0",
    fallback="connections use Twisted's own TCP and TLS transport classes",
    check=_slots_check,
)

# wsmux's TLS transport, and the class wsmux's TCP ports make connections of.
TLS_TRANSPORT: type = WholeReadsTLSTransport
TCP_SERVER: type = tcp.Server
if SLOTTED_TRANSPORTS:
    TCP_SERVER, TLS_TRANSPORT = _slotted_transports()

# Twisted's plain TCP server transports.
TCP_SERVERS: frozenset[Any] = frozenset((tcp.Server, TCP_SERVER))


def slot_port(port: Any) -> None:
    """
    Make the connections C{port} accepts from now on of L{TCP_SERVER}
    (when C{port} is Twisted's TCP port making C{tcp.Server}s).
    """
    if isinstance(port, tcp.Port) and getattr(port, "transport", None) is tcp.Server:
        port.transport = TCP_SERVER  # type: ignore[assignment]


# The TLS transports whose writes tls_write may send.
_TLS_TRANSPORTS: frozenset[Any] = frozenset(
    (tls.BufferingTLSTransport, WholeReadsTLSTransport, TLS_TRANSPORT)
)


def tls_factory_protocol() -> type:
    """
    The protocol class of wsmux's TLS factories.
    """
    if not TLS_WHOLE_READS:
        return tls.BufferingTLSTransport
    return TLS_TRANSPORT


# The reason a TCP connection closed by Twisted's loseConnection is lost for.
CLOSED_CLEANLY = Failure(main.CONNECTION_DONE)


def _close_now(transport: Any, reason: Any) -> bool:
    transport.stopReading()
    transport.stopWriting()
    transport.connectionLost(reason)
    return True


def close_idle_tcp(transport: Any, reason: Any) -> bool:
    """
    Close C{transport} at once if L{idle_tcp} says it has nothing to send,
    as Twisted's C{loseConnection} itself does once nothing is left to
    write, instead of asking the reactor to wait for the socket to be
    writable first (three system calls and a turn).

    @return: whether it was closed.
    """
    return idle_tcp(transport) and _close_now(transport, reason)


def close_drained_tcp(transport: Any, reason: Any) -> bool:
    """
    Close C{transport}, a TCP connection asked to close (C{loseConnection})
    with nothing left to send and no producer, at once: what Twisted's
    C{doWrite} does once the reactor finds the socket writable, a turn (and
    an empty send) later.

    @return: whether it was closed.
    """
    if not (
        DIRECT_SEND
        and transport.__class__ in TCP_SERVERS
        and transport.connected
        and transport.disconnecting
        and not transport._aborting
        and transport.producer is None
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        return False
    return _close_now(transport, reason)


# -- twisted.logger: filtering the observers twistd installed -----------------

LOG_OBSERVERS = declare(
    "twisted.log_observers",
    touches=("LogPublisher._observers",),
    why=(
        "the log level applies to the observers twistd installed (its log file, "
        "stdout), which LogPublisher gives no public way to list"
    ),
    checked="Twisted 24.7.0, 26.10.0",
    fallback=(
        "the log level applies to wsmux's and Autobahn's own loggers only; other "
        "packages' events below it still reach twistd's log"
    ),
    check=lambda: (
        None
        if isinstance(getattr(LogPublisher(), "_observers", None), list)
        else "LogPublisher keeps no _observers list"
    ),
)


def observers_of(publisher: LogPublisher) -> list[Any]:
    """
    The observers C{publisher} sends events to (none known without
    L{LOG_OBSERVERS}).
    """
    if not LOG_OBSERVERS:
        return []
    return list(getattr(publisher, "_observers", ()))


# -- twisted.python.log: the log context around every reactor event ----------

# Twisted's own, as wsmux found it (wsmux's replaces it once a site starts).
_TWISTED_CALL_WITH_LOGGER = log.callWithLogger

LOG_CONTEXT = declare(
    "twisted.log_context",
    touches=(
        "twisted.python.log.callWithLogger (replaced for the whole process once a "
        "WebSocketSite starts, and left so: what it does, in one call)",
        "twisted.internet.asyncioreactor.callWithLogger (the same, when loaded)",
        "ThreadedContextTracker.storage.ct",
        "ContextTracker.contexts",
    ),
    why=(
        "the reactor calls every read and write through log.callWithLogger, which "
        "gives legacy log events the connection's system; Twisted's takes five calls "
        "with their arguments passed on each time (about 1.5 us an event, 5-7% of a "
        "small-message echo); wsmux's does the same in one (about 0.5 us)"
    ),
    checked="Twisted 24.7.0, 26.10.0",
    fallback="Twisted's own log.callWithLogger",
    check=lambda: all_of(
        None
        if getattr(_TWISTED_CALL_WITH_LOGGER, "__module__", None) == "twisted.python.log"
        else "log.callWithLogger was replaced before wsmux was imported",
        code_names(_TWISTED_CALL_WITH_LOGGER, ("logPrefix", "callWithContext", "err")),
        code_names(log.callWithContext, ("get", "copy", "update", "call")),
        code_names(context.ThreadedContextTracker.currentContext, ("storage", "ct")),
        code_names(context.ContextTracker.callWithContext, ("contexts", "append", "pop")),
        code_names(context.ContextTracker.getContext, ("contexts",)),
        # Each context holds only what was pushed (no merged copies): the
        # nearest holding the key is what getContext answers.
        "ContextTracker merges contexts"
        if "copy" in context.ContextTracker.callWithContext.__code__.co_names
        else None,
    ),
)


def call_with_logger(logger: Any, func: Any, *args: Any, **kw: Any) -> Any:
    """
    Twisted's C{log.callWithLogger}, in one call: C{func(*args, **kw)} with
    the log context's C{system} set to C{logger.logPrefix()}, an error it
    raises logged (with that system) and L{None} returned for it.  Another
    context tracker, or a thread's first call, takes Twisted's own.
    """
    tracker = context.theContextTracker
    try:
        current = tracker.storage.ct
    except AttributeError:
        current = None
    if tracker.__class__ is not context.ThreadedContextTracker or (
        current.__class__ is not context.ContextTracker
    ):
        return _TWISTED_CALL_WITH_LOGGER(logger, func, *args, **kw)
    try:
        prefix = logger.logPrefix()
    except KeyboardInterrupt:
        raise
    except BaseException:
        prefix = "(buggy logPrefix method)"
        log.err(system=prefix)
    contexts = current.contexts
    try:
        # log.callWithContext, then ContextTracker.callWithContext.
        top = contexts[-1]
        base = top[ILogContext] if ILogContext in top else current.getContext(ILogContext)
        system = base.copy()
        system["system"] = prefix
        contexts.append({ILogContext: system})
        try:
            return func(*args, **kw)
        finally:
            contexts.pop()
    except KeyboardInterrupt:
        raise
    except BaseException:
        log.err(system=prefix)
        return None


def speed_up_log_context() -> None:
    """
    Have the reactor call reads and writes through L{call_with_logger}
    (L{LOG_CONTEXT}), unless something else replaced Twisted's already.
    """
    if not LOG_CONTEXT:
        return
    if log.callWithLogger is _TWISTED_CALL_WITH_LOGGER:
        log.callWithLogger = call_with_logger
    asyncio_reactor = sys.modules.get("twisted.internet.asyncioreactor")
    if getattr(asyncio_reactor, "callWithLogger", None) is _TWISTED_CALL_WITH_LOGGER:
        asyncio_reactor.callWithLogger = call_with_logger  # type: ignore[union-attr]


# -- twisted.web: bytes after an upgrade's head, on another Site's channel ----

HTTP_BUFFER = declare(
    "twisted.http_buffer",
    touches=("HTTPChannel._dataBuffer",),
    why=(
        "on a plain twisted.web HTTPChannel (a route tree in an application's own "
        "Site), bytes a client sent after its upgrade request while the route was "
        "deciding wait there; wsmux's own channel keeps them itself"
    ),
    checked="Twisted 24.7.0, 26.10.0",
    fallback=(
        "on a plain HTTPChannel, bytes sent before the 101 while a route decides "
        "asynchronously are not seen (a client must wait for the 101 anyway)"
    ),
    check=lambda: all_of(
        code_names(HTTPChannel.__init__, ("_dataBuffer",)),
        code_names(HTTPChannel.rawDataReceived, ("_dataBuffer", "_handlingRequest")),
    ),
)


def take_http_buffer(channel: Any) -> bytes:
    """
    Take the bytes a plain C{HTTPChannel} buffered while its request was
    being handled.
    """
    if not HTTP_BUFFER:
        return b""
    buffered = b"".join(getattr(channel, "_dataBuffer", ()))
    channel._dataBuffer = []
    return buffered
