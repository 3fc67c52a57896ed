"""
Handlers and hooks the tests name by dotted path, as users' code would be.
"""

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer

from wsmux import Adopt, Reject
from wsmux.streaming import StreamingReceiver


class ParamsHandler(WebSocketServerProtocol):
    """
    Answers every message with what it can see of its request.
    """

    def onConnect(self, request):
        self.seen = {
            "path": request.path,
            "params": dict(self.path_params),
            "query": {k: v for k, v in request.params.items()},
            "cookie": request.headers.get("cookie", ""),
            "peer": request.peer,
        }

    def onMessage(self, payload, isBinary):
        import json

        seen = dict(self.seen, subprotocol=self.websocket_protocol_in_use)
        self.sendMessage(json.dumps(seen).encode("utf-8"))


class ShoutHandler(WebSocketServerProtocol):
    """
    Echoes upper-cased text; takes only requests with ?loud in the query.
    """

    @classmethod
    def accepts(cls, request):
        return b"loud" in request.args

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload.upper(), isBinary)


class WhisperHandler(WebSocketServerProtocol):
    """
    Echoes lower-cased text; takes any request, after a Deferred decision.
    """

    @classmethod
    def accepts(cls, request):
        return defer.succeed(request.getHeader(b"x-refuse") is None)

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload.lower(), isBinary)


class DenyingHandler(WebSocketServerProtocol):
    """
    Refuses every connection in onConnect, asynchronously.
    """

    def onConnect(self, request):
        d = defer.Deferred()
        d.errback(ConnectionDeny(403, "members only"))
        return d


class TokenHandler(WebSocketServerProtocol):
    """
    Accepts with a chosen subprotocol and an extra header.
    """

    def onConnect(self, request):
        return ("token.v2", {"X-Token-Checked": "yes"})

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


def hook(request):
    """
    An unhandled hook: adopts /legacy/*, rejects /private/*, else default.
    """
    from wsmux.handlers import EchoHandler

    path = request.path.decode()
    if path.startswith("/legacy/"):
        return Adopt(EchoHandler)
    if path.startswith("/private/"):
        return Reject(403, "Private area")
    if path.startswith("/deferred/"):
        return defer.succeed(ParamsHandler)
    if path.startswith("/broken/"):
        raise RuntimeError("hook bug")
    return None


class BigStream(WebSocketServerProtocol):
    """
    On "go N", streams a binary message of N MiB in 64 KiB chunks.
    """

    def onMessage(self, payload, isBinary):
        from wsmux.streaming import stream_message

        mib = int(payload.split()[1])
        chunk = b"\x00" * 65536
        self.streaming = stream_message(self, (chunk for _ in range(mib * 16)))


class BigUpload(StreamingReceiver, WebSocketServerProtocol):
    """
    Receives messages chunk by chunk and answers with their size.
    """

    def onStreamEnd(self):
        self.sendMessage(str(self.stream_size).encode())


class SlowAccepts(WebSocketServerProtocol):
    """
    Echoes; decides to take a request after half a second.
    """

    @classmethod
    def accepts(cls, request):
        from twisted.internet import reactor

        decided = defer.Deferred()
        reactor.callLater(0.5, decided.callback, True)
        return decided

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


class NeverAccepts(WebSocketServerProtocol):
    """
    Never decides whether it takes a request.
    """

    @classmethod
    def accepts(cls, request):
        return defer.Deferred()


def never_hook(request):
    """
    An unhandled hook that never answers.
    """
    return defer.Deferred()


def echoing_hook(request):
    """
    An unhandled hook that puts the (decoded) path into its reason, as
    people write them.
    """
    from urllib.parse import unquote

    return Reject(404, "no room " + unquote(request.path.decode("latin-1")))


class FailsOnOpen(WebSocketServerProtocol):
    """
    Raises in onOpen, after the 101.
    """

    def onOpen(self):
        raise RuntimeError("a bug in onOpen")


class ByeOnOpen(WebSocketServerProtocol):
    """
    Sends one message as it opens, then closes its transport.
    """

    def onOpen(self):
        self.sendMessage(b"bye")
        self.transport.loseConnection()


class HandlerApi(WebSocketServerProtocol):
    """
    The handler API through self.wsmux: "close CODE REASON" closes with
    that code, "drop" drops; ?deny=1 refuses with a 401 and extra headers.
    """

    def onConnect(self, request):
        from wsmux import Deny

        if "deny" in request.params:
            raise Deny(401, "log in first", {"WWW-Authenticate": 'Bearer realm="t"'})

    def onMessage(self, payload, isBinary):
        words = payload.decode().split(" ", 2)
        if words[0] == "close":
            self.wsmux.close(int(words[1]), words[2] if len(words) > 2 else "")
        elif words[0] == "drop":
            self.wsmux.drop()


class Chorus(WebSocketServerProtocol):
    """
    Every message goes to the route's other connections (not its sender);
    "count" answers how many are open on the route.
    """

    def onOpen(self):
        self.wsmux.channels.subscribe(self, "all")

    def onMessage(self, payload, isBinary):
        if payload == b"count":
            self.sendMessage(str(len(self.wsmux.route_connections())).encode())
            return
        self.wsmux.channels.publish("all", payload, isBinary, exclude=self)


class Knows(WebSocketServerProtocol):
    """
    Answers every message with what self.wsmux knows of the client.
    """

    def onMessage(self, payload, isBinary):
        import json

        conn = self.wsmux
        known = {
            "id": conn.id,
            "cookies": conn.cookies,
            "chain": list(conn.address_chain),
            "client": conn.client_address,
            "tls": conn.tls,
            "server_name": conn.server_name,
            "latency": conn.latency,
        }
        self.sendMessage(json.dumps(known).encode())


async def asyncio_user(ws):
    # An async handler that uses asyncio itself (twistd -r asyncio): a
    # sleep, an executor's future, and the tools that need a Task
    # (asyncio.timeout, wait_for on the connection's own recv, TaskGroup),
    # between the connection's own awaits and a Deferred of Twisted's.
    import asyncio

    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    loop = asyncio.get_running_loop()
    while True:
        try:
            async with asyncio.timeout(30):
                message = await asyncio.wait_for(ws.recv(), 30)
        except Exception:
            return
        await asyncio.sleep(0.01)
        await deferLater(reactor, 0.01)
        async with asyncio.TaskGroup() as group:
            upper = group.create_task(asyncio.to_thread(str.upper, message))
        answer = await loop.run_in_executor(None, str.strip, upper.result())
        await ws.send(answer)


async def firehose(ws):
    # Sends 64 KiB messages for as long as the connection lasts: only
    # send()'s backpressure keeps the server's memory bounded.
    first = await ws.recv()
    chunk = first.encode() * (65536 // max(1, len(first)))
    while True:
        await ws.send(chunk)


async def fails_later(ws):
    await ws.send(await ws.recv())
    raise RuntimeError("the async handler failed")


def wsgi_app(environ, start_response):
    # Says where the WSGI app thinks it is, and how much body it read.
    body = environ["wsgi.input"].read()
    answer = (
        f"{environ['REQUEST_METHOD']} script={environ['SCRIPT_NAME']} "
        f"path={environ['PATH_INFO']} query={environ.get('QUERY_STRING', '')} body={len(body)}"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]


def hello_resource():
    # A factory for any twisted.web resource (--resource PATH=this).
    from twisted.web.resource import Resource

    class Hello(Resource):
        isLeaf = True

        def render_GET(self, request):
            return (
                b"hello from "
                + b"/".join(request.prepath)
                + b" rest="
                + b"/".join(request.postpath)
            )

    return Hello()


class Footprint(WebSocketServerProtocol):
    """
    Answers every message with the names its connection keeps in
    dictionaries: its own, and each transport's below it (TLS, then TCP).
    """

    def onMessage(self, payload, isBinary):
        import json

        transports = []
        transport = self.transport
        while transport is not None:
            transports.append([type(transport).__name__, sorted(vars(transport))])
            transport = getattr(transport, "transport", None)
        own = sorted(vars(self))
        self.sendMessage(json.dumps({"own": own, "transports": transports}).encode())


class LegacyLogger(WebSocketServerProtocol):
    """
    Logs every message with Twisted's legacy log.msg (whose events take the
    system the reactor's callWithLogger set for the connection) and answers
    with the module of the callWithLogger in use.
    """

    def onMessage(self, payload, isBinary):
        from twisted.python import log

        log.msg(f"legacy says {payload.decode()}")
        self.sendMessage(log.callWithLogger.__module__.encode())


class FailsInLost(WebSocketServerProtocol):
    """
    Echoes; its connectionLost raises once the connection has closed.
    """

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        raise RuntimeError("a bug in connectionLost")


class FailsInLostFirst(FailsInLost):
    """
    Echoes; its connectionLost raises before Autobahn's own has run.
    """

    def connectionLost(self, reason):
        raise RuntimeError("a bug in connectionLost, first thing")


class ShowsHeaders(WebSocketServerProtocol):
    """
    Sends the request's headers, as onConnect saw them, as JSON on open.
    """

    def onConnect(self, request):
        self.seen = dict(request.headers)

    def onOpen(self):
        import json

        self.sendMessage(json.dumps(self.seen).encode())
