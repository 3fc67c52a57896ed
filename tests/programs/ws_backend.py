"""
A Python websockets server, as a backend for proxy routes in tests.

With CHAIN KEY arguments it serves wss.  Prints "PORT <n>" once listening on 127.0.0.1 (port 0: the kernel's
choice).  Paths: /echo, /info (what it was sent, as JSON), /greet (a
message at once), /busy (503), /close (closes as asked), /refuse (403), /die (exits
the process on the first message), /noread, /flood, /big (a text
message of as many bytes as asked).
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

SEEN = ("origin", "cookie", "authorization", "x-forwarded-for", "forwarded",
        "x-forwarded-proto", "x-forwarded-host", "user-agent")  # fmt: skip


def refuse(connection, request):
    if request.path.startswith("/refuse"):
        return Response(403, "Forbidden", Headers([("Content-Length", "2")]), b"no")
    if request.path.startswith("/busy"):
        return Response(503, "Busy", Headers([("Content-Length", "4")]), b"busy")
    return None


async def handler(ws):
    path, _, query = ws.request.path.partition("?")
    if path.startswith("/info"):
        await ws.send(json.dumps({
            "path": path,
            "query": query,
            "subprotocol": ws.subprotocol,
            "headers": {k: ws.request.headers.get(k) for k in SEEN},
        }))  # fmt: skip
    if path == "/greet":
        await ws.send("hello first")
    if path == "/noread":
        await asyncio.sleep(300)
    if path == "/flood":
        chunk = b"z" * 65536
        while True:
            await ws.send(chunk)
    async for message in ws:
        if path == "/die":
            os._exit(1)
        if path == "/big" and isinstance(message, str):
            await ws.send("x" * int(message))
            continue
        if path == "/close" and isinstance(message, str):
            _, code, reason = message.split(" ", 2)
            await ws.close(int(code), reason)
            return
        await ws.send(message)


async def main():
    context = None
    if len(sys.argv) == 3:  # CHAIN KEY: serve wss
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[1], sys.argv[2])
    async with serve(handler, "127.0.0.1", 0, subprotocols=["chat", "superchat"],
                     process_request=refuse, ping_interval=None, ssl=context,
                     max_size=2**24) as server:  # fmt: skip
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
