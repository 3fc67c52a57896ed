"""
Async handlers: one coroutine per connection, as Python C{websockets} has.

    from wsmux.aio import AsyncHandler

    class Echo(AsyncHandler):
        async def handle(self, ws):
            async for message in ws:
                await ws.send(message)

or a plain function, named in a route like a handler class::

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

The coroutine runs on Deferreds (C{Deferred.fromCoroutine}), so it works
under any reactor and may await Deferreds and coroutines.  Under Twisted's
asyncio reactor it runs as an asyncio Task instead, so that asyncio code
works in it as anywhere (C{asyncio.timeout}, C{wait_for}, C{TaskGroup}); the
Deferreds it awaits are waited on for it (see L{_InTask}), and the
connection's own methods return asyncio futures there.  L{AsyncConnection}
is what it receives: C{recv()}, C{send()}, C{close()}, C{async for}, and
what the handler knows about its client.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import deque
from typing import Any, Callable, Coroutine, Generator, Optional, Union

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.python.failure import Failure

from wsmux.connection import closed_with

Message = Union[str, bytes]
_OPEN = WebSocketServerProtocol.STATE_OPEN


class ConnectionClosed(Exception):
    """
    The connection has ended: C{recv()}, C{send()} and C{close()} fail with
    this once it has.

    @ivar code: the close code (1006 when the connection was lost without
        a closing handshake).
    @ivar reason: the close reason.
    """

    def __init__(self, code: Optional[int], reason: Union[str, bytes, None]) -> None:
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        self.code = code if code is not None else 1006
        self.reason = reason or ""
        super().__init__(f"connection closed ({self.code}{': ' + reason if reason else ''})")


class AsyncConnection:
    """
    One connection, as an async handler sees it.

    C{async for message in ws} yields each message (C{str} for text,
    C{bytes} for binary) and ends when the connection does, however it
    ends (C{close_code} says how).

    @ivar protocol: the handler instance (the Autobahn protocol).
    @ivar close_code: once the connection has ended, the code that closed
        it: the one this side sent if it started the closing handshake,
        else the client's (1006 without a handshake); C{None} before.
    @ivar close_reason: the close reason once the connection has ended.
    """

    __slots__ = (
        "protocol",
        "close_code",
        "close_reason",
        "_inbox",
        "_getter",
        "_sending",
        "_reading_paused",
        "_closed_waiters",
        "_task",
        "_max_queue",
        "_loop",
    )

    def __init__(self, protocol: Any, max_queue: int, loop: Any = None) -> None:
        self.protocol = protocol
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        # Made when a message has to wait (most are taken as they come).
        self._inbox: Optional[deque[Message]] = None
        self._getter: Optional[Deferred[Message]] = None
        self._sending = 0
        self._reading_paused = False
        self._closed_waiters: tuple[Deferred[None], ...] = ()
        self._task: Optional[Deferred[Any]] = None
        self._max_queue = max_queue
        # The asyncio loop the handler's Task runs on (asyncio reactor), or
        # None: what the methods return is then a Deferred.
        self._loop = loop

    # -- what the handler knows -------------------------------------------------

    @property
    def wsmux(self) -> Any:
        """
        The connection object every handler has (L{wsmux.connection.Connection}):
        id, path parameters, client address, cookies, channels, TLS...
        """
        return self.protocol.wsmux

    @property
    def id(self) -> int:
        return self.protocol.wsmux.id  # type: ignore[no-any-return]

    @property
    def path_params(self) -> Any:
        return self.protocol.wsmux.path_params

    @property
    def client_address(self) -> Optional[str]:
        return self.protocol.wsmux.client_address  # type: ignore[no-any-return]

    @property
    def subprotocol(self) -> Optional[str]:
        return self.protocol.websocket_protocol_in_use  # type: ignore[no-any-return]

    @property
    def headers(self) -> dict[str, str]:
        """
        The request's headers, names lower-cased (repeated ones joined
        with C{", "}).
        """
        return self.protocol.http_headers  # type: ignore[no-any-return]

    @property
    def path(self) -> str:
        return self.protocol.http_request_path  # type: ignore[no-any-return]

    @property
    def latency(self) -> Optional[float]:
        """
        The last keepalive ping's round trip, in seconds (C{None} before
        the first pong).
        """
        return self.protocol.wsmux.latency  # type: ignore[no-any-return]

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    # -- receiving ----------------------------------------------------------------

    def recv(self) -> Any:
        """
        The next message: a Deferred that fires with it (C{str} for text,
        C{bytes} for binary), or fails with L{ConnectionClosed} once the
        connection has ended and every message that arrived was taken.

        @raise RuntimeError: when a C{recv()} is already waiting.
        """
        return self._out(self._recv())

    def _out(self, result: Deferred[Any]) -> Any:
        # What the handler gets: the Deferred, or in an asyncio Task an
        # asyncio future (which asyncio's own tools, wait_for and gather,
        # take).
        loop = self._loop
        return result if loop is None else result.asFuture(loop)

    def _recv(self) -> Deferred[Message]:
        inbox = self._inbox
        if inbox:
            message = inbox.popleft()
            if self._reading_paused and len(inbox) <= self._max_queue // 4:
                self._resume_reading()
            return succeed(message)
        if self.close_code is not None:
            return fail(ConnectionClosed(self.close_code, self.close_reason))
        if self._getter is not None:
            raise RuntimeError("recv() is already being awaited on this connection")
        getter: Deferred[Message] = Deferred(self._forget_getter)
        self._getter = getter
        return getter

    def _forget_getter(self, getter: Deferred[Message]) -> None:
        # Cancelled (the handler's task was): no message goes to it.
        if self._getter is getter:
            self._getter = None

    def __aiter__(self) -> AsyncConnection:
        return self

    def __anext__(self) -> Any:
        # recv(), with the end of the connection as the end of the loop (a
        # Deferred rather than a coroutine: one object less per message).
        return self._out(self._recv().addErrback(_end_of_loop))

    def _received(self, message: Message) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            getter.callback(message)
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(message)
        if len(inbox) >= self._max_queue and not self._reading_paused:
            # The handler is not keeping up: stop reading from the client
            # (TCP then slows it down) until it has taken most of them.
            self._reading_paused = True
            self.protocol.wsmux.hold_reading(self)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        self.protocol.wsmux.release_reading(self)

    # -- sending ------------------------------------------------------------------

    def send(self, message: Message) -> Any:
        """
        Send one message: C{str} as text, C{bytes} (or C{bytearray},
        C{memoryview}) as binary.  The Deferred fires once the client is
        taking data again: at once, unless it has stopped reading, in which
        case it waits (so an C{await}ing sender never queues without
        bound).  It fails with L{ConnectionClosed} once the connection
        has ended.
        """
        return self._out(self._send(message))

    def _send(self, message: Message) -> Deferred[None]:
        if isinstance(message, str):
            payload, binary = message.encode("utf-8"), False
        elif isinstance(message, (bytes, bytearray, memoryview)):
            payload, binary = bytes(message), True
        else:
            raise TypeError(f"send() takes str or bytes, not {type(message).__name__}")
        protocol = self.protocol
        if protocol.state != _OPEN or protocol.wsmux.ended:
            # Closing or closed: the message could not go out.
            return fail(self._closed_error())
        protocol.sendMessage(payload, binary)
        connection = protocol.wsmux
        if not connection.paused:
            return succeed(None)
        self._sending += 1
        waiter = connection.writable()
        waiter.addBoth(self._sent)
        return waiter

    def _sent(self, result: Any) -> Any:
        self._sending -= 1
        if isinstance(result, Failure) and not result.check(CancelledError):
            return Failure(self._closed_error())
        return result

    def _closed_error(self) -> ConnectionClosed:
        if self.close_code is not None:
            return ConnectionClosed(self.close_code, self.close_reason)
        # Closing, or ended before Autobahn called onClose: the codes it has.
        protocol = self.protocol
        return ConnectionClosed(
            *closed_with(protocol, protocol.remoteCloseCode, protocol.remoteCloseReason)
        )

    # -- closing ------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> Any:
        """
        Start the closing handshake with any code a server may send (see
        L{wsmux.connection.Connection.close}); the Deferred fires once the
        connection has ended.
        """
        if self.close_code is None:
            connection = self.protocol.wsmux
            connection.close(code, reason)
            # Read again, to take the client's close frame.
            connection.release_reading(self)
        return self.wait_closed()

    def wait_closed(self) -> Any:
        """
        A Deferred that fires once the connection has ended.
        """
        return self._out(self._wait_closed())

    def _wait_closed(self) -> Deferred[None]:
        if self.close_code is not None:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._forget_closed_waiter)
        self._closed_waiters += (waiter,)
        return waiter

    def _forget_closed_waiter(self, waiter: Deferred[None]) -> None:
        self._closed_waiters = tuple(w for w in self._closed_waiters if w is not waiter)

    # -- the connection ending ----------------------------------------------------

    def _ended(self, code: Optional[int], reason: Optional[str]) -> None:
        if self.close_code is not None:
            return
        closed = ConnectionClosed(*closed_with(self.protocol, code, reason))
        self.close_code, self.close_reason = closed.code, closed.reason
        # Was the handler waiting on this connection?  Then it hears of the
        # end from what it awaits (async for ends, recv and send fail) and
        # may finish as it likes.  Waiting on anything else, it is
        # cancelled: nobody would wake it for this connection.
        waiting = self._getter is not None or self._sending > 0 or bool(self._closed_waiters)
        getter, self._getter = self._getter, None
        if getter is not None:
            getter.errback(ConnectionClosed(self.close_code, self.close_reason))
        waiters, self._closed_waiters = self._closed_waiters, ()
        for waiter in waiters:
            waiter.callback(None)
        task = self._task
        if not waiting and task is not None and not task.called:
            task.cancel()


class AsyncHandler(WebSocketServerProtocol):
    """
    A handler written as one coroutine per connection: subclass it and
    define C{async def handle(self, ws)}, where C{ws} is the connection's
    L{AsyncConnection}.  It starts when the connection opens.

    - When C{handle} returns, the connection is closed with 1000.
    - When it raises (anything but L{ConnectionClosed}), the error is
      logged with its traceback and the connection closed with 1011.
    - When the connection ends while C{handle} awaits something other than
      this connection (a timer, a database), it is cancelled there.

    C{onConnect} may still be defined to accept or refuse, as in any
    handler; C{onOpen}, C{onMessage} and C{onClose} belong to this class.

    @cvar max_queue: messages received and not yet taken by C{recv()}
        past which reading from the client pauses (it resumes at a
        quarter of it).
    """

    max_queue = 16

    wsmux: Any  # the connection object, set by wsmux on every handler
    _wsmux_aio: Optional[AsyncConnection] = None

    async def handle(self, ws: AsyncConnection) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define async def handle(self, ws)")

    def onOpen(self) -> None:
        loop = _running_asyncio_loop()
        ws = self._wsmux_aio = AsyncConnection(self, max(1, self.max_queue), loop)
        try:
            coroutine = self.handle(ws)
            if not inspect.iscoroutine(coroutine):
                raise TypeError(f"{type(self).__name__}.handle must be an async def method")
            if loop is not None:
                task = Deferred.fromFuture(loop.create_task(_in_task(coroutine)))
            else:
                task = Deferred.fromCoroutine(coroutine)
        except Exception:
            self.wsmux.handler_failed("handle")
            return
        ws._task = task
        task.addBoth(self._wsmux_handled)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        ws = self._wsmux_aio
        if ws is not None:
            ws._received(payload if isBinary else payload.decode("utf-8"))

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        ws = self._wsmux_aio
        if ws is not None:
            ws._ended(code, reason)

    def _wsmux_handled(self, result: Any) -> None:
        ws = self._wsmux_aio
        assert ws is not None
        if isinstance(result, Failure):
            if result.check(ConnectionClosed):
                return None
            if result.check(CancelledError, asyncio.CancelledError) and ws.closed:
                return None
            self.wsmux.handler_failed("handle", result)
            return None
        if not ws.closed and not self.wsmux.ended:
            self.wsmux.close(1000)
        return None


def async_handler(function: Callable[[AsyncConnection], Coroutine[Any, Any, None]]) -> type:
    """
    Make a handler class from C{async def function(ws)}.  A route given
    such a function (by name or as a value) does this itself.
    """
    if not inspect.iscoroutinefunction(function):
        raise TypeError(f"{function!r} is not an async def function")

    async def handle(self: AsyncHandler, ws: AsyncConnection) -> None:
        await function(ws)

    name = getattr(function, "__name__", "handler")
    return type(
        name,
        (AsyncHandler,),
        {
            "handle": functools.wraps(function)(handle),
            "__module__": getattr(function, "__module__", __name__),
            "__qualname__": getattr(function, "__qualname__", name),
        },
    )


class AsyncEchoHandler(AsyncHandler):
    """
    The echo handler written as a coroutine (the built-in C{echo-async}):
    every message back as it came.
    """

    async def handle(self, ws: AsyncConnection) -> None:
        async for message in ws:
            await ws.send(message)


def _end_of_loop(failure: Failure) -> Message:
    failure.trap(ConnectionClosed)
    raise StopAsyncIteration


# -- running a coroutine on Deferreds, awaiting asyncio futures too ---------------


@functools.cache
def _asyncio_reactor() -> bool:
    # Whether the installed reactor runs an asyncio loop.
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    return isinstance(reactor, AsyncioSelectorReactor)


def _running_asyncio_loop() -> Any:
    # The loop a handler's Task runs on: the asyncio reactor's, running
    # (wsmux calls handlers from it); None under any other reactor.
    if not _asyncio_reactor():
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _in_task(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return await _InTask(coroutine)


class _InTask:
    # An asyncio Task waits on asyncio futures only; a coroutine that
    # awaits a Deferred hands it the Deferred.  This passes every step of
    # the coroutine through, waiting on each Deferred it awaits with a
    # future that completes when the Deferred fires (its result left in
    # it, for the coroutine's await to read).  Cancelling the Task while
    # it waits cancels the Deferred.
    __slots__ = ("coroutine",)

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.coroutine = coroutine

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine = self.coroutine
        loop = asyncio.get_running_loop()
        value: Any = None
        error: Optional[BaseException] = None
        while True:
            try:
                if error is not None:
                    step, error = coroutine.throw(error), None
                else:
                    step = coroutine.send(value)
            except StopIteration as stop:
                return stop.value
            value = None
            if isinstance(step, Deferred):
                fired = loop.create_future()
                step.addBoth(_completes, fired)
                try:
                    yield from fired
                except GeneratorExit:
                    coroutine.close()
                    raise
                except BaseException:
                    # The Task was cancelled: so is what it waits on, whose
                    # failure the coroutine's await then reads.
                    step.cancel()
                continue
            try:
                value = yield step
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as e:
                error = e


def _completes(result: Any, fired: Any) -> Any:
    if not fired.done():
        fired.set_result(None)
    return result


__all__ = [
    "AsyncConnection",
    "AsyncEchoHandler",
    "AsyncHandler",
    "ConnectionClosed",
    "async_handler",
]
