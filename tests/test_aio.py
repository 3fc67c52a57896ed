"""
Async handlers (wsmux.aio) in memory: async for, recv, send with
backpressure, close, a handler's end and errors, cancellation.
"""

import asyncio

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import globalLogPublisher

from wsmux import Route, RouteTree
from wsmux.aio import AsyncEchoHandler, AsyncHandler, ConnectionClosed, async_handler
from wsmux.handlers import resolve_handler
from wsmux.testing import connect

seen: dict = {}


async def shout(ws):
    async for message in ws:
        await ws.send(message.upper() if isinstance(message, str) else message[::-1])
    seen["after the loop"] = ws.close_code


class Scripted(AsyncHandler):
    # Does what the path's query says.
    async def handle(self, ws):
        what = ws.path_params["what"]
        seen["handler"] = ws
        if what == "return":
            await ws.send("bye")
            return
        if what == "raise":
            await ws.send("about to fail")
            raise ValueError("handler bug")
        if what == "close":
            message = await ws.recv()
            await ws.close(4001, f"asked: {message}")
            seen["closed"] = ws.close_code
            return
        if what == "wait-elsewhere":
            seen["elsewhere"] = waited = Deferred(lambda d: seen.setdefault("cancelled", True))
            try:
                await waited
            finally:
                seen["finally"] = True
        if what == "recv-after-close":
            await ws.recv()
            try:
                await ws.recv()
            except ConnectionClosed as e:
                seen["error"] = (e.code, e.reason)
                await ws.send("too late")  # fails: the handler ends with it
        if what == "idle":
            seen["recv"] = ws.recv
            await ws.wait_closed()


def tree():
    return RouteTree(
        [
            Route("/echo", AsyncEchoHandler),
            Route("/shout", shout),
            Route("/do/{what}", Scripted),
        ]
    )


@pytest.fixture(autouse=True)
def fresh():
    seen.clear()
    errors = []

    def observe(event):
        if event.get("log_failure") is not None:
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    yield errors
    globalLogPublisher.removeObserver(observe)


def test_async_for_recv_and_send_echo_text_as_text_and_binary_as_binary():
    for path in ("/echo", "/shout"):
        conn = connect(tree(), path)
        conn.client.sendMessage(b"hello")
        conn.client.sendMessage(b"\x00\x01\xff", isBinary=True)
        conn.flush()
        if path == "/echo":
            assert conn.client.messages == [(b"hello", False), (b"\x00\x01\xff", True)]
        else:
            assert conn.client.messages == [(b"HELLO", False), (b"\xff\x01\x00", True)]
        conn.client.sendClose(1000)
        conn.flush()
        assert conn.client.close[1] == 1000
        conn.restore_loop()
    # The loop ended with the connection, and the code after it ran.
    assert seen["after the loop"] == 1000


def test_returning_closes_with_1000_and_raising_with_1011(fresh):
    conn = connect(tree(), "/do/return")
    conn.flush()
    assert conn.client.messages == [(b"bye", False)]
    assert conn.client.close[:2] == (True, 1000)
    assert not fresh
    conn.restore_loop()

    conn = connect(tree(), "/do/raise")
    conn.flush()
    assert conn.client.messages == [(b"about to fail", False)]
    assert conn.client.close[:2] == (True, 1011)
    [event] = fresh
    assert event["log_failure"].check(ValueError)
    assert "handle" in event["log_format"] or event.get("where") == "handle"
    conn.restore_loop()


def test_close_with_a_code_and_wait_for_the_end():
    conn = connect(tree(), "/do/close")
    conn.client.sendMessage(b"please")
    conn.flush()
    assert conn.client.close[1:] == (4001, "asked: please")
    assert seen["closed"] == 4001


def test_what_the_handler_awaits_elsewhere_is_cancelled_when_the_connection_ends(fresh):
    conn = connect(tree(), "/do/wait-elsewhere")
    conn.flush()
    assert "cancelled" not in seen
    conn.client.sendClose(1000)
    conn.flush()
    assert seen["cancelled"] and seen["finally"]
    assert not fresh  # a cancellation at the end is not an error
    conn.restore_loop()


def test_recv_after_the_end_fails_with_the_close_code(fresh):
    conn = connect(tree(), "/do/recv-after-close")
    conn.client.sendMessage(b"one")
    conn.client.sendClose(4002, "done here")
    conn.flush()
    assert seen["error"] == (4002, "done here")
    # send after the end fails with ConnectionClosed, which ends the
    # handler quietly.
    assert not fresh
    conn.restore_loop()


def test_one_recv_at_a_time_and_send_takes_str_or_bytes():
    conn = connect(tree(), "/do/idle")
    conn.flush()
    ws = seen["handler"]
    first = ws.recv()
    with pytest.raises(RuntimeError):
        ws.recv()
    with pytest.raises(TypeError):
        ws.send(123)
    conn.client.sendMessage(b"x")
    conn.flush()
    assert first.result == "x"
    conn.restore_loop()


def test_send_waits_while_the_client_is_not_reading():
    conn = connect(tree(), "/do/idle")
    conn.flush()
    ws = seen["handler"]
    connection = conn.server.wsmux
    assert ws.send("now").called
    connection.pauseProducing()  # what Twisted does when the client stops reading
    waiting = ws.send("later")
    assert not waiting.called
    connection.resumeProducing()
    assert waiting.called
    connection.pauseProducing()
    stuck = ws.send("never")
    failures = []
    stuck.addErrback(failures.append)
    conn.client.sendClose(1000)
    conn.flush()
    [failure] = failures
    assert failure.check(ConnectionClosed)
    conn.restore_loop()


def recording(transport):
    # The pauses and resumes of reading from the client, in order.
    calls = []
    transport.pauseProducing = lambda: calls.append("pause")
    transport.resumeProducing = lambda: calls.append("resume")
    return calls


def test_a_handler_that_does_not_recv_pauses_reading_from_the_client():
    conn = connect(tree(), "/do/idle")
    conn.flush()
    ws = seen["handler"]
    calls = recording(conn.server.transport)
    for i in range(AsyncHandler.max_queue - 1):
        conn.client.sendMessage(str(i).encode())
    conn.flush()
    assert calls == []
    conn.client.sendMessage(b"one too many")
    conn.flush()
    assert calls == ["pause"]
    # Taken down to a quarter of the queue, reading resumes.
    taken = [ws.recv().result for _ in range(AsyncHandler.max_queue - AsyncHandler.max_queue // 4)]
    assert taken[:3] == ["0", "1", "2"]
    assert calls == ["pause", "resume"]
    conn.restore_loop()


def test_a_function_or_its_dotted_name_is_a_handler():
    cls = resolve_handler("tests.test_aio.shout")
    assert issubclass(cls, AsyncHandler)
    assert resolve_handler("echo-async") is AsyncEchoHandler
    with pytest.raises(TypeError):
        async_handler(lambda ws: None)


def test_in_an_asyncio_task_deferreds_and_asyncio_tools_both_work():
    # Under the asyncio reactor a handler runs as an asyncio Task: the
    # Deferreds it awaits are waited on for it, with their results.
    from wsmux.aio import _in_task

    async def main():
        loop = asyncio.get_running_loop()
        later = Deferred()
        loop.call_later(0.01, later.callback, "from a Deferred")
        failing = Deferred()
        loop.call_later(0.01, failing.errback, ValueError("a Deferred's failure"))

        async def handler():
            got = [await later]
            try:
                await failing
            except ValueError as e:
                got.append(str(e))
            async with asyncio.timeout(5):  # needs a Task
                got.append(await asyncio.wait_for(asyncio.sleep(0.01, "asyncio"), 5))
            return got

        assert await loop.create_task(_in_task(handler())) == [
            "from a Deferred",
            "a Deferred's failure",
            "asyncio",
        ]
        # Cancelling the Task cancels the Deferred it waits on.
        cancelled = []
        stuck = Deferred(lambda d: cancelled.append(True))

        async def waits():
            await stuck

        task = loop.create_task(_in_task(waits()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, CancelledError)):
            await task
        assert cancelled == [True]

    asyncio.run(main())


class Chat(AsyncHandler):
    # The example of docs/handlers.rst.
    async def handle(self, ws):
        room = ws.path_params["room"]
        hello = await ws.recv()
        await ws.send(f"{hello} in {room}")
        ws.wsmux.channels.subscribe(self, room)
        async for message in ws:
            ws.wsmux.channels.publish(room, message.encode(), exclude=self)


def test_the_documented_chat_example():
    from twisted.internet.testing import MemoryReactorClock

    chat = RouteTree([Route("/chat/{room}", Chat)])
    clock = MemoryReactorClock()
    a = connect(chat, "/chat/lobby", clock=clock)
    b = connect(chat, "/chat/lobby", clock=clock)
    for conn, name in ((a, b"a"), (b, b"b")):
        conn.client.sendMessage(name)
        conn.flush()
        assert conn.client.messages == [(name + b" in lobby", False)]
    a.client.sendMessage(b"hi all")
    a.flush()
    b.flush()
    assert b.client.messages[-1] == (b"hi all", False)
    assert a.client.messages[-1] == (b"a in lobby", False)  # not to the sender
    b.restore_loop()
    a.restore_loop()


def test_send_while_closing_fails_rather_than_vanish():
    conn = connect(tree(), "/do/idle")
    conn.flush()
    ws = seen["handler"]
    closing = ws.close(4003, "bye")  # the closing handshake starts; not over yet
    failures = []
    ws.send("lost").addErrback(failures.append)
    [failure] = failures
    assert failure.check(ConnectionClosed) and failure.value.code == 4003
    conn.flush()
    assert closing.called and conn.client.close[1:] == (4003, "bye")
    conn.restore_loop()


def test_reading_held_for_the_queue_stays_held_through_write_backpressure():
    # A client that floods the handler and reads slowly: wsmux pauses and
    # resumes reading for its writes, which must not resume reading while
    # the handler's queue is full.
    conn = connect(tree(), "/do/idle")
    conn.flush()
    ws = seen["handler"]
    calls = recording(conn.server.transport)
    for i in range(AsyncHandler.max_queue):
        conn.client.sendMessage(str(i).encode())
    conn.flush()
    assert calls == ["pause"]
    connection = conn.server.wsmux
    connection.pauseProducing()
    connection.resumeProducing()
    assert calls == ["pause", "pause"]  # no resume: the queue still holds it
    for _ in range(AsyncHandler.max_queue):
        ws.recv()
    assert calls == ["pause", "pause", "resume"]
    # Closing reads again, to take the client's close frame.
    conn.client.sendMessage(b"x")
    for _ in range(AsyncHandler.max_queue):
        conn.client.sendMessage(b"more")
    conn.flush()
    calls.clear()
    ws.close()
    assert calls == ["resume"]
    conn.restore_loop()
